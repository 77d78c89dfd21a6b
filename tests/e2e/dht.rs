//! Issue 14 part 5: a private DHT of three `vmt-run` nodes on loopback. A client given neither
//! a tracker nor `--peer` finds the seeder through the DHT alone and fetches the image
//! byte-identical.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmt_tests::{bin, content, free_port, Proc};

/// Each node starts with its bootstrap node in its routing table and searches it again every
/// 5 s while starved: a minute and a half is ample for a 4 MiB image on loopback, also on a
/// loaded machine.
const LIMIT: Duration = Duration::from_secs(90);
const IMAGE: usize = 4 << 20;

/// A free UDP port on loopback.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
        .port()
}

fn vmt_run(args: &[&str], log: &std::path::Path) -> Proc {
    Proc::spawn(
        Command::new(bin("vmt-run"))
            .args(args)
            .env("VMT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap()),
    )
}

#[test]
fn r14_5_a_client_finds_the_seeder_through_a_private_dht_alone() {
    let dir = tempfile::Builder::new()
        .prefix("dh-dht-")
        .tempdir()
        .unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let data = content(5, IMAGE);
    std::fs::write(p("app.img"), &data).unwrap();
    let (udp_hub, udp_seed, udp_client) = (free_udp_port(), free_udp_port(), free_udp_port());
    let at = |port: u16| format!("127.0.0.1:{port}");

    // The seeder joins through the hub (not up yet: the bootstrap retries) and announces its
    // listening port.
    let seed_listen = at(free_port());
    let _seeder = vmt_run(
        &[
            "seed",
            "--image",
            &p("app.img"),
            "--torrent-out",
            &p("app.torrent"),
            "--listen",
            &seed_listen,
            "--dht",
            "--dht-port",
            &udp_seed.to_string(),
            "--dht-bootstrap",
            &at(udp_hub),
        ],
        &dir.path().join("seeder.log"),
    );
    let torrent = dir.path().join("app.torrent");
    let start = Instant::now();
    while !torrent.exists() {
        assert!(start.elapsed() < LIMIT, "the seeder wrote no torrent");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The hub: a third vmt node of the same torrent, a fetch that does not listen (so it
    // announces nothing and can serve nothing) and joins through the seeder.
    let _hub = vmt_run(
        &[
            "fetch",
            "--torrent",
            &p("app.torrent"),
            "--out",
            &p("hub.img"),
            "--dht",
            "--dht-port",
            &udp_hub.to_string(),
            "--dht-bootstrap",
            &at(udp_seed),
        ],
        &dir.path().join("hub.log"),
    );
    // The client knows only the hub's DHT address: no tracker in the torrent, no --peer.
    let client_log = dir.path().join("client.log");
    let mut client = vmt_run(
        &[
            "fetch",
            "--torrent",
            &p("app.torrent"),
            "--out",
            &p("client.img"),
            "--dht",
            "--dht-port",
            &udp_client.to_string(),
            "--dht-bootstrap",
            &at(udp_hub),
        ],
        &client_log,
    );
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = client.child.try_wait().unwrap() {
            break exit;
        }
        if start.elapsed() > LIMIT {
            client.sigkill();
            panic!(
                "the client found no seeder through the DHT in {LIMIT:?}\nclient:\n{}\nseeder:\n{}\nhub:\n{}",
                std::fs::read_to_string(&client_log).unwrap_or_default(),
                std::fs::read_to_string(dir.path().join("seeder.log")).unwrap_or_default(),
                std::fs::read_to_string(dir.path().join("hub.log")).unwrap_or_default(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&client_log).unwrap_or_default();
    assert!(exit.success(), "the client fetch failed: {exit:?}\n{log}");
    eprintln!(
        "found and fetched through the DHT in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let got = std::fs::read(p("client.img")).unwrap();
    assert!(got == data, "the fetched image is byte-identical");
    assert!(
        log.contains("dht node on UDP"),
        "the client ran a DHT node: {log}"
    );
}
