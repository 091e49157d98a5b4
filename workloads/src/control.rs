//! Domain0's control calls, typed: each encodes a `domctl`/`sysctl` request with postcard,
//! makes the hypercall, and decodes the reply it expects (a reply of another kind is
//! reported as `Errno::Inval`).

use alloc::string::{String, ToString};

use abi::control::{
    self, DomainId, DomainInfo, Domctl, DomctlReply, ResourceCounts, Sysctl, SysctlReply,
};
use abi::error::Errno;

use crate::hypercall;
use crate::report::{CpuStats, Figures, FrameCounts};

/// Largest encoded request or reply: the hypervisor's bound (`MESSAGE_BYTES`,
/// kernel/src/pv/control.rs). A results record is the biggest request: a long run's `run`
/// record, with its eight per-CPU histograms filled, passed 4 KiB (`churn`, 9 s). The
/// biggest reply, `CpuStats`, is eight histograms of 64 counts (a varint each), about 2 KiB.
/// On the heap: two of them would be half of a vCPU's 64 KiB stack.
const MESSAGE_BYTES: usize = 16 << 10;

fn call<R>(
    hypercall: fn(&[u8], &mut [u8]) -> Result<usize, Errno>,
    request: &impl serde::Serialize,
    decode: impl FnOnce(&[u8]) -> Result<R, Errno>,
) -> Result<R, Errno> {
    let mut req = alloc::vec![0u8; MESSAGE_BYTES];
    let len = control::encode(request, &mut req)?;
    let mut reply = alloc::vec![0u8; MESSAGE_BYTES];
    let got = hypercall(&req[..len], &mut reply)?;
    decode(&reply[..got])
}

fn domctl(request: &Domctl<'_>) -> Result<DomctlReply, Errno> {
    call(hypercall::domctl, request, |bytes| {
        control::decode::<DomctlReply>(bytes)
    })
}

fn done(reply: DomctlReply) -> Result<(), Errno> {
    match reply {
        DomctlReply::Done => Ok(()),
        _ => Err(Errno::Inval),
    }
}

/// Builds a paused domain; returns its id.
pub fn create(request: &Domctl<'_>) -> Result<DomainId, Errno> {
    match domctl(request)? {
        DomctlReply::Created { domain } => Ok(domain),
        _ => Err(Errno::Inval),
    }
}

/// Lets a domain's vCPUs run.
pub fn unpause(domain: DomainId) -> Result<(), Errno> {
    done(domctl(&Domctl::Unpause { domain })?)
}

/// Stops a domain's vCPUs until `unpause`.
pub fn pause(domain: DomainId) -> Result<(), Errno> {
    done(domctl(&Domctl::Pause { domain })?)
}

/// A domain's scheduling parameters.
pub fn get_sched(domain: DomainId) -> Result<abi::control::SchedParams, Errno> {
    match domctl(&Domctl::GetSched { domain })? {
        DomctlReply::Sched(params) => Ok(params),
        _ => Err(Errno::Inval),
    }
}

/// Sets a domain's scheduling parameters.
pub fn set_sched(domain: DomainId, sched: abi::control::SchedParams) -> Result<(), Errno> {
    done(domctl(&Domctl::SetSched { domain, sched })?)
}

/// Unpauses every paused domain but Domain0 at one instant; returns how many, and the
/// instant (system ns).
pub fn unpause_all() -> Result<(u32, u64), Errno> {
    match domctl(&Domctl::UnpauseAll)? {
        DomctlReply::Started { count, at_ns } => Ok((count, at_ns)),
        _ => Err(Errno::Inval),
    }
}

/// Pauses every running domain but Domain0 at one instant; returns how many.
pub fn pause_all() -> Result<u32, Errno> {
    match domctl(&Domctl::PauseAll)? {
        DomctlReply::Started { count, .. } => Ok(count),
        _ => Err(Errno::Inval),
    }
}

/// Records every domain's and CPU's figures at one instant into `slot` (below
/// `abi::control::SNAPSHOT_SLOTS`); returns the instant (system ns).
pub fn take_snapshot(slot: u8) -> Result<u64, Errno> {
    sysctl(&Sysctl::TakeSnapshot { slot }, |r| match r {
        SysctlReply::Snapshot { at_ns } => Some(at_ns),
        _ => None,
    })
}

/// As [`take_snapshot`], for the start of a measured interval (`Sysctl::TakeSnapshotStart`:
/// the instant is read once the figures are, so that reading them falls before it).
pub fn take_snapshot_start(slot: u8) -> Result<u64, Errno> {
    sysctl(&Sysctl::TakeSnapshotStart { slot }, |r| match r {
        SysctlReply::Snapshot { at_ns } => Some(at_ns),
        _ => None,
    })
}

/// As [`take_snapshot`], with the other CPUs running on (`Sysctl::TakeSnapshotLive`): for
/// window boundaries.
pub fn take_snapshot_live(slot: u8) -> Result<u64, Errno> {
    sysctl(&Sysctl::TakeSnapshotLive { slot }, |r| match r {
        SysctlReply::Snapshot { at_ns } => Some(at_ns),
        _ => None,
    })
}

/// A domain's figures at the last snapshot into `slot`.
pub fn snapshot(domain: DomainId, slot: u8) -> Result<DomainInfo, Errno> {
    match domctl(&Domctl::GetSnapshot { domain, slot })? {
        DomctlReply::Info(info) => Ok(info),
        _ => Err(Errno::Inval),
    }
}

/// A CPU's figures at the last snapshot into `slot`.
pub fn cpu_snapshot(cpu: u32, slot: u8) -> Result<CpuStats, Errno> {
    sysctl(&Sysctl::CpuSnapshot { cpu, slot }, |r| match r {
        SysctlReply::CpuStats(stats) => Some(stats),
        _ => None,
    })
}

/// Kills a domain if alive and frees everything it holds.
pub fn destroy(domain: DomainId) -> Result<(), Errno> {
    done(domctl(&Domctl::Destroy { domain })?)
}

/// A domain's figures since creation.
pub fn info(domain: DomainId) -> Result<DomainInfo, Errno> {
    match domctl(&Domctl::GetInfo { domain })? {
        DomctlReply::Info(info) => Ok(info),
        _ => Err(Errno::Inval),
    }
}

/// Waits until `domain` has ended, or until system time `deadline_ns`: its final figures,
/// or `None` if it is still alive at the deadline. Blocks in the hypervisor meanwhile.
pub fn wait(domain: DomainId, deadline_ns: u64) -> Result<Option<DomainInfo>, Errno> {
    loop {
        hypercall::set_timer(deadline_ns)?;
        match domctl(&Domctl::Wait { domain }) {
            Ok(DomctlReply::Info(info)) => return Ok(Some(info)),
            Ok(_) => return Err(Errno::Inval),
            Err(Errno::Busy) if crate::time::now_ns() < deadline_ns => continue,
            Err(Errno::Busy) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

fn sysctl<R>(
    request: &Sysctl<'_>,
    pick: impl FnOnce(SysctlReply<'_>) -> Option<R>,
) -> Result<R, Errno> {
    call(hypercall::sysctl, request, |bytes| {
        pick(control::decode::<SysctlReply<'_>>(bytes)?).ok_or(Errno::Inval)
    })
}

/// Sets one global knob of the policy in force (`tslice_ms`, ...).
pub fn set_sched_param(name: &str, value: u64) -> Result<(), Errno> {
    sysctl(&Sysctl::SetSchedParam { name, value }, |r| match r {
        SysctlReply::Done => Some(()),
        _ => None,
    })
}

/// Sets one global knob of pool `pool`'s policy.
pub fn set_pool_param(pool: u32, name: &str, value: u64) -> Result<(), Errno> {
    sysctl(&Sysctl::SetPoolParam { pool, name, value }, |r| match r {
        SysctlReply::Done => Some(()),
        _ => None,
    })
}

/// Replaces pool `pool`'s policy; returns when the change took effect, in system ns
/// (`SysctlReply::PolicySet`: Domain0 in that pool runs again only later).
pub fn set_pool_policy(pool: u32, policy: &str) -> Result<u64, Errno> {
    sysctl(&Sysctl::SetPoolPolicy { pool, policy }, |r| match r {
        SysctlReply::PolicySet { at_ns } => Some(at_ns),
        _ => None,
    })
}

/// Pool `pool`'s name, policy and CPUs, as the hypervisor has them.
pub fn pool_info(pool: u32) -> Result<(String, String, alloc::vec::Vec<u32>), Errno> {
    sysctl(&Sysctl::PoolInfo { pool }, |r| match r {
        SysctlReply::Pool { name, policy, cpus } => {
            let list = (0..64 * cpus.len() as u32)
                .filter(|&c| cpus[c as usize / 64] & (1 << (c % 64)) != 0)
                .collect();
            Some((name.to_string(), policy.to_string(), list))
        }
        _ => None,
    })
}

/// Creates an empty pool under `policy`; returns its number.
pub fn pool_create(name: &str, policy: &str) -> Result<u32, Errno> {
    sysctl(&Sysctl::PoolCreate { name, policy }, |r| match r {
        SysctlReply::PoolCreated { pool } => Some(pool),
        _ => None,
    })
}

/// Destroys a pool with no CPU and no domain.
pub fn pool_destroy(pool: u32) -> Result<(), Errno> {
    sysctl(&Sysctl::PoolDestroy { pool }, |r| match r {
        SysctlReply::Done => Some(()),
        _ => None,
    })
}

/// Adds a free CPU to a pool.
pub fn pool_add_cpu(pool: u32, cpu: u32) -> Result<(), Errno> {
    sysctl(&Sysctl::PoolAddCpu { pool, cpu }, |r| match r {
        SysctlReply::Done => Some(()),
        _ => None,
    })
}

/// Takes a CPU out of a pool (it idles).
pub fn pool_remove_cpu(pool: u32, cpu: u32) -> Result<(), Errno> {
    sysctl(&Sysctl::PoolRemoveCpu { pool, cpu }, |r| match r {
        SysctlReply::Done => Some(()),
        _ => None,
    })
}

/// Moves a domain to pool `pool`.
pub fn move_to_pool(domain: DomainId, pool: u32) -> Result<(), Errno> {
    done(domctl(&Domctl::MoveToPool { domain, pool })?)
}

/// The scheduling policy in force, and the number of CPUs.
pub fn policy() -> Result<(String, u32), Errno> {
    sysctl(&Sysctl::GetPolicy, |r| match r {
        SysctlReply::Policy { name, cpus } => Some((name.to_string(), cpus)),
        _ => None,
    })
}

/// The frame allocator's counts.
pub fn frame_counts() -> Result<FrameCounts, Errno> {
    sysctl(&Sysctl::FrameCounts, |r| match r {
        SysctlReply::Frames { free, managed } => Some(FrameCounts { free, managed }),
        _ => None,
    })
}

/// Bytes of the hypervisor's heap in use, less what the pools' changes since boot hold (the
/// policy instances installed since, less those freed).
pub fn heap_used() -> Result<u64, Errno> {
    sysctl(&Sysctl::HeapUsed, |r| match r {
        // What pool changes hold (a new policy instance) is not a leak.
        SysctlReply::HeapUsed { bytes, policies } => {
            Some((bytes as i64).saturating_sub(policies).max(0) as u64)
        }
        _ => None,
    })
}

/// Heap bytes the CPU pools' changes since boot hold (`SysctlReply::HeapUsed::policies`):
/// the policy instances installed since boot less those freed, and the pools' own state.
pub fn pools_held() -> Result<i64, Errno> {
    sysctl(&Sysctl::HeapUsed, |r| match r {
        SysctlReply::HeapUsed { policies, .. } => Some(policies),
        _ => None,
    })
}

/// What the live domains hold, summed over all of them.
pub fn resources() -> Result<ResourceCounts, Errno> {
    sysctl(&Sysctl::Resources, |r| match r {
        SysctlReply::Resources(counts) => Some(counts),
        _ => None,
    })
}

/// The counts that must come back once every guest is gone: heap, frames, resources.
pub fn figures() -> Result<Figures, Errno> {
    Ok(Figures {
        heap_bytes: heap_used()?,
        frames: frame_counts()?,
        resources: resources()?,
    })
}

/// Serves the null hypercall by a bare `sysretq` on every CPU (`on`), or not (benchmarks).
pub fn bench_floor(on: bool) -> Result<(), Errno> {
    sysctl(&Sysctl::BenchFloor { on }, |r| {
        matches!(r, SysctlReply::Done).then_some(())
    })
}

/// TSC ticks the hypervisor took for `iters` rounds of the domain-switch floor.
pub fn switch_floor_ticks(iters: u32) -> Result<u64, Errno> {
    sysctl(&Sysctl::BenchSwitchFloor { iters }, |r| match r {
        SysctlReply::Elapsed { tsc_ticks } => Some(tsc_ticks),
        _ => None,
    })
}

/// Writes one results record (a JSON object) for the runner.
pub fn emit_record(json: &str) -> Result<(), Errno> {
    sysctl(&Sysctl::EmitRecord { json }, |r| {
        matches!(r, SysctlReply::Done).then_some(())
    })
}

/// Stops the machine with exit status `code`; returns only if the hypervisor refused.
pub fn shutdown_machine(code: u8) -> Errno {
    match sysctl(&Sysctl::Shutdown { code }, |_| Some(())) {
        Ok(()) => Errno::Inval,
        Err(e) => e,
    }
}
