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
#[cfg(not(feature = "linux"))]
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

#[cfg_attr(feature = "linux", allow(dead_code))]
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
#[cfg(not(feature = "linux"))]
pub fn yield_now() {
    // Yield cannot fail in a way the caller could act on.
    let _ = sched_op(SchedOp::Yield, 0);
}

/// Sleeps until this vCPU's timer fires or an event arrives. May return at once (a timer
/// already expired, a pending event) or spuriously: callers re-check their condition.
#[cfg(not(feature = "linux"))]
pub fn block() {
    let _ = sched_op(SchedOp::Block, 0);
}

/// Ends the whole domain with `code` (0 = clean exit, `abi::hypercall::shutdown::CRASH` for
/// a panic). Never returns; if the hypervisor refused, the vCPU spins in `block`.
#[cfg(not(feature = "linux"))]
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
#[cfg(not(feature = "linux"))]
pub fn evtchn_alloc_unbound(remote: u32) -> Result<u32, Errno> {
    evtchn(abi::hypercall::EvtchnOp::AllocUnbound, u64::from(remote), 0).map(|p| p as u32)
}

/// Binds a new port to `remote_port` of domain `remote` (allocated for us); returns it.
#[cfg(not(feature = "linux"))]
pub fn evtchn_bind(remote: u32, remote_port: u32) -> Result<u32, Errno> {
    evtchn(
        abi::hypercall::EvtchnOp::BindInterdomain,
        u64::from(remote),
        u64::from(remote_port),
    )
    .map(|p| p as u32)
}

/// Binds a new port to virtual IRQ `virq` (`abi::hypercall::virq`) of vCPU 0; returns
/// the port.
pub fn evtchn_bind_virq(virq: u32) -> Result<u32, Errno> {
    evtchn_bind_virq_vcpu(virq, 0)
}

/// Binds a new port to virtual IRQ `virq` of vCPU `vcpu`; returns the port, which notifies
/// that vCPU.
pub fn evtchn_bind_virq_vcpu(virq: u32, vcpu: usize) -> Result<u32, Errno> {
    evtchn(
        abi::hypercall::EvtchnOp::BindVirq,
        u64::from(virq),
        vcpu as u64,
    )
    .map(|p| p as u32)
}

/// Makes events on `port` notify vCPU `vcpu` of this domain.
pub fn evtchn_bind_vcpu(port: u32, vcpu: usize) -> Result<u64, Errno> {
    evtchn(
        abi::hypercall::EvtchnOp::BindVcpu,
        u64::from(port),
        vcpu as u64,
    )
}

/// Unmasks `port`, notifying its vCPU if it is pending.
pub fn evtchn_unmask(port: u32) -> Result<u64, Errno> {
    evtchn(abi::hypercall::EvtchnOp::Unmask, u64::from(port), 0)
}

/// Registers this vCPU's event upcall entry (`abi::hypercall::SET_CALLBACK`); 0 removes it.
/// The entry must follow the upcall convention of `abi::shared::UpcallFrame`, as
/// [`crate::upcall`] does.
pub fn set_callback(entry: u64) -> Result<u64, Errno> {
    // SAFETY: no guest memory is touched by the call itself.
    result(unsafe { raw(nr::SET_CALLBACK, entry, 0, 0, 0, 0) })
}

fn grant(op: abi::hypercall::GrantOp, a1: u64, a2: u64, a3: u64, a4: u64) -> Result<u64, Errno> {
    // SAFETY: the grant operations below pass no pointer, except `grant_copy`, which has its
    // own wrapper.
    result(unsafe { raw(nr::GRANT_OP, op as u64, a1, a2, a3, a4) })
}

/// Grants domain `grantee` access to this domain's page at `va` (read-only if `readonly`);
/// returns the grant reference.
#[cfg(not(feature = "linux"))]
pub fn grant_access(va: u64, grantee: u32, readonly: bool) -> Result<u32, Errno> {
    grant(
        abi::hypercall::GrantOp::Grant,
        va,
        u64::from(grantee),
        u64::from(readonly),
        0,
    )
    .map(|r| r as u32)
}

/// Revokes grant `gref`; `Errno::Busy` while the grantee has it mapped.
pub fn grant_end(gref: u32) -> Result<u64, Errno> {
    grant(abi::hypercall::GrantOp::End, u64::from(gref), 0, 0, 0)
}

/// Maps the frame `granter` granted as `gref` at `va` (a free page of
/// `abi::layout::MAP_AREA`); returns the handle for [`grant_unmap`].
///
/// # Safety
/// The page at `va` becomes memory another domain may change at any time: the caller must
/// access it only with volatile or atomic operations, and must not hold references into
/// `va` across [`grant_unmap`].
#[cfg(not(feature = "linux"))]
pub unsafe fn grant_map(granter: u32, gref: u32, va: u64, readonly: bool) -> Result<u32, Errno> {
    grant(
        abi::hypercall::GrantOp::Map,
        u64::from(granter),
        u64::from(gref),
        va,
        u64::from(readonly),
    )
    .map(|h| h as u32)
}

/// Undoes a [`grant_map`].
#[cfg(not(feature = "linux"))]
pub fn grant_unmap(handle: u32) -> Result<u64, Errno> {
    grant(abi::hypercall::GrantOp::Unmap, u64::from(handle), 0, 0, 0)
}

/// Copies out of the frame `granter` granted as `gref`, from `offset`, into `buf`.
#[cfg(not(feature = "linux"))]
pub fn grant_copy_from(granter: u32, gref: u32, offset: u32, buf: &mut [u8]) -> Result<u64, Errno> {
    let local = buf.as_mut_ptr() as u64;
    // SAFETY: the hypervisor writes `buf`, borrowed mutably for the call.
    unsafe { grant_copy(granter, gref, offset, local, buf.len(), false) }
}

/// Copies `buf` into the frame `granter` granted as `gref` (read-write), at `offset`.
#[cfg(not(feature = "linux"))]
pub fn grant_copy_to(granter: u32, gref: u32, offset: u32, buf: &[u8]) -> Result<u64, Errno> {
    // SAFETY: the hypervisor only reads `buf`.
    unsafe { grant_copy(granter, gref, offset, buf.as_ptr() as u64, buf.len(), true) }
}

/// `grant_op Copy` of `len` bytes between a granted frame and the caller's memory at `local`.
///
/// # Safety
/// `local..local + len` is a live buffer the caller may have written (`to_grant` false) or
/// read (`to_grant` true) for the duration of the call.
#[cfg(not(feature = "linux"))]
unsafe fn grant_copy(
    granter: u32,
    gref: u32,
    offset: u32,
    local: u64,
    len: usize,
    to_grant: bool,
) -> Result<u64, Errno> {
    let copy = abi::mm::GrantCopy {
        granter,
        gref,
        offset,
        len: len as u32,
        local,
        to_grant: u32::from(to_grant),
        pad: 0,
    };
    // SAFETY: the hypervisor reads `copy`, live for the call; `local` per the contract.
    result(unsafe {
        raw(
            nr::GRANT_OP,
            abi::hypercall::GrantOp::Copy as u64,
            &copy as *const _ as u64,
            0,
            0,
            0,
        )
    })
}

fn memory(op: abi::hypercall::MemoryOp, list: u64, count: u64) -> Result<u64, Errno> {
    // SAFETY: the caller's list (if any) is a live buffer of `count` frame numbers.
    result(unsafe { raw(nr::MEMORY_OP, op as u64, list, count, 0, 0) })
}

/// Takes `frames.len()` more frames; their numbers are written to `frames`. Returns how
/// many were taken.
pub fn increase_reservation(frames: &mut [u64]) -> Result<usize, Errno> {
    memory(
        abi::hypercall::MemoryOp::IncreaseReservation,
        frames.as_mut_ptr() as u64,
        frames.len() as u64,
    )
    .map(|n| n as usize)
}

/// Gives back the frames listed; returns how many were given back.
pub fn decrease_reservation(frames: &[u64]) -> Result<usize, Errno> {
    memory(
        abi::hypercall::MemoryOp::DecreaseReservation,
        frames.as_ptr() as u64,
        frames.len() as u64,
    )
    .map(|n| n as usize)
}

/// Frames this domain holds now.
pub fn current_reservation() -> Result<u64, Errno> {
    memory(abi::hypercall::MemoryOp::CurrentReservation, 0, 0)
}

/// The most frames this domain may hold.
pub fn maximum_reservation() -> Result<u64, Errno> {
    memory(abi::hypercall::MemoryOp::MaximumReservation, 0, 0)
}

/// Applies a batch of validated page-table updates; returns how many were applied.
///
/// # Safety
/// Changing the page tables changes what the program's addresses mean: the caller must not
/// unmap or remap memory that Rust code still refers to.
pub unsafe fn mmu_update(updates: &[abi::mm::MmuUpdate]) -> Result<usize, Errno> {
    // SAFETY: the hypervisor only reads `updates`, a live slice; the mapping changes are the
    // caller's responsibility.
    result(unsafe {
        raw(
            nr::MMU_UPDATE,
            updates.as_ptr() as u64,
            updates.len() as u64,
            0,
            0,
            0,
        )
    })
    .map(|n| n as usize)
}

/// Sets the level-1 entry mapping `va` to `pte` (0 unmaps).
///
/// # Safety
/// As for [`mmu_update`].
pub unsafe fn update_va_mapping(va: u64, pte: u64) -> Result<u64, Errno> {
    // SAFETY: no guest memory is read; the mapping change is the caller's responsibility.
    result(unsafe { raw(nr::UPDATE_VA_MAPPING, va, pte, 0, 0, 0) })
}

/// Sleeps until one of `ports` is pending (or the timer or another event): see
/// `abi::hypercall::SchedOp::Poll`. Returns whether one of them was pending at once.
#[cfg(not(feature = "linux"))]
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
#[cfg(not(feature = "linux"))]
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
#[cfg(not(feature = "linux"))]
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

// The Linux back end (feature `linux`, `crate::linux`): the same calls as Linux system calls.
#[cfg(feature = "linux")]
pub use crate::linux::{
    block, console_write, evtchn_alloc_unbound, evtchn_bind, evtchn_send, grant_access,
    grant_copy_from, grant_copy_to, grant_map, grant_unmap, poll, shutdown, vcpu_down, yield_now,
};

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
