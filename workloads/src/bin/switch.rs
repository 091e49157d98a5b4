//! `switch`: yields in a loop (`work += 1` per yield). Several of them on one CPU do nothing
//! but switch domains, which is how the domain-switch benchmark measures a switch.
//!
//! No arguments. Expected fate: ok.
#![no_std]
#![no_main]

use workloads::{entry, hypercall, shared};

entry!(main);

fn main(vcpu: usize) -> u64 {
    loop {
        shared::add_work(vcpu, 1);
        hypercall::yield_now();
    }
}
