//! `datasets/wait-phases.py`, the reader of a traced crowd's waits, on a log made by hand:
//! its split of the time waited is the arithmetic of the lines below, not of a crowd.

use std::process::Command;

use vmt_tests::workspace_root;

/// Two blocks one reader waited for (times in ms from 23:00:00): block 5 asked of a peer at
/// 10 and there at 110; block 6 asked of the seeder (port 45000) at 5, which declined, then
/// of another peer at 50, there at 80. Waited 190 ms in all: finding a source 15 (7.9%),
/// asked again elsewhere 45 (23.7%), served 130 (68.4%); the wait of 100 ms or more is block
/// 5's, 110 ms (57.9%), 10 of it finding a source (9.1%) and 100 served (90.9%).
const LOG: &str = "\
2026-11-29T23:00:00.000000Z TRACE vmt_swarm::waits: demand me=100 start=5 end=7
2026-11-29T23:00:00.005000Z TRACE vmt_swarm::waits: request me=100 block=6 peer=127.0.0.1:45000 to=45000 urgent=false
2026-11-29T23:00:00.010000Z TRACE vmt_swarm::waits: request me=100 block=5 peer=127.0.0.2:200 to=200 urgent=true
2026-11-29T23:00:00.050000Z TRACE vmt_swarm::waits: request me=100 block=6 peer=127.0.0.3:300 to=300 urgent=true
2026-11-29T23:00:00.080000Z TRACE vmt_swarm::waits: arrival me=100 block=6 peer=127.0.0.3:300 from=300
2026-11-29T23:00:00.110000Z TRACE vmt_swarm::waits: arrival me=100 block=5 peer=127.0.0.2:200 from=200
2026-11-29T23:00:00.120000Z  INFO vmt_runtime: a line of another kind, ignored
";

/// The line of `out` after `after` (a line containing it) that starts with `prefix`.
fn line<'a>(out: &'a str, after: &str, prefix: &str) -> &'a str {
    let start = out
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in:\n{out}"));
    out[start..]
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} after {after:?} in:\n{out}"))
}

#[test]
fn wait_phases_splits_a_handmade_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("clients.log");
    std::fs::write(&log, LOG).unwrap();
    let out = Command::new("python3")
        .arg(workspace_root().join("datasets/wait-phases.py"))
        .arg(&log)
        .args(["--long", "0.1"])
        .output()
        .expect("python3 (installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 waited-for blocks answered"), "{stdout}");
    let all = "time waited, summed";
    assert!(
        line(&stdout, all, "finding a source").contains(" 7.9%"),
        "{stdout}"
    );
    assert!(
        line(&stdout, all, "asked again elsewhere").contains(" 23.7%"),
        "{stdout}"
    );
    assert!(line(&stdout, all, "served").contains(" 68.4%"), "{stdout}");
    assert!(
        line(&stdout, all, "asked more than once").contains("1 blocks (50.0%)"),
        "{stdout}"
    );
    let long = "waits of 0.1 s or more";
    assert!(
        line(&stdout, long, long).contains("1 blocks, 57.9% of the time waited"),
        "{stdout}"
    );
    assert!(
        line(&stdout, long, "finding a source").contains(" 9.1%"),
        "{stdout}"
    );
    assert!(line(&stdout, long, "served").contains(" 90.9%"), "{stdout}");
}
