//! The swarm engine: BitTorrent piece transfer with exact, application-driven piece priority.
//!
//! Stock librqbit picks pieces by file order and fixed stream windows; vmt needs to say, at any
//! moment, "this piece now" and "these next, in this order". So vmt speaks the peer-wire
//! protocol itself, on librqbit's building blocks (peer-protocol codec, core metainfo and piece
//! geometry, tracker comms, torrent creation), and stays a normal BEP 3 peer.
//!
//! # Overview
//! - [`Torrent`]: a parsed or freshly created single-file `.torrent`.
//! - [`BlockHashes`]: the SHA-256 of every 16 KiB block, pinned in vmt's torrents, so a block
//!   is verified on its own before its whole piece has arrived (see `BLOCKS.md`).
//! - [`Storage`]: the sparse image file plus the persisted bitmap of verified pieces.
//! - [`PiecePicker`]: the synchronous piece bookkeeping and priority rule (demand > plan >
//!   rarest first > endgame).
//! - [`Engine`]: connections, uploads, choking, rate limits; the API the runtime calls
//!   (`demand`, `set_plan`, `has_piece`, `on_piece`, `read_at`, `stats`).
//!
//! A demanded piece must not wait behind background blocks. Three things keep it in front:
//! each connection keeps only a delay-based window of requests outstanding (enough to fill the
//! link, a few blocks of queue; the `window` module), so little is queued at the remote when
//! a demand comes and unstarted background requests are cancelled; uploads keep their backlog
//! in user space (`TCP_NOTSENT_LOWAT`), where such a cancel still reaches them; and while a
//! demanded piece arrives, the other connections ask for nothing else, so it has the downlink.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vmt_swarm::SwarmError> {
//! use vmt_swarm::{Engine, EngineConfig, Storage, Torrent};
//! let torrent = Torrent::load("app.torrent".as_ref())?;
//! let (storage, _resume) = Storage::open_download("app.img".as_ref(), &torrent, "app.img.vmtbits".as_ref())?;
//! let config = EngineConfig { peers: vec!["127.0.0.1:6881".parse().unwrap()], ..Default::default() };
//! let engine = Engine::start(torrent, storage, None, config);
//! let piece = engine.torrent().piece(7).unwrap();
//! engine.demand(piece);
//! engine.wait_piece(piece).await?;
//! engine.shutdown().await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod bitmap;
mod block_hashes;
mod digest;
mod engine;
mod error;
mod peer;
mod picker;
mod ratelimit;
mod spawn;
mod stats;
mod storage;
#[cfg(test)]
mod testutil;
mod torrent;
mod tracker;
mod waiters;
mod window;

pub use bitmap::AtomicBitmap;
pub use block_hashes::{BlockHashes, BlockTableError, BLOCK_HASH_LEN, BLOCK_SIZE};
pub use engine::{Engine, EngineConfig};
pub use error::{Result, SwarmError};
pub use librqbit_core::lengths::{Lengths, ValidPieceIndex};
pub use peer::{MAX_STRIKES, MAX_UPLOAD_QUEUE};
pub use picker::{Pick, PickReason, PieceCounts, PiecePicker, PieceState};
pub use ratelimit::{RateLimiter, TokenBucket};
pub use stats::{DialState, DialStatus, PeerStats, SwarmStats};
pub use storage::{ResumeReport, Storage, BITMAP_KIND};
pub use torrent::{sha1, Torrent};
pub use waiters::PieceCallback;
