//! The results file (JSON Lines, DESIGN.md "Results"): the hypervisor's records copied
//! verbatim as they arrive, then one `exit` record of the runner's own saying how the run
//! ended; and the checks and the summary the runner derives from them.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use runner::first;
use serde_json::Value;

/// An open results file and what has been written to it.
pub struct Results {
    path: PathBuf,
    file: File,
    records: Vec<Value>,
    /// Records that were not a JSON object with a `kind` (still copied, but a failed run).
    malformed: Vec<String>,
}

impl Results {
    /// Creates (or truncates) the file, and its directory if needed.
    pub fn create(path: &Path) -> io::Result<Results> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        Ok(Results {
            path: path.to_path_buf(),
            file: File::create(path)?,
            records: Vec::new(),
            malformed: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record verbatim; written through at once so a crash loses nothing.
    pub fn record(&mut self, json: &str) -> io::Result<()> {
        writeln!(self.file, "{json}")?;
        self.file.flush()?;
        match serde_json::from_str::<Value>(json) {
            Ok(v) if v.get("kind").and_then(Value::as_str).is_some() => self.records.push(v),
            _ => self.malformed.push(json.to_string()),
        }
        Ok(())
    }

    /// Appends the runner's `exit` record: the exit status of `scripts/run`, what ended the
    /// run (`hypervisor`, `timeout`, `reset`, `qemu`, `signal`) and the host wall time.
    pub fn exit_record(&mut self, status: i32, cause: &str, wall_ns: u128) -> io::Result<()> {
        let cause = Value::from(cause);
        self.record(&format!(
            r#"{{"kind":"exit","status":{status},"cause":{cause},"wall_ns":{wall_ns}}}"#
        ))
    }

    /// The well-formed records so far.
    pub fn records(&self) -> &[Value] {
        &self.records
    }

    pub fn malformed(&self) -> &[String] {
        &self.malformed
    }
}

/// The `summary` record (DESIGN.md "Results") derived from the `run` and `domain` records,
/// with the same fairness code as `schedsim` (`sched::summary`); `None` without a `run`
/// record. `weighted`: whether the policy has a `weight` parameter. `expected`: whether
/// every domain ended as the spec said (the hypervisor's verdict).
pub fn summary_record(records: &[Value], weighted: bool, expected: bool) -> Option<Value> {
    let run = first(records, "run")?;
    let domains: Vec<&Value> = records.iter().filter(|r| r["kind"] == "domain").collect();
    let num = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let figures: Vec<sched::summary::DomainFigures> = domains
        .iter()
        .map(|d| sched::summary::DomainFigures {
            workload: d["workload"].as_str().unwrap_or(""),
            weight: num(d, "weight"),
            cap: num(d, "cap"),
            vcpus: num(d, "vcpus") as u32,
            work: num(d, "work"),
            cpu_ns: num(d, "cpu_ns"),
        })
        .collect();
    let fair = sched::summary::fairness(&figures, num(run, "duration_ns"), weighted);
    Some(serde_json::json!({
        "kind": "summary",
        "work_total": domains.iter().map(|d| num(d, "work")).sum::<u64>(),
        "jain": fair.jain,
        "share_err_max": fair.share_err_max,
        "idle_ns": num(run, "idle_ns"),
        "expected": expected,
        "violations": 0,
    }))
}

/// One domain group's totals, for the summary lines.
struct GroupTotals<'a> {
    name: &'a str,
    workload: &'a str,
    domains: u64,
    cpu_ns: u64,
    work: u64,
    not_ok: Vec<&'a str>,
}

/// One line per domain group: how many, their share of the CPU time, their work.
pub fn domain_lines(records: &[Value]) -> Vec<String> {
    let domains: Vec<&Value> = records.iter().filter(|r| r["kind"] == "domain").collect();
    let total: u64 = domains
        .iter()
        .map(|d| d["cpu_ns"].as_u64().unwrap_or(0))
        .sum();
    let mut groups: Vec<GroupTotals> = Vec::new();
    for d in &domains {
        let name = d["group"].as_str().unwrap_or("?");
        let i = match groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                groups.push(GroupTotals {
                    name,
                    workload: d["workload"].as_str().unwrap_or("?"),
                    domains: 0,
                    cpu_ns: 0,
                    work: 0,
                    not_ok: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        g.domains += 1;
        g.cpu_ns += d["cpu_ns"].as_u64().unwrap_or(0);
        g.work += d["work"].as_u64().unwrap_or(0);
        if let Some(exit) = d["exit"].as_str().filter(|e| *e != "ok") {
            g.not_ok.push(exit);
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let share = if total > 0 {
                100.0 * g.cpu_ns as f64 / total as f64
            } else {
                0.0
            };
            let mut line = format!(
                "group {}: {} × {}, {share:.1}% of guest CPU time ({}), work {}",
                g.name,
                g.domains,
                g.workload,
                human_ns(g.cpu_ns),
                g.work
            );
            if let Some(first) = g.not_ok.first() {
                line += &format!("; {} not ok, e.g. {first}", g.not_ok.len());
            }
            line
        })
        .collect()
}

/// What is wrong with the records of a run the hypervisor called a success: no `boot`
/// record, fewer CPUs online than asked for, a malformed record. Empty when all is well.
pub fn problems(records: &[Value], malformed: &[String], cpus: u32) -> Vec<String> {
    let mut out: Vec<String> = malformed
        .iter()
        .map(|m| format!("a results record is not a JSON object with a \"kind\": {m}"))
        .collect();
    match first(records, "boot") {
        None => out.push("the hypervisor wrote no boot record".into()),
        Some(boot) => match boot["cpus_online"].as_u64() {
            Some(n) if n == u64::from(cpus) => {}
            Some(n) => out.push(format!("{n} of {cpus} CPUs came online")),
            None => out.push("the boot record has no cpus_online".into()),
        },
    }
    out
}

/// Nanoseconds as a short human figure.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// The boot record's facts in one line, or `None` without a boot record.
pub fn boot_line(records: &[Value], cpus: u32) -> Option<String> {
    let boot = first(records, "boot")?;
    let field = |k: &str| match &boot[k] {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        v => v.to_string(),
    };
    let boot_ns = boot["boot_ns"]
        .as_u64()
        .map(human_ns)
        .unwrap_or_else(|| "?".into());
    Some(format!(
        "{} of {cpus} CPUs online, {} APIC, all online {boot_ns} after entry, accel {}",
        field("cpus_online"),
        field("apic"),
        field("accel")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn boot(cpus: u64) -> Value {
        json!({"kind":"boot","cpus_online":cpus,"apic":"xapic","boot_ns":12_345_678,"accel":"tcg"})
    }

    #[test]
    fn a_good_boot_has_no_problems() {
        assert!(problems(&[boot(8)], &[], 8).is_empty());
    }

    #[test]
    fn problems_are_found() {
        assert_eq!(problems(&[boot(7)], &[], 8), ["7 of 8 CPUs came online"]);
        assert_eq!(
            problems(&[], &[], 1),
            ["the hypervisor wrote no boot record"]
        );
        assert_eq!(problems(&[boot(1)], &["{oops".into()], 1).len(), 1);
    }

    #[test]
    fn records_are_copied_verbatim() {
        let dir = std::env::temp_dir().join(format!("runner-results-{}", std::process::id()));
        let path = dir.join("sub/r.jsonl");
        let mut r = Results::create(&path).unwrap();
        r.record(r#"{"kind":"boot", "cpus_online":1}"#).unwrap();
        r.record("not json").unwrap();
        r.exit_record(0, "hypervisor", 5).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], r#"{"kind":"boot", "cpus_online":1}"#);
        assert_eq!(lines[1], "not json");
        assert_eq!(r.malformed(), ["not json"]);
        assert_eq!(first(r.records(), "exit").unwrap()["cause"], "hypervisor");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn summary_line() {
        let line = boot_line(&[boot(4)], 4).unwrap();
        assert_eq!(
            line,
            "4 of 4 CPUs online, xapic APIC, all online 12.3 ms after entry, accel tcg"
        );
        assert_eq!(human_ns(999), "999 ns");
        assert_eq!(human_ns(2_500_000_000), "2.50 s");
    }
}
