//! `schedsim`: a deterministic discrete-event simulator that drives a policy through the
//! [`Policy`] trait on a modelled machine and writes docs/DESIGN.md's results records.
//!
//! The model, and why it is enough to compare policies:
//! - N CPUs; switching, IPIs and scheduling decisions cost no simulated time, so what the
//!   results show is the policy's decisions alone. A kick (IPI) is delivered at the instant
//!   it is sent, after the event that sent it.
//! - The simulator plays the kernel's part exactly as the trait's contract says: it calls
//!   `schedule` when a slice expires, when the running vCPU blocks or yields, and on kicks;
//!   `tick` every `tick_period_ns` on every CPU (ticks aligned to multiples of the period).
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
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;

use abi::tool::results::{self, Domain, Engine, Outcome, Record, Run, Summary, Window};

use crate::spec::{DomainPlan, Expect, Progress, Spec, starved};
use crate::summary::{self, DomainFigures, Fairness};
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
}

impl Output {
    /// The results as JSON lines (run, domains, windows, summary), records of `abi::tool::results`.
    pub fn jsonl(&self) -> String {
        let records = std::iter::once(Record::Run(self.run.clone()))
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
    /// Policy tick on a CPU.
    Tick(usize),
    /// A kick (IPI): reschedule.
    Kick(usize),
    /// A running vCPU reached its workload's next action, valid if the generation matches.
    Action(usize, u64),
    /// A sleeping vCPU wakes.
    Wake(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cpu,
    Latency { period: u64, run: u64, phase: u64 },
    Yield { tick: u64, before: u64, sleep: u64 },
    Io { burst: u64, block_mean: u64 },
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
    /// Exponential with the given mean (at least 1 ns).
    fn exp(&mut self, mean: u64) -> u64 {
        let u = ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-(u.ln()) * mean as f64) as u64).max(1)
    }
}

struct Sim<'a> {
    policy: Box<dyn Policy>,
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
    /// The policy's counters when the measured interval began.
    counters_t0: Option<BTreeMap<String, u64>>,
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
        if !self.cpus[cpu].kick_pending {
            self.cpus[cpu].kick_pending = true;
            let now = self.now;
            self.push(now, Ev::Kick(cpu));
        }
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
            self.acc[dom].work += self.clip(since, until);
            self.add_to_windows(dom, since, until, |w| &mut w.work);
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
        let now = self.now;
        let since = self.vcpus[v].since;
        self.account_run(v, cpu, now);
        let vc = &mut self.vcpus[v];
        if vc.need != u64::MAX {
            vc.need = vc.need.saturating_sub(now - since);
        }
        vc.epoch += 1;
        if vc.st == St::Running(cpu) {
            vc.st = St::Waiting;
        }
    }

    fn dispatch(&mut self, v: usize, cpu: usize) {
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
            self.acc[dom].lat.push(now - w);
        }
        if self.in_window(now) {
            self.acc[dom].switches += 1;
            if self.vcpus[v].last_cpu.is_some_and(|c| c != cpu) {
                self.acc[dom].migrations += 1;
            }
        }
        let kind = self.vcpus[v].kind;
        let vc = &mut self.vcpus[v];
        vc.last_cpu = Some(cpu);
        vc.st = St::Running(cpu);
        vc.since = now;
        vc.epoch += 1;
        let _ = kind;
        self.arm(v);
    }

    /// Schedules the running vCPU `v`'s next workload action.
    fn arm(&mut self, v: usize) {
        let now = self.now;
        let vc = &mut self.vcpus[v];
        vc.epoch += 1;
        if let Kind::Yield { tick, before, .. } = vc.kind {
            // The next point `before` ahead of a tick boundary, strictly in the future.
            let mut point = (now / tick + 1) * tick - before.min(tick - 1);
            if point <= now {
                point += tick;
            }
            vc.need = point - now;
        }
        if vc.need != u64::MAX {
            let (t, g) = (now.saturating_add(vc.need), vc.epoch);
            self.push(t, Ev::Action(v, g));
        }
    }

    fn schedule(&mut self, cpu: usize) {
        self.cpus[cpu].kick_pending = false;
        let d = self.policy.schedule(cpu, self.now);
        let next = d.next.map(|v| v.index());
        let prev = self.cpus[cpu].curr;
        if prev != next
            && let Some(p) = prev
            && let Some(c) = self.policy.context_saved(cpu, VcpuId(p as u32), self.now)
        {
            // Switches take no time here: the leaving vCPU is saved at once.
            self.kick(c);
        }
        if prev != next {
            if let Some(p) = prev {
                self.deschedule(p, cpu);
            } else {
                self.idle_ns += self.clip(self.cpus[cpu].since, self.now);
            }
            if let Some(n) = next {
                // A vCPU stolen from a CPU that has not yet switched away from it would be
                // on two CPUs at once (dispatch counts it).
                self.dispatch(n, cpu);
            }
            self.cpus[cpu].curr = next;
            self.cpus[cpu].since = self.now;
        }
        self.cpus[cpu].timer_gen += 1;
        if let Some(s) = d.slice_ns {
            let (t, g) = (self.now + s.max(1), self.cpus[cpu].timer_gen);
            self.push(t, Ev::Timer(cpu, g));
        }
    }

    fn wake(&mut self, v: usize) {
        let now = self.now;
        let dom = self.vcpus[v].dom;
        let vc = &mut self.vcpus[v];
        if vc.st != St::Asleep {
            return;
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
        let w = self.policy.wake(VcpuId(v as u32), now);
        if let Some(c) = w.kick {
            self.kick(c);
        }
    }

    /// The running vCPU `v` blocks until `until`.
    fn block(&mut self, v: usize, until: u64) {
        let now = self.now;
        if let Some(cpu) = self.policy.sleep(VcpuId(v as u32), now) {
            // Take it off the CPU right away, as a kernel does when its vCPU blocks.
            self.vcpus[v].st = St::Asleep;
            self.schedule(cpu);
        }
        self.vcpus[v].st = St::Asleep;
        self.vcpus[v].since = now;
        self.push(until, Ev::Wake(v));
    }

    fn action(&mut self, v: usize) {
        let now = self.now;
        let dom = self.vcpus[v].dom;
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
                    if let Some(cpu) = self.policy.yield_now(VcpuId(v as u32), now) {
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
        }
    }

    fn check_conservation(&mut self) {
        if !self.check_conservation || !self.in_window(self.now) {
            return;
        }
        let idle = self.cpus.iter().any(|c| c.curr.is_none());
        if idle && self.vcpus.iter().any(|v| v.st == St::Waiting) {
            self.viol.wasted_core += 1;
        }
    }
}

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
    let globals = spec.policy_globals();
    let globals: Vec<(&str, u64)> = globals.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let policy = registry::build(&spec.sched.policy, &topo, &globals)
        .map_err(|e| SimError(format!("{}: sched: {e}", spec.file)))?;
    let t0 = spec.warmup_ms * 1_000_000;
    let t1 = t0 + spec.duration_ms * 1_000_000;
    // Parking a capped vCPU, or an rtds vCPU without extra time that spent its budget, is
    // deliberate idling: no work-conservation check then. (A plan carries only the
    // parameters of the policy in force.)
    let capped = (plan.iter().any(|p| p.cap > 0) && policy.info().domain_param("cap").is_some())
        || plan.iter().flat_map(|p| &p.params).any(|(k, v)| k == "extratime" && *v == 0);
    let window_ns = opts
        .window_ns
        .or((spec.window_ms > 0).then(|| spec.window_ms * 1_000_000))
        .filter(|&w| w > 0);
    let nwin = window_ns.map_or(0, |w| (t1 - t0).div_ceil(w) as usize);
    let mut sim = Sim {
        policy,
        plan: &plan,
        vcpus: Vec::new(),
        cpus: (0..cpus)
            .map(|_| Cpu { curr: None, since: 0, timer_gen: 0, kick_pending: false })
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
        counters_t0: None,
    };
    for (i, p) in plan.iter().enumerate() {
        if hostile(p) {
            continue;
        }
        let params: Vec<(&str, u64)> = p.params.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        sim.policy
            .add_domain(DomainId(p.id), &params)
            .map_err(|e| SimError(format!("{}: domain {}: {e}", spec.file, p.name)))?;
        let kind = kind_of(p);
        for idx in 0..p.vcpus {
            let v = sim.vcpus.len();
            sim.policy
                .insert_vcpu(VcpuId(v as u32), DomainId(p.id), v % cpus)
                .map_err(|e| SimError(format!("{}: domain {}: {e}", spec.file, p.name)))?;
            let need = match kind {
                Kind::Cpu | Kind::Yield { .. } => u64::MAX,
                Kind::Latency { run, .. } => run,
                Kind::Io { burst, .. } => burst,
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
            });
            let start = match kind {
                Kind::Latency { phase, .. } => phase,
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
    if let Some(period) = sim.policy.tick_period_ns() {
        for c in 0..cpus {
            sim.push(period, Ev::Tick(c));
        }
    }
    while let Some(Reverse((t, _, ev))) = sim.events.pop() {
        if t >= t1 {
            break;
        }
        if t >= t0 && sim.counters_t0.is_none() {
            sim.counters_t0 = Some(policy_counters(sim.policy.as_ref()));
        }
        if t > sim.now {
            sim.check_conservation();
        }
        sim.now = t;
        match ev {
            Ev::Timer(c, g) => {
                if sim.cpus[c].timer_gen == g {
                    sim.schedule(c);
                }
            }
            Ev::Kick(c) => sim.schedule(c),
            Ev::Tick(c) => {
                let mut kicks = Vec::new();
                sim.policy.tick(c, t, &mut |k| kicks.push(k));
                for k in kicks {
                    sim.kick(k);
                }
                let period = sim.policy.tick_period_ns().unwrap_or(10_000_000);
                sim.push(t + period, Ev::Tick(c));
            }
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
            Ev::Wake(v) => sim.wake(v),
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
    let policy_info = sim.policy.info();
    let weighted = policy_info.domain_param("weight").is_some();
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
            pool: None,
            wake_lat_hist: Some(lat_hist(&a.lat)),
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
        })
        .collect();
    let Fairness { jain, share_err_max } =
        summary::fairness(&figures, spec.duration_ms * 1_000_000, weighted);
    let v = sim.viol;
    // The policy's counters over the measured interval.
    let start = sim.counters_t0.take().unwrap_or_default();
    let mut counters = policy_counters(sim.policy.as_ref());
    for (name, value) in &mut counters {
        *value = value.saturating_sub(start.get(name).copied().unwrap_or(0));
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
        window_jain: (!window_records.is_empty() && !window_jain.is_empty()).then_some(window_jain),
    };
    let shape = spec.machine.shape().ok();
    let run = Run {
        name: spec.name.clone(),
        engine: Engine::Schedsim,
        policy: spec.sched.policy.clone(),
        // The spec allows at most 255.
        cpus: u32::try_from(spec.machine.cpus).unwrap_or(u32::MAX),
        domains: plan.len() as u64,
        start_ns: None,
        wallclock_start_ns: None,
        dom0_cpu_ns: None,
        duration_ns: spec.duration_ms * 1_000_000,
        idle_ns: sim.idle_ns,
        warmup_ns: Some(spec.warmup_ms * 1_000_000),
        seed: Some(opts.seed),
        pools: None,
        sockets: shape.map(|sh| sh.sockets as u32),
        cores: shape.map(|sh| sh.cores as u32),
        threads: shape.map(|sh| sh.threads as u32),
        slice_late_hist: None,
        slice_late_p50_ns: None,
        slice_late_p99_ns: None,
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
        stats: sim.policy.stats(),
        windows: sim.windows.iter().map(|w| w.iter().map(|d| d.cpu_ns).collect()).collect(),
        window_records,
        trace,
        starved: starved_domains,
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
}
