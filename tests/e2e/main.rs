//! End-to-end tests of vmt: one executable, a module per concern.

mod flags;
mod record;
mod run;
mod swarm;
mod swarm_interop;
mod train;
