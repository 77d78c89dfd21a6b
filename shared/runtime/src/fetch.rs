//! `vmt-run fetch`: download a whole image from the swarm (the `full` strategy), resuming a
//! previous run, optionally seeding afterwards.
//!
//! [`FetchParams::check`] loads the torrent, resolves the peers and refuses a fetch with no way
//! to find a peer; [`run`] opens the output (the sparse image plus its `OUT.vmtbits` bitmap, so
//! an interrupted fetch resumes), downloads on the engine until complete or cancelled, and
//! reports [`FetchEvent`]s for the caller to draw. Cancelling before completion is
//! [`FetchError::Interrupted`], with progress saved.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vmt_formats::units::{human_bytes, Rate};
use vmt_swarm::{
    DhtConfig, Engine, EngineConfig, ResumeReport, Storage, SwarmError, SwarmStats, Torrent,
};

use crate::paths;
use crate::peer_addr::{resolve_all, PeerAddr, PeerAddrError};
use crate::totals::Totals;

/// How often a [`FetchEvent::Progress`] is reported: often enough for a smooth bar.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// What to fetch and how. Build with [`FetchParams::new`] and set what differs.
#[derive(Clone, Debug)]
pub struct FetchParams {
    /// The image's `.torrent`.
    pub torrent: PathBuf,
    /// The image file to write; its bitmap is `OUT.vmtbits`.
    pub out: PathBuf,
    /// Peers to download from; may be empty when the torrent has trackers.
    pub peers: Vec<PeerAddr>,
    /// Keep seeding after the download completes, until cancelled. Default off.
    pub seed_after: bool,
    /// Upload to other peers; `false` is the client-server setting. Default on.
    pub upload: bool,
    /// Peer exchange (BEP 11). Default on.
    pub pex: bool,
    /// Download limit; `None` = unlimited.
    pub download_limit: Option<Rate>,
    /// Upload limit; `None` = unlimited.
    pub upload_limit: Option<Rate>,
    /// Find peers (and announce, when listening) through the DHT; `None` runs no DHT node.
    /// Default off.
    pub dht: Option<DhtConfig>,
    /// Web seed URLs (BEP 19) besides the torrent's `url-list`.
    pub web_seeds: Vec<String>,
    /// Most the web seeds together may send; `None` = unlimited.
    pub web_seed_limit: Option<Rate>,
    /// Message Stream Encryption policy (see `vmt_swarm::Encryption`). Default `prefer`.
    pub encryption: vmt_swarm::Encryption,
}

impl FetchParams {
    /// Fetching `torrent` into `out` with the defaults above and no peers.
    pub fn new(torrent: PathBuf, out: PathBuf) -> FetchParams {
        FetchParams {
            torrent,
            out,
            peers: Vec::new(),
            seed_after: false,
            upload: true,
            pex: true,
            download_limit: None,
            upload_limit: None,
            dht: None,
            web_seeds: Vec::new(),
            web_seed_limit: None,
            encryption: vmt_swarm::Encryption::default(),
        }
    }

    /// Loads the torrent and resolves the peers; a fetch needs a peer, a tracker, the DHT or a
    /// web seed.
    pub fn check(self) -> Result<ValidFetchParams, FetchError> {
        let torrent = Torrent::load(&self.torrent)?;
        if self.peers.is_empty()
            && torrent.trackers().is_empty()
            && self.dht.is_none()
            && torrent.web_seeds().is_empty()
            && self.web_seeds.is_empty()
        {
            return Err(FetchError::NoPeers);
        }
        let peers = resolve_all(&self.peers)?;
        Ok(ValidFetchParams {
            torrent,
            bitmap: paths::bitmap_for(&self.out),
            out: self.out,
            seed_after: self.seed_after,
            config: EngineConfig {
                peers,
                upload: self.upload,
                pex: self.pex,
                download_limit: self.download_limit.map(Rate::bytes_per_s),
                upload_limit: self.upload_limit.map(Rate::bytes_per_s),
                dht: self.dht,
                web_seeds: self.web_seeds,
                web_seed_limit: self.web_seed_limit.map(Rate::bytes_per_s),
                encryption: self.encryption,
                ..Default::default()
            },
        })
    }
}

/// [`FetchParams`] that passed [`FetchParams::check`].
#[derive(Clone, Debug)]
pub struct ValidFetchParams {
    torrent: Torrent,
    out: PathBuf,
    bitmap: PathBuf,
    seed_after: bool,
    config: EngineConfig,
}

impl ValidFetchParams {
    /// The torrent being fetched.
    pub fn torrent(&self) -> &Torrent {
        &self.torrent
    }

    /// Whether it seeds after the download until cancelled (`--seed`).
    pub fn seed_after(&self) -> bool {
        self.seed_after
    }
}

/// Why a fetch failed or stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No peer given and the torrent names no tracker.
    #[error(
        "no peers: give --peer HOST:PORT, --dht or --web-seed URL (the torrent has no trackers \
         and no web seeds)"
    )]
    NoPeers,
    /// A peer address is unusable.
    #[error(transparent)]
    Peer(#[from] PeerAddrError),
    /// The torrent, the output or the engine failed.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// Opening the output did not finish.
    #[error("opening the output: {0}")]
    Open(#[from] tokio::task::JoinError),
    /// Cancelled before the download completed; the bitmap keeps what was verified.
    #[error("interrupted with {have}/{total} pieces; progress saved in {}, run again to resume", bitmap.display())]
    Interrupted {
        /// Pieces verified.
        have: u32,
        /// Pieces in the torrent.
        total: u32,
        /// The bitmap file.
        bitmap: PathBuf,
    },
    /// Writing the output failed (a full or failing disk): fetching stopped.
    #[error(transparent)]
    Stopped(std::sync::Arc<SwarmError>),
}

/// The outcome of a completed fetch.
#[derive(Clone, Debug)]
pub struct FetchReport {
    /// The image file, complete and verified.
    pub out: PathBuf,
    /// Its length.
    pub total_bytes: u64,
    /// The engine's figures at completion (after seeding, with `--seed`).
    pub stats: SwarmStats,
    /// From the engine's start to the last piece verified.
    pub elapsed: Duration,
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "done: {} bytes verified in {}; {}; {} bytes wasted",
            self.total_bytes,
            self.out.display(),
            Totals::of(&self.stats, self.elapsed),
            self.stats.wasted,
        )
    }
}

/// What a fetch reports as it goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum FetchEvent<'a> {
    /// Pieces of an earlier run were found in the output (shown only when there are any).
    Resumed {
        /// The output.
        out: &'a Path,
        /// What the bitmap said.
        resume: &'a ResumeReport,
    },
    /// The figures, every [`PROGRESS_INTERVAL`] until complete.
    Progress(&'a SwarmStats),
    /// The image is complete and verified.
    Done(&'a FetchReport),
    /// Seeding goes on until cancelled (`seed_after`).
    Seeding,
}

impl fmt::Display for FetchEvent<'_> {
    /// The line to show for the event.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchEvent::Resumed { out, resume } => write!(
                f,
                "resumed {} pieces from {} ({} recorded, {} of {} unrecorded re-hashed ok)",
                resume.recorded + resume.rehashed_ok,
                out.display(),
                resume.recorded,
                resume.rehashed_ok,
                resume.rehashed
            ),
            FetchEvent::Progress(st) => f.write_str(&status_line(st)),
            FetchEvent::Done(report) => report.fmt(f),
            FetchEvent::Seeding => f.write_str("seeding until stopped"),
        }
    }
}

/// A fetch's status in a line: pieces in flight, peers (or why none), bytes uploaded.
pub fn status_line(st: &SwarmStats) -> String {
    format!(
        "{} in flight, {}, up {}",
        st.pieces.in_flight,
        st.peer_status(),
        human_bytes(st.uploaded)
    )
}

/// Fetches until complete (then seeds until `cancel` if asked), accepting peers on `listener`
/// too if given. See the module doc.
pub async fn run(
    params: ValidFetchParams,
    listener: Option<TcpListener>,
    cancel: CancellationToken,
    mut on: impl FnMut(FetchEvent<'_>),
) -> Result<FetchReport, FetchError> {
    let ValidFetchParams {
        torrent,
        out,
        bitmap,
        seed_after,
        config,
    } = params;
    let (t2, o2, b2) = (torrent.clone(), out.clone(), bitmap.clone());
    let (storage, resume) =
        tokio::task::spawn_blocking(move || Storage::open_download(&o2, &t2, &b2)).await??;
    if resume.recorded + resume.rehashed_ok > 0 || resume.rehashed > 0 {
        on(FetchEvent::Resumed {
            out: &out,
            resume: &resume,
        });
    }
    let total_bytes = torrent.total_length();
    let started = Instant::now();
    let engine = Engine::start(torrent, storage, listener, config);
    while !engine.is_complete() {
        tokio::select! {
            _ = cancel.cancelled() => {
                engine.shutdown().await?;
                let st = engine.stats();
                return Err(FetchError::Interrupted {
                    have: st.pieces.have,
                    total: st.total_pieces,
                    bitmap,
                });
            }
            _ = engine.failed() => {
                if let Err(e) = engine.shutdown().await {
                    tracing::warn!("stopping the swarm engine: {e}");
                }
                let failure = engine.failure().expect("failed() returns once it is set");
                return Err(FetchError::Stopped(failure));
            }
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => {}
        }
        on(FetchEvent::Progress(&engine.stats()));
    }
    engine.flush()?;
    let mut report = FetchReport {
        out,
        total_bytes,
        stats: engine.stats(),
        elapsed: started.elapsed(),
    };
    on(FetchEvent::Done(&report));
    if seed_after {
        on(FetchEvent::Seeding);
        cancel.cancelled().await;
    }
    engine.shutdown().await?;
    report.stats = engine.stats();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::{SeedEvent, SeedParams};

    /// The very functions `vmt-run seed` and `fetch` call, on loopback: the fetch names its peer
    /// `localhost:PORT`, gets the image byte for byte, and a second fetch resumes everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seed_and_fetch_by_host_name() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("app.img");
        let data: Vec<u8> = (0..3 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&image, &data).unwrap();
        let seed_params = SeedParams {
            piece_size: 64 << 10,
            ..SeedParams::new(image.clone())
        }
        .check()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop_seed = CancellationToken::new();
        let (seeding_tx, seeding_rx) = tokio::sync::oneshot::channel();
        let mut seeding_tx = Some(seeding_tx);
        let seeder = tokio::spawn(crate::seed::run(
            seed_params,
            listener,
            stop_seed.clone(),
            move |ev| {
                if let SeedEvent::Seeding { .. } = ev {
                    let _ = seeding_tx.take().map(|tx| tx.send(()));
                }
            },
        ));
        tokio::time::timeout(Duration::from_secs(30), seeding_rx)
            .await
            .expect("the seeder starts")
            .unwrap();
        let torrent = paths::torrent_for(&image);
        let out = dir.path().join("got.img");
        let fetch = || {
            FetchParams {
                peers: vec![format!("localhost:{port}").parse().unwrap()],
                ..FetchParams::new(torrent.clone(), out.clone())
            }
            .check()
            .unwrap()
        };
        let mut done = 0;
        let report = tokio::time::timeout(
            Duration::from_secs(60),
            run(fetch(), None, CancellationToken::new(), |ev| {
                done += matches!(ev, FetchEvent::Done(_)) as u32;
            }),
        )
        .await
        .expect("the fetch completes")
        .unwrap();
        assert_eq!(done, 1);
        assert_eq!(report.total_bytes, data.len() as u64);
        assert_eq!(report.stats.downloaded, data.len() as u64);
        assert!(std::fs::read(&out).unwrap() == data);
        let mut resumed = None;
        let again = run(fetch(), None, CancellationToken::new(), |ev| {
            if let FetchEvent::Resumed { resume, .. } = ev {
                resumed = Some(resume.recorded);
            }
        })
        .await
        .unwrap();
        assert_eq!(again.stats.downloaded, 0, "everything was resumed");
        assert_eq!(resumed, Some(48));
        stop_seed.cancel();
        let seeded = seeder.await.unwrap().unwrap();
        assert_eq!(seeded.uploaded, data.len() as u64);
    }

    #[test]
    fn a_fetch_needs_a_peer_or_a_tracker() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("app.img");
        std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let t = rt
            .block_on(Torrent::create(&image, 1 << 16, Vec::new()))
            .unwrap();
        let path = dir.path().join("app.torrent");
        t.save(&path).unwrap();
        let params = FetchParams::new(path.clone(), dir.path().join("out.img"));
        assert!(matches!(params.clone().check(), Err(FetchError::NoPeers)));
        let unresolvable = FetchParams {
            peers: vec!["no-such-host.invalid:1".parse().unwrap()],
            ..params
        };
        let e = unresolvable.check().unwrap_err();
        assert!(matches!(e, FetchError::Peer(_)), "{e:?}");
        assert!(e.to_string().contains("no-such-host.invalid:1"), "{e}");
    }
}
