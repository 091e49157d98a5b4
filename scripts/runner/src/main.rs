//! `scripts/run`: boots one Domino experiment in QEMU, shows the hypervisor's log as it
//! arrives, writes the results file, prints a summary, and exits 0 (ran as expected),
//! 1 (failed run) or 2 (bad command line or spec, before anything boots).
//!
//! The steps, in order: the spec step (spec + flags → experiment, or exit 2); build the
//! hypervisor; pick the accelerator (KVM only after a probe boot); make the GRUB ISO when
//! asked; boot with a hard timeout; check the records; summarise.

mod accel;
mod artifacts;
mod cli;
mod console;
mod experiment;
mod host;
mod linux;
mod module;
mod qemu;
mod results;
mod trace;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use abi::tool::results::{Record, Records};
use clap::Parser;

use cli::{Accel, Args, Boot, Engine};
use console::Line;
use experiment::{BadInput, Experiment, Overrides};
use qemu::{Ending, Launch, Media};
use results::Results;

/// Why the runner stops before or instead of a verdict from the hypervisor.
enum Stop {
    /// Exit 2: bad command line or spec; nothing was booted.
    BadInput(String),
    /// Exit 1: the run could not happen or did not end well.
    Failed(String),
}

impl From<BadInput> for Stop {
    fn from(e: BadInput) -> Stop {
        Stop::BadInput(e.0)
    }
}

fn main() -> ExitCode {
    // clap prints usage errors and exits 2 itself, as docs/DESIGN.md wants for a bad command line.
    let args = Args::parse();
    let status = match run(&args) {
        Ok(status) => status,
        Err(Stop::BadInput(msg)) => {
            eprintln!("scripts/run: {msg}");
            2
        }
        Err(Stop::Failed(msg)) => {
            eprintln!("scripts/run: {msg}");
            1
        }
    };
    ExitCode::from(status)
}

fn run(args: &Args) -> Result<u8, Stop> {
    if args.probe {
        let kernel = hypervisor(args)?;
        return Ok(match accel::probe_kvm(&kernel, args.machine) {
            Ok(()) => {
                println!("KVM is usable: the probe boot ran x87/SSE code and exited 0");
                0
            }
            Err(why) => {
                println!("KVM is not usable: {why}");
                1
            }
        });
    }

    if args.engine != Engine::Domino {
        check_engine_flags(args)?;
    }
    match args.engine {
        Engine::Domino => {}
        Engine::Schedsim => return schedsim(args),
        Engine::Linux => return linux::run(args),
    }

    let mut exp = experiment::load(args.spec.as_deref(), &overrides(args))?;
    exp.bench = args.bench;
    let cmdline = kernel_cmdline(args, &exp)?;
    check_timeout(args)?;
    let out = results_file(args, &exp.name, "jsonl")?;
    if args.trace.is_some() {
        check_trace_memory(&exp)?;
    }

    let kernel = hypervisor(args)?;
    let boot_module = if args.boot_only {
        None
    } else {
        if !args.no_build {
            artifacts::build_workloads(args.quiet).map_err(Stop::Failed)?;
        }
        let path = artifacts::target_dir().join("modules").join(format!(
            "{}-{}.tar",
            exp.name,
            std::process::id()
        ));
        module::write(&exp, &module::images_dir(), &path).map_err(Stop::Failed)?;
        Some(path)
    };
    let (accel, accel_note) = choose_accel(args, &kernel)?;
    let iso = match args.boot {
        Boot::Pvh => None,
        Boot::Grub => {
            let iso = artifacts::target_dir().join("iso").join(format!(
                "{}-{}.iso",
                exp.name,
                std::process::id()
            ));
            artifacts::make_iso(&kernel, boot_module.as_deref(), &cmdline, &iso, args.quiet)
                .map_err(Stop::Failed)?;
            Some(iso)
        }
    };
    let launch = Launch {
        machine: args.machine,
        accel,
        cpu_model: args.cpu.clone().unwrap_or_else(|| {
            match accel {
                Accel::Kvm => accel::KVM_CPU,
                Accel::Tcg => accel::TCG_CPU,
            }
            .into()
        }),
        cpus: exp.cpus,
        shape: Some(exp.shape),
        memory_mib: exp.memory_mib,
        media: match &iso {
            None => Media::Pvh {
                kernel: kernel.clone(),
                cmdline: cmdline.clone(),
                initrd: boot_module.clone(),
            },
            Some(iso) => Media::Cdrom(iso.clone()),
        },
        extra: args.qemu_arg.clone(),
    };
    let timeout = match args.timeout {
        Some(s) => Duration::from_secs_f64(s),
        None => default_timeout(&exp, accel, args.boot),
    };

    let mut results = Results::create(&out)
        .map_err(|e| Stop::Failed(format!("cannot create {}: {e}", out.display())))?;
    if !args.quiet {
        println!(
            "scripts/run: {} on {} CPUs ({}, {}, {} boot), cmdline `{cmdline}`, timeout {:.0} s",
            exp.name,
            exp.cpus,
            args.machine.name(),
            accel.name(),
            args.boot.name(),
            timeout.as_secs_f64()
        );
        println!("scripts/run: {}", launch.shell_line());
    }
    let mut write_error = None;
    let mut trace_lines = Vec::new();
    let mut progress = console::Progress::new(std::io::stdout().is_terminal());
    let show_progress = !args.quiet && !args.verbose;
    if show_progress {
        progress.show(format!("booting {} CPUs ({})", exp.cpus, accel.name()));
    }
    // The hypervisor's last error lines, to say why a failed run failed even when the log
    // is not shown (--quiet, the test drivers).
    let mut errors: Vec<String> = Vec::new();
    let ticks_before = host::Ticks::now();
    let outcome = qemu::boot(
        &launch,
        timeout,
        |line| match line {
            Line::Log(text) => {
                if text.contains(" ERROR ") {
                    if errors.len() == 4 {
                        errors.remove(0);
                    }
                    errors.push(text.split(" ERROR ").nth(1).unwrap_or(&text).to_string());
                }
                if args.verbose {
                    println!("{text}");
                } else if show_progress && console::shown_by_default(&text) {
                    progress.line(&text);
                }
            }
            Line::Record(json) => {
                if args.verbose {
                    println!("{}{json}", abi::tool::console::RECORD_PREFIX);
                }
                let before = results.records().len();
                if let Err(e) = results.record(&json) {
                    write_error.get_or_insert(e);
                }
                if show_progress && let Some(r) = results.records()[before..].first() {
                    if let Some(text) = console::progress_text(r) {
                        progress.show(text);
                    }
                    if let Some(text) = console::event_line(r) {
                        progress.line(&text);
                    }
                }
            }
            Line::Trace(event) => trace_lines.push(event),
        },
        |line| {
            if !args.quiet {
                eprintln!("qemu: {line}");
            }
        },
    )
    .map_err(|e| Stop::Failed(format!("cannot start {}: {e}", qemu::QEMU)))?;
    for file in iso.iter().chain(&boot_module) {
        let _ = std::fs::remove_file(file);
    }

    progress.finish();
    let mut status = outcome.ending.status() as u8;
    let mut verdict = ending_message(&outcome.ending, timeout, &outcome.stderr, &exp.policy);
    if outcome.ending == Ending::Hypervisor(abi::tool::console::ExitCode::Failure)
        && !errors.is_empty()
    {
        verdict = format!("the hypervisor reported a failure: {}", errors.join(" / "));
    }
    if outcome.ending == Ending::Hypervisor(abi::tool::console::ExitCode::Success) {
        let mut problems = results::problems(results.records(), results.malformed(), exp.cpus);
        problems.extend(results::topology_problem(results.records(), exp.shape));
        problems.extend(results::heap_problem(results.records()));
        problems.extend(sched::windows::problems(results.records()));
        problems.extend(results::latency_problems(results.records()));
        if boot_module.is_some() {
            problems.extend(results::starved_summary(&results::starved(
                results.records(),
                &exp.plan,
            )));
        }
        if !problems.is_empty() {
            status = 1;
            verdict = format!("the hypervisor exited 0, but {}", problems.join("; "));
        }
    }
    if let Some(e) = write_error {
        status = 1;
        verdict = format!("cannot write {}: {e}", out.display());
    }
    if boot_module.is_some() {
        let weighted = sched::registry::info(&exp.policy)
            .is_ok_and(|info| info.domain_param("weight").is_some());
        if let Some(summary) = results::summary_record(results.records(), weighted, status == 0)
            && let Err(e) = results.push(Record::Summary(summary))
        {
            status = 1;
            verdict = format!("cannot write {}: {e}", out.display());
        }
        if status == 0 && results.records().run().is_none() {
            status = 1;
            verdict = "the hypervisor exited 0 but Domain0 wrote no run record".into();
        }
    }
    if let Some(path) = &args.trace {
        let (json, bad) = trace::to_chrome(&trace_lines, results.records());
        match std::fs::write(path, json) {
            Ok(()) => println!(
                "  trace:   {} ({} events{})",
                path.display(),
                trace_lines.len() - bad,
                if bad > 0 {
                    format!(", {bad} unreadable lines skipped")
                } else {
                    String::new()
                }
            ),
            Err(e) => {
                status = 1;
                verdict = format!("cannot write the trace {}: {e}", path.display());
            }
        }
    }
    let cores = host::cores();
    let other_load = ticks_before
        .zip(host::Ticks::now())
        .map(|(a, b)| a.other_load(&b, outcome.wall));
    let _ = results.exit_record(
        i32::from(status),
        outcome.ending.cause(),
        outcome.wall.as_nanos(),
        other_load.map(|load| (cores, load)),
    );

    println!("summary: {}", exp.name);
    let boot =
        results::boot_line(results.records(), exp.cpus).unwrap_or_else(|| "no boot record".into());
    println!("  boot:    {boot}");
    println!(
        "  machine: {}, {} boot, {} MiB, {} (cpu {}), {:.2} s wall",
        args.machine.name(),
        args.boot.name(),
        exp.memory_mib,
        accel.name(),
        launch.cpu_model,
        outcome.wall.as_secs_f64()
    );
    if let Some(note) = accel_note {
        println!("  accel:   {note}");
    }
    if let Some(line) = results::slice_line(results.records()) {
        println!("  slices:  {line}");
    }
    if let Some(note) = host::contention(cores, exp.cpus, other_load.unwrap_or(0.0)) {
        println!("  host:    {note}");
    }
    if boot_module.is_some() {
        let weighted = sched::registry::info(&exp.policy)
            .is_ok_and(|info| info.domain_param("weight").is_some());
        for line in console::group_lines(results.records(), weighted) {
            println!("  {line}");
        }
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

/// The flags that only the hypervisor understands, refused (exit 2) with another engine.
fn check_engine_flags(args: &Args) -> Result<(), Stop> {
    let engine = args.engine.name();
    let mut domino_only: Vec<&str> = Vec::new();
    let mut flag = |given: bool, name: &'static str| {
        if given {
            domino_only.push(name);
        }
    };
    flag(args.bench, "--bench");
    flag(args.boot_only, "--boot-only");
    flag(args.kernel.is_some(), "--kernel");
    flag(!args.append.is_empty(), "--append");
    flag(args.boot == Boot::Grub, "--boot grub");
    flag(args.trace.is_some(), "--trace");
    if args.engine == Engine::Schedsim {
        // schedsim boots nothing: the QEMU knobs mean nothing to it.
        flag(args.accel.is_some(), "--accel");
        flag(args.memory.is_some(), "--memory");
        flag(args.cpu.is_some(), "--cpu");
        flag(args.timeout.is_some(), "--timeout");
        flag(!args.qemu_arg.is_empty(), "--qemu-arg");
        flag(args.machine != cli::Machine::Q35, "--machine");
    }
    if domino_only.is_empty() {
        return Ok(());
    }
    Err(Stop::BadInput(format!(
        "--engine {engine}: {} only apply to --engine domino; allowed with {engine}: the spec, \
         --sched, --cpus, --domains, --workload, --seconds, --out{}",
        domino_only.join(", "),
        if args.engine == Engine::Linux {
            ", --accel, --memory, --cpu, --machine, --timeout, --qemu-arg, --quiet, --no-build"
        } else {
            ", --quiet, --no-build"
        }
    )))
}

/// `--engine schedsim`: the simulator's own binary, with the same spec and flags; its exit
/// status is the run's. The spec is checked here first, so a bad one exits 2 the same way.
fn schedsim(args: &Args) -> Result<u8, Stop> {
    let exp = experiment::load(args.spec.as_deref(), &overrides(args))?;
    let out = results_file(args, &exp.name, "schedsim.jsonl")?;
    let spec = match &args.spec {
        Some(spec) => spec.clone(),
        None => artifacts::repo_root().join("scripts/experiments/default.toml"),
    };
    let bin = artifacts::target_dir().join("release/schedsim");
    if !args.no_build {
        artifacts::cargo_build(&["-p", "sched", "--bin", "schedsim"], args.quiet)
            .map_err(Stop::Failed)?;
    }
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg(&spec).arg("--out").arg(&out);
    if let Some(p) = &args.sched {
        cmd.args(["--sched", p]);
    }
    for (flag, value) in [("--cpus", args.cpus), ("--domains", args.domains)] {
        if let Some(v) = value {
            cmd.arg(flag).arg(v.to_string());
        }
    }
    if let Some(w) = &args.workload {
        cmd.args(["--workload", w]);
    }
    if let Some(s) = args.seconds {
        cmd.arg("--seconds").arg(s.to_string());
    }
    if let Some(ms) = args.window_ms {
        cmd.arg("--window-ms").arg(ms.to_string());
    }
    let status = cmd
        .status()
        .map_err(|e| Stop::Failed(format!("cannot run {}: {e}", bin.display())))?;
    Ok(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
}

/// The spec overrides the command line gives.
fn overrides(args: &Args) -> Overrides {
    Overrides {
        sched: args.sched.clone(),
        cpus: args.cpus,
        domains: args.domains,
        workload: args.workload.clone(),
        seconds: args.seconds,
        memory_mib: args.memory,
        window_ms: args.window_ms,
    }
}

/// `--timeout`, if given, must be a positive number of seconds.
fn check_timeout(args: &Args) -> Result<(), Stop> {
    match args.timeout {
        Some(t) if !(t.is_finite() && t > 0.0) => Err(Stop::BadInput(format!(
            "--timeout {t}: must be a positive number of seconds"
        ))),
        _ => Ok(()),
    }
}

/// Where the results go: `--out`, else `results/NAME.EXT`, refused if it is a directory.
fn results_file(args: &Args, name: &str, ext: &str) -> Result<std::path::PathBuf, BadInput> {
    let out = match &args.out {
        Some(out) => out.clone(),
        None => artifacts::repo_root()
            .join("results")
            .join(format!("{name}.{ext}")),
    };
    check_out(&out, args.out.is_some())?;
    Ok(out)
}

/// The results file must be a file: a directory there (or a file where its directory
/// should be) is a bad `--out`, refused before anything boots.
fn check_out(out: &std::path::Path, flag: bool) -> Result<(), BadInput> {
    let what = if flag { "--out" } else { "the results file" };
    if out.is_dir() {
        return Err(BadInput(format!(
            "{what} {}: is a directory; allowed: a file path (JSON Lines), e.g. {}",
            out.display(),
            out.join("results.jsonl").display()
        )));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && dir.ancestors().any(std::path::Path::is_file)
    {
        return Err(BadInput(format!(
            "{what} {}: {} is a file, so it cannot hold the results; allowed: a file path \
             in a directory",
            out.display(),
            dir.ancestors()
                .find(|a| a.is_file())
                .unwrap_or(dir)
                .display()
        )));
    }
    Ok(())
}

/// With `--trace` the hypervisor keeps an event buffer per CPU on its heap: the machine
/// must still hold everything (`sched::limits`), or the run would fail after boot.
fn check_trace_memory(exp: &Experiment) -> Result<(), BadInput> {
    use sched::limits::Demand;
    let demand = Demand {
        trace: true,
        ..exp.demand
    };
    let mib = u64::from(exp.memory_mib);
    if sched::limits::fits(&demand, mib) {
        return Ok(());
    }
    let supply = sched::limits::supply(mib);
    let max_mib = sched::spec::MAX_MEMORY_MIB;
    let allowed = match sched::limits::smallest_machine_mib(&demand, max_mib) {
        Some(m) => format!("--memory {m} or more, or fewer CPUs"),
        None => {
            let best = (1..u64::from(exp.cpus)).rev().find_map(|cpus| {
                sched::limits::smallest_machine_mib(&Demand { cpus, ..demand }, max_mib)
                    .map(|m| (cpus, m))
            });
            match best {
                Some((cpus, m)) => format!("at most {cpus} CPUs with --trace (and --memory {m})"),
                None => "no tracing on this experiment".into(),
            }
        }
    };
    Err(BadInput(format!(
        "--trace: tracing keeps {} MiB of events per CPU on the hypervisor's heap; with {} CPUs \
         it needs {} MiB of the {} MiB a {mib} MiB machine gives it; allowed: {allowed}",
        sched::limits::TRACE_BYTES_PER_CPU >> 20,
        exp.cpus,
        sched::limits::heap_demand(&demand, mib).div_ceil(1 << 20),
        supply.heap_bytes >> 20
    )))
}

/// The hypervisor ELF: `--kernel`, or built by cargo (unless `--no-build`).
fn hypervisor(args: &Args) -> Result<PathBuf, Stop> {
    if let Some(elf) = &args.kernel {
        return if elf.is_file() {
            Ok(elf.clone())
        } else {
            Err(Stop::BadInput(format!(
                "--kernel {}: no such file",
                elf.display()
            )))
        };
    }
    if args.no_build {
        let elf = artifacts::kernel_elf();
        return if elf.is_file() {
            Ok(elf)
        } else {
            Err(Stop::Failed(format!(
                "--no-build: {} is not built",
                elf.display()
            )))
        };
    }
    artifacts::build_kernel(args.quiet).map_err(Stop::Failed)
}

/// The kernel command line: the experiment's words, then `--append` (later words win in
/// the hypervisor's parser). Only the `key=value` shape is checked here; keys and values
/// are the hypervisor's to judge, and it exits 2 on one it does not know.
fn kernel_cmdline(args: &Args, exp: &Experiment) -> Result<String, BadInput> {
    let mut words = vec![
        format!("loglevel={}", args.loglevel.name()),
        format!("sched={}", exp.policy),
    ];
    if exp.pools {
        // Every pool in the spec's order, the first Domain0's, each with its policy, CPUs
        // and knobs resolved (`Spec::pool_plans`).
        for p in &exp.pool_plans {
            let cpus: Vec<String> = p.cpus.iter().map(usize::to_string).collect();
            words.push(format!("pool.{}.policy={}", p.name, p.policy));
            words.push(format!("pool.{}.cpus={}", p.name, cpus.join(",")));
            words.extend(
                p.knobs
                    .iter()
                    .map(|(k, v)| format!("pool.{}.{k}={v}", p.name)),
            );
        }
    } else {
        words.extend(exp.globals.iter().map(|(k, v)| format!("sched.{k}={v}")));
    }
    if args.trace.is_some() {
        words.push("trace=on".into());
    }
    for word in args.append.iter().flat_map(|a| a.split_whitespace()) {
        match word.split_once('=') {
            Some((key, _)) if !key.is_empty() => words.push(word.to_string()),
            _ => {
                return Err(BadInput(format!(
                    "--append: `{word}` is not a key=value word (e.g. selftest=fault)"
                )));
            }
        }
    }
    Ok(words.join(" "))
}

/// KVM or TCG, and a note on why when it is not what the user might expect.
fn choose_accel(args: &Args, kernel: &std::path::Path) -> Result<(Accel, Option<String>), Stop> {
    match args.accel {
        Some(Accel::Tcg) => Ok((Accel::Tcg, None)),
        Some(Accel::Kvm) => match accel::probe_kvm(kernel, args.machine) {
            Ok(()) => Ok((Accel::Kvm, None)),
            Err(why) => Err(Stop::Failed(format!(
                "--accel kvm: KVM is not usable here: {why}"
            ))),
        },
        None => match accel::probe_kvm(kernel, args.machine) {
            Ok(()) => Ok((Accel::Kvm, None)),
            Err(why) => {
                eprintln!("scripts/run: using TCG: {why}");
                Ok((Accel::Tcg, Some(format!("TCG, because {why}"))))
            }
        },
    }
}

/// The default hard timeout: the experiment's own length plus a boot margin that grows with
/// the CPU count, steeply under TCG (every vCPU is a host thread on a few cores), plus time
/// for GRUB to load the image from the ISO.
fn default_timeout(exp: &Experiment, accel: Accel, boot: Boot) -> Duration {
    let per_cpu_ms: u64 = match accel {
        Accel::Tcg => 1000,
        Accel::Kvm => 100,
    };
    let grub_ms = match boot {
        Boot::Pvh => 0,
        Boot::Grub => 30_000,
    };
    let boot_ms = 30_000 + u64::from(exp.cpus) * per_cpu_ms + grub_ms;
    // Domain0 creates, measures and tears down each domain while the others compete for
    // the CPUs: under TCG that is most of a long run's time past a few hundred domains.
    let per_domain_ms = match accel {
        Accel::Tcg => 300,
        Accel::Kvm => 30,
    };
    let domains_ms = u64::from(exp.domains) * per_domain_ms;
    let Some(churn) = &exp.churn else {
        return Duration::from_millis(boot_ms + domains_ms + exp.warmup_ms + exp.duration_ms * 2);
    };
    // A churn run is lifetimes, not an interval: each costs a creation, part of a round's
    // run and a destruction (under TCG 2-5 ms; a generous 30 here).
    let per_lifetime_ms = match accel {
        Accel::Tcg => 30,
        Accel::Kvm => 3,
    };
    let rounds = churn.lifetimes.div_ceil(u64::from(exp.domains.max(1)));
    Duration::from_millis(
        boot_ms + domains_ms + churn.lifetimes * per_lifetime_ms + rounds * churn.run_ms,
    )
}

/// What an ending means, in words; `policy` says why a run may hang.
fn ending_message(ending: &Ending, timeout: Duration, stderr: &[String], policy: &str) -> String {
    use abi::tool::console::ExitCode as Code;
    let qemu_said = || {
        let tail: Vec<&str> = stderr
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect();
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.join(" / "))
        }
    };
    match ending {
        Ending::Hypervisor(Code::Success) => "success".into(),
        Ending::Hypervisor(Code::Failure) => {
            "the hypervisor reported a failure; see its log".into()
        }
        Ending::Hypervisor(Code::BadInput) => {
            "the hypervisor rejected its command line or spec; see its log".into()
        }
        Ending::Reset => "QEMU exited without the hypervisor's exit code: a triple fault, \
                          reset or power-off"
            .into(),
        Ending::Qemu(code) => format!("QEMU failed with status {code}{}", qemu_said()),
        Ending::Signal => format!("QEMU was killed by a signal{}", qemu_said()),
        Ending::Timeout => {
            let why = if sched::registry::info(policy).is_ok_and(|p| !p.preempts) {
                format!(
                    "; `{policy}` never preempts, so vCPUs that never block can keep Domain0 \
                     from ever running again to end the run"
                )
            } else {
                String::new()
            };
            format!(
                "no exit within {:.0} s, QEMU killed (raise --timeout if the run needs longer){why}",
                timeout.as_secs_f64()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_from_experiment_and_append() {
        let args = Args::parse_from(["run", "--append", "selftest=fault  x=1", "--append", "y=2"]);
        let exp = experiment::load(None, &Overrides::default()).unwrap();
        assert_eq!(
            kernel_cmdline(&args, &exp).unwrap(),
            "loglevel=info sched=credit selftest=fault x=1 y=2"
        );
        let args = Args::parse_from(["run", "--append", "bogus"]);
        assert!(
            kernel_cmdline(&args, &exp)
                .unwrap_err()
                .0
                .contains("`bogus`")
        );
    }

    #[test]
    fn other_engines_refuse_hypervisor_only_flags() {
        let refused = |argv: &[&str]| match check_engine_flags(&Args::parse_from(argv)) {
            Err(Stop::BadInput(msg)) => msg,
            Err(Stop::Failed(msg)) => panic!("failed, not refused: {msg}"),
            Ok(()) => String::new(),
        };
        let msg = refused(&["run", "--engine", "linux", "--bench", "--trace", "t.json"]);
        assert!(
            msg.starts_with("--engine linux: --bench, --trace only apply to --engine domino"),
            "{msg}"
        );
        // The QEMU knobs are the Linux engine's too, not schedsim's.
        assert_eq!(
            refused(&[
                "run", "--engine", "linux", "--accel", "tcg", "--memory", "512"
            ]),
            ""
        );
        let msg = refused(&["run", "--engine", "schedsim", "--accel", "tcg"]);
        assert!(msg.contains("--accel only apply"), "{msg}");
        assert_eq!(
            refused(&["run", "--engine", "schedsim", "--seconds", "1"]),
            ""
        );
    }

    #[test]
    fn out_must_be_a_file_path() {
        let dir = std::env::temp_dir().join(format!("runner-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = check_out(&dir, true).unwrap_err().0;
        assert!(
            e.starts_with("--out ") && e.contains("is a directory"),
            "{e}"
        );
        check_out(&dir.join("r.jsonl"), true).unwrap();
        check_out(&dir.join("new/sub/r.jsonl"), true).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        let e = check_out(&file.join("r.jsonl"), true).unwrap_err().0;
        assert!(e.contains("is a file"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tracing_needs_heap_for_every_cpu() {
        let mut exp = experiment::load(None, &Overrides::default()).unwrap();
        check_trace_memory(&exp).unwrap();
        // 64 CPUs with 3 MiB of trace each do not fit a 256 MiB machine's 62 MiB heap.
        exp.cpus = 64;
        exp.demand.cpus = 64;
        exp.memory_mib = 256;
        let e = check_trace_memory(&exp).unwrap_err().0;
        assert!(
            e.starts_with("--trace: ") && e.contains("or fewer CPUs"),
            "{e}"
        );
        let mib: u32 = e
            .split("--memory ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        exp.memory_mib = mib;
        check_trace_memory(&exp).unwrap();
        exp.memory_mib = mib - 1;
        check_trace_memory(&exp).unwrap_err();
        // 255 CPUs' buffers outgrow the largest heap (512 MiB) whatever the memory.
        exp.cpus = 255;
        exp.demand.cpus = 255;
        let e = check_trace_memory(&exp).unwrap_err().0;
        assert!(e.contains("CPUs with --trace (and --memory "), "{e}");
    }

    #[test]
    fn timeout_names_a_policy_that_never_preempts() {
        let m = ending_message(&Ending::Timeout, Duration::from_secs(9), &[], "fifo");
        assert!(
            m.contains("`fifo` never preempts") && m.contains("Domain0"),
            "{m}"
        );
        let m = ending_message(&Ending::Timeout, Duration::from_secs(9), &[], "credit");
        assert!(!m.contains("preempt"), "{m}");
    }

    #[test]
    fn timeout_grows_with_cpus_and_tcg() {
        let mut exp = experiment::load(None, &Overrides::default()).unwrap();
        exp.cpus = 1;
        let small = default_timeout(&exp, Accel::Tcg, Boot::Pvh);
        exp.cpus = 64;
        let big = default_timeout(&exp, Accel::Tcg, Boot::Pvh);
        assert!(big > small);
        assert!(default_timeout(&exp, Accel::Kvm, Boot::Pvh) < big);
        assert!(default_timeout(&exp, Accel::Tcg, Boot::Grub) > big);
        // A churn run's length is its lifetimes, not its (unused) interval.
        exp.churn = Some(sched::spec::Churn {
            lifetimes: 10_000,
            run_ms: 20,
            check_every: 1000,
            seed: 1,
        });
        assert!(default_timeout(&exp, Accel::Tcg, Boot::Pvh) > Duration::from_secs(300));
    }
}
