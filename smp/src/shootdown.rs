//! TLB shootdown: asking a set of CPUs to flush their TLBs, all at once, and waiting until
//! every one has.
//!
//! Each CPU has two counters: how many flushes it has been asked for, and how many of those
//! its last flush covered. A flusher adds one to each target's first counter (its ticket),
//! sends every target the call-function IPI, and only then waits for each target's second
//! counter to reach its ticket. A target, wherever it takes calls (its IPI handler, or any
//! spin loop that waits for another CPU), reads what it was asked, flushes once and marks
//! all of it done: one flush serves every flusher that asked before it began. So a flush
//! of S CPUs costs the slowest target's next chance to take calls, however many other
//! CPUs flush the same targets at once. This is Xen's `flush_area_mask` (one request to a
//! mask of CPUs, each acknowledging) and Linux's `flush_tlb_multi`, cut down to full
//! flushes.
//!
//! It replaced a call through each target's one-slot mailbox, waited for one target at a
//! time: with F vCPUs of a guest flushing and S CPUs in long continued hypercalls (taking
//! calls only between continuations), a flush waited up to about F × S continuation
//! intervals with interrupts off, which on a machine of dozens of CPUs reaches the watchdog
//! (`the_flushers_of_one_round_are_all_served_by_it` below).
//!
//! Ordering: the flusher's page-table writes happen before its ticket (`fetch_add`,
//! AcqRel); the target's flush comes after it read the ticket (Acquire), so the flush drops
//! every translation the writes removed; its `done` store (Release) is what the flusher's
//! wait reads (Acquire).

use core::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// One CPU's two counters.
struct Slot {
    /// Flushes asked of this CPU so far.
    asked: CachePadded<AtomicU64>,
    /// How many of them its last flush covered.
    done: CachePadded<AtomicU64>,
}

/// The shootdown counters of `N` CPUs.
pub struct Board<const N: usize> {
    slots: [Slot; N],
}

impl<const N: usize> Board<N> {
    /// Counters with nothing asked.
    pub const fn new() -> Self {
        Board {
            slots: [const {
                Slot {
                    asked: CachePadded::new(AtomicU64::new(0)),
                    done: CachePadded::new(AtomicU64::new(0)),
                }
            }; N],
        }
    }

    /// Asks CPU `target` for a flush; returns the ticket its flushes must reach.
    fn ask(&self, target: usize) -> u64 {
        self.slots[target].asked.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether CPU `target` has flushed since it was given `ticket`.
    fn served(&self, target: usize, ticket: u64) -> bool {
        self.slots[target].done.load(Ordering::Acquire) >= ticket
    }

    /// Serves what CPU `me` was asked, if anything: one `flush` for all of it. Called by `me`
    /// alone. Returns whether it flushed.
    pub fn serve(&self, me: usize, flush: impl FnOnce()) -> bool {
        let slot = &self.slots[me];
        let asked = slot.asked.load(Ordering::Acquire);
        if slot.done.load(Ordering::Relaxed) >= asked {
            return false;
        }
        flush();
        slot.done.fetch_max(asked, Ordering::Release);
        true
    }

    /// Flushes every CPU in `cpus`: `flush` itself where one is `me`; the others are each
    /// asked and `notify`d before any is waited for. Returns once every one has flushed,
    /// running `poll` while it waits (which must serve `me`'s own requests: two CPUs may
    /// flush each other at once, interrupts off).
    pub fn flush(
        &self,
        me: usize,
        cpus: impl Iterator<Item = usize>,
        flush: impl Fn(),
        mut notify: impl FnMut(usize),
        mut poll: impl FnMut(),
    ) {
        // 0: not asked (a ticket is at least 1).
        let mut tickets = [0u64; N];
        for cpu in cpus {
            if cpu == me {
                // Serving what this CPU was asked flushes it too (and frees those waiting
                // on it now, not at its next poll).
                if !self.serve(me, &flush) {
                    flush();
                }
            } else {
                tickets[cpu] = self.ask(cpu);
                notify(cpu);
            }
        }
        for (cpu, &ticket) in tickets.iter().enumerate() {
            while ticket != 0 && !self.served(cpu, ticket) {
                poll();
                core::hint::spin_loop();
            }
        }
    }
}

impl<const N: usize> Default for Board<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::time::{Duration, Instant};

    /// CPUs 0..S are targets that take calls only when the test opens a round (a CPU in a
    /// long continued hypercall, between two continuations); CPUs S..S+F flush all the
    /// targets at once. Once every flusher has asked, one round, in which each target takes
    /// calls once, must serve every flusher. (With one call per target mailbox, waited for
    /// one target at a time, a round served one flusher at one target: F × S rounds.)
    #[test]
    fn the_flushers_of_one_round_are_all_served_by_it() {
        const S: usize = 4;
        const F: usize = 4;
        let board = Arc::new(Board::<{ S + F }>::new());
        let flushes: Arc<Vec<AtomicUsize>> =
            Arc::new((0..S).map(|_| AtomicUsize::new(0)).collect());
        let asked = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let flushers: Vec<_> = (S..S + F)
            .map(|me| {
                let (board, asked, finished) = (board.clone(), asked.clone(), finished.clone());
                std::thread::spawn(move || {
                    board.flush(
                        me,
                        0..S,
                        || {},
                        |_| {
                            asked.fetch_add(1, Ordering::AcqRel);
                        },
                        std::thread::yield_now,
                    );
                    finished.fetch_add(1, Ordering::AcqRel);
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while asked.load(Ordering::Acquire) < S * F {
            assert!(
                Instant::now() < deadline,
                "the flushers never asked every target"
            );
            std::thread::yield_now();
        }
        // One round: each target takes calls once.
        for (cpu, count) in flushes.iter().enumerate() {
            board.serve(cpu, || {
                count.fetch_add(1, Ordering::Relaxed);
            });
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while finished.load(Ordering::Acquire) < F && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            finished.load(Ordering::Acquire),
            F,
            "one round of the targets taking calls left flushers waiting"
        );
        for f in flushers {
            f.join().unwrap();
        }
        for count in flushes.iter() {
            assert_eq!(
                count.load(Ordering::Relaxed),
                1,
                "one flush serves every asker"
            );
        }
    }

    /// Every "CPU" flushes every other one, over and over, serving its own requests while it
    /// waits: no deadlock (A waits on B while B waits on A), and no flush returns before
    /// each target flushed after it asked.
    #[test]
    fn cpus_flushing_each_other_neither_deadlock_nor_return_early() {
        const CPUS: usize = 5;
        const ROUNDS: usize = 300;
        let board = Arc::new(Board::<CPUS>::new());
        // Each CPU's flush count; a flusher checks each target's count grew past what it
        // read before asking.
        let flushed: Arc<Vec<AtomicU64>> = Arc::new((0..CPUS).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        // Set by a CPU whose assertion failed: the others, which may be waiting for it,
        // give up too, so that the test fails rather than hangs.
        let failed = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..CPUS)
            .map(|me| {
                let (board, flushed, stop, failed, finished) = (
                    board.clone(),
                    flushed.clone(),
                    stop.clone(),
                    failed.clone(),
                    finished.clone(),
                );
                std::thread::spawn(move || {
                    // Counts this CPU finished even when an assertion below unwinds it, and
                    // says so, so that the others stop waiting and the join reports it.
                    struct Finished(Arc<AtomicUsize>, Arc<AtomicBool>);
                    impl Drop for Finished {
                        fn drop(&mut self) {
                            if std::thread::panicking() {
                                self.1.store(true, Ordering::Release);
                            }
                            self.0.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    let finished = Finished(finished, failed.clone());
                    let flush = || {
                        flushed[me].fetch_add(1, Ordering::AcqRel);
                    };
                    let serve = || {
                        assert!(!failed.load(Ordering::Acquire), "another CPU failed");
                        board.serve(me, flush);
                    };
                    for _ in 0..ROUNDS {
                        let before: Vec<u64> =
                            flushed.iter().map(|f| f.load(Ordering::Acquire)).collect();
                        board.flush(
                            me,
                            0..CPUS,
                            flush,
                            |_| {},
                            || {
                                serve();
                                std::thread::yield_now();
                            },
                        );
                        for (cpu, f) in flushed.iter().enumerate() {
                            assert!(
                                f.load(Ordering::Acquire) > before[cpu],
                                "CPU {me}'s flush returned before CPU {cpu} flushed"
                            );
                        }
                    }
                    drop(finished);
                    while !stop.load(Ordering::Acquire) && !failed.load(Ordering::Acquire) {
                        board.serve(me, flush);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        while finished.load(Ordering::Acquire) < CPUS {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Release);
        for h in handles {
            h.join().unwrap();
        }
    }
}
