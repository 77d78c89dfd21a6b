//! The identity of an image named by the user: checked to be a non-empty regular file, then
//! taken from a SHA-256 the user gave, else from the per-user [`IdCache`], else hashed.
//!
//! Hashing a multi-GB image takes a while, so the caller gets `progress(done, total)` calls to
//! draw a bar with; nothing here prints.

use std::io;
use std::path::{Path, PathBuf};

use crate::image::{IdCache, ImageId};

/// Why an image could not be identified. Every variant names what it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyError {
    /// The image could not be looked at.
    #[error("image {}: {error}", path.display())]
    Io {
        /// The image.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A directory, device or socket given as an image.
    #[error("image {} is not a regular file", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// An empty file has nothing to serve.
    #[error("image {} is empty", path.display())]
    Empty {
        /// The image.
        path: PathBuf,
    },
    /// The SHA-256 given is not one.
    #[error("--image-sha256 {hex:?} is not 64 hex digits")]
    BadSha256 {
        /// What was given.
        hex: String,
    },
    /// Reading the image to hash it failed.
    #[error("hashing {}: {error}", path.display())]
    Hashing {
        /// The image.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
}

/// The identity of the image at `path`: from `sha256_hex` if given (trusted: hashing is what
/// it saves), else cached or hashed, calling `progress(bytes hashed, image size)` meanwhile.
pub fn identify_image(
    path: &Path,
    sha256_hex: Option<&str>,
    mut progress: impl FnMut(u64, u64),
) -> Result<ImageId, IdentifyError> {
    let meta = std::fs::metadata(path).map_err(|error| IdentifyError::Io {
        path: path.to_owned(),
        error,
    })?;
    if !meta.is_file() {
        return Err(IdentifyError::NotAFile {
            path: path.to_owned(),
        });
    }
    let size = meta.len();
    if size == 0 {
        return Err(IdentifyError::Empty {
            path: path.to_owned(),
        });
    }
    if let Some(hex) = sha256_hex {
        return ImageId::from_hex(size, hex).ok_or_else(|| IdentifyError::BadSha256 {
            hex: hex.to_string(),
        });
    }
    IdCache::user()
        .identify(path, |done| progress(done, size))
        .map_err(|error| IdentifyError::Hashing {
            path: path.to_owned(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_cannot_be_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let cases = [
            (dir.path().join("missing.img"), "missing.img: "),
            (dir.path().to_owned(), "is not a regular file"),
            (empty, "is empty"),
        ];
        for (path, want) in cases {
            let e = identify_image(&path, None, |_, _| {}).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn a_given_sha256_is_used_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        std::fs::write(&img, b"abc").unwrap();
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let id = identify_image(&img, Some(hex), |_, _| panic!("no hashing")).unwrap();
        assert_eq!((id.size, id.sha256_hex()), (3, hex.to_string()));
        let e = identify_image(&img, Some("xyz"), |_, _| {}).unwrap_err();
        assert!(matches!(e, IdentifyError::BadSha256 { .. }), "{e}");
    }
}
