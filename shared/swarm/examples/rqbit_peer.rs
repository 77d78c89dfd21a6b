//! A stock librqbit 9.1 peer, for interop measurements against vmt (datasets/interop-throughput.sh).
//!
//! ```text
//! rqbit_peer seed  --torrent T --dir DIR --listen ADDR            # checks DIR/<name>, then seeds until killed
//! rqbit_peer fetch --torrent T --dir DIR --listen ADDR [--peer ADDR]  # exits once complete
//! ```
//! Trackers in the torrent are used (so stock clients find it); no DHT, no LSD, TCP only.

use std::net::SocketAddr;
use std::path::PathBuf;

use librqbit::{
    AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, Session, SessionOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let (mut torrent, mut dir, mut listen, mut peer) = (None, None, None, None);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--torrent" => torrent = Some(PathBuf::from(v)),
            "--dir" => dir = Some(PathBuf::from(v)),
            "--listen" => listen = Some(v.parse::<SocketAddr>()?),
            "--peer" => peer = Some(v.parse::<SocketAddr>()?),
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let (Some(torrent), Some(dir), Some(listen)) = (torrent, dir, listen) else {
        return Err(
            "usage: rqbit_peer seed|fetch --torrent T --dir DIR --listen ADDR [--peer ADDR]".into(),
        );
    };
    if mode != "seed" && mode != "fetch" {
        return Err(format!("unknown mode {mode:?}").into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let session = Session::new_with_opts(
            dir.clone(),
            SessionOptions {
                dht: None,
                persistence: None,
                fastresume: false,
                disable_local_service_discovery: true,
                listen: Some(ListenerOptions {
                    mode: ListenerMode::TcpOnly,
                    listen_addr: listen,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
        let handle = session
            .add_torrent(
                AddTorrent::from_bytes(std::fs::read(&torrent)?),
                Some(AddTorrentOptions {
                    initial_peers: peer.map(|p| vec![p]),
                    output_folder: Some(dir.to_string_lossy().into_owned()),
                    overwrite: true,
                    ..Default::default()
                }),
            )
            .await?
            .into_handle()
            .ok_or("no torrent handle")?;
        handle.wait_until_completed().await?;
        eprintln!("complete");
        if mode == "seed" {
            std::future::pending::<()>().await;
        }
        session.stop().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
