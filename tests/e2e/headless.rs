//! `vmt-run replay-client`, the headless client of issue 15: the same stalls as a mount on the
//! same link, and a crowd of them in one process that trades pieces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vmt_tests::{bin, content, make_ext4_with, run_with_timeout, CliSeeder, MountProc};

const LIMIT: Duration = Duration::from_secs(180);
/// The seeder's uplink in the stall comparison: slow enough that the trace stalls for seconds,
/// so that the comparison is of the fetch, not of noise.
const SEED_RATE: &str = "2MiB";

/// An ext4 appliance of 12 files and the trace of a task that reads them all (recorded
/// through `vmt-record run`, as the appliance's traces are).
fn appliance(dir: &Path) -> (PathBuf, PathBuf) {
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("data/f{i}"), content(40 + i, 500_000)))
        .collect();
    let image = dir.join("app.img");
    make_ext4_with(dir, &image, &files, 48);
    let loop_dir = dir.join("loop");
    std::fs::create_dir_all(&loop_dir).unwrap();
    let traces = dir.join("traces");
    let script = format!(
        "set -e; mount -t ext4 -o loop,ro,noload \"$VMT_IMAGE\" {l}; for f in {l}/data/*; do cat $f > /dev/null; sleep 0.05; done; umount {l}",
        l = loop_dir.display()
    );
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["run", "--task", "read", "--image"])
            .arg(&image)
            .arg("--out")
            .arg(&traces)
            .args(["--", "sh", "-c", &script]),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    (image, traces.join("read-1.vmtrace"))
}

/// `vmt-run replay-client` with `extra` flags; its results, client lines then the run line.
fn replay_client(
    dir: &Path,
    seeder: &CliSeeder,
    trace: &Path,
    image: &Path,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    let out = dir.join("headless.jsonl");
    let res = run_with_timeout(
        Command::new(bin("vmt-run"))
            .args(["replay-client", "--torrent"])
            .arg(&seeder.torrent)
            .args(["--peer", &seeder.addr, "--trace"])
            .arg(trace)
            .arg("--check-image")
            .arg(image)
            .arg("--dir")
            .arg(dir.join("headless-data"))
            .arg("--out")
            .arg(&out)
            .args(extra),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A `vmt-run mount` (strategy demand) on a fresh seeder, and `vmt-record replay` through it.
fn mount_stall(dir: &Path, image: &Path, trace: &Path, round: usize) -> f64 {
    let seeder = CliSeeder::start(
        image,
        &dir.join(format!("m{round}.torrent")),
        &["--upload-limit", SEED_RATE],
    );
    let mut mount = MountProc::start(
        dir,
        &format!("m{round}"),
        &seeder.torrent,
        &["--strategy", "demand", "--peer", &seeder.addr],
    );
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["replay", "--json", "--trace"])
            .arg(trace)
            .arg("--file")
            .arg(&mount.served),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    assert!(mount.proc.sigterm().success());
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    report["stall_s"].as_f64().unwrap()
}

/// Issue 15: the headless client and the mount give the same stall for one trace on one link.
/// Each side runs twice on a fresh seeder (2 MiB/s) and a fresh client, strategy demand; the
/// means must agree within max(15%, 0.3 s). Measured on the 2-core machine shared with other
/// builds (load 13): mount 2.234 s and 2.230 s, headless 2.169 s and 2.168 s; a side's two runs
/// differ by under 0.01 s, the sides by 3% (the mount's page cache and readahead).
#[test]
fn headless_client_stalls_as_the_mount_does() {
    let dir = tempfile::tempdir().unwrap();
    let (image, trace) = appliance(dir.path());
    let mut mount = Vec::new();
    let mut headless = Vec::new();
    for round in 0..2 {
        mount.push(mount_stall(dir.path(), &image, &trace, round));
        let seeder = CliSeeder::start(
            &image,
            &dir.path().join(format!("h{round}.torrent")),
            &["--upload-limit", SEED_RATE],
        );
        let lines = replay_client(
            dir.path(),
            &seeder,
            &trace,
            &image,
            &["--strategy", "demand", "--clients", "1"],
        );
        let client = &lines[0];
        assert_eq!(client["verified"], true, "{client}");
        assert!(client["from_seeder"].as_u64().unwrap() > 0, "{client}");
        headless.push(client["stall_s"].as_f64().unwrap());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (m, h) = (mean(&mount), mean(&headless));
    eprintln!("stall: mount {mount:?} (mean {m:.3} s), headless {headless:?} (mean {h:.3} s)");
    assert!(m > 1.0, "the link must make the trace stall: {mount:?}");
    assert!(
        (h - m).abs() <= (0.15 * m).max(0.3),
        "mount {mount:?} vs headless {headless:?}"
    );
}

/// Issue 15: four headless clients in one process form a swarm: they download from each
/// other, and every byte each of them read is the image's.
#[test]
fn four_headless_clients_trade_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (image, trace) = appliance(dir.path());
    let seeder = CliSeeder::start(
        &image,
        &dir.path().join("app.torrent"),
        &["--upload-limit", "1MiB"],
    );
    let lines = replay_client(
        dir.path(),
        &seeder,
        &trace,
        &image,
        &["--strategy", "stream", "--clients", "4"],
    );
    let clients: Vec<_> = lines.iter().filter(|l| l["kind"] == "client").collect();
    assert_eq!(clients.len(), 4);
    for c in &clients {
        assert_eq!(c["verified"], true, "{c}");
        assert_eq!(c["mismatches"], 0, "{c}");
        assert!(c["reads"].as_u64().unwrap() > 0, "{c}");
    }
    let from_peers: u64 = clients
        .iter()
        .map(|c| c["from_peers"].as_u64().unwrap())
        .sum();
    let uploaded: u64 = clients
        .iter()
        .map(|c| c["uploaded"].as_u64().unwrap())
        .sum();
    assert!(from_peers > 0 && uploaded > 0, "{lines:?}");
    let run = lines.last().unwrap();
    assert_eq!(run["kind"], "run");
    assert_eq!(run["n"], 4);
    assert_eq!(run["failed"], 0);
    assert!(run["cpu_s"].as_f64().unwrap() > 0.0, "{run}");
}
