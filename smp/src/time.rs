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
#[inline]
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
    /// Fewer than three windows with sharp edges agreed within 0.1% (a heavily loaded or
    /// misbehaving host); the median of all windows is given so the caller may still use it (with
    /// [`set_tsc_hz`]).
    Unstable {
        /// Median of every window measured.
        median_hz: u64,
    },
}

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// The ACPI PM timer's clock.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// Length of one calibration window: 10 ms, like Linux's.
const WINDOW_MS: u64 = 10;
/// Sharp windows that must agree (within [`AGREEMENT`]) before we stop measuring.
const WANTED: usize = 3;
/// Windows tried at most (0.24 s at worst; 30 ms when the first three agree).
const ATTEMPTS: usize = 24;
/// Windows agree when within 1/`AGREEMENT` of each other (0.1%).
const AGREEMENT: u64 = 1000;
/// A window is sharp when the TSC brackets around its start and end events add up to less
/// than 1/`SHARPNESS` of it (0.2%: 20 µs of a 10 ms window).
const SHARPNESS: u64 = 500;

/// One calibration window, in TSC ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// TSC ticks between the middles of the start and end brackets.
    pub ticks: u64,
    /// Width of the start bracket plus the end bracket: how blurred the edges are.
    pub blur: u64,
    /// TSC frequency this window implies.
    pub hz: u64,
}

impl Window {
    /// From TSC readings around the start event (`s0`, `s1`) and around the end event
    /// (`e0`: last read before it was seen, `e1`: first after), for a reference interval of
    /// `ref_ticks` at `ref_hz`.
    pub fn new(s0: u64, s1: u64, e0: u64, e1: u64, ref_ticks: u64, ref_hz: u64) -> Window {
        let start = s0 / 2 + s1 / 2;
        let end = e0 / 2 + e1 / 2;
        let ticks = end.saturating_sub(start);
        // Saturating: a TSC that steps backwards (seen under TCG) must not wrap.
        let blur = s1.saturating_sub(s0).saturating_add(e1.saturating_sub(e0));
        let hz = (u128::from(ticks) * u128::from(ref_hz) / u128::from(ref_ticks.max(1))) as u64;
        Window { ticks, blur, hz }
    }

    /// Whether the edges are sharp enough to trust.
    pub fn is_sharp(&self) -> bool {
        self.blur.saturating_mul(SHARPNESS) <= self.ticks
    }
}

/// Measures the TSC frequency and installs it ([`set_tsc_hz`]); returns it.
///
/// Each window's start and end are bracketed by TSC reads, and only windows with sharp
/// edges count: on a loaded host a vCPU may be descheduled between the event and the TSC
/// read, which used to shift calibrations under TCG by up to 25%. Being descheduled in the
/// middle of a window is harmless (both clocks keep running).
///
/// # Safety
/// Call on the BSP with interrupts off, before other CPUs run and while nothing else uses
/// PIT channel 2, port 0x61, or (for the fallback) the PM timer port.
pub unsafe fn calibrate_tsc(pm_timer: Option<PmTimer>) -> Result<u64, CalibrationError> {
    let mut windows = [Window {
        ticks: 0,
        blur: 0,
        hz: 0,
    }; ATTEMPTS];
    let mut taken = 0;
    let mut pit_works = true;
    while taken < ATTEMPTS && choose_hz(&windows[..taken]).is_err() {
        let pit = if pit_works {
            // SAFETY: the caller gives us exclusive use of PIT channel 2 and port 0x61.
            unsafe { pit_window() }
        } else {
            None
        };
        windows[taken] = match (pit, pm_timer) {
            (Some(w), _) => w,
            (None, Some(t)) => {
                pit_works = false;
                // SAFETY: the caller gives us exclusive use of the PM timer port.
                unsafe { pm_timer_window(t) }
            }
            (None, None) => return Err(CalibrationError::NoReferenceClock),
        };
        taken += 1;
    }
    log::debug!(
        "TSC calibrated against the {} in {taken} windows",
        if pit_works { "PIT" } else { "ACPI PM timer" }
    );
    match choose_hz(&windows[..taken]) {
        Ok(hz) => {
            set_tsc_hz(hz);
            Ok(hz)
        }
        Err(median_hz) => {
            log::warn!(
                "TSC calibration: no agreement among {:?}",
                &windows[..taken]
            );
            Err(CalibrationError::Unstable { median_hz })
        }
    }
}

/// The frequency most sharp windows agree on: the median of the largest group of at least
/// [`WANTED`] sharp windows within 0.1% of each other. Otherwise `Err` with the median of all
/// windows (0 if none).
///
/// A plurality rather than a plain median, because under TCG on a nested host the guest
/// TSC itself sometimes jumps by milliseconds (the host thread moved to a CPU whose TSC is
/// offset): such a window can have sharp edges and still be 20% off.
pub fn choose_hz(windows: &[Window]) -> Result<u64, u64> {
    let mut sharp = [0u64; ATTEMPTS];
    let mut all = [0u64; ATTEMPTS];
    let windows = &windows[..windows.len().min(ATTEMPTS)];
    let mut n = 0;
    for (i, w) in windows.iter().enumerate() {
        all[i] = w.hz;
        if w.is_sharp() {
            sharp[n] = w.hz;
            n += 1;
        }
    }
    let all = &mut all[..windows.len()];
    all.sort_unstable();
    let fallback = all.get(all.len() / 2).copied().unwrap_or(0);
    let sharp = &mut sharp[..n];
    sharp.sort_unstable();
    // Largest run sharp[lo..hi] with sharp[hi - 1] - sharp[lo] within the agreement.
    let (mut best_lo, mut best_len, mut hi) = (0, 0, 0);
    for lo in 0..n {
        hi = hi.max(lo);
        while hi < n && sharp[hi] - sharp[lo] <= sharp[lo] / AGREEMENT {
            hi += 1;
        }
        if hi - lo > best_len {
            (best_lo, best_len) = (lo, hi - lo);
        }
    }
    if best_len < WANTED {
        return Err(fallback);
    }
    Ok(sharp[best_lo + best_len / 2])
}

/// One PIT window, or `None` if OUT2 never rose (no working PIT).
///
/// # Safety
/// Exclusive use of PIT channel 2 and port 0x61.
unsafe fn pit_window() -> Option<Window> {
    let latch = PIT_HZ * WINDOW_MS / 1000;
    // Port 0x61: bit 0 gates channel 2, bit 1 would drive the speaker (kept off). Port 0x43
    // command 0xB0: channel 2, low then high byte, mode 0 (OUT2 rises when the count ends),
    // binary; the count starts when the high byte is written with the gate up.
    // SAFETY: the caller owns PIT channel 2 and port 0x61; the writes are as described.
    unsafe {
        arch::outb(0x61, (arch::inb(0x61) & !0x02) | 0x01);
        arch::outb(0x43, 0xB0);
        arch::outb(0x42, latch as u8);
        let s0 = arch::rdtsc();
        arch::outb(0x42, (latch >> 8) as u8);
        let s1 = arch::rdtsc();
        let mut e0 = s1;
        // Give up after 0.4 s at 2.5 GHz (40 windows): no PIT behind port 0x61, or it is gated
        // off; bounded by TSC ticks, since port reads may take microseconds each.
        while e0.saturating_sub(s1) < 1_000_000_000 {
            if arch::inb(0x61) & 0x20 != 0 {
                let e1 = arch::rdtsc();
                // OUT2 high at once means it never went low: no PIT behind the port.
                if e0 == s1 {
                    return None;
                }
                return Some(Window::new(s0, s1, e0, e1, latch, PIT_HZ));
            }
            e0 = arch::rdtsc();
        }
        None
    }
}

/// One PM timer window of about [`WINDOW_MS`].
///
/// # Safety
/// Exclusive use of the PM timer port.
unsafe fn pm_timer_window(t: PmTimer) -> Window {
    // Only 24 bits are guaranteed; a 10 ms window is far from the 4.7 s wrap.
    let mask: u32 = if t.is_32_bit { u32::MAX } else { 0xFF_FFFF };
    let ticks = (PM_TIMER_HZ * WINDOW_MS / 1000) as u32;
    // SAFETY: reading the PM timer has no side effects; the caller owns the port.
    unsafe {
        // Wait for a tick edge so the start is sharp, bracketing the read that sees it.
        let first = arch::inl(t.port) & mask;
        let (mut s0, mut s1, mut p0);
        loop {
            s0 = arch::rdtsc();
            p0 = arch::inl(t.port) & mask;
            s1 = arch::rdtsc();
            if p0 != first {
                break;
            }
        }
        let (mut e0, mut e1, mut p1);
        loop {
            e0 = arch::rdtsc();
            p1 = arch::inl(t.port) & mask;
            e1 = arch::rdtsc();
            if p1.wrapping_sub(p0) & mask >= ticks {
                break;
            }
        }
        let elapsed = u64::from(p1.wrapping_sub(p0) & mask);
        Window::new(s0, s1, e0, e1, elapsed, PM_TIMER_HZ)
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

    fn window(hz: u64, blur: u64) -> Window {
        // A 10 ms window (one tick of a 100 Hz reference) at `hz`, edges blurred by `blur`.
        let ticks = hz / 100;
        Window::new(
            1_000,
            1_000 + blur / 2,
            1_000 + ticks,
            1_000 + ticks + blur / 2,
            1,
            100,
        )
    }

    #[test]
    fn windows_measure_between_bracket_middles() {
        let w = Window::new(100, 200, 10_100, 10_300, 100, 1_000);
        assert_eq!((w.ticks, w.blur, w.hz), (10_050, 300, 100_500));
        assert!(!w.is_sharp());
        let w = window(2_600_000_000, 1_000);
        assert!(w.is_sharp());
        assert!(w.hz.abs_diff(2_600_000_000) < 2_600_000);
    }

    #[test]
    fn blurred_windows_are_ignored() {
        // Sharp windows near 2.6 GHz, wild ones whose edges were blurred, and sharp ones
        // that are off because the TSC itself jumped (as seen under TCG on this host).
        let mut ws = vec![
            window(1_950_000_000, 10_000_000),
            window(2_750_000_000, 9_000_000),
            window(3_130_135_914, 10_016),
            window(3_107_765_077, 24_562),
        ];
        assert!(choose_hz(&ws).is_err());
        for hz in [2_599_990_000, 2_600_010_000] {
            ws.push(window(hz, 2_000));
        }
        // Two agreeing sharp windows are not enough.
        assert!(choose_hz(&ws).is_err());
        ws.push(window(2_600_000_000, 2_000));
        let hz = choose_hz(&ws).unwrap();
        assert!(hz.abs_diff(2_600_000_000) < 100_000, "{hz}");
        assert_eq!(choose_hz(&[]), Err(0));
    }

    #[test]
    fn global_conversions_follow_set_tsc_hz() {
        set_tsc_hz(2_000_000_000);
        assert_eq!(tsc_hz(), 2_000_000_000);
        assert_eq!(ticks_to_ns(2_000), 1_000);
        assert_eq!(ns_to_ticks(1_000), 2_000);
    }
}
