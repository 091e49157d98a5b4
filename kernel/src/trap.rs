//! What the hypervisor does with a trap, once the architecture layer has saved the state.
//!
//! An exception in a guest kills that domain, with the reason logged and kept for Domain0;
//! the CPU then runs something else. An exception in the hypervisor is fatal, except a page
//! fault inside the guest-memory copy, which resumes at its fix-up. Interrupts are handed to
//! their owners (the timer to the scheduler, IPIs to `smp`), and a reschedule they asked for
//! happens on the way back to the guest.

use abi::control::KillReason;

use crate::arch::entry::copy_fixup;
use crate::arch::trap::{TrapFrame, exit_frame_ok};
use crate::pv::control;
use crate::pv::{hypercall, upcall};
use crate::schedule::{self, IdleStep, Next};

/// Called by `trap_common` for every trap and interrupt, with interrupts off. Returns 1 when
/// the CPU has nothing to run (the entry code then jumps to the idle loop on a fresh
/// stack), 0 to leave through the frame. Bit 63 of `vector` is the entry code's own (GS was
/// swapped on entry from ring 0).
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) -> u64 {
    if frame.came_from_user() {
        // Back from a guest, before any of this entry's code: this CPU holds no pointer
        // read from shared state (a quiescent point, `arch::rcu`).
        crate::arch::rcu::quiescent();
    }
    let next = match frame.vector & 0xff {
        vector @ 0..=31 => exception(frame, vector),
        vector => interrupt(vector as u8, frame),
    };
    u64::from(next == Next::Idle)
}

/// The `syscall` entry's table, indexed by hypercall number (Xen's `hypercall_table`): the
/// entry code calls `HYPERCALL_TABLE[min(RAX, NR_HYPERCALLS)]`, so a number past the
/// hypercalls gets the last entry, [`syscall_unknown`]. Each other entry is
/// [`hypercall_entry`] for one number, the dispatch's `match` folded away. It returns what
/// it did to the frame as an exit code ([`exit_code`]: 0, the frame is the caller's with its
/// result; 1, it was rewritten), and does not look for a reschedule or an event: the entry
/// code does that itself, and calls [`syscall_leave`] only when one is due (Xen's
/// `test_all_events`).
#[unsafe(no_mangle)]
static HYPERCALL_TABLE: [extern "C" fn(&mut TrapFrame) -> u64;
    abi::hypercall::NR_HYPERCALLS as usize + 1] = [
    hypercall_entry::<0>,
    hypercall_entry::<1>,
    hypercall_entry::<2>,
    hypercall_entry::<3>,
    hypercall_entry::<4>,
    hypercall_entry::<5>,
    hypercall_entry::<6>,
    hypercall_entry::<7>,
    hypercall_entry::<8>,
    hypercall_entry::<9>,
    hypercall_entry::<10>,
    hypercall_entry::<11>,
    hypercall_entry::<12>,
    hypercall_entry::<13>,
    syscall_unknown,
];

/// Hypercall `NR` for the vCPU current here, its arguments and result in `frame`.
///
/// Only part of `frame` is filled when this runs (`arch::entry`'s `syscall_frame`): it may
/// read RDI, RSI, RDX, R10, R8 (the arguments), RAX, RIP, RSP and RFLAGS, and write the
/// caller-saved registers, RIP, RSP and RFLAGS, never the callee-saved ones (RBX, RBP, R12
/// to R15), the selectors or the vector; anything that needs the whole frame (a switch, an
/// upcall, the exit check) is left to [`syscall_leave`].
extern "C" fn hypercall_entry<const NR: u64>(frame: &mut TrapFrame) -> u64 {
    let next = if NR == abi::hypercall::CALLBACK_RETURN {
        // Not a call that returns a value: the frame becomes the interrupted context, to be
        // restored in full by the `iretq` path.
        let Some(()) =
            schedule::with_current(|vcpu, _| crate::pv::upcall::finish(vcpu, frame, frame.rdi))
        else {
            panic!("hypercall with no vCPU on this CPU");
        };
        Next::Switched
    } else {
        let Some(outcome) =
            schedule::with_current(|vcpu, domain| hypercall::handle(NR, vcpu, domain, frame))
        else {
            panic!("hypercall with no vCPU on this CPU");
        };
        match outcome {
            hypercall::Outcome::Return(result) => frame.rax = rax_of(result),
            hypercall::Outcome::Finish { result, a0, a1 } => {
                frame.rax = rax_of(result);
                frame.rdi = a0;
                frame.rsi = a1;
            }
            hypercall::Outcome::Continue { a0, a1 } => {
                // Back onto the `syscall` (two bytes, `0f 05`; with a prefix the last two
                // bytes are still those), RAX still the hypercall's number: the guest runs
                // it again once the interrupts and upcalls due are taken (Xen's
                // `regs->rip -= 2`).
                frame.rip -= 2;
                frame.rdi = a0;
                frame.rsi = a1;
                // What the held-off timer interrupt would have done, done here: the
                // vCPU timers due fire (their upcalls go in on the way out) and a slice
                // that ended ends. Its interrupt, pending since, is not reliably taken
                // between the `sysretq` and the `syscall` it returns onto (under QEMU TCG
                // a timer 500 us into a 5 ms `memory_op` came at its end, past every
                // continuation); Xen's exit path runs its softirqs, timers among them.
                schedule::run_due_timers();
            }
        }
        Next::Same
    };
    exit_code(next)
}

/// A hypercall number past the table: `Errno::NoSys`.
extern "C" fn syscall_unknown(frame: &mut TrapFrame) -> u64 {
    frame.rax = rax_of(Err(abi::error::Errno::NoSys));
    exit_code(Next::Same)
}

/// Called by the `syscall` entry after the hypercall when the way out needs more than
/// `sysretq`: a reschedule is due, an event is pending for the vCPU, the frame was
/// rewritten (`code` 1), or its return address is not the guest's. Returns what the exit
/// path does: 0, back by `sysretq`; 1, by `iretq`, which restores every register; 2,
/// nothing to run: idle.
///
/// The fast path that skips this leaves through a frame the `syscall` entry built from the
/// CPU's own state (RIP from RCX, RFLAGS from R11, the guest selectors) and the guest's
/// RSP, which a hypercall changes only in RAX, RDI and RSI, or by moving RIP back onto its
/// `syscall`; so the frame check ([`exit_frame_ok`]) has nothing to find there but a return
/// address outside the guest's half or a non-canonical stack pointer, which the entry code
/// tests itself and sends here.
#[unsafe(no_mangle)]
extern "C" fn syscall_leave(frame: &mut TrapFrame, code: u64) -> u64 {
    let next = if code == 0 {
        Next::Same
    } else {
        Next::Switched
    };
    exit_code(leave(frame, true, next))
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
    u64::from(leave(frame, true, next.then(Next::Switched)) == Next::Idle)
}

/// A hypercall's result as RAX carries it: the value, or the negative `Errno`.
fn rax_of(result: Result<u64, abi::error::Errno>) -> u64 {
    match result {
        Ok(value) => value,
        Err(e) => e.to_ret() as u64,
    }
}

fn exit_code(next: Next) -> u64 {
    match next {
        Next::Same => 0,
        Next::Switched => 1,
        Next::Idle => 2,
    }
}

/// Reports an exception the hypervisor cannot recover from, and stops the machine.
fn fatal_exception(frame: &TrapFrame) -> ! {
    crate::console::emergency();
    crate::arch::trap::fatal_exception(frame)
}

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
    crate::arch::guest::copy_from_guest(&mut insn, rip).ok()?;
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
            schedule::on_timer_interrupt(frame.came_from_user());
        }
        smp::vectors::RESCHEDULE => {
            // The sender set this CPU's flag; the check below acts on it.
            smp::apic::eoi();
        }
        smp::vectors::CALL_FUNCTION => {
            // `selftest=slow-snapshot`: this CPU stops for a held snapshot 50 ms late, as an
            // emulated CPU whose thread the host descheduled does.
            if smp::ipi::hold_asked() {
                crate::time::stall(kerncore::cmdline::SelfTest::SlowSnapshot, 50_000);
            }
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
    if schedule::with_current(|vcpu, _| upcall::deliver(vcpu, frame)) == Some(true) {
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

/// The loop a CPU runs when it has no vCPU: look for work, else sleep until an interrupt.
/// The entry code jumps here, on a fresh stack, whenever an entry ends in [`Next::Idle`].
#[unsafe(no_mangle)]
extern "C" fn idle_loop() -> ! {
    loop {
        // Nothing is held from the last turn: a quiescent point (`arch::rcu`).
        crate::arch::rcu::quiescent();
        let now = crate::time::now_ns();
        match schedule::idle_step(now) {
            IdleStep::Enter(mut frame) => {
                // The way back to a guest that every entry takes (after the address space is
                // loaded: the upcall frame goes onto the guest's stack), a reschedule
                // included: entering the upcall can kill the domain (a stack that cannot take
                // the frame), and the dead vCPU must not be entered. It once was (the upcall
                // delivered here and its result ignored): it ran on until its next trap and
                // made hypercalls as a dead domain (`xtf-idle.toml`, `upcall-idle`).
                if leave(&mut frame, false, Next::Switched) == Next::Idle {
                    continue;
                }
                crate::arch::entry::enter_guest(&frame);
            }
            IdleStep::Refuse(domain, reason) => control::kill_domain(domain, reason),
            IdleStep::Again => {}
            IdleStep::Sleep => schedule::idle_sleep(now),
        }
    }
}
