//! Event-channel ports: the state machine of one domain's ports (Xen's `evtchn_*`), as pure
//! logic, tested on the host. The hypervisor keeps one [`PortTable`] per domain and does the
//! cross-domain steps (binding both ends, marking events pending, waking) around it.
//!
//! A port is free, unbound (allocated for one named remote domain to bind to), or bound to a
//! port of another domain. Port 0 is never allocated, so a zero in a guest's variable never
//! names a live port; ports are handed out lowest first, so the first allocation of a fresh
//! domain is port 1 (the workloads rely on it to find their peer's port).
//!
//! A bound port also keeps its peer domain itself (Xen's `u.interdomain.remote_dom` in
//! `struct evtchn`), as a `Weak` to the hypervisor's domain object `D`: a send reaches the
//! far end through it ([`PortTable::route`]), without the global domain table and its lock,
//! and without raising the peer's reference count (the hypervisor frees a domain only a
//! grace period after every binding to it is gone, `arch::rcu`, as Xen's `domain_destroy`
//! frees it by `call_rcu`). It is dropped whenever the binding goes (closed here or at the
//! far end, the far end destroyed), and a `Weak` reaches only the object it was made from:
//! never a later domain given the same id.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use abi::control::DomainId;
use abi::shared::{MAX_PORTS, MAX_VCPUS};

/// Virtual IRQs a port may be bound to (`abi::hypercall::virq`).
const VIRQS: usize = abi::hypercall::virq::COUNT as usize;

/// The remote of a port whose remote is gone ([`PortTable::orphan`]): no domain's id.
pub const NO_DOMAIN: DomainId = DomainId::MAX;

/// One port's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Free,
    /// Waiting for `remote` to bind to it.
    Unbound {
        remote: DomainId,
    },
    /// Connected to `port` of domain `remote`.
    Interdomain {
        remote: DomainId,
        port: u32,
    },
    /// Bound to a virtual IRQ (`abi::hypercall::virq`).
    Virq {
        virq: u32,
    },
}

/// Why a port operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortError {
    /// Every port is in use.
    Full,
    /// No such port, or it is free.
    NotAllocated,
    /// The port is not in the state the operation needs (e.g. binding to a bound port, or
    /// to a port allocated for another domain).
    WrongState,
}

/// Why an event sent on a port goes nowhere ([`PortTable::route`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The port is not bound to another domain's (free, unbound, a VIRQ's): Xen's `-EINVAL`.
    NotBound,
    /// It is, but that domain is gone (its object dropped; not yet unbound here): `-ESRCH`,
    /// as when the domain table had no domain of that id.
    PeerGone,
}

/// A domain's ports, grown as they are allocated (most domains use one or two), up to
/// [`MAX_PORTS`]. `D` is the domain object a bound port reaches its peer by (the
/// hypervisor's `Domain`; `()` where only the states matter).
pub struct PortTable<D = ()> {
    /// Index = port; index 0 is never handed out.
    ports: Vec<Port>,
    /// The vCPU each port notifies (Xen's `notify_vcpu_id`), same index; 0 by default.
    vcpus: Vec<u32>,
    /// The peer domain of each [`Port::Interdomain`] port (Xen's `remote_dom`), same
    /// index; `Weak::new()` (no allocation, upgrades to nothing) for every other port.
    peers: Vec<Weak<D>>,
    /// Its domain has died ([`PortTable::close_all`]): no port is allocated or bound again.
    closed: bool,
    /// Where the search for a free port starts: every port below it is in use. The lowest
    /// free port is found without walking the ports in use each time (a full table is
    /// 1024, walked with the table's lock held: a peer's `BindInterdomain` holds this
    /// table's lock while it allocates in its own).
    free_from: usize,
    /// The port bound to each virtual IRQ of each vCPU (0: none; port 0 is never handed
    /// out; a slot whose port was closed since is told by that port's state, which
    /// [`PortTable::virq_port`] checks), so that a look-up is one look, not a walk of every
    /// port: every
    /// timer interrupt that fires a vCPU's timer looks its port up, on whatever CPU it
    /// fires, whatever domain that CPU runs (an audit of session 22: 64 vCPUs' timers due
    /// at once, in a table of 1024 ports, walked 64 tables in one interrupt).
    virq_ports: [[u16; MAX_VCPUS]; VIRQS],
}

impl<D> Default for PortTable<D> {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            vcpus: Vec::new(),
            peers: Vec::new(),
            closed: false,
            free_from: 1,
            virq_ports: [[0; MAX_VCPUS]; VIRQS],
        }
    }
}

impl<D> core::fmt::Debug for PortTable<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PortTable")
            .field("ports", &self.ports)
            .field("vcpus", &self.vcpus)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<D> PortTable<D> {
    /// A port's state (`Free` for one out of range).
    pub fn get(&self, port: u32) -> Port {
        self.ports.get(port as usize).copied().unwrap_or(Port::Free)
    }

    /// The vCPU (index within the domain) an event on `port` notifies.
    pub fn notify_vcpu(&self, port: u32) -> u32 {
        self.vcpus.get(port as usize).copied().unwrap_or(0)
    }

    /// Makes `port`, which must be in use and not a VIRQ's, notify vCPU `vcpu` from now on.
    /// A VIRQ stays on the vCPU it was bound for (Xen's `evtchn_bind_vcpu` refuses
    /// per-vCPU VIRQs): checked here, under the table's lock, since between a check of the
    /// caller's and this call another vCPU could close the port and bind a VIRQ at its
    /// number, which would then notify the wrong vCPU and be lost to its own
    /// ([`PortTable::virq_port`] finds it by vCPU).
    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), PortError> {
        match self.get(port) {
            Port::Free => Err(PortError::NotAllocated),
            Port::Virq { .. } => Err(PortError::WrongState),
            _ => {
                self.vcpus[port as usize] = vcpu;
                Ok(())
            }
        }
    }

    fn alloc(&mut self, state: Port, peer: Weak<D>) -> Result<u32, PortError> {
        if self.closed {
            return Err(PortError::WrongState);
        }
        if self.ports.is_empty() {
            self.push_free();
        }
        let from = self.free_from.max(1);
        let free = match (from..self.ports.len()).find(|&p| self.ports[p] == Port::Free) {
            Some(p) => p,
            None if self.ports.len() < MAX_PORTS => {
                self.push_free();
                self.ports.len() - 1
            }
            None => return Err(PortError::Full),
        };
        self.ports[free] = state;
        self.vcpus[free] = 0;
        self.peers[free] = peer;
        self.free_from = free + 1;
        Ok(free as u32)
    }

    fn push_free(&mut self) {
        self.ports.push(Port::Free);
        self.vcpus.push(0);
        self.peers.push(Weak::new());
    }

    /// Sets `port`'s state; its peer goes unless it stays bound to the same one.
    fn set(&mut self, port: u32, state: Port) {
        if state == Port::Free {
            self.free_from = self.free_from.min(port as usize);
        }
        self.ports[port as usize] = state;
        if !matches!(state, Port::Interdomain { .. }) {
            self.peers[port as usize] = Weak::new();
        }
    }

    /// Allocates a port for `remote` to bind to.
    pub fn alloc_unbound(&mut self, remote: DomainId) -> Result<u32, PortError> {
        self.alloc(Port::Unbound { remote }, Weak::new())
    }

    /// Checks that `port` waits for `binder` and connects it to `binder`'s `binder_port`;
    /// `peer` is `binder`'s domain object.
    pub fn accept(
        &mut self,
        port: u32,
        binder: DomainId,
        binder_port: u32,
        peer: Weak<D>,
    ) -> Result<(), PortError> {
        match self.get(port) {
            Port::Unbound { remote } if remote == binder => {
                self.ports[port as usize] = Port::Interdomain {
                    remote: binder,
                    port: binder_port,
                };
                self.peers[port as usize] = peer;
                Ok(())
            }
            Port::Free => Err(PortError::NotAllocated),
            _ => Err(PortError::WrongState),
        }
    }

    /// Allocates a port already connected to `port` of `remote` (the binder's side);
    /// `peer` is `remote`'s domain object.
    pub fn alloc_bound(
        &mut self,
        remote: DomainId,
        port: u32,
        peer: Weak<D>,
    ) -> Result<u32, PortError> {
        self.alloc(Port::Interdomain { remote, port }, peer)
    }

    /// Where an event sent on `port` goes: the peer domain's object and its port (Xen's
    /// `evtchn_send` reads `remote_dom` and `remote_port` from the channel), found without
    /// any table of domains. The peer's object is the one the port was bound to: if that
    /// domain is gone (no strong reference left), [`RouteError::PeerGone`], even when a new
    /// domain has its id. The object comes as the binding's `Weak`, not upgraded (a send
    /// raises no reference count): the caller reaches it while the table's lock is held, or
    /// past it only under the hypervisor's rule that a domain is freed a grace period after
    /// its bindings go (`arch::rcu::Reached`). The caller must still check the far end under
    /// its lock ([`PortTable::deliverable`]): between this and the delivery the binding may
    /// go.
    pub fn route(&self, port: u32) -> Result<(&Weak<D>, u32), RouteError> {
        let Port::Interdomain { port: rport, .. } = self.get(port) else {
            return Err(RouteError::NotBound);
        };
        let peer = &self.peers[port as usize];
        if peer.strong_count() == 0 {
            return Err(RouteError::PeerGone);
        }
        Ok((peer, rport))
    }

    /// The domain object of `port`'s peer, if it is bound and the peer still exists.
    pub fn peer(&self, port: u32) -> Option<Arc<D>> {
        self.route(port).ok().and_then(|(d, _)| d.upgrade())
    }

    /// Binds a new port to virtual IRQ `virq` of vCPU `vcpu` (Xen's VIRQs are per vCPU:
    /// each vCPU has its own timer); one port per VIRQ and vCPU.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, PortError> {
        if self.virq_port(virq, vcpu).is_some() {
            return Err(PortError::WrongState);
        }
        let port = self.alloc(Port::Virq { virq }, Weak::new())?;
        self.vcpus[port as usize] = vcpu;
        if let Some(slot) = self.virq_slot(virq, vcpu) {
            *slot = port as u16;
        }
        Ok(port)
    }

    /// The port bound to `virq` of vCPU `vcpu`, if any: one look for the VIRQs and vCPUs a
    /// domain can have, a walk of the ports for others (none is ever bound).
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<u32> {
        let bound = |p: usize| {
            self.ports.get(p) == Some(&Port::Virq { virq }) && self.vcpus.get(p) == Some(&vcpu)
        };
        match self
            .virq_ports
            .get(virq as usize)
            .and_then(|v| v.get(vcpu as usize))
        {
            Some(&p) => (p != 0 && bound(usize::from(p))).then_some(u32::from(p)),
            None => (0..self.ports.len()).find(|&p| bound(p)).map(|p| p as u32),
        }
    }

    /// [`PortTable::virq_ports`]' slot for `virq` of vCPU `vcpu`, if both are in range.
    fn virq_slot(&mut self, virq: u32, vcpu: u32) -> Option<&mut u16> {
        self.virq_ports
            .get_mut(virq as usize)?
            .get_mut(vcpu as usize)
    }

    /// Frees a port just allocated (undoing a bind that the other side refused).
    pub fn release(&mut self, port: u32) {
        if (port as usize) < self.ports.len() {
            self.set(port, Port::Free);
        }
    }

    /// The vCPU to notify of an event that port `from_port` of domain `from` sends to `port`
    /// here, if `port` is still connected to exactly that port; `None` if that binding has
    /// gone (closed, and perhaps the number reused for another binding, or this table is a
    /// later domain's given the sender's old peer's id): the event is dropped, as Xen drops a
    /// send on a port whose far end closed. The sender reads its own end before it looks at
    /// this one, so without this check a close-and-reuse in between delivered its event to
    /// the new binding (Xen's `evtchn_send` holds the sender's channel lock, which
    /// `evtchn_close` takes too).
    pub fn deliverable(&self, port: u32, from: DomainId, from_port: u32) -> Option<u32> {
        (self.get(port)
            == Port::Interdomain {
                remote: from,
                port: from_port,
            })
        .then(|| self.notify_vcpu(port))
    }

    /// Closes `port`; returns what it was connected to, for the caller to unbind the far end.
    pub fn close(&mut self, port: u32) -> Result<Port, PortError> {
        self.close_peer(port).map(|(state, _)| state)
    }

    /// Closes `port`; returns what it was connected to and, if it was bound, the peer's
    /// object if the peer still exists (to unbind the far end through).
    pub fn close_peer(&mut self, port: u32) -> Result<(Port, Option<Arc<D>>), PortError> {
        match self.get(port) {
            Port::Free => Err(PortError::NotAllocated),
            state => {
                let peer = self.peer(port);
                self.set(port, Port::Free);
                Ok((state, peer))
            }
        }
    }

    /// The far end closed: `port` goes back to waiting for that domain, as in Xen, so that a
    /// send on it fails cleanly instead of reaching whatever reuses the far port.
    pub fn peer_closed(&mut self, port: u32, remote: DomainId) {
        if matches!(self.get(port), Port::Interdomain { remote: r, .. } if r == remote) {
            self.set(port, Port::Unbound { remote });
        }
    }

    /// The domain dies: every port in use is closed and returned with the state it had, in
    /// one step under the caller's lock, and none is allocated or bound from now on (Xen's
    /// `evtchn_destroy`, which closes them once `d->is_dying` is set, so no new binding can
    /// slip in). Closing them one by one from a list taken first left a window: a vCPU of
    /// the dying domain still running on another CPU, or a peer binding to it, bound a port
    /// after the list was taken, and that binding outlived the domain (the peer's end stayed
    /// bound to its id, which the next domain given that id then received events on).
    /// Each comes with its peer's object if it was bound and the peer still exists.
    pub fn close_all(&mut self) -> Vec<(u32, Port, Option<Arc<D>>)> {
        self.closed = true;
        let open: Vec<(u32, Port, Option<Arc<D>>)> = self
            .in_use()
            .map(|(port, state)| (port, state, self.peer(port)))
            .collect();
        for &(port, ..) in &open {
            self.set(port, Port::Free);
        }
        open
    }

    /// `remote` is gone (destroyed): ports unbound for it, or still bound to it, become
    /// unbound for no domain ([`NO_DOMAIN`]), so that the next domain given its id (ids are
    /// reused, the lowest free one) cannot bind to them and receive this domain's events.
    /// Returns how many there were.
    pub fn orphan(&mut self, remote: DomainId) -> usize {
        let mut n = 0;
        for port in 0..self.ports.len() as u32 {
            if matches!(self.get(port), Port::Unbound { remote: r } | Port::Interdomain { remote: r, .. } if r == remote)
            {
                self.set(port, Port::Unbound { remote: NO_DOMAIN });
                n += 1;
            }
        }
        n
    }

    /// Every port in use, with its state (for closing them all when the domain dies).
    pub fn in_use(&self) -> impl Iterator<Item = (u32, Port)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| **p != Port::Free)
            .map(|(i, p)| (i as u32, *p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Domain 1's table and domain 2's, with an interdomain channel between them: port `pa`
    /// of the first (allocated unbound for domain 2), bound to by port `pb` of the second.
    fn connected() -> (PortTable, PortTable, u32, u32) {
        let (mut a, mut b) = (PortTable::default(), PortTable::default());
        let pa = a.alloc_unbound(2).unwrap();
        let pb = b.alloc_bound(1, pa, Weak::new()).unwrap();
        a.accept(pa, 2, pb, Weak::new()).unwrap();
        (a, b, pa, pb)
    }

    /// Tables whose peers are not looked at.
    type PortTable = super::PortTable<()>;

    #[test]
    fn a_virq_port_stays_on_its_vcpu() {
        let mut t = PortTable::default();
        let p = t.bind_virq(0, 0).unwrap();
        assert_eq!(t.bind_vcpu(p, 1), Err(PortError::WrongState));
        assert_eq!(t.notify_vcpu(p), 0);
        assert_eq!(t.virq_port(0, 0), Some(p));
        let u = t.alloc_unbound(2).unwrap();
        assert_eq!(t.bind_vcpu(u, 1), Ok(()));
        assert_eq!(t.notify_vcpu(u), 1);
    }

    #[test]
    fn first_port_is_one_and_binding_connects_both_ends() {
        let (a, b, pa, pb) = connected();
        assert_eq!(pa, 1);
        assert_eq!(
            a.get(pa),
            Port::Interdomain {
                remote: 2,
                port: pb
            }
        );
        assert_eq!(
            b.get(pb),
            Port::Interdomain {
                remote: 1,
                port: pa
            }
        );
    }

    #[test]
    fn only_the_named_domain_can_bind_and_only_once() {
        let mut a = PortTable::default();
        let p = a.alloc_unbound(2).unwrap();
        assert_eq!(a.accept(p, 3, 1, Weak::new()), Err(PortError::WrongState));
        assert_eq!(a.accept(p, 2, 1, Weak::new()), Ok(()));
        assert_eq!(a.accept(p, 2, 1, Weak::new()), Err(PortError::WrongState));
        assert_eq!(a.accept(7, 2, 1, Weak::new()), Err(PortError::NotAllocated));
        assert_eq!(
            a.accept(u32::MAX, 2, 1, Weak::new()),
            Err(PortError::NotAllocated)
        );
    }

    #[test]
    fn closing_frees_and_the_far_end_falls_back_to_unbound() {
        let (mut a, mut b, pa, pb) = connected();
        assert_eq!(
            b.close(pb),
            Ok(Port::Interdomain {
                remote: 1,
                port: pa
            })
        );
        a.peer_closed(pa, 2);
        assert_eq!(a.get(pa), Port::Unbound { remote: 2 });
        assert_eq!(b.close(pb), Err(PortError::NotAllocated));
        assert_eq!(b.get(pb), Port::Free);
        // A freed port is reused, lowest first.
        assert_eq!(b.alloc_unbound(5), Ok(pb));
    }

    /// The lowest free port is handed out, and a VIRQ's port is found, exactly as a walk of
    /// every port finds them, through any sequence of allocations, VIRQ binds and closes
    /// (the table keeps both by index: `free_from`, `virq_ports`).
    #[test]
    fn the_indexes_agree_with_a_walk_of_every_port() {
        let mut t = PortTable::default();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let lowest_free = (1..MAX_PORTS as u32).find(|&p| t.get(p) == Port::Free);
            match next(4) {
                0 | 1 => {
                    let got = t.alloc_unbound(2).ok();
                    assert_eq!(got, lowest_free, "not the lowest free port");
                }
                2 => {
                    let (virq, vcpu) = (next(VIRQS as u64) as u32, next(8) as u32);
                    let walked = (0..MAX_PORTS as u32)
                        .find(|&p| t.get(p) == (Port::Virq { virq }) && t.notify_vcpu(p) == vcpu);
                    assert_eq!(t.virq_port(virq, vcpu), walked);
                    match t.bind_virq(virq, vcpu) {
                        Ok(p) => {
                            assert_eq!(walked, None);
                            assert_eq!(Some(p), lowest_free);
                            assert_eq!(t.virq_port(virq, vcpu), Some(p));
                        }
                        Err(e) => assert!(walked.is_some() || e == PortError::Full),
                    }
                }
                _ => {
                    let p = 1 + next(MAX_PORTS as u64 - 1) as u32;
                    if let Port::Virq { virq } = t.get(p) {
                        let vcpu = t.notify_vcpu(p);
                        assert_eq!(t.close(p), Ok(Port::Virq { virq }));
                        assert_eq!(t.virq_port(virq, vcpu), None);
                    } else {
                        let _ = t.close(p);
                    }
                }
            }
        }
        // A VIRQ's port closed and its number reused by another binding is not found as the
        // VIRQ's.
        let p = t
            .in_use()
            .find(|(_, s)| matches!(s, Port::Virq { .. }))
            .map(|(p, _)| p);
        if let Some(p) = p {
            let (Port::Virq { virq }, vcpu) = (t.get(p), t.notify_vcpu(p)) else {
                unreachable!()
            };
            t.close(p).unwrap();
            let lowest = (1..MAX_PORTS as u32).find(|&q| t.get(q) == Port::Free);
            assert_eq!(lowest, Some(p));
            assert_eq!(t.alloc_unbound(3), Ok(p));
            assert_eq!(t.virq_port(virq, vcpu), None);
        }
    }

    #[test]
    fn a_virq_binds_once_per_vcpu_and_is_found() {
        let mut a = PortTable::default();
        let p = a.bind_virq(0, 0).unwrap();
        assert_eq!(a.virq_port(0, 0), Some(p));
        assert_eq!(a.virq_port(1, 0), None);
        assert_eq!(a.virq_port(0, 1), None);
        assert_eq!(a.bind_virq(0, 0), Err(PortError::WrongState));
        let q = a.bind_virq(0, 1).unwrap();
        assert_ne!(p, q);
        assert_eq!(a.virq_port(0, 1), Some(q));
        assert_eq!(a.notify_vcpu(q), 1);
        a.close(p).unwrap();
        assert_eq!(a.virq_port(0, 0), None);
        assert_eq!(a.virq_port(0, 1), Some(q));
    }

    #[test]
    fn ports_notify_vcpu_0_until_rebound_and_reuse_resets_it() {
        let mut a = PortTable::default();
        let p = a.alloc_unbound(2).unwrap();
        assert_eq!(a.notify_vcpu(p), 0);
        a.bind_vcpu(p, 3).unwrap();
        assert_eq!(a.notify_vcpu(p), 3);
        assert_eq!(a.bind_vcpu(p + 1, 1), Err(PortError::NotAllocated));
        a.close(p).unwrap();
        assert_eq!(a.bind_vcpu(p, 1), Err(PortError::NotAllocated));
        let again = a.alloc_unbound(2).unwrap();
        assert_eq!(again, p);
        assert_eq!(a.notify_vcpu(again), 0);
    }

    #[test]
    fn table_fills_up() {
        let mut a = PortTable::default();
        for _ in 1..MAX_PORTS {
            a.alloc_unbound(2).unwrap();
        }
        assert_eq!(a.alloc_unbound(2), Err(PortError::Full));
        assert_eq!(a.in_use().count(), MAX_PORTS - 1);
    }

    #[test]
    fn a_dead_domains_table_closes_every_port_at_once_and_takes_no_more() {
        let (mut a, _, pa, pb) = connected();
        let spare = a.alloc_unbound(2).unwrap();
        let virq = a.bind_virq(0, 0).unwrap();
        let closed: Vec<(u32, Port)> = a.close_all().into_iter().map(|(p, s, _)| (p, s)).collect();
        assert_eq!(
            closed,
            alloc::vec![
                (
                    pa,
                    Port::Interdomain {
                        remote: 2,
                        port: pb
                    }
                ),
                (spare, Port::Unbound { remote: 2 }),
                (virq, Port::Virq { virq: 0 }),
            ]
        );
        assert_eq!(a.in_use().count(), 0);
        // Neither its own vCPUs nor a peer can bind to it any more.
        assert_eq!(a.alloc_unbound(2), Err(PortError::WrongState));
        assert_eq!(
            a.alloc_bound(2, pb, Weak::new()),
            Err(PortError::WrongState)
        );
        assert_eq!(a.bind_virq(1, 0), Err(PortError::WrongState));
        assert_eq!(
            a.accept(spare, 2, 7, Weak::new()),
            Err(PortError::NotAllocated)
        );
    }

    #[test]
    fn ports_for_a_destroyed_domain_cannot_be_bound_by_the_next_one_with_its_id() {
        let mut a = PortTable::default();
        let for_gone = a.alloc_unbound(7).unwrap();
        let bound = a.alloc_bound(7, 3, Weak::new()).unwrap();
        let for_other = a.alloc_unbound(8).unwrap();
        assert_eq!(a.orphan(7), 2);
        // A new domain 7 binds to neither.
        assert_eq!(
            a.accept(for_gone, 7, 1, Weak::new()),
            Err(PortError::WrongState)
        );
        assert_eq!(
            a.accept(bound, 7, 1, Weak::new()),
            Err(PortError::WrongState)
        );
        assert_eq!(a.get(bound), Port::Unbound { remote: NO_DOMAIN });
        assert_eq!(a.accept(for_other, 8, 1, Weak::new()), Ok(()));
        // The owner still closes them.
        assert!(a.close(for_gone).is_ok());
    }

    #[test]
    fn a_send_reaches_only_the_binding_it_was_sent_on() {
        // A (1) port 5 <-> B (2) port 1, notified on vCPU 3.
        let mut b = PortTable::default();
        let pb = b.alloc_unbound(1).unwrap();
        b.accept(pb, 1, 5, Weak::new()).unwrap();
        b.bind_vcpu(pb, 3).unwrap();
        assert_eq!(b.deliverable(pb, 1, 5), Some(3));
        // Only from that domain's that port.
        assert_eq!(b.deliverable(pb, 1, 6), None);
        assert_eq!(b.deliverable(pb, 7, 5), None);
        // A read its end (B, port 1); B closes port 1 and allocates it again for domain 9,
        // or binds a VIRQ there: A's event, arriving now, reaches neither.
        assert!(matches!(
            b.close(pb),
            Ok(Port::Interdomain { remote: 1, port: 5 })
        ));
        assert_eq!(b.deliverable(pb, 1, 5), None);
        assert_eq!(b.alloc_unbound(9), Ok(pb));
        assert_eq!(b.deliverable(pb, 1, 5), None);
        b.release(pb);
        assert_eq!(b.bind_virq(0, 0), Ok(pb));
        assert_eq!(b.deliverable(pb, 1, 5), None);
        // B gone and its id given to a new domain, whose port 1 is bound elsewhere.
        let mut c = PortTable::default();
        let pc = c.alloc_unbound(9).unwrap();
        assert_eq!(pc, pb);
        assert_eq!(c.deliverable(pc, 1, 5), None);
    }

    /// A domain object for the routing tests: its id and its own table.
    struct Dom {
        id: DomainId,
        ports: std::sync::Mutex<super::PortTable<Dom>>,
    }

    fn dom(id: DomainId) -> Arc<Dom> {
        Arc::new(Dom {
            id,
            ports: Default::default(),
        })
    }

    /// Binds a fresh port of `a` to a fresh port of `b` as `evtchn_op` does (`b` allocates
    /// for `a`, `a` binds); returns (a's port, b's port).
    fn bind(a: &Arc<Dom>, b: &Arc<Dom>) -> (u32, u32) {
        let pb = b.ports.lock().unwrap().alloc_unbound(a.id).unwrap();
        let pa = a
            .ports
            .lock()
            .unwrap()
            .alloc_bound(b.id, pb, Arc::downgrade(b))
            .unwrap();
        b.ports
            .lock()
            .unwrap()
            .accept(pb, a.id, pa, Arc::downgrade(a))
            .unwrap();
        (pa, pb)
    }

    /// A send as `evtchn_op Send` makes it: routed by the sender's table, delivered only if
    /// the far end is still bound to exactly that port. Returns the domain and port that got
    /// the event.
    fn send(from: &Arc<Dom>, port: u32) -> Result<Option<(DomainId, u32)>, RouteError> {
        // The hypervisor reaches the peer past the lock by pointer (`arch::rcu::Reached`);
        // here an upgrade stands for it, taken while the lock is held as `Reached` is.
        let (peer, rport) = {
            let table = from.ports.lock().unwrap();
            let (peer, rport) = table.route(port)?;
            (peer.upgrade().ok_or(RouteError::PeerGone)?, rport)
        };
        let delivered = peer
            .ports
            .lock()
            .unwrap()
            .deliverable(rport, from.id, port)
            .is_some();
        Ok(delivered.then_some((peer.id, rport)))
    }

    #[test]
    fn a_bound_port_reaches_its_peer_object_and_no_later_domain_with_its_id() {
        let (a, b) = (dom(1), dom(2));
        let (pa, pb) = bind(&a, &b);
        assert_eq!(send(&a, pa), Ok(Some((2, pb))));
        assert_eq!(send(&b, pb), Ok(Some((1, pa))));
        // Only a bound port routes.
        let unbound = a.ports.lock().unwrap().alloc_unbound(2).unwrap();
        assert_eq!(send(&a, unbound), Err(RouteError::NotBound));
        assert_eq!(send(&a, 900), Err(RouteError::NotBound));
        let virq = a.ports.lock().unwrap().bind_virq(0, 0).unwrap();
        assert_eq!(send(&a, virq), Err(RouteError::NotBound));

        // B is gone (its object dropped) before A's end was unbound, and a new domain B'
        // got id 2, its port `pb` bound to A's port `pa`'s number from a second binding:
        // A's send on `pa` fails as the table lookup did (no such domain), and B' gets
        // nothing.
        let b_weak = Arc::downgrade(&b);
        drop(b);
        assert!(b_weak.upgrade().is_none());
        let b2 = dom(2);
        let (pa2, pb2) = bind(&a, &b2);
        assert_eq!(pb2, pb);
        assert_eq!(send(&a, pa), Err(RouteError::PeerGone));
        assert_eq!(send(&a, pa2), Ok(Some((2, pb2))));

        // Once unbound (as `control::destroy` orphans, or the dying domain's `close_all`
        // tells its peers), A's end no longer keeps B's object at all, and a send on it is
        // refused as on any unbound port.
        assert_eq!(a.ports.lock().unwrap().orphan(2), 3);
        assert_eq!(send(&a, pa), Err(RouteError::NotBound));
        assert_eq!(send(&a, pa2), Err(RouteError::NotBound));
        assert_eq!(Arc::weak_count(&b2), 0, "A still holds B' once unbound");
    }

    #[test]
    fn routing_raises_no_reference_count_and_finds_the_bound_object() {
        let (a, b) = (dom(1), dom(2));
        let (pa, pb) = bind(&a, &b);
        let table = a.ports.lock().unwrap();
        let (peer, rport) = table.route(pa).unwrap();
        assert_eq!(rport, pb);
        assert!(core::ptr::eq(peer.as_ptr(), Arc::as_ptr(&b)));
        assert_eq!(Arc::strong_count(&b), 1, "a send must not take a reference");
        drop(table);
        // Gone (its last `Arc` dropped) while still bound here: not routed to.
        drop(b);
        assert_eq!(
            a.ports.lock().unwrap().route(pa).err(),
            Some(RouteError::PeerGone)
        );
    }

    #[test]
    fn every_unbinding_drops_the_peer_and_the_far_end_drops_ours() {
        let (a, b) = (dom(1), dom(2));
        // Closed at A's end: A lets go of B, and B, told, of A.
        let (pa, pb) = bind(&a, &b);
        assert_eq!(Arc::weak_count(&a), 1);
        assert_eq!(Arc::weak_count(&b), 1);
        let (state, peer) = a.ports.lock().unwrap().close_peer(pa).unwrap();
        assert_eq!(
            state,
            Port::Interdomain {
                remote: 2,
                port: pb
            }
        );
        let peer = peer.expect("B still exists");
        assert!(Arc::ptr_eq(&peer, &b));
        drop(peer);
        assert_eq!(Arc::weak_count(&b), 0);
        b.ports.lock().unwrap().peer_closed(pb, a.id);
        assert_eq!(Arc::weak_count(&a), 0);
        assert_eq!(send(&b, pb), Err(RouteError::NotBound));
        // The number, allocated again, does not route to the old peer.
        let again = a.ports.lock().unwrap().alloc_unbound(2).unwrap();
        assert_eq!(again, pa);
        assert_eq!(send(&a, again), Err(RouteError::NotBound));
        a.ports.lock().unwrap().release(again);

        // A dies: every peer handed back once, and nothing kept.
        let (pa, pb) = bind(&a, &b);
        let closed = a.ports.lock().unwrap().close_all();
        assert_eq!(closed.len(), 1);
        assert!(closed[0].2.as_ref().is_some_and(|d| Arc::ptr_eq(d, &b)));
        drop(closed);
        assert_eq!(Arc::weak_count(&b), 0);
        assert_eq!(send(&a, pa), Err(RouteError::NotBound));
        // B's end still names A until told; the send finds A's end closed: dropped.
        assert_eq!(send(&b, pb), Ok(None));
        b.ports.lock().unwrap().peer_closed(pb, a.id);
        assert_eq!(Arc::weak_count(&a), 0);

        // A binding refused at the far end is released with its peer.
        let c = dom(3);
        let pc = c.ports.lock().unwrap().alloc_unbound(1).unwrap();
        let pb = b
            .ports
            .lock()
            .unwrap()
            .alloc_bound(3, pc, Arc::downgrade(&c))
            .unwrap();
        b.ports.lock().unwrap().release(pb);
        assert_eq!(Arc::weak_count(&c), 0);
    }
}
