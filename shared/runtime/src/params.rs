//! What a mount is asked to do, and why it can fail.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use vmt_formats::image::ImageId;
use vmt_formats::trace::TraceError;
use vmt_fs::{Access, MountError, OverlayError};
use vmt_model::profile::BundleError;
use vmt_model::scheduler::{SchedulerError, Strategy};
use vmt_swarm::SwarmError;

/// Plan handed to the engine when none is given: 8 MiB, a little over half a second at
/// 100 Mbit/s, so the plan stays ahead of the link without naming what the belief may soon
/// revise.
pub const DEFAULT_WINDOW: u64 = 8 << 20;

/// The choker's rotation period unless told otherwise: the engine's, BitTorrent's usual 10 s.
pub const DEFAULT_RECHOKE: Duration = Duration::from_secs(10);

/// The engine's busy backlog unless told otherwise (`vmt_swarm::EngineConfig::busy_backlog`).
pub const DEFAULT_BUSY_BACKLOG: usize = vmt_swarm::BUSY_BACKLOG;

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
    /// Find peers through the DHT too; `None` runs no DHT node.
    pub dht: Option<vmt_swarm::DhtConfig>,
    /// Message Stream Encryption policy (see `vmt_swarm::Encryption`).
    pub encryption: vmt_swarm::Encryption,
    /// Serve verified pieces to other peers (swarm mode); `false` is client-server mode.
    pub upload: bool,
    /// Urgent requests (`vmt_swarm::EngineConfig::urgent`): ask peers for the blocks a read
    /// waits for urgently (choked too), and serve such requests first when we upload.
    pub urgent: bool,
    /// Download limit, bytes per second.
    pub download_limit: Option<u64>,
    /// Upload limit, bytes per second.
    pub upload_limit: Option<u64>,
    /// Web seed URLs (BEP 19) besides the torrent's `url-list`.
    pub web_seeds: Vec<String>,
    /// Most bytes per second the web seeds together may send; `None` = unlimited.
    pub web_seed_limit: Option<u64>,
    /// How often the choker moves an upload slot ([`DEFAULT_RECHOKE`]). A time-dilated crowd
    /// stretches it by its factor, so the rotation keeps its place in undilated time.
    pub rechoke_interval: Duration,
    /// Urgent uploads queued past which one more urgent request is answered busy
    /// (`vmt_swarm::EngineConfig::busy_backlog`; [`DEFAULT_BUSY_BACKLOG`]).
    pub busy_backlog: usize,
    /// The address dials go out from when the mount does not listen (`upload: false`);
    /// `None` leaves it to the system. A crowd on one host gives each client its own.
    pub dial_from: Option<IpAddr>,
    /// Bytes of the plan handed to the engine at a time (at least one block).
    pub window_bytes: u64,
    /// FUSE worker threads.
    pub threads: usize,
    /// Who besides the mounting user may use the mount (others read, never write).
    pub access: Access,
    /// How long a read may wait for missing blocks before failing with `EIO`; `None` waits
    /// as long as it takes (a hard mount).
    pub read_timeout: Option<Duration>,
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
