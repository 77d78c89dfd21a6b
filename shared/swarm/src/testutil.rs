//! Fixtures shared by the swarm unit tests.

use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};

use super::torrent::Torrent;

/// Writes `len` seeded random bytes to `dir/image.img`; returns the path and the bytes.
pub fn random_image(dir: &Path, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let path = dir.join("image.img");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// A torrent of `image` with `piece` byte pieces.
pub async fn make_torrent(image: &Path, piece: u32) -> Torrent {
    Torrent::create(image, piece, Vec::new()).await.unwrap()
}
