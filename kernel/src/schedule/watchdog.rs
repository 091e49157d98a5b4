//! The watchdog's hardware side: every CPU, on its timer and in its wait loops, looks at the
//! next online CPU's count of entries and exits (`arch::percpu::transitions_of`); if that
//! count has not moved for [`stuck_limit_ns`] (the rule is `kerncore::watchdog`), the
//! stuck CPU is asked by NMI where it is and the run stops with a failure.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kerncore::watchdog::{self, Watch};
use spin::{Mutex, Once};

use crate::{arch, time};

/// Each CPU's watch on its neighbour (in its `super::CpuState`): its own CPU alone touches
/// it, from the timer and from wait loops (which may run while the CPU's scheduler state is
/// locked, hence a lock of its own).
#[derive(Default)]
pub(super) struct WatchState {
    /// When this CPU next looks at the CPU it watches ([`kerncore::watchdog`]).
    next_watch: AtomicU64,
    watch: Mutex<Watch>,
}

fn watch_state() -> &'static WatchState {
    &super::this_state().watch
}

/// When this CPU next looks at its neighbour (the hardware timer must fire by then).
pub(super) fn next_watch() -> u64 {
    watch_state().next_watch.load(Ordering::Relaxed)
}

/// The watchdog, every [`watchdog::PERIOD_NS`]: looks at the next online CPU's transition
/// count, and ends the run if that CPU has been in the hypervisor for
/// [`stuck_limit_ns`] without leaving: it is asked by NMI to report where it is, and
/// the machine stops with a failure either way.
///
/// Called at every reschedule: the test whether a look is due is all that runs then (and
/// all that is laid out with the hot code); the look, every [`watchdog::PERIOD_NS`], is
/// [`look_at_neighbour`].
#[inline]
pub(super) fn watch_neighbour(cpu: usize, now: u64) {
    if !WATCHDOG_ARMED.load(Ordering::Relaxed) {
        return;
    }
    let state = watch_state();
    if now < state.next_watch.load(Ordering::Relaxed) {
        return;
    }
    look_at_neighbour(state, cpu, now);
}

/// [`watch_neighbour`]'s look, once due.
#[cold]
#[inline(never)]
fn look_at_neighbour(state: &WatchState, cpu: usize, now: u64) {
    let stuck = {
        state
            .next_watch
            .store(now + watchdog::PERIOD_NS, Ordering::Relaxed);
        let online = smp::startup::online();
        let Some(next) = online
            .iter()
            .find(|&c| c > cpu)
            .or_else(|| online.iter().next())
            .filter(|&c| c != cpu)
        else {
            return;
        };
        let Some(count) = arch::percpu::transitions_of(next) else {
            return;
        };
        state
            .watch
            .lock()
            .observe(count, now, stuck_limit_ns())
            .map(|ns| (next, ns))
    };
    if let Some((victim, ns)) = stuck {
        crate::console::emergency();
        log::error!(
            "watchdog: CPU {victim} has been in the hypervisor for {} ms without leaving; \
             asking it where (NMI)",
            ns / 1_000_000
        );
        STUCK_CPU.store(victim, Ordering::Release);
        smp::ipi::send_nmi(victim);
        // Its NMI handler reports and stops the machine; if it cannot, stop it from here.
        let until = time::now_ns() + 50_000_000;
        while time::now_ns() < until {
            core::hint::spin_loop();
        }
        log::error!("watchdog: CPU {victim} did not answer its NMI; stopping");
        arch::exit(abi::tool::console::ExitCode::Failure);
    }
}

/// How long a CPU may stay in the hypervisor: [`watchdog::STUCK_NS`], or
/// [`watchdog::STUCK_NS_TCG`] under QEMU's TCG.
fn stuck_limit_ns() -> u64 {
    static LIMIT: Once<u64> = Once::new();
    *LIMIT.call_once(|| match arch::cpu::accelerator() {
        "tcg" => watchdog::STUCK_NS_TCG,
        _ => watchdog::STUCK_NS,
    })
}

/// Set once the machine has booted (boot itself keeps the bootstrap CPU busy for longer).
static WATCHDOG_ARMED: AtomicBool = AtomicBool::new(false);

/// Starts the watchdog: from now on every CPU watches the next one.
pub fn arm_watchdog() {
    smp::ipi::set_wait_hook(watch_while_waiting);
    // Held still for a snapshot: not stuck.
    smp::ipi::set_hold_hook(arch::percpu::touch_watchdog);
    WATCHDOG_ARMED.store(true, Ordering::Release);
}

/// Waits a moment for another CPU, from a spin loop: serves calls posted to this CPU (the
/// other CPU may be waiting for this one, e.g. for a TLB flush) and keeps watching the next
/// CPU, so that a CPU waiting for a stuck one can still report it.
pub fn wait_for_other_cpu() {
    smp::ipi::handle_call_function_ipi();
    watch_while_waiting();
    core::hint::spin_loop();
}

/// The watchdog's look at the next CPU, from a wait loop (`smp`'s wait hook).
pub fn watch_while_waiting() {
    watch_neighbour(super::this_cpu(), time::now_ns());
}

/// Whether the watchdog runs yet.
pub fn watchdog_armed() -> bool {
    WATCHDOG_ARMED.load(Ordering::Acquire)
}

/// The CPU the watchdog found stuck (usize::MAX: none): its NMI is the watchdog's.
static STUCK_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Whether an NMI on this CPU is the watchdog's (this CPU was found stuck).
pub fn watchdog_nmi() -> bool {
    STUCK_CPU.load(Ordering::Acquire) == super::this_cpu()
}
