//! Latency from a demand to the demanded data being readable, while a long plan is in flight.
//!
//! ```text
//! cargo run --release -p vmt-swarm --example demand_latency -- [IMAGE_MIB=64] [MBIT=100] [PIECE_KIB=256] [BLOCKS=1]
//! ```
//! One seeder capped at MBIT by its upload limit, one client whose plan is every block in
//! order; every 250 ms the client demands the first block of the last piece of the plan it has
//! not got. With BLOCKS=1 the torrent has a block-hash table, so the block is verified alone;
//! with BLOCKS=0 the read needs its whole piece. Prints the median and worst latency, also in
//! units of one block's (or piece's) transfer time at the link rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use vmt_swarm::{Engine, EngineConfig, Storage, SwarmEvents, Torrent};

/// When each demanded block became readable.
#[derive(Default)]
struct Arrivals {
    waiting: Mutex<HashMap<u32, Instant>>,
    latencies: Mutex<Vec<Duration>>,
}

impl SwarmEvents for Arrivals {
    fn blocks_ready(&self, first: u32, count: u32) {
        let mut waiting = self.waiting.lock().unwrap();
        for b in first..first + count {
            if let Some(t) = waiting.remove(&b) {
                self.latencies.lock().unwrap().push(t.elapsed());
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .map(|a| a.parse().expect("numeric argument"))
            .unwrap_or(default)
    };
    let (mib, mbit, piece_kib, blocks) = (arg(1, 64), arg(2, 100), arg(3, 256), arg(4, 1) == 1);
    let rate = mbit * 1_000_000 / 8;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let img = dir.path().join("bench.img");
        // One byte short of whole pieces: librqbit 9.1.0 appends an extra hash otherwise.
        let mut data = vec![0u8; (mib << 20) as usize - 1];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut data);
        std::fs::write(&img, &data)?;
        let piece = (piece_kib * 1024) as u32;
        let torrent = if blocks {
            Torrent::create(&img, piece, Vec::new()).await?
        } else {
            stock_torrent(&img, piece).await?
        };
        let n = torrent.piece_count();
        let seeder = Engine::start(
            torrent.clone(),
            Storage::open_seed(&img, &torrent, false)?,
            Some(Engine::bind("127.0.0.1:0".parse()?).await?),
            EngineConfig {
                upload_limit: Some(rate),
                ..Default::default()
            },
        );
        let out = dir.path().join("c.img");
        let (storage, _) = Storage::open_download(&out, &torrent, &dir.path().join("c.bits"))?;
        let arrivals = Arc::new(Arrivals::default());
        let client = Engine::start_with_events(
            torrent.clone(),
            storage,
            None,
            EngineConfig {
                peers: vec![seeder.listen_addr().expect("listening")],
                ..Default::default()
            },
            Some(arrivals.clone()),
        );
        let layout = *client.layout();
        client.set_plan(&(0..layout.blocks()).collect::<Vec<_>>());
        let mut next = n;
        while !client.is_complete() && next > n / 2 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            // The last plan piece not yet here: the one the plan would fetch last.
            next -= 1;
            let Some(piece) = torrent.piece(next) else {
                break;
            };
            if client.has_piece(piece) {
                continue;
            }
            let block = layout.piece_blocks(piece.get()).start;
            if client.has_block(block) {
                continue;
            }
            arrivals
                .waiting
                .lock()
                .unwrap()
                .insert(block, Instant::now());
            client.demand_blocks(block..block + 1);
        }
        client.wait_complete().await?;
        let mut l = arrivals.latencies.lock().unwrap().clone();
        l.sort();
        let unit = if blocks { 16.0 } else { piece_kib as f64 };
        let unit_time = Duration::from_secs_f64(unit * 1024.0 / rate as f64);
        let med = l[l.len() / 2];
        let max = *l.last().expect("some demands");
        println!(
            "{} demands during a {mib} MiB plan at {mbit} Mbit/s, {piece_kib} KiB pieces, {} \
             (one {} = {:.2} ms): median {:.2} ms ({:.2} units), max {:.2} ms ({:.2} units)",
            l.len(),
            if blocks {
                "blocks verified alone"
            } else {
                "no block table"
            },
            if blocks { "block" } else { "piece" },
            unit_time.as_secs_f64() * 1e3,
            med.as_secs_f64() * 1e3,
            med.as_secs_f64() / unit_time.as_secs_f64(),
            max.as_secs_f64() * 1e3,
            max.as_secs_f64() / unit_time.as_secs_f64(),
        );
        client.shutdown().await?;
        seeder.shutdown().await?;
        Ok(())
    })
}

/// The torrent a stock client makes (no block-hash table), by librqbit's `create_torrent`.
async fn stock_torrent(
    img: &std::path::Path,
    piece: u32,
) -> Result<Torrent, Box<dyn std::error::Error>> {
    let options = librqbit::CreateTorrentOptions {
        piece_length: Some(piece),
        ..Default::default()
    };
    let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
    let created = librqbit::create_torrent(img, options, &spawner).await?;
    let mut bytes = Vec::new();
    bencode::bencode_serialize_to_writer(&created.meta, &mut bytes)?;
    Ok(Torrent::from_bytes(bytes, img)?)
}
