//! Web seeds (BEP 19) against nginx from Debian: a client with only an HTTP origin fetches
//! and mounts the image; in a swarm, peers carry most bytes; an origin serving wrong bytes is
//! banned and nothing of it is kept; a server without Range support, a redirect loop and a
//! 5xx get bounded handling; `vmt-run torrent` writes what `seed` writes. nginx listens on
//! a free 127.0.0.1 port.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use vmt_swarm::{Engine, EngineConfig, OriginState, SwarmStats};
use vmt_tests::{
    bin, dialing, free_port, run_with_timeout, shutdown_all, wait_until, within, CliSeeder, Nginx,
    Proc, TestImage, MIB, PIECE,
};

const LIMIT: Duration = Duration::from_secs(120);

/// Skips (with a note) where nginx is missing; `.ci/run` installs it, so CI never skips.
fn nginx_or_skip() -> bool {
    if Nginx::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nginx is not installed (apt-get install nginx)"
    );
    eprintln!("skipping: nginx is not installed");
    false
}

async fn wait_stats(e: &Engine, what: &str, cond: impl Fn(&SwarmStats) -> bool) -> SwarmStats {
    within(what, LIMIT, async {
        loop {
            let st = e.stats();
            if cond(&st) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// `vmt-run seed --web-seed DIR-URL/` writes the url-list; `vmt-run fetch` and `vmt-run
/// mount` with no peer and no tracker get the image byte for byte from nginx alone.
#[test]
fn a_client_with_only_a_web_seed_fetches_and_mounts() {
    if !nginx_or_skip() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("b4-ws-").tempdir().unwrap();
    let served = dir.path().join("www");
    std::fs::create_dir_all(&served).unwrap();
    let image = served.join("app.img");
    let data = vmt_tests::content(41, 6 * MIB + 12345);
    std::fs::write(&image, &data).unwrap();
    let nginx = Nginx::start(&served, "");
    let torrent = dir.path().join("app.torrent");
    let url = format!("{}/", nginx.base);
    {
        // The seeder only writes the torrent here; the client never learns of it.
        let _seeder = CliSeeder::start(&image, &torrent, &["--web-seed", &url]);
    }
    let t = vmt_swarm::Torrent::load(&torrent).unwrap();
    assert_eq!(t.web_seeds(), std::slice::from_ref(&url));
    assert_eq!(t.web_seed_url(&url), format!("{}/app.img", nginx.base));

    let out = dir.path().join("got.img");
    let fetched = run_with_timeout(
        Command::new(bin("vmt-run"))
            .args(["fetch", "--torrent"])
            .arg(&torrent)
            .arg("--out")
            .arg(&out),
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&fetched.stdout);
    assert!(
        fetched.status.success(),
        "fetch from the web seed alone: {stdout}\n{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(std::fs::read(&out).unwrap() == data, "fetched bytes differ");
    assert!(stdout.contains("from web seeds"), "{stdout}");
    assert!(
        nginx.access_log().contains("206"),
        "nginx answered ranges: {}",
        nginx.access_log()
    );

    // The mount: demand only, so every byte read comes through a miss served by the origin.
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let status_addr = format!("127.0.0.1:{}", free_port());
    let report = dir.path().join("report.json");
    let mut proc = Proc {
        child: Command::new(bin("vmt-run"))
            .args(["mount", "--strategy", "demand", "--torrent"])
            .arg(&torrent)
            .arg("--mountpoint")
            .arg(&mountpoint)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--status", &status_addr, "--report"])
            .arg(&report)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
        mountpoint: Some(mountpoint.clone()),
    };
    let file = mountpoint.join("app.img");
    wait_until("the mount", LIMIT, || file.exists());
    let mut got = Vec::new();
    std::fs::File::open(&file)
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == data, "bytes read through the mount differ");
    let status = proc.sigterm();
    assert!(status.success(), "vmt-run mount exit: {status:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let origin = report["origin_downloaded"].as_u64().unwrap();
    assert!(origin >= data.len() as u64, "report: {report}");
    assert_eq!(
        report["downloaded"].as_u64().unwrap(),
        origin,
        "all from the origin"
    );
    assert_eq!(report["web_seeds"][0]["state"], "Ok", "report: {report}");
    assert!(report["read_misses"].as_u64().unwrap() > 0);
}

/// `vmt-run torrent` writes, without seeding, the very bytes `vmt-run seed --torrent-out`
/// writes for the same image and options; a client given only that torrent fetches the image
/// byte for byte from nginx alone. Bad options fail before hashing, with one clear line.
#[test]
fn the_torrent_command_writes_what_seed_writes() {
    if !nginx_or_skip() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ws-torrent-")
        .tempdir()
        .unwrap();
    let served = dir.path().join("www");
    std::fs::create_dir_all(&served).unwrap();
    let image = served.join("app.img");
    let data = vmt_tests::content(43, 5 * MIB + 4321);
    std::fs::write(&image, &data).unwrap();
    let nginx = Nginx::start(&served, "");
    let url = format!("{}/app.img", nginx.base);
    let options = ["--piece-size", "64KiB", "--web-seed", &url];

    let written = dir.path().join("written.torrent");
    let made = run_with_timeout(
        Command::new(bin("vmt-run"))
            .args(["torrent", "--image"])
            .arg(&image)
            .arg("--out")
            .arg(&written)
            .args(options),
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(
        made.status.success(),
        "vmt-run torrent: {stdout}\n{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let t = vmt_swarm::Torrent::load(&written).unwrap();
    assert!(
        stdout.contains(&t.info_hash().as_string()) && stdout.contains("1 web seed"),
        "{stdout}"
    );
    let seeded = dir.path().join("seeded.torrent");
    {
        let _seeder = CliSeeder::start(&image, &seeded, &options);
    }
    assert!(
        std::fs::read(&written).unwrap() == std::fs::read(&seeded).unwrap(),
        "vmt-run torrent and vmt-run seed wrote different torrents"
    );
    assert_eq!(t.web_seeds(), std::slice::from_ref(&url));
    assert_eq!(t.piece_count(), (data.len() as u32).div_ceil(64 << 10));

    let out = dir.path().join("got.img");
    let fetched = run_with_timeout(
        Command::new(bin("vmt-run"))
            .args(["fetch", "--torrent"])
            .arg(&written)
            .arg("--out")
            .arg(&out),
        LIMIT,
    );
    assert!(
        fetched.status.success(),
        "fetch from nginx alone: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(std::fs::read(&out).unwrap() == data, "fetched bytes differ");
    assert!(
        nginx.access_log().contains(" 206 "),
        "{}",
        nginx.access_log()
    );

    // A web seed that is not HTTP fails at once, before hashing, and writes nothing.
    let refused = dir.path().join("refused.torrent");
    let bad = run_with_timeout(
        Command::new(bin("vmt-run"))
            .args([
                "torrent",
                "--web-seed",
                "ftp://example.org/app.img",
                "--image",
            ])
            .arg(&image)
            .arg("--out")
            .arg(&refused),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("ftp://example.org/app.img") && !stderr.contains("hashing"),
        "{stderr}"
    );
    assert!(!refused.exists());
}

/// A vmt seeder, nginx with the image, and two vmt clients: the peers carry most bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_takes_most_bytes_from_peers() {
    if !nginx_or_skip() {
        return;
    }
    let mut img = TestImage::new(24 * MIB, 42).await;
    let nginx = Nginx::start(img.dir.path(), "");
    img.torrent = img
        .torrent
        .with_web_seeds(&[format!("{}/image.img", nginx.base)])
        .unwrap();
    let seeder = img.seeder(EngineConfig::default()).await;
    let names = ["a", "b"];
    let clients = img.meshed_clients(&names, dialing(&[&seeder])).await;
    let mut down = 0;
    let mut origin = 0;
    for (c, name) in clients.iter().zip(names) {
        within(name, LIMIT, c.wait_complete()).await.unwrap();
        let st = c.stats();
        down += st.downloaded;
        origin += st.origin_downloaded;
        assert_eq!(st.web_seeds.len(), 1);
    }
    shutdown_all(&[&clients[0], &clients[1], &seeder]).await;
    for name in names {
        img.assert_client_has_image(name);
    }
    let share = origin as f64 / down as f64;
    eprintln!("origin share {share:.3} ({origin} of {down} bytes)");
    assert!(share < 0.5, "the origin sent {origin} of {down} bytes");
}

/// An origin serving another file's bytes: every range fails verification, nothing of it is
/// written or readable, the URL is banned after `MAX_ORIGIN_STRIKES`; a good peer then
/// completes the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_with_wrong_bytes_is_banned_and_never_served() {
    if !nginx_or_skip() {
        return;
    }
    let mut img = TestImage::new(8 * MIB, 43).await;
    let www = img.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    // One byte wrong in every other piece: the good pieces may be kept, the others never.
    let mut bad = img.data.clone();
    for p in (0..bad.len()).step_by(2 * PIECE as usize) {
        bad[p + 1000] ^= 0x5a;
    }
    std::fs::write(www.join("image.img"), &bad).unwrap();
    let nginx = Nginx::start(&www, "");
    img.torrent = img
        .torrent
        .with_web_seeds(&[format!("{}/image.img", nginx.base)])
        .unwrap();
    let client = img.client("c", EngineConfig::default()).await;
    let st = wait_stats(&client, "the origin banned", |st| {
        matches!(st.web_seeds[0].state, OriginState::Banned(_))
    })
    .await;
    assert_eq!(st.web_seeds[0].hash_failures, vmt_swarm::MAX_ORIGIN_STRIKES);
    assert!(
        st.wasted_by.corrupt >= 3 * PIECE as u64,
        "{:?}",
        st.wasted_by
    );
    // Nothing corrupt is present: each present block reads as the image.
    let layout = *client.layout();
    for b in 0..layout.blocks() {
        if client.has_block(b) {
            let off = layout.block_offset(b);
            let mut buf = vec![0; layout.block_size(b) as usize];
            client.read_at(off, &mut buf).unwrap();
            assert!(
                buf == img.data[off as usize..off as usize + buf.len()],
                "block {b} is present with wrong bytes"
            );
        }
    }
    for p in (0..layout.pieces()).step_by(2) {
        assert!(!client.has_block(layout.piece_blocks(p).start + 1000 / layout.block_len()));
    }
    // A good peer finishes the job.
    let seeder = img.seeder(EngineConfig::default()).await;
    client.add_peer(seeder.listen_addr().unwrap());
    img.finish_download(&client, "c").await;
    shutdown_all(&[&seeder]).await;
}

/// A server ignoring Range (200 with the whole file), a redirect loop, and a 503: the first
/// two are banned with their reason and cost no payload; the third is retried with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_origins_are_handled_and_bounded() {
    if !nginx_or_skip() {
        return;
    }
    let img = TestImage::new(4 * MIB, 44).await;
    let extra = format!(
        "    location = /noranges/image.img {{ max_ranges 0; alias {}; }}\n\
         location /loop {{ return 302 /loop; }}\n\
         location /err {{ return 503; }}\n",
        img.path.display()
    );
    let nginx = Nginx::start(img.dir.path(), &extra);
    let b = &nginx.base;
    let config = EngineConfig {
        web_seeds: vec![
            format!("{b}/noranges/image.img"),
            format!("{b}/loop/image.img"),
            format!("{b}/err/image.img"),
        ],
        ..Default::default()
    };
    let client = img.client("c", config).await;
    let st = wait_stats(&client, "two origins banned", |st| {
        st.web_seeds
            .iter()
            .filter(|w| matches!(w.state, OriginState::Banned(_)))
            .count()
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let st2 = client.stats();
    shutdown_all(&[&client]).await;
    let state = |i: usize| format!("{:?}", st2.web_seeds[i].state);
    assert!(state(0).contains("Range"), "{}", state(0));
    assert!(state(1).contains("redirect"), "{}", state(1));
    assert!(
        state(2).starts_with("Retrying") && state(2).contains("503"),
        "{}",
        state(2)
    );
    assert_eq!(st.origin_downloaded, 0);
    assert_eq!(st2.origin_downloaded, 0);
    assert_eq!(st2.blocks_present, 0);
    // 200 answers cost headers, not the image: nginx logged what it sent.
    let log = nginx.access_log();
    let noranges: Vec<&str> = log.lines().filter(|l| l.contains("/noranges/")).collect();
    assert!(!noranges.is_empty() && noranges.len() <= 2, "{log}");
    // The 503 is retried with backoff (1 s, 2 s, ...), not in a loop.
    let errs = log.lines().filter(|l| l.contains("/err/")).count();
    assert!(
        (1..=12).contains(&errs),
        "{errs} requests to the 503 origin:\n{log}"
    );
}

/// Transmission 3.00 downloads the image from the vmt torrent's web seed alone (no peer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmission_downloads_from_the_web_seed() {
    use crate::swarm_interop::have;
    use vmt_tests::Transmission;
    if !nginx_or_skip()
        || !have(
            "transmission-daemon",
            "transmission_downloads_from_the_web_seed",
        )
    {
        return;
    }
    let img = TestImage::new(8 * MIB, 45).await;
    let nginx = Nginx::start(img.dir.path(), "");
    let torrent = img
        .torrent
        .with_web_seeds(&[format!("{}/image.img", nginx.base)])
        .unwrap();
    let torrent_path = img.dir.path().join("web.torrent");
    torrent.save(&torrent_path).unwrap();
    let leech = img.dir.path().join("leech");
    let tr = Transmission::start(&img.dir.path().join("tr"), &leech);
    tr.add(&torrent_path);
    let done = tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < LIMIT {
            if tr.complete() {
                return Ok(tr);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(tr.log())
    })
    .await
    .unwrap();
    let log = nginx.access_log();
    let _tr = done.unwrap_or_else(|log| panic!("Transmission did not complete:\n{log}"));
    assert!(std::fs::read(leech.join(img.torrent.name())).unwrap() == img.data);
    assert!(
        log.contains(" 206 "),
        "Transmission asked nginx for ranges:\n{log}"
    );
}
