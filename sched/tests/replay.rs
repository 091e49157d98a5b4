//! `schedsim --replay` (`sched::replay`) on a recorded hypervisor run: `fixtures/replay-small.*`
//! is a latency domain beside three hogs on 2 CPUs under bvt (0.6 s measured), recorded with
//! `scripts/run replay-small.toml --trace replay-small.trace.json --out
//! replay-small.hypervisor.jsonl` under QEMU TCG on a loaded host, beside the cost profile
//! measured there the same morning. Replaying the run under its own policy must reproduce it:
//! every share within 2 points, the latency domain's p50 and p99 wake-up latency within 30%
//! or in the same log2 bucket (the hypervisor's histogram buckets: [2^(k-1), 2^k) ns).

mod common;

use std::ffi::OsStr;

use abi::tool::results::{Domain, Record};
use sched::cost::Profile;
use sched::replay::Replay;
use sched::sim::{self, Options};
use sched::spec::Spec;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn shares(ds: &[Domain]) -> Vec<(String, f64)> {
    let total: u64 = ds.iter().map(|d| d.cpu_ns).sum();
    ds.iter().map(|d| (d.name.clone(), 100.0 * d.cpu_ns as f64 / total as f64)).collect()
}

fn bucket(ns: u64) -> u32 {
    64 - ns.leading_zeros()
}

fn close(hyp: u64, sim: u64) -> bool {
    (hyp as f64 - sim as f64).abs() <= 0.3 * hyp as f64 || bucket(hyp) == bucket(sim)
}

#[test]
fn replaying_a_run_under_its_own_policy_reproduces_it() {
    let spec = Spec::from_file(fixture("replay-small.toml")).unwrap();
    let replay = Replay::load(&fixture("replay-small.trace.json")).unwrap();
    // The hogs woke once, when started; being `cpu` domains they run as cpu, not replayed.
    assert!(replay.arrivals("lat0", 0).is_some_and(|a| a.len() > 300));
    let hyp: Vec<Domain> = std::fs::read_to_string(fixture("replay-small.hypervisor.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| match serde_json::from_str::<Record>(l) {
            Ok(Record::Domain(d)) => Some(d),
            _ => None,
        })
        .collect();
    let profile = Profile::load(&fixture("replay-small.profile.toml")).unwrap();
    let run = |costs: Profile| {
        let o = Options { seed: 1, costs, replay: Some(replay.clone()), ..Options::default() };
        sim::run(&spec, &o).unwrap().domains
    };
    for costs in [Profile::ideal(), profile.clone()] {
        let sim = run(costs.clone());
        for ((name, h), (_, s)) in shares(&hyp).iter().zip(shares(&sim)) {
            assert!(
                (h - s).abs() <= 2.0,
                "{}: {name}: {h:.2}% hypervisor, {s:.2}% replayed",
                costs.name
            );
        }
        // The replay keeps the recorded wake-ups (those in the interval).
        assert!(sim[0].wakeups.abs_diff(hyp[0].wakeups) <= hyp[0].wakeups / 20, "{:?}", sim[0]);
    }
    let (h, s) = (&hyp[0], &run(profile)[0]);
    assert!(
        close(h.wake_lat_p50_ns, s.wake_lat_p50_ns),
        "p50 {} against {}",
        h.wake_lat_p50_ns,
        s.wake_lat_p50_ns
    );
    assert!(
        close(h.wake_lat_p99_ns, s.wake_lat_p99_ns),
        "p99 {} against {}",
        h.wake_lat_p99_ns,
        s.wake_lat_p99_ns
    );
}

/// The same arrivals under another policy: credit makes the waker wait behind its rate
/// limit, where bvt's warp let it in at once.
#[test]
fn the_same_arrivals_under_another_policy() {
    let mut spec = Spec::from_file(fixture("replay-small.toml")).unwrap();
    spec.sched.policy = "credit".into();
    let replay = Replay::load(&fixture("replay-small.trace.json")).unwrap();
    let o = Options { seed: 1, replay: Some(replay), ..Options::default() };
    let lat = sim::run(&spec, &o).unwrap().domains[0].clone();
    assert!(lat.wakeups > 300, "{lat:?}");
    assert!(lat.wake_lat_p99_ns > 100_000, "{lat:?}");
}

/// `schedsim --replay`: a file that is not a trace exits 2 naming it; a trace replays and
/// says what it replayed.
#[test]
fn the_command_replays_or_refuses() {
    let dir = common::scratch_dir("replay");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"traceEvents\": 3}").unwrap();
    let out = dir.join("r.jsonl");
    let schedsim = |trace: &std::path::Path| {
        let spec = fixture("replay-small.toml");
        common::schedsim(&[
            OsStr::new("--replay"),
            trace.as_os_str(),
            spec.as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
    };
    let (code, text) = schedsim(&bad);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(bad.to_str().unwrap()) && text.contains("traceEvents"), "{text}");
    let (code, text) = schedsim(std::path::Path::new(&fixture("replay-small.trace.json")));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("replayed: the arrivals in"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
