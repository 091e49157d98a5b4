//! The interface Domino shares with everything outside it: guests (hypercall numbers, error
//! codes, shared-page layouts) and the host-side runner (the console protocol and exit codes).
//!
//! Nothing here has behaviour beyond plain data; both sides compile this same crate so they
//! cannot drift apart.
#![no_std]
#![forbid(unsafe_code)]

pub mod console;
