//! Domains and their virtual CPUs: creation from an image, the state machine, accounting,
//! and destruction that returns every frame.
//!
//! A vCPU's state is `kerncore::runstate::RunState` (here `VcpuState`), whose rules keep a
//! domain's pause, a vCPU's sleep and a vCPU taken down apart, as Xen's pause count and pause
//! flags do: an unpause makes runnable only what was runnable before the pause (or woke
//! during it). The policy, in `sched`, only ever sees runnable or not, through `wake` and
//! `sleep` (`kerncore::runstate::Tell`).
//!
//! ```text
//!  Paused --unpause--> Runnable <--pick/preempt--> Running --block--> Blocked
//!   {blocked: false}      ^                          |  |                 |
//!     ^                   +----------wake (timer) ---+--+-----------------+
//!     +------pause (a sleeper: Paused {blocked: true}, back to Blocked at unpause)
//!  Running --VcpuOp::Down--> Down --VcpuOp::Up--> Runnable (pauses leave Down alone)
//!                                                    any --kill/shutdown--> Dead
//! ```
//!
//! A vCPU never runs on two CPUs at once: a CPU claims a vCPU with a compare-and-swap on
//! `running_on` before loading its registers, and releases it once switched away, when it
//! tells the policy (`context_saved`); the policy gives it to no other CPU before then, so
//! the claim never has to wait.

pub mod boot_module;
pub mod event_channel;

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use abi::control::{DomainExit, DomainId, DomainInfo, DomainState, SchedParams};
use abi::layout;
use abi::shared::{
    Arg, Counters, MAX_ARGS, MAX_VCPUS, NAME_BYTES, SharedInfo, TimeInfo, VcpuTime, name_bytes,
};
use arrayvec::ArrayString;
use crossbeam_utils::CachePadded;
use kerncore::cmdline::SelfTest;
use kerncore::event::PortTable;
use kerncore::histogram::Histogram;
use kerncore::image;
use spin::{Mutex, Once, RwLock};

use crate::arch::addrspace::{Access, AddressSpace, HeldPage};
use crate::arch::fpu::{FpuArea, FpuState};
use crate::arch::gdt::{USER_CODE, USER_DATA};
use crate::arch::guest::Plain;
use crate::arch::trap::TrapFrame;
use crate::time;

/// `running_on` value of a vCPU that runs nowhere.
pub const NOT_RUNNING: usize = usize::MAX;

/// Most domains alive at once, Domain0 included (docs/DESIGN.md aims for 1024 guests). Defined
/// in `sched::limits`, which the spec validator reads too, so both refuse the same specs.
pub const MAX_DOMAINS: usize = sched::limits::MAX_DOMAINS;
/// Most vCPUs alive at once, over all domains (`sched::limits`, as above).
pub const MAX_VCPUS_TOTAL: usize = sched::limits::MAX_VCPUS_TOTAL;

// The guest-ABI limits live in `abi` (guests cannot see `sched`); the spec validator checks
// specs against their twins in `sched::limits` (which cannot see `abi`). They must agree.
const _: () = {
    use sched::limits as l;
    assert!(NAME_BYTES == l::NAME_BYTES);
    assert!(MAX_VCPUS == l::MAX_VCPUS);
    assert!(MAX_ARGS == l::MAX_ARGS);
    const fn len_of<const N: usize>(_: fn(&Arg) -> &[u8; N]) -> usize {
        N
    }
    assert!(len_of(|a| &a.name) == l::ARG_NAME_BYTES);
    assert!(layout::STACK_BYTES == l::STACK_BYTES);
    assert!(layout::STACK_STRIDE == l::STACK_STRIDE);
    assert!(abi::tool::plan::MAX_DOMAINS == l::MAX_GUEST_DOMAINS);
    assert!(l::MAX_GUEST_DOMAINS < MAX_DOMAINS);
    assert!(abi::control::MAX_SCHED_PARAMS == l::MAX_DOMAIN_PARAMS);
    assert!(abi::control::SCHED_PARAM_NAME_BYTES == l::PARAM_NAME_BYTES);
};

/// What a vCPU is doing (`kerncore::runstate`).
pub use kerncore::runstate::{RunState as VcpuState, Stop, Tell};

pub use kerncore::account::{Account, Growth};

/// Figures kept per vCPU. In declaration order (`repr(C)`), the large latency histogram last:
/// a switch touches the fields before it (and the histogram only at a wake-up's first run),
/// and they sit in the vCPU's hot part (see [`Vcpu`]).
#[derive(Clone, Default)]
#[repr(C)]
pub struct VcpuStats {
    /// CPU and waiting time (`kerncore::account`: on a CPU from switch-in to switch-out).
    pub account: Account,
    pub wakeups: u64,
    pub switches: u64,
    pub migrations: u64,
    /// Set at a wake-up, cleared when it next runs: the wake-up latency's start.
    pub woke_at: Option<u64>,
    pub last_cpu: Option<usize>,
    pub latency: Histogram,
}

/// A virtual CPU.
///
/// In declaration order (`repr(C)`): what a domain switch reads and writes of the vCPU
/// leaving and the one arriving first and together (the FPU area, the registers, the
/// state, the claim, the figures), the latency histogram (at the end of `stats`) and the
/// rarely used fields last. Under QEMU's TCG every page touched between two CR3 loads costs
/// a TLB fill (README.md, "What the 34 fills are now"): with the FPU area a separate `Box`
/// and the histogram in the middle, each vCPU took two pages of every switch (issue 11).
#[repr(C)]
pub struct Vcpu {
    /// Saved x87/SSE state; its address is handed to the entry code while running. Inline,
    /// first (its alignment is 64): on the vCPU's hot page, not one of its own.
    pub fpu: FpuArea,
    /// Saved registers while not running.
    pub regs: Mutex<TrapFrame>,
    pub state: Mutex<VcpuState>,
    pub running_on: AtomicUsize,
    /// A number no other `Vcpu` object has had since boot (never 0), and 0 once it is
    /// dropped: a CPU that holds a vCPU by pointer (`schedule`'s `Held`) checks it still
    /// reads what it read at the pick, so that a destroy that freed a vCPU some CPU still
    /// held (and the allocator gave its memory to a new one) stops the machine there rather
    /// than corrupting another domain.
    serial: AtomicU64,
    /// Its data segment selectors (DS, ES, FS, GS) while not running: a guest may load
    /// them, and no other domain may see what it loaded.
    pub selectors: AtomicU64,
    /// The domain's PML4, loaded when this vCPU runs.
    pub pml4: u64,
    /// Its domain, reached without the domain table: the `Domain` owns its vCPUs, so this
    /// is weak; [`Vcpu::domain`] upgrades it, and the switch, which knows the domain lives,
    /// reads its address alone ([`Vcpu::domain_ptr`]).
    dom: Weak<Domain>,
    /// Its domain's shared-info page, where its virtual time is published.
    pub shared: HeldPage,
    /// Its domain's counters page, where its event flags are (`VcpuEvents`).
    pub counters: HeldPage,
    /// Its event callback (0: none), entered when an event is pending (`crate::pv::upcall`).
    pub callback: AtomicU64,
    /// Absolute system time of the one-shot timer (0: none).
    pub timer_deadline: AtomicU64,
    /// The deadline of the last one-shot timer it set (0: none yet), kept when the timer
    /// fires: [`DomainInfo::timer_deadline_ns`], the phase of a periodic guest's wake-ups.
    pub last_timer_deadline: AtomicU64,
    /// How long its last `set_timer` took in the hypervisor (ns, shifted left one; bit 0:
    /// it wrote the CPU's timer), counted when it next blocks or polls (0: none since):
    /// `schedule::set_timer`, `schedule::count_set_timer`.
    pub set_timer_took: AtomicU64,
    /// Global index, the policy's `VcpuId`.
    pub id: u32,
    /// Index within its domain.
    pub index: u32,
    pub domain: DomainId,
    /// The policy instance that schedules it (`schedule::cpupool`; `NO_INSTANCE` until it
    /// is registered). Changed only while it is paused and off every CPU.
    pub sched_instance: core::sync::atomic::AtomicU32,
    /// Scheduling-trace events recorded for it (`trace::EVENTS_PER_VCPU` at most kept), and
    /// `trace::LOST` once a full buffer dropped one (its trace ends there).
    pub trace_events: AtomicU64,
    /// Set when it joined a new instance while running (Domain0 replacing its own pool's
    /// policy): that instance has it asleep, and wakes it once it leaves its CPU
    /// (`schedule::release`), if it is runnable then.
    pub adopt: core::sync::atomic::AtomicBool,
    /// Set when it yields, so that the trace can say why it stopped.
    pub yielded: core::sync::atomic::AtomicBool,
    /// What an upcall in progress keeps.
    pub upcall: Mutex<UpcallState>,
    /// Last but for the histogram it ends with (`VcpuStats`).
    pub stats: Mutex<VcpuStats>,
}

// What a switch touches of a vCPU (all but the histogram that ends it) stays within 1 KiB,
// so that it lies in one page unless the allocation puts a page boundary through it.
const _: () = assert!(
    core::mem::offset_of!(VcpuStats, latency) + core::mem::size_of::<Histogram>()
        == core::mem::size_of::<VcpuStats>()
        && core::mem::offset_of!(Vcpu, stats) + core::mem::size_of::<Mutex<VcpuStats>>()
            - core::mem::size_of::<Histogram>()
            <= 1024
);

/// The last `Domain::serial` handed out.
static DOMAIN_SERIAL: AtomicU64 = AtomicU64::new(0);

impl Drop for Domain {
    fn drop(&mut self) {
        // Atomic, so that the store before the free is not optimised away.
        self.serial.store(0, Ordering::Relaxed);
    }
}

impl Domain {
    /// Its `serial`: unique among the `Domain` objects made since boot, 0 once dropped.
    pub fn serial(&self) -> u64 {
        self.serial.load(Ordering::Relaxed)
    }
}

/// The last [`Vcpu::serial`] handed out.
static VCPU_SERIAL: AtomicU64 = AtomicU64::new(0);

impl Drop for Vcpu {
    fn drop(&mut self) {
        // Atomic, so that the store before the free is not optimised away.
        self.serial.store(0, Ordering::Relaxed);
    }
}

impl Vcpu {
    /// Its domain, while it exists (no table lookup, no global lock).
    pub fn domain(&self) -> Option<Arc<Domain>> {
        self.dom.upgrade()
    }

    /// The address of its domain (`Weak::as_ptr`: no reference count), valid while the
    /// domain lives. The domain table holds it until `destroy`, which waits until no CPU
    /// holds a vCPU of it (`pv::control::unregister`); dereferencing it is the caller's
    /// argument (`schedule`'s `Held`).
    pub fn domain_ptr(&self) -> *const Domain {
        self.dom.as_ptr()
    }

    /// Its [`Vcpu::serial`]: unique among the `Vcpu` objects made since boot, 0 once
    /// dropped.
    pub fn serial(&self) -> u64 {
        self.serial.load(Ordering::Relaxed)
    }

    /// Publishes its virtual time in the shared-info page: `ran_ns` so far, and whether it
    /// runs since `since_ns`. Only the CPU switching it in or out writes it.
    pub fn publish_time(&self, running: bool, ran_ns: u64, since_ns: u64) {
        // The guest only reads the slot, under the version protocol.
        let base = core::mem::offset_of!(SharedInfo, vcpu_time)
            + self.index as usize * core::mem::size_of::<VcpuTime>();
        let field = |offset: usize| base + offset;
        let version_at = self
            .shared
            .atomic_u32(field(core::mem::offset_of!(VcpuTime, version)));
        let version = version_at.load(Ordering::Relaxed).wrapping_add(1);
        version_at.store(version, Ordering::Relaxed); // odd: being updated
        core::sync::atomic::fence(Ordering::Release);
        self.shared
            .atomic_u32(field(core::mem::offset_of!(VcpuTime, running)))
            .store(u32::from(running), Ordering::Relaxed);
        self.shared
            .atomic_u64(field(core::mem::offset_of!(VcpuTime, ran_ns)))
            .store(ran_ns, Ordering::Relaxed);
        self.shared
            .atomic_u64(field(core::mem::offset_of!(VcpuTime, since_ns)))
            .store(since_ns, Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Release);
        version_at.store(version.wrapping_add(1), Ordering::Relaxed); // even: consistent
    }
}

/// Mutable part of a domain.
pub struct DomainLife {
    pub state: DomainState,
    pub exit: DomainExit,
    /// Dropped (frames freed) at destruction.
    pub space: Option<AddressSpace>,
    /// vCPUs blocked in `domctl Wait` on this domain, woken when it ends.
    pub waiters: Vec<u32>,
}

// `Domain::polling` has a bit for every vCPU a domain can have.
const _: () = assert!(abi::shared::MAX_VCPUS <= 64);

/// A domain.
///
/// In declaration order (`repr(C)`): what an event's send and delivery read (its ports, its
/// counters page, its vCPUs) first, next to the `Arc`'s counts that a send's upgrade of the
/// peer touches, and the large snapshot slots last: under QEMU's TCG each page a switch
/// touches costs a TLB fill (see [`Vcpu`]), and left to the compiler's order the two ends
/// of a one-CPU event ping took a page each of the receiving domain.
#[repr(C)]
pub struct Domain {
    /// Its event-channel ports; a bound port keeps its peer's object (`event_channel`).
    pub ports: Mutex<PortTable<Domain>>,
    /// Its counters page (`abi::shared::Counters`): work counters and event bits.
    pub counters: HeldPage,
    pub vcpus: Vec<Arc<Vcpu>>,
    /// Its sends linger and check their peer (`selftest=slow-send`, `event_channel`).
    pub slow_sends: bool,
    /// Set once a port of another domain has been bound to it (`BindInterdomain`, before
    /// the binding is stored, under both tables' locks): a send may then reach it by pointer
    /// (`arch::rcu::Reached`), and its destroy waits for a grace period before its last
    /// `Arc` goes. A domain no port was ever bound to is reached by no send.
    pub bound_to: AtomicBool,
    /// Its vCPUs in `SchedOp::Poll`, a bit per vCPU index: an event on any of its ports wakes
    /// them, whatever the port's mask and vCPU (`event_channel`, Xen's `poll_mask`).
    pub polling: AtomicU64,
    /// A number no other `Domain` object has had since boot (never 0), and 0 once it is
    /// dropped, as `Vcpu::serial`: `selftest=slow-send` checks a send's peer still reads it
    /// after the delivery (`event_channel`).
    serial: AtomicU64,
    /// Itself, for the far ends of its bound ports to reach it by (Xen's `remote_dom`).
    this: Weak<Domain>,
    pub id: DomainId,
    pub privileged: bool,
    pub life: Mutex<DomainLife>,
    pub sched: Mutex<SchedParams>,
    /// The most frames it may hold (`memory_kib` / 4).
    pub frames_limit: u64,
    /// Its console output quota (bytes), for an unprivileged domain.
    pub console_quota: Mutex<kerncore::ratelimit::TokenBucket>,
    /// Console bytes refused over the quota.
    pub console_refused: AtomicU64,
    pub name: ArrayString<NAME_BYTES>,
    /// The grants it made to other domains.
    pub grants: Mutex<kerncore::grant::GrantTable>,
    /// The grants of other domains it has mapped.
    pub maptrack: Mutex<kerncore::grant::MapTrack>,
    /// Its figures at the last snapshot into each slot (`sysctl TakeSnapshot`), if it
    /// existed then.
    pub snapshot: Mutex<[Option<DomainInfo>; abi::control::SNAPSHOT_SLOTS as usize]>,
}

/// Console output a guest may write at once, in bytes: a page of text.
pub const CONSOLE_BURST_BYTES: u64 = 8192;
/// Console output a guest may write a second, in bytes, once its burst is spent.
pub const CONSOLE_BYTES_PER_SEC: u64 = 4096;

/// Why a domain could not be created.
#[derive(Debug)]
pub enum CreateError {
    Image(image::ImageError),
    OutOfMemory,
    TooManyDomains,
    BadParameter(&'static str),
}

impl core::fmt::Display for CreateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CreateError::Image(e) => write!(f, "bad image: {e}"),
            CreateError::OutOfMemory => write!(f, "out of memory"),
            CreateError::TooManyDomains => {
                write!(
                    f,
                    "too many domains or vCPUs (at most {MAX_DOMAINS} and {MAX_VCPUS_TOTAL})"
                )
            }
            CreateError::BadParameter(what) => write!(f, "bad {what}"),
        }
    }
}

/// All domains, indexed by id.
static DOMAINS: RwLock<Vec<Option<Arc<Domain>>>> = RwLock::new(Vec::new());
/// Which global vCPU ids are taken ([`free_slots`] hands them out): creation and removal
/// only.
static VCPU_IDS: Mutex<Vec<Option<()>>> = Mutex::new(Vec::new());
/// All vCPUs, indexed by global id, each slot behind a lock of its own: looking one up
/// touches that slot's cache line alone, never a lock that every CPU shares. Allocated whole
/// with the first domain, in page-aligned runs of [`SLOTS_PER_PAGE`] slots, so that a page
/// holds the slots of 32 consecutive ids: a switch between two vCPUs of nearby ids reads
/// one page of the table, not two when the allocation happened to put a page boundary
/// between them (under QEMU's TCG a TLB fill each, README.md "What the 34 fills are now").
static VCPUS: Once<Box<[SlotPage]>> = Once::new();

/// Slots in a page of [`VCPUS`].
const SLOTS_PER_PAGE: usize = 32;

/// A page of [`VCPUS`].
#[repr(C, align(4096))]
struct SlotPage([CachePadded<VcpuSlot>; SLOTS_PER_PAGE]);

const _: () = assert!(
    core::mem::size_of::<SlotPage>() == 4096 && MAX_VCPUS_TOTAL.is_multiple_of(SLOTS_PER_PAGE)
);

/// One global vCPU id's slot: the vCPU (an `Arc`, which keeps it alive while it is in the
/// table) and its address, for the switch to reach it with no lock and no reference count
/// ([`vcpu_ptr`]).
struct VcpuSlot {
    vcpu: RwLock<Option<Arc<Vcpu>>>,
    /// `Arc::as_ptr` of `vcpu` while it holds one, else null: set after `vcpu` at creation,
    /// cleared before it at removal.
    ptr: AtomicPtr<Vcpu>,
}

/// The table, allocated on first use.
fn vcpu_slots() -> &'static [SlotPage] {
    VCPUS.call_once(|| {
        (0..MAX_VCPUS_TOTAL / SLOTS_PER_PAGE)
            .map(|_| {
                SlotPage(core::array::from_fn(|_| {
                    CachePadded::new(VcpuSlot {
                        vcpu: RwLock::new(None),
                        ptr: AtomicPtr::new(core::ptr::null_mut()),
                    })
                }))
            })
            .collect()
    })
}

/// The slot of global vCPU id `id` in `table`, if there is one.
fn slot_in(table: &[SlotPage], id: u32) -> Option<&VcpuSlot> {
    let id = id as usize;
    Some(&table.get(id / SLOTS_PER_PAGE)?.0[id % SLOTS_PER_PAGE])
}

/// Every live domain.
pub fn all() -> Vec<Arc<Domain>> {
    DOMAINS.read().iter().flatten().cloned().collect()
}

/// Looks a domain up.
pub fn domain(id: DomainId) -> Option<Arc<Domain>> {
    let table = DOMAINS.read();
    if time::self_test_is(SelfTest::SlowLookup)
        && crate::schedule::with_current(|_, d| !d.privileged).unwrap_or(false)
    {
        time::stall(SelfTest::SlowLookup, SLOW_LOOKUP_US);
    }
    table.get(id as usize).cloned().flatten()
}

/// `selftest=slow-lookup`: each look-up in the domain table by a guest (not Domain0) holds
/// its read lock this long (interrupts off), as a CPU the host stopped there would, while
/// other CPUs' look-ups overlap it and Domain0 waits to write.
const SLOW_LOOKUP_US: u64 = 5000;

/// The domain table for writing (Domain0's create and destroy). Taken upgradeable first:
/// that keeps new readers out (`spin`'s readers back off from an upgradeable holder) while
/// those inside finish, and then upgraded. A plain `write` waits for a moment with no reader
/// at all, and every hypercall that looks up its own domain (`memory_op`, `mmu_update`,
/// grants) reads the table: a guest's vCPUs looking up back to back, their holds
/// overlapping, kept Domain0 spinning with interrupts off until the watchdog stopped the
/// machine (an audit of session 22; `isolation/slow-lookup`).
fn domains_for_write() -> spin::RwLockWriteGuard<'static, Vec<Option<Arc<Domain>>>> {
    DOMAINS.upgradeable_read().upgrade()
}

/// Looks a vCPU up by global id.
pub fn vcpu(id: u32) -> Option<Arc<Vcpu>> {
    slot_in(VCPUS.get()?, id)?.vcpu.read().clone()
}

/// The address of the vCPU with global id `id` (null if there is none): one load, no lock,
/// no reference count. It stays valid while the table holds the vCPU, that is until
/// [`remove`], which `destroy` calls only once no CPU holds the vCPU (`pv::control::unregister`);
/// dereferencing it is the caller's argument (`schedule`'s `Held`, the switch's only user).
pub fn vcpu_ptr(id: u32) -> *const Vcpu {
    VCPUS
        .get()
        .and_then(|table| slot_in(table, id))
        .map_or(core::ptr::null(), |slot| slot.ptr.load(Ordering::Acquire))
}

/// A free slot index in a table, growing it up to `max`.
/// The `n` lowest free slots of `table` (growing it up to `max`), or `None` if there are not
/// that many; the table is unchanged then.
fn free_slots<T>(table: &mut Vec<Option<T>>, max: usize, n: usize) -> Option<Vec<usize>> {
    let mut slots: Vec<usize> = (0..table.len())
        .filter(|&i| table[i].is_none())
        .take(n)
        .collect();
    let grow = n - slots.len();
    if table.len() + grow > max {
        return None;
    }
    for _ in 0..grow {
        table.push(None);
        slots.push(table.len() - 1);
    }
    Some(slots)
}

/// What to build.
pub struct DomainConfig<'a> {
    pub name: &'a str,
    pub image: &'a [u8],
    pub vcpus: u32,
    pub memory_kib: u32,
    pub sched: SchedParams,
    pub args: &'a [(&'a str, u64)],
    pub privileged: bool,
    /// Bytes mapped read-only at `layout::PLAN` (Domain0's plan).
    pub plan: Option<&'a [u8]>,
}

fn time_info() -> TimeInfo {
    let hz = time::tsc_hz().max(1);
    TimeInfo {
        version: 2,
        pad: 0,
        tsc_timestamp: crate::arch::boot::entry_tsc(),
        system_time_ns: 0,
        tsc_mul: ((1_000_000_000u128 << 32) / u128::from(hz)) as u64,
    }
}

/// Builds a paused domain: address space, image, stacks, shared pages, vCPUs.
pub fn create(config: &DomainConfig) -> Result<Arc<Domain>, CreateError> {
    if config.vcpus == 0 || config.vcpus as usize > MAX_VCPUS {
        return Err(CreateError::BadParameter("vcpus"));
    }
    if config.name.is_empty() || config.name.len() > NAME_BYTES {
        return Err(CreateError::BadParameter("name"));
    }
    // What building it takes, by the model the spec validator uses: refuse before building
    // if its memory cannot hold that.
    let span = image::span(config.image).map_err(CreateError::Image)?;
    let plan_bytes = config.plan.map_or(0, |p| p.len() as u64);
    let model = sched::limits::domain_frames(span, u64::from(config.vcpus), plan_bytes);
    if sched::limits::kib_for_frames(model) > u64::from(config.memory_kib) {
        log::warn!(
            "domain {}: image ({} KiB), {} vCPU stacks, tables and shared pages need {} KiB, \
             more than its memory_kib = {}",
            config.name,
            span >> 10,
            config.vcpus,
            sched::limits::kib_for_frames(model),
            config.memory_kib
        );
        return Err(CreateError::BadParameter("memory_kib"));
    }
    let (entry, segments) = image::segments(config.image).map_err(CreateError::Image)?;
    let oom = |_| CreateError::OutOfMemory;
    let mut space = AddressSpace::new(&crate::mm::MACHINE).map_err(oom)?;
    // The pages only read-only segments cover are the image's, loaded once and mapped
    // read-only into every domain built from it (`crate::mm::shared_image`); the rest is
    // the domain's own.
    let shared = boot_module::holds(config.image)
        .then(|| crate::mm::shared_image::acquire(config.image))
        .flatten()
        .unwrap_or_default();
    if !shared.is_empty() {
        space.share(shared.iter().map(|p| p.1).collect());
    }
    for &(page, phys) in &shared {
        space
            .map_shared(page.va, phys, page.executable)
            .map_err(oom)?;
    }
    let is_shared = |page: u64| shared.iter().any(|p| p.0.va == page);
    for seg in segments {
        let access = Access {
            writable: seg.writable,
            executable: seg.executable,
        };
        let mut page = seg.vaddr & !0xfff;
        while page < seg.vaddr + seg.mem_bytes {
            if !is_shared(page) {
                space.map_new(page, access).map_err(oom)?;
            }
            page += 4096;
        }
        // The file bytes of its own pages, a page at a time.
        let file_end = seg.vaddr + seg.file_bytes;
        let mut at = seg.vaddr;
        while at < file_end {
            let next = ((at & !0xfff) + 4096).min(file_end);
            if !is_shared(at & !0xfff) {
                let from = (seg.file_offset + (at - seg.vaddr)) as usize;
                space.write(at, &config.image[from..from + (next - at) as usize]);
            }
            at = next;
        }
    }
    let data = Access {
        writable: true,
        executable: false,
    };
    let read_only = Access {
        writable: false,
        executable: false,
    };
    for v in 0..u64::from(config.vcpus) {
        let top = layout::STACK_TOP - v * layout::STACK_STRIDE;
        let mut page = top - layout::STACK_BYTES;
        while page < top {
            space.map_new(page, data).map_err(oom)?;
            page += 4096;
        }
    }
    let shared_phys = space.map_new(layout::SHARED_INFO, read_only).map_err(oom)?;
    let counters_phys = space.map_new(layout::COUNTERS, data).map_err(oom)?;
    // Pages only the hypervisor writes, which the guest may never map writable.
    let mut hv_readonly = alloc::vec![shared_phys];
    if let Some(plan) = config.plan {
        if plan.len() as u64 > layout::PLAN_LIMIT {
            return Err(CreateError::BadParameter("plan"));
        }
        let mut page = layout::PLAN;
        while page < layout::PLAN + plan.len() as u64 {
            hv_readonly.push(space.map_new(page, read_only).map_err(oom)?);
            page += 4096;
        }
        space.write(layout::PLAN, plan);
    }
    // The empty level-1 table of the area where the guest maps frames itself, and, last,
    // its page tables shown read-only in the window.
    space.ensure_l1(layout::MAP_AREA).map_err(oom)?;
    let pt_window = space
        .map_tables_at(layout::PT_WINDOW, abi::shared::PT_WINDOW_SLOTS)
        .map_err(oom)?;
    if space.frames() as u64 > model {
        // The model must never ask for less than this: the validator relies on it.
        log::error!(
            "domain {}: built with {} frames, more than the {model} of sched::limits::domain_frames",
            config.name,
            space.frames()
        );
        return Err(CreateError::BadParameter("memory model"));
    }
    if (space.frames() as u64) * 4 > u64::from(config.memory_kib) {
        log::warn!(
            "domain {}: image, stacks and tables take {} KiB, more than its memory_kib = {}",
            config.name,
            space.frames() * 4,
            config.memory_kib
        );
        return Err(CreateError::BadParameter("memory_kib"));
    }

    let mut domains = domains_for_write();
    let mut vcpus = VCPU_IDS.lock();
    // The tables get their full size with the first domain (Domain0, at boot), so that they
    // never grow later: the heap the hypervisor uses with every guest gone is what it was
    // before the first guest came, which Domain0 checks.
    let (nd, nv) = (domains.len(), vcpus.len());
    domains.reserve_exact(MAX_DOMAINS.saturating_sub(nd));
    vcpus.reserve_exact(MAX_VCPUS_TOTAL.saturating_sub(nv));
    let id =
        free_slots(&mut domains, MAX_DOMAINS, 1).ok_or(CreateError::TooManyDomains)?[0] as DomainId;

    let mut args = [Arg::default(); MAX_ARGS];
    for (slot, (name, value)) in args.iter_mut().zip(config.args) {
        *slot = Arg {
            name: name_bytes(name),
            value: *value,
        };
    }
    let info = SharedInfo {
        domain_id: id,
        vcpus: config.vcpus,
        name: name_bytes(config.name),
        time: time_info(),
        args,
        plan_bytes: config.plan.map_or(0, |p| p.len() as u64),
        wallclock_at_boot_ns: time::wallclock_at_boot_ns(),
        vcpu_time: [VcpuTime::default(); MAX_VCPUS],
        memory: abi::shared::MemoryInfo {
            pt_root: space.pml4(),
            frames_limit: u64::from(config.memory_kib / 4),
            pt_count: pt_window.len() as u64,
            pt_window: core::array::from_fn(|i| pt_window.get(i).copied().unwrap_or(0)),
        },
    };
    const _: () = assert!(
        core::mem::size_of::<SharedInfo>() <= 4096 && core::mem::size_of::<Counters>() <= 4096
    );

    // From here the frame table owns the address space: its frames are the domain's, its
    // tables validated like any the guest would build.
    // The hypervisor writes the shared-info and counters pages for the domain's whole life:
    // it holds them, so that a guest that unmaps one cannot give its frame back.
    let [shared, counters] = match space.adopt(id, &hv_readonly, [shared_phys, counters_phys]) {
        Ok(held) => held,
        Err(e) => {
            log::error!(
                "domain {}: its initial page tables do not validate: {e}",
                config.name
            );
            return Err(CreateError::BadParameter("page tables"));
        }
    };
    shared.write(0, info.as_bytes());
    let pml4 = space.pml4();
    // The vCPUs' global slots first, so that nothing below can fail. (Failing here drops
    // `space`, freeing its frames.)
    let slots = free_slots(&mut vcpus, MAX_VCPUS_TOTAL, config.vcpus as usize)
        .ok_or(CreateError::TooManyDomains)?;
    let mut name = ArrayString::new();
    name.push_str(config.name);
    let domain = Arc::new_cyclic(|dom: &Weak<Domain>| {
        let vcpu_list = slots
            .iter()
            .zip(0..config.vcpus)
            .map(|(&slot, index)| {
                let frame = TrapFrame {
                    rip: entry,
                    cs: u64::from(USER_CODE.0),
                    rflags: 0x202,
                    rsp: layout::STACK_TOP - u64::from(index) * layout::STACK_STRIDE,
                    ss: u64::from(USER_DATA.0),
                    rdi: u64::from(index),
                    ..TrapFrame::default()
                };
                Arc::new(Vcpu {
                    id: slot as u32,
                    shared: shared.clone(),
                    counters: counters.clone(),
                    callback: AtomicU64::new(0),
                    upcall: Mutex::new(UpcallState::default()),
                    domain: id,
                    dom: dom.clone(),
                    index,
                    pml4,
                    state: Mutex::new(VcpuState::CREATED),
                    regs: Mutex::new(frame),
                    selectors: AtomicU64::new(0),
                    fpu: FpuArea::new(),
                    running_on: AtomicUsize::new(NOT_RUNNING),
                    sched_instance: core::sync::atomic::AtomicU32::new(u32::MAX),
                    adopt: core::sync::atomic::AtomicBool::new(false),
                    yielded: core::sync::atomic::AtomicBool::new(false),
                    timer_deadline: AtomicU64::new(0),
                    last_timer_deadline: AtomicU64::new(0),
                    set_timer_took: AtomicU64::new(0),
                    trace_events: AtomicU64::new(0),
                    serial: AtomicU64::new(VCPU_SERIAL.fetch_add(1, Ordering::Relaxed) + 1),
                    stats: Mutex::new(VcpuStats::default()),
                })
            })
            .collect();
        Domain {
            id,
            name,
            privileged: config.privileged,
            vcpus: vcpu_list,
            counters: counters.clone(),
            sched: Mutex::new(config.sched),
            life: Mutex::new(DomainLife {
                state: DomainState::Paused,
                exit: DomainExit::Running,
                space: Some(space),
                waiters: Vec::new(),
            }),
            snapshot: Mutex::new([None; abi::control::SNAPSHOT_SLOTS as usize]),
            ports: Mutex::new(PortTable::default()),
            bound_to: AtomicBool::new(false),
            polling: AtomicU64::new(0),
            serial: AtomicU64::new(DOMAIN_SERIAL.fetch_add(1, Ordering::Relaxed) + 1),
            slow_sends: event_channel::SLOW_SEND.load(Ordering::Acquire),
            this: dom.clone(),
            frames_limit: u64::from(config.memory_kib / 4),
            grants: Mutex::new(kerncore::grant::GrantTable::default()),
            maptrack: Mutex::new(kerncore::grant::MapTrack::default()),
            console_quota: Mutex::new(kerncore::ratelimit::TokenBucket::new(
                CONSOLE_BURST_BYTES,
                CONSOLE_BYTES_PER_SEC,
            )),
            console_refused: AtomicU64::new(0),
        }
    });
    for v in &domain.vcpus {
        vcpus[v.id as usize] = Some(());
        let slot = slot_in(vcpu_slots(), v.id).expect("a vCPU's id is within the table");
        *slot.vcpu.write() = Some(v.clone());
        slot.ptr.store(Arc::as_ptr(v).cast_mut(), Ordering::Release);
    }
    domains[id as usize] = Some(domain.clone());
    Ok(domain)
}

/// A vCPU's upcall state, kept by the hypervisor (`crate::pv::upcall`).
#[derive(Default)]
pub struct UpcallState {
    /// The interrupted context's vector registers while an upcall that interrupted it runs.
    pub saved_fpu: Option<Box<FpuState>>,
}

impl Domain {
    /// Flushes the TLB of every CPU that may hold translations of this domain's address space:
    /// those whose CR3 holds its PML4, or was leaving it a moment ago
    /// (`arch::percpu::cpus_holding`, Xen's `dirty_cpumask`). Asks them all at once and
    /// waits until each has (`smp::shootdown`). A CPU that loads the PML4 after the look
    /// starts with a flushed TLB.
    pub fn flush_tlbs(&self) {
        smp::ipi::flush_tlbs(crate::arch::percpu::cpus_holding(self.pml4()));
    }

    /// The physical address of its PML4 (every vCPU loads the same one).
    pub fn pml4(&self) -> u64 {
        self.vcpus.first().map_or(0, |v| v.pml4)
    }

    /// Whether some CPU's CR3 may still hold its address space (its frames must not be
    /// freed until none does).
    pub fn loaded_anywhere(&self) -> bool {
        crate::arch::percpu::cpus_holding(self.pml4())
            .next()
            .is_some()
    }

    /// A vCPU index of this domain, from a hypercall argument.
    pub fn vcpu_index(&self, raw: u64) -> Result<u32, abi::error::Errno> {
        u32::try_from(raw)
            .ok()
            .filter(|i| (*i as usize) < self.vcpus.len())
            .ok_or(abi::error::Errno::Inval)
    }

    /// The work counters the guest wrote, summed over its vCPUs.
    pub fn work(&self) -> u64 {
        // A racy read of a guest-written counter is what we want.
        (0..self.vcpus.len())
            .map(|i| {
                self.counters
                    .read_u64(core::mem::offset_of!(Counters, work) + i * 8)
            })
            .fold(0u64, u64::wrapping_add)
    }

    /// The figures `domctl GetInfo` reports.
    pub fn info(&self, now: u64) -> DomainInfo {
        self.info_and_growth(now).0
    }

    /// Starts every vCPU's wake-up latency histogram afresh (`Sysctl::TakeSnapshotStart`: the
    /// `domain` records' latency figures are then the measured interval's).
    pub fn restart_latency(&self) {
        for v in &self.vcpus {
            v.stats.lock().latency.clear();
        }
    }

    /// [`Domain::info`] at `now`, and how many of its vCPUs were then running and how many
    /// waiting: what its CPU and waiting time grow by per ns while nothing changes (a
    /// held snapshot carries its figures forward with it: `pv::control`).
    pub fn info_and_growth(&self, now: u64) -> (DomainInfo, Growth) {
        let mut growth = Growth::default();
        let life = self.life.lock();
        let mut info = DomainInfo {
            domain: self.id,
            state: life.state,
            exit: life.exit,
            vcpus: self.vcpus.len() as u32,
            sched: *self.sched.lock(),
            cpu_ns: 0,
            wait_ns: 0,
            work: self.work(),
            wakeups: 0,
            wake_lat_p50_ns: 0,
            wake_lat_p99_ns: 0,
            wake_lat_max_ns: 0,
            switches: 0,
            migrations: 0,
            frames: life.space.as_ref().map_or(0, |s| s.frames() as u64),
            wake_lat_hist: [0; abi::control::WAKE_LAT_BUCKETS],
            timer_deadline_ns: self
                .vcpus
                .first()
                .map_or(0, |v| v.last_timer_deadline.load(Ordering::Relaxed)),
        };
        drop(life);
        // Only histograms that hold samples are merged and read: a snapshot holds the other
        // CPUs while it reads every domain (`sysctl TakeSnapshot`), and 1024 cpu domains'
        // empty histograms (a thousand buckets each) made that hold 7.4 ms under TCG, all
        // of it charged to the vCPU held on the other CPU (one domain of 1024 got 8 ms of
        // CPU in a 1 s interval where the others got 2).
        let mut merged: Option<Histogram> = None;
        for v in &self.vcpus {
            let s = v.stats.lock();
            let (cpu_ns, wait_ns) = s.account.at(now);
            info.cpu_ns += cpu_ns;
            info.wait_ns += wait_ns;
            growth.count(&s.account, now);
            info.wakeups += s.wakeups;
            info.switches += s.switches;
            info.migrations += s.migrations;
            if s.latency.count() != 0 {
                match &mut merged {
                    Some(m) => m.merge(&s.latency),
                    None => merged = Some(s.latency.clone()),
                }
            }
        }
        if let Some(merged) = merged {
            info.wake_lat_p50_ns = merged.percentile(50);
            info.wake_lat_p99_ns = merged.percentile(99);
            info.wake_lat_max_ns = merged.max();
            info.wake_lat_hist = merged.log2_buckets();
        }
        (info, growth)
    }

    /// Whether any vCPU is still on a CPU.
    pub fn on_cpu(&self) -> bool {
        self.vcpus
            .iter()
            .any(|v| v.running_on.load(Ordering::Acquire) != NOT_RUNNING)
    }
}

/// What every live domain holds, summed (`sysctl Resources`): Domain0 checks that with the
/// guests gone these are back where they were.
pub fn resource_counts() -> abi::control::ResourceCounts {
    let mut c = abi::control::ResourceCounts {
        vcpus: VCPU_IDS.lock().iter().flatten().count() as u32,
        ..Default::default()
    };
    for d in all() {
        c.domains += 1;
        c.ports += d.ports.lock().in_use().count() as u32;
        c.grants += d.grants.lock().len() as u32;
        c.grant_maps += d.maptrack.lock().len() as u32;
    }
    c
}

/// Removes a domain from the tables. The caller has made sure no vCPU of it runs anywhere;
/// dropping the last reference frees its address space.
pub fn remove(domain: &Domain) {
    // The domain table, then the vCPU ids: `create`'s order (taken the other way round, a
    // create and a remove at once, from two of Domain0's vCPUs, would each hold the lock the
    // other waits for).
    let mut domains = domains_for_write();
    let mut vcpus = VCPU_IDS.lock();
    for v in &domain.vcpus {
        let slot = slot_in(vcpu_slots(), v.id).expect("a vCPU's id is within the table");
        slot.ptr.store(core::ptr::null_mut(), Ordering::Release);
        *slot.vcpu.write() = None;
        vcpus[v.id as usize] = None;
    }
    domains[domain.id as usize] = None;
}
