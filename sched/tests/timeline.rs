//! Pools and timelines in the simulator: each pool's policy schedules only its CPUs, and
//! each event changes what happens after it and not before.

mod common;

use sched::sim::{self, Options, Output};
use sched::spec::Spec;

const MS: u64 = 1_000_000;

// `..Options::default()`: the options grow (other engines' settings).
#[allow(clippy::needless_update)]
fn run(text: &str, window_ms: u64) -> Output {
    let spec = Spec::from_str(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let out = sim::run(
        &spec,
        &Options { seed: 1, trace: true, window_ns: Some(window_ms * MS), ..Options::default() },
    )
    .unwrap();
    assert_eq!(out.summary.violations, 0, "{:?}", out.violations);
    assert!(out.events.iter().all(|e| e.ok), "{:?}", out.events);
    out
}

/// Domain `d`'s share of the CPU time given out in windows `from..to`.
fn share(out: &Output, d: usize, from: usize, to: usize) -> f64 {
    let mine: u64 = out.windows[from..to].iter().map(|w| w[d]).sum();
    let all: u64 = out.windows[from..to].iter().flatten().sum();
    mine as f64 / all as f64
}

/// The CPUs domain `name`'s run intervals in the trace used, before and after `t_ms` (of
/// simulated time).
fn cpus_around(out: &Output, name: &str, t_ms: u64) -> (Vec<u64>, Vec<u64>) {
    let trace: serde_json::Value = serde_json::from_str(out.trace.as_ref().unwrap()).unwrap();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for e in trace["traceEvents"].as_array().unwrap() {
        if e["ph"] != "X" || e["name"] != format!("{name}.0") {
            continue;
        }
        let (ts, cpu) = (e["ts"].as_f64().unwrap(), e["pid"].as_u64().unwrap());
        let side = if ts < (t_ms * 1000) as f64 { &mut before } else { &mut after };
        if !side.contains(&cpu) {
            side.push(cpu);
        }
    }
    before.sort_unstable();
    after.sort_unstable();
    (before, after)
}

#[test]
fn a_reweight_changes_shares_after_the_event_and_not_before() {
    for policy in ["credit", "credit2", "bvt", "stride"] {
        let out = run(
            &format!(
                "name = \"t\"\nduration_ms = 4000\nwarmup_ms = 200\n[machine]\ncpus = 1\n\
                 [sched]\npolicy = \"{policy}\"\n[[domain]]\nname = \"w\"\ncount = 4\n\
                 workload = \"cpu\"\n[[event]]\nat_ms = 2000\ntarget = \"w0\"\n\
                 set = {{ weight = 768 }}\n"
            ),
            100,
        );
        // Before: a quarter each. After (a second to settle): 768 / (768 + 3 × 256) = 1/2.
        let before = share(&out, 0, 5, 20);
        let after = share(&out, 0, 30, 40);
        assert!((before - 0.25).abs() < 0.03, "{policy}: w0 had {before:.3} before the event");
        assert!((after - 0.5).abs() < 0.03, "{policy}: w0 had {after:.3} after the event");
        assert_eq!(out.events[0].what, "set weight=768");
        assert_eq!(out.events[0].applied_ns, Some(2000 * MS));
    }
}

const POOLS: &str = r#"
name = "t"
duration_ms = 2000
warmup_ms = 100
[machine]
cpus = 3
[[pool]]
name = "one"
cpus = 1
policy = "rr"
[[pool]]
name = "two"
cpus = 2
policy = "credit"
[[domain]]
name = "a"
count = 2
workload = "cpu"
pool = "one"
[[domain]]
name = "b"
count = 4
workload = "cpu"
pool = "two"
"#;

#[test]
fn each_pool_schedules_only_its_cpus() {
    let out = run(POOLS, 100);
    let run = &out.run;
    let pools = run.pools.as_ref().unwrap();
    assert_eq!((pools[0].policy.as_str(), &pools[0].cpus[..]), ("rr", &[0][..]));
    assert_eq!((pools[1].policy.as_str(), &pools[1].cpus[..]), ("credit", &[1, 2][..]));
    // `a` shares CPU 0 (half a CPU each); `b` shares CPUs 1 and 2 (half each).
    for d in &out.domains {
        let got = d.cpu_ns as f64 / run.duration_ns as f64;
        assert!((got - 0.5).abs() < 0.02, "{} got {got:.3} of a CPU", d.name);
        let want = if d.group == "a" { "one" } else { "two" };
        assert_eq!(d.pool.as_deref(), Some(want));
    }
    assert_eq!(out.ran_on[0], 0b001);
    assert!(out.ran_on[2..].iter().all(|&m| m & 0b001 == 0 && m != 0));
}

#[test]
fn a_move_changes_which_cpus_a_domain_runs_on() {
    let text = format!("{POOLS}[[event]]\nat_ms = 1000\ntarget = \"a1\"\nmove_to = \"two\"\n");
    let out = run(&text, 100);
    // The event is at 100 + 1000 ms of simulated time.
    let (before, after) = cpus_around(&out, "a1", 1100);
    assert_eq!(before, [0]);
    assert!(!after.is_empty() && after.iter().all(|&c| c == 1 || c == 2), "{after:?}");
    // a0 has CPU 0 to itself after the move; a1 shares two CPUs with four others.
    assert!((share(&out, 0, 12, 20) - 1.0 / 3.0).abs() < 0.02);
    assert!((share(&out, 1, 12, 20) - 0.4 / 3.0).abs() < 0.02);
    assert!((share(&out, 1, 2, 10) - 0.5 / 3.0).abs() < 0.02);
    assert_eq!(out.domains[1].pool.as_deref(), Some("two"));
}

#[test]
fn a_policy_swap_keeps_every_domain_running() {
    for (from, to) in
        [("credit", "credit2"), ("credit", "rtds"), ("rr", "bvt"), ("credit2", "stride")]
    {
        let text = POOLS.replace("policy = \"credit\"", &format!("policy = \"{from}\""))
            + &format!("[[event]]\nat_ms = 1000\ntarget = \"two\"\npolicy = \"{to}\"\n");
        let out = run(&text, 100);
        for (d, dom) in out.domains.iter().enumerate() {
            for w in 0..out.windows.len() {
                assert!(
                    out.windows[w][d] > 0,
                    "{from} -> {to}: {} got nothing in window {w}",
                    dom.name
                );
            }
        }
        // Nothing idles: the new policy takes every CPU of the pool at once.
        assert_eq!(out.summary.idle_ns, 0, "{from} -> {to}");
        assert_eq!(out.events[0].what, format!("policy {to}"));
        // The other pool is untouched.
        let (before, after) = cpus_around(&out, "a0", 1100);
        assert_eq!((before, after), (vec![0], vec![0]));
    }
}

#[test]
fn start_pause_unpause_and_destroy_take_effect_at_their_time() {
    let text = common::head("t", 2000, 0, "cpus = 1", "credit")
        + &common::group("w", 2, "cpu")
        + r#"[[domain]]
name = "late"
workload = "cpu"
start = "event"
[[event]]
at_ms = 500
target = "late"
action = "start"
[[event]]
at_ms = 1000
target = "w0"
action = "pause"
[[event]]
at_ms = 1500
target = "w0"
action = "unpause"
[[event]]
at_ms = 1500
target = "w1"
action = "destroy"
"#;
    let out = run(&text, 100);
    let cpu = |d: usize, from: usize, to: usize| -> u64 {
        out.windows[from..to].iter().map(|w| w[d]).sum()
    };
    assert_eq!(cpu(2, 0, 5), 0, "late ran before its start");
    assert!(cpu(2, 5, 10) > 0);
    assert_eq!(cpu(0, 10, 15), 0, "w0 ran while paused");
    assert!(cpu(0, 15, 20) > 0, "w0 did not come back after unpause");
    assert_eq!(cpu(1, 15, 20), 0, "w1 ran after it was destroyed");
    // After the destroy, w0 and late share the CPU.
    assert!((share(&out, 0, 16, 20) - 0.5).abs() < 0.05);
    assert_eq!(out.events.len(), 4);
}

#[test]
fn the_same_timeline_gives_the_same_results() {
    let text = format!(
        "{POOLS}[[event]]\nat_ms = 700\ntarget = \"a\"\nmove_to = \"two\"\n\
         [[event]]\nat_ms = 1200\ntarget = \"two\"\npolicy = \"bvt\"\n\
         [[event]]\nat_ms = 1300\ntarget = \"b0\"\nset = {{ weight = 512 }}\n"
    );
    assert_eq!(run(&text, 100).jsonl(), run(&text, 100).jsonl());
}
