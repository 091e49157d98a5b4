//! Event channels (Xen's `event_channel.c`), all of them: the `evtchn_op` hypercall
//! (allocate, bind, send, unmask, close), marking a port pending in a domain's counters page
//! and notifying the vCPU it is bound to (upcall flags, a wake-up, an IPI). The port state
//! machine is `kerncore::event::PortTable`, one per domain.
//!
//! It lives in `domain/`, not `pv/`, because the scheduler's timers (`VIRQ_TIMER`) and a
//! domain's death (`VIRQ_DOM_EXC`) raise events too; `pv::hypercall` only dispatches here.
//!
//! A bound port keeps its peer's `Domain` (a `Weak`, Xen's `u.interdomain.remote_dom`), so
//! a send reaches the far end without the global domain table (`domain::domain` takes its
//! lock and clones an `Arc` per call), and without upgrading the `Weak` either: it follows
//! it by pointer (`arch::rcu::Reached`), since a domain a port was bound to is freed only a
//! grace period after its destroy (`Domain::bound_to`, `pv::control::destroy`). The `Weak`
//! is dropped when the binding goes: closed at either end (`Close`,
//! `PortTable::peer_closed`), the domain's death (`close_all`), the peer's destruction
//! (`PortTable::orphan`, `control::destroy`). A `Weak` reaches only the object it was made
//! from: a later domain given the same id is never reached.
//!
//! Lock order: a domain's `ports` lock is held with another domain's only in
//! `BindInterdomain`, both at once, the lower domain id first. Everywhere else one is let go
//! before the next is taken: a send reads its own end (`route`), lets go, then delivers
//! under the far end's lock (`send_from`, which checks the binding still stands there);
//! a close frees its own end, lets go, then unbinds the far end. `life` is never held with
//! `ports`. A vCPU's locks (`notify_vcpu`'s wake-up) come after the table's is let go
//! (`deliver`).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use abi::error::Errno;
use abi::hypercall::EvtchnOp;
use abi::shared::{Counters, VcpuEvents};
use kerncore::cmdline::SelfTest;

use super::{Domain, NOT_RUNNING, Vcpu};
use crate::arch::rcu::Reached;
use crate::{domain, time};

/// `evtchn_op`: allocate, bind, send, unmask, close (the port rules are in `kerncore::event`).
/// A send, the one per event, goes straight to [`send`]: under QEMU's TCG each code page a
/// domain switch runs through is a TLB fill, and inside this function's match the send's
/// code lay a page away from its entry (a one-CPU ping ran through both).
#[inline]
pub fn evtchn_op(me: &Domain, op: u64, a1: u64, a2: u64) -> Result<u64, Errno> {
    if op == EvtchnOp::Send as u64 {
        send(me, a1)
    } else {
        evtchn_other(me, op, a1, a2)
    }
}

/// `EvtchnOp::Send` on port `a1` of `me`.
#[inline(never)]
fn send(me: &Domain, a1: u64) -> Result<u64, Errno> {
    use kerncore::event::RouteError;
    let port = u32::try_from(a1).map_err(|_| Errno::Inval)?;
    // The peer is the object the port was bound to, kept with the binding (Xen's
    // `evtchn_send` reads `remote_dom` from the channel): no global table, no global
    // lock. Gone, it is `Srch` as a missing table entry was; a later domain with its
    // id is another object, never reached.
    //
    // The peer is reached by pointer, no reference count raised (issue 11; Xen's
    // `evtchn_send` takes none either): it is freed only a grace period after its
    // bindings are gone (`arch::rcu::Reached`, `pv::control::destroy`), and this
    // CPU reaches no quiescent point before the send returns.
    let section = crate::arch::rcu::read_side();
    let (remote, rport) = {
        let table = me.ports.lock();
        let (peer, rport) = table.route(port).map_err(|e| match e {
            RouteError::NotBound => Errno::Inval,
            RouteError::PeerGone => Errno::Srch,
        })?;
        (Reached::through(peer, &section).ok_or(Errno::Srch)?, rport)
    };
    let peer = remote.get();
    if me.slow_sends {
        slow_send(peer, |p| p.send_from(rport, me.id, port, time::now_ns()));
    } else {
        peer.send_from(rport, me.id, port, time::now_ns());
    }
    Ok(0)
}

/// Every `evtchn_op` but a send.
#[inline(never)] // kept out of the hypercall fast path
fn evtchn_other(me: &Domain, op: u64, a1: u64, a2: u64) -> Result<u64, Errno> {
    use kerncore::event::{Port, PortError};
    let alive = |id: u64| {
        u32::try_from(id)
            .ok()
            .and_then(domain::domain)
            .filter(|d| d.life.lock().state != abi::control::DomainState::Dead)
            .ok_or(Errno::Srch)
    };
    let port_error = |e: PortError| match e {
        PortError::Full => Errno::NoMem,
        PortError::NotAllocated | PortError::WrongState => Errno::Inval,
    };
    match EvtchnOp::from_raw(op).ok_or(Errno::NoSys)? {
        EvtchnOp::AllocUnbound => {
            let remote = alive(a1)?;
            let port = me
                .ports
                .lock()
                .alloc_unbound(remote.id)
                .map_err(port_error)?;
            // The remote died since it was looked up: its destroy may have orphaned the
            // ports unbound for it before this one (`control::destroy`), and the next domain
            // given its id could bind to it. Taken back.
            if remote.life.lock().state == abi::control::DomainState::Dead {
                me.ports.lock().release(port);
                return Err(Errno::Srch);
            }
            Ok(u64::from(port))
        }
        EvtchnOp::BindInterdomain => {
            let remote = alive(a1)?;
            if remote.id == me.id {
                return Err(Errno::Inval);
            }
            let rport = u32::try_from(a2).map_err(|_| Errno::Inval)?;
            // Both tables at once, always the lower domain id first: no lock-order deadlock
            // between two domains binding to each other.
            let (mut mine, mut theirs) = if me.id < remote.id {
                let m = me.ports.lock();
                (m, remote.ports.lock())
            } else {
                let t = remote.ports.lock();
                (me.ports.lock(), t)
            };
            // Each end keeps the other's object (Xen's `remote_dom`): a send goes by it, by
            // pointer, so each one's destroy must wait for a grace period (`bound_to`).
            remote.bound_to.store(true, Ordering::Release);
            me.bound_to.store(true, Ordering::Release);
            let local = mine
                .alloc_bound(remote.id, rport, Arc::downgrade(&remote))
                .map_err(port_error)?;
            if let Err(e) = theirs.accept(rport, me.id, local, me.this.clone()) {
                mine.release(local);
                return Err(port_error(e));
            }
            Ok(u64::from(local))
        }
        EvtchnOp::Send => send(me, a1),
        EvtchnOp::BindVirq => {
            let virq = u32::try_from(a1)
                .ok()
                .filter(|v| *v < abi::hypercall::virq::COUNT)
                .ok_or(Errno::Inval)?;
            if virq == abi::hypercall::virq::DOM_EXC && !me.privileged {
                return Err(Errno::Perm);
            }
            // The domain-exception VIRQ is global: it always notifies vCPU 0.
            let target = if virq == abi::hypercall::virq::DOM_EXC {
                0
            } else {
                me.vcpu_index(a2)?
            };
            me.ports
                .lock()
                .bind_virq(virq, target)
                .map(u64::from)
                .map_err(port_error)
        }
        EvtchnOp::BindVcpu => {
            let port = u32::try_from(a1).map_err(|_| Errno::Inval)?;
            let target = me.vcpu_index(a2)?;
            // Xen: VIRQs stay on the vCPU they were bound for; the table refuses them under
            // its lock (a check here, under a lock of its own, raced another vCPU's close
            // and VIRQ bind at the same number).
            me.ports
                .lock()
                .bind_vcpu(port, target)
                .map(|()| 0)
                .map_err(port_error)
        }
        EvtchnOp::Unmask => {
            let port = u32::try_from(a1)
                .ok()
                .filter(|p| (*p as usize) < abi::shared::MAX_PORTS)
                .ok_or(Errno::Inval)?;
            if me.ports.lock().get(port) == Port::Free {
                return Err(Errno::Inval);
            }
            if me.unmask(port) {
                let target = me.ports.lock().notify_vcpu(port);
                me.notify_vcpu(target, port as usize / 64, time::now_ns());
            }
            Ok(0)
        }
        EvtchnOp::Close => {
            let port = u32::try_from(a1).map_err(|_| Errno::Inval)?;
            close(me, port).map_err(port_error)
        }
    }
}

/// `selftest=slow-close`: a close made by a domain's vCPU 1 holds its CPU this long
/// (interrupts off) between looking at its end and changing both, while the two domains close
/// the other end and bind anew.
const SLOW_CLOSE_US: u64 = 20_000;

/// `EvtchnOp::Close` of `port` of `me`: both ends in one step, under both tables' locks (the
/// lower domain id first, as `BindInterdomain`), as Xen's `evtchn_close` holds both domains'
/// locks. Closed here and unbound at the far end once this table's lock was let go, a close
/// stalled in between (a host stopping this CPU) while the two domains closed the other end
/// and bound anew with the same port numbers unbound the new binding's far end: a channel
/// bound at one end only, whose sends were dropped one way and refused the other (an audit
/// of session 22; hostile-pair `close-rebind`, `isolation/slow-close`).
fn close(me: &Domain, port: u32) -> Result<u64, kerncore::event::PortError> {
    use kerncore::event::{Port, PortError};
    loop {
        let (seen, peer) = {
            let table = me.ports.lock();
            (table.get(port), table.peer(port))
        };
        if seen == Port::Free {
            return Err(PortError::NotAllocated);
        }
        if time::self_test_is(SelfTest::SlowClose)
            && crate::schedule::with_current(|v, _| v.index == 1).unwrap_or(false)
        {
            time::stall(SelfTest::SlowClose, SLOW_CLOSE_US);
        }
        // Bound to a live domain (never itself: `BindInterdomain` refuses that), or this end
        // alone.
        let remote = peer.filter(|r| r.id != me.id);
        let (mut mine, theirs) = match &remote {
            Some(r) if me.id < r.id => {
                let m = me.ports.lock();
                (m, Some(r.ports.lock()))
            }
            Some(r) => {
                let t = r.ports.lock();
                (me.ports.lock(), Some(t))
            }
            None => (me.ports.lock(), None),
        };
        // Still the binding looked at: else it changed in between (the far end closed, a
        // bind): look again.
        let same_peer = match (&remote, mine.peer(port)) {
            (Some(r), Some(p)) => Arc::ptr_eq(r, &p),
            (None, p) => p.is_none(),
            _ => false,
        };
        if mine.get(port) != seen || !same_peer {
            continue;
        }
        let (was, _) = mine.close_peer(port)?;
        // What was sent on the binding goes with it (Xen's `evtchn_free`, "to avoid
        // unexpected behaviour on re-bind"): an event left pending showed on the port's next
        // binding as if its new peer had sent it (hostile-pair `pending-aba`). Under the
        // table's lock, which a send takes to deliver (`send_from`): no event of the old
        // binding lands after this.
        me.clear_pending(port);
        if let (Port::Interdomain { port: rport, .. }, Some(mut theirs)) = (was, theirs) {
            theirs.peer_closed(rport, me.id);
        }
        return Ok(0);
    }
}

/// `selftest=slow-deliver`: an event to an unmasked port holds its CPU this long
/// (interrupts off) between marking the port pending, or unmasking it, and notifying the
/// vCPU, while that vCPU sees the port pending and blocks on another CPU.
const SLOW_DELIVER_US: u64 = 500;

/// `selftest=slow-send` ([`set_slow_send`]); each domain copies it when it is made
/// (`Domain::slow_sends`), so that a send reads it from its own domain's object, which it
/// touches anyway.
pub(super) static SLOW_SEND: AtomicBool = AtomicBool::new(false);

/// Makes every send linger between finding its peer and delivering to it, and check the peer
/// was not freed meanwhile (`selftest=slow-send`).
pub fn set_slow_send(on: bool) {
    SLOW_SEND.store(on, Ordering::Release);
}

/// A send under `selftest=slow-send`: 200 µs after the peer was found, `deliver` to it, then
/// a check that it was not dropped meanwhile (its serial, 0 once dropped or another
/// domain's once its memory is reused). A destroy on another CPU that let the peer go
/// without waiting for a grace period stops the machine here (`churn` with it, when
/// `pv::control::destroy` dropped its reference at once).
#[cold]
#[inline(never)]
fn slow_send(peer: &Domain, deliver: impl FnOnce(&Domain)) {
    // A grace period of the send's own: this CPU must not report it before the send is over
    // (it holds the peer by pointer). A report from anywhere the send goes (a quiescent
    // point moved into a helper it calls) is caught on every send, not only when a destroy
    // happens to free the peer meanwhile.
    let g = crate::arch::rcu::begin_for_check();
    let serial = peer.serial();
    let until = time::now_ns() + 200_000;
    while time::now_ns() < until {
        core::hint::spin_loop();
    }
    check_not_freed(peer, serial);
    deliver(peer);
    check_not_freed(peer, serial);
    if crate::arch::rcu::reported_since(g) {
        panic!(
            "a send reported a quiescent point while it still reached its peer by pointer \
             (grace period {g}): a destroy on another CPU could free the peer under it"
        );
    }
}

/// Stops the machine if `peer`'s serial is no longer `serial` (`slow_send`).
fn check_not_freed(peer: &Domain, serial: u64) {
    let now = peer.serial();
    if now != serial {
        panic!(
            "the peer of a send was freed while the send still reached it (serial {serial}, \
             now {now}): its destroy did not wait for a grace period"
        );
    }
}

impl Domain {
    /// The counters page's event word `word`, shared with the guest.
    fn event_word(&self, field: usize, word: usize) -> &AtomicU64 {
        self.counters.atomic_u64(field + word * 8)
    }

    /// Marks `port` pending. Returns `None` if it was pending already: the event is merged
    /// with the one that set it, whose notification went out then (Xen's
    /// `evtchn_2l_set_pending` stops at its `test_and_set_bit`). Else whether the port is
    /// unmasked (its vCPU must be told).
    pub fn set_pending(&self, port: u32) -> Option<bool> {
        let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
        let was = self
            .event_word(core::mem::offset_of!(Counters, evtchn_pending), word)
            .fetch_or(bit, Ordering::SeqCst);
        if was & bit != 0 {
            return None;
        }
        Some(
            self.event_word(core::mem::offset_of!(Counters, evtchn_mask), word)
                .load(Ordering::SeqCst)
                & bit
                == 0,
        )
    }

    /// Sends virtual IRQ `virq` of vCPU `vcpu`, if the domain bound a port to it. The port
    /// is found and marked pending under the table's lock, as `send_from` does: a port
    /// closed and bound anew in between would otherwise get the VIRQ's event.
    pub fn send_virq(&self, virq: u32, vcpu: u32, now: u64) {
        self.deliver(|table| Some((table.virq_port(virq, vcpu)?, vcpu)), now);
    }

    /// Marks pending the port `find` picks in the port table, and notifies the vCPU it names
    /// unless the port is masked: found and marked under the table's lock, so that the port
    /// cannot be closed and bound anew in between. Nothing happens when `find` finds none,
    /// nor when the port was pending already: every send notified, IPI'd and woke pollers
    /// anew, and a hostile peer turned its own cheap sends into interrupts on its victim's
    /// CPU and wake-ups of the victim's polls on other ports (hostile-pair `quiet-flood`:
    /// ~3000 interrupts in 100 ms against ~140 from the victim's own timer, and ~9600 poll
    /// wake-ups where 10 were due; an audit of session 22).
    fn deliver(
        &self,
        find: impl FnOnce(&kerncore::event::PortTable<Domain>) -> Option<(u32, u32)>,
        now: u64,
    ) {
        let (port, vcpu, unmasked) = {
            let table = self.ports.lock();
            let Some((port, vcpu)) = find(&table) else {
                return;
            };
            let Some(unmasked) = self.set_pending(port) else {
                return;
            };
            (port, vcpu, unmasked)
        };
        if unmasked {
            self.notify_vcpu(vcpu, port as usize / 64, now);
        }
        self.wake_pollers(now);
    }

    /// Wakes every vCPU of the domain in `SchedOp::Poll` ([`Domain::polling`]), once a port
    /// is marked pending: whatever the port's mask and vCPU, as Xen's
    /// `evtchn_check_pollers`. A poll names ports, not the vCPU they notify, and a masked
    /// port notifies nobody: without this a poll on such a port slept until its timer, or
    /// for good (hostile-sched `poll-wakes`). All of them, whichever ports they poll: a poll
    /// may return on another event (the ABI's "callers check and loop"). The pending bit is
    /// set before the mask is read here and the poller sets its bit before it looks at its
    /// ports (SeqCst on both), so one of the two sees the other.
    fn wake_pollers(&self, now: u64) {
        if self.polling.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut polling = self.polling.swap(0, Ordering::SeqCst);
        while polling != 0 {
            let index = polling.trailing_zeros() as usize;
            polling &= polling - 1;
            if let Some(v) = self.vcpus.get(index) {
                crate::schedule::wake(v, now);
            }
        }
    }

    /// Clears `port`'s pending bit.
    fn clear_pending(&self, port: u32) {
        if (port as usize) < abi::shared::MAX_PORTS {
            let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
            self.event_word(core::mem::offset_of!(Counters, evtchn_pending), word)
                .fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// An event from port `from_port` of domain `from` on `port`: marked pending, and the
    /// vCPU it is bound to notified, only if `port` is still connected to that port
    /// (`PortTable::deliverable`), checked and marked under this table's lock. Else it is
    /// dropped: the binding it was sent on has gone, and the number (or, after a destroy,
    /// this domain's id) may serve another binding by now.
    pub fn send_from(&self, port: u32, from: abi::control::DomainId, from_port: u32, now: u64) {
        self.deliver(
            |table| Some((port, table.deliverable(port, from, from_port)?)),
            now,
        );
    }

    /// Notifies vCPU `vcpu` (vCPU 0 if there is no such vCPU) of a pending event in
    /// pending word `word`, once its port is marked pending and found unmasked (Xen's
    /// `evtchn_set_pending`): its upcall flags, a wake-up if it is blocked, and an IPI to the
    /// CPU it runs on if it takes upcalls, so that the upcall is entered at once.
    pub fn notify_vcpu(&self, vcpu: u32, word: usize, now: u64) {
        // Its port was marked pending (a send) or unmasked (`Unmask`) just now: a vCPU
        // blocking on another CPU may see the port before the flag is set below.
        time::stall(SelfTest::SlowDeliver, SLOW_DELIVER_US);
        let Some(v) = self.vcpus.get(vcpu as usize).or(self.vcpus.first()) else {
            return;
        };
        // The IPI only when the upcall flag goes from clear to set (Xen's
        // `vcpu_mark_events_pending`): set, an upcall is due already, or masked by the guest.
        let flagged = v.mark_pending(word);
        if !crate::schedule::wake(v, now) && flagged && v.callback.load(Ordering::SeqCst) != 0 {
            let cpu = v.running_on.load(Ordering::Acquire);
            if cpu != NOT_RUNNING && cpu != smp::percpu::cpu_index() {
                // It runs elsewhere: interrupt it, so that the way back enters the upcall.
                smp::ipi::send_reschedule(cpu);
            }
        }
    }

    /// Clears `port`'s mask bit; returns whether it is pending (so its vCPU must be told).
    pub fn unmask(&self, port: u32) -> bool {
        let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
        self.event_word(core::mem::offset_of!(Counters, evtchn_mask), word)
            .fetch_and(!bit, Ordering::SeqCst);
        self.is_pending(port)
    }

    /// Whether `port` is pending.
    pub fn is_pending(&self, port: u32) -> bool {
        let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
        word < abi::shared::MAX_PORTS / 64
            && self
                .event_word(core::mem::offset_of!(Counters, evtchn_pending), word)
                .load(Ordering::SeqCst)
                & bit
                != 0
    }

    /// Whether an unmasked event is pending on a port that notifies vCPU `vcpu` (Xen's
    /// `local_events_need_delivery`, by port rather than by the vCPU's upcall flag, which
    /// guests that poll instead of taking upcalls never clear). A vCPU's `block` returns at
    /// once while this holds: events for the domain's other vCPUs must not keep it awake.
    ///
    /// If one is, the vCPU is marked as having it ([`Vcpu::mark_pending`]), as its sender
    /// marks it once it gets there: the way back to the guest enters the upcall by the flag,
    /// and a sender marks the port, then the vCPU. A block on another CPU between the two
    /// steps saw the port, returned, and went back to a guest that ran on past the event it
    /// had been woken for, its upcall entered later, whenever the sender got on (xtf-ring's
    /// `upcall-idle` ran on after its upcall was due, about one CI in six; hostile-pair
    /// `block-upcall` under `selftest=slow-deliver`, every round).
    pub fn mark_if_pending(&self, vcpu: u32) -> bool {
        let word = |field: usize, w: usize| self.event_word(field, w).load(Ordering::SeqCst);
        let pending_field = core::mem::offset_of!(Counters, evtchn_pending);
        let mask_field = core::mem::offset_of!(Counters, evtchn_mask);
        for w in 0..abi::shared::MAX_PORTS / 64 {
            let mut bits = word(pending_field, w);
            if bits == 0 {
                continue;
            }
            bits &= !word(mask_field, w);
            if bits == 0 {
                continue;
            }
            let ports = self.ports.lock();
            while bits != 0 {
                let port = (w * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                if ports.notify_vcpu(port) == vcpu {
                    drop(ports);
                    if let Some(v) = self.vcpus.get(vcpu as usize) {
                        let _ = v.mark_pending(w);
                    }
                    return true;
                }
            }
        }
        false
    }
}

impl Vcpu {
    /// The offset of field `field` (an offset in `VcpuEvents`) of its event state in its
    /// domain's counters page.
    fn event_field(&self, field: usize) -> usize {
        core::mem::offset_of!(Counters, vcpu_events)
            + self.index as usize * core::mem::size_of::<VcpuEvents>()
            + field
    }

    /// Its `upcall_pending` flag in the counters page (the guest clears it).
    pub fn upcall_pending(&self) -> &AtomicU8 {
        self.counters
            .atomic_u8(self.event_field(core::mem::offset_of!(VcpuEvents, upcall_pending)))
    }

    /// Its `upcall_mask` flag in the counters page.
    pub fn upcall_mask(&self) -> &AtomicU8 {
        self.counters
            .atomic_u8(self.event_field(core::mem::offset_of!(VcpuEvents, upcall_mask)))
    }

    /// Marks vCPU `v` as having an event to handle: its `upcall_pending`, and bit `word` of
    /// its `pending_sel`. Returns whether `upcall_pending` was clear.
    pub fn mark_pending(&self, word: usize) -> bool {
        let sel = self
            .counters
            .atomic_u64(self.event_field(core::mem::offset_of!(VcpuEvents, pending_sel)));
        sel.fetch_or(1 << (word % 64), Ordering::SeqCst);
        self.upcall_pending().swap(1, Ordering::SeqCst) == 0
    }
}
