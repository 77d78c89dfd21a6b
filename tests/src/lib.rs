//! Helpers for vmt's end-to-end tests: locate (building if needed) the real binaries, run
//! commands with a timeout, and the fixtures most tests start from: a loopback swarm of
//! engines ([`swarm`]) and child processes stopped on drop, such as a `vmt-run seed`
//! ([`process`]) or a `vmt-run mount` ([`mount`]); a small image that boots by itself, for
//! `vmt-run boot` ([`boot_image`]).
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for tests of the binary's own package, so this package
//! builds the workspace binaries itself, once per test process, with the same profile as the
//! running test (as fuser's `fuser-tests` does).

pub mod boot_image;
pub mod mount;
pub mod netns;
pub mod nginx;
pub mod process;
pub mod swarm;
pub mod transmission;

pub use mount::{http_status, MountProc, Paused};
pub use netns::Netns;
pub use nginx::Nginx;
pub use process::{CliSeeder, Proc};
pub use swarm::{dialing, shutdown_all, within, TestImage, MIB, PIECE};
pub use transmission::{Transmission, TransmissionSetup};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_owned()
}

/// Path of the workspace binary `name` (`vmt-record`, `vmt-train`, `vmt-run`), built on first use.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test-exe>: binaries sit in target/<profile>.
        let exe = std::env::current_exe().expect("current test executable");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps")
            .to_owned();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root()).args([
            "build",
            "--bins",
            "-p",
            "vmt-record",
            "-p",
            "vmt-train",
            "-p",
            "vmt-run",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the binaries");
        assert!(status.success(), "building the vmt binaries failed");
        profile_dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs `cmd` to completion, failing the test if it takes longer than `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait on child").is_some() {
            return child.wait_with_output().expect("collect child output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect child output");
            panic!(
                "{cmd:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` every 20 ms until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic incompressible bytes.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    vmt_appliance::content::bytes(seed, len)
}

/// A loopback port nobody uses right now (TCP and UDP), for a daemon a test starts.
///
/// Taken from below the kernel's ephemeral range, so no outgoing connection of a concurrent
/// test can claim it between this call and the daemon's bind (CI once lost nginx to a fixed
/// port in that range); a per-process counter keeps two calls from returning the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // 10,000 ports just under the ephemeral range (or just above 1024 if it starts low).
    let span = 10_000.min(ephemeral_low.saturating_sub(1025)).max(1);
    let low = ephemeral_low.saturating_sub(span).max(1025);
    let offset = std::process::id() % span;
    for _ in 0..span {
        let port = (low + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        let addr = ("127.0.0.1", port);
        if std::net::TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{}", low + span);
}

/// Writes `files` (path relative to the image root, content) under `dir/root` and packs them
/// into `image` with `mkfs.ext4 -d` (`size_mib` MiB).
pub fn make_ext4_with(dir: &Path, image: &Path, files: &[(String, Vec<u8>)], size_mib: u64) {
    let root = dir.join("root");
    for (rel, data) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("files live in directories")).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    vmt_appliance::ext4::make_ext4(&root, image, size_mib).expect("mkfs.ext4 -d");
}
