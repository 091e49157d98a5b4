//! The scheduling trace: per-CPU buffers of timestamped events, in the manner of xentrace.
//!
//! With `trace=on` on the command line, the scheduler records every run start, every stop
//! (and why: preempted, yielded, blocked, dead) and every wake-up into the buffer of the CPU
//! where it happened, and each interrupt the CPU took [`LATE_FROM_NS`] or more late (a
//! `late` mark: the host's stalls of the CPU under emulation, which `schedsim` replays). Recording takes this CPU's buffer lock (never contended: only its own
//! CPU writes it) and appends 24 bytes to a buffer allocated up front, so it is cheap enough
//! to leave on. A vCPU's trace ends where its quota ([`EVENTS_PER_VCPU`]) ran out or a full
//! buffer first dropped one of its events, with a [`TraceEvent::Full`] mark there either way:
//! no vCPU's trace loses events silently, or goes on past a hole. At shutdown the buffers go out on
//! the console as `@trace` lines (`abi::tool::console::TRACE_PREFIX`), which the runner turns into
//! Chrome/Perfetto trace JSON.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use abi::tool::console::{LATE_FROM_NS, LateOf, TRACE_PREFIX, TraceEvent};
use crossbeam_utils::CachePadded;
use spin::{Mutex, Once};

use crate::console;
use crate::domain::Vcpu;

/// Events kept per CPU (24 bytes each).
const EVENTS_PER_CPU: usize = 128 * 1024;

/// Events kept per vCPU over the whole run: trace space is charged to the vCPU whose events
/// fill it, so a guest in a yield storm loses its own events past this, not its
/// neighbours', while fewer than four such vCPUs share a CPU (four fill its buffer; past
/// that, a neighbour whose event the full buffer drops has its trace end there, marked). A latency domain waking every
/// millisecond makes about 2,800 a second (wake, run, stop, and a policy's priority
/// changes: 17,615 in a 6.3 s run under credit): 16 Ki cut its trace before the end of the
/// 6 s runs `schedsim --replay` is checked on, the replay then running on without its
/// arrivals. The last slot holds a [`TraceEvent::Full`] mark, which says so.
pub const EVENTS_PER_VCPU: u32 = 32 * 1024;

/// `late` marks kept per CPU over the whole run: they are charged to no vCPU, so a CPU
/// the host stalls all the time fills at most this much of its buffer with them; vCPUs'
/// events leave them that much room.
pub const LATE_PER_CPU: u32 = 4 * 1024;

/// [`TraceEvent::Full`] marks a CPU keeps apart for the vCPUs whose events its full buffer
/// dropped (one per vCPU, at its first loss): room for every vCPU there can be.
const LOST_PER_CPU: usize = sched::limits::MAX_VCPUS_TOTAL;

/// Set in a vCPU's `trace_events` once a full buffer dropped one of its events: its later
/// events are then over its quota, its trace having ended with a mark.
const LOST: u64 = 1 << 62;

#[derive(Clone, Copy)]
struct Event {
    ts_ns: u64,
    what: What,
}

#[derive(Clone, Copy)]
enum What {
    /// A vCPU's event.
    Vcpu {
        domain: u32,
        vcpu: u32,
        event: TraceEvent,
    },
    /// An interrupt due at the event's time came this many ns late ([`TraceEvent::Late`]).
    Late(u64, LateOf),
}

#[derive(Default)]
struct Buffer {
    events: Vec<Event>,
    /// The [`TraceEvent::Full`] marks of the vCPUs whose events this buffer dropped, full.
    lost: Vec<Event>,
    dropped: u64,
    /// vCPUs whose loss found no room left in `lost` (their traces end unmarked).
    unmarked: u64,
    /// Events not kept because their vCPU had used its [`EVENTS_PER_VCPU`], or `late`
    /// marks past [`LATE_PER_CPU`].
    over_quota: u64,
    /// `late` marks kept.
    late: u32,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// One buffer per CPU, indexed by CPU index; on the heap, sized to the CPUs there are.
static BUFFERS: Once<Vec<CachePadded<Mutex<Buffer>>>> = Once::new();

/// Turns tracing on, with a buffer for each of the first `cpus` CPUs. Called once at boot.
pub fn enable(cpus: usize) {
    BUFFERS.call_once(|| {
        (0..cpus)
            .map(|_| {
                CachePadded::new(Mutex::new(Buffer {
                    events: Vec::with_capacity(EVENTS_PER_CPU),
                    lost: Vec::with_capacity(LOST_PER_CPU),
                    ..Buffer::default()
                }))
            })
            .collect()
    });
    ENABLED.store(true, Ordering::Release);
}

/// The policy's trace hook (`sched::TraceHook`): its priority changes, as events.
pub fn policy_hook(v: sched::VcpuId, what: &'static str, now: u64) {
    if let (Some(event), Some(vcpu)) = (TraceEvent::from_name(what), crate::domain::vcpu(v.0)) {
        record(event, &vcpu, now);
    }
}

/// Records `event` for `v` at `now` on this CPU (nothing if tracing is off); in the last
/// slot of `v`'s quota, a [`TraceEvent::Full`] mark instead. If this CPU's buffer is full,
/// `v`'s trace ends here: a mark kept apart, and its later events over its quota.
pub fn record(event: TraceEvent, v: &Vcpu, now: u64) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let n = v.trace_events.fetch_add(1, Ordering::Relaxed);
    let quota = u64::from(EVENTS_PER_VCPU);
    let of_v = |event| What::Vcpu {
        domain: v.domain,
        vcpu: v.index,
        event,
    };
    let what = of_v(if n + 1 == quota {
        TraceEvent::Full
    } else {
        event
    });
    // A priority change dropped is only counted: credit records every vCPU's on its
    // accounting CPU, so a storm filling that CPU's buffer would otherwise end the traces
    // of vCPUs running elsewhere, whose runs and wake-ups (what `schedsim --replay` reads)
    // still had room.
    let replayed = !matches!(
        event,
        TraceEvent::Boost | TraceEvent::Under | TraceEvent::Over
    );
    if push(now, what, |_| n < quota) == Pushed::Dropped
        && replayed
        && v.trace_events.fetch_or(LOST, Ordering::AcqRel) & LOST == 0
    {
        // Timed now, not at `now` (read before, perhaps on another CPU's clock path): an
        // event another CPU kept for `v` took its place in `v`'s count before the `LOST`
        // bit, and its time before that, so none kept can come after the mark.
        mark_lost(now.max(crate::time::now_ns()), of_v(TraceEvent::Full));
    }
}

/// Keeps a vCPU's [`TraceEvent::Full`] mark apart in this CPU's buffer, whose events are
/// full (a loss found by another CPU, a wake-up's, lands here too: the mark's CPU is where).
fn mark_lost(ts_ns: u64, full: What) {
    let Some(buffer) = BUFFERS.get().and_then(|b| b.get(smp::percpu::cpu_index())) else {
        return;
    };
    let mut buffer = buffer.lock();
    if buffer.lost.len() < buffer.lost.capacity() {
        buffer.lost.push(Event { ts_ns, what: full });
    } else {
        buffer.unmarked += 1;
    }
}

/// Marks that this CPU took an interrupt (`of`) due at `due` (system ns) only at `now`, if
/// that is [`LATE_FROM_NS`] or more (nothing if tracing is off).
pub fn late(of: LateOf, due: u64, now: u64) {
    let ns = now.saturating_sub(due);
    if ns < LATE_FROM_NS {
        return;
    }
    push(due, What::Late(ns, of), |buffer| buffer.late < LATE_PER_CPU);
}

/// What became of an event offered to [`push`].
#[derive(PartialEq, Eq)]
enum Pushed {
    /// Kept, or tracing is off.
    Kept,
    /// Refused by its quota.
    OverQuota,
    /// Dropped: the buffer is full.
    Dropped,
}

/// Appends an event to this CPU's buffer if tracing is on and `quota` (called with the
/// buffer, under its lock) grants it room. A vCPU's event leaves room for the `late` marks
/// the CPU may still take.
fn push(ts_ns: u64, what: What, quota: impl FnOnce(&Buffer) -> bool) -> Pushed {
    if !ENABLED.load(Ordering::Relaxed) {
        return Pushed::Kept;
    }
    let Some(buffer) = BUFFERS.get().and_then(|b| b.get(smp::percpu::cpu_index())) else {
        return Pushed::Kept;
    };
    let mut buffer = buffer.lock();
    if !quota(&buffer) {
        buffer.over_quota += 1;
        return Pushed::OverQuota;
    }
    let late = matches!(what, What::Late(..));
    let reserved = if late {
        0
    } else {
        (LATE_PER_CPU - buffer.late) as usize
    };
    if buffer.events.len() + reserved < buffer.events.capacity() {
        buffer.late += u32::from(late);
        buffer.events.push(Event { ts_ns, what });
        Pushed::Kept
    } else {
        buffer.dropped += 1;
        Pushed::Dropped
    }
}

/// Writes every recorded event to the console, CPU by CPU, and says how many were dropped.
pub fn dump() {
    if !ENABLED.swap(false, Ordering::AcqRel) {
        return;
    }
    let Some(buffers) = BUFFERS.get() else { return };
    let mut total = 0;
    let mut dropped = 0;
    let (mut lost, mut unmarked) = (0, 0);
    let mut over_quota = 0;
    for (cpu, buffer) in buffers.iter().enumerate() {
        let buffer = buffer.lock();
        // The marks kept apart go out after the events; the runner orders each CPU's.
        for e in buffer.events.iter().chain(&buffer.lost) {
            crate::arch::percpu::touch_watchdog(); // seconds of output at the end of a run
            match e.what {
                What::Vcpu {
                    domain,
                    vcpu,
                    event,
                } => console::write_fmt(format_args!(
                    "{TRACE_PREFIX}{cpu} {} {} {domain} {vcpu}\n",
                    e.ts_ns,
                    event.name(),
                )),
                What::Late(ns, of) => console::write_fmt(format_args!(
                    "{TRACE_PREFIX}{cpu} {} {} {ns} {}\n",
                    e.ts_ns,
                    TraceEvent::Late.name(),
                    of.name(),
                )),
            }
        }
        total += buffer.events.len() + buffer.lost.len();
        dropped += buffer.dropped;
        lost += buffer.lost.len();
        unmarked += buffer.unmarked;
        over_quota += buffer.over_quota;
    }
    log::info!(
        "trace: {total} events written, {dropped} dropped (buffers full: {lost} vCPUs' traces \
         end there, marked, {unmarked} unmarked), {over_quota} over their vCPU's quota of \
         {EVENTS_PER_VCPU} or their CPU's of {LATE_PER_CPU} late marks"
    );
}
