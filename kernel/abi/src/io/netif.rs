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

use crate::io::ring::{BackRing, FrontRing, coded_field, packed_message};

/// Largest packet, in bytes.
pub const MTU: usize = 1500;
/// Bytes of a granted page.
pub const PAGE_BYTES: usize = 4096;

crate::numbered_enum! {
    /// How a transmit or receive ended (Xen's `NETIF_RSP_*` values); in a slot, an unknown
    /// code reads as `Error`, and so does anything positive (a length is not a status).
    pub enum NetStatus: i16 {
        Okay = 0,
        /// Malformed, or a grant that could not be used.
        Error = -1,
        /// The backend threw the packet away.
        Dropped = -2,
    }
}

coded_field!(NetStatus as i16, unknown Error);

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

packed_message! {
    TxRequest, 2 words {
        gref: w[0],
        offset: w[0] >> 32,
        len: w[0] >> 48,
        id: w[1],
        flags: w[1] >> 16,
    }
}

/// The backend is done with transmit request `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxResponse {
    pub id: u16,
    pub status: NetStatus,
}

packed_message! {
    TxResponse, 1 word {
        id: w[0],
        status: w[0] >> 16,
    }
}

/// Posts the page granted as `gref` (read-write) for one received packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxRequest {
    /// Echoed in the response.
    pub id: u16,
    pub gref: u32,
}

packed_message! {
    RxRequest, 1 word {
        id: w[0],
        gref: w[0] >> 32,
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
            status: status as i16,
            flags: 0,
        }
    }

    /// The packet's length, or why there is none.
    pub fn packet_len(&self) -> Result<usize, NetStatus> {
        if self.status > 0 {
            Ok(self.status as usize)
        } else {
            Err(NetStatus::from_raw(self.status.min(-1)).unwrap_or(NetStatus::Error))
        }
    }
}

packed_message! {
    RxResponse, 1 word {
        id: w[0],
        offset: w[0] >> 16,
        status: w[0] >> 32,
        flags: w[0] >> 48,
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
    use crate::io::ring::{Message, roundtrip};

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

    /// The words are those the module's slot encoding describes.
    #[test]
    fn slots_hold_the_documented_words() {
        let mut w = [0u64; 2];
        TxRequest {
            gref: 0x1234_5678,
            offset: 0x9abc,
            len: 0x0def,
            id: 0x1111,
            flags: 0x2222,
        }
        .encode(&mut w);
        assert_eq!(w, [0x0def_9abc_1234_5678, 0x2222_1111]);
        let mut w = [u64::MAX];
        TxResponse {
            id: 7,
            status: NetStatus::Dropped,
        }
        .encode(&mut w);
        assert_eq!(w, [0xfffe_0007]);
        RxRequest {
            id: 3,
            gref: 0x8000_0001,
        }
        .encode(&mut w);
        assert_eq!(w, [0x8000_0001_0000_0003]);
        RxResponse {
            id: 1,
            offset: 2,
            status: -1,
            flags: 4,
        }
        .encode(&mut w);
        assert_eq!(w, [0x0004_ffff_0002_0001]);
        // Bits no field uses are ignored.
        assert_eq!(
            TxRequest::decode(&[0x0def_9abc_1234_5678, 0xffff_ffff_2222_1111]).flags,
            0x2222
        );
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
