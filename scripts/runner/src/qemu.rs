//! Launching QEMU: the command line for a boot, and one boot run to its end with the serial
//! console streamed line by line and a hard timeout.
//!
//! QEMU's stdout is the guest's COM1 (`-serial stdio`); its stderr carries QEMU's own
//! complaints. Two reader threads feed one channel so the main thread can wait for the
//! next line or the deadline, whichever comes first, and kill QEMU at the deadline: a run
//! never hangs, whatever the guest or the accelerator does.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use abi::tool::console::{DEBUG_EXIT_PORT, ExitCode};
use abi::tool::results::Cause;

use crate::cli::{Accel, Machine};
use crate::console::{self, Line};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// How the hypervisor image reaches the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// QEMU's PVH loader with a kernel command line and an optional boot module.
    Pvh {
        kernel: PathBuf,
        cmdline: String,
        initrd: Option<PathBuf>,
    },
    /// A GRUB ISO (the command line is inside its grub.cfg).
    Cdrom(PathBuf),
}

/// Everything that decides QEMU's command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub machine: Machine,
    pub accel: Accel,
    pub cpu_model: String,
    pub cpus: u32,
    /// `Some((sockets, cores, threads))`: `-smp cpus,sockets=,cores=,threads=` (cores per
    /// socket, threads per core; their product is `cpus`). `None`: `-smp cpus`, QEMU's own
    /// default shape (QEMU 7.2's machines: one socket of `cpus` cores).
    pub shape: Option<(u32, u32, u32)>,
    pub memory_mib: u32,
    pub media: Media,
    /// Passed through as is, last.
    pub extra: Vec<String>,
}

impl Launch {
    /// QEMU's arguments (without the program name).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &str| a.push(s.to_string());
        push("-machine");
        push(self.machine.name());
        push("-accel");
        push(self.accel.name());
        push("-cpu");
        push(&self.cpu_model);
        push("-smp");
        match self.shape {
            Some((sockets, cores, threads)) => push(&format!(
                "{},sockets={sockets},cores={cores},threads={threads}",
                self.cpus
            )),
            None => push(&self.cpus.to_string()),
        }
        push("-m");
        push(&format!("{}M", self.memory_mib));
        match &self.media {
            Media::Pvh {
                kernel,
                cmdline,
                initrd,
            } => {
                push("-kernel");
                push(&kernel.display().to_string());
                push("-append");
                push(cmdline);
                if let Some(initrd) = initrd {
                    push("-initrd");
                    push(&initrd.display().to_string());
                }
            }
            Media::Cdrom(iso) => {
                push("-cdrom");
                push(&iso.display().to_string());
                push("-boot");
                push("d");
            }
        }
        for s in [
            "-serial",
            "stdio",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ] {
            push(s);
        }
        push("-device");
        push(&format!(
            "isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"
        ));
        for s in &self.extra {
            push(s);
        }
        a
    }

    /// The command as a person would type it (for messages).
    pub fn shell_line(&self) -> String {
        let mut line = QEMU.to_string();
        for arg in self.args() {
            line.push(' ');
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
                line.push_str(&format!("'{arg}'"));
            } else {
                line.push_str(&arg);
            }
        }
        line
    }
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The hypervisor wrote this code to `isa-debug-exit`.
    Hypervisor(ExitCode),
    /// QEMU exited 0: with `-no-reboot` that is a triple fault, a reset or an ACPI power-off,
    /// none of them the hypervisor's word.
    Reset,
    /// QEMU exited with a status that is not a debug-exit status (it refused the command
    /// line, or crashed).
    Qemu(i32),
    /// QEMU died from a signal (not ours).
    Signal,
    /// The deadline passed and the runner killed QEMU.
    Timeout,
}

impl Ending {
    /// Decodes QEMU's exit status.
    pub fn from_status(status: ExitStatus) -> Ending {
        match status.code() {
            None => Ending::Signal,
            Some(0) => Ending::Reset,
            Some(code) => match ExitCode::from_qemu_status(code) {
                Some(exit) => Ending::Hypervisor(exit),
                None => Ending::Qemu(code),
            },
        }
    }

    /// The runner's exit status for this ending (docs/DESIGN.md "Exit status").
    pub fn status(&self) -> i32 {
        match self {
            Ending::Hypervisor(code) => *code as i32,
            _ => ExitCode::Failure as i32,
        }
    }

    /// What ended the run, for the results file's `exit` record.
    pub fn cause(&self) -> Cause {
        match self {
            Ending::Hypervisor(_) => Cause::Hypervisor,
            Ending::Reset => Cause::Reset,
            Ending::Qemu(_) => Cause::Qemu,
            Ending::Signal => Cause::Signal,
            Ending::Timeout => Cause::Timeout,
        }
    }
}

/// The end of one boot.
#[derive(Debug)]
pub struct Outcome {
    pub ending: Ending,
    /// Host wall-clock time from spawning QEMU to its exit.
    pub wall: Duration,
    /// QEMU's own stderr lines (its complaints explain `Ending::Qemu`).
    pub stderr: Vec<String>,
}

enum Event {
    Serial(Line),
    Stderr(String),
    SerialClosed,
}

/// Boots once: spawns QEMU, hands every serial line to `on_line` as it arrives, and returns
/// when QEMU exits or `timeout` passes (then QEMU is killed). QEMU's stderr lines are passed
/// to `on_stderr` too. Errors only when QEMU cannot be started at all.
pub fn boot(
    launch: &Launch,
    timeout: Duration,
    mut on_line: impl FnMut(Line),
    mut on_stderr: impl FnMut(&str),
) -> std::io::Result<Outcome> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut child = Command::new(QEMU)
        .args(launch.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let serial_tx = tx.clone();
    thread::spawn(move || {
        for raw in split_lines(stdout) {
            if serial_tx
                .send(Event::Serial(console::classify(&raw)))
                .is_err()
            {
                return;
            }
        }
        let _ = serial_tx.send(Event::SerialClosed);
    });
    thread::spawn(move || {
        for raw in split_lines(stderr) {
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            if tx.send(Event::Stderr(line)).is_err() {
                return;
            }
        }
    });

    let mut stderr_lines = Vec::new();
    let mut serial_open = true;
    let ending = loop {
        let now = Instant::now();
        if now >= deadline {
            break kill(&mut child);
        }
        if !serial_open {
            // Serial EOF means QEMU is on its way out; poll for its status.
            if let Some(status) = child.try_wait()? {
                break Ending::from_status(status);
            }
        }
        let wait = if serial_open {
            deadline - now
        } else {
            Duration::from_millis(20)
        };
        match rx.recv_timeout(wait.min(deadline - now)) {
            Ok(Event::Serial(line)) => on_line(line),
            Ok(Event::Stderr(line)) => {
                on_stderr(&line);
                stderr_lines.push(line);
            }
            Ok(Event::SerialClosed) => serial_open = false,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => serial_open = false,
        }
    };
    // Lines QEMU printed on its way out (stderr reader may lag the exit by a moment).
    let drain_until = Instant::now() + Duration::from_millis(100);
    while let Ok(event) = rx.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
        match event {
            Event::Serial(line) => on_line(line),
            Event::Stderr(line) => {
                on_stderr(&line);
                stderr_lines.push(line);
            }
            Event::SerialClosed => {}
        }
    }
    Ok(Outcome {
        ending,
        wall: start.elapsed(),
        stderr: stderr_lines,
    })
}

fn kill(child: &mut Child) -> Ending {
    // QEMU may have exited just now; its real status wins over the timeout.
    if let Ok(Some(status)) = child.try_wait() {
        return Ending::from_status(status);
    }
    let _ = child.kill();
    let _ = child.wait();
    Ending::Timeout
}

/// Splits a byte stream at `\n` (the line without it); a last unterminated line counts.
fn split_lines(stream: impl Read) -> impl Iterator<Item = Vec<u8>> {
    let mut reader = BufReader::new(stream);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(buf)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn launch(media: Media) -> Launch {
        Launch {
            machine: Machine::Q35,
            accel: Accel::Tcg,
            cpu_model: "max".into(),
            cpus: 8,
            shape: None,
            memory_mib: 512,
            media,
            extra: vec!["-s".into()],
        }
    }

    #[test]
    fn pvh_command_line() {
        let l = launch(Media::Pvh {
            kernel: "target/release/domino".into(),
            cmdline: "loglevel=info sched=rr".into(),
            initrd: None,
        });
        let args = l.args();
        let pos = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert_eq!(args[pos("-smp") + 1], "8");
        assert_eq!(args[pos("-append") + 1], "loglevel=info sched=rr");
        assert_eq!(args[pos("-machine") + 1], "q35");
        assert!(args.contains(&"isa-debug-exit,iobase=0xf4,iosize=0x04".to_string()));
        assert!(args.contains(&"-no-reboot".to_string()));
        assert_eq!(args.last().unwrap(), "-s");
        assert!(l.shell_line().contains("-append 'loglevel=info sched=rr'"));
    }

    #[test]
    fn smp_carries_the_shape() {
        let mut l = launch(Media::Cdrom("x.iso".into()));
        l.shape = Some((2, 2, 2));
        let args = l.args();
        let at = args.iter().position(|a| a == "-smp").unwrap();
        assert_eq!(args[at + 1], "8,sockets=2,cores=2,threads=2");
        assert_eq!(args.iter().filter(|a| *a == "-smp").count(), 1);
    }

    #[test]
    fn cdrom_command_line() {
        let args = launch(Media::Cdrom("x.iso".into())).args();
        assert!(args.windows(2).any(|w| w == ["-cdrom", "x.iso"]));
        assert!(!args.contains(&"-kernel".to_string()));
    }

    #[test]
    fn endings_from_qemu_status() {
        let exit = |code: i32| Ending::from_status(ExitStatus::from_raw(code << 8));
        assert_eq!(exit(1), Ending::Hypervisor(ExitCode::Success));
        assert_eq!(exit(3), Ending::Hypervisor(ExitCode::Failure));
        assert_eq!(exit(5), Ending::Hypervisor(ExitCode::BadInput));
        assert_eq!(exit(0), Ending::Reset);
        assert_eq!(exit(0).status(), 1);
        assert_eq!(exit(5).status(), 2);
        assert_eq!(exit(2), Ending::Qemu(2));
        assert_eq!(Ending::from_status(ExitStatus::from_raw(9)), Ending::Signal);
    }

    #[test]
    fn lines_split_at_newline() {
        let lines: Vec<_> = split_lines(&b"a\r\nb\n\nc"[..]).collect();
        assert_eq!(
            lines,
            [b"a\r".to_vec(), b"b".to_vec(), b"".to_vec(), b"c".to_vec()]
        );
    }
}
