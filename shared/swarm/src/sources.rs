//! Where each piece's data came from, for the live map: a peer's address today, a web-seed
//! origin once one exists.
//!
//! A connection names its source once, when it starts ([`Sources::intern`]: a short lock on
//! the name table, a leaf); storing a block or a piece then records the source's number in the
//! piece's slot with one relaxed atomic store, so the data path takes no lock for it. A piece
//! filled by several sources keeps the last one that made a block of it present.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Most sources named; later ones share the last number ("other sources"), so a piece's slot
/// stays 16 bits and a churning swarm cannot grow the table without bound.
pub const MAX_SOURCES: usize = 4096;

/// A piece's slot value before any block of it arrived from a source (present at start, or
/// still missing).
const UNKNOWN: u16 = 0;

/// Locks the name table, ignoring poisoning (as `state::lock`; not imported from there, which
/// imports this module).
fn lock(m: &Mutex<Vec<Source>>) -> MutexGuard<'_, Vec<Source>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where data came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A peer-wire connection to this address.
    Peer(SocketAddr),
    /// An HTTP origin (BEP 19 web seed), by its URL.
    WebSeed(String),
    /// Every source past [`MAX_SOURCES`].
    Other,
}

impl Source {
    /// `peer`, `web-seed` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Peer(_) => "peer",
            Source::WebSeed(_) => "web-seed",
            Source::Other => "other",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Peer(addr) => addr.fmt(f),
            Source::WebSeed(url) => f.write_str(url),
            Source::Other => f.write_str("other sources"),
        }
    }
}

/// A source's number in [`Sources`]: 1-based, 0 is "unknown".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceId(u16);

/// The name table and each piece's last source; see the module doc.
pub struct Sources {
    names: Mutex<Vec<Source>>,
    by_piece: Vec<AtomicU16>,
}

impl Sources {
    /// Slots for `pieces` pieces, every one unknown.
    pub fn new(pieces: u32) -> Sources {
        Sources {
            names: Mutex::new(Vec::new()),
            by_piece: (0..pieces).map(|_| AtomicU16::new(UNKNOWN)).collect(),
        }
    }

    /// The number of `source`, named now if new. Called once per connection, not per block.
    pub fn intern(&self, source: Source) -> SourceId {
        let mut names = lock(&self.names);
        if let Some(i) = names.iter().position(|s| *s == source) {
            return SourceId(i as u16 + 1);
        }
        if names.len() + 1 >= MAX_SOURCES {
            if names.len() + 1 == MAX_SOURCES {
                names.push(Source::Other);
            }
            return SourceId(MAX_SOURCES as u16);
        }
        names.push(source);
        SourceId(names.len() as u16)
    }

    /// `source` made a block of `piece` present.
    pub fn record(&self, piece: u32, source: SourceId) {
        if let Some(slot) = self.by_piece.get(piece as usize) {
            slot.store(source.0, Ordering::Relaxed);
        }
    }

    /// Each piece's source number into `out` (0: unknown; `n`: the `n`th of
    /// [`Sources::names`]); lock-free.
    pub fn fill(&self, out: &mut Vec<u16>) {
        out.clear();
        out.extend(self.by_piece.iter().map(|s| s.load(Ordering::Relaxed)));
    }

    /// How many sources are named (the table only grows).
    pub fn len(&self) -> usize {
        lock(&self.names).len()
    }

    /// Whether no source is named yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the names from number `from + 1` on into `out` (appending): a caller that keeps
    /// its copy only asks for the new ones.
    pub fn names_from(&self, from: usize, out: &mut Vec<Source>) {
        let names = lock(&self.names);
        if let Some(new) = names.get(from..) {
            out.extend_from_slice(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_numbered_once_and_pieces_keep_the_last() {
        let s = Sources::new(4);
        let a = s.intern(Source::Peer("127.0.0.1:1".parse().unwrap()));
        let b = s.intern(Source::WebSeed("http://origin/app.img".into()));
        assert_eq!(s.intern(Source::Peer("127.0.0.1:1".parse().unwrap())), a);
        s.record(1, a);
        s.record(2, a);
        s.record(2, b);
        s.record(9, b); // out of range: ignored
        let mut out = Vec::new();
        s.fill(&mut out);
        assert_eq!(out, [0, 1, 2, 0]);
        let mut names = Vec::new();
        s.names_from(1, &mut names);
        assert_eq!(names, [Source::WebSeed("http://origin/app.img".into())]);
        assert_eq!(names[0].kind(), "web-seed");
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sources::new(1);
        for port in 0..(MAX_SOURCES as u16 + 10) {
            s.intern(Source::Peer(([127, 0, 0, 1], port).into()));
        }
        assert_eq!(s.len(), MAX_SOURCES);
        let last = s.intern(Source::Peer(([10, 0, 0, 1], 1).into()));
        assert_eq!(last, SourceId(MAX_SOURCES as u16));
        let mut names = Vec::new();
        s.names_from(MAX_SOURCES - 1, &mut names);
        assert_eq!(names, [Source::Other]);
    }
}
