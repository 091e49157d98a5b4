//! The experiment spec of DESIGN.md ("Experiment spec"): parsing, overrides, validation.
//!
//! One TOML file drives the hypervisor (through `scripts/run`) and `schedsim`, so both read
//! it through this module. Parsing rejects unknown fields and wrong types; [`Spec::validate`]
//! checks values against the policy registry and the workload table. Every error names the
//! file, the field path (`domain[1].weight`) and what is allowed; callers print it and exit
//! with status 2.
//!
//! Policy parameters: `[sched]` holds `policy` and that policy's global knobs; a
//! `[[domain]]` group has `weight` and `cap` (DESIGN.md) and a `[domain.sched]` table for any
//! other per-domain parameter (`warp_us = 2000`). A knob or parameter that belongs to
//! *another* registered policy is accepted and ignored, so one spec can be swept across
//! policies with `--sched`; a name no policy knows is an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::registry;
use crate::{ParamSpec, PolicyInfo};

/// Largest number of domains in one experiment (DESIGN.md's goal).
pub const MAX_DOMAINS: u64 = 1024;
/// Largest number of CPUs.
pub const MAX_CPUS: u64 = 255;

/// A workload the project knows, and its integer arguments (`[domain.args]`) with defaults.
#[derive(Debug)]
pub struct WorkloadInfo {
    /// Name as written in `workload = "..."`.
    pub name: &'static str,
    /// Arguments and their defaults.
    pub args: &'static [(&'static str, u64)],
    /// What it does.
    pub doc: &'static str,
}

/// Every workload name a spec may use.
pub static WORKLOADS: &[WorkloadInfo] = &[
    WorkloadInfo { name: "cpu", args: &[], doc: "always runnable; work = µs of CPU" },
    WorkloadInfo {
        name: "latency",
        args: &[("period_us", 1000), ("run_us", 20)],
        doc: "wakes every period_us, runs run_us, sleeps; work = completed periods",
    },
    WorkloadInfo {
        name: "yield",
        args: &[("tick_us", 10_000), ("before_us", 100), ("sleep_us", 0)],
        doc: "runs, and before_us before each tick_us boundary yields (sleep_us = 0) or \
              sleeps sleep_us: the attack on tick-sampled accounting; work = µs of CPU",
    },
    WorkloadInfo {
        name: "io",
        args: &[("burst_us", 500), ("block_us", 2000)],
        doc: "runs burst_us, then blocks for a random time of mean block_us; work = bursts",
    },
    WorkloadInfo {
        name: "ping",
        args: &[("role", 0), ("pairs", 1)],
        doc: "event-channel ping-pong: a group of pingers (role 0) then one of `pairs` pongers \
              (role 1); work = round trips (the simulator runs it as cpu)",
    },
    WorkloadInfo {
        name: "virq",
        args: &[("period_us", 1000)],
        doc: "takes a timer event every period_us through the timer VIRQ and poll; \
              work = events (the simulator runs it as cpu)",
    },
    WorkloadInfo {
        name: "upcall",
        args: &[
            ("pairs", 1),
            ("spins", 20_000),
            ("vcpu", 0),
            ("mask_every", 50),
            ("mask_rounds", 20),
        ],
        doc: "the ponger of a ping pair, answering from its event upcall on vCPU `vcpu` while \
              every vCPU checks its registers survive upcalls, and vCPU 0 masks the port now \
              and then (no upcall meanwhile; unmask delivers); work = answers (the simulator \
              runs it as cpu)",
    },
    WorkloadInfo {
        name: "blk",
        args: &[("role", 1), ("frontends", 2), ("mode", 0), ("writer_exits", 0), ("peer", 1)],
        doc: "split block device: role 0 the RAM-disk backend of `frontends` frontends (the \
              domains after it), 1 a frontend writing and checking its region (mode 0 \
              sequential, 1 random; writer_exits 1: write once and exit), 2 a verifier of \
              frontend `peer`'s data; work = requests (the simulator runs it as cpu)",
    },
    WorkloadInfo {
        name: "net",
        args: &[("role", 1), ("frontends", 2), ("size", 1500)],
        doc: "split network device: role 0 the bridge backend of `frontends` frontends (the \
              domains after it), 1 a frontend streaming `size`-byte packets to the next one \
              and checking every packet; work = packets forwarded (backend), bytes received \
              (frontend) (the simulator runs it as cpu)",
    },
    WorkloadInfo {
        name: "mmu",
        args: &[("batch", 16)],
        doc: "maps and unmaps `batch` frames of its own with one mmu_update each way, in a \
              loop; work = updates applied (the simulator runs it as cpu)",
    },
    WorkloadInfo {
        name: "shootdown",
        args: &[],
        doc: "2 vCPUs: one remaps a page the other keeps reading, which must see the new \
              frame once the remap returned (TLB shootdown); work = remaps confirmed \
              (the simulator runs it as cpu)",
    },
    WorkloadInfo {
        name: "switch",
        args: &[],
        doc: "yields in a loop (the domain-switch benchmark); work = yields \
              (the simulator runs it as cpu)",
    },
    WorkloadInfo {
        name: "fpu",
        args: &[("spins", 200_000)],
        doc: "fills its vector registers, spins, checks none changed while preempted; \
              work = clean checks (the simulator runs it as cpu)",
    },
    WorkloadInfo {
        name: "hostile-priv",
        args: &[("insn", 0)],
        doc: "executes a privileged instruction: insn 0 cli, 1 hlt, 2 out, 3 mov to cr3",
    },
    WorkloadInfo { name: "hostile-hvread", args: &[], doc: "reads hypervisor memory" },
    WorkloadInfo {
        name: "hostile-peerread",
        args: &[("target", 0)],
        doc: "reads memory that is not its own: target 0 the direct map, 1 an unmapped address",
    },
    WorkloadInfo {
        name: "hostile-mm",
        args: &[],
        doc: "tries every forbidden page-table update and reservation; each must be refused \
              (exits 0 if all were)",
    },
    WorkloadInfo {
        name: "hostile-wildptr",
        args: &[("clean", 0)],
        doc: "passes wild pointers to hypercalls (each must fail), then faults (clean = 1: exits)",
    },
    WorkloadInfo {
        name: "hostile-grant",
        args: &[("role", 0)],
        doc: "a granter (role 0) and its grantee (role 1, the domain after it) misusing each \
              other's grants and event channels (each misuse must fail), then exiting; \
              work = 1 once every check passed",
    },
    WorkloadInfo {
        name: "hostile-ring",
        args: &[("case", 0)],
        doc: "the XTF-style suite's ring transitions: compatibility mode and MSR_CSTAR, RFLAGS \
              (NT, TF, AC, DF), the sysret hole, int N, ring-0 and UMIP instructions, segment \
              loads, upcalls to a bad stack; `case` picks one (workloads/src/bin/hostile-ring.rs)",
    },
    WorkloadInfo {
        name: "hostile-pt",
        args: &[("case", 0)],
        doc: "the XTF-style suite's page tables (every PTE bit at every level, self-maps, \
              tables made writable, batches, VA 0, a stale TLB), hypercall arguments (numbers, \
              wild pointers, huge lengths), fresh frames scrubbed; `case` picks one \
              (workloads/src/bin/hostile-pt.rs)",
    },
    WorkloadInfo {
        name: "hostile-sched",
        args: &[("case", 0), ("rounds", 100_000)],
        doc: "the XTF-style suite's scheduler abuse (timer, yield, block and VIRQ storms, poll \
              after a fired timer) and exhaustion (ports, grants, memory); `case` picks one, \
              `rounds` sizes the storms (workloads/src/bin/hostile-sched.rs)",
    },
    WorkloadInfo {
        name: "hostile-pair",
        args: &[("case", 0), ("role", 0), ("rounds", 100_000)],
        doc: "the XTF-style suite's two-domain cases: A (role 0) and B (role 1, the domain after \
              it): an event flood, a port and a grant reference reused under the peer, segment \
              selectors left for the next domain on a CPU; `case` picks one \
              (workloads/src/bin/hostile-pair.rs)",
    },
    WorkloadInfo {
        name: "hostile-regs",
        args: &[("role", 0)],
        doc: "the XTF-style suite's register leak: role 0 fills every register and selector and \
              spins and yields; role 1 checks what each of its vCPUs got at entry, restarting \
              vCPU 1 twenty times (workloads/src/bin/hostile-regs.rs)",
    },
];

/// The workload called `name`.
pub fn workload(name: &str) -> Option<&'static WorkloadInfo> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// A whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Names the results file (`results/<name>.jsonl`).
    pub name: String,
    /// The measured interval, after every domain has started and the warm-up.
    #[serde(default = "default_duration_ms")]
    pub duration_ms: u64,
    /// Time run before measuring.
    #[serde(default = "default_warmup_ms")]
    pub warmup_ms: u64,
    /// The machine.
    #[serde(default)]
    pub machine: Machine,
    /// The policy and its global knobs.
    #[serde(default)]
    pub sched: Sched,
    /// Groups of identical domains, in order (`[[domain]]`).
    #[serde(default, rename = "domain")]
    pub domains: Vec<Group>,
    /// The file it came from, for error messages (not part of the TOML).
    #[serde(skip)]
    pub file: String,
}

fn default_duration_ms() -> u64 {
    5000
}
fn default_warmup_ms() -> u64 {
    500
}

/// `[machine]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// CPUs the hypervisor runs on (QEMU `-smp`, or simulated).
    #[serde(default = "default_cpus")]
    pub cpus: u64,
    /// Guest-physical memory of the machine.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
}

fn default_cpus() -> u64 {
    2
}
fn default_memory_mib() -> u64 {
    1024
}

impl Default for Machine {
    fn default() -> Self {
        Machine { cpus: default_cpus(), memory_mib: default_memory_mib() }
    }
}

/// `[sched]`: `policy` plus that policy's global knobs (`tslice_ms = 30`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sched {
    /// A registered policy name.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Global knobs by `xl` name.
    #[serde(flatten)]
    pub knobs: BTreeMap<String, u64>,
}

fn default_policy() -> String {
    "credit".into()
}

impl Default for Sched {
    fn default() -> Self {
        Sched { policy: default_policy(), knobs: BTreeMap::new() }
    }
}

/// A value given once for the whole group, or once per domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerDomain {
    /// The same for every domain of the group.
    One(u64),
    /// One value per domain; the length must equal `count`.
    Each(Vec<u64>),
}

impl PerDomain {
    /// The value for the `i`-th domain of the group.
    pub fn get(&self, i: usize) -> u64 {
        match self {
            PerDomain::One(v) => *v,
            PerDomain::Each(vs) => vs.get(i).or(vs.last()).copied().unwrap_or(0),
        }
    }

    fn values(&self) -> Vec<u64> {
        match self {
            PerDomain::One(v) => vec![*v],
            PerDomain::Each(vs) => vs.clone(),
        }
    }
}

/// What a correct hypervisor does to a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Runs to the end.
    Ok,
    /// Is killed (hostile workloads).
    Killed,
}

/// `[[domain]]`: a group of identical domains named `<name>0`, `<name>1`, ...
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Prefix of the domains' names.
    pub name: String,
    /// How many domains.
    #[serde(default = "one")]
    pub count: u64,
    /// A name from [`WORKLOADS`].
    pub workload: String,
    /// vCPUs per domain.
    #[serde(default = "one")]
    pub vcpus: u64,
    /// Scheduling weight (policy default if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<PerDomain>,
    /// Cap in % of one CPU, 0 = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<PerDomain>,
    /// Memory of each domain.
    #[serde(default = "default_memory_kib")]
    pub memory_kib: u64,
    /// What should happen to it.
    #[serde(default = "default_expect")]
    pub expect: Expect,
    /// Other per-domain policy parameters (`warp_us`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sched: BTreeMap<String, PerDomain>,
    /// Workload arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, u64>,
}

fn one() -> u64 {
    1
}
fn default_memory_kib() -> u64 {
    1024
}
fn default_expect() -> Expect {
    Expect::Ok
}

/// A spec error: file, field path, and what is wrong and allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// The spec file (or `<command line>`).
    pub file: String,
    /// Field path such as `domain[1].weight`; empty for syntax errors.
    pub path: String,
    /// What is wrong, and what is allowed.
    pub msg: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.msg)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.msg)
        }
    }
}

impl std::error::Error for SpecError {}

/// Command-line overrides (`scripts/run` and `schedsim` flags), applied before validation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// `--sched P`: the policy (its knobs in the spec stay; other policies' are ignored).
    pub sched: Option<String>,
    /// `--cpus N`.
    pub cpus: Option<u64>,
    /// `--domains N`: the count of the *first* group.
    pub domains: Option<u64>,
    /// `--workload W`: the workload of the *first* group (its args that W does not take
    /// are dropped).
    pub workload: Option<String>,
    /// `--seconds S`: `duration_ms = S × 1000`.
    pub seconds: Option<f64>,
}

/// One domain of the experiment, with its group's settings resolved for it.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainPlan {
    /// 0-based, in spec order; also the domain's [`crate::DomainId`] in schedsim.
    pub id: u32,
    /// `<group name><index in group>`.
    pub name: String,
    /// The group's name.
    pub group: String,
    /// Index of the group in the spec.
    pub group_index: usize,
    /// Workload name.
    pub workload: String,
    /// vCPUs.
    pub vcpus: u32,
    /// The weight to report (the spec's, or 256).
    pub weight: u64,
    /// The cap to report (0 = none).
    pub cap: u64,
    /// Memory.
    pub memory_kib: u64,
    /// Expected fate.
    pub expect: Expect,
    /// Workload arguments with defaults filled in.
    pub args: BTreeMap<String, u64>,
    /// Per-domain parameters for the chosen policy (only those it has).
    pub params: Vec<(String, u64)>,
}

impl Spec {
    /// Reads and parses a spec file, then validates it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Spec, SpecError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: file.clone(),
            path: String::new(),
            msg: format!("cannot read: {e}"),
        })?;
        Spec::from_str(&text, &file)
    }

    /// Parses spec text (named `file_name` in errors), then validates it.
    pub fn from_str(text: &str, file_name: &str) -> Result<Spec, SpecError> {
        let spec = Spec::parse(text, file_name)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses without validating values (for callers that apply overrides first).
    pub fn parse(text: &str, file_name: &str) -> Result<Spec, SpecError> {
        let de = toml::Deserializer::new(text);
        let mut spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message().to_string();
            let at = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            SpecError {
                file: file_name.into(),
                path: if path == "." { String::new() } else { path },
                msg: format!("{msg}{at}"),
            }
        })?;
        spec.file = file_name.into();
        Ok(spec)
    }

    /// The built-in experiment: 4 cpu-bound domains on 2 CPUs under credit, for 2 s.
    pub fn default_spec() -> Spec {
        Spec {
            name: "default".into(),
            duration_ms: 2000,
            warmup_ms: 200,
            machine: Machine::default(),
            sched: Sched::default(),
            domains: vec![Group {
                name: "w".into(),
                count: 4,
                workload: "cpu".into(),
                vcpus: 1,
                weight: None,
                cap: None,
                memory_kib: default_memory_kib(),
                expect: Expect::Ok,
                sched: BTreeMap::new(),
                args: BTreeMap::new(),
            }],
            file: "<default spec>".into(),
        }
    }

    /// The spec as TOML (e.g. to hand the effective spec, overrides applied, to Domain0).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a spec always serialises")
    }

    /// Applies command-line overrides. Call [`Spec::validate`] afterwards.
    pub fn apply_overrides(&mut self, o: &Overrides) {
        if let Some(p) = &o.sched {
            self.sched.policy = p.clone();
        }
        if let Some(n) = o.cpus {
            self.machine.cpus = n;
        }
        if let Some(n) = o.domains
            && let Some(g) = self.domains.first_mut()
        {
            g.count = n;
        }
        if let Some(w) = &o.workload
            && let Some(g) = self.domains.first_mut()
        {
            if g.workload != *w {
                let keep = workload(w).map(|info| info.args).unwrap_or(&[]);
                g.args.retain(|k, _| keep.iter().any(|(a, _)| a == k));
            }
            g.workload = w.clone();
        }
        if let Some(s) = o.seconds {
            self.duration_ms = (s * 1000.0).round().max(0.0) as u64;
        }
    }

    fn err(&self, path: impl Into<String>, msg: impl Into<String>) -> SpecError {
        SpecError { file: self.file.clone(), path: path.into(), msg: msg.into() }
    }

    /// The chosen policy's description.
    pub fn policy(&self) -> Result<&'static PolicyInfo, SpecError> {
        registry::info(&self.sched.policy).map_err(|e| self.err("sched.policy", e.to_string()))
    }

    /// Checks every value; the error names the field and what is allowed.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name_ok = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !name_ok(&self.name) {
            return Err(self.err("name", "must be non-empty, of letters, digits, '-', '_', '.'"));
        }
        range(self, "duration_ms", self.duration_ms, 1, 3_600_000)?;
        range(self, "warmup_ms", self.warmup_ms, 0, 600_000)?;
        range(self, "machine.cpus", self.machine.cpus, 1, MAX_CPUS)?;
        range(self, "machine.memory_mib", self.machine.memory_mib, 16, 1 << 20)?;
        let policy = self.policy()?;
        for (k, &v) in &self.sched.knobs {
            check_param(self, &format!("sched.{k}"), k, v, policy, Scope::Global)?;
        }
        if self.domains.is_empty() {
            return Err(self.err("domain", "at least one [[domain]] group is required"));
        }
        let total: u64 = self.domains.iter().map(|g| g.count).sum();
        if total > MAX_DOMAINS {
            return Err(
                self.err("domain", format!("{total} domains in all; allowed: 1..={MAX_DOMAINS}"))
            );
        }
        for (i, g) in self.domains.iter().enumerate() {
            let at = |f: &str| format!("domain[{i}].{f}");
            if !name_ok(&g.name) {
                return Err(
                    self.err(at("name"), "must be non-empty, of letters, digits, '-', '_', '.'")
                );
            }
            if self.domains[..i].iter().any(|h| h.name == g.name) {
                return Err(self
                    .err(at("name"), format!("`{}` names two groups; names must differ", g.name)));
            }
            range(self, &at("count"), g.count, 1, MAX_DOMAINS)?;
            let Some(wl) = workload(&g.workload) else {
                let names: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
                return Err(self.err(
                    at("workload"),
                    format!("unknown workload `{}`; allowed: {}", g.workload, names.join(", ")),
                ));
            };
            range(self, &at("vcpus"), g.vcpus, 1, 64)?;
            range(self, &at("memory_kib"), g.memory_kib, 64, 1 << 30)?;
            let per_domain = |field: &str, name: &str, v: &PerDomain| -> Result<(), SpecError> {
                if let PerDomain::Each(vs) = v
                    && vs.len() as u64 != g.count
                {
                    return Err(self.err(
                        at(field),
                        format!(
                            "has {} values but count is {}; allowed: one value, or one per domain",
                            vs.len(),
                            g.count
                        ),
                    ));
                }
                for x in v.values() {
                    check_param(self, &at(field), name, x, policy, Scope::Domain)?;
                }
                Ok(())
            };
            if let Some(w) = &g.weight {
                per_domain("weight", "weight", w)?;
            }
            if let Some(c) = &g.cap {
                per_domain("cap", "cap", c)?;
                for x in c.values() {
                    range(self, &at("cap"), x, 0, 100 * g.vcpus)?;
                }
            }
            for (k, v) in &g.sched {
                if k == "weight" || k == "cap" {
                    return Err(
                        self.err(at(&format!("sched.{k}")), format!("write it as domain[{i}].{k}"))
                    );
                }
                per_domain(&format!("sched.{k}"), k, v)?;
            }
            for k in g.args.keys() {
                if !wl.args.iter().any(|(a, _)| a == k) {
                    let allowed: Vec<_> =
                        wl.args.iter().map(|(a, d)| format!("{a} (default {d})")).collect();
                    let allowed =
                        if allowed.is_empty() { "none".into() } else { allowed.join(", ") };
                    return Err(self.err(
                        at(&format!("args.{k}")),
                        format!(
                            "workload `{}` takes no argument `{k}`; allowed: {allowed}",
                            wl.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The chosen policy's global knobs given in the spec (others' are dropped).
    pub fn policy_globals(&self) -> Vec<(String, u64)> {
        let Ok(policy) = self.policy() else { return Vec::new() };
        self.sched
            .knobs
            .iter()
            .filter(|(k, _)| policy.global_param(k).is_some())
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Every domain, in order, with its group's values resolved.
    pub fn plan(&self) -> Vec<DomainPlan> {
        let policy = self.policy().ok();
        let mut out = Vec::new();
        for (gi, g) in self.domains.iter().enumerate() {
            let wl = workload(&g.workload);
            for i in 0..g.count as usize {
                let mut params = Vec::new();
                let mut add = |name: &str, v: u64| {
                    if policy.is_some_and(|p| p.domain_param(name).is_some()) {
                        params.push((name.to_string(), v));
                    }
                };
                if let Some(w) = &g.weight {
                    add("weight", w.get(i));
                }
                if let Some(c) = &g.cap {
                    add("cap", c.get(i));
                }
                for (k, v) in &g.sched {
                    add(k, v.get(i));
                }
                let mut args: BTreeMap<String, u64> = wl
                    .map(|w| w.args.iter().map(|(a, d)| (a.to_string(), *d)).collect())
                    .unwrap_or_default();
                args.extend(g.args.iter().map(|(k, v)| (k.clone(), *v)));
                out.push(DomainPlan {
                    id: out.len() as u32,
                    name: format!("{}{}", g.name, i),
                    group: g.name.clone(),
                    group_index: gi,
                    workload: g.workload.clone(),
                    vcpus: g.vcpus as u32,
                    weight: g.weight.as_ref().map_or(256, |w| w.get(i)),
                    cap: g.cap.as_ref().map_or(0, |c| c.get(i)),
                    memory_kib: g.memory_kib,
                    expect: g.expect,
                    args,
                    params,
                });
            }
        }
        out
    }
}

fn range(spec: &Spec, path: &str, v: u64, min: u64, max: u64) -> Result<(), SpecError> {
    if v < min || v > max {
        return Err(spec.err(path, format!("{v} is out of range; allowed: {min}..={max}")));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Global,
    Domain,
}

fn params_of(info: &PolicyInfo, scope: Scope) -> &'static [ParamSpec] {
    match scope {
        Scope::Global => info.global_params,
        Scope::Domain => info.domain_params,
    }
}

/// A parameter is checked against the chosen policy if it has it, else against any other
/// registered policy that has it (and then ignored); a name nobody knows is an error.
fn check_param(
    spec: &Spec,
    path: &str,
    name: &str,
    v: u64,
    policy: &PolicyInfo,
    scope: Scope,
) -> Result<(), SpecError> {
    let found = params_of(policy, scope).iter().find(|p| p.name == name).or_else(|| {
        registry::POLICIES.iter().flat_map(|i| params_of(i, scope)).find(|p| p.name == name)
    });
    match found {
        Some(p) => range(spec, path, v, p.min, p.max),
        None => {
            let list = |ps: &[ParamSpec]| {
                if ps.is_empty() {
                    "none".to_string()
                } else {
                    ps.iter()
                        .map(|p| {
                            format!("{} ({}..={}, default {})", p.name, p.min, p.max, p.default)
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            let others: Vec<_> = registry::POLICIES
                .iter()
                .filter(|i| i.name != policy.name)
                .map(|i| format!("{}: {}", i.name, list(params_of(i, scope))))
                .collect();
            Err(spec.err(
                path,
                format!(
                    "unknown parameter `{name}`; allowed for {}: {}; other policies: {}",
                    policy.name,
                    list(params_of(policy, scope)),
                    others.join("; ")
                ),
            ))
        }
    }
}
