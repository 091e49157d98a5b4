//! Choosing the accelerator: KVM only after a probe boot proves it runs our code.
//!
//! Some hosts offer a `/dev/kvm` that opens fine and then hangs the guest at its first x87
//! or SSE instruction (nested KVM on the build machines: docs/DESIGN.md
//! "The machine underneath"). So before trusting KVM, the runner boots the hypervisor once with
//! `selftest=probe`: it executes x87 and SSE instructions right after early init and exits
//! 0. If that does not happen within [`PROBE_TIMEOUT`], KVM is not used, and the reason is
//! one line for the user.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Duration;

use abi::tool::console::ExitCode;

use crate::cli::{Accel, Machine};
use crate::qemu::{self, Ending, Launch, Media};

/// How long a probe boot may take. A working KVM finishes it in well under a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The CPU model under KVM: the host's, minus the MSR QEMU 7.2 cannot always migrate.
pub const KVM_CPU: &str = "host,-arch-capabilities";
/// The CPU model under TCG: everything TCG emulates, which includes SSE (but no x2APIC).
pub const TCG_CPU: &str = "max";

/// Runs the probe: `Ok(())` when KVM is usable, else why not, in one line.
pub fn probe_kvm(kernel: &Path, machine: Machine) -> Result<(), String> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Err("/dev/kvm does not exist".into());
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!("/dev/kvm cannot be opened ({e})"));
    }
    let launch = Launch {
        machine,
        accel: Accel::Kvm,
        cpu_model: KVM_CPU.into(),
        cpus: 1,
        shape: None,
        memory_mib: 256,
        media: Media::Pvh {
            kernel: kernel.to_path_buf(),
            cmdline: "selftest=probe loglevel=error".into(),
            initrd: None,
        },
        extra: Vec::new(),
    };
    let outcome = qemu::boot(&launch, PROBE_TIMEOUT, |_| {}, |_| {})
        .map_err(|e| format!("cannot start {}: {e}", qemu::QEMU))?;
    let said = outcome
        .stderr
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(" (QEMU: {})", l.trim()))
        .unwrap_or_default();
    match outcome.ending {
        Ending::Hypervisor(ExitCode::Success) => Ok(()),
        Ending::Timeout => Err(format!(
            "the KVM probe boot (x87/SSE right after early init) did not finish within {} s{said}",
            PROBE_TIMEOUT.as_secs()
        )),
        Ending::Hypervisor(code) => Err(format!(
            "the KVM probe boot failed: the hypervisor exited with {code:?}{said}"
        )),
        Ending::Reset => Err(format!(
            "the KVM probe boot reset the machine (a triple fault?){said}"
        )),
        Ending::Qemu(code) => Err(format!("QEMU with KVM exited with status {code}{said}")),
        Ending::Signal => Err(format!("QEMU with KVM was killed by a signal{said}")),
    }
}
