//! The split network device: a transmit ring and a receive ring, each in its own page
//! (Xen's `public/io/netif.h`, simplified).
//!
//! Transmit: the frontend puts a packet in a page it granted and asks the backend to send it
//! ([`TxRequest`]: grant, offset, length); the backend answers ([`TxResponse`]) once it no
//! longer needs the page. Receive: the frontend posts empty pages it granted
//! ([`RxRequest`]); the backend fills one per packet and answers with where the packet is in
//! it and how long it is, or a negative [`NetStatus`] ([`RxResponse`]). A packet is at most
//! [`MTU`] bytes and lies within one page.
//!
//! Slot encoding:
//! - tx request (2 words): `gref | offset << 32 | len << 48`; `id | flags << 16`;
//! - tx response (1 word): `id | (status as u16) << 16`;
//! - rx request (1 word): `id | gref << 32`;
//! - rx response (1 word): `id | offset << 16 | (status as u16) << 32 | flags << 48`.
//!
//! The transmit ring has 128 slots, the receive ring 256.

use crate::ring::{BackRing, FrontRing, Message};

/// Largest packet, in bytes.
pub const MTU: usize = 1500;
/// Bytes of a granted page.
pub const PAGE_BYTES: usize = 4096;

/// How a transmit or receive ended (Xen's `NETIF_RSP_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetStatus {
    Okay,
    /// Malformed, or a grant that could not be used.
    Error,
    /// The backend threw the packet away.
    Dropped,
}

impl NetStatus {
    /// The code in a slot.
    pub fn to_raw(self) -> i16 {
        match self {
            NetStatus::Okay => 0,
            NetStatus::Error => -1,
            NetStatus::Dropped => -2,
        }
    }

    /// The status of a slot's code; unknown negative codes are errors, and so is anything
    /// positive (a length is not a status).
    pub fn from_raw(raw: i16) -> NetStatus {
        match raw {
            0 => NetStatus::Okay,
            -2 => NetStatus::Dropped,
            _ => NetStatus::Error,
        }
    }
}

/// Asks the backend to send `len` bytes at `offset` of the page granted as `gref`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxRequest {
    pub gref: u32,
    pub offset: u16,
    pub len: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Reserved: 0.
    pub flags: u16,
}

impl TxRequest {
    /// Whether the packet is one the backend may send: 1 to [`MTU`] bytes within the page.
    pub fn check(&self) -> Result<(), NetStatus> {
        let len = usize::from(self.len);
        if len == 0 || len > MTU || usize::from(self.offset) + len > PAGE_BYTES {
            Err(NetStatus::Error)
        } else {
            Ok(())
        }
    }
}

impl Message for TxRequest {
    const WORDS: usize = 2;

    fn encode(&self, w: &mut [u64]) {
        w[0] = u64::from(self.gref) | u64::from(self.offset) << 32 | u64::from(self.len) << 48;
        w[1] = u64::from(self.id) | u64::from(self.flags) << 16;
    }

    fn decode(w: &[u64]) -> TxRequest {
        TxRequest {
            gref: w[0] as u32,
            offset: (w[0] >> 32) as u16,
            len: (w[0] >> 48) as u16,
            id: w[1] as u16,
            flags: (w[1] >> 16) as u16,
        }
    }
}

/// The backend is done with transmit request `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxResponse {
    pub id: u16,
    pub status: NetStatus,
}

impl Message for TxResponse {
    const WORDS: usize = 1;

    fn encode(&self, w: &mut [u64]) {
        w[0] = u64::from(self.id) | u64::from(self.status.to_raw() as u16) << 16;
    }

    fn decode(w: &[u64]) -> TxResponse {
        TxResponse {
            id: w[0] as u16,
            status: NetStatus::from_raw((w[0] >> 16) as u16 as i16),
        }
    }
}

/// Posts the page granted as `gref` (read-write) for one received packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxRequest {
    /// Echoed in the response.
    pub id: u16,
    pub gref: u32,
}

impl Message for RxRequest {
    const WORDS: usize = 1;

    fn encode(&self, w: &mut [u64]) {
        w[0] = u64::from(self.id) | u64::from(self.gref) << 32;
    }

    fn decode(w: &[u64]) -> RxRequest {
        RxRequest {
            id: w[0] as u16,
            gref: (w[0] >> 32) as u32,
        }
    }
}

/// A packet arrived in the page of receive request `id`: `status` bytes at `offset`, or,
/// if `status` is negative, a [`NetStatus`] and no packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxResponse {
    pub id: u16,
    pub offset: u16,
    /// The packet's length, or a negative [`NetStatus`] code.
    pub status: i16,
    /// Reserved: 0.
    pub flags: u16,
}

impl RxResponse {
    /// A packet of `len` bytes (at most [`MTU`]) at `offset`.
    pub fn packet(id: u16, offset: u16, len: usize) -> RxResponse {
        debug_assert!(len <= MTU);
        RxResponse {
            id,
            offset,
            status: len as i16,
            flags: 0,
        }
    }

    /// No packet, for `status`.
    pub fn failed(id: u16, status: NetStatus) -> RxResponse {
        RxResponse {
            id,
            offset: 0,
            status: status.to_raw(),
            flags: 0,
        }
    }

    /// The packet's length, or why there is none.
    pub fn packet_len(&self) -> Result<usize, NetStatus> {
        if self.status > 0 {
            Ok(self.status as usize)
        } else {
            Err(NetStatus::from_raw(self.status.min(-1)))
        }
    }
}

impl Message for RxResponse {
    const WORDS: usize = 1;

    fn encode(&self, w: &mut [u64]) {
        w[0] = u64::from(self.id)
            | u64::from(self.offset) << 16
            | u64::from(self.status as u16) << 32
            | u64::from(self.flags) << 48;
    }

    fn decode(w: &[u64]) -> RxResponse {
        RxResponse {
            id: w[0] as u16,
            offset: (w[0] >> 16) as u16,
            status: (w[0] >> 32) as u16 as i16,
            flags: (w[0] >> 48) as u16,
        }
    }
}

/// The frontend's end of a transmit ring.
pub type TxFrontRing<'a> = FrontRing<'a, TxRequest, TxResponse>;
/// The backend's end of a transmit ring.
pub type TxBackRing<'a> = BackRing<'a, TxRequest, TxResponse>;
/// The frontend's end of a receive ring.
pub type RxFrontRing<'a> = FrontRing<'a, RxRequest, RxResponse>;
/// The backend's end of a receive ring.
pub type RxBackRing<'a> = BackRing<'a, RxRequest, RxResponse>;

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<M: Message>(m: &M) -> M {
        let mut w = [0u64; 4];
        m.encode(&mut w[..M::WORDS]);
        M::decode(&w[..M::WORDS])
    }

    #[test]
    fn messages_survive_encoding() {
        let tx = TxRequest {
            gref: u32::MAX,
            offset: 4095,
            len: 1500,
            id: 65535,
            flags: 3,
        };
        assert_eq!(roundtrip(&tx), tx);
        for status in [NetStatus::Okay, NetStatus::Error, NetStatus::Dropped] {
            let rsp = TxResponse { id: 9, status };
            assert_eq!(roundtrip(&rsp), rsp);
            let rx = RxResponse::failed(3, status);
            assert_eq!(roundtrip(&rx), rx);
        }
        let rx = RxRequest {
            id: 12,
            gref: 0x8000_0001,
        };
        assert_eq!(roundtrip(&rx), rx);
        let rsp = RxResponse::packet(65535, 2596, MTU);
        assert_eq!(roundtrip(&rsp), rsp);
        assert_eq!(rsp.packet_len(), Ok(MTU));
        assert_eq!(TxFrontRing::SIZE, 128);
        assert_eq!(RxFrontRing::SIZE, 256);
    }

    #[test]
    fn receive_status_is_a_length_or_an_error() {
        assert_eq!(RxResponse::packet(1, 0, 60).packet_len(), Ok(60));
        assert_eq!(
            RxResponse::failed(1, NetStatus::Dropped).packet_len(),
            Err(NetStatus::Dropped)
        );
        // An empty packet is not a packet.
        assert_eq!(
            RxResponse::failed(1, NetStatus::Okay).packet_len(),
            Err(NetStatus::Error)
        );
        let odd = RxResponse {
            id: 0,
            offset: 0,
            status: -30,
            flags: 0,
        };
        assert_eq!(odd.packet_len(), Err(NetStatus::Error));
    }

    #[test]
    fn transmit_requests_stay_in_their_page() {
        let ok = TxRequest {
            gref: 1,
            offset: 4096 - 1500,
            len: 1500,
            id: 0,
            flags: 0,
        };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(
            TxRequest {
                offset: 4096 - 1499,
                ..ok
            }
            .check(),
            Err(NetStatus::Error)
        );
        assert_eq!(
            TxRequest {
                len: 1501,
                offset: 0,
                ..ok
            }
            .check(),
            Err(NetStatus::Error)
        );
        assert_eq!(TxRequest { len: 0, ..ok }.check(), Err(NetStatus::Error));
    }
}
