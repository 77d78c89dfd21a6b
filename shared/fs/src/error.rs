//! Every failure the filesystem answers with, and the one table from those to errnos.
//!
//! The core returns [`FsError`] (and hands it to a parked read's [`ReadReply`]); only
//! [`FsError::errno`] picks an errno, and the fuser adapter has one exit that logs the error at
//! its level and replies with that errno (as mountpoint-s3's `fs/error.rs` does). Nothing else
//! in the crate names an errno.
//!
//! [`ReadReply`]: crate::ReadReply

use std::io;
use std::time::Duration;

use crate::overlay::OverlayError;

/// Why a filesystem operation failed. See the module doc.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// No such inode or name.
    #[error("no such file or directory")]
    NotFound,
    /// A file operation on the root directory.
    #[error("is a directory")]
    IsDirectory,
    /// A directory operation on a file.
    #[error("not a directory")]
    NotDirectory,
    /// A read of the control file, which only takes commands.
    #[error("the control file is write-only")]
    WriteOnly,
    /// A truncation or extension of the image.
    #[error("the image has a fixed size of {size} bytes")]
    FixedSize {
        /// The image size.
        size: u64,
    },
    /// A write that starts at or past the end of the image (an overlay never grows it).
    #[error("write at {offset} is past the end of the image ({size} bytes)")]
    PastEnd {
        /// Where the write started.
        offset: u64,
        /// The image size.
        size: u64,
    },
    /// A line written to the control file was refused.
    #[error("control command refused: {0}")]
    Control(String),
    /// The filesystem was closed ([`ImageFs::close`](crate::ImageFs::close)): the mount is
    /// going away.
    #[error("the filesystem is shutting down")]
    ShuttingDown,
    /// The pristine source can never deliver the missing data (its local storage failed,
    /// which it reported itself): see [`ImageFs::fail_missing`](crate::ImageFs::fail_missing).
    #[error("the data is missing and can no longer be fetched")]
    SourceFailed,
    /// A partial-block write needed pristine bytes that did not arrive in time.
    #[error("units {first}..={last} needed by a partial-block write did not arrive within {} s", waited.as_secs())]
    PristineTimeout {
        /// First unit waited for.
        first: u32,
        /// Last unit waited for.
        last: u32,
        /// How long the write waited.
        waited: Duration,
    },
    /// A read waited for missing units longer than the read timeout allows.
    #[error("a read of {len} bytes at {offset} waited {} s for missing blocks: timed out", waited.as_secs())]
    ReadTimeout {
        /// Start of the read.
        offset: u64,
        /// Its length.
        len: u32,
        /// How long it waited.
        waited: Duration,
    },
    /// The process waiting for the read was killed: its request is answered so it can die.
    #[error("the reading process was killed while its read waited")]
    Interrupted,
    /// Reading pristine or overlay bytes failed.
    #[error("reading {len} bytes at {offset}: {error}")]
    Read {
        /// Start of the read.
        offset: u64,
        /// Its length.
        len: u32,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// Writing to the overlay failed.
    #[error("writing {len} bytes at {offset} to the overlay: {error}")]
    Write {
        /// Start of the write.
        offset: u64,
        /// Its length.
        len: u32,
        /// The OS error.
        #[source]
        error: io::Error,
    },
    /// Making the overlay durable failed.
    #[error("syncing the overlay: {0}")]
    Sync(#[from] OverlayError),
    /// An operation the filesystem deliberately does not implement (extended attributes).
    #[error("operation not supported")]
    Unsupported,
}

impl FsError {
    /// The errno the kernel gets for this error: the crate's one table.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::IsDirectory => libc::EISDIR,
            FsError::NotDirectory => libc::ENOTDIR,
            FsError::WriteOnly => libc::EBADF,
            FsError::FixedSize { .. } => libc::EPERM,
            FsError::PastEnd { .. } => libc::ENOSPC,
            FsError::Control(_) => libc::EINVAL,
            FsError::ShuttingDown
            | FsError::SourceFailed
            | FsError::PristineTimeout { .. }
            | FsError::ReadTimeout { .. }
            | FsError::Sync(_) => libc::EIO,
            FsError::Interrupted => libc::EINTR,
            // The OS's own errno says most (ENOSPC on a full overlay disk); a synthetic error
            // without one is an I/O error.
            FsError::Read { error, .. } | FsError::Write { error, .. } => {
                error.raw_os_error().filter(|&e| e > 0).unwrap_or(libc::EIO)
            }
            // ENOSYS also tells the kernel never to ask again (it asks for
            // security.capability on every write otherwise).
            FsError::Unsupported => libc::ENOSYS,
        }
    }

    /// Whether this is a fault worth a warning (I/O, timeouts, refused commands) rather than
    /// an ordinary answer such as `ENOENT` to a lookup.
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            FsError::NotFound
                | FsError::IsDirectory
                | FsError::NotDirectory
                | FsError::WriteOnly
                | FsError::FixedSize { .. }
                | FsError::PastEnd { .. }
                | FsError::Unsupported
                | FsError::Interrupted
                // Reported once by the source when it failed, not once per read.
                | FsError::SourceFailed
                // Counted in the report (`stalls.failed_at_shutdown`) and its exit line, not
                // once per read: a kernel readahead parked at unmount is no fault.
                | FsError::ShuttingDown
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_errno_and_synthetic_ones_are_eio() {
        let full = FsError::Write {
            offset: 0,
            len: 1,
            error: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(full.errno(), libc::ENOSPC);
        let eof = FsError::Read {
            offset: 0,
            len: 1,
            error: io::ErrorKind::UnexpectedEof.into(),
        };
        assert_eq!(eof.errno(), libc::EIO);
        assert_eq!(FsError::ShuttingDown.errno(), libc::EIO);
        assert!(eof.is_fault() && !FsError::NotFound.is_fault());
        // Counted in the report at shutdown, not warned once per read.
        assert!(!FsError::ShuttingDown.is_fault());
    }
}
