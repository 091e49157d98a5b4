//! Event-channel ports: the state machine of one domain's ports (Xen's `evtchn_*`), as pure
//! logic, tested on the host. The hypervisor keeps one [`PortTable`] per domain and does the
//! cross-domain steps (binding both ends, marking events pending, waking) around it.
//!
//! A port is free, unbound (allocated for one named remote domain to bind to), or bound to a
//! port of another domain. Port 0 is never allocated, so a zero in a guest's variable never
//! names a live port; ports are handed out lowest first, so the first allocation of a fresh
//! domain is port 1 (the workloads rely on it to find their peer's port).

use alloc::vec::Vec;

use abi::control::DomainId;
use abi::shared::MAX_PORTS;

/// One port's state.
/// The remote of a port whose remote is gone ([`PortTable::orphan`]): no domain's id.
pub const NO_DOMAIN: DomainId = DomainId::MAX;

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

/// A domain's ports, grown as they are allocated (most domains use one or two), up to
/// [`MAX_PORTS`].
#[derive(Clone, Debug, Default)]
pub struct PortTable {
    /// Index = port; index 0 is never handed out.
    ports: Vec<Port>,
    /// The vCPU each port notifies (Xen's `notify_vcpu_id`), same index; 0 by default.
    vcpus: Vec<u32>,
    /// Its domain has died ([`PortTable::close_all`]): no port is allocated or bound again.
    closed: bool,
}

impl PortTable {
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

    fn alloc(&mut self, state: Port) -> Result<u32, PortError> {
        if self.closed {
            return Err(PortError::WrongState);
        }
        if self.ports.is_empty() {
            self.ports.push(Port::Free);
            self.vcpus.push(0);
        }
        let free = match (1..self.ports.len()).find(|&p| self.ports[p] == Port::Free) {
            Some(p) => p,
            None if self.ports.len() < MAX_PORTS => {
                self.ports.push(Port::Free);
                self.vcpus.push(0);
                self.ports.len() - 1
            }
            None => return Err(PortError::Full),
        };
        self.ports[free] = state;
        self.vcpus[free] = 0;
        Ok(free as u32)
    }

    /// Allocates a port for `remote` to bind to.
    pub fn alloc_unbound(&mut self, remote: DomainId) -> Result<u32, PortError> {
        self.alloc(Port::Unbound { remote })
    }

    /// Checks that `port` waits for `binder` and connects it to `binder`'s `binder_port`.
    pub fn accept(
        &mut self,
        port: u32,
        binder: DomainId,
        binder_port: u32,
    ) -> Result<(), PortError> {
        match self.get(port) {
            Port::Unbound { remote } if remote == binder => {
                self.ports[port as usize] = Port::Interdomain {
                    remote: binder,
                    port: binder_port,
                };
                Ok(())
            }
            Port::Free => Err(PortError::NotAllocated),
            _ => Err(PortError::WrongState),
        }
    }

    /// Allocates a port already connected to `port` of `remote` (the binder's side).
    pub fn alloc_bound(&mut self, remote: DomainId, port: u32) -> Result<u32, PortError> {
        self.alloc(Port::Interdomain { remote, port })
    }

    /// Binds a new port to virtual IRQ `virq` of vCPU `vcpu` (Xen's VIRQs are per vCPU:
    /// each vCPU has its own timer); one port per VIRQ and vCPU.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, PortError> {
        if self.virq_port(virq, vcpu).is_some() {
            return Err(PortError::WrongState);
        }
        let port = self.alloc(Port::Virq { virq })?;
        self.vcpus[port as usize] = vcpu;
        Ok(port)
    }

    /// The port bound to `virq` of vCPU `vcpu`, if any.
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<u32> {
        self.ports
            .iter()
            .zip(&self.vcpus)
            .position(|(p, v)| *p == (Port::Virq { virq }) && *v == vcpu)
            .map(|p| p as u32)
    }

    /// Frees a port just allocated (undoing a bind that the other side refused).
    pub fn release(&mut self, port: u32) {
        if let Some(p) = self.ports.get_mut(port as usize) {
            *p = Port::Free;
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
        match self.get(port) {
            Port::Free => Err(PortError::NotAllocated),
            state => {
                self.ports[port as usize] = Port::Free;
                Ok(state)
            }
        }
    }

    /// The far end closed: `port` goes back to waiting for that domain, as in Xen, so that a
    /// send on it fails cleanly instead of reaching whatever reuses the far port.
    pub fn peer_closed(&mut self, port: u32, remote: DomainId) {
        if let Some(p) = self.ports.get_mut(port as usize)
            && matches!(*p, Port::Interdomain { remote: r, .. } if r == remote)
        {
            *p = Port::Unbound { remote };
        }
    }

    /// The domain dies: every port in use is closed and returned with the state it had, in
    /// one step under the caller's lock, and none is allocated or bound from now on (Xen's
    /// `evtchn_destroy`, which closes them once `d->is_dying` is set, so no new binding can
    /// slip in). Closing them one by one from a list taken first left a window: a vCPU of
    /// the dying domain still running on another CPU, or a peer binding to it, bound a port
    /// after the list was taken, and that binding outlived the domain (the peer's end stayed
    /// bound to its id, which the next domain given that id then received events on).
    pub fn close_all(&mut self) -> Vec<(u32, Port)> {
        self.closed = true;
        let open: Vec<(u32, Port)> = self.in_use().collect();
        for &(port, _) in &open {
            self.ports[port as usize] = Port::Free;
        }
        open
    }

    /// `remote` is gone (destroyed): ports unbound for it, or still bound to it, become
    /// unbound for no domain ([`NO_DOMAIN`]), so that the next domain given its id (ids are
    /// reused, the lowest free one) cannot bind to them and receive this domain's events.
    /// Returns how many there were.
    pub fn orphan(&mut self, remote: DomainId) -> usize {
        let mut n = 0;
        for p in &mut self.ports {
            if matches!(*p, Port::Unbound { remote: r } | Port::Interdomain { remote: r, .. } if r == remote)
            {
                *p = Port::Unbound { remote: NO_DOMAIN };
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
        let (mut a, mut b) = (PortTable::default(), PortTable::default());
        let pa = a.alloc_unbound(2).unwrap();
        assert_eq!(pa, 1);
        let pb = b.alloc_bound(1, pa).unwrap();
        a.accept(pa, 2, pb).unwrap();
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
        assert_eq!(a.accept(p, 3, 1), Err(PortError::WrongState));
        assert_eq!(a.accept(p, 2, 1), Ok(()));
        assert_eq!(a.accept(p, 2, 1), Err(PortError::WrongState));
        assert_eq!(a.accept(7, 2, 1), Err(PortError::NotAllocated));
        assert_eq!(a.accept(u32::MAX, 2, 1), Err(PortError::NotAllocated));
    }

    #[test]
    fn closing_frees_and_the_far_end_falls_back_to_unbound() {
        let (mut a, mut b) = (PortTable::default(), PortTable::default());
        let pa = a.alloc_unbound(2).unwrap();
        let pb = b.alloc_bound(1, pa).unwrap();
        a.accept(pa, 2, pb).unwrap();
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
        let (mut a, mut b) = (PortTable::default(), PortTable::default());
        let pa = a.alloc_unbound(2).unwrap();
        let pb = b.alloc_bound(1, pa).unwrap();
        a.accept(pa, 2, pb).unwrap();
        let spare = a.alloc_unbound(2).unwrap();
        let virq = a.bind_virq(0, 0).unwrap();
        let closed = a.close_all();
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
        assert_eq!(a.alloc_bound(2, pb), Err(PortError::WrongState));
        assert_eq!(a.bind_virq(1, 0), Err(PortError::WrongState));
        assert_eq!(a.accept(spare, 2, 7), Err(PortError::NotAllocated));
    }

    #[test]
    fn ports_for_a_destroyed_domain_cannot_be_bound_by_the_next_one_with_its_id() {
        let mut a = PortTable::default();
        let for_gone = a.alloc_unbound(7).unwrap();
        let bound = a.alloc_bound(7, 3).unwrap();
        let for_other = a.alloc_unbound(8).unwrap();
        assert_eq!(a.orphan(7), 2);
        // A new domain 7 binds to neither.
        assert_eq!(a.accept(for_gone, 7, 1), Err(PortError::WrongState));
        assert_eq!(a.accept(bound, 7, 1), Err(PortError::WrongState));
        assert_eq!(a.get(bound), Port::Unbound { remote: NO_DOMAIN });
        assert_eq!(a.accept(for_other, 8, 1), Ok(()));
        // The owner still closes them.
        assert!(a.close(for_gone).is_ok());
    }

    #[test]
    fn a_send_reaches_only_the_binding_it_was_sent_on() {
        // A (1) port 5 <-> B (2) port 1, notified on vCPU 3.
        let mut b = PortTable::default();
        let pb = b.alloc_unbound(1).unwrap();
        b.accept(pb, 1, 5).unwrap();
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
}
