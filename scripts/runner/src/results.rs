//! The results file (JSON Lines, docs/DESIGN.md "Results", typed in `abi::tool::results`): the
//! hypervisor's records copied verbatim as they arrive, then the runner's own `summary` and
//! `exit` records; and the checks and the summary the runner derives from them.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use abi::tool::results::{Cause, Exit, Record, Records, Summary};
use runner::{parse_record, record_line};

/// An open results file and what has been written to it.
pub struct Results {
    path: PathBuf,
    file: File,
    records: Vec<Record>,
    /// Lines that are not records of the contract (still copied, but a failed run), each
    /// with what is wrong with it.
    malformed: Vec<String>,
}

impl Results {
    /// Creates (or truncates) the file, and its directory if needed.
    pub fn create(path: &Path) -> io::Result<Results> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        Ok(Results {
            path: path.to_path_buf(),
            file: File::create(path)?,
            records: Vec::new(),
            malformed: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record verbatim; written through at once so a crash loses nothing.
    pub fn record(&mut self, json: &str) -> io::Result<()> {
        writeln!(self.file, "{json}")?;
        self.file.flush()?;
        match parse_record(json) {
            Ok(r) => self.records.push(r),
            Err(e) => self.malformed.push(format!("{e}: {json}")),
        }
        Ok(())
    }

    /// Appends a record of the runner's own.
    pub fn push(&mut self, r: Record) -> io::Result<()> {
        self.record(&record_line(&r))
    }

    /// Appends the runner's `exit` record: the exit status of `scripts/run`, what ended the
    /// run and the host wall time.
    /// `host`: the host's cores and the other work on it during the run, when known.
    pub fn exit_record(
        &mut self,
        status: i32,
        cause: Cause,
        wall_ns: u128,
        host: Option<(u32, f64)>,
    ) -> io::Result<()> {
        self.push(Record::Exit(Exit {
            status,
            cause,
            wall_ns: u64::try_from(wall_ns).unwrap_or(u64::MAX),
            host_cores: host.map(|h| h.0),
            // To a hundredth of a core: the figure is no more precise than the tick.
            host_other_load: host.map(|h| (h.1 * 100.0).round() / 100.0),
        }))
    }

    /// The records so far that follow the contract.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn malformed(&self) -> &[String] {
        &self.malformed
    }
}

/// The `summary` record (docs/DESIGN.md "Results") derived from the `run` and `domain` records,
/// with the same fairness code as `schedsim` (`sched::summary`); `None` without a `run`
/// record. `weighted`: whether the policy has a `weight` parameter. `expected`: whether
/// every domain ended as the spec said (the hypervisor's verdict).
pub fn summary_record(records: &[Record], weighted: bool, expected: bool) -> Option<Summary> {
    let run = records.run()?;
    let figures: Vec<sched::summary::DomainFigures> = records
        .domains()
        .map(|d| sched::summary::DomainFigures {
            workload: &d.workload,
            weight: d.weight,
            cap: d.cap,
            vcpus: d.vcpus,
            work: d.work,
            cpu_ns: d.cpu_ns,
            pool: d.pool.as_deref(),
        })
        .collect();
    let events = records.iter().filter_map(|r| match r {
        Record::Event(e) => Some(e),
        _ => None,
    });
    let (fair, changed) = sched::summary::of_run(&figures, events, run.duration_ns, weighted);
    Some(Summary {
        // Saturating: a guest writes its own `work` counters (a hostile one any value).
        work_total: records
            .domains()
            .fold(0u64, |t, d| t.saturating_add(d.work)),
        jain: fair.jain,
        share_err_max: fair.share_err_max,
        idle_ns: run.idle_ns,
        expected,
        violations: 0,
        policy_counters: None,
        window_jain: Some(sched::windows::window_jain(records, weighted))
            .filter(|j| !changed && !j.is_empty()),
    })
}

/// What is wrong with the records of a run the hypervisor called a success: no `boot`
/// record, fewer CPUs online than asked for, a line that is not a record of the contract.
/// Empty when all is well.
pub fn problems(records: &[Record], malformed: &[String], cpus: u32) -> Vec<String> {
    let mut out: Vec<String> = malformed
        .iter()
        .map(|m| format!("a results line is not a record of the contract: {m}"))
        .collect();
    match records.boot() {
        None => out.push("the hypervisor wrote no boot record".into()),
        Some(boot) if boot.cpus_online != cpus => {
            out.push(format!("{} of {cpus} CPUs came online", boot.cpus_online));
        }
        Some(_) => {}
    }
    out
}

/// Domains whose wake-up latency histogram holds more samples than they had wake-ups in the
/// interval (one more per vCPU: a wake-up just before the start served after it): the
/// histogram must be the interval's, as `wakeups` is. The hypervisor's once held every
/// wake-up since the domain's creation, the warm-up's included.
pub fn latency_problems(records: &[Record]) -> Vec<String> {
    records
        .domains()
        .filter_map(|d| {
            let samples: u64 = d.wake_lat_hist.as_ref()?.iter().map(|&(_, n)| n).sum();
            (samples > d.wakeups + u64::from(d.vcpus)).then(|| {
                format!(
                    "`{}`'s wake-up latency histogram holds {samples} samples, more than its \
                     {} wake-ups in the interval",
                    d.name, d.wakeups
                )
            })
        })
        .collect()
}

/// Whether the hypervisor found the CPU topology QEMU was given (`shape`: sockets, cores
/// per socket, threads per core): a policy that shares runqueues by core or socket would
/// otherwise run a different machine than the spec's. `None` when they agree or the `boot`
/// record says nothing of the topology.
pub fn topology_problem(records: &[Record], shape: (u32, u32, u32)) -> Option<String> {
    let boot = records.boot()?;
    let found = (boot.sockets?, boot.cores?, boot.threads?);
    (found != shape).then(|| {
        format!(
            "the hypervisor found {} socket(s) × {} core(s) × {} thread(s) (from {}), QEMU \
             was given sockets={},cores={},threads={}",
            found.0,
            found.1,
            found.2,
            boot.topology.as_deref().unwrap_or("?"),
            shape.0,
            shape.1,
            shape.2
        )
    })
}

/// Whether the hypervisor's heap after bring-up exceeded what the spec validator's memory
/// model (`sched::limits`) allows for it: the validator could then accept a spec that does
/// not fit the machine. `None` when it did not, or the `boot` record does not say.
pub fn heap_problem(records: &[Record]) -> Option<String> {
    let boot = records.boot()?;
    let (used, model) = (boot.heap_bytes?, boot.heap_model_bytes?);
    (used > model).then(|| {
        format!(
            "the hypervisor's heap after bring-up is {} KiB, more than the {} KiB that \
             sched::limits models for it: raise the model's figures, or find what grew",
            used >> 10,
            model >> 10
        )
    })
}

/// Domains the spec expected to make progress that made none over the measured interval
/// (`sched::spec::starved`, the same rule `schedsim` applies), one message each naming the
/// domain: a run never claims success for a domain it starved. Domains are matched to the
/// plan by name; the interval is the `run` record's `duration_ns`.
pub fn starved(records: &[Record], plan: &[sched::spec::DomainPlan]) -> Vec<String> {
    let Some(run) = records.run() else {
        return Vec::new(); // reported elsewhere
    };
    records
        .domains()
        .filter(|d| d.exit.is_ok())
        .filter_map(|d| {
            let p = plan.iter().find(|p| p.name == d.name)?;
            let got = sched::spec::Progress {
                cpu_ns: d.cpu_ns,
                wait_ns: d.wait_ns,
                wakeups: d.wakeups,
            };
            sched::spec::starved(p, run.duration_ns, &got, true)
        })
        .collect()
}

/// The starved domains in a few lines: the first three in full, then how many more and
/// their names (a short run of 1024 domains may starve hundreds).
pub fn starved_summary(starved: &[String]) -> Vec<String> {
    const FULL: usize = 3;
    const NAMED: usize = 20;
    let mut out: Vec<String> = starved.iter().take(FULL).cloned().collect();
    if starved.len() > FULL {
        let rest = &starved[FULL..];
        // Each message starts with "domain `NAME`".
        let names: Vec<&str> = rest
            .iter()
            .filter_map(|m| m.split('`').nth(1))
            .take(NAMED)
            .collect();
        let more = if rest.len() > NAMED { ", ..." } else { "" };
        out.push(format!(
            "{} more domains were starved likewise: {}{more}",
            rest.len(),
            names.join(", ")
        ));
    }
    out
}

/// Nanoseconds as a short human figure.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// An upper bound (a histogram bucket's edge, shown after `<` or `≤`) in the units of
/// [`human_ns`], rounded up at the precision shown: 1,024 ns is "1.1 µs", where
/// [`human_ns`]'s "1.0 µs" would claim less than the bound.
pub fn human_bound_ns(ns: u64) -> String {
    let up = |unit: u64| ns.div_ceil(unit);
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", up(100) as f64 / 10.0),
        1_000_000..1_000_000_000 => format!("{:.1} ms", up(100_000) as f64 / 10.0),
        _ => format!("{:.2} s", up(10_000_000) as f64 / 100.0),
    }
}

/// The boot record's facts in one line, or `None` without a boot record.
pub fn boot_line(records: &[Record], cpus: u32) -> Option<String> {
    let boot = records.boot()?;
    let shape = match (boot.sockets, boot.cores, boot.threads) {
        (Some(s), Some(c), Some(t)) => format!(
            ", {s} socket(s) × {c} core(s) × {t} thread(s) ({})",
            boot.topology.as_deref().unwrap_or("?")
        ),
        _ => String::new(),
    };
    Some(format!(
        "{} of {cpus} CPUs online{shape}, {} APIC, all online {} after entry, accel {}",
        boot.cpus_online,
        boot.apic.name(),
        human_ns(boot.boot_ns),
        boot.accel
    ))
}

/// How late the hypervisor's timer ended the policy's slices over the interval (the `run`
/// record's `slice_late_*`), or `None` when the run did not say.
pub fn slice_line(records: &[Record]) -> Option<String> {
    let run = records.run()?;
    let hist = run.slice_late_hist.as_ref()?;
    let ended: u64 = hist.iter().map(|&(_, n)| n).sum();
    let bound = |ns: Option<u64>| match ns {
        Some(u64::MAX) => "> 32.8 ms".to_string(),
        Some(ns) => format!("≤ {}", human_bound_ns(ns)),
        None => "?".into(),
    };
    Some(format!(
        "{ended} ended by the timer, late by p50 {}, p99 {}",
        bound(run.slice_late_p50_ns),
        bound(run.slice_late_p99_ns)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::tool::results::{Apic, Boot, Domain, Engine, Outcome, Run};

    fn boot(cpus: u32) -> Record {
        Record::Boot(Boot {
            cpus_online: cpus,
            cpus_found: cpus,
            apic: Apic::Xapic,
            boot_ns: 12_345_678,
            accel: "tcg".into(),
            protocol: "pvh".into(),
            memory_bytes: 1 << 30,
            topology: None,
            sockets: None,
            cores: None,
            threads: None,
            places: None,
            heap_bytes: None,
            heap_model_bytes: None,
        })
    }

    #[test]
    fn a_heap_beyond_the_model_is_a_problem() {
        let with = |used, model| {
            let Record::Boot(mut b) = boot(4) else {
                unreachable!()
            };
            (b.heap_bytes, b.heap_model_bytes) = (Some(used), Some(model));
            vec![Record::Boot(b)]
        };
        assert_eq!(heap_problem(&with(2 << 20, 5 << 20)), None);
        let p = heap_problem(&with(20 << 20, 5 << 20)).unwrap();
        assert!(p.contains("20480 KiB") && p.contains("5120 KiB"), "{p}");
        assert_eq!(heap_problem(&[boot(4)]), None);
    }

    #[test]
    fn a_topology_other_than_qemus_is_a_problem() {
        let with = |sockets, cores| {
            let Record::Boot(mut b) = boot(4) else {
                unreachable!()
            };
            (b.topology, b.sockets, b.cores, b.threads) = (
                Some("cpuid-0xb".into()),
                Some(sockets),
                Some(cores),
                Some(1),
            );
            vec![Record::Boot(b)]
        };
        assert_eq!(topology_problem(&with(2, 2), (2, 2, 1)), None);
        let p = topology_problem(&with(1, 4), (2, 2, 1)).unwrap();
        assert!(
            p.contains("1 socket(s) × 4 core(s)") && p.contains("sockets=2,cores=2"),
            "{p}"
        );
        // A boot record without the topology (an older hypervisor) is not judged.
        assert_eq!(topology_problem(&[boot(4)], (2, 2, 1)), None);
        assert!(
            boot_line(&with(2, 2), 4)
                .unwrap()
                .contains("2 socket(s) × 2 core(s) × 1 thread(s) (cpuid-0xb)")
        );
    }

    #[test]
    fn a_good_boot_has_no_problems() {
        assert!(problems(&[boot(8)], &[], 8).is_empty());
    }

    #[test]
    fn problems_are_found() {
        assert_eq!(problems(&[boot(7)], &[], 8), ["7 of 8 CPUs came online"]);
        assert_eq!(
            problems(&[], &[], 1),
            ["the hypervisor wrote no boot record"]
        );
        assert_eq!(problems(&[boot(1)], &["{oops".into()], 1).len(), 1);
    }

    #[test]
    fn records_are_copied_verbatim_and_read_by_the_contract() {
        let dir = std::env::temp_dir().join(format!("runner-results-{}", std::process::id()));
        let path = dir.join("sub/r.jsonl");
        let mut r = Results::create(&path).unwrap();
        let spaced = record_line(&boot(1)).replace(',', ", ");
        r.record(&spaced).unwrap();
        r.record("not json").unwrap();
        // A field missing: copied, but not a record; the message names the field.
        r.record(r#"{"kind":"boot","cpus_online":1}"#).unwrap();
        r.exit_record(0, Cause::Hypervisor, 5, Some((2, 0.123)))
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], spaced);
        assert_eq!(lines[1], "not json");
        assert_eq!(
            lines[3],
            r#"{"kind":"exit","status":0,"cause":"hypervisor","wall_ns":5,"host_cores":2,"host_other_load":0.12}"#
        );
        assert_eq!(r.records().len(), 2);
        assert_eq!(r.records()[0], boot(1));
        assert_eq!(r.records().exit().unwrap().cause, Cause::Hypervisor);
        assert_eq!(r.malformed().len(), 2);
        assert!(r.malformed()[0].ends_with(": not json"));
        assert!(
            r.malformed()[1].starts_with("a `boot` record: missing field `cpus_found`"),
            "{}",
            r.malformed()[1]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    /// The plan of a spec's `[[domain]]` groups (TOML after the first `[[domain]]`).
    fn plan(groups: &str) -> Vec<sched::spec::DomainPlan> {
        let text = format!("name = \"t\"\nduration_ms = 1000\n[[domain]]\n{groups}");
        sched::spec::Spec::from_str(&text, "t.toml").unwrap().plan()
    }

    fn domain(name: &str, workload: &str, cpu_ns: u64, wakeups: u64, exit: &str) -> Record {
        let exit = match exit.strip_prefix("killed: ") {
            Some(why) => Outcome::Killed(why.into()),
            None => Outcome::Ok,
        };
        Record::Domain(Domain {
            id: 1,
            name: name.into(),
            group: name.trim_end_matches(char::is_numeric).into(),
            workload: workload.into(),
            vcpus: 1,
            weight: 256,
            cap: 0,
            cpu_ns,
            wait_ns: 900_000_000,
            work: cpu_ns / 1000,
            wakeups,
            wake_lat_p50_ns: 0,
            wake_lat_p99_ns: 0,
            wake_lat_max_ns: 0,
            switches: 0,
            migrations: 0,
            exit,
            pool: None,
            wake_lat_hist: None,
            timer_deadline_ns: None,
        })
    }

    fn run(duration_ns: u64) -> Record {
        Record::Run(Run {
            start_ns: Some(1),
            wallclock_start_ns: Some(2),
            dom0_cpu_ns: Some(3),
            ..Run::new("t", Engine::Domino, "credit", 2, 5, duration_ns, 7)
        })
    }

    #[test]
    fn a_latency_histogram_beyond_the_intervals_wake_ups_is_a_problem() {
        let with_hist = |wakeups, samples: u64| match domain("lat0", "latency", 1, wakeups, "ok") {
            Record::Domain(d) => Record::Domain(Domain {
                wake_lat_hist: Some(vec![(1024, samples / 2), (2048, samples - samples / 2)]),
                ..d
            }),
            _ => unreachable!(),
        };
        assert!(latency_problems(&[with_hist(950, 950)]).is_empty());
        assert!(
            latency_problems(&[with_hist(950, 951)]).is_empty(),
            "one served after"
        );
        let p = latency_problems(&[with_hist(950, 1_000)]);
        assert!(
            p.len() == 1 && p[0].contains("1000 samples, more than its 950"),
            "{p:?}"
        );
    }

    #[test]
    fn starved_domains_fail_the_run_by_name() {
        let plan = plan(
            "name = \"w\"\ncount = 2\nworkload = \"cpu\"\n\
             [[domain]]\nname = \"lat\"\nworkload = \"latency\"\n\
             [[domain]]\nname = \"idle\"\nworkload = \"cpu\"\nexpect_progress = false\n\
             [[domain]]\nname = \"cli\"\nworkload = \"hostile-priv\"\nexpect = \"killed\"",
        );
        let good = vec![
            run(1_000_000_000),
            domain("w0", "cpu", 400_000_000, 0, "ok"),
            domain("w1", "cpu", 400_000_000, 0, "ok"),
            domain("lat0", "latency", 30_000_000, 950, "ok"),
            domain("idle0", "cpu", 0, 0, "ok"),
            domain(
                "cli0",
                "hostile-priv",
                0,
                0,
                "killed: privileged instruction at 0x401000",
            ),
        ];
        assert!(
            starved(&good, &plan).is_empty(),
            "{:?}",
            starved(&good, &plan)
        );
        let mut bad = good.clone();
        bad[2] = domain("w1", "cpu", 0, 0, "ok");
        bad[3] = domain("lat0", "latency", 30_000_000, 0, "ok");
        let found = starved(&bad, &plan);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("domain `w1` (cpu) got no CPU time"),
            "{}",
            found[0]
        );
        assert!(found[0].contains("runnable for 900.0 ms"), "{}", found[0]);
        assert!(
            found[1].starts_with("domain `lat0` (latency) never woke"),
            "{}",
            found[1]
        );
        // A domain that already failed its expectation is reported by Domain0, not here.
        bad[2] = domain(
            "w1",
            "cpu",
            0,
            0,
            "killed: page fault at 0x0 (rip 0x401000)",
        );
        assert_eq!(starved(&bad, &plan).len(), 1);
        // Without a run record there is no interval to judge.
        assert!(starved(&bad[1..], &plan).is_empty());
        // Hundreds of them: three in full, then the count and some names.
        let many: Vec<String> = (0..100)
            .map(|i| format!("domain `w{i}` (cpu) got none"))
            .collect();
        let lines = starved_summary(&many);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "domain `w0` (cpu) got none");
        assert!(
            lines[3].starts_with("97 more domains were starved likewise: w3, w4,"),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("w22, ..."), "{}", lines[3]);
        assert_eq!(starved_summary(&many[..2]).len(), 2);
    }

    #[test]
    fn the_summary_is_derived_from_the_records() {
        let records = [
            run(1_000_000_000),
            domain("w0", "cpu", 400_000_000, 0, "ok"),
            domain("w1", "cpu", 400_000_000, 0, "ok"),
        ];
        let s = summary_record(&records, true, true).unwrap();
        assert_eq!((s.work_total, s.idle_ns, s.expected), (800_000, 7, true));
        assert!(s.jain.unwrap() > 0.999, "{s:?}");
        assert!(summary_record(&records[1..], true, true).is_none());
    }

    #[test]
    fn summary_line() {
        let line = boot_line(&[boot(4)], 4).unwrap();
        assert_eq!(
            line,
            "4 of 4 CPUs online, xapic APIC, all online 12.3 ms after entry, accel tcg"
        );
        assert_eq!(human_ns(999), "999 ns");
        // A bucket's edge, after `<` or `≤`, is rounded up, never down.
        assert_eq!(human_bound_ns(1_024), "1.1 µs");
        assert_eq!(human_bound_ns(1_000), "1.0 µs");
        assert_eq!(human_bound_ns(65_536), "65.6 µs");
        assert_eq!(human_bound_ns(2_048_000), "2.1 ms");
        assert_eq!(human_bound_ns(999), "999 ns");
        assert_eq!(human_ns(2_500_000_000), "2.50 s");
    }
}
