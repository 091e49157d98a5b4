//! Per-CPU runqueues and per-vCPU slots: the locking skeleton that every policy shares.
//!
//! Why it looks like this. The hot paths (wake, pick) must not take a global lock or
//! allocate, and the crate forbids `unsafe`, so Xen's trick of protecting a vCPU's private
//! data with "the runqueue lock of whatever CPU it is on" cannot be expressed as a borrow.
//! Instead every vCPU has its own small lock, and one lock order holds everywhere:
//!
//! 1. a runqueue lock (`Cpu::lock`), then
//! 2. the lock of a vCPU whose home is that CPU.
//!
//! A second runqueue lock is only ever *tried* (`try_lock`, as Xen's `csched_load_balance`
//! does with `pcpu_schedule_trylock`), so two CPUs stealing from each other cannot deadlock.
//! Holding a vCPU lock, nobody waits for a runqueue lock.
//!
//! A vCPU's home CPU is kept in an atomic next to its lock so that `wake` and `sleep` can
//! find the runqueue to lock without holding anything; after taking both locks they check
//! the home again and retry if a steal moved the vCPU meanwhile (Xen's
//! `unit_schedule_lock` loop). The home changes only under the old home's runqueue lock,
//! the new home's runqueue lock and the vCPU's lock, i.e. only in a steal.
//!
//! What peers read without a lock (a CPU's load, its head key, whether it idles) is
//! published by the lock guard itself: [`CpuGuard`] stores the load and the queue's
//! [`RunQueue::key`] when it unlocks, so no change to a queue can go unpublished. Whether a
//! CPU idles is published only by its own `schedule` ([`Runqueues::lock_for_schedule`]):
//! between two of them the bit belongs to the wake-ups that claim it ([`Idlers::claim`]).
//!
//! A vCPU that a CPU's `schedule` has just switched away from is *leaving* that CPU until
//! the caller reports it saved ([`Runqueues::context_saved`], Xen's `context_saved`), or
//! until that CPU schedules again: meanwhile no other CPU may steal from that CPU, so a
//! policy built on these helpers never hands out a vCPU whose registers are still on
//! another CPU. A steal refused for that reason makes `context_saved` kick an idle CPU.
//!
//! Every table is allocated once, from the [`Topology`], when the policy is created;
//! runqueue storage is resized in `insert_vcpu` and `remove_vcpu` ([`RunQueue::fit`]), never
//! on wake or pick. Its size is a function of the number of vCPUs present and nothing else
//! (the next power of two), so once the domains of a run are gone the policy holds exactly the
//! heap it held before they came: Domain0 checks the hypervisor's heap against that.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use spin::mutex::{SpinMutex, SpinMutexGuard};

use crate::handoff::{HandoffGuard, HandoffMutex};

use crate::{DomainId, Error, ParamSpec, PolicyInfo, Stats, Topology, VcpuId, Wakeup};

use core::ops::{Deref, DerefMut};

/// The largest machine a policy can be built for (docs/DESIGN.md: 1 to 255 CPUs).
pub const MAX_CPUS: usize = 256;

/// Where a vCPU is, as far as its policy knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Neither queued nor running: asleep, or runnable but held back (a parked credit vCPU).
    Off,
    /// On its home CPU's runqueue.
    Queued,
    /// The current vCPU of its home CPU.
    Running,
}

/// The part of a vCPU's state that every policy has, plus the policy's own `data`.
#[derive(Debug)]
pub struct VcpuState<S> {
    /// Inserted and not removed.
    pub present: bool,
    /// The domain it belongs to.
    pub domain: DomainId,
    /// Queued, running or neither.
    pub place: Place,
    /// The caller wants it to run (woken and not put to sleep since).
    pub runnable: bool,
    /// It yielded since it was last picked.
    pub yielded: bool,
    /// The policy's private per-vCPU data.
    pub data: S,
}

/// One vCPU: its home CPU (readable without a lock) and its locked state.
pub struct Slot<S> {
    home: AtomicUsize,
    state: SpinMutex<VcpuState<S>>,
}

/// The locked part of a CPU's runqueue.
#[derive(Debug)]
pub struct CpuQueue<Q> {
    /// The vCPU that `schedule` last returned for this CPU, if any.
    curr: Option<VcpuId>,
    /// When `curr` was picked (ns).
    curr_since: u64,
    /// The vCPU this CPU's last `schedule` switched away from, until `context_saved`.
    leaving: Option<VcpuId>,
    /// A peer's steal was refused while `leaving` was set (so `context_saved` kicks one).
    refused: bool,
    /// The policy's queue.
    pub q: Q,
    /// Counters, kept under the lock so they cost no atomics.
    pub stats: Stats,
}

impl<Q> CpuQueue<Q> {
    /// The vCPU that `schedule` last returned for this CPU, if any (changed only by
    /// [`Runqueues::take_curr`] and [`Runqueues::dispatch`]).
    pub fn curr(&self) -> Option<VcpuId> {
        self.curr
    }

    /// When `curr` was picked (ns), for charging and rate limiting.
    pub fn curr_since(&self) -> u64 {
        self.curr_since
    }

    /// The vCPU this CPU is still switching away from (picked elsewhere by nobody until the
    /// caller's `context_saved`), if any.
    pub fn leaving(&self) -> Option<VcpuId> {
        self.leaving
    }
}

/// One CPU's runqueue: the lock (handed to a waiter on release, [`crate::handoff`]) plus
/// figures that peers read without locking.
pub struct Cpu<Q> {
    lock: HandoffMutex<CpuQueue<Q>>,
    /// Queued plus running vCPUs (Xen's `nr_runnable`); read racily by stealers.
    nr_runnable: AtomicUsize,
    /// A policy-defined summary of the head of the queue (BVT: its effective virtual time;
    /// credit: its priority), read racily by stealers to skip useless peers.
    key: AtomicU64,
}

/// What a policy's queue type must offer the shared code.
pub trait RunQueue {
    /// Number of queued vCPUs.
    fn len(&self) -> usize;
    /// True when nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removes `v` wherever it is in the queue; false if it was not there.
    fn remove(&mut self, v: VcpuId) -> bool;
    /// Sizes the storage for exactly `room` entries (never fewer than are queued), growing
    /// or shrinking it. Called at insert and remove time only, never on wake or pick.
    fn fit(&mut self, room: usize);
    /// A summary of the head of the queue that peers read without the lock, to choose whom
    /// to steal from ([`Steal::key_below`], [`Order::LowestKey`]): lower is more urgent
    /// (credit: the head's priority; BVT: its effective virtual time). Published whenever
    /// the runqueue lock is released. The default: 0, or `u64::MAX` when empty.
    fn key(&self) -> u64 {
        if self.is_empty() { u64::MAX } else { 0 }
    }
}

/// [`RunQueue::fit`] for a `VecDeque`: capacity exactly `room` (or the length, if larger).
pub fn fit_deque<T>(q: &mut VecDeque<T>, room: usize) {
    let room = room.max(q.len());
    if q.capacity() < room {
        q.reserve_exact(room - q.len());
    } else if q.capacity() > room {
        q.shrink_to(room);
    }
}

impl RunQueue for VecDeque<VcpuId> {
    fn len(&self) -> usize {
        VecDeque::len(self)
    }
    fn remove(&mut self, v: VcpuId) -> bool {
        match self.iter().position(|&x| x == v) {
            Some(i) => {
                VecDeque::remove(self, i);
                true
            }
            None => false,
        }
    }
    fn fit(&mut self, room: usize) {
        fit_deque(self, room)
    }
}

/// The bitmap of idle CPUs (Xen's `prv->idlers`), updated with atomics.
pub struct Idlers {
    words: Vec<AtomicU64>,
    ncpus: usize,
}

impl Idlers {
    fn new(ncpus: usize) -> Self {
        let words = (0..ncpus.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Idlers { words, ncpus }
    }

    /// Marks `cpu` idle or busy.
    pub fn set(&self, cpu: usize, idle: bool) {
        let bit = 1u64 << (cpu % 64);
        if idle {
            self.words[cpu / 64].fetch_or(bit, Ordering::AcqRel);
        } else {
            self.words[cpu / 64].fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// Whether `cpu` is idle.
    pub fn is_idle(&self, cpu: usize) -> bool {
        self.words[cpu / 64].load(Ordering::Acquire) & (1u64 << (cpu % 64)) != 0
    }

    /// The first idle CPU after `start` (cyclically, `start` itself last), if any.
    pub fn find_after(&self, start: usize) -> Option<usize> {
        (1..=self.ncpus).map(|i| (start + i) % self.ncpus).find(|&c| self.is_idle(c))
    }

    /// Claims `cpu` if it is idle: clears its bit and says whether it was set. A kicked idle
    /// CPU is marked busy at once, so two wake-ups kick two different idlers (Xen's
    /// `__runq_tickle` clears the bits of the CPUs it tickles for the same reason); the
    /// CPU's next `schedule` publishes its real state again.
    pub fn claim(&self, cpu: usize) -> bool {
        let bit = 1u64 << (cpu % 64);
        self.words[cpu / 64].fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Claims the first idle CPU after `start` (cyclically, `start` itself last).
    pub fn claim_after(&self, start: usize) -> Option<usize> {
        (1..=self.ncpus).map(|i| (start + i) % self.ncpus).find(|&c| self.claim(c))
    }
}

/// What a policy did with a waking vCPU: the answer of the closure given to
/// [`Runqueues::wake_with`], from which the helper chooses the CPU to kick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Held off the queues (credit: a vCPU parked by its cap); nothing is kicked.
    Held,
    /// Queued, to wait its turn: an idle CPU is kicked to run it, if there is one.
    Queued,
    /// Queued, and more urgent than what its home CPU runs: an idle CPU is kicked to run
    /// it if there is one, else the home CPU to preempt ([`Runqueues::kick_for`]).
    Preempt,
}

/// The order in which [`Runqueues::steal`] visits the peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// From `cpu + 1` on, cyclically; the first peer that yields a vCPU wins (Xen's
    /// `csched_load_balance`).
    NextCpu,
    /// Only the peer with the lowest published key (the first of equals in `NextCpu`
    /// order), e.g. the earliest virtual time.
    LowestKey,
}

/// Which peers are worth stealing from ([`Runqueues::steal`]). `Steal::default()` has the
/// usual limits; change a field with struct update syntax:
/// `Steal { key_below: k, ..Steal::default() }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steal {
    /// Only from a peer with at least this many runnable vCPUs, queued plus running.
    /// Default 2: a peer's only vCPU stays where it is.
    pub min_runnable: usize,
    /// Only from a peer whose queue's [`RunQueue::key`] is below this. Default `u64::MAX`:
    /// any peer with something queued.
    pub key_below: u64,
    /// The order of the visit. Default [`Order::NextCpu`].
    pub order: Order,
}

impl Default for Steal {
    fn default() -> Self {
        Steal { min_runnable: 2, key_below: u64::MAX, order: Order::NextCpu }
    }
}

/// The shared skeleton: per-CPU runqueues, per-vCPU slots and the idle map.
pub struct Runqueues<Q, S> {
    cpus: Vec<CachePadded<Cpu<Q>>>,
    vcpus: Vec<CachePadded<Slot<S>>>,
    /// Idle CPUs.
    pub idlers: Idlers,
    inserted: AtomicUsize,
}

/// A runqueue lock guard. Dereferences to the [`CpuQueue`]; when it unlocks, it publishes
/// the CPU's load (queued plus running) and the queue's [`RunQueue::key`] for peers to read
/// without the lock, and, if it was taken by [`Runqueues::lock_for_schedule`], whether the
/// CPU idles. There is no other way to publish, so no change can be forgotten.
pub struct CpuGuard<'a, Q: RunQueue> {
    inner: HandoffGuard<'a, CpuQueue<Q>>,
    cpu: &'a Cpu<Q>,
    idlers: &'a Idlers,
    index: usize,
    schedule: bool,
}

impl<Q: RunQueue> CpuGuard<'_, Q> {
    /// The CPU whose runqueue this is.
    pub fn cpu(&self) -> usize {
        self.index
    }
}

impl<Q: RunQueue> Deref for CpuGuard<'_, Q> {
    type Target = CpuQueue<Q>;
    fn deref(&self) -> &CpuQueue<Q> {
        &self.inner
    }
}

impl<Q: RunQueue> DerefMut for CpuGuard<'_, Q> {
    fn deref_mut(&mut self) -> &mut CpuQueue<Q> {
        &mut self.inner
    }
}

impl<Q: RunQueue> Drop for CpuGuard<'_, Q> {
    fn drop(&mut self) {
        let rq = &*self.inner;
        let n = rq.q.len() + usize::from(rq.curr.is_some());
        self.cpu.nr_runnable.store(n, Ordering::Relaxed);
        self.cpu.key.store(rq.q.key(), Ordering::Relaxed);
        if self.schedule {
            self.idlers.set(self.index, rq.curr.is_none());
        }
    }
}

/// A vCPU lock guard.
pub type VcpuGuard<'a, S> = SpinMutexGuard<'a, VcpuState<S>>;

impl<Q: RunQueue, S: Default> Runqueues<Q, S> {
    /// Allocates every table for `topo`; `queue` builds one empty runqueue.
    pub fn new(topo: &Topology, queue: impl Fn() -> Q) -> Result<Self, Error> {
        if topo.cpus == 0 || topo.cpus > MAX_CPUS || topo.max_vcpus == 0 || topo.max_domains == 0 {
            return Err(Error::BadTopology);
        }
        let cpus = (0..topo.cpus)
            .map(|_| {
                CachePadded::new(Cpu {
                    lock: HandoffMutex::new(CpuQueue {
                        curr: None,
                        curr_since: 0,
                        leaving: None,
                        refused: false,
                        q: queue(),
                        stats: Stats::default(),
                    }),
                    nr_runnable: AtomicUsize::new(0),
                    key: AtomicU64::new(u64::MAX),
                })
            })
            .collect();
        let vcpus = (0..topo.max_vcpus)
            .map(|_| {
                CachePadded::new(Slot {
                    home: AtomicUsize::new(0),
                    state: SpinMutex::new(VcpuState {
                        present: false,
                        domain: DomainId(0),
                        place: Place::Off,
                        runnable: false,
                        yielded: false,
                        data: S::default(),
                    }),
                })
            })
            .collect();
        let idlers = Idlers::new(topo.cpus);
        for c in 0..topo.cpus {
            idlers.set(c, true);
        }
        let rqs = Runqueues { cpus, vcpus, idlers, inserted: AtomicUsize::new(0) };
        // The room an empty machine keeps (`refit`'s for no vCPU), from the start: a policy
        // instance whose first vCPUs come and go (a CPU pool's, whose domains all left) is
        // then back at its first heap, not one room per queue above it.
        rqs.refit();
        Ok(rqs)
    }
}

impl<Q: RunQueue, S> Runqueues<Q, S> {
    /// Number of CPUs.
    pub fn ncpus(&self) -> usize {
        self.cpus.len()
    }

    fn guard<'a>(&'a self, cpu: usize, inner: HandoffGuard<'a, CpuQueue<Q>>) -> CpuGuard<'a, Q> {
        CpuGuard { inner, cpu: &self.cpus[cpu], idlers: &self.idlers, index: cpu, schedule: false }
    }

    /// Locks `cpu`'s runqueue (the guard publishes what changed when it unlocks).
    pub fn lock_cpu(&self, cpu: usize) -> CpuGuard<'_, Q> {
        self.guard(cpu, self.cpus[cpu].lock.lock())
    }

    /// Locks `cpu`'s runqueue for its `schedule`, the one call that decides what `cpu`
    /// runs: counts the call, ends the switch its previous `schedule` began (if the caller
    /// did not report it with `context_saved`, this CPU has finished it anyway by now), and
    /// when it unlocks also publishes whether `cpu` idles.
    pub fn lock_for_schedule(&self, cpu: usize) -> CpuGuard<'_, Q> {
        let mut rq = self.lock_cpu(cpu);
        rq.schedule = true;
        rq.stats.schedules += 1;
        rq.leaving = None;
        rq.refused = false;
        rq
    }

    /// Tries to lock a peer's runqueue (the only way to hold two runqueue locks).
    pub fn try_lock_cpu(&self, cpu: usize) -> Option<CpuGuard<'_, Q>> {
        self.cpus[cpu].lock.try_lock().map(|g| self.guard(cpu, g))
    }

    /// Queued plus running vCPUs on `cpu`, as last published (racy, for balancing only).
    pub fn nr_runnable(&self, cpu: usize) -> usize {
        self.cpus[cpu].nr_runnable.load(Ordering::Relaxed)
    }

    /// The policy-defined head key of `cpu`, as last published (racy, for balancing only).
    pub fn key(&self, cpu: usize) -> u64 {
        self.cpus[cpu].key.load(Ordering::Relaxed)
    }

    /// The vCPU's home CPU as last stored (take the locks with [`Self::lock_home`] to rely
    /// on it).
    pub fn home(&self, v: VcpuId) -> usize {
        self.vcpus[v.index()].home.load(Ordering::Acquire)
    }

    /// Locks a vCPU whose home runqueue the caller already holds (lock order: runqueue
    /// first).
    pub fn lock_vcpu(&self, v: VcpuId) -> VcpuGuard<'_, S> {
        self.vcpus[v.index()].state.lock()
    }

    /// Checks that `v` is a valid index.
    pub fn check(&self, v: VcpuId) -> Result<(), Error> {
        if v.index() < self.vcpus.len() { Ok(()) } else { Err(Error::NoSuchVcpu(v)) }
    }

    /// Locks `v`'s home runqueue and then `v`, retrying if a steal moved it in between.
    pub fn lock_home(&self, v: VcpuId) -> (usize, CpuGuard<'_, Q>, VcpuGuard<'_, S>) {
        let slot = &self.vcpus[v.index()];
        lock_where(&slot.home, |cpu| self.lock_cpu(cpu), || slot.state.lock())
    }

    /// Moves `v`'s home to `cpu`. The caller holds the old and new home runqueue locks and
    /// `v`'s lock (the guard is the proof for the last one).
    pub fn set_home(&self, v: VcpuId, _locked: &VcpuGuard<'_, S>, cpu: usize) {
        self.vcpus[v.index()].home.store(cpu, Ordering::Release);
    }

    /// Inserts `v` asleep with home `cpu`, reserving room for it in every runqueue.
    pub fn insert(&self, v: VcpuId, domain: DomainId, cpu: usize, data: S) -> Result<(), Error> {
        self.check(v)?;
        if cpu >= self.cpus.len() {
            return Err(Error::NoSuchCpu(cpu));
        }
        // Room first: a vCPU may end up queued on any CPU after steals.
        self.inserted.fetch_add(1, Ordering::AcqRel);
        self.refit();
        let slot = &self.vcpus[v.index()];
        let mut vs = slot.state.lock();
        if vs.present {
            drop(vs);
            self.inserted.fetch_sub(1, Ordering::AcqRel);
            self.refit();
            return Err(Error::AlreadyPresent);
        }
        slot.home.store(cpu, Ordering::Release);
        *vs = VcpuState {
            present: true,
            domain,
            place: Place::Off,
            runnable: false,
            yielded: false,
            data,
        };
        Ok(())
    }

    /// Removes `v`, which must be asleep and not running; returns its domain.
    pub fn remove(&self, v: VcpuId) -> Result<DomainId, Error> {
        self.check(v)?;
        let domain = {
            let (_cpu, _rq, mut vs) = self.lock_home(v);
            if !vs.present {
                return Err(Error::NoSuchVcpu(v));
            }
            if vs.place != Place::Off || vs.runnable {
                return Err(Error::Busy);
            }
            vs.present = false;
            self.inserted.fetch_sub(1, Ordering::AcqRel);
            vs.domain
        };
        // One runqueue lock at a time, as everywhere.
        self.refit();
        Ok(domain)
    }

    /// Sizes every runqueue for the vCPUs present now: room for the next power of two of
    /// their number. The count is read under each queue's lock, so of an insert and a remove
    /// racing, the one that takes a queue's lock last sizes it for both: no queue is left
    /// smaller than the vCPUs that may be queued on it.
    fn refit(&self) {
        for c in &self.cpus {
            let mut rq = c.lock.lock();
            let n = self.inserted.load(Ordering::Acquire);
            rq.q.fit(n.max(1).next_power_of_two());
        }
    }

    /// `sleep`, complete: marks `v` not runnable and takes it off its runqueue. Returns the
    /// CPU it is running on, which must reschedule.
    pub fn sleep(&self, v: VcpuId) -> Option<usize> {
        if self.check(v).is_err() {
            return None;
        }
        let (cpu, mut rq, mut vs) = self.lock_home(v);
        if !vs.present {
            return None;
        }
        vs.runnable = false;
        match vs.place {
            Place::Running => Some(cpu),
            Place::Queued => {
                rq.q.remove(v);
                vs.place = Place::Off;
                None
            }
            Place::Off => None,
        }
    }

    /// The common part of `yield`: flags the running vCPU and returns its CPU.
    pub fn yield_now(&self, v: VcpuId) -> Option<usize> {
        if self.check(v).is_err() {
            return None;
        }
        let (cpu, _rq, mut vs) = self.lock_home(v);
        if vs.present && vs.place == Place::Running {
            vs.yielded = true;
            return Some(cpu);
        }
        None
    }

    /// `wake`, but for where the vCPU goes in the queue: if `v` is asleep, marks it runnable
    /// and lets `enqueue` put it on its home CPU's queue (the locked `rq`), then chooses the
    /// CPU to kick with [`Self::kick_for`]. `enqueue` says what it did ([`Enqueued`]); for
    /// `Queued` and `Preempt` the vCPU's place becomes [`Place::Queued`]. A vCPU that is
    /// still running or queued (it slept and woke before its CPU rescheduled) just stays
    /// runnable, and `enqueue` is not called.
    pub fn wake_with(
        &self,
        v: VcpuId,
        enqueue: impl FnOnce(&mut CpuQueue<Q>, &mut VcpuState<S>) -> Enqueued,
    ) -> Wakeup {
        if self.check(v).is_err() {
            return Wakeup { cpu: 0, kick: None };
        }
        let (cpu, mut rq, mut vs) = self.lock_home(v);
        if !vs.present || vs.runnable {
            return Wakeup { cpu, kick: None };
        }
        vs.runnable = true;
        rq.stats.wakes += 1;
        let kick = match vs.place {
            Place::Off => match enqueue(&mut rq, &mut vs) {
                Enqueued::Held => None,
                how => {
                    vs.place = Place::Queued;
                    self.kick_for(cpu, &rq, how == Enqueued::Preempt)
                }
            },
            Place::Queued | Place::Running => None,
        };
        if kick.is_some() {
            rq.stats.kicks += 1;
        }
        Wakeup { cpu, kick }
    }

    /// The CPU to kick now that a vCPU was queued on `home` (whose locked queue is `rq`),
    /// by the two rules that keep every policy here work-conserving:
    ///
    /// 1. *Claim a kicked idle CPU first.* Only an idle CPU whose bit this call clears
    ///    ([`Idlers::claim`]) is kicked to run the newcomer: `home` if it idles, else the
    ///    next idle peer, which will steal it. A CPU already claimed by another wake-up is
    ///    busy from now on as far as wake-ups go, so two wake-ups kick two idle CPUs.
    /// 2. *Prefer an idle peer over preempting the home CPU.* Only if no CPU idles is
    ///    `home` kicked to preempt its current vCPU, and only if `preempt` (the newcomer is
    ///    more urgent, by the policy's own rule). Preempting while a peer idles would leave
    ///    the preempted vCPU queued next to an idle CPU that nobody kicks.
    ///
    /// Returns the CPU to kick, if any.
    pub fn kick_for(&self, home: usize, rq: &CpuQueue<Q>, preempt: bool) -> Option<usize> {
        if rq.curr.is_none() && self.idlers.claim(home) {
            return Some(home);
        }
        if let Some(idle) = self.idlers.claim_after(home) {
            return Some(idle);
        }
        (preempt && rq.curr.is_some()).then_some(home)
    }

    /// Where a vCPU homed on `home` would best run now: `home` if idle, else the next idle
    /// CPU, else `home` (a query: nothing is claimed).
    pub fn nearest_idle(&self, home: usize) -> usize {
        if self.idlers.is_idle(home) { home } else { self.idlers.find_after(home).unwrap_or(home) }
    }

    /// Takes the locked current vCPU of `rq` off the CPU (in `schedule`): clears `curr` and
    /// returns it with its lock held, or `None` if the CPU was idle. Unless `schedule`
    /// dispatches it again, it is *leaving* this CPU until `context_saved`.
    pub fn take_curr<'a>(&'a self, rq: &mut CpuQueue<Q>) -> Option<(VcpuId, VcpuGuard<'a, S>)> {
        let prev = rq.curr.take()?;
        rq.leaving = Some(prev);
        Some((prev, self.lock_vcpu(prev)))
    }

    /// Makes `v` (already off any queue, home `cpu`) the current vCPU of the locked `rq`.
    pub fn dispatch(&self, rq: &mut CpuQueue<Q>, vs: &mut VcpuState<S>, v: VcpuId, now: u64) {
        vs.place = Place::Running;
        vs.yielded = false;
        rq.curr = Some(v);
        rq.curr_since = now;
        if rq.leaving == Some(v) {
            rq.leaving = None; // picked again: it never left
        }
    }

    /// The caller has finished switching `v` off `cpu` (its state is saved, `cpu` no
    /// longer uses it): from now on another CPU may take it. Returns an idle CPU to kick if
    /// a peer's steal from `cpu` was refused meanwhile and `cpu` still has vCPUs queued.
    /// What [`crate::Policy::context_saved`] does for a policy built on these helpers.
    pub fn context_saved(&self, cpu: usize, v: VcpuId) -> Option<usize> {
        if cpu >= self.cpus.len() {
            return None;
        }
        let mut rq = self.lock_cpu(cpu);
        if rq.leaving != Some(v) {
            return None;
        }
        rq.leaving = None;
        if !core::mem::take(&mut rq.refused) || rq.q.is_empty() {
            return None;
        }
        let kick = self.idlers.claim_after(cpu);
        if kick.is_some() {
            rq.stats.kicks += 1;
        }
        kick
    }

    /// Locks `v` (just taken off `rq`'s queue) and dispatches it; returns `v`.
    pub fn dispatch_vcpu(&self, rq: &mut CpuQueue<Q>, v: VcpuId, now: u64) -> VcpuId {
        let mut vs = self.lock_vcpu(v);
        self.dispatch(rq, &mut vs, v, now);
        v
    }

    /// Steals one vCPU for `cpu` (whose runqueue the caller holds as `rq`, locked for its
    /// `schedule`): visits the peers in `how.order`, skips those whose published load or
    /// key `how` rules out, try-locks each (a busy lock is skipped and counted, as Xen's
    /// `steal_trylock_failed`), skips a peer still switching away from a vCPU (before its
    /// `context_saved`: see the module doc), checks load and key again under the lock, and
    /// lets `take` remove a vCPU from the peer's locked queue (or decline with `None`). The
    /// vCPU's home becomes `cpu` and it is dispatched there. Returns it, or `None`.
    pub fn steal(
        &self,
        cpu: usize,
        rq: &mut CpuQueue<Q>,
        now: u64,
        how: Steal,
        mut take: impl FnMut(&mut CpuQueue<Q>) -> Option<VcpuId>,
    ) -> Option<VcpuId> {
        let n = self.cpus.len();
        let worth = |peer: usize| {
            self.nr_runnable(peer) >= how.min_runnable && self.key(peer) < how.key_below
        };
        let mut peers = (1..n).map(|i| (cpu + i) % n).filter(|&p| worth(p));
        match how.order {
            Order::NextCpu => {
                peers.find_map(|peer| self.steal_from(cpu, rq, peer, now, how, &mut take))
            }
            Order::LowestKey => {
                let mut best: Option<(usize, u64)> = None;
                for peer in peers {
                    let key = self.key(peer);
                    if best.is_none_or(|b| key < b.1) {
                        best = Some((peer, key));
                    }
                }
                self.steal_from(cpu, rq, best?.0, now, how, &mut take)
            }
        }
    }

    fn steal_from(
        &self,
        cpu: usize,
        rq: &mut CpuQueue<Q>,
        peer: usize,
        now: u64,
        how: Steal,
        take: &mut impl FnMut(&mut CpuQueue<Q>) -> Option<VcpuId>,
    ) -> Option<VcpuId> {
        let Some(mut prq) = self.try_lock_cpu(peer) else {
            rq.stats.steal_lock_busy += 1;
            return None;
        };
        if prq.leaving.is_some() {
            prq.refused = true;
            rq.stats.steal_mid_switch += 1;
            return None;
        }
        let load = prq.q.len() + usize::from(prq.curr.is_some());
        if load < how.min_runnable || prq.q.key() >= how.key_below {
            return None;
        }
        let v = take(&mut prq)?;
        drop(prq);
        let mut vs = self.lock_vcpu(v);
        self.set_home(v, &vs, cpu);
        self.dispatch(rq, &mut vs, v, now);
        rq.stats.steals += 1;
        Some(v)
    }

    /// Sums the per-CPU counters.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for c in &self.cpus {
            s += c.lock.lock().stats;
        }
        s
    }

    /// Writes one line per CPU: current vCPU, load, and the queue through `show`.
    pub fn dump(
        &self,
        out: &mut dyn fmt::Write,
        mut show: impl FnMut(&mut dyn fmt::Write, &Q) -> fmt::Result,
    ) -> fmt::Result {
        for (i, c) in self.cpus.iter().enumerate() {
            let rq = c.lock.lock();
            match rq.curr {
                Some(v) => write!(out, "cpu{i}: curr v{} since {}ns", v.0, rq.curr_since)?,
                None => write!(out, "cpu{i}: idle")?,
            }
            write!(out, " runnable={} queue=[", self.nr_runnable(i))?;
            show(out, &rq.q)?;
            writeln!(out, "]")?;
        }
        Ok(())
    }
}

/// A table of per-domain records, indexed by [`DomainId`], allocated once.
pub struct Domains<D> {
    slots: Vec<CachePadded<SpinMutex<Option<D>>>>,
    /// A bit per slot, set while it holds a domain (changed under the slot's lock), so that
    /// a pass over the domains visits those present, not every slot: credit's accounting
    /// every 30 ms locked all 1024 slots twice for a machine of three domains.
    present: Vec<AtomicU64>,
}

impl<D> Domains<D> {
    /// A table for `topo.max_domains` domains, all absent.
    pub fn new(topo: &Topology) -> Self {
        Domains {
            slots: (0..topo.max_domains).map(|_| CachePadded::new(SpinMutex::new(None))).collect(),
            present: (0..topo.max_domains.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The domains present, in ascending order, as of each bitmap word's read: one added or
    /// removed meanwhile may or may not be among them (lock each and check, as `with` does).
    pub fn present(&self) -> impl Iterator<Item = DomainId> + '_ {
        self.present.iter().enumerate().flat_map(|(w, word)| {
            let mut bits = word.load(Ordering::Acquire);
            core::iter::from_fn(move || {
                let b = bits.trailing_zeros();
                (b < 64).then(|| {
                    bits &= bits - 1;
                    DomainId((w * 64) as u32 + b)
                })
            })
        })
    }

    fn mark(&self, d: DomainId, present: bool) {
        let (word, bit) = (&self.present[d.index() / 64], 1u64 << (d.index() % 64));
        if present {
            word.fetch_or(bit, Ordering::Release);
        } else {
            word.fetch_and(!bit, Ordering::Release);
        }
    }

    /// Locks a domain's slot (`None` inside if absent).
    pub fn lock(&self, d: DomainId) -> Result<SpinMutexGuard<'_, Option<D>>, Error> {
        self.slots.get(d.index()).map(|s| s.lock()).ok_or(Error::NoSuchDomain(d))
    }

    /// Runs `f` on a present domain.
    pub fn with<R>(&self, d: DomainId, f: impl FnOnce(&mut D) -> R) -> Result<R, Error> {
        let mut g = self.lock(d)?;
        g.as_mut().map(f).ok_or(Error::NoSuchDomain(d))
    }

    /// Adds a domain; error if present.
    pub fn add(&self, d: DomainId, rec: D) -> Result<(), Error> {
        let mut g = self.lock(d)?;
        if g.is_some() {
            return Err(Error::AlreadyPresent);
        }
        *g = Some(rec);
        self.mark(d, true);
        Ok(())
    }

    /// Removes a domain if `may_remove` agrees.
    pub fn remove(&self, d: DomainId, may_remove: impl FnOnce(&D) -> bool) -> Result<(), Error> {
        let mut g = self.lock(d)?;
        match g.as_ref() {
            None => Err(Error::NoSuchDomain(d)),
            Some(rec) if !may_remove(rec) => Err(Error::Busy),
            Some(_) => {
                *g = None;
                self.mark(d, false);
                Ok(())
            }
        }
    }
}

/// Every domain's values of a policy's per-domain parameters, readable without a lock: the
/// table behind `add_domain`, `set_domain_param` and `domain_param`, and what the hot paths
/// read ([`DomainParams::value`]). Values are checked against the declared ranges.
pub struct DomainParams {
    policy: &'static str,
    specs: &'static [ParamSpec],
    values: Vec<AtomicU64>,
}

impl DomainParams {
    /// A table for `topo.max_domains` domains of the policy `info`, every value at its
    /// default.
    pub fn new(topo: &Topology, info: &'static PolicyInfo) -> Self {
        let specs = info.domain_params;
        let values = (0..topo.max_domains)
            .flat_map(|_| specs.iter().map(|p| AtomicU64::new(p.default)))
            .collect();
        DomainParams { policy: info.name, specs, values }
    }

    fn slot(&self, d: DomainId, i: usize) -> Result<&AtomicU64, Error> {
        self.values.get(d.index() * self.specs.len() + i).ok_or(Error::NoSuchDomain(d))
    }

    fn index(&self, name: &str) -> Result<usize, Error> {
        let spec = crate::find_param(self.policy, self.specs, name)?;
        Ok(self.specs.iter().position(|p| p.name == spec.name).unwrap_or(0))
    }

    /// `add_domain`: every parameter of `d` back to its default, then `params`, all checked
    /// before any is set.
    pub fn add(&self, d: DomainId, params: &[(&str, u64)]) -> Result<(), Error> {
        for (name, value) in params {
            self.specs[self.index(name)?].check(*value)?;
        }
        for (i, spec) in self.specs.iter().enumerate() {
            self.slot(d, i)?.store(spec.default, Ordering::Relaxed);
        }
        params.iter().try_for_each(|(name, value)| self.set(d, name, *value))
    }

    /// `set_domain_param`: checks the name and the range, then sets it.
    pub fn set(&self, d: DomainId, name: &str, value: u64) -> Result<(), Error> {
        let i = self.index(name)?;
        self.specs[i].check(value)?;
        self.slot(d, i)?.store(value, Ordering::Relaxed);
        Ok(())
    }

    /// `domain_param`: the value of `name` for `d`.
    pub fn get(&self, d: DomainId, name: &str) -> Result<u64, Error> {
        Ok(self.slot(d, self.index(name)?)?.load(Ordering::Relaxed))
    }

    /// The value of the `i`-th declared parameter (`PolicyInfo::domain_params[i]`) of `d`,
    /// for the hot paths: no lock, no name lookup. `d` must be a domain the policy was given.
    pub fn value(&self, d: DomainId, i: usize) -> u64 {
        self.slot(d, i).map_or(self.specs[i].default, |v| v.load(Ordering::Relaxed))
    }
}

/// The calls a policy built on [`Runqueues`] (in its field `$rqs`) answers exactly as
/// they do, written into its `impl Policy` by one line, `runq::runqueue_calls!(rqs);`:
/// `sleep`, `yield_now` and `context_saved` ([`Runqueues::sleep`], [`Runqueues::yield_now`],
/// [`Runqueues::context_saved`]), `pick_cpu` (the vCPU's home CPU if idle, else the next
/// idle one: [`Runqueues::nearest_idle`]) and `stats`; with `insert_vcpu` and/or
/// `remove_vcpu` after the field, those too ([`Runqueues::insert`] with the policy's
/// per-vCPU data at its default, [`Runqueues::remove`]). A macro, not the trait's defaults,
/// so that each stays the policy's own function, called directly (no call through a
/// `dyn`), under its own name (the kernel's linker script places the hot ones by name).
macro_rules! runqueue_calls {
    ($rqs:ident $(, $extra:ident)*) => {
        fn sleep(&self, v: $crate::VcpuId, _now: u64) -> Option<usize> {
            self.$rqs.sleep(v)
        }
        fn yield_now(&self, v: $crate::VcpuId, _now: u64) -> Option<usize> {
            self.$rqs.yield_now(v)
        }
        fn context_saved(&self, cpu: usize, v: $crate::VcpuId, _now: u64) -> Option<usize> {
            self.$rqs.context_saved(cpu, v)
        }
        fn pick_cpu(&self, v: $crate::VcpuId, _now: u64) -> usize {
            self.$rqs.nearest_idle(self.$rqs.home(v))
        }
        fn stats(&self) -> $crate::Stats {
            self.$rqs.stats()
        }
        $($crate::runq::runqueue_calls!(@ $rqs $extra);)*
    };
    (@ $rqs:ident insert_vcpu) => {
        fn insert_vcpu(
            &self,
            v: $crate::VcpuId,
            domain: $crate::DomainId,
            cpu: usize,
        ) -> Result<(), $crate::Error> {
            self.$rqs.insert(v, domain, cpu, Default::default())
        }
    };
    (@ $rqs:ident remove_vcpu) => {
        fn remove_vcpu(&self, v: $crate::VcpuId) -> Result<(), $crate::Error> {
            self.$rqs.remove(v).map(|_| ())
        }
    };
}
pub(crate) use runqueue_calls;

/// Locks the runqueue that `home` names (`lock_rq`), then the vCPU (`lock_vcpu`), and
/// retries until `home` still names that runqueue with both held: it changes only under
/// both locks, so the pair is then the vCPU's (Xen's `unit_schedule_lock` loop). Returns
/// the runqueue's index and both guards. `runq`'s per-CPU queues and credit2's shared ones.
pub fn lock_where<R, V>(
    home: &AtomicUsize,
    lock_rq: impl Fn(usize) -> R,
    lock_vcpu: impl Fn() -> V,
) -> (usize, R, V) {
    loop {
        let at = home.load(Ordering::Acquire);
        let rq = lock_rq(at);
        let vs = lock_vcpu();
        if home.load(Ordering::Acquire) == at {
            return (at, rq, vs);
        }
        drop(vs);
        drop(rq);
        core::hint::spin_loop();
    }
}

/// A global parameter stored as nanoseconds (or a plain count), readable without locks.
#[derive(Debug, Default)]
pub struct AtomicNs(AtomicU64);

impl AtomicNs {
    /// A parameter holding `v`.
    pub fn new(v: u64) -> Self {
        AtomicNs(AtomicU64::new(v))
    }
    /// Reads it.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Writes it.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
}

/// One global parameter as a policy keeps it: the name it has in
/// `PolicyInfo::global_params`, the [`AtomicNs`] that holds it, and how many of the cell's
/// units make one of the parameter's (1000 for a `_us` parameter kept in ns, 1_000_000 for
/// a `_ms` one, 1 for a count). A policy lists all of them once (its `knobs`), and
/// [`set_global`] and [`global`] are then its `set_global_param` and `global_param`.
pub struct Knob<'a>(pub &'static str, pub &'a AtomicNs, pub u64);

/// The knob named `name`, which `info` declares (a spec found by `find_param`).
fn knob<'k, 'a>(info: &PolicyInfo, knobs: &'k [Knob<'a>], name: &str) -> &'k Knob<'a> {
    let found = knobs.iter().find(|k| k.0 == name);
    found.unwrap_or_else(|| panic!("{}: global parameter `{name}` has no knob", info.name))
}

/// `set_global_param` over `knobs`: checks `name` and `value` against
/// `info.global_params` (the errors list what is allowed) and stores `value` × its unit.
pub fn set_global(info: &PolicyInfo, knobs: &[Knob], name: &str, value: u64) -> Result<(), Error> {
    let spec = crate::find_param(info.name, info.global_params, name)?;
    spec.check(value)?;
    let Knob(_, cell, unit) = knob(info, knobs, spec.name);
    cell.set(value * unit);
    Ok(())
}

/// `global_param` over `knobs`: the value of `name` in the parameter's own unit.
pub fn global(info: &PolicyInfo, knobs: &[Knob], name: &str) -> Result<u64, Error> {
    let spec = crate::find_param(info.name, info.global_params, name)?;
    let Knob(_, cell, unit) = knob(info, knobs, spec.name);
    Ok(cell.get() / unit)
}

/// A flag readable without locks.
#[derive(Debug, Default)]
pub struct Flag(AtomicBool);

impl Flag {
    /// Reads it.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    /// Writes it.
    pub fn set(&self, v: bool) {
        self.0.store(v, Ordering::Release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacities(rqs: &Runqueues<VecDeque<VcpuId>, ()>) -> Vec<usize> {
        (0..rqs.ncpus()).map(|c| rqs.lock_cpu(c).q.capacity()).collect()
    }

    #[test]
    fn domains_present_lists_those_added_and_not_removed() {
        let doms: Domains<u32> = Domains::new(&Topology::flat(1, 1, 200));
        assert_eq!(doms.present().count(), 0);
        for d in [0, 5, 63, 64, 130, 199] {
            doms.add(DomainId(d), d).unwrap();
        }
        doms.remove(DomainId(5), |_| true).unwrap();
        assert_eq!(doms.remove(DomainId(63), |_| false), Err(Error::Busy));
        let ids: Vec<u32> = doms.present().map(|d| d.0).collect();
        assert_eq!(ids, [0, 63, 64, 130, 199]);
    }

    #[test]
    fn runqueue_room_follows_the_vcpus_present_and_comes_back() {
        let topo = Topology::flat(3, 64, 8);
        let rqs: Runqueues<VecDeque<VcpuId>, ()> = Runqueues::new(&topo, VecDeque::new).unwrap();
        let empty = capacities(&rqs);
        rqs.insert(VcpuId(0), DomainId(0), 0, ()).unwrap();
        let alone = capacities(&rqs);
        assert_eq!(alone, [1, 1, 1]);
        // An instance no vCPU ever joined has the room one that all left has.
        rqs.remove(VcpuId(0)).unwrap();
        assert_eq!(capacities(&rqs), empty);
        rqs.insert(VcpuId(0), DomainId(0), 0, ()).unwrap();
        for v in 1..=20 {
            rqs.insert(VcpuId(v), DomainId(1), v as usize % 3, ()).unwrap();
            // Room for every vCPU present on every CPU, so that a wake never allocates.
            assert!(capacities(&rqs).iter().all(|&c| c > v as usize), "{:?}", capacities(&rqs));
        }
        assert_eq!(capacities(&rqs), [32, 32, 32]);
        assert_eq!(rqs.insert(VcpuId(5), DomainId(1), 0, ()), Err(Error::AlreadyPresent));
        assert_eq!(capacities(&rqs), [32, 32, 32]);
        for v in (1..=20).rev() {
            rqs.remove(VcpuId(v)).unwrap();
        }
        // Whatever came and went, the same room as before: the heap is back.
        assert_eq!(capacities(&rqs), alone);
    }

    type Fifo = Runqueues<VecDeque<VcpuId>, ()>;

    fn wake(rqs: &Fifo, v: u32, preempt: bool) -> Wakeup {
        let how = if preempt { Enqueued::Preempt } else { Enqueued::Queued };
        rqs.wake_with(VcpuId(v), |rq, _| {
            rq.q.push_back(VcpuId(v));
            how
        })
    }

    /// A FIFO `schedule`: the runner goes to the back, the head runs; an idle CPU steals.
    fn schedule(rqs: &Fifo, cpu: usize, now: u64) -> Option<VcpuId> {
        let mut rq = rqs.lock_for_schedule(cpu);
        if let Some((prev, mut vs)) = rqs.take_curr(&mut rq) {
            vs.place = if vs.runnable { Place::Queued } else { Place::Off };
            if vs.runnable {
                rq.q.push_back(prev);
            }
        }
        match rq.q.pop_front() {
            Some(v) => Some(rqs.dispatch_vcpu(&mut rq, v, now)),
            None => rqs.steal(cpu, &mut rq, now, Steal::default(), |p| p.q.pop_front()),
        }
    }

    fn fifo(cpus: usize, homes: &[usize]) -> Fifo {
        let topo = Topology::flat(cpus, homes.len(), 1);
        let rqs = Runqueues::new(&topo, VecDeque::new).unwrap();
        for (v, &home) in homes.iter().enumerate() {
            rqs.insert(VcpuId(v as u32), DomainId(0), home, ()).unwrap();
        }
        rqs
    }

    #[test]
    fn a_leaving_vcpu_is_stolen_only_after_context_saved() {
        let rqs = fifo(2, &[0, 0]);
        assert_eq!(wake(&rqs, 0, false).kick, Some(0));
        assert_eq!(schedule(&rqs, 0, 1), Some(VcpuId(0)));
        wake(&rqs, 1, false);
        // CPU 0's slice ends: v0 goes behind v1 and is leaving CPU 0 until saved.
        assert_eq!(schedule(&rqs, 0, 2), Some(VcpuId(1)));
        assert_eq!(rqs.lock_cpu(0).leaving(), Some(VcpuId(0)));
        assert_eq!(rqs.nr_runnable(0), 2);
        // The idle CPU 1 may not take it yet, nor anything else of CPU 0's.
        assert_eq!(schedule(&rqs, 1, 2), None);
        assert_eq!(rqs.stats().steal_mid_switch, 1);
        assert_eq!(rqs.home(VcpuId(0)), 0);
        // Saved: a report for another vCPU changes nothing; the right one kicks CPU 1,
        // which was refused, and CPU 1 now takes v0.
        assert_eq!(rqs.context_saved(0, VcpuId(1)), None);
        assert_eq!(rqs.context_saved(0, VcpuId(0)), Some(1));
        assert_eq!(rqs.context_saved(0, VcpuId(0)), None);
        assert_eq!(schedule(&rqs, 1, 3), Some(VcpuId(0)));
        assert_eq!(rqs.home(VcpuId(0)), 1);
        // A vCPU picked again never leaves; CPU 0's next schedule ends any switch anyway.
        assert_eq!(schedule(&rqs, 0, 4), Some(VcpuId(1)));
        assert_eq!(rqs.lock_cpu(0).leaving(), None);
    }

    #[test]
    fn wake_ups_claim_idle_cpus_before_preempting() {
        let rqs = fifo(3, &[0, 1, 0, 0]);
        assert_eq!(wake(&rqs, 0, false).kick, Some(0));
        assert_eq!(schedule(&rqs, 0, 1), Some(VcpuId(0)));
        // CPU 0 runs v0; CPUs 1 and 2 idle. An urgent v2 homed on CPU 0 goes to an idle peer,
        // not over v0; a second wake-up claims the other idle CPU, not the same one again.
        assert_eq!(wake(&rqs, 2, true).kick, Some(1));
        assert_eq!(wake(&rqs, 3, true).kick, Some(2));
        assert_eq!(schedule(&rqs, 1, 2), Some(VcpuId(2)));
        assert_eq!(schedule(&rqs, 2, 2), Some(VcpuId(3)));
        // Nobody idles now: an urgent wake-up preempts its home CPU, an ordinary one waits.
        assert_eq!(wake(&rqs, 1, false).kick, None);
        assert_eq!(rqs.sleep(VcpuId(1)), None);
        assert_eq!(wake(&rqs, 1, true).kick, Some(1));
        assert_eq!(rqs.stats().kicks, 4);
    }

    #[test]
    fn fit_never_drops_what_is_queued() {
        let mut q: VecDeque<u32> = (0..10).collect();
        fit_deque(&mut q, 4);
        assert_eq!(q.capacity(), 10);
        assert_eq!(q, (0..10).collect::<VecDeque<_>>());
        fit_deque(&mut q, 16);
        assert_eq!(q.capacity(), 16);
        q.clear();
        fit_deque(&mut q, 1);
        assert_eq!(q.capacity(), 1);
    }
}
