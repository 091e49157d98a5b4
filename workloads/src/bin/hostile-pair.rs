//! `hostile-pair`: the cases of the XTF-style hostile suite that take two domains, A (`role`
//! 0) and B (`role` 1, the domain right after A in the spec, so B = A + 1). Argument `case`
//! picks one; both ends report as `workloads::xtf` describes.
//!
//! | case | name | act | right ending |
//! |---|---|---|---|
//! | 0 | event-flood | A sends `rounds` (100000) events on an interdomain port as fast as it can; B takes them in an upcall until A is gone | SUCCESS (both; bystanders keep waking) |
//! | 1 | port-aba | B binds to A's port; A closes it and allocates the same number again for Domain0; B's sends on its old port must fail and reach nothing, binding to the reused number must fail | SUCCESS (both) |
//! | 2 | grant-aba | A grants B a page, B maps and unmaps it, A ends the grant and grants another page to Domain0 under the same reference: B can neither map nor copy it | SUCCESS (both) |
//! | 4 | dying-bind | four A's (2 vCPUs each, the group right before B): vCPU 1 binds to B's ports for it and closes its end, in a loop, while vCPU 0 allocates 1000 ports (its death closes each: a long window) and gets its domain killed (`ud2`); once each A is dead (`alloc_unbound` for it refused), every port of B must be unbound: a send on it refused (`Inval`), never delivered to a dead domain, nor, once its id is reused, to the next domain given it | A: killed: exception 6; B: SUCCESS |
//! | 5 | pending-aba | B binds to A's port and sends once; A, its port masked, sees the event pending, leaves it there, closes the port and allocates the same number again for Domain0: the new port must not start pending (Xen's `evtchn_free` clears a closed port's pending bit), nor get one later | SUCCESS (both) |
//! | 6 | block-upcall | rounds of: B says it is ready (an event to A's masked port), A sends; B, its upcall registered, spins until its port is pending and blocks at once, its upcall not yet entered: the block returns for the event, and the upcall must be entered on the way back, before B's next instruction (`sched/slow-deliver`: each send lingers 500 µs between marking the port pending and B's upcall flag) | SUCCESS (both) |
//! | 7 | quiet-flood | A floods sends on its port to B in two phases; once B's port is pending, each further send must cost B nothing: in the first, B's upcall masked (the port not), it spins reading the clock and counts gaps over 2 µs (interrupts) against 100 ms without the flood; in the second, its port masked, it polls its own timer VIRQ, a timer 10 ms ahead each time, and counts the polls' returns (Xen notifies, IPIs and wakes pollers only when a port or the upcall flag goes from clear to set: before, every send sent B's CPU an IPI, and woke its poll) | SUCCESS (both) |
//! | 8 | close-rebind | A (2 vCPUs) and B bound by port 1: A's vCPU 1 tells B (an event) and closes its end, while B closes its own and binds again to A's port 1, which A's vCPU 0 allocates anew for it; then each side sends on its port 1 and says (a unit of `work`) whether the send was taken: the two must agree, bound at both ends or at neither (`isolation/slow-close`, under `selftest=slow-close`: A's close lingers 20 ms between looking at its end and changing both) | SUCCESS (both), and A's `work` equal to B's |
//! | 9 | timer-upcall | rounds of: B, its upcall registered, says it is ready (an event to A's masked port), arms its timer 350 µs ahead and blocks; A sends 100 µs later. B's timer wakes it while A's send has marked the port pending but not yet B's upcall flag (`sched/slow-timer-deliver`: each send lingers 500 µs between the two): the upcall must be entered on the way back, before B's next instruction | SUCCESS (both) |
//! | 3 | selector-leak | on one CPU: A loads DS, ES, FS and GS with a selector of its own and yields in a loop; B checks its selectors at start are not A's and that the ones it loads stay | SUCCESS (both) |
//!
//! A and B talk through one event channel: A allocates port 1 for B, B binds to it. vCPU 0
//! acts; other vCPUs park.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::error::Errno::{self, Inval, Perm};
use abi::layout::MAP_AREA;
use workloads::split::SharedPage;
use workloads::xtf::{self, Checks};
use workloads::{entry, hypercall, println, rt, shared, time, upcall};

entry!(main);

/// The port A allocates for B (a fresh domain's first port).
const PORT: u32 = 1;
const STEP_NS: u64 = 3_000_000_000;

static EVENTS: AtomicU64 = AtomicU64::new(0);
static X: SharedPage = SharedPage::new();
static Y: SharedPage = SharedPage::new();

fn main(vcpu: usize) -> u64 {
    let case = shared::arg("case", 0);
    let role = shared::arg("role", 0);
    let me = shared::domain_id();
    if case == 4 && role == 0 {
        return dying_bind_a(vcpu, me);
    }
    if case == 8 && role == 0 && vcpu == 1 {
        close_rebind_closer();
    }
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let name = [
        "event-flood",
        "port-aba",
        "grant-aba",
        "selector-leak",
        "dying-bind",
        "pending-aba",
        "block-upcall",
        "quiet-flood",
        "close-rebind",
        "timer-upcall",
    ]
    .get(case as usize)
    .copied()
    .unwrap_or("hostile-pair");
    match (case, role) {
        (0, 0) => with_port(name, true, me + 1, flood_sender),
        (0, _) => with_port(name, false, me - 1, flood_receiver),
        (1, 0) => with_port(name, true, me + 1, port_aba_a),
        (1, _) => with_port(name, false, me - 1, port_aba_b),
        (2, 0) => grant_aba_a(name, me + 1),
        (2, _) => with_port(name, false, me - 1, grant_aba_b),
        (3, 0) => selector_attacker(),
        (3, _) => selector_victim(),
        (4, _) => dying_bind_b(me),
        (5, 0) => with_port(name, true, me + 1, pending_aba_a),
        (5, _) => with_port(name, false, me - 1, pending_aba_b),
        (6, 0) => with_port(name, true, me + 1, block_upcall_a),
        (6, _) => with_port(name, false, me - 1, block_upcall_b),
        (7, 0) => with_port(name, true, me + 1, quiet_flood_a),
        (7, _) => with_port(name, false, me - 1, quiet_flood_b),
        (8, 0) => with_port(name, true, me + 1, close_rebind_a),
        (8, _) => with_port(name, false, me - 1, close_rebind_b),
        (9, 0) => with_port(name, true, me + 1, timer_upcall_a),
        (9, _) => with_port(name, false, me - 1, timer_upcall_b),
        _ => xtf::error(name, format_args!("no case {case} role {role}")),
    }
}

/// A: allocates port 1 for `peer`. B: binds to it, retrying until A has allocated it.
fn connect(role_a: bool, peer: u32) -> Result<u32, Errno> {
    if role_a {
        return hypercall::evtchn_alloc_unbound(peer);
    }
    let until = time::now_ns() + STEP_NS;
    loop {
        match hypercall::evtchn_bind(peer, PORT) {
            Ok(p) => return Ok(p),
            Err(_) if time::now_ns() < until => time::sleep_ns(1_000_000),
            Err(e) => return Err(e),
        }
    }
}

/// Runs role `run` of case `name` (A if `role_a`) with its checks and its port to `peer`
/// ([`connect`]; an ERROR if A gets no port or B cannot bind).
fn with_port(name: &'static str, role_a: bool, peer: u32, run: fn(Checks, u32, u32) -> u64) -> u64 {
    match connect(role_a, peer) {
        Ok(port) => run(Checks::new(name), port, peer),
        Err(_) if role_a => xtf::error(name, format_args!("no port")),
        Err(_) => xtf::error(name, format_args!("cannot bind")),
    }
}

/// Waits up to [`STEP_NS`] for an event on `port`.
fn wait(port: u32) -> bool {
    let until = time::now_ns() + STEP_NS;
    while time::now_ns() < until {
        if shared::take_event(port) {
            return true;
        }
        let _ = hypercall::set_timer(time::now_ns() + 1_000_000);
        hypercall::block();
    }
    false
}

/// Whether an event reaches `port` within `ns`, looked for every millisecond (each taken).
fn event_within(port: u32, ns: u64) -> bool {
    let until = time::now_ns() + ns;
    let mut reached = false;
    while time::now_ns() < until {
        reached |= shared::take_event(port);
        time::sleep_ns(1_000_000);
    }
    reached
}

fn flood_sender(mut c: Checks, port: u32, _: u32) -> u64 {
    let name = c.case();
    if !wait(port) {
        return xtf::error(name, format_args!("the receiver never said it was ready"));
    }
    let rounds = shared::arg("rounds", 100_000);
    let start = time::now_ns();
    let mut failed = 0u64;
    for _ in 0..rounds {
        if hypercall::evtchn_send(port).is_err() {
            failed += 1;
        }
    }
    println!(
        "{rounds} sends in {} ms",
        (time::now_ns() - start) / 1_000_000
    );
    c.eq("sends refused", failed, 0);
    c.verdict()
}

fn count_event(_: usize, _: u32) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

fn flood_receiver(mut c: Checks, port: u32, _: u32) -> u64 {
    let name = c.case();
    if let Err(e) = upcall::register(count_event) {
        return xtf::error(name, format_args!("registering the upcall: {e:?}"));
    }
    let _ = hypercall::evtchn_send(port);
    // Flooded until the sender is gone: its end closes, and a send back fails.
    let until = time::now_ns() + 3 * STEP_NS;
    let mut spins = 0u64;
    while time::now_ns() < until {
        spins += 1;
        if spins.is_multiple_of(4096) && hypercall::evtchn_send(port).is_err() {
            break;
        }
    }
    let events = EVENTS.load(Ordering::Relaxed);
    println!("{events} upcalls while flooded");
    c.that(format_args!("events arrived ({events})"), events > 0);
    c.verdict()
}

fn port_aba_a(mut c: Checks, p: u32, _: u32) -> u64 {
    let name = c.case();
    if !wait(p) {
        return xtf::error(name, format_args!("the peer never bound"));
    }
    c.eq("closing the bound port", hypercall::evtchn_close(p), Ok(0));
    let q = match hypercall::evtchn_alloc_unbound(0) {
        Ok(q) => q,
        Err(e) => return xtf::error(name, format_args!("a new port: {e:?}")),
    };
    println!(
        "closed port {p}, allocated port {q} for Domain0 (reused: {})",
        p == q
    );
    let reached = event_within(q, 600_000_000);
    c.that(
        format_args!("no event reached the reused port {q}"),
        !reached,
    );
    c.verdict()
}

/// Case 5, A: an event sent on its port's old binding must not show on the port's next one.
fn pending_aba_a(mut c: Checks, p: u32, _: u32) -> u64 {
    let name = c.case();
    // Masked: the event stays pending and enters no upcall (none is registered anyway).
    shared::set_mask(p, true);
    let until = time::now_ns() + STEP_NS;
    while !shared::pending(p) && time::now_ns() < until {
        time::sleep_ns(1_000_000);
    }
    if !shared::pending(p) {
        return xtf::error(name, format_args!("the peer's event never came"));
    }
    c.eq(
        "closing the bound port, its event pending",
        hypercall::evtchn_close(p),
        Ok(0),
    );
    let q = match hypercall::evtchn_alloc_unbound(0) {
        Ok(q) => q,
        Err(e) => return xtf::error(name, format_args!("a new port: {e:?}")),
    };
    shared::set_mask(q, false);
    println!("closed port {p} with its event pending, allocated port {q} for Domain0");
    c.eq("the new port is the old number", q, p);
    c.that(
        format_args!("the new port {q} does not start with the old binding's event pending"),
        !shared::pending(q),
    );
    let reached = event_within(q, 300_000_000);
    c.that(format_args!("no event reached port {q} later"), !reached);
    c.verdict()
}

/// Case 5, B: binds, sends once, and sends no more.
fn pending_aba_b(mut c: Checks, pb: u32, _: u32) -> u64 {
    c.eq("the send", hypercall::evtchn_send(pb), Ok(0));
    c.verdict()
}

/// Case 6: how many rounds B waits for A's event before blocking on it.
const BLOCK_UPCALL_ROUNDS: u64 = 200;

/// Case 6, A: a send for each of B's "ready" events, at once.
fn block_upcall_a(c: Checks, p: u32, _: u32) -> u64 {
    send_when_ready(c, p, BLOCK_UPCALL_ROUNDS, 0)
}

/// Cases 6 and 9, A: a send `after_ns` after each of B's "ready" events, taken from its
/// masked port (so that B's events notify nobody here), until B has had its `rounds`.
fn send_when_ready(mut c: Checks, p: u32, rounds: u64, after_ns: u64) -> u64 {
    let name = c.case();
    shared::set_mask(p, true);
    let mut refused = 0u64;
    for round in 0..rounds {
        let until = time::now_ns() + STEP_NS;
        while !shared::take_event(p) {
            if time::now_ns() > until {
                return xtf::error(name, format_args!("B was not ready for round {round}"));
            }
            core::hint::spin_loop();
        }
        time::spin_until(time::now_ns() + after_ns, core::hint::spin_loop);
        if hypercall::evtchn_send(p).is_err() {
            refused += 1;
        }
    }
    c.eq("sends refused", refused, 0);
    c.verdict()
}

/// Case 6, B: each round, once its port is pending and its upcall not yet entered, blocks.
/// The block returns at once (an event is pending for this vCPU); the upcall must have been
/// entered by the time it is back here, as on the way out of any hypercall with an event
/// pending. The sender marks the port pending, then this vCPU's upcall flag: a block that
/// returned for the port between the two went back with no upcall, and the vCPU ran on past
/// the event (xtf-ring's `upcall-idle` once in CI; every round under `selftest=slow-deliver`).
/// A unit of `work` per round that blocked so (the check wants most of them to).
fn block_upcall_b(mut c: Checks, pb: u32, _: u32) -> u64 {
    let name = c.case();
    if let Err(e) = upcall::register(count_event) {
        return xtf::error(name, format_args!("registering the upcall: {e:?}"));
    }
    let _ = hypercall::set_timer(0);
    let (mut blocked, mut early, mut lost) = (0u64, 0u64, 0u64);
    for round in 0..BLOCK_UPCALL_ROUNDS {
        // Long enough for the last round's send to be over: its sender marks this vCPU
        // after the block took the event (500 µs later under `slow-deliver`), an upcall
        // that finds nothing, which must not count as this round's.
        time::spin_until(time::now_ns() + 1_500_000, core::hint::spin_loop);
        let before = upcall::UPCALLS.load(Ordering::SeqCst);
        let _ = hypercall::evtchn_send(pb);
        let until = time::now_ns() + STEP_NS;
        while !shared::pending(pb) && upcall::UPCALLS.load(Ordering::SeqCst) == before {
            if time::now_ns() > until {
                return xtf::error(name, format_args!("A's event for round {round} never came"));
            }
            core::hint::spin_loop();
        }
        if upcall::UPCALLS.load(Ordering::SeqCst) != before {
            early += 1; // the upcall came first: nothing to block for
            continue;
        }
        // A guard: should the upcall come between the look and the block (it takes the
        // event), the block sleeps until this, not for good.
        let _ = hypercall::set_timer(time::now_ns() + 20_000_000);
        let t0 = time::now_ns();
        hypercall::block();
        let (entered, took) = (
            upcall::UPCALLS.load(Ordering::SeqCst) != before,
            time::now_ns() - t0,
        );
        let _ = hypercall::set_timer(0);
        blocked += 1;
        if entered {
            // Back at once, for the event it saw: a block the upcall beat (it took the
            // event before the block, which then slept on its guard) tested nothing.
            if took < 1_000_000 {
                shared::add_work(0, 1);
            }
        } else {
            lost += 1;
            if lost <= 3 {
                println!("round {round}: back from block with the event pending, no upcall");
            }
        }
    }
    println!(
        "{blocked} blocks on a pending event, {early} rounds the upcall came first, \
         {} upcalls",
        upcall::UPCALLS.load(Ordering::SeqCst)
    );
    c.eq(
        "blocks that returned for the event without entering the upcall",
        lost,
        0,
    );
    c.verdict()
}

/// Case 9: B's rounds, its timer's distance when it blocks, and how long A waits after B's
/// "ready" before it sends (so that B is asleep by then, and its timer fires inside the
/// 500 µs `slow-deliver` holds the send between the port and the upcall flag).
const TIMER_UPCALL_ROUNDS: u64 = 200;
const TIMER_UPCALL_WAKE_NS: u64 = 350_000;
const TIMER_UPCALL_SEND_AFTER_NS: u64 = 100_000;

/// Case 9, A: a send [`TIMER_UPCALL_SEND_AFTER_NS`] after each of B's "ready" events.
fn timer_upcall_a(c: Checks, p: u32, _: u32) -> u64 {
    send_when_ready(c, p, TIMER_UPCALL_ROUNDS, TIMER_UPCALL_SEND_AFTER_NS)
}

/// Case 9, B: each round it blocks with nothing pending and its timer 350 µs ahead; A's send
/// comes meanwhile. A timer that woke it while A's send had marked its port but not yet its
/// upcall flag let it run on past the event: the timer's wake-up looked at the vCPU's state
/// alone, and the way back (which looks at the upcall flag) found none (xtf-ring's
/// `upcall-idle`, session 25's CI: its timer on another CPU's heap fired there, its event
/// merged with one in flight). A unit of `work` per round its timer woke it inside A's
/// window with the upcall entered on the way back (the check wants many).
fn timer_upcall_b(mut c: Checks, pb: u32, _: u32) -> u64 {
    let name = c.case();
    if let Err(e) = upcall::register(count_event) {
        return xtf::error(name, format_args!("registering the upcall: {e:?}"));
    }
    let (mut in_window, mut lost, mut other) = (0u64, 0u64, 0u64);
    for round in 0..TIMER_UPCALL_ROUNDS {
        // Long enough for the last round's send to be over and its upcall taken.
        time::spin_until(time::now_ns() + 1_500_000, core::hint::spin_loop);
        let before = upcall::UPCALLS.load(Ordering::SeqCst);
        let _ = hypercall::evtchn_send(pb);
        let t0 = time::now_ns();
        let _ = hypercall::set_timer(t0 + TIMER_UPCALL_WAKE_NS);
        hypercall::block();
        let took = time::now_ns() - t0;
        let entered = upcall::UPCALLS.load(Ordering::SeqCst) != before;
        let _ = hypercall::set_timer(0);
        if !entered && shared::pending(pb) {
            lost += 1;
            if lost <= 3 {
                println!(
                    "round {round}: back from block after {took} ns with the event pending, no upcall"
                );
            }
        } else if entered && took < 2 * TIMER_UPCALL_WAKE_NS {
            // Woken by the timer before A's send marked it (500 µs after the port).
            shared::add_work(0, 1);
            in_window += 1;
        } else {
            other += 1;
        }
    }
    println!(
        "{in_window} timer wake-ups with the event in flight entered the upcall, {other} other rounds"
    );
    c.eq(
        "blocks that returned with the event pending without entering the upcall",
        lost,
        0,
    );
    c.verdict()
}

/// Case 8, A: the step its vCPU 0 has reached (1: B ready, go), and its vCPU 1's (2:
/// closing, 3: closed).
static REBIND_STEP: AtomicU64 = AtomicU64::new(0);

/// Case 8, A's vCPU 1: once B is ready, tells B (an event on port 1) and closes port 1.
fn close_rebind_closer() -> ! {
    let until = time::now_ns() + 3 * STEP_NS;
    while REBIND_STEP.load(Ordering::SeqCst) < 1 && time::now_ns() < until {
        core::hint::spin_loop();
    }
    if REBIND_STEP.load(Ordering::SeqCst) >= 1 {
        let _ = hypercall::evtchn_send(PORT);
        REBIND_STEP.store(2, Ordering::SeqCst);
        let _ = hypercall::evtchn_close(PORT);
        REBIND_STEP.store(3, Ordering::SeqCst);
    }
    rt::park(1)
}

/// Case 8: whether this side's send on its port 1, once things settled, was taken: a unit of
/// `work` if so (the check compares A's with B's).
fn close_rebind_verdict(c: Checks, port: u32) -> u64 {
    time::sleep_ns(50_000_000);
    let taken = hypercall::evtchn_send(port).is_ok();
    println!(
        "its send on port {port}: {}",
        if taken { "taken" } else { "refused" }
    );
    if taken {
        shared::add_work(0, 1);
    }
    c.verdict()
}

/// Case 8, A's vCPU 0: once B is bound and ready, lets vCPU 1 close port 1, and allocates a
/// port for B again while that close is under way (port 1 again, if the close freed it).
fn close_rebind_a(mut c: Checks, p: u32, peer: u32) -> u64 {
    let name = c.case();
    if shared::vcpus() < 2 {
        return xtf::error(name, format_args!("needs 2 vCPUs"));
    }
    shared::set_mask(p, true);
    let until = time::now_ns() + STEP_NS;
    while !shared::take_event(p) {
        if time::now_ns() > until {
            return xtf::error(name, format_args!("B never said it was ready"));
        }
        core::hint::spin_loop();
    }
    REBIND_STEP.store(1, Ordering::SeqCst);
    while REBIND_STEP.load(Ordering::SeqCst) < 2 {
        core::hint::spin_loop();
    }
    time::spin_until(time::now_ns() + 100_000, core::hint::spin_loop);
    let again = hypercall::evtchn_alloc_unbound(peer);
    println!("allocated for B again while vCPU 1 closed port {p}: {again:?}");
    while REBIND_STEP.load(Ordering::SeqCst) < 3 {
        core::hint::spin_loop();
    }
    c.that(
        format_args!("a port for B again ({again:?})"),
        again.is_ok(),
    );
    close_rebind_verdict(c, PORT)
}

/// Case 8, B: says it is ready; on A's event closes its end and binds again to A's port 1.
fn close_rebind_b(c: Checks, pb: u32, peer: u32) -> u64 {
    let name = c.case();
    let _ = hypercall::evtchn_send(pb);
    let until = time::now_ns() + STEP_NS;
    while !shared::pending(pb) {
        if time::now_ns() > until {
            return xtf::error(name, format_args!("A never said it was closing"));
        }
        core::hint::spin_loop();
    }
    let _ = hypercall::evtchn_close(pb);
    let until = time::now_ns() + 20_000_000;
    let again = loop {
        match hypercall::evtchn_bind(peer, PORT) {
            Ok(p) => break Some(p),
            Err(_) if time::now_ns() < until => core::hint::spin_loop(),
            Err(_) => break None,
        }
    };
    println!("bound again to A's port {PORT}: {again:?}");
    close_rebind_verdict(c, again.unwrap_or(pb))
}

/// Case 7: how long each of A's floods lasts, and how long B measures in each phase.
const FLOOD_NS: u64 = 200_000_000;
const QUIET_MEASURE_NS: u64 = 100_000_000;

/// Case 7, A: for each of B's two "ready" events (on its masked port), sends on the port as
/// fast as it can for [`FLOOD_NS`].
fn quiet_flood_a(mut c: Checks, p: u32, _: u32) -> u64 {
    let name = c.case();
    shared::set_mask(p, true);
    let (mut sent, mut refused) = (0u64, 0u64);
    for phase in 1..=2 {
        let until = time::now_ns() + STEP_NS;
        while !shared::take_event(p) {
            if time::now_ns() > until {
                return xtf::error(name, format_args!("B was not ready for phase {phase}"));
            }
            core::hint::spin_loop();
        }
        let end = time::now_ns() + FLOOD_NS;
        while time::now_ns() < end {
            if hypercall::evtchn_send(p).is_err() {
                // B ends once its second phase is measured: its port goes with it.
                if phase == 1 {
                    refused += 1;
                } else {
                    break;
                }
            }
            sent += 1;
        }
    }
    println!("{sent} sends");
    c.eq("sends refused while B measured", refused, 0);
    c.verdict()
}

/// Gaps over 2 µs between two clock reads in a spin of `ns` (each an interrupt, or the host
/// not running this emulated CPU).
fn gaps(ns: u64) -> u64 {
    let (start, mut last, mut n) = (time::now_ns(), time::now_ns(), 0);
    while last < start + ns {
        let now = time::now_ns();
        if now - last > 2_000 {
            n += 1;
        }
        last = now;
    }
    n
}

/// Case 7, B: A's sends once its port is pending must neither interrupt it (its upcall
/// masked) nor wake its poll on another port (its port masked).
fn quiet_flood_b(mut c: Checks, pb: u32, _: u32) -> u64 {
    let name = c.case();
    if let Err(e) = upcall::register(count_event) {
        return xtf::error(name, format_args!("registering the upcall: {e:?}"));
    }
    // Phase 1: upcalls masked, the port not. The first send marks it pending and the upcall
    // flag set; the rest find both set.
    shared::set_upcall_mask(0, true);
    let quiet = gaps(QUIET_MEASURE_NS);
    let _ = hypercall::evtchn_send(pb);
    let flooded = gaps(QUIET_MEASURE_NS);
    println!("clock gaps over 2 µs in 100 ms: {quiet} alone, {flooded} while A floods");
    c.that(
        format_args!(
            "A's sends to a pending port interrupted B no more than its own timer did \
             ({flooded} gaps while flooded, {quiet} alone)"
        ),
        flooded <= 4 * quiet + 100,
    );
    // Let A's first flood end; then the port masked and clear, the upcall unmasked (it runs
    // once for the flag the first flood left, and finds nothing).
    time::spin_until(time::now_ns() + FLOOD_NS, core::hint::spin_loop);
    shared::set_mask(pb, true);
    shared::take_event(pb);
    shared::set_upcall_mask(0, false);
    hypercall::null();
    // Phase 2: poll the timer VIRQ's port alone, while A floods the masked port.
    let tport = match hypercall::evtchn_bind_virq(abi::hypercall::virq::TIMER) {
        Ok(p) => p,
        Err(e) => return xtf::error(name, format_args!("binding the timer VIRQ: {e:?}")),
    };
    shared::set_mask(tport, true);
    let _ = hypercall::evtchn_send(pb);
    let (start, mut polls) = (time::now_ns(), 0u64);
    while time::now_ns() < start + QUIET_MEASURE_NS {
        let _ = hypercall::set_timer(time::now_ns() + 10_000_000);
        let _ = hypercall::poll(&[tport]);
        shared::take_event(tport);
        polls += 1;
    }
    let _ = hypercall::set_timer(0);
    println!("{polls} polls of a 10 ms timer in 100 ms while A floods a masked port");
    c.that(
        format_args!(
            "A's sends to a masked, pending port did not wake B's poll of another port \
             ({polls} polls in 100 ms, its timer every 10 ms)"
        ),
        polls <= 30,
    );
    // Both phases measured: a unit of `work` (a domain still running also ends `ok`).
    shared::add_work(0, 1);
    c.verdict()
}

fn port_aba_b(mut c: Checks, pb: u32, peer: u32) -> u64 {
    c.eq("the first send", hypercall::evtchn_send(pb), Ok(0));
    time::sleep_ns(200_000_000);
    let mut ok = 0;
    for _ in 0..100 {
        if hypercall::evtchn_send(pb).is_ok() {
            ok += 1;
        }
    }
    c.eq("sends accepted after the peer closed its end", ok, 0);
    c.one_of(
        "binding to the reused port (allocated for Domain0)",
        hypercall::evtchn_bind(peer, PORT),
        &[Err(Inval), Err(Perm)],
    );
    c.verdict()
}

fn grant_aba_a(name: &str, peer: u32) -> u64 {
    let mut c = Checks::new("grant-aba");
    let g1 = match X.grant(peer, false) {
        Ok(g) => g,
        Err(e) => return xtf::error(name, format_args!("granting: {e:?}")),
    };
    let Ok(port) = connect(true, peer) else {
        return xtf::error(name, format_args!("no port"));
    };
    if !wait(port) {
        return xtf::error(name, format_args!("the peer never mapped and unmapped"));
    }
    c.eq("ending the grant", hypercall::grant_end(g1), Ok(0));
    for w in Y.words() {
        w.store(0x5ec2_e75e_c2e7_5ec2, Ordering::Relaxed);
    }
    let g2 = match Y.grant(0, false) {
        Ok(g) => g,
        Err(e) => return xtf::error(name, format_args!("granting again: {e:?}")),
    };
    println!(
        "reference {g1} ended, {g2} granted to Domain0 (reused: {})",
        g1 == g2
    );
    let _ = hypercall::evtchn_send(port);
    let _ = wait(port);
    c.that(format_args!("the peer finished"), true);
    c.verdict()
}

fn grant_aba_b(mut c: Checks, port: u32, peer: u32) -> u64 {
    let name = c.case();
    // SAFETY: MAP_AREA is used by nothing else here; the page is read only atomically.
    let h = unsafe { hypercall::grant_map(peer, 1, MAP_AREA, false) };
    c.that(format_args!("mapping the granted page: {h:?}"), h.is_ok());
    if let Ok(h) = h {
        c.eq("unmapping it", hypercall::grant_unmap(h), Ok(0));
    }
    let _ = hypercall::evtchn_send(port);
    if !wait(port) {
        return xtf::error(name, format_args!("the granter never re-granted"));
    }
    // SAFETY: as above; a mapping made wrongly is unmapped at once, never read.
    let again = unsafe { hypercall::grant_map(peer, 1, MAP_AREA, true) };
    c.one_of(
        "mapping the reused reference",
        again.map(|_| 0),
        &[Err(Perm), Err(Inval)],
    );
    if let Ok(h) = again {
        let _ = hypercall::grant_unmap(h);
    }
    let mut buf = [0u8; 16];
    let copy = hypercall::grant_copy_from(peer, 1, 0, &mut buf);
    c.one_of(
        "copying from the reused reference",
        copy,
        &[Err(Perm), Err(Inval)],
    );
    c.that(
        format_args!("no secret copied ({:x?})", &buf[..8]),
        buf[0] != 0xc2,
    );
    let _ = hypercall::evtchn_send(port);
    c.verdict()
}

fn read_sel() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reads four selectors.
    unsafe {
        asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
             out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, options(nomem, nostack))
    };
    [ds, es, fs, gs]
}

fn load_sel(s: [u16; 4]) {
    // SAFETY: loads selectors the caller checked with `verr`; in 64-bit mode they change
    // nothing Rust relies on (the FS and GS bases become 0; nothing here uses them).
    unsafe {
        asm!("mov ds, {0:x}", "mov es, {1:x}", "mov fs, {2:x}", "mov gs, {3:x}",
             in(reg) s[0], in(reg) s[1], in(reg) s[2], in(reg) s[3], options(nomem, nostack))
    };
}

fn readable(sel: u16) -> bool {
    let ok: u8;
    // SAFETY: `verr` only sets ZF.
    unsafe { asm!("verr {0:x}", "setz {1}", in(reg) sel, out(reg_byte) ok) };
    ok != 0
}

/// The selector A loads: the 64-bit user code segment (readable) if the CPU lets ring 3
/// load it into a data register, else the user data segment.
fn attacker_selector() -> u16 {
    if readable(0x2b) { 0x2b } else { 0x23 }
}

fn selector_attacker() -> u64 {
    let sel = attacker_selector();
    let until = time::now_ns() + 800_000_000;
    let mut rounds = 0u64;
    while time::now_ns() < until {
        load_sel([sel; 4]);
        let spin = time::now_ns() + 50_000;
        while time::now_ns() < spin {
            core::hint::spin_loop();
        }
        hypercall::yield_now();
        rounds += 1;
    }
    load_sel([0; 4]);
    xtf::success(
        "selector-leak",
        format_args!("attacker loaded {sel:#x} into DS, ES, FS, GS {rounds} times"),
    )
}

fn selector_victim() -> u64 {
    let mut c = Checks::new("selector-leak");
    let theirs = attacker_selector();
    let start = read_sel();
    println!("selectors at start: DS, ES, FS, GS = {start:#x?}");
    c.that(
        format_args!("no selector at start is the attacker's {theirs:#x}: {start:#x?}"),
        !start.contains(&theirs),
    );
    // Its own: the null selector and, where the attacker uses 0x2b, the data segment.
    let mine = if theirs == 0x2b {
        [0x23, 0, 0x23, 0]
    } else {
        [0, 0, 0, 0]
    };
    load_sel(mine);
    let until = time::now_ns() + 800_000_000;
    let (mut rounds, mut changed) = (0u64, 0u64);
    let mut seen = mine;
    while time::now_ns() < until {
        hypercall::yield_now();
        let now = read_sel();
        if now != mine {
            changed += 1;
            seen = now;
            load_sel(mine);
        }
        rounds += 1;
    }
    c.that(
        format_args!(
            "its selectors {mine:#x?} changed behind its back {changed} times in {rounds} \
             yields (last seen {seen:#x?})"
        ),
        changed == 0,
    );
    load_sel([0; 4]);
    c.verdict()
}

/// The A's of `dying-bind`, the group right before B.
const DYING: u32 = 4;
/// Ports B allocates for each A.
const DYING_PORTS: u32 = 8;
/// Set by an A's vCPU 1 once it has bound at least once.
static BOUND: AtomicU64 = AtomicU64::new(0);

/// A (the `index_in_group`-th of [`DYING`]): vCPU 1 binds to its ports at B and closes its
/// end, over and over; vCPU 0 dies in the middle of it. The event channels a domain holds
/// close when it dies (`end_domain`): a bind that lands after that must be refused, or B is
/// left with a port bound to a dead domain's id, which the next domain given that id
/// inherits.
fn dying_bind_a(vcpu: usize, me: u32) -> u64 {
    const CASE: &str = "dying-bind";
    let index = xtf::index_in_group() as u32;
    let b = me + (DYING - index);
    let first = 1 + index * DYING_PORTS;
    if vcpu == 1 {
        loop {
            for p in first..first + DYING_PORTS {
                if let Ok(local) = hypercall::evtchn_bind(b, p) {
                    BOUND.fetch_add(1, Ordering::SeqCst);
                    let _ = hypercall::evtchn_close(local);
                }
            }
        }
    }
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let until = time::now_ns() + STEP_NS;
    while BOUND.load(Ordering::SeqCst) == 0 && time::now_ns() < until {
        hypercall::yield_now();
    }
    if BOUND.load(Ordering::SeqCst) == 0 {
        return xtf::error(CASE, format_args!("vCPU 1 never bound to B's ports"));
    }
    // Many ports of its own, for Domain0: its death closes each, which takes a while, and
    // vCPU 1 keeps binding meanwhile.
    let mut held = 0;
    while held < 1000 && hypercall::evtchn_alloc_unbound(0).is_ok() {
        held += 1;
    }
    time::sleep_ns(30_000_000);
    xtf::expect_killed(CASE, "ud2 (exception 6) while vCPU 1 binds to B's ports");
    // Dies while vCPU 1 is seen binding on the other CPU, now.
    let until = time::now_ns() + STEP_NS;
    let mut seen = BOUND.load(Ordering::SeqCst);
    loop {
        let now = BOUND.load(Ordering::SeqCst);
        if now.wrapping_sub(seen) >= 2 || time::now_ns() > until {
            break;
        }
        if now == seen {
            core::hint::spin_loop();
        } else {
            seen = now - 1;
        }
    }
    // SAFETY: #UD in ring 3 kills the domain; that is the case.
    unsafe { asm!("ud2") };
    xtf::survived(CASE, format_args!("ud2"))
}

/// B: allocates [`DYING_PORTS`] ports for each A, waits for every A to be dead, then checks
/// that none of its ports is still bound.
fn dying_bind_b(me: u32) -> u64 {
    const CASE: &str = "dying-bind";
    let mut c = Checks::new(CASE);
    let first_a = me - DYING;
    for a in first_a..me {
        for _ in 0..DYING_PORTS {
            if let Err(e) = hypercall::evtchn_alloc_unbound(a) {
                return xtf::error(CASE, format_args!("allocating a port for {a}: {e:?}"));
            }
        }
    }
    let until = time::now_ns() + 3 * STEP_NS;
    let dead = |a: u32| hypercall::evtchn_alloc_unbound(a) == Err(Errno::Srch);
    while !(first_a..me).all(dead) && time::now_ns() < until {
        time::sleep_ns(5_000_000);
    }
    // Their vCPUs leave their CPUs within a kick.
    time::sleep_ns(50_000_000);
    c.that(format_args!("every A is dead"), (first_a..me).all(dead));
    let mut bound = 0;
    for p in 1..=DYING * DYING_PORTS {
        let sent = hypercall::evtchn_send(p);
        if sent != Err(Inval) {
            println!("port {p}: send {sent:?}, want Err(Inval)");
            bound += 1;
        }
    }
    c.eq("ports still bound to a dead domain", bound, 0);
    c.verdict()
}
