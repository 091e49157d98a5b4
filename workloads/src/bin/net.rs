//! `net`: a split network device. One backend domain is a bridge between its frontends,
//! which send each other streams of packets and check that every one arrives intact and in
//! order.
//!
//! Handshake (no XenStore; `workloads::split` has the details): the backend group (one
//! domain, `role = 0`, `frontends = N`) comes first in the spec and the frontends follow, so
//! frontend `k` (1..=N) is domain `B + k`. The backend allocates port `k` for domain `B + k`;
//! a frontend binds by sweeping `evtchn_bind(F - k, k)`, which tells it `B` and `k`; it then
//! grants its transmit ring (grant reference 1), its receive ring (2), its transmit pages
//! (read-only) and its receive pages, posts every receive page, and sends an event; on that
//! first event the backend maps references 1 and 2 of domain `B + k` and serves both rings.
//! One port per frontend carries the events of both rings.
//!
//! Backend: for each transmit request it copies the packet out of the sender's page
//! (`grant_copy_from`) into a buffer of its own, answers the request (the page is free
//! again), and delivers the packet to the frontend whose index is in the packet's first two
//! bytes: into the next page that frontend posted on its receive ring (`grant_copy_to`),
//! answered with the packet's length. If the destination has no page posted, the packet
//! waits, and so does the rest of its sender's stream: nothing is dropped. Senders are
//! served round robin, one packet each per turn. `work` = packets forwarded.
//!
//! Frontend `k` sends to frontend `k % N + 1` (so with N = 2 the two exchange packets) a
//! stream of packets of `size` bytes: a header (destination, source, sequence number; see
//! `split::write_packet`) and bytes that depend on all three. It keeps [`TX_PAGES`] packets
//! in flight and [`RX_PAGES`] receive pages posted. Every packet received must be intact,
//! addressed to it, and the next in its sender's sequence. `work` = bytes received. A bad
//! packet or a failed request ends the domain with exit code 3 (`split::EXIT_DATA`); a
//! failed handshake with 2.
//!
//! Arguments: `role` (0 backend, 1 frontend; default 1), `frontends` (N, given to the
//! backend and to every frontend; 2), `size` (bytes per packet, 12..=1500; 1500). Expected
//! fate: ok.
#![no_std]
#![no_main]

use abi::io::netif::{
    MTU, NetStatus, RxBackRing, RxFrontRing, RxRequest, RxResponse, TxBackRing, TxFrontRing,
    TxRequest, TxResponse,
};
use workloads::split::{self, EXIT_DATA, EXIT_SETUP, Mapping, PACKET_HEADER, SharedPage};
use workloads::{entry, hypercall, println, rt, shared};

entry!(main);

/// Most frontends of one bridge (it holds a packet buffer for each, on its stack).
const MAX_FRONTENDS: usize = 16;
/// Transmit pages of a frontend: packets in flight.
const TX_PAGES: usize = 16;
/// Receive pages a frontend keeps posted.
const RX_PAGES: usize = 16;

/// A frontend's transmit ring (grant reference 1).
static TX_RING: SharedPage = SharedPage::new();
/// A frontend's receive ring (grant reference 2).
static RX_RING: SharedPage = SharedPage::new();
/// A frontend's transmit pages, one packet each (granted read-only).
static TX: [SharedPage; TX_PAGES] = [const { SharedPage::new() }; TX_PAGES];
/// A frontend's receive pages, one packet each.
static RX: [SharedPage; RX_PAGES] = [const { SharedPage::new() }; RX_PAGES];

fn main(vcpu: usize) -> u64 {
    if vcpu != 0 {
        rt::park(vcpu);
    }
    let n = shared::arg("frontends", 2) as usize;
    if n == 0 || n > MAX_FRONTENDS {
        println!("frontends = {n}: must be 1..={MAX_FRONTENDS}");
        return EXIT_SETUP;
    }
    match shared::arg("role", 1) {
        0 => Bridge::new(n).run(),
        _ => frontend(n),
    }
}

// ---------------------------------------------------------------------------------------
// Backend

/// A connected frontend's rings.
struct Conn {
    tx: TxBackRing<'static>,
    rx: RxBackRing<'static>,
}

/// A packet taken from a sender and not yet delivered.
#[derive(Clone, Copy)]
struct Pending {
    /// Destination frontend index (1-based).
    dest: usize,
    len: usize,
}

struct Bridge {
    n: usize,
    me: u32,
    conns: [Option<Conn>; MAX_FRONTENDS],
    pending: [Option<Pending>; MAX_FRONTENDS],
    bufs: [[u8; MTU]; MAX_FRONTENDS],
}

impl Bridge {
    fn new(n: usize) -> Bridge {
        Bridge {
            n,
            me: shared::domain_id(),
            conns: [const { None }; MAX_FRONTENDS],
            pending: [None; MAX_FRONTENDS],
            bufs: [[0; MTU]; MAX_FRONTENDS],
        }
    }

    /// Domain id of frontend `k` (1-based).
    fn domain(&self, k: usize) -> u32 {
        self.me + k as u32
    }

    fn run(&mut self) -> u64 {
        if !split::backend_ports(self.n as u32) {
            return EXIT_SETUP;
        }
        let ports: [u32; MAX_FRONTENDS] = core::array::from_fn(|i| i as u32 + 1);
        loop {
            // Clear the events first: whatever they announced is looked at below.
            for k in 1..=self.n {
                if shared::take_event(k as u32) && self.conns[k - 1].is_none() {
                    self.conns[k - 1] = self.connect(k);
                }
            }
            let mut progress = false;
            for k in 1..=self.n {
                progress |= self.take_packet(k);
                progress |= self.deliver(k);
            }
            if progress {
                continue;
            }
            // About to sleep: ask for an event from every ring that could unblock a sender:
            // its destination's receive ring if a packet waits, else its transmit ring.
            let mut more = false;
            for k in 1..=self.n {
                more |= match self.pending[k - 1] {
                    Some(p) => self.conns[p.dest - 1]
                        .as_mut()
                        .is_some_and(|c| c.rx.final_check_for_requests()),
                    None => self.conns[k - 1]
                        .as_mut()
                        .is_some_and(|c| c.tx.final_check_for_requests()),
                };
            }
            if !more {
                // Wakes on an event of any frontend (or spuriously: the loop re-checks).
                let _ = hypercall::poll(&ports[..self.n]);
            }
        }
    }

    /// Maps frontend `k`'s rings (its grant references 1 and 2) for good.
    fn connect(&self, k: usize) -> Option<Conn> {
        let domain = self.domain(k);
        let map = |gref: u32, slot: u64| {
            // SAFETY: slots 0 and 1 of frontend `k` hold its rings and nothing else, mapped
            // once each (they stay mapped for the backend's life).
            match unsafe { Mapping::new(domain, gref, split::map_slot(k as u32, slot), false) } {
                Ok(map) => Some(map),
                Err(e) => {
                    println!("cannot map grant {gref} of domain {domain}: {e:?}");
                    None
                }
            }
        };
        let tx = map(1, 0)?;
        let rx = map(2, 1)?;
        println!("frontend {k} (domain {domain}) connected");
        Some(Conn {
            tx: TxBackRing::attach(tx.into_static()),
            rx: RxBackRing::attach(rx.into_static()),
        })
    }

    /// Takes the next packet of sender `k` into its buffer, unless one is still waiting.
    fn take_packet(&mut self, k: usize) -> bool {
        if self.pending[k - 1].is_some() {
            return false;
        }
        let domain = self.domain(k);
        let n = self.n;
        let Some(conn) = self.conns[k - 1].as_mut() else {
            return false;
        };
        let Some(req) = conn.tx.take_request() else {
            return false;
        };
        let buf = &mut self.bufs[k - 1];
        let len = usize::from(req.len);
        let status = match req.check() {
            Err(status) => status,
            Ok(()) => match hypercall::grant_copy_from(
                domain,
                req.gref,
                u32::from(req.offset),
                &mut buf[..len],
            ) {
                Err(e) => {
                    println!("cannot copy grant {} of domain {domain}: {e:?}", req.gref);
                    NetStatus::Error
                }
                Ok(_) if len < 2 => NetStatus::Error,
                Ok(_) => {
                    let dest = usize::from(u16::from_le_bytes([buf[0], buf[1]]));
                    if (1..=n).contains(&dest) {
                        self.pending[k - 1] = Some(Pending { dest, len });
                        NetStatus::Okay
                    } else {
                        println!("frontend {k} sent to frontend {dest}, which is not there");
                        NetStatus::Error
                    }
                }
            },
        };
        conn.tx
            .push_response(&TxResponse { id: req.id, status })
            .expect("a request taken has a slot for its response");
        if conn.tx.push_responses_and_check_notify() {
            split::notify(k as u32);
        }
        true
    }

    /// Delivers sender `k`'s waiting packet, if its destination has a page posted.
    fn deliver(&mut self, k: usize) -> bool {
        let Some(p) = self.pending[k - 1] else {
            return false;
        };
        let domain = self.domain(p.dest);
        let Some(conn) = self.conns[p.dest - 1].as_mut() else {
            return false;
        };
        let Some(req) = conn.rx.take_request() else {
            return false;
        };
        let packet = &self.bufs[k - 1][..p.len];
        let rsp = match hypercall::grant_copy_to(domain, req.gref, 0, packet) {
            Ok(_) => RxResponse::packet(req.id, 0, p.len),
            Err(e) => {
                println!(
                    "cannot copy into grant {} of domain {domain}: {e:?}",
                    req.gref
                );
                RxResponse::failed(req.id, NetStatus::Error)
            }
        };
        conn.rx
            .push_response(&rsp)
            .expect("a request taken has a slot for its response");
        if conn.rx.push_responses_and_check_notify() {
            split::notify(p.dest as u32);
        }
        self.pending[k - 1] = None;
        shared::add_work(0, 1);
        true
    }
}

// ---------------------------------------------------------------------------------------
// Frontend

fn frontend(n: usize) -> u64 {
    let size = shared::arg("size", MTU as u64) as usize;
    if !(PACKET_HEADER..=MTU).contains(&size) {
        println!("size = {size}: must be {PACKET_HEADER}..={MTU}");
        return EXIT_SETUP;
    }
    let Some(backend) = split::find_backend() else {
        return EXIT_SETUP;
    };
    let k = backend.index as usize;
    if k > n {
        println!("frontend {k} of a bridge of {n}: is `frontends` the same everywhere?");
        return EXIT_SETUP;
    }
    let mut tx = TxFrontRing::init(TX_RING.words());
    let mut rx = RxFrontRing::init(RX_RING.words());
    let grant = |page: &SharedPage, readonly: bool| {
        page.grant(backend.domain, readonly).map_err(|e| {
            println!("cannot grant a page to domain {}: {e:?}", backend.domain);
        })
    };
    let (Ok(1), Ok(2)) = (grant(&TX_RING, false), grant(&RX_RING, false)) else {
        println!("the rings must be grant references 1 and 2 (the first grants)");
        return EXIT_SETUP;
    };
    let mut tx_grefs = [0u32; TX_PAGES];
    for (gref, page) in tx_grefs.iter_mut().zip(&TX) {
        let Ok(r) = grant(page, true) else {
            return EXIT_SETUP;
        };
        *gref = r;
    }
    let mut rx_grefs = [0u32; RX_PAGES];
    for (id, page) in RX.iter().enumerate() {
        let Ok(gref) = grant(page, false) else {
            return EXIT_SETUP;
        };
        rx_grefs[id] = gref;
        rx.push_request(&RxRequest {
            id: id as u16,
            gref,
        })
        .expect("the receive ring has room for every page");
    }
    rx.push_requests_and_check_notify();
    split::notify(backend.port);
    let dest = k % n + 1;
    println!(
        "frontend {k} of domain {}: sending {size}-byte packets to frontend {dest}",
        backend.domain
    );

    let mut buf = [0u8; MTU];
    let mut expected = [0u64; MAX_FRONTENDS + 1];
    let mut free_tx: u32 = (1 << TX_PAGES) - 1;
    let mut seq = 0u64;
    loop {
        let mut progress = false;
        while let Some(rsp) = rx.take_response() {
            let id = usize::from(rsp.id);
            if id >= RX_PAGES {
                println!("receive response for page {id}, which is not posted");
                return EXIT_DATA;
            }
            let len = match rsp.packet_len() {
                Ok(len) if len <= MTU && usize::from(rsp.offset) + len <= 4096 => len,
                Ok(len) => {
                    println!("received {len} bytes at {}: not a packet", rsp.offset);
                    return EXIT_DATA;
                }
                Err(status) => {
                    println!("receive failed: {status:?}");
                    return EXIT_DATA;
                }
            };
            if rsp.offset % 8 != 0 {
                println!(
                    "received a packet at offset {}, not word-aligned",
                    rsp.offset
                );
                return EXIT_DATA;
            }
            let packet = &mut buf[..len];
            split::load_bytes(RX[id].words(), usize::from(rsp.offset), packet);
            let h = match split::check_packet(packet) {
                Ok(h) => h,
                Err(at) => {
                    println!(
                        "packet of {len} bytes damaged at byte {at}: {:?}",
                        split::packet_header(packet)
                    );
                    return EXIT_DATA;
                }
            };
            let src = usize::from(h.src);
            if usize::from(h.dest) != k || !(1..=n).contains(&src) {
                println!("packet from {src} to {} delivered here ({k})", h.dest);
                return EXIT_DATA;
            }
            if h.seq != expected[src] {
                println!(
                    "from frontend {src}: packet {} arrived, expected {}",
                    h.seq, expected[src]
                );
                return EXIT_DATA;
            }
            expected[src] += 1;
            shared::add_work(0, len as u64);
            // Post the page again.
            rx.push_request(&RxRequest {
                id: rsp.id,
                gref: rx_grefs[id],
            })
            .expect("a consumed response frees its slot");
            progress = true;
        }
        if rx.push_requests_and_check_notify() {
            split::notify(backend.port);
        }
        while let Some(rsp) = tx.take_response() {
            let id = usize::from(rsp.id);
            if id >= TX_PAGES || free_tx & (1 << id) != 0 {
                println!("transmit response for page {id}, which is not in flight");
                return EXIT_DATA;
            }
            if rsp.status != NetStatus::Okay {
                println!("transmit failed: {:?}", rsp.status);
                return EXIT_DATA;
            }
            free_tx |= 1 << id;
            progress = true;
        }
        while free_tx != 0 && tx.free_requests() > 0 {
            let id = free_tx.trailing_zeros() as usize;
            let packet = &mut buf[..size];
            split::write_packet(packet, dest as u16, k as u16, seq);
            split::store_bytes(TX[id].words(), 0, packet);
            let req = TxRequest {
                gref: tx_grefs[id],
                offset: 0,
                len: size as u16,
                id: id as u16,
                flags: 0,
            };
            tx.push_request(&req).expect("checked free above");
            free_tx &= !(1 << id);
            seq += 1;
            progress = true;
        }
        if tx.push_requests_and_check_notify() {
            split::notify(backend.port);
        }
        if progress {
            continue;
        }
        if rx.final_check_for_responses() || tx.final_check_for_responses() {
            continue;
        }
        shared::wait_event(backend.port);
    }
}
