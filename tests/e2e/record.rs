//! vmt-record on real ext4 images made with `mkfs.ext4 -d`, served through a real FUSE mount and
//! read through a real loop mount.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use vmt_formats::image::BlockGeometry;
use vmt_formats::trace::{Op, Trace, TraceKind};
use vmt_tests::{bin, content, make_ext4_with, run_with_timeout, wait_until};

const LIMIT: Duration = Duration::from_secs(120);

/// An image with `files` (path, size), made by mkfs.ext4 -d.
fn make_image(dir: &Path, files: &[(&str, usize)]) -> PathBuf {
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .enumerate()
        .map(|(i, (rel, len))| (rel.to_string(), content(i as u64 + 1, *len)))
        .collect();
    let image = dir.join("app.img");
    make_ext4_with(dir, &image, &files, 64);
    image
}

/// `vmt-record run --task TASK` of `sh -c SCRIPT` on `image`, traces into `out`.
fn record_task(image: &Path, out: &Path, task: &str, script: &str) -> std::process::Output {
    run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["run", "--task", task, "--image"])
            .arg(image)
            .arg("--out")
            .arg(out)
            .args(["--", "sh", "-c", script]),
        LIMIT,
    )
}

/// Physical 4 KiB blocks of `path` inside `image`, per debugfs.
fn debugfs_blocks(image: &Path, path: &str) -> BTreeSet<u64> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("blocks /{path}"))
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) is installed");
    assert!(out.status.success(), "debugfs failed: {out:?}");
    let blocks: BTreeSet<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|w| w.parse().expect("debugfs prints block numbers"))
        .collect();
    assert!(!blocks.is_empty(), "debugfs found no blocks for {path}");
    blocks
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

fn blocks_of(trace: &Trace, op: Op, task: Option<&str>) -> BTreeSet<u64> {
    let g = BlockGeometry::new(trace.image.size, 4096).unwrap();
    trace
        .records
        .iter()
        .filter(|r| r.op == op)
        .filter(|r| task.is_none_or(|t| trace.tasks[r.task as usize] == t))
        .flat_map(|r| g.blocks_of(r.offset, r.len as u64))
        .map(|b| b.get() as u64)
        .collect()
}

fn only_trace_in(dir: &Path) -> PathBuf {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vmtrace"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one trace in {}: {found:?}",
        dir.display()
    );
    found.pop().unwrap()
}

const FILES: &[(&str, usize)] = &[
    ("etc/config", 3000),
    ("bin/tool", 300_000),
    ("lib/big.so", 1_500_000),
    ("data/unread1", 700_000),
    ("data/unread2", 2_000_000),
];

/// A test's directory: the [`FILES`] image, where traces go, and an empty loop mountpoint.
struct Workspace {
    dir: tempfile::TempDir,
    image: PathBuf,
    out: PathBuf,
    mnt: PathBuf,
}

fn workspace() -> Workspace {
    let dir = tempfile::tempdir().unwrap();
    let image = make_image(dir.path(), FILES);
    let mnt = dir.path().join("loop");
    std::fs::create_dir(&mnt).unwrap();
    Workspace {
        out: dir.path().join("traces"),
        image,
        mnt,
        dir,
    }
}

#[test]
fn trace_covers_exactly_the_blocks_of_the_files_read() {
    let ws = workspace();
    let (image, out, mnt) = (&ws.image, &ws.out, &ws.mnt);
    let before = sha256(image);
    let script = format!(
        "set -e; mount -t ext4 -o loop,ro,noload \"$VMT_IMAGE\" {m}; \
         cat {m}/etc/config {m}/bin/tool {m}/lib/big.so > /dev/null; umount {m}",
        m = mnt.display()
    );
    let res = record_task(image, out, "readfiles", &script);
    assert!(res.status.success(), "vmt-record run failed: {res:?}");
    let trace_path = out.join("readfiles-1.vmtrace");
    let trace = Trace::load(&trace_path).unwrap();
    assert_eq!(trace.kind, TraceKind::Task);
    assert_eq!(trace.tasks, vec!["readfiles"]);
    assert_eq!(trace.image.size, std::fs::metadata(image).unwrap().len());

    let read = blocks_of(&trace, Op::Read, None);
    let wanted: BTreeSet<u64> = FILES[..3]
        .iter()
        .flat_map(|(p, _)| debugfs_blocks(image, p))
        .collect();
    let unread: BTreeSet<u64> = FILES[3..]
        .iter()
        .flat_map(|(p, _)| debugfs_blocks(image, p))
        .collect();
    let missing: Vec<_> = wanted.difference(&read).collect();
    assert!(
        missing.is_empty(),
        "blocks of read files missing from the trace: {missing:?}"
    );
    let leaked: Vec<_> = unread.intersection(&read).collect();
    assert!(
        leaked.is_empty(),
        "blocks of unread files in the trace: {leaked:?}"
    );
    // Everything else is filesystem metadata (superblock, group descriptors, bitmaps, inode
    // table, directories): a small share next to the data read.
    let metadata = read.len() - wanted.len();
    assert!(metadata > 0, "mounting reads the superblock at least");
    assert!(
        metadata < wanted.len(),
        "{metadata} metadata blocks for {} data blocks",
        wanted.len()
    );
    assert_eq!(sha256(image), before, "the image must never be modified");

    // A second run counts up and does not overwrite the first.
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["run", "--task", "readfiles", "--image"])
            .arg(image)
            .arg("--out")
            .arg(out)
            .args(["--", "true"]),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    assert!(out.join("readfiles-2.vmtrace").exists());
    assert_eq!(Trace::load(&trace_path).unwrap(), trace);
}

#[test]
fn writes_are_recorded_but_never_reach_the_image() {
    let ws = workspace();
    let (image, out, mnt) = (&ws.image, &ws.out, &ws.mnt);
    let before = sha256(image);
    // Write a new file and overwrite an old one, read them back through a fresh mount (so from
    // the overlay, not the page cache), then check the content inside the task.
    let script = format!(
        "set -e; mount -t ext4 -o loop \"$VMT_IMAGE\" {m}; \
         echo written-by-task > {m}/etc/new; dd if=/dev/zero of={m}/bin/tool bs=4096 count=8 conv=notrunc status=none; \
         umount {m}; mount -t ext4 -o loop,ro \"$VMT_IMAGE\" {m}; \
         grep -q written-by-task {m}/etc/new; cmp -n 32768 {m}/bin/tool /dev/zero; umount {m}; exit 7",
        m = mnt.display()
    );
    let res = record_task(image, out, "writer", &script);
    assert_eq!(
        res.status.code(),
        Some(7),
        "the task's exit status passes through: {res:?}"
    );
    // The task failed (exit 7), so its trace is set aside from what fit reads (issue 12).
    let trace = Trace::load(&out.join("writer-1.vmtrace.failed")).unwrap();
    let written = blocks_of(&trace, Op::Write, None);
    let tool = debugfs_blocks(image, "bin/tool");
    let first_eight: BTreeSet<u64> = tool.iter().take(8).copied().collect();
    assert!(
        first_eight.is_subset(&written),
        "the overwritten blocks of bin/tool are in the trace's writes"
    );
    assert_eq!(
        sha256(image),
        before,
        "writes went to the overlay, not the image"
    );
}

#[test]
fn session_with_two_marked_tasks() {
    let ws = workspace();
    let (dir, image, out, mnt) = (&ws.dir, &ws.image, &ws.out, &ws.mnt);
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let mut session = Command::new(bin("vmt-record"))
        .args(["session", "--name", "work", "--image"])
        .arg(image)
        .arg("--out")
        .arg(out)
        .arg("--mountpoint")
        .arg(&served)
        .spawn()
        .unwrap();
    let control = served.join(vmt_fs::CONTROL_FILE);
    wait_until("the session mount", LIMIT, || control.exists());
    let record = |cmd: &[&str]| {
        let res = run_with_timeout(
            Command::new(bin("vmt-record"))
                .args(cmd)
                .arg("--mountpoint")
                .arg(&served),
            LIMIT,
        );
        assert!(res.status.success(), "{cmd:?}: {res:?}");
    };
    let served_image = served.join("app.img");
    let read_with_loop = |files: &[&str]| {
        let lm = vmt_appliance::ext4::LoopMount::new(&served_image, mnt).unwrap();
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        lm.read_files(&files).unwrap();
        lm.unmount().unwrap();
    };
    record(&["mark", "alpha"]);
    read_with_loop(&["etc/config", "bin/tool"]);
    record(&["mark", "beta"]);
    read_with_loop(&["data/unread2"]);
    record(&["stop"]);
    let status = {
        let mut waited = None;
        wait_until("the session to end", LIMIT, || {
            waited = session.try_wait().unwrap();
            waited.is_some()
        });
        waited.unwrap()
    };
    assert!(status.success());
    assert!(!vmt_fs::is_mounted(&served), "the session unmounted");

    let trace = Trace::load(&out.join("work-1.vmtrace")).unwrap();
    assert_eq!(trace.kind, TraceKind::Session);
    let labels: Vec<&str> = trace.segments().map(|s| s.task).collect();
    assert_eq!(labels, vec!["alpha", "beta"], "segments follow the marks");
    let alpha = blocks_of(&trace, Op::Read, Some("alpha"));
    let beta = blocks_of(&trace, Op::Read, Some("beta"));
    let tool = debugfs_blocks(image, "bin/tool");
    let unread2 = debugfs_blocks(image, "data/unread2");
    assert!(tool.is_subset(&alpha) && tool.is_disjoint(&beta));
    assert!(unread2.is_subset(&beta) && unread2.is_disjoint(&alpha));
}

#[test]
fn sigterm_unmounts_and_saves_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_image(dir.path(), &FILES[..2]);
    let out = dir.path().join("traces");
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let mut child = Command::new(bin("vmt-record"))
        .args(["run", "--task", "longtask", "--image"])
        .arg(&image)
        .arg("--out")
        .arg(&out)
        .arg("--mountpoint")
        .arg(&served)
        .args([
            "--",
            "sh",
            "-c",
            "head -c 65536 \"$VMT_IMAGE\" > /dev/null; sleep 60",
        ])
        .spawn()
        .unwrap();
    let served_image = served.join("app.img");
    wait_until("the task's first read", LIMIT, || {
        Trace::load(&out.join("longtask-1.vmtrace")).is_ok_and(|t| !t.records.is_empty())
    });
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut status = None;
    wait_until("vmt-record to exit after SIGTERM", LIMIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!vmt_fs::is_mounted(&served), "no stale mount after SIGTERM");
    assert!(!served_image.exists());
    let trace = Trace::load(&out.join("longtask-1.vmtrace")).unwrap();
    let read: u64 = trace.records.iter().map(|r| r.len as u64).sum();
    assert!(
        read >= 65536,
        "the reads made before the signal were saved ({read} bytes)"
    );
}

#[test]
fn csv_export_import_round_trip_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_image(dir.path(), &FILES[..2]);
    let out = dir.path().join("traces");
    let res = record_task(&image, &out, "t", "head -c 300000 \"$VMT_IMAGE\" > /dev/null; echo hi | dd of=\"$VMT_IMAGE\" bs=1 seek=5000 conv=notrunc status=none");
    assert!(res.status.success(), "{res:?}");
    let original = out.join("t-1.vmtrace");
    let csv = dir.path().join("t.csv");
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .arg("export")
            .arg(&original)
            .arg("--out")
            .arg(&csv),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.contains("# image_bytes="), "{text}");
    assert!(
        text.lines().any(|l| l.contains(",W,")),
        "the write is exported"
    );
    let back = dir.path().join("back.vmtrace");
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .arg("import")
            .arg(&csv)
            .arg("--out")
            .arg(&back),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    assert_eq!(
        std::fs::read(&original).unwrap(),
        std::fs::read(&back).unwrap(),
        "import(export(trace)) is byte-identical"
    );
    // With the image at hand, import checks the identity; another image is refused.
    let other = dir.path().join("other.img");
    std::fs::write(
        &other,
        vec![0u8; std::fs::metadata(&image).unwrap().len() as usize],
    )
    .unwrap();
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .arg("import")
            .arg(&csv)
            .arg("--out")
            .arg(dir.path().join("x.vmtrace"))
            .arg("--image")
            .arg(&other),
        LIMIT,
    );
    assert!(!res.status.success());
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("another image"),
        "{res:?}"
    );
}

#[test]
fn broken_trace_files_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let trace = Trace {
        image: vmt_formats::image::ImageId::size_only(1 << 20),
        kind: TraceKind::Task,
        label: "t".into(),
        run: 1,
        start_unix_us: 0,
        recorder: "test".into(),
        tasks: vec!["t".into()],
        records: (0..100)
            .map(|i| vmt_formats::trace::Record {
                t_us: i,
                op: Op::Read,
                offset: i * 4096,
                len: 4096,
                task: 0,
            })
            .collect(),
    };
    let good = dir.path().join("good.vmtrace");
    trace.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("header-only", bytes[..10].to_vec(), "truncated"),
        ("magic", [b"NOTATRCE", &bytes[8..]].concat(), "wrong magic"),
        ("empty", Vec::new(), "truncated"),
    ];
    let mut corrupt = bytes.clone();
    let mid = corrupt.len() - 20;
    corrupt[mid] ^= 0xff;
    cases.push(("corrupt", corrupt, "corrupt"));
    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    cases.push(("newer", newer, "newer"));
    for (name, content, expect) in cases {
        let path = dir.path().join(format!("{name}.vmtrace"));
        std::fs::write(&path, content).unwrap();
        let res = run_with_timeout(
            Command::new(bin("vmt-record")).arg("show").arg(&path),
            LIMIT,
        );
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{name}: {res:?}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{name}: one line: {stderr}"
        );
        assert!(stderr.contains(expect), "{name}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{name} names the file: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    let res = run_with_timeout(
        Command::new(bin("vmt-record")).arg("show").arg(&good),
        LIMIT,
    );
    assert!(res.status.success());
    assert!(String::from_utf8_lossy(&res.stdout).contains("good.vmtrace"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_image(dir.path(), &FILES[..1]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), "--task".into(), "a/b".into()],
            "invalid task name",
        ),
        (
            vec![
                "run".into(),
                "--task".into(),
                "ok".into(),
                "--mountpoint".into(),
                "/nonexistent-dir".into(),
            ],
            "not an existing directory",
        ),
        (
            vec![
                "run".into(),
                "--task".into(),
                "ok".into(),
                "--mountpoint".into(),
                dir.path().display().to_string(),
            ],
            "not empty",
        ),
    ];
    for (args, expect) in cases {
        let res = run_with_timeout(
            Command::new(bin("vmt-record"))
                .args(&args[..1])
                .arg("--image")
                .arg(&image)
                .arg("--out")
                .arg(dir.path().join("out"))
                .args(&args[1..])
                .args(["--", "true"]),
            LIMIT,
        );
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{args:?}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["run", "--task", "x", "--image", "/nonexistent.img", "--out"])
            .arg(dir.path().join("out"))
            .args(["--", "true"]),
        LIMIT,
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("/nonexistent.img"));
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["mark", "--mountpoint"])
            .arg(dir.path())
            .arg("t"),
        LIMIT,
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("no vmt-record session"));
}

#[test]
fn replay_reads_the_trace_against_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_image(dir.path(), &FILES[..3]);
    let out = dir.path().join("traces");
    let mnt = dir.path().join("loop");
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "set -e; mount -t ext4 -o loop,ro,noload \"$VMT_IMAGE\" {m}; cat {m}/bin/tool > /dev/null; \
         sleep 0.2; cat {m}/lib/big.so > /dev/null; umount {m}",
        m = mnt.display()
    );
    let res = record_task(&image, &out, "t", &script);
    assert!(res.status.success(), "{res:?}");
    let trace_path = out.join("t-1.vmtrace");
    let trace = Trace::load(&trace_path).unwrap();
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["replay", "--json", "--cold", "--trace"])
            .arg(&trace_path)
            .arg("--file")
            .arg(&image),
        LIMIT,
    );
    assert!(res.status.success(), "{res:?}");
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    let reads = trace.records.iter().filter(|r| r.op == Op::Read).count() as u64;
    assert_eq!(report["reads"].as_u64(), Some(reads));
    let completion = report["completion_s"].as_f64().unwrap();
    let own = report["trace_s"].as_f64().unwrap();
    assert!(own >= 0.2, "the task's sleep is in the trace ({own} s)");
    assert!(
        completion >= own,
        "replay keeps the recorded gaps: {completion} < {own}"
    );
    // Too small a file is refused.
    let small = dir.path().join("small");
    std::fs::write(&small, b"x").unwrap();
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["replay", "--trace"])
            .arg(&trace_path)
            .arg("--file")
            .arg(&small),
        LIMIT,
    );
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("smaller than"));
}

// ---------------------------------------------------------------------------------------------
// Issue 12, item 10 (vmt-record's share): import refuses what no other command can use, and a
// failed task's trace is kept out of the folder `vmt-train fit` reads.
// ---------------------------------------------------------------------------------------------

/// `vmt-record import` of `csv` (written to a file) with `extra` flags.
fn import_csv(dir: &Path, csv: &str, extra: &[&str]) -> (std::process::Output, PathBuf) {
    let input = dir.join("in.csv");
    std::fs::write(&input, csv).unwrap();
    let out = dir.join("imported.vmtrace");
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .arg("import")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(extra),
        LIMIT,
    );
    (res, out)
}

/// Asserts a clean refusal: exit 1, one line naming `want`, no trace written.
fn refused(res: &std::process::Output, out: &Path, want: &str) {
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{res:?}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(want), "expected {want:?} in: {stderr}");
    assert!(!out.exists(), "no trace may be written: {}", out.display());
}

#[test]
fn r12_10_import_refuses_an_image_too_large_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "# image_bytes=18446744073709551615\nt_us,op,offset,len\n0,R,0,4096\n";
    let (res, out) = import_csv(dir.path(), csv, &[]);
    refused(&res, &out, "too large");
    // Given on the command line, it is refused before anything is read.
    let (res, out) = import_csv(
        dir.path(),
        "0,R,0,4096\n",
        &["--image-bytes", "18446744073709551615"],
    );
    refused(&res, &out, "too large");
}

#[test]
fn r12_10_import_refuses_input_without_accesses() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("empty.vmtrace");
    let res = run_with_timeout(
        Command::new(bin("vmt-record"))
            .args(["import", "/dev/null", "--image-bytes", "1MiB", "--out"])
            .arg(&out),
        LIMIT,
    );
    refused(&res, &out, "no accesses");
    // A CSV with a header but no rows likewise.
    let (res, out) = import_csv(
        dir.path(),
        "# image_bytes=1048576\nt_us,op,offset,len\n",
        &[],
    );
    refused(&res, &out, "no accesses");
}

#[test]
fn r12_10_a_failed_task_is_set_aside_from_fit() {
    let dir = tempfile::tempdir().unwrap();
    let image = make_image(dir.path(), &FILES[..1]);
    let out = dir.path().join("traces");
    let res = record_task(
        &image,
        &out,
        "t",
        "head -c 8192 \"$VMT_IMAGE\" > /dev/null; exit 3",
    );
    assert_eq!(
        res.status.code(),
        Some(3),
        "the task's failure is the exit code: {res:?}"
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("t-1.vmtrace.failed"),
        "a warning names where the trace went: {stderr}"
    );
    let in_fit_folder: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vmtrace" || e == "csv"))
        .collect();
    assert!(
        in_fit_folder.is_empty(),
        "no trace of the failed task where fit reads: {in_fit_folder:?}"
    );
    let aside = Trace::load(&out.join("t-1.vmtrace.failed")).unwrap();
    assert!(!aside.records.is_empty(), "what it read is kept to look at");
    // The next run does not reuse the failed run's number.
    let res = record_task(&image, &out, "t", "true");
    assert!(res.status.success(), "{res:?}");
    assert_eq!(only_trace_in(&out), out.join("t-2.vmtrace"));
    // fit says what it left out.
    let res = run_with_timeout(
        Command::new(bin("vmt-train"))
            .args(["fit", "--traces"])
            .arg(&out)
            .arg("--out")
            .arg(dir.path().join("b.vmtp")),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("t-1.vmtrace.failed"),
        "fit names the trace it skips: {stderr}"
    );
}
