//! The extension protocol against real peers: the extended handshake's `reqq` keeps a fast
//! Transmission leecher connected (BEP 10), and peers learn each other through peer exchange
//! (BEP 11), among vmt clients and from a vmt peer to Transmission.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmt_swarm::{DialState, Engine, EngineConfig};
use vmt_tests::{
    bin, dialing, shutdown_all, within, Netns, Proc, TestImage, Transmission, TransmissionSetup,
    MIB,
};

/// Whether Transmission is installed; if not, says loudly that the test is skipped.
fn have_transmission(test: &str) -> bool {
    let ok = Command::new("transmission-daemon")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("SKIPPED {test}: transmission-daemon is not installed (apt-get install transmission-daemon transmission-cli)");
    }
    ok
}

/// Polls Transmission (off the runtime's threads) until it completes or `limit` passes.
async fn transmission_completes(tr: &Transmission, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if tokio::task::block_in_place(|| tr.complete()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// A vmt seeder serves 256 MiB to Transmission over loopback (no cap) on one connection: our
/// extended handshake tells Transmission our `reqq`, so it never queues more requests than
/// the seeder takes (without it, Transmission queued past 4096 and the seeder dropped it 13
/// times in 140 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmission_downloads_256_mib_from_a_vmt_seeder_without_disconnects() {
    let test = "transmission_downloads_256_mib_from_a_vmt_seeder_without_disconnects";
    if !have_transmission(test) {
        return;
    }
    let img = TestImage::new(256 * MIB, 141).await;
    let torrent_path = img.dir.path().join("image.torrent");
    img.torrent.save(&torrent_path).unwrap();
    let leech_dir = img.dir.path().join("leech");
    let tr = Transmission::start(&img.dir.path().join("tr"), &leech_dir);
    tr.add(&torrent_path);
    let tr_addr: SocketAddr = format!("127.0.0.1:{}", tr.peer_port).parse().unwrap();
    let seed = img
        .seeder(EngineConfig {
            peers: vec![tr_addr],
            ..Default::default()
        })
        .await;
    // Until Transmission is complete, the seeder's one connection to it must stay up (once
    // complete, Transmission closes connections to seeds by itself).
    let start = Instant::now();
    let mut done = false;
    while !done && start.elapsed() < Duration::from_secs(600) {
        let stats = seed.stats();
        done = tokio::task::block_in_place(|| tr.complete());
        if let Some(dial) = stats.dials.iter().find(|d| d.addr == tr_addr) {
            assert!(
                dial.attempts <= 1
                    && (dial.attempts == 0 || matches!(dial.state, DialState::Connected)),
                "the seeder's connection to Transmission did not stay up: {dial:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = start.elapsed();
    assert!(
        done,
        "Transmission did not complete; its log:\n{}",
        tr.log()
    );
    eprintln!("{test}: 256 MiB in {took:.1?}");
    let stats = seed.stats();
    assert!(stats.uploaded >= img.data.len() as u64);
    let got = std::fs::read(leech_dir.join(img.torrent.name())).unwrap();
    assert!(got == img.data, "Transmission's copy differs");
    shutdown_all(&[&seed]).await;
}

/// Whether `engine` has a live connection to the engine whose peer id is `other`.
fn connected_to(engine: &Engine, other: &Engine) -> bool {
    let id = other.peer_id();
    engine
        .stats()
        .peers
        .iter()
        .any(|p| p.peer_id == id && p.connected)
}

/// Clients "a", "b" and "c", each given only `seed`, once each is connected to the other two
/// (they learn of each other through PEX).
async fn clients_meeting_through_pex(img: &TestImage, seed: &Engine) -> [Engine; 3] {
    let clients = [
        img.client("a", dialing(&[seed])).await,
        img.client("b", dialing(&[seed])).await,
        img.client("c", dialing(&[seed])).await,
    ];
    within(
        "the clients meet through PEX",
        Duration::from_secs(30),
        async {
            while !clients.iter().all(|x| {
                clients
                    .iter()
                    .all(|y| std::ptr::eq(x, y) || connected_to(x, y))
            }) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    clients
}

/// Three vmt clients given only the seeder (no tracker) find each other through the seeder's
/// PEX messages; with PEX off, they stay strangers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmt_clients_given_one_common_peer_learn_each_other_through_pex() {
    let img = TestImage::new(16 * MIB, 142).await;
    // Slow enough that every client is still downloading when the others join.
    let seed = img
        .seeder(EngineConfig {
            upload_limit: Some(4 * MIB as u64),
            ..Default::default()
        })
        .await;
    let silent = EngineConfig {
        pex: false,
        ..dialing(&[&seed])
    };
    let quiet: Vec<Engine> = [
        img.client("q1", silent.clone()).await,
        img.client("q2", silent).await,
    ]
    .into();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Both got in (a handshake without ut_pex once failed to encode, so they never did).
    assert!(
        quiet.iter().all(|q| connected_to(q, &seed)),
        "the clients without PEX connect to the seeder"
    );
    assert!(
        !connected_to(&quiet[0], &quiet[1]),
        "without PEX, nothing tells them of each other"
    );
    shutdown_all(&[&quiet[0], &quiet[1]]).await;

    let clients = clients_meeting_through_pex(&img, &seed).await;
    for (c, name) in clients.iter().zip(["a", "b", "c"]) {
        img.finish_download(c, name).await;
    }
    shutdown_all(&[&seed]).await;
}

/// A seeder that clients dialed hears of them again through their PEX messages (each names
/// the others, where they listen), and must not dial them: a second connection to a
/// connected peer replaces the first (the one dialed by the smaller peer id survives), with
/// the first one's requests, choke state and, at an injecting seeder, its reservations. In a
/// headless crowd of six that cost every client but one a 4-5 s wait at its first reads: the
/// seeder's connections to all of them were replaced about a second in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_does_not_dial_clients_connected_to_it() {
    let img = TestImage::new(16 * MIB, 144).await;
    let seed = img
        .seeder(EngineConfig {
            upload_limit: Some(4 * MIB as u64),
            ..Default::default()
        })
        .await;
    let clients = clients_meeting_through_pex(&img, &seed).await;
    // Each client's PEX names the two others to the seeder within a tick of meeting them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listening: Vec<SocketAddr> = clients.iter().filter_map(|c| c.listen_addr()).collect();
    let dialed: Vec<SocketAddr> = seed.stats().dials.iter().map(|d| d.addr).collect();
    assert!(
        dialed.iter().all(|a| !listening.contains(a)),
        "the seeder dialed clients that are connected to it: {dialed:?} (clients at {listening:?})"
    );
    assert!(clients.iter().all(|c| connected_to(&seed, c)));
    for (c, name) in clients.iter().zip(["a", "b", "c"]) {
        img.finish_download(c, name).await;
    }
    shutdown_all(&[&seed]).await;
}

/// Transmission, told of nobody, dials a vmt client it learned of only through the vmt
/// seeder's PEX message. Transmission never dials 127.0.0.0/8 PEX peers, so all three run in
/// a private network namespace on addresses of their own; the vmt client runs with
/// `--no-pex`, so it cannot learn of Transmission and dial it first: the connection shows in
/// Transmission's peer list without the `I` (incoming) flag.
///
/// It failed twice over on vmt's side: a `--no-pex` client's extended handshake did not
/// encode (so it never connected to the seeder at all), and the client dialed the seeder from
/// the seeder's own address (on one loopback the system picks the destination's address as
/// the source), so the seeder's PEX named an address nobody listens on. Now a vmt peer dials
/// from the address it listens on, as Transmission does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmission_learns_a_vmt_peer_through_pex() {
    let test = "transmission_learns_a_vmt_peer_through_pex";
    if !have_transmission(test) {
        return;
    }
    let (tr_ip, seed_ip, client_ip) = ("10.214.77.1", "10.214.77.2", "10.214.77.3");
    let Some(ns) = Netns::create("dh-pex", &[tr_ip, seed_ip, client_ip]) else {
        eprintln!("SKIPPED {test}: cannot create a network namespace (needs root and ip)");
        return;
    };
    let img = TestImage::new(64 * MIB, 143).await;
    let torrent_path = img.dir.path().join("image.torrent");
    img.torrent.save(&torrent_path).unwrap();
    let tr = Transmission::start_with(
        &img.dir.path().join("tr"),
        &img.dir.path().join("leech"),
        &TransmissionSetup {
            bind: tr_ip.into(),
            peer_port: Some(43101),
            rpc_port: Some(43102),
            pex: true,
            netns: Some(ns.name.clone()),
            // Its default (1, MSE preferred): it dials the vmt client encrypted.
            encryption: 1,
        },
    );
    tr.add(&torrent_path);
    let vmt_run = bin("vmt-run");
    let seed_addr = format!("{seed_ip}:43103");
    let client_addr = format!("{client_ip}:43104");
    // Slow uploads keep both downloads going for the whole test.
    let _seed = Proc::spawn(
        ns.command(&vmt_run)
            .args(["seed", "--image"])
            .arg(&img.path)
            .arg("--torrent")
            .arg(&torrent_path)
            .args(["--listen", &seed_addr, "--upload-limit", "2MiB/s"])
            .args(["--peer", &format!("{tr_ip}:43101")])
            .env("VMT_LOG", "info,vmt_swarm=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(img.dir.path().join("seed.log")).unwrap()),
    );
    let _client = Proc::spawn(
        ns.command(&vmt_run)
            .args(["fetch", "--torrent"])
            .arg(&torrent_path)
            .arg("--out")
            .arg(img.dir.path().join("client.img"))
            .args(["--listen", &client_addr, "--peer", &seed_addr, "--no-pex"])
            .args(["--upload-limit", "1MiB/s"])
            .env("VMT_LOG", "info,vmt_swarm=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(img.dir.path().join("client.log")).unwrap()),
    );
    let mut peers = String::new();
    let started = Instant::now();
    let found = tokio::task::block_in_place(|| {
        while started.elapsed() < Duration::from_secs(60) {
            peers = tr.peers();
            if peers.lines().any(|l| l.starts_with(client_ip)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });
    let log = |name: &str| std::fs::read_to_string(img.dir.path().join(name)).unwrap_or_default();
    assert!(
        found,
        "Transmission never connected to the vmt client; its peers:\n{peers}\nits log:\n{}\n\
         seeder:\n{}\nclient:\n{}",
        tr.log(),
        log("seed.log"),
        log("client.log"),
    );
    eprintln!(
        "{test}: Transmission dialed the vmt client {:.1?} after the vmt processes started",
        started.elapsed()
    );
    let row = peers.lines().find(|l| l.starts_with(client_ip)).unwrap();
    // Columns: Address, Flags, Done, Down, Up, Client.
    let flags = row.split_whitespace().nth(1).unwrap_or("");
    assert!(
        !flags.contains('I'),
        "Transmission did not dial the vmt client (flags {flags:?}): {row}"
    );
}

/// Transmission starts from nothing but a magnet link (BEP 9) and a vmt seeder dialing in:
/// it fetches the info dictionary from the seeder over ut_metadata, verifies it against the
/// info hash, then the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmission_starts_from_a_magnet_link_of_a_vmt_seeder() {
    let test = "transmission_starts_from_a_magnet_link_of_a_vmt_seeder";
    if !have_transmission(test) {
        return;
    }
    let img = TestImage::new(16 * MIB, 144).await;
    let leech_dir = img.dir.path().join("leech");
    let tr = Transmission::start(&img.dir.path().join("tr"), &leech_dir);
    let magnet = img.torrent.magnet_link(None);
    assert!(magnet.starts_with("magnet:?xt=urn:btih:"), "{magnet}");
    tr.add_magnet(&magnet);
    let seed = img
        .seeder(EngineConfig {
            peers: vec![format!("127.0.0.1:{}", tr.peer_port).parse().unwrap()],
            ..Default::default()
        })
        .await;
    let done = transmission_completes(&tr, Duration::from_secs(120)).await;
    assert!(
        done,
        "Transmission did not complete from the magnet link; its log:\n{}",
        tr.log()
    );
    let got = std::fs::read(leech_dir.join(img.torrent.name())).unwrap();
    assert!(got == img.data, "Transmission's copy differs");
    shutdown_all(&[&seed]).await;
}
