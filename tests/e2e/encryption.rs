//! Message Stream Encryption (MSE/PE) against Transmission 3.00 with its own encryption
//! settings, and between vmt peers with each policy.
//!
//! Transmission's default ("encryption": 1, prefer) dials MSE offering RC4 only and never falls
//! back to a plain handshake; "encryption": 2 (require) also drops plain handshakes it is
//! dialed with. Transmission never dials 127.0.0.0/8 peers learned from a tracker, so the
//! tracker test runs in a private network namespace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmt_swarm::{Encryption, EngineConfig};
use vmt_tests::{
    bin, dialing, shutdown_all, Netns, Proc, TestImage, Transmission, TransmissionSetup, MIB,
};

use crate::swarm_interop::{have, transmission_seeder, OpenTracker};

/// Polls Transmission until its torrents are complete (true) or `limit` passes (false);
/// whether any of its peers was shown with the `E` (encrypted) flag meanwhile.
fn wait_transmission(tr: &Transmission, limit: Duration) -> (bool, bool) {
    let start = Instant::now();
    let mut saw_encrypted = false;
    while start.elapsed() < limit {
        // Columns: Address, Flags, Done, Down, Up, Client.
        saw_encrypted |= tr
            .peers()
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1).is_some_and(|f| f.contains('E')));
        if tr.complete() {
            return (true, saw_encrypted);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    (false, saw_encrypted)
}

/// The interop test: Transmission with its default settings (encryption preferred)
/// learns of a vmt seeder only through opentracker, dials it (MSE, RC4), and completes with
/// the image byte for byte. Before vmt accepted MSE it never got past the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmission_with_default_encryption_finds_a_vmt_seeder_through_opentracker() {
    let test = "transmission_with_default_encryption_finds_a_vmt_seeder_through_opentracker";
    if !have("transmission-daemon", test) || !have("opentracker", test) {
        return;
    }
    let (trk_ip, tr_ip) = ("10.214.41.1", "10.214.41.2");
    let Some(ns) = Netns::create("ma-mse", &[trk_ip, tr_ip]) else {
        eprintln!("SKIPPED {test}: cannot create a network namespace (needs root and ip)");
        return;
    };
    let (trk_port, seed_port) = (41001, 41003);
    let img =
        TestImage::with_trackers(16 * MIB, 41, vec![OpenTracker::url_at(trk_ip, trk_port)]).await;
    let torrent_path = img.dir.path().join("image.torrent");
    img.torrent.save(&torrent_path).unwrap();
    let tracker = OpenTracker::start_in(
        &img.dir.path().join("tracker"),
        Some(&ns),
        trk_ip,
        trk_port,
        &img.torrent,
    );
    // The seeder's announce reaches the tracker from an address of the namespace: it listens
    // on all of them, so whichever the tracker hands out is served.
    let seed_log = img.dir.path().join("seed.log");
    let _seed = Proc::spawn(
        ns.command(bin("vmt-run"))
            .env("VMT_LOG", "vmt_swarm=debug")
            .args(["seed", "--image"])
            .arg(&img.path)
            .arg("--torrent")
            .arg(&torrent_path)
            .args(["--listen", &format!("0.0.0.0:{seed_port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&seed_log).unwrap()),
    );
    tracker.wait_scrape(&img.torrent, "completei1");
    let leech = img.dir.path().join("leech");
    let setup = TransmissionSetup {
        bind: tr_ip.into(),
        peer_port: Some(41004),
        rpc_port: Some(41005),
        netns: Some(ns.name.clone()),
        ..Default::default()
    };
    assert_eq!(
        setup.encryption, 1,
        "Transmission's own default: prefer MSE"
    );
    let tr = Transmission::start_with(&img.dir.path().join("tr"), &leech, &setup);
    tr.add(&torrent_path);
    let (done, encrypted) =
        tokio::task::block_in_place(|| wait_transmission(&tr, Duration::from_secs(120)));
    let seed_text = || std::fs::read_to_string(&seed_log).unwrap_or_default();
    assert!(
        done,
        "Transmission did not complete; its peers:\n{}\nits log:\n{}\nthe seeder's log:\n{}",
        tr.peers(),
        tr.log(),
        seed_text()
    );
    let got = std::fs::read(leech.join(img.torrent.name())).unwrap();
    assert!(
        got == img.data,
        "Transmission's copy differs from the image"
    );
    assert!(
        encrypted || seed_text().contains("rc4=true"),
        "the connection was not RC4 (Transmission asked for it)"
    );
}

/// A vmt client (`vmt-run fetch`, default policy) downloads from a Transmission seeder that
/// requires encryption: it drops plain handshakes, so only MSE with RC4 gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmt_client_downloads_from_a_transmission_seeder_that_requires_encryption() {
    let test = "vmt_client_downloads_from_a_transmission_seeder_that_requires_encryption";
    if !have("transmission-daemon", test) || !have("transmission-create", test) {
        return;
    }
    let (tr, img) = tokio::task::block_in_place(|| {
        transmission_seeder(
            42,
            &TransmissionSetup {
                encryption: 2,
                ..Default::default()
            },
        )
    });
    let torrent_path = img.dir.path().join("p.torrent");
    let out = img.dir.path().join("out.img");
    let fetched = tokio::task::block_in_place(|| {
        vmt_tests::run_with_timeout(
            Command::new(bin("vmt-run"))
                .env("VMT_LOG", "vmt_swarm=debug")
                .args(["fetch", "--torrent"])
                .arg(&torrent_path)
                .arg("--out")
                .arg(&out)
                .args(["--peer", &format!("127.0.0.1:{}", tr.peer_port)]),
            Duration::from_secs(150),
        )
    });
    assert!(
        fetched.status.success(),
        "vmt-run fetch failed:\n{}\nTransmission's log:\n{}",
        String::from_utf8_lossy(&fetched.stderr),
        tr.log()
    );
    assert!(std::fs::read(&out).unwrap() == img.data, "the copy differs");
    assert!(
        String::from_utf8_lossy(&fetched.stderr).contains("rc4=true"),
        "the connection was not RC4"
    );
}

/// vmt to vmt: `prefer` on both sides obfuscates the handshake but selects a plaintext
/// payload; a seeder that requires encryption gets RC4, even from a client that dials
/// plaintext first (refused, it dials MSE once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmt_peers_encrypt_only_when_one_side_requires_it() {
    for (seed_policy, client_policy, rc4) in [
        (Encryption::Prefer, Encryption::Prefer, false),
        (Encryption::Require, Encryption::Prefer, true),
        (Encryption::Require, Encryption::Plaintext, true),
        (Encryption::Plaintext, Encryption::Require, true),
    ] {
        let img = TestImage::new(4 * MIB, 43).await;
        let seed = img
            .seeder(EngineConfig {
                encryption: seed_policy,
                ..Default::default()
            })
            .await;
        let c = img
            .client(
                "c",
                EngineConfig {
                    encryption: client_policy,
                    ..dialing(&[&seed])
                },
            )
            .await;
        vmt_tests::within("the download", Duration::from_secs(60), c.wait_complete())
            .await
            .unwrap_or_else(|e| panic!("{seed_policy} seeder, {client_policy} client: {e}"));
        let peers = c.stats().peers;
        assert!(
            peers.iter().any(|p| p.encrypted == rc4 && p.downloaded > 0),
            "{seed_policy} seeder, {client_policy} client: expected rc4={rc4}: {peers:?}"
        );
        shutdown_all(&[&c, &seed]).await;
        img.assert_client_has_image("c");
    }
}
