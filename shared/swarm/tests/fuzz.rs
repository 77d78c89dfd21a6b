//! Issue 12's fuzz target for `.torrent` files: mutations of a vmt torrent (pin and block-hash
//! table) and of a stock one, for a bounded time (see `vmt_formats::fuzz`). No input may
//! panic, every refusal names the file, and none may take more memory than its size justifies.

use std::path::Path;

use vmt_formats::fuzz::{fuzz, PeakAlloc, Target};
use vmt_swarm::Torrent;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The torrent bytes themselves, librqbit's parse (which borrows them), the table and piece
/// hashes (shared slices, not copies), and a margin.
fn bound(len: usize) -> usize {
    8 * len + (1 << 20)
}

#[test]
fn r12_fuzz_torrent_files() {
    let dir = tempfile::tempdir().unwrap();
    // Torrent::create records the image's identity in the user's cache: keep it in ours.
    std::env::set_var("XDG_CACHE_HOME", dir.path().join("cache"));
    let image = dir.path().join("app.img");
    let mut data = vec![0u8; 5 * 16384 + 1000];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes()[0];
    }
    std::fs::write(&image, &data).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let vmt = tokio
        .block_on(Torrent::create(
            &image,
            16384,
            vec!["http://127.0.0.1:1/announce".into()],
        ))
        .unwrap();
    // A stock torrent, as librqbit (another client) makes it: no pin, no table.
    let stock = tokio.block_on(async {
        let options = librqbit::CreateTorrentOptions {
            piece_length: Some(16384),
            ..Default::default()
        };
        let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
        let created = librqbit::create_torrent(&image, options, &spawner)
            .await
            .unwrap();
        let mut bytes = Vec::new();
        bencode::bencode_serialize_to_writer(&created.meta, &mut bytes).unwrap();
        bytes
    });
    let seeds = vec![vmt.as_bytes().to_vec(), stock];
    for seed in &seeds {
        Torrent::from_bytes(seed.clone(), Path::new("seed.torrent")).unwrap();
    }
    let path = Path::new("fuzz.torrent");
    let target = Target {
        name: "torrent",
        seeds: &seeds,
        memory: &bound,
    };
    let outcome = fuzz(
        target,
        |b| b,
        |input| match Torrent::from_bytes(input.to_vec(), path) {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains("fuzz.torrent"), "unnamed: {message}");
                Err(message)
            }
        },
    );
    assert!(outcome.inputs > 100 && outcome.accepted > 0, "{outcome:?}");
}
