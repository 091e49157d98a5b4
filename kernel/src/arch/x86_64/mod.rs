//! x86_64: boot entries, descriptor tables, traps and entry code, paging and address
//! spaces, guest-memory copies, FPU state and data segment selectors (per vCPU), per-CPU area, and processor
//! controls.

pub mod addrspace;
pub mod bench;
pub mod boot;
pub mod bootinfo;
pub mod bootmem;
pub mod cpu;
pub mod entry;
pub mod fpu;
pub mod gdt;
pub mod guest;
pub mod paging;
pub mod percpu;
pub mod platform;
pub mod rcu;
pub mod selectors;
pub mod selftest;
pub mod serial;
pub mod trap;

pub use cpu::exit;

// `memcpy` & co. and the unwinder symbols, from the `cmem` crate (shared with the guests).
cmem::export_c_symbols!();
