//! `boot-matrix`: the QEMU half of `scripts/test`. Boots the hypervisor through `runner`
//! over CPU counts × machine types × boot paths, plus the runs that must fail (a bad kernel
//! command line, a deliberate fault, bad specs and flags, a forced KVM that fails its probe),
//! and checks each run's exit status and results file, never its log wording. Runs the
//! same boot matrix under KVM when the KVM probe passes. The last line of output is
//! `N passed, N failed`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use abi::tool::results::{Cause, Record, Records};
use runner::{invoke, probe_kvm, read_records, show_failure, sibling_runner};

/// CPU counts of the boot matrix (docs/DESIGN.md: correct for 1 to 255 CPUs). Under TCG on
/// two host cores a boot takes about 0.2 s at 8 CPUs and 4 to 5 s at 255, so the matrix is
/// complete rather than pruned, except that 255 is booted through PVH only.
const CPUS: [u32; 6] = [1, 2, 4, 8, 64, 255];
/// CPU counts booted through GRUB.
const GRUB_CPUS: [u32; 5] = [1, 2, 4, 8, 64];
const MACHINES: [&str; 2] = ["pc", "q35"];

/// What a case must produce.
#[derive(Debug, Clone)]
enum Expect {
    /// Exit 0; a boot record with every CPU online, an APIC mode and a boot time; the
    /// runner's exit record says the hypervisor ended the run with 0.
    Boot {
        cpus: u32,
        accel: &'static str,
        protocol: &'static str,
    },
    /// The hypervisor itself ended the run with this status (the exit record says so).
    HypervisorExit(i32),
    /// Exit 2 before anything boots, with a message naming `field`; no results file.
    BadInput { field: &'static str },
    /// Exit 1 within this time (no hang).
    FailsWithin(Duration),
    /// Exit 0; a boot record whose CPU topology is QEMU's `-smp sockets=,cores=,threads=`
    /// (the spec's `[machine]`): that many sockets, cores per socket and threads per core,
    /// and every CPU at the APIC id QEMU gives it, in the socket and core that
    /// `sched::Topology::shaped` (schedsim's numbering) puts it in.
    Shape {
        sockets: u32,
        cores: u32,
        threads: u32,
        /// The CPUID leaves the hypervisor must have read it from (`boot.topology`).
        source: &'static str,
    },
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    args: Vec<String>,
    expect: Expect,
}

fn case(name: impl Into<String>, args: &[&str], expect: Expect) -> Case {
    Case {
        name: name.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        expect,
    }
}

/// The boot matrix for one accelerator.
fn boot_matrix(accel: &'static str, cases: &mut Vec<Case>) {
    for (boot, counts) in [("pvh", &CPUS[..]), ("grub", &GRUB_CPUS[..])] {
        for machine in MACHINES {
            for &cpus in counts {
                let n = cpus.to_string();
                cases.push(case(
                    format!("{accel}/{boot}/{machine}/cpus={cpus}"),
                    &[
                        "--boot-only",
                        "--accel",
                        accel,
                        "--boot",
                        boot,
                        "--machine",
                        machine,
                        "--cpus",
                        &n,
                    ],
                    Expect::Boot {
                        cpus,
                        accel,
                        protocol: if boot == "pvh" { "pvh" } else { "multiboot2" },
                    },
                ));
            }
        }
    }
}

/// Runs that must fail, and how.
fn failure_cases(dir: &Path, kvm_usable: bool, cases: &mut Vec<Case>) -> std::io::Result<()> {
    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        ["--boot-only", "--accel", "tcg", "--cpus", "1"]
            .iter()
            .chain(extra)
            .copied()
            .collect()
    }
    cases.push(case(
        "tcg/bad-cmdline-word",
        &with(&["--append", "bogus=1"]),
        Expect::HypervisorExit(2),
    ));
    cases.push(case(
        "tcg/bad-cmdline-value",
        &with(&["--append", "loglevel=loud"]),
        Expect::HypervisorExit(2),
    ));
    cases.push(case(
        "tcg/selftest-fault",
        &with(&["--append", "selftest=fault"]),
        Expect::HypervisorExit(1),
    ));
    cases.push(case(
        "tcg/grub/selftest-fault",
        &with(&["--boot", "grub", "--append", "selftest=fault"]),
        Expect::HypervisorExit(1),
    ));

    let good = "name = \"matrix-spec\"\nduration_ms = 100\n[machine]\ncpus = 2\n[sched]\npolicy = \"rr\"\n\
                [[domain]]\nname = \"w\"\nworkload = \"cpu\"\n";
    let spec = |file: &str, text: &str| -> std::io::Result<String> {
        let path = dir.join(file);
        fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let good_path = spec("good.toml", good)?;
    cases.push(case(
        "tcg/spec",
        &["--accel", "tcg", &good_path],
        Expect::Boot {
            cpus: 2,
            accel: "tcg",
            protocol: "pvh",
        },
    ));
    // The same experiment with its boot module loaded by GRUB (multiboot2 `module2`).
    cases.push(case(
        "tcg/grub/spec",
        &["--accel", "tcg", "--boot", "grub", &good_path],
        Expect::Boot {
            cpus: 2,
            accel: "tcg",
            protocol: "multiboot2",
        },
    ));
    // CPU 1 hangs in the hypervisor once the experiment runs: the watchdog of CPU 0 must
    // find it and stop the machine with a failure within a second, long before the
    // runner's timeout (without the watchdog this case runs into that timeout).
    cases.push(case(
        "tcg/selftest-hang",
        &["--accel", "tcg", &good_path, "--append", "selftest=hang"],
        Expect::FailsWithin(Duration::from_secs(10)),
    ));
    // The CPU topology: the hypervisor reads each CPU's socket and core from CPUID and the
    // APIC ids; 2 × 3 × 2 has holes in the APIC ids (cores and threads are not powers of
    // two in the same field widths) and hardware threads.
    // The last case hides leaf 0Bh (`level=0xa`) from an Intel-flavoured CPU: the fallback
    // to leaf 1's logical count and leaf 4's core count must give the same places.
    for (sockets, cores, threads, cpu, source) in [
        (2, 2, 1, None, "cpuid-0xb"),
        (2, 3, 2, None, "cpuid-0xb"),
        (
            2,
            3,
            2,
            Some("max,vendor=GenuineIntel,level=0xa"),
            "cpuid-1",
        ),
    ] {
        let machine = format!(
            "cpus = {}\nsockets = {sockets}\ncores = {cores}\nthreads = {threads}\n",
            sockets * cores * threads
        );
        let name = format!("topology-{sockets}x{cores}x{threads}");
        let path = spec(
            &format!("{name}.toml"),
            &good.replace("cpus = 2\n", &machine),
        )?;
        let mut args = vec!["--boot-only", "--accel", "tcg", &path];
        if let Some(cpu) = cpu {
            args.extend(["--cpu", cpu]);
        }
        cases.push(case(
            format!("tcg/{name}/{source}"),
            &args,
            Expect::Shape {
                sockets,
                cores,
                threads,
                source,
            },
        ));
    }
    let bad = spec(
        "bad-shape.toml",
        &good.replace("cpus = 2\n", "cpus = 4\nsockets = 2\ncores = 4\n"),
    )?;
    cases.push(case(
        "bad-spec/machine.cores",
        &["--accel", "tcg", &bad],
        Expect::BadInput {
            field: "machine.cores",
        },
    ));
    let bad = spec("bad-cpus.toml", &good.replace("cpus = 2", "cpus = 0"))?;
    cases.push(case(
        "bad-spec/machine.cpus",
        &["--accel", "tcg", &bad],
        Expect::BadInput {
            field: "machine.cpus",
        },
    ));
    let bad = spec("bad-policy.toml", &good.replace("\"rr\"", "\"lottery\""))?;
    cases.push(case(
        "bad-spec/sched.policy",
        &["--accel", "tcg", &bad],
        Expect::BadInput {
            field: "sched.policy",
        },
    ));
    // Limits the hypervisor or Domain0 would only hit after boot (sched::limits): refused
    // before it, naming the field.
    let with_group = |group: &str| good.replace("name = \"w\"\nworkload = \"cpu\"\n", group);
    for (file, field, text) in [
        (
            "long-name.toml",
            "domain[0].name",
            with_group(&format!(
                "name = \"{}\"\ncount = 11\nworkload = \"cpu\"\n",
                "w".repeat(31)
            )),
        ),
        (
            "small-memory.toml",
            "domain[0].memory_kib",
            with_group("name = \"w\"\nworkload = \"cpu\"\nvcpus = 64\n"),
        ),
        (
            "vcpus-in-all.toml",
            "6400 vCPUs in all",
            with_group(
                "name = \"w\"\ncount = 100\nworkload = \"cpu\"\nvcpus = 64\nmemory_kib = 8192\n",
            ),
        ),
        (
            "small-machine.toml",
            "machine.memory_mib",
            with_group("name = \"w\"\ncount = 100\nworkload = \"cpu\"\nvcpus = 4\n")
                .replace("cpus = 2\n", "cpus = 2\nmemory_mib = 64\n"),
        ),
        (
            "fifo-hogs.toml",
            "never preempts",
            with_group("name = \"w\"\ncount = 4\nworkload = \"cpu\"\n")
                .replace("\"rr\"", "\"fifo\""),
        ),
    ] {
        let bad = spec(file, &text)?;
        cases.push(case(
            format!("bad-spec/{}", file.trim_end_matches(".toml")),
            &["--accel", "tcg", &bad],
            Expect::BadInput { field },
        ));
    }
    cases.push(case(
        "bad-flag/--sched",
        &["--sched", "lottery"],
        Expect::BadInput { field: "--sched" },
    ));
    cases.push(case(
        "bad-flag/--cpus",
        &["--cpus", "256"],
        Expect::BadInput { field: "--cpus" },
    ));
    cases.push(case(
        "bad-flag/unknown",
        &["--frobnicate"],
        Expect::BadInput {
            field: "--frobnicate",
        },
    ));
    if !kvm_usable {
        cases.push(case(
            "kvm-forced-fails-fast",
            &["--boot-only", "--accel", "kvm", "--cpus", "1"],
            Expect::FailsWithin(Duration::from_secs(20)),
        ));
    }
    Ok(())
}

/// Checks one finished run; `Err` says what is wrong.
fn check(
    expect: &Expect,
    status: Option<i32>,
    took: Duration,
    out: &Path,
    log: &str,
) -> Result<(), String> {
    let records = || read_records(out);
    let exit_record = |records: &[Record], want: i32| -> Result<(), String> {
        let exit = records.exit().ok_or("no exit record")?;
        if exit.status != want || exit.cause != Cause::Hypervisor {
            return Err(format!(
                "exit record {exit:?}, expected status {want} from the hypervisor"
            ));
        }
        Ok(())
    };
    match expect {
        Expect::Boot {
            cpus,
            accel,
            protocol,
        } => {
            if status != Some(0) {
                return Err(format!("exit status {}, expected 0", shown(status)));
            }
            // The record's types hold the APIC mode to xapic or x2apic and the boot time
            // to a count of nanoseconds.
            let records = records()?;
            let boot = records.boot().ok_or("no boot record")?;
            if boot.cpus_online != *cpus {
                return Err(format!("cpus_online {} of {cpus}", boot.cpus_online));
            }
            if boot.protocol != *protocol {
                return Err(format!("protocol {}, expected {protocol:?}", boot.protocol));
            }
            if boot.accel != *accel {
                return Err(format!("accel {}, expected {accel:?}", boot.accel));
            }
            exit_record(&records, 0)
        }
        Expect::HypervisorExit(want) => {
            if status != Some(*want) {
                return Err(format!("exit status {}, expected {want}", shown(status)));
            }
            exit_record(&records()?, *want)
        }
        Expect::BadInput { field } => {
            if status != Some(2) {
                return Err(format!("exit status {}, expected 2", shown(status)));
            }
            if out.exists() {
                return Err("a results file was written: something booted".into());
            }
            if !log.contains(field) {
                return Err(format!("the message does not name `{field}`"));
            }
            Ok(())
        }
        Expect::Shape {
            sockets,
            cores,
            threads,
            source,
        } => {
            if status != Some(0) {
                return Err(format!("exit status {}, expected 0", shown(status)));
            }
            let records = records()?;
            let boot = records.boot().ok_or("no boot record")?;
            let cpus = sockets * cores * threads;
            if boot.cpus_online != cpus {
                return Err(format!("cpus_online {} of {cpus}", boot.cpus_online));
            }
            if boot.topology.as_deref() != Some(*source) {
                return Err(format!(
                    "topology read from {:?}, expected {source}",
                    boot.topology
                ));
            }
            let got = (boot.sockets, boot.cores, boot.threads);
            if got != (Some(*sockets), Some(*cores), Some(*threads)) {
                return Err(format!(
                    "boot record's (sockets, cores, threads) {got:?}, expected \
                     ({sockets}, {cores}, {threads})"
                ));
            }
            let shaped =
                sched::Topology::shaped(cpus as usize, 1, 1, *cores as usize, *threads as usize);
            // QEMU's APIC ids (`apicid_from_topo_ids`): thread, core and socket fields,
            // each as wide as its count needs.
            let bits = |n: u32| 32 - (n - 1).leading_zeros();
            let (t_bits, c_bits) = (bits(*threads), bits(*cores));
            let want: Vec<[u32; 3]> = (0..cpus)
                .map(|i| {
                    let (s, c, t) = (i / (cores * threads), i / threads % cores, i % threads);
                    let place = shaped.place(i as usize);
                    [
                        (s << (c_bits + t_bits)) | (c << t_bits) | t,
                        u32::from(place.socket),
                        u32::from(place.core),
                    ]
                })
                .collect();
            match &boot.places {
                Some(places) if *places == want => exit_record(&records, 0),
                got => Err(format!(
                    "places [APIC id, socket, core] {got:?}, expected {want:?}"
                )),
            }
        }
        Expect::FailsWithin(limit) => {
            if status != Some(1) {
                return Err(format!("exit status {}, expected 1", shown(status)));
            }
            if took > *limit {
                return Err(format!(
                    "took {:.1} s, more than {} s",
                    took.as_secs_f64(),
                    limit.as_secs()
                ));
            }
            Ok(())
        }
    }
}

/// An exit status for messages.
fn shown(status: Option<i32>) -> String {
    status.map_or_else(|| "none (killed)".into(), |s| s.to_string())
}

struct Options {
    runner: PathBuf,
    filter: Vec<String>,
    list: bool,
    keep: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        runner: sibling_runner(),
        filter: Vec::new(),
        list: false,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runner" => o.runner = args.next().ok_or("--runner needs a path")?.into(),
            "--list" => o.list = true,
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                return Err(
                    "usage: boot-matrix [--runner PATH] [--list] [--keep] [FILTER...]\n\
                            runs the cases whose name contains any FILTER (all without one)"
                        .into(),
                );
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => o.filter.push(s.to_string()),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match options() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("boot-matrix: {msg}");
            return ExitCode::from(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("domino-boot-matrix-{}", std::process::id()));
    if let Err(e) = fs::create_dir_all(&dir) {
        eprintln!("boot-matrix: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }

    // KVM joins the matrix only where the probe passes (never on the build machines).
    let (kvm_usable, verdict) = probe_kvm(&opts.runner);
    println!("boot-matrix: {verdict}");

    let mut cases = Vec::new();
    boot_matrix("tcg", &mut cases);
    if kvm_usable {
        boot_matrix("kvm", &mut cases);
    }
    if let Err(e) = failure_cases(&dir, kvm_usable, &mut cases) {
        eprintln!("boot-matrix: cannot write specs: {e}");
        return ExitCode::from(1);
    }
    cases.retain(|c| opts.filter.is_empty() || opts.filter.iter().any(|f| c.name.contains(f)));
    if opts.list {
        let _ = fs::remove_dir_all(&dir);
        for c in &cases {
            println!("{}  [{}]", c.name, c.args.join(" "));
        }
        return ExitCode::SUCCESS;
    }

    let (mut passed, mut failed) = (0, 0);
    let start = Instant::now();
    for (i, c) in cases.iter().enumerate() {
        let out = dir.join(format!("{i}.jsonl"));
        let run = invoke(&opts.runner, &out, &c.args);
        let (status, took, log) = (run.status, run.took, run.output);
        match check(&c.expect, status, took, &out, &log) {
            Ok(()) => {
                passed += 1;
                println!("ok    {:<28} {:6.1} s", c.name, took.as_secs_f64());
            }
            Err(why) => {
                failed += 1;
                println!("FAIL  {:<28} {:6.1} s  {why}", c.name, took.as_secs_f64());
                show_failure(&c.args, &out, &log);
            }
        }
    }
    println!(
        "boot-matrix: {} cases in {:.0} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    if failed == 0 && !opts.keep {
        let _ = fs::remove_dir_all(&dir);
    } else {
        println!("boot-matrix: results files kept in {}", dir.display());
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
