//! The filesystem core: one appliance image served as one file, with no FUSE types.
//!
//! [`ImageFs`] shows a directory with the image under its own name (and, for recording
//! sessions, a control file). It is generic over where pristine bytes come from
//! ([`PristineSource`]: the raw image for the recorder, the swarm for the runtime), over who
//! watches accesses ([`AccessObserver`]: the trace recorder, the online belief), and over what
//! answers a read ([`ReadReply`]: a FUSE reply, or a fake in tests). Writes always go to the
//! copy-on-write [`Overlay`]; reads are pristine bytes patched by the overlay. The read path
//! (serve, park, release, close) is in `read.rs`, writes in `write.rs`; this file holds the
//! state and the namespace operations.
//!
//! Every operation returns [`FsError`] on failure; the fuser adapter turns it into an errno.

use std::ffi::{OsStr, OsString};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vmt_formats::trace::Op;

use crate::error::FsError;
use crate::inode::{Attr, Node, PageCache, CONTROL_FILE};
use crate::overlay::Overlay;
use crate::parked::ParkedReads;
use crate::reply::Waiter;
use crate::source::PristineSource;
use crate::stats::ReadStats;

/// Watches every access the kernel sends for the image file.
pub trait AccessObserver: Send + Sync + 'static {
    /// Called once per FUSE read or write, on the FUSE thread, before it is served, with the
    /// range clipped to the image. It must be quick and must not block.
    fn observe(&self, op: Op, offset: u64, len: u32);
}

/// An observer that ignores everything.
impl AccessObserver for () {
    fn observe(&self, _: Op, _: u64, _: u32) {}
}

/// Handles a line written to the control file; an `Err` fails the write with `EINVAL`.
pub type ControlHandler = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How long a partial-block write waits for the pristine bytes it must keep by default: long
/// enough for a slow swarm, short enough that a dead one is an I/O error, not a hung VM.
pub const PRISTINE_WAIT: Duration = Duration::from_secs(60);

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
    /// How long a partial-block write to missing units waits for them before failing with an
    /// I/O error ([`PRISTINE_WAIT`] unless a test needs it shorter).
    pub pristine_wait: Duration,
    /// How long a read may wait for missing units before it fails with an I/O error, checked
    /// by [`ImageFs::expire_parked`]; `None` waits as long as it takes (a hard mount: never
    /// wrong data, never an error while the swarm may still deliver).
    pub read_timeout: Option<Duration>,
}

/// See the module doc.
pub struct ImageFs<S, O, R> {
    pub(crate) source: S,
    pub(crate) overlay: Arc<Overlay>,
    pub(crate) observer: O,
    pub(crate) options: ImageFsOptions,
    control: Option<ControlHandler>,
    /// The source's unit size, read once (never 0).
    pub(crate) unit_size: u64,
    /// The one wait table: reads parked on missing units, and partial writes waiting for
    /// pristine bytes.
    pub(crate) parked: ParkedReads<Waiter<R>>,
    /// Set by [`ImageFs::close`]: every read from then on fails.
    pub(crate) closed: AtomicBool,
    pub(crate) stats: ReadStats,
    uid: u32,
    gid: u32,
    time: SystemTime,
}

impl<S: PristineSource, O: AccessObserver, R> ImageFs<S, O, R> {
    /// A filesystem serving `source` patched by `overlay`, reporting to `observer`.
    pub fn new(source: S, overlay: Arc<Overlay>, observer: O, options: ImageFsOptions) -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        ImageFs {
            unit_size: u64::from(source.unit_size().max(1)),
            source,
            overlay,
            observer,
            options,
            control: None,
            parked: ParkedReads::new(),
            closed: AtomicBool::new(false),
            stats: ReadStats::default(),
            uid,
            gid,
            time: SystemTime::now(),
        }
    }

    /// Adds the control file [`CONTROL_FILE`]; each line written to it goes to `handler`.
    pub fn with_control(mut self, handler: ControlHandler) -> Self {
        self.control = Some(handler);
        self
    }

    /// The pristine source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The copy-on-write overlay.
    pub fn overlay(&self) -> &Arc<Overlay> {
        &self.overlay
    }

    /// How the image is presented.
    pub fn options(&self) -> &ImageFsOptions {
        &self.options
    }

    /// Our node of inode number `ino`; the control file only exists when it was added.
    pub(crate) fn node(&self, ino: u64) -> Result<Node, FsError> {
        match Node::from_ino(ino) {
            Some(Node::Control) if self.control.is_none() => Err(FsError::NotFound),
            Some(node) => Ok(node),
            None => Err(FsError::NotFound),
        }
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let node = self.node(ino)?;
        let (perm, size, nlink) = match node {
            Node::Root => (0o755, 0, 2),
            Node::Image => (0o644, self.options.size, 1),
            Node::Control => (0o200, 0, 1),
        };
        Ok(Attr {
            node,
            size,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            time: self.time,
        })
    }

    /// The entry `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        if !self.node(parent)?.is_dir() {
            return Err(FsError::NotDirectory);
        }
        let node = if name == self.options.file_name.as_os_str() {
            Node::Image
        } else if self.control.is_some() && name == OsStr::new(CONTROL_FILE) {
            Node::Control
        } else {
            return Err(FsError::NotFound);
        };
        self.getattr(node.ino())
    }

    /// Applies a size change: the image has a fixed size, and the control file ignores
    /// truncation (`echo > file`). Other attribute changes are ignored.
    pub fn setattr(&self, ino: u64, size: Option<u64>) -> Result<Attr, FsError> {
        let attr = self.getattr(ino)?;
        match size {
            Some(s) if attr.node == Node::Image && s != attr.size => {
                Err(FsError::FixedSize { size: attr.size })
            }
            _ => Ok(attr),
        }
    }

    /// Opens inode `ino`, saying how the kernel may cache it.
    pub fn open(&self, ino: u64) -> Result<PageCache, FsError> {
        match self.node(ino)? {
            Node::Image if self.options.direct_io => Ok(PageCache::Bypass),
            Node::Image => Ok(PageCache::Keep),
            Node::Control => Ok(PageCache::Bypass),
            Node::Root => Err(FsError::IsDirectory),
        }
    }

    /// Lists directory `ino` from entry `offset` on; `add(node, next_offset, name)` returns
    /// true when the reply buffer is full.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(Node, u64, &OsStr) -> bool,
    ) -> Result<(), FsError> {
        if !self.node(ino)?.is_dir() {
            return Err(FsError::NotDirectory);
        }
        let entries = [
            Some((Node::Root, OsStr::new("."))),
            Some((Node::Root, OsStr::new(".."))),
            Some((Node::Image, self.options.file_name.as_os_str())),
            self.control
                .as_ref()
                .map(|_| (Node::Control, OsStr::new(CONTROL_FILE))),
        ];
        for (i, (node, name)) in entries
            .into_iter()
            .flatten()
            .enumerate()
            .skip(offset as usize)
        {
            if add(node, i as u64 + 1, name) {
                break;
            }
        }
        Ok(())
    }

    /// Makes the overlay's writes durable (`fsync`, and at unmount).
    pub fn fsync(&self) -> Result<(), FsError> {
        Ok(self.overlay.sync()?)
    }

    pub(crate) fn control_write(&self, data: &[u8]) -> Result<(), FsError> {
        let handler = self.control.as_ref().ok_or(FsError::NotFound)?;
        let text = std::str::from_utf8(data)
            .map_err(|_| FsError::Control("the command is not UTF-8".into()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            handler(line).map_err(FsError::Control)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::test_fs;
    use std::sync::Mutex;

    fn listing(fs: &crate::testutil::TestFs, offset: u64) -> Vec<(Node, u64, String)> {
        let mut out = Vec::new();
        fs.readdir(1, offset, |node, next, name| {
            out.push((node, next, name.to_string_lossy().into_owned()));
            false
        })
        .unwrap();
        out
    }

    #[test]
    fn the_namespace_is_a_root_and_the_image() {
        let (fs, _) = test_fs(4);
        let image = fs.lookup(1, OsStr::new("app.img")).unwrap();
        assert_eq!(
            (image.node, image.size, image.perm),
            (Node::Image, 4 << 14, 0o644)
        );
        assert!(matches!(
            fs.lookup(1, OsStr::new(CONTROL_FILE)),
            Err(FsError::NotFound)
        ));
        assert!(matches!(
            fs.lookup(2, OsStr::new("x")),
            Err(FsError::NotDirectory)
        ));
        assert!(matches!(fs.getattr(3), Err(FsError::NotFound)));
        assert_eq!(fs.open(2).unwrap(), PageCache::Keep);
        assert!(matches!(fs.open(1), Err(FsError::IsDirectory)));
        assert!(matches!(
            fs.setattr(2, Some(1)),
            Err(FsError::FixedSize { .. })
        ));
        assert_eq!(fs.setattr(2, Some(4 << 14)).unwrap(), image);
        let names: Vec<_> = listing(&fs, 0).into_iter().map(|e| e.2).collect();
        assert_eq!(names, vec![".", "..", "app.img"]);
        assert_eq!(listing(&fs, 2), vec![(Node::Image, 3, "app.img".into())]);
        assert!(matches!(
            fs.write(2, 4 << 14, b"x"),
            Err(FsError::PastEnd { .. })
        ));
    }

    #[test]
    fn the_control_file_takes_commands() {
        let (fs, _) = test_fs(1);
        let fs = Arc::into_inner(fs).unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let fs = fs.with_control(Box::new(move |line| {
            if line == "bad" {
                return Err("no such command".into());
            }
            seen.lock().unwrap().push(line.to_string());
            Ok(())
        }));
        let control = fs.lookup(1, OsStr::new(CONTROL_FILE)).unwrap();
        assert_eq!((control.node, control.perm), (Node::Control, 0o200));
        assert_eq!(fs.open(3).unwrap(), PageCache::Bypass);
        assert_eq!(fs.write(3, 0, b"mark edit\n\n stop \n").unwrap(), 18);
        assert_eq!(*lines.lock().unwrap(), vec!["mark edit", "stop"]);
        let err = fs.write(3, 0, b"bad\n").unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL);
        assert_eq!(listing(&fs, 3)[0].2, CONTROL_FILE);
        // `echo > control` truncates first.
        assert!(fs.setattr(3, Some(0)).is_ok());
    }
}
