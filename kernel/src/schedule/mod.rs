//! The scheduler's hardware side: what runs on each CPU, when, and the switch itself.
//!
//! The policy (crate `sched`) decides; this module carries decisions out. It runs on the way
//! back to a guest (Xen's softirq model): after a hypercall or interrupt from ring 3, if this
//! CPU must reschedule, [`reschedule`] asks the policy for the next vCPU, saves the current
//! one's registers, rewrites the trap frame with the next one's, and the common exit path
//! enters it. A CPU with nothing to run sits in [`idle_loop`] with `sti; hlt`.
//!
//! Timers: each CPU has one one-shot hardware timer, armed for the earliest of: the end of
//! the current slice, the policy's next accounting tick, and the earliest vCPU timer set on
//! this CPU. A vCPU's timer is one slot ([`TimerHeap`]): setting it again replaces it, so
//! no guest can fill a CPU's timers and silence its neighbours'. A vCPU that moved has at
//! most one stale slot on each CPU it set a timer on; it fires, finds the vCPU's deadline
//! changed, and is dropped.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::control::{KICK_LATE_BUCKETS, SLICE_LATE_BUCKETS, kick_late_bucket, slice_late_bucket};
use kerncore::cmdline::SelfTest;
use kerncore::timerheap::TimerHeap;

use sched::{Policy, VcpuId};
use spin::{Mutex, Once};

use crate::arch;
use crate::arch::trap::TrapFrame;
use crate::domain::{self, Domain, NOT_RUNNING, Stop, Tell, Vcpu, VcpuState};
use crate::{console, time};
use held::Held;
pub mod cpupool;
pub mod trace;
pub mod watchdog;

use abi::control::{DomainId, KillReason};
use abi::tool::console::{LateOf, TraceEvent};
use watchdog::watch_neighbour;
pub use watchdog::{arm_watchdog, wait_for_other_cpu, watchdog_armed, watchdog_nmi};

/// Per-CPU scheduling state, touched only by its own CPU (the lock is never contended; it
/// exists so that the code stays safe).
struct CpuSched {
    /// The vCPU running here, held by pointer ([`Held`]: no reference count).
    current: Option<Held>,
    /// When the current slice ends (system ns), if a vCPU runs.
    slice_end: Option<u64>,
    /// When the policy's tick is next due here (`sched::Policy::next_tick`, asked after
    /// every decision and every tick).
    next_tick: Option<u64>,
    /// This CPU's `cpupool` entry when `next_tick` was set: a new instance (a policy swap,
    /// the CPU moved to another pool) is asked for its own tick.
    tick_entry: u64,
    /// When the hardware timer is set to fire (system ns), if it is.
    armed_at: Option<u64>,
    /// vCPU timers set on this CPU, one slot per vCPU.
    timers: TimerHeap,
    /// A vCPU the policy picked for this CPU that was paused, taken down or killed before
    /// this CPU could claim it ([`claim`]): never switched in, it is reported saved
    /// (`Policy::context_saved`, [`saved`]) once this CPU's next decision has descheduled it.
    unclaimed: Option<Arc<Vcpu>>,
}

/// The vCPU a CPU holds for its policy, reached by pointer: the switch takes no lock and no
/// reference count to find the vCPU the policy picked, its domain, or the vCPU leaving
/// (issue 11; Xen's `struct sched_unit *` in `sched_context_switch`, kept alive there by
/// RCU and `domain_destroy`'s wait).
mod held {
    use alloc::sync::Arc;
    use core::ptr::NonNull;

    use crate::domain::{self, Domain, Vcpu};

    /// A vCPU that this CPU's policy gave it and that this CPU has not let go of: picked by
    /// the decision just made here, then claimed (`claim`) and running here, then leaving
    /// until `release` consumes it. Not `Clone`: one holder, and once released (or turned
    /// into an `Arc`, [`Held::into_arc`]) it cannot be used again.
    ///
    /// **Why the vCPU and its domain live while a `Held` does.** `destroy`
    /// (`pv::control::destroy`) takes the vCPU out of the vCPU table (whose `Arc` keeps it
    /// alive; its domain's `Arc<Vcpu>`s die with the domain) and the domain out of the
    /// domain table only after `unregister`, which waits for three things, each covering
    /// one stretch of a `Held`'s life:
    /// 1. *Picked, not claimed*: the policy counts it scheduled on this CPU until this CPU's
    ///    next decision, and refuses `remove_vcpu` meanwhile (`sched::Policy::remove_vcpu`'s
    ///    contract; `sched/tests/concurrency.rs` checks every registered policy). A pick this
    ///    CPU cannot claim is turned into an `Arc` before that next decision
    ///    (`CpuSched::unclaimed`).
    /// 2. *Claimed, running*: `running_on` names this CPU (`Domain::on_cpu`) from `claim`
    ///    until `release` clears it.
    /// 3. *Leaving*, from that store to the end of `release` (`saved`, the policy's
    ///    `context_saved`): this CPU's CR3 still holds the vCPU's address space (a vCPU's
    ///    PML4 is in CR3 from its switch-in until the next load, and `release` runs before
    ///    the CPU loads another: `load_address_space`, and `reschedule` going idle), and
    ///    `unregister` also waits until no CPU's CR3 holds it (`Domain::loaded_anywhere`,
    ///    read after `on_cpu`). `arch::percpu::load_cr3` keeps the old PML4 recorded until
    ///    after the write and clears it with release ordering, so a destroy that finds it
    ///    gone sees everything this CPU did with the vCPU before.
    ///
    /// A `Held` keeps the vCPU's serial number as read at the pick (`Vcpu::serial`, 0 once
    /// the vCPU is dropped, never reused): [`Held::check`] stops the machine if it changed,
    /// which is what a vCPU freed while held would show (poisoned, or its memory given to a
    /// new vCPU). The switch checks the vCPU leaving once `release` is done with it, the end
    /// of the stretch whose cover is the least obvious (case 3); the QEMU cases that create
    /// and destroy domains under load (`churn`, `timeline/departure`, `hostile`, `pause/race`)
    /// run through it thousands of times.
    pub struct Held {
        vcpu: NonNull<Vcpu>,
        serial: u64,
    }

    // SAFETY: a `Held` stands for a `&Vcpu` (`Vcpu` is `Sync`, so `&Vcpu` is `Send`); it is
    // kept in its CPU's `CpuSched`, behind that CPU's lock.
    unsafe impl Send for Held {}

    impl Held {
        /// The vCPU with global id `id`, which the decision just made on this CPU picked
        /// (`None` if the table has no such vCPU).
        ///
        /// # Safety
        /// `id` is the vCPU that this CPU's policy named in its last decision (`schedule`),
        /// and no later decision has been made on this CPU: the policy then holds it for
        /// this CPU (case 1 of [`Held`]), and the caller carries the `Held` into cases 2 and
        /// 3 by claiming it, or turns it into an `Arc` ([`Held::into_arc`]) or drops it
        /// before this CPU's next decision. The returned `Held` aliases the table's vCPU
        /// until then.
        pub unsafe fn picked(id: u32) -> Option<Held> {
            let vcpu = NonNull::new(domain::vcpu_ptr(id).cast_mut())?;
            // SAFETY: the caller's contract: the vCPU lives (case 1 of the type's doc).
            let serial = unsafe { vcpu.as_ref() }.serial();
            Some(Held { vcpu, serial })
        }

        /// The vCPU.
        pub fn vcpu(&self) -> &Vcpu {
            // SAFETY: a `Held` exists only while its vCPU lives (the type's doc), and only
            // shared references to a `Vcpu` are ever made.
            unsafe { self.vcpu.as_ref() }
        }

        /// Stops the machine if the vCPU is not the object picked (its serial changed: it
        /// was freed while held), naming `when`. A violation of the type's argument shows
        /// here before a vCPU or domain is used freed a second time.
        #[inline]
        pub fn check(&self, when: &str) {
            if self.vcpu().serial() != self.serial {
                self.freed(when);
            }
        }

        #[cold]
        #[inline(never)]
        fn freed(&self, when: &str) -> ! {
            panic!(
                "a vCPU held by this CPU was freed {when} (serial {} read {}): destroy did \
                 not wait for this CPU",
                self.serial,
                self.vcpu().serial()
            );
        }

        /// Its domain, with no reference count.
        pub fn domain(&self) -> &Domain {
            // SAFETY: the domain table holds the domain for at least as long as its vCPU is
            // held by a CPU (the type's doc: `destroy` removes both after the same waits);
            // `Vcpu::domain_ptr` is the address of that `Arc`'s object.
            unsafe { &*self.vcpu().domain_ptr() }
        }

        /// The vCPU as an `Arc` (from the table, whose lock it takes and whose count it
        /// raises: for the rare paths), ending the hold. `None` cannot happen while the
        /// `Held` lives, since the table keeps its vCPU until then.
        pub fn into_arc(self) -> Option<Arc<Vcpu>> {
            domain::vcpu(self.vcpu().id)
        }
    }
}

/// A CPU's figures, written by that CPU alone and read by any (`sysctl CpuStats`): atomics,
/// so that a reader never takes another CPU's lock. In declaration order (`repr(C)`), the
/// large `timed` last (see [`CpuState`]).
#[repr(C)]
struct CpuCounters {
    busy_ns: AtomicU64,
    switches: AtomicU64,
    /// Idle time of finished idle periods.
    idle_total_ns: AtomicU64,
    /// When the current idle period began ([`NOT_IDLE`]: it is not idle).
    idle_since: AtomicU64,
    /// How late the timer ended the slices the policy gave, in log2 buckets
    /// (`abi::control::slice_late_bucket`): what a slice really lasts on this machine.
    slice_late: [AtomicU64; SLICE_LATE_BUCKETS],
    /// When the earliest kick not yet served was made (system ns; 0: none), from this CPU,
    /// from another, and from another for a wake-up (stamped in both of the last two). The
    /// one field other CPUs write: [`kick`] stamps it, this CPU's next decision takes it
    /// ([`kicks_served`]); the timed kind each counts in is [`KICK_SLOT_KINDS`]'.
    kicked_at: [AtomicU64; 3],
    /// [`TIMED_KINDS`] histograms in `abi::control::kick_late_bucket`s, [`KICK_LATE_BUCKETS`]
    /// each, by kind ([`count_time`]): how late this CPU's decisions came after the kicks that
    /// asked for them, its own kicks ([`KICK_LOCAL`]) and other CPUs' (an IPI each,
    /// [`KICK_REMOTE`]), and of those the wake-ups' ([`KICK_REMOTE_WAKE`]); how long its
    /// switches took ([`SWITCH_TIME`]) and its `set_timer` hypercalls that a block or poll
    /// followed ([`SET_TIMER_TIME`], [`count_set_timer`]), and of those the ones that wrote
    /// the hardware timer ([`SWITCH_ARMED_TIME`], [`SET_TIMER_ARMED_TIME`]), and how late
    /// sleepers' timers woke them ([`TIMER_WAKE_LATE`], the last). Last in the struct, whose
    /// `CpuState` starts a page: the kinds a decision or a switch counts lie in that first
    /// page with the rest of the CPU's state; the last kind runs into the second.
    timed: [AtomicU64; TIMED_KINDS * KICK_LATE_BUCKETS],
}

/// The fourth and fifth kinds of [`CpuCounters::timed`]: each switch to another vCPU,
/// from the end of the decision to the incoming vCPU's address space loaded (what
/// schedsim's cost profile calls a switch, `switch_*_ns`: the incoming vCPU's time, in
/// which it does no work), and each `set_timer` hypercall. Under TCG on a loaded host both
/// carry the host's stalls: arming the timer is an APIC write, which QEMU serves under its
/// global lock and which moves a QEMU timer (waking QEMU's main loop), and a CPU thread that
/// waits there for the lock, or loses its host core to the thread it woke, is stalled at
/// that point. A vCPU that switches and arms timers often (a latency domain: two of each
/// per wake-up) is hit by those stalls far more than its share of the time, which
/// schedsim, given a run's own figures (`schedsim --costs-from`), draws per switch and per
/// timer set.
const SWITCH_TIME: usize = 3;
const SET_TIMER_TIME: usize = 4;
/// The sixth and seventh kinds: of the switches and `set_timer` hypercalls above, those that
/// wrote the CPU's timer ([`arm_timer`] moved its deadline earlier, or what was armed had
/// passed), counted in both kinds. Under TCG the write is the dear part (an APIC write under
/// QEMU's global lock), and whether a switch makes one depends on what it arms: rtds's
/// latency domain, switched in with at most a 100 µs budget left, moves the deadline earlier
/// every time, while a hog switched in after it finds that deadline still armed and keeps it.
/// schedsim, given a run's figures, follows [`arm_timer`]'s rule and draws each switch and
/// `set_timer` from the kind it falls in (`sched::cost::Profile::with_armed`).
const SWITCH_ARMED_TIME: usize = 5;
const SET_TIMER_ARMED_TIME: usize = 6;
/// The eighth kind, the last, past the first page (counted at a sleeper's timer wake-up,
/// not by a decision or a switch): how late each sleeper's timer woke it, from its deadline to the
/// timer's run here ([`run_timers`]): the same hardware timer as the slices' ends, late by
/// the same host stalls, which schedsim draws a sleeper's wake-up from
/// (`sched::cost::Profile::with_wake_late`).
const TIMER_WAKE_LATE: usize = 7;
/// The third kind: of the kicks from other CPUs, those for a wake-up ([`kick_for_wake`]).
/// The rest are the policies' own (a tick's, a decision's `take_kicks`, a `context_saved`
/// one), which come at other moments and wait otherwise: under rtds on 2 CPUs 1.4-5.2% of
/// all kicks of another CPU waited over 65 µs, against 0.4-0.8% of a latency domain's
/// wake-ups there; schedsim, drawing its wake-ups' kicks from all of them, put the latency
/// domain's p99 a log2 bucket too high (session 21). schedsim draws a wake-up's kick from
/// these (`sched::cost::Profile::with_wake_kicks`). Beside the other kicks, in the first
/// page: a decision counts it.
const KICK_REMOTE_WAKE: usize = 2;
/// How many kinds [`CpuCounters::timed`] holds.
const TIMED_KINDS: usize = 8;
/// The first and second kinds of [`CpuCounters::timed`]: kicks this CPU sent itself, and
/// kicks from other CPUs.
const KICK_LOCAL: usize = 0;
const KICK_REMOTE: usize = 1;
/// The timed kind of each of [`CpuCounters::kicked_at`]'s stamps.
const KICK_SLOT_KINDS: [usize; 3] = [KICK_LOCAL, KICK_REMOTE, KICK_REMOTE_WAKE];

/// Counts a duration of kind `kind` ([`KICK_LOCAL`], [`KICK_REMOTE`], [`SWITCH_TIME`],
/// [`SET_TIMER_TIME`], [`SWITCH_ARMED_TIME`], [`SET_TIMER_ARMED_TIME`],
/// [`TIMER_WAKE_LATE`], [`KICK_REMOTE_WAKE`]) on this CPU.
fn count_time(kind: usize, ns: u64) {
    if let Some(n) = this_state()
        .counters
        .timed
        .get(kind * KICK_LATE_BUCKETS + kick_late_bucket(ns))
    {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// [`CpuCounters::idle_since`] of a CPU that is not idle.
const NOT_IDLE: u64 = u64::MAX;

impl CpuCounters {
    fn new() -> Self {
        CpuCounters {
            busy_ns: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            idle_total_ns: AtomicU64::new(0),
            idle_since: AtomicU64::new(NOT_IDLE),
            slice_late: core::array::from_fn(|_| AtomicU64::new(0)),
            timed: core::array::from_fn(|_| AtomicU64::new(0)),
            kicked_at: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl CpuCounters {
    /// An idle period begins at `now`, unless one is under way.
    fn idle_from(&self, now: u64) {
        if self.idle_since.load(Ordering::Relaxed) == NOT_IDLE {
            self.idle_since.store(now, Ordering::Relaxed);
        }
    }

    /// The idle period under way, if any, ends at `now`.
    fn busy_from(&self, now: u64) {
        let since = self.idle_since.swap(NOT_IDLE, Ordering::Relaxed);
        if since != NOT_IDLE {
            self.idle_total_ns
                .fetch_add(now.saturating_sub(since), Ordering::Relaxed);
        }
    }
}

/// Per-CPU figures for `sysctl CpuStats`.
#[derive(Clone, Copy, Debug)]
pub struct CpuFigures {
    pub idle_ns: u64,
    pub busy_ns: u64,
    pub switches: u64,
    pub slice_late: [u64; SLICE_LATE_BUCKETS],
    pub kick_late: [u64; KICK_LATE_BUCKETS],
    pub kick_wake_late: [u64; KICK_LATE_BUCKETS],
    pub kick_local_late: [u64; KICK_LATE_BUCKETS],
    pub switch_time: [u64; KICK_LATE_BUCKETS],
    pub set_timer_time: [u64; KICK_LATE_BUCKETS],
    pub switch_armed_time: [u64; KICK_LATE_BUCKETS],
    pub set_timer_armed_time: [u64; KICK_LATE_BUCKETS],
    pub timer_wake_late: [u64; KICK_LATE_BUCKETS],
}

/// Everything the scheduler keeps for one CPU, from a page boundary: its state, its watch on
/// its neighbour, its pool entry and its figures, all that a switch touches of them in the
/// first page. Under QEMU's TCG each page touched after a CR3 load (every switch between
/// domains) costs a TLB fill; kept as four `smp::MAX_CPUS`-long arrays, with each array's
/// ready flag at its far end, they took seven of a switch's 50 fills (`scripts/tlb-fills`).
/// Page-aligned, CPUs also share no cache line.
#[repr(C, align(4096))]
struct CpuState {
    sched: Mutex<CpuSched>,
    watch: watchdog::WatchState,
    /// `cpupool`'s entry for this CPU: its instance and its number there.
    pool: AtomicU64,
    /// Last: its `timed` histograms run past the first page, and only the kinds a switch
    /// does not count (the last) lie beyond it.
    counters: CpuCounters,
}

// What a decision and a switch count (every kind but the last) is in a `CpuState`'s first
// page.
const _: () = assert!(
    core::mem::offset_of!(CpuState, counters)
        + core::mem::offset_of!(CpuCounters, timed)
        + (SET_TIMER_ARMED_TIME + 1) * KICK_LATE_BUCKETS * 8
        <= 4096
);
const _: () = assert!(
    KICK_LOCAL < TIMER_WAKE_LATE
        && KICK_REMOTE < TIMER_WAKE_LATE
        && KICK_REMOTE_WAKE < TIMER_WAKE_LATE
        && SWITCH_TIME < TIMER_WAKE_LATE
        && SWITCH_ARMED_TIME < TIMER_WAKE_LATE
        && TIMER_WAKE_LATE == SET_TIMER_ARMED_TIME + 1
        && TIMER_WAKE_LATE == TIMED_KINDS - 1
);

/// The machine's CPUs' [`CpuState`]s, in CPU order (only the CPUs the machine has: the
/// state of `smp::MAX_CPUS` would be a megabyte).
static CPUS: Once<alloc::boxed::Box<[CpuState]>> = Once::new();

/// A vCPU's `timer_deadline` after its timer fired while it was not blocked: a time in the
/// past, which makes its next block return at once.
pub const FIRED: u64 = 1;

/// Installs the per-CPU state for a machine of `cpus` CPUs (the policies are the pools',
/// [`cpupool::init`]). Called once by the BSP before any CPU schedules.
pub fn init(cpus: usize) {
    CPUS.call_once(|| {
        (0..cpus)
            .map(|_| CpuState {
                sched: Mutex::new(CpuSched {
                    current: None,
                    slice_end: None,
                    next_tick: None,
                    tick_entry: NO_TICK_ENTRY,
                    armed_at: None,
                    timers: TimerHeap::new(domain::MAX_VCPUS_TOTAL),
                    unclaimed: None,
                }),
                counters: CpuCounters::new(),
                watch: watchdog::WatchState::default(),
                pool: AtomicU64::new(cpupool::FREE),
            })
            .collect()
    });
}

/// [`CpuSched::tick_entry`] before the first look at the CPU's pool.
const NO_TICK_ENTRY: u64 = u64::MAX - 1;

/// The first pool's policy (Domain0's; the machine's when there is one pool), for as long as
/// the caller's read-side section.
pub fn policy(section: &arch::rcu::ReadSide) -> &dyn Policy {
    &*cpupool::first(section).policy
}

/// Writes each pool's policy's own counters since boot (credit's clamps and rounding) as a
/// `counters` results record, if it keeps any. Called as the machine shuts down.
pub fn record_policy_counters() {
    let section = arch::rcu::read_side();
    for inst in cpupool::current_instances(&section) {
        record_counters_of(&*inst.policy);
    }
}

fn record_counters_of(p: &dyn Policy) {
    let mut counters = alloc::collections::BTreeMap::new();
    p.counters(&mut |name, value| {
        counters.insert(alloc::string::String::from(name), value);
    });
    if counters.is_empty() {
        return;
    }
    let r = abi::tool::results::Record::Counters(abi::tool::results::Counters {
        policy: p.info().name.into(),
        counters,
    });
    crate::console::write_record(&r);
}

/// CPU `cpu`'s state; `None` before [`init`] or for a CPU the machine does not have.
fn cpu_state(cpu: usize) -> Option<&'static CpuState> {
    CPUS.get()?.get(cpu)
}

/// This CPU's state.
fn this_state() -> &'static CpuState {
    cpu_state(this_cpu()).expect("scheduler initialised")
}

/// CPU `cpu`'s figures (a CPU of the machine's).
fn counters_of(cpu: usize) -> &'static CpuCounters {
    &cpu_state(cpu).expect("a CPU of the machine").counters
}

fn this_cpu() -> usize {
    smp::percpu::cpu_index()
}

/// Sends the kicks `inst`'s policy decided in a call that could not return them
/// (`sched::Policy::take_kicks`): after a parameter change or a domain joining it, made on
/// the control path.
pub fn send_policy_kicks(inst: &cpupool::Instance) {
    if !inst.timed {
        return;
    }
    let now = time::now_ns();
    inst.policy.take_kicks(&mut |c| kick(inst.global(c), now));
}

/// Makes `cpu` reschedule soon: at once if it is this CPU (on the way out), else by IPI,
/// for an event at `now` (see [`kick_since`]).
pub fn kick(cpu: usize, now: u64) {
    kick_since(cpu, Some(now));
}

/// [`kick`] for a vCPU's wake-up at `now`: a kick of another CPU is also stamped as a
/// wake-up's ([`KICK_REMOTE_WAKE`]).
fn kick_for_wake(cpu: usize, now: u64) {
    if cpu != this_cpu() {
        stamp(&counters_of(cpu).kicked_at[2], now);
    }
    kick_since(cpu, Some(now));
}

/// Stamps a kick made at `since` in `at`, unless an earlier one waits there.
fn stamp(at: &AtomicU64, since: u64) {
    if at.load(Ordering::Relaxed) == 0 {
        // 0 means none: a kick at system time 0 is stamped at 1.
        let _ = at.compare_exchange(0, since.max(1), Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// [`kick`], for an event at `since` (system ns): a wake-up, a tick. The kick is stamped
/// with it (the earliest one not yet served, per kind) for the target's `kick_late`
/// figures: from the event to the decision it asks for, what a woken vCPU waits for on
/// this machine, which schedsim's cost model takes from a run (`schedsim --costs-from`: it
/// kicks at the wake-up too). Stamped before the flag is set, so that the decision the
/// flag brings about finds the stamp. `None`: a kick that is not counted.
fn kick_since(cpu: usize, since: Option<u64>) {
    let remote = cpu != this_cpu();
    if let Some(since) = since {
        stamp(&counters_of(cpu).kicked_at[usize::from(remote)], since);
    }
    // This CPU's own flag through GS: `need_resched(cpu)` reads the table of every CPU's
    // area, one page more for a yield's switch to touch.
    if remote {
        arch::percpu::need_resched(cpu).store(true, Ordering::Release);
        smp::ipi::send_reschedule(cpu);
    } else {
        arch::percpu::my_need_resched().store(true, Ordering::Release);
    }
}

/// This CPU decides at `now` (its decision began then): every kick stamped so far is
/// served by it, and counted by how late (a kick stamped after `now`, by this very
/// reschedule's timers, as 0). Called just before the policy decides: a kick is stamped
/// after its wake-up was queued, so the decision sees every vCPU whose kick it counts.
fn kicks_served(now: u64) {
    let c = &this_state().counters;
    for (&kind, stamp) in KICK_SLOT_KINDS.iter().zip(&c.kicked_at) {
        // A plain load first: there is usually nothing to take.
        if stamp.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let at = stamp.swap(0, Ordering::AcqRel);
        if at != 0 {
            count_time(kind, now.saturating_sub(at));
            // Another CPU's IPI taken a stall's length late (this CPU's own kicks wait
            // for its way out of the hypervisor, not for the host).
            if kind == KICK_REMOTE {
                trace::late(LateOf::Kick, at, now);
            }
        }
    }
}

/// Calls `f` on the policy instance that schedules `v` and turns the local CPU it may name
/// (one to kick) into the machine's number; `None` for a vCPU no instance holds.
fn vcpu_policy(v: &Vcpu, f: impl FnOnce(&dyn Policy) -> Option<usize>) -> Option<usize> {
    let section = arch::rcu::read_side();
    let inst = cpupool::of_vcpu(v, &section)?;
    f(&*inst.policy).map(|local| inst.global(local))
}

fn take_need_resched() -> bool {
    let flag = arch::percpu::my_need_resched();
    // A plain load first: the flag is almost always clear, and a swap is a locked bus cycle.
    flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::AcqRel)
}

/// A blocked vCPU becomes runnable (timer or event); the policy queues it and may ask for a
/// CPU to be kicked. Returns false if it was not asleep. A vCPU asleep in a paused domain
/// keeps the wake-up for the unpause (`kerncore::runstate`).
pub fn wake(v: &Vcpu, now: u64) -> bool {
    change_state(
        v,
        now,
        VcpuState::wake,
        Some(|s: &mut domain::VcpuStats| woke(s, now)),
    )
}

/// A wake-up's own figures.
fn woke(s: &mut domain::VcpuStats, now: u64) {
    s.wakeups += 1;
    s.woke_at = Some(now);
}

/// A paused vCPU goes back to what it was before the pause (domain unpause): runnable, or,
/// if it was asleep and nothing woke it meanwhile, asleep.
pub fn unpause(v: &Vcpu, now: u64) {
    change_state(
        v,
        now,
        VcpuState::unpause,
        Some(|s: &mut domain::VcpuStats| {
            // Woken while paused: its wake-up latency counts from now, not from a wake-up
            // that no CPU could have served.
            if s.woke_at.is_some() {
                s.woke_at = Some(now);
            }
        }),
    );
}

/// A vCPU its domain took down comes up (`VcpuOp::Up`): runnable, or paused if its domain
/// is paused now (`domain_paused`, read by the caller under the domain's life lock, which
/// it holds, so that a pause cannot slip in between).
pub fn up(v: &Vcpu, domain_paused: bool, now: u64) {
    change_state(v, now, |state| state.up(domain_paused), NO_FIGURES);
}

/// Takes a vCPU off the runqueues (`why`: it blocks, its domain pauses, it goes down, or it
/// dies); kicks the CPU it runs on, if any, so that it switches away. A vCPU blocks only
/// from running (its own hypercall); if another CPU paused or killed it meanwhile, that
/// stands (`RunState::stop`: a block after a pause is a paused sleep, which the unpause
/// does not wake).
pub fn stop(v: &Vcpu, why: Stop, now: u64) {
    change_state(v, now, |state| state.stop(why), NO_FIGURES);
}

/// No figures of a state change's own beyond those [`change_state`] keeps.
const NO_FIGURES: Option<fn(&mut domain::VcpuStats)> = None;

/// Moves `v` by `rule` (`kerncore::runstate`); if it moves, keeps its figures (a vCPU that
/// stops waiting has waited, one that becomes runnable off its CPU waits from now, and
/// `also`, the change's own), tells the policy and kicks the CPU the policy names. Returns
/// whether it moved. The figures are locked only when something is to be written in them: a block,
/// from running, takes no lock but the state's.
///
/// The state lock is held across the policy call: a wake on one CPU racing a block on
/// another must reach the policy in the same order as it changes the state, or the policy
/// can end up believing asleep a vCPU the kernel believes runnable, and nobody wakes it
/// again.
fn change_state(
    v: &Vcpu,
    now: u64,
    rule: impl FnOnce(VcpuState) -> Option<(VcpuState, Tell)>,
    also: Option<impl FnOnce(&mut domain::VcpuStats)>,
) -> bool {
    let kick_cpu = {
        let mut state = v.state.lock();
        let was = *state;
        let Some((next, tell)) = rule(was) else {
            return false;
        };
        *state = next;
        let stops_waiting = was == VcpuState::Runnable;
        if stops_waiting || tell == Tell::Wake || also.is_some() {
            let mut s = v.stats.lock();
            if stops_waiting {
                s.account.stop(now);
            }
            if tell == Tell::Wake {
                s.account.wake(now);
            }
            if let Some(also) = also {
                also(&mut s);
            }
        }
        tell_policy(v, tell, now).map(|cpu| (cpu, tell))
    };
    match kick_cpu {
        // A wake-up's kick is stamped: schedsim draws a woken vCPU's kick from these.
        Some((cpu, Tell::Wake)) => kick_for_wake(cpu, now),
        // A stop's (the vCPU blocks, pauses or dies where it runs) is not: it is the way
        // out of the block hypercall, which schedsim prices as `block_ns`, not as a kick.
        Some((cpu, _)) => kick_since(cpu, None),
        None => {}
    }
    true
}

/// Tells `v`'s policy instance what a state change means for it (`tell`), with `v`'s state
/// lock held by the caller; returns the CPU to kick.
fn tell_policy(v: &Vcpu, tell: Tell, now: u64) -> Option<usize> {
    match tell {
        Tell::Nothing => None,
        Tell::Wake => {
            trace::record(TraceEvent::Wake, v, now);
            vcpu_policy(v, |p| p.wake(VcpuId(v.id), now).kick)
        }
        Tell::Sleep => vcpu_policy(v, |p| p.sleep(VcpuId(v.id), now)),
    }
}

/// The current vCPU gives up its slice.
pub fn yield_current(v: &Vcpu, now: u64) {
    v.yielded.store(true, Ordering::Relaxed);
    if let Some(cpu) = vcpu_policy(v, |p| p.yield_now(VcpuId(v.id), now)) {
        // Not stamped: the yield's own way out of its hypercall, which schedsim takes as
        // an immediate decision (no kick drawn). Counted, a yield attacker's thousands of
        // kicks served within 1 µs outnumbered the wake-ups' in `kick_local_late` (3939 to
        // about 800 in the isolation spec on 4 CPUs), and schedsim drew a woken latency
        // domain's kick from them: 1 µs where the hypervisor took 7 µs (a wake on an idle
        // CPU waits for the timer interrupt's exit, which re-arms the APIC timer).
        kick_since(cpu, None);
    }
}

/// The vCPU running on this CPU, if any (from the vCPU table: for the rare paths that need
/// an owned reference).
pub fn current() -> Option<Arc<Vcpu>> {
    let id = this_state().sched.lock().current.as_ref()?.vcpu().id;
    domain::vcpu(id)
}

/// Runs `f` on the vCPU running on this CPU and its domain, without a lock or a reference
/// count: the hypercall path's way to its caller.
pub fn with_current<R>(f: impl FnOnce(&Vcpu, &Domain) -> R) -> Option<R> {
    let (vcpu, domain) = arch::percpu::current();
    let (vcpu, domain) = (vcpu.cast::<Vcpu>(), domain.cast::<Domain>());
    // SAFETY: `switch_in` recorded both with `set_current`, promising they stay alive until
    // the next `set_current` on this CPU (the vCPU is `CpuSched::current`'s `Held`, claimed
    // by this CPU: `Held`'s case 2 keeps it and its domain alive); `f` cannot reschedule (it
    // gets no frame), so that does not happen during the borrow.
    unsafe { Some(f(vcpu.as_ref()?, domain.as_ref()?)) }
}

/// Arms a vCPU's one-shot timer on this CPU, replacing the one it had (0: cancels it).
/// How long it took is kept, and counted if the vCPU blocks or polls next
/// ([`count_set_timer`]).
pub fn set_timer(v: &Vcpu, deadline_ns: u64) {
    let start = time::now_ns();
    // A deadline of [`FIRED`] (1 ns, long past) would read as the mark of a timer that fired
    // and sent its event: the next block or poll took it and returned with no event sent,
    // and none ever came (hostile-sched `timer-edges`). It is as due as the next ns.
    let deadline_ns = if deadline_ns == FIRED {
        FIRED + 1
    } else {
        deadline_ns
    };
    v.timer_deadline.store(deadline_ns, Ordering::Release);
    if deadline_ns != 0 {
        v.last_timer_deadline.store(deadline_ns, Ordering::Relaxed);
    }
    let mut cs = this_state().sched.lock();
    let wrote = if deadline_ns == 0 {
        cs.timers.cancel(v.id);
        false
    } else {
        cs.timers.set(v.id, deadline_ns);
        arm_timer(&mut cs, start)
    };
    drop(cs);
    let took = time::now_ns().saturating_sub(start);
    v.set_timer_took
        .store((took.max(1) << 1) | u64::from(wrote), Ordering::Relaxed);
}

/// Takes the vCPU's last `set_timer` since its last block or poll, and counts it
/// ([`SET_TIMER_TIME`], and [`SET_TIMER_ARMED_TIME`] if it wrote the CPU's timer) when
/// `slept`: called as it blocks or polls, `slept` false when the block or poll returns at
/// once (a due timer, an event pending). A `set_timer` then a sleep is what a sleeper pays
/// per wake-up, which `schedsim --costs-from` prices its sleepers' `set_timer`s from.
/// Counted at each call, a timer storm (a guest re-arming in a loop, never sleeping:
/// hostile-sched `timer-storm`, millions a second) filled the machine-wide histogram with
/// its calls and priced every other domain's from them; counted at each block or poll, one
/// that returned at once on an event the guest left pending did the same at the rate of its
/// calls (hostile-sched `pending-storm`; both `isolation/timer-storm-costs`).
pub fn count_set_timer(v: &Vcpu, slept: bool) {
    let kept = v.set_timer_took.swap(0, Ordering::Relaxed);
    if kept != 0 && slept {
        count_timed(
            SET_TIMER_TIME,
            SET_TIMER_ARMED_TIME,
            kept >> 1,
            kept & 1 != 0,
        );
    }
}

/// For a vCPU about to block or poll on this CPU: whether its timer is due, which then
/// counts as its wake-up and is consumed. Either it fired while the vCPU was awake
/// ([`FIRED`]), or its deadline has passed and its interrupt has not come yet: then it
/// fires here, its timer VIRQ sent as `run_timers` would have, so that a guest waiting for
/// the VIRQ gets it and one waiting in `block` does not sleep past its deadline. `domain` is
/// `v`'s (the caller's, from `with_current`: no `Weak` to upgrade).
pub fn take_due_timer(v: &Vcpu, domain: &Domain, now: u64) -> bool {
    loop {
        let deadline = v.timer_deadline.load(Ordering::Acquire);
        if deadline == 0 || deadline > now {
            return false;
        }
        if v.timer_deadline
            .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue; // `run_timers` on another CPU marked it FIRED meanwhile
        }
        if deadline != FIRED {
            this_state().sched.lock().timers.cancel(v.id);
            domain.send_virq(abi::hypercall::virq::TIMER, v.index, now);
        }
        // Its timer's port may have been marked pending by `run_timers` on another CPU
        // that has not marked the vCPU yet: the send just above is then merged with that
        // one and marks nothing, and the caller goes back to the guest, whose way in enters
        // the upcall by the flag. Marked here as the sender will (a review of session 22:
        // sends to a pending port merged, the lost upcall of xtf-ring `upcall-idle` came
        // back through this path).
        let _ = domain.mark_if_pending(v.index);
        return true;
    }
}

/// `selftest=slow-timer-wake`: the CPU that fires a vCPU's timer and wakes it then holds
/// its CPU this long (interrupts off), while the woken vCPU runs elsewhere.
const SLOW_TIMER_WAKE_US: u64 = 300;

/// `selftest=slow-timer-fire`: the CPU that fires a vCPU's timer holds its CPU this long
/// (interrupts off) between sending its timer event and marking it [`FIRED`], while the
/// vCPU runs on another CPU and blocks.
const SLOW_TIMER_FIRE_US: u64 = 1000;

/// [`wake`] by the vCPU's own timer, which `run_timers` marked [`FIRED`]: if it wakes, the
/// mark is cleared in the same step, under the vCPU's state lock. The vCPU was asleep and
/// cannot be claimed (`claim` takes that lock) until the step is over, so the `FIRED` it
/// clears is this firing's. Cleared after the lock was let go, the mark could be a later
/// firing's: the woken vCPU runs on another CPU meanwhile, sets its next timer, and that
/// one fires while it is awake (preempted between `set_timer` and `block`), leaving
/// `FIRED` for its block to find; a late clear from this CPU (its thread stalled by the
/// host, interrupts taken) erased it, and the vCPU then slept with no timer, for good (a
/// latency domain under rtds on 4 emulated CPUs: notes of session 15).
fn wake_on_timer(v: &Vcpu, now: u64) -> bool {
    change_state(
        v,
        now,
        VcpuState::wake,
        Some(|s: &mut domain::VcpuStats| {
            woke(s, now);
            // It was asleep and now wakes: nothing is left to report. (Left FIRED, it
            // would only make a later block return at once, which callers allow.)
            let _ =
                v.timer_deadline
                    .compare_exchange(FIRED, 0, Ordering::AcqRel, Ordering::Acquire);
        }),
    )
}

/// Fires what is due on this CPU: vCPU timers, the policy tick, the end of the slice. `cs`
/// is this CPU's state, locked by the caller; waking a vCPU and kicking a CPU never take it.
fn run_timers(cs: &mut CpuSched, now: u64) {
    let cpu = this_cpu();
    while let Some(kerncore::timerheap::Entry {
        deadline_ns: deadline,
        id,
    }) = cs.timers.pop_due(now)
    {
        let Some(v) = domain::vcpu(id) else { continue };
        if v.timer_deadline.load(Ordering::Acquire) != deadline {
            continue; // cancelled or re-armed since
        }
        // The timer virtual IRQ first (for a domain that bound a port to it), then FIRED,
        // then the wake. A vCPU on its way to block either is woken here or, checking again
        // once it is marked blocked, finds FIRED and returns at once ([`take_due_timer`]);
        // in every order one of the two sees the other. Its event must be pending by then:
        // `take_due_timer` does not send it for a FIRED mark, and a block that returns with
        // none pending runs the guest on past its wake-up, the event coming later from this
        // CPU (a vCPU whose timer another CPU's heap held, that CPU's thread stopped by the
        // host between the two steps: `upcall-idle` ran on after its upcall was due, once in
        // CI; `latency/slow-timer-fire` shows it). Sent first, an event can come for a
        // timer re-armed or cancelled just now, as Xen's can (a timer VIRQ asks the guest
        // to look at the clock); and `take_due_timer` may send it too, if it took the
        // deadline between the load above and the send: merged with this one while the port
        // is still pending (and then it marks the vCPU itself, should this CPU not have
        // yet), a second event if the guest consumed the first meanwhile (a spurious timer
        // VIRQ: the guest looks at the clock and finds nothing due).
        let domain = v.domain();
        if let Some(d) = &domain {
            d.send_virq(abi::hypercall::virq::TIMER, v.index, now);
        }
        time::stall(SelfTest::SlowTimerFire, SLOW_TIMER_FIRE_US);
        if v.timer_deadline
            .compare_exchange(deadline, FIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue; // cancelled, re-armed or taken by its block since
        }
        // An event in flight for it (a port marked pending whose sender, on another CPU,
        // has not marked the vCPU yet; or this timer's own event, merged with one another
        // CPU's `run_timers` sent for the same deadline from its heap) is marked here, as
        // its sender will, before the wake: the woken vCPU goes back to its guest at once,
        // whose way in enters the upcall by the flag alone, and ran on past the event
        // (xtf-ring's `upcall-idle` in session 25's CI; `sched/slow-timer-deliver`), as
        // [`take_due_timer`]'s block did before it marked.
        if let Some(d) = &domain {
            let _ = d.mark_if_pending(v.index);
        }
        if wake_on_timer(&v, now) {
            count_time(TIMER_WAKE_LATE, now.saturating_sub(deadline));
            time::stall(SelfTest::SlowTimerWake, SLOW_TIMER_WAKE_US);
        }
        // Else it fired while the vCPU was awake (between its set_timer and its block):
        // FIRED, a deadline in the past, makes the next block return at once instead of
        // sleeping through a wake-up that already happened.
    }
    watch_neighbour(cpu, now);
    let section = arch::rcu::read_side();
    let here = cpupool::of_cpu(cpu, &section);
    let entry = here.map_or(u64::MAX, |h| h.entry);
    if entry != cs.tick_entry {
        // A new instance for this CPU (boot, a policy swap): its own tick.
        cs.tick_entry = entry;
        cs.next_tick = here
            .filter(|h| h.inst.timed)
            .and_then(|h| h.inst.policy.next_tick(h.local, now));
    }
    let tick_due = cs.next_tick.is_some_and(|t| t <= now);
    // A slice within `SLICE_SLOP_NS` of its end has ended (Xen's `timer_slop`: a timer due
    // that soon is run now). Under `-icount` the deadline fires up to about 1% early (3-6
    // µs of a 500 µs slice), and re-arming it for the rest cost an interrupt and a write of
    // the deadline, which let the other emulated CPU run on to its own next deadline first:
    // the slice then ended at the next tick, twice as long.
    if let Some(end) = cs.slice_end.filter(|&end| end <= now + SLICE_SLOP_NS) {
        // The timer's delay, and whatever kept this CPU from taking it (interrupts off in
        // the hypervisor; under emulation, the host not running this CPU's thread).
        counters_of(cpu).slice_late[slice_late_bucket(now.saturating_sub(end))]
            .fetch_add(1, Ordering::Relaxed);
        cs.slice_end = None;
        arch::percpu::my_need_resched().store(true, Ordering::Release);
    }
    if let (true, Some(h)) = (tick_due, here) {
        let policy = &h.inst.policy;
        policy.tick(h.local, now, &mut |c| kick(h.inst.global(c), now));
        cs.next_tick = policy.next_tick(h.local, now);
    }
}

/// The nearest the timer is armed from now (1 µs).
const MIN_ARM_NS: u64 = 1000;

/// How close to its end a slice counts as ended: Xen's `timer_slop` (`xen/common/timer.c`,
/// 50 µs by default), for the slice timer only.
const SLICE_SLOP_NS: u64 = 50_000;

/// Programs this CPU's hardware timer for its earliest pending event; returns whether it
/// wrote the hardware (armed or disarmed it).
///
/// The hardware is reprogrammed only when the earliest event moved earlier than what is
/// armed (or what is armed has passed): a timer that fires early finds nothing due and
/// re-arms, which is cheaper than an APIC write on every switch. (schedsim follows the same
/// rule to tell which switches write: `sched::sim`, `Sim::arm_timer`; not the console's
/// deadline while bytes wait for the serial port, which under QEMU they never do but for a
/// moment, and under `selftest=slow-uart` do.)
fn arm_timer(cs: &mut CpuSched, now: u64) -> bool {
    let earliest = [
        cs.slice_end,
        cs.next_tick,
        Some(watchdog::next_watch()),
        cs.timers.peek().map(|e| e.deadline_ns),
        // Console bytes waiting for the serial port: back soon to feed it.
        console::pending().then_some(now + console::POLL_NS),
    ]
    .into_iter()
    .flatten()
    .min()
    .map(|at| at.max(now + MIN_ARM_NS));
    let keep =
        matches!((cs.armed_at, earliest), (Some(armed), Some(at)) if armed > now && armed <= at);
    if keep {
        return false;
    }
    cs.armed_at = earliest;
    match earliest {
        Some(at) => time::arm_timer_at(at),
        None => smp::timer::disarm(),
    }
    true
}

/// Counts a switch or a `set_timer` that took `took` ns as kind `all`, and as kind `armed`
/// too if it wrote the timer (`wrote`).
fn count_timed(all: usize, armed: usize, took: u64, wrote: bool) {
    count_time(all, took);
    if wrote {
        count_time(armed, took);
    }
}

/// Counts a switch decided at `decided` (system ns), done now ([`SWITCH_TIME`], and
/// [`SWITCH_ARMED_TIME`] if it wrote the timer), if it `loaded` another address space
/// (between domains, or from idle: [`load_address_space`]). A switch between two vCPUs of one
/// domain is not counted: two of a guest's vCPUs yielding to each other make a hundred
/// thousand a second, at a third of the price, and filled the machine-wide histogram that
/// prices every other domain's switches (`schedsim --costs-from`; `isolation/switch-storm`,
/// an audit of session 24). schedsim keeps its profile's `switch_same_domain_ns` for those.
fn count_switch(decided: u64, wrote: bool, loaded: bool) {
    if !loaded {
        return;
    }
    let took = time::now_ns().saturating_sub(decided);
    count_timed(SWITCH_TIME, SWITCH_ARMED_TIME, took, wrote);
}

/// The timer interrupt, on whatever this CPU was doing. `rescheduling`: the caller
/// reschedules on its way out if a reschedule is due (the interrupt came from a guest).
pub fn on_timer_interrupt(rescheduling: bool) {
    console::poll();
    let now = time::now_ns();
    let mut cs = this_state().sched.lock();
    // Whatever was armed has fired (perhaps early, past the APIC timer's range): re-arm.
    // Fired a stall's length late, it marks that in the trace.
    if let Some(armed) = cs.armed_at.take() {
        trace::late(LateOf::Timer, armed, now);
    }
    run_timers(&mut cs, now);
    // Unless the reschedule about to happen arms it, with what it decides (every way out of
    // `reschedule` arms the timer: `Same`, a switch, or the idle loop). Arming here as well
    // wrote the deadline twice per slice end, and under QEMU's `-icount` (one host thread
    // running the emulated CPUs in turn) that first write let the other CPU run on to its
    // own next deadline before this one decided: a stall of up to a slice, charged to the
    // vCPU still current here. With 1024 domains on 2 CPUs under credit2 (500 µs slices, a
    // 1 ms tick) a quarter of all runs were two slices long for it.
    let due = arch::percpu::my_need_resched().load(Ordering::Acquire);
    if rescheduling && due {
        return;
    }
    arm_timer(&mut cs, now);
}

/// Runs what is due on this CPU's timers now, as its timer interrupt would (a hypercall's
/// continuation, `trap::hypercall_entry`, runs them before going back to the guest).
pub fn run_due_timers() {
    let now = time::now_ns();
    let mut cs = this_state().sched.lock();
    run_timers(&mut cs, now);
    arm_timer(&mut cs, now);
}

/// Whether this CPU must reschedule before returning to its guest.
pub fn must_reschedule() -> bool {
    take_need_resched()
}

/// What the way out of the hypervisor does after [`reschedule`] (Hubris's `NextTask`: the
/// scheduler decides and returns, and the entry code performs the switch, so no Rust frame
/// is abandoned with something still to drop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Back to the vCPU that entered, with its frame as it is.
    Same,
    /// To the vCPU now in the frame (another one, or the same one restored in full).
    Switched,
    /// Nothing to run: the entry code jumps to the idle loop on a fresh stack. The frame
    /// holds nothing any more.
    Idle,
}

impl Next {
    /// What the way out does after `self`, then `later`.
    pub fn then(self, later: Next) -> Next {
        match (self, later) {
            (_, Next::Idle) | (Next::Idle, _) => Next::Idle,
            (Next::Switched, _) | (_, Next::Switched) => Next::Switched,
            (Next::Same, Next::Same) => Next::Same,
        }
    }
}

/// Saves the current vCPU (its registers from `frame`), lets the policy choose, and loads
/// the choice into `frame`. If there is nothing to run, the CPU is left with no current
/// vCPU and the kernel's address space, and the caller must go idle ([`Next::Idle`]).
pub fn reschedule(frame: &mut TrapFrame, from_hypercall: bool) -> Next {
    let cpu = this_cpu();
    let now = time::now_ns();
    // This CPU's state, locked once for the whole decision and switch and handed down. Only
    // this CPU takes it: other CPUs read its figures (`CpuState::counters`, atomics), and
    // nothing this path calls (the policy, wake-ups, kicks, IPI handlers served while
    // waiting) locks it.
    let mut cs = this_state().sched.lock();
    // Moved out, not cloned: put back if it runs on, released if it leaves.
    let prev = cs.current.take();
    if let Some(p) = prev.as_ref().map(Held::vcpu) {
        // Save first: the registers must be in place by `release`, after which the policy
        // may give the vCPU to another CPU, which loads them without waiting.
        p.regs.lock().copy_from(frame);
        if from_hypercall && !arch::percpu::fpu_restore_pending() {
            // Its XMM registers hold hypervisor data now (caller-saved): save it scrubbed.
            // (Unless the hypercall put the state to resume with in its FPU area already:
            // `callback_return` does.)
            save_fpu_scrubbed(p);
        }
    }
    run_timers(&mut cs, now);
    kicks_served(now);
    let decision = decide(&mut cs, cpu, now);
    let decided = time::now_ns();
    cs.slice_end = decision.slice_ns.map(|s| now + s);
    if let Some(p) = prev.as_ref().map(Held::vcpu)
        && decision.next == Some(VcpuId(p.id))
    {
        // It yielded but was picked again: it did not stop.
        p.yielded.store(false, Ordering::Relaxed);
        runs_on(p, now);
        cs.current = prev;
        arm_timer(&mut cs, now);
        return Next::Same;
    }
    // SAFETY: the decision just made on this CPU picked it; it is claimed below, or kept as
    // an `Arc` (`unclaimed`) before this CPU's next decision.
    let next = decision.next.and_then(|id| unsafe { Held::picked(id.0) });
    if let Some(p) = prev.as_ref().map(Held::vcpu) {
        // The CPU still holds its selectors (nothing has loaded another vCPU's yet).
        p.selectors
            .store(arch::selectors::save(), Ordering::Relaxed);
        account_out(p, now);
    }
    // The pick is claimed before anything of it is loaded: if another CPU stopped it since
    // the pick, this CPU goes idle instead and decides again there (`idle_step`), once
    // `prev` is released: a policy's next `schedule` on this CPU must come after
    // `prev`'s `context_saved` (`sched::Policy`'s contract).
    let next = match next {
        Some(n) if claim(n.vcpu(), cpu) => Some(n),
        Some(n) => {
            cs.unclaimed = n.into_arc();
            None
        }
        None => None,
    };
    match next {
        Some(n) => {
            switch_in(&n, cpu, now);
            frame.copy_from(&n.vcpu().regs.lock());
            let pml4 = n.vcpu().pml4;
            cs.current = Some(n);
            let wrote = arm_timer(&mut cs, now);
            let loaded = load_address_space(pml4, prev);
            count_switch(decided, wrote, loaded);
            Next::Switched
        }
        None => {
            arch::percpu::clear_current();
            // Released while its address space is still loaded here (`Held`'s case 3).
            if let Some(p) = prev {
                release(p);
            }
            arch::addrspace::activate_kernel();
            Next::Idle
        }
    }
}

/// What this CPU's pool's policy picks for it (`cpu` is the machine's number); a CPU in no
/// pool idles with no timer. Then the kicks the policy could not return are sent, and its
/// tick here is asked for again (`sched::Policy::take_kicks`, `next_tick`).
fn decide(cs: &mut CpuSched, cpu: usize, now: u64) -> sched::Decision {
    let section = arch::rcu::read_side();
    match cpupool::of_cpu(cpu, &section) {
        Some(h) => {
            let policy = &h.inst.policy;
            let decision = policy.schedule(h.local, now);
            if h.inst.timed {
                policy.take_kicks(&mut |c| kick(h.inst.global(c), now));
                cs.next_tick = policy.next_tick(h.local, now);
            }
            decision
        }
        None => sched::Decision {
            next: None,
            slice_ns: None,
            migrated: false,
        },
    }
}

/// Saves the leaving vCPU's FPU state, scrubbed; `v` is the vCPU still recorded as current
/// on this CPU (`arch::percpu::set_current`), whose FPU area is the one saved into.
fn save_fpu_scrubbed(v: &Vcpu) {
    debug_assert!(core::ptr::eq(arch::percpu::current().0.cast::<Vcpu>(), v));
    arch::percpu::save_current_fpu_scrubbed();
}

/// The current vCPU, picked again where it runs: if it blocked and was woken since (an
/// event came, or was pending, before its block got to the decision), its state says
/// runnable; it runs on, so it is running again as [`claim`] and [`switch_in`] would have
/// it (its wake-up served now; no switch). Left runnable, it ran on counted as waiting, and
/// its next switch-in took the time since that wake-up as its latency (`block-pending.toml`:
/// alone on a CPU, a vCPU that blocks with an event pending waited 100% of the run, and
/// woke 8.8 ms late at p99). Its account never stopped running (`kerncore::account`: it
/// was on this CPU all along), and its run goes on from its switch-in, which the guest's
/// time slot still says. Any other state (paused or killed since the decision) is left as
/// it is: whoever changed it kicked this CPU, whose next decision takes the vCPU off.
fn runs_on(v: &Vcpu, now: u64) {
    let mut state = v.state.lock();
    if *state != VcpuState::Runnable {
        return;
    }
    *state = VcpuState::Running;
    let mut s = v.stats.lock();
    s.account.run(now);
    if let Some(woke) = s.woke_at.take() {
        s.latency.record(now.saturating_sub(woke));
    }
}

/// Accounting for the vCPU leaving this CPU. It stays claimed (`running_on`) until
/// [`release`], once this CPU no longer uses its address space.
///
/// The run state and the account change in one step, under both locks (the state's, then
/// the figures', as everywhere): a wake-up or a pause from another CPU between the two
/// found the account still running, which it leaves to the switch-out, and the switch-out
/// then accounted the state it had read before. A vCPU woken in between waited uncounted
/// until its switch-in; one paused in between counted its whole pause as waiting
/// (`selftest=slow-switch-out`, check `sched/slow-switch-out`).
fn account_out(v: &Vcpu, now: u64) {
    let (why, ran) = {
        let mut state = v.state.lock();
        if *state == VcpuState::Running {
            *state = VcpuState::Runnable;
        }
        // Runnable: preempted, yielded, or blocked and woken since, before this decision
        // (it waits from now: `kerncore::account`).
        let runnable = *state == VcpuState::Runnable;
        let yielded = v.yielded.swap(false, Ordering::Relaxed);
        let why = match *state {
            VcpuState::Runnable if yielded => TraceEvent::Yield,
            VcpuState::Runnable => TraceEvent::Preempt,
            VcpuState::Dead => TraceEvent::Dead,
            _ => TraceEvent::Block,
        };
        time::stall(SelfTest::SlowSwitchOut, SLOW_SWITCH_OUT_US);
        let mut s = v.stats.lock();
        let ran = s.account.leave(now, runnable);
        v.publish_time(false, s.account.cpu_ns(), s.account.since());
        (why, ran)
    };
    trace::record(why, v, now);
    this_state()
        .counters
        .busy_ns
        .fetch_add(ran, Ordering::Relaxed);
}

/// `selftest=slow-switch-out`: a switch-out lingers this long between reading the vCPU's
/// run state and changing its account.
const SLOW_SWITCH_OUT_US: u64 = 200;

/// Lets other CPUs run `v`: called once its registers and FPU state are saved and this CPU
/// has claimed the next vCPU (or will go idle), while this CPU's CR3 still holds `v`'s
/// address space: from the store to `running_on` on, that is what keeps `v` and its domain
/// alive (`Held`'s case 3) until the CPU loads another. Then tells the policy
/// (`context_saved`): until now it has given `v` to no other CPU, which is why [`claim`]
/// never waits. (Or, for a vCPU adopted by a new instance while it ran, wakes it there.)
/// Consumes the hold: nothing of `v` is touched after.
fn release(held: Held) {
    let v = held.vcpu();
    v.running_on.store(NOT_RUNNING, Ordering::Release);
    saved(v);
    held.check("during its release");
}

/// Tells the policy that `v`, switched away from (or picked and never claimed, [`claim`]),
/// is saved: the second half of [`release`], which also serves a vCPU this CPU never
/// claimed (its `running_on` is not this CPU's to clear: another decision may have given it
/// back to this CPU by now).
fn saved(v: &Vcpu) {
    let now = time::now_ns();
    if v.adopt.swap(false, Ordering::AcqRel) {
        // It joined a new instance while it ran here (`cpupool` swap of its own pool): that
        // one has it asleep, and no other CPU could take it until now. The old one is
        // retired, so it gets no `context_saved`.
        let kick_cpu = {
            let state = v.state.lock();
            if *state == VcpuState::Runnable {
                vcpu_policy(v, |p| p.wake(VcpuId(v.id), now).kick)
            } else {
                None
            }
        };
        if let Some(c) = kick_cpu {
            kick_for_wake(c, now);
        }
        return;
    }
    // The instance that gave `v` to this CPU: `v`'s, as long as this CPU is still in it (a
    // vCPU changes instance only once paused and off every CPU, or, Domain0 in its own
    // pool's swap, with `adopt` set).
    let cpu = this_cpu();
    let section = arch::rcu::read_side();
    let Some(inst) = cpupool::of_vcpu(v, &section) else {
        return;
    };
    // This CPU's number there: one atomic while the CPU map still points at that instance
    // (always, but during a pool change), else a search of its CPUs.
    let local = match cpupool::of_cpu(cpu, &section) {
        Some(here) if core::ptr::eq(here.inst, inst) => here.local,
        _ => match inst.cpus.iter().position(|&c| c == cpu) {
            Some(local) => local,
            None => return,
        },
    };
    if let Some(c) = inst.policy.context_saved(local, VcpuId(v.id), now) {
        kick(inst.global(c), now);
    }
    // A second kick it made waits in `take_kicks` for the next decision on any CPU.
}

/// Claims the vCPU the policy picked for this CPU (`running_on`), if it is still runnable:
/// another CPU may have paused, taken down or killed it between the pick and now. Then it
/// is left unclaimed, and the caller must not switch it in: Domain0's pause waits only for
/// the vCPUs some CPU has claimed (`pv::control::wait_off_cpu`, Xen's `vcpu_sleep_sync`),
/// so a pause that returned between the pick and the claim would otherwise see its domain
/// run after it (until the stopper's kick brought it back into the hypervisor), and a pool
/// move or destroy proceed with it loaded on a CPU. Xen closes the same window by setting
/// `is_running` under the scheduler lock that `vcpu_sleep_nosync` takes, and its
/// `sched_context_switch` / `context_saved` re-check `vcpu_runnable` after the switch.
///
/// The claim is made under the vCPU's state lock, which `stop` takes to change the state:
/// either the stop comes first and the claim sees it, or the claim comes first and the
/// stop's wait sees `running_on` set (its read comes after the state lock it took after
/// ours).
///
/// The compare-and-swap cannot fail: a CPU that switches away from a vCPU holds it until
/// [`release`], which is when it tells the policy (`Policy::context_saved`), and the policy
/// hands that vCPU to no other CPU before then (`sched::Policy`'s contract). A failed claim
/// is a policy that broke the contract, and stops the machine before a vCPU runs on two
/// CPUs.
fn claim(v: &Vcpu, cpu: usize) -> bool {
    let mut state = v.state.lock();
    if *state != VcpuState::Runnable {
        return false;
    }
    if let Err(holder) =
        v.running_on
            .compare_exchange(NOT_RUNNING, cpu, Ordering::AcqRel, Ordering::Acquire)
    {
        panic!(
            "policy {} picked vCPU {} for CPU {cpu} while CPU {holder} still held it (before \
             its context_saved): it would run on two CPUs",
            cpupool::of_vcpu(v, &arch::rcu::read_side()).map_or("?", |i| i.name()),
            v.id
        );
    }
    *state = VcpuState::Running;
    true
}

/// Accounts the start of `held`'s run here, claimed by this CPU ([`claim`]), and records it
/// as this CPU's current vCPU. The vCPU leaving, if any, is still to be released, which
/// [`load_address_space`] does just before it loads the new one's address space.
///
/// The address space is loaded last, after all of the switch's bookkeeping: a CR3 load
/// flushes the TLB (under TCG all of it, global pages and QEMU's jump cache included), so
/// every page the hypervisor touches after it costs a page walk. Under TCG a domain switch
/// costs 3.1 µs between two vCPUs of one domain (no CR3 load) and 8–9 µs between domains;
/// loading CR3 last saved about 3% of the latter.
fn switch_in(held: &Held, cpu: usize, now: u64) {
    let (v, domain) = (held.vcpu(), held.domain());
    {
        let mut s = v.stats.lock();
        s.account.run(now);
        if let Some(woke) = s.woke_at.take() {
            s.latency.record(now.saturating_sub(woke));
        }
        s.switches += 1;
        if s.last_cpu.is_some_and(|c| c != cpu) {
            s.migrations += 1;
        }
        s.last_cpu = Some(cpu);
        v.publish_time(true, s.account.cpu_ns(), s.account.since());
    }
    trace::record(TraceEvent::Run, v, now);
    arch::selectors::restore(v.selectors.load(Ordering::Relaxed));
    this_state()
        .counters
        .switches
        .fetch_add(1, Ordering::Relaxed);
    // SAFETY: `v` and `domain` stay alive and unmoved until the next `set_current` here:
    // the caller claimed `v` (`claim`) and keeps its `Held` in `CpuSched::current` until it
    // switches away, which records the next vCPU (`set_current`) or none (`clear_current`)
    // before it releases `v` (`Held`'s cases 2 and 3). Its FPU area is this CPU's alone
    // meanwhile, for the same claim.
    unsafe {
        arch::percpu::set_current(
            (v as *const Vcpu).cast(),
            (domain as *const Domain).cast(),
            v.fpu.as_ptr(),
            upcall_flag(v),
            true,
        )
    };
}

/// What the `syscall` exit's fast path reads for `v` (`arch::percpu::set_current`): its
/// `upcall_pending` byte if it has a callback, else none. Without a callback a pending
/// event enters nothing (`pv::upcall::deliver`), so the byte would only send the exit down
/// the slow path for nothing, and reading it costs a TLB fill of the counters page at
/// each switch under TCG (README.md, "What the 34 fills are now").
fn upcall_flag(v: &Vcpu) -> *const core::sync::atomic::AtomicU8 {
    if v.callback.load(Ordering::Relaxed) != 0 {
        v.upcall_pending()
    } else {
        core::ptr::null()
    }
}

/// `v`, current on this CPU, registered or removed its callback (`pv::upcall::set_callback`,
/// its own hypercall): the exit path's upcall check follows ([`upcall_flag`]).
pub fn callback_changed(v: &Vcpu) {
    let (current, _) = arch::percpu::current();
    assert!(
        core::ptr::eq(current.cast::<Vcpu>(), v),
        "vCPU {} changed its callback while not current on this CPU",
        v.id
    );
    // SAFETY: `v` is this CPU's current vCPU (checked above): held here until the next
    // `set_current`, and its `upcall_pending` byte lies in its domain's counters page,
    // which `v` holds (`Vcpu::counters`) for as long as it lives.
    unsafe { arch::percpu::set_upcall_flag(upcall_flag(v)) };
}

/// Releases `prev` (the vCPU leaving), then loads the address space `pml4` (the next
/// vCPU's) unless `prev`'s, still loaded, is the same. Returns whether it loaded it.
///
/// The release comes first, while the pages it touches (the policy's queues, `prev`) are
/// still in the TLB: a CR3 load flushes it (under TCG all of it, QEMU's jump cache too),
/// and every page touched after the load costs a page walk. Released, `prev` may run on
/// another CPU at once, which is harmless: its registers and FPU state are saved, and two
/// CPUs may hold one address space. What must wait for the load is freeing the address
/// space; `arch::percpu::load_cr3` records the PML4 this CPU is leaving until the load is
/// done, and `destroy` and `flush_tlbs` look there (`Domain::loaded_anywhere`).
fn load_address_space(pml4: u64, prev: Option<Held>) -> bool {
    let load = prev.as_ref().is_none_or(|p| p.vcpu().pml4 != pml4);
    if let Some(p) = prev {
        release(p);
    }
    if load {
        arch::addrspace::activate_pml4(pml4);
    }
    load
}

/// A CPU's figures as of `now`, from its atomics: no lock of that CPU is taken.
pub fn cpu_figures(cpu: usize, now: u64) -> CpuFigures {
    let c = counters_of(cpu);
    let since = c.idle_since.load(Ordering::Relaxed);
    let current_idle = if since == NOT_IDLE {
        0
    } else {
        now.saturating_sub(since)
    };
    let kind = |kind: usize, k: usize| {
        c.timed
            .get(kind * KICK_LATE_BUCKETS + k)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    };
    CpuFigures {
        idle_ns: c.idle_total_ns.load(Ordering::Relaxed) + current_idle,
        busy_ns: c.busy_ns.load(Ordering::Relaxed),
        switches: c.switches.load(Ordering::Relaxed),
        slice_late: core::array::from_fn(|k| c.slice_late[k].load(Ordering::Relaxed)),
        kick_local_late: core::array::from_fn(|k| kind(KICK_LOCAL, k)),
        kick_late: core::array::from_fn(|k| kind(KICK_REMOTE, k)),
        kick_wake_late: core::array::from_fn(|k| kind(KICK_REMOTE_WAKE, k)),
        switch_time: core::array::from_fn(|k| kind(SWITCH_TIME, k)),
        set_timer_time: core::array::from_fn(|k| kind(SET_TIMER_TIME, k)),
        switch_armed_time: core::array::from_fn(|k| kind(SWITCH_ARMED_TIME, k)),
        set_timer_armed_time: core::array::from_fn(|k| kind(SET_TIMER_ARMED_TIME, k)),
        timer_wake_late: core::array::from_fn(|k| kind(TIMER_WAKE_LATE, k)),
    }
}

/// What the idle loop (`crate::trap::idle_loop`) does next.
pub enum IdleStep {
    /// Nothing to run: sleep until an interrupt ([`idle_sleep`]).
    Sleep,
    /// The policy picked a vCPU whose saved frame must not reach `iretq`; kill its domain
    /// (the policy then retires it) and look again.
    Refuse(DomainId, KillReason),
    /// This CPU switched to a vCPU and loaded its address space: enter it with the frame.
    Enter(TrapFrame),
    /// The vCPU the policy picked was stopped before this CPU could claim it: look again.
    Again,
}

/// One look for work by an idle CPU: due timers, then the policy.
pub fn idle_step(now: u64) -> IdleStep {
    let cpu = this_cpu();
    take_need_resched();
    let mut cs = this_state().sched.lock();
    run_timers(&mut cs, now);
    kicks_served(now);
    let decision = decide(&mut cs, cpu, now);
    let decided = time::now_ns();
    if let Some(u) = cs.unclaimed.take() {
        // That decision descheduled it (`claim`).
        saved(&u);
    }
    // SAFETY: the decision just made on this CPU picked it; it is claimed below, kept as an
    // `Arc` (`unclaimed`), or dropped (refused) before this CPU's next decision.
    let Some(n) = decision.next.and_then(|id| unsafe { Held::picked(id.0) }) else {
        // Nothing to run, but the policy may want to decide again at a set time (rtds: when
        // a depleted vCPU's budget comes back): `slice_ns` holds for an idle CPU too.
        cs.slice_end = decision.slice_ns.map(|s| now + s);
        return IdleStep::Sleep;
    };
    // The same check as every other way back to a guest (`trap::leave`): a frame saved while
    // another vCPU was switched in (a `syscall` in the last two bytes of the guest half,
    // say) must not reach `iretq`. Its domain is killed before this CPU claims the vCPU.
    if let Err(reason) = arch::trap::exit_frame_ok(&n.vcpu().regs.lock()) {
        return IdleStep::Refuse(n.vcpu().domain, reason);
    }
    if !claim(n.vcpu(), cpu) {
        // Stopped since the pick: decide again.
        cs.unclaimed = n.into_arc();
        return IdleStep::Again;
    }
    this_state().counters.busy_from(now);
    switch_in(&n, cpu, now);
    let frame = n.vcpu().regs.lock().clone();
    let pml4 = n.vcpu().pml4;
    cs.slice_end = decision.slice_ns.map(|s| now + s);
    cs.current = Some(n);
    let wrote = arm_timer(&mut cs, now);
    let loaded = load_address_space(pml4, None);
    count_switch(decided, wrote, loaded);
    IdleStep::Enter(frame)
}

/// Sleeps until an interrupt, unless a reschedule is already asked for; idle time is
/// counted from `now`.
pub fn idle_sleep(now: u64) {
    console::poll();
    this_state().counters.idle_from(now);
    arm_timer(&mut this_state().sched.lock(), now);
    if !arch::percpu::my_need_resched().load(Ordering::Acquire) {
        arch::entry::wait_for_interrupt();
    }
}
