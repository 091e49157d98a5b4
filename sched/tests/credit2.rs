//! credit2's own claims (issue 12), beyond the properties every weighted policy meets in
//! `properties.rs`: shares by weight at 8 to 128 domains on 2 to 4 CPUs, caps as budgets,
//! fairness over 1 s windows at 1024 domains, balancing between runqueues, and the
//! runqueue arrangement given by name.

use sched::sim::{self, Options, Output};
use sched::spec::Spec;
use sched::{DomainId, Policy, Topology, VcpuId, registry};

fn spec(text: &str) -> Spec {
    Spec::from_str(text, "<credit2 test>").unwrap_or_else(|e| panic!("{e}"))
}

fn run(s: &Spec, window_ns: Option<u64>) -> Output {
    let out = sim::run(s, &Options { seed: 1, trace: false, window_ns, ..Default::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.violations.double_run, 0, "a vCPU ran on two CPUs");
    assert_eq!(out.violations.bad_pick, 0, "a sleeping vCPU was picked");
    out
}

/// The largest difference between a domain's share of the CPU time used and w / Σw, in
/// points of the machine (1.0 = one percentage point).
fn worst_points(out: &Output) -> f64 {
    let total: u64 = out.domains.iter().map(|d| d.cpu_ns).sum();
    let wsum: u64 = out.domains.iter().map(|d| d.weight).sum();
    out.domains
        .iter()
        .map(|d| {
            let share = d.cpu_ns as f64 / total as f64;
            (share - d.weight as f64 / wsum as f64).abs() * 100.0
        })
        .fold(0.0, f64::max)
}

/// `n` cpu-bound domains in weight classes on `cpus` CPUs under credit2.
fn classes(n: usize, cpus: usize, weights: &[u64], seconds: u64) -> String {
    let mut text = format!(
        "name = \"c2-shares\"\nduration_ms = {}\nwarmup_ms = 500\n[machine]\ncpus = {cpus}\n\
         memory_mib = 4096\n[sched]\npolicy = \"credit2\"\n",
        seconds * 1000
    );
    let per = n / weights.len();
    for (i, w) in weights.iter().enumerate() {
        let count = if i + 1 == weights.len() { n - per * i } else { per };
        text += &format!(
            "[[domain]]\nname = \"w{w}-\"\ncount = {count}\nworkload = \"cpu\"\nweight = {w}\n"
        );
    }
    text
}

#[test]
fn shares_within_one_point_from_8_to_128_domains_on_2_to_4_cpus() {
    let mut worst_all: f64 = 0.0;
    for n in [8, 32, 96, 128] {
        for cpus in [2, 3, 4] {
            // Two classes as the researcher (256 and 512), three from 32 on.
            let weights: &[u64] = if n == 8 { &[256, 512] } else { &[256, 512, 1024] };
            let out = run(&spec(&classes(n, cpus, weights, 4)), None);
            let worst = worst_points(&out);
            let by_class: Vec<String> = weights
                .iter()
                .map(|&w| {
                    let ds: Vec<_> = out.domains.iter().filter(|d| d.weight == w).collect();
                    let avg = ds.iter().map(|d| d.cpu_ns as f64).sum::<f64>() / ds.len() as f64;
                    format!("w{w}: {:.1} ms", avg / 1e6)
                })
                .collect();
            eprintln!(
                "credit2 {n} domains on {cpus} CPUs: worst {worst:.3} points; mean per domain \
                 {}",
                by_class.join(", ")
            );
            assert!(worst <= 1.0, "{n} domains on {cpus} CPUs: a share is {worst:.3} points off");
            worst_all = worst_all.max(worst);
            // The heavy class gets its ratio: 2× the light one, within 5%.
            let mean = |w: u64| {
                let ds: Vec<_> = out.domains.iter().filter(|d| d.weight == w).collect();
                ds.iter().map(|d| d.cpu_ns as f64).sum::<f64>() / ds.len() as f64
            };
            let ratio = mean(512) / mean(256);
            assert!((ratio - 2.0).abs() < 0.1, "{n} on {cpus}: 512 vs 256 got {ratio:.3}×");
        }
    }
    eprintln!("credit2: worst share error over the grid {worst_all:.3} points");
}

#[test]
fn weights_one_to_eight_on_two_cpus() {
    let text = "name = \"w18\"\nduration_ms = 10000\nwarmup_ms = 500\n[machine]\ncpus = 2\n\
                [sched]\npolicy = \"credit2\"\n[[domain]]\nname = \"w\"\ncount = 8\n\
                workload = \"cpu\"\nweight = [1, 2, 3, 4, 5, 6, 7, 8]\n";
    let out = run(&spec(text), None);
    let worst = worst_points(&out);
    eprintln!("credit2 weights 1..8 on 2 CPUs: worst {worst:.3} points");
    assert!(worst <= 0.5, "{worst:.3} points");
}

fn window_jain(out: &Output) -> (f64, usize) {
    let mut worst = 1.0f64;
    let mut starved = 0;
    for w in &out.windows {
        let s: f64 = w.iter().map(|&x| x as f64).sum();
        let s2: f64 = w.iter().map(|&x| (x as f64) * (x as f64)).sum();
        worst = worst.min(s * s / (w.len() as f64 * s2));
        starved = starved.max(w.iter().filter(|&&x| x == 0).count());
    }
    (worst, starved)
}

#[test]
fn a_thousand_domains_on_four_cpus_are_fair_over_each_second() {
    let text = "name = \"c2-1024\"\nduration_ms = 3000\nwarmup_ms = 1000\n[machine]\ncpus = 4\n\
                memory_mib = 8192\n[sched]\npolicy = \"credit2\"\n[[domain]]\nname = \"d\"\n\
                count = 1024\nworkload = \"cpu\"\n";
    let t = std::time::Instant::now();
    let out = run(&spec(text), Some(1_000_000_000));
    let (jain, starved) = window_jain(&out);
    eprintln!(
        "credit2: 1024 cpu domains on 4 CPUs, 3 s simulated in {:.2} s: worst 1 s Jain {jain:.4}, \
         at most {starved} domains without CPU in a window",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(starved, 0, "a domain got no CPU in a 1 s window");
    assert!(jain >= 0.99, "worst Jain over 1 s windows {jain:.4} < 0.99");
}

#[test]
fn caps_are_budgets_held_per_domain() {
    // On 2 CPUs beside one free hog: a 1-vCPU domain capped at 50% and a 2-vCPU domain
    // capped at 30% (of one CPU, for both its vCPUs together). Uncapped, each would get
    // two thirds of a CPU or more.
    let text = "name = \"c2-caps\"\nduration_ms = 5000\nwarmup_ms = 500\n[machine]\ncpus = 2\n\
                [sched]\npolicy = \"credit2\"\n\
                [[domain]]\nname = \"half\"\nworkload = \"cpu\"\ncap = 50\n\
                [[domain]]\nname = \"pair\"\nworkload = \"cpu\"\nvcpus = 2\ncap = 30\n\
                [[domain]]\nname = \"free\"\nworkload = \"cpu\"\n";
    let out = run(&spec(text), None);
    let pct = |i: usize| 100.0 * out.domains[i].cpu_ns as f64 / 5e9;
    eprintln!("credit2 caps: half {:.2}%, pair {:.2}%, free {:.2}%", pct(0), pct(1), pct(2));
    assert!(pct(0) <= 51.0 && pct(0) >= 45.0, "cap 50: {:.2}%", pct(0));
    assert!(pct(1) <= 31.0 && pct(1) >= 25.0, "cap 30 over 2 vCPUs: {:.2}%", pct(1));
    // The free domain runs whenever a CPU is free of them: not a whole CPU (82% measured),
    // since the capped vCPUs, richer in credit, take both CPUs when their budgets come back
    // at the start of each period (as in Xen), but most of one.
    assert!(pct(2) >= 70.0, "the free domain got {:.2}%", pct(2));
}

#[test]
fn a_runqueue_per_cpu_by_name_runs_and_stays_fair() {
    // runqueue = "cpu": four runqueues, two hogs each (the simulator places vCPU i on CPU
    // i % 4), equal weights: each domain gets half a CPU.
    let text = "name = \"c2-rq\"\nduration_ms = 3000\nwarmup_ms = 500\n[machine]\ncpus = 4\n\
                [sched]\npolicy = \"credit2\"\nrunqueue = \"cpu\"\n[[domain]]\nname = \"w\"\n\
                count = 8\nworkload = \"cpu\"\nweight = [256, 256, 256, 256, 512, 512, 512, 512]\n";
    let out = run(&spec(text), None);
    for d in &out.domains {
        let pct = 100.0 * d.cpu_ns as f64 / 3e9;
        // Two per runqueue, weights 256 and 512: a third and two thirds of a CPU.
        let expect = if d.weight == 512 { 66.7 } else { 33.3 };
        assert!((pct - expect).abs() < 1.5, "{} got {pct:.2}% of a CPU", d.name);
    }
}

/// A small driver for tests that place vCPUs themselves: each CPU reschedules when its slice
/// ends or it is kicked; switches report `context_saved` at once; `tick` when `next_tick`
/// says; the kicks `take_kicks` hands over after every decision.
struct Machine {
    p: Box<dyn Policy>,
    cpus: usize,
    curr: Vec<Option<VcpuId>>,
    until: Vec<u64>,
    tick_at: Vec<u64>,
    busy_ns: Vec<u64>,
    ran_ns: Vec<u64>,
    now: u64,
}

impl Machine {
    fn new(p: Box<dyn Policy>, cpus: usize, vcpus: usize) -> Machine {
        Machine {
            p,
            cpus,
            curr: vec![None; cpus],
            until: vec![0; cpus],
            tick_at: vec![u64::MAX; cpus],
            busy_ns: vec![0; cpus],
            ran_ns: vec![0; vcpus],
            now: 0,
        }
    }

    fn schedule(&mut self, cpu: usize) {
        let d = self.p.schedule(cpu, self.now);
        if d.next != self.curr[cpu]
            && let Some(prev) = self.curr[cpu]
            && let Some(k) = self.p.context_saved(cpu, prev, self.now)
        {
            self.until[k] = self.now;
        }
        self.curr[cpu] = d.next;
        self.until[cpu] = d.slice_ns.map_or(u64::MAX, |s| self.now + s);
        self.take_kicks();
        self.tick_at[cpu] = self.p.next_tick(cpu, self.now).unwrap_or(u64::MAX);
    }

    fn take_kicks(&mut self) {
        let mut kicks = Vec::new();
        self.p.take_kicks(&mut |k| kicks.push(k));
        for k in kicks {
            self.until[k] = self.now;
        }
    }

    /// Runs to `end` (ns), counting each CPU's and each vCPU's run time from `from`.
    fn run(&mut self, end: u64, from: u64) {
        while self.now < end {
            let next_tick = self.tick_at.iter().copied().min().unwrap_or(u64::MAX);
            let t = self.until.iter().copied().min().unwrap_or(u64::MAX).min(next_tick).min(end);
            for c in 0..self.cpus {
                if let Some(v) = self.curr[c]
                    && t > from
                {
                    let dt = t - self.now.max(from);
                    self.busy_ns[c] += dt;
                    self.ran_ns[v.index()] += dt;
                }
            }
            self.now = t;
            for c in 0..self.cpus {
                if self.tick_at[c] <= t {
                    let mut kicks = Vec::new();
                    self.p.tick(c, t, &mut |k| kicks.push(k));
                    for k in kicks {
                        self.until[k] = t;
                    }
                    self.tick_at[c] = self.p.next_tick(c, t).unwrap_or(u64::MAX);
                }
            }
            for c in 0..self.cpus {
                if self.until[c] <= self.now {
                    self.schedule(c);
                }
            }
        }
    }
}

#[test]
fn balancing_moves_load_between_runqueues() {
    // Two CPUs, a runqueue each; four hogs all placed on CPU 0. Only balance_load (at each
    // credit reset of CPU 0's runqueue) can bring work to CPU 1.
    let topo = Topology::flat(2, 4, 4);
    let p = registry::build("credit2", &topo, &[("runqueue", 0)]).unwrap();
    for v in 0..4u32 {
        p.add_domain(DomainId(v), &[]).unwrap();
        p.insert_vcpu(VcpuId(v), DomainId(v), 0).unwrap();
    }
    let mut m = Machine::new(p, 2, 4);
    for v in 0..4u32 {
        if let Some(k) = m.p.wake(VcpuId(v), 0).kick {
            m.until[k] = 0;
        }
    }
    m.run(3_000_000_000, 1_000_000_000);
    let busy1 = m.busy_ns[1] as f64 / 2e9;
    let shares: Vec<f64> = m.ran_ns.iter().map(|&ns| ns as f64 / 2e9).collect();
    eprintln!("credit2, runqueue = cpu: CPU 1 busy {busy1:.3}; per vCPU {shares:?}");
    let stats = m.p.stats();
    assert!(stats.steals >= 2, "the balancer moved {} vCPUs", stats.steals);
    assert!(busy1 > 0.99, "CPU 1 busy only {busy1:.3} of the time");
    for s in shares {
        assert!((s - 0.5).abs() < 0.02, "a vCPU got {s:.3} of a CPU, fair is 0.5");
    }
    let mut dump = String::new();
    m.p.dump(&mut dump).unwrap();
    assert!(dump.contains("rq1") && dump.contains("runqueue cpu"), "{dump}");
}

#[test]
fn the_arrangement_is_fixed_once_vcpus_are_placed() {
    let topo = Topology::flat(4, 4, 4);
    let p =
        registry::build("credit2", &topo, &[("runqueue", 3), ("max_cpus_runqueue", 2)]).unwrap();
    assert_eq!(p.global_param("runqueue").unwrap(), 3);
    let mut dump = String::new();
    p.dump(&mut dump).unwrap();
    assert!(dump.contains("rq1:") && !dump.contains("rq2:"), "two runqueues of two: {dump}");
    p.add_domain(DomainId(0), &[]).unwrap();
    p.insert_vcpu(VcpuId(0), DomainId(0), 0).unwrap();
    assert_eq!(p.set_global_param("runqueue", 0), Err(sched::Error::Busy));
    assert!(p.set_global_param("runqueue", 4).is_err());
    p.set_global_param("ratelimit_us", 0).unwrap();
}

#[test]
fn a_heavy_sleeper_does_not_flatten_the_weights_of_the_others() {
    // As Domain0 on the hypervisor (weight 65535, asleep through the interval): a domain of
    // the largest weight that wakes every 100 ms for 20 µs. Were its weight the runqueue's
    // `max_weight` while it sleeps (Xen's rule), every guest slice would end at CREDIT_MIN
    // and weights 1..8 would share equally.
    let text = "name = \"c2-sleeper\"\nduration_ms = 6000\nwarmup_ms = 500\n[machine]\ncpus = 2\n\
                [sched]\npolicy = \"credit2\"\n[[domain]]\nname = \"w\"\ncount = 8\n\
                workload = \"cpu\"\nweight = [1, 2, 3, 4, 5, 6, 7, 8]\n[[domain]]\n\
                name = \"ctl\"\nworkload = \"latency\"\nweight = 65535\n[domain.args]\n\
                period_us = 100000\nrun_us = 20\n";
    let mut out = run(&spec(text), None);
    out.domains.retain(|d| !d.name.starts_with("ctl"));
    let worst = worst_points(&out);
    let ratio = out.domains[7].cpu_ns as f64 / out.domains[0].cpu_ns as f64;
    eprintln!(
        "credit2 weights 1..8 beside a weight-65535 domain waking every 100 ms: worst {worst:.3} \
         points, weight 8 / weight 1 = {ratio:.2}"
    );
    assert!(ratio > 6.0, "weights flattened: 8 vs 1 got {ratio:.2}x");
    // Each wake-up still costs some precision: while the heavy vCPU waits (the rate limit)
    // the guests running burn at 65535 / w and end their slices at CREDIT_MIN, where their
    // debts are cut alike (1.3 points measured, against 0.13 without the sleeper).
    assert!(worst <= 1.5, "{worst:.3} points");
}

/// A credit2 instance on `cpus` CPUs with `doms` domains of one vCPU each, every vCPU
/// awake and every CPU decided once at `now`.
fn started(cpus: usize, doms: u32, now: u64) -> Box<dyn Policy> {
    let topo = Topology::flat(cpus, doms as usize, doms as usize);
    let p = registry::build("credit2", &topo, &[]).unwrap();
    for v in 0..doms {
        p.add_domain(DomainId(v), &[]).unwrap();
        p.insert_vcpu(VcpuId(v), DomainId(v), v as usize % cpus).unwrap();
        p.wake(VcpuId(v), now);
    }
    for c in 0..cpus {
        p.schedule(c, now);
    }
    p
}

#[test]
fn without_a_cap_no_cpu_ticks_and_a_cap_ticks_cpu_0_once_a_period() {
    // Xen's credit2 has no tick: only a capped domain's replenishment timer. Ours is CPU
    // 0's tick, due when the next budget is (`cap_period_ms`, 10 ms by default).
    let ms = 1_000_000;
    let p = started(2, 4, 0);
    for c in 0..2 {
        assert_eq!(p.next_tick(c, ms), None, "CPU {c} ticks with no cap set");
    }
    p.set_domain_param(DomainId(1), "cap", 50).unwrap();
    // The cap asks CPU 0 to decide, so that it asks for its tick; it is due at once.
    let mut kicked = Vec::new();
    p.take_kicks(&mut |c| kicked.push(c));
    assert!(kicked.contains(&0), "setting a cap kicked {kicked:?}, not CPU 0");
    assert!(p.next_tick(0, ms).is_some_and(|t| t <= ms), "{:?}", p.next_tick(0, ms));
    assert_eq!(p.next_tick(1, ms), None, "CPU 1 ticks too");
    p.tick(0, ms, &mut |_| {});
    assert_eq!(p.next_tick(0, ms), Some(11 * ms), "the first period starts at the tick");
    p.tick(0, 11 * ms, &mut |_| {});
    assert_eq!(p.next_tick(0, 11 * ms), Some(21 * ms));
    p.set_domain_param(DomainId(1), "cap", 0).unwrap();
    p.tick(0, 21 * ms, &mut |_| {});
    assert_eq!(p.next_tick(0, 21 * ms), None, "no cap left, and CPU 0 still ticks");
}

#[test]
fn a_kick_decided_where_it_cannot_be_returned_is_handed_over_at_once() {
    // Capping a domain whose vCPU runs makes its CPU decide again (its budget starts at
    // 0), from `set_domain_param`, which returns no kick: `take_kicks` hands it over right
    // after, as Xen raises SCHEDULE_SOFTIRQ from inside the hook. It used to wait for the
    // next 1 ms tick.
    let p = started(2, 2, 0);
    let running_on_1 = (0..2u32).find(|&v| {
        p.set_domain_param(DomainId(v), "cap", 10).unwrap();
        let mut kicked = Vec::new();
        p.take_kicks(&mut |c| kicked.push(c));
        p.set_domain_param(DomainId(v), "cap", 0).unwrap();
        p.take_kicks(&mut |_| {});
        kicked.contains(&1)
    });
    assert!(running_on_1.is_some(), "capping the vCPU running on CPU 1 did not kick it");
    let mut again = Vec::new();
    p.take_kicks(&mut |c| again.push(c));
    assert!(again.is_empty(), "kicks handed over twice: {again:?}");
}

#[test]
fn a_cap_set_during_a_tick_is_not_lost() {
    // Domain0 caps a domain (the only capped one) while CPU 0 ticks: whatever the order,
    // CPU 0 must then tick for it (`next_tick`), or its budget never comes back and its
    // vCPUs stay parked for good. `replenish` clears `repl_due` and reads the capped bits;
    // `set_cap` sets its bit and stores 0: with release and acquire the read could pass
    // the clear and the clear land over the 0. On this project's 2-core x86 host, release
    // builds, without the fix: 1, 10, 0 and 0 lost of 200,000 rounds; 2, 49 and 36 of
    // 1,000,000; with the 4 s budget 2 of 1,000,000, 1 of 416,083, then 0 (a debug run: 0).
    // With it, none can be (SeqCst). A race: rounds for up to `BUDGET`.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const ROUNDS: u64 = 1_000_000;
    const BUDGET: std::time::Duration = std::time::Duration::from_secs(4);
    let started_at = std::time::Instant::now();
    let period = 100_000_000; // past the 10 ms cap period: each tick replenishes
    let p: Arc<dyn Policy> = Arc::from(started(2, 4, 0));
    let (go, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ticker = {
        let (p, go, done) = (p.clone(), go.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 1..=ROUNDS {
                // `u64::MAX`: the budget is spent, no more rounds.
                let mut at = go.load(Ordering::Acquire);
                while at < i {
                    std::hint::spin_loop();
                    at = go.load(Ordering::Acquire);
                }
                if at == u64::MAX {
                    return;
                }
                p.tick(0, i * period, &mut |_| {});
                done.store(i, Ordering::Release);
            }
        })
    };
    let (mut lost, mut rounds) = (0, 0);
    for i in 1..=ROUNDS {
        if started_at.elapsed() > BUDGET {
            break;
        }
        rounds = i;
        go.store(i, Ordering::Release);
        p.set_domain_param(DomainId(1), "cap", 50).unwrap();
        while done.load(Ordering::Acquire) < i {
            std::hint::spin_loop();
        }
        lost += u64::from(p.next_tick(0, i * period).is_none());
        p.set_domain_param(DomainId(1), "cap", 0).unwrap();
        p.tick(0, i * period + 1, &mut |_| {});
        p.take_kicks(&mut |_| {});
        assert_eq!(p.next_tick(0, i * period + 1), None, "round {i}: a tick with no cap");
    }
    go.store(u64::MAX, Ordering::Release);
    ticker.join().unwrap();
    assert_eq!(lost, 0, "{lost} of {rounds} caps set during a tick left CPU 0 without one");
}
