//! Time from the TSC: calibration against a fixed-frequency clock, tick/nanosecond
//! conversion, and busy waits.
//!
//! The TSC frequency is measured once, on the BSP, against the PIT (channel 2, gated through
//! port 0x61 as Linux's `pit_calibrate_tsc` does — the gate makes the count start exactly
//! when we say, and OUT2 is readable in port 0x61 bit 5 without latching), falling back to
//! the ACPI PM timer (3.579545 MHz) on machines whose PIT is gated off.
//!
//! Conversions use a fixed-point multiplier and shift (Xen's `tsc_to_ns` scale, in spirit):
//! one 64×64→128-bit multiply and a shift, no division on the hot path, a relative error
//! below 2^-63, and no overflow for any `u64` input (the result saturates).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::arch;
use crate::madt::PmTimer;

/// A fixed-point rate: `out = in * mul >> shift`, with the largest `shift` that keeps `mul`
/// in 64 bits, so the relative error is below 2^-63 for any pair of frequencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    mul: u64,
    shift: u32,
}

impl Scale {
    /// The scale converting units of frequency `from_hz` into units of `to_hz`.
    /// Both must be non-zero and below 2^36.
    pub const fn new(from_hz: u64, to_hz: u64) -> Scale {
        let mut shift = 90;
        loop {
            let mul = ((to_hz as u128) << shift) / from_hz as u128;
            if mul <= u64::MAX as u128 || shift == 0 {
                let mul = if mul > u64::MAX as u128 {
                    u64::MAX
                } else {
                    mul as u64
                };
                return Scale { mul, shift };
            }
            shift -= 1;
        }
    }

    /// The multiplier and shift.
    pub const fn parts(self) -> (u64, u32) {
        (self.mul, self.shift)
    }

    /// Rebuilds a scale from [`Scale::parts`].
    pub const fn from_parts(mul: u64, shift: u32) -> Scale {
        Scale { mul, shift }
    }

    /// Converts `value`, saturating at `u64::MAX`. The product of two `u64`s always fits in
    /// a `u128`, so nothing overflows before the shift.
    #[inline]
    pub const fn apply(self, value: u64) -> u64 {
        let out = (value as u128 * self.mul as u128) >> self.shift;
        if out > u64::MAX as u128 {
            u64::MAX
        } else {
            out as u64
        }
    }
}

/// TSC frequency and the conversions derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscClock {
    /// Measured TSC frequency.
    pub tsc_hz: u64,
    to_ns: Scale,
    from_ns: Scale,
}

impl TscClock {
    /// A clock for a TSC running at `tsc_hz` (non-zero, below 2^36 Hz).
    pub const fn new(tsc_hz: u64) -> TscClock {
        TscClock {
            tsc_hz,
            to_ns: Scale::new(tsc_hz, 1_000_000_000),
            from_ns: Scale::new(1_000_000_000, tsc_hz),
        }
    }

    /// TSC ticks to nanoseconds.
    #[inline]
    pub const fn ticks_to_ns(&self, ticks: u64) -> u64 {
        self.to_ns.apply(ticks)
    }

    /// Nanoseconds to TSC ticks.
    #[inline]
    pub const fn ns_to_ticks(&self, ns: u64) -> u64 {
        self.from_ns.apply(ns)
    }
}

/// 0 until [`calibrate_tsc`] (or [`set_tsc_hz`]) ran.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// The two scales as (multiplier, shift).
static TO_NS: AtomicU64 = AtomicU64::new(0);
static TO_NS_SHIFT: AtomicU32 = AtomicU32::new(0);
static FROM_NS: AtomicU64 = AtomicU64::new(0);
static FROM_NS_SHIFT: AtomicU32 = AtomicU32::new(0);

/// Installs a TSC frequency (measured by [`calibrate_tsc`], or known some other way).
pub fn set_tsc_hz(tsc_hz: u64) {
    let c = TscClock::new(tsc_hz.max(1));
    TO_NS.store(c.to_ns.mul, Ordering::Relaxed);
    TO_NS_SHIFT.store(c.to_ns.shift, Ordering::Relaxed);
    FROM_NS.store(c.from_ns.mul, Ordering::Relaxed);
    FROM_NS_SHIFT.store(c.from_ns.shift, Ordering::Relaxed);
    TSC_HZ.store(tsc_hz, Ordering::Release);
}

/// The calibrated TSC frequency (0 before calibration).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Acquire)
}

/// TSC ticks to nanoseconds with the calibrated frequency (0 before calibration).
#[inline]
pub fn ticks_to_ns(ticks: u64) -> u64 {
    Scale::from_parts(
        TO_NS.load(Ordering::Relaxed),
        TO_NS_SHIFT.load(Ordering::Relaxed),
    )
    .apply(ticks)
}

/// Nanoseconds to TSC ticks with the calibrated frequency (0 before calibration).
#[inline]
pub fn ns_to_ticks(ns: u64) -> u64 {
    Scale::from_parts(
        FROM_NS.load(Ordering::Relaxed),
        FROM_NS_SHIFT.load(Ordering::Relaxed),
    )
    .apply(ns)
}

/// Reads the TSC.
#[inline]
pub fn now_tsc() -> u64 {
    arch::rdtsc()
}

/// Spins for at least `us` microseconds. Needs a calibrated TSC (before calibration it
/// assumes a 4 GHz TSC, i.e. waits at least as long on any slower one).
pub fn delay_us(us: u64) {
    let ticks = match tsc_hz() {
        0 => us.saturating_mul(4_000),
        _ => ns_to_ticks(us.saturating_mul(1_000)),
    };
    let start = arch::rdtsc();
    while arch::rdtsc().wrapping_sub(start) < ticks {
        arch::pause();
    }
}

/// Why calibration failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalibrationError {
    /// The PIT's OUT2 never rose and there is no PM timer.
    NoReferenceClock,
    /// Three rounds of measurements each spread over more than 1%; the last round's median
    /// is given so the caller may still use it (with [`set_tsc_hz`]).
    Unstable {
        /// Median of the last round.
        median_hz: u64,
    },
}

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// The ACPI PM timer's clock.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// Length of one calibration window: 10 ms, like Linux's.
const WINDOW_MS: u64 = 10;
/// Windows measured; the median is kept (a descheduled vCPU only ever lengthens one).
const WINDOWS: usize = 5;

/// Measures the TSC frequency and installs it ([`set_tsc_hz`]); returns it.
///
/// # Safety
/// Call on the BSP with interrupts off, before other CPUs run and while nothing else uses
/// PIT channel 2, port 0x61, or (for the fallback) the PM timer port.
pub unsafe fn calibrate_tsc(pm_timer: Option<PmTimer>) -> Result<u64, CalibrationError> {
    const ROUNDS: usize = 3;
    let mut samples = [0u64; WINDOWS];
    for round in 1..=ROUNDS {
        for s in samples.iter_mut() {
            // SAFETY: the caller gives us exclusive use of PIT channel 2 and port 0x61.
            *s = match unsafe { pit_window() } {
                Some(hz) => hz,
                None => match pm_timer {
                    // SAFETY: the caller gives us exclusive use of the PM timer port.
                    Some(t) => unsafe { pm_timer_window(t) },
                    None => return Err(CalibrationError::NoReferenceClock),
                },
            };
        }
        if let Some(hz) = median_if_stable(&mut samples) {
            set_tsc_hz(hz);
            return Ok(hz);
        }
        log::warn!("TSC calibration round {round}: windows disagree: {samples:?}");
    }
    Err(CalibrationError::Unstable {
        median_hz: samples[WINDOWS / 2],
    })
}

/// The median of `samples` if the middle three agree within 1%, else `None`.
pub fn median_if_stable(samples: &mut [u64]) -> Option<u64> {
    samples.sort_unstable();
    let n = samples.len();
    if n == 0 {
        return None;
    }
    let mid = samples[n / 2];
    let (lo, hi) = (
        samples[(n / 2).saturating_sub(1)],
        samples[(n / 2 + 1).min(n - 1)],
    );
    if mid == 0 || (hi - lo) > mid / 100 {
        return None;
    }
    Some(mid)
}

/// One PIT window: returns the TSC frequency, or `None` if OUT2 never rose.
///
/// # Safety
/// Exclusive use of PIT channel 2 and port 0x61.
unsafe fn pit_window() -> Option<u64> {
    let latch = PIT_HZ * WINDOW_MS / 1000;
    // SAFETY: the caller owns PIT channel 2 and port 0x61. Port 0x61: bit 0 gates channel 2,
    // bit 1 would drive the speaker (kept off). Port 0x43 command 0xB0: channel 2, low byte
    // then high byte, mode 0 (interrupt on terminal count: OUT2 rises when the count ends),
    // binary. The count starts when the high byte is written with the gate up.
    let (start, end) = unsafe {
        arch::outb(0x61, (arch::inb(0x61) & !0x02) | 0x01);
        arch::outb(0x43, 0xB0);
        arch::outb(0x42, latch as u8);
        arch::outb(0x42, (latch >> 8) as u8);
        let start = arch::rdtsc();
        let mut end = start;
        let mut polls: u64 = 0;
        // Each port read takes about a microsecond on hardware; 10 million is seconds.
        while arch::inb(0x61) & 0x20 == 0 {
            end = arch::rdtsc();
            polls += 1;
            if polls > 10_000_000 {
                return None;
            }
        }
        (start, end)
    };
    if polls_too_few(start, end) {
        return None;
    }
    Some((u128::from(end - start) * u128::from(PIT_HZ) / u128::from(latch)) as u64)
}

/// A window that ended at once means OUT2 was stuck high (no working PIT).
fn polls_too_few(start: u64, end: u64) -> bool {
    end.wrapping_sub(start) < 1000
}

/// One PM timer window of about [`WINDOW_MS`]: returns the TSC frequency.
///
/// # Safety
/// Exclusive use of the PM timer port.
unsafe fn pm_timer_window(t: PmTimer) -> u64 {
    // Only 24 bits are guaranteed; a 10 ms window is far from the 4.7 s wrap.
    let mask: u32 = if t.is_32_bit { u32::MAX } else { 0xFF_FFFF };
    let ticks = (PM_TIMER_HZ * WINDOW_MS / 1000) as u32;
    // SAFETY: reading the PM timer has no side effects; the caller owns the port.
    unsafe {
        let p0 = arch::inl(t.port) & mask;
        let t0 = arch::rdtsc();
        let mut p1;
        loop {
            p1 = arch::inl(t.port) & mask;
            if p1.wrapping_sub(p0) & mask >= ticks {
                break;
            }
        }
        let t1 = arch::rdtsc();
        let elapsed = u64::from(p1.wrapping_sub(p0) & mask);
        (u128::from(t1 - t0) * u128::from(PM_TIMER_HZ) / u128::from(elapsed)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_ns(ticks: u64, hz: u64) -> u128 {
        u128::from(ticks) * 1_000_000_000 / u128::from(hz)
    }

    #[test]
    fn ticks_to_ns_matches_exact_division() {
        for hz in [
            1_000_000u64,
            1_193_182,
            2_095_078_000,
            3_000_000_000,
            5_312_345_678,
        ] {
            let c = TscClock::new(hz);
            for ticks in [0u64, 1, 999, hz, hz * 3 + 7, 1 << 40, 1 << 52] {
                let got = u128::from(c.ticks_to_ns(ticks));
                let want = exact_ns(ticks, hz);
                // Error bound: the scale's relative error (< 2^-63) plus truncation.
                let tol = want / (1u128 << 60) + 1;
                assert!(
                    got.abs_diff(want) <= tol,
                    "hz {hz} ticks {ticks}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn ns_to_ticks_round_trips() {
        for hz in [1_000_000u64, 2_095_078_000, 3_000_000_000] {
            let c = TscClock::new(hz);
            for ns in [0u64, 1, 1_000, 1_000_000_007, 3_600 * 1_000_000_000] {
                let ticks = c.ns_to_ticks(ns);
                let want = u128::from(ns) * u128::from(hz) / 1_000_000_000;
                assert!(u128::from(ticks).abs_diff(want) <= want / (1u128 << 60) + 1);
                let back = c.ticks_to_ns(ticks);
                // Truncation loses up to one tick's worth of nanoseconds.
                let tol = ns / (1 << 20) + 1_000_000_000 / hz + 1;
                assert!(back.abs_diff(ns) <= tol, "{ns} -> {ticks} -> {back}");
            }
        }
    }

    #[test]
    fn no_overflow_at_the_extremes() {
        let c = TscClock::new(3_000_000_000);
        // u64::MAX ticks at 3 GHz is ~194 years: representable, must not wrap.
        let ns = c.ticks_to_ns(u64::MAX);
        assert!(u128::from(ns).abs_diff(exact_ns(u64::MAX, 3_000_000_000)) < 1 << 33);
        // u64::MAX ns at 3 GHz is more ticks than u64 holds: saturates.
        assert_eq!(c.ns_to_ticks(u64::MAX), u64::MAX);
        let slow = TscClock::new(1);
        assert_eq!(slow.ticks_to_ns(u64::MAX), u64::MAX);
    }

    #[test]
    fn median_rejects_spread() {
        assert_eq!(median_if_stable(&mut [100, 101, 100, 5, 1000]), Some(100));
        assert_eq!(median_if_stable(&mut [100, 150, 200]), None);
        assert_eq!(median_if_stable(&mut [42]), Some(42));
        assert_eq!(median_if_stable(&mut []), None);
    }

    #[test]
    fn global_conversions_follow_set_tsc_hz() {
        set_tsc_hz(2_000_000_000);
        assert_eq!(tsc_hz(), 2_000_000_000);
        assert_eq!(ticks_to_ns(2_000), 1_000);
        assert_eq!(ns_to_ticks(1_000), 2_000);
    }
}
