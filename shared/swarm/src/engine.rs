//! The swarm engine: listener, dialers, choker, bitmap flusher, and the API the runtime calls.
//!
//! [`Engine`] owns one torrent's [`Storage`], [`PiecePicker`] and peer connections. It is a
//! cheap-to-clone handle; every method except [`Engine::start`], [`Engine::wait_piece`],
//! [`Engine::wait_complete`] and [`Engine::shutdown`] is synchronous and never blocks on the
//! network, so FUSE worker threads call it directly.
//!
//! # Locks
//! `picker`, `peers`, each peer's outbox and the waiters are std mutexes, held only for
//! bookkeeping and never across `.await`. At most one is held at a time, except that `peers`
//! may be held while pushing to an outbox (an outbox lock is always innermost).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use librqbit_core::hash_id::Id20;
use librqbit_core::lengths::ValidPieceIndex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::{Result, SwarmError};
use super::peer::{self, Out, Outbox, PeerError};
use super::picker::PiecePicker;
use super::ratelimit::RateLimiter;
use super::spawn::spawn;
use super::stats::{Counters, DialState, DialStatus, PeerCounters, PeerStats, SwarmStats};
use super::storage::Storage;
use super::torrent::Torrent;
use super::tracker;
use super::waiters::{PieceCallback, Waiters};

/// How the engine behaves. Build with [`EngineConfig::default`] and set what differs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Addresses to dial (and redial after failures, with backoff).
    pub peers: Vec<SocketAddr>,
    /// Serve verified pieces to peers. `false` is the client-server setting: every peer stays
    /// choked, nothing is uploaded.
    pub upload: bool,
    /// Peers unchoked at once (rotating among interested peers); 0 uploads to nobody.
    pub upload_slots: usize,
    /// Upload limit in bytes per second; `None` = unlimited.
    pub upload_limit: Option<u64>,
    /// Download limit in bytes per second; `None` = unlimited.
    pub download_limit: Option<u64>,
    /// Most 16 KiB block requests outstanding per peer. Below it the window adapts to the
    /// path (see `RequestWindow`): deep enough to fill the link, shallow enough that a
    /// demanded piece does not queue behind background blocks at the remote.
    pub request_depth: usize,
    /// How often the choker rotates one upload slot (at least 100 ms).
    pub rechoke_interval: Duration,
    /// How often verified pieces are made durable and recorded in the bitmap file (at least
    /// 100 ms); a crash loses at most this much progress, which is then re-hashed on resume.
    pub flush_interval: Duration,
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// Longest wait between redials of a failing address.
    pub max_redial_backoff: Duration,
    /// Fetch every piece (rarest first after demand and plan). `false` fetches only demanded
    /// and planned pieces.
    pub fetch_all: bool,
    /// Announce to the torrent's trackers (if it has any).
    pub use_trackers: bool,
    /// Seed of the picker's tie-breaks; `None` draws one at random.
    pub seed: Option<u64>,
    /// Most connections at once; further incoming ones are refused (dialed addresses keep
    /// retrying). 0 means no limit.
    pub max_peers: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            peers: Vec::new(),
            upload: true,
            upload_slots: 4,
            upload_limit: None,
            download_limit: None,
            // 256 x 16 KiB = 4 MiB: fills 1 Gbit/s at 30 ms RTT; the window rarely needs it.
            request_depth: 256,
            rechoke_interval: Duration::from_secs(10),
            flush_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            max_redial_backoff: Duration::from_secs(10),
            fetch_all: true,
            use_trackers: true,
            seed: None,
            // Far above what one appliance swarm needs; bounds memory (about 1 MiB per peer).
            max_peers: 128,
        }
    }
}

/// A live connection as the engine sees it.
pub(crate) struct LivePeer {
    pub conn: u64,
    pub peer_id: Id20,
    /// Peer id of the side that dialed: decides which of two duplicate connections survives.
    pub initiator: Id20,
    pub link: Arc<PeerLink>,
}

/// What the engine and a connection's reader and writer share.
pub(crate) struct PeerLink {
    pub outbox: Mutex<Outbox>,
    pub wake_writer: Notify,
    /// Engine events the reader reacts to: a piece verified, a demand, a new plan.
    pub wake_reader: Notify,
    pub am_choking: AtomicBool,
    pub remote_interested: AtomicBool,
    /// Milliseconds since engine start of the last choke or unchoke: the rotation order.
    pub choke_changed_ms: AtomicU64,
    pub close: CancellationToken,
    pub counters: Arc<PeerCounters>,
}

impl PeerLink {
    /// Queues `out` for the writer; false if the upload queue is full (see `Outbox::push`).
    pub fn push(&self, out: Out) -> bool {
        let queued = lock(&self.outbox).push(out);
        self.wake_writer.notify_one();
        queued
    }
}

#[derive(Default)]
pub(crate) struct PeerTable {
    pub live: Vec<LivePeer>,
    pub seen: HashMap<Id20, (SocketAddr, Arc<PeerCounters>)>,
    pub banned: HashSet<Id20>,
    pub banned_addrs: HashSet<SocketAddr>,
    pub dials: Vec<DialStatus>,
    next_conn: u64,
}

/// Why a connection was refused at registration.
pub(crate) enum Refused {
    Duplicate,
    Banned,
    Full,
}

/// Everything the engine's tasks share.
pub(crate) struct Shared {
    pub torrent: Torrent,
    pub storage: Storage,
    pub config: EngineConfig,
    pub peer_id: Id20,
    pub picker: Mutex<PiecePicker>,
    pub peers: Mutex<PeerTable>,
    pub waiters: Waiters,
    pub events: broadcast::Sender<u32>,
    pub have_count: watch::Sender<u32>,
    pub counters: Counters,
    pub down_limit: RateLimiter,
    pub up_limit: RateLimiter,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    pub started: Instant,
    pub listen_addr: Option<SocketAddr>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the FUSE threads down with it: the data is still valid
    // bookkeeping (every update is a few field writes).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn picker(&self) -> MutexGuard<'_, PiecePicker> {
        lock(&self.picker)
    }

    pub fn peers(&self) -> MutexGuard<'_, PeerTable> {
        lock(&self.peers)
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Wakes every connection's reader to reconsider its requests.
    pub fn wake_readers(&self) {
        for p in &self.peers().live {
            p.link.wake_reader.notify_one();
        }
    }

    /// Registers a handshaken connection, or refuses it.
    pub fn register(
        &self,
        peer_id: Id20,
        addr: SocketAddr,
        outbound: bool,
        link: Arc<PeerLink>,
    ) -> std::result::Result<u64, Refused> {
        let mut t = self.peers();
        if t.banned.contains(&peer_id) {
            return Err(Refused::Banned);
        }
        let max = self.config.max_peers;
        if max > 0 && t.live.len() >= max && !t.live.iter().any(|p| p.peer_id == peer_id) {
            return Err(Refused::Full);
        }
        let initiator = if outbound { self.peer_id } else { peer_id };
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
        let counters = link.counters.clone();
        counters.connected.store(true, Ordering::Relaxed);
        t.seen.insert(peer_id, (addr, counters));
        t.live.push(LivePeer {
            conn,
            peer_id,
            initiator,
            link,
        });
        let live = t.live.len();
        drop(t);
        self.picker().set_plan_spread(live > 1);
        Ok(conn)
    }

    pub fn unregister(&self, conn: u64) {
        let mut t = self.peers();
        if let Some(k) = t.live.iter().position(|p| p.conn == conn) {
            let p = t.live.remove(k);
            p.link.counters.connected.store(false, Ordering::Relaxed);
        }
        let live = t.live.len();
        drop(t);
        self.picker().set_plan_spread(live > 1);
        self.rechoke(false);
    }

    /// Lifetime counters of `peer_id` (continued across reconnections).
    pub fn counters_for(&self, peer_id: Id20) -> Arc<PeerCounters> {
        self.peers()
            .seen
            .get(&peer_id)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }

    pub fn ban(&self, peer_id: Id20, addr: SocketAddr) {
        let mut t = self.peers();
        t.banned.insert(peer_id);
        t.banned_addrs.insert(addr);
        if let Some((_, c)) = t.seen.get(&peer_id) {
            c.banned.store(true, Ordering::Relaxed);
        }
    }

    /// Called once per piece, by the connection whose copy made it verified.
    pub fn piece_verified(&self, piece: ValidPieceIndex) {
        let i = piece.get();
        self.waiters.fire(i);
        let _ = self.events.send(i);
        self.have_count.send_modify(|c| *c += 1);
        for p in &self.peers().live {
            p.link.push(Out::Have(i));
            p.link.wake_reader.notify_one();
        }
    }

    /// Chooses whom to upload to. `rotate`: also move one slot from the longest-unchoked peer
    /// to the longest-waiting one (the periodic round); otherwise only fill free slots and free
    /// the slots of peers no longer interested.
    pub fn rechoke(&self, rotate: bool) {
        let slots = if self.config.upload {
            self.config.upload_slots
        } else {
            0
        };
        let now = self.now_ms();
        let t = self.peers();
        let set = |link: &PeerLink, choke: bool| {
            link.am_choking.store(choke, Ordering::Relaxed);
            link.choke_changed_ms.store(now, Ordering::Relaxed);
            if choke {
                lock(&link.outbox).drop_uploads();
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

/// A running swarm engine for one torrent. Clones share the engine; when the last clone is
/// dropped without [`Engine::shutdown`], its tasks are cancelled (and the flusher records the
/// bitmap one last time), so a forgotten engine does not run on.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    /// Cancels the tasks when the last handle goes: tasks hold `Shared`, not this guard.
    _stop_on_drop: Arc<tokio_util::sync::DropGuard>,
}

impl Engine {
    /// Binds a listening socket, with an error naming the address.
    pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| SwarmError::Bind { addr, source })
    }

    /// Starts the engine on `storage` (opened for `torrent`): accepts peers on `listener` (if
    /// any), dials `config.peers`, announces to trackers, and fetches pieces until complete.
    /// Must be called inside a tokio runtime.
    pub fn start(
        torrent: Torrent,
        storage: Storage,
        listener: Option<TcpListener>,
        config: EngineConfig,
    ) -> Engine {
        let n = torrent.piece_count();
        let seed = config.seed.unwrap_or_else(rand::random);
        let mut picker = PiecePicker::new(n, seed);
        let mut have = 0;
        for i in 0..n {
            if storage.has_piece(i) {
                picker.mark_have(i);
                have += 1;
            } else if !config.fetch_all {
                picker.set_wanted(i, false);
            }
        }
        let mut id = *b"-VM0100-\0\0\0\0\0\0\0\0\0\0\0\0";
        let tail: [u8; 12] = rand::random();
        id[8..].copy_from_slice(&tail);
        let listen_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let shared = Arc::new(Shared {
            down_limit: RateLimiter::new(config.download_limit),
            up_limit: RateLimiter::new(config.upload_limit),
            torrent,
            storage,
            peer_id: Id20::new(id),
            picker: Mutex::new(picker),
            peers: Mutex::new(PeerTable::default()),
            waiters: Waiters::default(),
            events: broadcast::channel(4096).0,
            have_count: watch::channel(have).0,
            counters: Counters::default(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            listen_addr,
            config,
        });
        let s = &shared;
        if let Some(listener) = listener {
            spawn(
                &s.tasks,
                "listener",
                tracing::debug_span!("listen", addr = ?listen_addr),
                accept_loop(s.clone(), listener),
            );
        }
        for &addr in &s.config.peers {
            add_dialer(s, addr);
        }
        spawn(
            &s.tasks,
            "choker",
            tracing::debug_span!("choker"),
            choke_loop(s.clone()),
        );
        spawn(
            &s.tasks,
            "flusher",
            tracing::debug_span!("flusher"),
            flush_loop(s.clone()),
        );
        if s.config.use_trackers && !s.torrent.trackers().is_empty() {
            tracker::start(s.clone());
        }
        let guard = shared.cancel.clone().drop_guard();
        Engine {
            shared,
            _stop_on_drop: Arc::new(guard),
        }
    }

    /// Also dials `addr` (no effect if already dialed).
    pub fn add_peer(&self, addr: SocketAddr) {
        add_dialer(&self.shared, addr);
    }

    /// The torrent being served.
    pub fn torrent(&self) -> &Torrent {
        &self.shared.torrent
    }

    /// Our 20-byte peer id.
    pub fn peer_id(&self) -> [u8; 20] {
        self.shared.peer_id.0
    }

    /// The address peers can reach us on, if listening.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.shared.listen_addr
    }

    /// Whether `piece` is verified and readable; lock-free.
    pub fn has_piece(&self, piece: ValidPieceIndex) -> bool {
        self.shared.storage.has_piece(piece.get())
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.shared.storage.is_complete()
    }

    /// Fetches `piece` before anything else (ahead of the plan and of pieces already queued
    /// at peers). Returns false if it is already verified.
    pub fn demand(&self, piece: ValidPieceIndex) -> bool {
        let wanted = self.shared.picker().demand(piece.get());
        if wanted {
            self.shared.wake_readers();
        }
        wanted
    }

    /// Replaces the prefetch order; pieces not in the plan are fetched rarest first afterwards
    /// (if `fetch_all`). Invalid or repeated indices are ignored. Cheap: reuses buffers.
    pub fn set_plan(&self, plan: &[u32]) {
        self.shared.picker().set_plan(plan);
        self.shared.wake_readers();
    }

    /// Runs `cb` once `piece` is verified and written: now, on this thread, if it already is;
    /// otherwise later on an engine task. Usable from any thread. Callbacks still waiting at
    /// [`Engine::shutdown`] are dropped uncalled (a captured FUSE reply then answers on drop);
    /// to fetch the piece too, call [`Engine::demand`].
    pub fn on_piece(&self, piece: ValidPieceIndex, cb: impl FnOnce(u32) + Send + 'static) {
        let s = &self.shared;
        if let Some(cb) = s.waiters.register(
            s.storage.bitmap(),
            piece.get(),
            Box::new(cb) as PieceCallback,
        ) {
            cb(piece.get());
        }
    }

    /// Waits until `piece` is verified (does not demand it).
    pub async fn wait_piece(&self, piece: ValidPieceIndex) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.on_piece(piece, move |_| {
            let _ = tx.send(());
        });
        tokio::select! {
            r = rx => r.map_err(|_| SwarmError::Shutdown),
            _ = self.shared.cancel.cancelled() => Err(SwarmError::Shutdown),
        }
    }

    /// Waits until every piece is verified.
    pub async fn wait_complete(&self) -> Result<()> {
        let total = self.shared.torrent.piece_count();
        let mut rx = self.shared.have_count.subscribe();
        tokio::select! {
            r = rx.wait_for(|&c| c >= total) => r.map(|_| ()).map_err(|_| SwarmError::Shutdown),
            _ = self.shared.cancel.cancelled() => Err(SwarmError::Shutdown),
        }
    }

    /// A stream of verified piece indices, in verification order (lagging receivers lose the
    /// oldest entries; use [`Engine::on_piece`] when every event matters).
    pub fn subscribe(&self) -> broadcast::Receiver<u32> {
        self.shared.events.subscribe()
    }

    /// Reads verified image bytes at `offset` (short only at the end of the image).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.shared.storage.read_at(offset, buf)
    }

    /// A snapshot of progress and traffic.
    pub fn stats(&self) -> SwarmStats {
        let s = &self.shared;
        let pieces = s.picker().counts();
        let t = s.peers();
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
        let lengths = s.torrent.lengths();
        let full = pieces.have as u64 * lengths.default_piece_length() as u64;
        let have_bytes = if s.storage.has_piece(lengths.last_piece_id().get()) {
            full - lengths.default_piece_length() as u64
                + lengths.piece_length(lengths.last_piece_id()) as u64
        } else {
            full
        };
        SwarmStats {
            pieces,
            total_pieces: s.torrent.piece_count(),
            have_bytes: have_bytes.min(lengths.total_length()),
            downloaded: s.counters.downloaded.load(Ordering::Relaxed),
            uploaded: s.counters.uploaded.load(Ordering::Relaxed),
            wasted: s.counters.wasted.load(Ordering::Relaxed),
            hash_failures: s.counters.hash_failures.load(Ordering::Relaxed),
            connected: t.live.len(),
            peers,
            dials: t.dials.clone(),
        }
    }

    /// Persists the bitmap now (it is also flushed periodically and at shutdown).
    pub fn flush(&self) -> Result<()> {
        self.shared.storage.flush()
    }

    /// Stops every task, closes connections and persists the bitmap.
    pub async fn shutdown(&self) -> Result<()> {
        let s = &self.shared;
        s.cancel.cancel();
        s.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), s.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some swarm tasks did not stop within 5 s");
        }
        s.waiters.clear();
        let shared = s.clone();
        tokio::task::spawn_blocking(move || shared.storage.flush())
            .await
            .unwrap_or(Ok(()))
    }

    /// Number of engine tasks still running (0 after [`Engine::shutdown`]): for leak checks.
    pub fn running_tasks(&self) -> usize {
        self.shared.tasks.len()
    }
}

async fn accept_loop(s: Arc<Shared>, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = s.cancel.cancelled() => return Ok(()),
        };
        let max = s.config.max_peers;
        if max > 0 && s.peers().live.len() >= max {
            tracing::debug!(%addr, "refusing a connection: {max} peers already");
            continue;
        }
        spawn(
            &s.tasks,
            "peer-in",
            tracing::debug_span!("peer", %addr, dir = "in"),
            connection(s.clone(), stream, addr, false),
        );
    }
}

async fn connection(
    s: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    outbound: bool,
) -> std::result::Result<(), PeerError> {
    peer::run(&s, stream, addr, outbound).await.map(|_| ())
}

pub(crate) fn add_dialer(s: &Arc<Shared>, addr: SocketAddr) {
    if Some(addr) == s.listen_addr {
        return;
    }
    {
        let mut t = s.peers();
        if t.dials.iter().any(|d| d.addr == addr) {
            return;
        }
        t.dials.push(DialStatus {
            addr,
            state: DialState::Connecting,
            attempts: 0,
        });
    }
    spawn(
        &s.tasks,
        "dialer",
        tracing::debug_span!("peer", %addr, dir = "out"),
        dial_loop(s.clone(), addr),
    );
}

fn set_dial(s: &Shared, addr: SocketAddr, state: DialState, attempt: bool) {
    let mut t = s.peers();
    if let Some(d) = t.dials.iter_mut().find(|d| d.addr == addr) {
        d.state = state;
        d.attempts += attempt as u32;
    }
}

/// Keeps one connection to `addr` up: redials with exponential backoff after failures.
async fn dial_loop(s: Arc<Shared>, addr: SocketAddr) -> std::result::Result<(), PeerError> {
    let mut backoff = Duration::from_millis(250);
    loop {
        if s.cancel.is_cancelled() {
            return Ok(());
        }
        if s.peers().banned_addrs.contains(&addr) {
            set_dial(&s, addr, DialState::Given("banned".into()), false);
            return Ok(());
        }
        let connect = tokio::time::timeout(s.config.connect_timeout, TcpStream::connect(addr));
        let result = tokio::select! {
            r = connect => r,
            _ = s.cancel.cancelled() => return Ok(()),
        };
        match result {
            Ok(Ok(stream)) => {
                set_dial(&s, addr, DialState::Connected, true);
                let started = Instant::now();
                match peer::run(&s, stream, addr, true).await {
                    Err(PeerError::SelfConnection) => {
                        set_dial(&s, addr, DialState::Given("this is us".into()), false);
                        return Ok(());
                    }
                    Err(PeerError::Banned) => {
                        set_dial(&s, addr, DialState::Given("banned".into()), false);
                        return Ok(());
                    }
                    Err(PeerError::Duplicate(id)) => {
                        // The peer dialed us too and that connection won; watch it instead.
                        set_dial(&s, addr, DialState::Connected, false);
                        while s.peers().live.iter().any(|p| p.peer_id == id) {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = s.cancel.cancelled() => return Ok(()),
                            }
                        }
                    }
                    Err(e) => set_dial(&s, addr, DialState::Failed(e.to_string()), false),
                    Ok(()) => set_dial(&s, addr, DialState::Failed("closed".into()), false),
                }
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(250);
                }
            }
            Ok(Err(e)) => set_dial(&s, addr, DialState::Failed(e.to_string()), true),
            Err(_) => set_dial(
                &s,
                addr,
                DialState::Failed("connect timed out".into()),
                true,
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = s.cancel.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(s.config.max_redial_backoff);
    }
}

async fn choke_loop(s: Arc<Shared>) -> std::result::Result<(), std::convert::Infallible> {
    // A zero period would make `interval` panic; 100 ms is already far shorter than useful.
    let mut tick = tokio::time::interval(s.config.rechoke_interval.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => s.rechoke(true),
            _ = s.cancel.cancelled() => return Ok(()),
        }
    }
}

async fn flush_loop(s: Arc<Shared>) -> Result<()> {
    let mut tick = tokio::time::interval(s.config.flush_interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = s.cancel.cancelled() => true,
        };
        let shared = s.clone();
        // fdatasync blocks: keep it off the runtime's worker threads.
        let r = tokio::task::spawn_blocking(move || shared.storage.flush()).await;
        if let Ok(Err(e)) = r {
            tracing::error!("{e:#}");
        }
        if stopping {
            return Ok(());
        }
    }
}
