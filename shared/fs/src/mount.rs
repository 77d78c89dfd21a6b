//! Mounting the filesystem: checks on the mountpoint, the mount options, and the live mount.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::MountOption;

use crate::fuse::{FuseFs, FuseImageFs};
use crate::image_fs::AccessObserver;
use crate::source::PristineSource;

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint is not an existing directory.
    #[error("mountpoint {} is not an existing directory", .0.display())]
    NotADirectory(PathBuf),
    /// Something is mounted there already.
    #[error("mountpoint {} is busy: something is already mounted there", .0.display())]
    Busy(PathBuf),
    /// A dead FUSE mount is still attached there.
    #[error("mountpoint {} is a stale mount whose server died: run `umount -l {}`", .0.display(), .0.display())]
    Stale(PathBuf),
    /// The directory has entries; mounting would hide them.
    #[error("mountpoint {} is not empty", .0.display())]
    NotEmpty(PathBuf),
    /// No FUSE.
    #[error(
        "FUSE is not available: /dev/fuse is missing (install fuse3, or load the fuse module)"
    )]
    NoFuse,
    /// The kernel refused.
    #[error("mounting at {}: {error}", path.display())]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
}

/// Checks that `path` can take a mount: an empty directory, not itself a mountpoint.
pub fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => m,
        // A FUSE mount whose server died answers ENOTCONN.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(MountError::Stale(path.to_owned()))
        }
        _ => return Err(MountError::NotADirectory(path.to_owned())),
    };
    let parent = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned));
    if let Some(parent) = parent {
        if let Ok(pm) = std::fs::metadata(parent) {
            if pm.dev() != meta.dev() {
                return Err(MountError::Busy(path.to_owned()));
            }
        }
    }
    let has_entries = std::fs::read_dir(path)
        .map_err(|source| MountError::Mount {
            path: path.to_owned(),
            error: source,
        })?
        .next()
        .is_some();
    if has_entries {
        return Err(MountError::NotEmpty(path.to_owned()));
    }
    Ok(())
}

/// The mount options, one per line, so a policy change (`DefaultPermissions`, `AllowOther`)
/// is one line here.
fn mount_options(fs_name: &str) -> Vec<MountOption> {
    vec![
        MountOption::FSName(fs_name.to_string()),
        MountOption::Subtype("vmt".to_string()),
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ]
}

/// A live mount; [`Mounted::unmount`] (or drop) takes it down.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl Mounted {
    /// The mount's directory.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts (lazily if busy: the mount disappears from the namespace at once) and waits
    /// for the FUSE threads to finish, which syncs the overlay.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if let Err(e) = session.umount_and_join() {
                tracing::warn!("unmounting {}: {e}", self.mountpoint.display());
            }
        }
    }
}

/// Mounts `fs` at `mountpoint` with `threads` FUSE worker threads. The caller keeps its own
/// `Arc` to release and close the filesystem.
pub fn mount<S: PristineSource, O: AccessObserver>(
    fs: Arc<FuseImageFs<S, O>>,
    mountpoint: &Path,
    fs_name: &str,
    threads: usize,
) -> Result<Mounted, MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoFuse);
    }
    check_mountpoint(mountpoint)?;
    let mut config = fuser::Config::default();
    config.mount_options = mount_options(fs_name);
    // Let loop devices, chroots and VMMs running as other users open the image.
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config.clone_fd = threads > 1;
    let session = fuser::Session::new(FuseFs(fs), mountpoint, &config)
        .and_then(fuser::Session::spawn)
        .map_err(|source| MountError::Mount {
            path: mountpoint.to_owned(),
            error: source,
        })?;
    Ok(Mounted {
        session: Some(session),
        mountpoint: mountpoint.to_owned(),
    })
}

/// Whether `path` is currently a mountpoint (per `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == canon.as_os_str().as_bytes())
    })
}

fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let oct = &field[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(oct).unwrap_or("x"), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}
