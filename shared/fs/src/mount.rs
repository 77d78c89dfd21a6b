//! Mounting the filesystem: checks on the mountpoint, the mount options and who may use the
//! mount ([`Access`]), and the live mount ([`Mounted`]) with the unmount that says how it went
//! ([`Unmount`]): clean when nothing holds the image, else a lazy detach, never a mount left
//! behind in the namespace.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// Who may use a mount besides the user who mounted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// The user who mounted, and root: any other user gets `EACCES`, as on any FUSE mount
    /// without `allow_other`.
    #[default]
    Owner,
    /// Every user, as the files' modes allow (the kernel checks them): the image is `0644`, so
    /// others may read it but not write it, and the control file (`0200`) is the owner's.
    Everyone,
}

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountParams {
    /// The source `/proc/mounts` shows (`vmt-run`, `vmt-record`).
    pub fs_name: String,
    /// FUSE worker threads (at least one is used).
    pub threads: usize,
    /// Who besides the mounter may use the mount.
    pub access: Access,
}

/// How long [`Mounted::unmount`] waits for the FUSE threads after the mount left the
/// namespace. They end when the kernel drops the filesystem, which it does at once unless
/// something still holds it: the holders of a lazy detach, or a copy of the mount in another
/// mount namespace (`unshare -m`, `ip netns exec`). Past this the threads are left behind, and
/// the filesystem ends when the process exits; shutdown must not wait on another namespace.
pub const UNMOUNT_WAIT: Duration = Duration::from_secs(2);

/// The mount options and who may send requests. The kernel checks permissions against the
/// attributes (`default_permissions`): the filesystem itself checks nothing. With
/// `auto_unmount`, fusermount3 unmounts when the process dies, even by `kill -9`; it needs
/// `allow_other` at the kernel, so owner-only access is then enforced by fuser
/// (`RootAndOwner`) rather than by the kernel.
fn mount_config(params: &MountParams, auto_unmount: bool) -> fuser::Config {
    let mut options = vec![
        MountOption::FSName(params.fs_name.clone()),
        MountOption::Subtype("vmt".to_string()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if auto_unmount {
        options.push(MountOption::AutoUnmount);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = match (params.access, auto_unmount) {
        (Access::Everyone, _) => fuser::SessionACL::All,
        (Access::Owner, true) => fuser::SessionACL::RootAndOwner,
        (Access::Owner, false) => fuser::SessionACL::Owner,
    };
    config.n_threads = Some(params.threads.max(1));
    config.clone_fd = params.threads > 1;
    config
}

/// How a mount went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmount {
    /// Nothing held it: unmounted.
    Clean,
    /// Something held the image open (a loop device, a VM, a reader): the mount was detached
    /// from the namespace at once, and the kernel drops it when the last holder lets go; their
    /// reads fail from now on.
    Lazy,
    /// It was gone already (unmounted by someone else).
    Gone,
}

impl Unmount {
    /// `clean`, `lazy` or `gone`, as the report says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unmount::Clean => "clean",
            Unmount::Lazy => "lazy",
            Unmount::Gone => "gone",
        }
    }
}

/// What [`Mounted::unmount`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmounted {
    /// How the mount left the namespace.
    pub how: Unmount,
    /// The FUSE threads had not ended within the wait (see [`UNMOUNT_WAIT`]): the filesystem
    /// is still in use elsewhere and ends with the process.
    pub left_behind: bool,
}

/// A live mount; [`Mounted::unmount`] (or drop) takes it down.
pub struct Mounted {
    unmounter: fuser::SessionUnmounter,
    session: Option<JoinHandle<io::Result<()>>>,
    mountpoint: PathBuf,
    /// The mountpoint as the kernel lists it, for the unmount calls.
    canonical: PathBuf,
}

impl Mounted {
    /// The mount's directory.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts: cleanly if nothing holds the mount, else detaches it lazily; then waits at
    /// most `wait` for the FUSE threads to end (which syncs the overlay). Call
    /// [`ImageFs::close`](crate::ImageFs::close) first, so that no parked read holds it.
    pub fn unmount(mut self, wait: Duration) -> io::Result<Unmounted> {
        let how = self.detach()?;
        let left_behind = !self.join(wait);
        Ok(Unmounted { how, left_behind })
    }

    fn detach(&mut self) -> io::Result<Unmount> {
        let how = if !mountinfo_lists(&self.canonical) {
            Unmount::Gone
        } else {
            let path = CString::new(self.canonical.as_os_str().as_bytes())?;
            // SAFETY: umount2 reads a NUL-terminated path that outlives the call.
            let clean = unsafe { libc::umount2(path.as_ptr(), 0) } == 0;
            match io::Error::last_os_error().raw_os_error() {
                _ if clean => Unmount::Clean,
                Some(libc::EBUSY) => {
                    // SAFETY: as above.
                    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Unmount::Lazy
                }
                Some(libc::EINVAL) => Unmount::Gone,
                // Not root: fusermount3 may unmount what we mounted.
                Some(libc::EPERM) => self.unmount_unprivileged()?,
                _ => return Err(io::Error::last_os_error()),
            }
        };
        // Releases fuser's handle of the mount (and its auto-unmount helper, which finds
        // nothing left to unmount).
        if let Err(e) = self.unmounter.unmount() {
            tracing::debug!("releasing {}: {e}", self.mountpoint.display());
        }
        Ok(how)
    }

    /// `fusermount3 -u`, and when busy the lazy `-u -z` (which fuser runs).
    fn unmount_unprivileged(&mut self) -> io::Result<Unmount> {
        let clean = std::process::Command::new("fusermount3")
            .args(["-u", "-q", "--"])
            .arg(&self.canonical)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if clean {
            return Ok(Unmount::Clean);
        }
        self.unmounter.unmount()?;
        if mountinfo_lists(&self.canonical) {
            return Err(io::Error::other("fusermount3 could not unmount"));
        }
        Ok(Unmount::Lazy)
    }

    /// Waits at most `wait` for the FUSE threads; whether they ended.
    fn join(&mut self, wait: Duration) -> bool {
        let Some(session) = self.session.take() else {
            return true;
        };
        let deadline = Instant::now() + wait;
        while !session.is_finished() {
            if Instant::now() >= deadline {
                tracing::debug!(
                    "FUSE threads of {} still running after {wait:?}: left behind",
                    self.mountpoint.display()
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match session.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("FUSE session of {}: {e}", self.mountpoint.display()),
            Err(_) => tracing::warn!("FUSE session of {} panicked", self.mountpoint.display()),
        }
        true
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.session.is_none() {
            return;
        }
        if let Err(e) = self.detach() {
            tracing::warn!("unmounting {}: {e}", self.mountpoint.display());
        }
        self.join(UNMOUNT_WAIT);
    }
}

/// Mounts `fs` at `mountpoint`. The caller keeps its own `Arc` to release and close the
/// filesystem.
pub fn mount<S: PristineSource, O: AccessObserver>(
    fs: Arc<FuseImageFs<S, O>>,
    mountpoint: &Path,
    params: &MountParams,
) -> Result<Mounted, MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoFuse);
    }
    check_mountpoint(mountpoint)?;
    // Resolved before mounting: resolving the live mount would ask the filesystem, whose
    // threads are not running yet.
    let canonical = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_owned());
    let mount_err = |error| MountError::Mount {
        path: mountpoint.to_owned(),
        error,
    };
    // With auto-unmount if fusermount3 can give it (root, or `user_allow_other`), else
    // without: a killed process then leaves a stale mount that the next start reports.
    let mut session =
        match fuser::Session::new(FuseFs(fs.clone()), mountpoint, &mount_config(params, true)) {
            Ok(session) => session,
            Err(e) => {
                tracing::debug!("mounting with auto_unmount: {e}; mounting without");
                fuser::Session::new(FuseFs(fs), mountpoint, &mount_config(params, false))
                    .map_err(mount_err)?
            }
        };
    let unmounter = session.unmount_callable();
    let session = std::thread::Builder::new()
        .name("vmt-fuse".into())
        .spawn(move || session.run())
        .map_err(mount_err)?;
    Ok(Mounted {
        unmounter,
        session: Some(session),
        mountpoint: mountpoint.to_owned(),
        canonical,
    })
}

/// Whether `path` is currently a mountpoint (per `/proc/self/mountinfo`), alive or dead.
pub fn is_mounted(path: &Path) -> bool {
    // A dead FUSE mount cannot be resolved itself (ENOTCONN): resolve its parent.
    let canon = path.canonicalize().or_else(|e| {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(e);
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        parent.canonicalize().map(|p| p.join(name))
    });
    canon.is_ok_and(|canon| mountinfo_lists(&canon))
}

/// Whether `/proc/self/mountinfo` lists the resolved path `canon` as a mountpoint; unlike
/// [`is_mounted`], asks nothing of the filesystem mounted there.
fn mountinfo_lists(canon: &Path) -> bool {
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
