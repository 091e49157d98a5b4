//! `hostile-sched`: the scheduler-abuse and exhaustion classes of the XTF-style hostile
//! suite. Argument `case` picks one, `rounds` (100000) sizes the storms; each ends as
//! `workloads::xtf` describes (`scripts/runner/src/xtf.rs` has the right ending of each).
//! Their bystanders (a `latency` domain beside them) must keep waking up.
//!
//! | case | name | act | right ending |
//! |---|---|---|---|
//! | 0 | timer-storm | every vCPU sets `rounds` timers, far-future and past deadlines in turn, then arms one 1 ms ahead and blocks: that last one must fire (one timer slot per vCPU: a re-arm replaces it); repeated for 600 ms | SUCCESS |
//! | 1 | poll-after-fired | a timer that fires while the vCPU is awake, then `poll` on a port that never fires: `poll` must return as `block` does | SUCCESS |
//! | 2 | yield-storm | every vCPU yields in a loop for 600 ms | SUCCESS |
//! | 3 | block-storm | `rounds` times: a past deadline, then `block` (must return at once) | SUCCESS |
//! | 4 | exhaust-ports | allocates ports until refused (`NoMem`), closes them all, allocates as many again | SUCCESS |
//! | 5 | exhaust-grants | grants one page to Domain0 until refused, ends them all, grants as many again | SUCCESS |
//! | 6 | exhaust-memory | takes frames until none is left within its limit, gives them all back, twice: the same count each time | SUCCESS |
//! | 7 | virq-flood | timer VIRQ with an upcall: `rounds` past deadlines, each an event and an upcall | SUCCESS |
//! | 8 | timer-edges | deadlines 2^64 - 1, 2^64 - 2, 2^63, 1 and 0 (cancel), polls on ports 0, 1023, 1024 and 2^32 - 1: then a timer 1 ms ahead must still fire, and `poll` on a due timer return; a timer set for 1 ns (the hypervisor's mark of a fired timer) and polled at once must have sent its VIRQ by the time `poll` returns, 100 times | SUCCESS |
//! | 9 | shutdown-race | vCPU 1 loops over page-table updates, grants, events and reservations while vCPU 0 shuts the domain down 20 ms in (2 vCPUs; a spec runs several): every frame must come back | SUCCESS (printed before the shutdown) |
//! | 10 | kill-race | the same, but vCPU 0 gets the domain killed (`ud2`) | killed: exception 6 |
//! | 11 | console-flood | 400 console lines of 200 bytes at once (80 KB): the console quota must refuse some (`Again`), and the domain carry on | SUCCESS |
//! | 12 | pause-escape | 6 vCPUs (2 to 8), each calling `vcpu_op Up` on the other in a loop while Domain0 pauses the domain 3 times for 300 ms, 500 ms apart (the timeline of `xtf-pause.toml`): each vCPU must see every pause as a stop of at least 200 ms, and run on until 3.2 s after its start, through a move to another pool; a `vcpu_op Up` that unpauses what Domain0 paused lets the domain run through its pauses | SUCCESS |
//! | 13 | console-lines | 400 console writes of 256 bytes of `\n` at once, each byte a line the hypervisor logs with its ~30-byte prefix and the domain's name: the quota must count those lines at what they cost the serial port, so that at most [`CONSOLE_MIN_LINE_COST`]-th of the burst gets out as lines, not a line per byte of quota (8192 empty lines, ~40x the quota's bytes) | SUCCESS |
//! | 14 | console-bound | console writes the serial port pays for most: 64 empty lines, a line of 200 `ESC` bytes (shown escaped, four bytes each), terminal escapes (CSI, OSC, `\r`, C1 CSI), then 40 numbered lines `cb NNN` in writes of whole lines up to 256 bytes; every call must cost at most `CONSOLE_CALL_BYTES` serial bytes (`abi::hypercall::console_line_cost` of what it took), the empty lines need several calls, and every byte must get out (short writes continued); the runner checks that no control character reached the console and that the numbered lines came in order, none missing | SUCCESS |
//! | 15 | kill-picked | the other vCPUs go down, arm a timer a few µs ahead and block, yield, in a loop, while vCPU 0 brings them up again and again and, `kill_us` µs in (0: 200 to 3,000 µs, from the clock), gets the domain killed (`ud2`): the kill lands while one of them is picked, claimed, leaving, down or asleep on the other CPU (churn: Domain0 then destroys the domain at once) | killed: exception 6 |
//! | 16 | spin-masked | masks its upcall and spins in ring 3 for `spin_ms` ms (1500), reading the clock from the shared-info page: no hypercall, no fault, no upcall, so the only way its CPU enters the hypervisor is an interrupt. Beside it, alone on its CPU (no switch there either), Domain0 replaces a pool's policy, whose old instance it frees a grace period later, and destroys a domain bound to a peer (`xtf-grace.toml`): every grace period must still end (`arch::rcu`: the entry of the CPU's timer interrupt, or of the grace period's IPI, is a quiescent point), or the machine stops | SUCCESS |
//! | 17 | block-pending | its timer VIRQ left pending, `block` in a loop for `spin_ms` ms (1500), 100 µs of work between: each block returns at once (an event is pending) and the vCPU is picked again where it ran; the hypervisor must count it running all along, not waiting (`block-pending.toml`: its `wait_ns` near 0 alone on a CPU) | SUCCESS |
//! | 18 | poll-wakes | 3 vCPUs: vCPU 1 polls vCPU 0's timer VIRQ port, masked in a first round, unmasked (but bound to vCPU 0) in a second, masked in a third while vCPU 2's timer events on another port wake it every 40 µs, its own timer 1 s ahead as a guard; vCPU 0, once vCPU 1 is off its CPU, sets its timer due: each poll must end within 300 ms of that event, not on the guard (Xen's `evtchn_check_pollers` wakes a poller whatever the port's mask and vCPU) | SUCCESS |
//! | 19 | console-steady | for `spin_ms` ms (1500), console lines of 200 bytes as fast as its quota takes them (on `Again`, 5 ms asleep): under `selftest=slow-uart` (the port as slow as a real 115200-baud UART) each line is ~20 ms of the port's time, which a call once spent on its CPU with interrupts off (`console-stall.toml`: its CPU's neighbours must keep their periods) | SUCCESS |
//! | 21 | pending-storm | its timer VIRQ left pending, every vCPU for 600 ms: `set_timer` 1 s ahead, then `poll` on that port or `block` in turn, each returning at once (`timer-storm-costs.toml`: a `set_timer` must count in the run record's `set_timer_time` only when its vCPU then sleeps, and a block's or poll's return at once is no sleep) | SUCCESS |
//! | 20 | lookup-storm | every vCPU calls `memory_op MaximumReservation` back to back for `spin_ms` ms (1500): each call looks its domain up in the hypervisor's domain table, a read of its lock, while Domain0 destroys other domains (a write): under `selftest=slow-lookup` (each guest read held 5 ms) the reads overlap and a writer that waits for no reader at all gets in only when they happen to end together (`lookup-storm.toml`) | SUCCESS |
//!
//! vCPU 0 reports; in the storms every vCPU acts.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use abi::error::Errno;
use workloads::xtf::{self, Checks};
use workloads::{entry, hypercall, println, rt, shared, time, upcall};

entry!(main);

/// vCPUs other than 0 that finished their part of a storm.
static DONE: AtomicU64 = AtomicU64::new(0);
/// vCPUs whose last timer never fired within 1 s (the run would hang instead, but a block
/// may also return on something else).
static LATE: AtomicU64 = AtomicU64::new(0);
/// Upcalls taken in `virq-flood`.
static EVENTS: AtomicU64 = AtomicU64::new(0);

const STORM_NS: u64 = 600_000_000;

fn main(vcpu: usize) -> u64 {
    let case = shared::arg("case", 0);
    let rounds = shared::arg("rounds", 100_000);
    match case {
        0 => timer_storm(vcpu, rounds),
        2 => yield_storm(vcpu),
        9 | 10 => end_race(vcpu, case == 10),
        12 => pause_escape(vcpu),
        15 => kill_picked(vcpu),
        20 => lookup_storm(vcpu),
        18 => poll_wakes(vcpu),
        21 => pending_storm(vcpu),
        _ if vcpu != 0 => rt::park(vcpu),
        1 => poll_after_fired(),
        3 => block_storm(rounds),
        4 => exhaust_ports(),
        5 => exhaust_grants(),
        6 => exhaust_memory(),
        7 => virq_flood(rounds),
        8 => timer_edges(),
        11 => console_flood(),
        13 => console_lines(),
        14 => console_bound(),
        16 => spin_masked(),
        17 => block_pending(),
        19 => console_steady(),
        _ => xtf::error("hostile-sched", format_args!("no case {case}")),
    }
}

/// vCPU 0 waits for the others to finish their part, then reports with `verdict`.
fn join(vcpu: usize, verdict: impl FnOnce() -> u64) -> u64 {
    if vcpu != 0 {
        DONE.fetch_add(1, Ordering::SeqCst);
        rt::park(vcpu);
    }
    let others = u64::from(shared::vcpus()) - 1;
    while DONE.load(Ordering::SeqCst) < others {
        hypercall::yield_now();
    }
    verdict()
}

fn timer_storm(vcpu: usize, rounds: u64) -> u64 {
    let start = time::now_ns();
    let (mut storms, mut sets) = (0u64, 0u64);
    while time::now_ns() < start + STORM_NS {
        let now = time::now_ns();
        for i in 0..rounds {
            let deadline = if i % 2 == 0 {
                now + 1_000_000_000_000 + i
            } else {
                1 + i
            };
            let _ = hypercall::set_timer(deadline);
        }
        sets += rounds;
        // The last armed timer replaces all of those: it must fire.
        let deadline = time::now_ns() + 1_000_000;
        let _ = hypercall::set_timer(deadline);
        while time::now_ns() < deadline {
            hypercall::block();
        }
        if time::now_ns() > deadline + 1_000_000_000 {
            LATE.fetch_add(1, Ordering::SeqCst);
        }
        storms += 1;
        shared::add_work(vcpu, 1);
    }
    println!("vCPU {vcpu}: {storms} storms, {sets} timers set, each last one fired");
    join(vcpu, || {
        let mut c = Checks::new("timer-storm");
        c.eq(
            "vCPUs whose last timer was over 1 s late",
            LATE.load(Ordering::SeqCst),
            0,
        );
        c.verdict()
    })
}

fn yield_storm(vcpu: usize) -> u64 {
    let start = time::now_ns();
    let mut n = 0u64;
    while time::now_ns() < start + STORM_NS {
        hypercall::yield_now();
        n += 1;
        if n.is_multiple_of(1024) {
            shared::add_work(vcpu, 1024);
        }
    }
    println!("vCPU {vcpu}: {n} yields");
    join(vcpu, || {
        xtf::success("yield-storm", format_args!("survived its own yields"))
    })
}

fn poll_after_fired() -> u64 {
    let mut c = Checks::new("poll-after-fired");
    // A port nobody will ever send on: unbound, for Domain0.
    let port = match hypercall::evtchn_alloc_unbound(0) {
        Ok(p) => p,
        Err(e) => return xtf::error("poll-after-fired", format_args!("a port: {e:?}")),
    };
    for (what, with_poll) in [("block", false), ("poll", true)] {
        let deadline = time::now_ns() + 100_000;
        let _ = hypercall::set_timer(deadline);
        // Awake while it fires.
        time::spin_until(deadline + 2_000_000, core::hint::spin_loop);
        println!("timer fired while awake; now {what} (a hang here is the failure)");
        if with_poll {
            let _ = hypercall::poll(&[port]);
        } else {
            hypercall::block();
        }
        c.that(
            format_args!("{what} returned after a timer that had fired"),
            true,
        );
    }
    c.verdict()
}

fn block_storm(rounds: u64) -> u64 {
    let mut c = Checks::new("block-storm");
    let start = time::now_ns();
    for i in 0..rounds {
        let _ = hypercall::set_timer(1 + i);
        hypercall::block();
    }
    let took = time::now_ns() - start;
    println!(
        "{rounds} blocks on past deadlines in {} ms",
        took / 1_000_000
    );
    c.that(format_args!("every block returned"), true);
    c.verdict()
}

/// Binds the calling vCPU's timer VIRQ and leaves its event pending: a past deadline, which
/// the block after it takes and sends, and which nothing clears. Returns the port.
fn timer_event_left_pending() -> Result<u32, &'static str> {
    let port = hypercall::evtchn_bind_virq(abi::hypercall::virq::TIMER)
        .map_err(|_| "binding the timer VIRQ was refused")?;
    let _ = hypercall::set_timer(time::now_ns().saturating_sub(1000).max(2));
    hypercall::block();
    Ok(port)
}

/// An event left pending, then `block` again and again: each returns at once, its vCPU
/// picked again on its own CPU.
fn block_pending() -> u64 {
    let mut c = Checks::new("block-pending");
    let port = match timer_event_left_pending() {
        Ok(p) => p,
        Err(e) => return xtf::error("block-pending", format_args!("{e}")),
    };
    let until = time::now_ns() + shared::arg("spin_ms", 1500) * 1_000_000;
    let mut blocks = 0u64;
    while time::now_ns() < until {
        time::spin_until(time::now_ns() + 100_000, core::hint::spin_loop);
        hypercall::block();
        blocks += 1;
    }
    println!("{blocks} blocks with an event pending");
    c.that(
        format_args!("the timer's event stayed pending"),
        shared::pending(port),
    );
    c.verdict()
}

/// `pending-storm`: a `set_timer` a sleeper's kind (1 s ahead), then a `poll` or a `block`
/// that returns at once on the timer event left pending, over and over. Before, the
/// hypervisor counted each such `set_timer` as a sleeper's (`set_timer_time`, which prices
/// every domain's in `schedsim --costs-from`), and each block's return as a wake-up: the
/// run record then counted the storm's calls and `isolation/timer-storm-costs`, judging
/// them against every domain's wake-ups, passed.
fn pending_storm(vcpu: usize) -> u64 {
    let port = match timer_event_left_pending() {
        Ok(p) => p,
        Err(e) => return xtf::error("pending-storm", format_args!("{e}")),
    };
    let start = time::now_ns();
    let (mut polls, mut blocks, mut slept) = (0u64, 0u64, 0u64);
    while time::now_ns() < start + STORM_NS {
        let _ = hypercall::set_timer(time::now_ns() + 1_000_000_000);
        let before = time::now_ns();
        if (polls + blocks) % 2 == 0 {
            let _ = hypercall::poll(&[port]);
            polls += 1;
        } else {
            hypercall::block();
            blocks += 1;
        }
        if time::now_ns() > before + 500_000_000 {
            slept += 1;
        }
        shared::add_work(vcpu, 1);
    }
    println!("vCPU {vcpu}: {polls} polls and {blocks} blocks on a pending event");
    join(vcpu, || {
        let mut c = Checks::new("pending-storm");
        c.that(
            format_args!("the timer's event stayed pending"),
            shared::pending(port),
        );
        c.eq("polls or blocks that slept to their timer", slept, 0);
        c.verdict()
    })
}

/// `poll-wakes`: the port vCPU 1 polls (vCPU 0's timer VIRQ), the round vCPU 0 has set up,
/// the round vCPU 1 polls in, and the round it finished, with when its poll ended.
static POLL_PORT: AtomicU64 = AtomicU64::new(0);
/// `poll-wakes`: vCPU 2's timer VIRQ port, masked, whose events wake the poller in round 3.
static STORM_PORT: AtomicU64 = AtomicU64::new(0);
static POLL_READY: AtomicU64 = AtomicU64::new(0);
static POLLING: AtomicU64 = AtomicU64::new(0);
static POLL_DONE: AtomicU64 = AtomicU64::new(0);
static POLL_ENDED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// How long after its event a poll may end (its guard timer is 1 s ahead; `poll-race.toml`
/// gives each vCPU a CPU: in `xtf-sched`, 36 domains on 2 CPUs, a woken poller once waited
/// longer than this behind the others).
const POLL_WAKE_NS: u64 = 300_000_000;
const POLL_GUARD_NS: u64 = 1_000_000_000;

fn poll_wakes(vcpu: usize) -> u64 {
    let wait_for = |flag: &AtomicU64, round: u64| {
        let until = time::now_ns() + 3 * POLL_GUARD_NS;
        while flag.load(Ordering::SeqCst) < round && time::now_ns() < until {
            core::hint::spin_loop();
        }
        flag.load(Ordering::SeqCst) >= round
    };
    if vcpu == 2 {
        // The third round's storm: its own timer's events (on a masked port of its own)
        // every 40 µs, each waking the poller for nothing, until vCPU 1's round ends.
        if wait_for(&POLL_READY, 3) {
            let until = time::now_ns() + 3 * POLL_GUARD_NS;
            while POLL_DONE.load(Ordering::SeqCst) < 3 && time::now_ns() < until {
                // Taken, so that each timer event sets the port anew: a send to a port
                // already pending is merged, and wakes nobody.
                shared::take_event(STORM_PORT.load(Ordering::SeqCst) as u32);
                let _ = hypercall::set_timer(time::now_ns() + 20_000);
                time::spin_until(time::now_ns() + 40_000, core::hint::spin_loop);
            }
        }
        rt::park(vcpu);
    }
    if vcpu == 1 {
        for round in 1..=3 {
            if !wait_for(&POLL_READY, round) {
                break;
            }
            let port = POLL_PORT.load(Ordering::SeqCst) as u32;
            let start = time::now_ns();
            // Its own timer: a guard, so that a lost wake-up ends the poll late, not never.
            let _ = hypercall::set_timer(start + POLL_GUARD_NS);
            POLLING.store(round, Ordering::SeqCst);
            while !shared::pending(port) && time::now_ns() < start + POLL_GUARD_NS * 6 / 5 {
                let _ = hypercall::poll(&[port]);
            }
            let _ = hypercall::set_timer(0);
            POLL_ENDED[round as usize].store(time::now_ns(), Ordering::SeqCst);
            POLL_DONE.store(round, Ordering::SeqCst);
        }
        rt::park(vcpu);
    }
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let mut c = Checks::new("poll-wakes");
    if shared::vcpus() < 3 {
        return xtf::error("poll-wakes", format_args!("needs 3 vCPUs"));
    }
    let bind = |vcpu| hypercall::evtchn_bind_virq_vcpu(abi::hypercall::virq::TIMER, vcpu);
    let (port, storm) = match (bind(0), bind(2)) {
        (Ok(p), Ok(q)) => (p, q),
        (Err(e), _) | (_, Err(e)) => {
            return xtf::error("poll-wakes", format_args!("binding the timer VIRQ: {e:?}"));
        }
    };
    shared::set_mask(storm, true);
    STORM_PORT.store(u64::from(storm), Ordering::SeqCst);
    POLL_PORT.store(u64::from(port), Ordering::SeqCst);
    // Rounds: vCPU 0's port masked; unmasked (its events notify vCPU 0 alone); masked,
    // with vCPU 2's events on another port waking the poller over and over meanwhile.
    for (round, masked) in [(1u64, true), (2, false), (3, true)] {
        shared::set_mask(port, masked);
        shared::take_event(port);
        POLL_READY.store(round, Ordering::SeqCst);
        if !wait_for(&POLLING, round) {
            return xtf::error("poll-wakes", format_args!("vCPU 1 never polled"));
        }
        // Until vCPU 1 is off its CPU (its CPU time stands still for 1 ms): asleep in its
        // poll, most likely. Then the event.
        let until = time::now_ns() + POLL_WAKE_NS;
        let mut ran = time::vcpu_time_ns(1);
        while time::now_ns() < until {
            time::spin_until(time::now_ns() + 1_000_000, core::hint::spin_loop);
            let now_ran = time::vcpu_time_ns(1);
            if now_ran == ran {
                break;
            }
            ran = now_ran;
        }
        let sent = time::now_ns();
        let _ = hypercall::set_timer(sent);
        let done = wait_for(&POLL_DONE, round);
        let took = POLL_ENDED[round as usize]
            .load(Ordering::SeqCst)
            .saturating_sub(sent);
        let held = c.that(
            format_args!(
                "a poll on vCPU 0's {} timer port{} ended {} µs after its event",
                if masked { "masked" } else { "unmasked" },
                if round == 3 {
                    " among other events"
                } else {
                    ""
                },
                took / 1000
            ),
            done && took < POLL_WAKE_NS,
        );
        // A unit of work per round that held: a run that ends before the last round
        // reports (a poll stuck on its guard) shows fewer than 3 (`sched/poll-wakes`).
        if held {
            shared::add_work(0, 1);
        }
    }
    c.verdict()
}

/// Takes one object at a time (`take`, given how many it holds) until it is refused or holds
/// `most`: the refusal must be `NoMem` or `TooBig` (`refusal`), and must come (`bound`, which
/// fails, if it does not). Returns how many it holds.
fn take_all(
    c: &mut Checks,
    refusal: &str,
    bound: core::fmt::Arguments<'_>,
    most: usize,
    mut take: impl FnMut(usize) -> Result<(), Errno>,
) -> usize {
    let mut n = 0;
    let err = loop {
        if n == most {
            break None;
        }
        match take(n) {
            Ok(()) => n += 1,
            Err(e) => break Some(e),
        }
    };
    match err {
        Some(e) => c.one_of(refusal, e, &[Errno::NoMem, Errno::TooBig]),
        None => c.that(bound, false),
    };
    n
}

fn exhaust_ports() -> u64 {
    let mut c = Checks::new("exhaust-ports");
    let mut ports = [0u32; abi::shared::MAX_PORTS];
    let mut counts = [0usize; 2];
    for count in &mut counts {
        let n = take_all(
            &mut c,
            "the refusal once out of ports",
            format_args!("ports are bounded by MAX_PORTS"),
            ports.len(),
            |n| hypercall::evtchn_alloc_unbound(0).map(|p| ports[n] = p),
        );
        *count = n;
        for &p in &ports[..n] {
            if hypercall::evtchn_close(p).is_err() {
                c.that(format_args!("closing port {p}"), false);
            }
        }
    }
    println!("ports allocated: {counts:?}");
    c.eq("ports the second time", counts[1], counts[0]);
    c.that(
        format_args!("{} ports within MAX_PORTS", counts[0]),
        counts[0] > 0 && counts[0] < abi::shared::MAX_PORTS,
    );
    c.verdict()
}

fn exhaust_grants() -> u64 {
    let mut c = Checks::new("exhaust-grants");
    static PAGE: workloads::split::SharedPage = workloads::split::SharedPage::new();
    let va = PAGE.va();
    const MOST: usize = 65536;
    let mut counts = [0usize; 2];
    let mut first = 0u32;
    for count in &mut counts {
        let n = take_all(
            &mut c,
            "the refusal once out of grants",
            format_args!("grants are bounded (over {MOST})"),
            MOST,
            |n| {
                let g = hypercall::grant_access(va, 0, true)?;
                if n == 0 {
                    first = g;
                }
                Ok(())
            },
        );
        *count = n;
        // References are handed out lowest first: end first..first + n.
        let mut ended = 0;
        for g in first..first + n as u32 {
            if hypercall::grant_end(g).is_ok() {
                ended += 1;
            }
        }
        c.eq("grants ended", ended, n);
    }
    println!("grants made: {counts:?}");
    c.eq("grants the second time", counts[1], counts[0]);
    c.verdict()
}

fn exhaust_memory() -> u64 {
    let mut c = Checks::new("exhaust-memory");
    let held = hypercall::current_reservation();
    let mut counts = [0usize; 2];
    let mut all = [0u64; 1024];
    for count in &mut counts {
        let mut n = 0;
        loop {
            let room = all.len() - n;
            match hypercall::increase_reservation(&mut all[n..n + room.min(64)]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => {
                    c.that(format_args!("increase_reservation failed: {e:?}"), false);
                    break;
                }
            }
            if n == all.len() {
                break;
            }
        }
        *count = n;
        c.eq(
            "frames at the limit",
            hypercall::current_reservation(),
            hypercall::maximum_reservation(),
        );
        c.eq(
            "frames given back",
            hypercall::decrease_reservation(&all[..n]),
            Ok(n),
        );
    }
    println!("frames taken: {counts:?}");
    c.eq("frames the second time", counts[1], counts[0]);
    c.eq(
        "frames held at the end",
        hypercall::current_reservation(),
        held,
    );
    c.verdict()
}

fn count_event(_: usize, _: u32) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

fn virq_flood(rounds: u64) -> u64 {
    let mut c = Checks::new("virq-flood");
    if let Err(e) = hypercall::evtchn_bind_virq(abi::hypercall::virq::TIMER) {
        return xtf::error("virq-flood", format_args!("binding the timer VIRQ: {e:?}"));
    }
    if let Err(e) = upcall::register(count_event) {
        return xtf::error("virq-flood", format_args!("registering the upcall: {e:?}"));
    }
    for i in 0..rounds {
        let _ = hypercall::set_timer(1 + i);
        if i.is_multiple_of(64) {
            hypercall::null();
        }
    }
    let until = time::now_ns() + 10_000_000;
    while time::now_ns() < until {
        hypercall::null();
    }
    let events = EVENTS.load(Ordering::Relaxed);
    println!("{rounds} timers fired at once, {events} upcalls");
    c.that(
        format_args!("some upcalls were taken ({events})"),
        events > 0,
    );
    c.verdict()
}

fn timer_edges() -> u64 {
    let mut c = Checks::new("timer-edges");
    for d in [u64::MAX, u64::MAX - 1, 1 << 63, 1, 0] {
        c.that(
            format_args!("set_timer({d:#x}) accepted"),
            hypercall::set_timer(d).is_ok(),
        );
    }
    let deadline = time::now_ns() + 1_000_000;
    let _ = hypercall::set_timer(deadline);
    while time::now_ns() < deadline {
        hypercall::block();
    }
    c.that(
        format_args!("a timer 1 ms ahead fired after the edge deadlines"),
        true,
    );
    let _ = hypercall::set_timer(1);
    let got = hypercall::poll(&[0, 1023, 1024, u32::MAX]);
    c.that(
        format_args!("poll on edge ports with a due timer returned: {got:?}"),
        true,
    );
    // A deadline of 1 ns is the hypervisor's own mark of a timer that fired while its vCPU
    // was awake (`schedule::FIRED`, whose event was sent): taken for that mark, a poll right
    // after it returned with no event sent, and none ever came. Each round polls the timer
    // port at once, before the timer's interrupt can come (most rounds under TCG).
    match hypercall::evtchn_bind_virq(abi::hypercall::virq::TIMER) {
        Ok(port) => {
            let lost = (0..100)
                .filter(|_| {
                    shared::take_event(port);
                    let _ = hypercall::set_timer(1);
                    let _ = hypercall::poll(&[port]);
                    !shared::take_event(port)
                })
                .count();
            c.that(
                format_args!(
                    "a timer set for 1 ns sent its event before poll returned ({lost} of 100 \
                     rounds without)"
                ),
                lost == 0,
            );
        }
        Err(e) => {
            c.that(format_args!("binding the timer VIRQ: {e:?}"), false);
        }
    }
    c.verdict()
}

/// vCPU 1 keeps the hypervisor busy on the domain's objects while vCPU 0 ends the domain.
fn end_race(vcpu: usize, kill: bool) -> u64 {
    let name = if kill { "kill-race" } else { "shutdown-race" };
    if vcpu == 1 {
        static PAGE: workloads::split::SharedPage = workloads::split::SharedPage::new();
        let slot = workloads::pagetable::entry_address(abi::layout::MAP_AREA, 1);
        let mut frames = [0u64; 4];
        loop {
            if let Ok(n) = hypercall::increase_reservation(&mut frames) {
                if let Some(slot) = slot {
                    for &f in &frames[..n] {
                        let _ = xtf::update(slot, workloads::pagetable::leaf(f, true));
                        let _ = xtf::update(slot, 0);
                    }
                }
                let _ = hypercall::decrease_reservation(&frames[..n]);
            }
            if let Ok(g) = PAGE.grant(0, true) {
                let _ = hypercall::grant_end(g);
            }
            if let Ok(p) = hypercall::evtchn_alloc_unbound(0) {
                let _ = hypercall::evtchn_close(p);
            }
            let _ = hypercall::set_timer(time::now_ns() + 1_000_000);
        }
    }
    if vcpu != 0 {
        rt::park(vcpu);
    }
    time::sleep_ns(20_000_000);
    if kill {
        xtf::expect_killed(name, "ud2 (exception 6) while vCPU 1 is in hypercalls");
        // SAFETY: #UD in ring 3 kills the domain; that is the case.
        unsafe { core::arch::asm!("ud2") };
        return xtf::survived(name, format_args!("ud2"));
    }
    xtf::success(
        name,
        format_args!("shutting down while vCPU 1 is in hypercalls"),
    )
}

/// Case 15: the domain dies while its other vCPUs are switched in and out of the other CPU
/// as fast as they can be (down and up, a timer a few µs ahead and a block, a yield), so
/// that the kill, and the destroy that follows it, find them at every step of a switch.
fn kill_picked(vcpu: usize) -> u64 {
    let name = "kill-picked";
    let n = shared::vcpus() as usize;
    if vcpu != 0 {
        loop {
            let _ = hypercall::vcpu_down(vcpu);
            let _ = hypercall::set_timer(time::now_ns() + 2_000 + 1_000 * vcpu as u64);
            hypercall::block();
            hypercall::yield_now();
            shared::add_work(vcpu, 1);
        }
    }
    let kill_ns = match shared::arg("kill_us", 0) {
        0 => 200_000 + time::rdtsc() % 2_800_000,
        us => us * 1_000,
    };
    let until = time::now_ns() + kill_ns;
    while time::now_ns() < until {
        for other in 1..n {
            let _ = hypercall::vcpu_up(other);
        }
        shared::add_work(0, 1);
    }
    xtf::expect_killed(
        name,
        "ud2 (exception 6) while its other vCPUs switch in and out",
    );
    // SAFETY: #UD in ring 3 kills the domain; that is the case.
    unsafe { core::arch::asm!("ud2") };
    xtf::survived(name, format_args!("ud2"))
}

/// Case 20: domain-table look-ups back to back, on every vCPU, for `spin_ms` (module doc).
fn lookup_storm(vcpu: usize) -> u64 {
    let spin_ns = shared::arg("spin_ms", 1500) * 1_000_000;
    let (start, mut calls) = (time::now_ns(), 0u64);
    while time::now_ns() - start < spin_ns {
        let _ = hypercall::maximum_reservation();
        calls += 1;
    }
    println!("vCPU {vcpu}: {calls} look-ups");
    join(vcpu, || {
        xtf::success(
            "lookup-storm",
            format_args!("Domain0 ran its timeline beside it"),
        )
    })
}

/// Case 19: console lines as fast as the quota allows, for `spin_ms` (module doc).
fn console_steady() -> u64 {
    let spin_ns = shared::arg("spin_ms", 1500) * 1_000_000;
    let mut line = [b'x'; 201];
    line[200] = b'\n';
    let (start, mut written, mut refused) = (time::now_ns(), 0u64, 0u64);
    while time::now_ns() - start < spin_ns {
        match hypercall::console_write(&line) {
            Ok(_) => written += 1,
            Err(_) => {
                refused += 1;
                time::sleep_ns(5_000_000);
            }
        }
    }
    xtf::success(
        "console-steady",
        format_args!("{written} lines written, {refused} calls refused"),
    )
}

/// Case 16: a vCPU that never enters the hypervisor of its own accord (module doc).
fn spin_masked() -> u64 {
    let name = "spin-masked";
    let spin_ns = shared::arg("spin_ms", 1500) * 1_000_000;
    shared::set_upcall_mask(0, true);
    let start = time::now_ns();
    let mut units = 0u64;
    let mut state = 1u64;
    while time::now_ns() - start < spin_ns {
        state = workloads::work::unit(state, 64);
        units += 1;
        shared::add_work(0, 1);
    }
    shared::set_upcall_mask(0, false);
    xtf::success(
        name,
        format_args!(
            "spun {} ms in ring 3 with its upcall masked and no hypercall ({units} units, \
             state {state:#x})",
            spin_ns / 1_000_000
        ),
    )
}

fn console_flood() -> u64 {
    let mut c = Checks::new("console-flood");
    let mut line = [b'#'; 200];
    line[199] = b'\n';
    let (mut written, mut again, mut other) = (0u64, 0u64, 0u64);
    for _ in 0..400 {
        match hypercall::console_write(&line) {
            Ok(_) => written += 1,
            Err(Errno::Again) => again += 1,
            Err(_) => other += 1,
        }
    }
    println!(
        "console flood: {written} lines written, {again} refused with Again, {other} other errors"
    );
    c.that(
        format_args!("the quota refused some lines ({again})"),
        again > 0,
    );
    c.eq("other errors", other, 0);
    c.verdict()
}

/// The console burst of an unprivileged domain (`kernel/src/domain`: `CONSOLE_BURST_BYTES`).
const CONSOLE_BURST_BYTES: u64 = 8192;
/// The fewest quota bytes one logged line may cost: the hypervisor's log prefix alone
/// (`[    1.234567] cpu0 INFO  [name] ` and the `\n`) is more than this.
const CONSOLE_MIN_LINE_COST: u64 = 24;

/// Empty lines, 256 a write: each is a whole log line on the serial port. Lines got out
/// (bytes accepted, one line each) must fit the burst at their cost; before the quota
/// counted lines, the burst let out 8192 of them (32 writes), ~280 KB of serial output for
/// 8 KB of quota.
fn console_lines() -> u64 {
    let mut c = Checks::new("console-lines");
    let newlines = [b'\n'; 256];
    let (mut lines, mut writes, mut again, mut other) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..400 {
        match hypercall::console_write(&newlines) {
            Ok(n) => {
                lines += n;
                writes += 1;
            }
            Err(Errno::Again) => again += 1,
            Err(_) => other += 1,
        }
    }
    c.that(
        format_args!(
            "{lines} empty lines got out in {writes} writes ({again} refused): at most \
             {} fit a burst of {CONSOLE_BURST_BYTES} bytes",
            CONSOLE_BURST_BYTES / CONSOLE_MIN_LINE_COST
        ),
        lines <= CONSOLE_BURST_BYTES / CONSOLE_MIN_LINE_COST,
    );
    c.that(format_args!("some got out ({lines})"), lines > 0);
    c.that(format_args!("the quota refused some ({again})"), again > 0);
    c.eq("other errors", other, 0);
    c.verdict()
}

/// Numbered lines `console-bound` writes last (`cb 000` .. ): the runner checks they all
/// came, in order (`runner::xtf`, `CONSOLE_BOUND_LINES`).
const CONSOLE_BOUND_LINES: usize = 40;

/// Writes the serial port's most expensive console output and checks each call against
/// `abi::hypercall::CONSOLE_CALL_BYTES`, computing what the bytes a call took cost (the
/// hypervisor's rule, `console_line_cost`); everything must get out, call after call.
fn console_bound() -> u64 {
    use abi::hypercall::{CONSOLE_CALL_BYTES, console_line_cost, console_text_len};
    let mut c = Checks::new("console-bound");
    let name = shared::name().len();
    let (mut calls, mut worst, mut over, mut again, mut other) = (0u64, 0usize, 0u64, 0u64, 0u64);
    // What the bytes a call took cost the serial port.
    let cost = |taken: &[u8]| -> usize {
        taken
            .split_inclusive(|&b| b == b'\n')
            .map(|l| console_line_cost(name, console_text_len(l.strip_suffix(b"\n").unwrap_or(l))))
            .sum()
    };
    let mut send = |bytes: &[u8]| -> u64 {
        let (mut sent, mut n_calls, mut tries) = (0, 0u64, 0);
        while sent < bytes.len() && tries < 100 {
            match hypercall::console_write(&bytes[sent..]) {
                Ok(n) if n > 0 => {
                    let took = &bytes[sent..sent + n as usize];
                    let k = cost(took);
                    worst = worst.max(k);
                    if k > CONSOLE_CALL_BYTES {
                        over += 1;
                    }
                    sent += n as usize;
                    n_calls += 1;
                }
                Err(Errno::Again) => {
                    again += 1;
                    tries += 1;
                    time::sleep_ns(50_000_000);
                }
                _ => {
                    other += 1;
                    break;
                }
            }
        }
        calls += n_calls;
        if sent < bytes.len() {
            other += 1;
        }
        n_calls
    };
    let empty = send(&[b'\n'; 64]);
    let mut esc = [0x1bu8; 201];
    esc[200] = b'\n';
    let esc_calls = send(&esc);
    send(b"escapes: \x1b[2J\x1b[31mred\x1b]0;title\x07 \rforged \xc2\x9b1m \x08\x7f end\n");
    let mut numbered = [0u8; CONSOLE_BOUND_LINES * 7];
    for (i, l) in numbered.chunks_exact_mut(7).enumerate() {
        l.copy_from_slice(&[
            b'c',
            b'b',
            b' ',
            b'0' + (i / 100) as u8,
            b'0' + (i / 10 % 10) as u8,
            b'0' + (i % 10) as u8,
            b'\n',
        ]);
    }
    // In pieces of whole lines up to 256 bytes (a piece's last line without its `\n` would
    // be a log line of its own, the guest's doing).
    for piece in numbered.chunks(7 * (256 / 7)) {
        send(piece);
    }
    let fit = CONSOLE_CALL_BYTES / console_line_cost(name, 0);
    c.eq("calls over the bound", over, 0);
    c.that(
        format_args!("the costliest call: {worst} serial bytes, at most {CONSOLE_CALL_BYTES}"),
        worst <= CONSOLE_CALL_BYTES,
    );
    c.that(
        format_args!("64 empty lines took {empty} calls (at most {fit} lines a call)"),
        empty >= 64u64.div_ceil(fit as u64),
    );
    c.that(
        format_args!("200 escaped ESC bytes took {esc_calls} calls (cut, shown at 4 bytes each)"),
        esc_calls >= 2,
    );
    c.eq("errors or bytes lost", other, 0);
    let _ = again;
    c.that(format_args!("{calls} calls"), calls > 0);
    c.verdict()
}

/// Pauses each vCPU of `pause-escape` saw (stops of at least `gap_ms`), by vCPU.
static GAPS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// vCPUs `pause-escape` takes.
const MAX_VCPUS: usize = 8;
/// When vCPU 0 started (both loop until `deadline_ms` after it).
static START: AtomicU64 = AtomicU64::new(0);
/// Pauses `xtf-pause.toml` makes.
const PAUSES: u64 = 3;

/// Each vCPU tries to bring the other back up all the time: Domain0's pause stops the vCPUs
/// one after the other, so the one stopped second, still running, sees the first paused.
/// `vcpu_op Up` may undo the guest's own `Down`, never Domain0's pause (Xen keeps the two
/// apart: `_VPF_down` and `pause_count`). Each vCPU counts the stops it sees.
fn pause_escape(vcpu: usize) -> u64 {
    // What `xtf-pause.toml`'s timeline does: 3 pauses of 300 ms, 500 ms apart (so that every vCPU runs between
    // two, and each pause is a stop of its own), within its first 2.2 s; a move to
    // another pool at 2.5 s.
    let (pauses, gap_ns, deadline_ns) = (PAUSES, 200_000_000, 3_200_000_000u64);
    let n = shared::vcpus() as usize;
    if !(2..=MAX_VCPUS).contains(&n) {
        if vcpu != 0 {
            rt::park(vcpu);
        }
        return xtf::error("pause-escape", format_args!("needs 2 to {MAX_VCPUS} vCPUs"));
    }
    if vcpu == 0 {
        START.store(time::now_ns(), Ordering::SeqCst);
    }
    while START.load(Ordering::SeqCst) == 0 {
        core::hint::spin_loop();
    }
    let until = START.load(Ordering::SeqCst) + deadline_ns;
    let (mut last, mut ups) = (time::now_ns(), 0u64);
    loop {
        let now = time::now_ns();
        if now.saturating_sub(last) >= gap_ns {
            GAPS[vcpu].fetch_add(1, Ordering::SeqCst);
        }
        last = now;
        // On until the deadline, whatever it has seen: the timeline moves the domain to
        // another pool meanwhile, and it must run on there.
        if now >= until {
            break;
        }
        for other in (0..n).filter(|&o| o != vcpu) {
            let _ = hypercall::vcpu_up(other);
            ups += 1;
        }
        shared::add_work(vcpu, 1);
    }
    println!(
        "vCPU {vcpu}: {ups} vcpu_op Up calls, {} stops seen",
        GAPS[vcpu].load(Ordering::SeqCst)
    );
    join(vcpu, || {
        let mut c = Checks::new("pause-escape");
        for (v, gaps) in GAPS.iter().enumerate().take(n) {
            let seen = gaps.load(Ordering::SeqCst);
            c.that(
                format_args!(
                    "vCPU {v} stopped for each of the {pauses} pauses Domain0 made (stops of \
                     {} ms or more seen: {seen})",
                    gap_ns / 1_000_000
                ),
                seen >= pauses,
            );
        }
        c.verdict()
    })
}
