//! The traces a command is given: files and directories expanded into trace files, loaded
//! (binary `.vmtrace` or CSV), and checked to be of one image, the bundle's if there is one.
//!
//! A directory contributes its `.vmtrace` and `.csv` files, sorted. The trace of a failed task
//! that `vmt-record` set aside (`NAME-<run>.vmtrace.failed`) is not one of them, and is listed
//! in [`TraceFiles::set_aside`] so the caller can say it was left out.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::profile::{Bundle, BundleError};
use vmt_formats::text::{read_text, MAX_TEXT_LEN};
use vmt_formats::trace::{Trace, TraceError, FAILED_SUFFIX, TRACE_EXTENSION};

/// Why the traces cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// A file or directory could not be read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A directory without trace files.
    #[error(
        "{}: no .{} or .csv trace files in this directory{}",
        dir.display(),
        TRACE_EXTENSION,
        set_aside_note(*set_aside)
    )]
    NoTraces {
        /// The directory.
        dir: PathBuf,
        /// Traces of failed tasks found there.
        set_aside: usize,
    },
    /// A trace that does not load.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A trace of another image than the bundle's.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Traces of two images given together.
    #[error("{name}: trace of another image ({found}) than {first} ({expected})")]
    OtherImage {
        /// The odd trace.
        name: String,
        /// Its image (as displayed: an identity is 40 bytes, too large for an error).
        found: String,
        /// The first trace.
        first: String,
        /// The first trace's image.
        expected: String,
    },
}

fn set_aside_note(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!("; {n} of failed tasks are set aside (*.{TRACE_EXTENSION}.{FAILED_SUFFIX})"),
    }
}

/// Trace files found in the inputs.
#[derive(Clone, Debug, Default)]
pub struct TraceFiles {
    /// The files to load, in order: each input's, a directory's sorted.
    pub files: Vec<PathBuf>,
    /// Traces of failed tasks found in the directories and left out.
    pub set_aside: Vec<PathBuf>,
}

/// Expands directories into their trace files (sorted), keeping files as given.
pub fn trace_files(inputs: &[PathBuf]) -> Result<TraceFiles, CorpusError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| CorpusError::Io { path, error }
    };
    let mut out = TraceFiles::default();
    for input in inputs {
        if !std::fs::metadata(input).map_err(io(input))?.is_dir() {
            out.files.push(input.clone());
            continue;
        }
        let mut found = Vec::new();
        let mut set_aside = Vec::new();
        for entry in std::fs::read_dir(input).map_err(io(input))? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let ext = path.extension().and_then(OsStr::to_str);
            if ext.is_some_and(|e| e == TRACE_EXTENSION || e == "csv") {
                found.push(path);
            } else if ext == Some(FAILED_SUFFIX) {
                set_aside.push(path);
            }
        }
        found.sort();
        set_aside.sort();
        if found.is_empty() {
            return Err(CorpusError::NoTraces {
                dir: input.clone(),
                set_aside: set_aside.len(),
            });
        }
        out.files.extend(found);
        out.set_aside.extend(set_aside);
    }
    Ok(out)
}

/// Loads one trace: CSV by its extension, else the binary form.
pub fn load_trace(path: &Path) -> Result<Trace, CorpusError> {
    if path.extension().is_some_and(|e| e == "csv") {
        let text = read_text(path, "csv trace", MAX_TEXT_LEN).map_err(TraceError::from)?;
        Ok(Trace::from_csv(path, &text, None)?)
    } else {
        Ok(Trace::load(path)?)
    }
}

/// Loads every file, each named by its path; `loaded()` is called after each.
pub fn load_traces(
    files: &[PathBuf],
    mut loaded: impl FnMut(),
) -> Result<Vec<(String, Trace)>, CorpusError> {
    files
        .iter()
        .map(|f| {
            let trace = load_trace(f)?;
            loaded();
            Ok((f.display().to_string(), trace))
        })
        .collect()
}

/// Checks that every trace is of `bundle`'s image, or without a bundle of the first trace's.
pub fn check_images(
    bundle: Option<&Bundle>,
    traces: &[(String, Trace)],
) -> Result<(), CorpusError> {
    let Some((first, first_trace)) = traces.first() else {
        return Ok(());
    };
    for (name, t) in traces {
        match bundle {
            Some(b) => b.check_trace(Path::new(name), t)?,
            None if t.image != first_trace.image => {
                return Err(CorpusError::OtherImage {
                    name: name.clone(),
                    found: t.image.to_string(),
                    first: first.clone(),
                    expected: first_trace.image.to_string(),
                })
            }
            None => {}
        }
    }
    Ok(())
}

/// How many of `traces` trained `bundle`, known by content ([`Trace::content_digest`]: the
/// image identity and every record), not by file name: `traces/test/x-1` may reuse a training
/// trace's name with other contents, and a renamed copy of a training trace is still one.
pub fn trained_on(bundle: &Bundle, traces: &[(String, Trace)]) -> usize {
    let mut trained = bundle.meta.digests.clone();
    trained.sort_unstable();
    traces
        .iter()
        .filter(|(_, t)| trained.binary_search(&t.content_digest()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthImage, SynthParams};

    #[test]
    fn directories_give_their_traces_sorted_and_failed_ones_apart() {
        let dir = tempfile::tempdir().unwrap();
        let img = SynthImage::new(SynthParams::new(8 << 20, 2));
        let (a, b) = (img.task_run(0, 1, 1), img.task_run(1, 1, 2));
        b.save(&dir.path().join("b-1.vmtrace")).unwrap();
        std::fs::write(dir.path().join("a-1.csv"), a.to_csv()).unwrap();
        b.save(&dir.path().join("b-2.vmtrace.failed")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let found = trace_files(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = found
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a-1.csv", "b-1.vmtrace"]);
        assert_eq!(found.set_aside, [dir.path().join("b-2.vmtrace.failed")]);
        let traces = load_traces(&found.files, || {}).unwrap();
        assert_eq!(traces[0].1.records, a.records);
        assert!(check_images(None, &traces).is_ok());

        let only_failed = tempfile::tempdir().unwrap();
        b.save(&only_failed.path().join("b-1.vmtrace.failed"))
            .unwrap();
        let e = trace_files(&[only_failed.path().to_owned()]).unwrap_err();
        assert!(
            e.to_string().contains("1 of failed tasks are set aside"),
            "{e}"
        );
    }

    /// Issue 13: the held-out set reused the training names (`traces/test/compile-1` beside
    /// `traces/train/compile-1`, other recordings) and eval warned that it was trained on. The
    /// content decides: same names with other contents are no overlap, a renamed copy is.
    #[test]
    fn overlap_is_found_by_content_not_by_name() {
        use crate::profile::BundleParams;
        let img = SynthImage::new(SynthParams::new(8 << 20, 2));
        let train: Vec<(String, Trace)> = (0..2)
            .map(|task| {
                (
                    format!("train/t{task}-1.vmtrace"),
                    img.task_run(task, 1, task as u64),
                )
            })
            .collect();
        let bundle = BundleParams::new(4096)
            .check()
            .unwrap()
            .fit(&train, |_| {})
            .unwrap();
        assert_eq!(trained_on(&bundle, &train), 2);
        // The same names, other runs.
        let test: Vec<(String, Trace)> = (0..2)
            .map(|task| {
                (
                    train[task].0.clone(),
                    img.task_run(task, 5, 50 + task as u64),
                )
            })
            .collect();
        assert_ne!(test[0].1.records, train[0].1.records);
        assert_eq!(trained_on(&bundle, &test), 0);
        // A training trace under another name and run number is still a training trace.
        let copy = Trace {
            run: 9,
            label: "renamed".into(),
            ..train[1].1.clone()
        };
        let mixed = vec![test[0].clone(), ("test/renamed-9.vmtrace".into(), copy)];
        assert_eq!(trained_on(&bundle, &mixed), 1);
    }

    #[test]
    fn traces_of_two_images_are_refused() {
        let one = SynthImage::new(SynthParams::new(8 << 20, 2).seed(1));
        let two = SynthImage::new(SynthParams::new(8 << 20, 2).seed(2));
        let traces = vec![
            ("a".to_string(), one.task_run(0, 1, 1)),
            ("b".to_string(), two.task_run(0, 1, 1)),
        ];
        let e = check_images(None, &traces).unwrap_err();
        assert!(
            e.to_string().starts_with("b: trace of another image"),
            "{e}"
        );
    }
}
