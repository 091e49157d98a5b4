//! Reading the hypervisor's serial console: log lines for people, `@domino ` lines that
//! carry one JSON results record each (the protocol in `abi::tool::console`); and what the
//! runner shows of them, like `xentop` rather than a log: a progress line while the machine
//! boots, creates and measures ([`Progress`], [`progress_text`]), each timeline event as it
//! is applied, then one line per group ([`group_lines`]). Raw records and the hypervisor's
//! own log lines are shown only with `--verbose`; the results file holds every record.

use std::io::Write as _;

use abi::tool::console::{RECORD_PREFIX, TRACE_PREFIX};
use abi::tool::results::{Domain, Phase, Record, Records};

use crate::results::{human_bound_ns, human_ns};

/// One line of serial output, with every `\r` removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A log line, shown to the user as it arrives.
    Log(String),
    /// The JSON after the record prefix, copied verbatim into the results file.
    Record(String),
    /// One scheduling-trace event (after the trace prefix), for `--trace`.
    Trace(String),
}

/// Classifies one raw serial line (without its `\n`). The serial port carries bytes, not
/// UTF-8, so stray bytes (a garbled character during reset) are replaced, not fatal.
pub fn classify(raw: &[u8]) -> Line {
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|&c| c != '\r')
        .collect();
    if let Some(json) = text.strip_prefix(RECORD_PREFIX) {
        Line::Record(json.to_string())
    } else if let Some(event) = text.strip_prefix(TRACE_PREFIX) {
        Line::Trace(event.to_string())
    } else {
        Line::Log(text)
    }
}

/// Whether a log line is shown without `--verbose`: warnings and errors, and the lines
/// domains write to their console (Domain0's included), which the hypervisor logs as
/// `[name] text`; not the hypervisor's own information lines.
pub fn shown_by_default(line: &str) -> bool {
    if line.contains(" WARN ") || line.contains(" ERROR ") {
        return true;
    }
    match line.split_once(" INFO  ") {
        Some((_, message)) => message.starts_with('['),
        None => true, // not the hypervisor's log format: say it
    }
}

/// The progress line: rewritten in place on a terminal, one line per change otherwise.
pub struct Progress {
    tty: bool,
    shown: Option<String>,
}

impl Progress {
    /// `tty`: whether standard output is a terminal.
    pub fn new(tty: bool) -> Self {
        Progress { tty, shown: None }
    }

    /// Shows `text` as the progress.
    pub fn show(&mut self, text: String) {
        if self.shown.as_deref() == Some(&text) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[K{text}");
            let _ = out.flush();
        } else {
            let _ = writeln!(out, "{text}");
        }
        self.shown = Some(text);
    }

    /// Prints a line of its own above the progress line.
    pub fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.tty && self.shown.is_some() {
            let _ = write!(out, "\r\x1b[K");
        }
        let _ = writeln!(out, "{text}");
        if self.tty
            && let Some(p) = &self.shown
        {
            let _ = write!(out, "{p}");
            let _ = out.flush();
        }
    }

    /// Ends the progress line (before the summary).
    pub fn finish(&mut self) {
        if self.tty && self.shown.take().is_some() {
            println!();
        }
    }
}

/// What a record changes in the progress line, if anything: the boot, the domains created,
/// the interval measured, the records written.
pub fn progress_text(r: &Record) -> Option<String> {
    Some(match r {
        Record::Boot(b) => format!(
            "booted: {} CPUs online in {}",
            b.cpus_online,
            human_ns(b.boot_ns)
        ),
        Record::Progress(p) => match p.phase {
            Phase::Create => format!("creating domains: {} of {}", p.done, p.total),
            Phase::Measure => format!(
                "measuring: {:.1} of {:.1} s",
                p.done as f64 / 1000.0,
                p.total as f64 / 1000.0
            ),
        },
        Record::Run(run) => format!(
            "measured {}; Domain0 writes the records",
            human_ns(run.duration_ns)
        ),
        _ => return None,
    })
}

/// A timeline `event` record as a line of its own, if `r` is one.
pub fn event_line(r: &Record) -> Option<String> {
    let Record::Event(e) = r else { return None };
    let when = match e.applied_ns {
        Some(at) => format!(
            "applied at {:.3} s ({} late)",
            at as f64 / 1e9,
            human_ns(at.saturating_sub(e.at_ns))
        ),
        None => "never applied".into(),
    };
    let outcome = match (&e.error, e.ok) {
        (_, true) => "ok".to_string(),
        (Some(why), false) => format!("FAILED: {why}"),
        (None, false) => "FAILED".to_string(),
    };
    Some(format!(
        "event at {:.3} s: {} {}: {outcome}, {when}",
        e.at_ns as f64 / 1e9,
        e.target,
        e.what
    ))
}

/// The `p`-th fraction (0..=1) of a `wake_lat_hist`: the upper bound of the bucket that
/// holds it; `None` for an empty histogram.
pub fn hist_percentile(hist: &[(u64, u64)], p: f64) -> Option<u64> {
    let total: u64 = hist.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    hist.iter().find_map(|&(upper, n)| {
        seen += n;
        (seen >= rank).then_some(upper)
    })
}

/// Domains shown at each end of a group larger than this.
const TOP: usize = 3;
const LARGE_GROUP: usize = 8;

/// After the run, like `xentop`: one line per group (its domains' share of the guests' CPU
/// time against the weighted max-min fair target of its `cpu` domains, Jain's index of CPU
/// time / weight within it, wake-up p50/p99 from the merged histograms, how its domains
/// ended), the top and bottom domains of a large group, and Jain's index per window.
/// `weighted`: whether the policy has weights.
pub fn group_lines(records: &[Record], weighted: bool) -> Vec<String> {
    let domains: Vec<&Domain> = records.domains().collect();
    let total: u64 = domains.iter().map(|d| d.cpu_ns).sum();
    let weight = |d: &Domain| {
        if weighted {
            d.weight.max(1) as f64
        } else {
            1.0
        }
    };
    // The fair target of each cpu domain, out of what the cpu domains got (of its pool, when
    // the run has pools: each pool's CPUs are shared among its own domains, under its own
    // policy's weights or none). A domain moved or a policy replaced during the run has no
    // single target: none is shown then.
    let duration = records.run().map_or(0, |r| r.duration_ns) as f64;
    let pools = records
        .run()
        .and_then(|r| r.pools.as_deref())
        .unwrap_or(&[]);
    let changed = records.iter().any(|r| {
        matches!(r, Record::Event(e) if e.what.starts_with("move_to") || e.what.starts_with("policy"))
    });
    let cpu: Vec<&&Domain> = domains.iter().filter(|d| d.workload == "cpu").collect();
    let mut targets = vec![f64::NAN; cpu.len()];
    let pool_names: Vec<Option<&str>> = if pools.is_empty() {
        vec![None]
    } else {
        pools.iter().map(|p| Some(p.name.as_str())).collect()
    };
    for (k, pool) in pool_names.iter().enumerate() {
        let members: Vec<usize> = (0..cpu.len())
            .filter(|&i| pool.is_none() || cpu[i].pool.as_deref() == *pool)
            .collect();
        let pool_weighted = match pools.get(k) {
            Some(p) => sched::registry::info(&p.policy)
                .is_ok_and(|info| info.domain_param("weight").is_some()),
            None => weighted,
        };
        let w = |d: &Domain| {
            if pool_weighted {
                d.weight.max(1) as f64
            } else {
                1.0
            }
        };
        // A pool's part of what the cpu domains got: its part of the pools' CPUs.
        let cpu_total: f64 = cpu.iter().map(|d| d.cpu_ns as f64).sum();
        let pool_total = match pools.get(k) {
            Some(p) => {
                let all: usize = pools.iter().map(|q| q.cpus.len()).sum();
                cpu_total * p.cpus.len() as f64 / all.max(1) as f64
            }
            None => cpu_total,
        };
        let shares = sched::summary::fair_shares(
            pool_total,
            &members.iter().map(|&i| w(cpu[i])).collect::<Vec<_>>(),
            &members
                .iter()
                .map(|&i| {
                    let d = cpu[i];
                    let cpus = f64::from(d.vcpus);
                    let cap = if d.cap > 0 {
                        d.cap as f64 / 100.0
                    } else {
                        cpus
                    };
                    cpus.min(cap) * duration
                })
                .collect::<Vec<_>>(),
        );
        for (&i, t) in members.iter().zip(shares) {
            targets[i] = t;
        }
    }
    let targets: Vec<f64> = if changed {
        vec![f64::NAN; cpu.len()]
    } else {
        targets
    };
    let target_of = |d: &Domain| {
        cpu.iter()
            .position(|c| std::ptr::eq(**c, d))
            .map(|i| targets[i])
            .filter(|t| !t.is_nan())
    };
    let pct = |ns: f64| {
        if total > 0 {
            100.0 * ns / total as f64
        } else {
            0.0
        }
    };
    let mut groups: Vec<(&str, Vec<&Domain>)> = Vec::new();
    for d in &domains {
        match groups.iter_mut().find(|(g, _)| *g == d.group) {
            Some((_, ds)) => ds.push(d),
            None => groups.push((&d.group, vec![d])),
        }
    }
    let mut out = Vec::new();
    for (name, ds) in &groups {
        let cpu_ns: u64 = ds.iter().map(|d| d.cpu_ns).sum();
        let mut line = format!(
            "group {name}: {} × {}, {:.1}% of guest CPU time",
            ds.len(),
            ds[0].workload,
            pct(cpu_ns as f64)
        );
        let target: Option<f64> = ds.iter().map(|d| target_of(d)).sum();
        if let Some(t) = target {
            line += &format!(" (target {:.1}%)", pct(t));
        }
        let x: Vec<f64> = ds.iter().map(|d| d.cpu_ns as f64 / weight(d)).collect();
        if ds.len() > 1 {
            line += &format!(", Jain {:.4}", sched::windows::jain(&x));
        }
        let mut hist: Vec<(u64, u64)> = Vec::new();
        for d in ds {
            for &(upper, n) in d.wake_lat_hist.iter().flatten() {
                match hist.iter_mut().find(|(u, _)| *u == upper) {
                    Some((_, m)) => *m += n,
                    None => hist.push((upper, n)),
                }
            }
        }
        hist.sort_unstable();
        let wakeups: u64 = ds.iter().map(|d| d.wakeups).sum();
        match (hist_percentile(&hist, 0.5), hist_percentile(&hist, 0.99)) {
            (Some(p50), Some(p99)) => {
                line += &format!(
                    ", wake-up p50 < {}, p99 < {}",
                    human_bound_ns(p50),
                    human_bound_ns(p99)
                )
            }
            _ if wakeups > 0 => {
                let p99 = ds.iter().map(|d| d.wake_lat_p99_ns).max().unwrap_or(0);
                line += &format!(", wake-up p99 {} (worst domain)", human_ns(p99));
            }
            _ => {}
        }
        let killed: Vec<&Domain> = ds.iter().copied().filter(|d| !d.exit.is_ok()).collect();
        match killed.first() {
            None => line += ", all ok",
            Some(first) => line += &format!(", {} of {} {}", killed.len(), ds.len(), first.exit),
        }
        out.push(line);
        if ds.len() > LARGE_GROUP {
            let mut by: Vec<&Domain> = ds.clone();
            by.sort_by(|a, b| {
                (b.cpu_ns as f64 / weight(b)).total_cmp(&(a.cpu_ns as f64 / weight(a)))
            });
            let show = |ds: &[&Domain]| {
                ds.iter()
                    .map(|d| format!("{} {:.2}%", d.name, pct(d.cpu_ns as f64)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(format!(
                "  top {}; bottom {}",
                show(&by[..TOP]),
                show(&by[by.len() - TOP..])
            ));
        }
    }
    // The summary's, when there is one: it leaves Jain per window out over an interval whose
    // timeline events changed who competed (`sched::summary::of_run`).
    let jain = match records.summary() {
        Some(s) => s.window_jain.clone().unwrap_or_default(),
        None => sched::windows::window_jain(records, weighted),
    };
    if !jain.is_empty() {
        let mut sorted = jain.clone();
        sorted.sort_by(f64::total_cmp);
        let windows = sched::windows::by_window(records);
        out.push(format!(
            "windows: {} to {}; Jain per window (cpu domains) min {:.4}, median {:.4}, max {:.4}",
            windows.len(),
            human_ns(windows.last().map_or(0, |w| w.0)),
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_logs() {
        assert_eq!(
            classify(b"@domino {\"kind\":\"boot\"}\r"),
            Line::Record("{\"kind\":\"boot\"}".into())
        );
        assert_eq!(
            classify(b"[0 0.001] hello\r"),
            Line::Log("[0 0.001] hello".into())
        );
        // The prefix counts only at the start of a line.
        assert_eq!(classify(b"x @domino {}"), Line::Log("x @domino {}".into()));
        assert_eq!(classify(b"\xff ok"), Line::Log("\u{fffd} ok".into()));
    }

    #[test]
    fn only_warnings_and_domain_lines_by_default() {
        assert!(shown_by_default(
            "[    2.7] cpu0 INFO  [dom0] PASS: all 4 domains"
        ));
        assert!(shown_by_default("[    2.7] cpu1 INFO  [w3] hello"));
        assert!(shown_by_default("[    0.1] cpu0 WARN  heap low"));
        assert!(shown_by_default("[    0.1] cpu0 ERROR dead"));
        assert!(!shown_by_default("[    0.1] cpu0 INFO  smp: 4 CPUs online"));
        assert!(shown_by_default("qemu-system-x86_64: something"));
    }

    fn domain(name: &str, weight: u64, cpu_ns: u64, hist: Vec<(u64, u64)>) -> Record {
        Record::Domain(Domain {
            id: name[1..].parse().unwrap(),
            name: name.into(),
            group: name[..1].into(),
            workload: if name.starts_with('l') {
                "latency"
            } else {
                "cpu"
            }
            .into(),
            vcpus: 1,
            weight,
            cap: 0,
            cpu_ns,
            wait_ns: 0,
            work: cpu_ns / 1000,
            wakeups: hist.iter().map(|h| h.1).sum(),
            wake_lat_p50_ns: 0,
            wake_lat_p99_ns: 0,
            wake_lat_max_ns: 0,
            switches: 0,
            migrations: 0,
            exit: abi::tool::results::Outcome::Ok,
            pool: None,
            wake_lat_hist: Some(hist),
            timer_deadline_ns: None,
        })
    }

    #[test]
    fn groups_show_share_against_target_jain_latency_and_extremes() {
        use abi::tool::results::{Engine, Run};
        let mut records = vec![Record::Run(Run::new(
            "t",
            Engine::Schedsim,
            "credit",
            2,
            11,
            1_000_000_000,
            0,
        ))];
        // Ten equal cpu domains but one gets twice the others; one latency domain.
        for i in 0..10 {
            let cpu = if i == 4 { 360_000_000 } else { 180_000_000 };
            records.push(domain(&format!("w{i}"), 256, cpu, vec![]));
        }
        records.push(domain(
            "l10",
            256,
            20_000_000,
            vec![(1024, 90), (65536, 10)],
        ));
        let lines = group_lines(&records, true);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0]
                .starts_with("group w: 10 × cpu, 99.0% of guest CPU time (target 99.0%), Jain 0.9"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with(", all ok"), "{}", lines[0]);
        assert!(lines[1].starts_with("  top w4 18.00%, "), "{}", lines[1]);
        assert!(lines[1].contains("; bottom "), "{}", lines[1]);
        assert!(
            lines[2].contains("wake-up p50 < 1.1 µs, p99 < 65.6 µs"),
            "{}",
            lines[2]
        );
        assert_eq!(hist_percentile(&[(1024, 90), (65536, 10)], 0.9), Some(1024));
        assert_eq!(
            hist_percentile(&[(1024, 90), (65536, 10)], 0.91),
            Some(65536)
        );
        assert_eq!(hist_percentile(&[], 0.5), None);
    }

    #[test]
    fn progress_follows_the_records() {
        use abi::tool::results::{Event, Progress as P};
        let p = |phase, done, total| Record::Progress(P { phase, done, total });
        assert_eq!(
            progress_text(&p(Phase::Create, 16, 128)).unwrap(),
            "creating domains: 16 of 128"
        );
        assert_eq!(
            progress_text(&p(Phase::Measure, 1500, 4000)).unwrap(),
            "measuring: 1.5 of 4.0 s"
        );
        let e = Record::Event(Event {
            at_ns: 2_000_000_000,
            applied_ns: Some(2_000_300_000),
            target: "w3".into(),
            what: "set weight=1024".into(),
            ok: true,
            error: None,
        });
        assert_eq!(progress_text(&e), None);
        assert_eq!(
            event_line(&e).unwrap(),
            "event at 2.000 s: w3 set weight=1024: ok, applied at 2.000 s (300.0 µs late)"
        );
    }
}
