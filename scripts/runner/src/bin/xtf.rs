//! `xtf`: runs the XTF-style hostile suite one case at a time and prints what each case did.
//!
//! ```text
//! target/release/xtf [--runner PATH] [--kernel ELF] [--timeout S] [--keep DIR] [SPEC...] [--only CASE...]
//! ```
//!
//! For each spec (default: every `scripts/experiments/xtf-*.toml`), each case (a group, or a
//! pair of groups that run together; `runner::xtf::CASES`) is run alone beside the spec's
//! bystanders, under TCG, with the hypervisor's log, and judged as `runner::xtf` says. One line
//! per group: `PASS`/`FAIL`, the case, how its domains ended, and the run's exit status (a run
//! that hangs the machine ends in a timeout, and every case of it fails). The grouped specs
//! are what `experiment-checks` runs; this is for telling which case breaks the machine.
//! `--kernel` boots another hypervisor ELF (an older build, to see which cases a fix closed).
//! The last line is `N passed, N failed`; the exit status is 0 when nothing failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use runner::xtf::{self, BYSTANDERS};
use runner::{invoke_with, read_records, sibling_runner};
use sched::spec::Spec;

fn usage() -> ExitCode {
    eprintln!(
        "usage: xtf [--runner PATH] [--kernel ELF] [--timeout S] [--keep DIR] [SPEC...] [--only CASE...]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut runner = sibling_runner();
    let mut timeout = "30".to_string();
    let mut keep: Option<PathBuf> = None;
    let mut kernel: Option<String> = None;
    let mut specs: Vec<PathBuf> = Vec::new();
    let mut only: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    let mut in_only = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runner" => match args.next() {
                Some(p) => runner = p.into(),
                None => return usage(),
            },
            "--timeout" => match args.next() {
                Some(t) if t.parse::<u64>().is_ok_and(|t| t > 0) => timeout = t,
                _ => {
                    eprintln!("xtf: --timeout needs a number of seconds > 0");
                    return ExitCode::from(2);
                }
            },
            "--kernel" => match args.next() {
                Some(k) => kernel = Some(k),
                None => return usage(),
            },
            "--keep" => match args.next() {
                Some(d) => keep = Some(d.into()),
                None => return usage(),
            },
            "--only" => in_only = true,
            s if s.starts_with('-') => return usage(),
            s if in_only => only.push(s.to_string()),
            s => specs.push(s.into()),
        }
    }
    if specs.is_empty() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        found.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("xtf-") && n.ends_with(".toml"))
        });
        found.sort();
        specs = found;
    }
    let dir = keep
        .unwrap_or_else(|| std::env::temp_dir().join(format!("domino-xtf-{}", std::process::id())));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("xtf: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let (mut passed, mut failed) = (0, 0);
    for path in &specs {
        let spec = match Spec::from_file(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("xtf: {e}");
                return ExitCode::from(2);
            }
        };
        // The units, in spec order.
        let mut units: Vec<&'static str> = Vec::new();
        for g in &spec.domains {
            if BYSTANDERS.contains(&g.name.as_str()) {
                continue;
            }
            let Some(c) = xtf::case(&g.name) else {
                eprintln!(
                    "xtf: {}: group `{}` is not a case of the suite",
                    path.display(),
                    g.name
                );
                return ExitCode::from(2);
            };
            if !units.contains(&c.unit) {
                units.push(c.unit);
            }
        }
        for unit in units {
            if !only.is_empty() && !only.iter().any(|o| unit.contains(o.as_str())) {
                continue;
            }
            let mut one = spec.clone();
            one.name = format!("{}-{unit}", spec.name);
            one.domains.retain(|g| {
                BYSTANDERS.contains(&g.name.as_str())
                    || xtf::case(&g.name).is_some_and(|c| c.unit == unit)
            });
            let text = match toml::to_string(&one) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("xtf: cannot write the spec of {unit}: {e}");
                    return ExitCode::from(1);
                }
            };
            let file = dir.join(format!("{}.toml", one.name));
            let out = dir.join(format!("{}.jsonl", one.name));
            let log = dir.join(format!("{}.log", one.name));
            if let Err(e) = std::fs::write(&file, text) {
                eprintln!("xtf: cannot write {}: {e}", file.display());
                return ExitCode::from(1);
            }
            let _ = std::fs::remove_file(&out);
            let mut args: Vec<String> = vec![
                "--accel".into(),
                "tcg".into(),
                "--timeout".into(),
                timeout.clone(),
            ];
            if let Some(k) = &kernel {
                args.extend(["--kernel".into(), k.clone()]);
            }
            args.push(file.display().to_string());
            let run = invoke_with(&runner, &out, &args, false);
            let _ = std::fs::write(&log, &run.output);
            let status = run.status.map_or("none".to_string(), |s| s.to_string());
            // A results file that is not the contract's says why in place of each case.
            let (records, unreadable) = match read_records(&out) {
                Ok(r) => (r, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let groups: Vec<&str> = one
                .domains
                .iter()
                .map(|g| g.name.as_str())
                .filter(|g| !BYSTANDERS.contains(g))
                .collect();
            let outcomes = xtf::outcomes(&records, &run.output).unwrap_or_default();
            let by = xtf::bystanders_progressed(&records);
            let tail = run
                .output
                .lines()
                .rev()
                .find(|l| l.contains("exit:") || l.contains("scripts/run:"))
                .unwrap_or("")
                .trim()
                .to_string();
            for g in groups {
                let mine: Vec<&xtf::Outcome> = outcomes.iter().filter(|o| o.group == g).collect();
                let held = !mine.is_empty() && mine.iter().all(|o| o.held);
                let how = if let Some(e) = &unreadable {
                    format!("unreadable results: {e}")
                } else if mine.is_empty() {
                    format!("no record ({tail})")
                } else {
                    let mut seen: Vec<String> = Vec::new();
                    for o in &mine {
                        let s = if o.held {
                            format!(
                                "{}{}",
                                o.exit,
                                o.said.as_ref().map_or(String::new(), |w| format!(", {w}"))
                            )
                        } else {
                            o.why.clone()
                        };
                        if !seen.contains(&s) {
                            seen.push(s);
                        }
                    }
                    seen.join(" | ")
                };
                let by_note = match &by {
                    Ok(_) => String::new(),
                    Err(e) if !mine.is_empty() => format!("; {e}"),
                    Err(_) => String::new(),
                };
                let pass = held && by.is_ok();
                if pass {
                    passed += 1;
                } else {
                    failed += 1;
                }
                println!(
                    "{}  {:<30} run exit {status:<4} {how}{by_note}",
                    if pass { "PASS" } else { "FAIL" },
                    g
                );
            }
        }
    }
    println!("xtf: runs and logs in {}", dir.display());
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
