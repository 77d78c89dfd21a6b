//! The framing of vmt's own small BEP 10 messages (`vmt_urgent`, `vmt_have_block`,
//! `vmt_busy`, `vmt_elsewhere`, `vmt_block_hashes`): apart from [`crate::extension`], which
//! reads every extension's handshake key and so imports their modules.

/// The BEP 10 message id.
pub(crate) const MSGID_EXTENDED: u8 = 20;

/// Writes one whole peer-wire message of one of vmt's small extensions (length, id 20, the
/// remote's id for the extension, the bencoded `payload`) into `out`, formatted in place: they
/// go out per block, so nothing is allocated. Returns its length; panics if `out` is too short.
pub(crate) fn encode_small(
    out: &mut [u8],
    remote_id: u8,
    payload: std::fmt::Arguments<'_>,
) -> usize {
    use std::io::Write;
    let mut w = &mut out[6..];
    let room = w.len();
    w.write_fmt(payload).expect("room for the message");
    let n = 2 + room - w.len();
    out[..4].copy_from_slice(&(n as u32).to_be_bytes());
    out[4] = MSGID_EXTENDED;
    out[5] = remote_id;
    4 + n
}

/// Test helpers: the small messages go through librqbit's own decoder, as a peer's reader
/// takes them.
#[cfg(test)]
pub(crate) mod wire_check {
    use bencode::{BencodeValue, ByteBuf};
    use peer_binary_protocol::extended::ExtendedMessage;
    use peer_binary_protocol::Message;

    /// Decodes `message`, which must be exactly one whole extended message, and hands its
    /// extension id and bencoded payload to `check`.
    pub fn decoded<R>(
        message: &[u8],
        check: impl FnOnce(u8, &BencodeValue<ByteBuf<'_>>) -> R,
    ) -> R {
        let (msg, len) = Message::deserialize(message, &[]).expect("a whole message");
        assert_eq!(len, message.len(), "one message, nothing after it");
        let Message::Extended(ExtendedMessage::Dyn(id, v)) = msg else {
            panic!("not an extended message: {msg:?}");
        };
        check(id, &v)
    }

    /// Frames a raw bencoded `payload` (well formed or not) as extension message `id`.
    pub fn framed(id: u8, payload: &[u8]) -> Vec<u8> {
        let mut buf = (payload.len() as u32 + 2).to_be_bytes().to_vec();
        buf.extend_from_slice(&[super::MSGID_EXTENDED, id]);
        buf.extend_from_slice(payload);
        buf
    }
}
