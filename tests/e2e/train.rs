//! `vmt-train` end to end: the real binary fits, shows and evaluates synthetic traces written
//! by the test (binary `.vmtrace` and CSV), and refuses bad input with one clear line.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use vmt_model::synth::{SynthImage, SynthParams};
use vmt_tests::{bin, run_with_timeout};

fn train(args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("vmt-train"));
    cmd.args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a clean failure: exit code 1, one line on stderr containing `want`, no panic.
fn fails_with(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
}

/// Writes a corpus of 4 tasks (task runs + sessions) to `dir`; one run as CSV.
fn write_corpus(dir: &Path, seed: u64) -> SynthImage {
    let img = SynthImage::new(SynthParams::new(32 << 20, 4).seed(seed).compute_us(30_000));
    std::fs::create_dir_all(dir).unwrap();
    for (i, t) in img.corpus(3, 3, 3).iter().enumerate() {
        if i == 0 {
            std::fs::write(dir.join("first.csv"), t.to_csv()).unwrap();
        } else {
            t.save(&dir.join(format!("{}-{}.vmtrace", t.label, t.run)))
                .unwrap();
        }
    }
    img
}

#[test]
fn fit_show_eval_on_synthetic_traces() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    write_corpus(&traces, 1);
    let bundle = dir.path().join("app.vmtp");
    let t = traces.to_str().unwrap();
    let b = bundle.to_str().unwrap();

    let out = ok(&train(&["fit", "--traces", t, "--out", b]));
    assert!(out.contains("4 profiles"), "{out}");
    assert!(out.contains("purity 1.00"), "{out}");

    let out = ok(&train(&["show", b]));
    for name in [
        "compile",
        "browse",
        "office",
        "backup",
        "transitions",
        "common blocks",
    ] {
        assert!(out.contains(name), "{name} missing from show:\n{out}");
    }

    let out = ok(&train(&[
        "eval",
        "--cv",
        "--bundle",
        b,
        "--traces",
        t,
        "--bandwidth",
        "100Mbit",
        "--piece-size",
        "256KiB",
        "--think",
        "2s",
        "--json",
    ]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["cross_validated"], true);
    let mean = |s: &str| {
        doc["summary"]["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["strategy"] == s)
            .unwrap()["mean_completion_us"]
            .as_f64()
            .unwrap()
    };
    assert!(mean("oracle") <= mean("markov"));
    assert!(mean("markov") <= mean("demand"));
    assert!(mean("demand") < mean("full"));
    // Every ratio to markov is a number, or null where the other strategy never stalled (the
    // oracle, with think time), and comes with the difference in µs: never NaN.
    for r in doc["summary"]["markov_stall_ratio"].as_array().unwrap() {
        assert!(r[1]["excess_us"].is_f64(), "{r}");
        assert!(r[1]["ratio"].is_f64() || r[1]["ratio"].is_null(), "{r}");
    }

    let out = ok(&train(&[
        "eval", "--bundle", b, "--traces", t, "--think", "5s",
    ]));
    assert!(out.contains("markov completion ratio"), "{out}");
    assert!(!out.contains("NaN"), "{out}");
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let other = dir.path().join("other");
    write_corpus(&a, 1);
    write_corpus(&other, 2);
    let bundle = dir.path().join("a.vmtp");
    let (ad, b) = (a.to_str().unwrap(), bundle.to_str().unwrap());
    ok(&train(&["fit", "--traces", ad, "--out", b]));

    // Mixing images names the offending file.
    let stray = other.join("browse-1.vmtrace");
    let out = train(&["fit", "--traces", ad, stray.to_str().unwrap(), "--out", b]);
    fails_with(&out, "browse-1.vmtrace: trace of another image");

    // A bundle used with traces of another image.
    let out = train(&["eval", "--bundle", b, "--traces", other.to_str().unwrap()]);
    fails_with(&out, "trace of another image");

    // A trace given as a bundle: wrong magic.
    let out = train(&["show", a.join("browse-1.vmtrace").to_str().unwrap()]);
    fails_with(&out, "not a vmt profile bundle file");

    // Corruption.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let corrupt = dir.path().join("corrupt.vmtp");
    std::fs::write(&corrupt, &bytes).unwrap();
    fails_with(
        &train(&["show", corrupt.to_str().unwrap()]),
        "corrupt profile bundle",
    );

    // Missing files and bad units.
    fails_with(&train(&["show", "/nonexistent.vmtp"]), "nonexistent.vmtp");
    let out = train(&["eval", "--bundle", b, "--traces", ad, "--bandwidth", "fast"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bandwidth"));
    let out = train(&["fit", "--traces", ad, "--out", b, "--block-size", "1000"]);
    fails_with(&out, "block size 1000 is not a power of two");
    let out = train(&["fit", "--traces", ad, "--out", b, "--profiles", "500"]);
    fails_with(&out, "500 profiles asked for");
    // Piece sizes `vmt-run seed` would not make (issue 13): not a power of two, too small, too
    // large; with and without a block table.
    for piece in ["100000", "8KiB", "32MiB"] {
        let out = train(&["eval", "--bundle", b, "--traces", ad, "--piece-size", piece]);
        fails_with(
            &out,
            "is not a power of two from 16 KiB to 16 MiB (what `vmt-run seed` makes)",
        );
        let out = train(&[
            "eval",
            "--bundle",
            b,
            "--traces",
            ad,
            "--piece-size",
            piece,
            "--block-table",
        ]);
        fails_with(&out, "(what `vmt-run seed` makes)");
    }
}

#[test]
fn help_explains_every_option() {
    let out = ok(&train(&["eval", "--help"]));
    for opt in [
        "--bundle",
        "--traces",
        "--bandwidth",
        "--piece-size",
        "--think",
        "--cv",
        "--json",
    ] {
        assert!(out.contains(opt), "{opt} missing:\n{out}");
    }
    let out = ok(&train(&["fit", "--help"]));
    for opt in [
        "--traces",
        "--out",
        "--block-size",
        "--profiles",
        "--support",
    ] {
        assert!(out.contains(opt), "{opt} missing:\n{out}");
    }
}
