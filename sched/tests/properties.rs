//! The scheduling properties of issue 3, each checked in `schedsim` for every policy where
//! it applies. Every run also asserts the simulator's invariants: no vCPU current on two
//! CPUs, no pick of a sleeping vCPU (and, where checked, no wasted core).
//!
//! The generic properties iterate the registry (`sched::registry`), choosing the policies
//! by what they declare: all of them, those that preempt (`PolicyInfo::preempts`), those
//! with a `weight` or a `cap` per domain. A policy added to the registry is checked here
//! with no change to this file. A few tests compare named policies (credit's bound, the
//! latency ranking of rr, credit and BVT): claims about those policies in particular.

mod common;

use sched::PolicyInfo;
use sched::registry;
use sched::sim::{Options, Output};
use sched::spec::Spec;

/// Every registered policy.
fn every_policy() -> impl Iterator<Item = &'static PolicyInfo> {
    registry::policies()
}

/// Those that take a running vCPU off its CPU by themselves (a slice or a preempting wake):
/// the only ones that can run cpu-bound domains on every CPU.
fn preempting() -> impl Iterator<Item = &'static PolicyInfo> {
    every_policy().filter(|p| p.preempts)
}

/// Those with a per-domain `weight`: proportional share.
fn weighted() -> impl Iterator<Item = &'static PolicyInfo> {
    every_policy().filter(|p| p.domain_param("weight").is_some())
}

#[test]
fn the_generic_properties_cover_every_registered_policy() {
    let names: Vec<_> = every_policy().map(|p| p.name).collect();
    for name in ["rr", "credit", "bvt", "fifo"] {
        assert!(names.contains(&name), "{name} is not registered: {names:?}");
    }
    assert!(weighted().any(|p| p.name == "credit") && weighted().any(|p| p.name == "bvt"));
    assert!(preempting().all(|p| p.name != "fifo"));
}

fn spec(text: &str) -> Spec {
    common::spec(text, "<test>")
}

use common::run_checked as run_with;

fn run(s: &Spec) -> Output {
    run_with(s, &common::seed1())
}

fn with_policy(text: &str, policy: &str) -> Spec {
    let mut s = spec(text);
    s.sched.policy = policy.into();
    s.validate().unwrap();
    s
}

fn share(out: &Output, i: usize) -> f64 {
    let total: u64 = out.domains.iter().map(|d| d.cpu_ns).sum();
    out.domains[i].cpu_ns as f64 / total as f64
}

const WEIGHTS: &str = include_str!("specs/fairness-weights.toml");

#[test]
fn proportional_share_bvt_within_one_percent() {
    let out = run(&with_policy(WEIGHTS, "bvt"));
    let err = out.summary.share_err_max.unwrap();
    eprintln!("bvt share_err_max = {err:.4}");
    assert!(err <= 0.01, "bvt: largest relative share error {err:.4} > 1%");
}

/// Prints each domain's share against w / Σw and returns the largest difference, in
/// fractions of the whole machine (0.01 = one percentage point).
fn weighted_share_err(out: &Output, label: &str) -> f64 {
    let weight_total: u64 = out.domains.iter().map(|d| d.weight).sum();
    let mut worst = 0.0f64;
    for (i, d) in out.domains.iter().enumerate() {
        let expect = d.weight as f64 / weight_total as f64;
        eprintln!("{label} {} share {:.4} expected {expect:.4}", d.name, share(out, i));
        worst = worst.max((share(out, i) - expect).abs());
    }
    worst
}

#[test]
fn proportional_share_credit_within_one_point() {
    // The issue's target: every share within one percentage point of the machine of w / Σw.
    // Met with the default `credit_bound_tslices = 2`; see credit.rs for why Xen's bound of
    // one slice misses it.
    let out = run(&with_policy(WEIGHTS, "credit"));
    let worst = weighted_share_err(&out, "credit");
    eprintln!("credit: largest share error {:.2} points", 100.0 * worst);
    assert!(worst <= 0.01, "credit: a share is {:.2} points off w / 36", 100.0 * worst);
    assert!(out.summary.jain.unwrap() >= 0.99);
}

#[test]
fn proportional_share_credit_xen_bound() {
    // Xen's exact bound (±one slice of credit) is still selectable; it misses the target by
    // a little (1.4 points here) but stays within two.
    let mut s = with_policy(WEIGHTS, "credit");
    s.sched.knobs.insert("credit_bound_tslices".into(), 1);
    s.validate().unwrap();
    let worst = weighted_share_err(&run(&s), "credit (Xen bound)");
    eprintln!("credit, credit_bound_tslices = 1: largest share error {:.2} points", 100.0 * worst);
    assert!(worst <= 0.02, "credit (Xen bound): a share is {:.2} points off", 100.0 * worst);
}

#[test]
fn every_weighted_policy_shares_by_weight_within_one_point() {
    for p in weighted() {
        let out = run(&with_policy(WEIGHTS, p.name));
        let worst = weighted_share_err(&out, p.name);
        eprintln!("{}: largest share error {:.2} points", p.name, 100.0 * worst);
        assert!(worst <= 0.01, "{}: a share is {:.2} points off w / 36", p.name, 100.0 * worst);
    }
}

#[test]
fn every_unweighted_preempting_policy_shares_equally() {
    for p in preempting().filter(|p| p.domain_param("weight").is_none()) {
        let out = run(&with_policy(WEIGHTS, p.name));
        let err = out.summary.share_err_max.unwrap();
        assert!(err <= 0.01, "{}: share error {err:.4}", p.name);
    }
}

#[test]
fn every_policy_with_caps_respects_them() {
    for p in every_policy().filter(|p| p.domain_param("cap").is_some()) {
        let text = caps().replace("policy = \"credit\"", &format!("policy = \"{}\"", p.name));
        let s = spec(&text);
        let out = run(&s);
        let pct = 100.0 * out.domains[0].cpu_ns as f64 / (s.duration_ms as f64 * 1e6);
        eprintln!("{}: capped at 20%: got {pct:.2}% of one CPU", p.name);
        assert!(pct <= 21.0, "{}: cap 20 exceeded: {pct:.2}%", p.name);
        assert!(pct >= 10.0, "{}: cap far too strict: {pct:.2}%", p.name);
    }
}

fn caps() -> String {
    common::head("caps", 10000, 500, "cpus = 2", "credit")
        + r#"[[domain]]
name = "capped"
workload = "cpu"
cap = 20
"# + &common::group("free", 3, "cpu")
}

fn mixed() -> String {
    common::head("mixed", 5000, 200, "cpus = 3", "credit")
        + &common::group("hog", 4, "cpu")
        + &common::group("io", 4, "io")
        + r#"[domain.args]
burst_us = 300
block_us = 3000
"# + &common::group("lat", 2, "latency")
        + r#"[[domain]]
name = "y"
workload = "yield"
"#
}

/// mixed() for `p`: as it is for a policy that preempts; with two hogs instead of four for one
/// that does not (four hogs on three CPUs would keep them for good, and Domain0 from ever
/// running on the hypervisor, which the spec validator refuses).
fn mixed_for(p: &PolicyInfo) -> Spec {
    let text = if p.preempts {
        mixed()
    } else {
        mixed().replace("count = 4\nworkload = \"cpu\"", "count = 2\nworkload = \"cpu\"")
    };
    with_policy(&text, p.name)
}

#[test]
fn work_conserving_every_policy() {
    for p in every_policy() {
        let out = run(&mixed_for(p));
        assert_eq!(out.violations.wasted_core, 0, "{}: a CPU idled while work waited", p.name);
    }
    // Also with fewer runnable vCPUs than CPUs most of the time.
    let sparse = mixed().replace("count = 4\nworkload = \"cpu\"", "count = 1\nworkload = \"cpu\"");
    for p in every_policy() {
        let out = run(&with_policy(&sparse, p.name));
        assert_eq!(out.violations.wasted_core, 0, "{} (sparse): wasted core", p.name);
        assert!(out.summary.idle_ns > 0);
    }
}

#[test]
fn an_urgent_wake_up_takes_an_idle_cpu_before_preempting_its_own() {
    // Three CPUs: a latency domain that warps (BVT) or is boosted (credit) on waking, homed
    // on a CPU that runs a hog, while the io domain's CPU idles between its bursts. Waking
    // over the hog would leave the hog queued beside an idle CPU that nobody kicks (BVT
    // did: 391 wasted-core instants). The rule is `runq::Runqueues::kick_for`'s.
    let text = common::head("urgent-waker", 3000, 100, "cpus = 3", "bvt")
        + &common::latency_domain("warp_us = 20000", 1000, 50)
        + r#"[[domain]]
name = "hog"
workload = "cpu"
[[domain]]
name = "io"
workload = "io"
[domain.args]
burst_us = 100
block_us = 5000
[[domain]]
name = "hog2"
workload = "cpu"
"#;
    for p in preempting() {
        let out = run(&with_policy(&text, p.name));
        assert_eq!(out.violations.wasted_core, 0, "{}: a CPU idled while work waited", p.name);
    }
}

fn window_jain(out: &Output) -> f64 {
    out.windows
        .iter()
        .map(|w| {
            let s: f64 = w.iter().map(|&x| x as f64).sum();
            let s2: f64 = w.iter().map(|&x| (x as f64) * (x as f64)).sum();
            s * s / (w.len() as f64 * s2)
        })
        .fold(1.0, f64::min)
}

#[test]
fn many_domains_jain_per_second() {
    let text = common::head("many", 5000, 1000, "cpus = 7", "rr")
        + r#"# Credit only (rr and bvt ignore it): with Xen's 30 ms slices each of 128 domains gets one
# to three slices a second, and a 1 s window cannot be fair to 1% (worst Jain ≈ 0.96).
tslice_ms = 5
"# + &common::group("w", 128, "cpu");
    let opts =
        Options { seed: 1, trace: false, window_ns: Some(1_000_000_000), ..Default::default() };
    for p in preempting() {
        let out = run_with(&with_policy(&text, p.name), &opts);
        let j = window_jain(&out);
        eprintln!("{}: 128 domains on 7 CPUs, worst 1 s Jain = {j:.4}", p.name);
        assert!(j >= 0.99, "{}: Jain over a 1 s window {j:.4} < 0.99", p.name);
    }
}

fn latency() -> String {
    common::head("latency", 5000, 500, "cpus = 4", "rr")
        + &common::latency_domain("warp_us = 10000\nwarpl_us = 2000", 1000, 20)
        + &common::group("hog", 63, "cpu")
}

#[test]
fn latency_domain_among_hogs() {
    let p99 = |policy: &str| {
        let out = run(&with_policy(&latency(), policy));
        let d = &out.domains[0];
        eprintln!(
            "{policy}: latency p50 {} ns p99 {} ns max {} ns, {} wakeups, {} periods",
            d.wake_lat_p50_ns, d.wake_lat_p99_ns, d.wake_lat_max_ns, d.wakeups, d.work
        );
        d.wake_lat_p99_ns
    };
    let (rr, credit, bvt) = (p99("rr"), p99("credit"), p99("bvt"));
    eprintln!("p99 wake-up latency: rr {rr} ns, credit {credit} ns, bvt {bvt} ns");
    assert!(bvt * 10 < rr, "bvt with warp should be far below rr");
    assert!(credit * 10 < rr, "credit with BOOST should be far below rr");
}

#[test]
fn stride_lag_lets_a_latency_domain_rejoin_ahead() {
    // Stride's own per-domain parameter: with `lag_us` of a quantum, the latency domain
    // rejoins a quantum ahead and preempts; without, it waits its turn behind 63 hogs.
    let lat = |lag_us: u64| {
        let text =
            latency().replace("warpl_us = 2000", &format!("warpl_us = 2000\nlag_us = {lag_us}"));
        let out = run(&with_policy(&text, "stride"));
        let d = &out.domains[0];
        eprintln!("stride, lag_us = {lag_us}: p99 {} ns, {} periods", d.wake_lat_p99_ns, d.work);
        (d.wake_lat_p99_ns, d.work)
    };
    let ((p99_none, work_none), (p99_lag, work_lag)) = (lat(0), lat(10_000));
    assert!(p99_lag * 10 < p99_none, "lag_us should cut the p99 wake-up latency");
    assert!(work_lag > work_none * 10, "lag_us should let it keep its period");
}

#[test]
fn yield_attacker_gets_no_more_than_its_share_under_credit() {
    for sleep_us in [0, 200] {
        let text = common::head("yield-attack", 10000, 1000, "cpus = 1", "credit")
            + &format!(
                r#"[[domain]]
name = "attacker"
workload = "yield"
[domain.args]
sleep_us = {sleep_us}
[[domain]]
name = "victim"
count = 3
workload = "cpu"
"#
            );
        let out = run(&spec(&text));
        let s = share(&out, 0);
        eprintln!("yield attacker (sleep_us = {sleep_us}): share {s:.4} of the CPU (fair: 0.25)");
        assert!(s <= 0.25 + 0.01, "attacker got {s:.4}");
    }
}

#[test]
fn yielders_cannot_starve_a_victim() {
    // A crowd of yield attackers around one cpu-bound victim on 2 CPUs: whatever a policy
    // does with yield, the victim keeps at least half of its fair share (2 CPUs / 9).
    for policy in preempting().map(|p| p.name) {
        let text = common::head("yield-crowd", 5000, 500, "cpus = 2", policy)
            + r#"[[domain]]
name = "victim"
workload = "cpu"
"# + &common::group("attacker", 8, "yield");
        let out = run(&spec(&text));
        let victim_cpus = out.domains[0].cpu_ns as f64 / 5e9;
        let fair = 2.0 / 9.0;
        eprintln!("{policy}: victim among 8 yielders got {victim_cpus:.3} CPUs (fair {fair:.3})");
        assert!(
            victim_cpus >= fair / 2.0,
            "{policy}: the victim got {victim_cpus:.3} CPUs, fair is {fair:.3}"
        );
    }
}

/// The `yield` guest (workloads/src/bin/yield.rs) runs until 100 µs before each 10 ms tick
/// boundary and yields; switched in inside that window it yields at once, since it spins
/// only until the window's start. Under rr on one CPU beside a cpu victim, the second of
/// two attackers is switched in inside the first's window and yields at once, so the
/// victim gets half the CPU and the first attacker the rest: the hypervisor gave 50.5%,
/// 48.7% and 0.1% (the validation sweep's isolation point, session 15). The simulator had
/// the attacker run on to its next window instead, a third each.
#[test]
fn an_attacker_switched_in_inside_its_window_yields_at_once() {
    let text = common::head("yield-pair", 2000, 200, "cpus = 1", "rr")
        + "[[domain]]\nname = \"victim\"\nworkload = \"cpu\"\n"
        + &common::group("attacker", 2, "yield");
    let out = run(&spec(&text));
    let total: u64 = out.domains.iter().map(|d| d.cpu_ns).sum();
    let share = |i: usize| out.domains[i].cpu_ns as f64 / total as f64;
    let (victim, a0, a1) = (share(0), share(1), share(2));
    assert!(
        victim > 0.45 && a0.min(a1) < 0.05,
        "victim {victim:.3}, attackers {a0:.3} and {a1:.3} (the hypervisor: 0.505, 0.487, 0.001)"
    );
}

#[test]
fn trace_intervals_add_up_to_cpu_time() {
    // Every run interval goes into the trace once, including runs that end in a block.
    for p in every_policy() {
        let policy = p.name;
        let s = mixed_for(p);
        let out =
            run_with(&s, &Options { seed: 3, trace: true, window_ns: None, ..Default::default() });
        let trace: serde_json::Value = serde_json::from_str(out.trace.as_deref().unwrap()).unwrap();
        let events = trace["traceEvents"].as_array().expect("traceEvents");
        let (t0, t1) = (s.warmup_ms as f64 * 1e3, (s.warmup_ms + s.duration_ms) as f64 * 1e3);
        let mut per_domain = vec![0.0f64; out.domains.len()];
        for e in events.iter().filter(|e| e["ph"] == "X") {
            let ts = e["ts"].as_f64().unwrap();
            let (a, b) = (ts.max(t0), (ts + e["dur"].as_f64().unwrap()).min(t1));
            if b > a {
                per_domain[(e["tid"].as_u64().unwrap() / 1000) as usize] += (b - a) * 1e3;
            }
        }
        for (d, traced) in out.domains.iter().zip(&per_domain) {
            let cpu = d.cpu_ns as f64;
            assert!(
                (traced - cpu).abs() <= cpu * 0.01 + 1e3,
                "{policy}: {} ran {cpu} ns, its trace intervals add up to {traced} ns",
                d.name
            );
        }
    }
}

#[test]
fn deterministic() {
    for p in every_policy() {
        let policy = p.name;
        let s = mixed_for(p);
        let o = Options { seed: 7, trace: true, window_ns: None, ..Default::default() };
        let (a, b) = (run_with(&s, &o), run_with(&s, &o));
        assert_eq!(a.jsonl(), b.jsonl(), "{policy}: results differ between two runs");
        assert_eq!(a.trace, b.trace, "{policy}: traces differ");
        let c = run_with(&s, &Options { seed: 8, ..o.clone() });
        assert_ne!(a.jsonl(), c.jsonl(), "{policy}: the seed should matter for io");
    }
}
