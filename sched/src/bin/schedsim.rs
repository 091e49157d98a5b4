//! `schedsim`: run an experiment spec through a policy on a simulated machine.
//!
//! `schedsim SPEC.toml [--out FILE] [--trace FILE] [--seed N] [--check] [--profile FILE]
//!  [--costs-from RESULTS.jsonl] [--slice-late-from RESULTS.jsonl]
//!  [--sched P] [--cpus N] [--domains N] [--workload W] [--seconds S] [--window-ms MS]
//! `schedsim --replay TRACE.json SPEC.toml [flags as above]`
//! `schedsim SPEC.toml --costs-from RESULTS.jsonl --stalls-from TRACE.json [flags as above]`
//! `schedsim --list-policies`
//!
//! Writes the results JSON lines of docs/DESIGN.md (default `results/<name>.schedsim.jsonl`),
//! prints a short table, and exits 0 if every domain ended as the spec expected, 1 if not
//! (or if the policy broke an invariant), 2 for a bad command line, spec or profile.
//!
//! `--profile FILE` (or `[sim] profile = "FILE"` in the spec; the flag wins) runs on a
//! machine with the costs of a profile from `scripts/calibrate` (`sched::cost`);
//! `--profile ideal`, or none, is the ideal machine (every cost zero).
//! `--costs-from RESULTS.jsonl` takes the delays that follow the host's load from a
//! hypervisor run's `run` record instead of the profile (`sched::cost::Profile::
//! with_measured`): each kick of another CPU is drawn from its `kick_late` histogram (the
//! profile's `kick_ns`, `kick_p99_ns` and `ipi_ns`), a wake-up's from `kick_wake_late` if
//! the run has it (the wake-ups' kicks alone: `with_wake_kicks`), each kick of a CPU by itself from
//! `kick_local_late` (`kick_ns`, `kick_p99_ns`), and each slice's lateness from
//! `slice_late_hist` (`slice_slack_ns`, `slice_slack_p99_ns`), each switch from
//! `switch_time` (`switch_cross_domain_ns`, `migration_ns`: the run counts switches between
//! domains or from idle only), and a
//! sleeper's `set_timer` before it blocks from `set_timer_time` (on its CPU, inside its run; `block_ns` after it),
//! and with `--timer-writes` those split by whether they wrote the CPU's timer, when the
//! run counted the ones that did (`switch_armed_time`, `set_timer_armed_time`: the
//! simulation then follows the hypervisor's rule for writing it,
//! `sched::cost::Profile::with_armed`; not the default, as the rule here puts writes at
//! far fewer of the hogs' switches than the hypervisor counts, sched/README.md); a
//! kind the run recorded none of keeps the profile's. The host's load during that run, for comparing with it.
//! A slice end is held by the host (drawn from the run's lateness of 256 µs or more) only if
//! it falls due within 200 µs of the machine's previous timer, as TCG holds them on an idle
//! host (`sched::cost::HOLD_AFTER_NS`; `--holds-after-fires`, the default since session 20:
//! docs/simvshyp.md, "Session 20"); `--holds-anywhere` draws each slice end's hold on its
//! own as it is armed, wherever it falls, as before.
//! And a guest's unit of work (`work_unit_ns`) from its `cpu` domains' `cpu_ns` per unit of
//! `work`. And the guest's own side of a switch between domains or from idle, which no
//! figure of the run records, fitted to the run's `latency` domains: schedsim simulates the
//! run, charges each such switch what its latency domains fell short of the run's CPU time
//! per wake-up, per switch in, and simulates again, up to six rounds
//! (`sched::cost::fit_guest_switch`; a domain switched in over 1.25 times a wake-up is left
//! out, and so is a run that held a fifth of its slice ends 256 µs or more; with `--replay`
//! fitted in simulations without the replay); the fit is the `run` record's `guest_switch_ns`;
//! `--no-guest-fit` leaves it out.
//! `--slice-late-from RESULTS.jsonl` takes the slices' alone.
//!
//! `--stalls-from TRACE.json` (with `--costs-from`, the same run's trace) plays what the
//! host did to the run's CPUs at its moments (the trace's `late` marks,
//! `sched::replay::HostStalls`) in place of lateness and stalls drawn at random: each CPU's
//! timer is held where the run's was (a slice end, tick or sleeper's timer due then fires
//! when it is let go) and each CPU stands still where the run's took an IPI late, and the
//! kicks, slice ends and sleepers' timers drawn from the run are drawn from their delays
//! below 256 µs (`sched::cost::STALL_FROM_NS`). With `--replay`, give the replayed
//! trace. Not the default: over three rounds of `latency.toml` on 2 CPUs under six
//! policies the latency domain's replayed p99 came out on target 9 times of 18, against 11
//! drawn at random (README, "What the host did, at its moments").
//!
//! `--replay TRACE.json`: the domains that woke up in a hypervisor trace (`scripts/run
//! --trace`) replay their recorded wake-ups and CPU bursts under the spec's policy instead
//! of running their workloads (`sched::replay`); results default to
//! `results/<name>.replay.jsonl`.
//!
//! `--list-policies` prints the registry (`sched::registry::ENTRIES`) as JSON lines, one
//! policy a line in registry order: `{"kind":"policy","name","summary","preempts",
//! "domain_params":[{"name","default","min","max","doc","choices"}],"global_params":[...]}`
//! (`choices`: the names of a parameter whose values are names, value `i` being
//! `choices[i]`; empty for a number). Scripts
//! that are not Rust (the sweeps, the plots) read the policies from it.

use std::process::ExitCode;

use sched::cost::{
    FIT_SWITCHES_PER_WAKE_MAX_PCT, Measured, STALL_FROM_NS, Stalls, WakeFigures, fit_guest_switch,
};
use sched::replay::HostStalls;
use sched::sim::{self, Options};
use sched::spec::{Overrides, Spec};

const USAGE: &str = "usage: schedsim SPEC.toml [--out FILE] [--trace FILE] [--seed N] [--check]
                [--profile FILE|ideal]
                [--costs-from RESULTS.jsonl [--timer-writes]
                               [--holds-after-fires|--holds-anywhere] [--no-guest-fit]]
                [--slice-late-from RESULTS.jsonl]
                [--replay TRACE.json] [--stalls-from TRACE.json]
                [--sched P] [--cpus N] [--domains N] [--workload W] [--seconds S]
                [--window-ms MS]
       schedsim --list-policies";

/// The registry as JSON lines (see the module doc).
fn list_policies() -> String {
    let params = |ps: &[sched::ParamSpec]| -> Vec<serde_json::Value> {
        ps.iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name, "default": p.default, "min": p.min, "max": p.max, "doc": p.doc,
                    "choices": p.choices,
                })
            })
            .collect()
    };
    let mut out = String::new();
    for info in sched::registry::policies() {
        let line = serde_json::json!({
            "kind": "policy",
            "name": info.name,
            "summary": info.summary,
            "preempts": info.preempts,
            "domain_params": params(info.domain_params),
            "global_params": params(info.global_params),
        });
        out += &(line.to_string() + "\n");
    }
    out
}

struct Args {
    spec: String,
    out: Option<String>,
    trace: Option<String>,
    seed: u64,
    check: bool,
    profile: Option<String>,
    replay: Option<String>,
    slice_late_from: Option<String>,
    costs_from: Option<String>,
    stalls_from: Option<String>,
    timer_writes: bool,
    /// `--no-guest-fit`: no guest side of a switch fitted to the run.
    no_guest_fit: bool,
    /// `--holds-anywhere` (true) or `--holds-after-fires` (false, the default), if given.
    holds_anywhere: Option<bool>,
    over: Overrides,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        spec: String::new(),
        out: None,
        trace: None,
        seed: 1,
        check: false,
        profile: None,
        replay: None,
        slice_late_from: None,
        costs_from: None,
        stalls_from: None,
        timer_writes: false,
        no_guest_fit: false,
        holds_anywhere: None,
        over: Overrides::default(),
    };
    let num = |flag: &str, v: Option<String>| -> Result<u64, String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: `{v}` is not a non-negative integer"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => a.out = Some(it.next().ok_or("--out needs a file")?),
            "--trace" => a.trace = Some(it.next().ok_or("--trace needs a file")?),
            "--seed" => a.seed = num("--seed", it.next())?,
            "--check" => a.check = true,
            "--replay" => a.replay = Some(it.next().ok_or("--replay needs a trace file")?),
            "--profile" => {
                a.profile = Some(it.next().ok_or("--profile needs a file (or `ideal`)")?)
            }
            "--slice-late-from" => {
                a.slice_late_from = Some(it.next().ok_or("--slice-late-from needs a results file")?)
            }
            "--costs-from" => {
                a.costs_from = Some(it.next().ok_or("--costs-from needs a results file")?)
            }
            "--stalls-from" => {
                a.stalls_from = Some(it.next().ok_or("--stalls-from needs a trace file")?)
            }
            "--timer-writes" => a.timer_writes = true,
            "--no-guest-fit" => a.no_guest_fit = true,
            "--holds-after-fires" | "--holds-anywhere" => {
                let anywhere = arg == "--holds-anywhere";
                if a.holds_anywhere.is_some_and(|h| h != anywhere) {
                    return Err("--holds-after-fires and --holds-anywhere: give one (the \
                                first is the default)"
                        .into());
                }
                a.holds_anywhere = Some(anywhere);
            }
            "--sched" => a.over.sched = Some(it.next().ok_or("--sched needs a policy name")?),
            "--cpus" => a.over.cpus = Some(num("--cpus", it.next())?),
            "--domains" => a.over.domains = Some(num("--domains", it.next())?),
            "--workload" => a.over.workload = Some(it.next().ok_or("--workload needs a name")?),
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a value")?;
                let s: f64 = v.parse().map_err(|_| format!("--seconds: `{v}` is not a number"))?;
                if !(s > 0.0 && s <= 3600.0) {
                    return Err(format!("--seconds: {v} is out of range; allowed: (0, 3600]"));
                }
                a.over.seconds = Some(s);
            }
            "--window-ms" => a.over.window_ms = Some(num("--window-ms", it.next())?),
            "--list-policies" => {
                print!("{}", list_policies());
                std::process::exit(0);
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown flag `{s}`")),
            s if a.spec.is_empty() => a.spec = s.to_string(),
            s => return Err(format!("unexpected argument `{s}` (one spec only)")),
        }
    }
    if a.spec.is_empty() {
        return Err("missing SPEC.toml".into());
    }
    if a.costs_from.is_some() && a.slice_late_from.is_some() {
        return Err(
            "--costs-from takes the slices' lateness too: give it or --slice-late-from, not both"
                .into(),
        );
    }
    if a.stalls_from.is_some() && a.costs_from.is_none() {
        return Err("--stalls-from plays a run's stalls beside the rest of its costs: give \
                    --costs-from RESULTS.jsonl (the same run's) too"
            .into());
    }
    if let (Some(anywhere), None) = (a.holds_anywhere, &a.costs_from) {
        let flag = if anywhere { "--holds-anywhere" } else { "--holds-after-fires" };
        return Err(format!(
            "{flag} places the held slice ends of --costs-from RESULTS.jsonl: give that too"
        ));
    }
    if a.no_guest_fit && a.costs_from.is_none() {
        return Err("--no-guest-fit leaves out what --costs-from RESULTS.jsonl fits: give that \
                    too"
        .into());
    }
    if a.timer_writes && a.costs_from.is_none() {
        return Err(
            "--timer-writes splits the switches of --costs-from RESULTS.jsonl: give that too"
                .into(),
        );
    }
    Ok(a)
}

/// What `--costs-from` (or `--slice-late-from`) takes from a hypervisor run's `run` record.
struct RunCosts {
    kick_remote: Option<Measured>,
    /// Of those, the kicks for a wake-up (`kick_wake_late`, in runs since session 21).
    kick_wake: Option<Measured>,
    kick_local: Option<Measured>,
    slice: Option<Measured>,
    /// The CPUs' stalls, from the slices ended late (`sched::cost::Stalls::split`).
    stalls: Option<Stalls>,
    /// How long switches and `set_timer` hypercalls took (`switch_time`, `set_timer_time`).
    switch: Option<Measured>,
    set_timer: Option<Measured>,
    /// The same split by whether they wrote the CPU's timer, `(kept, wrote)`: a run's
    /// `switch_armed_time` and `set_timer_armed_time` are those that wrote it (counted in
    /// `switch_time` and `set_timer_time` too).
    switch_split: (Option<Measured>, Option<Measured>),
    set_timer_split: (Option<Measured>, Option<Measured>),
    /// How late sleepers' timers woke them (`timer_wake_late`).
    wake_late: Option<Measured>,
    /// The other load on the host during the run, thousandths of a core (the `exit`
    /// record's `host_other_load`).
    host_load: Option<u64>,
    /// Each domain's last timer deadline, by name (its `domain` record's
    /// `timer_deadline_ns`): the phase of a `latency` domain's wake-ups ...
    timer_deadlines: std::collections::BTreeMap<String, u64>,
    /// ... on the run's clock, from when it began measuring (the `run` record's `start_ns`).
    measured_at: Option<u64>,
    /// A guest's unit of work on that machine: the median over the run's `cpu` domains of
    /// `cpu_ns` per unit of `work` (`sched::cost::Profile::work_unit_ns`).
    work_unit: Option<u64>,
    /// Its `latency` domains' CPU time, wake-ups and switches, which the guest's side of a
    /// switch is fitted to (`sched::cost::fit_guest_switch`) ...
    latency: Vec<WakeFigures>,
    /// ... unless this share of its slice ends came [`STALL_FROM_NS`] late or later.
    stalled: f64,
}

impl RunCosts {
    /// The costs with the run's stalls taken out, for playing them at their moments
    /// (`--stalls-from`): kicks, slice ends and sleepers' timers below a stall, no stalls
    /// drawn at random. Switches and `set_timer`s keep theirs: a stall inside one holds up
    /// no interrupt unless one falls due there, so the trace seldom marks it.
    fn below_stalls(self) -> RunCosts {
        let below = |m: Option<Measured>| m.and_then(|m| m.below(STALL_FROM_NS));
        RunCosts {
            kick_remote: below(self.kick_remote),
            kick_wake: below(self.kick_wake),
            kick_local: below(self.kick_local),
            slice: below(self.slice),
            stalls: None,
            wake_late: below(self.wake_late),
            ..self
        }
    }
}

/// `all`'s buckets less `part`'s (a subset of them, counted in the same buckets), bucket by
/// bucket.
fn less(all: &[Bucket], part: &[Bucket]) -> Vec<Bucket> {
    all.iter()
        .map(|&(lo, hi, n)| {
            let p: u64 = part.iter().filter(|b| b.1 == hi).map(|b| b.2).sum();
            (lo, hi, n.saturating_sub(p))
        })
        .collect()
}

/// A histogram and the part of it that wrote the timer, as `(kept, wrote)`; none if the
/// run did not split it (`wrote` absent: a run from before the split).
fn split(
    all: &Option<Vec<Bucket>>,
    wrote: Option<Vec<Bucket>>,
) -> (Option<Measured>, Option<Measured>) {
    match (all, wrote) {
        (Some(all), Some(wrote)) => (Measured::new(less(all, &wrote)), Measured::new(wrote)),
        _ => (None, None),
    }
}

/// A histogram bucket: `(lower, upper, count)`.
type Bucket = (u64, u64, u64);

/// The buckets of a `run` record's histogram `[[upper_bound_ns, count], ...]` as
/// `(lower, upper, count)`: `lower_of` gives a bucket's lower end from its upper bound
/// (`None`: no bucket of that layout), `last` the least a bucket open above (u64::MAX) holds.
fn bucket_list(
    path: &str,
    key: &str,
    hist: &serde_json::Value,
    lower_of: impl Fn(u64) -> Option<u64>,
    last: u64,
) -> Result<Option<Vec<Bucket>>, String> {
    let Some(hist) = hist.as_array() else { return Ok(None) };
    let mut out = Vec::new();
    for b in hist {
        let (Some(upper), Some(n)) = (b[0].as_u64(), b[1].as_u64()) else {
            return Err(format!("{path}: `{key}`: `{b}` is not [upper_bound_ns, count]"));
        };
        let lower = if upper == u64::MAX {
            last
        } else {
            lower_of(upper)
                .ok_or(format!("{path}: `{key}`: {upper} is not a bucket bound of its layout"))?
        };
        out.push((lower, upper, n));
    }
    Ok(Some(out))
}

/// A hypervisor run's measured kick and slice lateness (its `run` record's `kick_late`,
/// `kick_local_late`, `slice_late_hist`), each absent if the run recorded none of it.
fn run_costs(path: &str) -> Result<RunCosts, String> {
    use abi::control::{
        KICK_LATE_BUCKETS, SLICE_LATE_BUCKETS, kick_late_bound_ns, kick_late_bucket_of_bound,
        slice_late_bound_ns, slice_late_bucket,
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let records: Vec<serde_json::Value> =
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let of_kind = |kind: &str| records.iter().find(|r| r["kind"] == kind);
    let run = of_kind("run")
        .ok_or(format!("{path}: no `run` record (a results file of scripts/run is needed)"))?;
    let kick_lower = |upper: u64| {
        kick_late_bucket_of_bound(upper).map(|k| {
            k.checked_sub(1).map_or(0, |j| kick_late_bound_ns(j).expect("a bucket below the last"))
        })
    };
    let kick_last = kick_late_bound_ns(KICK_LATE_BUCKETS - 2).expect("the last finite bucket");
    let kick_list = |key: &str| bucket_list(path, key, &run[key]["hist"], kick_lower, kick_last);
    let kick = |key: &str| kick_list(key).map(|l| l.and_then(Measured::new));
    let slice_lower = |upper: u64| {
        let k = slice_late_bucket(upper);
        (slice_late_bound_ns(k) == Some(upper))
            .then(|| k.checked_sub(1).map_or(0, |j| slice_late_bound_ns(j).unwrap_or(0)))
    };
    let slice_last =
        slice_late_bound_ns(SLICE_LATE_BUCKETS - 2).expect("the last finite slice bucket");
    let slices =
        bucket_list(path, "slice_late_hist", &run["slice_late_hist"], slice_lower, slice_last)?;
    let count =
        |from: u64| -> u64 { slices.iter().flatten().filter(|b| b.0 >= from).map(|b| b.2).sum() };
    let stalled = count(STALL_FROM_NS) as f64 / count(0).max(1) as f64;
    let (switch_all, set_timer_all) = (kick_list("switch_time")?, kick_list("set_timer_time")?);
    let switch_split = split(&switch_all, kick_list("switch_armed_time")?);
    let set_timer_split = split(&set_timer_all, kick_list("set_timer_armed_time")?);
    let (switch, set_timer) =
        (switch_all.and_then(Measured::new), set_timer_all.and_then(Measured::new));
    // The stalls inside switches and set_timer hypercalls are played out there: the share
    // of the CPUs' time they took is taken off the stalls that begin at random.
    let cpu_time = run["duration_ns"].as_f64().unwrap_or(0.0) * run["cpus"].as_f64().unwrap_or(0.0);
    let in_paths: f64 = [&switch, &set_timer]
        .into_iter()
        .flatten()
        .map(|m| m.total_from(sched::cost::STALL_FROM_NS))
        .sum();
    let share = if cpu_time > 0.0 { in_paths / cpu_time } else { 0.0 };
    let stalls = slices.as_deref().and_then(|b| Stalls::split(b).1).and_then(|s| s.without(share));
    Ok(RunCosts {
        kick_remote: kick("kick_late")?,
        kick_wake: kick("kick_wake_late")?,
        kick_local: kick("kick_local_late")?,
        slice: slices.and_then(Measured::new),
        stalls,
        switch,
        set_timer,
        switch_split,
        set_timer_split,
        wake_late: kick("timer_wake_late")?,
        host_load: of_kind("exit")
            .and_then(|r| r["host_other_load"].as_f64())
            .map(|l| (l.max(0.0) * 1000.0).round() as u64),
        timer_deadlines: records
            .iter()
            .filter(|r| r["kind"] == "domain")
            .filter_map(|r| {
                Some((r["name"].as_str()?.to_string(), r["timer_deadline_ns"].as_u64()?))
            })
            .collect(),
        measured_at: run["start_ns"].as_u64(),
        work_unit: work_unit(&records),
        stalled,
        latency: records
            .iter()
            .filter(|r| r["kind"] == "domain" && r["workload"] == "latency")
            .filter_map(|r| {
                Some(WakeFigures {
                    name: r["name"].as_str()?.to_string(),
                    cpu_ns: r["cpu_ns"].as_u64()?,
                    wakeups: r["wakeups"].as_u64()?,
                    switches: r["switches"].as_u64()?,
                })
            })
            .collect(),
    })
}

/// How many times the guest's side of a switch is fitted to a run, a simulation each. After
/// six, the 1- and 2-CPU points of session 24's sweep fell short by at most a few µs per
/// switch.
const GUEST_FIT_ROUNDS: usize = 6;

/// The guest's side of a switch is not fitted to a run that held this share of its slice
/// ends or more 256 µs or longer (its CPUs' stalls, [`STALL_FROM_NS`]): such a run (more
/// emulated CPUs than host cores: 30-73% of the runs with a latency domain on 4 CPUs of 2
/// cores in session 24's sweep, at most 11.5% on 1 and 2) charged its vCPUs the host's
/// stalls, which schedsim draws at random and deals to an idle-most-of-the-time latency
/// domain far more often than the host did (sched/README.md), and its domains' CPU time per
/// wake-up measures those. With `--stalls-from` too (the stalls at their moments): the run's
/// CPU times hold them just the same.
const FIT_STALLED_MAX: f64 = 0.2;

/// The `latency` domains of a simulation's results, as [`fit_guest_switch`] takes them.
fn latency_figures(out: &sim::Output) -> Vec<WakeFigures> {
    out.domains
        .iter()
        .filter(|d| d.workload == "latency")
        .map(|d| WakeFigures {
            name: d.name.clone(),
            cpu_ns: d.cpu_ns,
            wakeups: d.wakeups,
            switches: d.switches,
        })
        .collect()
}

/// The median over a results file's `cpu` domains that did work of `cpu_ns` per unit of
/// `work` (a hog counts units of `workloads::work`, about 13 µs natively and 18 µs under
/// TCG on the build machines), if any.
fn work_unit(records: &[serde_json::Value]) -> Option<u64> {
    let mut per_unit: Vec<u64> = records
        .iter()
        .filter(|r| r["kind"] == "domain" && r["workload"] == "cpu")
        .filter_map(|r| {
            let (cpu, work) = (r["cpu_ns"].as_u64()?, r["work"].as_u64()?);
            (work > 0).then(|| cpu / work)
        })
        .collect();
    per_unit.sort_unstable();
    per_unit.get(per_unit.len() / 2).copied()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("schedsim: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let spec = Spec::read(&args.spec).and_then(|mut s| {
        s.apply_overrides(&args.over);
        s.validate()?;
        Ok(s)
    });
    let spec = match spec {
        Ok(s) => s,
        Err(e) => {
            eprintln!("schedsim: {e}");
            return ExitCode::from(2);
        }
    };
    let profile_path = args.profile.clone().or_else(|| spec.profile_path());
    let costs = match profile_path.as_deref().map(sched::cost::Profile::load) {
        None => sched::cost::Profile::ideal(),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("schedsim: {e}");
            return ExitCode::from(2);
        }
    };
    let (flag, from) = match (&args.costs_from, &args.slice_late_from) {
        (Some(f), _) => ("--costs-from", Some(f.clone())),
        (None, f) => ("--slice-late-from", f.clone()),
    };
    let measured = match from.as_deref().map(run_costs).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("schedsim: {flag} {e}");
            return ExitCode::from(2);
        }
    };
    let none_of = match (&measured, args.costs_from.is_some()) {
        (Some(m), true)
            if m.kick_remote.is_none() && m.kick_local.is_none() && m.slice.is_none() =>
        {
            Some("kick_late, kick_local_late or slice_late_hist")
        }
        (Some(m), false) if m.slice.is_none() => Some("slice_late_hist"),
        _ => None,
    };
    if let (Some(what), Some(f)) = (none_of, &from) {
        eprintln!(
            "schedsim: {flag} {f}: the run record has no {what} (a hypervisor run's; schedsim's \
             have none)"
        );
        return ExitCode::from(2);
    }
    let replay = match args.replay.as_deref().map(sched::replay::Replay::load).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("schedsim: --replay {e}");
            return ExitCode::from(2);
        }
    };
    // What the host did to the run's CPUs, at its moments (--stalls-from).
    let host_stalls = match args.stalls_from.as_deref().map(HostStalls::load).transpose() {
        Ok(h) => h.map(|h| (args.stalls_from.clone().unwrap_or_default(), h)),
        Err(e) => {
            eprintln!("schedsim: --stalls-from {e}");
            return ExitCode::from(2);
        }
    };
    // Played at their moments, the stalls leave the delays drawn from the run only what is
    // shorter than a stall.
    let measured = match (measured, &host_stalls) {
        (Some(m), Some(_)) => Some(m.below_stalls()),
        (m, _) => m,
    };
    let costs = match &measured {
        None => costs,
        Some(m) if args.costs_from.is_some() => costs
            .with_measured(m.kick_remote.clone(), m.kick_local.clone(), m.slice.clone())
            .with_wake_kicks(m.kick_wake.clone())
            .with_stalls(m.stalls.clone())
            .with_wake_late(m.wake_late.clone())
            .with_host_load(m.host_load)
            .with_paths(m.switch.clone(), m.set_timer.clone())
            .with_armed(
                if args.timer_writes { m.switch_split.clone() } else { (None, None) },
                if args.timer_writes { m.set_timer_split.clone() } else { (None, None) },
            )
            .with_holds_after_fires(args.holds_anywhere != Some(true))
            .with_work_unit(m.work_unit),
        Some(m) => costs.with_measured(None, None, m.slice.clone()),
    };
    if args.check {
        println!("{}: ok ({} domains, policy {})", args.spec, spec.plan().len(), spec.sched.policy);
        return ExitCode::SUCCESS;
    }
    let ideal = costs.is_ideal();
    let described = |what: &str, m: &Option<Measured>| {
        m.as_ref().map(|m| {
            format!(
                "{what} {} (p50 <= {} ns, p99 <= {} ns)",
                m.count(),
                m.percentile(50),
                m.percentile(99)
            )
        })
    };
    let measured_note = from.as_ref().map(|f| {
        let parts: Vec<String> = [
            described("kicks of another CPU", &costs.kick_remote_measured),
            described("of them for a wake-up", &costs.kick_wake_measured),
            described("kicks of a CPU by itself", &costs.kick_local_measured),
            described("slice ends", &costs.slice_measured),
            described("switches", &costs.switch_measured),
            described("set_timer hypercalls", &costs.set_timer_measured),
            described("switches that wrote the timer", &costs.switch_wrote_measured),
            described("set_timer hypercalls that wrote it", &costs.set_timer_wrote_measured),
            described("sleepers' timers late", &costs.wake_measured),
            measured
                .as_ref()
                .and_then(|m| m.work_unit)
                .filter(|_| args.costs_from.is_some())
                .map(|ns| format!("a unit of work {ns} ns")),
            costs.stalls.as_ref().map(|s| {
                format!(
                    "CPU stalls of p50 <= {} ns every {} ns on average",
                    s.lengths.percentile(50),
                    s.mean_gap_ns + s.lengths.mean() as u64
                )
            }),
            host_stalls.as_ref().map(|(file, h)| {
                let ms = |spans: &[sched::replay::Stall]| spans.iter().map(|s| s.2).sum::<u64>() / 1_000_000;
                format!(
                    "at their moments, the {} spans of a CPU's timer held ({} ms in all) and the {} CPU stalls ({} ms) {file} marks",
                    h.timers.len(),
                    ms(&h.timers),
                    h.stalls.len(),
                    ms(&h.stalls)
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        let parts = if parts.is_empty() { vec!["none recorded".to_string()] } else { parts };
        format!("delays drawn from {f}: {}", parts.join("; "))
    });
    let name = costs.name.clone();
    let replayed = replay.as_ref().map(|r| (r.file.clone(), r.vcpus.len()));
    let from_run = measured.as_ref().filter(|_| args.costs_from.is_some());
    // What of the run's clock schedsim keeps (`--costs-from`).
    let clock_note = from_run.map(|m| {
        let at = m.measured_at.map_or(
            "its measured interval at the warm-up's end (the run \
            record has no start_ns)"
                .to_string(),
            |t| {
                format!(
                    "the run's clock, its measured interval from {:.3} ms of system time",
                    t as f64 / 1e6
                )
            },
        );
        let named: Vec<&str> = m.timer_deadlines.keys().map(String::as_str).collect();
        let phase = if named.is_empty() {
            "no timer deadlines in the run (a latency domain wakes at schedsim's own phase)".into()
        } else {
            format!("a latency domain's phase from its last timer deadline: {}", named.join(", "))
        };
        format!("{at}; {phase}")
    });
    let mut opts = Options {
        seed: args.seed,
        trace: args.trace.is_some(),
        window_ns: None,
        costs,
        replay,
        host_stalls: host_stalls.map(|h| h.1),
        // The phase of the run's periodic domains, on its clock (`--costs-from`).
        timer_deadlines: from_run.map(|m| m.timer_deadlines.clone()).unwrap_or_default(),
        run_measured_at: from_run.and_then(|m| m.measured_at),
    };
    // The guest's own side of a switch, fitted to the run's latency domains (`--costs-from`),
    // for a run that has some (nothing to fit to otherwise, and none is charged), in
    // simulations of the run without its replay (`--replay`): a replayed burst is a traced
    // run, which holds it, and the fit is then charged to the vCPUs that run their
    // workloads (a replay's yield attackers, whose clock reads after a switch-in it delays).
    let fit_from = from_run.filter(|m| !args.no_guest_fit && !m.latency.is_empty());
    let not_fitted = |why: String| format!("the guest's side of a switch not fitted: {why}");
    let mut guest_note = fit_from.filter(|m| m.stalled >= FIT_STALLED_MAX).map(|m| {
        not_fitted(format!(
            "{:.0}% of the run's slice ends came {} µs or more late (its CPUs stalled by the \
             host, which its CPU times hold; fitted below {:.0}%)",
            m.stalled * 100.0,
            STALL_FROM_NS / 1000,
            FIT_STALLED_MAX * 100.0
        ))
    });
    let fitting = fit_from.filter(|m| m.stalled < FIT_STALLED_MAX);
    let replay_after = if fitting.is_some() { opts.replay.take() } else { None };
    let simulate = |opts: &Options| {
        sim::run(&spec, opts).map_err(|e| {
            eprintln!("schedsim: {e}");
            ExitCode::from(2)
        })
    };
    let mut out = match simulate(&opts) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if let Some(m) = fitting {
        let names: Vec<&str> = m.latency.iter().map(|d| d.name.as_str()).collect();
        let names = names.join(", ");
        // Signed: less than the profile charges is taken off its `block_ns`.
        let (profile, mut fitted) = (opts.costs.clone(), None::<i64>);
        let mut short = fit_guest_switch(&m.latency, &latency_figures(&out));
        // Each round corrects the fit by what the last fell short (a longer switch-in moves
        // when the domain is preempted, and so how often it is switched in), and once one
        // fit fell short and another overshot, halves the span between them: under rtds a
        // longer switch-in overruns the 100 µs budget more often, each overrun a switch in
        // more, and on a loaded host the corrections swung by tens of µs about the fit. The
        // round that came closest is kept.
        let (mut under, mut over) = (None::<i64>, None::<i64>);
        let mut best: Option<(u64, i64, Option<i64>, sim::Output)> = None;
        for _ in 0..GUEST_FIT_ROUNDS {
            let Some(s) = short else { break };
            let at = fitted.unwrap_or(0);
            match s.signum() {
                1 => under = Some(at),
                -1 => over = Some(at),
                _ => break,
            }
            let next = match (under, over) {
                (Some(u), Some(o)) => u + (o - u) / 2,
                _ => at + s,
            }
            .clamp(-(profile.block_ns as i64), sched::cost::MAX_NS as i64);
            if next == at {
                break; // no closer: the same simulation again
            }
            fitted = Some(next);
            opts.costs = profile.with_guest_switch(next);
            out = match simulate(&opts) {
                Ok(o) => o,
                Err(code) => return code,
            };
            short = fit_guest_switch(&m.latency, &latency_figures(&out));
            if let Some(s) = short
                && best.as_ref().is_none_or(|b| s.unsigned_abs() < b.0)
            {
                best = Some((s.unsigned_abs(), next, short, out.clone()));
            }
        }
        if let Some((_, ns, s, o)) = best.filter(|b| Some(b.1) != fitted) {
            (fitted, short, out) = (Some(ns), s, o);
            opts.costs = profile.with_guest_switch(ns);
        }
        let max = FIT_SWITCHES_PER_WAKE_MAX_PCT as f64 / 100.0;
        guest_note = Some(match fitted {
            Some(ns) => format!(
                "the guest's side of a switch between domains {ns:+} ns beside the profile's \
                 (its block_ns {} ns), fitted to the CPU time per wake-up of the latency \
                 domains ({names}{}; {} after the fit)",
                profile.block_ns,
                if replay_after.is_some() {
                    " in simulations of the run without its replay; not charged to a \
                     replayed burst"
                } else {
                    ""
                },
                short.map_or("none left to compare".into(), |s| format!(
                    "short by {s} ns per switch"
                )),
            ),
            None => not_fitted(format!(
                "no latency domain of the run ({names}) woke and was switched in at most {max} \
                 times a wake-up"
            )),
        });
    }
    if replay_after.is_some() {
        opts.replay = replay_after;
        out = match simulate(&opts) {
            Ok(o) => o,
            Err(code) => return code,
        };
    }
    let suffix = if replayed.is_some() { "replay" } else { "schedsim" };
    let path = args.out.unwrap_or_else(|| format!("results/{}.{suffix}.jsonl", spec.name));
    let write = |path: &str, text: &str| -> Result<(), String> {
        if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))
    };
    if let Err(e) = write(&path, &out.jsonl()) {
        eprintln!("schedsim: cannot write results: {e}");
        return ExitCode::from(1);
    }
    if let (Some(tpath), Some(trace)) = (&args.trace, &out.trace)
        && let Err(e) = write(tpath, trace)
    {
        eprintln!("schedsim: cannot write trace: {e}");
        return ExitCode::from(1);
    }
    print_table(&out);
    if let Some((file, n)) = &replayed {
        println!(
            "replayed: the arrivals in {file} ({n} vCPU(s) woke up in it; those of cpu domains, and of yield domains that never sleep, run their workloads)"
        );
    }
    if !ideal {
        println!("cost profile: {name} ({})", profile_path.as_deref().unwrap_or("ideal"));
    }
    for note in [&measured_note, &clock_note, &guest_note].into_iter().flatten() {
        println!("{note}");
    }
    println!("results: {path}");
    if out.summary.violations > 0 {
        eprintln!("schedsim: the policy broke an invariant: {:?}", out.violations);
        return ExitCode::from(1);
    }
    for why in &out.starved {
        eprintln!("schedsim: {why}");
    }
    if out.exit_code() != 0 {
        eprintln!("schedsim: a domain did not end as the spec expected");
    }
    ExitCode::from(out.exit_code() as u8)
}

fn print_table(out: &sim::Output) {
    let r = &out.run;
    println!(
        "{} [schedsim] policy={} cpus={} domains={} duration={} ms",
        r.name,
        r.policy,
        r.cpus,
        r.domains,
        r.duration_ns / 1_000_000
    );
    println!(
        "{:<12} {:<8} {:>6} {:>10} {:>8} {:>10} {:>10} {:>6}  exit",
        "domain", "workload", "weight", "cpu_ms", "share%", "work", "p99_us", "migr"
    );
    let total: u64 = out.domains.iter().map(|d| d.cpu_ns).sum::<u64>().max(1);
    for d in &out.domains {
        println!(
            "{:<12} {:<8} {:>6} {:>10.1} {:>8.2} {:>10} {:>10.1} {:>6}  {}",
            d.name,
            d.workload,
            d.weight,
            d.cpu_ns as f64 / 1e6,
            100.0 * d.cpu_ns as f64 / total as f64,
            d.work,
            d.wake_lat_p99_ns as f64 / 1e3,
            d.migrations,
            d.exit
        );
    }
    let s = &out.summary;
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "jain={} share_err_max={} idle_ms={:.1} work_total={}",
        f(s.jain),
        f(s.share_err_max),
        s.idle_ns as f64 / 1e6,
        s.work_total
    );
    if let Some(jain) = s.window_jain.as_ref().filter(|j| !j.is_empty()) {
        let mut sorted = jain.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "windows={} window_jain min={:.4} median={:.4} max={:.4}",
            jain.len(),
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    }
}
