//! Xen's credit2 scheduler (`xen/common/sched/credit2.c`, Dunlap 2009, Faggioli since),
//! rule for rule where the model allows; every constant and rule names its Xen source.
//!
//! How it works:
//! - Credit is nanoseconds. Every vCPU starts with `CSCHED2_CREDIT_INIT` (10 ms) and burns
//!   `max_weight / weight` ns of credit per ns it runs, `max_weight` being the largest weight
//!   among the vCPUs of its runqueue (`t2c_update`, `update_max_weight`): the heaviest burns
//!   at the rate of time, a vCPU of half its weight at twice that.
//! - Each runqueue is kept in credit order (`runq_insert`); a CPU runs the vCPU with the
//!   most credit (`runq_candidate`) until its credit falls to that of the next waiter, for at
//!   least `CSCHED2_MIN_TIMER` (500 µs) or the rate limit and at most `CSCHED2_MAX_TIMER`
//!   (10 ms) (`csched2_runtime`). Slices shrink as waiters' credits bunch up, down to the
//!   500 µs (or rate limit) floor, which is what keeps short windows fair with many domains;
//!   the rate limit itself shrinks with the load (`latency_us`, Domino's), down to 500 µs.
//! - When the vCPU picked and the head of the queue have no credit left, an epoch ends:
//!   every vCPU of that runqueue gets `CSCHED2_CREDIT_INIT` more, clipped at init +
//!   `CSCHED2_CARRYOVER_MAX` (`reset_credit`); debt is carried over (down to
//!   `CSCHED2_CREDIT_MIN`), and the runqueue balances its load with the others
//!   (`balance_load`).
//! - Runqueues are shared by groups of CPUs (`runqueue`: one per CPU, core, socket, or all;
//!   at most `max_cpus_runqueue` CPUs each: `cpu_add_to_runqueue`). Within a runqueue any
//!   CPU takes any queued vCPU; between runqueues only the balancer moves vCPUs, by their
//!   exponentially decaying load averages (`update_runq_load`, `update_svc_load`).
//! - A waking vCPU goes to an idle, untickled CPU of its runqueue (a whole idle core first),
//!   else preempts the busy CPU whose vCPU it beats by the most credit (`runq_tickle`,
//!   `tickle_score`), minus `migrate_resist_us` if that is not its own CPU.
//! - A cap is a budget: the domain gets `cap`% of `cap_period_ms` every period
//!   (`replenish_domain_budget`), its vCPUs take quotas of it when they run
//!   (`unit_grab_budget`) and are parked when none is left (`park_unit`) until the next
//!   replenishment (`unpark_parked_units`).
//!
//! The model's differences from Xen, each for a reason given where it happens: no NUMA nodes
//! (`runqueue = "node"` does not exist, so `"all"` is index 3, not Xen's 4), no affinity
//! (every vCPU may run everywhere), kicks that `schedule` cannot return (a tickle of another
//! CPU from within a decision, as `reset_credit` and `migrate` make) are delivered by the
//! next `tick` (every 1 ms), and the per-domain replenishment timer is that tick on CPU 0.
//! Four more, for 1024 domains on a few CPUs (issue 12), each explained where it happens:
//! `max_weight` counts runnable vCPUs only and never a `control` domain's (Domain0's)
//! (`load_change`); the rate limit shrinks with the load (`ratelimit`) and the migration
//! resistance with it (`migrate_resist`); the rate limit counts as spent within
//! `RATELIMIT_TICKLE_TOLERANCE` of its end (`runq_candidate`).
//!
//! Locking (credit2.c's "Locking" comment, in this crate's terms): one spin lock per
//! runqueue; per-vCPU state behind its own lock, taken only with the lock of the vCPU's
//! runqueue held (so holding a runqueue lock, any of its vCPUs may be locked, nested); a
//! second runqueue only with `try_lock`; per-domain `meta` (weight, cap, vCPU list) before
//! runqueue locks, the domain's budget lock after them (Xen's `budget_lock` "nests inside
//! runqueue lock"). No global lock on wake or pick; nothing allocates there either (queues
//! are sized in `insert_vcpu`, `remove_vcpu`, as `runq.rs` does).

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use spin::mutex::SpinMutex;

use crate::handoff::{HandoffGuard, HandoffMutex};
use crate::runq::{self, AtomicNs, Knob, MAX_CPUS};
use crate::{
    Decision, DomainId, Error, ParamSpec, Policy, PolicyInfo, Stats, Topology, VcpuId, Wakeup,
    find_param,
};

const US: i64 = 1000;
const MS: i64 = 1_000_000;

/// `CSCHED2_MIN_TIMER`: the shortest slice (500 µs).
pub const MIN_TIMER: i64 = 500 * US;
/// `CSCHED2_CREDIT_INIT`: credit a vCPU starts with and gets back at each reset (10 ms).
pub const CREDIT_INIT: i64 = 10 * MS;
/// `CSCHED2_CREDIT_MIN`: credit never goes below this.
pub const CREDIT_MIN: i64 = -CREDIT_INIT;
/// `CSCHED2_IDLE_CREDIT`: what the idle vCPU "has", below any real vCPU.
const IDLE_CREDIT: i64 = CREDIT_MIN - 1;
/// `CSCHED2_CARRYOVER_MAX`: credit above init kept over a reset.
const CARRYOVER_MAX: i64 = MIN_TIMER;
/// `CSCHED2_MIGRATE_COMPENSATION`: credit given to a vCPU for moving to another CPU.
const MIGRATE_COMPENSATION: i64 = 50 * US;
/// `CSCHED2_RATELIMIT_TICKLE_TOLERANCE`.
const RATELIMIT_TICKLE_TOLERANCE: u64 = 50_000;
/// `CSCHED2_CREDIT_RESET`: at or below it, the epoch ends.
const CREDIT_RESET: i64 = 0;
/// `CSCHED2_MAX_TIMER` (= `CSCHED2_CREDIT_INIT`): the longest slice.
const MAX_TIMER: i64 = CREDIT_INIT;
/// `LOADAVG_GRANULARITY_SHIFT`: load samples are taken in units of 2^10 ns.
const LOADAVG_GRANULARITY_SHIFT: u32 = 10;
/// `LOADAVG_PRECISION_SHIFT` (`opt_load_precision_shift`): fractional bits of a load.
const P: u32 = 18;
/// `opt_underload_balance_tolerance` (`credit2_balance_under`).
const UNDERLOAD_BALANCE_TOLERANCE: i32 = 0;
/// `opt_overload_balance_tolerance` (`credit2_balance_over`).
const OVERLOAD_BALANCE_TOLERANCE: i32 = -3;

/// `runqueue` values, as `opt_runqueue_str` (Xen's `node`, 3, does not exist here).
const RQ_CPU: u64 = 0;
const RQ_CORE: u64 = 1;
const RQ_SOCKET: u64 = 2;
const RQ_ALL: u64 = 3;

const WEIGHT: ParamSpec = ParamSpec {
    name: "weight",
    default: 256, // CSCHED2_DEFAULT_WEIGHT
    min: 1,
    max: 65535,
    doc: "relative share of CPU time (credit burns at max_weight / weight)",
    choices: &[],
};
const CAP: ParamSpec = ParamSpec {
    name: "cap",
    default: 0,
    min: 0,
    max: 25_500,
    doc: "most CPU the domain may use, in % of one CPU, as a budget per cap_period_ms; 0 = none",
    choices: &[],
};
const RATELIMIT_US: ParamSpec = ParamSpec {
    name: "ratelimit_us",
    default: 1000, // sched_ratelimit_us (SCHED_DEFAULT_RATELIMIT_US)
    min: 0,
    max: 500_000, // XEN_SYSCTL_SCHED_RATELIMIT_MAX
    doc: "minimum run time before a vCPU is descheduled for another; 0 = off",
    choices: &[],
};
const RUNQUEUE: ParamSpec = ParamSpec {
    name: "runqueue",
    default: RQ_SOCKET, // opt_runqueue = OPT_RUNQUEUE_SOCKET
    min: RQ_CPU,
    max: RQ_ALL,
    doc: "which CPUs share a runqueue (credit2_runqueue)",
    choices: &["cpu", "core", "socket", "all"],
};
const MAX_CPUS_RUNQUEUE: ParamSpec = ParamSpec {
    name: "max_cpus_runqueue",
    default: 16, // MAX_CPUS_RUNQ (sched_credit2_max_cpus_runqueue)
    min: 1,
    max: 64,
    doc: "most CPUs in one runqueue",
    choices: &[],
};
const MIGRATE_RESIST_US: ParamSpec = ParamSpec {
    name: "migrate_resist_us",
    default: 500, // opt_migrate_resist (sched_credit2_migrate_resist)
    min: 0,
    max: 100_000,
    doc: "credit a vCPU must beat another CPU's by before it moves there",
    choices: &[],
};
const CONTROL: ParamSpec = ParamSpec {
    name: "control",
    default: 0,
    min: 0,
    max: 1,
    doc: "1: a control domain (Domino's Domain0): its weight is not counted in its runqueue's \
          max_weight, so its wake-ups do not change the rate at which the others burn credit",
    choices: &[],
};
const LATENCY_US: ParamSpec = ParamSpec {
    name: "latency_us",
    default: 100_000,
    min: 0,
    max: 10_000_000,
    doc: "time in which every runnable vCPU of a runqueue should run once: the rate limit \
          shrinks to latency_us x CPUs / runnable vCPUs, never below the 500 us MIN_TIMER; \
          0 = the rate limit as set (Xen)",
    choices: &[],
};
const OVERRUN_US: ParamSpec = ParamSpec {
    name: "overrun_us",
    default: 1000,
    min: 0,
    max: 1_000_000,
    doc: "a run its timer ended late is charged its time slice and at most this much more \
          in credit (Domino's, as bvt's: under emulation a run the host stalled would \
          otherwise set its vCPU back many rounds; a cap's budget is charged all of it); \
          0 = all of it (Xen)",
    choices: &[],
};
const LOAD_WINDOW_SHIFT: ParamSpec = ParamSpec {
    name: "load_window_shift",
    default: 30, // LOADAVG_WINDOW_SHIFT (credit2_load_window_shift)
    min: 11,     // must exceed LOADAVG_GRANULARITY_SHIFT (csched2_global_init)
    max: 40,     // keeps delta * (load << P) within 63 bits
    doc: "load averages decay over 2^shift ns",
    choices: &[],
};
const CAP_PERIOD_MS: ParamSpec = ParamSpec {
    name: "cap_period_ms",
    default: 10, // opt_cap_period (credit2_cap_period_ms)
    min: 1,      // at least CSCHED2_MIN_TIMER (csched2_global_init)
    max: 10_000,
    doc: "period at which capped domains get their budget back",
    choices: &[],
};

const GLOBALS: &[ParamSpec] = &[
    RATELIMIT_US,
    LATENCY_US,
    OVERRUN_US,
    RUNQUEUE,
    MAX_CPUS_RUNQUEUE,
    MIGRATE_RESIST_US,
    LOAD_WINDOW_SHIFT,
    CAP_PERIOD_MS,
];

/// Credit2's description: `weight` and `cap` per domain; `xl sched-credit2`'s and the boot
/// options' knobs globally.
pub static INFO: PolicyInfo = PolicyInfo {
    name: "credit2",
    summary: "Xen's credit2: credit in ns burnt by weight, shared runqueues, load balancing",
    domain_params: &[WEIGHT, CAP, CONTROL],
    global_params: GLOBALS,
    preempts: true,
    timed: true,
};

/// `struct csched2_unit`, the part protected by the runqueue (here: the vCPU's own lock).
#[derive(Debug)]
struct Svc {
    present: bool,
    domain: DomainId,
    /// The kernel wants it to run (woken, not put to sleep since).
    runnable: bool,
    /// `_VPF_parked`: out of budget, held off the runqueue.
    parked: bool,
    /// The CPU it runs or last ran on (`sched_unit_master`).
    cpu: usize,
    credit: i64,
    weight: u32,
    /// `residual`: remainder of the division in `t2c_update`.
    residual: u64,
    /// `start_time`: charged up to here.
    start_time: u64,
    /// Charged up to here at most in this run: its slice's end plus `overrun_us`
    /// (`u64::MAX`: no bound).
    charge_until: u64,
    /// `CSFLAG_scheduled`: running, or switching away, on `cpu` (until `context_saved`).
    scheduled: bool,
    /// The current vCPU of `cpu` (`curr_on_cpu(cpu) == unit`).
    running: bool,
    /// `CSFLAG_delayed_runq_add`: back onto the runqueue at `context_saved`.
    delayed_runq_add: bool,
    /// `CSFLAG_runq_migrate_request` and `migrate_rqd`.
    migrate_to: Option<usize>,
    /// `CSFLAG_unit_yield`.
    yielded: bool,
    on_runq: bool,
    /// Counted in its runqueue's `load` and `weights`.
    counted: bool,
    /// Its domain's `control`: its weight stays out of `weights` (and `max_weight`).
    control: bool,
    /// `tickled_cpu`.
    tickled_cpu: Option<usize>,
    /// `budget` (`i64::MAX`: no cap) and `budget_quota`.
    budget: i64,
    budget_quota: i64,
    /// `load_last_update`, `avgload` (`update_svc_load`).
    load_last_update: i64,
    avgload: i64,
}

impl Svc {
    fn new() -> Svc {
        Svc {
            present: false,
            domain: DomainId(0),
            runnable: false,
            parked: false,
            cpu: 0,
            credit: CREDIT_INIT,
            weight: WEIGHT.default as u32,
            residual: 0,
            start_time: 0,
            charge_until: u64::MAX,
            scheduled: false,
            running: false,
            delayed_runq_add: false,
            migrate_to: None,
            yielded: false,
            on_runq: false,
            counted: false,
            control: false,
            tickled_cpu: None,
            budget: i64::MAX,
            budget_quota: 0,
            load_last_update: 0,
            avgload: 0,
        }
    }

    /// `has_cap`.
    fn has_cap(&self) -> bool {
        self.budget != i64::MAX
    }

    /// `unit_runnable_state`: runnable and not parked.
    fn can_run(&self) -> bool {
        self.runnable && !self.parked
    }
}

struct Slot {
    /// Index of the runqueue the vCPU is assigned to (`svc->rqd`); changes only with both
    /// runqueue locks and the vCPU's lock held.
    rq: AtomicUsize,
    state: SpinMutex<Svc>,
}

/// One assigned vCPU in a runqueue's `svc` list, with what the balancer reads without
/// locking it.
#[derive(Clone, Copy, Debug)]
struct Assigned {
    v: VcpuId,
    /// `avgload` as of the balancer's last look.
    avgload: i64,
    /// `unit_is_migrateable`, as of the balancer's last look.
    movable: bool,
}

/// One CPU of a runqueue.
#[derive(Clone, Copy, Debug, Default)]
struct Pcpu {
    cpu: usize,
    curr: Option<VcpuId>,
    /// `state_entry_time` of `curr`.
    since: u64,
    /// Switched away from by the last `schedule`, until `context_saved`.
    leaving: Option<VcpuId>,
}

/// `struct csched2_runqueue_data`.
#[derive(Default)]
struct RqData {
    id: usize,
    pcpu: Vec<Pcpu>,
    /// Per position: the positions of the same core (`sibling_mask`).
    siblings: Vec<u64>,
    idle: u64,
    tickled: u64,
    smt_idle: u64,
    /// `runq`: (credit, vCPU), the head (most credit) first; equal credits in arrival
    /// order. A deque: the head leaves from the front, and a vCPU that just ran (little
    /// credit) joins near the back, so neither moves the rest.
    runq: VecDeque<(i64, VcpuId)>,
    /// `svc`: every vCPU assigned here.
    svc: Vec<Assigned>,
    /// The largest weight among the runnable vCPUs (see `weights`).
    max_weight: u32,
    /// The weights of the vCPUs counted in `load` (queued, running, switching away), as
    /// (weight, how many), by weight: Domino's `max_weight` is the last one's (see
    /// `Credit2::load_change`).
    weights: Vec<(u32, u32)>,
    /// `load`, `load_last_update`, `avgload`, `b_avgload`.
    load: i64,
    load_last_update: i64,
    avgload: i64,
    b_avgload: i64,
    /// `pick_bias`: a position.
    pick_bias: usize,
    stats: Stats,
}

impl RqData {
    fn active(&self) -> u64 {
        if self.pcpu.len() >= 64 { u64::MAX } else { (1u64 << self.pcpu.len()) - 1 }
    }

    fn pos_of(&self, cpu: usize) -> Option<usize> {
        self.pcpu.iter().position(|p| p.cpu == cpu)
    }

    /// `cpumask_cycle`: the first position in `mask` after `from`, cyclically.
    fn cycle(&self, from: usize, mask: u64) -> Option<usize> {
        let n = self.pcpu.len();
        (1..=n).map(|i| (from + i) % n).find(|&p| mask & (1 << p) != 0)
    }

    /// `cpumask_test_or_cycle`.
    fn test_or_cycle(&self, from: usize, mask: u64) -> Option<usize> {
        if mask & (1 << from) != 0 { Some(from) } else { self.cycle(from, mask) }
    }

    /// `smt_idle_mask_set`.
    fn smt_idle_set(&mut self, p: usize, idlers: u64) {
        let s = self.siblings[p];
        if s & idlers == s {
            self.smt_idle |= s;
        }
    }

    /// `smt_idle_mask_clear`.
    fn smt_idle_clear(&mut self, p: usize) {
        let s = self.siblings[p];
        if s & self.smt_idle == s {
            self.smt_idle &= !s;
        }
    }

    /// `tickle_cpu`: marks position `p` tickled; the caller kicks it.
    fn tickle(&mut self, p: usize) -> usize {
        self.tickled |= 1 << p;
        self.smt_idle_clear(p);
        self.stats.kicks += 1;
        self.pcpu[p].cpu
    }

    fn head_credit(&self) -> Option<i64> {
        self.runq.front().map(|e| e.0)
    }

    /// `runq_insert`: behind every vCPU with as much credit or more. A vCPU that has just
    /// run usually has the least credit and joins at the back: that case is checked first
    /// (the same place the search finds, without the search or `insert`'s general path).
    fn runq_insert(&mut self, v: VcpuId, s: &mut Svc) {
        if self.runq.back().is_none_or(|e| e.0 >= s.credit) {
            self.runq.push_back((s.credit, v));
        } else {
            let at = self.runq.partition_point(|e| e.0 >= s.credit);
            self.runq.insert(at, (s.credit, v));
        }
        s.on_runq = true;
    }

    /// `runq_remove`.
    fn runq_remove(&mut self, v: VcpuId, s: &mut Svc) {
        let lo = self.runq.partition_point(|e| e.0 > s.credit);
        let at = (lo..self.runq.len())
            .take_while(|&i| self.runq[i].0 == s.credit)
            .find(|&i| self.runq[i].1 == v)
            .or_else(|| self.runq.iter().position(|e| e.1 == v));
        if let Some(i) = at {
            self.runq.remove(i);
        }
        s.on_runq = false;
    }

    /// Counts a runnable vCPU of weight `w` in (`add`) or out; returns the new largest.
    fn count_weight(&mut self, w: u32, add: bool) -> u32 {
        match self.weights.binary_search_by_key(&w, |e| e.0) {
            Ok(i) if add => self.weights[i].1 += 1,
            Ok(i) => {
                self.weights[i].1 -= 1;
                if self.weights[i].1 == 0 {
                    self.weights.remove(i);
                }
            }
            Err(i) if add => self.weights.insert(i, (w, 1)),
            Err(_) => {}
        }
        self.weights.last().map_or(1, |e| e.0)
    }

    /// `update_runq_load`: the decaying average of the number of runnable vCPUs.
    fn update_load(&mut self, change: i64, now: u64, w: u32) {
        let now = (now >> LOADAVG_GRANULARITY_SHIFT) as i64;
        let load = self.load;
        if self.load_last_update + (1i64 << w) < now {
            self.avgload = load << P;
            self.b_avgload = load << P;
        } else {
            let delta = (now - self.load_last_update).max(0);
            self.avgload += ((delta * (load << P)) >> w) - ((delta * self.avgload) >> w);
            self.b_avgload += ((delta * (load << P)) >> w) - ((delta * self.b_avgload) >> w);
        }
        self.load += change;
        self.load_last_update = now;
    }

    /// `_runq_assign`.
    fn assign(&mut self, v: VcpuId, s: &Svc) {
        self.svc.push(Assigned { v, avgload: s.avgload, movable: true });
        self.b_avgload += s.avgload;
    }

    /// `_runq_deassign`.
    fn deassign(&mut self, v: VcpuId, s: &Svc) {
        if let Some(i) = self.svc.iter().position(|a| a.v == v) {
            self.svc.swap_remove(i);
        }
        self.b_avgload = (self.b_avgload - s.avgload).max(0);
    }

    /// `burn_credits` (with `t2c_update`): charges `s` for the time since `start_time`.
    fn burn(&self, s: &mut Svc, now: u64) {
        if now <= s.start_time {
            return;
        }
        // A run past its slice's end by more than `overrun_us` is charged up to there only
        // (the time it stretched, a host's stall under emulation, is forgiven): in credit,
        // which orders the runnable vCPUs, not in a cap's budget, which bounds the CPU
        // time the domain gets, and it got all of it.
        let ran = now - s.start_time;
        let delta = now.min(s.charge_until).saturating_sub(s.start_time);
        let val = delta * u64::from(self.max_weight) + s.residual;
        let weight = u64::from(s.weight.max(1));
        s.residual = val % weight;
        let val = (val / weight).min(i64::MAX as u64 / 2) as i64;
        // "Getting to lower credit than CSCHED2_CREDIT_MIN makes no sense."
        s.credit = (s.credit - val).max(CREDIT_MIN);
        if s.has_cap() {
            s.budget -= ran as i64;
        }
        s.start_time = now;
    }

    /// `c2t`: how long `s` runs to burn `credit`.
    fn c2t(&self, credit: i64, s: &Svc) -> i64 {
        credit * i64::from(s.weight) / i64::from(self.max_weight.max(1))
    }
}

/// `update_svc_load`: the vCPU's own decaying average (1 while runnable).
fn update_svc_load(s: &mut Svc, change: i64, now: u64, w: u32) {
    let unit_load: i64 = match change {
        -1 => 1,
        1 => 0,
        _ => i64::from(s.can_run()),
    };
    let now = (now >> LOADAVG_GRANULARITY_SHIFT) as i64;
    if s.load_last_update + (1i64 << w) < now {
        s.avgload = unit_load << P;
    } else {
        let delta = (now - s.load_last_update).max(0);
        s.avgload += ((delta * (unit_load << P)) >> w) - ((delta * s.avgload) >> w);
    }
    s.load_last_update = now;
}

struct Rq {
    /// Handed to a waiter on release (`handoff`): under emulation a CPU that waited for it
    /// otherwise lost the processor to the holder's whole turn.
    lock: HandoffMutex<RqData>,
}

/// `struct csched2_dom`, the part changed by the control path.
#[derive(Debug, Default)]
struct DomMeta {
    present: bool,
    weight: u32,
    cap: u32,
    control: bool,
    vcpus: Vec<VcpuId>,
}

/// `struct csched2_dom`, the part under `budget_lock`.
#[derive(Debug, Default)]
struct Budget {
    tot_budget: i64,
    budget: i64,
    /// `next_repl`; 0 until the first tick after the cap was set.
    next_repl: u64,
    /// `parked_units`.
    parked: Vec<VcpuId>,
}

struct Dom {
    meta: SpinMutex<DomMeta>,
    budget: SpinMutex<Budget>,
}

/// The credit2 scheduler.
pub struct Credit2 {
    topo: Topology,
    rqs: Vec<CachePadded<Rq>>,
    /// Runqueues in use (`active_queues`).
    nr_rqs: AtomicUsize,
    /// CPU to runqueue (`c2r`) and to position within it.
    c2r: Vec<AtomicUsize>,
    vcpus: Vec<CachePadded<Slot>>,
    doms: Vec<CachePadded<Dom>>,
    inserted: AtomicUsize,
    ratelimit_ns: AtomicNs,
    latency_ns: AtomicNs,
    overrun_ns: AtomicNs,
    migrate_resist_ns: AtomicNs,
    load_window_shift: AtomicNs,
    cap_period_ns: AtomicNs,
    runqueue: AtomicNs,
    max_cpus_runqueue: AtomicNs,
    /// Kicks a call could not return (bit per CPU), handed over by `take_kicks` right
    /// after it, as Xen's `cpumask_raise_softirq` from inside the hook.
    pending: Vec<AtomicU64>,
    /// Domains with a cap (bit per domain), for the replenishment.
    capped: Vec<AtomicU64>,
    /// When the next capped domain's budget is due (its `next_repl`): CPU 0's tick, Xen's
    /// per-domain `repl_timer`. 0: a domain was capped and has no period yet; `u64::MAX`:
    /// none is capped. Credit2 has no other tick.
    repl_due: AtomicU64,
}

/// `cpu_add_to_runqueue` for every CPU in order: the groups of CPUs that share a runqueue.
fn arrange(topo: &Topology, opt: u64, max_cpus: usize) -> Vec<Vec<usize>> {
    let n = topo.cpus;
    let min_rqs = (n - 1) / max_cpus + 1;
    let max_cpus_runq = (n / min_rqs).max(1);
    let same_socket = |a: usize, b: usize| topo.place(a).socket == topo.place(b).socket;
    let same_core = |a: usize, b: usize| same_socket(a, b) && topo.place(a).core == topo.place(b).core;
    let siblings: Vec<usize> = (0..n).map(|c| (0..n).filter(|&o| same_core(o, c)).count()).collect();
    let nr_siblings = |c: usize| siblings[c];
    let mut rqs: Vec<Vec<usize>> = Vec::new();
    for cpu in 0..n {
        let mut valid: Option<usize> = None;
        for (i, rq) in rqs.iter().enumerate() {
            // cpu_runqueue_match, against the runqueue's first CPU (its pick_bias then).
            let peer = rq[0];
            let matches = match opt {
                RQ_ALL => true,
                RQ_CORE => same_core(peer, cpu),
                RQ_SOCKET => same_socket(peer, cpu),
                _ => false, // OPT_RUNQUEUE_CPU never finds an existing runqueue
            };
            if !matches || rq.len() >= 64 {
                continue;
            }
            // Siblings stay together, even beyond the limit.
            if rq.iter().any(|&r| same_core(r, cpu)) {
                valid = Some(i);
                break;
            }
            // cpu_runqueue_siblings_match: room for the CPU's core and every core present.
            let mut cores: Vec<usize> = Vec::new();
            for &r in rq {
                if !cores.iter().any(|&c| same_core(c, r)) {
                    cores.push(r);
                }
            }
            let tot: usize = cores.iter().map(|&c| nr_siblings(c)).sum();
            let fits = tot + nr_siblings(cpu) <= max_cpus_runq;
            if rq.len() < max_cpus_runq
                && (fits || opt == RQ_ALL)
                && valid.is_none_or(|v| rq.len() < rqs[v].len())
            {
                valid = Some(i);
            }
        }
        match valid {
            Some(i) => rqs[i].push(cpu),
            None => rqs.push(alloc::vec![cpu]),
        }
    }
    rqs
}

enum Pick {
    /// Keep the current vCPU.
    Curr,
    /// Idle.
    Idle,
    /// A queued vCPU, and where it is in the queue.
    Queued(VcpuId, usize),
}

impl Credit2 {
    /// A credit2 scheduler for `topo`, with Xen's defaults.
    pub fn new(topo: &Topology) -> Result<Self, Error> {
        if topo.cpus == 0 || topo.cpus > MAX_CPUS || topo.max_vcpus == 0 || topo.max_domains == 0
        {
            return Err(Error::BadTopology);
        }
        let words = |n: usize| (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        let c2 = Credit2 {
            topo: *topo,
            rqs: (0..topo.cpus)
                .map(|_| CachePadded::new(Rq { lock: HandoffMutex::new(RqData::default()) }))
                .collect(),
            nr_rqs: AtomicUsize::new(0),
            c2r: (0..topo.cpus).map(|_| AtomicUsize::new(0)).collect(),
            vcpus: (0..topo.max_vcpus)
                .map(|_| {
                    CachePadded::new(Slot { rq: AtomicUsize::new(0), state: SpinMutex::new(Svc::new()) })
                })
                .collect(),
            doms: (0..topo.max_domains)
                .map(|_| {
                    CachePadded::new(Dom {
                        meta: SpinMutex::new(DomMeta::default()),
                        budget: SpinMutex::new(Budget::default()),
                    })
                })
                .collect(),
            inserted: AtomicUsize::new(0),
            ratelimit_ns: AtomicNs::new(RATELIMIT_US.default * 1000),
            latency_ns: AtomicNs::new(LATENCY_US.default * 1000),
            overrun_ns: AtomicNs::new(OVERRUN_US.default * 1000),
            migrate_resist_ns: AtomicNs::new(MIGRATE_RESIST_US.default * 1000),
            load_window_shift: AtomicNs::new(LOAD_WINDOW_SHIFT.default),
            cap_period_ns: AtomicNs::new(CAP_PERIOD_MS.default * 1_000_000),
            runqueue: AtomicNs::new(RUNQUEUE.default),
            max_cpus_runqueue: AtomicNs::new(MAX_CPUS_RUNQUEUE.default),
            pending: words(topo.cpus),
            capped: words(topo.max_domains),
            repl_due: AtomicU64::new(u64::MAX),
        };
        c2.layout();
        Ok(c2)
    }

    /// The global parameters, where they are kept and in what unit.
    fn knobs(&self) -> [Knob<'_>; 8] {
        [
            Knob("ratelimit_us", &self.ratelimit_ns, 1000),
            Knob("latency_us", &self.latency_ns, 1000),
            Knob("overrun_us", &self.overrun_ns, 1000),
            Knob("migrate_resist_us", &self.migrate_resist_ns, 1000),
            Knob("load_window_shift", &self.load_window_shift, 1),
            Knob("cap_period_ms", &self.cap_period_ns, 1_000_000),
            Knob("runqueue", &self.runqueue, 1),
            Knob("max_cpus_runqueue", &self.max_cpus_runqueue, 1),
        ]
    }

    /// (Re)builds the runqueues from `runqueue` and `max_cpus_runqueue` (no vCPU present).
    fn layout(&self) {
        let groups = arrange(
            &self.topo,
            self.runqueue.get(),
            self.max_cpus_runqueue.get() as usize,
        );
        for (i, rq) in self.rqs.iter().enumerate() {
            let mut g = rq.lock.lock();
            *g = RqData { id: i, max_weight: 1, ..RqData::default() };
            if let Some(cpus) = groups.get(i) {
                g.pcpu = cpus.iter().map(|&cpu| Pcpu { cpu, ..Pcpu::default() }).collect();
                g.siblings = cpus
                    .iter()
                    .map(|&a| {
                        cpus.iter().enumerate().fold(0u64, |m, (j, &b)| {
                            let (pa, pb) = (self.topo.place(a), self.topo.place(b));
                            if pa == pb { m | 1 << j } else { m }
                        })
                    })
                    .collect();
                g.idle = g.active();
                g.smt_idle = g.active();
                for &cpu in cpus {
                    self.c2r[cpu].store(i, Ordering::Release);
                }
            }
        }
        self.nr_rqs.store(groups.len(), Ordering::Release);
        self.refit();
    }

    fn w(&self) -> u32 {
        // prv->load_window_shift = opt_load_window_shift - LOADAVG_GRANULARITY_SHIFT
        self.load_window_shift.get() as u32 - LOADAVG_GRANULARITY_SHIFT
    }

    fn kick_later(&self, cpu: usize) {
        self.pending[cpu / 64].fetch_or(1 << (cpu % 64), Ordering::AcqRel);
    }

    /// Locks `v`'s runqueue, then `v`, retrying if it moved in between.
    fn lock_home(
        &self,
        v: VcpuId,
    ) -> (usize, HandoffGuard<'_, RqData>, spin::mutex::SpinMutexGuard<'_, Svc>)
    {
        let slot = &self.vcpus[v.index()];
        runq::lock_where(&slot.rq, |r| self.rqs[r].lock.lock(), || slot.state.lock())
    }

    fn lock_vcpu(&self, v: VcpuId) -> spin::mutex::SpinMutexGuard<'_, Svc> {
        self.vcpus[v.index()].state.lock()
    }

    fn check(&self, v: VcpuId) -> Result<(), Error> {
        if v.index() < self.vcpus.len() { Ok(()) } else { Err(Error::NoSuchVcpu(v)) }
    }

    /// Sizes every runqueue's vectors for the vCPUs present (next power of two), so that
    /// wake and pick never allocate and the heap comes back when the vCPUs go.
    fn refit(&self) {
        for rq in &self.rqs {
            let mut g = rq.lock.lock();
            let room = self.inserted.load(Ordering::Acquire).max(1).next_power_of_two();
            crate::runq::fit_deque(&mut g.runq, room);
            fit(&mut g.svc, room);
            fit(&mut g.weights, room);
        }
    }

    /// `update_load` for `v` (whose lock the caller holds as `s`) joining (`change` 1) or
    /// leaving (-1) the runnable vCPUs of `rq`, and `max_weight` with it.
    ///
    /// Domino's `max_weight` is the largest weight among the vCPUs counted in the
    /// runqueue's load (queued, running, switching away), not among every vCPU assigned to
    /// it as Xen's `update_max_weight` has it. The reason: a vCPU of weight ratio r to the
    /// largest burns r × `MIN_TIMER` of credit in its shortest slice, and once that passes
    /// 2 × `CREDIT_INIT` (r ≥ 40) every slice ends at `CREDIT_MIN`, where all such vCPUs
    /// are equal: weights stop mattering. Domino's Domain0 has weight 65535 (so that it is
    /// served first) and sleeps through experiments; counted while asleep it made guests of
    /// weights 1..8 share equally. Running vCPUs are charged at the old rate before the
    /// largest weight changes, so each nanosecond is charged at the rate in force then.
    ///
    /// A vCPU of a `control` domain (Domino's Domain0, the experiment's harness, not a
    /// tenant) is not counted at all. Counted while it ran, its weight 65535 made every
    /// guest running beside it burn 256 times faster: on the hypervisor, 1024 guests
    /// unpaused while Domain0 was still busy (its own credit spent on creating them, so it
    /// waited its turn) were driven to `CREDIT_MIN` by the hundred, and a 1 s interval
    /// began with credits split between +10 and -10 ms (Jain over cpu_ns 0.82 under
    /// `-icount`). Left out, it burns at `max_weight / 65535` (about nothing), stays at the
    /// head of its runqueue, and the guests' credit is Xen's among themselves.
    fn load_change(&self, rq: &mut RqData, v: VcpuId, s: &mut Svc, change: i64, now: u64) {
        let w = self.w();
        rq.update_load(change, now, w);
        update_svc_load(s, change, now, w);
        let add = change > 0;
        if add == s.counted {
            return;
        }
        s.counted = add;
        // A control domain's weight stays out (`control`, Domino's): see below.
        if s.control {
            return;
        }
        let new = rq.count_weight(s.weight, add);
        if new != rq.max_weight {
            self.burn_running(rq, v, s, now);
            rq.max_weight = new;
        }
    }

    /// Charges every vCPU running on `rq`'s CPUs up to `now` (`held`, locked by the caller
    /// as `hs`, through its guard).
    fn burn_running(&self, rq: &RqData, held: VcpuId, hs: &mut Svc, now: u64) {
        for pc in &rq.pcpu {
            match pc.curr {
                Some(c) if c == held => rq.burn(hs, now),
                // Every vCPU of `rq` is locked only under `rq`'s lock, which we hold: a busy
                // lock is one our caller holds, the current vCPU of a CPU in its `schedule`,
                // which was charged up to `now` already.
                Some(c) => {
                    if let Some(mut cs) = self.vcpus[c.index()].state.try_lock() {
                        rq.burn(&mut cs, now);
                    }
                }
                None => {}
            }
        }
    }

    /// `tickle_score`: how much `new` beats what runs on position `p` (negative: it does
    /// not).
    fn tickle_score(&self, rq: &RqData, new: &Svc, p: usize, now: u64) -> i64 {
        let Some(cur) = rq.pcpu[p].curr else {
            return -1;
        };
        // is_preemptable
        let ratelimit = self.ratelimit(rq);
        if ratelimit > RATELIMIT_TICKLE_TOLERANCE
            && now.saturating_sub(rq.pcpu[p].since) <= ratelimit - RATELIMIT_TICKLE_TOLERANCE
        {
            return -1;
        }
        let mut c = self.lock_vcpu(cur);
        rq.burn(&mut c, now);
        let mut score = new.credit - c.credit;
        if new.cpu != rq.pcpu[p].cpu {
            score -= self.migrate_resist(rq);
        }
        if score > 0 {
            // Without affinities every CPU is in both vCPUs' soft affinity: one bonus.
            score += CREDIT_INIT;
        }
        score
    }

    /// `runq_tickle`: the CPU to kick for `new`, just queued on `rq` (whose `svc` is `s`).
    fn runq_tickle(&self, rq: &mut RqData, s: &mut Svc, now: u64) -> Option<usize> {
        let from = rq.pos_of(s.cpu).unwrap_or(0);
        // Fully idle cores first, then any idle CPU; never one already tickled.
        let whole = rq.smt_idle & !rq.tickled;
        let idle = rq.idle & !rq.tickled;
        let ipid = rq.test_or_cycle(from, whole).or_else(|| rq.test_or_cycle(from, idle));
        let ipid = ipid.or_else(|| {
            // The busy CPU whose vCPU has the least credit, its own CPU first.
            let mut mask = rq.active() & !rq.idle & !rq.tickled;
            let mut best: Option<usize> = None;
            let mut max = 0;
            if mask & (1 << from) != 0 {
                mask &= !(1 << from);
                let score = self.tickle_score(rq, s, from, now);
                if score > max {
                    max = score;
                    best = Some(from);
                }
            }
            while mask != 0 {
                let p = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let score = self.tickle_score(rq, s, p, now);
                if score > max {
                    max = score;
                    best = Some(p);
                }
            }
            best
        })?;
        let cpu = rq.tickle(ipid);
        s.tickled_cpu = Some(cpu);
        Some(cpu)
    }

    /// `unit_grab_budget`: a capped vCPU takes its quota from its domain's budget, or is
    /// parked (taken off `rq` if queued) when there is none. True if it has budget.
    fn grab_budget(&self, rq: &mut RqData, v: VcpuId, s: &mut Svc, now: u64) -> bool {
        if s.budget > 0 {
            return true;
        }
        let mut b = self.doms[s.domain.index()].budget.lock();
        // The overrun is taken from the domain's budget.
        b.budget += s.budget;
        if b.budget > 0 {
            let got = s.budget_quota.min(b.budget);
            s.budget = got;
            b.budget -= got;
        } else {
            s.budget = 0;
            // park_unit
            s.parked = true;
            if s.on_runq {
                rq.runq_remove(v, s);
                self.load_change(rq, v, s, -1, now);
            }
            if !b.parked.contains(&v) && b.parked.len() < b.parked.capacity() {
                b.parked.push(v);
            }
        }
        s.budget > 0
    }

    /// `unit_return_budget`: what a descheduled capped vCPU did not use goes back to the
    /// domain. Returns how many parked vCPUs to unpark (`unpark_parked_units`).
    fn return_budget(&self, s: &mut Svc) -> usize {
        let mut b = self.doms[s.domain.index()].budget.lock();
        b.budget += s.budget;
        s.budget = 0;
        if b.budget > 0 { b.parked.len() } else { 0 }
    }

    /// `unpark_parked_units` for up to `n` vCPUs of domain `d`; kicks the first CPU to
    /// tickle through the return value and the others at the next tick.
    fn unpark(&self, d: DomainId, n: usize, now: u64) -> Option<usize> {
        let mut first = None;
        for _ in 0..n {
            let Some(v) = self.doms[d.index()].budget.lock().parked.pop() else {
                break;
            };
            let (_, mut rq, mut s) = self.lock_home(v);
            if !s.present || !s.parked {
                continue;
            }
            s.parked = false;
            if s.scheduled {
                // Between the decision that parked it and its context_saved.
                s.delayed_runq_add = s.runnable;
            } else if s.runnable && !s.on_runq {
                self.load_change(&mut rq, v, &mut s, 1, now);
                rq.runq_insert(v, &mut s);
                if let Some(c) = self.runq_tickle(&mut rq, &mut s, now) {
                    if first.is_none() {
                        first = Some(c);
                    } else {
                        self.kick_later(c);
                    }
                }
            }
        }
        first
    }

    /// `reset_credit`: the epoch ends on `rq`: every vCPU assigned to it gets
    /// `CREDIT_INIT` more (twice that if the one picked is at the floor), clipped at init +
    /// carry-over. `snext_credit` is the picked vCPU's credit.
    fn reset_credit(&self, rq: &mut RqData, now: u64, snext_credit: i64) {
        let mut reset = CREDIT_INIT;
        // "we simply want to keep moving everyone up until it is in the black again"
        if snext_credit <= CREDIT_MIN {
            reset += CREDIT_INIT;
        }
        let clip = |c: i64| (c + reset).min(CREDIT_INIT + CARRYOVER_MAX);
        for i in 0..rq.svc.len() {
            let v = rq.svc[i].v;
            let mut s = self.lock_vcpu(v);
            if s.running {
                // Its run so far is charged first; out of budget, its CPU must park it.
                rq.burn(&mut s, now);
                if s.budget <= 0
                    && let Some(p) = rq.pos_of(s.cpu)
                {
                    let cpu = rq.tickle(p);
                    self.kick_later(cpu);
                }
            }
            s.credit = clip(s.credit);
            s.start_time = now;
        }
        // The queue's copies, by the same rule ("everyone's order should be the same").
        for e in &mut rq.runq {
            e.0 = clip(e.0);
        }
    }

    /// `migrate`: moves `v` from runqueue `from` to `to` (both locked), or, if it is
    /// running or switching away, asks its CPU to move it at `context_saved`.
    fn migrate(&self, from: &mut RqData, to: &mut RqData, v: VcpuId, now: u64) {
        let mut s = self.lock_vcpu(v);
        from.stats.steals += 1;
        if s.scheduled {
            s.migrate_to = Some(to.id);
            if let Some(p) = from.pos_of(s.cpu) {
                let cpu = from.tickle(p);
                self.kick_later(cpu);
            }
            return;
        }
        let on_runq = s.on_runq;
        if on_runq {
            from.runq_remove(v, &mut s);
            self.load_change(from, v, &mut s, -1, now);
        }
        self.move_to(from, to, v, &mut s);
        if on_runq {
            self.load_change(to, v, &mut s, 1, now);
            to.runq_insert(v, &mut s);
            if let Some(c) = self.runq_tickle(to, &mut s, now) {
                self.kick_later(c);
            }
        }
    }

    /// Reassigns `v` (off any queue, not scheduled) from `from` to `to`, both locked.
    fn move_to(&self, from: &mut RqData, to: &mut RqData, v: VcpuId, s: &mut Svc) {
        from.deassign(v, s);
        let p = to.cycle(to.pick_bias, to.active()).unwrap_or(0);
        to.pick_bias = p;
        s.cpu = to.pcpu[p].cpu;
        self.vcpus[v.index()].rq.store(to.id, Ordering::Release);
        to.assign(v, s);
    }

    /// `balance_load`: between `rq` (locked, ours) and the runqueue whose load differs most
    /// from it, the push, pull or swap of vCPUs that leaves the two loads closest.
    fn balance_load(&self, rq: &mut RqData, now: u64) {
        let w = self.w();
        let nr = self.nr_rqs.load(Ordering::Acquire);
        if nr < 2 {
            return;
        }
        rq.update_load(0, now, w);
        let mut load_delta = 0;
        let mut max_delta: Option<(usize, i64, usize)> = None;
        for o in 0..nr {
            if o == rq.id {
                continue;
            }
            let Some(mut og) = self.rqs[o].lock.try_lock() else {
                rq.stats.steal_lock_busy += 1;
                continue;
            };
            og.update_load(0, now, w);
            let delta = (rq.b_avgload - og.b_avgload).abs();
            if delta > load_delta {
                load_delta = delta;
                max_delta = Some((o, og.b_avgload, og.pcpu.len()));
            }
        }
        let Some((o, o_load, o_cpus)) = max_delta else {
            return;
        };
        // Xen reads the last runqueue of the loop here (`st.orqd`), which is only the one
        // with the largest gap when it comes last; we read the one with the largest gap.
        let load_max = rq.b_avgload.max(o_load);
        let cpus_max = rq.pcpu.len().max(o_cpus) as i64;
        // "If we're under 100% capacity, only shift if load difference is > 1. otherwise,
        // shift if under 12.5%"
        let tolerance = if load_max < cpus_max << P {
            UNDERLOAD_BALANCE_TOLERANCE
        } else {
            OVERLOAD_BALANCE_TOLERANCE
        };
        if load_delta < 1i64 << (P as i32 + tolerance) as u32 {
            return;
        }
        let Some(mut og) = self.rqs[o].lock.try_lock() else {
            rq.stats.steal_lock_busy += 1;
            return;
        };
        // Fresh per-vCPU loads, and whether each may move (not already asked to).
        for list in [&mut rq.svc, &mut og.svc] {
            for a in list.iter_mut() {
                let mut s = self.lock_vcpu(a.v);
                update_svc_load(&mut s, 0, now, w);
                a.avgload = s.avgload;
                a.movable = s.migrate_to.is_none();
            }
        }
        // consider(): push, pull or swap, whichever leaves the smallest difference.
        let (l0, o0) = (rq.b_avgload, og.b_avgload);
        let mut best = (load_delta, None::<usize>, None::<usize>);
        let mut consider = |push: Option<&Assigned>, pull: Option<&Assigned>, i, j| {
            let (mut l, mut ol) = (l0, o0);
            if let Some(a) = push {
                l -= a.avgload;
                ol += a.avgload;
            }
            if let Some(b) = pull {
                l += b.avgload;
                ol -= b.avgload;
            }
            let delta = (l - ol).abs();
            if delta < best.0 {
                best = (delta, i, j);
            }
        };
        for (i, a) in rq.svc.iter().enumerate().filter(|(_, a)| a.movable) {
            for (j, b) in og.svc.iter().enumerate().filter(|(_, b)| b.movable) {
                consider(Some(a), Some(b), Some(i), Some(j));
            }
            consider(Some(a), None, Some(i), None);
        }
        for (j, b) in og.svc.iter().enumerate().filter(|(_, b)| b.movable) {
            consider(None, Some(b), None, Some(j));
        }
        let (_, push, pull) = best;
        let push = push.map(|i| rq.svc[i].v);
        let pull = pull.map(|j| og.svc[j].v);
        if let Some(v) = push {
            self.migrate(rq, &mut og, v, now);
        }
        if let Some(v) = pull {
            self.migrate(&mut og, rq, v, now);
        }
    }

    /// `runq_candidate`: what `p` (position in `rq`) runs next; `scurr` is the state of the
    /// vCPU that ran there, locked by the caller.
    fn runq_candidate(
        &self,
        rq: &mut RqData,
        scurr: Option<&mut Svc>,
        p: usize,
        now: u64,
    ) -> Pick {
        let cpu = rq.pcpu[p].cpu;
        let ratelimit = self.ratelimit(rq);
        let (mut yielded, mut snext_credit, mut pick) = (false, IDLE_CREDIT, Pick::Idle);
        if let Some(s) = scurr {
            yielded = core::mem::take(&mut s.yielded);
            // One the balancer asked to move stops here (Xen: `_VPF_migrating` makes it not
            // runnable until `context_saved` moves it).
            let stays = s.can_run() && s.migrate_to.is_none();
            // The rate limit keeps it (unless it yields). Domino's: within
            // `RATELIMIT_TICKLE_TOLERANCE` of its end the rate limit counts as spent, as
            // `tickle_score` (Xen's `is_preemptable`) already assumes when it tickles this
            // CPU. Xen keeps the runner there, and `csched2_runtime` then gives it a whole
            // `MIN_TIMER` more: at 1024 domains on 2 CPUs a third of all runs were two
            // slices long, each after a waker tickled the CPU 450-500 µs into a slice.
            let held = if ratelimit > RATELIMIT_TICKLE_TOLERANCE {
                ratelimit - RATELIMIT_TICKLE_TOLERANCE
            } else {
                ratelimit
            };
            if !yielded && ratelimit > 0 && stays && now.saturating_sub(rq.pcpu[p].since) < held {
                return Pick::Curr;
            }
            if stays {
                snext_credit = s.credit;
                pick = Pick::Curr;
            }
        }
        let resist = self.migrate_resist(rq);
        let mut i = 0;
        while i < rq.runq.len() {
            let (credit, v) = rq.runq[i];
            // Only a vCPU with more credit (or anyone, if the current one yields).
            if !yielded && credit <= snext_credit {
                break;
            }
            let mut s = self.lock_vcpu(v);
            // Left for the CPU that was tickled for it, if that one has not scheduled yet.
            if let Some(t) = s.tickled_cpu
                && t != cpu
                && rq.pos_of(t).is_some_and(|tp| rq.tickled & (1 << tp) != 0)
            {
                i += 1;
                continue;
            }
            // From another CPU only if it beats ours by the migration resistance.
            if s.cpu != cpu && snext_credit + resist > credit {
                i += 1;
                continue;
            }
            // Budget last: grabbing it is a side effect (it may park the vCPU and take it
            // off the queue, and the next one is then at `i`).
            if s.has_cap() && !self.grab_budget(rq, v, &mut s, now) {
                if s.on_runq {
                    i += 1;
                }
                continue;
            }
            pick = Pick::Queued(v, i);
            break;
        }
        pick
    }

    /// The rate limit in force on `rq` (`sched_ratelimit_us`), shrunk as its load grows
    /// (`latency_us`, Domino's, after Linux CFS's `sched_latency` over `nr_running`): at
    /// most `latency_us` × CPUs / runnable vCPUs, never below `MIN_TIMER`, the floor
    /// `csched2_runtime` keeps anyway. Xen's fixed 1 ms gives 1024 cpu domains on 2 CPUs
    /// one or two runs a second each, whole milliseconds (so Jain's index over 1 s is at
    /// most 0.989 even with credits level); at 500 µs they get three or four (0.995). Up to
    /// 100 runnable vCPUs per CPU (the default 100 ms) it is Xen's rate limit unchanged.
    fn ratelimit(&self, rq: &RqData) -> u64 {
        let ratelimit = self.ratelimit_ns.get();
        let latency = self.latency_ns.get();
        if ratelimit == 0 || latency == 0 || rq.load <= 0 {
            return ratelimit;
        }
        let share = latency.saturating_mul(rq.pcpu.len() as u64) / rq.load as u64;
        ratelimit.min(share.max(MIN_TIMER as u64))
    }

    /// The migration resistance in force on `rq` (`opt_migrate_resist`), shrunk in
    /// proportion with the rate limit (`ratelimit`). Xen's 500 µs is half its 1 ms rate
    /// limit; kept whole beside 500 µs slices it equals the step between two rounds'
    /// credits, so a waiter last run on the other CPU never beats the one just run by
    /// more than it, each CPU serves its own vCPUs only, and a CPU with more of them
    /// gives each less (Jain 0.97 at 1024 domains on 2 CPUs over 1 s).
    fn migrate_resist(&self, rq: &RqData) -> i64 {
        let resist = self.migrate_resist_ns.get();
        let ratelimit = self.ratelimit_ns.get();
        if ratelimit == 0 {
            return resist as i64;
        }
        (u128::from(resist) * u128::from(self.ratelimit(rq)) / u128::from(ratelimit)) as i64
    }

    /// `csched2_runtime`: how long `snext` runs.
    fn runtime(&self, rq: &RqData, s: &Svc, continuing: Option<u64>, now: u64, inflight: i64) -> u64 {
        let mut min_time = MIN_TIMER;
        let ratelimit = self.ratelimit(rq) as i64;
        if ratelimit > 0 {
            let rl = match continuing {
                Some(since) => since as i64 + ratelimit - now as i64,
                None => ratelimit,
            };
            min_time = min_time.max(rl);
        }
        // 1) run until its credit is 0; 2) or down to the first waiter's, if positive
        // (including the one just descheduled, `inflight`).
        let mut swait = rq.head_credit().filter(|&c| c > 0).unwrap_or(0);
        swait = swait.max(inflight);
        let rt_credit = if swait > 0 { s.credit - swait } else { s.credit };
        let mut time = if rt_credit > 0 { rq.c2t(rt_credit, s) } else { 0 };
        // 3) no longer than its budget.
        if s.has_cap() {
            time = time.min(s.budget);
        }
        // 4) within MIN_TIMER (or the rate limit) and MAX_TIMER.
        if time < min_time {
            time = min_time;
        } else if time > MAX_TIMER {
            time = MAX_TIMER;
        }
        time.max(1) as u64
    }

    /// `csched2_context_saved`, with `rq` and `v`'s lock held: `v` may go back onto a
    /// runqueue (its own, or the one the balancer asked for). Returns a CPU to kick and the
    /// unparking to do once the locks are dropped.
    fn saved(
        &self,
        r: usize,
        rq: &mut RqData,
        v: VcpuId,
        s: &mut Svc,
        now: u64,
    ) -> (Option<usize>, usize) {
        s.scheduled = false;
        let unpark = if s.has_cap() && s.budget > 0 { self.return_budget(s) } else { 0 };
        let add = core::mem::take(&mut s.delayed_runq_add) && s.can_run();
        if let Some(t) = s.migrate_to.take() {
            // The balancer's request (CSFLAG_runq_migrate_request): Xen's vcpu_migrate
            // after the context is saved. Only with the target's lock, else it stays.
            self.load_change(rq, v, s, -1, now);
            if t != r
                && let Some(mut tg) = self.rqs[t].lock.try_lock()
            {
                self.move_to(rq, &mut tg, v, s);
                if add {
                    self.load_change(&mut tg, v, s, 1, now);
                    tg.runq_insert(v, s);
                    return (self.runq_tickle(&mut tg, s, now), unpark);
                }
                return (None, unpark);
            }
            if add {
                self.load_change(rq, v, s, 1, now);
                rq.runq_insert(v, s);
                return (self.runq_tickle(rq, s, now), unpark);
            }
            return (None, unpark);
        }
        if add {
            rq.runq_insert(v, s);
            return (self.runq_tickle(rq, s, now), unpark);
        }
        self.load_change(rq, v, s, -1, now);
        (None, unpark)
    }

    /// Replenishes the budgets of capped domains whose period is over
    /// (`replenish_domain_budget`, Xen's per-domain timer) and unparks what they can; then
    /// records when the next one is due (`repl_due`).
    fn replenish(&self, now: u64, kick: &mut dyn FnMut(usize)) {
        let period = self.cap_period_ns.get();
        // Cleared first: a cap set from here on (`set_cap` stores 0) is not overwritten.
        // SeqCst here and in `set_cap` (the bit, then 0): of this store and that bit, at
        // least one sees the other. With release and acquire the load below could be served
        // before the store was seen (x86 reorders a load before an earlier store), miss a
        // bit set meanwhile and store MAX over that 0: CPU 0 then never ticked for a domain
        // just capped, whose budget never came back (up to 49 of 1,000,000 caps set during
        // a tick: `tests/credit2.rs`, a_cap_set_during_a_tick_is_not_lost).
        self.repl_due.store(u64::MAX, Ordering::SeqCst);
        let mut due = u64::MAX;
        for (wi, word) in self.capped.iter().enumerate() {
            let mut bits = word.load(Ordering::SeqCst);
            while bits != 0 {
                let d = wi * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let n = {
                    let mut b = self.doms[d].budget.lock();
                    if b.next_repl == 0 {
                        b.next_repl = now + period;
                    }
                    // do_replenish, as many times as periods were missed.
                    let mut replenished = false;
                    while b.next_repl <= now {
                        b.next_repl += period;
                        b.budget += b.tot_budget;
                        replenished = true;
                    }
                    due = due.min(b.next_repl);
                    if !replenished || b.budget <= 0 {
                        continue;
                    }
                    b.budget = b.budget.min(b.tot_budget);
                    b.parked.len()
                };
                if let Some(c) = self.unpark(DomainId(d as u32), n, now) {
                    kick(c);
                }
            }
        }
        self.repl_due.fetch_min(due, Ordering::AcqRel);
    }

    /// Runs `balance_load` for `cpu`'s runqueue at `now`, as a credit reset there does:
    /// for benchmarks and tests. Returns how many vCPUs it moved or asked to move.
    pub fn balance_now(&self, cpu: usize, now: u64) -> u64 {
        let r = self.c2r[cpu].load(Ordering::Acquire);
        let mut rq = self.rqs[r].lock.lock();
        let before = rq.stats.steals;
        self.balance_load(&mut rq, now);
        rq.stats.steals - before
    }

    fn domain_spec(name: &str) -> Result<&'static ParamSpec, Error> {
        find_param(INFO.name, INFO.domain_params, name)
    }

    /// Sets `d`'s cap (`csched2_dom_cntl`, the cap part), with `meta` locked.
    fn set_cap(&self, d: DomainId, meta: &mut DomMeta, cap: u32) {
        let period = self.cap_period_ns.get() as i64;
        let bit = 1u64 << (d.index() % 64);
        if cap != 0 {
            let tot = period * i64::from(cap) / 100;
            let quota = (tot / meta.vcpus.len().max(1) as i64).max(MIN_TIMER);
            {
                let mut b = self.doms[d.index()].budget.lock();
                b.tot_budget = tot;
                if meta.cap == 0 {
                    b.budget = tot;
                    b.next_repl = 0;
                }
            }

            for &v in &meta.vcpus {
                let (_, mut rq, mut s) = self.lock_home(v);
                s.budget_quota = quota;
                if meta.cap == 0 {
                    // Enable budgeting: every vCPU must grab some before it runs again.
                    if s.running {
                        let now = s.start_time;
                        rq.burn(&mut s, now);
                        if let Some(p) = rq.pos_of(s.cpu) {
                            let cpu = rq.tickle(p);
                            self.kick_later(cpu);
                        }
                    }
                    s.budget = 0;
                }
            }
            self.capped[d.index() / 64].fetch_or(bit, Ordering::SeqCst);
            if meta.cap == 0 {
                // CPU 0's tick starts the domain's period at once. After the bit: a
                // `replenish` that missed the bit has cleared `repl_due` before this (both
                // SeqCst: see `replenish`).
                self.repl_due.store(0, Ordering::SeqCst);
                self.kick_later(0);
            }
        } else if meta.cap != 0 {
            self.capped[d.index() / 64].fetch_and(!bit, Ordering::AcqRel);
            for &v in &meta.vcpus {
                let (_, _rq, mut s) = self.lock_home(v);
                s.budget = i64::MAX;
                s.budget_quota = 0;
            }
            let n = self.doms[d.index()].budget.lock().parked.len();
            meta.cap = 0;
            if let Some(c) = self.unpark(d, n, 0) {
                self.kick_later(c);
            }
        }
        meta.cap = cap;
    }
}

/// Sizes `v` for exactly `room` entries (never fewer than it holds).
fn fit<T>(v: &mut Vec<T>, room: usize) {
    let room = room.max(v.len());
    if v.capacity() < room {
        v.reserve_exact(room - v.len());
    } else if v.capacity() > room {
        v.shrink_to(room);
    }
}

impl Policy for Credit2 {
    fn info(&self) -> &'static PolicyInfo {
        &INFO
    }

    fn add_domain(&self, d: DomainId, params: &[(&str, u64)]) -> Result<(), Error> {
        for (name, value) in params {
            Self::domain_spec(name)?.check(*value)?;
        }
        let dom = self.doms.get(d.index()).ok_or(Error::NoSuchDomain(d))?;
        {
            let mut m = dom.meta.lock();
            if m.present {
                return Err(Error::AlreadyPresent);
            }
            *m = DomMeta {
                present: true,
                weight: WEIGHT.default as u32,
                cap: 0,
                control: false,
                vcpus: Vec::new(),
            };
            *dom.budget.lock() = Budget::default();
        }
        for (name, value) in params {
            self.set_domain_param(d, name, *value)?;
        }
        Ok(())
    }

    fn remove_domain(&self, d: DomainId) -> Result<(), Error> {
        let dom = self.doms.get(d.index()).ok_or(Error::NoSuchDomain(d))?;
        let mut m = dom.meta.lock();
        if !m.present {
            return Err(Error::NoSuchDomain(d));
        }
        if !m.vcpus.is_empty() {
            return Err(Error::Busy);
        }
        *m = DomMeta::default();
        *dom.budget.lock() = Budget::default();
        self.capped[d.index() / 64].fetch_and(!(1u64 << (d.index() % 64)), Ordering::AcqRel);
        Ok(())
    }

    fn insert_vcpu(&self, v: VcpuId, domain: DomainId, cpu: usize) -> Result<(), Error> {
        self.check(v)?;
        if cpu >= self.topo.cpus {
            return Err(Error::NoSuchCpu(cpu));
        }
        let dom = self.doms.get(domain.index()).ok_or(Error::NoSuchDomain(domain))?;
        let mut m = dom.meta.lock();
        if !m.present {
            return Err(Error::NoSuchDomain(domain));
        }
        if self.vcpus[v.index()].state.lock().present {
            return Err(Error::AlreadyPresent);
        }
        m.vcpus.try_reserve(1).map_err(|_| Error::Busy)?;
        {
            let mut b = dom.budget.lock();
            let want = m.vcpus.len() + 1;
            let len = b.parked.len();
            if b.parked.capacity() < want {
                b.parked.reserve_exact(want - len);
            }
        }
        self.inserted.fetch_add(1, Ordering::AcqRel);
        self.refit();
        // Xen places a new unit with csched2_res_pick; the caller's CPU is our choice (the
        // kernel spreads vCPUs itself), and balancing moves it if its runqueue is loaded.
        let r = self.c2r[cpu].load(Ordering::Acquire);
        {
            let mut rq = self.rqs[r].lock.lock();
            let slot = &self.vcpus[v.index()];
            let mut s = slot.state.lock();
            slot.rq.store(r, Ordering::Release);
            *s = Svc::new();
            s.present = true;
            s.domain = domain;
            s.cpu = cpu;
            s.weight = m.weight;
            s.control = m.control;
            // csched2_alloc_udata: "Starting load of 50%"
            s.avgload = 1 << (P - 1);
            rq.assign(v, &s);
        }
        m.vcpus.push(v);
        if m.cap != 0 {
            // Xen sets budgets when the cap is set; a vCPU inserted later must be capped
            // too (its quota: the budget split over the vCPUs present).
            let cap = m.cap;
            m.cap = 0;
            self.set_cap(domain, &mut m, cap);
        }
        Ok(())
    }

    fn remove_vcpu(&self, v: VcpuId) -> Result<(), Error> {
        self.check(v)?;
        let domain = {
            let (_, mut rq, mut s) = self.lock_home(v);
            if !s.present {
                return Err(Error::NoSuchVcpu(v));
            }
            if s.runnable || s.on_runq || s.scheduled {
                return Err(Error::Busy);
            }
            rq.deassign(v, &s);
            s.present = false;
            s.domain
        };
        self.inserted.fetch_sub(1, Ordering::AcqRel);
        {
            let mut m = self.doms[domain.index()].meta.lock();
            m.vcpus.retain(|&x| x != v);
            if m.vcpus.is_empty() {
                m.vcpus = Vec::new();
            }
            let mut b = self.doms[domain.index()].budget.lock();
            b.parked.retain(|&x| x != v);
            if m.vcpus.is_empty() {
                b.parked = Vec::new();
            }
        }
        self.refit();
        Ok(())
    }

    fn wake(&self, v: VcpuId, now: u64) -> Wakeup {
        if self.check(v).is_err() {
            return Wakeup { cpu: 0, kick: None };
        }
        let (_, mut rq, mut s) = self.lock_home(v);
        let cpu = s.cpu;
        if !s.present || s.runnable {
            return Wakeup { cpu, kick: None };
        }
        s.runnable = true;
        rq.stats.wakes += 1;
        // csched2_unit_wake: nothing to do if running or queued; after context_saved if
        // still switching away; nothing while parked (the kernel's unit_runnable is false).
        if s.running || s.on_runq || s.parked {
            return Wakeup { cpu, kick: None };
        }
        if s.scheduled {
            s.delayed_runq_add = true;
            return Wakeup { cpu, kick: None };
        }
        self.load_change(&mut rq, v, &mut s, 1, now);
        rq.runq_insert(v, &mut s);
        let kick = self.runq_tickle(&mut rq, &mut s, now);
        Wakeup { cpu: s.cpu, kick }
    }

    fn sleep(&self, v: VcpuId, now: u64) -> Option<usize> {
        self.check(v).ok()?;
        let (_, mut rq, mut s) = self.lock_home(v);
        if !s.present {
            return None;
        }
        s.runnable = false;
        // csched2_unit_sleep
        if s.running {
            if let Some(p) = rq.pos_of(s.cpu) {
                return Some(rq.tickle(p));
            }
            return Some(s.cpu);
        }
        if s.on_runq {
            self.load_change(&mut rq, v, &mut s, -1, now);
            rq.runq_remove(v, &mut s);
        } else {
            s.delayed_runq_add = false;
        }
        None
    }

    fn yield_now(&self, v: VcpuId, _now: u64) -> Option<usize> {
        self.check(v).ok()?;
        let (_, _rq, mut s) = self.lock_home(v);
        if s.present && s.running {
            s.yielded = true; // csched2_unit_yield
            return Some(s.cpu);
        }
        None
    }

    fn schedule(&self, cpu: usize, now: u64) -> Decision {
        let idle = Decision { next: None, slice_ns: None, migrated: false };
        if cpu >= self.topo.cpus {
            return idle;
        }
        let w = self.w();
        let r = self.c2r[cpu].load(Ordering::Acquire);
        let mut rq = self.rqs[r].lock.lock();
        let Some(p) = rq.pos_of(cpu) else {
            return idle;
        };
        rq.stats.schedules += 1;
        // A switch the caller did not report ends now (the contract: before our next
        // schedule).
        let mut kick_after = None;
        if let Some(l) = rq.pcpu[p].leaving.take() {
            let mut s = self.lock_vcpu(l);
            kick_after = self.saved(r, &mut rq, l, &mut s, now).0;
        }
        // "Clear tickled bit now that we've been scheduled"
        if rq.tickled & (1 << p) != 0 {
            rq.tickled &= !(1 << p);
            let idlers = rq.idle & !rq.tickled;
            rq.smt_idle_set(p, idlers);
        }
        let scurr = rq.pcpu[p].curr;
        // The current vCPU, locked for the whole decision (but the reset).
        let mut cg = scurr.map(|c| self.lock_vcpu(c));
        // Update credits (and budget); a capped vCPU out of budget grabs more or is parked.
        if let (Some(c), Some(s)) = (scurr, cg.as_deref_mut()) {
            rq.burn(s, now);
            if s.budget <= 0 {
                self.grab_budget(&mut rq, c, s, now);
            }
        }
        let pick = self.runq_candidate(&mut rq, cg.as_deref_mut(), p, now);
        let (snext, at) = match pick {
            Pick::Curr => (scurr, 0),
            Pick::Idle => (None, 0),
            Pick::Queued(v, i) => (Some(v), i),
        };
        let switching = snext != scurr;
        // Switching from a runnable vCPU: back onto the runqueue at context_saved.
        if switching && let Some(s) = cg.as_deref_mut() {
            s.delayed_runq_add = s.can_run();
        }
        let mut migrated = false;
        let slice = if let Some(n) = snext {
            let mut ng = switching.then(|| self.lock_vcpu(n));
            let credit = {
                let s = match ng.as_deref_mut() {
                    Some(s) => s,
                    None => cg.as_deref_mut().expect("the current vCPU continues"),
                };
                if switching {
                    if at == 0 && rq.runq.front().is_some_and(|e| e.1 == n) {
                        rq.runq.pop_front();
                        s.on_runq = false;
                    } else if rq.runq.get(at).is_some_and(|e| e.1 == n) {
                        rq.runq.remove(at);
                        s.on_runq = false;
                    } else {
                        rq.runq_remove(n, s);
                    }
                    s.scheduled = true;
                } else {
                    rq.update_load(0, now, w);
                    update_svc_load(s, 0, now, w);
                }
                s.credit
            };
            if rq.idle & (1 << p) != 0 {
                rq.idle &= !(1 << p);
                rq.smt_idle_clear(p);
            }
            // The epoch ends when the picked vCPU and the head have no credit left.
            let top_credit = rq.head_credit().map_or(credit, |h| h.max(credit));
            if top_credit <= CREDIT_RESET {
                drop(ng.take());
                drop(cg.take());
                self.reset_credit(&mut rq, now, credit);
                self.balance_load(&mut rq, now);
                cg = scurr.map(|c| self.lock_vcpu(c));
                ng = switching.then(|| self.lock_vcpu(n));
            }
            // After the reset, or it would capture a negative credit.
            let inflight = match cg.as_deref() {
                Some(cs) if switching && cs.delayed_runq_add => cs.credit,
                _ => 0,
            };
            let s = match ng.as_deref_mut() {
                Some(s) => s,
                None => cg.as_deref_mut().expect("the current vCPU continues"),
            };
            s.start_time = now;
            s.tickled_cpu = None;
            if s.cpu != cpu {
                s.credit += MIGRATE_COMPENSATION;
                s.cpu = cpu;
                migrated = true;
            }
            s.running = true;
            let continuing = (!switching).then_some(rq.pcpu[p].since);
            let slice = self.runtime(&rq, s, continuing, now, inflight);
            let overrun = self.overrun_ns.get();
            s.charge_until = match overrun {
                0 => u64::MAX,
                _ => now.saturating_add(slice).saturating_add(overrun),
            };
            Some(slice)
        } else {
            if rq.idle & (1 << p) == 0 {
                rq.idle |= 1 << p;
                let idlers = rq.idle & !rq.tickled;
                rq.smt_idle_set(p, idlers);
            }
            // "Make sure avgload gets updated periodically even if there's no activity"
            rq.update_load(0, now, w);
            None
        };
        if switching {
            if let Some(s) = cg.as_deref_mut() {
                s.running = false;
            }
            rq.pcpu[p].leaving = scurr;
            rq.pcpu[p].curr = snext;
            rq.pcpu[p].since = now;
        }
        drop(cg);
        drop(rq);
        if let Some(k) = kick_after {
            self.kick_later(k);
        }
        Decision { next: snext, slice_ns: slice, migrated }
    }

    fn context_saved(&self, cpu: usize, v: VcpuId, now: u64) -> Option<usize> {
        if cpu >= self.topo.cpus || self.check(v).is_err() {
            return None;
        }
        let (kick, unpark, domain) = {
            let (r, mut rq, mut s) = self.lock_home(v);
            let p = rq.pos_of(cpu)?;
            if rq.pcpu[p].leaving != Some(v) {
                return None;
            }
            rq.pcpu[p].leaving = None;
            let (kick, unpark) = self.saved(r, &mut rq, v, &mut s, now);
            (kick, unpark, s.domain)
        };
        let more = if unpark > 0 { self.unpark(domain, unpark, now) } else { None };
        match (kick, more) {
            (Some(k), Some(m)) => {
                self.kick_later(m);
                Some(k)
            }
            (k, m) => k.or(m),
        }
    }

    fn pick_cpu(&self, v: VcpuId, _now: u64) -> usize {
        // csched2_res_pick, as a query: the least loaded runqueue (our own counted without
        // us), and there its first idle CPU, else the vCPU's own CPU or the first.
        if self.check(v).is_err() {
            return 0;
        }
        let (home, cpu, avg) = {
            let (r, _rq, s) = self.lock_home(v);
            (r, s.cpu, s.avgload)
        };
        let mut best: Option<(i64, usize)> = None;
        for o in 0..self.nr_rqs.load(Ordering::Acquire) {
            let Some(g) = self.rqs[o].lock.try_lock() else { continue };
            let load = if o == home { (g.b_avgload - avg).max(0) } else { g.b_avgload };
            if best.is_none_or(|b| load < b.0) {
                best = Some((load, o));
            }
        }
        let Some((_, o)) = best else { return cpu };
        let Some(g) = self.rqs[o].lock.try_lock() else { return cpu };
        if g.pos_of(cpu).is_some() && g.idle & (1 << g.pos_of(cpu).unwrap_or(0)) != 0 {
            return cpu;
        }
        match g.cycle(g.pick_bias, g.idle) {
            Some(p) => g.pcpu[p].cpu,
            None if g.pos_of(cpu).is_some() => cpu,
            None => g.pcpu[0].cpu,
        }
    }

    /// CPU 0 ticks when a capped domain's budget is due, and only then.
    fn next_tick(&self, cpu: usize, _now: u64) -> Option<u64> {
        match self.repl_due.load(Ordering::Acquire) {
            u64::MAX => None,
            _ if cpu != 0 => None,
            due => Some(due),
        }
    }

    fn tick(&self, cpu: usize, now: u64, kick: &mut dyn FnMut(usize)) {
        if cpu == 0 {
            self.replenish(now, kick);
        }
        self.take_kicks(kick);
    }

    /// Kicks every CPU `kick_later` named since the last call.
    fn take_kicks(&self, kick: &mut dyn FnMut(usize)) {
        for (wi, word) in self.pending.iter().enumerate() {
            // Read first: a swap after every decision of every CPU would bounce the line.
            if word.load(Ordering::Acquire) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                kick(wi * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }

    fn set_domain_param(&self, d: DomainId, name: &str, value: u64) -> Result<(), Error> {
        let spec = Self::domain_spec(name)?;
        spec.check(value)?;
        let dom = self.doms.get(d.index()).ok_or(Error::NoSuchDomain(d))?;
        let mut m = dom.meta.lock();
        if !m.present {
            return Err(Error::NoSuchDomain(d));
        }
        if spec.name == "weight" {
            let (old, new) = (m.weight, value as u32);
            m.weight = new;
            // "Update weights for units, and max_weight for runqueues on which they reside"
            for &v in &m.vcpus {
                let (_, mut rq, mut s) = self.lock_home(v);
                if s.counted && !s.control {
                    rq.count_weight(old, false);
                    // As Xen's update_max_weight here, without charging the runners first.
                    rq.max_weight = rq.count_weight(new, true);
                }
                s.weight = new;
            }
        } else if spec.name == "control" {
            let (old, new) = (m.control, value != 0);
            m.control = new;
            for &v in &m.vcpus {
                let (_, mut rq, mut s) = self.lock_home(v);
                if s.counted && old != new {
                    rq.max_weight = rq.count_weight(s.weight, old);
                }
                s.control = new;
            }
        } else {
            self.set_cap(d, &mut m, value as u32);
        }
        Ok(())
    }

    fn domain_param(&self, d: DomainId, name: &str) -> Result<u64, Error> {
        let spec = Self::domain_spec(name)?;
        let dom = self.doms.get(d.index()).ok_or(Error::NoSuchDomain(d))?;
        let m = dom.meta.lock();
        if !m.present {
            return Err(Error::NoSuchDomain(d));
        }
        Ok(match spec.name {
            "weight" => u64::from(m.weight),
            "control" => u64::from(m.control),
            _ => u64::from(m.cap),
        })
    }

    fn set_global_param(&self, name: &str, value: u64) -> Result<(), Error> {
        if name != "runqueue" && name != "max_cpus_runqueue" {
            return runq::set_global(&INFO, &self.knobs(), name, value);
        }
        find_param(INFO.name, INFO.global_params, name)?.check(value)?;
        // The runqueue arrangement is fixed once vCPUs are placed (Xen: boot options only).
        if self.inserted.load(Ordering::Acquire) != 0 {
            return Err(Error::Busy);
        }
        runq::set_global(&INFO, &self.knobs(), name, value)?;
        self.layout();
        Ok(())
    }

    fn global_param(&self, name: &str) -> Result<u64, Error> {
        runq::global(&INFO, &self.knobs(), name)
    }

    fn stats(&self) -> Stats {
        let mut t = Stats::default();
        for rq in &self.rqs {
            t += rq.lock.lock().stats;
        }
        t
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(
            out,
            "credit2: ratelimit {} us, runqueue {}, max_cpus_runqueue {}, migrate_resist {} us, \
             load_window_shift {}, cap_period {} ms",
            self.ratelimit_ns.get() / 1000,
            RUNQUEUE.choices[self.runqueue.get() as usize],
            self.max_cpus_runqueue.get(),
            self.migrate_resist_ns.get() / 1000,
            self.load_window_shift.get(),
            self.cap_period_ns.get() / 1_000_000
        )?;
        for r in 0..self.nr_rqs.load(Ordering::Acquire) {
            let g = self.rqs[r].lock.lock();
            writeln!(
                out,
                "rq{r}: {} vCPUs, max_weight {}, load {}, avgload {} (~{}%), b_avgload {}",
                g.svc.len(),
                g.max_weight,
                g.load,
                g.avgload,
                (g.avgload * 100) >> P,
                g.b_avgload
            )?;
            for pc in &g.pcpu {
                match pc.curr {
                    Some(v) => writeln!(out, "  cpu{}: curr v{} since {}ns", pc.cpu, v.0, pc.since)?,
                    None => writeln!(out, "  cpu{}: idle", pc.cpu)?,
                }
            }
            write!(out, "  runq:")?;
            for &(credit, v) in g.runq.iter() {
                write!(out, " v{}({credit})", v.0)?;
            }
            writeln!(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(t: &Topology, opt: u64, max: usize) -> Vec<Vec<usize>> {
        arrange(t, opt, max)
    }

    #[test]
    fn runqueues_follow_the_topology_and_the_limit() {
        // -smp 8,sockets=2,cores=2,threads=2
        let t = Topology::shaped(8, 1, 1, 2, 2);
        assert_eq!(groups(&t, RQ_CPU, 16).len(), 8);
        assert_eq!(groups(&t, RQ_CORE, 16), [[0, 1], [2, 3], [4, 5], [6, 7]]);
        assert_eq!(groups(&t, RQ_SOCKET, 16), [[0, 1, 2, 3], [4, 5, 6, 7]]);
        assert_eq!(groups(&t, RQ_ALL, 16), [alloc::vec![0, 1, 2, 3, 4, 5, 6, 7]]);
        // At most 2 CPUs each: siblings stay together.
        assert_eq!(groups(&t, RQ_ALL, 2), [[0, 1], [2, 3], [4, 5], [6, 7]]);
        // Flat: "socket" is everything, up to 16 CPUs a runqueue, spread evenly.
        let flat = Topology::flat(4, 1, 1);
        assert_eq!(groups(&flat, RQ_SOCKET, 16), [[0, 1, 2, 3]]);
        let big = Topology::flat(64, 1, 1);
        let g = groups(&big, RQ_SOCKET, 16);
        assert_eq!(g.len(), 4);
        assert!(g.iter().all(|r| r.len() == 16));
        let huge = Topology::flat(255, 1, 1);
        let g = groups(&huge, RQ_SOCKET, 16);
        assert!(g.iter().all(|r| r.len() <= 16), "{g:?}");
        assert_eq!(g.iter().map(Vec::len).sum::<usize>(), 255);
    }

    /// Runs `c` on CPU 0 with the kernel's calls, for `steps` decisions from `now`.
    fn drive(c: &Credit2, mut now: u64, steps: usize) -> u64 {
        let mut curr = None;
        for _ in 0..steps {
            let d = c.schedule(0, now);
            if d.next != curr
                && let Some(prev) = curr
            {
                c.context_saved(0, prev, now);
            }
            curr = d.next;
            now += d.slice_ns.unwrap_or(1_000_000);
        }
        now
    }

    #[test]
    fn the_epoch_ends_with_a_reset_that_carries_debt_and_clips_surplus() {
        let t = Topology::flat(1, 3, 3);
        let c = Credit2::new(&t).unwrap();
        for v in 0..3u32 {
            c.add_domain(DomainId(v), &[("weight", if v == 2 { 512 } else { 256 })]).unwrap();
            c.insert_vcpu(VcpuId(v), DomainId(v), 0).unwrap();
        }
        // v2 (weight 512) stays asleep: it does not count for max_weight (Domino's rule,
        // see `load_change`), but it is assigned, so it gets the reset too, clipped at
        // init + carry-over.
        c.wake(VcpuId(0), 0);
        c.wake(VcpuId(1), 0);
        let credits = || [0, 1, 2].map(|v| c.lock_vcpu(VcpuId(v)).credit);
        let mut now = 0;
        let mut before = credits();
        // Each decision runs a vCPU at least the rate limit (1 ms), burning 1 ms of credit:
        // the first epoch ends within about 20 decisions.
        for _ in 0..40 {
            now = drive(&c, now, 1);
            let after = credits();
            if after[2] > before[2] {
                // The reset: everyone got CREDIT_INIT, the sleeper clipped at init +
                // carry-over; the runners' debts carried over.
                assert_eq!(after[2], CREDIT_INIT + CARRYOVER_MAX);
                assert!(before[0] <= 0 || before[1] <= 0, "{before:?}");
                assert!(after[0] > 0 && after[1] > 0, "{after:?}");
                assert!(after[0] < CREDIT_INIT + CARRYOVER_MAX, "{after:?}");
                let total = |x: [i64; 3]| x[0] + x[1];
                // Both runners: + CREDIT_INIT each, minus what the picked one burnt since.
                assert!(total(after) <= total(before) + 2 * CREDIT_INIT, "{before:?} {after:?}");
                assert!(total(after) >= total(before) + 2 * CREDIT_INIT - 3 * MS);
                return;
            }
            before = after;
        }
        panic!("no credit reset in 40 decisions: {:?}", credits());
    }

    /// One runnable vCPU of a domain capped at 20% (2 ms of budget every 10 ms), on CPU 0
    /// of two.
    fn one_capped_vcpu() -> Credit2 {
        let t = Topology::flat(1, 2, 2);
        let c = Credit2::new(&t).unwrap();
        c.add_domain(DomainId(0), &[("cap", 20)]).unwrap();
        c.insert_vcpu(VcpuId(0), DomainId(0), 0).unwrap();
        c.wake(VcpuId(0), 0);
        c
    }

    #[test]
    fn a_capped_vcpu_is_parked_and_comes_back_at_replenishment() {
        let c = one_capped_vcpu();
        // First tick starts the replenishment clock; the budget is 2 ms per 10 ms.
        c.tick(0, 0, &mut |_| {});
        assert_eq!(c.schedule(0, 0).next, Some(VcpuId(0)));
        // Its slice is its budget (2 ms), then it is out of budget and parked.
        let d = c.schedule(0, 2_000_000);
        assert_eq!(d.next, None, "out of budget: parked");
        c.context_saved(0, VcpuId(0), 2_000_000);
        assert!(c.lock_vcpu(VcpuId(0)).parked);
        // At the replenishment (10 ms) it is unparked and CPU 0 is kicked.
        let mut kicked = alloc::vec::Vec::new();
        c.tick(0, 10_000_000, &mut |k| kicked.push(k));
        assert_eq!(kicked, [0]);
        assert_eq!(c.schedule(0, 10_000_000).next, Some(VcpuId(0)));
    }

    #[test]
    fn credit_burns_at_max_weight_over_weight() {
        let t = Topology::flat(1, 2, 2);
        let c = Credit2::new(&t).unwrap();
        c.add_domain(DomainId(0), &[("weight", 256)]).unwrap();
        c.add_domain(DomainId(1), &[("weight", 512)]).unwrap();
        c.insert_vcpu(VcpuId(0), DomainId(0), 0).unwrap();
        c.insert_vcpu(VcpuId(1), DomainId(1), 0).unwrap();
        c.wake(VcpuId(0), 0);
        assert_eq!(c.schedule(0, 0).next, Some(VcpuId(0)));
        // Alone, it burns at its own weight's rate: the largest weight of the runnable.
        c.tick(0, 1_000_000, &mut |_| {});
        c.wake(VcpuId(1), 1_000_000);
        assert_eq!(c.lock_vcpu(VcpuId(0)).credit, CREDIT_INIT - MS);
        c.sleep(VcpuId(0), 2_000_000);
        c.schedule(0, 2_000_000);
        // With v1 (weight 512) runnable, 1 ms more at half the largest weight burns 2 ms.
        assert_eq!(c.lock_vcpu(VcpuId(0)).credit, CREDIT_INIT - 3 * MS);
    }

    #[test]
    fn a_run_stretched_past_its_slice_is_charged_its_slice_and_overrun_us_at_most() {
        // Two vCPUs of one weight on one CPU; the first one's run lasts 20 ms where its
        // slice ended much earlier (a host's stall under emulation).
        let stretched = |overrun_us: u64| {
            let t = Topology::flat(1, 2, 2);
            let c = Credit2::new(&t).unwrap();
            c.set_global_param("overrun_us", overrun_us).unwrap();
            for v in 0..2u32 {
                c.add_domain(DomainId(v), &[]).unwrap();
                c.insert_vcpu(VcpuId(v), DomainId(v), 0).unwrap();
                c.wake(VcpuId(v), 0);
            }
            let d = c.schedule(0, 0);
            let first = d.next.unwrap();
            let slice = d.slice_ns.unwrap();
            assert!(slice < 10 * MS as u64, "{slice}");
            c.schedule(0, 20 * MS as u64);
            (CREDIT_INIT - c.lock_vcpu(first).credit, slice as i64)
        };
        let (charged, slice) = stretched(1000);
        assert_eq!(charged, slice + MS, "its slice and 1 ms more");
        // 0: Xen's rule, all of it (down to CREDIT_MIN at most).
        let (charged, _) = stretched(0);
        assert_eq!(charged, (20 * MS).min(CREDIT_INIT - CREDIT_MIN));
    }

    #[test]
    fn a_stretched_run_is_charged_to_its_cap_budget_in_full() {
        // cap 20: 2 ms of budget every 10 ms. Its run lasts 20 ms (a host's stall under
        // emulation), far past its 2 ms slice and `overrun_us` (1 ms).
        let c = one_capped_vcpu();
        c.tick(0, 0, &mut |_| {});
        assert_eq!(c.schedule(0, 0).next, Some(VcpuId(0)));
        assert_eq!(c.schedule(0, 20 * MS as u64).next, None, "out of budget: parked");
        c.context_saved(0, VcpuId(0), 20 * MS as u64);
        // Two periods' budget (4 ms) does not pay 18 ms of debt: still parked (charged 3
        // ms, as its credit is, it would run again here and get 3 ms of every 2).
        c.tick(0, 20 * MS as u64, &mut |_| {});
        assert!(c.lock_vcpu(VcpuId(0)).parked);
        assert_eq!(c.schedule(0, 20 * MS as u64).next, None);
        // Ten periods' (20 ms) do.
        c.tick(0, 100 * MS as u64, &mut |_| {});
        assert_eq!(c.schedule(0, 100 * MS as u64).next, Some(VcpuId(0)));
    }

    #[test]
    fn a_control_domain_does_not_count_in_max_weight() {
        let t = Topology::flat(1, 2, 2);
        let c = Credit2::new(&t).unwrap();
        c.add_domain(DomainId(0), &[("weight", 256)]).unwrap();
        c.add_domain(DomainId(1), &[("weight", 65535), ("control", 1)]).unwrap();
        assert_eq!(c.domain_param(DomainId(1), "control").unwrap(), 1);
        c.insert_vcpu(VcpuId(0), DomainId(0), 0).unwrap();
        c.insert_vcpu(VcpuId(1), DomainId(1), 0).unwrap();
        c.wake(VcpuId(0), 0);
        assert_eq!(c.schedule(0, 0).next, Some(VcpuId(0)));
        // Domain0 wakes: the guest running goes on burning at its own rate, not 256 times
        // faster (it would be at CREDIT_MIN after 1 ms).
        c.wake(VcpuId(1), 0);
        c.tick(0, MS as u64, &mut |_| {});
        assert_eq!(c.schedule(0, MS as u64).next, Some(VcpuId(1)));
        assert_eq!(c.lock_vcpu(VcpuId(0)).credit, CREDIT_INIT - MS);
        // Counted again once it is no control domain: the same millisecond costs 256 ms.
        c.set_domain_param(DomainId(1), "control", 0).unwrap();
        c.context_saved(0, VcpuId(0), MS as u64);
        c.sleep(VcpuId(1), 2 * MS as u64);
        assert_eq!(c.schedule(0, 2 * MS as u64).next, Some(VcpuId(0)));
        c.wake(VcpuId(1), 2 * MS as u64);
        c.schedule(0, 3 * MS as u64);
        assert_eq!(c.lock_vcpu(VcpuId(0)).credit, CREDIT_MIN);
    }

    #[test]
    fn the_rate_limit_shrinks_with_the_load_down_to_min_timer() {
        let t = Topology::flat(2, 1024, 1024);
        let c = Credit2::new(&t).unwrap();
        for i in 0..1024u32 {
            c.add_domain(DomainId(i), &[]).unwrap();
            c.insert_vcpu(VcpuId(i), DomainId(i), (i % 2) as usize).unwrap();
        }
        let slice = |c: &Credit2, n: u32| {
            for i in 0..n {
                c.wake(VcpuId(i), 0);
            }
            c.schedule(0, 0).slice_ns.unwrap()
        };
        // 100 runnable vCPUs per CPU or fewer: Xen's 1 ms rate limit.
        assert_eq!(slice(&c, 200), 1_000_000);
        // 1024 on 2 CPUs: 100 ms x 2 / 1024 = 195 µs, floored at MIN_TIMER.
        assert_eq!(slice(&c, 1024), MIN_TIMER as u64);
        assert_eq!(c.migrate_resist(&c.rqs[0].lock.lock()), 250_000);
        // latency_us = 0: Xen's rate limit whatever the load.
        c.set_global_param("latency_us", 0).unwrap();
        assert_eq!(c.ratelimit(&c.rqs[0].lock.lock()), 1_000_000);
    }
}
