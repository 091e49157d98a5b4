//! `bench-boot`: the boot benchmark of scripts/bench. Boots the hypervisor with 1, 8 and 64
//! CPUs (more on request), a few times each, and prints one `bench` record per CPU count
//! on stdout: the median time from the hypervisor's entry to every CPU online (`boot_ns`
//! of the boot record). Progress goes to stderr. Numbers are reported, never asserted.

use std::process::ExitCode;

use abi::tool::results::{Bench, Figure, Record, Records};
use runner::{invoke, probe_kvm, read_records, record_line, sibling_runner};

struct Options {
    cpus: Vec<u32>,
    repeat: usize,
    machine: String,
    accel: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        cpus: vec![1, 8, 64],
        repeat: 3,
        machine: "q35".into(),
        accel: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--cpus" => {
                o.cpus = value()?
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .map_err(|_| format!("--cpus: `{n}` is not a number"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--repeat" => {
                o.repeat = value()?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--repeat: a count >= 1")?;
            }
            "--machine" => o.machine = value()?,
            "--accel" => o.accel = Some(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: bench-boot [--cpus 1,8,64] [--repeat 3] [--machine q35] \
                            [--accel kvm|tcg]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match options() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("bench-boot: {msg}");
            return ExitCode::from(2);
        }
    };
    let runner = sibling_runner();
    let accel = opts.accel.clone().unwrap_or_else(|| {
        let (kvm, verdict) = probe_kvm(&runner);
        eprintln!("bench-boot: {verdict}");
        if kvm { "kvm" } else { "tcg" }.into()
    });
    let out = std::env::temp_dir().join(format!("domino-bench-boot-{}.jsonl", std::process::id()));
    let mut failed = false;
    for &cpus in &opts.cpus {
        let mut samples = Vec::new();
        let mut walls = Vec::new();
        for _ in 0..opts.repeat {
            let args: Vec<String> = [
                "--accel",
                &accel,
                "--machine",
                &opts.machine,
                "--cpus",
                &cpus.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let run = invoke(&runner, &out, &args);
            let boot_ns = read_records(&out).and_then(|r| {
                r.boot()
                    .map(|b| b.boot_ns)
                    .ok_or_else(|| "no boot record".to_string())
            });
            match (run.status, boot_ns) {
                (Some(0), Ok(ns)) => {
                    samples.push(ns);
                    walls.push(run.took.as_nanos() as u64);
                }
                (status, boot_ns) => {
                    let why = match (status, boot_ns) {
                        (Some(0), Err(e)) => e,
                        (status, _) => format!("exit status {status:?}"),
                    };
                    eprintln!("bench-boot: the {cpus}-CPU boot failed ({why}):");
                    for line in run
                        .output
                        .lines()
                        .rev()
                        .take(8)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                    {
                        eprintln!("  | {line}");
                    }
                    failed = true;
                    break;
                }
            }
        }
        if samples.len() < opts.repeat {
            continue;
        }
        let boot = median(&mut samples);
        let wall = median(&mut walls);
        eprintln!(
            "bench-boot: {cpus:>3} CPUs: all online {:.2} ms after entry (median of {}), \
             QEMU run {:.2} s wall",
            boot as f64 / 1e6,
            opts.repeat,
            wall as f64 / 1e9
        );
        let bench = Bench {
            cpus: Some(cpus),
            accel: Some(accel.clone()),
            machine: Some(opts.machine.clone()),
            samples: Some(samples),
            wall_ns: Some(wall),
            ..Bench::new(
                format!("boot_all_cpus_online/cpus={cpus}"),
                Figure::Int(boot),
                "ns",
                None,
            )
        };
        println!("{}", record_line(&Record::Bench(bench)));
    }
    let _ = std::fs::remove_file(&out);
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}
