//! Host-testable logic of the hypervisor.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
