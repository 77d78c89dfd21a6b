//! `vmt_block_hashes`: a BEP 10 extension that carries the block-hash table between vmt peers,
//! so a client that started from a magnet link gets per-block verification too.
//!
//! The table lies outside the info dictionary (see [`crate::Torrent`]), so ut_metadata (BEP 9)
//! does not carry it; the info dictionary pins its root (SHA-256), so a table from any peer is
//! checked before it is used ([`crate::BlockHashes::pinned`]): a peer cannot forge it.
//!
//! The exchange copies ut_metadata's: 16 KiB pieces, `msg_type` 0 (request), 1 (data), 2
//! (reject), `piece`, `total_size`. The one difference: a data message carries its bytes in a
//! `data` key of the dictionary rather than after it, so librqbit-peer-protocol decodes every
//! message of an extension it does not know (`ExtendedMessage::Dyn`) without help. Stock
//! clients ignore the key in our handshake's `m`, as BEP 10 asks.

use bencode::{BencodeValue, ByteBuf};
use serde::Deserialize;

use crate::ext_frame::MSGID_EXTENDED;

/// Name of the extension in the handshake's `m`.
pub const TABLE_EXTENSION: &str = "vmt_block_hashes";

/// Our id for it: the id peers send its messages to us with (librqbit-peer-protocol takes 1 and
/// 3 for ut_pex and ut_metadata).
pub(crate) const MY_TABLE_ID: u8 = 5;

/// Bytes of the table per message: ut_metadata's piece size.
pub(crate) const TABLE_PIECE: usize = 16 * 1024;

/// One message of the exchange, as decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TableMsg<'a> {
    Request(u32),
    Data {
        piece: u32,
        total_size: u64,
        data: &'a [u8],
    },
    Reject(u32),
}

/// Decodes a message librqbit-peer-protocol handed over as `Dyn(MY_TABLE_ID, value)`; `None`
/// for anything malformed (ignored, as unknown extension messages are).
pub(crate) fn decode<'a>(value: &'a BencodeValue<ByteBuf<'a>>) -> Option<TableMsg<'a>> {
    let BencodeValue::Dict(d) = value else {
        return None;
    };
    let int = |k: &[u8]| match d.get(&ByteBuf(k)) {
        Some(BencodeValue::Integer(i)) => u64::try_from(*i).ok(),
        _ => None,
    };
    let piece = u32::try_from(int(b"piece")?).ok()?;
    match int(b"msg_type")? {
        0 => Some(TableMsg::Request(piece)),
        1 => match d.get(&ByteBuf(b"data")) {
            Some(BencodeValue::Bytes(b)) => Some(TableMsg::Data {
                piece,
                total_size: int(b"total_size")?,
                data: b.0,
            }),
            _ => None,
        },
        2 => Some(TableMsg::Reject(piece)),
        _ => None,
    }
}

/// Writes one whole peer-wire message (length, id 20, the remote's extension id, payload) into
/// `out`; returns its length. `out` must have room for the payload plus 6 bytes.
fn frame(out: &mut [u8], ext_id: u8, payload: impl FnOnce(&mut Vec<u8>)) -> usize {
    let mut body = Vec::with_capacity(64);
    body.push(MSGID_EXTENDED);
    body.push(ext_id);
    payload(&mut body);
    out[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
    out[4..4 + body.len()].copy_from_slice(&body);
    4 + body.len()
}

/// A request for piece `piece` of the table, to a peer whose id for the extension is
/// `remote_id`.
pub(crate) fn encode_request(out: &mut [u8], remote_id: u8, piece: u32) -> usize {
    frame(out, remote_id, |b| {
        b.extend_from_slice(format!("d8:msg_typei0e5:piecei{piece}ee").as_bytes())
    })
}

/// Our answer to a request for `piece` of `table`: its 16 KiB, or a reject when we have no
/// table or no such piece. Keys in bencode's sorted order.
pub(crate) fn encode_reply(
    out: &mut [u8],
    remote_id: u8,
    table: Option<&[u8]>,
    piece: u32,
) -> usize {
    let start = piece as usize * TABLE_PIECE;
    match table.filter(|t| start < t.len()) {
        Some(t) => {
            let data = &t[start..(start + TABLE_PIECE).min(t.len())];
            frame(out, remote_id, |b| {
                b.extend_from_slice(format!("d4:data{}:", data.len()).as_bytes());
                b.extend_from_slice(data);
                b.extend_from_slice(
                    format!("8:msg_typei1e5:piecei{piece}e10:total_sizei{}ee", t.len()).as_bytes(),
                );
            })
        }
        None => frame(out, remote_id, |b| {
            b.extend_from_slice(format!("d8:msg_typei2e5:piecei{piece}ee").as_bytes())
        }),
    }
}

/// The remote's id for the extension, from its extended handshake's bencoded payload (after
/// the two id bytes); `None` when it does not speak it. librqbit-peer-protocol's handshake type
/// keeps only the `m` keys it knows, so this key is read here.
pub(crate) fn remote_id(handshake: &[u8]) -> Option<u8> {
    #[derive(Deserialize)]
    struct Ids {
        vmt_block_hashes: Option<u8>,
    }
    #[derive(Deserialize)]
    struct Handshake {
        m: Option<Ids>,
    }
    bencode::from_bytes::<Handshake>(handshake)
        .ok()?
        .m?
        .vmt_block_hashes
        .filter(|&id| id != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `bytes` as librqbit-peer-protocol does for us (our id is `MY_TABLE_ID`).
    fn decoded(bytes: &[u8], f: impl FnOnce(Option<TableMsg<'_>>)) {
        crate::ext_frame::wire_check::decoded(bytes, |id, v| {
            assert_eq!(id, MY_TABLE_ID);
            f(decode(v))
        })
    }

    #[test]
    fn requests_replies_and_rejects_round_trip_through_the_codec() {
        let table: Vec<u8> = (0..TABLE_PIECE * 2 + 100)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut buf = vec![0u8; TABLE_PIECE + 256];
        let n = encode_request(&mut buf, MY_TABLE_ID, 7);
        decoded(&buf[..n], |m| assert_eq!(m, Some(TableMsg::Request(7))));
        for (piece, want) in [(0, &table[..TABLE_PIECE]), (2, &table[2 * TABLE_PIECE..])] {
            let n = encode_reply(&mut buf, MY_TABLE_ID, Some(&table), piece);
            assert!(n <= peer_binary_protocol::MAX_MSG_LEN, "{n}");
            decoded(&buf[..n], |m| {
                assert_eq!(
                    m,
                    Some(TableMsg::Data {
                        piece,
                        total_size: table.len() as u64,
                        data: want
                    })
                )
            });
        }
        let n = encode_reply(&mut buf, MY_TABLE_ID, Some(&table), 3);
        decoded(&buf[..n], |m| assert_eq!(m, Some(TableMsg::Reject(3))));
        let n = encode_reply(&mut buf, MY_TABLE_ID, None, 0);
        decoded(&buf[..n], |m| assert_eq!(m, Some(TableMsg::Reject(0))));
        // Malformed: no piece, an unknown type.
        let n = frame(&mut buf, MY_TABLE_ID, |b| {
            b.extend_from_slice(b"d8:msg_typei0ee")
        });
        decoded(&buf[..n], |m| assert_eq!(m, None));
        let n = frame(&mut buf, MY_TABLE_ID, |b| {
            b.extend_from_slice(b"d8:msg_typei9e5:piecei0ee")
        });
        decoded(&buf[..n], |m| assert_eq!(m, None));
    }

    #[test]
    fn the_remote_id_is_read_from_the_raw_handshake() {
        assert_eq!(
            remote_id(b"d1:md11:ut_metadatai3e16:vmt_block_hashesi9ee1:pi5ee"),
            Some(9)
        );
        assert_eq!(remote_id(b"d1:md11:ut_metadatai3eee"), None);
        assert_eq!(
            remote_id(b"d1:md16:vmt_block_hashesi0eee"),
            None,
            "0 disables"
        );
        assert_eq!(remote_id(b"d1:pi5ee"), None);
        assert_eq!(remote_id(b"garbage"), None);
    }
}
