//! Importing accesses recorded elsewhere (vmt's CSV, or `blkparse` text of a real VM disk) as
//! a trace file, refusing what no other command could use: no accesses, or an image too large
//! to count in blocks.
//!
//! It sits beside the recorder because it makes the same thing, a trace of a task (and checks
//! its label the same way); the parsing itself is [`Trace::from_csv`] and
//! [`Trace::from_blkparse`].

use std::path::PathBuf;

use crate::record::{validate_task_name, RecordError};
use vmt_formats::envelope::FileError;
use vmt_formats::identify::{identify_image, IdentifyError};
use vmt_formats::image::{BlockGeometry, GeometryError, ImageId};
use vmt_formats::text::{read_text, MAX_TEXT_LEN};
use vmt_formats::trace::{Trace, TraceError};

/// The text format of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// Decided from the first line that is neither blank nor a `#` comment.
    Auto,
    /// vmt's CSV interchange format.
    Csv,
    /// `blkparse`'s default text output (512-byte sectors).
    Blkparse,
}

/// Where the image identity comes from.
#[derive(Clone, Debug)]
pub enum ImportImage {
    /// The image itself, hashed (or its SHA-256 given); a CSV header must agree with it.
    File {
        /// The image.
        path: PathBuf,
        /// Its SHA-256 if known.
        sha256: Option<String>,
    },
    /// Only its size: the trace matches only other size-only traces of that size.
    Bytes(u64),
    /// The CSV's own `# image_bytes=` / `# image_sha256=` lines.
    FromInput,
}

/// What to import; see [`ImportParams::check`].
#[derive(Clone, Debug)]
pub struct ImportParams {
    /// The CSV or blkparse text file.
    pub input: PathBuf,
    /// The trace file to write.
    pub out: PathBuf,
    /// The image identity.
    pub image: ImportImage,
    /// The input's format.
    pub format: ImportFormat,
    /// Task label of blkparse input; `None` takes the input's file stem.
    pub task: Option<String>,
}

/// [`ImportParams`] with a usable image size and task label.
#[derive(Clone, Debug)]
pub struct ValidImportParams(ImportParams);

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// An image size of 0.
    #[error("--image-bytes must be positive")]
    ZeroImageBytes,
    /// An image size no trace consumer can use.
    #[error("{what}: an image of {bytes} bytes is too large for vmt ({reason})")]
    ImageTooLarge {
        /// Where the size came from.
        what: String,
        /// The size.
        bytes: u64,
        /// Why it cannot be used.
        reason: GeometryError,
    },
    /// A bad task label (boxed: the recorder's error is large and this path is cold).
    #[error(transparent)]
    Task(Box<RecordError>),
    /// The input could not be read, or is not text (an image or `/dev/zero` given by mistake),
    /// or is too large to be a trace.
    #[error(transparent)]
    Read(#[from] FileError),
    /// The image could not be identified.
    #[error(transparent)]
    Identify(#[from] IdentifyError),
    /// blkparse text carries no image size.
    #[error("blkparse input needs --image or --image-bytes")]
    BlkparseNeedsImage,
    /// The input does not parse, or the trace could not be written.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// Nothing to import: a trace without accesses trains nothing.
    #[error("{}: no accesses to import", path.display())]
    NoRecords {
        /// The input.
        path: PathBuf,
    },
}

impl From<RecordError> for ImportError {
    fn from(e: RecordError) -> ImportError {
        ImportError::Task(Box::new(e))
    }
}

/// A written trace.
#[derive(Debug)]
pub struct Imported {
    /// The trace as written.
    pub trace: Trace,
    /// Where.
    pub path: PathBuf,
}

/// Checks that `bytes` can be counted in the default blocks, as every trace consumer does.
fn check_image_size(what: impl FnOnce() -> String, bytes: u64) -> Result<(), ImportError> {
    match BlockGeometry::new(bytes, BlockGeometry::DEFAULT_BLOCK_SIZE) {
        Ok(_) => Ok(()),
        Err(GeometryError::EmptyImage) if bytes == 0 => Err(ImportError::ZeroImageBytes),
        Err(reason) => Err(ImportError::ImageTooLarge {
            what: what(),
            bytes,
            reason,
        }),
    }
}

impl ImportParams {
    /// Checks the image size given and the task label, without touching any file.
    pub fn check(self) -> Result<ValidImportParams, ImportError> {
        if let ImportImage::Bytes(n) = self.image {
            check_image_size(|| "--image-bytes".into(), n)?;
        }
        if let Some(task) = &self.task {
            validate_task_name(task)?;
        }
        Ok(ValidImportParams(self))
    }
}

impl ValidImportParams {
    /// Reads, parses and checks the input and writes the trace. `hashing(done, total)` is
    /// called while an image given as a file is hashed.
    pub fn run(&self, hashing: impl FnMut(u64, u64)) -> Result<Imported, ImportError> {
        let p = &self.0;
        let text = read_text(&p.input, "trace text", MAX_TEXT_LEN)?;
        let id = match &p.image {
            ImportImage::File { path, sha256 } => {
                Some(identify_image(path, sha256.as_deref(), hashing)?)
            }
            ImportImage::Bytes(n) => Some(ImageId::size_only(*n)),
            ImportImage::FromInput => None,
        };
        let trace = if is_blkparse(p.format, &text) {
            let id = id.ok_or(ImportError::BlkparseNeedsImage)?;
            let label = match &p.task {
                Some(t) => t.clone(),
                None => p
                    .input
                    .file_stem()
                    .map_or_else(|| "imported".into(), |s| s.to_string_lossy().into_owned()),
            };
            validate_task_name(&label)?;
            Trace::from_blkparse(&p.input, &text, id, &label)?
        } else {
            Trace::from_csv(&p.input, &text, id)?
        };
        if trace.records.is_empty() {
            return Err(ImportError::NoRecords {
                path: p.input.clone(),
            });
        }
        check_image_size(|| p.input.display().to_string(), trace.image.size)?;
        trace.save(&p.out)?;
        Ok(Imported {
            trace,
            path: p.out.clone(),
        })
    }
}

/// Whether the text is blkparse output: its lines start with "maj,min" and carry an action
/// letter, so the first one splits into 7 or more words; CSV never has spaces between its
/// first fields.
fn is_blkparse(format: ImportFormat, text: &str) -> bool {
    match format {
        ImportFormat::Csv => false,
        ImportFormat::Blkparse => true,
        ImportFormat::Auto => text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.split_whitespace().count() >= 7),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn params(dir: &Path, csv: &str, image: ImportImage) -> ValidImportParams {
        let input = dir.join("in.csv");
        std::fs::write(&input, csv).unwrap();
        ImportParams {
            input,
            out: dir.join("out.vmtrace"),
            image,
            format: ImportFormat::Auto,
            task: None,
        }
        .check()
        .unwrap()
    }

    #[test]
    fn a_csv_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        let p = params(
            dir.path(),
            "# image_bytes=1048576\nt_us,op,offset,len\n0,R,0,4096\n",
            ImportImage::FromInput,
        );
        let done = p.run(|_, _| {}).unwrap();
        assert_eq!(Trace::load(&done.path).unwrap(), done.trace);
        assert_eq!(done.trace.records.len(), 1);
    }

    #[test]
    fn refuses_what_other_commands_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let huge = params(
            dir.path(),
            "# image_bytes=18446744073709551615\n0,R,0,4096\n",
            ImportImage::FromInput,
        );
        let e = huge.run(|_, _| {}).unwrap_err();
        assert!(matches!(e, ImportError::ImageTooLarge { .. }), "{e}");
        let empty = params(dir.path(), "", ImportImage::Bytes(1 << 20));
        let e = empty.run(|_, _| {}).unwrap_err();
        assert!(matches!(e, ImportError::NoRecords { .. }), "{e}");
        assert!(!dir.path().join("out.vmtrace").exists(), "nothing written");
        for (bytes, want) in [(0, "must be positive"), (u64::MAX, "too large")] {
            let e = ImportParams {
                input: "x".into(),
                out: "y".into(),
                image: ImportImage::Bytes(bytes),
                format: ImportFormat::Csv,
                task: None,
            }
            .check()
            .unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn blkparse_is_told_from_csv() {
        let blk = "  8,0    3   1   0.000000000   697  Q   R 223490 + 8 [kjournald]\n";
        assert!(is_blkparse(ImportFormat::Auto, blk));
        assert!(!is_blkparse(ImportFormat::Auto, "# x\n0,R,0,4096\n"));
        assert!(is_blkparse(ImportFormat::Blkparse, ""));
    }
}
