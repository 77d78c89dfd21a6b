//! Urgent requests: a block a reader waits for, asked of a peer that chokes us
//! (`vmt_urgent`, a BEP 10 extension of vmt's own).
//!
//! Each uploader unchokes a few of its interested peers (`EngineConfig::upload_slots`) and
//! moves one slot per rotation, so a client is fed by a few of its neighbours at a time. In a
//! crowd the piece a read misses has usually just entered it: one or two neighbours hold it,
//! and they are likely to be choking this client, so the read would wait for their rotation
//! (or, from an injecting seeder, for the decline's retry). A peer that lists `vmt_urgent` in
//! its handshake's `m` serves a request sent under that id even while it chokes the requester,
//! up to [`URGENT_QUEUE`] blocks queued for that peer. Our clients send one only for blocks a
//! reader waits for, never for plan or background fill, so the slots still decide who gets the
//! bulk of an uplink; the bound caps what a peer that sends everything this way can take. One
//! exception: of an injecting seeder they also ask the rest of a demanded piece, after the
//! blocks waited for, since it declines that piece to every other sharing peer while it sends
//! it to one (the other readers of the piece wait until that one holds it whole).
//! A peer that unchokes us is asked urgently too for the blocks a reader waits for: it
//! queues them ahead of its other uploads to us (`wire::Outbox::push`) and, on a paced uplink,
//! ahead of its uploads to everyone ([`crate::ratelimit`]), so a reader's block waits for its
//! own bytes, not a share of every slot's bulk. Simulated (`vmt-train swarm-sim
//! --no-demand-first` against the default), this took a crowd of 128 from 36.4 to 34.1 s.
//! A choke voids urgent requests like any other (BEP 3), and an injecting seeder declines
//! them like any other. A client with many urgent uploads queued over all its connections
//! answers one more busy instead (see [`crate::busy`]), so its asker goes to another holder.
//!
//! Off by default (`EngineConfig::urgent`, `--urgent`): measured at headless N=128 with an
//! injecting seeder (`datasets/results/scale/urgent/`: mean completion 44.4 s against 52.0 s
//! without). A plain seeder must not serve them (`vmt-run seed` refuses `--urgent` without
//! `--inject`): it holds every piece, so every client it chokes asks it for each block it
//! waits for and gets its own copy; such a crowd of 128 (`results/scale/rebuilt/`) had not
//! one client done after 16 minutes, where it takes 10 with an injecting seeder.
//!
//! The message is a bencoded dictionary with a request's three fields,
//! `d5:begini<B>e5:indexi<I>e6:lengthi<L>ee`, under the id the receiver gave `vmt_urgent`;
//! the answer is an ordinary `piece` message and `cancel` withdraws it. Stock clients ignore
//! the key, as BEP 10 asks, and are only ever sent ordinary requests.

use bencode::{BencodeValue, ByteBuf};
use peer_binary_protocol::Request;
use serde::Deserialize;

/// Our id for it (librqbit-peer-protocol takes 1 and 3, `vmt_block_hashes` 5,
/// `vmt_elsewhere` 6).
pub(crate) const MY_URGENT_ID: u8 = 7;

/// Urgent requests a choking peer queues for one connection, and the most a client keeps
/// outstanding at a peer that chokes it: 512 KiB, a few reads' worth of 16 KiB blocks.
pub(crate) const URGENT_QUEUE: usize = 32;

/// The remote's id for `vmt_urgent`, from its extended handshake's bencoded payload (after
/// the two id bytes); `None` if it does not serve urgent requests.
pub(crate) fn remote_id(handshake: &[u8]) -> Option<u8> {
    #[derive(Deserialize)]
    struct Ids {
        vmt_urgent: Option<u8>,
    }
    #[derive(Deserialize)]
    struct Handshake {
        m: Option<Ids>,
    }
    let h = bencode::from_bytes::<Handshake>(handshake).ok()?;
    h.m.and_then(|m| m.vmt_urgent).filter(|&id| id != 0)
}

/// Writes urgent request `r` as one whole peer-wire message into `out` (80 bytes suffice)
/// for a peer whose id for the extension is `remote_id`; returns its length.
pub(crate) fn encode(out: &mut [u8], remote_id: u8, r: &Request) -> usize {
    crate::ext_frame::encode_small(
        out,
        remote_id,
        format_args!(
            "d5:begini{}e5:indexi{}e6:lengthi{}ee",
            r.begin, r.index, r.length
        ),
    )
}

/// The request an urgent message carries; `None` for anything malformed (ignored).
pub(crate) fn decode(value: &BencodeValue<ByteBuf<'_>>) -> Option<Request> {
    let BencodeValue::Dict(d) = value else {
        return None;
    };
    let field = |k: &[u8]| match d.get(&ByteBuf(k)) {
        Some(BencodeValue::Integer(i)) => u32::try_from(*i).ok(),
        _ => None,
    };
    Some(Request::new(
        field(b"index")?,
        field(b"begin")?,
        field(b"length")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext_frame::wire_check::{decoded, framed};

    #[test]
    fn an_urgent_request_round_trips_through_the_wire_decoder() {
        let r = Request::new(u32::MAX, 1 << 20, 16384);
        let mut buf = [0u8; 80];
        let n = encode(&mut buf, MY_URGENT_ID, &r);
        let (id, got) = decoded(&buf[..n], |id, v| (id, decode(v).expect("decodes")));
        assert_eq!(id, MY_URGENT_ID);
        assert_eq!(
            (got.index, got.begin, got.length),
            (r.index, r.begin, r.length)
        );
    }

    #[test]
    fn malformed_messages_decode_to_nothing() {
        for bad in [
            &b"d5:indexi1e5:begini0ee"[..],
            b"d5:begini0e5:indexi-1e6:lengthi16384ee",
            b"d5:begini0e5:index1:x6:lengthi16384ee",
            b"i3e",
        ] {
            let got = decoded(&framed(MY_URGENT_ID, bad), |_, v| decode(v));
            assert!(got.is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_remote_id_comes_from_m_and_zero_disables_it() {
        assert_eq!(remote_id(b"d1:md10:vmt_urgenti9eee"), Some(9));
        assert_eq!(remote_id(b"d1:md10:vmt_urgenti0eee"), None);
        assert_eq!(remote_id(b"d1:md6:ut_pexi1eee"), None);
        assert_eq!(remote_id(b"not bencode"), None);
    }
}
