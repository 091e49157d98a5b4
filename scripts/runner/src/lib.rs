//! Driving the runner from other tools (`boot-matrix` behind scripts/test, `bench-boot`
//! behind scripts/bench): run it as a user would, then read the results file it wrote.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Runs `runner --no-build [--quiet] --out OUT ARGS...` to its end; without `quiet` the
/// output holds the hypervisor's log, guests' console lines included.
pub fn invoke_with(runner: &Path, out: &Path, args: &[String], quiet: bool) -> Run {
    let start = Instant::now();
    let result = Command::new(runner)
        .arg("--no-build")
        .args(quiet.then_some("--quiet"))
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

/// Every record of a results file; an error names the first line that is not JSON.
pub fn read_records(path: &Path) -> Result<Vec<Value>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("no results file: {e}"))?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad JSON line `{l}`: {e}")))
        .collect()
}

/// Prints how to rerun a failed case and the last lines of what the runner said.
pub fn show_failure(args: &[String], out: &Path, output: &str) {
    println!("      runner {} --out {}", args.join(" "), out.display());
    let lines: Vec<&str> = output.lines().collect();
    for line in &lines[lines.len().saturating_sub(12)..] {
        println!("      | {line}");
    }
}

/// The first record of `kind`.
pub fn first<'a>(records: &'a [Value], kind: &str) -> Option<&'a Value> {
    records.iter().find(|r| r["kind"] == kind)
}
