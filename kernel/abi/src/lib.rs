//! The interface Domino shares with everything outside it, in three parts:
//!
//! - the hypercall ABI, at the top level: hypercall numbers and their arguments
//!   ([`hypercall`]), error codes ([`error`]), the guest address-space layout ([`layout`]),
//!   the shared pages ([`shared`]), memory updates ([`mm`]) and Domain0's control operations
//!   ([`control`]);
//! - the I/O protocols between domains ([`io`]: the shared ring, the block and network
//!   devices), which the hypervisor carries but never reads;
//! - the tooling contracts ([`tool`]: the console protocol and exit codes, the experiment
//!   plan, the results records) between the machine and the host-side runner.
//!
//! Both sides of each compile this same crate, so they cannot drift apart. Nothing here has
//! behaviour beyond data and its encoding.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod control;
pub mod error;
pub mod hypercall;
pub mod io;
pub mod layout;
pub mod mm;
mod numbered;
pub mod shared;
pub mod tool;
