//! Domain0's side of the spec's timeline (`[[event]]`, docs/DESIGN.md "Pools, timelines and
//! time series"): each event of the plan applied on time through the control hypercalls,
//! and an `event` record of each, with when it was applied.
//!
//! The measured interval's loop asks [`Timeline::apply_due`] to apply every event due at
//! `now` and gets the next event's deadline back, so it can sleep until the earliest of
//! that, its own next wake-up and the end of the interval. An event's lateness is
//! `applied_ns - at_ns` in its record: the time Domain0 took to get a CPU after its timer
//! fired, plus the hypercalls of the events before it.
//!
//! Domains with `start = "event"` are created with the others but left paused by the start
//! of the run ([`Timeline::held`]); their `start` event unpauses them.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use abi::control::{DomainId, DomainInfo};
use abi::error::Errno;
use abi::tool::plan::{EventOp, Plan, PlannedEvent};
use abi::tool::results::{self, Record};

use crate::control;
use crate::report;

/// The plan's timeline, as Domain0 applies it.
pub struct Timeline<'a> {
    events: Vec<PlannedEvent<'a>>,
    /// The next event to apply.
    next: usize,
    /// The start of the measured interval (system ns), once it began.
    t0: Option<u64>,
    /// What was applied, in order.
    applied: Vec<results::Event>,
    /// Domains destroyed by an event: plan index, figures at the start of the interval
    /// (snapshot 0) and just before the destroy.
    destroyed: Vec<(usize, DomainInfo, DomainInfo)>,
    /// Domains a `pause` event paused, with their switch count once `Pause` returned: at
    /// their `unpause` it must not have grown ([`Paused`]).
    paused: Paused,
    /// After each `policy` event that succeeded: the pool, its new policy and the heap bytes
    /// the pools' changes held then ([`control::pools_held`]). A swap back to a policy the
    /// pool had before must hold no more than the last time (beyond [`SWAP_SLACK_BYTES`]):
    /// each swap frees the instance it replaces (`kernel/src/schedule/cpupool.rs`), so a
    /// cycle of swaps gives back what it took.
    swaps: Vec<(u32, &'a str, i64)>,
}

/// How many more bytes than after the same swap before a swap back may hold: the pools'
/// state and the policies' own tables may settle at a slightly different size (a map's
/// node split); an instance leaked is kilobytes.
const SWAP_SLACK_BYTES: i64 = 512;

/// What a `pause` event left paused: (domain, `DomainInfo::switches` and `work` read once
/// `Pause` returned). `Pause` returns once no CPU runs the domain and none will until the
/// unpause (Xen's `domain_pause`, `vcpu_sleep_sync`): no CPU may switch one of its vCPUs in
/// meanwhile, not even one that a CPU's policy picked just before the pause and claimed
/// just after (a hypervisor that entered it would run it until its next entry, and
/// account a switch to it). The `unpause` event checks the count before it unpauses.
type Paused = Vec<(DomainId, u64, u64)>;

impl<'a> Timeline<'a> {
    /// The plan's events, checked against its `domains` planned domains.
    pub fn new(plan: &Plan<'a>, domains: usize) -> Result<Timeline<'a>, String> {
        let events = plan
            .events()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| alloc::format!("bad plan: malformed event list: {e}"))?;
        for (i, e) in events.iter().enumerate() {
            if (e.first as usize).saturating_add(e.count as usize) > domains
                || e.at_ms >= plan.duration_ms
                || (i > 0 && events[i - 1].at_ms > e.at_ms)
            {
                return Err(alloc::format!(
                    "bad plan: event {i} ({} at {} ms) is out of order, late or names domains \
                     beyond the {domains} planned",
                    e.what,
                    e.at_ms
                ));
            }
        }
        Ok(Timeline {
            events,
            next: 0,
            t0: None,
            applied: Vec::new(),
            destroyed: Vec::new(),
            paused: Vec::new(),
            swaps: Vec::new(),
        })
    }

    /// Whether planned domain `i` waits for a `start` event (left paused at the start).
    pub fn held(&self, i: usize) -> bool {
        self.events.iter().any(|e| {
            e.op == EventOp::Start && (e.first as usize..(e.first + e.count) as usize).contains(&i)
        })
    }

    /// The parameters of the last `set` the timeline applied to planned domain `i`, if any:
    /// what the hypervisor holds for it now (`SetSched` replaces a domain's list).
    pub fn last_set(&self, i: usize) -> Option<abi::control::SchedParams> {
        self.events[..self.next]
            .iter()
            .zip(&self.applied)
            .rev()
            .filter(|(e, r)| r.ok && (e.first as usize..(e.first + e.count) as usize).contains(&i))
            .find_map(|(e, _)| match e.op {
                EventOp::Set(p) => Some(p),
                _ => None,
            })
    }

    /// The figures of planned domain `i` if an event destroyed it: at the start of the
    /// interval and just before it was destroyed (what its record reports).
    pub fn destroyed(&self, i: usize) -> Option<(DomainInfo, DomainInfo)> {
        self.destroyed
            .iter()
            .find(|(d, _, _)| *d == i)
            .map(|(_, b, a)| (*b, *a))
    }

    /// The pool planned domain `i` is in after the events applied so far (`start` its
    /// planned one): what its record reports.
    pub fn pool_of(&self, i: usize, start: u32) -> u32 {
        self.events[..self.next]
            .iter()
            .zip(&self.applied)
            .rev()
            .filter(|(e, r)| {
                r.ok && e.op == EventOp::MoveTo
                    && (e.first as usize..(e.first + e.count) as usize).contains(&i)
            })
            .map(|(e, _)| e.pool)
            .next()
            .unwrap_or(start)
    }

    /// Whether there are events at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The measured interval began at `t0` (system ns); returns the first event's deadline.
    pub fn begin(&mut self, t0: u64) -> Option<u64> {
        self.t0 = Some(t0);
        self.deadline()
    }

    /// The next event's deadline (system ns), if any is left.
    pub fn deadline(&self) -> Option<u64> {
        let t0 = self.t0?;
        self.events
            .get(self.next)
            .map(|e| t0.saturating_add(e.at_ms.saturating_mul(1_000_000)))
    }

    /// Applies every event due at `now` (system ns); `id` gives a planned domain's id.
    /// Returns the next event's deadline.
    pub fn apply_due(&mut self, now: u64, id: &dyn Fn(usize) -> DomainId) -> Option<u64> {
        let t0 = self.t0?;
        while let Some(at) = self.deadline()
            && at <= now
        {
            let e = self.events[self.next];
            self.next += 1;
            let result = apply(&e, id, &mut self.destroyed, &mut self.paused);
            // When the hypervisor says the change took effect (a policy swap), else now.
            let applied = match result {
                Ok(Some(at)) => at,
                _ => crate::time::now_ns(),
            };
            let mut result = result.map(|_| ());
            if result.is_ok() && e.op == EventOp::SetPolicy {
                result = self.held_after_swap(&e);
            }
            self.applied.push(results::Event {
                at_ns: at - t0,
                applied_ns: Some(applied.saturating_sub(t0)),
                target: e.target.to_string(),
                what: e.what.to_string(),
                ok: result.is_ok(),
                error: result.err(),
            });
        }
        self.deadline()
    }

    /// Checks what the pools hold after the swap `e` just made against the last swap of the
    /// same pool to the same policy ([`Timeline::swaps`]), and records it.
    fn held_after_swap(&mut self, e: &PlannedEvent<'a>) -> Result<(), String> {
        let held = control::pools_held()
            .map_err(|err| alloc::format!("pool {}: HeapUsed: {err:?}", e.pool))?;
        let before = self
            .swaps
            .iter()
            .rev()
            .find(|(pool, policy, _)| *pool == e.pool && *policy == e.policy)
            .map(|&(_, _, held)| held);
        self.swaps.push((e.pool, e.policy, held));
        match before {
            Some(was) if held > was + SWAP_SLACK_BYTES => Err(alloc::format!(
                "pool {}: back to policy {}, the pools' changes hold {held} heap bytes against \
                 {was} the last time: the instances this cycle replaced were not freed",
                e.pool,
                e.policy
            )),
            _ => Ok(()),
        }
    }

    /// The `event` records (as lines): every event applied, then those the interval ended
    /// before (never applied).
    pub fn records(&self) -> Vec<String> {
        let never = self.events[self.next..].iter().map(|e| results::Event {
            at_ns: e.at_ms.saturating_mul(1_000_000),
            applied_ns: None,
            target: e.target.to_string(),
            what: e.what.to_string(),
            ok: false,
            error: Some("the measured interval ended before it was due".to_string()),
        });
        self.applied
            .iter()
            .cloned()
            .chain(never)
            .map(|e| report::line(&Record::Event(e)))
            .collect()
    }

    /// The events that failed, in words, for the verdict.
    pub fn failures(&self) -> Vec<String> {
        self.applied
            .iter()
            .filter(|e| !e.ok)
            .map(|e| {
                alloc::format!(
                    "event `{}` on `{}` at {} ms failed: {}",
                    e.what,
                    e.target,
                    e.at_ns / 1_000_000,
                    e.error.as_deref().unwrap_or("")
                )
            })
            .chain(
                self.events[self.next..].iter().map(|e| {
                    alloc::format!("event `{}` on `{}` was never applied", e.what, e.target)
                }),
            )
            .collect()
    }
}

/// One event through the control hypercalls: each of its domains in turn, or the global
/// knobs. The hypervisor validates each call before it changes anything; an event over a
/// group stops at the first domain refused, and says which. Returns when the change took
/// effect where the hypervisor says (a policy swap: Domain0 in the swapped pool runs again
/// only later), else `None`.
fn apply(
    e: &PlannedEvent<'_>,
    id: &dyn Fn(usize) -> DomainId,
    destroyed: &mut Vec<(usize, DomainInfo, DomainInfo)>,
    paused: &mut Paused,
) -> Result<Option<u64>, String> {
    let domains = e.first as usize..(e.first + e.count) as usize;
    let each = |f: &dyn Fn(DomainId) -> Result<(), Errno>| -> Result<(), String> {
        for d in domains.clone() {
            f(id(d)).map_err(|err| alloc::format!("domain {}: {err:?}", id(d)))?;
        }
        Ok(())
    };
    let done: Result<(), String> = match e.op {
        EventOp::Set(params) => each(&|d| control::set_sched(d, params)),
        EventOp::SetGlobal(params) => {
            for (name, value) in params.iter() {
                control::set_pool_param(e.pool, name, value)
                    .map_err(|err| alloc::format!("{name} = {value}: {err:?}"))?;
            }
            Ok(())
        }
        EventOp::MoveTo => each(&|d| control::move_to_pool(d, e.pool)),
        EventOp::SetPolicy => {
            return control::set_pool_policy(e.pool, e.policy)
                .map(Some)
                .map_err(|err| alloc::format!("pool {}: policy {}: {err:?}", e.pool, e.policy));
        }
        EventOp::Pause => {
            for d in domains {
                let d = id(d);
                control::pause(d).map_err(|err| alloc::format!("domain {d}: {err:?}"))?;
                let info = control::info(d).map_err(|err| alloc::format!("domain {d}: {err:?}"))?;
                paused.retain(|&(p, _, _)| p != d);
                paused.push((d, info.switches, info.work));
            }
            Ok(())
        }
        EventOp::Unpause => {
            for d in domains {
                let d = id(d);
                if let Some(at) = paused.iter().position(|&(p, _, _)| p == d) {
                    let (_, switches, work) = paused.swap_remove(at);
                    let now =
                        control::info(d).map_err(|err| alloc::format!("domain {d}: {err:?}"))?;
                    if (now.switches, now.work) != (switches, work) {
                        let _ = control::unpause(d);
                        return Err(alloc::format!(
                            "domain {d}: switched in {} times and {} units of work done while \
                             paused (after its Pause returned)",
                            now.switches.wrapping_sub(switches),
                            now.work.wrapping_sub(work)
                        ));
                    }
                }
                control::unpause(d).map_err(|err| alloc::format!("domain {d}: {err:?}"))?;
            }
            Ok(())
        }
        EventOp::Start => each(&|d| control::unpause(d)),
        EventOp::Destroy => {
            // Paused first, so that its figures are final; read from the snapshot taken at
            // the start of the interval and as they are now; then destroyed.
            for d in domains {
                let figures = control::pause(id(d))
                    .and_then(|()| control::snapshot(id(d), 0))
                    .and_then(|before| control::info(id(d)).map(|after| (before, after)));
                let (before, after) =
                    figures.map_err(|err| alloc::format!("domain {}: {err:?}", id(d)))?;
                control::destroy(id(d))
                    .map_err(|err| alloc::format!("domain {}: destroy: {err:?}", id(d)))?;
                destroyed.push((d, before, after));
            }
            Ok(())
        }
    };
    done.map(|()| None)
}
