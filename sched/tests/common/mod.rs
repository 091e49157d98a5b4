//! What the simulator's tests share (`mod common;` in each): a spec's head, parsing, and a
//! run that checks the simulator's invariants. Each test file uses a part of it.
#![allow(dead_code)]

use sched::sim::{self, Options, Output};
use sched::spec::Spec;

/// The head of a spec: its `name`, `duration_ms` measured after `warmup_ms`, the
/// `[machine]` lines (`cpus = N`, and any others) and `[sched] policy`. The test appends
/// the rest: `[sched]` knobs, pools, domains, events. It starts with a blank line, as the
/// raw strings it stands for did, so an error's line numbers are as they were.
pub fn head(name: &str, duration_ms: u64, warmup_ms: u64, machine: &str, policy: &str) -> String {
    format!(
        "\nname = \"{name}\"\nduration_ms = {duration_ms}\nwarmup_ms = {warmup_ms}\n[machine]\n\
         {machine}\n[sched]\npolicy = \"{policy}\"\n"
    )
}

/// `text` parsed (as file `file`), or the test fails with the parser's error.
pub fn spec(text: &str, file: &str) -> Spec {
    Spec::from_str(text, file).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `s` in the simulator and asserts its invariants: no vCPU current on two CPUs, no
/// sleeping vCPU picked.
pub fn run_checked(s: &Spec, opts: &Options) -> Output {
    let out = sim::run(s, opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.violations.double_run, 0, "{}: a vCPU ran on two CPUs", s.sched.policy);
    assert_eq!(out.violations.bad_pick, 0, "{}: a sleeping vCPU was picked", s.sched.policy);
    out
}

/// The options of a plain run: seed 1, nothing else.
pub fn seed1() -> Options {
    Options { seed: 1, ..Options::default() }
}

/// A `[[domain]]` group of `count` domains named `name0`, `name1`, ... running `workload`
/// with its default arguments; the test appends the group's own lines, if any.
pub fn group(name: &str, count: u32, workload: &str) -> String {
    format!("[[domain]]\nname = \"{name}\"\ncount = {count}\nworkload = \"{workload}\"\n")
}

/// A fresh scratch folder for test `name` (this process's, under the system's temp dir).
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("schedsim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `schedsim` binary with `args`: its exit code, and its stdout and stderr.
pub fn schedsim<A: AsRef<std::ffi::OsStr>>(args: &[A]) -> (Option<i32>, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_schedsim")).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.code(), text)
}

/// One way to break a good spec: the text `from` it has, the text `to` that replaces it, how
/// the error must start and what else it must name.
pub type Refusal<'a> = (&'a str, &'a str, &'a str, &'a [&'a str]);

/// Each case of `cases` applied to `good` alone is refused by the parser (the file named
/// `exp.toml`) with an error that starts with its prefix and names each of its names; a
/// failure names the case.
pub fn refuses(good: &str, cases: &[Refusal]) {
    for &(from, to, starts, names) in cases {
        let e = Spec::from_str(&good.replace(from, to), "exp.toml")
            .expect_err(&format!("{from:?} -> {to:?} should be rejected"))
            .to_string();
        assert!(e.starts_with(starts), "{from:?} -> {to:?}: {e}");
        for name in names {
            assert!(e.contains(name), "{from:?} -> {to:?}: no `{name}` in: {e}");
        }
    }
}

/// A `[[domain]]` named `lat` of the `latency` workload, waking every `period_us` to work
/// `run_us`, with the per-domain parameters `sched` (`[domain.sched]` lines).
pub fn latency_domain(sched: &str, period_us: u64, run_us: u64) -> String {
    format!(
        "[[domain]]\nname = \"lat\"\nworkload = \"latency\"\n[domain.sched]\n{sched}\n\
         [domain.args]\nperiod_us = {period_us}\nrun_us = {run_us}\n"
    )
}

/// `tests/specs/rtds-phase.toml`: a latency domain beside hogs under rtds, whose wake-ups tie
/// a hog's 10 ms deadline once in ten if they fall in the second half of a millisecond.
pub fn rtds_phase() -> Spec {
    Spec::from_file(format!("{}/tests/specs/rtds-phase.toml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Asserts that one wake-up in ten (8-12%) of `lat` waited 256-512 µs (the histogram's
/// bucket [2^18, 2^19) ns), its p99 there: the ties of `rtds_phase`.
pub fn ties_one_wake_up_in_ten(lat: &abi::tool::results::Domain) {
    let hist = lat.wake_lat_hist.iter().flatten();
    let tied: u64 = hist.filter(|b| b.0 == 1 << 19).map(|b| b.1).sum();
    let share = tied as f64 / lat.wakeups as f64;
    assert!(
        (0.08..=0.12).contains(&share) && lat.wake_lat_p99_ns >> 18 == 1,
        "{tied} of {} wake-ups waited 256-512 µs (p99 {} ns): expected one in ten",
        lat.wakeups,
        lat.wake_lat_p99_ns
    );
}

/// The records of the results file at `path` (lines that are none are skipped).
pub fn records_in(path: impl AsRef<std::path::Path>) -> Vec<abi::tool::results::Record> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `run` record of the results file at `path`.
pub fn run_in(path: impl AsRef<std::path::Path>) -> abi::tool::results::Run {
    records_in(path)
        .into_iter()
        .find_map(|r| match r {
            abi::tool::results::Record::Run(r) => Some(r),
            _ => None,
        })
        .expect("a run record")
}

/// The `domain` records of the results file at `path`.
pub fn domains_in(path: impl AsRef<std::path::Path>) -> Vec<abi::tool::results::Domain> {
    records_in(path)
        .into_iter()
        .filter_map(|r| match r {
            abi::tool::results::Record::Domain(d) => Some(d),
            _ => None,
        })
        .collect()
}
