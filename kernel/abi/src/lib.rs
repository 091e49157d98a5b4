//! The interface Domino shares with everything outside it: guests (hypercall numbers, error
//! codes, the guest address-space layout, shared pages, control operations, the experiment
//! plan) and the host-side runner (the console protocol, exit codes and results records).
//!
//! Both sides compile this same crate, so they cannot drift apart. Nothing here has
//! behaviour beyond data and its encoding.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod blkif;
pub mod console;
pub mod control;
pub mod error;
pub mod hypercall;
pub mod layout;
pub mod mm;
pub mod netif;
pub mod plan;
#[cfg(feature = "alloc")]
pub mod results;
pub mod ring;
pub mod shared;
