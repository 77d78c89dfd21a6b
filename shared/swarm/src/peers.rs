//! The connected peers: registration, bans, choking, and messages to all of them.
//!
//! [`PeerRegistry`] owns the table of live connections. Each connection keeps a [`PeerLink`]
//! that the registry can reach: its outbox and wake-ups, and the choke state the choker sets.
//! The registry knows nothing of how a connection downloads; connections know the registry only
//! through its methods.
//!
//! # Slots and bans
//! A table slot costs about 1 MiB, so slots are guarded against hosts that take them and give
//! nothing back:
//! - one IP address holds at most `max_per_ip` incoming connections;
//! - when the table (or a host's share) is full and a newcomer waits, a peer that gives nothing
//!   ([`PeerLink::gives_nothing`]: past its grace period, not interested in us, and not feeding
//!   us) is evicted to make room, the longest idle first; a peer that trades is never evicted.
//!
//! Strikes (corrupt blocks or pieces) are counted per IP address and outlive connections: a
//! corrupting peer can change its peer id and port, not its address. At [`MAX_STRIKES`] the
//! address is banned: its live connections are closed and later ones refused at accept. Peers
//! behind one address (a NAT, one host) share its strikes, as in libtorrent.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use librqbit_core::hash_id::Id20;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::extension::RemoteExtensions;
use crate::pex::PexState;
use crate::state::lock;
use crate::stats::{DialState, DialStatus, PeerCounters, PeerStats};
use crate::wire::{Out, Outbox};

/// What the registry, the choker and a connection's reader and writer share.
pub(crate) struct PeerLink {
    outbox: Mutex<Outbox>,
    pub wake_writer: Notify,
    /// Engine events the reader reacts to: a piece verified, a demand, a new plan.
    pub wake_reader: Notify,
    pub am_choking: AtomicBool,
    pub remote_interested: AtomicBool,
    /// We want pieces it has and it lets us ask (not choking us): it feeds us, or can.
    pub fed_by: AtomicBool,
    /// Milliseconds since the registry started of the last block it sent us.
    last_block_ms: AtomicU64,
    /// Milliseconds since the registry started of the handshake.
    connected_ms: u64,
    /// Milliseconds since the registry started of the last choke or unchoke: rotation order.
    choke_changed_ms: AtomicU64,
    pub close: CancellationToken,
    pub counters: Arc<PeerCounters>,
    /// What its extended handshake told us.
    pub ext: RemoteExtensions,
    /// What peer exchange told it, and the message waiting for the writer.
    pub pex: Mutex<PexState>,
}

/// Corrupt blocks or pieces tolerated from one address before it is banned.
pub const MAX_STRIKES: u32 = 2;

/// A peer gets this long after its handshake to show interest or start feeding us before it
/// can be evicted: real clients send Interested right after the bitfield.
const EVICT_GRACE_MS: u64 = 5_000;

impl PeerLink {
    /// `backlog` counts the urgent uploads queued over all of the engine's connections.
    pub fn new(
        close: CancellationToken,
        counters: Arc<PeerCounters>,
        now_ms: u64,
        backlog: Arc<AtomicUsize>,
    ) -> PeerLink {
        PeerLink {
            outbox: Mutex::new(Outbox::new(backlog)),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
            am_choking: AtomicBool::new(true),
            remote_interested: AtomicBool::new(false),
            fed_by: AtomicBool::new(false),
            last_block_ms: AtomicU64::new(now_ms),
            connected_ms: now_ms,
            choke_changed_ms: AtomicU64::new(now_ms),
            close,
            counters,
            ext: RemoteExtensions::default(),
            pex: Mutex::new(PexState::default()),
        }
    }

    /// A block arrived from it at `now_ms`.
    pub fn block_received(&self, now_ms: u64) {
        self.last_block_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Whether it may be evicted for a newcomer: past its grace period, it neither wants
    /// anything from us nor feeds us (nothing we want, or it chokes us), and sent no block for
    /// a grace period. Returns since when it gave nothing, for choosing the longest idle.
    fn gives_nothing(&self, now_ms: u64) -> Option<u64> {
        let idle_since = self
            .connected_ms
            .max(self.last_block_ms.load(Ordering::Relaxed));
        let idle = now_ms.saturating_sub(idle_since) >= EVICT_GRACE_MS
            && !self.remote_interested.load(Ordering::Relaxed)
            && !self.fed_by.load(Ordering::Relaxed);
        idle.then_some(idle_since)
    }

    /// The writer's queue. The outbox lock is innermost: nothing is locked while it is held.
    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
    }

    /// Queues `out` for the writer; false if the upload queue is full (see `Outbox::push`).
    pub fn push(&self, out: Out) -> bool {
        let queued = self.outbox().push(out);
        self.wake_writer.notify_one();
        queued
    }

    /// Queues every message of `outs` at once and wakes the writer once.
    pub fn push_all(&self, outs: &[Out]) {
        if outs.is_empty() {
            return;
        }
        let mut o = self.outbox();
        for &out in outs {
            o.push(out);
        }
        drop(o);
        self.wake_writer.notify_one();
    }
}

struct LivePeer {
    conn: u64,
    peer_id: Id20,
    addr: SocketAddr,
    /// It dialed us: counts towards its address's share of the table.
    inbound: bool,
    /// Peer id of the side that dialed: decides which of two duplicate connections survives.
    initiator: Id20,
    link: Arc<PeerLink>,
}

/// Where `p` accepts connections, if known: the address we dialed, or for a peer that
/// dialed us, its address with the port of its extended handshake's `p`.
fn listening(p: &LivePeer) -> Option<SocketAddr> {
    if p.inbound {
        p.link
            .ext
            .listen_port()
            .map(|port| SocketAddr::new(p.addr.ip(), port))
    } else {
        Some(p.addr)
    }
}

#[derive(Default)]
struct PeerTable {
    live: Vec<LivePeer>,
    seen: HashMap<Id20, (SocketAddr, Arc<PeerCounters>)>,
    banned: HashSet<Id20>,
    /// Strikes per address, kept across connections; [`MAX_STRIKES`] bans the address.
    strikes: HashMap<IpAddr, Arc<AtomicU32>>,
    dials: Vec<DialStatus>,
    next_conn: u64,
    /// Peers evicted for newcomers so far.
    evicted: u64,
}

impl PeerTable {
    fn is_banned_ip(&self, ip: IpAddr) -> bool {
        self.strikes
            .get(&ip)
            .is_some_and(|s| s.load(Ordering::Relaxed) >= MAX_STRIKES)
    }

    /// Incoming connections from `ip`.
    fn inbound_from(&self, ip: IpAddr) -> usize {
        self.live
            .iter()
            .filter(|p| p.inbound && p.addr.ip() == ip)
            .count()
    }

    /// The live peer (from `ip` if given) that gave nothing for longest.
    fn eviction_candidate(&self, ip: Option<IpAddr>, now_ms: u64) -> Option<usize> {
        self.live
            .iter()
            .enumerate()
            .filter(|(_, p)| ip.is_none_or(|ip| p.inbound && p.addr.ip() == ip))
            .filter_map(|(k, p)| Some((k, p.link.gives_nothing(now_ms)?)))
            .min_by_key(|&(_, since)| since)
            .map(|(k, _)| k)
    }

    fn evict(&mut self, k: usize) {
        let p = self.live.remove(k);
        tracing::debug!(addr = %p.addr, peer = %p.peer_id.as_string(), "evicted: it gave nothing and a newcomer waits");
        p.link.counters.connected.store(false, Ordering::Relaxed);
        p.link.close.cancel();
        self.evicted += 1;
    }
}

/// Why a connection was refused at registration.
pub(crate) enum Refused {
    Duplicate,
    Banned,
    Full,
    HostFull,
}

/// Who gets our uploads; fixed at engine start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChokePolicy {
    /// Peers unchoked at once; 0 uploads to nobody (client-server setting).
    pub slots: usize,
    /// Most connections at once; 0 means no limit.
    pub max_peers: usize,
    /// Most incoming connections from one IP address; 0 means no limit.
    pub max_per_ip: usize,
}

/// See the module doc.
pub(crate) struct PeerRegistry {
    table: Mutex<PeerTable>,
    our_id: Id20,
    policy: ChokePolicy,
    started: Instant,
    /// Wakes the web-seed workers with the connections' readers (a demand, a plan, a release).
    origin_wake: Notify,
}

impl PeerRegistry {
    pub fn new(our_id: Id20, policy: ChokePolicy) -> PeerRegistry {
        PeerRegistry {
            table: Mutex::new(PeerTable::default()),
            our_id,
            policy,
            started: Instant::now(),
            origin_wake: Notify::new(),
        }
    }

    fn table(&self) -> MutexGuard<'_, PeerTable> {
        lock(&self.table)
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Live connections (the DHT searches again while there are none).
    pub fn live(&self) -> usize {
        self.table().live.len()
    }

    /// Whether some connected peer feeds us or can (see [`PeerLink::fed_by`]); if none does, a
    /// downloading client is starved and looks for more peers.
    pub fn any_feeds_us(&self) -> bool {
        self.table()
            .live
            .iter()
            .any(|p| p.link.fed_by.load(Ordering::Relaxed))
    }

    /// Whether an incoming connection from `ip` may go on to its handshake: the address is
    /// not banned, and it would get a slot (free, or taken from a peer that gives nothing).
    /// [`PeerRegistry::register`] decides for good.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let t = self.table();
        if t.is_banned_ip(ip) {
            return false;
        }
        let now = self.now_ms();
        let (max, per_ip) = (self.policy.max_peers, self.policy.max_per_ip);
        if per_ip > 0
            && t.inbound_from(ip) >= per_ip
            && t.eviction_candidate(Some(ip), now).is_none()
        {
            return false;
        }
        max == 0 || t.live.len() < max || t.eviction_candidate(None, now).is_some()
    }

    pub fn is_connected(&self, peer_id: Id20) -> bool {
        self.table().live.iter().any(|p| p.peer_id == peer_id)
    }

    /// Registers a handshaken connection (returns its number and the live count), or refuses it.
    /// A full table (or an address at its share) takes a newcomer only by evicting a peer that
    /// gives nothing (see the module doc).
    pub fn register(
        &self,
        peer_id: Id20,
        addr: SocketAddr,
        outbound: bool,
        link: Arc<PeerLink>,
    ) -> Result<(u64, usize), Refused> {
        let mut t = self.table();
        if t.banned.contains(&peer_id) || t.is_banned_ip(addr.ip()) {
            return Err(Refused::Banned);
        }
        // A second connection of a live peer replaces it (below): it takes no new slot.
        if !t.live.iter().any(|p| p.peer_id == peer_id) {
            let now = self.now_ms();
            let per_ip = self.policy.max_per_ip;
            if !outbound && per_ip > 0 && t.inbound_from(addr.ip()) >= per_ip {
                let k = t
                    .eviction_candidate(Some(addr.ip()), now)
                    .ok_or(Refused::HostFull)?;
                t.evict(k);
            }
            let max = self.policy.max_peers;
            if max > 0 && t.live.len() >= max {
                let k = t.eviction_candidate(None, now).ok_or(Refused::Full)?;
                t.evict(k);
            }
        }
        let initiator = if outbound { self.our_id } else { peer_id };
        // Two connections to one peer (both sides dialed): both sides keep the one dialed by
        // the smaller peer id, so they agree without talking.
        if let Some(k) = t.live.iter().position(|p| p.peer_id == peer_id) {
            if t.live[k].initiator <= initiator {
                return Err(Refused::Duplicate);
            }
            t.live[k].link.close.cancel();
            t.live.remove(k);
        }
        let conn = t.next_conn;
        t.next_conn += 1;
        link.counters.connected.store(true, Ordering::Relaxed);
        t.seen.insert(peer_id, (addr, link.counters.clone()));
        t.live.push(LivePeer {
            conn,
            peer_id,
            addr,
            inbound: !outbound,
            initiator,
            link,
        });
        Ok((conn, t.live.len()))
    }

    /// Forgets a connection; returns the live count.
    pub fn unregister(&self, conn: u64) -> usize {
        let live = {
            let mut t = self.table();
            if let Some(k) = t.live.iter().position(|p| p.conn == conn) {
                let p = t.live.remove(k);
                p.link.counters.connected.store(false, Ordering::Relaxed);
            }
            t.live.len()
        };
        self.rechoke(false);
        live
    }

    /// Lifetime counters of `peer_id` (continued across reconnections).
    pub fn counters_for(&self, peer_id: Id20) -> Arc<PeerCounters> {
        self.table()
            .seen
            .get(&peer_id)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }

    /// The strike count of `ip`, shared by all its connections, past and future.
    pub fn strikes_for(&self, ip: IpAddr) -> Arc<AtomicU32> {
        self.table().strikes.entry(ip).or_default().clone()
    }

    /// Bans `peer_id` and its address (whose strikes reached [`MAX_STRIKES`]): closes every
    /// live connection from that address.
    pub fn ban(&self, peer_id: Id20, addr: SocketAddr) {
        let mut t = self.table();
        t.banned.insert(peer_id);
        t.strikes
            .entry(addr.ip())
            .or_default()
            .fetch_max(MAX_STRIKES, Ordering::Relaxed);
        if let Some((_, c)) = t.seen.get(&peer_id) {
            c.banned.store(true, Ordering::Relaxed);
        }
        for p in t.live.iter().filter(|p| p.addr.ip() == addr.ip()) {
            p.link.counters.banned.store(true, Ordering::Relaxed);
            p.link.close.cancel();
        }
    }

    pub fn is_banned_addr(&self, addr: SocketAddr) -> bool {
        self.table().is_banned_ip(addr.ip())
    }

    /// Tells every connection we have `piece`, and wakes their readers to drop it.
    pub fn announce(&self, piece: u32) {
        for p in &self.table().live {
            p.link.push(Out::Have(piece));
            p.link.wake_reader.notify_one();
        }
    }

    /// Announces `blocks`, verified alone, to every peer that takes such announcements (see
    /// [`crate::have_block`]).
    pub fn announce_blocks(&self, blocks: &[u32]) {
        if blocks.is_empty() {
            return;
        }
        for p in &self.table().live {
            if p.link.ext.have_block_id().is_some() {
                for &b in blocks {
                    p.link.outbox().push(Out::HaveBlock(b));
                }
                p.link.wake_writer.notify_one();
            }
        }
    }

    /// Wakes every connection's reader to reconsider its requests, and the web-seed workers.
    pub fn wake_readers(&self) {
        for p in &self.table().live {
            p.link.wake_reader.notify_one();
        }
        self.origin_wake.notify_waiters();
    }

    /// What the web-seed workers wait on between looks for work.
    pub fn origin_wake(&self) -> &Notify {
        &self.origin_wake
    }

    /// Whether a live peer accepts connections at `addr`: one we dialed there, or one that
    /// dialed us and named that port in its extended handshake. Dialing it again would only
    /// make a second connection that replaces the first (see [`PeerRegistry::register`]),
    /// with all the first one's requests, choke state and reservations.
    pub fn listens_at(&self, addr: SocketAddr) -> bool {
        self.table().live.iter().any(|p| listening(p) == Some(addr))
    }

    /// One round of peer exchange: every peer that speaks ut_pex and is due gets the
    /// connectable peers it was not told of (and those gone) queued (see [`crate::pex`]).
    pub fn pex_round(&self, now: Instant, interval: std::time::Duration) {
        let t = self.table();
        // A closing connection (banned, evicted, replaced) is gone already: a banned peer shows
        // in `dropped` at once, not when its task gets to unregister it.
        let going = |p: &LivePeer| p.link.close.is_cancelled() || t.is_banned_ip(p.addr.ip());
        let all: Vec<(u64, SocketAddr)> = t
            .live
            .iter()
            .filter(|p| !going(p))
            .filter_map(|p| Some((p.conn, listening(p)?)))
            .collect();
        let list = crate::pex::fingerprint(&all);
        let mut others = Vec::with_capacity(all.len());
        for p in t
            .live
            .iter()
            .filter(|p| !going(p) && p.link.ext.supports_pex())
        {
            let mut pex = lock(&p.link.pex);
            if pex.idle(list, now, interval) {
                continue;
            }
            others.clear();
            others.extend(all.iter().filter(|(c, _)| *c != p.conn).map(|&(_, a)| a));
            if pex.prepare(&others, list, now, interval) {
                drop(pex);
                p.link.push(Out::Pex);
            }
        }
    }

    /// Starts tracking a dialed address; false if it is tracked already.
    pub fn add_dial(&self, addr: SocketAddr) -> bool {
        let mut t = self.table();
        if t.dials.iter().any(|d| d.addr == addr) {
            return false;
        }
        t.dials.push(DialStatus {
            addr,
            state: DialState::Connecting,
            attempts: 0,
        });
        true
    }

    pub fn set_dial(&self, addr: SocketAddr, state: DialState, attempt: bool) {
        let mut t = self.table();
        if let Some(d) = t.dials.iter_mut().find(|d| d.addr == addr) {
            d.state = state;
            d.attempts += attempt as u32;
        }
    }

    /// Every peer seen, the live count, and every dialed address.
    pub fn snapshot(&self) -> (Vec<PeerStats>, usize, Vec<DialStatus>) {
        let t = self.table();
        let peers = Self::peer_stats(&t);
        (peers, t.live.len(), t.dials.clone())
    }

    /// Banned addresses, and peers evicted for newcomers so far.
    pub fn bans(&self) -> (Vec<IpAddr>, u64) {
        let t = self.table();
        let mut banned: Vec<IpAddr> = t
            .strikes
            .keys()
            .copied()
            .filter(|&ip| t.is_banned_ip(ip))
            .collect();
        banned.sort();
        (banned, t.evicted)
    }

    fn peer_stats(t: &PeerTable) -> Vec<PeerStats> {
        t.seen
            .iter()
            .map(|(id, (addr, c))| PeerStats {
                peer_id: id.0,
                addr: *addr,
                connected: c.connected.load(Ordering::Relaxed),
                downloaded: c.downloaded.load(Ordering::Relaxed),
                uploaded: c.uploaded.load(Ordering::Relaxed),
                hash_failures: c.hash_failures.load(Ordering::Relaxed),
                banned: c.banned.load(Ordering::Relaxed),
                encrypted: c.encrypted.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Chooses whom to upload to. `rotate`: also move one slot from the longest-unchoked peer
    /// to the longest-waiting one (the periodic round); otherwise only fill free slots and free
    /// the slots of peers no longer interested.
    pub fn rechoke(&self, rotate: bool) {
        let slots = self.policy.slots;
        let now = self.now_ms();
        let t = self.table();
        let set = |link: &PeerLink, choke: bool| {
            link.am_choking.store(choke, Ordering::Relaxed);
            link.choke_changed_ms.store(now, Ordering::Relaxed);
            if choke {
                link.outbox().drop_uploads();
            }
            link.push(if choke { Out::Choke } else { Out::Unchoke });
        };
        let mut unchoked = 0;
        for p in &t.live {
            let l = &p.link;
            if !l.am_choking.load(Ordering::Relaxed) {
                if l.remote_interested.load(Ordering::Relaxed) {
                    unchoked += 1;
                } else {
                    set(l, true);
                }
            }
        }
        let waiting = |t: &PeerTable| {
            t.live
                .iter()
                .filter(|p| {
                    p.link.am_choking.load(Ordering::Relaxed)
                        && p.link.remote_interested.load(Ordering::Relaxed)
                })
                .min_by_key(|p| p.link.choke_changed_ms.load(Ordering::Relaxed))
                .map(|p| p.link.clone())
        };
        if rotate && unchoked >= slots && slots > 0 {
            if let Some(next) = waiting(&t) {
                let longest = t
                    .live
                    .iter()
                    .filter(|p| !p.link.am_choking.load(Ordering::Relaxed))
                    .min_by_key(|p| p.link.choke_changed_ms.load(Ordering::Relaxed))
                    .map(|p| p.link.clone());
                if let Some(old) = longest {
                    set(&old, true);
                    set(&next, false);
                }
            }
        }
        while unchoked < slots {
            let Some(next) = waiting(&t) else { break };
            set(&next, false);
            unchoked += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pex::PEX_INTERVAL;
    use std::time::Duration;

    /// A registry that started `ago` ago, so links made at 0 ms are that old.
    fn registry(max_peers: usize, max_per_ip: usize, ago: Duration) -> PeerRegistry {
        let r = PeerRegistry::new(
            Id20::new([0; 20]),
            ChokePolicy {
                slots: 4,
                max_peers,
                max_per_ip,
            },
        );
        PeerRegistry {
            started: Instant::now() - ago,
            ..r
        }
    }

    fn link() -> Arc<PeerLink> {
        Arc::new(PeerLink::new(
            CancellationToken::new(),
            Arc::default(),
            0,
            Arc::default(),
        ))
    }

    fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    fn id(k: u8) -> Id20 {
        Id20::new([k; 20])
    }

    /// Registers peer `k` from `from` on a new link, which it returns; panics if refused.
    fn join(r: &PeerRegistry, k: u8, from: SocketAddr, outbound: bool) -> Arc<PeerLink> {
        let l = link();
        let joined = r.register(id(k), from, outbound, l.clone());
        assert!(joined.is_ok(), "peer {k} refused");
        l
    }

    const OLD: Duration = Duration::from_secs(10);
    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    #[test]
    fn one_address_gets_its_share_and_a_newcomer_evicts_its_idlest_peer() {
        let r = registry(100, 2, OLD);
        let l1 = join(&r, 1, addr(A, 1), false);
        let l2 = join(&r, 2, addr(A, 2), false);
        // Dialed by us: not part of A's share.
        join(&r, 3, addr(A, 3), true);
        l2.block_received(100);
        assert!(r.admits(A.into()));
        join(&r, 4, addr(A, 4), false);
        assert!(l1.close.is_cancelled(), "the longest idle peer of A goes");
        assert!(!l2.close.is_cancelled());
        assert_eq!((r.live(), r.bans().1), (3, 1));
        // A peer that wants something from us is never evicted.
        for p in &r.table().live {
            p.link.remote_interested.store(true, Ordering::Relaxed);
        }
        assert!(!r.admits(A.into()));
        assert!(matches!(
            r.register(id(5), addr(A, 5), false, link()),
            Err(Refused::HostFull)
        ));
        assert!(r.admits(B.into()), "other addresses still get in");
    }

    #[test]
    fn a_full_table_evicts_only_peers_that_give_nothing_after_their_grace() {
        let young = registry(2, 0, Duration::ZERO);
        join(&young, 1, addr(A, 1), false);
        join(&young, 2, addr(B, 1), true);
        assert!(!young.admits(B.into()), "both are in their grace period");
        let r = registry(2, 0, OLD);
        let l1 = join(&r, 1, addr(A, 1), false);
        let l2 = join(&r, 2, addr(B, 1), true);
        l1.fed_by.store(true, Ordering::Relaxed);
        let newcomer = Arc::new(PeerLink::new(
            CancellationToken::new(),
            Arc::default(),
            r.now_ms(),
            Arc::default(),
        ));
        assert!(r.register(id(3), addr(B, 2), false, newcomer).is_ok());
        assert!(l2.close.is_cancelled() && !l1.close.is_cancelled());
        assert_eq!(r.live(), 2);
        // The newcomer is young: nothing left to evict.
        assert!(matches!(
            r.register(id(4), addr(B, 3), false, link()),
            Err(Refused::Full)
        ));
    }

    #[test]
    fn strikes_belong_to_the_address_and_a_ban_closes_all_its_connections() {
        let r = registry(10, 0, OLD);
        let l1 = join(&r, 1, addr(A, 1), false);
        let l2 = join(&r, 2, addr(A, 2), false);
        // A reconnection under a new id and port shares the count.
        r.strikes_for(A.into()).fetch_add(1, Ordering::Relaxed);
        assert!(r.admits(A.into()));
        let strikes = r.strikes_for(A.into());
        assert_eq!(strikes.fetch_add(1, Ordering::Relaxed) + 1, MAX_STRIKES);
        assert!(!r.admits(A.into()) && r.is_banned_addr(addr(A, 99)));
        assert!(matches!(
            r.register(id(3), addr(A, 3), false, link()),
            Err(Refused::Banned)
        ));
        r.ban(id(1), addr(A, 1));
        assert!(l1.close.is_cancelled() && l2.close.is_cancelled());
        assert_eq!(r.bans().0, vec![IpAddr::from(A)]);
        assert!(r.admits(B.into()));
    }

    /// A peer banned for corrupt data is named in the next PEX message's `dropped` list at
    /// once, though its connection is still closing (it stays in the table until its task
    /// unregisters it), and never offered to anyone again.
    #[test]
    fn a_banned_peer_is_dropped_from_pex_at_once() {
        const C: [u8; 4] = [10, 0, 0, 3];
        let r = registry(10, 0, OLD);
        let mut buf = [0u8; 256];
        let n = crate::extension::encode_handshake(
            &mut buf,
            Some(6881),
            0,
            true,
            false,
            Default::default(),
            false,
        );
        let (msg, _) = peer_binary_protocol::Message::deserialize(&buf[..n], &[]).unwrap();
        let peer_binary_protocol::Message::Extended(
            peer_binary_protocol::extended::ExtendedMessage::Handshake(ours),
        ) = msg
        else {
            panic!("not an extended handshake");
        };
        let speaks_pex = |l: &Arc<PeerLink>| l.ext.update(&ours);
        let told = |l: &Arc<PeerLink>| {
            let m = lock(&l.pex).take().expect("a PEX message");
            let m = m.as_borrowed();
            let added: Vec<SocketAddr> = m.added_peers().map(|p| p.addr).collect();
            let dropped: Vec<SocketAddr> = m.dropped_peers().map(|p| p.addr).collect();
            (added, dropped)
        };
        let la = join(&r, 1, addr(A, 1), true);
        let lb = join(&r, 2, addr(B, 2), true);
        join(&r, 3, addr(C, 3), true);
        speaks_pex(&la);
        speaks_pex(&lb);
        let t0 = Instant::now();
        r.pex_round(t0, PEX_INTERVAL);
        let (mut added, _) = told(&la);
        added.sort();
        assert_eq!(added, vec![addr(B, 2), addr(C, 3)]);
        told(&lb);
        r.ban(id(3), addr(C, 3));
        // A newcomer is never told of the banned peer.
        let ld = join(&r, 4, addr([10, 0, 0, 4], 4), true);
        speaks_pex(&ld);
        r.pex_round(t0 + PEX_INTERVAL, PEX_INTERVAL);
        assert_eq!(told(&la), (vec![addr([10, 0, 0, 4], 4)], vec![addr(C, 3)]));
        let (added, _) = told(&ld);
        assert!(!added.contains(&addr(C, 3)), "{added:?}");
    }
}
