//! The FUSE filesystem that serves one appliance image as one file.
//!
//! [`ImageFs`] shows a directory with the image under its own name (and, for recording sessions,
//! a control file). It is generic over where pristine bytes come from ([`PristineSource`]: the
//! raw image for the recorder, the swarm for the runtime) and over who watches accesses
//! ([`AccessObserver`]: the trace recorder, the online belief). Writes always go to the
//! copy-on-write [`Overlay`]; reads are pristine bytes patched by the overlay.
//!
//! A source may answer a read later: it owns the `ReplyData` and can park it until the bytes
//! exist, so a missing piece never blocks a FUSE worker. The observer is called on every read
//! and write before it is served, with the exact range the kernel sent.
//!
//! Errors map to errnos in one place ([`errno_of`]); nothing on the serving path panics.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    Request, WriteFlags,
};

use crate::overlay::Overlay;
use vmt_formats::trace::Op;

const ROOT: INodeNo = INodeNo::ROOT;
const IMAGE: INodeNo = INodeNo(2);
const CONTROL: INodeNo = INodeNo(3);

/// Name of the control file of recording sessions (`mark TASK` / `stop` lines are written to it).
pub const CONTROL_FILE: &str = ".vmt-control";

/// The image's size and name never change while mounted, so the kernel may cache them.
const TTL: Duration = Duration::from_secs(60);

/// Where the pristine image bytes come from.
pub trait PristineSource: Send + Sync + 'static {
    /// Answers `reply` with the bytes `[offset, offset + len)` (already clipped to the image),
    /// patched by `overlay`, now or later. It must answer exactly once.
    fn serve_read(&self, offset: u64, len: u32, overlay: &Arc<Overlay>, reply: ReplyData);

    /// Fills `buf` with pristine bytes from `offset`, synchronously. Used for the rare
    /// partial-block write that must copy the rest of the block into the overlay.
    fn read_pristine(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// Watches every access the kernel sends for the image file.
pub trait AccessObserver: Send + Sync + 'static {
    /// Called once per FUSE read or write, before it is served.
    fn observe(&self, op: Op, offset: u64, len: u32);
}

/// An observer that ignores everything.
impl AccessObserver for () {
    fn observe(&self, _: Op, _: u64, _: u32) {}
}

/// Handles a line written to the control file; an `Err` fails the write with `EINVAL`.
pub type ControlHandler = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Serves pristine bytes straight from a local image file (the recorder's source).
pub struct FileSource {
    file: File,
}

impl FileSource {
    /// Opens `path` read-only: the image itself is never written.
    pub fn open(path: &Path) -> io::Result<FileSource> {
        Ok(FileSource {
            file: File::open(path)?,
        })
    }
}

thread_local! {
    /// One read buffer per FUSE worker, so serving a read allocates nothing after warm-up.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads `len` bytes at `offset` with `fill`, patches them with `overlay` and replies, using a
/// per-thread buffer.
pub fn reply_with(
    len: u32,
    offset: u64,
    overlay: &Overlay,
    reply: ReplyData,
    fill: impl FnOnce(&mut [u8]) -> io::Result<()>,
) {
    READ_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len as usize {
            buf.resize(len as usize, 0);
        }
        let buf = &mut buf[..len as usize];
        match fill(buf).and_then(|()| overlay.patch(offset, buf)) {
            Ok(()) => reply.data(buf),
            Err(e) => {
                tracing::warn!("read of {len} bytes at {offset} failed: {e}");
                reply.error(errno_of(&e));
            }
        }
    });
}

impl PristineSource for FileSource {
    fn serve_read(&self, offset: u64, len: u32, overlay: &Arc<Overlay>, reply: ReplyData) {
        reply_with(len, offset, overlay, reply, |buf| {
            self.file.read_exact_at(buf, offset)
        });
    }

    fn read_pristine(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

/// The one table from I/O errors to errnos.
pub fn errno_of(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

/// How the image file is presented.
#[derive(Clone, Debug)]
pub struct ImageFsOptions {
    /// File name shown in the mount (the image's own name).
    pub file_name: OsString,
    /// Image size in bytes.
    pub size: u64,
    /// Bypass the kernel page cache so every access reaches the observer (recording); off, the
    /// page cache serves repeated reads (the runtime).
    pub direct_io: bool,
}

/// See the module doc.
pub struct ImageFs<S, O> {
    source: Arc<S>,
    overlay: Arc<Overlay>,
    observer: O,
    options: ImageFsOptions,
    control: Option<ControlHandler>,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

impl<S: PristineSource, O: AccessObserver> ImageFs<S, O> {
    /// A filesystem serving `source` patched by `overlay`, reporting to `observer`.
    pub fn new(
        source: Arc<S>,
        overlay: Arc<Overlay>,
        observer: O,
        options: ImageFsOptions,
    ) -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        ImageFs {
            source,
            overlay,
            observer,
            options,
            control: None,
            uid,
            gid,
            mtime: SystemTime::now(),
        }
    }

    /// Adds the control file [`CONTROL_FILE`]; each line written to it goes to `handler`.
    pub fn with_control(mut self, handler: ControlHandler) -> Self {
        self.control = Some(handler);
        self
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            ROOT => (FileType::Directory, 0o755, 0, 2),
            IMAGE => (FileType::RegularFile, 0o644, self.options.size, 1),
            CONTROL if self.control.is_some() => (FileType::RegularFile, 0o200, 0, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn lookup_name(&self, name: &OsStr) -> Option<INodeNo> {
        if name == self.options.file_name.as_os_str() {
            Some(IMAGE)
        } else if self.control.is_some() && name == OsStr::new(CONTROL_FILE) {
            Some(CONTROL)
        } else {
            None
        }
    }

    fn control_write(&self, data: &[u8]) -> Result<(), Errno> {
        let handler = self.control.as_ref().ok_or(Errno::EBADF)?;
        let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            handler(line).map_err(|e| {
                tracing::warn!("control: {e}");
                Errno::EINVAL
            })?;
        }
        Ok(())
    }
}

impl<S: PristineSource, O: AccessObserver> Filesystem for ImageFs<S, O> {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent == ROOT)
            .then(|| self.lookup_name(name))
            .flatten()
            .and_then(|ino| self.attr(ino))
        {
            Some(attr) => reply.entry(&TTL, &attr, fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The image has a fixed size; the control file ignores truncation (`echo > file`).
        match (self.attr(ino), size) {
            (Some(attr), Some(s)) if ino == IMAGE && s != attr.size => reply.error(Errno::EPERM),
            (Some(attr), _) => reply.attr(&TTL, &attr),
            (None, _) => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match ino {
            IMAGE => {
                let flags = if self.options.direct_io {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::FOPEN_KEEP_CACHE
                };
                reply.opened(FileHandle(0), flags);
            }
            CONTROL if self.control.is_some() => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            ROOT => reply.error(Errno::EISDIR),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != IMAGE {
            reply.error(if ino == CONTROL {
                Errno::EBADF
            } else {
                Errno::ENOENT
            });
            return;
        }
        if offset >= self.options.size || size == 0 {
            reply.data(&[]);
            return;
        }
        let len = (size as u64).min(self.options.size - offset) as u32;
        self.observer.observe(Op::Read, offset, len);
        self.source.serve_read(offset, len, &self.overlay, reply);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match ino {
            IMAGE => {
                if offset >= self.options.size {
                    reply.error(Errno::ENOSPC);
                    return;
                }
                let len = (data.len() as u64).min(self.options.size - offset) as u32;
                self.observer.observe(Op::Write, offset, len);
                match self
                    .overlay
                    .write(offset, data, |at, buf| self.source.read_pristine(at, buf))
                {
                    Ok(n) => reply.written(n as u32),
                    Err(e) => {
                        tracing::warn!("overlay write at {offset} failed: {e}");
                        reply.error(errno_of(&e));
                    }
                }
            }
            CONTROL => match self.control_write(data) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(e),
            },
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.overlay.sync() {
            Ok(()) => reply.ok(),
            Err(e) => {
                tracing::warn!("fsync: {e}");
                reply.error(Errno::EIO);
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let mut entries: Vec<(INodeNo, FileType, &OsStr)> = vec![
            (ROOT, FileType::Directory, OsStr::new(".")),
            (ROOT, FileType::Directory, OsStr::new("..")),
            (
                IMAGE,
                FileType::RegularFile,
                self.options.file_name.as_os_str(),
            ),
        ];
        if self.control.is_some() {
            entries.push((CONTROL, FileType::RegularFile, OsStr::new(CONTROL_FILE)));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // ENOSYS tells the kernel never to ask again (it asks for security.capability on
        // every write otherwise).
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn destroy(&mut self) {
        if let Err(e) = self.overlay.sync() {
            tracing::warn!("syncing the overlay at unmount: {e}");
        }
    }
}

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
    /// for the FUSE threads to finish, which flushes the overlay.
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

/// Mounts `fs` at `mountpoint` with `threads` FUSE worker threads.
pub fn mount<FS: Filesystem>(
    fs: FS,
    mountpoint: &Path,
    fs_name: &str,
    threads: usize,
) -> Result<Mounted, MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoFuse);
    }
    check_mountpoint(mountpoint)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(fs_name.to_string()),
        MountOption::Subtype("vmt".to_string()),
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    // Let loop devices, chroots and VMMs running as other users open the image.
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config.clone_fd = threads > 1;
    let session = fuser::Session::new(fs, mountpoint, &config)
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
