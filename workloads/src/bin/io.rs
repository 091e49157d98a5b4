//! `io`: an I/O-like pattern. Each vCPU alternates a burst of CPU work lasting `burst_us`
//! (default 200) with a sleep on its timer of a pseudo-random length in 0..=`sleep_us`
//! (default 2000), seeded from the domain id and vCPU so runs repeat. `work` counts units of
//! `unit_iters` (default `work::UNIT_ITERS`) done in the bursts. Expected fate: ok.
#![no_std]
#![no_main]

use workloads::time::{now_ns, sleep_ns, spin_until};
use workloads::work::Rng;
use workloads::{entry, shared, work};

entry!(main);

fn main(vcpu: usize) -> u64 {
    // The arguments of `sched::spec`'s `io` workload: bursts of `burst_us`, then a block of
    // a random length with mean `block_us` (uniform on 0..=2 × block_us).
    let burst_ns = shared::arg("burst_us", 500) * 1000;
    let sleep_max_ns = shared::arg("block_us", 2000) * 2000;
    let iters = shared::arg("unit_iters", work::UNIT_ITERS);
    let mut rng = Rng::new((u64::from(shared::domain_id()) << 16) ^ vcpu as u64);
    let mut state = rng.next_u64();
    loop {
        let units = spin_until(now_ns() + burst_ns, || {
            state = work::unit(state, iters);
        });
        shared::add_work(vcpu, units);
        sleep_ns(rng.up_to(sleep_max_ns));
    }
}
