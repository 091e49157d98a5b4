//! The machine's CPUs, local APICs and clocks, brought up at boot: safe steps over the
//! `smp` crate's unsafe ones.
//!
//! Those steps are sound under boot-time facts, which this module states once and checks:
//! - **In order, each once**: [`discover`], [`init_apic`], [`calibrate_tsc`], [`init_timer`],
//!   [`start_aps`] (a step out of order, or twice, panics). So the local APIC is set up
//!   before anything programs it, the TSC rate is known before the timer uses it, and the
//!   APs start last. [`init_this_ap`] runs on each AP once, after [`init_timer`].
//! - **On the bootstrap CPU, interrupts off**: every step but [`init_this_ap`] comes before
//!   [`start_aps`] returns, when the bootstrap CPU is the only one that can be running
//!   them (APs are started by the last step), and each checks that interrupts are off.
//! - **Memory**: the boot page tables map all physical memory below 4 GiB at
//!   [`PHYS_OFFSET`], 0xFE00_0000 and above uncached (the local APIC's page), and identity-
//!   map the first 4 GiB for the AP trampoline ([`super::boot`]); the ACPI tables and the
//!   RSDP the loader named ([`BootInfo`]) lie in memory the frame allocator never hands out
//!   (firmware-reserved, or the boot information's own); the trampoline page
//!   ([`TRAMPOLINE_PHYS`]) is below [`super::bootmem::LOW_MEMORY_END`], which
//!   [`super::bootmem::BootMemory::claim`] keeps out of every allocator, and
//!   [`start_aps`] checks that claim happened.
//! - **Devices**: nothing else in the hypervisor touches the PIT, port 0x61 or the PM timer,
//!   which the TSC calibration borrows.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use smp::Topology;
use smp::apic::Mode;
use smp::startup::{CpuSet, StartConfig, StartError, StartupDelays};
use smp::time::CalibrationError;
use smp::timer::TimerMode;

use super::bootinfo::BootInfo;
use super::paging::PHYS_OFFSET;

/// Physical page of the AP start-up trampoline (kept out of the frame allocator with the
/// rest of the first megabyte).
pub const TRAMPOLINE_PHYS: u64 = 0x8000;

/// The steps done so far.
static STAGE: AtomicU8 = AtomicU8::new(0);
const BOOT: u8 = 0;
const DISCOVERED: u8 = 1;
const APIC: u8 = 2;
const TSC: u8 = 3;
const TIMER: u8 = 4;
const STARTED: u8 = 5;

/// Moves from step `from` to `to`, on the bootstrap CPU with interrupts off.
fn step(from: u8, to: u8, what: &str) {
    assert!(
        !x86_64::instructions::interrupts::are_enabled(),
        "{what}: interrupts must be off"
    );
    if STAGE
        .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        panic!(
            "{what} out of order (at step {})",
            STAGE.load(Ordering::Relaxed)
        );
    }
}

/// Why the CPUs could not be found.
#[derive(Debug)]
pub enum DiscoverError {
    /// The loader gave no ACPI RSDP.
    NoRsdp,
    /// The ACPI tables could not be read.
    Acpi(smp::madt::Error),
}

/// Reads the CPUs, the local APIC's address and the PM timer from ACPI (the MADT and the
/// FADT), starting at the RSDP the loader named.
pub fn discover(info: &BootInfo) -> Result<Topology, DiscoverError> {
    step(BOOT, DISCOVERED, "CPU discovery");
    let rsdp = info.rsdp.ok_or(DiscoverError::NoRsdp)?;
    // SAFETY: `rsdp` is the loader's (a `BootInfo` comes only from `bootinfo::read`), and
    // the ACPI tables are where firmware put them, in reserved memory below 4 GiB, which the
    // direct map covers readable (module doc).
    unsafe { smp::discover(rsdp, PHYS_OFFSET) }.map_err(DiscoverError::Acpi)
}

/// Enables the bootstrap CPU's local APIC, choosing x2APIC or xAPIC for the machine.
pub fn init_apic(topology: &Topology) -> Mode {
    step(DISCOVERED, APIC, "local APIC set-up");
    // SAFETY: once, on the BSP, interrupts off, before any other use of the APIC (module
    // doc); the xAPIC page (0xFEE0_0000 on a PC) is in the uncached part of the direct map.
    unsafe { smp::apic::init_bsp(topology.local_apic_phys, PHYS_OFFSET) }
}

/// Measures the TSC's rate against the PIT (or the PM timer). On
/// `Err(Unstable { median_hz })` the caller may still settle for the median with
/// `smp::time::set_tsc_hz`; [`init_timer`] needs a rate either way.
pub fn calibrate_tsc(topology: &Topology) -> Result<u64, CalibrationError> {
    step(APIC, TSC, "TSC calibration");
    // SAFETY: on the BSP before any other CPU runs, interrupts off; nothing else uses the
    // PIT, port 0x61 or the PM timer (module doc).
    unsafe { smp::time::calibrate_tsc(topology.pm_timer) }
}

/// Sets up the bootstrap CPU's timer (TSC deadline, or the APIC timer measured against the
/// TSC).
///
/// # Panics
/// If the TSC rate is not known (see [`calibrate_tsc`]).
pub fn init_timer() -> TimerMode {
    assert!(smp::time::tsc_hz() != 0, "the timer needs the TSC rate");
    step(TSC, TIMER, "timer set-up");
    // SAFETY: on the BSP, interrupts off, after the APIC set-up and the TSC calibration
    // (checked by `step`).
    unsafe { smp::timer::init_bsp() }
}

/// Starts every AP of `topology` through the trampoline: each enters `entry` with its CPU
/// index, on a fresh kernel stack of its own, interrupts off. Returns the CPUs that came
/// online (the bootstrap CPU included).
///
/// # Panics
/// Before boot memory is claimed (the trampoline page must be kept from the allocators).
pub fn start_aps(
    topology: &Topology,
    entry: extern "C" fn(usize) -> !,
) -> Result<CpuSet, StartError> {
    assert!(
        super::bootmem::claimed(),
        "APs start after boot memory is claimed"
    );
    step(TIMER, STARTED, "AP start-up");
    let config = StartConfig {
        trampoline_phys: TRAMPOLINE_PHYS,
        phys_offset: PHYS_OFFSET,
        cr3: super::boot::boot_pml4_phys(),
        entry,
        timeout_us: 1_000_000,
        delays: StartupDelays::for_this_cpu(),
    };
    // SAFETY: on the BSP, interrupts off, after the APIC and TSC set-up (checked by `step`);
    // the trampoline page is reserved (below 1 MiB, claimed) and identity-mapped by the boot
    // PML4, which also maps the image and the direct map, where the stacks live; each stack
    // is a fresh allocation given to one AP; `entry` is a safe function, called as
    // `StartConfig` describes.
    unsafe {
        smp::startup::start_aps(topology, &config, |_| {
            super::gdt::new_stack(super::percpu::KERNEL_STACK_BYTES).as_u64()
        })
    }
}

/// APs that ran [`init_this_ap`], by CPU index.
static AP_READY: [AtomicU64; smp::MAX_CPUS / 64] =
    [const { AtomicU64::new(0) }; smp::MAX_CPUS / 64];

/// Enables this AP's local APIC and timer, in the modes the bootstrap CPU chose. Called
/// once by each AP, with interrupts off, after it installed its per-CPU area.
///
/// # Panics
/// On the bootstrap CPU, before [`init_timer`], or a second time on one CPU.
pub fn init_this_ap() {
    assert!(
        !x86_64::instructions::interrupts::are_enabled(),
        "AP set-up: interrupts must be off"
    );
    assert!(
        STAGE.load(Ordering::Acquire) >= TIMER,
        "AP set-up before the bootstrap CPU's timer"
    );
    let cpu = smp::percpu::cpu_index();
    assert!(cpu != 0 && cpu < smp::MAX_CPUS, "AP set-up on CPU {cpu}");
    let bit = 1u64 << (cpu % 64);
    assert!(
        AP_READY[cpu / 64].fetch_or(bit, Ordering::AcqRel) & bit == 0,
        "AP set-up twice on CPU {cpu}"
    );
    // SAFETY: `apic::init_bsp` and `timer::init_bsp` ran on the BSP (checked above);
    // interrupts are off; this CPU does it once (checked above).
    unsafe {
        smp::apic::init_this_cpu();
        smp::timer::init_this_cpu();
    }
}

/// Where each CPU of `topology` sits: the APIC id field widths from the calling CPU's
/// CPUID (`smp::cpu_topology::detect`, Xen's rules), applied to every APIC id the MADT
/// lists. Each AP checks its own CPUID against it ([`this_cpu_topology`]).
pub fn cpu_layout(topology: &Topology) -> smp::cpu_topology::Layout {
    let ids: arrayvec::ArrayVec<u32, { smp::MAX_CPUS }> =
        topology.cpus.iter().map(|c| c.apic_id).collect();
    let raw = |leaf: u32, sub: u32| {
        let r = smp::arch::cpuid(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    let max_leaf = smp::arch::max_leaf();
    log::debug!(
        "CPUID: max leaf {max_leaf:#x}, leaf 1 {:x?}, leaf 0xb.0 {:x?}, 0xb.1 {:x?}, 0x1f.0 {:x?}",
        raw(1, 0),
        raw(0x0B, 0),
        raw(0x0B, 1),
        if max_leaf >= 0x1F {
            raw(0x1F, 0)
        } else {
            [0; 4]
        }
    );
    smp::cpu_topology::layout(smp::cpu_topology::detect(smp::arch::cpuid), &ids)
}

/// The calling CPU's own view: its APIC id (CPUID's) and the field widths its CPUID reports.
pub fn this_cpu_topology() -> (u32, smp::cpu_topology::Widths) {
    (
        smp::arch::cpuid_apic_id(),
        smp::cpu_topology::detect(smp::arch::cpuid),
    )
}
