//! Split devices (the `blk` and `net` workloads): shared pages, grant mappings, the
//! event-channel handshake between a backend and its frontends, and the data patterns both
//! sides check.
//!
//! There is no XenStore: a backend and its frontends find each other by the order Domain0
//! creates domains in (spec order, consecutive ids). The backend group (one domain, `role =
//! 0`, `frontends = N`) comes first, so frontend `k` (1-based) is domain `B + k`:
//! 1. the backend allocates one unbound port per frontend, for `B + 1` .. `B + N` in order,
//!    so the port for frontend `k` is port `k` (ports are handed out lowest first from 1);
//! 2. a frontend `F` does not know `B`; it tries `evtchn_bind(F - k, k)` for `k` = 1, 2, ...
//!    ([`MAX_FRONTENDS`]) until one succeeds (only its own backend allocated port `k` for
//!    it), retrying the sweep every millisecond until the backend has run;
//! 3. knowing `B`, the frontend grants it its ring page(s), whose references are then 1 (and
//!    2) because grant references are handed out lowest first from 1, initialises the
//!    rings, and sends an event;
//! 4. on the first event of port `k` the backend maps references 1 (and 2) of domain `B + k`
//!    at its own pages of `abi::layout::MAP_AREA` ([`map_slot`]) and serves.
//!
//! Pages shared with another domain are only ever touched through atomics (`&[AtomicU64]`,
//! what `abi::io::ring` takes): a frontend's are [`SharedPage`] statics in its image, a
//! backend's are [`Mapping`]s.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::error::Errno;
use abi::io::ring::PAGE_WORDS;

use crate::{hypercall, println, shared, time};

/// Most frontends of one backend (each has a port; a frontend's bind sweep stops here).
pub const MAX_FRONTENDS: u32 = 64;
/// Pages of `MAP_AREA` each frontend's mappings use in its backend ([`map_slot`]).
pub const MAP_PAGES_PER_FRONTEND: u64 = 8;

/// Exit code of a workload whose handshake or setup failed.
pub const EXIT_SETUP: u64 = 2;
/// Exit code of a workload that found wrong data (or a failed request).
pub const EXIT_DATA: u64 = 3;

/// How long a frontend looks for its backend before giving up.
const BIND_TIMEOUT_NS: u64 = 10_000_000_000;

/// A page-aligned page of this domain that it grants to another: a ring, or a data buffer.
/// A `static` of it has interior mutability, so it lives in the writable `.bss`.
#[repr(C, align(4096))]
pub struct SharedPage([AtomicU64; PAGE_WORDS]);

impl SharedPage {
    /// A zeroed page.
    #[allow(
        clippy::new_without_default,
        reason = "built in statics, in const context"
    )]
    pub const fn new() -> SharedPage {
        SharedPage([const { AtomicU64::new(0) }; PAGE_WORDS])
    }

    /// Its words, for `abi::io::ring` or for data.
    pub fn words(&self) -> &[AtomicU64] {
        &self.0
    }

    /// Its virtual address (what `grant_access` takes).
    pub fn va(&self) -> u64 {
        self as *const SharedPage as u64
    }

    /// Grants it to domain `grantee`; returns the reference.
    pub fn grant(&self, grantee: u32, readonly: bool) -> Result<u32, Errno> {
        hypercall::grant_access(self.va(), grantee, readonly)
    }
}

/// The `MAP_AREA` address of mapping `slot` (0 .. [`MAP_PAGES_PER_FRONTEND`]) of frontend
/// `k` (1-based): every frontend has its own pages, so no two mappings share an address.
pub fn map_slot(k: u32, slot: u64) -> u64 {
    debug_assert!((1..=MAX_FRONTENDS).contains(&k) && slot < MAP_PAGES_PER_FRONTEND);
    abi::layout::MAP_AREA + (u64::from(k - 1) * MAP_PAGES_PER_FRONTEND + slot) * 4096
}

/// Another domain's granted page, mapped into `MAP_AREA`; unmapped when dropped. Its words
/// borrow the mapping, so none outlives the unmap.
pub struct Mapping {
    handle: u32,
    va: u64,
}

impl Mapping {
    /// Maps the page `granter` granted as `gref` at `va` (read-only if `readonly`).
    ///
    /// # Safety
    /// `va` must be a page of `MAP_AREA` that nothing else in this program refers to while
    /// the mapping lives (the hypervisor refuses a page that is mapped already, so this means
    /// no stale pointer into a page unmapped earlier). If `readonly`, the caller must not
    /// store through [`Mapping::words`] (the store would fault).
    pub unsafe fn new(granter: u32, gref: u32, va: u64, readonly: bool) -> Result<Mapping, Errno> {
        // SAFETY: the page becomes shared memory; this type only hands out atomic views of
        // it, as `grant_map` requires, and unmaps it only when no view is borrowed (drop).
        let handle = unsafe { hypercall::grant_map(granter, gref, va, readonly)? };
        Ok(Mapping { handle, va })
    }

    /// The page's words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `va` is page-aligned and mapped while `self` lives (the slice borrows it);
        // the other domain may change the page at any time, which atomics allow; nothing
        // else here refers to the page (contract of `new`).
        unsafe { core::slice::from_raw_parts(self.va as *const AtomicU64, PAGE_WORDS) }
    }

    /// Keeps the page mapped for the rest of the program's life (a ring), and returns its
    /// words.
    pub fn into_static(self) -> &'static [AtomicU64] {
        // SAFETY: as in `words`; the page is never unmapped, since `self` is forgotten
        // below and its drop, the only unmap, never runs.
        let words = unsafe { core::slice::from_raw_parts(self.va as *const AtomicU64, PAGE_WORDS) };
        core::mem::forget(self);
        words
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Err(e) = hypercall::grant_unmap(self.handle) {
            println!("unmapping grant handle {} failed: {e:?}", self.handle);
        }
    }
}

/// Backend, step 1 of the handshake: allocates port `k` for domain `me + k`, k = 1..=n.
/// Returns false (after saying why) if a port is not the one the convention expects.
pub fn backend_ports(n: u32) -> bool {
    let me = shared::domain_id();
    for k in 1..=n {
        match hypercall::evtchn_alloc_unbound(me + k) {
            Ok(port) if port == k => {}
            Ok(port) => {
                println!("port for frontend {k} is {port}, not {k}: was a port allocated before?");
                return false;
            }
            Err(e) => {
                println!("cannot allocate a port for domain {}: {e:?}", me + k);
                return false;
            }
        }
    }
    true
}

/// A frontend's end of the handshake: who its backend is and the port to it.
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    /// The backend's domain id.
    pub domain: u32,
    /// This frontend's index among the backend's frontends (1-based).
    pub index: u32,
    /// This domain's port, bound to the backend's port `index`.
    pub port: u32,
}

/// Frontend, step 2 of the handshake: binds to the backend's port for us, sweeping
/// `k` = 1..=[`MAX_FRONTENDS`] until it succeeds or [`BIND_TIMEOUT_NS`] passes.
pub fn find_backend() -> Option<Backend> {
    let me = shared::domain_id();
    let deadline = time::now_ns() + BIND_TIMEOUT_NS;
    loop {
        for k in 1..=MAX_FRONTENDS.min(me.saturating_sub(1)) {
            if let Ok(port) = hypercall::evtchn_bind(me - k, k) {
                return Some(Backend {
                    domain: me - k,
                    index: k,
                    port,
                });
            }
        }
        if time::now_ns() > deadline {
            println!("no backend allocated a port for domain {me}");
            return None;
        }
        time::sleep_ns(1_000_000);
    }
}

/// Sends an event on `port`; a failure (the other end is gone) is reported, not fatal.
pub fn notify(port: u32) {
    if let Err(e) = hypercall::evtchn_send(port) {
        println!("event on port {port} failed: {e:?}");
    }
}

/// A small, fast pseudo-random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(mix64(seed) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0; slightly biased, which does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A strong 64-bit mix (splitmix64's finaliser): nearby inputs give unrelated outputs.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Words in a 512-byte sector.
pub const SECTOR_WORDS: usize = abi::io::blkif::SECTOR_BYTES / 8;

/// Word `word` of disk sector `sector` as written in generation `generation` (`blk`): every
/// byte depends on all three, so a sector from the wrong place or time never passes.
pub fn sector_word(sector: u64, generation: u32, word: usize) -> u64 {
    mix64(sector << 24 ^ u64::from(generation) << 8 ^ word as u64 ^ mix64(sector))
}

/// Stores `bytes` into `words` from byte `offset` (a multiple of 8) on, little-endian; the
/// bytes of a last partial word beyond `bytes` become zero.
pub fn store_bytes(words: &[AtomicU64], offset: usize, bytes: &[u8]) {
    assert!(offset.is_multiple_of(8), "offset must be word-aligned");
    for (cell, chunk) in words[offset / 8..].iter().zip(bytes.chunks(8)) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        cell.store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
}

/// Loads `out.len()` bytes from `words` at byte `offset` (a multiple of 8), little-endian.
pub fn load_bytes(words: &[AtomicU64], offset: usize, out: &mut [u8]) {
    assert!(offset.is_multiple_of(8), "offset must be word-aligned");
    for (cell, chunk) in words[offset / 8..].iter().zip(out.chunks_mut(8)) {
        let w = cell.load(Ordering::Relaxed).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// Bytes of a `net` packet's header: destination index (u16), source index (u16), sequence
/// number (u64), all little-endian; the backend forwards on the first two bytes.
pub const PACKET_HEADER: usize = 12;

/// Fills `buf` with the packet `seq` from frontend `src` to frontend `dest`: the header, then
/// bytes that depend on (src, seq, position).
pub fn write_packet(buf: &mut [u8], dest: u16, src: u16, seq: u64) {
    buf[0..2].copy_from_slice(&dest.to_le_bytes());
    buf[2..4].copy_from_slice(&src.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    let len = buf.len() as u64;
    for (i, b) in buf[PACKET_HEADER..].iter_mut().enumerate() {
        *b = payload_byte(src, seq, len, i);
    }
}

fn payload_byte(src: u16, seq: u64, len: u64, i: usize) -> u8 {
    let w = mix64(u64::from(src) << 48 ^ seq << 12 ^ len ^ (i as u64 / 8) << 32);
    (w >> ((i % 8) * 8)) as u8
}

/// A packet's header: where it goes, where from, which one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    pub dest: u16,
    pub src: u16,
    pub seq: u64,
}

/// Reads a packet's header (`buf` at least [`PACKET_HEADER`] bytes).
pub fn packet_header(buf: &[u8]) -> PacketHeader {
    PacketHeader {
        dest: u16::from_le_bytes([buf[0], buf[1]]),
        src: u16::from_le_bytes([buf[2], buf[3]]),
        seq: u64::from_le_bytes(buf[4..12].try_into().expect("8 bytes")),
    }
}

/// Checks a received packet: its header, and every payload byte against what
/// [`write_packet`] puts there. Returns the header, or the offset of the first wrong byte.
pub fn check_packet(buf: &[u8]) -> Result<PacketHeader, usize> {
    if buf.len() < PACKET_HEADER {
        return Err(buf.len());
    }
    let h = packet_header(buf);
    let len = buf.len() as u64;
    match buf[PACKET_HEADER..]
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != payload_byte(h.src, h.seq, len, i))
    {
        Some((i, _)) => Err(PACKET_HEADER + i),
        None => Ok(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_words() {
        let words: [AtomicU64; 8] = [const { AtomicU64::new(u64::MAX) }; 8];
        let bytes: [u8; 21] = core::array::from_fn(|i| i as u8 + 1);
        store_bytes(&words, 8, &bytes);
        assert_eq!(
            words[0].load(Ordering::Relaxed),
            u64::MAX,
            "before the offset"
        );
        assert_eq!(
            words[4].load(Ordering::Relaxed),
            u64::MAX,
            "after the last word"
        );
        assert_eq!(words[3].load(Ordering::Relaxed) >> 40, 0, "tail zeroed");
        let mut out = [0u8; 21];
        load_bytes(&words, 8, &mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn packets_check_out_and_damage_is_found() {
        for len in [PACKET_HEADER, 60, 500, abi::io::netif::MTU] {
            let mut buf = [0u8; abi::io::netif::MTU];
            let p = &mut buf[..len];
            write_packet(p, 2, 1, 77);
            let h = PacketHeader {
                dest: 2,
                src: 1,
                seq: 77,
            };
            assert_eq!(check_packet(p), Ok(h));
            if len > PACKET_HEADER {
                p[len - 1] ^= 0x10;
                assert_eq!(check_packet(p), Err(len - 1));
                p[len - 1] ^= 0x10;
                // The same bytes under another sequence number are wrong.
                p[4] ^= 1;
                assert!(check_packet(p).is_err());
            }
        }
        // Truncation changes every byte's expected value.
        let mut buf = [0u8; 100];
        write_packet(&mut buf, 1, 1, 1);
        assert!(check_packet(&buf[..99]).is_err());
    }

    #[test]
    fn sector_patterns_differ_by_sector_generation_and_word() {
        let a = sector_word(10, 1, 0);
        assert_ne!(a, sector_word(11, 1, 0));
        assert_ne!(a, sector_word(10, 2, 0));
        assert_ne!(a, sector_word(10, 1, 1));
        assert_eq!(a, sector_word(10, 1, 0));
    }

    #[test]
    fn map_slots_are_distinct_pages_of_the_map_area() {
        let last = map_slot(MAX_FRONTENDS, MAP_PAGES_PER_FRONTEND - 1);
        assert!(last + 4096 <= abi::layout::MAP_AREA + abi::layout::MAP_AREA_BYTES);
        assert_eq!(map_slot(1, 0), abi::layout::MAP_AREA);
        assert_eq!(map_slot(2, 0) - map_slot(1, 7), 4096);
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(0);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
