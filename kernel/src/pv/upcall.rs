//! Event upcalls: entering a guest's event callback on the way back to it, and leaving one
//! (`callback_return`), the way Xen delivers events to paravirtualized guests.
//!
//! Whenever a CPU is about to return to a vCPU that registered a callback, [`deliver`] looks
//! at the vCPU's `upcall_pending` and `upcall_mask` in the counters page
//! ([`abi::shared::VcpuEvents`]). If an event is pending and not masked, it pushes an
//! [`UpcallFrame`] with the interrupted RIP, RSP, RFLAGS and every caller-saved register on
//! the guest stack (below the red zone), masks further upcalls, and resumes the guest at the
//! callback instead. The callback handles its events and calls `callback_return` with the
//! frame's address, which [`finish`] restores.
//!
//! Vector registers: when the interrupted context was asynchronous (an interrupt or a
//! switch, so its x87/SSE state is live guest state), a copy of that state is kept here and
//! restored by `callback_return`, so a callback written in Rust may use SSE freely. When the
//! upcall follows a hypercall, the vector registers were caller-saved anyway.

use alloc::boxed::Box;
use core::sync::atomic::Ordering;

use abi::control::KillReason;
use abi::layout::USER_LIMIT;
use abi::shared::UpcallFrame;

use crate::arch;
use crate::arch::guest::{Plain, copy_from_guest, copy_value_to_guest};
use crate::arch::trap::TrapFrame;
use crate::domain::Vcpu;
use crate::pv::control;

/// The guest's red zone (System V ABI): the upcall frame goes below it.
const RED_ZONE: u64 = 128;
/// RFLAGS bits a guest may set: CF, PF, AF, ZF, SF, DF, OF (not TF, IOPL, NT, AC, ...).
const USER_FLAGS: u64 = 0x0cd5;
/// RFLAGS of a guest: interrupts on, and bit 1, which is always set.
const BASE_FLAGS: u64 = 0x202;

/// If `v`, about to be resumed with `frame` on this CPU (its address space loaded), has an
/// unmasked event pending and a callback, rewrites `frame` to enter the callback. Returns
/// whether it did, or killed the domain instead (a stack that cannot take the frame): then
/// the caller must reschedule. Every return to a guest passes here, so the common case (no
/// callback) is one load, inlined.
#[inline(always)]
pub fn deliver(v: &Vcpu, frame: &mut TrapFrame) -> bool {
    let entry = v.callback.load(Ordering::Relaxed);
    entry != 0 && enter(v, frame, entry)
}

fn enter(v: &Vcpu, frame: &mut TrapFrame, entry: u64) -> bool {
    if !frame.came_from_user()
        || v.upcall_pending().load(Ordering::SeqCst) == 0
        || v.upcall_mask().load(Ordering::SeqCst) != 0
    {
        return false;
    }
    let saved = UpcallFrame {
        rax: frame.rax,
        rcx: frame.rcx,
        rdx: frame.rdx,
        rsi: frame.rsi,
        rdi: frame.rdi,
        r8: frame.r8,
        r9: frame.r9,
        r10: frame.r10,
        r11: frame.r11,
        rflags: frame.rflags,
        rip: frame.rip,
        rsp: frame.rsp,
    };
    let at = frame
        .rsp
        .wrapping_sub(RED_ZONE + core::mem::size_of::<UpcallFrame>() as u64)
        & !0xf;
    if at >= frame.rsp || copy_value_to_guest(at, &saved).is_err() {
        control::kill_domain(
            v.domain,
            KillReason::BadUpcall {
                rip: frame.rip,
                rsp: frame.rsp,
            },
        );
        return true;
    }
    v.upcall_mask().store(1, Ordering::SeqCst);
    if arch::percpu::fpu_restore_pending() {
        // The interrupted context's vector registers are live guest state (in `v.fpu`, to
        // be loaded on the way out): keep a copy for `callback_return`.
        let mut state = v.upcall.lock();
        state.saved_fpu = arch::percpu::current_fpu_snapshot().map(Box::new);
    }
    frame.rip = entry;
    frame.rsp = at;
    frame.rdi = at;
    frame.rflags = BASE_FLAGS;
    true
}

/// `callback_return(frame_at)`: restores the context saved at guest address `frame_at` into
/// `frame` and unmasks upcalls (the hypercall exit then enters the callback again if another
/// event is pending).
/// A bad frame kills the domain (the caller then reschedules).
pub fn finish(v: &Vcpu, frame: &mut TrapFrame, frame_at: u64) {
    let mut saved = UpcallFrame::default();
    let ok = copy_from_guest(saved.as_bytes_mut(), frame_at).is_ok()
        && saved.rip < USER_LIMIT
        && saved.rsp < USER_LIMIT;
    if !ok {
        control::kill_domain(
            v.domain,
            KillReason::BadUpcall {
                rip: saved.rip,
                rsp: saved.rsp,
            },
        );
        return;
    }
    frame.rax = saved.rax;
    frame.rcx = saved.rcx;
    frame.rdx = saved.rdx;
    frame.rsi = saved.rsi;
    frame.rdi = saved.rdi;
    frame.r8 = saved.r8;
    frame.r9 = saved.r9;
    frame.r10 = saved.r10;
    frame.r11 = saved.r11;
    frame.rip = saved.rip;
    frame.rsp = saved.rsp;
    frame.rflags = (saved.rflags & USER_FLAGS) | BASE_FLAGS;
    if let Some(fpu) = v.upcall.lock().saved_fpu.take() {
        arch::percpu::restore_fpu_on_exit(&fpu);
    }
    v.upcall_mask().store(0, Ordering::SeqCst);
}

/// Registers (or with 0, removes) `v`'s callback; `v` is the caller, current on this CPU.
pub fn set_callback(v: &Vcpu, entry: u64) -> Result<u64, abi::error::Errno> {
    if entry >= USER_LIMIT {
        return Err(abi::error::Errno::Inval);
    }
    // SeqCst, against `Domain::notify_vcpu`'s sender, which sets the upcall flag and then
    // reads this to decide on an IPI, while this CPU's way out reads the flag next: relaxed,
    // the store could wait in this CPU's store buffer while both reads missed the other's
    // write, and the upcall waited for the vCPU's next entry (an audit of session 22;
    // reordering, not timing: no stall can widen it, so no test shows it).
    v.callback.store(entry, Ordering::SeqCst);
    crate::schedule::callback_changed(v);
    Ok(0)
}
