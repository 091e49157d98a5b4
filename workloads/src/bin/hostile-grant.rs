//! `hostile-grant`: two domains that misuse each other's grants and event channels. Every
//! misuse must be refused with the right error, the frames they share must stay intact for
//! as long as one of them is mapped, and none may leak (Domain0 checks at the end of the run
//! that every frame came back).
//!
//! The granter (`role = 0`, domain G) comes first in the spec and the grantee (`role = 1`)
//! right after it, so the grantee is G + 1 (as in `ping`). The granter makes its grants, then
//! allocates port 1 for G + 1; the grantee binds to it, retrying until the granter has run.
//! From then on they take turns, each handing over with an event:
//! 1. granter: grants page A read-write to G + 1 (ref 1), B read-only (ref 2, filled with a
//!    pattern first) and C to Domain0 (ref 3, someone else's); granting an unmapped page, to
//!    itself or to a domain that does not exist, and ending a reference never granted, fail;
//! 2. grantee: maps ref 1 and writes a pattern through it, maps ref 2 read-only and reads B's
//!    pattern, copies from ref 2; mapping ref 2 writable, ref 3, ref 99, outside `MAP_AREA`,
//!    at an unaligned or an occupied address, copying into ref 2 and past the end of ref 1,
//!    fail;
//! 3. granter: A holds the grantee's pattern (the mapping shares the frame); ending ref 1
//!    fails with `Busy` while it is mapped;
//! 4. grantee: unmaps ref 1; unmapping it again, or a handle never given, fails;
//! 5. granter: ends ref 1, then again (fails), and exits while ref 2 is still mapped;
//! 6. grantee: mapping the revoked ref 1 fails; once the granter is dead, B still holds its
//!    pattern through the mapping (the frame outlives its owner, not reused), unmapping it
//!    works, and mapping from, binding to and sending to the dead domain fail.
//!
//! Each check prints `ok:` or `WRONG:`. A domain with a wrong result (or a peer that stopped
//! answering) shuts down with `hostile::CHECK_FAILED`, after printing every check; one with
//! all right sets `work` to 1 and exits cleanly.
//!
//! Arguments: `role` (0 granter, 1 grantee). Expected fate: ok, for both. vCPU 0 acts; other
//! vCPUs park.
#![no_std]
#![no_main]

use core::sync::atomic::Ordering;

use abi::error::Errno::{self, Busy, Inval, Perm, Srch};
use abi::io::ring::PAGE_WORDS;
use abi::layout::MAP_AREA;
use workloads::split::{SharedPage, mix64};
use workloads::{entry, hostile, hypercall, println, rt, shared, time};

entry!(main);

/// The granter allocates this port first (a fresh domain's first port).
const PORT: u32 = 1;
/// How long either side waits for the other's next step before giving up.
const STEP_TIMEOUT_NS: u64 = 2_000_000_000;
/// How long the grantee waits after the granter's last event so that it has surely died.
const DEATH_WAIT_NS: u64 = 50_000_000;

/// Granted read-write to the grantee, which writes [`a_word`]s into it.
static A: SharedPage = SharedPage::new();
/// Filled with [`b_word`]s, then granted read-only to the grantee.
static B: SharedPage = SharedPage::new();
/// Granted to Domain0: the grantee may not touch it.
static C: SharedPage = SharedPage::new();

/// Where the grantee maps ref 1 (and tries the occupied-page and revoked-ref maps).
const PAGE0: u64 = MAP_AREA;
/// Where the grantee maps ref 2.
const PAGE1: u64 = MAP_AREA + 4096;

/// Word `i` the grantee writes into A.
fn a_word(i: usize) -> u64 {
    mix64(0xa0a0_0000 + i as u64)
}

/// Word `i` the granter writes into B.
fn b_word(i: usize) -> u64 {
    mix64(0xb0b0_0000 + i as u64)
}

/// The checks done so far: each prints its outcome; any wrong one fails the domain at the end.
struct Checks {
    wrong: u32,
}

impl Checks {
    /// Records a check of a condition.
    fn that(&mut self, what: &str, ok: bool) -> bool {
        println!("{}: {what}", if ok { "ok" } else { "WRONG" });
        if !ok {
            self.wrong += 1;
        }
        ok
    }

    /// Records a call that must fail with one of `allowed`.
    fn fails(&mut self, what: &str, got: Result<u64, Errno>, allowed: &[Errno]) -> bool {
        let ok = matches!(got, Err(e) if allowed.contains(&e));
        println!(
            "{}: {what}: got {got:?}, want {allowed:?}",
            if ok { "ok" } else { "WRONG" }
        );
        if !ok {
            self.wrong += 1;
        }
        ok
    }

    /// Records a call that must succeed; returns its value if it did.
    fn works(&mut self, what: &str, got: Result<u64, Errno>) -> Option<u64> {
        println!(
            "{}: {what}: got {got:?}",
            if got.is_ok() { "ok" } else { "WRONG" }
        );
        if got.is_err() {
            self.wrong += 1;
        }
        got.ok()
    }

    /// Records a grant map that must fail; one that wrongly succeeded is unmapped again.
    fn map_fails(
        &mut self,
        what: &str,
        (granter, gref, va, readonly): (u32, u32, u64, bool),
        allowed: &[Errno],
    ) {
        // SAFETY: nothing in this program refers to `va`, and the mapping, should it
        // wrongly be made, is never accessed before being unmapped below.
        let got = unsafe { hypercall::grant_map(granter, gref, va, readonly) }.map(u64::from);
        if !self.fails(what, got, allowed)
            && let Ok(handle) = got
        {
            let _ = hypercall::grant_unmap(handle as u32);
        }
    }

    /// The domain's exit code.
    fn verdict(&self) -> u64 {
        if self.wrong == 0 {
            println!("every check passed");
            // The record's `exit` says `ok` for a domain still running too: this says it
            // finished.
            shared::add_work(0, 1);
            0
        } else {
            println!("{} checks went wrong", self.wrong);
            hostile::CHECK_FAILED
        }
    }
}

/// Waits for the peer's event on `port`, at most [`STEP_TIMEOUT_NS`]; false (after saying
/// so, and counting it wrong) if it never came.
fn wait_peer(c: &mut Checks, port: u32, step: &str) -> bool {
    let deadline = time::now_ns() + STEP_TIMEOUT_NS;
    while !shared::take_event(port) {
        if time::now_ns() >= deadline {
            println!("WRONG: no event from the peer before {step}");
            c.wrong += 1;
            return false;
        }
        // Either the timer or the event ends the block; the loop re-checks both.
        let _ = hypercall::set_timer(deadline);
        hypercall::block();
    }
    true
}

/// Sends the peer the event that hands it the next step.
fn notify(c: &mut Checks, port: u32) {
    if hypercall::evtchn_send(port).is_err() {
        c.that("event to the peer", false);
    }
}

/// Hands the peer its next step (an event on `port`), then waits for the event that starts
/// `step`, as [`wait_peer`].
fn hand_over(c: &mut Checks, port: u32, step: &str) -> bool {
    notify(c, port);
    wait_peer(c, port, step)
}

/// Word `i` of the mapped page at `va`.
///
/// # Safety
/// `va` must be mapped (readable) for the whole call, and `i` < [`PAGE_WORDS`].
unsafe fn mapped_word(va: u64, i: usize) -> u64 {
    // SAFETY: the page is mapped and `i` in bounds (contract); the other domain may write it
    // at any time, so the load is volatile and no reference to it is formed.
    unsafe { (va as *const u64).add(i).read_volatile() }
}

/// Whether the mapped page at `va` holds `word(i)` in every word `i`.
///
/// # Safety
/// As for [`mapped_word`].
unsafe fn mapped_page_is(va: u64, word: fn(usize) -> u64) -> bool {
    // SAFETY: contract of this function.
    (0..PAGE_WORDS).all(|i| unsafe { mapped_word(va, i) } == word(i))
}

fn granter(me: u32, c: &mut Checks) {
    let peer = me + 1;
    for (i, w) in B.words().iter().enumerate() {
        w.store(b_word(i), Ordering::Relaxed);
    }
    let refs = [
        ("grant of A read-write to the grantee", A.grant(peer, false)),
        ("grant of B read-only to the grantee", B.grant(peer, true)),
        ("grant of C to Domain0", C.grant(0, false)),
    ];
    for (want, (what, got)) in (1u64..).zip(refs) {
        let got = got.map(u64::from);
        let ok = got == Ok(want);
        println!(
            "{}: {what}: got {got:?}, want Ok({want})",
            if ok { "ok" } else { "WRONG" }
        );
        if !ok {
            c.wrong += 1;
        }
    }
    c.fails(
        "grant of an unmapped page",
        hypercall::grant_access(MAP_AREA, peer, false).map(u64::from),
        &[Inval],
    );
    c.fails(
        "grant to itself",
        A.grant(me, false).map(u64::from),
        &[Inval],
    );
    c.fails(
        "grant to domain 5000, which does not exist",
        A.grant(5000, false).map(u64::from),
        &[Srch],
    );
    c.fails(
        "end of ref 9, never granted",
        hypercall::grant_end(9),
        &[Inval],
    );

    let port = match hypercall::evtchn_alloc_unbound(peer) {
        Ok(port) => port,
        Err(e) => {
            c.fails("port allocation for the grantee", Err(e), &[]);
            return;
        }
    };
    c.that("the first port is port 1", port == PORT);
    if !wait_peer(c, port, "step 3") {
        return;
    }

    c.that(
        "A holds the grantee's pattern, written through its mapping",
        A.words()
            .iter()
            .enumerate()
            .all(|(i, w)| w.load(Ordering::Relaxed) == a_word(i)),
    );
    c.fails(
        "end of ref 1 while mapped",
        hypercall::grant_end(1),
        &[Busy],
    );
    if !hand_over(c, port, "step 5") {
        return;
    }

    c.works("end of ref 1 once unmapped", hypercall::grant_end(1));
    c.fails("end of ref 1 again", hypercall::grant_end(1), &[Inval]);
    // Exit with ref 2 still mapped by the grantee.
    notify(c, port);
}

fn grantee(me: u32, c: &mut Checks) {
    let peer = me - 1;
    let deadline = time::now_ns() + STEP_TIMEOUT_NS;
    let port = loop {
        match hypercall::evtchn_bind(peer, PORT) {
            Ok(port) => break port,
            Err(_) if time::now_ns() < deadline => time::sleep_ns(1_000_000),
            Err(e) => {
                c.fails("bind to the granter's port", Err(e), &[]);
                return;
            }
        }
    };

    // Step 2.
    // SAFETY: nothing in this program refers to PAGE0; it is accessed only with volatile
    // operations, and not after the unmap of step 4.
    let h1 = c.works("map of ref 1 read-write", unsafe {
        hypercall::grant_map(peer, 1, PAGE0, false).map(u64::from)
    });
    if h1.is_some() {
        for i in 0..PAGE_WORDS {
            // SAFETY: PAGE0 is mapped writable until step 4; `i` is in bounds; the store is
            // volatile as the granter shares the frame.
            unsafe { (PAGE0 as *mut u64).add(i).write_volatile(a_word(i)) };
        }
    }
    c.map_fails(
        "map of read-only ref 2 read-write",
        (peer, 2, PAGE1, false),
        &[Perm],
    );
    // SAFETY: nothing in this program refers to PAGE1; it is only read, with volatile loads,
    // and not after the unmap of step 6.
    let h2 = c.works("map of ref 2 read-only", unsafe {
        hypercall::grant_map(peer, 2, PAGE1, true).map(u64::from)
    });
    if h2.is_some() {
        c.that(
            "B's pattern through the read-only mapping",
            // SAFETY: PAGE1 is mapped until step 6.
            unsafe { mapped_page_is(PAGE1, b_word) },
        );
    }
    let page2 = MAP_AREA + 2 * 4096;
    c.map_fails(
        "map of ref 3, granted to Domain0",
        (peer, 3, page2, true),
        &[Perm],
    );
    c.map_fails(
        "map of ref 99, never granted",
        (peer, 99, page2, true),
        &[Inval],
    );
    c.map_fails(
        "map of ref 1 outside MAP_AREA",
        (peer, 1, 0x5000_0000, false),
        &[Inval],
    );
    c.map_fails(
        "map of ref 1 at an unaligned address",
        (peer, 1, page2 + 8, false),
        &[Inval],
    );
    c.map_fails(
        "map of ref 1 at an occupied page",
        (peer, 1, PAGE0, false),
        &[Busy, Inval],
    );
    c.fails(
        "copy into read-only ref 2",
        hypercall::grant_copy_to(peer, 2, 0, &[0xee; 64]),
        &[Perm],
    );
    let mut buf = [0u8; 200];
    c.fails(
        "copy from ref 1 past the end of the page (4000 + 200)",
        hypercall::grant_copy_from(peer, 1, 4000, &mut buf),
        &[Inval],
    );
    let mut buf = [0u8; 256];
    if c.works(
        "copy of 256 bytes at offset 64 from ref 2",
        hypercall::grant_copy_from(peer, 2, 64, &mut buf),
    ) == Some(256)
    {
        c.that(
            "the copied bytes are B's",
            buf.chunks(8)
                .enumerate()
                .all(|(i, w)| w == b_word(8 + i).to_le_bytes()),
        );
    }
    if !hand_over(c, port, "step 4") {
        return;
    }

    // Step 4.
    if let Some(h1) = h1 {
        c.works("unmap of ref 1", hypercall::grant_unmap(h1 as u32));
        c.fails(
            "unmap of ref 1 again",
            hypercall::grant_unmap(h1 as u32),
            &[Inval],
        );
    }
    c.fails(
        "unmap of handle 77, never given",
        hypercall::grant_unmap(77),
        &[Inval],
    );
    if !hand_over(c, port, "step 6") {
        return;
    }

    // Step 6.
    c.map_fails(
        "map of revoked ref 1",
        (peer, 1, PAGE0, false),
        &[Inval, Srch],
    );
    time::sleep_ns(DEATH_WAIT_NS);
    if let Some(h2) = h2 {
        c.that(
            "B's pattern through the mapping, after the granter's death",
            // SAFETY: PAGE1 is still mapped (the unmap is next).
            unsafe { mapped_page_is(PAGE1, b_word) },
        );
        c.works(
            "unmap of ref 2 of the dead granter",
            hypercall::grant_unmap(h2 as u32),
        );
    }
    c.map_fails(
        "map of ref 2 of the dead granter",
        (peer, 2, PAGE1, true),
        &[Srch],
    );
    c.fails(
        "event to the dead granter",
        hypercall::evtchn_send(port),
        &[Inval],
    );
    c.fails(
        "bind to the dead granter's port",
        hypercall::evtchn_bind(peer, PORT).map(u64::from),
        &[Srch],
    );
    c.fails(
        "event on port 5, never allocated",
        hypercall::evtchn_send(5),
        &[Inval],
    );
    c.works("close of our port", hypercall::evtchn_close(port));
    c.fails(
        "event on the closed port",
        hypercall::evtchn_send(port),
        &[Inval],
    );
}

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let me = shared::domain_id();
    let mut c = Checks { wrong: 0 };
    if shared::arg("role", 0) == 0 {
        granter(me, &mut c);
    } else {
        grantee(me, &mut c);
    }
    c.verdict()
}
