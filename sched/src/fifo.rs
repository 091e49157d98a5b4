//! FIFO: the smallest complete policy.
//!
//! Each CPU runs its own queue in arrival order; a vCPU runs until it blocks or yields (no
//! time slice, so a CPU-bound vCPU keeps its CPU); an idle CPU steals the head of the first
//! peer queue that has one; a wake-up kicks an idle CPU. Locking, stealing and bookkeeping
//! come from [`crate::runq`], and so do insert, remove, sleep, yield, `context_saved`,
//! `pick_cpu` and `stats` (`runqueue_calls!`); parameters use the trait's defaults (FIFO
//! has none). README.md
//! walks through a weighted policy with slices and balancing, `stride.rs`.

use alloc::collections::VecDeque;
use core::fmt;

use crate::runq::{CpuQueue, Enqueued, Place, Runqueues, Steal};
use crate::{Decision, Error, Policy, PolicyInfo, Topology, VcpuId, Wakeup};

/// FIFO's description: no parameters at all.
pub static INFO: PolicyInfo = PolicyInfo {
    name: "fifo",
    summary: "per-CPU first-in first-out, run to block; the example policy",
    domain_params: &[],
    global_params: &[],
    preempts: false,
    timed: false,
};

/// First in, first out, per CPU. No per-vCPU data (`()`).
pub struct Fifo {
    rqs: Runqueues<VecDeque<VcpuId>, ()>,
}

impl Fifo {
    /// A FIFO scheduler for `topo`.
    pub fn new(topo: &Topology) -> Result<Self, Error> {
        Ok(Fifo { rqs: Runqueues::new(topo, VecDeque::new)? })
    }
}

impl Policy for Fifo {
    fn info(&self) -> &'static PolicyInfo {
        &INFO
    }
    crate::runq::runqueue_calls!(rqs, insert_vcpu, remove_vcpu);
    fn wake(&self, v: VcpuId, _now: u64) -> Wakeup {
        self.rqs.wake_with(v, |rq, _| {
            rq.q.push_back(v);
            Enqueued::Queued // an idle CPU will run it (stealing it if need be)
        })
    }
    fn schedule(&self, cpu: usize, now: u64) -> Decision {
        let mut rq = self.rqs.lock_for_schedule(cpu);
        if let Some((prev, mut vs)) = self.rqs.take_curr(&mut rq) {
            vs.place = if vs.runnable { Place::Queued } else { Place::Off };
            // Nothing preempts in FIFO: the runner stays at the front unless it yielded.
            match (vs.runnable, vs.yielded) {
                (true, false) => rq.q.push_front(prev),
                (true, true) => rq.q.push_back(prev),
                (false, _) => {}
            }
        }
        let local = rq.q.pop_front();
        let next = local.map(|v| self.rqs.dispatch_vcpu(&mut rq, v, now)).or_else(|| {
            let pop_head = |peer: &mut CpuQueue<VecDeque<VcpuId>>| peer.q.pop_front();
            self.rqs.steal(cpu, &mut rq, now, Steal::default(), pop_head)
        });
        Decision { next, slice_ns: None, migrated: next.is_some() && local.is_none() }
    }
    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        self.rqs.dump(out, |o, q| q.iter().try_for_each(|v| write!(o, " v{}", v.0)))
    }
}
