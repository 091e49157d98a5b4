//! What the hypervisor does with a trap, once the architecture layer has saved the state.
//!
//! An exception in a guest kills that domain, with the reason logged and kept for Domain0;
//! the CPU then runs something else. An exception in the hypervisor is fatal, except a page
//! fault inside the guest-memory copy, which resumes at its fix-up. Interrupts are handed to
//! their owners (the timer to the scheduler, IPIs to `smp`), and a reschedule they asked for
//! happens on the way back to the guest.

use abi::control::KillReason;

use crate::arch::entry::copy_fixup;
use crate::arch::trap::{TrapFrame, fatal_exception};
use crate::{control, schedule};

const GENERAL_PROTECTION: u64 = 13;
const PAGE_FAULT: u64 = 14;

/// An exception (vectors 0 to 31).
pub fn exception(frame: &mut TrapFrame) {
    if !frame.came_from_user() {
        if frame.vector == PAGE_FAULT
            && let Some(fixup) = copy_fixup(frame.rip)
        {
            frame.rip = fixup;
            return;
        }
        fatal_exception(frame);
    }
    let reason = match frame.vector {
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
    schedule::reschedule(frame, false);
}

/// An external interrupt or IPI (vectors 32 to 255).
pub fn interrupt(vector: u8, frame: &mut TrapFrame) {
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
        smp::vectors::SPURIOUS => return,
        other => {
            log::warn!("unexpected interrupt vector {other:#x}");
            smp::apic::eoi();
        }
    }
    if frame.came_from_user() {
        if schedule::must_reschedule() {
            schedule::reschedule(frame, false);
        }
        // Entering the upcall may have killed the domain (a stack it could not take).
        if schedule::with_current(|v| crate::upcall::deliver(v, frame)) == Some(true)
            && schedule::must_reschedule()
        {
            schedule::reschedule(frame, false);
        }
    }
}
