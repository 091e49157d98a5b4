//! The logic of the Linux engine's `/init` (`src/main.rs` does the system calls): how a
//! plan's scheduling parameters become cgroup v2 settings, how a domain's processes are
//! started and paired, and how the kernel's figures read from `/proc` and `/sys/fs/cgroup`.
//!
//! Mapping (README "Linux as a baseline"):
//! - `weight` → `cpu.weight`, unchanged when every weight of the plan is within cgroup's
//!   1..=10000 (Domino's default 256 stays 256: every domain is a sibling cgroup under one
//!   parent, so only the ratios between them count, and those stay exact); a plan with a
//!   weight above 10000 is scaled down by 10000 / its largest weight (at least 1), which keeps
//!   the ratios up to rounding.
//! - `cap` (% of one CPU, 0 = none) → `cpu.max` = `cap × 1000 µs` per 100,000 µs period
//!   (`max` for 0), so 50 is half a CPU and 200 two CPUs, as under Domino's credit cap.

use abi::tool::linux as contract;
use abi::tool::results::Outcome;

/// cgroup v2's `cpu.weight` range.
pub const CPU_WEIGHT_MAX: u64 = 10_000;
/// The `cpu.max` period, in µs.
pub const CPU_MAX_PERIOD_US: u64 = 100_000;

/// The workloads with a Linux build (`workloads`, feature `linux`).
pub const LINUX_WORKLOADS: [&str; 8] = [
    "cpu", "latency", "yield", "io", "switch", "ping", "blk", "net",
];

/// `cpu.weight` for each of the plan's weights (see the module doc).
pub fn cpu_weights(weights: &[u64]) -> Vec<u64> {
    let max = weights.iter().copied().max().unwrap_or(0);
    weights
        .iter()
        .map(|&w| {
            let w = if max > CPU_WEIGHT_MAX {
                (u128::from(w) * u128::from(CPU_WEIGHT_MAX) / u128::from(max)) as u64
            } else {
                w
            };
            w.clamp(1, CPU_WEIGHT_MAX)
        })
        .collect()
}

/// `cpu.max` for a cap (% of one CPU, 0 = none).
pub fn cpu_max(cap: u64) -> String {
    if cap == 0 {
        format!("max {CPU_MAX_PERIOD_US}")
    } else {
        format!(
            "{} {CPU_MAX_PERIOD_US}",
            cap.saturating_mul(CPU_MAX_PERIOD_US / 100)
        )
    }
}

/// The arguments of vCPU `vcpu`'s process (`abi::tool::linux`).
pub fn argv(id: u32, vcpu: u32, vcpus: u32, name: &str, args: &[(&str, u64)]) -> Vec<String> {
    let mut v = vec![
        format!("vcpu={vcpu}"),
        format!("id={id}"),
        format!("vcpus={vcpus}"),
        format!("name={name}"),
    ];
    v.extend(args.iter().map(|(k, n)| format!("{k}={n}")));
    v
}

/// What a planned domain needs to be paired.
pub struct PingRole {
    /// Index in the plan.
    pub index: usize,
    /// 0 pinger, 1 ponger.
    pub role: u64,
    pub pairs: u64,
}

/// The `ping` pairs as plan indexes (pinger, ponger): as under Domino, pinger with id `d`
/// (ids are plan index + 1) answers to ponger `d + pairs`. A pinger whose partner is not a
/// ponger gets no pipes (its first send fails and it ends with code 2).
pub fn ping_pairs(roles: &[PingRole]) -> Vec<(usize, usize)> {
    roles
        .iter()
        .filter(|r| r.role == 0)
        .filter_map(|p| {
            let partner = p.index + p.pairs as usize;
            roles
                .iter()
                .find(|q| q.index == partner && q.role == 1)
                .map(|q| (p.index, q.index))
        })
        .collect()
}

/// `usage_usec` of a `cpu.stat`.
pub fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|l| {
        l.strip_prefix("usage_usec ")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A process's `/proc/PID/schedstat`: time on a CPU (ns), time waiting on a runqueue (ns),
/// time slices run.
pub fn schedstat(text: &str) -> Option<[u64; 3]> {
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `se.nr_migrations` of a `/proc/PID/sched` (kernels with CONFIG_SCHED_DEBUG).
pub fn nr_migrations(sched: &str) -> Option<u64> {
    sched.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "se.nr_migrations")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Idle time of all CPUs from `/proc/stat` (idle + iowait of the `cpu` line), in ns, given
/// the clock ticks per second (USER_HZ).
pub fn idle_ns(proc_stat: &str, ticks_per_s: u64) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let ticks = f.get(3)? + f.get(4).copied().unwrap_or(0);
    Some(ticks * 1_000_000_000 / ticks_per_s.max(1))
}

/// The kernel's fair scheduler by its release: EEVDF from 6.6 on, CFS before.
pub fn fair_policy(release: &str) -> &'static str {
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (6, 6) {
        "eevdf"
    } else {
        "cfs"
    }
}

/// How a domain's process ended, as a `domain` record's `exit` (Domino's wording for a
/// nonzero shutdown: `crashed (shutdown code N)`).
pub fn outcome(code: Option<i32>, signal: Option<i32>) -> Outcome {
    match (code, signal) {
        (Some(0), _) => Outcome::Ok,
        (Some(n), _) => Outcome::Killed(format!("crashed (shutdown code {n})")),
        (None, Some(s)) => Outcome::Killed(format!("signal {s}")),
        (None, None) => Outcome::Killed("ended".into()),
    }
}

/// Median, 99th percentile and largest wake-up latency from a domain's wake-up page: the
/// percentiles are their buckets' upper bounds (at most 25% above), never above the largest.
pub fn wake_latencies(stats: &[u64]) -> (u64, u64, u64) {
    let hist = &stats[contract::HIST..contract::HIST + contract::HIST_BUCKETS];
    let max = stats[contract::WAKE_MAX_NS];
    (
        contract::percentile(hist, 500).min(max),
        contract::percentile(hist, 990).min(max),
        max,
    )
}

/// The `domain` record's `wake_lat_hist` (log2 buckets from 1 µs, `abi::control::
/// wake_lat_bucket`) from a wake-up page: each of its buckets lies within one power of two,
/// so it falls whole into one log2 bucket.
pub fn wake_lat_hist(stats: &[u64]) -> Vec<(u64, u64)> {
    let hist = &stats[contract::HIST..contract::HIST + contract::HIST_BUCKETS];
    let mut counts = [0u64; abi::control::WAKE_LAT_BUCKETS];
    for (i, &n) in hist.iter().enumerate() {
        let lowest = if i == 0 {
            0
        } else {
            contract::bucket_upper(i - 1).saturating_add(1)
        };
        let b = abi::control::wake_lat_bucket(lowest).min(counts.len() - 1);
        counts[b] += n;
    }
    abi::tool::results::wake_lat_hist(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_keep_their_ratios() {
        assert_eq!(cpu_weights(&[256, 512, 1]), [256, 512, 1]);
        assert_eq!(cpu_weights(&[256]), [256]);
        // Above cgroup's range: scaled so the largest is 10000.
        assert_eq!(cpu_weights(&[65535, 32768, 1]), [10000, 5000, 1]);
        assert_eq!(cpu_weights(&[20000, 10000]), [10000, 5000]);
        assert_eq!(cpu_weights(&[0]), [1]);
        assert!(cpu_weights(&[]).is_empty());
    }

    #[test]
    fn caps_are_quota_per_period() {
        assert_eq!(cpu_max(0), "max 100000");
        assert_eq!(cpu_max(50), "50000 100000");
        assert_eq!(cpu_max(200), "200000 100000");
        assert_eq!(cpu_max(1), "1000 100000");
    }

    #[test]
    fn argv_carries_identity_then_arguments() {
        assert_eq!(
            argv(3, 1, 2, "w2", &[("units", 5), ("unit_iters", 8192)]),
            [
                "vcpu=1",
                "id=3",
                "vcpus=2",
                "name=w2",
                "units=5",
                "unit_iters=8192"
            ]
        );
    }

    #[test]
    fn pings_pair_as_under_domino() {
        let r = |index, role, pairs| PingRole { index, role, pairs };
        // Two pingers (plan 0, 1), two pongers (2, 3), then a pinger without a partner.
        let roles = [r(0, 0, 2), r(1, 0, 2), r(2, 1, 2), r(3, 1, 2), r(4, 0, 2)];
        assert_eq!(ping_pairs(&roles), [(0, 2), (1, 3)]);
        // A partner that is itself a pinger is no partner.
        assert!(ping_pairs(&[r(0, 0, 1), r(1, 0, 1)]).is_empty());
    }

    #[test]
    fn proc_and_cgroup_files() {
        let stat = "usage_usec 1234567\nuser_usec 1000\nsystem_usec 234567\n";
        assert_eq!(usage_usec(stat), Some(1_234_567));
        assert_eq!(usage_usec("user_usec 1\n"), None);
        assert_eq!(schedstat("5000 700 12\n"), Some([5000, 700, 12]));
        assert_eq!(schedstat("5000 x 12"), None);
        let sched = "cpu (1, #threads: 1)\n-----\nse.exec_start : 10.5\nse.nr_migrations   :   7\n";
        assert_eq!(nr_migrations(sched), Some(7));
        assert_eq!(nr_migrations("se.exec_start : 1\n"), None);
        let proc_stat = "cpu  10 0 20 300 5 0 0 0 0 0\ncpu0 5 0 10 150 2 0 0 0 0 0\n";
        assert_eq!(idle_ns(proc_stat, 100), Some(3_050_000_000));
    }

    #[test]
    fn policy_by_release() {
        assert_eq!(fair_policy("6.1.0-57-amd64"), "cfs");
        assert_eq!(fair_policy("6.6.1"), "eevdf");
        assert_eq!(fair_policy("6.12.9-amd64"), "eevdf");
        assert_eq!(fair_policy("5.10.0"), "cfs");
    }

    #[test]
    fn outcomes_in_domino_words() {
        assert_eq!(outcome(Some(0), None), Outcome::Ok);
        assert_eq!(
            outcome(Some(2), None).to_string(),
            "killed: crashed (shutdown code 2)"
        );
        assert_eq!(outcome(None, Some(9)).to_string(), "killed: signal 9");
    }

    #[test]
    fn wake_latency_figures() {
        let mut stats = vec![0u64; contract::HIST + contract::HIST_BUCKETS];
        stats[contract::WAKE_MAX_NS] = 9_000_000;
        stats[contract::HIST + contract::bucket(50_000)] = 100;
        stats[contract::HIST + contract::bucket(9_000_000)] = 1;
        let (p50, p99, max) = wake_latencies(&stats);
        assert_eq!(p50, contract::bucket_upper(contract::bucket(50_000)));
        assert_eq!(p99, p50);
        assert_eq!(max, 9_000_000);
        // Two of 100 at the largest: the 99th percentile is in its bucket, capped at it.
        stats[contract::HIST + contract::bucket(9_000_000)] = 2;
        let (_, p99, _) = wake_latencies(&stats);
        assert_eq!(p99, 9_000_000);
        // The same wake-ups in the records' log2 buckets: 50 µs below 65536 ns, 9 ms below
        // 2^24 ns; one below 1 µs in the first.
        stats[contract::HIST + contract::bucket(700)] = 1;
        assert_eq!(
            wake_lat_hist(&stats),
            [(1024, 1), (65_536, 100), (1 << 24, 2)]
        );
        // Every fine bucket lies within one log2 bucket.
        for i in 1..=contract::bucket(u64::MAX) {
            let lowest = contract::bucket_upper(i - 1) + 1;
            assert_eq!(
                abi::control::wake_lat_bucket(lowest),
                abi::control::wake_lat_bucket(contract::bucket_upper(i)),
                "bucket {i}"
            );
        }
    }
}
