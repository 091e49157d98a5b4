//! The hypervisor's logic that is not hardware, tested on the host with `cargo test -p
//! kernel`: the command line, the physical memory map, the frame allocator, latency
//! histograms, guest images, event-channel ports, the frame table and page-table validation,
//! the real-time clock's arithmetic, per-CPU timer heaps, rate limits, the watchdog's rule.
//!
//! The freestanding binary (`main.rs`) wraps these in the hardware layer.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
// A hypercall runs with the guest's MXCSR and x87 control word in force (they are
// callee-saved in the hypercall ABI, so the entry leaves them): a guest that unmasks
// floating-point exceptions would turn any float operation here into a #XM in ring 0.
// So the hypervisor does no floating-point arithmetic at all.
#![deny(clippy::float_arithmetic)]

extern crate alloc;

pub mod cmdline;
pub mod event;
pub mod frames;
pub mod grant;
pub mod histogram;
pub mod image;
pub mod memmap;
pub mod mm;
pub mod ratelimit;
pub mod rtc;
pub mod timerheap;
pub mod watchdog;
