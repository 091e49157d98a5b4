//! CPU pools on the machine (Xen's `xen/common/sched/cpupool.c`): the CPUs partitioned into
//! pools, each scheduled by its own policy instance, which numbers its CPUs `0..n`.
//!
//! Two halves, as in Xen:
//! - the control state, [`sched::pools::Pools`] (host-tested: which pool each CPU and
//!   domain is in, each pool's policy and knobs, Xen's rules for every operation), behind
//!   one lock that only control operations take ([`pools`]);
//! - what the hot paths read with no lock: each CPU's instance and local number
//!   ([`of_cpu`], one atomic per CPU) and each vCPU's instance ([`of_vcpu`], one atomic in
//!   the vCPU).
//!
//! An instance is immutable once installed (its policy has interior locks of its own). The
//! hot paths reach it by plain pointer (an [`RcuSlot`]: no lock, no reference count), so a
//! CPU may still be inside the old one's `schedule` when a swap changes the map: a replaced
//! instance is taken out of its slot ([`retire`]) once nothing leads to it any more, and
//! freed by the control path a grace period later (`arch::rcu`, Xen's `call_rcu`), when
//! every other CPU has passed a quiescent point. The references [`instance`], [`of_cpu`],
//! [`of_vcpu`] and [`of_pool`] hand out borrow the caller's read-side section
//! (`arch::rcu::ReadSide`), so they stay in stack frames and none is stored (a CPU's
//! `CpuSched` keeps the map's raw entry, a number, not the instance). Slots are not reused:
//! [`MAX_INSTANCES`] bounds the swaps of one boot.

use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use sched::Policy;
use sched::pools::{PoolError, PoolId, Pools};
use spin::{Mutex, MutexGuard, Once};

use crate::arch::rcu::{RcuSlot, ReadSide, Retired};
use crate::domain::Vcpu;

/// One policy instance and the machine CPUs it schedules (local CPU `i` is `cpus[i]`).
pub struct Instance {
    pub policy: Box<dyn Policy>,
    /// Its policy's `PolicyInfo::timed`, kept here: the switch asks `next_tick` and
    /// `take_kicks` only of a policy that uses them (two calls through the vtable saved
    /// on every switch, each a few translated blocks to look up after a CR3 load).
    pub timed: bool,
    pub cpus: Vec<usize>,
    /// The pool it schedules (or scheduled, before a swap replaced it).
    pub pool: PoolId,
}

impl Instance {
    /// The machine number of local CPU `local`.
    pub fn global(&self, local: usize) -> usize {
        self.cpus[local]
    }

    /// The name of its policy.
    pub fn name(&self) -> &'static str {
        self.policy.info().name
    }
}

/// Most instances one boot installs: the boot pools plus every later swap.
pub const MAX_INSTANCES: usize = sched::limits::MAX_POLICY_INSTANCES;

/// A vCPU or CPU with no instance.
pub const NO_INSTANCE: u32 = u32::MAX;

static INSTANCES: [RcuSlot<Instance>; MAX_INSTANCES] = [const { RcuSlot::new() }; MAX_INSTANCES];
static INSTALLED: AtomicUsize = AtomicUsize::new(0);
/// Each pool's instance now.
static POOL_INSTANCE: [AtomicU32; sched::pools::MAX_POOLS] =
    [const { AtomicU32::new(NO_INSTANCE) }; sched::pools::MAX_POOLS];
/// CPU `cpu`'s entry in the CPU map (kept in its `super::CpuState`): its instance and local
/// number, `instance << 32 | local` ([`FREE`]: in no pool). `None` for a CPU the machine
/// does not have.
fn map_entry(cpu: usize) -> Option<&'static AtomicU64> {
    Some(&super::cpu_state(cpu)?.pool)
}
static POOLS: Once<Mutex<Pools>> = Once::new();
/// The machine's topology, which pools take subsets of.
static TOPOLOGY: Once<sched::Topology> = Once::new();
/// Heap bytes the pools' changes since boot hold ([`runtime_bytes`]).
static RUNTIME_BYTES: AtomicI64 = AtomicI64::new(0);

/// Heap bytes the pools' changes since boot hold now: the policy instances installed since
/// boot, less those freed since (a replaced instance comes off when it is freed, a grace
/// period after the swap: [`retire`]), and what the control state grew or shrank by (a
/// pool's knobs, a pool made or destroyed). A check that the heap is back to a baseline
/// leaves them out.
pub fn runtime_bytes() -> i64 {
    RUNTIME_BYTES.load(Ordering::Relaxed)
}

/// Counts what the heap moved by between `before` and `after` (`heap_used` readings around
/// a pool change, or around the free of a retired instance) as held by the pools. Other CPUs rarely allocate meanwhile: guests allocate in
/// the hypervisor only through Domain0's control calls, which the caller is serving.
pub fn kept(before: usize, after: usize) {
    RUNTIME_BYTES.fetch_add(after as i64 - before as i64, Ordering::Relaxed);
}

/// Whether new instances get the trace hook.
static TRACING: AtomicBool = AtomicBool::new(false);

/// The CPU map's entry ([`map_entry`]) of a CPU in no pool: it idles.
pub(super) const FREE: u64 = u64::MAX;

/// A pool as the command line declares it, resolved (`kerncore::cmdline::BootPool`).
pub struct BootPool<'a> {
    pub name: &'a str,
    pub policy: &'a str,
    pub cpus: Vec<usize>,
    pub knobs: Vec<(&'a str, u64)>,
}

/// Why the boot pools could not be built.
pub enum BootError {
    Pool(PoolError),
    Policy(sched::Error),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::Pool(e) => write!(f, "{e}"),
            BootError::Policy(e) => write!(f, "{e}"),
        }
    }
}

/// Builds the boot pools (the first holds Domain0, domain 0) over a machine of `topology`:
/// the control state, one instance per pool, every CPU's entry. Called once by the BSP
/// before any CPU schedules; a CPU named by no pool idles.
pub fn init(topology: sched::Topology, boot: &[BootPool<'_>]) -> Result<(), BootError> {
    let cpus = topology.cpus;
    TOPOLOGY.call_once(|| topology);
    let first = boot.first().expect("at least one boot pool");
    let mut state = Pools::new(cpus, first.name, first.policy, 0).map_err(BootError::Pool)?;
    if let Some(&c) = first.cpus.iter().find(|&&c| c >= cpus) {
        return Err(BootError::Pool(PoolError::NoSuchCpu(c)));
    }
    for c in (0..cpus).filter(|c| !first.cpus.contains(c)) {
        state.remove_cpu(PoolId(0), c).map_err(BootError::Pool)?;
    }
    state
        .set_knobs(PoolId(0), &first.knobs)
        .map_err(BootError::Pool)?;
    for bp in &boot[1..] {
        let id = state.create(bp.name, bp.policy).map_err(BootError::Pool)?;
        for &c in &bp.cpus {
            state.add_cpu(id, c).map_err(BootError::Pool)?;
        }
        state.set_knobs(id, &bp.knobs).map_err(BootError::Pool)?;
    }
    let ids: Vec<PoolId> = (0..boot.len() as u32).map(PoolId).collect();
    for id in ids {
        let pool = state.pool(id).expect("made above");
        let knobs: Vec<(&str, u64)> = pool.knobs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let index = install(id, pool.policy.name, &pool.cpus, &knobs)?;
        attach_cpus(index);
    }
    POOLS.call_once(|| Mutex::new(state));
    Ok(())
}

/// Builds and installs an instance of `policy` for pool `pool` over `cpus` with `knobs`, and
/// makes it the pool's (its CPUs still point at the old one: [`attach_cpus`]). It is kept
/// until it is replaced and freed ([`retire`]): a caller after boot counts its heap with
/// [`kept`].
pub fn install(
    pool: PoolId,
    policy: &str,
    cpus: &[usize],
    knobs: &[(&str, u64)],
) -> Result<u32, BootError> {
    let topology = TOPOLOGY.get().expect("pools initialised").subset(cpus);
    let built = sched::registry::build(policy, &topology, knobs).map_err(BootError::Policy)?;
    let index = INSTALLED.fetch_add(1, Ordering::AcqRel);
    if index >= MAX_INSTANCES {
        INSTALLED.fetch_sub(1, Ordering::AcqRel);
        return Err(BootError::Pool(PoolError::Full));
    }
    if TRACING.load(Ordering::Acquire) {
        built.set_trace_hook(super::trace::policy_hook);
    }
    let fresh = INSTANCES[index].replace(Some(alloc::boxed::Box::new(Instance {
        timed: built.info().timed,
        policy: built,
        cpus: cpus.to_vec(),
        pool,
    })));
    debug_assert!(fresh.is_none(), "instance slots are not reused");
    POOL_INSTANCE[pool.0 as usize].store(index as u32, Ordering::Release);
    Ok(index as u32)
}

/// Points every CPU of instance `index` at it.
pub fn attach_cpus(index: u32) {
    let section = crate::arch::rcu::read_side();
    let inst = instance(index, &section).expect("installed");
    for (local, &cpu) in inst.cpus.iter().enumerate() {
        map_entry(cpu)
            .expect("a pool's CPUs are the machine's")
            .store(u64::from(index) << 32 | local as u64, Ordering::Release);
    }
}

/// Instance `index`, if installed.
pub fn instance(index: u32, section: &ReadSide) -> Option<&Instance> {
    INSTANCES.get(index as usize)?.get(section)
}

/// Takes instance `index` out of its slot, to be freed a grace period later
/// ([`Retired::free_after_grace`]): the caller has made sure nothing leads to it any more
/// (no pool's instance, no CPU's map entry, no vCPU's `sched_instance`), so a CPU that does
/// not already hold it cannot reach it. `None` if there is no such instance.
pub fn retire(index: u32) -> Option<Retired<Instance>> {
    let slot = INSTANCES.get(index as usize)?;
    debug_assert!(
        POOL_INSTANCE
            .iter()
            .all(|p| p.load(Ordering::Acquire) != index)
    );
    slot.replace(None)
}

/// The instance pool `pool` runs now.
pub fn of_pool(pool: PoolId, section: &ReadSide) -> Option<&Instance> {
    instance(
        POOL_INSTANCE.get(pool.0 as usize)?.load(Ordering::Acquire),
        section,
    )
}

/// The index of the instance pool `pool` runs now.
pub fn index_of_pool(pool: PoolId) -> u32 {
    POOL_INSTANCE
        .get(pool.0 as usize)
        .map_or(NO_INSTANCE, |i| i.load(Ordering::Acquire))
}

/// The instance that schedules `v` (none before it is registered).
pub fn of_vcpu<'a>(v: &Vcpu, section: &'a ReadSide) -> Option<&'a Instance> {
    instance(v.sched_instance.load(Ordering::Acquire), section)
}

/// Where a CPU stands: its instance and its number there.
#[derive(Clone, Copy)]
pub struct Here<'a> {
    /// The raw map entry (changes when the CPU's instance does).
    pub entry: u64,
    pub inst: &'a Instance,
    pub local: usize,
}

/// CPU `cpu`'s instance and local number; `None` for a CPU in no pool.
pub fn of_cpu(cpu: usize, section: &ReadSide) -> Option<Here<'_>> {
    let entry = map_entry(cpu)?.load(Ordering::Acquire);
    if entry == FREE {
        return None;
    }
    Some(Here {
        entry,
        inst: instance((entry >> 32) as u32, section)?,
        local: entry as u32 as usize,
    })
}

/// The control state, locked (control operations only: never on a hot path).
pub fn pools() -> MutexGuard<'static, Pools> {
    POOLS.get().expect("pools initialised").lock()
}

/// The first pool's instance (Domain0's): the machine's policy when there is one pool.
pub fn first(section: &ReadSide) -> &Instance {
    of_pool(PoolId(0), section).expect("pools initialised")
}

/// Every pool's current instance, in pool order.
pub fn current_instances(section: &ReadSide) -> Vec<&Instance> {
    (0..sched::pools::MAX_POOLS as u32)
        .filter_map(|p| of_pool(PoolId(p), section))
        .collect()
}

/// Installs the trace hook on every instance, and on every later one.
pub fn enable_trace() {
    TRACING.store(true, Ordering::Release);
    let section = crate::arch::rcu::read_side();
    for i in 0..INSTALLED.load(Ordering::Acquire).min(MAX_INSTANCES) {
        if let Some(inst) = instance(i as u32, &section) {
            inst.policy.set_trace_hook(super::trace::policy_hook);
        }
    }
}

/// `pool`'s name, policy and CPUs, for results (`run.pools`).
pub fn describe(pool: PoolId) -> Option<(alloc::string::String, &'static str, Vec<usize>)> {
    let state = pools();
    let p = state.pool(pool)?;
    Some((p.name.to_string(), p.policy.name, p.cpus.clone()))
}

/// CPU `cpu` leaves its pool: it idles until a pool takes it.
pub fn free_cpu(cpu: usize) {
    if let Some(entry) = map_entry(cpu) {
        entry.store(FREE, Ordering::Release);
    }
}

/// Pool `pool` has no instance any more (destroyed, or left with no CPU).
pub fn forget_pool(pool: PoolId) {
    if let Some(slot) = POOL_INSTANCE.get(pool.0 as usize) {
        slot.store(NO_INSTANCE, Ordering::Release);
    }
}
