//! Hashing an image into its `.torrent`: `vmt-run torrent`, and the torrent `vmt-run seed`
//! creates when it is given none. One code path, so the two write the same bytes for the same
//! image and options.
//!
//! [`TorrentParams`] is what the user asked for; [`TorrentParams::check`] refuses what cannot
//! work (no image, a bad piece size, a web seed that is not an HTTP(S) URL) before minutes of
//! hashing, and gives a [`ValidTorrentParams`]. [`make`] hashes the image (SHA-1 per piece,
//! SHA-256 per block and of the whole image, in one pass on a blocking thread), adds the web
//! seeds (BEP 19 `url-list`, outside the info dictionary) and writes the file atomically,
//! reporting [`TorrentEvent`]s for the caller to draw.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vmt_formats::piece_size::{check_piece_size, BadPieceSize};
use vmt_formats::units::{human_bytes, Size};
use vmt_swarm::{SwarmError, Torrent};

use crate::paths;

/// How often [`TorrentEvent::Hashed`] is reported while the image is hashed.
pub const HASH_PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// The default piece size: 256 KiB, a few thousand pieces for an image of a GiB (a torrent of
/// tens of KiB of SHA-1s), small enough that a demanded block's piece completes soon.
pub const DEFAULT_PIECE_SIZE: u32 = 256 << 10;

/// The torrent to create. Build with [`TorrentParams::new`] and set what differs.
#[derive(Clone, Debug)]
pub struct TorrentParams {
    /// The image file to hash.
    pub image: PathBuf,
    /// Piece size: a power of two from 16 KiB to 16 MiB. Default [`DEFAULT_PIECE_SIZE`].
    pub piece_size: u32,
    /// Where to write the torrent; `None` = `IMG.torrent`.
    pub out: Option<PathBuf>,
    /// Announce URLs (one tier, BEP 12).
    pub trackers: Vec<String>,
    /// Web seed URLs (BEP 19 `url-list`): where clients fetch what no peer has over HTTP.
    pub web_seeds: Vec<String>,
}

impl TorrentParams {
    /// A torrent of `image` with the defaults above.
    pub fn new(image: PathBuf) -> TorrentParams {
        TorrentParams {
            image,
            piece_size: DEFAULT_PIECE_SIZE,
            out: None,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
        }
    }

    /// Checks the image exists, the piece size and the web seed URLs.
    pub fn check(self) -> Result<ValidTorrentParams, MakeTorrentError> {
        if !self.image.is_file() {
            return Err(MakeTorrentError::NoImage { path: self.image });
        }
        check_piece_size(self.piece_size)?;
        for url in &self.web_seeds {
            Torrent::check_web_seed(url).map_err(MakeTorrentError::WebSeed)?;
        }
        Ok(ValidTorrentParams {
            out: self.out.unwrap_or_else(|| paths::torrent_for(&self.image)),
            image: self.image,
            piece_size: self.piece_size,
            trackers: self.trackers,
            web_seeds: self.web_seeds,
        })
    }
}

/// [`TorrentParams`] that passed [`TorrentParams::check`].
#[derive(Clone, Debug)]
pub struct ValidTorrentParams {
    image: PathBuf,
    piece_size: u32,
    out: PathBuf,
    trackers: Vec<String>,
    web_seeds: Vec<String>,
}

impl ValidTorrentParams {
    /// Where the torrent is written.
    pub fn out(&self) -> &Path {
        &self.out
    }
}

/// Why a torrent could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MakeTorrentError {
    /// The image is missing or not a file.
    #[error("{}: no such image file", path.display())]
    NoImage {
        /// The path given.
        path: PathBuf,
    },
    /// The piece size is not one vmt serves.
    #[error(transparent)]
    PieceSize(#[from] BadPieceSize),
    /// A web seed URL is not an HTTP(S) URL; the message names it.
    #[error("{0}")]
    WebSeed(String),
    /// Hashing or writing the file failed.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// Stopped (Ctrl-C, SIGTERM) while hashing; nothing was written.
    #[error("interrupted while hashing the image; no torrent written")]
    Interrupted,
}

/// What making a torrent reports as it goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum TorrentEvent<'a> {
    /// Hashing starts (the slow part for a large image).
    Hashing {
        /// The image.
        image: &'a Path,
        /// Its size in bytes.
        total: u64,
        /// The piece size.
        piece_size: u32,
    },
    /// Hashing progress, every [`HASH_PROGRESS_INTERVAL`].
    Hashed {
        /// Bytes hashed so far.
        done: u64,
        /// Bytes in the image.
        total: u64,
    },
    /// The torrent was written.
    Written(&'a Path),
}

impl fmt::Display for TorrentEvent<'_> {
    /// The line to show for the event.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TorrentEvent::Hashing {
                image, piece_size, ..
            } => write!(
                f,
                "hashing {} into {} pieces...",
                image.display(),
                Size::from_bytes(u64::from(*piece_size))
            ),
            TorrentEvent::Hashed { done, total } => write!(
                f,
                "hashed {} of {}",
                human_bytes(*done),
                human_bytes(*total)
            ),
            TorrentEvent::Written(path) => write!(f, "wrote {}", path.display()),
        }
    }
}

/// Hashes the image, adds the web seeds and writes the torrent; returns it. Cancelling stops
/// the wait at once and writes nothing (the hashing thread finishes on its own).
pub async fn make(
    params: &ValidTorrentParams,
    cancel: &CancellationToken,
    mut on: impl FnMut(TorrentEvent<'_>),
) -> Result<Torrent, MakeTorrentError> {
    let ValidTorrentParams {
        image,
        piece_size,
        out,
        trackers,
        web_seeds,
    } = params;
    let total = std::fs::metadata(image).map_or(0, |m| m.len());
    on(TorrentEvent::Hashing {
        image,
        total,
        piece_size: *piece_size,
    });
    let hashed = Arc::new(AtomicU64::new(0));
    let h = hashed.clone();
    let create = Torrent::create_with_progress(image, *piece_size, trackers.clone(), move |n| {
        h.store(n, Ordering::Relaxed)
    });
    tokio::pin!(create);
    let t = loop {
        tokio::select! {
            t = &mut create => break t?,
            _ = tokio::time::sleep(HASH_PROGRESS_INTERVAL) => on(TorrentEvent::Hashed {
                done: hashed.load(Ordering::Relaxed),
                total,
            }),
            _ = cancel.cancelled() => return Err(MakeTorrentError::Interrupted),
        }
    };
    let t = if web_seeds.is_empty() {
        t
    } else {
        t.with_web_seeds(web_seeds)?
    };
    t.save(out)?;
    on(TorrentEvent::Written(out));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path) -> PathBuf {
        let image = dir.join("app.img");
        let data: Vec<u8> = (0..(1u32 << 20) + 777)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        std::fs::write(&image, data).unwrap();
        image
    }

    /// What cannot work is refused before hashing: a missing image, a piece size vmt does
    /// not serve, a web seed that is not HTTP(S).
    #[test]
    fn check_refuses_before_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let missing = TorrentParams::new(dir.path().join("nope.img")).check();
        assert!(matches!(missing, Err(MakeTorrentError::NoImage { .. })));
        let odd = TorrentParams {
            piece_size: 100_000,
            ..TorrentParams::new(img.clone())
        }
        .check();
        assert!(matches!(odd, Err(MakeTorrentError::PieceSize(_))));
        let ftp = TorrentParams {
            web_seeds: vec!["ftp://example.org/app.img".into()],
            ..TorrentParams::new(img.clone())
        }
        .check();
        assert!(
            matches!(&ftp, Err(MakeTorrentError::WebSeed(m)) if m.contains("ftp://")),
            "{ftp:?}"
        );
        let ok = TorrentParams::new(img.clone()).check().unwrap();
        assert_eq!(ok.out(), dir.path().join("app.img.torrent"));
    }

    /// The written file is the returned torrent, carries the web seeds and trackers, and
    /// reports progress up to the whole image.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn make_writes_the_torrent_with_its_web_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let out = dir.path().join("out.torrent");
        let params = TorrentParams {
            piece_size: 64 << 10,
            out: Some(out.clone()),
            trackers: vec!["http://127.0.0.1:1/announce".into()],
            web_seeds: vec!["http://127.0.0.1:2/".into()],
            ..TorrentParams::new(img.clone())
        }
        .check()
        .unwrap();
        let mut written = 0;
        let t = make(&params, &CancellationToken::new(), |ev| {
            written += matches!(ev, TorrentEvent::Written(p) if p == out) as u32;
        })
        .await
        .unwrap();
        assert_eq!(written, 1);
        assert_eq!(std::fs::read(&out).unwrap(), t.as_bytes());
        let loaded = Torrent::load(&out).unwrap();
        assert_eq!(loaded.web_seeds(), ["http://127.0.0.1:2/".to_string()]);
        assert_eq!(
            loaded.trackers(),
            ["http://127.0.0.1:1/announce".to_string()]
        );
        assert_eq!(loaded.total_length(), (1 << 20) + 777);
        assert_eq!(loaded.piece_count(), 17);
    }

    /// Cancelled while hashing: an error, and no file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let params = TorrentParams::new(img).check().unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let got = make(&params, &cancel, |_| {}).await;
        assert!(matches!(got, Err(MakeTorrentError::Interrupted)), "{got:?}");
        assert!(!params.out().exists());
    }
}
