//! Policies under real concurrency: several threads play CPUs of the hypervisor, calling
//! wake, sleep, yield, schedule, tick and context_saved at once. The test passes if nothing
//! deadlocks and every vCPU a CPU picks is free at once: each thread claims what it picks
//! with one compare-and-swap, as the kernel's `switch_in` does, lets go of the vCPU it
//! switched away from and only then reports it saved (`context_saved`). A pick of a vCPU
//! still held by another CPU, which the kernel would have to wait out, fails the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sched::registry::ENTRIES;
use sched::{DomainId, Policy, Topology, VcpuId};

const NONE: usize = usize::MAX;

#[test]
fn hammer_every_policy() {
    const CPUS: usize = 4;
    const VCPUS: usize = 24;
    for entry in ENTRIES {
        let topo = Topology::flat(CPUS, VCPUS, VCPUS);
        let p: Arc<dyn Policy> = Arc::from((entry.new)(&topo).unwrap());
        for v in 0..VCPUS {
            p.add_domain(DomainId(v as u32), &[]).unwrap();
            p.insert_vcpu(VcpuId(v as u32), DomainId(v as u32), v % CPUS).unwrap();
            p.wake(VcpuId(v as u32), 0);
        }
        hammer(&p, CPUS, VCPUS, 0x9e37_79b9, 1000);
        let mut dump = String::new();
        p.dump(&mut dump).unwrap();
        assert!(dump.contains("cpu0"), "{}: {dump}", entry.info.name);
        assert!(p.stats().schedules >= (CPUS * 20_000) as u64);
    }
}

/// The kernel reaches the vCPU a decision names by pointer, with no reference count
/// (`kernel/src/schedule/mod.rs`, `Held`): it relies on the policy refusing to remove a vCPU
/// it has scheduled on a CPU until that CPU's next decision switches away from it, even once
/// it is put to sleep (a kill or a pause between the pick and the claim). Destroy removes a
/// vCPU from the kernel's tables, and frees it, only after `remove_vcpu` succeeds.
#[test]
fn every_policy_keeps_a_picked_vcpu_until_its_cpu_decides_again() {
    for entry in ENTRIES {
        let name = entry.info.name;
        let topo = Topology::flat(2, 2, 2);
        let p = (entry.new)(&topo).unwrap();
        let v = VcpuId(0);
        p.add_domain(DomainId(0), &[]).unwrap();
        p.insert_vcpu(v, DomainId(0), 0).unwrap();
        p.wake(v, 1_000);
        let picked = (0..2).find(|&c| p.schedule(c, 2_000).next == Some(v));
        let cpu = picked.unwrap_or_else(|| panic!("{name}: a lone runnable vCPU was not picked"));
        p.sleep(v, 3_000);
        assert!(p.remove_vcpu(v).is_err(), "{name}: removed a vCPU still scheduled on CPU {cpu}");
        assert_ne!(p.schedule(cpu, 4_000).next, Some(v), "{name}: picked a sleeping vCPU");
        p.context_saved(cpu, v, 5_000);
        assert_eq!(p.remove_vcpu(v), Ok(()), "{name}: kept a vCPU asleep and off every CPU");
    }
}

#[test]
fn hammer_credit2_with_a_runqueue_per_cpu() {
    // On four runqueues, so that balancing, migration requests and moves between runqueues
    // race with wake-ups and decisions.
    const CPUS: usize = 4;
    const VCPUS: usize = 24;
    let topo = Topology::flat(CPUS, VCPUS, VCPUS);
    let p: Arc<dyn Policy> =
        Arc::from(sched::registry::build("credit2", &topo, &[("runqueue", 0)]).unwrap());
    for v in 0..VCPUS {
        let weight = 256 * (1 + v as u64 % 3);
        p.add_domain(DomainId(v as u32), &[("weight", weight)]).unwrap();
        // Most on CPU 0's runqueue: the balancer has work to do.
        p.insert_vcpu(VcpuId(v as u32), DomainId(v as u32), if v < 20 { 0 } else { v % CPUS })
            .unwrap();
        p.wake(VcpuId(v as u32), 0);
    }
    hammer(&p, CPUS, VCPUS, 0x2545_f491, 20_000);
    let stats = p.stats();
    eprintln!("credit2 hammer, a runqueue per CPU: {stats:?}");
    assert!(stats.steals > 0, "the balancer never moved anything");
    let mut dump = String::new();
    p.dump(&mut dump).unwrap();
    assert!(dump.contains("rq3"), "{dump}");
}

/// `cpus` threads play CPUs on `p` (whose `vcpus` vCPUs are inserted and awake), 20,000
/// steps each, the clock advancing `step_ns` a step; panics if a CPU picks a vCPU another
/// still holds.
fn hammer(p: &Arc<dyn Policy>, cpus: usize, vcpus: usize, seed: u64, step_ns: u64) {
    let owner: Arc<Vec<AtomicUsize>> =
        Arc::new((0..vcpus).map(|_| AtomicUsize::new(NONE)).collect());
    let clock = Arc::new(AtomicU64::new(1));
    let threads: Vec<_> = (0..cpus)
        .map(|cpu| {
            let (p, owner, clock) = (p.clone(), owner.clone(), clock.clone());
            std::thread::spawn(move || {
                let mut rng = seed + cpu as u64;
                let mut curr: Option<VcpuId> = None;
                for _ in 0..20_000 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let now = clock.fetch_add(step_ns, Ordering::Relaxed);
                    let v = VcpuId((rng % vcpus as u64) as u32);
                    match rng % 7 {
                        0 => {
                            if let Some(c) = curr {
                                p.sleep(c, now);
                            }
                        }
                        1 => {
                            p.wake(v, now);
                        }
                        2 => {
                            if let Some(c) = curr {
                                p.yield_now(c, now);
                            }
                        }
                        3 => p.tick(cpu, now, &mut |_| {}),
                        _ => {}
                    }
                    let next = p.schedule(cpu, now).next;
                    if next != curr {
                        if let Some(n) = next {
                            let claimed = owner[n.index()].compare_exchange(
                                NONE,
                                cpu,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            );
                            if let Err(other) = claimed {
                                panic!(
                                    "{}: CPU {cpu} picked vCPU {} while CPU {other} still \
                                     held it (before its context_saved)",
                                    p.info().name,
                                    n.0
                                );
                            }
                        }
                        if let Some(c) = curr {
                            // The switch itself: saving registers, loading CR3. Long
                            // enough that peers try to steal meanwhile.
                            for _ in 0..200 {
                                std::hint::spin_loop();
                            }
                            owner[c.index()].store(NONE, Ordering::Release);
                            p.context_saved(cpu, c, now);
                        }
                        curr = next;
                    }
                    if rng.is_multiple_of(11) {
                        p.wake(v, now);
                    }
                }
                if let Some(c) = curr {
                    owner[c.index()].store(NONE, Ordering::Release);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
