//! Latency from `demand(piece)` to that piece being verified, while a long plan is in flight.
//!
//! ```text
//! cargo run --release -p vmt-swarm --example demand_latency -- [IMAGE_MIB=64] [MBIT=100] [PIECE_KIB=256]
//! ```
//! One seeder capped at MBIT by its upload limit, one client whose plan is every piece in
//! order; every 250 ms the client demands the last piece of the plan it has not got. Prints the
//! median and worst latency, also in units of one piece's transfer time at the link rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use vmt_swarm::{Engine, EngineConfig, Storage, Torrent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .map(|a| a.parse().expect("numeric argument"))
            .unwrap_or(default)
    };
    let (mib, mbit, piece_kib) = (arg(1, 64), arg(2, 100), arg(3, 256));
    let rate = mbit * 1_000_000 / 8;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let img = dir.path().join("bench.img");
        let mut data = vec![0u8; (mib << 20) as usize];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut data);
        std::fs::write(&img, &data)?;
        let torrent = Torrent::create(&img, (piece_kib * 1024) as u32, Vec::new()).await?;
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
        let client = Engine::start(
            torrent.clone(),
            storage,
            None,
            EngineConfig {
                peers: vec![seeder.listen_addr().expect("listening")],
                ..Default::default()
            },
        );
        client.set_plan(&(0..n).collect::<Vec<_>>());
        let latencies = Arc::new(Mutex::new(Vec::new()));
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
            let started = Instant::now();
            let l = latencies.clone();
            client.demand(piece);
            client.on_piece(piece, move |_| l.lock().unwrap().push(started.elapsed()));
        }
        client.wait_complete().await?;
        let mut l = latencies.lock().unwrap().clone();
        l.sort();
        let piece_time = Duration::from_secs_f64(piece_kib as f64 * 1024.0 / rate as f64);
        let med = l[l.len() / 2];
        let max = *l.last().expect("some demands");
        println!(
            "{} demands during a {mib} MiB plan at {mbit} Mbit/s, {piece_kib} KiB pieces \
             (one piece = {:.1} ms): median {:.1} ms ({:.2} pieces), max {:.1} ms ({:.2} pieces)",
            l.len(),
            piece_time.as_secs_f64() * 1e3,
            med.as_secs_f64() * 1e3,
            med.as_secs_f64() / piece_time.as_secs_f64(),
            max.as_secs_f64() * 1e3,
            max.as_secs_f64() / piece_time.as_secs_f64(),
        );
        client.shutdown().await?;
        seeder.shutdown().await?;
        Ok(())
    })
}
