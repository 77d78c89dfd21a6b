//! Fixtures shared by the swarm unit tests.

use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};

use librqbit_core::torrent_metainfo::TorrentMetaV1Owned;

use crate::torrent::Torrent;

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

/// The torrent librqbit's `create_torrent` makes of `image`, as a stock client would.
pub async fn librqbit_torrent(image: &Path, piece: u32) -> TorrentMetaV1Owned {
    let options = librqbit::CreateTorrentOptions {
        piece_length: Some(piece),
        ..Default::default()
    };
    let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
    let created = librqbit::create_torrent(image, options, &spawner)
        .await
        .unwrap();
    created.meta
}

/// A stock torrent of `image` (no block-hash table), for an image whose length is not a
/// multiple of `piece` (librqbit 9.1.0 then appends no extra hash).
pub async fn stock_torrent(image: &Path, piece: u32) -> Torrent {
    assert!(std::fs::metadata(image).unwrap().len() % piece as u64 != 0);
    let meta = librqbit_torrent(image, piece).await;
    let mut bytes = Vec::new();
    bencode::bencode_serialize_to_writer(&meta, &mut bytes).unwrap();
    let torrent = Torrent::from_bytes(bytes, Path::new("stock.torrent")).unwrap();
    assert!(torrent.block_hashes().is_none());
    torrent
}
