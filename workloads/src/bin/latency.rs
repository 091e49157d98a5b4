//! `latency`: a periodic task that measures how late the hypervisor wakes it.
//!
//! Every `period_us` (default 1000) it arms its one-shot timer for the next period boundary
//! and blocks; on waking, lateness = now - deadline; then it runs on the CPU for `run_us`
//! (default 100) and counts one unit of `work` per completed period. Periods it overran are
//! skipped, not made up. With `periods` (default 0 = forever) it stops after that many
//! periods per vCPU, prints its lateness (average and maximum) and shuts down cleanly;
//! `report_every` (default 0 = never) prints the same every that many periods. The
//! hypervisor measures wake-up latency itself (`wake_lat_*` in the results); this is the
//! guest's view of it. Every vCPU runs its own loop. Expected fate: ok.
//!
//! With `stray_us` (default 0 = never), after each period's run it also arms its timer
//! `stray_us` ahead, runs on for 10 × `stray_us` (the timer fires while it is awake) and
//! only then blocks: a block that the timer which already fired must end at once (the
//! hypervisor's `FIRED` mark, `schedule::take_due_timer`). If that mark is lost, the vCPU
//! sleeps for good and the run fails (`latency/slow-timer-wake` in experiment-checks). In
//! that mode it also binds its timer VIRQ, and a `block` that returns for that timer must
//! find its event pending already (an event sent after the vCPU ran on is a lost wake-up
//! for a guest that sleeps on it): if not, it says `FAILURE` and crashes the domain
//! (`latency/slow-timer-fire`).
#![no_std]
#![no_main]

use workloads::time::{now_ns, sleep_until, spin_until};
use workloads::{entry, hypercall, println, shared, work};

entry!(main);

/// Lateness figures of one vCPU.
struct Lateness {
    periods: u64,
    sum_ns: u64,
    max_ns: u64,
    skipped: u64,
}

impl Lateness {
    fn print(&self, vcpu: usize) {
        let avg = self.sum_ns.checked_div(self.periods).unwrap_or(0);
        println!(
            "vcpu {vcpu}: {} periods, lateness avg {avg} ns, max {} ns, {} periods skipped",
            self.periods, self.max_ns, self.skipped
        );
    }
}

fn main(vcpu: usize) -> u64 {
    let period_ns = shared::arg("period_us", 1000).max(1) * 1000;
    let run_ns = shared::arg("run_us", 20) * 1000;
    let stray_ns = shared::arg("stray_us", 0) * 1000;
    let periods = shared::arg("periods", 0);
    let report_every = shared::arg("report_every", 0);
    let mut stats = Lateness {
        periods: 0,
        sum_ns: 0,
        max_ns: 0,
        skipped: 0,
    };
    let mut state = u64::from(shared::domain_id()) ^ vcpu as u64;
    // Masked: the event only marks the port pending, so that a timer still wakes the vCPU
    // by the timer's own path (`schedule::wake_on_timer`, which `latency/slow-timer-wake`
    // stalls after), not by the event's notification (a review of session 21: unmasked,
    // that check no longer reached the path it guards).
    let timer_port = (stray_ns > 0).then(|| {
        let port = hypercall::evtchn_bind_virq_vcpu(abi::hypercall::virq::TIMER, vcpu)
            .unwrap_or_else(|e| panic!("vcpu {vcpu}: binding the timer VIRQ: {e:?}"));
        shared::set_mask(port, true);
        port
    });
    let mut deadline = now_ns() + period_ns;
    while periods == 0 || stats.periods < periods {
        sleep_until(deadline);
        if let Some(port) = timer_port {
            // This period's timer event; a pending one would end the next block at once.
            shared::take_event(port);
        }
        let woke = now_ns();
        let late = woke.saturating_sub(deadline);
        stats.sum_ns += late;
        stats.max_ns = stats.max_ns.max(late);
        spin_until(woke + run_ns, || state = work::unit(state, 64));
        if stray_ns > 0 {
            let armed = now_ns();
            // An error (none is expected) would make `block` return at once, as it should.
            let _ = hypercall::set_timer(armed + stray_ns);
            spin_until(armed + 10 * stray_ns, || state = work::unit(state, 64));
            hypercall::block();
            if let Some(port) = timer_port.filter(|&p| !shared::take_event(p)) {
                println!(
                    "latency: FAILURE: vcpu {vcpu}: block returned for its timer before the \
                     timer's event (port {port}) was pending"
                );
                hypercall::shutdown(abi::hypercall::shutdown::CRASH);
            }
        }
        shared::add_work(vcpu, 1);
        stats.periods += 1;
        if report_every != 0 && stats.periods.is_multiple_of(report_every) {
            stats.print(vcpu);
        }
        // The next boundary still ahead; boundaries already past are skipped.
        deadline += period_ns;
        let now = now_ns();
        if now >= deadline {
            let behind = (now - deadline) / period_ns + 1;
            stats.skipped += behind;
            deadline += behind * period_ns;
        }
    }
    stats.print(vcpu);
    0
}
