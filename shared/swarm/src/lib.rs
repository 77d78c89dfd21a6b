//! The swarm engine: BitTorrent transfer with exact, application-driven priority, down to the
//! 16 KiB block.
//!
//! Stock librqbit picks pieces by file order and fixed stream windows; vmt needs to say, at any
//! moment, "these blocks now" and "these next, in this order". So vmt speaks the peer-wire
//! protocol itself, on librqbit's building blocks (peer-protocol codec, core metainfo and piece
//! geometry, tracker comms, torrent creation), and stays a normal BEP 3 peer: to any other
//! client, its requests are ordinary block requests.
//!
//! # Overview
//! - [`Torrent`]: a parsed or freshly created single-file `.torrent`.
//! - [`BlockHashes`]: the SHA-256 of every 16 KiB block, pinned in vmt's torrents, so a block
//!   is verified on its own before its whole piece has arrived (see `BLOCKS.md`).
//! - [`Layout`]: how the image is cut into pieces (hashed, announced, seeded) and blocks
//!   (requested, verified alone with the table, waited for by reads).
//! - [`Storage`]: the sparse image file, its present blocks and verified pieces, and the
//!   persisted piece bitmap.
//! - [`PiecePicker`]: the synchronous fetch bookkeeping and priority rule (demanded blocks >
//!   planned blocks > rarest first > endgame).
//! - [`Magnet`] and [`fetch_metadata`]: a torrent from a magnet link, verified against its
//!   info hash, with the block-hash table its info dictionary pins.
//! - [`Engine`]: connections, uploads, choking, rate limits; the API the runtime calls
//!   (`demand_blocks`, `set_plan`, `has_block`, `read_at`, `stats`) and the [`SwarmEvents`] it
//!   publishes every readable block to.
//!
//! Inside, one concept a module: `connection` (a peer's socket: handshake, reader, writer),
//! `mse` (Message Stream Encryption, the obfuscated handshake most clients speak first, and
//! the `--encryption` policy), `peer_stream` (the socket after it: plaintext or RC4 in place),
//! `download` (the download side as a synchronous state machine, tested without sockets),
//! `peers` (the registry of connections: slots, strikes and bans per address, choking,
//! announcements), `state` (the torrent state connections share, its two readable-data
//! transitions, and a local storage failure that stops fetching), `wire` (the writer's
//! queue), `window` (the delay-based request window), `extension` (the BEP 10 handshake:
//! `reqq`, `v`, `p`, `metadata_size`), `pex` (peer exchange, BEP 11), `tracker` (announces;
//! addresses come back over a channel; port 0 when not listening), `reannounce` (when a
//! starved client announces before the tracker's interval), `webseed` (BEP 19 HTTP origins, used only where peers
//! fall short), `magnet` (BEP 9 links), `metadata` (a torrent from peers: the info dictionary
//! over ut_metadata, the block-hash table over vmt's own extension), `table_exchange` (that
//! extension, `vmt_block_hashes`, which the seeder side serves), `inject` (a seeder that puts
//! each piece into a flash crowd once, declining what the crowd holds with `vmt_elsewhere`). `STATE.md` beside these sources writes down the block and piece
//! lifecycle and the lock order.
//!
//! A demanded block must not wait behind background blocks. Four things keep it in front:
//! it is requested at once, beyond the window; the background requests still queued at that
//! peer are withdrawn (cancelled, and asked for again once the demanded block is in); each
//! connection keeps only a delay-based window of other requests outstanding (enough to fill
//! the link, a block or two of queue); and while a demanded block arrives, no connection asks
//! for anything else. Uploads keep their backlog in user space (`TCP_NOTSENT_LOWAT`), where a
//! cancel still reaches it.
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
mod busy;
mod connection;
mod dht;
mod digest;
mod download;
mod engine;
mod error;
mod events;
mod ext_frame;
mod extension;
mod have_block;
mod inject;
mod layout;
mod magnet;
mod map;
mod metadata;
mod mse;
mod peer_stream;
mod peers;
mod pex;
mod picker;
mod ratelimit;
mod reannounce;
mod sources;
mod spawn;
mod state;
mod stats;
mod storage;
mod table_exchange;
#[cfg(test)]
mod testutil;
mod torrent;
mod tracker;
mod urgent;
mod webseed;
mod window;
mod wire;

pub use bitmap::AtomicBitmap;
pub use block_hashes::{BlockHashes, BlockTableError, BLOCK_HASH_LEN, BLOCK_SIZE};
pub use busy::BUSY_BACKLOG;
pub use dht::DhtConfig;
pub use digest::sha1;
pub use engine::{Engine, EngineConfig};
pub use error::{PeerError, Result, SwarmError};
pub use events::SwarmEvents;
pub use extension::{CLIENT_VERSION, DEFAULT_REMOTE_REQQ};
pub use layout::Layout;
pub use librqbit_core::lengths::{Lengths, ValidPieceIndex};
pub use magnet::{Magnet, MagnetError};
pub use map::{MapCell, PieceMap};
pub use metadata::{fetch_metadata, MetadataError, MetadataRequest, MAX_METADATA_SIZE};
pub use mse::{Encryption, Form, MseError};
pub use peers::MAX_STRIKES;
pub use pex::{MAX_PEX_DIALS, MAX_PEX_PEERS, PEX_INTERVAL};
pub use picker::{Pick, PickReason, PieceCounts, PiecePicker, PieceState};
pub use ratelimit::{RateLimiter, TokenBucket};
pub use sources::{Source, SourceId, Sources, MAX_SOURCES};
pub use stats::{
    DialState, DialStatus, OriginState, PeerStats, SwarmStats, WastedBytes, WebSeedStats,
};
pub use storage::{ResumeReport, Storage, BITMAP_KIND};
pub use table_exchange::TABLE_EXTENSION;
pub use torrent::{TablePin, Torrent};
pub use webseed::{MAX_ORIGIN_STRIKES, MAX_REDIRECTS};
pub use window::MIN_DEPTH as MIN_REQUEST_WINDOW;
pub use wire::{ADVERTISED_REQQ, MAX_UPLOAD_QUEUE};
