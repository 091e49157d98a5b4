//! `kerncore`: the hypervisor's logic that is not hardware, tested on the host with `cargo
//! test -p kerncore` (Hubris's `sys/kerncore` in spirit). Each module is a data structure or
//! a rule with no hardware and no unsafe; the hypervisor (`kernel/src`) keeps one instance
//! where it belongs and does the machine's part around it:
//!
//! | module | what | used by (in `kernel/src`) |
//! |---|---|---|
//! | [`cmdline`] | the hypervisor's command line | `main.rs` |
//! | [`conring`] | the console's ring, between its writers and the serial port | `console.rs` |
//! | [`memmap`] | the physical memory map | `mm/frames.rs` |
//! | [`frame_alloc`] | the frame allocator (a bitmap) | `mm/frames.rs` |
//! | [`frame_table`] | owners, page types and reference counts of every frame; validated page-table updates (Xen's `mm.c` rules), lock-free per frame | `mm/frame_table.rs`, `pv/mmu.rs`, `pv/grant_table.rs` |
//! | [`event`] | one domain's event-channel port table, a bound port with its peer domain | `domain/event_channel.rs`, `pv/control.rs` |
//! | [`grant`] | grant tables and map tracks | `pv/grant_table.rs` |
//! | [`image`] | guest ELF images and the boot archive | `domain/` |
//! | [`histogram`] | wake-up latency histograms | `domain/`, `schedule/` |
//! | [`timerheap`] | the per-CPU timer heap, one slot per vCPU | `schedule/` |
//! | [`watchdog`] | the watchdog's rule | `schedule/watchdog.rs` |
//! | [`ratelimit`] | token buckets (the console's) | `pv/hypercall.rs` |
//! | [`rcu`] | grace periods: when no CPU can still use an object made unreachable | `arch/x86_64/rcu.rs` |
//! | [`rtc`] | the real-time clock's arithmetic | `time.rs` |
//! | [`runstate`] | a vCPU's run state: pause, block and down kept apart, as Xen's pause count and pause flags | `domain/`, `schedule/` |
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
// A hypercall runs with the guest's MXCSR and x87 control word in force (they are
// callee-saved in the hypercall ABI, so the entry leaves them): a guest that unmasks
// floating-point exceptions would turn any float operation here into a #XM in ring 0.
// So the hypervisor does no floating-point arithmetic at all.
#![deny(clippy::float_arithmetic)]

extern crate alloc;

pub mod account;
pub mod cmdline;
pub mod conring;
pub mod event;
pub mod frame_alloc;
pub mod frame_table;
pub mod grant;
pub mod histogram;
pub mod image;
pub mod memmap;
pub mod ratelimit;
pub mod rcu;
pub mod rtc;
pub mod runstate;
#[cfg(test)]
mod test_rng;
pub mod timerheap;
pub mod watchdog;
