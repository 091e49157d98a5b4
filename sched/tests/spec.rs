//! The experiment-spec parser: accepted files, and errors that name file, field and what
//! is allowed.

mod common;

use sched::spec::{Expect, Overrides, Spec};

fn err(text: &str) -> String {
    Spec::from_str(text, "exp.toml").expect_err("should be rejected").to_string()
}

fn good() -> String {
    common::head("fairness-weights", 5000, 500, "cpus = 4\nmemory_mib = 1024", "credit")
        + r#"tslice_ms = 30
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
"#
}

#[test]
fn design_example_parses() {
    let s = Spec::from_str(&good(), "exp.toml").unwrap();
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
    let e = err(&good().replace("weight = [1, 2, 3, 4, 5, 6, 7, 8]", "weight = [1, 2]"));
    assert!(e.starts_with("exp.toml: domain[0].weight:"), "{e}");
    assert!(e.contains("one per domain"), "{e}");

    let e = err(&good().replace("vcpus = 1", "vcpus = 1\nwieght = 3"));
    assert!(e.contains("exp.toml") && e.contains("domain[0]") && e.contains("wieght"), "{e}");
    assert!(e.contains("weight"), "lists the allowed fields: {e}");

    // Each case: what the good spec has, what replaces it, how the error starts and what
    // else it names.
    common::refuses(
        &good(),
        &[
            (
                "policy = \"credit\"",
                "policy = \"cfs\"",
                "",
                &["sched.policy", "rr, credit, credit2, bvt"],
            ),
            ("tslice_ms = 30", "tslice = 30", "", &["sched.tslice", "tslice_ms (1..=1000"]),
            ("tslice_ms = 30", "tslice_ms = 0", "", &["sched.tslice_ms", "1..=1000"]),
            ("workload = \"cpu\"", "workload = \"spin\"", "", &["domain[0].workload", "latency"]),
            ("period_us = 500", "perod_us = 500", "", &["domain[1].args.perod_us", "period_us"]),
            ("expect = \"ok\"", "expect = \"dead\"", "", &["domain[0].expect", "killed"]),
            ("cpus = 4", "cpus = 300", "", &["machine.cpus", "1..=255"]),
            ("cpus = 4", "cpus = \"four\"", "", &["machine.cpus"]),
        ],
    );

    let e = err("name = \"x\"\n[[domain]\n");
    assert!(e.starts_with("exp.toml: "), "{e}");
}

#[test]
fn overrides_then_validate() {
    let mut s = Spec::from_str(&good(), "exp.toml").unwrap();
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
    let mut s = Spec::from_str(&good(), "exp.toml").unwrap();
    s.domains.swap(0, 1);
    s.apply_overrides(&Overrides { workload: Some("io".into()), ..Overrides::default() });
    s.validate().unwrap();
    assert!(s.domains[0].args.is_empty());
}

#[test]
fn machine_shape_defaults_and_errors() {
    use sched::spec::Shape;
    let shape = |machine: &str| {
        let text = good().replace("cpus = 4\n", machine);
        Spec::from_str(&text, "exp.toml").map(|s| s.machine.shape().unwrap())
    };
    let is = |sockets, cores, threads| Ok(Shape { sockets, cores, threads });
    assert_eq!(shape("cpus = 4\n"), is(1, 4, 1), "flat by default");
    assert_eq!(shape("cpus = 4\nsockets = 2\n"), is(2, 2, 1), "cores computed");
    assert_eq!(shape("cpus = 8\nsockets = 2\nthreads = 2\n"), is(2, 2, 2));
    assert_eq!(shape("cpus = 6\nsockets = 2\ncores = 3\n"), is(2, 3, 1));
    assert_eq!(is(2, 3, 1).unwrap().smp(), "6,sockets=2,cores=3,threads=1");

    // Each case: what the good spec has, what replaces it, how the error starts and what
    // else it names.
    common::refuses(
        &good(),
        &[
            (
                "cpus = 4\n",
                "cpus = 4\nsockets = 2\ncores = 4\n",
                "",
                &["machine.cores", "= 8 CPUs, but cpus = 4"],
            ),
            (
                "cpus = 4\n",
                "cpus = 6\nsockets = 4\n",
                "",
                &["machine.cpus", "a multiple of sockets × threads = 4"],
            ),
            ("cpus = 4\n", "cpus = 4\nthreads = 0\n", "", &["machine.threads", "1..=255"]),
            ("cpus = 4\n", "cpus = 4\nsocket = 2\n", "", &["socket", "sockets"]),
            // 5 sockets of 50 cores: QEMU's APIC ids reach 4 << 6 | 49 = 305, beyond xAPIC.
            ("cpus = 4\n", "cpus = 250\nsockets = 5\n", "", &["APIC id 305", "at most 254"]),
        ],
    );
}

#[test]
fn cpus_flag_recomputes_cores_or_is_refused() {
    let with = |machine: &str, cpus: u64| {
        let mut s = Spec::parse(&good().replace("cpus = 4\n", machine), "exp.toml").unwrap();
        s.apply_overrides(&Overrides { cpus: Some(cpus), ..Overrides::default() });
        s.validate().map(|()| s.machine.shape().unwrap()).map_err(|e| e.to_string())
    };
    // Only sockets given: cores follow --cpus.
    let shape = with("cpus = 4\nsockets = 2\n", 8).unwrap();
    assert_eq!((shape.sockets, shape.cores, shape.threads), (2, 4, 1));
    // Cores given: --cpus must agree with them.
    let e = with("cpus = 4\nsockets = 2\ncores = 2\n", 8).unwrap_err();
    assert!(e.contains("machine.cores") && e.contains("but cpus = 8"), "{e}");
    let e = with("cpus = 4\nsockets = 2\n", 3).unwrap_err();
    assert!(e.contains("machine.cpus") && e.contains("multiple of sockets × threads = 2"), "{e}");
    // The shape survives the TOML round trip (Domain0 gets the effective spec as TOML).
    let s =
        Spec::from_str(&good().replace("cpus = 4\n", "cpus = 4\nsockets = 2\n"), "e.toml").unwrap();
    assert_eq!(Spec::from_str(&s.to_toml(), "e.toml").unwrap(), s);
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
    let s = Spec::from_str(&(good() + "\n[churn]\nlifetimes = 300\n"), "exp.toml").unwrap();
    let c = s.churn.clone().expect("a churn table");
    assert_eq!((c.lifetimes, c.run_ms, c.check_every, c.seed), (300, 20, 1000, 1));
    let again = Spec::from_str(&s.to_toml(), "exp.toml").unwrap();
    assert_eq!(again, s);
    assert!(Spec::from_str(&good(), "exp.toml").unwrap().churn.is_none());

    let e = err(&(good() + "\n[churn]\nlifetimes = 0\n"));
    assert!(e.contains("exp.toml: churn.lifetimes: 0 is out of range; allowed: 1..="), "{e}");
    let e = err(&(good() + "\n[churn]\nlifetimes = 10\ncheck_every = 0\n"));
    assert!(e.contains("churn.check_every") && e.contains("allowed: 1..="), "{e}");
    let e = err(&(good() + "\n[churn]\nlifetimes = 10\nrun_ms = 100000\n"));
    assert!(e.contains("churn.run_ms") && e.contains("0..=60000"), "{e}");
    let e = err(&(good() + "\n[churn]\nrun_ms = 5\n"));
    assert!(e.contains("lifetimes"), "{e}");
    let e = err(&(good() + "\n[churn]\nlifetimes = 10\ncycles = 5\n"));
    assert!(e.contains("cycles"), "{e}");
}

#[test]
fn schedsim_refuses_churn() {
    let s = Spec::from_str(&(good() + "\n[churn]\nlifetimes = 300\n"), "exp.toml").unwrap();
    let opts = sched::sim::Options { seed: 1, trace: false, window_ns: None, ..Default::default() };
    let Err(e) = sched::sim::run(&s, &opts) else { panic!("schedsim must refuse churn") };
    let e = e.to_string();
    assert!(e.contains("exp.toml: churn:") && e.contains("hypervisor"), "{e}");
}

#[test]
fn schedsim_runs_and_reports_the_shape() {
    let text = good()
        .replace("cpus = 4\n", "cpus = 4\nsockets = 2\n")
        .replace("duration_ms = 5000", "duration_ms = 50")
        .replace("warmup_ms = 500", "warmup_ms = 0");
    let s = Spec::from_str(&text, "exp.toml").unwrap();
    let opts = sched::sim::Options { seed: 1, trace: false, window_ns: None, ..Default::default() };
    let run = sched::sim::run(&s, &opts).unwrap().run;
    assert_eq!((run.cpus, run.sockets, run.cores, run.threads), (4, Some(2), Some(2), Some(1)));
}

/// A spec of one `[[domain]]` group (TOML lines after `[[domain]]`), on `cpus` CPUs under
/// `policy`, on a machine of `memory_mib`.
fn one_group(policy: &str, cpus: u64, memory_mib: u64, group: &str) -> String {
    format!(
        "name = \"t\"\n[machine]\ncpus = {cpus}\nmemory_mib = {memory_mib}\n[sched]\n\
         policy = \"{policy}\"\n[[domain]]\n{group}\n"
    )
}

fn ok(text: &str) -> Spec {
    Spec::from_str(text, "exp.toml").unwrap_or_else(|e| panic!("should be accepted: {e}"))
}

#[test]
fn generated_domain_names_fit_the_hypervisors_32_bytes() {
    // Domains are named <group><index>: 30 bytes + "99" is 32, + "100" is 33.
    let name = "g".repeat(30);
    ok(&one_group(
        "credit",
        2,
        1024,
        &format!("name = \"{name}\"\ncount = 100\nworkload = \"cpu\""),
    ));
    let e = err(&one_group(
        "credit",
        2,
        1024,
        &format!("name = \"{name}\"\ncount = 101\nworkload = \"cpu\""),
    ));
    assert!(e.starts_with("exp.toml: domain[0].name:"), "{e}");
    assert!(e.contains(&format!("`{name}100`, 33 bytes")) && e.contains("at most 32"), "{e}");
    assert!(e.contains("at most 29 bytes here"), "{e}");
    // A single domain: the name plus "0".
    let e = err(&one_group(
        "credit",
        2,
        1024,
        &format!("name = \"{}\"\nworkload = \"cpu\"", "g".repeat(32)),
    ));
    assert!(e.contains("domain[0].name") && e.contains("33 bytes"), "{e}");
    // The experiment's own name.
    let e = err(&format!(
        "name = \"{}\"\n[[domain]]\nname = \"w\"\nworkload = \"cpu\"\n",
        "n".repeat(129)
    ));
    assert!(e.starts_with("exp.toml: name:") && e.contains("at most 128"), "{e}");
}

#[test]
fn vcpus_per_domain_and_in_all() {
    let e = err(&one_group(
        "credit",
        2,
        1024,
        "name = \"w\"\nworkload = \"cpu\"\nvcpus = 65\nmemory_kib = 8192",
    ));
    assert!(e.contains("domain[0].vcpus") && e.contains("1..=64"), "{e}");
    // Absurd counts are refused, not overflowed.
    let huge = format!(
        "name = \"t\"\n[[domain]]\nname = \"a\"\ncount = {m}\nworkload = \"cpu\"\n\
         [[domain]]\nname = \"b\"\ncount = {m}\nworkload = \"cpu\"\n",
        m = i64::MAX
    );
    assert!(err(&huge).contains("allowed: 1..=1024"));
    // A workload that needs two.
    let e = err(&one_group("credit", 2, 1024, "name = \"s\"\nworkload = \"shootdown\""));
    assert!(e.contains("domain[0].vcpus") && e.contains("at least 2 vCPUs"), "{e}");
    ok(&one_group("credit", 2, 1024, "name = \"s\"\nworkload = \"shootdown\"\nvcpus = 2"));
    // 4095 vCPUs besides Domain0's is the most: 1023 × 4 + 3.
    let spec = |last: u64| {
        format!(
            "name = \"t\"\n[[domain]]\nname = \"a\"\ncount = 1023\nworkload = \"cpu\"\nvcpus = 4\n\
             [[domain]]\nname = \"b\"\nworkload = \"cpu\"\nvcpus = {last}\n"
        )
    };
    ok(&spec(3));
    let e = err(&spec(4));
    assert!(e.starts_with("exp.toml: domain:") && e.contains("4096 vCPUs in all"), "{e}");
    assert!(e.contains("at most 4095"), "{e}");
    // 100 domains of 64 vCPUs: refused before memory is even considered.
    let e = err(&one_group(
        "credit",
        2,
        65536,
        "name = \"w\"\ncount = 100\nworkload = \"cpu\"\nvcpus = 64\nmemory_kib = 8192",
    ));
    assert!(e.contains("6400 vCPUs in all"), "{e}");
}

#[test]
fn memory_kib_must_hold_image_stacks_tables_and_reservations() {
    use sched::limits;
    use sched::spec::frames_needed;
    use std::collections::BTreeMap;
    // 64 vCPUs need 64 stacks of 64 KiB: the default 1024 KiB is far too small.
    let e = err(&one_group("credit", 2, 1024, "name = \"w\"\nworkload = \"cpu\"\nvcpus = 64"));
    assert!(e.starts_with("exp.toml: domain[0].memory_kib: 1024 KiB"), "{e}");
    let need = limits::kib_for_frames(frames_needed("cpu", &BTreeMap::new(), 64));
    assert!(need > 64 * 64, "{need}");
    assert!(e.contains(&format!("allowed: {need}..=")), "{e}");
    // Exactly enough is accepted, one frame less is not.
    let group =
        |kib: u64| format!("name = \"w\"\nworkload = \"cpu\"\nvcpus = 64\nmemory_kib = {kib}");
    ok(&one_group("credit", 2, 1024, &group(need)));
    err(&one_group("credit", 2, 1024, &group(need - 4)));
    // mmu reserves `batch` frames as it runs: 512 do not fit in 1024 KiB.
    let mmu = |kib: u64| {
        format!("name = \"m\"\nworkload = \"mmu\"\nmemory_kib = {kib}\n[domain.args]\nbatch = 512")
    };
    let e = err(&one_group("credit", 1, 1024, &mmu(1024)));
    assert!(e.contains("domain[0].memory_kib") && e.contains("2048 KiB it reserves"), "{e}");
    let args: BTreeMap<String, u64> = [("batch".to_string(), 512)].into();
    let need = limits::kib_for_frames(frames_needed("mmu", &args, 1));
    ok(&one_group("credit", 1, 1024, &mmu(need)));
    err(&one_group("credit", 1, 1024, &mmu(need - 4)));
}

#[test]
fn the_machine_must_hold_every_domain_and_the_hypervisors_heap() {
    use sched::limits;
    let group = "name = \"w\"\ncount = 1024\nworkload = \"cpu\"\nvcpus = 2";
    let spec = ok(&one_group("credit", 4, 1024, group));
    let smallest = limits::smallest_machine_mib(&spec.demand(false), 65536).unwrap();
    assert!(smallest > 16 && smallest < 1024, "{smallest}");
    ok(&one_group("credit", 4, smallest, group));
    let e = err(&one_group("credit", 4, smallest - 1, group));
    assert!(e.starts_with("exp.toml: machine.memory_mib:"), "{e}");
    assert!(e.contains(&format!("allowed: at least {smallest} MiB")), "{e}");
    // Larger than the hypervisor's frame table allows.
    let e = err(&one_group("credit", 2, 65537, "name = \"w\"\nworkload = \"cpu\""));
    assert!(e.contains("machine.memory_mib") && e.contains("16..=65536"), "{e}");
}

#[test]
fn fifo_with_a_hog_on_every_cpu_is_refused_with_the_reason() {
    let hogs = |n: u64| format!("name = \"w\"\ncount = {n}\nworkload = \"cpu\"");
    ok(&one_group("fifo", 2, 1024, &hogs(1)));
    let e = err(&one_group("fifo", 2, 1024, &hogs(4)));
    assert!(e.starts_with("exp.toml: sched.policy:"), "{e}");
    assert!(e.contains("never preempts") && e.contains("Domain0 could never run"), "{e}");
    assert!(e.contains("at most 1 such vCPUs") && e.contains("rr, credit, credit2, bvt"), "{e}");
    // vCPUs count, not domains.
    let e = err(&one_group("fifo", 2, 1024, "name = \"w\"\nworkload = \"cpu\"\nvcpus = 2"));
    assert!(e.contains("2 vCPUs of workloads"), "{e}");
    // The same hogs under a preempting policy, or with a CPU to spare, are fine.
    ok(&one_group("credit", 2, 1024, &hogs(4)));
    ok(&one_group("fifo", 5, 1024, &hogs(4)));
    // Yielders and sleepers give the CPU back; hostile domains are killed at once.
    ok(&one_group("fifo", 1, 1024, "name = \"s\"\ncount = 4\nworkload = \"switch\""));
    ok(&one_group("fifo", 1, 1024, "name = \"l\"\ncount = 4\nworkload = \"latency\""));
    ok(&one_group(
        "fifo",
        1,
        1024,
        "name = \"h\"\nworkload = \"hostile-priv\"\nexpect = \"killed\"",
    ));
    // A flag that fixes it is applied before validation.
    let mut s = Spec::parse(&one_group("fifo", 2, 1024, &hogs(4)), "exp.toml").unwrap();
    s.validate().unwrap_err();
    s.apply_overrides(&Overrides { sched: Some("rr".into()), ..Overrides::default() });
    s.validate().unwrap();
}

#[test]
fn expect_progress_is_read_and_written() {
    let s = ok(&one_group(
        "credit",
        2,
        1024,
        "name = \"w\"\nworkload = \"cpu\"\nexpect_progress = false",
    ));
    assert!(!s.plan()[0].expect_progress);
    assert!(s.to_toml().contains("expect_progress = false"));
    assert_eq!(Spec::from_str(&s.to_toml(), "exp.toml").unwrap(), s);
    let s = ok(&one_group("credit", 2, 1024, "name = \"w\"\nworkload = \"cpu\""));
    assert!(s.plan()[0].expect_progress, "on by default");
    let e =
        err(&one_group("credit", 2, 1024, "name = \"w\"\nworkload = \"cpu\"\nexpect_progress = 0"));
    assert!(e.contains("domain[0].expect_progress") || e.contains("expect_progress"), "{e}");
}

#[test]
fn starved_domains_are_named() {
    use sched::spec::{Progress, starved};
    let s = ok(&format!(
        "{}[[domain]]\nname = \"lat\"\nworkload = \"latency\"\n\
         [[domain]]\nname = \"quiet\"\nworkload = \"cpu\"\nexpect_progress = false\n\
         [[domain]]\nname = \"bad\"\nworkload = \"hostile-priv\"\nexpect = \"killed\"\n\
         [[domain]]\nname = \"v\"\nworkload = \"virq\"\n",
        one_group("credit", 2, 1024, "name = \"w\"\nworkload = \"cpu\"")
    ));
    let plan = s.plan();
    let second = 1_000_000_000;
    let ran = Progress { cpu_ns: 5_000_000, wait_ns: 1_000, wakeups: 900 };
    let none = Progress { cpu_ns: 0, wait_ns: second, wakeups: 0 };
    assert_eq!(starved(&plan[0], second, &ran, true), None);
    let why = starved(&plan[0], second, &none, true).unwrap();
    assert!(why.contains("`w0` (cpu) got no CPU time") && why.contains("runnable"), "{why}");
    assert!(why.contains("expect_progress = false"), "{why}");
    // A latency domain that ran but never woke: its timer never fired.
    let no_wake = Progress { wakeups: 0, ..ran };
    let why = starved(&plan[1], second, &no_wake, true).unwrap();
    assert!(why.contains("`lat0` (latency) never woke"), "{why}");
    assert_eq!(starved(&plan[1], second, &ran, true), None);
    // ... unless the engine does not count its timer, the interval is shorter than two
    // periods (1.02 ms each), or it has not yet run long enough to sleep (20 µs).
    assert_eq!(starved(&plan[1], second, &no_wake, false), None);
    assert_eq!(starved(&plan[1], 2_000_000, &no_wake, true), None);
    let barely = Progress { cpu_ns: 10_000, ..no_wake };
    assert_eq!(starved(&plan[1], second, &barely, true), None);
    // The spec said otherwise; a domain expected to be killed; a cpu domain never wakes.
    assert_eq!(starved(&plan[2], second, &none, true), None);
    assert_eq!(starved(&plan[3], second, &none, true), None);
    assert_eq!(starved(&plan[0], second, &no_wake, true), None);
    // virq sleeps on its timer VIRQ.
    assert!(starved(&plan[4], second, &no_wake, true).is_some());
}

#[test]
fn project_experiments_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/experiments");
    let mut n = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Spec::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n > 10, "{n} specs in {dir}");
}

#[test]
fn every_workload_fits_the_abi() {
    use sched::limits::{ARG_NAME_BYTES, MAX_ARGS};
    for w in sched::spec::WORKLOADS {
        assert!(w.args.len() <= MAX_ARGS, "{} takes {} arguments", w.name, w.args.len());
        for (a, _) in w.args {
            assert!(!a.is_empty() && a.len() <= ARG_NAME_BYTES, "{}: argument `{a}`", w.name);
        }
    }
}

#[test]
fn a_knob_whose_values_are_names_takes_a_name_and_keeps_its_index() {
    // credit2's `runqueue` (ParamSpec::choices): the name in the spec, its index for the
    // policy, the kernel command line (`sched.runqueue=1`) and the effective spec.
    let text = good()
        .replace("policy = \"credit\"", "policy = \"credit2\"")
        .replace("tslice_ms = 30", "runqueue = \"core\"\nratelimit_us = 500");
    let s = Spec::from_str(&text, "exp.toml").unwrap();
    assert_eq!(s.sched.knobs["runqueue"], 1);
    let globals = s.policy_globals();
    assert!(globals.contains(&("runqueue".to_string(), 1)), "{globals:?}");
    assert!(globals.contains(&("ratelimit_us".to_string(), 500)), "{globals:?}");
    // The effective spec carries the index, which parses back to the same.
    let again = Spec::from_str(&s.to_toml(), "exp.toml").unwrap();
    assert_eq!(again.sched.knobs["runqueue"], 1);
    // Every name, in order.
    for (i, name) in ["cpu", "core", "socket", "all"].iter().enumerate() {
        let t = text.replace("\"core\"", &format!("\"{name}\""));
        assert_eq!(Spec::from_str(&t, "exp.toml").unwrap().sched.knobs["runqueue"], i as u64);
    }
    // Also accepted while another policy is chosen (and then ignored), as any knob.
    let other = text.replace("policy = \"credit2\"", "policy = \"bvt\"");
    assert!(Spec::from_str(&other, "exp.toml").unwrap().policy_globals().is_empty());
}

#[test]
fn a_bad_name_is_refused_with_the_field_and_the_names_allowed() {
    let text = good()
        .replace("policy = \"credit\"", "policy = \"credit2\"")
        .replace("tslice_ms = 30", "runqueue = \"cores\"");
    let e = err(&text);
    assert!(e.starts_with("exp.toml: sched:") && e.contains("runqueue"), "{e}");
    assert!(e.contains("`cores`") || e.contains("\"cores\""), "{e}");
    assert!(e.contains("allowed: cpu, core, socket, all"), "{e}");
    let e = err(&text.replace("\"cores\"", "7"));
    assert!(e.contains("sched.runqueue") && e.contains("allowed: cpu, core, socket, all"), "{e}");
    let e = err(&text.replace("\"cores\"", "true"));
    assert!(e.contains("runqueue") && e.contains("cpu, core, socket, all"), "{e}");
    // A number-only knob given a name.
    let e = err(&text.replace("runqueue = \"cores\"", "ratelimit_us = \"fast\""));
    assert!(e.contains("ratelimit_us") && e.contains("integer"), "{e}");
}

#[test]
fn rtds_parameters_flow_by_name_and_budget_must_fit_the_period() {
    let text = |policy: &str, budget: u64| {
        format!(
            r#"
name = "rt"
[sched]
policy = "{policy}"
[[domain]]
name = "rt"
count = 2
workload = "cpu"
weight = 512
[domain.sched]
period_us = 10000
budget_us = [2000, {budget}]
extratime = 0
"#
        )
    };
    // Under rtds: the three parameters reach the plan; the weight (which rtds has not) is
    // dropped from the parameters but still reported.
    let s = ok(&text("rtds", 3000));
    let plan = s.plan();
    assert_eq!(
        plan[1].params,
        vec![
            ("budget_us".to_string(), 3000),
            ("extratime".to_string(), 0),
            ("period_us".to_string(), 10000)
        ]
    );
    assert_eq!(plan[1].weight, 512);
    // A budget above the period is refused before anything runs, naming both.
    let e = err(&text("rtds", 20000));
    assert!(e.contains("exp.toml") && e.contains("domain[0].sched"), "{e}");
    assert!(e.contains("rt1") && e.contains("budget_us = 20000"), "{e}");
    assert!(e.contains("period_us = 10000"), "{e}");
    // Under credit the rtds parameters are someone else's: accepted, ignored, weight kept.
    let s = ok(&text("credit", 20000));
    assert_eq!(s.plan()[1].params, vec![("weight".to_string(), 512)]);
    // RTDS_MIN: 10 µs.
    let e = err(&text("rtds", 9));
    assert!(e.contains("budget_us") && e.contains("10..="), "{e}");
}

#[test]
fn window_ms_is_checked_against_the_interval_and_the_record_budget() {
    let with = |extra: &str| format!("{extra}\n{}", good());
    let s = Spec::from_str(&with("window_ms = 100"), "exp.toml").unwrap();
    assert_eq!(s.window_ms, 100);
    assert_eq!(Spec::from_str(&good(), "exp.toml").unwrap().window_ms, 0);
    let e = err(&with("window_ms = 5"));
    assert!(e.contains("window_ms") && e.contains("allowed: 10..=5000"), "{e}");
    let e = err(&with("window_ms = 6000"));
    assert!(e.contains("window_ms") && e.contains("10..=5000"), "{e}");
    // 1001 domains in 10 ms windows: past the record budget; the message says what fits.
    let big = good()
        .replace("count = 8", "count = 1000")
        .replace("weight = [1, 2, 3, 4, 5, 6, 7, 8]", "weight = 1");
    let e = err(&format!("window_ms = 10\n{big}"));
    assert!(e.contains("window_ms") && e.contains("at most 65536") && e.contains(">= 77"), "{e}");
    assert!(Spec::from_str(&format!("window_ms = 77\n{big}"), "exp.toml").is_ok());
    // `--window-ms` sets it, or turns it off.
    let mut o = Spec::from_str(&good(), "exp.toml").unwrap();
    o.apply_overrides(&Overrides { window_ms: Some(250), ..Overrides::default() });
    o.validate().unwrap();
    assert_eq!(o.window_ms, 250);
    o.apply_overrides(&Overrides { window_ms: Some(0), ..Overrides::default() });
    assert_eq!(o.window_ms, 0);
    // Written back out (sweeps hand specs on as files) only when set.
    assert!(s.to_toml().contains("window_ms = 100"));
    assert!(!Spec::from_str(&good(), "exp.toml").unwrap().to_toml().contains("window_ms"));
}
