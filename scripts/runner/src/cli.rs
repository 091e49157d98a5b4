//! The command line of `scripts/run` (docs/DESIGN.md "Commands"), parsed with clap.
//!
//! The experiment flags (`--sched`, `--cpus`, `--domains`, `--workload`, `--seconds`)
//! override the spec and are checked by the spec step, so that one place knows what is
//! allowed. The rest say how to boot: accelerator, machine, boot path, QEMU knobs.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Boot Domino in QEMU, show its log, and write the results (JSON Lines).
///
/// Exit status: 0 the experiment ran as expected; 1 a failed run (boot failure, hypervisor
/// fault, timeout, QEMU error); 2 a bad command line or spec (nothing was booted).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "scripts/run",
    bin_name = "scripts/run",
    version,
    max_term_width = 100
)]
pub struct Args {
    /// Experiment spec (TOML). Without it, the default experiment runs.
    pub spec: Option<PathBuf>,

    /// What runs the experiment: the hypervisor (`domino`), the simulator (`schedsim`, the
    /// `schedsim` binary with the same spec and flags), or Linux (`linux`: every domain a
    /// process group in its own cgroup v2, Debian's kernel in the same QEMU configuration).
    #[arg(long, value_enum, default_value_t = Engine::Domino)]
    pub engine: Engine,

    /// Scheduling policy (a name in sched's registry: rr, credit, bvt, ...); overrides `[sched] policy`.
    #[arg(long, value_name = "POLICY")]
    pub sched: Option<String>,

    /// CPUs the hypervisor runs on (QEMU -smp, 1..=255); overrides `[machine] cpus`.
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,

    /// Number of domains of the spec's first `[[domain]]` group; overrides its `count`.
    #[arg(long, value_name = "N")]
    pub domains: Option<u32>,

    /// Workload of the spec's first `[[domain]]` group; overrides its `workload` (and drops
    /// its arguments the new workload does not take).
    #[arg(long, value_name = "W")]
    pub workload: Option<String>,

    /// Length of the measured interval in seconds; overrides `duration_ms`.
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,

    /// Results over time: a `window` record per domain per window of this many ms (0 =
    /// none); overrides `window_ms`.
    #[arg(long, value_name = "MS")]
    pub window_ms: Option<u64>,

    /// Accelerator. Default: KVM if /dev/kvm passes a probe boot, else TCG.
    /// A forced `kvm` that fails the probe is an error.
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,

    /// Results file (JSON Lines). Default: results/<name>.jsonl in the repository.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Trace file (Chrome/Perfetto trace-event JSON).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// QEMU machine type.
    #[arg(long, value_enum, default_value_t = Machine::Q35)]
    pub machine: Machine,

    /// Boot path: QEMU's PVH loader (-kernel), or GRUB multiboot2 from an ISO (-cdrom).
    #[arg(long, value_enum, default_value_t = Boot::Pvh)]
    pub boot: Boot,

    /// Extra kernel command-line words (`key=value ...`); may be repeated.
    #[arg(long, value_name = "WORDS", allow_hyphen_values = true)]
    pub append: Vec<String>,

    /// Hypervisor log level (kernel `loglevel=`).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub loglevel: LogLevel,

    /// Kill the run after this many seconds. Default: the experiment's length plus a boot
    /// margin that grows with the CPU count (more under TCG and for GRUB).
    #[arg(long, value_name = "S")]
    pub timeout: Option<f64>,

    /// Guest memory in MiB (QEMU -m); overrides `[machine] memory_mib`.
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u32>,

    /// QEMU CPU model. Default: `host,-arch-capabilities` under KVM, `max` under TCG.
    #[arg(long, value_name = "MODEL")]
    pub cpu: Option<String>,

    /// Do not show the hypervisor's log lines; only the summary and errors.
    #[arg(long, short)]
    pub quiet: bool,

    /// Show everything the machine says: the hypervisor's own log lines and every raw
    /// `@domino {...}` record (by default: a progress line, warnings, the domains' console
    /// lines and each timeline event, then a summary per group; the records always go to
    /// the results file).
    #[arg(long, short, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Boot this hypervisor ELF instead of building target/release/domino.
    #[arg(long, value_name = "ELF")]
    pub kernel: Option<PathBuf>,

    /// Do not run cargo; boot the hypervisor ELF that is already built.
    #[arg(long)]
    pub no_build: bool,

    /// Domain0 also runs the micro-benchmarks (null hypercall and its floor, domain-switch
    /// floor, domain creation) and writes `bench` records into the results.
    #[arg(long, conflicts_with = "boot_only")]
    pub bench: bool,

    /// Boot and report the CPUs, but run no experiment (no boot module is given, so the
    /// hypervisor shuts down after bring-up).
    #[arg(long)]
    pub boot_only: bool,

    /// Only run the KVM probe: exit 0 if KVM is usable, 1 if not (with the reason).
    #[arg(long, conflicts_with_all = ["spec", "accel"])]
    pub probe: bool,

    /// Extra argument passed to QEMU as is; may be repeated (e.g. --qemu-arg=-s).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_arg: Vec<String>,
}

/// What runs an experiment (docs/DESIGN.md "Commands").
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Domino,
    Schedsim,
    Linux,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Domino => "domino",
            Engine::Schedsim => "schedsim",
            Engine::Linux => "linux",
        }
    }
}

/// A QEMU accelerator.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A QEMU machine type: i440FX (`pc`) or Q35 (`q35`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Machine {
    Pc,
    Q35,
}

impl Machine {
    pub fn name(self) -> &'static str {
        match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        }
    }
}

/// How the hypervisor gets loaded.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Boot {
    /// QEMU's PVH loader: `-kernel domino -append ...`.
    Pvh,
    /// GRUB multiboot2 from an ISO made by scripts/iso: `-cdrom`.
    Grub,
}

impl Boot {
    pub fn name(self) -> &'static str {
        match self {
            Boot::Pvh => "pvh",
            Boot::Grub => "grub",
        }
    }
}

/// The hypervisor's `loglevel=` values.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_the_design_flags() {
        let args = Args::try_parse_from([
            "run",
            "x.toml",
            "--sched",
            "rr",
            "--cpus",
            "8",
            "--domains",
            "4",
            "--workload",
            "cpu",
            "--seconds",
            "1.5",
            "--accel",
            "tcg",
            "--out",
            "o.jsonl",
            "--trace",
            "t.json",
            "--append",
            "selftest=fault loglevel=debug",
            "--machine",
            "pc",
        ])
        .unwrap();
        assert_eq!(args.cpus, Some(8));
        assert_eq!(args.accel, Some(Accel::Tcg));
        assert_eq!(args.machine, Machine::Pc);
        assert_eq!(args.append, ["selftest=fault loglevel=debug"]);
    }

    #[test]
    fn engine_defaults_to_domino_and_names_the_allowed_values() {
        assert_eq!(Args::parse_from(["run"]).engine, Engine::Domino);
        let args = Args::try_parse_from(["run", "--engine", "linux", "x.toml"]).unwrap();
        assert_eq!(args.engine, Engine::Linux);
        let e = Args::try_parse_from(["run", "--engine", "xen"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("--engine") && msg.contains("domino, schedsim, linux"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_unknown_accelerator() {
        assert!(Args::try_parse_from(["run", "--accel", "hvf"]).is_err());
    }
}
