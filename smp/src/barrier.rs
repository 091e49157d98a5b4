//! A cross-CPU barrier: every participant waits until all have arrived.
//!
//! Sense-reversing (Mellor-Crummey and Scott), with the sense widened to a generation
//! counter so a participant needs no local state: read the generation, arrive; the last to
//! arrive resets the count and advances the generation, which releases the others. The
//! count is reset *before* the generation moves, so a fast CPU that leaves and re-enters the
//! barrier at once counts towards the next round, never the current one. Spinning only reads
//! the shared generation (one cache line, shared state) until it changes.
//!
//! The hypervisor runs with interrupts off, so a CPU spinning here cannot take an IPI:
//! [`Barrier::wait_with`] runs a poll function while spinning (pass
//! [`crate::ipi::handle_call_function_ipi`] when others may need this CPU to do work before
//! they can arrive).

use core::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// A reusable barrier for a fixed number of participants.
pub struct Barrier {
    arrived: CachePadded<AtomicUsize>,
    generation: CachePadded<AtomicUsize>,
    participants: AtomicUsize,
}

impl Barrier {
    /// A barrier for `participants` (at least 1).
    pub const fn new(participants: usize) -> Barrier {
        Barrier {
            arrived: CachePadded::new(AtomicUsize::new(0)),
            generation: CachePadded::new(AtomicUsize::new(0)),
            participants: AtomicUsize::new(if participants == 0 { 1 } else { participants }),
        }
    }

    /// Changes the number of participants (e.g. to the CPUs that came online). Only while
    /// nobody is waiting.
    pub fn set_participants(&self, participants: usize) {
        self.participants
            .store(participants.max(1), Ordering::Relaxed);
    }

    /// The number of participants.
    pub fn participants(&self) -> usize {
        self.participants.load(Ordering::Relaxed)
    }

    /// Waits until every participant has called `wait` for this round. Returns `true` on
    /// exactly one participant per round (the last to arrive).
    pub fn wait(&self) -> bool {
        self.wait_with(|| {})
    }

    /// As [`Barrier::wait`], calling `poll` while spinning.
    pub fn wait_with(&self, mut poll: impl FnMut()) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        let n = self.participants.load(Ordering::Relaxed);
        // AcqRel: our writes before the barrier are released to the last arriver, which
        // releases them all again through the generation store.
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation
                .store(generation.wrapping_add(1), Ordering::Release);
            return true;
        }
        while self.generation.load(Ordering::Acquire) == generation {
            poll();
            core::hint::spin_loop();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    /// Every thread adds to a per-round slot before the barrier and checks after it that
    /// the slot holds everyone's contribution: a thread released early would see less.
    fn run(threads: usize, rounds: usize) {
        let barrier = Arc::new(Barrier::new(threads));
        let sums: Arc<Vec<AtomicU64>> = Arc::new((0..rounds).map(|_| AtomicU64::new(0)).collect());
        let leaders = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (barrier, sums, leaders) = (barrier.clone(), sums.clone(), leaders.clone());
                std::thread::spawn(move || {
                    for (round, sum) in sums.iter().enumerate() {
                        sum.fetch_add(1, Ordering::Relaxed);
                        if barrier.wait_with(std::thread::yield_now) {
                            leaders.fetch_add(1, Ordering::Relaxed);
                        }
                        assert_eq!(sum.load(Ordering::Relaxed), threads as u64, "round {round}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(leaders.load(Ordering::Relaxed), rounds as u64);
    }

    #[test]
    fn one_participant_never_waits() {
        run(1, 100);
    }

    #[test]
    fn two_participants() {
        run(2, 2000);
    }

    #[test]
    fn many_participants_many_rounds() {
        run(9, 300);
    }

    #[test]
    fn oversubscribed() {
        run(64, 20);
    }
}
