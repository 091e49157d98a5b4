//! x86_64: boot entries, descriptor tables, traps, port I/O and power control.

pub mod boot;
pub mod cpu;
pub mod mem;

pub use cpu::{exit, halt_forever};
