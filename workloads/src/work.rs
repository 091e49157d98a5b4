//! The unit of CPU work that the workloads count, and a small pseudo-random generator.
//!
//! A unit is a serial chain of xorshift steps: integer-only, no memory traffic, and no
//! instruction-level parallelism for the compiler or CPU to find, so its cost scales with
//! CPU time and nothing else. [`UNIT_ITERS`] sizes it to about 13 µs, both natively and under
//! QEMU TCG on the build machines (TCG translates this register-only loop well; measured in
//! a 0.5 s run: 39185 units in 503 ms of CPU), small enough that `work` resolves shares of a
//! 1 ms slice.

/// Xorshift steps in one unit.
pub const UNIT_ITERS: u64 = 8192;

/// One xorshift64 step (Marsaglia, "Xorshift RNGs", 2003: shifts 13, 7, 17).
#[inline(always)]
pub fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Runs `iters` xorshift steps from `state` and returns the new state. The caller keeps the
/// state, so the optimiser cannot drop the work.
#[inline(never)]
pub fn unit(state: u64, iters: u64) -> u64 {
    let mut x = core::hint::black_box(state) | 1;
    for _ in 0..core::hint::black_box(iters) {
        x = xorshift(x);
    }
    core::hint::black_box(x)
}

/// A pseudo-random generator for workload timing (not for anything else).
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (a zero seed is replaced, xorshift has no zero orbit).
    pub fn new(seed: u64) -> Self {
        Rng(xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = xorshift(self.0);
        self.0
    }

    /// A value in `0..=max`.
    pub fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            self.next_u64()
        } else {
            self.next_u64() % (max + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_deterministic_and_nontrivial() {
        assert_eq!(unit(7, 100), unit(7, 100));
        assert_ne!(unit(7, 100), unit(7, 101));
        assert_ne!(unit(0, 10), 0);
    }

    #[test]
    fn rng_stays_in_range_and_varies() {
        let mut r = Rng::new(0);
        let values: Vec<u64> = (0..1000).map(|_| r.up_to(9)).collect();
        assert!(values.iter().all(|&v| v <= 9));
        assert!((0..=9).all(|d| values.contains(&d)));
        assert_eq!(Rng::new(5).next_u64(), Rng::new(5).next_u64());
    }

    #[test]
    fn unit_cost_natively() {
        // Not an assertion on speed: prints what a unit costs on this host, for sizing
        // UNIT_ITERS (TCG ran it at about the same speed on the build machines).
        let start = std::time::Instant::now();
        let mut x = 1;
        for _ in 0..1000 {
            x = unit(x, UNIT_ITERS);
        }
        let per_unit = start.elapsed() / 1000;
        println!("one unit ({UNIT_ITERS} steps) natively: {per_unit:?} ({x:x})");
    }
}
