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
use sched::{DomainId as PolicyDomain, VcpuId};

use crate::arch::guest::{copy_from_guest, copy_to_guest};
use crate::domain::boot_module;
use crate::domain::{self, Domain, DomainConfig, VcpuState};
use crate::mm::frames;
use crate::{arch, console, schedule, time};

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

/// Largest request or reply.
const MESSAGE_BYTES: usize = 4096;

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
    let mut request = [0u8; MESSAGE_BYTES];
    let request = &mut request[..req_len as usize];
    copy_from_guest(request, req_ptr)?;
    let mut reply = [0u8; MESSAGE_BYTES];
    let used = if is_domctl {
        let reply_msg = domctl(control::decode(request)?)?;
        control::encode(&reply_msg, &mut reply)?
    } else {
        let mut name_buf = [0u8; 32];
        let reply_msg = sysctl(control::decode(request)?, &mut name_buf)?;
        control::encode(&reply_msg, &mut reply)?
    };
    if used as u64 > reply_cap {
        return Err(Errno::TooBig);
    }
    copy_to_guest(reply_ptr, &reply[..used])?;
    Ok(used as u64)
}

/// `sched` as the policy in force takes it, each pair checked against the parameters it
/// declares: a name it does not declare, or a value out of range, is refused (with a
/// warning that names it and what is allowed) before anything changes.
fn policy_params(sched: &SchedParams) -> Result<ArrayVec<(&str, u64), MAX_SCHED_PARAMS>, Errno> {
    let info = schedule::policy().info();
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

fn domctl(request: Domctl) -> Result<DomctlReply, Errno> {
    let now = time::now_ns();
    match request {
        Domctl::Create {
            image,
            name,
            vcpus,
            memory_kib,
            sched,
            args,
        } => {
            let params = policy_params(&sched)?;
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
            if let Err(e) = register(&domain, &params) {
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
            for (name, value) in policy_params(&sched)? {
                schedule::policy()
                    .set_domain_param(PolicyDomain(d.id), name, value)
                    .map_err(|_| Errno::Inval)?;
            }
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
            let guests = domain::all().into_iter().filter(|d| !d.privileged);
            Ok(DomctlReply::Started {
                count: guests.filter(|d| unpause(d, now)).count() as u32,
                at_ns: now,
            })
        }
        Domctl::GetSnapshot { domain, slot: raw } => {
            let slot = slot(raw)?;
            let d = domain::domain(domain).ok_or(Errno::Srch)?;
            let info = d.snapshot.lock()[slot];
            info.map(DomctlReply::Info).ok_or(Errno::Srch)
        }
        Domctl::PauseAll => {
            let guests = domain::all().into_iter().filter(|d| !d.privileged);
            Ok(DomctlReply::Started {
                count: guests.filter(|d| pause(d, now)).count() as u32,
                at_ns: now,
            })
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
            schedule::stop(&caller, VcpuState::Blocked, now);
            Err(Errno::Busy)
        }
    }
}

fn sysctl<'a>(request: Sysctl, _name: &'a mut [u8; 32]) -> Result<SysctlReply<'a>, Errno> {
    match request {
        Sysctl::GetPolicy => Ok(SysctlReply::Policy {
            name: schedule::policy().info().name,
            cpus: smp::startup::online().len() as u32,
        }),
        Sysctl::GetSchedParam { name } => {
            let value = schedule::policy()
                .global_param(name)
                .map_err(|_| Errno::Inval)?;
            Ok(SysctlReply::SchedParam { value })
        }
        Sysctl::SetSchedParam { name, value } => {
            schedule::policy()
                .set_global_param(name, value)
                .map_err(|e| {
                    log::warn!("sysctl SetSchedParam: {e}");
                    Errno::Inval
                })?;
            Ok(SysctlReply::Done)
        }
        Sysctl::CpuStats { cpu } => {
            if !smp::startup::online().contains(cpu as usize) {
                return Err(Errno::Inval);
            }
            let f = schedule::cpu_figures(cpu as usize, time::now_ns());
            Ok(SysctlReply::CpuStats {
                idle_ns: f.idle_ns,
                busy_ns: f.busy_ns,
                switches: f.switches,
                slice_late: f.slice_late,
            })
        }
        Sysctl::TakeSnapshot { slot: raw } => with_other_cpus_held(|| {
            let slot = slot(raw)?;
            let now = time::now_ns();
            for d in domain::all() {
                arch::percpu::touch_watchdog(); // 1024 domains take a while under TCG
                let info = d.info(now);
                d.snapshot.lock()[slot] = Some(info);
            }
            let mut snaps = CPU_SNAPSHOT.lock();
            let snap = &mut snaps[slot];
            snap.clear();
            snap.extend(
                smp::startup::online()
                    .iter()
                    .map(|cpu| (cpu, schedule::cpu_figures(cpu, now))),
            );
            Ok(SysctlReply::Snapshot { at_ns: now })
        }),
        Sysctl::CpuSnapshot { cpu, slot: raw } => {
            let slot = slot(raw)?;
            let snaps = CPU_SNAPSHOT.lock();
            let (_, f) = snaps[slot]
                .iter()
                .find(|(c, _)| *c == cpu as usize)
                .ok_or(Errno::Inval)?;
            Ok(SysctlReply::CpuStats {
                idle_ns: f.idle_ns,
                busy_ns: f.busy_ns,
                switches: f.switches,
                slice_late: f.slice_late,
            })
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

/// Registers a new domain and its vCPUs with the policy.
fn register(domain: &Domain, params: &[(&str, u64)]) -> Result<(), sched::Error> {
    let policy = schedule::policy();
    policy.add_domain(PolicyDomain(domain.id), params)?;
    let cpus = smp::startup::online().len().max(1);
    for v in &domain.vcpus {
        // Spread a domain's vCPUs over the CPUs from the start; the policy moves them later.
        let cpu = (domain.id as usize + v.index as usize) % cpus;
        policy.insert_vcpu(VcpuId(v.id), PolicyDomain(domain.id), cpu)?;
    }
    Ok(())
}

/// Builds Domain0 from the boot module and starts it.
pub fn start_domain0(image: &[u8], plan: &[u8]) -> Result<(), domain::CreateError> {
    // Domain0 is the experiment's control plane: the largest weight the policy allows, so
    // that it is served first whenever it needs the CPU (it sleeps through the interval).
    let mut sched = SchedParams::new();
    if let Some(weight) = schedule::policy().info().domain_param("weight") {
        sched
            .push(weight.name, weight.max)
            .map_err(|_| domain::CreateError::BadParameter("dom0 scheduling"))?;
    }
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
    let params =
        policy_params(&sched).map_err(|_| domain::CreateError::BadParameter("dom0 scheduling"))?;
    register(&d, &params).map_err(|_| domain::CreateError::BadParameter("dom0 scheduling"))?;
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
    // Its event channels close: every far end goes back to unbound, so later sends to it
    // fail cleanly.
    let ports: alloc::vec::Vec<_> = domain.ports.lock().in_use().collect();
    for (port, state) in ports {
        let _ = domain.ports.lock().close(port);
        if let kerncore::event::Port::Interdomain {
            remote,
            port: rport,
        } = state
            && let Some(remote) = domain::domain(remote)
        {
            remote.ports.lock().peer_closed(rport, domain.id);
        }
    }
    for v in &domain.vcpus {
        v.timer_deadline.store(0, Ordering::Release);
        schedule::stop(v, VcpuState::Dead, now);
    }
    if domain.privileged {
        log::error!("Domain0 ended ({exit:?}): the experiment cannot go on");
        arch::exit(ExitCode::Failure);
    }
}

/// Pauses a running domain; returns whether it was running.
fn pause(d: &Domain, now: u64) -> bool {
    {
        let mut life = d.life.lock();
        if life.state != DomainState::Alive {
            return false;
        }
        life.state = DomainState::Paused;
    }
    for v in &d.vcpus {
        schedule::stop(v, VcpuState::Paused, now);
    }
    true
}

/// Unpauses a paused domain; returns whether it was paused.
fn unpause(d: &Domain, now: u64) -> bool {
    {
        let mut life = d.life.lock();
        if life.state != DomainState::Paused {
            return false;
        }
        life.state = DomainState::Alive;
    }
    for v in &d.vcpus {
        schedule::unpause(v, now);
    }
    true
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
fn destroy(domain: &Domain) -> Result<(), Errno> {
    let policy = schedule::policy();
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
        if removed.iter().all(|d| *d) && !domain.on_cpu() {
            break;
        }
        if time::now_ns().saturating_sub(started) > DESTROY_WAIT_NS {
            log::error!(
                "destroy of domain {} refused: a CPU still holds one of its vCPUs",
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
    crate::pv::grant_table::release_all(domain);
    domain.life.lock().space = None;
    domain::remove(domain);
    Ok(())
}
