//! Stride scheduling (Waldspurger & Weihl, "Stride Scheduling: Deterministic
//! Proportional-Share Resource Management", MIT/LCS/TM-528, 1995), on per-CPU queues: the
//! weighted policy that README.md writes from an empty file, step by step.
//!
//! Each domain holds tickets (its `weight`). A vCPU's *stride* is inversely proportional to
//! its tickets, and its *pass* advances by its stride for every quantum it runs (by the
//! fraction of a quantum it used, when it stops early). The vCPU with the lowest pass runs
//! next, for one quantum (`quantum_us`). Over time every vCPU's pass advances at the same
//! rate, so each runs in proportion to its tickets, deterministically.
//!
//! A vCPU that wakes rejoins at the CPU's *virtual time* (the pass of the vCPU last picked
//! there), so sleeping banks nothing; the paper lets a rejoining client keep its `remain`,
//! its place relative to the others, and `lag_us` (per domain) keeps up to that much of it:
//! the domain's vCPUs wake up to `lag_us` of their own run time ahead, and preempt when
//! that puts them a quantum ahead of the running vCPU. Across CPUs, one pass scale: a CPU
//! pulls the lowest head pass of its peers when it beats its own by a quantum, so vCPUs of
//! a crowded CPU (whose pass advances slowly) move to where they run sooner.

use alloc::collections::VecDeque;
use core::fmt;

use crate::runq::{AtomicNs, CpuQueue, DomainParams, Enqueued, Order, Place, RunQueue};
use crate::runq::{self, Knob, Runqueues, Steal};
use crate::{Decision, DomainId, Error, ParamSpec, Policy, PolicyInfo, Topology};
use crate::{VcpuId, Wakeup};

/// The pass a vCPU of one ticket gains per nanosecond it runs (the paper's `stride1`, per ns).
const STRIDE1: u64 = 1 << 16;

/// The parameters: names as `xl` would spell them, with units; ranges are checked for us.
pub static INFO: PolicyInfo = PolicyInfo {
    name: "stride",
    summary: "stride scheduling (Waldspurger & Weihl 1995): weights as tickets, a fixed quantum",
    domain_params: &[
        ParamSpec {
            name: "weight",
            default: 256,
            min: 1,
            max: 65535,
            doc: "tickets: the domain's share of CPU time is its weight over the sum of weights",
            choices: &[],
        },
        ParamSpec {
            name: "lag_us",
            default: 0,
            min: 0,
            max: 1_000_000,
            doc: "how far ahead (in its own run time) a waking vCPU may rejoin; 0 = none",
            choices: &[],
        },
    ],
    global_params: &[ParamSpec {
        name: "quantum_us",
        default: 10_000,
        min: 100,
        max: 1_000_000,
        doc: "the quantum: how long a picked vCPU runs",
        choices: &[],
    }],
    preempts: true,
    timed: false,
};
/// Indices into `INFO.domain_params`, for [`DomainParams::value`].
const WEIGHT: usize = 0;
const LAG_US: usize = 1;

/// One CPU's queue: (pass, vCPU) in pass order, first come first served among equals, and
/// the CPU's virtual time.
#[derive(Debug, Default)]
pub struct PassQueue {
    q: VecDeque<(u64, VcpuId)>,
    /// The pass of the vCPU last picked here (never decreasing): where wakers rejoin.
    vtime: u64,
    /// The running vCPU's pass when it was picked, and its tickets (for the preemption test).
    curr_pass: u64,
    curr_weight: u64,
}

impl PassQueue {
    fn push(&mut self, pass: u64, v: VcpuId) {
        let at = self.q.partition_point(|&(p, _)| p <= pass);
        self.q.insert(at, (pass, v));
    }
    fn pop(&mut self) -> Option<(u64, VcpuId)> {
        self.q.pop_front()
    }
}

impl RunQueue for PassQueue {
    fn len(&self) -> usize {
        self.q.len()
    }
    fn remove(&mut self, v: VcpuId) -> bool {
        let at = self.q.iter().position(|&(_, x)| x == v);
        at.and_then(|i| self.q.remove(i)).is_some()
    }
    fn fit(&mut self, room: usize) {
        crate::runq::fit_deque(&mut self.q, room)
    }
    /// The lowest pass queued: peers pull from the lowest.
    fn key(&self) -> u64 {
        self.q.front().map_or(u64::MAX, |&(pass, _)| pass)
    }
}

/// The stride scheduler. Per vCPU it keeps one number, its pass (`u64`).
pub struct Stride {
    rqs: Runqueues<PassQueue, u64>,
    params: DomainParams,
    quantum_ns: AtomicNs,
}

impl Stride {
    /// A stride scheduler for `topo`, every parameter at its default.
    pub fn new(topo: &Topology) -> Result<Self, Error> {
        Ok(Stride {
            rqs: Runqueues::new(topo, PassQueue::default)?,
            params: DomainParams::new(topo, &INFO),
            quantum_ns: AtomicNs::new(INFO.global_params[0].default * 1000),
        })
    }

    /// The global parameter, where it is kept and in what unit (ns per µs): `runq`'s
    /// `set_global` and `global` check names and ranges against `INFO` and convert.
    fn knobs(&self) -> [Knob<'_>; 1] {
        [Knob("quantum_us", &self.quantum_ns, 1000)]
    }

    /// The pass that `ns` of run time is worth to a vCPU of `domain`: its stride × time.
    fn pass_for(&self, domain: DomainId, ns: u64) -> u64 {
        ns.saturating_mul(STRIDE1) / self.params.value(domain, WEIGHT)
    }
}

impl Policy for Stride {
    fn info(&self) -> &'static PolicyInfo {
        &INFO
    }
    runq::runqueue_calls!(rqs, remove_vcpu);
    fn add_domain(&self, d: DomainId, params: &[(&str, u64)]) -> Result<(), Error> {
        self.params.add(d, params)
    }
    fn set_domain_param(&self, d: DomainId, name: &str, value: u64) -> Result<(), Error> {
        self.params.set(d, name, value)
    }
    fn domain_param(&self, d: DomainId, name: &str) -> Result<u64, Error> {
        self.params.get(d, name)
    }
    fn set_global_param(&self, name: &str, value: u64) -> Result<(), Error> {
        runq::set_global(&INFO, &self.knobs(), name, value)
    }
    fn global_param(&self, name: &str) -> Result<u64, Error> {
        runq::global(&INFO, &self.knobs(), name)
    }
    fn insert_vcpu(&self, v: VcpuId, domain: DomainId, cpu: usize) -> Result<(), Error> {
        // It starts at the lowest virtual time of any CPU, as if it had just woken on the
        // least advanced one: a CPU where one vCPU ran alone (Domain0, while it creates the
        // others) is far ahead, and a newcomer placed there would wait until every other
        // CPU caught up, while that CPU ran what it stole from them.
        let vtime = (0..self.rqs.ncpus()).map(|c| self.rqs.lock_cpu(c).q.vtime).min();
        self.rqs.insert(v, domain, cpu, vtime.unwrap_or(0))
    }
    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(out, "stride: quantum {} us", self.quantum_ns.get() / 1000)?;
        self.rqs.dump(out, |o, rq| {
            write!(o, " vtime={}", rq.vtime)?;
            rq.q.iter().try_for_each(|(pass, v)| write!(o, " v{}(pass={pass})", v.0))
        })
    }

    fn wake(&self, v: VcpuId, now: u64) -> Wakeup {
        self.rqs.wake_with(v, |rq, vs| {
            // Rejoin at the CPU's virtual time, or up to `lag_us` of run time before it.
            let lag = self.pass_for(vs.domain, self.params.value(vs.domain, LAG_US) * 1000);
            vs.data = vs.data.max(rq.q.vtime.saturating_sub(lag));
            rq.q.push(vs.data, v);
            // Preempt the running vCPU if that puts the waker a quantum of the runner's
            // stride ahead of the runner's pass as of now.
            if rq.curr().is_none() {
                return Enqueued::Queued; // the CPU idles: the helper kicks it
            }
            let w = rq.q.curr_weight;
            let ran = now.saturating_sub(rq.curr_since()).saturating_mul(STRIDE1) / w;
            let quantum = self.quantum_ns.get().saturating_mul(STRIDE1) / w;
            if vs.data.saturating_add(quantum) < rq.q.curr_pass.saturating_add(ran) {
                Enqueued::Preempt
            } else {
                Enqueued::Queued
            }
        })
    }

    fn schedule(&self, cpu: usize, now: u64) -> Decision {
        let quantum = self.quantum_ns.get();
        let mut rq = self.rqs.lock_for_schedule(cpu);
        // 1. The vCPU that ran: its pass advances by its stride × the time it ran.
        if let Some((prev, mut vs)) = self.rqs.take_curr(&mut rq) {
            let ran = now.saturating_sub(rq.curr_since());
            vs.data = vs.data.saturating_add(self.pass_for(vs.domain, ran));
            if vs.runnable {
                if vs.yielded
                    && let Some(&(head, _)) = rq.q.q.front()
                {
                    // A yield gives up its lead and no more: behind the head, not last.
                    vs.data = vs.data.max(head);
                }
                vs.place = Place::Queued;
                rq.q.push(vs.data, prev);
            } else {
                vs.place = Place::Off;
            }
        }
        // 2. The lowest pass of a peer, if it beats ours by a quantum (at the default
        //    weight); anything a peer has queued if we have nothing.
        let local = rq.q.key();
        let margin = quantum.saturating_mul(STRIDE1) / INFO.domain_params[WEIGHT].default;
        let how = Steal {
            key_below: if local == u64::MAX { u64::MAX } else { local.saturating_sub(margin) },
            order: Order::LowestKey,
            ..Steal::default()
        };
        let take = |peer: &mut CpuQueue<PassQueue>| peer.q.pop().map(|(_, v)| v);
        let stolen = self.rqs.steal(cpu, &mut rq, now, how, take);
        // 3. Else our own lowest pass.
        let next = stolen.or_else(|| {
            let (_, v) = rq.q.pop()?;
            Some(self.rqs.dispatch_vcpu(&mut rq, v, now))
        });
        let Some(v) = next else {
            return Decision { next: None, slice_ns: None, migrated: false };
        };
        // 4. Remember it for the wake-up test and as the CPU's virtual time.
        let vs = self.rqs.lock_vcpu(v);
        rq.q.curr_pass = vs.data;
        rq.q.curr_weight = self.params.value(vs.domain, WEIGHT);
        rq.q.vtime = rq.q.vtime.max(vs.data);
        Decision { next, slice_ns: Some(quantum), migrated: stolen.is_some() }
    }
}
