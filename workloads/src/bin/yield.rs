//! `yield`: the credit-scheduler attack. It runs CPU work for `run_us` (default 9000), then
//! gives up the CPU just before a 10 ms accounting tick would find it running: with
//! `sleep_us` = 0 (default) by `sched_op(Yield)`, otherwise by blocking that long on its
//! timer. A scheduler that charges CPU time by sampling who runs at the tick (Xen's credit1)
//! undercharges it; one that accounts exact run time does not. `work` counts the same units
//! as `cpu` (`unit_iters`, default `work::UNIT_ITERS`), so the two compare directly. Every
//! vCPU runs the loop. Expected fate: ok.
#![no_std]
#![no_main]

use workloads::time::{now_ns, sleep_ns, spin_until};
use workloads::{entry, hypercall, shared, work};

entry!(main);

fn main(vcpu: usize) -> u64 {
    let run_ns = shared::arg("run_us", 9000) * 1000;
    let sleep = shared::arg("sleep_us", 0) * 1000;
    let iters = shared::arg("unit_iters", work::UNIT_ITERS);
    let mut state = (u64::from(shared::domain_id()) << 8) ^ vcpu as u64;
    loop {
        let units = spin_until(now_ns() + run_ns, || {
            state = work::unit(state, iters);
        });
        shared::add_work(vcpu, units);
        if sleep == 0 {
            hypercall::yield_now();
        } else {
            sleep_ns(sleep);
        }
    }
}
