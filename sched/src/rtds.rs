//! RTDS, Xen's real-time deferrable-server scheduler (`xen/common/sched/rt.c`, Sisu Xi,
//! Meng Xu, Tianyang Chen, Dagaen Golomb): preemptive global earliest-deadline-first over
//! every CPU of the machine.
//!
//! The rules, each from rt.c (its function or constant named where it is kept below):
//! - Every vCPU is a *deferrable server* with a `period` and a `budget` (per domain here,
//!   applied to each of its vCPUs as `xl sched-rtds -d` does). Its deadline is the end of
//!   its current period; at each period's start it gets its whole budget back and any budget
//!   left from the last period is dropped (`rt_update_deadline`). While it runs, its budget
//!   burns, to the nanosecond (`burn_budget`); while it sleeps, its budget is kept.
//! - Priority: a lower *priority level* first, then the earlier deadline
//!   (`compare_unit_priority`); equals in arrival order (`deadline_queue_insert`). The
//!   runnable vCPUs of highest priority run, one per CPU (`rt_schedule`, `runq_pick`); the
//!   running vCPU keeps its CPU unless a queued one has strictly higher priority.
//! - A vCPU that has spent its budget waits for its next period (the *depleted* queue), or,
//!   with `extratime`, gets its budget again at the next priority level down: it runs only
//!   when no vCPU with budget left at a higher level wants the CPU (`burn_budget`'s
//!   `priority_level++`; the level returns to 0 at the next replenishment).
//! - A waking vCPU whose deadline passed while it slept starts a new period
//!   (`rt_unit_wake`); it is queued and *tickles* a CPU (`runq_tickle`): an idle CPU not
//!   already tickled, its own first, else the CPU running the lowest-priority vCPU if the
//!   waker beats it.
//! - Replenishments happen at deadlines (`repl_timer_handler`): a vCPU that was depleted,
//!   or at a lower level, may then preempt someone.
//!
//! Locking: rt.c keeps one runqueue, one depleted queue and one replenishment queue for the
//! whole CPU pool, under one global lock that every CPU's scheduling lock points at
//! (`struct rt_private`'s `lock`, "the global coarse-grained lock"). Global EDF needs it:
//! every decision compares against every CPU's current vCPU and the one queue. So does this
//! policy: one `SpinMutex` over all of its state, taken by every call. That breaks the rule
//! docs/DESIGN.md sets for the other policies here (no global lock on the hot paths, per-CPU
//! runqueues from `crate::runq`); the trade-off is deliberate and is rt.c's: exact global
//! EDF (the m highest-priority vCPUs run on the m CPUs) against a lock that every CPU's
//! wake and pick serialise on. On the 2 to 8 CPUs RTDS is meant for that costs little; on a
//! large machine it would not scale, which is why Xen's documentation suggests an RTDS
//! cpupool of a few CPUs. The contract of [`Policy`] is kept by rt.c's own means: a vCPU
//! switched away from stays *scheduled* (`RTDS_scheduled`) and off every queue until
//! `context_saved` (`RTDS_delayed_runq_add`), so no other CPU can pick it before then.
//!
//! What differs from rt.c, and why:
//! - No timers of our own: a policy never reads a clock or arms a timer. rt.c's
//!   replenishment timer becomes (1) due replenishments processed at every call, before
//!   anything else, and (2) the slice each decision returns: a CPU is called back at its
//!   vCPU's budget's end, at its deadline, or at the next replenishment that raises a queued
//!   vCPU's priority (a depleted one, or one running on extra time), whichever is first; an
//!   idle CPU at the next replenishment of a depleted vCPU. So every CPU re-decides when a
//!   replenishment can change what it should run. What a slice cannot do is tickle another
//!   CPU; CPU 0's [`Policy::tick`] does it, due when the first replenishment that raises a
//!   vCPU is ([`Policy::next_tick`], rt.c's one `repl_timer`), checking that the head of the
//!   queue does not beat what some CPU runs (`late_tickles` in the dump counts the times it
//!   had to). A replenishment queued earlier than CPU 0's tick kicks CPU 0 to ask again, as
//!   rt.c's `replq_insert` re-arms its timer.
//! - No admission control, as in rt.c: a set of vCPUs whose budgets exceed what the CPUs can
//!   give (Σ budget/period > CPUs, or less under global EDF's Dhall effect) misses
//!   deadlines, and then no vCPU is guaranteed anything.
//! - Per-domain parameters only (`xl sched-rtds -d`); rt.c also takes them per vCPU (`-v`).
//! - rt.c has no `yield` hook, so a yield only makes the CPU decide again: a yielding vCPU
//!   that still has the highest priority runs on.
//! - Fairness among equals, which rt.c leaves to chance: a deadline tie goes to the vCPU that
//!   waited longest (a replenishment is not an arrival; `State::arrive`), the running vCPU
//!   keeps its CPU only with strictly higher priority, a vCPU preempted the instant it was
//!   dispatched keeps its place, and a tickle among equally low running vCPUs preempts the
//!   one that has run longest. Without these, in overload, some vCPUs of equal parameters
//!   got four times others' CPU, or none at all (sched/tests/rtds.rs, properties.rs).
//! - Without extra time, time run beyond the budget (a late timer) is debt paid from the next
//!   periods, and a late decision charges the run before a deadline to the period that ended
//!   (`burn_budget`, `schedule`); rt.c forgives both.

use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use spin::mutex::SpinMutex;

use crate::runq::DomainParams;
use crate::{Decision, DomainId, Error, ParamSpec, Policy, PolicyInfo, Stats, Topology};
use crate::{VcpuId, Wakeup};

/// rt.c's `RTDS_MIN_PERIOD` and `RTDS_MIN_BUDGET`: 10 µs, "considering the scheduling
/// overhead".
const RTDS_MIN_US: u64 = 10;
/// The largest period and budget: `xen_domctl_sched_rtds` carries them as `uint32_t` µs
/// (rt.c's own bound, `RTDS_MAX_PERIOD = STIME_DELTA_MAX`, is larger).
const RTDS_MAX_US: u64 = u32::MAX as u64;
/// rt.c's `UPDATE_LIMIT_SHIFT`: more than 2^10 periods late, the next deadline is computed
/// by a division rather than by adding periods one at a time (`rt_update_deadline`).
const UPDATE_LIMIT_SHIFT: u32 = 10;
/// rt.c's `RTDS_MAX_PRIORITY_LEVEL`: the extra-time level saturates here rather than wrap
/// back to 0, the highest priority.
const RTDS_MAX_PRIORITY_LEVEL: u32 = u32::MAX;

/// RTDS's description: three per-domain parameters with `xl sched-rtds`'s names, no global
/// ones.
pub static INFO: PolicyInfo = PolicyInfo {
    name: "rtds",
    summary: "real-time deferrable server (Xen's rt.c): global EDF, per-domain period, budget \
              and extratime",
    domain_params: &[
        ParamSpec {
            name: "period_us",
            // rt.c's RTDS_DEFAULT_PERIOD: 10 ms.
            default: 10_000,
            min: RTDS_MIN_US,
            max: RTDS_MAX_US,
            doc: "the server's period: its budget comes back at the start of each, its \
                  deadline is the end of each",
            choices: &[],
        },
        ParamSpec {
            name: "budget_us",
            // rt.c's RTDS_DEFAULT_BUDGET: 4 ms.
            default: 4_000,
            min: RTDS_MIN_US,
            max: RTDS_MAX_US,
            doc: "CPU time guaranteed per period (at most period_us); unused budget is \
                  dropped at the period's end",
            choices: &[],
        },
        ParamSpec {
            name: "extratime",
            // rt.c's rt_alloc_udata sets RTDS_extratime on every new vCPU.
            default: 1,
            min: 0,
            max: 1,
            doc: "1: once its budget is spent, run on at a lower priority than any vCPU \
                  with budget left; 0: wait for the next period",
            choices: &[],
        },
    ],
    global_params: &[],
    preempts: true,
    timed: true,
};
/// Indices into `INFO.domain_params`, for [`DomainParams::value`].
const PERIOD_US: usize = 0;
const BUDGET_US: usize = 1;
const EXTRATIME: usize = 2;

/// Children per node of the heaps: 4 halves the depth of a binary heap for a few more
/// comparisons per level, which are cheap on packed keys (wake + pick at 1024 vCPUs: 362 ns
/// binary, 230 to 540 ns 4-ary on a host with a load of 4 to 6, where credit took 120 to
/// 320 ns).
const ARITY: usize = 4;
const _: () = assert!(ARITY == 4, "Heap::down's tournament compares four children");

/// "No position": a vCPU absent from a heap.
const NONE: u32 = u32::MAX;

/// A 4-ary min-heap of vCPUs with a position table, so that any vCPU can be removed in
/// O(log n). Its storage holds every vCPU the topology allows and is allocated once, so no
/// push ever allocates.
///
/// Keys and vCPUs are kept in two arrays (a node's four children's keys are one cache line
/// of `u128`s, not two of padded `(u128, u32)` pairs), and a sift moves a hole rather than
/// swapping: each level costs one key move and one position update instead of two of each.
/// The layout after every operation is the one the swapping heap gave (the same child is
/// chosen at every level, the first of the least), so queue order and `dump` are unchanged
/// (wake + pick at 1024 vCPUs as schedbench does it: 2134 to 1723 instructions a round under
/// cachegrind; best of 15 timed runs on a loaded host, 382-463 ns to 290 ns).
struct Heap<K> {
    keys: Vec<K>,
    ids: Vec<u32>,
    pos: Vec<u32>,
}

impl<K: Ord + Copy> Heap<K> {
    fn new(max_vcpus: usize) -> Self {
        Heap {
            keys: Vec::with_capacity(max_vcpus),
            ids: Vec::with_capacity(max_vcpus),
            pos: vec![NONE; max_vcpus],
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn contains(&self, v: VcpuId) -> bool {
        self.pos[v.index()] != NONE
    }

    fn peek(&self) -> Option<(K, VcpuId)> {
        Some((*self.keys.first()?, VcpuId(self.ids[0])))
    }

    /// The vCPUs in heap order (for `dump`).
    fn vcpus(&self) -> impl Iterator<Item = VcpuId> + '_ {
        self.ids.iter().map(|&v| VcpuId(v))
    }

    fn push(&mut self, key: K, v: VcpuId) {
        debug_assert!(!self.contains(v) && self.keys.len() < self.keys.capacity());
        self.keys.push(key);
        self.ids.push(v.0);
        let at = self.keys.len() - 1;
        self.up(at, key, v.0);
    }

    fn remove(&mut self, v: VcpuId) -> bool {
        let at = self.pos[v.index()];
        if at == NONE {
            return false;
        }
        let at = at as usize;
        self.pos[v.index()] = NONE;
        let key = self.keys.pop().expect("a vCPU with a position is in the heap");
        let id = self.ids.pop().expect("ids and keys have one length");
        if at < self.keys.len() {
            // The last one fills the gap: down if a child beats it, else up.
            if !self.down(at, key, id) {
                self.up(at, key, id);
            }
        }
        true
    }

    /// Gives every vCPU whose key is `due` the larger key `rekey` returns, and restores the
    /// order. The due ones are a subtree at the top (a parent's key is no larger than its
    /// children's), found breadth first into `scratch` (allocated once, as large as the
    /// heap can be); then each sifts down, the last first, so that every sift starts above
    /// two valid heaps (Floyd's heap construction, over the due subtree only). For one due
    /// vCPU that is a re-key of the head; for all of them, a heap construction: O(n), not
    /// the O(n log n) of re-keying the head once per due vCPU.
    fn rekey_top(
        &mut self,
        scratch: &mut Vec<u32>,
        due: impl Fn(K) -> bool,
        mut rekey: impl FnMut(VcpuId) -> K,
    ) {
        scratch.clear();
        if self.keys.first().is_none_or(|&k| !due(k)) {
            return;
        }
        scratch.push(0);
        let len = self.keys.len();
        let mut i = 0;
        while i < scratch.len() {
            let first = ARITY * scratch[i] as usize + 1;
            for c in first..(first + ARITY).min(len) {
                if due(self.keys[c]) {
                    scratch.push(c as u32);
                }
            }
            i += 1;
        }
        for &at in scratch.iter() {
            let at = at as usize;
            let key = rekey(VcpuId(self.ids[at]));
            debug_assert!(key >= self.keys[at]);
            self.keys[at] = key;
        }
        for &at in scratch.iter().rev() {
            let at = at as usize;
            self.down(at, self.keys[at], self.ids[at]);
        }
    }

    /// Places `(key, id)` at the hole `at` or above it.
    fn up(&mut self, mut at: usize, key: K, id: u32) {
        while at > 0 {
            let parent = (at - 1) / ARITY;
            if key >= self.keys[parent] {
                break;
            }
            self.fill(at, parent);
            at = parent;
        }
        self.put(at, key, id);
    }

    /// Places `(key, id)` at the hole `at` or below it, moving up the least child (the
    /// first of equals) while it is smaller. Returns whether it moved.
    fn down(&mut self, start: usize, key: K, id: u32) -> bool {
        let len = self.keys.len();
        let mut at = start;
        loop {
            let first = ARITY * at + 1;
            if first >= len {
                break;
            }
            let (least, least_key) = if first + ARITY <= len {
                // All four: a tournament, the earlier of equals winning each match.
                let c = &self.keys[first..first + ARITY];
                let a = if c[1] < c[0] { 1 } else { 0 };
                let b = if c[3] < c[2] { 3 } else { 2 };
                let w = if c[b] < c[a] { b } else { a };
                (first + w, c[w])
            } else {
                let mut least = first;
                for c in first + 1..len {
                    if self.keys[c] < self.keys[least] {
                        least = c;
                    }
                }
                (least, self.keys[least])
            };
            if least_key >= key {
                break;
            }
            self.fill(at, least);
            at = least;
        }
        self.put(at, key, id);
        at != start
    }

    /// Moves the entry at `from` into the hole `at`.
    #[inline]
    fn fill(&mut self, at: usize, from: usize) {
        self.put(at, self.keys[from], self.ids[from]);
    }

    /// Puts `(key, id)` at `at`.
    #[inline]
    fn put(&mut self, at: usize, key: K, id: u32) {
        self.keys[at] = key;
        self.ids[at] = id;
        self.pos[id as usize] = at as u32;
    }
}

/// The runqueue's order: level, then deadline, then arrival (rt.c's `compare_unit_priority`
/// and `deadline_queue_insert`, which queues a vCPU behind its equals).
///
/// Packed into a `u128` so that the heap compares two words, not three fields (schedbench's
/// wake + pick at 1024 vCPUs went from 724 to 362 ns): the level in the top 16 bits (levels beyond 65535
/// compare equal, then by deadline), the deadline in the next 64, the arrival in the low 48
/// (it wraps after 2^48 arrivals, which only reorders equals).
type RunKey = u128;
/// The replenishment order of queued vCPUs whose priority a replenishment raises: deadline
/// (high 64 bits), then arrival.
type ReplKey = u128;

const SEQ_BITS: u32 = 48;

fn run_key(level: u32, deadline: u64, seq: u64) -> RunKey {
    (u128::from(level.min(u32::from(u16::MAX))) << (64 + SEQ_BITS))
        | (u128::from(deadline) << SEQ_BITS)
        | u128::from(seq & ((1 << SEQ_BITS) - 1))
}

/// The (level, deadline) of a [`RunKey`], as [`Server::prio`] gives them.
fn key_prio(k: RunKey) -> (u32, u64) {
    ((k >> (64 + SEQ_BITS)) as u32, (k >> SEQ_BITS) as u64)
}

fn repl_key(deadline: u64, seq: u64) -> ReplKey {
    (u128::from(deadline) << 64) | u128::from(seq)
}

/// Where a vCPU is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Asleep, or runnable and waiting for `context_saved` (`delayed_add`).
    Off,
    /// On the runqueue: it has budget left, or extra time.
    Queued,
    /// Spent its budget without extra time: waits for its next period (rt.c's depletedq).
    Depleted,
    /// Running on a CPU, or leaving it until `context_saved` (rt.c's `RTDS_scheduled`).
    Scheduled,
}

/// One vCPU's server (rt.c's `struct rt_unit`).
#[derive(Clone, Copy, Debug)]
struct Server {
    present: bool,
    domain: DomainId,
    /// The caller wants it to run.
    runnable: bool,
    place: Place,
    /// rt.c's `RTDS_delayed_runq_add`: queue it at `context_saved`.
    delayed_add: bool,
    /// Switched away before it ran at all: requeued in its old place among equals, not as
    /// a new arrival.
    unrun: bool,
    /// The CPU it last ran on (or was inserted on): tickles look there first.
    cpu: usize,
    cur_budget: u64,
    cur_deadline: u64,
    last_start: u64,
    priority_level: u32,
    /// Run time beyond its budget not yet paid back (without extra time only; ours).
    debt: u64,
    /// When it last arrived on the queues (wake, context_saved): the tie-breaker.
    seq: u64,
}

impl Server {
    const ABSENT: Server = Server {
        present: false,
        domain: DomainId(0),
        runnable: false,
        place: Place::Off,
        delayed_add: false,
        unrun: false,
        cpu: 0,
        cur_budget: 0,
        cur_deadline: 0,
        last_start: 0,
        priority_level: 0,
        debt: 0,
        seq: 0,
    };

    /// Its priority as a key: lower is higher priority (`compare_unit_priority`).
    fn prio(&self) -> (u32, u64) {
        (self.priority_level.min(u32::from(u16::MAX)), self.cur_deadline)
    }
}

/// One CPU as the policy sees it.
#[derive(Clone, Copy, Debug, Default)]
struct PerCpu {
    /// What the last `schedule` returned for it.
    curr: Option<VcpuId>,
    /// The vCPU its last `schedule` switched away from, until `context_saved`.
    leaving: Option<VcpuId>,
    /// rt.c's `prv->tickled`: kicked since its last `schedule`.
    tickled: bool,
    /// When `curr` was dispatched here.
    since: u64,
}

/// Everything, under the one lock (rt.c's `struct rt_private`).
struct State {
    servers: Vec<Server>,
    /// Queued vCPUs with budget or extra time (rt.c's runq).
    runq: Heap<RunKey>,
    /// Queued vCPUs that a replenishment raises: depleted, or on extra time (level > 0).
    /// rt.c's replq holds every runnable vCPU; the others' replenishments only lower their
    /// priority, so they are done lazily, at the runqueue's head ([`State::replenish`]).
    raiseq: Heap<ReplKey>,
    cpus: Vec<PerCpu>,
    /// Arrival counter: FIFO among equal keys.
    seq: u64,
    /// Room for [`State::replenish`]'s due vCPUs (positions in `runq`) and for those of
    /// them that end up depleted: allocated here, once, as large as `runq` can be.
    scratch: Vec<u32>,
    depleted: Vec<u32>,
    stats: Stats,
    /// Tickles sent by the tick or handed over by `take_kicks`, because the call that found
    /// them could not return them.
    late_tickles: u64,
    /// CPU 0's tick as it last asked ([`Policy::next_tick`]): the first replenishment on
    /// `raiseq` then (`u64::MAX`: none) ...
    tick0: u64,
    /// ... and whether one queued since is earlier, so CPU 0 must be kicked to ask again.
    kick0: bool,
    /// Tickles found where they could not be returned, for `take_kicks` (room for every CPU,
    /// allocated here once).
    kicks: Vec<usize>,
}

/// A vCPU's parameters in ns, read from its domain's.
#[derive(Clone, Copy)]
struct Params {
    period: u64,
    budget: u64,
    extratime: bool,
}

/// The RTDS scheduler.
pub struct Rtds {
    state: SpinMutex<State>,
    params: DomainParams,
}

impl Rtds {
    /// An RTDS scheduler for `topo`: every table allocated here, once.
    pub fn new(topo: &Topology) -> Result<Self, Error> {
        if topo.cpus == 0
            || topo.cpus > crate::runq::MAX_CPUS
            || topo.max_vcpus == 0
            || topo.max_domains == 0
            || topo.max_vcpus >= NONE as usize
        {
            return Err(Error::BadTopology);
        }
        Ok(Rtds {
            state: SpinMutex::new(State {
                servers: vec![Server::ABSENT; topo.max_vcpus],
                runq: Heap::new(topo.max_vcpus),
                raiseq: Heap::new(topo.max_vcpus),
                cpus: vec![PerCpu::default(); topo.cpus],
                seq: 0,
                scratch: Vec::with_capacity(topo.max_vcpus),
                depleted: Vec::with_capacity(topo.max_vcpus),
                stats: Stats::default(),
                late_tickles: 0,
                tick0: u64::MAX,
                kick0: false,
                kicks: Vec::with_capacity(topo.cpus),
            }),
            params: DomainParams::new(topo, &INFO),
        })
    }

    fn params_of(&self, d: DomainId) -> Params {
        Params {
            period: self.params.value(d, PERIOD_US).saturating_mul(1000),
            budget: self.params.value(d, BUDGET_US).saturating_mul(1000),
            extratime: self.params.value(d, EXTRATIME) != 0,
        }
    }

    /// rt.c's `rt_validate_params`: budget ≤ period, with the other value as it is (or as
    /// given alongside).
    fn check_pair(period: u64, budget: u64) -> Result<(), Error> {
        if budget > period {
            return Err(Error::NotAtMost {
                param: INFO.domain_params[BUDGET_US].name,
                value: budget,
                limit: INFO.domain_params[PERIOD_US].name,
                limit_value: period,
            });
        }
        Ok(())
    }
}

impl State {
    /// `v` arrives on the queues (woken, or saved after running): it goes behind its
    /// equals. A replenishment, which moves a queued vCPU, is not an arrival: among equal
    /// deadlines the vCPU that has waited longest keeps its place (rt.c requeues replenished
    /// vCPUs in the order its timer handler meets them, which in overload favours some
    /// vCPUs for good over others of the same period: 4 of 8 got 4 times the others' CPU).
    fn arrive(&mut self, v: VcpuId) {
        self.seq += 1;
        self.servers[v.index()].seq = self.seq;
    }

    /// rt.c's `rt_update_deadline`: the deadline moves to the end of the period that holds
    /// `now`, with the whole budget and level 0.
    fn update_deadline(&mut self, v: VcpuId, now: u64, p: Params) {
        update_deadline(&mut self.servers[v.index()], now, p);
    }

    /// rt.c's `burn_budget`: charges the time since `last_start`; a spent budget either
    /// comes back one level down (extra time) or leaves the vCPU depleted. rt.c forgives
    /// what ran beyond the budget (`cur_budget = 0`); without extra time we carry it as
    /// debt into the next periods (`update_deadline`), so that a late timer does not hand
    /// out more than the budget: under TCG on a loaded host runs of 10 to 27 ms against a
    /// 2 ms budget gave a vCPU without extra time 27% of a CPU for its 20%.
    fn burn_budget(&mut self, v: VcpuId, now: u64, p: Params) {
        let s = &mut self.servers[v.index()];
        let delta = now.saturating_sub(s.last_start);
        s.last_start = now;
        if delta < s.cur_budget {
            s.cur_budget -= delta;
        } else if p.extratime {
            if s.priority_level < RTDS_MAX_PRIORITY_LEVEL {
                s.priority_level += 1;
            }
            s.cur_budget = p.budget;
        } else {
            s.debt = s.debt.saturating_add(delta - s.cur_budget);
            s.cur_budget = 0;
        }
    }

    /// rt.c's `runq_insert`: on the runqueue if it has budget or extra time, else on the
    /// depleted queue. Those whose next replenishment raises them also go on `raiseq`.
    /// Among equal keys, the earlier arrival first ([`State::arrive`]).
    fn runq_insert(&mut self, v: VcpuId, p: Params) {
        let s = self.servers[v.index()];
        let seq = s.seq;
        let raised_later = if s.cur_budget > 0 || p.extratime {
            self.runq.push(run_key(s.priority_level, s.cur_deadline, seq), v);
            self.servers[v.index()].place = Place::Queued;
            s.priority_level > 0
        } else {
            self.servers[v.index()].place = Place::Depleted;
            true
        };
        if raised_later {
            self.raiseq.push(repl_key(s.cur_deadline, seq), v);
            if s.cur_deadline < self.tick0 {
                self.kick0 = true;
            }
        }
    }

    /// Takes a queued or depleted vCPU off the queues.
    fn dequeue(&mut self, v: VcpuId) {
        self.runq.remove(v);
        self.raiseq.remove(v);
        self.servers[v.index()].place = Place::Off;
    }

    /// The replenishment timer (`repl_timer_handler`), for everything due by `now`: raised
    /// vCPUs (depleted, or on extra time) from `raiseq`, and those with budget from the head
    /// of the runqueue (at level 0 in deadline order, so the due ones are at the head).
    /// Running vCPUs are replenished by their own CPU's `schedule`, which their slice calls
    /// at their deadline. Returns how many vCPUs a replenishment raised.
    fn replenish(&mut self, now: u64, params: &DomainParams) -> usize {
        let mut raised = 0;
        while let Some((key, v)) = self.raiseq.peek() {
            if (key >> 64) as u64 > now {
                break;
            }
            self.dequeue(v);
            let p = params_of(params, self.servers[v.index()].domain);
            self.update_deadline(v, now, p);
            self.runq_insert(v, p);
            raised += 1;
        }
        // Every due one at once (after a deadline that many share, all of them): each gets
        // its new period and stays queued at level 0, its deadline moved; one whose debt
        // took the whole budget is depleted, and moved once the order is restored. The
        // order in which they are replenished changes nothing: each one's new state is its
        // own, and no two keys are equal (the arrival breaks ties).
        let due = |k: RunKey| {
            let (level, deadline) = key_prio(k);
            level == 0 && deadline <= now
        };
        let State { runq, servers, scratch, depleted, .. } = self;
        depleted.clear();
        runq.rekey_top(scratch, due, |v| {
            let p = params_of(params, servers[v.index()].domain);
            update_deadline(&mut servers[v.index()], now, p);
            let s = &servers[v.index()];
            if s.cur_budget == 0 && !p.extratime {
                depleted.push(v.0);
            }
            run_key(0, s.cur_deadline, s.seq)
        });
        for i in 0..self.depleted.len() {
            // Its debt took the whole budget: depleted.
            let v = VcpuId(self.depleted[i]);
            let p = params_of(params, self.servers[v.index()].domain);
            self.dequeue(v);
            self.runq_insert(v, p);
        }
        raised
    }

    /// rt.c's `runq_tickle`: the CPU to kick for `new`, just queued: an idle CPU not yet
    /// tickled (`new`'s own first), else the CPU running the lowest-priority vCPU, if `new`
    /// beats it. Marks it tickled.
    fn tickle(&mut self, new: VcpuId) -> Option<usize> {
        let n = self.cpus.len();
        let home = self.servers[new.index()].cpu.min(n - 1);
        // (CPU, (its vCPU's priority, how long it has run)) of the lowest so far.
        type Lowest = (usize, ((u32, u64), Reverse<u64>));
        let mut lowest: Option<Lowest> = None;
        for c in (0..n).map(|i| (home + i) % n) {
            let cpu = self.cpus[c];
            if cpu.tickled {
                continue;
            }
            let Some(curr) = cpu.curr else {
                return Some(self.tickled(c));
            };
            // The lowest priority; among equals the one that has run longest (rt.c takes the
            // first it meets, which may be a vCPU dispatched this instant).
            let prio = (self.servers[curr.index()].prio(), Reverse(cpu.since));
            if lowest.is_none_or(|(_, low)| prio > low) {
                lowest = Some((c, prio));
            }
        }
        let (c, (low, _)) = lowest?;
        (self.servers[new.index()].prio() < low).then(|| self.tickled(c))
    }

    fn tickled(&mut self, cpu: usize) -> usize {
        self.cpus[cpu].tickled = true;
        self.stats.kicks += 1;
        cpu
    }

    /// rt.c's `rt_context_saved`: `v` has left `cpu`; queue it if it still wants to run,
    /// and tickle for it. Returns the CPU to kick.
    fn saved(&mut self, cpu: usize, v: VcpuId, params: &DomainParams) -> Option<usize> {
        self.cpus[cpu].leaving = None;
        let s = &mut self.servers[v.index()];
        if s.place != Place::Scheduled {
            return None;
        }
        s.place = Place::Off;
        let unrun = core::mem::take(&mut s.unrun);
        if core::mem::take(&mut s.delayed_add) && s.runnable {
            let p = params_of(params, s.domain);
            if unrun {
                // Preempted the instant it was dispatched (a tickle and a replenishment at
                // once): it keeps its place, or the same vCPU could lose its turn at every
                // such instant for good (3 of 63 hogs beside a 1 ms latency domain never ran
                // in schedsim, whose events fall on the same instants period after period).
                self.runq_insert(v, p);
                return (self.servers[v.index()].place == Place::Queued)
                    .then(|| self.tickle(v))
                    .flatten();
            }
            return self.queue_and_tickle(v, p);
        }
        None
    }

    /// A tickle of `cpu` for `take_kicks` to hand over.
    fn kick_later(&mut self, cpu: usize) {
        self.late_tickles += 1;
        if !self.kicks.contains(&cpu) {
            self.kicks.push(cpu);
        }
    }

    /// `kick`, or else the kick of CPU 0 that an earlier replenishment asks for (taken).
    fn or_kick0(&mut self, kick: Option<usize>) -> Option<usize> {
        kick.or_else(|| core::mem::take(&mut self.kick0).then_some(0))
    }

    /// `runq_insert` and `runq_tickle`, as rt.c's wake and context_saved do them; a vCPU
    /// that goes to the depleted queue tickles nobody (rt.c tickles for it anyway, and the
    /// CPU it kicks finds nothing to run).
    fn queue_and_tickle(&mut self, v: VcpuId, p: Params) -> Option<usize> {
        self.arrive(v);
        self.runq_insert(v, p);
        if self.servers[v.index()].place == Place::Queued { self.tickle(v) } else { None }
    }
}

/// rt.c's `rt_update_deadline` for one server (see [`State::update_deadline`]).
fn update_deadline(s: &mut Server, now: u64, p: Params) {
    let period = p.period.max(1);
    if s.cur_deadline.saturating_add(period << UPDATE_LIMIT_SHIFT) > now {
        while s.cur_deadline <= now {
            s.cur_deadline += period;
        }
    } else {
        let count = (now - s.cur_deadline) / period + 1;
        s.cur_deadline += count * period;
    }
    s.last_start = now;
    s.cur_budget = p.budget;
    s.priority_level = 0;
    if !p.extratime {
        // Ours: an overrun of the last periods is paid from this one's budget.
        let paid = s.debt.min(p.budget);
        s.debt -= paid;
        s.cur_budget -= paid;
    }
}

fn params_of(params: &DomainParams, d: DomainId) -> Params {
    Params {
        period: params.value(d, PERIOD_US).saturating_mul(1000),
        budget: params.value(d, BUDGET_US).saturating_mul(1000),
        extratime: params.value(d, EXTRATIME) != 0,
    }
}

impl Policy for Rtds {
    fn info(&self) -> &'static PolicyInfo {
        &INFO
    }

    fn add_domain(&self, d: DomainId, params: &[(&str, u64)]) -> Result<(), Error> {
        // The pair is checked as given, the missing one at its default (rt_validate_params).
        let given = |i: usize| {
            let name = INFO.domain_params[i].name;
            params.iter().rev().find(|(n, _)| *n == name).map_or(INFO.domain_params[i].default, |p| p.1)
        };
        for (name, value) in params {
            crate::find_param(INFO.name, INFO.domain_params, name)?.check(*value)?;
        }
        Self::check_pair(given(PERIOD_US), given(BUDGET_US))?;
        self.params.add(d, params)
    }

    fn set_domain_param(&self, d: DomainId, name: &str, value: u64) -> Result<(), Error> {
        let spec = crate::find_param(INFO.name, INFO.domain_params, name)?;
        spec.check(value)?;
        // Under the lock: a budget and a period set at once cannot cross, and turning extra
        // time on reaches the domain's depleted vCPUs (rt_dom_cntl).
        let mut st = self.state.lock();
        match spec.name {
            "period_us" => Self::check_pair(value, self.params.get(d, "budget_us")?)?,
            "budget_us" => Self::check_pair(self.params.get(d, "period_us")?, value)?,
            _ => {}
        }
        let was_extra = self.params.get(d, "extratime")? != 0;
        self.params.set(d, name, value)?;
        if spec.name == "extratime" && value != 0 && !was_extra {
            // rt_dom_cntl: a depleted vCPU given extra time is demoted one level and
            // refilled at once, rather than waiting for its next period.
            let p = self.params_of(d);
            for i in 0..st.servers.len() {
                let s = st.servers[i];
                if s.present && s.domain == d && s.place == Place::Depleted {
                    let v = VcpuId(i as u32);
                    st.dequeue(v);
                    let s = &mut st.servers[i];
                    s.priority_level = s.priority_level.saturating_add(1);
                    s.cur_budget = p.budget;
                    st.runq_insert(v, p);
                }
            }
        }
        Ok(())
    }

    fn domain_param(&self, d: DomainId, name: &str) -> Result<u64, Error> {
        self.params.get(d, name)
    }

    fn insert_vcpu(&self, v: VcpuId, domain: DomainId, cpu: usize) -> Result<(), Error> {
        let mut st = self.state.lock();
        if v.index() >= st.servers.len() {
            return Err(Error::NoSuchVcpu(v));
        }
        if cpu >= st.cpus.len() {
            return Err(Error::NoSuchCpu(cpu));
        }
        if st.servers[v.index()].present {
            return Err(Error::AlreadyPresent);
        }
        // Deadline 0: its first wake-up starts its first period (rt_unit_insert's
        // `now >= cur_deadline` test, from rt_alloc_udata's zeroed unit).
        st.servers[v.index()] = Server { present: true, domain, cpu, ..Server::ABSENT };
        Ok(())
    }

    fn remove_vcpu(&self, v: VcpuId) -> Result<(), Error> {
        let mut st = self.state.lock();
        let s = st.servers.get_mut(v.index()).ok_or(Error::NoSuchVcpu(v))?;
        if !s.present {
            return Err(Error::NoSuchVcpu(v));
        }
        if s.runnable || s.place != Place::Off {
            return Err(Error::Busy);
        }
        *s = Server::ABSENT;
        Ok(())
    }

    fn wake(&self, v: VcpuId, now: u64) -> Wakeup {
        let mut st = self.state.lock();
        let Some(&s) = st.servers.get(v.index()) else {
            return Wakeup { cpu: 0, kick: None };
        };
        if !s.present || s.runnable {
            return Wakeup { cpu: s.cpu, kick: None };
        }
        st.servers[v.index()].runnable = true;
        st.stats.wakes += 1;
        st.replenish(now, &self.params);
        let p = self.params_of(s.domain);
        let w = match s.place {
            // rt_unit_wake: still current on its CPU (it slept and woke before that CPU
            // decided again), or queued: nothing to do.
            Place::Queued | Place::Depleted => Wakeup { cpu: s.cpu, kick: None },
            Place::Scheduled => {
                if st.cpus[s.cpu].curr != Some(v) {
                    // Still leaving its CPU: queue it once saved (RTDS_delayed_runq_add),
                    // in a new period if it missed its deadline.
                    if now >= s.cur_deadline {
                        st.update_deadline(v, now, p);
                    }
                    st.servers[v.index()].delayed_add = true;
                }
                Wakeup { cpu: s.cpu, kick: None }
            }
            Place::Off => {
                // A deadline that passed while it slept: a new period, a full budget.
                if now >= s.cur_deadline {
                    st.update_deadline(v, now, p);
                }
                let kick = st.queue_and_tickle(v, p);
                Wakeup { cpu: kick.unwrap_or(s.cpu), kick }
            }
        };
        // A depleted waker's replenishment, earlier than CPU 0's tick, kicks CPU 0 to ask
        // again (rt.c's `replq_insert` re-arming its timer), unless the wake kicks another.
        Wakeup { cpu: w.cpu, kick: st.or_kick0(w.kick) }
    }

    fn sleep(&self, v: VcpuId, _now: u64) -> Option<usize> {
        let mut st = self.state.lock();
        let s = *st.servers.get(v.index())?;
        if !s.present {
            return None;
        }
        st.servers[v.index()].runnable = false;
        match s.place {
            // rt_unit_sleep: the CPU running it must decide again.
            Place::Scheduled if st.cpus[s.cpu].curr == Some(v) => Some(s.cpu),
            Place::Scheduled => {
                st.servers[v.index()].delayed_add = false;
                None
            }
            Place::Queued | Place::Depleted => {
                st.dequeue(v);
                None
            }
            Place::Off => None,
        }
    }

    fn yield_now(&self, v: VcpuId, _now: u64) -> Option<usize> {
        // rt.c has no yield hook: the CPU decides again, by priority alone.
        let st = self.state.lock();
        let s = st.servers.get(v.index())?;
        (s.present && s.place == Place::Scheduled && st.cpus[s.cpu].curr == Some(v))
            .then_some(s.cpu)
    }

    fn schedule(&self, cpu: usize, now: u64) -> Decision {
        let idle = Decision { next: None, slice_ns: None, migrated: false };
        let mut st = self.state.lock();
        if cpu >= st.cpus.len() {
            return idle;
        }
        st.stats.schedules += 1;
        st.cpus[cpu].tickled = false;
        if let Some(l) = st.cpus[cpu].leaving {
            // The caller did not report it saved, but this CPU is done with it by now. A
            // tickle it wants is handed over by `take_kicks`.
            if let Some(c) = st.saved(cpu, l, &self.params) {
                st.kick_later(c);
            }
        }
        st.replenish(now, &self.params);
        // rt_schedule: charge the vCPU that ran (burn_budget). If its period ended meanwhile
        // (this call came late), first charge its run up to the deadline to that period, then
        // replenish as repl_timer_handler would have at the deadline (last_start moves there)
        // and charge the rest to the new one.
        let prev = st.cpus[cpu].curr.take();
        if let Some(p) = prev {
            let params = self.params_of(st.servers[p.index()].domain);
            loop {
                let deadline = st.servers[p.index()].cur_deadline;
                if now < deadline {
                    st.burn_budget(p, now, params);
                    break;
                }
                st.burn_budget(p, deadline, params);
                st.update_deadline(p, deadline, params);
            }
        }
        // The queue's best, unless the vCPU that ran has budget left and strictly higher
        // priority (rt_schedule keeps scurr only if compare_unit_priority(scurr, snext) > 0).
        // On a tie the one that waited runs: we also decide at deadlines and
        // replenishments, where rt.c's timer only tickles for strictly higher priority, and
        // there a tie is the fair point to rotate (8 equal vCPUs on 2 CPUs in overload: kept
        // on ties, the vCPUs running at each period's end got 6 ms a period for good, the
        // others 4).
        let head = st.runq.peek().map(|(k, v)| (key_prio(k), v));
        let keep = prev.filter(|p| {
            let s = st.servers[p.index()];
            s.runnable && s.cur_budget > 0 && head.is_none_or(|(h, _)| s.prio() < h)
        });
        let next = keep.or_else(|| {
            let (_, v) = head?;
            st.dequeue(v);
            Some(v)
        });
        let mut raise_at = st.raiseq.peek().map(|(key, _)| (key >> 64) as u64);
        if let Some(p) = prev
            && next != Some(p)
        {
            // Switched away from: it stays scheduled, on no queue, until context_saved.
            st.cpus[cpu].leaving = Some(p);
            let ran = now > st.cpus[cpu].since;
            let s = &mut st.servers[p.index()];
            s.delayed_add = s.runnable;
            s.unrun = !ran;
            // Queued at context_saved; if its replenishment will raise it (depleted, or on
            // extra time), this CPU comes back for it then.
            if s.runnable && (s.cur_budget == 0 || s.priority_level > 0) {
                raise_at = Some(raise_at.map_or(s.cur_deadline, |r| r.min(s.cur_deadline)));
            }
        }
        let Some(n) = next else {
            // Idle: back when a depleted vCPU is replenished.
            if cpu == 0 {
                // It asks for its tick next (the contract): no need to kick it.
                st.kick0 = false;
            }
            return Decision { next: None, slice_ns: raise_at.map(|t| t - now), migrated: false };
        };
        let s = &mut st.servers[n.index()];
        let migrated = s.cpu != cpu;
        s.place = Place::Scheduled;
        s.cpu = cpu;
        s.last_start = now;
        // Called back at the budget's end, the deadline, or the next replenishment that
        // raises a queued vCPU, whichever comes first.
        let end = now.saturating_add(s.cur_budget).min(s.cur_deadline);
        let end = raise_at.map_or(end, |r| end.min(r));
        if prev != next {
            st.cpus[cpu].since = now;
        }
        st.cpus[cpu].curr = Some(n);
        if cpu == 0 {
            st.kick0 = false;
        }
        Decision { next, slice_ns: Some(end.saturating_sub(now).max(1)), migrated }
    }

    fn context_saved(&self, cpu: usize, v: VcpuId, now: u64) -> Option<usize> {
        let mut st = self.state.lock();
        if st.cpus.get(cpu)?.leaving != Some(v) {
            return None;
        }
        st.replenish(now, &self.params);
        let kick = st.saved(cpu, v, &self.params);
        st.or_kick0(kick)
    }

    fn pick_cpu(&self, v: VcpuId, _now: u64) -> usize {
        // rt_res_pick: the CPU it is on, or else an idle one (any CPU may run it).
        let st = self.state.lock();
        let home = st.servers.get(v.index()).map_or(0, |s| s.cpu);
        let n = st.cpus.len();
        (0..n).map(|i| (home + i) % n).find(|&c| st.cpus[c].curr.is_none()).unwrap_or(home)
    }

    /// CPU 0's, when the first replenishment that raises a vCPU is due (rt.c's one
    /// replenishment timer; the others only lower priorities, and are done lazily).
    fn next_tick(&self, cpu: usize, _now: u64) -> Option<u64> {
        if cpu != 0 {
            return None;
        }
        let mut st = self.state.lock();
        // With the vCPUs leaving a CPU that their `context_saved` will queue there (as
        // `schedule`'s `raise_at` counts them): queued, they do not kick CPU 0 again.
        let leaving = st.cpus.iter().filter_map(|c| c.leaving).filter_map(|l| {
            let s = &st.servers[l.index()];
            (s.runnable && (s.cur_budget == 0 || s.priority_level > 0)).then_some(s.cur_deadline)
        });
        let at = st.raiseq.peek().map(|(key, _)| (key >> 64) as u64).into_iter().chain(leaving).min();
        st.tick0 = at.unwrap_or(u64::MAX);
        st.kick0 = false;
        at
    }

    fn take_kicks(&self, kick: &mut dyn FnMut(usize)) {
        let mut st = self.state.lock();
        if core::mem::take(&mut st.kick0) {
            kick(0);
        }
        while let Some(c) = st.kicks.pop() {
            kick(c);
        }
    }

    /// The part of rt.c's replenishment timer that a `schedule` cannot do: tickle another
    /// CPU. Replenishes what is due and, if the head of the queue beats what some CPU runs
    /// (or a CPU idles beside it), kicks that CPU.
    fn tick(&self, _cpu: usize, now: u64, kick: &mut dyn FnMut(usize)) {
        let mut st = self.state.lock();
        st.replenish(now, &self.params);
        if let Some((_, head)) = st.runq.peek()
            && let Some(c) = st.tickle(head)
        {
            st.late_tickles += 1;
            drop(st);
            kick(c);
        }
    }

    fn stats(&self) -> Stats {
        self.state.lock().stats
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let st = self.state.lock();
        writeln!(
            out,
            "rtds: global EDF, {} queued, {} depleted or on extra time, {} late tickles",
            st.runq.len(),
            st.raiseq.len(),
            st.late_tickles
        )?;
        let show = |out: &mut dyn fmt::Write, v: VcpuId| {
            let s = &st.servers[v.index()];
            write!(
                out,
                " v{}(d{} dl={} b={} lvl={})",
                v.0, s.domain.0, s.cur_deadline, s.cur_budget, s.priority_level
            )
        };
        for (i, c) in st.cpus.iter().enumerate() {
            write!(out, "cpu{i}:")?;
            match c.curr {
                Some(v) => show(out, v)?,
                None => write!(out, " idle")?,
            }
            writeln!(out, "{}", if c.tickled { " (tickled)" } else { "" })?;
        }
        write!(out, "runq (heap order):")?;
        for v in st.runq.vcpus() {
            show(out, v)?;
        }
        writeln!(out)?;
        write!(out, "depleted:")?;
        for v in st.raiseq.vcpus() {
            if st.servers[v.index()].place == Place::Depleted {
                show(out, v)?;
            }
        }
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtds(cpus: usize, doms: &[&[(&str, u64)]]) -> Rtds {
        let topo = Topology::flat(cpus, doms.len(), doms.len());
        let p = Rtds::new(&topo).unwrap();
        for (i, params) in doms.iter().enumerate() {
            p.add_domain(DomainId(i as u32), params).unwrap();
            p.insert_vcpu(VcpuId(i as u32), DomainId(i as u32), 0).unwrap();
        }
        p
    }

    const MS: u64 = 1_000_000;

    /// The heap against a sorted reference: random pushes, removals and top re-keys (some
    /// due vCPUs, none, or all of them), then every pop in key order.
    #[test]
    fn the_heap_pops_in_key_order_after_removals_and_top_rekeys() {
        let mut x = 0x2545_f491_u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..200 {
            let n = 1 + rnd(300) as usize;
            let mut h: Heap<u64> = Heap::new(n);
            let mut reference: Vec<(u64, u32)> = Vec::new();
            for v in 0..n as u32 {
                // Unique keys, as the runqueue's are (the arrival breaks ties).
                let k = rnd(1000) * 1024 + u64::from(v);
                h.push(k, VcpuId(v));
                reference.push((k, v));
            }
            for _ in 0..rnd(n as u64 / 2 + 1) {
                let v = rnd(n as u64) as u32;
                let was = reference.iter().position(|e| e.1 == v);
                assert_eq!(h.remove(VcpuId(v)), was.is_some());
                if let Some(i) = was {
                    reference.remove(i);
                }
            }
            // Due: keys below a bound (none, some, or all of them, by round).
            let bound = match round % 3 {
                0 => 0,
                1 => rnd(1000) * 1024,
                _ => u64::MAX,
            };
            let due = reference.iter().filter(|e| e.0 < bound).count();
            let mut scratch = Vec::with_capacity(n);
            let mut moved = 0;
            h.rekey_top(&mut scratch, |k| k < bound, |v| {
                moved += 1;
                let e = reference.iter_mut().find(|e| e.1 == v.0).unwrap();
                e.0 += (1 + rnd(500)) * 1024;
                e.0
            });
            assert_eq!(moved, due, "round {round}: every due key re-keyed, once");
            reference.sort();
            for &(k, v) in &reference {
                assert_eq!(h.peek(), Some((k, VcpuId(v))), "round {round}");
                assert!(h.remove(VcpuId(v)));
            }
            assert_eq!(h.len(), 0);
        }
    }

    #[test]
    fn budget_above_period_is_refused_naming_both() {
        let p = rtds(1, &[&[]]);
        let e = p.add_domain(DomainId(0), &[("period_us", 1000), ("budget_us", 2000)]);
        let msg = e.unwrap_err().to_string();
        assert!(msg.contains("budget_us = 2000") && msg.contains("period_us = 1000"), "{msg}");
        // One at a time, against the value in force (defaults 10000 / 4000).
        assert!(p.set_domain_param(DomainId(0), "budget_us", 20_000).is_err());
        assert!(p.set_domain_param(DomainId(0), "period_us", 3_000).is_err());
        p.set_domain_param(DomainId(0), "period_us", 50_000).unwrap();
        p.set_domain_param(DomainId(0), "budget_us", 20_000).unwrap();
        assert_eq!(p.domain_param(DomainId(0), "budget_us"), Ok(20_000));
        // RTDS_MIN: 10 µs.
        assert!(p.add_domain(DomainId(0), &[("budget_us", 9)]).is_err());
        assert!(p.add_domain(DomainId(0), &[("period_us", 10), ("budget_us", 10)]).is_ok());
    }

    #[test]
    fn a_vcpu_without_extratime_runs_its_budget_then_waits_for_its_period() {
        let p = rtds(1, &[&[("period_us", 10_000), ("budget_us", 3_000), ("extratime", 0)]]);
        p.wake(VcpuId(0), 1);
        let d = p.schedule(0, 1);
        assert_eq!(d.next, Some(VcpuId(0)));
        // Its first period ends at 10 ms (deadlines are multiples of the period, as rt.c's
        // rt_update_deadline makes them from 0): 3 ms of budget.
        assert_eq!(d.slice_ns, Some(3 * MS));
        let d = p.schedule(0, 1 + 3 * MS);
        assert_eq!(d.next, None, "depleted");
        p.context_saved(0, VcpuId(0), 1 + 3 * MS);
        // The idle CPU comes back at the replenishment, 10 ms.
        assert_eq!(d.slice_ns, Some(10 * MS - 1 - 3 * MS));
        let d = p.schedule(0, 10 * MS);
        assert_eq!((d.next, d.slice_ns), (Some(VcpuId(0)), Some(3 * MS)));
    }

    #[test]
    fn an_overrun_without_extratime_is_paid_from_the_next_periods() {
        let p = rtds(1, &[&[("period_us", 10_000), ("budget_us", 3_000), ("extratime", 0)]]);
        p.wake(VcpuId(0), 0);
        assert_eq!(p.schedule(0, 0).slice_ns, Some(3 * MS));
        // The CPU comes back 5 ms late (a late timer): 5 ms of debt.
        assert_eq!(p.schedule(0, 8 * MS).next, None);
        p.context_saved(0, VcpuId(0), 8 * MS);
        // The next period's 3 ms pay 3 of it: nothing to run until 20 ms.
        assert_eq!(p.schedule(0, 10 * MS).next, None);
        // Then 1 ms (3 − the 2 ms left), and the full 3 ms the period after.
        assert_eq!(p.schedule(0, 20 * MS).slice_ns, Some(MS));
        assert_eq!(p.schedule(0, 21 * MS).next, None);
        p.context_saved(0, VcpuId(0), 21 * MS);
        assert_eq!(p.schedule(0, 30 * MS).slice_ns, Some(3 * MS));
    }

    #[test]
    fn cpu_0_ticks_for_the_first_replenishment_that_raises_and_is_kicked_for_an_earlier_one() {
        // rt.c's one replenishment timer: CPU 0's tick, due when the first depleted (or
        // extra-time) vCPU is replenished, and none while no vCPU waits for one.
        let params: &[(&str, u64)] = &[("budget_us", 1_000), ("extratime", 0)];
        let p = rtds(2, &[params, params]);
        p.wake(VcpuId(0), 0);
        p.wake(VcpuId(1), 0);
        let on0 = p.schedule(0, 0).next;
        let on1 = p.schedule(1, 0).next;
        assert!(on0.is_some() && on1.is_some() && on0 != on1);
        assert_eq!(p.next_tick(0, 0), None, "a tick with nothing to replenish");
        assert_eq!(p.next_tick(1, 0), None, "CPU 1 ticks");
        // CPU 1's vCPU spends its budget and leaves: queued depleted at its context_saved,
        // replenished at 10 ms, earlier than CPU 0's tick (none): CPU 0 is kicked to ask.
        assert_eq!(p.schedule(1, MS).next, None);
        assert_eq!(p.next_tick(1, MS), None);
        assert_eq!(p.context_saved(1, on1.unwrap(), MS), Some(0));
        assert_eq!(p.next_tick(0, MS), Some(10 * MS));
        // CPU 0's own vCPU leaves the same way: its tick already counts it, no kick.
        assert_eq!(p.schedule(0, MS).next, None);
        assert_eq!(p.next_tick(0, MS), Some(10 * MS));
        assert_eq!(p.context_saved(0, on0.unwrap(), MS), None);
        let mut kicks = Vec::new();
        p.take_kicks(&mut |c| kicks.push(c));
        assert_eq!(kicks, Vec::<usize>::new());
    }

    #[test]
    fn extratime_runs_below_every_vcpu_with_budget() {
        // v0: extra time; v1: 1 ms every 10 ms, asleep at first.
        let p = rtds(1, &[&[("budget_us", 1_000)], &[("budget_us", 1_000)]]);
        p.wake(VcpuId(0), 0);
        assert_eq!(p.schedule(0, 0).next, Some(VcpuId(0)));
        // Budget spent at 1 ms: level 1, refilled; it runs on, alone.
        assert_eq!(p.schedule(0, MS).next, Some(VcpuId(0)));
        // v1 wakes with its budget and the same deadline (10 ms), at level 0: it preempts
        // the CPU running v0 on extra time.
        let w = p.wake(VcpuId(1), MS + 5);
        assert_eq!(w.kick, Some(0));
        assert_eq!(p.schedule(0, MS + 5).next, Some(VcpuId(1)));
        // Its tick: v0's replenishment (10 ms), which its context_saved queues.
        assert_eq!(p.next_tick(0, MS + 5), Some(10 * MS));
        assert_eq!(p.context_saved(0, VcpuId(0), MS + 5), None);
        // v0, saved, is queued at level 1 and beats nobody. v1 spends its budget and goes
        // to level 1 too: a tie, and the one that waited runs.
        assert_eq!(p.schedule(0, 2 * MS + 5).next, Some(VcpuId(0)));
    }

    #[test]
    fn the_earliest_deadline_preempts_the_latest_and_an_idle_cpu_is_preferred() {
        // Three vCPUs of periods 5, 10 and 20 ms on 2 CPUs.
        let p = rtds(
            2,
            &[
                &[("period_us", 20_000), ("budget_us", 10_000)],
                &[("period_us", 10_000), ("budget_us", 5_000)],
                &[("period_us", 5_000), ("budget_us", 1_000)],
            ],
        );
        assert_eq!(p.wake(VcpuId(0), 0).kick, Some(0));
        assert_eq!(p.wake(VcpuId(1), 0).kick, Some(1), "the idle CPU, not the tickled one");
        // Earliest deadline first: CPU 0, deciding first, takes v1 (10 ms).
        assert_eq!(p.schedule(0, 0).next, Some(VcpuId(1)));
        assert_eq!(p.schedule(1, 0).next, Some(VcpuId(0)));
        // v2 (deadline 5 ms) beats both; CPU 1 runs the latest deadline (20 ms).
        assert_eq!(p.wake(VcpuId(2), 10).kick, Some(1));
        assert_eq!(p.schedule(1, 10).next, Some(VcpuId(2)));
        // v0 is not handed to CPU 0 before it is saved; then it is queued and tickles
        // nobody (it beats no running vCPU).
        assert_eq!(p.schedule(0, 20).next, Some(VcpuId(1)));
        assert_eq!(p.context_saved(1, VcpuId(0), 30), None);
        assert_eq!(p.stats().kicks, 3);
    }
}
