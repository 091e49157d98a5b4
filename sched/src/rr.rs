//! Round-robin with a fixed slice: Xen 2.0's `sched_rrobin`, on per-CPU queues.
//!
//! Xen's round-robin kept one FIFO per CPU and rotated it every `slice`; it had no load
//! balancing. Ours adds the one thing a multi-core experiment cannot do without: an idle
//! CPU steals the head of a peer's queue, and a wake-up kicks an idle CPU, so no CPU idles
//! while another has work queued. There are no weights: every vCPU gets the same slice.
//! A running vCPU is never preempted before its slice ends (a kick finds it still within
//! its slice and lets it continue), which is what gives round-robin its long wake-up
//! latencies under load: a waker waits for everything queued ahead of it.

use alloc::collections::VecDeque;
use core::fmt;

use crate::runq::{self, AtomicNs, Enqueued, Knob, Place, Runqueues, Steal};
use crate::{
    Decision, Error, ParamSpec, Policy, PolicyInfo, Topology, VcpuId, Wakeup,
};

const SLICE_MS: ParamSpec = ParamSpec {
    name: "slice_ms",
    default: 10,
    min: 1,
    max: 10_000,
    doc: "time slice every vCPU gets in turn",
    choices: &[],
};

/// Round-robin's description: one global knob, `slice_ms`.
pub static INFO: PolicyInfo = PolicyInfo {
    name: "rr",
    summary: "round-robin with a fixed slice (Xen 2.0 sched_rrobin); per-CPU FIFO, idle CPUs steal",
    domain_params: &[],
    global_params: &[SLICE_MS],
    preempts: true,
    timed: false,
};

/// Round-robin: per-CPU FIFO queues rotated every `slice_ms`.
pub struct RoundRobin {
    rqs: Runqueues<VecDeque<VcpuId>, ()>,
    slice_ns: AtomicNs,
}

impl RoundRobin {
    /// A round-robin scheduler for `topo` with the default slice.
    pub fn new(topo: &Topology) -> Result<Self, Error> {
        Ok(RoundRobin {
            rqs: Runqueues::new(topo, VecDeque::new)?,
            slice_ns: AtomicNs::new(SLICE_MS.default * 1_000_000),
        })
    }

    /// The global parameter, where it is kept and in what unit.
    fn knobs(&self) -> [Knob<'_>; 1] {
        [Knob("slice_ms", &self.slice_ns, 1_000_000)]
    }
}

impl Policy for RoundRobin {
    fn info(&self) -> &'static PolicyInfo {
        &INFO
    }

    runq::runqueue_calls!(rqs, insert_vcpu, remove_vcpu);

    fn wake(&self, v: VcpuId, _now: u64) -> Wakeup {
        // Xen's rrobin: append to the queue of the vCPU's CPU; kick it only if it idles.
        // We also kick another idle CPU, which steals the newcomer.
        self.rqs.wake_with(v, |rq, _| {
            rq.q.push_back(v);
            Enqueued::Queued
        })
    }

    fn schedule(&self, cpu: usize, now: u64) -> Decision {
        let slice = self.slice_ns.get();
        let mut rq = self.rqs.lock_for_schedule(cpu);
        if let Some((prev, mut vs)) = self.rqs.take_curr(&mut rq) {
            let end = rq.curr_since().saturating_add(slice);
            if vs.runnable && !vs.yielded && now < end {
                // Still inside its slice (a spurious kick): let it finish the slice.
                let since = rq.curr_since();
                self.rqs.dispatch(&mut rq, &mut vs, prev, since);
                return Decision { next: Some(prev), slice_ns: Some(end - now), migrated: false };
            }
            if vs.runnable {
                vs.place = Place::Queued;
                rq.q.push_back(prev);
            } else {
                vs.place = Place::Off;
            }
        }
        let mut migrated = false;
        let next = match rq.q.pop_front() {
            Some(v) => {
                let mut vs = self.rqs.lock_vcpu(v);
                self.rqs.dispatch(&mut rq, &mut vs, v, now);
                Some(v)
            }
            None => {
                // Idle: take the longest-waiting vCPU of the first peer that has one queued.
                let got =
                    self.rqs.steal(cpu, &mut rq, now, Steal::default(), |peer| peer.q.pop_front());
                migrated = got.is_some();
                got
            }
        };
        Decision { next, slice_ns: next.map(|_| slice), migrated }
    }

    fn set_global_param(&self, name: &str, value: u64) -> Result<(), Error> {
        runq::set_global(&INFO, &self.knobs(), name, value)
    }

    fn global_param(&self, name: &str) -> Result<u64, Error> {
        runq::global(&INFO, &self.knobs(), name)
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(out, "rr: slice {} ms", self.slice_ns.get() / 1_000_000)?;
        self.rqs.dump(out, |o, q| q.iter().try_for_each(|v| write!(o, " v{}", v.0)))
    }
}
