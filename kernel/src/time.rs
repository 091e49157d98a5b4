//! Hypervisor time: system time in nanoseconds since the first boot instruction, from the
//! TSC as calibrated by `smp::time`.
//!
//! Until the TSC is calibrated, time reads as zero. Guests compute the same clock from the
//! shared-info page (`abi::shared::TimeInfo`).

use crate::arch;

/// The calibrated TSC frequency, or 0 before calibration.
pub fn tsc_hz() -> u64 {
    smp::time::tsc_hz()
}

/// Nanoseconds since the first boot instruction (system time).
pub fn now_ns() -> u64 {
    if tsc_hz() == 0 {
        return 0;
    }
    smp::time::ticks_to_ns(arch::cpu::rdtsc().wrapping_sub(arch::boot::entry_tsc()))
}

/// Arms this CPU's one-shot timer for system time `at_ns`.
pub fn arm_timer_at(at_ns: u64) {
    smp::timer::arm_at(arch::boot::entry_tsc().wrapping_add(smp::time::ns_to_ticks(at_ns)));
}
