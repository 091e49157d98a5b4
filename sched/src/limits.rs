//! The limits the hypervisor and Domain0 enforce, and the memory a domain and a machine
//! need, in the one crate that both the hypervisor and the spec validator can see.
//!
//! Why here: the spec validator ([`crate::spec`], shared by `schedsim` and the runner) must
//! refuse before boot everything the hypervisor or Domain0 would refuse after it. docs/DESIGN.md's
//! dependency rule lets `sched` use nothing of ours, so it cannot read `abi`; the kernel
//! uses both. So:
//! - limits that are the hypervisor's alone ([`MAX_DOMAINS`], [`MAX_VCPUS_TOTAL`],
//!   [`DOM0_MEMORY_KIB`], the heap size, the memory model) are defined here and the kernel
//!   uses these very constants and functions: one definition;
//! - limits that are also the guest ABI ([`NAME_BYTES`], [`MAX_VCPUS`], [`MAX_ARGS`],
//!   [`ARG_NAME_BYTES`], [`STACK_BYTES`], [`STACK_STRIDE`], [`MAX_GUEST_DOMAINS`],
//!   [`MAX_DOMAIN_PARAMS`], [`PARAM_NAME_BYTES`]) must stay in `abi`, which the guests
//!   compile (they cannot see `sched`); they are repeated here and the kernel asserts at
//!   compile time that each equals its `abi` twin (`kernel/src/domain/mod.rs`), so the two
//!   cannot drift apart.
//!
//! The memory model is conservative: it may ask for a few frames more than the hypervisor
//! builds, never fewer. The kernel computes [`domain_frames`] for every domain it creates,
//! refuses the domain if its `memory_kib` cannot hold it, and checks after building that
//! the frames it really took are within the model (`kernel/src/domain/mod.rs`, `create`).

/// A policy whose per-domain parameters the hypervisor cannot carry
/// ([`domain_params_fit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamsDoNotFit {
    /// More than [`MAX_DOMAIN_PARAMS`].
    TooMany {
        /// The policy.
        policy: &'static str,
        /// How many it declares.
        declared: usize,
    },
    /// A name longer than [`PARAM_NAME_BYTES`].
    NameTooLong {
        /// The policy.
        policy: &'static str,
        /// The parameter.
        name: &'static str,
    },
}

impl core::fmt::Display for ParamsDoNotFit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParamsDoNotFit::TooMany { policy, declared } => write!(
                f,
                "policy `{policy}` declares {declared} per-domain parameters; allowed: at most \
                 {MAX_DOMAIN_PARAMS} (what the hypervisor's control ABI carries per domain)"
            ),
            ParamsDoNotFit::NameTooLong { policy, name } => write!(
                f,
                "policy `{policy}`'s per-domain parameter `{name}` is {} bytes long; allowed: \
                 at most {PARAM_NAME_BYTES} (what the hypervisor's control ABI carries)",
                name.len()
            ),
        }
    }
}

/// Whether the hypervisor can carry every per-domain parameter `info` declares: at most
/// [`MAX_DOMAIN_PARAMS`] of them, each name at most [`PARAM_NAME_BYTES`] long. The spec
/// validator checks the policy in force; the registry's tests check every policy.
pub fn domain_params_fit(info: &crate::PolicyInfo) -> Result<(), ParamsDoNotFit> {
    let policy = info.name;
    if info.domain_params.len() > MAX_DOMAIN_PARAMS {
        return Err(ParamsDoNotFit::TooMany { policy, declared: info.domain_params.len() });
    }
    match info.domain_params.iter().find(|p| p.name.len() > PARAM_NAME_BYTES) {
        Some(p) => Err(ParamsDoNotFit::NameTooLong { policy, name: p.name }),
        None => Ok(()),
    }
}

/// Bytes of a page and of a frame.
pub const PAGE_BYTES: u64 = 4096;
/// Longest domain name, in bytes (`abi::shared::NAME_BYTES`).
pub const NAME_BYTES: usize = 32;
/// Most vCPUs of one domain (`abi::shared::MAX_VCPUS`).
pub const MAX_VCPUS: usize = 64;
/// Most workload arguments a domain gets (`abi::shared::MAX_ARGS`).
pub const MAX_ARGS: usize = 8;
/// Longest workload-argument name, in bytes (`abi::shared::Arg::name`).
pub const ARG_NAME_BYTES: usize = 16;
/// Most per-domain scheduling parameters the hypervisor carries for a domain
/// (`abi::control::MAX_SCHED_PARAMS`): a policy may declare no more.
pub const MAX_DOMAIN_PARAMS: usize = 8;
/// Longest per-domain scheduling parameter name, in bytes
/// (`abi::control::SCHED_PARAM_NAME_BYTES`).
pub const PARAM_NAME_BYTES: usize = 24;
/// Most domains an experiment may create, besides Domain0 (`abi::tool::plan::MAX_DOMAINS`).
pub const MAX_GUEST_DOMAINS: usize = 1024;
/// Most domains alive at once in the hypervisor, Domain0 included.
pub const MAX_DOMAINS: usize = MAX_GUEST_DOMAINS + 1;
/// Most vCPUs alive at once in the hypervisor, over all domains, Domain0's included.
pub const MAX_VCPUS_TOTAL: usize = 4096;
/// Domain0's vCPUs.
pub const DOM0_VCPUS: usize = 1;
/// Most vCPUs an experiment's domains may have together (Domain0's are taken first).
pub const MAX_GUEST_VCPUS: usize = MAX_VCPUS_TOTAL - DOM0_VCPUS;
/// Most policy instances one boot of the hypervisor installs: one per CPU pool at boot, one
/// more for every policy swap (`[[event]]` `policy`). A replaced instance is freed a grace
/// period after the swap, but its slot is not reused (`kernel/src/schedule/cpupool.rs`).
pub const MAX_POLICY_INSTANCES: usize = 32;
/// Domain0's memory limit.
pub const DOM0_MEMORY_KIB: u32 = 64 * 1024;
/// Bytes of stack each vCPU gets (`abi::layout::STACK_BYTES`).
pub const STACK_BYTES: u64 = 64 * 1024;
/// Distance between two vCPUs' stacks, a guard page apart (`abi::layout::STACK_STRIDE`).
pub const STACK_STRIDE: u64 = STACK_BYTES + PAGE_BYTES;

/// Bytes one level-1 page table maps.
const L1_SPAN: u64 = 512 * PAGE_BYTES;

/// Level-1 tables that a range of `bytes` bytes can touch, wherever it starts.
const fn l1_tables(bytes: u64) -> u64 {
    if bytes == 0 { 0 } else { bytes.div_ceil(L1_SPAN) + 1 }
}

/// Frames the hypervisor takes to build a domain (`kernel/src/domain/mod.rs`, `create`), at
/// most, for an image spanning `image_bytes` from its lowest page to the end of its last
/// segment, `vcpus` vCPUs and (Domain0 only) a plan of `plan_bytes`.
///
/// Data: the image's pages, each vCPU's stack, the shared-info and counters pages, the plan.
/// Tables (`abi::layout`): the PML4, one PDPT (everything lies below 512 GiB), two page
/// directories (below 1 GiB: image, shared pages, plan, map area, page-table window;
/// 1..2 GiB: the stacks), and the level-1 tables of the image, of the shared pages (one), of
/// the plan, of the map area (one, built empty), of the page-table window (one) and of the
/// stacks. The page-table window maps existing tables: no frames of its own.
pub const fn domain_frames(image_bytes: u64, vcpus: u64, plan_bytes: u64) -> u64 {
    let data = image_bytes.div_ceil(PAGE_BYTES)
        + vcpus * (STACK_BYTES / PAGE_BYTES)
        + 2
        + plan_bytes.div_ceil(PAGE_BYTES);
    let tables = 1
        + 1
        + 2
        + l1_tables(image_bytes)
        + 1
        + l1_tables(plan_bytes)
        + 1
        + 1
        + l1_tables(vcpus * STACK_STRIDE);
    data + tables
}

/// The smallest `memory_kib` that holds `frames` frames (the hypervisor gives a domain
/// `memory_kib / 4` frames).
pub const fn kib_for_frames(frames: u64) -> u64 {
    frames * (PAGE_BYTES / 1024)
}

/// The hypervisor's heap for `usable_bytes` of RAM: a quarter, within bounds that suit both
/// a 64 MiB test machine and a large host, in whole pages (`kernel/src/mm/frames.rs`).
pub const fn heap_bytes(usable_bytes: u64) -> u64 {
    let quarter = usable_bytes / 4;
    let clamped = if quarter < MIN_HEAP_BYTES {
        MIN_HEAP_BYTES
    } else if quarter > MAX_HEAP_BYTES {
        MAX_HEAP_BYTES
    } else {
        quarter
    };
    clamped & !(PAGE_BYTES - 1)
}

/// Smallest heap.
pub const MIN_HEAP_BYTES: u64 = 8 << 20;
/// Largest heap.
pub const MAX_HEAP_BYTES: u64 = 512 << 20;

// The figures below are upper bounds with room to spare, against what was measured under
// QEMU (boot log `memory:` and `heap:` lines; Domain0's `hypervisor_bytes_per_domain`): a
// 64 MiB machine gives 46.3 MiB of frames after a 15.75 MiB heap (1.9 MiB reserved), a
// 1 GiB one 766 MiB after 255 MiB; bring-up takes 576 KiB of heap, plus 192 KiB per CPU and
// 20 bytes per frame; a 1-vCPU domain takes 4.4 to 4.5 KiB. The kernel logs its heap after
// bring-up beside this model, and warns if the model falls short.

/// RAM never handed out as frames or heap, besides those two: the real-mode area below
/// 1 MiB, the hypervisor's image (about 1.7 MiB with its bss), the boot information, the
/// boot module (the guest images and the plan, one or two MiB), the frame bitmap and the
/// direct map's page directories, and what the firmware reserves at the top of RAM.
pub const RESERVED_BYTES: u64 = 8 << 20;
/// Heap the hypervisor uses whatever the machine: the policy's tables (sized for
/// [`MAX_VCPUS_TOTAL`] vCPUs and [`MAX_DOMAINS`] domains), the domain and vCPU tables, the
/// logger and console.
pub const HEAP_BASE_BYTES: u64 = 2 << 20;
/// Heap per CPU: its kernel stack and start-up stack (64 KiB each), four interrupt stacks
/// (16 KiB each), GDT, TSS, per-CPU area, runqueue and timer heap.
pub const HEAP_PER_CPU_BYTES: u64 = 256 << 10;
/// Heap per domain besides its vCPUs: the domain object, its port, grant and mapping tables
/// as they grow.
pub const HEAP_PER_DOMAIN_BYTES: u64 = 8 << 10;
/// Heap per vCPU: the vCPU object, its saved registers, FPU area and latency histogram.
pub const HEAP_PER_VCPU_BYTES: u64 = 2 << 10;
/// Heap per frame of RAM: the frame table's entry (owner, type, counts).
pub const HEAP_PER_FRAME_BYTES: u64 = 24;
/// Heap per CPU when tracing (`trace=on`): its event buffer, 128 Ki events of 24 bytes.
pub const TRACE_BYTES_PER_CPU: u64 = 128 * 1024 * 24;

/// What an experiment asks of the machine as a whole, Domain0 included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// CPUs.
    pub cpus: u64,
    /// Domains, Domain0 included.
    pub domains: u64,
    /// vCPUs over all domains, Domain0's included.
    pub vcpus: u64,
    /// Frames the domains take (built, plus what their workloads reserve later).
    pub frames: u64,
    /// Whether the hypervisor traces (`trace=on`).
    pub trace: bool,
}

/// What a machine of `memory_mib` MiB offers, by the model above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supply {
    /// Frames left for domains.
    pub frames: u64,
    /// The hypervisor's heap.
    pub heap_bytes: u64,
}

/// What a machine of `memory_mib` MiB offers: its heap ([`heap_bytes`]), and the frames
/// left once the heap and [`RESERVED_BYTES`] are taken.
pub const fn supply(memory_mib: u64) -> Supply {
    let ram = memory_mib << 20;
    let usable = ram.saturating_sub(RESERVED_BYTES);
    let heap = heap_bytes(usable);
    Supply { frames: usable.saturating_sub(heap) / PAGE_BYTES, heap_bytes: heap }
}

/// The heap an experiment needs on a machine of `memory_mib` MiB.
pub const fn heap_demand(d: &Demand, memory_mib: u64) -> u64 {
    let trace = if d.trace { d.cpus * TRACE_BYTES_PER_CPU } else { 0 };
    HEAP_BASE_BYTES
        + d.cpus * HEAP_PER_CPU_BYTES
        + d.domains * HEAP_PER_DOMAIN_BYTES
        + d.vcpus * HEAP_PER_VCPU_BYTES
        + (memory_mib << 20) / PAGE_BYTES * HEAP_PER_FRAME_BYTES
        + trace
}

/// Whether a machine of `memory_mib` MiB holds what `d` asks for.
pub const fn fits(d: &Demand, memory_mib: u64) -> bool {
    let s = supply(memory_mib);
    d.frames <= s.frames && heap_demand(d, memory_mib) <= s.heap_bytes
}

/// The smallest machine (MiB, at most `max_mib`) that holds what `d` asks for.
pub fn smallest_machine_mib(d: &Demand, max_mib: u64) -> Option<u64> {
    // Not monotone in general: past 2 GiB the heap stops growing while the frame table in it
    // still does, so a large machine may fail where a smaller one fits. Every size is tried
    // (a few microseconds for 64 Ki sizes).
    (1..=max_mib).find(|&mib| fits(d, mib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_domain_needs_its_image_stack_shared_pages_and_tables() {
        // 3 image pages, 16 stack pages, 2 shared pages; PML4, PDPT, 2 PDs, and the L1s of
        // image (2), shared pages, map area, window and stack (2).
        assert_eq!(domain_frames(3 * 4096, 1, 0), 3 + 16 + 2 + 4 + 2 + 1 + 1 + 1 + 2);
        // More vCPUs: 16 frames each, and a level-1 table per 2 MiB of stacks.
        let one = domain_frames(64 << 10, 1, 0);
        let many = domain_frames(64 << 10, 64, 0);
        assert_eq!(many - one, 63 * 16 + (64 * STACK_STRIDE).div_ceil(L1_SPAN) - 1);
        // Domain0's plan adds its pages and tables.
        assert!(domain_frames(1 << 20, 1, 4096) > domain_frames(1 << 20, 1, 0));
    }

    #[test]
    fn the_heap_is_a_quarter_within_bounds() {
        assert_eq!(heap_bytes(16 << 20), MIN_HEAP_BYTES);
        assert_eq!(heap_bytes(1 << 30), 256 << 20);
        assert_eq!(heap_bytes(8 << 30), MAX_HEAP_BYTES);
    }

    #[test]
    fn the_smallest_machine_fits_and_one_mib_less_does_not() {
        let d = Demand { cpus: 4, domains: 129, vcpus: 129, frames: 128 * 60, trace: false };
        let m = smallest_machine_mib(&d, 64 << 10).unwrap();
        assert!(fits(&d, m) && !fits(&d, m - 1), "{m}");
        let huge = Demand { frames: u64::MAX / 2, ..d };
        assert_eq!(smallest_machine_mib(&huge, 64 << 10), None);
        // 64 CPUs' trace buffers (192 MiB) fit the heap of 1 GiB, not that of 64 GiB, whose
        // frame table takes 384 MiB of its 512.
        let traced = Demand { cpus: 64, trace: true, ..d };
        assert!(fits(&traced, 1024) && !fits(&traced, 64 << 10));
        assert!(smallest_machine_mib(&traced, 64 << 10).is_some_and(|m| m <= 1024));
    }
}
