//! The console protocol between the hypervisor and `scripts/run`.
//!
//! The hypervisor writes text lines to the first serial port. Most are log lines for people.
//! A line that starts with [`RECORD_PREFIX`] carries one results record (a JSON object,
//! docs/DESIGN.md "Results"); the runner copies the JSON after the prefix, unchanged, into the
//! results file. The machine ends by writing an [`ExitCode`] to QEMU's `isa-debug-exit`
//! device, which makes QEMU exit with status `(code << 1) | 1`.

/// Marks a serial line that carries one JSON results record.
pub const RECORD_PREFIX: &str = "@domino ";

/// Marks a serial line that carries one scheduling-trace event, written when the machine
/// shuts down if tracing is on (`trace=on`): `@trace CPU TS_NS EVENT DOMAIN VCPU`, with
/// EVENT one of [`TraceEvent`]'s names, or `@trace CPU TS_NS late NS OF` for
/// [`TraceEvent::Late`], OF one of [`LateOf`]'s names. The runner turns these into Chrome
/// trace JSON.
pub const TRACE_PREFIX: &str = "@trace ";

/// What a trace line says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// The vCPU starts running on the CPU.
    Run,
    /// It stops running, still runnable (end of slice, preempted).
    Preempt,
    /// It stops running because it yielded.
    Yield,
    /// It stops running because it blocked (or was paused).
    Block,
    /// It stops running because its domain ended.
    Dead,
    /// It became runnable (a wake-up; the CPU is where it happened).
    Wake,
    /// The policy raised it to BOOST (credit: woke while UNDER).
    Boost,
    /// The policy put it in UNDER (credit: credit left, or its BOOST ended).
    Under,
    /// The policy put it in OVER (credit: out of credit).
    Over,
    /// The CPU took an interrupt due at the line's time at least [`LATE_FROM_NS`] late. The
    /// line names no vCPU but how late, in ns, and which interrupt ([`LateOf`]).
    Late,
    /// The vCPU's trace quota ran out here: none of its events after this one are in the
    /// trace (the hypervisor's `trace::EVENTS_PER_VCPU`). `schedsim --replay` refuses to
    /// replay a vCPU whose trace ends so before the measured interval does.
    Full,
}

/// Which interrupt a [`TraceEvent::Late`] mark is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LateOf {
    /// The CPU's timer. Under TCG the emulated APIC timer fires milliseconds late at times
    /// while the CPU runs on and takes other CPUs' IPIs on time (latency.toml under rtds on
    /// 2 CPUs on an idle host: 7.7% of slice ends over 256 µs late, 0.8% of remote kicks).
    Timer,
    /// Another CPU's kick (an IPI): the CPU itself did not run (under emulation, the host
    /// did not run its thread).
    Kick,
}

impl LateOf {
    /// Its name on a trace line.
    pub const fn name(self) -> &'static str {
        match self {
            LateOf::Timer => "timer",
            LateOf::Kick => "kick",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<LateOf> {
        [LateOf::Timer, LateOf::Kick]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// An interrupt taken this late (ns) or later is marked in the trace ([`TraceEvent::Late`]):
/// on an idle host 99% of slices end within 256 µs of their deadline under TCG, on a loaded
/// one the rest are the host's stalls of its CPU threads, which `schedsim` plays out at
/// these moments (`sched::cost::STALL_FROM_NS`, the same bound).
pub const LATE_FROM_NS: u64 = 256_000;

impl TraceEvent {
    /// Every event, in the order of their codes.
    pub const ALL: [TraceEvent; 11] = [
        TraceEvent::Run,
        TraceEvent::Preempt,
        TraceEvent::Yield,
        TraceEvent::Block,
        TraceEvent::Dead,
        TraceEvent::Wake,
        TraceEvent::Boost,
        TraceEvent::Under,
        TraceEvent::Over,
        TraceEvent::Late,
        TraceEvent::Full,
    ];

    /// Its name on a trace line.
    pub const fn name(self) -> &'static str {
        match self {
            TraceEvent::Run => "run",
            TraceEvent::Preempt => "preempt",
            TraceEvent::Yield => "yield",
            TraceEvent::Block => "block",
            TraceEvent::Dead => "dead",
            TraceEvent::Wake => "wake",
            TraceEvent::Boost => "boost",
            TraceEvent::Under => "under",
            TraceEvent::Over => "over",
            TraceEvent::Late => "late",
            TraceEvent::Full => "full",
        }
    }

    /// The event called `name`.
    pub fn from_name(name: &str) -> Option<TraceEvent> {
        TraceEvent::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// How a run ended, as the hypervisor reports it. The values are the exit statuses that
/// `scripts/run` gives its caller (docs/DESIGN.md "Exit status").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The experiment ran and every domain ended as the spec expected.
    Success = 0,
    /// A failed run: a hypervisor fault, an unexpected domain death, a failed self-test.
    Failure = 1,
    /// A bad command line or spec, detected by the hypervisor.
    BadInput = 2,
}

impl ExitCode {
    /// The status QEMU exits with after the hypervisor writes this code to the exit port.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// Decodes QEMU's exit status; `None` when QEMU ended without the hypervisor's word
    /// (killed, crashed, triple fault, or a guest-initiated reset).
    pub const fn from_qemu_status(status: i32) -> Option<ExitCode> {
        match status {
            1 => Some(ExitCode::Success),
            3 => Some(ExitCode::Failure),
            5 => Some(ExitCode::BadInput),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_event_names_round_trip() {
        for e in TraceEvent::ALL {
            assert_eq!(TraceEvent::from_name(e.name()), Some(e));
        }
        assert_eq!(TraceEvent::from_name("sleep"), None);
    }

    #[test]
    fn qemu_status_round_trips() {
        for code in [ExitCode::Success, ExitCode::Failure, ExitCode::BadInput] {
            assert_eq!(ExitCode::from_qemu_status(code.qemu_status()), Some(code));
        }
        assert_eq!(ExitCode::from_qemu_status(0), None);
        assert_eq!(ExitCode::from_qemu_status(2), None);
    }
}
