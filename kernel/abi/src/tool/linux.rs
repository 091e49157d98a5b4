//! The Linux engine's contract between its `/init` (`scripts/linux-init`) and the guest
//! runtime's Linux back end (`workloads`, feature `linux`): how a domain's processes find
//! their counters, their event pipes and their arguments, and how the workloads record their
//! own wake-up latencies for `/init` to report.
//!
//! `/init` starts every vCPU of a domain as a process of the workload's Linux build with
//! these arguments (`argv[1..]`, each `key=value`): `vcpu`, `id`, `vcpus`, `name`, then the
//! workload's own arguments. File descriptor [`COUNTERS_FD`] is a memory file of
//! [`FILE_BYTES`] shared by the domain's processes and `/init`: its first page is laid out as
//! `crate::shared::Counters` (the workload adds to `work[vcpu]`), its second page holds the
//! wake-up figures as `u64` words at the indexes below ([`STATS_OFFSET`]). A `ping` domain
//! also gets [`SEND_FD`] and [`RECV_FD`], the two ends of the pipes to its partner.
//!
//! Split devices (`blk`, `net`): the counters file is a file of the tmpfs at [`DOMAIN_DIR`],
//! named by the domain's id, [`DOMAIN_FILE_BYTES`] long, so that the other domains can open
//! it. After the two pages above come the table page ([`TABLE_OFFSET`]: the domain's event
//! ports and grants, words below) and its grant pages ([`GRANT_OFFSET`]: grant reference `r`
//! is page `r - 1`). A granted page of the program becomes a shared mapping of its grant page;
//! a grantee maps that page or copies to and from it; an event sets the port's pending bit in
//! the receiver's counters page and wakes the receiver's futex ([`EVENT_SEQ`]). The workloads
//! keep the rules the hypervisor enforces (a grant names its grantee and whether it is
//! read-only; a port is bound only by the domain it was allocated for); Linux itself does
//! not (every domain's file is open to every other).

/// The tmpfs directory of the domains' files (`/init` mounts it): `DOMAIN_DIR/<id>`.
pub const DOMAIN_DIR: &str = "/run/domains";
/// Byte offset of the table page in a domain's file.
pub const TABLE_OFFSET: usize = 2 * PAGE;
/// Byte offset of the first grant page (grant reference 1).
pub const GRANT_OFFSET: usize = 3 * PAGE;
/// Grants a domain can make (references 1..=MAX_GRANTS).
pub const MAX_GRANTS: usize = 64;
/// Ports a domain can have (1..MAX_LINUX_PORTS).
pub const MAX_LINUX_PORTS: usize = 128;
/// The length of a domain's file (sparse: pages never written take no memory).
pub const DOMAIN_FILE_BYTES: usize = GRANT_OFFSET + MAX_GRANTS * PAGE;
/// Word index in the table page: the event futex (its low 32 bits), bumped by every event
/// sent to the domain.
pub const EVENT_SEQ: usize = 0;
/// Word index in the table page: CLOCK_MONOTONIC of the last event sent to the domain (the
/// wake-up a waiter records runs from it).
pub const EVENT_SENT_NS: usize = 1;
/// Word index in the table page of port 0's entry ([`port_entry`]).
pub const PORTS: usize = 8;
/// Word index in the table page of grant 1's entry ([`grant_entry`]).
pub const GRANTS: usize = PORTS + MAX_LINUX_PORTS;

/// A port entry: 0 free; allocated for `remote` to bind; or bound to `remote`'s `remote_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Free,
    Unbound { remote: u32 },
    Bound { remote: u32, remote_port: u32 },
}

const UNBOUND: u64 = 1 << 62;
const BOUND: u64 = 2 << 62;

/// A port entry as its table word.
pub const fn port_entry(p: Port) -> u64 {
    match p {
        Port::Free => 0,
        Port::Unbound { remote } => UNBOUND | remote as u64,
        Port::Bound {
            remote,
            remote_port,
        } => BOUND | (remote_port as u64) << 32 | remote as u64,
    }
}

/// A table word as a port entry.
pub const fn port_of(word: u64) -> Port {
    match word >> 62 {
        1 => Port::Unbound {
            remote: word as u32,
        },
        2 => Port::Bound {
            remote: word as u32,
            remote_port: ((word >> 32) as u32) & 0x3fff_ffff,
        },
        _ => Port::Free,
    }
}

/// A grant entry's word: valid, to `grantee`, read-only or not (0 = no grant).
pub const fn grant_entry(grantee: u32, readonly: bool) -> u64 {
    1 << 63 | (readonly as u64) << 62 | grantee as u64
}

/// A grant entry: `(grantee, readonly)`, or `None` for no grant.
pub const fn grant_of(word: u64) -> Option<(u32, bool)> {
    if word >> 63 == 0 {
        None
    } else {
        Some((word as u32, (word >> 62) & 1 == 1))
    }
}

/// The counters file (a memfd), shared by `/init` and the domain's processes.
pub const COUNTERS_FD: i32 = 3;
/// Where a `ping` domain writes its events (the partner reads them at its [`RECV_FD`]).
pub const SEND_FD: i32 = 4;
/// Where a `ping` domain reads its partner's events.
pub const RECV_FD: i32 = 5;

/// The page size of the counters file.
pub const PAGE: usize = 4096;
/// The counters file: the counters page, then the wake-up page.
pub const FILE_BYTES: usize = 2 * PAGE;
/// Byte offset of the wake-up page in the file.
pub const STATS_OFFSET: usize = PAGE;

/// Word index in the wake-up page: wake-ups measured so far (all vCPUs).
pub const WAKEUPS: usize = 0;
/// Word index: the largest wake-up latency so far, in ns.
pub const WAKE_MAX_NS: usize = 1;
/// Word index: wake-ups due before this CLOCK_MONOTONIC instant are not recorded. `/init`
/// clears the page and sets this at the start of the measured interval (while the domains
/// are frozen), so the figures cover the interval, and a sleeper whose deadline passed while
/// it was frozen for a snapshot does not count the freeze as its latency.
pub const EPOCH_NS: usize = 2;
/// Word index of the first histogram bucket.
pub const HIST: usize = 8;
/// Histogram buckets: four per power of two of nanoseconds (see [`bucket`]).
pub const HIST_BUCKETS: usize = 256;

/// The bucket of a latency: exact below 4 ns, then four buckets per power of two, so a
/// bucket's upper bound is at most 25% above any value in it.
pub const fn bucket(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros() as usize; // 2..=63
    let sub = ((ns >> (e - 2)) & 3) as usize;
    4 * (e - 1) + sub
}

/// The largest latency that falls in bucket `i`.
pub const fn bucket_upper(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let e = i / 4 + 1;
    let sub = (i % 4) as u64;
    // The last bucket a u64 reaches (251) ends at u64::MAX; the four after it stay empty.
    if e >= 64 || (e == 63 && sub == 3) {
        return u64::MAX;
    }
    ((5 + sub) << (e - 2)) - 1
}

/// The `q`-th per-mille latency (500: median, 990: 99th percentile) of a histogram, as the
/// upper bound of its bucket; 0 for an empty histogram.
pub fn percentile(hist: &[u64], permille: u64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    // The smallest bucket by which at least q of the values are counted (nearest rank).
    let rank = (total * permille).div_ceil(1000).max(1);
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return bucket_upper(i);
        }
    }
    bucket_upper(hist.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_and_bound_them_within_a_quarter() {
        for ns in (0..5000).chain([1 << 20, 999_999, u64::MAX / 3, u64::MAX]) {
            let i = bucket(ns);
            assert!(i < HIST_BUCKETS, "{ns}");
            assert!(ns <= bucket_upper(i), "{ns} above its bucket {i}");
            if i > 0 {
                assert!(ns > bucket_upper(i - 1), "{ns} fits bucket {}", i - 1);
            }
            assert!(
                bucket_upper(i) - ns <= ns / 4 + 1,
                "{ns}: bound {}",
                bucket_upper(i)
            );
        }
    }

    #[test]
    fn table_entries_round_trip() {
        for p in [
            Port::Free,
            Port::Unbound { remote: 7 },
            Port::Bound {
                remote: u32::MAX,
                remote_port: 127,
            },
        ] {
            assert_eq!(port_of(port_entry(p)), p);
        }
        assert_eq!(grant_of(0), None);
        assert_eq!(grant_of(grant_entry(0, true)), Some((0, true)));
        assert_eq!(grant_of(grant_entry(9, false)), Some((9, false)));
        const { assert!(GRANTS + MAX_GRANTS <= PAGE / 8) };
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut hist = [0u64; HIST_BUCKETS];
        assert_eq!(percentile(&hist, 500), 0);
        // 98 wake-ups of 1000 ns, 2 of 1 ms.
        hist[bucket(1000)] += 98;
        hist[bucket(1_000_000)] += 2;
        assert_eq!(percentile(&hist, 500), bucket_upper(bucket(1000)));
        assert_eq!(percentile(&hist, 980), bucket_upper(bucket(1000)));
        assert_eq!(percentile(&hist, 990), bucket_upper(bucket(1_000_000)));
        assert!(bucket_upper(bucket(1000)) >= 1000 && bucket_upper(bucket(1000)) < 1250);
    }
}
