//! `hostile-mm`: tries every page-table update the hypervisor must refuse, and memory
//! reservations beyond its limit. Each must fail with the right error, leaving the domain
//! and the hypervisor intact (the checks after each refusal still run):
//! - a writable mapping of each of its page tables (the root, the map area's level-1 table):
//!   refused (`Inval`: a page table may not become writable); read-only is allowed;
//! - a mapping of a frame it does not own (frame 1, the hypervisor's low memory): `Perm`;
//!   of a frame beyond memory: `Inval`; of its shared-info page writable: `Inval`;
//! - reserved bits (52, 62), the global bit, the grant bit, PAT, a missing user bit: `Inval`;
//! - a superpage (PS in a level-2 entry) and a level-4 entry pointing at the root itself
//!   (the linear page-table trick): `Inval`;
//! - any level-4 entry of the hypervisor's half: `Inval`;
//! - an update of a frame that is not a page table, a misaligned entry address, an
//!   `update_va_mapping` of a hypervisor address: `Inval`;
//! - a linked table cannot be mapped writable, but once unlinked it can (type tracking);
//! - taking more frames than `memory_kib` allows gives only up to the limit, then none;
//!   giving back a mapped frame, the root table or a frame it does not own is refused, and
//!   so is giving back the counters or shared-info page once unmapped (the hypervisor keeps
//!   writing them).
//! - its code page, which the hypervisor loads once for every domain of its image and maps
//!   read-only (`shared_code = 1`, the default; 0 when run with `share_images=off`): mapped
//!   writable, mapped again even read-only, linked as a page table, given back, granted:
//!   each `Perm` (the frame is no domain's), and the page still reads as before.
//!
//! It prints each result, then exits 0 if every check held, `hostile::CHECK_FAILED`
//! otherwise. Expected fate: ok. vCPU 0 acts; other vCPUs park.
#![no_std]
#![no_main]

use abi::error::Errno;
use abi::layout::{COUNTERS, MAP_AREA, SHARED_INFO};
use abi::mm::{MmuUpdate, pte};
use workloads::hypercall::{self, decrease_reservation, increase_reservation};
use workloads::{entry, hostile, pagetable, println, rt};

entry!(main);

fn check(what: &str, got: Result<u64, Errno>, want: Result<u64, Errno>) -> bool {
    let ok = got == want;
    println!(
        "{}: {what}: got {got:?}, want {want:?}",
        if ok { "ok" } else { "WRONG" }
    );
    ok
}

fn update(ptr: u64, val: u64) -> Result<u64, Errno> {
    // SAFETY: every update here targets the map area or entries that must be refused; no
    // memory Rust uses is remapped.
    unsafe { hypercall::mmu_update(&[MmuUpdate { ptr, val }]) }.map(|n| n as u64)
}

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let mut all = true;
    let root = pagetable::root();
    let (Some(l1), Some(l2)) = (
        pagetable::table_for(MAP_AREA, 1),
        pagetable::table_for(MAP_AREA, 2),
    ) else {
        println!("WRONG: the map area's tables are not in the page-table window");
        return hostile::CHECK_FAILED;
    };
    let slot = |i: u64| l1 + i * 8;
    let user = pte::PRESENT | pte::USER;

    // Frames of our own to play with.
    let mut mine = [0u64; 4];
    all &= check(
        "taking 4 frames",
        increase_reservation(&mut mine).map(|n| n as u64),
        Ok(4),
    );
    let data = mine[0];

    for (name, table) in [
        ("the root mapped writable", root),
        ("the map area's level-1 table mapped writable", l1),
        ("the map area's level-2 table mapped writable", l2),
    ] {
        all &= check(
            name,
            update(slot(0), table | user | pte::WRITABLE),
            Err(Errno::Inval),
        );
    }
    all &= check("root mapped read-only", update(slot(0), root | user), Ok(1));
    all &= check("and unmapped", update(slot(0), 0), Ok(1));

    all &= check(
        "a frame of the hypervisor's",
        update(slot(1), (1 << 12) | user),
        Err(Errno::Perm),
    );
    all &= check(
        "a frame beyond memory",
        update(slot(1), (1 << 51) | user),
        Err(Errno::Inval),
    );
    let shared = pagetable::table_for(SHARED_INFO, 1)
        .and_then(|t| pagetable::read_entry(t, pagetable::index_at(SHARED_INFO, 1)))
        .unwrap_or(0)
        & pte::ADDRESS;
    all &= check(
        "the shared-info page writable",
        update(slot(1), shared | user | pte::WRITABLE),
        Err(Errno::Inval),
    );
    all &= check(
        "the shared-info page read-only",
        update(slot(1), shared | user),
        Ok(1),
    );
    let _ = update(slot(1), 0);

    let leaf = pagetable::leaf(data, true);
    for (name, bit) in [
        ("reserved bit 52", 1u64 << 52),
        ("reserved bit 62", 1 << 62),
        ("the global bit", pte::GLOBAL),
        ("the grant bit", pte::GRANT_MAPPED),
        ("the PAT bit", pte::HUGE_OR_PAT),
    ] {
        all &= check(name, update(slot(2), leaf | bit), Err(Errno::Inval));
    }
    all &= check(
        "no user bit",
        update(slot(2), leaf & !pte::USER),
        Err(Errno::Inval),
    );
    // A 2 MiB superpage in an unused level-2 entry: two after the map area's (the next one
    // maps the page-table window).
    let l2_next = l2 + (pagetable::index_at(MAP_AREA, 2) as u64 + 2) * 8;
    all &= check(
        "a superpage",
        update(
            l2_next,
            (data << 12) | user | pte::WRITABLE | pte::HUGE_OR_PAT,
        ),
        Err(Errno::Inval),
    );
    all &= check(
        "a level-4 entry pointing at the root (linear page table)",
        update(root + 100 * 8, root | user | pte::WRITABLE),
        Err(Errno::Inval),
    );
    all &= check(
        "the hypervisor's half of the root",
        update(root + 256 * 8, 0),
        Err(Errno::Inval),
    );
    all &= check(
        "an update of a frame that is not a page table",
        update(data << 12, leaf),
        Err(Errno::Inval),
    );
    all &= check(
        "a misaligned entry address",
        update(slot(3) + 4, leaf),
        Err(Errno::Inval),
    );
    all &= check(
        "update_va_mapping of a hypervisor address",
        // SAFETY: refused; nothing is remapped.
        unsafe { hypercall::update_va_mapping(0xffff_8000_0000_0000, leaf) },
        Err(Errno::Inval),
    );

    // Type tracking: frame `mine[1]` linked as the level-1 table of that 2 MiB is a page
    // table, so it cannot be mapped writable; once unlinked, it is data again.
    let table = mine[1];
    all &= check(
        "a fresh frame linked as a level-1 table",
        update(l2_next, (table << 12) | user | pte::WRITABLE),
        Ok(1),
    );
    all &= check(
        "that table mapped writable",
        update(slot(4), pagetable::leaf(table, true)),
        Err(Errno::Inval),
    );
    all &= check("unlinked", update(l2_next, 0), Ok(1));
    all &= check(
        "then mapped writable",
        update(slot(4), pagetable::leaf(table, true)),
        Ok(1),
    );
    all &= check(
        "a frame mapped writable linked as a table",
        update(l2_next, (table << 12) | user | pte::WRITABLE),
        Err(Errno::Inval),
    );

    if workloads::shared::arg("shared_code", 1) != 0 {
        all &= shared_code(slot(5), l2_next);
    }

    // Reservation: a mapped frame and the root cannot be given back, nor a frame not ours.
    all &= check(
        "giving back a mapped frame",
        decrease_reservation(&[table]).map(|n| n as u64),
        Err(Errno::Busy),
    );
    all &= check("unmapping it", update(slot(4), 0), Ok(1));
    all &= check(
        "giving back the root table",
        decrease_reservation(&[root >> 12]).map(|n| n as u64),
        Err(Errno::Busy),
    );
    all &= check(
        "giving back a frame of the hypervisor's",
        decrease_reservation(&[1]).map(|n| n as u64),
        Err(Errno::Perm),
    );
    all &= check(
        "giving back two unmapped frames",
        decrease_reservation(&mine[1..3]).map(|n| n as u64),
        Ok(2),
    );
    all &= check(
        "giving one back twice",
        decrease_reservation(&mine[1..2]).map(|n| n as u64),
        Err(Errno::Perm),
    );
    // Pages the hypervisor writes for the domain's whole life cannot be given back, even
    // once unmapped (it would write into a frame someone else then gets). Nothing between
    // the unmap and the remap below touches them (printing is a hypercall).
    for (name, va, writable) in [
        ("the counters page", COUNTERS, true),
        ("the shared-info page", SHARED_INFO, false),
    ] {
        let frame = pagetable::table_for(va, 1)
            .and_then(|t| pagetable::read_entry(t, pagetable::index_at(va, 1)))
            .unwrap_or(0)
            & pte::ADDRESS;
        // SAFETY: the page is remapped to the same frame right after; nothing reads or
        // writes it meanwhile.
        let unmapped = unsafe { hypercall::update_va_mapping(va, 0) };
        let given = decrease_reservation(&[frame >> 12]).map(|n| n as u64);
        // SAFETY: as above: the same frame back at the same address.
        let remapped =
            unsafe { hypercall::update_va_mapping(va, pagetable::leaf(frame >> 12, writable)) };
        all &= check(name, unmapped, Ok(0));
        all &= check("  given back once unmapped", given, Err(Errno::Busy));
        all &= check("  mapped again", remapped, Ok(0));
    }

    // Up to the limit, then nothing more.
    let held = hypercall::current_reservation().unwrap_or(0);
    let limit = hypercall::maximum_reservation().unwrap_or(0);
    all &= check(
        "the limit is memory_kib / 4",
        Ok(limit),
        Ok(pagetable::frames_limit()),
    );
    let room = limit.saturating_sub(held);
    // Ask in chunks until the hypervisor gives fewer than asked: in all, exactly the room.
    let mut more = [0u64; 64];
    let mut got = 0u64;
    loop {
        match increase_reservation(&mut more) {
            Ok(n) => {
                got += n as u64;
                if n < more.len() {
                    break;
                }
            }
            Err(e) => {
                println!("WRONG: taking frames up to the limit failed: {e:?}");
                all = false;
                break;
            }
        }
    }
    all &= check(
        "frames taken while asking for more than the limit leaves",
        Ok(got),
        Ok(room),
    );
    all &= check(
        "asking for one more at the limit",
        increase_reservation(&mut more[..1]).map(|n| n as u64),
        Ok(0),
    );
    if all {
        println!("every forbidden update and reservation was refused");
        0
    } else {
        hostile::CHECK_FAILED
    }
}

/// Everything a guest might do with a frame of its image's shared code, each refused with
/// `Perm`: `slot` is a free entry of the map area's level-1 table, `l2_slot` a free level-2
/// entry.
fn shared_code(slot: u64, l2_slot: u64) -> bool {
    let code = main as *const () as u64 & !0xfff;
    let frame = pagetable::table_for(code, 1)
        .and_then(|t| pagetable::read_entry(t, pagetable::index_at(code, 1)))
        .unwrap_or(0);
    let mfn = (frame & pte::ADDRESS) >> 12;
    let before = hostile::load(code);
    let mut all = check(
        "its code page is mapped read-only",
        Ok(frame & (pte::PRESENT | pte::WRITABLE)),
        Ok(pte::PRESENT),
    );
    all &= check(
        "its shared code frame mapped writable",
        update(slot, pagetable::leaf(mfn, true)),
        Err(Errno::Perm),
    );
    all &= check(
        "its shared code frame mapped again read-only",
        update(slot, pagetable::leaf(mfn, false)),
        Err(Errno::Perm),
    );
    all &= check(
        "its shared code frame linked as a level-1 table",
        update(
            l2_slot,
            (mfn << 12) | pte::PRESENT | pte::USER | pte::WRITABLE,
        ),
        Err(Errno::Perm),
    );
    all &= check(
        "giving back its shared code frame",
        decrease_reservation(&[mfn]).map(|n| n as u64),
        Err(Errno::Perm),
    );
    all &= check(
        "granting its shared code page to Domain0",
        hypercall::grant_access(code, 0, true).map(u64::from),
        Err(Errno::Perm),
    );
    all &= check(
        "its code page reads as before",
        Ok(hostile::load(code)),
        Ok(before),
    );
    all
}
