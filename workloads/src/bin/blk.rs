//! `blk`: a split block device. One backend domain keeps a RAM disk and serves the block
//! rings (`abi::io::blkif`) of its frontends, which write patterns, read them back and check
//! every byte.
//!
//! Handshake (no XenStore; `workloads::split` has the details): the backend group (one
//! domain, `role = 0`, `frontends = N`) comes first in the spec and the frontend groups
//! follow, so frontend `k` (1..=N) is domain `B + k`. The backend allocates port `k` for
//! domain `B + k`; a frontend binds by sweeping `evtchn_bind(F - k, k)`, which tells it `B`
//! and `k`; it then grants its ring page (reference 1, its first grant) and its data pages
//! (references 2..) and sends an event; on that first event the backend maps reference 1
//! of domain `B + k` and serves the ring.
//!
//! Backend: a RAM disk of [`DISK_SECTORS`] 512-byte sectors (1 MiB, in this image's bss;
//! every `blk` domain carries it, so give them all `memory_kib = 4096`). For each segment of
//! a read or write it maps the frontend's granted page (`grant_map` read-only for a write,
//! read-write for a read), copies the sectors, and unmaps it. A flush needs nothing more (the
//! disk is RAM and requests are served in order). `work` = requests served.
//!
//! Frontend `k` owns sectors `[(k - 1) * R, k * R)`, `R` = [`REGION_SECTORS`], and keeps up
//! to [`QUEUE`] requests of 1..=64 sectors in flight, over non-overlapping ranges. It first
//! writes its whole region (generation 1), then, with `mode = 0`, alternates passes that
//! read back and check everything and passes that rewrite it with the next generation,
//! flushing after each; with `mode = 1` it issues random reads and writes, checking each
//! read against what it last wrote there. Sector contents are `split::sector_word(sector,
//! generation, word)`. `work` = requests completed. A wrong byte or a failed request ends
//! the domain with exit code 3 (`split::EXIT_DATA`); a failed handshake with 2.
//!
//! Data outlives its writer: a frontend with `writer_exits = 1` writes its region
//! (generation 1), flushes and exits cleanly (code 0); a frontend with `role = 2` (a
//! verifier) first reads frontend `peer`'s region until it holds generation 1 everywhere
//! (retrying for up to [`VERIFY_TIMEOUT_NS`]), then carries on in its own region.
//!
//! Arguments: `role` (0 backend, 1 frontend, 2 verifier; default 1), `frontends` (N, the
//! backend's; 2), `mode` (0 sequential, 1 random; 0), `writer_exits` (0), `peer` (the
//! writer's index k, for a verifier; 1). Expected fate: ok.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use abi::io::blkif::{BlkBackRing, SECTORS_PER_PAGE};
use abi::io::blkif::{
    BlkFrontRing, BlkOp, BlkRequest, BlkResponse, BlkStatus, MAX_SEGMENTS, Segment,
};
use workloads::split::{self, EXIT_DATA, EXIT_SETUP, Mapping, Rng, SECTOR_WORDS, SharedPage};
use workloads::{entry, hypercall, println, rt, shared, time};

entry!(main);

/// Sectors of the RAM disk (1 MiB).
const DISK_SECTORS: u64 = 2048;
/// Sectors each frontend owns.
const REGION_SECTORS: u64 = 256;
/// Requests a frontend keeps in flight.
const QUEUE: usize = 4;
/// Data pages a frontend grants: enough for [`QUEUE`] requests of [`MAX_SEGMENTS`] pages.
const DATA_PAGES: usize = QUEUE * MAX_SEGMENTS;
/// How long a verifier waits for its writer's data.
const VERIFY_TIMEOUT_NS: u64 = 2_000_000_000;
/// Most requests the backend serves from one ring before looking at the next.
const BATCH: u32 = 8;

/// The backend's disk.
static DISK: [AtomicU64; DISK_SECTORS as usize * SECTOR_WORDS] =
    [const { AtomicU64::new(0) }; DISK_SECTORS as usize * SECTOR_WORDS];
/// A frontend's ring page (grant reference 1).
static RING: SharedPage = SharedPage::new();
/// A frontend's data pages (grant references 2..): request slot `q` uses pages
/// `q * MAX_SEGMENTS ..`.
static DATA: [SharedPage; DATA_PAGES] = [const { SharedPage::new() }; DATA_PAGES];

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    match shared::arg("role", 1) {
        0 => backend(shared::arg("frontends", 2) as u32),
        role => frontend(role == 2),
    }
}

// ---------------------------------------------------------------------------------------
// Backend

fn backend(n: u32) -> u64 {
    if n == 0 || n > split::MAX_FRONTENDS {
        println!("frontends = {n}: must be 1..={}", split::MAX_FRONTENDS);
        return EXIT_SETUP;
    }
    if !split::backend_ports(n) {
        return EXIT_SETUP;
    }
    let me = shared::domain_id();
    let ports: [u32; split::MAX_FRONTENDS as usize] = core::array::from_fn(|i| i as u32 + 1);
    let mut rings: [Option<BlkBackRing<'static>>; split::MAX_FRONTENDS as usize] =
        [const { None }; split::MAX_FRONTENDS as usize];
    loop {
        // Clear the events first: whatever they announced is looked at below.
        for k in 1..=n {
            if shared::take_event(k) && rings[k as usize - 1].is_none() {
                rings[k as usize - 1] = connect(me + k, k);
            }
        }
        let mut progress = false;
        for k in 1..=n {
            let Some(ring) = rings[k as usize - 1].as_mut() else {
                continue;
            };
            let mut served = 0;
            while served < BATCH {
                let Some(req) = ring.take_request() else {
                    break;
                };
                let rsp = serve(me + k, k, &req);
                ring.push_response(&rsp)
                    .expect("a request taken has a slot for its response");
                served += 1;
            }
            if served > 0 {
                progress = true;
                shared::add_work(0, u64::from(served));
                if ring.push_responses_and_check_notify() {
                    split::notify(k);
                }
            }
        }
        if progress {
            continue;
        }
        let mut more = false;
        for ring in rings.iter_mut().flatten() {
            more |= ring.final_check_for_requests();
        }
        if !more {
            // Wakes on an event of any frontend (or spuriously: the loop re-checks).
            let _ = hypercall::poll(&ports[..n as usize]);
        }
    }
}

/// Maps frontend `k`'s ring (its grant reference 1) for good.
fn connect(domain: u32, k: u32) -> Option<BlkBackRing<'static>> {
    // SAFETY: slot 0 of frontend `k` is used for its ring and nothing else, and only once
    // (the ring stays mapped for the backend's life).
    match unsafe { Mapping::new(domain, 1, split::map_slot(k, 0), false) } {
        Ok(map) => {
            println!("frontend {k} (domain {domain}) connected");
            Some(BlkBackRing::attach(map.into_static()))
        }
        Err(e) => {
            println!("cannot map the ring of domain {domain}: {e:?}");
            None
        }
    }
}

/// Serves one request of frontend `k` (domain `domain`).
fn serve(domain: u32, k: u32, req: &BlkRequest) -> BlkResponse {
    let status = match req.check(DISK_SECTORS) {
        Err(status) => status,
        Ok(_) if req.op == BlkOp::Flush => BlkStatus::Okay,
        Ok(_) => transfer(domain, k, req),
    };
    BlkResponse {
        id: req.id,
        op: req.op,
        status,
    }
}

/// Copies a checked read or write, segment by segment, through a mapping of each page.
fn transfer(domain: u32, k: u32, req: &BlkRequest) -> BlkStatus {
    let write = req.op == BlkOp::Write;
    let mut sector = req.sector;
    for seg in req.segments() {
        // SAFETY: slot 1 of frontend `k` is this function's alone, and the mapping is
        // dropped (unmapped) before the next one; for a write it is read-only and only read.
        let map = match unsafe { Mapping::new(domain, seg.gref, split::map_slot(k, 1), write) } {
            Ok(map) => map,
            Err(e) => {
                println!("cannot map grant {} of domain {domain}: {e:?}", seg.gref);
                return BlkStatus::Error;
            }
        };
        let page = map.words();
        for s in 0..seg.sectors() {
            let disk = &DISK[(sector + s) as usize * SECTOR_WORDS..][..SECTOR_WORDS];
            let first = (usize::from(seg.first_sect) + s as usize) * SECTOR_WORDS;
            let mem = &page[first..first + SECTOR_WORDS];
            let (from, to) = if write { (mem, disk) } else { (disk, mem) };
            for (f, t) in from.iter().zip(to) {
                t.store(f.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        sector += seg.sectors();
    }
    BlkStatus::Okay
}

// ---------------------------------------------------------------------------------------
// Frontend

/// One request of a batch: `count` sectors from disk sector `sector`, its data from sector
/// `first` of its first page on.
#[derive(Clone, Copy, Debug)]
struct Io {
    op: BlkOp,
    sector: u64,
    count: u64,
    first: u64,
    /// The generation a write writes.
    generation: u32,
}

/// Where sector `i` of request slot `q`'s data is: its page and the index of its first word.
fn data_sector(q: usize, io: &Io, i: u64) -> (&'static [AtomicU64], usize) {
    let at = io.first + i;
    let page = &DATA[q * MAX_SEGMENTS + (at / u64::from(SECTORS_PER_PAGE)) as usize];
    let word = (at % u64::from(SECTORS_PER_PAGE)) as usize * SECTOR_WORDS;
    (page.words(), word)
}

/// The frontend's connection to its backend.
struct Client {
    ring: BlkFrontRing<'static>,
    port: u32,
    grefs: [u32; DATA_PAGES],
    serial: u64,
}

impl Client {
    /// Runs a batch of non-overlapping requests (at most [`QUEUE`]) to completion. On
    /// return, the data of the reads is in their slots' pages.
    fn run(&mut self, batch: &[Io]) -> Result<(), ()> {
        assert!(batch.len() <= QUEUE);
        self.serial += 1;
        for (q, io) in batch.iter().enumerate() {
            let mut req = BlkRequest::new(self.serial << 8 | q as u64, io.op, io.sector);
            if io.op != BlkOp::Flush {
                self.fill(q, io);
                let mut at = io.first;
                let end = io.first + io.count;
                while at < end {
                    let page = at / u64::from(SECTORS_PER_PAGE);
                    let first = (at % u64::from(SECTORS_PER_PAGE)) as u8;
                    let last = (end - 1 - page * u64::from(SECTORS_PER_PAGE)).min(7) as u8;
                    let seg = Segment {
                        gref: self.grefs[q * MAX_SEGMENTS + page as usize],
                        first_sect: first,
                        last_sect: last,
                    };
                    assert!(req.push_segment(seg), "a request spans at most 8 pages");
                    at = (page + 1) * u64::from(SECTORS_PER_PAGE);
                }
            }
            self.ring
                .push_request(&req)
                .expect("the ring has room for a batch");
        }
        if self.ring.push_requests_and_check_notify() {
            split::notify(self.port);
        }
        let mut done = [false; QUEUE];
        let mut left = batch.len();
        while left > 0 {
            let Some(rsp) = self.ring.take_response() else {
                if !self.ring.final_check_for_responses() {
                    shared::wait_event(self.port);
                }
                continue;
            };
            let q = (rsp.id & 0xff) as usize;
            if rsp.id >> 8 != self.serial || q >= batch.len() || done[q] {
                println!(
                    "response with unexpected id {:#x} (batch {})",
                    rsp.id, self.serial
                );
                return Err(());
            }
            if rsp.status != BlkStatus::Okay || rsp.op != batch[q].op {
                println!(
                    "{:?} of sector {} failed: {:?}",
                    batch[q].op, batch[q].sector, rsp
                );
                return Err(());
            }
            done[q] = true;
            left -= 1;
            shared::add_work(0, 1);
        }
        Ok(())
    }

    /// Puts a write's data in its pages, or a read's poison (different every batch, so a
    /// read the backend did not do never passes).
    fn fill(&self, q: usize, io: &Io) {
        for i in 0..io.count {
            let (page, w0) = data_sector(q, io, i);
            for w in 0..SECTOR_WORDS {
                let v = match io.op {
                    BlkOp::Write => split::sector_word(io.sector + i, io.generation, w),
                    _ => split::mix64(self.serial << 16 ^ (i << 8) ^ w as u64) | 1,
                };
                page[w0 + w].store(v, Ordering::Relaxed);
            }
        }
    }
}

/// Checks a read of slot `q` against the generation each sector should hold.
fn check_read(q: usize, io: &Io, generation_of: impl Fn(u64) -> u32) -> Result<(), ()> {
    for i in 0..io.count {
        let sector = io.sector + i;
        let generation = generation_of(sector);
        let (page, w0) = data_sector(q, io, i);
        for w in 0..SECTOR_WORDS {
            let got = page[w0 + w].load(Ordering::Relaxed);
            let want = split::sector_word(sector, generation, w);
            if got != want {
                println!(
                    "sector {sector} word {w}: read {got:#018x}, wrote {want:#018x} \
                     (generation {generation})"
                );
                return Err(());
            }
        }
    }
    Ok(())
}

/// A run of requests of 1..=64 sectors covering `[start, end)` in order, `op` with
/// `generation`.
fn sequential(rng: &mut Rng, start: u64, end: u64, op: BlkOp, generation: u32) -> Sweep<'_> {
    Sweep {
        rng,
        at: start,
        end,
        op,
        generation,
    }
}

struct Sweep<'r> {
    rng: &'r mut Rng,
    at: u64,
    end: u64,
    op: BlkOp,
    generation: u32,
}

impl Iterator for Sweep<'_> {
    type Item = Io;
    fn next(&mut self) -> Option<Io> {
        if self.at >= self.end {
            return None;
        }
        let first = self.rng.below(u64::from(SECTORS_PER_PAGE));
        let most = MAX_SEGMENTS as u64 * u64::from(SECTORS_PER_PAGE) - first;
        let count = (1 + self.rng.below(most)).min(self.end - self.at);
        let io = Io {
            op: self.op,
            sector: self.at,
            count,
            first,
            generation: self.generation,
        };
        self.at += count;
        Some(io)
    }
}

/// A frontend's state: its region and the generation each of its sectors holds.
struct Disk {
    client: Client,
    rng: Rng,
    start: u64,
    generations: [u32; REGION_SECTORS as usize],
    next_generation: u32,
}

impl Disk {
    fn generation(&self, sector: u64) -> u32 {
        self.generations[(sector - self.start) as usize]
    }

    /// Runs `batch` and checks its reads against the generations held so far; then records
    /// what its writes wrote.
    fn run(&mut self, batch: &[Io]) -> Result<(), ()> {
        self.client.run(batch)?;
        for (q, io) in batch.iter().enumerate() {
            if io.op == BlkOp::Read {
                check_read(q, io, |s| self.generation(s))?;
            }
        }
        for io in batch.iter().filter(|io| io.op == BlkOp::Write) {
            for s in io.sector..io.sector + io.count {
                self.generations[(s - self.start) as usize] = io.generation;
            }
        }
        Ok(())
    }

    /// A sequential pass of `op` over the whole region, [`QUEUE`] requests at a time.
    fn pass(&mut self, op: BlkOp) -> Result<(), ()> {
        let generation = self.next_generation;
        if op == BlkOp::Write {
            self.next_generation += 1;
        }
        let mut rng = Rng::new(self.rng.next_u64());
        let end = self.start + REGION_SECTORS;
        let mut sweep = sequential(&mut rng, self.start, end, op, generation);
        loop {
            let mut batch = [None; QUEUE];
            for slot in batch.iter_mut() {
                *slot = sweep.next();
            }
            let n = batch.iter().flatten().count();
            if n == 0 {
                return Ok(());
            }
            let ios: [Io; QUEUE] = core::array::from_fn(|i| batch[i].unwrap_or(FLUSH));
            self.run(&ios[..n])?;
        }
    }

    fn flush(&mut self) -> Result<(), ()> {
        self.run(&[FLUSH])
    }

    /// A batch of random reads and writes over non-overlapping ranges of the region.
    fn random_batch(&mut self) -> Result<(), ()> {
        let mut ios = [FLUSH; QUEUE];
        let mut n = 0;
        while n < QUEUE {
            let first = self.rng.below(u64::from(SECTORS_PER_PAGE));
            let sector = self.start + self.rng.below(REGION_SECTORS);
            let most = (MAX_SEGMENTS as u64 * u64::from(SECTORS_PER_PAGE) - first)
                .min(self.start + REGION_SECTORS - sector);
            let count = 1 + self.rng.below(most);
            let overlaps = ios[..n]
                .iter()
                .any(|io| sector < io.sector + io.count && io.sector < sector + count);
            if overlaps {
                break;
            }
            let (op, generation) = if self.rng.below(2) == 0 {
                (BlkOp::Read, 0)
            } else {
                self.next_generation += 1;
                (BlkOp::Write, self.next_generation - 1)
            };
            ios[n] = Io {
                op,
                sector,
                count,
                first,
                generation,
            };
            n += 1;
        }
        self.run(&ios[..n])
    }
}

/// A flush (also the filler of unused batch entries).
const FLUSH: Io = Io {
    op: BlkOp::Flush,
    sector: 0,
    count: 0,
    first: 0,
    generation: 0,
};

fn frontend(verifier: bool) -> u64 {
    let Some(backend) = split::find_backend() else {
        return EXIT_SETUP;
    };
    let k = backend.index;
    let ring = BlkFrontRing::init(RING.words());
    match RING.grant(backend.domain, false) {
        Ok(1) => {}
        Ok(r) => {
            println!("ring granted as reference {r}, but the backend maps reference 1");
            return EXIT_SETUP;
        }
        Err(e) => {
            println!("cannot grant the ring to domain {}: {e:?}", backend.domain);
            return EXIT_SETUP;
        }
    }
    let mut grefs = [0u32; DATA_PAGES];
    for (gref, page) in grefs.iter_mut().zip(&DATA) {
        match page.grant(backend.domain, false) {
            Ok(r) => *gref = r,
            Err(e) => {
                println!(
                    "cannot grant a data page to domain {}: {e:?}",
                    backend.domain
                );
                return EXIT_SETUP;
            }
        }
    }
    split::notify(backend.port);
    let start = u64::from(k - 1) * REGION_SECTORS;
    if start + REGION_SECTORS > DISK_SECTORS {
        println!(
            "frontend {k}: no room on the disk (at most {} frontends)",
            DISK_SECTORS / REGION_SECTORS
        );
        return EXIT_SETUP;
    }
    println!(
        "frontend {k} of domain {}: sectors {start}..{}",
        backend.domain,
        start + REGION_SECTORS
    );
    let client = Client {
        ring,
        port: backend.port,
        grefs,
        serial: 0,
    };
    let mut disk = Disk {
        client,
        rng: Rng::new(u64::from(shared::domain_id()) ^ time::now_ns()),
        start,
        generations: [0; REGION_SECTORS as usize],
        next_generation: 1,
    };
    match drive(&mut disk, verifier) {
        Ok(()) => 0,
        Err(()) => EXIT_DATA,
    }
}

fn drive(disk: &mut Disk, verifier: bool) -> Result<(), ()> {
    if verifier {
        verify_peer(disk)?;
    }
    // Generation 1 everywhere: what a verifier looks for.
    disk.pass(BlkOp::Write)?;
    disk.flush()?;
    if shared::arg("writer_exits", 0) != 0 {
        println!("region written and flushed; exiting");
        return Ok(());
    }
    let random = shared::arg("mode", 0) == 1;
    loop {
        if random {
            for _ in 0..16 {
                disk.random_batch()?;
            }
        } else {
            disk.pass(BlkOp::Read)?;
            disk.pass(BlkOp::Write)?;
        }
        disk.flush()?;
    }
}

/// Reads frontend `peer`'s region until it holds generation 1 everywhere.
fn verify_peer(disk: &mut Disk) -> Result<(), ()> {
    let peer = shared::arg("peer", 1);
    let start = peer.saturating_sub(1) * REGION_SECTORS;
    if start + REGION_SECTORS > DISK_SECTORS {
        println!("peer = {peer}: no such region");
        return Err(());
    }
    let deadline = time::now_ns() + VERIFY_TIMEOUT_NS;
    let mut rng = Rng::new(peer);
    loop {
        let mut ok = true;
        let mut sweep = sequential(&mut rng, start, start + REGION_SECTORS, BlkOp::Read, 0);
        let mut last_try = false;
        'pass: loop {
            let mut ios = [FLUSH; QUEUE];
            let mut n = 0;
            for io in sweep.by_ref().take(QUEUE) {
                ios[n] = io;
                n += 1;
            }
            if n == 0 {
                break;
            }
            disk.client.run(&ios[..n])?;
            last_try = time::now_ns() > deadline;
            for (q, io) in ios[..n].iter().enumerate() {
                if last_try {
                    // Out of time: report the first difference.
                    check_read(q, io, |_| 1)?;
                } else if !matches_generation_1(q, io) {
                    ok = false;
                    break 'pass;
                }
            }
        }
        if ok {
            println!("frontend {peer}'s region holds what it wrote");
            return Ok(());
        }
        if last_try {
            return Err(());
        }
        time::sleep_ns(10_000_000);
    }
}

/// Whether a read of slot `q` found generation 1 in every sector (quietly).
fn matches_generation_1(q: usize, io: &Io) -> bool {
    (0..io.count).all(|i| {
        let (page, w0) = data_sector(q, io, i);
        (0..SECTOR_WORDS).all(|w| {
            page[w0 + w].load(Ordering::Relaxed) == split::sector_word(io.sector + i, 1, w)
        })
    })
}
