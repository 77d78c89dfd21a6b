//! The connected peers: registration, bans, choking, and messages to all of them.
//!
//! [`PeerRegistry`] owns the table of live connections. Each connection keeps a [`PeerLink`]
//! that the registry can reach: its outbox and wake-ups, and the choke state the choker sets.
//! The registry knows nothing of how a connection downloads; connections know the registry only
//! through its methods.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use librqbit_core::hash_id::Id20;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
    /// Milliseconds since the registry started of the last choke or unchoke: rotation order.
    choke_changed_ms: AtomicU64,
    pub close: CancellationToken,
    pub counters: Arc<PeerCounters>,
}

impl PeerLink {
    pub fn new(close: CancellationToken, counters: Arc<PeerCounters>, now_ms: u64) -> PeerLink {
        PeerLink {
            outbox: Mutex::new(Outbox::new()),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
            am_choking: AtomicBool::new(true),
            remote_interested: AtomicBool::new(false),
            choke_changed_ms: AtomicU64::new(now_ms),
            close,
            counters,
        }
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
    /// Peer id of the side that dialed: decides which of two duplicate connections survives.
    initiator: Id20,
    link: Arc<PeerLink>,
}

#[derive(Default)]
struct PeerTable {
    live: Vec<LivePeer>,
    seen: HashMap<Id20, (SocketAddr, Arc<PeerCounters>)>,
    banned: HashSet<Id20>,
    banned_addrs: HashSet<SocketAddr>,
    dials: Vec<DialStatus>,
    next_conn: u64,
}

/// Why a connection was refused at registration.
pub(crate) enum Refused {
    Duplicate,
    Banned,
    Full,
}

/// Who gets our uploads; fixed at engine start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChokePolicy {
    /// Peers unchoked at once; 0 uploads to nobody (client-server setting).
    pub slots: usize,
    /// Most connections at once; 0 means no limit.
    pub max_peers: usize,
}

/// See the module doc.
pub(crate) struct PeerRegistry {
    table: Mutex<PeerTable>,
    our_id: Id20,
    policy: ChokePolicy,
    started: Instant,
}

impl PeerRegistry {
    pub fn new(our_id: Id20, policy: ChokePolicy) -> PeerRegistry {
        PeerRegistry {
            table: Mutex::new(PeerTable::default()),
            our_id,
            policy,
            started: Instant::now(),
        }
    }

    fn table(&self) -> MutexGuard<'_, PeerTable> {
        lock(&self.table)
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Live connections.
    pub fn live(&self) -> usize {
        self.table().live.len()
    }

    /// Whether a new connection would exceed the limit.
    pub fn is_full(&self) -> bool {
        self.policy.max_peers > 0 && self.live() >= self.policy.max_peers
    }

    pub fn is_connected(&self, peer_id: Id20) -> bool {
        self.table().live.iter().any(|p| p.peer_id == peer_id)
    }

    /// Registers a handshaken connection (returns its number and the live count), or refuses it.
    pub fn register(
        &self,
        peer_id: Id20,
        addr: SocketAddr,
        outbound: bool,
        link: Arc<PeerLink>,
    ) -> Result<(u64, usize), Refused> {
        let mut t = self.table();
        if t.banned.contains(&peer_id) {
            return Err(Refused::Banned);
        }
        let max = self.policy.max_peers;
        if max > 0 && t.live.len() >= max && !t.live.iter().any(|p| p.peer_id == peer_id) {
            return Err(Refused::Full);
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

    pub fn ban(&self, peer_id: Id20, addr: SocketAddr) {
        let mut t = self.table();
        t.banned.insert(peer_id);
        t.banned_addrs.insert(addr);
        if let Some((_, c)) = t.seen.get(&peer_id) {
            c.banned.store(true, Ordering::Relaxed);
        }
    }

    pub fn is_banned_addr(&self, addr: SocketAddr) -> bool {
        self.table().banned_addrs.contains(&addr)
    }

    /// Tells every connection we have `piece`, and wakes their readers to drop it.
    pub fn announce(&self, piece: u32) {
        for p in &self.table().live {
            p.link.push(Out::Have(piece));
            p.link.wake_reader.notify_one();
        }
    }

    /// Wakes every connection's reader to reconsider its requests.
    pub fn wake_readers(&self) {
        for p in &self.table().live {
            p.link.wake_reader.notify_one();
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
        let peers = t
            .seen
            .iter()
            .map(|(id, (addr, c))| PeerStats {
                peer_id: id.0,
                addr: *addr,
                connected: c.connected.load(Ordering::Relaxed),
                downloaded: c.downloaded.load(Ordering::Relaxed),
                uploaded: c.uploaded.load(Ordering::Relaxed),
                hash_failures: c.hash_failures.load(Ordering::Relaxed),
                banned: c.banned.load(Ordering::Relaxed),
            })
            .collect();
        (peers, t.live.len(), t.dials.clone())
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
