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
//! Every table is allocated once, from the [`Topology`], when the policy is created;
//! runqueue storage is resized in `insert_vcpu` and `remove_vcpu` ([`RunQueue::fit`]), never
//! on wake or pick. Its size is a function of the number of vCPUs present and nothing else
//! (the next power of two), so once the domains of a run are gone the policy holds exactly the
//! heap it held before they came: Domain0 checks the hypervisor's heap against that.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use spin::mutex::{SpinMutex, SpinMutexGuard};

use crate::{DomainId, Error, Stats, Topology, VcpuId, Wakeup};

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
    pub curr: Option<VcpuId>,
    /// When `curr` was picked (ns), for charging and rate limiting.
    pub curr_since: u64,
    /// The policy's queue.
    pub q: Q,
    /// Counters, kept under the lock so they cost no atomics.
    pub stats: Stats,
}

/// One CPU's runqueue: the lock plus figures that peers read without locking.
pub struct Cpu<Q> {
    lock: SpinMutex<CpuQueue<Q>>,
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

/// The shared skeleton: per-CPU runqueues, per-vCPU slots and the idle map.
pub struct Runqueues<Q, S> {
    cpus: Vec<CachePadded<Cpu<Q>>>,
    vcpus: Vec<CachePadded<Slot<S>>>,
    /// Idle CPUs.
    pub idlers: Idlers,
    inserted: AtomicUsize,
}

/// A runqueue lock guard.
pub type CpuGuard<'a, Q> = SpinMutexGuard<'a, CpuQueue<Q>>;
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
                    lock: SpinMutex::new(CpuQueue {
                        curr: None,
                        curr_since: 0,
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
        Ok(Runqueues { cpus, vcpus, idlers, inserted: AtomicUsize::new(0) })
    }
}

impl<Q: RunQueue, S> Runqueues<Q, S> {
    /// Number of CPUs.
    pub fn ncpus(&self) -> usize {
        self.cpus.len()
    }

    /// Locks `cpu`'s runqueue.
    pub fn lock_cpu(&self, cpu: usize) -> CpuGuard<'_, Q> {
        self.cpus[cpu].lock.lock()
    }

    /// Tries to lock a peer's runqueue (the only way to hold two runqueue locks).
    pub fn try_lock_cpu(&self, cpu: usize) -> Option<CpuGuard<'_, Q>> {
        self.cpus[cpu].lock.try_lock()
    }

    /// Queued plus running vCPUs on `cpu`, as last published (racy, for balancing only).
    pub fn nr_runnable(&self, cpu: usize) -> usize {
        self.cpus[cpu].nr_runnable.load(Ordering::Relaxed)
    }

    /// The policy-defined head key of `cpu`, as last published (racy, for balancing only).
    pub fn key(&self, cpu: usize) -> u64 {
        self.cpus[cpu].key.load(Ordering::Relaxed)
    }

    /// Publishes `cpu`'s load and head key from its locked queue, and its idle bit.
    /// Call it after every change to `q` or `curr`, before unlocking.
    pub fn publish(&self, cpu: usize, rq: &CpuQueue<Q>, key: u64) {
        let n = rq.q.len() + usize::from(rq.curr.is_some());
        self.cpus[cpu].nr_runnable.store(n, Ordering::Relaxed);
        self.cpus[cpu].key.store(key, Ordering::Relaxed);
        self.idlers.set(cpu, rq.curr.is_none());
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
        loop {
            let cpu = slot.home.load(Ordering::Acquire);
            let rq = self.cpus[cpu].lock.lock();
            let vs = slot.state.lock();
            if slot.home.load(Ordering::Acquire) == cpu {
                return (cpu, rq, vs);
            }
            drop(vs);
            drop(rq);
            core::hint::spin_loop();
        }
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

    /// The common part of `sleep`: marks `v` not runnable and takes it off its runqueue.
    /// Returns the CPU it is running on (which must reschedule), and calls `on_dequeue`
    /// with the locked queue when it was queued (so the policy can republish its key).
    pub fn sleep(
        &self,
        v: VcpuId,
        on_dequeue: impl FnOnce(usize, &mut CpuQueue<Q>),
    ) -> Option<usize> {
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
                on_dequeue(cpu, &mut rq);
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

    /// The common part of `wake`: if `v` is asleep, marks it runnable and lets `enqueue`
    /// put it on its home queue (`enqueue` returns the CPU to kick, if any). A vCPU that is
    /// still running (it slept and woke before its CPU rescheduled) just stays runnable.
    pub fn wake_with(
        &self,
        v: VcpuId,
        enqueue: impl FnOnce(usize, &mut CpuQueue<Q>, &mut VcpuState<S>) -> Option<usize>,
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
            Place::Off => enqueue(cpu, &mut rq, &mut vs),
            Place::Queued | Place::Running => None,
        };
        if kick.is_some() {
            rq.stats.kicks += 1;
        }
        Wakeup { cpu, kick }
    }

    /// The CPU to kick for a vCPU queued on `home`: `home` if it idles, else the next idle
    /// CPU (which will steal it), else none. The CPU is claimed ([`Idlers::claim`]). This is what makes every policy here
    /// work-conserving on wake-up.
    pub fn idle_cpu_for(&self, home: usize) -> Option<usize> {
        if self.idlers.claim(home) { Some(home) } else { self.idlers.claim_after(home) }
    }

    /// Where a vCPU homed on `home` would best run now: `home` if idle, else the next idle
    /// CPU, else `home` (a query: nothing is claimed).
    pub fn nearest_idle(&self, home: usize) -> usize {
        if self.idlers.is_idle(home) { home } else { self.idlers.find_after(home).unwrap_or(home) }
    }

    /// Takes the locked current vCPU of `rq` off the CPU: clears `curr` and returns it with
    /// its lock held, or `None` if the CPU was idle.
    pub fn take_curr<'a>(&'a self, rq: &mut CpuQueue<Q>) -> Option<(VcpuId, VcpuGuard<'a, S>)> {
        let prev = rq.curr.take()?;
        Some((prev, self.lock_vcpu(prev)))
    }

    /// Makes `v` (already off any queue, home `cpu`) the current vCPU of the locked `rq`.
    pub fn dispatch(&self, rq: &mut CpuQueue<Q>, vs: &mut VcpuState<S>, v: VcpuId, now: u64) {
        vs.place = Place::Running;
        vs.yielded = false;
        rq.curr = Some(v);
        rq.curr_since = now;
    }

    /// Locks `v` (just taken off `rq`'s queue) and dispatches it; returns `v`.
    pub fn dispatch_vcpu(&self, rq: &mut CpuQueue<Q>, v: VcpuId, now: u64) -> VcpuId {
        let mut vs = self.lock_vcpu(v);
        self.dispatch(rq, &mut vs, v, now);
        v
    }

    /// Steals one vCPU for `cpu` (whose runqueue the caller holds as `rq`): visits peers from
    /// `cpu + 1` on (Xen's `csched_load_balance` order), skips those whose published load is
    /// below `min_runnable`, and tries each with [`Self::steal_from`].
    #[allow(clippy::too_many_arguments)] // reason: the three policy hooks are the point
    pub fn steal(
        &self,
        cpu: usize,
        rq: &mut CpuQueue<Q>,
        now: u64,
        min_runnable: usize,
        mut choose: impl FnMut(usize, &mut CpuQueue<Q>) -> Option<VcpuId>,
        mut adopt: impl FnMut(&mut VcpuState<S>),
        republish: impl Fn(usize, &CpuQueue<Q>),
    ) -> Option<VcpuId> {
        let n = self.cpus.len();
        for i in 1..n {
            let peer = (cpu + i) % n;
            if self.nr_runnable(peer) < min_runnable {
                continue;
            }
            let got = self.steal_from(cpu, rq, peer, now, &mut choose, &mut adopt, &republish);
            if got.is_some() {
                return got;
            }
        }
        None
    }

    /// Tries to steal one vCPU from `peer` for `cpu`: try-locks the peer (a busy lock is
    /// skipped and counted, as Xen's `steal_trylock_failed`), lets `choose` remove a vCPU
    /// from the peer's queue, makes `cpu` its home, runs `adopt` with its lock held and
    /// dispatches it on `cpu`.
    #[allow(clippy::too_many_arguments)] // reason: the three policy hooks are the point
    pub fn steal_from(
        &self,
        cpu: usize,
        rq: &mut CpuQueue<Q>,
        peer: usize,
        now: u64,
        choose: &mut impl FnMut(usize, &mut CpuQueue<Q>) -> Option<VcpuId>,
        adopt: &mut impl FnMut(&mut VcpuState<S>),
        republish: &impl Fn(usize, &CpuQueue<Q>),
    ) -> Option<VcpuId> {
        let Some(mut prq) = self.try_lock_cpu(peer) else {
            rq.stats.steal_lock_busy += 1;
            return None;
        };
        let v = choose(peer, &mut prq)?;
        republish(peer, &prq);
        let mut vs = self.lock_vcpu(v);
        self.set_home(v, &vs, cpu);
        adopt(&mut vs);
        self.dispatch(rq, &mut vs, v, now);
        rq.stats.steals += 1;
        Some(v)
    }

    /// Sums the per-CPU counters.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for c in &self.cpus {
            let rq = c.lock.lock();
            s.schedules += rq.stats.schedules;
            s.wakes += rq.stats.wakes;
            s.steals += rq.stats.steals;
            s.steal_lock_busy += rq.stats.steal_lock_busy;
            s.kicks += rq.stats.kicks;
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
}

impl<D> Domains<D> {
    /// A table for `topo.max_domains` domains, all absent.
    pub fn new(topo: &Topology) -> Self {
        Domains {
            slots: (0..topo.max_domains).map(|_| CachePadded::new(SpinMutex::new(None))).collect(),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
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
                Ok(())
            }
        }
    }
}

/// A per-domain weight readable without locks (the hot paths of credit and BVT read it).
#[derive(Debug, Default)]
pub struct AtomicParam(AtomicU32);

impl AtomicParam {
    /// A parameter holding `v`.
    pub fn new(v: u32) -> Self {
        AtomicParam(AtomicU32::new(v))
    }
    /// Reads it.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
    /// Writes it.
    pub fn set(&self, v: u32) {
        self.0.store(v, Ordering::Relaxed)
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
    fn runqueue_room_follows_the_vcpus_present_and_comes_back() {
        let topo = Topology { cpus: 3, max_vcpus: 64, max_domains: 8 };
        let rqs: Runqueues<VecDeque<VcpuId>, ()> = Runqueues::new(&topo, VecDeque::new).unwrap();
        rqs.insert(VcpuId(0), DomainId(0), 0, ()).unwrap();
        let alone = capacities(&rqs);
        assert_eq!(alone, [1, 1, 1]);
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
