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
    // The arguments of `sched::spec`'s `yield` workload: run until `before_us` before each
    // `tick_us` boundary of system time (where a tick-sampling scheduler would look), then
    // yield (`sleep_us` = 0) or sleep `sleep_us`, so as never to be seen running.
    let tick_ns = shared::arg("tick_us", 10_000).max(1) * 1000;
    let before_ns = shared::arg("before_us", 100) * 1000;
    let sleep = shared::arg("sleep_us", 0) * 1000;
    let iters = shared::arg("unit_iters", work::UNIT_ITERS);
    let mut state = (u64::from(shared::domain_id()) << 8) ^ vcpu as u64;
    loop {
        let now = now_ns();
        let next_tick = (now / tick_ns + 1) * tick_ns;
        let units = spin_until(next_tick.saturating_sub(before_ns).max(now), || {
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
