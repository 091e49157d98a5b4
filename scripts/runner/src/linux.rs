//! `--engine linux` (docs/DESIGN.md "Commands"): the experiment on Linux, in the QEMU
//! configuration a Domino run gets (machine, CPUs and their shape, memory, accelerator, CPU
//! model), so the figures compare.
//!
//! The runner checks the spec (exit 2 for a workload without a Linux build, or a churn),
//! builds the workloads' Linux back end (`workloads`, feature `linux`) and `/init`
//! (`scripts/linux-init`), fetches Debian's kernel (`linux_kernel` in scripts/lib.sh: `apt-get
//! download` into the target directory, never installed), packs an initramfs (newc cpio:
//! `/init`, `/plan`, `/bin/WORKLOAD`, `/dev/console`), boots it, and reads the records `/init`
//! prints on the serial console as it reads the hypervisor's. The `summary` is the runner's,
//! as for Domino.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use abi::tool::results::{Record, Records};

use crate::Stop;
use crate::cli::{Accel, Args};
use crate::console::Line;
use crate::experiment::{BadInput, Experiment};
use crate::qemu::{self, Ending, Launch, Media};
use crate::results::{self, Results};
use crate::{artifacts, module};

/// The workloads with a Linux build (the same list as `linux_init::LINUX_WORKLOADS`).
pub const WORKLOADS: [&str; 8] = [
    "cpu", "latency", "yield", "io", "switch", "ping", "blk", "net",
];

/// The least memory Debian's 6.1 kernel boots the initramfs in (96 MiB does, 64 MiB panics).
pub const MIN_MEMORY_MIB: u32 = 96;

/// The target triple the Linux builds name, so that they land in their own directory.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Where the Linux builds are.
fn build_dir() -> PathBuf {
    artifacts::target_dir().join(TRIPLE).join("release")
}

/// The spec's fit for Linux: every workload must have a Linux build; no churn.
pub fn check(exp: &Experiment) -> Result<(), BadInput> {
    let mut refused: Vec<&str> = Vec::new();
    for d in &exp.plan {
        if !WORKLOADS.contains(&d.workload.as_str()) && !refused.contains(&d.workload.as_str()) {
            refused.push(&d.workload);
        }
    }
    if !refused.is_empty() {
        let where_ = exp
            .spec
            .as_ref()
            .map_or("the default experiment".into(), |p| p.display().to_string());
        return Err(BadInput(format!(
            "{where_}: --engine linux: workload {} has no Linux build (it tests the \
             hypervisor itself); allowed: {}",
            refused
                .iter()
                .map(|w| format!("`{w}`"))
                .collect::<Vec<_>>()
                .join(", "),
            WORKLOADS.join(", ")
        )));
    }
    if exp.memory_mib < MIN_MEMORY_MIB {
        let where_ = exp
            .spec
            .as_ref()
            .map_or("the default experiment".into(), |p| p.display().to_string());
        return Err(BadInput(format!(
            "{where_}: machine.memory_mib (or --memory) {} MiB: too small for Debian's kernel \
             and the initramfs under --engine linux (64 MiB panics at boot); allowed: {}..={}",
            exp.memory_mib,
            MIN_MEMORY_MIB,
            sched::spec::MAX_MEMORY_MIB
        )));
    }
    if exp.window_ms > 0 {
        return Err(BadInput(format!(
            "window_ms (or --window-ms) {}: --engine linux writes no window records yet; \
             allowed: 0",
            exp.window_ms
        )));
    }
    if exp.churn.is_some() {
        return Err(BadInput(
            "[churn]: --engine linux measures intervals only; allowed: a spec without [churn]"
                .into(),
        ));
    }
    if exp.pools || !exp.timeline.is_empty() {
        let field = if exp.pools { "pool" } else { "event" };
        return Err(BadInput(format!(
            "{field}: --engine linux runs no CPU pools and applies no timeline yet (its /init \
             starts every domain at once and changes nothing); allowed: a spec without \
             [[pool]] and [[event]]; schedsim runs them (--engine schedsim), and the \
             hypervisor runs events"
        )));
    }
    Ok(())
}

/// Builds `/init` and the workloads' Linux builds (static, crt-static for `/init`).
fn build(quiet: bool) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut bins = vec!["-p", "workloads", "--features", "linux"];
    for w in WORKLOADS {
        bins.extend(["--bin", w]);
    }
    for args in [bins, vec!["-p", "linux-init"]] {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(artifacts::repo_root())
            .args(["build", "--release", "--target", TRIPLE])
            .args(&args)
            .env("RUSTFLAGS", "-C target-feature=+crt-static");
        if quiet {
            cmd.arg("--quiet");
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cargo build --release --target {TRIPLE} {} failed",
                args.join(" ")
            ));
        }
    }
    Ok(())
}

/// Debian's kernel image, fetched into the target directory when missing (scripts/lib.sh).
fn kernel() -> Result<PathBuf, String> {
    let lib = artifacts::repo_root().join("scripts/lib.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg("source \"$1\" && linux_kernel")
        .arg("linux_kernel")
        .arg(&lib)
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        return Err(format!(
            "no Linux kernel (linux_kernel in scripts/lib.sh): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(path))
}

/// One file of a newc cpio archive.
pub struct Entry {
    pub path: String,
    /// File type and permission bits (`0o100755`, `0o40755`, `0o20600`).
    pub mode: u32,
    /// Device number (major, minor) of a device node.
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// A newc ("070701") cpio archive, as the kernel unpacks an initramfs.
pub fn cpio(entries: &[Entry]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let trailer = Entry {
        path: "TRAILER!!!".into(),
        mode: 0,
        rdev: (0, 0),
        data: Vec::new(),
    };
    for (ino, e) in entries.iter().chain([&trailer]).enumerate() {
        let fields = [
            ino as u32 + 1,
            e.mode,
            0, // uid
            0, // gid
            if e.mode & 0o40000 != 0 { 2 } else { 1 },
            0, // mtime
            e.data.len() as u32,
            0, // devmajor
            0, // devminor
            e.rdev.0,
            e.rdev.1,
            e.path.len() as u32 + 1,
            0, // check
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(e.path.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out
}

/// The initramfs for `exp`: `/init`, `/plan`, the workloads it uses, `/dev/console`.
fn initramfs(exp: &Experiment, dir: &Path) -> Result<Vec<u8>, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let mut entries = vec![
        Entry {
            path: "dev".into(),
            mode: 0o40755,
            rdev: (0, 0),
            data: Vec::new(),
        },
        Entry {
            path: "dev/console".into(),
            mode: 0o20600,
            rdev: (5, 1),
            data: Vec::new(),
        },
        Entry {
            path: "bin".into(),
            mode: 0o40755,
            rdev: (0, 0),
            data: Vec::new(),
        },
        Entry {
            path: "init".into(),
            mode: 0o100755,
            rdev: (0, 0),
            data: read("linux-init")?,
        },
        Entry {
            path: "plan".into(),
            mode: 0o100644,
            rdev: (0, 0),
            data: module::plan_bytes(exp)?,
        },
    ];
    let mut used: Vec<&str> = exp.plan.iter().map(|d| d.workload.as_str()).collect();
    used.sort_unstable();
    used.dedup();
    for w in used {
        entries.push(Entry {
            path: format!("bin/{w}"),
            mode: 0o100755,
            rdev: (0, 0),
            data: read(w)?,
        });
    }
    Ok(cpio(&entries))
}

/// The hard timeout: Linux's own boot (slow under TCG), then the experiment.
fn default_timeout(exp: &Experiment, accel: Accel) -> Duration {
    let (boot_ms, per_cpu_ms, per_domain_ms) = match accel {
        Accel::Tcg => (120_000, 3_000, 200),
        Accel::Kvm => (30_000, 200, 20),
    };
    Duration::from_millis(
        boot_ms
            + u64::from(exp.cpus) * per_cpu_ms
            + u64::from(exp.domains) * per_domain_ms
            + exp.warmup_ms
            + exp.duration_ms * 2,
    )
}

/// `scripts/run --engine linux`.
pub fn run(args: &Args) -> Result<u8, Stop> {
    let exp = crate::experiment::load(args.spec.as_deref(), &crate::overrides(args))?;
    check(&exp)?;
    crate::check_timeout(args)?;
    let out = crate::results_file(args, &exp.name, "linux.jsonl")?;

    if !args.no_build {
        build(args.quiet).map_err(Stop::Failed)?;
    }
    let vmlinuz = kernel().map_err(Stop::Failed)?;
    let image = artifacts::target_dir().join("linux").join(format!(
        "{}-{}.cpio",
        exp.name,
        std::process::id()
    ));
    let bytes = initramfs(&exp, &build_dir()).map_err(Stop::Failed)?;
    std::fs::create_dir_all(image.parent().expect("has a parent"))
        .and_then(|()| std::fs::write(&image, bytes))
        .map_err(|e| Stop::Failed(format!("cannot write {}: {e}", image.display())))?;
    let (accel, accel_note) = match args.accel {
        Some(a) => (a, None),
        None => crate::choose_accel(args, &crate::hypervisor(args)?)?,
    };
    // The TSC as the clock, as Domino's: under TCG Linux would otherwise pick the HPET, whose
    // every read is an emulated MMIO access.
    let cmdline =
        "console=ttyS0 quiet panic=-1 rdinit=/init tsc=reliable clocksource=tsc".to_string();
    let launch = Launch {
        machine: args.machine,
        accel,
        cpu_model: args.cpu.clone().unwrap_or_else(|| {
            match accel {
                Accel::Kvm => crate::accel::KVM_CPU,
                Accel::Tcg => crate::accel::TCG_CPU,
            }
            .into()
        }),
        cpus: exp.cpus,
        shape: Some(exp.shape),
        memory_mib: exp.memory_mib,
        media: Media::Pvh {
            kernel: vmlinuz.clone(),
            cmdline,
            initrd: Some(image.clone()),
        },
        extra: args.qemu_arg.clone(),
    };
    let timeout = args
        .timeout
        .map_or_else(|| default_timeout(&exp, accel), Duration::from_secs_f64);
    let mut results = Results::create(&out)
        .map_err(|e| Stop::Failed(format!("cannot create {}: {e}", out.display())))?;
    if !args.quiet {
        println!(
            "scripts/run: {} on Linux ({}), {} CPUs ({}, {}), timeout {:.0} s",
            exp.name,
            vmlinuz.display(),
            exp.cpus,
            args.machine.name(),
            accel.name(),
            timeout.as_secs_f64()
        );
        println!("scripts/run: {}", launch.shell_line());
    }
    let mut write_error = None;
    let mut errors: Vec<String> = Vec::new();
    let ticks_before = crate::host::Ticks::now();
    let outcome = qemu::boot(
        &launch,
        timeout,
        |line| match line {
            Line::Log(text) => {
                if text.starts_with("linux-init: error") || text.starts_with("linux-init: FAIL") {
                    errors.push(text.clone());
                }
                if !args.quiet {
                    println!("{text}");
                }
            }
            Line::Record(json) => {
                if !args.quiet {
                    println!("{}{json}", abi::tool::console::RECORD_PREFIX);
                }
                if let Err(e) = results.record(&json) {
                    write_error.get_or_insert(e);
                }
            }
            Line::Trace(_) => {}
        },
        |line| {
            if !args.quiet {
                eprintln!("qemu: {line}");
            }
        },
    )
    .map_err(|e| Stop::Failed(format!("cannot start {}: {e}", qemu::QEMU)))?;
    let _ = std::fs::remove_file(&image);

    use abi::tool::console::ExitCode as Code;
    let mut status = outcome.ending.status() as u8;
    let mut verdict = match &outcome.ending {
        Ending::Hypervisor(Code::Success) => "success".to_string(),
        Ending::Hypervisor(_) if !errors.is_empty() => {
            format!("Linux's /init reported a failure: {}", errors.join(" / "))
        }
        Ending::Hypervisor(_) => "Linux's /init reported a failure; see its log".into(),
        Ending::Reset => "QEMU exited without /init's exit code: a kernel panic or reset".into(),
        Ending::Timeout => format!(
            "no exit within {:.0} s, QEMU killed (raise --timeout if the run needs longer)",
            timeout.as_secs_f64()
        ),
        other => format!("QEMU ended: {other:?}: {}", outcome.stderr.join(" / ")),
    };
    if outcome.ending == Ending::Hypervisor(Code::Success) {
        let mut problems = results::problems(results.records(), results.malformed(), exp.cpus);
        problems.extend(results::starved_summary(&results::starved(
            results.records(),
            &exp.plan,
        )));
        if results.records().run().is_none() {
            problems.push("/init wrote no run record".into());
        }
        if !problems.is_empty() {
            status = 1;
            verdict = format!("/init exited 0, but {}", problems.join("; "));
        }
    }
    if let Some(e) = write_error {
        status = 1;
        verdict = format!("cannot write {}: {e}", out.display());
    }
    // Linux honours cpu.weight whatever the spec's policy: shares are judged by weight.
    if let Some(summary) = results::summary_record(results.records(), true, status == 0)
        && let Err(e) = results.push(Record::Summary(summary))
    {
        status = 1;
        verdict = format!("cannot write {}: {e}", out.display());
    }
    let cores = crate::host::cores();
    let other_load = ticks_before
        .zip(crate::host::Ticks::now())
        .map(|(a, b)| a.other_load(&b, outcome.wall));
    let _ = results.exit_record(
        i32::from(status),
        outcome.ending.cause(),
        outcome.wall.as_nanos(),
        other_load.map(|load| (cores, load)),
    );

    println!("summary: {} (engine linux)", exp.name);
    let boot =
        results::boot_line(results.records(), exp.cpus).unwrap_or_else(|| "no boot record".into());
    println!("  boot:    {boot}");
    let policy = results
        .records()
        .run()
        .map_or("?".to_string(), |r| r.policy.clone());
    println!(
        "  machine: {}, {} MiB, {} (cpu {}), kernel {}, policy {policy} (the spec's `{}` does \
         not apply), {:.2} s wall",
        args.machine.name(),
        exp.memory_mib,
        accel.name(),
        launch.cpu_model,
        vmlinuz.file_name().unwrap_or_default().to_string_lossy(),
        exp.policy,
        outcome.wall.as_secs_f64()
    );
    if let Some(note) = accel_note {
        println!("  accel:   {note}");
    }
    if let Some(note) = crate::host::contention(cores, exp.cpus, other_load.unwrap_or(0.0)) {
        println!("  host:    {note}");
    }
    for line in crate::console::group_lines(results.records(), true) {
        println!("  {line}");
    }
    println!(
        "  results: {} ({} records)",
        results.path().display(),
        results.records().len()
    );
    println!("  exit:    {status} ({verdict})");
    if status != 0 {
        eprintln!("scripts/run: {verdict}");
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Overrides, load};

    #[test]
    fn refuses_workloads_without_a_linux_build_naming_them() {
        let exp = load(None, &Overrides::default()).unwrap();
        check(&exp).unwrap();
        let dir = std::env::temp_dir().join(format!("linux-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = dir.join("h.toml");
        std::fs::write(
            &spec,
            "name = \"h\"\n[[domain]]\nname = \"a\"\nworkload = \"cpu\"\n\
             [[domain]]\nname = \"b\"\nworkload = \"mmu\"\n\
             [[domain]]\nname = \"c\"\nworkload = \"hostile-priv\"\nexpect = \"killed\"\n\
             [[domain]]\nname = \"d\"\nworkload = \"blk\"\nmemory_kib = 4096\n\
             [[domain]]\nname = \"e\"\nworkload = \"net\"\n\
             [[domain]]\nname = \"f\"\nworkload = \"shootdown\"\nvcpus = 2\n\
             [[domain]]\nname = \"g\"\nworkload = \"hostile-grant\"\n",
        )
        .unwrap();
        let exp = load(Some(&spec), &Overrides::default()).unwrap();
        let e = check(&exp).unwrap_err().0;
        assert!(
            e.contains("h.toml")
                && e.contains("`mmu`, `hostile-priv`, `shootdown`, `hostile-grant`")
                && !e.contains("`blk`")
                && e.contains("allowed: cpu")
                && e.contains("blk, net"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_a_machine_too_small_for_linux() {
        let small = Overrides {
            memory_mib: Some(64),
            ..Overrides::default()
        };
        let e = check(&load(None, &small).unwrap()).unwrap_err().0;
        assert!(e.contains("64 MiB") && e.contains("allowed: 96..="), "{e}");
        let enough = Overrides {
            memory_mib: Some(96),
            ..Overrides::default()
        };
        check(&load(None, &enough).unwrap()).unwrap();
    }

    #[test]
    fn cpio_is_newc_with_a_trailer() {
        let a = cpio(&[Entry {
            path: "init".into(),
            mode: 0o100755,
            rdev: (0, 0),
            data: b"abc".to_vec(),
        }]);
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        // Header (110) + "init\0" padded to 116, then 3 bytes padded to 4.
        assert_eq!(&a[110..114], b"init");
        assert_eq!(&a[116..119], b"abc");
        // The mode and file size fields.
        assert_eq!(&a[14..22], b"000081ed");
        assert_eq!(&a[54..62], b"00000003");
        let trailer = &a[120..];
        assert!(trailer.starts_with(b"070701"));
        assert_eq!(&trailer[110..120], b"TRAILER!!!");
    }
}
