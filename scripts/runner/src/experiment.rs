//! The spec step: turn an experiment spec (TOML) plus the command-line overrides into the
//! [`Experiment`] the runner boots, or a [`BadInput`] that names the file, the field and what
//! is allowed.
//!
//! The spec format belongs to `sched::spec`: the same parser and validation serve `schedsim`
//! and this runner, so a spec means the same thing to both engines.

use std::fmt;
use std::path::{Path, PathBuf};

use sched::spec::{self, DomainPlan, Spec};

/// What the runner needs to know about the experiment it boots.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Names the default results file, `results/<name>.jsonl`.
    pub name: String,
    /// The spec file, if there is one.
    pub spec: Option<PathBuf>,
    pub cpus: u32,
    /// The CPU topology, `(sockets, cores per socket, threads per core)` (`[machine]`,
    /// defaults filled in), for QEMU's `-smp`.
    pub shape: (u32, u32, u32),
    pub memory_mib: u32,
    pub policy: String,
    /// Domains over all groups (Domain0 not counted).
    pub domains: u32,
    pub warmup_ms: u64,
    pub duration_ms: u64,
    /// Every domain, resolved (`sched::spec::Spec::plan`): what Domain0 will create.
    pub plan: Vec<DomainPlan>,
    /// The policy's global parameters from `[sched]`, for the kernel's `sched.NAME=` words.
    pub globals: Vec<(String, u64)>,
    /// Domain0 also runs the micro-benchmarks (`--bench`).
    pub bench: bool,
    /// `[churn]`: domain lifetimes instead of a measured interval.
    pub churn: Option<spec::Churn>,
    /// `window_ms`: a `window` record per domain per window (0 = none).
    pub window_ms: u64,
    /// What it asks of the machine (`sched::limits`), without tracing.
    pub demand: sched::limits::Demand,
    /// The timeline (`[[event]]`), resolved, in the order Domain0 applies it.
    pub timeline: Vec<sched::timeline::Step>,
    /// Whether the spec has `[[pool]]`s.
    pub pools: bool,
    /// Its pools, resolved (`Spec::pool_plans`; one `default` of every CPU without any):
    /// the kernel's `pool.<name>.*` words, the first holding Domain0.
    pub pool_plans: Vec<sched::timeline::PoolPlan>,
}

fn from_spec(s: Spec, path: Option<PathBuf>) -> Experiment {
    let plan = s.plan();
    Experiment {
        name: s.name.clone(),
        spec: path,
        cpus: s.machine.cpus as u32,
        // Validated: the shape is consistent (flat for the built-in spec).
        shape: s
            .machine
            .shape()
            .map(|sh| (sh.sockets as u32, sh.cores as u32, sh.threads as u32))
            .unwrap_or((1, s.machine.cpus as u32, 1)),
        memory_mib: s.machine.memory_mib as u32,
        policy: s.sched.policy.clone(),
        domains: plan.len() as u32,
        warmup_ms: s.warmup_ms,
        duration_ms: s.duration_ms,
        globals: s.policy_globals(),
        plan,
        bench: false,
        churn: s.churn.clone(),
        window_ms: s.window_ms,
        demand: s.demand(false),
        timeline: s.timeline(),
        pools: s.has_pools(),
        pool_plans: s.pool_plans(),
    }
}

/// Command-line flags that override the spec (docs/DESIGN.md "Commands": "Flags override
/// the spec").
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub sched: Option<String>,
    pub cpus: Option<u32>,
    pub domains: Option<u32>,
    pub workload: Option<String>,
    pub seconds: Option<f64>,
    pub memory_mib: Option<u32>,
    pub window_ms: Option<u64>,
}

/// A bad spec or flag: the message names where, which field, and what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<spec::SpecError> for BadInput {
    fn from(e: spec::SpecError) -> BadInput {
        BadInput(e.to_string())
    }
}

/// A validation error caused by a flag names the flag first (`--cpus: ...`), then where the
/// spec stood, so the user knows which of the two to change.
fn blame_flag(e: spec::SpecError, o: &Overrides) -> BadInput {
    let flag = match e.path.as_str() {
        "sched.policy" if o.sched.is_some() => Some("--sched"),
        "machine.cpus" | "machine.cores" if o.cpus.is_some() => Some("--cpus"),
        "machine.memory_mib" if o.memory_mib.is_some() => Some("--memory"),
        "duration_ms" if o.seconds.is_some() => Some("--seconds"),
        "window_ms" if o.window_ms.is_some() => Some("--window-ms"),
        p if p.starts_with("domain[0].workload") && o.workload.is_some() => Some("--workload"),
        p if p.starts_with("domain[0]") && o.domains.is_some() => Some("--domains"),
        _ => None,
    };
    match flag {
        Some(flag) => BadInput(format!("{flag}: {e}")),
        None => e.into(),
    }
}

/// Reads the spec (if any), applies the overrides and validates the result.
pub fn load(path: Option<&Path>, o: &Overrides) -> Result<Experiment, BadInput> {
    let mut s = match path {
        None => Spec::default_spec(),
        // Validated once the flags are applied: a flag may be what makes it possible.
        Some(path) => Spec::read(path)?,
    };
    if let Some(secs) = o.seconds
        && !(secs.is_finite() && secs > 0.0)
    {
        return Err(BadInput(format!(
            "--seconds {secs}: must be a positive number"
        )));
    }
    if let Some(w) = &o.workload
        && spec::workload(w).is_none()
    {
        let known: Vec<&str> = spec::WORKLOADS.iter().map(|w| w.name).collect();
        return Err(BadInput(format!(
            "--workload: `{w}` is not a workload; allowed: {}",
            known.join(", ")
        )));
    }
    s.apply_overrides(&spec::Overrides {
        sched: o.sched.clone(),
        cpus: o.cpus.map(u64::from),
        domains: o.domains.map(u64::from),
        workload: o.workload.clone(),
        seconds: o.seconds,
        memory_mib: o.memory_mib.map(u64::from),
        window_ms: o.window_ms,
    });
    if let Some(m) = o.memory_mib {
        check_memory("--memory", m)?;
    }
    s.validate().map_err(|e| blame_flag(e, o))?;
    Ok(from_spec(s, path.map(Path::to_path_buf)))
}

fn check_memory(field: &str, mib: u32) -> Result<(), BadInput> {
    let max = spec::MAX_MEMORY_MIB;
    if (64..=max).contains(&u64::from(mib)) {
        Ok(())
    } else {
        Err(BadInput(format!(
            "{field}: {mib} MiB is not allowed; 64..={max}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
weight = [1, 2, 3, 4, 5, 6, 7, 8]
"#;

    fn write(text: &str) -> tempfile_path::TempSpec {
        tempfile_path::TempSpec::new(text)
    }

    /// A spec file that removes itself.
    mod tempfile_path {
        pub struct TempSpec(pub std::path::PathBuf);
        impl TempSpec {
            pub fn new(text: &str) -> TempSpec {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "runner-spec-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, text).unwrap();
                TempSpec(path)
            }
        }
        impl Drop for TempSpec {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn reads_the_design_example() {
        let f = write(GOOD);
        let exp = load(Some(&f.0), &Overrides::default()).unwrap();
        assert_eq!(exp.name, "fairness-weights");
        assert_eq!((exp.cpus, exp.memory_mib, exp.domains), (4, 1024, 8));
        assert_eq!((exp.warmup_ms, exp.duration_ms), (500, 5000));
        assert_eq!(exp.policy, "credit");
        assert_eq!(exp.globals, [("tslice_ms".to_string(), 30)]);
        assert_eq!(exp.plan[7].weight, 8);
    }

    #[test]
    fn the_timeline_reaches_the_plan_and_what_the_hypervisor_cannot_run_is_refused() {
        let timed = format!(
            "{GOOD}[[event]]\nat_ms = 100\ntarget = \"w\"\nset = {{ weight = 9 }}\n\
             [[event]]\nat_ms = 50\ntarget = \"w2\"\naction = \"pause\"\n"
        );
        let f = write(&timed);
        let exp = load(Some(&f.0), &Overrides::default()).unwrap();
        assert_eq!(exp.timeline.len(), 2);
        assert_eq!(exp.timeline[0].what, "pause");
        let bytes = crate::module::plan_bytes(&exp).unwrap();
        let plan = abi::tool::plan::decode(&bytes).unwrap();
        let events: Vec<_> = plan.events().map(Result::unwrap).collect();
        assert_eq!((events[0].first, events[0].count), (2, 1));
        assert_eq!(
            (events[1].first, events[1].count, events[1].at_ms),
            (0, 8, 100)
        );
        assert_eq!(events[1].what, "set weight=9");
        let f = write(&format!(
            "{GOOD}[[event]]\nat_ms = 9\ntarget = \"w1\"\naction = \"destroy\"\n"
        ));
        let exp = load(Some(&f.0), &Overrides::default()).unwrap();
        let bytes = crate::module::plan_bytes(&exp).unwrap();
        let plan = abi::tool::plan::decode(&bytes).unwrap();
        let e = plan.events().next().unwrap().unwrap();
        assert_eq!(
            (e.op, e.first, e.count),
            (abi::tool::plan::EventOp::Destroy, 1, 1)
        );
        // Pools, a move and a swap reach the plan with the pool each names, and the kernel's
        // command line with every pool's words.
        let f = write(&format!(
            "{GOOD}[[pool]]\nname = \"p\"\ncpus = 2\n[[pool]]\nname = \"q\"\ncpus = 2\n\
             policy = \"rr\"\n[[event]]\nat_ms = 9\ntarget = \"w1\"\nmove_to = \"q\"\n\
             [[event]]\nat_ms = 10\ntarget = \"q\"\npolicy = \"bvt\"\n"
        ));
        let exp = load(Some(&f.0), &Overrides::default()).unwrap();
        assert_eq!(exp.pool_plans.len(), 2);
        let bytes = crate::module::plan_bytes(&exp).unwrap();
        let plan = abi::tool::plan::decode(&bytes).unwrap();
        assert_eq!((plan.pools, plan.policy), (2, "credit"));
        let events: Vec<_> = plan.events().map(Result::unwrap).collect();
        assert_eq!(
            (events[0].op, events[0].pool, events[0].first),
            (abi::tool::plan::EventOp::MoveTo, 1, 1)
        );
        assert_eq!(
            (events[1].op, events[1].pool, events[1].policy),
            (abi::tool::plan::EventOp::SetPolicy, 1, "bvt")
        );
    }

    #[test]
    fn a_named_knob_reaches_the_kernel_as_its_index() {
        // credit2's `runqueue = "core"` is `sched.runqueue=1` on the command line.
        let text = GOOD
            .replace("policy = \"credit\"", "policy = \"credit2\"")
            .replace("tslice_ms = 30", "runqueue = \"core\"");
        let f = write(&text);
        let exp = load(Some(&f.0), &Overrides::default()).unwrap();
        assert_eq!(exp.globals, [("runqueue".to_string(), 1)]);
        let f = write(&text.replace("\"core\"", "\"cores\""));
        let e = load(Some(&f.0), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runqueue") && e.contains("allowed: cpu, core, socket, all"),
            "{e}"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let f = write(&GOOD.replace("cpus = 4", "cpus = 0"));
        let err = load(Some(&f.0), &Overrides::default()).unwrap_err();
        assert!(
            err.0.contains(".toml") && err.0.contains("machine.cpus"),
            "{err}"
        );
        let f = write(&GOOD.replace("\"credit\"", "\"lottery\""));
        let err = load(Some(&f.0), &Overrides::default()).unwrap_err();
        assert!(
            err.0.contains("sched.policy") && err.0.contains("credit"),
            "{err}"
        );
        let f = write(&format!("colour = 1\n{GOOD}"));
        assert!(
            load(Some(&f.0), &Overrides::default())
                .unwrap_err()
                .0
                .contains("colour")
        );
    }

    #[test]
    fn the_shape_reaches_qemu_and_cpus_recomputes_it() {
        let f = write(&GOOD.replace("cpus = 4", "cpus = 4\nsockets = 2"));
        assert_eq!(
            load(Some(&f.0), &Overrides::default()).unwrap().shape,
            (2, 2, 1)
        );
        let o = Overrides {
            cpus: Some(8),
            ..Overrides::default()
        };
        let exp = load(Some(&f.0), &o).unwrap();
        assert_eq!((exp.cpus, exp.shape), (8, (2, 4, 1)));
        // Cores fixed in the spec: --cpus must agree, and the error blames the flag.
        let f = write(&GOOD.replace("cpus = 4", "cpus = 4\nsockets = 2\ncores = 2"));
        let err = load(Some(&f.0), &o).unwrap_err();
        assert!(
            err.0.starts_with("--cpus: ") && err.0.contains("machine.cores"),
            "{err}"
        );
        assert_eq!(load(None, &Overrides::default()).unwrap().shape, (1, 2, 1));
    }

    #[test]
    fn flags_override_the_spec() {
        let f = write(GOOD);
        let o = Overrides {
            sched: Some("bvt".into()),
            cpus: Some(64),
            seconds: Some(0.25),
            ..Overrides::default()
        };
        let exp = load(Some(&f.0), &o).unwrap();
        assert_eq!(
            (exp.policy.as_str(), exp.cpus, exp.duration_ms, exp.domains),
            ("bvt", 64, 250, 8)
        );
        // Eight weights for three domains: the error names the field the flag broke.
        let o = Overrides {
            domains: Some(3),
            ..Overrides::default()
        };
        let err = load(Some(&f.0), &o).unwrap_err();
        assert!(
            err.0.starts_with("--domains: ") && err.0.contains("domain[0].weight"),
            "{err}"
        );
        let o = Overrides {
            cpus: Some(256),
            ..Overrides::default()
        };
        let err = load(Some(&f.0), &o).unwrap_err();
        assert!(
            err.0.starts_with("--cpus: ") && err.0.contains("1..=255"),
            "{err}"
        );
        let o = Overrides {
            sched: Some("lottery".into()),
            ..Overrides::default()
        };
        assert!(load(None, &o).unwrap_err().0.starts_with("--sched: "));
        // --window-ms reaches the plan, and a bad one is blamed on the flag.
        let o = Overrides {
            window_ms: Some(100),
            ..Overrides::default()
        };
        assert_eq!(load(Some(&f.0), &o).unwrap().window_ms, 100);
        let o = Overrides {
            window_ms: Some(5),
            ..Overrides::default()
        };
        let err = load(Some(&f.0), &o).unwrap_err();
        assert!(
            err.0.starts_with("--window-ms: ") && err.0.contains("window_ms"),
            "{err}"
        );
        let o = Overrides {
            workload: Some("dance".into()),
            ..Overrides::default()
        };
        assert!(load(Some(&f.0), &o).unwrap_err().0.contains("--workload"));
    }

    #[test]
    fn limits_are_checked_after_the_flags() {
        // Too small a machine for 128 domains of 8 vCPUs: blamed on --memory when it was
        // given, and fixed by a larger --memory.
        let f = write(
            &GOOD
                .replace("count = 8", "count = 128\nvcpus = 8\nmemory_kib = 1024")
                .replace("weight = [1, 2, 3, 4, 5, 6, 7, 8]", "weight = 256"),
        );
        let o = |m| Overrides {
            memory_mib: Some(m),
            ..Overrides::default()
        };
        let e = load(Some(&f.0), &o(64)).unwrap_err().0;
        assert!(
            e.starts_with("--memory: ") && e.contains("machine.memory_mib"),
            "{e}"
        );
        let exp = load(Some(&f.0), &o(1024)).unwrap();
        assert_eq!(exp.memory_mib, 1024);
        // A fifo spec refused on its own is fine once --sched changes the policy.
        let fifo = write(
            &GOOD
                .replace("\"credit\"", "\"fifo\"")
                .replace("tslice_ms = 30\n", ""),
        );
        let e = load(Some(&fifo.0), &Overrides::default()).unwrap_err().0;
        assert!(
            e.contains("sched.policy") && e.contains("never preempts"),
            "{e}"
        );
        let o = Overrides {
            sched: Some("credit".into()),
            ..Overrides::default()
        };
        load(Some(&fifo.0), &o).unwrap();
    }
}
