//! Blocks of a piece not yet whole, announced and served (`vmt_have_block`, a BEP 10
//! extension of vmt's own).
//!
//! BitTorrent trades whole pieces: a peer announces (HAVE) and serves a piece only once it
//! verified all of it. A vmt client fetches the blocks a reader waits for first and verifies
//! each alone against the torrent's block-hash table, so it holds many blocks of pieces that
//! are not whole yet; the rest follows as background fill, late. In a flash crowd every
//! client's reads start on the same blocks (every held-out trace of the rebuilt image reads
//! pieces 2371, 997, 15, 150 and 23 within its first 82 reads), so the first few clients to
//! get those blocks hold exactly what the rest of the crowd waits for, and cannot give it:
//! every other reader queues at the one or two peers that hold the piece whole (issue 15,
//! stop 29: 10% of the crowd held piece 150 whole only after 13 s).
//!
//! So a client that shares what it gets and serves urgent requests sends each block it
//! verified alone to every peer that lists `vmt_have_block` in its handshake's `m`, and
//! serves a request for blocks it holds whatever its piece's state. The receiver counts the
//! block as held there and, when a reader waits for it, asks that peer for it as it would ask a
//! holder of the whole piece (an urgent request if it chokes us). Only blocks a reader waits
//! for are asked this way: a partial holder is never asked for plan or background fill, which
//! whole pieces keep carrying. A block, once verified, is never lost, so an announcement stays
//! true; HAVE of the piece makes it moot.
//!
//! The message is a bencoded dictionary, `d5:blocki<N>ee`, N the block's number across the
//! image (16 KiB units, `Layout`), under the id the receiver gave `vmt_have_block`. Stock
//! clients never see one (they do not list the key), and never ask for a piece we did not
//! announce.

use bencode::{BencodeValue, ByteBuf};
use serde::Deserialize;

/// Our id for it (librqbit-peer-protocol takes 1 and 3, `vmt_block_hashes` 5,
/// `vmt_elsewhere` 6, `vmt_urgent` 7).
pub(crate) const MY_HAVE_BLOCK_ID: u8 = 8;

/// The remote's id for `vmt_have_block`, from its extended handshake's bencoded payload (after
/// the two id bytes); `None` if it takes no announcements.
pub(crate) fn remote_id(handshake: &[u8]) -> Option<u8> {
    #[derive(Deserialize)]
    struct Ids {
        vmt_have_block: Option<u8>,
    }
    #[derive(Deserialize)]
    struct Handshake {
        m: Option<Ids>,
    }
    let h = bencode::from_bytes::<Handshake>(handshake).ok()?;
    h.m.and_then(|m| m.vmt_have_block).filter(|&id| id != 0)
}

/// Writes an announcement of `block` as one whole peer-wire message into `out` (32 bytes
/// suffice) for a peer whose id for the extension is `remote_id`; returns its length.
pub(crate) fn encode(out: &mut [u8], remote_id: u8, block: u32) -> usize {
    crate::ext_frame::encode_small(out, remote_id, format_args!("d5:blocki{block}ee"))
}

/// The block an announcement names; `None` for anything malformed (ignored).
pub(crate) fn decode(value: &BencodeValue<ByteBuf<'_>>) -> Option<u32> {
    let BencodeValue::Dict(d) = value else {
        return None;
    };
    match d.get(&ByteBuf(b"block")) {
        Some(BencodeValue::Integer(i)) => u32::try_from(*i).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext_frame::wire_check::{decoded, framed};

    #[test]
    fn an_announcement_round_trips_through_the_wire_decoder() {
        for block in [0, 150 * 16 + 3, u32::MAX] {
            let mut buf = [0u8; 32];
            let n = encode(&mut buf, MY_HAVE_BLOCK_ID, block);
            let got = decoded(&buf[..n], |id, v| (id, decode(v)));
            assert_eq!(got, (MY_HAVE_BLOCK_ID, Some(block)));
        }
    }

    #[test]
    fn malformed_announcements_decode_to_nothing() {
        for bad in [
            &b"d5:blocki-1ee"[..],
            b"d5:blocki4294967296ee",
            b"d5:block1:xe",
            b"d5:piecei3ee",
            b"i3e",
        ] {
            let got = decoded(&framed(MY_HAVE_BLOCK_ID, bad), |_, v| decode(v));
            assert!(got.is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_remote_id_comes_from_m_and_zero_disables_it() {
        assert_eq!(remote_id(b"d1:md14:vmt_have_blocki9eee"), Some(9));
        assert_eq!(remote_id(b"d1:md14:vmt_have_blocki0eee"), None);
        assert_eq!(remote_id(b"d1:md10:vmt_urgenti7eee"), None);
        assert_eq!(remote_id(b"not bencode"), None);
    }
}
