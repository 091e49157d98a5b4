//! CPU pools' state machine: which pool each CPU and each domain belongs to, each pool's
//! policy and knobs, and every run-time operation on them (create and destroy a pool, add
//! and remove a CPU, move a domain, replace a pool's policy, set a domain's parameters or
//! a pool's knobs), each checked in full before anything changes, so that an operation
//! is applied whole or refused with an error that says why.
//!
//! The rules are Xen's (`xen/common/sched/cpupool.c`, `sched_move_domain` in
//! `xen/common/sched/core.c`), written here from reading them:
//! - a pool is destroyed only when it holds no domain and no CPU (`cpupool_destroy`:
//!   `n_dom != 0 || cpumask_weight(cpu_valid)` is `-EBUSY`), and never the first pool,
//!   Domain0's (Xen's `cpupool0`);
//! - a CPU is in at most one pool; a CPU in none is free (it idles);
//! - a pool's last CPU cannot be removed while it holds a live domain (Xen: `-EBUSY` unless
//!   every domain in it is dying), and the first pool keeps at least one CPU (Xen keeps CPU
//!   0 in `cpupool0`), so Domain0 always has a CPU to run on;
//! - a domain moves only to a pool that has CPUs (Xen: `-ENOENT` otherwise); moving to its
//!   own pool does nothing; Domain0 does not move (it stays in the first pool). Here a
//!   dying domain does not move either (its vCPUs are being torn down);
//! - a domain carries its parameters by name: the policy of the pool it joins gets those
//!   it takes, the others are kept for a later policy that does (Xen's `sched_move_domain`
//!   gives the new scheduler its defaults instead);
//! - a pool's policy may be replaced while domains run in it (Xen only sets a pool's
//!   scheduler when the pool is created): refused, before anything changes, when the new
//!   policy would refuse the parameters of any domain in the pool; knobs the new policy
//!   takes carry over.
//!
//! The kernel keeps one of these under its control lock and, for each operation it
//! accepts, does what the returned value says (pause the domains named, take their vCPUs
//! out of the old policy instance, put them in the new one, unpause). Host-tested below.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::{Error, ParamSpec, PolicyInfo, Topology, registry};

/// A pool's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolId(pub u32);

/// Why an operation was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// No pool of that id.
    NoSuchPool(PoolId),
    /// No CPU of that number on the machine.
    NoSuchCpu(usize),
    /// No domain of that id.
    NoSuchDomain(u32),
    /// A domain of that id is already in a pool.
    DomainExists(u32),
    /// A pool of that name exists.
    NameTaken(String),
    /// A name that is empty or too long.
    BadName,
    /// The policy is not registered.
    UnknownPolicy(String),
    /// The CPU is in a pool already.
    CpuTaken {
        /// The CPU.
        cpu: usize,
        /// Its pool.
        pool: PoolId,
    },
    /// The CPU is not in that pool.
    CpuNotInPool {
        /// The CPU.
        cpu: usize,
        /// The pool named.
        pool: PoolId,
    },
    /// The pool holds domains.
    HasDomains {
        /// The pool.
        pool: PoolId,
        /// How many (live ones, for a CPU's removal).
        domains: usize,
    },
    /// The pool holds CPUs.
    HasCpus {
        /// The pool.
        pool: PoolId,
        /// How many.
        cpus: usize,
    },
    /// The pool has no CPU to run a domain on.
    NoCpus(PoolId),
    /// The operation would leave the first pool (Domain0's) without a CPU, destroy it, or
    /// move Domain0 out of it.
    Domain0,
    /// The domain is dying.
    Dying(u32),
    /// The policy refused a parameter (named in the error).
    Param(Error),
    /// Every pool slot is in use.
    Full,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::NoSuchPool(p) => write!(f, "no pool {}", p.0),
            PoolError::NoSuchCpu(c) => write!(f, "no CPU {c}"),
            PoolError::NoSuchDomain(d) => write!(f, "no domain {d}"),
            PoolError::DomainExists(d) => write!(f, "domain {d} is already in a pool"),
            PoolError::NameTaken(n) => write!(f, "a pool `{n}` exists; names must differ"),
            PoolError::BadName => write!(f, "a pool name is 1..={MAX_NAME_BYTES} bytes"),
            PoolError::UnknownPolicy(n) => {
                write!(f, "no policy `{n}`; allowed: ")?;
                for (i, name) in registry::names().enumerate() {
                    write!(f, "{}{name}", if i > 0 { ", " } else { "" })?;
                }
                Ok(())
            }
            PoolError::CpuTaken { cpu, pool } => write!(f, "CPU {cpu} is in pool {}", pool.0),
            PoolError::CpuNotInPool { cpu, pool } => {
                write!(f, "CPU {cpu} is not in pool {}", pool.0)
            }
            PoolError::HasDomains { pool, domains } => {
                write!(f, "pool {} holds {domains} domains; move or destroy them first", pool.0)
            }
            PoolError::HasCpus { pool, cpus } => {
                write!(f, "pool {} holds {cpus} CPUs; remove them first", pool.0)
            }
            PoolError::NoCpus(p) => write!(f, "pool {} has no CPU to run a domain on", p.0),
            PoolError::Domain0 => write!(
                f,
                "the first pool is Domain0's: it keeps a CPU and Domain0, and is not destroyed"
            ),
            PoolError::Dying(d) => write!(f, "domain {d} is dying"),
            PoolError::Param(e) => write!(f, "{e}"),
            PoolError::Full => write!(f, "at most {MAX_POOLS} pools"),
        }
    }
}

/// Most pools at once.
pub const MAX_POOLS: usize = 64;
/// Longest pool name, in bytes.
pub const MAX_NAME_BYTES: usize = 32;

/// One pool.
#[derive(Clone, Debug)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Its policy.
    pub policy: &'static PolicyInfo,
    /// Machine numbers of its CPUs, ascending: local CPU `i` of its policy instance is
    /// `cpus[i]`.
    pub cpus: Vec<usize>,
    /// Its global knobs, as set.
    pub knobs: Vec<(String, u64)>,
}

#[derive(Clone, Debug)]
struct DomainEntry {
    pool: PoolId,
    dying: bool,
    /// Every per-domain parameter set, by name (carried across pools and policies).
    params: Vec<(String, u64)>,
}

/// What the kernel does for an accepted move: pause `domain`, take its vCPUs out of pool
/// `from`'s instance, add it to `to`'s with `params`, insert its vCPUs spread over `to`'s
/// CPUs, unpause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The domain.
    pub domain: u32,
    /// The pool it leaves.
    pub from: PoolId,
    /// The pool it joins.
    pub to: PoolId,
    /// Its parameters that `to`'s policy takes.
    pub params: Vec<(String, u64)>,
}

/// What the kernel does for an accepted policy swap: pause `domains`, take their vCPUs out
/// of the old instance, build `policy` over the pool's CPUs with `knobs`, add each domain
/// with its parameters (`params`, in `domains` order), insert their vCPUs, unpause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swap {
    /// The pool.
    pub pool: PoolId,
    /// Its new policy.
    pub policy: &'static str,
    /// The knobs the new policy gets.
    pub knobs: Vec<(String, u64)>,
    /// The domains in the pool.
    pub domains: Vec<u32>,
    /// Each domain's parameters that the new policy takes.
    pub params: Vec<Vec<(String, u64)>>,
}

/// Every pool of the machine, and where every CPU and domain is.
#[derive(Clone, Debug)]
pub struct Pools {
    pools: Vec<Option<Pool>>,
    cpu_pool: Vec<Option<PoolId>>,
    domains: alloc::collections::BTreeMap<u32, DomainEntry>,
    dom0: u32,
}

/// The parameters in `all` that `policy` takes.
fn taken(policy: &PolicyInfo, all: &[(String, u64)]) -> Vec<(String, u64)> {
    all.iter().filter(|(k, _)| policy.domain_param(k).is_some()).cloned().collect()
}

/// Whether `policy` accepts a domain with `params` (each name and range, and what it checks
/// across them, rtds's `budget_us` at most `period_us`), tried on a one-domain instance.
fn check_domain(policy: &PolicyInfo, params: &[(String, u64)]) -> Result<(), PoolError> {
    if params.is_empty() {
        return Ok(());
    }
    let probe =
        registry::build(policy.name, &Topology::flat(1, 1, 1), &[]).map_err(PoolError::Param)?;
    let pairs: Vec<(&str, u64)> = params.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    probe.add_domain(crate::DomainId(0), &pairs).map_err(PoolError::Param)
}

/// Checks one parameter of `params` (the policy `policy`'s domain or global ones): its
/// name, then its range.
fn check_param(
    policy: &'static str,
    params: &'static [ParamSpec],
    name: &str,
    value: u64,
) -> Result<(), PoolError> {
    crate::find_param(policy, params, name)
        .and_then(|spec| spec.check(value))
        .map_err(PoolError::Param)
}

fn set(all: &mut Vec<(String, u64)>, name: &str, value: u64) {
    match all.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => all.push((name.to_string(), value)),
    }
}

impl Pools {
    /// The machine's `cpus` CPUs in one first pool `name` under `policy`, with Domain0
    /// (domain `dom0`) in it.
    pub fn new(cpus: usize, name: &str, policy: &str, dom0: u32) -> Result<Pools, PoolError> {
        let mut p = Pools {
            pools: Vec::new(),
            cpu_pool: alloc::vec![None; cpus],
            domains: alloc::collections::BTreeMap::new(),
            dom0,
        };
        let first = p.create(name, policy)?;
        for c in 0..cpus {
            p.add_cpu(first, c)?;
        }
        p.add_domain(dom0, first, &[])?;
        Ok(p)
    }

    /// Pool `p`, if it exists.
    pub fn pool(&self, p: PoolId) -> Option<&Pool> {
        self.pools.get(p.0 as usize).and_then(Option::as_ref)
    }

    fn pool_mut(&mut self, p: PoolId) -> Result<&mut Pool, PoolError> {
        self.pools.get_mut(p.0 as usize).and_then(Option::as_mut).ok_or(PoolError::NoSuchPool(p))
    }

    /// The pool CPU `cpu` is in and its number there, if any.
    pub fn local(&self, cpu: usize) -> Option<(PoolId, usize)> {
        let p = (*self.cpu_pool.get(cpu)?)?;
        let i = self.pool(p)?.cpus.iter().position(|&c| c == cpu)?;
        Some((p, i))
    }

    /// The pool domain `d` is in.
    pub fn pool_of(&self, d: u32) -> Option<PoolId> {
        self.domains.get(&d).map(|e| e.pool)
    }

    /// Domain `d`'s parameters that its pool's policy takes.
    pub fn params_taken(&self, d: u32) -> Option<Vec<(String, u64)>> {
        let e = self.domains.get(&d)?;
        Some(taken(self.pool(e.pool)?.policy, &e.params))
    }

    /// Domains in pool `p`, ascending.
    pub fn domains_in(&self, p: PoolId) -> Vec<u32> {
        self.domains.iter().filter(|(_, e)| e.pool == p).map(|(&d, _)| d).collect()
    }

    /// Creates an empty pool (no CPU yet) under `policy`.
    pub fn create(&mut self, name: &str, policy: &str) -> Result<PoolId, PoolError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(PoolError::BadName);
        }
        if self.pools.iter().flatten().any(|p| p.name == name) {
            return Err(PoolError::NameTaken(name.to_string()));
        }
        let info =
            registry::info(policy).map_err(|_| PoolError::UnknownPolicy(policy.to_string()))?;
        let slot = match self.pools.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.pools.len() < MAX_POOLS => {
                self.pools.push(None);
                self.pools.len() - 1
            }
            None => return Err(PoolError::Full),
        };
        self.pools[slot] = Some(Pool {
            name: name.to_string(),
            policy: info,
            cpus: Vec::new(),
            knobs: Vec::new(),
        });
        Ok(PoolId(slot as u32))
    }

    /// Destroys a pool that holds no domain and no CPU (never the first).
    pub fn destroy(&mut self, p: PoolId) -> Result<(), PoolError> {
        let pool = self.pool(p).ok_or(PoolError::NoSuchPool(p))?;
        if p.0 == 0 {
            return Err(PoolError::Domain0);
        }
        let domains = self.domains_in(p).len();
        if domains > 0 {
            return Err(PoolError::HasDomains { pool: p, domains });
        }
        if !pool.cpus.is_empty() {
            return Err(PoolError::HasCpus { pool: p, cpus: pool.cpus.len() });
        }
        self.pools[p.0 as usize] = None;
        Ok(())
    }

    /// Adds a free CPU to pool `p`. (The kernel then rebuilds the pool's instance over its
    /// new CPUs, as for a swap to the same policy.)
    pub fn add_cpu(&mut self, p: PoolId, cpu: usize) -> Result<(), PoolError> {
        let owner = *self.cpu_pool.get(cpu).ok_or(PoolError::NoSuchCpu(cpu))?;
        self.pool(p).ok_or(PoolError::NoSuchPool(p))?;
        if let Some(pool) = owner {
            return Err(PoolError::CpuTaken { cpu, pool });
        }
        let pool = self.pool_mut(p)?;
        let at = pool.cpus.partition_point(|&c| c < cpu);
        pool.cpus.insert(at, cpu);
        self.cpu_pool[cpu] = Some(p);
        Ok(())
    }

    /// Takes CPU `cpu` out of pool `p` (it becomes free): not the first pool's last CPU,
    /// nor the last CPU of a pool holding a live domain.
    pub fn remove_cpu(&mut self, p: PoolId, cpu: usize) -> Result<(), PoolError> {
        let pool = self.pool(p).ok_or(PoolError::NoSuchPool(p))?;
        if !pool.cpus.contains(&cpu) {
            return Err(PoolError::CpuNotInPool { cpu, pool: p });
        }
        if pool.cpus.len() == 1 {
            if p.0 == 0 {
                return Err(PoolError::Domain0);
            }
            let live = self.domains.values().filter(|e| e.pool == p && !e.dying).count();
            if live > 0 {
                return Err(PoolError::HasDomains { pool: p, domains: live });
            }
        }
        self.pool_mut(p)?.cpus.retain(|&c| c != cpu);
        self.cpu_pool[cpu] = None;
        Ok(())
    }

    /// A new domain `d` joins pool `p` with `params`; returns those its policy takes.
    pub fn add_domain(
        &mut self,
        d: u32,
        p: PoolId,
        params: &[(String, u64)],
    ) -> Result<Vec<(String, u64)>, PoolError> {
        if self.domains.contains_key(&d) {
            return Err(PoolError::DomainExists(d));
        }
        let pool = self.pool(p).ok_or(PoolError::NoSuchPool(p))?;
        if pool.cpus.is_empty() {
            return Err(PoolError::NoCpus(p));
        }
        let mine = taken(pool.policy, params);
        check_domain(pool.policy, &mine)?;
        self.domains.insert(d, DomainEntry { pool: p, dying: false, params: params.to_vec() });
        Ok(mine)
    }

    /// Domain `d` is dying: it moves no more.
    pub fn set_dying(&mut self, d: u32) -> Result<(), PoolError> {
        self.domains.get_mut(&d).ok_or(PoolError::NoSuchDomain(d))?.dying = true;
        Ok(())
    }

    /// Domain `d` is gone.
    pub fn remove_domain(&mut self, d: u32) -> Result<(), PoolError> {
        if d == self.dom0 {
            return Err(PoolError::Domain0);
        }
        self.domains.remove(&d).map(|_| ()).ok_or(PoolError::NoSuchDomain(d))
    }

    /// Sets domain `d`'s parameters: all checked against its pool's policy first (names,
    /// ranges, and across them), then all stored. Returns the whole set its policy takes.
    pub fn set_params(
        &mut self,
        d: u32,
        params: &[(&str, u64)],
    ) -> Result<Vec<(String, u64)>, PoolError> {
        let e = self.domains.get(&d).ok_or(PoolError::NoSuchDomain(d))?;
        let policy = self.pool(e.pool).ok_or(PoolError::NoSuchPool(e.pool))?.policy;
        let mut next = e.params.clone();
        for (k, v) in params {
            check_param(policy.name, policy.domain_params, k, *v)?;
            set(&mut next, k, *v);
        }
        let mine = taken(policy, &next);
        check_domain(policy, &mine)?;
        if let Some(e) = self.domains.get_mut(&d) {
            e.params = next;
        }
        Ok(mine)
    }

    /// Sets pool `p`'s global knobs: each checked against its policy first, then all stored.
    pub fn set_knobs(&mut self, p: PoolId, knobs: &[(&str, u64)]) -> Result<(), PoolError> {
        let pool = self.pool(p).ok_or(PoolError::NoSuchPool(p))?;
        for (k, v) in knobs {
            check_param(pool.policy.name, pool.policy.global_params, k, *v)?;
        }
        let pool = self.pool_mut(p)?;
        for (k, v) in knobs {
            set(&mut pool.knobs, k, *v);
        }
        Ok(())
    }

    /// Moves domain `d` to pool `to` (Xen's `cpupool_move_domain`); `Ok(None)` when it is
    /// there already.
    pub fn move_domain(&mut self, d: u32, to: PoolId) -> Result<Option<Move>, PoolError> {
        let e = self.domains.get(&d).ok_or(PoolError::NoSuchDomain(d))?;
        let target = self.pool(to).ok_or(PoolError::NoSuchPool(to))?;
        if e.pool == to {
            return Ok(None);
        }
        if d == self.dom0 {
            return Err(PoolError::Domain0);
        }
        if e.dying {
            return Err(PoolError::Dying(d));
        }
        if target.cpus.is_empty() {
            return Err(PoolError::NoCpus(to));
        }
        let params = taken(target.policy, &e.params);
        check_domain(target.policy, &params)?;
        let from = e.pool;
        if let Some(e) = self.domains.get_mut(&d) {
            e.pool = to;
        }
        Ok(Some(Move { domain: d, from, to, params }))
    }

    /// Replaces pool `p`'s policy with `name`, domains and all.
    pub fn set_policy(&mut self, p: PoolId, name: &str) -> Result<Swap, PoolError> {
        let pool = self.pool(p).ok_or(PoolError::NoSuchPool(p))?;
        let info = registry::info(name).map_err(|_| PoolError::UnknownPolicy(name.to_string()))?;
        let domains = self.domains_in(p);
        let mut params = Vec::new();
        for d in &domains {
            let mine = taken(info, &self.domains[d].params);
            check_domain(info, &mine)?;
            params.push(mine);
        }
        let knobs: Vec<(String, u64)> =
            pool.knobs.iter().filter(|(k, _)| info.global_param(k).is_some()).cloned().collect();
        let pool = self.pool_mut(p)?;
        pool.policy = info;
        pool.knobs = knobs.clone();
        Ok(Swap { pool: p, policy: info.name, knobs, domains, params })
    }
}

/// Sets several parameters of `domain` in `policy` as one change: every name and range is
/// checked first; then they are set, a parameter the policy refuses in the order given
/// (rtds's `period_us` below the old `budget_us`) being tried again after the others; if
/// they cannot all be set, those set are put back and the policy's error returned. So a
/// control call never leaves a domain half-changed (the kernel's `SetSched`).
pub fn set_domain_params(
    policy: &dyn crate::Policy,
    domain: crate::DomainId,
    params: &[(&str, u64)],
) -> Result<(), Error> {
    let info = policy.info();
    for (name, value) in params {
        crate::find_param(info.name, info.domain_params, name)?.check(*value)?;
    }
    let old: Vec<(&str, u64)> = params
        .iter()
        .map(|(name, _)| policy.domain_param(domain, name).map(|v| (*name, v)))
        .collect::<Result<_, _>>()?;
    // Each pass sets what it can; a pass that sets nothing ends it.
    let apply = |pairs: &[(&str, u64)]| -> Result<(), Error> {
        let mut pending: Vec<(&str, u64)> = pairs.to_vec();
        while !pending.is_empty() {
            let mut refused = None;
            let before = pending.len();
            pending.retain(|(name, value)| match policy.set_domain_param(domain, name, *value) {
                Ok(()) => false,
                Err(e) => {
                    refused = Some(e);
                    true
                }
            });
            if pending.len() == before
                && let Some(e) = refused
            {
                return Err(e);
            }
        }
        Ok(())
    };
    apply(params).inspect_err(|_| {
        // Back to where it was: the old values were a valid whole.
        let _ = apply(&old);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn s(k: &str, v: u64) -> (String, u64) {
        (k.to_string(), v)
    }

    /// 4 CPUs: `pool0` (credit) with CPUs 0..=1 and Domain0 (0), `rt` (rr) with 2..=3 and
    /// domains 1 and 2.
    fn machine() -> (Pools, PoolId) {
        let mut p = Pools::new(4, "pool0", "credit", 0).unwrap();
        let rt = p.create("rt", "rr").unwrap();
        for c in [2, 3] {
            p.remove_cpu(PoolId(0), c).unwrap();
            p.add_cpu(rt, c).unwrap();
        }
        p.add_domain(1, rt, &[s("weight", 512)]).unwrap();
        p.add_domain(2, rt, &[]).unwrap();
        (p, rt)
    }

    /// A new pool `q` under `policy` in `p`, given CPU 1 from pool 0.
    fn pool_on_cpu1(p: &mut Pools, policy: &str) -> PoolId {
        let q = p.create("q", policy).unwrap();
        p.remove_cpu(PoolId(0), 1).unwrap();
        p.add_cpu(q, 1).unwrap();
        q
    }

    #[test]
    fn cpus_map_to_local_numbers_and_back() {
        let (p, rt) = machine();
        assert_eq!(p.local(3), Some((rt, 1)));
        assert_eq!(p.local(1), Some((PoolId(0), 1)));
        assert_eq!(p.pool(rt).unwrap().cpus, [2, 3]);
        assert_eq!(p.domains_in(rt), [1, 2]);
    }

    #[test]
    fn a_cpu_is_in_one_pool() {
        let (mut p, rt) = machine();
        assert_eq!(p.add_cpu(rt, 0), Err(PoolError::CpuTaken { cpu: 0, pool: PoolId(0) }));
        assert_eq!(p.add_cpu(rt, 9), Err(PoolError::NoSuchCpu(9)));
        assert_eq!(p.remove_cpu(rt, 0), Err(PoolError::CpuNotInPool { cpu: 0, pool: rt }));
    }

    #[test]
    fn domain0s_pool_keeps_a_cpu_and_domain0() {
        let (mut p, rt) = machine();
        p.remove_cpu(PoolId(0), 0).unwrap();
        assert_eq!(p.remove_cpu(PoolId(0), 1), Err(PoolError::Domain0));
        assert_eq!(p.pool(PoolId(0)).unwrap().cpus, [1], "nothing changed");
        assert_eq!(p.move_domain(0, rt), Err(PoolError::Domain0));
        assert_eq!(p.destroy(PoolId(0)), Err(PoolError::Domain0));
        assert_eq!(p.remove_domain(0), Err(PoolError::Domain0));
    }

    #[test]
    fn a_pool_with_domains_is_neither_emptied_nor_destroyed() {
        let (mut p, rt) = machine();
        p.remove_cpu(rt, 2).unwrap();
        assert_eq!(p.remove_cpu(rt, 3), Err(PoolError::HasDomains { pool: rt, domains: 2 }));
        assert_eq!(p.destroy(rt), Err(PoolError::HasDomains { pool: rt, domains: 2 }));
        // Dying domains do not hold the last CPU (Xen moves them to cpupool0).
        p.set_dying(1).unwrap();
        p.set_dying(2).unwrap();
        p.remove_cpu(rt, 3).unwrap();
        // Still there: a pool is destroyed empty.
        assert_eq!(p.destroy(rt), Err(PoolError::HasDomains { pool: rt, domains: 2 }));
        p.remove_domain(1).unwrap();
        p.remove_domain(2).unwrap();
        p.destroy(rt).unwrap();
        assert!(p.pool(rt).is_none());
        // Its slot and name are free again.
        assert_eq!(p.create("rt", "bvt"), Ok(rt));
    }

    #[test]
    fn a_pool_with_cpus_is_not_destroyed() {
        let (mut p, _) = machine();
        let q = pool_on_cpu1(&mut p, "bvt");
        assert_eq!(p.destroy(q), Err(PoolError::HasCpus { pool: q, cpus: 1 }));
    }

    #[test]
    fn moves_check_the_target_and_carry_parameters_by_name() {
        let (mut p, rt) = machine();
        let empty = p.create("empty", "credit").unwrap();
        assert_eq!(p.move_domain(1, empty), Err(PoolError::NoCpus(empty)));
        assert_eq!(p.move_domain(1, PoolId(9)), Err(PoolError::NoSuchPool(PoolId(9))));
        assert_eq!(p.move_domain(7, rt), Err(PoolError::NoSuchDomain(7)));
        assert_eq!(p.move_domain(1, rt), Ok(None), "already there");
        // rr takes no weight; credit gets the 512 domain 1 came with.
        let m = p.move_domain(1, PoolId(0)).unwrap().unwrap();
        assert_eq!(m, Move { domain: 1, from: rt, to: PoolId(0), params: vec![s("weight", 512)] });
        assert_eq!(p.pool_of(1), Some(PoolId(0)));
    }

    #[test]
    fn a_dying_domain_does_not_move() {
        let (mut p, _) = machine();
        p.set_dying(2).unwrap();
        assert_eq!(p.move_domain(2, PoolId(0)), Err(PoolError::Dying(2)));
        assert_eq!(p.pool_of(2), Some(PoolId(1)));
    }

    #[test]
    fn parameters_are_set_whole_or_not_at_all() {
        let (mut p, _) = machine();
        p.add_domain(3, PoolId(0), &[]).unwrap();
        // The second is out of range: the first is not applied either.
        let e = p.set_params(3, &[("weight", 300), ("cap", 1_000_000)]).unwrap_err();
        assert!(e.to_string().contains("cap"), "{e}");
        assert_eq!(p.set_params(3, &[("cap", 10)]).unwrap(), [s("cap", 10)]);
        assert_eq!(
            p.set_params(3, &[("weight", 300)]).unwrap(),
            [s("cap", 10), s("weight", 300)],
            "parameters set earlier stay"
        );
        assert!(matches!(p.set_params(3, &[("warp_us", 1)]), Err(PoolError::Param(_))));
        assert!(matches!(p.set_knobs(PoolId(0), &[("slice_ms", 5)]), Err(PoolError::Param(_))));
        p.set_knobs(PoolId(0), &[("tslice_ms", 5)]).unwrap();
    }

    #[test]
    fn a_swap_under_load_is_checked_for_every_domain_first() {
        let (mut p, rt) = machine();
        let q = pool_on_cpu1(&mut p, "rtds");
        p.add_domain(5, q, &[s("period_us", 1000), s("budget_us", 800)]).unwrap();
        p.add_domain(6, q, &[s("period_us", 10_000)]).unwrap();
        p.set_knobs(rt, &[("slice_ms", 5)]).unwrap();
        assert_eq!(
            p.set_policy(q, "cfs"),
            Err(PoolError::UnknownPolicy("cfs".into())),
            "an unknown policy"
        );
        // rr to credit with two domains: weights carried, rr's slice_ms dropped.
        let swap = p.set_policy(rt, "credit").unwrap();
        assert_eq!(swap.domains, [1, 2]);
        assert_eq!(swap.params, [vec![s("weight", 512)], vec![]]);
        assert!(swap.knobs.is_empty());
        assert_eq!(p.pool(rt).unwrap().policy.name, "credit");
        // Domain 6 gave only its period: rtds's default budget (4 ms) fits in it.
        let swap = p.set_policy(q, "credit2").unwrap();
        assert_eq!(swap.domains, [5, 6]);
        assert_eq!(swap.params, [vec![], vec![]], "credit2 takes neither period nor budget");
        // And back: rtds gets their periods and budgets back, by name.
        let swap = p.set_policy(q, "rtds").unwrap();
        assert_eq!(swap.params[0], [s("period_us", 1000), s("budget_us", 800)]);
    }

    #[test]
    fn a_swap_that_a_domain_would_refuse_changes_nothing() {
        let mut p = Pools::new(2, "pool0", "credit", 0).unwrap();
        // Legal under credit (rtds's names are kept, unused): budget above period.
        p.add_domain(1, PoolId(0), &[s("period_us", 1000), s("budget_us", 5000)]).unwrap();
        let e = p.set_policy(PoolId(0), "rtds").unwrap_err();
        assert!(e.to_string().contains("budget_us"), "{e}");
        assert_eq!(p.pool(PoolId(0)).unwrap().policy.name, "credit");
        // The same domain cannot move into an rtds pool either.
        let q = pool_on_cpu1(&mut p, "rtds");
        assert!(matches!(p.move_domain(1, q), Err(PoolError::Param(_))));
        assert_eq!(p.pool_of(1), Some(PoolId(0)));
    }

    #[test]
    fn several_parameters_are_set_as_one_change_or_not_at_all() {
        use crate::{DomainId, Policy};
        let rtds = registry::build("rtds", &Topology::flat(1, 1, 1), &[]).unwrap();
        let d = DomainId(0);
        rtds.add_domain(d, &[("period_us", 10_000), ("budget_us", 4000)]).unwrap();
        let now = |p: &dyn Policy| {
            (p.domain_param(d, "period_us").unwrap(), p.domain_param(d, "budget_us").unwrap())
        };
        // Period first would be below the old budget: set anyway, in the order that works.
        set_domain_params(rtds.as_ref(), d, &[("period_us", 1000), ("budget_us", 800)]).unwrap();
        assert_eq!(now(rtds.as_ref()), (1000, 800));
        set_domain_params(rtds.as_ref(), d, &[("budget_us", 5000), ("period_us", 6000)]).unwrap();
        assert_eq!(now(rtds.as_ref()), (6000, 5000));
        // A whole that is not valid: nothing changes, the policy says why.
        let e = set_domain_params(rtds.as_ref(), d, &[("period_us", 2000), ("extratime", 0)])
            .unwrap_err();
        assert!(e.to_string().contains("budget_us"), "{e}");
        assert_eq!(now(rtds.as_ref()), (6000, 5000));
        assert_eq!(rtds.domain_param(d, "extratime").unwrap(), 1, "extratime put back");
        // A name or range refused before anything is set.
        assert!(
            set_domain_params(rtds.as_ref(), d, &[("period_us", 7000), ("weight", 1)]).is_err()
        );
        assert!(
            set_domain_params(rtds.as_ref(), d, &[("period_us", 7000), ("budget_us", 1)]).is_err()
        );
        assert_eq!(now(rtds.as_ref()), (6000, 5000));
    }

    #[test]
    fn names_and_slots_are_checked() {
        let (mut p, _) = machine();
        assert_eq!(p.create("rt", "rr"), Err(PoolError::NameTaken("rt".into())));
        assert_eq!(p.create("", "rr"), Err(PoolError::BadName));
        assert!(p.create("x", "cfs").unwrap_err().to_string().contains("credit2"));
        for i in 2..MAX_POOLS {
            p.create(&alloc::format!("p{i}"), "rr").unwrap();
        }
        assert_eq!(p.create("one-more", "rr"), Err(PoolError::Full));
        assert_eq!(p.add_domain(1, PoolId(0), &[]), Err(PoolError::DomainExists(1)));
    }
}
