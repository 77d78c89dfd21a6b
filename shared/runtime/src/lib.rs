//! The vmt-run runtime: an appliance image served through FUSE while it streams from the swarm.
//!
//! [`Runtime::start`] opens the local piece store (sparse image + verified-piece bitmap in the
//! data directory), starts the swarm [`Engine`], and mounts an [`ImageFs`] whose pristine source
//! is the swarm and whose observer is the planner: every read feeds the online
//! belief, and the belief becomes the engine's plan. A read of a missing piece demands it and
//! parks its reply; other reads go on; the reply is answered when the piece is verified.
//! Writes go to the persistent copy-on-write overlay in the data directory, flushed on `fsync`
//! and every second, so pristine pieces stay byte-identical and keep being seeded.
//!
//! [`Runtime::shutdown`] stops in the order that loses nothing: refuse new parks, answer every
//! parked read (`EIO`: the mount is going away), unmount (which syncs the overlay), stop the
//! engine (which persists the bitmap), and return the final [`Status`] as the report.

#![deny(missing_docs)]

pub mod demo;
mod planner;
mod report;
mod source;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use report::{PeerTraffic, ProfileSwitch, StallSummary, Status};

use planner::{Planner, PlannerObserver};
use report::RuntimeStats;
use source::{SharedSource, SwarmSource};
use vmt_formats::image::ImageId;
use vmt_formats::trace::{Trace, TraceError};
use vmt_fs::fusefs::{self, ImageFs, ImageFsOptions, MountError, Mounted};
use vmt_fs::overlay::{Overlay, OverlayError};
use vmt_model::profile::{Bundle, BundleError};
use vmt_model::scheduler::{
    first_access_pieces, Scheduler, SchedulerError, SchedulerParams, Strategy,
};
use vmt_swarm::{Engine, EngineConfig, Storage, SwarmError, Torrent};

/// What to mount and how.
#[derive(Clone, Debug)]
pub struct RuntimeParams {
    /// The image's `.torrent`.
    pub torrent: PathBuf,
    /// Profiles and Markov model; required by `profile` and `markov`.
    pub bundle: Option<PathBuf>,
    /// How pieces are prefetched.
    pub strategy: Strategy,
    /// For `profile`: the profile to follow (name or index); `None` = the most likely first.
    pub profile: Option<String>,
    /// For `oracle`: the trace whose first-access order is the plan.
    pub oracle_trace: Option<PathBuf>,
    /// Where the image appears.
    pub mountpoint: PathBuf,
    /// Local piece store and overlay.
    pub data_dir: PathBuf,
    /// Peers to dial.
    pub peers: Vec<SocketAddr>,
    /// Serve verified pieces to other peers (swarm mode); `false` is client-server mode.
    pub upload: bool,
    /// Download limit, bytes per second.
    pub download_limit: Option<u64>,
    /// Upload limit, bytes per second.
    pub upload_limit: Option<u64>,
    /// Pieces in the plan handed to the engine at a time.
    pub window: usize,
    /// FUSE worker threads.
    pub threads: usize,
}

/// Why the runtime could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The torrent, storage or engine failed.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The bundle could not be read or belongs to another image.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The oracle trace could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The strategy cannot be set up.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// The overlay could not be opened.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// Mounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// An invalid combination of options.
    #[error("{0}")]
    Config(String),
    /// The bundle was trained on another image than the torrent serves.
    #[error("bundle {} belongs to another image ({bundle}) than torrent {} ({torrent})", bundle_path.display(), torrent_path.display())]
    WrongImage {
        /// The bundle file.
        bundle_path: PathBuf,
        /// Its image.
        bundle: ImageId,
        /// The torrent file.
        torrent_path: PathBuf,
        /// What the torrent says of its image.
        torrent: String,
    },
    /// A local file could not be created.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

/// A mounted, streaming appliance. See the module doc.
pub struct Runtime {
    engine: Engine,
    source: Arc<SwarmSource>,
    planner: Arc<Planner>,
    stats: Arc<RuntimeStats>,
    overlay: Arc<Overlay>,
    mounted: Option<Mounted>,
    served: PathBuf,
    strategy: Strategy,
    start: Instant,
    cancel: CancellationToken,
}

/// Checks `bundle` against what the torrent knows of its image.
fn check_bundle(
    bundle: &Bundle,
    bundle_path: &Path,
    torrent: &Torrent,
    torrent_path: &Path,
) -> Result<(), RuntimeError> {
    let size_ok = bundle.image.size == torrent.total_length();
    let sha_ok = torrent
        .image_sha256()
        .is_none_or(|sha| bundle.image.is_size_only() || sha == bundle.image.sha256);
    if size_ok && sha_ok {
        return Ok(());
    }
    let torrent_id = match torrent.image_sha256() {
        Some(sha) => ImageId {
            size: torrent.total_length(),
            sha256: sha,
        }
        .to_string(),
        None => format!("{} bytes", torrent.total_length()),
    };
    Err(RuntimeError::WrongImage {
        bundle_path: bundle_path.to_owned(),
        bundle: bundle.image,
        torrent_path: torrent_path.to_owned(),
        torrent: torrent_id,
    })
}

impl Runtime {
    /// Loads everything, starts the engine (accepting peers on `listener`), and mounts.
    pub async fn start(
        params: RuntimeParams,
        listener: Option<TcpListener>,
    ) -> Result<Runtime, RuntimeError> {
        if params.strategy == Strategy::Full {
            return Err(RuntimeError::Config(
                "strategy full downloads the whole image first: use `vmt-run fetch`, then run from the file".into(),
            ));
        }
        // Refuse a bad mountpoint before any network or disk work.
        fusefs::check_mountpoint(&params.mountpoint)?;
        let torrent = Torrent::load(&params.torrent)?;
        let piece_size = torrent.lengths().default_piece_length();
        let sched_params = SchedulerParams::new(piece_size);
        let (sched, names) = match params.strategy {
            Strategy::Profile | Strategy::Markov => {
                let path = params.bundle.as_ref().ok_or_else(|| {
                    RuntimeError::Config(format!("strategy {} needs --bundle", params.strategy))
                })?;
                let bundle = Bundle::load(path)?;
                check_bundle(&bundle, path, &torrent, &params.torrent)?;
                let mut sched = Scheduler::new(&bundle, params.strategy, sched_params)?;
                let names: Vec<String> = bundle.profiles.iter().map(|p| p.name.clone()).collect();
                if let Some(want) = &params.profile {
                    let index = names
                        .iter()
                        .position(|n| n == want)
                        .or_else(|| want.parse::<usize>().ok().filter(|i| *i < names.len()))
                        .ok_or_else(|| {
                            RuntimeError::Config(format!(
                                "no profile {want:?} in the bundle (it has: {})",
                                names.join(", ")
                            ))
                        })?;
                    sched.fix_profile(index)?;
                }
                (sched, names)
            }
            Strategy::Oracle => {
                let path = params.oracle_trace.as_ref().ok_or_else(|| {
                    RuntimeError::Config("strategy oracle needs --oracle-trace".into())
                })?;
                let trace = Trace::load(path)?;
                if trace.image.size != torrent.total_length() {
                    return Err(RuntimeError::Config(format!(
                        "{}: the trace's image is {} bytes, the torrent's {}",
                        path.display(),
                        trace.image.size,
                        torrent.total_length()
                    )));
                }
                let order = first_access_pieces(&trace, piece_size);
                (
                    Scheduler::oracle(torrent.total_length(), &order, sched_params)?,
                    Vec::new(),
                )
            }
            other => (
                Scheduler::without_bundle(torrent.total_length(), other, sched_params)?,
                Vec::new(),
            ),
        };
        std::fs::create_dir_all(&params.data_dir).map_err(|error| RuntimeError::Io {
            path: params.data_dir.clone(),
            error,
        })?;
        let image_path = params.data_dir.join("pristine.img");
        let bits = params.data_dir.join("pristine.vmtbits");
        let (t2, i2, b2) = (torrent.clone(), image_path.clone(), bits.clone());
        let (storage, _resume) =
            tokio::task::spawn_blocking(move || Storage::open_download(&i2, &t2, &b2))
                .await
                .map_err(|e| RuntimeError::Config(format!("opening storage: {e}")))??;
        // The overlay is tied to the torrent's identity: writes made on another image's blocks
        // would be garbage here.
        let overlay = Arc::new(Overlay::open(
            &params.data_dir.join("overlay"),
            ImageId {
                size: torrent.total_length(),
                sha256: torrent.identity().sha256,
            },
        )?);
        let config = EngineConfig {
            peers: params.peers.clone(),
            upload: params.upload,
            download_limit: params.download_limit,
            upload_limit: params.upload_limit,
            fetch_all: params.strategy.fills_background(),
            ..Default::default()
        };
        let file_name = torrent.name().to_string();
        let events = Arc::new(source::PieceEvents::default());
        let engine =
            Engine::start_with_events(torrent, storage, listener, config, Some(events.clone()));
        let stats = Arc::new(RuntimeStats::default());
        let source = Arc::new(SwarmSource::new(engine.clone(), stats.clone()));
        let _ = events.0.set(source.clone());
        let planner = Arc::new(Planner::new(
            sched,
            names,
            params.window.max(1),
            engine.clone(),
            stats.clone(),
        ));
        let fs = ImageFs::new(
            Arc::new(SharedSource(source.clone())),
            overlay.clone(),
            PlannerObserver(planner.clone()),
            ImageFsOptions {
                file_name: file_name.clone().into(),
                size: engine.torrent().total_length(),
                direct_io: false,
            },
        );
        let mounted = match fusefs::mount(fs, &params.mountpoint, "vmt-run", params.threads) {
            Ok(m) => m,
            Err(e) => {
                let _ = engine.shutdown().await;
                return Err(e.into());
            }
        };
        let cancel = CancellationToken::new();
        // Slide the plan window as pieces land.
        {
            let (planner, engine, cancel) = (planner.clone(), engine.clone(), cancel.clone());
            tokio::spawn(async move {
                let mut events = engine.subscribe();
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        ev = events.recv() => match ev {
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                // Coalesce a burst of pieces into one replan.
                                while events.try_recv().is_ok() {}
                                planner.replan();
                            }
                            Err(_) => break,
                        }
                    }
                }
            });
        }
        // Make overlay writes durable every second even without fsync from the guest.
        {
            let (overlay, cancel) = (overlay.clone(), cancel.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    if overlay.is_dirty() {
                        let o = overlay.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            if let Err(e) = o.sync() {
                                tracing::warn!("overlay sync: {e}");
                            }
                        })
                        .await;
                    }
                }
            });
        }
        Ok(Runtime {
            served: params.mountpoint.join(&file_name),
            engine,
            source,
            planner,
            stats,
            overlay,
            mounted: Some(mounted),
            strategy: params.strategy,
            start: Instant::now(),
            cancel,
        })
    }

    /// The image file as the mount shows it.
    pub fn served_path(&self) -> &Path {
        &self.served
    }

    /// The engine (for its listen address and stats).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A snapshot of progress, stalls, beliefs and traffic.
    pub fn status(&self) -> Status {
        let st = self.engine.stats();
        let (hits, misses) = self.stats.reads();
        Status {
            strategy: self.strategy.to_string(),
            uptime_s: self.start.elapsed().as_secs_f64(),
            pieces_present: st.pieces.have,
            pieces_in_flight: st.pieces.in_flight,
            pieces_total: st.total_pieces,
            read_hits: hits,
            read_misses: misses,
            writes: self.stats.writes(),
            parked_now: self.source.parked(),
            stalls: self.stats.stall_summary(),
            profile: self.planner.current(),
            profile_switches: self.planner.switches(),
            downloaded: st.downloaded,
            uploaded: st.uploaded,
            peers: st
                .peers
                .iter()
                .map(|p| PeerTraffic {
                    addr: p.addr.to_string(),
                    downloaded: p.downloaded,
                    uploaded: p.uploaded,
                })
                .collect(),
            peer_status: st.peer_status(),
            overlay_blocks: self.overlay.blocks(),
        }
    }

    /// Stops cleanly (see the module doc) and returns the final status.
    pub async fn shutdown(mut self) -> Result<Status, RuntimeError> {
        self.cancel.cancel();
        self.source.close();
        if let Some(m) = self.mounted.take() {
            let _ = tokio::task::spawn_blocking(move || m.unmount()).await;
        }
        if let Err(e) = self.overlay.sync() {
            tracing::warn!("overlay sync at shutdown: {e}");
        }
        let status = self.status();
        self.engine.shutdown().await?;
        Ok(status)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // An error path must not leave a mount behind.
        self.cancel.cancel();
        self.source.close();
        if let Some(m) = self.mounted.take() {
            let _ = m.unmount();
        }
    }
}

/// Serves [`Status`] as JSON to any HTTP request on `listener` until `cancel` fires; `status`
/// returning `None` (the runtime is shutting down) answers 503.
pub async fn serve_status(
    listener: TcpListener,
    status: impl Fn() -> Option<Status> + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let status = Arc::new(status);
    loop {
        let (mut sock, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let status = status.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // One request per connection; its content does not matter.
            let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
            let (code, body) = match status() {
                Some(st) => (
                    "200 OK",
                    serde_json::to_string_pretty(&st).unwrap_or_default(),
                ),
                None => ("503 Service Unavailable", "{}".to_string()),
            };
            let head = format!(
                "HTTP/1.0 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
