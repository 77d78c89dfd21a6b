//! Whether the process behind a parked read still waits for it.
//!
//! fuser 0.18 answers the kernel's `FUSE_INTERRUPT` with `ENOSYS`, so the kernel stops
//! sending interrupts and a request already handed to us is waited for uninterruptibly: a
//! process killed while its read is parked (an `O_DIRECT` reader such as qemu with
//! `cache=none`) stays in D state, holding the mount busy, until the read is answered. So the
//! parked table is checked now and then for reads whose thread is gone or has `SIGKILL`
//! pending (`/proc/TID/status`), and those are answered at once.

use std::io;

/// The `SIGKILL` bit of a `/proc` signal mask.
const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);

/// Whether thread `tid` is gone or was killed (its pending signals hold `SIGKILL`).
pub(crate) fn killed_or_gone(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => sigkill_pending(&status),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// Whether a `/proc/TID/status` text shows `SIGKILL` pending, for the thread or its process.
fn sigkill_pending(status: &str) -> bool {
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .any(|mask| mask & SIGKILL_BIT != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_sigkill_is_seen_in_either_mask() {
        let quiet = "Name:\tdd\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n";
        let killed = "Name:\tdd\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n";
        let group = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000004100\n";
        let term = "SigPnd:\t0000000000004000\n";
        assert!(!sigkill_pending(quiet));
        assert!(sigkill_pending(killed));
        assert!(sigkill_pending(group));
        assert!(!sigkill_pending(term), "SIGTERM alone is not fatal here");
        assert!(!killed_or_gone(std::process::id()), "we are alive");
        assert!(killed_or_gone(u32::MAX - 1), "no such thread");
    }

    /// A killed and reaped child is gone.
    #[test]
    fn a_reaped_child_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!killed_or_gone(pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(killed_or_gone(pid));
    }
}
