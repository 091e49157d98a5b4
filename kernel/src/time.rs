//! Hypervisor time: system time in nanoseconds since the first boot instruction, from the
//! TSC as calibrated by `smp::time`.
//!
//! Until the TSC is calibrated, time reads as zero. Guests compute the same clock from the
//! shared-info page (`abi::shared::TimeInfo`).

use core::sync::atomic::{AtomicU8, Ordering};

use kerncore::cmdline::SelfTest;

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

static WALLCLOCK_AT_BOOT_NS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Reads the real-time clock and records the wall-clock time of system time 0. Called
/// once at boot, after TSC calibration.
pub fn init_wallclock() {
    let reading = arch::cpu::read_rtc();
    match reading.unix_seconds() {
        Some(secs) => {
            let at_boot = (secs * 1_000_000_000).saturating_sub(now_ns());
            WALLCLOCK_AT_BOOT_NS.store(at_boot, core::sync::atomic::Ordering::Relaxed);
        }
        None => {
            log::warn!("the real-time clock reads nonsense ({reading:?}); wall-clock time is 1970")
        }
    }
}

/// Wall-clock time at system time 0, in ns since the Unix epoch (0 if unknown).
pub fn wallclock_at_boot_ns() -> u64 {
    WALLCLOCK_AT_BOOT_NS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Arms this CPU's one-shot timer for system time `at_ns`.
pub fn arm_timer_at(at_ns: u64) {
    smp::timer::arm_at(arch::boot::entry_tsc().wrapping_add(smp::time::ns_to_ticks(at_ns)));
}

/// The self-test the command line chose (`selftest=`), as [`SelfTest`]'s discriminant:
/// recorded once at boot ([`set_self_test`]), read by [`stall`].
static SELF_TEST: AtomicU8 = AtomicU8::new(SelfTest::None as u8);

/// Records the command line's `selftest=` for [`stall`]. Called once at boot.
pub fn set_self_test(test: SelfTest) {
    SELF_TEST.store(test as u8, Ordering::Relaxed);
}

/// Whether the command line chose `selftest=<test>`.
#[inline]
pub fn self_test_is(test: SelfTest) -> bool {
    SELF_TEST.load(Ordering::Relaxed) == test as u8
}

/// Under `selftest=<test>` only: spins `us` µs here (interrupts as the caller has them), as
/// an emulated CPU the host stopped at this point would. The stall self-tests widen a
/// cross-CPU window this way until a check sees the race it guards (each is listed with
/// its check in `kerncore::cmdline::SelfTest`). Otherwise one load.
#[inline]
pub fn stall(test: SelfTest, us: u64) {
    if self_test_is(test) {
        smp::time::delay_us(us);
    }
}
