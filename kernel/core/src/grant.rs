//! Grant tables: one domain lets another map or copy one of its frames (Xen's
//! `grant_table.c`), as pure bookkeeping tested on the host. The hypervisor keeps a
//! [`GrantTable`] per granting domain and a [`MapTrack`] per mapping domain, and does the
//! page-table and frame-reference work around them (`crate::frame_table` here, the
//! hypervisor's `grant` glue):
//!
//! - a grant holds a general reference on its frame, so the granter cannot give the frame
//!   back to the hypervisor (memory reservation) while another domain might still map it;
//! - a grant cannot end while mapped (`Busy`, Xen's rule: the granter retries once the
//!   grantee unmapped), so a revoked grant is never mapped;
//! - a mapping is recorded in the grantee's map track under a handle, and taking it out is
//!   the only way to unmap it, so a second unmap of one handle finds nothing.
//!
//! Grant references and handles are handed out lowest first, from 1 (reference 0 is never
//! valid), so a fresh domain's first grant is reference 1: the split-device workloads rely
//! on it, having no XenStore to pass references through.

use alloc::vec::Vec;

use abi::control::DomainId;

/// Most grants one domain may have at once, and most mappings one domain may hold.
pub const MAX_GRANTS: usize = 1024;

/// The grantee of a grant whose grantee is gone ([`GrantTable::orphan`]): no domain's id.
pub const NO_GRANTEE: DomainId = DomainId::MAX;

/// One grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The granted machine frame.
    pub frame: u64,
    /// The only domain that may use it.
    pub grantee: DomainId,
    /// Read-only: no writable mapping, no copy into it.
    pub readonly: bool,
    /// Mappings of it the grantee holds now.
    pub maps: u32,
}

/// Why a grant operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// No grant with that reference.
    NoSuchRef,
    /// The grant is for another domain.
    NotGrantee,
    /// A write to a read-only grant.
    ReadOnly,
    /// The grant is mapped: it cannot end yet.
    Busy,
    /// Every reference (or handle) is in use.
    Full,
}

/// Finds the lowest free slot from 1, growing the table up to [`MAX_GRANTS`].
fn free_slot<T>(slots: &mut Vec<Option<T>>) -> Result<usize, GrantError> {
    if slots.is_empty() {
        slots.push(None);
    }
    match (1..slots.len()).find(|&i| slots[i].is_none()) {
        Some(i) => Ok(i),
        None if slots.len() < MAX_GRANTS => {
            slots.push(None);
            Ok(slots.len() - 1)
        }
        None => Err(GrantError::Full),
    }
}

/// A domain's grants, by reference.
#[derive(Debug, Default)]
pub struct GrantTable {
    grants: Vec<Option<Grant>>,
}

impl GrantTable {
    /// Grants `grantee` access to `frame`; returns the reference. The caller takes a
    /// general reference on the frame for the grant's life.
    pub fn grant(
        &mut self,
        frame: u64,
        grantee: DomainId,
        readonly: bool,
    ) -> Result<u32, GrantError> {
        let slot = free_slot(&mut self.grants)?;
        self.grants[slot] = Some(Grant {
            frame,
            grantee,
            readonly,
            maps: 0,
        });
        Ok(slot as u32)
    }

    /// The grant `gref`, if any.
    /// Grants to `grantee`, a domain that is gone, name no domain from now on
    /// ([`NO_GRANTEE`]): domain ids are reused (the lowest free one), and the next domain
    /// given that id must not map or copy what was granted to the one before. The granter
    /// still ends them as before. Returns how many there were.
    pub fn orphan(&mut self, grantee: DomainId) -> usize {
        let mut n = 0;
        for g in self.grants.iter_mut().flatten() {
            if g.grantee == grantee {
                g.grantee = NO_GRANTEE;
                n += 1;
            }
        }
        n
    }

    pub fn get(&self, gref: u32) -> Option<Grant> {
        self.grants.get(gref as usize).copied().flatten()
    }

    /// Ends grant `gref`; returns its frame, whose grant reference the caller drops.
    pub fn end(&mut self, gref: u32) -> Result<u64, GrantError> {
        let g = self.get(gref).ok_or(GrantError::NoSuchRef)?;
        if g.maps > 0 {
            return Err(GrantError::Busy);
        }
        self.grants[gref as usize] = None;
        Ok(g.frame)
    }

    /// Checks that `grantee` may use grant `gref` (for writing if `write`); returns the
    /// frame.
    pub fn check(&self, gref: u32, grantee: DomainId, write: bool) -> Result<u64, GrantError> {
        let g = self.get(gref).ok_or(GrantError::NoSuchRef)?;
        if g.grantee != grantee {
            return Err(GrantError::NotGrantee);
        }
        if write && g.readonly {
            return Err(GrantError::ReadOnly);
        }
        Ok(g.frame)
    }

    /// Counts a mapping of `gref` by `grantee` (checked as by [`GrantTable::check`]);
    /// returns the frame.
    pub fn map(&mut self, gref: u32, grantee: DomainId, write: bool) -> Result<u64, GrantError> {
        let frame = self.check(gref, grantee, write)?;
        if let Some(Some(g)) = self.grants.get_mut(gref as usize) {
            g.maps += 1;
        }
        Ok(frame)
    }

    /// Uncounts a mapping of `gref` of `frame` (nothing if the grant is gone or changed).
    pub fn unmap(&mut self, gref: u32, frame: u64) {
        if let Some(Some(g)) = self.grants.get_mut(gref as usize)
            && g.frame == frame
        {
            g.maps = g.maps.saturating_sub(1);
        }
    }

    /// Every grant's frame, emptying the table (the granter died): the caller drops each
    /// grant's reference.
    pub fn drain(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.grants)
            .into_iter()
            .flatten()
            .map(|g| g.frame)
            .collect()
    }

    /// Grants in use.
    pub fn len(&self) -> usize {
        self.grants.iter().flatten().count()
    }

    /// Whether no grant is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A grant a domain has mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub granter: DomainId,
    pub gref: u32,
    pub frame: u64,
    /// The level-1 table and entry holding the mapping.
    pub l1: u64,
    pub index: usize,
    pub writable: bool,
}

/// A domain's grant mappings, by handle.
#[derive(Debug, Default)]
pub struct MapTrack {
    maps: Vec<Option<Mapping>>,
}

impl MapTrack {
    /// Records a mapping; returns its handle.
    pub fn add(&mut self, mapping: Mapping) -> Result<u32, GrantError> {
        let slot = free_slot(&mut self.maps)?;
        self.maps[slot] = Some(mapping);
        Ok(slot as u32)
    }

    /// Takes the mapping of `handle` out (to unmap it); `None` if there is none, e.g. on a
    /// second unmap.
    pub fn take(&mut self, handle: u32) -> Option<Mapping> {
        self.maps.get_mut(handle as usize).and_then(Option::take)
    }

    /// Every mapping, emptying the track (the mapping domain died).
    pub fn drain(&mut self) -> Vec<Mapping> {
        core::mem::take(&mut self.maps)
            .into_iter()
            .flatten()
            .collect()
    }

    /// Mappings held.
    pub fn len(&self) -> usize {
        self.maps.iter().flatten().count()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(gref: u32) -> Mapping {
        Mapping {
            granter: 1,
            gref,
            frame: 0x100,
            l1: 0x200,
            index: 3,
            writable: true,
        }
    }

    #[test]
    fn references_start_at_one_and_are_reused_lowest_first() {
        let mut t = GrantTable::default();
        assert_eq!(t.grant(0x10, 2, false), Ok(1));
        assert_eq!(t.grant(0x11, 2, false), Ok(2));
        assert_eq!(t.end(1), Ok(0x10));
        assert_eq!(t.grant(0x12, 3, true), Ok(1));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn only_the_grantee_uses_a_grant_and_read_only_means_it() {
        let mut t = GrantTable::default();
        let r = t.grant(0x10, 2, true).unwrap();
        assert_eq!(t.check(r, 3, false), Err(GrantError::NotGrantee));
        assert_eq!(t.check(r, 2, true), Err(GrantError::ReadOnly));
        assert_eq!(t.check(r, 2, false), Ok(0x10));
        assert_eq!(t.map(r, 2, true), Err(GrantError::ReadOnly));
        assert_eq!(t.get(r).unwrap().maps, 0);
        assert_eq!(t.check(0, 2, false), Err(GrantError::NoSuchRef));
        assert_eq!(t.check(99, 2, false), Err(GrantError::NoSuchRef));
    }

    #[test]
    fn a_mapped_grant_cannot_end_until_unmapped() {
        let mut t = GrantTable::default();
        let r = t.grant(0x10, 2, false).unwrap();
        assert_eq!(t.map(r, 2, true), Ok(0x10));
        assert_eq!(t.map(r, 2, false), Ok(0x10));
        assert_eq!(t.end(r), Err(GrantError::Busy));
        t.unmap(r, 0x10);
        assert_eq!(t.end(r), Err(GrantError::Busy));
        t.unmap(r, 0x10);
        assert_eq!(t.end(r), Ok(0x10));
        // Revoked: no longer mappable.
        assert_eq!(t.map(r, 2, false), Err(GrantError::NoSuchRef));
        assert_eq!(t.end(r), Err(GrantError::NoSuchRef));
    }

    #[test]
    fn an_unmap_of_a_reused_reference_does_not_touch_the_new_grant() {
        let mut t = GrantTable::default();
        let r = t.grant(0x10, 2, false).unwrap();
        t.map(r, 2, false).unwrap();
        t.unmap(r, 0x10);
        t.end(r).unwrap();
        let again = t.grant(0x20, 2, false).unwrap();
        assert_eq!(again, r);
        t.map(again, 2, false).unwrap();
        t.unmap(again, 0x10); // a stale unmap of the old frame
        assert_eq!(t.get(again).unwrap().maps, 1);
    }

    #[test]
    fn handles_unmap_once() {
        let mut m = MapTrack::default();
        let h = m.add(mapping(1)).unwrap();
        assert_eq!(h, 1);
        assert_eq!(m.take(h), Some(mapping(1)));
        assert_eq!(m.take(h), None);
        assert_eq!(m.take(0), None);
        assert_eq!(m.take(12345), None);
    }

    #[test]
    fn death_drains_everything() {
        let mut t = GrantTable::default();
        t.grant(0x10, 2, false).unwrap();
        t.grant(0x11, 2, false).unwrap();
        let r = t.grant(0x12, 2, false).unwrap();
        t.map(r, 2, false).unwrap();
        let mut frames = t.drain();
        frames.sort();
        assert_eq!(frames, [0x10, 0x11, 0x12]);
        assert!(t.is_empty());
        let mut m = MapTrack::default();
        m.add(mapping(1)).unwrap();
        m.add(mapping(2)).unwrap();
        assert_eq!(m.drain().len(), 2);
        assert!(m.is_empty());
    }

    #[test]
    fn tables_fill_up() {
        let mut t = GrantTable::default();
        for _ in 1..MAX_GRANTS {
            t.grant(1, 2, false).unwrap();
        }
        assert_eq!(t.grant(1, 2, false), Err(GrantError::Full));
        let mut m = MapTrack::default();
        for _ in 1..MAX_GRANTS {
            m.add(mapping(1)).unwrap();
        }
        assert_eq!(m.add(mapping(1)), Err(GrantError::Full));
    }

    #[test]
    fn grants_to_a_destroyed_domain_reach_no_domain_given_its_id_later() {
        let mut t = GrantTable::default();
        let to_gone = t.grant(0x5000, 7, false).unwrap();
        let to_other = t.grant(0x6000, 8, true).unwrap();
        assert_eq!(t.orphan(7), 1);
        // A new domain 7 (the id reused) can neither map nor copy it.
        assert_eq!(t.map(to_gone, 7, false), Err(GrantError::NotGrantee));
        assert_eq!(t.check(to_gone, 7, true), Err(GrantError::NotGrantee));
        // Other grants are untouched, and the granter still ends its own.
        assert_eq!(t.check(to_other, 8, false), Ok(0x6000));
        assert_eq!(t.end(to_gone), Ok(0x5000));
    }
}
