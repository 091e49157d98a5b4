//! Borrowed virtual time (Duda & Cheriton, SOSP 1999), as Xen 1.x/2.0 used it
//! (`xen/common/sched_bvt.c`), extended to balance load across CPUs.
//!
//! The rules, from the paper:
//! - Each vCPU has an *actual virtual time* (AVT) that advances by its run time divided by
//!   its weight, charged in units of the *minimum charging unit* (`mcu_us`). The runnable
//!   vCPU with the smallest *effective virtual time* (EVT) runs.
//! - EVT = AVT − W while the vCPU is *warped* (W = `warp_us`), else AVT. A vCPU warps when
//!   it wakes, for at most L = `warpl_us` of real time (0 = no limit), and after unwarping
//!   may not warp again until U = `warpu_us` has passed. Warp is how a latency-sensitive
//!   domain jumps the queue without getting more than its share in the long run.
//! - A waking vCPU's AVT is raised to at least the CPU's *scheduler virtual time* (SVT, the
//!   smallest AVT of its runnable vCPUs), so sleeping does not bank credit.
//! - A waker preempts the current vCPU only if its EVT is lower by more than the *context
//!   switch allowance* C (`ctx_allow_us`) converted to the current vCPU's virtual time,
//!   EVT_new < EVT_curr − C / w_curr. The same allowance sets the slice: the picked vCPU runs
//!   until it would pass the runner-up's EVT by C.
//!
//! - Crowds (ours, not the paper's): with `latency_us` set (default 20 ms), C shrinks to
//!   `latency_us` / the CPU's runnable vCPUs, never below one MCU, as Linux CFS divides
//!   `sched_latency` by `nr_running` down to `min_granularity`. A fixed C = 5 ms makes one
//!   round of 256 vCPUs on a CPU last 1.3 s; `latency_us = 0` keeps the paper's fixed C.
//!
//! Virtual time units: running `t` ns advances AVT by `t × 65536 / weight`; a warp of
//! `warp_us` is worth `warp_us` of the domain's own run time. Xen 1.x charged whole MCUs per
//! run; we carry the remainder, so charging is in MCU steps yet exact over time.
//!
//! Multi-core: Xen's BVT never moved a vCPU between CPUs. Domino keeps one virtual time
//! scale across CPUs, publishes each queue's head EVT, and when a CPU picks it pulls a
//! peer's head instead of its own if the peer's is lower by more than the allowance (an
//! idle CPU takes the lowest head). A heavily loaded CPU's virtual time advances slowly, so
//! its vCPUs become the lowest and get pulled: load spreads by weight, and a migrating vCPU
//! keeps its AVT, hence its place in line.
//!
//! One scale needs one SVT where a vCPU enters (ours). Each CPU's SVT moves with its own
//! vCPUs and stops while it has none runnable; Domain0 (weight 65535) alone on a CPU moves
//! it 256 times slower than a vCPU of the default weight would. A crowd started together, half on each CPU, would enter at two
//! virtual times far apart, and the CPU whose half entered ahead would pull the other half
//! and run it before its own until it had caught up. So a vCPU's first wake-up enters no
//! lower than the SVT of any CPU with runnable vCPUs (each CPU publishes its SVT), nor
//! below what the vCPU running where it enters has run so far ([`Bvt::entry_svt`]). A
//! sleeper waking keeps the paper's rule, its CPU's SVT.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::runq::{
    self, AtomicNs, CpuQueue, Domains, Enqueued, Knob, Order, Place, RunQueue, Runqueues, Steal,
};
use crate::{
    Decision, DomainId, Error, ParamSpec, Policy, PolicyInfo, Topology, VcpuId, Wakeup,
    find_param,
};

/// Virtual time advanced by one ns of run time at weight 1.
pub const VT_ONE: u64 = 1 << 16;

const WEIGHT: ParamSpec = ParamSpec {
    name: "weight",
    default: 256,
    min: 1,
    max: 65535,
    doc: "relative share of CPU time (virtual time advances by run time / weight)",
    choices: &[],
};
const WARP_US: ParamSpec = ParamSpec {
    name: "warp_us",
    default: 0,
    min: 0,
    max: 10_000_000,
    doc: "warp W: how far a waking vCPU jumps back in virtual time; 0 = never warps",
    choices: &[],
};
const WARPL_US: ParamSpec = ParamSpec {
    name: "warpl_us",
    default: 0,
    min: 0,
    max: 10_000_000,
    doc: "warp limit L: longest real time a vCPU stays warped; 0 = no limit",
    choices: &[],
};
const WARPU_US: ParamSpec = ParamSpec {
    name: "warpu_us",
    default: 0,
    min: 0,
    max: 10_000_000,
    doc: "unwarp requirement U: time unwarped before it may warp again",
    choices: &[],
};
const CTX_ALLOW_US: ParamSpec = ParamSpec {
    name: "ctx_allow_us",
    default: 5000,
    min: 0,
    max: 1_000_000,
    doc: "context switch allowance C",
    choices: &[],
};
const LATENCY_US: ParamSpec = ParamSpec {
    name: "latency_us",
    default: 20_000,
    min: 0,
    max: 10_000_000,
    doc: "time in which every runnable vCPU of a CPU should run once: the allowance C shrinks \
          to latency_us / runnable vCPUs there, never below mcu_us; 0 = C fixed (the paper)",
    choices: &[],
};
const OVERRUN_US: ParamSpec = ParamSpec {
    name: "overrun_us",
    default: 1000,
    min: 0,
    max: 1_000_000,
    doc: "most a run is charged beyond the slice it was given: a timer that ends a slice late \
          (its CPU held elsewhere, or, emulated, waiting for a host core) is the machine's \
          time, not the domain's; 0 = charge all of it (the paper)",
    choices: &[],
};
const MCU_US: ParamSpec = ParamSpec {
    name: "mcu_us",
    default: 100,
    min: 1,
    max: 100_000,
    doc: "minimum charging unit",
    choices: &[],
};

/// BVT's description.
pub static INFO: PolicyInfo = PolicyInfo {
    name: "bvt",
    summary: "borrowed virtual time (Duda & Cheriton 1999): weights, warp for latency",
    domain_params: &[WEIGHT, WARP_US, WARPL_US, WARPU_US],
    global_params: &[CTX_ALLOW_US, LATENCY_US, MCU_US, OVERRUN_US],
    preempts: true,
    timed: false,
};

/// Per-domain parameters, copied into each vCPU so the hot paths never lock the domain.
#[derive(Clone, Copy, Debug)]
struct Params {
    weight: u64,
    warp_ns: u64,
    warpl_ns: u64,
    warpu_ns: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { weight: WEIGHT.default, warp_ns: 0, warpl_ns: 0, warpu_ns: 0 }
    }
}

/// Per-vCPU BVT state.
#[derive(Debug, Default)]
pub struct BvtVcpu {
    avt: u64,
    evt: u64,
    /// Run time not yet charged to `avt` (always < one MCU).
    uncharged_ns: u64,
    warped: bool,
    warp_start_ns: u64,
    /// When it last unwarped (`None`: never warped).
    unwarped_ns: Option<u64>,
    /// It has woken since it was inserted (see [`Bvt::entry_svt`]).
    woken: bool,
    p: Params,
}

impl BvtVcpu {
    fn vt(&self, ns: u64) -> u64 {
        ns.saturating_mul(VT_ONE) / self.p.weight
    }

    /// Charges `ran_ns` in whole MCUs, carrying the remainder.
    fn charge(&mut self, ran_ns: u64, mcu_ns: u64) {
        let owed = self.uncharged_ns + ran_ns;
        let charged = owed - owed % mcu_ns;
        self.uncharged_ns = owed - charged;
        self.avt = self.avt.saturating_add(self.vt(charged));
    }

    /// Xen's `__calc_evt`: EVT from AVT and the warp state, unwarping past the limit.
    fn calc_evt(&mut self, now: u64) {
        if self.warped
            && self.p.warpl_ns != 0
            && now.saturating_sub(self.warp_start_ns) >= self.p.warpl_ns
        {
            self.warped = false;
            self.unwarped_ns = Some(now);
        }
        self.evt =
            if self.warped { self.avt.saturating_sub(self.vt(self.p.warp_ns)) } else { self.avt };
    }

    /// On wake-up: warp (again) if the unwarp requirement allows.
    fn try_warp(&mut self, now: u64) {
        if self.p.warp_ns == 0 {
            self.warped = false;
            return;
        }
        // A wake-up's `now` is read on the waker's CPU, and may come before an unwarp
        // stamped since by a decision elsewhere (a waker's CPU stalled under TCG): that
        // vCPU has not rested (wrapped, it warped again at once; an audit, session 21).
        let rested = self.unwarped_ns.is_none_or(|t| now.saturating_sub(t) >= self.p.warpu_ns);
        // Xen's bvt_wake restarts the warp at every wake-up (`warped = now`): L limits how
        // long one wake-up may run warped, not the warp over a vCPU's life.
        if rested {
            self.warped = true;
            self.warp_start_ns = now;
        }
    }
}

/// A queued vCPU: ordered by EVT, FIFO among equals.
#[derive(Clone, Copy, Debug)]
struct Entry {
    evt: u64,
    avt: u64,
    warped: bool,
    v: VcpuId,
}

/// One CPU's queue, sorted by EVT, and its scheduler virtual time.
#[derive(Debug, Default)]
pub struct BvtQueue {
    /// The CPU it belongs to.
    cpu: usize,
    q: VecDeque<Entry>,
    /// Queued entries that are warped (then EVT order is not AVT order).
    warped: usize,
    /// Scheduler virtual time: the smallest AVT of the runnable vCPUs, never decreasing.
    svt: u64,
    /// The running vCPU's EVT and AVT when picked, and its weight, for the wake-up
    /// preemption test and the SVT at which a vCPU enters ([`Bvt::entry_svt`]).
    curr_evt: u64,
    curr_avt: u64,
    curr_weight: u64,
    /// The slice the running vCPU was given (0: none yet), which bounds what its run is
    /// charged (`overrun_us`).
    curr_slice: u64,
}

impl BvtQueue {
    fn push(&mut self, e: Entry) {
        let at = self.q.partition_point(|x| x.evt <= e.evt);
        self.q.insert(at, e);
        self.warped += usize::from(e.warped);
    }

    fn pop(&mut self) -> Option<Entry> {
        let e = self.q.pop_front()?;
        self.warped -= usize::from(e.warped);
        Some(e)
    }

    fn head_key(&self) -> u64 {
        self.q.front().map_or(u64::MAX, |e| e.evt)
    }

    fn min_avt(&self) -> Option<u64> {
        if self.warped == 0 {
            self.q.front().map(|e| e.avt)
        } else {
            self.q.iter().map(|e| e.avt).min()
        }
    }
}

impl RunQueue for BvtQueue {
    fn len(&self) -> usize {
        self.q.len()
    }
    fn remove(&mut self, v: VcpuId) -> bool {
        match self.q.iter().position(|e| e.v == v) {
            Some(i) => {
                let e = self.q.remove(i).expect("index from position");
                self.warped -= usize::from(e.warped);
                true
            }
            None => false,
        }
    }
    fn fit(&mut self, room: usize) {
        crate::runq::fit_deque(&mut self.q, room)
    }
    /// The head's EVT (`u64::MAX` when empty): peers pull the lowest.
    fn key(&self) -> u64 {
        self.head_key()
    }
}

/// The BVT scheduler.
pub struct Bvt {
    rqs: Runqueues<BvtQueue, BvtVcpu>,
    /// Each CPU's SVT while it has runnable vCPUs, `u64::MAX` while it has none; written
    /// under the CPU's lock, read by a vCPU's first wake-up anywhere ([`Bvt::entry_svt`]).
    busy_svt: Vec<CachePadded<AtomicU64>>,
    doms: Domains<(Params, Vec<VcpuId>)>,
    ctx_allow_ns: AtomicNs,
    latency_ns: AtomicNs,
    mcu_ns: AtomicNs,
    overrun_ns: AtomicNs,
}

fn entry(v: VcpuId, s: &BvtVcpu) -> Entry {
    Entry { evt: s.evt, avt: s.avt, warped: s.warped, v }
}

impl Bvt {
    /// A BVT scheduler for `topo` with the defaults.
    pub fn new(topo: &Topology) -> Result<Self, Error> {
        let rqs = Runqueues::new(topo, BvtQueue::default)?;
        for cpu in 0..rqs.ncpus() {
            rqs.lock_cpu(cpu).q.cpu = cpu;
        }
        Ok(Bvt {
            busy_svt: (0..rqs.ncpus()).map(|_| CachePadded::new(AtomicU64::new(u64::MAX))).collect(),
            rqs,
            doms: Domains::new(topo),
            ctx_allow_ns: AtomicNs::new(CTX_ALLOW_US.default * 1000),
            latency_ns: AtomicNs::new(LATENCY_US.default * 1000),
            mcu_ns: AtomicNs::new(MCU_US.default * 1000),
            overrun_ns: AtomicNs::new(OVERRUN_US.default * 1000),
        })
    }

    /// The global parameters, where they are kept and in what unit.
    fn knobs(&self) -> [Knob<'_>; 4] {
        [
            Knob("ctx_allow_us", &self.ctx_allow_ns, 1000),
            Knob("latency_us", &self.latency_ns, 1000),
            Knob("mcu_us", &self.mcu_ns, 1000),
            Knob("overrun_us", &self.overrun_ns, 1000),
        ]
    }

    /// What the running vCPU of `rq` has run by `now` that its AVT will be charged. A run
    /// the timer ended late is charged its slice and at most `overrun_us` more (ours, not
    /// the paper's): a few slices stretched by milliseconds would otherwise hold their
    /// domains back for seconds at 1024 domains, each waiting for 511 others to catch up on
    /// time it never had.
    fn chargeable(&self, rq: &CpuQueue<BvtQueue>, now: u64) -> u64 {
        let overrun = self.overrun_ns.get();
        let ran = now.saturating_sub(rq.curr_since());
        if overrun > 0 && rq.q.curr_slice > 0 {
            ran.min(rq.q.curr_slice.saturating_add(overrun))
        } else {
            ran
        }
    }

    /// The virtual time at which a vCPU enters the locked queue `rq` at `now` (its AVT is
    /// raised to it). A sleeper waking enters at the CPU's SVT, the smallest AVT of its
    /// runnable vCPUs as of its last decision (the paper's). A vCPU's first wake-up (ours)
    /// counts two things more:
    /// - the whole MCUs the running vCPU has run since that decision, as the paper's MCU
    ///   tick would have charged them: 1023 domains started together next to one that has
    ///   run alone for 20 ms of a 20 ms slice would otherwise all enter 20 ms ahead of it,
    ///   and it would wait for each of them to run 20 ms;
    /// - the SVT of every other CPU with runnable vCPUs (see the module doc): a crowd
    ///   started on two CPUs enters level on both.
    fn entry_svt(&self, rq: &mut CpuQueue<BvtQueue>, now: u64, first: bool) -> u64 {
        if !first {
            return rq.q.svt;
        }
        let mcu = self.mcu_ns.get();
        let running = rq.curr().map(|_| {
            let ran = self.chargeable(rq, now);
            let charged = (ran - ran % mcu).saturating_mul(VT_ONE) / rq.q.curr_weight.max(1);
            rq.q.curr_avt.saturating_add(charged)
        });
        let local = match (rq.q.min_avt(), running) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(svt) = local {
            rq.q.svt = rq.q.svt.max(svt);
            self.busy_svt[rq.q.cpu].store(rq.q.svt, Ordering::Relaxed);
        }
        let busy = self.busy_svt.iter().map(|s| s.load(Ordering::Relaxed));
        let machine = busy.filter(|&s| s != u64::MAX).max().unwrap_or(0);
        rq.q.svt.max(machine)
    }

    /// The allowance C (ns of real time) on a CPU with `runnable` vCPUs (the running one
    /// included). With `latency_us` set it shrinks as the load grows, so that every vCPU
    /// runs once within that time (Linux CFS's `sched_latency` over `nr_running`), but never
    /// below one MCU (CFS's `min_granularity`): at 256 vCPUs a CPU, C = 5 ms would make a
    /// round last 1.3 s, and a 1 s window would leave most of them without any CPU.
    fn allow(&self, runnable: usize) -> u64 {
        let c = self.ctx_allow_ns.get();
        match self.latency_ns.get() {
            0 => c,
            latency => c.min((latency / runnable.max(1) as u64).max(self.mcu_ns.get())),
        }
    }

    /// The allowance C on a CPU with `runnable` vCPUs, in the virtual time of a vCPU of
    /// weight `w`.
    fn allow_vt(&self, w: u64, runnable: usize) -> u64 {
        self.allow(runnable).saturating_mul(VT_ONE) / w.max(1)
    }

    fn set_param(p: &mut Params, name: &str, value: u64) {
        match name {
            "weight" => p.weight = value,
            "warp_us" => p.warp_ns = value * 1000,
            "warpl_us" => p.warpl_ns = value * 1000,
            _ => p.warpu_ns = value * 1000,
        }
    }
}

impl Policy for Bvt {
    fn info(&self) -> &'static PolicyInfo {
        &INFO
    }

    runq::runqueue_calls!(rqs);

    fn add_domain(&self, d: DomainId, params: &[(&str, u64)]) -> Result<(), Error> {
        let mut p = Params::default();
        for (name, value) in params {
            find_param(INFO.name, INFO.domain_params, name)?.check(*value)?;
            Self::set_param(&mut p, name, *value);
        }
        self.doms.add(d, (p, Vec::new()))
    }

    fn remove_domain(&self, d: DomainId) -> Result<(), Error> {
        self.doms.remove(d, |(_, vcpus)| vcpus.is_empty())
    }

    fn insert_vcpu(&self, v: VcpuId, domain: DomainId, cpu: usize) -> Result<(), Error> {
        self.rqs.check(v)?;
        let mut g = self.doms.lock(domain)?;
        let (p, vcpus) = g.as_mut().ok_or(Error::NoSuchDomain(domain))?;
        vcpus.try_reserve(1).map_err(|_| Error::Busy)?;
        // Start at the CPU's virtual time; its first wake-up places it (`entry_svt`).
        let svt = self.rqs.lock_cpu(cpu.min(self.rqs.ncpus() - 1)).q.svt;
        let data = BvtVcpu { avt: svt, evt: svt, p: *p, ..BvtVcpu::default() };
        self.rqs.insert(v, domain, cpu, data)?;
        vcpus.push(v);
        Ok(())
    }

    fn remove_vcpu(&self, v: VcpuId) -> Result<(), Error> {
        self.rqs.check(v)?;
        let domain = self.rqs.lock_home(v).2.domain;
        let mut g = self.doms.lock(domain)?;
        self.rqs.remove(v)?;
        if let Some((_, vcpus)) = g.as_mut() {
            vcpus.retain(|&x| x != v);
        }
        Ok(())
    }

    fn wake(&self, v: VcpuId, now: u64) -> Wakeup {
        self.rqs.wake_with(v, |rq, vs| {
            let svt = self.entry_svt(rq, now, !vs.data.woken);
            let s = &mut vs.data;
            s.woken = true;
            s.avt = s.avt.max(svt);
            s.try_warp(now);
            s.calc_evt(now);
            rq.q.push(entry(v, &vs.data));
            let Some(_) = rq.curr() else {
                return Enqueued::Preempt; // the home CPU idles: it runs it
            };
            // Preempt if EVT_new < EVT_curr − C / w_curr (the current vCPU's EVT advanced
            // by what it ran so far).
            let w = rq.q.curr_weight.max(1);
            let ran_vt = now.saturating_sub(rq.curr_since()).saturating_mul(VT_ONE) / w;
            let curr_evt = rq.q.curr_evt.saturating_add(ran_vt);
            if vs.data.evt.saturating_add(self.allow_vt(w, rq.q.q.len() + 1)) < curr_evt {
                Enqueued::Preempt
            } else {
                Enqueued::Queued
            }
        })
    }

    fn schedule(&self, cpu: usize, now: u64) -> Decision {
        let mcu = self.mcu_ns.get();
        let mut rq = self.rqs.lock_for_schedule(cpu);
        if let Some((prev, mut vs)) = self.rqs.take_curr(&mut rq) {
            vs.data.charge(self.chargeable(&rq, now), mcu);
            vs.data.calc_evt(now);
            if vs.runnable {
                vs.place = Place::Queued;
                if vs.yielded
                    && let Some(head) = rq.q.q.front()
                    && head.evt > vs.data.evt
                {
                    // Yield: give up the lead in virtual time, and no more. Its AVT rises
                    // until its EVT meets the head's, so it queues behind the head (FIFO
                    // among equals) but ahead of every vCPU with a higher EVT. Merely
                    // queueing it second while keeping its virtual time would let a crowd of
                    // yielders take turns ahead of everyone else forever.
                    vs.data.avt = vs.data.avt.saturating_add(head.evt - vs.data.evt);
                    vs.data.calc_evt(now);
                }
                rq.q.push(entry(prev, &vs.data));
            } else {
                vs.place = Place::Off;
            }
            vs.yielded = false;
        }
        // Pull from the peer with the lowest head EVT if it beats ours by the allowance
        // (any queued vCPU will do if we have none).
        let local = rq.q.head_key();
        let key_below = if local == u64::MAX {
            u64::MAX
        } else {
            local.saturating_sub(self.allow_vt(WEIGHT.default, rq.q.q.len()))
        };
        let take = |peer: &mut CpuQueue<BvtQueue>| peer.q.pop().map(|e| e.v);
        let how = Steal { key_below, order: Order::LowestKey, ..Steal::default() };
        let mut next = self.rqs.steal(cpu, &mut rq, now, how, take);
        let migrated = next.is_some();
        if next.is_none() {
            next = rq.q.pop().map(|e| e.v);
        }
        let Some(v) = next else {
            self.busy_svt[cpu].store(u64::MAX, Ordering::Relaxed);
            return Decision { next: None, slice_ns: None, migrated: false };
        };
        let mut vs = self.rqs.lock_vcpu(v);
        self.rqs.dispatch(&mut rq, &mut vs, v, now);
        let s = &vs.data;
        // SVT: smallest AVT among the runnable vCPUs here; it never goes back.
        let min_avt = rq.q.min_avt().map_or(s.avt, |m| m.min(s.avt));
        rq.q.svt = rq.q.svt.max(min_avt);
        rq.q.curr_evt = s.evt;
        rq.q.curr_avt = s.avt;
        rq.q.curr_weight = s.p.weight;
        // Run until passing the runner-up's EVT by the allowance; a warped vCPU no longer
        // than its warp limit.
        let allow = self.allow(rq.q.q.len() + 1);
        let mut slice = match rq.q.q.front() {
            Some(e) => (e.evt.saturating_sub(s.evt)).saturating_mul(s.p.weight) / VT_ONE + allow,
            None => allow,
        };
        if s.warped && s.p.warpl_ns != 0 {
            slice = slice.min((s.warp_start_ns + s.p.warpl_ns).saturating_sub(now).max(mcu));
        }
        self.busy_svt[cpu].store(rq.q.svt, Ordering::Relaxed);
        drop(vs);
        rq.q.curr_slice = slice.max(mcu);
        Decision { next, slice_ns: Some(slice.max(mcu)), migrated }
    }

    fn set_domain_param(&self, d: DomainId, name: &str, value: u64) -> Result<(), Error> {
        find_param(INFO.name, INFO.domain_params, name)?.check(value)?;
        let mut g = self.doms.lock(d)?;
        let (p, vcpus) = g.as_mut().ok_or(Error::NoSuchDomain(d))?;
        Self::set_param(p, name, value);
        for &v in vcpus.iter() {
            let (_, _rq, mut vs) = self.rqs.lock_home(v);
            vs.data.p = *p;
        }
        Ok(())
    }

    fn domain_param(&self, d: DomainId, name: &str) -> Result<u64, Error> {
        let spec = find_param(INFO.name, INFO.domain_params, name)?;
        self.doms.with(d, |(p, _)| match spec.name {
            "weight" => p.weight,
            "warp_us" => p.warp_ns / 1000,
            "warpl_us" => p.warpl_ns / 1000,
            _ => p.warpu_ns / 1000,
        })
    }

    fn set_global_param(&self, name: &str, value: u64) -> Result<(), Error> {
        runq::set_global(&INFO, &self.knobs(), name, value)
    }

    fn global_param(&self, name: &str) -> Result<u64, Error> {
        runq::global(&INFO, &self.knobs(), name)
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(
            out,
            "bvt: ctx_allow {} us, latency {} us, mcu {} us",
            self.ctx_allow_ns.get() / 1000,
            self.latency_ns.get() / 1000,
            self.mcu_ns.get() / 1000
        )?;
        self.rqs.dump(out, |o, q| {
            write!(o, " svt={}", q.svt)?;
            q.q.iter().try_for_each(|e| {
                write!(o, " v{}(evt={}{})", e.v.0, e.evt, if e.warped { ",warped" } else { "" })
            })
        })
    }
}
