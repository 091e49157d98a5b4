//! Shared I/O rings: the one-page request/response queue of a split device (Xen's
//! `public/io/ring.h`, written afresh).
//!
//! A frontend puts requests on a ring in a page it grants; the backend maps that page, takes
//! the requests and puts a response in each request's slot once it is done. Each side has a
//! producer index in the page that the other reads (`req_prod`, `rsp_prod`) and private
//! indices of its own (the frontend's `req_prod_pvt` and `rsp_cons`, the backend's
//! `rsp_prod_pvt` and `req_cons`). Indices are free-running `u32`s that wrap; a slot is the
//! index modulo the ring size, a power of two, so differences of indices stay right across
//! the wrap.
//!
//! Notifications are suppressed as in Xen: a consumer that goes idle writes into the page the
//! producer index it wants to be woken at (`req_event`, `rsp_event`), and a producer sends an
//! event only if its last push crossed that index. A busy consumer, which re-reads the
//! producer index before sleeping, costs the producer no event at all.
//!
//! Page layout (`&[AtomicU64]` of [`PAGE_WORDS`] words; each index is the low 32 bits of its
//! own word, the upper half zero):
//!
//! | words  | contents                                   |
//! |--------|--------------------------------------------|
//! | 0..4   | `req_prod`, `req_event`, `rsp_prod`, `rsp_event` |
//! | 4..8   | zero (the header is 64 bytes, one cache line) |
//! | 8..    | slots of `max(Req::WORDS, Rsp::WORDS)` words each |
//!
//! The crate has no `unsafe`, so the page is seen as atomics: a guest builds the slice over
//! its mapped page. Slot words are accessed with relaxed ordering; a producer publishes its
//! index with a release store and a consumer reads it with an acquire load, so the slots it
//! then reads are those the producer wrote. Where Xen has a full barrier (`mb()`, between
//! publishing one index and reading the other side's event index) there is a sequentially
//! consistent fence: the two sides' "store mine, then read theirs" cannot both miss.
//!
//! The backend never trusts the page: a frontend may write anything there. The number of
//! requests it sees is bounded by the slots it has free for responses (Xen's
//! `RING_HAS_UNCONSUMED_REQUESTS`), and a request is copied out of its slot once, before it
//! is looked at, so the frontend cannot change it under the backend's feet.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering, fence};

/// Words (`u64`) in a ring page (4 KiB).
pub const PAGE_WORDS: usize = 512;
/// Words of the header (64 bytes).
pub const HEADER_WORDS: usize = 8;
/// Most words one slot may have.
pub const MAX_SLOT_WORDS: usize = 32;

const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 1;
const RSP_PROD: usize = 2;
const RSP_EVENT: usize = 3;

/// A request or response that travels in a ring slot, as a fixed number of `u64` words.
///
/// `decode` must accept any words (a backend decodes what an untrusted frontend wrote):
/// types with fields that can be invalid keep the raw value and let the consumer check it.
pub trait Message: Sized {
    /// Words it occupies in a slot (at most [`MAX_SLOT_WORDS`]).
    const WORDS: usize;
    /// Writes it into `words` (`WORDS` long).
    fn encode(&self, words: &mut [u64]);
    /// Reads it back from `words` (`WORDS` long).
    fn decode(words: &[u64]) -> Self;
}

/// A value that sits at a bit offset of a slot word (see [`packed_message!`]).
pub(crate) trait Field: Copy {
    /// Its bits, zero-extended to a word.
    fn to_bits(self) -> u64;
    /// The value of the low bits of `bits`, as many as its width (any word decodes).
    fn from_bits(bits: u64) -> Self;
}

macro_rules! unsigned_field {
    ($($t:ty),*) => {
        $(impl Field for $t {
            fn to_bits(self) -> u64 {
                u64::from(self)
            }

            fn from_bits(bits: u64) -> $t {
                bits as $t
            }
        })*
    };
}

unsigned_field!(u8, u16, u32, u64);

/// A signed status, as its 16 bits.
impl Field for i16 {
    fn to_bits(self) -> u64 {
        u64::from(self as u16)
    }

    fn from_bits(bits: u64) -> i16 {
        bits as u16 as i16
    }
}

/// Implements [`Field`] for a type that travels as a code of type `$raw`: through its
/// `to_raw` and `from_raw`, or, for a [`crate::numbered_enum!`] with `unknown`, through its
/// number and its `from_raw`, a code it does not know reading as the variant named (a ring
/// status: Xen's frontends take any status but the known ones as an error).
macro_rules! coded_field {
    ($t:ident as $raw:ty, unknown $default:ident) => {
        impl $crate::io::ring::Field for $t {
            fn to_bits(self) -> u64 {
                $crate::io::ring::Field::to_bits(self as $raw)
            }

            fn from_bits(bits: u64) -> $t {
                $t::from_raw(<$raw as $crate::io::ring::Field>::from_bits(bits))
                    .unwrap_or($t::$default)
            }
        }
    };
    ($t:ty as $raw:ty) => {
        impl $crate::io::ring::Field for $t {
            fn to_bits(self) -> u64 {
                $crate::io::ring::Field::to_bits(self.to_raw())
            }

            fn from_bits(bits: u64) -> $t {
                <$t>::from_raw(<$raw as $crate::io::ring::Field>::from_bits(bits))
            }
        }
    };
}
pub(crate) use coded_field;

/// Implements [`Message`] for a struct each of whose fields sits at a bit offset of one
/// word of the slot, listed as it is decoded: `field: w[word] >> shift` (no shift for bit 0).
/// Encoding writes each field's bits into its word (every word starts at zero); decoding
/// takes them back, truncated to the field's width, so any words decode.
macro_rules! packed_message {
    ($ty:ident, 1 word { $($fields:tt)* }) => {
        $crate::io::ring::packed_message!($ty, 1 words { $($fields)* });
    };
    (
        $ty:ident, $words:literal words {
            $($field:ident: w[$word:literal] $(>> $shift:literal)?),* $(,)?
        }
    ) => {
        impl $crate::io::ring::Message for $ty {
            const WORDS: usize = $words;

            fn encode(&self, w: &mut [u64]) {
                w.fill(0);
                $(w[$word] |= $crate::io::ring::Field::to_bits(self.$field) $(<< $shift)?;)*
            }

            fn decode(w: &[u64]) -> $ty {
                $ty {
                    $($field: $crate::io::ring::Field::from_bits(w[$word] $(>> $shift)?),)*
                }
            }
        }
    };
}
pub(crate) use packed_message;

/// Slots of a ring whose slots are `slot_words` words: the largest power of two that fits in
/// the page after the header.
pub const fn ring_size(slot_words: usize) -> u32 {
    assert!(slot_words > 0 && slot_words <= MAX_SLOT_WORDS);
    let fit = (PAGE_WORDS - HEADER_WORDS) / slot_words;
    let mut size = 1;
    while size * 2 <= fit {
        size *= 2;
    }
    size as u32
}

/// Words per slot of a ring carrying `Req` and `Rsp`.
const fn slot_words<Req: Message, Rsp: Message>() -> usize {
    if Req::WORDS > Rsp::WORDS {
        Req::WORDS
    } else {
        Rsp::WORDS
    }
}

/// The shared page and the geometry both sides derive from the message types.
struct Shared<'a, Req, Rsp> {
    page: &'a [AtomicU64],
    _types: PhantomData<fn() -> (Req, Rsp)>,
}

impl<'a, Req: Message, Rsp: Message> Shared<'a, Req, Rsp> {
    const SLOT_WORDS: usize = slot_words::<Req, Rsp>();
    const SIZE: u32 = ring_size(Self::SLOT_WORDS);

    fn new(page: &'a [AtomicU64]) -> Self {
        assert!(page.len() >= PAGE_WORDS, "a ring needs a whole page");
        Shared {
            page,
            _types: PhantomData,
        }
    }

    fn load(&self, index: usize, order: Ordering) -> u32 {
        self.page[index].load(order) as u32
    }

    fn store(&self, index: usize, value: u32, order: Ordering) {
        self.page[index].store(u64::from(value), order);
    }

    fn slot(&self, idx: u32) -> &[AtomicU64] {
        let start = HEADER_WORDS + (idx & (Self::SIZE - 1)) as usize * Self::SLOT_WORDS;
        &self.page[start..start + Self::SLOT_WORDS]
    }

    fn write<M: Message>(&self, idx: u32, msg: &M) {
        let mut words = [0u64; MAX_SLOT_WORDS];
        msg.encode(&mut words[..M::WORDS]);
        for (cell, &w) in self.slot(idx).iter().zip(&words[..M::WORDS]) {
            cell.store(w, Ordering::Relaxed);
        }
    }

    fn read<M: Message>(&self, idx: u32) -> M {
        let mut words = [0u64; MAX_SLOT_WORDS];
        for (w, cell) in words[..M::WORDS].iter_mut().zip(self.slot(idx)) {
            *w = cell.load(Ordering::Relaxed);
        }
        M::decode(&words[..M::WORDS])
    }

    /// A producer's push: writes `msg` into its next private slot `*prod_pvt` and moves it
    /// on, if `room`; the consumer sees it once the index is published.
    fn push<M: Message>(&self, prod_pvt: &mut u32, msg: &M, room: bool) -> Result<(), Full> {
        if !room {
            return Err(Full);
        }
        self.write(*prod_pvt, msg);
        *prod_pvt = prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// A consumer's take: reads the message in slot `*cons` and moves past it, if one is
    /// `published` there (copied out of its slot once).
    fn take<M: Message>(&self, cons: &mut u32, published: bool) -> Option<M> {
        if !published {
            return None;
        }
        let msg = self.read(*cons);
        *cons = cons.wrapping_add(1);
        Some(msg)
    }

    /// A consumer's check before sleeping (Xen's `RING_FINAL_CHECK_FOR_*`): true if
    /// `waiting()`; otherwise asks, through event index `event_index`, to be notified of the
    /// message after `cons`, and checks once more, so one published in between is not
    /// missed.
    fn final_check(&self, event_index: usize, cons: u32, waiting: impl Fn() -> bool) -> bool {
        if waiting() {
            return true;
        }
        self.store(event_index, cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        waiting()
    }

    /// Publishes producer index `prod_index` as `new` and says whether the consumer asked to
    /// be notified (Xen's `RING_PUSH_*_AND_CHECK_NOTIFY`): it did if its event index lies in
    /// `(old, new]`, which with wrapping indices is `new - event < new - old`.
    fn push_and_check_notify(&self, prod_index: usize, event_index: usize, new: u32) -> bool {
        let old = self.load(prod_index, Ordering::Relaxed);
        // Release: the slots written before are visible to whoever acquires the new index.
        self.store(prod_index, new, Ordering::Release);
        // Xen's mb(): the consumer stores its event index and then re-reads ours; this side
        // stores its index and then reads the event index; the fences make at least one of
        // the two loads see the other side's store.
        fence(Ordering::SeqCst);
        let event = self.load(event_index, Ordering::Relaxed);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }
}

/// Writes a fresh ring header into `page`: no requests, no responses, and both event indices
/// at 1 so that the first push of either side notifies (Xen's `SHARED_RING_INIT`).
fn init_header(page: &[AtomicU64], start: u32) {
    assert!(page.len() >= PAGE_WORDS, "a ring needs a whole page");
    for w in &page[..HEADER_WORDS] {
        w.store(0, Ordering::Relaxed);
    }
    let next = u64::from(start.wrapping_add(1));
    page[REQ_PROD].store(u64::from(start), Ordering::Relaxed);
    page[RSP_PROD].store(u64::from(start), Ordering::Relaxed);
    page[REQ_EVENT].store(next, Ordering::Relaxed);
    page[RSP_EVENT].store(next, Ordering::Relaxed);
    fence(Ordering::SeqCst);
}

/// The ring is full: no slot is free for another request (or response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// The frontend's side: produces requests, consumes responses.
pub struct FrontRing<'a, Req, Rsp> {
    shared: Shared<'a, Req, Rsp>,
    req_prod_pvt: u32,
    rsp_cons: u32,
}

impl<'a, Req: Message, Rsp: Message> FrontRing<'a, Req, Rsp> {
    /// Slots of this ring.
    pub const SIZE: u32 = Shared::<Req, Rsp>::SIZE;

    /// Initialises the shared header in `page` (Xen's `SHARED_RING_INIT` then
    /// `FRONT_RING_INIT`); call before granting the page to the backend.
    pub fn init(page: &'a [AtomicU64]) -> Self {
        Self::init_at(page, 0)
    }

    /// As [`FrontRing::init`], with every index starting at `start` (tests of the wrap).
    pub fn init_at(page: &'a [AtomicU64], start: u32) -> Self {
        init_header(page, start);
        FrontRing {
            shared: Shared::new(page),
            req_prod_pvt: start,
            rsp_cons: start,
        }
    }

    /// Slots of this ring.
    pub fn size(&self) -> u32 {
        Self::SIZE
    }

    /// Requests that may still be pushed before the ring is full (`RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        Self::SIZE - self.in_flight()
    }

    /// Requests pushed (published or not) whose responses have not been consumed.
    pub fn in_flight(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes `req` into the next private slot; the backend sees it after
    /// [`FrontRing::push_requests_and_check_notify`].
    pub fn push_request(&mut self, req: &Req) -> Result<(), Full> {
        let room = self.free_requests() > 0;
        self.shared.push(&mut self.req_prod_pvt, req, room)
    }

    /// Publishes the pushed requests; true if the backend must be sent an event
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        self.shared
            .push_and_check_notify(REQ_PROD, REQ_EVENT, self.req_prod_pvt)
    }

    /// Responses published and not yet consumed (`RING_HAS_UNCONSUMED_RESPONSES`). A
    /// backend that claims more responses than there are requests in flight is not believed
    /// beyond that.
    pub fn unconsumed_responses(&self) -> u32 {
        let prod = self.shared.load(RSP_PROD, Ordering::Acquire);
        prod.wrapping_sub(self.rsp_cons).min(self.in_flight())
    }

    /// Takes the next response, if one is published.
    pub fn take_response(&mut self) -> Option<Rsp> {
        let published = self.unconsumed_responses() > 0;
        self.shared.take(&mut self.rsp_cons, published)
    }

    /// Before sleeping: true if responses are waiting; otherwise asks to be notified of the
    /// next one and checks once more, so one published in between is not missed
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`).
    pub fn final_check_for_responses(&mut self) -> bool {
        self.shared
            .final_check(RSP_EVENT, self.rsp_cons, || self.unconsumed_responses() > 0)
    }
}

/// The backend's side: consumes requests, produces responses.
pub struct BackRing<'a, Req, Rsp> {
    shared: Shared<'a, Req, Rsp>,
    rsp_prod_pvt: u32,
    req_cons: u32,
}

impl<'a, Req: Message, Rsp: Message> BackRing<'a, Req, Rsp> {
    /// Slots of this ring.
    pub const SIZE: u32 = Shared::<Req, Rsp>::SIZE;

    /// Attaches to a ring the frontend initialised (Xen's `BACK_RING_ATTACH`): the private
    /// indices start at the published `rsp_prod`, so requests already pushed are seen.
    pub fn attach(page: &'a [AtomicU64]) -> Self {
        let shared = Shared::new(page);
        let start = shared.load(RSP_PROD, Ordering::Acquire);
        BackRing {
            shared,
            rsp_prod_pvt: start,
            req_cons: start,
        }
    }

    /// Slots of this ring.
    pub fn size(&self) -> u32 {
        Self::SIZE
    }

    /// Requests published and not yet consumed (`RING_HAS_UNCONSUMED_REQUESTS`): never more
    /// than the slots whose responses are out, whatever the frontend wrote into `req_prod`.
    pub fn unconsumed_requests(&self) -> u32 {
        let prod = self.shared.load(REQ_PROD, Ordering::Acquire);
        let published = prod.wrapping_sub(self.req_cons);
        let room = Self::SIZE - self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        published.min(room)
    }

    /// Takes the next request, if one is published (copied out of its slot once).
    pub fn take_request(&mut self) -> Option<Req> {
        let published = self.unconsumed_requests() > 0;
        self.shared.take(&mut self.req_cons, published)
    }

    /// Requests taken whose responses have not been pushed.
    pub fn pending(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Writes `rsp` into the next private slot (the slot of the oldest request taken and not
    /// yet answered); fails if every request taken is answered already.
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<(), Full> {
        let room = self.pending() > 0;
        self.shared.push(&mut self.rsp_prod_pvt, rsp, room)
    }

    /// Publishes the pushed responses; true if the frontend must be sent an event
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        self.shared
            .push_and_check_notify(RSP_PROD, RSP_EVENT, self.rsp_prod_pvt)
    }

    /// Before sleeping: true if requests are waiting; otherwise asks to be notified of the
    /// next one and checks once more (`RING_FINAL_CHECK_FOR_REQUESTS`).
    pub fn final_check_for_requests(&mut self) -> bool {
        self.shared
            .final_check(REQ_EVENT, self.req_cons, || self.unconsumed_requests() > 0)
    }
}

/// `m` encoded into a slot's words and decoded back (the protocols' tests).
#[cfg(test)]
pub(crate) fn roundtrip<M: Message>(m: &M) -> M {
    let mut w = [0u64; 16];
    m.encode(&mut w[..M::WORDS]);
    M::decode(&w[..M::WORDS])
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::vec::Vec;

    /// A request of three words: an id and two payload words derived from it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Req {
        id: u64,
        a: u64,
        b: u64,
    }

    impl Req {
        fn new(id: u64) -> Req {
            Req {
                id,
                a: id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                b: !id,
            }
        }
    }

    impl Message for Req {
        const WORDS: usize = 3;
        fn encode(&self, w: &mut [u64]) {
            w.copy_from_slice(&[self.id, self.a, self.b]);
        }
        fn decode(w: &[u64]) -> Req {
            Req {
                id: w[0],
                a: w[1],
                b: w[2],
            }
        }
    }

    /// A response of one word.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Rsp(u64);

    impl Message for Rsp {
        const WORDS: usize = 1;
        fn encode(&self, w: &mut [u64]) {
            w[0] = self.0;
        }
        fn decode(w: &[u64]) -> Rsp {
            Rsp(w[0])
        }
    }

    fn answer(req: &Req) -> Rsp {
        Rsp(req.id ^ req.a ^ 0x5555)
    }

    fn page() -> Vec<AtomicU64> {
        (0..PAGE_WORDS)
            .map(|_| AtomicU64::new(0xdead_beef))
            .collect()
    }

    #[test]
    fn sizes_are_the_largest_power_of_two_that_fits() {
        assert_eq!(ring_size(1), 256);
        assert_eq!(ring_size(2), 128);
        assert_eq!(ring_size(3), 128);
        assert_eq!(ring_size(7), 64);
        assert_eq!(ring_size(8), 32);
        assert_eq!(ring_size(11), 32);
        assert_eq!(FrontRing::<Req, Rsp>::SIZE, 128);
    }

    #[test]
    fn requests_and_responses_cross_the_u32_wrap() {
        let page = page();
        for start in [0, u32::MAX - 5, u32::MAX] {
            let mut front = FrontRing::<Req, Rsp>::init_at(&page, start);
            let mut back = BackRing::<Req, Rsp>::attach(&page);
            let size = front.size();
            let mut next = 0u64;
            let mut answered = 0u64;
            let mut taken = 0u64;
            for round in 0..5 {
                // Fill the ring completely, then drain it.
                while front.push_request(&Req::new(next)).is_ok() {
                    next += 1;
                }
                assert_eq!(front.free_requests(), 0, "round {round}");
                assert_eq!(front.push_request(&Req::new(next)), Err(Full));
                front.push_requests_and_check_notify();
                assert_eq!(back.unconsumed_requests(), size);
                while let Some(req) = back.take_request() {
                    assert_eq!(req, Req::new(taken));
                    taken += 1;
                    back.push_response(&answer(&req)).unwrap();
                }
                assert_eq!(back.push_response(&Rsp(0)), Err(Full));
                back.push_responses_and_check_notify();
                assert_eq!(front.unconsumed_responses(), size);
                while let Some(rsp) = front.take_response() {
                    assert_eq!(rsp, answer(&Req::new(answered)));
                    answered += 1;
                }
                assert_eq!(front.free_requests(), size);
            }
            assert_eq!(answered, next);
            assert_eq!(next, 5 * u64::from(size));
        }
    }

    #[test]
    fn the_backend_never_sees_more_requests_than_it_has_room_for() {
        let page = page();
        let _front = FrontRing::<Req, Rsp>::init(&page);
        let mut back = BackRing::<Req, Rsp>::attach(&page);
        // A hostile frontend claims four billion requests.
        page[REQ_PROD].store(u64::from(u32::MAX), Ordering::Relaxed);
        assert_eq!(back.unconsumed_requests(), back.size());
        for _ in 0..back.size() {
            assert!(back.take_request().is_some());
        }
        assert!(back.take_request().is_none());
        back.push_response(&Rsp(1)).unwrap();
        assert_eq!(back.unconsumed_requests(), 1);
    }

    #[test]
    fn the_frontend_never_sees_more_responses_than_requests_in_flight() {
        let page = page();
        let mut front = FrontRing::<Req, Rsp>::init(&page);
        front.push_request(&Req::new(1)).unwrap();
        front.push_requests_and_check_notify();
        page[RSP_PROD].store(1000, Ordering::Relaxed);
        assert_eq!(front.unconsumed_responses(), 1);
        assert!(front.take_response().is_some());
        assert!(front.take_response().is_none());
    }

    #[test]
    fn a_busy_consumer_gets_no_event_and_an_idle_one_exactly_one() {
        for start in [0, u32::MAX - 1] {
            let page = page();
            let mut front = FrontRing::<Req, Rsp>::init_at(&page, start);
            let mut back = BackRing::<Req, Rsp>::attach(&page);

            // A fresh ring asks for the first request.
            front.push_request(&Req::new(0)).unwrap();
            assert!(front.push_requests_and_check_notify());
            // The backend has not looked since: it is busy, no second event.
            front.push_request(&Req::new(1)).unwrap();
            assert!(!front.push_requests_and_check_notify());

            // The backend drains, goes idle (final check re-arms), and is woken once.
            while back.take_request().is_some() {}
            assert!(!back.final_check_for_requests());
            front.push_request(&Req::new(2)).unwrap();
            front.push_request(&Req::new(3)).unwrap();
            assert!(front.push_requests_and_check_notify());
            front.push_request(&Req::new(4)).unwrap();
            assert!(!front.push_requests_and_check_notify());
            // Pushing nothing new never notifies.
            assert!(!front.push_requests_and_check_notify());

            // The same on the response side: the first response notifies (rsp_event starts
            // at 1 past), later ones only after the frontend re-armed.
            assert_eq!(back.unconsumed_requests(), 3);
            while back.take_request().is_some() {}
            for id in 0..2 {
                back.push_response(&Rsp(id)).unwrap();
            }
            assert!(back.push_responses_and_check_notify());
            back.push_response(&Rsp(2)).unwrap();
            assert!(!back.push_responses_and_check_notify());
            while front.take_response().is_some() {}
            assert!(!front.final_check_for_responses());
            back.push_response(&Rsp(3)).unwrap();
            assert!(back.push_responses_and_check_notify());
            back.push_response(&Rsp(4)).unwrap();
            assert!(!back.push_responses_and_check_notify());

            // A final check that finds work does not re-arm, and reports it.
            assert!(front.final_check_for_responses());
            assert_eq!(front.unconsumed_responses(), 2);
        }
    }

    #[test]
    fn the_final_check_sees_what_arrived_while_arming() {
        let page = page();
        let mut front = FrontRing::<Req, Rsp>::init(&page);
        let mut back = BackRing::<Req, Rsp>::attach(&page);
        // Consumed one, then re-armed; a request published before the check is seen by it.
        front.push_request(&Req::new(0)).unwrap();
        front.push_requests_and_check_notify();
        back.take_request().unwrap();
        front.push_request(&Req::new(1)).unwrap();
        // Published, and no event asked (the backend has not re-armed yet)...
        assert!(!front.push_requests_and_check_notify());
        // ...but the backend's final check finds it, so nothing is lost.
        assert!(back.final_check_for_requests());
    }

    /// An event channel: a pending flag; `wait` spins (yielding) until it can clear it.
    struct Channel {
        pending: AtomicBool,
        sent: AtomicU64,
    }

    impl Channel {
        fn new() -> Channel {
            Channel {
                pending: AtomicBool::new(false),
                sent: AtomicU64::new(0),
            }
        }
        fn send(&self) {
            self.sent.fetch_add(1, Ordering::Relaxed);
            self.pending.store(true, Ordering::SeqCst);
        }
        fn wait(&self) {
            while !self.pending.swap(false, Ordering::SeqCst) {
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn two_threads_pass_every_request_once_in_order() {
        const COUNT: u64 = 100_000;
        let page = page();
        let to_back = Channel::new();
        let to_front = Channel::new();
        let mut front = FrontRing::<Req, Rsp>::init(&page);
        let mut back = BackRing::<Req, Rsp>::attach(&page);

        std::thread::scope(|s| {
            s.spawn(|| {
                // The backend: answer everything, sleep when there is nothing.
                let mut expected = 0u64;
                while expected < COUNT {
                    while let Some(req) = back.take_request() {
                        assert_eq!(req, Req::new(expected), "request lost, doubled or torn");
                        expected += 1;
                        back.push_response(&answer(&req)).unwrap();
                        if back.push_responses_and_check_notify() {
                            to_front.send();
                        }
                    }
                    if expected < COUNT && !back.final_check_for_requests() {
                        to_back.wait();
                    }
                }
            });

            // The frontend: keep the ring as full as it can, check every answer.
            let mut sent = 0u64;
            let mut received = 0u64;
            while received < COUNT {
                let mut progress = false;
                while sent < COUNT && front.push_request(&Req::new(sent)).is_ok() {
                    sent += 1;
                    progress = true;
                    // Publish in small batches so that both sides go idle now and then.
                    if sent.is_multiple_of(7) && front.push_requests_and_check_notify() {
                        to_back.send();
                    }
                }
                if front.push_requests_and_check_notify() {
                    to_back.send();
                }
                while let Some(rsp) = front.take_response() {
                    assert_eq!(rsp, answer(&Req::new(received)), "response mismatch");
                    received += 1;
                    progress = true;
                }
                if !progress && received < COUNT && !front.final_check_for_responses() {
                    to_front.wait();
                }
            }
            assert_eq!(sent, COUNT);
        });
        // Suppression works: far fewer events than messages each way.
        assert!(to_back.sent.load(Ordering::Relaxed) < COUNT);
        assert!(to_front.sent.load(Ordering::Relaxed) < COUNT);
    }
}
