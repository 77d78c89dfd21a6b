//! The swarm as the filesystem's pristine source, one unit per piece until the engine tracks
//! 16 KiB blocks: presence is the engine's piece bitmap, a demand asks the engine for the
//! pieces and reports each one verified to the filesystem's reply pool.

use vmt_fs::{PristineSource, UnitsReadySender};
use vmt_swarm::Engine;

/// See the module doc.
pub(crate) struct SwarmSource {
    engine: Engine,
    ready: UnitsReadySender,
}

impl SwarmSource {
    pub(crate) fn new(engine: Engine, ready: UnitsReadySender) -> SwarmSource {
        SwarmSource { engine, ready }
    }
}

impl PristineSource for SwarmSource {
    fn unit_size(&self) -> u32 {
        self.engine.torrent().lengths().default_piece_length()
    }

    fn is_present(&self, unit: u32) -> bool {
        self.engine
            .torrent()
            .piece(unit)
            .is_some_and(|p| self.engine.has_piece(p))
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
        for piece in first..=last {
            let Some(valid) = self.engine.torrent().piece(piece) else {
                continue;
            };
            self.engine.demand(valid);
            // Registered even if the piece is verified by now: the callback then runs at once,
            // and the release finds whatever parked on it.
            let ready = self.ready.clone();
            self.engine
                .on_piece(valid, move |i| ready.units_ready(i, 1));
        }
    }
}
