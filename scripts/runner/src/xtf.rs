//! The XTF-style hostile suite's expectations (scripts/experiments/xtf-*.toml, guests in
//! workloads/src/bin/hostile-{ring,pt,sched,pair,regs}.rs) and the reading of a run of it.
//!
//! Every case is a group of a spec, named after the case. A guest reports one of XTF's four
//! outcomes on the console (`[<domain>] xtf: <case>: SUCCESS|FAILURE|ERROR|SKIP: ...`, see
//! `workloads::xtf`) and ends accordingly; a case whose right ending is a kill says so only by
//! being killed. A case holds when its domains end as [`CASES`] says:
//! - [`Want::Success`]: the domain ended `ok` and printed `SUCCESS` (or `SKIP`, which is
//!   reported): `ok` alone is not enough, since a guest stuck in a call that never returns is
//!   `ok` too;
//! - [`Want::Killed`]: the domain was killed by the hypervisor, with a reason starting with the
//!   given text (never `crashed`, which is a guest's own FAILURE or ERROR exit).
//!
//! The bystanders (`by-cpu`, `by-lat`) must have progressed: the CPU hog did work, the latency
//! domain woke up at least [`MIN_WAKEUPS`] times in the interval (about 190 next to three CPU
//! hogs under TCG, 0 when a timer flood silenced it).

use abi::tool::results::{Record, Records};

/// What a case must end as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Ends `ok` with `SUCCESS` (or `SKIP`) on the console.
    Success,
    /// Killed by the hypervisor; the reason starts with this (empty: any reason).
    Killed(&'static str),
}

/// One case: its group name, what it must end as, and the group it runs with when run
/// alone (the first group of a pair; itself otherwise).
pub struct Case {
    pub group: &'static str,
    pub want: Want,
    pub unit: &'static str,
}

const fn ok(group: &'static str) -> Case {
    Case {
        group,
        want: Want::Success,
        unit: group,
    }
}

const fn killed(group: &'static str, reason: &'static str) -> Case {
    Case {
        group,
        want: Want::Killed(reason),
        unit: group,
    }
}

const fn with(group: &'static str, want: Want, unit: &'static str) -> Case {
    Case { group, want, unit }
}

/// Every case of the suite.
pub const CASES: &[Case] = &[
    // Ring transitions (xtf-ring, xtf-int).
    killed("compat-syscall", ""),
    killed("compat-ring0", ""),
    killed("compat-int80", ""),
    killed("iret-compat", ""),
    ok("nt-yield"),
    ok("nt-calls"),
    ok("flags"),
    ok("force-callback"),
    killed("tf", "exception 1 "),
    killed("sysret-null", ""),
    killed("sysret-block", ""),
    killed("int3", ""),
    killed("into", "exception 6 "),
    killed("icebp", "exception "),
    killed("swapgs", "privileged instruction"),
    killed("sysret", "privileged instruction"),
    // #GP on real CPUs; QEMU 7.2 pops the frame with a supervisor access, which SMAP refuses
    // with a page fault on the guest's stack (a legitimate ring-3 `iretq` dies the same way).
    killed("iret-ring0", ""),
    killed("iret-noncanonical", ""),
    killed("mov-dr7", "privileged instruction"),
    killed("mov-dr6", "privileged instruction"),
    killed("lgdt", "privileged instruction"),
    killed("lidt", "privileged instruction"),
    killed("ltr", "privileged instruction"),
    killed("sgdt", "privileged instruction"),
    killed("sidt", "privileged instruction"),
    killed("sldt", "privileged instruction"),
    killed("str", "privileged instruction"),
    killed("smsw", "privileged instruction"),
    ok("seg-loads"),
    killed("seg-bad", ""),
    killed("sysenter", ""),
    killed("upcall-unmapped", "bad event upcall"),
    killed("upcall-readonly", "bad event upcall"),
    killed("upcall-kernel", "bad event upcall"),
    // A non-canonical RSP is refused either way back to ring 3: by the upcall (no stack to
    // take the frame) or, when the interrupt that found it switched vCPUs first and the
    // event is not yet due, by the exit check (`exit_frame_ok`: bad return).
    killed("upcall-noncanonical", "bad "),
    killed("upcall-hypercall", "bad event upcall"),
    killed("upcall-idle", "bad event upcall"),
    killed("wrmsr", "privileged instruction"),
    killed("invlpg", "privileged instruction"),
    killed("tf-syscall", "exception 1 "),
    killed("tf-movss-syscall", "exception 1 "),
    killed("int", ""),
    // Page tables, hypercall arguments, fresh memory (xtf-mem).
    ok("pt-bits"),
    ok("pt-linear"),
    ok("pt-writable"),
    ok("pt-batch"),
    ok("pt-va0"),
    ok("hcall-numbers"),
    ok("hcall-pointers"),
    ok("hcall-lengths"),
    ok("fresh-frames"),
    with("dirty", Want::Success, "fresh-frames"),
    killed("stale-tlb", "page fault"),
    killed("tlb-retype-race", "page fault"),
    ok("unlink-race"),
    ok("validate-race"),
    killed("callback-return-wild", "bad event upcall"),
    killed("callback-return-noncanonical", "bad event upcall"),
    ok("callback-return-flags"),
    ok("args-edges"),
    ok("pt-bounded"),
    ok("pt-bypass"),
    ok("pt-hv-pages"),
    ok("pt-shared-image"),
    // Long operations (xtf-preempt; xtf-preempt-link, xtf-preempt-mem).
    ok("pt-preempt"),
    ok("pt-unlink"),
    ok("pt-teardown"),
    ok("pt-batch-link"),
    ok("mem-batch"),
    // Scheduler abuse, exhaustion, lifetimes (xtf-sched).
    ok("timer-storm"),
    ok("poll-after-fired"),
    ok("yield-storm"),
    ok("block-storm"),
    ok("exhaust-ports"),
    ok("exhaust-grants"),
    ok("exhaust-memory"),
    ok("virq-flood"),
    ok("timer-edges"),
    ok("console-flood"),
    ok("console-lines"),
    ok("console-bound"),
    // Grace periods beside a guest that never enters (xtf-grace).
    ok("spin-masked"),
    // Domain0's pause against the guest's own vCPU operations (xtf-pause).
    ok("pause-escape"),
    ok("shutdown-race"),
    killed("kill-race", "exception 6 "),
    ok("flood-a"),
    with("flood-b", Want::Success, "flood-a"),
    ok("port-aba-a"),
    with("port-aba-b", Want::Success, "port-aba-a"),
    ok("pending-aba-a"),
    with("pending-aba-b", Want::Success, "pending-aba-a"),
    killed("dying-bind-a", "exception 6 "),
    with("dying-bind-b", Want::Success, "dying-bind-a"),
    ok("grant-aba-a"),
    with("grant-aba-b", Want::Success, "grant-aba-a"),
    // What one domain leaves on a CPU (xtf-isolation).
    ok("sel-a"),
    with("sel-b", Want::Success, "sel-a"),
    ok("regs-filler"),
    with("regs-check", Want::Success, "regs-filler"),
    with("regs-hcall", Want::Success, "regs-filler"),
];

/// The groups of a spec that are not cases.
pub const BYSTANDERS: &[&str] = &["by-cpu", "by-lat"];

/// Fewest wake-ups of the latency bystander in the measured interval.
pub const MIN_WAKEUPS: u64 = 20;

/// The case of group `group`.
pub fn case(group: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.group == group)
}

/// How one domain of a case ended, read from its record and the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub domain: String,
    pub group: String,
    /// The record's `exit`.
    pub exit: String,
    /// The outcome word of its last `xtf:` line (SUCCESS, FAILURE, ERROR, SKIP), if any.
    pub said: Option<String>,
    /// Whether this is what the case must end as.
    pub held: bool,
    /// Why not, or a note (SKIP).
    pub why: String,
}

/// The outcome word of domain `name`'s last `xtf:` console line, with the line.
///
/// Only a line the domain wrote itself counts: the hypervisor logs a domain's console output
/// as `[time] cpuN INFO  [name] text`, so the tag must open the message (the text after the
/// first ` INFO  `; a line without one is taken whole). Anywhere in the line, a hostile
/// domain that printed `[victim0] xtf: case: SUCCESS` would have written its neighbour's
/// verdict, and a neighbour it had left stuck, never reporting, would have passed.
fn last_word<'a>(console: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let tag = format!("[{name}] xtf: ");
    console.lines().rev().find_map(|line| {
        let message = line.split_once(" INFO  ").map_or(line, |(_, m)| m);
        let rest = message.strip_prefix(tag.as_str())?;
        // `<case>: <WORD>: <detail>`
        let mut parts = rest.splitn(3, ": ");
        let _case = parts.next()?;
        let word = parts.next()?;
        ["SUCCESS", "FAILURE", "ERROR", "SKIP"]
            .contains(&word)
            .then_some((word, rest))
    })
}

/// Numbered lines `console-bound` writes (`cb 000` ..; `hostile-sched`'s case 14).
pub const CONSOLE_BOUND_LINES: usize = 40;

/// The first console line whose domain text (after `[name] `) holds a control character
/// other than tab: the hypervisor shows them escaped (`abi::hypercall::console_text`), so a
/// guest cannot drive the terminal of whoever reads the console (`console-bound` writes CSI,
/// OSC, C1 CSI, backspace and DEL).
pub fn control_in_guest_text(console: &str) -> Option<&str> {
    console.lines().find(|line| {
        let message = line.split_once(" INFO  ").map_or("", |(_, m)| m);
        message.starts_with('[') && message.chars().any(|c| c.is_control() && c != '\t')
    })
}

/// `console-bound`'s numbered lines from domain `name` came all, in order, once each.
fn numbered_in_order(console: &str, name: &str) -> Result<(), String> {
    let tag = format!("[{name}] cb ");
    let got: Vec<&str> = console
        .lines()
        .filter_map(|line| {
            let message = line.split_once(" INFO  ").map_or(line, |(_, m)| m);
            message.strip_prefix(tag.as_str())
        })
        .collect();
    let want: Vec<String> = (0..CONSOLE_BOUND_LINES)
        .map(|i| format!("{i:03}"))
        .collect();
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "its numbered lines came as {got:?}, not 000..{:03} in order",
            CONSOLE_BOUND_LINES - 1
        ))
    }
}

/// How every case domain of a run ended (bystanders left out); an error for a group that is
/// neither a case nor a bystander.
pub fn outcomes(records: &[Record], console: &str) -> Result<Vec<Outcome>, String> {
    let mut out = Vec::new();
    for d in records.domains() {
        let group = d.group.as_str();
        if BYSTANDERS.contains(&group) {
            continue;
        }
        let c = case(group).ok_or(format!("group `{group}` is not a case of the suite"))?;
        let name = d.name.clone();
        let exit = d.exit.to_string();
        let said = last_word(console, &name);
        let (held, why) = match c.want {
            Want::Success => match (exit.as_str(), said) {
                ("ok", Some(("SUCCESS", _))) => (true, String::new()),
                ("ok", Some(("SKIP", line))) => (true, format!("skipped: {line}")),
                ("ok", None) => (false, "ended ok but never reported (stuck?)".into()),
                (_, Some((_, line))) => (false, format!("ended `{exit}`: {line}")),
                (_, None) => (false, format!("ended `{exit}`")),
            },
            Want::Killed(reason) => {
                let want = format!("killed: {reason}");
                if let Some(("FAILURE", line)) = said {
                    // Killed, but it ran on to say what it did after the act that must
                    // kill it (`upcall-idle`: a vCPU the idle loop entered although entering
                    // its upcall had just killed its domain, which then made a hypercall).
                    (false, format!("ended `{exit}`, but first said: {line}"))
                } else if exit.starts_with(&want) && !exit.starts_with("killed: crashed") {
                    (true, String::new())
                } else {
                    let line = said.map_or(String::new(), |(_, l)| format!(": {l}"));
                    (false, format!("ended `{exit}`, expected `{want}...`{line}"))
                }
            }
        };
        let (held, why) = match numbered_in_order(console, &name) {
            Err(e) if held && group == "console-bound" => (false, e),
            _ => (held, why),
        };
        out.push(Outcome {
            domain: name,
            group: group.to_string(),
            exit,
            said: said.map(|(w, _)| w.to_string()),
            held,
            why,
        });
    }
    Ok(out)
}

/// The bystanders progressed: the CPU hog did work, the latency domain woke up.
pub fn bystanders_progressed(records: &[Record]) -> Result<String, String> {
    let mut note = Vec::new();
    for d in records.domains() {
        match d.group.as_str() {
            "by-cpu" if d.work == 0 => {
                return Err(format!("the CPU bystander {} did no work", d.name));
            }
            "by-cpu" => note.push(format!("by-cpu work {}", d.work)),
            "by-lat" if d.wakeups < MIN_WAKEUPS => {
                return Err(format!(
                    "the latency bystander {} woke up {} times, fewer than {MIN_WAKEUPS}",
                    d.name, d.wakeups
                ));
            }
            "by-lat" => note.push(format!("by-lat {} wake-ups", d.wakeups)),
            _ => {}
        }
    }
    Ok(note.join(", "))
}

/// Every case of a run ended as it must and the bystanders progressed; the note says how
/// many held and which were skipped.
pub fn verdict(records: &[Record], console: &str) -> Result<String, String> {
    let all = outcomes(records, console)?;
    if all.is_empty() {
        return Err("no case has a record: the run stopped before Domain0 wrote them".into());
    }
    let wrong: Vec<String> = all
        .iter()
        .filter(|o| !o.held)
        .map(|o| format!("{}: {}", o.domain, o.why))
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "{} of {} cases wrong: {}",
            wrong.len(),
            all.len(),
            wrong.join("; ")
        ));
    }
    if let Some(line) = control_in_guest_text(console) {
        return Err(format!(
            "a domain's text reached the console with control characters: {line:?}"
        ));
    }
    let by = bystanders_progressed(records)?;
    let skipped = all
        .iter()
        .filter(|o| o.said.as_deref() == Some("SKIP"))
        .count();
    Ok(format!(
        "{} cases held ({skipped} skipped); {by}",
        all.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::tool::results;

    fn rec(name: &str, group: &str, exit: &str) -> Record {
        let exit = match exit.strip_prefix("killed: ") {
            Some(why) => results::Outcome::Killed(why.into()),
            None => results::Outcome::Ok,
        };
        Record::Domain(results::Domain {
            id: 1,
            name: name.into(),
            group: group.into(),
            workload: "hostile-ring".into(),
            vcpus: 1,
            weight: 256,
            cap: 0,
            cpu_ns: 1000,
            wait_ns: 0,
            work: 5,
            wakeups: 100,
            wake_lat_p50_ns: 0,
            wake_lat_p99_ns: 0,
            wake_lat_max_ns: 0,
            switches: 1,
            migrations: 0,
            exit,
            pool: None,
            wake_lat_hist: None,
            timer_deadline_ns: None,
        })
    }

    #[test]
    fn success_needs_the_console_line() {
        let r = [rec("nt-yield0", "nt-yield", "ok")];
        let o = outcomes(&r, "").unwrap();
        assert!(!o[0].held, "ok without SUCCESS is a stuck guest");
        let console = "[ 0.1] cpu0 INFO  [nt-yield0] xtf: nt-yield: SUCCESS: 2 checks held\n";
        assert!(outcomes(&r, console).unwrap()[0].held);
        let console = "[nt-yield0] xtf: nt-yield: FAILURE: 1 of 2 checks went wrong\n";
        assert!(!outcomes(&r, console).unwrap()[0].held);
        // Another domain's line does not count.
        let console = "[nt-yield1] xtf: nt-yield: SUCCESS: 2 checks held\n";
        assert!(!outcomes(&r, console).unwrap()[0].held);
    }

    #[test]
    fn a_kill_after_a_failure_line_is_no_success() {
        let r = [rec(
            "upcall-idle0",
            "upcall-idle",
            "killed: bad event upcall (rip 0x1)",
        )];
        let console = "[ 0.1] cpu0 INFO  [upcall-idle0] xtf: upcall-idle: expecting to be \
                       killed: bad event upcall\n";
        assert!(outcomes(&r, console).unwrap()[0].held);
        // The killed vCPU ran on and said so before the reschedule took it off its CPU.
        let console = format!(
            "{console}[ 0.2] cpu0 INFO  [upcall-idle0] xtf: upcall-idle: FAILURE: ran after \
             the upcall was due\n"
        );
        assert!(!outcomes(&r, &console).unwrap()[0].held);
    }

    #[test]
    fn a_domain_cannot_write_another_domains_verdict() {
        let r = [rec("nt-yield0", "nt-yield", "ok")];
        // What the hypervisor logs when domain `evil0` writes the victim's line to its own
        // console: the victim never reported (stuck), and must not pass.
        for forged in [
            "[ 0.2] cpu1 INFO  [evil0] [nt-yield0] xtf: nt-yield: SUCCESS: forged\n",
            "[ 0.2] cpu1 INFO  [evil0] x INFO  [nt-yield0] xtf: nt-yield: SUCCESS: forged\n",
        ] {
            assert!(!outcomes(&r, forged).unwrap()[0].held, "{forged}");
        }
        // Nor override the victim's own FAILURE after it.
        let console = "[ 0.1] cpu0 INFO  [nt-yield0] xtf: nt-yield: FAILURE: 1 of 2 checks went wrong\n\
                       [ 0.2] cpu1 INFO  [evil0] [nt-yield0] xtf: nt-yield: SUCCESS: forged\n";
        let o = outcomes(&r, console).unwrap();
        assert_eq!(o[0].said.as_deref(), Some("FAILURE"));
        assert!(!o[0].held);
    }

    #[test]
    fn kills_need_the_reason_and_never_a_crash() {
        let o = |exit: &str| outcomes(&[rec("tf0", "tf", exit)], "").unwrap()[0].held;
        assert!(o("killed: exception 1 at 0x401000"));
        assert!(!o("killed: exception 13 at 0x401000"));
        assert!(!o("ok"));
        let any = |exit: &str| outcomes(&[rec("int7", "int", exit)], "").unwrap()[0].held;
        assert!(any("killed: privileged instruction at 0x40"));
        assert!(!any("killed: crashed (shutdown code 2)"));
    }

    #[test]
    fn unknown_groups_and_silent_bystanders_fail() {
        assert!(outcomes(&[rec("x0", "x", "ok")], "").is_err());
        let mut lat = rec("by-lat0", "by-lat", "ok");
        if let Record::Domain(d) = &mut lat {
            d.wakeups = 0;
        }
        assert!(bystanders_progressed(&[lat]).is_err());
        assert!(bystanders_progressed(&[rec("by-lat0", "by-lat", "ok")]).is_ok());
    }

    #[test]
    fn guest_text_with_controls_and_numbered_lines_out_of_order_fail() {
        let ok = "[    1.000000] cpu0 INFO  [d] tab\there \\x1b[2J";
        assert_eq!(control_in_guest_text(ok), None);
        let bad = "[    1.000000] cpu0 INFO  [d] \u{1b}[2J";
        assert_eq!(control_in_guest_text(&format!("{ok}\n{bad}")), Some(bad));
        let c1 = "[    1.000000] cpu0 INFO  [d] \u{9b}31m";
        assert_eq!(control_in_guest_text(c1), Some(c1));
        let lines = |order: &[usize]| -> String {
            order
                .iter()
                .map(|i| format!("[    1.0] cpu0 INFO  [cb] cb {i:03}\n"))
                .collect()
        };
        let all: Vec<usize> = (0..CONSOLE_BOUND_LINES).collect();
        assert_eq!(numbered_in_order(&lines(&all), "cb"), Ok(()));
        let mut swapped = all.clone();
        swapped.swap(3, 4);
        assert!(numbered_in_order(&lines(&swapped), "cb").is_err());
        assert!(numbered_in_order(&lines(&all[1..]), "cb").is_err());
    }

    #[test]
    fn every_case_is_named_once_and_units_are_cases() {
        for (i, c) in CASES.iter().enumerate() {
            assert!(
                CASES[..i].iter().all(|d| d.group != c.group),
                "{} twice",
                c.group
            );
            assert!(
                case(c.unit).is_some(),
                "{}: unit {} is no case",
                c.group,
                c.unit
            );
        }
    }
}
