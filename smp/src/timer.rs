//! The per-CPU one-shot timer, on vector [`crate::vectors::TIMER`].
//!
//! TSC-deadline mode when CPUID offers it: the deadline is written as an absolute TSC value,
//! so there is nothing to convert and no drift. Otherwise the local APIC timer in one-shot
//! mode, counting down from a value derived from the TSC delta; its rate is measured once
//! against the (already calibrated) TSC. The APIC counter is 32 bits: a deadline further
//! away than it can count fires early, so the handler must compare the TSC with the deadline
//! it wanted and re-arm if it is not there yet (treat every timer interrupt as a hint).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::apic::{self, LVT_MASKED, reg};
use crate::arch::{self, IA32_TSC_DEADLINE};
use crate::time::{self, Scale};
use crate::vectors;

const LVT_TSC_DEADLINE: u32 = 0b10 << 17;
/// Divide configuration value for "divide by 16" (Linux's APIC_DIVISOR).
const DIVIDE_BY_16: u32 = 0b0011;

static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
/// APIC timer counts per TSC tick, as a [`Scale`] (APIC mode only).
static TSC_TO_APIC: AtomicU64 = AtomicU64::new(0);
static TSC_TO_APIC_SHIFT: AtomicU32 = AtomicU32::new(0);
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// Which hardware the one-shot timer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// IA32_TSC_DEADLINE.
    TscDeadline,
    /// The local APIC timer's one-shot mode, at this many counts per second.
    ApicOneShot {
        /// Measured APIC timer rate (after the divide-by-16).
        hz: u64,
    },
}

/// Chooses the timer mode for the machine (measuring the APIC timer if needed) and sets up
/// the BSP's timer, disarmed.
///
/// # Safety
/// On the BSP, interrupts off, after [`crate::apic::init_bsp`] and
/// [`crate::time::calibrate_tsc`].
pub unsafe fn init_bsp() -> TimerMode {
    let mode = if arch::has_tsc_deadline() {
        TSC_DEADLINE.store(true, Ordering::Release);
        TimerMode::TscDeadline
    } else {
        let hz = measure_apic_timer_hz();
        APIC_TIMER_HZ.store(hz, Ordering::Relaxed);
        let (mul, shift) = Scale::new(time::tsc_hz().max(1), hz.max(1)).parts();
        TSC_TO_APIC.store(mul, Ordering::Relaxed);
        TSC_TO_APIC_SHIFT.store(shift, Ordering::Release);
        TimerMode::ApicOneShot { hz }
    };
    // SAFETY: same preconditions as ours, on the BSP.
    unsafe { init_this_cpu() };
    mode
}

/// The mode [`init_bsp`] chose.
pub fn mode() -> TimerMode {
    if TSC_DEADLINE.load(Ordering::Acquire) {
        TimerMode::TscDeadline
    } else {
        TimerMode::ApicOneShot {
            hz: APIC_TIMER_HZ.load(Ordering::Relaxed),
        }
    }
}

/// Counts the APIC timer against the TSC for 10 ms.
fn measure_apic_timer_hz() -> u64 {
    apic::write(reg::TIMER_DIVIDE, DIVIDE_BY_16);
    apic::write(reg::LVT_TIMER, LVT_MASKED | u32::from(vectors::TIMER));
    let window_ticks = time::ns_to_ticks(10_000_000);
    apic::write(reg::TIMER_INITIAL, u32::MAX);
    let t0 = arch::rdtsc();
    while arch::rdtsc().wrapping_sub(t0) < window_ticks {
        arch::pause();
    }
    let counted = u32::MAX - apic::read(reg::TIMER_CURRENT);
    let t1 = arch::rdtsc();
    apic::write(reg::TIMER_INITIAL, 0);
    (u128::from(counted) * u128::from(time::tsc_hz()) / u128::from((t1 - t0).max(1))) as u64
}

/// Sets up the calling CPU's timer in the machine's mode, disarmed and unmasked.
///
/// # Safety
/// Interrupts off; [`init_bsp`] has run (on the BSP) and this CPU's APIC is enabled.
pub unsafe fn init_this_cpu() {
    if TSC_DEADLINE.load(Ordering::Acquire) {
        apic::write(reg::LVT_TIMER, LVT_TSC_DEADLINE | u32::from(vectors::TIMER));
        // The LVT write (MMIO in xAPIC mode) must reach the APIC before the first deadline
        // WRMSR, or the write may be taken in the old mode (SDM 10.5.4.1; Linux fences too).
        // SAFETY: fences only order memory accesses.
        unsafe { core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags)) };
    } else {
        apic::write(reg::TIMER_DIVIDE, DIVIDE_BY_16);
        apic::write(reg::LVT_TIMER, u32::from(vectors::TIMER));
    }
    disarm();
}

/// Arms the calling CPU's timer to fire at TSC value `deadline_tsc` (at once if it has passed).
pub fn arm_at(deadline_tsc: u64) {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        // SAFETY: IA32_TSC_DEADLINE exists when CPUID offers TSC-deadline mode; a non-zero
        // value arms the timer (a past value fires at once), which is what we ask for.
        unsafe { arch::wrmsr(IA32_TSC_DEADLINE, deadline_tsc.max(1)) };
    } else {
        let delta = deadline_tsc.saturating_sub(arch::rdtsc());
        let scale = Scale::from_parts(
            TSC_TO_APIC.load(Ordering::Relaxed),
            TSC_TO_APIC_SHIFT.load(Ordering::Relaxed),
        );
        apic::write(reg::TIMER_INITIAL, apic_count(delta, scale));
    }
}

/// The APIC initial count for a TSC delta, rounded up (late rather than early): at least 1
/// (0 would disarm), at most `u32::MAX` (the interrupt then comes early and the handler
/// re-arms).
pub fn apic_count(delta_tsc: u64, tsc_to_apic: Scale) -> u32 {
    let counts = tsc_to_apic.apply(delta_tsc).saturating_add(1);
    counts.clamp(1, u64::from(u32::MAX)) as u32
}

/// Arms the calling CPU's timer to fire `delta_ns` from now. Returns the TSC deadline.
pub fn arm_in_ns(delta_ns: u64) -> u64 {
    let deadline = arch::rdtsc().saturating_add(time::ns_to_ticks(delta_ns));
    arm_at(deadline);
    deadline
}

/// Cancels the calling CPU's pending timer interrupt (one already delivered stays pending).
pub fn disarm() {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        // SAFETY: writing 0 to IA32_TSC_DEADLINE disarms the timer.
        unsafe { arch::wrmsr(IA32_TSC_DEADLINE, 0) };
    } else {
        apic::write(reg::TIMER_INITIAL, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_count_converts_and_clamps() {
        // APIC at 62.5 MHz, TSC at 2.5 GHz: 40 TSC ticks per count.
        let scale = Scale::new(2_500_000_000, 62_500_000);
        assert!((1_000..=1_001).contains(&apic_count(40_000, scale)));
        assert_eq!(apic_count(0, scale), 1);
        assert_eq!(apic_count(u64::MAX, scale), u32::MAX);
    }
}
