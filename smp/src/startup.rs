//! Starting the application processors: INIT-SIPI-SIPI, one AP at a time.
//!
//! For each AP in [`Topology::cpus`] order, the BSP writes that AP's index, stack and entry
//! into the trampoline's data block, sends INIT, then two STARTUP IPIs, and waits until the
//! AP has copied those fields (it writes its index back into `ack`) before moving to the next
//! one. The delays follow the MultiProcessor Specification (B.4: INIT, 10 ms, STARTUP,
//! 200 µs, STARTUP) on old CPUs and Linux's `smpboot.c` on modern ones (Intel family 6 and
//! later, AMD family 0Fh and later: no wait after INIT, 10 µs after each STARTUP), since the
//! 10 ms is for 1990s APICs and would cost 2.5 s at 255 CPUs. An AP that has not checked in
//! after the timeout is sent INIT again, which parks it in wait-for-SIPI so that a late start
//! cannot run on the next AP's stack; it is then left out of the online set.
//!
//! One at a time keeps the trampoline simple (one set of fields) and the failure report
//! exact; the cost per AP is the AP's own mode switch, a few microseconds on hardware.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::madt::Topology;
use crate::{MAX_CPUS, apic, arch, time, trampoline};

/// A set of CPU indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSet {
    bits: [u64; MAX_CPUS / 64],
}

impl CpuSet {
    /// The empty set.
    pub const fn new() -> CpuSet {
        CpuSet {
            bits: [0; MAX_CPUS / 64],
        }
    }
    /// Adds `cpu`.
    pub fn insert(&mut self, cpu: usize) {
        self.bits[cpu / 64] |= 1 << (cpu % 64);
    }
    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.bits[cpu / 64] & (1 << (cpu % 64)) != 0
    }
    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The CPUs in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_CPUS).filter(|&c| self.contains(c))
    }
}

/// APIC id of each CPU index, for IPIs (filled by [`start_aps`]).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
/// CPUs that checked in (bit per index), BSP included.
static ONLINE: [AtomicU64; MAX_CPUS / 64] = [const { AtomicU64::new(0) }; MAX_CPUS / 64];

/// The APIC id of CPU index `cpu` (`u32::MAX` if unknown).
pub fn apic_id_of(cpu: usize) -> u32 {
    APIC_IDS[cpu].load(Ordering::Relaxed)
}

/// The CPUs that came online (after [`start_aps`]).
pub fn online() -> CpuSet {
    let mut set = CpuSet::new();
    for (w, word) in ONLINE.iter().enumerate() {
        set.bits[w] = word.load(Ordering::Acquire);
    }
    set
}

/// Whether CPU index `cpu` came online.
pub fn is_online(cpu: usize) -> bool {
    cpu < MAX_CPUS && ONLINE[cpu / 64].load(Ordering::Acquire) & (1 << (cpu % 64)) != 0
}

fn mark_online(cpu: usize) {
    ONLINE[cpu / 64].fetch_or(1 << (cpu % 64), Ordering::Release);
}

/// Waits between the start-up IPIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartupDelays {
    /// After INIT.
    pub init_us: u64,
    /// After each STARTUP.
    pub sipi_us: u64,
}

impl StartupDelays {
    /// The MultiProcessor Specification's delays.
    pub const MP_SPEC: StartupDelays = StartupDelays {
        init_us: 10_000,
        sipi_us: 200,
    };
    /// Linux's delays for modern CPUs.
    pub const MODERN: StartupDelays = StartupDelays {
        init_us: 0,
        sipi_us: 10,
    };

    /// The delays Linux would use on this CPU (see the module documentation).
    pub fn for_this_cpu() -> StartupDelays {
        let vendor = arch::cpuid(0, 0);
        let sig = arch::cpuid(1, 0).eax;
        Self::for_cpu(vendor.ebx, vendor.edx, vendor.ecx, sig)
    }

    /// The delays for a CPU with vendor string `ebx:edx:ecx` and CPUID.1:EAX `signature`.
    pub fn for_cpu(ebx: u32, edx: u32, ecx: u32, signature: u32) -> StartupDelays {
        let mut vendor = [0u8; 12];
        vendor[0..4].copy_from_slice(&ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&edx.to_le_bytes());
        vendor[8..12].copy_from_slice(&ecx.to_le_bytes());
        let base = (signature >> 8) & 0xF;
        let family = if base == 0xF {
            base + ((signature >> 20) & 0xFF)
        } else {
            base
        };
        let modern = match &vendor {
            b"GenuineIntel" => family >= 6,
            b"AuthenticAMD" => family >= 0xF,
            b"HygonGenuine" => family >= 0x18,
            _ => false,
        };
        if modern { Self::MODERN } else { Self::MP_SPEC }
    }
}

/// What [`start_aps`] needs from the kernel.
pub struct StartConfig {
    /// Physical address of the trampoline: page-aligned, below 1 MiB, one free page
    /// ([`TRAMPOLINE_BYTES`]) that stays reserved until every AP has loaded its own GDT.
    pub trampoline_phys: u64,
    /// Where physical memory is mapped (virtual = `phys_offset` + physical).
    pub phys_offset: u64,
    /// CR3 for the APs: below 4 GiB, identity-mapping the trampoline page and mapping the
    /// entry, the stacks and the direct map.
    pub cr3: u64,
    /// The AP's 64-bit entry, called with its CPU index, IF=0, on its stack, with SSE on.
    pub entry: extern "C" fn(usize) -> !,
    /// How long to wait for one AP to check in.
    pub timeout_us: u64,
    /// Waits between IPIs (usually [`StartupDelays::for_this_cpu`]).
    pub delays: StartupDelays,
}

/// Bytes of low memory the trampoline occupies.
pub const TRAMPOLINE_BYTES: usize = 4096;

/// Why start-up did not begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The trampoline address is not page-aligned or not below 1 MiB.
    BadTrampolineAddress,
    /// CR3 is not below 4 GiB (the trampoline loads it in 32-bit mode).
    Cr3AboveFourGiB,
    /// The local APIC is not initialised ([`crate::apic::init_bsp`]).
    ApicOff,
}

/// Starts every AP in `topology` (indices 1..), one at a time; returns the set that came
/// online (the BSP, index 0, included). `stack_top(i)` gives AP `i`'s initial stack pointer.
///
/// # Safety
/// On the BSP, interrupts off, after [`crate::apic::init_bsp`] and
/// [`crate::time::calibrate_tsc`]; the memory and mappings described in [`StartConfig`] must
/// exist; each stack must be exclusively AP `i`'s and mapped in `cr3`; `entry` must be sound
/// to run on each AP as described. Call once.
pub unsafe fn start_aps(
    topology: &Topology,
    config: &StartConfig,
    mut stack_top: impl FnMut(usize) -> u64,
) -> Result<CpuSet, StartError> {
    if !config.trampoline_phys.is_multiple_of(4096) || config.trampoline_phys >= 0x10_0000 {
        return Err(StartError::BadTrampolineAddress);
    }
    if config.cr3 >= 1 << 32 {
        return Err(StartError::Cr3AboveFourGiB);
    }
    if apic::mode() == apic::Mode::Off {
        return Err(StartError::ApicOff);
    }
    for (i, cpu) in topology.cpus.iter().enumerate() {
        APIC_IDS[i].store(cpu.apic_id, Ordering::Relaxed);
    }
    mark_online(0);
    if topology.cpus.len() <= 1 {
        return Ok(online());
    }

    let page = (config.trampoline_phys >> 12) as u8;
    let dst = config.phys_offset.wrapping_add(config.trampoline_phys) as *mut u8;
    // SAFETY: the caller reserved this page below 1 MiB for us, and it is mapped writable at
    // `phys_offset + trampoline_phys` (the direct map); the trampoline fits in it (tested).
    let data =
        unsafe { trampoline::install(dst, config.trampoline_phys as u32, config.cr3 as u32) };

    for (index, cpu) in topology.cpus.iter().enumerate().skip(1) {
        // SAFETY: `data` points into the installed trampoline, which only the AP being
        // started reads, and only after the IPIs below; the previous AP is done with these
        // fields (it acknowledged, or was parked with INIT).
        unsafe {
            (&raw mut (*data).entry).write_volatile(config.entry as usize as u64);
            (&raw mut (*data).stack_top).write_volatile(stack_top(index));
            (&raw mut (*data).cpu_index).write_volatile(index as u64);
            (&raw mut (*data).ack).write_volatile(u64::MAX);
        }
        // Make the field writes globally visible before the IPIs (xAPIC MMIO writes are
        // ordered after earlier stores on x86, and `send_icr` fences in x2APIC mode; this
        // keeps the compiler from sinking the stores).
        core::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: `ack` is a field of the live data block; the AP writes it concurrently,
        // hence the volatile reads.
        let acked = || unsafe { (&raw const (*data).ack).read_volatile() } == index as u64;

        apic::send_init(cpu.apic_id);
        time::delay_us(config.delays.init_us);
        for _ in 0..2 {
            apic::send_startup(cpu.apic_id, page);
            time::delay_us(config.delays.sipi_us);
            if acked() {
                break;
            }
        }
        let deadline = time::now_tsc().saturating_add(time::ns_to_ticks(config.timeout_us * 1000));
        while !acked() && time::now_tsc() < deadline {
            arch::pause();
        }
        if acked() {
            mark_online(index);
        } else {
            log::warn!(
                "CPU {index} (APIC id {}) did not start; parking it",
                cpu.apic_id
            );
            apic::send_init(cpu.apic_id);
        }
    }
    Ok(online())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor(s: &[u8; 12]) -> (u32, u32, u32) {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        (w(0), w(4), w(8))
    }

    #[test]
    fn delays_follow_linux() {
        let (b, d, c) = vendor(b"GenuineIntel");
        assert_eq!(
            StartupDelays::for_cpu(b, d, c, 0x000906EA),
            StartupDelays::MODERN
        );
        assert_eq!(
            StartupDelays::for_cpu(b, d, c, 0x00000F29),
            StartupDelays::MODERN
        );
        assert_eq!(
            StartupDelays::for_cpu(b, d, c, 0x00000543),
            StartupDelays::MP_SPEC
        );
        let (b, d, c) = vendor(b"AuthenticAMD");
        // QEMU's qemu64: family 0Fh (base 0xF, extended 0) — modern.
        assert_eq!(
            StartupDelays::for_cpu(b, d, c, 0x00000663 | 0xF00),
            StartupDelays::MODERN
        );
        assert_eq!(
            StartupDelays::for_cpu(b, d, c, 0x00A00F11),
            StartupDelays::MODERN
        );
        assert_eq!(
            StartupDelays::for_cpu(b, d, c, 0x00000612),
            StartupDelays::MP_SPEC
        );
        let (b, d, c) = vendor(b"SomethingNew");
        assert_eq!(
            StartupDelays::for_cpu(b, d, c, 0x000906EA),
            StartupDelays::MP_SPEC
        );
    }

    #[test]
    fn cpu_set() {
        let mut s = CpuSet::new();
        assert!(s.is_empty());
        for c in [0, 63, 64, 200, 255] {
            s.insert(c);
        }
        assert_eq!(s.len(), 5);
        assert!(s.contains(255) && !s.contains(1) && !s.contains(256));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 64, 200, 255]);
    }
}
