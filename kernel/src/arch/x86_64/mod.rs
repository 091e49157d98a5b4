//! x86_64: boot entries, descriptor tables, traps, paging, and processor controls.

pub mod boot;
pub mod cpu;
pub mod gdt;
pub mod mem;
pub mod paging;
pub mod trap;

pub use cpu::{exit, halt_forever};
