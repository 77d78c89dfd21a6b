//! `--magnet`: the commands' `.torrent` from a magnet link, fetched once and kept.
//!
//! [`resolve`] turns a magnet link into a `.torrent` file at a path the command chose (beside
//! its output), so everything after it goes on exactly as with `--torrent`, and a restart
//! reads that file instead of asking peers again. The metadata comes from the link's `x.pe`
//! peers, the `--peer`s and the link's trackers (plus `--tracker`s), through
//! [`vmt_swarm::fetch_metadata`]: the info dictionary is checked against the info hash, and a
//! vmt block-hash table against the root the info dictionary pins.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vmt_swarm::{fetch_metadata, Magnet, MetadataError, MetadataRequest, SwarmError, Torrent};

use crate::peer_addr::{resolve_all, PeerAddr, PeerAddrError};

/// How long peers get to send the metadata: a tracker's first answer plus a few peers tried.
pub const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(60);

/// A magnet link and where its torrent goes.
#[derive(Clone, Debug)]
pub struct MagnetParams {
    /// The link.
    pub magnet: Magnet,
    /// Peers besides the link's `x.pe`.
    pub peers: Vec<PeerAddr>,
    /// Trackers besides the link's `tr`.
    pub trackers: Vec<String>,
    /// Where the torrent is written, and read back on a restart.
    pub torrent: PathBuf,
    /// Give up fetching after this long.
    pub timeout: Duration,
    /// Which handshakes the metadata fetch dials (`--encryption`).
    pub encryption: vmt_swarm::Encryption,
}

/// The torrent a magnet link resolved to.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The `.torrent` file, for the command's `torrent` parameter.
    pub torrent: PathBuf,
    /// The link's `x.pe` peers, for the command's peers (the `--peer`s are there already).
    pub peers: Vec<PeerAddr>,
    /// How long the fetch took; `None` when an earlier run's torrent was read.
    pub fetched_in: Option<Duration>,
}

/// Why a magnet link gave no torrent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MagnetSourceError {
    /// An `x.pe` or `--peer` is unusable.
    #[error(transparent)]
    Peer(#[from] PeerAddrError),
    /// No peer sent usable metadata.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The torrent kept from an earlier run cannot be read.
    #[error("{}: kept from an earlier run of this magnet link, but unreadable (remove it to fetch again)", path.display())]
    Kept {
        /// The file.
        path: PathBuf,
        /// Why (boxed: the error type stays small).
        #[source]
        source: Box<SwarmError>,
    },
    /// The file at the torrent's path is another swarm's torrent.
    #[error("{} is the torrent of swarm {found}, not of the magnet link's {wanted}: give another --torrent path", path.display())]
    OtherSwarm {
        /// The file.
        path: PathBuf,
        /// Its info hash.
        found: String,
        /// The link's.
        wanted: String,
    },
    /// Writing the torrent failed.
    #[error("writing the torrent fetched from the magnet link")]
    Save(#[source] Box<SwarmError>),
}

/// Where `fetch` keeps the torrent of a magnet link when not told: `OUT.torrent` beside the
/// image it writes.
pub fn torrent_beside(out: &Path) -> PathBuf {
    crate::paths::torrent_for(out)
}

/// Where a mount keeps the torrent of `magnet` when not told: `<info hash>.torrent` in the
/// current directory (the mount's data directory then sits beside it).
pub fn default_torrent_path(magnet: &Magnet) -> PathBuf {
    PathBuf::from(format!("{}.torrent", magnet.info_hash.as_string()))
}

/// See the module doc.
pub async fn resolve(
    params: MagnetParams,
    cancel: CancellationToken,
) -> Result<Resolved, MagnetSourceError> {
    let link_peers: Vec<PeerAddr> = params
        .magnet
        .peers
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    if let Some(kept) = kept(&params.torrent, &params.magnet)? {
        return Ok(Resolved {
            torrent: kept,
            peers: link_peers,
            fetched_in: None,
        });
    }
    let mut peers = resolve_all(&link_peers)?;
    peers.extend(resolve_all(&params.peers)?);
    let mut trackers = params.magnet.trackers.clone();
    for t in params.trackers {
        if !trackers.contains(&t) {
            trackers.push(t);
        }
    }
    let started = Instant::now();
    let torrent = fetch_metadata(
        MetadataRequest {
            info_hash: params.magnet.info_hash,
            peers,
            trackers,
            timeout: params.timeout,
            encryption: params.encryption,
        },
        cancel,
    )
    .await?;
    torrent
        .save(&params.torrent)
        .map_err(|e| MagnetSourceError::Save(Box::new(e)))?;
    Ok(Resolved {
        torrent: params.torrent,
        peers: link_peers,
        fetched_in: Some(started.elapsed()),
    })
}

/// The torrent an earlier run kept at `path`, if there is one; an error if the file is there
/// but unreadable or of another swarm (never overwritten: it may be the user's).
fn kept(path: &Path, magnet: &Magnet) -> Result<Option<PathBuf>, MagnetSourceError> {
    if !path.exists() {
        return Ok(None);
    }
    let t = Torrent::load(path).map_err(|source| MagnetSourceError::Kept {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    if t.info_hash() != magnet.info_hash {
        return Err(MagnetSourceError::OtherSwarm {
            path: path.to_owned(),
            found: t.info_hash().as_string(),
            wanted: magnet.info_hash.as_string(),
        });
    }
    Ok(Some(path.to_owned()))
}
