//! The image as a map of pieces, for a live display: each piece's state and the source of its
//! data ([`Engine::piece_map`](crate::Engine::piece_map)).
//!
//! Taking the map holds the picker lock for one pass over the pieces (a byte per piece, into
//! a buffer the caller keeps, so a display polling it allocates nothing after the first
//! time); sources are read without a lock.

use crate::picker::{PiecePicker, PieceState};
use crate::sources::Source;

/// One piece on the map. The order is the display's precedence: a piece a reader waits for
/// shows as demanded even while it is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum MapCell {
    /// Nothing of it present, nothing fetching it.
    Missing = 0,
    /// Some blocks present (verified alone), the piece not whole yet.
    Partial = 1,
    /// Named by the prefetch plan, waiting for a peer.
    Planned = 2,
    /// Assigned to a peer: its blocks are being fetched.
    InFlight = 3,
    /// A reader waits for some of its blocks.
    Demanded = 4,
    /// Verified and written: readable, seeded.
    Present = 5,
}

impl MapCell {
    /// Every state, by code.
    pub const ALL: [MapCell; 6] = [
        MapCell::Missing,
        MapCell::Partial,
        MapCell::Planned,
        MapCell::InFlight,
        MapCell::Demanded,
        MapCell::Present,
    ];

    /// Its name on the wire and on the page.
    pub fn name(self) -> &'static str {
        match self {
            MapCell::Missing => "missing",
            MapCell::Partial => "partial",
            MapCell::Planned => "planned",
            MapCell::InFlight => "in-flight",
            MapCell::Demanded => "demanded",
            MapCell::Present => "present",
        }
    }
}

/// A snapshot of the map; kept by the caller and refilled.
#[derive(Clone, Debug, Default)]
pub struct PieceMap {
    /// Per piece, a [`MapCell`] code.
    pub cells: Vec<u8>,
    /// Per piece, its source's number: 0 unknown (present at start, or nothing arrived), `n`
    /// the `n`th entry of `sources`.
    pub source_of: Vec<u16>,
    /// The sources named so far, in number order (only grows: refills append).
    pub sources: Vec<Source>,
}

impl PiecePicker {
    /// Each piece's [`MapCell`] code into `out`; one pass, no allocation once `out` is sized.
    pub fn fill_map(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend((0..self.len()).map(|p| self.map_cell(p) as u8));
    }

    fn map_cell(&self, piece: u32) -> MapCell {
        match self.state(piece) {
            PieceState::Have => MapCell::Present,
            _ if self.is_demanded(piece) => MapCell::Demanded,
            PieceState::InFlight => MapCell::InFlight,
            _ if self.is_planned(piece) => MapCell::Planned,
            _ if self.present_blocks(piece) > 0 => MapCell::Partial,
            _ => MapCell::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn layout(pieces: u32, per_piece: u32) -> Layout {
        let piece = per_piece * 16384;
        let lengths =
            librqbit_core::lengths::Lengths::new(pieces as u64 * piece as u64, piece).unwrap();
        Layout::new(&lengths).unwrap()
    }

    #[test]
    fn cells_follow_the_pickers_states_by_precedence() {
        // 4 pieces of 4 blocks, blocks verified alone.
        let mut p = PiecePicker::new(layout(4, 4), 1, true);
        for i in 0..4 {
            p.set_wanted(i, false);
        }
        p.block_present(4); // piece 1 partial
        p.set_plan(&[8]); // piece 2 planned
        p.demand(12..13); // piece 3 demanded
        p.mark_have(0);
        let mut out = Vec::new();
        p.fill_map(&mut out);
        assert_eq!(
            out,
            [
                MapCell::Present as u8,
                MapCell::Partial as u8,
                MapCell::Planned as u8,
                MapCell::Demanded as u8
            ]
        );
        // The demanded piece is picked first and stays shown as demanded while in flight; the
        // planned one, picked next, shows in flight.
        let first = p.pick(|_| true, |_| false, false).unwrap();
        let second = p.pick(|_| true, |q| q == 3, false).unwrap();
        assert_eq!((first.piece, second.piece), (3, 2));
        p.fill_map(&mut out);
        assert_eq!(out[3], MapCell::Demanded as u8);
        assert_eq!(out[2], MapCell::InFlight as u8);
    }
}
