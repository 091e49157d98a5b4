//! Xen's credit scheduler (`xen/common/sched/credit.c`, Ackaouy 2006), rule for rule.
//!
//! Why it works the way it does:
//! - Each domain has a `weight` and an optional `cap` (% of one CPU). Every accounting
//!   period (one time slice, 30 ms) the master CPU hands out `10 credits/ms × slice × CPUs`
//!   among the *active* vCPUs in proportion to their domains' weights (`csched_acct`).
//! - Running costs 10 credits per ms, charged from timestamps at every schedule and tick
//!   (`burn_credits`), not by sampling who runs when the tick fires: a vCPU that yields or
//!   sleeps just before every tick still pays for every nanosecond it ran.
//! - Priorities: BOOST (woke up while UNDER) > UNDER (credit ≥ 0) > OVER (credit < 0) >
//!   IDLE. Each CPU's queue is kept in priority order, FIFO within a priority. BOOST is
//!   dropped at the first tick that finds the vCPU running (`csched_unit_acct`), so only
//!   vCPUs that run briefly and block keep it: that is what gives I/O and latency-sensitive
//!   domains short wake-up latency without breaking fairness.
//! - A capped domain whose vCPU falls below `-cap credits` is *parked*: held off the
//!   runqueues until accounting brings its credit back to ≥ 0 (then it is unparked, not
//!   boosted).
//! - Credit is bounded: below `-bound` it is clamped; above `+bound` the vCPU stops being
//!   active (stops earning) and its credit is halved. A vCPU becomes active again at the
//!   first tick that finds it running. Xen's bound is one slice worth (`credits_per_tslice`,
//!   300); Domino's default is two (`credit_bound_tslices = 2`), see below.
//! - `ratelimit_us`: a vCPU that has run less than this is not descheduled for another one
//!   (unless it yielded); the waker runs when the rate limit expires.
//! - Load balancing (`csched_load_balance`): when the local head is OVER or the CPU would
//!   idle, peers are visited in order from the next CPU, each *try*-locked, and the first
//!   queued vCPU of strictly higher priority is stolen. A wake-up kicks the vCPU's CPU if it
//!   idles or if the waker outranks the running vCPU and nobody idles; otherwise it kicks
//!   one idle CPU (`__runq_tickle`, with `tickle_one_idle`), which then steals it.
//! - Accounting changes priorities of queued vCPUs without touching the queues; each CPU
//!   re-sorts its queue at its next tick (`csched_runq_sort`), as Xen does.
//!
//! Why the bound is two slices by default, not Xen's one: a cpu-bound vCPU's credit moves by
//! a whole slice (300) each time it runs, and by its income (up to 134 per 30 ms for weight 8
//! of 36 on 2 CPUs) for every period it waits in the UNDER FIFO, which orders by arrival, not
//! by credit. Within a ±300 band that swing hits both walls: a high-weight vCPU that waited
//! three or four periods reaches +340..+380 at the accounting just before it runs and is halved
//! (weights 7 and 8 lost ~170 credits about twice a second: 1.7-1.9 points of the machine),
//! and a low-weight vCPU that runs a slice while OVER, or with a stale UNDER (priorities
//! change only at accounting), ends below -300 and has the rest of its debt forgiven. The
//! system-wide balance hands those credits back by weight, so the loss is a transfer from
//! high weights to low ones: weights 1..8 on 2 CPUs came out at +1.0 to -1.4 points of w/36.
//! With ±600 both walls are rarely reached and the error is below 0.3 points (README.md);
//! `credit_bound_tslices = 1` restores Xen's exact behaviour.
//!
//! Under consolidation (many domains per CPU) that is not enough: Xen rounds each domain's
//! and each vCPU's share up (7 credits for 6.25, 13 for 12.5 at 96 domains), the excess
//! lifts every credit to the upper bound, where halving takes it back from the vCPUs with
//! the most, the heavy ones; with 5 ms slices every vCPU stays UNDER and the weights are
//! ignored. Two weights whose shares round up to the same whole credit cannot be told
//! apart at all: 320 and 256 at 128 domains on 4 CPUs with 5 ms slices earn 1.74 and 1.39
//! credits a period, both handed out as 2, and each half gets 50% for 55.6%
//! (`tests/consolidation.rs` pins it). [`CreditCounters`] count each of these
//! (`policy_counters` in results), and `exact_credit = 1` (Domino's) keeps the structure
//! with exact shares: fractions carried
//! (1/2^32 credit), debt carried, credit above the bound kept, and a runnable vCPU never
//! taken off the active list. README.md, "Consolidation", has the measurements.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::runq::{
    self, AtomicNs, CpuQueue, Domains, Enqueued, Knob, Place, RunQueue, Runqueues, Steal,
    VcpuState,
};
use crate::{
    Decision, DomainId, Error, ParamSpec, Policy, PolicyInfo, Topology, VcpuId, Wakeup,
    find_param,
};

/// Credits earned and burnt per millisecond of CPU (Xen's `CSCHED_CREDITS_PER_MSEC`).
pub const CREDITS_PER_MSEC: u64 = 10;
/// Ticks per time slice (Xen's `CSCHED_TICKS_PER_TSLICE`): a 30 ms slice has 10 ms ticks.
pub const TICKS_PER_TSLICE: u64 = 3;
const MS: u64 = 1_000_000;

const WEIGHT: ParamSpec = ParamSpec {
    name: "weight",
    default: 256,
    min: 1,
    max: 65535,
    doc: "relative share of CPU time",
    choices: &[],
};
const CAP: ParamSpec = ParamSpec {
    name: "cap",
    default: 0,
    min: 0,
    max: 25_500,
    doc: "most CPU the domain may use, in % of one CPU; 0 = no cap",
    choices: &[],
};
const TSLICE_MS: ParamSpec = ParamSpec {
    name: "tslice_ms",
    default: 30,
    min: 1,
    max: 1000,
    doc: "time slice, also the accounting period",
    choices: &[],
};
const RATELIMIT_US: ParamSpec = ParamSpec {
    name: "ratelimit_us",
    default: 1000,
    min: 0,
    max: 500_000,
    doc: "minimum run time before a vCPU can be descheduled for another; 0 = off",
    choices: &[],
};
/// Domino's, not Xen's (which has 1 built in): see the module documentation.
const BOUND_TSLICES: ParamSpec = ParamSpec {
    name: "credit_bound_tslices",
    default: 2,
    min: 1,
    max: 100,
    doc: "credit is kept within ± this many slices' worth; 1 = Xen",
    choices: &[],
};

/// Domino's, not Xen's: credit1's structure with proportional shares (module documentation).
const EXACT_CREDIT: ParamSpec = ParamSpec {
    name: "exact_credit",
    default: 0,
    min: 0,
    max: 1,
    doc: "1 = hand out each vCPU's exact share (fractions carried, not rounded up), carry \
          debt instead of forgiving it, keep credit above the bound instead of halving it; \
          0 = Xen",
    choices: &[],
};

/// Credit's description: `weight` and `cap` per domain; `tslice_ms`, `ratelimit_us`,
/// `credit_bound_tslices` and `exact_credit` globally.
pub static INFO: PolicyInfo = PolicyInfo {
    name: "credit",
    summary: "Xen's credit scheduler: weights, caps, BOOST/UNDER/OVER, 30 ms slices",
    domain_params: &[WEIGHT, CAP],
    global_params: &[TSLICE_MS, RATELIMIT_US, BOUND_TSLICES, EXACT_CREDIT],
    preempts: true,
    timed: true,
};

/// A credit priority; lower value = served first. Queues are indexed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pri {
    /// Woke up while UNDER.
    Boost = 0,
    /// Credit ≥ 0.
    Under = 1,
    /// Credit < 0.
    Over = 2,
    /// Nothing to run (the idle vCPU's priority in Xen).
    Idle = 3,
}

impl Pri {
    /// Its name in traces.
    pub fn name(self) -> &'static str {
        match self {
            Pri::Boost => "boost",
            Pri::Under => "under",
            Pri::Over => "over",
            Pri::Idle => "idle",
        }
    }
}

/// Per-vCPU credit state.
#[derive(Debug, Default)]
pub struct CreditVcpu {
    credit: i64,
    pri: Option<Pri>,
    /// Nanoseconds × credits not yet charged (the remainder of the last burn).
    residual: u64,
    /// With `exact_credit`: the fraction of a credit owed but not yet handed out, in
    /// 1/2^32 credits.
    frac: u64,
    /// Charged up to this time.
    start_ns: u64,
    /// Earning credits (on the active list, in Xen's terms).
    active: bool,
    /// Held off the runqueues by its domain's cap.
    parked: bool,
}

impl CreditVcpu {
    fn pri(&self) -> Pri {
        self.pri.unwrap_or(Pri::Under)
    }

    /// `burn_credits`: charge the time since `start_ns` at 10 credits/ms, exactly.
    fn burn(&mut self, now: u64) {
        if now <= self.start_ns {
            return;
        }
        let val = (now - self.start_ns) * CREDITS_PER_MSEC + self.residual;
        self.credit -= (val / MS) as i64;
        self.residual = val % MS;
        self.start_ns = now;
    }
}

/// One CPU's queue: a FIFO per priority, which is Xen's priority-ordered list without the
/// insertion walk.
#[derive(Debug, Default)]
pub struct CreditQueue {
    by_pri: [VecDeque<VcpuId>; 3],
    /// Priority of the running vCPU (`Idle` when none), for the wake-up tickle.
    curr_pri: Option<Pri>,
    /// The accounting epoch this queue was last sorted for (`runq_sort_last`).
    sorted_epoch: u32,
}

impl CreditQueue {
    /// `__runq_insert`: behind everything of the same or higher priority; a vCPU that
    /// yielded goes one step further, behind the first vCPU of lower priority, if any.
    fn insert(&mut self, v: VcpuId, pri: Pri, yielded: bool) {
        let p = (pri as usize).min(2);
        if yielded && let Some(lower) = (p + 1..3).find(|&i| !self.by_pri[i].is_empty()) {
            self.by_pri[lower].insert(1, v);
            return;
        }
        self.by_pri[p].push_back(v);
    }

    fn head_pri(&self) -> Pri {
        match self.by_pri.iter().position(|q| !q.is_empty()) {
            Some(0) => Pri::Boost,
            Some(1) => Pri::Under,
            Some(_) => Pri::Over,
            None => Pri::Idle,
        }
    }

    fn pop(&mut self) -> Option<VcpuId> {
        self.by_pri.iter_mut().find_map(|q| q.pop_front())
    }
}

impl RunQueue for CreditQueue {
    fn len(&self) -> usize {
        self.by_pri.iter().map(VecDeque::len).sum()
    }
    fn remove(&mut self, v: VcpuId) -> bool {
        self.by_pri.iter_mut().any(|q| RunQueue::remove(q, v))
    }
    fn fit(&mut self, room: usize) {
        for q in &mut self.by_pri {
            crate::runq::fit_deque(q, room);
        }
    }
    /// The head's priority (`Idle` when empty): peers steal only higher priorities.
    fn key(&self) -> u64 {
        self.head_pri() as u64
    }
}

/// Per-domain record.
#[derive(Debug)]
struct CreditDom {
    weight: u32,
    cap: u32,
    vcpus: Vec<VcpuId>,
    /// Active vCPUs, counted by the first pass of the last accounting.
    active: u32,
}

/// Fraction bits of the exact shares (1/2^32 credit).
const FRAC_BITS: u32 = 32;

/// How often credit1's clamps fired and what its rounding cost, since creation
/// ([`Policy::counters`]; schedsim writes them over the measured interval).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreditCounters {
    /// Accounting passes (`csched_acct`), one per slice.
    pub acct_periods: u64,
    /// Credits handed out, summed over vCPUs and passes.
    pub credits_handed: u64,
    /// Of those, credits beyond the exact weighted share: Xen's rounding up of each
    /// domain's and each vCPU's share (0 with `exact_credit`).
    pub credits_rounded_up: u64,
    /// Times a vCPU's debt went below the bound and the rest was forgiven (Xen's lower
    /// clamp; never with `exact_credit`).
    pub debt_forgiven: u64,
    /// Credits of debt forgiven.
    pub debt_forgiven_credits: u64,
    /// Times a vCPU's credit went above the bound and it stopped earning (Xen's upper
    /// clamp; also with `exact_credit`, which keeps the credit).
    pub stopped_earning: u64,
    /// Of those, times its credit was halved (never with `exact_credit`).
    pub credit_halved: u64,
    /// Credits taken by halving.
    pub credit_halved_credits: u64,
}

impl CreditCounters {
    /// Each counter with its name, as results carry them.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("acct_periods", self.acct_periods),
            ("credits_handed", self.credits_handed),
            ("credits_rounded_up", self.credits_rounded_up),
            ("debt_forgiven", self.debt_forgiven),
            ("debt_forgiven_credits", self.debt_forgiven_credits),
            ("stopped_earning", self.stopped_earning),
            ("credit_halved", self.credit_halved),
            ("credit_halved_credits", self.credit_halved_credits),
        ]
    }
}

/// What the accounting lock guards.
#[derive(Debug, Default)]
struct Acct {
    /// The system-wide credit balance the last pass left (Xen's `prv->credit_balance`):
    /// when negative, the next pass hands out that much more.
    balance: i64,
    counters: CreditCounters,
    /// Credits handed out beyond the exact shares, in 1/2^32 credits.
    rounded_fx: i128,
}

/// The credit scheduler.
pub struct Credit {
    rqs: Runqueues<CreditQueue, CreditVcpu>,
    doms: Domains<CreditDom>,
    tslice_ns: AtomicNs,
    ratelimit_ns: AtomicNs,
    /// `credit_bound_tslices`: credit stays within ± this many slices' worth.
    bound_tslices: AtomicNs,
    /// `exact_credit`: 1 = exact shares, debt carried, no halving.
    exact: AtomicNs,
    next_acct_ns: AtomicNs,
    /// Bumped by every accounting pass; CPUs re-sort their queue when it changes.
    sort_epoch: AtomicU32,
    /// Serialises accounting passes (Xen's private scheduler lock); never taken on wake or
    /// pick, and always before any runqueue lock. It holds the balance and the counters.
    acct_lock: spin::mutex::SpinMutex<Acct>,
    /// Told of every priority change, for the hypervisor's trace.
    trace: spin::mutex::SpinMutex<Option<crate::TraceHook>>,
}

impl Credit {
    /// A credit scheduler for `topo` with Xen's defaults.
    pub fn new(topo: &Topology) -> Result<Self, Error> {
        Ok(Credit {
            rqs: Runqueues::new(topo, CreditQueue::default)?,
            doms: Domains::new(topo),
            tslice_ns: AtomicNs::new(TSLICE_MS.default * MS),
            ratelimit_ns: AtomicNs::new(RATELIMIT_US.default * 1000),
            bound_tslices: AtomicNs::new(BOUND_TSLICES.default),
            exact: AtomicNs::new(EXACT_CREDIT.default),
            next_acct_ns: AtomicNs::new(0),
            sort_epoch: AtomicU32::new(0),
            acct_lock: spin::mutex::SpinMutex::new(Acct::default()),
            trace: spin::mutex::SpinMutex::new(None),
        })
    }

    /// The global parameters, where they are kept and in what unit.
    fn knobs(&self) -> [Knob<'_>; 4] {
        [
            Knob("tslice_ms", &self.tslice_ns, MS),
            Knob("ratelimit_us", &self.ratelimit_ns, 1000),
            Knob("credit_bound_tslices", &self.bound_tslices, 1),
            Knob("exact_credit", &self.exact, 1),
        ]
    }

    fn credits_per_tslice(&self) -> i64 {
        (CREDITS_PER_MSEC * self.tslice_ns.get() / MS) as i64
    }

    /// The bound on a vCPU's credit either way (Xen: `credits_per_tslice`).
    fn credit_bound(&self) -> i64 {
        self.credits_per_tslice() * self.bound_tslices.get() as i64
    }

    /// Puts a runnable vCPU that is off the queues onto its home queue, unless its cap
    /// parked it. It preempts the home CPU's vCPU (if no CPU idles: `__runq_tickle`, with
    /// `tickle_one_idle`, which [`Runqueues::kick_for`] follows) if it outranks it.
    fn enqueue(
        rq: &mut CpuQueue<CreditQueue>,
        vs: &mut VcpuState<CreditVcpu>,
        v: VcpuId,
    ) -> Enqueued {
        if vs.data.parked {
            return Enqueued::Held;
        }
        let pri = vs.data.pri();
        rq.q.insert(v, pri, false);
        if pri < rq.q.curr_pri.unwrap_or(Pri::Idle) { Enqueued::Preempt } else { Enqueued::Queued }
    }

    /// `csched_runq_sort`: rebuild the per-priority FIFOs from current priorities, keeping
    /// the relative order (each entry is visited once; no allocation).
    fn runq_sort(&self, rq: &mut CpuQueue<CreditQueue>) {
        let epoch = self.sort_epoch.load(Ordering::Acquire);
        if rq.q.sorted_epoch == epoch {
            return;
        }
        rq.q.sorted_epoch = epoch;
        let lens = [0, 1, 2].map(|i| rq.q.by_pri[i].len());
        for (i, &n) in lens.iter().enumerate() {
            for _ in 0..n {
                let Some(v) = rq.q.by_pri[i].pop_front() else {
                    break;
                };
                let pri = self.rqs.lock_vcpu(v).data.pri();
                rq.q.by_pri[(pri as usize).min(2)].push_back(v);
            }
        }
    }

    /// Sets a vCPU's priority class, telling the trace hook when it changes.
    fn set_pri(&self, v: VcpuId, data: &mut CreditVcpu, pri: Pri, now: u64) {
        if data.pri != Some(pri) {
            data.pri = Some(pri);
            let hook = *self.trace.lock();
            if let Some(hook) = hook {
                hook(v, pri.name(), now);
            }
        }
    }

    /// `csched_acct`: hands out one slice worth of credits to the active vCPUs, by weight
    /// and under the caps, and sets their priorities from the result. Parks a capped vCPU
    /// that went too far into debt (kicking its CPU if it runs) and unparks one back at
    /// zero (kicking a CPU to run it); clamps debt at the bound, and takes a vCPU above it
    /// off the active list with its credit halved. Runs on the master CPU's tick, once per
    /// slice.
    fn acct(&self, now: u64, kick: &mut dyn FnMut(usize)) {
        let mut acct = self.acct_lock.lock();
        let exact = self.exact.get() != 0;
        let per_tslice = self.credits_per_tslice();
        let bound = self.credit_bound();
        // Pass 1: count active vCPUs and the total active weight.
        let mut weight_total: i64 = 0;
        for d in self.doms.present() {
            let Ok(mut g) = self.doms.lock(d) else {
                continue;
            };
            let Some(dom) = g.as_mut() else { continue };
            dom.active = 0;
            for &v in &dom.vcpus {
                let (_, _rq, vs) = self.rqs.lock_home(v);
                dom.active += u32::from(vs.data.active);
            }
            weight_total += i64::from(dom.weight) * i64::from(dom.active);
        }
        self.sort_epoch.fetch_add(1, Ordering::AcqRel);
        acct.counters.acct_periods += 1;
        if weight_total == 0 {
            acct.balance = 0;
            return;
        }
        let prev_balance = acct.balance;
        let mut credit_total = per_tslice * self.rqs.ncpus() as i64;
        // Converge the balance towards 0 when it drops negative.
        if prev_balance < 0 {
            credit_total -= prev_balance;
        }
        // The same arithmetic without rounding, in 1/2^32 credits (`FRAC`): what each vCPU
        // is owed exactly. `exact_credit = 1` hands out this; Xen rounds up at each division,
        // and `credits_rounded_up` counts the difference.
        let mut credit_total_fx = i128::from(credit_total) << FRAC_BITS;
        let mut credit_balance = 0;
        let mut weight_left = weight_total;
        // Pass 2: distribute.
        for d in self.doms.present() {
            let Ok(g) = self.doms.lock(d) else {
                continue;
            };
            let Some(dom) = g.as_ref() else { continue };
            if dom.active == 0 {
                continue;
            }
            let active = i64::from(dom.active);
            let weight = i64::from(dom.weight);
            weight_left -= weight * active;
            // At most a full slice per active vCPU, more only while the balance is negative.
            let mut credit_peak = active * per_tslice;
            if prev_balance < 0 {
                credit_peak += (-prev_balance * weight * active + weight_total - 1) / weight_total;
            }
            let mut credit_cap = 0;
            if dom.cap != 0 {
                credit_cap = (i64::from(dom.cap) * per_tslice + 99) / 100;
                credit_peak = credit_peak.min(credit_cap);
                // Xen: "FIXME -- set cap per-unit as well...?" — the cap split evenly.
                credit_cap = (credit_cap + active - 1) / active;
            }
            let mut credit_fair =
                (credit_total * weight * active + weight_total - 1) / weight_total;
            if credit_fair >= credit_peak {
                // Capped (or more than it can use): give the rest to the domains after it.
                if weight_left != 0 {
                    credit_total += ((credit_fair - credit_peak) * weight_total + weight_left - 1)
                        / weight_left;
                }
                credit_fair = credit_peak;
            }
            let credit_fair = (credit_fair + active - 1) / active;
            // The exact share, per vCPU, in 1/2^32 credits.
            let (wt, wa) = (i128::from(weight_total), i128::from(weight * active));
            let peak_fx = i128::from(credit_peak) << FRAC_BITS;
            let mut fair_fx = credit_total_fx * wa / wt;
            if fair_fx >= peak_fx {
                if weight_left != 0 {
                    credit_total_fx += (fair_fx - peak_fx) * wt / i128::from(weight_left);
                }
                fair_fx = peak_fx;
            }
            let fair_fx = fair_fx / i128::from(active);
            for &v in &dom.vcpus {
                let (cpu, mut rq, mut vs) = self.rqs.lock_home(v);
                if !vs.data.active {
                    continue;
                }
                if exact {
                    // Whole credits now, the fraction carried to the next period.
                    let owed = fair_fx + i128::from(vs.data.frac);
                    vs.data.credit += (owed >> FRAC_BITS) as i64;
                    vs.data.frac = (owed & ((1 << FRAC_BITS) - 1)) as u64;
                    acct.counters.credits_handed += (owed >> FRAC_BITS) as u64;
                } else {
                    vs.data.credit += credit_fair;
                    acct.counters.credits_handed += credit_fair.max(0) as u64;
                    acct.rounded_fx += (i128::from(credit_fair) << FRAC_BITS) - fair_fx;
                }
                let credit = vs.data.credit;
                if credit < 0 {
                    self.set_pri(v, &mut vs.data, Pri::Over, now);
                    if dom.cap != 0 && credit < -credit_cap && !vs.data.parked {
                        vs.data.parked = true;
                        match vs.place {
                            Place::Queued => {
                                RunQueue::remove(&mut rq.q, v);
                                vs.place = Place::Off;
                            }
                            Place::Running => kick(cpu),
                            Place::Off => {}
                        }
                    }
                    // Xen: "Lower bound on credits" (debt beyond it is forgiven). With
                    // `exact_credit` the debt is carried.
                    if credit < -bound && !exact {
                        vs.data.credit = -bound;
                        acct.counters.debt_forgiven += 1;
                        acct.counters.debt_forgiven_credits += (-bound - credit) as u64;
                    }
                } else {
                    self.set_pri(v, &mut vs.data, Pri::Under, now);
                    if vs.data.parked {
                        vs.data.parked = false;
                        if vs.runnable && vs.place == Place::Off {
                            let how = Self::enqueue(&mut rq, &mut vs, v);
                            vs.place = Place::Queued;
                            if let Some(c) = self.rqs.kick_for(cpu, &rq, how == Enqueued::Preempt) {
                                kick(c);
                            }
                        }
                    }
                    // With `exact_credit`, only a vCPU that does not want the CPU (is not
                    // runnable) stops earning: one waiting in the queue is owed its share
                    // however long the queue (a heavy vCPU waiting behind 40 others on a
                    // CPU crosses a slice's worth before its turn).
                    if credit > bound && (!exact || !vs.runnable) {
                        // Xen: "Upper bound on credits means vCPU stops earning"; halved so it
                        // restarts "a little bit ahead". With `exact_credit` it keeps it.
                        vs.data.active = false;
                        acct.counters.stopped_earning += 1;
                        if !exact {
                            vs.data.credit = credit / 2;
                            acct.counters.credit_halved += 1;
                            acct.counters.credit_halved_credits += (credit - credit / 2) as u64;
                        }
                    }
                }
                if vs.place == Place::Running {
                    rq.q.curr_pri = Some(vs.data.pri());
                }
                credit_balance += vs.data.credit;
            }
        }
        acct.balance = credit_balance;
        acct.counters.credits_rounded_up = (acct.rounded_fx.max(0) >> FRAC_BITS) as u64;
    }

    fn domain_spec(name: &str) -> Result<&'static ParamSpec, Error> {
        find_param(INFO.name, INFO.domain_params, name)
    }
}

impl Policy for Credit {
    fn info(&self) -> &'static PolicyInfo {
        &INFO
    }

    runq::runqueue_calls!(rqs);

    fn add_domain(&self, d: DomainId, params: &[(&str, u64)]) -> Result<(), Error> {
        for (name, value) in params {
            Self::domain_spec(name)?.check(*value)?;
        }
        self.doms.add(
            d,
            CreditDom { weight: WEIGHT.default as u32, cap: 0, vcpus: Vec::new(), active: 0 },
        )?;
        for (name, value) in params {
            self.set_domain_param(d, name, *value)?;
        }
        Ok(())
    }

    fn remove_domain(&self, d: DomainId) -> Result<(), Error> {
        self.doms.remove(d, |dom| dom.vcpus.is_empty())
    }

    fn insert_vcpu(&self, v: VcpuId, domain: DomainId, cpu: usize) -> Result<(), Error> {
        self.rqs.check(v)?;
        // Domain lock first (before any runqueue lock), as Xen's private lock.
        let mut g = self.doms.lock(domain)?;
        let dom = g.as_mut().ok_or(Error::NoSuchDomain(domain))?;
        dom.vcpus.try_reserve(1).map_err(|_| Error::Busy)?;
        self.rqs.insert(v, domain, cpu, CreditVcpu::default())?;
        dom.vcpus.push(v);
        Ok(())
    }

    fn remove_vcpu(&self, v: VcpuId) -> Result<(), Error> {
        self.rqs.check(v)?;
        let domain = {
            let (_, _rq, vs) = self.rqs.lock_home(v);
            vs.domain
        };
        let mut g = self.doms.lock(domain)?;
        self.rqs.remove(v)?;
        if let Some(dom) = g.as_mut() {
            dom.vcpus.retain(|&x| x != v);
        }
        Ok(())
    }

    fn wake(&self, v: VcpuId, now: u64) -> Wakeup {
        self.rqs.wake_with(v, |rq, vs| {
            // BOOST on wake for UNDER vCPUs, but not for one a cap had parked (Xen:
            // csched_unit_wake).
            if vs.data.pri() == Pri::Under && !vs.data.parked {
                self.set_pri(v, &mut vs.data, Pri::Boost, now);
            }
            Self::enqueue(rq, vs, v)
        })
    }

    fn schedule(&self, cpu: usize, now: u64) -> Decision {
        let tslice = self.tslice_ns.get();
        let ratelimit = self.ratelimit_ns.get();
        let mut rq = self.rqs.lock_for_schedule(cpu);
        if let Some((prev, mut vs)) = self.rqs.take_curr(&mut rq) {
            vs.data.burn(now);
            // Domino, beyond Xen: a vCPU that was charged joins the active list here, not
            // only when a tick finds it running. Otherwise a vCPU that always sleeps across
            // the tick is never accounted, stays UNDER and is BOOSTed at every wake-up
            // (the attack of Zhou et al., "Scheduler Vulnerabilities and Coordinated
            // Attacks in Cloud Computing", 2011), timestamps or not.
            if now > rq.curr_since() {
                vs.data.active = true;
            }
            let runtime = now.saturating_sub(rq.curr_since());
            let runnable = vs.runnable && !vs.data.parked;
            if !vs.yielded && ratelimit > 0 && runnable && runtime < ratelimit {
                // Rate limit: keep it until it has run `ratelimit`.
                let since = rq.curr_since();
                self.rqs.dispatch(&mut rq, &mut vs, prev, since);
                return Decision {
                    next: Some(prev),
                    slice_ns: Some(ratelimit - runtime),
                    migrated: false,
                };
            }
            if runnable {
                vs.place = Place::Queued;
                let pri = vs.data.pri();
                let yielded = vs.yielded;
                rq.q.insert(prev, pri, yielded);
            } else {
                vs.place = Place::Off;
            }
            vs.yielded = false;
        }
        // Local head; if it has no credit left (OVER) or there is none, look for more
        // urgent work on the peers first (csched_load_balance).
        let local = rq.q.head_pri();
        let mut migrated = false;
        let mut next = None;
        if local >= Pri::Over {
            // The first peer, from the next CPU on, with a queued vCPU of strictly higher
            // priority (a lower key), but never from a CPU that idles: it is about to take
            // its queue itself.
            let take = |peer: &mut CpuQueue<CreditQueue>| {
                peer.curr()?;
                peer.q.pop()
            };
            next = self.rqs.steal(
                cpu,
                &mut rq,
                now,
                Steal { key_below: local as u64, ..Steal::default() },
                take,
            );
            migrated = next.is_some();
        }
        if next.is_none() {
            next = rq.q.pop();
            if let Some(v) = next {
                let mut vs = self.rqs.lock_vcpu(v);
                self.rqs.dispatch(&mut rq, &mut vs, v, now);
            }
        }
        match next {
            Some(v) => {
                let mut vs = self.rqs.lock_vcpu(v);
                vs.data.start_ns = now;
                rq.q.curr_pri = Some(vs.data.pri());
            }
            None => rq.q.curr_pri = None,
        }
        Decision { next, slice_ns: next.map(|_| tslice), migrated }
    }

    fn next_tick(&self, _cpu: usize, now: u64) -> Option<u64> {
        // Every CPU ticks on multiples of the period, as csched_tick_resume aligns the
        // ticker ("now + period - now % period").
        let period = self.tslice_ns.get() / TICKS_PER_TSLICE;
        Some((now / period + 1) * period)
    }

    fn tick(&self, cpu: usize, now: u64, kick: &mut dyn FnMut(usize)) {
        {
            let mut rq = self.rqs.lock_cpu(cpu);
            // csched_tick → csched_unit_acct: charge the running vCPU, drop its BOOST (it
            // is using real CPU, so it is no longer "latency-sensitive"), and put it back on
            // the active list if it had left it.
            if let Some(v) = rq.curr() {
                let mut vs = self.rqs.lock_vcpu(v);
                if vs.data.pri() == Pri::Boost {
                    self.set_pri(v, &mut vs.data, Pri::Under, now);
                }
                vs.data.burn(now);
                vs.data.active = true;
                rq.q.curr_pri = Some(vs.data.pri());
            }
            self.runq_sort(&mut rq);
        }
        // The master CPU (0) runs the accounting once per slice (Xen's master_ticker).
        if cpu == 0 && now >= self.next_acct_ns.get() {
            let period = self.tslice_ns.get();
            self.next_acct_ns.set(now - now % period + period);
            self.acct(now, kick);
        }
    }

    fn set_domain_param(&self, d: DomainId, name: &str, value: u64) -> Result<(), Error> {
        let spec = Self::domain_spec(name)?;
        spec.check(value)?;
        self.doms.with(d, |dom| match spec.name {
            "weight" => dom.weight = value as u32,
            _ => dom.cap = value as u32,
        })
    }

    fn domain_param(&self, d: DomainId, name: &str) -> Result<u64, Error> {
        let spec = Self::domain_spec(name)?;
        self.doms.with(d, |dom| match spec.name {
            "weight" => u64::from(dom.weight),
            _ => u64::from(dom.cap),
        })
    }

    fn set_global_param(&self, name: &str, value: u64) -> Result<(), Error> {
        runq::set_global(&INFO, &self.knobs(), name, value)
    }

    fn global_param(&self, name: &str) -> Result<u64, Error> {
        runq::global(&INFO, &self.knobs(), name)
    }

    fn set_trace_hook(&self, hook: crate::TraceHook) {
        *self.trace.lock() = Some(hook);
    }

    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let c = self.acct_lock.lock().counters;
        for (name, value) in c.named() {
            out(name, value);
        }
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(
            out,
            "credit: tslice {} ms, ratelimit {} us, bound {} slices, exact {}, sort epoch {}",
            self.tslice_ns.get() / MS,
            self.ratelimit_ns.get() / 1000,
            self.bound_tslices.get(),
            self.exact.get(),
            self.sort_epoch.load(Ordering::Relaxed)
        )?;
        self.rqs.dump(out, |o, q| {
            for (name, fifo) in ["boost", "under", "over"].iter().zip(&q.by_pri) {
                write!(o, " {name}:")?;
                fifo.iter().try_for_each(|v| write!(o, " v{}", v.0))?;
            }
            Ok(())
        })
    }
}
