//! The envelope every vmt binary file shares: magic, format version, image identity, checksum.
//!
//! ```text
//! magic [8] | version u32 LE | image size u64 LE | image sha256 [32] | body len u64 LE
//!           | body sha256[..8] | body (bincode 2, standard config)
//! ```
//!
//! The header is fixed-size and read before the body, so a file of another kind, a newer
//! version or another image is refused with its own error without decoding anything; the body
//! checksum turns bit rot into [`FileError::Corrupt`] instead of a garbled decode. Writes go to a
//! temporary file that is fsynced and renamed over the target, so a crash never leaves half a file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use crate::image::ImageId;

const HEADER_LEN: usize = 8 + 4 + 8 + 32 + 8 + 8;

/// Numbers the temp files of [`write_atomically`] within this process.
static TEMP_SERIAL: AtomicU64 = AtomicU64::new(0);

/// A kind of vmt file: its magic and the newest version this build reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct FileKind {
    /// Eight bytes that open every file of this kind.
    pub magic: [u8; 8],
    /// Human name used in errors ("trace", "profile bundle").
    pub name: &'static str,
    /// Format version written, and the newest one read.
    pub version: u32,
}

/// Why a vmt file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file system said no.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The file is shorter than its header or its declared body.
    #[error("{}: truncated {kind} file ({have} bytes, expected at least {need})", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Kind expected.
        kind: &'static str,
        /// Bytes present.
        have: u64,
        /// Bytes needed.
        need: u64,
    },
    /// The magic is not this kind's.
    #[error("{}: not a vmt {kind} file (wrong magic)", path.display())]
    WrongMagic {
        /// The file.
        path: PathBuf,
        /// Kind expected.
        kind: &'static str,
    },
    /// Written by a newer vmt.
    #[error("{}: {kind} format version {found} is newer than this vmt supports ({supported}); upgrade vmt", path.display())]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Kind expected.
        kind: &'static str,
        /// Version in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The body does not match its checksum, or does not decode.
    #[error("{}: corrupt {kind} file ({reason})", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Kind expected.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The file belongs to another image.
    #[error("{}: {kind} belongs to another image ({found}), expected {expected}", path.display())]
    WrongImage {
        /// The file.
        path: PathBuf,
        /// Kind expected.
        kind: &'static str,
        /// Identity of the image in use.
        expected: ImageId,
        /// Identity in the file.
        found: ImageId,
    },
}

impl FileError {
    fn io(path: &Path, source: io::Error) -> FileError {
        FileError::Io {
            path: path.to_owned(),
            error: source,
        }
    }
}

/// The fixed header of an envelope.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// Format version of the body.
    pub version: u32,
    /// The image this file belongs to.
    pub image: ImageId,
}

/// Encodes `body` into a complete file image in memory.
pub fn encode<T: Serialize>(kind: &FileKind, image: &ImageId, body: &T) -> Vec<u8> {
    let payload = bincode::serde::encode_to_vec(body, bincode::config::standard())
        .expect("bincode encoding into a Vec cannot fail for serde-derived types");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&kind.magic);
    out.extend_from_slice(&kind.version.to_le_bytes());
    out.extend_from_slice(&image.size.to_le_bytes());
    out.extend_from_slice(&image.sha256);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload)[..8]);
    out.extend_from_slice(&payload);
    out
}

/// Writes `body` to `path` atomically (temp file, fsync, rename).
pub fn write<T: Serialize>(
    path: &Path,
    kind: &FileKind,
    image: &ImageId,
    body: &T,
) -> Result<(), FileError> {
    let bytes = encode(kind, image, body);
    write_atomically(path, &bytes).map_err(|e| FileError::io(path, e))
}

/// Replaces `path` with `bytes` so that readers see the old or the new file, never a mix.
///
/// A target that exists but is not a regular file (`/dev/null`, a FIFO, a terminal) is written
/// in place: renaming over it would replace a device node with a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .write_all(bytes);
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // Unique per call, not just per process: threads of one process (FUSE fsync, a periodic
    // sync, shutdown) may replace the same file at once, and a shared temp name lets one
    // truncate or rename away another's half-written file.
    let serial = TEMP_SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}.{serial}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads just the header of `path`, checking kind and version.
pub fn read_header(path: &Path, kind: &FileKind) -> Result<Header, FileError> {
    let mut f = File::open(path).map_err(|e| FileError::io(path, e))?;
    let mut buf = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FileError::io(path, e)),
        }
    }
    parse_header(path, kind, &buf[..got]).map(|(h, _, _)| h)
}

fn parse_header<'a>(
    path: &Path,
    kind: &FileKind,
    bytes: &'a [u8],
) -> Result<(Header, u64, &'a [u8]), FileError> {
    // A short file whose first bytes already are not our magic is "wrong magic", not "truncated".
    let magic_len = bytes.len().min(8);
    if bytes[..magic_len] != kind.magic[..magic_len] {
        return Err(FileError::WrongMagic {
            path: path.to_owned(),
            kind: kind.name,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(FileError::Truncated {
            path: path.to_owned(),
            kind: kind.name,
            have: bytes.len() as u64,
            need: HEADER_LEN as u64,
        });
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version > kind.version {
        return Err(FileError::NewerVersion {
            path: path.to_owned(),
            kind: kind.name,
            found: version,
            supported: kind.version,
        });
    }
    if version == 0 {
        return Err(FileError::Corrupt {
            path: path.to_owned(),
            kind: kind.name,
            reason: "version 0".into(),
        });
    }
    let image = ImageId {
        size: u64_at(12),
        sha256: bytes[20..52].try_into().unwrap(),
    };
    let body_len = u64_at(52);
    Ok((Header { version, image }, body_len, &bytes[60..HEADER_LEN]))
}

/// Decodes a complete file image held in memory.
pub fn decode<T: DeserializeOwned>(
    path: &Path,
    kind: &FileKind,
    bytes: &[u8],
) -> Result<(Header, T), FileError> {
    let (header, body_len, checksum) = parse_header(path, kind, bytes)?;
    let need = HEADER_LEN as u64 + body_len;
    if (bytes.len() as u64) < need {
        return Err(FileError::Truncated {
            path: path.to_owned(),
            kind: kind.name,
            have: bytes.len() as u64,
            need,
        });
    }
    let corrupt = |reason: String| FileError::Corrupt {
        path: path.to_owned(),
        kind: kind.name,
        reason,
    };
    if (bytes.len() as u64) > need {
        return Err(corrupt(format!(
            "{} trailing bytes after the body",
            bytes.len() as u64 - need
        )));
    }
    let body = &bytes[HEADER_LEN..];
    if Sha256::digest(body)[..8] != *checksum {
        return Err(corrupt("checksum mismatch".into()));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| corrupt(format!("undecodable body: {e}")))?;
    if used != body.len() {
        return Err(corrupt("body longer than its content".into()));
    }
    Ok((header, value))
}

/// Reads and decodes `path`.
pub fn read<T: DeserializeOwned>(path: &Path, kind: &FileKind) -> Result<(Header, T), FileError> {
    let bytes = std::fs::read(path).map_err(|e| FileError::io(path, e))?;
    decode(path, kind, &bytes)
}

/// Checks that a file read from `path` belongs to `expected`.
pub fn check_image(
    path: &Path,
    kind: &FileKind,
    expected: &ImageId,
    found: &ImageId,
) -> Result<(), FileError> {
    if expected == found {
        Ok(())
    } else {
        Err(FileError::WrongImage {
            path: path.to_owned(),
            kind: kind.name,
            expected: *expected,
            found: *found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: FileKind = FileKind {
        magic: *b"VMTTEST\0",
        name: "test",
        version: 2,
    };

    fn image() -> ImageId {
        ImageId {
            size: 42,
            sha256: [9; 32],
        }
    }

    #[test]
    fn writing_to_a_special_file_keeps_it() {
        use std::io::Read;
        use std::os::unix::fs::FileTypeExt;
        // A FIFO stands for /dev/null & co. without touching the machine's devices.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                File::open(fifo).unwrap().read_to_end(&mut got).unwrap();
                got
            })
        };
        write_atomically(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        let meta = std::fs::metadata(&fifo).unwrap();
        assert!(
            meta.file_type().is_fifo(),
            "still a FIFO, not replaced by a file"
        );
    }

    /// Issue 10: concurrent writers of one file (FUSE fsync, the sync task, shutdown) each
    /// replace it whole; none fails, none is clobbered by another's temp file, none is left.
    #[test]
    fn concurrent_writers_never_share_a_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|t| vec![t; 64 << 10]).collect();
        std::thread::scope(|s| {
            for bytes in &contents {
                let (path, contents) = (&path, &contents);
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomically(path, bytes).unwrap();
                        let now = std::fs::read(path).unwrap();
                        assert!(
                            contents.contains(&now),
                            "a torn file of {} bytes",
                            now.len()
                        );
                    }
                });
            }
        });
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("map")]);
    }

    #[test]
    fn round_trip_and_errors() {
        let p = Path::new("x.test");
        let bytes = encode(&KIND, &image(), &vec![1u32, 2, 3]);
        let (h, v): (Header, Vec<u32>) = decode(p, &KIND, &bytes).unwrap();
        assert_eq!(h.image, image());
        assert_eq!(v, vec![1, 2, 3]);

        let err = |b: &[u8]| decode::<Vec<u32>>(p, &KIND, b).unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 1]).contains("truncated"));
        assert!(err(&bytes[..20]).contains("truncated"));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(err(&flipped).contains("checksum"));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(err(&magic).contains("wrong magic"));
        assert!(err(b"hello").contains("wrong magic"));
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(err(&newer).contains("newer"));
    }
}
