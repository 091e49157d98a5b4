//! Hypercall dispatch: from the `syscall` entry to the handler of each number.
//!
//! Every guest pointer is checked to lie in the guest's half before it is touched, and is
//! touched only through `arch::guest`, which survives an unmapped page: a wild
//! pointer gets `Errno::Fault`, never a hypervisor crash.

use core::sync::atomic::Ordering;

use abi::control::DomainState;
use abi::error::Errno;
use abi::hypercall::{self, CONSOLE_CALL_BYTES, CONSOLE_CHUNK, SchedOp, VcpuOp};
use kerncore::cmdline::SelfTest;

use crate::arch::guest::copy_from_guest;
use crate::arch::trap::TrapFrame;
use crate::domain::{Domain, Stop, Vcpu};
use crate::pv::control;
use crate::{console, schedule, time};

/// How a hypercall ends.
pub enum Outcome {
    /// Done: this goes back in RAX.
    Return(Result<u64, Errno>),
    /// Preempted part-way (Xen's `hypercall_create_continuation`): the guest re-executes
    /// its `syscall` with these first two arguments (RDI, RSI), after whatever interrupts
    /// and upcalls are due.
    Continue { a0: u64, a1: u64 },
    /// The last part of a continued call: this goes back in RAX, and RDI and RSI get back
    /// the arguments the guest first passed, so that it finds its registers as a call that
    /// was never preempted leaves them (no register comes back with a value the guest did
    /// not put there, the fuzzer's rule).
    Finish {
        result: Result<u64, Errno>,
        a0: u64,
        a1: u64,
    },
}

/// Carries out hypercall `nr` (RAX) with the arguments in `frame` for `vcpu`. Inlined
/// into one entry of `trap`'s hypercall table per number, where `nr` is a constant and the
/// `match` folds away (Xen's `hypercall_table`).
#[inline(always)]
pub fn handle(nr: u64, vcpu: &Vcpu, domain: &Domain, frame: &TrapFrame) -> Outcome {
    let (a0, a1, a2, a3) = (frame.rdi, frame.rsi, frame.rdx, frame.r10);
    Outcome::Return(match nr {
        hypercall::CONSOLE_WRITE => console_write(domain, a0, a1),
        hypercall::SCHED_OP => sched_op(vcpu, domain, a0, a1, a2),
        hypercall::SET_TIMER => {
            schedule::set_timer(vcpu, a0);
            Ok(0)
        }
        hypercall::VCPU_OP => vcpu_op(vcpu, domain, a0, a1),
        hypercall::NULL => Ok(0),
        hypercall::SET_CALLBACK => crate::pv::upcall::set_callback(vcpu, a0),
        hypercall::GRANT_OP => crate::pv::grant_table::grant_op(vcpu, a0, a1, a2, a3, frame.r8),
        hypercall::MMU_UPDATE => return crate::pv::mmu::mmu_update(vcpu, a0, a1),
        hypercall::UPDATE_VA_MAPPING => crate::pv::mmu::update_va_mapping(vcpu, a0, a1),
        hypercall::MEMORY_OP => return crate::pv::mmu::memory_op(vcpu, a0, a1, a2),
        hypercall::EVTCHN_OP => crate::domain::event_channel::evtchn_op(domain, a0, a1, a2),
        hypercall::DOMCTL | hypercall::SYSCTL => {
            if !domain.privileged {
                return Outcome::Return(Err(Errno::Perm));
            }
            control::call(nr == hypercall::DOMCTL, a0, a1, a2, a3)
        }
        _ => Err(Errno::NoSys),
    })
}

/// `console_write(ptr, len)`: logs up to [`CONSOLE_CHUNK`] bytes, one log line per `\n`,
/// guest text shown through `abi::hypercall::console_text` (control characters escaped).
///
/// Each line is charged at what it costs the shared serial port (its text as shown, the log
/// prefix and the domain's name, `abi::hypercall::console_line_cost`), not at the bytes the
/// guest passed: a byte of `\n` is a whole log line, so 8 KiB of newlines once got 8192
/// lines (~400 KB of serial output, ~44 times the quota) out of one burst (`xtf-sched`'s
/// `console-lines`). Xen's `guest_console_write` rate-limits by the same serial output.
///
/// Two bounds apply, line by line: one call writes at most [`CONSOLE_CALL_BYTES`] serial
/// bytes, every domain's (how far one call can put the port behind: 256 empty lines were
/// ~11 KB in one call, about 1 s of a 115200-baud UART; `xtf-sched`'s `console-bound`), and
/// an unprivileged domain's quota. The lines that fit are logged into the console's ring and
/// their bytes counted (a short write); a first line that alone is over the call's bound is
/// cut at a character boundary and its head logged; if not even that fits the quota, or the
/// ring's half for guests' text: `Again`.
#[inline(never)] // kept out of the hypercall fast path
fn console_write(domain: &Domain, ptr: u64, len: u64) -> Result<u64, Errno> {
    use abi::hypercall::{console_line_cost, console_text_len};
    use core::sync::atomic::Ordering;
    let mut buf = [0u8; CONSOLE_CHUNK];
    let n = (len as usize).min(CONSOLE_CHUNK);
    copy_from_guest(&mut buf[..n], ptr)?;
    let now = time::now_ns();
    let name = domain.name.len();
    let (mut done, mut spent) = (0, 0);
    for line in buf[..n].split_inclusive(|&b| b == b'\n') {
        let mut text = line.strip_suffix(b"\n").unwrap_or(line);
        let mut taken = line.len();
        let mut cost = console_line_cost(name, console_text_len(text));
        if spent + cost > CONSOLE_CALL_BYTES {
            if done > 0 {
                break;
            }
            // The longest head that fits (escaped controls show as four bytes each), cut
            // before a UTF-8 continuation byte: the rest comes in the next call.
            let room = CONSOLE_CALL_BYTES - console_line_cost(name, 0);
            let (mut lo, mut hi) = (0, text.len());
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if console_text_len(&text[..mid]) <= room {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            while lo > 0 && text[lo] & 0xc0 == 0x80 {
                lo -= 1;
            }
            text = &text[..lo];
            taken = lo;
            cost = console_line_cost(name, console_text_len(text));
            if taken == 0 {
                break;
            }
        }
        // Every domain shares one serial port: an unprivileged domain gets a quota
        // (`crate::domain::CONSOLE_BURST_BYTES`, then `CONSOLE_BYTES_PER_SEC`), and output
        // over it is refused, said once in the log. The console's ring first, then the
        // quota: a line the ring refuses costs no quota.
        if !domain.privileged && !console::has_room_for_guest(cost) {
            if domain
                .console_refused
                .fetch_add((n - done) as u64, Ordering::Relaxed)
                == 0
            {
                log::warn!(
                    "[{}] console output refused: the serial port is seconds behind guests' \
                     text",
                    domain.name
                );
            }
            break;
        }
        if !domain.privileged && !domain.console_quota.lock().take(cost as u64, now) {
            let refused = (n - done) as u64;
            if domain.console_refused.fetch_add(refused, Ordering::Relaxed) == 0 {
                log::warn!(
                    "[{}] console output over its quota ({} bytes, then {} a second, each \
                     line counted with its log prefix): refused",
                    domain.name,
                    crate::domain::CONSOLE_BURST_BYTES,
                    crate::domain::CONSOLE_BYTES_PER_SEC
                );
            }
            break;
        }
        // Into the console's ring, which feeds the serial port as it has room: the call
        // costs a copy, not the port's time. Refused when guests' text fills the ring as
        // far as it may (the port is seconds behind): the rest of the call is refused too.
        let shown = format_args!("[{}] {}", domain.name, Shown(text));
        if !console::write_guest(domain.privileged, cost, shown) {
            break;
        }
        done += taken;
        spent += cost;
        if taken < line.len() {
            break;
        }
    }
    if done == 0 && n > 0 {
        return Err(Errno::Again);
    }
    Ok(done as u64)
}

/// Guest bytes shown as text (`abi::hypercall::console_text`): valid UTF-8 as it is, each
/// invalid sequence as U+FFFD, control characters escaped as `\xNN`.
struct Shown<'a>(&'a [u8]);

impl core::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        abi::hypercall::console_text(f, self.0)
    }
}

/// `selftest=slow-poll`: `SchedOp::Poll` holds its CPU this long (interrupts off) between
/// marking its vCPU polling and looking at its ports, while other vCPUs' events wake it.
const SLOW_POLL_US: u64 = 200;

fn sched_op(vcpu: &Vcpu, domain: &Domain, op: u64, arg: u64, arg2: u64) -> Result<u64, Errno> {
    let now = time::now_ns();
    match SchedOp::from_raw(op).ok_or(Errno::NoSys)? {
        SchedOp::Yield => {
            schedule::yield_current(vcpu, now);
            Ok(0)
        }
        SchedOp::Block => {
            // A poll's mark left by a wake-up of its timer or its own ports (`Poll` below):
            // gone, so that another port's event does not end this block.
            let me = 1u64 << vcpu.index;
            if domain.polling.load(Ordering::Relaxed) & me != 0 {
                domain.polling.fetch_and(!me, Ordering::SeqCst);
            }
            if schedule::take_due_timer(vcpu, domain, now) {
                schedule::count_set_timer(vcpu, false);
                return Ok(0);
            }
            schedule::stop(vcpu, Stop::Block, now);
            // An event sent or a timer fired before the vCPU was marked blocked found
            // nothing to wake: look again now that it is (the sender marks pending, then
            // wakes; SeqCst on both; the timer is marked FIRED, then wakes). An event found
            // here marks the vCPU's upcall flag, should its sender not have yet, so that
            // the way back enters the upcall (`Domain::mark_if_pending`).
            let at_once =
                domain.mark_if_pending(vcpu.index) || schedule::take_due_timer(vcpu, domain, now);
            if at_once {
                schedule::wake(vcpu, now);
            }
            schedule::count_set_timer(vcpu, !at_once);
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
            let any_pending = |d: &Domain| ports.clone().any(|p| d.is_pending(p));
            if any_pending(domain) {
                schedule::count_set_timer(vcpu, false);
                return Ok(1);
            }
            // Like Block: a timer that already fired ends the poll (Xen's SCHEDOP_poll
            // returns on the timeout too), or the vCPU would sleep forever.
            if schedule::take_due_timer(vcpu, domain, now) {
                schedule::count_set_timer(vcpu, false);
                return Ok(0);
            }
            // Blocked first, then marked polling, then a look at its ports (Xen's
            // `do_poll` order): an event after the mark wakes it whatever port it is on
            // (`Domain::wake_pollers`, which takes the mark), and one before it is seen by
            // the look (SeqCst on both sides). Marked before the block, a wake of the still
            // running vCPU by another port's event took the mark and did nothing, and the
            // vCPU then slept unmarked through the event it polled for (a review of
            // session 21; hostile-sched `poll-wakes`' third round).
            schedule::stop(vcpu, Stop::Block, now);
            let me = 1u64 << vcpu.index;
            domain.polling.fetch_or(me, Ordering::SeqCst);
            time::stall(SelfTest::SlowPoll, SLOW_POLL_US);
            // As for Block: an event sent or a timer fired before the vCPU was marked.
            let at_once = any_pending(domain)
                || domain.mark_if_pending(vcpu.index)
                || schedule::take_due_timer(vcpu, domain, now);
            if at_once {
                domain.polling.fetch_and(!me, Ordering::SeqCst);
                schedule::wake(vcpu, now);
            }
            schedule::count_set_timer(vcpu, !at_once);
            // Asleep, marked: the mark goes with the wake-up of any event of the domain.
            // Woken otherwise (its timer not bound to a port, a pause, a kill), it keeps
            // the mark until the next event, or its next block (a return the ABI allows;
            // Xen's stays in `poll_mask` the same way).
            Ok(0)
        }
        SchedOp::Shutdown => {
            control::shutdown_domain(vcpu.domain, arg);
            Ok(0)
        }
    }
}

#[inline(never)] // kept out of the hypercall fast path
fn vcpu_op(vcpu: &Vcpu, domain: &Domain, op: u64, which: u64) -> Result<u64, Errno> {
    let now = time::now_ns();
    match VcpuOp::from_raw(op).ok_or(Errno::NoSys)? {
        // Down and paused are two things, as in Xen (`_VPF_down` beside the domain's
        // `pause_count`, `common/domain.c`; here `kerncore::runstate`): `Up` undoes the guest's
        // own `Down` only. It once
        // unpaused any paused vCPU of its domain, Domain0's pause included: while Domain0
        // stopped a domain's vCPUs one by one, one not yet stopped started those already
        // stopped again, and the domain ran through its pause while Domain0 spun in the
        // pause's wait for its CPUs to let go (`xtf-pause.toml`).
        VcpuOp::Up => {
            let target = domain.vcpus.get(which as usize).ok_or(Errno::Inval)?;
            // Under the life lock that a pause takes to mark the domain paused, so that a
            // vCPU brought up while Domain0 pauses its domain comes up paused, not running
            // (`kerncore::runstate`: `up` acts on a vCPU that is down, nothing else).
            let life = domain.life.lock();
            schedule::up(target, life.state == DomainState::Paused, now);
            Ok(0)
        }
        VcpuOp::Down => {
            schedule::stop(vcpu, Stop::Down, now);
            Ok(0)
        }
    }
}
