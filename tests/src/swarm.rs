//! The loopback swarm every engine test starts from: a random image and its torrent in a fresh
//! temp dir ([`TestImage`]), seeders and clients on `127.0.0.1:0`, bounded waits ([`within`])
//! and a shutdown that checks no engine task outlives it ([`shutdown_all`]). Engines stop
//! their tasks when dropped, and the temp dir goes with the `TestImage`, so a failing test
//! leaves nothing running.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use vmt_swarm::{Engine, EngineConfig, Storage, Torrent};

/// A mebibyte, for image sizes.
pub const MIB: usize = 1 << 20;
/// Piece size of test torrents.
pub const PIECE: u32 = 256 * 1024;
/// How long a test download of up to 64 MiB on loopback may take.
pub const DOWNLOAD_LIMIT: Duration = Duration::from_secs(120);

/// Awaits `fut`, failing the test with `what` after `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

/// A random image in a temp dir, its bytes and its torrent; clients write beside it.
pub struct TestImage {
    /// The temp dir holding the image, the clients' files and whatever the test adds.
    pub dir: tempfile::TempDir,
    /// The image file (`DIR/image.img`).
    pub path: PathBuf,
    /// Its content.
    pub data: Vec<u8>,
    /// Its torrent (pieces of [`PIECE`]).
    pub torrent: Torrent,
}

impl TestImage {
    /// `len` bytes of [`crate::content`] from `seed`, with a trackerless torrent.
    pub async fn new(len: usize, seed: u64) -> TestImage {
        TestImage::with_trackers(len, seed, Vec::new()).await
    }

    /// As [`TestImage::new`], the torrent announcing to `trackers`.
    pub async fn with_trackers(len: usize, seed: u64, trackers: Vec<String>) -> TestImage {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data = crate::content(seed, len);
        let path = dir.path().join("image.img");
        std::fs::write(&path, &data).expect("write the image");
        let torrent = Torrent::create(&path, PIECE, trackers)
            .await
            .expect("a torrent of the image");
        TestImage {
            dir,
            path,
            data,
            torrent,
        }
    }

    /// A seeder of the image, listening on loopback.
    pub async fn seeder(&self, config: EngineConfig) -> Engine {
        let storage = Storage::open_seed(&self.path, &self.torrent, false).expect("open the seed");
        start(&self.torrent, storage, config).await
    }

    /// A client writing to `DIR/<name>.img` (bitmap `DIR/<name>.vmtbits`), listening on
    /// loopback.
    pub async fn client(&self, name: &str, config: EngineConfig) -> Engine {
        let (out, bits) = self.client_paths(name);
        let (storage, _) =
            Storage::open_download(&out, &self.torrent, &bits).expect("open the download");
        start(&self.torrent, storage, config).await
    }

    /// A client per name, each dialing the peers of `config` and every other client: a swarm.
    pub async fn meshed_clients(&self, names: &[&str], config: EngineConfig) -> Vec<Engine> {
        let mut clients = Vec::new();
        for name in names {
            clients.push(self.client(name, config.clone()).await);
        }
        for c in &clients {
            for other in &clients {
                c.add_peer(other.listen_addr().expect("clients listen"));
            }
        }
        clients
    }

    /// The image and bitmap files of client `name`.
    pub fn client_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join(format!("{name}.img")),
            self.dir.path().join(format!("{name}.vmtbits")),
        )
    }

    /// Waits (up to [`DOWNLOAD_LIMIT`]) for client `name` to complete, shuts it down, and
    /// checks its file is the image byte for byte.
    pub async fn finish_download(&self, client: &Engine, name: &str) {
        within(
            &format!("{name}'s download"),
            DOWNLOAD_LIMIT,
            client.wait_complete(),
        )
        .await
        .expect("the download completes");
        shutdown_all(&[client]).await;
        self.assert_client_has_image(name);
    }

    /// A client fetching the whole image from `holders` and uploading nothing, once every
    /// holder is sending it: with one upload slot each, it holds them all until its rotation.
    pub async fn hog(&self, holders: &[&Engine]) -> Engine {
        let hog = self
            .client(
                "hog",
                EngineConfig {
                    upload: false,
                    ..dialing(holders)
                },
            )
            .await;
        within("the hog takes every slot", Duration::from_secs(30), async {
            while holders.iter().any(|h| h.stats().uploaded == 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        hog
    }

    /// What `client` reads of `piece` is the image's bytes.
    pub fn assert_piece(&self, client: &Engine, piece: vmt_swarm::ValidPieceIndex) {
        let lengths = self.torrent.lengths();
        let mut buf = vec![0u8; lengths.piece_length(piece) as usize];
        let at = lengths.piece_offset(piece) as usize;
        client.read_at(at as u64, &mut buf).expect("read the piece");
        assert!(
            buf == self.data[at..at + buf.len()],
            "piece {piece:?} differs"
        );
    }

    /// Client `name`'s file is the image byte for byte.
    pub fn assert_client_has_image(&self, name: &str) {
        let got = std::fs::read(self.client_paths(name).0).expect("the client's file");
        assert!(got == self.data, "{name}'s file differs from the image");
    }
}

async fn start(torrent: &Torrent, storage: Storage, config: EngineConfig) -> Engine {
    let listener = Engine::bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind loopback");
    Engine::start(torrent.clone(), storage, Some(listener), config)
}

/// A config that dials `engines`' listen addresses.
pub fn dialing(engines: &[&Engine]) -> EngineConfig {
    EngineConfig {
        peers: engines
            .iter()
            .map(|e| e.listen_addr().expect("the engine listens"))
            .collect(),
        ..Default::default()
    }
}

/// Shuts every engine down and checks none of its tasks lives on.
pub async fn shutdown_all(engines: &[&Engine]) {
    for e in engines {
        e.shutdown().await.expect("a clean shutdown");
        assert_eq!(e.running_tasks(), 0, "no engine task outlives shutdown");
    }
}
