//! The split block device: requests and responses on its [`crate::io::ring`] (Xen's
//! `public/io/blkif.h`, simplified).
//!
//! A request reads or writes a run of consecutive 512-byte sectors from `sector` on; the data
//! lives in up to [`MAX_SEGMENTS`] pages the frontend granted, each segment naming a page and
//! the sectors of it used (`first_sect..=last_sect`, both in 0..8), taken in order. A
//! response carries the request's `id`, so the backend may answer out of order.
//!
//! Slot encoding (11 words; the ring has 32 slots, as Xen's):
//! - request: `id`; `op | nr_segments << 8`; `sector`; then one word per segment,
//!   `gref | first_sect << 32 | last_sect << 40`;
//! - response: `id`; `op | (status as u16) << 8`.
//!
//! Decoding keeps what the frontend wrote (an unknown op, too many segments, a sector out of
//! range): the backend checks a request with [`BlkRequest::check`] and answers `Error` or
//! `NotSupported`.

use crate::io::ring::{BackRing, FrontRing, Message, coded_field, packed_message};

/// Bytes of a sector.
pub const SECTOR_BYTES: usize = 512;
/// Sectors in a granted page.
pub const SECTORS_PER_PAGE: u8 = 8;
/// Most segments (granted pages) in one request.
pub const MAX_SEGMENTS: usize = 8;

/// What a request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkOp {
    /// Copy sectors of the disk into the segments.
    Read,
    /// Copy the segments onto the disk.
    Write,
    /// Make every write answered so far durable; no segments.
    Flush,
    /// Anything else a frontend wrote (answered `NotSupported`).
    Other(u8),
}

impl BlkOp {
    /// The code in a slot.
    pub fn to_raw(self) -> u8 {
        match self {
            BlkOp::Read => 0,
            BlkOp::Write => 1,
            BlkOp::Flush => 2,
            BlkOp::Other(raw) => raw,
        }
    }

    /// The operation of a slot's code.
    pub fn from_raw(raw: u8) -> BlkOp {
        match raw {
            0 => BlkOp::Read,
            1 => BlkOp::Write,
            2 => BlkOp::Flush,
            other => BlkOp::Other(other),
        }
    }
}

crate::numbered_enum! {
    /// How a request ended (Xen's `BLKIF_RSP_*` values); in a slot, an unknown code reads
    /// as `Error`.
    pub enum BlkStatus: i16 {
        Okay = 0,
        /// Malformed, out of the disk, or a grant that could not be used.
        Error = -1,
        /// An operation the backend does not know.
        NotSupported = -2,
    }
}

coded_field!(BlkOp as u8);
coded_field!(BlkStatus as i16, unknown Error);

/// Part of one granted page: sectors `first_sect..=last_sect` of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub gref: u32,
    pub first_sect: u8,
    pub last_sect: u8,
}

impl Segment {
    /// Whether the sectors are in the page and in order.
    pub fn is_valid(&self) -> bool {
        self.first_sect <= self.last_sect && self.last_sect < SECTORS_PER_PAGE
    }

    /// Sectors it covers (meaningful when valid).
    pub fn sectors(&self) -> u64 {
        u64::from(self.last_sect.saturating_sub(self.first_sect)) + 1
    }

    /// Byte offset of its first sector in the page.
    pub fn offset_bytes(&self) -> usize {
        usize::from(self.first_sect) * SECTOR_BYTES
    }

    /// Bytes it covers (meaningful when valid).
    pub fn len_bytes(&self) -> usize {
        self.sectors() as usize * SECTOR_BYTES
    }

    fn encode(&self) -> u64 {
        u64::from(self.gref) | u64::from(self.first_sect) << 32 | u64::from(self.last_sect) << 40
    }

    fn decode(w: u64) -> Segment {
        Segment {
            gref: w as u32,
            first_sect: (w >> 32) as u8,
            last_sect: (w >> 40) as u8,
        }
    }
}

/// A request (Xen's `blkif_request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkRequest {
    /// Echoed in the response.
    pub id: u64,
    pub op: BlkOp,
    /// First sector of the disk.
    pub sector: u64,
    /// Segments used, as the frontend wrote it (checked by [`BlkRequest::check`]).
    pub nr_segments: u8,
    pub segments: [Segment; MAX_SEGMENTS],
}

impl BlkRequest {
    /// A request with no segments yet.
    pub fn new(id: u64, op: BlkOp, sector: u64) -> BlkRequest {
        BlkRequest {
            id,
            op,
            sector,
            nr_segments: 0,
            segments: [Segment::default(); MAX_SEGMENTS],
        }
    }

    /// Appends a segment; false if there are [`MAX_SEGMENTS`] already.
    pub fn push_segment(&mut self, seg: Segment) -> bool {
        let n = usize::from(self.nr_segments);
        if n >= MAX_SEGMENTS {
            return false;
        }
        self.segments[n] = seg;
        self.nr_segments += 1;
        true
    }

    /// The segments in use (at most [`MAX_SEGMENTS`], whatever `nr_segments` says).
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..usize::from(self.nr_segments).min(MAX_SEGMENTS)]
    }

    /// Checks the request against a disk of `disk_sectors` sectors; returns the sectors it
    /// transfers, or the status to answer with. A read or write has 1 to [`MAX_SEGMENTS`]
    /// valid segments and stays on the disk; a flush transfers nothing (its segments are
    /// ignored).
    pub fn check(&self, disk_sectors: u64) -> Result<u64, BlkStatus> {
        match self.op {
            BlkOp::Flush => Ok(0),
            BlkOp::Other(_) => Err(BlkStatus::NotSupported),
            BlkOp::Read | BlkOp::Write => {
                let n = usize::from(self.nr_segments);
                if n == 0 || n > MAX_SEGMENTS {
                    return Err(BlkStatus::Error);
                }
                if !self.segments().iter().all(Segment::is_valid) {
                    return Err(BlkStatus::Error);
                }
                let total: u64 = self.segments().iter().map(Segment::sectors).sum();
                match self.sector.checked_add(total) {
                    Some(end) if end <= disk_sectors => Ok(total),
                    _ => Err(BlkStatus::Error),
                }
            }
        }
    }
}

impl Message for BlkRequest {
    const WORDS: usize = 3 + MAX_SEGMENTS;

    fn encode(&self, w: &mut [u64]) {
        w[0] = self.id;
        w[1] = u64::from(self.op.to_raw()) | u64::from(self.nr_segments) << 8;
        w[2] = self.sector;
        for (word, seg) in w[3..3 + MAX_SEGMENTS].iter_mut().zip(&self.segments) {
            *word = seg.encode();
        }
    }

    fn decode(w: &[u64]) -> BlkRequest {
        let mut segments = [Segment::default(); MAX_SEGMENTS];
        for (seg, &word) in segments.iter_mut().zip(&w[3..3 + MAX_SEGMENTS]) {
            *seg = Segment::decode(word);
        }
        BlkRequest {
            id: w[0],
            op: BlkOp::from_raw(w[1] as u8),
            sector: w[2],
            nr_segments: (w[1] >> 8) as u8,
            segments,
        }
    }
}

/// A response (Xen's `blkif_response`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkResponse {
    pub id: u64,
    pub op: BlkOp,
    pub status: BlkStatus,
}

packed_message! {
    BlkResponse, 2 words {
        id: w[0],
        op: w[1],
        status: w[1] >> 8,
    }
}

/// The frontend's end of a block ring.
pub type BlkFrontRing<'a> = FrontRing<'a, BlkRequest, BlkResponse>;
/// The backend's end of a block ring.
pub type BlkBackRing<'a> = BackRing<'a, BlkRequest, BlkResponse>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ring::roundtrip;

    fn seg(gref: u32, first: u8, last: u8) -> Segment {
        Segment {
            gref,
            first_sect: first,
            last_sect: last,
        }
    }

    #[test]
    fn requests_and_responses_survive_encoding() {
        let mut req = BlkRequest::new(u64::MAX - 3, BlkOp::Write, 1 << 40);
        assert!(req.push_segment(seg(7, 0, 7)));
        assert!(req.push_segment(seg(u32::MAX, 3, 5)));
        assert_eq!(roundtrip(&req), req);
        for status in [BlkStatus::Okay, BlkStatus::Error, BlkStatus::NotSupported] {
            let rsp = BlkResponse {
                id: 42,
                op: BlkOp::Flush,
                status,
            };
            assert_eq!(roundtrip(&rsp), rsp);
        }
        assert_eq!(BlkRequest::WORDS, 11);
        assert_eq!(BlkFrontRing::SIZE, 32);
    }

    /// A response's words are those the module's slot encoding describes.
    #[test]
    fn responses_hold_the_documented_words() {
        let mut w = [u64::MAX; 2];
        BlkResponse {
            id: 9,
            op: BlkOp::Write,
            status: BlkStatus::NotSupported,
        }
        .encode(&mut w);
        assert_eq!(w, [9, 0xfffe << 8 | 1]);
        let rsp = BlkResponse::decode(&[5, 0xffff_ffff_ff00 << 8 | 7]);
        assert_eq!(rsp.op, BlkOp::Other(7));
        assert_eq!(rsp.status, BlkStatus::Error);
    }

    #[test]
    fn unknown_codes_are_kept_or_errors() {
        assert_eq!(BlkOp::from_raw(9), BlkOp::Other(9));
        assert_eq!(BlkOp::from_raw(9).to_raw(), 9);
        assert_eq!(BlkStatus::from_raw(-77), None);
        let unknown = BlkResponse::decode(&[5, (-77i16 as u16 as u64) << 8]);
        assert_eq!(unknown.status, BlkStatus::Error);
    }

    #[test]
    fn at_most_eight_segments() {
        let mut req = BlkRequest::new(1, BlkOp::Read, 0);
        for i in 0..MAX_SEGMENTS as u32 {
            assert!(req.push_segment(seg(i + 1, 0, 7)));
        }
        assert!(!req.push_segment(seg(99, 0, 7)));
        assert_eq!(req.check(1000), Ok(64));
        // A frontend that lies about the count is refused, and never read past the array.
        req.nr_segments = 200;
        assert_eq!(req.segments().len(), MAX_SEGMENTS);
        assert_eq!(req.check(1000), Err(BlkStatus::Error));
    }

    #[test]
    fn checks_refuse_what_a_backend_must_not_do() {
        let mut req = BlkRequest::new(1, BlkOp::Read, 10);
        assert_eq!(req.check(100), Err(BlkStatus::Error), "no segments");
        req.push_segment(seg(1, 2, 4));
        req.push_segment(seg(2, 0, 0));
        assert_eq!(req.check(100), Ok(4));
        assert_eq!(req.check(14), Ok(4), "ends exactly at the end of the disk");
        assert_eq!(req.check(13), Err(BlkStatus::Error), "past the end");
        req.sector = u64::MAX - 1;
        assert_eq!(
            req.check(u64::MAX),
            Err(BlkStatus::Error),
            "sector overflow"
        );
        req.sector = 0;
        req.segments[1] = seg(2, 5, 4);
        assert_eq!(req.check(100), Err(BlkStatus::Error), "first after last");
        req.segments[1] = seg(2, 0, 8);
        assert_eq!(req.check(100), Err(BlkStatus::Error), "past the page");
        req.op = BlkOp::Flush;
        assert_eq!(req.check(100), Ok(0));
        req.op = BlkOp::Other(7);
        assert_eq!(req.check(100), Err(BlkStatus::NotSupported));
    }

    #[test]
    fn segments_name_their_bytes() {
        let s = seg(1, 2, 4);
        assert_eq!(s.offset_bytes(), 1024);
        assert_eq!(s.len_bytes(), 1536);
        assert_eq!(s.sectors(), 3);
    }
}
