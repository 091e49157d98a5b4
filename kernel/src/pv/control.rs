//! Domain0's control operations (`domctl`, `sysctl`) and the end of domains.
//!
//! Requests arrive postcard-encoded (`abi::control`), are copied out of the caller once and
//! decoded there; replies are encoded into a hypervisor buffer and copied back.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use abi::control::{
    self, DomainExit, DomainId, DomainState, Domctl, DomctlReply, KillReason, MAX_SCHED_PARAMS,
    SchedParams, Sysctl, SysctlReply,
};
use abi::error::Errno;
use abi::tool::console::ExitCode;
use arrayvec::ArrayVec;
use kerncore::cmdline::SelfTest;
use sched::{DomainId as PolicyDomain, VcpuId};

use crate::arch::guest::{copy_from_guest, copy_to_guest};
use crate::arch::rcu::ReadSide;
use crate::domain::boot_module;
use crate::domain::{self, Domain, DomainConfig, Stop, Vcpu};
use crate::mm::frames;
use crate::schedule::cpupool;
use crate::{arch, console, schedule, time};
use sched::pools::{PoolError, PoolId};

/// Every online CPU's figures at the last `TakeSnapshot` into each slot.
static CPU_SNAPSHOT: spin::Mutex<[Vec<(usize, schedule::CpuFigures)>; SLOTS]> =
    spin::Mutex::new([const { Vec::new() }; SLOTS]);

/// Snapshot slots.
const SLOTS: usize = abi::control::SNAPSHOT_SLOTS as usize;

/// A snapshot slot from a request.
fn slot(raw: u8) -> Result<usize, Errno> {
    let slot = usize::from(raw);
    if slot < SLOTS {
        Ok(slot)
    } else {
        Err(Errno::Inval)
    }
}

/// `selftest=slow-snapshot`: a held snapshot's reading lasts this much longer.
const SLOW_SNAPSHOT_US: u64 = 50_000;

/// Whether a snapshot is being taken (there is one Domain0 vCPU to ask, but be sure).
static SNAPSHOTTING: AtomicBool = AtomicBool::new(false);

/// Runs `f` while every other online CPU is held still (`smp::ipi::hold_others`, a cut-down
/// `stop_machine`), so that what `f` reads of all domains, their guest-written `work`
/// counters included, is one instant's. Under TCG an emulated CPU can stall for
/// milliseconds while another runs on, so reading domains one after the other would not be.
fn with_other_cpus_held<R>(f: impl FnOnce() -> Result<R, Errno>) -> Result<R, Errno> {
    if SNAPSHOTTING.swap(true, Ordering::AcqRel) {
        return Err(Errno::Busy);
    }
    let result = smp::ipi::hold_others(f);
    SNAPSHOTTING.store(false, Ordering::Release);
    result
}

/// Which instant a snapshot is of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Instant {
    /// This one, read before anything of the snapshot's: the holding and the reading fall
    /// after it (the end of an interval, read before the other CPUs are asked to stop;
    /// window boundaries).
    At(u64),
    /// Read last, the other CPUs still held, the figures carried forward to it
    /// (`Sysctl::TakeSnapshotStart`): the holding and the reading fall before it (the
    /// start of an interval).
    Last,
}

/// Records every domain's and CPU's figures at one instant into snapshot `slot`
/// (`Sysctl::TakeSnapshot` and `TakeSnapshotStart`, with the other CPUs held, or
/// `TakeSnapshotLive`, without).
fn take_snapshot(slot: usize, instant: Instant, held: bool) -> SysctlReply<'static> {
    let first = match instant {
        Instant::At(at) => at,
        Instant::Last => time::now_ns(),
    };
    let domains = domain::all();
    let mut growth = Vec::with_capacity(if instant == Instant::Last {
        domains.len()
    } else {
        0
    });
    for d in &domains {
        arch::percpu::touch_watchdog(); // 1024 domains take a while under TCG
        let (info, g) = d.info_and_growth(first);
        d.snapshot.lock()[slot] = Some(info);
        if instant == Instant::Last {
            growth.push(g);
            // The interval's latency starts here, as schedsim's and Linux's do (kept since
            // creation, it held the warm-up's wake-ups: 5% of a 6 s run's samples, the
            // unpause's burst among them).
            d.restart_latency();
        }
    }
    if held {
        time::stall(SelfTest::SlowSnapshot, SLOW_SNAPSHOT_US);
    }
    let now = match instant {
        Instant::At(at) => at,
        Instant::Last => {
            // Held: nothing changed meanwhile (the other CPUs spin in their interrupt
            // handler, and this one runs the hypercall with interrupts off), so each
            // figure grew as what its vCPUs were doing at `first` says, Domain0's own
            // running vCPU included.
            let now = time::now_ns();
            for (d, g) in domains.iter().zip(&growth) {
                if let Some(info) = &mut d.snapshot.lock()[slot] {
                    (info.cpu_ns, info.wait_ns) = g.carry((info.cpu_ns, info.wait_ns), now - first);
                }
            }
            now
        }
    };
    let mut snaps = CPU_SNAPSHOT.lock();
    let snap = &mut snaps[slot];
    snap.clear();
    snap.extend(
        smp::startup::online()
            .iter()
            .map(|cpu| (cpu, schedule::cpu_figures(cpu, now))),
    );
    SysctlReply::Snapshot { at_ns: now }
}

/// Largest request or reply (Domain0's side, workloads/src/control.rs, has the same): a long
/// run's `run` record passed 4 KiB.
const MESSAGE_BYTES: usize = 16 << 10;

/// Handles one `domctl` (`is_domctl`) or `sysctl` call from Domain0.
#[inline(never)] // kept out of the hypercall fast path
pub fn call(
    is_domctl: bool,
    req_ptr: u64,
    req_len: u64,
    reply_ptr: u64,
    reply_cap: u64,
) -> Result<u64, Errno> {
    if req_len as usize > MESSAGE_BYTES {
        return Err(Errno::TooBig);
    }
    // On the heap: a CPU's kernel stack is 64 KiB, and only Domain0 makes these calls.
    let mut request = alloc::vec![0u8; req_len as usize];
    copy_from_guest(&mut request, req_ptr)?;
    let mut reply = alloc::vec![0u8; MESSAGE_BYTES];
    let used = if is_domctl {
        let reply_msg = domctl(control::decode(&request)?)?;
        control::encode(&reply_msg, &mut reply)?
    } else {
        let mut name_buf = [0u8; 32];
        let reply_msg = sysctl(control::decode(&request)?, &mut name_buf)?;
        control::encode(&reply_msg, &mut reply)?
    };
    if used as u64 > reply_cap {
        return Err(Errno::TooBig);
    }
    copy_to_guest(reply_ptr, &reply[..used])?;
    Ok(used as u64)
}

/// `sched` as `policy` takes it, each pair checked against the parameters it declares: a
/// name it does not declare, or a value out of range, is refused (with a warning that names
/// it and what is allowed) before anything changes.
fn policy_params<'a>(
    policy: &dyn sched::Policy,
    sched: &'a SchedParams,
) -> Result<ArrayVec<(&'a str, u64), MAX_SCHED_PARAMS>, Errno> {
    let info = policy.info();
    sched
        .iter()
        .map(|(name, value)| {
            sched::find_param(info.name, info.domain_params, name)
                .and_then(|p| p.check(value))
                .map(|()| (name, value))
                .map_err(|e| {
                    log::warn!("scheduling parameters refused: {e}");
                    Errno::Inval
                })
        })
        .collect()
}

/// A domain's parameters, at creation or `SetSched`: those `policy` (its pool's) declares,
/// checked by it, for the policy; the rest are kept for a later pool or policy (a domain
/// carries its parameters by name), each checked against a policy that declares it. A name no registered policy
/// declares, or a value out of every declaring policy's range, is refused (logged).
fn carried_params<'a>(
    policy: &dyn sched::Policy,
    sched: &'a SchedParams,
) -> Result<ArrayVec<(&'a str, u64), MAX_SCHED_PARAMS>, Errno> {
    let info = policy.info();
    let mut taken = SchedParams::new();
    for (name, value) in sched.iter() {
        if info.domain_param(name).is_some() {
            taken.push(name, value).map_err(|_| Errno::Inval)?;
            continue;
        }
        let known = sched::registry::policies()
            .filter_map(|p| p.domain_param(name))
            .any(|spec| spec.check(value).is_ok());
        if !known {
            log::warn!(
                "scheduling parameter {name} = {value} refused: no policy takes it with that \
                 value"
            );
            return Err(Errno::Inval);
        }
    }
    policy_params(policy, &taken).map(|pairs| {
        // Borrowed from `sched`, not from `taken`: the same names, in the same order.
        pairs
            .iter()
            .filter_map(|(n, v)| sched.iter().find(|(m, _)| m == n).map(|(m, _)| (m, *v)))
            .collect()
    })
}

/// Sets one global knob of pool `pool`'s policy, and keeps it in the pools' state (carried
/// to a later policy of the pool that takes it).
fn set_pool_param(pool: u32, name: &str, value: u64) -> Result<(), Errno> {
    let mut pools = cpupool::pools();
    let section = arch::rcu::read_side();
    let inst = pool_instance(pool, &section)?;
    let set = inst.policy.set_global_param(name, value);
    schedule::send_policy_kicks(inst);
    set.map_err(|e| {
        log::warn!("sysctl SetPoolParam: {e}");
        Errno::Inval
    })?;
    let heap = frames::heap_used();
    let stored = pools.set_knobs(PoolId(pool), &[(name, value)]);
    cpupool::kept(heap, frames::heap_used());
    stored.map_err(|e| pool_refused("SetPoolParam", &e))
}

/// A pool operation refused by the pools' rules (`sched::pools`), logged with why.
fn pool_refused(what: &str, e: &PoolError) -> Errno {
    log::warn!("{what} refused: {e}");
    match e {
        PoolError::NoSuchPool(_) | PoolError::NoSuchDomain(_) => Errno::Srch,
        PoolError::HasDomains { .. }
        | PoolError::HasCpus { .. }
        | PoolError::Domain0
        | PoolError::Dying(_) => Errno::Busy,
        PoolError::Full => Errno::NoMem,
        _ => Errno::Inval,
    }
}

/// The instance pool `pool` runs, or `Srch`.
fn pool_instance(pool: u32, section: &ReadSide) -> Result<&cpupool::Instance, Errno> {
    cpupool::of_pool(PoolId(pool), section).ok_or(Errno::Srch)
}

/// `selftest=slow-wait`: Domain0's `Domctl::Wait` holds its CPU this long (interrupts off)
/// between registering as a waiter and blocking, while the domain ends on another CPU.
const SLOW_WAIT_US: u64 = 3000;

fn domctl(request: Domctl) -> Result<DomctlReply, Errno> {
    // Domains destroyed earlier whose grace period has ended go now (`destroy`).
    arch::rcu::reclaim();
    let now = time::now_ns();
    match request {
        Domctl::Create {
            image,
            name,
            vcpus,
            memory_kib,
            sched,
            args,
            pool,
        } => {
            let section = arch::rcu::read_side();
            let inst = pool_instance(pool, &section)?;
            let params = carried_params(&*inst.policy, &sched)?;
            let image_bytes = boot_module::file(image).ok_or(Errno::Inval)?;
            let args: ArrayVec<(&str, u64), { abi::shared::MAX_ARGS }> = args
                .iter()
                .filter(|a| !a.name.is_empty())
                .map(|a| (a.name, a.value))
                .collect();
            let config = DomainConfig {
                name,
                image: image_bytes,
                vcpus,
                memory_kib,
                sched,
                args: &args,
                privileged: false,
                plan: None,
            };
            let t0 = time::now_ns();
            let domain = domain::create(&config).map_err(|e| {
                log::warn!("cannot create domain {name} from image {image}: {e}");
                match e {
                    domain::CreateError::OutOfMemory | domain::CreateError::TooManyDomains => {
                        Errno::NoMem
                    }
                    _ => Errno::Inval,
                }
            })?;
            let t1 = time::now_ns();
            let owned: Vec<(alloc::string::String, u64)> =
                sched.iter().map(|(k, v)| (k.into(), v)).collect();
            if let Err(e) = cpupool::pools().add_domain(domain.id, PoolId(pool), &owned) {
                let errno = pool_refused("create", &e);
                destroy(&domain)?;
                return Err(errno);
            }
            if let Err(e) = register(&domain, inst, &params) {
                log::warn!("policy refused domain {name}: {e}");
                // It never ran, so nothing holds it: this cannot be refused.
                destroy(&domain)?;
                return Err(Errno::Inval);
            }
            log::debug!(
                "create {}: build {} us, register {} us",
                domain.id,
                (t1 - t0) / 1000,
                (time::now_ns() - t1) / 1000
            );
            Ok(DomctlReply::Created { domain: domain.id })
        }
        Domctl::SetSched { domain, sched } => {
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            // All or nothing: checked whole, set in an order the policy accepts, or put
            // back (`sched::pools::set_domain_params`).
            let mut pools = cpupool::pools();
            let section = arch::rcu::read_side();
            let inst = d
                .vcpus
                .first()
                .and_then(|v| cpupool::of_vcpu(v, &section))
                .ok_or(Errno::Srch)?;
            // The parameters its pool's policy takes are set; the others are kept for a
            // later pool or policy, as at creation.
            let params = carried_params(&*inst.policy, &sched)?;
            let set = sched::pools::set_domain_params(&*inst.policy, PolicyDomain(d.id), &params);
            schedule::send_policy_kicks(inst);
            set.map_err(|e| {
                log::warn!("SetSched of domain {}: {e}", d.id);
                Errno::Inval
            })?;
            // Kept by name, to carry into another pool or policy.
            let _ = pools.set_params(d.id, &params);
            *d.sched.lock() = sched;
            Ok(DomctlReply::Done)
        }
        Domctl::GetSched { domain } => {
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            let params = *d.sched.lock();
            Ok(DomctlReply::Sched(params))
        }
        Domctl::Pause { domain } => {
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            pause(&d, now);
            wait_off_cpu(&d);
            Ok(DomctlReply::Done)
        }
        Domctl::Unpause { domain } => {
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            unpause(&d, now);
            Ok(DomctlReply::Done)
        }
        Domctl::Destroy { domain } => {
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            if d.privileged {
                return Err(Errno::Busy);
            }
            end_domain(&d, DomainExit::Destroyed);
            destroy(&d)?;
            Ok(DomctlReply::Done)
        }
        Domctl::GetInfo { domain } => {
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            Ok(DomctlReply::Info(d.info(now)))
        }
        Domctl::UnpauseAll => {
            // Each wake-up at its own time: 1024 of them take milliseconds under emulation,
            // and a policy that places a waker by what the running vCPU has run so far (bvt)
            // would see none of that run with the call's entry time.
            let guests = domain::all().into_iter().filter(|d| !d.privileged);
            Ok(DomctlReply::Started {
                count: guests.filter(|d| unpause(d, time::now_ns())).count() as u32,
                at_ns: now,
            })
        }
        Domctl::GetSnapshot { domain, slot: raw } => {
            let slot = slot(raw)?;
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            let info = d.snapshot.lock()[slot];
            info.map(DomctlReply::Info).ok_or(Errno::Srch)
        }
        Domctl::MoveToPool { domain, pool } => {
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            move_to_pool(&d, pool, now)?;
            Ok(DomctlReply::Done)
        }
        Domctl::PauseAll => {
            let guests: Vec<_> = domain::all()
                .into_iter()
                .filter(|d| !d.privileged)
                .collect();
            let count = guests.iter().filter(|d| pause(d, now)).count() as u32;
            // All stopped first, then waited for, so that the waits overlap.
            guests.iter().for_each(|d| wait_off_cpu(d));
            Ok(DomctlReply::Started { count, at_ns: now })
        }
        Domctl::Wait { domain } => {
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            let caller = schedule::current().ok_or(Errno::Srch)?;
            {
                // Checked and registered under the same lock that `end_domain` takes, so
                // the end cannot slip between the check and the registration.
                let mut life = d.life.lock();
                if life.state == DomainState::Dead {
                    drop(life);
                    return Ok(DomctlReply::Info(d.info(now)));
                }
                if !life.waiters.contains(&caller.id) {
                    life.waiters.push(caller.id);
                }
            }
            time::stall(SelfTest::SlowWait, SLOW_WAIT_US);
            schedule::stop(&caller, Stop::Block, now);
            // Look again now that it is marked blocked, as `SchedOp::Block` does: an end
            // between the registration and the stop woke a vCPU that still ran (nothing to
            // do), and the timer that bounds the wait may have fired meanwhile (`FIRED`).
            // Without this, Domain0 slept through the end until its deadline and reported
            // a killed domain as alive (`churn/slow-wait`).
            if d.life.lock().state == DomainState::Dead
                || caller
                    .domain()
                    .is_some_and(|me| schedule::take_due_timer(&caller, &me, now))
            {
                schedule::wake(&caller, now);
            }
            Err(Errno::Busy)
        }
    }
}

fn sysctl<'a>(request: Sysctl, name_buf: &'a mut [u8; 32]) -> Result<SysctlReply<'a>, Errno> {
    // Domains destroyed earlier go now if their grace period has ended (`destroy`); the
    // figures Domain0 checks against its baseline count them gone, so they wait for it.
    if matches!(
        request,
        Sysctl::HeapUsed | Sysctl::FrameCounts | Sysctl::Resources
    ) {
        arch::rcu::drain();
    } else {
        arch::rcu::reclaim();
    }
    match request {
        Sysctl::PoolInfo { pool } => {
            let (name, policy, cpus) = cpupool::describe(PoolId(pool)).ok_or(Errno::Srch)?;
            let n = name.len().min(name_buf.len());
            name_buf[..n].copy_from_slice(&name.as_bytes()[..n]);
            let name = core::str::from_utf8(&name_buf[..n]).map_err(|_| Errno::Inval)?;
            let mut bits = [0u64; control::POOL_CPU_WORDS];
            for c in cpus
                .into_iter()
                .filter(|&c| c < 64 * control::POOL_CPU_WORDS)
            {
                bits[c / 64] |= 1 << (c % 64);
            }
            Ok(SysctlReply::Pool {
                name,
                policy,
                cpus: bits,
            })
        }
        Sysctl::SetPoolParam { pool, name, value } => {
            set_pool_param(pool, name, value)?;
            Ok(SysctlReply::Done)
        }
        Sysctl::PoolCreate { name, policy } => {
            let mut pools = cpupool::pools();
            let heap = frames::heap_used();
            let made = pools.create(name, policy);
            cpupool::kept(heap, frames::heap_used());
            let id = made.map_err(|e| pool_refused("PoolCreate", &e))?;
            Ok(SysctlReply::PoolCreated { pool: id.0 })
        }
        Sysctl::PoolDestroy { pool } => {
            let mut pools = cpupool::pools();
            let heap = frames::heap_used();
            let gone = pools.destroy(PoolId(pool));
            cpupool::kept(heap, frames::heap_used());
            gone.map_err(|e| pool_refused("PoolDestroy", &e))?;
            cpupool::forget_pool(PoolId(pool));
            Ok(SysctlReply::Done)
        }
        Sysctl::PoolAddCpu { pool, cpu } => {
            if !smp::startup::online().contains(cpu as usize) {
                log::warn!("PoolAddCpu refused: CPU {cpu} is not online");
                return Err(Errno::Inval);
            }
            change_pool(pool, "PoolAddCpu", |p| {
                p.add_cpu(PoolId(pool), cpu as usize)
            })?;
            Ok(SysctlReply::Done)
        }
        Sysctl::PoolRemoveCpu { pool, cpu } => {
            change_pool(pool, "PoolRemoveCpu", |p| {
                p.remove_cpu(PoolId(pool), cpu as usize)
            })?;
            Ok(SysctlReply::Done)
        }
        Sysctl::SetPoolPolicy { pool, policy } => {
            let at_ns = change_pool(pool, "SetPoolPolicy", |p| {
                p.set_policy(PoolId(pool), policy).map(|_| ())
            })?;
            Ok(SysctlReply::PolicySet { at_ns })
        }
        Sysctl::GetPolicy => Ok(SysctlReply::Policy {
            name: cpupool::first(&arch::rcu::read_side()).name(),
            cpus: smp::startup::online().len() as u32,
        }),
        Sysctl::GetSchedParam { name } => {
            let value = schedule::policy(&arch::rcu::read_side())
                .global_param(name)
                .map_err(|_| Errno::Inval)?;
            Ok(SysctlReply::SchedParam { value })
        }
        Sysctl::SetSchedParam { name, value } => {
            set_pool_param(0, name, value)?;
            Ok(SysctlReply::Done)
        }
        Sysctl::CpuStats { cpu } => {
            if !smp::startup::online().contains(cpu as usize) {
                return Err(Errno::Inval);
            }
            let f = schedule::cpu_figures(cpu as usize, time::now_ns());
            Ok(SysctlReply::CpuStats(cpu_stats(&f)))
        }
        Sysctl::TakeSnapshot { slot: raw } => {
            let slot = slot(raw)?;
            // The instant is read before the other CPUs are asked to stop: a CPU that
            // stops at once then spins until the last one does (10 to 40 ms on a busy TCG
            // host), and that time, charged to the vCPU it stopped, fell inside the
            // interval when the instant was read once all had stopped. A vCPU that changes
            // twice between the instant and its CPU's stop reads a little over
            // (`kerncore::account`); its `work` counter is read at the stop.
            let asked = time::now_ns();
            with_other_cpus_held(|| Ok(take_snapshot(slot, Instant::At(asked), true)))
        }
        Sysctl::TakeSnapshotStart { slot: raw } => {
            let slot = slot(raw)?;
            with_other_cpus_held(|| Ok(take_snapshot(slot, Instant::Last, true)))
        }
        Sysctl::TakeSnapshotLive { slot: raw } => Ok(take_snapshot(
            slot(raw)?,
            Instant::At(time::now_ns()),
            false,
        )),
        Sysctl::CpuSnapshot { cpu, slot: raw } => {
            let slot = slot(raw)?;
            let snaps = CPU_SNAPSHOT.lock();
            let (_, f) = snaps[slot]
                .iter()
                .find(|(c, _)| *c == cpu as usize)
                .ok_or(Errno::Inval)?;
            Ok(SysctlReply::CpuStats(cpu_stats(f)))
        }
        Sysctl::FrameCounts => {
            let (free, managed) = frames::frame_counts();
            Ok(SysctlReply::Frames {
                free: free as u64,
                managed: managed as u64,
            })
        }
        Sysctl::HeapUsed => Ok(SysctlReply::HeapUsed {
            bytes: frames::heap_used() as u64,
            policies: cpupool::runtime_bytes(),
        }),
        Sysctl::Resources => Ok(SysctlReply::Resources(domain::resource_counts())),
        Sysctl::EmitRecord { json } => {
            if json.contains('\n') || !json.starts_with('{') {
                return Err(Errno::Inval);
            }
            console::record(json);
            Ok(SysctlReply::Done)
        }
        Sysctl::BenchFloor { on } => {
            fn set(on: usize) {
                arch::entry::set_syscall_floor(on != 0);
            }
            set(usize::from(on));
            let me = smp::percpu::cpu_index();
            for cpu in smp::startup::online().iter().filter(|&c| c != me) {
                smp::ipi::call_on(cpu, set, usize::from(on), true);
            }
            Ok(SysctlReply::Done)
        }
        Sysctl::BenchSwitchFloor { iters } => Ok(SysctlReply::Elapsed {
            tsc_ticks: arch::bench::switch_floor(iters),
        }),
        Sysctl::Shutdown { code } => {
            let code = match code {
                0 => ExitCode::Success,
                2 => ExitCode::BadInput,
                _ => ExitCode::Failure,
            };
            crate::schedule::trace::dump();
            crate::schedule::record_policy_counters();
            log::info!("Domain0 shuts the machine down: {code:?}");
            arch::exit(code)
        }
    }
}

/// Registers a new (or moving) domain and its vCPUs with the policy instance `inst`; each
/// vCPU then belongs to it.
fn register(
    domain: &Domain,
    inst: &cpupool::Instance,
    params: &[(&str, u64)],
) -> Result<(), sched::Error> {
    let policy = &*inst.policy;
    policy.add_domain(PolicyDomain(domain.id), params)?;
    let cpus = inst.cpus.len().max(1);
    let index = cpupool::index_of_pool(inst.pool);
    for v in &domain.vcpus {
        // Spread a domain's vCPUs over the CPUs from the start; the policy moves them later.
        let cpu = (domain.id as usize + v.index as usize) % cpus;
        policy.insert_vcpu(VcpuId(v.id), PolicyDomain(domain.id), cpu)?;
        v.sched_instance.store(index, Ordering::Release);
    }
    // A cap among `params` asks for a tick (credit2's replenishment).
    schedule::send_policy_kicks(inst);
    Ok(())
}

/// Takes a domain's vCPUs out of the instance that holds them, once no CPU holds any (the
/// domain is paused or dead, so none is picked again), then the domain. `Busy` if a CPU
/// does not let go within [`DESTROY_WAIT_NS`] (what is removed stays removed).
fn unregister(domain: &Domain) -> Result<(), Errno> {
    let section = arch::rcu::read_side();
    let Some(inst) = domain
        .vcpus
        .first()
        .and_then(|v| cpupool::of_vcpu(v, &section))
    else {
        return Ok(()); // never registered
    };
    let policy = &*inst.policy;
    let started = time::now_ns();
    let mut removed = alloc::vec![false; domain.vcpus.len()];
    loop {
        for (v, done) in domain.vcpus.iter().zip(removed.iter_mut()) {
            if !*done {
                *done = match policy.remove_vcpu(VcpuId(v.id)) {
                    Ok(()) | Err(sched::Error::NoSuchVcpu(_)) => true,
                    Err(_) => false,
                };
            }
        }
        // Off every CPU, and in no CPU's CR3 either: a CPU releases the vCPU it leaves
        // just before it loads the next one's address space (`schedule::reschedule`).
        if removed.iter().all(|d| *d) && !domain.on_cpu() && !domain.loaded_anywhere() {
            break;
        }
        if time::now_ns().saturating_sub(started) > DESTROY_WAIT_NS {
            log::error!(
                "domain {}: a CPU still holds one of its vCPUs; it cannot leave its policy",
                domain.id
            );
            return Err(Errno::Busy);
        }
        // Another CPU may be waiting for this one to flush its TLB.
        schedule::wait_for_other_cpu();
        arch::percpu::touch_watchdog(); // bounded by DESTROY_WAIT_NS
    }
    match policy.remove_domain(PolicyDomain(domain.id)) {
        Ok(()) | Err(sched::Error::NoSuchDomain(_)) => {}
        Err(e) => {
            log::error!("policy kept domain {}: {e}", domain.id);
            return Err(Errno::Busy);
        }
    }
    for v in &domain.vcpus {
        v.sched_instance
            .store(cpupool::NO_INSTANCE, Ordering::Release);
    }
    Ok(())
}

/// `Domctl::MoveToPool` (Xen's `sched_move_domain`): checked by the pools' rules first, then
/// the domain is paused, leaves its pool's policy, joins `pool`'s with the parameters it
/// has that that policy takes, and is unpaused if it ran.
fn move_to_pool(d: &Domain, pool: u32, now: u64) -> Result<(), Errno> {
    if d.life.lock().state == DomainState::Dead {
        log::warn!("MoveToPool refused: domain {} has ended", d.id);
        return Err(Errno::Busy);
    }
    let mut pools = cpupool::pools();
    let Some(mv) = pools
        .move_domain(d.id, PoolId(pool))
        .map_err(|e| pool_refused("MoveToPool", &e))?
    else {
        return Ok(()); // there already
    };
    let section = arch::rcu::read_side();
    let to = pool_instance(pool, &section)?;
    let was_running = pause(d, now);
    let params: Vec<(&str, u64)> = mv.params.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let moved = unregister(d).and_then(|()| {
        register(d, to, &params).map_err(|e| {
            log::error!(
                "MoveToPool: pool {pool}'s policy refused domain {}: {e}",
                d.id
            );
            Errno::Inval
        })
    });
    if let Err(e) = moved {
        // Back where it was (the rules said it could move; a CPU that would not let go or
        // a policy that changed its mind since is the only way here).
        let _ = pools.move_domain(d.id, mv.from);
        if d.vcpus
            .iter()
            .all(|v| cpupool::of_vcpu(v, &section).is_none())
            && let Ok(from) = pool_instance(mv.from.0, &section)
        {
            let _ = register(d, from, &[]);
        }
        if was_running {
            unpause(d, time::now_ns());
        }
        return Err(e);
    }
    if was_running {
        // Now, not when the call began: the wait for the CPUs to let go is not the
        // domain's waiting time.
        unpause(d, time::now_ns());
    }
    Ok(())
}

/// A CPU's figures as the `CpuStats` and `CpuSnapshot` replies carry them.
fn cpu_stats(f: &schedule::CpuFigures) -> abi::control::CpuStats {
    use abi::control::kick_late_halves as halves;
    abi::control::CpuStats {
        idle_ns: f.idle_ns,
        busy_ns: f.busy_ns,
        switches: f.switches,
        slice_late: f.slice_late,
        kick_late: halves(&f.kick_late),
        kick_wake_late: halves(&f.kick_wake_late),
        kick_local_late: halves(&f.kick_local_late),
        switch_time: halves(&f.switch_time),
        set_timer_time: halves(&f.set_timer_time),
        switch_armed_time: halves(&f.switch_armed_time),
        set_timer_armed_time: halves(&f.set_timer_armed_time),
        timer_wake_late: halves(&f.timer_wake_late),
    }
}

/// A change to pool `pool`'s CPUs or policy (`op`, on the pools' state, says which and
/// checks it), carried out as Xen's `cpupool.c` does for a pool's scheduler: every domain
/// of the pool is paused and leaves the old instance, a new instance of the pool's policy
/// (now) is built over its CPUs (now) with its knobs, the CPUs point at it (a CPU that left
/// the pool idles), the domains join it with their parameters, and those that ran are
/// unpaused. Domain0's pool, the first, keeps its policy and CPUs from boot: Domain0 is the
/// one asking, and cannot leave the instance it runs in meanwhile. Returns when the change
/// took effect (system ns): the instant the domains were unpaused in the new instance.
fn change_pool(
    pool: u32,
    what: &str,
    op: impl FnOnce(&mut sched::pools::Pools) -> Result<(), PoolError>,
) -> Result<u64, Errno> {
    let now = time::now_ns();
    let mut pools = cpupool::pools();
    let before = pools.clone();
    let heap = frames::heap_used();
    op(&mut pools).map_err(|e| pool_refused(what, &e))?;
    cpupool::kept(heap, frames::heap_used());
    let p = pools.pool(PoolId(pool)).ok_or(Errno::Srch)?.clone();
    let section = arch::rcu::read_side();
    let old_cpus = cpupool::of_pool(PoolId(pool), &section)
        .map(|i| i.cpus.clone())
        .unwrap_or_default();
    let old_index = cpupool::index_of_pool(PoolId(pool));
    // Domain0 (the caller, running here) stays put while the others leave: it cannot be
    // paused, and the old instance has it running. It joins the new instance asleep and is
    // woken there once it leaves this CPU (`Vcpu::adopt`); the old instance is retired.
    let (dom0, domains): (Vec<_>, Vec<_>) = pools
        .domains_in(PoolId(pool))
        .into_iter()
        .filter_map(domain::domain)
        .partition(|d| d.privileged);
    let running: Vec<bool> = domains.iter().map(|d| pause(d, now)).collect();
    let mut left = Ok(());
    for d in &domains {
        left = left.and(unregister(d));
    }
    let knobs: Vec<(&str, u64)> = p.knobs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let built = match left {
        Err(e) => Err(e),
        Ok(()) if p.cpus.is_empty() => Ok(None),
        Ok(()) => {
            let heap = frames::heap_used();
            let installed = cpupool::install(PoolId(pool), p.policy.name, &p.cpus, &knobs);
            cpupool::kept(heap, frames::heap_used());
            installed.map(Some).map_err(|e| {
                log::warn!("{what} refused: {e}");
                Errno::Inval
            })
        }
    };
    let result = match built {
        Ok(index) => {
            // CPUs that left the pool idle; the pool's CPUs take the new instance.
            for &c in old_cpus.iter().filter(|c| !p.cpus.contains(c)) {
                cpupool::free_cpu(c);
            }
            match index {
                Some(i) => cpupool::attach_cpus(i),
                None => cpupool::forget_pool(PoolId(pool)),
            }
            Ok(())
        }
        Err(e) => {
            let heap = frames::heap_used();
            *pools = before;
            cpupool::kept(heap, frames::heap_used());
            Err(e)
        }
    };
    if result.is_ok()
        && let (Some(d), Some(inst)) = (dom0.first(), cpupool::of_pool(PoolId(pool), &section))
    {
        let sched = dom0_sched(inst.policy.info());
        let params = policy_params(&*inst.policy, &sched).unwrap_or_default();
        // Domain0 stays in the new instance for good (and in the retired one): what it
        // takes there is kept, not a leak.
        let heap = frames::heap_used();
        let joined = register(d, inst, &params);
        cpupool::kept(heap, frames::heap_used());
        match joined {
            Ok(()) => d
                .vcpus
                .iter()
                .for_each(|v| v.adopt.store(true, Ordering::Release)),
            Err(e) => log::error!("{what}: Domain0 could not join pool {pool}'s policy: {e}"),
        }
    }
    // Each domain back into the pool's instance (the new one, or the old one on failure).
    if let Some(inst) = cpupool::of_pool(PoolId(pool), &section) {
        for d in &domains {
            if d.vcpus
                .iter()
                .all(|v| cpupool::of_vcpu(v, &section).is_none())
            {
                let params: Vec<(alloc::string::String, u64)> =
                    pools.params_taken(d.id).unwrap_or_default();
                let pairs: Vec<(&str, u64)> =
                    params.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                if let Err(e) = register(d, inst, &pairs) {
                    log::error!("{what}: domain {} could not rejoin pool {pool}: {e}", d.id);
                }
            }
        }
    }
    // Now, not when the call began (see `move_to_pool`).
    let now = time::now_ns();
    for (d, was) in domains.iter().zip(running) {
        if was {
            unpause(d, now);
        }
    }
    for &c in old_cpus.iter().chain(&p.cpus) {
        schedule::kick(c, now);
    }
    if result.is_ok() {
        free_instance(old_index, &dom0);
    }
    result.map(|()| now)
}

/// Frees pool instance `index`, which a pool change just replaced (Xen's `cpupool.c` frees
/// the old scheduler's data once its CPUs have left it): taken out of its slot, then freed
/// once every other CPU has passed a quiescent point (`arch::rcu`), since one may still be
/// inside it, having read the CPU map before it changed. Nothing leads to it any more: its
/// pool and its CPUs point at the new instance (or at none), the pool's domains left it
/// (`unregister`), and Domain0, if it is in the pool, joined the new one, unless that
/// failed, in which case its vCPU still names the old one and it is kept. What the free
/// gives back comes off the pools' count ([`cpupool::runtime_bytes`]).
fn free_instance(index: u32, dom0: &[alloc::sync::Arc<Domain>]) {
    if index == cpupool::NO_INSTANCE {
        return;
    }
    let named = |d: &alloc::sync::Arc<Domain>| {
        d.vcpus
            .iter()
            .any(|v| v.sched_instance.load(Ordering::Acquire) == index)
    };
    if dom0.iter().any(named) {
        log::warn!("pool instance {index} is kept: Domain0 still runs in it");
        return;
    }
    let Some(retired) = cpupool::retire(index) else {
        return;
    };
    // This CPU holds no reference to it: `change_pool`'s own (`of_pool`, `unregister`'s)
    // ended with the calls that took them.
    let waited = time::now_ns();
    let old = retired.free_after_grace();
    let waited = time::now_ns().saturating_sub(waited);
    let heap = frames::heap_used();
    drop(old);
    let freed = heap.saturating_sub(frames::heap_used());
    cpupool::kept(heap, frames::heap_used());
    log::debug!("pool instance {index}: {freed} heap bytes freed after a {waited} ns grace period");
}

/// Domain0's scheduling parameters under `policy`. It is the experiment's control plane:
/// the largest weight the policy allows, so that it is served first whenever it needs the
/// CPU (it sleeps through the interval), and `control` where the policy takes it (credit2:
/// its weight then stays out of its runqueue's `max_weight`, so its wake-ups do not make
/// the guests burn credit 256 times faster). One rule for boot and for a swap of its pool.
fn dom0_sched(policy: &sched::PolicyInfo) -> SchedParams {
    let mut sched = SchedParams::new();
    if let Some(weight) = policy.domain_param("weight") {
        let _ = sched.push(weight.name, weight.max);
    }
    if let Some(control) = policy.domain_param("control") {
        let _ = sched.push(control.name, control.max);
    }
    sched
}

/// Builds Domain0 from the boot module and starts it.
pub fn start_domain0(image: &[u8], plan: &[u8]) -> Result<(), domain::CreateError> {
    let section = arch::rcu::read_side();
    let sched = dom0_sched(cpupool::first(&section).policy.info());
    let config = DomainConfig {
        name: "dom0",
        image,
        vcpus: 1,
        memory_kib: sched::limits::DOM0_MEMORY_KIB,
        sched,
        args: &[],
        privileged: true,
        plan: Some(plan),
    };
    // The CPU snapshot slots get their room now, not at the first snapshot, so that the heap
    // Domain0 measures before its guests come is the heap it finds once they are gone.
    for slot in CPU_SNAPSHOT.lock().iter_mut() {
        slot.reserve_exact(smp::startup::online().len());
    }
    let d = domain::create(&config)?;
    let inst = cpupool::first(&section);
    let params = policy_params(&*inst.policy, &sched)
        .map_err(|_| domain::CreateError::BadParameter("dom0 scheduling"))?;
    register(&d, inst, &params)
        .map_err(|_| domain::CreateError::BadParameter("dom0 scheduling"))?;
    d.life.lock().state = DomainState::Alive;
    for v in &d.vcpus {
        schedule::unpause(v, time::now_ns());
    }
    Ok(())
}

/// Ends a domain (shutdown, kill or destroy): every vCPU stops for good. Its figures stay
/// readable until Domain0 destroys it.
pub fn end_domain(domain: &Domain, exit: DomainExit) {
    let now = time::now_ns();
    let waiters = {
        let mut life = domain.life.lock();
        if life.state == DomainState::Dead {
            return;
        }
        life.state = DomainState::Dead;
        life.exit = exit;

        core::mem::take(&mut life.waiters)
    };
    for id in waiters {
        if let Some(v) = domain::vcpu(id) {
            schedule::wake(&v, now);
        }
    }
    if !domain.privileged
        && let Some(dom0) = domain::domain(0)
    {
        dom0.send_virq(abi::hypercall::virq::DOM_EXC, 0, now);
    }
    // Its event channels close, all at once and for good (`PortTable::close_all`): every far
    // end goes back to unbound, so later sends to it fail cleanly, and a vCPU of it still
    // running elsewhere, or a peer, can bind nothing new to it.
    let ports = domain.ports.lock().close_all();
    for (_, state, peer) in ports {
        if let (kerncore::event::Port::Interdomain { port: rport, .. }, Some(remote)) =
            (state, peer)
        {
            remote.ports.lock().peer_closed(rport, domain.id);
        }
    }
    for v in &domain.vcpus {
        v.timer_deadline.store(0, Ordering::Release);
        schedule::stop(v, Stop::Kill, now);
    }
    if domain.privileged {
        log::error!("Domain0 ended ({exit:?}): the experiment cannot go on");
        arch::exit(ExitCode::Failure);
    }
}

/// Pauses a running domain; returns whether it was running.
fn pause(d: &Domain, now: u64) -> bool {
    change_state(d, DomainState::Alive, DomainState::Paused, |v| {
        schedule::stop(v, Stop::Pause, now)
    })
}

/// Moves `d` from state `from` to `to` under its life lock (of two changes at once, one
/// finds the other's state), then applies `each` to its every vCPU; returns false, doing
/// nothing, if it was not in `from`.
fn change_state(d: &Domain, from: DomainState, to: DomainState, each: impl Fn(&Vcpu)) -> bool {
    {
        let mut life = d.life.lock();
        if life.state != from {
            return false;
        }
        life.state = to;
    }
    d.vcpus.iter().for_each(|v| each(v));
    true
}

/// Waits until no CPU runs a vCPU of `d` (Xen's `vcpu_sleep_sync` in `domain_pause`): once
/// a pause returns, the domain's CPU time no longer grows. Each CPU holding one was kicked
/// by `stop`; under TCG it may take the host some milliseconds to run that CPU's thread.
/// Bounded by [`DESTROY_WAIT_NS`] (then logged: the pause stands, the CPU is stuck).
fn wait_off_cpu(d: &Domain) {
    let started = time::now_ns();
    while d.on_cpu() {
        if time::now_ns().saturating_sub(started) > DESTROY_WAIT_NS {
            log::error!(
                "domain {}: paused, but a CPU still runs one of its vCPUs",
                d.id
            );
            return;
        }
        // Another CPU may be waiting for this one to flush its TLB.
        schedule::wait_for_other_cpu();
        arch::percpu::touch_watchdog(); // bounded by DESTROY_WAIT_NS
    }
}

/// Unpauses a paused domain; returns whether it was paused.
fn unpause(d: &Domain, now: u64) -> bool {
    // Each goes back to what it was before the pause (`kerncore::runstate`): one the guest
    // took down itself (`vcpu_op Down`) stays down for `vcpu_op Up`, a sleeper stays asleep.
    change_state(d, DomainState::Paused, DomainState::Alive, |v| {
        schedule::unpause(v, now)
    })
}

/// A guest asked to end itself.
pub fn shutdown_domain(id: DomainId, code: u64) {
    if let Some(d) = domain::domain(id) {
        log::info!("domain {} ({}) shut down with code {code}", d.id, d.name);
        end_domain(&d, DomainExit::Shutdown(code));
    }
}

/// The hypervisor kills a misbehaving guest.
pub fn kill_domain(id: DomainId, reason: KillReason) {
    if let Some(d) = domain::domain(id) {
        log::warn!("domain {} ({}) killed: {reason}", d.id, d.name);
        end_domain(&d, DomainExit::Killed(reason));
    }
}

/// How long [`destroy`] waits for the CPUs still holding a dead domain's vCPUs to let go
/// before it refuses (they are kicked, so under TCG this is milliseconds at most).
const DESTROY_WAIT_NS: u64 = 5_000_000_000;

/// Frees a dead domain once the policy has let go of every vCPU and none is on a CPU: the
/// policy forgets it, the tables drop it, and its address space returns every frame.
///
/// A vCPU can be held past its death in two ways, and destroy waits out both: picked by the
/// policy on another CPU but not yet claimed there (the policy still has it as running, so
/// it refuses to remove it), and claimed (`running_on`), until that CPU, kicked by
/// `end_domain`, switches away. The removal comes first: once the policy has forgotten a
/// vCPU nobody can pick it again, so when `running_on` then clears, it is for good. If the
/// CPUs do not let go in [`DESTROY_WAIT_NS`], nothing is freed and the caller gets `Busy`
/// (the domain stays dead; destroy can be asked again).
fn destroy(domain: &alloc::sync::Arc<Domain>) -> Result<(), Errno> {
    unregister(domain)?;
    let _ = cpupool::pools().remove_domain(domain.id);
    crate::pv::grant_table::release_all(domain);
    domain.life.lock().space = None;
    domain::remove(domain);
    // Its id is free now, and the next domain created gets it (the lowest free id): what
    // other domains still hold for this one, grants and ports unbound for it, must not
    // become that domain's (`GrantTable::orphan`, `PortTable::orphan`). Xen hands out
    // domids in increasing order, which keeps one from being reused soon; Domino reuses ids
    // at once. Grants and ports made for this domain after the walk are refused by their
    // callers, which look again at its state once they have made them.
    for d in domain::all() {
        d.grants.lock().orphan(domain.id);
        d.ports.lock().orphan(domain.id);
    }
    // No binding leads to it any more (closed at its death, `end_domain`, or orphaned just
    // now), but a send on another CPU may have read one before and still be delivering to
    // it by pointer (`evtchn_op` `Send`, `arch::rcu::Reached`): a reference to it is kept
    // until every other CPU has passed a quiescent point, and dropped by a later control
    // call (`arch::rcu::defer_drop`; Xen's `domain_destroy` frees the domain by `call_rcu`),
    // whatever the caller does with its own. Only for a domain a port was ever bound to: no send reaches another (`Domain::bound_to`, set under
    // the port tables' locks that closing and orphaning took since, so seen here).
    if domain.bound_to.load(Ordering::Acquire) {
        arch::rcu::defer_drop(domain.clone());
    }
    Ok(())
}
