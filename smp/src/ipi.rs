//! Inter-processor interrupts: reschedule, and running a function on another CPU.
//!
//! Call-function uses one mailbox per target CPU (Linux's `smp_call_function_single`, cut
//! down to one slot): a caller claims the target's mailbox (IDLE → CLAIMED), writes the
//! function and argument, publishes it (→ PENDING) and sends [`crate::vectors::CALL_FUNCTION`].
//! The target, in its IPI handler, takes the call (PENDING → RUNNING), runs it, and either
//! frees the mailbox (→ IDLE) or, when the caller waits, reports completion (→ DONE) and
//! lets the caller free it. Callers to the same target queue on the claim.
//!
//! TLB flushes do not go through the mailboxes: [`flush_tlbs`] asks every target at once
//! and each target's one flush serves every flusher that asked it (`crate::shootdown`). They
//! share the call-function IPI, and a CPU takes both wherever it takes calls.
//!
//! The hypervisor runs with interrupts off, so two CPUs calling each other would each wait
//! for an IPI the other never takes. Every wait here therefore polls the waiting CPU's own
//! mailbox and flush requests; any spin loop in the kernel that may wait on another CPU
//! should do the same by calling [`handle_call_function_ipi`].

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::percpu::{PerCpu, cpu_index};
use crate::shootdown::Board;
use crate::{MAX_CPUS, apic, vectors};

const IDLE: u32 = 0;
const CLAIMED: u32 = 1;
const PENDING: u32 = 2;
const RUNNING: u32 = 3;
const DONE: u32 = 4;

/// A function run on another CPU; receives the caller's argument.
pub type CallFn = fn(usize);

/// One CPU's call-function mailbox.
pub struct Mailbox {
    state: AtomicU32,
    wait: AtomicBool,
    func: AtomicPtr<()>,
    arg: AtomicPtr<()>,
}

impl Mailbox {
    /// An empty mailbox.
    pub const fn new() -> Mailbox {
        Mailbox {
            state: AtomicU32::new(IDLE),
            wait: AtomicBool::new(false),
            func: AtomicPtr::new(core::ptr::null_mut()),
            arg: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Posts `func(arg)` to this mailbox and calls `notify` (which sends the IPI). With `wait`,
    /// returns only when the function has run. `poll` runs while spinning (it should service
    /// the calling CPU's own mailbox).
    pub fn call(
        &self,
        func: CallFn,
        arg: usize,
        wait: bool,
        notify: impl FnOnce(),
        mut poll: impl FnMut(),
    ) {
        while self
            .state
            .compare_exchange_weak(IDLE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            poll();
            core::hint::spin_loop();
        }
        self.func.store(func as *mut (), Ordering::Relaxed);
        self.arg.store(arg as *mut (), Ordering::Relaxed);
        self.wait.store(wait, Ordering::Relaxed);
        self.state.store(PENDING, Ordering::Release);
        notify();
        if wait {
            while self.state.load(Ordering::Acquire) != DONE {
                poll();
                core::hint::spin_loop();
            }
            self.state.store(IDLE, Ordering::Release);
        }
    }

    /// Runs the posted call, if any. Returns whether one ran.
    pub fn handle(&self) -> bool {
        if self
            .state
            .compare_exchange(PENDING, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let func = self.func.load(Ordering::Relaxed);
        let arg = self.arg.load(Ordering::Relaxed) as usize;
        let wait = self.wait.load(Ordering::Relaxed);
        // SAFETY: `func` was stored by `call` from a `CallFn` (a plain fn pointer) and the
        // PENDING state, read with Acquire, makes that store visible.
        let func: CallFn = unsafe { core::mem::transmute::<*mut (), CallFn>(func) };
        func(arg);
        self.state
            .store(if wait { DONE } else { IDLE }, Ordering::Release);
        true
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

static MAILBOXES: PerCpu<Mailbox> =
    PerCpu::from_array([const { CachePadded::new(Mailbox::new()) }; MAX_CPUS]);

/// Runs `func(arg)` on CPU `cpu` (directly if that is the caller). With `wait`, returns after
/// it ran; without, returns once it is posted (it runs when the target next takes IPIs or
/// polls). Returns `false`, doing nothing, if `cpu` is not online.
pub fn call_on(cpu: usize, func: CallFn, arg: usize, wait: bool) -> bool {
    let me = cpu_index();
    if cpu == me {
        func(arg);
        return true;
    }
    if !crate::startup::is_online(cpu) {
        return false;
    }
    let dest = crate::startup::apic_id_of(cpu);
    MAILBOXES.get(cpu).call(
        func,
        arg,
        wait,
        || apic::send_ipi(dest, vectors::CALL_FUNCTION),
        || {
            handle_call_function_ipi();
            run_wait_hook();
        },
    );
    true
}

/// A function the kernel sets once and any CPU may then run (a plain `fn()`, kept as a
/// pointer: `AtomicPtr` is what a static can hold).
struct Hook(AtomicPtr<()>);

impl Hook {
    const fn new() -> Hook {
        Hook(AtomicPtr::new(core::ptr::null_mut()))
    }

    fn set(&self, hook: fn()) {
        self.0.store(hook as *mut (), Ordering::Release);
    }

    /// The function set, if any.
    fn get(&self) -> Option<fn()> {
        let hook = self.0.load(Ordering::Acquire);
        // SAFETY: only `set` stores here, and it stores a `fn()`.
        (!hook.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), fn()>(hook) })
    }
}

/// What a CPU runs, besides serving calls, while it waits in a spin loop for another CPU.
static WAIT_HOOK: Hook = Hook::new();

/// Sets what a CPU runs while it waits for another one in [`call_on`] (the kernel's
/// watchdog: a CPU waiting for a stuck one must still be able to report it).
pub fn set_wait_hook(hook: fn()) {
    WAIT_HOOK.set(hook);
}

/// Runs the wait hook, if one is set. Every spin loop that waits for another CPU calls it.
pub fn run_wait_hook() {
    if let Some(hook) = WAIT_HOOK.get() {
        hook();
    }
}

/// Every CPU's TLB-flush requests ([`flush_tlbs`]).
static TLB: Board<MAX_CPUS> = Board::new();
/// What flushes this CPU's TLB ([`set_tlb_flush`]).
static TLB_FLUSH: Hook = Hook::new();

/// Sets what flushes a CPU's TLB, run on the CPU to flush (the kernel sets it at boot,
/// before any domain exists). [`flush_tlbs`] refuses to run without it.
pub fn set_tlb_flush(flush: fn()) {
    TLB_FLUSH.set(flush);
}

/// Flushes the TLB of every CPU in `cpus` (the calling one directly), and returns once each
/// has: every other target is asked and sent the call-function IPI before any is waited
/// for, and while it waits the calling CPU serves its own calls and flushes. Offline CPUs
/// are skipped. Panics if [`set_tlb_flush`] was never called.
pub fn flush_tlbs(cpus: impl Iterator<Item = usize>) {
    let flush = TLB_FLUSH
        .get()
        .expect("set_tlb_flush comes before any TLB flush");
    TLB.flush(
        cpu_index(),
        cpus.filter(|&cpu| crate::startup::is_online(cpu)),
        flush,
        |cpu| apic::send_ipi(crate::startup::apic_id_of(cpu), vectors::CALL_FUNCTION),
        || {
            handle_call_function_ipi();
            run_wait_hook();
        },
    );
}

/// Serves the TLB flushes asked of the calling CPU, if any. Returns whether it flushed.
fn serve_tlb_flushes() -> bool {
    TLB_FLUSH
        .get()
        .is_some_and(|flush| TLB.serve(cpu_index(), flush))
}

/// Serves the TLB flushes asked of the calling CPU and runs the call posted to it, if any.
/// The kernel calls it from its [`vectors::CALL_FUNCTION`] handler (then sends the EOI), and
/// from any spin loop that might wait for another CPU. Returns whether it did either.
pub fn handle_call_function_ipi() -> bool {
    hold_here_if_asked();
    let flushed = serve_tlb_flushes();
    MAILBOXES.this().handle() || flushed
}

/// Set while [`hold_others`] holds every other CPU.
static HOLD: AtomicBool = AtomicBool::new(false);
/// The CPU holding the others (usize::MAX: none).
static HOLDER: AtomicUsize = AtomicUsize::new(usize::MAX);
/// CPUs spinning in [`hold_here_if_asked`].
static HELD: AtomicUsize = AtomicUsize::new(0);
/// What a held CPU runs while it spins (the kernel's: "this CPU is held, not stuck").
static HOLD_HOOK: Hook = Hook::new();

/// Sets what a CPU runs while [`hold_others`] holds it.
pub fn set_hold_hook(hook: fn()) {
    HOLD_HOOK.set(hook);
}

/// Runs `f` while every other online CPU spins with interrupts off (Linux's `stop_machine`,
/// cut down), so that what `f` reads is one instant's. The hold is a flag and a plain
/// call-function IPI, not a mailbox call: a CPU takes it wherever it takes calls (its IPI
/// handler, or any spin loop that waits for another CPU), and posting it never waits for a
/// busy mailbox. (It once went through the mailboxes: a CPU held while its own TLB-flush
/// call to another CPU was still DONE but not yet collected kept that CPU's mailbox busy, and
/// the holder waited on it forever; found by the fuzzer on 4 CPUs.) The caller must make
/// sure no two CPUs hold at once.
pub fn hold_others<R>(f: impl FnOnce() -> R) -> R {
    let me = cpu_index();
    HOLDER.store(me, Ordering::Release);
    HOLD.store(true, Ordering::Release);
    let mut others = 0;
    for cpu in crate::startup::online().iter().filter(|&c| c != me) {
        apic::send_ipi(crate::startup::apic_id_of(cpu), vectors::CALL_FUNCTION);
        others += 1;
    }
    while HELD.load(Ordering::Acquire) < others {
        // A CPU on its way here may be waiting for this one (a TLB flush, a call); this CPU
        // is the holder, so it is not held itself.
        handle_call_function_ipi();
        run_wait_hook();
        core::hint::spin_loop();
    }
    let result = f();
    HOLD.store(false, Ordering::Release);
    while HELD.load(Ordering::Acquire) != 0 {
        run_wait_hook();
        core::hint::spin_loop();
    }
    HOLDER.store(usize::MAX, Ordering::Release);
    result
}

/// Whether another CPU is holding the others ([`hold_others`]) and this one is yet to stop.
pub fn hold_asked() -> bool {
    HOLD.load(Ordering::Acquire) && HOLDER.load(Ordering::Acquire) != cpu_index()
}

/// Spins here while another CPU holds this one ([`hold_others`]).
fn hold_here_if_asked() {
    if !HOLD.load(Ordering::Acquire) || HOLDER.load(Ordering::Acquire) == cpu_index() {
        return;
    }
    HELD.fetch_add(1, Ordering::AcqRel);
    let hook = HOLD_HOOK.get();
    while HOLD.load(Ordering::Acquire) {
        if let Some(hook) = hook {
            hook();
        }
        core::hint::spin_loop();
    }
    HELD.fetch_sub(1, Ordering::AcqRel);
}

/// Asks CPU `cpu` to reschedule: the kernel's [`vectors::RESCHEDULE`] handler only sends the
/// EOI and marks the CPU's softirq; the work happens on the way back to a guest. Returns
/// `false`, sending nothing, if `cpu` is not online (an unknown id could be the broadcast).
pub fn send_reschedule(cpu: usize) -> bool {
    if !crate::startup::is_online(cpu) {
        return false;
    }
    apic::send_ipi(crate::startup::apic_id_of(cpu), vectors::RESCHEDULE);
    true
}

/// Sends an NMI to CPU `cpu`, which takes it even with interrupts off (the watchdog's way to
/// ask a stuck CPU where it is). Returns `false`, sending nothing, if `cpu` is not online.
pub fn send_nmi(cpu: usize) -> bool {
    if !crate::startup::is_online(cpu) {
        return false;
    }
    const DELIVERY_NMI: u32 = 0b100 << 8;
    apic::send_icr(crate::startup::apic_id_of(cpu), DELIVERY_NMI);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize};

    fn bump(arg: usize) {
        // SAFETY: the tests pass the address of an AtomicU64 that outlives every call.
        unsafe { &*(arg as *const AtomicU64) }.fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn waiting_call_runs_before_return() {
        let mbox = Arc::new(Mailbox::new());
        let stop = Arc::new(AtomicBool::new(false));
        let target = {
            let (mbox, stop) = (mbox.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if !mbox.handle() {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let counter = AtomicU64::new(0);
        for i in 1..=1000 {
            mbox.call(
                bump,
                &counter as *const _ as usize,
                true,
                || {},
                std::thread::yield_now,
            );
            assert_eq!(counter.load(Ordering::Relaxed), i);
        }
        stop.store(true, Ordering::Relaxed);
        target.join().unwrap();
    }

    /// Every "CPU" calls every other one, waiting, while polling its own mailbox: the
    /// protocol must neither deadlock (A waits on B while B waits on A) nor lose a call.
    #[test]
    fn all_to_all_calls_do_not_deadlock() {
        const CPUS: usize = 6;
        const CALLS: usize = 200;
        let boxes: Arc<Vec<Mailbox>> = Arc::new((0..CPUS).map(|_| Mailbox::new()).collect());
        let counters: Arc<Vec<AtomicU64>> =
            Arc::new((0..CPUS).map(|_| AtomicU64::new(0)).collect());
        let finished = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..CPUS)
            .map(|me| {
                let (boxes, counters, finished) =
                    (boxes.clone(), counters.clone(), finished.clone());
                std::thread::spawn(move || {
                    for i in 0..CALLS {
                        for target in (0..CPUS).filter(|&t| t != me) {
                            let wait = i % 2 == 0;
                            boxes[target].call(
                                bump,
                                &counters[target] as *const _ as usize,
                                wait,
                                || {},
                                || {
                                    boxes[me].handle();
                                    // The host has fewer cores than threads: let others run.
                                    std::thread::yield_now();
                                },
                            );
                        }
                    }
                    finished.fetch_add(1, Ordering::AcqRel);
                    // Keep serving others until everyone is done, then drain.
                    while finished.load(Ordering::Acquire) < CPUS {
                        boxes[me].handle();
                        std::thread::yield_now();
                    }
                    while boxes[me].handle() {}
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        for c in counters.iter() {
            assert_eq!(c.load(Ordering::Relaxed), ((CPUS - 1) * CALLS) as u64);
        }
    }
}
