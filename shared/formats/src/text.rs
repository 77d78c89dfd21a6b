//! Text inputs (CSV traces, blkparse output) read with a bound: refused at the first byte that
//! is not text, and beyond a size no real trace reaches, so a disk image or `/dev/zero` given
//! by mistake costs one chunk, not its length.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::envelope::FileError;

/// Largest text input read: a CSV trace takes about 30 bytes a record and blkparse output
/// about 80 bytes a line, so this is tens of millions of accesses.
pub const MAX_TEXT_LEN: u64 = 1 << 30;

/// Chunk in which text is read and checked.
const CHUNK: usize = 64 << 10;

/// Reads `path` as UTF-8 text of at most `max` bytes; `kind` names it in errors ("csv trace").
/// Stops at the first chunk holding a NUL byte (binary data: an image, `/dev/zero`) with
/// [`FileError::NotText`], and refuses a file larger than `max` before reading it (a regular
/// file) or once `max` is passed (a pipe) with [`FileError::TooLarge`].
pub fn read_text(path: &Path, kind: &'static str, max: u64) -> Result<String, FileError> {
    let io = |error| FileError::Io {
        path: path.to_owned(),
        error,
    };
    let mut file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let too_large = |size| FileError::TooLarge {
        path: path.to_owned(),
        kind,
        size,
        max,
    };
    if meta.is_file() && meta.len() > max {
        return Err(too_large(meta.len()));
    }
    read_text_from(path, kind, &mut file, max)
}

/// [`read_text`] from any reader; `path` names it in errors.
pub fn read_text_from(
    path: &Path,
    kind: &'static str,
    source: &mut impl Read,
    max: u64,
) -> Result<String, FileError> {
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match source.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(FileError::Io {
                    path: path.to_owned(),
                    error,
                })
            }
        };
        let at = bytes.len() as u64;
        if let Some(nul) = chunk[..n].iter().position(|&b| b == 0) {
            return Err(FileError::NotText {
                path: path.to_owned(),
                kind,
                at: at + nul as u64,
            });
        }
        if at + n as u64 > max {
            return Err(FileError::TooLarge {
                path: path.to_owned(),
                kind,
                size: at + n as u64,
                max,
            });
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(bytes).map_err(|e| FileError::NotText {
        path: path.to_owned(),
        kind,
        at: e.utf8_error().valid_up_to() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_read_and_binary_is_refused_at_its_first_chunk() {
        let p = Path::new("t.csv");
        let text = "# image_bytes=100\n0,R,0,10\n".repeat(5000);
        let got = read_text_from(p, "csv trace", &mut text.as_bytes(), MAX_TEXT_LEN).unwrap();
        assert_eq!(got, text);

        // An endless stream of zeros: refused after one chunk.
        let mut zeros = io::repeat(0).take(u64::MAX);
        let e = read_text_from(p, "csv trace", &mut zeros, MAX_TEXT_LEN).unwrap_err();
        assert!(matches!(e, FileError::NotText { at: 0, .. }), "{e}");
        assert!(zeros.limit() >= u64::MAX - CHUNK as u64);

        // Endless text: refused once past the bound.
        let mut lines = io::repeat(b'\n').take(u64::MAX);
        let e = read_text_from(p, "csv trace", &mut lines, 1 << 20).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
        assert!(u64::MAX - lines.limit() <= (1 << 20) + CHUNK as u64);

        let e = read_text_from(p, "csv trace", &mut &b"ok\n\xff\xfe"[..], 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv: not a csv trace file: binary data at byte 3"
        );
    }

    #[test]
    fn a_large_file_is_refused_by_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.csv");
        let f = File::create(&p).unwrap();
        f.set_len(10 << 20).unwrap();
        let e = read_text(&p, "csv trace", 1 << 20).unwrap_err();
        assert!(
            matches!(e, FileError::TooLarge { size, .. } if size == 10 << 20),
            "{e}"
        );
    }
}
