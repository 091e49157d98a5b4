//! Domino's scheduling policies: one trait, per-CPU runqueues, and the policies behind it.
//!
//! The unit of scheduling is a virtual CPU. A policy implements [`Policy`], a trait modelled
//! on Xen's scheduler operations (`struct scheduler` in Xen's `xen/common/sched/private.h`):
//! insert and remove a vCPU, wake, sleep, yield, pick the next vCPU and its slice for a CPU
//! ([`Policy::schedule`]), choose a CPU for a waking vCPU ([`Policy::pick_cpu`]), periodic
//! accounting ([`Policy::tick`]), per-domain and global parameters, statistics and a dump.
//!
//! The same policy objects run inside the no_std hypervisor and inside `schedsim`, the
//! deterministic simulator of the `std` feature. Time is always passed in (nanoseconds); a
//! policy never reads a clock, which is what makes the simulation exact.
//!
//! Policies here: [`rr`] (round-robin, Xen 2.0's `sched_rrobin`), [`credit`] (Xen's credit
//! scheduler), [`credit2`] (Xen's credit2), [`bvt`] (borrowed virtual time, Duda &
//! Cheriton, SOSP 1999), [`fifo`] (the smallest complete policy), [`stride`] (stride
//! scheduling, Waldspurger & Weihl 1995, which `README.md` writes from an empty file) and
//! [`rtds`] (Xen's real-time deferrable server, global EDF). [`registry`] builds any of
//! them by name;
//! the `register!` list below is the one place a policy is registered.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

use alloc::string::String;
use core::fmt;

pub mod handoff;
pub mod limits;
pub mod pools;
pub mod registry;
pub mod runq;
pub mod summary;

// Every policy, in the order listings show them: the one place to register one. Each entry
// is `module::Type`: `src/module.rs` holds `pub static INFO: PolicyInfo` and `Type`, with
// `Type::new(&Topology) -> Result<Type, Error>` and `impl Policy for Type`. This declares
// the module and adds it to `registry::ENTRIES`, which `schedsim`, the spec validator, the
// hypervisor's `sched=` option, the property tests, the experiment checks, the sweeps and
// the plots all read.
registry::register! {
    rr::RoundRobin,
    credit::Credit,
    credit2::Credit2,
    bvt::Bvt,
    fifo::Fifo,
    stride::Stride,
    rtds::Rtds,
}

#[cfg(feature = "std")]
pub mod cost;
#[cfg(feature = "std")]
pub mod replay;
#[cfg(feature = "std")]
pub mod sim;
#[cfg(feature = "std")]
pub mod spec;
#[cfg(feature = "std")]
pub mod timeline;
#[cfg(feature = "std")]
pub mod windows;

/// A virtual CPU, named by a dense index that the caller chooses (`0..Topology::max_vcpus`).
///
/// The kernel uses the index of its own vCPU table, so mapping back is an array lookup; the
/// policy keeps its per-vCPU state in an array of the same size, allocated once at creation,
/// which is why no map lookup or allocation happens on wake or pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuId(pub u32);

/// A domain, named by a dense index that the caller chooses (`0..Topology::max_domains`).
///
/// Per-domain parameters (weight, cap, warp) live in a table indexed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u32);

impl VcpuId {
    /// The index as a `usize`, for table lookups.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl DomainId {
    /// The index as a `usize`, for table lookups.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where one CPU sits in the machine: its socket and its core (a core's id is unique in the
/// machine, not only within its socket). Two hardware threads of one core share a core id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuPlace {
    /// The socket (package) the CPU belongs to.
    pub socket: u16,
    /// The core the CPU belongs to, numbered across the whole machine.
    pub core: u16,
}

/// The size of the machine a policy is built for; every table is allocated from it once.
///
/// Build it with [`Topology::flat`] (one socket, every CPU its own core) or
/// [`Topology::shaped`] (QEMU's `-smp sockets=,cores=,threads=` numbering); the hypervisor
/// fills [`Topology::places`] from each CPU's APIC id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Physical CPUs, numbered `0..cpus`.
    pub cpus: usize,
    /// Upper bound (exclusive) on [`VcpuId`] indices.
    pub max_vcpus: usize,
    /// Upper bound (exclusive) on [`DomainId`] indices.
    pub max_domains: usize,
    /// Each CPU's socket and core; entries at and beyond `cpus` are unused. Policies that
    /// share runqueues between CPUs (credit2's `runqueue = "core" | "socket"`) group by it.
    pub places: [CpuPlace; runq::MAX_CPUS],
}

impl Topology {
    /// `cpus` CPUs in one socket, each its own core: the shape when nothing else is known.
    pub fn flat(cpus: usize, max_vcpus: usize, max_domains: usize) -> Topology {
        Topology::shaped(cpus, max_vcpus, max_domains, cpus.max(1), 1)
    }

    /// `cpus` CPUs numbered the way QEMU's `-smp cpus,sockets=S,cores=C,threads=T` numbers
    /// them: CPU `i` is thread `i % T` of core `i / T`, in socket `i / (C * T)` (`cores` is
    /// C, per socket; `threads` is T, per core; zero counts are taken as 1).
    pub fn shaped(
        cpus: usize,
        max_vcpus: usize,
        max_domains: usize,
        cores: usize,
        threads: usize,
    ) -> Topology {
        let (cores, threads) = (cores.max(1), threads.max(1));
        let mut places = [CpuPlace::default(); runq::MAX_CPUS];
        for (i, place) in places.iter_mut().enumerate().take(cpus.min(runq::MAX_CPUS)) {
            *place =
                CpuPlace { socket: (i / (cores * threads)) as u16, core: (i / threads) as u16 };
        }
        Topology { cpus, max_vcpus, max_domains, places }
    }

    /// Where CPU `cpu` sits (`cpu` below [`Topology::cpus`]).
    pub fn place(&self, cpu: usize) -> CpuPlace {
        self.places[cpu]
    }

    /// The topology a pool of the CPUs `cpus` (machine numbers) sees: CPU `i` of the pool is
    /// `cpus[i]` of the machine, in its socket and core (a policy instance of a CPU pool
    /// works on local numbers `0..cpus.len()`). Machine numbers beyond this topology's CPUs
    /// are placed in socket and core 0.
    pub fn subset(&self, cpus: &[usize]) -> Topology {
        let mut places = [CpuPlace::default(); runq::MAX_CPUS];
        for (place, &c) in places.iter_mut().zip(cpus) {
            if c < self.cpus.min(runq::MAX_CPUS) {
                *place = self.places[c];
            }
        }
        Topology {
            cpus: cpus.len(),
            max_vcpus: self.max_vcpus,
            max_domains: self.max_domains,
            places,
        }
    }
}

/// What [`Policy::schedule`] decided for one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The vCPU to run next, or `None` to idle. It may be the one that was running.
    pub next: Option<VcpuId>,
    /// Call `schedule` again on this CPU after at most this long; `None` means "no timer":
    /// the CPU idles until a wake-up kicks it (or the policy's tick asks for a reschedule).
    pub slice_ns: Option<u64>,
    /// `next` was taken from another CPU's runqueue by this call (a steal).
    pub migrated: bool,
}

/// What [`Policy::wake`] did with a waking vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wakeup {
    /// The CPU whose runqueue now holds the vCPU (unchanged if it was already runnable).
    pub cpu: usize,
    /// A CPU that should call `schedule` soon (send it a reschedule IPI), if any: an idle CPU
    /// that can take the work, or `cpu` itself when the waker should preempt.
    pub kick: Option<usize>,
}

/// Counters every policy keeps (summed over CPUs), for results and the dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls to [`Policy::schedule`].
    pub schedules: u64,
    /// Wake-ups that made a sleeping vCPU runnable.
    pub wakes: u64,
    /// vCPUs taken from another CPU's runqueue.
    pub steals: u64,
    /// Steal attempts that found the peer's lock taken (Xen: `steal_trylock_failed`).
    pub steal_lock_busy: u64,
    /// Steal attempts refused because the peer was still switching away from a vCPU (before
    /// its [`Policy::context_saved`]).
    pub steal_mid_switch: u64,
    /// Reschedule requests returned to the caller (wake kicks and tick kicks).
    pub kicks: u64,
}

impl core::ops::AddAssign for Stats {
    /// Adds another runqueue's counters (policies sum theirs for [`Policy::stats`]).
    fn add_assign(&mut self, o: Stats) {
        self.schedules += o.schedules;
        self.wakes += o.wakes;
        self.steals += o.steals;
        self.steal_lock_busy += o.steal_lock_busy;
        self.steal_mid_switch += o.steal_mid_switch;
        self.kicks += o.kicks;
    }
}

/// One tunable parameter: its `xl` name, its default and its allowed range (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// The name, as `xl` spells it, with its unit as a suffix (`tslice_ms`, `warp_us`).
    pub name: &'static str,
    /// The value a new domain (or the policy) starts with.
    pub default: u64,
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
    /// One line for error messages and `--help` output.
    pub doc: &'static str,
    /// For a parameter whose values are names (credit2's `runqueue`): the names, in value
    /// order, so value `i` means `choices[i]` and `min..=max` must lie within
    /// `0..choices.len()`. Empty for a number.
    pub choices: &'static [&'static str],
}

impl ParamSpec {
    /// Checks `value` against the range, naming the parameter in the error.
    pub fn check(&self, value: u64) -> Result<(), Error> {
        if value < self.min || value > self.max {
            return Err(Error::OutOfRange {
                param: self.name,
                value,
                min: self.min,
                max: self.max,
            });
        }
        Ok(())
    }
}

/// The static description of a policy: what the registry lists and the spec parser checks.
#[derive(Debug)]
pub struct PolicyInfo {
    /// The name used in specs and on the command line (`[sched] policy = "credit"`).
    pub name: &'static str,
    /// One line describing it.
    pub summary: &'static str,
    /// Per-domain parameters (`weight`, `cap`, ...).
    pub domain_params: &'static [ParamSpec],
    /// Global parameters (`tslice_ms`, ...).
    pub global_params: &'static [ParamSpec],
    /// Whether a running vCPU that never blocks or yields is ever taken off its CPU for
    /// another one (a time slice, or a preempting wake-up). Without that, such vCPUs keep
    /// their CPUs for good: the spec validator refuses an experiment where they would hold
    /// every CPU, since Domain0 could then never run again to end it.
    pub preempts: bool,
    /// Whether the policy has a tick or kicks a call cannot return ([`Policy::next_tick`],
    /// [`Policy::take_kicks`]). If `false` the hypervisor never asks for either, which
    /// saves two calls on every switch; schedsim asks anyway and stops, naming the policy,
    /// if one that says `false` answers (so the property tests catch a wrong `false`).
    pub timed: bool,
}

impl PolicyInfo {
    /// The per-domain parameter called `name`, if this policy has one.
    pub fn domain_param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.domain_params.iter().find(|p| p.name == name)
    }

    /// The global parameter called `name`, if this policy has one.
    pub fn global_param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.global_params.iter().find(|p| p.name == name)
    }
}

/// Everything that can go wrong when driving a policy; each message says what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No policy of that name is registered.
    UnknownPolicy {
        /// The name asked for.
        name: String,
    },
    /// The policy has no parameter of that name.
    UnknownParam {
        /// The policy asked.
        policy: &'static str,
        /// The parameter asked for.
        param: String,
        /// What the policy accepts in that place.
        allowed: &'static [ParamSpec],
    },
    /// A parameter value outside its range.
    OutOfRange {
        /// The parameter.
        param: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A vCPU index at or beyond `Topology::max_vcpus`, or not inserted.
    NoSuchVcpu(VcpuId),
    /// A domain index at or beyond `Topology::max_domains`, or not added.
    NoSuchDomain(DomainId),
    /// A CPU index at or beyond `Topology::cpus`.
    NoSuchCpu(usize),
    /// The vCPU or domain is already present.
    AlreadyPresent,
    /// The operation needs the vCPU asleep (remove) or the domain empty (remove_domain).
    Busy,
    /// A topology with zero CPUs, or more than [`runq::MAX_CPUS`].
    BadTopology,
    /// A parameter above another that bounds it (rtds: `budget_us` ≤ `period_us`).
    NotAtMost {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: u64,
        /// The parameter that bounds it.
        limit: &'static str,
        /// That one's value.
        limit_value: u64,
    },
}

fn list_params(f: &mut fmt::Formatter<'_>, allowed: &[ParamSpec]) -> fmt::Result {
    if allowed.is_empty() {
        return write!(f, "none");
    }
    for (i, p) in allowed.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{} ({}..={}, default {})", p.name, p.min, p.max, p.default)?;
    }
    Ok(())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownPolicy { name } => {
                write!(f, "unknown policy `{name}`; allowed: ")?;
                for (i, name) in registry::names().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{name}")?;
                }
                Ok(())
            }
            Error::UnknownParam { policy, param, allowed } => {
                write!(f, "policy `{policy}` has no parameter `{param}`; allowed: ")?;
                list_params(f, allowed)
            }
            Error::OutOfRange { param, value, min, max } => {
                write!(f, "{param} = {value} is out of range; allowed: {min}..={max}")
            }
            Error::NoSuchVcpu(v) => write!(f, "no such vCPU {}", v.0),
            Error::NoSuchDomain(d) => write!(f, "no such domain {}", d.0),
            Error::NoSuchCpu(c) => write!(f, "no such CPU {c}"),
            Error::AlreadyPresent => write!(f, "already present"),
            Error::Busy => write!(f, "busy: the vCPU must be asleep, the domain empty"),
            Error::NotAtMost { param, value, limit, limit_value } => write!(
                f,
                "{param} = {value} is larger than {limit} = {limit_value}; allowed: {param} \
                 at most {limit}"
            ),
            Error::BadTopology => write!(
                f,
                "bad topology: allowed 1..={} CPUs and at least one vCPU and domain",
                runq::MAX_CPUS
            ),
        }
    }
}

/// A function the hypervisor gives a policy to hear of changes it cannot see from outside:
/// `what` names the vCPU's new priority class (credit's `"boost"`, `"under"`, `"over"`),
/// at time `now`. It must be cheap and must not call back into the policy.
pub type TraceHook = fn(vcpu: VcpuId, what: &'static str, now: u64);

/// A scheduling policy: the operations the hypervisor (and `schedsim`) drive it with.
///
/// Every method takes `&self` and may be called from any CPU at the same time: the policy
/// locks its own per-CPU runqueues (one cache-padded spin lock each, never a global lock on
/// wake or pick) and allocates only in [`Policy::add_domain`] and [`Policy::insert_vcpu`].
///
/// The contract with the caller (the kernel's vCPU state machine):
/// - a vCPU starts asleep after `insert_vcpu`; `wake` makes it runnable, `sleep` makes it
///   not runnable (blocked or paused). Redundant calls are harmless.
/// - `schedule(cpu, now)` is called on `cpu` when the slice it returned last expires, when
///   the vCPU running there went to sleep or yielded, and when a kick for `cpu` arrives. Its
///   answer is what runs on `cpu` until the next call; the policy remembers it as the CPU's
///   current vCPU and charges it from timestamps on the next call.
/// - when `schedule(cpu, ..)` returns a vCPU other than the one that ran on `cpu` (or
///   `None`), that one, `prev`, is still on `cpu` until the caller has saved its registers
///   and `cpu` no longer uses its address space. Then the caller calls
///   [`Policy::context_saved`]`(cpu, prev, now)`, and kicks the CPU it returns, if any
///   (Xen's `context_saved`). Until then the policy gives `prev` to no other CPU; so a vCPU
///   that `schedule` returns is never still in use elsewhere, and the caller may load it at
///   once, without waiting for another CPU.
/// - `tick(cpu, now, kick)` runs on `cpu` when [`Policy::next_tick`] says, asked after every
///   `schedule` and `tick` there; kicks a call could not return come from
///   [`Policy::take_kicks`], drained after every `schedule` and parameter change.
///
/// Writing one (`README.md`, "Writing a new policy", walks through `stride.rs`): build on
/// [`runq::Runqueues`], whose helpers keep the rules every policy here relies on, which a
/// policy that goes around them must keep itself: lock a runqueue before a vCPU homed
/// there, a second runqueue only with `try_lock`; publish every queue change to the peers
/// (the lock guard does); claim an idle CPU before kicking it, so two wake-ups kick two
/// CPUs ([`runq::Runqueues::kick_for`]); kick an idle peer rather than preempt the waker's
/// home CPU; hand out no vCPU before its `context_saved` ([`runq::Runqueues::steal`]);
/// allocate only in `add_domain` and `insert_vcpu`. Then add it to `register!` in
/// `lib.rs`, the one registration.
pub trait Policy: Send + Sync {
    /// The static description: name and parameters.
    fn info(&self) -> &'static PolicyInfo;

    /// Registers a domain and its per-domain parameters (unknown names are errors). Allocates.
    /// The default, for policies without per-domain state, only checks the names.
    fn add_domain(&self, domain: DomainId, params: &[(&str, u64)]) -> Result<(), Error> {
        params.iter().try_for_each(|(name, value)| self.set_domain_param(domain, name, *value))
    }

    /// Forgets a domain; all its vCPUs must have been removed.
    fn remove_domain(&self, domain: DomainId) -> Result<(), Error> {
        let _ = domain;
        Ok(())
    }

    /// Registers a vCPU of `domain`, asleep, with `cpu` as its initial CPU. May allocate.
    fn insert_vcpu(&self, vcpu: VcpuId, domain: DomainId, cpu: usize) -> Result<(), Error>;

    /// Forgets a vCPU; it must be asleep and not running on any CPU. Refuses
    /// ([`Error::Busy`]) while `schedule` has it on a CPU, from the decision that picked it
    /// to the next decision on that CPU, even if it was put to sleep in between: the kernel
    /// holds a picked vCPU by pointer, without a reference count, and frees it only once
    /// this succeeds (`kernel/src/schedule/mod.rs`, `Held`; checked for every registered
    /// policy by `tests/concurrency.rs`).
    fn remove_vcpu(&self, vcpu: VcpuId) -> Result<(), Error>;

    /// Makes a vCPU runnable: puts it on a runqueue and says which CPU to kick, if any.
    fn wake(&self, vcpu: VcpuId, now: u64) -> Wakeup;

    /// Makes a vCPU not runnable. Returns the CPU it is running on, which must reschedule.
    fn sleep(&self, vcpu: VcpuId, now: u64) -> Option<usize>;

    /// The running vCPU gives up the rest of its slice; the caller then calls `schedule` on
    /// the returned CPU (the one it runs on), if any.
    fn yield_now(&self, vcpu: VcpuId, now: u64) -> Option<usize>;

    /// Decides what runs next on `cpu`: requeues or retires the current vCPU, picks the next
    /// one (stealing from peers if the policy load-balances that way) and its slice.
    fn schedule(&self, cpu: usize, now: u64) -> Decision;

    /// `vcpu`, which the last `schedule(cpu, ..)` switched away from, is saved: its
    /// registers are stored and `cpu` no longer uses its address space, so any CPU may run
    /// it now (Xen's `context_saved`). Returns a CPU to kick, if any (one that could not
    /// take `vcpu`, or the work queued behind it, while it was leaving).
    ///
    /// The kernel calls it once per switch away from a vCPU, on `cpu`, after the switch and
    /// before `cpu`'s next `schedule` (see the trait's contract); `schedule` itself is not
    /// the moment, since the leaving vCPU's registers are still being saved or its address
    /// space is still loaded then. A call for a vCPU that is not leaving `cpu` does nothing.
    ///
    /// Policies built on [`runq::Runqueues`] forward it to
    /// [`runq::Runqueues::context_saved`], which lifts the ban on stealing from `cpu` that
    /// `schedule` put in place. The default does nothing: right for a policy that never
    /// moves a vCPU off the CPU it last ran on. (A policy on `Runqueues` that does not
    /// forward stays correct, since `cpu`'s next `schedule` lifts the ban too, but peers
    /// cannot steal from `cpu` until then.)
    fn context_saved(&self, cpu: usize, vcpu: VcpuId, now: u64) -> Option<usize> {
        let _ = (cpu, vcpu, now);
        None
    }

    /// The CPU a waking vCPU should be queued on (Xen's `pick_resource`).
    fn pick_cpu(&self, vcpu: VcpuId, now: u64) -> usize;

    /// When [`Policy::tick`] must next run on `cpu` (system ns), or `None` for not at all.
    ///
    /// The caller asks after every `schedule` and every `tick` on `cpu`, and the answer
    /// replaces the time it had: so it must be the same whenever it is asked with nothing
    /// changed (a periodic tick answers the next multiple of its period, as Xen's credit
    /// aligns its ticker, not `now` plus the period). A change made on another CPU that
    /// needs `cpu`'s tick sooner must kick `cpu` ([`Policy::take_kicks`]), whose `schedule`
    /// the caller then follows with this question. The default: no tick. Asked only of a
    /// policy whose [`PolicyInfo::timed`] is `true` (as are `take_kicks` and `tick`).
    fn next_tick(&self, cpu: usize, now: u64) -> Option<u64> {
        let _ = (cpu, now);
        None
    }

    /// Timed work on `cpu` (accounting, replenishing budgets), when [`Policy::next_tick`]
    /// said. Calls `kick(c)` for every CPU that must reschedule.
    fn tick(&self, cpu: usize, now: u64, kick: &mut dyn FnMut(usize)) {
        let _ = (cpu, now, kick);
    }

    /// Hands over the kicks the policy decided during a call that cannot return them
    /// (`schedule`, `context_saved` beyond its one, a parameter change): `kick(c)` for each
    /// CPU that must reschedule. The caller drains them after every `schedule` (with the
    /// `context_saved` before it), every parameter change and every domain joining, as
    /// Xen's schedulers raise `SCHEDULE_SOFTIRQ` on other CPUs from inside those hooks. The
    /// default has none.
    fn take_kicks(&self, kick: &mut dyn FnMut(usize)) {
        let _ = kick;
    }

    /// Sets one per-domain parameter. The default suits a policy without parameters: every
    /// name is an error listing what is allowed (nothing).
    fn set_domain_param(&self, domain: DomainId, name: &str, value: u64) -> Result<(), Error> {
        let _ = (domain, value);
        let info = self.info();
        find_param(info.name, info.domain_params, name).map(|_| ())
    }

    /// Reads one per-domain parameter (default: the declared default).
    fn domain_param(&self, domain: DomainId, name: &str) -> Result<u64, Error> {
        let _ = domain;
        let info = self.info();
        find_param(info.name, info.domain_params, name).map(|p| p.default)
    }

    /// Sets one global parameter (default: as `set_domain_param`).
    fn set_global_param(&self, name: &str, value: u64) -> Result<(), Error> {
        let _ = value;
        let info = self.info();
        find_param(info.name, info.global_params, name).map(|_| ())
    }

    /// Reads one global parameter (default: the declared default).
    fn global_param(&self, name: &str) -> Result<u64, Error> {
        let info = self.info();
        find_param(info.name, info.global_params, name).map(|p| p.default)
    }

    /// Installs the trace hook (see [`TraceHook`]); policies without priority classes
    /// ignore it.
    fn set_trace_hook(&self, hook: TraceHook) {
        let _ = hook;
    }

    /// Counters since creation.
    fn stats(&self) -> Stats;

    /// The policy's own counters since creation, each with its name (credit: how often its
    /// clamps fired and what its rounding cost); results carry them as the summary's
    /// `policy_counters`. None by default.
    fn counters(&self, _out: &mut dyn FnMut(&'static str, u64)) {}

    /// A human-readable dump of the runqueues (Xen's `'r'` debug key).
    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// Looks `name` up in `params`, returning the spec or the error that lists what is allowed.
pub fn find_param(
    policy: &'static str,
    params: &'static [ParamSpec],
    name: &str,
) -> Result<&'static ParamSpec, Error> {
    params.iter().find(|p| p.name == name).ok_or_else(|| Error::UnknownParam {
        policy,
        param: String::from(name),
        allowed: params,
    })
}

#[cfg(test)]
mod topology_tests {
    use super::*;

    #[test]
    fn shaped_numbers_cpus_as_qemu_smp_does() {
        // -smp 8,sockets=2,cores=2,threads=2
        let t = Topology::shaped(8, 1, 1, 2, 2);
        let got: alloc::vec::Vec<(u16, u16)> =
            (0..8).map(|c| (t.place(c).socket, t.place(c).core)).collect();
        assert_eq!(got, [(0, 0), (0, 0), (0, 1), (0, 1), (1, 2), (1, 2), (1, 3), (1, 3)]);
        let flat = Topology::flat(3, 1, 1);
        assert_eq!((flat.place(2).socket, flat.place(2).core), (0, 2));
    }
}
