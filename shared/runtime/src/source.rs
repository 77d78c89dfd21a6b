//! The swarm as the FUSE filesystem's pristine source: present pieces are served from local
//! storage at once; a read touching a missing piece demands it and parks its reply.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, ReplyData};

use vmt_fs::fusefs::{reply_with, PristineSource};
use vmt_fs::overlay::{Overlay, OVERLAY_BLOCK};
use vmt_fs::parked::{ParkedReads, Released};
use vmt_swarm::Engine;

use super::report::RuntimeStats;

/// A read waiting for pieces.
pub(crate) struct Pending {
    offset: u64,
    len: u32,
    reply: ReplyData,
    overlay: Arc<Overlay>,
}

/// See the module doc.
pub(crate) struct SwarmSource {
    engine: Engine,
    parked: Arc<ParkedReads<Pending>>,
    stats: Arc<RuntimeStats>,
    piece_len: u64,
    image_bytes: u64,
    closing: AtomicBool,
}

impl SwarmSource {
    pub(crate) fn new(engine: Engine, stats: Arc<RuntimeStats>) -> SwarmSource {
        let piece_len = engine.torrent().lengths().default_piece_length() as u64;
        let image_bytes = engine.torrent().total_length();
        SwarmSource {
            engine,
            parked: Arc::new(ParkedReads::new()),
            stats,
            piece_len,
            image_bytes,
            closing: AtomicBool::new(false),
        }
    }

    /// Pieces the range needs from the swarm: those not wholly hidden by overlay blocks.
    fn needed<'a>(
        &'a self,
        offset: u64,
        len: u64,
        overlay: &'a Overlay,
    ) -> impl Iterator<Item = u32> + 'a {
        let end = (offset + len).min(self.image_bytes);
        let first = offset / self.piece_len;
        let last = end.saturating_sub(1) / self.piece_len;
        let check_overlay = overlay.intersects(offset, len);
        (first..=last).filter_map(move |p| {
            if check_overlay {
                let lo = (p * self.piece_len).max(offset) / OVERLAY_BLOCK;
                let hi = ((p + 1) * self.piece_len).min(end).saturating_sub(1) / OVERLAY_BLOCK;
                if (lo..=hi).all(|b| overlay.has_block(b)) {
                    return None;
                }
            }
            Some(p as u32)
        })
    }

    fn present(&self, piece: u32) -> bool {
        self.engine
            .torrent()
            .piece(piece)
            .is_some_and(|p| self.engine.has_piece(p))
    }

    fn serve(&self, p: Pending) {
        let engine = &self.engine;
        reply_with(p.len, p.offset, &p.overlay, p.reply, |buf| {
            read_exact(engine, p.offset, buf)
        });
    }

    pub(crate) fn release(&self, piece: u32) {
        let mut out: Vec<Released<Pending>> = Vec::new();
        self.parked.piece_ready(piece, &mut out);
        for r in out {
            self.stats.record_stall(r.parked_at.elapsed());
            self.serve(r.item);
        }
    }

    /// Stops parking reads and answers every parked one with `EIO` (the mount is going away).
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        self.parked.drain(&mut out);
        for r in out {
            r.item.reply.error(Errno::EIO);
        }
    }

    /// Reads parked now.
    pub(crate) fn parked(&self) -> usize {
        self.parked.len()
    }
}

fn read_exact(engine: &Engine, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = engine.read_at(offset, buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        offset += n as u64;
        buf = &mut buf[n..];
    }
    Ok(())
}

/// The FUSE side holds the source through an `Arc` so engine callbacks can reach it.
pub(crate) struct SharedSource(pub(crate) Arc<SwarmSource>);

impl PristineSource for SharedSource {
    fn serve_read(&self, offset: u64, len: u32, overlay: &Arc<Overlay>, reply: ReplyData) {
        let s = &self.0;
        if s.needed(offset, len as u64, overlay).all(|p| s.present(p)) {
            s.stats.record_hit();
            s.serve(Pending {
                offset,
                len,
                reply,
                overlay: overlay.clone(),
            });
            return;
        }
        if s.closing.load(Ordering::SeqCst) {
            reply.error(Errno::EIO);
            return;
        }
        s.stats.record_miss();
        let pending = Pending {
            offset,
            len,
            reply,
            overlay: overlay.clone(),
        };
        if let Some(p) = s.parked.park(
            s.needed(offset, len as u64, overlay),
            |p| s.present(p),
            pending,
        ) {
            // Everything landed between the check and the park.
            s.serve(p);
            return;
        }
        for piece in s.needed(offset, len as u64, overlay) {
            let Some(valid) = s.engine.torrent().piece(piece) else {
                continue;
            };
            s.engine.demand(valid);
            // Landed since the park counted it missing: its event may have come before the park.
            if s.engine.has_piece(valid) {
                s.release(piece);
            }
        }
    }

    fn read_pristine(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        // A partial-block write to a block never fetched: the rest of the block must come from
        // the swarm first. This blocks one FUSE worker (writes are rare and usually follow a
        // read of the same block); a stuck swarm gives EIO after a minute rather than a hang.
        let s = &self.0;
        let end = offset + buf.len() as u64;
        let first = (offset / s.piece_len) as u32;
        let last = ((end - 1) / s.piece_len) as u32;
        for piece in first..=last {
            let Some(valid) = s.engine.torrent().piece(piece) else {
                return Err(std::io::ErrorKind::InvalidInput.into());
            };
            if s.engine.has_piece(valid) {
                continue;
            }
            s.engine.demand(valid);
            let start = std::time::Instant::now();
            while !s.engine.has_piece(valid) {
                if start.elapsed() > Duration::from_secs(60) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("piece {piece} did not arrive within 60 s"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        read_exact(&s.engine, offset, buf)
    }
}

/// Turns the engine's block events into piece releases.
#[derive(Default)]
pub(crate) struct PieceEvents(pub(crate) std::sync::OnceLock<Arc<SwarmSource>>);

impl vmt_swarm::SwarmEvents for PieceEvents {
    fn blocks_ready(&self, first: u32, count: u32) {
        let Some(s) = self.0.get() else { return };
        let layout = *s.engine.layout();
        let (a, b) = (layout.piece_of(first), layout.piece_of(first + count - 1));
        for p in a..=b {
            if s.engine
                .torrent()
                .piece(p)
                .is_some_and(|v| s.engine.has_piece(v))
            {
                s.release(p);
            }
        }
    }
}
