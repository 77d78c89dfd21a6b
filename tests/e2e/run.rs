//! vmt-run mount on a real FUSE mount fed by a real loopback swarm (`vmt-run seed`).

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vmt_tests::{
    bin, content, free_port, http_status, make_ext4_with, run_with_timeout, wait_until, CliSeeder,
    MountProc, Proc,
};

const LIMIT: Duration = Duration::from_secs(120);
const PIECE: u64 = 256 << 10;

/// A `vmt-run seed` of `image`, in `dir` with the clients' files.
struct Swarm {
    dir: tempfile::TempDir,
    image: PathBuf,
    seeder: CliSeeder,
}

/// Seeds `image` (inside `dir`) on a free loopback port, upload-capped at `limit`.
fn seed(dir: tempfile::TempDir, image: PathBuf, limit: Option<&str>) -> Swarm {
    let torrent = dir.path().join("app.torrent");
    let extra = limit.map_or_else(Vec::new, |l| vec!["--upload-limit", l]);
    Swarm {
        seeder: CliSeeder::start(&image, &torrent, &extra),
        dir,
        image,
    }
}

/// As [`seed`], with a stock torrent (no block-hash table), made by librqbit as another
/// client would make it.
fn seed_stock(dir: tempfile::TempDir, image: PathBuf, limit: Option<&str>) -> Swarm {
    let torrent = dir.path().join("stock.torrent");
    let options = librqbit::CreateTorrentOptions {
        piece_length: Some(PIECE as u32),
        ..Default::default()
    };
    let meta = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
        librqbit::create_torrent(&image, options, &spawner)
            .await
            .unwrap()
            .meta
    });
    let mut bytes = Vec::new();
    bencode::bencode_serialize_to_writer(&meta, &mut bytes).unwrap();
    std::fs::write(&torrent, bytes).unwrap();
    let extra = limit.map_or_else(Vec::new, |l| vec!["--upload-limit", l]);
    Swarm {
        seeder: CliSeeder::with_torrent(&image, &torrent, &extra),
        dir,
        image,
    }
}

impl Swarm {
    /// Mounts a client in `DIR/name` with `extra` flags.
    fn mount(&self, name: &str, extra: &[&str]) -> MountProc {
        let mut args = vec!["--peer", self.seeder.addr.as_str()];
        args.extend_from_slice(extra);
        MountProc::start(self.dir.path(), name, &self.seeder.torrent, &args)
    }
}

fn random_image(dir: &Path, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = content(seed, len);
    let path = dir.join("app.img");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// Issue 11: with the torrent's block-hash table, a read that misses waits only for the 16 KiB
/// blocks it covers, verified alone: it is answered with the image's bytes while its piece
/// has not arrived (here, with `demand`, never arrives). With a stock torrent the same read
/// needs the whole piece.
#[test]
fn r11_a_missed_read_waits_for_its_blocks_not_its_piece() {
    for stock in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // Not a whole number of pieces: librqbit 9.1.0 would add a bogus hash otherwise.
        let (image, data) = random_image(dir.path(), (8 << 20) - 1000, 11);
        // 256 KiB/s: a piece takes a second, a block a sixteenth of it.
        let swarm = if stock {
            seed_stock(dir, image, Some("256KiB/s"))
        } else {
            seed(dir, image, Some("256KiB/s"))
        };
        let client = swarm.mount("c", &["--strategy", "demand"]);
        let f = std::fs::File::open(&client.served).unwrap();
        let at = 20 * PIECE + 5 * 16384 + 100;
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, at).unwrap();
        assert!(
            buf[..] == data[at as usize..at as usize + 4096],
            "stock: {stock}"
        );
        let st = client.status();
        assert_eq!(st["blocks_verified_alone"].as_bool(), Some(!stock), "{st}");
        let pieces = st["pieces_present"].as_u64().unwrap();
        let blocks = st["blocks_present"].as_u64().unwrap();
        if stock {
            assert!(
                pieces >= 1,
                "a stock torrent's read waits for its piece: {st}"
            );
        } else {
            assert_eq!(pieces, 0, "answered without a whole piece: {st}");
            // The read and the kernel's readahead (128 KiB): a piece has 16 blocks.
            assert!((1..=10).contains(&blocks), "{blocks} blocks fetched: {st}");
        }
        drop(f);
        client.stop();
    }
}

#[test]
fn mount_serves_the_image_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (image, data) = random_image(dir.path(), 24 << 20, 1);
    // 3 s for the stream to bring the image: the random reads come while most of it is
    // missing (unlimited on loopback, it was sometimes all in before the first read).
    let swarm = seed(dir, image, Some("8MiB"));
    let client = swarm.mount("c", &["--strategy", "stream"]);
    assert_eq!(
        std::fs::metadata(&client.served).unwrap().len(),
        data.len() as u64,
        "the image shows at full size at once"
    );
    // Random ranges first (most pieces still missing), then the whole file.
    let f = std::fs::File::open(&client.served).unwrap();
    let mut state = 12345u64;
    for _ in 0..40 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (state >> 20) as usize % (data.len() - 200_000);
        let len = 1 + (state >> 8) as usize % 200_000;
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == data[off..off + len], "range {off}+{len} differs");
    }
    let got = Sha256::digest(std::fs::read(&client.served).unwrap());
    assert_eq!(
        got,
        Sha256::digest(&data),
        "full read through the mount equals the image"
    );
    drop(f);
    let report = client.stop();
    assert!(report["read_misses"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["parked_now"].as_u64(), Some(0));
}

/// An ext4 image: `want` (read by the task) and 40 MiB of files nobody reads.
fn ext4_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let want = content(7, 1 << 20);
    let mut files: Vec<(String, Vec<u8>)> = vec![("data/want".into(), want.clone())];
    for i in 0..10 {
        files.push((format!("junk/j{i}"), content(100 + i, 4 << 20)));
    }
    let image = dir.join("app.img");
    make_ext4_with(dir, &image, &files, 64);
    (image, want)
}

#[test]
fn loop_mount_reads_files_while_most_pieces_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (image, want) = ext4_image(dir.path());
    let swarm = seed(dir, image, None);
    let client = swarm.mount("c", &["--strategy", "demand"]);
    let lm = vmt_appliance::ext4::LoopMount::new(&client.served, &swarm.dir.path().join("loop"))
        .unwrap();
    let got = std::fs::read(lm.dir().join("data/want")).unwrap();
    assert!(
        got == want,
        "the file read through loop + FUSE + swarm is intact"
    );
    let st = client.status();
    let present = st["pieces_present"].as_u64().unwrap();
    let total = st["pieces_total"].as_u64().unwrap();
    assert!(
        present < total / 2,
        "demand fetched only what the reads needed: {present}/{total} pieces"
    );
    lm.unmount().unwrap();
    client.stop();
}

#[test]
fn parked_read_does_not_block_a_read_of_a_present_range() {
    let dir = tempfile::tempdir().unwrap();
    let (image, data) = random_image(dir.path(), 32 << 20, 3);
    // 256 KiB/s: the far read's 512 KiB take about two seconds to arrive.
    let swarm = seed(dir, image, Some("256KiB/s"));
    let client = swarm.mount("c", &["--strategy", "demand"]);
    let f = std::fs::File::open(&client.served).unwrap();
    // The first piece is local now, so the kernel's readahead around the next read finds
    // nothing missing.
    let mut first = vec![0u8; PIECE as usize];
    f.read_exact_at(&mut first, 0).unwrap();
    let mut buf = vec![0u8; 4096];
    let served = client.served.clone();
    let far = 100 * PIECE;
    let far_len = 512 << 10;
    let waiter = std::thread::spawn(move || {
        let f = std::fs::File::open(served).unwrap();
        let mut buf = vec![0u8; far_len];
        f.read_exact_at(&mut buf, far).unwrap();
        (Instant::now(), buf)
    });
    wait_until("the far read to park", LIMIT, || {
        client.status()["parked_now"].as_u64() >= Some(1)
    });
    // Drop the first piece from the page cache so the next read really goes through FUSE.
    // SAFETY: fadvise on a valid fd only reads its arguments.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, PIECE as i64, libc::POSIX_FADV_DONTNEED) };
    f.read_exact_at(&mut buf, 8192).unwrap();
    let present_done = Instant::now();
    assert_eq!(buf[..], data[8192..8192 + 4096]);
    assert!(
        client.status()["parked_now"].as_u64() >= Some(1),
        "the far read is still waiting while the present range was served"
    );
    let (far_done, far_buf) = waiter.join().unwrap();
    assert!(present_done < far_done);
    assert!(far_buf[..] == data[far as usize..far as usize + far_len]);
    drop(f);
    let report = client.stop();
    assert!(report["stalls"]["count"].as_u64().unwrap() >= 2, "{report}");
}

#[test]
fn writes_survive_kill_9_and_pristine_pieces_stay_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (image, want) = ext4_image(dir.path());
    let original = std::fs::read(&image).unwrap();
    let swarm = seed(dir, image, None);
    let loop_dir = swarm.dir.path().join("loop");
    std::fs::create_dir_all(&loop_dir).unwrap();
    let mut client = swarm.mount("c", &["--strategy", "stream"]);
    let written = content(99, 300_000);
    {
        let ok = Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&client.served)
            .arg(&loop_dir)
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::write(loop_dir.join("data/new"), &written).unwrap();
        std::fs::write(loop_dir.join("data/want"), b"overwritten").unwrap();
        let ok = Command::new("umount").arg(&loop_dir).status().unwrap();
        assert!(ok.success(), "umount flushes the filesystem (FUSE fsync)");
    }
    client.proc.sigkill();
    // A killed FUSE server leaves a dead mount behind; detach it as an admin would.
    let _ = Command::new("umount")
        .arg("-l")
        .arg(&client.mountpoint)
        .status();
    let client = swarm.mount("c", &["--strategy", "stream"]);
    wait_until("the whole image", LIMIT, || {
        let st = client.status();
        st["pieces_present"] == st["pieces_total"]
    });
    let lm = vmt_appliance::ext4::LoopMount::new(&client.served, &loop_dir).unwrap();
    assert!(std::fs::read(lm.dir().join("data/new")).unwrap() == written);
    assert_eq!(
        std::fs::read(lm.dir().join("data/want")).unwrap(),
        b"overwritten"
    );
    lm.unmount().unwrap();
    let report = client.stop();
    assert!(report["overlay_blocks"].as_u64().unwrap() > 0);
    // The pristine store is exactly the seeded image, and so is the seeder's file.
    let pristine = std::fs::read(swarm.dir.path().join("c-data/pristine.img")).unwrap();
    assert!(
        pristine == original,
        "pristine pieces untouched by the VM's writes"
    );
    assert!(std::fs::read(&swarm.image).unwrap() == original);
    assert!(want.len() > 11);
}

/// Records tasks alpha and beta on an ext4 appliance, trains a bundle, and replays a session
/// (alpha, then beta) through a markov mount: the belief must move from alpha to beta.
#[test]
fn profile_switches_when_the_session_changes_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..6 {
        files.push((format!("alpha/a{i}"), content(10 + i, 600_000)));
        files.push((format!("beta/b{i}"), content(20 + i, 600_000)));
    }
    let image = dir.path().join("app.img");
    make_ext4_with(dir.path(), &image, &files, 48);
    let traces = dir.path().join("traces");
    let loop_dir = dir.path().join("loop");
    std::fs::create_dir_all(&loop_dir).unwrap();
    for task in ["alpha", "beta"] {
        for _ in 0..3 {
            let script = format!(
                "set -e; mount -t ext4 -o loop,ro,noload \"$VMT_IMAGE\" {l}; cat {l}/{task}/* > /dev/null; umount {l}",
                l = loop_dir.display()
            );
            let res = run_with_timeout(
                Command::new(bin("vmt-record"))
                    .args(["run", "--task", task, "--image"])
                    .arg(&image)
                    .arg("--out")
                    .arg(&traces)
                    .args(["--", "sh", "-c", &script]),
                LIMIT,
            );
            assert!(res.status.success(), "{res:?}");
        }
    }
    let bundle = dir.path().join("app.vmtp");
    let res = run_with_timeout(
        Command::new(bin("vmt-train"))
            .args(["fit", "--traces"])
            .arg(&traces)
            .arg("--out")
            .arg(&bundle),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    // The session: record it on the raw image, as a user of the appliance would produce it.
    let session_dir = dir.path().join("session");
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let mut rec = Proc {
        child: Command::new(bin("vmt-record"))
            .args(["session", "--image"])
            .arg(&image)
            .arg("--out")
            .arg(&session_dir)
            .arg("--mountpoint")
            .arg(&served)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        mountpoint: Some(served.clone()),
    };
    wait_until("the session mount", LIMIT, || {
        served.join(".vmt-control").exists()
    });
    for task in ["alpha", "beta"] {
        std::fs::write(served.join(".vmt-control"), format!("mark {task}\n")).unwrap();
        let lm = vmt_appliance::ext4::LoopMount::new(&served.join("app.img"), &loop_dir).unwrap();
        let names: Vec<String> = (0..6)
            .map(|i| format!("{task}/{}{i}", &task[..1]))
            .collect();
        lm.read_files(&names).unwrap();
        lm.unmount().unwrap();
    }
    std::fs::write(served.join(".vmt-control"), "stop\n").unwrap();
    wait_until("the session to end", LIMIT, || {
        rec.child.try_wait().unwrap().is_some()
    });
    let session = session_dir.join("session-1.vmtrace");

    let swarm = seed(dir, image, Some("4MiB"));
    let client = swarm.mount(
        "c",
        &["--bundle", bundle.to_str().unwrap(), "--strategy", "markov"],
    );
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["replay", "--json", "--think", "1s", "--trace"])
            .arg(&session)
            .arg("--file")
            .arg(&client.served),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    let report = client.stop();
    let switches: Vec<&str> = report["profile_switches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["to"].as_str().unwrap())
        .collect();
    let alpha = switches.iter().position(|s| s.starts_with("alpha"));
    let beta = switches.iter().rposition(|s| s.starts_with("beta"));
    assert!(
        matches!((alpha, beta), (Some(a), Some(b)) if a < b),
        "the belief follows alpha then beta: {switches:?}"
    );
    assert!(
        switches.last().unwrap().starts_with("beta"),
        "and ends on beta: {switches:?}"
    );
}

#[test]
fn bad_input_is_a_clear_error_and_never_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = random_image(dir.path(), 4 << 20, 5);
    let swarm = seed(dir, image, None);
    let d = swarm.dir.path();
    let mnt = d.join("bad-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let run = |args: &[&str]| {
        run_with_timeout(
            Command::new(bin("vmt-run"))
                .arg("mount")
                .args(args)
                .args(["--peer", &swarm.seeder.addr]),
            LIMIT,
        )
    };
    let expect_err = |args: &[&str], want: &str| {
        let res = run(args);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{args:?} must fail");
        assert!(
            stderr.contains(want),
            "{args:?}: expected {want:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let torrent = swarm.seeder.torrent.to_str().unwrap();
    let m = mnt.to_str().unwrap();
    // A corrupt torrent.
    let corrupt = d.join("corrupt.torrent");
    std::fs::write(&corrupt, b"d8:announce3:foo4:infoi3eee").unwrap();
    expect_err(
        &["--torrent", corrupt.to_str().unwrap(), "--mountpoint", m],
        "corrupt.torrent",
    );
    // A missing mountpoint, and a busy one.
    expect_err(
        &["--torrent", torrent, "--mountpoint", "/nonexistent/mnt"],
        "not an existing directory",
    );
    let busy = swarm.mount("busy", &[]);
    expect_err(
        &[
            "--torrent",
            torrent,
            "--mountpoint",
            busy.mountpoint.to_str().unwrap(),
        ],
        "busy",
    );
    busy.stop();
    // A bundle of another image.
    let other_dir = d.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = vmt_formats::trace::Trace {
        image: vmt_formats::image::ImageId {
            size: 4 << 20,
            sha256: [7; 32],
        },
        kind: vmt_formats::trace::TraceKind::Task,
        label: "t".into(),
        run: 1,
        start_unix_us: 0,
        recorder: "test".into(),
        tasks: vec!["t".into()],
        records: (0..20)
            .map(|i| vmt_formats::trace::Record {
                t_us: i * 10,
                op: vmt_formats::trace::Op::Read,
                offset: i * 4096,
                len: 4096,
                task: 0,
            })
            .collect(),
    };
    other.save(&other_dir.join("t-1.vmtrace")).unwrap();
    let bundle = d.join("other.vmtp");
    let res = run_with_timeout(
        Command::new(bin("vmt-train"))
            .args(["fit", "--traces"])
            .arg(&other_dir)
            .arg("--out")
            .arg(&bundle),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    expect_err(
        &[
            "--torrent",
            torrent,
            "--mountpoint",
            m,
            "--bundle",
            bundle.to_str().unwrap(),
        ],
        "another image",
    );
    // No FUSE device: a private mount namespace whose /dev lacks /dev/fuse.
    let res = run_with_timeout(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs none /dev && exec {} mount --torrent {torrent} --mountpoint {m} --peer {}",
                bin("vmt-run").display(),
                swarm.seeder.addr
            )),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(stderr.contains("FUSE is not available"), "{stderr}");
    assert!(!vmt_fs::is_mounted(&mnt));
}

#[test]
fn unreachable_peer_is_reported_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = random_image(dir.path(), 4 << 20, 6);
    let torrent = dir.path().join("app.torrent");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(vmt_swarm::Torrent::create(&image, PIECE as u32, Vec::new()))
        .unwrap()
        .save(&torrent)
        .unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let status_addr = format!("127.0.0.1:{}", free_port());
    let mut proc = Proc {
        child: Command::new(bin("vmt-run"))
            .args(["mount", "--torrent"])
            .arg(&torrent)
            .arg("--mountpoint")
            .arg(&mnt)
            .args(["--peer", &dead, "--status", &status_addr])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        mountpoint: Some(mnt.clone()),
    };
    wait_until("the mount", LIMIT, || mnt.join("app.img").exists());
    wait_until("a visible 'no reachable peer' status", LIMIT, || {
        http_status(&status_addr)["peer_status"]
            .as_str()
            .is_some_and(|s| s.contains("no reachable peer") && s.contains(&dead))
    });
    let status = proc.sigterm();
    assert!(status.success());
    assert!(!vmt_fs::is_mounted(&mnt));
}
