//! vmt against BitTorrent clients nobody here wrote: a stock librqbit `Session` (always), and
//! Transmission 3.00 and opentracker from Debian (when installed; `.ci/run` installs them).
//!
//! Transmission never dials peers at 127.0.0.0/8, but accepts them: so the vmt side always
//! dials in (`EngineConfig::peers`, `vmt-run seed --peer`), and everything stays on loopback
//! without network namespaces.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vmt_swarm::{EngineConfig, Torrent};
use vmt_tests::transmission::in_netns;
use vmt_tests::{
    content, free_port, shutdown_all, within, Proc, TestImage, Transmission, TransmissionSetup, MIB,
};

/// Whether `program` can be run; if not, says loudly that the test is skipped.
pub(crate) fn have(program: &str, test: &str) -> bool {
    let ok = Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("SKIPPED {test}: {program} is not installed (apt-get install transmission-daemon transmission-cli opentracker)");
    }
    ok
}
// ---- interoperability with a stock librqbit Session ----

async fn librqbit_session(dir: &Path, listen: bool) -> Arc<librqbit::Session> {
    use librqbit::{ListenerMode, ListenerOptions, SessionOptions};
    librqbit::Session::new_with_opts(
        dir.to_owned(),
        SessionOptions {
            dht: None,
            persistence: None,
            fastresume: false,
            disable_local_service_discovery: true,
            listen: listen.then(|| ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Adds `torrent` to `session` with `out` as its folder (and `peer` to dial), and waits until
/// librqbit has it all: downloaded, or found and checked in `out`.
async fn librqbit_add(
    session: &Arc<librqbit::Session>,
    torrent: &Torrent,
    out: &Path,
    peer: Option<std::net::SocketAddr>,
    what: &str,
) {
    let handle = session
        .add_torrent(
            librqbit::AddTorrent::from_bytes(torrent.as_bytes().to_vec()),
            Some(librqbit::AddTorrentOptions {
                initial_peers: peer.map(|p| vec![p]),
                output_folder: Some(out.to_str().unwrap().to_owned()),
                disable_trackers: true,
                overwrite: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_handle()
        .unwrap();
    within(what, Duration::from_secs(60), handle.wait_until_completed())
        .await
        .unwrap();
}

/// The vmt seeder serves a stock librqbit leecher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librqbit_leecher_downloads_from_vmt_seeder() {
    let img = TestImage::new(16 * MIB, 7).await;
    let seed = img.seeder(EngineConfig::default()).await;
    let out = img.dir.path().join("rqbit");
    let session = librqbit_session(&out, false).await;
    librqbit_add(
        &session,
        &img.torrent,
        &out,
        Some(seed.listen_addr().unwrap()),
        "librqbit download",
    )
    .await;
    session.stop().await;
    assert!(std::fs::read(out.join(img.torrent.name())).unwrap() == img.data);
    assert!(seed.stats().uploaded >= img.data.len() as u64);
    shutdown_all(&[&seed]).await;
}

/// A vmt client downloads from a stock librqbit seeder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmt_client_downloads_from_librqbit_seeder() {
    let img = TestImage::new(16 * MIB, 8).await;
    // librqbit finds the image (named as in the torrent) in its output folder and seeds it.
    let session = librqbit_session(img.dir.path(), true).await;
    librqbit_add(
        &session,
        &img.torrent,
        img.dir.path(),
        None,
        "librqbit checks the image",
    )
    .await;
    let config = EngineConfig {
        peers: vec![session.listen_addr().unwrap()],
        ..Default::default()
    };
    let c = img.client("c", config).await;
    img.finish_download(&c, "c").await;
    session.stop().await;
}

// ---- Transmission ----

/// A vmt client downloads from a Transmission seeder, with a torrent made by
/// transmission-create (so vmt also parses a foreign .torrent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmt_client_downloads_from_transmission_seeder() {
    if !have(
        "transmission-daemon",
        "vmt_client_downloads_from_transmission_seeder",
    ) {
        return;
    }
    let (tr, img) = transmission_seeder(20, &TransmissionSetup::default());
    assert!(
        img.torrent.block_hashes().is_none(),
        "a stock torrent has no block-hash table"
    );
    let config = EngineConfig {
        peers: vec![format!("127.0.0.1:{}", tr.peer_port).parse().unwrap()],
        ..Default::default()
    };
    let c = img.client("c", config).await;
    // Transmission unchokes on its 10 s rechoke tick and ramps up slowly: the fixture allows
    // two minutes.
    img.finish_download(&c, "c").await;
}

/// A Transmission set up as `setup`, seeding 16 MiB of `content(seed)` (`DIR/seed/payload.bin`)
/// under a torrent made by transmission-create (`DIR/p.torrent`), once it has verified its copy.
pub(crate) fn transmission_seeder(
    seed: u64,
    setup: &TransmissionSetup,
) -> (Transmission, TestImage) {
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data = content(seed, 16 * MIB);
    std::fs::write(seed_dir.join("payload.bin"), &data).unwrap();
    let torrent_path = dir.path().join("p.torrent");
    let made = vmt_tests::run_with_timeout(
        Command::new("transmission-create")
            .args(["-s", "256", "-o"])
            .arg(&torrent_path)
            .arg(seed_dir.join("payload.bin")),
        Duration::from_secs(60),
    );
    assert!(made.status.success());
    let torrent = Torrent::load(&torrent_path).unwrap();
    let tr = Transmission::start_with(&dir.path().join("tr"), &seed_dir, setup);
    tr.add(&torrent_path);
    vmt_tests::wait_until(
        "Transmission verifies its copy",
        Duration::from_secs(60),
        || tr.complete(),
    );
    let img = TestImage {
        path: seed_dir.join("payload.bin"),
        dir,
        data,
        torrent,
    };
    (tr, img)
}

/// The vmt seeder (dialing in) serves a Transmission leecher; the torrent is vmt's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmission_leecher_downloads_from_vmt_seeder() {
    if !have(
        "transmission-daemon",
        "transmission_leecher_downloads_from_vmt_seeder",
    ) {
        return;
    }
    let img = TestImage::new(16 * MIB, 21).await;
    let torrent_path = img.dir.path().join("image.torrent");
    img.torrent.save(&torrent_path).unwrap();
    let leech_dir = img.dir.path().join("leech");
    let tr = Transmission::start(&img.dir.path().join("tr"), &leech_dir);
    tr.add(&torrent_path);
    let seed = img
        .seeder(EngineConfig {
            peers: vec![format!("127.0.0.1:{}", tr.peer_port).parse().unwrap()],
            ..Default::default()
        })
        .await;
    let done = tokio::task::spawn_blocking({
        let tr_rpc = tr.rpc.clone();
        move || {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(120) {
                let out = vmt_tests::run_with_timeout(
                    Command::new("transmission-remote").args([tr_rpc.as_str(), "-t", "all", "-i"]),
                    Duration::from_secs(20),
                );
                if String::from_utf8_lossy(&out.stdout).contains("Percent Done: 100%") {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            false
        }
    })
    .await
    .unwrap();
    assert!(
        done,
        "Transmission did not complete; its log:\n{}",
        tr.log()
    );
    assert!(std::fs::read(leech_dir.join(img.torrent.name())).unwrap() == img.data);
    assert!(seed.stats().uploaded >= img.data.len() as u64);
    shutdown_all(&[&seed]).await;
}

/// Stock tools read a vmt torrent (with its pinned block-hash table) as an ordinary one: same
/// info hash, pieces and length; and vmt reads a stock torrent as one without a table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_tools_read_vmt_torrents_and_vmt_reads_stock_ones() {
    let url = "http://127.0.0.1:9/announce".to_owned();
    let image = TestImage::with_trackers(3 * MIB + 12345, 23, vec![url.clone()]).await;
    let (dir, data, torrent) = (&image.dir, &image.data, &image.torrent);
    let table = torrent.block_hashes().expect("vmt torrents carry a table");
    assert_eq!(table.block_count() as usize, data.len().div_ceil(16384));
    let path = dir.path().join("image.torrent");
    torrent.save(&path).unwrap();
    let hash = torrent.info_hash().as_string();
    let pieces = torrent.piece_count().to_string();

    let meta = librqbit_core::torrent_metainfo::torrent_from_bytes(torrent.as_bytes()).unwrap();
    assert_eq!(meta.info_hash, torrent.info_hash());
    assert_eq!(meta.info.data.length, Some(data.len() as u64));

    let test = "stock_tools_read_vmt_torrents_and_vmt_reads_stock_ones";
    if have("transmission-show", test) {
        let out = vmt_tests::run_with_timeout(
            Command::new("transmission-show").arg(&path),
            Duration::from_secs(20),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(&format!("Hash: {hash}")), "{text}");
        assert!(text.contains(&format!("Piece Count: {pieces}")), "{text}");
        assert!(text.contains(&url), "{text}");
    }
    if have("aria2c", test) {
        let out = vmt_tests::run_with_timeout(
            Command::new("aria2c").arg("--show-files").arg(&path),
            Duration::from_secs(20),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(&format!("Info Hash: {hash}")), "{text}");
        assert!(
            text.contains(&format!("The Number of Pieces: {pieces}")),
            "{text}"
        );
    }
    if have("transmission-create", test) {
        let stock = dir.path().join("stock.torrent");
        let made = vmt_tests::run_with_timeout(
            Command::new("transmission-create")
                .args(["-s", "256", "-o"])
                .arg(&stock)
                .arg(&image.path),
            Duration::from_secs(60),
        );
        assert!(made.status.success());
        let stock = Torrent::load(&stock).unwrap();
        assert!(stock.block_hashes().is_none());
        assert_eq!(stock.image_sha256(), None);
        // Same content, same piece hashes: only the pin differs, so the swarms differ.
        let p = stock.piece(0).unwrap();
        assert_eq!(stock.piece_hash(p), torrent.piece_hash(p));
        assert_ne!(stock.info_hash(), torrent.info_hash());
    }
}

// ---- opentracker ----

/// A Debian opentracker on loopback (or an address of a test's network namespace),
/// whitelisting one info hash; stopped on drop.
pub(crate) struct OpenTracker {
    _proc: Proc,
    ip: String,
    port: u16,
    netns: Option<String>,
}

impl OpenTracker {
    /// The URL to put in a torrent before `start`.
    pub(crate) fn url(port: u16) -> String {
        OpenTracker::url_at("127.0.0.1", port)
    }

    /// The URL of a tracker on `ip`, to put in a torrent before `start_in`.
    pub(crate) fn url_at(ip: &str, port: u16) -> String {
        format!("http://{ip}:{port}/announce")
    }

    /// Starts opentracker on loopback `port` serving `torrent`, with its files under `dir`.
    pub(crate) fn start(dir: &Path, port: u16, torrent: &Torrent) -> OpenTracker {
        OpenTracker::start_in(dir, None, "127.0.0.1", port, torrent)
    }

    /// Starts opentracker on `ip:port` in network namespace `netns` (if given) serving
    /// `torrent`, with its files under `dir`.
    pub(crate) fn start_in(
        dir: &Path,
        netns: Option<&vmt_tests::Netns>,
        ip: &str,
        port: u16,
        torrent: &Torrent,
    ) -> OpenTracker {
        use std::os::unix::fs::PermissionsExt;
        let netns = netns.map(|n| n.name.clone());
        // As root opentracker chroots into -d and drops to nobody: the directory must be readable.
        let trk = dir.join("trk");
        std::fs::create_dir_all(&trk).unwrap();
        for d in [dir, trk.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Debian's opentracker only serves whitelisted info hashes.
        std::fs::write(
            trk.join("whitelist.txt"),
            format!("{}\n", torrent.info_hash().as_string()),
        )
        .unwrap();
        let proc = Proc::spawn(
            in_netns(&netns, "opentracker")
                .args([
                    "-i",
                    ip,
                    "-p",
                    &port.to_string(),
                    "-P",
                    &port.to_string(),
                    "-d",
                ])
                .arg(&trk)
                .args(["-w", "whitelist.txt"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let tracker = OpenTracker {
            _proc: proc,
            ip: ip.to_owned(),
            port,
            netns,
        };
        // curl succeeds (whatever the HTTP status) once the port takes connections.
        let url = format!("http://{ip}:{port}/");
        vmt_tests::wait_until("opentracker listens", Duration::from_secs(30), || {
            in_netns(&tracker.netns, "curl")
                .args(["-s", "-o", "/dev/null", "--max-time", "2", &url])
                .status()
                .is_ok_and(|s| s.success())
        });
        tracker
    }

    /// `GET /PATH?info_hash=...&QUERY` on the tracker; the body, if it answered.
    fn get(&self, path: &str, torrent: &Torrent, query: &str) -> Option<Vec<u8>> {
        let hash: String = torrent
            .info_hash()
            .0
            .iter()
            .map(|b| format!("%{b:02x}"))
            .collect();
        let url = format!(
            "http://{}:{}/{path}?info_hash={hash}{query}",
            self.ip, self.port
        );
        let out = in_netns(&self.netns, "curl")
            .args(["-fs", "--max-time", "5", &url])
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    }

    /// Waits until the tracker's scrape contains `needle` (e.g. `incompletei1`).
    pub(crate) fn wait_scrape(&self, torrent: &Torrent, needle: &str) {
        vmt_tests::wait_until(needle, Duration::from_secs(30), || {
            self.get("scrape", torrent, "")
                .is_some_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        });
    }

    /// The peers the tracker hands a leecher that announces itself on `port`: the compact
    /// `peers` string of the response, decoded.
    fn peers_for(&self, torrent: &Torrent, port: u16) -> Vec<std::net::SocketAddr> {
        let body = self
            .get(
                "announce",
                torrent,
                &format!("&peer_id=-XX0000-e4e4e4e4e4e4&port={port}&uploaded=0&downloaded=0&left=1&compact=1&event=started"),
            )
            .expect("opentracker answers an announce");
        let at = body
            .windows(7)
            .position(|w| w == b"5:peers")
            .expect("a peers key")
            + 7;
        let colon = at + body[at..].iter().position(|&b| b == b':').unwrap();
        let len: usize = std::str::from_utf8(&body[at..colon])
            .unwrap()
            .parse()
            .unwrap();
        body[colon + 1..colon + 1 + len]
            .chunks(6)
            .map(|c| {
                let ip = std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                (ip, u16::from_be_bytes([c[4], c[5]])).into()
            })
            .collect()
    }
}

/// An opentracker serving a `size`-byte image, and a client that does not listen (`fetch`
/// without `--listen`) once the tracker counts it as a leecher; `None` (test skipped) without
/// opentracker. The directory holds the tracker's files and the image.
async fn tracker_and_unlistening_client(
    test: &str,
    size: usize,
    seed: u64,
) -> Option<(tempfile::TempDir, TestImage, OpenTracker, vmt_swarm::Engine)> {
    if !have("opentracker", test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let img = TestImage::with_trackers(size, seed, vec![OpenTracker::url(port)]).await;
    let tracker = OpenTracker::start(dir.path(), port, &img.torrent);
    let (out, bits) = img.client_paths("c");
    let (storage, _) =
        vmt_swarm::Storage::open_download(&out, &img.torrent, &bits).expect("open the download");
    let c = vmt_swarm::Engine::start(img.torrent.clone(), storage, None, EngineConfig::default());
    tracker.wait_scrape(&img.torrent, "incompletei1");
    Some((dir, img, tracker, c))
}

/// Seeder and client find each other only through a real opentracker on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentracker_announce_connects_seeder_and_client() {
    if !have(
        "opentracker",
        "opentracker_announce_connects_seeder_and_client",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let img = TestImage::with_trackers(4 * MIB, 22, vec![OpenTracker::url(port)]).await;
    let tracker = OpenTracker::start(dir.path(), port, &img.torrent);
    let seed = img.seeder(EngineConfig::default()).await;
    // The first announce of the client must already list the seeder: wait until the tracker
    // has it (opentracker's scrape counts it as complete).
    tracker.wait_scrape(&img.torrent, "completei1");
    let c = img.client("c", EngineConfig::default()).await;
    img.finish_download(&c, "c").await;
    shutdown_all(&[&seed]).await;
}

/// Early announces: a client that does not listen (so a seeder cannot dial it) announces
/// first and finds nobody; a seeder that announces after it is learned by the client's next
/// announce. opentracker's interval is about 1,900 s (min interval about 950 s): a starved
/// client must not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentracker_starved_client_finds_a_late_seeder_early() {
    let Some((_dir, img, tracker, c)) = tracker_and_unlistening_client(
        "opentracker_starved_client_finds_a_late_seeder_early",
        4 * MIB,
        23,
    )
    .await
    else {
        return;
    };
    let seed = img.seeder(EngineConfig::default()).await;
    tracker.wait_scrape(&img.torrent, "completei1");
    let t0 = std::time::Instant::now();
    within(
        "the client's download after the seeder announced",
        Duration::from_secs(90),
        c.wait_complete(),
    )
    .await
    .expect("a starved client announces again well before the tracker's interval");
    eprintln!("late seeder found and downloaded in {:?}", t0.elapsed());
    shutdown_all(&[&c, &seed]).await;
    img.assert_client_has_image("c");
}

/// A client that does not listen never makes the tracker hand out an address nobody serves
/// (librqbit's default port 6881, announced before): others get it as port 0, or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentracker_never_lists_a_port_an_unlistening_client_does_not_serve() {
    let Some((_dir, img, tracker, c)) = tracker_and_unlistening_client(
        "opentracker_never_lists_a_port_an_unlistening_client_does_not_serve",
        MIB,
        24,
    )
    .await
    else {
        return;
    };
    let me = free_port();
    let peers = tracker.peers_for(&img.torrent, me);
    for p in &peers {
        assert!(
            p.port() == 0 || p.port() == me,
            "the tracker hands out {p}, which nobody serves: {peers:?}"
        );
    }
    shutdown_all(&[&c]).await;
}
