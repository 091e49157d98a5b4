//! `cpu`: CPU-bound work on every vCPU, counting units done (`work += 1` per unit).
//!
//! Arguments: `unit_iters` (xorshift steps per unit, default `work::UNIT_ITERS`, a few tens
//! of µs under QEMU TCG); `units` (stop after this many units per vCPU and shut down
//! cleanly; default 0 = run until destroyed). Expected fate: ok.
#![no_std]
#![no_main]

use workloads::{entry, shared, work};

entry!(main);

fn main(vcpu: usize) -> u64 {
    let iters = shared::arg("unit_iters", work::UNIT_ITERS);
    let units = shared::arg("units", 0);
    let mut state = (u64::from(shared::domain_id()) << 8) ^ vcpu as u64;
    let mut done = 0u64;
    while units == 0 || done < units {
        state = work::unit(state, iters);
        shared::add_work(vcpu, 1);
        done += 1;
    }
    0
}
