//! `vmt-run seed`: serve an image to the swarm until cancelled.
//!
//! [`SeedParams`] is what the user asked for; [`SeedParams::check`] refuses what cannot work
//! (no image file, a peer name that does not resolve) before anything slow, and gives a
//! [`ValidSeedParams`]. [`run`] then makes or loads the torrent (hashing the image), opens it
//! verified, and seeds on the listener it is handed until the cancellation token fires. The
//! caller binds the listener first, so a busy port fails at once rather than after minutes of
//! hashing, and tests can bind `127.0.0.1:0`. What happens along the way is reported as
//! [`SeedEvent`]s for the caller to draw.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vmt_formats::units::{human_bytes, Rate};
use vmt_swarm::{DhtConfig, Engine, EngineConfig, Storage, SwarmError, SwarmStats, Torrent};

use crate::make_torrent::{
    self, MakeTorrentError, TorrentEvent, TorrentParams, ValidTorrentParams, DEFAULT_PIECE_SIZE,
};
use crate::peer_addr::{resolve_all, PeerAddr, PeerAddrError};

/// How often a [`SeedEvent::Progress`] is reported: a seeder's figures change slowly.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// What to seed and how. Build with [`SeedParams::new`] and set what differs.
#[derive(Clone, Debug)]
pub struct SeedParams {
    /// The image file to serve (read-only).
    pub image: PathBuf,
    /// An existing `.torrent` to serve the image under (the image is verified against it);
    /// `None` creates one from the image.
    pub torrent: Option<PathBuf>,
    /// Piece size of a created torrent: a power of two from 16 KiB to 16 MiB. Default 256 KiB.
    pub piece_size: u32,
    /// Where to write a created torrent; `None` = `IMG.torrent`.
    pub torrent_out: Option<PathBuf>,
    /// Announce URLs to put in a created torrent; the seeder announces to them.
    pub trackers: Vec<String>,
    /// Web seed URLs (BEP 19 `url-list`) to put in a created torrent: where clients may
    /// fetch what no peer has over HTTP.
    pub web_seeds: Vec<String>,
    /// Upload limit; `None` = unlimited.
    pub upload_limit: Option<Rate>,
    /// Peers uploaded to at once. Default 4.
    pub upload_slots: usize,
    /// How often the choker moves one of those slots to the peer waiting longest. Default
    /// [`crate::DEFAULT_RECHOKE`].
    pub rechoke_interval: Duration,
    /// Peers to dial as well, for leechers that cannot dial us.
    pub peers: Vec<PeerAddr>,
    /// Announce (and find peers) through the DHT; `None` runs no DHT node. Default off.
    pub dht: Option<DhtConfig>,
    /// Message Stream Encryption policy (see `vmt_swarm::Encryption`). Default `prefer`.
    pub encryption: vmt_swarm::Encryption,
    /// Inject each piece into the crowd once (`EngineConfig::inject`). Default off.
    pub inject: bool,
    /// Serve urgent requests from peers we choke (`EngineConfig::urgent`). Default off; only
    /// with `inject` ([`SeedError::UrgentWithoutInject`]).
    pub urgent: bool,
}

impl SeedParams {
    /// Seeding `image` under a new torrent with the defaults above.
    pub fn new(image: PathBuf) -> SeedParams {
        SeedParams {
            image,
            torrent: None,
            piece_size: DEFAULT_PIECE_SIZE,
            torrent_out: None,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            upload_limit: None,
            upload_slots: EngineConfig::default().upload_slots,
            rechoke_interval: crate::DEFAULT_RECHOKE,
            peers: Vec::new(),
            dht: None,
            encryption: vmt_swarm::Encryption::default(),
            inject: false,
            urgent: false,
        }
    }

    /// Checks the image exists, resolves the peers, and checks what a created torrent needs
    /// (piece size, web seed URLs).
    pub fn check(self) -> Result<ValidSeedParams, SeedError> {
        if !self.image.is_file() {
            return Err(SeedError::NoImage { path: self.image });
        }
        if self.urgent && !self.inject {
            return Err(SeedError::UrgentWithoutInject);
        }
        let peers = resolve_all(&self.peers)?;
        let torrent = match self.torrent {
            Some(path) => TorrentSource::Load(path),
            None => TorrentSource::Create(
                TorrentParams {
                    piece_size: self.piece_size,
                    out: self.torrent_out,
                    trackers: self.trackers,
                    web_seeds: self.web_seeds,
                    ..TorrentParams::new(self.image.clone())
                }
                .check()?,
            ),
        };
        Ok(ValidSeedParams {
            image: self.image,
            torrent,
            config: EngineConfig {
                peers,
                upload_limit: self.upload_limit.map(Rate::bytes_per_s),
                upload_slots: self.upload_slots,
                rechoke_interval: self.rechoke_interval,
                dht: self.dht,
                encryption: self.encryption,
                inject: self.inject,
                urgent: self.urgent,
                ..Default::default()
            },
        })
    }
}

/// Where the torrent comes from.
#[derive(Clone, Debug)]
enum TorrentSource {
    Load(PathBuf),
    Create(ValidTorrentParams),
}

/// [`SeedParams`] that passed [`SeedParams::check`].
#[derive(Clone, Debug)]
pub struct ValidSeedParams {
    image: PathBuf,
    torrent: TorrentSource,
    config: EngineConfig,
}

/// Why seeding could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// The image is missing or not a file.
    #[error("{}: no such image file", path.display())]
    NoImage {
        /// The path given.
        path: PathBuf,
    },
    /// Urgent requests without injection. A plain seeder holds every piece, so every client
    /// it chokes would ask it for each block its reader waits for, and get its own copy: in a
    /// crowd (headless N=128) its uplink went to those copies and no client finished in 16
    /// minutes, where the same crowd with an injecting seeder took 10.
    #[error(
        "--urgent needs --inject: a plain seeder would send every client it chokes its own copy \
         of each block that client waits for, and a crowd stalls on those copies"
    )]
    UrgentWithoutInject,
    /// A peer address is unusable.
    #[error(transparent)]
    Peer(#[from] PeerAddrError),
    /// The torrent, the image or the engine failed.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The torrent could not be created (or hashing was interrupted).
    #[error(transparent)]
    MakeTorrent(#[from] MakeTorrentError),
    /// Verifying the image against the torrent did not finish.
    #[error("verifying the image: {0}")]
    Verify(#[from] tokio::task::JoinError),
}

/// What seeding reports as it goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum SeedEvent<'a> {
    /// Making the new torrent: hashing and writing it.
    Torrent(TorrentEvent<'a>),
    /// The image is verified and the engine serves it.
    Seeding {
        /// The torrent's name.
        name: &'a str,
        /// Its pieces.
        pieces: u32,
        /// Its info hash, hex.
        info_hash: String,
        /// Where peers are accepted.
        listen: Option<SocketAddr>,
        /// A magnet link to it (BEP 9): the seeder serves the info dictionary.
        magnet: String,
    },
    /// The figures, every [`PROGRESS_INTERVAL`].
    Progress(&'a SwarmStats),
}

impl fmt::Display for SeedEvent<'_> {
    /// The line to show for the event.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedEvent::Torrent(ev) => ev.fmt(f),
            SeedEvent::Seeding {
                name,
                pieces,
                info_hash,
                listen,
                magnet,
            } => {
                write!(f, "seeding {name} ({pieces} pieces, info hash {info_hash})")?;
                if let Some(addr) = listen {
                    write!(f, " on {addr}")?;
                }
                write!(f, "\nmagnet link: {magnet}")
            }
            SeedEvent::Progress(st) => write!(
                f,
                "uploaded {} to {} peer(s)",
                human_bytes(st.uploaded),
                st.connected
            ),
        }
    }
}

/// Seeds until `cancel` fires, accepting peers on `listener`; returns the final figures. See
/// the module doc.
pub async fn run(
    params: ValidSeedParams,
    listener: TcpListener,
    cancel: CancellationToken,
    mut on: impl FnMut(SeedEvent<'_>),
) -> Result<SwarmStats, SeedError> {
    let ValidSeedParams {
        image,
        torrent,
        config,
    } = params;
    let (torrent, verify) = match torrent {
        TorrentSource::Load(path) => (Torrent::load(&path)?, true),
        TorrentSource::Create(params) => (
            make_torrent::make(&params, &cancel, |ev| on(SeedEvent::Torrent(ev))).await?,
            false,
        ),
    };
    let (t2, img) = (torrent.clone(), image.clone());
    let storage =
        tokio::task::spawn_blocking(move || Storage::open_seed(&img, &t2, verify)).await??;
    let listen = listener.local_addr().ok();
    let engine = Engine::start(torrent, storage, Some(listener), config);
    on(SeedEvent::Seeding {
        name: engine.torrent().name(),
        pieces: engine.torrent().piece_count(),
        info_hash: engine.torrent().info_hash().as_string(),
        listen,
        magnet: engine.torrent().magnet_link(listen),
    });
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => {}
        }
        on(SeedEvent::Progress(&engine.stats()));
    }
    engine.shutdown().await?;
    Ok(engine.stats())
}
