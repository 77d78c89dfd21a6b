//! Loopback throughput of the swarm engine: one seeder, N clients in swarm mode, one process.
//!
//! ```text
//! cargo run --release -p vmt-swarm --example swarm_bench -- [IMAGE_MIB=64] [CLIENTS=1] [PIECE_KIB=256]
//! ```
//! Prints each client's completion time and the throughput (image bytes / time, MB = 10^6 B).
//! With one client, a stock librqbit leecher then downloads from the same seeder, and the
//! ratio vmt / librqbit is printed (same seeder, same run).
//! All engines share one 2-worker runtime, like two `vmt-run` processes on a 2-core machine;
//! on loopback the bottleneck is CPU (SHA-1, copies), not the link.

use std::time::Instant;

use rand::{RngCore, SeedableRng};
use vmt_swarm::{Engine, EngineConfig, Storage, Torrent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .map(|a| a.parse().expect("numeric argument"))
            .unwrap_or(default)
    };
    let (mib, clients, piece_kib) = (arg(1, 64), arg(2, 1) as usize, arg(3, 256));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let img = dir.path().join("bench.img");
        let mut data = vec![0u8; (mib << 20) as usize];
        rand::rngs::StdRng::seed_from_u64(42).fill_bytes(&mut data);
        std::fs::write(&img, &data)?;
        drop(data);
        let torrent = Torrent::create(&img, (piece_kib * 1024) as u32, Vec::new()).await?;
        let listener = Engine::bind("127.0.0.1:0".parse()?).await?;
        let seeder = Engine::start(
            torrent.clone(),
            Storage::open_seed(&img, &torrent, false)?,
            Some(listener),
            EngineConfig::default(),
        );
        let mut engines = Vec::new();
        for k in 0..clients {
            let out = dir.path().join(format!("c{k}.img"));
            let bits = dir.path().join(format!("c{k}.vmtbits"));
            let (storage, _) = Storage::open_download(&out, &torrent, &bits)?;
            let listener = Engine::bind("127.0.0.1:0".parse()?).await?;
            engines.push(Engine::start(torrent.clone(), storage, Some(listener), EngineConfig::default()));
        }
        let start = Instant::now();
        let seed_addr = seeder.listen_addr().expect("listening");
        let addrs: Vec<_> = engines.iter().map(|e| e.listen_addr().expect("listening")).collect();
        for e in &engines {
            e.add_peer(seed_addr);
            for &a in &addrs {
                e.add_peer(a);
            }
        }
        let mut times = Vec::new();
        for (k, e) in engines.iter().enumerate() {
            e.wait_complete().await?;
            let t = start.elapsed().as_secs_f64();
            times.push(t);
            let st = e.stats();
            println!(
                "client {k}: {:.2} s, {:.1} MB/s, {:.1} MiB from other clients",
                t,
                torrent.total_length() as f64 / t / 1e6,
                st.downloaded_except(&seeder.peer_id()) as f64 / (1 << 20) as f64
            );
        }
        let last = times.iter().cloned().fold(0.0, f64::max);
        println!(
            "1 seeder -> {clients} client(s), {mib} MiB, {piece_kib} KiB pieces: all done in {last:.2} s; \
             aggregate {:.1} MB/s",
            (clients as u64 * torrent.total_length()) as f64 / last / 1e6
        );
        for e in &engines {
            e.shutdown().await?;
        }
        if clients == 1 {
            let rqbit = librqbit_download(&torrent, seeder.listen_addr().expect("listening"), dir.path()).await?;
            println!(
                "stock librqbit leecher, same seeder: {rqbit:.2} s, {:.1} MB/s; vmt / librqbit throughput = {:.2}",
                torrent.total_length() as f64 / rqbit / 1e6,
                rqbit / last
            );
        }
        seeder.shutdown().await?;
        Ok(())
    })
}

/// Downloads the torrent with a stock librqbit session; returns the seconds it took.
async fn librqbit_download(
    torrent: &Torrent,
    seeder: std::net::SocketAddr,
    dir: &std::path::Path,
) -> Result<f64, Box<dyn std::error::Error>> {
    let out = dir.join("rqbit");
    let session = librqbit::Session::new_with_opts(
        out.clone(),
        librqbit::SessionOptions {
            dht: None,
            persistence: None,
            fastresume: false,
            disable_local_service_discovery: true,
            listen: None,
            ..Default::default()
        },
    )
    .await?;
    let start = Instant::now();
    let handle = session
        .add_torrent(
            librqbit::AddTorrent::from_bytes(torrent.as_bytes().to_vec()),
            Some(librqbit::AddTorrentOptions {
                initial_peers: Some(vec![seeder]),
                output_folder: Some(out.to_string_lossy().into_owned()),
                disable_trackers: true,
                overwrite: true,
                ..Default::default()
            }),
        )
        .await?
        .into_handle()
        .ok_or("librqbit did not add the torrent")?;
    handle.wait_until_completed().await?;
    let t = start.elapsed().as_secs_f64();
    session.stop().await;
    Ok(t)
}
