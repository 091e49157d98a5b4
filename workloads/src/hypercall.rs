//! Hypercall wrappers: `syscall` with the convention of `abi::hypercall`.
//!
//! The number goes in RAX, arguments in RDI, RSI, RDX, R10, R8; the result comes back in RAX,
//! negative for an [`Errno`]. `syscall` itself overwrites RCX and R11, and the hypervisor may
//! use every vector register (they are caller-saved in this ABI), so each call clobbers the
//! whole C caller-saved set (`clobber_abi("C")`), which includes all of x87/MMX/SSE.
//!
//! The hypervisor checks every pointer against the caller's own address space, so passing it
//! a bad pointer is not undefined behaviour in the guest: the call fails with `Errno::Fault`.
//! The safe wrappers below only ever pass pointers to live Rust buffers; [`raw`] exists for
//! the hostile workloads that test that checking.

use core::arch::asm;

use abi::error::Errno;
use abi::hypercall::{self as nr, SchedOp, VcpuOp};

/// Issues hypercall `number` with five arguments and returns RAX as the hypervisor left it.
///
/// # Safety
/// A call that makes the hypervisor write guest memory (the reply buffers of `domctl` and
/// `sysctl`) writes wherever the given pointer says, within the caller's own address space:
/// the caller must make sure no Rust reference covers those bytes at that time.
#[inline(always)]
pub unsafe fn raw(number: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    let ret: i64;
    // The hypervisor returns to the next instruction with only RAX, RCX, R11 and the
    // caller-saved registers changed (`clobber_abi("C")`), and never touches this stack.
    // SAFETY: as above; memory it writes is covered by the caller's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            in("r8") a4,
            clobber_abi("C"),
            options(nostack),
        );
    }
    ret
}

/// Turns a raw return value into a result. A negative value the ABI does not know is reported
/// as `NoSys`, the closest meaning ("the hypervisor did not do that").
pub fn result(ret: i64) -> Result<u64, Errno> {
    if ret >= 0 {
        Ok(ret as u64)
    } else {
        Err(Errno::from_ret(ret).unwrap_or(Errno::NoSys))
    }
}

/// Writes `bytes` to the hypervisor console; it prefixes each line with the domain's name.
pub fn console_write(bytes: &[u8]) -> Result<u64, Errno> {
    // SAFETY: the hypervisor only reads `bytes`, which is a live slice.
    result(unsafe {
        raw(
            nr::CONSOLE_WRITE,
            bytes.as_ptr() as u64,
            bytes.len() as u64,
            0,
            0,
            0,
        )
    })
}

fn sched_op(op: SchedOp, arg: u64) -> Result<u64, Errno> {
    // SAFETY: no pointer is passed.
    result(unsafe { raw(nr::SCHED_OP, op as u64, arg, 0, 0, 0) })
}

/// The null hypercall: enters the hypervisor and comes straight back (benchmarks).
pub fn null() {
    // SAFETY: NULL reads and writes no guest memory.
    let _ = unsafe { raw(nr::NULL, 0, 0, 0, 0, 0) };
}

/// Gives up the CPU; the vCPU stays runnable.
pub fn yield_now() {
    // Yield cannot fail in a way the caller could act on.
    let _ = sched_op(SchedOp::Yield, 0);
}

/// Sleeps until this vCPU's timer fires or an event arrives. May return at once (a timer
/// already expired, a pending event) or spuriously: callers re-check their condition.
pub fn block() {
    let _ = sched_op(SchedOp::Block, 0);
}

/// Ends the whole domain with `code` (0 = clean exit, `abi::hypercall::shutdown::CRASH` for
/// a panic). Never returns; if the hypervisor refused, the vCPU spins in `block`.
pub fn shutdown(code: u64) -> ! {
    let _ = sched_op(SchedOp::Shutdown, code);
    loop {
        block();
    }
}

/// Arms this vCPU's one-shot timer at system time `deadline_ns`; 0 cancels it.
pub fn set_timer(deadline_ns: u64) -> Result<u64, Errno> {
    // SAFETY: no pointer is passed.
    result(unsafe { raw(nr::SET_TIMER, deadline_ns, 0, 0, 0, 0) })
}

fn evtchn(op: abi::hypercall::EvtchnOp, a1: u64, a2: u64) -> Result<u64, Errno> {
    // SAFETY: no pointer is passed.
    result(unsafe { raw(nr::EVTCHN_OP, op as u64, a1, a2, 0, 0) })
}

/// Allocates an event-channel port for domain `remote` to bind to; returns the port.
pub fn evtchn_alloc_unbound(remote: u32) -> Result<u32, Errno> {
    evtchn(abi::hypercall::EvtchnOp::AllocUnbound, u64::from(remote), 0).map(|p| p as u32)
}

/// Binds a new port to `remote_port` of domain `remote` (allocated for us); returns it.
pub fn evtchn_bind(remote: u32, remote_port: u32) -> Result<u32, Errno> {
    evtchn(
        abi::hypercall::EvtchnOp::BindInterdomain,
        u64::from(remote),
        u64::from(remote_port),
    )
    .map(|p| p as u32)
}

/// Binds a new port to virtual IRQ `virq` (`abi::hypercall::virq`); returns the port.
pub fn evtchn_bind_virq(virq: u32) -> Result<u32, Errno> {
    evtchn(abi::hypercall::EvtchnOp::BindVirq, u64::from(virq), 0).map(|p| p as u32)
}

/// Sleeps until one of `ports` is pending (or the timer or another event): see
/// `abi::hypercall::SchedOp::Poll`. Returns whether one of them was pending at once.
pub fn poll(ports: &[u32]) -> Result<u64, Errno> {
    // SAFETY: the hypervisor only reads `ports`, a live slice, `ports.len()` elements long.
    result(unsafe {
        raw(
            nr::SCHED_OP,
            SchedOp::Poll as u64,
            ports.as_ptr() as u64,
            ports.len() as u64,
            0,
            0,
        )
    })
}

/// Sends an event on `port`.
pub fn evtchn_send(port: u32) -> Result<u64, Errno> {
    evtchn(abi::hypercall::EvtchnOp::Send, u64::from(port), 0)
}

/// Closes `port`.
pub fn evtchn_close(port: u32) -> Result<u64, Errno> {
    evtchn(abi::hypercall::EvtchnOp::Close, u64::from(port), 0)
}

/// Starts vCPU `vcpu` of this domain (which is down) at the domain's entry point.
pub fn vcpu_up(vcpu: usize) -> Result<u64, Errno> {
    // SAFETY: no pointer is passed.
    result(unsafe { raw(nr::VCPU_OP, VcpuOp::Up as u64, vcpu as u64, 0, 0, 0) })
}

/// Takes the calling vCPU (`vcpu` is its index) down.
pub fn vcpu_down(vcpu: usize) -> Result<u64, Errno> {
    // SAFETY: no pointer is passed.
    result(unsafe { raw(nr::VCPU_OP, VcpuOp::Down as u64, vcpu as u64, 0, 0, 0) })
}

/// `domctl`: sends an encoded request, receives the encoded reply in `reply`; returns the
/// reply's length. Domain0 only (`Errno::Perm` elsewhere).
pub fn domctl(request: &[u8], reply: &mut [u8]) -> Result<usize, Errno> {
    control(nr::DOMCTL, request, reply)
}

/// `sysctl`: as [`domctl`].
pub fn sysctl(request: &[u8], reply: &mut [u8]) -> Result<usize, Errno> {
    control(nr::SYSCTL, request, reply)
}

fn control(number: u64, request: &[u8], reply: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `request` is read and `reply` written, both live buffers borrowed for the call
    // (`reply` mutably, so nothing else refers to it).
    let ret = unsafe {
        raw(
            number,
            request.as_ptr() as u64,
            request.len() as u64,
            reply.as_mut_ptr() as u64,
            reply.len() as u64,
            0,
        )
    };
    let len = result(ret)? as usize;
    if len > reply.len() {
        // The hypervisor claims more than the buffer holds: treat it as a malformed reply.
        return Err(Errno::Inval);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_become_results() {
        assert_eq!(result(0), Ok(0));
        assert_eq!(result(42), Ok(42));
        assert_eq!(result(-14), Err(Errno::Fault));
        assert_eq!(result(-1), Err(Errno::Perm));
        assert_eq!(result(-4096), Err(Errno::NoSys));
    }
}
