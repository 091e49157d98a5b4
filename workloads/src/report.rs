//! Domain0's bookkeeping, as plain functions tested on the host: checking the plan, building
//! the create requests, the results records (docs/DESIGN.md "Results", typed in
//! `abi::tool::results`), and the verdict.
//!
//! Figures in a `domain` record are deltas over the measured interval (the snapshot after
//! minus the snapshot before), except the wake-up latency percentiles and histogram, which
//! the hypervisor keeps as a histogram it starts afresh at the interval's start snapshot
//! (`Sysctl::TakeSnapshotStart`), and which are taken as they are at the end.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use abi::control::{ArgSpec, DomainExit, DomainId, DomainInfo, Domctl, ResourceCounts};
use abi::control::{KICK_LATE_BUCKETS, KickLateHalves, kick_late_join};
use abi::control::{SLICE_LATE_BUCKETS, slice_late_bound_ns};
use abi::shared::{MAX_ARGS, MAX_VCPUS, NAME_BYTES};
use abi::tool::plan::{Expect, Plan, PlannedDomain};
use abi::tool::results::{self, Bench, Engine, Figure, Outcome, Record};

/// Longest argument name the shared-info page holds (`abi::shared::Arg::name`).
pub const ARG_NAME_BYTES: usize = 16;

/// One CPU's figures (`Sysctl::CpuStats`): the reply's own type.
pub use abi::control::CpuStats;

/// The frame allocator's counts (`Sysctl::FrameCounts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounts {
    pub free: u64,
    pub managed: u64,
}

/// A plan Domain0 cannot carry out; the message names the domain and the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad plan: {}", self.0)
    }
}

/// Checks one planned domain against what the ABI can carry.
pub fn validate(plan: &Plan<'_>, d: &PlannedDomain<'_>) -> Result<(), PlanError> {
    let bad =
        |field: &str, what: String| Err(PlanError(format!("domain `{}`: {field} {what}", d.name)));
    if d.name.is_empty() || d.name.len() > NAME_BYTES {
        return bad("name", format!("must be 1 to {NAME_BYTES} bytes"));
    }
    if d.workload.is_empty() {
        return bad("workload", "is empty".into());
    }
    if d.vcpus == 0 || d.vcpus as usize > MAX_VCPUS {
        return bad("vcpus", format!("is {}; allowed 1 to {MAX_VCPUS}", d.vcpus));
    }
    if d.memory_kib == 0 {
        return bad("memory_kib", "is 0".into());
    }
    if d.args_len as usize > MAX_ARGS {
        return bad(
            "args",
            format!("has {} entries; at most {MAX_ARGS}", d.args_len),
        );
    }
    let mut found = 0;
    for (name, _) in plan.args_of(d) {
        if name.is_empty() || name.len() > ARG_NAME_BYTES {
            return bad(
                "args",
                format!("name `{name}` must be 1 to {ARG_NAME_BYTES} bytes"),
            );
        }
        found += 1;
    }
    if found != d.args_len {
        return bad("args", "are malformed in the plan".into());
    }
    Ok(())
}

/// The `Domctl::Create` request for a planned domain.
pub fn create_request<'a>(plan: &Plan<'a>, d: &PlannedDomain<'a>) -> Domctl<'a> {
    let mut args = [ArgSpec::default(); MAX_ARGS];
    for (slot, (name, value)) in args.iter_mut().zip(plan.args_of(d)) {
        *slot = ArgSpec { name, value };
    }
    Domctl::Create {
        image: d.workload,
        name: d.name,
        vcpus: d.vcpus,
        memory_kib: d.memory_kib,
        sched: d.sched,
        args,
        pool: d.pool,
    }
}

/// A domain's `exit` field: `ok`, or `killed: <reason>`.
pub fn outcome(exit: DomainExit) -> Outcome {
    match exit {
        DomainExit::Running | DomainExit::Shutdown(0) => Outcome::Ok,
        DomainExit::Shutdown(code) => Outcome::Killed(format!("crashed (shutdown code {code})")),
        DomainExit::Killed(reason) => Outcome::Killed(reason.to_string()),
        DomainExit::Destroyed => Outcome::Killed("destroyed".into()),
    }
}

/// A domain's exit as its record says it: `ok`, or `killed: <reason>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitText(pub DomainExit);

impl fmt::Display for ExitText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        outcome(self.0).fmt(f)
    }
}

/// A domain that did not end as its `expect` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub expect: Expect,
    pub exit: DomainExit,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.expect, self.exit) {
            (Expect::Killed, DomainExit::Running) => {
                f.write_str("expected to be killed, but it is still running")
            }
            (Expect::Killed, DomainExit::Shutdown(0)) => {
                f.write_str("expected to be killed, but it shut down cleanly")
            }
            (Expect::Killed, exit) => {
                write!(
                    f,
                    "expected to be killed by the hypervisor, but ended {}",
                    ExitText(exit)
                )
            }
            (Expect::Ok, exit) => write!(f, "expected ok, but ended {}", ExitText(exit)),
        }
    }
}

/// Whether a domain ended as expected: `ok` means alive at the end or shut down cleanly;
/// `killed` means killed by the hypervisor (a crash shutdown is neither).
pub fn check(expect: Expect, exit: DomainExit) -> Result<(), Mismatch> {
    let met = match expect {
        Expect::Ok => matches!(exit, DomainExit::Running | DomainExit::Shutdown(0)),
        Expect::Killed => matches!(exit, DomainExit::Killed(_)),
    };
    if met {
        Ok(())
    } else {
        Err(Mismatch { expect, exit })
    }
}

/// One domain's part in the run: what was planned and the two snapshots.
#[derive(Clone, Debug)]
pub struct DomainRun<'a> {
    pub planned: PlannedDomain<'a>,
    pub id: DomainId,
    pub before: DomainInfo,
    pub after: DomainInfo,
    /// Its pool's name at the end (specs with `[[pool]]` only).
    pub pool: Option<String>,
}

/// One record as a line of the results file (without the newline): the JSON of
/// `abi::tool::results`, `kind` first.
pub fn line(r: &Record) -> String {
    // These types always encode (no maps, no non-string keys); should one ever fail, the
    // text is not an object, which the hypervisor refuses, and Domain0's verdict says so.
    serde_json::to_string(r).unwrap_or_else(|e| format!("cannot encode a {} record: {e}", r.kind()))
}

/// The `domain` record.
pub fn domain(r: &DomainRun<'_>) -> results::Domain {
    let (b, a) = (&r.before, &r.after);
    let d = |f: fn(&DomainInfo) -> u64| f(a).saturating_sub(f(b));
    results::Domain {
        id: r.id,
        name: r.planned.name.into(),
        group: r.planned.group.into(),
        workload: r.planned.workload.into(),
        vcpus: r.planned.vcpus,
        weight: u64::from(r.planned.weight),
        cap: u64::from(r.planned.cap),
        cpu_ns: d(|i| i.cpu_ns),
        wait_ns: d(|i| i.wait_ns),
        work: d(|i| i.work),
        wakeups: d(|i| i.wakeups),
        wake_lat_p50_ns: a.wake_lat_p50_ns,
        wake_lat_p99_ns: a.wake_lat_p99_ns,
        wake_lat_max_ns: a.wake_lat_max_ns,
        switches: d(|i| i.switches),
        migrations: d(|i| i.migrations),
        exit: outcome(a.exit),
        pool: r.pool.clone(),
        wake_lat_hist: Some(results::wake_lat_hist(
            a.wake_lat_hist.iter().map(|&n| u64::from(n)),
        )),
        timer_deadline_ns: Some(a.timer_deadline_ns).filter(|&t| t != 0),
    }
}

/// The `domain` record's line.
pub fn domain_record(r: &DomainRun<'_>) -> String {
    line(&Record::Domain(domain(r)))
}

/// What the `run` record says.
#[derive(Clone, Debug)]
pub struct RunSummary<'a> {
    pub name: &'a str,
    pub policy: &'a str,
    pub cpus: u32,
    /// The plan's machine shape: sockets, cores per socket, threads per core.
    pub shape: [u32; 3],
    /// Domains in the plan (Domain0 not counted).
    pub domains: usize,
    /// When the measured interval began (system time, as in the trace).
    pub start_ns: u64,
    /// The same instant as wall-clock time (ns since the Unix epoch, UTC).
    pub wallclock_start_ns: u64,
    /// Domain0's own CPU time (its virtual time) at the end of the interval.
    pub dom0_cpu_ns: u64,
    /// The measured interval as it actually was.
    pub duration_ns: u64,
    /// What every CPU reported over the interval.
    pub interval: CpuInterval,
    /// Every CPU pool as the hypervisor had them at the start (specs with `[[pool]]`).
    pub pools: Option<Vec<results::Pool>>,
}

/// What the CPUs' figures (`sysctl CpuStats`) say of an interval, summed over every CPU:
/// each the difference between a snapshot at its end and one at its start.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuInterval {
    /// Idle time.
    pub idle_ns: u64,
    /// Slices ended by the timer, by how late.
    pub slice_late: [u64; SLICE_LATE_BUCKETS],
    /// Kicks served, by how late: sent by another CPU, and by the CPU itself
    /// ([`cpu_hist`]).
    pub kick_late: [u64; KICK_LATE_BUCKETS],
    pub kick_local_late: [u64; KICK_LATE_BUCKETS],
    /// Of the kicks sent by another CPU, those for a wake-up.
    pub kick_wake_late: [u64; KICK_LATE_BUCKETS],
    /// Switches and `set_timer` hypercalls, by how long they took ([`cpu_hist`]).
    pub switch_time: [u64; KICK_LATE_BUCKETS],
    pub set_timer_time: [u64; KICK_LATE_BUCKETS],
    /// Of those, the ones that wrote the CPU's timer.
    pub switch_armed_time: [u64; KICK_LATE_BUCKETS],
    pub set_timer_armed_time: [u64; KICK_LATE_BUCKETS],
    /// Sleepers woken by their timers, by how late.
    pub timer_wake_late: [u64; KICK_LATE_BUCKETS],
}

impl CpuInterval {
    /// The interval between the snapshots `before` and `after` (one `CpuStats` per CPU,
    /// in the same order).
    pub fn between(before: &[CpuStats], after: &[CpuStats]) -> Self {
        CpuInterval {
            idle_ns: idle_ns(before, after),
            slice_late: slice_late(before, after),
            kick_late: cpu_hist(before, after, |c| &c.kick_late),
            kick_local_late: cpu_hist(before, after, |c| &c.kick_local_late),
            kick_wake_late: cpu_hist(before, after, |c| &c.kick_wake_late),
            switch_time: cpu_hist(before, after, |c| &c.switch_time),
            set_timer_time: cpu_hist(before, after, |c| &c.set_timer_time),
            switch_armed_time: cpu_hist(before, after, |c| &c.switch_armed_time),
            set_timer_armed_time: cpu_hist(before, after, |c| &c.set_timer_armed_time),
            timer_wake_late: cpu_hist(before, after, |c| &c.timer_wake_late),
        }
    }
}

/// The `run` record.
pub fn run(r: &RunSummary<'_>) -> results::Run {
    results::Run {
        start_ns: Some(r.start_ns),
        wallclock_start_ns: Some(r.wallclock_start_ns),
        dom0_cpu_ns: Some(r.dom0_cpu_ns),
        pools: r.pools.clone(),
        sockets: Some(r.shape[0]),
        cores: Some(r.shape[1]),
        threads: Some(r.shape[2]),
        slice_late_hist: r.interval.slice_late.iter().any(|&n| n > 0).then(|| {
            (0..SLICE_LATE_BUCKETS)
                .filter(|&k| r.interval.slice_late[k] > 0)
                .map(|k| {
                    (
                        slice_late_bound_ns(k).unwrap_or(u64::MAX),
                        r.interval.slice_late[k],
                    )
                })
                .collect()
        }),
        slice_late_p50_ns: slice_late_percentile(&r.interval.slice_late, 50),
        slice_late_p99_ns: slice_late_percentile(&r.interval.slice_late, 99),
        kick_late: results::kick_lateness(&r.interval.kick_late),
        kick_local_late: results::kick_lateness(&r.interval.kick_local_late),
        kick_wake_late: results::kick_lateness(&r.interval.kick_wake_late),
        switch_time: results::kick_lateness(&r.interval.switch_time),
        set_timer_time: results::kick_lateness(&r.interval.set_timer_time),
        switch_armed_time: results::kick_lateness(&r.interval.switch_armed_time),
        set_timer_armed_time: results::kick_lateness(&r.interval.set_timer_armed_time),
        timer_wake_late: results::kick_lateness(&r.interval.timer_wake_late),
        ..results::Run::new(
            r.name,
            Engine::Domino,
            r.policy,
            r.cpus,
            r.domains as u64,
            r.duration_ns,
            r.interval.idle_ns,
        )
    }
}

/// The upper bound (ns) of the bucket that holds the `p`th percentile of slice lateness
/// (u64::MAX for the last, unbounded bucket); `None` when no slice ended by the timer.
pub fn slice_late_percentile(counts: &[u64; SLICE_LATE_BUCKETS], p: u64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The smallest bucket whose cumulative count reaches p% of the total.
    let want = (total * p).div_ceil(100).max(1);
    let mut seen = 0;
    for (k, &n) in counts.iter().enumerate() {
        seen += n;
        if seen >= want {
            return Some(slice_late_bound_ns(k).unwrap_or(u64::MAX));
        }
    }
    None
}

/// One of the per-CPU histograms kept in halves (`KickLateHalves`: kicks served,
/// switches, `set_timer` hypercalls, by how long they took) over the interval, summed over
/// CPUs (pairs of before/after snapshots); `of` picks it, e.g. `|c| &c.kick_late`.
pub fn cpu_hist(
    before: &[CpuStats],
    after: &[CpuStats],
    of: fn(&CpuStats) -> &KickLateHalves,
) -> [u64; KICK_LATE_BUCKETS] {
    let mut sum = [0; KICK_LATE_BUCKETS];
    for (b, a) in before.iter().zip(after) {
        let (b, a) = (kick_late_join(of(b)), kick_late_join(of(a)));
        for (k, s) in sum.iter_mut().enumerate() {
            *s += a[k].saturating_sub(b[k]);
        }
    }
    sum
}

/// Slices ended late over the interval, summed over CPUs (pairs of before/after snapshots).
pub fn slice_late(before: &[CpuStats], after: &[CpuStats]) -> [u64; SLICE_LATE_BUCKETS] {
    let mut sum = [0; SLICE_LATE_BUCKETS];
    for (b, a) in before.iter().zip(after) {
        for (k, s) in sum.iter_mut().enumerate() {
            *s += a.slice_late[k].saturating_sub(b.slice_late[k]);
        }
    }
    sum
}

/// The `run` record's line.
pub fn run_record(r: &RunSummary<'_>) -> String {
    line(&Record::Run(run(r)))
}

/// A `bench` record's line (docs/DESIGN.md "Results"): `name`, an integer `value` in `unit`,
/// and the reference it is to be read against, if any (`floor`, in the same unit).
pub fn bench_record(name: &str, value: u64, unit: &str, floor: Option<u64>) -> String {
    line(&Record::Bench(Bench::new(
        name,
        Figure::Int(value),
        unit,
        floor.map(Figure::Int),
    )))
}

/// Nanoseconds per switch over an interval in which `cpus` CPUs were busy except for
/// `idle_ns`, and made `switches` switches between them.
pub fn ns_per_switch(cpus: u32, duration_ns: u64, idle_ns: u64, switches: u64) -> Option<u64> {
    let busy = (u64::from(cpus) * duration_ns).saturating_sub(idle_ns);
    (switches > 0).then(|| busy / switches)
}

/// Idle time over the interval, summed over CPUs (pairs of before/after snapshots).
pub fn idle_ns(before: &[CpuStats], after: &[CpuStats]) -> u64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.idle_ns.saturating_sub(b.idle_ns))
        .sum()
}

/// Whether every frame came back: the counts after destroying every domain must equal those
/// before the first was created.
pub fn check_frames(before: FrameCounts, after: FrameCounts) -> Result<(), String> {
    if before == after {
        Ok(())
    } else if before.managed != after.managed {
        Err(format!(
            "frames managed changed from {} to {}",
            before.managed, after.managed
        ))
    } else {
        let lost = before.free as i128 - after.free as i128;
        Err(format!(
            "frame leak: {lost} frames not returned ({} free before, {} after)",
            before.free, after.free
        ))
    }
}

/// The hypervisor's counts that must come back once every guest is gone: its heap, the
/// frame allocator's counts, and what the live domains hold (ports, grants, mappings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub heap_bytes: u64,
    pub frames: FrameCounts,
    pub resources: ResourceCounts,
}

impl Figures {
    /// Every count that differs from `base`, one line each (empty when all are back).
    pub fn differences(&self, base: &Figures) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(leak) = check_frames(base.frames, self.frames) {
            out.push(leak);
        }
        if self.heap_bytes != base.heap_bytes {
            let grew = self.heap_bytes as i128 - base.heap_bytes as i128;
            out.push(format!(
                "heap: {grew:+} bytes ({} in use before, {} after)",
                base.heap_bytes, self.heap_bytes
            ));
        }
        let (b, a) = (base.resources, self.resources);
        for (what, before, after) in [
            ("domains", b.domains, a.domains),
            ("vCPUs", b.vcpus, a.vcpus),
            ("event-channel ports in use", b.ports, a.ports),
            ("grants in use", b.grants, a.grants),
            ("grant mappings held", b.grant_maps, a.grant_maps),
        ] {
            if before != after {
                out.push(format!("{what}: {before} before, {after} after"));
            }
        }
        out
    }
}

/// The run's problems, one line each; none means exit status 0.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn fail(&mut self, problem: String) {
        self.problems.push(problem);
    }

    /// The machine's exit status (`abi::tool::console::ExitCode`): 0 if all went as expected.
    pub fn code(&self) -> u8 {
        if self.problems.is_empty() {
            abi::tool::console::ExitCode::Success as u8
        } else {
            abi::tool::console::ExitCode::Failure as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::control::{DomainState, KillReason, SchedParams};
    use abi::tool::plan::EncodedSeq;

    #[test]
    fn bench_records_name_their_floor() {
        assert_eq!(
            bench_record("null_hypercall", 310, "ns", Some(240)),
            r#"{"kind":"bench","name":"null_hypercall","value":310,"unit":"ns","floor":240}"#
        );
        assert_eq!(
            bench_record("create_128_domains", 9, "ms", None),
            r#"{"kind":"bench","name":"create_128_domains","value":9,"unit":"ms"}"#
        );
        let Record::Bench(b) = parse(&bench_record("null_hypercall", 310, "ns", Some(240))) else {
            panic!("not a bench record");
        };
        assert_eq!(
            (b.value, b.floor, b.unit.as_str()),
            (Figure::Int(310), Some(Figure::Int(240)), "ns")
        );
    }

    /// A line Domain0 wrote, read as every reader of the results reads it.
    fn parse(line: &str) -> Record {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn switch_cost_is_busy_time_over_switches() {
        assert_eq!(ns_per_switch(1, 1_000_000, 0, 1000), Some(1000));
        assert_eq!(ns_per_switch(2, 1_000_000, 1_000_000, 500), Some(2000));
        assert_eq!(ns_per_switch(1, 1_000_000, 0, 0), None);
    }

    fn planned(name: &'static str, args_start: u32, args_len: u32) -> PlannedDomain<'static> {
        PlannedDomain {
            name,
            group: "w",
            workload: "latency",
            vcpus: 1,
            memory_kib: 1024,
            sched: SchedParams::from_pairs([("weight", 512), ("cap", 50)]).unwrap(),
            weight: 512,
            cap: 50,
            expect: Expect::Ok,
            pool: 0,
            args_start,
            args_len,
        }
    }

    fn with_plan<R>(args: &[(&str, u64)], f: impl FnOnce(&Plan<'_>) -> R) -> R {
        let bytes = abi::tool::plan::encode_seq(args).unwrap();
        let plan = Plan {
            name: "t",
            duration_ms: 1000,
            warmup_ms: 100,
            cpus: 2,
            shape: [1, 2, 1],
            policy: "credit",
            domains: EncodedSeq {
                count: 0,
                bytes: &[],
            },
            args: EncodedSeq {
                count: args.len() as u32,
                bytes: &bytes,
            },
            bench: false,
            churn: None,
            window_ms: 0,
            events: EncodedSeq {
                count: 0,
                bytes: &[],
            },
            pools: 0,
        };
        f(&plan)
    }

    fn info(cpu_ns: u64, work: u64, exit: DomainExit) -> DomainInfo {
        DomainInfo {
            domain: 3,
            state: DomainState::Alive,
            exit,
            vcpus: 1,
            sched: SchedParams::default(),
            cpu_ns,
            wait_ns: cpu_ns / 2,
            work,
            wakeups: work,
            wake_lat_p50_ns: 1_000,
            wake_lat_p99_ns: 9_000,
            wake_lat_max_ns: 20_000,
            switches: work * 2,
            migrations: 1,
            frames: 300,
            wake_lat_hist: {
                let mut h = [0; abi::control::WAKE_LAT_BUCKETS];
                (h[0], h[3]) = (2, work as u32);
                h
            },
            timer_deadline_ns: 0,
        }
    }

    #[test]
    fn create_request_carries_the_domain_and_its_args() {
        with_plan(&[("x", 1), ("period_us", 500), ("run_us", 50)], |plan| {
            let d = planned("w0", 1, 2);
            assert_eq!(validate(plan, &d), Ok(()));
            let Domctl::Create {
                image,
                name,
                vcpus,
                sched,
                args,
                ..
            } = create_request(plan, &d)
            else {
                panic!("not a create request");
            };
            assert_eq!(
                (image, name, vcpus, sched.get("weight")),
                ("latency", "w0", 1, Some(512))
            );
            assert_eq!(
                args[0],
                ArgSpec {
                    name: "period_us",
                    value: 500
                }
            );
            assert_eq!(
                args[1],
                ArgSpec {
                    name: "run_us",
                    value: 50
                }
            );
            assert_eq!(args[2], ArgSpec::default());
        });
    }

    #[test]
    fn bad_plans_name_the_domain_and_field() {
        with_plan(&[("a_name_longer_than_16", 1)], |plan| {
            let e = validate(plan, &planned("w1", 0, 1)).unwrap_err();
            assert!(e.to_string().contains("`w1`: args"), "{e}");
            let mut d = planned("w2", 0, 0);
            d.vcpus = 0;
            let e = validate(plan, &d).unwrap_err();
            assert!(e.to_string().contains("`w2`: vcpus is 0"), "{e}");
            // Claims more args than the plan holds.
            let e = validate(plan, &planned("w3", 1, 1)).unwrap_err();
            assert!(e.to_string().contains("malformed"), "{e}");
            let e = validate(plan, &planned("w4", 0, 9)).unwrap_err();
            assert!(e.to_string().contains("at most 8"), "{e}");
        });
    }

    #[test]
    fn exit_texts() {
        let pf = KillReason::PageFault {
            addr: 0x3000_0000,
            rip: 0x401000,
        };
        let cases = [
            (DomainExit::Running, "ok"),
            (DomainExit::Shutdown(0), "ok"),
            (DomainExit::Shutdown(1), "killed: crashed (shutdown code 1)"),
            (
                DomainExit::Killed(pf),
                "killed: page fault at 0x30000000 (rip 0x401000)",
            ),
            (
                DomainExit::Killed(KillReason::PrivilegedInstruction { rip: 0x401234 }),
                "killed: privileged instruction at 0x401234",
            ),
            (DomainExit::Destroyed, "killed: destroyed"),
        ];
        for (exit, text) in cases {
            assert_eq!(ExitText(exit).to_string(), text);
        }
    }

    #[test]
    fn expectations() {
        let killed = DomainExit::Killed(KillReason::OutOfMemory);
        assert!(check(Expect::Ok, DomainExit::Running).is_ok());
        assert!(check(Expect::Ok, DomainExit::Shutdown(0)).is_ok());
        assert!(check(Expect::Ok, DomainExit::Shutdown(1)).is_err());
        assert!(check(Expect::Ok, killed).is_err());
        assert!(check(Expect::Killed, killed).is_ok());
        assert!(check(Expect::Killed, DomainExit::Shutdown(2)).is_err());
        let m = check(Expect::Killed, DomainExit::Running).unwrap_err();
        assert_eq!(
            m.to_string(),
            "expected to be killed, but it is still running"
        );
        let m = check(Expect::Ok, killed).unwrap_err();
        assert_eq!(
            m.to_string(),
            "expected ok, but ended killed: out of memory"
        );
    }

    #[test]
    fn domain_record_has_deltas_and_final_latencies() {
        let mut d = planned("w\"0", 0, 0);
        d.group = "w";
        let run = DomainRun {
            pool: None,
            planned: d,
            id: 7,
            before: info(1_000, 10, DomainExit::Running),
            after: info(5_000, 25, DomainExit::Running),
        };
        assert_eq!(
            domain_record(&run),
            concat!(
                r#"{"kind":"domain","id":7,"name":"w\"0","group":"w","workload":"latency","#,
                r#""vcpus":1,"weight":512,"cap":50,"cpu_ns":4000,"wait_ns":2000,"work":15,"#,
                r#""wakeups":15,"wake_lat_p50_ns":1000,"wake_lat_p99_ns":9000,"#,
                r#""wake_lat_max_ns":20000,"switches":30,"migrations":0,"exit":"ok","#,
                r#""wake_lat_hist":[[1024,2],[8192,25]]}"#
            )
        );
        assert_eq!(parse(&domain_record(&run)), Record::Domain(domain(&run)));
        let Record::Domain(d) = parse(&domain_record(&run)) else {
            panic!("not a domain record");
        };
        assert_eq!((d.name.as_str(), d.cpu_ns, d.work), ("w\"0", 4000, 15));
        // Every way a domain ends reads back as the contract's `exit`.
        for (exit, want) in [
            (DomainExit::Shutdown(0), Outcome::Ok),
            (
                DomainExit::Shutdown(3),
                Outcome::Killed("crashed (shutdown code 3)".into()),
            ),
            (
                DomainExit::Killed(KillReason::OutOfMemory),
                Outcome::Killed("out of memory".into()),
            ),
            (DomainExit::Destroyed, Outcome::Killed("destroyed".into())),
        ] {
            let mut r = run.clone();
            r.after.exit = exit;
            let Record::Domain(d) = parse(&domain_record(&r)) else {
                panic!("not a domain record");
            };
            assert_eq!(d.exit, want);
        }
    }

    #[test]
    fn run_record_and_idle_sum() {
        let cpu = |idle_ns| CpuStats {
            idle_ns,
            ..CpuStats::default()
        };
        let (b, a) = ([cpu(100), cpu(50)], [cpu(300), cpu(60)]);
        let idle = idle_ns(&b, &a);
        assert_eq!(idle, 210);
        assert_eq!(
            slice_late(&b, &a),
            [0; SLICE_LATE_BUCKETS],
            "no slice ended late"
        );
        let r = RunSummary {
            pools: None,
            name: "default",
            policy: "credit",
            cpus: 2,
            shape: [2, 1, 1],
            domains: 4,
            start_ns: 500,
            wallclock_start_ns: 1_795_701_909_000_000_000,
            dom0_cpu_ns: 42,
            duration_ns: 1_000_000,
            interval: CpuInterval::between(&b, &a),
        };
        assert_eq!(
            run_record(&r),
            concat!(
                r#"{"kind":"run","name":"default","engine":"domino","policy":"credit","#,
                r#""cpus":2,"domains":4,"start_ns":500,"wallclock_start_ns":1795701909000000000,"#,
                r#""dom0_cpu_ns":42,"duration_ns":1000000,"idle_ns":210,"sockets":2,"cores":1,"#,
                r#""threads":1}"#
            )
        );
        let Record::Run(back) = parse(&run_record(&r)) else {
            panic!("not a run record");
        };
        assert_eq!(back, run(&r));
        assert_eq!(
            (back.engine, back.start_ns, back.idle_ns),
            (Engine::Domino, Some(500), 210)
        );
    }

    #[test]
    fn slice_lateness_is_summed_over_cpus_and_read_as_percentiles() {
        let at = |counts: &[(usize, u64)]| {
            let mut s = CpuStats::default();
            for &(k, n) in counts {
                s.slice_late[k] = n;
            }
            s
        };
        // Two CPUs: 90 slices within 1 µs, 9 within 4 µs, one later than 32.8 ms.
        let before = [at(&[(0, 10)]), at(&[(2, 1)])];
        let after = [at(&[(0, 60), (2, 5)]), at(&[(0, 40), (2, 5), (16, 1)])];
        let late = slice_late(&before, &after);
        assert_eq!((late[0], late[2], late[16]), (90, 9, 1));
        assert_eq!(slice_late_percentile(&late, 50), Some(1000));
        assert_eq!(slice_late_percentile(&late, 99), Some(4000));
        assert_eq!(slice_late_percentile(&late, 100), Some(u64::MAX));
        assert_eq!(slice_late_percentile(&[0; SLICE_LATE_BUCKETS], 50), None);
    }

    /// A per-CPU histogram in halves with `count` in each `(bucket, count)`, zero elsewhere.
    fn halves(counts: &[(usize, u64)]) -> KickLateHalves {
        let mut h = [0; KICK_LATE_BUCKETS];
        for &(k, n) in counts {
            h[k] = n;
        }
        abi::control::kick_late_halves(&h)
    }

    #[test]
    fn switch_and_set_timer_times_are_summed_over_cpus_apart() {
        let at = |switch: &[(usize, u64)], timer: &[(usize, u64)]| CpuStats {
            switch_time: halves(switch),
            set_timer_time: halves(timer),
            ..CpuStats::default()
        };
        let before = [at(&[(20, 3)], &[(2, 1)]), at(&[], &[])];
        let after = [
            at(&[(20, 5), (50, 1)], &[(2, 4)]),
            at(&[(20, 2)], &[(40, 1)]),
        ];
        let s = cpu_hist(&before, &after, |c| &c.switch_time);
        let t = cpu_hist(&before, &after, |c| &c.set_timer_time);
        assert_eq!((s[20], s[50], s.iter().sum::<u64>()), (4, 1, 5));
        assert_eq!((t[2], t[40], t.iter().sum::<u64>()), (3, 1, 4));
    }

    #[test]
    fn kick_lateness_is_summed_over_cpus_by_kind() {
        let at = |remote: &[(usize, u64)], local: &[(usize, u64)]| CpuStats {
            kick_late: halves(remote),
            kick_local_late: halves(local),
            ..CpuStats::default()
        };
        let before = [at(&[(3, 1)], &[(0, 5)]), at(&[], &[])];
        let after = [at(&[(3, 4), (40, 2)], &[(0, 9)]), at(&[(3, 1)], &[(1, 7)])];
        let remote = cpu_hist(&before, &after, |c| &c.kick_late);
        let local = cpu_hist(&before, &after, |c| &c.kick_local_late);
        assert_eq!(
            (remote[3], remote[40], remote.iter().sum::<u64>()),
            (4, 2, 6)
        );
        assert_eq!((local[0], local[1], local.iter().sum::<u64>()), (4, 7, 11));
        let l = results::kick_lateness(&remote).unwrap();
        assert_eq!(l.hist.len(), 2);
        assert_eq!(l.p50_ns, abi::control::kick_late_bound_ns(3).unwrap());
    }

    #[test]
    fn frames_and_verdict() {
        let f = |free| FrameCounts {
            free,
            managed: 1000,
        };
        assert_eq!(check_frames(f(900), f(900)), Ok(()));
        let e = check_frames(f(900), f(897)).unwrap_err();
        assert!(e.contains("3 frames not returned"), "{e}");
        let mut v = Verdict::default();
        assert_eq!(v.code(), 0);
        v.fail("x".into());
        assert_eq!(v.code(), 1);
    }

    #[test]
    fn figures_name_every_count_that_did_not_come_back() {
        let base = Figures {
            heap_bytes: 40_000,
            frames: FrameCounts {
                free: 900,
                managed: 1000,
            },
            resources: ResourceCounts {
                domains: 1,
                vcpus: 1,
                ports: 1,
                grants: 0,
                grant_maps: 0,
            },
        };
        assert!(base.differences(&base).is_empty());
        let mut now = base;
        now.heap_bytes += 1_536; // one vCPU object, say
        now.resources.grants = 2;
        let d = now.differences(&base);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("+1536 bytes"), "{d:?}");
        assert!(d[1].contains("grants in use: 0 before, 2 after"), "{d:?}");
        now = base;
        now.heap_bytes -= 8;
        now.frames.free -= 1;
        now.resources.ports = 3;
        let d = now.differences(&base);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("1 frames not returned"), "{d:?}");
        assert!(d[1].contains("-8 bytes"), "{d:?}");
        assert!(d[2].contains("ports in use: 1 before, 3 after"), "{d:?}");
    }
}
