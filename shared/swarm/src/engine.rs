//! The swarm engine: its tasks (listener, dialers, choker, flusher, intake) and the API the
//! application calls.
//!
//! [`Engine`] owns one torrent's state and peer connections. It is a cheap-to-clone handle.
//! [`Engine::bind`], [`Engine::wait_piece`], [`Engine::wait_complete`] and
//! [`Engine::shutdown`] are async; everything else is synchronous and never waits on the
//! network. [`Engine::demand`] does not even take a lock: it queues the demand for the intake
//! task, so a FUSE thread can call it on every miss.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use librqbit_core::hash_id::Id20;
use librqbit_core::lengths::ValidPieceIndex;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{self, ConnCtx, Side};
use crate::dht::{self, DhtConfig};
use crate::error::{PeerError, Result, SwarmError};
use crate::events::SwarmEvents;
use crate::inject::Injector;
use crate::layout::Layout;
use crate::map::PieceMap;
use crate::mse::Encryption;
use crate::peers::{ChokePolicy, PeerRegistry};
use crate::pex::PexFeed;
use crate::picker::PiecePicker;
use crate::ratelimit::RateLimiter;
use crate::spawn::spawn;
use crate::state::TorrentState;
use crate::stats::{DialState, SwarmStats};
use crate::storage::Storage;
use crate::torrent::Torrent;
use crate::tracker;
use crate::webseed::{self, Origin, OriginCtx, OriginPolicy};

/// How often the PEX task looks for peers due a message: a newcomer hears of the swarm
/// within this of its extended handshake.
const PEX_TICK: Duration = Duration::from_secs(1);

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
    /// demanded block does not queue behind background blocks at the remote.
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
    /// and planned blocks.
    pub fetch_all: bool,
    /// Announce to the torrent's trackers (if it has any).
    pub use_trackers: bool,
    /// Find peers (and announce ourselves, when listening) through the DHT; `None` runs no
    /// DHT node.
    pub dht: Option<DhtConfig>,
    /// Seed of the picker's tie-breaks; `None` draws one at random.
    pub seed: Option<u64>,
    /// Most connections at once; further incoming ones are refused (dialed addresses keep
    /// retrying) unless a peer that gives nothing can be evicted for them. 0 means no limit.
    pub max_peers: usize,
    /// Most incoming connections from one IP address, so one host cannot take every slot;
    /// beyond it, as for `max_peers`. 0 means no limit.
    pub max_peers_per_ip: usize,
    /// Use web seeds (BEP 19): the torrent's `url-list` and `web_seeds`.
    pub use_web_seeds: bool,
    /// More web seed URLs than the torrent's (a URL ending in `/` gets the torrent's name).
    pub web_seeds: Vec<String>,
    /// Most bytes per second all web seeds together may send us (their owner pays for each);
    /// `None` = unlimited.
    pub web_seed_limit: Option<u64>,
    /// How long a demanded block waits for peers that have it before a web seed is asked
    /// too. Blocks no connected peer has are asked of the web seed at once.
    pub web_seed_patience: Duration,
    /// Peer exchange (BEP 11): tell peers whom else we are connected to, and dial whom they
    /// tell us of.
    pub pex: bool,
    /// Least time between two PEX messages to one peer: [`crate::PEX_INTERVAL`] (the
    /// convention all clients follow); shorter only for tests.
    pub pex_interval: Duration,
    /// Message Stream Encryption: which handshake we dial first and what payload we select
    /// (incoming connections may use either form unless encryption is required).
    pub encryption: Encryption,
    /// Inject each piece into the crowd once (see `inject.rs`): decline a sharing vmt peer's
    /// request for a piece another sharing peer holds or is being sent, and tell such peers to
    /// ask only for what they read or plan to read. For a seeder of a flash crowd.
    pub inject: bool,
    /// Urgent requests (see `urgent.rs`): ask a peer that serves them for the blocks a reader
    /// waits for, choked or not, and, when we upload, serve such requests (from peers we
    /// choke too) before our other uploads. Off by default: measured only with an injecting
    /// seeder (see `urgent.rs`).
    pub urgent: bool,
    /// Urgent uploads queued over all connections past which one more urgent request is
    /// answered busy, so its asker goes to another holder (see `busy.rs`).
    pub busy_backlog: usize,
    /// The address dials go out from when we do not listen (a client-server client): on a
    /// host with several addresses, its own, so a peer's per-address limit counts it alone.
    /// With a listener, dials go out from the listening address instead.
    pub dial_from: Option<IpAddr>,
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
            dial_from: None,
            inject: false,
            urgent: false,
            busy_backlog: crate::busy::BUSY_BACKLOG,
            fetch_all: true,
            use_trackers: true,
            dht: None,
            seed: None,
            // Far above what one appliance swarm needs; bounds memory (about 1 MiB per peer).
            max_peers: 128,
            // An eighth of the table: room for a few clients behind one NAT, while one host
            // can never lock the others out.
            max_peers_per_ip: 16,
            use_web_seeds: true,
            web_seeds: Vec::new(),
            web_seed_limit: None,
            // A demanded block takes a few ms from a peer on a LAN and ~100 ms across a
            // continent; 500 ms is a peer that is stalled or far behind its queue.
            web_seed_patience: Duration::from_millis(500),
            pex: true,
            pex_interval: crate::pex::PEX_INTERVAL,
            encryption: Encryption::default(),
        }
    }
}

/// What the engine's tasks share; see [`Engine`].
struct Inner {
    ctx: ConnCtx,
    config: EngineConfig,
    tasks: TaskTracker,
    listen_addr: Option<SocketAddr>,
    /// Demands queued by [`Engine::demand_blocks`] for the intake task.
    demands: mpsc::UnboundedSender<Range<u32>>,
    /// Addresses to dial, from [`Engine::add_peer`] and the trackers.
    dials: mpsc::UnboundedSender<SocketAddr>,
    /// The web seeds, for stats.
    origins: Vec<Arc<Origin>>,
}

/// A running swarm engine for one torrent. Clones share the engine; when the last clone is
/// dropped without [`Engine::shutdown`], its tasks are cancelled (and the flusher records the
/// bitmap one last time), so a forgotten engine does not run on.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    /// Cancels the tasks when the last handle goes: tasks hold `Inner`, not this guard.
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
    /// any), dials `config.peers`, announces to trackers, and fetches what is wanted. Must be
    /// called inside a tokio runtime.
    pub fn start(
        torrent: Torrent,
        storage: Storage,
        listener: Option<TcpListener>,
        config: EngineConfig,
    ) -> Engine {
        Engine::start_with_events(torrent, storage, listener, config, None)
    }

    /// [`Engine::start`], telling `events` of every block as it becomes readable.
    pub fn start_with_events(
        torrent: Torrent,
        storage: Storage,
        listener: Option<TcpListener>,
        config: EngineConfig,
        events: Option<Arc<dyn SwarmEvents>>,
    ) -> Engine {
        let seed = config.seed.unwrap_or_else(rand::random);
        let layout = *storage.layout();
        let mut picker = PiecePicker::new(layout, seed, torrent.block_hashes().is_some());
        for i in 0..layout.pieces() {
            if storage.has_piece(i) {
                picker.mark_have(i);
            } else {
                for b in layout.piece_blocks(i) {
                    if storage.has_block(b) {
                        picker.block_present(b);
                    }
                }
                if !config.fetch_all {
                    picker.set_wanted(i, false);
                }
            }
        }
        let mut id = *b"-VM0200-\0\0\0\0\0\0\0\0\0\0\0\0";
        let tail: [u8; 12] = rand::random();
        id[8..].copy_from_slice(&tail);
        let our_id = Id20::new(id);
        let listen_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let policy = ChokePolicy {
            slots: if config.upload {
                config.upload_slots
            } else {
                0
            },
            max_peers: config.max_peers,
            max_per_ip: config.max_peers_per_ip,
        };
        let (demands, demand_rx) = mpsc::unbounded_channel();
        let (dials, dial_rx) = mpsc::unbounded_channel();
        let ctx = ConnCtx {
            state: Arc::new(TorrentState::new(torrent, storage, picker, events)),
            peers: Arc::new(PeerRegistry::new(our_id, policy)),
            down_limit: Arc::new(RateLimiter::new(config.download_limit)),
            up_limit: Arc::new(RateLimiter::new(config.upload_limit)),
            our_id,
            request_depth: config.request_depth,
            encryption: config.encryption,
            listen_port: listen_addr.map(|a| a.port()),
            pex: config
                .pex
                .then(|| Arc::new(PexFeed::new(dials.clone(), listen_addr))),
            shares: policy.slots > 0,
            inject: config
                .inject
                .then(|| Arc::new(Injector::new(layout.pieces(), config.rechoke_interval))),
            decline_retry: crate::inject::retry(config.rechoke_interval),
            asks_urgent: config.urgent,
            serves_urgent: config.urgent && policy.slots > 0,
            urgent_backlog: Arc::default(),
            busy_backlog: config.busy_backlog,
            cancel: CancellationToken::new(),
        };
        let origins = origins(&ctx.state, &config);
        let origin_ctx = Arc::new(OriginCtx::new(
            ctx.state.clone(),
            ctx.peers.clone(),
            ctx.down_limit.clone(),
            OriginPolicy {
                limit: config.web_seed_limit,
                patience: config.web_seed_patience,
                background: config.fetch_all,
            },
            ctx.cancel.clone(),
        ));
        let inner = Arc::new(Inner {
            ctx,
            config,
            tasks: TaskTracker::new(),
            listen_addr,
            demands,
            dials,
            origins,
        });
        let i = &inner;
        if let Some(listener) = listener {
            spawn(
                &i.tasks,
                "listener",
                tracing::debug_span!("listen", addr = ?listen_addr),
                accept_loop(i.clone(), listener),
            );
        }
        for &addr in &i.config.peers {
            let _ = i.dials.send(addr);
        }
        spawn(
            &i.tasks,
            "intake",
            tracing::debug_span!("intake"),
            intake_loop(i.clone(), demand_rx, dial_rx),
        );
        spawn(
            &i.tasks,
            "choker",
            tracing::debug_span!("choker"),
            choke_loop(i.clone()),
        );
        spawn(
            &i.tasks,
            "flusher",
            tracing::debug_span!("flusher"),
            flush_loop(i.clone()),
        );
        if i.config.pex {
            spawn(
                &i.tasks,
                "pex",
                tracing::debug_span!("pex"),
                pex_loop(i.clone()),
            );
        }
        if i.config.use_trackers && !i.ctx.state.torrent().trackers().is_empty() {
            spawn(
                &i.tasks,
                "tracker",
                tracing::debug_span!("tracker"),
                tracker::announce(
                    i.ctx.state.clone(),
                    i.ctx.peers.clone(),
                    our_id,
                    listen_addr.map(|a| a.port()),
                    i.ctx.cancel.clone(),
                    i.dials.clone(),
                ),
            );
        }
        if let Some(dht) = i.config.dht.clone() {
            spawn(
                &i.tasks,
                "dht",
                tracing::debug_span!("dht"),
                dht::run(
                    i.ctx.state.clone(),
                    i.ctx.peers.clone(),
                    dht,
                    listen_addr.map(|a| a.port()),
                    i.ctx.cancel.clone(),
                    i.dials.clone(),
                ),
            );
        }
        // A complete image (a seeder) has nothing to ask an origin for.
        if !i.ctx.state.storage().is_complete() {
            for origin in &i.origins {
                for w in 0..webseed::workers() {
                    spawn(
                        &i.tasks,
                        "web-seed",
                        tracing::debug_span!("web-seed", url = %origin.url(), w),
                        webseed::worker(origin_ctx.clone(), origin.clone(), w),
                    );
                }
            }
        }
        let guard = inner.ctx.cancel.clone().drop_guard();
        Engine {
            inner,
            _stop_on_drop: Arc::new(guard),
        }
    }

    fn state(&self) -> &TorrentState {
        &self.inner.ctx.state
    }

    /// Also dials `addr` (no effect if already dialed).
    pub fn add_peer(&self, addr: SocketAddr) {
        let _ = self.inner.dials.send(addr);
    }

    /// The torrent being served.
    pub fn torrent(&self) -> &Torrent {
        self.state().torrent()
    }

    /// How the image is cut into pieces and blocks.
    pub fn layout(&self) -> &Layout {
        self.state().layout()
    }

    /// Whether blocks are verified alone (the torrent has a block-hash table), so a read
    /// waits only for its blocks; otherwise it waits for whole pieces.
    pub fn verifies_blocks(&self) -> bool {
        self.state().block_hashes().is_some()
    }

    /// Our 20-byte peer id.
    pub fn peer_id(&self) -> [u8; 20] {
        self.inner.ctx.our_id.0
    }

    /// The address peers can reach us on, if listening.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.inner.listen_addr
    }

    /// Whether `piece` is verified and readable; lock-free.
    pub fn has_piece(&self, piece: ValidPieceIndex) -> bool {
        self.state().storage().has_piece(piece.get())
    }

    /// Whether `block` is present and readable; lock-free.
    pub fn has_block(&self, block: u32) -> bool {
        self.state().storage().has_block(block)
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.state().storage().is_complete()
    }

    /// Fetches the missing blocks of `blocks` before anything else (ahead of the plan and of
    /// blocks already queued at peers). Never blocks and takes no lock: the demand is queued
    /// for the engine's intake task. Blocks present by then are skipped.
    pub fn demand_blocks(&self, blocks: Range<u32>) {
        let _ = self.inner.demands.send(blocks);
    }

    /// Fetches all of `piece` first (see [`Engine::demand_blocks`]). Returns false if it is
    /// already verified.
    pub fn demand(&self, piece: ValidPieceIndex) -> bool {
        if self.has_piece(piece) {
            return false;
        }
        self.demand_blocks(self.layout().piece_blocks(piece.get()));
        true
    }

    /// Replaces the prefetch plan: blocks, most urgent first. Their pieces are fetched in the
    /// order of their first planned block; the rest follows rarest first (if `fetch_all`).
    /// Invalid or repeated entries are ignored. Cheap: reuses buffers.
    pub fn set_plan(&self, blocks: &[u32]) {
        self.state().picker().set_plan(blocks);
        self.inner.ctx.peers.wake_readers();
    }

    /// Waits until `piece` is verified (does not demand it).
    pub async fn wait_piece(&self, piece: ValidPieceIndex) -> Result<()> {
        let mut events = self.subscribe();
        loop {
            if self.has_piece(piece) {
                return Ok(());
            }
            tokio::select! {
                r = events.recv() => match r {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(SwarmError::Shutdown),
                },
                _ = self.inner.ctx.cancel.cancelled() => return Err(SwarmError::Shutdown),
            }
        }
    }

    /// Waits until every piece is verified.
    pub async fn wait_complete(&self) -> Result<()> {
        let total = self.layout().pieces();
        let mut rx = self.state().have_count();
        tokio::select! {
            r = rx.wait_for(|&c| c >= total) => r.map(|_| ()).map_err(|_| SwarmError::Shutdown),
            _ = self.inner.ctx.cancel.cancelled() => Err(SwarmError::Shutdown),
        }
    }

    /// A stream of verified piece indices, in verification order (lagging receivers lose the
    /// oldest entries; use [`Engine::start_with_events`] when every block matters).
    pub fn subscribe(&self) -> broadcast::Receiver<u32> {
        self.state().subscribe()
    }

    /// Reads image bytes at `offset` (short only at the end of the image). Only present
    /// blocks hold verified bytes.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.state().storage().read_at(offset, buf)
    }

    /// A snapshot of progress and traffic.
    pub fn stats(&self) -> SwarmStats {
        let st = self.state();
        let pieces = st.picker().counts();
        let (peers, connected, dials) = self.inner.ctx.peers.snapshot();
        let storage = st.storage();
        let layout = st.layout();
        let blocks_present = storage.block_bitmap().count();
        let mut present_bytes = blocks_present as u64 * layout.block_len() as u64;
        if storage.has_block(layout.blocks() - 1) {
            present_bytes -= (layout.block_len() - layout.block_size(layout.blocks() - 1)) as u64;
        }
        let mut have_bytes = pieces.have as u64 * layout.piece_len() as u64;
        if storage.has_piece(layout.pieces() - 1) {
            have_bytes -= (layout.piece_len() - layout.piece_size(layout.pieces() - 1)) as u64;
        }
        let c = st.counters();
        let wasted_by = c.wasted();
        let (banned, evicted) = self.inner.ctx.peers.bans();
        SwarmStats {
            pieces,
            total_pieces: layout.pieces(),
            have_bytes,
            blocks_present,
            total_blocks: layout.blocks(),
            present_bytes,
            downloaded: c.downloaded.load(Ordering::Relaxed),
            useful: c.useful.load(Ordering::Relaxed),
            origin_downloaded: c.origin_downloaded.load(Ordering::Relaxed),
            origin_useful: c.origin_useful.load(Ordering::Relaxed),
            web_seeds: self.inner.origins.iter().map(|o| o.stats()).collect(),
            uploaded: c.uploaded.load(Ordering::Relaxed),
            wasted: wasted_by.total(),
            wasted_by,
            hash_failures: c.hash_failures.load(Ordering::Relaxed),
            banned,
            evicted,
            declined_requests: c.declined.load(Ordering::Relaxed),
            declines_received: c.declines.load(Ordering::Relaxed),
            urgent_asked: c.urgent_asked.load(Ordering::Relaxed),
            urgent_served: c.urgent_served.load(Ordering::Relaxed),
            busy_sent: c.busy_sent.load(Ordering::Relaxed),
            busy_received: c.busy_received.load(Ordering::Relaxed),
            failure: st.failure().map(|e| crate::error::chain(&*e)),
            connected,
            peers,
            dials,
        }
    }

    /// Refills `map` with each piece's state and source (see [`PieceMap`]): one pass under the
    /// picker lock, sources read without it. For displays; not for fetch decisions.
    pub fn piece_map(&self, map: &mut PieceMap) {
        let st = self.state();
        st.picker().fill_map(&mut map.cells);
        st.sources().fill(&mut map.source_of);
        let known = map.sources.len();
        st.sources().names_from(known, &mut map.sources);
    }

    /// Why the engine stopped fetching, if it did: writing to local storage failed (a full or
    /// failing disk). Present data stays readable and seeded; missing data never arrives.
    pub fn failure(&self) -> Option<Arc<SwarmError>> {
        self.state().failure()
    }

    /// Waits until the engine stops fetching because local storage failed (see
    /// [`Engine::failure`]); pending forever while it works.
    pub async fn failed(&self) {
        let mut rx = self.state().failed_watch();
        if rx.wait_for(|&f| f).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Persists the bitmap now (it is also flushed periodically and at shutdown).
    pub fn flush(&self) -> Result<()> {
        self.state().storage().flush()
    }

    /// Stops every task, closes connections and persists the bitmap.
    pub async fn shutdown(&self) -> Result<()> {
        let i = &self.inner;
        i.ctx.cancel.cancel();
        i.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), i.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some swarm tasks did not stop within 5 s");
        }
        let state = i.ctx.state.clone();
        tokio::task::spawn_blocking(move || state.storage().flush())
            .await
            .unwrap_or(Ok(()))
    }

    /// Number of engine tasks still running (0 after [`Engine::shutdown`]): for leak checks.
    pub fn running_tasks(&self) -> usize {
        self.inner.tasks.len()
    }
}

/// The web seeds of `config` (the torrent's `url-list`, then `config.web_seeds`), each URL
/// once, directory URLs completed with the torrent's name.
fn origins(state: &TorrentState, config: &EngineConfig) -> Vec<Arc<Origin>> {
    if !config.use_web_seeds {
        return Vec::new();
    }
    let torrent = state.torrent();
    let mut urls: Vec<String> = Vec::new();
    for u in torrent.web_seeds().iter().chain(&config.web_seeds) {
        let url = torrent.web_seed_url(u);
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls.into_iter()
        .map(|u| Arc::new(Origin::new(u, state)))
        .collect()
}

/// Takes queued demands into the picker (a burst at once, then one wake of the connections)
/// and starts a dialer for each new address.
async fn intake_loop(
    i: Arc<Inner>,
    mut demands: mpsc::UnboundedReceiver<Range<u32>>,
    mut dials: mpsc::UnboundedReceiver<SocketAddr>,
) -> std::result::Result<(), std::convert::Infallible> {
    loop {
        tokio::select! {
            d = demands.recv() => {
                let Some(d) = d else { return Ok(()) };
                let wanted = {
                    let mut picker = i.ctx.state.picker();
                    let me = i.ctx.listen_port.unwrap_or(0);
                    // Where a reader's wait begins (see `connection::Reader::trace_requests`).
                    tracing::trace!(target: "vmt_swarm::waits", me, start = d.start, end = d.end, "demand");
                    let mut wanted = picker.demand(d);
                    while let Ok(d) = demands.try_recv() {
                        tracing::trace!(target: "vmt_swarm::waits", me, start = d.start, end = d.end, "demand");
                        wanted |= picker.demand(d);
                    }
                    wanted
                };
                if wanted {
                    i.ctx.peers.wake_readers();
                }
            }
            a = dials.recv() => {
                let Some(addr) = a else { return Ok(()) };
                add_dialer(&i, addr);
            }
            _ = i.ctx.cancel.cancelled() => return Ok(()),
        }
    }
}

async fn accept_loop(i: Arc<Inner>, listener: TcpListener) -> std::io::Result<()> {
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
            _ = i.ctx.cancel.cancelled() => return Ok(()),
        };
        if !i.ctx.peers.admits(addr.ip()) {
            tracing::debug!(%addr, "refusing a connection: banned, or no slot for it");
            continue;
        }
        let ctx = i.ctx.clone();
        spawn(
            &i.tasks,
            "peer-in",
            tracing::debug_span!("peer", %addr, dir = "in"),
            async move { connection::run(&ctx, stream, addr, Side::Accept).await },
        );
    }
}

fn add_dialer(i: &Arc<Inner>, addr: SocketAddr) {
    // Port 0 is a peer that announced it does not listen: nothing to dial.
    // A peer connected already (it dialed us, and PEX names where it listens) is not dialed.
    if addr.port() == 0
        || Some(addr) == i.listen_addr
        || i.ctx.peers.listens_at(addr)
        || !i.ctx.peers.add_dial(addr)
    {
        return;
    }
    spawn(
        &i.tasks,
        "dialer",
        tracing::debug_span!("peer", %addr, dir = "out"),
        dial_loop(i.clone(), addr),
    );
}

/// Connects to `addr` from `from`, the address we listen on when that is one address (not
/// all), as Transmission does with its bind address: the remote then sees us at the address we
/// accept on, and names that address in its PEX messages. (On a host with several addresses
/// the system would pick the source by route, e.g. the destination's own address on loopback.)
/// A loopback address dialing out of the host uses the system's choice.
async fn connect(from: Option<IpAddr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let from = from.filter(|ip| {
        !ip.is_unspecified()
            && ip.is_ipv4() == addr.is_ipv4()
            && (!ip.is_loopback() || addr.ip().is_loopback())
    });
    let Some(from) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// Keeps one connection to `addr` up: redials with exponential backoff after failures. A
/// handshake the peer hangs up on is dialed again at once in the other form (plain or MSE),
/// if the encryption policy allows it; the form that worked is kept for later redials.
async fn dial_loop(i: Arc<Inner>, addr: SocketAddr) -> std::result::Result<(), PeerError> {
    let peers = &i.ctx.peers;
    let cancel = &i.ctx.cancel;
    let policy = i.config.encryption;
    let mut form = policy.first_form();
    let mut retrying_other = false;
    let mut backoff = Duration::from_millis(250);
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        if peers.is_banned_addr(addr) {
            peers.set_dial(addr, DialState::Given("banned".into()), false);
            return Ok(());
        }
        let from = i.listen_addr.map(|l| l.ip()).or(i.config.dial_from);
        let connect = tokio::time::timeout(i.config.connect_timeout, connect(from, addr));
        let result = tokio::select! {
            r = connect => r,
            _ = cancel.cancelled() => return Ok(()),
        };
        match result {
            Ok(Ok(stream)) => {
                peers.set_dial(addr, DialState::Connected, true);
                let started = Instant::now();
                match connection::run(&i.ctx, stream, addr, Side::Dial(form)).await {
                    Err(PeerError::SelfConnection) => {
                        peers.set_dial(addr, DialState::Given("this is us".into()), false);
                        return Ok(());
                    }
                    Err(PeerError::Banned) => {
                        peers.set_dial(addr, DialState::Given("banned".into()), false);
                        return Ok(());
                    }
                    Err(PeerError::Duplicate(id)) => {
                        // The peer dialed us too and that connection won; watch it instead.
                        peers.set_dial(addr, DialState::Connected, false);
                        while peers.is_connected(id) {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = cancel.cancelled() => return Ok(()),
                            }
                        }
                    }
                    Err(e @ PeerError::HandshakeRefused { .. }) => {
                        peers.set_dial(addr, DialState::Failed(e.to_string()), false);
                        match policy.fallback(form) {
                            Some(other) if !retrying_other => {
                                tracing::debug!(%addr, "{e}; dialing {other} once");
                                form = other;
                                retrying_other = true;
                                continue;
                            }
                            // Both refused: start again from the policy's form, after backoff.
                            _ => {
                                form = policy.first_form();
                                retrying_other = false;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%addr, "connection ended: {e}");
                        peers.set_dial(addr, DialState::Failed(e.to_string()), false);
                        retrying_other = false;
                    }
                    Ok(()) => {
                        peers.set_dial(addr, DialState::Failed("closed".into()), false);
                        retrying_other = false;
                    }
                }
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(250);
                }
            }
            Ok(Err(e)) => peers.set_dial(addr, DialState::Failed(e.to_string()), true),
            Err(_) => peers.set_dial(addr, DialState::Failed("connect timed out".into()), true),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(i.config.max_redial_backoff);
    }
}

/// Peer exchange rounds: each second, every peer due for a PEX message gets one.
async fn pex_loop(i: Arc<Inner>) -> std::result::Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(
        PEX_TICK
            .min(i.config.pex_interval)
            .max(Duration::from_millis(10)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => i.ctx.peers.pex_round(Instant::now(), i.config.pex_interval),
            _ = i.ctx.cancel.cancelled() => return Ok(()),
        }
    }
}

async fn choke_loop(i: Arc<Inner>) -> std::result::Result<(), std::convert::Infallible> {
    // A zero period would make `interval` panic; 100 ms is already far shorter than useful.
    let mut tick = tokio::time::interval(i.config.rechoke_interval.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => i.ctx.peers.rechoke(true),
            _ = i.ctx.cancel.cancelled() => return Ok(()),
        }
    }
}

async fn flush_loop(i: Arc<Inner>) -> Result<()> {
    let mut tick = tokio::time::interval(i.config.flush_interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = i.ctx.cancel.cancelled() => true,
        };
        let state = i.ctx.state.clone();
        // fdatasync blocks: keep it off the runtime's worker threads.
        let r = tokio::task::spawn_blocking(move || state.storage().flush()).await;
        match r {
            // Once per run of failures (a full disk fails every tick): the pieces not
            // recorded are re-hashed on resume, nothing is lost.
            Ok(Err(e)) if !failing => {
                tracing::warn!(
                    "recording verified pieces: {}; retrying",
                    crate::error::chain(&e)
                );
                failing = true;
            }
            Ok(Err(_)) => {}
            Ok(Ok(())) => failing = false,
            Err(_) => {}
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// We dial from the one address we listen on (or are told to dial from), so peers see
    /// (and pass on through PEX) the address we accept on; all addresses leaves the choice to
    /// the system.
    #[tokio::test]
    async fn dials_go_out_from_the_listening_address() {
        let remote = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let to = remote.local_addr().unwrap();
        let seen_from = |from: &str| {
            let from: IpAddr = from.parse().unwrap();
            let remote = &remote;
            async move {
                let (_out, (_in, seen)) =
                    tokio::try_join!(connect(Some(from), to), remote.accept()).unwrap();
                seen.ip()
            }
        };
        let other = IpAddr::from([127, 0, 0, 2]);
        assert_eq!(seen_from("127.0.0.2").await, other);
        assert_eq!(
            seen_from("0.0.0.0").await,
            IpAddr::from(Ipv4Addr::LOCALHOST)
        );
    }

    /// A client that does not listen (client-server) still dials from the address it is given:
    /// a crowd's clients on one host must not all count as one address at the seeder.
    #[tokio::test]
    async fn an_engine_without_a_listener_dials_from_its_given_address() {
        let remote = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let to = remote.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = crate::testutil::random_image(dir.path(), 2 * 16384, 3);
        let torrent = crate::testutil::make_torrent(&img, 16384).await;
        let (storage, _) = Storage::open_download(
            &dir.path().join("out.img"),
            &torrent,
            &dir.path().join("out.vmtbits"),
        )
        .unwrap();
        let engine = Engine::start(
            torrent,
            storage,
            None,
            EngineConfig {
                peers: vec![to],
                upload: false,
                use_trackers: false,
                dial_from: Some(IpAddr::from([127, 0, 0, 3])),
                ..Default::default()
            },
        );
        let (_conn, seen) = tokio::time::timeout(Duration::from_secs(10), remote.accept())
            .await
            .expect("the engine dials")
            .unwrap();
        assert_eq!(seen.ip(), IpAddr::from([127, 0, 0, 3]));
        engine.shutdown().await.unwrap();
    }
}
