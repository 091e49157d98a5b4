//! The console protocol between the hypervisor and `scripts/run`.
//!
//! The hypervisor writes text lines to the first serial port. Most are log lines for people.
//! A line that starts with [`RECORD_PREFIX`] carries one results record (a JSON object,
//! DESIGN.md "Results"); the runner copies the JSON after the prefix, unchanged, into the
//! results file. The machine ends by writing an [`ExitCode`] to QEMU's `isa-debug-exit`
//! device, which makes QEMU exit with status `(code << 1) | 1`.

/// Marks a serial line that carries one JSON results record.
pub const RECORD_PREFIX: &str = "@domino ";

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// How a run ended, as the hypervisor reports it. The values are the exit statuses that
/// `scripts/run` gives its caller (DESIGN.md "Exit status").
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
    fn qemu_status_round_trips() {
        for code in [ExitCode::Success, ExitCode::Failure, ExitCode::BadInput] {
            assert_eq!(ExitCode::from_qemu_status(code.qemu_status()), Some(code));
        }
        assert_eq!(ExitCode::from_qemu_status(0), None);
        assert_eq!(ExitCode::from_qemu_status(2), None);
    }
}
