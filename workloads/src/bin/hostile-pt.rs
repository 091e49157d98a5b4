//! `hostile-pt`: the page-table, hypercall-argument and fresh-memory classes of the XTF-style
//! hostile suite (what `hostile-mm` and `hostile-wildptr` do not cover). Argument `case`
//! picks one; each ends as `workloads::xtf` describes (`scripts/runner/src/xtf.rs` has the
//! right ending of each).
//!
//! | case | name | act | right ending |
//! |---|---|---|---|
//! | 0 | pt-bits | on tables of its own (L4 entry 100 down to a data page), each of bits 0-11 and 52-63 toggled in a valid entry at every level: accepted exactly when the ABI allows the bit (`abi::mm::pte::GUEST_ALLOWED`, user bit required, no superpage, and no present bit cleared on the only link to a table that is not empty), refused ones leave the entry as it was | SUCCESS |
//! | 19 | pt-bypass | a tree built top-down within the rules (an L3, an L2, then as many L1 tables as the page-table quota allows, each filled with 512 entries by `mmu_update`), then the L3's only link replaced by itself with the present bit cleared: refused, or else the time that one update took to devalidate it all is printed; torn down bottom-up either way (needs `memory_kib` >= 4096) | SUCCESS |
//! | 18 | pt-bounded | the only link to a table that is not empty dropped by writing 0, by clearing only the present bit, and by clearing it along with other bits: each refused (a table loses its last link only once empty, so no update devalidates more than one table); then the tree torn down bottom-up | SUCCESS |
//! | 1 | pt-linear | self-maps and cross-level links: an L3, L2 or L1 entry pointing at its own table, an L2 entry at the L3 above it, an L3 entry at the root; an L1 entry mapping its own table read-only is allowed, writable is not | SUCCESS |
//! | 2 | pt-writable | every page table of its own (those in the window and those it built) mapped writable, through `mmu_update` and `update_va_mapping`, and granted read-write to Domain0: refused; the shared-info page granted: refused | SUCCESS |
//! | 3 | pt-batch | interleaved batches: a frame mapped writable then linked as a table in one batch (the second refused, the first kept), 512 updates mapping and unmapping one page (all applied), 513 updates and 0 updates (refused) | SUCCESS |
//! | 4 | pt-va0 | a page of its own mapped at VA 0: readable and callable from ring 3, and `console_write` from it works (SMAP with `stac`) | SUCCESS |
//! | 5 | hcall-numbers | every hypercall number from 14 to 4096 and large ones (2^32 + 6, 2^63 + 6, 2^64 - 1), every operation out of range of each multiplexed call: `NoSys` (or `Inval`) | SUCCESS |
//! | 6 | hcall-pointers | hypervisor, non-canonical, unmapped, straddling, wrapping and top-of-half pointers to every call that takes one: `Fault`; a list it cannot write back costs it no frames | SUCCESS |
//! | 7 | hcall-lengths | huge lengths and counts (console, poll, mmu_update, memory_op, grant copy): an error or a short result, never more than asked | SUCCESS |
//! | 8 | fresh-frames | takes every frame it may, checks each reads as zeroes, gives them back, for 600 ms (beside `dirty`) | SUCCESS |
//! | 9 | dirty | takes every frame it may, fills them with 0xa5, gives them back, for 600 ms | SUCCESS |
//! | 10 | stale-tlb | unmaps a page in an `mmu_update` batch whose tail is unmapped (the call fails part way), gives the frame back, then reads the page: the translation must be gone | killed: page fault |
//! | 11 | callback-return-wild | `callback_return` with a frame in the hypervisor's half | killed: bad event upcall |
//! | 12 | callback-return-noncanonical | `callback_return` with a saved RIP of 0x0000_8000_0000_0000 | killed: bad event upcall |
//! | 14 | pt-preempt | one `mmu_update` linking an L3 whose 512 entries name 512 fresh L2 tables, which name up to 8 sets of 512 fresh L1 tables (as many as `memory_kib` allows: 6144 for one set, 20480 for eight), each with 512 entries: from 524,000 to 2.4 million entries validated in one call, then released by the unlink (Xen's XSA-45: long operations must be preemptible). Prints how long each call took | SUCCESS if the machine survives both calls (the watchdog, bystanders) |
//! | 15 | pt-unlink | the same tree linked bottom-up (the empty L3, then one L2 per call: each call validates at most one set, until a quota on page tables refuses with `NoMem`), then unlinked in one call | SUCCESS if the machine survives |
//! | 16 | pt-teardown | the same tree linked bottom-up, then the domain exits: Domain0's destroy releases it | SUCCESS, and the machine survives the teardown |
//! | 17 | args-edges | edge values for the arguments of event-channel, grant, vCPU and memory operations (ports 0, 1023, 1024, 2^32 - 1 and beyond, references and handles likewise, domains itself, nonexistent and 2^64 - 1, a frame listed twice), and forged reservation continuations (`MEMORY_OP_PREEMPTED` with 0, `count` or more entries done, or on an operation that is not a reservation: `NoSys`; a well-formed one from entry 3 of 4: one frame taken, or given back, and 4 reported): each an error or a harmless success, and the frames it holds stay counted | SUCCESS |
//! | 20 | pt-hv-pages | the pages the hypervisor writes linked as an L1 table: the shared-info page, the counters page while mapped writable, and the counters page unmapped (then mapped back): each refused, since the hypervisor's writes (time, pending-event bits) would become entries | SUCCESS |
//! | 21 | pt-shared-image | its own text page, whose frame the image's domains share read-only (`share_images=on`, the default; a run with `off` fails it): that frame mapped again read-only, its entry rewritten writable or as it is, the frame linked as an L1, granted to Domain0, given back, and written by the hypervisor (`memory_op` writing a frame list over it): each refused, the page's bytes unchanged and no frame lost. Two domains of the image run it at once | SUCCESS |
//! | 22 | pt-batch-link | 511 L1 tables filled as data (512 read-only entries each, naming one of its data frames), then linked into one L2 by a single `mmu_update` of 511 updates: each update validates one table, as the rules allow, so the call validates up to the quota's 512 tables (about 256,000 entries); prints how long the call took, and repeats (empty, unlink, fill, link) for 3 s, its timer armed 1 ms into each call | SUCCESS if at least 400 tables were linked in one call, every call of 8 ms or more took the timer upcall in its first half (the hypervisor preempts a batch after `HYPERCALL_SLICE_NS` and continues it) and at least one took that long, the machine survives (the watchdog: 1 s under TCG) and the bystanders run on (run under `-icount shift=0`, `xtf-preempt-link.toml`: calls of 27 ms, whatever the host's load; 33-144 ms on the real clock under TCG) |
//! | 23 | mem-batch | `memory_op` `IncreaseReservation` of 512 frames in one call (each zeroed by the hypervisor), then `DecreaseReservation` of them in one call, again and again for 2 s, its timer armed 500 us into each call; then, with `hold` > 0, holding that many frames and for 3 rounds giving back the oldest 512 held (a hypervisor that searched its list of them for each would take as long as the holding) | SUCCESS if every call of 4 ms or more took the timer upcall in its first half (the hypervisor preempts a reservation after `HYPERCALL_SLICE_NS` and continues it), at least one call took that long, every upcall came within 3 ms of its deadline, giving back the oldest batch while holding took at most 4 times as long as a batch with nothing held, each call took or gave back all 512 and no frame is lost (needs `memory_kib` >= 4096, 140000 with `hold` = 32768; run under `-icount shift=3`, `xtf-preempt-mem.toml`, so that calls last as long whatever the host's load) |
//! | 27 | flush-convoy | 2 vCPUs (`vcpus = 2`): vCPU 0 runs `pt-batch-link`'s batches, each tens of ms continued every 1 ms; vCPU 1 remaps a page of its own meanwhile, each remap a TLB flush that vCPU 0's CPU must serve: none may take over 10 ms (the flush served at vCPU 0's next continuation, not at the end of its batch) | SUCCESS |
//! | 13 | callback-return-flags | `callback_return` with a saved RFLAGS of all ones: it must come back with IOPL 0 and NT, TF, AC, ID, RF and VM clear | SUCCESS |
//! | 24 | tlb-retype-race | 2 vCPUs (`vcpus = 2`): vCPU 1 writes a page F mapped writable at a map-area page X (its TLB now holds X -> F), then tries over and over to link F as an L1 table; vCPU 0 unmaps X in an `mmu_update` batch whose other 511 updates rewrite an empty entry (the batch runs up to a slice, its flush at the end). F's last writable mapping is gone, so the link succeeds while vCPU 1's TLB still maps X writable; vCPU 1 then writes an entry into F through X, one mapping its own map-area page table writable, and reads that table through it. The type must not be dropped before every TLB that may hold X is flushed (Xen's TLB-flush timestamps in `get_page_type`), so the link succeeds only after the flush, and the write to X faults. vCPU 0 arms its timer 4-64 us into each batch: under `-icount` (`xtf-race.toml`) QEMU runs the CPUs in turn and switches at that deadline, so vCPU 1 runs mid-batch for certain (round 14 catches the hole, every run); without it the race is the host's | killed: page fault |
//! | 25 | unlink-race | 2 vCPUs (`vcpus = 2`): an L2 table T that is not empty (an L1 under it maps a data page) linked from two entries, a and b, of an L3. vCPU 0 unlinks a in an `mmu_update` batch whose other updates rewrite an empty entry (its flush, and the put of a's link, come at the end); vCPU 1, while that batch is under way, unlinks b. That is T's last live link, and T is not empty: it must be refused (`TooDeep`), as it is once a's put is done. Counting only the caller's own batch as removed, the hypervisor let it through, and the two deferred puts then devalidated T and everything under it in one step (up to `MAX_TABLES` tables' entries, where an update may do one table's worth). Timed as `tlb-retype-race` is (vCPU 0's timer 4-64 us into each batch, run under `-icount`: `xtf-unlink-race.toml`) | SUCCESS if every unlink of b made while a's waited for its flush was refused, and there was at least one |
//! | 26 | validate-race | 2 vCPUs (`vcpus = 2`): an L1 table Y that is not empty, linked once (entry q of an L2); a data frame X written with 511 links to Y and, last, a link to a data page as if it were an L1. vCPU 0 links X as an L2, again and again: each validation takes 511 links on Y, then fails on the last entry and drops them. vCPU 1, while that call is under way, removes q: Y's only live link, so it must be refused (`TooDeep`). Counted as live, the validation's links let it through, and the rollback then devalidated Y whole (one table here; up to `MAX_TABLES` tables' entries in one step with L2s under an L3). Timed as `unlink-race` (`xtf-unlink-race.toml`, under `-icount`) | SUCCESS if every removal of q made during vCPU 0's call was refused, and there was at least one |
//!
//! vCPU 0 acts; other vCPUs park (but vCPU 1 in cases 24 to 26).
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use abi::error::Errno::{self, Fault, Inval, NoSys, Perm};
use abi::hypercall as nr;
use abi::layout::{COUNTERS, MAP_AREA, PT_WINDOW, SHARED_INFO, STACK_BYTES, STACK_TOP, USER_LIMIT};
use abi::mm::{MmuUpdate, pte};
use abi::shared::UpcallFrame;
use workloads::xtf::{self, Checks};
use workloads::{entry, hypercall, pagetable, println, rt, shared, time};

entry!(main);

/// L4 index of the tables the page-table cases build.
const SCRATCH_L4: u64 = 100;
/// The VA those tables map.
const SCRATCH_VA: u64 = SCRATCH_L4 << 39;
/// Where a case maps one of its scratch tables read-only to read it.
const PEEK: u64 = MAP_AREA + 16 * 4096;

fn main(vcpu: usize) -> u64 {
    let case = shared::arg("case", 0);
    match case {
        24 => return race("tlb-retype-race", vcpu, retype_vcpu1, retype_vcpu0),
        25 => return race("unlink-race", vcpu, unlink_vcpu1, unlink_vcpu0),
        26 => return race("validate-race", vcpu, validate_vcpu1, validate_vcpu0),
        27 => return flush_convoy(vcpu),
        _ => {}
    }
    if vcpu != 0 {
        rt::park(vcpu);
    }
    match case {
        0 => with_scratch("pt-bits", pt_bits),
        1 => with_scratch("pt-linear", pt_linear),
        2 => with_scratch("pt-writable", pt_writable),
        3 => with_scratch("pt-batch", pt_batch),
        4 => pt_va0(),
        5 => hcall_numbers(),
        6 => hcall_pointers(),
        7 => hcall_lengths(),
        8 => frames(false),
        9 => frames(true),
        10 => stale_tlb(),
        11 => callback_return_bad("callback-return-wild", 0xffff_8000_0000_1000, None),
        12 => callback_return_bad(
            "callback-return-noncanonical",
            0,
            Some(0x0000_8000_0000_0000),
        ),
        13 => callback_return_flags(),
        14 => validate_bomb(Bomb::Link),
        15 => validate_bomb(Bomb::Unlink),
        16 => validate_bomb(Bomb::Teardown),
        17 => args_edges(),
        18 => with_scratch("pt-bounded", pt_bounded),
        19 => with_scratch("pt-bypass", pt_bypass),
        20 => with_scratch("pt-hv-pages", pt_hv_pages),
        21 => with_scratch("pt-shared-image", pt_shared_image),
        22 => with_scratch("pt-batch-link", pt_batch_link),
        23 => mem_batch(),
        _ => xtf::error("hostile-pt", format_args!("no case {case}")),
    }
}

fn update(ptr: u64, val: u64) -> Result<u64, Errno> {
    xtf::update(ptr, val)
}

// The race cases (24 to 26): vCPU 0 drives rounds, vCPU 1 races each of them. A domain runs
// one case, so the state between its two vCPUs is one set for all three.

/// The round vCPU 0 has started (0: set-up not done yet), the round vCPU 1 is ready for, and
/// the round it has finished.
static ROUND: AtomicU64 = AtomicU64::new(0);
static READY: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);
/// When vCPU 0 made its batch's call.
static T0: AtomicU64 = AtomicU64::new(u64::MAX);
/// vCPU 1's updates made while vCPU 0's call was under way: tried, and refused.
static TRIED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// The map-area table, whose entry [`RACE_FILLER`] vCPU 0's fillers write.
static PROGRESS_TABLE: AtomicU64 = AtomicU64::new(0);
/// vCPU 0's batch ([`race_batch`]): the update under test, then fillers.
static mut RACE_BATCH: [MmuUpdate; RACE_BATCH_LEN] = [MmuUpdate { ptr: 0, val: 0 }; RACE_BATCH_LEN];
/// Updates in the batch: the one under test, then fillers, few enough that the call is not
/// preempted (a continuation flushes, `HYPERCALL_SLICE_NS`): about 10 us each under TCG.
const RACE_BATCH_LEN: usize = 48;
/// vCPU 0 arms a timer this long, times 1 to [`RACE_TIMER_STEPS`] by round, before its call
/// (tens of microseconds under `-icount shift=0`).
const RACE_TIMER_NS: u64 = 4_000;
const RACE_TIMER_STEPS: u64 = 16;
/// The map-area table's entry the fillers write.
const RACE_FILLER: usize = 300;

/// A vCPU's side of a race case (`case`, the deadline of [`race`]): `Ok` or `Err`, the code
/// that ends the case.
type Side = fn(&str, u64) -> Result<u64, u64>;

/// A race case: it needs two vCPUs (an error naming it, if the domain has fewer; vCPUs past
/// the second take no part and park here). vCPU 1 runs `vcpu1`, vCPU 0 `vcpu0`, each given
/// the time (5 s on) after which waiting for the other is an error; either ends the case with
/// the code it returns, `Ok` or `Err`.
fn race(case: &str, vcpu: usize, vcpu1: Side, vcpu0: Side) -> u64 {
    if shared::vcpus() < 2 {
        return xtf::error(case, format_args!("needs 2 vCPUs"));
    }
    if vcpu > 1 {
        rt::park(vcpu);
    }
    let deadline = time::now_ns() + 5_000_000_000;
    let code = if vcpu == 1 {
        vcpu1(case, deadline)
    } else {
        vcpu0(case, deadline)
    };
    code.unwrap_or_else(|code| code)
}

/// vCPU 1's side of a race: each of `rounds` rounds, once vCPU 0 has started it (an error if
/// `deadline`, system ns, passes first), `each` runs it and it is marked done. Then vCPU 1
/// parks: vCPU 0 reports.
fn race_rounds(
    case: &str,
    rounds: u64,
    deadline: u64,
    mut each: impl FnMut(u64) -> Result<(), u64>,
) -> Result<u64, u64> {
    for round in 1..=rounds {
        if !await_round(&ROUND, round, deadline) {
            let last = round - 1;
            return Err(xtf::error(
                case,
                format_args!("vCPU 0 stopped (round {last})"),
            ));
        }
        each(round)?;
        DONE.store(round, Ordering::SeqCst);
    }
    rt::park(1)
}

/// vCPU 0: starts `round`, and waits until vCPU 1 is ready for it.
fn start_round(case: &str, round: u64, deadline: u64) -> Result<(), u64> {
    ROUND.store(round, Ordering::SeqCst);
    if !await_round(&READY, round, deadline) {
        return Err(xtf::error(
            case,
            format_args!("vCPU 1 not ready (round {round})"),
        ));
    }
    Ok(())
}

/// vCPU 0: waits until vCPU 1 has finished `round` (if it has not, it reported FAILURE and shut
/// the domain down, or it is stuck).
fn finish_round(case: &str, round: u64, deadline: u64) -> Result<(), u64> {
    if !await_round(&DONE, round, deadline) {
        return Err(xtf::error(
            case,
            format_args!("vCPU 1 never finished round {round}"),
        ));
    }
    Ok(())
}

/// A page-table entry linking the table at physical address `t`, guest-writable.
fn table_link(t: u64) -> u64 {
    t | pte::PRESENT | pte::USER | pte::WRITABLE
}

/// Sets this vCPU's timer a little into the hypercall about to be made, a different point
/// each round (`RACE_TIMER_NS` steps): under `-icount` QEMU hands the CPU over at the
/// deadline, so the other vCPU runs part-way through the call. Returns when it was set.
fn arm_handover(round: u64) -> u64 {
    let now = time::now_ns();
    let _ = hypercall::set_timer(now + RACE_TIMER_NS * (1 + round % RACE_TIMER_STEPS));
    now
}

/// Spins until the other vCPU stores `round` in `flag`; false once `deadline` (system ns)
/// passes first.
fn await_round(flag: &AtomicU64, round: u64, deadline: u64) -> bool {
    while flag.load(Ordering::SeqCst) != round {
        if time::now_ns() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// The map-area table's entry for `MAP_AREA` (the entries of the pages after it follow);
/// its table is where the fillers of vCPU 0's batch write ([`PROGRESS_TABLE`]).
fn map_area_slot(case: &str) -> Result<u64, u64> {
    let Some(slot) = pagetable::entry_address(MAP_AREA, 1) else {
        return Err(xtf::error(case, format_args!("no map-area table")));
    };
    PROGRESS_TABLE.store(slot & pte::ADDRESS, Ordering::SeqCst);
    Ok(slot)
}

/// `N` fresh frames, in the order taken.
fn take_frames<const N: usize>(case: &str) -> Result<[u64; N], u64> {
    let mut frames = [0; N];
    for f in &mut frames {
        *f = xtf::take_frame().map_err(|_| xtf::error(case, format_args!("taking frames")))?;
    }
    Ok(frames)
}

/// Frame `d` mapped read-only at `va`: the L1, L2 and L3 tables on the way (`xtf::map_page`).
fn scratch_tables(case: &str, va: u64, d: u64) -> Result<[u64; 3], u64> {
    match xtf::map_page(va, d, false, false, None) {
        Ok(b) => Ok(b.tables),
        Err(e) => Err(xtf::error(case, format_args!("building the tables: {e:?}"))),
    }
}

/// Writes vCPU 0's batch: entry `first` cleared, then fillers that write their number,
/// shifted clear of the present bit, into entry [`RACE_FILLER`] of `slot`'s table (an entry
/// nothing uses; the page-table window shows it, [`batch_progress`]). Its flush comes after
/// the last. Returns the fillers' entry.
///
/// # Safety
/// Clearing `first` must take away nothing this program's Rust code uses.
unsafe fn race_batch(slot: u64, first: u64) -> u64 {
    let filler = slot + RACE_FILLER as u64 * 8;
    // SAFETY: vCPU 1 does not read the batch; only vCPU 0 writes it, here, before its rounds.
    let batch = unsafe { &mut *core::ptr::addr_of_mut!(RACE_BATCH) };
    batch[0] = MmuUpdate { ptr: first, val: 0 };
    for (i, u) in batch[1..].iter_mut().enumerate() {
        *u = MmuUpdate {
            ptr: filler,
            val: (i as u64 + 1) << 12,
        };
    }
    filler
}

/// vCPU 0's batch call, with its timer due part-way through it, a different point each round
/// ([`arm_handover`]; [`T0`]: when it was armed). The timer's interrupt waits (the hypervisor
/// runs the batch with interrupts off), but under `-icount` QEMU runs the CPUs in turn and
/// hands over to the other CPU at every timer deadline, so vCPU 1 then runs, for certain,
/// while the batch is half done (`xtf-race.toml`, `xtf-unlink-race.toml`). Without `-icount`
/// the CPUs run at once and the race is left to chance.
fn call_batch(case: &str, round: u64) -> Result<(), u64> {
    T0.store(arm_handover(round), Ordering::SeqCst);
    // SAFETY: the batch, as `race_batch` wrote it: its first update's caller vouched for it,
    // the others write an entry nothing uses.
    let r = unsafe { hypercall::mmu_update(&*core::ptr::addr_of!(RACE_BATCH)) };
    if r != Ok(RACE_BATCH_LEN) {
        return Err(xtf::error(case, format_args!("the batch: {r:?}")));
    }
    Ok(())
}

/// vCPU 1: how far vCPU 0's batch is, the number of its last filler done (0: none yet).
fn batch_progress() -> u64 {
    let table = PROGRESS_TABLE.load(Ordering::SeqCst);
    pagetable::read_entry(table, RACE_FILLER).unwrap_or(0) >> 12
}

/// vCPU 1: whether vCPU 0's batch, at filler `progress`, is well before its flush (at its
/// end) and any preemption (which flushes too): at most half of its updates done (the flush
/// is still tens of microseconds away), and less than half a slice since the call (a
/// preemption comes only after a whole one, `HYPERCALL_SLICE_NS`, however slowly the host
/// runs this machine's CPUs).
fn before_flush(progress: u64) -> bool {
    let since = time::now_ns().saturating_sub(T0.load(Ordering::SeqCst));
    progress <= RACE_BATCH_LEN as u64 / 2 && since < nr::HYPERCALL_SLICE_NS / 2
}

/// `tlb-retype-race`'s entries and frame, from vCPU 0 to vCPU 1: X's entry, F, and the
/// entry F is linked at.
static RACE_X_SLOT: AtomicU64 = AtomicU64::new(0);
static RACE_F: AtomicU64 = AtomicU64::new(0);
static RACE_LINK_SLOT: AtomicU64 = AtomicU64::new(0);
/// The last round: vCPU 1 writes through X even after the batch.
static RACE_LAST: AtomicU64 = AtomicU64::new(0);
/// Rounds of `tlb-retype-race`, and the time after which the next is the last: a round
/// but the last ends quietly when vCPU 1 links F too late in vCPU 0's batch to tell
/// whether the flush has come (after the fix, every round: the link succeeds only after
/// the flush).
const RACE_ROUNDS: u64 = 100;
const RACE_NS: u64 = 400_000_000;

/// Case 24, vCPU 1: see the table above. vCPU 0 reports if the rounds stop: this waits
/// for the next for ever.
fn retype_vcpu1(case: &str, _: u64) -> Result<u64, u64> {
    race_rounds(case, RACE_ROUNDS, u64::MAX, |round| {
        retype_round(case, round)
    })
}

/// Case 24, vCPU 0: see the table above.
fn retype_vcpu0(case: &str, deadline: u64) -> Result<u64, u64> {
    // The tables under SCRATCH_VA (an L3, an L2 whose entry 1 maps a data page;
    // entry 0 is where F is linked), F mapped writable at X.
    let slot = map_area_slot(case)?;
    let [f, d] = take_frames(case)?;
    let tables = scratch_tables(case, SCRATCH_VA + (1 << 21), d)?;
    let x_slot = slot + 2 * 8;
    // SAFETY: the batch unmaps X, which only vCPU 1 uses, mapping it again each round.
    let filler = unsafe { race_batch(slot, x_slot) };
    RACE_X_SLOT.store(x_slot, Ordering::SeqCst);
    RACE_F.store(f, Ordering::SeqCst);
    RACE_LINK_SLOT.store(tables[1], Ordering::SeqCst);
    xtf::expect_killed(case, "a write through X after F was linked as a table");
    let start = time::now_ns();
    for round in 1..=RACE_ROUNDS {
        if round == RACE_ROUNDS || time::now_ns() - start >= RACE_NS {
            RACE_LAST.store(1, Ordering::SeqCst);
        }
        let _ = update(filler, 0);
        start_round(case, round, deadline)?;
        call_batch(case, round)?;
        finish_round(case, round, deadline)?;
    }
    Ok(xtf::survived(
        case,
        format_args!("a write through X after F was linked as a table ({RACE_ROUNDS} rounds)"),
    ))
}

/// `tlb-retype-race`, vCPU 1's round: X mapped writable again, and written, so that this
/// CPU's TLB holds it; then F linked as an L1 table, and written through X if the link came
/// while vCPU 0's batch had unmapped X but not yet flushed.
fn retype_round(case: &str, round: u64) -> Result<(), u64> {
    /// X: the map-area page that maps F writable.
    const X: u64 = MAP_AREA + 2 * 4096;
    /// The index in F of the entry written through X, and the VA it maps once F is linked.
    const FORGED: u64 = 5;
    const FORGED_VA: u64 = SCRATCH_VA + FORGED * 4096;
    let (x_slot, f, link_slot) = (
        RACE_X_SLOT.load(Ordering::SeqCst),
        RACE_F.load(Ordering::SeqCst),
        RACE_LINK_SLOT.load(Ordering::SeqCst),
    );
    if update(x_slot, pagetable::leaf(f, true)).is_err() {
        return Err(xtf::error(
            case,
            format_args!("mapping X again (round {round})"),
        ));
    }
    // SAFETY: X maps F, a data frame of ours, writable. (Zero: F must validate as an L1, every
    // entry of it not present.)
    unsafe { (X as *mut u64).write_volatile(0) };
    READY.store(round, Ordering::SeqCst);
    // F as an L1 table under SCRATCH_VA: refused while X maps it writable. X is written again
    // before each try until vCPU 0's batch has begun (its first filler done), so that the CPU
    // this vCPU runs on holds it even if the vCPU moved.
    loop {
        if batch_progress() == 0 {
            // SAFETY: as above; X is unmapped only by the batch's first update, just before
            // the first filler.
            unsafe { (X as *mut u64).write_volatile(0) };
        }
        if update(link_slot, table_link(f << 12)).is_ok() {
            break;
        }
    }
    // Linked while the batch was early enough: X must be gone already if the write through
    // it is to fault.
    let progress = batch_progress();
    if !(progress > 0 && before_flush(progress)) && RACE_LAST.load(Ordering::SeqCst) == 0 {
        // Linked too late to tell: no window this round.
        if update(link_slot, 0).is_err() {
            return Err(xtf::error(
                case,
                format_args!("unlinking F (round {round})"),
            ));
        }
        return Ok(());
    }
    // Linked while this CPU's TLB still maps X (or in the last round). X must be gone from
    // every TLB by now: this write must fault.
    let forged = pagetable::leaf(link_slot >> 12, false);
    let seen: u64;
    // SAFETY: the hole being shown: X still maps F (now a page table) writable in this CPU's
    // TLB. The forged entry maps the L2 above F at FORGED_VA (read-only, so that nothing is
    // written through it); it is read once, then cleared again through X, so that F holds
    // what the hypervisor believes (all zero).
    unsafe {
        ((X + FORGED * 8) as *mut u64).write_volatile(forged);
        seen = (FORGED_VA as *const u64).read_volatile();
        ((X + FORGED * 8) as *mut u64).write_volatile(0);
    }
    let _ = update(link_slot, 0);
    Err(xtf::failure(
        case,
        format_args!(
            "round {round}: linked F as an L1 while this CPU's TLB still mapped it writable at \
             X; an entry written into it through X mapped the L2 above it, whose entry 0 read \
             {seen:#x} through it (the link to F is {:#x})",
            table_link(f << 12)
        ),
    ))
}

/// `unlink-race`: b, the L3 entry vCPU 1 unlinks T from (vCPU 0's batch unlinks a).
static UR_SLOT_B: AtomicU64 = AtomicU64::new(0);
/// Rounds of `unlink-race` and `validate-race`.
const UR_ROUNDS: u64 = 40;

/// Case 25, vCPU 1: see the table above.
fn unlink_vcpu1(case: &str, deadline: u64) -> Result<u64, u64> {
    race_rounds(case, UR_ROUNDS, deadline, |round| {
        let b = UR_SLOT_B.load(Ordering::SeqCst);
        READY.store(round, Ordering::SeqCst);
        // Wait for vCPU 0's batch to be under way: its first update unlinked a.
        let progress = loop {
            let p = batch_progress();
            if p > 0 {
                break p;
            }
            if time::now_ns() >= deadline {
                return Err(xtf::error(case, format_args!("vCPU 0's batch never ran")));
            }
            core::hint::spin_loop();
        };
        // a's link is removed, its put still to come.
        if before_flush(progress) {
            TRIED.fetch_add(1, Ordering::SeqCst);
            if update(b, 0).is_ok() {
                return Err(xtf::failure(
                    case,
                    format_args!(
                        "round {round}: unlinked T's last live link (b) while the put \
                         of its other (a) waited for vCPU 0's flush (batch at update \
                         {progress}), though T is not empty: the two puts then \
                         devalidate T and what is under it in one step"
                    ),
                ));
            }
            REFUSED.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    })
}

/// Case 25, vCPU 0: see the table above.
fn unlink_vcpu0(case: &str, deadline: u64) -> Result<u64, u64> {
    // Under SCRATCH_VA, an L3 whose entry 0 (a) links T, an L2 whose entry 0 links an
    // L1 that maps a data page (so T is not empty); T linked again at entry 1 (b).
    let slot = map_area_slot(case)?;
    let [d] = take_frames(case)?;
    let [_, t, l3] = scratch_tables(case, SCRATCH_VA, d)?;
    let (a, b) = (l3, l3 + 8);
    // SAFETY: a links this case's own table, which maps only its own data page.
    let filler = unsafe { race_batch(slot, a) };
    UR_SLOT_B.store(b, Ordering::SeqCst);
    for round in 1..=UR_ROUNDS {
        // Both links in place (b may have gone only if the hole is open).
        let relinked = update(filler, 0)
            .and_then(|_| update(a, table_link(t)))
            .and_then(|_| update(b, table_link(t)));
        if let Err(e) = relinked {
            return Err(xtf::error(
                case,
                format_args!("linking T (round {round}): {e:?}"),
            ));
        }
        start_round(case, round, deadline)?;
        call_batch(case, round)?;
        finish_round(case, round, deadline)?;
    }
    let (tried, refused) = tries(case, "while a batch was under way")?;
    Ok(xtf::success(
        case,
        format_args!(
            "{refused} of {tried} unlinks of T's last live link, made while the put of \
             its other waited for a flush, refused ({UR_ROUNDS} rounds)"
        ),
    ))
}

/// vCPU 1's updates made while vCPU 0's call was under way, and those refused, once the
/// [`UR_ROUNDS`] rounds are done: an ERROR if there were none (vCPU 1 never ran `during` it).
fn tries(case: &str, during: &str) -> Result<(u64, u64), u64> {
    let (tried, refused) = (TRIED.load(Ordering::SeqCst), REFUSED.load(Ordering::SeqCst));
    if tried == 0 {
        return Err(xtf::error(
            case,
            format_args!("vCPU 1 never ran {during} ({UR_ROUNDS} rounds)"),
        ));
    }
    Ok((tried, refused))
}

/// `validate-race`: q (the L2 entry that is Y's only link), and the rounds vCPU 0 has made
/// its call in and returned from.
static VR_Q: AtomicU64 = AtomicU64::new(0);
static VR_CALL: AtomicU64 = AtomicU64::new(0);
static VR_RETURNED: AtomicU64 = AtomicU64::new(0);

/// Case 26, vCPU 1: see the table above.
fn validate_vcpu1(case: &str, deadline: u64) -> Result<u64, u64> {
    race_rounds(case, UR_ROUNDS, deadline, |round| {
        let q = VR_Q.load(Ordering::SeqCst);
        while VR_RETURNED.load(Ordering::SeqCst) != round {
            if VR_CALL.load(Ordering::SeqCst) != round {
                if time::now_ns() >= deadline {
                    return Err(xtf::error(case, format_args!("vCPU 0's call never came")));
                }
                core::hint::spin_loop();
                continue;
            }
            // vCPU 0's call is under way: Y's links that its validation took may be
            // dropped again at any moment; q is Y's only live one.
            TRIED.fetch_add(1, Ordering::SeqCst);
            if update(q, 0).is_ok() {
                return Err(xtf::failure(
                    case,
                    format_args!(
                        "round {round}: removed Y's only live link during vCPU 0's \
                         validation of a table that linked Y and then failed, though \
                         Y is not empty: the rollback devalidates Y whole"
                    ),
                ));
            }
        }
        Ok(())
    })
}

/// Case 26, vCPU 0: see the table above.
fn validate_vcpu0(case: &str, deadline: u64) -> Result<u64, u64> {
    // Under SCRATCH_VA an L3, an L2 (entry 0 is q) and Y, an L1 mapping a data page d;
    // X: 511 links to Y, then a link to d (a data page, not an L1: the validation
    // fails there, after the 511).
    let [d, x] = take_frames(case)?;
    let [y, q, l3] = scratch_tables(case, SCRATCH_VA, d)?;
    let mut bytes = [0u8; 4096];
    for (i, e) in bytes.chunks_exact_mut(8).enumerate() {
        let entry = if i < 511 {
            table_link(y)
        } else {
            table_link(d << 12)
        };
        e.copy_from_slice(&entry.to_le_bytes());
    }
    if let Err(e) = xtf::fill_frame(x, 0, &bytes) {
        return Err(xtf::error(case, format_args!("writing X: {e:?}")));
    }
    VR_Q.store(q, Ordering::SeqCst);
    for round in 1..=UR_ROUNDS {
        ROUND.store(round, Ordering::SeqCst);
        // vCPU 1 runs part-way through the call (its timer's deadline, under
        // `-icount`).
        arm_handover(round);
        VR_CALL.store(round, Ordering::SeqCst);
        let linked = update(l3 + 8, table_link(x << 12));
        VR_RETURNED.store(round, Ordering::SeqCst);
        if linked.is_ok() {
            return Err(xtf::error(
                case,
                format_args!("X validated as an L2 (round {round})"),
            ));
        }
        finish_round(case, round, deadline)?;
    }
    let (tried, _) = tries(case, "during vCPU 0's call")?;
    Ok(xtf::success(
        case,
        format_args!(
            "{tried} removals of Y's only live link during validations that took and \
             dropped 511 links to it, all refused ({UR_ROUNDS} rounds)"
        ),
    ))
}

fn raw(number: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> Result<u64, Errno> {
    // SAFETY: every call here either names memory of this program that nothing else uses at
    // the time, or an address that must be refused.
    hypercall::result(unsafe { hypercall::raw(number, a0, a1, a2, a3, a4) })
}

/// `memory_op(op, list, count)`, whatever the list and count.
fn memory_op(op: nr::MemoryOp, list: u64, count: u64) -> Result<u64, Errno> {
    raw(nr::MEMORY_OP, op as u64, list, count, 0, 0)
}

/// `grant_op(Copy)` with the descriptor at `desc`, whatever is there.
fn grant_copy(desc: u64) -> Result<u64, Errno> {
    raw(nr::GRANT_OP, nr::GrantOp::Copy as u64, desc, 0, 0, 0)
}

/// `sched_op(Poll)` on `count` ports at `ports`, whatever is there.
fn poll(ports: u64, count: u64) -> Result<u64, Errno> {
    raw(nr::SCHED_OP, nr::SchedOp::Poll as u64, ports, count, 0, 0)
}

/// Scratch tables: L3 at root[100], L2 at L3[0], L1 at L2[0], a data page at L1[0].
struct Scratch {
    l3: u64,
    l2: u64,
    l1: u64,
    data: u64,
}

const LINK: u64 = pte::PRESENT | pte::USER | pte::WRITABLE;

fn build_scratch() -> Result<Scratch, Errno> {
    let data = xtf::take_frame()?;
    let built = xtf::map_page(SCRATCH_VA, data, true, false, None)?;
    Ok(Scratch {
        l3: built.tables[2],
        l2: built.tables[1],
        l1: built.tables[0],
        data,
    })
}

/// Runs page-table case `case`, `run`, on fresh scratch tables ([`build_scratch`]; an ERROR
/// if they cannot be built) with its checks.
fn with_scratch(case: &'static str, run: fn(Checks, Scratch) -> u64) -> u64 {
    match build_scratch() {
        Ok(s) => run(Checks::new(case), s),
        Err(e) => xtf::error(case, format_args!("building tables: {e:?}")),
    }
}

/// Reads entry `index` of the table at machine address `table` by mapping it read-only.
fn peek(table: u64, index: u64) -> Option<u64> {
    // SAFETY: PEEK is used only here; a page table may be mapped read-only.
    unsafe { hypercall::update_va_mapping(PEEK, pagetable::leaf(table >> 12, false)) }.ok()?;
    // SAFETY: mapped just above, read-only; the hypervisor writes entries atomically.
    let v = unsafe { ((PEEK + index * 8) as *const u64).read_volatile() };
    // SAFETY: nothing refers to PEEK any more.
    let _ = unsafe { hypercall::update_va_mapping(PEEK, 0) };
    Some(v)
}

fn pt_bits(mut c: Checks, s: Scratch) -> u64 {
    let root = pagetable::root();
    let levels = [
        (4u32, root + SCRATCH_L4 * 8, s.l3 | LINK),
        (3, s.l3, s.l2 | LINK),
        (2, s.l2, s.l1 | LINK),
        (1, s.l1, pagetable::leaf(s.data, true)),
    ];
    for (level, at, valid) in levels {
        for bit in (0..12).chain(52..64) {
            let val = valid ^ (1u64 << bit);
            let present = val & pte::PRESENT != 0;
            // Clearing P of an L4, L3 or L2 entry drops the only link to a table that is
            // not empty: refused (bounded work: a table loses its last link only once
            // empty), whatever else the entry still holds.
            let allowed = if present {
                val & !pte::GUEST_ALLOWED == 0
                    && val & pte::USER != 0
                    && !(matches!(level, 2 | 3) && val & pte::HUGE_OR_PAT != 0)
            } else {
                level == 1
            };
            let got = update(at, val);
            let ok = if allowed {
                got == Ok(1)
            } else {
                got == Err(Inval)
            };
            c.that(
                format_args!("L{level} entry {valid:#x} with bit {bit} toggled: got {got:?}, allowed {allowed}"),
                ok,
            );
            // Refused: the entry must be as it was; accepted: put it back.
            if got.is_ok() {
                let back = update(at, valid);
                c.that(
                    format_args!("L{level} entry restored after bit {bit}: {back:?}"),
                    back == Ok(1),
                );
            } else if level < 4 {
                let table = if level == 1 {
                    s.l1
                } else if level == 2 {
                    s.l2
                } else {
                    s.l3
                };
                let now = peek(table, 0);
                c.that(
                    format_args!("L{level} entry unchanged after refused bit {bit}: {now:x?}"),
                    now == Some(valid),
                );
            }
        }
    }
    // The data page is still reachable and writable through the scratch tables.
    // SAFETY: SCRATCH_VA maps our own data page, writable.
    let seen = unsafe {
        (SCRATCH_VA as *mut u64).write_volatile(0x5a5a);
        (SCRATCH_VA as *const u64).read_volatile()
    };
    c.eq("the scratch page still maps its frame", seen, 0x5a5a);
    c.verdict()
}

fn pt_linear(mut c: Checks, s: Scratch) -> u64 {
    let root = pagetable::root();
    let ro = pte::PRESENT | pte::USER;
    for (what, at, val) in [
        (
            "an L3 entry pointing at its own table",
            s.l3 + 8,
            s.l3 | LINK,
        ),
        (
            "an L3 entry pointing at its own table, read-only",
            s.l3 + 8,
            s.l3 | ro,
        ),
        (
            "an L2 entry pointing at its own table",
            s.l2 + 8,
            s.l2 | LINK,
        ),
        (
            "an L2 entry pointing at the L3 above it",
            s.l2 + 8,
            s.l3 | LINK,
        ),
        ("an L3 entry pointing at the root", s.l3 + 8, root | LINK),
        ("an L2 entry pointing at the root", s.l2 + 8, root | LINK),
        (
            "an L4 entry pointing at the scratch L2",
            root + 101 * 8,
            s.l2 | LINK,
        ),
        (
            "an L4 entry pointing at the scratch L1",
            root + 101 * 8,
            s.l1 | LINK,
        ),
        (
            "an L3 entry pointing at the scratch L1",
            s.l3 + 8,
            s.l1 | LINK,
        ),
        (
            "an L1 entry mapping its own table writable",
            s.l1 + 8,
            pagetable::leaf(s.l1 >> 12, true),
        ),
        (
            "an L1 entry mapping the root writable",
            s.l1 + 8,
            pagetable::leaf(root >> 12, true),
        ),
    ] {
        c.eq(what, update(at, val), Err(Inval));
    }
    c.eq(
        "an L1 entry mapping its own table read-only",
        update(s.l1 + 8, pagetable::leaf(s.l1 >> 12, false)),
        Ok(1),
    );
    // SAFETY: SCRATCH_VA + 4096 maps the L1 table read-only: read its first entry.
    let first = unsafe { ((SCRATCH_VA + 4096) as *const u64).read_volatile() };
    c.eq(
        "  which reads back its first entry",
        first & pte::ADDRESS,
        s.data << 12,
    );
    c.eq("  and unmapped", update(s.l1 + 8, 0), Ok(1));
    c.verdict()
}

fn pt_writable(mut c: Checks, s: Scratch) -> u64 {
    let Some(slot) = pagetable::entry_address(MAP_AREA, 1) else {
        return xtf::error(c.case(), format_args!("no map-area table"));
    };
    let info = shared_memory_info();
    let mut tables: [u64; 80] = [0; 80];
    let n = (info.0 as usize).min(64);
    tables[..n].copy_from_slice(&info.1[..n]);
    tables[n] = s.l3;
    tables[n + 1] = s.l2;
    tables[n + 2] = s.l1;
    for &t in &tables[..n + 3] {
        let mfn = t >> 12;
        c.eq(
            "a page table mapped writable (mmu_update)",
            update(slot, pagetable::leaf(mfn, true)),
            Err(Inval),
        );
        // SAFETY: refused, or (wrongly) a mapping nothing uses, undone below.
        let uva = unsafe { hypercall::update_va_mapping(MAP_AREA, pagetable::leaf(mfn, true)) };
        c.eq(
            "a page table mapped writable (update_va_mapping)",
            uva,
            Err(Inval),
        );
        if uva.is_ok() {
            // SAFETY: as above.
            let _ = unsafe { hypercall::update_va_mapping(MAP_AREA, 0) };
        }
        // Mapped read-only (allowed), then granted read-write to Domain0: refused.
        c.eq(
            "  mapped read-only",
            update(slot, pagetable::leaf(mfn, false)),
            Ok(1),
        );
        let g = hypercall::grant_access(MAP_AREA, 0, false);
        c.one_of(
            "  granted read-write to Domain0",
            g,
            &[Err(Inval), Err(Perm)],
        );
        if let Ok(gref) = g {
            let _ = hypercall::grant_end(gref);
        }
        c.eq("  unmapped", update(slot, 0), Ok(1));
    }
    // The shared-info page (the hypervisor writes it) granted, read-only mapping first.
    let g = hypercall::grant_access(SHARED_INFO, 0, false);
    c.one_of(
        "the shared-info page granted read-write",
        g,
        &[Err(Inval), Err(Perm)],
    );
    let g = hypercall::grant_access(SHARED_INFO, 0, true);
    c.one_of(
        "the shared-info page granted read-only",
        g,
        &[Err(Inval), Err(Perm)],
    );
    let g = hypercall::grant_access(PT_WINDOW, 0, true);
    c.one_of(
        "a page of the table window granted",
        g,
        &[Err(Inval), Err(Perm)],
    );
    c.verdict()
}

/// (pt_count, pt_window) from the shared-info page.
fn shared_memory_info() -> (u64, [u64; 64]) {
    let mut out = [0u64; 64];
    let count = (0..64)
        .take_while(|&i| {
            let t = pagetable_window_entry(i);
            if let Some(t) = t {
                out[i] = t;
            }
            t.is_some()
        })
        .count();
    (count as u64, out)
}

fn pagetable_window_entry(i: usize) -> Option<u64> {
    let info = SHARED_INFO as *const abi::shared::SharedInfo;
    // SAFETY: the shared-info page is mapped read-only for the domain's life; `memory` is
    // written once before the domain starts.
    let (count, table) = unsafe {
        let m = core::ptr::addr_of!((*info).memory);
        (
            core::ptr::addr_of!((*m).pt_count).read_volatile() as usize,
            core::ptr::addr_of!((*m).pt_window[i % 64]).read_volatile(),
        )
    };
    (i < count).then_some(table)
}

fn pt_batch(mut c: Checks, s: Scratch) -> u64 {
    let Some(slot) = pagetable::entry_address(MAP_AREA, 1) else {
        return xtf::error(c.case(), format_args!("no map-area table"));
    };
    let f = match xtf::take_frame() {
        Ok(f) => f,
        Err(e) => return xtf::error(c.case(), format_args!("taking a frame: {e:?}")),
    };
    let batch = |u: &[MmuUpdate]| {
        // SAFETY: the updates touch the map area and the scratch tables only.
        unsafe { hypercall::mmu_update(u) }
    };
    // Map F writable, then link it as a table in the same batch: the second is refused, the
    // first stays.
    let got = batch(&[
        MmuUpdate {
            ptr: slot,
            val: pagetable::leaf(f, true),
        },
        MmuUpdate {
            ptr: s.l2 + 8,
            val: (f << 12) | LINK,
        },
    ]);
    c.one_of(
        "map F writable + link F as L1, one batch",
        got,
        &[Ok(1), Err(Inval)],
    );
    // SAFETY: the map area's first page maps F, writable (the first update stayed).
    let w = unsafe {
        (MAP_AREA as *mut u64).write_volatile(7);
        (MAP_AREA as *const u64).read_volatile()
    };
    c.eq("  F is mapped writable after the batch", w, 7);
    // SAFETY: as above; F must be all zeroes (empty entries) to become a table.
    unsafe { (MAP_AREA as *mut u64).write_volatile(0) };
    c.eq("  F is not linked", peek(s.l2, 1), Some(0));
    // Unlink nothing, unmap F, link it, map it writable again: 2 applied, then refused.
    let got = batch(&[
        MmuUpdate { ptr: slot, val: 0 },
        MmuUpdate {
            ptr: s.l2 + 8,
            val: (f << 12) | LINK,
        },
        MmuUpdate {
            ptr: slot + 8,
            val: pagetable::leaf(f, true),
        },
    ]);
    c.eq("unmap F + link F as L1 + map F writable", got, Ok(2));
    c.eq(
        "  F is linked",
        peek(s.l2, 1).map(|e| e & pte::ADDRESS),
        Some(f << 12),
    );
    c.eq(
        "  and not mapped",
        pagetable::read_entry(slot & !0xfff, 1).map(|e| e & 1),
        Some(0),
    );
    c.eq("unlink F", update(s.l2 + 8, 0), Ok(1));
    // 512 updates: map and unmap F in turn.
    let mut many = [MmuUpdate::default(); 513];
    for (i, u) in many.iter_mut().enumerate() {
        *u = MmuUpdate {
            ptr: slot + 16,
            val: if i % 2 == 0 {
                pagetable::leaf(f, true)
            } else {
                0
            },
        };
    }
    c.eq("512 updates", batch(&many[..512]), Ok(512));
    c.eq("513 updates", batch(&many), Err(Inval));
    c.eq("0 updates", batch(&many[..0]), Err(Inval));
    // A refused update in the middle of a long batch: the ones before it stay.
    many[300] = MmuUpdate {
        ptr: s.l2 + 8,
        val: (f << 12) | LINK | pte::GLOBAL,
    };
    let got = batch(&many[..512]);
    c.one_of(
        "512 updates, the 301st refused",
        got,
        &[Ok(300), Err(Inval)],
    );
    c.eq(
        "  the 300 before it applied (F unmapped again)",
        pagetable::read_entry(slot & !0xfff, 2).map(|e| e & 1),
        Some(0),
    );
    c.verdict()
}

fn pt_va0() -> u64 {
    let mut c = Checks::new("pt-va0");
    let f = match xtf::take_frame() {
        Ok(f) => f,
        Err(e) => return xtf::error("pt-va0", format_args!("taking a frame: {e:?}")),
    };
    let mut code = [0u8; 64];
    code[0] = 0xb8; // mov eax, 0x1234; ret
    code[1..5].copy_from_slice(&0x1234u32.to_le_bytes());
    code[5] = 0xc3;
    code[16..16 + 16].copy_from_slice(b"(printed from 0)");
    code[32] = b'\n';
    if let Err(e) = xtf::fill_frame(f, 0, &code) {
        return xtf::error("pt-va0", format_args!("filling: {e:?}"));
    }
    if let Err(e) = xtf::map_page(0, f, false, true, None) {
        return xtf::error("pt-va0", format_args!("mapping VA 0: {e:?}"));
    }
    let byte: u8;
    // SAFETY: VA 0 maps our page now; reading it is reading our memory. Done in assembly:
    // in Rust a null pointer may not be read.
    unsafe { asm!("mov {0}, byte ptr [0]", out(reg_byte) byte) };
    c.eq("the first byte at VA 0", byte, 0xb8);
    let ret: u64;
    // SAFETY: calls the `mov eax, 0x1234; ret` just mapped at VA 0.
    unsafe { asm!("xor eax, eax", "call {z}", z = in(reg) 0u64, out("rax") ret, clobber_abi("C")) };
    c.eq("code called at VA 0", ret, 0x1234);
    c.eq(
        "console_write from VA 16",
        raw(nr::CONSOLE_WRITE, 16, 17, 0, 0, 0),
        Ok(17),
    );
    c.eq(
        "console_write of 0 bytes at VA 0",
        raw(nr::CONSOLE_WRITE, 0, 0, 0, 0, 0),
        Ok(0),
    );
    c.verdict()
}

fn hcall_numbers() -> u64 {
    let mut c = Checks::new("hcall-numbers");
    let mut wrong = 0;
    for n in (14..=4096u64).chain([
        (1 << 32) | nr::NULL,
        (1 << 63) | nr::NULL,
        (1 << 32) | nr::SCHED_OP,
        u64::MAX,
        u64::MAX - 1,
    ]) {
        let got = raw(n, 0, 0, 0, 0, 0);
        if got != Err(NoSys) {
            wrong += 1;
            c.that(
                format_args!("hypercall {n:#x}: got {got:?}, want NoSys"),
                false,
            );
        }
    }
    c.eq(
        "numbers 14..=4096 and large ones not refused with NoSys",
        wrong,
        0,
    );
    for (name, number, first_bad) in [
        ("sched_op", nr::SCHED_OP, 4u64),
        ("vcpu_op", nr::VCPU_OP, 2),
        ("evtchn_op", nr::EVTCHN_OP, 7),
        ("grant_op", nr::GRANT_OP, 5),
        ("memory_op", nr::MEMORY_OP, 4),
    ] {
        for op in [first_bad, first_bad + 1, 255, 1 << 32, 1 << 63, u64::MAX] {
            let got = raw(number, op, 0, 0, 0, 0);
            c.that(
                format_args!("{name} op {op:#x}: got {got:?}, want NoSys or Inval"),
                matches!(got, Err(NoSys | Inval)),
            );
        }
    }
    c.verdict()
}

/// A hypercall made with the address it is given.
type AtAddress = fn(u64) -> Result<u64, Errno>;

/// Calls that read or write memory at the address they are given: (name, the call). A wild
/// address must fail with `Fault`.
const TOUCHING: [(&str, AtAddress); 6] = [
    ("console_write", |p| raw(nr::CONSOLE_WRITE, p, 16, 0, 0, 0)),
    ("poll", |p| poll(p, 4)),
    ("mmu_update", |p| raw(nr::MMU_UPDATE, p, 2, 0, 0, 0)),
    ("increase_reservation list", |p| {
        memory_op(nr::MemoryOp::IncreaseReservation, p, 2)
    }),
    ("decrease_reservation list", |p| {
        memory_op(nr::MemoryOp::DecreaseReservation, p, 2)
    }),
    ("grant copy descriptor", grant_copy),
];

/// Addresses no call may touch: (name, address).
const WILD: [(&str, u64); 8] = [
    ("the direct map", 0xffff_8000_0000_0000),
    ("the hypervisor's image", 0xffff_ffff_8010_0000),
    ("the first non-canonical address", 0x0000_8000_0000_0000),
    ("a high non-canonical address", 0x8000_0000_0000_0000),
    ("an unmapped page", 0x5000_0000),
    ("the top of the lower half", USER_LIMIT - 8),
    ("a wrapping range", u64::MAX - 7),
    (
        "below vCPU 0's stack (guard page)",
        STACK_TOP - STACK_BYTES - 8,
    ),
];

fn hcall_pointers() -> u64 {
    let mut c = Checks::new("hcall-pointers");
    let held = hypercall::current_reservation();
    for (what, p) in WILD {
        for (call, at) in TOUCHING {
            c.eq(&fmt_what(call, what), at(p), Err(Fault));
        }
        c.one_of(
            &fmt_what("set_callback", what),
            raw(nr::SET_CALLBACK, p, 0, 0, 0, 0),
            &[Err(Inval), Ok(0)],
        );
        let _ = raw(nr::SET_CALLBACK, 0, 0, 0, 0, 0);
        c.one_of(
            &fmt_what("grant_access", what),
            raw(nr::GRANT_OP, nr::GrantOp::Grant as u64, p, 0, 0, 0),
            &[Err(Inval), Err(Fault)],
        );
        // An empty entry in its own half is a legitimate unmap; elsewhere, refused.
        let allowed: &[Result<u64, Errno>] = if p < USER_LIMIT {
            &[Err(Inval), Ok(0)]
        } else {
            &[Err(Inval)]
        };
        c.one_of(
            &fmt_what("update_va_mapping", what),
            raw(nr::UPDATE_VA_MAPPING, p, 0, 0, 0, 0),
            allowed,
        );
    }
    // Lists the hypervisor must write but cannot: read-only pages of its own.
    for (what, p) in [
        ("the shared-info page (read-only)", SHARED_INFO),
        ("its own code (read-only)", abi::layout::IMAGE_BASE),
        ("the page-table window (read-only)", PT_WINDOW),
    ] {
        c.eq(
            &fmt_what("increase_reservation list", what),
            memory_op(nr::MemoryOp::IncreaseReservation, p, 3),
            Err(Fault),
        );
        let copy = abi::mm::GrantCopy {
            granter: 0,
            gref: 1,
            offset: 0,
            len: 8,
            local: p,
            to_grant: 0,
            pad: 0,
        };
        c.one_of(
            &fmt_what("grant copy into", what),
            grant_copy(&copy as *const _ as u64),
            &[Err(Fault), Err(Perm), Err(Inval), Err(Errno::Srch)],
        );
    }
    c.eq(
        "frames held after the refused reservations",
        hypercall::current_reservation(),
        held,
    );
    c.verdict()
}

fn fmt_what(call: &str, what: &str) -> xtf::Line {
    xtf::Line::of(format_args!("{call} with {what}"))
}

fn hcall_lengths() -> u64 {
    let mut c = Checks::new("hcall-lengths");
    let msg = b"(a console line of 24 b)\n";
    for len in [u64::MAX, 1 << 40, 1 << 20, 4097] {
        let got = raw(nr::CONSOLE_WRITE, msg.as_ptr() as u64, len, 0, 0, 0);
        c.that(
            format_args!("console_write of {len:#x} bytes from a 25-byte buffer: {got:?}"),
            matches!(got, Err(Fault | Inval) | Ok(1..=256)),
        );
    }
    let ports = [1u32; 4];
    for count in [0u64, 65, 1 << 32, u64::MAX] {
        c.eq(
            &fmt_what("poll", "a bad count"),
            poll(ports.as_ptr() as u64, count),
            Err(Inval),
        );
    }
    let updates = [MmuUpdate::default(); 2];
    for count in [0u64, 513, 1 << 32, u64::MAX] {
        c.eq(
            &fmt_what("mmu_update", "a bad count"),
            raw(nr::MMU_UPDATE, updates.as_ptr() as u64, count, 0, 0, 0),
            Err(Inval),
        );
    }
    // A huge reservation count into a list that ends 8 entries before an unmapped page:
    // frames whose numbers could not be written must not be charged, and nothing beyond
    // the limit is taken. The hypervisor writes the numbers a chunk at a time and gives a
    // chunk back whole if its numbers cannot all be written (Fault, or Ok(0)); a call
    // preempted part-way through its first chunk (its 1 ms slice over after a few frames,
    // when the host stalls the CPU) has written that short chunk's numbers and keeps those
    // frames, as Xen's `increase_reservation` returns the extents done: Ok(k), k <= 8, with
    // exactly k frames more held (seen: Ok(7) and Ok(1), 3 runs in 33 at load 2-4).
    let held = hypercall::current_reservation();
    let list_va = MAP_AREA + 5 * 4096;
    let list_frame = match xtf::take_frame() {
        Ok(f) => f,
        Err(e) => return xtf::error("hcall-lengths", format_args!("taking a frame: {e:?}")),
    };
    // SAFETY: map-area page 5 is used by nothing else.
    if unsafe { hypercall::update_va_mapping(list_va, pagetable::leaf(list_frame, true)) }.is_err()
    {
        return xtf::error("hcall-lengths", format_args!("mapping the list page"));
    }
    let held_with_list = hypercall::current_reservation();
    let got = memory_op(
        nr::MemoryOp::IncreaseReservation,
        list_va + 4096 - 64,
        u64::MAX,
    );
    c.that(
        format_args!("increase_reservation of 2^64 - 1 frames into an 8-entry list: {got:?}"),
        matches!(got, Err(Fault) | Ok(0..=8)),
    );
    let kept = got.map_or(0, |k| k.min(8) as usize);
    c.eq(
        "  frames held afterwards",
        hypercall::current_reservation(),
        held_with_list.map(|h| h + kept as u64),
    );
    if kept > 0 {
        // SAFETY: the list page is mapped (above); its last 8 entries hold the numbers.
        let written =
            unsafe { core::slice::from_raw_parts((list_va + 4096 - 64) as *const u64, kept) };
        c.eq(
            "  the frames it kept, given back",
            hypercall::decrease_reservation(written),
            Ok(kept),
        );
    }
    // SAFETY: nothing refers to the page.
    let _ = unsafe { hypercall::update_va_mapping(list_va, 0) };
    let _ = hypercall::decrease_reservation(&[list_frame]);
    c.eq(
        "frames held once the list page is given back",
        hypercall::current_reservation(),
        held,
    );
    let mut list = [0u64; 8];
    c.one_of(
        "decrease_reservation of 2^64 - 1 frames from a list of garbage",
        memory_op(nr::MemoryOp::DecreaseReservation, MAP_AREA, u64::MAX),
        &[Err(Fault), Err(Perm), Err(Inval)],
    );
    let copy = abi::mm::GrantCopy {
        granter: 0,
        gref: 1,
        offset: 0,
        len: u32::MAX,
        local: list.as_mut_ptr() as u64,
        to_grant: 0,
        pad: 0,
    };
    c.one_of(
        "grant copy of 2^32 - 1 bytes",
        grant_copy(&copy as *const _ as u64),
        &[Err(Inval), Err(Perm), Err(Errno::Srch)],
    );
    let copy = abi::mm::GrantCopy {
        offset: u32::MAX,
        len: 2,
        ..copy
    };
    c.one_of(
        "grant copy at offset 2^32 - 1",
        grant_copy(&copy as *const _ as u64),
        &[Err(Inval), Err(Perm), Err(Errno::Srch)],
    );
    c.verdict()
}

/// Takes every frame it may, in rounds, for 600 ms: `dirty` fills them with 0xa5 before
/// giving them back; otherwise each must read as zeroes (a frame is scrubbed between owners).
fn frames(dirty: bool) -> u64 {
    let name = if dirty { "dirty" } else { "fresh-frames" };
    let mut c = Checks::new(if dirty { "dirty" } else { "fresh-frames" });
    let Some(slot) = pagetable::entry_address(MAP_AREA, 1) else {
        return xtf::error(name, format_args!("no map-area table"));
    };
    let until = time::now_ns() + 600_000_000;
    let (mut rounds, mut checked, mut dirty_words) = (0u64, 0u64, 0u64);
    let mut list = [0u64; 64];
    while time::now_ns() < until {
        let n = match hypercall::increase_reservation(&mut list) {
            Ok(n) => n,
            Err(e) => return xtf::error(name, format_args!("increase_reservation: {e:?}")),
        };
        for &f in &list[..n] {
            if update(slot, pagetable::leaf(f, true)).is_err() {
                return xtf::error(name, format_args!("mapping frame {f:#x}"));
            }
            let page = MAP_AREA as *mut u64;
            for i in 0..512 {
                // SAFETY: the map area's first page maps frame `f`, ours, writable.
                unsafe {
                    if dirty {
                        page.add(i).write_volatile(0xa5a5_a5a5_a5a5_a5a5);
                    } else if page.add(i).read_volatile() != 0 {
                        dirty_words += 1;
                    }
                }
            }
            checked += 1;
            let _ = update(slot, 0);
        }
        if hypercall::decrease_reservation(&list[..n]) != Ok(n) {
            return xtf::error(name, format_args!("decrease_reservation failed"));
        }
        rounds += 1;
        shared::add_work(0, 1);
    }
    println!(
        "{rounds} rounds, {checked} frames {}",
        if dirty { "dirtied" } else { "checked" }
    );
    c.eq("words not zero in fresh frames", dirty_words, 0);
    c.that(format_args!("some frames were taken"), checked > 0);
    c.verdict()
}

/// A batch that unmaps a page and then runs into an unmapped page of its own list: the
/// hypervisor applied the first updates, so it must flush before failing.
fn stale_tlb() -> u64 {
    let Some(slot) = pagetable::entry_address(MAP_AREA, 1) else {
        return xtf::error("stale-tlb", format_args!("no map-area table"));
    };
    let (f, list_frame) = match (xtf::take_frame(), xtf::take_frame()) {
        (Ok(f), Ok(l)) => (f, l),
        _ => return xtf::error("stale-tlb", format_args!("taking frames")),
    };
    // The list: 32 updates at the end of map-area page 1 (mapped), more in page 2
    // (unmapped). The first unmaps page 0; the others rewrite page 3's empty entry.
    let list_va = MAP_AREA + 4096;
    let mut ok = update(slot + 8, pagetable::leaf(list_frame, true)).is_ok();
    ok &= update(slot, pagetable::leaf(f, true)).is_ok();
    if !ok {
        return xtf::error("stale-tlb", format_args!("mapping pages"));
    }
    let first = list_va + 4096 - 32 * 16;
    for i in 0..32u64 {
        let u = if i == 0 {
            MmuUpdate { ptr: slot, val: 0 }
        } else {
            MmuUpdate {
                ptr: slot + 24,
                val: 0,
            }
        };
        // SAFETY: page 1 of the map area maps `list_frame`, writable, ours.
        unsafe { ((first + i * 16) as *mut MmuUpdate).write_volatile(u) };
    }
    // SAFETY: page 0 maps `f`: write it, so that the translation is cached.
    unsafe { (MAP_AREA as *mut u64).write_volatile(0x1111) };
    xtf::expect_killed(
        "stale-tlb",
        "a page fault on the page unmapped by the failed batch",
    );
    let (ret, seen): (i64, u64);
    // SAFETY: the batch and the read right after it, with nothing in between that could
    // switch address spaces; a fault on the read is the right ending.
    unsafe {
        asm!(
            "syscall",
            "mov {seen}, qword ptr [{page}]",
            page = in(reg) MAP_AREA,
            seen = lateout(reg) seen,
            inlateout("rax") nr::MMU_UPDATE => ret,
            in("rdi") first,
            in("rsi") 40u64,
            out("rcx") _, out("r11") _,
            options(nostack),
        );
    }
    // Still reachable: give the frame back, and show it is written through a stale entry.
    let back = hypercall::decrease_reservation(&[f]);
    // SAFETY: this is the hole being shown: the page is (wrongly) still reachable.
    unsafe { (MAP_AREA as *mut u64).write_volatile(0xdead_beef) };
    xtf::failure(
        "stale-tlb",
        format_args!(
            "the page unmapped by a batch that failed ({ret}) was still reachable (read {seen:#x}); \
             after giving its frame back ({back:?}) it was written through the stale translation"
        ),
    )
}

fn callback_return_bad(case: &str, frame_at: u64, rip: Option<u64>) -> u64 {
    let mut frame = UpcallFrame {
        rsp: STACK_TOP - 4096,
        ..UpcallFrame::default()
    };
    let at = match rip {
        Some(r) => {
            frame.rip = r;
            &frame as *const UpcallFrame as u64
        }
        None => frame_at,
    };
    xtf::expect_killed(case, "bad event upcall");
    let got = raw(nr::CALLBACK_RETURN, at, 0, 0, 0, 0);
    xtf::survived(
        case,
        format_args!("callback_return with a bad frame ({got:?})"),
    )
}

fn callback_return_flags() -> u64 {
    let mut c = Checks::new("callback-return-flags");
    let mut frame = UpcallFrame::default();
    let flags: u64;
    // SAFETY: `callback_return` resumes at label 2 with the stack pointer saved in the frame
    // (this one), with RFLAGS from the frame as sanitised by the hypervisor.
    unsafe {
        asm!(
            "lea rax, [rip + 2f]",
            "mov [rdi + {rip_off}], rax",
            "mov [rdi + {rsp_off}], rsp",
            "mov qword ptr [rdi + {fl_off}], -1",
            "mov eax, {cr}",
            "syscall",
            "ud2",
            "2:",
            "pushfq",
            "pop rdx",
            in("rdi") &mut frame as *mut UpcallFrame,
            rip_off = const core::mem::offset_of!(UpcallFrame, rip),
            rsp_off = const core::mem::offset_of!(UpcallFrame, rsp),
            fl_off = const core::mem::offset_of!(UpcallFrame, rflags),
            cr = const nr::CALLBACK_RETURN,
            out("rdx") flags,
            clobber_abi("C"),
        );
    }
    // DF may come back set: clear it before any Rust code runs string instructions.
    // SAFETY: clears DF only.
    unsafe { asm!("cld") };
    const FORBIDDEN: u64 =
        (3 << 12) | (1 << 14) | (1 << 8) | (1 << 18) | (1 << 21) | (1 << 16) | (1 << 17);
    c.eq(
        "IOPL, NT, TF, AC, ID, RF, VM after callback_return",
        flags & FORBIDDEN,
        0,
    );
    c.eq("IF after callback_return", flags & (1 << 9), 1 << 9);
    c.verdict()
}

/// Writes `words` from the start of frame `mfn`, through a temporary writable mapping at
/// the map area's first page.
fn fill_words(mfn: u64, words: impl Iterator<Item = u64>) -> Result<(), Errno> {
    // SAFETY: the map area's first page is used by nothing else in this case.
    unsafe { hypercall::update_va_mapping(MAP_AREA, pagetable::leaf(mfn, true)) }?;
    for (i, w) in words.take(512).enumerate() {
        // SAFETY: mapped just above, writable, ours; i < 512.
        unsafe { (MAP_AREA as *mut u64).add(i).write_volatile(w) };
    }
    // SAFETY: nothing refers to the page any more.
    unsafe { hypercall::update_va_mapping(MAP_AREA, 0) }?;
    Ok(())
}

/// Takes `n` frames into `out`.
fn take(out: &mut [u64]) -> Result<(), Errno> {
    let mut n = 0;
    while n < out.len() {
        let k = (out.len() - n).min(64);
        match hypercall::increase_reservation(&mut out[n..n + k])? {
            0 => return Err(Errno::NoMem),
            got => n += got,
        }
    }
    Ok(())
}

/// How `validate_bomb` links and unlinks its tree.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bomb {
    /// One call links it all, one unlinks it all.
    Link,
    /// Linked one L2 at a time (each call validates at most one set of L1 tables), then one
    /// call unlinks it all.
    Unlink,
    /// Linked one L2 at a time, then the domain exits: its teardown releases it all.
    Teardown,
}

fn validate_bomb(mode: Bomb) -> u64 {
    let case = match mode {
        Bomb::Link => "pt-preempt",
        Bomb::Unlink => "pt-unlink",
        Bomb::Teardown => "pt-teardown",
    };
    const MOST_SETS: usize = 64;
    // The frame numbers of the L1 tables: up to 64 pages of them, in pages of its own mapped
    // at L4 entry 101 (a static array would sit in every hostile-pt image).
    const LIST_VA: u64 = 101 << 39;
    let room = hypercall::maximum_reservation()
        .unwrap_or(0)
        .saturating_sub(hypercall::current_reservation().unwrap_or(0))
        .saturating_sub(600);
    let sets = ((room / 513) as usize).clamp(1, MOST_SETS);
    let mut known = None;
    for page in 0..sets as u64 {
        let mapped = xtf::take_frame()
            .and_then(|f| xtf::map_page(LIST_VA + page * 4096, f, true, false, known));
        match mapped {
            Ok(b) => known = Some(b),
            Err(e) => return xtf::error(case, format_args!("mapping the list: {e:?}")),
        }
    }
    // SAFETY: `sets` pages at LIST_VA were just mapped writable, ours, used by nothing else.
    let l1s = unsafe { core::slice::from_raw_parts_mut(LIST_VA as *mut u64, 512 * sets) };
    static mut L2S: [u64; 512] = [0; 512];
    // SAFETY: vCPU 0 alone runs this case, once; nothing else refers to this static.
    let l2s = unsafe { &mut *core::ptr::addr_of_mut!(L2S) };
    let data = match xtf::take_frame() {
        Ok(f) => f,
        Err(e) => return xtf::error(case, format_args!("a frame: {e:?}")),
    };
    let (l3, built) = match (xtf::take_frame(), take(l1s), take(l2s)) {
        (Ok(l3), Ok(()), Ok(())) => (l3, true),
        _ => (0, false),
    };
    if !built {
        return xtf::error(
            case,
            format_args!("not enough memory (memory_kib >= 6144 needed)"),
        );
    }
    let ro = pte::PRESENT | pte::USER | pte::NO_EXECUTE;
    let link = pte::PRESENT | pte::USER | pte::WRITABLE;
    let start = time::now_ns();
    let mut ok = true;
    for &l1 in l1s.iter() {
        ok &= fill_words(l1, core::iter::repeat((data << 12) | ro)).is_ok();
    }
    // L2 number j names L1 set j % sets: every L1 is validated, each set by the first L2
    // that names it.
    for (j, &l2) in l2s.iter().enumerate() {
        let set = &l1s[(j % sets) * 512..(j % sets + 1) * 512];
        ok &= fill_words(l2, set.iter().map(|&l1| (l1 << 12) | link)).is_ok();
    }
    ok &= fill_words(l3, l2s.iter().map(|&l2| (l2 << 12) | link)).is_ok();
    if !ok {
        return xtf::error(case, format_args!("filling the tables"));
    }
    println!(
        "{} frames filled in {} ms ({sets} sets of 512 L1 tables, {} entries to validate); linking",
        l1s.len() + 514,
        (time::now_ns() - start) / 1_000_000,
        (sets + 1) * 512 * 512 + 512
    );
    let root = pagetable::root();
    let mut c = Checks::new(case);
    if mode != Bomb::Link {
        // Bottom-up in small steps: the empty L3 first, then one L2 per call.
        let t0 = time::now_ns();
        ok = fill_words(l3, core::iter::repeat(0)).is_ok()
            && update(root + SCRATCH_L4 * 8, (l3 << 12) | link).is_ok();
        let mut longest = 0;
        let mut linked = 0;
        let mut refused = None;
        for (j, &l2) in l2s.iter().enumerate() {
            let t = time::now_ns();
            let got = update((l3 << 12) + j as u64 * 8, (l2 << 12) | link);
            longest = longest.max(time::now_ns() - t);
            match got {
                Ok(_) => linked += 1,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        println!(
            "linked {linked} L2 tables one at a time in {} ms (longest call {} ms), then {refused:?}",
            (time::now_ns() - t0) / 1_000_000,
            longest / 1_000_000
        );
        // All of them, or up to a quota on page tables (NoMem), or none: a prepared table
        // naming tables not in use is more than one table's work (Inval).
        c.that(format_args!("the empty L3 linked"), ok);
        c.that(
            format_args!("linking in steps: {linked} linked, then {refused:?}"),
            matches!(refused, None | Some(Errno::NoMem | Errno::Inval)),
        );
        if mode == Bomb::Teardown {
            // Its teardown, when Domain0 destroys it, releases the whole tree.
            return c.verdict();
        }
        let t1 = time::now_ns();
        let unlinked = update(root + SCRATCH_L4 * 8, 0);
        println!(
            "unlink: {unlinked:?} in {} ms",
            (time::now_ns() - t1) / 1_000_000
        );
        c.one_of(
            "unlinking the tree",
            unlinked,
            &[Ok(1), Err(Errno::Busy), Err(Errno::Again)],
        );
        return c.verdict();
    }
    let t0 = time::now_ns();
    let linked = update(root + SCRATCH_L4 * 8, (l3 << 12) | link);
    let t1 = time::now_ns();
    let unlinked = update(root + SCRATCH_L4 * 8, 0);
    let t2 = time::now_ns();
    println!(
        "link: {linked:?} in {} ms; unlink: {unlinked:?} in {} ms",
        (t1 - t0) / 1_000_000,
        (t2 - t1) / 1_000_000
    );
    // Linked, or refused: more than one table's work (Inval), a quota on page tables
    // (NoMem), Busy or TooBig.
    c.one_of(
        "linking the tree",
        linked,
        &[
            Ok(1),
            Err(Errno::Inval),
            Err(Errno::NoMem),
            Err(Errno::Busy),
            Err(Errno::TooBig),
        ],
    );
    c.eq("unlinking it", unlinked, Ok(1));
    c.verdict()
}

fn args_edges() -> u64 {
    use abi::hypercall::{EvtchnOp, GrantOp, VcpuOp};
    let mut c = Checks::new("args-edges");
    let me = u64::from(shared::domain_id());
    let edges = [
        0u64,
        1023,
        1024,
        4095,
        65535,
        u64::from(u32::MAX),
        1 << 32,
        u64::MAX,
    ];
    let mut oks = 0;
    for op in [
        EvtchnOp::Send,
        EvtchnOp::Close,
        EvtchnOp::Unmask,
        EvtchnOp::BindVcpu,
    ] {
        for &p in &edges {
            let got = raw(nr::EVTCHN_OP, op as u64, p, 0, 0, 0);
            oks += u64::from(got.is_ok());
            c.that(
                format_args!("evtchn {op:?} port {p:#x}: {got:?}"),
                got.is_err(),
            );
        }
    }
    for &d in &[me, 999, u64::from(u32::MAX), u64::MAX] {
        for op in [EvtchnOp::AllocUnbound, EvtchnOp::BindInterdomain] {
            let got = raw(nr::EVTCHN_OP, op as u64, d, 1, 0, 0);
            // Allocating a port for itself is allowed (a loopback); close it again.
            if let (EvtchnOp::AllocUnbound, true, Ok(p)) = (op, d == me, got) {
                let _ = hypercall::evtchn_close(p as u32);
                continue;
            }
            c.that(
                format_args!("evtchn {op:?} domain {d:#x}: {got:?}"),
                got.is_err(),
            );
        }
    }
    for &v in &edges {
        let got = raw(nr::EVTCHN_OP, EvtchnOp::BindVirq as u64, v, 0, 0, 0);
        if v == 0 {
            // The timer VIRQ: a real port; close it.
            if let Ok(p) = got {
                let _ = hypercall::evtchn_close(p as u32);
            }
            continue;
        }
        c.that(
            format_args!("evtchn BindVirq {v:#x}: {got:?}"),
            got.is_err(),
        );
        let got = raw(nr::EVTCHN_OP, EvtchnOp::BindVirq as u64, 0, v, 0, 0);
        c.that(
            format_args!("evtchn BindVirq timer on vCPU {v:#x}: {got:?}"),
            got.is_err(),
        );
    }
    for &g in &edges {
        let got = raw(nr::GRANT_OP, GrantOp::End as u64, g, 0, 0, 0);
        c.that(format_args!("grant End {g:#x}: {got:?}"), got.is_err());
        let got = raw(nr::GRANT_OP, GrantOp::Unmap as u64, g, 0, 0, 0);
        c.that(format_args!("grant Unmap {g:#x}: {got:?}"), got.is_err());
        for &d in &[0u64, me, 999, u64::MAX] {
            let got = raw(nr::GRANT_OP, GrantOp::Map as u64, d, g, MAP_AREA, 1);
            c.that(
                format_args!("grant Map domain {d:#x} ref {g:#x}: {got:?}"),
                got.is_err(),
            );
        }
    }
    static PAGE: workloads::split::SharedPage = workloads::split::SharedPage::new();
    for &d in &[me, 999, u64::from(u32::MAX), u64::MAX] {
        let got = raw(nr::GRANT_OP, GrantOp::Grant as u64, PAGE.va(), d, 0, 0);
        c.that(
            format_args!("grant to domain {d:#x}: {got:?}"),
            got.is_err(),
        );
    }
    for &v in &[2u64, 64, 65, u64::from(u32::MAX), u64::MAX] {
        let got = raw(nr::VCPU_OP, VcpuOp::Up as u64, v, 0, 0, 0);
        c.that(format_args!("vcpu Up {v:#x}: {got:?}"), got.is_err());
    }
    // A frame listed twice: given back once, then refused; the count follows.
    let held = hypercall::current_reservation().unwrap_or(0);
    match xtf::take_frame() {
        Ok(f) => {
            let got = hypercall::decrease_reservation(&[f, f]);
            c.one_of(
                "giving back one frame listed twice",
                got,
                &[Ok(1), Err(Perm)],
            );
            c.eq(
                "  frames held afterwards",
                hypercall::current_reservation().unwrap_or(0),
                held,
            );
        }
        Err(e) => return xtf::error("args-edges", format_args!("a frame: {e:?}")),
    }
    // Forged reservation continuations (`abi::hypercall::MEMORY_OP_PREEMPTED`): one that is
    // not a reservation part-way is refused; a well-formed one carries on from its entry,
    // adding to what it reports, with no frame lost or taken beyond the list.
    let forged = |done: u64, op: u64| nr::MEMORY_OP_PREEMPTED | done << 32 | op;
    let held = hypercall::current_reservation().unwrap_or(0);
    static mut FORGED: [u64; 4] = [0; 4];
    // The hypervisor writes it; vCPU 0 alone runs this case and Rust never reads it.
    let list = core::ptr::addr_of_mut!(FORGED) as u64;
    let inc = nr::MemoryOp::IncreaseReservation as u64;
    let dec = nr::MemoryOp::DecreaseReservation as u64;
    for (what, op, count) in [
        ("done 0", forged(0, inc), 4),
        ("done = count", forged(4, inc), 4),
        ("done > count", forged(5, dec), 4),
        ("done past the batch", forged(0x7fff_ffff, inc), u64::MAX),
        ("CurrentReservation", forged(1, 2), 4),
        ("MaximumReservation", forged(1, 3), 4),
        ("no such operation", forged(1, 4), 4),
    ] {
        let got = raw(nr::MEMORY_OP, op, list, count, 0, 0);
        c.that(
            format_args!("a forged memory_op continuation, {what}: {got:?} (want NoSys)"),
            got == Err(NoSys),
        );
    }
    // Entries 3 of 4: one frame, written at entry 3, and 4 reported.
    c.eq(
        "a forged continuation from entry 3 of 4 takes one frame and reports 4",
        raw(nr::MEMORY_OP, forged(3, inc), list, 4, 0, 0),
        Ok(4),
    );
    c.eq(
        "  frames held",
        hypercall::current_reservation(),
        Ok(held + 1),
    );
    c.eq(
        "a forged DecreaseReservation from entry 3 of 4 gives back entry 3's frame",
        raw(nr::MEMORY_OP, forged(3, dec), list, 4, 0, 0),
        Ok(4),
    );
    c.eq("  frames held", hypercall::current_reservation(), Ok(held));
    println!("{oks} edge calls succeeded");
    c.verdict()
}

fn pt_bounded(mut c: Checks, s: Scratch) -> u64 {
    let root = pagetable::root();
    for (level, at, old) in [
        (4, root + SCRATCH_L4 * 8, s.l3 | LINK),
        (3, s.l3, s.l2 | LINK),
        (2, s.l2, s.l1 | LINK),
    ] {
        for (how, val) in [
            ("0", 0),
            ("the present bit cleared", old & !pte::PRESENT),
            (
                "the present and writable bits cleared",
                old & !(pte::PRESENT | pte::WRITABLE),
            ),
            (
                "the present bit cleared, NX set",
                (old & !pte::PRESENT) | pte::NO_EXECUTE,
            ),
        ] {
            let got = update(at, val);
            c.that(
                format_args!(
                    "L{level} link to a table in use replaced by {how}: {got:?}, want refused"
                ),
                got.is_err(),
            );
            if got.is_ok() {
                // Put it back as it was if the hypervisor lets it (it may not: the table
                // below was devalidated whole).
                let back = update(at, old);
                println!("  linked again: {back:?}");
            }
        }
    }
    // Bottom-up, each step empties a table before its last link goes.
    c.eq("the data page unmapped", update(s.l1, 0), Ok(1));
    c.eq("the L1 unlinked", update(s.l2, 0), Ok(1));
    c.eq("the L2 unlinked", update(s.l3, 0), Ok(1));
    c.eq("the L3 unlinked", update(root + SCRATCH_L4 * 8, 0), Ok(1));
    c.verdict()
}

fn pt_bypass(mut c: Checks, s: Scratch) -> u64 {
    let case = c.case();
    let root = pagetable::root();
    let ro = pagetable::leaf(s.data, false);
    // L1 tables: link an empty one into the L2, fill it, until the quota says no.
    static mut L1S: [u64; 512] = [0; 512];
    // SAFETY: vCPU 0 alone runs this case, once.
    let l1s = unsafe { &mut *core::ptr::addr_of_mut!(L1S) };
    l1s[0] = s.l1 >> 12;
    let mut n = 1;
    let mut fill = [MmuUpdate::default(); 512];
    let t0 = time::now_ns();
    while n < 512 {
        let Ok(f) = xtf::take_frame() else { break };
        if update(s.l2 + n as u64 * 8, (f << 12) | LINK).is_err() {
            let _ = hypercall::decrease_reservation(&[f]);
            break;
        }
        for (i, u) in fill.iter_mut().enumerate() {
            *u = MmuUpdate {
                ptr: (f << 12) + i as u64 * 8,
                val: ro,
            };
        }
        // SAFETY: fills a table of its own with read-only mappings of its own data frame.
        if unsafe { hypercall::mmu_update(&fill) } != Ok(512) {
            return xtf::error(case, format_args!("filling L1 table {n}"));
        }
        l1s[n] = f;
        n += 1;
    }
    println!(
        "{n} L1 tables of 512 entries built top-down in {} ms",
        (time::now_ns() - t0) / 1_000_000
    );
    let t1 = time::now_ns();
    let got = update(root + SCRATCH_L4 * 8, (s.l3 | LINK) & !pte::PRESENT);
    let took = time::now_ns() - t1;
    println!(
        "the L3's only link with the present bit cleared: {got:?} in {} ms ({} entries below it)",
        took / 1_000_000,
        n * 512
    );
    c.that(
        format_args!(
            "dropping the link to a tree in use by clearing its present bit: {got:?}, want refused"
        ),
        got.is_err(),
    );
    if got.is_err() {
        // Bottom-up: empty each L1, unlink it, then the L2, the L3.
        let mut ok = true;
        for (k, &f) in l1s[..n].iter().enumerate() {
            for (i, u) in fill.iter_mut().enumerate() {
                *u = MmuUpdate {
                    ptr: (f << 12) + i as u64 * 8,
                    val: 0,
                };
            }
            // SAFETY: unmaps its own read-only mappings.
            let emptied = unsafe { hypercall::mmu_update(&fill) };
            let unlinked = update(s.l2 + k as u64 * 8, 0);
            if ok && (emptied.is_err() || unlinked.is_err()) {
                println!("L1 table {k}: emptied {emptied:?}, unlinked {unlinked:?}");
                ok = false;
            }
        }
        let (l2, l3) = (update(s.l3, 0), update(root + SCRATCH_L4 * 8, 0));
        c.that(
            format_args!("the tree torn down bottom-up (L2 unlinked {l2:?}, L3 {l3:?})"),
            ok && l2.is_ok() && l3.is_ok(),
        );
    }
    c.verdict()
}

/// Case 20: a page the hypervisor writes through its own mapping can never become a page
/// table. The counters page is the sharp one: the guest may write it (it did, while it was
/// mapped writable, so it could have prepared non-present entries there), and the
/// hypervisor sets pending-event bits in it, which would make such entries present.
fn pt_hv_pages(mut c: Checks, s: Scratch) -> u64 {
    let case = c.case();
    let mfn_of = |va: u64| {
        let table = pagetable::table_for(va, 1)?;
        let e = pagetable::read_entry(table, pagetable::index_at(va, 1))?;
        (e & pte::PRESENT != 0).then_some((e & pte::ADDRESS) >> 12)
    };
    let (Some(shared), Some(counters)) = (mfn_of(SHARED_INFO), mfn_of(COUNTERS)) else {
        return xtf::error(
            case,
            format_args!("the shared-info or counters page is not mapped"),
        );
    };
    // Entry 1 of the scratch L2 links an L1.
    let slot = s.l2 + 8;
    c.eq(
        "the shared-info page linked as an L1",
        update(slot, (shared << 12) | LINK),
        Err(Inval),
    );
    c.eq(
        "the counters page linked as an L1 while mapped writable",
        update(slot, (counters << 12) | LINK),
        Err(Inval),
    );
    // Unmapped, its last writable mapping is gone: it is still the hypervisor's to write.
    // This vCPU alone runs (the others are parked) and no upcall handler is installed, so
    // nothing touches the counters page until it is mapped back.
    // SAFETY: see above.
    let unmapped = unsafe { hypercall::update_va_mapping(COUNTERS, 0) };
    let linked = update(slot, (counters << 12) | LINK);
    if linked.is_ok() {
        let _ = update(slot, 0);
    }
    // SAFETY: its own page, mapped back where the runtime expects it.
    let back = unsafe { hypercall::update_va_mapping(COUNTERS, pagetable::leaf(counters, true)) };
    c.eq("the counters page unmapped", unmapped, Ok(0));
    c.eq(
        "the counters page, unmapped, linked as an L1",
        linked,
        Err(Inval),
    );
    c.eq("the counters page mapped back", back, Ok(0));
    c.verdict()
}

/// FNV-1a of the 4096 bytes of the page at `va`.
fn page_sum(va: u64) -> u64 {
    (0..4096u64).fold(0xcbf2_9ce4_8422_2325, |h, i| {
        // SAFETY: `va` is a mapped page of this program's image, read only.
        let b = unsafe { ((va + i) as *const u8).read_volatile() };
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Case 21: the frames of the image's read-only pages are shared by every domain built from
/// the image (`kernel/src/mm/shared_image.rs`) and owned by none: this domain may read its
/// own text through the mapping the hypervisor made, and do nothing else with the frame.
/// A write would reach every domain of the image (Domain0's bystanders included, when the
/// image is theirs too); a second mapping or a page-table use would outlive the image's
/// count of users.
fn pt_shared_image(mut c: Checks, s: Scratch) -> u64 {
    let case = c.case();
    let text = (pt_shared_image as *const () as u64) & !0xfff;
    let Some(at) = pagetable::entry_address(text, 1) else {
        return xtf::error(
            case,
            format_args!("no L1 entry for the text page {text:#x}"),
        );
    };
    let entry_now = || pagetable::read_entry(at & !0xfff, ((at & 0xfff) / 8) as usize);
    let Some(entry) = entry_now().filter(|e| e & pte::PRESENT != 0) else {
        return xtf::error(case, format_args!("the text page {text:#x} is not mapped"));
    };
    let mfn = (entry & pte::ADDRESS) >> 12;
    let sum = page_sum(text);
    let frames = hypercall::current_reservation();
    println!("text page {text:#x}: frame {mfn:#x}, entry {entry:#x}");
    c.that(
        format_args!("the text page's entry is read-only ({entry:#x})"),
        entry & pte::WRITABLE == 0,
    );
    let again = MAP_AREA + 2 * 4096;
    // SAFETY: a page of the map area nothing uses; must be refused.
    let mapped =
        unsafe { hypercall::update_va_mapping(again, (entry & !pte::WRITABLE) | pte::NO_EXECUTE) };
    if mapped.is_ok() {
        // SAFETY: as above.
        let _ = unsafe { hypercall::update_va_mapping(again, 0) };
    }
    c.eq(
        "the shared frame mapped again, read-only",
        mapped,
        Err(Perm),
    );
    c.eq(
        "its entry rewritten writable",
        update(at, entry | pte::WRITABLE),
        Err(Perm),
    );
    c.eq("its entry rewritten as it is", update(at, entry), Err(Perm));
    c.eq("its entry after the rewrites", entry_now(), Some(entry));
    // Entry 1 of the scratch L2 links an L1.
    let linked = update(s.l2 + 8, (mfn << 12) | LINK);
    if linked.is_ok() {
        let _ = update(s.l2 + 8, 0);
    }
    c.eq("the shared frame linked as an L1", linked, Err(Perm));
    let granted = raw(nr::GRANT_OP, nr::GrantOp::Grant as u64, text, 0, 1, 0);
    if let Ok(g) = granted {
        let _ = hypercall::grant_end(g as u32);
    }
    c.eq("the text page granted to Domain0", granted, Err(Perm));
    c.eq(
        "the shared frame given back",
        hypercall::decrease_reservation(&[mfn]),
        Err(Perm),
    );
    // The hypervisor writes the frames it hands out over the list: through the guest's
    // read-only mapping, which must stop it (CR0.WP).
    c.eq(
        "memory_op IncreaseReservation writing its list over the text page",
        memory_op(nr::MemoryOp::IncreaseReservation, text, 4),
        Err(Fault),
    );
    c.eq(
        "memory_op IncreaseReservation writing its list over the text page's last bytes",
        memory_op(nr::MemoryOp::IncreaseReservation, text + 4096 - 8, 1),
        Err(Fault),
    );
    c.eq("the text page's bytes", page_sum(text), sum);
    c.eq("frames held", hypercall::current_reservation(), frames);
    c.verdict()
}

/// Case 22: one `mmu_update` call of 511 updates, each linking an L1 filled as data (512
/// entries): every update validates the one table it links, so the call validates 511
/// tables. The bound on one call is then 512 tables' worth of entries (`MMU_BATCH` updates
/// of one table each); this measures what that costs, as often as the guest can repeat it.
/// The timer VIRQ's port in `pt-batch-link`, and when its upcall last ran (0: not since
/// the last call began).
static TIMER_PORT: AtomicU32 = AtomicU32::new(0);
static TIMER_AT: AtomicU64 = AtomicU64::new(0);

fn on_timer(_vcpu: usize, port: u32) {
    if port == TIMER_PORT.load(Ordering::Relaxed) {
        TIMER_AT.store(time::now_ns(), Ordering::Relaxed);
    }
}

fn batch_link(c: &mut Checks, s: Scratch) -> Result<(), u64> {
    let case = c.case();
    static mut L1S: [u64; 511] = [0; 511];
    // SAFETY: vCPU 0 alone runs this case, once; nothing else refers to this static.
    let l1s = unsafe { &mut *core::ptr::addr_of_mut!(L1S) };
    let mut n = 0;
    while n < l1s.len() {
        match xtf::take_frame() {
            Ok(f) => l1s[n] = f,
            Err(_) => break,
        }
        n += 1;
    }
    let entry = pagetable::leaf(s.data, false);
    let fill = |f: u64| -> Result<(), Errno> {
        // SAFETY: the first page of the map area is used by nothing else in this case.
        unsafe { hypercall::update_va_mapping(MAP_AREA, pagetable::leaf(f, true)) }?;
        for i in 0..512u64 {
            // SAFETY: mapped writable just above.
            unsafe { ((MAP_AREA + i * 8) as *mut u64).write_volatile(entry) };
        }
        // SAFETY: nothing refers to the page any more.
        unsafe { hypercall::update_va_mapping(MAP_AREA, 0) }?;
        Ok(())
    };
    let mut links = [MmuUpdate { ptr: 0, val: 0 }; 511];
    let mut empty = [MmuUpdate { ptr: 0, val: 0 }; 512];
    // Our timer comes as an event upcall: armed 1 ms into each long call, it must arrive
    // while the call is still under way, because the hypervisor preempts a long batch
    // (`HYPERCALL_SLICE_NS`), takes the interrupts and upcalls due, and continues it. A call
    // the hypervisor ran in one go would hold the upcall (and every neighbour's timer on
    // this CPU) until its end.
    timer_upcall(case)?;
    let start = time::now_ns();
    let (mut rounds, mut longest, mut linked_most) = (0u64, 0u64, 0u64);
    // Calls of 8 ms or more, and those of them the timer upcall interrupted in their first
    // half.
    let (mut long_calls, mut interrupted) = (0u64, 0u64);
    while time::now_ns() < start + 3_000_000_000 {
        for &f in &l1s[..n] {
            if let Err(e) = fill(f) {
                return Err(xtf::error(case, format_args!("filling a table: {e:?}")));
            }
        }
        for (k, u) in links[..n].iter_mut().enumerate() {
            *u = MmuUpdate {
                ptr: s.l2 + (k as u64 + 1) * 8,
                val: (l1s[k] << 12) | LINK,
            };
        }
        let t0 = time::now_ns();
        TIMER_AT.store(0, Ordering::Relaxed);
        let _ = hypercall::set_timer(t0 + 1_000_000);
        // SAFETY: links fresh tables into its own scratch L2; no memory Rust uses moves.
        let linked = unsafe { hypercall::mmu_update(&links[..n]) }.unwrap_or(0) as u64;
        let took = time::now_ns() - t0;
        if took >= 8_000_000 {
            long_calls += 1;
            let at = TIMER_AT.load(Ordering::Relaxed);
            if at != 0 && at - t0 < took / 2 {
                interrupted += 1;
            }
        }
        longest = longest.max(took);
        linked_most = linked_most.max(linked);
        // Bottom-up: empty each linked table, then unlink it.
        for (k, &f) in l1s[..linked as usize].iter().enumerate() {
            for (i, u) in empty.iter_mut().enumerate() {
                *u = MmuUpdate {
                    ptr: (f << 12) + i as u64 * 8,
                    val: 0,
                };
            }
            // SAFETY: clears its own read-only mappings of its data frame.
            let emptied = unsafe { hypercall::mmu_update(&empty) };
            let unlinked = update(s.l2 + (k as u64 + 1) * 8, 0);
            if emptied.is_err() || unlinked.is_err() {
                return Err(xtf::error(
                    case,
                    format_args!("table {k}: emptied {emptied:?}, unlinked {unlinked:?}"),
                ));
            }
        }
        rounds += 1;
    }
    println!(
        "{rounds} rounds of one mmu_update linking {linked_most} of {n} filled tables \
         ({} entries validated): longest call {} us; {interrupted} of {long_calls} calls of \
         8 ms or more took the timer upcall in their first half",
        linked_most * 512,
        longest / 1000
    );
    c.that(
        format_args!(
            "every call of 8 ms or more was preempted for the timer upcall armed 1 ms into it \
             ({interrupted} of {long_calls})"
        ),
        long_calls > 0 && interrupted == long_calls,
    );
    // The page-table quota (512 tables, `MAX_TABLES`) counts the domain's own tables too:
    // the last few links are refused with `NoMem`, as they must be.
    c.that(
        format_args!(
            "one call linked at least 400 tables ({linked_most} of {n}; the quota stops it short \
             of 512)"
        ),
        linked_most >= 400,
    );
    Ok(())
}

/// Case 27: set by vCPU 0 while its long batches run (1), then once they are over (2).
static CONVOY: AtomicU64 = AtomicU64::new(0);
/// vCPU 1's remaps while vCPU 0's batches ran: how many, the longest (ns), and whether it
/// has stopped.
static REMAPS: AtomicU64 = AtomicU64::new(0);
static REMAP_LONGEST: AtomicU64 = AtomicU64::new(0);
static REMAPS_DONE: AtomicU64 = AtomicU64::new(0);
/// The map-area page vCPU 1 remaps (vCPU 0's batches use the first, and [`PEEK`]).
const REMAP_VA: u64 = MAP_AREA + 40 * 4096;
/// How long one remap may take while vCPU 0's batches run.
const REMAP_MOST_NS: u64 = 10_000_000;

/// Case 27 (2 vCPUs): vCPU 0 runs `pt-batch-link`'s long batches (each continued every
/// `HYPERCALL_SLICE_NS`), vCPU 1 remaps a page of its own over and over meanwhile: each
/// remap replaces a present entry, so it flushes the TLB of every CPU holding the domain's
/// tables, vCPU 0's among them, and waits for each. vCPU 0's CPU must serve the flush at
/// its next continuation: served only when a whole batch ended (under QEMU's TCG a pending
/// interrupt is not taken between the `sysretq` and the `syscall` it returns onto), a
/// remap would wait 30-140 ms with interrupts off, and its CPU's other domains with it (an
/// audit of session 22 asked whether TCG takes the flush's IPI there: it does, the longest
/// remap 2.8 ms; with the batch not continued, 34 ms).
fn flush_convoy(vcpu: usize) -> u64 {
    const CASE: &str = "flush-convoy";
    if shared::vcpus() < 2 {
        return xtf::error(CASE, format_args!("needs 2 vCPUs"));
    }
    if vcpu == 1 {
        let frames = (xtf::take_frame(), xtf::take_frame());
        let until = time::now_ns() + 10_000_000_000;
        while CONVOY.load(Ordering::SeqCst) == 0 && time::now_ns() < until {
            core::hint::spin_loop();
        }
        if let (Ok(a), Ok(b)) = frames {
            let mut k = 0u64;
            while CONVOY.load(Ordering::SeqCst) == 1 {
                let f = if k.is_multiple_of(2) { a } else { b };
                let t0 = time::now_ns();
                // SAFETY: REMAP_VA is this vCPU's alone; nothing reads through it.
                let r = unsafe { hypercall::update_va_mapping(REMAP_VA, pagetable::leaf(f, true)) };
                REMAP_LONGEST.fetch_max(time::now_ns() - t0, Ordering::SeqCst);
                // Refused, it flushed nothing: not a remap.
                if r.is_ok() {
                    k += 1;
                }
            }
            REMAPS.store(k, Ordering::SeqCst);
        }
        REMAPS_DONE.store(1, Ordering::SeqCst);
        rt::park(vcpu);
    }
    if vcpu > 1 {
        rt::park(vcpu);
    }
    with_scratch(CASE, |mut c, s| {
        CONVOY.store(1, Ordering::SeqCst);
        let linked = batch_link(&mut c, s);
        CONVOY.store(2, Ordering::SeqCst);
        if let Err(end) = linked {
            return end;
        }
        let until = time::now_ns() + 5_000_000_000;
        while REMAPS_DONE.load(Ordering::SeqCst) == 0 && time::now_ns() < until {
            core::hint::spin_loop();
        }
        let (n, longest) = (
            REMAPS.load(Ordering::SeqCst),
            REMAP_LONGEST.load(Ordering::SeqCst),
        );
        println!("vCPU 1: {n} remaps, the longest {} us", longest / 1000);
        c.that(
            format_args!(
                "every remap beside the long batches took at most {} ms (the longest {} us, \
                 of {n})",
                REMAP_MOST_NS / 1_000_000,
                longest / 1000
            ),
            n > 0 && longest <= REMAP_MOST_NS,
        );
        // Measured to the end: a unit of `work` (a domain still running also ends `ok`).
        shared::add_work(0, 1);
        c.verdict()
    })
}

fn pt_batch_link(mut c: Checks, s: Scratch) -> u64 {
    match batch_link(&mut c, s) {
        Ok(()) => c.verdict(),
        Err(end) => end,
    }
}

/// Case 23: reservations of `MMU_BATCH` frames in one call each, taken (the hypervisor
/// zeroes every frame: under TCG several milliseconds a call) and given back, the timer
/// upcall armed 500 us into each call: a call of 4 ms or more must have been preempted and
/// continued (`HYPERCALL_SLICE_NS`, 1 ms) for the upcall to arrive in its first half, and
/// no upcall may come more than [`UPCALL_LATE_NS`] after its deadline (one step of a call
/// past its slice). With `hold` frames taken first, each round gives back the oldest
/// `MMU_BATCH` of them and keeps the new ones (first in, first out), so that the
/// hypervisor's search for each frame it forgets is as long as the domain's holding.
const UPCALL_LATE_NS: u64 = 3_000_000;
/// `mem-batch`'s long call: one that must have taken the timer upcall armed 500 us into it.
const LONG_NS: u64 = 4_000_000;

/// What `mem-batch`'s timed calls add up to.
#[derive(Default)]
struct Tally {
    /// Calls of `LONG_NS` or more.
    long_calls: u64,
    /// Those of them the timer upcall interrupted in their first half.
    interrupted: u64,
    /// The latest an upcall came after its deadline.
    latest: u64,
}

impl Tally {
    /// One call that took `took`, interrupted in its first half or not, its upcall `late`.
    fn add(&mut self, took: u64, first_half: bool, late: u64) {
        if took >= LONG_NS {
            self.long_calls += 1;
            self.interrupted += u64::from(first_half);
        }
        self.latest = self.latest.max(late);
    }
}

/// Binds the timer VIRQ and registers `on_timer` as the upcall (it stamps `TIMER_AT`); the
/// case's ending (an ERROR) if either fails.
fn timer_upcall(case: &'static str) -> Result<(), u64> {
    let timer_port = hypercall::evtchn_bind_virq(nr::virq::TIMER)
        .map_err(|e| xtf::error(case, format_args!("binding the timer VIRQ: {e:?}")))?;
    TIMER_PORT.store(timer_port, Ordering::Relaxed);
    workloads::upcall::register(on_timer)
        .map_err(|e| xtf::error(case, format_args!("registering the upcall: {e:?}")))?;
    Ok(())
}

fn mem_batch() -> u64 {
    const CASE: &str = "mem-batch";
    const N: usize = nr::MMU_BATCH as usize;
    const MOST_HELD: usize = 64 * N;
    const HELD_AT: u64 = MAP_AREA + 32 * 4096;
    let mut c = Checks::new(CASE);
    if let Err(end) = timer_upcall(CASE) {
        return end;
    }
    static mut LIST: [u64; N] = [0; N];
    // SAFETY: vCPU 0 alone runs this case, once; nothing else refers to this static.
    let list = unsafe { &mut *core::ptr::addr_of_mut!(LIST) };
    // One timed call: (its result, how long it took, whether the upcall came in its first
    // half, how late it came after its deadline).
    let timed = |call: &mut dyn FnMut() -> Result<usize, Errno>| {
        let t0 = time::now_ns();
        let deadline = t0 + 500_000;
        TIMER_AT.store(0, Ordering::Relaxed);
        let _ = hypercall::set_timer(deadline);
        let r = call();
        let took = time::now_ns() - t0;
        let at = TIMER_AT.load(Ordering::Relaxed);
        let late = if at == 0 {
            0
        } else {
            at.saturating_sub(deadline)
        };
        (r, took, at != 0 && at - t0 < took / 2, late)
    };
    let mut tally = Tally::default();
    // The longest `DecreaseReservation` of the phase holding nothing.
    let mut unheld_dec = 0;
    // Two phases: holding nothing, for 2 s (each batch given back is the one just taken);
    // then, with `hold` > 0, holding that many frames, for 3 rounds (each gives back the
    // oldest batch held and keeps the new one in its place: first in, first out).
    let hold_arg = (shared::arg("hold", 0) as usize)
        .div_ceil(N)
        .min(MOST_HELD / N)
        * N;
    for hold in core::iter::once(0).chain((hold_arg > 0).then_some(hold_arg)) {
        // The held frames' numbers go in frames of its own mapped at `HELD_AT` (too many
        // for a static in the image).
        let pages = (hold * 8).div_ceil(4096);
        for k in 0..pages as u64 {
            let mapped = xtf::take_frame().and_then(|f| {
                // SAFETY: the map area's pages from 32 on are used by nothing else here.
                unsafe {
                    hypercall::update_va_mapping(HELD_AT + k * 4096, pagetable::leaf(f, true))
                }
            });
            if let Err(e) = mapped {
                return xtf::error(CASE, format_args!("a page for the held list: {e:?}"));
            }
        }
        // SAFETY: `pages` pages mapped writable at HELD_AT just above, ours alone.
        let held_list = unsafe { core::slice::from_raw_parts_mut(HELD_AT as *mut u64, hold) };
        let mut kept = 0;
        while kept < hold {
            match hypercall::increase_reservation(&mut held_list[kept..kept + N]) {
                Ok(n) if n == N => kept += N,
                other => {
                    return xtf::error(CASE, format_args!("holding {hold} frames: {other:?}"));
                }
            }
        }
        let held = hypercall::current_reservation();
        let start = time::now_ns();
        let mut rounds = 0u64;
        let (mut longest_inc, mut longest_dec) = (0u64, 0u64);
        let mut oldest = 0;
        while if hold == 0 {
            time::now_ns() < start + 2_000_000_000
        } else {
            rounds < 3
        } {
            let (taken, took, first_half, late) =
                timed(&mut || hypercall::increase_reservation(list));
            tally.add(took, first_half, late);
            longest_inc = longest_inc.max(took);
            if taken != Ok(N) {
                return xtf::error(CASE, format_args!("IncreaseReservation of {N}: {taken:?}"));
            }
            // Give back the oldest batch held, if any, and hold the new one in its place.
            let at = oldest;
            if hold > 0 {
                oldest = (oldest + N) % hold;
            }
            let (given, took, first_half, late) = timed(&mut || {
                hypercall::decrease_reservation(if hold > 0 {
                    &held_list[at..at + N]
                } else {
                    &list[..]
                })
            });
            tally.add(took, first_half, late);
            longest_dec = longest_dec.max(took);
            if given != Ok(N) {
                return xtf::error(CASE, format_args!("DecreaseReservation of {N}: {given:?}"));
            }
            if hold > 0 {
                held_list[at..at + N].copy_from_slice(&list[..]);
            }
            rounds += 1;
        }
        let _ = hypercall::set_timer(0);
        println!(
            "holding {kept} frames, {rounds} rounds of {N} frames taken and given back in \
             one call each: longest IncreaseReservation {} us, DecreaseReservation {} us",
            longest_inc / 1000,
            longest_dec / 1000,
        );
        c.eq("frames held", hypercall::current_reservation(), held);
        if hold == 0 {
            unheld_dec = longest_dec;
        } else {
            // A frame given back is found among those held by a lookup, not a search of
            // them all (`AddressSpace::remove_frame`): the oldest batch of 32,768 held took
            // 146 times as long as a batch with nothing held when it was a search.
            c.that(
                format_args!(
                    "giving back the oldest {N} of {kept} frames held took at most 4 times as \
                     long as {N} with nothing held ({} us against {} us)",
                    longest_dec / 1000,
                    unheld_dec / 1000
                ),
                longest_dec <= 4 * unheld_dec,
            );
        }
    }
    let Tally {
        long_calls,
        interrupted,
        latest,
    } = tally;
    println!(
        "{interrupted} of {long_calls} calls of 4 ms or more took the timer upcall in their \
         first half; the latest upcall came {} us after its deadline",
        latest / 1000
    );
    c.that(
        format_args!(
            "every call of 4 ms or more was preempted for the timer upcall armed 500 us into \
             it ({interrupted} of {long_calls})"
        ),
        long_calls > 0 && interrupted == long_calls,
    );
    c.that(
        format_args!(
            "every upcall came within {} us of its deadline (the latest {} us)",
            UPCALL_LATE_NS / 1000,
            latest / 1000
        ),
        latest <= UPCALL_LATE_NS,
    );
    c.verdict()
}
