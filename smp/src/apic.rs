//! The local APIC, in x2APIC mode (MSRs) when CPUID offers it and xAPIC mode (MMIO)
//! otherwise — QEMU's TCG has no x2APIC, real many-core hosts usually do.
//!
//! The mode is chosen once, on the BSP, by [`init_bsp`]; every AP then enables the same mode
//! in [`init_this_cpu`]. Registers are named by their xAPIC MMIO offset; in x2APIC mode the
//! MSR is `0x800 + offset / 16` (Intel SDM vol. 3, 11.12.1.2). The one register whose layout
//! differs is the interrupt command register: in xAPIC mode it is two 32-bit halves with the
//! destination in bits 24..31 of the high half (bits 56..63 of the whole), written high half
//! first because the low write sends; in x2APIC mode it is one 64-bit MSR with a 32-bit
//! destination in bits 32..63.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::arch::{self, IA32_APIC_BASE};
use crate::vectors;

/// Register offsets (xAPIC MMIO layout).
pub mod reg {
    /// Local APIC id.
    pub const ID: u32 = 0x020;
    /// Version.
    pub const VERSION: u32 = 0x030;
    /// Task priority.
    pub const TPR: u32 = 0x080;
    /// End of interrupt.
    pub const EOI: u32 = 0x0B0;
    /// Spurious-interrupt vector and software enable.
    pub const SVR: u32 = 0x0F0;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// Interrupt command, low half (x2APIC: the whole 64-bit register).
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command, high half (xAPIC only).
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count.
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// LVT mask bit.
pub const LVT_MASKED: u32 = 1 << 16;
const LVT_NMI: u32 = 0b100 << 8;
const SVR_ENABLE: u32 = 1 << 8;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_TRIGGER_LEVEL: u32 = 1 << 15;

/// How the local APIC is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not initialised yet.
    Off,
    /// Memory-mapped registers.
    XApic,
    /// Model-specific registers.
    X2Apic,
}

impl Mode {
    /// The name the results record uses: "x2apic" or "xapic" ("off" before [`init_bsp`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::XApic => "xapic",
            Mode::X2Apic => "x2apic",
        }
    }
}

const MODE_OFF: u8 = 0;
const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(MODE_OFF);
/// Virtual address of the xAPIC register page (direct map + physical base).
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);

/// The mode chosen by [`init_bsp`].
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        MODE_XAPIC => Mode::XApic,
        MODE_X2APIC => Mode::X2Apic,
        _ => Mode::Off,
    }
}

/// Chooses the mode for the whole machine and enables the BSP's local APIC.
///
/// `lapic_phys` is [`crate::Topology::local_apic_phys`]; in xAPIC mode its page is reached
/// at `phys_offset + lapic_phys`, which must be mapped uncached.
///
/// # Safety
/// Call once, on the BSP, with interrupts off, before any other function of this module; the
/// mapping described above must exist when the machine falls back to xAPIC mode.
pub unsafe fn init_bsp(lapic_phys: u64, phys_offset: u64) -> Mode {
    let mode = if arch::has_x2apic() {
        MODE_X2APIC
    } else {
        MODE_XAPIC
    };
    // IA32_APIC_BASE is what the hardware decodes; firmware that moved the APIC and forgot
    // the MADT would otherwise have us write to nothing.
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no side effects.
    let msr_phys = unsafe { arch::rdmsr(IA32_APIC_BASE) } & 0x000F_FFFF_FFFF_F000;
    let base = if msr_phys != 0 && msr_phys != lapic_phys & !0xFFF {
        log::warn!("local APIC at {msr_phys:#x} (IA32_APIC_BASE), MADT says {lapic_phys:#x}");
        msr_phys
    } else {
        lapic_phys & !0xFFF
    };
    XAPIC_BASE.store(phys_offset.wrapping_add(base), Ordering::Relaxed);
    MODE.store(mode, Ordering::Release);
    // SAFETY: the mode and mapping are now set up as `init_this_cpu` requires, and the caller
    // runs on the BSP with interrupts off.
    unsafe { init_this_cpu() };
    self::mode()
}

/// Enables the calling CPU's local APIC in the machine's mode: software-enabled with the
/// spurious vector 0xFF, task priority 0 (accept everything), LINT0 masked (the 8259's
/// virtual-wire input, which Domino does not use), LINT1 as NMI, error and timer LVTs masked.
///
/// # Safety
/// [`init_bsp`] has run; call on each CPU once, with interrupts off.
pub unsafe fn init_this_cpu() {
    let x2 = mode() == Mode::X2Apic;
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC (all x86_64 CPUs). Setting
    // EN (and EXTD when CPUID offered x2APIC) is the documented way to enable a mode; going
    // from xAPIC to x2APIC directly is allowed, and we never go back.
    unsafe {
        let base = arch::rdmsr(IA32_APIC_BASE);
        let want = base | APIC_BASE_ENABLE | if x2 { APIC_BASE_X2APIC } else { 0 };
        if want != base {
            arch::wrmsr(IA32_APIC_BASE, want);
        }
    }
    write(reg::TPR, 0);
    write(reg::LVT_LINT0, LVT_MASKED);
    write(reg::LVT_LINT1, LVT_NMI);
    write(reg::LVT_ERROR, LVT_MASKED | 0xFE);
    write(reg::LVT_TIMER, LVT_MASKED | u32::from(vectors::TIMER));
    write(reg::SVR, SVR_ENABLE | u32::from(vectors::SPURIOUS));
    // Clear any error latched before we took over (ESR is written before it is read).
    write(reg::ESR, 0);
    let _ = read(reg::ESR);
}

/// Reads a local APIC register (offset in xAPIC layout).
pub fn read(offset: u32) -> u32 {
    match mode() {
        // SAFETY: in x2APIC mode every register below 0x400 except ICR_HIGH maps to an MSR
        // at 0x800 + offset/16; this CPU's APIC was enabled in x2APIC mode by `init_this_cpu`.
        Mode::X2Apic => unsafe { arch::rdmsr(0x800 + (offset >> 4)) as u32 },
        // SAFETY: `init_bsp` recorded the direct-map address of the register page, mapped
        // uncached by the kernel; registers are 32-bit aligned within it.
        Mode::XApic => unsafe {
            core::ptr::read_volatile(
                (XAPIC_BASE.load(Ordering::Relaxed) + u64::from(offset)) as *const u32,
            )
        },
        Mode::Off => 0,
    }
}

/// Writes a local APIC register (offset in xAPIC layout).
pub fn write(offset: u32, value: u32) {
    match mode() {
        // SAFETY: as in `read`; register writes only affect this CPU's interrupt delivery.
        Mode::X2Apic => unsafe { arch::wrmsr(0x800 + (offset >> 4), u64::from(value)) },
        // SAFETY: as in `read`.
        Mode::XApic => unsafe {
            core::ptr::write_volatile(
                (XAPIC_BASE.load(Ordering::Relaxed) + u64::from(offset)) as *mut u32,
                value,
            )
        },
        Mode::Off => {}
    }
}

/// The calling CPU's APIC id.
pub fn id() -> u32 {
    match mode() {
        Mode::X2Apic => read(reg::ID),
        Mode::XApic => read(reg::ID) >> 24,
        Mode::Off => arch::cpuid_apic_id(),
    }
}

/// Signals end of interrupt. Every handler of an APIC-delivered vector except the spurious
/// one calls this once.
#[inline]
pub fn eoi() {
    write(reg::EOI, 0);
}

/// Sends an interrupt command to `dest` (a physical APIC id); `low` holds vector, delivery
/// mode, level and trigger. Waits for the xAPIC to accept it.
pub fn send_icr(dest: u32, low: u32) {
    arch::without_interrupts(|| match mode() {
        Mode::X2Apic => {
            // WRMSR to x2APIC registers is not serializing: without the fence, stores made
            // before the IPI (a call-function mailbox) might not be visible when it lands.
            // SAFETY: MFENCE/LFENCE only order memory; the x2APIC ICR is MSR 0x830 and a
            // 64-bit write sends the IPI in one step.
            unsafe {
                core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags));
                arch::wrmsr(0x830, (u64::from(dest) << 32) | u64::from(low));
            }
        }
        Mode::XApic => {
            wait_icr_idle();
            // The destination field is bits 24..31 of ICR_HIGH (56..63 of the whole ICR).
            write(reg::ICR_HIGH, (dest & 0xFF) << 24);
            write(reg::ICR_LOW, low);
            wait_icr_idle();
        }
        Mode::Off => {}
    });
}

fn wait_icr_idle() {
    // Bounded: a stuck delivery status would mean a broken APIC; don't hang the sender forever.
    for _ in 0..1_000_000 {
        if read(reg::ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
            return;
        }
        arch::pause();
    }
}

/// Sends fixed-delivery interrupt `vector` to the CPU with APIC id `dest`.
pub fn send_ipi(dest: u32, vector: u8) {
    send_icr(dest, u32::from(vector));
}

/// Sends INIT (level assert) to `dest`, then, in xAPIC mode, the de-assert that the
/// 82489DX-era APICs need (ignored by later ones; Linux sends it too). x2APIC mode exists only
/// on CPUs that never needed it, and the SDM lists INIT level de-assert as unsupported there.
pub fn send_init(dest: u32) {
    send_icr(dest, ICR_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL);
    if mode() == Mode::XApic {
        send_icr(dest, ICR_INIT | ICR_TRIGGER_LEVEL);
    }
}

/// Sends a STARTUP IPI to `dest`: the AP starts in real mode at `page << 12`.
pub fn send_startup(dest: u32, page: u8) {
    send_icr(dest, ICR_STARTUP | u32::from(page));
}
