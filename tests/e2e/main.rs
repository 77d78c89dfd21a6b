//! End-to-end tests of vmt: one executable, a module per concern.

mod swarm;
mod swarm_interop;
