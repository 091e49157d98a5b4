//! Weighted shares under consolidation (issue 12, item 4): for every registered policy with
//! a per-domain `weight` (taken from the registry, so a policy registered later is checked
//! with no change here), 8, 32, 96 and 128 cpu-bound domains in two or three weight
//! classes on 2, 3 and 4 CPUs get their class's w / Σw of the machine within one
//! percentage point. Credit without `exact_credit` is the exception: its error is asserted
//! to be what sched/README.md ("Consolidation") says it is.
//!
//! The spec is `scripts/experiments/consolidation.toml` (5 ms slices for every policy,
//! credit with `exact_credit = 1`),
//! measured over 12 s after 1 s of warm-up: a policy's error over an interval is about one
//! round of slices cut off at its ends, 2 points at 128 domains on 2 CPUs over 2 s for bvt
//! and stride, a sixth of that over 12 s.

use sched::PolicyInfo;
use sched::registry;
use sched::sim::{self, Options, Output};
use sched::spec::Spec;

const CONSOLIDATION: &str = include_str!("../../scripts/experiments/consolidation.toml");

/// The measured interval of these runs.
const SECONDS: u64 = 12;

fn weighted() -> impl Iterator<Item = &'static PolicyInfo> {
    registry::policies().filter(|p| p.domain_param("weight").is_some())
}

/// The consolidation spec under `policy` with `globals` set, `domains` domains split evenly
/// over `weights` (one group per weight class) on `cpus` CPUs.
fn spec(policy: &str, globals: &[(&str, u64)], domains: u64, weights: &[u64], cpus: u64) -> Spec {
    let mut text = CONSOLIDATION.split("[[domain]]").next().unwrap().to_string();
    let n = weights.len() as u64;
    for (i, w) in weights.iter().enumerate() {
        // The first classes take what does not divide evenly.
        let count = domains / n + u64::from((i as u64) < domains % n);
        text += &format!(
            "[[domain]]\nname = \"w{w}-\"\ncount = {count}\nworkload = \"cpu\"\nweight = {w}\n"
        );
    }
    let mut s = Spec::from_str(&text, "consolidation.toml").unwrap_or_else(|e| panic!("{e}"));
    s.sched.policy = policy.into();
    for (k, v) in globals {
        s.sched.knobs.insert((*k).into(), *v);
    }
    s.machine.cpus = cpus;
    s.duration_ms = SECONDS * 1000;
    s.validate().unwrap_or_else(|e| panic!("{e}"));
    s
}

/// The largest difference, over weight classes, between a class's share of the CPU time
/// the domains got and its weight over Σw, in percentage points (as the hypervisor's check
/// and `plots/consolidation.py` compute it; in schedsim no CPU idles, so it is also the
/// share of the machine).
fn class_error_points(out: &Output) -> f64 {
    let machine: u64 = out.domains.iter().map(|d| d.cpu_ns).sum();
    let machine = machine as f64;
    let wsum: u64 = out.domains.iter().map(|d| d.weight).sum();
    let mut classes: Vec<u64> = out.domains.iter().map(|d| d.weight).collect();
    classes.sort_unstable();
    classes.dedup();
    classes
        .iter()
        .map(|&w| {
            let of = out.domains.iter().filter(|d| d.weight == w);
            let cpu: u64 = of.clone().map(|d| d.cpu_ns).sum();
            let weight: u64 = of.map(|d| d.weight).sum();
            (100.0 * (cpu as f64 / machine - weight as f64 / wsum as f64)).abs()
        })
        .fold(0.0, f64::max)
}

fn run(s: &Spec) -> Output {
    let out =
        sim::run(s, &Options { seed: 1, ..Options::default() }).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.violations.double_run, 0, "{}: a vCPU ran on two CPUs", s.sched.policy);
    assert_eq!(out.violations.bad_pick, 0, "{}: a sleeping vCPU was picked", s.sched.policy);
    assert!(out.summary.expected, "{}: a domain starved or ended badly", s.sched.policy);
    out
}

/// The cases: (domains, weight classes).
const CASES: &[(u64, &[u64])] = &[
    (8, &[256, 512]),
    (32, &[256, 512]),
    (96, &[256, 512]),
    (96, &[128, 256, 512]),
    (128, &[256, 512]),
    (128, &[100, 300]),
];

/// Every case on 2, 3 and 4 CPUs: (label, largest class error in points, counters).
fn sweep(policy: &str, globals: &[(&str, u64)]) -> Vec<(String, f64, Output)> {
    let mut rows = Vec::new();
    for &(domains, weights) in CASES {
        for cpus in 2..=4 {
            let out = run(&spec(policy, globals, domains, weights, cpus));
            let err = class_error_points(&out);
            let label =
                format!("{policy}{globals:?}: {domains} domains {weights:?} on {cpus} CPUs");
            eprintln!("{label}: {err:.2} points");
            rows.push((label, err, out));
        }
    }
    rows
}

#[test]
fn every_weighted_policy_holds_its_shares_under_consolidation() {
    let mut checked = 0;
    for p in weighted() {
        // Credit by default is Xen's, which does not hold them (the next test).
        let globals: &[(&str, u64)] = if p.name == "credit" { &[("exact_credit", 1)] } else { &[] };
        for (label, err, _) in sweep(p.name, globals) {
            assert!(err <= 1.0, "{label}: class share {err:.2} points from w / Σw (> 1)");
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} weighted policies are registered");
}

/// What the class error would be if every domain got the same share (the weights ignored).
fn equal_shares_error_points(out: &Output) -> f64 {
    let n = out.domains.len() as f64;
    let wsum: u64 = out.domains.iter().map(|d| d.weight).sum();
    out.domains
        .iter()
        .map(|d| {
            let of = out.domains.iter().filter(|x| x.weight == d.weight);
            let count = of.clone().count() as f64;
            let weight: u64 = of.map(|x| x.weight).sum();
            (100.0 * (count / n - weight as f64 / wsum as f64)).abs()
        })
        .fold(0.0, f64::max)
}

/// Xen's credit (`exact_credit = 0`) at 5 ms slices: sched/README.md says that from 32
/// domains up its classes are at least 5 points off, up to the weights being ignored
/// altogether (each vCPU's income per 5 ms period is a few credits or less, and rounding
/// each up hands out more than the machine burns, which the upper clamp then halves away),
/// within 3 points at 8 domains, and that the counters show why.
#[test]
fn xen_credit_loses_weights_under_consolidation_as_documented() {
    for (label, err, out) in sweep("credit", &[("exact_credit", 0)]) {
        let c = out.summary.policy_counters.as_ref().expect("credit writes its counters");
        let domains = out.domains.len();
        if domains == 8 {
            assert!(err <= 3.0, "{label}: {err:.2} points, documented ≤ 3");
            continue;
        }
        // At most what equal shares would give (the weights ignored entirely).
        let ignored = equal_shares_error_points(&out);
        assert!(
            (5.0..=ignored + 0.5).contains(&err),
            "{label}: {err:.2} points, documented between 5 and {ignored:.2} (equal shares)"
        );
        // The rounding hands out over a twelfth more than the machine burns, and about as
        // much is halved away.
        assert!(c["credits_rounded_up"] * 12 >= c["credits_handed"], "{label}: {c:?}");
        assert!(c["credit_halved_credits"] * 2 >= c["credits_rounded_up"], "{label}: {c:?}");
    }
    // And the knob removes both causes.
    for (label, _, out) in sweep("credit", &[("exact_credit", 1)]).iter().take(3) {
        let c = out.summary.policy_counters.as_ref().unwrap();
        assert_eq!(
            (c["credits_rounded_up"], c["credit_halved"], c["debt_forgiven"]),
            (0, 0, 0),
            "{label}"
        );
    }
}

/// Xen's rounding alone can make two weights one: `csched_acct` (xen/common/sched/credit.c)
/// gives each active vCPU `ceil(ceil(credit_total × weight × active / weight_total) /
/// active)` credits a period, `credit_total` being `CSCHED_CREDITS_PER_MSEC × tslice_ms ×
/// CPUs`. The scaling spec's 128 hogs on 4 CPUs with 5 ms slices, half at weight 320 and
/// half at 256, earn 1.74 and 1.39 credits a period: both rounded up to 2. With equal
/// incomes and equal burns nothing in credit1 tells the two halves apart, and each gets
/// 50.0% of the CPU for its weights' 55.6% (what a helper saw on the hypervisor under
/// `-icount`; credit2 gave 55.6%). The same spec with `exact_credit = 1` holds the weights,
/// which shows that the rounding, not the spec or the simulator, is what ignores them.
#[test]
fn xen_credit_ignores_weights_whose_rounded_income_is_equal() {
    let (domains, cpus, weights) = (128, 4, [320, 256]);
    // The premise, with Xen's arithmetic: one income for both classes.
    let credit_total: u64 = 10 * 5 * cpus; // CSCHED_CREDITS_PER_MSEC × 5 ms × CPUs
    let weight_total: u64 = weights.iter().map(|w| w * domains / 2).sum();
    let income = |w: u64| (credit_total * w).div_ceil(weight_total);
    assert_eq!((income(320), income(256)), (2, 2), "the premise of this case changed");
    let heavy_share = |out: &Output| {
        let all: u64 = out.domains.iter().map(|d| d.cpu_ns).sum();
        let heavy: u64 = out.domains.iter().filter(|d| d.weight == 320).map(|d| d.cpu_ns).sum();
        100.0 * heavy as f64 / all as f64
    };
    let target = 100.0 * 320.0 / (320.0 + 256.0);
    let xen = run(&spec("credit", &[("exact_credit", 0)], domains, &weights, cpus));
    let share = heavy_share(&xen);
    eprintln!("Xen's credit: the weight-320 half got {share:.2}% (weights say {target:.2}%)");
    assert!((share - 50.0).abs() <= 0.1, "heavy half {share:.2}%, not the equal 50%");
    // Every domain within one 5 ms slice of every other, whatever its weight.
    let most = xen.domains.iter().map(|d| d.cpu_ns).max().unwrap();
    let least = xen.domains.iter().map(|d| d.cpu_ns).min().unwrap();
    assert!(most - least <= 5_000_000, "domains {least}..{most} ns apart, more than a slice");
    let exact = run(&spec("credit", &[("exact_credit", 1)], domains, &weights, cpus));
    let share = heavy_share(&exact);
    eprintln!("exact_credit = 1: the weight-320 half got {share:.2}%");
    assert!((share - target).abs() <= 0.5, "heavy half {share:.2}% with exact credit");
}

/// With `exact_credit`, a vCPU waiting in the queue keeps earning above the bound: with Xen's
/// bound of one slice (`credit_bound_tslices = 1`), a heavy vCPU behind 63 others earns
/// more than a slice's worth before its turn, and if it stopped earning there (as Xen's
/// rule has it, and as `exact_credit` did first) its share would go to the light ones. On
/// the hypervisor the same happens at the default bound, where TCG stretches slices.
#[test]
fn exact_credit_keeps_a_waiting_vcpu_earning_above_the_bound() {
    let globals = [("exact_credit", 1), ("credit_bound_tslices", 1)];
    for (domains, cpus) in [(128, 2), (96, 2)] {
        let out = run(&spec("credit", &globals, domains, &[256, 512], cpus));
        let err = class_error_points(&out);
        let c = out.summary.policy_counters.as_ref().unwrap();
        eprintln!("{domains} domains on {cpus} CPUs, bound 1: {err:.2} points, {c:?}");
        assert!(err <= 1.0, "{domains} domains on {cpus} CPUs: {err:.2} points (> 1)");
    }
}

/// Stride on the hypervisor starved whole domains at 96 domains on 4 CPUs (no CPU time in
/// 6 s, in 3 of 6 runs of `consolidation/96x4/stride`; one domain ran 491 ms in one go):
/// per-CPU virtual times drift apart (a vCPU that ran alone on a CPU, as Domain0 does while
/// it creates the domains, takes that CPU's virtual time far ahead), and the advanced CPU
/// keeps stealing its peers' lower passes and running each until it catches up, while its
/// own vCPUs wait. Starting a newcomer at the least advanced CPU's virtual time
/// (`Stride::insert_vcpu`) made the hypervisor case pass 10 runs of 10; it does not cure
/// the cause, which this test shows: vCPU 0 runs alone on CPU 0 for a second, then four
/// vCPUs arrive on CPU 1 and one on CPU 0, which wakes at CPU 0's virtual time and gets
/// nothing in the next 200 ms. Ignored until stride has one virtual time across CPUs (or
/// renormalises a stolen pass and balances by load); run with `--ignored` to see it.
#[test]
#[ignore = "known stride bug: per-CPU virtual times drift apart (see the doc comment)"]
fn stride_newcomer_on_an_advanced_cpu_is_not_held_back() {
    use sched::{DomainId, VcpuId, registry};
    let topo = sched::Topology::flat(2, 8, 8);
    let p = registry::build("stride", &topo, &[("quantum_us", 5000)]).unwrap();
    const Q: u64 = 5_000_000;
    let mut curr: [Option<VcpuId>; 2] = [None, None];
    let mut ran = [0u64; 8];
    // One scheduling step on `cpu`: what runs next, the switch completed, its quantum
    // counted.
    fn step(
        p: &dyn sched::Policy,
        cpu: usize,
        now: u64,
        curr: &mut [Option<VcpuId>; 2],
        ran: &mut [u64; 8],
    ) {
        let d = p.schedule(cpu, now);
        if let Some(prev) = curr[cpu]
            && d.next != Some(prev)
        {
            p.context_saved(cpu, prev, now);
        }
        curr[cpu] = d.next;
        if let Some(v) = d.next {
            ran[v.0 as usize] += Q;
        }
    }
    p.add_domain(DomainId(0), &[("weight", 256)]).unwrap();
    p.insert_vcpu(VcpuId(0), DomainId(0), 0).unwrap();
    p.wake(VcpuId(0), 0);
    let mut now = 0;
    while now < 1_000_000_000 {
        step(p.as_ref(), 0, now, &mut curr, &mut ran);
        step(p.as_ref(), 1, now, &mut curr, &mut ran);
        now += Q;
    }
    for (v, cpu) in [(1, 1), (2, 1), (3, 1), (4, 1), (5, 0)] {
        p.add_domain(DomainId(v), &[("weight", 512)]).unwrap();
        p.insert_vcpu(VcpuId(v), DomainId(v), cpu).unwrap();
        p.wake(VcpuId(v), now);
    }
    let end = now + 200_000_000;
    ran = [0; 8];
    while now < end {
        step(p.as_ref(), 0, now, &mut curr, &mut ran);
        step(p.as_ref(), 1, now, &mut curr, &mut ran);
        now += Q;
    }
    eprintln!("CPU time in the 200 ms after the newcomers arrived, per vCPU: {ran:?}");
    assert!(ran[5] > 0, "the newcomer on the advanced CPU never ran: {ran:?}");
    assert!((1..=4).all(|v| ran[v] > 0), "a newcomer never ran: {ran:?}");
}
