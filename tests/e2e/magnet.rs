//! `vmt-run fetch --magnet` and `vmt-run mount --magnet` (issue 14, item 4): a vmt client that
//! has only a magnet link fetches the info dictionary (BEP 9) and a vmt seeder's block-hash
//! table from peers, verifies both, keeps the torrent, and goes on as with `--torrent`. Real
//! processes (`vmt-run seed`, `vmt-run fetch`/`mount`, opentracker, Transmission) on loopback.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use vmt_swarm::Torrent;
use vmt_tests::{bin, free_port, run_with_timeout, wait_until, CliSeeder, Proc, TestImage, MIB};

use crate::swarm_interop::{have, OpenTracker};

const LIMIT: Duration = Duration::from_secs(120);

/// `vmt-run fetch --magnet LINK --out OUT` with `extra` flags, to completion.
fn fetch(link: &str, out: &Path, extra: &[&str]) -> Output {
    run_with_timeout(
        Command::new(bin("vmt-run"))
            .args(["fetch", "--magnet", link, "--out"])
            .arg(out)
            .args(extra),
        LIMIT,
    )
}

/// Where `fetch --magnet` keeps the torrent without `--torrent`: `OUT.torrent`.
fn kept_beside(out: &Path) -> std::path::PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".torrent");
    s.into()
}

/// The run succeeded and its stderr says `needle`.
fn succeeded_saying(run: &Output, needle: &str) {
    let ok = run.status.success() && String::from_utf8_lossy(&run.stderr).contains(needle);
    assert!(ok, "expected success saying {needle:?}: {}", text(run));
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The torrent a magnet fetch kept beside `out` is the seeder's swarm, with its block-hash
/// table (so blocks verify alone), and the output is the image byte for byte.
fn assert_fetched(img: &TestImage, out: &Path) {
    let kept = Torrent::load(&kept_beside(out)).expect("the kept torrent");
    assert_eq!(kept.info_hash(), img.torrent.info_hash());
    assert_eq!(kept.info_bytes(), img.torrent.info_bytes());
    assert_eq!(
        kept.block_hashes(),
        img.torrent.block_hashes(),
        "the block-hash table came from the seeder"
    );
    assert!(
        std::fs::read(out).unwrap() == img.data,
        "{} differs from the image",
        out.display()
    );
}

/// A vmt client starts from a magnet link of a vmt seeder, the peer given in the link
/// (`x.pe`, as `vmt-run seed` prints it) or with `--peer`; a second run reads the kept torrent
/// and needs no peer for it.
#[test]
fn vmt_client_starts_from_a_magnet_link_of_a_vmt_seeder_given_the_peer() {
    let img = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestImage::new(6 * MIB + 1234, 61));
    let torrent = img.dir.path().join("app.torrent");
    img.torrent.save(&torrent).unwrap();
    let mut seeder = CliSeeder::with_torrent(&img.path, &torrent, &[]);

    let with_pe = img.torrent.magnet_link(Some(seeder.addr.parse().unwrap()));
    assert!(with_pe.contains("&x.pe="), "{with_pe}");
    let out = img.dir.path().join("pe.img");
    let run = fetch(&with_pe, &out, &[]);
    succeeded_saying(&run, "metadata fetched from peers");
    assert_fetched(&img, &out);

    let bare = img.torrent.magnet_link(None);
    assert!(!bare.contains("x.pe") && !bare.contains("tr="), "{bare}");
    let out2 = img.dir.path().join("peer.img");
    let run = fetch(&bare, &out2, &["--peer", &seeder.addr]);
    assert!(run.status.success(), "{}", text(&run));
    assert_fetched(&img, &out2);

    // The seeder gone, the same link again: the kept torrent and the finished image suffice.
    seeder.proc.sigterm();
    let run = fetch(&with_pe, &out, &[]);
    succeeded_saying(&run, "kept from an earlier run");
    assert_fetched(&img, &out);
}

/// The peer is found through a real opentracker named in the link (`tr=`), nothing else.
#[test]
fn vmt_client_finds_the_seeder_of_a_magnet_link_through_opentracker() {
    let test = "vmt_client_finds_the_seeder_of_a_magnet_link_through_opentracker";
    if !have("opentracker", test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let img = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestImage::with_trackers(
            4 * MIB + 77,
            62,
            vec![OpenTracker::url(port)],
        ));
    let tracker = OpenTracker::start(dir.path(), port, &img.torrent);
    let torrent = img.dir.path().join("app.torrent");
    img.torrent.save(&torrent).unwrap();
    let _seeder = CliSeeder::with_torrent(&img.path, &torrent, &[]);
    tracker.wait_scrape(&img.torrent, "completei1");
    let link = img.torrent.magnet_link(None);
    assert!(link.contains("&tr=") && !link.contains("x.pe"), "{link}");
    let out = img.dir.path().join("tr.img");
    let run = fetch(&link, &out, &[]);
    assert!(run.status.success(), "{}", text(&run));
    assert_fetched(&img, &out);
}

/// A bad link is one clear error and exit status 2, before anything is written; a link no peer
/// answers for is a clear error after `--metadata-timeout`.
#[test]
fn a_bad_or_unanswered_magnet_link_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.img");
    for (link, says) in [
        ("http://example.com/a.torrent", "not a magnet link"),
        ("magnet:?dn=x", "names no BitTorrent v1 info hash"),
        ("magnet:?xt=urn:btih:1234", "is not an info hash"),
    ] {
        let run = fetch(link, &out, &[]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{link}: {}", text(&run));
        assert!(err.contains(says), "{link}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "{err}"
        );
    }
    assert!(!out.exists());
    // A listening port that is nobody's peer: refused at once, then nothing left to ask.
    let dead = format!("127.0.0.1:{}", free_port());
    let link = format!("magnet:?xt=urn:btih:{}&x.pe={dead}", "ab".repeat(20));
    let t0 = std::time::Instant::now();
    let run = fetch(&link, &out, &["--metadata-timeout", "5s"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("no peer sent the info dictionary") && err.contains(&dead),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(!kept_beside(&out).exists());
}

/// `vmt-run mount --magnet` serves reads byte-identical to the image through a real FUSE
/// mount, and its blocks verify alone: the table came with the metadata.
#[test]
fn mount_from_a_magnet_link_serves_the_image() {
    let img = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestImage::new(8 * MIB - 1000, 63));
    let torrent = img.dir.path().join("app.torrent");
    img.torrent.save(&torrent).unwrap();
    let seeder = CliSeeder::with_torrent(&img.path, &torrent, &[]);
    let link = img.torrent.magnet_link(Some(seeder.addr.parse().unwrap()));
    let mnt = img.dir.path().join("mg-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let kept = img.dir.path().join("kept.torrent");
    let status = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin("vmt-run"))
        .args(["mount", "--magnet", &link, "--torrent"])
        .arg(&kept)
        .arg("--mountpoint")
        .arg(&mnt)
        .args(["--strategy", "demand", "--status", &status])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut proc = Proc {
        child,
        mountpoint: Some(mnt.clone()),
    };
    let served = mnt.join(img.torrent.name());
    wait_until("the mount", LIMIT, || served.exists());
    let f = std::fs::File::open(&served).unwrap();
    assert_eq!(f.metadata().unwrap().len(), img.data.len() as u64);
    for at in [0usize, 3 * MIB + 12345, img.data.len() - 5000] {
        let mut buf = vec![0u8; 5000];
        f.read_exact_at(&mut buf, at as u64).unwrap();
        assert!(buf == img.data[at..at + 5000], "read at {at} differs");
    }
    let st = vmt_tests::http_status(&status);
    assert_eq!(st["blocks_verified_alone"].as_bool(), Some(true), "{st}");
    drop(f);
    assert!(proc.sigterm().success());
    assert!(!vmt_fs::is_mounted(&mnt));
    let t = Torrent::load(&kept).unwrap();
    assert_eq!(t.info_hash(), img.torrent.info_hash());
    assert!(t.block_hashes().is_some());
}

/// A Transmission seeder has the info dictionary and no vmt block-hash table. Of a stock
/// torrent, the magnet client takes the info dictionary from it; of a vmt torrent (whose info
/// dictionary pins a table Transmission cannot serve), it goes on without the table, verifying
/// pieces by their SHA-1, and says so. Both fetches are byte-identical.
#[test]
fn vmt_client_starts_from_a_magnet_link_of_a_transmission_seeder() {
    let test = "vmt_client_starts_from_a_magnet_link_of_a_transmission_seeder";
    if !have("transmission-daemon", test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data = vmt_tests::content(64, 8 * MIB);
    let payload = seed_dir.join("payload.bin");
    std::fs::write(&payload, &data).unwrap();
    let stock_path = dir.path().join("p.torrent");
    let made = run_with_timeout(
        Command::new("transmission-create")
            .args(["-s", "256", "-o"])
            .arg(&stock_path)
            .arg(&payload),
        Duration::from_secs(60),
    );
    assert!(made.status.success(), "{}", text(&made));
    let stock = Torrent::load(&stock_path).unwrap();
    let vmt = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Torrent::create(&payload, 256 << 10, Vec::new()))
        .unwrap();
    let vmt_path = dir.path().join("v.torrent");
    vmt.save(&vmt_path).unwrap();
    let tr = vmt_tests::Transmission::start(&dir.path().join("tr"), &seed_dir);
    tr.add(&stock_path);
    tr.add(&vmt_path);
    wait_until(
        "Transmission verifies its copies",
        Duration::from_secs(60),
        || {
            let info = tr.remote(&["-t", "all", "-i"]);
            String::from_utf8_lossy(&info.stdout)
                .matches("Percent Done: 100%")
                .count()
                == 2
        },
    );
    let at = format!("127.0.0.1:{}", tr.peer_port).parse().unwrap();
    for (torrent, name, table_note) in [(&stock, "stock", false), (&vmt, "vmt", true)] {
        let out = dir.path().join(format!("{name}.bin"));
        let run = fetch(&torrent.magnet_link(Some(at)), &out, &[]);
        assert!(
            run.status.success(),
            "{name}: {}\nTransmission:\n{}",
            text(&run),
            tr.log()
        );
        let said = String::from_utf8_lossy(&run.stderr)
            .contains("no peer served the block-hash table the info dictionary pins");
        assert_eq!(said, table_note, "{name}: {}", text(&run));
        let kept = Torrent::load(&kept_beside(&out)).unwrap();
        assert_eq!(kept.info_hash(), torrent.info_hash(), "{name}");
        assert!(
            kept.block_hashes().is_none(),
            "{name}: Transmission has no table"
        );
        assert_eq!(kept.image_sha256(), torrent.image_sha256(), "{name}");
        assert!(
            std::fs::read(&out).unwrap() == data,
            "{name}: the fetched file differs"
        );
    }
}
