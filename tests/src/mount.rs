//! A `vmt-run mount` as most mount tests start it ([`MountProc`]), its `--status` endpoint
//! ([`http_status`]), and a seeder held still with SIGSTOP ([`Paused`]), so that a read can be
//! caught while it waits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::process::PROCESS_LIMIT;
use crate::{bin, free_port, wait_until, Proc};

/// How long a mount may take to show its image.
pub const MOUNT_LIMIT: Duration = Duration::from_secs(120);

/// A `vmt-run mount` in a test directory: its process (stopped and unmounted on drop), the
/// image as served, its status address, and where its report and stderr go.
pub struct MountProc {
    /// The process; its mountpoint is detached on drop.
    pub proc: Proc,
    /// `DIR/NAME-mnt`.
    pub mountpoint: PathBuf,
    /// The image in the mount.
    pub served: PathBuf,
    /// `127.0.0.1:PORT` of `--status`.
    pub status_addr: String,
    /// `DIR/NAME-report.json`, written when vmt-run exits.
    pub report: PathBuf,
    stderr: PathBuf,
}

impl MountProc {
    /// Runs `vmt-run mount --torrent TORRENT --mountpoint DIR/NAME-mnt --data DIR/NAME-data
    /// --status 127.0.0.1:PORT --report DIR/NAME-report.json EXTRA…` with stderr in
    /// `DIR/NAME-stderr.txt`, and returns once the image shows in the mount; fails the test
    /// with vmt-run's stderr if it exits first.
    pub fn start(dir: &Path, name: &str, torrent: &Path, extra: &[&str]) -> MountProc {
        let mountpoint = dir.join(format!("{name}-mnt"));
        std::fs::create_dir_all(&mountpoint).unwrap();
        let status_addr = format!("127.0.0.1:{}", free_port());
        let report = dir.join(format!("{name}-report.json"));
        let stderr = dir.join(format!("{name}-stderr.txt"));
        let mut proc = Proc::spawn(
            Command::new(bin("vmt-run"))
                .args(["mount", "--torrent"])
                .arg(torrent)
                .arg("--mountpoint")
                .arg(&mountpoint)
                .arg("--data")
                .arg(dir.join(format!("{name}-data")))
                .args(["--status", &status_addr, "--report"])
                .arg(&report)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).unwrap()),
        );
        proc.mountpoint = Some(mountpoint.clone());
        let mut served = None;
        wait_until("the mount", MOUNT_LIMIT, || {
            if let Some(exit) = proc.child.try_wait().unwrap() {
                panic!(
                    "vmt-run mount exited: {exit:?}\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            // The mount serves one file, the image; the directory is empty until it is up.
            served = std::fs::read_dir(&mountpoint)
                .ok()
                .and_then(|mut entries| entries.next())
                .and_then(Result::ok)
                .map(|e| e.path());
            served.is_some()
        });
        MountProc {
            proc,
            mountpoint,
            served: served.unwrap(),
            status_addr,
            report,
            stderr,
        }
    }

    /// What vmt-run has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The `--status` endpoint's JSON now.
    pub fn status(&self) -> serde_json::Value {
        http_status(&self.status_addr)
    }

    /// The report vmt-run wrote when it exited.
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&self.report).expect("the report is written"))
            .unwrap()
    }

    /// Waits until `n` reads are parked (the status's `parked_now`).
    pub fn wait_parked(&self, n: u64) {
        wait_until("a parked read", MOUNT_LIMIT, || {
            self.status()["parked_now"].as_u64() >= Some(n)
        });
    }

    /// Sends SIGTERM and waits at most `limit` for the exit; kills it and fails the test,
    /// with its stderr, after that.
    pub fn sigterm_within(&mut self, limit: Duration) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.proc.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = self.proc.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > limit {
                self.proc.sigkill();
                panic!(
                    "vmt-run still running {limit:?} after SIGTERM\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then checks the mount went away cleanly (exit 0, nothing left mounted), and
    /// returns its report.
    pub fn stop(mut self) -> serde_json::Value {
        let status = self.sigterm_within(PROCESS_LIMIT);
        assert!(
            status.success(),
            "vmt-run mount exit: {status:?}\n{}",
            self.stderr()
        );
        assert!(
            !vmt_fs::is_mounted(&self.mountpoint),
            "no stale mount after SIGTERM"
        );
        self.report()
    }
}

/// The JSON of a `--status` endpoint at `addr`.
pub fn http_status(addr: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).expect("an HTTP body");
    serde_json::from_str(body).unwrap()
}

/// A child stopped with SIGSTOP, continued on drop, so that stopping it later (SIGTERM) works
/// even when the test fails while it is held.
pub struct Paused(u32);

impl Paused {
    /// Stops process `pid` (a child of the test).
    pub fn stop(pid: u32) -> Paused {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}
