//! The experiment plan: the spec, expanded by the runner into one entry per domain, that
//! Domain0 carries out.
//!
//! The runner parses and validates the TOML spec on the host (`sched::spec`), then writes
//! this plan, postcard-encoded, into the boot module; the hypervisor maps it read-only into
//! Domain0 at [`crate::layout::PLAN`]. Domain0 needs no TOML parser, and every spec error is
//! caught before boot.

use serde::{Deserialize, Serialize};

use crate::control::SchedParams;

/// The plan's file name in the boot module (a ustar archive).
pub const FILE: &str = "plan";
/// Domain0's image name in the boot module; every other image is named by its workload.
pub const DOM0_IMAGE: &str = "dom0";

/// The error of encoding or decoding a plan (postcard's).
pub use postcard::Error as CodecError;

/// Most domains a plan may hold (besides Domain0).
pub const MAX_DOMAINS: usize = 1024;

/// What a correct hypervisor does to a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// It runs until the end of the measured interval and is destroyed by Domain0.
    Ok,
    /// The hypervisor kills it (hostile workloads).
    Killed,
}

/// One domain to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDomain<'a> {
    /// Its own name (`w3`).
    pub name: &'a str,
    /// The spec group it came from (`w`).
    pub group: &'a str,
    /// The workload, which is also the name of its image in the boot module.
    pub workload: &'a str,
    pub vcpus: u32,
    pub memory_kib: u32,
    /// The per-domain parameters of the policy in force that the spec gives (the others
    /// take the policy's defaults).
    pub sched: SchedParams,
    /// The weight and the cap (% of one CPU) the spec gives, 256 and 0 if it gives none,
    /// whatever the policy: what the `domain` record reports.
    pub weight: u32,
    pub cap: u32,
    pub expect: Expect,
    /// The CPU pool it starts in: an index into the spec's `[[pool]]`s (0 without any).
    pub pool: u32,
    /// First argument's index in [`Plan::args`], and how many.
    pub args_start: u32,
    pub args_len: u32,
}

/// The whole experiment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan<'a> {
    pub name: &'a str,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub cpus: u32,
    /// The machine's shape QEMU was given: sockets, cores per socket, threads per core
    /// (`sched::spec::Shape`), for the `run` record.
    pub shape: [u32; 3],
    pub policy: &'a str,
    /// Every planned domain, in spec order. Encoded as a sequence; Domain0 walks it with
    /// [`Plan::domains`] without allocating.
    #[serde(borrow)]
    pub domains: Domains<'a>,
    /// Workload arguments of all domains, as (name, value).
    #[serde(borrow)]
    pub args: Args<'a>,
    /// Whether Domain0 also runs the micro-benchmarks (null hypercall and its floor, the
    /// domain-switch floor, domain creation) and writes `bench` records.
    pub bench: bool,
    /// Churn instead of a measured interval: rounds of the planned domains' lifetimes.
    pub churn: Option<Churn>,
    /// Results over time: a `window` record per domain per window of this many ms of the
    /// measured interval (0 = none).
    pub window_ms: u64,
    /// The spec's timeline (`[[event]]`), in the order Domain0 applies it: a sequence of
    /// [`PlannedEvent`]s.
    #[serde(borrow)]
    pub events: Events<'a>,
    /// How many `[[pool]]`s the spec has (0: none, one pool of every CPU). The hypervisor
    /// was booted with them (`pool.<name>.*` command-line words), in this order.
    pub pools: u32,
}

/// What one event of the timeline does (`sched::timeline::Op`; the operations Domain0
/// applies through the control hypercalls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventOp {
    /// Set these per-domain parameters of each target domain (`SetSched`).
    Set(SchedParams),
    /// Set these global knobs of the target pool's policy (`SetSchedParam`).
    SetGlobal(SchedParams),
    /// `Pause` each target domain.
    Pause,
    /// `Unpause` each target domain.
    Unpause,
    /// Start each target domain: created paused with `start = "event"`, now unpaused.
    Start,
    /// Destroy each target domain: Domain0 keeps its figures up to then (its record's).
    Destroy,
    /// Move each target domain to pool [`PlannedEvent::pool`] (`MoveToPool`).
    MoveTo,
    /// Replace pool [`PlannedEvent::pool`]'s policy with [`PlannedEvent::policy`]
    /// (`SetPoolPolicy`).
    SetPolicy,
}

/// One `[[event]]`, resolved (`sched::timeline::Step`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEvent<'a> {
    /// When, from the start of the measured interval.
    pub at_ms: u64,
    /// The target as the spec names it (a group, a domain or a pool), for the record.
    pub target: &'a str,
    /// What it does in words (`set weight=1024`), for the record.
    pub what: &'a str,
    pub op: EventOp,
    /// The domains it applies to: plan indices `first..first + count` (a group's domains
    /// are consecutive); none for a pool target.
    pub first: u32,
    pub count: u32,
    /// The pool a pool target, `MoveTo` or `SetPolicy` names (0 otherwise).
    pub pool: u32,
    /// The policy `SetPolicy` installs ("" otherwise).
    pub policy: &'a str,
}

/// The timeline, as encoded bytes that decode lazily.
pub type Events<'a> = EncodedSeq<'a>;

impl<'a> Plan<'a> {
    /// The timeline's events, in the order they are applied.
    pub fn events(&self) -> impl Iterator<Item = Result<PlannedEvent<'a>, postcard::Error>> + 'a {
        self.events.iter()
    }
}

/// The spec's `[churn]` (`sched::spec::Churn`): Domain0 creates and destroys the planned
/// domains in rounds, `lifetimes` domains in all, checking every `check_every` lifetimes
/// that the hypervisor's frames, ports, grants and heap are back at their baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Churn {
    pub lifetimes: u64,
    /// Longest a round runs before its survivors are destroyed (each draws 0..=run_ms).
    pub run_ms: u64,
    pub check_every: u64,
    /// Seed of the per-lifetime choices.
    pub seed: u64,
}

/// The planned domains, as encoded bytes that decode lazily.
pub type Domains<'a> = EncodedSeq<'a>;
/// The workload arguments, as encoded bytes that decode lazily.
pub type Args<'a> = EncodedSeq<'a>;

/// A sequence stored as its own postcard encoding (a count, then each element), so that a
/// reader without an allocator can walk it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedSeq<'a> {
    pub count: u32,
    #[serde(borrow)]
    pub bytes: &'a [u8],
}

impl<'a> EncodedSeq<'a> {
    /// Decodes the elements one by one; a malformed element ends the walk with an error.
    pub fn iter<T: Deserialize<'a>>(
        &self,
    ) -> impl Iterator<Item = Result<T, postcard::Error>> + 'a {
        let mut rest = self.bytes;
        let mut left = self.count;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            match postcard::take_from_bytes::<T>(rest) {
                Ok((item, tail)) => {
                    rest = tail;
                    Some(Ok(item))
                }
                Err(e) => {
                    left = 0;
                    Some(Err(e))
                }
            }
        })
    }
}

impl<'a> Plan<'a> {
    /// The planned domains.
    pub fn domains(&self) -> impl Iterator<Item = Result<PlannedDomain<'a>, postcard::Error>> + 'a {
        self.domains.iter()
    }

    /// The arguments of one planned domain.
    pub fn args_of(&self, d: &PlannedDomain<'a>) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let (start, len) = (d.args_start as usize, d.args_len as usize);
        self.args
            .iter::<(&'a str, u64)>()
            .skip(start)
            .take(len)
            .filter_map(Result::ok)
    }
}

/// Encodes elements as the bytes of an [`EncodedSeq`] (host side, for the runner).
#[cfg(feature = "alloc")]
pub fn encode_seq<T: Serialize>(items: &[T]) -> Result<alloc::vec::Vec<u8>, postcard::Error> {
    let mut out = alloc::vec::Vec::new();
    for item in items {
        out.extend(postcard::to_allocvec(item)?);
    }
    Ok(out)
}

/// Encodes a whole plan (host side, for the runner).
#[cfg(feature = "alloc")]
pub fn encode(plan: &Plan<'_>) -> Result<alloc::vec::Vec<u8>, postcard::Error> {
    postcard::to_allocvec(plan)
}

/// Decodes a plan from the bytes the hypervisor mapped.
pub fn decode(bytes: &[u8]) -> Result<Plan<'_>, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use super::*;
    use alloc::vec::Vec;

    fn encode_seq<T: Serialize>(items: &[T]) -> Vec<u8> {
        super::encode_seq(items).unwrap()
    }

    #[test]
    fn plan_round_trips_and_walks_without_allocating() {
        let d = |name, args_start, args_len| PlannedDomain {
            name,
            group: "w",
            workload: "latency",
            vcpus: 1,
            memory_kib: 1024,
            sched: SchedParams::from_pairs([("weight", 512)]).unwrap(),
            weight: 512,
            cap: 0,
            expect: Expect::Ok,
            pool: 0,
            args_start,
            args_len,
        };
        let domains = encode_seq(&[d("w0", 0, 2), d("w1", 2, 1)]);
        let args = encode_seq(&[("period_us", 1000u64), ("run_us", 50), ("period_us", 2000)]);
        let event = PlannedEvent {
            at_ms: 500,
            target: "w",
            what: "set weight=1024",
            op: EventOp::Set(SchedParams::from_pairs([("weight", 1024)]).unwrap()),
            first: 0,
            count: 2,
            pool: 0,
            policy: "",
        };
        let events = encode_seq(&[event]);
        let plan = Plan {
            name: "t",
            duration_ms: 1000,
            warmup_ms: 100,
            cpus: 2,
            shape: [1, 2, 1],
            policy: "credit",
            domains: EncodedSeq {
                count: 2,
                bytes: &domains,
            },
            args: EncodedSeq {
                count: 3,
                bytes: &args,
            },
            bench: true,
            churn: Some(Churn {
                lifetimes: 300,
                run_ms: 20,
                check_every: 100,
                seed: 7,
            }),
            window_ms: 100,
            events: EncodedSeq {
                count: 1,
                bytes: &events,
            },
            pools: 0,
        };
        let bytes = encode(&plan).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back, plan);
        let ds: Vec<_> = back.domains().map(Result::unwrap).collect();
        assert_eq!(ds.len(), 2);
        assert_eq!(
            back.args_of(&ds[0]).collect::<Vec<_>>(),
            [("period_us", 1000), ("run_us", 50)]
        );
        assert_eq!(
            back.args_of(&ds[1]).collect::<Vec<_>>(),
            [("period_us", 2000)]
        );
        let es: Vec<_> = back.events().map(Result::unwrap).collect();
        assert_eq!(es, [event]);
    }

    #[test]
    fn truncated_sequence_reports_an_error() {
        let seq = EncodedSeq {
            count: 2,
            bytes: &[1],
        };
        let items: Vec<Result<(u8, u8), _>> = seq.iter().collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }
}
