//! `dom0`: Domain0, which carries out the experiment plan and reports what every domain got.
//!
//! Step by step (README.md "Domain0"):
//! 1. decode the plan at `layout::PLAN` and check every planned domain (exit status 2 if
//!    the plan is bad);
//! 2. ask the policy in force and the CPU count, and record the hypervisor's figures (its
//!    heap, the frame counts, the ports and grants live domains hold);
//! 3. create every planned domain (paused), then unpause them all;
//! 4. sleep `warmup_ms`; snapshot every domain (`GetInfo`) and every CPU (`CpuStats`) (with
//!    no warm-up and no domain held for a start event, that snapshot is taken just before
//!    step 3's unpause: the woken domains may keep Domain0 from the CPU for milliseconds,
//!    and work they do meanwhile would fall before the interval);
//! 5. measure `duration_ms`, waking at each window boundary (`window_ms`: snapshot every
//!    domain, keep the deltas, `workloads::windows`) and each second (a `progress` record);
//!    snapshot again at the end;
//! 6. write the `run` record, one `domain` record per domain (deltas over the interval) and
//!    the `window` records;
//! 7. check each domain against its `expect`, destroy every domain, check that every frame,
//!    port, grant and byte of the hypervisor's heap came back (exactly: nothing the
//!    hypervisor keeps grows with the domains it has seen);
//! 8. print one line per problem and shut the machine down: 0 if all went as expected,
//!    1 otherwise.
//!
//! A plan with `churn` replaces steps 3 to 7 with domain lifetimes in rounds
//! (`workloads::churn`), checked against the same figures, and writes the `run` record and
//! the churn's `bench` records.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use abi::control::DomainExit;
use abi::error::Errno;
use abi::layout::{PLAN, PLAN_LIMIT};
use abi::tool::console::ExitCode;
use abi::tool::plan::{self, Expect, MAX_DOMAINS, Plan, PlannedDomain};
use abi::tool::results::{self, Phase};
use workloads::report::{self, CpuStats, DomainRun, Figures, RunSummary, Verdict};
use workloads::time::{now_ns, sleep_ns, sleep_until};
use workloads::windows::{self, Windows};
use workloads::{churn, control};
use workloads::{entry, println, rt, shared};

entry!(main);

/// Domain0's heap: its bookkeeping for up to `abi::tool::plan::MAX_DOMAINS` domains, the
/// largest part of which is two `DomainInfo` snapshots of each (one at each end of the
/// measured interval, `report::Measured`), with room to spare for the plan and the records.
/// (At 1 MiB, 1024 domains ran it out once `DomainInfo` grew a list of scheduling
/// parameters.)
const HEAP_BYTES: usize = 8 << 20;
const _: () = assert!(
    HEAP_BYTES >= 4 * abi::tool::plan::MAX_DOMAINS * size_of::<abi::control::DomainInfo>(),
    "Domain0's heap cannot hold its figures of every domain"
);
static mut HEAP: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];

/// How long teardown asks again when destroying a domain is refused as busy.
const SETTLE_MS: u64 = 200;

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    // SAFETY: only vCPU 0 gets here, once; nothing else refers to HEAP.
    rt::init_heap(unsafe { &mut *addr_of_mut!(HEAP) });
    let code = run();
    let err = control::shutdown_machine(code);
    println!("cannot shut the machine down ({err:?}); shutting myself down");
    u64::from(code)
}

/// The plan's bytes, as the hypervisor mapped them.
fn plan_bytes() -> &'static [u8] {
    let len = shared::plan_bytes().min(PLAN_LIMIT) as usize;
    // SAFETY: the hypervisor maps `plan_bytes` bytes (at most PLAN_LIMIT) read-only at PLAN
    // for Domain0's whole life and never changes them (entry contract).
    unsafe { core::slice::from_raw_parts(PLAN as *const u8, len) }
}

fn run() -> u8 {
    let bytes = plan_bytes();
    let plan = match plan::decode(bytes) {
        Ok(plan) => plan,
        Err(e) => {
            println!("bad plan: cannot decode {} bytes: {e}", bytes.len());
            return ExitCode::BadInput as u8;
        }
    };
    let planned = match checked_domains(&plan) {
        Ok(planned) => planned,
        Err(message) => {
            println!("{message}");
            return ExitCode::BadInput as u8;
        }
    };

    let mut timeline = match workloads::timeline::Timeline::new(&plan, planned.len()) {
        Ok(t) => t,
        Err(message) => {
            println!("{message}");
            return ExitCode::BadInput as u8;
        }
    };
    let mut verdict = Verdict::default();
    let (policy, cpus) = match control::policy() {
        Ok(p) => p,
        Err(e) => return fatal("sysctl GetPolicy", e),
    };
    if policy != plan.policy {
        verdict.fail(alloc::format!(
            "policy in force is {policy}, the plan asks for {}",
            plan.policy
        ));
    }
    // The CPU pools the hypervisor was booted with (the plan's, in its order).
    let mut pools = Vec::new();
    for p in 0..plan.pools {
        match control::pool_info(p) {
            Ok((name, policy, cpus)) => {
                println!("pool {name}: {policy} on CPUs {cpus:?}");
                pools.push(results::Pool { name, cpus, policy });
            }
            Err(e) => return fatal("sysctl PoolInfo", e),
        }
    }
    if pools.len() >= 2 {
        pool_control_check(&pools, &mut verdict);
    }
    println!(
        "experiment `{}`: {} domains, policy {policy} on {cpus} CPUs, {} ms warm-up, {} ms measured",
        plan.name,
        planned.len(),
        plan.warmup_ms,
        plan.duration_ms
    );

    let switch_floor_ns = if plan.bench {
        micro_benchmarks(&mut verdict)
    } else {
        None
    };
    // Told by the hypervisor whenever a domain ends. Read once, at the end: masked, so that
    // a pending notice does not make every `block` of Domain0's sleeps return at once (it
    // would spin on its CPU for the rest of the run).
    let dom_exc = match workloads::hypercall::evtchn_bind_virq(abi::hypercall::virq::DOM_EXC) {
        Ok(port) => {
            shared::set_mask(port, true);
            Some(port)
        }
        Err(e) => {
            verdict.fail(alloc::format!(
                "cannot bind the domain-exception VIRQ: {e:?}"
            ));
            None
        }
    };
    // What must be back once the guests are gone: taken with Domain0 alone, after its own
    // set-up (the port above).
    let base = match control::figures() {
        Ok(f) => f,
        Err(e) => return fatal("sysctl FrameCounts/HeapUsed/Resources", e),
    };
    if let Some(churn) = plan.churn {
        run_churn(&plan, &policy, cpus, &planned, &churn, &base, &mut verdict);
        for problem in &verdict.problems {
            println!("FAIL: {problem}");
        }
        if verdict.problems.is_empty() {
            println!(
                "PASS: {} lifetimes; every frame, port, grant and heap byte came back",
                churn.lifetimes
            );
        }
        return verdict.code();
    }
    let mut runs = Vec::with_capacity(planned.len());
    if let Some((create_start_ns, t0)) = create_all(
        &plan,
        planned,
        &|i| timeline.held(i),
        &mut runs,
        &mut verdict,
    ) {
        if plan.bench {
            let name = alloc::format!("create_start_{}_domains", runs.len());
            emit(
                &report::bench_record(&name, create_start_ns, "ns", None),
                &mut verdict,
            );
            memory_per_domain(&runs, &base, &mut verdict);
        }
        measure(
            &plan,
            &policy,
            cpus,
            &mut runs,
            &mut verdict,
            switch_floor_ns,
            dom_exc,
            &mut timeline,
            &pools,
            t0,
        );
    }
    teardown(
        &runs,
        &|i| timeline.destroyed(i).is_some(),
        &base,
        &mut verdict,
    );

    for problem in &verdict.problems {
        println!("FAIL: {problem}");
    }
    if verdict.problems.is_empty() {
        println!(
            "PASS: all {} domains ended as expected; every frame, port, grant and heap byte \
             came back",
            runs.len()
        );
    }
    verdict.code()
}

/// The churn of the plan (`workloads::churn`): its lifetimes, then the `run` record (the
/// churn as the interval, its lifetimes as the domains) and the churn's `bench` records.
fn run_churn(
    plan: &Plan<'_>,
    policy: &str,
    cpus: u32,
    planned: &[PlannedDomain<'_>],
    c: &plan::Churn,
    base: &Figures,
    verdict: &mut Verdict,
) {
    println!(
        "churn: {} lifetimes in rounds of {} domains, each round up to {} ms, checked every \
         {} lifetimes against: heap {} bytes, {} frames free, {:?}",
        c.lifetimes,
        planned.len(),
        c.run_ms,
        c.check_every,
        base.heap_bytes,
        base.frames.free,
        base.resources
    );
    let t0 = take_snapshot(0, verdict);
    let (lifetimes, tally) = churn::run(plan, planned, c, base, verdict);
    let t1 = take_snapshot(1, verdict);
    let (cpus_before, cpus_after) = (
        snapshot_cpus(cpus, 0, verdict),
        snapshot_cpus(cpus, 1, verdict),
    );
    let summary = RunSummary {
        name: plan.name,
        policy,
        cpus,
        shape: plan.shape,
        domains: lifetimes as usize,
        start_ns: t0,
        wallclock_start_ns: workloads::time::wallclock_ns() - (now_ns() - t0),
        dom0_cpu_ns: workloads::time::vcpu_time_ns(0),
        duration_ns: t1 - t0,
        interval: report::CpuInterval::between(&cpus_before, &cpus_after),
        pools: None,
    };
    emit(&report::run_record(&summary), verdict);
    for record in tally.records(lifetimes, t1 - t0, base.heap_bytes) {
        emit(&record, verdict);
    }
    println!(
        "churn: {lifetimes} lifetimes in {} ms ({} checks, {} off the baseline); ended {:?} \
         (after unpause, running, paused, unstarted, killed); at most {} ports, {} grants, \
         {} grant mappings in use",
        (t1 - t0) / 1_000_000,
        tally.checks,
        tally.checks_failed,
        tally.ended,
        tally.max_ports,
        tally.max_grants,
        tally.max_grant_maps
    );
}

/// Reports a control call that failed where the run cannot go on; the exit status for it.
/// The pool control hypercalls the timeline does not use, tried before any guest exists
/// and undone: Xen's refusals (`cpupool.c`) each get their error and change nothing, and a
/// CPU goes from the last pool into a new one and back (each change rebuilds a policy
/// instance). Problems go to the verdict; the pools end as they began.
fn pool_control_check(pools: &[results::Pool], verdict: &mut Verdict) {
    let mut fail =
        |what: alloc::string::String| verdict.fail(alloc::format!("pool control: {what}"));
    let n = pools.len() as u32;
    let refusals: [(&str, Result<(), Errno>, Errno); 5] = [
        (
            "destroying the first pool",
            control::pool_destroy(0),
            Errno::Busy,
        ),
        (
            "moving Domain0",
            control::move_to_pool(0, n - 1),
            Errno::Busy,
        ),
        (
            "a pool that does not exist",
            control::pool_info(n + 7).map(|_| ()),
            Errno::Srch,
        ),
        (
            "adding a CPU another pool holds",
            control::pool_add_cpu(n - 1, pools[0].cpus[0]),
            Errno::Inval,
        ),
        (
            "a policy nobody registered",
            control::pool_create("probe", "no-such-policy").map(|_| ()),
            Errno::Inval,
        ),
    ];
    for (what, got, want) in refusals {
        if got != Err(want) {
            fail(alloc::format!("{what}: {got:?}, want Err({want:?})"));
        }
    }
    let last = &pools[pools.len() - 1];
    let (Some(&cpu), true) = (last.cpus.last(), last.cpus.len() >= 2) else {
        return; // no CPU to lend without emptying a pool
    };
    let probe = match control::pool_create("probe", &last.policy) {
        Ok(p) => p,
        Err(e) => return fail(alloc::format!("PoolCreate: {e:?}")),
    };
    let steps = [
        ("removing a CPU", control::pool_remove_cpu(n - 1, cpu)),
        ("adding it to a new pool", control::pool_add_cpu(probe, cpu)),
    ];
    for (what, got) in steps {
        if let Err(e) = got {
            fail(alloc::format!("{what}: {e:?}"));
        }
    }
    match control::pool_info(probe) {
        Ok((_, _, cpus)) if cpus == [cpu] => {}
        other => fail(alloc::format!(
            "the new pool holds {other:?}, not CPU {cpu}"
        )),
    }
    if control::pool_destroy(probe) != Err(Errno::Busy) {
        fail("a pool holding a CPU was destroyed".into());
    }
    let back = [
        ("taking the CPU back", control::pool_remove_cpu(probe, cpu)),
        ("returning it", control::pool_add_cpu(n - 1, cpu)),
        ("destroying the empty pool", control::pool_destroy(probe)),
    ];
    for (what, got) in back {
        if let Err(e) = got {
            fail(alloc::format!("{what}: {e:?}"));
        }
    }
    match control::pool_info(n - 1) {
        Ok((_, _, cpus)) if cpus == last.cpus => {
            println!("pool control: refusals and a CPU lent and back, ok")
        }
        other => fail(alloc::format!("pool {} ended as {other:?}", last.name)),
    }
}

fn fatal(what: &str, e: Errno) -> u8 {
    println!("FAIL: {what}: {e:?}");
    ExitCode::Failure as u8
}

/// The planned domains, each checked against what the ABI can carry.
fn checked_domains<'a>(plan: &Plan<'a>) -> Result<Vec<PlannedDomain<'a>>, alloc::string::String> {
    let planned = plan
        .domains()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| alloc::format!("bad plan: malformed domain list: {e}"))?;
    if planned.len() != plan.domains.count as usize || planned.len() > MAX_DOMAINS {
        return Err(alloc::format!(
            "bad plan: {} domains; at most {MAX_DOMAINS}",
            plan.domains.count
        ));
    }
    for d in &planned {
        report::validate(plan, d).map_err(|e| alloc::format!("{e}"))?;
    }
    Ok(planned)
}

/// Creates every planned domain (paused), then unpauses them all so they start together.
/// Those `held` for a timeline's `start` event are created after that, and stay paused.
/// Returns the time it took to create and start them all, and, for a plan with no warm-up
/// and no held domain, the measured interval's start: its snapshot (slot 0), taken just
/// before the unpause. Otherwise the interval starts once Domain0 runs again after the
/// warm-up, and a domain done within milliseconds of its start (`grants.toml`'s pair) could
/// finish before Domain0, kept from the CPU by the domains it woke, took that snapshot: its
/// work then fell outside the interval (1 run in 60 at load 6). `None` (the problem in
/// `verdict`) if any step failed.
fn create_all<'a>(
    plan: &Plan<'a>,
    planned: Vec<PlannedDomain<'a>>,
    held: &dyn Fn(usize) -> bool,
    runs: &mut Vec<DomainRun<'a>>,
    verdict: &mut Verdict,
) -> Option<(u64, Option<u64>)> {
    let start = now_ns();
    let total = planned.len() as u64;
    // A `progress` record every sixteenth of the domains (the console's "creating n of N").
    let every = total.div_ceil(16).max(1);
    let (later, now): (Vec<_>, Vec<_>) =
        planned.into_iter().enumerate().partition(|(i, _)| held(*i));
    for (_, d) in now {
        let done = runs.len() as u64;
        if done.is_multiple_of(every) {
            emit(
                &windows::progress_record(Phase::Create, done, total),
                verdict,
            );
        }
        let id = match control::create(&report::create_request(plan, &d)) {
            Ok(id) => id,
            Err(e) => {
                verdict.fail(alloc::format!(
                    "cannot create domain `{}` (workload {}, {} vCPUs, {} KiB): {e:?}",
                    d.name,
                    d.workload,
                    d.vcpus,
                    d.memory_kib
                ));
                return None;
            }
        };
        let info = match control::info(id) {
            Ok(info) => info,
            Err(e) => {
                verdict.fail(alloc::format!("GetInfo of new domain `{}`: {e:?}", d.name));
                // Still ours to destroy.
                let _ = control::destroy(id);
                return None;
            }
        };
        runs.push(DomainRun {
            planned: d,
            id,
            before: info,
            after: info,
            pool: None,
        });
    }
    emit(
        &windows::progress_record(Phase::Create, total, total),
        verdict,
    );
    let created = now_ns();
    let t0 = (plan.warmup_ms == 0 && later.is_empty()).then(|| take_snapshot(0, verdict));
    // The snapshot's time is not the start's (`bench-create.toml` times create and start).
    let unpausing = now_ns();
    // The start instant is the hypervisor's: once the domains run, Domain0 may wait for the
    // CPU before it can read a clock itself.
    let started = match control::unpause_all() {
        Ok((n, at)) if n as usize == runs.len() => at,
        Ok((n, _)) => {
            verdict.fail(alloc::format!(
                "UnpauseAll started {n} domains, not {}",
                runs.len()
            ));
            return None;
        }
        Err(e) => {
            verdict.fail(alloc::format!("cannot unpause the domains: {e:?}"));
            return None;
        }
    };
    println!(
        "created {} domains in {} us, started them in {} us",
        runs.len(),
        (created - start) / 1000,
        started.saturating_sub(unpausing) / 1000
    );
    // The held ones, in plan order: each goes in at its plan index (those before it are in).
    for (i, d) in later {
        let made = control::create(&report::create_request(plan, &d))
            .and_then(|id| control::info(id).map(|info| (id, info)));
        match made {
            Ok((id, info)) => runs.insert(
                i.min(runs.len()),
                DomainRun {
                    planned: d,
                    id,
                    before: info,
                    after: info,
                    pool: None,
                },
            ),
            Err(e) => {
                verdict.fail(alloc::format!(
                    "cannot create domain `{}` (held for its start event): {e:?}",
                    d.name
                ));
                return None;
            }
        }
    }
    Some(((created - start) + started.saturating_sub(unpausing), t0))
}

/// What each domain costs: the hypervisor's own heap (domain and vCPU objects, tables)
/// beyond the domain's frames, and the frames (its memory and page tables), averaged over
/// the domains just created.
fn memory_per_domain(runs: &[DomainRun<'_>], base: &Figures, verdict: &mut Verdict) {
    let n = runs.len() as u64;
    if n == 0 {
        return;
    }
    let (before, frames_before) = (base.heap_bytes, base.frames);
    match (control::heap_used(), control::frame_counts()) {
        (Ok(after), Ok(frames)) => {
            let heap = after.saturating_sub(before) / n;
            emit(
                &report::bench_record("hypervisor_bytes_per_domain", heap, "bytes", None),
                verdict,
            );
            let frames = frames_before.free.saturating_sub(frames.free) / n;
            emit(
                &report::bench_record("frames_per_domain", frames, "frames", None),
                verdict,
            );
        }
        (a, b) => verdict.fail(alloc::format!(
            "memory figures: {a:?} {:?}",
            b.map(|f| f.free)
        )),
    }
}

/// Domains on which the control operations are exercised during the warm-up.
const EXERCISED: usize = 4;

/// Exercises the control operations on a few live domains, after the measured interval:
/// each domain's parameters read back as planned (or as the timeline last set them,
/// `timeline_set`) and survive being set again; a paused domain stops getting CPU time and
/// runs again once unpaused.
fn exercise_control(
    runs: &[DomainRun<'_>],
    timeline: &workloads::timeline::Timeline<'_>,
    verdict: &mut Verdict,
) {
    for (i, r) in runs.iter().enumerate().take(EXERCISED) {
        if timeline.destroyed(i).is_some() {
            continue;
        }
        let name = r.planned.name;
        let want = timeline.last_set(i).unwrap_or(r.planned.sched);
        match control::get_sched(r.id) {
            Ok(params) if params == want => {}
            Ok(params) => verdict.fail(alloc::format!(
                "`{name}`: GetSched gives {params:?}, planned {want:?}"
            )),
            Err(e) => verdict.fail(alloc::format!("`{name}`: GetSched: {e:?}")),
        }
        if let Err(e) = control::set_sched(r.id, want) {
            verdict.fail(alloc::format!(
                "`{name}`: SetSched of its own parameters: {e:?}"
            ));
        }
        // Every domain was paused when the interval ended (`PauseAll`): this one runs again
        // for its checks, and is paused again after them.
        let ended = control::info(r.id).is_ok_and(|i| i.state == abi::control::DomainState::Dead);
        if ended || control::unpause(r.id).is_err() {
            continue; // a hostile domain already killed, say
        }
        if let Err(e) = control::pause(r.id) {
            verdict.fail(alloc::format!("`{name}`: Pause: {e:?}"));
            continue;
        }
        // Paused: no more CPU time, however long we wait. `Pause` returns once no CPU runs
        // the domain (Xen's `domain_pause` is synchronous too), so from its return on.
        let before = control::info(r.id);
        sleep_ns(5_000_000);
        let after = control::info(r.id);
        match (before, after) {
            (Ok(b), Ok(a))
                if a.state == abi::control::DomainState::Paused && a.cpu_ns == b.cpu_ns => {}
            (Ok(b), Ok(a)) => verdict.fail(alloc::format!(
                "`{name}`: paused, yet state {:?} and CPU time {} -> {} ns",
                a.state,
                b.cpu_ns,
                a.cpu_ns
            )),
            (b, a) => verdict.fail(alloc::format!(
                "`{name}`: GetInfo while paused: {:?} {:?}",
                b.err(),
                a.err()
            )),
        }
        if let Err(e) = control::unpause(r.id) {
            verdict.fail(alloc::format!("`{name}`: Unpause: {e:?}"));
        }
        if !control::info(r.id).is_ok_and(|i| i.state == abi::control::DomainState::Alive) {
            verdict.fail(alloc::format!("`{name}`: not alive again after Unpause"));
        }
        let _ = control::pause(r.id);
    }
}

/// Null hypercalls per timed batch, and batches (the median is kept: TCG is noisy).
const CALLS: u64 = 4000;
const BATCHES: usize = 5;

/// Nanoseconds per null hypercall, the median of [`BATCHES`] batches.
fn time_null_hypercalls() -> u64 {
    let mut per_call = [0u64; BATCHES];
    for slot in per_call.iter_mut() {
        let t0 = now_ns();
        for _ in 0..CALLS {
            workloads::hypercall::null();
        }
        *slot = (now_ns() - t0) / CALLS;
    }
    per_call.sort_unstable();
    per_call[BATCHES / 2]
}

/// The micro-benchmarks of `--bench`: the null hypercall against the bare `syscall; sysretq`
/// floor, and the hypervisor's domain-switch floor. Writes their `bench` records and returns
/// the switch floor (ns), against which the measured switch cost is reported later.
fn micro_benchmarks(verdict: &mut Verdict) -> Option<u64> {
    let full = time_null_hypercalls();
    if let Err(e) = control::bench_floor(true) {
        verdict.fail(alloc::format!("sysctl BenchFloor: {e:?}"));
        return None;
    }
    let floor = time_null_hypercalls();
    if let Err(e) = control::bench_floor(false) {
        verdict.fail(alloc::format!("sysctl BenchFloor off: {e:?}"));
    }
    emit(
        &report::bench_record("null_hypercall", full, "ns", Some(floor)),
        verdict,
    );
    emit(
        &report::bench_record("syscall_sysret_floor", floor, "ns", None),
        verdict,
    );
    const ITERS: u32 = 20_000;
    match control::switch_floor_ticks(ITERS) {
        Ok(ticks) => {
            let ns = workloads::time::ticks_to_ns(ticks) / u64::from(ITERS);
            emit(
                &report::bench_record("domain_switch_floor", ns, "ns", None),
                verdict,
            );
            Some(ns)
        }
        Err(e) => {
            verdict.fail(alloc::format!("sysctl BenchSwitchFloor: {e:?}"));
            None
        }
    }
}

/// Records every domain's and CPU's figures at one instant, in the hypervisor, into snapshot
/// `slot`; returns the instant.
fn take_snapshot(slot: u8, verdict: &mut Verdict) -> u64 {
    control::take_snapshot(slot).unwrap_or_else(|e| {
        verdict.fail(alloc::format!("sysctl TakeSnapshot: {e:?}"));
        now_ns()
    })
}

/// Reads every domain's figures from snapshot `slot` (slot 0 into `before`, 1 into `after`),
/// but those `gone` (destroyed by the timeline).
fn read_domains(
    runs: &mut [DomainRun<'_>],
    gone: &dyn Fn(usize) -> bool,
    slot: u8,
    verdict: &mut Verdict,
) {
    for (_, r) in runs.iter_mut().enumerate().filter(|(i, _)| !gone(*i)) {
        match control::snapshot(r.id, slot) {
            Ok(info) if slot == 1 => r.after = info,
            Ok(info) => r.before = info,
            Err(e) => verdict.fail(alloc::format!("GetSnapshot of `{}`: {e:?}", r.planned.name)),
        }
    }
}

/// Every CPU's figures from snapshot `slot`.
fn snapshot_cpus(cpus: u32, slot: u8, verdict: &mut Verdict) -> Vec<CpuStats> {
    (0..cpus)
        .map(|cpu| {
            control::cpu_snapshot(cpu, slot).unwrap_or_else(|e| {
                verdict.fail(alloc::format!("CpuSnapshot of CPU {cpu}: {e:?}"));
                CpuStats::default()
            })
        })
        .collect()
}

/// The warm-up, the measured interval (and the timeline's events in it), the records, and
/// each domain's fate. `started`: the interval's start snapshot, if `create_all` took it.
#[allow(clippy::too_many_arguments)] // each is one of the run's parts; no bundle reads better
fn measure(
    plan: &Plan<'_>,
    policy: &str,
    cpus: u32,
    runs: &mut [DomainRun<'_>],
    verdict: &mut Verdict,
    switch_floor_ns: Option<u64>,
    dom_exc: Option<u32>,
    timeline: &mut workloads::timeline::Timeline<'_>,
    pools: &[results::Pool],
    started: Option<u64>,
) {
    // Both ends are taken first and read afterwards: reading 1024 domains' figures takes
    // Domain0 a while when it competes with them, and must not stretch the interval. (With
    // windows, the start and each boundary are read at once: the boundaries share slot 1.)
    let t0 = started.unwrap_or_else(|| {
        sleep_ns(plan.warmup_ms.saturating_mul(1_000_000));
        // Its instant read last: the time the hypervisor takes to read every domain, with
        // the CPUs held, falls before the interval, not in it (charged to the vCPUs held).
        control::take_snapshot_start(0).unwrap_or_else(|e| {
            verdict.fail(alloc::format!("sysctl TakeSnapshotStart: {e:?}"));
            now_ns()
        })
    });
    let mut bounds = Boundaries::start(plan, runs, t0, verdict);
    let end = t0.saturating_add(plan.duration_ms.saturating_mul(1_000_000));
    // Wake at each window boundary (or each second, for progress) and at each event of the
    // timeline: apply every event due, then take the boundary if it is reached.
    let ids: Vec<_> = runs.iter().map(|r| r.id).collect();
    let mut next_event = timeline.begin(t0);
    loop {
        let tick = windows::next_tick(t0, end, bounds.step_ns, now_ns());
        let event = next_event.filter(|&at| at < end).unwrap_or(u64::MAX);
        let deadline = tick.min(event);
        if deadline >= end {
            break;
        }
        sleep_until(deadline);
        // A boundary due with an event is taken first: the window ends as the event comes,
        // and its live snapshot does not read the burst of state changes the event makes
        // (a swap pauses, moves and unpauses every domain of a pool), which a vCPU's one
        // kept past state (`kerncore::account::Account`) cannot undo.
        if tick <= deadline {
            let gone = |i: usize| timeline.destroyed(i).is_some();
            bounds.tick(plan, runs, &gone, t0, tick, verdict);
        }
        if event <= deadline {
            next_event = timeline.apply_due(now_ns(), &|i| ids[i]);
            // A domain destroyed now ends its windows with the figures it had just before:
            // the window this event falls in takes what it did since the last boundary
            // (left at that boundary's, the tail went to the interval's last window,
            // seconds after the domain was gone).
            for (i, now) in bounds.now.iter_mut().enumerate() {
                if let Some((_, last)) = timeline.destroyed(i) {
                    *now = last;
                }
            }
        }
    }
    sleep_until(end);
    let t1 = take_snapshot(1, verdict);
    // Domain0's own CPU time as the interval ends (the `run` record's `dom0_cpu_ns`), not
    // after the reads, checks, waits and pauses below.
    let dom0_cpu_ns = workloads::time::vcpu_time_ns(0);
    // Nothing more is measured: the domains stop competing with Domain0 for the CPU while
    // it reads their figures, writes the records and tears down. First thing: under a
    // policy that gives Domain0 no precedence (credit2, where it has the default weight),
    // 1024 hogs made each of its preemptions a wait of a whole round.
    if let Err(e) = control::pause_all() {
        verdict.fail(alloc::format!("PauseAll: {e:?}"));
    }
    let gone = |i: usize| timeline.destroyed(i).is_some();
    if bounds.windows.is_none() {
        read_domains(runs, &gone, 0, verdict);
    }
    read_domains(runs, &gone, 1, verdict);
    for (i, r) in runs.iter_mut().enumerate() {
        if let Some((before, after)) = timeline.destroyed(i) {
            (r.before, r.after) = (before, after);
        }
    }
    if let Some(w) = &mut bounds.windows {
        w.close(t1 - t0, runs.iter().map(|r| &r.after));
    }
    let cpus_before = snapshot_cpus(cpus, 0, verdict);
    let cpus_after = snapshot_cpus(cpus, 1, verdict);
    // After the interval, so as not to disturb what was measured.
    exercise_control(runs, timeline, verdict);
    // A domain that should be killed and is still alive gets a second to misbehave: wait
    // for its end in the hypervisor rather than judge it too early. Its record keeps what
    // the snapshot saw; the verdict uses how it ended.
    let deadline = now_ns().saturating_add(1_000_000_000);
    let mut ended_late = Vec::new();
    let still = |i: usize, r: &DomainRun<'_>| {
        r.planned.expect == Expect::Killed
            && r.after.exit == DomainExit::Running
            && timeline.destroyed(i).is_none()
    };
    for (i, r) in runs.iter().enumerate() {
        if still(i, r) {
            let _ = control::unpause(r.id); // paused with the others at the end
        }
    }
    for (i, r) in runs.iter().enumerate() {
        if still(i, r) {
            match control::wait(r.id, deadline) {
                Ok(Some(info)) => ended_late.push((i, info.exit)),
                Ok(None) => {}
                Err(e) => verdict.fail(alloc::format!("waiting for `{}`: {e:?}", r.planned.name)),
            }
        }
    }
    // The domains let run again for the checks above stop again.
    if let Err(e) = control::pause_all() {
        verdict.fail(alloc::format!("PauseAll: {e:?}"));
    }

    let summary = RunSummary {
        name: plan.name,
        policy,
        cpus,
        shape: plan.shape,
        domains: runs.len(),
        start_ns: t0,
        wallclock_start_ns: workloads::time::wallclock_ns() - (now_ns() - t0),
        dom0_cpu_ns,
        duration_ns: t1 - t0,
        interval: report::CpuInterval::between(&cpus_before, &cpus_after),
        pools: (!pools.is_empty()).then(|| pools.to_vec()),
    };
    emit(&report::run_record(&summary), verdict);
    for line in timeline.records() {
        emit(&line, verdict);
    }
    for problem in timeline.failures() {
        verdict.fail(problem);
    }
    for (i, r) in runs.iter_mut().enumerate() {
        if !pools.is_empty() {
            let p = timeline.pool_of(i, r.planned.pool) as usize;
            r.pool = pools.get(p).map(|p| p.name.clone());
        }
    }
    for r in runs.iter() {
        emit(&report::domain_record(r), verdict);
    }
    bounds.write(runs, verdict);
    if plan.bench {
        // With only `switch` domains on a CPU, its busy time is nothing but switching.
        let switches = runs
            .iter()
            .map(|r| r.after.switches.saturating_sub(r.before.switches))
            .sum();
        if let Some(ns) = report::ns_per_switch(
            cpus,
            summary.duration_ns,
            summary.interval.idle_ns,
            switches,
        ) {
            emit(
                &report::bench_record("ns_per_switch", ns, "ns", switch_floor_ns),
                verdict,
            );
        }
    }
    for (i, exit) in ended_late {
        runs[i].after.exit = exit;
    }
    // Any domain that ended must have been announced on the domain-exception VIRQ.
    let ended = runs
        .iter()
        .filter(|r| r.after.exit != DomainExit::Running)
        .count();
    if ended > 0
        && let Some(port) = dom_exc
        && !shared::take_event(port)
    {
        verdict.fail(alloc::format!(
            "{ended} domains ended but no domain-exception event arrived"
        ));
    }
    for r in runs.iter() {
        if let Err(m) = report::check(r.planned.expect, r.after.exit) {
            verdict.fail(alloc::format!(
                "domain `{}` ({}): {m}",
                r.planned.name,
                r.planned.workload
            ));
        }
    }
}

/// Domain0's wake-ups during the measured interval: at each window boundary (`window_ms`),
/// else each second, for the `window` records and the `progress` records.
struct Boundaries {
    /// Between wake-ups.
    step_ns: u64,
    /// The windows so far, if the plan asks for them.
    windows: Option<Windows>,
    /// Every domain's figures at the last boundary's snapshot (reused from window to window).
    now: Vec<abi::control::DomainInfo>,
    /// When the last `progress` record was written.
    last_progress_ns: u64,
    /// What the boundaries cost Domain0: CPU time, and how late the snapshots were taken.
    cost_ns: u64,
    late_max_ns: u64,
    ticks: u64,
}

/// Between `progress` records while measuring.
const PROGRESS_NS: u64 = 1_000_000_000;

impl Boundaries {
    /// At the start of the interval, `t0` (snapshot 0 just taken): with windows, every
    /// domain's figures then are read now, as the first window's start.
    fn start(plan: &Plan<'_>, runs: &mut [DomainRun<'_>], t0: u64, verdict: &mut Verdict) -> Self {
        emit(
            &windows::progress_record(Phase::Measure, 0, plan.duration_ms),
            verdict,
        );
        let windows = (plan.window_ms > 0).then(|| {
            read_domains(runs, &|_| false, 0, verdict);
            Windows::new(runs.iter().map(|r| &r.before))
        });
        Boundaries {
            step_ns: match plan.window_ms {
                0 => PROGRESS_NS,
                ms => ms.saturating_mul(1_000_000),
            },
            now: runs.iter().map(|r| r.before).collect(),
            windows,
            last_progress_ns: t0,
            cost_ns: 0,
            late_max_ns: 0,
            ticks: 0,
        }
    }

    /// A boundary planned for `deadline`: the window that ends there (snapshot 1, read at
    /// once), then a `progress` record if a second has passed.
    fn tick(
        &mut self,
        plan: &Plan<'_>,
        runs: &[DomainRun<'_>],
        gone: &dyn Fn(usize) -> bool,
        t0: u64,
        deadline: u64,
        verdict: &mut Verdict,
    ) {
        let cpu_before = workloads::time::vcpu_time_ns(0);
        let at = if let Some(w) = &mut self.windows {
            // Live: holding every CPU at each boundary would charge the hold to the vCPUs
            // it stopped (`Sysctl::TakeSnapshotLive`). The interval's ends stay held.
            let at = control::take_snapshot_live(1).unwrap_or_else(|e| {
                verdict.fail(alloc::format!("sysctl TakeSnapshotLive: {e:?}"));
                now_ns()
            });
            // A destroyed domain keeps the figures it had (its windows stop there).
            let live = runs.iter().zip(self.now.iter_mut()).enumerate();
            for (_, (r, info)) in live.filter(|(i, _)| !gone(*i)) {
                match control::snapshot(r.id, 1) {
                    Ok(i) => *info = i,
                    Err(e) => {
                        verdict.fail(alloc::format!("GetSnapshot of `{}`: {e:?}", r.planned.name))
                    }
                }
            }
            w.close(at.saturating_sub(t0), &self.now);
            self.late_max_ns = self.late_max_ns.max(at.saturating_sub(deadline));
            at
        } else {
            now_ns()
        };
        if at.saturating_sub(self.last_progress_ns) >= PROGRESS_NS || self.windows.is_none() {
            self.last_progress_ns = at;
            emit(
                &windows::progress_record(
                    Phase::Measure,
                    at.saturating_sub(t0) / 1_000_000,
                    plan.duration_ms,
                ),
                verdict,
            );
        }
        self.cost_ns += workloads::time::vcpu_time_ns(0).saturating_sub(cpu_before);
        self.ticks += 1;
    }

    /// The `window` records, and what taking them cost Domain0 (`bench` records
    /// `window_dom0_cpu_ns`, its CPU time per boundary, and `window_late_max_ns`, the
    /// latest a boundary's snapshot was taken after its planned instant).
    fn write(&self, runs: &[DomainRun<'_>], verdict: &mut Verdict) {
        let Some(w) = &self.windows else { return };
        let ids: Vec<(u32, &str)> = runs.iter().map(|r| (r.id, r.planned.name)).collect();
        for record in w.records(&ids) {
            emit(&record, verdict);
        }
        if let Some(per_tick) = self.cost_ns.checked_div(self.ticks) {
            emit(
                &report::bench_record("window_dom0_cpu_ns", per_tick, "ns", None),
                verdict,
            );
            emit(
                &report::bench_record("window_late_max_ns", self.late_max_ns, "ns", None),
                verdict,
            );
        }
    }
}

fn emit(json: &str, verdict: &mut Verdict) {
    if let Err(e) = control::emit_record(json) {
        verdict.fail(alloc::format!("cannot emit a record ({e:?}): {json}"));
    }
}

/// Destroys every domain (retrying while one is busy being torn down elsewhere), then checks
/// that every frame, port, grant and byte of the hypervisor's heap is back to `base`, giving
/// the CPUs a moment to drop their last references.
fn teardown(
    runs: &[DomainRun<'_>],
    gone: &dyn Fn(usize) -> bool,
    base: &Figures,
    verdict: &mut Verdict,
) {
    let deadline = now_ns() + SETTLE_MS * 1_000_000;
    // Those a timeline event destroyed are gone already.
    for (_, r) in runs.iter().enumerate().filter(|(i, _)| !gone(*i)) {
        loop {
            match control::destroy(r.id) {
                Ok(()) => break,
                Err(Errno::Busy) if now_ns() < deadline => sleep_ns(1_000_000),
                Err(e) => {
                    verdict.fail(alloc::format!("cannot destroy `{}`: {e:?}", r.planned.name));
                    break;
                }
            }
        }
    }
    match churn::settle(base, churn::SETTLE_NS) {
        Ok((_, left)) => {
            for difference in left {
                verdict.fail(alloc::format!("after teardown, {difference}"));
            }
        }
        Err(e) => verdict.fail(alloc::format!("the figures at the end: {e:?}")),
    }
}
