//! Issue 16 item 3: the rough edges a new user hit, one test each (`r16_3_<edge>_<what>`);
//! the edges tested in their crates are named in the closing note.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmt_tests::{bin, content, free_port, run_with_timeout, wait_until, MountProc, Proc};

const LIMIT: Duration = Duration::from_secs(120);
const PIECE: u32 = 256 << 10;

/// A 4 MiB image and its vmt torrent in `dir`.
fn image_and_torrent(dir: &Path) -> (PathBuf, PathBuf) {
    let image = dir.join("app.img");
    std::fs::write(&image, content(16, 4 << 20)).unwrap();
    let torrent = dir.join("app.torrent");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(vmt_swarm::Torrent::create(&image, PIECE, Vec::new()))
        .unwrap()
        .save(&torrent)
        .unwrap();
    (image, torrent)
}

/// `tool args`, to completion.
fn run(tool: &str, args: &[&str]) -> Output {
    run_with_timeout(Command::new(bin(tool)).args(args), LIMIT)
}

/// Fails unless `out` failed with exactly one stderr line, `tool: error: …`, holding `want`.
fn one_error_line(tool: &str, out: &Output, want: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(1), "{tool}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{tool}: one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("{tool}: error: ")),
        "{tool}'s error style: {stderr}"
    );
    for w in want {
        assert!(stderr.contains(w), "{w:?} not in {stderr:?}");
    }
    stderr
}

/// Edge 2: a mount whose only peer is dead (`127.0.0.1:1`, as the user typed it). Before: the
/// read blocked silently, and the exit line said `1 reads (1 waited), 0 stalls totalling
/// 0.00 s` for a read that waited 10 s.
#[test]
fn r16_3_2_a_read_waiting_on_a_dead_peer_is_named_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_, torrent) = image_and_torrent(dir.path());
    let mut mount = MountProc::start(dir.path(), "h16c", &torrent, &["--peer", "127.0.0.1:1"]);
    let reader = {
        let served = mount.served.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            std::fs::File::open(served)
                .unwrap()
                .read_exact_at(&mut buf, 1 << 20)
        })
    };
    // The terminal says which read waits for what: its blocks, and the peer that fails.
    let start = Instant::now();
    wait_until("the long-wait line", Duration::from_secs(30), || {
        mount.stderr().contains("has waited")
    });
    assert!(start.elapsed() >= Duration::from_secs(4), "after about 5 s");
    let said = mount.stderr();
    let line = said.lines().find(|l| l.contains("has waited")).unwrap();
    assert!(
        line.contains("bytes at offset 1048576 has waited"),
        "{line}"
    );
    assert!(line.contains("missing block(s), from block 64"), "{line}");
    assert!(line.contains("127.0.0.1:1 (failing"), "{line}");
    // Without a terminal, the periodic status line shows the waiting read too.
    wait_until("a status line", Duration::from_secs(30), || {
        mount.stderr().contains("1 waiting (longest")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(mount.proc.sigterm().success(), "{}", mount.stderr());
    assert!(reader.join().unwrap().is_err(), "answered EIO at shutdown");
    // The exit line and the report count it as a stall, with its wait.
    let said = mount.stderr();
    let exit = said.lines().find(|l| l.contains(" reads (")).unwrap();
    assert!(
        exit.contains("still waiting, answered EIO at shutdown)") && !exit.contains(" 0 stalls"),
        "{exit}"
    );
    let report = mount.report();
    let stalls = &report["stalls"];
    assert!(stalls["count"].as_u64() >= Some(1), "{report}");
    assert!(stalls["failed_at_shutdown"].as_u64() >= Some(1), "{report}");
    assert!(stalls["total_s"].as_f64() >= Some(5.0), "{report}");
}

/// Edge 4: before, a Markdown file was taken for blkparse input ("needs --image").
#[test]
fn r16_3_4_import_says_what_a_file_that_is_neither_looks_like() {
    let dir = tempfile::tempdir().unwrap();
    let readme = vmt_tests::workspace_root().join("README.md");
    let out = dir.path().join("x.vmtrace");
    let res = run(
        "vmt-record",
        &[
            "import",
            readme.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    one_error_line(
        "vmt-record",
        &res,
        &[
            "looks like Markdown text, not CSV",
            "nor blkparse",
            "line 3",
        ],
    );
    assert!(!out.exists());
}

/// Edge 5: before, a text file or an image given as a torrent said only `invalid torrent:
/// invalid value`.
#[test]
fn r16_3_5_a_file_that_is_not_a_torrent_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let readme = vmt_tests::workspace_root().join("README.md");
    let (image, _) = image_and_torrent(dir.path());
    let out = dir.path().join("o.img");
    for t in [readme, image] {
        let res = run(
            "vmt-run",
            &[
                "fetch",
                "--torrent",
                t.to_str().unwrap(),
                "--peer",
                "127.0.0.1:1",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        one_error_line(
            "vmt-run",
            &res,
            &[
                t.to_str().unwrap(),
                "not a .torrent",
                "not a bencoded dictionary",
            ],
        );
    }
}

/// Edge 5: before, the demo as a user built the image and then failed with `Permission denied
/// (os error 13)`.
#[test]
fn r16_3_5_the_demo_says_it_needs_root_before_building_anything() {
    for tool in ["vmt-run", "vmt-record"] {
        let start = Instant::now();
        let res = run_with_timeout(
            Command::new("setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg(bin(tool))
                .arg("demo")
                .env("TMPDIR", "/tmp"),
            LIMIT,
        );
        one_error_line(tool, &res, &["the demo needs root", "nothing was built"]);
        assert!(start.elapsed() < Duration::from_secs(10), "up front");
    }
}

/// Edge 6: before, `seed` ended with just `stopping` and `fetch` without its duration and rate.
#[test]
fn r16_3_6_seed_and_fetch_end_with_their_totals() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = image_and_torrent(dir.path());
    let torrent = dir.path().join("seeded.torrent");
    let addr = format!("127.0.0.1:{}", free_port());
    let seed_out = dir.path().join("seed-stdout.txt");
    let mut seeder = Proc::spawn(
        Command::new(bin("vmt-run"))
            .args(["seed", "--listen", &addr, "--image"])
            .arg(&image)
            .arg("--torrent-out")
            .arg(&torrent)
            .stdout(std::fs::File::create(&seed_out).unwrap())
            .stderr(Stdio::null()),
    );
    wait_until("the seeder", LIMIT, || {
        torrent.exists() && std::net::TcpStream::connect(&addr).is_ok()
    });
    let out = dir.path().join("got.img");
    let res = run(
        "vmt-run",
        &[
            "fetch",
            "--torrent",
            torrent.to_str().unwrap(),
            "--peer",
            &addr,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(res.status.success(), "{res:?}");
    let fetched = String::from_utf8_lossy(&res.stdout);
    assert!(
        fetched.contains("downloaded 4.00 MiB (") && fetched.contains("MiB/s), uploaded"),
        "{fetched}"
    );
    assert!(
        fetched.contains("1 peer(s)") && fetched.contains(" s;"),
        "{fetched}"
    );
    assert!(seeder.sigterm().success());
    let mut seeded = String::new();
    std::fs::File::open(&seed_out)
        .unwrap()
        .read_to_string(&mut seeded)
        .unwrap();
    assert!(seeded.starts_with("seeded: downloaded 0 B"), "{seeded}");
    assert!(
        seeded.contains("uploaded 4.00 MiB (") && seeded.contains("1 peer(s)"),
        "{seeded}"
    );
}

/// Edge 8: before, `vmt-train: error: …` but `vmt-record: …` and `vmt-run: …`.
#[test]
fn r16_3_8_one_error_style_in_every_tool() {
    let missing = "/nonexistent/h16c";
    one_error_line(
        "vmt-record",
        &run("vmt-record", &["show", &format!("{missing}.vmtrace")]),
        &[missing, "No such file"],
    );
    one_error_line(
        "vmt-train",
        &run("vmt-train", &["show", &format!("{missing}.vmtp")]),
        &[missing, "No such file"],
    );
    one_error_line(
        "vmt-run",
        &run(
            "vmt-run",
            &[
                "fetch",
                "--torrent",
                &format!("{missing}.torrent"),
                "--peer",
                "127.0.0.1:1",
                "--out",
                "/tmp/h16c-never.img",
            ],
        ),
        &[missing, "No such file"],
    );
}

/// `tool … | head`: a reader that closed its end ends the output, for every tool that prints
/// a result to stdout (print! would panic on the broken pipe: vmt-train's did).
#[test]
fn a_closed_stdout_ends_every_tools_output_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = image_and_torrent(dir.path());
    let root = vmt_tests::workspace_root();
    let trace = std::fs::read_dir(root.join("datasets/traces/test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "vmtrace"))
        .expect("a held-out trace in the repository");
    let out = dir.path().join("again.torrent");
    let bundle = root.join("datasets/appliance.vmtp");
    let cases: [(&str, Vec<&std::ffi::OsStr>); 3] = [
        ("vmt-train", vec!["show".as_ref(), bundle.as_os_str()]),
        ("vmt-record", vec!["export".as_ref(), trace.as_os_str()]),
        (
            "vmt-run",
            vec![
                "torrent".as_ref(),
                "--image".as_ref(),
                image.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
            ],
        ),
    ];
    for (tool, args) in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = Command::new(bin(tool))
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let done = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(!err.contains("panicked"), "{tool}: {err}");
        assert!(done.status.success(), "{tool}: {:?}: {err}", done.status);
    }
}
