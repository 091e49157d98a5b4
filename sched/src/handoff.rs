//! A spin lock whose contended release hands the processor to the waiter: every runqueue
//! lock, the locks CPUs wait for on their decisions (credit2's shared runqueues, and the
//! per-CPU runqueues of `runq` that the other policies steal from).
//!
//! Why. On hardware a CPU that waits for a spin lock spins until the holder, running at the
//! same time, lets go: a few hundred nanoseconds. Where virtual CPUs take turns on fewer
//! real ones the holder may not be running at all: then the waiter's spinning is useless
//! until the holder gets its turn back and releases, and the holder, once it has the
//! processor, keeps it for its whole turn. QEMU's TCG with `-icount` (QEMU 7.2: one host
//! thread runs all the emulated CPUs in turn, each until the machine's next timer deadline)
//! is that case: a waiter's `pause` ends its turn (QEMU's `do_pause`: "just let another CPU
//! run"), and the holder then runs on, lock released, to its next deadline. With credit2 at
//! 1024 domains on 2 CPUs that was the other CPU's next slice end, 500 µs away, about 120
//! times a second (`sched/README.md`, "what each policy does as load grows").
//!
//! So a waiter says it waits, and a holder that finds a waiter when it lets go executes one
//! `pause` itself (`core::hint::spin_loop`): a few dozen cycles on hardware, and the end of
//! its turn under emulation, which passes the processor to the waiter now. It is the
//! paravirtual spin lock's idea (Linux's `pv_kick` on unlock of a lock whose waiter
//! halted; Xen's `xen_unlock_kick`) with the one yield an emulated x86 CPU has.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use spin::mutex::{SpinMutex, SpinMutexGuard};

/// A [`SpinMutex`] whose contended release yields once (see the module's comment).
#[derive(Debug, Default)]
pub struct HandoffMutex<T> {
    inner: SpinMutex<T>,
    /// Set by a CPU that found the lock held; the holder's release clears it and yields.
    waiting: AtomicBool,
}

impl<T> HandoffMutex<T> {
    /// An unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        HandoffMutex { inner: SpinMutex::new(value), waiting: AtomicBool::new(false) }
    }

    /// Takes the lock, spinning (with `pause`) while it is held, after saying so.
    pub fn lock(&self) -> HandoffGuard<'_, T> {
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            self.waiting.store(true, Ordering::Relaxed);
            while self.inner.is_locked() {
                core::hint::spin_loop();
            }
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<HandoffGuard<'_, T>> {
        self.inner.try_lock().map(|g| HandoffGuard { guard: Some(g), waiting: &self.waiting })
    }
}

/// The lock held; dropping it releases the lock and, if a CPU waited meanwhile, yields.
pub struct HandoffGuard<'a, T> {
    /// Always `Some` until the drop.
    guard: Option<SpinMutexGuard<'a, T>>,
    waiting: &'a AtomicBool,
}

impl<T> Deref for HandoffGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl<T> DerefMut for HandoffGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl<T> Drop for HandoffGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // A plain load first: uncontended releases (nearly all) write nothing.
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::Relaxed) {
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_is_recorded_and_the_contended_release_clears_it() {
        let m = HandoffMutex::new(1);
        let g = m.lock();
        assert!(m.try_lock().is_none());
        assert!(!m.waiting.load(Ordering::Relaxed), "try_lock does not wait");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| *m.lock() + 1);
            while !m.waiting.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            drop(g);
            assert_eq!(waiter.join().unwrap(), 2);
        });
        assert!(!m.waiting.load(Ordering::Relaxed), "the release took the flag");
        *m.lock() = 5;
        assert_eq!(*m.try_lock().unwrap(), 5);
    }
}
