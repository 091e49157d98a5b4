//! Domain0's control operations (`domctl`, `sysctl`), as postcard-encoded requests and
//! replies.
//!
//! Control calls are rare and structured, so they travel as encoded messages rather than
//! `#[repr(C)]` structs: the hypervisor copies the request bytes out of the guest and decodes
//! them, so no guest pointer is ever trusted beyond one checked copy, and the format can grow
//! without breaking old callers. The hot paths (yield, block, timer, console) use registers.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Errno;
use crate::shared::MAX_ARGS;

/// Identifies a domain. Domain0 is 0.
pub type DomainId = u32;

/// Most per-domain scheduling parameters a domain carries ([`SchedParams`]).
pub const MAX_SCHED_PARAMS: usize = 8;
/// Longest per-domain scheduling parameter name, in bytes.
pub const SCHED_PARAM_NAME_BYTES: usize = 24;

/// One per-domain scheduling parameter: a name and its value.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SchedParam {
    name: [u8; SCHED_PARAM_NAME_BYTES],
    len: u8,
    value: u64,
}

impl SchedParam {
    const EMPTY: SchedParam = SchedParam {
        name: [0; SCHED_PARAM_NAME_BYTES],
        len: 0,
        value: 0,
    };

    fn name(&self) -> &str {
        // Only `SchedParams::push` writes names, from a `&str` cut at its own length.
        core::str::from_utf8(&self.name[..usize::from(self.len)]).unwrap_or("")
    }
}

/// A domain's scheduling parameters: up to [`MAX_SCHED_PARAMS`] (name, value) pairs, named
/// as the policy in force declares them (`xl`'s spelling with the unit: `weight`, `cap`,
/// `warp_us`, or any name a new policy declares). Those not given take the policy's
/// defaults, so an empty list means "all defaults". The hypervisor hands every pair to the
/// policy, which refuses (`Errno::Inval`) a name it does not declare or a value out of
/// range; names, count and length are checked when a list is built ([`SchedParams::push`])
/// and when one is decoded.
///
/// Encoded as a sequence of `(name, value)` in the order given.
#[derive(Clone, Copy, Default)]
pub struct SchedParams {
    len: u8,
    entries: [SchedParam; MAX_SCHED_PARAMS],
}

impl Default for SchedParam {
    fn default() -> Self {
        SchedParam::EMPTY
    }
}

/// Why a [`SchedParams`] cannot hold a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedParamError {
    /// Already [`MAX_SCHED_PARAMS`] pairs.
    TooMany,
    /// A name of this many bytes: longer than [`SCHED_PARAM_NAME_BYTES`].
    NameTooLong(usize),
    /// An empty name.
    EmptyName,
    /// The name is already in the list.
    Duplicate,
}

impl fmt::Display for SchedParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedParamError::TooMany => write!(
                f,
                "too many per-domain scheduling parameters; allowed: at most {MAX_SCHED_PARAMS}"
            ),
            SchedParamError::NameTooLong(len) => write!(
                f,
                "the name is {len} bytes; allowed: at most {SCHED_PARAM_NAME_BYTES}"
            ),
            SchedParamError::EmptyName => write!(f, "the name is empty"),
            SchedParamError::Duplicate => write!(f, "given twice"),
        }
    }
}

impl SchedParams {
    /// No parameters: every one at the policy's default.
    pub const fn new() -> Self {
        SchedParams {
            len: 0,
            entries: [SchedParam::EMPTY; MAX_SCHED_PARAMS],
        }
    }

    /// The list of `pairs`, in order; the first pair that does not fit is an error.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<Self, (&'a str, SchedParamError)> {
        let mut params = SchedParams::new();
        for (name, value) in pairs {
            params.push(name, value).map_err(|e| (name, e))?;
        }
        Ok(params)
    }

    /// Adds `name = value` at the end.
    pub fn push(&mut self, name: &str, value: u64) -> Result<(), SchedParamError> {
        if name.is_empty() {
            return Err(SchedParamError::EmptyName);
        }
        if name.len() > SCHED_PARAM_NAME_BYTES {
            return Err(SchedParamError::NameTooLong(name.len()));
        }
        if self.get(name).is_some() {
            return Err(SchedParamError::Duplicate);
        }
        let slot = self
            .entries
            .get_mut(usize::from(self.len))
            .ok_or(SchedParamError::TooMany)?;
        slot.name[..name.len()].copy_from_slice(name.as_bytes());
        slot.len = name.len() as u8;
        slot.value = value;
        self.len += 1;
        Ok(())
    }

    /// The value given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The pairs, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.entries[..usize::from(self.len)]
            .iter()
            .map(|p| (p.name(), p.value))
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// No pairs at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl PartialEq for SchedParams {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for SchedParams {}

impl fmt::Debug for SchedParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for SchedParams {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for pair in self.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for SchedParams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = SchedParams;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "at most {MAX_SCHED_PARAMS} distinct (name, value) pairs, names of 1 to \
                     {SCHED_PARAM_NAME_BYTES} bytes"
                )
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SchedParams, A::Error> {
                let mut params = SchedParams::new();
                while let Some((name, value)) = seq.next_element::<(&'de str, u64)>()? {
                    params.push(name, value).map_err(|_| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Str(name), &self)
                    })?;
                }
                Ok(params)
            }
        }
        deserializer.deserialize_seq(Pairs)
    }
}

/// One workload argument in a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgSpec<'a> {
    pub name: &'a str,
    pub value: u64,
}

/// A `domctl` request.
#[allow(
    clippy::large_enum_variant,
    reason = "a request lives for one hypercall; boxing `Create` would need an allocator in every guest"
)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Domctl<'a> {
    /// Builds a paused domain from the boot module's image `image`.
    Create {
        image: &'a str,
        name: &'a str,
        vcpus: u32,
        memory_kib: u32,
        sched: SchedParams,
        args: [ArgSpec<'a>; MAX_ARGS],
        /// The CPU pool it joins (0: Domain0's, the first).
        pool: u32,
    },
    SetSched {
        domain: DomainId,
        sched: SchedParams,
    },
    GetSched {
        domain: DomainId,
    },
    Pause {
        domain: DomainId,
    },
    Unpause {
        domain: DomainId,
    },
    /// Kills the domain (if alive) and frees everything it holds. Its final figures stay
    /// readable with `GetInfo` until then; afterwards the id is unknown.
    Destroy {
        domain: DomainId,
    },
    GetInfo {
        domain: DomainId,
    },
    /// Waits for the domain to end: replies `Info` at once if it has, else blocks the
    /// caller until it ends (or until the caller's timer or another wake-up) and fails with
    /// `Errno::Busy`, so that a caller loops: `while Wait == Busy {}`.
    Wait {
        domain: DomainId,
    },
    /// Unpauses every paused domain but Domain0 in one call, so that an experiment's domains
    /// all start at the same instant (one by one, Domain0 would compete with the first ones
    /// started for the CPU it needs to start the rest). Replies `Started`.
    UnpauseAll,
    /// The figures of a domain as the last `Sysctl::TakeSnapshot` into `slot` recorded them.
    GetSnapshot {
        domain: DomainId,
        slot: u8,
    },
    /// Pauses every running domain but Domain0 in one call: once a measurement's figures
    /// are taken, Domain0 no longer competes with the domains for the CPU while it writes
    /// records and tears down (at 1024 domains it would otherwise take minutes). Replies
    /// `Started` with how many it paused.
    PauseAll,
    /// Moves the domain to another CPU pool (Xen's `xl cpupool-migrate`): it is paused, its
    /// vCPUs leave the old pool's policy and join the new one's spread over its CPUs, with
    /// the parameters it has that the new policy takes, and it is unpaused if it ran.
    /// Domain0 and dying domains do not move; a pool with no CPU takes no domain.
    MoveToPool {
        domain: DomainId,
        pool: u32,
    },
}

/// How many snapshots the hypervisor keeps (`Sysctl::TakeSnapshot`'s `slot`): one for each
/// end of a measured interval, so that Domain0 reads both after the interval and the
/// interval does not stretch while it reads the first.
pub const SNAPSHOT_SLOTS: u8 = 2;

/// A `domctl` reply.
#[allow(
    clippy::large_enum_variant,
    reason = "`Info` carries the latency histogram; a reply lives for one hypercall, and \
              boxing it would need an allocator in every guest"
)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomctlReply {
    Created {
        domain: DomainId,
    },
    Sched(SchedParams),
    Info(DomainInfo),
    /// How many domains `UnpauseAll` started, and the instant it did (system ns).
    Started {
        count: u32,
        at_ns: u64,
    },
    Done,
}

/// A domain's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainState {
    /// Built, never unpaused, or paused by Domain0.
    Paused,
    /// At least one vCPU runnable, running or blocked.
    Alive,
    /// Ended; see [`DomainInfo::exit`].
    Dead,
}

/// Why the hypervisor killed a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillReason {
    /// It executed an instruction reserved to ring 0 (#GP on e.g. `hlt`, `cli`, `wrmsr`).
    PrivilegedInstruction { rip: u64 },
    /// It touched memory it does not own (a page fault in ring 3).
    PageFault { addr: u64, rip: u64 },
    /// Another exception in ring 3 (vector number).
    Exception { vector: u8, rip: u64 },
    /// The hypervisor could not give it memory it needed while running.
    OutOfMemory,
    /// Its event upcall could not be entered (the stack below `rsp` was not writable) or
    /// it ended one with a frame that was not a valid guest context.
    BadUpcall { rip: u64, rsp: u64 },
    /// A software interrupt (`int N`, `int3`, `into`): no gate is open to ring 3.
    SoftwareInterrupt { vector: u8, rip: u64 },
    /// The context it would return to is not a valid guest context: `rip` is not in the
    /// guest's half (a `syscall` in the last two bytes of it returns to the first
    /// non-canonical address, where Intel's `sysret` faults in ring 0: XSA-7).
    BadReturn { rip: u64 },
    /// It executed `syscall` in compatibility (32-bit) mode, which guests cannot reach.
    CompatSyscall { rip: u64 },
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillReason::PrivilegedInstruction { rip } => {
                write!(f, "privileged instruction at {rip:#x}")
            }
            KillReason::PageFault { addr, rip } => {
                write!(f, "page fault at {addr:#x} (rip {rip:#x})")
            }
            KillReason::Exception { vector, rip } => write!(f, "exception {vector} at {rip:#x}"),
            KillReason::OutOfMemory => write!(f, "out of memory"),
            KillReason::BadUpcall { rip, rsp } => {
                write!(f, "bad event upcall (rip {rip:#x}, rsp {rsp:#x})")
            }
            KillReason::SoftwareInterrupt { vector, rip } => {
                write!(f, "software interrupt {vector:#x} at {rip:#x}")
            }
            KillReason::BadReturn { rip } => write!(f, "bad return address {rip:#x}"),
            KillReason::CompatSyscall { rip } => {
                write!(f, "syscall from compatibility mode at {rip:#x}")
            }
        }
    }
}

/// How a dead domain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainExit {
    /// Not dead yet.
    Running,
    /// It shut itself down with this code (0 = clean, see `hypercall::shutdown`).
    Shutdown(u64),
    /// The hypervisor killed it.
    Killed(KillReason),
    /// Domain0 destroyed it while alive.
    Destroyed,
}

/// A domain's figures, summed over its vCPUs, since it was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    pub domain: DomainId,
    pub state: DomainState,
    pub exit: DomainExit,
    pub vcpus: u32,
    pub sched: SchedParams,
    pub cpu_ns: u64,
    pub wait_ns: u64,
    pub work: u64,
    pub wakeups: u64,
    pub wake_lat_p50_ns: u64,
    pub wake_lat_p99_ns: u64,
    pub wake_lat_max_ns: u64,
    pub switches: u64,
    pub migrations: u64,
    /// Frames the domain holds (its memory and its page tables).
    pub frames: u64,
    /// Every wake-up latency since creation, in log2 buckets ([`wake_lat_bucket`]): the
    /// `domain` record's `wake_lat_hist`.
    pub wake_lat_hist: [u32; WAKE_LAT_BUCKETS],
    /// The deadline of the last one-shot timer its first vCPU set (`set_timer`, system
    /// time in ns; 0 if it never set one): a periodic guest's (`latency`) deadlines are its
    /// start plus whole periods, so this gives their phase against system time, which
    /// `schedsim --costs-from` gives its latency domain (rtds's periods end at multiples
    /// of the period since system time 0: the phase decides which wake-ups tie a hog's
    /// deadline). The `domain` record's `timer_deadline_ns`.
    pub timer_deadline_ns: u64,
}

/// Buckets of [`DomainInfo::wake_lat_hist`]: bucket `i` counts latencies below
/// [`wake_lat_upper_ns`]`(i)` = 1024 << i ns and at least half that (bucket 0 everything
/// below 1024 ns, "1 µs"; the last bucket, up to 2^41 ns, also everything larger).
pub const WAKE_LAT_BUCKETS: usize = 32;

/// The exclusive upper bound of wake-up latency bucket `i` (1024 << i ns).
pub const fn wake_lat_upper_ns(i: usize) -> u64 {
    1024 << i
}

/// The wake-up latency bucket of a latency of `ns` nanoseconds.
pub const fn wake_lat_bucket(ns: u64) -> usize {
    if ns < 1024 {
        return 0;
    }
    let b = (64 - ns.leading_zeros() - 10) as usize;
    if b < WAKE_LAT_BUCKETS {
        b
    } else {
        WAKE_LAT_BUCKETS - 1
    }
}

/// A `sysctl` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sysctl<'a> {
    /// The scheduling policy in force and the number of CPUs.
    GetPolicy,
    /// One global parameter of the policy in force (`xl sched-credit -s` shows them).
    GetSchedParam { name: &'a str },
    /// Sets one global parameter of the policy in force; an unknown name or a value out of
    /// range is `Errno::Inval`.
    SetSchedParam { name: &'a str, value: u64 },
    /// One CPU's figures.
    CpuStats { cpu: u32 },
    /// Records every domain's and every CPU's figures at one instant (the other CPUs are
    /// held still meanwhile) into `slot` (below [`SNAPSHOT_SLOTS`]), for
    /// `Domctl::GetSnapshot` and `CpuSnapshot` to read: a measurement's two ends then do not
    /// depend on when Domain0 got the CPU. The instant is read before the other CPUs are
    /// asked to stop, so that their stopping and the reading fall after it (for the end of
    /// an interval). Replies `Snapshot` with the instant.
    TakeSnapshot { slot: u8 },
    /// One CPU's figures as the last `TakeSnapshot` into `slot` recorded them.
    CpuSnapshot { cpu: u32, slot: u8 },
    /// Frame allocator counts, to check that nothing leaked.
    FrameCounts,
    /// Bytes of the hypervisor's heap in use (its own objects: domains, vCPUs, tables).
    HeapUsed,
    /// Writes one results record (a JSON object on one line) to the console protocol.
    EmitRecord { json: &'a str },
    /// Benchmark support: while `on`, a [`crate::hypercall::NULL`] call on any CPU is served
    /// by a bare `sysretq` at the `syscall` entry (one compare before it), the floor against
    /// which the full path is measured. Every other hypercall still takes the full path.
    BenchFloor { on: bool },
    /// Benchmark support: the hypervisor times `iters` rounds of what a domain switch cannot
    /// avoid (save and restore the general registers and the FPU state, reload CR3) and
    /// replies with the TSC ticks they took.
    BenchSwitchFloor { iters: u32 },
    /// Stops the machine with this exit status (0, 1 or 2: `tool::console::ExitCode`).
    Shutdown { code: u8 },
    /// What the live domains hold, summed ([`ResourceCounts`]), to check that a dead
    /// domain's objects went with it.
    Resources,
    /// As `TakeSnapshot`, but the other CPUs run on: every figure is taken at one instant
    /// (the reply's), read domain after domain, so what a running guest does during the
    /// read (at most its length, about 1.5 ms for 128 domains under TCG) may land on either
    /// side of the instant. For window boundaries: holding every CPU at each one stalls
    /// them all for as long as the slowest takes to answer (10 to 40 ms on a busy TCG
    /// host), and that time is charged to the vCPUs they were running, which skews the
    /// very shares the windows measure. Successive snapshots still tile: each window is
    /// the difference of two, so windows sum to the interval exactly.
    TakeSnapshotLive { slot: u8 },
    /// As `TakeSnapshot`, for the start of a measured interval: the instant is read once
    /// every figure has been, the other CPUs still held, and the figures are carried forward
    /// to it (a vCPU held running, or waiting, grew its CPU or waiting time by the reading's
    /// length, nothing else changed). Reading 1024 domains takes about 1.3 ms under TCG; at
    /// an instant read first, that time, charged to the vCPUs the hold stopped, fell inside
    /// the interval. (At its end, `TakeSnapshot` reads the instant first, so that the
    /// reading falls after it.) It also starts every vCPU's wake-up latency histogram afresh,
    /// so that the latency figures read at the interval's end are the interval's.
    TakeSnapshotStart { slot: u8 },
    /// A CPU pool's name, policy and CPUs (Xen's `xl cpupool-list`); `Errno::Srch` for a
    /// pool that does not exist. Replies `Pool`.
    PoolInfo { pool: u32 },
    /// Sets one global knob of a pool's policy (`SetSchedParam` sets the first pool's).
    SetPoolParam {
        pool: u32,
        name: &'a str,
        value: u64,
    },
    /// Creates an empty pool (no CPU yet) under `policy` (`xl cpupool-create`); replies
    /// `PoolCreated` with its number.
    PoolCreate { name: &'a str, policy: &'a str },
    /// Destroys a pool holding no CPU and no domain (never the first).
    PoolDestroy { pool: u32 },
    /// Adds a free CPU to a pool (`xl cpupool-cpu-add`).
    PoolAddCpu { pool: u32, cpu: u32 },
    /// Takes a CPU out of a pool; it idles until added to one (`xl cpupool-cpu-remove`).
    PoolRemoveCpu { pool: u32, cpu: u32 },
    /// Replaces a pool's policy, its domains and all (their parameters carry over by name,
    /// its knobs that the new policy takes too). Not the first pool's: Domain0 runs there.
    SetPoolPolicy { pool: u32, policy: &'a str },
}

/// Most CPUs a `SysctlReply::Pool` describes.
pub const POOL_CPU_WORDS: usize = 4;

/// What every live domain holds, summed over all of them (Domain0 included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceCounts {
    /// Live domains (dead ones not yet destroyed count).
    pub domains: u32,
    /// Their vCPUs.
    pub vcpus: u32,
    /// Event-channel ports in use.
    pub ports: u32,
    /// Grants made (grant-table entries in use).
    pub grants: u32,
    /// Grants of others mapped (maptrack entries in use).
    pub grant_maps: u32,
}

/// Buckets of a CPU's slice-end lateness (`CpuStats::slice_late`): bucket k
/// counts the slices that ended at most 2^k µs after the time the policy gave them (k = 0
/// to 15, 1 µs to 32.8 ms), the last one those later still.
pub const SLICE_LATE_BUCKETS: usize = 17;

/// The bucket of a slice that ended `late_ns` after it should have.
#[inline]
pub fn slice_late_bucket(late_ns: u64) -> usize {
    let us = late_ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    // The smallest k with 2^k >= us.
    ((64 - (us - 1).leading_zeros()) as usize).min(SLICE_LATE_BUCKETS - 1)
}

/// The largest lateness (ns) bucket `k` holds; `None` for the last, unbounded one.
pub fn slice_late_bound_ns(k: usize) -> Option<u64> {
    (k + 1 < SLICE_LATE_BUCKETS).then(|| 1000u64 << k)
}

/// Buckets of a CPU's kick lateness (`CpuStats::kick_late`): from a kick (a
/// request that the CPU reschedule: a vCPU woke for it, a policy's tick or steal) to the
/// moment that CPU's next decision begins. Four buckets to a power of two, each a quarter of
/// its octave wide, as HdrHistogram's sub-buckets: bucket 0 holds kicks served within 1024
/// ns; bucket k >= 1 those served within [`kick_late_bound_ns`]`(k)` and later than the
/// bound of k - 1 (1280, 1536, 1792, 2048, 2560, ... ns, up to 50.3 ms at k = 62); the
/// last one those later still. Finer than the slice buckets: a kick's delay is the bulk of
/// a woken vCPU's wait, which schedsim samples from it (`schedsim --costs-from`).
pub const KICK_LATE_BUCKETS: usize = 64;

/// The bucket of a kick served `late_ns` after it was made.
#[inline]
pub fn kick_late_bucket(late_ns: u64) -> usize {
    if late_ns <= 1024 {
        return 0;
    }
    let v = late_ns - 1;
    let p = 63 - v.leading_zeros() as usize; // >= 10
    let sub = (v >> (p - 2)) as usize & 3;
    (1 + (p - 10) * 4 + sub).min(KICK_LATE_BUCKETS - 1)
}

/// The largest lateness (ns) bucket `k` holds; `None` for the last, unbounded one.
pub fn kick_late_bound_ns(k: usize) -> Option<u64> {
    if k == 0 {
        return Some(1024);
    }
    if k + 1 >= KICK_LATE_BUCKETS {
        return None;
    }
    let (p, sub) = (10 + (k - 1) / 4, ((k - 1) % 4) as u64);
    Some((1u64 << p) + (sub + 1) * (1u64 << (p - 2)))
}

/// The kick-lateness bucket whose bound is `bound_ns` (u64::MAX: the last one), as a
/// results record's `kick_late.hist` names them; `None` for no bucket's bound.
pub fn kick_late_bucket_of_bound(bound_ns: u64) -> Option<usize> {
    if bound_ns == u64::MAX {
        return Some(KICK_LATE_BUCKETS - 1);
    }
    let k = kick_late_bucket(bound_ns);
    (kick_late_bound_ns(k) == Some(bound_ns)).then_some(k)
}

/// [`KICK_LATE_BUCKETS`] counts as the `sysctl` reply carries them: two halves (serde
/// derives arrays of at most 32).
pub type KickLateHalves = [[u64; KICK_LATE_BUCKETS / 2]; 2];

/// The counts split into the reply's halves.
pub fn kick_late_halves(counts: &[u64; KICK_LATE_BUCKETS]) -> KickLateHalves {
    let h = KICK_LATE_BUCKETS / 2;
    [
        core::array::from_fn(|k| counts[k]),
        core::array::from_fn(|k| counts[h + k]),
    ]
}

/// The reply's halves joined back into one array of counts.
pub fn kick_late_join(halves: &KickLateHalves) -> [u64; KICK_LATE_BUCKETS] {
    let h = KICK_LATE_BUCKETS / 2;
    core::array::from_fn(|k| halves[k / h][k % h])
}

/// One CPU's figures (`Sysctl::CpuStats`, `Sysctl::CpuSnapshot`): what the hypervisor
/// replies and what Domain0 keeps, one type for both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    pub idle_ns: u64,
    pub busy_ns: u64,
    pub switches: u64,
    /// How late the timer ended each slice the policy asked for, counted in
    /// [`SLICE_LATE_BUCKETS`] log2 buckets ([`slice_late_bucket`]).
    pub slice_late: [u64; SLICE_LATE_BUCKETS],
    /// How late this CPU's decisions came after the kicks that asked for them, in
    /// [`KICK_LATE_BUCKETS`] buckets ([`kick_late_bucket`]), for kicks made on another
    /// CPU (an inter-processor interrupt carried them) ...
    pub kick_late: KickLateHalves,
    /// ... of those, the kicks for a vCPU's wake-up (the rest are the policy's own: a
    /// tick's, a decision's, a `context_saved`'s) ...
    pub kick_wake_late: KickLateHalves,
    /// ... and for kicks it made itself (served on its way out of the hypervisor).
    pub kick_local_late: KickLateHalves,
    /// How long each switch to another vCPU took, in the same buckets: from the end of
    /// the decision to the incoming vCPU's address space loaded (the timer armed for
    /// it, its previous vCPU released), which the incoming vCPU's time counts ...
    pub switch_time: KickLateHalves,
    /// ... and each `set_timer` hypercall, in the hypervisor (arming the CPU's timer:
    /// under TCG an APIC write, which QEMU serves under its global lock).
    pub set_timer_time: KickLateHalves,
    /// Of the switches and `set_timer` hypercalls above, those that wrote the CPU's
    /// timer (its deadline moved earlier, or what was armed had passed), counted in
    /// both: the write is the dear part under TCG.
    pub switch_armed_time: KickLateHalves,
    pub set_timer_armed_time: KickLateHalves,
    /// How late each sleeper's timer woke it, from its deadline.
    pub timer_wake_late: KickLateHalves,
}

/// A `sysctl` reply.
// `CpuStats` is 4.3 KiB (eight timing histograms) against 64 bytes for the next variant: a
// reply is built once per call, encoded at once into the caller's buffer (about 2 KiB at most
// as postcard writes it, mostly zeros), and neither side keeps one, so boxing it would buy
// nothing; and `abi` has no allocator in the hypervisor's control path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SysctlReply<'a> {
    Policy {
        name: &'a str,
        cpus: u32,
    },
    CpuStats(CpuStats),
    SchedParam {
        value: u64,
    },
    Snapshot {
        at_ns: u64,
    },
    Elapsed {
        tsc_ticks: u64,
    },
    HeapUsed {
        bytes: u64,
        /// Of `bytes`, what the CPU pools' changes since boot hold (a pool's policy replaced
        /// or its CPUs changed builds a new instance, and frees the one it replaced a grace
        /// period later; a pool's knobs and the pools' own state grow or shrink), so that a
        /// leak check can leave them out. Negative when they gave back more than they took.
        policies: i64,
    },
    Frames {
        free: u64,
        managed: u64,
    },
    Done,
    Resources(ResourceCounts),
    Pool {
        name: &'a str,
        policy: &'a str,
        /// Its CPUs as a bitmap: CPU `c` is bit `c % 64` of word `c / 64`.
        cpus: [u64; POOL_CPU_WORDS],
    },
    PoolCreated {
        pool: u32,
    },
    /// A pool's policy replaced (`Sysctl::SetPoolPolicy`): when the change took effect, in
    /// system ns, the instant its domains were unpaused in the new instance. Domain0, if it
    /// is in the pool, joins the new instance asleep and may run again only later, so its
    /// own clock after the call would date the change late (by 60-300 ms under credit
    /// among hogs that the unpause boosted first).
    PolicySet {
        at_ns: u64,
    },
}

/// Encodes a message into `buf`, returning the bytes used.
pub fn encode<T: Serialize>(message: &T, buf: &mut [u8]) -> Result<usize, Errno> {
    postcard::to_slice(message, buf)
        .map(|used| used.len())
        .map_err(|_| Errno::TooBig)
}

/// Decodes a message from `bytes`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Errno> {
    postcard::from_bytes(bytes).map_err(|_| Errno::Inval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_latency_buckets_are_powers_of_two_from_1024_ns() {
        assert_eq!(wake_lat_bucket(0), 0);
        assert_eq!(wake_lat_bucket(1023), 0);
        for i in 1..WAKE_LAT_BUCKETS {
            let lower = wake_lat_upper_ns(i - 1);
            assert_eq!(wake_lat_bucket(lower), i, "{lower}");
            assert_eq!(wake_lat_bucket(lower - 1), i - 1, "{lower}");
            assert_eq!(wake_lat_bucket(wake_lat_upper_ns(i) - 1), i);
        }
        assert_eq!(wake_lat_upper_ns(0), 1024);
        assert_eq!(wake_lat_bucket(u64::MAX), WAKE_LAT_BUCKETS - 1);
    }

    #[test]
    fn kick_lateness_buckets_are_quarters_of_octaves() {
        assert_eq!(kick_late_bucket(0), 0);
        assert_eq!(kick_late_bucket(1024), 0);
        assert_eq!(kick_late_bucket(1025), 1);
        assert_eq!(kick_late_bound_ns(1), Some(1280));
        assert_eq!(kick_late_bound_ns(4), Some(2048));
        assert_eq!(kick_late_bound_ns(5), Some(2560));
        assert_eq!(kick_late_bound_ns(62), Some(50_331_648));
        assert_eq!(kick_late_bound_ns(KICK_LATE_BUCKETS - 1), None);
        assert_eq!(kick_late_bucket(u64::MAX), KICK_LATE_BUCKETS - 1);
        for k in 0..KICK_LATE_BUCKETS - 1 {
            let b = kick_late_bound_ns(k).unwrap();
            assert_eq!(kick_late_bucket(b), k, "{b}");
            assert_eq!(kick_late_bucket(b + 1), k + 1, "{b}");
            assert_eq!(kick_late_bucket_of_bound(b), Some(k));
            if k > 0 {
                // A quarter of its octave wide: within 25% of its bound.
                let lower = kick_late_bound_ns(k - 1).unwrap();
                assert!((b - lower) * 4 <= lower, "{lower}..{b}");
            }
        }
        assert_eq!(kick_late_bucket_of_bound(1300), None);
        let counts: [u64; KICK_LATE_BUCKETS] = core::array::from_fn(|k| k as u64 * 3);
        assert_eq!(kick_late_join(&kick_late_halves(&counts)), counts);
    }

    #[test]
    fn slice_lateness_lands_in_the_bucket_whose_bound_holds_it() {
        assert_eq!(slice_late_bucket(0), 0);
        assert_eq!(slice_late_bucket(1000), 0);
        assert_eq!(slice_late_bucket(1001), 1);
        assert_eq!(slice_late_bucket(2000), 1);
        assert_eq!(slice_late_bucket(3_000_000), 12); // 3 ms <= 4.096 ms
        assert_eq!(slice_late_bucket(u64::MAX), SLICE_LATE_BUCKETS - 1);
        for late in [1, 999, 1500, 70_000, 32_768_000, 32_768_001, 10_000_000_000] {
            let k = slice_late_bucket(late);
            match slice_late_bound_ns(k) {
                Some(bound) => assert!(late <= bound, "{late} in {k}"),
                None => assert!(late > 1000 << (SLICE_LATE_BUCKETS - 2), "{late}"),
            }
            if k > 0 {
                assert!(late > slice_late_bound_ns(k - 1).unwrap(), "{late} in {k}");
            }
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let mut args = [ArgSpec::default(); MAX_ARGS];
        args[0] = ArgSpec {
            name: "period_us",
            value: 1000,
        };
        let req = Domctl::Create {
            image: "latency",
            name: "lat0",
            vcpus: 1,
            memory_kib: 1024,
            sched: SchedParams::from_pairs([("weight", 512), ("quantum_us", 300)]).unwrap(),
            args,
            pool: 1,
        };
        let mut buf = [0u8; 512];
        let n = encode(&req, &mut buf).unwrap();
        assert_eq!(decode::<Domctl>(&buf[..n]).unwrap(), req);

        let reply = SysctlReply::Policy {
            name: "credit",
            cpus: 4,
        };
        let n = encode(&reply, &mut buf).unwrap();
        assert_eq!(decode::<SysctlReply>(&buf[..n]).unwrap(), reply);
    }

    #[test]
    fn sched_params_take_any_declared_name_within_bounds() {
        let mut p = SchedParams::new();
        assert!(p.is_empty());
        p.push("weight", 512).unwrap();
        p.push("a_new_policys_own_param", 7).unwrap();
        assert_eq!(p.get("a_new_policys_own_param"), Some(7));
        assert_eq!(p.get("cap"), None);
        assert_eq!(p.push("weight", 1), Err(SchedParamError::Duplicate));
        assert_eq!(p.push("", 1), Err(SchedParamError::EmptyName));
        let long = "a_name_longer_than_24_bytes";
        assert_eq!(
            p.push(long, 1),
            Err(SchedParamError::NameTooLong(long.len()))
        );
        for i in 2..MAX_SCHED_PARAMS {
            let name = ["p2", "p3", "p4", "p5", "p6", "p7"][i - 2];
            p.push(name, i as u64).unwrap();
        }
        assert_eq!(p.push("one_more", 1), Err(SchedParamError::TooMany));
        assert_eq!(p.len(), MAX_SCHED_PARAMS);
        // A failed push leaves the list as it was.
        assert_eq!(p.iter().count(), MAX_SCHED_PARAMS);
        let mut buf = [0u8; 512];
        let n = encode(&p, &mut buf).unwrap();
        assert_eq!(decode::<SchedParams>(&buf[..n]).unwrap(), p);
        assert_eq!(
            SchedParams::from_pairs([("weight", 1), ("weight", 2)]),
            Err(("weight", SchedParamError::Duplicate))
        );
        let msg = alloc::string::ToString::to_string(&SchedParamError::NameTooLong(30));
        assert_eq!(msg, "the name is 30 bytes; allowed: at most 24");
    }

    #[test]
    fn a_decoded_list_is_held_to_the_same_bounds() {
        // Encoded by hand: nine pairs, a name too long, a duplicate.
        let mut buf = [0u8; 512];
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        let pairs: [(&str, u64); 9] = core::array::from_fn(|i| (names[i], i as u64));
        let n = encode(&&pairs[..], &mut buf).unwrap();
        assert_eq!(decode::<SchedParams>(&buf[..n]), Err(Errno::Inval));
        let n = encode(&&pairs[..8], &mut buf).unwrap();
        assert_eq!(decode::<SchedParams>(&buf[..n]).unwrap().len(), 8);
        let n = encode(&&[("w", 1u64), ("x", 2)][..], &mut buf).unwrap();
        let two = decode::<SchedParams>(&buf[..n]).unwrap();
        assert_eq!(two, SchedParams::from_pairs([("w", 1), ("x", 2)]).unwrap());
        let long = "x".repeat(SCHED_PARAM_NAME_BYTES + 1);
        let n = encode(&&[(long.as_str(), 1u64)][..], &mut buf).unwrap();
        assert_eq!(decode::<SchedParams>(&buf[..n]), Err(Errno::Inval));
        let n = encode(&&[("w", 1u64), ("w", 2)][..], &mut buf).unwrap();
        assert_eq!(decode::<SchedParams>(&buf[..n]), Err(Errno::Inval));
    }

    #[test]
    fn short_buffers_and_garbage_are_errors() {
        let mut tiny = [0u8; 2];
        assert_eq!(
            encode(
                &Sysctl::EmitRecord {
                    json: "{\"kind\":\"run\"}"
                },
                &mut tiny
            ),
            Err(Errno::TooBig)
        );
        assert_eq!(decode::<Domctl>(&[0xff, 0xff, 0xff]), Err(Errno::Inval));
    }

    #[test]
    fn kill_reasons_read_well() {
        let r = KillReason::PageFault {
            addr: 0xffff_8000_0000_0000,
            rip: 0x401000,
        };
        let mut s = [0u8; 64];
        let mut w = Writer {
            buf: &mut s,
            len: 0,
        };
        fmt::write(&mut w, format_args!("{r}")).unwrap();
        let len = w.len;
        assert_eq!(
            &s[..len],
            b"page fault at 0xffff800000000000 (rip 0x401000)"
        );
    }

    struct Writer<'a> {
        buf: &'a mut [u8],
        len: usize,
    }

    impl fmt::Write for Writer<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            Ok(())
        }
    }
}
