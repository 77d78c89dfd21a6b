//! TEMPORARY stand-in for the block-hash table (replaced by the `blocks` branch at merge):
//! SHA-256 per 16 KiB block of the image.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// SHA-256 of every block of the image.
#[derive(Clone, Debug)]
pub struct BlockHashes {
    hashes: Arc<[[u8; 32]]>,
}

impl BlockHashes {
    /// The table of `image` in blocks of `block_len` bytes.
    pub fn of(image: &[u8], block_len: usize) -> BlockHashes {
        BlockHashes {
            hashes: image
                .chunks(block_len)
                .map(|c| Sha256::digest(c).into())
                .collect(),
        }
    }

    /// Whether `data` is block `block`.
    pub fn verify(&self, block: u32, data: &[u8]) -> bool {
        self.hashes
            .get(block as usize)
            .is_some_and(|h| *h == <[u8; 32]>::from(Sha256::digest(data)))
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}
