//! The hypervisor's logic that is not hardware, tested on the host with `cargo test -p
//! kernel`: the command line, the physical memory map, the frame allocator, latency
//! histograms, guest images, event-channel ports, the frame table and page-table validation,
//! the real-time clock's arithmetic, per-CPU timer heaps, rate limits, the watchdog's rule.
//!
//! The freestanding binary (`main.rs`) wraps these in the hardware layer.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

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
