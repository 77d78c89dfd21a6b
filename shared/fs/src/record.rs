//! Recording: serve an image through FUSE and log every access into a [`Trace`].
//!
//! A [`Recording`] mounts an [`ImageFs`] over the raw image (direct I/O, so every access reaches
//! us; writes go to a throwaway [`Overlay`], so the image is never modified) with a
//! [`Recorder`] as its observer. The trace file is reserved when recording starts (run numbers
//! count up and never overwrite) and checkpointed atomically every couple of seconds while new
//! accesses arrive, so a crash loses at most the last interval; [`Recording::finish`] unmounts
//! and writes the final trace.
//!
//! Sessions switch task with a `mark TASK` line written to the control file
//! ([`CONTROL_FILE`](crate::CONTROL_FILE)) and end with `stop`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::image_fs::{AccessObserver, ImageFs, ImageFsOptions, PRISTINE_WAIT};
use crate::mount::{self, Access, MountError, MountParams, Mounted, Unmount, UNMOUNT_WAIT};
use crate::overlay::{Overlay, OverlayError};
use crate::source::FileSource;
use vmt_formats::image::ImageId;
use vmt_formats::trace::{next_run_path, Op, Record, Trace, TraceError, TraceKind};

/// How often a recording in progress is saved.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A task or session name that cannot be a file name or a label.
    #[error("invalid task name {name:?}: {reason}")]
    BadTaskName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The output directory or trace file could not be created.
    #[error("{}: {error}", path.display())]
    Output {
        /// The path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The image could not be opened.
    #[error("image {}: {error}", path.display())]
    Image {
        /// The image.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Mounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The throwaway overlay could not be created.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// Saving the trace failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// More distinct task labels than a trace can hold.
    #[error("a session can hold at most {} task labels", u16::MAX)]
    TooManyTasks,
}

/// Checks that `name` can be a task label and part of a file name.
pub fn validate_task_name(name: &str) -> Result<(), RecordError> {
    let bad = |reason| {
        Err(RecordError::BadTaskName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 100 {
        return bad("it is longer than 100 bytes");
    }
    if name.starts_with('.') {
        return bad("it starts with a dot");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace())
    {
        return bad("it contains a slash, whitespace or a control character");
    }
    Ok(())
}

struct RecorderState {
    records: Vec<Record>,
    tasks: Vec<String>,
    current: u16,
    /// Records not yet in a checkpoint.
    dirty: bool,
}

/// Collects accesses with microsecond times since the recording started. The time is taken
/// under the lock, so records are in time order whatever thread observed them.
pub struct Recorder {
    start: Instant,
    state: Mutex<RecorderState>,
}

impl Recorder {
    /// A recorder whose first task is `first_task`.
    pub fn new(first_task: &str) -> Recorder {
        Recorder {
            start: Instant::now(),
            state: Mutex::new(RecorderState {
                records: Vec::with_capacity(1 << 16),
                tasks: vec![first_task.to_string()],
                current: 0,
                dirty: true,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        // A panic elsewhere must not lose the trace: keep using the data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts task `name`: accesses from now on carry its label.
    pub fn mark(&self, name: &str) -> Result<(), RecordError> {
        validate_task_name(name)?;
        let mut s = self.lock();
        let index = match s.tasks.iter().position(|t| t == name) {
            Some(i) => i,
            None => {
                s.tasks.push(name.to_string());
                s.tasks.len() - 1
            }
        };
        s.current = u16::try_from(index).map_err(|_| RecordError::TooManyTasks)?;
        Ok(())
    }

    /// Number of accesses so far.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records and task labels so far, if anything changed since the last call with `only_new`.
    fn take_snapshot(&self, only_new: bool) -> Option<(Vec<Record>, Vec<String>)> {
        let mut s = self.lock();
        if only_new && !s.dirty {
            return None;
        }
        s.dirty = false;
        Some((s.records.clone(), s.tasks.clone()))
    }
}

impl AccessObserver for Arc<Recorder> {
    fn observe(&self, op: Op, offset: u64, len: u32) {
        let mut s = self.lock();
        let t_us = self.start.elapsed().as_micros() as u64;
        let task = s.current;
        s.records.push(Record {
            t_us,
            op,
            offset,
            len,
            task,
        });
        s.dirty = true;
    }
}

/// What a recording is of, and where it goes.
#[derive(Clone, Debug)]
pub struct RecordingParams {
    /// The raw image (never modified).
    pub image: PathBuf,
    /// Its identity (see [`IdCache`](vmt_formats::image::IdCache)).
    pub image_id: ImageId,
    /// Directory of trace files, created if missing.
    pub out_dir: PathBuf,
    /// The task label (task recordings) or session name (sessions).
    pub label: String,
    /// One task, or a session with marks.
    pub kind: TraceKind,
    /// For sessions: the label of accesses before the first mark.
    pub first_task: String,
    /// Where to mount; `None` makes a temporary directory.
    pub mountpoint: Option<PathBuf>,
    /// FUSE worker threads.
    pub threads: usize,
    /// Who besides the recording user may use the mount (the image, and the control file,
    /// which stays its owner's).
    pub access: Access,
}

/// A recording in progress. See the module doc.
pub struct Recording {
    mounted: Option<Mounted>,
    recorder: Arc<Recorder>,
    stop_requested: Arc<AtomicBool>,
    trace_path: PathBuf,
    served_path: PathBuf,
    template: Trace,
    checkpointer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    _temp_mountpoint: Option<tempfile::TempDir>,
}

impl Recording {
    /// Reserves the trace file, mounts the image and starts checkpointing.
    pub fn start(params: RecordingParams) -> Result<Recording, RecordError> {
        validate_task_name(&params.label)?;
        if params.kind == TraceKind::Session {
            validate_task_name(&params.first_task)?;
        }
        let out_err = |path: &Path| {
            let path = path.to_owned();
            move |source| RecordError::Output {
                path,
                error: source,
            }
        };
        std::fs::create_dir_all(&params.out_dir).map_err(out_err(&params.out_dir))?;
        let source = FileSource::open(&params.image).map_err(|source| RecordError::Image {
            path: params.image.clone(),
            error: source,
        })?;
        // Reserve the run number: create the file exclusively, retrying if another recorder
        // took the same number meanwhile.
        let (run, trace_path) = loop {
            let (run, path) =
                next_run_path(&params.out_dir, &params.label).map_err(out_err(&params.out_dir))?;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => break (run, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(out_err(&path)(e)),
            }
        };
        let result = Self::mount_and_run(params, source, run, trace_path.clone());
        if result.is_err() {
            let _ = std::fs::remove_file(&trace_path);
        }
        result
    }

    fn mount_and_run(
        params: RecordingParams,
        source: FileSource,
        run: u32,
        trace_path: PathBuf,
    ) -> Result<Recording, RecordError> {
        let (temp_mountpoint, mountpoint) = match &params.mountpoint {
            Some(m) => (None, m.clone()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("vmt-record-")
                    .tempdir()
                    .map_err(|source| RecordError::Output {
                        path: std::env::temp_dir(),
                        error: source,
                    })?;
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        let first = match params.kind {
            TraceKind::Task => params.label.clone(),
            TraceKind::Session => params.first_task.clone(),
        };
        let recorder = Arc::new(Recorder::new(&first));
        let stop_requested = Arc::new(AtomicBool::new(false));
        let file_name = params
            .image
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_else(|| "image".into());
        let overlay = Arc::new(Overlay::temporary(params.image_id)?);
        let mut fs = ImageFs::new(
            source,
            overlay,
            recorder.clone(),
            ImageFsOptions {
                file_name: file_name.clone(),
                size: params.image_id.size,
                direct_io: true,
                // Never waits: the local image is present everywhere.
                pristine_wait: PRISTINE_WAIT,
                read_timeout: None,
            },
        );
        if params.kind == TraceKind::Session {
            let (rec, stop) = (recorder.clone(), stop_requested.clone());
            fs = fs.with_control(Box::new(move |line| {
                match line.split_once(' ').unwrap_or((line, "")) {
                    ("mark", task) => rec.mark(task.trim()).map_err(|e| e.to_string()),
                    ("stop", _) => {
                        stop.store(true, Ordering::SeqCst);
                        Ok(())
                    }
                    _ => Err(format!("unknown control command {line:?}")),
                }
            }));
        }
        let mount_params = MountParams {
            fs_name: "vmt-record".into(),
            threads: params.threads,
            access: params.access,
        };
        let mounted = mount::mount(Arc::new(fs), &mountpoint, &mount_params)?;
        let template = Trace {
            image: params.image_id,
            kind: params.kind,
            label: params.label.clone(),
            run,
            start_unix_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            recorder: format!("vmt-record {}", env!("CARGO_PKG_VERSION")),
            tasks: Vec::new(),
            records: Vec::new(),
        };
        let mut recording = Recording {
            served_path: mountpoint.join(&file_name),
            mounted: Some(mounted),
            recorder,
            stop_requested,
            trace_path,
            template,
            checkpointer: None,
            _temp_mountpoint: temp_mountpoint,
        };
        recording.save(false)?;
        recording.start_checkpoints();
        Ok(recording)
    }

    fn start_checkpoints(&mut self) {
        let (tx, rx) = mpsc::channel::<()>();
        let recorder = self.recorder.clone();
        let template = self.template.clone();
        let path = self.trace_path.clone();
        let handle = std::thread::Builder::new()
            .name("vmt-checkpoint".into())
            .spawn(move || {
                // Wake every interval until the sender is dropped or signals.
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    if let Err(e) = save_snapshot(&recorder, &template, &path, true) {
                        tracing::warn!("checkpoint of {}: {e}", path.display());
                    }
                }
            })
            .expect("spawn checkpoint thread");
        self.checkpointer = Some((tx, handle));
    }

    fn save(&self, only_new: bool) -> Result<(), TraceError> {
        save_snapshot(&self.recorder, &self.template, &self.trace_path, only_new)
    }

    /// The image file as served by the mount (what tasks should open).
    pub fn served_path(&self) -> &Path {
        &self.served_path
    }

    /// The mount's directory.
    pub fn mountpoint(&self) -> &Path {
        self.mounted
            .as_ref()
            .map_or(Path::new(""), |m| m.mountpoint())
    }

    /// Where the trace is written.
    pub fn trace_path(&self) -> &Path {
        &self.trace_path
    }

    /// Accesses recorded so far.
    pub fn accesses(&self) -> usize {
        self.recorder.len()
    }

    /// Whether `stop` was written to the control file.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    /// Starts task `name` (sessions).
    pub fn mark(&self, name: &str) -> Result<(), RecordError> {
        self.recorder.mark(name)
    }

    /// Unmounts and writes the final trace. The trace is written even if unmounting failed.
    pub fn finish(mut self) -> Result<Trace, RecordError> {
        let unmounted = self.mounted.take().map(|m| m.unmount(UNMOUNT_WAIT));
        if let Some((tx, handle)) = self.checkpointer.take() {
            drop(tx);
            let _ = handle.join();
        }
        self.save(false)?;
        match unmounted {
            Some(Err(e)) => tracing::warn!("unmount: {e}"),
            Some(Ok(u)) if u.how == Unmount::Lazy => tracing::warn!(
                "the image was still open (a loop device, a reader): the mount was detached lazily"
            ),
            _ => {}
        }
        Ok(Trace::load(&self.trace_path)?)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // An early return must still leave no mount behind and the trace saved.
        if let Some(m) = self.mounted.take() {
            let _ = m.unmount(UNMOUNT_WAIT);
        }
        if let Some((tx, handle)) = self.checkpointer.take() {
            drop(tx);
            let _ = handle.join();
            let _ = self.save(false);
        }
    }
}

fn save_snapshot(
    recorder: &Recorder,
    template: &Trace,
    path: &Path,
    only_new: bool,
) -> Result<(), TraceError> {
    let Some((records, tasks)) = recorder.take_snapshot(only_new) else {
        return Ok(());
    };
    // Labels in first-use order: a session's label list only names tasks that have accesses
    // or were marked, and a task trace names exactly its own label.
    let trace = Trace {
        records,
        tasks,
        ..template.clone()
    };
    trace.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names() {
        assert!(validate_task_name("compile-c_2").is_ok());
        for bad in ["", "a/b", "a b", ".hidden", "x\n"] {
            assert!(validate_task_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recorder_labels_and_orders_records() {
        let rec = Arc::new(Recorder::new("boot"));
        rec.observe(Op::Read, 0, 4096);
        rec.mark("edit").unwrap();
        rec.observe(Op::Write, 4096, 10);
        rec.mark("boot").unwrap();
        rec.observe(Op::Read, 8192, 1);
        let (records, tasks) = rec.take_snapshot(true).unwrap();
        assert_eq!(tasks, vec!["boot", "edit"]);
        assert_eq!(
            records.iter().map(|r| r.task).collect::<Vec<_>>(),
            vec![0, 1, 0]
        );
        assert!(records.windows(2).all(|w| w[0].t_us <= w[1].t_us));
        assert!(
            rec.take_snapshot(true).is_none(),
            "nothing new since the last snapshot"
        );
        assert!(rec.mark("bad name").is_err());
    }
}
