//! `schedbench`: the cost of scheduling decisions on the host, as JSON lines.
//!
//! For every registered policy: wake + pick (+ the `context_saved` report the kernel makes
//! once switched) with 1, 16, 128 and 1024 vCPUs on one runqueue, and a steal on a 64-CPU
//! machine where only the last peer has queued work (the whole peer scan plus one steal). Prints one
//! `{"kind":"bench","name":...,"value":...,"unit":"ns"}` line per figure (the median of
//! several rounds). Numbers are reported, never asserted.
//!
//! `cargo run --release -p sched --bin schedbench [-- --quick]`

use std::hint::black_box;
use std::time::Instant;

use abi::tool::results::{Bench, Figure, Record};
use sched::registry::ENTRIES;
use sched::{DomainId, Policy, Topology, VcpuId};

/// Prints one `bench` record (`abi::tool::results`), to a tenth of a nanosecond: a median of
/// timings is no more precise than that.
fn emit(name: &str, ns: f64) {
    let value = Figure::Real((ns * 10.0).round() / 10.0);
    let record = Record::Bench(Bench::new(name, value, "ns", None));
    println!("{}", serde_json::to_string(&record).expect("a results record encodes"));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn build(entry: &sched::registry::Entry, cpus: usize, vcpus: usize) -> Box<dyn Policy> {
    let topo = Topology::flat(cpus, vcpus, vcpus);
    let p = (entry.new)(&topo).expect("policy");
    for v in 0..vcpus {
        p.add_domain(DomainId(v as u32), &[]).expect("domain");
    }
    p
}

/// One CPU, `n` runnable vCPUs: each round, the running vCPU blocks, the CPU picks the next
/// one and the blocked one wakes again. Reports ns per (wake + pick).
fn wake_pick(entry: &sched::registry::Entry, n: usize, iters: u32) -> f64 {
    let p = build(entry, 1, n);
    let mut now = 1_000u64;
    for v in 0..n {
        p.insert_vcpu(VcpuId(v as u32), DomainId(v as u32), 0).expect("insert");
        p.wake(VcpuId(v as u32), now);
    }
    let mut curr = p.schedule(0, now).next;
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            now += 10_000;
            let v = curr.expect("something runs");
            p.sleep(v, now);
            curr = p.schedule(0, now).next;
            black_box(p.context_saved(0, v, now)); // the kernel's report once switched
            black_box(p.wake(v, now));
            if curr.is_none() {
                curr = p.schedule(0, now).next;
            }
        }
        rounds.push(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    median(rounds)
}

/// 64 CPUs, each running one vCPU; only CPU 63 has more queued. CPU 0's running vCPU
/// blocks and CPU 0 steals from CPU 63. Reports ns per steal (sleep + schedule).
fn steal(entry: &sched::registry::Entry, iters: usize) -> f64 {
    const CPUS: usize = 64;
    let queued = iters + 8;
    let n = CPUS + queued;
    let p = build(entry, CPUS, n);
    let mut now = 1_000u64;
    for c in 0..CPUS {
        p.insert_vcpu(VcpuId(c as u32), DomainId(c as u32), c).expect("insert");
        p.wake(VcpuId(c as u32), now);
        p.schedule(c, now);
    }
    for v in CPUS..n {
        p.insert_vcpu(VcpuId(v as u32), DomainId(v as u32), CPUS - 1).expect("insert");
        p.wake(VcpuId(v as u32), now);
    }
    let mut curr = p.schedule(0, now).next.expect("cpu 0 runs");
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        now += 10_000;
        let t = Instant::now();
        p.sleep(curr, now);
        let d = p.schedule(0, now);
        black_box(p.context_saved(0, curr, now));
        samples.push(t.elapsed().as_nanos() as f64);
        curr = match d.next {
            Some(v) => v,
            None => break,
        };
    }
    median(samples)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 2_000 } else { 20_000 };
    for entry in ENTRIES {
        let name = entry.info.name;
        for n in [1, 16, 128, 1024] {
            emit(&format!("sched.{name}.wake_pick.{n}vcpus"), wake_pick(entry, n, iters));
        }
        emit(&format!("sched.{name}.steal.64cpus"), steal(entry, if quick { 200 } else { 2_000 }));
    }
}
