//! The granularity at which a mount fetches: the torrent's piece size, and the block size of
//! its block-hash table when it has one.
//!
//! A stock torrent can only be verified piece by piece (SHA-1 per piece, BEP 3), so a read that
//! misses waits for whole pieces and the fetch unit is the piece. With a block-hash table
//! (SHA-256 per block, pinned by the torrent; issue 11) each block is verified on its own, a
//! missed read waits only for the blocks it covers, and the rest of a touched piece follows at
//! lower priority: the fetch unit is the block. [`Granularity::unit`] is that unit; the
//! scheduler plans in it ([`crate::scheduler::SchedulerParams::new`]) and the simulator fetches
//! in it, so that `vmt-train eval` predicts the mount.
//!
//! [`Granularity::costs`] is what a configuration costs besides stall: metadata every client
//! must get before it starts, and per-peer bookkeeping that grows with the number of pieces.

use std::fmt;

use serde::Serialize;

/// BitTorrent's request unit (BEP 3: blocks of 16 KiB are what peers request and send), and so
/// the natural size of a verified block: one request, one hash.
pub const BLOCK_BYTES: u32 = 16 << 10;

use vmt_formats::piece_size::{check_piece_size, BadPieceSize};
pub use vmt_formats::piece_size::{MAX_PIECE_BYTES, MIN_PIECE_BYTES};

/// Smallest verified block: a page. Smaller blocks would cost more table than they save.
pub const MIN_BLOCK_BYTES: u32 = 4 << 10;

/// Bytes of SHA-1 per piece in a torrent's `pieces` string (BEP 3).
pub const PIECE_HASH_BYTES: u64 = 20;

/// Bytes of SHA-256 per block in a block-hash table.
pub const BLOCK_HASH_BYTES: u64 = 32;

/// Bytes of one HAVE message on the wire (4-byte length, 1-byte id, 4-byte index; BEP 3): each
/// peer connection carries one per piece over a whole download.
pub const HAVE_MESSAGE_BYTES: u64 = 9;

/// A granularity that no mount uses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GranularityError {
    /// Not a piece size `vmt-run seed` makes.
    #[error(transparent)]
    BadPieceSize(#[from] BadPieceSize),
    /// A block size that does not tile the pieces.
    #[error("block size {block} is not a power of two from 4 KiB up to the piece size ({piece})")]
    BadBlockSize {
        /// The block size asked for.
        block: u32,
        /// The piece size.
        piece: u32,
    },
}

/// Piece size and, with a block-hash table, verified block size (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Granularity {
    piece_size: u32,
    block_size: Option<u32>,
}

impl Granularity {
    /// `piece_size`-byte pieces, and blocks of `block_size` verified on their own if `Some`.
    pub fn new(piece_size: u32, block_size: Option<u32>) -> Result<Granularity, GranularityError> {
        check_piece_size(piece_size)?;
        if let Some(block) = block_size {
            if !(MIN_BLOCK_BYTES..=piece_size).contains(&block) || !block.is_power_of_two() {
                return Err(GranularityError::BadBlockSize {
                    block,
                    piece: piece_size,
                });
            }
        }
        Ok(Granularity {
            piece_size,
            block_size,
        })
    }

    /// A stock torrent: whole pieces are fetched and verified.
    pub fn pieces(piece_size: u32) -> Result<Granularity, GranularityError> {
        Granularity::new(piece_size, None)
    }

    /// A torrent with a table of [`BLOCK_BYTES`] blocks.
    pub fn blocks(piece_size: u32) -> Result<Granularity, GranularityError> {
        Granularity::new(piece_size, Some(BLOCK_BYTES))
    }

    /// Piece size in bytes.
    pub fn piece_size(&self) -> u32 {
        self.piece_size
    }

    /// Verified block size, if the torrent has a block-hash table.
    pub fn block_size(&self) -> Option<u32> {
        self.block_size
    }

    /// What the mount fetches and verifies on its own: the block with a table, else the piece.
    pub fn unit(&self) -> u32 {
        self.block_size.unwrap_or(self.piece_size)
    }

    /// Units in a full piece.
    pub fn units_per_piece(&self) -> u32 {
        self.piece_size / self.unit()
    }

    /// What this granularity costs for an image of `image_bytes`.
    pub fn costs(&self, image_bytes: u64) -> Costs {
        let pieces = image_bytes.div_ceil(self.piece_size as u64);
        let table = self
            .block_size
            .map_or(0, |b| image_bytes.div_ceil(b as u64) * BLOCK_HASH_BYTES);
        Costs {
            pieces,
            torrent_bytes: pieces * PIECE_HASH_BYTES + table,
            bitfield_bytes: pieces.div_ceil(8),
            have_bytes_per_peer: pieces * HAVE_MESSAGE_BYTES,
        }
    }
}

/// What a [`Granularity`] costs besides stall (hashes only: names and trackers are the same
/// for every granularity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Costs {
    /// Pieces of the image: engine and stock-client bookkeeping scale with it.
    pub pieces: u64,
    /// Hash bytes a client needs before it starts: 20 B of SHA-1 per piece, plus 32 B of
    /// SHA-256 per block with a block-hash table.
    pub torrent_bytes: u64,
    /// The bitfield each peer sends on connecting, and holds for each of its peers.
    pub bitfield_bytes: u64,
    /// HAVE messages one peer connection carries over a whole download.
    pub have_bytes_per_peer: u64,
}

/// Bytes in binary units, two decimals: `2.66 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.block_size() {
            Some(b) => write!(
                f,
                "{} pieces with {} verified blocks",
                human_bytes(self.piece_size() as u64),
                human_bytes(b as u64)
            ),
            None => write!(
                f,
                "{} pieces, no block table",
                human_bytes(self.piece_size() as u64)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_costs() {
        let stock = Granularity::pieces(256 << 10).unwrap();
        assert_eq!(stock.unit(), 256 << 10);
        assert_eq!(stock.units_per_piece(), 1);
        let blocks = Granularity::blocks(256 << 10).unwrap();
        assert_eq!(blocks.unit(), 16 << 10);
        assert_eq!(blocks.units_per_piece(), 16);
        // 1 GiB: 4096 pieces of 256 KiB, 65536 blocks of 16 KiB.
        let c = blocks.costs(1 << 30);
        assert_eq!(c.pieces, 4096);
        assert_eq!(c.torrent_bytes, 4096 * 20 + 65536 * 32);
        assert_eq!(c.bitfield_bytes, 512);
        assert_eq!(c.have_bytes_per_peer, 4096 * 9);
        assert_eq!(stock.costs(1 << 30).torrent_bytes, 4096 * 20);
        // A short last piece still counts.
        assert_eq!(stock.costs((1 << 30) + 1).pieces, 4097);
    }

    #[test]
    fn refuses_what_seed_refuses() {
        for bad in [0, 8 << 10, 100_000, 32 << 20] {
            assert_eq!(
                Granularity::pieces(bad).unwrap_err(),
                GranularityError::BadPieceSize(BadPieceSize(bad))
            );
        }
        assert!(Granularity::new(64 << 10, Some(128 << 10)).is_err());
        assert!(Granularity::new(64 << 10, Some(2048)).is_err());
        assert!(Granularity::new(64 << 10, Some(12 << 10)).is_err());
        assert!(Granularity::new(16 << 10, Some(16 << 10)).is_ok());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(16 << 10), "16 KiB");
        assert_eq!(human_bytes(3 << 19), "1.50 MiB");
        assert_eq!(
            Granularity::blocks(4 << 20).unwrap().to_string(),
            "4 MiB pieces with 16 KiB verified blocks"
        );
        assert_eq!(
            Granularity::pieces(256 << 10).unwrap().to_string(),
            "256 KiB pieces, no block table"
        );
    }
}
