//! `vmt-run replay-client`: a crowd of headless clients in one process.
//!
//! Each client is the mount's streaming core ([`Streaming`]: its own engine, peer id, listen
//! port, planner, belief and sparse storage) with no FUSE adapter: a trace replay
//! ([`vmt_appliance::replay::replay_on`], the timing `vmt-record replay` uses) calls
//! [`ImageFs::read`](vmt_fs::ImageFs::read) with a reply of its own ([`Answer`]) and waits
//! for it on its thread, so a read takes the mount's path below the adapter: the observer and
//! planner, the parked-read table, the reply pool, the swarm source.
//!
//! Links are the engines' own token buckets, per client in both directions. Time dilation K
//! divides the link rates by K and multiplies the traces' compute gaps, think times and the
//! choker's rotation period by K, so that many clients fit on a few cores; every figure is
//! reported undilated as well. The seeder is another process: give it `--rechoke` K times
//! 10 s too (`datasets/scale.sh` does). Not dilated: peer exchange's 60 s and the snub and
//! connection timeouts, which only make a dilated crowd find peers sooner in undilated time.
//! A client leaves (stops its engine, removes its storage) when its replay ends, as a mount
//! of `datasets/bench.sh`'s crowd is unmounted after its replay.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vmt_appliance::replay::{replay_on, ReadTarget, ReplayParams, ReplayReport};
use vmt_formats::trace::Trace;
use vmt_fs::{FsError, Node, ReadReply};
use vmt_model::scheduler::Strategy;

use crate::cpu::{BusyWindows, CpuSample, CpuUse};
use crate::params::{RuntimeError, RuntimeParams, DEFAULT_WINDOW};
use crate::report::{StallSummary, Status};
use crate::streaming::{Streaming, SwarmFs};

/// What to run.
#[derive(Clone, Debug)]
pub struct CrowdParams {
    /// The image's `.torrent`.
    pub torrent: PathBuf,
    /// Profiles and Markov model (profile and markov strategies).
    pub bundle: Option<PathBuf>,
    /// Every client's strategy.
    pub strategy: Strategy,
    /// Traces; client i replays trace i mod len.
    pub traces: Vec<PathBuf>,
    /// Clients.
    pub clients: usize,
    /// The seeders every client dials.
    pub seeders: Vec<SocketAddr>,
    /// Clients upload to each other (swarm); `false` is client-server.
    pub upload: bool,
    /// Clients ask and serve urgent requests (`vmt_swarm::EngineConfig::urgent`).
    pub urgent: bool,
    /// The link rate each client stands for, bytes/s, in both directions; its engine runs at
    /// this divided by `dilation`. `None` = unlimited.
    pub link_rate: Option<u64>,
    /// The seeder's upload limit as set up (recorded in the results only), bytes/s as run.
    pub seed_rate: Option<u64>,
    /// Time dilation K (at least 1).
    pub dilation: u32,
    /// Think time at task boundaries, undilated.
    pub think: Duration,
    /// The clients' choke rotation period, undilated ([`crate::DEFAULT_RECHOKE`]).
    pub rechoke: Duration,
    /// Urgent uploads a client queues before it answers the next asker busy
    /// ([`crate::DEFAULT_BUSY_BACKLOG`]).
    pub busy_backlog: usize,
    /// Other clients each client dials (the next ones, round the ring); they dial back.
    pub peers_per_client: usize,
    /// Between two clients' starts, undilated (zero: a flash crowd).
    pub stagger: Duration,
    /// Where the clients' storage goes (`c<i>` each, removed when the client leaves).
    pub dir: PathBuf,
    /// The address clients listen on (port chosen by the system). On a loopback IPv4 address
    /// each client takes its own, counting up from the next one (127.0.0.1 gives the clients
    /// 127.0.0.2, .3, ...): a client dials from where it listens, so every peer sees each
    /// client as its own host, as in a real crowd. On one address for all, the engines'
    /// 16-incoming-per-address limit let the seeder, and each client, admit only 16 of them.
    pub bind: IpAddr,
    /// The original image: every read's bytes are compared with it.
    pub check_image: Option<PathBuf>,
    /// Plan handed to the engine at a time.
    pub window_bytes: u64,
}

/// Client `id`'s address (it listens and dials from it): its own on loopback IPv4 (see
/// [`CrowdParams::bind`]).
fn client_ip(bind: IpAddr, id: usize) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let next = u32::from(v4).saturating_add(1 + id as u32);
            // Stay inside 127.0.0.0/8 (16 million clients).
            IpAddr::V4(std::net::Ipv4Addr::from(next.min(0x7fff_fffe)))
        }
        other => other,
    }
}

impl CrowdParams {
    /// `clients` clients replaying `traces` against `seeders`, with the mount's defaults.
    pub fn new(
        torrent: PathBuf,
        traces: Vec<PathBuf>,
        clients: usize,
        seeders: Vec<SocketAddr>,
        dir: PathBuf,
    ) -> CrowdParams {
        CrowdParams {
            torrent,
            bundle: None,
            strategy: Strategy::Stream,
            traces,
            clients,
            seeders,
            upload: true,
            urgent: false,
            link_rate: None,
            seed_rate: None,
            dilation: 1,
            think: Duration::ZERO,
            rechoke: crate::DEFAULT_RECHOKE,
            busy_backlog: crate::DEFAULT_BUSY_BACKLOG,
            peers_per_client: DEFAULT_PEERS_PER_CLIENT,
            stagger: Duration::ZERO,
            dir,
            bind: IpAddr::from([127, 0, 0, 1]),
            check_image: None,
            window_bytes: DEFAULT_WINDOW,
        }
    }

    /// Each engine's link rate: the rate a client stands for, divided by the dilation.
    fn dilated_rate(&self) -> Option<u64> {
        let k = u64::from(self.dilation.max(1));
        self.link_rate.map(|r| (r / k).max(1))
    }

    /// Client `id`'s mount parameters: the seeders and the next clients round the ring (by
    /// their listen addresses `addrs`), its links and choker dilated by K.
    fn client(&self, id: usize, addrs: &[Option<SocketAddr>]) -> RuntimeParams {
        let k = self.dilation.max(1);
        let rate = self.dilated_rate();
        let mut peers = self.seeders.clone();
        let others = self.peers_per_client.min(self.clients - 1);
        peers.extend((1..=others).filter_map(|j| addrs[(id + j) % self.clients]));
        RuntimeParams {
            torrent: self.torrent.clone(),
            bundle: self.bundle.clone(),
            strategy: self.strategy,
            profile: None,
            oracle_trace: None,
            mountpoint: PathBuf::new(),
            data_dir: self.dir.join(format!("c{id}")),
            peers,
            upload: self.upload,
            urgent: self.urgent,
            download_limit: rate,
            upload_limit: rate,
            window_bytes: self.window_bytes,
            threads: 0,
            access: crate::Access::Owner,
            read_timeout: None,
            dht: None,
            encryption: vmt_swarm::Encryption::default(),
            web_seeds: Vec::new(),
            web_seed_limit: None,
            rechoke_interval: self.rechoke * k,
            busy_backlog: self.busy_backlog,
            // Its own address, listening or not: the seeder admits 16 connections per address.
            dial_from: Some(client_ip(self.bind, id)),
        }
    }
}

/// Other clients each client dials by default: with the ones that dial it, about 16
/// neighbours, as many as a 16-client crowd of `bench.sh` has, without a full mesh of
/// N² connections at N = 128.
pub const DEFAULT_PEERS_PER_CLIENT: usize = 8;

/// One client's outcome: a line of the results (`datasets/README.md`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientResult {
    /// `"client"`.
    pub kind: String,
    /// Client index.
    pub id: usize,
    /// `swarm` or `cs`.
    pub mode: String,
    /// Strategy.
    pub strategy: String,
    /// The replayed trace's label and run (`walk-13`).
    pub trace: String,
    /// Start after the run's start, undilated seconds.
    pub start_offset_s: f64,
    /// Completion, undilated seconds.
    pub completion_s: f64,
    /// Stall, undilated seconds.
    pub stall_s: f64,
    /// The trace's own duration, undilated seconds.
    pub trace_s: f64,
    /// Think time inserted, undilated seconds.
    pub think_s: f64,
    /// Completion as measured.
    pub completion_dilated_s: f64,
    /// Stall as measured.
    pub stall_dilated_s: f64,
    /// Reads replayed.
    pub reads: u64,
    /// Their bytes.
    pub read_bytes: u64,
    /// Bytes from the seeders.
    pub from_seeder: u64,
    /// Bytes from other clients.
    pub from_peers: u64,
    /// Bytes from an HTTP origin (none yet).
    pub from_origin: u64,
    /// All bytes downloaded.
    pub downloaded: u64,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Reads whose bytes differed from the image (with a check image).
    pub mismatches: u64,
    /// Reads that waited for missing blocks, as measured (dilated seconds): how the stall
    /// is made, many short waits or a few long ones.
    pub waits: StallSummary,
    /// Bytes received twice or more (urgent and endgame copies, withdrawn requests).
    pub duplicate: u64,
    /// Pieces an injecting seeder declined this client.
    pub declines: u64,
    /// Urgent requests this client sent.
    pub urgent_asked: u64,
    /// Urgent requests this client served.
    pub urgent_served: u64,
    /// Urgent requests this client answered busy.
    pub busy_sent: u64,
    /// Busy answers this client got.
    pub busy_received: u64,
    /// Every read succeeded, none differed from the check image, and storage never failed.
    pub verified: bool,
    /// Why the replay failed, if it did.
    pub error: Option<String>,
}

/// The run's line of the results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// `"run"`.
    pub kind: String,
    /// Clients.
    pub n: usize,
    /// `swarm` or `cs`.
    pub mode: String,
    /// Strategy.
    pub strategy: String,
    /// Think time, undilated seconds.
    pub think_s: f64,
    /// K.
    pub dilation: u32,
    /// Each client's limit as run, bytes/s (undilated: times K); null = unlimited.
    pub client_rate: Option<u64>,
    /// The seeder's upload limit as run, bytes/s.
    pub seed_rate: Option<u64>,
    /// Other clients each dials.
    pub peers_per_client: usize,
    /// Image size.
    pub image_bytes: u64,
    /// Piece length.
    pub piece_len: u32,
    /// Wall time as measured.
    pub wall_s: f64,
    /// This process's CPU time.
    pub cpu_s: f64,
    /// Cores.
    pub cores: usize,
    /// `cpu_s / wall_s / cores`.
    pub cpu_frac: f64,
    /// The machine's busy share over the run.
    pub machine_busy: f64,
    /// 1-minute load at the start.
    pub load1_start: f64,
    /// 1-minute load at the end.
    pub load1_end: f64,
    /// The busiest second's busy share (see [`BusyWindows`]).
    pub busy_peak: f64,
    /// The share of the run's seconds the machine was saturated ([`crate::cpu::SATURATED`]).
    pub saturated_share: f64,
    /// `machine_busy` ≥ [`crate::cpu::SATURATED`], or saturated for
    /// [`crate::cpu::SATURATED_SHARE`] of its seconds: rejected.
    pub saturated: bool,
    /// Bytes the seeders sent (sum of `from_seeder`).
    pub seeder_bytes: u64,
    /// Mean completion, undilated seconds.
    pub mean_completion_s: f64,
    /// Mean stall, undilated seconds.
    pub mean_stall_s: f64,
    /// Clients whose replay failed or was not verified.
    pub failed: usize,
    /// The command line.
    pub command: String,
}

/// What happens along the way.
#[derive(Debug)]
pub enum CrowdEvent<'a> {
    /// Every client's engine is up; the replays start.
    Started {
        /// Clients.
        clients: usize,
    },
    /// A client finished and left.
    Done(&'a ClientResult),
}

/// Why a crowd could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrowdError {
    /// A client could not start.
    #[error("client {id}: {source}")]
    Client {
        /// Which.
        id: usize,
        /// Why.
        source: RuntimeError,
    },
    /// Nothing to replay, or no client.
    #[error("{0}")]
    Config(String),
    /// A trace could not be read.
    #[error(transparent)]
    Trace(#[from] vmt_formats::trace::TraceError),
    /// A local file or socket.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        error: io::Error,
    },
}

/// Runs the crowd to the end of every replay (or until `cancel`), reporting each client as it
/// leaves; returns every client's line and the run's line (with `command`).
pub async fn run(
    params: CrowdParams,
    command: String,
    cancel: CancellationToken,
    mut on_event: impl FnMut(CrowdEvent<'_>),
) -> Result<(Vec<ClientResult>, RunResult), CrowdError> {
    if params.clients == 0 || params.traces.is_empty() {
        return Err(CrowdError::Config("no clients or no traces".into()));
    }
    let traces = params
        .traces
        .iter()
        .map(|p| Trace::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let traces: Vec<Arc<Trace>> = traces.into_iter().map(Arc::new).collect();
    let k = params.dilation.max(1);
    let rate = params.dilated_rate();
    let io_err = |what: String| move |error: io::Error| CrowdError::Io { what, error };
    std::fs::create_dir_all(&params.dir).map_err(io_err(params.dir.display().to_string()))?;
    // Every listener first, so each client knows the others' addresses when it starts.
    let mut listeners = Vec::with_capacity(params.clients);
    for id in 0..params.clients {
        listeners.push(if params.upload {
            let ip = client_ip(params.bind, id);
            let l = TcpListener::bind((ip, 0))
                .await
                .map_err(io_err(format!("binding {ip}")))?;
            Some(l)
        } else {
            None
        });
    }
    let addrs: Vec<Option<SocketAddr>> = listeners
        .iter()
        .map(|l| l.as_ref().and_then(|l| l.local_addr().ok()))
        .collect();
    let cpu0 = CpuSample::now();
    let mut starting = Vec::with_capacity(params.clients);
    for (id, listener) in listeners.into_iter().enumerate() {
        let rp = params.client(id, &addrs);
        // Its log lines (parked reads, above all) name their client; a span at warn level,
        // so that it is on whenever the warnings it names are (vmt-run's default filter).
        let span = tracing::warn_span!("client", id);
        starting.push(async move {
            Streaming::<Answer>::start(&rp, listener)
                .instrument(span)
                .await
                .map_err(|source| CrowdError::Client { id, source })
        });
    }
    let mut clients = Vec::with_capacity(params.clients);
    for s in starting {
        clients.push(s.await?);
    }
    let (image_bytes, piece_len) = {
        let e = clients[0].engine();
        (e.torrent().total_length(), e.layout().piece_len())
    };
    on_event(CrowdEvent::Started {
        clients: params.clients,
    });
    // Cancelling answers every parked read, so that the replays end at once.
    let all_fs: Vec<Arc<SwarmFs<Answer>>> = clients.iter().map(|c| c.fs().clone()).collect();
    let closer = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            for fs in all_fs {
                fs.close();
            }
        })
    };
    // The machine's busy share second by second while the replays run (`BusyWindows`).
    // A late tick waits a whole second again, so no window is a sliver of jiffies.
    let windows = Arc::new(Mutex::new(BusyWindows::new(&CpuSample::now())));
    let sampler = {
        let windows = windows.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                let sample = CpuSample::now();
                windows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .tick(&sample);
            }
        })
    };
    let start = Instant::now();
    let mode = if params.upload { "swarm" } else { "cs" };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    // A seeder that learned a client's address over PEX may dial it: that connection comes
    // from the seeder's host with another port. Its host says it is the seeder's, unless a
    // client shares that host.
    let seeder_hosts: Vec<IpAddr> = params
        .seeders
        .iter()
        .map(|s| s.ip())
        .filter(|ip| !(0..params.clients).any(|i| client_ip(params.bind, i) == *ip))
        .collect();
    for (id, core) in clients.into_iter().enumerate() {
        let trace = traces[id % traces.len()].clone();
        let offset = params.stagger * (id as u32) * k;
        let check = match &params.check_image {
            Some(p) => Some(File::open(p).map_err(io_err(p.display().to_string()))?),
            None => None,
        };
        let replay = ReplayParams {
            think: params.think,
            cold: false,
            dilation: k,
        };
        let seeders = params.seeders.clone();
        let seeder_hosts = seeder_hosts.clone();
        let dir = params.dir.join(format!("c{id}"));
        let tx = done_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let target = Target::new(core.fs().clone(), check);
            let mismatches = target.mismatches.clone();
            let t = trace.clone();
            let report = tokio::task::spawn_blocking(move || replay_on(&t, &target, replay))
                .await
                .map_err(|e| io::Error::other(e.to_string()))
                .and_then(|r| r);
            let (status, stopped) = core.stop().await;
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            let _ = tx.send(client_result(
                id,
                &trace,
                offset.as_secs_f64() / f64::from(k),
                report,
                &status,
                stopped.err(),
                &seeders,
                &seeder_hosts,
                mismatches.load(Ordering::Relaxed),
                k,
            ));
        });
    }
    drop(done_tx);
    let mut results = Vec::with_capacity(params.clients);
    while let Some(r) = done_rx.recv().await {
        on_event(CrowdEvent::Done(&r));
        results.push(r);
    }
    closer.abort();
    sampler.abort();
    let wall = start.elapsed();
    let cpu = cpu0.until(&CpuSample::now());
    let windows = *windows.lock().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.id);
    let mean = |f: fn(&ClientResult) -> f64| {
        results.iter().map(f).sum::<f64>() / results.len().max(1) as f64
    };
    let run = RunResult {
        kind: "run".into(),
        n: params.clients,
        mode: mode.into(),
        strategy: params.strategy.to_string(),
        think_s: params.think.as_secs_f64(),
        dilation: k,
        client_rate: rate,
        seed_rate: params.seed_rate,
        peers_per_client: params.peers_per_client,
        image_bytes,
        piece_len,
        wall_s: wall.as_secs_f64(),
        seeder_bytes: results.iter().map(|r| r.from_seeder).sum(),
        mean_completion_s: mean(|r| r.completion_s),
        mean_stall_s: mean(|r| r.stall_s),
        failed: results.iter().filter(|r| !r.verified).count(),
        command,
        ..RunResult::cpu(&cpu, &windows)
    };
    for r in &mut results {
        r.mode = mode.into();
        r.strategy = params.strategy.to_string();
    }
    Ok((results, run))
}

impl RunResult {
    /// The CPU fields from `cpu` and `windows`; the rest empty.
    fn cpu(cpu: &CpuUse, windows: &BusyWindows) -> RunResult {
        RunResult {
            kind: String::new(),
            n: 0,
            mode: String::new(),
            strategy: String::new(),
            think_s: 0.0,
            dilation: 1,
            client_rate: None,
            seed_rate: None,
            peers_per_client: 0,
            image_bytes: 0,
            piece_len: 0,
            wall_s: cpu.wall_s,
            cpu_s: cpu.cpu_s,
            cores: cpu.cores,
            cpu_frac: cpu.cpu_frac,
            machine_busy: cpu.machine_busy,
            load1_start: cpu.load1.0,
            load1_end: cpu.load1.1,
            busy_peak: windows.peak,
            saturated_share: windows.saturated_share(),
            saturated: cpu.saturated() || windows.saturated_phase(),
            seeder_bytes: 0,
            mean_completion_s: 0.0,
            mean_stall_s: 0.0,
            failed: 0,
            command: String::new(),
        }
    }
}

/// A client's line from its replay and its final status.
#[allow(clippy::too_many_arguments)]
fn client_result(
    id: usize,
    trace: &Trace,
    start_offset_s: f64,
    report: io::Result<ReplayReport>,
    status: &Status,
    stopped: Option<RuntimeError>,
    seeders: &[SocketAddr],
    seeder_hosts: &[IpAddr],
    mismatches: u64,
    k: u32,
) -> ClientResult {
    let from_seeder: u64 = status
        .peers
        .iter()
        .filter(|p| {
            p.addr
                .parse::<SocketAddr>()
                .is_ok_and(|a| seeders.contains(&a) || seeder_hosts.contains(&a.ip()))
        })
        .map(|p| p.downloaded)
        .sum();
    let (measured, error) = match report {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let error = error
        .or_else(|| status.failure.clone())
        .or_else(|| stopped.map(|e| e.to_string()));
    let undilated = measured.clone().map(|r| r.undilated(k));
    let f = |r: &Option<ReplayReport>, g: fn(&ReplayReport) -> f64| r.as_ref().map_or(0.0, g);
    ClientResult {
        kind: "client".into(),
        id,
        mode: String::new(),
        strategy: String::new(),
        trace: format!("{}-{}", trace.label, trace.run),
        start_offset_s,
        completion_s: f(&undilated, |r| r.completion_s),
        stall_s: f(&undilated, |r| r.stall_s),
        trace_s: f(&undilated, |r| r.trace_s),
        think_s: f(&undilated, |r| r.think_s),
        completion_dilated_s: f(&measured, |r| r.completion_s),
        stall_dilated_s: f(&measured, |r| r.stall_s),
        reads: measured.as_ref().map_or(0, |r| r.reads),
        read_bytes: measured.as_ref().map_or(0, |r| r.bytes),
        from_seeder,
        from_peers: status.downloaded.saturating_sub(from_seeder),
        from_origin: 0,
        downloaded: status.downloaded,
        uploaded: status.uploaded,
        mismatches,
        waits: status.stalls.clone(),
        duplicate: status.wasted_by.duplicate,
        declines: status.declines_received,
        urgent_asked: status.urgent_asked,
        urgent_served: status.urgent_served,
        busy_sent: status.busy_sent,
        busy_received: status.busy_received,
        verified: error.is_none() && mismatches == 0,
        error,
    }
}

/// What a headless read is answered with: the reply half ([`ReadReply`]) is handed to
/// [`ImageFs::read`](vmt_fs::ImageFs::read), the replay thread waits on the other. One per
/// client, reused for every read (its buffer keeps its capacity).
pub(crate) struct Answer(Arc<AnswerSlot>);

#[derive(Default)]
pub(crate) struct AnswerSlot {
    state: Mutex<AnswerState>,
    answered: Condvar,
}

struct AnswerState {
    done: bool,
    result: Result<(), i32>,
    data: Vec<u8>,
}

impl Default for AnswerState {
    fn default() -> AnswerState {
        AnswerState {
            done: false,
            result: Ok(()),
            data: Vec::new(),
        }
    }
}

impl ReadReply for Answer {
    fn data(self, bytes: &[u8]) {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        st.data.clear();
        st.data.extend_from_slice(bytes);
        st.result = Ok(());
        st.done = true;
        self.0.answered.notify_one();
    }

    fn error(self, error: FsError) {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        st.result = Err(error.errno());
        st.done = true;
        self.0.answered.notify_one();
    }
}

/// A client's image as a replay reads it: through the filesystem core, checked against the
/// original image when one is given.
struct Target {
    fs: Arc<SwarmFs<Answer>>,
    slot: Arc<AnswerSlot>,
    check: Option<(File, RefCell<Vec<u8>>)>,
    mismatches: Arc<AtomicU64>,
}

impl Target {
    fn new(fs: Arc<SwarmFs<Answer>>, check: Option<File>) -> Target {
        Target {
            fs,
            slot: Arc::default(),
            check: check.map(|f| (f, RefCell::new(Vec::new()))),
            mismatches: Arc::default(),
        }
    }
}

impl ReadTarget for Target {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.slot
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .done = false;
        let len = u32::try_from(buf.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.fs
            .read(Node::Image.ino(), offset, len, Answer(self.slot.clone()));
        let st = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = self
            .slot
            .answered
            .wait_while(st, |s| !s.done)
            .unwrap_or_else(|e| e.into_inner());
        st.result.map_err(io::Error::from_raw_os_error)?;
        if st.data.len() != buf.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&st.data);
        drop(st);
        if let Some((image, want)) = &self.check {
            let mut want = want.borrow_mut();
            want.resize(buf.len(), 0);
            FileExt::read_exact_at(image, &mut want, offset)?;
            if *want != *buf {
                self.mismatches.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crowd simulator (`vmt-train swarm-sim`) stands for these crowds, but the model layer
    /// cannot name the swarm layer's constants, so it repeats them; here both are in sight.
    #[test]
    fn the_simulator_repeats_the_engines_constants() {
        use vmt_model::swarm_sim::{BUSY_BACKLOG, QUEUE};
        let engine = vmt_swarm::EngineConfig::default();
        assert_eq!(BUSY_BACKLOG as usize, engine.busy_backlog);
        assert_eq!(QUEUE as usize, vmt_swarm::MIN_REQUEST_WINDOW);
    }

    /// Each loopback client gets its own address, counting up from the bind address; any
    /// other bind address is shared.
    #[test]
    fn each_loopback_client_has_its_own_address() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(client_ip(lo, 0), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(client_ip(lo, 300), IpAddr::from([127, 0, 1, 46]));
        let other = IpAddr::from([10, 0, 0, 7]);
        assert_eq!(client_ip(other, 5), other);
    }

    /// A dilated crowd must keep the choker's rotation in undilated time: at K=10 with the
    /// engine's 10 s, a slot moved every undilated second, and the crowd finished twice as
    /// fast as the simulator's (walk-14/16, N=32: 40 s against 83 s; 45 s at 1 s rotation).
    #[test]
    fn a_dilated_crowd_stretches_links_and_the_choker_by_k() {
        let addr = |p| Some(SocketAddr::from(([127, 0, 0, 1], p)));
        let addrs = [addr(1), addr(2), addr(3)];
        let mut p = CrowdParams::new(
            "t".into(),
            vec!["x".into()],
            3,
            vec![SocketAddr::from(([127, 0, 0, 1], 9))],
            "d".into(),
        );
        p.link_rate = Some(1_000_000);
        p.dilation = 10;
        p.peers_per_client = 1;
        let c = p.client(2, &addrs);
        assert_eq!(c.rechoke_interval, crate::DEFAULT_RECHOKE * 10);
        assert_eq!(c.download_limit, Some(100_000));
        assert_eq!(c.upload_limit, Some(100_000));
        assert_eq!(
            c.peers,
            vec![SocketAddr::from(([127, 0, 0, 1], 9)), addrs[0].unwrap()]
        );
        p.dilation = 1;
        assert_eq!(p.client(0, &addrs).rechoke_interval, crate::DEFAULT_RECHOKE);
        p.rechoke = Duration::from_secs(3);
        p.dilation = 10;
        assert_eq!(
            p.client(0, &addrs).rechoke_interval,
            Duration::from_secs(30)
        );
        // The busy backlog is a count of blocks, not a time: K leaves it alone.
        assert_eq!(c.busy_backlog, crate::DEFAULT_BUSY_BACKLOG);
        p.busy_backlog = 8;
        assert_eq!(p.client(0, &addrs).busy_backlog, 8);
    }

    /// Client-server clients do not listen, yet each dials from its own address, as the
    /// listening ones do: the seeder's per-address limit must see a crowd, not one host.
    #[test]
    fn a_client_that_does_not_listen_dials_from_its_own_address() {
        let mut p = CrowdParams::new(
            "t".into(),
            vec!["x".into()],
            40,
            vec![SocketAddr::from(([127, 0, 0, 1], 9))],
            "d".into(),
        );
        p.upload = false;
        let addrs = vec![None; 40];
        let from: Vec<_> = (0..40).map(|id| p.client(id, &addrs).dial_from).collect();
        assert_eq!(from[0], Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(from[39], Some(IpAddr::from([127, 0, 0, 41])));
        let distinct: std::collections::HashSet<_> = from.iter().collect();
        assert_eq!(distinct.len(), 40);
    }
}
