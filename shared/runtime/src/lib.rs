//! vmt's runtime: an appliance image served through FUSE while it streams from the swarm, and
//! the library side of every `vmt-run` subcommand.
//!
//! [`Runtime::start`] opens the local store (sparse image, present blocks and verified pieces
//! in the data directory), starts the swarm engine, and mounts the filesystem whose pristine
//! source is the swarm; [`Runtime::shutdown`] undoes it in the order that loses nothing.
//!
//! # The way of one read
//!
//! ```text
//! FUSE read ─► vmt-fs core: blocks present? ── yes ─► pread + overlay patch + reply (FUSE thread)
//!     │ (observer: stamp + channel send)         no ─► park the reply on its missing blocks,
//!     ▼                                                 once; demand them (channel send)
//! planner task: belief, plan in blocks ─► Engine::set_plan          │
//!                                                                   ▼
//! engine intake task: picker.demand ─► connections: request the demanded blocks first, beyond
//!   the window ─► a block arrives: SHA-256 against the torrent's table, written, marked
//!   present ─► SwarmEvents::blocks_ready ─► reply-pool thread: unpark, pread + patch + reply
//! the rest of the piece follows at lower priority; whole, it is SHA-1 checked, announced
//! (HAVE) and seeded.
//! ```
//!
//! The FUSE threads never take the planner's or the engine's locks, and no reply is made on a
//! network task. `vmt-swarm`'s `STATE.md` has the lock order across the layers.
//!
//! # Layout
//! - `runtime` ([`Runtime`]): start, status, shutdown of a mount, asked by `params`
//!   ([`RuntimeParams`]); `source` adapts the engine to
//!   the filesystem (blocks as units, block events as releases); `planner` turns observed
//!   reads into the engine's plan on a task of its own; `schedule` builds the strategy's
//!   scheduler; `tasks` names, tracks and stops the runtime's tasks; `parked_watch` answers
//!   reads past `--read-timeout` or of killed processes, and logs long waits.
//! - [`mount`], [`seed`], [`fetch`]: `vmt-run mount`, `seed` and `fetch` from params to
//!   report, taking bound sockets and a cancellation token so tests run the same code.
//! - [`magnet`]: `--magnet`, the `.torrent` of a magnet link fetched from peers and kept, so
//!   the commands go on as with `--torrent`.
//! - [`make_torrent`]: `vmt-run torrent`, and the torrent `seed` creates: hash an image into
//!   its `.torrent` with trackers and web seeds.
//! - `streaming`: the streaming core a mount and a headless client share (engine, planner,
//!   filesystem core, reply pool); `runtime` adds the FUSE mount to it.
//! - [`crowd`]: `vmt-run replay-client`, many headless clients replaying traces in one
//!   process through that core; [`cpu`]: the CPU use of such a run.
//! - [`boot`]: `vmt-run boot`, a VM on the mounted image, as a session of the mount.
//! - [`demo`]: the embedded demo (`vmt-run demo`).
//! - [`peer_addr`]: `HOST:PORT` peers, resolved.
//! - [`totals`]: the closing line of `seed` and `fetch` (bytes, rates, peers, time).
//! - `report` ([`Status`]) and `status` ([`serve_status`], [`StatusAddr`]): the live and final
//!   report; `live` samples the runtime 4 times a second for the live page (`page/index.html`,
//!   embedded), which `status` serves with the JSON and streams as server-sent events.

#![deny(missing_docs)]

pub mod boot;
pub mod cpu;
pub mod crowd;
pub mod demo;
pub mod fetch;
mod live;
pub mod magnet;
pub mod make_torrent;
mod metrics;
pub mod mount;
mod params;
mod parked_watch;
mod paths;
pub mod peer_addr;
mod planner;
mod report;
mod runtime;
mod schedule;
pub mod seed;
mod source;
mod status;
mod streaming;
mod tasks;
pub mod totals;

pub use params::{
    RuntimeError, RuntimeParams, DEFAULT_BUSY_BACKLOG, DEFAULT_RECHOKE, DEFAULT_WINDOW,
};
pub use report::{OldestParked, PeerTraffic, ProfileSwitch, StallSummary, Status};
pub use runtime::Runtime;
pub use status::{serve_status, StatusAddr};
pub use vmt_fs::Access;
