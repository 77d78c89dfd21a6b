//! End-to-end tests of vmt: one executable, a module per concern.

mod boot;
mod dht;
mod encryption;
mod faults;
mod flags;
mod headless;
mod layering;
mod live_page;
mod magnet;
mod metrics;
mod peer_exchange;
mod record;
mod rough_edges;
mod run;
mod swarm;
mod swarm_interop;
mod train;
mod wait_phases;
mod web_seed;
