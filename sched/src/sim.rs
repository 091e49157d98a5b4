//! `schedsim`: a deterministic discrete-event simulator that drives a policy through the
//! [`Policy`] trait on a modelled machine and writes docs/DESIGN.md's results records.
//!
//! The model, and why it is enough to compare policies:
//! - N CPUs; switching, IPIs and scheduling decisions cost no simulated time, so what the
//!   results show is the policy's decisions alone. A kick (IPI) is delivered at the instant
//!   it is sent, after the event that sent it.
//! - The simulator plays the kernel's part exactly as the trait's contract says: it calls
//!   `schedule` when a slice expires, when the running vCPU blocks or yields, and on kicks;
//!   `tick` on a CPU when `next_tick` says, asked after every `schedule` and `tick` there;
//!   the kicks `take_kicks` hands over after every `schedule` and parameter change.
//! - Workloads (see [`crate::spec::WORKLOADS`]) consume CPU time: a vCPU's next action
//!   (block, yield) happens after it has *run* long enough, however it is preempted.
//!   `cpu` never blocks; `latency` is released every `period_us` (phase-shifted per
//!   domain), runs `run_us` and sleeps; `yield` runs until `before_us` before each
//!   `tick_us` boundary, then yields (or sleeps `sleep_us`); `io` runs `burst_us` and
//!   blocks for an exponentially distributed time of mean `block_us` (seeded RNG).
//! - `hostile-*` workloads (and `fuzz` in mode 2, which ends by raising an exception) attack
//!   memory protection, which a scheduling simulator does not model: schedsim treats them
//!   as killed at start (`exit = "killed: ..."`), which is what a correct hypervisor does
//!   within microseconds. Other `fuzz` domains run as `cpu`.
//! - Invariants checked at every instant: no vCPU is current on two CPUs; a policy never
//!   picks a vCPU that is not runnable; and (work conservation, the "wasted cores" check)
//!   no CPU idles while a runnable vCPU waits. The last is skipped for specs with caps,
//!   since parking a capped vCPU is deliberate idling, and for rtds domains without
//!   `extratime` (a vCPU that spent its budget waits for its next period).
//!
//! Same spec and seed, same output, byte for byte: there is no other input (no clock, no
//! hash-map order, no threads).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;

use abi::tool::results::{self, Domain, Engine, Outcome, Record, Run, Summary, Window};

use crate::cost::Profile;
use crate::replay::{Arrivals, HostStalls, Replay};
use crate::spec::{DomainPlan, Expect, Progress, Spec, starved};
use crate::summary::{self, DomainFigures, Fairness};
use crate::timeline::{Op, Step, Targets, knobs_for, merge_param, params_for};
use crate::{DomainId, Policy, Stats, Topology, VcpuId, registry};

/// Options beyond the spec.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Seed for the workloads' randomness (`io`).
    pub seed: u64,
    /// Collect a Chrome/Perfetto trace.
    pub trace: bool,
    /// Windows of this length (for fairness over time), whatever the spec's `window_ms`
    /// says; `None`: the spec's `window_ms`, if any.
    pub window_ns: Option<u64>,
    /// The machine's costs ([`crate::cost`]); the default is the ideal machine.
    pub costs: Profile,
    /// Replay a hypervisor trace's arrivals ([`crate::replay`]) instead of the workloads
    /// of the domains that woke up in it (all but `cpu` domains).
    pub replay: Option<Replay>,
    /// Play out what the host did to a run's CPUs at its moments
    /// ([`crate::replay::HostStalls`]) in place of the profile's stalls drawn at random:
    /// each CPU's timer is held where the run's was (a slice end, tick or sleeper's timer
    /// due then fires when it is let go), and each CPU stands still for each of its stalls
    /// (its slice ends, kicks, ticks and sleepers' timers wait for the stall's end). The
    /// profile's measured delays should then hold only what is shorter than a stall
    /// ([`crate::cost::Measured::below`]), or the host counts twice.
    pub host_stalls: Option<HostStalls>,
    /// A run's domains' last timer deadlines (their `domain` records' `timer_deadline_ns`,
    /// system time), by domain name: a `latency` domain named here wakes at that deadline's
    /// phase, as it did on the hypervisor ([`Kind::Latency`]'s `phase`), and schedsim's
    /// clock stands for system time (rtds's periods end at multiples of the period since
    /// 0; which wake-ups tie a hog's deadline follows from the phase).
    pub timer_deadlines: BTreeMap<String, u64>,
    /// When the run being compared began measuring (its `run` record's `start_ns`, system
    /// time): schedsim's measured interval starts there too, so that its clock reads the
    /// run's ([`crate::replay::clock_start`]; a replay's trace gives its own).
    pub run_measured_at: Option<u64>,
}

/// Invariant violations, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Violations {
    /// A vCPU picked while current on another CPU.
    pub double_run: u64,
    /// A vCPU picked that was not runnable.
    pub bad_pick: u64,
    /// Instants where a CPU idled while a runnable vCPU waited.
    pub wasted_core: u64,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct Output {
    /// The `run` record.
    pub run: Run,
    /// The `domain` records.
    pub domains: Vec<Domain>,
    /// The `summary` record.
    pub summary: Summary,
    /// Invariant violations.
    pub violations: Violations,
    /// Policy counters.
    pub stats: Stats,
    /// Per window (if asked), per domain: CPU time in that window.
    pub windows: Vec<Vec<u64>>,
    /// The `window` records (if asked), window by window, each in domain order.
    pub window_records: Vec<Window>,
    /// Chrome trace JSON, if asked.
    pub trace: Option<String>,
    /// Domains the spec expects to make progress that made none ([`crate::spec::starved`]):
    /// one message each, naming the domain. Any makes the run a failure.
    pub starved: Vec<String>,
    /// The `event` records of the spec's timeline, in the order they were applied.
    pub events: Vec<results::Event>,
    /// Per domain: the machine CPUs it ran on in the measured interval (bit `c` for CPU `c`
    /// below 128), for checks of where a domain ran.
    pub ran_on: Vec<u128>,
}

impl Output {
    /// The results as JSON lines (run, domains, windows, summary), records of `abi::tool::results`.
    pub fn jsonl(&self) -> String {
        let records = std::iter::once(Record::Run(self.run.clone()))
            .chain(self.events.iter().cloned().map(Record::Event))
            .chain(self.domains.iter().cloned().map(Record::Domain))
            .chain(self.window_records.iter().cloned().map(Record::Window))
            .chain([Record::Summary(self.summary.clone())]);
        let mut s = String::new();
        for r in records {
            // These types always encode (no maps, no non-string keys).
            s += &serde_json::to_string(&r).expect("a results record encodes");
            s.push('\n');
        }
        s
    }

    /// Exit status for the runner: 0 if every domain ended as expected, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.summary.expected { 0 } else { 1 }
    }
}

/// A simulation that could not start (the spec's parameters were refused by the policy).
#[derive(Clone, Debug)]
pub struct SimError(pub String);

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// Slice expiry on a CPU, valid if the generation matches.
    Timer(usize, u64),
    /// Policy tick on a CPU, valid if its pool's tick generation matches.
    Tick(usize, u64),
    /// A kick (IPI): reschedule.
    Kick(usize),
    /// A running vCPU reached its workload's next action, valid if the generation matches.
    Action(usize, u64),
    /// A sleeping vCPU wakes.
    Wake(usize),
    /// Cost model: the host stalls this CPU ([`crate::cost::Stalls`]).
    Stall(usize),
    /// A run's host stall of this CPU, this long ([`Options::host_stalls`]).
    HostStall(usize, u64),
    /// The timeline's step of this index is due.
    Step(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cpu,
    Latency {
        period: u64,
        run: u64,
        phase: u64,
    },
    Yield {
        tick: u64,
        before: u64,
        sleep: u64,
    },
    Io {
        burst: u64,
        block_mean: u64,
    },
    /// Replayed arrivals ([`crate::replay`]): index into `Sim::replayed`.
    Replay(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Asleep,
    Waiting,
    Running(usize),
}

struct Vcpu {
    dom: usize,
    idx: u32,
    kind: Kind,
    st: St,
    since: u64,
    /// CPU time still needed before the next action.
    need: u64,
    epoch: u64,
    last_cpu: Option<usize>,
    woke_at: Option<u64>,
    /// Paused (an event, a move, a policy swap, or `start = "event"` not yet started):
    /// off the policy's runqueues until unpaused.
    paused: bool,
    /// While paused: whether its workload wants to run (it was runnable, or its wake-up
    /// came), so unpausing wakes it.
    want_run: bool,
    /// Cost model: the vCPU is on its CPU but does no work before this (a switch, a stall).
    ready_at: u64,
    /// Cost model: its `set_timer` hypercall is under way (a run's measured one): once its
    /// time is paid, on the CPU, it blocks until the first value, with the second as the
    /// work its next action needs.
    setting_timer: Option<(u64, u64)>,
    /// Cost model, following timer writes ([`Sim::arm_timer`]): the CPU and deadline of the
    /// timer it set before it blocked, until it wakes.
    timer_on: Option<(usize, u64)>,
}

impl Vcpu {
    /// Whether its wake-ups and bursts are a run's own (`Kind::Replay`): they hold what the
    /// run spent around them already (switches, block and `set_timer` hypercalls, timer
    /// lateness, the host's stalls), which the cost model then neither charges nor draws
    /// on top (`crate::replay`).
    fn recorded(&self) -> bool {
        matches!(self.kind, Kind::Replay(_))
    }
}

#[derive(Default)]
struct Acc {
    cpu_ns: u64,
    wait_ns: u64,
    work: u64,
    wakeups: u64,
    lat: Vec<u64>,
    switches: u64,
    migrations: u64,
    /// Machine CPUs it ran on in the interval (bit per CPU below 128).
    ran_on: u128,
}

/// One domain's figures in one window (`work` of cpu-bound workloads in ns, as in [`Acc`]).
#[derive(Clone, Copy, Default)]
struct WindowAcc {
    cpu_ns: u64,
    wait_ns: u64,
    work: u64,
}

struct Cpu {
    curr: Option<usize>,
    since: u64,
    timer_gen: u64,
    kick_pending: bool,
    /// Cost model: when the pending kick arrives.
    kick_at: u64,
    /// Cost model: paid before this CPU's next decision takes effect (a block hypercall).
    extra_pre: u64,
    /// Cost model: the host stalls this CPU until then ([`crate::cost::Stalls`]).
    stalled_until: u64,
    /// A run's spans in which this CPU's timer was held ([`HostStalls::timers`]), as
    /// `(start, end)` in time order: a timer due inside one fires at its end.
    timer_held: Vec<(u64, u64)>,
    /// Cost model, with a run's measured switches and `set_timer`s
    /// ([`Profile::paths_measured`]): the CPU is in the hypervisor, switching or in a
    /// `set_timer`, until then, and takes no interrupt before (no slice end, kick, tick or
    /// timer): a switch or a hypercall is not preempted, however long the host stalls it.
    in_hypervisor_until: u64,
    /// Cost model: this CPU is on its way from an event it handled itself (a wake-up, a
    /// tick) to the decision the event's kick asks for, a measured kick's delay
    /// ([`Profile::kick_is_measured`]): no decision is taken before then, for the slice end
    /// due meanwhile either (the hypervisor's one reschedule on the way out serves both).
    deciding_at: u64,
    /// Cost model, following timer writes ([`Profile::follows_timer_writes`]): the deadline
    /// the CPU's timer is armed for, as the hypervisor's `CpuSched::armed_at` ...
    armed_at: Option<u64>,
    /// ... and what it is armed from: the slice the last decision gave (from the decision's
    /// time, without its lateness), the policy's next tick, and the timers its sleepers set
    /// on it (deadline, vCPU).
    slice_end: Option<u64>,
    next_tick: Option<u64>,
    /// Bumped when `next_tick` changes, so a tick event for an earlier answer is dropped.
    tick_gen: u64,
    timers: BTreeSet<(u64, usize)>,
    /// Cost model: when the slice end armed last is due ([`Sim::slice_held`]).
    slice_due: u64,
}

impl Cpu {
    /// When the span of a run in which this CPU's timer was held ([`Cpu::timer_held`]) that
    /// holds `t` ends (0 if none does).
    fn timer_held_until(&self, t: u64) -> u64 {
        let k = self.timer_held.partition_point(|&(start, _)| start <= t);
        match k.checked_sub(1).map(|k| self.timer_held[k]) {
            Some((_, end)) if end > t => end,
            _ => 0,
        }
    }
}

/// Cost model: a hold of timers drawn from a run ([`Sim::hold_timer`]): the timer of `cpu`
/// due at `due` (a slice end of timer generation `generation`, or a sleeper's timer,
/// `u64::MAX`) fires at `fires`, and so does every timer of that CPU due meanwhile, or of
/// every CPU if `machine`.
#[derive(Clone, Debug)]
struct Hold {
    cpu: usize,
    due: u64,
    fires: u64,
    generation: u64,
    machine: bool,
    /// The CPUs whose timers it held (`cpu` first): in a run's measurements each of them
    /// counts it once, as a late timer of its own.
    held: Vec<usize>,
}

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Exponential with the given mean (at least 1 ns).
    fn exp(&mut self, mean: u64) -> u64 {
        let u = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-(u.ln()) * mean as f64) as u64).max(1)
    }
}

/// A CPU pool: its own policy instance over its CPUs, which it numbers `0..cpus.len()`.
struct SimPool {
    policy: Box<dyn Policy>,
    /// Machine numbers of its CPUs (local CPU `i` is `cpus[i]`).
    cpus: Vec<usize>,
    /// Its global knobs as last set (carried to a new policy by name).
    knobs: Vec<(String, u64)>,
    /// Its policy's counters when the measured interval began (or when it was installed).
    counters_t0: Option<BTreeMap<String, u64>>,
}

struct Sim<'a> {
    pools: Vec<SimPool>,
    /// Each machine CPU's pool, if any (a CPU in no pool idles).
    cpu_pool: Vec<Option<usize>>,
    /// Each machine CPU's number in its pool.
    cpu_local: Vec<usize>,
    /// Each domain's pool.
    dom_pool: Vec<usize>,
    /// Each domain's parameters by name (carried across pools and policies).
    dom_params: Vec<Vec<(String, u64)>>,
    /// Each domain's vCPUs (indices into `vcpus`); emptied when it is destroyed.
    dom_vcpus: Vec<Vec<usize>>,
    /// The machine's topology (pools take subsets of it).
    topo: Topology,
    steps: Vec<Step>,
    events_out: Vec<results::Event>,
    /// Counters of policies replaced during the interval, over their time in it.
    retired_counters: BTreeMap<String, u64>,
    retired_stats: Stats,
    plan: &'a [DomainPlan],
    vcpus: Vec<Vcpu>,
    cpus: Vec<Cpu>,
    acc: Vec<Acc>,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    now: u64,
    t0: u64,
    t1: u64,
    window_ns: Option<u64>,
    /// Per window, per domain: what it got in that window.
    windows: Vec<Vec<WindowAcc>>,
    idle_ns: u64,
    rng: Rng,
    viol: Violations,
    check_conservation: bool,
    trace: Option<String>,
    /// Whether the measured interval's counters were taken.
    counters_taken: bool,
    /// Cost model ([`crate::cost`]): the profile, and what the decision being carried out
    /// costs before the picked vCPU is installed (the pool's policy's decision cost, and a
    /// block's hypercall).
    costs: Profile,
    pre: u64,
    /// Draws for kick delays that vary (a stream of its own: the workloads' draws stay put).
    kick_rng: Rng,
    /// Draws for the host's stalls of CPUs.
    stall_rng: Rng,
    /// Draws for the holds of the machine's timers ([`Sim::hold_timer`]).
    hold_rng: Rng,
    /// Replayed vCPUs.
    replayed: Vec<Replayed>,
    /// Cost model: the holds of the machine's timers drawn so far and not yet over ...
    holds: Vec<Hold>,
    /// ... and, over the whole run, how many were drawn and how many late timers they made
    /// (one per CPU each held: [`Hold::held`]).
    holds_drawn: u64,
    holds_seen: u64,
    /// Cost model: how many slice ends have fired, and how many of them
    /// [`crate::cost::STALL_FROM_NS`] or more late ([`Sim::slice_held`]) ...
    slice_fired: u64,
    slice_fired_late: u64,
    /// ... and when the machine's last timer fired (a slice end, a tick, a sleeper's
    /// timer).
    last_fire: u64,
}

/// A replayed vCPU ([`Kind::Replay`]): its recorded arrivals and where it is in them.
struct Replayed {
    arrivals: Arrivals,
    /// The index of the current arrival.
    next: usize,
    /// Whether its spec's workload is periodic (`latency`): a recorded wake-up that has
    /// passed when a burst ends is skipped, as `workloads/src/bin/latency.rs` skips the
    /// periods it overran, rather than run on at once.
    skips_overrun: bool,
}

/// The policy's own counters now, by name.
fn policy_counters(policy: &dyn Policy) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    policy.counters(&mut |name, value| {
        out.insert(String::from(name), value);
    });
    out
}

const US: u64 = 1000;

impl Sim<'_> {
    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq, ev)));
    }

    fn kick(&mut self, cpu: usize) {
        self.kick_from(cpu, None);
    }

    /// A kick sent from `from` (if known): it arrives `kick_ns` later unless local.
    fn kick_from(&mut self, cpu: usize, from: Option<usize>) {
        self.kick_after(cpu, from, 0, false);
    }

    /// A kick made `after` ns from now (the sender's work before it), for a wake-up if
    /// `wake` (drawn from the run's wake-ups' kicks, if it counted them:
    /// [`Profile::wake_kick_delay`]).
    fn kick_after(&mut self, cpu: usize, from: Option<usize>, after: u64, wake: bool) {
        // A kick measured on the hypervisor counts from the event, the sender's work with it.
        let measured = self.costs.kick_is_measured(from, cpu);
        let after = if measured { 0 } else { after };
        let rng = &mut self.kick_rng;
        let mut uniform = || rng.uniform();
        let delay = if wake {
            self.costs.wake_kick_delay(from, cpu, &mut uniform)
        } else {
            self.costs.kick_delay(from, cpu, &mut uniform)
        };
        let at = self.now + after + delay;
        if measured && from == Some(cpu) {
            self.cpus[cpu].deciding_at = self.cpus[cpu].deciding_at.max(at);
        }
        if !self.cpus[cpu].kick_pending || at < self.cpus[cpu].kick_at {
            self.cpus[cpu].kick_pending = true;
            self.cpus[cpu].kick_at = at;
            self.push(at, Ev::Kick(cpu));
        }
    }

    /// Delivers the kicks pool `p`'s policy could not return from its last call
    /// ([`Policy::take_kicks`]), sent from `from` (if known).
    fn take_kicks(&mut self, p: usize, from: Option<usize>) {
        let mut kicks = Vec::new();
        self.pools[p].policy.take_kicks(&mut |k| kicks.push(k));
        if !kicks.is_empty() {
            self.answered_untimed(p, &format!("`take_kicks` handed over kicks {kicks:?}"));
        }
        for k in kicks {
            let k = self.global(p, k);
            self.kick_from(k, from);
        }
    }

    /// Stops if pool `p`'s policy says `timed: false` yet answered (`what`): the hypervisor
    /// would never have asked it ([`crate::PolicyInfo::timed`]).
    fn answered_untimed(&self, p: usize, what: &str) {
        let info = self.pools[p].policy.info();
        assert!(
            info.timed,
            "policy `{}` says `timed: false` but {what}: the hypervisor never asks a policy \
             that says so (set `timed: true` in its PolicyInfo)",
            info.name
        );
    }

    /// Asks `cpu`'s policy when its tick is next due there ([`Policy::next_tick`]) and, if
    /// that changed, schedules it (an event for the old answer is dropped).
    fn ask_tick(&mut self, cpu: usize) {
        let Some(p) = self.cpu_pool[cpu] else { return };
        let at = self.pools[p].policy.next_tick(self.cpu_local[cpu], self.now);
        if let Some(at) = at {
            self.answered_untimed(p, &format!("`next_tick` asked for a tick at {at}"));
        }
        if at == self.cpus[cpu].next_tick {
            return;
        }
        self.cpus[cpu].next_tick = at;
        self.cpus[cpu].tick_gen += 1;
        if let Some(t) = at {
            let g = self.cpus[cpu].tick_gen;
            self.push(t.max(self.now), Ev::Tick(cpu, g));
        }
    }

    /// Cost model: where `v`'s work starts (or resumes) once on a CPU.
    fn work_from(&self, v: usize) -> u64 {
        self.vcpus[v].since.max(self.vcpus[v].ready_at)
    }

    /// Cost model: the vCPU `v`, running on `cpu`, does no work for the next `ns` (the
    /// hypervisor works on its CPU, or the host stalls it); its next action moves back by as
    /// much. A replayed burst holds such time already ([`Vcpu::recorded`]): the stall counts
    /// toward it, so its next action comes when it would have without the stall, or when the
    /// stall ends if that is later (a stalled CPU decides nothing: a burst that ended inside
    /// a stall and blocked there left its CPU idle beside a waiting vCPU, the invariant
    /// check's `wasted_core`).
    fn stall(&mut self, v: usize, cpu: usize, ns: u64) {
        if ns == 0 {
            return;
        }
        let now = self.now;
        let vc = self.settle(v, cpu);
        if vc.recorded() && vc.need != u64::MAX {
            vc.need = vc.need.saturating_sub(ns);
        }
        vc.ready_at = vc.ready_at.max(now) + ns;
        self.arm(v);
    }

    /// Accounts `v`'s run on `cpu` up to now and takes the work it did meanwhile from what
    /// it still needs; returns `v` for what changes next.
    fn settle(&mut self, v: usize, cpu: usize) -> &mut Vcpu {
        let now = self.now;
        let done = now.saturating_sub(self.work_from(v));
        self.account_run(v, cpu, now);
        let vc = &mut self.vcpus[v];
        if vc.need != u64::MAX {
            vc.need = vc.need.saturating_sub(done);
        }
        vc
    }

    /// The part of [a, b) inside the measured interval.
    fn clip(&self, a: u64, b: u64) -> u64 {
        b.min(self.t1).saturating_sub(a.max(self.t0))
    }

    /// Adds the part of [a, b) inside the measured interval to `dom`'s windows, split at
    /// their boundaries: `field` picks the figure.
    fn add_to_windows(
        &mut self,
        dom: usize,
        a: u64,
        b: u64,
        field: fn(&mut WindowAcc) -> &mut u64,
    ) {
        let Some(w) = self.window_ns else { return };
        let (a, b) = (a.max(self.t0), b.min(self.t1));
        let mut t = a;
        while t < b {
            let k = ((t - self.t0) / w) as usize;
            let end = (self.t0 + (k as u64 + 1) * w).min(b);
            if let Some(win) = self.windows.get_mut(k) {
                *field(&mut win[dom]) += end - t;
            }
            t = end;
        }
    }

    /// Adds `n` to `dom`'s figure in the window holding instant `t` (inside the interval).
    fn add_at(&mut self, dom: usize, t: u64, n: u64, field: fn(&mut WindowAcc) -> &mut u64) {
        if let Some(w) = self.window_ns
            && self.in_window(t)
            && let Some(win) = self.windows.get_mut(((t - self.t0) / w) as usize)
        {
            *field(&mut win[dom]) += n;
        }
    }

    fn add_cpu_time(&mut self, dom: usize, a: u64, b: u64) {
        self.acc[dom].cpu_ns += self.clip(a, b);
        self.add_to_windows(dom, a, b, |w| &mut w.cpu_ns);
    }

    fn add_wait_time(&mut self, dom: usize, a: u64, b: u64) {
        self.acc[dom].wait_ns += self.clip(a, b);
        self.add_to_windows(dom, a, b, |w| &mut w.wait_ns);
    }

    fn in_window(&self, t: u64) -> bool {
        t >= self.t0 && t < self.t1
    }

    fn tid(&self, v: usize) -> u64 {
        u64::from(self.plan[self.vcpus[v].dom].id) * 1000 + u64::from(self.vcpus[v].idx)
    }

    /// Takes `v` off `cpu` at `now`; `runnable` says whether it still wants to run.
    /// Accounts `v`'s run on `cpu` from its `since` up to `until` (CPU time, work, the trace
    /// interval) and restarts the count there. Every piece of running time passes through
    /// here exactly once, so the trace's intervals add up to `cpu_ns`.
    fn account_run(&mut self, v: usize, cpu: usize, until: u64) {
        let since = self.vcpus[v].since;
        let dom = self.vcpus[v].dom;
        self.add_cpu_time(dom, since, until);
        if matches!(self.vcpus[v].kind, Kind::Cpu | Kind::Yield { .. }) {
            // work = µs of CPU; counted in ns here and divided at the end.
            let from = self.work_from(v);
            self.acc[dom].work += self.clip(from, until);
            self.add_to_windows(dom, from, until, |w| &mut w.work);
        }
        let tid = self.tid(v);
        if let Some(tr) = &mut self.trace
            && until > since
        {
            let _ = writeln!(
                tr,
                "{{\"name\":\"{}.{}\",\"ph\":\"X\",\"pid\":{cpu},\"tid\":{tid},\"ts\":{}.{:03},\"dur\":{}.{:03}}},",
                self.plan[dom].name,
                self.vcpus[v].idx,
                since / US,
                since % US,
                (until - since) / US,
                (until - since) % US
            );
        }
        self.vcpus[v].since = until;
    }

    fn deschedule(&mut self, v: usize, cpu: usize) {
        let vc = self.settle(v, cpu);
        vc.epoch += 1;
        if vc.st == St::Running(cpu) {
            vc.st = St::Waiting;
        }
    }

    /// Installs `v` on `cpu`; `wrote`: the switch wrote the CPU's timer ([`Sim::arm_timer`]).
    fn dispatch(&mut self, v: usize, cpu: usize, wrote: bool) {
        let now = self.now;
        let dom = self.vcpus[v].dom;
        if let St::Running(other) = self.vcpus[v].st
            && other != cpu
        {
            self.viol.double_run += 1;
        }
        if self.vcpus[v].st == St::Asleep {
            self.viol.bad_pick += 1;
        }
        self.add_wait_time(dom, self.vcpus[v].since, now);
        if let Some(w) = self.vcpus[v].woke_at.take()
            && self.in_window(w)
        {
            // Installed once the decision's costs are paid (zero on the ideal machine).
            self.acc[dom].lat.push(now + self.pre - w);
        }
        let same_domain = self.cpus[cpu].curr.is_some_and(|p| self.vcpus[p].dom == dom);
        let migrated = self.vcpus[v].last_cpu.is_some_and(|c| c != cpu);
        // A replayed burst is the run the hypervisor traced, whose interval already holds
        // the switch into it: it pays no modelled switch on top (`crate::replay`).
        let recorded = self.vcpus[v].recorded();
        let switch = if recorded {
            0
        } else {
            let rng = &mut self.kick_rng;
            self.costs.switch_ns(same_domain, migrated, wrote, &mut || rng.uniform())
        };
        // The guest's own side of a switch that loads its address space, fitted to a run
        // (`cost::fit_guest_switch`): on the CPU, no work, outside the hypervisor.
        let guest = if same_domain || recorded { 0 } else { self.costs.guest_switch_ns() };
        self.vcpus[v].ready_at = now + self.pre + switch + guest;
        if self.costs.paths_measured() {
            self.cpus[cpu].in_hypervisor_until = now + self.pre + switch;
        }
        if self.in_window(now) {
            self.acc[dom].ran_on |= 1u128.checked_shl(cpu as u32).unwrap_or(0);
            self.acc[dom].switches += 1;
            if self.vcpus[v].last_cpu.is_some_and(|c| c != cpu) {
                self.acc[dom].migrations += 1;
            }
        }
        let kind = self.vcpus[v].kind;
        let vc = &mut self.vcpus[v];
        vc.last_cpu = Some(cpu);
        vc.st = St::Running(cpu);
        // On the CPU (its cpu_ns counting) once the decision's costs are paid.
        vc.since = now + self.pre;
        vc.epoch += 1;
        let _ = kind;
        self.arm(v);
    }

    /// Schedules the running vCPU `v`'s next workload action.
    fn arm(&mut self, v: usize) {
        // Work starts once the switch (or a stall) is paid: at `now` on the ideal machine.
        let now = self.now.max(self.vcpus[v].ready_at);
        let vc = &mut self.vcpus[v];
        vc.epoch += 1;
        if let Kind::Yield { tick, before, .. } = vc.kind {
            // The guest (workloads/src/bin/yield.rs) runs until `before` ahead of the next
            // tick boundary, then yields: switched in inside that window, it yields at once
            // (it spins until the later of the window's start and now), a `yield` hypercall
            // later. It reads the clock between units of work (`work_unit_ns`), so it
            // yields at the end of the first unit that ends in the window: under TCG 10-40
            // µs after the window's start, which decides whether the slice it yields to
            // ends before the next boundary or after it (docs/simvshyp.md, "Session 20").
            let window = (now / tick + 1) * tick - before.min(tick - 1);
            let unit = self.costs.work_unit_ns.max(1);
            let point = if now < window {
                now + (window - now).div_ceil(unit) * unit
            } else {
                now + YIELD_AGAIN_NS
            };
            vc.need = point - now;
        }
        if vc.need != u64::MAX {
            let (t, g) = (now.saturating_add(vc.need), vc.epoch);
            self.push(t, Ev::Action(v, g));
        }
    }

    /// The pool of vCPU `v` (its domain's).
    fn vpool(&self, v: usize) -> usize {
        self.dom_pool[self.vcpus[v].dom]
    }

    /// The machine number of CPU `local` of pool `p`.
    fn global(&self, p: usize, local: usize) -> usize {
        self.pools[p].cpus[local]
    }

    fn schedule(&mut self, cpu: usize) {
        self.cpus[cpu].kick_pending = false;
        let Some(pool) = self.cpu_pool[cpu] else { return };
        let local = self.cpu_local[cpu];
        let d = self.pools[pool].policy.schedule(local, self.now);
        let next = d.next.map(|v| v.index());
        let prev = self.cpus[cpu].curr;
        let decision_ns = self.costs.decision(self.pools[pool].policy.info().name);
        self.pre = decision_ns + std::mem::take(&mut self.cpus[cpu].extra_pre);
        if prev != next
            && let Some(p) = prev
            && let Some(c) =
                self.pools[pool].policy.context_saved(local, VcpuId(p as u32), self.now)
        {
            // Switches take no time here: the leaving vCPU is saved at once.
            let c = self.global(pool, c);
            self.kick_from(c, Some(cpu));
        }
        if prev == next
            && let Some(p) = prev
        {
            // The same vCPU goes on: the decision's cost is its stall.
            let pre = self.pre;
            self.stall(p, cpu, pre);
        }
        // What the decision arms: its slice, and whether that writes the timer.
        let wrote = self.costs.follows_timer_writes() && {
            self.cpus[cpu].slice_end = d.slice_ns.map(|s| self.now + s);
            self.arm_timer(cpu)
        };
        if prev != next {
            if let Some(p) = prev {
                self.deschedule(p, cpu);
            } else {
                self.idle_ns += self.clip(self.cpus[cpu].since, self.now);
            }
            if let Some(n) = next {
                // A vCPU stolen from a CPU that has not yet switched away from it would be
                // on two CPUs at once (dispatch counts it).
                self.dispatch(n, cpu, wrote);
            }
            self.cpus[cpu].curr = next;
            self.cpus[cpu].since = self.now;
        }
        // The slice end armed before, if not yet due, will not hold the timer now.
        let (now, old) = (self.now, self.cpus[cpu].timer_gen);
        self.holds.retain(|h| h.fires > now);
        let ahead = |h: &Hold| h.cpu == cpu && h.generation == old && h.due > now;
        // A machine's hold not begun has held no timer but its own, and never will: not
        // counted.
        let dropped = self.holds.iter().filter(|h| h.machine && ahead(h)).count() as u64;
        self.holds.retain(|h| !ahead(h));
        self.holds_drawn -= dropped;
        self.holds_seen -= dropped;
        self.cpus[cpu].timer_gen += 1;
        if let Some(s) = d.slice_ns {
            let rng = &mut self.kick_rng;
            let due = self.now + s.max(1);
            let g = self.cpus[cpu].timer_gen;
            self.cpus[cpu].slice_due = due;
            // Drawn from a run, its hold is decided as it falls due (`Sim::slice_held`).
            let end = if self.costs.holds_slices_when_due() {
                self.costs.slice_end_unheld(due, &mut || rng.uniform())
            } else {
                let end = self.costs.slice_end(due, &mut || rng.uniform());
                self.hold_timer(cpu, due, end, g);
                end
            };
            self.push(end, Ev::Timer(cpu, g));
        }
        self.take_kicks(pool, Some(cpu));
        self.ask_tick(cpu);
    }

    /// Cost model ([`Profile::follows_timer_writes`]): the earliest event `cpu`'s timer
    /// waits for after `after` (its slice's end, the policy's tick, a sleeper's timer), at
    /// least the hypervisor's `MIN_ARM_NS` (1 µs) ahead; its 20 ms watchdog is left out.
    fn earliest_after(&self, cpu: usize, after: u64) -> Option<u64> {
        let c = &self.cpus[cpu];
        let timer = c.timers.range((after + 1, 0)..).next().map(|t| t.0);
        [c.slice_end, c.next_tick, timer]
            .into_iter()
            .flatten()
            .filter(|&t| t > after)
            .min()
            .map(|t| t.max(after + 1000))
    }

    /// Cost model: a deadline armed on `cpu` that passed with no event due then fired early
    /// (the events moved later since it was armed): its interrupt found nothing due and
    /// re-armed the timer for the earliest event still ahead (a write of its own, not a
    /// switch's; kernel/src/schedule/mod.rs, `on_timer_interrupt`), up to `now`. A passed
    /// deadline with its event still to come (a slice end or a wake-up taken late) is left:
    /// that event's handler fires it ([`Sim::timer_fired`]).
    fn fire_early(&mut self, cpu: usize) {
        let now = self.now;
        while let Some(a) = self.cpus[cpu].armed_at.filter(|&a| a <= now) {
            let c = &self.cpus[cpu];
            let due = [c.slice_end, c.next_tick, c.timers.first().map(|t| t.0)]
                .into_iter()
                .flatten()
                .any(|t| t <= a);
            if due {
                return;
            }
            self.cpus[cpu].armed_at = self.earliest_after(cpu, a);
        }
    }

    /// Cost model: `cpu`'s timer fired for an event handled now (its slice's end, its tick,
    /// a sleeper's timer). If a reschedule of `cpu` follows (`resched`), the interrupt
    /// leaves the timer to it, which writes it; else it re-arms it itself.
    fn timer_fired(&mut self, cpu: usize, resched: bool) {
        if !self.costs.follows_timer_writes() {
            return;
        }
        self.fire_early(cpu);
        if self.cpus[cpu].armed_at.is_some_and(|a| a <= self.now) {
            self.cpus[cpu].armed_at =
                if resched { None } else { self.earliest_after(cpu, self.now) };
        }
    }

    /// Cost model ([`Profile::follows_timer_writes`]): arms `cpu`'s timer for its earliest
    /// event as the hypervisor does, and returns whether that wrote the timer. The
    /// hypervisor writes it only when the earliest event is earlier than the deadline
    /// armed, or that deadline has passed or none is armed (kernel/src/schedule/mod.rs,
    /// `arm_timer`).
    fn arm_timer(&mut self, cpu: usize) -> bool {
        self.fire_early(cpu);
        let now = self.now;
        let at = self.earliest_after(cpu, now);
        let c = &mut self.cpus[cpu];
        if matches!((c.armed_at, at), (Some(armed), Some(at)) if armed > now && armed <= at) {
            return false;
        }
        c.armed_at = at;
        true
    }

    /// Wakes `v`; returns the CPU its policy kicked for it, if any.
    fn wake(&mut self, v: usize) -> Option<usize> {
        let now = self.now;
        let dom = self.vcpus[v].dom;
        let vc = &mut self.vcpus[v];
        if vc.st != St::Asleep {
            return None;
        }
        if vc.paused {
            vc.want_run = true;
            return None;
        }
        vc.st = St::Waiting;
        vc.since = now;
        vc.woke_at = Some(now);
        if self.in_window(now) {
            self.acc[dom].wakeups += 1;
        }
        if let Some(tr) = &mut self.trace {
            let tid = u64::from(self.plan[dom].id) * 1000 + u64::from(self.vcpus[v].idx);
            let _ = writeln!(
                tr,
                "{{\"name\":\"wake\",\"ph\":\"i\",\"s\":\"t\",\"pid\":{},\"tid\":{tid},\"ts\":{}.{:03}}},",
                self.vcpus[v].last_cpu.unwrap_or(0),
                now / US,
                now % US
            );
        }
        // Cost model: the wake is handled where the sleeper last ran (its timer's CPU),
        // which is busy with it for `wake_ns` before the kick goes out.
        let from = self.vcpus[v].last_cpu;
        let ns = self.costs.wake_ns;
        if let Some(c) = from
            && let Some(r) = self.cpus[c].curr
        {
            self.stall(r, c, ns);
        }
        let p = self.vpool(v);
        let w = self.pools[p].policy.wake(VcpuId(v as u32), now);
        let kicked = w.kick.map(|c| self.global(p, c));
        if let Some(c) = kicked {
            self.kick_after(c, from, ns, true);
        }
        kicked
    }

    /// The running vCPU `v` blocks until `until`: with a run's measured `set_timer`
    /// hypercalls (`Profile::with_paths`), it first sets its timer, one drawn, on its CPU
    /// (its policy charges it the time, as the hypervisor's does: the hypercall is part of
    /// its run; charged as part of the block instead, a stall of milliseconds there moved
    /// none of bvt's virtual time, and bvt's latency domain came out with 1.5-2 times its
    /// share on the hypervisor at host loads 7-9).
    fn block(&mut self, v: usize, until: u64) {
        if let (false, St::Running(cpu)) = (self.vcpus[v].recorded(), self.vcpus[v].st) {
            let wrote = self.costs.follows_timer_writes() && {
                self.cpus[cpu].timers.insert((until, v));
                self.vcpus[v].timer_on = Some((cpu, until));
                self.arm_timer(cpu)
            };
            let rng = &mut self.kick_rng;
            let ns = self.costs.set_timer_ns(wrote, &mut || rng.uniform());
            if ns > 0 {
                let need = self.vcpus[v].need;
                self.vcpus[v].setting_timer = Some((until, need));
                self.vcpus[v].need = 0;
                self.stall(v, cpu, ns);
                let c = &mut self.cpus[cpu];
                c.in_hypervisor_until = c.in_hypervisor_until.max(self.now + ns);
                return;
            }
        }
        self.block_now(v, until);
    }

    /// [`Sim::block`] once its timer is set.
    fn block_now(&mut self, v: usize, until: u64) {
        let now = self.now;
        let p = self.vpool(v);
        if let Some(cpu) = self.pools[p].policy.sleep(VcpuId(v as u32), now) {
            // Take it off the CPU right away, as a kernel does when its vCPU blocks.
            self.vcpus[v].st = St::Asleep;
            let cpu = self.global(p, cpu);
            // Cost model: the block hypercall runs on the blocking vCPU's time, and the CPU
            // decides what comes next only after it.
            // Not for a replayed burst: its traced run already ended with the block.
            let vc = &self.vcpus[v];
            let (dom, ns) = (vc.dom, if vc.recorded() { 0 } else { self.costs.block_ns });
            if ns > 0 {
                self.add_cpu_time(dom, now, now + ns);
            }
            self.cpus[cpu].extra_pre = ns;
            self.schedule(cpu);
        }
        self.vcpus[v].st = St::Asleep;
        self.vcpus[v].since = now;
        // A replayed vCPU wakes at its recorded wake-up, which the hypervisor's timer
        // already made as late as it was: no lateness is drawn on top.
        let at = if self.vcpus[v].recorded() {
            until
        } else {
            let rng = &mut self.kick_rng;
            self.costs.wake_at(until, &mut || rng.uniform())
        };
        if let Some(cpu) = self.vcpus[v].last_cpu {
            self.hold_timer(cpu, until, at, u64::MAX);
        }
        self.push(at, Ev::Wake(v));
    }

    /// Cost model: a timer of `cpu` due at `due` drawn from a run's measurements to fire at
    /// `fires`, 256 µs or more later, holds the timers due meanwhile (slice ends, ticks,
    /// sleepers' timers: they fire when it does), of its CPU or of every CPU. The
    /// hypervisor arms one timer per CPU for the earliest of them
    /// (kernel/src/schedule/mod.rs, `arm_timer`), and under TCG that timer is what comes
    /// late while IPIs come on time (the trace's `late` marks, README "What the host did, at
    /// its moments"), on every CPU at once: QEMU runs the emulated CPUs' timers from its one
    /// main loop. Of a run's late slice ends under credit2 on 2 CPUs (latency.toml, idle
    /// host), 83% ended within 150 µs of one on the other CPU. On a loaded host a late
    /// timer is mostly its CPU's thread waiting for a host core, which holds that CPU
    /// alone. So a hold is the machine's with the chance the run says
    /// ([`Profile::machine_hold_share`]), thinned so that the machine's holds make late
    /// timers as often as the run measured them (each counted once per CPU it held: one
    /// late draw in as many as each machine's hold has held CPUs so far starts one, at
    /// first one in as many as the machine has CPUs), and its CPU's otherwise.
    /// Drawn each on its own, a sleeper woke on time inside the hold of the hog's slice
    /// end, preempted the hog, and credit2's latency domain never waited out a held slice
    /// end as it did on the hypervisor; held on its own CPU only, it was taken at once by
    /// the other CPU, whose slice end was not held, and its p99 was 1.0-2.3 ms against
    /// 3.0-4.2 ms on the hypervisor.
    fn hold_timer(&mut self, cpu: usize, due: u64, fires: u64, generation: u64) {
        let measured = self.costs.slice_measured.is_some() || self.costs.wake_measured.is_some();
        if !measured || fires.saturating_sub(due) < crate::cost::STALL_FROM_NS {
            return;
        }
        let cpus = self.cpu_pool.iter().filter(|p| p.is_some()).count().max(1) as u64;
        let (drawn, seen) = (1 + self.holds_drawn, cpus + self.holds_seen);
        let machine = self.hold_rng.uniform() < self.costs.machine_hold_share()
            && self.hold_rng.uniform() * (seen as f64) < drawn as f64;
        if machine {
            self.holds_drawn += 1;
            self.holds_seen += 1;
        }
        self.holds.push(Hold { cpu, due, fires, generation, machine, held: vec![cpu] });
    }

    /// Cost model: whether the slice end of `cpu`, falling due now, is held by the host,
    /// and until when ([`Sim::hold_timer`] then holds the timers due meanwhile with it). A
    /// slice end drawn from a run is drawn as it falls due, not when armed: held only while
    /// the machine's late slice ends so far are fewer than the share the run measured
    /// ([`Profile::slice_late_share`]; those held by another timer's hold count), and only
    /// if the machine's previous timer fired less than [`crate::cost::HOLD_AFTER_NS`]
    /// before it was due: under TCG on an idle host a timer due in quiet is seldom held.
    /// A hold that is its CPU's alone (a CPU thread waiting for a host core on a loaded
    /// host, [`Profile::machine_hold_share`]) falls anywhere. Drawn when armed and each on
    /// its own, the holds fell evenly across the latency domain's millisecond, and credit2's
    /// latency domain, waiting out the rate limit of a hog switched in when it last
    /// blocked, found that hog's slice end held 2-3 times as often as on the hypervisor:
    /// p99 1.8-3.4 ms against 0.98-1.02 ms in ten 6 s runs of latency.toml on 2 CPUs
    /// (docs/simvshyp.md, "Session 19"). A slice end already that late (held by another
    /// timer's hold, or this one's come back) is not held again.
    fn slice_held(&mut self, cpu: usize) -> Option<u64> {
        let due = self.cpus[cpu].slice_due;
        if !self.costs.holds_slices_when_due()
            || self.now >= due.saturating_add(crate::cost::STALL_FROM_NS)
        {
            return None;
        }
        let owed = self.costs.slice_late_share() * (self.slice_fired + 1) as f64
            - self.slice_fired_late as f64;
        let recent = due.saturating_sub(self.last_fire) < crate::cost::HOLD_AFTER_NS;
        let anywhere = self.hold_rng.uniform() >= self.costs.machine_hold_share();
        if owed <= 0.0 || !(recent || anywhere) {
            return None;
        }
        let rng = &mut self.kick_rng;
        Some(due + self.costs.slice_hold_ns(&mut || rng.uniform())?)
    }

    /// When the hold that holds a timer of `cpu` due at `t` ends (0 if none does), a run's
    /// own ([`Cpu::timer_held`]) or drawn ([`Sim::hold_timer`]): the timer fires then.
    fn timer_held_until(&mut self, cpu: usize, t: u64) -> u64 {
        let mut drawn = 0;
        let holds = self.holds.iter_mut().filter(|h| h.machine || h.cpu == cpu);
        if let Some(h) = holds.filter(|h| h.due <= t && t < h.fires).max_by_key(|h| h.fires) {
            drawn = h.fires;
            if h.machine && !h.held.contains(&cpu) {
                h.held.push(cpu);
                self.holds_seen += 1;
            }
        }
        self.cpus[cpu].timer_held_until(t).max(drawn)
    }

    fn action(&mut self, v: usize) {
        let now = self.now;
        let dom = self.vcpus[v].dom;
        if let Some((until, need)) = self.vcpus[v].setting_timer.take() {
            // Its set_timer is done: now it blocks.
            self.vcpus[v].need = need;
            self.block_now(v, until);
            return;
        }
        match self.vcpus[v].kind {
            Kind::Cpu => {}
            Kind::Latency { period, run, phase } => {
                if self.in_window(now) {
                    self.acc[dom].work += 1;
                    self.add_at(dom, now, 1, |w| &mut w.work);
                }
                self.vcpus[v].need = run;
                // The next release after now.
                let next = phase + ((now.saturating_sub(phase)) / period + 1) * period;
                self.block(v, next);
            }
            Kind::Yield { sleep, .. } => {
                if sleep == 0 {
                    let p = self.vpool(v);
                    if let Some(cpu) = self.pools[p].policy.yield_now(VcpuId(v as u32), now) {
                        let cpu = self.global(p, cpu);
                        self.schedule(cpu);
                    }
                } else {
                    self.block(v, now + sleep);
                }
            }
            Kind::Io { burst, block_mean } => {
                if self.in_window(now) {
                    self.acc[dom].work += 1;
                    self.add_at(dom, now, 1, |w| &mut w.work);
                }
                self.vcpus[v].need = burst;
                let t = now + self.rng.exp(block_mean);
                self.block(v, t);
            }
            Kind::Replay(r) => {
                // A burst done: sleep until the next recorded wake-up; if that has passed
                // (this run served the burst more slowly), its demand runs on at once, but
                // for a periodic workload, which skips the wake-ups it overran and sleeps
                // until the next one still ahead. Made up instead, each period this run
                // served late came back as a string of bursts run back to back, a burst of
                // CPU time the run never asked for: under stride the latency domain's pass
                // then ran ahead of its CPU's virtual time, its next wake-ups no longer
                // preempted a hog, and it waited out 10 ms quanta in 5 of 5 replays of
                // `latency.toml` (p99 9.8 ms, against 25-110 µs on the hypervisor).
                if self.in_window(now) {
                    self.acc[dom].work += 1;
                }
                let rep = &mut self.replayed[r];
                rep.next += 1;
                while rep.skips_overrun && rep.arrivals.get(rep.next).is_some_and(|a| a.0 <= now) {
                    rep.next += 1;
                }
                match rep.arrivals.get(rep.next).copied() {
                    Some((t, demand)) => {
                        self.vcpus[v].need = demand;
                        if t > now {
                            self.block(v, t);
                        }
                    }
                    None => {
                        self.vcpus[v].need = u64::MAX;
                        self.block(v, u64::MAX);
                    }
                }
            }
        }
    }

    /// Takes vCPU `v` off the CPUs and its policy's runqueues until [`Sim::unpause`]
    /// (Xen's `vcpu_pause`): a running vCPU leaves its CPU at once, a waiting one its
    /// runqueue; a sleeping one stays asleep, and its wake-up is held.
    fn pause(&mut self, v: usize) {
        if self.vcpus[v].paused {
            return;
        }
        let now = self.now;
        self.vcpus[v].paused = true;
        self.vcpus[v].woke_at = None;
        match self.vcpus[v].st {
            St::Asleep => self.vcpus[v].want_run = false,
            St::Waiting => {
                let p = self.vpool(v);
                let _ = self.pools[p].policy.sleep(VcpuId(v as u32), now);
                let (dom, since) = (self.vcpus[v].dom, self.vcpus[v].since);
                // Into its windows too (it once went to the domain's total alone).
                self.add_wait_time(dom, since, now);
                let vc = &mut self.vcpus[v];
                vc.st = St::Asleep;
                vc.want_run = true;
                vc.since = now;
                vc.epoch += 1;
            }
            St::Running(on) => {
                let p = self.vpool(v);
                let cpu = self.pools[p].policy.sleep(VcpuId(v as u32), now);
                self.vcpus[v].st = St::Asleep;
                // The CPU it runs on reschedules (the policy says which; it is `on`).
                let cpu = cpu.map_or(on, |c| self.global(p, c));
                self.schedule(cpu);
                let vc = &mut self.vcpus[v];
                vc.st = St::Asleep;
                vc.want_run = true;
                vc.since = now;
            }
        }
    }

    /// Undoes [`Sim::pause`]: a vCPU that wants to run wakes.
    fn unpause(&mut self, v: usize) {
        if !self.vcpus[v].paused {
            return;
        }
        self.vcpus[v].paused = false;
        if std::mem::take(&mut self.vcpus[v].want_run) {
            let _ = self.wake(v);
        }
    }

    /// Puts domain `d`'s (paused) vCPUs into pool `p`'s policy, spread over its CPUs, with
    /// the parameters the policy takes.
    fn join(&mut self, d: usize, p: usize) -> Result<(), String> {
        let policy = &self.pools[p].policy;
        let params = params_for(policy.info(), &self.dom_params[d]);
        let params: Vec<(&str, u64)> = params.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let id = DomainId(self.plan[d].id);
        policy.add_domain(id, &params).map_err(|e| e.to_string())?;
        let n = self.pools[p].cpus.len();
        for (k, &v) in self.dom_vcpus[d].iter().enumerate() {
            policy.insert_vcpu(VcpuId(v as u32), id, (d + k) % n).map_err(|e| e.to_string())?;
        }
        self.dom_pool[d] = p;
        Ok(())
    }

    /// Takes domain `d`'s (paused) vCPUs out of its pool's policy.
    fn leave(&mut self, d: usize) -> Result<(), String> {
        let p = self.dom_pool[d];
        let policy = &self.pools[p].policy;
        for &v in &self.dom_vcpus[d] {
            policy.remove_vcpu(VcpuId(v as u32)).map_err(|e| e.to_string())?;
        }
        policy.remove_domain(DomainId(self.plan[d].id)).map_err(|e| e.to_string())
    }

    /// Applies the timeline's step `i` now and writes its `event` record.
    fn apply_step(&mut self, i: usize) {
        let step = self.steps[i].clone();
        let now = self.now;
        let result = match (&step.targets, &step.op) {
            (Targets::Pool(p), Op::Set(kv)) => kv.iter().try_for_each(|(k, v)| {
                merge_param(&mut self.pools[*p].knobs, k, *v);
                self.pools[*p].policy.set_global_param(k, *v).map_err(|e| e.to_string())
            }),
            (Targets::Pool(p), Op::Policy(name)) => self.swap_policy(*p, name),
            (Targets::Domains(ids), op) => ids.iter().try_for_each(|&d| {
                let d = d as usize;
                let vcpus = self.dom_vcpus[d].clone();
                match op {
                    Op::Set(kv) => kv.iter().try_for_each(|(k, v)| {
                        merge_param(&mut self.dom_params[d], k, *v);
                        let p = self.dom_pool[d];
                        self.pools[p]
                            .policy
                            .set_domain_param(DomainId(self.plan[d].id), k, *v)
                            .map_err(|e| e.to_string())
                    }),
                    Op::Pause => {
                        vcpus.iter().for_each(|&v| self.pause(v));
                        Ok(())
                    }
                    Op::Unpause | Op::Start => {
                        vcpus.iter().for_each(|&v| self.unpause(v));
                        Ok(())
                    }
                    Op::Destroy => {
                        vcpus.iter().for_each(|&v| self.pause(v));
                        let left = self.leave(d);
                        // Gone: no later move or swap takes it along.
                        self.dom_vcpus[d].clear();
                        left
                    }
                    Op::MoveTo(to) => {
                        // Xen's sched_move_domain: pause, leave the old policy, join the
                        // new one spread over its CPUs, unpause.
                        let was: Vec<bool> = vcpus.iter().map(|&v| self.vcpus[v].paused).collect();
                        vcpus.iter().for_each(|&v| self.pause(v));
                        self.leave(d)?;
                        self.join(d, *to)?;
                        for (&v, was) in vcpus.iter().zip(was) {
                            if !was {
                                self.unpause(v);
                            }
                        }
                        Ok(())
                    }
                    Op::Policy(_) => Err("a policy is replaced in a pool, not a domain".into()),
                }
            }),
            (Targets::Pool(_), _) => Err("this applies to domains, not a pool".into()),
        };
        for p in 0..self.pools.len() {
            self.take_kicks(p, None);
        }
        self.events_out.push(results::Event {
            at_ns: step.at_ns,
            applied_ns: Some(now - self.t0),
            target: step.target,
            what: step.what,
            ok: result.is_ok(),
            error: result.err(),
        });
    }

    /// Replaces pool `p`'s policy: its domains are paused and leave the old instance, a new
    /// instance of `name` takes the pool's CPUs and the knobs it has, they join it and are
    /// unpaused.
    fn swap_policy(&mut self, p: usize, name: &str) -> Result<(), String> {
        let doms: Vec<usize> = (0..self.plan.len())
            .filter(|&d| self.dom_pool[d] == p && !self.dom_vcpus[d].is_empty())
            .collect();
        let mut was = Vec::new();
        for &d in &doms {
            for v in self.dom_vcpus[d].clone() {
                was.push((v, self.vcpus[v].paused));
                self.pause(v);
            }
        }
        for &d in &doms {
            self.leave(d)?;
        }
        let knobs = {
            let info = crate::registry::info(name).map_err(|e| e.to_string())?;
            knobs_for(info, &self.pools[p].knobs)
        };
        let globals: Vec<(&str, u64)> = knobs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let topo = self.topo.subset(&self.pools[p].cpus);
        let policy = registry::build(name, &topo, &globals).map_err(|e| e.to_string())?;
        let old = std::mem::replace(&mut self.pools[p].policy, policy);
        if let Some(start) = self.pools[p].counters_t0.take() {
            for (k, v) in policy_counters(old.as_ref()) {
                *self.retired_counters.entry(k.clone()).or_default() +=
                    v.saturating_sub(start.get(&k).copied().unwrap_or(0));
            }
        }
        self.retired_stats += old.stats();
        if self.counters_taken {
            self.pools[p].counters_t0 = Some(policy_counters(self.pools[p].policy.as_ref()));
        }
        self.pools[p].knobs = knobs;
        let cpus = self.pools[p].cpus.clone();
        for &c in &cpus {
            // The old policy's slices end here; every CPU asks the new one.
            self.cpus[c].timer_gen += 1;
            if let Some(tr) = &mut self.trace {
                let _ = writeln!(
                    tr,
                    "{{\"name\":\"policy {name}\",\"ph\":\"i\",\"s\":\"p\",\"pid\":{c},\"tid\":0,\"ts\":{}.{:03}}},",
                    self.now / US,
                    self.now % US
                );
            }
        }
        for &c in &cpus {
            // The old policy's tick stops; the new one's is asked for.
            self.cpus[c].next_tick = None;
            self.cpus[c].tick_gen += 1;
            self.ask_tick(c);
        }
        for &d in &doms {
            self.join(d, p)?;
        }
        for (v, was) in was {
            if !was {
                self.unpause(v);
            }
        }
        for &c in &cpus {
            self.kick(c);
        }
        Ok(())
    }

    fn check_conservation(&mut self) {
        if !self.check_conservation || !self.in_window(self.now) {
            return;
        }
        // Within a pool: a CPU of one pool idling while another pool's vCPU waits is the
        // partition, not waste. Nor is an idle CPU whose kick is on its way (a cost
        // profile's `kick_ns`: the reschedule that will take the waiter has been asked for;
        // on the ideal machine a kick arrives before time moves on).
        for p in 0..self.pools.len() {
            let idle = self.pools[p]
                .cpus
                .iter()
                .any(|&c| self.cpus[c].curr.is_none() && !self.cpus[c].kick_pending);
            if idle
                && (0..self.vcpus.len())
                    .any(|v| self.vcpus[v].st == St::Waiting && self.vpool(v) == p)
            {
                self.viol.wasted_core += 1;
                return;
            }
        }
    }
}

/// How long a `yield` guest switched in inside its window runs before its yield takes
/// effect: its loop's turn and a `yield` hypercall (about a µs under TCG, `scripts/bench`).
const YIELD_AGAIN_NS: u64 = 1_000;

fn kind_of(p: &DomainPlan) -> Kind {
    let arg = |k: &str| p.args.get(k).copied().unwrap_or(0);
    match p.workload.as_str() {
        "latency" => {
            let period = arg("period_us").max(1) * US;
            Kind::Latency {
                period,
                run: arg("run_us").max(1) * US,
                // Spread releases of different domains over the period, deterministically.
                phase: (u64::from(p.id) * 7919 * US) % period,
            }
        }
        "yield" => Kind::Yield {
            tick: arg("tick_us").max(1) * US,
            before: arg("before_us") * US,
            sleep: arg("sleep_us") * US,
        },
        "io" => {
            Kind::Io { burst: arg("burst_us").max(1) * US, block_mean: arg("block_us").max(1) * US }
        }
        _ => Kind::Cpu,
    }
}

/// Whether the domain attacks what a scheduling simulator does not model, so that schedsim
/// kills it at start: a `hostile-*` workload, or a `fuzz` domain in mode 2 (which raises an
/// exception after its calls).
fn killed_at_start(p: &DomainPlan) -> bool {
    p.workload.starts_with("hostile-")
        || (p.workload == "fuzz" && p.args.get("mode").copied() == Some(2))
}

/// Runs the experiment. The spec must be valid ([`Spec::validate`]).
pub fn run(spec: &Spec, opts: &Options) -> Result<Output, SimError> {
    if spec.churn.is_some() {
        return Err(SimError(format!(
            "{}: churn: domain lifetimes (creation and teardown) run only on the hypervisor \
             (scripts/run); schedsim simulates a measured interval, so drop [churn] to \
             simulate the same domains",
            spec.file
        )));
    }
    let plan = spec.plan();
    let cpus = spec.machine.cpus as usize;
    let hostile = killed_at_start;
    let total_vcpus: usize = plan.iter().filter(|p| !hostile(p)).map(|p| p.vcpus as usize).sum();
    // Validation checked the shape; a hand-built spec that skipped it runs flat.
    let shape = spec.machine.shape().ok();
    let topo = match shape {
        Some(sh) => Topology::shaped(
            cpus,
            total_vcpus.max(1),
            plan.len().max(1),
            sh.cores as usize,
            sh.threads as usize,
        ),
        None => Topology::flat(cpus, total_vcpus.max(1), plan.len().max(1)),
    };
    // One policy instance per pool, over its own CPUs (`[sched]` alone: one pool of all).
    let pool_plans = spec.pool_plans();
    let mut pools = Vec::new();
    let mut cpu_pool = vec![None; cpus];
    let mut cpu_local = vec![0; cpus];
    for (i, pp) in pool_plans.iter().enumerate() {
        let globals: Vec<(&str, u64)> = pp.knobs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let at = if spec.has_pools() { format!("pool[{i}]") } else { "sched".into() };
        let policy = registry::build(&pp.policy, &topo.subset(&pp.cpus), &globals)
            .map_err(|e| SimError(format!("{}: {at}: {e}", spec.file)))?;
        for (local, &c) in pp.cpus.iter().enumerate() {
            cpu_pool[c] = Some(i);
            cpu_local[c] = local;
        }
        pools.push(SimPool {
            policy,
            cpus: pp.cpus.clone(),
            knobs: pp.knobs.clone(),
            counters_t0: None,
        });
    }
    let steps = spec.timeline();
    // A replay, or a comparison with a run, runs on the run's clock
    // ([`crate::replay::clock_start`]).
    let warmup = spec.warmup_ms * 1_000_000;
    let t0 = match (&opts.replay, &opts.host_stalls) {
        (Some(r), _) => r.clock_start(warmup),
        (None, Some(h)) => h.clock_start(warmup),
        (None, None) => crate::replay::clock_start(warmup, 0, opts.run_measured_at),
    };
    let t1 = t0 + spec.duration_ms * 1_000_000;
    // Parking a capped vCPU, or an rtds vCPU without extra time that spent its budget, is
    // deliberate idling: no work-conservation check then. (A plan carries only the
    // parameters of the policy in force.)
    let set_values = steps.iter().filter_map(|s| match &s.op {
        Op::Set(kv) => Some(kv.iter()),
        _ => None,
    });
    let given: Vec<&(String, u64)> =
        plan.iter().flat_map(|p| &p.all_params).chain(set_values.flatten()).collect();
    let capped = given.iter().any(|(k, v)| (k == "cap" && *v > 0) || (k == "extratime" && *v == 0));
    let window_ns = opts
        .window_ns
        .or((spec.window_ms > 0).then(|| spec.window_ms * 1_000_000))
        .filter(|&w| w > 0);
    let nwin = window_ns.map_or(0, |w| (t1 - t0).div_ceil(w) as usize);
    let mut sim = Sim {
        pools,
        cpu_pool,
        cpu_local,
        dom_pool: plan.iter().map(|p| p.pool).collect(),
        dom_params: plan.iter().map(|p| p.all_params.clone()).collect(),
        dom_vcpus: vec![Vec::new(); plan.len()],
        topo,
        steps,
        events_out: Vec::new(),
        retired_counters: BTreeMap::new(),
        retired_stats: Stats::default(),
        plan: &plan,
        vcpus: Vec::new(),
        cpus: (0..cpus)
            .map(|_| Cpu {
                curr: None,
                since: 0,
                timer_gen: 0,
                kick_pending: false,
                kick_at: 0,
                extra_pre: 0,
                stalled_until: 0,
                timer_held: Vec::new(),
                in_hypervisor_until: 0,
                deciding_at: 0,
                armed_at: None,
                slice_end: None,
                next_tick: None,
                tick_gen: 0,
                timers: BTreeSet::new(),
                slice_due: 0,
            })
            .collect(),
        acc: plan.iter().map(|_| Acc::default()).collect(),
        events: BinaryHeap::new(),
        seq: 0,
        now: 0,
        t0,
        t1,
        window_ns,
        windows: vec![vec![WindowAcc::default(); plan.len()]; nwin],
        idle_ns: 0,
        rng: Rng(opts.seed ^ 0x5eed_5eed_5eed_5eed),
        viol: Violations::default(),
        check_conservation: !capped,
        trace: opts.trace.then(|| String::from("{\"traceEvents\":[\n")),
        counters_taken: false,
        costs: opts.costs.clone(),
        pre: 0,
        kick_rng: Rng(opts.seed ^ 0x4b1c_4b1c_4b1c_4b1c),
        stall_rng: Rng(opts.seed ^ 0x57a1_157a_1157_a115),
        hold_rng: Rng(opts.seed ^ 0x401d_401d_401d_401d),
        replayed: Vec::new(),
        holds: Vec::new(),
        holds_drawn: 0,
        holds_seen: 0,
        slice_fired: 0,
        slice_fired_late: 0,
        last_fire: 0,
    };
    for (i, p) in plan.iter().enumerate() {
        if hostile(p) {
            continue;
        }
        let params: Vec<(&str, u64)> = p.params.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        sim.pools[p.pool]
            .policy
            .add_domain(DomainId(p.id), &params)
            .map_err(|e| SimError(format!("{}: domain {}: {e}", spec.file, p.name)))?;
        for idx in 0..p.vcpus {
            let mut kind = kind_of(p);
            if let Kind::Latency { period, ref mut phase, .. } = kind
                && let Some(&deadline) = opts.timer_deadlines.get(&p.name)
            {
                *phase = deadline % period;
            }
            let arrivals = opts.replay.as_ref().and_then(|r| r.aligned(&p.name, idx, t0));
            // Replayed: the vCPUs that block. A `cpu` domain, or a `yield` one that never
            // sleeps, runs its workload (its trace has no wake-ups to replay but its start,
            // and one burst of all its CPU time would stand for every yield).
            let blocks = !matches!(kind, Kind::Cpu | Kind::Yield { sleep: 0, .. });
            if let Some(arrivals) = arrivals.filter(|_| blocks) {
                let skips_overrun = matches!(kind, Kind::Latency { .. });
                kind = Kind::Replay(sim.replayed.len());
                sim.replayed.push(Replayed { arrivals, next: 0, skips_overrun });
            }
            let v = sim.vcpus.len();
            let pool = &sim.pools[p.pool];
            pool.policy
                .insert_vcpu(VcpuId(v as u32), DomainId(p.id), v % pool.cpus.len())
                .map_err(|e| SimError(format!("{}: domain {}: {e}", spec.file, p.name)))?;
            sim.dom_vcpus[i].push(v);
            let need = match kind {
                Kind::Cpu | Kind::Yield { .. } => u64::MAX,
                Kind::Latency { run, .. } => run,
                Kind::Io { burst, .. } => burst,
                Kind::Replay(r) => sim.replayed[r].arrivals[0].1,
            };
            sim.vcpus.push(Vcpu {
                dom: i,
                idx,
                kind,
                st: St::Asleep,
                since: 0,
                need,
                epoch: 0,
                last_cpu: None,
                woke_at: None,
                // `start = "event"`: created paused; its first wake-up waits for the start.
                paused: p.start_on_event,
                want_run: false,
                ready_at: 0,
                setting_timer: None,
                timer_on: None,
            });
            let start = match kind {
                Kind::Latency { phase, .. } => phase,
                Kind::Replay(r) => sim.replayed[r].arrivals[0].0,
                _ => 0,
            };
            sim.push(start, Ev::Wake(v));
        }
    }
    if let Some(tr) = &mut sim.trace {
        for c in 0..cpus {
            let _ = writeln!(
                tr,
                "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{c},\"args\":{{\"name\":\"cpu{c}\"}}}},"
            );
        }
    }
    for c in 0..cpus {
        sim.ask_tick(c);
    }
    for i in 0..sim.steps.len() {
        let at = t0 + sim.steps[i].at_ns;
        sim.push(at, Ev::Step(i));
    }
    // A run's stalls at their moments, or stalls drawn at random: not both.
    let recorded_stalls = opts.host_stalls.is_some();
    if let Some(host) = &opts.host_stalls {
        sim.costs.stalls = None;
        let (stalls, timers) = host.aligned(t0);
        for (c, at, ns) in stalls.into_iter().filter(|s| s.0 < cpus) {
            sim.push(at, Ev::HostStall(c, ns));
        }
        for (c, at, ns) in timers.into_iter().filter(|s| s.0 < cpus) {
            sim.cpus[c].timer_held.push((at, at + ns));
        }
    }
    if let Some(gap) = sim.costs.stalls.as_ref().map(|s| s.mean_gap_ns) {
        for c in 0..cpus {
            let at = sim.stall_rng.exp(gap);
            sim.push(at, Ev::Stall(c));
        }
    }
    while let Some(Reverse((t, _, ev))) = sim.events.pop() {
        if t >= t1 {
            break;
        }
        if t >= t0 && !sim.counters_taken {
            sim.counters_taken = true;
            for p in &mut sim.pools {
                p.counters_t0 = Some(policy_counters(p.policy.as_ref()));
            }
        }
        if t > sim.now {
            sim.check_conservation();
        }
        sim.now = t;
        // Cost model: a stalled CPU's sleepers wake, and its policy ticks, only once the
        // stall ends. Its slice ends and the kicks it is sent are not put off again when
        // drawn from a run ([`Profile::with_measured`]): their measured delays hold the
        // stalls of that run (and a profile's hold none: stalls come only from a run), but
        // for the run's own stalls played at their moments, when the delays hold none. Nor
        // does a CPU decide while on its way to the decision a kick of its own asks for, nor
        // take any of these while in a switch or a `set_timer` drawn from a run.
        // With a run's own marks a timer due while the run's was held fires when it was
        // let go.
        let (on, stalls, decides) = match ev {
            Ev::Timer(c, _) | Ev::Kick(c) => (Some(c), recorded_stalls, true),
            Ev::Tick(c, _) => (Some(c), true, false),
            // A wake-up drawn as late as the run's slice ends has its stalls in it already,
            // as has a replayed one (the run's own).
            Ev::Wake(v) => (
                sim.vcpus[v].last_cpu,
                (sim.costs.wake_measured.is_none() || recorded_stalls) && !sim.vcpus[v].recorded(),
                false,
            ),
            _ => (None, false, false),
        };
        if let Some(c) = on {
            let stalled = if stalls { sim.cpus[c].stalled_until } else { 0 };
            let deciding = if decides { sim.cpus[c].deciding_at } else { 0 };
            let timed = match ev {
                Ev::Timer(..) | Ev::Tick(..) => true,
                Ev::Wake(v) => !sim.vcpus[v].recorded(),
                _ => false,
            };
            let held = if timed { sim.timer_held_until(c, t) } else { 0 };
            let until = stalled.max(deciding).max(held).max(sim.cpus[c].in_hypervisor_until);
            if until > t {
                sim.push(until, ev);
                continue;
            }
        }
        match ev {
            Ev::Timer(c, g) => {
                if sim.cpus[c].timer_gen == g {
                    if let Some(until) = sim.slice_held(c) {
                        let due = sim.cpus[c].slice_due;
                        sim.hold_timer(c, due, until, g);
                        sim.push(until, ev);
                        continue;
                    }
                    sim.slice_fired += 1;
                    if t.saturating_sub(sim.cpus[c].slice_due) >= crate::cost::STALL_FROM_NS {
                        sim.slice_fired_late += 1;
                    }
                    sim.last_fire = t;
                    sim.timer_fired(c, true);
                    sim.schedule(c);
                }
            }
            Ev::Kick(c) => sim.schedule(c),
            Ev::Tick(c, g) => {
                let Some(p) = sim.cpu_pool[c] else { continue };
                if sim.cpus[c].tick_gen != g {
                    continue;
                }
                let mut kicks = Vec::new();
                sim.pools[p].policy.tick(sim.cpu_local[c], t, &mut |k| kicks.push(k));
                // Kicks made on the tick's CPU: of itself, or of another by IPI.
                let mut resched = false;
                for k in kicks {
                    let k = sim.global(p, k);
                    resched |= k == c;
                    sim.kick_from(k, Some(c));
                }
                // Asked afresh: an answer equal to the one just served is a new tick.
                sim.cpus[c].next_tick = None;
                sim.last_fire = t;
                sim.ask_tick(c);
                sim.timer_fired(c, resched);
            }
            Ev::Step(i) => sim.apply_step(i),
            Ev::Action(v, g) => {
                if sim.vcpus[v].epoch == g {
                    // Account the run so far so `need` is exact, then act.
                    let cpu = match sim.vcpus[v].st {
                        St::Running(c) => c,
                        _ => continue,
                    };
                    sim.account_run(v, cpu, t);
                    sim.vcpus[v].need = 0;
                    sim.action(v);
                    // Still on the same CPU (a yield that picked it again): next action.
                    if sim.vcpus[v].st == St::Running(cpu) && sim.cpus[cpu].curr == Some(v) {
                        sim.arm(v);
                    }
                }
            }
            Ev::Wake(v) => {
                // Its timer fires on the CPU it was set on: the interrupt leaves re-arming
                // to the reschedule when the wake-up kicks that CPU.
                sim.last_fire = t;
                let timer = sim.vcpus[v].timer_on.take();
                if let Some((c, at)) = timer {
                    sim.cpus[c].timers.remove(&(at, v));
                }
                let kicked = sim.wake(v);
                if let Some((c, _)) = timer {
                    sim.timer_fired(c, kicked == Some(c));
                }
            }
            Ev::Stall(c) => {
                let Some(st) = sim.costs.stalls.clone() else { continue };
                let rng = &mut sim.stall_rng;
                let len = st.lengths.sample(&mut || rng.uniform()).max(1);
                sim.cpus[c].stalled_until = t + len;
                // (A replayed burst counts it toward itself: `Sim::stall`.)
                if let Some(v) = sim.cpus[c].curr {
                    sim.stall(v, c, len);
                }
                let gap = sim.stall_rng.exp(st.mean_gap_ns);
                sim.push(t + len + gap, Ev::Stall(c));
            }
            Ev::HostStall(c, len) => {
                // Merged per CPU ([`HostStalls`]): none overlaps the one before.
                sim.cpus[c].stalled_until = sim.cpus[c].stalled_until.max(t + len);
                if let Some(v) = sim.cpus[c].curr {
                    sim.stall(v, c, len);
                }
            }
        }
    }
    // Close the interval.
    sim.now = t1;
    for c in 0..cpus {
        match sim.cpus[c].curr {
            Some(v) => sim.account_run(v, c, t1),
            None => sim.idle_ns += sim.clip(sim.cpus[c].since, t1),
        }
    }
    for v in 0..sim.vcpus.len() {
        if sim.vcpus[v].st == St::Waiting {
            let dom = sim.vcpus[v].dom;
            sim.add_wait_time(dom, sim.vcpus[v].since, t1);
        }
    }
    finish(spec, opts, &plan, sim)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub use crate::summary::fair_shares;

/// Latencies as the `domain` record's `wake_lat_hist`: counts in `abi::control`'s log2
/// buckets from 1 µs, the empty ones left out.
fn lat_hist(latencies: &[u64]) -> Vec<(u64, u64)> {
    let mut counts = [0u64; abi::control::WAKE_LAT_BUCKETS];
    for &ns in latencies {
        counts[abi::control::wake_lat_bucket(ns)] += 1;
    }
    results::wake_lat_hist(counts)
}

/// The `window` records: per window, per domain (in plan order), what it got in it; `t_ns`
/// is the window's end from the start of the interval (the last window ends with it).
/// Work of cpu-bound workloads is µs of CPU, as in the `domain` record (rounded down per
/// window, so the windows may sum to a little less than the total).
fn window_records(plan: &[DomainPlan], sim: &Sim<'_>, duration_ns: u64) -> Vec<Window> {
    let Some(w) = sim.window_ns else { return Vec::new() };
    let mut out = Vec::with_capacity(sim.windows.len() * plan.len());
    for (k, win) in sim.windows.iter().enumerate() {
        let t_ns = ((k as u64 + 1) * w).min(duration_ns);
        for (p, d) in plan.iter().zip(win) {
            let per_us = matches!(p.workload.as_str(), "cpu" | "yield");
            out.push(Window {
                t_ns,
                id: p.id,
                name: p.name.clone(),
                cpu_ns: d.cpu_ns,
                wait_ns: d.wait_ns,
                work: if per_us { d.work / US } else { d.work },
            });
        }
    }
    out
}

fn finish(
    spec: &Spec,
    opts: &Options,
    plan: &[DomainPlan],
    mut sim: Sim<'_>,
) -> Result<Output, SimError> {
    let pool_plans = spec.pool_plans();
    let weighted = sim.pools.iter().any(|p| p.policy.info().domain_param("weight").is_some());
    let mut domains = Vec::new();
    let mut all_expected = true;
    let mut starved_domains = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let a = &mut sim.acc[i];
        a.lat.sort_unstable();
        let hostile = killed_at_start(p);
        let exit = if hostile {
            Outcome::Killed("hostile workload (schedsim does not model memory protection and kills hostile-* and fuzz mode 2 at start)".into())
        } else {
            Outcome::Ok
        };
        let expected = match p.expect {
            Expect::Ok => !hostile,
            Expect::Killed => hostile,
        };
        all_expected &= expected;
        // The simulator counts timer wake-ups only for the workloads it models with timers
        // (it runs `virq` as `cpu`).
        let timers = match kind_of(p) {
            Kind::Latency { .. } | Kind::Io { .. } => true,
            Kind::Yield { sleep, .. } => sleep > 0,
            Kind::Cpu => false,
            Kind::Replay(_) => true,
        };
        let got = Progress { cpu_ns: a.cpu_ns, wait_ns: a.wait_ns, wakeups: a.wakeups };
        if expected && let Some(why) = starved(p, spec.duration_ms * 1_000_000, &got, timers) {
            starved_domains.push(why);
        }
        let work =
            if matches!(p.workload.as_str(), "cpu" | "yield") { a.work / US } else { a.work };
        domains.push(Domain {
            id: p.id,
            name: p.name.clone(),
            group: p.group.clone(),
            workload: p.workload.clone(),
            vcpus: p.vcpus,
            weight: p.weight,
            cap: p.cap,
            cpu_ns: a.cpu_ns,
            wait_ns: a.wait_ns,
            work,
            wakeups: a.wakeups,
            wake_lat_p50_ns: percentile(&a.lat, 0.50),
            wake_lat_p99_ns: percentile(&a.lat, 0.99),
            wake_lat_max_ns: a.lat.last().copied().unwrap_or(0),
            switches: a.switches,
            migrations: a.migrations,
            exit,
            pool: spec.has_pools().then(|| pool_plans[sim.dom_pool[i]].name.clone()),
            wake_lat_hist: Some(lat_hist(&a.lat)),
            timer_deadline_ns: None,
        });
    }
    // Fairness over the cpu-bound domains, computed as for every engine.
    let figures: Vec<DomainFigures> = domains
        .iter()
        .map(|d| DomainFigures {
            workload: &d.workload,
            weight: d.weight,
            cap: d.cap,
            vcpus: d.vcpus,
            work: d.work,
            cpu_ns: d.cpu_ns,
            pool: d.pool.as_deref(),
        })
        .collect();
    let (Fairness { jain, share_err_max }, changed) =
        summary::of_run(&figures, &sim.events_out, spec.duration_ms * 1_000_000, weighted);
    let v = sim.viol;
    // The policy's counters over the measured interval.
    // Summed over the pools (and the policies replaced during the interval).
    let mut counters = std::mem::take(&mut sim.retired_counters);
    for p in &mut sim.pools {
        let start = p.counters_t0.take().unwrap_or_default();
        for (name, value) in policy_counters(p.policy.as_ref()) {
            *counters.entry(name.clone()).or_default() +=
                value.saturating_sub(start.get(&name).copied().unwrap_or(0));
        }
    }
    let window_records = window_records(plan, &sim, spec.duration_ms * 1_000_000);
    let window_jain = {
        let records: Vec<Record> = domains
            .iter()
            .cloned()
            .map(Record::Domain)
            .chain(window_records.iter().cloned().map(Record::Window))
            .collect();
        crate::windows::window_jain(&records, weighted)
    };
    let summary = Summary {
        work_total: domains.iter().map(|d| d.work).sum(),
        jain,
        share_err_max,
        idle_ns: sim.idle_ns,
        expected: all_expected && starved_domains.is_empty(),
        violations: v.double_run + v.bad_pick + v.wasted_core,
        policy_counters: (!counters.is_empty()).then_some(counters),
        window_jain: (!changed && !window_records.is_empty() && !window_jain.is_empty())
            .then_some(window_jain),
    };
    let shape = spec.machine.shape().ok();
    let run = Run {
        warmup_ns: Some(spec.warmup_ms * 1_000_000),
        seed: Some(opts.seed),
        pools: spec.has_pools().then(|| {
            pool_plans
                .iter()
                .map(|p| results::Pool {
                    name: p.name.clone(),
                    cpus: p.cpus.iter().map(|&c| c as u32).collect(),
                    policy: p.policy.clone(),
                })
                .collect()
        }),
        sockets: shape.map(|sh| sh.sockets as u32),
        cores: shape.map(|sh| sh.cores as u32),
        threads: shape.map(|sh| sh.threads as u32),
        profile: (!opts.costs.is_ideal()).then(|| opts.costs.name.clone()),
        guest_switch_ns: opts.costs.guest_fit_ns,
        // Nothing of what only the hypervisor measures (its start, Domain0's time, the
        // lateness histograms).
        ..Run::new(
            &spec.name,
            Engine::Schedsim,
            &pool_plans[0].policy,
            // The spec allows at most 255.
            u32::try_from(spec.machine.cpus).unwrap_or(u32::MAX),
            plan.len() as u64,
            spec.duration_ms * 1_000_000,
            sim.idle_ns,
        )
    };
    let ncpus = spec.machine.cpus;
    let trace = sim.trace.take().map(|mut t| {
        for p in plan {
            for idx in 0..p.vcpus {
                let tid = u64::from(p.id) * 1000 + u64::from(idx);
                for c in 0..ncpus {
                    let _ = writeln!(
                        t,
                        "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{c},\"tid\":{tid},\"args\":{{\"name\":\"{}.{idx}\"}}}},",
                        p.name
                    );
                }
            }
        }
        // Close the array with a harmless metadata event (no trailing comma allowed).
        t += "{\"name\":\"end\",\"ph\":\"M\",\"pid\":0,\"args\":{}}\n]}\n";
        t
    });
    Ok(Output {
        run,
        domains,
        summary,
        violations: v,
        stats: sim.pools.iter().fold(sim.retired_stats, |mut s, p| {
            s += p.policy.stats();
            s
        }),
        windows: sim.windows.iter().map(|w| w.iter().map(|d| d.cpu_ns).collect()).collect(),
        window_records,
        trace,
        starved: starved_domains,
        events: sim.events_out,
        ran_on: sim.acc.iter().map(|a| a.ran_on).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What schedsim writes is the results contract: every line reads back as the record
    /// it was made from, and a hostile domain's exit is `killed: <reason>`.
    #[test]
    fn results_are_the_typed_records() {
        let text = "name = \"t\"\nduration_ms = 200\n[machine]\ncpus = 2\n[sched]\n\
                    policy = \"credit\"\n[[domain]]\nname = \"w\"\ncount = 3\nworkload = \"cpu\"\n\
                    [[domain]]\nname = \"bad\"\nworkload = \"hostile-priv\"\nexpect = \"killed\"\n";
        let spec = Spec::from_str(text, "t.toml").unwrap();
        let out = run(&spec, &Options { seed: 3, ..Options::default() }).unwrap();
        let records: Vec<Record> = out
            .jsonl()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        let mut want = vec![Record::Run(out.run.clone())];
        want.extend(out.domains.iter().cloned().map(Record::Domain));
        want.push(Record::Summary(out.summary.clone()));
        assert_eq!(records, want);
        let Record::Run(run) = &records[0] else { panic!("the first record is not the run") };
        assert_eq!((run.engine, run.cpus, run.seed), (Engine::Schedsim, 2, Some(3)));
        assert_eq!(run.idle_ns, out.summary.idle_ns);
        assert!(out.domains[3].exit.killed().is_some_and(|why| why.starts_with("hostile")));
        assert!(out.domains[..3].iter().all(|d| d.exit.is_ok() && d.cpu_ns > 0));
    }

    /// The guest's side of a switch (`cost::Profile::with_guest_switch`) is the incoming
    /// vCPU's CPU time at each switch between domains or from idle, and none at a switch
    /// within a domain: a latency domain beside a hog spends it once a wake-up more, two
    /// vCPUs of one domain yielding to each other alone on a CPU not at all.
    #[test]
    fn the_guests_side_of_a_switch_is_paid_between_domains_only() {
        let per_wake = |text: &str, guest: i64| {
            let spec = Spec::from_str(text, "t.toml").unwrap();
            let costs = Profile::default().with_guest_switch(guest);
            let out = run(&spec, &Options { seed: 3, costs, ..Options::default() }).unwrap();
            out.domains
                .iter()
                .map(|d| (d.cpu_ns, d.wakeups, d.switches, d.work))
                .collect::<Vec<_>>()
        };
        let beside = "name = \"t\"\nduration_ms = 200\n[machine]\ncpus = 1\n[sched]\n\
                      policy = \"credit\"\n[[domain]]\nname = \"lat\"\nworkload = \"latency\"\n\
                      [domain.args]\nrun_us = 20\n[[domain]]\nname = \"hog\"\nworkload = \"cpu\"\n";
        let (free, paid) = (per_wake(beside, 0), per_wake(beside, 10_000));
        let (cpu0, wakes0, _, _) = free[0];
        let (cpu1, wakes1, switches1, _) = paid[0];
        assert!(wakes1 > 100 && switches1 >= wakes1, "{paid:?}");
        // 20 µs of work a wake-up, and 10 µs at each switch in (but for a run the
        // interval's edges cut).
        let near = |a: u64, b: u64| a.abs_diff(b) <= 30_000;
        assert!(near(cpu0, wakes0 * 20_000), "{free:?}");
        assert!(near(cpu1, wakes1 * 20_000 + switches1 * 10_000), "{paid:?}");
        // Alone on its CPU, it is switched in from idle: it pays there too.
        let alone = beside.split("[[domain]]\nname = \"hog\"").next().unwrap();
        let (cpu, wakes, switches, _) = per_wake(alone, 10_000)[0];
        assert!(wakes > 100 && switches >= wakes, "{wakes} {switches}");
        assert!(near(cpu, wakes * 20_000 + switches * 10_000), "{cpu} {wakes} {switches}");
        // One domain's two vCPUs yielding on one CPU: every switch within the domain.
        let within = "name = \"t\"\nduration_ms = 200\n[machine]\ncpus = 1\n[sched]\n\
                      policy = \"rr\"\n[[domain]]\nname = \"y\"\nvcpus = 2\nworkload = \"yield\"\n\
                      [domain.args]\ntick_us = 100\nbefore_us = 100\n";
        assert_eq!(per_wake(within, 0), per_wake(within, 10_000));
    }

    /// With `window_ms`, the `window` records cover the interval window by window and add
    /// up to each domain's totals; every domain carries its latency histogram, whose counts
    /// are its latency samples.
    #[test]
    fn windows_add_up_and_histograms_hold_every_latency() {
        let text = "name = \"t\"\nduration_ms = 250\nwarmup_ms = 50\nwindow_ms = 100\n\
                    [machine]\ncpus = 2\n[sched]\npolicy = \"credit\"\n\
                    [[domain]]\nname = \"w\"\ncount = 3\nworkload = \"cpu\"\n\
                    [[domain]]\nname = \"l\"\nworkload = \"latency\"\n";
        let spec = Spec::from_str(text, "t.toml").unwrap();
        let out = run(&spec, &Options { seed: 3, ..Options::default() }).unwrap();
        let n = out.domains.len();
        assert_eq!(out.window_records.len(), 3 * n, "windows of 100, 100 and 50 ms");
        let ends: Vec<u64> = out.window_records.iter().step_by(n).map(|w| w.t_ns).collect();
        assert_eq!(ends, [100_000_000, 200_000_000, 250_000_000]);
        for d in &out.domains {
            let mine: Vec<&Window> = out.window_records.iter().filter(|w| w.id == d.id).collect();
            assert_eq!(mine.len(), 3);
            assert_eq!(mine.iter().map(|w| w.cpu_ns).sum::<u64>(), d.cpu_ns, "{}", d.name);
            assert_eq!(mine.iter().map(|w| w.wait_ns).sum::<u64>(), d.wait_ns, "{}", d.name);
            let work: u64 = mine.iter().map(|w| w.work).sum();
            assert!(work <= d.work && d.work - work < 3, "{}: {work} of {}", d.name, d.work);
            // Two CPUs, so no window holds more CPU time than twice its length.
            assert!(mine.iter().all(|w| w.cpu_ns <= 100_000_000));
            let hist = d.wake_lat_hist.as_ref().unwrap();
            assert!(hist.windows(2).all(|p| p[0].0 < p[1].0));
            assert!(
                hist.iter()
                    .all(|&(upper, count)| count > 0 && upper.is_power_of_two() && upper >= 1024)
            );
            if d.workload == "latency" {
                let count: u64 = hist.iter().map(|&(_, c)| c).sum();
                assert!(count > 0 && count <= d.wakeups, "{count} of {}", d.wakeups);
                // The largest latency lies in the last bucket.
                let &(upper, _) = hist.last().unwrap();
                assert!(
                    d.wake_lat_max_ns < upper && (upper == 1024 || d.wake_lat_max_ns >= upper / 2)
                );
            }
        }
        // Written after the domains, before the summary; each reads back.
        let kinds: Vec<String> = out
            .jsonl()
            .lines()
            .map(|l| serde_json::from_str::<Record>(l).unwrap().kind().to_string())
            .collect();
        assert_eq!(kinds.iter().filter(|k| *k == "window").count(), 3 * n);
        assert_eq!(kinds.last().map(String::as_str), Some("summary"));
        assert_eq!(kinds[n + 1], "window");
        // The summary has one Jain's index per window; the windows are consistent.
        assert_eq!(out.summary.window_jain.as_ref().map(Vec::len), Some(3));
        let records: Vec<Record> =
            out.jsonl().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(crate::windows::problems(&records), Vec::<String>::new());
        // Without window_ms, none.
        let plain = Spec::from_str(&text.replace("window_ms = 100\n", ""), "t.toml").unwrap();
        assert!(run(&plain, &Options::default()).unwrap().window_records.is_empty());
    }

    /// A pause or a destroy of a domain waiting for its CPU ends its wait in its windows as
    /// in its total (the pause once added the wait to the total alone), and a destroyed
    /// domain holds nothing in the windows after it: three hogs on one CPU, two of them
    /// waiting at any instant, one paused and one destroyed mid-window.
    #[test]
    fn pauses_and_destroys_keep_the_windows_adding_up() {
        let text = "name = \"t\"\nduration_ms = 400\nwarmup_ms = 0\nwindow_ms = 100\n\
                    [machine]\ncpus = 1\n[sched]\npolicy = \"rr\"\n\
                    [[domain]]\nname = \"w\"\ncount = 3\nworkload = \"cpu\"\n\
                    [[event]]\nat_ms = 155\ntarget = \"w1\"\naction = \"pause\"\n\
                    [[event]]\nat_ms = 155\ntarget = \"w2\"\naction = \"destroy\"\n";
        let spec = Spec::from_str(text, "t.toml").unwrap();
        for seed in 1..=4 {
            let out = run(&spec, &Options { seed, ..Options::default() }).unwrap();
            let records: Vec<Record> =
                out.jsonl().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(crate::windows::problems(&records), Vec::<String>::new(), "seed {seed}");
            let waited: u64 = out.domains.iter().map(|d| d.wait_ns).sum();
            assert!(waited > 100_000_000, "two of three hogs wait: {waited} ns");
            // No one fair share across a pause and a destroy (w2 would count 60% short).
            let s = &out.summary;
            assert_eq!((s.jain, s.share_err_max, s.window_jain.as_ref()), (None, None, None));
        }
    }
}
