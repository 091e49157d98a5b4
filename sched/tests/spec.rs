//! The experiment-spec parser: accepted files, and errors that name file, field and what
//! is allowed.

use sched::spec::{Expect, Overrides, Spec};

fn err(text: &str) -> String {
    Spec::from_str(text, "exp.toml").expect_err("should be rejected").to_string()
}

const GOOD: &str = r#"
name = "fairness-weights"
duration_ms = 5000
warmup_ms = 500
[machine]
cpus = 4
memory_mib = 1024
[sched]
policy = "credit"
tslice_ms = 30
[[domain]]
name = "w"
count = 8
workload = "cpu"
vcpus = 1
weight = [1, 2, 3, 4, 5, 6, 7, 8]
cap = 0
memory_kib = 1024
expect = "ok"
[[domain]]
name = "lat"
workload = "latency"
[domain.sched]
warp_us = 2000
[domain.args]
period_us = 500
"#;

#[test]
fn design_example_parses() {
    let s = Spec::from_str(GOOD, "exp.toml").unwrap();
    assert_eq!(s.machine.cpus, 4);
    let plan = s.plan();
    assert_eq!(plan.len(), 9);
    assert_eq!(plan[7].name, "w7");
    assert_eq!(plan[7].weight, 8);
    assert_eq!(plan[0].params, vec![("weight".to_string(), 1), ("cap".to_string(), 0)]);
    assert_eq!(plan[8].args["period_us"], 500);
    assert_eq!(plan[8].args["run_us"], 20, "defaults filled in");
    assert_eq!(plan[8].expect, Expect::Ok);
    // warp_us belongs to bvt: kept in the spec, not passed to credit.
    assert!(plan[8].params.is_empty());
    assert_eq!(s.policy_globals(), vec![("tslice_ms".to_string(), 30)]);
    // Round trip through TOML.
    let again = Spec::from_str(&s.to_toml(), "exp.toml").unwrap();
    assert_eq!(again, s);
}

#[test]
fn errors_name_file_field_and_allowed() {
    let e = err(&GOOD.replace("weight = [1, 2, 3, 4, 5, 6, 7, 8]", "weight = [1, 2]"));
    assert!(e.starts_with("exp.toml: domain[0].weight:"), "{e}");
    assert!(e.contains("one per domain"), "{e}");

    let e = err(&GOOD.replace("vcpus = 1", "vcpus = 1\nwieght = 3"));
    assert!(e.contains("exp.toml") && e.contains("domain[0]") && e.contains("wieght"), "{e}");
    assert!(e.contains("weight"), "lists the allowed fields: {e}");

    let e = err(&GOOD.replace("policy = \"credit\"", "policy = \"cfs\""));
    assert!(e.contains("sched.policy") && e.contains("rr, credit, bvt"), "{e}");

    let e = err(&GOOD.replace("tslice_ms = 30", "tslice = 30"));
    assert!(e.contains("sched.tslice") && e.contains("tslice_ms (1..=1000"), "{e}");

    let e = err(&GOOD.replace("tslice_ms = 30", "tslice_ms = 0"));
    assert!(e.contains("sched.tslice_ms") && e.contains("1..=1000"), "{e}");

    let e = err(&GOOD.replace("workload = \"cpu\"", "workload = \"spin\""));
    assert!(e.contains("domain[0].workload") && e.contains("latency"), "{e}");

    let e = err(&GOOD.replace("period_us = 500", "perod_us = 500"));
    assert!(e.contains("domain[1].args.perod_us") && e.contains("period_us"), "{e}");

    let e = err(&GOOD.replace("expect = \"ok\"", "expect = \"dead\""));
    assert!(e.contains("domain[0].expect") && e.contains("killed"), "{e}");

    let e = err(&GOOD.replace("cpus = 4", "cpus = 300"));
    assert!(e.contains("machine.cpus") && e.contains("1..=255"), "{e}");

    let e = err(&GOOD.replace("cpus = 4", "cpus = \"four\""));
    assert!(e.contains("machine.cpus"), "{e}");

    let e = err("name = \"x\"\n[[domain]\n");
    assert!(e.starts_with("exp.toml: "), "{e}");
}

#[test]
fn overrides_then_validate() {
    let mut s = Spec::from_str(GOOD, "exp.toml").unwrap();
    s.apply_overrides(&Overrides {
        sched: Some("bvt".into()),
        cpus: Some(2),
        seconds: Some(1.5),
        ..Overrides::default()
    });
    s.validate().unwrap();
    assert_eq!(s.duration_ms, 1500);
    // Under bvt, the latency group's warp now applies and credit's knob is dropped.
    assert_eq!(s.plan()[8].params, vec![("warp_us".to_string(), 2000)]);
    assert!(s.policy_globals().is_empty());

    // --domains changes the first group's count: a per-domain weight list no longer fits.
    s.apply_overrides(&Overrides { domains: Some(16), ..Overrides::default() });
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("domain[0].weight") && e.contains("count is 16"), "{e}");

    // --workload drops the arguments the new workload does not take.
    let mut s = Spec::from_str(GOOD, "exp.toml").unwrap();
    s.domains.swap(0, 1);
    s.apply_overrides(&Overrides { workload: Some("io".into()), ..Overrides::default() });
    s.validate().unwrap();
    assert!(s.domains[0].args.is_empty());
}

#[test]
fn default_spec_is_valid() {
    Spec::default_spec().validate().unwrap();
}

#[test]
fn example_specs_are_valid() {
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/specs")).unwrap() {
        let path = f.unwrap().path();
        Spec::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn churn_table_parses_with_defaults_and_checks_its_ranges() {
    let s = Spec::from_str(&format!("{GOOD}\n[churn]\nlifetimes = 300\n"), "exp.toml").unwrap();
    let c = s.churn.clone().expect("a churn table");
    assert_eq!((c.lifetimes, c.run_ms, c.check_every, c.seed), (300, 20, 1000, 1));
    let again = Spec::from_str(&s.to_toml(), "exp.toml").unwrap();
    assert_eq!(again, s);
    assert!(Spec::from_str(GOOD, "exp.toml").unwrap().churn.is_none());

    let e = err(&format!("{GOOD}\n[churn]\nlifetimes = 0\n"));
    assert!(e.contains("exp.toml: churn.lifetimes: 0 is out of range; allowed: 1..="), "{e}");
    let e = err(&format!("{GOOD}\n[churn]\nlifetimes = 10\ncheck_every = 0\n"));
    assert!(e.contains("churn.check_every") && e.contains("allowed: 1..="), "{e}");
    let e = err(&format!("{GOOD}\n[churn]\nlifetimes = 10\nrun_ms = 100000\n"));
    assert!(e.contains("churn.run_ms") && e.contains("0..=60000"), "{e}");
    let e = err(&format!("{GOOD}\n[churn]\nrun_ms = 5\n"));
    assert!(e.contains("lifetimes"), "{e}");
    let e = err(&format!("{GOOD}\n[churn]\nlifetimes = 10\ncycles = 5\n"));
    assert!(e.contains("cycles"), "{e}");
}

#[test]
fn schedsim_refuses_churn() {
    let s = Spec::from_str(&format!("{GOOD}\n[churn]\nlifetimes = 300\n"), "exp.toml").unwrap();
    let opts = sched::sim::Options { seed: 1, trace: false, window_ns: None };
    let Err(e) = sched::sim::run(&s, &opts) else { panic!("schedsim must refuse churn") };
    let e = e.to_string();
    assert!(e.contains("exp.toml: churn:") && e.contains("hypervisor"), "{e}");
}
