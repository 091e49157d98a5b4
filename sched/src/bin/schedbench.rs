//! `schedbench`: the cost of scheduling decisions on the host, as JSON lines.
//!
//! For every registered policy: wake + pick (+ the `context_saved` report the kernel makes
//! once switched) with 1, 16, 128 and 1024 vCPUs on one runqueue, and a steal on a 64-CPU
//! machine where only the last peer has queued work (the whole peer scan plus one steal), and
//! credit2's load balance (`balance_load`) at 64 and 255 CPUs. Prints one
//! `{"kind":"bench","name":...,"value":...,"unit":"ns"}` line per figure (the median of
//! several rounds). Numbers are reported, never asserted.
//!
//! `cargo run --release -p sched --bin schedbench [-- --quick] [POLICY...]` (policy names
//! pick those; default every policy)

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
    build_with(entry, cpus, vcpus, &[])
}

fn build_with(
    entry: &sched::registry::Entry,
    cpus: usize,
    vcpus: usize,
    globals: &[(&str, u64)],
) -> Box<dyn Policy> {
    let topo = Topology::flat(cpus, vcpus, vcpus);
    let p = sched::registry::build(entry.info.name, &topo, globals).expect("policy");
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
/// blocks and CPU 0 steals from CPU 63. Reports ns per steal (sleep + schedule), every
/// round a steal: a policy that leaves CPU 0 idle fails here rather than reporting the
/// cost of going idle.
///
/// credit2 never takes work from another runqueue when it picks (only its balancer moves
/// vCPUs between runqueues, measured below), and with Xen's default of 16 CPUs a runqueue,
/// CPU 63's vCPUs are out of CPU 0's reach. Its figure is the same situation with the 64
/// CPUs on one runqueue (`runqueue = "all"`, `max_cpus_runqueue = 64`): CPU 0 takes a vCPU
/// placed on CPU 63 from the queue they share. (Until this check, its figure was the one
/// timing of CPU 0 going idle, cold: 911 ns.)
fn steal(entry: &sched::registry::Entry, iters: usize) -> f64 {
    const CPUS: usize = 64;
    let queued = iters + 8;
    let n = CPUS + queued;
    let globals: &[(&str, u64)] = match entry.info.name {
        "credit2" => &[("runqueue", 3), ("max_cpus_runqueue", CPUS as u64)],
        _ => &[],
    };
    let p = build_with(entry, CPUS, n, globals);
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
        curr = d.next.unwrap_or_else(|| panic!("{}: CPU 0 stole nothing", entry.info.name));
    }
    median(samples)
}

/// credit2's `balance_load` on a `cpus`-CPU machine with runqueues of up to 16 CPUs (Xen's
/// default): every CPU runs a vCPU and CPU 0's runqueue has 4 more queued, so the balancer
/// scans every runqueue and pushes one vCPU to the least loaded. Reports ns per balance (a
/// fresh machine each round, built outside the timing), and ns per balance once the loads
/// are even (the scan alone).
fn credit2_balance(cpus: usize, iters: usize) -> (f64, f64) {
    let n = cpus + 4;
    let build = || {
        let topo = Topology::flat(cpus, n, n);
        let p = sched::credit2::Credit2::new(&topo).expect("credit2");
        for v in 0..n {
            let cpu = if v < cpus { v } else { 0 };
            p.add_domain(DomainId(v as u32), &[]).expect("domain");
            p.insert_vcpu(VcpuId(v as u32), DomainId(v as u32), cpu).expect("insert");
            p.wake(VcpuId(v as u32), 1_000);
            if v < cpus {
                p.schedule(cpu, 1_000);
            }
        }
        p
    };
    let now = 2_000_000_000u64;
    let mut moving = Vec::with_capacity(iters);
    let mut even = Vec::with_capacity(iters);
    for _ in 0..iters {
        let p = build();
        let t = Instant::now();
        let moved = black_box(p.balance_now(0, now));
        moving.push(t.elapsed().as_nanos() as f64);
        assert!(moved > 0, "the balancer moved nothing");
        for i in 0..8 {
            p.balance_now(0, now + i);
        }
        let t = Instant::now();
        black_box(p.balance_now(0, now + 10));
        even.push(t.elapsed().as_nanos() as f64);
    }
    (median(moving), median(even))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Policy names given pick those (default: every policy).
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let picked = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let iters = if quick { 2_000 } else { 20_000 };
    for entry in ENTRIES.iter().filter(|e| picked(e.info.name)) {
        let name = entry.info.name;
        for n in [1, 16, 128, 1024] {
            emit(&format!("sched.{name}.wake_pick.{n}vcpus"), wake_pick(entry, n, iters));
        }
        emit(&format!("sched.{name}.steal.64cpus"), steal(entry, if quick { 200 } else { 2_000 }));
    }
    for cpus in [64, 255].into_iter().filter(|_| picked("credit2")) {
        let (moving, even) = credit2_balance(cpus, if quick { 50 } else { 300 });
        emit(&format!("sched.credit2.balance.{cpus}cpus"), moving);
        emit(&format!("sched.credit2.balance_even.{cpus}cpus"), even);
    }
}
