//! The experiment spec of docs/DESIGN.md ("Experiment spec"): parsing, overrides, validation.
//!
//! One TOML file drives the hypervisor (through `scripts/run`) and `schedsim`, so both read
//! it through this module. Parsing rejects unknown fields and wrong types; [`Spec::validate`]
//! checks values against the policy registry and the workload table. Every error names the
//! file, the field path (`domain[1].weight`) and what is allowed; callers print it and exit
//! with status 2.
//!
//! Policy parameters: `[sched]` holds `policy` and that policy's global knobs; a
//! `[[domain]]` group has `weight` and `cap` (docs/DESIGN.md) and a `[domain.sched]` table for any
//! other per-domain parameter (`warp_us = 2000`). A knob or parameter that belongs to
//! *another* registered policy is accepted and ignored, so one spec can be swept across
//! policies with `--sched`; a name no policy knows is an error.
//!
//! Validation also checks every limit the hypervisor and Domain0 enforce ([`crate::limits`]:
//! name lengths, vCPUs per domain and in all, domains in all, the memory a domain needs for
//! its workload's image, stacks, page tables and reservations, the machine's memory for all
//! of them and the hypervisor's heap), and refuses an experiment a policy cannot run (a
//! policy that never preempts, with vCPUs that never block or yield on every CPU), so that a
//! spec that passes here does not fail after boot for any of these reasons.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::limits;
use crate::registry;
use crate::timeline::{Event, Pool, Start, params_for};
use crate::{ParamSpec, PolicyInfo};

/// Largest number of domains in one experiment (docs/DESIGN.md's goal), Domain0 not counted.
pub const MAX_DOMAINS: u64 = limits::MAX_GUEST_DOMAINS as u64;
/// Largest number of CPUs.
pub const MAX_CPUS: u64 = 255;
/// Longest experiment name, in bytes: it names the results file, and travels in the plan and
/// in Domain0's `run` record (one control message of at most 4 KiB).
pub const MAX_NAME_BYTES: usize = 128;
/// Largest machine, in MiB: beyond about 85 GiB the hypervisor's frame table (24 bytes per
/// frame) would not fit its heap (at most 512 MiB), so 64 GiB, as `scripts/run --memory`.
pub const MAX_MEMORY_MIB: u64 = 64 << 10;

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
        args: &[("period_us", 1000), ("run_us", 20), ("stray_us", 0)],
        doc: "wakes every period_us, runs run_us, sleeps; work = completed periods; \
              stray_us > 0: after each run also arms its timer stray_us ahead and runs on \
              10 × stray_us past it before it blocks (a block the fired timer ends at once, \
              its timer VIRQ pending by then: the domain crashes if not)",
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
        args: &[("ws_kib", 0)],
        doc: "yields in a loop (the domain-switch benchmark), reading `ws_kib` KiB (0..=64) of \
              its own working set before each yield; work = yields \
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
        args: &[("shared_code", 1)],
        doc: "tries every forbidden page-table update and reservation; each must be refused \
              (exits 0 if all were)",
    },
    WorkloadInfo {
        name: "hostile-wildptr",
        args: &[("clean", 0)],
        doc: "passes wild pointers to hypercalls (each must fail), then faults (clean = 1: exits)",
    },
    WorkloadInfo {
        name: "fuzz",
        args: &[
            ("mode", 0),
            ("seed", 1),
            ("calls", 0),
            ("avoid", 0),
            ("exc", 255),
            ("delay_ms", 0),
            ("ops", 0),
            ("trace", 0),
        ],
        doc: "mode 0: a seeded hypercall fuzzer (random calls, arguments, registers and RFLAGS; \
              every result checked against the ABI), `calls` calls per domain (0 = forever), \
              then exits; mode 1: a bystander checking its memory and registers never change; \
              mode 2: fuzzes, then raises exception class `exc` (255: from the seed) and must \
              be killed; `avoid` steers around known holes; work = calls (bystander: rounds) \
              (the simulator runs it as cpu)",
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
        args: &[("case", 0), ("hold", 0)],
        doc: "the XTF-style suite's page tables (every PTE bit at every level, self-maps, \
              tables made writable, batches, VA 0, a stale TLB), hypercall arguments (numbers, \
              wild pointers, huge lengths), fresh frames scrubbed; `case` picks one \
              (workloads/src/bin/hostile-pt.rs); `hold`: frames `mem-batch` takes first and keeps",
    },
    WorkloadInfo {
        name: "hostile-sched",
        args: &[("case", 0), ("rounds", 100_000), ("spin_ms", 1500)],
        doc: "the XTF-style suite's scheduler abuse (timer, yield, block and VIRQ storms, poll \
              after a fired timer) and exhaustion (ports, grants, memory); `case` picks one, \
              `rounds` sizes the storms, `spin_ms` how long `spin-masked` spins in ring 3 \
              (workloads/src/bin/hostile-sched.rs)",
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
        args: &[("role", 0), ("rounds", 400)],
        doc: "the XTF-style suite's register leak: role 0 fills every register and selector and \
              spins and yields; role 1 checks what each of its vCPUs got at entry, restarting \
              vCPU 1 twenty times; role 2 checks the registers `rounds` hypercalls give back \
              (workloads/src/bin/hostile-regs.rs)",
    },
];

/// The workload called `name`.
pub fn workload(name: &str) -> Option<&'static WorkloadInfo> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// How a workload uses its vCPUs, as far as scheduling and progress are concerned
/// (workloads/README.md "Programs").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// `vcpus` of its vCPUs are always runnable and never block or yield (`cpu`, `fpu`,
    /// `mmu`, `shootdown`, `upcall`): under a policy that never preempts, each keeps its CPU.
    Hog {
        /// How many of its vCPUs do (the others park).
        vcpus: u64,
    },
    /// Always runnable, but yields now and then (`switch`, `yield` with `sleep_us = 0`).
    Yields,
    /// Sleeps on its own timer between bursts of at most `run_ns` of CPU time, at least
    /// once every `period_ns` (`latency`, `io`, `virq`, `yield` with `sleep_us`): a run in
    /// which it never woke means its timer never fired, or it never ran.
    Timer {
        /// Longest time between two wake-ups.
        period_ns: u64,
        /// Longest CPU time it runs between two sleeps.
        run_ns: u64,
    },
    /// Blocks until another domain sends it an event (`ping`, `blk`, `net`).
    Events,
    /// Ends by itself or is killed early (`hostile-*`, a `blk` writer or verifier): no
    /// progress is expected over the measured interval. Also any workload not listed.
    Ends,
}

/// How `workload` with its arguments (defaults filled in) on `vcpus` vCPUs runs.
pub fn runs(workload: &str, args: &BTreeMap<String, u64>, vcpus: u64) -> Runs {
    const US: u64 = 1000;
    let arg = |name: &str| args.get(name).copied().unwrap_or(0);
    match workload {
        "cpu" | "fpu" | "upcall" => Runs::Hog { vcpus },
        "mmu" => Runs::Hog { vcpus: 1 },
        "shootdown" => Runs::Hog { vcpus: vcpus.min(2) },
        "switch" => Runs::Yields,
        "yield" if arg("sleep_us") == 0 => Runs::Yields,
        "yield" => Runs::Timer {
            period_ns: arg("tick_us").max(1).saturating_add(arg("sleep_us")).saturating_mul(US),
            run_ns: arg("tick_us").max(1).saturating_mul(US),
        },
        "latency" => Runs::Timer {
            period_ns: arg("period_us").max(1).saturating_add(arg("run_us")).saturating_mul(US),
            run_ns: arg("run_us").saturating_mul(US),
        },
        "virq" => Runs::Timer { period_ns: arg("period_us").max(1).saturating_mul(US), run_ns: 0 },
        "io" => Runs::Timer {
            period_ns: arg("burst_us")
                .saturating_add(arg("block_us").saturating_mul(2))
                .max(1)
                .saturating_mul(US),
            run_ns: arg("burst_us").saturating_mul(US),
        },
        "blk" if arg("role") == 2 || (arg("role") == 1 && arg("writer_exits") != 0) => Runs::Ends,
        // A bystander spins; a fuzzer without an end mostly runs (its sleeps are 20 µs); a
        // fuzzer with `calls` ends, and mode 2 is killed.
        "fuzz" if arg("mode") == 1 || (arg("mode") == 0 && arg("calls") == 0) => {
            Runs::Hog { vcpus: vcpus.min(4) }
        }
        "ping" | "blk" | "net" => Runs::Events,
        _ => Runs::Ends,
    }
}

/// Bytes a workload's image may span in memory, from its lowest page to the end of its last
/// segment (bss included): the bound the memory check assumes. The runner refuses to boot
/// an image larger than this, so the bound is checked whenever an image is used; a new
/// workload gets the default until it needs more.
pub fn image_bytes(workload: &str) -> u64 {
    match workload {
        // A 1 MiB RAM disk in its bss.
        "blk" => 2 << 20,
        // Its rings and packet buffers.
        "net" => 512 << 10,
        // Per-vCPU call buffers, pages to grant and the bystander's watched memory: 284 KiB.
        "fuzz" => 384 << 10,
        // Four 64 KiB working sets (`ws_kib`) in its bss: 265 KiB.
        "switch" => 384 << 10,
        // The others are 20 to 50 KiB.
        _ => 128 << 10,
    }
}

/// The fewest vCPUs a workload works with, and why (it fails at start with fewer).
pub fn min_vcpus(workload: &str) -> (u64, &'static str) {
    match workload {
        "shootdown" => (2, "one vCPU remaps a page the other keeps reading"),
        _ => (1, ""),
    }
}

/// Bytes Domain0's image may span (8 MiB of it is its heap, sized for 1024 domains' figures);
/// checked like [`image_bytes`].
pub const DOM0_IMAGE_BYTES: u64 = 10 << 20;

/// Frames a workload takes from the hypervisor while it runs (memory reservations), beyond
/// those it was built with.
pub fn reserved_frames(workload: &str, args: &BTreeMap<String, u64>) -> u64 {
    match workload {
        // `batch` frames, clamped to an mmu_update batch as the workload does.
        "mmu" => args.get("batch").copied().unwrap_or(16).clamp(1, 512),
        // Two frames it remaps in turn.
        "shootdown" => 2,
        _ => 0,
    }
}

/// Frames one domain of `workload` with `vcpus` vCPUs needs: what the hypervisor builds
/// ([`limits::domain_frames`]) and what the workload reserves later.
pub fn frames_needed(workload: &str, args: &BTreeMap<String, u64>, vcpus: u64) -> u64 {
    limits::domain_frames(image_bytes(workload), vcpus, 0) + reserved_frames(workload, args)
}

/// Bytes of Domain0's plan, at most, for `domains` domains (names, workloads, parameters and
/// up to `MAX_ARGS` arguments each, postcard-encoded).
pub const fn plan_bytes_bound(domains: u64) -> u64 {
    4096 + domains * 512
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
    /// `[churn]`: Domain0 runs domain lifetimes instead of a measured interval (hypervisor
    /// only; schedsim refuses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<Churn>,
    /// Results over time: a `window` record per domain per window of this many ms of the
    /// measured interval, the last one shorter if it does not divide `duration_ms` (0 =
    /// none). At most [`MAX_WINDOW_RECORDS`] records in all (Domain0 keeps them until the
    /// interval ends).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_ms: u64,
    /// `[[pool]]`: CPU pools, each with its own policy (`crate::timeline`); none: one pool
    /// `default` of every CPU under `[sched]`.
    #[serde(default, rename = "pool", skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<Pool>,
    /// `[[event]]`: the timeline (`crate::timeline`).
    #[serde(default, rename = "event", skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// `[sim]`: schedsim's own settings (the hypervisor ignores them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimSettings>,
    /// The file it came from, for error messages (not part of the TOML).
    #[serde(skip)]
    pub file: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Most `window` records a run may produce (windows × domains): Domain0 holds them until
/// the measured interval ends, so that writing them does not disturb it.
pub const MAX_WINDOW_RECORDS: u64 = 65_536;

/// Shortest window (`window_ms`): Domain0 takes a snapshot of every domain at each
/// boundary, which holds every other CPU still for a moment.
pub const MIN_WINDOW_MS: u64 = 10;

fn default_duration_ms() -> u64 {
    5000
}
fn default_warmup_ms() -> u64 {
    500
}

/// `[sim]`: settings for schedsim alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSettings {
    /// A cost profile ([`crate::cost`]): `"ideal"`, or a file from `scripts/calibrate`,
    /// relative to the spec's folder unless absolute. `schedsim --profile` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl Spec {
    /// The cost profile the spec names (`[sim] profile`), resolved against the spec's
    /// folder; `None` if it names none.
    pub fn profile_path(&self) -> Option<String> {
        let p = self.sim.as_ref()?.profile.as_ref()?;
        if p == "ideal" || Path::new(p).is_absolute() {
            return Some(p.clone());
        }
        let dir = Path::new(&self.file).parent().filter(|d| !d.as_os_str().is_empty());
        Some(dir.map_or_else(|| p.clone(), |d| d.join(p).display().to_string()))
    }
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
    /// Sockets (packages), as QEMU's `-smp sockets=`; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u64>,
    /// Cores per socket, as QEMU's `-smp cores=`; `cpus / (sockets × threads)` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u64>,
    /// Hardware threads per core, as QEMU's `-smp threads=`; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u64>,
}

/// The machine's CPU topology, QEMU's `-smp cpus,sockets=S,cores=C,threads=T`:
/// `cpus = sockets × cores × threads`, `cores` per socket and `threads` per core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Sockets (packages).
    pub sockets: u64,
    /// Cores in each socket.
    pub cores: u64,
    /// Hardware threads in each core.
    pub threads: u64,
}

impl Shape {
    /// CPUs in all.
    pub fn cpus(&self) -> u64 {
        self.sockets * self.cores * self.threads
    }

    /// The highest APIC id QEMU gives a CPU of this shape: it packs thread, core and socket
    /// into bit fields each as wide as its count needs (`apicid_from_topo_ids` in QEMU's
    /// `include/hw/i386/topology.h`), so ids run past `cpus - 1` when cores or threads are
    /// not powers of two.
    pub fn max_apic_id(&self) -> u64 {
        let bits = |n: u64| 64 - n.saturating_sub(1).leading_zeros() as u64;
        let (t_bits, c_bits) = (bits(self.threads), bits(self.cores));
        ((self.sockets - 1) << (c_bits + t_bits))
            | ((self.cores - 1) << t_bits)
            | (self.threads - 1)
    }

    /// QEMU's `-smp` value for it.
    pub fn smp(&self) -> String {
        format!(
            "{},sockets={},cores={},threads={}",
            self.cpus(),
            self.sockets,
            self.cores,
            self.threads
        )
    }
}

/// The highest APIC id the hypervisor can start a CPU at: xAPIC destinations are 8 bits,
/// 0xFF the broadcast (QEMU's TCG `max` CPU has no x2APIC).
pub const MAX_APIC_ID: u64 = 254;

impl Machine {
    /// The CPU topology, defaults filled in: sockets and threads 1, cores
    /// `cpus / (sockets × threads)`. Errors (the field at fault, the message) when the
    /// counts do not multiply to `cpus`, or a count is out of range.
    pub fn shape(&self) -> Result<Shape, (&'static str, String)> {
        let count = |field: &'static str, v: Option<u64>| match v {
            Some(n) if !(1..=MAX_CPUS).contains(&n) => {
                Err((field, format!("{n} is out of range; allowed: 1..={MAX_CPUS}")))
            }
            _ => Ok(v),
        };
        let sockets = count("machine.sockets", self.sockets)?.unwrap_or(1);
        let threads = count("machine.threads", self.threads)?.unwrap_or(1);
        let cpus = self.cpus;
        let shape = match count("machine.cores", self.cores)? {
            Some(cores) => {
                let shape = Shape { sockets, cores, threads };
                if shape.cpus() != cpus {
                    return Err((
                        "machine.cores",
                        format!(
                            "sockets {sockets} × cores {cores} × threads {threads} = {} CPUs, \
                             but cpus = {cpus}; allowed: counts whose product is cpus (leave \
                             cores out to have it computed as cpus / (sockets × threads))",
                            shape.cpus()
                        ),
                    ));
                }
                shape
            }
            None => {
                if !cpus.is_multiple_of(sockets * threads) {
                    return Err((
                        "machine.cpus",
                        format!(
                            "{cpus} CPUs cannot be split into {sockets} socket(s) of cores of \
                             {threads} thread(s); allowed: a multiple of sockets × threads = {}",
                            sockets * threads
                        ),
                    ));
                }
                Shape { sockets, cores: cpus / (sockets * threads), threads }
            }
        };
        if shape.max_apic_id() > MAX_APIC_ID {
            return Err((
                "machine.cores",
                format!(
                    "QEMU numbers the CPUs of sockets {} × cores {} × threads {} up to APIC id \
                     {} (each count rounded up to a power of two); allowed: shapes whose \
                     highest APIC id is at most {MAX_APIC_ID} (xAPIC), e.g. powers of two for \
                     cores and threads",
                    shape.sockets,
                    shape.cores,
                    shape.threads,
                    shape.max_apic_id()
                ),
            ));
        }
        Ok(shape)
    }
}

fn default_cpus() -> u64 {
    2
}
fn default_memory_mib() -> u64 {
    1024
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            cpus: default_cpus(),
            memory_mib: default_memory_mib(),
            sockets: None,
            cores: None,
            threads: None,
        }
    }
}

/// `[sched]`: `policy` plus that policy's global knobs (`tslice_ms = 30`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sched {
    /// A registered policy name.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Global knobs by `xl` name. A knob whose values are names (`ParamSpec::choices`,
    /// credit2's `runqueue = "core"`) may be written as its name; it is kept as its index.
    #[serde(flatten, deserialize_with = "knobs_by_name")]
    pub knobs: BTreeMap<String, u64>,
}

/// `[sched]`'s knobs: numbers as they are, names turned into their index in the
/// `choices` of the registered global parameter of that name.
pub(crate) fn knobs_by_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, u64>, D::Error> {
    use serde::de::Error as _;
    let raw: BTreeMap<String, toml::Value> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let value = match &v {
                toml::Value::Integer(n) if *n >= 0 => *n as u64,
                toml::Value::String(name) => choice_index(&k, name).map_err(D::Error::custom)?,
                other => {
                    return Err(D::Error::custom(format!(
                        "`{k}`: expected a non-negative integer{}, found `{other}`",
                        choices_of(&k)
                            .map(|c| format!(" or one of {}", c.join(", ")))
                            .unwrap_or_default()
                    )));
                }
            };
            Ok((k, value))
        })
        .collect()
}

/// The names a global parameter called `name` takes, if some registered policy declares it
/// with `choices`.
fn choices_of(name: &str) -> Option<&'static [&'static str]> {
    registry::policies()
        .flat_map(|i| i.global_params)
        .find(|p| p.name == name && !p.choices.is_empty())
        .map(|p| p.choices)
}

/// The index of `value` among the names of the global parameter `name`.
fn choice_index(name: &str, value: &str) -> Result<u64, String> {
    let Some(choices) = choices_of(name) else {
        return Err(format!("`{name}`: expected a non-negative integer, found the name `{value}`"));
    };
    choices.iter().position(|c| *c == value).map(|i| i as u64).ok_or_else(|| {
        format!("`{name} = \"{value}\"` is not one of its names; allowed: {}", choices.join(", "))
    })
}

fn default_policy() -> String {
    "credit".into()
}

impl Default for Sched {
    fn default() -> Self {
        Sched { policy: default_policy(), knobs: BTreeMap::new() }
    }
}

/// `[churn]`: domain lifetimes. Each round creates every planned domain (the `[[domain]]`
/// groups, in order, paused), unpauses most of them, destroys some at once, lets the round
/// run up to `run_ms`, then destroys the rest: running, paused first, never started, or
/// after the hypervisor killed them (hostile ones). `duration_ms` and `warmup_ms` are not
/// used. Every `check_every` lifetimes, and at the end, the hypervisor's frames, event
/// ports, grants and heap must be back where they were before the first round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Domain lifetimes in all (rounds × planned domains, the last round cut short).
    pub lifetimes: u64,
    /// Longest a round runs before its survivors are destroyed; each round draws 0..=run_ms.
    #[serde(default = "default_churn_run_ms")]
    pub run_ms: u64,
    /// Lifetimes between the checks that every count is back at its baseline.
    #[serde(default = "default_churn_check_every")]
    pub check_every: u64,
    /// Seed of the per-lifetime choices (how each domain ends, how long a round runs).
    #[serde(default = "one")]
    pub seed: u64,
}

fn default_churn_run_ms() -> u64 {
    20
}
fn default_churn_check_every() -> u64 {
    1000
}

/// Most lifetimes one churn run may ask for.
pub const MAX_CHURN_LIFETIMES: u64 = 10_000_000;

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
    /// Whether each domain must make progress over the measured interval (with `expect =
    /// "ok"`): get CPU time, and wake from its timer if it sleeps on one. A run in which such
    /// a domain was starved fails. `false` for a group that may legitimately get nothing in
    /// the interval (many domains, a short interval, long slices).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub expect_progress: bool,
    /// Other per-domain policy parameters (`warp_us`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sched: BTreeMap<String, PerDomain>,
    /// Workload arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, u64>,
    /// Its pool's name (`[[pool]]`); the first pool when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// `"event"`: created paused, started by an `[[event]]` with `action = "start"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
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
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
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
    /// `--memory MIB` (`scripts/run`): `machine.memory_mib`.
    pub memory_mib: Option<u64>,
    /// `--window-ms MS`: `window_ms` (0 = none).
    pub window_ms: Option<u64>,
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
    /// Whether it must make progress over the measured interval ([`Group::expect_progress`]).
    pub expect_progress: bool,
    /// Workload arguments with defaults filled in.
    pub args: BTreeMap<String, u64>,
    /// Per-domain parameters for the policy of its pool at boot (only those it has).
    pub params: Vec<(String, u64)>,
    /// Every per-domain parameter the spec gives it, whatever the policy (`weight`, `cap`,
    /// `[domain.sched]`): what it carries to another pool or policy.
    pub all_params: Vec<(String, u64)>,
    /// Its pool's index in [`Spec::pool_plans`].
    pub pool: usize,
    /// Created paused, started by an event (`start = "event"`).
    pub start_on_event: bool,
}

impl Spec {
    /// Reads and parses a spec file, then validates it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Spec, SpecError> {
        let spec = Spec::read(path)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads and parses a spec file without validating values (for callers that apply
    /// command-line overrides first: a flag may be what makes the experiment possible).
    pub fn read(path: impl AsRef<Path>) -> Result<Spec, SpecError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: file.clone(),
            path: String::new(),
            msg: format!("cannot read: {e}"),
        })?;
        Spec::parse(&text, &file)
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
                expect_progress: true,
                sched: BTreeMap::new(),
                args: BTreeMap::new(),
                pool: None,
                start: None,
            }],
            churn: None,
            window_ms: 0,
            pools: Vec::new(),
            events: Vec::new(),
            sim: None,
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
            // Every pool runs it; their knobs it does not take are dropped.
            let info = registry::info(p).ok();
            for pool in &mut self.pools {
                pool.policy = Some(p.clone());
                pool.sched.retain(|k, _| info.is_some_and(|i| i.global_param(k).is_some()));
            }
        }
        if let Some(n) = o.cpus {
            self.machine.cpus = n;
        }
        if let Some(m) = o.memory_mib {
            self.machine.memory_mib = m;
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
        if let Some(w) = o.window_ms {
            self.window_ms = w;
        }
    }

    pub(crate) fn err(&self, path: impl Into<String>, msg: impl Into<String>) -> SpecError {
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
        if self.name.len() > MAX_NAME_BYTES {
            return Err(self.err(
                "name",
                format!(
                    "is {} bytes long; allowed: at most {MAX_NAME_BYTES} (it names the results \
                     file and Domain0's run record)",
                    self.name.len()
                ),
            ));
        }
        range(self, "duration_ms", self.duration_ms, 1, 3_600_000)?;
        range(self, "warmup_ms", self.warmup_ms, 0, 600_000)?;
        range(self, "machine.cpus", self.machine.cpus, 1, MAX_CPUS)?;
        range(self, "machine.memory_mib", self.machine.memory_mib, 16, MAX_MEMORY_MIB)?;
        self.machine.shape().map_err(|(field, msg)| self.err(field, msg))?;
        let policy = self.policy()?;
        limits::domain_params_fit(policy).map_err(|e| self.err("sched.policy", e.to_string()))?;
        for (k, &v) in &self.sched.knobs {
            check_param(self, &format!("sched.{k}"), k, v, policy, Scope::Global)?;
        }
        if self.domains.is_empty() {
            return Err(self.err("domain", "at least one [[domain]] group is required"));
        }
        if let Some(c) = &self.churn {
            range(self, "churn.lifetimes", c.lifetimes, 1, MAX_CHURN_LIFETIMES)?;
            range(self, "churn.run_ms", c.run_ms, 0, 60_000)?;
            range(self, "churn.check_every", c.check_every, 1, MAX_CHURN_LIFETIMES)?;
        }
        let total = self.domains.iter().fold(0u64, |n, g| n.saturating_add(g.count));
        self.validate_windows(total)?;
        if total > MAX_DOMAINS {
            return Err(self.err(
                "domain",
                format!(
                    "{total} domains in all; allowed: 1..={MAX_DOMAINS} (the hypervisor holds \
                     {} domains, one of them Domain0)",
                    limits::MAX_DOMAINS
                ),
            ));
        }
        if self.churn.is_some() && (!self.pools.is_empty() || !self.events.is_empty()) {
            let what = if self.pools.is_empty() { "event" } else { "pool" };
            return Err(self.err(
                what,
                "[churn] runs domain lifetimes, not a measured interval; allowed: no [[pool]] \
                 or [[event]] beside [churn]",
            ));
        }
        let pools = self.resolve_pools()?;
        self.validate_group_pools(&pools)?;
        for (i, g) in self.domains.iter().enumerate() {
            self.validate_group(i, g, self.group_policy(g)?)?;
        }
        // Domain0 runs in the first pool.
        let first = match self.pools.first() {
            Some(_) => registry::info(&pools[0].policy)
                .map_err(|e| self.err("pool[0].policy", e.to_string()))?,
            None => policy,
        };
        self.validate_totals(first, pools[0].cpus.len() as u64)?;
        self.resolve_timeline(&pools).map(|_| ())
    }

    /// Checks `window_ms` against the interval and the domains.
    fn validate_windows(&self, domains: u64) -> Result<(), SpecError> {
        if self.window_ms == 0 {
            return Ok(());
        }
        if self.churn.is_some() {
            return Err(self.err(
                "window_ms",
                "a [churn] has no measured interval to cut into windows; allowed: 0 with [churn]",
            ));
        }
        range(
            self,
            "window_ms",
            self.window_ms,
            MIN_WINDOW_MS,
            self.duration_ms.max(MIN_WINDOW_MS),
        )?;
        let windows = self.duration_ms.div_ceil(self.window_ms);
        let records = windows.saturating_mul(domains);
        if records > MAX_WINDOW_RECORDS {
            return Err(self.err(
                "window_ms",
                format!(
                    "{} ms windows over {} ms and {domains} domains make {records} window \
                     records; allowed: at most {MAX_WINDOW_RECORDS} (Domain0 keeps them \
                     until the interval ends), so window_ms >= {}",
                    self.window_ms,
                    self.duration_ms,
                    self.duration_ms
                        .div_ceil(MAX_WINDOW_RECORDS / domains.max(1))
                        .max(MIN_WINDOW_MS)
                ),
            ));
        }
        Ok(())
    }

    /// Checks one `[[domain]]` group.
    fn validate_group(&self, i: usize, g: &Group, policy: &PolicyInfo) -> Result<(), SpecError> {
        let at = |f: &str| format!("domain[{i}].{f}");
        let name_ok = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !name_ok(&g.name) {
            return Err(
                self.err(at("name"), "must be non-empty, of letters, digits, '-', '_', '.'")
            );
        }
        if self.domains[..i].iter().any(|h| h.name == g.name) {
            return Err(
                self.err(at("name"), format!("`{}` names two groups; names must differ", g.name))
            );
        }
        range(self, &at("count"), g.count, 1, MAX_DOMAINS)?;
        // Domains are named <group><index>: the longest name must fit the hypervisor's.
        let longest = format!("{}{}", g.name, g.count - 1);
        if longest.len() > limits::NAME_BYTES {
            let digits = (g.count - 1).to_string().len();
            return Err(self.err(
                at("name"),
                format!(
                    "`{}` with count = {} names its last domain `{longest}`, {} bytes; allowed: \
                     domain names of at most {} bytes, so a group name of at most {} bytes here",
                    g.name,
                    g.count,
                    longest.len(),
                    limits::NAME_BYTES,
                    limits::NAME_BYTES.saturating_sub(digits)
                ),
            ));
        }
        let Some(wl) = workload(&g.workload) else {
            let names: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
            return Err(self.err(
                at("workload"),
                format!("unknown workload `{}`; allowed: {}", g.workload, names.join(", ")),
            ));
        };
        range(self, &at("vcpus"), g.vcpus, 1, limits::MAX_VCPUS as u64)?;
        let (least, why) = min_vcpus(&g.workload);
        if g.vcpus < least {
            return Err(self.err(
                at("vcpus"),
                format!(
                    "`{}` needs at least {least} vCPUs ({why}); allowed: {least}..={}",
                    g.workload,
                    limits::MAX_VCPUS
                ),
            ));
        }
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
                let allowed = if allowed.is_empty() { "none".into() } else { allowed.join(", ") };
                return Err(self.err(
                    at(&format!("args.{k}")),
                    format!("workload `{}` takes no argument `{k}`; allowed: {allowed}", wl.name),
                ));
            }
        }
        // What the policy checks across one domain's parameters (rtds: budget_us at most
        // period_us), tried on a one-domain instance of it, so both engines refuse the spec
        // before anything runs.
        if (0..g.count as usize).any(|k| !group_params(g, k, policy).is_empty()) {
            let topo = crate::Topology::flat(1, 1, 1);
            let probe = registry::build(policy.name, &topo, &[])
                .map_err(|e| self.err("sched.policy", e.to_string()))?;
            for k in 0..g.count as usize {
                let params = group_params(g, k, policy);
                let params: Vec<(&str, u64)> =
                    params.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                probe.add_domain(crate::DomainId(0), &params).map_err(|e| {
                    let which = if g.count > 1 {
                        format!("domain `{}{k}`: ", g.name)
                    } else {
                        String::new()
                    };
                    self.err(at("sched"), format!("{which}{e}"))
                })?;
                let _ = probe.remove_domain(crate::DomainId(0));
            }
        }
        // What the hypervisor builds for each domain, and what the workload reserves later,
        // must fit its memory_kib (the hypervisor refuses to create it otherwise).
        let args = group_args(g);
        let need = limits::kib_for_frames(frames_needed(&g.workload, &args, g.vcpus));
        if g.memory_kib < need {
            let reserved = reserved_frames(&g.workload, &args);
            return Err(self.err(
                at("memory_kib"),
                format!(
                    "{} KiB cannot hold a `{}` domain with {} vCPU{}: it needs {need} KiB (its \
                     image, up to {} KiB; {} KiB of stack per vCPU; page tables and shared \
                     pages{}); allowed: {need}..={}",
                    g.memory_kib,
                    g.workload,
                    g.vcpus,
                    if g.vcpus == 1 { "" } else { "s" },
                    image_bytes(&g.workload) >> 10,
                    limits::STACK_BYTES >> 10,
                    if reserved > 0 {
                        format!("; {} KiB it reserves as it runs", limits::kib_for_frames(reserved))
                    } else {
                        String::new()
                    },
                    1u64 << 30
                ),
            ));
        }
        Ok(())
    }

    /// Checks what the experiment asks of the whole machine: vCPUs in all, memory and heap,
    /// and whether the policy can run it at all.
    fn validate_totals(&self, policy: &PolicyInfo, dom0_cpus: u64) -> Result<(), SpecError> {
        let vcpus: u64 = self.domains.iter().map(|g| g.count * g.vcpus).sum();
        if vcpus > limits::MAX_GUEST_VCPUS as u64 {
            return Err(self.err(
                "domain",
                format!(
                    "{vcpus} vCPUs in all (count × vcpus over the groups); allowed: at most {} \
                     (the hypervisor runs {} vCPUs, {} of them Domain0's)",
                    limits::MAX_GUEST_VCPUS,
                    limits::MAX_VCPUS_TOTAL,
                    limits::DOM0_VCPUS
                ),
            ));
        }
        let demand = self.demand(false);
        let mib = self.machine.memory_mib;
        if !limits::fits(&demand, mib) {
            let supply = limits::supply(mib);
            let allowed = match limits::smallest_machine_mib(&demand, MAX_MEMORY_MIB) {
                Some(m) => format!("at least {m} MiB, or fewer or smaller domains"),
                None => format!(
                    "no machine up to {MAX_MEMORY_MIB} MiB holds it: fewer or smaller domains"
                ),
            };
            return Err(self.err(
                "machine.memory_mib",
                format!(
                    "{mib} MiB is too small: the domains need {} MiB of frames (images, stacks, \
                     page tables, shared pages, reservations; Domain0's included), and {mib} MiB \
                     leaves {} MiB for them; the hypervisor's heap needs {} MiB ({} CPUs, {} \
                     domains, {} vCPUs) of the {} MiB it gets; allowed: {allowed}",
                    (demand.frames * limits::PAGE_BYTES).div_ceil(1 << 20),
                    (supply.frames * limits::PAGE_BYTES) >> 20,
                    limits::heap_demand(&demand, mib).div_ceil(1 << 20),
                    demand.cpus,
                    demand.domains,
                    demand.vcpus,
                    supply.heap_bytes >> 20
                ),
            ));
        }
        // A policy that never preempts leaves a vCPU that never blocks or yields on its CPU
        // for good: with one on every CPU, nothing else runs again, Domain0 included, and
        // the run could only end at the runner's timeout.
        if !policy.preempts {
            let mut hogs = 0;
            let mut groups = Vec::new();
            for g in
                self.domains.iter().filter(|g| g.expect == Expect::Ok && self.group_pool(g) == 0)
            {
                if let Runs::Hog { vcpus } = runs(&g.workload, &group_args(g), g.vcpus) {
                    hogs += g.count * vcpus;
                    groups.push(format!("{} × `{}` ({})", g.count, g.name, g.workload));
                }
            }
            let cpus = dom0_cpus;
            if hogs >= cpus {
                let preempting: Vec<_> =
                    registry::policies().filter(|p| p.preempts).map(|p| p.name).collect();
                return Err(self.err(
                    "sched.policy",
                    format!(
                        "`{}` never preempts a running vCPU, and {hogs} vCPUs of workloads that \
                         never block or yield ({}) would hold all {cpus} CPUs for good: \
                         Domain0 could never run again to end the measured interval and write \
                         the results (nor could any other domain); allowed: at most {} such \
                         vCPUs under `{}`, or more CPUs, or a policy that preempts ({})",
                        policy.name,
                        groups.join(", "),
                        cpus - 1,
                        policy.name,
                        preempting.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What the experiment asks of the machine, Domain0 included; `trace`: whether the
    /// hypervisor traces (its buffers take heap). Call on a validated spec.
    pub fn demand(&self, trace: bool) -> limits::Demand {
        let domains: u64 = self.domains.iter().map(|g| g.count).sum();
        let vcpus: u64 = self.domains.iter().map(|g| g.count * g.vcpus).sum();
        let guest_frames: u64 = self
            .domains
            .iter()
            .map(|g| g.count * frames_needed(&g.workload, &group_args(g), g.vcpus))
            .sum();
        let dom0_frames = limits::domain_frames(
            DOM0_IMAGE_BYTES,
            limits::DOM0_VCPUS as u64,
            plan_bytes_bound(domains),
        );
        limits::Demand {
            cpus: self.machine.cpus,
            domains: domains + 1,
            vcpus: vcpus + limits::DOM0_VCPUS as u64,
            frames: guest_frames + dom0_frames,
            trace,
        }
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
        let mut out = Vec::new();
        for (gi, g) in self.domains.iter().enumerate() {
            let policy = self.group_policy(g).ok();
            for i in 0..g.count as usize {
                let all_params = group_all_params(g, i);
                let params = policy.map_or_else(Vec::new, |p| params_for(p, &all_params));
                let args = group_args(g);
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
                    expect_progress: g.expect_progress,
                    args,
                    params,
                    all_params,
                    pool: self.group_pool(g),
                    start_on_event: g.start == Some(Start::Event),
                });
            }
        }
        out
    }
}

/// What an engine measured of one domain over the measured interval, for [`starved`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Time on a CPU.
    pub cpu_ns: u64,
    /// Time runnable, not running.
    pub wait_ns: u64,
    /// Wake-ups.
    pub wakeups: u64,
}

/// Why a domain the spec expects to make progress did not, over a measured interval of
/// `duration_ns` (docs/DESIGN.md "Exit status": a run never claims success for a domain it
/// starved), or `None`.
/// Checked for a domain with `expect = "ok"` and `expect_progress` (the default) whose
/// workload does not end by itself ([`Runs::Ends`]): it must have had CPU time; and if it
/// sleeps on its own timer, the interval is at least two of its periods, and it ran long
/// enough to go to sleep, it must have woken at least once (`timers`: whether the engine
/// counts that workload's timer wake-ups; schedsim runs some as `cpu`).
pub fn starved(p: &DomainPlan, duration_ns: u64, got: &Progress, timers: bool) -> Option<String> {
    if p.expect != Expect::Ok || !p.expect_progress {
        return None;
    }
    let how = runs(&p.workload, &p.args, u64::from(p.vcpus));
    if how == Runs::Ends {
        return None;
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    let hint = "set expect_progress = false in its [[domain]] group if that is intended";
    if got.cpu_ns == 0 {
        let runnable = if got.wait_ns > 0 {
            format!(", although it was runnable for {:.1} ms of it", ms(got.wait_ns))
        } else {
            String::new()
        };
        return Some(format!(
            "domain `{}` ({}) got no CPU time in the {:.1} ms measured interval{runnable}: it \
             was starved ({hint})",
            p.name,
            p.workload,
            ms(duration_ns)
        ));
    }
    if let Runs::Timer { period_ns, run_ns } = how
        && timers
        && got.wakeups == 0
        && duration_ns >= period_ns.saturating_mul(2)
        && got.cpu_ns >= run_ns
    {
        return Some(format!(
            "domain `{}` ({}) never woke in the {:.1} ms measured interval although it sleeps \
             on its timer at least every {:.1} ms and ran {:.1} ms: its timer never fired, or it \
             was kept from running ({hint})",
            p.name,
            p.workload,
            ms(duration_ns),
            ms(period_ns),
            ms(got.cpu_ns)
        ));
    }
    None
}

/// The per-domain parameters `policy` gets for the `i`-th domain of group `g` (those of
/// other policies dropped).
fn group_params(g: &Group, i: usize, policy: &PolicyInfo) -> Vec<(String, u64)> {
    let mut params = Vec::new();
    let mut add = |name: &str, v: u64| {
        if policy.domain_param(name).is_some() {
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
    params
}

/// Every per-domain parameter the spec gives the `i`-th domain of group `g`, of any policy.
fn group_all_params(g: &Group, i: usize) -> Vec<(String, u64)> {
    let mut params = Vec::new();
    if let Some(w) = &g.weight {
        params.push(("weight".to_string(), w.get(i)));
    }
    if let Some(c) = &g.cap {
        params.push(("cap".to_string(), c.get(i)));
    }
    for (k, v) in &g.sched {
        params.push((k.clone(), v.get(i)));
    }
    params
}

/// Whether `s` is a good name (experiment, group, pool): letters, digits, '-', '_', '.'.
pub(crate) fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A group's workload arguments, with the workload's defaults filled in.
fn group_args(g: &Group) -> BTreeMap<String, u64> {
    let mut args: BTreeMap<String, u64> = workload(&g.workload)
        .map(|w| w.args.iter().map(|(a, d)| (a.to_string(), *d)).collect())
        .unwrap_or_default();
    args.extend(g.args.iter().map(|(k, v)| (k.clone(), *v)));
    args
}

pub(crate) fn range(spec: &Spec, path: &str, v: u64, min: u64, max: u64) -> Result<(), SpecError> {
    if v < min || v > max {
        return Err(spec.err(path, format!("{v} is out of range; allowed: {min}..={max}")));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Scope {
    Global,
    Domain,
}

pub(crate) fn params_of(info: &PolicyInfo, scope: Scope) -> &'static [ParamSpec] {
    match scope {
        Scope::Global => info.global_params,
        Scope::Domain => info.domain_params,
    }
}

/// A parameter is checked against the chosen policy if it has it, else against any other
/// registered policy that has it (and then ignored); a name nobody knows is an error.
pub(crate) fn check_param(
    spec: &Spec,
    path: &str,
    name: &str,
    v: u64,
    policy: &PolicyInfo,
    scope: Scope,
) -> Result<(), SpecError> {
    let found = params_of(policy, scope).iter().find(|p| p.name == name).or_else(|| {
        registry::policies().flat_map(|i| params_of(i, scope)).find(|p| p.name == name)
    });
    match found {
        Some(p) if !p.choices.is_empty() && (v < p.min || v > p.max) => {
            let names = &p.choices
                [(p.min as usize).min(p.choices.len())..(p.max as usize + 1).min(p.choices.len())];
            Err(spec.err(
                path,
                format!(
                    "{v} is out of range; allowed: {} (or their index, {}..={})",
                    names.join(", "),
                    p.min,
                    p.max
                ),
            ))
        }
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
            let others: Vec<_> = registry::policies()
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
