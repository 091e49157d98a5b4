//! The repository stands alone: a newcomer with a clone and nothing else can follow every
//! reference to the design. Every file of the repository (what `git ls-files` lists, tracked
//! or new) that cites the design cites it as `docs/DESIGN.md`, that path resolves inside the
//! repository, a section named right after it (`docs/DESIGN.md "Results"`) is a heading of
//! that file, and nothing points at the project's shared folder beside the repository or at
//! an absolute path under `/work`, which only the build machines have.
//!
//! `DOMINO_DOCS_ROOT=DIR` checks another tree instead of this repository (one without git
//! is walked, skipping `.git`, `target`, `results` and `build`).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The design's file name. The needles are built with `concat!` so that this file, which
/// is scanned too, does not cite anything itself.
const NAME: &str = concat!("DESIGN", ".md");
/// Its path in the repository.
const DOC: &str = concat!("docs/", "DESIGN", ".md");
/// The shared folder beside the repository, which a clone does not have.
const SHARED: &str = concat!("..", "/shared");
/// Absolute paths of the build machines.
const MACHINE: &str = concat!("/wo", "rk/");

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.-/".contains(c)
}

/// Line number (1-based) of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// The path-like token around `text[start..end]`, extended both ways over path characters
/// (a trailing `.` or `/` ends a sentence, not a path).
fn token(text: &str, start: usize, end: usize) -> &str {
    let from = text[..start]
        .char_indices()
        .rev()
        .take_while(|&(_, c)| is_path_char(c))
        .last()
        .map_or(start, |(i, _)| i);
    let to = text[end..]
        .char_indices()
        .take_while(|&(_, c)| is_path_char(c))
        .last()
        .map_or(end, |(i, c)| end + i + c.len_utf8());
    text[from..to].trim_end_matches(['.', '/'])
}

/// `path` with `.` and `..` folded away, without touching the file system; `None` if it
/// climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether `cited`, written in the file `file` (both relative to `root`), names something
/// inside the repository: relative to the citing file, or (unless it starts with `.`) to
/// the repository root.
fn resolves(root: &Path, file: &Path, cited: &str) -> bool {
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut candidates = vec![dir.join(cited)];
    if !cited.starts_with('.') {
        candidates.push(PathBuf::from(cited));
    }
    candidates
        .iter()
        .filter_map(|c| normalize(c))
        .any(|c| root.join(c).exists())
}

/// The section names `docs/DESIGN.md` offers: every heading, in full and without a
/// trailing parenthesis (`Results (JSON Lines, ...)` answers to `Results`).
fn sections(design: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in design.lines() {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#').trim();
        out.insert(title.to_string());
        if let Some((short, _)) = title.split_once(" (") {
            out.insert(short.to_string());
        }
    }
    out
}

/// What is wrong with the citations in `text`, the content of `file` (relative to `root`),
/// one message each naming the file and line.
fn problems_in(root: &Path, file: &Path, text: &str, design: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let here = |at: usize| format!("{}:{}", file.display(), line_of(text, at));
    let known = design.map(sections).unwrap_or_default();
    for (at, _) in text.match_indices(NAME) {
        if !text[..at].ends_with("docs/") {
            out.push(format!(
                "{}: cites `{NAME}` without its path; write `{DOC}` (the design lives there)",
                here(at)
            ));
            continue;
        }
        let start = at - "docs/".len();
        let cited = token(text, start, at + NAME.len());
        if !resolves(root, file, cited) {
            out.push(format!(
                "{}: cites `{cited}`, which is not a file of the repository; write `{DOC}`",
                here(at)
            ));
            continue;
        }
        // A section named right after the path: `docs/DESIGN.md "Results"` (or `...'s "X"`).
        let after = &text[at + NAME.len()..];
        let after = after.strip_prefix("'s").unwrap_or(after);
        if let Some(quoted) = after.strip_prefix(" \"")
            && let Some((section, _)) = quoted.split_once('"')
            && !section.contains('\n')
            && !known.contains(section)
        {
            out.push(format!(
                "{}: cites section \"{section}\" of `{DOC}`, which has no such heading; \
                 headings: {}",
                here(at),
                known.iter().cloned().collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    for (at, _) in text.match_indices(SHARED) {
        let cited = token(text, at, at + SHARED.len());
        if !resolves(root, file, cited) {
            out.push(format!(
                "{}: cites `{cited}`, outside the repository, which a clone does not have; \
                 cite what is in the repository (`{DOC}`) instead",
                here(at)
            ));
        }
    }
    for (at, _) in text.match_indices(MACHINE) {
        let absolute = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_path_char(c));
        if absolute {
            let cited = token(text, at, at + MACHINE.len());
            out.push(format!(
                "{}: cites `{cited}`, a path of the build machines, not of the repository",
                here(at)
            ));
        }
    }
    out
}

/// The repository's files, relative to `root`: `git ls-files` (tracked, and new files not
/// ignored), or a walk when `root` is not a git work tree.
fn files(root: &Path) -> Vec<PathBuf> {
    let git = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output();
    if let Ok(out) = git
        && out.status.success()
        && root.join(".git").exists()
    {
        return out
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect();
    }
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let rel = dir.join(e.file_name());
            let Ok(ty) = e.file_type() else { continue };
            if ty.is_dir() {
                let skip = [".git", "target", "results", "build", "__pycache__"];
                if !skip.iter().any(|s| e.file_name() == *s) {
                    dirs.push(rel);
                }
            } else if ty.is_file() {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// Every problem in the tree at `root`.
fn check_tree(root: &Path) -> Vec<String> {
    let design = std::fs::read_to_string(root.join(DOC)).ok();
    let mut out = Vec::new();
    if design.is_none() {
        out.push(format!(
            "{DOC} is missing: the repository's copy of the design"
        ));
    }
    for file in files(root) {
        let Ok(bytes) = std::fs::read(root.join(&file)) else {
            continue;
        };
        if bytes[..bytes.len().min(8192)].contains(&0) {
            continue; // binary (figures)
        }
        let text = String::from_utf8_lossy(&bytes);
        out.extend(problems_in(root, &file, &text, design.as_deref()));
    }
    out
}

#[test]
fn every_design_reference_resolves_inside_the_repository() {
    let root = std::env::var_os("DOMINO_DOCS_ROOT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        PathBuf::from,
    );
    let problems = check_tree(&root);
    assert!(
        problems.is_empty(),
        "{} problems in {}:\n{}",
        problems.len(),
        root.display(),
        problems.join("\n")
    );
}

/// A scratch tree under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(files: &[(&str, &str)]) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "domino-docs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DESIGN_TEXT: &str = "# Title\n## Contracts\n### Results (JSON Lines)\n#### Exit status\n";

fn problems(file: &str, text: &str) -> Vec<String> {
    let tree = Scratch::new(&[(DOC, DESIGN_TEXT), (file, text), ("sched/README.md", "x")]);
    problems_in(&tree.0, Path::new(file), text, Some(DESIGN_TEXT))
}

#[test]
fn a_bare_citation_is_refused_and_a_full_one_accepted() {
    let bare = problems(
        "sched/src/x.rs",
        &format!("// the format of {NAME} \"Results\"\n"),
    );
    assert_eq!(bare.len(), 1, "{bare:?}");
    assert!(bare[0].starts_with("sched/src/x.rs:1: cites"), "{bare:?}");
    let full = format!("// the format of {DOC} \"Results\", and ({DOC}).\n");
    assert_eq!(problems("sched/src/x.rs", &full), Vec::<String>::new());
    // Relative to the citing file, as a Markdown link writes it.
    let link = format!("see [the design](../{DOC}).\n");
    assert_eq!(problems("sched/README.md", &link), Vec::<String>::new());
    // `../docs/...` from the root climbs out of the repository.
    assert_eq!(problems("README.md", &link).len(), 1);
}

#[test]
fn a_path_or_section_that_does_not_exist_is_refused() {
    let wrong = problems("README.md", &format!("see kernel/{DOC}\n"));
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].contains("not a file of the repository"),
        "{wrong:?}"
    );
    let section = problems("README.md", &format!("line\n{DOC}'s \"Pools\" say\n"));
    assert_eq!(section.len(), 1, "{section:?}");
    assert!(section[0].starts_with("README.md:2:"), "{section:?}");
    for ok in [
        "Results",
        "Results (JSON Lines)",
        "Exit status",
        "Contracts",
    ] {
        assert_eq!(
            problems("a.md", &format!("{DOC} \"{ok}\"")),
            Vec::<String>::new(),
            "{ok}"
        );
    }
    // Without docs/DESIGN.md in the tree, every citation of it is refused.
    let tree = Scratch::new(&[("a.md", "x")]);
    let none = problems_in(&tree.0, Path::new("a.md"), &format!("{DOC}\n"), None);
    assert_eq!(none.len(), 1, "{none:?}");
}

#[test]
fn paths_outside_the_repository_are_refused() {
    let shared = problems("README.md", &format!("the table in `{SHARED}/seeds`\n"));
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert!(shared[0].contains("outside the repository"), "{shared:?}");
    let machine = problems("a.toml", &format!("# in {MACHINE}notes/holes.md.\n"));
    assert_eq!(machine.len(), 1, "{machine:?}");
    assert!(machine[0].contains("notes/holes.md`"), "{machine:?}");
    // Not absolute: part of a longer relative path.
    assert_eq!(
        problems("a.md", &format!("x{MACHINE}y\n")),
        Vec::<String>::new()
    );
}

#[test]
fn a_walk_finds_the_files_of_a_tree_without_git() {
    let tree = Scratch::new(&[
        (DOC, DESIGN_TEXT),
        ("a/b.rs", &format!("// {NAME}\n")),
        ("target/c.rs", &format!("// {NAME}\n")),
    ]);
    let found = check_tree(&tree.0);
    // The bare citation in a/b.rs, not the one in target/.
    assert!(
        found.iter().any(|p| p.starts_with("a/b.rs:1:")),
        "{found:?}"
    );
    assert!(!found.iter().any(|p| p.contains("target")), "{found:?}");
    assert_eq!(found.len(), 1, "{found:?}");
}
