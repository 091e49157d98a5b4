//! Grace periods on the machine (Xen's `xen/common/rcupdate.c`; the rule is
//! `kerncore::rcu`), and two ways for the hot paths to reach an object with no lock and no
//! reference count, because it is freed only a grace period after nothing leads to it:
//! [`RcuSlot`], a pointer that is replaced (the pools' policy instances), and [`Reached`], an
//! object reached through a `Weak` that its owner unlinks before it drops its last `Arc`
//! (a domain, through the bindings of its peers' event-channel ports).
//!
//! **Quiescent points.** A CPU holds a pointer read from shared state only while it is in
//! the hypervisor, which runs with interrupts off and is never preempted, and only inside a
//! read-side section ([`ReadSide`]) that the pointer borrows. It reports ([`quiescent`]) at
//! two points where it holds none, each in an outermost frame, so that no caller's frame
//! can be holding a section across it:
//! - every entry from a guest (`trap_dispatch`, for a frame from ring 3): the CPU was in
//!   the guest, and the entry's own Rust code has not begun;
//! - the top of every turn of the idle loop (`idle_loop`, entered on a fresh stack).
//!
//! A hypercall's entry does not report (it is the hot path); a CPU that runs a guest making
//! only hypercalls reports at its next interrupt, which [`synchronize`] sends it. An idle
//! CPU is not taken as quiescent while it sleeps: the interrupts it takes in `hlt` run
//! handlers that read shared pointers (the timer's asks the policy for its tick). The IPI
//! wakes it, and it reports at the top of its idle loop.
//!
//! **Deferred frees.** [`defer_drop`] does not wait (Xen's `call_rcu`): the object is kept
//! with the grace period begun for it and dropped by the control path's next call once that
//! grace period has ended ([`reclaim`]), or at once after a wait ([`drain`]) where a figure
//! must count it gone (the heap and frame counts Domain0 checks against its baseline).
//!
//! **Who waits.** [`synchronize`] spins until every other online CPU has reported. Only
//! the control path calls it (Domain0's hypercalls, and Domain0 has one vCPU), so two CPUs
//! never wait for each other; and the waiter holds no lock that another CPU takes outside
//! the control path, while it serves the calls other CPUs post to it (TLB flushes) and keeps
//! watching its neighbour for the watchdog: every CPU it waits for reaches a quiescent point
//! without needing it. No guest can keep one from it (`wait_for`), so a grace period open
//! for twice the watchdog's limit is a hypervisor bug, and stops the machine; a wait or a
//! deferred drop from a guest's hypercall stops it at once (`control_path_only`).

use alloc::boxed::Box;
use alloc::sync::Weak;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

use kerncore::rcu::GracePeriods;

/// The machine's grace periods.
static GRACE: GracePeriods<{ smp::MAX_CPUS }> = GracePeriods::new();

/// This CPU is at a quiescent point: it holds no pointer read from shared state (see the
/// module doc for the two callers). Two loads when no grace period is waiting.
#[inline]
pub fn quiescent() {
    GRACE.quiescent(smp::percpu::cpu_index());
}

/// Waits until every other online CPU has passed a quiescent point since the call began: a
/// pointer they read from shared state before the call is no longer in use anywhere. The
/// caller has unpublished what it is about to free, holds no pointer to it itself, and is
/// on the control path (module doc: only one CPU waits at a time).
pub fn synchronize() {
    wait_for(GRACE.begin());
}

/// Waits until grace period `g` has ended ([`synchronize`]'s contract), interrupting each
/// CPU that has not reported it.
///
/// Bounded: no guest can hold a grace period open. A CPU in a guest takes its timer's
/// interrupt at least every watchdog period (`kerncore::watchdog::PERIOD_NS`) and this
/// wait's IPI, whatever the guest does (it runs with interrupts on: `exit_frame_ok`; its
/// upcall mask masks events, not the CPU's interrupts), and enters, reporting; one in the
/// hypervisor leaves within a hypercall's bound (long ones are preempted, 1 ms) or is
/// stopped by the watchdog. A grace period still open after twice the watchdog's limit is
/// therefore a hypervisor bug, and would leave Domain0's control path spinning here for
/// good (every tenant's control blocked, silently): it stops the machine, naming the CPUs
/// (`grace-stall` checks a guest that never enters by itself, on a CPU that never switches).
fn wait_for(g: u64) {
    control_path_only("waits for a grace period");
    let me = smp::percpu::cpu_index();
    interrupt_waiting(g);
    let started = super::cpu::rdtsc();
    let limit = stall_limit_ns();
    while !GRACE.ended(g, me, smp::startup::is_online) {
        // Another CPU may be waiting for this one (a TLB flush), and the CPU this one watches
        // must still be watched; this wait is bounded by theirs.
        smp::ipi::handle_call_function_ipi();
        smp::ipi::run_wait_hook();
        super::percpu::touch_watchdog();
        core::hint::spin_loop();
        if smp::time::ticks_to_ns(super::cpu::rdtsc().wrapping_sub(started)) > limit {
            stalled(g, limit);
        }
    }
}

/// Stops the machine if a guest's hypercall, not Domain0's control path, got here (`what`
/// says what it was doing). Two CPUs waiting for grace periods at once would each wait for
/// the other, both in the hypervisor and neither reporting, for good; the watchdog would not
/// see it (each waiter touches its own), and two guests closing ports on two CPUs at the
/// same moment would be enough. Checked on every call, not only when two waits meet: with a
/// `synchronize` put in `evtchn_op` `Close`, `fuzz/short` stops at the guest's first close
/// (0.4 s); without this check its two fuzzers' closes met and [`wait_for`]'s bound stopped
/// it 2 s later (2 runs of 2), and without either it hung until the timeout (2 runs of 4).
fn control_path_only(what: &str) {
    if HOOKS.get().is_some_and(|h| !(h.on_control_path)()) {
        panic!("a guest's hypercall {what}: only Domain0's control path may (`arch::rcu`)");
    }
}

/// What the layers above `arch` tell the grace periods, which know no domain or console:
/// set once at boot ([`set_hooks`]).
pub struct Hooks {
    /// Whether this CPU is on Domain0's control path, the only one that may wait
    /// ([`control_path_only`]).
    pub on_control_path: fn() -> bool,
    /// Makes the console usable from here, whatever other CPUs hold, before a stall report.
    pub emergency_console: fn(),
}

static HOOKS: spin::Once<Hooks> = spin::Once::new();

/// Sets the [`Hooks`] (once, at boot; later calls are ignored).
pub fn set_hooks(hooks: Hooks) {
    HOOKS.call_once(|| hooks);
}

/// How long a grace period may stay open ([`wait_for`]): twice the watchdog's limit for a
/// CPU in the hypervisor, so that a CPU stuck there is the watchdog's to report (with where
/// it is) before it is this wait's.
fn stall_limit_ns() -> u64 {
    2 * match super::cpu::accelerator() {
        "tcg" => kerncore::watchdog::STUCK_NS_TCG,
        _ => kerncore::watchdog::STUCK_NS,
    }
}

/// Grace period `g` has stayed open past `limit` ns: the CPUs it waits for are named and the
/// machine stops ([`wait_for`]).
#[cold]
#[inline(never)]
fn stalled(g: u64, limit: u64) -> ! {
    if let Some(h) = HOOKS.get() {
        (h.emergency_console)();
    }
    let me = smp::percpu::cpu_index();
    for cpu in GRACE.waiting_on(g, me, smp::startup::is_online) {
        log::error!(
            "grace period {g} still waits for CPU {cpu} after {} ms: it has passed no \
             quiescent point (an entry from a guest, the idle loop's top) since it began; \
             Domain0's control path would wait for good",
            limit / 1_000_000
        );
    }
    super::cpu::exit(abi::tool::console::ExitCode::Failure)
}

/// Begins a grace period that nobody waits for, for a self-test: `selftest=slow-send` begins
/// one as a send finds its peer and checks at the end of the send that this CPU has not
/// reported it ([`reported_since`]): a quiescent point reported mid-send would let a destroy
/// on another CPU free the peer under it.
pub fn begin_for_check() -> u64 {
    GRACE.begin()
}

/// Whether this CPU has reported a quiescent point since grace period `g` began
/// ([`begin_for_check`]).
pub fn reported_since(g: u64) -> bool {
    GRACE.passed(g, smp::percpu::cpu_index())
}

/// Objects whose drop waits for a grace period, with the grace period begun for each
/// (oldest first; the numbers only grow).
static DEFERRED: spin::Mutex<Vec<(u64, Box<dyn core::any::Any + Send>)>> =
    spin::Mutex::new(Vec::new());

/// Interrupts each CPU but this one that has not reported grace period `g` (Xen's
/// `force_quiescent_state`): from a guest it enters, and reports; from `hlt` it wakes, and
/// reports at the top of its idle loop. A reschedule IPI with no reschedule asked for does
/// nothing else.
fn interrupt_waiting(g: u64) {
    for cpu in GRACE.waiting_on(g, smp::percpu::cpu_index(), smp::startup::is_online) {
        smp::ipi::send_reschedule(cpu);
    }
}

/// Drops `object` once every other CPU has passed a quiescent point (Xen's `call_rcu`),
/// without waiting: the caller has unlinked it (or what leads to it), and holds nothing of it
/// past its return. Dropped by [`reclaim`] or [`drain`], on the control path.
pub fn defer_drop<T: Send + 'static>(object: T) {
    control_path_only("defers a drop");
    // The CPUs that must report are interrupted, so that the object goes at the control
    // path's next call rather than up to a watchdog period (20 ms, every CPU's timer) later:
    // under `-icount`, 2000 lifetimes of `churn.toml` take 11.6 s of guest time so, 11.8 s
    // with no interrupt, 13.4 s with destroy waiting for the grace period, 10.9 s with
    // no grace period at all.
    let g = GRACE.begin();
    interrupt_waiting(g);
    DEFERRED.lock().push((g, Box::new(object)));
}

/// Drops every deferred object whose grace period has ended, without waiting. Called by the
/// control path at the start of each of its calls, where this CPU holds nothing.
pub fn reclaim() {
    let me = smp::percpu::cpu_index();
    let ready: Vec<_> = {
        let mut deferred = DEFERRED.lock();
        let n = deferred
            .iter()
            .take_while(|(g, _)| GRACE.ended(*g, me, smp::startup::is_online))
            .count();
        let ready = deferred.drain(..n).collect();
        if deferred.is_empty() {
            // Its buffer goes too: Domain0 checks the heap against a baseline taken with
            // nothing deferred.
            *deferred = Vec::new();
        }
        ready
    };
    drop(ready);
}

/// Waits until every deferred object's grace period has ended and drops them all: for a
/// figure that must count them gone. [`synchronize`]'s contract.
pub fn drain() {
    let last = DEFERRED.lock().last().map(|&(g, _)| g);
    if let Some(g) = last {
        wait_for(g);
    }
    reclaim();
}

/// A read-side section (Linux's `rcu_read_lock`, which Xen's `rcu_read_lock` mirrors): what
/// [`RcuSlot::get`] hands out is borrowed from it, so the borrow checker keeps every such
/// reference inside the frame that made the `ReadSide` (or one it lends it to), and none
/// can be stored in a static, a heap object or a per-CPU structure. Not `Send`: it stays
/// on the CPU that made it.
///
/// **The one rule left to the code.** No `ReadSide` is alive at a quiescent point. Both
/// quiescent points are at the top of an outermost frame (a guest's entry, each turn of the
/// idle loop: module doc), so a `ReadSide` made in any frame below them is gone by then; the
/// idle loop makes none of its own across turns. A `ReadSide` costs nothing at run time.
pub struct ReadSide {
    not_send: PhantomData<*const ()>,
}

/// Opens a read-side section on this CPU ([`ReadSide`]).
#[inline(always)]
pub fn read_side() -> ReadSide {
    ReadSide {
        not_send: PhantomData,
    }
}

/// A slot holding one boxed `T` or none, read with no lock and no reference count
/// ([`RcuSlot::get`]). What it held when it is replaced or emptied is handed back as
/// [`Retired`], freed only after a grace period.
///
/// **The rule its readers keep**, which [`ReadSide`] types: a reference from
/// [`RcuSlot::get`] is used only until the reading CPU's next quiescent point. It borrows
/// the caller's `ReadSide`, so it lives in stack frames only (a local, an argument, a
/// value returned up to the frame that holds the `ReadSide`), and no `ReadSide` outlives
/// the next quiescent point.
pub struct RcuSlot<T> {
    ptr: AtomicPtr<T>,
}

impl<T: Send + Sync> Default for RcuSlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + Sync> RcuSlot<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        RcuSlot {
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The object in the slot, if any, for as long as the caller's read-side section
    /// (the type's doc).
    pub fn get<'a>(&'a self, _section: &'a ReadSide) -> Option<&'a T> {
        let ptr = self.ptr.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw` in `replace` and is
        // freed only by `Retired::free_after_grace`, after a grace period that began once it
        // was no longer in the slot. The reference borrows the caller's `ReadSide`, which
        // no quiescent point of this CPU outlives (`ReadSide`'s rule), and that grace period
        // waits for this CPU's next quiescent point. So the object lives while the
        // reference does. Only shared references are made to it.
        unsafe { ptr.as_ref() }
    }

    /// Puts `value` in the slot (or empties it); returns what it held, retired.
    pub fn replace(&self, value: Option<Box<T>>) -> Option<Retired<T>> {
        let new = value.map_or(core::ptr::null_mut(), Box::into_raw);
        let old = self.ptr.swap(new, Ordering::AcqRel);
        NonNull::new(old).map(|ptr| Retired { ptr })
    }
}

/// An object taken out of an [`RcuSlot`]: other CPUs may still be using it until a grace
/// period has passed. It cannot be reached through a `Retired`; dropping one leaks the
/// object (safe: nothing frees it early).
pub struct Retired<T> {
    ptr: NonNull<T>,
}

// SAFETY: a `Retired` owns its object (as a `Box` would) but gives no access to it; it is
// turned back into the `Box` only after a grace period, on whatever CPU.
unsafe impl<T: Send> Send for Retired<T> {}

impl<T> Retired<T> {
    /// Waits for a grace period ([`synchronize`], whose contract the caller keeps) and
    /// returns the object, which no other CPU uses any more, for the caller to drop.
    pub fn free_after_grace(self) -> Box<T> {
        synchronize();
        // SAFETY: `ptr` came from `Box::into_raw` (`RcuSlot::replace`) and left its slot
        // before the grace period just waited for began: every reader that could hold it
        // has passed a quiescent point since, and the caller holds none. This `Retired` was
        // its only owner, consumed here.
        unsafe { Box::from_raw(self.ptr.as_ptr()) }
    }
}

/// An object reached through a `Weak` without upgrading it (no reference count raised or
/// dropped), valid until this CPU's next quiescent point: it borrows the caller's
/// read-side section ([`ReadSide`]), so it stays in the stack frames below it and cannot be
/// stored or handed to another CPU.
///
/// **The rule its objects' owners keep.** An object of type `T` reached this way has its
/// last `Arc` dropped only after a grace period ([`synchronize`]) that began once every
/// `Weak` it may be reached through was unlinked from where readers find it (for a domain:
/// `pv::control::destroy`, after the domain's ports are closed and its peers' ends
/// unbound; a send finds the `Weak` in its own port table, under that table's lock, which
/// the unbinding takes).
pub struct Reached<'a, T> {
    ptr: NonNull<T>,
    section: PhantomData<&'a ReadSide>,
}

impl<'a, T> Reached<'a, T> {
    /// The object `weak` points to, if it still exists. The caller holds the lock under
    /// which `weak` is unlinked (the type's rule), so the object is not unlinked, and so not
    /// freed, before this CPU's next quiescent point, which `section` does not outlive.
    pub fn through(weak: &Weak<T>, _section: &'a ReadSide) -> Option<Reached<'a, T>> {
        if weak.strong_count() == 0 {
            return None;
        }
        Some(Reached {
            ptr: NonNull::new(weak.as_ptr().cast_mut())?,
            section: PhantomData,
        })
    }

    /// The object.
    pub fn get(&self) -> &T {
        // SAFETY: the object had a strong reference when `through` looked, with its `Weak`
        // still linked under the caller's lock; by the type's rule its last `Arc` is dropped
        // only after a grace period that began once that `Weak` was unlinked, which waits
        // for this CPU's next quiescent point. A `Reached` borrows a `ReadSide`, which no
        // quiescent point of this CPU outlives, and is not `Send` (it holds a borrow of a
        // `ReadSide`, which is not `Sync`). Only shared references are made to the object.
        unsafe { self.ptr.as_ref() }
    }
}
