//! `[[pool]]`, a group's `pool` and `start`, and `[[event]]` in the spec: what is accepted,
//! how it resolves, and every refusal naming file, field and what is allowed.

mod common;

use sched::spec::Spec;
use sched::timeline::{Op, Targets};

fn err(text: &str) -> String {
    Spec::from_str(text, "exp.toml").expect_err("should be rejected").to_string()
}

const GOOD: &str = r#"
name = "pools"
duration_ms = 3000
[machine]
cpus = 3
[sched]
policy = "credit"
tslice_ms = 10
[[pool]]
name = "lat"
cpus = 1
policy = "rr"
[pool.sched]
slice_ms = 5
[[pool]]
name = "bulk"
cpus = 2
policy = "credit"
[[domain]]
name = "w"
count = 4
workload = "cpu"
pool = "bulk"
[[domain]]
name = "r"
count = 2
workload = "cpu"
pool = "lat"
[[domain]]
name = "late"
count = 2
workload = "cpu"
pool = "bulk"
start = "event"
[[event]]
at_ms = 1000
target = "w3"
set = { weight = 1024 }
[[event]]
at_ms = 500
target = "late"
action = "start"
[[event]]
at_ms = 1500
target = "r1"
move_to = "bulk"
[[event]]
at_ms = 2000
target = "lat"
policy = "credit2"
[[event]]
at_ms = 2500
target = "lat"
set = { ratelimit_us = 500 }
"#;

#[test]
fn pools_and_events_resolve() {
    let s = Spec::from_str(GOOD, "exp.toml").unwrap();
    let pools = s.pool_plans();
    assert_eq!(pools.len(), 2);
    assert_eq!((pools[0].name.as_str(), &pools[0].cpus[..]), ("lat", &[0][..]));
    assert_eq!((pools[1].name.as_str(), &pools[1].cpus[..]), ("bulk", &[1, 2][..]));
    // `[sched]`'s knob goes to the pool whose policy takes it; the pool's own beside it.
    assert_eq!(pools[0].knobs, vec![("slice_ms".to_string(), 5)]);
    assert_eq!(pools[1].knobs, vec![("tslice_ms".to_string(), 10)]);
    let plan = s.plan();
    assert_eq!(plan[0].pool, 1);
    assert_eq!(plan[4].pool, 0);
    assert!(plan[6].start_on_event && !plan[0].start_on_event);
    let t = s.timeline();
    // In time order, not file order.
    let at: Vec<u64> = t.iter().map(|e| e.at_ns / 1_000_000).collect();
    assert_eq!(at, [500, 1000, 1500, 2000, 2500]);
    assert_eq!(t[0].targets, Targets::Domains(vec![6, 7]));
    assert_eq!(t[0].op, Op::Start);
    assert_eq!(t[1].op, Op::Set(vec![("weight".into(), 1024)]));
    assert_eq!(t[1].what, "set weight=1024");
    assert_eq!(t[2].op, Op::MoveTo(1));
    assert_eq!(t[2].what, "move_to bulk");
    assert_eq!(t[3].targets, Targets::Pool(0));
    assert_eq!(t[3].what, "policy credit2");
    // After the swap, credit2's knob is good for `lat`.
    assert_eq!(t[4].op, Op::Set(vec![("ratelimit_us".into(), 500)]));
    // Round trip through TOML.
    assert_eq!(Spec::from_str(&s.to_toml(), "exp.toml").unwrap(), s);
}

#[test]
fn without_pools_one_default_pool_holds_every_cpu() {
    let text = "name = \"t\"\n[machine]\ncpus = 3\n[[domain]]\nname = \"w\"\nworkload = \"cpu\"\n\
                [[event]]\nat_ms = 10\ntarget = \"default\"\nset = { tslice_ms = 5 }\n";
    let s = Spec::from_str(text, "exp.toml").unwrap();
    let pools = s.pool_plans();
    assert_eq!(pools.len(), 1);
    assert_eq!((pools[0].name.as_str(), &pools[0].cpus[..]), ("default", &[0, 1, 2][..]));
    assert_eq!(s.timeline()[0].targets, Targets::Pool(0));
    assert!(!s.has_pools());
}

#[test]
fn cpu_lists_and_free_cpus() {
    let s = Spec::from_str(
        &GOOD.replace("cpus = 1\npolicy = \"rr\"", "cpus = [2]\npolicy = \"rr\""),
        "exp.toml",
    )
    .unwrap();
    let pools = s.pool_plans();
    assert_eq!(&pools[0].cpus[..], &[2]);
    // The count takes the lowest CPUs left.
    assert_eq!(&pools[1].cpus[..], &[0, 1]);
}

#[test]
fn pool_errors_name_the_field() {
    // Each case: what the good spec has, what replaces it, how the error starts and what
    // else it names.
    common::refuses(
        GOOD,
        &[
            (
                "pool = \"lat\"",
                "pool = \"fast\"",
                "exp.toml: domain[1].pool: unknown pool `fast`",
                &["lat, bulk"],
            ),
            (
                "cpus = 2\npolicy = \"credit\"",
                "cpus = 3\npolicy = \"credit\"",
                "exp.toml: pool[1].cpus:",
                &["2 of the machine's 3"],
            ),
            (
                "cpus = 2\npolicy = \"credit\"",
                "cpus = [0, 1]\npolicy = \"credit\"",
                "exp.toml: pool[1].cpus: CPU 0 is already in pool `lat`",
                &[],
            ),
            (
                "cpus = 2\npolicy = \"credit\"",
                "cpus = [1, 5]\npolicy = \"credit\"",
                "exp.toml: pool[1].cpus: CPU 5 does not exist",
                &["0..=2"],
            ),
            (
                "cpus = 1\npolicy = \"rr\"",
                "cpus = 0\npolicy = \"rr\"",
                "exp.toml: pool[0].cpus:",
                &[],
            ),
            (
                "cpus = 1\npolicy = \"rr\"",
                "cpus = []\npolicy = \"rr\"",
                "exp.toml: pool[0].cpus: is empty",
                &[],
            ),
            (
                "slice_ms = 5",
                "tslice_ms = 5",
                "exp.toml: pool[0].sched.tslice_ms:",
                &["`rr`", "slice_ms (1..="],
            ),
            ("policy = \"rr\"", "policy = \"cfs\"", "exp.toml: pool[0].policy:", &["credit2"]),
            ("name = \"bulk\"", "name = \"lat\"", "exp.toml: pool[1].name:", &["two pools"]),
            ("name = \"lat\"", "name = \"w2\"", "exp.toml: pool[0].name:", &["ambiguous"]),
        ],
    );
}

#[test]
fn event_errors_name_the_field() {
    // Each case: what the good spec has, what replaces it, how the error starts and what
    // else it names.
    common::refuses(
        GOOD,
        &[
            (
                "target = \"w3\"",
                "target = \"w9\"",
                "exp.toml: event[0].target: unknown target `w9`",
                &["w, r, late", "lat, bulk"],
            ),
            (
                "at_ms = 1000",
                "at_ms = 3000",
                "exp.toml: event[0].at_ms: 3000 is outside the measured interval",
                &["0..=2999"],
            ),
            (
                "set = { weight = 1024 }",
                "set = { weight = 1024 }\naction = \"pause\"",
                "exp.toml: event[0]: gives set and action",
                &["exactly one of set, action, move_to, policy"],
            ),
            ("set = { weight = 1024 }", "", "exp.toml: event[0]: gives none", &[]),
            // A parameter the pool's policy does not take: rr has no weight.
            (
                "target = \"w3\"",
                "target = \"r0\"",
                "exp.toml: event[0].set.weight:",
                &["`rr`", "allowed: none"],
            ),
            (
                "set = { weight = 1024 }",
                "set = { weight = 0 }",
                "exp.toml: event[0].set.weight:",
                &["1..=65535"],
            ),
            // A pool knob of the policy before the swap: at 2500 ms `lat` runs credit2.
            (
                "ratelimit_us = 500",
                "slice_ms = 3",
                "exp.toml: event[4].set.slice_ms:",
                &["`credit2` then"],
            ),
            (
                "move_to = \"bulk\"",
                "move_to = \"nowhere\"",
                "exp.toml: event[2].move_to: unknown pool `nowhere`",
                &[],
            ),
            ("policy = \"credit2\"", "policy = \"cfs\"", "exp.toml: event[3].policy:", &["rtds"]),
            (
                "target = \"lat\"\npolicy",
                "target = \"w\"\npolicy",
                "exp.toml: event[3].target: `w` is not a pool",
                &[],
            ),
            (
                "target = \"r1\"",
                "target = \"lat\"",
                "exp.toml: event[2].target: `lat` is a pool",
                &[],
            ),
            // `start` twice; `start` on a domain that starts with the others; never started.
            (
                "target = \"w3\"\nset = { weight = 1024 }",
                "target = \"late\"\naction = \"start\"",
                "exp.toml: event[0].action: domain `late0` is already started",
                &[],
            ),
            (
                "target = \"late\"",
                "target = \"w\"",
                "exp.toml: event[1].action: domain `w0` is already started",
                &[],
            ),
            (
                "target = \"late\"",
                "target = \"late0\"",
                "exp.toml: domain[2].start: domain `late1` waits for an event",
                &[],
            ),
        ],
    );

    // Pausing a domain not started yet; anything after a destroy.
    let e = err(&GOOD.replace("at_ms = 500", "at_ms = 1200").replace(
        "target = \"w3\"\nset = { weight = 1024 }",
        "target = \"late1\"\naction = \"pause\"",
    ));
    assert!(e.starts_with("exp.toml: event[0].action: domain `late1` is not started yet"), "{e}");
    // Each case: what the good spec has, what replaces it, how the error starts and what
    // else it names.
    common::refuses(
        GOOD,
        &[
            (
                "target = \"w3\"\nset = { weight = 1024 }",
                "target = \"r1\"\naction = \"destroy\"",
                "exp.toml: event[2].target: domain `r1` was destroyed by event[0]",
                &[],
            ),
            ("action = \"start\"", "action = \"restart\"", "", &["event[1].action", "unpause"]),
        ],
    );
}

#[test]
fn a_non_preempting_swap_that_would_lock_domain0_out_is_refused() {
    // Two hogs in the first pool of two CPUs: fifo would never give Domain0 a CPU again.
    let text = "name = \"t\"\n[machine]\ncpus = 3\n[[pool]]\nname = \"p\"\ncpus = 2\n\
                [[pool]]\nname = \"q\"\ncpus = 1\n[[domain]]\nname = \"w\"\ncount = 2\n\
                workload = \"cpu\"\n[[event]]\nat_ms = 10\ntarget = \"p\"\npolicy = \"fifo\"\n";
    let e = err(text);
    assert!(e.starts_with("exp.toml: event[0].policy: `fifo` never preempts"), "{e}");
    // In another pool it is the experiment's business.
    Spec::from_str(&text.replace("target = \"p\"", "target = \"q\""), "exp.toml").unwrap();
}

#[test]
fn sched_override_runs_every_pool_under_it() {
    let mut s = Spec::parse(GOOD, "exp.toml").unwrap();
    s.apply_overrides(&sched::spec::Overrides { sched: Some("bvt".into()), ..Default::default() });
    // rr's slice_ms is dropped; w3's weight is a bvt parameter too, credit2's ratelimit is
    // set after the swap to credit2.
    s.validate().unwrap();
    assert!(s.pool_plans().iter().all(|p| p.policy == "bvt"));
}

#[test]
fn more_policy_swaps_than_one_boot_holds_are_refused_before_boot() {
    // One pool (the default) plus 31 swaps: 32 instances, the most one boot installs.
    let swaps = |n: usize| {
        let mut text = String::from(
            "name = \"t\"\nduration_ms = 1000\n[machine]\ncpus = 2\n[sched]\npolicy = \"rr\"\n\
             [[domain]]\nname = \"w\"\nworkload = \"cpu\"\n",
        );
        for i in 0..n {
            let policy = if i % 2 == 0 { "credit" } else { "rr" };
            text += &format!(
                "[[event]]\nat_ms = {}\ntarget = \"default\"\npolicy = \"{policy}\"\n",
                10 + 10 * i
            );
        }
        text
    };
    let most = sched::limits::MAX_POLICY_INSTANCES - 1;
    Spec::from_str(&swaps(most), "exp.toml").unwrap();
    let e = err(&swaps(most + 1));
    assert!(e.starts_with(&format!("exp.toml: event[{most}].policy: this is policy swap")), "{e}");
    assert!(e.contains(&format!("allowed: at most {most} policy events")), "{e}");
}
