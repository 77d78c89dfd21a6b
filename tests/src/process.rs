//! Child processes of a test: stopped on drop so a failing test leaves no daemon or mount
//! behind ([`Proc`]), and the `vmt-run seed` most CLI tests download from ([`CliSeeder`]).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, free_port, wait_until};

/// How long a process may take to start listening or to stop after SIGTERM.
pub const PROCESS_LIMIT: Duration = Duration::from_secs(120);

/// A child process, stopped on drop (SIGTERM, SIGKILL after 10 s) and waited for; a FUSE
/// mount it leaves at `mountpoint` is detached.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its FUSE mount, if it has one.
    pub mountpoint: Option<PathBuf>,
}

impl Proc {
    /// Spawns `cmd` (no mount).
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc {
            child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
            mountpoint: None,
        }
    }

    /// Sends SIGTERM and waits for the exit (failing the test after [`PROCESS_LIMIT`]).
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait on the child") {
                return s;
            }
            assert!(start.elapsed() < PROCESS_LIMIT, "process ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills at once (SIGKILL) and reaps.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let start = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    self.sigkill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(m) = &self.mountpoint {
            if vmt_fs::is_mounted(m) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

/// A `vmt-run seed` on a free loopback port, ready (its torrent written, its port open).
pub struct CliSeeder {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The torrent it wrote.
    pub torrent: PathBuf,
    /// The process.
    pub proc: Proc,
}

impl CliSeeder {
    /// Seeds `image`, writing its torrent to `torrent`, with `extra` flags (e.g.
    /// `--upload-limit 4MiB`).
    pub fn start(image: &Path, torrent: &Path, extra: &[&str]) -> CliSeeder {
        CliSeeder::spawn(image, "--torrent-out", torrent, extra)
    }

    /// Seeds `image` with the existing `torrent` (made by another tool, say).
    pub fn with_torrent(image: &Path, torrent: &Path, extra: &[&str]) -> CliSeeder {
        CliSeeder::spawn(image, "--torrent", torrent, extra)
    }

    fn spawn(image: &Path, torrent_flag: &str, torrent: &Path, extra: &[&str]) -> CliSeeder {
        let addr = format!("127.0.0.1:{}", free_port());
        let proc = Proc::spawn(
            Command::new(bin("vmt-run"))
                .args(["seed", "--listen", &addr, "--image"])
                .arg(image)
                .arg(torrent_flag)
                .arg(torrent)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_until("the seeder to listen", PROCESS_LIMIT, || {
            torrent.exists() && TcpStream::connect(&addr).is_ok()
        });
        CliSeeder {
            addr,
            torrent: torrent.to_owned(),
            proc,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("an address with a port")
    }
}
