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
    /// Decided from the content: the first line that is neither blank nor a `#` comment must
    /// be a CSV header or row, or a blkparse event; anything else is refused, saying what it
    /// looks like.
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
    /// With `--format auto`, the input is neither CSV nor blkparse text.
    #[error(
        "{}: looks like {looks_like}, not CSV (no `t_us,op,offset,len` header, and no row such \
         as `0,R,0,4096`) nor blkparse output (lines such as \
         `8,0 3 1 0.000000000 697 Q R 223490 + 8 [proc]`); line {line} reads {found:?}",
        path.display()
    )]
    Unrecognized {
        /// The input.
        path: PathBuf,
        /// What it seems to be instead ("Markdown text", "text").
        looks_like: &'static str,
        /// Its first line that is neither blank nor a comment (1-based).
        line: usize,
        /// That line, cut to [`SHOWN_CHARS`].
        found: String,
    },
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
        let blkparse = match p.format {
            ImportFormat::Csv => false,
            ImportFormat::Blkparse => true,
            ImportFormat::Auto => match sniff(&text) {
                Sniffed::Csv => false,
                Sniffed::Blkparse => true,
                Sniffed::Neither {
                    looks_like,
                    line,
                    found,
                } => {
                    return Err(ImportError::Unrecognized {
                        path: p.input.clone(),
                        looks_like,
                        line,
                        found,
                    })
                }
            },
        };
        let trace = if blkparse {
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

/// Characters of an unrecognized line shown in [`ImportError::Unrecognized`]: enough to
/// recognize it, short enough for one terminal line.
pub const SHOWN_CHARS: usize = 60;

/// What an input's content is, judged by its first line that is neither blank nor a `#`
/// comment (vmt's CSV starts with `# image_bytes=…` comments).
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    Csv,
    Blkparse,
    Neither {
        looks_like: &'static str,
        line: usize,
        found: String,
    },
}

fn sniff(text: &str) -> Sniffed {
    let first = text
        .lines()
        .enumerate()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    // Only comments (or nothing): CSV, whose import then refuses it for having no accesses.
    let Some((i, line)) = first else {
        return Sniffed::Csv;
    };
    if is_csv_line(line) {
        return Sniffed::Csv;
    }
    if is_blkparse_line(line) {
        return Sniffed::Blkparse;
    }
    Sniffed::Neither {
        looks_like: if looks_like_markdown(text) {
            "Markdown text"
        } else {
            "text"
        },
        line: i + 1,
        found: line.trim().chars().take(SHOWN_CHARS).collect(),
    }
}

/// The column header (`t_us,op,…`) or a row: 4 or 5 comma-separated fields, a number first
/// and an operation second.
fn is_csv_line(line: &str) -> bool {
    let cols: Vec<&str> = line.split(',').map(str::trim).collect();
    if cols.first() == Some(&"t_us") {
        return true;
    }
    (cols.len() == 4 || cols.len() == 5)
        && cols[0].parse::<u64>().is_ok()
        && matches!(
            cols[1],
            "R" | "r" | "W" | "w" | "read" | "write" | "READ" | "WRITE"
        )
}

/// blkparse's default event line: `maj,min cpu seq seconds pid action rwbs …`
/// ("  8,0    3   1   0.000000000   697  Q   R 223490 + 8 [kjournald]").
fn is_blkparse_line(line: &str) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    let device = |s: &str| {
        s.split_once(',').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
    };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit() || c == b'.');
    f.len() >= 7
        && device(f[0])
        && number(f[1])
        && number(f[2])
        && number(f[3])
        && f[5].bytes().all(|c| c.is_ascii_uppercase())
}

/// Headings other than vmt's `# key=value` comments, fences or list items.
fn looks_like_markdown(text: &str) -> bool {
    text.lines().any(|l| {
        l.starts_with("```")
            || l.starts_with("## ")
            || l.starts_with("- ")
            || l.starts_with("# ") && !l.contains('=')
    })
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
        assert_eq!(sniff(blk), Sniffed::Blkparse);
        assert_eq!(sniff("# x\n0,R,0,4096\n"), Sniffed::Csv);
        assert_eq!(
            sniff("# image_bytes=4096\nt_us,op,offset,len\n"),
            Sniffed::Csv
        );
    }

    /// Issue 16: a Markdown file was taken for blkparse input ("needs --image").
    #[test]
    fn r16_3_4_neither_csv_nor_blkparse_says_what_it_looks_like() {
        let readme =
            "# vmt\n\nStart virtual appliances on demand from a BitTorrent swarm: a VM boots\n";
        match sniff(readme) {
            Sniffed::Neither {
                looks_like, line, ..
            } => assert_eq!((looks_like, line), ("Markdown text", 3)),
            other => panic!("{other:?}"),
        }
        let prose = "some words in a plain text file, seven or more of them\n";
        assert!(matches!(
            sniff(prose),
            Sniffed::Neither {
                looks_like: "text",
                ..
            }
        ));
        assert_eq!(
            sniff("# only=comments\n\n"),
            Sniffed::Csv,
            "refused for no accesses"
        );

        let dir = tempfile::tempdir().unwrap();
        let p = params(dir.path(), readme, ImportImage::FromInput);
        let e = p.run(|_, _| {}).unwrap_err().to_string();
        assert!(e.contains("looks like Markdown text, not CSV"), "{e}");
        assert!(e.contains("nor blkparse"), "{e}");
        assert!(e.contains("line 3 reads \"Start virtual"), "{e}");
        assert!(!e.contains("--image"), "{e}");
    }
}
