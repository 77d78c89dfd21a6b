//! The recorder on appliances: read throughput through a recording mount (`vmt-record
//! bench`), and traces of the demo appliance's tasks (`vmt-record demo`).
//!
//! Both join a [`vmt_fs::Recording`] (every read through FUSE, logged) with what this crate
//! builds and measures, so they live here and the binary only parses flags and prints.

use std::path::{Path, PathBuf};

use vmt_formats::identify::{identify_image, IdentifyError};
use vmt_formats::image::ImageId;
use vmt_fs::{RecordError, Recording, RecordingParams};

use crate::ext4::{build_demo, ApplianceError, LoopMount};
use crate::throughput::{bench_image, compare, Comparison};

/// Why a recorder run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecorderError {
    /// Building, mounting or reading the appliance failed.
    #[error(transparent)]
    Appliance(#[from] ApplianceError),
    /// The recording mount failed (boxed: the error is large and this path is cold).
    #[error(transparent)]
    Record(Box<RecordError>),
    /// The image could not be identified.
    #[error(transparent)]
    Identify(#[from] IdentifyError),
    /// A file could not be read or measured.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl From<RecordError> for RecorderError {
    fn from(e: RecordError) -> RecorderError {
        RecorderError::Record(Box::new(e))
    }
}

/// What `vmt-record bench` compares the raw image with.
#[derive(Clone, Debug)]
pub struct BenchParams {
    /// The raw image; `None` generates one of `size` bytes in `scratch`.
    pub image: Option<PathBuf>,
    /// Size of a generated image.
    pub size: u64,
    /// Runs of each pass; the best counts.
    pub repeat: usize,
    /// Another file with the same bytes (e.g. a `vmt-run` mount); `None` serves the image
    /// through a recording mount.
    pub against: Option<PathBuf>,
    /// Where a generated image and the recording's traces go.
    pub scratch: PathBuf,
}

/// What a bench run measured besides its rows.
#[derive(Clone, Copy, Debug)]
pub struct BenchRun {
    /// `"fuse"` (through a recording mount) or `"file"` (`--against`).
    pub what: &'static str,
    /// Accesses the recording mount logged; `None` with `--against`.
    pub accesses: Option<usize>,
}

/// Runs the recorder benchmark: `note` hears what is being prepared, `start` the run's kind
/// before the first row, `on_row` each row as soon as it is measured.
pub fn bench(
    p: &BenchParams,
    mut note: impl FnMut(&str),
    start: impl FnOnce(&'static str),
    on_row: impl FnMut(&Comparison),
) -> Result<BenchRun, RecorderError> {
    let image = match &p.image {
        Some(path) => path.clone(),
        None => {
            note(&format!(
                "generating a {} image of random bytes",
                vmt_formats::units::Size::from_bytes(p.size)
            ));
            bench_image(&p.scratch, p.size)?
        }
    };
    let io = |error| RecorderError::Io {
        path: image.clone(),
        error,
    };
    let recording = match &p.against {
        Some(_) => None,
        None => Some(Recording::start(RecordingParams::task(
            image.clone(),
            ImageId::size_only(std::fs::metadata(&image).map_err(io)?.len()),
            p.scratch.join("traces"),
            "bench",
        ))?),
    };
    let (served, what) = match (&p.against, &recording) {
        (Some(path), _) => (path.clone(), "file"),
        (None, Some(r)) => (r.served_path().to_owned(), "fuse"),
        (None, None) => unreachable!("a recording exists without --against"),
    };
    start(what);
    compare(&image, &served, p.against.is_some(), p.repeat, on_row).map_err(io)?;
    let accesses = match recording {
        Some(recording) => {
            let n = recording.accesses();
            recording.finish()?;
            Some(n)
        }
        None => None,
    };
    Ok(BenchRun { what, accesses })
}

/// One demo task as recorded.
#[derive(Clone, Debug)]
pub struct DemoTaskRun {
    /// Task label.
    pub name: &'static str,
    /// Files it read.
    pub files: usize,
    /// Bytes it read.
    pub bytes: u64,
    /// Its trace file.
    pub trace: PathBuf,
}

/// Builds the demo appliance in `dir` (`mkfs.ext4 -d`) and records one run of each of its
/// tasks, each reading its files through a loop mount of the served image. `hashing(done,
/// total)` follows the image's hashing; `on_task` hears each task as it is recorded.
pub fn record_demo(
    dir: &Path,
    hashing: impl FnMut(u64, u64),
    mut on_task: impl FnMut(&DemoTaskRun),
) -> Result<Vec<DemoTaskRun>, RecorderError> {
    let app = build_demo(dir)?;
    let image_id = identify_image(&app.image, None, hashing)?;
    let out = dir.join("traces");
    let mut runs = Vec::new();
    for task in &app.tasks {
        let recording = Recording::start(RecordingParams::task(
            app.image.clone(),
            image_id,
            out.clone(),
            task.name,
        ))?;
        let mnt = dir.join(format!("mnt-{}", task.name));
        let lm = LoopMount::new(recording.served_path(), &mnt)?;
        let bytes = lm.read_files(&task.files)?;
        lm.unmount()?;
        let trace = recording.finish()?;
        let run = DemoTaskRun {
            name: task.name,
            files: task.files.len(),
            bytes,
            trace: out.join(format!("{}-{}.vmtrace", trace.label, trace.run)),
        };
        on_task(&run);
        runs.push(run);
    }
    Ok(runs)
}
