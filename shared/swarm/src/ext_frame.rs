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
