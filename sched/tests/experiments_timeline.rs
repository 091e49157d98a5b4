//! The example experiments that move (`scripts/experiments/{pools,arrival,reweight,
//! policy-swap,departure}.toml`) in the simulator: each change takes effect in the 100 ms windows
//! after its event, and not before. (The hypervisor's runs are checked by
//! `experiment-checks`.)

use sched::sim::{self, Options, Output};
use sched::spec::Spec;

const MS: u64 = 1_000_000;

fn run(name: &str) -> Output {
    let path = format!("{}/../scripts/experiments/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let spec = Spec::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let out =
        sim::run(&spec, &Options { seed: 1, window_ns: Some(100 * MS), ..Options::default() })
            .unwrap();
    assert_eq!(out.summary.violations, 0, "{name}: {:?}", out.violations);
    assert!(
        out.events.iter().all(|e| e.ok && e.applied_ns == Some(e.at_ns)),
        "{name}: {:?}",
        out.events
    );
    assert!(out.summary.expected, "{name}: {:?}", out.starved);
    out
}

/// Domain `d`'s CPU time over windows `from..to`, in CPUs (1.0 = a whole CPU).
fn cpus(out: &Output, d: usize, from: usize, to: usize) -> f64 {
    let ns: u64 = out.windows[from..to].iter().map(|w| w[d]).sum();
    ns as f64 / ((to - from) as u64 * 100 * MS) as f64
}

fn near(name: &str, what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol, "{name}: {what}: got {got:.3} CPUs, want {want:.3} ± {tol}");
}

#[test]
fn reweight_moves_w0_to_its_new_share_after_the_event() {
    let out = run("reweight");
    // The event is at 2 s (window 20). Half a CPU each before; 0.8 for w0 after, within
    // 300 ms.
    near("reweight", "w0 before", cpus(&out, 0, 2, 20), 0.5, 0.03);
    near("reweight", "w0 after", cpus(&out, 0, 23, 40), 0.8, 0.03);
    near("reweight", "w1 after", cpus(&out, 1, 23, 40), 0.4, 0.03);
}

#[test]
fn policy_swap_turns_equal_shares_into_weighted_ones() {
    let out = run("policy-swap");
    for (d, after) in [(0, 0.25), (1, 0.25), (2, 0.75), (3, 0.75)] {
        near("policy-swap", &format!("w{d} before"), cpus(&out, d, 2, 20), 0.5, 0.05);
        near("policy-swap", &format!("w{d} after"), cpus(&out, d, 23, 40), after, 0.05);
        // Running in every window across the swap.
        assert!(out.windows.iter().all(|w| w[d] > 0), "w{d} stopped");
    }
}

#[test]
fn pools_keep_rr_and_credit_apart_until_the_move() {
    let out = run("pools");
    // lat0 and lat1 share CPU 0 under rr; after lat1 moves, lat0 has it alone.
    near("pools", "lat0 before", cpus(&out, 0, 2, 20), 0.5, 0.02);
    near("pools", "lat0 after", cpus(&out, 0, 21, 40), 1.0, 0.02);
    // In the credit pool (2 CPUs, weights 256, 256, 512, 512, then lat1's 256 joins).
    near("pools", "bulk2 before", cpus(&out, 4, 2, 20), 2.0 * 512.0 / 1536.0, 0.05);
    near("pools", "bulk2 after", cpus(&out, 4, 23, 40), 2.0 * 512.0 / 1792.0, 0.05);
    near("pools", "lat1 after", cpus(&out, 1, 23, 40), 2.0 * 256.0 / 1792.0, 0.05);
    let pools = out.run.pools.as_ref().unwrap();
    assert_eq!((pools[0].policy.as_str(), pools[1].policy.as_str()), ("rr", "credit"));
    assert_eq!(out.ran_on[0], 0b001, "lat0 left CPU 0");
    assert!(
        out.ran_on[1] & 0b001 != 0 && out.ran_on[1] & 0b110 != 0,
        "lat1 ran on CPU 0, then on the credit pool's"
    );
    assert!(out.ran_on[2..].iter().all(|&m| m & 0b001 == 0 && m != 0), "a credit domain on CPU 0");
}

#[test]
fn arrivals_run_from_their_start_and_not_before() {
    let out = run("arrival");
    for i in 0..16 {
        let d = 16 + i;
        // Tenant i starts at 400 + 200 i ms: window 4 + 2 i.
        let w = 4 + 2 * i;
        assert_eq!(cpus(&out, d, 0, w), 0.0, "new{i} ran before its start");
        assert!(cpus(&out, d, w, w + 1) > 0.0, "new{i} did not run in the window of its start");
        // From then on, its fair share: 2 CPUs among the 16 + (arrived so far) domains.
        let running = |k: usize| 16 + ((k - 4) / 2 + 1).min(16);
        let fair: f64 = (w..40).map(|k| 2.0 / running(k) as f64).sum::<f64>() / (40 - w) as f64;
        let (got, tol) = (cpus(&out, d, w, 40), (0.15 * fair).max(0.015));
        near("arrival", &format!("new{i} from its start"), got, fair, tol);
    }
}

#[test]
fn departure_destroys_and_pauses_at_their_time() {
    let out = run("departure");
    // w3 runs until 1 s (window 10), w2 stops from 2 s to 3 s.
    near("departure", "w3 before", cpus(&out, 3, 0, 10), 0.5, 0.03);
    assert_eq!(cpus(&out, 3, 10, 40), 0.0, "w3 ran after its destroy");
    near("departure", "w2 between", cpus(&out, 2, 11, 20), 2.0 / 3.0, 0.05);
    assert_eq!(cpus(&out, 2, 20, 30), 0.0, "w2 ran while paused");
    near("departure", "w0 while w2 paused", cpus(&out, 0, 20, 30), 1.0, 0.02);
    near("departure", "w2 after", cpus(&out, 2, 31, 40), 2.0 / 3.0, 0.05);
}
