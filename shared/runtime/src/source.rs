//! The swarm as the filesystem's pristine source, and the engine's block events as the
//! filesystem's releases.
//!
//! The unit of presence is the engine's 16 KiB block: a read waits for the blocks it covers.
//! With the torrent's block-hash table those are verified alone; without one a block becomes
//! present only with its whole piece, and a demand of one block makes the engine fetch the
//! piece, so the same source serves both.

use std::sync::Arc;

use tokio::sync::Notify;
use vmt_fs::{PristineSource, UnitsReadySender};
use vmt_swarm::{Engine, SwarmEvents};

/// See the module doc.
pub(crate) struct SwarmSource {
    engine: Engine,
}

impl SwarmSource {
    pub(crate) fn new(engine: Engine) -> SwarmSource {
        SwarmSource { engine }
    }
}

impl PristineSource for SwarmSource {
    fn unit_size(&self) -> u32 {
        self.engine.layout().block_len()
    }

    fn is_present(&self, unit: u32) -> bool {
        self.engine.has_block(unit)
    }

    fn read_at(&self, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let n = self.engine.read_at(offset, buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            offset += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    fn demand(&self, first: u32, last: u32) {
        // Queued for the engine's intake task: no lock here, on the FUSE thread.
        self.engine.demand_blocks(first..last + 1);
    }
}

/// Where the engine's "blocks are present" go: to the filesystem's reply pool, which answers
/// the reads parked on them, and to the planner, whose plan slides past them. Called on a
/// network task; both hand-offs are non-blocking.
pub(crate) struct Arrivals {
    pub ready: UnitsReadySender,
    pub planner: Arc<Notify>,
}

impl SwarmEvents for Arrivals {
    fn blocks_ready(&self, first: u32, count: u32) {
        self.ready.units_ready(first, count);
        self.planner.notify_one();
    }
}
