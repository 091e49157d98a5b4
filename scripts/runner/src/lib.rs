//! Driving the runner from other tools (`boot-matrix` behind scripts/test, `bench-boot`
//! behind scripts/bench): run it as a user would, then read the results file it wrote.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use abi::tool::results::Record;
use serde_json::Value;

pub mod xtf;

/// The `runner` binary next to the running tool (cargo builds them into one directory).
pub fn sibling_runner() -> PathBuf {
    std::env::current_exe()
        .map(|exe| exe.with_file_name("runner"))
        .unwrap_or_else(|_| PathBuf::from("runner"))
}

/// One finished runner invocation.
pub struct Run {
    /// Its exit status; `None` if it could not run or was killed.
    pub status: Option<i32>,
    pub took: Duration,
    /// Its stdout then its stderr.
    pub output: String,
}

/// Runs `runner --no-build --quiet --out OUT ARGS...` to its end.
pub fn invoke(runner: &Path, out: &Path, args: &[String]) -> Run {
    invoke_with(runner, out, args, true)
}

/// Runs `runner --no-build --quiet|--verbose --out OUT ARGS...` to its end; without `quiet`
/// the output holds the hypervisor's whole log, guests' console lines included, and every
/// record.
pub fn invoke_with(runner: &Path, out: &Path, args: &[String], quiet: bool) -> Run {
    let start = Instant::now();
    let result = Command::new(runner)
        .arg("--no-build")
        .arg(if quiet { "--quiet" } else { "--verbose" })
        .arg("--out")
        .arg(out)
        .args(args)
        .output();
    let took = start.elapsed();
    match result {
        Ok(o) => Run {
            status: o.status.code(),
            took,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        },
        Err(e) => Run {
            status: None,
            took,
            output: format!("cannot run {}: {e}", runner.display()),
        },
    }
}

/// Runs the KVM probe: whether KVM is usable, and the runner's one-line verdict.
pub fn probe_kvm(runner: &Path) -> (bool, String) {
    match Command::new(runner)
        .args(["--probe", "--no-build"])
        .output()
    {
        Ok(p) => (
            p.status.success(),
            String::from_utf8_lossy(&p.stdout).trim().to_string(),
        ),
        Err(e) => (false, format!("cannot run {}: {e}", runner.display())),
    }
}

/// Every record of a results file, in the contract's types (`abi::tool::results`); an error names
/// the first line that does not follow it, and what is wrong with it.
pub fn read_records(path: &Path) -> Result<Vec<Record>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("no results file: {e}"))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            parse_record(l).map_err(|e| format!("{}:{}: {e}: {l}", path.display(), i + 1))
        })
        .collect()
}

/// One line of a results file read into its record. The error names the record's kind and
/// the field at fault: missing, unknown (a misspelling), or of the wrong type.
pub fn parse_record(line: &str) -> Result<Record, String> {
    let e = match serde_json::from_str::<Record>(line) {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(line) else {
        return Err(format!("not a JSON object: {e}"));
    };
    let Some(Value::String(kind)) = fields.remove("kind") else {
        return Err("a record without a \"kind\" string".into());
    };
    // serde reads an internally tagged record through a buffer, which loses where a value
    // of the wrong type was; reading the fields again, tracked, finds it.
    let mut track = serde_path_to_error::Track::new();
    let body = serde_path_to_error::Deserializer::new(Value::Object(fields), &mut track);
    let Some(Err(_)) = Record::from_fields(&kind, body) else {
        return Err(format!("a `{kind}` record: {e}"));
    };
    let (e, field) = (e.to_string(), track.path().to_string());
    // serde's message names a missing or unknown field itself.
    if field == "." || e.contains(&format!("`{field}`")) {
        Err(format!("a `{kind}` record: {e}"))
    } else {
        Err(format!("a `{kind}` record: field `{field}`: {e}"))
    }
}

/// A record as the line the results file holds (without the newline).
pub fn record_line(r: &Record) -> String {
    // These types always encode (no maps, no non-string keys).
    serde_json::to_string(r).expect("a results record encodes")
}

/// Prints how to rerun a failed case and the last lines of what the runner said.
pub fn show_failure(args: &[String], out: &Path, output: &str) {
    println!("      runner {} --out {}", args.join(" "), out.display());
    let lines: Vec<&str> = output.lines().collect();
    for line in &lines[lines.len().saturating_sub(12)..] {
        println!("      | {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::tool::results::Records;

    const DOMAIN: &str = r#"{"kind":"domain","id":1,"name":"w0","group":"w","workload":"cpu","vcpus":1,"weight":256,"cap":0,"cpu_ns":10,"wait_ns":0,"work":3,"wakeups":0,"wake_lat_p50_ns":0,"wake_lat_p99_ns":0,"wake_lat_max_ns":0,"switches":1,"migrations":0,"exit":"ok"}"#;

    #[test]
    fn errors_name_the_kind_and_the_field() {
        let d = parse_record(DOMAIN).unwrap();
        assert_eq!(record_line(&d), DOMAIN);
        let e = parse_record(&DOMAIN.replace(r#""cpu_ns":10,"#, "")).unwrap_err();
        assert_eq!(e, "a `domain` record: missing field `cpu_ns`");
        let e = parse_record(&DOMAIN.replace("cpu_ns", "cpu_ms")).unwrap_err();
        assert!(
            e.starts_with("a `domain` record: unknown field `cpu_ms`, expected one of"),
            "{e}"
        );
        let e = parse_record(&DOMAIN.replace(r#""work":3"#, r#""work":"3""#)).unwrap_err();
        assert!(
            e.starts_with("a `domain` record: field `work`: invalid type"),
            "{e}"
        );
        let e = parse_record(&DOMAIN.replace(r#""exit":"ok""#, r#""exit":"fine""#)).unwrap_err();
        assert!(
            e.starts_with("a `domain` record: field `exit`: invalid value"),
            "{e}"
        );
        let e = parse_record(&DOMAIN.replace("\"domain\"", "\"domains\"")).unwrap_err();
        assert!(
            e.starts_with("a `domains` record: unknown variant `domains`"),
            "{e}"
        );
        assert!(
            parse_record("[1]")
                .unwrap_err()
                .starts_with("not a JSON object")
        );
        assert_eq!(
            parse_record(r#"{"id":1}"#).unwrap_err(),
            "a record without a \"kind\" string"
        );
    }

    #[test]
    fn a_file_is_read_whole_or_refused_by_line() {
        let path = std::env::temp_dir().join(format!("runner-lib-{}.jsonl", std::process::id()));
        fs::write(&path, format!("{DOMAIN}\n{DOMAIN}\n")).unwrap();
        assert_eq!(read_records(&path).unwrap().domains().count(), 2);
        fs::write(
            &path,
            format!("{DOMAIN}\n{}\n", DOMAIN.replace("wakeups", "wakeup")),
        )
        .unwrap();
        let e = read_records(&path).unwrap_err();
        assert!(
            e.contains(".jsonl:2: a `domain` record: unknown field `wakeup`"),
            "{e}"
        );
        fs::remove_file(&path).unwrap();
    }
}
