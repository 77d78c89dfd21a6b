//! The block-hash table: the SHA-256 of every 16 KiB block of the image, so that one block can
//! be verified on its own, before the rest of its piece (and the piece's SHA-1) has arrived.
//!
//! A block is BitTorrent's request unit ([`BLOCK_SIZE`]), so a read that misses can be answered
//! as soon as the blocks it covers are in and checked. The table is 32 bytes per block (0.2% of
//! the image), made in the same pass as the piece hashes, and travels in the `.torrent` outside
//! the info dictionary; its [root](BlockHashes::root) is pinned inside, so the info hash covers
//! it and a peer cannot make a client accept a forged table or block (see `BLOCKS.md`).
//!
//! The table is a slice of the `.torrent`'s own bytes ([`Bytes`]): no copy is made when it is
//! parsed, and cloning a [`BlockHashes`] (every clone of a `Torrent`) only bumps a count.

use std::fmt;

use bytes::Bytes;
use librqbit_core::lengths::ChunkInfo;
use sha2::{Digest, Sha256};

/// Size of a verifiable block: BitTorrent's request size, so every block a peer sends is
/// exactly one table entry (pieces are whole multiples of it; the image's last block is short).
pub const BLOCK_SIZE: u32 = librqbit_core::constants::CHUNK_SIZE;

/// Bytes per table entry (one SHA-256).
pub const BLOCK_HASH_LEN: usize = 32;

/// The SHA-256 of every block of one image, in block order, with the root that pins it.
#[derive(Clone, PartialEq, Eq)]
pub struct BlockHashes {
    table: Bytes,
    root: [u8; 32],
    image_length: u64,
}

/// Why a block-hash table (or the pin that names it) is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockTableError {
    /// The info dictionary pins a table that the `.torrent` does not carry.
    #[error("the info dictionary pins a block-hash table, but the torrent carries none")]
    Missing,
    /// A table is present but nothing in the info dictionary vouches for it.
    #[error("the torrent carries a block-hash table that its info dictionary does not pin, so nothing vouches for it")]
    Unpinned,
    /// The table does not have one entry per block of the image.
    #[error("the block-hash table is {found} bytes, but {blocks} blocks of a {image_length}-byte image need {expected}: it is forged or belongs to another torrent")]
    Length {
        /// Image length in the info dictionary.
        image_length: u64,
        /// Blocks of that image.
        blocks: u64,
        /// Table bytes those blocks need.
        expected: u64,
        /// Table bytes present.
        found: u64,
    },
    /// The table does not hash to the pinned root.
    #[error("the block-hash table hashes to {}, not to the root {} pinned in the info dictionary: it is forged or belongs to another torrent", hex(found), hex(pinned))]
    Root {
        /// Root pinned in the info dictionary.
        pinned: [u8; 32],
        /// SHA-256 of the table present.
        found: [u8; 32],
    },
    /// The pin is of a format version this build does not read.
    #[error("the vmt pin in the info dictionary is version {found}, this vmt reads version {supported} (made by a newer vmt?)")]
    Version {
        /// Version in the torrent.
        found: i64,
        /// Version this build reads.
        supported: i64,
    },
    /// The pin names a block size other than [`BLOCK_SIZE`].
    #[error("the vmt pin has {found}-byte blocks, vmt verifies {BLOCK_SIZE}-byte blocks")]
    BlockSize {
        /// Block size in the torrent.
        found: i64,
    },
    /// A hash in the pin is not 32 bytes.
    #[error("the vmt pin's {field:?} is {found} bytes, not 32")]
    PinField {
        /// The pin's key.
        field: &'static str,
        /// Its length.
        found: usize,
    },
}

impl BlockHashes {
    /// The table `table` of an image of `image_length` bytes, checked against the `pinned`
    /// root. This is how a table from an untrusted source (the `.torrent` body, later a peer)
    /// is accepted: only if it is complete and hashes to a root the client already trusts.
    pub fn pinned(
        table: Bytes,
        image_length: u64,
        pinned: &[u8; 32],
    ) -> Result<BlockHashes, BlockTableError> {
        let hashes = BlockHashes::from_table(table, image_length)?;
        if hashes.root != *pinned {
            return Err(BlockTableError::Root {
                pinned: *pinned,
                found: hashes.root,
            });
        }
        Ok(hashes)
    }

    /// The table as computed here (trusted: its root is what gets pinned).
    pub(crate) fn from_table(
        table: Bytes,
        image_length: u64,
    ) -> Result<BlockHashes, BlockTableError> {
        let blocks = block_count(image_length);
        let expected = blocks * BLOCK_HASH_LEN as u64;
        if table.len() as u64 != expected || blocks > u32::MAX as u64 {
            return Err(BlockTableError::Length {
                image_length,
                blocks,
                expected,
                found: table.len() as u64,
            });
        }
        let root = root_of(&table);
        Ok(BlockHashes {
            table,
            root,
            image_length,
        })
    }

    /// The root: the SHA-256 of the table, i.e. of the blocks' SHA-256s concatenated in block
    /// order (block `i` covers image bytes `i * 16384 .. min((i + 1) * 16384, length)`). Anyone
    /// can recompute it: `sha256sum` of the table bytes.
    pub fn root(&self) -> &[u8; 32] {
        &self.root
    }

    /// Number of blocks (the last one may be short).
    pub fn block_count(&self) -> u32 {
        (self.table.len() / BLOCK_HASH_LEN) as u32
    }

    /// Length of the image the table describes.
    pub fn image_length(&self) -> u64 {
        self.image_length
    }

    /// Length of `block`, or `None` past the end.
    pub fn block_len(&self, block: u32) -> Option<u32> {
        let start = block as u64 * BLOCK_SIZE as u64;
        (start < self.image_length)
            .then(|| (self.image_length - start).min(BLOCK_SIZE as u64) as u32)
    }

    /// Expected SHA-256 of `block`, or `None` past the end.
    pub fn hash(&self, block: u32) -> Option<&[u8; 32]> {
        let start = block as usize * BLOCK_HASH_LEN;
        self.table
            .get(start..start + BLOCK_HASH_LEN)
            .map(|h| h.try_into().expect("32-byte slice"))
    }

    /// Whether `data` is exactly block `block` of the image (right length and hash). Allocates
    /// nothing; costs one SHA-256 of at most 16 KiB (a few microseconds).
    pub fn verify(&self, block: u32, data: &[u8]) -> bool {
        match (self.block_len(block), self.hash(block)) {
            (Some(len), Some(expected)) if len as usize == data.len() => {
                Sha256::digest(data).as_slice() == expected
            }
            _ => false,
        }
    }

    /// [`verify`](Self::verify) for a block as librqbit's geometry names it (its absolute
    /// chunk index is the block index: pieces are whole multiples of [`BLOCK_SIZE`]).
    pub fn verify_chunk(&self, chunk: &ChunkInfo, data: &[u8]) -> bool {
        self.verify(chunk.absolute_index, data)
    }

    /// The table's bytes, as carried in the `.torrent` (and, later, sent to peers).
    pub fn as_bytes(&self) -> &[u8] {
        &self.table
    }
}

impl fmt::Debug for BlockHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockHashes")
            .field("blocks", &self.block_count())
            .field("image_length", &self.image_length)
            .field("root", &hex(&self.root))
            .finish()
    }
}

/// Blocks of an image of `image_length` bytes.
pub(crate) fn block_count(image_length: u64) -> u64 {
    image_length.div_ceil(BLOCK_SIZE as u64)
}

/// The root of a table: its SHA-256.
pub(crate) fn root_of(table: &[u8]) -> [u8; 32] {
    Sha256::digest(table).into()
}

/// Lowercase hex of a hash, for messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use librqbit_core::lengths::Lengths;

    /// An image of `len` bytes with distinct content per block, and its table.
    fn image_and_table(len: usize) -> (Vec<u8>, BlockHashes) {
        let image: Vec<u8> = (0..len).map(|i| (i / 7 % 251) as u8).collect();
        let table: Vec<u8> = image
            .chunks(BLOCK_SIZE as usize)
            .flat_map(|b| Sha256::digest(b).to_vec())
            .collect();
        let hashes = BlockHashes::from_table(table.into(), len as u64).unwrap();
        (image, hashes)
    }

    #[test]
    fn verify_accepts_the_right_block_only() {
        let len = 5 * BLOCK_SIZE as usize + 1000;
        let (image, hashes) = image_and_table(len);
        assert_eq!(hashes.block_count(), 6);
        let bs = BLOCK_SIZE as usize;
        for b in 0..6 {
            let data = &image[b * bs..((b + 1) * bs).min(len)];
            assert!(hashes.verify(b as u32, data), "block {b}");
        }
        assert_eq!(hashes.block_len(5), Some(1000));
        assert_eq!(hashes.block_len(6), None);

        // One flipped byte, a block under another index, a wrong length, past the end.
        let mut flipped = image[bs..2 * bs].to_vec();
        flipped[100] ^= 1;
        assert!(!hashes.verify(1, &flipped));
        assert!(!hashes.verify(2, &image[bs..2 * bs]));
        assert!(!hashes.verify(1, &image[bs..2 * bs - 1]));
        assert!(!hashes.verify(1, &image[bs..2 * bs + 1]));
        assert!(!hashes.verify(5, &image[5 * bs..5 * bs + 999]));
        assert!(!hashes.verify(6, &[]));
        assert!(!hashes.verify(u32::MAX, &image[..bs]));
    }

    #[test]
    fn chunk_indices_of_librqbit_geometry_are_block_indices() {
        let len = 3 * 65536 + 20000;
        let (image, hashes) = image_and_table(len);
        let lengths = Lengths::new(len as u64, 65536).unwrap();
        let mut seen = 0;
        for piece in 0..lengths.total_pieces() {
            let piece = lengths.validate_piece_index(piece).unwrap();
            for chunk in lengths.iter_chunk_infos(piece) {
                let start = lengths.chunk_absolute_offset(&chunk) as usize;
                let data = &image[start..start + chunk.size as usize];
                assert!(hashes.verify_chunk(&chunk, data));
                seen += 1;
            }
        }
        assert_eq!(seen, hashes.block_count());
    }

    #[test]
    fn pinned_refuses_a_table_not_matching_its_root() {
        let len = 3 * BLOCK_SIZE as u64;
        let (_, hashes) = image_and_table(len as usize);
        let root = *hashes.root();
        assert_eq!(root, <[u8; 32]>::from(Sha256::digest(hashes.as_bytes())));
        let ok = BlockHashes::pinned(Bytes::copy_from_slice(hashes.as_bytes()), len, &root);
        assert_eq!(ok.as_ref(), Ok(&hashes));

        let mut forged = hashes.as_bytes().to_vec();
        forged[40] ^= 0x80;
        let err = BlockHashes::pinned(forged.into(), len, &root).unwrap_err();
        assert!(matches!(err, BlockTableError::Root { pinned, .. } if pinned == root));
        assert!(err
            .to_string()
            .contains("forged or belongs to another torrent"));

        let short = Bytes::copy_from_slice(&hashes.as_bytes()[..64]);
        assert_eq!(
            BlockHashes::pinned(short, len, &root),
            Err(BlockTableError::Length {
                image_length: len,
                blocks: 3,
                expected: 96,
                found: 64
            })
        );
    }

    #[test]
    fn clones_share_the_table() {
        let (_, hashes) = image_and_table(100_000);
        let copy = hashes.clone();
        assert_eq!(copy.as_bytes().as_ptr(), hashes.as_bytes().as_ptr());
    }
}
