//! How an image is cut into pieces and blocks.
//!
//! A *piece* is the unit of the torrent's SHA-1 hashes, of HAVE messages and of seeding: a peer
//! announces and serves only whole verified pieces. A *block* is BitTorrent's request unit,
//! 16 KiB (`CHUNK_SIZE`), and vmt's unit of presence: with the torrent's block-hash table a
//! block is verified on its own, so a read waits only for the blocks it covers.
//!
//! Blocks are numbered across the image, so block `b` always covers the bytes
//! `b × block_len ..` of the image whatever piece it falls in. That needs pieces made of whole
//! blocks: a piece length that is a multiple of 16 KiB (every power of two from 16 KiB up, as
//! every client makes them), or a piece of at most 16 KiB, which is then its own single block.
//! [`Layout::new`] refuses anything else.

use std::ops::Range;

use librqbit_core::constants::CHUNK_SIZE;
use librqbit_core::lengths::Lengths;

/// Piece and block geometry of one torrent; see the module doc. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    total: u64,
    piece_len: u32,
    block_len: u32,
    per_piece: u32,
    pieces: u32,
    blocks: u32,
}

impl Layout {
    /// The layout of `lengths`, or why its pieces are not made of whole blocks.
    pub fn new(lengths: &Lengths) -> Result<Layout, String> {
        let piece_len = lengths.default_piece_length();
        let block_len = piece_len.min(CHUNK_SIZE);
        if piece_len % block_len != 0 {
            return Err(format!(
                "piece length {piece_len} is not a multiple of the 16 KiB block"
            ));
        }
        let total = lengths.total_length();
        let blocks = total.div_ceil(block_len as u64);
        if blocks > u32::MAX as u64 {
            return Err(format!("{total} bytes are more than 2^32 blocks"));
        }
        Ok(Layout {
            total,
            piece_len,
            block_len,
            per_piece: piece_len / block_len,
            pieces: lengths.total_pieces(),
            blocks: blocks as u32,
        })
    }

    /// Image length in bytes.
    pub fn total_len(&self) -> u64 {
        self.total
    }

    /// Length of a full piece (the last one may be shorter).
    pub fn piece_len(&self) -> u32 {
        self.piece_len
    }

    /// Length of a full block: 16 KiB, or the piece length if pieces are smaller.
    pub fn block_len(&self) -> u32 {
        self.block_len
    }

    /// Blocks in a full piece.
    pub fn blocks_per_piece(&self) -> u32 {
        self.per_piece
    }

    /// Number of pieces.
    pub fn pieces(&self) -> u32 {
        self.pieces
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// The piece block `block` belongs to.
    pub fn piece_of(&self, block: u32) -> u32 {
        block / self.per_piece
    }

    /// The blocks of `piece` (fewer for the last piece).
    pub fn piece_blocks(&self, piece: u32) -> Range<u32> {
        let first = piece * self.per_piece;
        first..(first + self.per_piece).min(self.blocks)
    }

    /// Length of `piece` in bytes.
    pub fn piece_size(&self, piece: u32) -> u32 {
        let start = piece as u64 * self.piece_len as u64;
        (self.total - start.min(self.total)).min(self.piece_len as u64) as u32
    }

    /// Image offset of `block`.
    pub fn block_offset(&self, block: u32) -> u64 {
        block as u64 * self.block_len as u64
    }

    /// Length of `block` in bytes (the last one may be short).
    pub fn block_size(&self, block: u32) -> u32 {
        let start = self.block_offset(block);
        (self.total - start.min(self.total)).min(self.block_len as u64) as u32
    }

    /// Offset of `block` inside its piece, as a wire request's `begin`.
    pub fn begin_in_piece(&self, block: u32) -> u32 {
        (block % self.per_piece) * self.block_len
    }

    /// The block a wire `(piece, begin, length)` names, if it is exactly one whole block.
    pub fn block_at(&self, piece: u32, begin: u32, length: u32) -> Option<u32> {
        if piece >= self.pieces || begin % self.block_len != 0 {
            return None;
        }
        let k = begin / self.block_len;
        if k >= self.per_piece {
            return None;
        }
        let block = piece * self.per_piece + k;
        (block < self.blocks && self.block_size(block) == length).then_some(block)
    }

    /// The blocks a byte range touches, clipped to the image.
    pub fn blocks_in(&self, offset: u64, len: u64) -> Range<u32> {
        let end = offset.saturating_add(len).min(self.total);
        if offset >= end {
            return 0..0;
        }
        let bl = self.block_len as u64;
        (offset / bl) as u32..(end - 1) as u32 / self.block_len + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_tile_the_image_across_pieces() {
        let l = Layout::new(&Lengths::new(5 * 65536 + 100, 65536).unwrap()).unwrap();
        assert_eq!((l.pieces(), l.blocks_per_piece(), l.blocks()), (6, 4, 21));
        assert_eq!(l.piece_blocks(5), 20..21);
        assert_eq!(l.block_size(20), 100);
        assert_eq!(l.piece_size(5), 100);
        assert_eq!(l.piece_of(7), 1);
        assert_eq!(l.begin_in_piece(7), 3 * 16384);
        assert_eq!(l.block_at(1, 3 * 16384, 16384), Some(7));
        assert_eq!(l.block_at(5, 0, 100), Some(20));
        assert_eq!(l.block_at(5, 0, 16384), None, "the last block is short");
        assert_eq!(l.block_at(1, 100, 16384), None, "unaligned");
        assert_eq!(l.block_at(6, 0, 100), None);
        assert_eq!(l.blocks_in(16383, 2), 0..2);
        assert_eq!(l.blocks_in(0, 0), 0..0);
        assert_eq!(l.blocks_in(l.total_len() - 1, 999), 20..21);
    }

    #[test]
    fn small_pieces_are_one_block_and_odd_pieces_are_refused() {
        let l = Layout::new(&Lengths::new(10_000, 4096).unwrap()).unwrap();
        assert_eq!(
            (l.block_len(), l.blocks_per_piece(), l.blocks()),
            (4096, 1, 3)
        );
        assert_eq!(l.block_offset(2), 8192);
        assert!(Layout::new(&Lengths::new(100_000, 20_000).unwrap()).is_err());
    }
}
