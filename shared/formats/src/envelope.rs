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
//! temporary file that is fsynced and renamed over the target, so a crash never leaves half a file;
//! the temporary files a killed writer left behind are removed by the next write or open
//! ([`remove_stale_temps`]).
//!
//! # What reading costs
//! [`read`] reads the header, checks magic and version, and then reads exactly the body length
//! the header declares, at most [`MAX_BODY_LEN`] and, for a regular file, only if the file has
//! exactly that many bytes: a file of another kind (a disk image, `/dev/zero`) costs the
//! [`HEADER_LEN`] bytes of a header. Decoding allocates no more than [`decode_limit`] of the body, however a corrupt
//! length inside it reads.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use crate::image::ImageId;

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 32 + 8 + 8;

/// Largest body a vmt file may declare. The biggest real ones, bundles of a large image's
/// profiles, are tens of MiB; a declared length beyond this is corruption, and refusing it
/// keeps a reader from trying to hold it.
pub const MAX_BODY_LEN: u64 = 1 << 30;

/// How many times its encoded size a body may take while decoding, as bincode counts it: a
/// varint of one byte counts as the 8 bytes of the `u64` it decodes to, so vmt's bodies
/// (integers, floats, strings, sequences of them) stay within 8x; twice that for a margin.
const DECODE_EXPANSION: usize = 16;

/// Decoding limit for the smallest bodies: room for serde's first allocations of a sequence.
const MIN_DECODE_LIMIT: usize = 1 << 20;

/// Chunk in which a body of a file whose size is not known (a pipe) is read and grown.
const READ_CHUNK: usize = 64 << 10;

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
    /// The file declares, or has, more bytes than a file of its kind may.
    #[error("{}: {kind} of {size} bytes is larger than the {max} bytes such a file may have", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Kind expected.
        kind: &'static str,
        /// Bytes declared or present.
        size: u64,
        /// Most accepted.
        max: u64,
    },
    /// The file is not text where text was expected (a NUL byte, or bytes that are not UTF-8).
    #[error("{}: not a {kind} file: binary data at byte {at}", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// Kind expected.
        kind: &'static str,
        /// Offset of the first byte that is not text.
        at: u64,
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
/// in place: renaming over it would replace a device node with a file. Temporary files of
/// `path` that a killed writer left are removed first ([`remove_stale_temps`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .write_all(bytes);
        }
    }
    let (dir, name) = dir_and_name(path);
    // Best effort: a directory we cannot list or clean fails the write below anyway.
    let _ = remove_stale_temps(path);
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

/// The directory `path` is in (`.` for a bare name) and its file name.
fn dir_and_name(path: &Path) -> (&Path, std::borrow::Cow<'_, str>) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    (dir, path.file_name().unwrap_or_default().to_string_lossy())
}

/// Removes the temporary files [`write_atomically`] made for `path` whose writer no longer runs
/// (killed mid-write), and returns how many it removed. Temp files of a live process, this one
/// included, are another write in progress and are left alone.
pub fn remove_stale_temps(path: &Path) -> io::Result<usize> {
    let (dir, name) = dir_and_name(path);
    let prefix = format!(".{name}.tmp");
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(temp_writer)
        else {
            continue;
        };
        if pid == std::process::id() || process_runs(pid) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            // Another process cleaning up at the same time.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The writer's pid in what follows `.NAME.tmp` in a temp file's name: `PID.SERIAL`, or `PID`
/// as builds before the serial named them. Anything else is not ours (`.NAME.tmp2.tmp9.0` is
/// a temp file of `NAME.tmp2`).
fn temp_writer(rest: &str) -> Option<u32> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let pid = match rest.split_once('.') {
        Some((pid, serial)) if digits(serial) => pid,
        Some(_) => return None,
        None => rest,
    };
    digits(pid).then(|| pid.parse().ok()).flatten()
}

/// Whether process `pid` exists (in this pid namespace).
fn process_runs(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false; // 0 and negative pids name process groups, not a writer
    }
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    // EPERM: it exists, under another user.
    found || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads just the header of `path`, checking kind and version.
pub fn read_header(path: &Path, kind: &FileKind) -> Result<Header, FileError> {
    let mut f = File::open(path).map_err(|e| FileError::io(path, e))?;
    let mut buf = [0u8; HEADER_LEN];
    let got = read_full(&mut f, &mut buf).map_err(|e| FileError::io(path, e))?;
    parse_header(path, kind, &buf[..got]).map(|(h, _, _)| h)
}

/// Fills `buf` from `source` as far as it goes; returns the bytes read (fewer only at its end).
fn read_full(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match source.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
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
    if body_len > MAX_BODY_LEN {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            kind: kind.name,
            size: body_len,
            max: MAX_BODY_LEN,
        });
    }
    Ok((Header { version, image }, body_len, &bytes[60..HEADER_LEN]))
}

/// Checks that a file of `size` bytes holds exactly the header and its declared body.
fn check_size(path: &Path, kind: &FileKind, body_len: u64, size: u64) -> Result<(), FileError> {
    let need = HEADER_LEN as u64 + body_len;
    if size < need {
        return Err(FileError::Truncated {
            path: path.to_owned(),
            kind: kind.name,
            have: size,
            need,
        });
    }
    if size > need {
        return Err(FileError::Corrupt {
            path: path.to_owned(),
            kind: kind.name,
            reason: format!("{} trailing bytes after the body", size - need),
        });
    }
    Ok(())
}

/// Decodes a complete file image held in memory.
pub fn decode<T: DeserializeOwned>(
    path: &Path,
    kind: &FileKind,
    bytes: &[u8],
) -> Result<(Header, T), FileError> {
    let (header, body_len, checksum) = parse_header(path, kind, bytes)?;
    check_size(path, kind, body_len, bytes.len() as u64)?;
    let value = decode_body(path, kind, checksum, &bytes[HEADER_LEN..])?;
    Ok((header, value))
}

/// Checks the body against its checksum and decodes it, allocating at most
/// [`decode_limit`]`(body.len())` for what the body's lengths claim.
fn decode_body<T: DeserializeOwned>(
    path: &Path,
    kind: &FileKind,
    checksum: &[u8],
    body: &[u8],
) -> Result<T, FileError> {
    let corrupt = |reason: String| FileError::Corrupt {
        path: path.to_owned(),
        kind: kind.name,
        reason,
    };
    if Sha256::digest(body)[..8] != *checksum {
        return Err(corrupt("checksum mismatch".into()));
    }
    let (value, used) =
        decode_limited(body).map_err(|e| corrupt(format!("undecodable body: {e}")))?;
    if used != body.len() {
        return Err(corrupt("body longer than its content".into()));
    }
    Ok(value)
}

/// The most bytes decoding a body of `body_len` bytes may claim, as bincode counts them (the
/// decoded sizes of its integers, strings and sequences): 16 times the body, at least 1 MiB,
/// rounded up to a power of four (the limit is a type-level constant in bincode, so it comes in
/// steps).
pub fn decode_limit(body_len: usize) -> usize {
    let need = body_len
        .saturating_mul(DECODE_EXPANSION)
        .max(MIN_DECODE_LIMIT);
    let mut limit = MIN_DECODE_LIMIT;
    while limit < need {
        limit = limit.saturating_mul(4);
    }
    limit
}

/// bincode reads a string's or byte vector's length and allocates it before reading its
/// bytes: without a limit, one corrupt length (in a body whose checksum was made to match)
/// asks the allocator for up to 2^64 bytes and aborts the process. The limit turns that into
/// an error.
fn decode_limited<T: DeserializeOwned>(
    body: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    fn with<T: DeserializeOwned, const LIMIT: usize>(
        body: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        let config = bincode::config::standard().with_limit::<LIMIT>();
        bincode::serde::decode_from_slice(body, config)
    }
    // One arm per step of `decode_limit`, up to the limit of a MAX_BODY_LEN body.
    const _: () = assert!((MAX_BODY_LEN as usize) * DECODE_EXPANSION <= 1 << 34);
    match decode_limit(body.len()) {
        l if l <= 1 << 20 => with::<T, { 1 << 20 }>(body),
        l if l <= 1 << 22 => with::<T, { 1 << 22 }>(body),
        l if l <= 1 << 24 => with::<T, { 1 << 24 }>(body),
        l if l <= 1 << 26 => with::<T, { 1 << 26 }>(body),
        l if l <= 1 << 28 => with::<T, { 1 << 28 }>(body),
        l if l <= 1 << 30 => with::<T, { 1 << 30 }>(body),
        l if l <= 1 << 32 => with::<T, { 1 << 32 }>(body),
        _ => with::<T, { 1 << 34 }>(body),
    }
}

/// Reads and decodes `path`: the header first, then only the body it declares (see the
/// module doc for what that costs).
pub fn read<T: DeserializeOwned>(path: &Path, kind: &FileKind) -> Result<(Header, T), FileError> {
    let io = |e| FileError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    read_from(path, kind, &mut file, meta.is_file().then_some(meta.len()))
}

/// Reads and decodes an envelope from `source`, `size` bytes long if known (a regular file);
/// `path` names it in errors. Reads at most the header, the body it declares and one byte
/// more (to tell trailing bytes), and holds at most the body.
pub fn read_from<T: DeserializeOwned>(
    path: &Path,
    kind: &FileKind,
    source: &mut impl Read,
    size: Option<u64>,
) -> Result<(Header, T), FileError> {
    let io = |e| FileError::io(path, e);
    let mut head = [0u8; HEADER_LEN];
    let got = read_full(source, &mut head).map_err(io)?;
    let (header, body_len, checksum) = parse_header(path, kind, &head[..got])?;
    let mut body = match size {
        Some(size) => {
            check_size(path, kind, body_len, size)?;
            Vec::with_capacity(body_len as usize)
        }
        // A pipe says nothing of its length: grow with what actually arrives.
        None => Vec::with_capacity((body_len as usize).min(READ_CHUNK)),
    };
    Read::take(&mut *source, body_len)
        .read_to_end(&mut body)
        .map_err(io)?;
    let have = HEADER_LEN as u64 + body.len() as u64;
    if (body.len() as u64) < body_len {
        return Err(FileError::Truncated {
            path: path.to_owned(),
            kind: kind.name,
            have,
            need: HEADER_LEN as u64 + body_len,
        });
    }
    if read_full(source, &mut [0u8; 1]).map_err(io)? != 0 {
        return Err(FileError::Corrupt {
            path: path.to_owned(),
            kind: kind.name,
            reason: "trailing bytes after the body".into(),
        });
    }
    let value = decode_body(path, kind, checksum, &body)?;
    Ok((header, value))
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

    /// A pid no process has: above the kernel's limit (2^22), so it cannot be reused under
    /// the test as the pid of a process that ran and ended could.
    const DEAD_PID: u32 = (1 << 22) + 1;

    /// Issue 12 item 10: a writer killed between creating its temp file and the rename left
    /// `.NAME.tmp<pid>[.<serial>]`; the next write removes it, and never the temp file of a
    /// writer that still runs (this process, init) or of another file.
    #[test]
    fn r12_10_stale_temp_files_of_a_killed_writer_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.vmtbits");
        let dead = DEAD_PID;
        assert!(!process_runs(dead));
        let stale = [
            format!(".out.vmtbits.tmp{dead}.0"),
            format!(".out.vmtbits.tmp{dead}"),
        ];
        let kept = [
            format!(".out.vmtbits.tmp{}.7", std::process::id()),
            ".out.vmtbits.tmp1.0".to_string(),
            format!(".out.vmtbits.tmp2.tmp{dead}.0"),
            format!(".other.tmp{dead}.0"),
        ];
        for name in stale.iter().chain(&kept) {
            std::fs::write(dir.path().join(name), b"half").unwrap();
        }
        write_atomically(&path, b"new").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want: Vec<String> = kept.to_vec();
        want.push("out.vmtbits".into());
        want.sort();
        assert_eq!(left, want);
        assert_eq!(remove_stale_temps(&path).unwrap(), 0);
    }

    /// Feeds `prefix` and then up to 64 MiB of zeros through a FIFO to `read`, and returns the
    /// error and how many bytes the reader took before it closed the FIFO.
    fn read_through_fifo(prefix: Vec<u8>) -> (FileError, u64) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
                let mut taken = 0u64;
                if f.write_all(&prefix).is_err() {
                    return taken;
                }
                taken += prefix.len() as u64;
                let zeros = vec![0u8; 64 << 10];
                while taken < 64 << 20 {
                    // EPIPE once the reader is gone (Rust ignores SIGPIPE).
                    match f.write(&zeros) {
                        Ok(n) => taken += n as u64,
                        Err(_) => break,
                    }
                }
                taken
            })
        };
        let err = read::<Vec<u32>>(&fifo, &KIND).unwrap_err();
        (err, writer.join().unwrap())
    }

    /// Issue 12 item 7: `vmt-record show /dev/zero` read without end before saying "wrong
    /// magic". The header is checked first, and only the body it declares is read.
    #[test]
    fn r12_7_a_file_of_another_kind_costs_its_header_not_its_length() {
        // A pipe's capacity (64 KiB by default) is taken before the reader can close it.
        const PIPE_SLACK: u64 = 1 << 20;
        let (err, taken) = read_through_fifo(Vec::new());
        assert!(matches!(err, FileError::WrongMagic { .. }), "{err}");
        assert!(taken <= PIPE_SLACK, "read {taken} bytes of zeros");

        // A true header declaring 100 bytes: 100 bytes and one more are read, not the stream.
        let good = encode(&KIND, &image(), &vec![7u32; 10]);
        let mut head = good[..HEADER_LEN].to_vec();
        head[52..60].copy_from_slice(&100u64.to_le_bytes());
        let (err, taken) = read_through_fifo(head.clone());
        assert!(err.to_string().contains("trailing bytes"), "{err}");
        assert!(
            taken <= PIPE_SLACK,
            "read {taken} bytes after a 100-byte body"
        );

        // A declared length beyond any vmt file is refused before reading it.
        head[52..60].copy_from_slice(&(MAX_BODY_LEN + 1).to_le_bytes());
        let (err, taken) = read_through_fifo(head);
        assert!(matches!(err, FileError::TooLarge { .. }), "{err}");
        assert!(taken <= PIPE_SLACK, "read {taken} bytes of a refused body");
    }

    /// `body` in an envelope whose checksum matches, as a careful attacker would make it.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut out = encode(&KIND, &image(), &());
        out.truncate(52);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(body)[..8]);
        out.extend_from_slice(body);
        out
    }

    /// Issue 12 item 7: bincode allocates a string at the length it reads before reading it,
    /// so one length inside a body with a matching checksum asked for up to 2^64 bytes and
    /// aborted the process. Now it is a corrupt-file error.
    #[test]
    fn r12_7_a_huge_length_inside_the_body_is_an_error_not_an_allocation() {
        for claimed in [1u64 << 40, 1 << 62, u64::MAX] {
            // One string (count 1), whose length is a u64 varint (tag 253).
            let mut body = vec![1u8, 253];
            body.extend_from_slice(&claimed.to_le_bytes());
            body.extend_from_slice(b"abc");
            let err = decode::<Vec<String>>(Path::new("x"), &KIND, &sealed(&body)).unwrap_err();
            assert!(matches!(err, FileError::Corrupt { .. }), "{claimed}: {err}");
        }
        assert_eq!(decode_limit(0), MIN_DECODE_LIMIT);
        assert!(decode_limit(MAX_BODY_LEN as usize) >= MAX_BODY_LEN as usize * DECODE_EXPANSION);
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
