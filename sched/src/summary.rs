//! The fairness figures of a run (the `summary` record's `jain` and `share_err_max`),
//! computed the same way for every engine: `schedsim` calls this on its own accounts, and
//! the runner on the `domain` records the hypervisor wrote.
//!
//! Each CPU pool is its own machine: a domain's expected share is of what its pool's cpu
//! domains got, and the run's figures are the worst pool's. Over an interval in which a
//! timeline event changed who competed, or for what (a destroy, a pause, a start, a new
//! weight, a move to another pool, a policy swap), there is no one expected share, and both
//! figures are `None` (the timeline checks judge each phase): taken over the whole
//! interval, a domain destroyed at 1 s of 4 counted as 75% short of its share, and the
//! others of pools.toml's as twice theirs, on a perfect scheduler.

use alloc::vec::Vec;

/// What fairness needs to know of one domain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DomainFigures<'a> {
    /// Its workload; only `cpu` domains count for fairness.
    pub workload: &'a str,
    /// Its weight (used when the policy has weights).
    pub weight: u64,
    /// Percent of one CPU; 0 for none.
    pub cap: u64,
    /// Its vCPUs: it can use at most this many CPUs.
    pub vcpus: u32,
    /// The workload's progress count over the interval.
    pub work: u64,
    /// Time on a CPU over the interval.
    pub cpu_ns: u64,
    /// Its CPU pool's name (`None` without pools).
    pub pool: Option<&'a str>,
}

/// Jain's index and the largest share error, over the `cpu` domains; `None` without any.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fairness {
    /// Jain's index of work / weight (weights count only when `weighted`).
    pub jain: Option<f64>,
    /// Largest |cpu_ns − expected| / expected, expected shares being weighted max-min fair
    /// under caps and vCPU counts (water-filling).
    pub share_err_max: Option<f64>,
}

impl Fairness {
    /// No figures (no `cpu` domains, or no one fair share).
    pub const NONE: Fairness = Fairness { jain: None, share_err_max: None };
}

/// Jain's index of `x`: (Σx)² / (n Σx²), 1 for equal values; 1 for none or all zero.
pub fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let s2: f64 = x.iter().map(|v| v * v).sum();
    if s2 > 0.0 { s * s / (x.len() as f64 * s2) } else { 1.0 }
}

/// The distinct pools of `pools`, in order (`None`, no pools, first).
pub fn distinct_pools<'a>(pools: impl Iterator<Item = Option<&'a str>>) -> Vec<Option<&'a str>> {
    let mut out: Vec<Option<&str>> = pools.collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Weighted max-min fair split of `total` among demands `limit` (water-filling).
pub fn fair_shares(total: f64, weight: &[f64], limit: &[f64]) -> Vec<f64> {
    let n = weight.len();
    let mut alloc = alloc::vec![0.0; n];
    let mut open: Vec<usize> = (0..n).collect();
    let mut left = total;
    while !open.is_empty() && left > 1e-9 {
        let wsum: f64 = open.iter().map(|&i| weight[i]).sum();
        let mut capped = Vec::new();
        for &i in &open {
            let give = left * weight[i] / wsum;
            if alloc[i] + give >= limit[i] {
                capped.push(i);
            }
        }
        if capped.is_empty() {
            for &i in &open {
                alloc[i] += left * weight[i] / wsum;
            }
            break;
        }
        for &i in &capped {
            left -= limit[i] - alloc[i];
            alloc[i] = limit[i];
        }
        open.retain(|i| !capped.contains(i));
    }
    alloc
}

/// Whether a timeline event applied during the interval changed who competed, or for what
/// (every kind does: destroy, pause, unpause, start, set, move_to, a policy swap). One
/// planned for the interval's start (`at_ms = 0`) sets who competes from the start. A
/// refused one counts too: a group's refusal can come after some of its domains changed.
#[cfg(feature = "std")]
pub fn competition_changed<'e>(
    events: impl IntoIterator<Item = &'e abi::tool::results::Event>,
) -> bool {
    events.into_iter().any(|e| e.applied_ns.is_some() && e.at_ns > 0)
}

/// The fairness figures of a run's `summary` record: [`fairness`], or [`Fairness::NONE`] when
/// `events` changed who competed ([`competition_changed`]); and whether they did (the
/// summary then leaves `window_jain` out too). Both engines call this.
#[cfg(feature = "std")]
pub fn of_run<'e>(
    domains: &[DomainFigures],
    events: impl IntoIterator<Item = &'e abi::tool::results::Event>,
    duration_ns: u64,
    weighted: bool,
) -> (Fairness, bool) {
    if competition_changed(events) {
        (Fairness::NONE, true)
    } else {
        (fairness(domains, duration_ns, weighted), false)
    }
}

/// The fairness of `domains` over a measured interval of `duration_ns`, pool by pool (the
/// worst pool's figures). `weighted` says whether the policy has a `weight` parameter (if
/// not, every domain counts as weight 1). Use [`competition_changed`] first: over an
/// interval with timeline events these figures mean nothing.
pub fn fairness(domains: &[DomainFigures], duration_ns: u64, weighted: bool) -> Fairness {
    distinct_pools(domains.iter().map(|d| d.pool))
        .into_iter()
        .map(|p| {
            let mine: Vec<&DomainFigures> = domains.iter().filter(|d| d.pool == p).collect();
            pool_fairness(&mine, duration_ns, weighted)
        })
        .fold(Fairness::NONE, |a, b| Fairness {
            jain: worst(a.jain, b.jain, f64::min),
            share_err_max: worst(a.share_err_max, b.share_err_max, f64::max),
        })
}

/// The worse of two figures, either of which may be absent.
fn worst(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

/// [`fairness`] within one pool.
fn pool_fairness(domains: &[&DomainFigures], duration_ns: u64, weighted: bool) -> Fairness {
    let cpu: Vec<&DomainFigures> =
        domains.iter().copied().filter(|d| d.workload == "cpu").collect();
    if cpu.is_empty() {
        return Fairness::NONE;
    }
    let weight = |d: &DomainFigures| if weighted { d.weight as f64 } else { 1.0 };
    let x: Vec<f64> = cpu.iter().map(|d| d.work as f64 / weight(d)).collect();
    let jain = jain(&x);
    let total: f64 = cpu.iter().map(|d| d.cpu_ns as f64).sum();
    let limit: Vec<f64> = cpu
        .iter()
        .map(|d| {
            let cpus = f64::from(d.vcpus);
            let cap = if d.cap > 0 { d.cap as f64 / 100.0 } else { cpus };
            cpus.min(cap) * duration_ns as f64
        })
        .collect();
    let weights: Vec<f64> = cpu.iter().map(|d| weight(d)).collect();
    let expect = fair_shares(total, &weights, &limit);
    let err = cpu
        .iter()
        .zip(&expect)
        .filter(|(_, e)| **e > 0.0)
        .map(|(d, e)| (d.cpu_ns as f64 - e).abs() / e)
        .fold(0.0, f64::max);
    Fairness { jain: Some(jain), share_err_max: Some(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(weight: u64, work: u64, cpu_ns: u64) -> DomainFigures<'static> {
        DomainFigures { workload: "cpu", weight, cap: 0, vcpus: 1, work, cpu_ns, pool: None }
    }

    #[test]
    fn perfect_weighted_shares_score_one_and_zero() {
        let d = [cpu(1, 100, 1_000), cpu(3, 300, 3_000)];
        let f = fairness(&d, 10_000, true);
        assert!((f.jain.unwrap() - 1.0).abs() < 1e-12);
        assert!(f.share_err_max.unwrap() < 1e-12);
    }

    #[test]
    fn unfair_shares_are_measured() {
        // Equal weights, but one got three times the CPU: shares 0.25/0.75 against 0.5/0.5.
        let d = [cpu(1, 100, 1_000), cpu(1, 300, 3_000)];
        let f = fairness(&d, 10_000, false);
        assert!((f.jain.unwrap() - 0.8).abs() < 1e-12);
        assert!((f.share_err_max.unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn caps_and_other_workloads_are_respected() {
        let mut capped = cpu(1, 100, 1_000);
        capped.cap = 10; // at most 10% of a 10 µs interval = 1 µs
        let other = DomainFigures { workload: "latency", ..cpu(1, 5, 50_000) };
        let f = fairness(&[capped, cpu(1, 900, 9_000), other], 10_000, true);
        assert!(f.share_err_max.unwrap() < 1e-9, "{f:?}");
        assert_eq!(fairness(&[other], 10_000, true), Fairness::NONE);
    }

    #[cfg(feature = "std")]
    #[test]
    fn only_events_applied_after_the_start_change_who_competes() {
        use abi::tool::results::Event;
        let event = |at_ns, applied_ns, ok| Event {
            at_ns,
            applied_ns,
            target: "w".into(),
            what: "pause".into(),
            ok,
            error: None,
        };
        let d = [cpu(1, 50, 5_000), cpu(1, 50, 5_000)];
        let judged = |events: &[Event]| of_run(&d, events, 10_000, true);
        assert!(!judged(&[]).1);
        assert!(!judged(&[event(0, Some(10), true)]).1, "at the start");
        assert!(!judged(&[event(5, None, true)]).1, "never applied");
        assert!(judged(&[event(5, Some(6), false)]).1, "refused, maybe partway");
        assert_eq!(judged(&[event(5, Some(6), true)]), (Fairness::NONE, true));
        assert!(judged(&[]).0.share_err_max.unwrap() < 1e-12);
    }

    #[test]
    fn each_pool_is_judged_on_its_own() {
        // Pool a: two equal domains sharing one CPU; pool b: one alone on its CPU. Perfect.
        let a = |d: DomainFigures<'static>| DomainFigures { pool: Some("a"), ..d };
        let b = |d: DomainFigures<'static>| DomainFigures { pool: Some("b"), ..d };
        let d = [a(cpu(1, 50, 5_000)), a(cpu(1, 50, 5_000)), b(cpu(1, 100, 10_000))];
        let f = fairness(&d, 10_000, true);
        assert!(f.share_err_max.unwrap() < 1e-12, "{f:?}");
        assert!((f.jain.unwrap() - 1.0).abs() < 1e-12, "{f:?}");
        // As one machine, the lone domain had twice its share.
        let one = d.map(|x| DomainFigures { pool: None, ..x });
        assert!(fairness(&one, 10_000, true).share_err_max.unwrap() > 0.4);
        // The worst pool sets the figures: a's split 1:3.
        let d = [a(cpu(1, 25, 2_500)), a(cpu(1, 75, 7_500)), b(cpu(1, 100, 10_000))];
        let f = fairness(&d, 10_000, true);
        assert!((f.share_err_max.unwrap() - 0.5).abs() < 1e-12, "{f:?}");
        assert!((f.jain.unwrap() - 0.8).abs() < 1e-12, "{f:?}");
    }
}
