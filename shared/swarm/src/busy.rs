//! A holder too busy for one more urgent request says so (`vmt_busy`, a BEP 10 extension of
//! vmt's own).
//!
//! In a flash crowd every client of a task reads the same blocks at once, and the few peers
//! that hold one get an urgent request (see [`crate::urgent`]) from each: traced at headless
//! N=128 (issue 15, stop 31), a waited-for block spent 59% of its time queued at its holder,
//! behind a median of 11 other urgent requests (p90 128), while the block had already reached
//! a median of 6 other clients, which serve it too (see [`crate::have_block`]). The asker
//! cannot know how long a holder's queue is, and once queued there it stays.
//!
//! So a client that serves urgent requests and already has [`BUSY_BACKLOG`] of them queued
//! over all its connections (asked by peers it chokes or not: they all go before its other
//! uploads, so they are what a new one waits behind) answers one more from a peer it chokes
//! with `vmt_busy` instead of queuing it, naming the request and how long its backlog takes
//! to drain at its upload rate. The asker drops that request, asks nothing more of the peer
//! urgently until then, and its picker gives the piece to another connection, whose peer holds
//! the piece or the block: a hot block's askers spread over its holders as the holders grow. Requests already queued stay queued. An
//! injecting seeder never answers busy (it declines instead, see [`crate::inject`]), and
//! nor does anyone to a peer that does not list `vmt_busy` in its handshake's `m`.
//!
//! Measured (stop 32, traced like the above): the queue ahead at a holder fell to p50 6, p90
//! 15, the time there from 59% to 29% of the served time, and mean completion by 4%; the
//! time moved into asking again and the way over the links, which bulk transfers share.
//!
//! The message is a bencoded dictionary, `d5:begini<B>e5:indexi<I>e6:lengthi<L>e5:retryi<MS>ee`,
//! under the id the receiver gave `vmt_busy`.

use std::time::Duration;

use bencode::{BencodeValue, ByteBuf};
use peer_binary_protocol::Request;
use serde::Deserialize;

/// Our id for it (librqbit-peer-protocol takes 1 and 3, `vmt_block_hashes` 5,
/// `vmt_elsewhere` 6, `vmt_urgent` 7, `vmt_have_block` 8).
pub(crate) const MY_BUSY_ID: u8 = 9;

/// Urgent uploads queued over all connections at which one more is answered busy, by default
/// (`EngineConfig::busy_backlog`): half a piece's worth of 16 KiB blocks, so a fresh block's
/// holder serves one reader at a time at its whole upload rate, and that reader becomes a
/// holder sooner than when four share it. At headless N=128, 16, 32 and 64 gave 40.2-40.6,
/// 39.8-40.8 and 40.2 s, within a run's noise of each other and all below main's 41.5-42.1 s
/// (`datasets/results/scale/rebuilt/stop32/`); the simulator prefers 8 (−1.7 s of 36 at N=128),
/// and 8 with urgent uploads first (see [`crate::urgent`]) took the unsaturated K=40 crowd
/// from 37.0-38.3 s to 36.45 and 35.19 s (`datasets/results/scale/stop37/`).
pub const BUSY_BACKLOG: usize = 8;

/// The retry a holder without an upload limit names (it cannot tell its drain time).
const UNLIMITED_RETRY: Duration = Duration::from_millis(50);

/// Bounds of the retry a holder names.
const MIN_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// How long a holder with `backlog` urgent blocks of `block_len` bytes queued takes to send
/// them at `up_rate` bytes per second.
pub(crate) fn retry(backlog: usize, block_len: u32, up_rate: Option<u64>) -> Duration {
    match up_rate {
        Some(rate) => Duration::from_secs_f64(backlog as f64 * block_len as f64 / rate as f64)
            .clamp(MIN_RETRY, MAX_RETRY),
        None => UNLIMITED_RETRY,
    }
}

/// The remote's id for `vmt_busy`, from its extended handshake's bencoded payload (after the
/// two id bytes); `None` if it does not take busy answers.
pub(crate) fn remote_id(handshake: &[u8]) -> Option<u8> {
    #[derive(Deserialize)]
    struct Ids {
        vmt_busy: Option<u8>,
    }
    #[derive(Deserialize)]
    struct Handshake {
        m: Option<Ids>,
    }
    let h = bencode::from_bytes::<Handshake>(handshake).ok()?;
    h.m.and_then(|m| m.vmt_busy).filter(|&id| id != 0)
}

/// Writes a busy answer to `r` with `retry` as one whole peer-wire message into `out` (96
/// bytes suffice) for a peer whose id for the extension is `remote_id`; returns its length.
pub(crate) fn encode(out: &mut [u8], remote_id: u8, r: &Request, retry: Duration) -> usize {
    let ms = u32::try_from(retry.as_millis()).unwrap_or(u32::MAX);
    crate::ext_frame::encode_small(
        out,
        remote_id,
        format_args!(
            "d5:begini{}e5:indexi{}e6:lengthi{}e5:retryi{}ee",
            r.begin, r.index, r.length, ms
        ),
    )
}

/// The request a busy answer names and its retry; `None` for anything malformed (ignored).
pub(crate) fn decode(value: &BencodeValue<ByteBuf<'_>>) -> Option<(Request, Duration)> {
    let BencodeValue::Dict(d) = value else {
        return None;
    };
    let field = |k: &[u8]| match d.get(&ByteBuf(k)) {
        Some(BencodeValue::Integer(i)) => u32::try_from(*i).ok(),
        _ => None,
    };
    let r = Request::new(field(b"index")?, field(b"begin")?, field(b"length")?);
    let retry = Duration::from_millis(field(b"retry")?.into()).min(MAX_RETRY);
    Some((r, retry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext_frame::wire_check::decoded;

    #[test]
    fn a_busy_answer_round_trips_through_the_wire_decoder() {
        let r = Request::new(u32::MAX, 1 << 20, 16384);
        let mut buf = [0u8; 96];
        let n = encode(&mut buf, MY_BUSY_ID, &r, Duration::from_millis(1234));
        let (id, (got, retry)) = decoded(&buf[..n], |id, v| (id, decode(v).expect("decodes")));
        assert_eq!(id, MY_BUSY_ID);
        assert_eq!(
            (got.index, got.begin, got.length),
            (r.index, r.begin, r.length)
        );
        assert_eq!(retry, Duration::from_millis(1234));
    }

    #[test]
    fn the_retry_is_the_backlog_at_the_upload_rate_within_bounds() {
        // 16 blocks of 16 KiB at 1.25 MB/s: 210 ms.
        let r = retry(16, 16384, Some(1_250_000));
        assert!((209..=210).contains(&r.as_millis()), "{r:?}");
        assert_eq!(retry(1, 16384, Some(1 << 40)), MIN_RETRY);
        assert_eq!(retry(10_000, 16384, Some(1000)), MAX_RETRY);
        assert_eq!(retry(16, 16384, None), UNLIMITED_RETRY);
    }

    #[test]
    fn the_remote_id_comes_from_m_and_zero_disables_it() {
        assert_eq!(remote_id(b"d1:md8:vmt_busyi9eee"), Some(9));
        assert_eq!(remote_id(b"d1:md8:vmt_busyi0eee"), None);
        assert_eq!(remote_id(b"d1:md10:vmt_urgenti7eee"), None);
    }
}
