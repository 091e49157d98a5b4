//! `experiment-checks`: the experiment half of `scripts/test`. Runs the specs of
//! `scripts/experiments/` on the hypervisor under TCG, through `runner` as a user would, and
//! checks what each results file says: every domain progressed, shares follow weights, caps
//! hold, hostile guests are killed with the right reason while the others run on, and Domain0
//! found every frame, port, grant and heap byte returned (its verdict is the exit status);
//! domain lifetimes in churn come back to the same baseline. The last line of output is
//! `N passed, N failed`.
//!
//! Bounds are looser than the performance targets of docs/DESIGN.md on purpose: TCG on two host
//! cores is noisy, and these are tests of behaviour; `scripts/bench` reports the figures.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use abi::tool::console::LATE_FROM_NS;
use abi::tool::results::{Domain, Record, Records};
use runner::{invoke_with, read_records, show_failure, sibling_runner};
use serde_json::Value;

/// A check of one results file.
type Check = fn(&[Record]) -> Result<String, String>;

struct Case {
    name: String,
    args: Vec<String>,
    check: Check,
    also: Also,
}

/// What a case checks beyond its results file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Also {
    Nothing,
    /// Run with `--trace` and check the trace against the results.
    Trace,
    /// Run the same spec and flags in schedsim and compare each domain's share: they
    /// must agree within this many percentage points.
    Schedsim(u32),
    /// Run with the hypervisor's log and judge every case of the XTF-style suite by its
    /// ending and its console line (`runner::xtf`).
    Xtf,
    /// Run with `--trace`: group `storm` was cut short by its trace quota, the rest match.
    TraceQuota,
    /// Run with `--trace`: every vCPU whose trace falls short of its CPU time ends with a
    /// `full` mark, and group `lat`'s does ([`trace_losses_are_marked`]).
    TraceCrowd,
    /// Run with `--trace`: the trace matches, and the sleepers of `pause-sleepers.toml`
    /// never ran again once asleep ([`sleepers_stay_asleep`]).
    Sleepers,
    /// Run the same spec and flags in schedsim on a calibrated cost profile
    /// ([`calibrated_profile`]), with this run's own kick and slice lateness (`schedsim
    /// --costs-from`: the host's load during the run) when [`Timed`] asserts a latency: the
    /// share of each class of identical domains (group, weight, cap; its mean) within this
    /// many points of the hypervisor's, each domain's reported; each latency domain's p50
    /// and p99 wake-up latency against the target (within 30%, or the same log2 bucket),
    /// reported, and asserted as [`Timed`] says (README, "Cost profiles").
    Calibrated(u32, Timed),
    /// Run with `--trace`, replay the trace under the run's own policy in calibrated
    /// schedsim (`schedsim --replay`), and compare as [`Also::Calibrated`] does.
    Replay(u32, Timed),
    /// Run with `--trace`: the trace matches, and each policy swap is dated inside the
    /// stretch its pool's guests were held off the CPUs ([`swaps_dated_while_held`]).
    SwapTrace,
}

/// What a calibrated comparison asserts of a latency domain's p50 and p99 wake-up latency
/// (each percentile is reported in every case, with the target's verdict).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Timed {
    p50: Bound,
    p99: Bound,
    /// Whether the run record must count the kicks that `--costs-from` draws a woken
    /// vCPU's from (not under rr, which never kicks for a wake-up: its latency domain waits
    /// its turn).
    kicks: bool,
    /// Whether the p99 is asserted only when the run's host was quiet ([`held_share`] below
    /// [`QUIET_HELD_SHARE`]), and reported otherwise.
    p99_quiet_only: bool,
    /// Whether the shares are asserted within the case's points (else reported).
    shares: bool,
    /// Whether the shares and the p99 are asserted only when the run's emulated CPUs were not
    /// slow throughout ([`slice_late_median`] at most [`BRISK_MEDIAN_NS`]), and reported
    /// otherwise; the shares also when schedsim fitted the guest's side of a switch to the
    /// run ([`shares_asserted`]).
    brisk_only: bool,
}

/// The share of a run's slice ends that the host held [`LATE_FROM_NS`] or more (its `run`
/// record's `slice_late_hist`; 0 without one): under TCG on a quiet host 0.3-1.3% (session
/// 20's stride runs of latency.toml on 2 CPUs, 2-8 of about 600), once 5.7% (35 of 610).
fn held_share(records: &[Record]) -> f64 {
    let hist = records
        .run()
        .and_then(|r| r.slice_late_hist.clone())
        .unwrap_or_default();
    let all: u64 = hist.iter().map(|b| b.1).sum();
    let held: u64 = hist
        .iter()
        .filter(|b| b.0 > LATE_FROM_NS)
        .map(|b| b.1)
        .sum();
    held as f64 / all.max(1) as f64
}

/// Below this share of held slice ends ([`held_share`]) a run's host counts as quiet.
const QUIET_HELD_SHARE: f64 = 0.03;

/// The median lateness of a run's slice ends, ns (the upper bound of the `slice_late_hist`
/// bucket it falls in; 0 without one). Under TCG on a quiet host 1 µs or less: the deadline
/// fires on time and most slice ends are. In a run whose emulated CPUs the host ran slow
/// from start to end, 32 µs (`simvshyp/latency/rtds`'s shares failure, session 21's CI:
/// switches twice as long as usual too).
fn slice_late_median(records: &[Record]) -> u64 {
    let hist = records
        .run()
        .and_then(|r| r.slice_late_hist.clone())
        .unwrap_or_default();
    let all: u64 = hist.iter().map(|b| b.1).sum();
    let mut seen = 0;
    for &(bound, n) in &hist {
        seen += n;
        if 2 * seen >= all {
            return bound;
        }
    }
    0
}

/// At most this median slice lateness ([`slice_late_median`]) a run counts as brisk.
const BRISK_MEDIAN_NS: u64 = 8_000;

/// Whether a case's shares are asserted: if it asserts them at all, in a brisk run
/// ([`Timed::brisk_only`]), or in a slow one whose calibrated simulation fitted the guest's
/// side of a switch to it (`fitted`: its `run` record's `guest_switch_ns`).
fn shares_asserted(timed: &Timed, median_late_ns: u64, fitted: bool) -> bool {
    let sluggish = timed.brisk_only && median_late_ns > BRISK_MEDIAN_NS;
    timed.shares && (!sluggish || fitted)
}

impl Timed {
    /// Shares asserted, latency reported only.
    const SHARES: Timed = Timed {
        p50: Bound::Reported,
        p99: Bound::Reported,
        kicks: false,
        p99_quiet_only: false,
        shares: true,
        brisk_only: false,
    };
    /// A run replayed under its own policy (`schedsim --replay`, with the run's costs):
    /// shares and the latency domain's median asserted on target, its p99 reported (the
    /// host's stalls of milliseconds, which a replay draws at random; `replay/latency/*`
    /// assert it where it held).
    const REPLAY: Timed = Timed {
        p50: Bound::Target,
        p99: Bound::Reported,
        kicks: false,
        p99_quiet_only: false,
        shares: true,
        brisk_only: false,
    };
}

/// How closely one percentile must match.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Reported only.
    Reported,
    /// Within one log2 bucket (a factor of 2 to 4), or further apart only as far as the two
    /// engines' sample counts leave the percentile undetermined ([`quantile_band`]).
    Bucket,
    /// The target: within 30%, or the same log2 bucket; or a bucket apart where the sample
    /// counts cannot tell the two apart ([`judge_percentile`]).
    Target,
}

/// The cost profile the calibrated comparisons use: the one shipped for TCG
/// (`scripts/profiles/tcg.toml`, from `scripts/calibrate`), or `$DOMINO_SIM_PROFILE`: a
/// file, or `fresh` for the shipped one with what the host's load moves (the kicks, the
/// slices' lateness, the block path) measured again now, in the same sitting as the
/// hypervisor runs it is compared with (`scripts/calibrate --quick --base`, three short
/// boots, once per `experiment-checks`; noisier than a full calibration on an idle host).
fn calibrated_profile(dir: &Path) -> Result<PathBuf, String> {
    static PROFILE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    PROFILE
        .get_or_init(|| {
            let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            match std::env::var_os("DOMINO_SIM_PROFILE") {
                None => return Ok(scripts.join("profiles/tcg.toml")),
                Some(p) if p != "fresh" => return Ok(PathBuf::from(p)),
                Some(_) => {}
            }
            let out = dir.join("profile.toml");
            let run = std::process::Command::new(scripts.join("calibrate"))
                .args(["--quick", "--base"])
                .arg(scripts.join("profiles/tcg.toml"))
                .arg("--out")
                .arg(&out)
                .output()
                .map_err(|e| format!("cannot run scripts/calibrate: {e}"))?;
            if !run.status.success() {
                return Err(format!(
                    "scripts/calibrate failed: {}",
                    String::from_utf8_lossy(&run.stderr)
                ));
            }
            Ok(out)
        })
        .clone()
}

/// The log2 bucket of a latency, as the hypervisor's latency histogram counts (its
/// percentiles are bucket bounds such as 65535): k for ns in [2^(k-1), 2^k).
fn log2_bucket(ns: u64) -> i32 {
    64 - ns.leading_zeros() as i32
}

/// Standard errors of a sample quantile that [`quantile_band`] spans on each side.
const QUANTILE_Z: f64 = 2.0;

/// The log2 buckets (as [`log2_bucket`] counts) between which quantile `q` of the
/// distribution that the latency histogram `hist` (`[upper_bound_ns, count]`, log2 buckets,
/// a domain record's `wake_lat_hist`) samples lies, with about 97.7% confidence on each
/// side: the buckets of the order statistics of ranks n·q ∓ z·√(n·q·(1-q)), the normal
/// approximation of the distribution-free confidence interval for a quantile (Conover,
/// Practical Nonparametric Statistics, 3rd ed., §3.2). None for an empty histogram.
///
/// A p99 of 2,000 wake-ups is the 20th largest, give or take 9 at z = 2 (quantiles 0.9855
/// to 0.9945): where the latencies have a knee there (credit's latency domain waits out a
/// hog's 1 ms rate limit, and about 1% of its wake-ups wait longer, for a late slice end),
/// that moves the p99 two log2 buckets in either engine by chance.
fn quantile_band(hist: &[(u64, u64)], q: f64) -> Option<(i32, i32)> {
    let n: u64 = hist.iter().map(|b| b.1).sum();
    if n == 0 {
        return None;
    }
    let (nq, sd) = (n as f64 * q, QUANTILE_Z * (n as f64 * q * (1.0 - q)).sqrt());
    let rank = |r: f64| (r.max(1.0) as u64).min(n);
    let (lo, hi) = (rank((nq - sd).floor()), rank((nq + sd).ceil()));
    let bucket = |r: u64| {
        let mut seen = 0;
        hist.iter()
            .find(|b| {
                seen += b.1;
                seen >= r
            })
            .map(|b| log2_bucket(b.0.saturating_sub(1)))
    };
    Some((bucket(lo)?, bucket(hi)?))
}

/// Whether the two engines' quantile `q` cannot be told apart by their sample counts: the
/// bands [`quantile_band`] gives share a log2 bucket.
fn quantiles_indistinct(h: Option<&Vec<(u64, u64)>>, m: Option<&Vec<(u64, u64)>>, q: f64) -> bool {
    match (
        h.and_then(|h| quantile_band(h, q)),
        m.and_then(|m| quantile_band(m, q)),
    ) {
        (Some(a), Some(b)) => a.0 <= b.1 && b.0 <= a.1,
        _ => false,
    }
}

/// What [`quantile_band`] makes of each engine's histogram, for a note: "by their sample
/// counts between A and B µs on the hypervisor, C and D µs simulated" (empty without both).
fn bands_note(h: Option<&Vec<(u64, u64)>>, m: Option<&Vec<(u64, u64)>>, q: f64) -> String {
    let range = |(a, b): (i32, i32)| {
        let lo = if a > 0 { 1u64 << (a - 1) } else { 0 };
        let hi = 1u64.checked_shl(b as u32).unwrap_or(u64::MAX);
        format!("{:.1} and {:.1} µs", lo as f64 / 1e3, hi as f64 / 1e3)
    };
    match (
        h.and_then(|h| quantile_band(h, q)),
        m.and_then(|m| quantile_band(m, q)),
    ) {
        (Some(a), Some(b)) => format!(
            "by their sample counts between {} on the hypervisor, {} simulated",
            range(a),
            range(b)
        ),
        _ => String::new(),
    }
}

/// Calibrated schedsim against this hypervisor run: shares within `points` of each other,
/// and the latency domains' p50 and p99 (see [`Also::Calibrated`]).
fn matches_calibrated(
    records: &[Record],
    args: &[String],
    out: &Path,
    points: u32,
    replay: Option<&Path>,
    timed: Timed,
) -> Result<String, String> {
    // The hypervisor counts the kicks it serves (the run record's `kick_late`,
    // `kick_local_late`), which `--costs-from` takes: a latency domain's wake-ups kick a
    // CPU, most of them (bvt and credit about two kicks per wake-up here, counting the
    // hogs'; credit2 fewer, leaving the others to the next slice end: 0.13-0.15 per wake-up
    // in three runs of session 22, 0.09 in one CI run, which failed the one per ten this
    // asked for then), so there is at least one kick per fifty of its wake-ups: kicks are
    // counted at all.
    if replay.is_none()
        && timed.kicks
        && let Some(lat) = domains(records)
            .into_iter()
            .find(|d| d.workload == "latency")
    {
        let run = records.run().ok_or("no run record")?;
        let kicks: u64 = [&run.kick_late, &run.kick_local_late]
            .into_iter()
            .flatten()
            .flat_map(|l| l.hist.iter().map(|b| b.1))
            .sum();
        if kicks * 50 < lat.wakeups {
            return Err(format!(
                "the run record counts {kicks} kicks served (kick_late, kick_local_late) for \
                 {} wake-ups of {}",
                lat.wakeups, lat.name
            ));
        }
    }
    let sim_out = out.with_extension("calibrated.jsonl");
    let profile = calibrated_profile(out.parent().unwrap_or(Path::new(".")))?;
    let flags = schedsim_flags(args);
    let run = std::process::Command::new(sibling_runner().with_file_name("schedsim"))
        .args(flags)
        .args(replay.iter().flat_map(|t| [Path::new("--replay"), t]))
        // The host's load during this run, in the terms that follow it run by run (kicks,
        // slice ends), for the specs with a latency domain. Not for shares alone: a tail of
        // tens of ms drawn at random from the run's slice lateness moves single domains'
        // shares in schedsim (weights under bvt: 1.1-2.1 points over three seeds, 1.4
        // without). A replay takes them too: its arrivals are the run's own wake-ups, which
        // it does not make late again, and its bursts ride out the stalls they hold
        // (`sched::replay`).
        .args(
            domains(records)
                .iter()
                .any(|d| d.workload == "latency")
                .then_some([Path::new("--costs-from"), out])
                .into_iter()
                .flatten(),
        )
        .arg("--profile")
        .arg(&profile)
        .arg("--out")
        .arg(&sim_out)
        .output()
        .map_err(|e| format!("cannot run schedsim: {e}"))?;
    if !run.status.success() {
        return Err(format!(
            "schedsim failed: {}",
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    let sim = read_records(&sim_out)?;
    let share = |rs: &[Record], name: &str| -> Option<f64> {
        let ds = domains(rs);
        let total: u64 = ds.iter().map(|d| d.cpu_ns).sum();
        ds.iter()
            .find(|d| d.name == name)
            .map(|d| 100.0 * d.cpu_ns as f64 / total.max(1) as f64)
    };
    // Per domain, reported; per class of identical domains (one group, one weight, one
    // cap: the hogs of latency.toml, each weight of weights.toml), asserted. Which of 15
    // identical hogs the host's stalls favour is chance, in both engines: on a loaded host
    // one hog's share strays 3 points from its class on the hypervisor alone, which no
    // model predicts, while the class's mean holds.
    let mut worst = 0.0f64;
    let mut classes: std::collections::BTreeMap<(String, u64, u64), (f64, f64, u32)> =
        Default::default();
    for d in domains(records) {
        let (h, s) = (
            share(records, &d.name).unwrap_or(0.0),
            share(&sim, &d.name).ok_or(format!("{} is not in schedsim's results", d.name))?,
        );
        worst = worst.max((h - s).abs());
        let c = classes
            .entry((d.group.clone(), d.weight, d.cap))
            .or_default();
        *c = (c.0 + h, c.1 + s, c.2 + 1);
    }
    let mut worst_class = 0.0f64;
    let median_late = slice_late_median(records);
    let sluggish = timed.brisk_only && median_late > BRISK_MEDIAN_NS;
    // A slow run's shares missed by the latency domain's CPU time per wake-up (144 µs on
    // the hypervisor against 83 simulated, session 21), which schedsim fits to the run
    // since session 25 (the `run` record's `guest_switch_ns`): with a host core kept busy,
    // 14 rtds runs (slice ends 1-16 µs late at the median) came within 0.31 points, 2.08
    // without it. Reported still where schedsim did not fit it (the run's CPUs stalled).
    let fitted = sim.run().is_some_and(|r| r.guest_switch_ns.is_some());
    let assert_shares = shares_asserted(&timed, median_late, fitted);
    for ((group, weight, _), (h, s, n)) in &classes {
        let (h, s) = (h / f64::from(*n), s / f64::from(*n));
        worst_class = worst_class.max((h - s).abs());
        if assert_shares && (h - s).abs() > f64::from(points) {
            return Err(format!(
                "group {group} (weight {weight}, {n} domains): {h:.2}% each on the hypervisor, \
                 {s:.2}% in calibrated schedsim ({})",
                profile.display()
            ));
        }
    }
    let what = if replay.is_some() {
        "the trace replayed in calibrated schedsim"
    } else {
        "calibrated schedsim"
    };
    let mut notes = vec![format!(
        "{what}: shares within {worst_class:.2} points per class of identical domains, \
         {worst:.2} per domain{}",
        if assert_shares {
            String::new()
        } else if sluggish {
            format!(
                " (reported: this run's slice ends were {:.0} µs late at the median, its \
                 emulated CPUs slow throughout, and schedsim fitted no guest's side of a \
                 switch to it; asserted at {:.0} µs or less, or with that fit)",
                median_late as f64 / 1e3,
                BRISK_MEDIAN_NS as f64 / 1e3
            )
        } else {
            " (reported, not asserted)".into()
        }
    )];
    let sim_domains = domains(&sim);
    let held = held_share(records);
    for d in domains(records)
        .into_iter()
        .filter(|d| d.workload == "latency")
    {
        let s = sim_domains
            .iter()
            .find(|x| x.name == d.name)
            .ok_or("no latency domain")?;
        for (what, q, h, m) in [
            ("p50", 0.5, d.wake_lat_p50_ns, s.wake_lat_p50_ns),
            ("p99", 0.99, d.wake_lat_p99_ns, s.wake_lat_p99_ns),
        ] {
            // A host that held many slice ends puts stride's tail in either mode by chance
            // (`simvshyp/latency/stride` below): its p99 is then reported, and why.
            let loud = what == "p99" && timed.p99_quiet_only && held >= QUIET_HELD_SHARE;
            let bound = match what {
                "p50" => timed.p50,
                _ if loud || sluggish => Bound::Reported,
                _ => timed.p99,
            };
            let (hh, mh) = (d.wake_lat_hist.as_ref(), s.wake_lat_hist.as_ref());
            let verdict = judge_percentile(bound, q, h, m, hh, mh).map_err(|why| {
                format!(
                    "{}: wake-up latency {what} {:.1} µs on the hypervisor, {:.1} µs in \
                     calibrated schedsim ({}, this run's kick and slice lateness): {why}",
                    d.name,
                    h as f64 / 1e3,
                    m as f64 / 1e3,
                    profile.display()
                )
            })?;
            let verdict = if loud {
                format!(
                    "{verdict}; the host held {:.1}% of the run's slice ends, asserted below \
                     {:.0}%",
                    100.0 * held,
                    100.0 * QUIET_HELD_SHARE
                )
            } else if sluggish && what == "p99" {
                format!(
                    "{verdict}; the run's slice ends were {:.0} µs late at the median, asserted \
                     at {:.0} µs or less",
                    median_late as f64 / 1e3,
                    BRISK_MEDIAN_NS as f64 / 1e3
                )
            } else {
                verdict
            };
            let off = (log2_bucket(h) - log2_bucket(m)).abs();
            notes.push(format!(
                "{} {what} {:.1} µs on the hypervisor, {:.1} µs simulated ({verdict}, {off} log2 buckets apart)",
                d.name,
                h as f64 / 1e3,
                m as f64 / 1e3
            ));
        }
    }
    Ok(notes.join("; "))
}

/// How one percentile `q` of a latency domain's wake-up latency compares: `h` on the
/// hypervisor, `m` simulated, with each engine's log2 histogram (`wake_lat_hist`). Ok with
/// the verdict a note reports; Err with why it fails `bound`.
///
/// On target: within 30% or the same log2 bucket (issue 15's target). A bucket apart, a
/// percentile still meets [`Bound::Target`] when the two engines' sample counts cannot
/// tell the two apart ([`quantiles_indistinct`]): a 6 s run's p99 is its latency domain's
/// 55th-longest wait of some 5,500, give or take 15, and where the waits have a knee (a
/// hog's 1 ms slice or rate limit) that moves it across a bucket edge by chance. Two
/// buckets or more apart never meets it.
fn judge_percentile(
    bound: Bound,
    q: f64,
    h: u64,
    m: u64,
    hh: Option<&Vec<(u64, u64)>>,
    mh: Option<&Vec<(u64, u64)>>,
) -> Result<String, String> {
    let off = (log2_bucket(h) - log2_bucket(m)).abs();
    let close = (h as f64 - m as f64).abs() <= 0.3 * h as f64 || off == 0;
    let indistinct = !close && quantiles_indistinct(hh, mh, q);
    let bands = || bands_note(hh, mh, q);
    let on_target = if close {
        Some("on target".to_string())
    } else if off == 1 && indistinct {
        Some(format!(
            "a bucket apart, on target as closely as the sample counts tell ({})",
            bands()
        ))
    } else {
        None
    };
    match (bound, on_target) {
        (Bound::Target, Some(v)) => Ok(format!("{v}, asserted")),
        (Bound::Target, None) => Err(format!(
            "more than 30% and a log2 bucket apart, and {} ({off} buckets)",
            if off > 1 {
                "more than one bucket".to_string()
            } else {
                format!("further than their sample counts allow ({})", bands())
            }
        )),
        (Bound::Bucket, Some(v)) => Ok(format!("{v}; within a bucket asserted")),
        (Bound::Bucket, None) if off <= 1 => {
            Ok("MISSES the target; within a bucket asserted".into())
        }
        (Bound::Bucket, None) if indistinct => Ok(format!(
            "MISSES the target; within a bucket asserted, or as close as the sample counts \
             tell: {}",
            bands()
        )),
        (Bound::Bucket, None) => Err(format!(
            "more than 1 log2 bucket apart, and more than their sample counts allow ({}) \
             ({off} buckets)",
            bands()
        )),
        (Bound::Reported, Some(v)) => Ok(v),
        (Bound::Reported, None) => Ok("MISSES the target (reported, not asserted)".into()),
    }
}

/// The trace is valid trace JSON, run intervals on a CPU never overlap, and each domain's
/// run time summed from the trace over the measured interval is its `cpu_ns` within 1%.
fn trace_matches(records: &[Record], trace: &Path) -> Result<String, String> {
    trace_matches_but(records, trace, None)
}

/// The `traceEvents` of the trace file `trace` (Chrome/Perfetto trace JSON).
fn trace_events(trace: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(trace).map_err(|e| format!("no trace file: {e}"))?;
    let mut json: Value =
        serde_json::from_str(&text).map_err(|e| format!("the trace is not JSON: {e}"))?;
    match json["traceEvents"].take() {
        Value::Array(events) => Ok(events),
        _ => Err("no traceEvents array".into()),
    }
}

/// `trace-crowd.toml`: six yield storms fill the CPU's trace buffer within their quotas, so
/// the latency domain beside them loses events to the full buffer. No vCPU may lose events
/// silently: each domain whose run intervals in the trace add up to less than its CPU time
/// (1% and 1 µs allowed) has a `full` mark on one of its vCPUs, and no run interval of a
/// vCPU starts after its mark (its trace ended there, not a hole); and `lat` must
/// be one of them (else the buffer never filled, and the case shows nothing). Before, a full
/// buffer dropped events with no mark, and `schedsim --replay` replayed the latency domain
/// without its later arrivals (an audit of session 24).
fn trace_losses_are_marked(records: &[Record], trace: &Path) -> Result<String, String> {
    let events = trace_events(trace)?;
    let run = records.run().ok_or("no run record")?;
    let t0 = hypervisor_only(run.start_ns, "start_ns")? as f64 / 1e3;
    let t1 = t0 + run.duration_ns as f64 / 1e3;
    let tid_of = |e: &Value| e["tid"].as_u64().ok_or("an event without tid");
    let mut full: std::collections::BTreeMap<u64, f64> = Default::default();
    for e in events.iter().filter(|e| e["name"] == "full") {
        let ts = e["ts"].as_f64().ok_or("a full mark without ts")?;
        let at = full.entry(tid_of(e)?).or_insert(ts);
        *at = at.min(ts);
    }
    let mut traced: std::collections::BTreeMap<u64, f64> = Default::default();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let (ts, dur) = (
            e["ts"].as_f64().ok_or("X event without ts")?,
            e["dur"].as_f64().ok_or("X event without dur")?,
        );
        let tid = tid_of(e)?;
        if let Some(&mark) = full.get(&tid)
            && ts > mark
        {
            return Err(format!(
                "vCPU {tid} ran at {ts} µs in the trace, after its full mark at {mark} µs: \
                 a trace with a hole"
            ));
        }
        let (a, b) = (ts.max(t0), (ts + dur).min(t1));
        if b > a {
            // By domain: tid = domain × 1000 + vCPU.
            *traced.entry(tid / 1000).or_default() += (b - a) * 1e3;
        }
    }
    let mut cut = Vec::new();
    for d in domains(records) {
        let had = traced.get(&u64::from(d.id)).copied().unwrap_or(0.0);
        if had < d.cpu_ns as f64 * 0.99 - 1e3 {
            if !full.keys().any(|t| t / 1000 == u64::from(d.id)) {
                return Err(format!(
                    "{}: {had:.0} of its {} ns traced, and no full mark: events lost silently",
                    d.name, d.cpu_ns
                ));
            }
            cut.push((d, had));
        }
    }
    let lat = in_group(records, "lat")?;
    let Some((d, had)) = cut.iter().find(|(d, _)| d.id == lat.id) else {
        return Err(format!(
            "{}: its trace whole ({} domains cut): the storms never filled the buffer",
            lat.name,
            cut.len()
        ));
    };
    Ok(format!(
        "{} domains' traces cut by the full buffer or their quota, each marked; {}'s {:.0} \
         of {} ns traced",
        cut.len(),
        d.name,
        had,
        d.cpu_ns
    ))
}

/// As [`trace_matches`], except that the domains of group `storm` (if any) must have had
/// their trace cut short by the per-vCPU trace quota (less than half their `cpu_ns` traced),
/// while everyone else's still adds up: a storm of events fills no one else's trace space.
fn trace_matches_but(
    records: &[Record],
    trace: &Path,
    storm: Option<&str>,
) -> Result<String, String> {
    let events = trace_events(trace)?;
    let run = records.run().ok_or("no run record")?;
    let t0 = hypervisor_only(run.start_ns, "start_ns")? as f64 / 1e3;
    let t1 = t0 + run.duration_ns as f64 / 1e3;
    let mut per_cpu: std::collections::BTreeMap<u64, Vec<(f64, f64)>> = Default::default();
    let mut per_domain: std::collections::BTreeMap<u64, f64> = Default::default();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let (ts, dur) = (
            e["ts"].as_f64().ok_or("X event without ts")?,
            e["dur"].as_f64().ok_or("X event without dur")?,
        );
        per_cpu
            .entry(e["pid"].as_u64().ok_or("X event without pid")?)
            .or_default()
            .push((ts, ts + dur));
        let (a, b) = (ts.max(t0), (ts + dur).min(t1));
        if b > a {
            *per_domain
                .entry(e["tid"].as_u64().ok_or("X event without tid")? / 1000)
                .or_default() += (b - a) * 1e3;
        }
    }
    for (cpu, intervals) in &mut per_cpu {
        intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(w) = intervals.windows(2).find(|w| w[1].0 < w[0].1 - 1e-3) {
            return Err(format!(
                "CPU {cpu}: run intervals overlap: {:?} and {:?}",
                w[0], w[1]
            ));
        }
    }
    for d in domains(records) {
        let cpu_ns = d.cpu_ns as f64;
        let traced = per_domain.get(&u64::from(d.id)).copied().unwrap_or(0.0);
        if storm.is_some_and(|g| d.group == g) {
            if traced > cpu_ns * 0.5 {
                return Err(format!(
                    "{}: {traced:.0} of its {cpu_ns} ns traced: the storm was not cut short \
                     by its trace quota",
                    d.name
                ));
            }
            continue;
        }
        if (traced - cpu_ns).abs() > cpu_ns * 0.01 + 1e3 {
            return Err(format!(
                "{}: cpu_ns {cpu_ns}, but its trace intervals add up to {traced:.0} ns",
                d.name
            ));
        }
    }
    let n: usize = per_cpu.values().map(Vec::len).sum();
    // Credit has priority classes; its trace must show them changing.
    let priority = events.iter().filter(|e| e["cat"] == "priority").count();
    if run.policy == "credit" && priority == 0 {
        return Err("a credit trace without a single priority change (BOOST/UNDER/OVER)".into());
    }
    let cut = storm.map_or(String::new(), |g| {
        format!(" (but {g}'s, cut short by its quota)")
    });
    Ok(format!(
        "trace: {n} intervals, none overlapping, each domain's within 1% of cpu_ns{cut}, \
         {priority} priority changes"
    ))
}

/// `scripts/experiments/pause-sleepers.toml`: the two pool swaps paused and unpaused every
/// domain, and neither sleeper ran again once asleep: `sleeper0`'s vCPU (its timer 10 s
/// away) and `shootdown0`'s vCPU 2 (down) each have one run in the whole trace, the one
/// that put it to sleep. The awake vCPUs kept running across the swaps.
fn sleepers_stay_asleep(records: &[Record], trace: &Path) -> Result<String, String> {
    let events = trace_events(trace)?;
    let id = |name: &str| {
        domains(records)
            .into_iter()
            .find(|d| d.name == name)
            .map(|d| u64::from(d.id))
            .ok_or(format!("no domain {name}"))
    };
    let runs = |tid: u64| {
        events
            .iter()
            .filter(|e| e["ph"] == "X" && e["tid"].as_u64() == Some(tid))
            .count()
    };
    let (sleeper, shootdown, hog) = (id("sleeper0")?, id("shootdown0")?, id("hog0")?);
    // The swaps happened: the hog ran under both policies, before and after each.
    let hog_runs = runs(hog * 1000);
    if hog_runs < 3 {
        return Err(format!(
            "the hog ran {hog_runs} times: the swaps cannot be judged"
        ));
    }
    let mut notes = Vec::new();
    for (what, tid) in [
        ("sleeper0 (blocked, timer 10 s away)", sleeper * 1000),
        ("shootdown0's vCPU 2 (down)", shootdown * 1000 + 2),
    ] {
        let n = runs(tid);
        if n != 1 {
            return Err(format!(
                "{what} ran {n} times; once, to go to sleep, is all it may: an unpause woke it"
            ));
        }
        notes.push(format!("{what} ran once"));
    }
    Ok(format!("{} across two pool swaps", notes.join(", ")))
}

/// Runs the case's spec and flags in schedsim and checks that every domain's share of the
/// CPU time is within 5 points of the hypervisor's.
/// QEMU's flags for guest time counted in instructions, a nanosecond each, with no sleep
/// (`-icount shift=0,sleep=off`): a run is deterministic whatever the host's load, which
/// suits shares of CPU-bound domains and races on one CPU at a time, not wake-up latency on
/// several CPUs (README, "Cost profiles, calibration and replay").
const ICOUNT: [&str; 2] = ["--qemu-arg=-icount", "--qemu-arg=shift=0,sleep=off"];

/// A case's flags with [`ICOUNT`] added.
fn icount<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(ICOUNT).collect()
}

/// A case's flags as schedsim takes them: the hypervisor's own (`--accel tcg` in front,
/// `--qemu-arg=...` anywhere) left out.
fn schedsim_flags(args: &[String]) -> Vec<&String> {
    args.iter()
        .skip_while(|a| *a == "--accel" || *a == "tcg")
        .filter(|a| !a.starts_with("--qemu-arg="))
        .collect()
}

fn matches_schedsim(
    records: &[Record],
    args: &[String],
    out: &Path,
    points: u32,
) -> Result<String, String> {
    let sim_out = out.with_extension("schedsim.jsonl");
    let flags = schedsim_flags(args);
    let status = std::process::Command::new(sibling_runner().with_file_name("schedsim"))
        .args(flags)
        .arg("--out")
        .arg(&sim_out)
        .output()
        .map_err(|e| format!("cannot run schedsim: {e}"))?;
    if !status.status.success() {
        return Err(format!(
            "schedsim failed: {}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    let sim = read_records(&sim_out)?;
    let shares = |rs: &[Record]| -> Vec<(String, f64)> {
        let ds = domains(rs);
        let total: u64 = ds.iter().map(|d| d.cpu_ns).sum();
        ds.iter()
            .map(|d| {
                (
                    d.name.clone(),
                    100.0 * d.cpu_ns as f64 / total.max(1) as f64,
                )
            })
            .collect()
    };
    let (hyp, sim) = (shares(records), shares(&sim));
    let mut worst = 0.0f64;
    for (name, share) in &hyp {
        let other = sim
            .iter()
            .find(|(n, _)| n == name)
            .ok_or(format!("{name} is not in schedsim's results"))?
            .1;
        worst = worst.max((share - other).abs());
        if (share - other).abs() > f64::from(points) {
            return Err(format!(
                "{name}: {share:.2}% on the hypervisor, {other:.2}% in schedsim"
            ));
        }
    }
    Ok(format!("schedsim agrees within {worst:.2} points"))
}

fn experiments_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments")
}

fn spec(name: &str) -> String {
    experiments_dir()
        .join(format!("{name}.toml"))
        .display()
        .to_string()
}

fn domains(records: &[Record]) -> Vec<&Domain> {
    records.domains().collect()
}

/// The first domain of group `group`, or an error naming the group.
fn in_group<'r>(records: &'r [Record], group: &str) -> Result<&'r Domain, String> {
    records
        .domains()
        .find(|d| d.group == group)
        .ok_or(format!("no `{group}` domain"))
}

/// A field of the run record that only the hypervisor writes: an error if it is missing.
fn hypervisor_only(field: Option<u64>, name: &str) -> Result<u64, String> {
    field.ok_or_else(|| format!("the run record has no {name}, which the hypervisor writes"))
}

fn summary(records: &[Record]) -> Result<&abi::tool::results::Summary, String> {
    records.summary().ok_or_else(|| "no summary record".into())
}

/// Jain's index over the domains' `cpu_ns` (Jain, Chiu and Hawe, DEC-TR-301, 1984), with the
/// least and most CPU time, as "Jain over cpu_ns J, LO..HI ms".
fn jain_over_cpu(ds: &[&Domain]) -> (f64, String) {
    let cpu: Vec<f64> = ds.iter().map(|d| d.cpu_ns as f64).collect();
    let (sum, squares) = cpu.iter().fold((0.0, 0.0), |(s, q), c| (s + c, q + c * c));
    let jain = sum * sum / (cpu.len() as f64 * squares);
    let (lo, hi) = cpu
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), &c| (l.min(c), h.max(c)));
    (
        jain,
        format!(
            "Jain over cpu_ns {jain:.4}, {:.2}..{:.2} ms",
            lo / 1e6,
            hi / 1e6
        ),
    )
}

/// 128 cpu domains on 4 CPUs, run under `-icount` (the policy's fairness, not the host's):
/// every domain made progress (work and CPU time) and Jain's index over `cpu_ns` is at
/// least `min`: 0.99 (rtds 0.9968, stride 0.9981, credit 0.9992, credit2 0.9999, bvt 1.0000
/// over 6 s; rtds and stride 0.9960-0.9985 over 5 and 7 s and at `shift=1`), 0.98 for rr,
/// which keeps no account of time used (`sched::rr`): neither a slice that ends late (by ms
/// when four emulated CPUs take turns) nor a longer queue on one CPU is made up for later
/// (0.9910-0.9935 the same ways).
/// Jain over work is reported, not asserted: under `-icount` the emulated CPUs run in turns
/// on one host thread while the clock counts every CPU's instructions, so a domain's work
/// per ns of CPU time follows how its runs fall among the other CPUs' turns (Jain over work
/// 0.86-0.998 in the same runs, 0.67 at 1024x2 with 0.9999 over `cpu_ns`). On the real
/// clock, where work was asserted at 0.98, the host's load moved both: at loads 4-6, 7 of
/// 12 runs below 0.98 over work (0.8465-0.9775), over `cpu_ns` 0.9460-0.9958. Half the
/// domains at weight 320 under credit2 (the policy giving them their 55.6%) is 0.9872 over
/// `cpu_ns`, below the bound, and 0.9923 over work, which the old bound of 0.98 passed.
fn scaling_fair(records: &[Record], min: f64) -> Result<String, String> {
    let ds = domains(records);
    if ds.len() != 128 {
        return Err(format!("{} domain records, expected 128", ds.len()));
    }
    if let Some(d) = ds.iter().find(|d| d.work == 0 || d.cpu_ns == 0) {
        return Err(format!("domain {} made no progress: {d:?}", d.name));
    }
    let (jain, figures) = jain_over_cpu(&ds);
    let work = summary(records)?
        .jain
        .ok_or("jain is null: no cpu domain was measured")?;
    if jain < min {
        return Err(format!(
            "{figures}: below {min} (over work {work:.4}, reported)"
        ));
    }
    Ok(format!("{figures}; over work {work:.4} (reported)"))
}

fn all_progress_and_fair(records: &[Record]) -> Result<String, String> {
    scaling_fair(records, 0.99)
}

fn all_progress_and_fair_rr(records: &[Record]) -> Result<String, String> {
    scaling_fair(records, 0.98)
}

/// Fairness over a short window at high consolidation (issue 12): 1024 cpu domains on 2
/// CPUs for 1 s, under `-icount` (guest time counts instructions, so other work on the
/// host does not stretch runs; a run is deterministic), none without CPU, Jain's index
/// over `cpu_ns` at least `min`, and at most [`CROWD_LATE_SLICES`] slices ended 256 µs or
/// more after their end. bvt meets 0.99 (0.9993); it had 0.987 while a snapshot's hold of
/// the other CPU (7.4 ms) was charged to the vCPU held there, and 0.995 while a timer that
/// fired a few µs early was re-armed. credit2 (bound: [`crowd_fair_credit2`]) had 0.9914
/// in session 12, 0.9895 since it has no tick (session 13); it had 0.987 while a CPU
/// that waited for the runqueue lock lost the emulated processor to the holder's next slice
/// (68 slices ended 256 µs or more late, 2 since `sched::handoff`), 0.82 with Domain0
/// counted in `max_weight` and 0.97 with slices whose timer was armed twice.
fn crowd_fair(records: &[Record], min: f64) -> Result<String, String> {
    let ds = domains(records);
    if ds.len() != 1024 {
        return Err(format!("{} domain records, expected 1024", ds.len()));
    }
    let starved: Vec<_> = ds
        .iter()
        .filter(|d| d.cpu_ns == 0)
        .map(|d| d.name.as_str())
        .collect();
    if !starved.is_empty() {
        return Err(format!("{} domains got no CPU: {starved:?}", starved.len()));
    }
    let (jain, figures) = jain_over_cpu(&ds);
    if jain < min {
        return Err(format!("{figures}: below {min:.4}"));
    }
    let figures = format!("{figures} (at least {min:.4})");
    let run = records.run().ok_or("no run record")?;
    let hist = run
        .slice_late_hist
        .as_ref()
        .ok_or("the run record has no slice_late_hist, which the hypervisor writes")?;
    // A bucket's bound is the upper end of its range: those past 256 µs start at 256 µs.
    let late: u64 = hist
        .iter()
        .filter(|&&(bound, _)| bound > 256_000)
        .map(|&(_, n)| n)
        .sum();
    if late > CROWD_LATE_SLICES {
        return Err(format!(
            "{figures}, but {late} slices ended 256 µs or more late (at most \
             {CROWD_LATE_SLICES}): a CPU lost the emulated processor in the hypervisor"
        ));
    }
    Ok(format!(
        "{figures}, {late} slices ended 256 µs or more late"
    ))
}

/// How many of the ~4,000 slices of [`crowd_fair`]'s run may end 256 µs or more late.
const CROWD_LATE_SLICES: u64 = 20;

fn crowd_fair_bvt(records: &[Record]) -> Result<String, String> {
    crowd_fair(records, 0.99)
}

/// credit2 runs each of the 1024 hogs for its shortest slice (`MIN_TIMER`, 500 µs: their
/// credits stay within a slice of each other), so over 1 s each gets a whole number of
/// slices, 3.9 on average: even a perfect rotation gives a tenth of them 3 and the rest 4,
/// Jain 0.9944 ([`quantized_jain`]), and one domain in twenty a slice off that costs about
/// 0.003. The bound is that floor less [`CROWD_QUANTUM_MARGIN`] (0.9863 at 1024), at most
/// 0.99. What the
/// domain count does alone, with the same build (session 13, under `-icount`): 1000
/// domains (exactly 4 slices each) 0.9993, 900 (4.4) 0.9864, 1023 0.9895, 1024 0.9895 (the
/// build before, with a 1 ms tick: 0.9993, 0.9868, 0.9905, 0.9920); schedsim's ideal
/// machine gives 0.9935 at 1024. The failures this case caught (0.987 with 68 slices
/// late, 0.97, 0.82) stay below the bound, and the late slices have their own.
fn crowd_fair_credit2(records: &[Record]) -> Result<String, String> {
    let cpu: Vec<u64> = domains(records).iter().map(|d| d.cpu_ns).collect();
    let floor = quantized_jain(&cpu, sched::credit2::MIN_TIMER as u64);
    crowd_fair(records, (floor - CROWD_QUANTUM_MARGIN).min(0.99))
}

/// How far below the whole-slice floor ([`quantized_jain`]) credit2's crowd may fall. The
/// hypervisor sits 0.002-0.005 below it (900, 1023 and 1024 domains), and a change that
/// leaves the policy's rules alone moves a run by up to 0.002 (the tick's phase: 0.9920 and
/// 0.9908 at 1024); a run as unfair as the lock-hold bug (0.987, 0.0074 below) is caught by
/// its late slices ([`CROWD_LATE_SLICES`]).
const CROWD_QUANTUM_MARGIN: f64 = 0.008;

/// Jain's index of the fairest split of the CPU time in `cpu` (ns, per domain) into whole
/// slices of `slice_ns`: every domain gets `k` or `k + 1` of the `total / slice_ns`
/// slices. The best a policy that hands out `slice_ns` at a time can score.
fn quantized_jain(cpu: &[u64], slice_ns: u64) -> f64 {
    let n = cpu.len() as u64;
    if n == 0 || slice_ns == 0 {
        return 1.0;
    }
    let slices = cpu.iter().sum::<u64>() / slice_ns;
    let (k, more) = (slices / n, slices % n);
    let (k, more, n) = (k as f64, more as f64, n as f64);
    let sum = n * k + more;
    let squares = (n - more) * k * k + more * (k + 1.0) * (k + 1.0);
    if squares == 0.0 {
        1.0
    } else {
        sum * sum / (n * squares)
    }
}

/// Domain0 carries out an experiment with the most domains a spec may have: every one is
/// created, started, measured and reported, and none died. (With a 1 MiB heap, Domain0 ran
/// out of memory at 1024 domains once its per-domain figures grew.)
fn most_domains_reported(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    let want = sched::limits::MAX_GUEST_DOMAINS;
    if ds.len() != want {
        return Err(format!("{} domain records, expected {want}", ds.len()));
    }
    match ds.iter().find(|d| !d.exit.is_ok()) {
        Some(d) => Err(format!("domain {} ended {:?}", d.name, d.exit)),
        None => Ok(format!("{want} domains reported")),
    }
}

/// Every domain ran and worked (for cases whose point lies elsewhere).
fn every_domain_ran(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    match ds.iter().find(|d| d.cpu_ns == 0 || d.work == 0) {
        Some(d) => Err(format!("{} never ran", d.name)),
        None if ds.is_empty() => Err("no domain records".into()),
        None => Ok(format!("{} domains ran", ds.len())),
    }
}

/// Every domain ran, and the hypervisor's clocks agree with the world: the run's wall-clock
/// start (real-time clock at boot + system time) is within a day of the host's clock, and
/// Domain0's own virtual time is positive and no more than the system time elapsed.
fn domains_ran_and_clocks_agree(records: &[Record]) -> Result<String, String> {
    let note = every_domain_ran(records)?;
    let run = records.run().ok_or("no run record")?;
    let host_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos() as u64;
    let wall = hypervisor_only(run.wallclock_start_ns, "wallclock_start_ns")?;
    if wall.abs_diff(host_ns) > 86_400 * 1_000_000_000 {
        return Err(format!(
            "the run's wall-clock start {wall} ns is more than a day from the host's {host_ns} ns"
        ));
    }
    let dom0 = hypervisor_only(run.dom0_cpu_ns, "dom0_cpu_ns")?;
    let elapsed = hypervisor_only(run.start_ns, "start_ns")? + run.duration_ns;
    if dom0 == 0 || dom0 > elapsed {
        return Err(format!(
            "Domain0's virtual time {dom0} ns, system time elapsed {elapsed} ns"
        ));
    }
    Ok(format!(
        "{note}; wall clock {} s from the host's, Domain0 ran {} µs",
        wall.abs_diff(host_ns) / 1_000_000_000,
        dom0 / 1000
    ))
}

/// Each domain's share of the CPU time is within 2 points of w / Σw (the property tests
/// hold schedsim to 1; TCG adds up to a point of noise over six seconds).
fn shares_follow_weights(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    let total: u64 = ds.iter().map(|d| d.cpu_ns).sum();
    let weights: u64 = ds.iter().map(|d| d.weight).sum();
    if ds.len() != 8 || total == 0 || weights == 0 {
        return Err(format!(
            "{} domains, {total} ns, weights {weights}",
            ds.len()
        ));
    }
    let mut worst = 0.0f64;
    for d in &ds {
        let share = 100.0 * d.cpu_ns as f64 / total as f64;
        let target = 100.0 * d.weight as f64 / weights as f64;
        worst = worst.max((share - target).abs());
        if (share - target).abs() > 2.0 {
            return Err(format!(
                "{} (weight {}): share {share:.2}%, target {target:.2}%",
                d.name, d.weight
            ));
        }
    }
    Ok(format!("largest share error {worst:.2} points"))
}

/// The `event` records: every event applied, and its lateness (applied − planned), ns.
fn applied_events(records: &[Record]) -> Result<Vec<(&abi::tool::results::Event, u64)>, String> {
    let events: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    events
        .into_iter()
        .map(|e| match (e.ok, e.applied_ns) {
            (true, Some(at)) => Ok((e, at.saturating_sub(e.at_ns))),
            _ => Err(format!(
                "event `{}` on `{}` at {} ms: not applied ({})",
                e.what,
                e.target,
                e.at_ns / 1_000_000,
                e.error.as_deref().unwrap_or("no time")
            )),
        })
        .collect()
}

/// Each policy swap's `applied_ns` is the instant the hypervisor unpaused the pool's
/// domains in the new instance (`SysctlReply::PolicySet`): no guest runs then, since the swap
/// paused every one and waited for it to leave its CPU. It was once Domain0's clock after the
/// call, which in a swapped pool runs again only after the guests the unpause woke first:
/// 60-300 ms late, with guests running on every CPU (policy-swaps.toml: one swap every
/// 150 ms among 3 hogs on 2 CPUs).
fn swaps_dated_while_held(records: &[Record], trace: &Path) -> Result<String, String> {
    let events = applied_events(records)?;
    let run = records.run().ok_or("no run record")?;
    let t0 = hypervisor_only(run.start_ns, "start_ns")?;
    let runs: Vec<(f64, f64)> = trace_events(trace)?
        .iter()
        .filter(|e| e["ph"] == "X" && e["tid"].as_u64().is_some_and(|t| t >= 1000))
        .filter_map(|e| Some((e["ts"].as_f64()?, e["ts"].as_f64()? + e["dur"].as_f64()?)))
        .collect();
    let mut swaps = 0;
    let mut latest = 0u64;
    for (e, late) in events.iter().filter(|(e, _)| e.what.starts_with("policy")) {
        let at = (t0 + e.applied_ns.unwrap_or(0)) as f64 / 1e3;
        // The trace's times are in µs with ns digits: 1 µs either side for rounding.
        if let Some(&(a, b)) = runs.iter().find(|&&(a, b)| a < at - 1.0 && b > at + 1.0) {
            return Err(format!(
                "`{}` at {} ms is dated {:.1} ms into the interval, while a guest ran \
                 ({:.1}-{:.1} ms): not when the pool's domains were held for the swap",
                e.what,
                e.at_ns / 1_000_000,
                e.applied_ns.unwrap_or(0) as f64 / 1e6,
                a / 1e3 - t0 as f64 / 1e6,
                b / 1e3 - t0 as f64 / 1e6
            ));
        }
        swaps += 1;
        latest = latest.max(*late);
    }
    if swaps == 0 {
        return Err("no policy swap applied".into());
    }
    Ok(format!(
        "{swaps} swaps each dated while the pool's guests were held, at most {:.1} ms after \
         its time",
        latest as f64 / 1e6
    ))
}

/// reweight.toml: w0's weight doubles (256 to 512) halfway through; over the interval it
/// gets 0.5 CPU before and 0.8 after, the others 0.5 and 0.4: w0's share of the domains'
/// CPU time is 0.325 (from the event's actual time). Had the change come at the start it
/// would be 0.4; never, 0.25: w0 must be closer to the timeline's share than halfway to
/// either (3.75 points; under TCG on a loaded host credit gave 29.4–32.0%).
fn weight_change_takes_effect_at_its_time(records: &[Record]) -> Result<String, String> {
    let events = applied_events(records)?;
    let [(event, _)] = events[..] else {
        return Err(format!("{} event records, not 1", events.len()));
    };
    let ds = domains(records);
    let duration = records
        .run()
        .map(|r| r.duration_ns)
        .ok_or("no run record")?;
    let total: u64 = ds.iter().map(|d| d.cpu_ns).sum();
    if ds.len() != 4 || total == 0 {
        return Err(format!("{} domains, {total} ns", ds.len()));
    }
    let at = event.applied_ns.unwrap_or(0) as f64 / duration as f64;
    // CPUs w0 gets over the interval, over the 2 CPUs all four share.
    let want = (0.5 * at + 0.8 * (1.0 - at)) / 2.0;
    let got = ds[0].cpu_ns as f64 / total as f64;
    let (never, at_start) = (0.5 / 2.0, 0.8 / 2.0);
    if (got - want).abs() >= (want - never).abs().min((at_start - want).abs()) / 2.0 {
        return Err(format!(
            "w0 got {:.1}% of the CPU time; with its weight doubled at {:.0} ms: {:.1}%",
            100.0 * got,
            at * duration as f64 / 1e6,
            100.0 * want
        ));
    }
    // And in its 250 ms windows: 0.5 of a CPU each before, 0.8 and 0.4 after.
    let windows = windows_before_and_after(
        records,
        &[
            ("w0", 0.5, 0.8),
            ("w1", 0.5, 0.4),
            ("w2", 0.5, 0.4),
            ("w3", 0.5, 0.4),
        ],
        0.15,
    )?;
    Ok(format!(
        "w0 {:.1}% (want {:.1}%); {windows}",
        100.0 * got,
        100.0 * want,
    ))
}

/// Domain `name`'s CPU time in the windows that lie wholly within `from..to` (ns from the
/// start of the interval), in CPUs (1.0 = a whole CPU); `None` if no window does.
fn window_cpus(records: &[Record], name: &str, from: u64, to: u64) -> Option<f64> {
    let mut start = 0;
    let (mut ns, mut span) = (0u64, 0u64);
    for w in records.iter().filter_map(|r| match r {
        Record::Window(w) if w.name == name => Some(w),
        _ => None,
    }) {
        if start >= from && w.t_ns <= to {
            ns += w.cpu_ns;
            span += w.t_ns - start;
        }
        start = w.t_ns;
    }
    (span > 0).then(|| ns as f64 / span as f64)
}

/// Checks that each `(domains, before, after)` got `before` CPUs in the windows before the
/// one event and `after` in those from 500 ms after it was applied (a change that takes
/// effect, and not before), each within `tolerance` of the CPUs wanted. `domains` is one
/// name, or several joined by `+` whose CPUs are summed (a class of identical domains). The
/// first 250 ms are left out (the domains start), as is the settling after the event.
fn windows_before_and_after(
    records: &[Record],
    want: &[(&str, f64, f64)],
    tolerance: f64,
) -> Result<String, String> {
    let events = applied_events(records)?;
    let [(event, late)] = events[..] else {
        return Err(format!("{} event records, not 1", events.len()));
    };
    let end = records.run().ok_or("no run record")?.duration_ns;
    let at = event.applied_ns.unwrap_or(0);
    let mut worst = (0.0f64, "", "");
    for &(name, before, after) in want {
        for (when, from, to, cpus) in [
            ("before", 250_000_000, at, before),
            ("after", at + 500_000_000, end, after),
        ] {
            let got = name
                .split('+')
                .map(|n| window_cpus(records, n, from, to))
                .sum::<Option<f64>>()
                .ok_or(format!("{name}: no window {when} the event"))?;
            let off = (got - cpus).abs() / cpus;
            if off > tolerance {
                return Err(format!(
                    "{name} got {got:.3} CPUs in the windows {when} `{}` (applied at {} ms), \
                     want {cpus:.3} ± {:.0}%",
                    event.what,
                    at / 1_000_000,
                    100.0 * tolerance
                ));
            }
            if off >= worst.0 {
                worst = (off, name, when);
            }
        }
    }
    Ok(format!(
        "each within {:.1}% of its share before and after `{}` ({} us late; the most off: \
         {} {})",
        100.0 * worst.0,
        event.what,
        late / 1000,
        worst.1,
        worst.2
    ))
}

/// pools.toml on the hypervisor, in 250 ms windows: `rrpool` (rr, CPU 0) holds `lat0`,
/// `lat1` and Domain0; `creditpool` (credit, CPUs 1 and 2) the four `bulk` of weights 1, 1,
/// 2, 2, and `lat1` from its move at 2 s. Before the move each `lat` gets half of CPU 0 and
/// the bulk domains their weights' part of two CPUs; after it `lat0` gets all of CPU 0 and
/// `lat1` its part (256 of 1792) of the other two. Within 15% (in one pool of three CPUs
/// `lat0` would get 0.375; a move ignored would leave it at 0.5). The run and domain records
/// name the pools as the hypervisor has them.
fn pools_isolate_and_a_move_takes_effect(records: &[Record]) -> Result<String, String> {
    let run = records.run().ok_or("no run record")?;
    let pools: Vec<(String, Vec<u32>, String)> = run
        .pools
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.cpus.clone(), p.policy.clone()))
        .collect();
    let want_pools = [
        ("rrpool".to_string(), vec![0], "rr".to_string()),
        ("creditpool".to_string(), vec![1, 2], "credit".to_string()),
    ];
    if pools != want_pools {
        return Err(format!("run.pools {pools:?}, not {want_pools:?}"));
    }
    let names: Vec<(&str, Option<&str>)> = domains(records)
        .iter()
        .map(|d| (d.name.as_str(), d.pool.as_deref()))
        .collect();
    let want_names = [
        ("lat0", Some("rrpool")),
        ("lat1", Some("creditpool")),
        ("bulk0", Some("creditpool")),
        ("bulk1", Some("creditpool")),
        ("bulk2", Some("creditpool")),
        ("bulk3", Some("creditpool")),
    ];
    if names != want_names {
        return Err(format!("domains and pools {names:?}, not {want_names:?}"));
    }
    let bulk = |w: f64| (2.0 * w / 1536.0, 2.0 * w / 1792.0);
    let (light, heavy) = (bulk(256.0), bulk(512.0));
    windows_before_and_after(
        records,
        &[
            ("lat0", 0.5, 1.0),
            ("lat1", 0.5, 2.0 * 256.0 / 1792.0),
            ("bulk0", light.0, light.1),
            ("bulk1", light.0, light.1),
            ("bulk2", heavy.0, heavy.1),
            ("bulk3", heavy.0, heavy.1),
        ],
        0.15,
    )
}

/// policy-swap.toml on the hypervisor, in 250 ms windows: four hogs of weights 128, 128, 384,
/// 384 on 2 CPUs under rr (half a CPU each) until the pool's policy becomes credit at 2 s (a
/// quarter and three quarters). The pool is Domain0's own, so this also checks that Domain0
/// goes on running after it replaced the policy it runs under. Each pair of equal weights
/// within 20% of its CPUs (a swap ignored would leave the light pair at twice its share,
/// the heavy pair a third under; a new instance that never ticked would not account, and
/// would do the same); each domain's own error is reported. Asserted per pair since
/// session 14: credit1, as Xen's, can leave one domain alone on a CPU while the other CPU
/// holds three until the lone one's credit runs out (`csched_load_balance` steals only for
/// a CPU whose next vCPU is OVER), which put single domains 11-28% off in the 1.4 s after
/// the swap in 5 of 11 deterministic `-icount` runs (swap times 2.00-2.09 s, two builds)
/// and 17.4-17.6% off in 3 of about 30 real-clock rounds, failing the old per-domain 15%
/// bound; the pairs were 0.4-9.4% off under `-icount` and 0.2-12.4% on the real clock at
/// loads 2-4 (the 12.4% with the swap 182 ms late, a load burst).
fn policy_swap_takes_effect(records: &[Record]) -> Result<String, String> {
    let pairs =
        windows_before_and_after(records, &[("w0+w1", 1.0, 0.5), ("w2+w3", 1.0, 1.5)], 0.2)?;
    let each = windows_before_and_after(
        records,
        &[
            ("w0", 0.5, 0.25),
            ("w1", 0.5, 0.25),
            ("w2", 0.5, 0.75),
            ("w3", 0.5, 0.75),
        ],
        f64::INFINITY,
    )?;
    Ok(format!("pairs: {pairs}; domains: {each}"))
}

/// departure.toml: 4 hogs on 2 CPUs; `w3` destroyed at 1 s, `w2` paused from 2 s to 3 s.
/// Each domain gets, within 15% (or 50 ms), the CPU time its fair share of the 2 CPUs
/// among the domains running gives, segment by segment between the events' actual times
/// (credit under TCG on a loaded host was seen 11% apart between two equal hogs; an event
/// ignored would be 36% off for `w2`, 290% for `w3`).
fn departures_and_pauses_take_effect_at_their_time(records: &[Record]) -> Result<String, String> {
    let events = applied_events(records)?;
    // No one fair share over the whole interval: the summary says so rather than judge
    // w3, destroyed at 1 s of 4, 75% short of a share it could not have had.
    let s = summary(records)?;
    if s.jain.is_some() || s.share_err_max.is_some() {
        return Err(format!(
            "the summary judges the whole interval's fairness (jain {:?}, share_err_max {:?}) \
             across departures and pauses: expected null",
            s.jain, s.share_err_max
        ));
    }
    let duration = records
        .run()
        .map(|r| r.duration_ns)
        .ok_or("no run record")?;
    let ds = domains(records);
    let mut running: Vec<bool> = vec![true; ds.len()];
    let mut want = vec![0.0f64; ds.len()];
    let mut from = 0u64;
    let mut segments: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|(e, _)| {
            (
                e.applied_ns.unwrap_or(0),
                e.target.as_str(),
                e.what.as_str(),
            )
        })
        .collect();
    segments.push((duration, "", ""));
    for (to, target, what) in segments {
        let n = running.iter().filter(|r| **r).count().max(1) as f64;
        for (d, r) in running.iter().enumerate() {
            if *r {
                want[d] += (2.0 / n).min(1.0) * to.saturating_sub(from) as f64;
            }
        }
        from = to;
        if let Some(d) = ds.iter().position(|d| d.name == target) {
            running[d] = what == "unpause";
        }
    }
    let mut worst = 0.0f64;
    for (d, w) in ds.iter().zip(&want) {
        let got = d.cpu_ns as f64;
        worst = worst.max((got - w).abs() / w);
        if (got - w).abs() > (0.15 * w).max(50e6) {
            return Err(format!(
                "{} got {:.1} ms of CPU; its share between the events is {:.1} ms",
                d.name,
                got / 1e6,
                w / 1e6
            ));
        }
    }
    let late = events.iter().map(|(_, l)| *l).max().unwrap_or(0);
    Ok(format!(
        "largest error {:.1}%; latest event {} us late",
        100.0 * worst,
        late / 1000
    ))
}

/// arrival.toml: 16 tenants (`new*`) start one by one among 16 running domains on 2 CPUs.
/// Each gets, within 30% (or 20 ms), the fair share of 2 CPUs among those running from its
/// event's actual time to the end: nothing before it, its share after.
fn arrivals_get_their_share_from_their_start(records: &[Record]) -> Result<String, String> {
    let events = applied_events(records)?;
    let duration = records
        .run()
        .map(|r| r.duration_ns)
        .ok_or("no run record")?;
    let mut starts: Vec<(String, u64)> = events
        .iter()
        .map(|(e, _)| (e.target.clone(), e.applied_ns.unwrap_or(0)))
        .collect();
    starts.sort_by_key(|s| s.1);
    let ds = domains(records);
    let running_from_start = ds.iter().filter(|d| d.group == "run").count();
    let mut worst_late = 0;
    for (_, late) in &events {
        worst_late = worst_late.max(*late);
    }
    for (i, (name, at)) in starts.iter().enumerate() {
        // From each arrival to the next, 2 CPUs among the domains running then.
        let mut want = 0.0;
        for (k, (_, from)) in starts.iter().enumerate().skip(i) {
            let to = starts.get(k + 1).map_or(duration, |s| s.1).min(duration);
            want += 2.0 * to.saturating_sub(*from) as f64 / (running_from_start + k + 1) as f64;
        }
        let d = ds
            .iter()
            .find(|d| &d.name == name)
            .ok_or(format!("no domain {name}"))?;
        let got = d.cpu_ns as f64;
        if (got - want).abs() > (0.3 * want).max(20e6) {
            return Err(format!(
                "{name}, started at {} ms, got {:.1} ms of CPU; its fair share from then on is \
                 {:.1} ms",
                at / 1_000_000,
                got / 1e6,
                want / 1e6
            ));
        }
    }
    Ok(format!(
        "{} arrivals each within their share; latest event {} us late",
        starts.len(),
        worst_late / 1000
    ))
}

/// Each weight class's share of the CPU time the domains got is within 1 point of its
/// weights over Σw (consolidation.toml: 48 domains of weight 256, 48 of 512).
fn classes_follow_weights(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    let total: u64 = ds.iter().map(|d| d.cpu_ns).sum();
    let weights: u64 = ds.iter().map(|d| d.weight).sum();
    if ds.len() != 96 || total == 0 || weights == 0 {
        return Err(format!(
            "{} domains, {total} ns, weights {weights}",
            ds.len()
        ));
    }
    if let Some(d) = ds.iter().find(|d| d.cpu_ns == 0) {
        return Err(format!("{} got no CPU time", d.name));
    }
    // Within 1 point. On the real clock with more emulated CPUs than host cores, credit2 and
    // bvt miss it: QEMU's CPU threads wait for a core and the guest's slices end late (a
    // median of 2 ms with 4 CPUs here, 64 µs with 2), so a light credit2 vCPU, burning
    // credit twice as fast, runs into CREDIT_MIN (Xen's floor at -10 ms) and its debt beyond
    // is forgiven (1.2-1.7 points off), and bvt's `overrun_us` leaves each stretched run's
    // excess uncharged, which goes per run, not per weight (34.1-34.9% for the light class
    // in 7 of 10 runs). That is the host's doing, so the 4-CPU cases run under `-icount`
    // (below), where every policy is within 0.3 points.
    let run = records.run().ok_or("no run record")?;
    let mut classes: Vec<u64> = ds.iter().map(|d| d.weight).collect();
    classes.sort_unstable();
    classes.dedup();
    let mut notes = Vec::new();
    for w in classes {
        let of = ds.iter().filter(|d| d.weight == w);
        let cpu: u64 = of.clone().map(|d| d.cpu_ns).sum();
        let weight: u64 = of.map(|d| d.weight).sum();
        let share = 100.0 * cpu as f64 / total as f64;
        let target = 100.0 * weight as f64 / weights as f64;
        if (share - target).abs() > 1.0 {
            return Err(format!(
                "weight {w}: class share {share:.2}%, target {target:.2}%"
            ));
        }
        notes.push(format!("weight {w}: {share:.2}% of {target:.2}%"));
    }
    // Credit (with `exact_credit = 1`, the spec's) reports its counters as it shuts down:
    // it accounted, and neither rounded up nor halved.
    if run.policy == "credit" {
        let c = records
            .iter()
            .find_map(|r| match r {
                Record::Counters(c) => Some(&c.counters),
                _ => None,
            })
            .ok_or("credit wrote no counters record")?;
        let get = |k: &str| {
            c.get(k)
                .copied()
                .ok_or(format!("counters has no {k}: {c:?}"))
        };
        if get("acct_periods")? == 0
            || get("credits_rounded_up")? != 0
            || get("credit_halved")? != 0
        {
            return Err(format!("exact credit's counters: {c:?}"));
        }
        notes.push(format!("{} accounting periods", get("acct_periods")?));
    }
    Ok(notes.join(", "))
}

/// The capped domain stays within its cap (20% of a CPU) plus one point.
fn cap_holds(records: &[Record]) -> Result<String, String> {
    let run = records.run().ok_or("no run record")?;
    let capped = in_group(records, "capped")?;
    let pct = 100.0 * capped.cpu_ns as f64 / run.duration_ns.max(1) as f64;
    if pct > 21.0 {
        return Err(format!("capped domain got {pct:.2}% of a CPU, cap 20%"));
    }
    if pct < 10.0 {
        return Err(format!(
            "capped domain got only {pct:.2}% of a CPU: the cap is far too strict"
        ));
    }
    Ok(format!("capped at 20%: {pct:.2}%"))
}

/// Each hostile domain was killed, with the reason its act deserves; the good ones ran on.
fn hostile_killed_others_fine(records: &[Record]) -> Result<String, String> {
    let want = [
        ("cli", "killed: privileged instruction"),
        ("hlt", "killed: privileged instruction"),
        ("out", "killed: privileged instruction"),
        ("cr3", "killed: privileged instruction"),
        ("hvread", "killed: page fault at 0xffffffff80100000"),
        ("physmap", "killed: page fault at 0xffff800000000000"),
        ("unmapped", "killed: page fault at 0x30000000"),
        ("wild", "killed: page fault"),
        ("mm", "ok"),
        ("good", "ok"),
    ];
    let ds = domains(records);
    for d in &ds {
        let group = d.group.as_str();
        let exit = d.exit.to_string();
        let (_, prefix) = want
            .iter()
            .find(|(g, _)| *g == group)
            .ok_or(format!("unexpected group {group}"))?;
        if !exit.starts_with(prefix) {
            return Err(format!("{} ended `{exit}`, expected `{prefix}...`", d.name));
        }
        if group == "good" && d.work == 0 {
            return Err(format!(
                "{} made no progress next to hostile neighbours",
                d.name
            ));
        }
    }
    if ds.len() != 11 {
        return Err(format!("{} domain records, expected 11", ds.len()));
    }
    Ok(
        "8 hostile domains killed for the right reasons, every forbidden page-table update \
         refused, 2 good ones ran"
            .into(),
    )
}

/// The attacker that yields before every tick gets no more than its fair quarter (+5 points).
fn attacker_no_more_than_fair(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    let total: u64 = ds.iter().map(|d| d.cpu_ns).sum();
    let attacker = ds
        .iter()
        .find(|d| d.group == "attacker")
        .ok_or("no attacker")?;
    let share = 100.0 * attacker.cpu_ns as f64 / total.max(1) as f64;
    if share > 30.0 {
        return Err(format!(
            "the yield attacker got {share:.1}% of the CPU; fair is 25%"
        ));
    }
    Ok(format!("attacker share {share:.1}%"))
}

/// The latency domain woke up and ran every period (it made progress among the hogs), and
/// its record gives the deadline of the last timer it set (`timer_deadline_ns`, system time:
/// the phase `schedsim --costs-from` wakes it at), one set in the run: after the measured
/// interval began and at most 100 ms after it ended (Domain0 reads it just after).
fn latency_domain_runs(records: &[Record]) -> Result<String, String> {
    let lat = in_group(records, "lat")?;
    if lat.wakeups == 0 || lat.work == 0 {
        return Err(format!("the latency domain never woke or ran: {lat:?}"));
    }
    let run = records.run().ok_or("no run record")?;
    let start = run.start_ns.ok_or("the run record has no start_ns")?;
    let end = start + run.duration_ns;
    match lat.timer_deadline_ns {
        Some(t) if (start..=end + 100_000_000).contains(&t) => {}
        other => {
            return Err(format!(
                "the latency domain's last timer deadline is {other:?}: expected one set in \
                 the run, from {start} to {end} ns of system time (and at most 100 ms after)"
            ));
        }
    }
    Ok(format!(
        "{} wake-ups, p50 {} ns, p99 {} ns, max {} ns",
        lat.wakeups, lat.wake_lat_p50_ns, lat.wake_lat_p99_ns, lat.wake_lat_max_ns
    ))
}

/// `scripts/experiments/rtds.toml`: two domains served 2 ms every 10 ms among 126
/// neighbours. `rtcpu` (cpu-bound, no extra time) got between 10% and 25% of one CPU: far
/// above the 1/128 of the machine a proportional policy gives it (credit in schedsim: 2% of
/// a CPU), and not much above its budget (schedsim: exactly 20%; under TCG on a host with a
/// load of 5 to 7 on 2 cores: 15% to 19%, since a stalled QEMU thread counts as run time and
/// the hypervisor's own work after each switch runs on the vCPUs' time). `rt` (1 ms of work every
/// 10 ms) woke and worked, and its median wake-up latency is within its period. How many of
/// its periods it completed and its maximum latency are reported, not bounded: on this host
/// they went from 244 of 300 and 12 ms to 93 of 300 and 80 ms from one run to the next, as
/// the host descheduled QEMU's threads (schedsim's test, on the same spec, asserts every
/// period and a maximum within the period).
fn rtds_guarantee_holds(records: &[Record]) -> Result<String, String> {
    const PERIOD_NS: u64 = 10_000_000;
    let run = records.run().ok_or("no run record")?;
    let (rt, rtcpu) = (in_group(records, "rt")?, in_group(records, "rtcpu")?);
    let pct = 100.0 * rtcpu.cpu_ns as f64 / run.duration_ns.max(1) as f64;
    if !(10.0..=25.0).contains(&pct) {
        return Err(format!(
            "`rtcpu` got {pct:.2}% of a CPU; its budget is 20% (2 ms every 10 ms)"
        ));
    }
    let periods = run.duration_ns / PERIOD_NS;
    if rt.work == 0 || rt.wakeups == 0 || rt.wake_lat_p50_ns > PERIOD_NS {
        return Err(format!(
            "`rt` completed {} of {periods} periods in {} wake-ups, wake-up latency p50 {} ns \
             (period {PERIOD_NS} ns)",
            rt.work, rt.wakeups, rt.wake_lat_p50_ns
        ));
    }
    Ok(format!(
        "`rtcpu` got {pct:.2}% of a CPU; `rt` completed {} of {periods} periods, wake-up \
         latency p50 {} ns, p99 {} ns, max {} ns",
        rt.work, rt.wake_lat_p50_ns, rt.wake_lat_p99_ns, rt.wake_lat_max_ns
    ))
}

/// Every `fpu` domain checked its registers many times and never saw them change (a change
/// ends the domain with a failure, which Domain0's verdict, the exit status, reports too).
fn registers_never_leak(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    if ds.len() != 4 {
        return Err(format!("{} domain records, expected 4", ds.len()));
    }
    for d in &ds {
        if !d.exit.is_ok() || d.work == 0 || d.switches < 10 {
            return Err(format!(
                "{} ended `{}` after {} checks and {} switches",
                d.name, d.exit, d.work, d.switches
            ));
        }
    }
    let checks: u64 = ds.iter().map(|d| d.work).sum();
    let switches: u64 = ds.iter().map(|d| d.switches).sum();
    Ok(format!(
        "{checks} clean register checks across {switches} switches"
    ))
}

/// The 2-vCPU domain got about twice the CPU time of each 1-vCPU domain (every vCPU had a
/// CPU to itself), and both of its vCPUs worked.
fn vcpus_each_get_a_cpu(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    let pair = ds
        .iter()
        .find(|d| d.group == "pair")
        .ok_or("no 2-vCPU domain")?;
    let singles: Vec<&&Domain> = ds.iter().filter(|d| d.group == "single").collect();
    if pair.vcpus != 2 || singles.len() != 2 {
        return Err(format!(
            "expected one 2-vCPU and two 1-vCPU domains, got {}",
            ds.len()
        ));
    }
    let single_ns = singles.iter().map(|d| d.cpu_ns).sum::<u64>() as f64 / 2.0;
    let ratio = pair.cpu_ns as f64 / single_ns.max(1.0);
    if !(1.6..=2.4).contains(&ratio) {
        return Err(format!(
            "the 2-vCPU domain got {ratio:.2}× a 1-vCPU domain's CPU time, expected about 2"
        ));
    }
    Ok(format!(
        "2-vCPU domain: {ratio:.2}× the CPU time of a 1-vCPU domain"
    ))
}

/// Every domain of the run ended `ok` and each of those in `groups` made progress.
fn all_ok_and_progressed(records: &[Record], groups: &[&str]) -> Result<(), String> {
    let ds = domains(records);
    for d in &ds {
        let exit = d.exit.to_string();
        if exit != "ok" {
            return Err(format!("{} ended `{exit}`", d.name));
        }
    }
    for g in groups {
        let members: Vec<_> = ds.iter().filter(|d| d.group == *g).collect();
        if members.is_empty() {
            return Err(format!("no {g} domain"));
        }
        if let Some(d) = members.iter().find(|d| d.work == 0) {
            return Err(format!("{} made no progress", d.name));
        }
    }
    Ok(())
}

/// Batched page-table updates: every mmu domain kept mapping, checking and unmapping
/// without a refusal; the note gives the CPU time per update for each batch size.
fn page_table_updates_work(records: &[Record]) -> Result<String, String> {
    all_ok_and_progressed(records, &["batch1", "batch16", "batch512"])?;
    let notes: Vec<String> = domains(records)
        .iter()
        .map(|d| {
            format!(
                "{} {} ns/update",
                d.group.as_str(),
                d.cpu_ns / d.work.max(1)
            )
        })
        .collect();
    Ok(notes.join(", "))
}

/// TLB shootdown: the reading vCPU saw every remap as soon as it returned (a stale read
/// ends the domain with code 3).
fn remaps_seen_at_once(records: &[Record]) -> Result<String, String> {
    all_ok_and_progressed(records, &["shootdown"])?;
    let d = domains(records)[0];
    Ok(format!(
        "{} remaps, each seen by the other vCPU's CPU at once",
        d.work
    ))
}

/// The split block device: every frontend's data read back intact (a wrong byte ends it
/// with code 3), the writer's data outlived it (the verifier found it), the backend served.
fn block_data_intact(records: &[Record]) -> Result<String, String> {
    all_ok_and_progressed(records, &["blkback", "blkseq", "blkrand", "blkverify"])?;
    let run = records.run().ok_or("no run record")?;
    let back = in_group(records, "blkback")?;
    Ok(format!(
        "{} requests served, {} per second",
        back.work,
        back.work * 1_000_000_000 / run.duration_ns.max(1)
    ))
}

/// The split network device: every packet arrived intact and in order at each frontend (a
/// bad one ends it with code 3); the note gives each bridge's throughput.
fn packets_intact(records: &[Record]) -> Result<String, String> {
    all_ok_and_progressed(
        records,
        &["netback", "netfront", "netbacksmall", "netsmall"],
    )?;
    let run = records.run().ok_or("no run record")?;
    let secs = run.duration_ns.max(1) as f64 / 1e9;
    let rate = |group: &str| -> f64 {
        domains(records)
            .iter()
            .filter(|d| d.group == group)
            .map(|d| d.work)
            .sum::<u64>() as f64
            / secs
            / 1e6
    };
    Ok(format!(
        "1500-byte packets {:.1} MB/s, 500-byte packets {:.1} MB/s received",
        rate("netfront"),
        rate("netsmall")
    ))
}

/// Event channels: the pinger's round trips and the ponger's answers match (at most one in
/// flight at each end of the interval), and there were plenty of them.
fn every_event_arrives_once(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    let work = |group: &str| ds.iter().find(|d| d.group == group).map(|d| d.work);
    let (Some(ping), Some(pong)) = (work("pinger"), work("ponger")) else {
        return Err("expected a pinger and a ponger".into());
    };
    if ping < 100 {
        return Err(format!("only {ping} round trips"));
    }
    if ping.abs_diff(pong) > 2 {
        return Err(format!(
            "{ping} round trips but {pong} answers: events lost or doubled"
        ));
    }
    let run = records.run().ok_or("no run record")?;
    Ok(format!(
        "{ping} round trips, {} µs each",
        run.duration_ns / ping / 1000
    ))
}

/// Each vCPU of the timer-VIRQ domains took about one event per period (between a half and
/// all of them: late wake-ups under TCG skip periods, never add them). The 2-vCPU domain
/// has a timer VIRQ per vCPU, so it takes twice as many.
fn timer_events_arrive(records: &[Record]) -> Result<String, String> {
    let run = records.run().ok_or("no run record")?;
    let periods = run.duration_ns / 1_000_000;
    let mut notes = Vec::new();
    for group in ["timer", "timer2"] {
        let d = in_group(records, group)?;
        let expected = periods * u64::from(d.vcpus);
        let events = d.work;
        if events * 2 < expected || events > expected + 4 {
            return Err(format!(
                "{group}: {events} timer events in {periods} periods of 1 ms on {} vCPUs",
                d.vcpus
            ));
        }
        notes.push(format!("{group} {events}/{expected}"));
    }
    Ok(format!(
        "timer events per vCPU-period: {} in {periods} periods",
        notes.join(", ")
    ))
}

/// `timer-wake.toml` under `selftest=slow-timer-wake`: the latency domain kept waking all
/// through the measured interval, at least one period in 40 ms (with the fix about one in
/// 8 ms under TCG; a lost FIRED mark left it asleep for good within its first periods:
/// 0 periods in the interval, which the runner itself fails with exit 1).
///
/// Under `selftest=slow-timer-fire` as well: the latency domain ended `ok`, every block its
/// fired timer ended having found the timer's event pending (the guest checks, and crashes
/// its domain with a `FAILURE` line if not).
fn stray_timers_end_their_blocks(records: &[Record]) -> Result<String, String> {
    let run = records.run().ok_or("no run record")?;
    let lat = in_group(records, "lat")?;
    if !lat.exit.is_ok() {
        return Err(format!(
            "the latency domain ended `{}`, expected `ok`: a block returned for its timer \
             before the timer's event was pending (its console says which vCPU)",
            lat.exit
        ));
    }
    let least = run.duration_ns / 40_000_000;
    if lat.work < least.max(1) {
        return Err(format!(
            "the latency domain completed {} periods in {} ms, expected at least {} (one per \
             40 ms): it slept through a timer that had fired",
            lat.work,
            run.duration_ns / 1_000_000,
            least.max(1)
        ));
    }
    Ok(format!(
        "the latency domain completed {} periods in {} ms ({} wake-ups)",
        lat.work,
        run.duration_ns / 1_000_000,
        lat.wakeups
    ))
}

/// A one-vCPU domain's CPU and waiting time together no longer than the interval (0.2% and
/// 100 µs of slack): it is never on a CPU and waiting for one at once.
fn runs_or_waits_never_both(records: &[Record], d: &Domain) -> Result<(), String> {
    if d.vcpus != 1 {
        return Err(format!("{} has {} vCPUs, expected 1", d.name, d.vcpus));
    }
    let run = records.run().ok_or("no run record")?;
    let (both, interval) = (d.cpu_ns + d.wait_ns, run.duration_ns);
    if both > interval + interval / 500 + 100_000 {
        return Err(format!(
            "{} ran {} µs and waited {} µs in an interval of {} µs: {} µs counted as both",
            d.name,
            d.cpu_ns / 1000,
            d.wait_ns / 1000,
            interval / 1000,
            (both - interval) / 1000
        ));
    }
    Ok(())
}

/// `block-pending.toml`: a vCPU alone on its CPU that blocks with an event pending, each
/// block returning at once, ran counted as running: its waits under a tenth of its CPU time
/// (Domain0's turns on the CPU; it waited as long as it ran when the `Same` path left it
/// runnable), its CPU and waiting time together no longer than the interval (0.2% and
/// 100 µs of slack: it ran on its CPU from each wake-up to the decision that picked it
/// again, and that time counted as waiting too, 1.4-2.4% of the interval, until session
/// 23: `kerncore::account`), its wake-ups served within 1 ms at p99 (8.8 ms then), and it
/// blocked at least a thousand times (one in 100 µs of work).
fn blocks_with_an_event_pending_run_on(records: &[Record]) -> Result<String, String> {
    let bp = in_group(records, "bp")?;
    runs_or_waits_never_both(records, bp)?;
    if bp.wakeups < 1000 {
        return Err(format!(
            "{} woke {} times, expected at least 1000 (a block every 100 µs)",
            bp.name, bp.wakeups
        ));
    }
    if bp.wait_ns * 10 > bp.cpu_ns {
        return Err(format!(
            "{} waited {} ms and ran {} ms alone on its CPU, expected waits under a tenth: \
             it was counted waiting while it ran on after its blocks",
            bp.name,
            bp.wait_ns / 1_000_000,
            bp.cpu_ns / 1_000_000
        ));
    }
    if bp.wake_lat_p99_ns > 1_000_000 {
        return Err(format!(
            "{}'s wake-ups p99 {} µs alone on its CPU, expected within 1 ms",
            bp.name,
            bp.wake_lat_p99_ns / 1000
        ));
    }
    Ok(format!(
        "{} blocks with an event pending; waited {:.1}% of its {} ms, wake-ups p99 {} ns",
        bp.wakeups,
        100.0 * bp.wait_ns as f64 / bp.cpu_ns.max(1) as f64,
        bp.cpu_ns / 1_000_000,
        bp.wake_lat_p99_ns
    ))
}

/// `woken-on-cpu.toml`: a blocker woken on its CPU and then switched out waits from its
/// switch-out, seen by every live snapshot: each 50 ms window holds no more CPU and waiting
/// time than it was long (`sched::windows::problems`, which the runner holds every run to:
/// exit 1 otherwise), and the blocker's whole interval neither. Counted from the wake-up
/// and unseen until the switch-in, a wait begun before a window fell into it: windows
/// 5.9-10.6 ms over their 50 ms under bvt, rr, credit2 and stride with session 22's
/// accounting.
fn woken_vcpus_wait_from_their_switch_out(records: &[Record]) -> Result<String, String> {
    let bp = in_group(records, "bp")?;
    runs_or_waits_never_both(records, bp)?;
    let windows = sched::windows::by_window(records).len();
    if windows < 30 {
        return Err(format!("{windows} windows, expected about 40 of 50 ms"));
    }
    if bp.switches < 20 {
        return Err(format!(
            "{} was switched in {} times, expected at least 20 (the hog takes its CPU)",
            bp.name, bp.switches
        ));
    }
    Ok(format!(
        "{windows} windows add up; {} ran {} ms, waited {} ms, switched in {} times",
        bp.name,
        bp.cpu_ns / 1_000_000,
        bp.wait_ns / 1_000_000,
        bp.switches
    ))
}

/// `departure.toml` in 300 ms windows: the windows add up (`sched::windows::problems`,
/// which holds a destroyed domain to nothing in the windows after its destroy, and which
/// the runner holds every run to: exit 1 otherwise), and `w3`,
/// destroyed at 1 s, did its last work in the window its destroy fell in. Domain0 left a
/// destroyed domain's figures at the boundary before, so what it did until the destroy went
/// into the interval's last window, 3 s after it was gone (57 ms of CPU in a 100 ms window
/// of 2 CPUs the others filled: the runner's own check failed the run).
fn a_destroyed_domains_windows_end_with_it(records: &[Record]) -> Result<String, String> {
    let w3 = records
        .domains()
        .find(|d| d.name == "w3")
        .ok_or("no `w3` domain")?;
    let applied = records
        .iter()
        .find_map(|r| match r {
            Record::Event(e) if e.target == "w3" && e.what == "destroy" && e.ok => e.applied_ns,
            _ => None,
        })
        .ok_or("no applied destroy of `w3`")?;
    let windows = sched::windows::by_window(records);
    let holding = windows
        .iter()
        .find(|(end, _)| *end > applied)
        .and_then(|(_, ws)| ws.iter().find(|w| w.id == w3.id))
        .ok_or("no window holds the destroy")?;
    if holding.cpu_ns == 0 {
        return Err(format!(
            "`w3` got no CPU in the window its destroy at {} ms fell in",
            applied / 1_000_000
        ));
    }
    Ok(format!(
        "{} windows add up; `w3` got {} ms in the window of its destroy at {} ms, none after",
        windows.len(),
        holding.cpu_ns / 1_000_000,
        applied / 1_000_000
    ))
}

/// `snapshot-hold.toml` under `selftest=slow-snapshot`: the other CPU stops for each held
/// snapshot 50 ms late and the reading takes 50 ms longer, both charged to the hog held,
/// and both fall outside the interval: every hog's CPU time per unit of work within 10% of
/// the others' (at most 1.06 in eight runs). With the start's instant read before the
/// reading, the held hog was counted 50 ms of CPU in which it did nothing: 1.26-1.36 in
/// three runs; with the end's read once the other CPU had stopped, 1.15-1.19 in three.
fn held_snapshots_fall_outside_the_interval(records: &[Record]) -> Result<String, String> {
    let hogs: Vec<&Domain> = records.domains().filter(|d| d.workload == "cpu").collect();
    if hogs.len() != 4 || hogs.iter().any(|d| d.work == 0) {
        return Err(format!("{} hogs, expected 4, each with work", hogs.len()));
    }
    let per_work: Vec<f64> = hogs
        .iter()
        .map(|d| d.cpu_ns as f64 / d.work as f64)
        .collect();
    let (lo, hi) = per_work
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let shown: Vec<String> = per_work
        .iter()
        .map(|x| format!("{:.1}", x / 1000.0))
        .collect();
    if hi > lo * 1.10 {
        return Err(format!(
            "the hogs' CPU time per unit of work, µs: {}: one was counted CPU time in which \
             it did nothing (a held snapshot's stopping or reading, inside the interval)",
            shown.join(", ")
        ));
    }
    Ok(format!(
        "the hogs' CPU time per unit of work, µs: {}",
        shown.join(", ")
    ))
}

/// `pause-gap.toml` under `selftest=slow-switch-out`: `target`, paused by Domain0 200 times
/// for 1 ms while its CPU is nearly always inside a switch-out, counted neither CPU nor
/// waiting time through its pauses: its CPU and waiting time together within the interval
/// less its pauses (2% and 1 ms of slack; a pause that lands while it is still on the CPU
/// counts as CPU until the switch-out). A pause between a switch-out's two steps counted
/// the whole pause as waiting with the old `account_out`.
fn pauses_count_neither_cpu_nor_waiting(records: &[Record]) -> Result<String, String> {
    let run = records.run().ok_or("no run record")?;
    let target = in_group(records, "target")?;
    let events = applied_events(records)?;
    let (mut paused, mut pauses, mut since) = (0u64, 0u64, None);
    for (e, late) in &events {
        let at = e.at_ns + late;
        match (e.what.as_str(), since) {
            ("pause", None) => since = Some(at),
            ("unpause", Some(from)) => {
                paused += at.saturating_sub(from);
                pauses += 1;
                since = None;
            }
            _ => return Err(format!("event `{}` out of order at {} ns", e.what, at)),
        }
    }
    if pauses < 150 {
        return Err(format!("{pauses} pauses applied, expected 200"));
    }
    let room = run.duration_ns - paused;
    let both = target.cpu_ns + target.wait_ns;
    if both > room + room / 50 + 1_000_000 {
        return Err(format!(
            "`target` ran {} ms and waited {} ms while unpaused for {} ms of {} ({pauses} \
             pauses): {} ms of its pauses counted",
            target.cpu_ns / 1_000_000,
            target.wait_ns / 1_000_000,
            room / 1_000_000,
            run.duration_ns / 1_000_000,
            (both - room) / 1_000_000
        ));
    }
    Ok(format!(
        "`target` ran {} ms and waited {} ms, unpaused {} ms of {} ({pauses} pauses)",
        target.cpu_ns / 1_000_000,
        target.wait_ns / 1_000_000,
        room / 1_000_000,
        run.duration_ns / 1_000_000
    ))
}

/// `poll-race.toml`, also under `selftest=slow-poll`: hostile-sched's `poll-wakes` held all
/// three rounds (a unit of `work` each: each poll ended within 300 ms of the event it polled
/// for, none on its 1 s guard timer) and exited `ok`. A FAILURE crashes it; a run that ends
/// before the last round reports (polls stuck on their guards) leaves fewer units.
fn polls_wake_among_other_events(records: &[Record]) -> Result<String, String> {
    let d = in_group(records, "poll-wakes")?;
    if !d.exit.is_ok() || d.work != 3 {
        return Err(format!(
            "{} ended `{}` with {} of 3 rounds held: a poll slept through the event it \
             polled for (its console says which round)",
            d.name, d.exit, d.work
        ));
    }
    Ok(format!(
        "{} held 3 of 3 rounds: every poll woke on its event",
        d.name
    ))
}

/// `block-upcall.toml` under `selftest=slow-deliver`: both hostile-pair `block-upcall`
/// domains exited `ok` (a block back without its upcall is a FAILURE, which crashes B), and
/// B blocked on a pending event in at least a quarter of its 200 rounds with its upcall
/// entered on the way back (a unit of `work` each): the stall put the window in reach.
fn blocks_enter_the_upcall(records: &[Record]) -> Result<String, String> {
    let (a, b) = (in_group(records, "bu-a")?, in_group(records, "bu-b")?);
    for d in [a, b] {
        if !d.exit.is_ok() {
            return Err(format!(
                "{} ended `{}`: a block went back without its upcall (its console says \
                 which round)",
                d.name, d.exit
            ));
        }
    }
    if b.work < 50 {
        return Err(format!(
            "{} blocked on a pending event in {} of 200 rounds, expected at least 50: the \
             sender's window was not reached",
            b.name, b.work
        ));
    }
    Ok(format!(
        "{} of 200 blocks on a pending event entered the upcall on the way back",
        b.work
    ))
}

/// `timer-upcall.toml` under `selftest=slow-deliver`: both hostile-pair `timer-upcall`
/// domains exited `ok` (a wake-up back without its upcall is a FAILURE, which crashes B), and
/// B's timer woke it inside the sender's window, the upcall entered on the way back, in at
/// least a quarter of its 200 rounds (a unit of `work` each).
fn timer_wakes_enter_the_upcall(records: &[Record]) -> Result<String, String> {
    let (a, b) = (in_group(records, "tu-a")?, in_group(records, "tu-b")?);
    for d in [a, b] {
        if !d.exit.is_ok() {
            return Err(format!(
                "{} ended `{}`: a timer's wake-up went back without the upcall of the event \
                 in flight (its console says which round)",
                d.name, d.exit
            ));
        }
    }
    if b.work < 50 {
        return Err(format!(
            "{}'s timer woke it inside the sender's window in {} of 200 rounds, expected at \
             least 50",
            b.name, b.work
        ));
    }
    Ok(format!(
        "{} of 200 timer wake-ups with an event in flight entered the upcall on the way back",
        b.work
    ))
}

/// `quiet-flood.toml`: both hostile-pair `quiet-flood` domains exited `ok` (a check that
/// went wrong crashes one: B's console says which and by how much), and B measured both
/// phases (a unit of `work`).
fn sends_to_a_pending_port_are_quiet(records: &[Record]) -> Result<String, String> {
    let (a, b) = (in_group(records, "qf-a")?, in_group(records, "qf-b")?);
    for d in [a, b] {
        if !d.exit.is_ok() {
            return Err(format!(
                "{} ended `{}`: a flood of sends to a pending port interrupted or woke its \
                 receiver (its console says which phase)",
                d.name, d.exit
            ));
        }
    }
    if b.work != 1 {
        return Err(format!(
            "{} did not get through both phases (work {}, expected 1)",
            b.name, b.work
        ));
    }
    Ok(format!(
        "{} took no interrupt and no poll wake-up for a flood of sends to its pending port",
        b.name
    ))
}

/// `console-stall.toml` under `selftest=slow-uart`: every domain exited `ok`, and the
/// latency domain beside the two console writers completed at least 80% of its 1 ms
/// periods over the 2 s run (a period it overran is skipped, not made up).
fn console_writers_leave_their_cpus_alone(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    if let Some(d) = ds.iter().find(|d| !d.exit.is_ok()) {
        return Err(format!("{} ended `{}`", d.name, d.exit));
    }
    let lat = in_group(records, "by-lat")?;
    if lat.work < 1600 {
        return Err(format!(
            "the latency domain completed {} of its 2000 periods beside the console writers, \
             expected at least 1600: their console calls held its CPU",
            lat.work
        ));
    }
    Ok(format!(
        "the latency domain completed {} of its 2000 periods beside two console writers",
        lat.work
    ))
}

/// `lookup-storm.toml` under `selftest=slow-lookup`: every domain exited `ok`, and each of
/// Domain0's six destroys was applied within 80 ms of its time (23 ms at most in 18 with the
/// writer's priority; 140-250 ms at worst in each run without).
fn destroys_get_the_domain_table(records: &[Record]) -> Result<String, String> {
    if let Some(d) = domains(records).iter().find(|d| !d.exit.is_ok()) {
        return Err(format!("{} ended `{}`", d.name, d.exit));
    }
    let events = applied_events(records)?;
    if events.len() != 6 {
        return Err(format!(
            "{} events applied, expected 6 destroys",
            events.len()
        ));
    }
    let worst = events.iter().map(|&(_, late)| late).max().unwrap_or(0);
    if let Some((e, late)) = events.iter().find(|&&(_, late)| late > 80_000_000) {
        return Err(format!(
            "the destroy of `{}` was applied {:.1} ms late, more than 80: Domain0 waited for \
             the domain table while the guest's look-ups held it",
            e.target,
            *late as f64 / 1e6
        ));
    }
    Ok(format!(
        "6 destroys beside a guest's look-up storm, the latest {:.1} ms late",
        worst as f64 / 1e6
    ))
}

/// `flush-convoy.toml`: the hostile-pt `flush-convoy` domain exited `ok` (a remap over
/// 10 ms beside the long batches crashes it: its console says how long) and got to the end
/// (a unit of `work`).
fn flushes_wait_one_continuation(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    let d = ds
        .iter()
        .find(|d| d.group == "convoy")
        .ok_or("no convoy domain")?;
    if !d.exit.is_ok() || d.work != 1 {
        return Err(format!(
            "{} ended `{}` with work {} (expected `ok`, 1): a remap waited for a whole \
             batch on the other CPU, or the case did not finish (its console says)",
            d.name, d.exit, d.work
        ));
    }
    Ok(format!(
        "{}: every remap beside the long batches within 10 ms",
        d.name
    ))
}

/// `close-rebind.toml` under `selftest=slow-close`: both hostile-pair `close-rebind` domains
/// exited `ok`, and their sends on port 1 at the end were both taken or both refused (a unit
/// of `work` each if taken): bound at both ends, or at neither.
fn both_ends_agree(records: &[Record]) -> Result<String, String> {
    let (a, b) = (in_group(records, "cr-a")?, in_group(records, "cr-b")?);
    for d in [a, b] {
        if !d.exit.is_ok() {
            return Err(format!("{} ended `{}`", d.name, d.exit));
        }
    }
    let said = |w: u64| if w == 1 { "taken" } else { "refused" };
    if a.work != b.work {
        return Err(format!(
            "A's send on its port 1 was {}, B's {}: the channel is bound at one end only \
             (a close unbound the far end of the binding made after it)",
            said(a.work),
            said(b.work)
        ));
    }
    Ok(format!(
        "both ends' sends {} after a close and a rebind in between",
        said(a.work)
    ))
}

/// Every domain, once each ended `ok` (else the first that did not, named).
fn all_ended_ok(records: &[Record]) -> Result<Vec<&Domain>, String> {
    let ds = domains(records);
    match ds.iter().find(|d| !d.exit.is_ok()) {
        Some(d) => Err(format!("{} ended `{}`", d.name, d.exit)),
        None => Ok(ds),
    }
}

/// How many a run record's timing histogram counted (0 when the run has none).
fn count_of(l: &Option<abi::tool::results::Lateness>) -> u64 {
    l.iter().flat_map(|l| l.hist.iter().map(|b| b.1)).sum()
}

/// `timer-storm-costs.toml`: every domain exited `ok`, and the run record's `set_timer_time`
/// counts at most two `set_timer`s per wake-up of the domains beside the storms (plus 100):
/// one per sleep, not one per call of `storm`'s re-arming loop, nor one per `poll` or
/// `block` of `pending-storm` returning at once on an event left pending. The storms' own
/// wake-ups are left out: each of `pending-storm`'s blocks counts one, and judged against
/// them, its calls counted passed.
fn set_timer_costs_follow_the_sleepers(records: &[Record]) -> Result<String, String> {
    let ds = all_ended_ok(records)?;
    for storm in ["storm", "pending-storm"] {
        in_group(records, storm)?;
    }
    let run = records.run().ok_or("no run record")?;
    let counted = count_of(&run.set_timer_time);
    let wakeups: u64 = ds
        .iter()
        .filter(|d| !d.group.ends_with("storm"))
        .map(|d| d.wakeups)
        .sum();
    if counted > 2 * wakeups + 100 {
        return Err(format!(
            "the run record counts {counted} set_timers for {wakeups} wake-ups of the domains \
             beside the storms: the storms' calls, not the sleepers' set_timers, price \
             `schedsim --costs-from`'s"
        ));
    }
    Ok(format!(
        "{counted} set_timers counted for {wakeups} wake-ups beside two timer storms"
    ))
}

/// `switch-storm.toml`: every domain exited `ok`, and the run record's `switch_time` counts
/// at most three switches per wake-up of the domains beside the storm (plus 500: slice ends,
/// Domain0, idle), while the storm's vCPUs yielded to each other at least ten times that
/// often: switches within a domain, which load no address space, are not counted, or a
/// guest's own yields would price every other domain's switches in `schedsim --costs-from`.
fn switch_costs_follow_address_spaces(records: &[Record]) -> Result<String, String> {
    let ds = all_ended_ok(records)?;
    let storm = in_group(records, "storm")?;
    let run = records.run().ok_or("no run record")?;
    let counted = count_of(&run.switch_time);
    let wakeups: u64 = ds
        .iter()
        .filter(|d| d.group != "storm")
        .map(|d| d.wakeups)
        .sum();
    let bound = 3 * wakeups + 500;
    if storm.work < 10 * bound {
        return Err(format!(
            "the storm yielded {} times, too few against {bound} to tell its switches apart",
            storm.work
        ));
    }
    if counted > bound {
        return Err(format!(
            "the run record counts {counted} switches for {wakeups} wake-ups beside a storm of \
             {} yields within one domain: its switches, which load no address space, price \
             `schedsim --costs-from`'s",
            storm.work
        ));
    }
    Ok(format!(
        "{counted} switches counted for {wakeups} wake-ups beside {} yields within a domain",
        storm.work
    ))
}

/// Both `hostile-grant` domains saw every misuse of their grants and ports refused with the
/// right error and exited cleanly (a wrong result ends one with a failure code; `work` 1 says
/// it got to the end, since `ok` also describes a domain still running), and the bystander
/// ran on.
fn grant_misuse_refused(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    for group in ["granter", "grantee"] {
        let d = ds
            .iter()
            .find(|d| d.group == group)
            .ok_or(format!("no {group} domain"))?;
        if !d.exit.is_ok() || d.work != 1 {
            return Err(format!(
                "the {group} ended `{}` with work {}, expected `ok` with work 1 (all checked)",
                d.exit, d.work
            ));
        }
    }
    let bystander = ds
        .iter()
        .find(|d| d.group == "bystander")
        .ok_or("no bystander domain")?;
    if bystander.work == 0 {
        return Err("the bystander made no progress".into());
    }
    Ok(format!(
        "granter and grantee ended ok, bystander did {} units",
        bystander.work
    ))
}

/// A run of the XTF-style suite wrote its run record (the cases are judged by `Also::Xtf`).
fn suite_ran(records: &[Record]) -> Result<String, String> {
    let run = records.run().ok_or("no run record")?;
    Ok(format!("{} domains", run.domains))
}

/// xtf-grace.toml: every policy swap was applied within [`GRACE_SWAP_LATE_NS`] of its time,
/// though each waits for a grace period on the CPU where `spin-masked` spins in ring 3 and
/// never enters the hypervisor of its own accord (under -icount: 2-47 ms late; 992 ms when
/// only an exception's entry counted as quiescent, the grace period ending only when the
/// spinner stopped).
fn grace_periods_end_beside_a_spinner(records: &[Record]) -> Result<String, String> {
    let events = applied_events(records)?;
    if events.len() != 4 {
        return Err(format!(
            "{} events applied, expected the 4 swaps",
            events.len()
        ));
    }
    let late: Vec<String> = events
        .iter()
        .map(|(e, late)| format!("{} {:.1} ms", e.what, *late as f64 / 1e6))
        .collect();
    if let Some((e, l)) = events.iter().find(|(_, l)| *l > GRACE_SWAP_LATE_NS) {
        return Err(format!(
            "`{}` applied {:.1} ms late (at most {} ms): its grace period waited on the \
             spinner's CPU",
            e.what,
            *l as f64 / 1e6,
            GRACE_SWAP_LATE_NS / 1_000_000
        ));
    }
    Ok(format!(
        "{}; swaps late by {}",
        suite_ran(records)?,
        late.join(", ")
    ))
}

/// [`grace_periods_end_beside_a_spinner`]'s bound.
const GRACE_SWAP_LATE_NS: u64 = 250_000_000;

/// Churn (`churn.toml`): Domain0's own checks passed (the exit status says every check found
/// the frames, ports, grants, mappings and heap exactly at their baseline), and its `bench`
/// records show that the run did what it is for: every lifetime of the spec, each way of
/// ending one (right after unpause, running, paused, never started, killed), event ports and
/// grants in use, and no heap growth.
fn churn_back_at_baseline(records: &[Record]) -> Result<String, String> {
    churn_held(records, "churn", true)
}

/// `churn-kill.toml` (under credit2 and rtds): as [`churn_back_at_baseline`], for domains
/// that die while their other vCPUs switch in and out of the other CPU (hostile-sched
/// `kill-picked`), without ports or grants.
fn churn_kill_back_at_baseline(records: &[Record]) -> Result<String, String> {
    churn_held(records, "churn-kill", false)
}

/// What [`churn_back_at_baseline`] checks, for the churn of `experiments/NAME.toml`; `shared`:
/// its domains connect ports and grants, which must show in use.
fn churn_held(records: &[Record], name: &str, shared: bool) -> Result<String, String> {
    let spec = sched::spec::Spec::from_file(spec(name)).map_err(|e| e.to_string())?;
    let churn = spec
        .churn
        .ok_or(format!("{name}.toml has no [churn] table"))?;
    let bench = |name: &str| -> Result<u64, String> {
        let b = records
            .bench(name)
            .ok_or(format!("no `{name}` bench record"))?;
        b.value
            .as_u64()
            .ok_or(format!("`{name}`: {} is not a count", b.value))
    };
    let lifetimes = bench("churn_lifetimes")?;
    if lifetimes != churn.lifetimes {
        return Err(format!(
            "{lifetimes} lifetimes, the spec asks for {}",
            churn.lifetimes
        ));
    }
    let growth = bench("churn_heap_growth_per_1000")?;
    if growth != 0 {
        return Err(format!(
            "the heap grew by {growth} bytes per 1000 lifetimes"
        ));
    }
    let checks = bench("churn_checks")?;
    if checks < churn.lifetimes / churn.check_every {
        return Err(format!(
            "{checks} checks of the figures; one every {} lifetimes makes at least {}",
            churn.check_every,
            churn.lifetimes / churn.check_every
        ));
    }
    let mut ends = Vec::new();
    for end in ["after_unpause", "running", "paused", "unstarted", "killed"] {
        let n = bench(&format!("churn_end_{end}"))?;
        if n == 0 {
            return Err(format!("no lifetime ended `{end}`"));
        }
        ends.push(n);
    }
    if ends.iter().sum::<u64>() != lifetimes {
        return Err(format!(
            "the ends {ends:?} do not add up to {lifetimes} lifetimes"
        ));
    }
    let (ports, grants) = (bench("churn_max_ports")?, bench("churn_max_grants")?);
    // Domain0 holds one port of its own.
    if shared && (ports < 2 || grants == 0) {
        return Err(format!(
            "at most {ports} ports and {grants} grants in use: the pairs never connected"
        ));
    }
    Ok(format!(
        "{lifetimes} lifetimes ({}/s), {checks} checks all at baseline, ended {ends:?} \
         (after unpause, running, paused, unstarted, killed), up to {ports} ports, {grants} \
         grants, {} mappings",
        bench("churn_lifetimes_per_s")?,
        bench("churn_max_grant_maps")?
    ))
}

/// A fuzzing campaign (`fuzz` domains of `experiments/NAME.toml`) held: the run's exit status
/// (checked before this) says the hypervisor never faulted or hung (the watchdog) and Domain0
/// found every frame back and every domain ending as expected; here, from the records, each
/// fuzzer's `work` is exactly the `calls` its spec gave (it issued them all, got no result
/// its oracles refuse, and was not stalled), or, without an end (`calls = 0`), is not zero
/// (a violation would have ended it: `ok` is required); one that was to raise an exception
/// (`mode = 2`) was killed and the others ended `ok`; every bystander (`mode = 1`) ended `ok`
/// and made progress.
fn fuzz_campaign(records: &[Record], name: &str) -> Result<String, String> {
    let spec = sched::spec::Spec::from_file(experiments_dir().join(format!("{name}.toml")))
        .map_err(|e| e.to_string())?;
    let plan = spec.plan();
    let ds = domains(records);
    if ds.len() != plan.len() {
        return Err(format!(
            "{} domain records for {} planned",
            ds.len(),
            plan.len()
        ));
    }
    let (mut calls, mut fuzzers, mut bystanders, mut rounds) = (0, 0, 0, 0);
    for d in &ds {
        let name = d.name.as_str();
        let p = plan
            .iter()
            .find(|p| p.name == name)
            .ok_or(format!("{name} is not in the spec"))?;
        if p.workload != "fuzz" {
            continue;
        }
        let arg = |k: &str| p.args.get(k).copied().unwrap_or(0);
        let exit = d.exit.to_string();
        let work = d.work;
        match arg("mode") {
            1 => {
                if exit != "ok" || work == 0 {
                    return Err(format!(
                        "bystander {name} ended `{exit}` after {work} rounds: it must end ok and \
                         progress"
                    ));
                }
                bystanders += 1;
                rounds += work;
            }
            mode => {
                let killed = mode == 2;
                if killed != exit.starts_with("killed:") || (!killed && exit != "ok") {
                    return Err(format!(
                        "fuzzer {name} ended `{exit}`, expected {}",
                        if killed { "killed: ..." } else { "ok" }
                    ));
                }
                if arg("calls") == 0 && work == 0 {
                    return Err(format!("fuzzer {name} (without an end) issued no call"));
                }
                if arg("calls") != 0 && work != arg("calls") {
                    return Err(format!(
                        "fuzzer {name} issued {work} calls of {} (stalled, or an oracle failed)",
                        arg("calls")
                    ));
                }
                fuzzers += 1;
                calls += work;
            }
        }
    }
    if fuzzers == 0 {
        return Err("no fuzzing domain in the spec".into());
    }
    Ok(format!(
        "{fuzzers} fuzzers issued {calls} hypercalls, all results as the ABI allows; \
         {bystanders} bystanders intact after {rounds} rounds"
    ))
}

fn fuzz_short_campaign(records: &[Record]) -> Result<String, String> {
    fuzz_campaign(records, "fuzz")
}

fn fuzz_smp_campaign(records: &[Record]) -> Result<String, String> {
    fuzz_campaign(records, "fuzz-smp")
}

/// Every exception class (`fuzz-exceptions.toml`: 26 classes, and `int N` for all 256 N)
/// killed its raiser, and only it: the `good` domain progressed (the exit status, checked
/// before, says the hypervisor survived and every frame came back).
fn exceptions_kill_only_their_raisers(records: &[Record]) -> Result<String, String> {
    let ds = domains(records);
    let mut reasons = std::collections::BTreeSet::new();
    let (mut exc, mut int) = (0, 0);
    for d in &ds {
        let exit = d.exit.to_string();
        match d.group.as_str() {
            "good" => {
                if exit != "ok" || d.work == 0 {
                    return Err(format!(
                        "the good domain ended `{exit}` after {} units",
                        d.work
                    ));
                }
            }
            group @ ("exc" | "int") => {
                let Some(reason) = exit.strip_prefix("killed: ") else {
                    return Err(format!("{} ended `{exit}`, expected killed", d.name));
                };
                // "page fault at 0x... (rip ...)" -> "page fault"
                let kind = reason
                    .split([' ', '('])
                    .take_while(|w| !w.is_empty() && *w != "at" && !w.starts_with("0x"));
                reasons.insert(kind.collect::<Vec<_>>().join(" "));
                if group == "exc" {
                    exc += 1;
                } else {
                    int += 1;
                }
            }
            other => return Err(format!("unexpected group {other}")),
        }
    }
    if (exc, int) != (26, 256) {
        return Err(format!(
            "{exc} exception and {int} int N domains, expected 26 and 256"
        ));
    }
    Ok(format!(
        "26 exception classes and int 0..255 each killed its raiser ({}); the good domain ran",
        reasons.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// A Linux engine run's domain records: the run record says linux, the runner's summary
/// is there, and there are `n` domains.
fn linux_run(records: &[Record], n: usize) -> Result<Vec<&Domain>, String> {
    use abi::tool::results::Engine;
    let run = records.run().ok_or("no run record")?;
    if run.engine != Engine::Linux {
        return Err(format!(
            "the run record says engine {:?}, not linux",
            run.engine
        ));
    }
    summary(records)?;
    let ds = domains(records);
    if ds.len() != n {
        return Err(format!("{} domain records, expected {n}", ds.len()));
    }
    Ok(ds)
}

/// The Linux engine's records (`--engine linux`, linux-mix.toml): the run is Linux's, every
/// domain ran and progressed, the ping pair lost no event, the sleepers measured wake-ups
/// (median <= 99th percentile <= the largest, to the histogram's bucket), the capped hog
/// stayed near its cap, and the runner's summary is there.
fn linux_engine_records(records: &[Record]) -> Result<String, String> {
    let ds = linux_run(records, 8)?;
    let run = records.run().ok_or("no run record")?;
    for d in &ds {
        if !d.exit.is_ok() || d.cpu_ns == 0 || d.work == 0 {
            return Err(format!(
                "{} ({}) ended `{}` with cpu_ns {} and work {}",
                d.name, d.workload, d.exit, d.cpu_ns, d.work
            ));
        }
    }
    let by = |group: &str| ds.iter().find(|d| d.group == group).copied();
    let (Some(ping), Some(pong)) = (by("pinger"), by("ponger")) else {
        return Err("expected a pinger and a ponger".into());
    };
    // At any instant the two counts differ by at most one either way (each side counts
    // after its own send or receive), so over an interval by at most two.
    if ping.work.abs_diff(pong.work) > 2 {
        return Err(format!(
            "{} round trips but {} answers: events lost or doubled",
            ping.work, pong.work
        ));
    }
    for g in ["pinger", "ponger", "lat", "io"] {
        let d = by(g).ok_or(format!("no domain of group {g}"))?;
        let bound = d.wake_lat_max_ns + d.wake_lat_max_ns / 4 + 1;
        if d.wakeups == 0 || d.wake_lat_p50_ns > d.wake_lat_p99_ns || d.wake_lat_p99_ns > bound {
            return Err(format!(
                "{}: {} wake-ups, p50 {} ns, p99 {} ns, max {} ns",
                d.name, d.wakeups, d.wake_lat_p50_ns, d.wake_lat_p99_ns, d.wake_lat_max_ns
            ));
        }
    }
    let capped = by("capped").ok_or("no capped domain")?;
    let share = capped.cpu_ns as f64 / run.duration_ns as f64;
    if share > 0.30 {
        return Err(format!(
            "the domain capped at 20% had {:.1}% of a CPU",
            share * 100.0
        ));
    }
    Ok(format!(
        "policy {}, {} round trips, capped hog at {:.1}% of a CPU, latency p50 {} us",
        run.policy,
        ping.work,
        share * 100.0,
        by("lat").map_or(0, |d| d.wake_lat_p50_ns / 1000)
    ))
}

/// The split devices on the Linux engine: the run says linux; every blk and net domain
/// ended ok (a wrong byte or packet ends a frontend with code 3), the writer included, and
/// each that keeps running did work; the backends' requests served and packets forwarded
/// add up to what their frontends report; the frontends that wait on events recorded
/// wake-ups with ordered percentiles.
fn linux_split_devices(records: &[Record]) -> Result<String, String> {
    let ds = linux_run(records, 8)?;
    let run = records.run().ok_or("no run record")?;
    all_ok_and_progressed(records, &["blkback", "blkseq", "blkrand", "blkverify"])?;
    all_ok_and_progressed(records, &["netback", "netfront"])?;
    let writer = ds
        .iter()
        .find(|d| d.group == "blkwriter")
        .ok_or("no blkwriter")?;
    if !writer.exit.is_ok() {
        return Err(format!("the writer ended `{}`", writer.exit));
    }
    let sum = |group: &str| -> u64 {
        ds.iter()
            .filter(|d| d.group.starts_with(group) && d.group != format!("{group}back"))
            .map(|d| d.work)
            .sum()
    };
    let one = |group: &str| ds.iter().find(|d| d.group == group).map_or(0, |d| d.work);
    // Both sides count inside the same interval, a batch or a ring's worth apart at its ends.
    let (served, completed) = (one("blkback"), sum("blk"));
    if served.abs_diff(completed) > 4 * 16 {
        return Err(format!(
            "the blk backend served {served} requests, its frontends completed {completed}"
        ));
    }
    let forwarded = one("netback");
    let received: u64 = sum("net") / 1500;
    if forwarded.abs_diff(received) > 4 * 16 {
        return Err(format!(
            "the bridge forwarded {forwarded} packets, its frontends received {received}"
        ));
    }
    // Each group that waits on events recorded wake-ups (one frontend may never have had to
    // wait: under a steady stream its next packet was always there), each in order.
    for group in ["blkseq", "netfront"] {
        let woke: u64 = ds
            .iter()
            .filter(|d| d.group == group)
            .map(|d| d.wakeups)
            .sum();
        if woke == 0 {
            return Err(format!("group {group}: no wake-ups recorded"));
        }
    }
    for d in ds
        .iter()
        .filter(|d| (d.group == "blkseq" || d.group == "netfront") && d.wakeups > 0)
    {
        let bound = d.wake_lat_max_ns + d.wake_lat_max_ns / 4 + 1;
        if d.wake_lat_p50_ns > d.wake_lat_p99_ns || d.wake_lat_p99_ns > bound {
            return Err(format!(
                "{}: {} wake-ups, p50 {} ns, p99 {} ns, max {} ns",
                d.name, d.wakeups, d.wake_lat_p50_ns, d.wake_lat_p99_ns, d.wake_lat_max_ns
            ));
        }
    }
    let secs = run.duration_ns.max(1) as f64 / 1e9;
    Ok(format!(
        "policy {}, blk {:.0} requests/s, net {:.1} MB/s received",
        run.policy,
        served as f64 / secs,
        sum("net") as f64 / secs / 1e6
    ))
}

/// Results over time (`windows.toml`, `window_ms`): the windows tile the interval, hold
/// every domain once each and add up to its `domain` record (`sched::windows::problems`);
/// there are no more windows than planned (a boundary Domain0 reaches after the next one
/// is due merges two: how many it took is reported, not asserted, being a matter of
/// timing); the summary has one Jain's index per window; every
/// domain record has its latency histogram, whose counts are at most its wake-ups (one
/// more per vCPU: the runner's own check, `results::latency_problems`, fails the run
/// otherwise) and, for the latency domain, are there. Jain per window is reported, not asserted: under TCG on a
/// loaded 2-core host a 1 s window holds about six 5 ms slices per domain, and the
/// hypervisor's snapshot holds every CPU while it waits for the slowest.
fn windows_add_up(records: &[Record]) -> Result<String, String> {
    let run = records.run().ok_or("no run record")?;
    let problems = sched::windows::problems(records);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let windows = sched::windows::by_window(records);
    // The plan's interval (3 s in windows.toml); the run's may be longer, if Domain0 took
    // the last snapshot late.
    let planned = 3;
    if windows.is_empty() || windows.len() > planned {
        return Err(format!(
            "{} windows over {} ns; planned {planned} of 1 s",
            windows.len(),
            run.duration_ns
        ));
    }
    let jain = summary(records)?
        .window_jain
        .clone()
        .ok_or("the summary has no window_jain")?;
    if jain.len() != windows.len() || jain.iter().any(|j| !(0.0..=1.0 + 1e-9).contains(j)) {
        return Err(format!(
            "window_jain {jain:?} for {} windows",
            windows.len()
        ));
    }
    for d in domains(records) {
        let hist = d
            .wake_lat_hist
            .as_ref()
            .ok_or(format!("`{}` has no wake_lat_hist", d.name))?;
        let count: u64 = hist.iter().map(|&(_, n)| n).sum();
        let bounds_ok = hist.windows(2).all(|p| p[0].0 < p[1].0)
            && hist
                .iter()
                .all(|&(u, n)| n > 0 && u >= 1024 && u.is_power_of_two());
        if !bounds_ok {
            return Err(format!("`{}`: wake_lat_hist {hist:?}", d.name));
        }
        if d.workload == "latency" && count == 0 {
            return Err(format!(
                "`{}` woke {} times, none in its histogram",
                d.name, d.wakeups
            ));
        }
    }
    let mut sorted = jain.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(format!(
        "{} of {planned} windows add up to every domain's record; Jain per 1 s window \
         {:.4}..{:.4} (whole interval {:.4})",
        windows.len(),
        sorted[0],
        sorted[sorted.len() - 1],
        summary(records)?.jain.unwrap_or(f64::NAN)
    ))
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut with = |name: String, args: Vec<&str>, check: Check, also: Also| {
        let mut all = vec!["--accel".to_string(), "tcg".into()];
        all.extend(args.into_iter().map(String::from));
        out.push(Case {
            name,
            args: all,
            check,
            also,
        });
    };
    // Policies come from the registry, chosen by what they declare, so a new one is run
    // here with no change: weights for every policy with a `weight`, caps for every policy
    // with a `cap`, scaling and latency (cpu-bound hogs on every CPU) for every policy that
    // preempts.
    let weighted: Vec<&str> = sched::registry::policies()
        .filter(|p| p.domain_param("weight").is_some())
        .map(|p| p.name)
        .collect();
    let preempting: Vec<&str> = sched::registry::policies()
        .filter(|p| p.preempts)
        .map(|p| p.name)
        .collect();
    let capped: Vec<&str> = sched::registry::policies()
        .filter(|p| p.domain_param("cap").is_some())
        .map(|p| p.name)
        .collect();
    for &policy in &weighted {
        with(
            format!("weights/1..8/{policy}"),
            // Credit's shares wander by up to a point under TCG over a few seconds: measure
            // long enough that the 2-point bound tests the policy, not the noise.
            vec![&spec("weights"), "--sched", policy, "--seconds", "6"],
            shares_follow_weights,
            Also::Schedsim(5),
        );
        // Consolidation (issue 12): 96 domains in two weight classes on 4 CPUs, 6 s
        // measured; credit with `exact_credit = 1` (the spec's), as Xen's credit does not
        // hold these shares (sched/README.md, "Consolidation"). Under -icount since session
        // 14 (the policy's shares, not the host's: `classes_follow_weights`): the light class
        // at 33.04-33.30% under every policy over this session's builds (target 33.33; each
        // build gives one figure, which moves with the code), where the real clock gave bvt
        // 36.88% at load 5.
        with(
            format!("consolidation/96x4/{policy}"),
            icount(&[
                &spec("consolidation"),
                "--sched",
                policy,
                "--cpus",
                "4",
                "--seconds",
                "6",
            ]),
            classes_follow_weights,
            Also::Schedsim(2),
        );
    }
    // credit2 on 2 CPUs, where this 2-core host gives each emulated CPU a core and slices
    // end on time: the 1-point bound holds (33.27-33.49% for the light class, target 33.33).
    for policy in ["credit2", "bvt"] {
        with(
            format!("consolidation/96x2/{policy}"),
            vec![
                &spec("consolidation"),
                "--sched",
                policy,
                "--cpus",
                "2",
                "--seconds",
                "6",
            ],
            classes_follow_weights,
            Also::Schedsim(2),
        );
    }
    // Timelines (issue 13): a weight changed, tenants arriving, CPU pools, a domain moved
    // between pools and a pool's policy replaced, applied by Domain0 on time; the same files
    // in schedsim (and sched/tests/experiments_timeline.rs).
    // pools.toml under -icount (session 14): 3 emulated CPUs on this 2-core host put the
    // pools' shares at the host's mercy on the real clock (a bulk or lat1 16-29% off its
    // share in 4 of 6 rounds at loads 3-4, and 14.9% once at 1.3), while under -icount
    // every domain is within 5% of it (swap times 2.00-2.07 s): the policies' doing, which
    // is what the case checks. (-icount suits shares of CPU-bound domains, not wake-up
    // latency on several CPUs: README, "Cost profiles, calibration and replay".)
    with(
        "pools/rr+credit".into(),
        icount(&[&spec("pools"), "--window-ms", "250"]),
        pools_isolate_and_a_move_takes_effect,
        Also::Schedsim(3),
    );
    with(
        "pause/sleepers".into(),
        vec![&spec("pause-sleepers")],
        |r| match r.run() {
            Some(run) => Ok(format!("{} under {}", run.name, run.policy)),
            None => Err("no run record".into()),
        },
        Also::Sleepers,
    );
    // Domain0 pauses a domain 300 times while the CPUs of its pool switch between its
    // vCPUs and a neighbour's every few microseconds; its timeline checks that no CPU
    // switched the domain in after a `Pause` returned (a pick claimed after the pause did,
    // 1-6 times a run, before `schedule::claim`).
    with(
        "pause/race".into(),
        vec![&spec("pause-race")],
        |r| match r.run() {
            Some(run) => Ok(format!("{} under {}", run.name, run.policy)),
            None => Err("no run record".into()),
        },
        Also::Nothing,
    );
    with(
        "timeline/policy-swap".into(),
        vec![&spec("policy-swap"), "--window-ms", "250"],
        policy_swap_takes_effect,
        Also::Schedsim(3),
    );
    // The pool's policy swapped 12 times: Domain0's timeline fails a swap back to a policy
    // that holds more heap than the last time (the replaced instances were once never freed),
    // and each swap is dated when the hypervisor made it (with the trace).
    with(
        "timeline/policy-swaps".into(),
        vec![&spec("policy-swaps")],
        |r| match r.run() {
            Some(run) => Ok(format!("{} under {}", run.name, run.policy)),
            None => Err("no run record".into()),
        },
        Also::SwapTrace,
    );
    with(
        "timeline/reweight".into(),
        vec![&spec("reweight"), "--window-ms", "250"],
        weight_change_takes_effect_at_its_time,
        Also::Schedsim(4),
    );
    with(
        "timeline/departure".into(),
        vec![&spec("departure")],
        departures_and_pauses_take_effect_at_their_time,
        Also::Schedsim(3),
    );
    with(
        "timeline/arrival".into(),
        vec![&spec("arrival")],
        arrivals_get_their_share_from_their_start,
        Also::Nothing,
    );
    with(
        "windows/128x4/credit".into(),
        vec![&spec("windows")],
        windows_add_up,
        Also::Nothing,
    );
    with(
        "weights/trace".into(),
        vec![&spec("weights"), "--seconds", "1"],
        domains_ran_and_clocks_agree,
        Also::Trace,
    );
    with(
        "trace/quota".into(),
        vec![&spec("trace-quota")],
        domains_ran_and_clocks_agree,
        Also::TraceQuota,
    );
    with(
        "trace/crowd".into(),
        vec![&spec("trace-crowd")],
        domains_ran_and_clocks_agree,
        Also::TraceCrowd,
    );
    with(
        "latency/trace".into(),
        vec![&spec("latency"), "--sched", "bvt", "--seconds", "1"],
        latency_domain_runs,
        Also::Trace,
    );
    // RTDS's guarantee (domains served 2 ms every 10 ms among 126 neighbours). Not compared
    // with schedsim's shares: under TCG `rt`'s share follows the host's load (see the check).
    with(
        "rtds/guarantee".into(),
        vec![&spec("rtds")],
        rtds_guarantee_holds,
        Also::Nothing,
    );
    // Calibrated schedsim against the hypervisor (issue 15), on 2 CPUs where TCG gives each
    // emulated CPU a host core, fed this run's own kicks, slice ends, stalls, switches,
    // set_timer hypercalls and sleepers' timer lateness (`schedsim --costs-from`): shares
    // within 2 points (per class of identical domains); wake-up latency against the target
    // (30% or the same log2 bucket) reported, and asserted where it held on a loaded host
    // (README, "Cost profiles").
    // Asserted where it held (README, "Cost profiles"), in 16 rounds of these cases at host
    // loads 4.5-9 (session 11; the last 6 with this build, at 5.9-6.9: every latency and
    // isolation case passed 6 of 6) and in 11 hypervisor runs per policy compared offline:
    // Session 16: rr's p99 on target (10 of 10 rounds at an idle host, schedsim with one
    // timer per CPU; within a bucket before).
    // bvt's p50 on target (16 of 16), credit's p99 within a bucket (asserted since session
    // 10; 15 of 16; since session 13 two buckets apart pass when the sample counts cannot
    // tell the p99s apart, `quantile_band`: its knee at the 1 ms rate limit put it at 1.02
    // ms against 2.49 ms once, both bands 0.5-4.2 ms), credit2's shares (16 of 16; 3 of 6
    // before switches and set_timers were paid per event), rr's p50 on target and p99 within a bucket (its latency domain waits
    // its turn behind 15 hogs, about 100 ms, and wakes 13-26 times in 2 s: its p99 is its
    // largest wait, 280 ms once against 191 ms simulated, when a host stall fell in it);
    // session 12, at loads 2.7-8 (README): rtds's p50 within a bucket (27 of 27: 6.4-10.8
    // µs on the hypervisor, 8.6-22.9 µs simulated, one bucket up: on target in 15), stride's
    // shares and p50 on target (13 of 13 rounds at loads 2.8-3.8: shares within 0.26-0.64
    // points, p50 5.1-6.4 µs on the hypervisor, 5.5-6.6 µs simulated; at loads 6-9 in
    // session 11, with switches preempted and sleepers woken on time, its latency domain's
    // share was 4.7-5.0% simulated against 2.2-2.6%, not seen since); session 13, since
    // credit2 has no tick (its sleepers' timers no longer share the emulated APIC with a 1
    // kHz tick): credit2's p50 within a bucket (19 of 19 rounds at loads 0.7-4: 311-508 µs on
    // the hypervisor, 226-315 µs simulated, on target in 16; README, "Cost profiles"), and
    // rtds's shares (within 0.02-0.35 points per class in 8 of 8 rounds at loads 0.6-1.1,
    // 0.11 in an idle-host CI, and its latency domain 1.74 points off in a CI round whose
    // remote kicks and timers were 1-4 ms late from a load burst; 10 of 10 at loads 1.1-1.8
    // in session 12, which missed 2 of 11 at loads 2.7-4.6 with the 1 ms tick).
    // Reported only: credit2's p99, and its p50 before session 13 (its latency domain often preempts at once on the
    // hypervisor, 8-65 µs, and waits out the 1 ms rate limit in schedsim, 170-500 µs: woken
    // on time, it finds the hog switched in when it last blocked younger than the rate
    // limit. Its sleepers' timers fire 0.8-1.3 ms late on the hypervisor about half the time
    // under credit2 and rtds: less under bvt or credit (170 of 996 over 0.5 ms under bvt at
    // load 5), not under -icount, where 472 of 489 fired within 1 µs; the host's doing (README, session 12: the APIC is armed for the
    // deadline, and QEMU's vCPU thread waits for a host core behind QEMU's own timer thread
    // and the other vCPU thread, more often with a 1 ms tick's re-arms). schedsim now
    // draws that lateness, `timer_wake_late`, and lands on target in 3 of 11 rounds, 4-5
    // buckets off in the others, at loads 2.7-4.6; on a quiet host, loads 1.1-1.8, in 9 of
    // 10: it follows the host's load), rtds's shares before session 13 (within 2 points in 14 of 14 offline
    // comparisons and 9 of 10 rounds with switches not preempted; 9 of 11 rounds at loads
    // 2.7-4.6 since sleepers wake as late as the run's timers, the misses 2.8-3.8%
    // simulated against 5.4-6.6%; 10 of 10 at loads 1.1-1.8, within 0.00-0.78), bvt's p99
    // (within a bucket in 8 of 22: a few host stalls of milliseconds make it or not),
    // stride's p99 (within a bucket in 12 of 13: once 35 µs
    // simulated against 9.4 ms). bvt's case failed 7 of 15 on its latency domain's share at
    // loads 4.5-9 (5.2-6.0% simulated against 2.0-3.6%) until a set_timer was paid inside
    // the sleeper's run, where bvt charges it; 6 of 6 since (README).
    let (target, bucket, reported) = (Bound::Target, Bound::Bucket, Bound::Reported);
    // latency.toml on 2 CPUs for 6 s under `policy`.
    let latency = spec("latency");
    fn latency_on_two<'a>(spec: &'a str, policy: &'a str) -> Vec<&'a str> {
        vec![spec, "--sched", policy, "--cpus", "2", "--seconds", "6"]
    }
    // Session 17, with the machine's held timers (`sched::sim`, `Sim::hold_timer`): rtds's
    // p50 on target (10 of 10 rounds replayed offline and 7 of 7 checks on an idle host,
    // 3 of 3 with a busy loop on one of the two host cores: 21.5-34.8 µs on the hypervisor,
    // 27.3-32.8 µs simulated), credit's within a bucket (on target in the same 17 idle
    // rounds, 426-524 µs against 484-520 µs; with the busy loop 2 of 3, once 172 µs on the
    // hypervisor against 335 µs, a bucket apart). bvt's p99 within a bucket (on target in
    // 12 of 13 checks on an idle host, the miss a bucket apart, 23.6 µs against 14.4; 10 of
    // 10 offline).
    // Session 19, the runs 6 s long (a 2 s run's p99 is its latency domain's nineteenth-
    // longest wait, a 6 s run's its fifty-fifth): in 10 runs per policy on an idle host,
    // each simulated with four seeds, and 19 rounds of these checks, the p99 on target in
    // 59 of 59 under bvt, credit and stride, 59 of 61 under rtds (the misses within a
    // bucket); credit's p50 in 59 of 59. Asserted within a bucket (on target where it
    // held with a margin, rr's, is asserted so): in a twentieth round credit's p99 came 31%
    // apart, 2.10 ms on the hypervisor against 2.74 ms. credit2's p99 missed in all
    // (0.98-1.9 ms on the hypervisor, 1.8-3.4 ms simulated) until simulated with
    // `--holds-after-fires`: on target in 40 of 40 offline and 11 of 12 rounds (the miss
    // 1.36 ms against 1.02, a bucket apart); within a bucket asserted, as the flag was
    // fitted to a quiet host's holds (docs/simvshyp.md, "Session 19").
    // Session 20: the flag is schedsim's default with `--costs-from` (a 6 s sweep of five
    // specs x six policies x 1, 2, 4 CPUs came out as well with it as without, credit2's
    // latency p99 on target only with it), and the target allows a percentile a bucket
    // apart where the two runs' sample counts cannot tell them apart ([`judge_percentile`]).
    // In 24 rounds on an idle host (14 with the flag for credit2 alone, 10 with it the
    // default) every p50 and the p99 of bvt, credit, credit2 and rr came on target, without
    // that allowance, 24 of 24; stride's 23 of 24: once 9.06 ms simulated against 38.9 µs (the hypervisor's
    // latency domain waited over 8 ms 25 times of 5,694, behind a hog pulled onto its CPU,
    // and schedsim's 62 times of 5,248 with that run's costs, 6-62 over six seeds, and 5-36
    // for ten runs of session 19: the p99 falls in either mode by chance; that run's host
    // held 35 of its 610 slice ends, quiet ones 2-8 of 600, so stride's p99 is asserted
    // only below 3%, `Timed::p99_quiet_only`); rtds's 21 of 24
    // (once by the allowance), the misses a bucket apart, asserted within a bucket. Asserted on target since: the
    // p50 and p99 of every policy but rtds's p99 (docs/simvshyp.md, "Session 20").
    // Session 21: a wake-up's kick of another CPU drawn from the wake-ups' kicks alone
    // (`kick_wake_late`; the policy's own kicks had the heavier tail): rtds's p99 on target
    // in 17 of 18 idle rounds, the miss a bucket apart (57.3 µs against 80.6): still
    // within a bucket; every other p50 and p99 on target in 12 of 12.
    for (policy, p50, p99) in [
        ("bvt", target, target),
        ("credit", target, target),
        ("credit2", target, target),
        ("rr", target, target),
        ("rtds", target, bucket),
        ("stride", target, target),
    ] {
        with(
            format!("simvshyp/latency/{policy}"),
            latency_on_two(&latency, policy),
            latency_domain_runs,
            Also::Calibrated(
                2,
                Timed {
                    p50,
                    p99,
                    kicks: policy != "rr",
                    p99_quiet_only: policy == "stride",
                    shares: true,
                    // rtds's latency domain's share failed about one run in twenty, each
                    // time in a run whose slice ends were late by tens of µs at the median
                    // (6.39% on the hypervisor against 3.69% simulated in session 21's CI,
                    // 7.31 and 6.29 against 3.61 and 3.36 in session 19's rounds): its
                    // runs cost it 144 µs of CPU per wake-up against 83 simulated, which
                    // no cost drawn from the run carried into schedsim until session 25's
                    // guest's side of a switch, fitted to the run: asserted since where
                    // schedsim fitted it (`shares_asserted`), reported otherwise; its
                    // p99 too (session 22's last CI: 557 µs on the hypervisor against 53
                    // simulated, the two in different modes, in a run whose slice ends were
                    // 16 µs late at the median; 53-459 µs on target in 4 brisk runs after).
                    brisk_only: policy == "rtds",
                },
            ),
        );
    }
    // The isolation spec on 4 CPUs, one each: the latency domain wakes an idle CPU, whose
    // decision waits for the timer interrupt's way out (5-10 µs under TCG). Its p50 on
    // target. It missed everywhere (5.4-7.9 µs on the hypervisor, 0.7-1.5 µs simulated)
    // while the yield attackers' own kicks, served at once, were counted with the
    // wake-ups' in `kick_local_late`, which schedsim draws a woken vCPU's kick from.
    // Shares reported, not asserted: schedsim deals the run's CPU stalls (measured on busy
    // CPUs, from their slice ends) to the latency domain's CPU too, idle most of the time,
    // and gives it 4-7% of the CPU time against 2-3.6% (its runs stretched, 320-1490 µs
    // per wake-up against 160 µs): on the hypervisor its QEMU thread, woken from HLT, is
    // seldom preempted within its 100 µs run. Not modelled.
    for policy in ["bvt", "credit"] {
        with(
            format!("simvshyp/isolation/{policy}"),
            vec![&spec("isolation"), "--sched", policy, "--seconds", "1.5"],
            latency_domain_runs,
            Also::Calibrated(
                2,
                Timed {
                    p50: target,
                    p99: reported,
                    kicks: true,
                    p99_quiet_only: false,
                    shares: false,
                    brisk_only: false,
                },
            ),
        );
    }
    // Each run replayed under its own policy with its own costs (`--costs-from`): shares,
    // and the latency domain's p50 on target; its p99 reported (a host stall of
    // milliseconds on a wake-up is drawn at random, not replayed). Session 15, p50 on the
    // hypervisor against the replay: on target for every policy in 3 rounds at host loads
    // 1.5-3 (e.g. credit 475/420 µs, credit2 344/329 µs, rr 71/65 ms, rtds 15.4/15.0 µs,
    // stride 4.9/5.1 µs) and for bvt in 3 more at loads 4-6; p99 on target in 11 of 18 in
    // the quieter rounds (README, "Cost profiles, calibration and replay"). credit2's
    // median was reported only (within a bucket since session 18, below): on a loaded
    // host it follows the load (8 µs on the
    // hypervisor against 140-320 µs replayed, 3 rounds beside other QEMUs), as
    // `simvshyp/latency/credit2`'s does: the run's late wake-ups found its hogs past the
    // rate limit, and the replay does not replay the hogs' slices, only the sleeper's.
    // rr's p99 too (10 of 10 on target in session 16, idle host: its latency domain's
    // longest waits are its turns behind 15 hogs, which the replay plays the same). Since
    // session 17 (the machine's held timers, and a replayed latency domain skipping the
    // periods it overran), bvt's and credit's p99 within a bucket: on target in 12 and 12
    // of 13 checks on an idle host, the misses a bucket apart (47.1 µs against 23.2; 2.2 ms
    // against 1.1); offline, within a bucket in 9 of 10 rounds (bvt: the miss at 0.48 cores
    // of other load, 94 µs against 2.5 ms) and 10 of 10 (credit). Since session 18
    // credit2's median within a bucket, as `simvshyp/latency/credit2`'s (and as sensitive
    // to other load on the host): on target in 25 of 25 checks on an idle host (280-410 µs
    // replayed against 330-525 µs), 72 of 80 offline (the misses in the rounds at 0.7-1.06
    // cores of other load). Since session 19, on runs of 6 s: rtds's and stride's p99
    // within a bucket too (on target in 18 and 19 of 21 rounds, the misses a bucket apart;
    // bvt's and credit's on target in 21 of 21); credit2's replayed with
    // `--holds-after-fires`, its p99 reported (1.2-2.1 ms against 0.98-1.02 ms in 12
    // rounds; 2.0-2.9 ms without the flag), its p50 on target in 12 of 12 (338-375 µs
    // against 393-508 µs). Session 20, asserted on target since: bvt's and credit's p99
    // (24 of 24 rounds) and credit2's p50 (24 of 24); rtds's and stride's p99 stay within a
    // bucket (on target in 21 and 23 of 24, rtds's twice by the sample counts' allowance,
    // the misses a bucket apart), credit2's reported (on target in 22 of 24, 4 of them by
    // the allowance; 1.9 and 2.5 ms against 0.98 in the others). Session 23: stride's
    // replayed p99 failed once in about twenty rounds, 9.08 ms replayed against 26.6 µs
    // (the replay's latency domain in the 8 ms mode behind a pulled hog, as
    // `simvshyp/latency/stride`'s miss of session 20): asserted, as that one's, only when
    // the run's host was quiet (`Timed::p99_quiet_only`).
    for &policy in &preempting {
        let timed = match policy {
            "bvt" | "credit" | "rr" => Timed {
                p99: Bound::Target,
                ..Timed::REPLAY
            },
            _ => Timed {
                p99: Bound::Bucket,
                p99_quiet_only: policy == "stride",
                // Session 25's CI: rtds's replayed p99 98 µs on the hypervisor against 490
                // µs, in a run whose slice ends were 32 µs late at the median (its emulated
                // CPUs slow throughout, 9.2 s of wall time for 6.3): reported in such a run,
                // as `simvshyp/latency/rtds`'s p99 is; its shares stay asserted where
                // schedsim fitted the guest's side of a switch (`shares_asserted`). credit2's
                // the same (the next CI: 983 µs against 2.29 ms replayed, 32 µs late at the
                // median; the same with the fit and without).
                brisk_only: policy == "rtds" || policy == "credit2",
                ..Timed::REPLAY
            },
        };
        with(
            format!("replay/latency/{policy}"),
            latency_on_two(&latency, policy),
            latency_domain_runs,
            Also::Replay(2, timed),
        );
    }
    // Every weighted policy's shares beside calibrated schedsim's (credit2 and stride since
    // session 12: within 0.08-1.73 points per class in every round where the hypervisor's
    // own weights held, 11 and 12 of 13 at loads 2.2-8; those failed 2 and 1 times, a domain
    // 2.4-3.3 points from its target, as bvt's and credit's do at such loads; rr and rtds
    // have no weights).
    for &policy in &weighted {
        with(
            format!("simvshyp/weights/{policy}"),
            vec![&spec("weights"), "--sched", policy, "--seconds", "4"],
            shares_follow_weights,
            Also::Calibrated(2, Timed::SHARES),
        );
    }
    let mut add =
        |name: String, args: Vec<&str>, check: Check| with(name, args, check, Also::Nothing);
    // 128 domains on 4 CPUs for 6 s under -icount (judging the policy, not the host: on the
    // real clock at loads 4-6 Jain over work was below 0.98 in 7 of 12 runs); Jain over
    // cpu_ns, as below (`scaling_fair` says why not over work, and why 0.98 for rr).
    for &policy in &preempting {
        add(
            format!("scaling/128x4/{policy}"),
            icount(&[&spec("scaling"), "--sched", policy, "--seconds", "6"]),
            if policy == "rr" {
                all_progress_and_fair_rr
            } else {
                all_progress_and_fair
            },
        );
    }
    // 1024 domains for 1 s on 2 CPUs, under -icount (judging the policy, not the host).
    for (policy, check) in [
        ("bvt", crowd_fair_bvt as Check),
        ("credit2", crowd_fair_credit2),
    ] {
        add(
            format!("scaling/1024x2/{policy}"),
            icount(&[
                &spec("scaling"),
                "--sched",
                policy,
                "--domains",
                "1024",
                "--cpus",
                "2",
                "--seconds",
                "1",
            ]),
            check,
        );
    }
    // Credit enforces caps at each accounting pass, so over a few seconds the capped share
    // wanders by a point around the cap under TCG; six seconds average that out. Under
    // -icount since session 14: on the real clock a host stall inside the capped vCPU's run
    // ends its slice late, past its budget, and credit forgives the debt beyond one slice
    // (Xen's "lower bound on credits" in csched_acct), so the capped domain got 25.02% of a
    // CPU once with 1.4 host cores taken by other work (its slices ending 4.1 ms late at
    // the median); under -icount credit gives it 20.06% and credit2 20.01%.
    for &policy in &capped {
        add(
            format!("caps/{policy}"),
            icount(&[&spec("caps"), "--sched", policy, "--seconds", "6"]),
            cap_holds,
        );
    }
    // The most domains a spec may have, briefly (bench-create's domains need not progress).
    add(
        "domains/1024".into(),
        vec![&spec("bench-create"), "--domains", "1024"],
        most_domains_reported,
    );
    add(
        "hostile".into(),
        vec![&spec("hostile")],
        hostile_killed_others_fine,
    );
    add(
        "fpu/no-leak".into(),
        vec![&spec("fpu")],
        registers_never_leak,
    );
    add(
        "vcpus/2+1+1".into(),
        vec![&spec("vcpus")],
        vcpus_each_get_a_cpu,
    );
    add(
        "virq/timer".into(),
        vec![&spec("virq")],
        timer_events_arrive,
    );
    for cpus in ["1", "2"] {
        add(
            format!("ping/cpus={cpus}"),
            vec![&spec("ping"), "--cpus", cpus],
            every_event_arrives_once,
        );
        add(
            format!("upcall/cpus={cpus}"),
            vec![&spec("upcall"), "--cpus", cpus],
            every_event_arrives_once,
        );
    }
    add(
        "mmu/batches".into(),
        vec![&spec("mmu")],
        page_table_updates_work,
    );
    add(
        "shootdown".into(),
        vec![&spec("shootdown")],
        remaps_seen_at_once,
    );
    add("blk".into(), vec![&spec("blk")], block_data_intact);
    add("net".into(), vec![&spec("net")], packets_intact);
    add(
        "yield-attack/credit".into(),
        vec![&spec("yield-attack")],
        attacker_no_more_than_fair,
    );
    for &policy in &preempting {
        add(
            format!("latency/{policy}"),
            vec![&spec("latency"), "--sched", policy, "--seconds", "2"],
            latency_domain_runs,
        );
    }
    add(
        "fuzz/short".into(),
        vec![&spec("fuzz")],
        fuzz_short_campaign,
    );
    add(
        "fuzz/smp".into(),
        vec![&spec("fuzz-smp")],
        fuzz_smp_campaign,
    );
    add(
        "fuzz/exceptions".into(),
        // A hang (a class that reaches ring 0) should not cost the default two minutes.
        vec![&spec("fuzz-exceptions"), "--timeout", "60"],
        exceptions_kill_only_their_raisers,
    );
    for cpus in ["1", "2"] {
        add(
            format!("grants/cpus={cpus}"),
            vec![&spec("grants"), "--cpus", cpus],
            grant_misuse_refused,
        );
    }
    add("churn".into(), vec![&spec("churn")], churn_back_at_baseline);
    // The same with every event-channel send lingering 200 µs between finding its peer and
    // delivering, then checking the peer was not freed meanwhile (`selftest=slow-send`): a
    // destroy that dropped a domain at once, not a grace period later (`arch::rcu`), stops
    // the machine within the first round. Each such send also begins a grace period and
    // checks that its CPU did not report it before the send ended: with a quiescent point
    // reported at the top of `send_from` it stops the machine in the first send (0.8 s),
    // where the peer's serial alone passed 3 runs of 3.
    add(
        "churn/slow-send".into(),
        vec![&spec("churn"), "--append", "selftest=slow-send"],
        churn_back_at_baseline,
    );
    // A vCPU woken by its timer on a CPU that then stays away (`selftest=slow-timer-wake`,
    // as the host stopping an emulated CPU) runs elsewhere, and a timer it set fires while
    // it is awake: its block must still return at once (timer-wake.toml). With the FIRED
    // mark cleared after the wake instead of within it, 4 runs of 4 failed (the latency
    // domain asleep for good before the interval: 0 periods, exit 1); with it, 6 of 6
    // passed with 169-216 periods in ~1.55 s.
    add(
        "latency/slow-timer-wake".into(),
        vec![&spec("timer-wake"), "--append", "selftest=slow-timer-wake"],
        stray_timers_end_their_blocks,
    );
    // A timer fired by a CPU that then stays away between its two steps
    // (`selftest=slow-timer-fire`), while its vCPU runs on another CPU and blocks: the block
    // returns at once, and the timer's event must be pending by then (`schedule::run_timers`
    // sends it before marking the timer fired). With the order the other way round, ...
    add(
        "latency/slow-timer-fire".into(),
        vec![&spec("timer-wake"), "--append", "selftest=slow-timer-fire"],
        stray_timers_end_their_blocks,
    );
    // Domain0 waiting for a domain's end while it dies on the other CPU, its CPU stalled
    // between registering as a waiter and blocking (`selftest=slow-wait`): the wait must see
    // the end. Without the look again after the block, the first killed domain was still
    // "alive" at its deadline: exit 1 within the first rounds (found by an audit of the
    // guest paths, session 21).
    add(
        "churn/slow-wait".into(),
        vec![&spec("churn-kill"), "--append", "selftest=slow-wait"],
        churn_kill_back_at_baseline,
    );
    // A vCPU picked again where it runs after a block that an event ended at once must be
    // counted running again (`schedule::runs_on`): before, alone on a CPU, it waited 100%
    // of the run and its wake-ups were 8.8 ms late at p99 (found by an audit, session 21).
    add(
        "sched/block-pending".into(),
        vec![&spec("block-pending")],
        blocks_with_an_event_pending_run_on,
    );
    // Domain0's pause between a switch-out's reading of the run state and its change of
    // the account was counted as waiting (`selftest=slow-switch-out`; a review of session
    // 23): both now change under the state's lock.
    add(
        "sched/slow-switch-out".into(),
        vec![&spec("pause-gap"), "--append", "selftest=slow-switch-out"],
        pauses_count_neither_cpu_nor_waiting,
    );
    add(
        "snapshot/slow-snapshot".into(),
        vec![&spec("snapshot-hold"), "--append", "selftest=slow-snapshot"],
        held_snapshots_fall_outside_the_interval,
    );
    add(
        "windows/departure".into(),
        vec![&spec("departure"), "--window-ms", "300"],
        a_destroyed_domains_windows_end_with_it,
    );
    // A vCPU woken before its CPU's decision took it off, then switched out, counted its
    // wait from the wake-up and hid it from live snapshots until its switch-in
    // (`windows/128x4/credit` failed so in session 22's last CI; `kerncore::account`).
    for policy in ["stride", "rr"] {
        add(
            format!("windows/woken-on-cpu/{policy}"),
            vec![&spec("woken-on-cpu"), "--sched", policy],
            woken_vcpus_wait_from_their_switch_out,
        );
    }
    // A poll marked polling before it blocked lost its wake-up to another port's event that
    // came in between (`selftest=slow-poll` widens the window to 200 µs; a review of
    // session 21): marked once blocked, as Xen's `do_poll`.
    add(
        "sched/poll-wakes".into(),
        vec![&spec("poll-race")],
        polls_wake_among_other_events,
    );
    add(
        "sched/slow-poll".into(),
        vec![&spec("poll-race"), "--append", "selftest=slow-poll"],
        polls_wake_among_other_events,
    );
    // A block that returned for a port marked pending, before its sender marked the vCPU's
    // upcall flag, went back to the guest without entering the upcall (xtf-ring's
    // `upcall-idle` ran on after its upcall was due, about one CI in six):
    // `selftest=slow-deliver` widens the sender's window to 500 µs.
    add(
        "sched/slow-deliver".into(),
        vec![&spec("block-upcall"), "--append", "selftest=slow-deliver"],
        blocks_enter_the_upcall,
    );
    // The same window met by the vCPU's own timer: its wake-up let it run on past the
    // event in flight (xtf-ring's `upcall-idle` in session 25's CI).
    add(
        "sched/slow-timer-deliver".into(),
        vec![&spec("timer-upcall"), "--append", "selftest=slow-deliver"],
        timer_wakes_enter_the_upcall,
    );
    // A peer's sends to a port already pending cost its receiver nothing: no interrupt,
    // no wake-up of a poll on another port (every send IPI'd and woke pollers before: an
    // audit of session 22).
    add(
        "isolation/quiet-flood".into(),
        vec![&spec("quiet-flood")],
        sends_to_a_pending_port_are_quiet,
    );
    // Guests writing their console at their quota's pace, the serial port as slow as a real
    // 115200-baud UART (`selftest=slow-uart`): each line went to the port from the call,
    // with interrupts off, ~20 ms a line, and the latency domain beside the writers kept 37
    // of its 2000 periods; now lines go through the console's ring.
    add(
        "isolation/slow-uart".into(),
        vec![&spec("console-stall"), "--append", "selftest=slow-uart"],
        console_writers_leave_their_cpus_alone,
    );
    // Domain0's destroys (writes of the domain table) while a guest's two vCPUs read it
    // back to back, each read held 5 ms (`selftest=slow-lookup`): a writer that waits for no
    // reader at all got in 140-250 ms late at worst in each of 3 runs; taken upgradeable,
    // within 23 ms (an audit of session 22).
    add(
        "isolation/slow-lookup".into(),
        vec![&spec("lookup-storm"), "--append", "selftest=slow-lookup"],
        destroys_get_the_domain_table,
    );
    // A TLB flush waits for a CPU in a long continued batch only until its next
    // continuation (each remap within 10 ms; 34 ms with the batch not continued).
    add(
        "isolation/flush-convoy".into(),
        vec![&spec("flush-convoy")],
        flushes_wait_one_continuation,
    );
    // A close and a rebind between the same two domains, the close lingering between
    // looking at its end and changing both (`selftest=slow-close`): the two ends must agree
    // (an audit of session 22).
    add(
        "isolation/slow-close".into(),
        vec![&spec("close-rebind"), "--append", "selftest=slow-close"],
        both_ends_agree,
    );
    // A timer storm beside a latency domain: the run's `set_timer_time` counts the
    // `set_timer`s followed by a block (1,488 for 1,484 wake-ups), not every call (301,490
    // before: schedsim priced the latency domain's `set_timer` from the storm's).
    add(
        "isolation/timer-storm-costs".into(),
        vec![&spec("timer-storm-costs")],
        set_timer_costs_follow_the_sleepers,
    );
    add(
        "isolation/switch-storm".into(),
        vec![&spec("switch-storm")],
        switch_costs_follow_address_spaces,
    );
    // Domains killed mid-switch, under the policies that tick on demand (`churn` runs credit).
    for policy in ["credit2", "rtds"] {
        add(
            format!("churn/kill/{policy}"),
            vec![&spec("churn-kill"), "--sched", policy],
            churn_kill_back_at_baseline,
        );
    }
    // The Linux engine, once: Debian's kernel with the workloads' Linux builds (scripts/test
    // builds them; the runner fetches the kernel when it is missing).
    add(
        "linux/mix".into(),
        vec!["--engine", "linux", &spec("linux-mix")],
        linux_engine_records,
    );
    add(
        "linux/split".into(),
        vec!["--engine", "linux", &spec("linux-split")],
        linux_split_devices,
    );
    // The XTF-style hostile suite (scripts/runner/src/xtf.rs says what each case must end as;
    // `target/release/xtf` runs them one at a time).
    for suite in ["ring", "int", "mem", "sched", "isolation", "preempt"] {
        with(
            format!("xtf/{suite}"),
            vec![&spec(&format!("xtf-{suite}"))],
            suite_ran,
            Also::Xtf,
        );
    }
    // Reservations preempted and continued (hostile-pt `mem-batch`), under -icount with 8 ns
    // an instruction: calls of 4-5.5 ms of guest time, none stretched by the host.
    with(
        "xtf/preempt-mem".into(),
        vec![
            &spec("xtf-preempt-mem"),
            "--qemu-arg=-icount",
            "--qemu-arg=shift=3,sleep=off",
        ],
        suite_ran,
        Also::Xtf,
    );
    // A reservation preempted inside its first chunk (hostile-pt `hcall-lengths`), under
    // -icount with 256 ns an instruction so that the slice runs out a few frames in, every
    // run (xtf-preempt-short.toml): the frames whose numbers were written are kept and
    // counted, no others.
    with(
        "xtf/preempt-short".into(),
        vec![
            &spec("xtf-preempt-short"),
            "--qemu-arg=-icount",
            "--qemu-arg=shift=8,sleep=off",
        ],
        suite_ran,
        Also::Xtf,
    );
    // One long page-table batch (hostile-pt `pt-batch-link`) under -icount with 1 ns an
    // instruction: calls of about 27 ms of guest time, whose first half no host stall
    // stretches (on the real clock 1 of 4 runs failed so on a loaded 2-core host).
    with(
        "xtf/preempt-link".into(),
        icount(&[&spec("xtf-preempt-link")]),
        suite_ran,
        Also::Xtf,
    );
    // `unlink-race` under -icount likewise: vCPU 1 unlinks a table's last live link while
    // vCPU 0's batch has removed its other one and not yet put it (xtf-unlink-race.toml).
    with(
        "xtf/unlink-race".into(),
        icount(&[&spec("xtf-unlink-race")]),
        suite_ran,
        Also::Xtf,
    );
    // `validate-race` likewise: vCPU 1 removes a table's only live link while vCPU 0's call
    // validates a table that took links on it and then fails (xtf-validate-race.toml).
    with(
        "xtf/validate-race".into(),
        icount(&[&spec("xtf-validate-race")]),
        suite_ran,
        Also::Xtf,
    );
    // `upcall-idle` alone on one CPU: its vCPU is entered from the idle loop, where the
    // upcall kills its domain (xtf-idle.toml).
    with(
        "xtf/idle".into(),
        vec![&spec("xtf-idle")],
        suite_ran,
        Also::Xtf,
    );
    // Domain0's pauses and move against a guest calling `vcpu_op Up` (hostile-sched case 12)
    // under -icount: the guest's clock and the timeline's are then the same virtual clock,
    // which no host stall stretches (xtf-pause.toml). On the real clock, on a loaded host,
    // a Domain0 that woke late from its warm-up or for a pause made the guest end before the
    // move (refused: Busy) or a pause shorter than the 200 ms stop the guest counts (FAILURE).
    with(
        "xtf/pause".into(),
        icount(&[&spec("xtf-pause")]),
        suite_ran,
        Also::Xtf,
    );
    // Grace periods beside `spin-masked` (hostile-sched case 16), a guest that never enters
    // the hypervisor of its own accord, alone on its CPU: each of Domain0's four policy
    // swaps waits for that CPU to free the old instance, which the next swap's lateness
    // shows (a swap is dated at its change, before its wait; xtf-grace.toml). With the
    // quiescent point taken only at an exception's entry, not an interrupt's, the first
    // swap's grace period never ends and the machine stops on it 2 s later.
    with(
        "xtf/grace".into(),
        icount(&[&spec("xtf-grace")]),
        grace_periods_end_beside_a_spinner,
        Also::Xtf,
    );
    // `tlb-retype-race` under -icount, the CPUs run in turn: its vCPU 0's timer, due
    // part-way through its batch, hands the machine to vCPU 1 for certain (xtf-race.toml).
    with(
        "xtf/race".into(),
        icount(&[&spec("xtf-race")]),
        suite_ran,
        Also::Xtf,
    );
    out
}

fn main() -> ExitCode {
    let mut runner = sibling_runner();
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runner" => match args.next() {
                Some(path) => runner = path.into(),
                None => {
                    eprintln!("experiment-checks: --runner needs a path");
                    return ExitCode::from(2);
                }
            },
            "--list" => {
                for c in cases() {
                    println!("{}  [{}]", c.name, c.args.join(" "));
                }
                return ExitCode::SUCCESS;
            }
            s if s.starts_with('-') => {
                eprintln!("usage: experiment-checks [--runner PATH] [--list] [FILTER...]");
                return ExitCode::from(2);
            }
            s => filters.push(s.to_string()),
        }
    }
    let dir = std::env::temp_dir().join(format!("domino-experiments-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("experiment-checks: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let (mut passed, mut failed) = (0, 0);
    let start = Instant::now();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f)))
        .collect();
    for (i, c) in cases.iter().enumerate() {
        let out = dir.join(format!("{i}.jsonl"));
        let trace = out.with_extension("trace.json");
        let mut args = c.args.clone();
        if matches!(
            c.also,
            Also::Trace
                | Also::TraceQuota
                | Also::TraceCrowd
                | Also::Replay(..)
                | Also::Sleepers
                | Also::SwapTrace
        ) {
            args.extend(["--trace".to_string(), trace.display().to_string()]);
        }
        let run = invoke_with(&runner, &out, &args, c.also != Also::Xtf);
        let verdict = match run.status {
            Some(0) => read_records(&out).and_then(|r| {
                let note = (c.check)(&r)?;
                let more = match c.also {
                    Also::Nothing => return Ok(note),
                    Also::Trace => trace_matches(&r, &trace)?,
                    Also::TraceQuota => trace_matches_but(&r, &trace, Some("storm"))?,
                    Also::TraceCrowd => trace_losses_are_marked(&r, &trace)?,
                    Also::Sleepers => format!(
                        "{}; {}",
                        sleepers_stay_asleep(&r, &trace)?,
                        trace_matches(&r, &trace)?
                    ),
                    Also::SwapTrace => format!(
                        "{}; {}",
                        swaps_dated_while_held(&r, &trace)?,
                        trace_matches(&r, &trace)?
                    ),
                    Also::Schedsim(points) => matches_schedsim(&r, &c.args, &out, points)?,
                    Also::Calibrated(points, timed) => {
                        matches_calibrated(&r, &c.args, &out, points, None, timed)?
                    }
                    Also::Replay(points, timed) => {
                        matches_calibrated(&r, &c.args, &out, points, Some(&trace), timed)?
                    }
                    Also::Xtf => runner::xtf::verdict(&r, &run.output)?,
                };
                Ok(format!("{note}; {more}"))
            }),
            // The suite's cases say which of them made the run fail.
            status if c.also == Also::Xtf => Err(format!(
                "exit status {status:?}, expected 0; {}",
                read_records(&out)
                    .and_then(|r| runner::xtf::verdict(&r, &run.output))
                    .unwrap_or_else(|e| e)
            )),
            status => Err(format!("exit status {status:?}, expected 0")),
        };
        match verdict {
            Ok(note) => {
                passed += 1;
                println!(
                    "ok    {:<24} {:6.1} s  {note}",
                    c.name,
                    run.took.as_secs_f64()
                );
            }
            Err(why) => {
                failed += 1;
                println!(
                    "FAIL  {:<24} {:6.1} s  {why}",
                    c.name,
                    run.took.as_secs_f64()
                );
                show_failure(&c.args, &out, &run.output);
            }
        }
    }
    println!(
        "experiment-checks: {} cases in {:.0} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    if failed == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("experiment-checks: results files kept in {}", dir.display());
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_whole_slice_floor_is_one_when_slices_divide_evenly_and_below_otherwise() {
        use super::quantized_jain;
        let ms = 1_000_000;
        // 1000 domains, 4000 slices of 0.5 ms: 4 each.
        assert!((quantized_jain(&[2 * ms; 1000], ms / 2) - 1.0).abs() < 1e-12);
        // 1024 domains sharing 3998 slices: 98 get 3, 926 get 4.
        let cpu: Vec<u64> = (0..1024)
            .map(|i| if i < 98 { 3 * ms / 2 } else { 2 * ms })
            .collect();
        let j = quantized_jain(&cpu, ms / 2);
        assert!((j - 0.99442).abs() < 1e-4, "{j}");
        // However the time fell, the floor is the same: it depends on the total alone.
        assert_eq!(j, quantized_jain(&[1_952_149; 1024], ms / 2));
    }

    use super::*;

    /// `simvshyp/latency/credit` at one build, 2026-12-05: p99 1.02 ms on the hypervisor
    /// (2,042 wake-ups), 2.49 ms simulated (1,754), 2 log2 buckets apart: 99.3% of the
    /// hypervisor's wake-ups and 98.6% of schedsim's waited under 1.05 ms (credit's 1 ms
    /// rate limit), so the knee sits at the p99 in both, and both bands span it.
    const KNEE_HV: &[(u64, u64)] = &[
        (1024, 1),
        (4096, 10),
        (8192, 44),
        (16384, 16),
        (32768, 11),
        (65536, 64),
        (131072, 150),
        (262144, 270),
        (524288, 539),
        (1048576, 923),
        (2097152, 1),
        (4194304, 7),
        (8388608, 4),
        (16777216, 1),
        (268435456, 1),
    ];
    const KNEE_SIM: &[(u64, u64)] = &[
        (4096, 34),
        (8192, 31),
        (16384, 3),
        (32768, 8),
        (65536, 71),
        (131072, 114),
        (262144, 234),
        (524288, 438),
        (1048576, 796),
        (2097152, 4),
        (4194304, 15),
        (8388608, 6),
    ];
    /// A run of 2026-12-04 where the two tails differed: p99 13.6 ms on the hypervisor (5%
    /// of 849 wake-ups over 8 ms), 1.02 ms simulated (0.5% of 1,747 over 2 ms).
    const APART_HV: &[(u64, u64)] = &[
        (1024, 1),
        (4096, 2),
        (8192, 12),
        (16384, 18),
        (32768, 59),
        (65536, 20),
        (131072, 40),
        (262144, 58),
        (524288, 325),
        (1048576, 222),
        (2097152, 10),
        (4194304, 9),
        (8388608, 42),
        (16777216, 28),
        (33554432, 2),
        (268435456, 1),
    ];
    const APART_SIM: &[(u64, u64)] = &[
        (4096, 5),
        (8192, 6),
        (16384, 3),
        (32768, 7),
        (65536, 72),
        (131072, 102),
        (262144, 225),
        (524288, 450),
        (1048576, 864),
        (2097152, 1),
        (4194304, 3),
        (8388608, 5),
        (16777216, 4),
    ];

    #[test]
    fn a_host_is_quiet_below_three_percent_of_slice_ends_held() {
        let run = |hist: &str| {
            let line = format!(
                "{{\"kind\":\"run\",\"name\":\"r\",\"engine\":\"domino\",\"policy\":\"stride\",\
                 \"cpus\":2,\"domains\":16,\"duration_ns\":6000000000,\"idle_ns\":0{hist}}}"
            );
            vec![runner::parse_record(&line).unwrap()]
        };
        // Session 20's failing stride run: 35 of 610 slice ends held 256 µs or more.
        let loud = run(",\"slice_late_hist\":[[32000,500],[256000,75],[512000,20],[4096000,15]]");
        assert!((held_share(&loud) - 35.0 / 610.0).abs() < 1e-9);
        assert!(held_share(&loud) >= QUIET_HELD_SHARE);
        let quiet = run(",\"slice_late_hist\":[[32000,590],[256000,15],[512000,5]]");
        assert!(held_share(&quiet) < QUIET_HELD_SHARE);
        assert_eq!(held_share(&run("")), 0.0);
    }

    #[test]
    fn a_slow_runs_shares_are_asserted_once_schedsim_fitted_the_guests_side_to_it() {
        let rtds = Timed {
            brisk_only: true,
            ..Timed::SHARES
        };
        assert!(shares_asserted(&rtds, 1_000, false));
        assert!(!shares_asserted(&rtds, 32_000, false));
        assert!(shares_asserted(&rtds, 32_000, true));
        let other = Timed {
            brisk_only: false,
            ..Timed::SHARES
        };
        assert!(shares_asserted(&other, 32_000, false));
        let none = Timed {
            shares: false,
            ..rtds
        };
        assert!(!shares_asserted(&none, 1_000, true));
    }

    #[test]
    fn a_run_is_brisk_while_its_median_slice_end_is_at_most_8_us_late() {
        let run = |hist: &str| {
            let line = format!(
                "{{\"kind\":\"run\",\"name\":\"r\",\"engine\":\"domino\",\"policy\":\"rtds\",\
                 \"cpus\":2,\"domains\":16,\"duration_ns\":6000000000,\"idle_ns\":0{hist}}}"
            );
            vec![runner::parse_record(&line).unwrap()]
        };
        // A usual idle-host run of latency.toml under rtds: most slice ends within 1 µs.
        let brisk = run(",\"slice_late_hist\":[[1000,4000],[2000,600],[64000,300],[128000,150]]");
        assert_eq!(slice_late_median(&brisk), 1000);
        assert!(slice_late_median(&brisk) <= BRISK_MEDIAN_NS);
        // Session 21's failing CI run: late by 32 µs at the median.
        let slow = run(",\"slice_late_hist\":[[1000,900],[16000,1100],[32000,1500],[64000,900]]");
        assert_eq!(slice_late_median(&slow), 32000);
        assert!(slice_late_median(&slow) > BRISK_MEDIAN_NS);
        assert_eq!(slice_late_median(&run("")), 0);
    }

    #[test]
    fn a_percentile_a_bucket_apart_meets_the_target_only_within_its_sample_counts() {
        let (hv, sim) = (Some(KNEE_HV.to_vec()), Some(KNEE_SIM.to_vec()));
        let judge = |bound, h, m, hh: &Option<Vec<(u64, u64)>>, mh: &Option<Vec<(u64, u64)>>| {
            judge_percentile(bound, 0.99, h, m, hh.as_ref(), mh.as_ref())
        };
        // Within 30%, and the same bucket: on target whatever the counts.
        assert!(judge(Bound::Target, 1_015_807, 1_250_000, &None, &None).is_ok());
        assert!(judge(Bound::Target, 600_000, 1_000_000, &None, &None).is_ok());
        // 1.02 ms against 1.5 ms, a bucket apart: 2,000 wake-ups each cannot tell them
        // apart (both bands span 0.5-4 ms), 100 times as many can.
        let verdict = judge(Bound::Target, 1_015_807, 1_500_000, &hv, &sim).unwrap();
        assert!(
            verdict.contains("as closely as the sample counts tell"),
            "{verdict}"
        );
        let times = |h: &[(u64, u64)], up: u64| -> Option<Vec<(u64, u64)>> {
            Some(h.iter().map(|&(b, n)| (b * up, n * 100)).collect())
        };
        let why = judge(
            Bound::Target,
            1_015_807,
            1_500_000,
            &times(KNEE_HV, 1),
            &times(KNEE_SIM, 2),
        )
        .unwrap_err();
        assert!(
            why.contains("further than their sample counts allow"),
            "{why}"
        );
        assert!(judge(Bound::Target, 1_015_807, 1_500_000, &None, &None).is_err());
        // Two buckets apart: never on target; within a bucket only as the counts allow.
        let why = judge(Bound::Target, 1_015_807, 3_000_000, &hv, &sim).unwrap_err();
        assert!(why.contains("more than one bucket"), "{why}");
        assert!(judge(Bound::Bucket, 1_015_807, 3_000_000, &hv, &sim).is_ok());
        assert!(judge(Bound::Bucket, 1_015_807, 3_000_000, &None, &None).is_err());
        assert!(judge(Bound::Reported, 1_015_807, 30_000_000, &None, &None).is_ok());
    }

    #[test]
    fn quantile_bands_follow_the_sample_count() {
        assert_eq!(quantile_band(&[], 0.99), None);
        assert_eq!(quantile_band(KNEE_HV, 0.99), Some((20, 22)));
        assert_eq!(quantile_band(KNEE_SIM, 0.99), Some((20, 22)));
        assert_eq!(quantile_band(APART_HV, 0.99), Some((24, 25)));
        assert_eq!(quantile_band(APART_SIM, 0.99), Some((20, 22)));
        // The same shape a hundred times over: the band narrows to the p99's own bucket.
        let many: Vec<(u64, u64)> = KNEE_HV.iter().map(|&(b, n)| (b, n * 100)).collect();
        assert_eq!(quantile_band(&many, 0.99), Some((20, 20)));
        // One sample: every quantile is it.
        assert_eq!(quantile_band(&[(65536, 1)], 0.5), Some((16, 16)));
    }

    #[test]
    fn bands_note_names_each_engines_range() {
        let v = |h: &[(u64, u64)]| h.to_vec();
        assert_eq!(
            bands_note(Some(&v(KNEE_HV)), Some(&v(APART_HV)), 0.99),
            "by their sample counts between 524.3 and 4194.3 µs on the hypervisor, 8388.6 and \
             33554.4 µs simulated"
        );
        assert_eq!(bands_note(None, Some(&v(KNEE_SIM)), 0.99), "");
    }

    #[test]
    fn quantiles_apart_only_by_chance_are_indistinct() {
        let v = |h: &[(u64, u64)]| h.to_vec();
        assert!(quantiles_indistinct(
            Some(&v(KNEE_HV)),
            Some(&v(KNEE_SIM)),
            0.99
        ));
        assert!(!quantiles_indistinct(
            Some(&v(APART_HV)),
            Some(&v(APART_SIM)),
            0.99
        ));
        // Without a histogram nothing is indistinct: the bucket bound alone holds.
        assert!(!quantiles_indistinct(None, Some(&v(KNEE_SIM)), 0.99));
        // The same two shapes from a hundred times the wake-ups: 2 buckets apart (the
        // p99s at 1 and 2-4 ms) is then no chance.
        let many = |h: &[(u64, u64)]| -> Vec<(u64, u64)> {
            h.iter().map(|&(b, n)| (b, n * 100)).collect()
        };
        assert!(!quantiles_indistinct(
            Some(&many(KNEE_HV)),
            Some(&many(KNEE_SIM)),
            0.99
        ));
    }
}
