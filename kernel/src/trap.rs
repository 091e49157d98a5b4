//! What the hypervisor does with a trap, once the architecture layer has saved the state.
//!
//! An exception in a guest kills that domain, with the reason logged and kept for Domain0;
//! the CPU then runs something else. An exception in the hypervisor is fatal, except a page
//! fault inside the guest-memory copy, which resumes at its fix-up. Interrupts are handed to
//! their owners (the timer to the scheduler, IPIs to `smp`), and a reschedule they asked for
//! happens on the way back to the guest.

use abi::control::KillReason;

use crate::arch::entry::copy_fixup;
use crate::arch::trap::{TrapFrame, exit_frame_ok, fatal_exception};
use crate::domain::control;
use crate::pv::upcall;
use crate::schedule::{self, Next};

const DEBUG: u64 = 1;
const NMI: u64 = 2;
const GENERAL_PROTECTION: u64 = 13;
const PAGE_FAULT: u64 = 14;

/// An exception (vectors 0 to 31).
pub fn exception(frame: &mut TrapFrame, vector: u64) -> Next {
    if vector == NMI {
        if schedule::watchdog_nmi() {
            log::error!("watchdog: this CPU was stuck in the hypervisor; where it was:");
            fatal_exception(frame);
        }
        // Nothing else sends NMIs; one from elsewhere (a chipset) is not the guest's fault.
        log::warn!("NMI ignored (rip {:#x})", frame.rip);
        return Next::Same;
    }
    if !frame.came_from_user() {
        if vector == PAGE_FAULT
            && let Some(fixup) = copy_fixup(frame.rip)
        {
            frame.rip = fixup;
            return Next::Same;
        }
        if vector == DEBUG && crate::arch::entry::is_syscall_entry(frame.rip) {
            // A single-step trap raised by a guest's TF on the `syscall` that entered the
            // hypervisor: the CPU reports it on our first instruction (SFMASK has already
            // cleared TF, so it does not repeat). Nothing to step: carry on.
            return Next::Same;
        }
        fatal_exception(frame);
    }
    let reason = match vector {
        // An `int N` through a gate a guest may not use reports the gate in its error code
        // (bit 1: IDT). The instruction itself names the vector exactly; the error code
        // does on hardware (vector * 8) but not under QEMU 7.2's TCG (vector * 16).
        GENERAL_PROTECTION if frame.error_code & 0b11 == 0b10 => KillReason::SoftwareInterrupt {
            vector: software_interrupt_vector(frame.rip).unwrap_or((frame.error_code >> 3) as u8),
            rip: frame.rip,
        },
        GENERAL_PROTECTION => KillReason::PrivilegedInstruction { rip: frame.rip },
        PAGE_FAULT => KillReason::PageFault {
            addr: x86_64::registers::control::Cr2::read_raw(),
            rip: frame.rip,
        },
        vector => KillReason::Exception {
            vector: vector as u8,
            rip: frame.rip,
        },
    };
    match schedule::current() {
        Some(v) => control::kill_domain(v.domain, reason),
        None => fatal_exception(frame),
    }
    // The killed vCPU is no longer runnable: switch to something else.
    let next = schedule::reschedule(frame, false);
    leave(frame, false, next)
}

/// The vector of the software-interrupt instruction at guest address `rip` (`int N`,
/// `int3`, `into`), read from the guest's memory; `None` if it is not one or cannot be read.
fn software_interrupt_vector(rip: u64) -> Option<u8> {
    let mut insn = [0u8; 2];
    crate::pv::hypercall::copy_from_guest(&mut insn, rip).ok()?;
    match insn {
        [0xcd, vector] => Some(vector),
        [0xcc, _] => Some(3),
        [0xce, _] => Some(4),
        _ => None,
    }
}

/// An external interrupt or IPI (vectors 32 to 255).
pub fn interrupt(vector: u8, frame: &mut TrapFrame) -> Next {
    match vector {
        smp::vectors::TIMER => {
            smp::apic::eoi();
            schedule::on_timer_interrupt();
        }
        smp::vectors::RESCHEDULE => {
            // The sender set this CPU's flag; the check below acts on it.
            smp::apic::eoi();
        }
        smp::vectors::CALL_FUNCTION => {
            smp::ipi::handle_call_function_ipi();
            smp::apic::eoi();
        }
        smp::vectors::SPURIOUS => return Next::Same,
        other => {
            log::warn!("unexpected interrupt vector {other:#x}");
            smp::apic::eoi();
        }
    }
    if frame.came_from_user() {
        leave(frame, false, Next::Same)
    } else {
        Next::Same
    }
}

/// The way back to a guest, shared by every entry from ring 3 (hypercall, exception,
/// interrupt): a reschedule if one is due, the event upcall if the vCPU going back has one
/// waiting, and a last check of the frame that will be restored. `next` is what the entry
/// has done to the frame so far.
pub fn leave(frame: &mut TrapFrame, from_hypercall: bool, mut next: Next) -> Next {
    if next == Next::Idle {
        return next;
    }
    if schedule::must_reschedule() {
        next = next.then(schedule::reschedule(frame, from_hypercall));
        if next == Next::Idle {
            return next;
        }
    }
    if schedule::with_current(|vcpu| upcall::deliver(vcpu, frame)) == Some(true) {
        next = next.then(Next::Switched);
        // Entering the upcall may have killed the domain (a stack it could not take).
        if schedule::must_reschedule() {
            next = next.then(schedule::reschedule(frame, from_hypercall));
        }
    }
    // Whatever the frame now holds goes to ring 3 through `sysretq` or `iretq`: neither may
    // fault in ring 0. A frame that fails the check kills its domain.
    while next != Next::Idle
        && let Err(reason) = exit_frame_ok(frame)
    {
        match schedule::current() {
            Some(v) => control::kill_domain(v.domain, reason),
            None => fatal_exception(frame),
        }
        next = next.then(schedule::reschedule(frame, from_hypercall));
    }
    next
}
