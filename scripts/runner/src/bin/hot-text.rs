//! `hot-text LINKER_SCRIPT MAP`: checks the hot-code list at the head of `.text` in the
//! hypervisor's linker script (`kernel/linker.ld`) against the linker's map of the built
//! hypervisor (`target/release/domino.map`, written by `kernel/build.rs` beside the binary).
//!
//! The list names functions by section-name patterns (`.text.<mangled name>`, any hash). A
//! renamed, removed or now inlined function leaves its pattern matching nothing, and the
//! image stays correct but the switch path spreads over more code pages again: silently. So
//! each pattern must take at least one input section of the map, and the sections the list
//! takes must end within the first `HOT_TEXT_PAGES` pages of `.text` (the bound the linker
//! script declares). Patterns are matched as the linker does: in order, the first pattern
//! matching a section takes it, with `*` and `?` as in fnmatch.
//!
//! Exit status: 0 the list is live and small, 1 a pattern matched nothing or the list is
//! too large, 2 bad arguments or an unreadable, unparsable or stale input.

use std::path::Path;
use std::process::ExitCode;

/// One pattern of the hot list, with the linker-script line it came from.
struct Pattern {
    glob: String,
    line: usize,
}

/// The hot list (every pattern of `.text`'s input-section statements before the catch-all
/// `*(.text .text.*)`) and the declared bound `HOT_TEXT_PAGES = N;`.
fn parse_script(text: &str) -> Result<(Vec<Pattern>, u64), String> {
    let mut pages = None;
    let mut patterns = Vec::new();
    let mut in_text = false;
    let mut done = false;
    let mut in_comment = false;
    for (i, raw) in text.lines().enumerate() {
        // Drop comments (they may span lines).
        let mut line = String::new();
        let mut rest = raw;
        loop {
            if in_comment {
                match rest.find("*/") {
                    Some(end) => {
                        rest = &rest[end + 2..];
                        in_comment = false;
                    }
                    None => break,
                }
            } else {
                match rest.find("/*") {
                    Some(start) => {
                        line.push_str(&rest[..start]);
                        rest = &rest[start + 2..];
                        in_comment = true;
                    }
                    None => {
                        line.push_str(rest);
                        break;
                    }
                }
            }
        }
        let line = line.trim();
        if let Some(v) = line.strip_prefix("HOT_TEXT_PAGES") {
            let v = v
                .trim()
                .trim_start_matches('=')
                .trim()
                .trim_end_matches(';')
                .trim();
            pages = Some(v.parse::<u64>().map_err(|_| {
                format!(
                    "line {}: HOT_TEXT_PAGES must be a whole number of pages, not {v:?}",
                    i + 1
                )
            })?);
        }
        if line.starts_with(".text :") || line.starts_with(".text:") {
            in_text = true;
            continue;
        }
        if !in_text || done {
            continue;
        }
        if line.starts_with('}') {
            return Err(format!(
                "line {}: `.text` ends without the catch-all `*(.text .text.*)`",
                i + 1
            ));
        }
        let Some(inner) = line.strip_prefix("*(").and_then(|l| l.strip_suffix(')')) else {
            continue;
        };
        let globs: Vec<&str> = inner.split_whitespace().collect();
        if globs.contains(&".text") {
            done = true;
            continue;
        }
        for g in globs {
            if g.contains('[') {
                return Err(format!(
                    "line {}: pattern {g}: only `*` and `?` are understood here",
                    i + 1
                ));
            }
            patterns.push(Pattern {
                glob: g.to_string(),
                line: i + 1,
            });
        }
    }
    if !done {
        return Err("no `.text : { ... *(.text .text.*) }` statement found".into());
    }
    if patterns.is_empty() {
        return Err("the hot list before `*(.text .text.*)` is empty".into());
    }
    let pages =
        pages.ok_or("no `HOT_TEXT_PAGES = N;` declared (the bound on the hot list's size)")?;
    Ok((patterns, pages))
}

/// An input section the map places in `.text`.
struct Section {
    name: String,
    addr: u64,
    size: u64,
}

/// `.text`'s address and its input sections in a map written by lld (`-Map`): rows of
/// `VMA LMA Size Align` then the output section, an input section `file:(name)` or a symbol.
fn parse_map(text: &str) -> Result<(u64, Vec<Section>), String> {
    let mut start = None;
    let mut sections = Vec::new();
    for (i, row) in text.lines().enumerate().skip(1) {
        let mut fields = row.split_whitespace();
        let (Some(vma), Some(_lma), Some(size), Some(_align)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let rest: Vec<&str> = fields.collect();
        let rest = rest.join(" ");
        let hex = |s: &str| {
            u64::from_str_radix(s, 16).map_err(|_| format!("map line {}: {s:?} is not hex", i + 1))
        };
        if start.is_none() {
            if rest == ".text" {
                start = Some(hex(vma)?);
            }
            continue;
        }
        if let Some(open) = rest.rfind(":(")
            && rest.ends_with(')')
        {
            sections.push(Section {
                name: rest[open + 2..rest.len() - 1].to_string(),
                addr: hex(vma)?,
                size: hex(size)?,
            });
            continue;
        }
        // The next output section (not an assignment like `. = ALIGN(4096)`).
        if rest.starts_with('.') && !rest.contains('=') {
            break;
        }
    }
    let start = start.ok_or("no output section `.text` in the map")?;
    if sections.is_empty() {
        return Err("the map's `.text` has no input sections".into());
    }
    Ok((start, sections))
}

/// fnmatch without classes: `*` any run, `?` any one character.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 || args.iter().any(|a| a.starts_with('-')) {
        eprintln!(
            "usage: hot-text LINKER_SCRIPT MAP   (e.g. kernel/linker.ld target/release/domino.map)"
        );
        return ExitCode::from(2);
    }
    let (script_path, map_path) = (Path::new(&args[0]), Path::new(&args[1]));
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let parsed = read(script_path)
        .and_then(|s| parse_script(&s).map_err(|e| format!("{}: {e}", script_path.display())))
        .and_then(|(pats, pages)| {
            let map = read(map_path)?;
            let (start, secs) =
                parse_map(&map).map_err(|e| format!("{}: {e}", map_path.display()))?;
            Ok((pats, pages, start, secs))
        });
    let (patterns, pages, start, sections) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("hot-text: {e}");
            return ExitCode::from(2);
        }
    };
    // The map must be the link of the binary beside it, not an older one (the linker writes
    // the map just before the binary: allow it a few seconds).
    let binary = map_path.with_extension("");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(mt), Some(bt)) = (modified(map_path), modified(&binary))
        && mt + std::time::Duration::from_secs(10) < bt
    {
        eprintln!(
            "hot-text: {} is older than {}: rebuild the kernel (cargo build --release -p kernel)",
            map_path.display(),
            binary.display()
        );
        return ExitCode::from(2);
    }

    // As the linker: each section goes to the first pattern that matches it.
    let mut taken = vec![0usize; patterns.len()];
    let mut end = start;
    for s in &sections {
        if let Some(k) = patterns
            .iter()
            .position(|p| glob(p.glob.as_bytes(), s.name.as_bytes()))
        {
            taken[k] += 1;
            end = end.max(s.addr + s.size);
        }
    }
    let mut bad = false;
    for (p, &n) in patterns.iter().zip(&taken) {
        if n == 0 {
            eprintln!(
                "hot-text: {}:{}: pattern {} matches no section of {}'s .text (renamed, removed or inlined? \
                 fix the pattern or drop it)",
                script_path.display(),
                p.line,
                p.glob,
                map_path.display()
            );
            bad = true;
        }
    }
    let used = end - start;
    let used_pages = used.div_ceil(4096);
    if used_pages > pages {
        eprintln!(
            "hot-text: the hot list takes {used:#x} bytes ({used_pages} pages) of .text, more than \
             HOT_TEXT_PAGES = {pages} in {}",
            script_path.display()
        );
        bad = true;
    }
    let total: usize = taken.iter().sum();
    println!(
        "hot-text: {} patterns took {} sections; the list ends {used:#x} bytes into .text ({used_pages} pages, at most {pages})",
        patterns.len(),
        total
    );
    if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_as_fnmatch() {
        assert!(glob(
            b".text._ZN6domino4trap5leave17h*",
            b".text._ZN6domino4trap5leave17habcE"
        ));
        assert!(!glob(
            b".text._ZN6domino4trap5leave17h*",
            b".text._ZN6domino4trap6leaves17habcE"
        ));
        assert!(glob(
            b".text.*sched..rr..RoundRobin*8schedule17h*",
            b".text._ZN5_$LT$sched..rr..RoundRobin$GT$8schedule17h1E"
        ));
        assert!(glob(b".text.mem?py", b".text.memcpy"));
        assert!(!glob(b".text.memcpy", b".text.memcpy2"));
    }
}
