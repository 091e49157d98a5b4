//! Hypervisor time: nanoseconds since the first boot instruction, from the TSC.
//!
//! Until the TSC is calibrated against a fixed-frequency clock, time reads as zero.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Records the calibrated TSC frequency.
pub fn set_tsc_hz(hz: u64) {
    TSC_HZ.store(hz, Ordering::Relaxed);
}

/// The calibrated TSC frequency, or 0 before calibration.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts a TSC interval to nanoseconds (0 before calibration).
pub fn tsc_to_ns(ticks: u64) -> u64 {
    match tsc_hz() {
        0 => 0,
        hz => (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64,
    }
}

/// Nanoseconds since the first boot instruction.
pub fn since_boot_ns() -> u64 {
    tsc_to_ns(arch::cpu::rdtsc().wrapping_sub(arch::boot::entry_tsc()))
}
