//! The fairness figures of a run (the `summary` record's `jain` and `share_err_max`),
//! computed the same way for every engine: `schedsim` calls this on its own accounts, and
//! the runner on the `domain` records the hypervisor wrote.

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

/// The fairness of `domains` over a measured interval of `duration_ns`. `weighted` says
/// whether the policy has a `weight` parameter (if not, every domain counts as weight 1).
pub fn fairness(domains: &[DomainFigures], duration_ns: u64, weighted: bool) -> Fairness {
    let cpu: Vec<&DomainFigures> = domains.iter().filter(|d| d.workload == "cpu").collect();
    if cpu.is_empty() {
        return Fairness { jain: None, share_err_max: None };
    }
    let weight = |d: &DomainFigures| if weighted { d.weight as f64 } else { 1.0 };
    let x: Vec<f64> = cpu.iter().map(|d| d.work as f64 / weight(d)).collect();
    let s: f64 = x.iter().sum();
    let s2: f64 = x.iter().map(|v| v * v).sum();
    let jain = if s2 > 0.0 { s * s / (x.len() as f64 * s2) } else { 1.0 };
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
        DomainFigures { workload: "cpu", weight, cap: 0, vcpus: 1, work, cpu_ns }
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
        assert_eq!(fairness(&[other], 10_000, true), Fairness { jain: None, share_err_max: None });
    }
}
