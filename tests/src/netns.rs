//! A private network namespace for a test: its loopback up and carrying extra addresses, so
//! peers that refuse 127.0.0.0/8 (Transmission, for tracker and PEX peers) talk on addresses
//! that exist nowhere else. Deleted on drop; processes in it must be stopped first.

use std::process::Command;

/// A network namespace `/run/netns/NAME`, deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    /// Creates namespace `NAME-PID` (deleting a stale one of that name first) with `lo` up
    /// and each of `addrs` on it as a /32; `None` if that is not possible here (not root, no
    /// `ip`), so the caller can skip loudly. The test process's pid is in the name so two
    /// checkouts running the same test at once never delete each other's namespace.
    pub fn create(name: &str, addrs: &[&str]) -> Option<Netns> {
        let name = &format!("{name}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        if !ip(&["netns", "add", name]) {
            return None;
        }
        let ns = Netns { name: name.into() };
        if !ip(&["-n", name, "link", "set", "lo", "up"]) {
            return None;
        }
        for a in addrs {
            if !ip(&["-n", name, "addr", "add", &format!("{a}/32"), "dev", "lo"]) {
                return None;
            }
        }
        Some(ns)
    }

    /// `program` to be run inside the namespace (network only, via nsenter).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
    }
}
