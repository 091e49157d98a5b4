//! Grace periods (Xen's `xen/common/rcupdate.c`, after Linux's classic RCU): how the
//! hypervisor knows that no CPU can still be using an object it has made unreachable, so
//! that it may free it. The hot paths then reach such objects by plain pointer, with no lock
//! and no reference count.
//!
//! The hypervisor runs with interrupts off and is never preempted, so a CPU holds a pointer
//! it read from shared state only while it is in the hypervisor: never once it has gone back
//! to a guest, nor at the top of its idle loop. Those are its *quiescent points*. The
//! hypervisor reports one ([`GracePeriods::quiescent`]) where the CPU holds nothing: at every
//! entry from a guest (the stretch in the guest just ended was quiescent) and at the top of
//! every turn of the idle loop.
//!
//! An updater first unpublishes the object (no shared state leads to it any more), then
//! begins a grace period ([`GracePeriods::begin`]), and frees the object once the grace
//! period has ended ([`GracePeriods::ended`]): every other online CPU has reported a
//! quiescent point *since the grace period began* (Xen's `rcu_ctrlblk.cpumask`, each CPU
//! clearing its bit in `cpu_quiet`). The rules, each tested below:
//!
//! 1. A report counts only if the CPU read the grace period's number at the quiescent point
//!    itself (a CPU reports the number it reads, [`GracePeriods::quiescent`]): a count that
//!    merely moved (the watchdog's, which `touch_watchdog` moves without leaving the
//!    hypervisor) proves nothing, and a report made before the grace period began covers
//!    only pointers the CPU read before, possibly of the object.
//! 2. A report of a later grace period covers the earlier ones (reports only grow).
//! 3. The waiting CPU does not wait for itself: the caller holds no pointer to what it frees
//!    (Xen's `call_rcu` caller likewise).
//! 4. A CPU that is not online holds nothing and is not waited for (Xen's
//!    `rcu_start_batch` waits only for `cpu_online_map`).
//!
//! Why a report proves what it must (memory ordering): [`GracePeriods::begin`] is a
//! sequentially consistent read-modify-write made after the unpublishing stores, and a CPU's
//! report reads the grace period's number with acquire ordering, so every load the CPU
//! makes after its report sees the object unpublished; the report itself is a release
//! store, so every use the CPU made of the object before it happens before the waiter's
//! acquire load that sees the report, and so before the free.
//!
//! An idle CPU is not counted quiescent by a flag: in the hypervisor interrupts arrive only
//! in the idle loop's `hlt`, and their handlers (a timer's, which asks the policy for its
//! tick) do read shared pointers. The waiter instead interrupts every CPU that has not
//! reported (Xen's `force_quiescent_state` raises the RCU softirq on them); an idle one
//! wakes, returns to the top of its idle loop, and reports there.

use core::sync::atomic::{AtomicU64, Ordering};

/// The grace periods of a machine of `CPUS` CPUs (numbered `0..CPUS`). A plain `static`
/// (`new` is `const`): the hot paths find it with no indirection.
pub struct GracePeriods<const CPUS: usize> {
    /// The number of the last grace period begun (0: none yet).
    begun: AtomicU64,
    /// For each CPU, the last grace period it reported a quiescent point for.
    reported: [AtomicU64; CPUS],
}

impl<const CPUS: usize> Default for GracePeriods<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CPUS: usize> GracePeriods<CPUS> {
    /// No grace period begun yet.
    pub const fn new() -> Self {
        GracePeriods {
            begun: AtomicU64::new(0),
            reported: [const { AtomicU64::new(0) }; CPUS],
        }
    }

    /// Begins a grace period; returns its number. Called after the object to free was made
    /// unreachable (the stores that did so come before this in every CPU's view).
    pub fn begin(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// CPU `cpu` is at a quiescent point (it holds no pointer read from shared state):
    /// it reports the grace period begun last, which covers every earlier one. Returns
    /// whether it had one to report. Cheap when there is none: two loads.
    pub fn quiescent(&self, cpu: usize) -> bool {
        let Some(mine) = self.reported.get(cpu) else {
            return false;
        };
        // Acquire: what the updater unpublished before `begin` is seen from here on.
        let begun = self.begun.load(Ordering::Acquire);
        if mine.load(Ordering::Relaxed) == begun {
            return false;
        }
        // Release: every use this CPU made of what it read before happens before a waiter's
        // look at this report.
        mine.store(begun, Ordering::Release);
        true
    }

    /// Whether CPU `cpu` has reported a quiescent point since grace period `g` began.
    pub fn passed(&self, g: u64, cpu: usize) -> bool {
        self.reported
            .get(cpu)
            .is_none_or(|r| r.load(Ordering::Acquire) >= g)
    }

    /// The CPUs grace period `g` still waits for, for a waiter on CPU `me`: every CPU that
    /// `online` says is up, but `me`, that has not reported since `g` began.
    pub fn waiting_on<'a>(
        &'a self,
        g: u64,
        me: usize,
        online: impl Fn(usize) -> bool + 'a,
    ) -> impl Iterator<Item = usize> + 'a {
        (0..CPUS).filter(move |&cpu| cpu != me && online(cpu) && !self.passed(g, cpu))
    }

    /// Whether grace period `g` has ended for a waiter on CPU `me` ([`Self::waiting_on`]
    /// finds no CPU).
    pub fn ended(&self, g: u64, me: usize, online: impl Fn(usize) -> bool) -> bool {
        self.waiting_on(g, me, online).next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    const ALL: fn(usize) -> bool = |_| true;

    #[test]
    fn a_report_made_before_the_grace_period_began_does_not_end_it() {
        let gp = GracePeriods::<2>::new();
        // CPU 1 reports (nothing begun: nothing to report), then again after an earlier
        // grace period, then the one a waiter on CPU 0 waits for begins.
        assert!(!gp.quiescent(1));
        let g0 = gp.begin();
        assert!(gp.quiescent(1));
        assert!(gp.ended(g0, 0, ALL));
        let g = gp.begin();
        assert!(!gp.ended(g, 0, ALL), "CPU 1 reported only before it began");
        assert_eq!(gp.waiting_on(g, 0, ALL).collect::<Vec<_>>(), [1]);
        assert!(gp.quiescent(1));
        assert!(gp.ended(g, 0, ALL));
        // Nothing new: nothing to report.
        assert!(!gp.quiescent(1));
    }

    #[test]
    fn a_report_of_a_later_grace_period_ends_the_earlier_ones() {
        let gp = GracePeriods::<3>::new();
        let g1 = gp.begin();
        let g2 = gp.begin();
        gp.quiescent(1);
        gp.quiescent(2);
        assert!(gp.ended(g1, 0, ALL));
        assert!(gp.ended(g2, 0, ALL));
        let g3 = gp.begin();
        assert!(gp.ended(g2, 0, ALL), "a grace period stays ended");
        assert!(!gp.ended(g3, 0, ALL));
    }

    #[test]
    fn the_waiter_does_not_wait_for_itself() {
        let gp = GracePeriods::<2>::new();
        let g = gp.begin();
        gp.quiescent(1);
        assert!(gp.ended(g, 0, ALL));
        // A waiter on CPU 1 waits for CPU 0, which has not reported.
        assert!(!gp.ended(g, 1, ALL));
    }

    #[test]
    fn an_offline_cpu_is_not_waited_for() {
        let gp = GracePeriods::<4>::new();
        let g = gp.begin();
        gp.quiescent(1);
        assert!(!gp.ended(g, 0, ALL));
        assert_eq!(gp.waiting_on(g, 0, ALL).collect::<Vec<_>>(), [2, 3]);
        assert!(gp.ended(g, 0, |c| c < 2));
        // A CPU with no slot (past the machine) has nothing to report and is not waited for.
        assert!(!gp.quiescent(9));
        assert!(gp.passed(g, 9));
    }

    /// Readers on threads standing for CPUs: each, between two quiescent points, reads the
    /// current object's number and checks, before and after using it, that it has not been
    /// freed; the updater replaces the object, waits for a grace period, frees the old one.
    /// A grace period that ends too early shows as a reader finding its object freed.
    #[test]
    fn no_reader_sees_its_object_freed_under_concurrent_updates() {
        const READERS: usize = 2;
        const UPDATES: usize = 100;
        let gp = Arc::new(GracePeriods::<{ READERS + 1 }>::new());
        let current = Arc::new(AtomicUsize::new(0));
        let freed: Arc<Vec<AtomicBool>> =
            Arc::new((0..=UPDATES).map(|_| AtomicBool::new(false)).collect());
        let done = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (1..=READERS)
            .map(|cpu| {
                let (gp, current, freed, done, violations) = (
                    gp.clone(),
                    current.clone(),
                    freed.clone(),
                    done.clone(),
                    violations.clone(),
                );
                std::thread::spawn(move || {
                    while !done.load(Ordering::Acquire) {
                        gp.quiescent(cpu);
                        let object = current.load(Ordering::Acquire);
                        for _ in 0..50 {
                            if freed[object].load(Ordering::Acquire) {
                                violations.fetch_add(1, Ordering::Relaxed);
                            }
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        for old in 0..UPDATES {
            current.store(old + 1, Ordering::Release);
            let g = gp.begin();
            let waited = std::time::Instant::now();
            while !gp.ended(g, 0, ALL) {
                assert!(
                    waited.elapsed().as_secs() < 10,
                    "a grace period never ended"
                );
                std::thread::yield_now();
            }
            freed[old].store(true, Ordering::Release);
        }
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(violations.load(Ordering::Relaxed), 0);
    }
}
