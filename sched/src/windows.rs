//! Results over time (spec `window_ms`): what a run's `window` records say, the same code
//! for every engine. `schedsim` and the runner put [`window_jain`] into the `summary`
//! record; the runner, `results-check` and the experiment checks hold the records to
//! [`problems`].
//!
//! Fairness per window is Jain's index of CPU time / weight over the `cpu` domains (weights
//! count only when the policy has them): the share each got of what the window handed
//! out. (The `summary`'s `jain` is of work / weight over the whole interval; within a
//! window CPU time is what the scheduler decides, while the work a domain reports lags
//! it by up to one unit of work.)

use std::collections::BTreeMap;

use abi::tool::results::{Domain, Record, Records, Window};

pub use crate::summary::jain;

/// The windows of a run, in order: each window's end (`t_ns`) and its records.
pub fn by_window(records: &[Record]) -> Vec<(u64, Vec<&Window>)> {
    let mut out: Vec<(u64, Vec<&Window>)> = Vec::new();
    for r in records {
        if let Record::Window(w) = r {
            match out.last_mut() {
                Some((t, ws)) if *t == w.t_ns => ws.push(w),
                _ => out.push((w.t_ns, vec![w])),
            }
        }
    }
    out
}

/// Jain's index of CPU time / weight over the `cpu` domains, per window, in order; empty
/// without windows or `cpu` domains. `weighted`: whether the policy has a `weight`. With
/// CPU pools, each pool's (by the `domain` records' `pool`), and the worst of them.
pub fn window_jain(records: &[Record], weighted: bool) -> Vec<f64> {
    let weight: BTreeMap<u32, (Option<&str>, f64)> = records
        .domains()
        .filter(|d| d.workload == "cpu")
        .map(|d| {
            let wt = if weighted { d.weight.max(1) as f64 } else { 1.0 };
            (d.id, (d.pool.as_deref(), wt))
        })
        .collect();
    if weight.is_empty() {
        return Vec::new();
    }
    let pools = crate::summary::distinct_pools(weight.values().map(|(p, _)| *p));
    by_window(records)
        .iter()
        .map(|(_, ws)| {
            pools
                .iter()
                .map(|pool| {
                    let x: Vec<f64> = ws
                        .iter()
                        .filter_map(|w| match weight.get(&w.id) {
                            Some((p, wt)) if p == pool => Some(w.cpu_ns as f64 / wt),
                            _ => None,
                        })
                        .collect();
                    jain(&x)
                })
                .fold(1.0, f64::min)
        })
        .collect()
}

/// Slack allowed when a window's figures are compared with its length: 1% and 100 µs (an
/// engine's clocks and the snapshot's instant are not perfectly aligned).
fn slack(ns: u64) -> u64 {
    ns / 100 + 100_000
}

/// What is wrong with a run's `window` records, one line each (empty when all is well, or
/// when there are none): windows must tile the interval (ends increasing, the last at the
/// `run` record's `duration_ns`), hold every domain once each, give no domain more CPU
/// plus waiting time than its vCPUs had in the window nor the machine more CPU time than
/// its CPUs had, and add up to each domain's `domain` record (CPU and waiting time within
/// 0.1% and 1 µs per window; work within 0.1% and one unit per window, since schedsim
/// rounds each window's µs of work down); and a domain a timeline `destroy` event ended
/// holds nothing in the windows that begin after the event was applied.
pub fn problems(records: &[Record]) -> Vec<String> {
    let mut out = sums_and_bounds(records);
    out.extend(after_destroys(records));
    out
}

/// Windows that begin after a domain was destroyed and still hold some of its figures
/// (Domain0 once left a destroyed domain's last boundary figures in place, and the tail
/// before the destroy went into the interval's last window).
fn after_destroys(records: &[Record]) -> Vec<String> {
    let windows = by_window(records);
    let mut out = Vec::new();
    for e in records.iter().filter_map(|r| match r {
        Record::Event(e) if e.ok && e.what == "destroy" => Some(e),
        _ => None,
    }) {
        let Some(applied) = e.applied_ns else { continue };
        let gone: Vec<u32> = records
            .domains()
            .filter(|d| d.name == e.target || d.group == e.target)
            .map(|d| d.id)
            .collect();
        let mut start = 0;
        for (k, (end, ws)) in windows.iter().enumerate() {
            for w in ws.iter().filter(|w| start >= applied && gone.contains(&w.id)) {
                if w.cpu_ns + w.wait_ns + w.work > 0 {
                    out.push(format!(
                        "window {k} ({start} to {end} ns): `{}`, destroyed at {applied} ns, \
                         got {} ns of CPU, waited {} ns and did {} work",
                        w.name, w.cpu_ns, w.wait_ns, w.work
                    ));
                }
            }
            start = *end;
        }
    }
    out
}

/// Every rule of [`problems`] but the destroyed domains'.
fn sums_and_bounds(records: &[Record]) -> Vec<String> {
    let windows = by_window(records);
    let mut out = Vec::new();
    if windows.is_empty() {
        return out;
    }
    let Some(run) = records.run() else {
        return vec!["window records without a run record".into()];
    };
    let domains: BTreeMap<u32, &Domain> = records.domains().map(|d| (d.id, d)).collect();
    let mut sums: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
    let mut start = 0u64;
    for (k, (end, ws)) in windows.iter().enumerate() {
        if *end <= start && k > 0 {
            out.push(format!(
                "window {k} ends at {end} ns, not after the window before ({start} ns)"
            ));
        }
        let len = end.saturating_sub(start);
        let mut seen = BTreeMap::new();
        let mut cpu_total = 0u64;
        for w in ws {
            if seen.insert(w.id, ()).is_some() {
                out.push(format!("window {k} (to {end} ns) holds domain {} twice", w.name));
            }
            let Some(d) = domains.get(&w.id) else {
                out.push(format!("window {k}: domain id {} has no domain record", w.id));
                continue;
            };
            let room = len.saturating_mul(u64::from(d.vcpus));
            if w.cpu_ns + w.wait_ns > room + slack(room) {
                out.push(format!(
                    "window {k} (to {end} ns): `{}` got {} ns of CPU and waited {} ns, more \
                     than its {} vCPU(s) had in {len} ns",
                    w.name, w.cpu_ns, w.wait_ns, d.vcpus
                ));
            }
            cpu_total += w.cpu_ns;
            let s = sums.entry(w.id).or_default();
            (s.0, s.1, s.2) = (s.0 + w.cpu_ns, s.1 + w.wait_ns, s.2 + w.work);
        }
        if seen.len() != domains.len() {
            out.push(format!(
                "window {k} (to {end} ns) holds {} domains, the run {}",
                seen.len(),
                domains.len()
            ));
        }
        let machine = len.saturating_mul(u64::from(run.cpus));
        if cpu_total > machine + slack(machine) {
            out.push(format!(
                "window {k} (to {end} ns): the domains got {cpu_total} ns of CPU, more than \
                 {} CPUs had in {len} ns",
                run.cpus
            ));
        }
        start = *end;
    }
    if start.abs_diff(run.duration_ns) > slack(0) {
        out.push(format!(
            "the last window ends at {start} ns, the interval at {} ns",
            run.duration_ns
        ));
    }
    let n = windows.len() as u64;
    for (id, (cpu, wait, work)) in &sums {
        let Some(d) = domains.get(id) else { continue };
        for (what, got, want, per_window) in [
            ("cpu_ns", *cpu, d.cpu_ns, 1_000),
            ("wait_ns", *wait, d.wait_ns, 1_000),
            ("work", *work, d.work, 1),
        ] {
            if got.abs_diff(want) > want / 1000 + per_window * n {
                out.push(format!(
                    "`{}`: its windows' {what} add up to {got}, its domain record says {want}",
                    d.name
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::tool::results::Outcome;

    fn domain(id: u32, weight: u64, cpu_ns: u64, work: u64) -> Record {
        Record::Domain(Domain {
            id,
            name: format!("w{id}"),
            group: "w".into(),
            workload: "cpu".into(),
            vcpus: 1,
            weight,
            cap: 0,
            cpu_ns,
            wait_ns: 0,
            work,
            wakeups: 0,
            wake_lat_p50_ns: 0,
            wake_lat_p99_ns: 0,
            wake_lat_max_ns: 0,
            switches: 0,
            migrations: 0,
            exit: Outcome::Ok,
            pool: None,
            wake_lat_hist: None,
            timer_deadline_ns: None,
        })
    }

    fn window(t_ns: u64, id: u32, cpu_ns: u64, work: u64) -> Record {
        Record::Window(Window { t_ns, id, name: format!("w{id}"), cpu_ns, wait_ns: 0, work })
    }

    fn run(duration_ns: u64) -> Record {
        Record::Run(abi::tool::results::Run::new(
            "t",
            abi::tool::results::Engine::Schedsim,
            "credit",
            1,
            2,
            duration_ns,
            0,
        ))
    }

    /// Two domains of weights 1 and 3 on one CPU over two 100 ms windows: fair in the
    /// second, all to one in the first.
    fn sample() -> Vec<Record> {
        vec![
            run(200_000_000),
            domain(1, 1, 25_000_000 + 100_000_000, 125),
            domain(2, 3, 75_000_000, 75),
            window(100_000_000, 1, 100_000_000, 100),
            window(100_000_000, 2, 0, 0),
            window(200_000_000, 1, 25_000_000, 25),
            window(200_000_000, 2, 75_000_000, 75),
        ]
    }

    #[test]
    fn jain_per_window_weighs_cpu_time() {
        assert_eq!(jain(&[1.0, 1.0, 1.0]), 1.0);
        assert_eq!(jain(&[]), 1.0);
        assert!((jain(&[1.0, 0.0]) - 0.5).abs() < 1e-12);
        let j = window_jain(&sample(), true);
        assert_eq!(j.len(), 2);
        assert!((j[0] - 0.5).abs() < 1e-12, "{j:?}");
        assert!((j[1] - 1.0).abs() < 1e-12, "{j:?}");
        // Without weights the second window is 25:75, not fair.
        assert!(window_jain(&sample(), false)[1] < 0.9);
        assert!(window_jain(&sample()[..3], true).is_empty());
    }

    #[test]
    fn jain_per_window_is_the_worst_pools() {
        // w1 and w2 (weights 1 and 3) in pool a, fair by weight in window 2; w3 and w4 in
        // pool b, split 1:3 at equal weights there. As one machine window 2 would look
        // fair by weight only if w3 and w4 had weights too.
        let in_pool = |r: Record, pool: &str| match r {
            Record::Domain(d) => Record::Domain(Domain { pool: Some(pool.into()), ..d }),
            other => other,
        };
        let records = vec![
            run(200_000_000),
            in_pool(domain(1, 1, 50_000_000, 50), "a"),
            in_pool(domain(2, 3, 150_000_000, 150), "a"),
            in_pool(domain(3, 1, 50_000_000, 50), "b"),
            in_pool(domain(4, 1, 150_000_000, 150), "b"),
            window(100_000_000, 1, 25_000_000, 25),
            window(100_000_000, 2, 75_000_000, 75),
            window(100_000_000, 3, 50_000_000, 50),
            window(100_000_000, 4, 50_000_000, 50),
            window(200_000_000, 1, 25_000_000, 25),
            window(200_000_000, 2, 75_000_000, 75),
            window(200_000_000, 3, 0, 0),
            window(200_000_000, 4, 100_000_000, 100),
        ];
        let j = window_jain(&records, true);
        assert!((j[0] - 1.0).abs() < 1e-12, "both pools fair: {j:?}");
        assert!((j[1] - 0.5).abs() < 1e-12, "pool b all to w4: {j:?}");
    }

    #[test]
    fn consistent_windows_have_no_problems() {
        assert_eq!(problems(&sample()), Vec::<String>::new());
        assert!(problems(&sample()[..3]).is_empty(), "no windows, nothing to check");
    }

    #[test]
    fn a_destroyed_domain_holds_nothing_in_the_windows_after_it() {
        let destroy = |applied_ns| {
            Record::Event(abi::tool::results::Event {
                at_ns: 150_000_000,
                applied_ns: Some(applied_ns),
                target: "w2".into(),
                what: "destroy".into(),
                ok: true,
                error: None,
            })
        };
        // w2 destroyed within the first window: all it did is in that window, fine.
        let mut r = sample();
        r[3] = window(100_000_000, 1, 25_000_000, 25);
        r[4] = window(100_000_000, 2, 75_000_000, 75);
        r[5] = window(200_000_000, 1, 100_000_000, 100);
        r[6] = window(200_000_000, 2, 0, 0);
        r.push(destroy(90_000_000));
        assert_eq!(problems(&r), Vec::<String>::new());
        // Destroyed at 90 ms, yet the second window holds its figures.
        let mut r = sample();
        r.push(destroy(90_000_000));
        let p = problems(&r);
        assert!(p.iter().any(|m| m.contains("`w2`, destroyed at 90000000 ns")), "{p:?}");
    }

    #[test]
    fn every_inconsistency_is_named() {
        let mut r = sample();
        // More CPU than one CPU had in the window, and the sums then disagree.
        r[3] = window(100_000_000, 1, 150_000_000, 100);
        let p = problems(&r);
        assert!(p.iter().any(|m| m.contains("more than its 1 vCPU(s)")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("more than 1 CPUs")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("`w1`: its windows' cpu_ns add up")), "{p:?}");
        // A domain missing from a window, the last window short of the interval.
        let mut r = sample();
        r.remove(6);
        r[0] = run(300_000_000);
        let p = problems(&r);
        assert!(p.iter().any(|m| m.contains("holds 1 domains, the run 2")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("the interval at 300000000")), "{p:?}");
        // Work that does not add up.
        let mut r = sample();
        r[5] = window(200_000_000, 1, 25_000_000, 5);
        let p = problems(&r);
        assert!(p.iter().any(|m| m.contains("work add up to 105")), "{p:?}");
    }
}
