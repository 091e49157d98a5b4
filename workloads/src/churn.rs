//! Domain0's churn (`[churn]` in a spec): domain lifetimes, round after round, with the
//! hypervisor's frames, event ports, grants and heap checked back at their baseline.
//!
//! A measured run creates its domains once and destroys them once, so it shows neither a
//! leak of one object per lifetime nor the races of a domain destroyed while another CPU is
//! still picking its vCPUs. Churn is for both (issue 10: destroy right after unpause failed
//! within a few hundred lifetimes, and the heap grew by 8 MB over 2,500).
//!
//! A round creates every planned domain, paused, in plan order: each domain of the previous
//! round is gone and ids are handed out lowest first, so ping pairs and split devices find
//! each other by domain id as in a measured run. Each lifetime ends in one of the ways of
//! [`End`], drawn from a generator seeded by the spec; a round runs `0..=run_ms` between its
//! unpauses and its end. After every `check_every` lifetimes, and at the end, with the
//! round's domains destroyed, the hypervisor's figures ([`Figures`]) must be exactly those
//! taken before the first round: no tolerance, so that one vCPU object lost per lifetime
//! fails the run. That holds because nothing the hypervisor keeps grows with the number of
//! domains it has seen: its domain and vCPU tables and snapshot slots get their full size at
//! boot, and the policies' runqueues are sized by the vCPUs present now (`sched::runq`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use abi::control::{DomainExit, DomainId};
use abi::error::Errno;
use abi::tool::plan::{Churn, Expect, Plan, PlannedDomain};

use crate::control;
use crate::report::{self, Figures, Verdict};
use crate::time::{now_ns, sleep_ns};
use crate::work::Rng;

/// How one domain's lifetime ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Destroyed right after its unpause (0 to 200 µs later), without pausing: its vCPUs
    /// may be on a runqueue, picked or being claimed by another CPU.
    AfterUnpause,
    /// Destroyed at the end of its round, running, without pausing.
    Running,
    /// Paused at the end of its round, then destroyed.
    Paused,
    /// Destroyed without ever running.
    Unstarted,
    /// A domain the hypervisor must kill (`expect = "killed"`): waited for, then destroyed.
    Killed,
}

impl End {
    /// Every way, in the order of [`Tally::ended`].
    pub const ALL: [End; 5] = [
        End::AfterUnpause,
        End::Running,
        End::Paused,
        End::Unstarted,
        End::Killed,
    ];

    /// Its name in `bench` records (`churn_end_<name>`).
    pub fn name(self) -> &'static str {
        match self {
            End::AfterUnpause => "after_unpause",
            End::Running => "running",
            End::Paused => "paused",
            End::Unstarted => "unstarted",
            End::Killed => "killed",
        }
    }

    /// Draws how a lifetime ends: of ten, three right after unpause, four running, two
    /// paused, one never started; a domain the hypervisor must kill is left to it in half of
    /// the lifetimes that would have ended running or paused.
    pub fn choose(rng: &mut Rng, expect: Expect) -> End {
        let end = match rng.up_to(9) {
            0..=2 => End::AfterUnpause,
            3..=6 => End::Running,
            7..=8 => End::Paused,
            _ => End::Unstarted,
        };
        if expect == Expect::Killed
            && matches!(end, End::Running | End::Paused)
            && rng.up_to(1) == 0
        {
            End::Killed
        } else {
            end
        }
    }

    /// Whether the lifetime unpauses the domain.
    pub fn starts(self) -> bool {
        self != End::Unstarted
    }

    fn index(self) -> usize {
        End::ALL.iter().position(|&e| e == self).unwrap_or(0)
    }
}

/// What a churn run counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Lifetimes that ended each way, in the order of [`End::ALL`].
    pub ended: [u64; End::ALL.len()],
    /// Checks of the figures against the baseline, and how many found them off.
    pub checks: u64,
    pub checks_failed: u64,
    /// The most ports, grants and grant mappings the live domains held at once, sampled at
    /// the end of each round (before its teardown): what the churn had in use.
    pub max_ports: u32,
    pub max_grants: u32,
    pub max_grant_maps: u32,
    /// The heap at the last check minus the baseline (0 when it was back).
    pub heap_growth_bytes: i64,
}

impl Tally {
    /// Counts a lifetime that ended `end`.
    pub fn ended(&mut self, end: End) {
        self.ended[end.index()] += 1;
    }

    /// Keeps the largest use of ports and grants seen so far.
    pub fn sample(&mut self, f: &Figures) {
        self.max_ports = self.max_ports.max(f.resources.ports);
        self.max_grants = self.max_grants.max(f.resources.grants);
        self.max_grant_maps = self.max_grant_maps.max(f.resources.grant_maps);
    }

    /// The `bench` records of a churn of `lifetimes` lifetimes in `elapsed_ns`, with the
    /// hypervisor's heap at `baseline_heap` bytes when only Domain0 was alive.
    pub fn records(&self, lifetimes: u64, elapsed_ns: u64, baseline_heap: u64) -> Vec<String> {
        let per_s = (u128::from(lifetimes) * 1_000_000_000 / u128::from(elapsed_ns.max(1))) as u64;
        // Growth per 1000 lifetimes, rounded away from zero so that any leak shows; a heap
        // below its baseline (never expected) is reported by the check, not here.
        let growth = u64::try_from(self.heap_growth_bytes)
            .unwrap_or(0)
            .saturating_mul(1000)
            .div_ceil(lifetimes.max(1));
        let mut out = Vec::new();
        let mut add = |name: &str, value: u64, unit: &str| {
            out.push(report::bench_record(name, value, unit, None));
        };
        add("churn_lifetimes", lifetimes, "lifetimes");
        add("churn_lifetimes_per_s", per_s, "lifetimes_per_s");
        add("churn_heap_growth_per_1000", growth, "bytes");
        add("churn_heap_baseline", baseline_heap, "bytes");
        add("churn_checks", self.checks, "checks");
        for end in End::ALL {
            let name = format!("churn_end_{}", end.name());
            add(&name, self.ended[end.index()], "lifetimes");
        }
        add("churn_max_ports", u64::from(self.max_ports), "ports");
        add("churn_max_grants", u64::from(self.max_grants), "grants");
        add(
            "churn_max_grant_maps",
            u64::from(self.max_grant_maps),
            "mappings",
        );
        out
    }
}

/// Whether a check is due after `done` lifetimes: every `every`, and at the end (`total`).
pub fn check_due(done: u64, last_check: u64, every: u64, total: u64) -> bool {
    done >= total || done / every.max(1) > last_check / every.max(1)
}

/// How long a check waits for the figures to come back. CPUs drop their last references to
/// a destroyed domain's vCPUs a moment after destroy returns (the vCPU leaving a CPU is
/// released before the CPU's own reference goes), so the heap may lag by microseconds; a
/// leak never comes back however long one waits.
pub const SETTLE_NS: u64 = 1_000_000_000;

/// Waits up to `settle_ns` for the figures to equal `base`. Returns the figures, and the
/// differences still left at the deadline (empty when they came back).
pub fn settle(base: &Figures, settle_ns: u64) -> Result<(Figures, Vec<String>), Errno> {
    let deadline = now_ns().saturating_add(settle_ns);
    loop {
        let now = control::figures()?;
        let diff = now.differences(base);
        if diff.is_empty() || now_ns() >= deadline {
            return Ok((now, diff));
        }
        sleep_ns(1_000_000);
    }
}

/// Destroys `id`, asking again while the hypervisor answers Busy (it waits up to seconds
/// itself for the CPUs to let go of the domain's vCPUs, then refuses).
fn destroy(id: DomainId) -> Result<(), Errno> {
    let deadline = now_ns().saturating_add(10_000_000_000);
    loop {
        match control::destroy(id) {
            Err(Errno::Busy) if now_ns() < deadline => sleep_ns(1_000_000),
            other => return other,
        }
    }
}

/// How long a domain the hypervisor must kill is waited for.
const KILL_WAIT_NS: u64 = 2_000_000_000;

/// One domain of a round.
struct Life<'a> {
    planned: &'a PlannedDomain<'a>,
    id: DomainId,
    end: End,
    /// Already destroyed.
    gone: bool,
}

/// What went wrong in a round, in words (the lifetime and the domain named).
type RoundError = String;

/// Runs the churn of `plan` (its domains as `planned`) against the figures `base`, taken
/// with only Domain0 alive. Problems go to `verdict`. Returns the lifetimes run and the
/// tally (fewer lifetimes than planned when a control operation failed and the churn had to
/// stop).
pub fn run(
    plan: &Plan<'_>,
    planned: &[PlannedDomain<'_>],
    churn: &Churn,
    base: &Figures,
    verdict: &mut Verdict,
) -> (u64, Tally) {
    let mut rng = Rng::new(churn.seed);
    let mut tally = Tally::default();
    let (mut done, mut last_check) = (0u64, 0u64);
    while done < churn.lifetimes && !planned.is_empty() {
        let n = (churn.lifetimes - done).min(planned.len() as u64) as usize;
        let result = round(plan, &planned[..n], done, churn, &mut rng, &mut tally);
        done += n as u64;
        if let Err(e) = result {
            verdict.fail(e);
            check(base, done, &mut tally, verdict);
            return (done, tally);
        }
        if check_due(done, last_check, churn.check_every, churn.lifetimes) {
            check(base, done, &mut tally, verdict);
            last_check = done;
        }
    }
    if tally.checks_failed > 1 {
        verdict.fail(format!(
            "{} of {} checks found the figures off their baseline",
            tally.checks_failed, tally.checks
        ));
    }
    (done, tally)
}

/// Checks the figures against the baseline after `done` lifetimes; the first check that
/// finds them off says how, in `verdict`.
fn check(base: &Figures, done: u64, tally: &mut Tally, verdict: &mut Verdict) {
    tally.checks += 1;
    match settle(base, SETTLE_NS) {
        Ok((now, diff)) => {
            tally.heap_growth_bytes = now.heap_bytes as i64 - base.heap_bytes as i64;
            if !diff.is_empty() {
                tally.checks_failed += 1;
                if tally.checks_failed == 1 {
                    verdict.fail(format!(
                        "after {done} lifetimes, not back at the baseline: {}",
                        diff.join("; ")
                    ));
                }
            }
        }
        Err(e) => {
            tally.checks_failed += 1;
            verdict.fail(format!(
                "after {done} lifetimes: cannot read the figures: {e:?}"
            ));
        }
    }
}

/// One round: create `planned` (lifetimes `first..`), start, end each as drawn, destroy all.
/// On an error every domain of the round still alive is destroyed before returning.
fn round(
    plan: &Plan<'_>,
    planned: &[PlannedDomain<'_>],
    first: u64,
    churn: &Churn,
    rng: &mut Rng,
    tally: &mut Tally,
) -> Result<(), RoundError> {
    let mut lives: Vec<Life<'_>> = Vec::with_capacity(planned.len());
    let result = run_round(plan, planned, first, churn, rng, tally, &mut lives);
    if result.is_err() {
        for l in lives.iter().filter(|l| !l.gone) {
            let _ = destroy(l.id);
        }
    }
    result
}

fn run_round<'a>(
    plan: &Plan<'_>,
    planned: &'a [PlannedDomain<'a>],
    first: u64,
    churn: &Churn,
    rng: &mut Rng,
    tally: &mut Tally,
    lives: &mut Vec<Life<'a>>,
) -> Result<(), RoundError> {
    let what = |i: usize, d: &PlannedDomain<'_>, op: &str, e: Errno| {
        format!(
            "lifetime {}: {op} `{}` ({}, {} vCPUs): {e:?}",
            first + i as u64,
            d.name,
            d.workload,
            d.vcpus
        )
    };
    for (i, d) in planned.iter().enumerate() {
        let id = control::create(&report::create_request(plan, d))
            .map_err(|e| what(i, d, "cannot create", e))?;
        lives.push(Life {
            planned: d,
            id,
            end: End::choose(rng, d.expect),
            gone: false,
        });
    }
    for (i, l) in lives.iter_mut().enumerate() {
        if !l.end.starts() {
            continue;
        }
        control::unpause(l.id).map_err(|e| what(i, l.planned, "cannot unpause", e))?;
        if l.end == End::AfterUnpause {
            // Mostly within microseconds, while the other CPU is being kicked or is picking
            // the vCPUs; a quarter at once.
            let delay_ns = if rng.up_to(3) == 0 {
                0
            } else {
                rng.up_to(200) * 1000
            };
            let until = now_ns() + delay_ns;
            while now_ns() < until {
                core::hint::spin_loop();
            }
            destroy(l.id)
                .map_err(|e| what(i, l.planned, "cannot destroy right after unpause", e))?;
            l.gone = true;
            tally.ended(End::AfterUnpause);
        }
    }
    sleep_ns(rng.up_to(churn.run_ms) * 1_000_000);
    if let Ok(f) = control::figures() {
        tally.sample(&f);
    }
    // The survivors end from a random one on, so that no domain is always first.
    let n = lives.len();
    let start = rng.up_to(n as u64 - 1) as usize;
    for k in 0..n {
        let i = (start + k) % n;
        let l = &mut lives[i];
        if l.gone {
            continue;
        }
        match l.end {
            End::Paused => {
                control::pause(l.id).map_err(|e| what(i, l.planned, "cannot pause", e))?;
            }
            End::Killed => {
                let deadline = now_ns().saturating_add(KILL_WAIT_NS);
                match control::wait(l.id, deadline) {
                    Ok(Some(info)) if matches!(info.exit, DomainExit::Killed(_)) => {}
                    Ok(Some(info)) => {
                        return Err(format!(
                            "lifetime {}: `{}` ({}) was to be killed, but ended {}",
                            first + i as u64,
                            l.planned.name,
                            l.planned.workload,
                            report::ExitText(info.exit)
                        ));
                    }
                    Ok(None) => {
                        return Err(format!(
                            "lifetime {}: `{}` ({}) was to be killed, and was still alive \
                             {} ms after its round started",
                            first + i as u64,
                            l.planned.name,
                            l.planned.workload,
                            KILL_WAIT_NS / 1_000_000
                        ));
                    }
                    Err(e) => return Err(what(i, l.planned, "cannot wait for", e)),
                }
            }
            End::AfterUnpause | End::Running | End::Unstarted => {}
        }
        destroy(l.id).map_err(|e| what(i, l.planned, "cannot destroy", e))?;
        l.gone = true;
        tally.ended(l.end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_is_drawn_and_only_hostile_domains_are_left_to_be_killed() {
        let mut rng = Rng::new(1);
        let mut ok = Tally::default();
        let mut hostile = Tally::default();
        for _ in 0..10_000 {
            ok.ended(End::choose(&mut rng, Expect::Ok));
            hostile.ended(End::choose(&mut rng, Expect::Killed));
        }
        let at = |t: &Tally, e: End| t.ended[e.index()];
        assert_eq!(at(&ok, End::Killed), 0);
        for e in [End::AfterUnpause, End::Running, End::Paused, End::Unstarted] {
            assert!(at(&ok, e) > 500, "{e:?}: {:?}", ok.ended);
            assert!(at(&hostile, e) > 300, "{e:?}: {:?}", hostile.ended);
        }
        assert!(at(&hostile, End::Killed) > 2000, "{:?}", hostile.ended);
        assert_eq!(ok.ended.iter().sum::<u64>(), 10_000);
        // The same seed draws the same lifetimes.
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..50)
                .map(|_| End::choose(&mut r, Expect::Killed))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn checks_fall_due_every_so_many_lifetimes_and_at_the_end() {
        // Rounds of 8 lifetimes, a check every 100, 300 in all.
        let mut last = 0;
        let mut at = Vec::new();
        let mut done = 0;
        while done < 300 {
            done = (done + 8).min(300);
            if check_due(done, last, 100, 300) {
                at.push(done);
                last = done;
            }
        }
        assert_eq!(at, [104, 200, 300]);
        assert!(check_due(5, 0, 1, 10));
        assert!(!check_due(99, 0, 100, 1000));
    }

    #[test]
    fn records_report_growth_per_thousand_and_every_end() {
        let mut t = Tally::default();
        for _ in 0..3 {
            t.ended(End::AfterUnpause);
        }
        t.ended(End::Killed);
        t.checks = 4;
        t.sample(&Figures {
            resources: abi::control::ResourceCounts {
                ports: 7,
                grants: 2,
                grant_maps: 1,
                ..Default::default()
            },
            ..Figures::default()
        });
        let rs = t.records(300, 2_000_000_000, 50_000);
        let find = |name: &str| {
            rs.iter()
                .find(|r| r.contains(&format!("\"name\":\"{name}\"")))
                .unwrap_or_else(|| panic!("no {name} in {rs:?}"))
                .clone()
        };
        assert!(find("churn_lifetimes_per_s").contains("\"value\":150,"));
        assert!(find("churn_heap_growth_per_1000").contains("\"value\":0,"));
        assert!(find("churn_end_after_unpause").contains("\"value\":3,"));
        assert!(find("churn_end_killed").contains("\"value\":1,"));
        assert!(find("churn_max_ports").contains("\"value\":7,"));
        assert!(find("churn_max_grant_maps").contains("\"value\":1,"));
        // One vCPU object (say 1 KiB) lost per lifetime shows as 1000 KiB per thousand.
        t.heap_growth_bytes = 300 * 1024;
        let rs = t.records(300, 1, 0);
        assert!(
            rs.iter()
                .any(|r| r.contains("churn_heap_growth_per_1000") && r.contains(":1024000,"))
        );
    }
}
