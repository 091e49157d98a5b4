//! What gets booted, and where it comes from: the repository, the hypervisor ELF built by
//! cargo, and the GRUB ISO made by `scripts/iso`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root: the runner is built from `scripts/runner` inside it.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Cargo's target directory, as cargo itself picks it (`CARGO_TARGET_DIR` wins).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// Where `cargo build --release -p kernel` puts the hypervisor.
pub fn kernel_elf() -> PathBuf {
    target_dir().join("release/domino")
}

/// Builds the hypervisor (a no-op when it is up to date) and returns its path.
pub fn build_kernel(quiet: bool) -> Result<PathBuf, String> {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(repo_root())
        .args(["build", "--release", "-p", "kernel"]);
    if quiet {
        cargo.arg("--quiet");
    }
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the hypervisor failed (cargo build --release -p kernel)".into());
    }
    let elf = kernel_elf();
    if !elf.is_file() {
        return Err(format!(
            "cargo built the kernel package but {} is missing",
            elf.display()
        ));
    }
    Ok(elf)
}

/// Builds the guest images (`cargo build --release -p workloads`), a no-op when up to date.
/// A separate cargo invocation from the kernel's and the runner's: the guests are
/// freestanding, and one invocation would unify the host crates' `std` features into them.
pub fn build_workloads(quiet: bool) -> Result<(), String> {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(repo_root())
        .args(["build", "--release", "-p", "workloads"]);
    if quiet {
        cargo.arg("--quiet");
    }
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("building the guest images failed (cargo build --release -p workloads)".into())
    }
}

/// `cargo build --release ARGS...` in the repository (a no-op when up to date).
pub fn cargo_build(args: &[&str], quiet: bool) -> Result<(), String> {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(repo_root())
        .args(["build", "--release"])
        .args(args);
    if quiet {
        cargo.arg("--quiet");
    }
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build --release {} failed", args.join(" ")))
    }
}

/// Makes a GRUB multiboot2 ISO with `scripts/iso` that boots `kernel` with `cmdline` and,
/// if given, the boot module `module`.
pub fn make_iso(
    kernel: &Path,
    module: Option<&Path>,
    cmdline: &str,
    iso: &Path,
    quiet: bool,
) -> Result<(), String> {
    let script = repo_root().join("scripts/iso");
    let mut cmd = Command::new(&script);
    if quiet {
        cmd.arg("--quiet").stdout(Stdio::null());
    }
    if let Some(module) = module {
        cmd.arg("--module").arg(module);
    }
    cmd.arg("--kernel")
        .arg(kernel)
        .arg("--out")
        .arg(iso)
        .arg("--");
    cmd.args(cmdline.split_whitespace());
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed to make {}",
            script.display(),
            iso.display()
        ))
    }
}
