//! Hypercall dispatch: from the `syscall` entry to the handler of each number.
//!
//! Every guest pointer is checked to lie in the guest's half before it is touched, and is
//! touched only through `arch::entry::copy_guest`, which survives an unmapped page: a wild
//! pointer gets `Errno::Fault`, never a hypervisor crash.

use abi::error::Errno;
use abi::hypercall::{self, EvtchnOp, SchedOp, VcpuOp};
use abi::layout::USER_LIMIT;

use crate::arch::entry::copy_guest;
use crate::arch::trap::TrapFrame;
use crate::domain::control;
use crate::domain::{self, Vcpu, VcpuState};
use crate::schedule::Next;
use crate::{schedule, time};
use abi::control::KillReason;

/// Most bytes of one console write taken at once.
const CONSOLE_CHUNK: usize = 256;

/// Whether `[addr, addr + len)` lies within the guest's half.
fn guest_range_ok(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= USER_LIMIT)
}

/// Copies `dst.len()` bytes from guest address `src`.
pub fn copy_from_guest(dst: &mut [u8], src: u64) -> Result<(), Errno> {
    if !guest_range_ok(src, dst.len() as u64) {
        return Err(Errno::Fault);
    }
    // SAFETY: `dst` is hypervisor memory of the right length; `src` lies in the guest half
    // of the address space loaded now (the caller's), and faults there are recovered.
    unsafe { copy_guest(dst.as_mut_ptr(), src as *const u8, dst.len()) }.map_err(|()| Errno::Fault)
}

/// Copies `src` to guest address `dst`.
pub fn copy_to_guest(dst: u64, src: &[u8]) -> Result<(), Errno> {
    if !guest_range_ok(dst, src.len() as u64) {
        return Err(Errno::Fault);
    }
    // SAFETY: as in `copy_from_guest`, the other way round. Writes to read-only guest pages
    // fault (CR0.WP is set) and are recovered too.
    unsafe { copy_guest(dst as *mut u8, src.as_ptr(), src.len()) }.map_err(|()| Errno::Fault)
}

/// Called by the `syscall` entry. Returns what the exit path does: 0, back by `sysretq`;
/// 1, the frame was rewritten (another vCPU, an upcall, a restored context), so back by
/// `iretq`, which restores every register; 2, nothing to run: idle.
#[unsafe(no_mangle)]
extern "C" fn syscall_dispatch(frame: &mut TrapFrame) -> u64 {
    let next = if frame.rax == hypercall::CALLBACK_RETURN {
        // Not a call that returns a value: the frame becomes the interrupted context, to be
        // restored in full by the `iretq` path.
        let Some(()) =
            schedule::with_current(|vcpu| crate::pv::upcall::finish(vcpu, frame, frame.rdi))
        else {
            panic!("hypercall with no vCPU on this CPU");
        };
        Next::Switched
    } else {
        let Some(result) = schedule::with_current(|vcpu| handle(vcpu, frame)) else {
            panic!("hypercall with no vCPU on this CPU");
        };
        frame.rax = match result {
            Ok(value) => value,
            Err(e) => e.to_ret() as u64,
        };
        Next::Same
    };
    exit_code(crate::trap::leave(frame, true, next))
}

/// Called by the compatibility-mode `syscall` entry (MSR_CSTAR), which no guest can reach:
/// guests have no 32-bit code segment. If one ever does, it is killed. Returns 1 to idle,
/// 0 to leave through the frame by `iretq`.
#[unsafe(no_mangle)]
extern "C" fn compat_syscall_dispatch(frame: &mut TrapFrame) -> u64 {
    match schedule::current() {
        Some(v) => control::kill_domain(v.domain, KillReason::CompatSyscall { rip: frame.rip }),
        None => panic!("compatibility-mode syscall with no vCPU on this CPU"),
    }
    let next = schedule::reschedule(frame, true);
    u64::from(crate::trap::leave(frame, true, next.then(Next::Switched)) == Next::Idle)
}

fn exit_code(next: Next) -> u64 {
    match next {
        Next::Same => 0,
        Next::Switched => 1,
        Next::Idle => 2,
    }
}

fn handle(vcpu: &Vcpu, frame: &TrapFrame) -> Result<u64, Errno> {
    let (a0, a1, a2, a3) = (frame.rdi, frame.rsi, frame.rdx, frame.r10);
    match frame.rax {
        hypercall::CONSOLE_WRITE => console_write(vcpu, a0, a1),
        hypercall::SCHED_OP => sched_op(vcpu, a0, a1, a2),
        hypercall::SET_TIMER => {
            schedule::set_timer(vcpu, a0);
            Ok(0)
        }
        hypercall::VCPU_OP => vcpu_op(vcpu, a0, a1),
        hypercall::NULL => Ok(0),
        hypercall::SET_CALLBACK => crate::pv::upcall::set_callback(vcpu, a0),
        hypercall::GRANT_OP => crate::pv::grant_table::grant_op(vcpu, a0, a1, a2, a3, frame.r8),
        hypercall::MMU_UPDATE => crate::mm::mmu::mmu_update(vcpu, a0, a1),
        hypercall::UPDATE_VA_MAPPING => crate::mm::mmu::update_va_mapping(vcpu, a0, a1),
        hypercall::MEMORY_OP => crate::mm::mmu::memory_op(vcpu, a0, a1, a2),
        hypercall::EVTCHN_OP => evtchn_op(vcpu, a0, a1, a2),
        hypercall::DOMCTL | hypercall::SYSCTL => {
            let domain = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
            if !domain.privileged {
                return Err(Errno::Perm);
            }
            control::call(frame.rax == hypercall::DOMCTL, a0, a1, a2, a3)
        }
        _ => Err(Errno::NoSys),
    }
}

#[inline(never)] // kept out of the hypercall fast path
fn console_write(vcpu: &Vcpu, ptr: u64, len: u64) -> Result<u64, Errno> {
    let domain = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
    let mut buf = [0u8; CONSOLE_CHUNK];
    let n = (len as usize).min(CONSOLE_CHUNK);
    copy_from_guest(&mut buf[..n], ptr)?;
    // Every domain shares one serial port, written with interrupts off: an unprivileged
    // domain gets a quota (`domain::CONSOLE_BURST_BYTES`, then `CONSOLE_BYTES_PER_SEC`),
    // and output over it is refused with `Again`, said once in the log.
    if !domain.privileged && !domain.console_quota.lock().take(n as u64, time::now_ns()) {
        use core::sync::atomic::Ordering;
        if domain
            .console_refused
            .fetch_add(n as u64, Ordering::Relaxed)
            == 0
        {
            log::warn!(
                "[{}] console output over its quota ({} bytes, then {} a second): refused",
                domain.name,
                domain::CONSOLE_BURST_BYTES,
                domain::CONSOLE_BYTES_PER_SEC
            );
        }
        return Err(Errno::Again);
    }
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("(not UTF-8)");
    for line in text.split_terminator('\n') {
        log::info!("[{}] {}", domain.name, line);
    }
    Ok(n as u64)
}

fn sched_op(vcpu: &Vcpu, op: u64, arg: u64, arg2: u64) -> Result<u64, Errno> {
    let now = time::now_ns();
    match SchedOp::from_raw(op).ok_or(Errno::NoSys)? {
        SchedOp::Yield => {
            schedule::yield_current(vcpu, now);
            Ok(0)
        }
        SchedOp::Block => {
            if schedule::take_due_timer(vcpu, now) {
                return Ok(0);
            }
            schedule::stop(vcpu, VcpuState::Blocked, now);
            // An event sent or a timer fired before the vCPU was marked blocked found
            // nothing to wake: look again now that it is (the sender marks pending, then
            // wakes; SeqCst on both; the timer is marked FIRED, then wakes).
            if domain::domain(vcpu.domain).is_some_and(|d| d.has_pending_for(vcpu.index))
                || schedule::take_due_timer(vcpu, now)
            {
                schedule::wake(vcpu, now);
            }
            Ok(0)
        }
        SchedOp::Poll => {
            const MAX_POLL: usize = 64;
            let count = usize::try_from(arg2)
                .ok()
                .filter(|n| (1..=MAX_POLL).contains(n))
                .ok_or(Errno::Inval)?;
            let mut bytes = [0u8; MAX_POLL * 4];
            copy_from_guest(&mut bytes[..count * 4], arg)?;
            let ports = bytes[..count * 4]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            let domain = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
            let any_pending = |d: &domain::Domain| ports.clone().any(|p| d.is_pending(p));
            if any_pending(&domain) {
                return Ok(1);
            }
            // Like Block: a timer that already fired ends the poll (Xen's SCHEDOP_poll
            // returns on the timeout too), or the vCPU would sleep forever.
            if schedule::take_due_timer(vcpu, now) {
                return Ok(0);
            }
            schedule::stop(vcpu, VcpuState::Blocked, now);
            // As for Block: an event sent or a timer fired before the vCPU was marked
            // blocked.
            if any_pending(&domain)
                || domain.has_pending_for(vcpu.index)
                || schedule::take_due_timer(vcpu, now)
            {
                schedule::wake(vcpu, now);
            }
            Ok(0)
        }
        SchedOp::Shutdown => {
            control::shutdown_domain(vcpu.domain, arg);
            Ok(0)
        }
    }
}

/// Event channels: allocate, bind, send, close (the port rules are in `kerncore::event`).
#[inline(never)] // kept out of the hypercall fast path
fn evtchn_op(vcpu: &Vcpu, op: u64, a1: u64, a2: u64) -> Result<u64, Errno> {
    use kerncore::event::{Port, PortError};
    let me = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
    let alive = |id: u64| {
        u32::try_from(id)
            .ok()
            .and_then(domain::domain)
            .filter(|d| d.life.lock().state != abi::control::DomainState::Dead)
            .ok_or(Errno::Srch)
    };
    let port_error = |e: PortError| match e {
        PortError::Full => Errno::NoMem,
        PortError::NotAllocated | PortError::WrongState => Errno::Inval,
    };
    match EvtchnOp::from_raw(op).ok_or(Errno::NoSys)? {
        EvtchnOp::AllocUnbound => {
            let remote = alive(a1)?;
            me.ports
                .lock()
                .alloc_unbound(remote.id)
                .map(u64::from)
                .map_err(port_error)
        }
        EvtchnOp::BindInterdomain => {
            let remote = alive(a1)?;
            if remote.id == me.id {
                return Err(Errno::Inval);
            }
            let rport = u32::try_from(a2).map_err(|_| Errno::Inval)?;
            // Both tables at once, always the lower domain id first: no lock-order deadlock
            // between two domains binding to each other.
            let (mut mine, mut theirs) = if me.id < remote.id {
                let m = me.ports.lock();
                (m, remote.ports.lock())
            } else {
                let t = remote.ports.lock();
                (me.ports.lock(), t)
            };
            let local = mine.alloc_bound(remote.id, rport).map_err(port_error)?;
            if let Err(e) = theirs.accept(rport, me.id, local) {
                mine.release(local);
                return Err(port_error(e));
            }
            Ok(u64::from(local))
        }
        EvtchnOp::Send => {
            let port = u32::try_from(a1).map_err(|_| Errno::Inval)?;
            let Port::Interdomain {
                remote,
                port: rport,
            } = me.ports.lock().get(port)
            else {
                return Err(Errno::Inval);
            };
            let remote = domain::domain(remote).ok_or(Errno::Srch)?;
            remote.send(rport, time::now_ns());
            Ok(0)
        }
        EvtchnOp::BindVirq => {
            let virq = u32::try_from(a1)
                .ok()
                .filter(|v| *v < abi::hypercall::virq::COUNT)
                .ok_or(Errno::Inval)?;
            if virq == abi::hypercall::virq::DOM_EXC && !me.privileged {
                return Err(Errno::Perm);
            }
            // The domain-exception VIRQ is global: it always notifies vCPU 0.
            let target = if virq == abi::hypercall::virq::DOM_EXC {
                0
            } else {
                vcpu_index(&me, a2)?
            };
            me.ports
                .lock()
                .bind_virq(virq, target)
                .map(u64::from)
                .map_err(port_error)
        }
        EvtchnOp::BindVcpu => {
            let port = u32::try_from(a1).map_err(|_| Errno::Inval)?;
            let target = vcpu_index(&me, a2)?;
            if let Port::Virq { .. } = me.ports.lock().get(port) {
                // Xen: VIRQs stay on the vCPU they were bound for.
                return Err(Errno::Inval);
            }
            me.ports
                .lock()
                .bind_vcpu(port, target)
                .map(|()| 0)
                .map_err(port_error)
        }
        EvtchnOp::Unmask => {
            let port = u32::try_from(a1)
                .ok()
                .filter(|p| (*p as usize) < abi::shared::MAX_PORTS)
                .ok_or(Errno::Inval)?;
            if me.ports.lock().get(port) == Port::Free {
                return Err(Errno::Inval);
            }
            if me.unmask(port) {
                let target = me.ports.lock().notify_vcpu(port);
                me.notify_vcpu(target, port as usize / 64, time::now_ns());
            }
            Ok(0)
        }
        EvtchnOp::Close => {
            let port = u32::try_from(a1).map_err(|_| Errno::Inval)?;
            let was = me.ports.lock().close(port).map_err(port_error)?;
            if let Port::Interdomain {
                remote,
                port: rport,
            } = was
                && let Some(remote) = domain::domain(remote)
            {
                remote.ports.lock().peer_closed(rport, me.id);
            }
            Ok(0)
        }
    }
}

/// A vCPU index of `domain`, from a hypercall argument.
fn vcpu_index(domain: &domain::Domain, raw: u64) -> Result<u32, Errno> {
    u32::try_from(raw)
        .ok()
        .filter(|i| (*i as usize) < domain.vcpus.len())
        .ok_or(Errno::Inval)
}

#[inline(never)] // kept out of the hypercall fast path
fn vcpu_op(vcpu: &Vcpu, op: u64, which: u64) -> Result<u64, Errno> {
    let domain = domain::domain(vcpu.domain).ok_or(Errno::Srch)?;
    let now = time::now_ns();
    match VcpuOp::from_raw(op).ok_or(Errno::NoSys)? {
        VcpuOp::Up => {
            let target = domain.vcpus.get(which as usize).ok_or(Errno::Inval)?;
            schedule::unpause(target, now);
            Ok(0)
        }
        VcpuOp::Down => {
            schedule::stop(vcpu, VcpuState::Paused, now);
            Ok(0)
        }
    }
}
