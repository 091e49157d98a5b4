//! Pools and timelines of an experiment spec (docs/DESIGN.md "Pools, timelines and time
//! series"): `[[pool]]`, a group's `pool` and `start`, and `[[event]]`. Both engines take
//! them from here, resolved: [`Spec::pool_plans`] (each pool's CPUs, policy and knobs) and
//! [`Spec::timeline`] (every event in the order it is applied, its targets as domain ids or
//! a pool index), so the hypervisor's Domain0 and `schedsim` apply the same file the same
//! way.
//!
//! The rules, checked by [`Spec::validate`] before anything runs (exit 2, naming the field):
//! - without `[[pool]]`, one pool `default` holds every CPU and runs `[sched]`'s policy;
//! - a pool's `cpus` is a count (the lowest CPUs no earlier pool took) or a list; pools do
//!   not overlap, stay within `[machine] cpus` and each has at least one CPU; CPUs in no
//!   pool idle (Xen's free CPUs);
//! - a pool's knobs are `[sched]`'s that its policy takes, overridden by its `[pool.sched]`,
//!   where every knob must be one its policy takes;
//! - Domain0 runs in the first pool;
//! - an event happens at `at_ms` in `0..duration_ms` into the measured interval, targets a
//!   group (every domain of it), a domain or a pool, and does exactly one of `set`,
//!   `action`, `move_to`, `policy`; events at the same time apply in file order;
//! - `set` on domains takes per-domain parameters their pool's policy (at that point of the
//!   timeline) has; on a pool, global knobs of its policy;
//! - a domain carries its parameters by name: moved to another pool, or when its pool's
//!   policy is replaced, the new policy gets those it takes (the others are kept for a
//!   later policy that does). Xen's `sched_move_domain` gives the new scheduler its
//!   defaults instead; here a weight set in the spec stays the weight;
//! - a pool whose policy is replaced keeps the knobs the new policy takes;
//! - `start` starts a `start = "event"` domain (created, paused until then); `pause` and
//!   `unpause` need a started domain; nothing targets a destroyed domain; every
//!   `start = "event"` domain must be started by some event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry;
use crate::spec::{
    Expect, Group, Runs, Scope, Spec, SpecError, check_param, name_ok, params_of, runs,
};
use crate::{PolicyInfo, Topology};

/// `[[pool]]`: a set of CPUs with its own policy instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Its name (targets of events, `domain.pool`).
    pub name: String,
    /// A count (taken in order after the pools before it) or a list of CPU numbers.
    pub cpus: PoolCpus,
    /// Its policy; `[sched]`'s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Its global knobs (`[pool.sched]`).
    #[serde(
        default,
        deserialize_with = "crate::spec::knobs_by_name",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub sched: BTreeMap<String, u64>,
}

/// A pool's `cpus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PoolCpus {
    /// How many.
    Count(u64),
    /// Which.
    List(Vec<u64>),
}

/// A group's `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Created (paused) with the others, started by an `action = "start"` event.
    Event,
}

/// An event's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Take the domain off the CPUs until `unpause`.
    Pause,
    /// Undo `pause`.
    Unpause,
    /// Start a `start = "event"` domain.
    Start,
    /// Destroy the domain; its figures stop there.
    Destroy,
}

fn opt_knobs<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, u64>>, D::Error> {
    crate::spec::knobs_by_name(d).map(Some)
}

/// `[[event]]`: one step of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When, from the start of the measured interval.
    pub at_ms: u64,
    /// A group name, a domain name or a pool name.
    pub target: String,
    /// Per-domain parameters, or a pool's global knobs.
    #[serde(default, deserialize_with = "opt_knobs", skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, u64>>,
    /// pause | unpause | start | destroy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Move the target's domains to this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to: Option<String>,
    /// Replace the target pool's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// One pool, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolPlan {
    /// Its name (`default` without `[[pool]]`).
    pub name: String,
    /// Its CPUs, ascending.
    pub cpus: Vec<usize>,
    /// Its policy at boot.
    pub policy: String,
    /// Its global knobs at boot (only those its policy takes).
    pub knobs: Vec<(String, u64)>,
}

/// What an event applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// These domains (plan ids, ascending).
    Domains(Vec<u32>),
    /// The pool of this index in [`Spec::pool_plans`].
    Pool(usize),
}

/// What an event does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set per-domain parameters (domain targets) or global knobs (a pool target).
    Set(Vec<(String, u64)>),
    /// `action = "pause"`.
    Pause,
    /// `action = "unpause"`.
    Unpause,
    /// `action = "start"`.
    Start,
    /// `action = "destroy"`.
    Destroy,
    /// `move_to`: the pool's index.
    MoveTo(usize),
    /// `policy`: the new policy's name.
    Policy(String),
}

/// One event, resolved, in the order the timeline applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Its index among the spec's `[[event]]`s.
    pub index: usize,
    /// When, in ns from the start of the measured interval.
    pub at_ns: u64,
    /// The target as written.
    pub target: String,
    /// The target resolved.
    pub targets: Targets,
    /// What it does.
    pub op: Op,
    /// What it does, in words, for the `event` record (`set weight=1024`, `move_to lat`).
    pub what: String,
}

/// The parameters in `all` that `policy` takes (a domain carries its parameters by name).
pub fn params_for(policy: &PolicyInfo, all: &[(String, u64)]) -> Vec<(String, u64)> {
    all.iter().filter(|(k, _)| policy.domain_param(k).is_some()).cloned().collect()
}

/// The knobs in `all` that `policy` takes.
pub fn knobs_for(policy: &PolicyInfo, all: &[(String, u64)]) -> Vec<(String, u64)> {
    all.iter().filter(|(k, _)| policy.global_param(k).is_some()).cloned().collect()
}

/// An event's `set`: `(path, name, value)` for `policy`'s parameters of `scope`, refused
/// with `missing()` if the policy has no such parameter, checked against its range, then
/// merged into `into`.
fn set_param(
    spec: &Spec,
    (path, name, value): (String, &str, u64),
    policy: &PolicyInfo,
    scope: Scope,
    into: &mut Vec<(String, u64)>,
    missing: impl FnOnce() -> String,
) -> Result<(), SpecError> {
    if !params_of(policy, scope).iter().any(|p| p.name == name) {
        return Err(spec.err(&path, missing()));
    }
    check_param(spec, &path, name, value, policy, scope)?;
    merge_param(into, name, value);
    Ok(())
}

/// Sets `name` to `value` in a list of parameters by name (added if absent).
pub fn merge_param(all: &mut Vec<(String, u64)>, name: &str, value: u64) {
    match all.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => all.push((name.to_string(), value)),
    }
}

/// Tries a domain's parameters on a one-domain instance of `policy` (what it checks across
/// parameters, rtds's `budget_us` at most `period_us`).
pub(crate) fn probe_domain(policy: &str, params: &[(String, u64)]) -> Result<(), String> {
    if params.is_empty() {
        return Ok(());
    }
    let topo = Topology::flat(1, 1, 1);
    let probe = registry::build(policy, &topo, &[]).map_err(|e| e.to_string())?;
    let params: Vec<(&str, u64)> = params.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    probe.add_domain(crate::DomainId(0), &params).map_err(|e| e.to_string())
}

/// The words of an event's `what`.
fn describe(op: &Op, pools: &[PoolPlan]) -> String {
    match op {
        Op::Set(kv) => {
            let kv: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("set {}", kv.join(","))
        }
        Op::Pause => "pause".into(),
        Op::Unpause => "unpause".into(),
        Op::Start => "start".into(),
        Op::Destroy => "destroy".into(),
        Op::MoveTo(p) => format!("move_to {}", pools[*p].name),
        Op::Policy(p) => format!("policy {p}"),
    }
}

/// Where a domain stands at a point of the timeline, as the validator follows it.
#[derive(Clone)]
struct DomState {
    pool: usize,
    started: bool,
    destroyed: Option<usize>,
    params: Vec<(String, u64)>,
}

impl Spec {
    /// Whether the spec names pools (`[[pool]]`): the results then carry `run.pools` and
    /// `domain.pool`.
    pub fn has_pools(&self) -> bool {
        !self.pools.is_empty()
    }

    /// Every pool, resolved (one `default` pool without `[[pool]]`). Call on a validated
    /// spec; an invalid one gets the single default pool.
    pub fn pool_plans(&self) -> Vec<PoolPlan> {
        self.resolve_pools().unwrap_or_else(|_| vec![self.default_pool()])
    }

    fn default_pool(&self) -> PoolPlan {
        PoolPlan {
            name: "default".into(),
            cpus: (0..self.machine.cpus as usize).collect(),
            policy: self.sched.policy.clone(),
            knobs: self.policy_globals(),
        }
    }

    /// The index of group `g`'s pool in [`Spec::pool_plans`] (0 when it names none, or one
    /// that does not exist).
    pub fn group_pool(&self, g: &Group) -> usize {
        g.pool.as_ref().and_then(|n| self.pools.iter().position(|p| &p.name == n)).unwrap_or(0)
    }

    /// The policy group `g`'s domains start under (`[sched]`'s when it is unknown).
    pub(crate) fn group_policy(&self, g: &Group) -> Result<&'static PolicyInfo, SpecError> {
        match self.pools.get(self.group_pool(g)) {
            Some(Pool { policy: Some(name), .. }) => registry::info(name).map_err(|e| {
                self.err(format!("pool[{}].policy", self.group_pool(g)), e.to_string())
            }),
            _ => self.policy(),
        }
    }

    /// Checks `[[pool]]` and resolves it.
    pub(crate) fn resolve_pools(&self) -> Result<Vec<PoolPlan>, SpecError> {
        if self.pools.is_empty() {
            return Ok(vec![self.default_pool()]);
        }
        let ncpus = self.machine.cpus;
        let mut taken = vec![false; ncpus as usize];
        let mut out: Vec<PoolPlan> = Vec::new();
        let domain_names: Vec<String> = self
            .domains
            .iter()
            .flat_map(|g| {
                (0..g.count.min(crate::spec::MAX_DOMAINS)).map(move |i| format!("{}{i}", g.name))
            })
            .collect();
        for (i, p) in self.pools.iter().enumerate() {
            let at = |f: &str| format!("pool[{i}].{f}");
            if !name_ok(&p.name) {
                return Err(
                    self.err(at("name"), "must be non-empty, of letters, digits, '-', '_', '.'")
                );
            }
            if out.iter().any(|q| q.name == p.name) {
                return Err(self
                    .err(at("name"), format!("`{}` names two pools; names must differ", p.name)));
            }
            if self.domains.iter().any(|g| g.name == p.name) || domain_names.contains(&p.name) {
                return Err(self.err(
                    at("name"),
                    format!(
                        "`{}` is also a group's or a domain's name, so an event's target would be \
                         ambiguous; allowed: a name no group or domain has",
                        p.name
                    ),
                ));
            }
            let policy_name = p.policy.clone().unwrap_or_else(|| self.sched.policy.clone());
            let policy =
                registry::info(&policy_name).map_err(|e| self.err(at("policy"), e.to_string()))?;
            crate::limits::domain_params_fit(policy)
                .map_err(|e| self.err(at("policy"), e.to_string()))?;
            let cpus: Vec<usize> = match &p.cpus {
                PoolCpus::Count(n) => {
                    let free: Vec<usize> = (0..ncpus as usize).filter(|&c| !taken[c]).collect();
                    if *n == 0 || *n as usize > free.len() {
                        return Err(self.err(
                            at("cpus"),
                            format!(
                                "{n} CPUs asked, {} of the machine's {ncpus} (machine.cpus) are left \
                                 after the pools before it; allowed: 1..={}",
                                free.len(),
                                free.len()
                            ),
                        ));
                    }
                    free[..*n as usize].to_vec()
                }
                PoolCpus::List(list) => {
                    if list.is_empty() {
                        return Err(self.err(
                            at("cpus"),
                            "is empty; allowed: a count of at least 1, or a non-empty list of CPU numbers",
                        ));
                    }
                    let mut cpus = Vec::new();
                    for &c in list {
                        if c >= ncpus {
                            return Err(self.err(
                                at("cpus"),
                                format!("CPU {c} does not exist; allowed: 0..={} (machine.cpus = {ncpus})", ncpus - 1),
                            ));
                        }
                        if taken[c as usize] || cpus.contains(&(c as usize)) {
                            let owner = out.iter().find(|q| q.cpus.contains(&(c as usize)));
                            return Err(self.err(
                                at("cpus"),
                                match owner {
                                    Some(q) => format!("CPU {c} is already in pool `{}`; allowed: CPUs in no other pool", q.name),
                                    None => format!("CPU {c} is listed twice"),
                                },
                            ));
                        }
                        cpus.push(c as usize);
                    }
                    cpus.sort_unstable();
                    cpus
                }
            };
            for &c in &cpus {
                taken[c] = true;
            }
            for (k, &v) in &p.sched {
                if policy.global_param(k).is_none() {
                    return Err(self.err(
                        at(&format!("sched.{k}")),
                        format!(
                            "pool `{}` runs `{}`, which has no global parameter `{k}`; allowed: {}",
                            p.name,
                            policy.name,
                            list_params(policy.global_params)
                        ),
                    ));
                }
                check_param(self, &at(&format!("sched.{k}")), k, v, policy, Scope::Global)?;
            }
            let mut knobs: Vec<(String, u64)> =
                self.sched.knobs.iter().map(|(k, v)| (k.clone(), *v)).collect();
            knobs = knobs_for(policy, &knobs);
            for (k, v) in &p.sched {
                merge_param(&mut knobs, k, *v);
            }
            out.push(PoolPlan { name: p.name.clone(), cpus, policy: policy_name, knobs });
        }
        Ok(out)
    }

    /// Checks every group's `pool` and `start`.
    pub(crate) fn validate_group_pools(&self, pools: &[PoolPlan]) -> Result<(), SpecError> {
        for (i, g) in self.domains.iter().enumerate() {
            if let Some(name) = &g.pool
                && !pools.iter().any(|p| &p.name == name)
            {
                let names: Vec<_> = pools.iter().map(|p| p.name.as_str()).collect();
                return Err(self.err(
                    format!("domain[{i}].pool"),
                    format!("unknown pool `{name}`; allowed: {}", names.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The timeline, resolved, in the order it is applied. Call on a validated spec (an
    /// invalid one gets an empty timeline).
    pub fn timeline(&self) -> Vec<Step> {
        self.resolve_pools().and_then(|pools| self.resolve_timeline(&pools)).unwrap_or_default()
    }

    /// Checks `[[event]]` by following the timeline (each domain's pool and state, each
    /// pool's policy), and resolves it.
    pub(crate) fn resolve_timeline(&self, pools: &[PoolPlan]) -> Result<Vec<Step>, SpecError> {
        let plan = self.plan();
        let mut doms: Vec<DomState> = plan
            .iter()
            .map(|p| DomState {
                pool: p.pool,
                started: !p.start_on_event,
                destroyed: None,
                params: p.all_params.clone(),
            })
            .collect();
        let mut policies: Vec<String> = pools.iter().map(|p| p.policy.clone()).collect();
        let mut knobs: Vec<Vec<(String, u64)>> = pools.iter().map(|p| p.knobs.clone()).collect();
        let mut order: Vec<usize> = (0..self.events.len()).collect();
        order.sort_by_key(|&i| self.events[i].at_ms);
        let mut steps = Vec::new();
        let mut swaps = 0;
        for i in order {
            let e = &self.events[i];
            let at = |f: &str| format!("event[{i}].{f}");
            if e.at_ms >= self.duration_ms {
                return Err(self.err(
                    at("at_ms"),
                    format!(
                        "{} is outside the measured interval; allowed: 0..={} (duration_ms = {})",
                        e.at_ms,
                        self.duration_ms - 1,
                        self.duration_ms
                    ),
                ));
            }
            let given: Vec<&str> = [
                e.set.as_ref().map(|_| "set"),
                e.action.map(|_| "action"),
                e.move_to.as_ref().map(|_| "move_to"),
                e.policy.as_ref().map(|_| "policy"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if given.len() != 1 {
                return Err(self.err(
                    format!("event[{i}]"),
                    format!(
                        "gives {}; allowed: exactly one of set, action, move_to, policy",
                        if given.is_empty() { "none".to_string() } else { given.join(" and ") }
                    ),
                ));
            }
            let targets = if let Some(g) = self.domains.iter().position(|g| g.name == e.target) {
                Targets::Domains(plan.iter().filter(|p| p.group_index == g).map(|p| p.id).collect())
            } else if let Some(d) = plan.iter().find(|p| p.name == e.target) {
                Targets::Domains(vec![d.id])
            } else if let Some(p) = pools.iter().position(|p| p.name == e.target) {
                Targets::Pool(p)
            } else {
                let groups: Vec<_> = self.domains.iter().map(|g| g.name.as_str()).collect();
                let pool_names: Vec<_> = pools.iter().map(|p| p.name.as_str()).collect();
                return Err(self.err(
                    at("target"),
                    format!(
                        "unknown target `{}`; allowed: a group ({}), a domain (such as `{}0`) or a \
                         pool ({})",
                        e.target,
                        groups.join(", "),
                        groups.first().copied().unwrap_or("w"),
                        pool_names.join(", ")
                    ),
                ));
            };
            if let Targets::Domains(ids) = &targets {
                for &d in ids {
                    if let Some(j) = doms[d as usize].destroyed {
                        return Err(self.err(
                            at("target"),
                            format!(
                                "domain `{}` was destroyed by event[{j}] before this one; allowed: \
                                 domains not destroyed",
                                plan[d as usize].name
                            ),
                        ));
                    }
                }
            }
            let domain_target = |what: &str| {
                self.err(
                    at("target"),
                    format!("`{}` is a pool; `{what}` applies to a group or a domain", e.target),
                )
            };
            let op = if let Some(set) = &e.set {
                if set.is_empty() {
                    return Err(self.err(at("set"), "is empty; allowed: at least one parameter"));
                }
                let kv: Vec<(String, u64)> = set.iter().map(|(k, v)| (k.clone(), *v)).collect();
                match &targets {
                    Targets::Pool(p) => {
                        let policy = registry::info(&policies[*p])
                            .map_err(|e| self.err(at("target"), e.to_string()))?;
                        for (k, v) in &kv {
                            let set = (at(&format!("set.{k}")), k.as_str(), *v);
                            set_param(self, set, policy, Scope::Global, &mut knobs[*p], || {
                                format!(
                                    "pool `{}` runs `{}` then, which has no global parameter \
                                     `{k}`; allowed: {}",
                                    pools[*p].name,
                                    policy.name,
                                    list_params(policy.global_params)
                                )
                            })?;
                        }
                    }
                    Targets::Domains(ids) => {
                        for &d in ids {
                            let st = &mut doms[d as usize];
                            let policy = registry::info(&policies[st.pool])
                                .map_err(|e| self.err(at("target"), e.to_string()))?;
                            for (k, v) in &kv {
                                let set = (at(&format!("set.{k}")), k.as_str(), *v);
                                set_param(
                                    self,
                                    set,
                                    policy,
                                    Scope::Domain,
                                    &mut st.params,
                                    || {
                                        format!(
                                            "domain `{}` is in pool `{}`, which runs `{}` then, with \
                                         no per-domain parameter `{k}`; allowed: {}",
                                            plan[d as usize].name,
                                            pools[st.pool].name,
                                            policy.name,
                                            list_params(policy.domain_params)
                                        )
                                    },
                                )?;
                            }
                            probe_domain(policy.name, &params_for(policy, &st.params)).map_err(
                                |m| {
                                    self.err(
                                        at("set"),
                                        format!("domain `{}`: {m}", plan[d as usize].name),
                                    )
                                },
                            )?;
                        }
                    }
                }
                Op::Set(kv)
            } else if let Some(a) = e.action {
                let Targets::Domains(ids) = &targets else { return Err(domain_target("action")) };
                for &d in ids {
                    let name = &plan[d as usize].name;
                    let st = &mut doms[d as usize];
                    match a {
                        Action::Start if st.started => {
                            return Err(self.err(
                                at("action"),
                                format!(
                                    "domain `{name}` is already started (its group has no \
                                     `start = \"event\"`, or an earlier event started it); \
                                     allowed: start a `start = \"event\"` domain once"
                                ),
                            ));
                        }
                        Action::Pause | Action::Unpause if !st.started => {
                            return Err(self.err(
                                at("action"),
                                format!(
                                    "domain `{name}` is not started yet (`start = \"event\"`); \
                                     allowed: start it first"
                                ),
                            ));
                        }
                        Action::Start => st.started = true,
                        Action::Destroy => st.destroyed = Some(i),
                        _ => {}
                    }
                }
                match a {
                    Action::Pause => Op::Pause,
                    Action::Unpause => Op::Unpause,
                    Action::Start => Op::Start,
                    Action::Destroy => Op::Destroy,
                }
            } else if let Some(to) = &e.move_to {
                let Targets::Domains(ids) = &targets else { return Err(domain_target("move_to")) };
                let Some(p) = pools.iter().position(|p| &p.name == to) else {
                    let names: Vec<_> = pools.iter().map(|p| p.name.as_str()).collect();
                    return Err(self.err(
                        at("move_to"),
                        format!("unknown pool `{to}`; allowed: {}", names.join(", ")),
                    ));
                };
                for &d in ids {
                    let st = &mut doms[d as usize];
                    let policy = registry::info(&policies[p])
                        .map_err(|e| self.err(at("move_to"), e.to_string()))?;
                    probe_domain(policy.name, &params_for(policy, &st.params)).map_err(|m| {
                        self.err(
                            at("move_to"),
                            format!("domain `{}` in `{}`: {m}", plan[d as usize].name, policy.name),
                        )
                    })?;
                    st.pool = p;
                }
                Op::MoveTo(p)
            } else {
                let new = e.policy.clone().unwrap_or_default();
                let Targets::Pool(p) = targets else {
                    return Err(self.err(
                        at("target"),
                        format!("`{}` is not a pool; `policy` replaces a pool's policy", e.target),
                    ));
                };
                let policy =
                    registry::info(&new).map_err(|e| self.err(at("policy"), e.to_string()))?;
                crate::limits::domain_params_fit(policy)
                    .map_err(|e| self.err(at("policy"), e.to_string()))?;
                for (d, st) in doms.iter().enumerate() {
                    if st.pool == p && st.destroyed.is_none() {
                        probe_domain(policy.name, &params_for(policy, &st.params)).map_err(
                            |m| {
                                self.err(
                                    at("policy"),
                                    format!("domain `{}` under `{new}`: {m}", plan[d].name),
                                )
                            },
                        )?;
                    }
                }
                if p == 0 && !policy.preempts {
                    // Domain0 lives in the first pool: a policy that never preempts must
                    // leave it a CPU.
                    let hogs: u64 = plan
                        .iter()
                        .filter(|d| {
                            doms[d.id as usize].pool == 0 && doms[d.id as usize].destroyed.is_none()
                        })
                        .filter(|d| d.expect == Expect::Ok)
                        .map(|d| match runs(&d.workload, &d.args, u64::from(d.vcpus)) {
                            Runs::Hog { vcpus } => vcpus,
                            _ => 0,
                        })
                        .sum();
                    if hogs >= pools[0].cpus.len() as u64 {
                        return Err(self.err(
                            at("policy"),
                            format!(
                                "`{new}` never preempts, and {hogs} vCPUs that never block or \
                                 yield would hold all {} CPUs of pool `{}`, Domain0's: it could \
                                 never run again; allowed: a policy that preempts",
                                pools[0].cpus.len(),
                                pools[0].name
                            ),
                        ));
                    }
                }
                // Each swap builds a policy instance, which the hypervisor never frees (a
                // CPU may still be inside the old one): one boot holds so many.
                swaps += 1;
                let needed = pools.len() + swaps;
                if needed > crate::limits::MAX_POLICY_INSTANCES {
                    return Err(self.err(
                        at("policy"),
                        format!(
                            "this is policy swap {swaps}; with {} pool(s) the run needs {needed} \
                             policy instances, and one boot holds at most {} (a replaced one \
                             is never freed); allowed: at most {} policy events",
                            pools.len(),
                            crate::limits::MAX_POLICY_INSTANCES,
                            crate::limits::MAX_POLICY_INSTANCES - pools.len()
                        ),
                    ));
                }
                knobs[p] = knobs_for(policy, &knobs[p]);
                policies[p] = new.clone();
                Op::Policy(new)
            };
            steps.push(Step {
                index: i,
                at_ns: e.at_ms * 1_000_000,
                target: e.target.clone(),
                what: describe(&op, pools),
                targets,
                op,
            });
        }
        for (i, g) in self.domains.iter().enumerate() {
            if g.start == Some(Start::Event)
                && let Some(d) =
                    plan.iter().find(|p| p.group_index == i && !doms[p.id as usize].started)
            {
                return Err(self.err(
                    format!("domain[{i}].start"),
                    format!(
                        "domain `{}` waits for an event to start it, and none does; allowed: an \
                         [[event]] with target = \"{}\" (or `{}`) and action = \"start\", or no \
                         `start`",
                        d.name, g.name, d.name
                    ),
                ));
            }
        }
        Ok(steps)
    }
}

fn list_params(ps: &[crate::ParamSpec]) -> String {
    if ps.is_empty() {
        return "none".into();
    }
    ps.iter()
        .map(|p| format!("{} ({}..={}, default {})", p.name, p.min, p.max, p.default))
        .collect::<Vec<_>>()
        .join(", ")
}
