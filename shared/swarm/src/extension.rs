//! The extension protocol (BEP 10): the extended handshake we send, and what we keep of the
//! remote's.
//!
//! Message ids are librqbit-peer-protocol's: it decodes an incoming extended message by the id
//! *we* assigned (`PeerExtendedMessageIds::my()`, which our handshake advertises), and encodes
//! an outgoing one with the id the *remote* assigned, read through [`RemoteExtensions`].

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU8, Ordering};

use bencode::ByteBuf;
use peer_binary_protocol::extended::handshake::ExtendedHandshake;
use peer_binary_protocol::extended::PeerExtendedMessageIds;
use peer_binary_protocol::{MY_EXTENDED_UT_METADATA, MY_EXTENDED_UT_PEX};
use serde::Serialize;

use crate::busy::{self, MY_BUSY_ID};
use crate::have_block::{self, MY_HAVE_BLOCK_ID};
use crate::inject::{self, OurInjection, RemoteInjection, MY_ELSEWHERE_ID};
use crate::table_exchange::{self, MY_TABLE_ID};
use crate::urgent::{self, MY_URGENT_ID};
use crate::wire::ADVERTISED_REQQ;

/// Our `v`: client name and version.
pub const CLIENT_VERSION: &str = concat!("vmt ", env!("CARGO_PKG_VERSION"));

/// Requests we keep outstanding at a peer that sent no `reqq`: BEP 10 gives libtorrent's 250
/// as the default, and libtorrent and Transmission assume it of silent peers.
pub const DEFAULT_REMOTE_REQQ: usize = 250;

/// Our extended handshake, as librqbit-peer-protocol's `ExtendedHandshake` writes it plus
/// keys that type cannot hold: `vmt_block_hashes` in `m` (see [`crate::table_exchange`]),
/// `vmt_elsewhere` in `m` and `vmt_inject` (see [`crate::inject`]), `vmt_urgent`,
/// `vmt_have_block` and `vmt_busy` in `m` (see [`crate::urgent`], [`crate::have_block`],
/// [`crate::busy`]).
#[derive(Serialize)]
struct WireHandshake<'a> {
    m: WireIds,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<u32>,
    reqq: u32,
    v: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmt_inject: Option<u8>,
}

#[derive(Serialize)]
struct WireIds {
    #[serde(skip_serializing_if = "Option::is_none")]
    ut_metadata: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ut_pex: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmt_block_hashes: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmt_busy: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmt_elsewhere: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmt_have_block: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmt_urgent: Option<u8>,
}

/// Writes our extended handshake as a whole peer-wire message into `out` and returns its
/// length. `listen_port` is `p` (only when we accept connections), `metadata_size` the length
/// of the info dictionary we serve over ut_metadata, `pex` whether we speak ut_pex, and
/// `table` whether we serve a block-hash table over `vmt_block_hashes`, `injection` our part
/// in injection, `urgent` whether we serve urgent requests (and then take `vmt_have_block`
/// announcements: we are a client that asks urgently too); `vmt_busy` is always listed. `out`
/// needs 256 bytes.
pub(crate) fn encode_handshake(
    out: &mut [u8],
    listen_port: Option<u16>,
    metadata_size: usize,
    pex: bool,
    table: bool,
    injection: OurInjection,
    urgent: bool,
) -> usize {
    let h = WireHandshake {
        m: WireIds {
            ut_metadata: Some(MY_EXTENDED_UT_METADATA),
            ut_pex: pex.then_some(MY_EXTENDED_UT_PEX),
            vmt_block_hashes: table.then_some(MY_TABLE_ID),
            // Busy answers come only to urgent requests: listed by whoever might send one.
            vmt_busy: Some(MY_BUSY_ID),
            vmt_elsewhere: injection.shares.then_some(MY_ELSEWHERE_ID),
            vmt_have_block: urgent.then_some(MY_HAVE_BLOCK_ID),
            vmt_urgent: urgent.then_some(MY_URGENT_ID),
        },
        metadata_size: u32::try_from(metadata_size).ok().filter(|&n| n > 0),
        p: listen_port.map(u32::from),
        reqq: ADVERTISED_REQQ as u32,
        v: CLIENT_VERSION,
        vmt_inject: injection.injects.then_some(1),
    };
    let mut body = vec![20u8, 0];
    bencode::bencode_serialize_to_writer(&h, &mut body).expect("a handshake always encodes");
    out[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
    out[4..4 + body.len()].copy_from_slice(&body);
    4 + body.len()
}

/// What the remote told us in its extended handshake; lock-free, shared by the connection's
/// reader (which sets it) and writer and the engine's PEX task (which read it).
#[derive(Default)]
pub(crate) struct RemoteExtensions {
    /// Its id for ut_pex; 0 = not supported (BEP 10: 0 disables a message).
    ut_pex: AtomicU8,
    /// Its id for ut_metadata; 0 = not supported.
    ut_metadata: AtomicU8,
    /// Its listening port (`p`); 0 = unknown.
    listen_port: AtomicU16,
    /// Its `reqq`; 0 = not sent.
    reqq: AtomicU32,
    /// Its id for vmt_block_hashes; 0 = not supported.
    table: AtomicU8,
    /// Its id for vmt_elsewhere; 0 = not supported.
    elsewhere: AtomicU8,
    /// It is an injecting seeder.
    injects: AtomicBool,
    /// Its id for vmt_urgent; 0 = not supported.
    urgent: AtomicU8,
    /// Its id for vmt_have_block; 0 = it takes no announcements.
    have_block: AtomicU8,
    /// Its id for vmt_busy; 0 = it takes no busy answers.
    busy: AtomicU8,
}

impl RemoteExtensions {
    /// Records the remote's (re-sent) handshake.
    pub fn update(&self, h: &ExtendedHandshake<ByteBuf<'_>>) {
        let ids = h.peer_extended_messages();
        self.ut_pex
            .store(ids.ut_pex.unwrap_or(0), Ordering::Relaxed);
        self.ut_metadata
            .store(ids.ut_metadata.unwrap_or(0), Ordering::Relaxed);
        if let Some(p) = h.port().filter(|&p| p != 0) {
            self.listen_port.store(p, Ordering::Relaxed);
        }
        if let Some(q) = h.reqq.filter(|&q| q > 0) {
            self.reqq.store(q, Ordering::Relaxed);
        }
    }

    /// Records the `vmt_block_hashes` id of the remote's (re-sent) handshake, from its raw
    /// bencoded payload.
    pub fn update_raw(&self, payload: &[u8]) {
        let id = table_exchange::remote_id(payload).unwrap_or(0);
        self.table.store(id, Ordering::Relaxed);
        let inj = inject::remote_injection(payload);
        self.elsewhere
            .store(inj.elsewhere.unwrap_or(0), Ordering::Relaxed);
        self.injects.store(inj.injects, Ordering::Relaxed);
        let urgent = urgent::remote_id(payload).unwrap_or(0);
        self.urgent.store(urgent, Ordering::Relaxed);
        let have_block = have_block::remote_id(payload).unwrap_or(0);
        self.have_block.store(have_block, Ordering::Relaxed);
        let busy = busy::remote_id(payload).unwrap_or(0);
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// The remote's id for `vmt_busy`, if it takes busy answers to its urgent requests.
    pub fn busy_id(&self) -> Option<u8> {
        Some(self.busy.load(Ordering::Relaxed)).filter(|&i| i != 0)
    }

    /// The remote's id for `vmt_have_block`, if it takes announcements of blocks.
    pub fn have_block_id(&self) -> Option<u8> {
        Some(self.have_block.load(Ordering::Relaxed)).filter(|&i| i != 0)
    }

    /// The remote's id for `vmt_urgent`, if it serves urgent requests.
    pub fn urgent_id(&self) -> Option<u8> {
        Some(self.urgent.load(Ordering::Relaxed)).filter(|&i| i != 0)
    }

    /// What the remote said about injection.
    pub fn injection(&self) -> RemoteInjection {
        RemoteInjection {
            elsewhere: Some(self.elsewhere.load(Ordering::Relaxed)).filter(|&i| i != 0),
            injects: self.injects.load(Ordering::Relaxed),
        }
    }

    /// The remote's id for `vmt_block_hashes`, if it speaks it.
    pub fn table_id(&self) -> Option<u8> {
        Some(self.table.load(Ordering::Relaxed)).filter(|&i| i != 0)
    }

    /// The remote's ids, for encoding messages to it.
    pub fn ids(&self) -> PeerExtendedMessageIds {
        let id = |a: &AtomicU8| Some(a.load(Ordering::Relaxed)).filter(|&i| i != 0);
        PeerExtendedMessageIds {
            ut_metadata: id(&self.ut_metadata),
            ut_pex: id(&self.ut_pex),
        }
    }

    pub fn supports_pex(&self) -> bool {
        self.ut_pex.load(Ordering::Relaxed) != 0
    }

    pub fn listen_port(&self) -> Option<u16> {
        Some(self.listen_port.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }

    /// Most requests to keep outstanding at the remote: its `reqq`, or
    /// [`DEFAULT_REMOTE_REQQ`].
    pub fn reqq(&self) -> usize {
        match self.reqq.load(Ordering::Relaxed) {
            0 => DEFAULT_REMOTE_REQQ,
            q => q as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_binary_protocol::extended::ExtendedMessage;
    use peer_binary_protocol::{Message, MessageDeserializeError};

    #[test]
    fn our_handshake_round_trips_and_fills_the_remote_view() {
        let mut buf = [0u8; 256];
        let injection = OurInjection {
            shares: true,
            injects: true,
        };
        let ours =
            |buf: &mut [u8]| encode_handshake(buf, Some(43001), 321, true, true, injection, true);
        let n = ours(&mut buf);
        let (back, len) = Message::deserialize(&buf[..n], &[]).unwrap();
        assert_eq!(len, n);
        let Message::Extended(ExtendedMessage::Handshake(h)) = back else {
            panic!("not an extended handshake: {back:?}");
        };
        assert_eq!(h.v.map(|v| v.0), Some(b"vmt 0.1.0".as_slice()));
        assert_eq!(
            (h.reqq, h.p, h.metadata_size),
            (Some(2048), Some(43001), Some(321))
        );
        let r = RemoteExtensions::default();
        assert_eq!(r.reqq(), DEFAULT_REMOTE_REQQ, "nothing heard yet");
        assert!(!r.supports_pex());
        r.update(&h);
        assert_eq!(r.reqq(), ADVERTISED_REQQ);
        assert_eq!(r.listen_port(), Some(43001));
        assert_eq!(r.ids(), PeerExtendedMessageIds::my());
        assert_eq!(r.table_id(), None);
        assert_eq!(r.injection(), RemoteInjection::default());
        assert_eq!(r.urgent_id(), None);
        assert_eq!(r.have_block_id(), None);
        r.update_raw(&buf[6..n]);
        assert_eq!(r.table_id(), Some(MY_TABLE_ID));
        assert_eq!(r.urgent_id(), Some(MY_URGENT_ID));
        assert_eq!(r.have_block_id(), Some(MY_HAVE_BLOCK_ID));
        assert_eq!(
            r.injection(),
            RemoteInjection {
                elsewhere: Some(MY_ELSEWHERE_ID),
                injects: true
            }
        );
        let n2 = encode_handshake(
            &mut buf,
            None,
            321,
            false,
            false,
            OurInjection::default(),
            false,
        );
        r.update_raw(&buf[6..n2]);
        assert_eq!(
            (
                r.table_id(),
                r.injection(),
                r.urgent_id(),
                r.have_block_id()
            ),
            (None, RemoteInjection::default(), None, None),
            "a re-sent handshake without them turns them off"
        );
        let n = ours(&mut buf);
        assert!(matches!(
            Message::deserialize(&buf[..n - 1], &[]),
            Err(MessageDeserializeError::NotEnoughData(..))
        ));
    }

    /// With PEX off (`--no-pex`) the handshake still encodes (librqbit's own handshake type
    /// failed with "bencode doesn't support None", so a vmt peer without PEX could connect to
    /// nobody), and `m` leaves ut_pex out (BEP 10: not supported).
    #[test]
    fn without_pex_the_handshake_encodes_and_disables_ut_pex() {
        let mut buf = [0u8; 256];
        let n = encode_handshake(
            &mut buf,
            None,
            321,
            false,
            false,
            OurInjection::default(),
            false,
        );
        assert!(
            !buf[..n].windows(8).any(|w| w == b"6:ut_pex"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        let (back, _) = Message::deserialize(&buf[..n], &[]).unwrap();
        let Message::Extended(ExtendedMessage::Handshake(h)) = back else {
            panic!("not an extended handshake: {back:?}");
        };
        let r = RemoteExtensions::default();
        r.update(&h);
        assert!(!r.supports_pex());
        assert!(r.ids().ut_metadata.is_some() && r.ids().ut_pex.is_none());
        assert_eq!(r.listen_port(), None);
    }

    #[test]
    fn a_handshake_without_reqq_or_m_keeps_the_defaults() {
        // Written by hand: `m` missing (no extensions), no reqq, port 0.
        let payload = b"\x00\x00\x00\x10\x14\x00d1:pi0e1:v1:xe";
        let (msg, _) = Message::deserialize(payload, &[]).unwrap();
        let Message::Extended(ExtendedMessage::Handshake(h)) = msg else {
            panic!("not an extended handshake");
        };
        let r = RemoteExtensions::default();
        r.update(&h);
        assert_eq!(r.reqq(), DEFAULT_REMOTE_REQQ);
        assert_eq!(r.listen_port(), None);
        assert_eq!(r.ids(), PeerExtendedMessageIds::default());
    }
}
