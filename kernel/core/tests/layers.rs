//! The hypervisor's layering, checked: each top-level module of `kernel/src` (a folder or a
//! file) may use only the modules its README names, so the dependency graph has no cycle
//! but the inherent one between `domain` and `schedule` (a vCPU wakes through its
//! scheduler; the scheduler runs vCPUs). The table below is the one in `kernel/README.md`;
//! change both together.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Each module, and the modules it may use (`main.rs` may use all of them).
const ALLOWED: &[(&str, &[&str])] = &[
    ("arch", &[]),
    ("time", &["arch"]),
    ("console", &["arch", "time"]),
    ("mm", &["arch"]),
    ("domain", &["arch", "mm", "schedule", "time"]),
    ("schedule", &["arch", "console", "domain", "time"]),
    (
        "pv",
        &["arch", "console", "domain", "mm", "schedule", "time"],
    ),
    ("selftest", &["arch", "schedule"]),
    ("trap", &["arch", "console", "mm", "pv", "schedule", "time"]),
];

mod common;
use common::{rust_files, src};

/// The top-level module a file belongs to: `mm/frames.rs` -> `mm`, `time.rs` -> `time`.
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules `text` names through `crate::` (comments left out).
fn uses(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c}`: the first segment of each item.
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap())
                .collect()
        } else {
            vec![
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap(),
            ]
        };
        for name in names {
            if modules.contains(name) {
                found.insert(name.to_string());
            }
        }
    }
    found
}

/// Every edge `from -> to` between different top-level modules, with the files making it.
fn edges() -> BTreeMap<(String, String), BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&root, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let from = module_of(&root, file);
        if from == "main" {
            continue;
        }
        for to in uses(&fs::read_to_string(file).unwrap(), &modules) {
            if to != from {
                let rel = file.strip_prefix(&root).unwrap().display().to_string();
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(BTreeSet::new)
                    .insert(rel);
            }
        }
    }
    edges
}

#[test]
fn every_module_uses_only_what_its_readme_allows() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for ((from, to), files) in edges() {
        match allowed.get(from.as_str()) {
            None => wrong.push(format!("{from} is not in the layering table (uses {to})")),
            Some(may) if !may.contains(&to.as_str()) => {
                wrong.push(format!("{from} -> {to} (in {files:?})"))
            }
            Some(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "module dependencies the layering does not allow:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_only_cycle_is_domain_and_schedule() {
    // Every pair that reaches each other through the allowed table.
    let graph: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(m) = stack.pop() {
            for &next in graph.get(m).copied().unwrap_or(&[]) {
                if next == to {
                    return true;
                }
                if seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        false
    };
    let mut cyclic = Vec::new();
    for &(a, _) in ALLOWED {
        for &(b, _) in ALLOWED {
            if a < b && reaches(a, b) && reaches(b, a) {
                cyclic.push((a, b));
            }
        }
    }
    assert_eq!(cyclic, vec![("domain", "schedule")]);
}

#[test]
fn the_scanner_sees_grouped_and_plain_uses() {
    let modules: BTreeSet<String> = ["mm", "pv", "time"].iter().map(|s| s.to_string()).collect();
    let text = "use crate::{mm::frames, time};\n// crate::pv is only a comment\nfn f() { crate::pv::x(); }";
    let found: Vec<String> = uses(text, &modules).into_iter().collect();
    assert_eq!(found, ["mm", "pv", "time"]);
    let commented = "// crate::pv::x()";
    assert!(uses(commented, &modules).is_empty());
}
