//! vmt's models: from recorded traces to the order in which pieces are fetched.
//!
//! Everything here is synchronous and deterministic given its inputs and a seed: no tokio, no
//! FUSE, no sockets. `vmt-train` fits and evaluates with it; `vmt-run` drives the very same
//! [`scheduler::Scheduler`] with real reads, so the simulator predicts what the mount does.
//!
//! # Layout
//! - [`cluster`]: task runs grouped by the blocks they read (linfa; Jaccard; automatic count).
//! - [`profile`]: profiles trained from clusters, and the bundle file (`.vmtp`) that carries
//!   them with the Markov model (Params → check → fit, as linfa does).
//! - [`markov`]: transitions between profiles and the online belief updated on every read.
//! - [`granularity`]: what the mount fetches and verifies on its own (pieces, or blocks with a
//!   block-hash table), and what a piece size costs.
//! - [`scheduler`]: the prefetch planner, in fetch units, shared by the simulator and `vmt-run`.
//! - [`simulate`]: an event-driven replay of a trace over a link of given bandwidth and round
//!   trip, at the mount's granularity.
//! - [`swarm_sim`]: N clients of the same planner replaying traces against a seeder and each
//!   other: choking, piece trading, max-min fair flows; arrivals.
//! - [`evaluate`]: strategies side by side on held-out traces; leave-one-run-out.
//! - [`curve`]: stall and costs by piece size, with and without verified blocks, and the piece
//!   size to use.
//! - [`synth`]: synthetic but realistic images, task runs and sessions for tests and benches.
//! - [`corpus`]: the traces a command is given: directories expanded, files loaded, images
//!   checked; traces of failed tasks left out.
//! - [`train`]: `vmt-train`'s subcommands, one function each, reporting progress through a
//!   [`train::Progress`] and returning reports; [`render`]: those reports as text and JSON.
//!
//! Errors print each cause once: a message either embeds its cause or returns it as its
//! `source`, never both, so `{:#}` (anyhow's chain) is the whole story on one line.
#![deny(missing_docs)]

pub mod benefit;
pub mod cluster;
pub mod corpus;
pub mod curve;
pub mod evaluate;
pub mod granularity;
pub mod markov;
pub mod profile;
pub mod render;
pub mod scheduler;
pub mod simulate;
pub mod swarm_sim;
pub mod synth;
pub mod train;
