//! The fuser adapter: `impl fuser::Filesystem` over the core, translating only.
//!
//! Each callback turns fuser's types into the core's (`INodeNo` → `u64`, [`Attr`] →
//! `FileAttr`, [`PageCache`] → `FopenFlags`), calls one [`ImageFs`] method, and answers. Every
//! failure leaves through [`errno_of`], which logs the error at its level and takes the errno
//! from [`FsError::errno`], the crate's one table. A read's `ReplyData` is wrapped in
//! [`FuseReply`] and handed to the core, which may answer it later from the reply pool.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request,
    WriteFlags,
};

use crate::error::FsError;
use crate::image_fs::{AccessObserver, ImageFs};
use crate::inode::{Attr, Node, PageCache};
use crate::reply::ReadReply;
use crate::source::PristineSource;

/// The image's size and name never change while mounted, so the kernel may cache them.
const TTL: Duration = Duration::from_secs(60);

/// A FUSE read's reply, as the core's [`ReadReply`], with the thread that sent the read.
pub struct FuseReply {
    reply: ReplyData,
    pid: u32,
}

impl ReadReply for FuseReply {
    fn data(self, bytes: &[u8]) {
        self.reply.data(bytes);
    }

    fn error(self, error: FsError) {
        self.reply.error(errno_of(&error));
    }

    fn requester(&self) -> Option<u32> {
        // 0: sent by the kernel itself (no process waits on it).
        (self.pid != 0).then_some(self.pid)
    }
}

/// The core as FUSE mounts it: its reads are answered through [`FuseReply`].
pub type FuseImageFs<S, O> = ImageFs<S, O, FuseReply>;

/// The one error exit: logs `error` at its level and returns its errno.
fn errno_of(error: &FsError) -> Errno {
    if error.is_fault() {
        tracing::warn!("{error}");
    } else {
        tracing::debug!("{error}");
    }
    Errno::from_i32(error.errno())
}

fn file_type(node: Node) -> FileType {
    if node.is_dir() {
        FileType::Directory
    } else {
        FileType::RegularFile
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.node.ino()),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.time,
        mtime: a.time,
        ctime: a.time,
        crtime: a.time,
        kind: file_type(a.node),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// See the module doc.
pub(crate) struct FuseFs<S, O>(pub(crate) Arc<FuseImageFs<S, O>>);

impl<S: PristineSource, O: AccessObserver> Filesystem for FuseFs<S, O> {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.0.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), fuser::Generation(0)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno_of(&e)),
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
        match self.0.setattr(ino.0, size) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.open(ino.0) {
            Ok(PageCache::Bypass) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Ok(PageCache::Keep) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let reply = FuseReply {
            reply,
            pid: req.pid(),
        };
        self.0.read(ino.0, offset, size, reply);
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
        match self.0.write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno_of(&e)),
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
        match self.0.fsync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
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
        let listed = self.0.readdir(ino.0, offset, |node, next, name| {
            reply.add(INodeNo(node.ino()), next, file_type(node), name)
        });
        if let Err(e) = listed {
            return reply.error(errno_of(&e));
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
        reply.error(errno_of(&FsError::Unsupported));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(errno_of(&FsError::Unsupported));
    }

    fn destroy(&mut self) {
        if let Err(e) = self.0.fsync() {
            tracing::warn!("at unmount: {e}");
        }
    }
}
