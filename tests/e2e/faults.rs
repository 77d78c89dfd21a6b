//! Issue 12: the fault and bad-input campaign's findings, one test per item (`r12_<item>_...`),
//! each on the real thing: real sockets, real mounts, the real binaries.

// ---- items 4, 5, 8 and 10 (where the downloaded bytes went): the swarm engine ----

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use librqbit_core::hash_id::Id20;
use peer_binary_protocol::extended::PeerExtendedMessageIds;
use peer_binary_protocol::{Handshake, Message, MessageDeserializeError, Piece};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vmt_swarm::{EngineConfig, Torrent};
use vmt_tests::{
    bin, content, free_port, shutdown_all, wait_until, within, CliSeeder, Proc, TestImage, MIB,
};

/// How long a step of these tests may take before it counts as a hang.
const STEP: Duration = Duration::from_secs(60);

fn no_extensions() -> PeerExtendedMessageIds {
    PeerExtendedMessageIds {
        ut_metadata: None,
        ut_pex: None,
    }
}

/// A TCP connection to `to` from the local address `from` (any of 127.0.0.0/8 on loopback):
/// a host of its own, as far as per-address limits and bans go.
async fn dial_from(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Our half of the BitTorrent handshake for `info_hash`, as peer `id`.
fn handshake(info_hash: Id20, id: [u8; 20]) -> Vec<u8> {
    let mut hs = [0u8; 68];
    let n = Handshake::new(info_hash, Id20::new(id)).serialize_unchecked_len(&mut hs);
    hs[..n].to_vec()
}

/// A peer id unique to `k`.
fn peer_id(prefix: &[u8; 8], k: u32) -> [u8; 20] {
    let mut id = [b'0'; 20];
    id[..8].copy_from_slice(prefix);
    id[8..18].copy_from_slice(format!("{k:010}").as_bytes());
    id
}

/// Connects from `from`, handshakes, then only sends keep-alives and never asks for anything:
/// a slot taken for nothing. Returns when the other side closes.
async fn idle_peer(info_hash: Id20, to: SocketAddr, from: IpAddr, k: u32) {
    let Ok(mut s) = dial_from(from, to).await else {
        return;
    };
    if s.write_all(&handshake(info_hash, peer_id(b"-IDLE00-", k)))
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(20)) => {
                if s.write_all(&[0, 0, 0, 0]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Item 4: 130 idle connections from one address and 130 from as many others fill a
/// seeder's table; a real client must still get in and download the image byte for byte, and
/// one address never holds more than its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_4_idle_connections_do_not_lock_a_client_out() {
    let img = TestImage::new(8 * MIB, 41).await;
    let seed = img.seeder(EngineConfig::default()).await;
    let to = seed.listen_addr().unwrap();
    let info_hash = img.torrent.info_hash();
    let one = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut flood = Vec::new();
    for k in 0..260u32 {
        let from = if k < 130 {
            one
        } else {
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, (k - 129) as u8))
        };
        flood.push(tokio::spawn(idle_peer(info_hash, to, from, k)));
    }
    let max = EngineConfig::default().max_peers;
    within("the flood fills the table", STEP, async {
        while seed.stats().connected < max {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let c = img
        .client(
            "c",
            EngineConfig {
                upload: false,
                ..vmt_tests::dialing(&[&seed])
            },
        )
        .await;
    let started = Instant::now();
    let done = tokio::time::timeout(STEP, c.wait_complete()).await;
    let st = seed.stats();
    let from_one = |st: &vmt_swarm::SwarmStats| {
        st.peers
            .iter()
            .filter(|p| p.connected && p.addr.ip() == one)
            .count()
    };
    eprintln!(
        "r12_4: client {} after {:.1} s; seeder: {} connected, {} from {one}, {} evicted; \
         client: {}",
        if done.is_ok() {
            "complete"
        } else {
            "NOT complete"
        },
        started.elapsed().as_secs_f64(),
        st.connected,
        from_one(&st),
        st.evicted,
        c.stats().peer_status()
    );
    assert!(
        matches!(done, Ok(Ok(()))),
        "the client was locked out by idle connections"
    );
    shutdown_all(&[&c]).await;
    img.assert_client_has_image("c");
    let st = seed.stats();
    assert!(st.connected <= max);
    assert!(
        from_one(&st) <= EngineConfig::default().max_peers_per_ip,
        "{} connections from {one}",
        from_one(&st)
    );
    assert!(
        st.evicted >= 1,
        "the client got in by evicting an idle peer"
    );
    for f in flood {
        f.abort();
    }
    shutdown_all(&[&seed]).await;
}

/// A tmpfs mounted for a test, unmounted on drop (lazily if something still holds it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mount a tmpfs on {}", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A `vmt-run mount` of `torrent` in `dir`: its process (stopped and unmounted on drop), the
/// image as served, its status address, its report and its log.
struct Mount {
    proc: Proc,
    served: PathBuf,
    status: String,
    report: PathBuf,
    log: PathBuf,
}

impl Mount {
    fn start(dir: &Path, torrent: &Path, data: &Path, name: &str, extra: &[&str]) -> Mount {
        let mountpoint = dir.join("mnt");
        std::fs::create_dir_all(&mountpoint).unwrap();
        let status = format!("127.0.0.1:{}", free_port());
        let report = dir.join("report.json");
        let log = dir.join("mount.log");
        let child = Command::new(bin("vmt-run"))
            .args(["mount", "--torrent"])
            .arg(torrent)
            .arg("--mountpoint")
            .arg(&mountpoint)
            .arg("--data")
            .arg(data)
            .args(["--strategy", "stream", "--status", &status, "--report"])
            .arg(&report)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let proc = Proc {
            child,
            mountpoint: Some(mountpoint.clone()),
        };
        let served = mountpoint.join(name);
        wait_until("the mount", STEP, || served.exists());
        Mount {
            proc,
            served,
            status,
            report,
            log,
        }
    }

    /// The `--status` endpoint's JSON.
    fn status(&self) -> serde_json::Value {
        let mut s = TcpStream::connect(&self.status).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).expect("an HTTP body");
        serde_json::from_str(body).unwrap()
    }

    /// SIGTERM; the exit status and the report (None if it was not written).
    fn stop(&mut self) -> (std::process::ExitStatus, Option<serde_json::Value>) {
        let status = self.proc.sigterm();
        let report = std::fs::read(&self.report)
            .ok()
            .map(|r| serde_json::from_slice(&r).unwrap());
        (status, report)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Reads `path` from the start in 1 MiB steps on a thread; the offset and error of the first
/// failure (None if the whole file was read), or a timeout if a read hangs. Every byte read
/// before must be the image's.
fn read_until_error(path: &Path, data: &[u8], limit: Duration) -> Option<(u64, std::io::Error)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_owned();
    let data = data.to_vec();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; MIB];
        let mut at = 0usize;
        while at < data.len() {
            let n = buf.len().min(data.len() - at);
            if let Err(e) = f.read_exact_at(&mut buf[..n], at as u64) {
                let _ = tx.send(Some((at as u64, e)));
                return;
            }
            assert!(buf[..n] == data[at..at + n], "wrong bytes at {at}");
            at += n;
        }
        let _ = tx.send(None);
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("a read hung for {limit:?}"),
        Err(e) => panic!("the reader failed: {e}"),
    }
}

/// A random image of `len` bytes in `dir`, seeded by `vmt-run seed` with `extra` flags: its
/// bytes, its torrent and the seeder.
fn seeded_image(
    dir: &Path,
    seed: u64,
    len: usize,
    extra: &[&str],
) -> (Vec<u8>, PathBuf, CliSeeder) {
    let data = content(seed, len);
    let image = dir.join("app.img");
    std::fs::write(&image, &data).unwrap();
    let torrent = dir.join("app.torrent");
    let seeder = CliSeeder::start(&image, &torrent, extra);
    (data, torrent, seeder)
}

/// Item 5: `--data` on a tmpfs smaller than the image. The full disk is the client's own
/// fault: one clear message, no re-downloading, reads of missing data get EIO instead of
/// hanging, present data stays readable, and the report is written at the end.
#[test]
fn r12_5_a_full_data_disk_fails_reads_once_and_keeps_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent, seeder) = seeded_image(dir.path(), 51, 64 * MIB, &[]);
    // Declared after the seeder and before the mount: dropped after the mount is gone.
    let full = Tmpfs::mount(&dir.path().join("small"), "24m");
    let mut m = Mount::start(
        dir.path(),
        &torrent,
        &full.0.join("data"),
        "app.img",
        &["--peer", &seeder.addr],
    );
    let (at, error) = read_until_error(&m.served, &data, STEP).expect("the disk fills up");
    eprintln!("r12_5: the read at {at} failed: {error}");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    // Fetching stopped: nothing is downloaded again and again.
    std::thread::sleep(Duration::from_secs(2));
    let before = m.status();
    std::thread::sleep(Duration::from_secs(3));
    let after = m.status();
    eprintln!(
        "r12_5: downloaded {} then {}; failure: {}",
        before["downloaded"], after["downloaded"], after["failure"]
    );
    assert_eq!(
        before["downloaded"], after["downloaded"],
        "still downloading into a full disk"
    );
    assert!(after["downloaded"].as_u64().unwrap() < 40 * MIB as u64);
    assert!(
        after["failure"]
            .as_str()
            .is_some_and(|f| f.contains("No space left")),
        "{after}"
    );
    // The failing read fails at once now; what is present is still served.
    let f = std::fs::File::open(&m.served).unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; MIB];
    let again = f.read_exact_at(&mut buf, at);
    assert!(again.is_err_and(|e| e.raw_os_error() == Some(libc::EIO)));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Every MiB's first block: each is answered at once, the present ones with the image.
    let t = Instant::now();
    let mut served = 0;
    for at in (0..data.len()).step_by(MIB) {
        let block = &mut buf[..16384];
        match f.read_exact_at(block, at as u64) {
            Ok(()) => {
                assert!(block[..] == data[at..at + 16384], "wrong bytes at {at}");
                served += 1;
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
        }
    }
    assert!(served > 0, "present data is still served");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop(f);
    let (exit, report) = m.stop();
    let log = m.log();
    eprintln!("r12_5: exit {exit:?}; log:\n{log}");
    let report = report.expect("the report is written");
    assert!(
        report["failure"]
            .as_str()
            .is_some_and(|f| f.contains("No space left")),
        "{report}"
    );
    assert!(!exit.success(), "a failed download does not exit 0");
    assert_eq!(
        log.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "one clear message"
    );
}

/// Dials `to` from `from` up to `tries` times, each time as a new peer id (and so a new port):
/// claims every piece, unchokes, answers the first request with garbage and hangs up. Returns
/// the connections that got that far and the ones refused.
async fn reconnecting_liar(
    torrent: &Torrent,
    to: SocketAddr,
    from: IpAddr,
    tries: u32,
) -> (u32, u32) {
    let info_hash = torrent.info_hash();
    let opening = crate::swarm::liar_opening(torrent);
    let (mut lied, mut refused) = (0, 0);
    let garbage = vec![0x5au8; 16384];
    for k in 0..tries {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Ok(mut s) = dial_from(from, to).await else {
            refused += 1;
            continue;
        };
        let mut hs = [0u8; 68];
        let greeted = async {
            s.write_all(&handshake(info_hash, peer_id(b"-LIAR00-", k)))
                .await?;
            s.read_exact(&mut hs).await
        };
        if !matches!(
            tokio::time::timeout(Duration::from_secs(5), greeted).await,
            Ok(Ok(_))
        ) {
            refused += 1;
            continue;
        }
        if s.write_all(&opening).await.is_err() {
            refused += 1;
            continue;
        }
        let mut out = vec![0u8; 64 * 1024];
        let mut buf = vec![0u8; 1 << 20];
        let mut end = 0;
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf[end..]).await {
                    Ok(0) | Err(_) => return false,
                    Ok(r) => end += r,
                }
                let mut start = 0;
                loop {
                    match Message::deserialize(&buf[start..end], &[]) {
                        Ok((Message::Request(r), _)) => {
                            let data = &garbage[..r.length as usize];
                            let m = Message::Piece(Piece::from_data(r.index, r.begin, data));
                            let k = m.serialize(&mut out, &no_extensions).unwrap();
                            return s.write_all(&out[..k]).await.is_ok();
                        }
                        Ok((_, used)) => start += used,
                        Err(MessageDeserializeError::NotEnoughData(..)) => break,
                        Err(_) => return false,
                    }
                }
                buf.copy_within(start..end, 0);
                end -= start;
            }
        })
        .await;
        if matches!(served, Ok(true)) {
            lied += 1;
            // Let the block arrive before hanging up.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    (lied, refused)
}

/// Item 8: a corrupting peer that reconnects, each time with a new peer id and port, gets no
/// fresh strikes: its address is banned after [`vmt_swarm::MAX_STRIKES`] bad blocks in all,
/// later connections are refused, and the ban and the hash failures show in `--status` and
/// in the report. The image read through the mount is the image.
#[test]
fn r12_8_a_corrupting_peer_that_reconnects_is_banned_by_address() {
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that the liar is asked for blocks the whole time it tries.
    let (data, torrent_path, seeder) =
        seeded_image(dir.path(), 81, 16 * MIB, &["--upload-limit", "1MiB"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut m = Mount::start(
        dir.path(),
        &torrent_path,
        &dir.path().join("data"),
        "app.img",
        &["--peer", &seeder.addr, "--listen", &listen],
    );
    let torrent = Torrent::load(&torrent_path).unwrap();
    let liar = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (lied, refused) = rt.block_on(reconnecting_liar(
        &torrent,
        listen.parse().unwrap(),
        liar,
        8,
    ));
    let st = m.status();
    let struck = m
        .log()
        .lines()
        .filter(|l| l.contains("failed verification"))
        .count();
    eprintln!(
        "r12_8: the liar served garbage on {lied} connections, {refused} refused; {struck} \
         strikes logged; status: hash_failures {}, banned {}",
        st["hash_failures"], st["banned"]
    );
    let got = std::fs::read(&m.served).unwrap();
    assert!(got == data, "the image read through the mount differs");
    let strikes = u64::from(vmt_swarm::MAX_STRIKES);
    assert_eq!(
        st["hash_failures"].as_u64(),
        Some(strikes),
        "bad blocks taken from one address: {st}"
    );
    assert_eq!(st["banned"], serde_json::json!([liar.to_string()]), "{st}");
    assert_eq!(u64::from(lied), strikes, "connections after the ban");
    assert_eq!(refused, 8 - lied);
    let (exit, report) = m.stop();
    assert!(exit.success(), "{exit:?}");
    let report = report.expect("the report is written");
    assert_eq!(report["hash_failures"].as_u64(), Some(strikes), "{report}");
    assert_eq!(report["banned"], serde_json::json!([liar.to_string()]));
    assert_eq!(
        report["wasted_by"]["corrupt"].as_u64(),
        Some(strikes * 16384),
        "{report}"
    );
}

/// Item 10 (part): a download with a corrupting peer, two seeders and a reader's demands
/// says where every byte went: each block of the image became present once (`useful` is the
/// image's length), and the rest is wasted by a named cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_10_every_downloaded_byte_is_accounted_for() {
    let img = TestImage::new(16 * MIB, 101).await;
    let limited = || EngineConfig {
        upload_limit: Some(4 * MIB as u64),
        ..Default::default()
    };
    let (a, b) = (img.seeder(limited()).await, img.seeder(limited()).await);
    let (evil, evil_task) = crate::swarm::malicious_peer(&img.torrent).await;
    let c = img
        .client(
            "c",
            EngineConfig {
                peers: vec![evil, a.listen_addr().unwrap(), b.listen_addr().unwrap()],
                ..Default::default()
            },
        )
        .await;
    // A reader jumping around: urgent blocks, fetched from more than one peer at once.
    let blocks = c.layout().blocks();
    within("the download", STEP, async {
        let mut x = 7u32;
        while !c.is_complete() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let first = (x >> 8) % blocks;
            c.demand_blocks(first..(first + 4).min(blocks));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
    .await;
    shutdown_all(&[&c]).await;
    let st = c.stats();
    eprintln!(
        "r12_10: downloaded {} = useful {} + wasted {} ({:?}), {} hash failures",
        st.downloaded, st.useful, st.wasted, st.wasted_by, st.hash_failures
    );
    let len = img.data.len() as u64;
    assert_eq!(st.useful, len, "each block became present exactly once");
    assert_eq!(st.wasted, st.wasted_by.total());
    assert_eq!(
        st.downloaded,
        st.useful + st.wasted,
        "bytes not accounted for"
    );
    assert!(st.wasted_by.corrupt > 0, "the liar's blocks are corrupt");
    img.assert_client_has_image("c");
    evil_task.abort();
    shutdown_all(&[&a, &b]).await;
}
