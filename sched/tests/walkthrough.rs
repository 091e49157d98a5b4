//! README.md's walkthrough writes `src/stride.rs` from an empty file: its code blocks, in
//! order, must be that file (blank lines aside), so the text cannot drift from the code that
//! the property tests run. And the policy it writes must be registered, which is all it
//! takes for `tests/properties.rs`, the hammer test, `schedsim` and the hypervisor to run it.

use sched::registry;

const README: &str = include_str!("../README.md");
const STRIDE: &str = include_str!("../src/stride.rs");
const BEGIN: &str = "<!-- walkthrough: src/stride.rs -->";
const END: &str = "<!-- end of walkthrough -->";

/// The lines of the ```rust blocks between the walkthrough's markers, in order.
fn walkthrough_code() -> Vec<&'static str> {
    let start = README.find(BEGIN).expect("README.md has the walkthrough's start marker");
    let end = README[start..].find(END).expect("and its end marker") + start;
    let mut code = Vec::new();
    let mut inside = false;
    for line in README[start..end].lines() {
        match (inside, line.trim_end()) {
            (false, "```rust") => inside = true,
            (true, "```") => inside = false,
            (true, l) => code.push(l),
            _ => {}
        }
    }
    assert!(!inside, "a code block of the walkthrough is not closed");
    code
}

fn non_blank(lines: impl IntoIterator<Item = &'static str>) -> Vec<&'static str> {
    lines.into_iter().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn the_walkthrough_is_stride_rs_in_full() {
    let readme = non_blank(walkthrough_code());
    let file = non_blank(STRIDE.lines());
    for (i, (r, f)) in readme.iter().zip(&file).enumerate() {
        assert_eq!(r, f, "line {} of the walkthrough's code differs from src/stride.rs", i + 1);
    }
    assert_eq!(readme.len(), file.len(), "the walkthrough and src/stride.rs differ in length");
}

#[test]
fn the_policy_it_writes_is_registered() {
    let info = registry::info("stride").expect("stride is in the register! list");
    assert!(info.preempts);
    assert!(info.domain_param("weight").is_some(), "the property tests weigh it by `weight`");
    assert!(info.domain_param("lag_us").is_some());
}
