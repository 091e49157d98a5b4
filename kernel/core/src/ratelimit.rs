//! A token bucket: how much of a shared resource one domain may take per unit of time.
//!
//! Used for guest console output, which every domain writes to one serial port (through
//! the console's ring, `conring`): without a limit, one guest printing in a loop holds the
//! console for everybody (Xen rate-limits guest console writes for the same reason). The bucket holds
//! up to `burst` tokens and refills at `per_sec` a second; a take that does not fit is
//! refused whole, and the caller reports it to the guest.

/// A token bucket.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    burst: u64,
    per_sec: u64,
    tokens: u64,
    /// When `tokens` was last brought up to date (ns).
    at_ns: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, refilling at `per_sec`.
    pub const fn new(burst: u64, per_sec: u64) -> TokenBucket {
        TokenBucket {
            burst,
            per_sec,
            tokens: burst,
            at_ns: 0,
        }
    }

    /// Takes `n` tokens at `now_ns` if there are that many; returns whether it did.
    pub fn take(&mut self, n: u64, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.at_ns);
        // Refill in whole tokens, keeping the remainder of the time for the next call.
        let refill = (u128::from(elapsed) * u128::from(self.per_sec) / 1_000_000_000) as u64;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(self.burst);
            let used_ns =
                (u128::from(refill) * 1_000_000_000 / u128::from(self.per_sec.max(1))) as u64;
            self.at_ns = self.at_ns.saturating_add(used_ns).min(now_ns);
        }
        if self.tokens == self.burst {
            self.at_ns = now_ns; // full: time spent full earns nothing
        }
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(1000, 100);
        assert!(b.take(600, 0));
        assert!(b.take(400, 0));
        assert!(!b.take(1, 0));
        // 100 a second: 10 ms earn one token.
        assert!(!b.take(1, 9_999_999));
        assert!(b.take(1, 10_000_000));
        assert!(!b.take(1, 10_000_001));
        assert!(b.take(50, 510_000_000));
        assert!(!b.take(1, 510_000_000));
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let mut b = TokenBucket::new(100, 1_000_000);
        assert!(b.take(100, 0));
        assert!(b.take(100, 10_000_000_000));
        assert!(!b.take(1, 10_000_000_000));
    }

    #[test]
    fn a_flood_gets_the_rate_and_no_more() {
        let mut b = TokenBucket::new(4096, 8192);
        let mut taken = 0;
        for t in 0..10_000u64 {
            if b.take(256, t * 1_000_000) {
                taken += 256;
            }
        }
        // 10 s at 8 KiB/s plus the 4 KiB burst, to within one write.
        assert!((taken as i64 - (4096 + 10 * 8192)).abs() <= 256, "{taken}");
    }
}
