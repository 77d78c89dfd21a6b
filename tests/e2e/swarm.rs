//! The swarm engine on loopback: real sockets on 127.0.0.1, real bytes, every wait bounded.
//!
//! In-process tests drive `vmt_swarm::Engine` directly (several engines in one runtime, as
//! rqbit's e2e tests do); the CLI tests at the end run the real `vmt-run seed` / `fetch`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use vmt_swarm::{Engine, EngineConfig, Storage, Torrent};

pub(crate) const MIB: usize = 1 << 20;
pub(crate) const PIECE: u32 = 256 * 1024;

pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Writes a random image and its torrent into `dir`.
pub(crate) async fn image(dir: &Path, len: usize, seed: u64) -> (PathBuf, Vec<u8>, Torrent) {
    let data = random_bytes(len, seed);
    let path = dir.join("image.img");
    std::fs::write(&path, &data).unwrap();
    let torrent = Torrent::create(&path, PIECE, Vec::new()).await.unwrap();
    (path, data, torrent)
}

pub(crate) async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

pub(crate) async fn seeder(torrent: &Torrent, img: &Path, config: EngineConfig) -> Engine {
    let storage = Storage::open_seed(img, torrent, false).unwrap();
    let listener = Engine::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Engine::start(torrent.clone(), storage, Some(listener), config)
}

/// A client writing to `dir/<name>.img`, listening on its own port.
pub(crate) async fn client(
    torrent: &Torrent,
    dir: &Path,
    name: &str,
    config: EngineConfig,
) -> Engine {
    let (out, bits) = paths(dir, name);
    let (storage, _) = Storage::open_download(&out, torrent, &bits).unwrap();
    let listener = Engine::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Engine::start(torrent.clone(), storage, Some(listener), config)
}

pub(crate) fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.img")),
        dir.join(format!("{name}.vmtbits")),
    )
}

pub(crate) fn peers(addrs: &[Option<SocketAddr>]) -> Vec<SocketAddr> {
    addrs.iter().map(|a| a.unwrap()).collect()
}

pub(crate) async fn shutdown_all(engines: &[&Engine]) {
    for e in engines {
        e.shutdown().await.unwrap();
        assert_eq!(e.running_tasks(), 0, "no engine task outlives shutdown");
    }
}

/// One seeder, three clients that do not upload: every byte comes from the seeder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_server_all_bytes_from_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data, torrent) = image(dir.path(), 64 * MIB, 1).await;
    let seed = seeder(&torrent, &img, EngineConfig::default()).await;
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        let config = EngineConfig {
            peers: peers(&[seed.listen_addr()]),
            upload: false,
            ..Default::default()
        };
        clients.push(client(&torrent, dir.path(), name, config).await);
    }
    // Clients also know each other, so "no upload" is what keeps bytes off client links.
    let addrs: Vec<_> = clients.iter().map(|c| c.listen_addr().unwrap()).collect();
    for c in &clients {
        for &a in &addrs {
            c.add_peer(a);
        }
    }
    for c in &clients {
        within(
            "client download",
            Duration::from_secs(120),
            c.wait_complete(),
        )
        .await
        .unwrap();
    }
    for (c, name) in clients.iter().zip(["a", "b", "c"]) {
        let st = c.stats();
        assert_eq!(
            st.downloaded_except(&seed.peer_id()),
            0,
            "{name} got bytes from a client"
        );
        assert_eq!(st.uploaded, 0, "{name} uploaded in client-server mode");
        assert_eq!(st.hash_failures, 0);
        c.shutdown().await.unwrap();
        assert!(
            std::fs::read(paths(dir.path(), name).0).unwrap() == data,
            "{name} differs"
        );
    }
    assert!(seed.stats().uploaded >= 3 * data.len() as u64);
    shutdown_all(&[&seed]).await;
}

/// Swarm mode with a slow seeder: clients trade pieces among themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_clients_exchange_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data, torrent) = image(dir.path(), 64 * MIB, 2).await;
    // 64 MiB to three clients at 24 MiB/s takes 8 s from the seeder alone; sharing is the only
    // way the clients finish with less from it, and some sharing is certain since every client
    // holds pieces the others lack while the seeder is busy.
    let seed = seeder(
        &torrent,
        &img,
        EngineConfig {
            upload_limit: Some(24 * MIB as u64),
            ..Default::default()
        },
    )
    .await;
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        let config = EngineConfig {
            peers: peers(&[seed.listen_addr()]),
            ..Default::default()
        };
        clients.push(client(&torrent, dir.path(), name, config).await);
    }
    let addrs: Vec<_> = clients.iter().map(|c| c.listen_addr().unwrap()).collect();
    for c in &clients {
        for &a in &addrs {
            c.add_peer(a);
        }
    }
    for c in &clients {
        within(
            "client download",
            Duration::from_secs(120),
            c.wait_complete(),
        )
        .await
        .unwrap();
    }
    let from_clients: u64 = clients
        .iter()
        .map(|c| c.stats().downloaded_except(&seed.peer_id()))
        .sum();
    let uploaded_by_clients: u64 = clients.iter().map(|c| c.stats().uploaded).sum();
    eprintln!(
        "swarm: {from_clients} bytes moved between clients, {uploaded_by_clients} uploaded by them"
    );
    assert!(from_clients > 0, "no client got a byte from another client");
    assert!(uploaded_by_clients > 0);
    for (c, name) in clients.iter().zip(["a", "b", "c"]) {
        c.shutdown().await.unwrap();
        assert!(
            std::fs::read(paths(dir.path(), name).0).unwrap() == data,
            "{name} differs"
        );
    }
    shutdown_all(&[&seed]).await;
}

/// A demanded piece arrives long before the plan would reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_overtakes_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data, torrent) = image(dir.path(), 16 * MIB, 3).await;
    let n = torrent.piece_count();
    // 4 MiB/s: the plan takes 4 s, so the demand lands while most of it is pending.
    let seed = seeder(
        &torrent,
        &img,
        EngineConfig {
            upload_limit: Some(4 * MIB as u64),
            ..Default::default()
        },
    )
    .await;
    // Plan and subscription are in place before the first peer is dialed, so every piece is
    // fetched by the plan and seen arriving.
    let c = client(&torrent, dir.path(), "c", EngineConfig::default()).await;
    let plan: Vec<u32> = (0..c.layout().blocks()).collect();
    c.set_plan(&plan);
    let mut events = c.subscribe();
    c.add_peer(seed.listen_addr().unwrap());
    let mut order = Vec::new();
    // Wait for a few plan pieces, then demand the plan's last piece.
    while order.len() < 4 {
        order.push(
            within("plan pieces", Duration::from_secs(60), events.recv())
                .await
                .unwrap(),
        );
    }
    let last = torrent.piece(n - 1).unwrap();
    assert!(c.demand(last));
    // Counted after the call: every piece verified before the demand took effect is included,
    // however late this task runs.
    let at_demand = c.stats().pieces.have as usize;
    while order.len() < n as usize {
        order.push(
            within("all pieces", Duration::from_secs(60), events.recv())
                .await
                .unwrap(),
        );
    }
    let arrived = order.iter().position(|&p| p == n - 1).unwrap();
    eprintln!(
        "demand: piece {} demanded after {at_demand} arrivals, arrived {arrived}th",
        n - 1
    );
    // In plan order it would be the last. Only pieces partly received when the demand came may
    // land before it (the rest of the pipeline is cancelled): the request window keeps a few
    // blocks queued on loopback, parts of at most 3 pieces of 256 KiB.
    assert!(
        arrived <= at_demand + 3,
        "demanded piece arrived {arrived}th, demand made after {at_demand} pieces: {order:?}"
    );
    // Before the demand the plan was followed from its start.
    assert!(
        order[..at_demand.min(order.len())].iter().all(|&p| p < 8),
        "plan not followed: {order:?}"
    );
    // The rest of the plan kept its order, except pieces cancelled for the demand and
    // re-requested after it.
    let rest: Vec<u32> = order.iter().copied().filter(|&p| p != n - 1).collect();
    assert!(
        rest.windows(2).filter(|w| w[0] > w[1]).count() <= 2,
        "plan order broken: {rest:?}"
    );
    c.shutdown().await.unwrap();
    assert!(std::fs::read(paths(dir.path(), "c").0).unwrap() == data);
    shutdown_all(&[&seed]).await;
}

/// A peer that claims every piece and serves garbage.
async fn malicious_peer(torrent: &Torrent) -> (SocketAddr, tokio::task::JoinHandle<u64>) {
    use peer_binary_protocol::extended::PeerExtendedMessageIds;
    use peer_binary_protocol::{Handshake, Message, MessageDeserializeError, Piece};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let info_hash = torrent.info_hash();
    let bitfield_len = torrent.lengths().piece_bitfield_bytes();
    let n = torrent.piece_count();
    let task = tokio::spawn(async move {
        let mut served = 0u64;
        let ext = || PeerExtendedMessageIds {
            ut_metadata: None,
            ut_pex: None,
        };
        // Serve connections until the victim bans us (it then stops dialing).
        while let Ok(Ok((mut s, _))) =
            tokio::time::timeout(Duration::from_secs(5), listener.accept()).await
        {
            let mut hs = [0u8; 68];
            let id = librqbit_core::hash_id::Id20::new(*b"-EVIL00-abcdefghijkl");
            let len = Handshake::new(info_hash, id).serialize_unchecked_len(&mut hs);
            if s.write_all(&hs[..len]).await.is_err() || s.read_exact(&mut hs).await.is_err() {
                continue;
            }
            let mut bits = vec![0xffu8; bitfield_len];
            // Spare bits at the end must be clear.
            *bits.last_mut().unwrap() = 0xff << (bitfield_len as u32 * 8 - n);
            let mut out = vec![0u8; 64 * 1024];
            let mut k = Message::Bitfield(librqbit::ByteBuf(&bits))
                .serialize(&mut out, &ext)
                .unwrap();
            k += Message::Unchoke.serialize(&mut out[k..], &ext).unwrap();
            if s.write_all(&out[..k]).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 1 << 20];
            let (mut start, mut end) = (0, 0);
            let garbage = vec![0x5au8; 16384];
            'conn: loop {
                match s.read(&mut buf[end..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(r) => end += r,
                }
                loop {
                    match Message::deserialize(&buf[start..end], &[]) {
                        Ok((Message::Request(r), used)) => {
                            start += used;
                            let data = &garbage[..r.length as usize];
                            let m = Message::Piece(Piece::from_data(r.index, r.begin, data));
                            let k = m.serialize(&mut out, &ext).unwrap();
                            if s.write_all(&out[..k]).await.is_err() {
                                break 'conn;
                            }
                            served += r.length as u64;
                        }
                        Ok((_, used)) => start += used,
                        Err(MessageDeserializeError::NotEnoughData(..)) => break,
                        Err(_) => break 'conn,
                    }
                }
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
        }
        served
    });
    (addr, task)
}

/// Corrupt data is caught by the SHA-1 check, never stored, the peer is banned, and the
/// download completes from the honest seeder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_peer_is_detected_and_banned() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data, torrent) = image(dir.path(), 8 * MIB, 4).await;
    // A slow seeder leaves the liar plenty of pieces to be asked for.
    let seed = seeder(
        &torrent,
        &img,
        EngineConfig {
            upload_limit: Some(2 * MIB as u64),
            ..Default::default()
        },
    )
    .await;
    let (evil, evil_task) = malicious_peer(&torrent).await;
    let c = client(&torrent, dir.path(), "c", EngineConfig::default()).await;
    // Watch every verified piece as it lands: its bytes on disk must already be the right ones.
    // Subscribed before any peer is dialed, so no piece goes unseen.
    let mut events = c.subscribe();
    c.add_peer(evil);
    c.add_peer(seed.listen_addr().unwrap());
    let mut checked = 0;
    let mut buf = vec![0u8; PIECE as usize];
    while checked < torrent.piece_count() {
        let p = within("verified pieces", Duration::from_secs(60), events.recv())
            .await
            .unwrap();
        let off = p as usize * PIECE as usize;
        let len = c.read_at(off as u64, &mut buf).unwrap();
        assert!(
            buf[..len] == data[off..off + len],
            "piece {p} was stored with wrong bytes"
        );
        checked += 1;
    }
    let st = c.stats();
    eprintln!(
        "corrupt: {} hash failures, {} wasted bytes",
        st.hash_failures, st.wasted
    );
    assert!(st.hash_failures >= 1, "the corrupt pieces were not noticed");
    let liar = st
        .peers
        .iter()
        .find(|p| &p.peer_id == b"-EVIL00-abcdefghijkl")
        .unwrap();
    assert!(liar.banned, "the corrupt peer was not banned");
    assert_eq!(liar.hash_failures, vmt_swarm::MAX_STRIKES);
    c.shutdown().await.unwrap();
    assert!(std::fs::read(paths(dir.path(), "c").0).unwrap() == data);
    assert!(
        within("liar ends", Duration::from_secs(30), evil_task)
            .await
            .unwrap()
            > 0
    );
    shutdown_all(&[&seed]).await;
}

/// Stop a client mid-download and start it again: it resumes from its bitmap and fetches only
/// what it did not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_refetching() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data, torrent) = image(dir.path(), 16 * MIB, 5).await;
    let seed = seeder(
        &torrent,
        &img,
        EngineConfig {
            upload_limit: Some(8 * MIB as u64),
            ..Default::default()
        },
    )
    .await;
    let config = EngineConfig {
        peers: peers(&[seed.listen_addr()]),
        ..Default::default()
    };
    let c = client(&torrent, dir.path(), "c", config.clone()).await;
    let half = torrent.piece_count() / 2;
    let mut events = c.subscribe();
    for _ in 0..half {
        within("half the pieces", Duration::from_secs(60), events.recv())
            .await
            .unwrap();
    }
    c.shutdown().await.unwrap();
    let had = c.stats().pieces.have;
    assert!(had >= half && had < torrent.piece_count());

    let (out, bits) = paths(dir.path(), "c");
    let (storage, resume) = Storage::open_download(&out, &torrent, &bits).unwrap();
    assert_eq!(
        resume.recorded, had,
        "every verified piece was recorded at shutdown"
    );
    assert_eq!(resume.rehashed, 0);
    let listener = Engine::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let c = Engine::start(torrent.clone(), storage, Some(listener), config);
    within(
        "resumed download",
        Duration::from_secs(60),
        c.wait_complete(),
    )
    .await
    .unwrap();
    let missing = (torrent.piece_count() - had) as u64 * PIECE as u64;
    let st = c.stats();
    assert!(
        st.downloaded <= missing,
        "refetched verified pieces: {} bytes downloaded, {missing} were missing",
        st.downloaded
    );
    assert_eq!(st.downloaded, missing);
    c.shutdown().await.unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
    shutdown_all(&[&seed]).await;
}

// ---- the real binaries ----

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn vmt_run() -> Command {
    Command::new(vmt_tests::bin("vmt-run"))
}

/// `vmt-run seed` + two `vmt-run fetch`; one fetch is killed with SIGKILL halfway and
/// restarted: it resumes and the result is byte-identical.
#[test]
fn cli_seed_fetch_kill_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(16 * MIB, 6);
    let img = dir.path().join("app.img");
    std::fs::write(&img, &data).unwrap();
    let torrent = dir.path().join("app.torrent");
    let port = free_port();
    let seed_addr = format!("127.0.0.1:{port}");
    let _seed = KillOnDrop(
        vmt_run()
            .args(["seed", "--image"])
            .arg(&img)
            .args([
                "--listen",
                &seed_addr,
                "--piece-size",
                "256KiB",
                "--torrent-out",
            ])
            .arg(&torrent)
            .args(["--upload-limit", "4MiB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    vmt_tests::wait_until(
        "the seeder writes its torrent",
        Duration::from_secs(60),
        || torrent.exists(),
    );

    // First fetch: SIGKILL once its bitmap records some pieces.
    let out = dir.path().join("got.img");
    let bits = dir.path().join("got.img.vmtbits");
    let fetch = || {
        let mut cmd = vmt_run();
        cmd.args(["fetch", "--torrent"])
            .arg(&torrent)
            .args(["--peer", &seed_addr, "--out"])
            .arg(&out);
        cmd
    };
    let mut first = KillOnDrop(
        fetch()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    vmt_tests::wait_until("the bitmap records pieces", Duration::from_secs(60), || {
        std::fs::metadata(&bits).is_ok_and(|m| m.len() > 0)
    });
    std::thread::sleep(Duration::from_millis(500));
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(
        std::fs::read(&out).unwrap() != data,
        "killed too late to test resuming"
    );

    let second = vmt_tests::run_with_timeout(&mut fetch(), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "fetch failed:\n{stdout}\n{stderr}");
    assert!(
        std::fs::read(&out).unwrap() == data,
        "resumed download differs"
    );
    // "resumed N pieces" and "downloaded B bytes" in the summary.
    let num_after = |key: &str| -> u64 {
        let text = format!("{stdout}{stderr}");
        let at = text
            .find(key)
            .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"));
        text[at + key.len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let resumed = num_after("resumed");
    let downloaded = num_after("downloaded");
    assert!(resumed > 0, "nothing was resumed");
    let n = (16 * MIB as u64).div_ceil(PIECE as u64);
    assert!(
        downloaded <= (n - resumed) * PIECE as u64,
        "fetched {downloaded} bytes although {resumed} of {n} pieces were resumed"
    );

    // A client-server fetch next to it works too, and bad input is a clear error.
    let out2 = dir.path().join("got2.img");
    let r = vmt_tests::run_with_timeout(
        vmt_run()
            .args(["fetch", "--no-upload", "--torrent"])
            .arg(&torrent)
            .args(["--peer", &seed_addr, "--out"])
            .arg(&out2),
        Duration::from_secs(60),
    );
    assert!(r.status.success());
    assert!(std::fs::read(&out2).unwrap() == data);
}

/// Bad input: one clear line on stderr and a non-zero exit, never a panic.
#[test]
fn cli_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str], expect: &str| {
        let out = vmt_tests::run_with_timeout(vmt_run().args(args), Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err:?}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    };
    let missing = dir.path().join("missing.img");
    check(
        &[
            "seed",
            "--image",
            missing.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "missing.img",
    );
    let bad = dir.path().join("bad.torrent");
    std::fs::write(&bad, b"d4:spam").unwrap();
    let out = dir.path().join("o.img");
    check(
        &[
            "fetch",
            "--torrent",
            bad.to_str().unwrap(),
            "--peer",
            "127.0.0.1:9",
            "--out",
            out.to_str().unwrap(),
        ],
        "invalid torrent",
    );
    // A busy port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let img = dir.path().join("x.img");
    std::fs::write(&img, random_bytes(MIB, 9)).unwrap();
    check(
        &[
            "seed",
            "--image",
            img.to_str().unwrap(),
            "--listen",
            &busy_addr,
        ],
        "cannot listen on",
    );
    let help =
        vmt_tests::run_with_timeout(vmt_run().args(["fetch", "--help"]), Duration::from_secs(30));
    let help = String::from_utf8_lossy(&help.stdout);
    for opt in [
        "--torrent",
        "--peer",
        "--out",
        "--listen",
        "--seed",
        "--no-upload",
        "--download-limit",
    ] {
        assert!(help.contains(opt), "fetch --help lacks {opt}");
    }
}

// ---- tracker announces ----

/// A minimal HTTP tracker: remembers every announced port and answers with all of them as
/// compact 127.0.0.1 peers. Returns its URL and the announced ports.
async fn mock_tracker() -> (String, Arc<std::sync::Mutex<Vec<u16>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/announce", listener.local_addr().unwrap());
    let ports = Arc::new(std::sync::Mutex::new(Vec::<u16>::new()));
    let seen = ports.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let port = text
                .split(['?', '&', ' '])
                .find_map(|kv| kv.strip_prefix("port="))
                .and_then(|p| p.parse::<u16>().ok());
            let peers: Vec<u8> = {
                let mut v = seen.lock().unwrap();
                if let Some(p) = port {
                    if !v.contains(&p) {
                        v.push(p);
                    }
                }
                v.iter()
                    .flat_map(|p| [127, 0, 0, 1, (p >> 8) as u8, *p as u8])
                    .collect()
            };
            // A bencoded announce reply: interval and compact peers (test fixture only).
            let mut body = format!("d8:intervali5e5:peers{}:", peers.len()).into_bytes();
            body.extend_from_slice(&peers);
            body.push(b'e');
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
    });
    (url, ports)
}

/// A client with no `--peer` finds the seeder through the torrent's tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_announce_finds_the_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ports) = mock_tracker().await;
    let data = random_bytes(4 * MIB, 10);
    let img = dir.path().join("image.img");
    std::fs::write(&img, &data).unwrap();
    let torrent = Torrent::create(&img, PIECE, vec![url.clone()])
        .await
        .unwrap();
    assert_eq!(torrent.trackers(), [url]);
    let seed = seeder(&torrent, &img, EngineConfig::default()).await;
    let seed_port = seed.listen_addr().unwrap().port();
    within("the seeder announces", Duration::from_secs(30), async {
        while !ports.lock().unwrap().contains(&seed_port) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let c = client(&torrent, dir.path(), "c", EngineConfig::default()).await;
    within(
        "download via tracker peers",
        Duration::from_secs(60),
        c.wait_complete(),
    )
    .await
    .unwrap();
    c.shutdown().await.unwrap();
    assert!(std::fs::read(paths(dir.path(), "c").0).unwrap() == data);
    shutdown_all(&[&seed]).await;
}

/// With no reachable peer, `fetch` says so, keeps retrying, and SIGTERM stops it cleanly with
/// its progress file written.
#[test]
fn cli_unreachable_peer_is_reported_and_sigterm_stops() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("app.img");
    std::fs::write(&img, random_bytes(MIB, 11)).unwrap();
    let torrent = dir.path().join("app.torrent");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt
        .block_on(Torrent::create(&img, PIECE, Vec::new()))
        .unwrap();
    t.save(&torrent).unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let out = dir.path().join("got.img");
    let mut child = KillOnDrop(
        vmt_run()
            .args(["fetch", "--torrent"])
            .arg(&torrent)
            .args(["--peer", &dead, "--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen
        .iter()
        .any(|l: &String| l.contains("no reachable peer") && l.contains(&dead))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no 'no reachable peer' status within 30 s: {seen:?}"),
        }
    }
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "fetch ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(!status.success(), "an interrupted fetch must not exit 0");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
}

/// Regression (found with Transmission 3.00, which pipelines ~700 requests on loopback): the
/// seeder used to drop requests beyond 512 queued, and the leecher stalled at 81.6 % waiting
/// for them. Every request of a deep pipeline must be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_request_pipelines_are_all_served() {
    use peer_binary_protocol::extended::PeerExtendedMessageIds;
    use peer_binary_protocol::{Handshake, Message, MessageDeserializeError, Request};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let (img, data, torrent) = image(dir.path(), 16 * MIB, 30).await;
    let seed = seeder(&torrent, &img, EngineConfig::default()).await;
    let mut s = tokio::net::TcpStream::connect(seed.listen_addr().unwrap())
        .await
        .unwrap();
    let ext = || PeerExtendedMessageIds {
        ut_metadata: None,
        ut_pex: None,
    };
    let mut out = vec![0u8; 1 << 20];
    let id = librqbit_core::hash_id::Id20::new(*b"-DEEP00-abcdefghijkl");
    let k = Handshake::new(torrent.info_hash(), id).serialize_unchecked_len(&mut out);
    s.write_all(&out[..k]).await.unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).await.unwrap();
    let k = Message::Interested.serialize(&mut out, &ext).unwrap();
    s.write_all(&out[..k]).await.unwrap();
    let blocks = (16 * MIB / 16384) as u32; // 1024 requests in one burst
    let mut buf = vec![0u8; 4 << 20];
    let (mut start, mut end) = (0, 0);
    let mut got = 0u32;
    let mut sent = false;
    while got < blocks {
        let n = within("pieces", Duration::from_secs(30), s.read(&mut buf[end..]))
            .await
            .unwrap();
        assert!(n > 0, "seeder closed after {got} blocks");
        end += n;
        loop {
            match Message::deserialize(&buf[start..end], &[]) {
                Ok((msg, used)) => {
                    match msg {
                        Message::Unchoke if !sent => {
                            let mut k = 0;
                            for b in 0..blocks {
                                let r = Request::new(b / 16, (b % 16) * 16384, 16384);
                                k += Message::Request(r).serialize(&mut out[k..], &ext).unwrap();
                            }
                            s.write_all(&out[..k]).await.unwrap();
                            sent = true;
                        }
                        Message::Piece(p) => {
                            let (b0, b1) = p.data();
                            let at = p.index as usize * PIECE as usize + p.begin as usize;
                            assert!(b0 == &data[at..at + b0.len()]);
                            assert!(b1 == &data[at + b0.len()..at + b0.len() + b1.len()]);
                            got += 1;
                        }
                        _ => {}
                    }
                    start += used;
                }
                Err(MessageDeserializeError::NotEnoughData(..)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
    }
    assert_eq!(got, blocks);
    shutdown_all(&[&seed]).await;
}

/// Dropping every handle without `shutdown` still stops the engine: its listener closes and
/// the bitmap is recorded one last time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_engine_stops_and_records_its_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _data, torrent) = image(dir.path(), 4 * MIB, 31).await;
    let seed = seeder(&torrent, &img, EngineConfig::default()).await;
    let c = client(
        &torrent,
        dir.path(),
        "c",
        EngineConfig {
            peers: peers(&[seed.listen_addr()]),
            // Only the final flush can record the pieces.
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await;
    within("download", Duration::from_secs(60), c.wait_complete())
        .await
        .unwrap();
    let addr = c.listen_addr().unwrap();
    drop(c);
    within("the listener closes", Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (out, bits) = paths(dir.path(), "c");
    // The bitmap may exist from before (an early flush): wait for the one that records all.
    within("the final flush", Duration::from_secs(10), async {
        while Storage::recorded_pieces(&bits, &torrent).ok() != Some(torrent.piece_count()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (_, resume) = Storage::open_download(&out, &torrent, &bits).unwrap();
    assert_eq!(resume.recorded, torrent.piece_count());
    shutdown_all(&[&seed]).await;
}

/// `max_peers` bounds connections; a refused client keeps redialing and gets its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_peers_is_enforced_and_refused_clients_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data, torrent) = image(dir.path(), 4 * MIB, 32).await;
    let seed = seeder(
        &torrent,
        &img,
        EngineConfig {
            max_peers: 1,
            upload_limit: Some(2 * MIB as u64),
            ..Default::default()
        },
    )
    .await;
    let config = EngineConfig {
        peers: peers(&[seed.listen_addr()]),
        upload: false,
        max_redial_backoff: Duration::from_millis(500),
        ..Default::default()
    };
    let a = client(&torrent, dir.path(), "a", config.clone()).await;
    within("a connects", Duration::from_secs(30), async {
        while seed.stats().connected == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let b = client(&torrent, dir.path(), "b", config).await;
    // While a downloads, b is refused every time it dials.
    within("a completes", Duration::from_secs(60), async {
        while !a.is_complete() {
            assert!(
                seed.stats().connected <= 1,
                "more than max_peers connections"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(b.stats().pieces.have, 0);
    a.shutdown().await.unwrap();
    within(
        "b gets its turn",
        Duration::from_secs(60),
        b.wait_complete(),
    )
    .await
    .unwrap();
    b.shutdown().await.unwrap();
    for name in ["a", "b"] {
        assert!(std::fs::read(paths(dir.path(), name).0).unwrap() == data);
    }
    shutdown_all(&[&seed]).await;
}
