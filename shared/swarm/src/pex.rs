//! Peer exchange (BEP 11, `ut_pex`): telling connected peers whom else we are connected to, and
//! dialing the peers they tell us of.
//!
//! Sending follows the conventions µTorrent, libtorrent and Transmission agreed on: at most
//! [`MAX_PEX_PEERS`] added and as many dropped peers per message, at most one message per
//! [`PEX_INTERVAL`] to each peer. The first one goes at the engine's first PEX tick after the
//! peer's extended handshake (libtorrent likewise sends its first at once): a newcomer learns
//! the swarm in about a second, not a minute. Only established connections are listed, each
//! under the address it listens on: the dialed address, or the remote's address with the `p`
//! of its extended handshake; an incoming peer that sent no `p` cannot be dialed and is left out.
//!
//! Receiving is bounded: each message yields at most [`MAX_PEX_PEERS`] addresses, and the
//! engine dials at most [`MAX_PEX_DIALS`] PEX-learned addresses in its life (each keeps a
//! redialing task), deduplicated. A seed skips peers flagged as seeds.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bencode::{ByteBuf, ByteBufOwned};
use peer_binary_protocol::extended::ut_pex::UtPex;
use tokio::sync::mpsc;

use crate::state::lock;

/// Most added (and most dropped) peers in one message.
pub const MAX_PEX_PEERS: usize = 50;
/// Least time between two messages to one peer.
pub const PEX_INTERVAL: Duration = Duration::from_secs(60);
/// Most addresses learned through PEX the engine ever dials: far more than one appliance swarm
/// has, and a bound on the redialing tasks a lying peer can make us start.
pub const MAX_PEX_DIALS: usize = 200;
/// BEP 11 flag: the peer is a seed (or upload-only).
const FLAG_SEED: u8 = 0x02;

/// What we told one peer, and the message waiting for its writer.
#[derive(Default)]
pub(crate) struct PexState {
    /// Addresses we listed as added and not yet as dropped.
    told: HashSet<SocketAddr>,
    last_sent: Option<Instant>,
    pending: Option<UtPex<ByteBufOwned>>,
    /// The fingerprint of the peer list at which `told` was found equal to it: while the
    /// list keeps that fingerprint there is nothing to tell, and no need to compare again.
    settled: Option<u64>,
}

impl PexState {
    /// Whether a round at `now` with peer list fingerprint `list` has nothing to do here: a
    /// message went less than `interval` ago, or the peer knows that list already. Checked
    /// before the list is built: every engine's round runs each second over every peer, and
    /// comparing a peer's list with what it was told costs the square of the crowd (about 9%
    /// of a crowd of 128 engines' CPU when it ran every round).
    pub fn idle(&self, list: u64, now: Instant, interval: Duration) -> bool {
        self.settled == Some(list)
            || self
                .last_sent
                .is_some_and(|t| now.duration_since(t) < interval)
    }

    /// If a message is due at `now` (none sent for `interval`) and `live` (the connectable
    /// peers but this one, whose list has fingerprint `list`, see [`fingerprint`]) differs
    /// from what the peer knows, prepares it and returns true.
    pub fn prepare(
        &mut self,
        live: &[SocketAddr],
        list: u64,
        now: Instant,
        interval: Duration,
    ) -> bool {
        if self.idle(list, now, interval) {
            return false;
        }
        let added: Vec<SocketAddr> = live
            .iter()
            .filter(|a| !self.told.contains(a))
            .take(MAX_PEX_PEERS)
            .copied()
            .collect();
        let dropped: Vec<SocketAddr> = self
            .told
            .iter()
            .filter(|a| !live.contains(a))
            .take(MAX_PEX_PEERS)
            .copied()
            .collect();
        if added.is_empty() && dropped.is_empty() {
            self.settled = Some(list);
            return false;
        }
        self.settled = None;
        for a in &dropped {
            self.told.remove(a);
        }
        self.told.extend(added.iter().copied());
        self.pending = Some(UtPex::from_addrs(added.into_iter(), dropped.into_iter()));
        self.last_sent = Some(now);
        true
    }

    /// The prepared message, for the writer.
    pub fn take(&mut self) -> Option<UtPex<ByteBufOwned>> {
        self.pending.take()
    }
}

/// A fingerprint of the engine's peer list (connection numbers and listening addresses, in
/// table order): equal lists give equal fingerprints, so a peer's view is compared with it
/// only when it changed (see [`PexState::idle`]).
pub(crate) fn fingerprint(list: &[(u64, SocketAddr)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    list.hash(&mut h);
    h.finish()
}

/// The dialable addresses of a received message: at most [`MAX_PEX_PEERS`]; none with port
/// 0 or an unspecified address; no seeds if `we_seed`.
pub(crate) fn learned<'a>(
    msg: &'a UtPex<ByteBuf<'a>>,
    we_seed: bool,
) -> impl Iterator<Item = SocketAddr> + 'a {
    msg.added_peers()
        .take(MAX_PEX_PEERS)
        .filter(move |p| !(we_seed && p.flags & FLAG_SEED != 0))
        .map(|p| p.addr)
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast())
}

/// Hands PEX-learned addresses to the engine's dialers, once each and at most
/// [`MAX_PEX_DIALS`] in all.
pub(crate) struct PexFeed {
    dials: mpsc::UnboundedSender<SocketAddr>,
    listen: Option<SocketAddr>,
    learned: Mutex<HashSet<SocketAddr>>,
}

impl PexFeed {
    pub fn new(dials: mpsc::UnboundedSender<SocketAddr>, listen: Option<SocketAddr>) -> PexFeed {
        PexFeed {
            dials,
            listen,
            learned: Mutex::new(HashSet::new()),
        }
    }

    /// Dials `addr` unless it is ours, known already, or the bound is reached.
    pub fn offer(&self, addr: SocketAddr) {
        if Some(addr) == self.listen {
            return;
        }
        let mut l = lock(&self.learned);
        if l.len() < MAX_PEX_DIALS && l.insert(addr) {
            tracing::debug!(%addr, "learned a peer through PEX");
            let _ = self.dials.send(addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_binary_protocol::extended::{ExtendedMessage, PeerExtendedMessageIds};
    use peer_binary_protocol::Message;

    fn a(k: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, (k >> 8) as u8, k as u8], 6881))
    }

    /// The fingerprint of `live` as the engine's list (connection numbers by position).
    fn fp(live: &[SocketAddr]) -> u64 {
        let list: Vec<(u64, SocketAddr)> = (0..).zip(live.iter().copied()).collect();
        fingerprint(&list)
    }

    /// Once a peer knows the whole list, the same fingerprint is not compared again (a
    /// different list under it is not even looked at), and a changed one goes at once.
    #[test]
    fn a_settled_peer_is_not_compared_again_until_the_list_changes() {
        let t0 = Instant::now();
        let mut s = PexState::default();
        let live: Vec<SocketAddr> = (0..10).map(a).collect();
        assert!(s.prepare(&live, fp(&live), t0, PEX_INTERVAL));
        let t1 = t0 + PEX_INTERVAL;
        assert!(
            !s.prepare(&live, fp(&live), t1, PEX_INTERVAL),
            "nothing new"
        );
        assert!(s.idle(fp(&live), t1, PEX_INTERVAL));
        assert!(
            !s.prepare(&live[..5], fp(&live), t1, PEX_INTERVAL),
            "settled: not looked at"
        );
        assert!(!s.idle(fp(&live[..5]), t1, PEX_INTERVAL));
        assert!(
            s.prepare(&live[..5], fp(&live[..5]), t1, PEX_INTERVAL),
            "changed: at once"
        );
        let (added, dropped) = wire(&s.take().unwrap(), &mut Vec::new());
        assert_eq!((added.len(), dropped.len()), (0, 5));
    }

    /// Encodes and decodes `m` as the remote would see it.
    fn wire(m: &UtPex<ByteBufOwned>, buf: &mut Vec<u8>) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        buf.resize(8192, 0);
        let msg = Message::Extended(ExtendedMessage::UtPex(m.as_borrowed()));
        let n = msg.serialize(buf, &PeerExtendedMessageIds::my).unwrap();
        let (msg, _) = Message::deserialize(&buf[..n], &[]).unwrap();
        let Message::Extended(ExtendedMessage::UtPex(p)) = msg else {
            panic!("not ut_pex");
        };
        (
            p.added_peers().map(|p| p.addr).collect(),
            p.dropped_peers().map(|p| p.addr).collect(),
        )
    }

    #[test]
    fn messages_are_bounded_paced_and_carry_only_changes() {
        let t0 = Instant::now();
        let mut s = PexState::default();
        let mut buf = Vec::new();
        let live: Vec<SocketAddr> = (0..120).map(a).collect();
        assert!(
            s.prepare(&live, fp(&live), t0, PEX_INTERVAL),
            "the first goes at once"
        );
        let (added, dropped) = wire(&s.take().unwrap(), &mut buf);
        assert_eq!((added.len(), dropped.len()), (MAX_PEX_PEERS, 0));
        assert!(
            !s.prepare(&live, fp(&live), t0 + Duration::from_secs(59), PEX_INTERVAL),
            "one a minute"
        );
        let t1 = t0 + PEX_INTERVAL;
        assert!(s.prepare(&live, fp(&live), t1, PEX_INTERVAL));
        let (added2, _) = wire(&s.take().unwrap(), &mut buf);
        assert_eq!(added2.len(), MAX_PEX_PEERS);
        assert!(added2.iter().all(|x| !added.contains(x)), "nothing twice");
        // 70 peers went: dropped only among those told, 50 at most.
        let live: Vec<SocketAddr> = (70..120).map(a).collect();
        let t2 = t1 + PEX_INTERVAL;
        assert!(s.prepare(&live, fp(&live), t2, PEX_INTERVAL));
        let (added3, dropped3) = wire(&s.take().unwrap(), &mut buf);
        assert_eq!(dropped3.len(), MAX_PEX_PEERS);
        assert!(dropped3
            .iter()
            .all(|x| added.contains(x) || added2.contains(x)));
        assert_eq!(added3.len(), 20, "the last 20 of 120 were never told");
        // Nothing changed: no message, and the next change may go at once.
        let mut s = PexState::default();
        assert!(s.prepare(&[a(1)], fp(&[a(1)]), t0, PEX_INTERVAL));
        assert!(!s.prepare(&[a(1)], fp(&[a(1)]), t1, PEX_INTERVAL));
        assert!(s.prepare(&[], fp(&[]), t1, PEX_INTERVAL));
        let (added, dropped) = wire(&s.take().unwrap(), &mut buf);
        assert_eq!((added, dropped), (vec![], vec![a(1)]));
    }

    #[test]
    fn received_addresses_are_filtered_bounded_and_fed_once() {
        let mut s = PexState::default();
        let mut live: Vec<SocketAddr> = (1..80).map(a).collect();
        live.push(SocketAddr::from(([0, 0, 0, 0], 6881)));
        live.push(SocketAddr::from(([10, 9, 9, 9], 0)));
        s.prepare(&live[..], fp(&live), Instant::now(), PEX_INTERVAL);
        let m = s.take().unwrap();
        let got: Vec<SocketAddr> = learned(&m.as_borrowed(), false).collect();
        assert_eq!(got.len(), MAX_PEX_PEERS);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let feed = PexFeed::new(tx, Some(a(1)));
        for _ in 0..2 {
            for &x in &got {
                feed.offer(x);
            }
        }
        let mut fed = Vec::new();
        while let Ok(x) = rx.try_recv() {
            fed.push(x);
        }
        assert_eq!(fed.len(), MAX_PEX_PEERS - 1, "each once, never ourselves");
        assert!(!fed.contains(&a(1)));
        for k in 1000..(1000 + 2 * MAX_PEX_DIALS as u16) {
            feed.offer(a(k));
        }
        let mut more = 0;
        while rx.try_recv().is_ok() {
            more += 1;
        }
        assert_eq!(fed.len() + more, MAX_PEX_DIALS);
        let bad = UtPex::from_addrs(
            [
                SocketAddr::from(([0, 0, 0, 0], 1)),
                SocketAddr::from(([10, 0, 0, 1], 0)),
            ]
            .into_iter(),
            std::iter::empty(),
        );
        assert_eq!(learned(&bad.as_borrowed(), false).count(), 0);
    }
}
