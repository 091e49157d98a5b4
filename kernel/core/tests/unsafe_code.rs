//! Where the hypervisor's `unsafe` may be: in `kernel/src/arch/` only (with the `smp` and
//! `cmem` crates), as `kernel/README.md` says. Everything above `arch` reaches the machine
//! through arch's safe functions, whose soundness arguments are written once, in arch.
//!
//! Outside `arch/`, a file may hold no `unsafe` block, `unsafe fn`, `unsafe impl`,
//! `unsafe trait` or `unsafe extern`; the one form allowed is the attribute
//! `#[unsafe(no_mangle)]` (or any `#[unsafe(...)]`) on the Rust functions the assembly calls.
//! [`NOT_YET_IN_ARCH`] lists the files that still hold some, each with what is left: the
//! list only shrinks, and a file listed that no longer needs it fails the test too.

use std::collections::BTreeMap;
use std::fs;

/// Files outside `arch/` that still hold `unsafe`, and what: to be moved behind arch's safe
/// functions. Remove an entry when its file is clean (the test says so).
const NOT_YET_IN_ARCH: &[(&str, &str)] = &[(
    "schedule/mod.rs",
    "`with_current` turning the per-CPU current pointers back into `&Vcpu` and `&Domain`, \
     `set_current` in the switch, and `Held`, the switch's pointer to the vCPU its policy \
     picked: arch keeps the pointers untyped, since it cannot name the domain layer's types",
)];

mod common;
use common::{rust_files, src};

/// `text` with comments, string literals and character literals blanked out (newlines
/// kept, so line numbers still match): only code is left to search.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // A raw string: r"..." or r#"..."#, any number of #.
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            out.extend(chars[i..j.min(chars.len())].iter().map(|&c| blank(c)));
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let skip = if chars[i] == '\\' { 2 } else { 1 };
                for _ in 0..skip {
                    if let Some(&c) = chars.get(i) {
                        out.push(blank(c));
                    }
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\''
            && (next == Some('\\') || (next.is_some() && chars.get(i + 2) == Some(&'\'')))
        {
            // A character literal ('x', '\n', '\''), not a lifetime.
            let mut j = i + 2;
            if next == Some('\\') {
                j += 1;
            }
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            out.extend(chars[i..=j.min(chars.len() - 1)].iter().map(|&c| blank(c)));
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && ident_char(chars[i - 1])
}

/// The 1-based lines of `text` where code uses `unsafe` other than as `#[unsafe(...)]`.
fn unsafe_lines(text: &str) -> Vec<usize> {
    let code = code_only(text);
    let mut lines = Vec::new();
    for (at, _) in code.match_indices("unsafe") {
        let before = code[..at].chars().next_back();
        let after = code[at + "unsafe".len()..].chars().next();
        if before.is_some_and(ident_char) || after.is_some_and(ident_char) {
            continue; // part of a longer word: `unsafe_code`, `is_unsafe`
        }
        let attribute = code[..at].trim_end().ends_with("#[")
            && code[at + "unsafe".len()..].trim_start().starts_with('(');
        if !attribute {
            lines.push(code[..at].matches('\n').count() + 1);
        }
    }
    lines
}

/// Every file under `kernel/src` outside `arch/` with `unsafe` in its code, and its lines.
fn unsafe_outside_arch() -> BTreeMap<String, Vec<usize>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = BTreeMap::new();
    for file in files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_str()
            .unwrap()
            .replace('\\', "/");
        if rel.starts_with("arch/") {
            continue;
        }
        let lines = unsafe_lines(&fs::read_to_string(&file).unwrap());
        if !lines.is_empty() {
            found.insert(rel, lines);
        }
    }
    found
}

#[test]
fn unsafe_code_lives_in_arch() {
    let found = unsafe_outside_arch();
    let listed: BTreeMap<&str, &str> = NOT_YET_IN_ARCH.iter().copied().collect();
    let mut wrong = Vec::new();
    for (file, lines) in &found {
        if !listed.contains_key(file.as_str()) {
            wrong.push(format!(
                "kernel/src/{file}: `unsafe` at line(s) {lines:?}; put it behind a safe \
                 function in kernel/src/arch/ (its SAFETY argument written there)"
            ));
        }
    }
    for file in listed.keys() {
        if !found.contains_key(*file) {
            wrong.push(format!(
                "kernel/src/{file} has no `unsafe` any more: remove it from NOT_YET_IN_ARCH"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe code outside kernel/src/arch/:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_finds_code_and_skips_comments_strings_and_attributes() {
    let text = r##"
//! `unsafe` in a doc comment
#[unsafe(no_mangle)]
extern "C" fn entry() {}
/* unsafe in /* a nested */ block comment, unsafe */
fn f() { let s = "unsafe { }"; let r = r#"unsafe"#; let c = '"'; }
fn g<'a>(x: &'a u8) -> u8 { unsafe { *(x as *const u8) } }
unsafe fn h() {}
unsafe impl Send for X {}
fn unsafe_free() { is_unsafe(); }
unsafe extern "C" { fn k(); }
"##;
    assert_eq!(unsafe_lines(text), [7, 8, 9, 11]);
}
