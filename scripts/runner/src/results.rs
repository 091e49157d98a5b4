//! The results file (JSON Lines, docs/DESIGN.md "Results"): the hypervisor's records copied
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

/// The `summary` record (docs/DESIGN.md "Results") derived from the `run` and `domain` records,
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

/// Domains the spec expected to make progress that made none over the measured interval
/// (`sched::spec::starved`, the same rule `schedsim` applies), one message each naming the
/// domain: a run never claims success for a domain it starved. Domains are matched to the
/// plan by name; the interval is the `run` record's `duration_ns`.
pub fn starved(records: &[Value], plan: &[sched::spec::DomainPlan]) -> Vec<String> {
    let Some(run) = first(records, "run") else {
        return Vec::new(); // reported elsewhere
    };
    let duration_ns = run["duration_ns"].as_u64().unwrap_or(0);
    let num = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    records
        .iter()
        .filter(|r| r["kind"] == "domain" && r["exit"] == "ok")
        .filter_map(|d| {
            let p = plan.iter().find(|p| d["name"] == p.name.as_str())?;
            let got = sched::spec::Progress {
                cpu_ns: num(d, "cpu_ns"),
                wait_ns: num(d, "wait_ns"),
                wakeups: num(d, "wakeups"),
            };
            sched::spec::starved(p, duration_ns, &got, true)
        })
        .collect()
}

/// The starved domains in a few lines: the first three in full, then how many more and
/// their names (a short run of 1024 domains may starve hundreds).
pub fn starved_summary(starved: &[String]) -> Vec<String> {
    const FULL: usize = 3;
    const NAMED: usize = 20;
    let mut out: Vec<String> = starved.iter().take(FULL).cloned().collect();
    if starved.len() > FULL {
        let rest = &starved[FULL..];
        // Each message starts with "domain `NAME`".
        let names: Vec<&str> = rest
            .iter()
            .filter_map(|m| m.split('`').nth(1))
            .take(NAMED)
            .collect();
        let more = if rest.len() > NAMED { ", ..." } else { "" };
        out.push(format!(
            "{} more domains were starved likewise: {}{more}",
            rest.len(),
            names.join(", ")
        ));
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

    /// The plan of a spec's `[[domain]]` groups (TOML after the first `[[domain]]`).
    fn plan(groups: &str) -> Vec<sched::spec::DomainPlan> {
        let text = format!("name = \"t\"\nduration_ms = 1000\n[[domain]]\n{groups}");
        sched::spec::Spec::from_str(&text, "t.toml").unwrap().plan()
    }

    fn domain(name: &str, workload: &str, cpu_ns: u64, wakeups: u64, exit: &str) -> Value {
        json!({"kind":"domain","name":name,"workload":workload,"cpu_ns":cpu_ns,
               "wait_ns":900_000_000u64,"wakeups":wakeups,"exit":exit})
    }

    #[test]
    fn starved_domains_fail_the_run_by_name() {
        let plan = plan(
            "name = \"w\"\ncount = 2\nworkload = \"cpu\"\n\
             [[domain]]\nname = \"lat\"\nworkload = \"latency\"\n\
             [[domain]]\nname = \"idle\"\nworkload = \"cpu\"\nexpect_progress = false\n\
             [[domain]]\nname = \"cli\"\nworkload = \"hostile-priv\"\nexpect = \"killed\"",
        );
        let run = json!({"kind":"run","duration_ns":1_000_000_000u64});
        let good = vec![
            run.clone(),
            domain("w0", "cpu", 400_000_000, 0, "ok"),
            domain("w1", "cpu", 400_000_000, 0, "ok"),
            domain("lat0", "latency", 30_000_000, 950, "ok"),
            domain("idle0", "cpu", 0, 0, "ok"),
            domain(
                "cli0",
                "hostile-priv",
                0,
                0,
                "killed: privileged instruction at 0x401000",
            ),
        ];
        assert!(
            starved(&good, &plan).is_empty(),
            "{:?}",
            starved(&good, &plan)
        );
        let mut bad = good.clone();
        bad[2] = domain("w1", "cpu", 0, 0, "ok");
        bad[3] = domain("lat0", "latency", 30_000_000, 0, "ok");
        let found = starved(&bad, &plan);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("domain `w1` (cpu) got no CPU time"),
            "{}",
            found[0]
        );
        assert!(found[0].contains("runnable for 900.0 ms"), "{}", found[0]);
        assert!(
            found[1].starts_with("domain `lat0` (latency) never woke"),
            "{}",
            found[1]
        );
        // A domain that already failed its expectation is reported by Domain0, not here.
        bad[2] = domain(
            "w1",
            "cpu",
            0,
            0,
            "killed: page fault at 0x0 (rip 0x401000)",
        );
        assert_eq!(starved(&bad, &plan).len(), 1);
        // Without a run record there is no interval to judge.
        assert!(starved(&bad[1..], &plan).is_empty());
        // Hundreds of them: three in full, then the count and some names.
        let many: Vec<String> = (0..100)
            .map(|i| format!("domain `w{i}` (cpu) got none"))
            .collect();
        let lines = starved_summary(&many);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "domain `w0` (cpu) got none");
        assert!(
            lines[3].starts_with("97 more domains were starved likewise: w3, w4,"),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("w22, ..."), "{}", lines[3]);
        assert_eq!(starved_summary(&many[..2]).len(), 2);
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
