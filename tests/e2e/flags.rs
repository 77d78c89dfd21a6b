//! Flags as users type them, through the real binaries: sizes, rates and durations with
//! exact units (`vmt_formats::units`), and peers by host name (`vmt_runtime::peer_addr`).

use std::process::{Command, Output};
use std::time::Duration;

use vmt_tests::{bin, content, run_with_timeout, CliSeeder, MIB};

const LIMIT: Duration = Duration::from_secs(60);

fn run(tool: &str, args: &[&str]) -> Output {
    run_with_timeout(Command::new(bin(tool)).args(args), LIMIT)
}

/// Fails unless `out` is a failure whose error is one line holding every part of `want`.
fn one_line_error(out: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("error") || l.starts_with("vmt-"))
        .unwrap_or_else(|| panic!("no error line in {err:?}"));
    for w in want {
        assert!(line.contains(w), "{w:?} not in the error line {line:?}");
    }
}

/// A fetch that names its peer `localhost:PORT` (the seeder listens on 127.0.0.1) with a
/// download limit in bits per second completes with the image's bytes.
#[test]
fn fetch_by_host_name_with_a_bit_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(40, 4 * MIB);
    let image = dir.path().join("app.img");
    std::fs::write(&image, &data).unwrap();
    let seeder = CliSeeder::start(&image, &dir.path().join("app.torrent"), &[]);
    let out = dir.path().join("got.img");
    let peer = format!("localhost:{}", seeder.port());
    let res = run(
        "vmt-run",
        &[
            "fetch",
            "--torrent",
            seeder.torrent.to_str().unwrap(),
            "--peer",
            &peer,
            "--out",
            out.to_str().unwrap(),
            "--download-limit",
            "100Mbit",
            "--upload-limit",
            "12.5MB/s",
        ],
    );
    assert!(res.status.success(), "{res:?}");
    assert!(std::fs::read(&out).unwrap() == data, "fetched bytes differ");
}

#[test]
fn bad_units_and_peers_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let torrent = dir.path().join("none.torrent");
    let t = torrent.to_str().unwrap();
    let out = dir.path().join("o.img");
    let o = out.to_str().unwrap();
    // An ambiguous unit says which ones to write instead.
    one_line_error(
        &run(
            "vmt-run",
            &[
                "fetch",
                "--torrent",
                t,
                "--out",
                o,
                "--download-limit",
                "10M",
            ],
        ),
        &["invalid rate \"10M\"", "Mbit", "MiB/s"],
    );
    one_line_error(
        &run(
            "vmt-run",
            &[
                "seed",
                "--image",
                t,
                "--listen",
                "127.0.0.1:0",
                "--piece-size",
                "1.5B",
            ],
        ),
        &["invalid size \"1.5B\"", "whole number of bytes", "KiB"],
    );
    one_line_error(
        &run(
            "vmt-train",
            &["synth", "--out", d, "--image-size", "64 parsecs"],
        ),
        &["unknown unit \"parsecs\"", "powers of 1024"],
    );
    one_line_error(
        &run(
            "vmt-train",
            &[
                "eval",
                "--traces",
                d,
                "--bundle",
                t,
                "--think",
                "5 fortnights",
            ],
        ),
        &["invalid duration \"5 fortnights\"", "250ms"],
    );
    one_line_error(
        &run("vmt-record", &["show", "--block-size", "4K", t]),
        &["\"K\" is ambiguous", "KiB"],
    );
    // Peers: a malformed one at parse time, an unresolvable name before any network work.
    one_line_error(
        &run(
            "vmt-run",
            &["fetch", "--torrent", t, "--out", o, "--peer", "localhost"],
        ),
        &["invalid peer address \"localhost\"", "HOST:PORT"],
    );
    let img = dir.path().join("x.img");
    std::fs::write(&img, content(41, MIB)).unwrap();
    // `vmt-run seed` of that image on any port, with `extra` flags.
    let seed = |extra: &[&str]| {
        let mut args = vec![
            "seed",
            "--image",
            img.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        run("vmt-run", &args)
    };
    one_line_error(
        &seed(&["--peer", "no-such-host.invalid:6881"]),
        &["vmt-run: error: cannot resolve peer no-such-host.invalid:6881"],
    );
    // Urgent requests at a seeder that does not inject: refused before any hashing.
    one_line_error(
        &seed(&["--urgent"]),
        &["vmt-run: error: --urgent needs --inject"],
    );
}

/// Decimal sizes that make whole bytes are taken exactly: 4.5MiB is 4,718,592 bytes.
#[test]
fn decimal_sizes_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let res = run(
        "vmt-train",
        &[
            "synth",
            "--out",
            dir.path().to_str().unwrap(),
            "--image-size",
            "4.5MiB",
            "--tasks",
            "1",
            "--runs",
            "1",
            "--sessions",
            "0",
        ],
    );
    assert!(res.status.success(), "{res:?}");
    let trace = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "vmtrace"))
        .expect("a trace");
    let t = vmt_formats::trace::Trace::load(&trace).unwrap();
    assert_eq!(t.image.size, 4_718_592);
}
