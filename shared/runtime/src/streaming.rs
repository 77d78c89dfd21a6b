//! [`Streaming`]: an image streaming from the swarm into vmt-fs's core, with no FUSE: what a
//! mount ([`Runtime`](crate::Runtime)) and a headless client ([`crowd`](crate::crowd)) share.
//!
//! It opens the local store, starts the engine and the planner, builds the filesystem core
//! ([`ImageFs`]) over the swarm, and the reply pool that answers parked reads. Whoever holds
//! it answers reads through its own [`ReadReply`]: the FUSE adapter's, or a headless
//! replay's. Everything below the FUSE adapter is this one code path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Notify;
use vmt_formats::image::ImageId;
use vmt_fs::{ImageFs, ImageFsOptions, Overlay, ReadReply, ReplyPool, PRISTINE_WAIT};
use vmt_model::scheduler::Strategy;
use vmt_swarm::{Engine, EngineConfig, Storage, Torrent};

use crate::live::{LiveInputs, LISTED_WAITS};
use crate::params::{RuntimeError, RuntimeParams};
use crate::parked_watch;
use crate::planner::{self, Planner, ReadLog};
use crate::report::{OldestParked, PeerTraffic, Status};
use crate::schedule::scheduler;
use crate::source::{Arrivals, SwarmSource};
use crate::tasks::Tasks;

/// Threads answering parked reads: one pread and reply each, so two keep up with a link while
/// one waits on the disk.
const REPLY_THREADS: usize = 2;
/// How often overlay writes are made durable without an `fsync` from the guest.
const OVERLAY_SYNC: Duration = Duration::from_secs(1);
/// How long shutdown waits for the tasks.
const TASKS_DEADLINE: Duration = Duration::from_secs(5);

/// The filesystem core over the swarm, answering reads with `R`.
pub(crate) type SwarmFs<R> = ImageFs<SwarmSource, ReadLog, R>;

/// See the module doc.
pub(crate) struct Streaming<R: ReadReply> {
    engine: Engine,
    fs: Arc<SwarmFs<R>>,
    /// Answers parked reads off the network tasks; stopped after the filesystem is closed.
    replies: Option<ReplyPool>,
    planner: Arc<Planner>,
    writes: Arc<AtomicU64>,
    overlay: Arc<Overlay>,
    tasks: Tasks,
    strategy: Strategy,
    start: Instant,
}

impl<R: ReadReply> Streaming<R> {
    /// Loads everything and starts the engine (accepting peers on `listener`), the planner
    /// and the reply pool. The mount's own fields of `params` (mountpoint, threads, access)
    /// are not used.
    pub(crate) async fn start(
        params: &RuntimeParams,
        listener: Option<TcpListener>,
    ) -> Result<Streaming<R>, RuntimeError> {
        let torrent = Torrent::load(&params.torrent)?;
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
        // The plan is in the engine's blocks: what a read waits for, and (with the block-hash
        // table) what is verified alone.
        let block = storage.layout().block_len();
        let (sched, names) = scheduler(params, &torrent, block)?;
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
            dht: params.dht.clone(),
            encryption: params.encryption,
            upload: params.upload,
            urgent: params.urgent,
            download_limit: params.download_limit,
            upload_limit: params.upload_limit,
            fetch_all: params.strategy.fills_background(),
            web_seeds: params.web_seeds.clone(),
            web_seed_limit: params.web_seed_limit,
            rechoke_interval: params.rechoke_interval,
            busy_backlog: params.busy_backlog,
            dial_from: params.dial_from,
            ..Default::default()
        };
        let file_name = torrent.name().to_string();
        let (ready, ready_events) = vmt_fs::units_ready_channel();
        let arrived = Arc::new(Notify::new());
        let arrivals = Arc::new(Arrivals {
            ready,
            planner: arrived.clone(),
        });
        let engine = Engine::start_with_events(torrent, storage, listener, config, Some(arrivals));
        let start = Instant::now();
        let (reads, read_log) = tokio::sync::mpsc::unbounded_channel();
        let observer = ReadLog::new(reads, start);
        let writes = observer.writes();
        let window = (params.window_bytes / block as u64).max(1) as usize;
        let planner = Arc::new(Planner::new(sched, names, window, engine.clone()));
        let fs = Arc::new(ImageFs::new(
            SwarmSource::new(engine.clone()),
            overlay.clone(),
            observer,
            ImageFsOptions {
                file_name: file_name.into(),
                size: engine.torrent().total_length(),
                direct_io: false,
                pristine_wait: PRISTINE_WAIT,
                read_timeout: params.read_timeout,
            },
        ));
        let replies_fs = fs.clone();
        let replies = match ReplyPool::start(ready_events, REPLY_THREADS, move |first, count| {
            replies_fs.release(first, count)
        }) {
            Ok(r) => r,
            Err(error) => {
                fs.close();
                let _ = engine.shutdown().await;
                return Err(RuntimeError::Io {
                    path: params.data_dir.clone(),
                    error,
                });
            }
        };
        let tasks = Tasks::default();
        tasks.spawn("planner", planner::run(planner.clone(), read_log, arrived));
        tasks.spawn("overlay-sync", sync_overlay(overlay.clone()));
        tasks.spawn(
            "parked-watch",
            parked_watch::run(fs.clone(), engine.clone()),
        );
        // Issue 12, item 5: once local storage fails, reads of missing data fail at once.
        tasks.spawn(
            "storage-failure",
            fail_missing_on_failure(engine.clone(), fs.clone()),
        );
        Ok(Streaming {
            engine,
            fs,
            replies: Some(replies),
            planner,
            writes,
            overlay,
            tasks,
            strategy: params.strategy,
            start,
        })
    }

    /// The filesystem core: reads go to [`ImageFs::read`].
    pub(crate) fn fs(&self) -> &Arc<SwarmFs<R>> {
        &self.fs
    }

    /// The engine (for its listen address and stats).
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A snapshot of progress, stalls, beliefs and traffic.
    pub(crate) fn status(&self) -> Status {
        let st = self.engine.stats();
        let reads = self.fs.stats();
        Status {
            strategy: self.strategy.to_string(),
            uptime_s: self.start.elapsed().as_secs_f64(),
            pieces_present: st.pieces.have,
            pieces_in_flight: st.pieces.in_flight,
            pieces_total: st.total_pieces,
            blocks_present: st.blocks_present,
            blocks_total: st.total_blocks,
            blocks_verified_alone: self.engine.verifies_blocks(),
            read_hits: reads.hits,
            read_misses: reads.misses,
            writes: self.writes.load(Ordering::Relaxed),
            parked_now: self.fs.parked(),
            oldest_parked: self.fs.oldest_parked().map(OldestParked::from),
            stalls: reads.into(),
            profile: self.planner.current(),
            profile_switches: self.planner.switches(),
            downloaded: st.downloaded,
            useful: st.useful,
            origin_downloaded: st.origin_downloaded,
            origin_useful: st.origin_useful,
            web_seeds: st.web_seeds.clone(),
            wasted: st.wasted,
            wasted_by: st.wasted_by,
            hash_failures: st.hash_failures,
            banned: st.banned.iter().map(|ip| ip.to_string()).collect(),
            peers_evicted: st.evicted,
            peers_connected: st.connected,
            failure: st.failure.clone(),
            uploaded: st.uploaded,
            declines_received: st.declines_received,
            urgent_asked: st.urgent_asked,
            urgent_served: st.urgent_served,
            busy_sent: st.busy_sent,
            busy_received: st.busy_received,
            peers: st
                .peers
                .iter()
                .map(|p| PeerTraffic {
                    addr: p.addr.to_string(),
                    downloaded: p.downloaded,
                    uploaded: p.uploaded,
                    hash_failures: p.hash_failures,
                    banned: p.banned,
                })
                .collect(),
            peer_status: st.peer_status(),
            overlay_blocks: self.overlay.blocks(),
            unmount: None,
            fuse_left_behind: false,
        }
    }

    /// The profiles' names, in the belief's order.
    pub(crate) fn profile_names(&self) -> &[String] {
        self.planner.names()
    }

    /// The image's piece and block lengths.
    pub(crate) fn geometry(&self) -> (u32, u32) {
        let layout = self.engine.layout();
        (layout.piece_len(), layout.block_len())
    }

    /// Fills the live page's inputs (piece map, belief, longest waits), each under its own
    /// short lock and never two at once, and returns the status.
    pub(crate) fn sample(&self, into: &mut LiveInputs) -> Status {
        self.engine.piece_map(&mut into.map);
        self.planner.belief_into(&mut into.belief);
        self.fs.longest_parked(LISTED_WAITS, &mut into.parked);
        self.status()
    }

    /// The first half of a stop: stop planning, answer every parked read (`EIO`), stop the
    /// reply pool. A mount unmounts after this.
    pub(crate) async fn stop_serving(&mut self) {
        self.tasks.stop(TASKS_DEADLINE).await;
        self.fs.close();
        if let Some(replies) = self.replies.take() {
            let _ = tokio::task::spawn_blocking(move || replies.stop()).await;
        }
    }

    /// The second half: make the overlay durable, take the final status (passed to `amend`
    /// before the engine stops), stop the engine (which persists the piece bitmap).
    pub(crate) async fn finish(
        &self,
        amend: impl FnOnce(&mut Status),
    ) -> (Status, Result<(), RuntimeError>) {
        let overlay = self.overlay.clone();
        match tokio::task::spawn_blocking(move || overlay.sync()).await {
            Ok(Err(e)) => tracing::warn!("overlay sync at shutdown: {e}"),
            Err(e) => tracing::warn!("overlay sync at shutdown: {e}"),
            Ok(Ok(())) => {}
        }
        let mut status = self.status();
        amend(&mut status);
        let result = match self.engine.shutdown().await {
            // Issue 12, item 5: once local storage has failed (a full disk), the final bitmap
            // flush fails too; that loses nothing (pieces are re-hashed on resume) and the
            // failure is already the run's error, in the report.
            Err(e) if status.failure.is_some() => {
                tracing::warn!("stopping the swarm engine: {e}");
                Ok(())
            }
            other => other.map_err(RuntimeError::from),
        };
        (status, result)
    }

    /// Stops in the order that loses nothing ([`Streaming::stop_serving`], then
    /// [`Streaming::finish`]) and returns the final status even when a step failed.
    pub(crate) async fn stop(mut self) -> (Status, Result<(), RuntimeError>) {
        self.stop_serving().await;
        self.finish(|_| {}).await
    }

    /// Cancels the tasks and answers every parked read at once, without waiting: for error
    /// paths and drops.
    pub(crate) fn abort(&mut self) {
        self.tasks.cancel().cancel();
        self.fs.close();
        self.replies.take();
    }
}

impl<R: ReadReply> Drop for Streaming<R> {
    fn drop(&mut self) {
        self.abort();
    }
}

/// When the engine stops fetching (local storage failed), answers the reads parked on missing
/// blocks with EIO, and every later one at once: they would wait forever.
async fn fail_missing_on_failure<R: ReadReply>(engine: Engine, fs: Arc<SwarmFs<R>>) {
    engine.failed().await;
    let _ = tokio::task::spawn_blocking(move || fs.fail_missing()).await;
}

/// Makes overlay writes durable every [`OVERLAY_SYNC`] even without `fsync` from the guest.
async fn sync_overlay(overlay: Arc<Overlay>) {
    loop {
        tokio::time::sleep(OVERLAY_SYNC).await;
        if overlay.is_dirty() {
            let o = overlay.clone();
            match tokio::task::spawn_blocking(move || o.sync()).await {
                Ok(Err(e)) => tracing::warn!("overlay sync: {e}"),
                Err(e) => tracing::warn!("overlay sync: {e}"),
                Ok(Ok(())) => {}
            }
        }
    }
}
