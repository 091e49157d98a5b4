//! The results contract (docs/DESIGN.md "Results"): every kind of record a results file
//! holds, as one Rust type each, written and read through serde.
//!
//! A results file is JSON Lines: one [`Record`] per line, `"kind"` first, then the fields in
//! the order the types below declare them. Every writer serialises these types: the
//! hypervisor (`boot`, `counters`), Domain0 (`run`, `domain`, `window`, `bench`,
//! `progress`), `schedsim` (`run`, `domain`, `window`, `summary`), `schedbench` and `bench-boot` (`bench`), and the runner (`summary`, `exit`).
//! Every reader (the runner, `experiment-checks`, `boot-matrix`, `xtf`, `bench-boot`,
//! `results-check`) parses into them. So a field a writer leaves out or misspells is a compile error, and one
//! missing from or misspelled in a file is a parse error that names it, never a silent 0:
//! - every struct refuses unknown fields (`deny_unknown_fields`);
//! - a required field has no default; a required field that may be `null` (a figure with
//!   nothing to measure, such as `jain` without `cpu` domains) is an `Option` that must
//!   still be present ([`nullable`]);
//! - a field only some engines write is an `Option` that is left out when `None` and is
//!   said to be optional in its doc.
//!
//! Why here, in `abi`: the records are the payload of the console protocol
//! ([`crate::tool::console::RECORD_PREFIX`]), written inside the machine and read on the host, so
//! they belong with the rest of what both sides compile (this crate's purpose). `abi` is
//! `no_std` and forbids unsafe code, so the hypervisor and the no_std Domain0 use it as
//! they are, and it already depends on serde (for the plan and control messages). The
//! module needs `String` and `Vec`, hence the `alloc` feature; JSON itself is the user's
//! choice of serde format (`serde_json`, with `alloc` in the no_std images).
//!
//! Figures are integers, in the unit their name ends with (`_ns`, `_bytes`); shares and
//! indexes are decimals.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Declares a record struct with the contract's field rules (the list in the module's doc)
/// written once, rather than on every field:
/// - the struct refuses unknown fields (`deny_unknown_fields`);
/// - a field of type `Option<T>` is optional: left out when `None`, read as `None` when
///   missing;
/// - a field written `Nullable<T>` is a required field that may be `null`: an `Option<T>`
///   read through [`nullable`], so that it must be present;
/// - any other field is required.
///
/// Each field ends with a comma; attributes and docs pass through as they are.
macro_rules! record {
    (
        $(#[$attr:meta])*
        pub struct $name:ident { $($fields:tt)* }
    ) => {
        record!(@field
            [$(#[$attr])* #[serde(deny_unknown_fields)] pub struct $name] [] $($fields)*);
    };
    (@field [$($head:tt)*] [$($done:tt)*]) => {
        $($head)* { $($done)* }
    };
    (@field $head:tt [$($done:tt)*]
        $(#[$m:meta])* pub $f:ident: Option<$t:ty>, $($rest:tt)*) => {
        record!(@field $head [$($done)*
            $(#[$m])* #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $f: Option<$t>,
        ] $($rest)*);
    };
    (@field $head:tt [$($done:tt)*]
        $(#[$m:meta])* pub $f:ident: Nullable<$t:ty>, $($rest:tt)*) => {
        record!(@field $head [$($done)*
            $(#[$m])* #[serde(deserialize_with = "nullable")] pub $f: Option<$t>,
        ] $($rest)*);
    };
    (@field $head:tt [$($done:tt)*] $(#[$m:meta])* pub $f:ident: $t:ty, $($rest:tt)*) => {
        record!(@field $head [$($done)* $(#[$m])* pub $f: $t,] $($rest)*);
    };
}

/// One line of a results file, tagged by its `"kind"`. (The `run` record is the largest,
/// with its histograms' `Option`s inline: one per run, read and written once, not worth a
/// box.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// The hypervisor is up (written by the hypervisor).
    Boot(Boot),
    /// The experiment and its measured interval (Domain0, schedsim).
    Run(Run),
    /// One domain's figures over the interval (Domain0, schedsim).
    Domain(Domain),
    /// Fairness over the run's domains (schedsim, the runner).
    Summary(Summary),
    /// One benchmark figure (Domain0 with `--bench`, schedbench, bench-boot, scripts/bench).
    Bench(Bench),
    /// One domain's figures over one window of the interval (spec `window_ms`).
    Window(Window),
    /// A timeline event applied (spec `[[event]]`).
    Event(Event),
    /// The policy's own counters since boot (the hypervisor, as it shuts down).
    Counters(Counters),
    /// How the run ended (written last, by the runner).
    Exit(Exit),
    /// How far Domain0 is (creating the domains, measuring), for the console's progress
    /// line; no result.
    Progress(Progress),
}

impl Record {
    /// Its `"kind"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Boot(_) => "boot",
            Record::Run(_) => "run",
            Record::Domain(_) => "domain",
            Record::Summary(_) => "summary",
            Record::Bench(_) => "bench",
            Record::Window(_) => "window",
            Record::Event(_) => "event",
            Record::Counters(_) => "counters",
            Record::Exit(_) => "exit",
            Record::Progress(_) => "progress",
        }
    }

    /// Reads the fields of a record of `kind` (all but `kind` itself) from `body`, as the
    /// derived reader does once it has the tag; for a reader that wraps the deserializer
    /// (the runner, to name the field whose value is at fault). `None` for a kind the
    /// contract does not have.
    pub fn from_fields<'de, D: Deserializer<'de>>(
        kind: &str,
        body: D,
    ) -> Option<Result<Record, D::Error>> {
        Some(match kind {
            "boot" => Boot::deserialize(body).map(Record::Boot),
            "run" => Run::deserialize(body).map(Record::Run),
            "domain" => Domain::deserialize(body).map(Record::Domain),
            "summary" => Summary::deserialize(body).map(Record::Summary),
            "bench" => Bench::deserialize(body).map(Record::Bench),
            "window" => Window::deserialize(body).map(Record::Window),
            "event" => Event::deserialize(body).map(Record::Event),
            "counters" => Counters::deserialize(body).map(Record::Counters),
            "exit" => Exit::deserialize(body).map(Record::Exit),
            "progress" => Progress::deserialize(body).map(Record::Progress),
            _ => return None,
        })
    }
}

/// Reading the records of one file, by kind: `records.run()`, `records.domains()`.
pub trait Records {
    /// The `boot` record, if any (the first if several).
    fn boot(&self) -> Option<&Boot>;
    /// The `run` record, if any.
    fn run(&self) -> Option<&Run>;
    /// Every `domain` record, in file order.
    fn domains(&self) -> impl Iterator<Item = &Domain>;
    /// The `summary` record, if any.
    fn summary(&self) -> Option<&Summary>;
    /// The first `bench` record named `name`.
    fn bench(&self, name: &str) -> Option<&Bench>;
    /// The runner's `exit` record, if any.
    fn exit(&self) -> Option<&Exit>;
}

impl Records for [Record] {
    fn boot(&self) -> Option<&Boot> {
        self.iter().find_map(|r| match r {
            Record::Boot(b) => Some(b),
            _ => None,
        })
    }

    fn run(&self) -> Option<&Run> {
        self.iter().find_map(|r| match r {
            Record::Run(x) => Some(x),
            _ => None,
        })
    }

    fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.iter().filter_map(|r| match r {
            Record::Domain(d) => Some(d),
            _ => None,
        })
    }

    fn summary(&self) -> Option<&Summary> {
        self.iter().find_map(|r| match r {
            Record::Summary(s) => Some(s),
            _ => None,
        })
    }

    fn bench(&self, name: &str) -> Option<&Bench> {
        self.iter().find_map(|r| match r {
            Record::Bench(b) if b.name == name => Some(b),
            _ => None,
        })
    }

    fn exit(&self) -> Option<&Exit> {
        self.iter().find_map(|r| match r {
            Record::Exit(e) => Some(e),
            _ => None,
        })
    }
}

record! {
    /// `boot`: the hypervisor brought its CPUs up.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Boot {
        /// CPUs that came online.
        pub cpus_online: u32,
        /// CPUs the firmware tables (MADT) list.
        pub cpus_found: u32,
        /// The local APIC mode.
        pub apic: Apic,
        /// From the hypervisor's entry to every CPU online.
        pub boot_ns: u64,
        /// The hypervisor the machine runs under, from CPUID (`tcg`, `kvm`, ..., `none`).
        pub accel: String,
        /// How it was booted (`pvh`, `multiboot2`).
        pub protocol: String,
        /// Usable memory found in the firmware's memory map.
        pub memory_bytes: u64,
        /// Optional: where the CPU topology came from: `cpuid-0x1f` or `cpuid-0xb` (extended
        /// topology leaves), `cpuid-1` (leaf 1's logical count and leaf 4's core count), or
        /// `flat` (nothing: one socket, each CPU its own core).
        pub topology: Option<String>,
        /// Optional: sockets found.
        pub sockets: Option<u32>,
        /// Optional: cores per socket (the most in any socket).
        pub cores: Option<u32>,
        /// Optional: hardware threads per core (the most in any core).
        pub threads: Option<u32>,
        /// Optional: each CPU, by index, as `[APIC id, socket, core]`, sockets and cores numbered
        /// densely from 0 (cores across the whole machine): what the scheduler's
        /// `Topology::places` holds.
        pub places: Option<Vec<[u32; 3]>>,
        /// Optional: the hypervisor's heap in use once every CPU is up, before any domain.
        pub heap_bytes: Option<u64>,
        /// Optional: what the spec validator's memory model (`sched::limits::heap_demand`)
        /// allows for that; a run whose `heap_bytes` is larger fails, since the validator could
        /// then accept specs that do not fit.
        pub heap_model_bytes: Option<u64>,
    }
}

/// The local APIC mode of a `boot` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Apic {
    X2apic,
    Xapic,
}

impl Apic {
    /// Its name in a record.
    pub fn name(self) -> &'static str {
        match self {
            Apic::X2apic => "x2apic",
            Apic::Xapic => "xapic",
        }
    }
}

/// What ran the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The hypervisor (Domain0 writes the record).
    Domino,
    /// The simulator.
    Schedsim,
    /// Processes in cgroups on Linux.
    Linux,
}

record! {
    /// `run`: the experiment and its measured interval.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Run {
        /// The spec's name.
        pub name: String,
        pub engine: Engine,
        /// The scheduling policy (of the first pool).
        pub policy: String,
        pub cpus: u32,
        /// Domains of the plan (Domain0 not counted); a churn's lifetimes.
        pub domains: u64,
        /// Optional (the hypervisor only): when the interval began, in system time (the
        /// trace's clock).
        pub start_ns: Option<u64>,
        /// Optional (the hypervisor only): the same instant as wall-clock time, ns since the
        /// Unix epoch (UTC).
        pub wallclock_start_ns: Option<u64>,
        /// Optional (the hypervisor only): Domain0's own CPU time at the end of the interval.
        pub dom0_cpu_ns: Option<u64>,
        /// The measured interval, as it actually was.
        pub duration_ns: u64,
        /// Idle time over the interval, summed over CPUs.
        pub idle_ns: u64,
        /// Optional (schedsim only): the warm-up before the interval.
        pub warmup_ns: Option<u64>,
        /// Optional (schedsim only): the seed of the workloads' randomness.
        pub seed: Option<u64>,
        /// Optional (specs with `[[pool]]`): every pool of the run.
        pub pools: Option<Vec<Pool>>,
        /// Optional: the machine's sockets (the spec's `machine.sockets`, default filled in).
        pub sockets: Option<u32>,
        /// Optional: cores per socket (`machine.cores`).
        pub cores: Option<u32>,
        /// Optional: hardware threads per core (`machine.threads`).
        pub threads: Option<u32>,
        /// Optional (the hypervisor only): how late the timer ended the slices the policy gave,
        /// over the interval and every CPU, `[[upper_bound_ns, count], ...]` in log2 buckets
        /// from 1 µs (empty ones left out; the last bound, u64::MAX, holds those later than
        /// 32.8 ms). What a slice really lasted: an emulated CPU whose host thread waits for a
        /// core ends its slices late (scripts/runner's `host:` note).
        pub slice_late_hist: Option<Vec<(u64, u64)>>,
        /// Optional (the hypervisor only): the median and 99th percentile of that lateness,
        /// as the upper bounds of their buckets.
        pub slice_late_p50_ns: Option<u64>,
        pub slice_late_p99_ns: Option<u64>,
        /// Optional (the hypervisor only, when any CPU was kicked by another): how late the
        /// CPUs' decisions came after the kicks other CPUs sent them (an inter-processor
        /// interrupt each), from the event that made the kick (a wake-up, a tick; a blocking
        /// vCPU's kick of its own CPU is not counted) to the start of the decision it asked for, over the
        /// interval and every CPU ([`Lateness`], in `abi::control::kick_late_bucket`s: four to a
        /// power of two). What a woken vCPU waits for before a CPU elsewhere decides to run it.
        pub kick_late: Option<Lateness>,
        /// Optional (the hypervisor only, when a wake-up kicked another CPU): of those, the
        /// kicks for a vCPU's wake-up, from the wake-up; the rest are the policy's own (a
        /// tick's, a decision's, a `context_saved`'s), which come at other moments and wait
        /// otherwise. What schedsim draws a woken vCPU's kick of another CPU from.
        pub kick_wake_late: Option<Lateness>,
        /// Optional (the hypervisor only, when any CPU kicked itself): the same for the kicks
        /// a CPU made itself (a wake-up handled on the CPU that is to run it), served on its way
        /// out of the hypervisor.
        pub kick_local_late: Option<Lateness>,
        /// Optional (the hypervisor only): how long the CPUs' switches to another vCPU took,
        /// from the end of the decision to the incoming vCPU's address space loaded, over the
        /// interval and every CPU (a [`Lateness`], in the same buckets): the incoming vCPU's
        /// time before it does any work, and under TCG on a loaded host where the host's stalls
        /// often land (arming the timer is an APIC write, served under QEMU's global lock).
        pub switch_time: Option<Lateness>,
        /// Optional (the hypervisor only, when a vCPU set a timer): the same for each
        /// `set_timer` hypercall (a sleeper arming its wake-up before it blocks).
        pub set_timer_time: Option<Lateness>,
        /// Optional (the hypervisor only): of the switches in `switch_time`, those that wrote
        /// the CPU's timer (the hypervisor writes it only when the deadline moves earlier than
        /// the one armed, or that one has passed), counted there too: `switch_time` less these
        /// are the switches that kept the timer as it was ...
        pub switch_armed_time: Option<Lateness>,
        /// ... and of the `set_timer` hypercalls in `set_timer_time`, those that wrote it.
        pub set_timer_armed_time: Option<Lateness>,
        /// Optional (the hypervisor only): how late each sleeper's timer woke it, from its
        /// deadline (the CPU's one hardware timer, as for the slices' ends, in these buckets).
        pub timer_wake_late: Option<Lateness>,
        /// Optional (schedsim only, with a cost profile other than the ideal machine's): the
        /// profile's name (`sched::cost::Profile::name`: its file's `profile` key, or the file
        /// name), so that a result says which machine it models.
        pub profile: Option<String>,
        /// Optional (schedsim only, with `--costs-from` a run with latency domains): the
        /// guest's own side of a switch between domains, ns per switch, fitted to that run
        /// (`sched::cost::fit_guest_switch`) beyond what the profile charges (negative: taken
        /// off its `block_ns`).
        pub guest_switch_ns: Option<i64>,
    }
}

impl Run {
    /// A `run` record with the fields every run has and every optional one left out (the
    /// engine's writer adds those it measures: `Run { start_ns: Some(..), ..Run::new(..) }`).
    pub fn new(
        name: &str,
        engine: Engine,
        policy: &str,
        cpus: u32,
        domains: u64,
        duration_ns: u64,
        idle_ns: u64,
    ) -> Run {
        Run {
            name: name.into(),
            engine,
            policy: policy.into(),
            cpus,
            domains,
            start_ns: None,
            wallclock_start_ns: None,
            dom0_cpu_ns: None,
            duration_ns,
            idle_ns,
            warmup_ns: None,
            seed: None,
            pools: None,
            sockets: None,
            cores: None,
            threads: None,
            slice_late_hist: None,
            slice_late_p50_ns: None,
            slice_late_p99_ns: None,
            kick_late: None,
            kick_wake_late: None,
            kick_local_late: None,
            switch_time: None,
            set_timer_time: None,
            switch_armed_time: None,
            set_timer_armed_time: None,
            timer_wake_late: None,
            profile: None,
            guest_switch_ns: None,
        }
    }
}

record! {
    /// A distribution of delays in a `run` record (`kick_late`, `kick_local_late`).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Lateness {
        /// `[[upper_bound_ns, count], ...]`, non-empty buckets only, in order: a bucket counts
        /// the delays at most its bound and above the bound of the bucket before it in the
        /// layout (`abi::control::kick_late_bound_ns`: 1024 ns, then four to a power of two:
        /// 1280, 1536, 1792, 2048, 2560, ...); the last bound, u64::MAX, holds those later than
        /// 50.3 ms.
        pub hist: Vec<(u64, u64)>,
        /// The median and 99th percentile, as the bounds of the buckets that hold them.
        pub p50_ns: u64,
        pub p99_ns: u64,
    }
}

/// The [`Lateness`] of kick counts per `abi::control::kick_late_bucket`; `None` if none.
pub fn kick_lateness(counts: &[u64; crate::control::KICK_LATE_BUCKETS]) -> Option<Lateness> {
    let bound = |k: usize| crate::control::kick_late_bound_ns(k).unwrap_or(u64::MAX);
    let total: u64 = counts.iter().sum();
    let pct = |p: u64| {
        let want = (total * p).div_ceil(100).max(1);
        let mut seen = 0;
        counts
            .iter()
            .position(|&n| {
                seen += n;
                seen >= want
            })
            .map_or(u64::MAX, bound)
    };
    (total > 0).then(|| Lateness {
        hist: (0..counts.len())
            .filter(|&k| counts[k] > 0)
            .map(|k| (bound(k), counts[k]))
            .collect(),
        p50_ns: pct(50),
        p99_ns: pct(99),
    })
}

record! {
    /// One CPU pool of a `run` record.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Pool {
        pub name: String,
        /// The CPUs it holds.
        pub cpus: Vec<u32>,
        pub policy: String,
    }
}

record! {
    /// `domain`: one domain's figures. Counts and times are over the measured interval; the
    /// wake-up latencies are over the domain's life.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Domain {
        /// Its id (the hypervisor's; spec order in schedsim).
        pub id: u32,
        /// Its own name (`w3`).
        pub name: String,
        /// The spec group it came from (`w`).
        pub group: String,
        pub workload: String,
        pub vcpus: u32,
        /// As planned (256 if the spec gave none).
        pub weight: u64,
        /// Percent of one CPU, 0 = none.
        pub cap: u64,
        /// Time on a CPU.
        pub cpu_ns: u64,
        /// Time runnable but not running.
        pub wait_ns: u64,
        /// The workload's own progress count.
        pub work: u64,
        pub wakeups: u64,
        /// Wake-up to running: median, 99th percentile and largest.
        pub wake_lat_p50_ns: u64,
        pub wake_lat_p99_ns: u64,
        pub wake_lat_max_ns: u64,
        /// Times one of its vCPUs was switched in.
        pub switches: u64,
        /// Times one of its vCPUs ran on another CPU than the time before.
        pub migrations: u64,
        /// How it ended.
        pub exit: Outcome,
        /// Optional (specs with `[[pool]]`): its pool.
        pub pool: Option<String>,
        /// Optional (written by the hypervisor and schedsim): every wake-up latency as
        /// `[upper_bound_ns, count]` pairs in increasing order, log2 buckets from 1 µs
        /// (`abi::control::wake_lat_bucket`: a bucket counts latencies below its bound and at
        /// least half of it, the first everything below 1024 ns), empty buckets left out
        /// ([`wake_lat_hist`]). Over the same span as the percentiles.
        pub wake_lat_hist: Option<Vec<(u64, u64)>>,
        /// Optional (written by the hypervisor, for a domain that set a timer): the
        /// deadline of the last one-shot timer its first vCPU set, system time in ns
        /// (`abi::control::DomainInfo::timer_deadline_ns`): the phase of a periodic
        /// guest's wake-ups, which `schedsim --costs-from` gives its `latency` domain.
        pub timer_deadline_ns: Option<u64>,
    }
}

/// A `domain` record's `wake_lat_hist` from counts per bucket (`abi::control::
/// WAKE_LAT_BUCKETS` of them, bucket `i` below `wake_lat_upper_ns(i)`): the non-empty ones,
/// as `(upper_bound_ns, count)`.
pub fn wake_lat_hist(counts: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    counts
        .into_iter()
        .take(crate::control::WAKE_LAT_BUCKETS)
        .enumerate()
        .filter(|&(_, n)| n > 0)
        .map(|(i, n)| (crate::control::wake_lat_upper_ns(i), n))
        .collect()
}

/// A domain's `exit`: `"ok"` or `"killed: <reason>"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Alive at the end of the interval, or shut down cleanly.
    Ok,
    /// Killed (by the hypervisor, by a crash, or destroyed), for this reason.
    Killed(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        *self == Outcome::Ok
    }

    /// Why it was killed, if it was.
    pub fn killed(&self) -> Option<&str> {
        match self {
            Outcome::Ok => None,
            Outcome::Killed(why) => Some(why),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Killed(why) => write!(f, "killed: {why}"),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Outcome;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"ok\" or \"killed: <reason>\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Outcome, E> {
                match s {
                    "ok" => Ok(Outcome::Ok),
                    _ => match s.strip_prefix("killed: ") {
                        Some(why) if !why.is_empty() => Ok(Outcome::Killed(why.into())),
                        _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                    },
                }
            }
        }
        d.deserialize_str(V)
    }
}

record! {
    /// `summary`: fairness over the run's domains (`sched::summary`, the same code for every
    /// engine).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Summary {
        /// Every domain's `work`, summed.
        pub work_total: u64,
        /// Jain's index of work / weight over the `cpu` domains, per CPU pool (the worst
        /// pool's); `null` without any, and when a timeline event after the interval's start
        /// changed who competed (`sched::summary::of_run`).
        pub jain: Nullable<f64>,
        /// Largest |share − expected| / expected of CPU time over the `cpu` domains (expected:
        /// weighted max-min fair under the caps, of what their pool's cpu domains got), the
        /// worst pool's; `null` as `jain` is.
        pub share_err_max: Nullable<f64>,
        /// Idle time over the interval, summed over CPUs.
        pub idle_ns: u64,
        /// Every domain ended as the spec expected (and none starved).
        pub expected: bool,
        /// Invariant violations seen (schedsim's checks; 0 from the hypervisor's runner).
        pub violations: u64,
        /// Optional (schedsim): the policy's own counters over the measured interval, by name
        /// (`sched::Policy::counters`; credit: `acct_periods`, `credits_handed`,
        /// `credits_rounded_up`, `debt_forgiven`, `debt_forgiven_credits`, `stopped_earning`,
        /// `credit_halved`, `credit_halved_credits`). Left out for a policy without any.
        pub policy_counters: Option<BTreeMap<String, u64>>,
        /// Optional (runs with `window_ms`, both engines): Jain's index of CPU time / weight
        /// over the `cpu` domains in each window, in order, per CPU pool (the worst pool's;
        /// `sched::windows::window_jain`); left out when `jain` is `null` for the events.
        pub window_jain: Option<Vec<f64>>,
    }
}

record! {
    /// `bench`: one benchmark figure, beside the reference it is to be read against.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Bench {
        /// What was measured (`null_hypercall`, `boot_all_cpus_online/cpus=8`).
        pub name: String,
        pub value: Figure,
        /// The unit of `value` (`ns`, `bytes`, `requests_per_s`).
        pub unit: String,
        /// Optional: the reference measured in the same run, in the same unit.
        pub floor: Option<Figure>,
        /// Optional (bench-boot): the CPUs booted.
        pub cpus: Option<u32>,
        /// Optional (bench-boot): the accelerator (`kvm`, `tcg`).
        pub accel: Option<String>,
        /// Optional (bench-boot): QEMU's machine (`pc`, `q35`).
        pub machine: Option<String>,
        /// Optional (bench-boot): every sample `value` is the median of.
        pub samples: Option<Vec<u64>>,
        /// Optional (bench-boot): the host's wall time for one run (the median).
        pub wall_ns: Option<u64>,
    }
}

impl Bench {
    /// A figure with only the required fields (and the reference, if any).
    pub fn new(name: impl Into<String>, value: Figure, unit: &str, floor: Option<Figure>) -> Self {
        Bench {
            name: name.into(),
            value,
            unit: unit.into(),
            floor,
            cpus: None,
            accel: None,
            machine: None,
            samples: None,
            wall_ns: None,
        }
    }
}

/// A benchmark figure: an integer where one was measured (written `310`), a decimal where
/// it is a median of timings or a rate (written `12.5`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Figure {
    Int(u64),
    Real(f64),
}

impl Figure {
    /// The figure as a decimal.
    pub fn as_f64(self) -> f64 {
        match self {
            Figure::Int(n) => n as f64,
            Figure::Real(x) => x,
        }
    }

    /// The figure, if it is an integer.
    pub fn as_u64(self) -> Option<u64> {
        match self {
            Figure::Int(n) => Some(n),
            Figure::Real(_) => None,
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Figure::Int(n) => write!(f, "{n}"),
            Figure::Real(x) => write!(f, "{x}"),
        }
    }
}

impl Serialize for Figure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Figure::Int(n) => s.serialize_u64(n),
            Figure::Real(x) => s.serialize_f64(x),
        }
    }
}

impl<'de> Deserialize<'de> for Figure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Figure;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Figure, E> {
                Ok(Figure::Int(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Figure, E> {
                Ok(match u64::try_from(n) {
                    Ok(n) => Figure::Int(n),
                    Err(_) => Figure::Real(n as f64),
                })
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Figure, E> {
                Ok(Figure::Real(x))
            }
        }
        d.deserialize_any(V)
    }
}

record! {
    /// `window`: one domain's figures over one window of the measured interval (spec
    /// `window_ms`).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Window {
        /// From the start of the interval to the window's end.
        pub t_ns: u64,
        /// The domain's id, as in its `domain` record.
        pub id: u32,
        /// The domain's name.
        pub name: String,
        pub cpu_ns: u64,
        pub wait_ns: u64,
        pub work: u64,
    }
}

record! {
    /// `event`: one `[[event]]` of the spec's timeline, as applied.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Event {
        /// When it was planned, from the start of the interval.
        pub at_ns: u64,
        /// When it was applied; `null` if it never was.
        pub applied_ns: Nullable<u64>,
        /// A domain, group or pool name.
        pub target: String,
        /// What was done (`set weight=1024`, `pause`, `move_to lat`).
        pub what: String,
        pub ok: bool,
        /// Why it failed; `null` when `ok`.
        pub error: Nullable<String>,
    }
}

record! {
    /// `counters`: the scheduling policy's own counters (`sched::Policy::counters`; credit: how
    /// often its clamps fired and what its rounding cost), by name, since boot (warm-up and
    /// Domain0's setup included). Written by the hypervisor as it shuts down, for a policy that
    /// keeps any. (schedsim writes the same counters over the measured interval as the
    /// summary's `policy_counters`.)
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Counters {
        /// The policy (`credit`).
        pub policy: String,
        /// Each counter by name.
        pub counters: BTreeMap<String, u64>,
    }
}

record! {
    /// `exit`: how the run ended, written last by the runner.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Exit {
        /// The exit status of `scripts/run` (0, 1 or 2).
        pub status: i32,
        /// What ended the run.
        pub cause: Cause,
        /// The host's wall time from starting QEMU to its exit.
        pub wall_ns: u64,
        /// The host's cores (QEMU runs each emulated CPU as a host thread).
        pub host_cores: Option<u32>,
        /// Other work on the host while QEMU ran, in cores busy on average (all busy time less
        /// the runner's and QEMU's): with the emulated CPUs it tells whether QEMU's CPU threads
        /// had a core each (scripts/runner `host`).
        pub host_other_load: Option<f64>,
    }
}

/// What ended a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// The hypervisor's own exit code.
    Hypervisor,
    /// The runner's timeout.
    Timeout,
    /// QEMU exited without an exit code (triple fault, reset, power-off).
    Reset,
    /// QEMU failed.
    Qemu,
    /// QEMU was killed by a signal.
    Signal,
}

impl Cause {
    /// Its name in a record.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Hypervisor => "hypervisor",
            Cause::Timeout => "timeout",
            Cause::Reset => "reset",
            Cause::Qemu => "qemu",
            Cause::Signal => "signal",
        }
    }
}

record! {
    /// `progress`: how far Domain0 is, written as it goes (the console's progress line).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Progress {
        pub phase: Phase,
        /// How far: domains created, or ms of the interval measured.
        pub done: u64,
        /// Out of: domains to create, or ms to measure.
        pub total: u64,
    }
}

/// What Domain0 is doing in a `progress` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Creating the domains (`done` of `total` domains).
    Create,
    /// Measuring (`done` of `total` ms of the interval).
    Measure,
}

/// A required field whose value may be `null`: serde reads a missing `Option` field as
/// `None`, which would let a writer drop the field unnoticed; through this it must be there.
fn nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// One record of every kind, with every optional field set, and the fields that may be
    /// left out of each.
    fn samples() -> Vec<(Record, &'static [&'static str])> {
        vec![
            (
                Record::Boot(Boot {
                    cpus_online: 4,
                    cpus_found: 4,
                    apic: Apic::X2apic,
                    boot_ns: 12_345_678,
                    accel: "tcg".into(),
                    protocol: "pvh".into(),
                    memory_bytes: 1 << 30,
                    topology: Some("cpuid-0xb".into()),
                    sockets: Some(2),
                    cores: Some(2),
                    threads: Some(1),
                    places: Some(vec![[0, 0, 0], [1, 0, 1], [2, 1, 2], [3, 1, 3]]),
                    heap_bytes: Some(2 << 20),
                    heap_model_bytes: Some(5 << 20),
                }),
                &[
                    "topology",
                    "sockets",
                    "cores",
                    "threads",
                    "places",
                    "heap_bytes",
                    "heap_model_bytes",
                ],
            ),
            (
                Record::Run(Run {
                    start_ns: Some(500),
                    wallclock_start_ns: Some(1_795_701_909_000_000_000),
                    dom0_cpu_ns: Some(42),
                    warmup_ns: Some(100),
                    seed: Some(7),
                    pools: Some(vec![Pool {
                        name: "lat".into(),
                        cpus: vec![0, 1],
                        policy: "rr".into(),
                    }]),
                    sockets: Some(2),
                    cores: Some(1),
                    threads: Some(1),
                    slice_late_hist: Some(vec![(1000, 3), (u64::MAX, 1)]),
                    slice_late_p50_ns: Some(1000),
                    slice_late_p99_ns: Some(u64::MAX),
                    kick_late: Some(Lateness {
                        hist: vec![(1280, 9), (u64::MAX, 1)],
                        p50_ns: 1280,
                        p99_ns: 1280,
                    }),
                    ..Run::new("weights", Engine::Domino, "credit", 2, 8, 1_000_000, 210)
                }),
                &[
                    "start_ns",
                    "wallclock_start_ns",
                    "dom0_cpu_ns",
                    "warmup_ns",
                    "seed",
                    "pools",
                    "sockets",
                    "cores",
                    "threads",
                    "slice_late_hist",
                    "slice_late_p50_ns",
                    "slice_late_p99_ns",
                    "kick_late",
                ],
            ),
            (Record::Domain(domain()), &["pool", "wake_lat_hist"]),
            (
                Record::Summary(Summary {
                    work_total: 99,
                    jain: Some(0.998),
                    share_err_max: None,
                    idle_ns: 5,
                    expected: true,
                    violations: 0,
                    policy_counters: Some(BTreeMap::from([("acct_periods".into(), 3)])),
                    window_jain: Some(vec![0.5, 0.999]),
                }),
                &["policy_counters", "window_jain"],
            ),
            (
                Record::Bench(Bench {
                    name: "boot_all_cpus_online/cpus=8".into(),
                    value: Figure::Int(310),
                    unit: "ns".into(),
                    floor: Some(Figure::Real(240.5)),
                    cpus: Some(8),
                    accel: Some("tcg".into()),
                    machine: Some("q35".into()),
                    samples: Some(vec![300, 310, 320]),
                    wall_ns: Some(9),
                }),
                &["floor", "cpus", "accel", "machine", "samples", "wall_ns"],
            ),
            (
                Record::Window(Window {
                    t_ns: 100_000_000,
                    id: 3,
                    name: "w2".into(),
                    cpu_ns: 50_000_000,
                    wait_ns: 40_000_000,
                    work: 50_000,
                }),
                &[],
            ),
            (
                Record::Event(Event {
                    at_ns: 2_000_000_000,
                    applied_ns: Some(2_000_100_000),
                    target: "w3".into(),
                    what: "set weight=1024".into(),
                    ok: false,
                    error: Some("no such domain".into()),
                }),
                &[],
            ),
            (
                Record::Counters(Counters {
                    policy: "credit".into(),
                    counters: BTreeMap::from([("credit_halved".into(), 2)]),
                }),
                &[],
            ),
            (
                Record::Exit(Exit {
                    status: 1,
                    cause: Cause::Timeout,
                    wall_ns: 3_000_000_000,
                    host_cores: Some(2),
                    host_other_load: Some(0.25),
                }),
                &["host_cores", "host_other_load"],
            ),
            (
                Record::Progress(Progress {
                    phase: Phase::Measure,
                    done: 1000,
                    total: 4000,
                }),
                &[],
            ),
        ]
    }

    fn domain() -> Domain {
        Domain {
            id: 7,
            name: "w\"0".into(),
            group: "w".into(),
            workload: "latency".into(),
            vcpus: 1,
            weight: 512,
            cap: 50,
            cpu_ns: 4000,
            wait_ns: 2000,
            work: 15,
            wakeups: 15,
            wake_lat_p50_ns: 1000,
            wake_lat_p99_ns: 9000,
            wake_lat_max_ns: 20000,
            switches: 30,
            migrations: 0,
            exit: Outcome::Killed("page fault at 0x0 (rip 0x401000)".into()),
            pool: Some("lat".into()),
            wake_lat_hist: Some(vec![(1024, 3), (4096, 12)]),
            timer_deadline_ns: None,
        }
    }

    fn parse(line: &str) -> Result<Record, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }

    /// The sample as a JSON object (kind first), to take fields out of.
    fn object(r: &Record) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(r).unwrap() {
            serde_json::Value::Object(m) => m,
            v => panic!("not an object: {v}"),
        }
    }

    #[test]
    fn every_kind_round_trips_kind_first() {
        let mut kinds = Vec::new();
        for (r, _) in samples() {
            let line = serde_json::to_string(&r).unwrap();
            assert!(
                line.starts_with(&alloc::format!("{{\"kind\":\"{}\",", r.kind())),
                "{line}"
            );
            assert_eq!(parse(&line).unwrap(), r, "{line}");
            kinds.push(r.kind());
        }
        assert_eq!(
            kinds,
            [
                "boot", "run", "domain", "summary", "bench", "window", "event", "counters", "exit",
                "progress"
            ]
        );
    }

    #[test]
    fn every_kind_is_read_from_its_fields_alone() {
        for (r, _) in samples() {
            let mut m = object(&r);
            m.remove("kind");
            let back = Record::from_fields(r.kind(), serde_json::Value::Object(m));
            assert_eq!(back.unwrap().unwrap(), r);
        }
        assert!(Record::from_fields("nope", serde_json::Value::Null).is_none());
    }

    #[test]
    fn kick_lateness_keeps_the_buckets_and_reads_percentiles_as_bounds() {
        use crate::control::KICK_LATE_BUCKETS;
        let mut counts = [0u64; KICK_LATE_BUCKETS];
        assert_eq!(kick_lateness(&counts), None);
        // 60 kicks within 1024 ns, 38 in (2048, 2560], 2 past 50.3 ms.
        counts[0] = 60;
        counts[5] = 38;
        counts[KICK_LATE_BUCKETS - 1] = 2;
        let l = kick_lateness(&counts).unwrap();
        assert_eq!(l.hist, vec![(1024, 60), (2560, 38), (u64::MAX, 2)]);
        assert_eq!((l.p50_ns, l.p99_ns), (1024, u64::MAX));
        counts[KICK_LATE_BUCKETS - 1] = 0;
        assert_eq!(kick_lateness(&counts).unwrap().p99_ns, 2560);
    }

    #[test]
    fn optional_fields_are_left_out_when_none_and_read_back_as_none() {
        for (r, optional) in samples() {
            let mut m = object(&r);
            for k in optional.iter() {
                m.remove(*k).unwrap();
            }
            let written = serde_json::Value::Object(m);
            let back = parse(&written.to_string()).unwrap();
            // Left out, so never written as `null`.
            assert_eq!(serde_json::to_value(&back).unwrap(), written);
        }
    }

    #[test]
    fn a_missing_required_field_is_an_error_naming_it() {
        for (r, optional) in samples() {
            for k in object(&r).keys().filter(|k| *k != "kind") {
                let mut m = object(&r);
                m.remove(k);
                let line = serde_json::Value::Object(m).to_string();
                match parse(&line) {
                    Ok(_) => assert!(optional.contains(&k.as_str()), "{line} parsed"),
                    Err(e) => {
                        assert!(!optional.contains(&k.as_str()), "{line}: {e}");
                        assert_eq!(e, alloc::format!("missing field `{k}`"), "{line}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_misspelled_field_is_refused_by_name() {
        for (r, _) in samples() {
            for k in object(&r).keys().filter(|k| *k != "kind") {
                let mut m = object(&r);
                let v = m.remove(k).unwrap();
                let wrong = alloc::format!("{k}s");
                m.insert(wrong.clone(), v);
                let line = serde_json::Value::Object(m).to_string();
                let e = parse(&line).unwrap_err();
                assert!(
                    e.starts_with(&alloc::format!("unknown field `{wrong}`")),
                    "{line}: {e}"
                );
            }
        }
    }

    #[test]
    fn kinds_and_values_outside_the_contract_are_refused() {
        let e = parse(r#"{"kind":"domian","id":1}"#).unwrap_err();
        assert!(e.starts_with("unknown variant `domian`"), "{e}");
        let e = parse(r#"{"id":1}"#).unwrap_err();
        assert!(e.contains("missing field `kind`"), "{e}");
        // A domain's exit is `ok` or `killed: <reason>`.
        let mut m = object(&Record::Domain(domain()));
        m.insert("exit".into(), "crashed".into());
        let e = parse(&serde_json::Value::Object(m.clone()).to_string()).unwrap_err();
        assert!(e.contains("\"ok\" or \"killed: <reason>\""), "{e}");
        m.insert("exit".into(), "killed: ".into());
        assert!(parse(&serde_json::Value::Object(m.clone()).to_string()).is_err());
        // A count is a count: not a string, not negative.
        m.insert("exit".into(), "ok".into());
        m.insert("cpu_ns".into(), "12".into());
        assert!(parse(&serde_json::Value::Object(m.clone()).to_string()).is_err());
        m.insert("cpu_ns".into(), (-1).into());
        assert!(parse(&serde_json::Value::Object(m).to_string()).is_err());
        let e = parse(
            r#"{"kind":"boot","cpus_online":1,"cpus_found":1,"apic":"apic","boot_ns":1,"accel":"tcg","protocol":"pvh","memory_bytes":1}"#,
        )
        .unwrap_err();
        assert!(e.contains("unknown variant `apic`"), "{e}");
    }

    #[test]
    fn nullable_figures_are_written_as_null() {
        let s = Summary {
            work_total: 0,
            jain: None,
            share_err_max: None,
            idle_ns: 0,
            expected: false,
            violations: 0,
            policy_counters: None,
            window_jain: None,
        };
        let line = serde_json::to_string(&Record::Summary(s.clone())).unwrap();
        assert_eq!(
            line,
            r#"{"kind":"summary","work_total":0,"jain":null,"share_err_max":null,"idle_ns":0,"expected":false,"violations":0}"#
        );
        assert_eq!(parse(&line).unwrap(), Record::Summary(s));
    }

    #[test]
    fn figures_keep_integers_integers() {
        let b = |line: &str| match parse(line).unwrap() {
            Record::Bench(b) => b,
            r => panic!("{r:?}"),
        };
        let int = r#"{"kind":"bench","name":"null_hypercall","value":310,"unit":"ns","floor":240}"#;
        let got = b(int);
        assert_eq!(
            (got.value, got.floor),
            (Figure::Int(310), Some(Figure::Int(240)))
        );
        assert_eq!(serde_json::to_string(&Record::Bench(got)).unwrap(), int);
        let real = r#"{"kind":"bench","name":"credit/wake_pick/n=1","value":45.0,"unit":"ns"}"#;
        let got = b(real);
        assert_eq!(got.value, Figure::Real(45.0));
        assert_eq!(got.value.as_u64(), None);
        assert_eq!(serde_json::to_string(&Record::Bench(got)).unwrap(), real);
    }

    #[test]
    fn latency_histograms_keep_the_non_empty_buckets_with_their_bounds() {
        let mut counts = [0u64; crate::control::WAKE_LAT_BUCKETS + 3];
        (counts[0], counts[2], counts[31], counts[33]) = (4, 1, 2, 9);
        // Beyond the contract's buckets nothing is read.
        assert_eq!(
            wake_lat_hist(counts),
            [(1024, 4), (4096, 1), (1024 << 31, 2)]
        );
        assert!(wake_lat_hist([0u64; 4]).is_empty());
    }

    #[test]
    fn records_are_found_by_kind() {
        let all: Vec<Record> = samples().into_iter().map(|(r, _)| r).collect();
        assert_eq!(all.boot().unwrap().cpus_online, 4);
        assert_eq!(all.run().unwrap().policy, "credit");
        assert_eq!(all.domains().count(), 1);
        assert_eq!(all.summary().unwrap().work_total, 99);
        assert!(all.bench("boot_all_cpus_online/cpus=8").is_some());
        assert!(all.bench("other").is_none());
        assert_eq!(all.exit().unwrap().cause, Cause::Timeout);
        assert!(all[..0].run().is_none());
        assert_eq!(
            domain().exit.killed(),
            Some("page fault at 0x0 (rip 0x401000)")
        );
        assert_eq!(
            domain().exit.to_string(),
            "killed: page fault at 0x0 (rip 0x401000)"
        );
    }
}
