//! The spec step: turn an experiment spec (TOML) plus the command-line overrides into the
//! [`Experiment`] the runner boots, or a [`BadInput`] that names the file, the field and what
//! is allowed.
//!
//! The spec format belongs to `sched::spec` (the same file drives the hypervisor and
//! schedsim). Until that parser lands, [`load`] reads the handful of fields the runner needs
//! itself; when it lands, `load` becomes a thin call into it and nothing else here changes.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// The policies there are: the names in `sched`'s registry, the one list that the
/// hypervisor, schedsim and this runner all use.
pub fn policies() -> Vec<&'static str> {
    sched::registry::POLICIES.iter().map(|p| p.name).collect()
}
/// The CPU range Domino supports (QEMU without interrupt remapping stops at 255 too).
pub const CPUS: std::ops::RangeInclusive<u32> = 1..=255;

/// What the runner needs to know about the experiment it boots.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Names the default results file, `results/<name>.jsonl`.
    pub name: String,
    /// The spec file, if there is one.
    pub spec: Option<PathBuf>,
    pub cpus: u32,
    pub memory_mib: u32,
    pub policy: String,
    /// Domains over all groups.
    pub domains: u32,
    pub warmup_ms: u64,
    pub duration_ms: u64,
}

impl Experiment {
    /// The experiment `scripts/run` boots without a spec.
    pub fn default_experiment() -> Experiment {
        Experiment {
            name: "default".into(),
            spec: None,
            cpus: 2,
            memory_mib: 512,
            policy: "credit".into(),
            domains: 0,
            warmup_ms: 0,
            duration_ms: 1000,
        }
    }
}

/// Command-line flags that override the spec (DESIGN.md: "Flags override the spec").
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub sched: Option<String>,
    pub cpus: Option<u32>,
    pub domains: Option<u32>,
    pub workload: Option<String>,
    pub seconds: Option<f64>,
    pub memory_mib: Option<u32>,
}

/// A bad spec or flag: the message names where, which field, and what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads the spec (if any), applies the overrides and validates the result.
pub fn load(spec: Option<&Path>, overrides: &Overrides) -> Result<Experiment, BadInput> {
    let mut exp = match spec {
        None => Experiment::default_experiment(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| BadInput(format!("{}: cannot read the spec: {e}", path.display())))?;
            let mut exp = parse(&text, &path.display().to_string())?;
            exp.spec = Some(path.to_path_buf());
            exp
        }
    };
    apply(&mut exp, overrides)?;
    Ok(exp)
}

fn apply(exp: &mut Experiment, o: &Overrides) -> Result<(), BadInput> {
    if let Some(policy) = &o.sched {
        check_policy("--sched", policy)?;
        exp.policy = policy.clone();
    }
    if let Some(cpus) = o.cpus {
        check_cpus("--cpus", cpus)?;
        exp.cpus = cpus;
    }
    if let Some(domains) = o.domains {
        exp.domains = domains;
    }
    if let Some(workload) = &o.workload
        && workload.is_empty()
    {
        return Err(BadInput("--workload: must name a workload".into()));
    }
    if let Some(s) = o.seconds {
        if !(s.is_finite() && s > 0.0) {
            return Err(BadInput(format!(
                "--seconds {s}: must be a positive number"
            )));
        }
        exp.duration_ms = (s * 1000.0).round() as u64;
    }
    if let Some(m) = o.memory_mib {
        check_memory("--memory", m)?;
        exp.memory_mib = m;
    }
    Ok(())
}

/// The interim reader for the fields the runner uses; `sched::spec` replaces it.
fn parse(text: &str, file: &str) -> Result<Experiment, BadInput> {
    let bad = |field: &str, what: String| BadInput(format!("{file}: {field}: {what}"));
    let root: Table = text.parse().map_err(|e: toml::de::Error| {
        BadInput(format!("{file}: not valid TOML: {}", e.message()))
    })?;
    let mut exp = Experiment::default_experiment();
    for key in root.keys() {
        if ![
            "name",
            "duration_ms",
            "warmup_ms",
            "machine",
            "sched",
            "domain",
        ]
        .contains(&key.as_str())
        {
            return Err(bad(
                key,
                "unknown field; allowed: name, duration_ms, warmup_ms, [machine], [sched], [[domain]]"
                    .into(),
            ));
        }
    }
    match root.get("name") {
        Some(Value::String(s)) if valid_name(s) => exp.name = s.clone(),
        Some(v) => {
            return Err(bad(
                "name",
                format!("{v} is not allowed; use letters, digits, '-', '_' or '.'"),
            ));
        }
        None => {
            return Err(bad(
                "name",
                "missing; every spec names its experiment".into(),
            ));
        }
    }
    if let Some(v) = root.get("duration_ms") {
        exp.duration_ms = int(v).filter(|&n| n > 0).ok_or_else(|| {
            bad(
                "duration_ms",
                format!("{v} is not allowed; a positive integer (milliseconds)"),
            )
        })?;
    }
    if let Some(v) = root.get("warmup_ms") {
        exp.warmup_ms = int(v).ok_or_else(|| {
            bad(
                "warmup_ms",
                format!("{v} is not allowed; an integer >= 0 (milliseconds)"),
            )
        })?;
    }
    if let Some(machine) = root.get("machine") {
        let machine = machine
            .as_table()
            .ok_or_else(|| bad("machine", "must be a table".into()))?;
        for (key, v) in machine {
            let field = format!("machine.{key}");
            match key.as_str() {
                "cpus" => {
                    let n = int(v).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                    check_cpus(&format!("{file}: {field}"), n)?;
                    exp.cpus = n;
                }
                "memory_mib" => {
                    let n = int(v).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                    check_memory(&format!("{file}: {field}"), n)?;
                    exp.memory_mib = n;
                }
                _ => {
                    return Err(bad(
                        &field,
                        "unknown field; allowed: cpus, memory_mib".into(),
                    ));
                }
            }
        }
    }
    if let Some(sched) = root.get("sched") {
        let sched = sched
            .as_table()
            .ok_or_else(|| bad("sched", "must be a table".into()))?;
        match sched.get("policy") {
            Some(Value::String(p)) => check_policy(&format!("{file}: sched.policy"), p)?,
            Some(v) => check_policy(&format!("{file}: sched.policy"), &v.to_string())?,
            None => return Err(bad("sched.policy", "missing".into())),
        }
        exp.policy = sched["policy"].as_str().unwrap_or_default().to_string();
    }
    if let Some(groups) = root.get("domain") {
        let groups = groups
            .as_array()
            .ok_or_else(|| bad("domain", "must be an array of tables ([[domain]])".into()))?;
        exp.domains = 0;
        for (i, g) in groups.iter().enumerate() {
            let count = match g.get("count") {
                None => 1,
                Some(v) => int(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        bad(
                            &format!("domain[{i}].count"),
                            format!("{v} is not allowed; an integer >= 1"),
                        )
                    })?,
            };
            exp.domains += count;
        }
    }
    Ok(exp)
}

fn int(v: &Value) -> Option<u64> {
    v.as_integer().and_then(|n| u64::try_from(n).ok())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn check_policy(field: &str, policy: &str) -> Result<(), BadInput> {
    let policies = policies();
    if policies.contains(&policy) {
        Ok(())
    } else {
        Err(BadInput(format!(
            "{field}: `{policy}` is not a policy; allowed: {}",
            policies.join(", ")
        )))
    }
}

fn check_cpus(field: &str, cpus: u32) -> Result<(), BadInput> {
    if CPUS.contains(&cpus) {
        Ok(())
    } else {
        Err(BadInput(format!(
            "{field}: {cpus} CPUs is not allowed; {}..={}",
            CPUS.start(),
            CPUS.end()
        )))
    }
}

fn check_memory(field: &str, mib: u32) -> Result<(), BadInput> {
    if (64..=65536).contains(&mib) {
        Ok(())
    } else {
        Err(BadInput(format!(
            "{field}: {mib} MiB is not allowed; 64..=65536"
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
[domain.args]
period_us = 1000
"#;

    #[test]
    fn reads_the_design_example() {
        let exp = parse(GOOD, "x.toml").unwrap();
        assert_eq!(exp.name, "fairness-weights");
        assert_eq!((exp.cpus, exp.memory_mib, exp.domains), (4, 1024, 8));
        assert_eq!((exp.warmup_ms, exp.duration_ms), (500, 5000));
        assert_eq!(exp.policy, "credit");
    }

    #[test]
    fn bad_fields_are_named() {
        let err = parse(&GOOD.replace("cpus = 4", "cpus = 0"), "x.toml").unwrap_err();
        assert!(
            err.0.contains("x.toml") && err.0.contains("machine.cpus"),
            "{err}"
        );
        let err = parse(&GOOD.replace("\"credit\"", "\"lottery\""), "x.toml").unwrap_err();
        assert!(
            err.0.contains("sched.policy") && err.0.contains("rr, credit, bvt"),
            "{err}"
        );
        let err = parse(&format!("colour = 1\n{GOOD}"), "x.toml").unwrap_err();
        assert!(err.0.contains("colour"), "{err}");
        let err = parse(&GOOD.replace("count = 8", "count = 0"), "x.toml").unwrap_err();
        assert!(err.0.contains("domain[0].count"), "{err}");
    }

    #[test]
    fn flags_override_the_spec() {
        let mut exp = parse(GOOD, "x.toml").unwrap();
        let o = Overrides {
            sched: Some("bvt".into()),
            cpus: Some(64),
            seconds: Some(0.25),
            ..Overrides::default()
        };
        apply(&mut exp, &o).unwrap();
        assert_eq!(
            (exp.policy.as_str(), exp.cpus, exp.duration_ms),
            ("bvt", 64, 250)
        );
        let o = Overrides {
            cpus: Some(256),
            ..Overrides::default()
        };
        assert!(apply(&mut exp, &o).unwrap_err().0.contains("--cpus"));
    }
}
