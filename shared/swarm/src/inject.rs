//! Injection: a seeder that puts each piece into a crowd once (`EngineConfig::inject`,
//! `vmt-run seed --inject`), and the BEP 10 extension it speaks, `vmt_elsewhere`.
//!
//! In a flash crowd every client replays the same tasks and needs the same pieces at the
//! same moment, and a piece enters the crowd only through the seeder's uplink. A seeder that
//! serves whatever its unchoked peers ask spends that uplink on copies of pieces the crowd
//! already holds and on background fill nobody reads soon (issue 15: 72% of the crowd's waits
//! were for a piece no neighbour had). An injecting seeder instead:
//!
//! - **declines** a request for a piece that a sharing peer (one that advertised
//!   `vmt_elsewhere`: it uploads what it gets) holds, or that is on its way to another peer
//!   (asked by it or sent to it within the hold period, 0.3 of a choke rotation): the
//!   `vmt_elsewhere` message names the piece, and the client fetches it from a peer instead.
//!   Requests from peers that do not advertise the extension (stock clients, `--no-upload`
//!   clients) are served as always;
//! - says so in its extended handshake (`vmt_inject: 1`), so its sharing clients ask it only for
//!   demanded and planned pieces, never background fill, and are not interested in it
//!   otherwise: its upload slots go round the clients that need a new piece.
//!
//! A declined client forgets that the seeder has the piece for a retry (half the choker's
//! rotation period, [`retry`]: holders' slots move meanwhile), then may ask again; the seeder
//! serves a piece it declined that peer at least that long ago (its peers did not give it the
//! piece meanwhile: none that holds it unchoked it, or every holder left), so a decline costs
//! a read at most one retry; unless the piece is still on its way to another peer, whose copy
//! the asker then gets once it arrives there. The hold counts from the last block *sent* as
//! well as asked: a busy uplink interleaves a hundred peers' blocks, and a first copy still in
//! its queue after the hold was sent again to every peer that asked (at N=128 one piece went
//! out 45 times, each copy queued behind the others). Both periods follow the rotation period,
//! so a time-dilated crowd (`replay-client --dilation K`, rotation K times longer) keeps them
//! in proportion. The simulator's `inject` setting models the declines, not this fallback
//! (`vmt_model::swarm_sim`).
//!
//! Measured (issue 15, `datasets/results/scale/inject/`): at headless N=128 the seeder sends
//! a third of a plain seeder's bytes, and the crowd completes no faster.
//!
//! The message is a bencoded dictionary, `d5:piecei<N>ee`, under the id the receiver gave
//! `vmt_elsewhere` in its handshake's `m`. Stock clients ignore both keys, as BEP 10 asks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bencode::{BencodeValue, ByteBuf};
use serde::Deserialize;

/// Our id for it (librqbit-peer-protocol takes 1 and 3; `vmt_block_hashes` is 5).
pub(crate) const MY_ELSEWHERE_ID: u8 = 6;

/// How long a declined client treats the seeder as not having the piece, for a choker that
/// rotates every `rechoke` (5 s at the default 10 s).
pub(crate) fn retry(rechoke: Duration) -> Duration {
    rechoke / 2
}

/// How long a piece stays reserved for the peer it was last served to (3 s at the default
/// 10 s rotation): long enough for that peer's next request of the piece (requests follow a
/// delay-based window), short enough that a peer choked or gone mid-piece does not hold it
/// up.
fn hold(rechoke: Duration) -> Duration {
    rechoke.mul_f32(0.3)
}

/// What our extended handshake says about injection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OurInjection {
    /// We upload what we get, so an injecting seeder may decline us (`m.vmt_elsewhere`).
    pub shares: bool,
    /// We are an injecting seeder (`vmt_inject: 1`).
    pub injects: bool,
}

/// What the remote's extended handshake says about injection (read from its raw payload:
/// librqbit-peer-protocol's handshake type keeps only the `m` keys it knows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RemoteInjection {
    /// Its id for `vmt_elsewhere`: it takes declines, and shares what it gets.
    pub elsewhere: Option<u8>,
    /// It is an injecting seeder.
    pub injects: bool,
}

/// The remote's part, from its extended handshake's bencoded payload (after the two id bytes).
pub(crate) fn remote_injection(handshake: &[u8]) -> RemoteInjection {
    #[derive(Deserialize)]
    struct Ids {
        vmt_elsewhere: Option<u8>,
    }
    #[derive(Deserialize)]
    struct Handshake {
        m: Option<Ids>,
        vmt_inject: Option<u8>,
    }
    let Ok(h) = bencode::from_bytes::<Handshake>(handshake) else {
        return RemoteInjection::default();
    };
    RemoteInjection {
        elsewhere: h.m.and_then(|m| m.vmt_elsewhere).filter(|&id| id != 0),
        injects: h.vmt_inject == Some(1),
    }
}

/// Writes a decline of `piece` as one whole peer-wire message into `out` (32 bytes suffice)
/// for a peer whose id for the extension is `remote_id`; returns its length.
pub(crate) fn encode_elsewhere(out: &mut [u8], remote_id: u8, piece: u32) -> usize {
    crate::ext_frame::encode_small(out, remote_id, format_args!("d5:piecei{piece}ee"))
}

/// The piece a decline names; `None` for anything malformed (ignored).
pub(crate) fn decode_elsewhere(value: &BencodeValue<ByteBuf<'_>>) -> Option<u32> {
    let BencodeValue::Dict(d) = value else {
        return None;
    };
    match d.get(&ByteBuf(b"piece")) {
        Some(BencodeValue::Integer(i)) => u32::try_from(*i).ok(),
        _ => None,
    }
}

/// The seeder's side: which pieces sharing peers hold and which it is sending, shared by its
/// connections without a lock (a few atomics per piece).
pub(crate) struct Injector {
    /// Per piece: connected sharing peers that announced it.
    holders: Vec<AtomicU16>,
    /// Per piece: (connection + 1) << 32 | ms since `started` of its last request served;
    /// 0 = never served.
    sending: Vec<AtomicU64>,
    next_conn: AtomicU32,
    started: Instant,
    hold_ms: u64,
    retry: Duration,
}

impl Injector {
    /// For `pieces` pieces and a choker rotating every `rechoke`.
    pub fn new(pieces: u32, rechoke: Duration) -> Injector {
        Injector {
            holders: (0..pieces).map(|_| AtomicU16::new(0)).collect(),
            sending: (0..pieces).map(|_| AtomicU64::new(0)).collect(),
            next_conn: AtomicU32::new(0),
            started: Instant::now(),
            hold_ms: hold(rechoke).as_millis() as u64,
            retry: retry(rechoke),
        }
    }

    /// How long its peers wait before they ask again for a declined piece.
    pub fn retry(&self) -> Duration {
        self.retry
    }

    /// A number for a new connection, naming it in reservations.
    pub fn connection(&self) -> u32 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// A sharing peer announced `piece`.
    pub fn add_holder(&self, piece: u32) {
        if let Some(h) = self.holders.get(piece as usize) {
            let _ = h.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(1))
            });
        }
    }

    /// A sharing peer that had `piece` left.
    pub fn remove_holder(&self, piece: u32) {
        if let Some(h) = self.holders.get(piece as usize) {
            let _ = h.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        }
    }

    /// A block of `piece` left for connection `conn` at `now`: a reservation of `conn`'s lasts
    /// a hold period from its last block sent, not only from its last request, so a piece
    /// still queued here (a busy uplink serves many peers at once) is not sent again to the
    /// next peer that asks.
    pub fn sent(&self, piece: u32, conn: u32, now: Instant) {
        let Some(sending) = self.sending.get(piece as usize) else {
            return;
        };
        let ms = self.ms(now);
        let me = u64::from(conn) + 1;
        let _ = sending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            (v >> 32 == me).then_some(me << 32 | (ms & 0xffff_ffff))
        });
    }

    /// Whether `piece` is on its way to another connection than `conn`: reserved for it and
    /// held by no sharing peer yet. A peer asking again then waits for that copy (its
    /// recipient announces it) rather than get one more from the seeder's uplink.
    pub fn on_its_way_elsewhere(&self, piece: u32, conn: u32, now: Instant) -> bool {
        let Some((holders, sending)) = self.slots(piece) else {
            return false;
        };
        let v = sending.load(Ordering::Relaxed);
        let (owner, at) = (v >> 32, v & 0xffff_ffff);
        holders.load(Ordering::Relaxed) == 0
            && v != 0
            && owner != u64::from(conn) + 1
            && self.ms(now).saturating_sub(at) < self.hold_ms
    }

    /// `piece`'s holder count and reservation; `None` past the last piece.
    fn slots(&self, piece: u32) -> Option<(&AtomicU16, &AtomicU64)> {
        Some((
            self.holders.get(piece as usize)?,
            self.sending.get(piece as usize)?,
        ))
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Whether to serve connection `conn` a block of `piece` at `now`: nobody sharing holds
    /// it, and it is reserved for nobody else (or the reservation lapsed). If so, it is
    /// reserved for `conn` for the hold period more.
    pub fn admit(&self, piece: u32, conn: u32, now: Instant) -> bool {
        let Some((holders, sending)) = self.slots(piece) else {
            return false;
        };
        if holders.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let ms = self.ms(now);
        let me = u64::from(conn) + 1;
        let hold = self.hold_ms;
        sending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                let (owner, at) = (v >> 32, v & 0xffff_ffff);
                let free = v == 0 || owner == me || ms.saturating_sub(at) >= hold;
                free.then_some(me << 32 | (ms & 0xffff_ffff))
            })
            .is_ok()
    }
}

/// The seeder's side, per connection: the pieces it declined this peer, and when first.
#[derive(Default)]
pub(crate) struct Declines(HashMap<u32, Instant>);

impl Declines {
    /// Whether the peer asks again for a piece we first declined it at least `retry` ago (it
    /// asks again only after that): its peers did not give it the piece meanwhile, so it is
    /// served, every block of it, and a peer no holder unchokes waits one retry, not for
    /// ever. Records a first decline otherwise.
    pub fn asks_again(&mut self, piece: u32, retry: Duration, now: Instant) -> bool {
        if self.0.len() >= 4096 {
            // Old declines say nothing more (their peer asked again or got the piece).
            self.0
                .retain(|_, &mut at| now.saturating_duration_since(at) < 4 * retry);
        }
        let at = *self.0.entry(piece).or_insert(now);
        now.saturating_duration_since(at) >= retry.mul_f32(0.8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext_frame::wire_check::decoded;

    #[test]
    fn a_decline_round_trips_through_the_codec() {
        let mut buf = [0u8; 32];
        for piece in [0, 7, u32::MAX] {
            let n = encode_elsewhere(&mut buf, MY_ELSEWHERE_ID, piece);
            let got = decoded(&buf[..n], |id, v| (id, decode_elsewhere(v)));
            assert_eq!(got, (MY_ELSEWHERE_ID, Some(piece)));
        }
    }

    #[test]
    fn the_remote_role_is_read_from_the_raw_handshake() {
        let r = remote_injection(b"d1:md11:ut_metadatai3e13:vmt_elsewherei9ee1:pi5ee");
        assert_eq!(
            r,
            RemoteInjection {
                elsewhere: Some(9),
                injects: false
            }
        );
        let r = remote_injection(b"d1:md11:ut_metadatai3ee1:v3:vmt10:vmt_injecti1ee");
        assert_eq!(
            r,
            RemoteInjection {
                elsewhere: None,
                injects: true
            }
        );
        assert_eq!(
            remote_injection(b"d1:md13:vmt_elsewherei0eee"),
            RemoteInjection::default(),
            "0 disables"
        );
        assert_eq!(remote_injection(b"garbage"), RemoteInjection::default());
    }

    /// A piece declined once is served when the peer asks again a retry later, every block of
    /// it (a fault: only the first block was), and not before.
    #[test]
    fn a_second_ask_after_a_retry_is_served_whole() {
        let mut d = Declines::default();
        let (t0, retry) = (Instant::now(), Duration::from_secs(5));
        assert!(!d.asks_again(7, retry, t0), "first ask: declined");
        assert!(
            !d.asks_again(7, retry, t0 + Duration::from_secs(1)),
            "its other blocks"
        );
        assert!(
            !d.asks_again(8, retry, t0 + retry),
            "another piece: a first decline"
        );
        for block in 0..16 {
            let at = t0 + retry + Duration::from_millis(block);
            assert!(
                d.asks_again(7, retry, at),
                "block {block} of the second ask"
            );
        }
    }

    /// An injector for 4 pieces rotating every 10 s (a hold of 3 s), the time it starts from,
    /// and two of its connections.
    fn two_connections() -> (Injector, Instant, u32, u32) {
        let inj = Injector::new(4, Duration::from_secs(10));
        let (a, b) = (inj.connection(), inj.connection());
        (inj, Instant::now(), a, b)
    }

    /// A piece goes to one connection at a time, to nobody once a sharer holds it, and to
    /// another connection once the first stopped asking for the hold period (3 s).
    #[test]
    fn a_piece_is_admitted_once_until_its_reservation_lapses() {
        let (inj, t0, a, b) = two_connections();
        assert_ne!(a, b);
        assert!(inj.admit(1, a, t0));
        assert!(inj.admit(1, a, t0 + Duration::from_secs(2)), "its own");
        assert!(
            !inj.admit(1, b, t0 + Duration::from_secs(4)),
            "refreshed at 2 s"
        );
        assert!(inj.admit(1, b, t0 + Duration::from_secs(6)), "lapsed");
        assert!(inj.admit(2, a, t0), "another piece");
        inj.add_holder(3);
        assert!(!inj.admit(3, a, t0), "a sharer holds it");
        inj.remove_holder(3);
        assert!(inj.admit(3, a, t0), "the holder left");
        assert!(!inj.admit(9, a, t0), "no such piece");
    }

    /// A reservation lasts a hold period from the last block sent to its owner: a piece
    /// queued behind a busy uplink is not admitted to a second peer (a fault: every peer
    /// that asked after the hold got its own copy, each queued behind the others).
    #[test]
    fn a_reservation_lasts_while_its_blocks_are_sent() {
        let (inj, t0, a, b) = two_connections();
        let s = Duration::from_secs;
        assert!(inj.admit(1, a, t0));
        inj.sent(1, b, t0 + s(2));
        assert!(
            inj.admit(1, b, t0 + s(4)),
            "sent by a non-owner: lapsed 3 s after a's request"
        );
        inj.sent(1, b, t0 + s(5));
        assert!(!inj.admit(1, a, t0 + s(7)), "b's own copy left at 5 s");
        assert!(
            inj.admit(1, a, t0 + s(8)),
            "lapsed 3 s after b's last block"
        );
    }

    /// While a piece is on its way to one peer and nobody holds it, another peer's second
    /// ask is not a reason to send it again; once a sharer holds it, or the reservation
    /// lapsed, it is.
    #[test]
    fn a_piece_on_its_way_to_another_peer_is_not_sent_again() {
        let (inj, t0, a, b) = two_connections();
        let s = Duration::from_secs;
        assert!(!inj.on_its_way_elsewhere(1, b, t0), "never sent");
        assert!(inj.admit(1, a, t0));
        assert!(inj.on_its_way_elsewhere(1, b, t0 + s(1)));
        assert!(!inj.on_its_way_elsewhere(1, a, t0 + s(1)), "its own");
        inj.sent(1, a, t0 + s(2));
        assert!(
            inj.on_its_way_elsewhere(1, b, t0 + s(4)),
            "still sending at 2 s"
        );
        assert!(!inj.on_its_way_elsewhere(1, b, t0 + s(5)), "lapsed");
        inj.add_holder(1);
        assert!(
            !inj.on_its_way_elsewhere(1, b, t0 + s(1)),
            "held: a second ask is served"
        );
        assert!(!inj.on_its_way_elsewhere(9, b, t0), "no such piece");
    }
}
