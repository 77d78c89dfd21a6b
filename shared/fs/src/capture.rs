//! One recording from start to end, as `vmt-record run` and `vmt-record session` make it:
//! identify the image, start a [`Recording`], then run the task (or wait for the session's
//! `stop`), finish, and say how it ended.
//!
//! [`CaptureParams`] are checked without touching the system ([`CaptureParams::check`]), then
//! [`ValidCaptureParams::run`] does the work. Signals are the caller's: it passes the flag its
//! handlers set, and a set flag stops the task (SIGTERM, then SIGKILL after [`STOP_GRACE`]) or
//! ends the session, with the trace saved either way.
//!
//! A task that fails on its own (a non-zero exit, or a signal nobody here sent) still leaves the
//! accesses it made, but they are not a run of the task: its trace is set aside under
//! [`failed_trace_path`], which `vmt-train fit` does not read, and the outcome says so.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::inode::CONTROL_FILE;
use crate::mount::Access;
use crate::record::{validate_task_name, RecordError, Recording, RecordingParams};
use vmt_formats::identify::{identify_image, IdentifyError};
use vmt_formats::image::ImageId;
use vmt_formats::trace::{failed_trace_path, Trace, TraceKind};

/// How long a task may take to exit after SIGTERM before it is killed: long enough for a VM to
/// shut down cleanly, short enough that Ctrl-C still feels like it works.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// FUSE worker threads of a recording mount unless told otherwise: a task's reads are mostly
/// sequential, and a few workers keep a VM's parallel reads from queueing behind each other.
pub const DEFAULT_RECORD_THREADS: usize = 4;

/// How often the stop flag and the task are looked at: fast enough that a stop feels
/// immediate, slow enough to cost nothing.
const POLL: Duration = Duration::from_millis(20);

/// What is recorded.
#[derive(Clone, Debug)]
pub enum CaptureKind {
    /// One run of `task`: `cmd` runs with `VMT_IMAGE` set to the served image and
    /// `VMT_MOUNTPOINT` to the mount, and the recording ends when it exits.
    Task {
        /// The task label (and trace file name).
        task: String,
        /// The program and its arguments.
        cmd: Vec<OsString>,
    },
    /// A session of marked tasks on one mount, until `stop` is written to its control file.
    Session {
        /// The session name (the trace file name).
        name: String,
        /// The label of accesses before the first mark.
        first_task: String,
    },
}

/// What to record and where; see [`CaptureParams::check`].
#[derive(Clone, Debug)]
pub struct CaptureParams {
    /// The raw image (never modified).
    pub image: PathBuf,
    /// Its SHA-256 if known, to skip hashing it; `None` uses the cache or hashes.
    pub image_sha256: Option<String>,
    /// Directory of trace files, created if missing.
    pub out_dir: PathBuf,
    /// Where to mount; `None` makes a temporary directory.
    pub mountpoint: Option<PathBuf>,
    /// FUSE worker threads.
    pub threads: usize,
    /// A task run or a session.
    pub kind: CaptureKind,
    /// Who may use the mount besides its owner.
    pub access: Access,
}

/// [`CaptureParams`] whose names are valid and whose task has a command.
#[derive(Clone, Debug)]
pub struct ValidCaptureParams(CaptureParams);

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The image cannot be identified.
    #[error(transparent)]
    Identify(#[from] IdentifyError),
    /// A bad name, or the recording could not start or be saved (boxed: it is large and
    /// this path is cold).
    #[error(transparent)]
    Record(Box<RecordError>),
    /// A task run without a command.
    #[error("no command to run")]
    NoCommand,
    /// The task could not be started.
    #[error("running {program:?}: {error}")]
    Spawn {
        /// The program.
        program: OsString,
        /// The OS error.
        error: std::io::Error,
    },
    /// The task could not be waited for.
    #[error("waiting for the task: {0}")]
    Wait(std::io::Error),
    /// No session's control file at the mountpoint given.
    #[error("no vmt-record session is mounted at {}", .0.display())]
    NoSession(PathBuf),
    /// The control file could not be written.
    #[error("writing {}: {error}", path.display())]
    Control {
        /// The control file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The failed task's trace could not be moved aside.
    #[error("setting aside {}: {error}", path.display())]
    SetAside {
        /// The trace.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl From<RecordError> for CaptureError {
    fn from(e: RecordError) -> CaptureError {
        CaptureError::Record(Box::new(e))
    }
}

/// How a recorded task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEnd {
    /// It exited 0.
    Succeeded,
    /// It exited non-zero (`code`), or was killed by a signal nobody here sent (`code` is
    /// 128 + the signal, as shells report it). Its trace was set aside.
    Failed {
        /// The exit code to pass on.
        code: u8,
    },
    /// A stop was asked for and the task ended after it (`code` as for `Failed`). Its trace is
    /// kept: the user chose where it ends.
    Stopped {
        /// The exit code to pass on.
        code: u8,
    },
}

impl TaskEnd {
    /// The exit code to pass on, as the task's own.
    pub fn code(self) -> u8 {
        match self {
            TaskEnd::Succeeded => 0,
            TaskEnd::Failed { code } | TaskEnd::Stopped { code } => code,
        }
    }
}

/// A finished capture.
#[derive(Debug)]
pub struct Captured {
    /// The trace as saved.
    pub trace: Trace,
    /// Where it is: the reserved `NAME-<run>.vmtrace`, or its [`failed_trace_path`].
    pub path: PathBuf,
    /// How the task ended; `None` for a session.
    pub task: Option<TaskEnd>,
}

/// What a capture tells its caller as it goes (to print, say).
#[derive(Debug)]
pub enum CaptureEvent<'a> {
    /// The image is mounted and the trace reserved.
    Started {
        /// The trace file.
        trace: &'a Path,
        /// The image as served (what tasks open).
        served: &'a Path,
        /// The mount.
        mountpoint: &'a Path,
    },
    /// A stop was asked for: the task was sent SIGTERM (SIGKILL after [`STOP_GRACE`]).
    Stopping,
}

// Kept here rather than beside the struct in `record.rs` while that file is being changed
// elsewhere; it belongs there.
impl RecordingParams {
    /// One run of task `label` of `image` into `out_dir`, on a temporary mount with
    /// [`DEFAULT_RECORD_THREADS`] workers.
    pub fn task(
        image: PathBuf,
        image_id: ImageId,
        out_dir: PathBuf,
        label: &str,
    ) -> RecordingParams {
        RecordingParams {
            image,
            image_id,
            out_dir,
            label: label.to_string(),
            kind: TraceKind::Task,
            first_task: label.to_string(),
            mountpoint: None,
            threads: DEFAULT_RECORD_THREADS,
            access: Access::Owner,
        }
    }
}

impl CaptureParams {
    /// Checks the names (task labels and file names) and that a task has a command.
    pub fn check(self) -> Result<ValidCaptureParams, CaptureError> {
        match &self.kind {
            CaptureKind::Task { task, cmd } => {
                validate_task_name(task)?;
                if cmd.is_empty() {
                    return Err(CaptureError::NoCommand);
                }
            }
            CaptureKind::Session { name, first_task } => {
                validate_task_name(name)?;
                validate_task_name(first_task)?;
            }
        }
        Ok(ValidCaptureParams(self))
    }
}

impl ValidCaptureParams {
    /// Identifies the image (`hashing(done, total)` while hashing), records, and returns the
    /// saved trace. `stop` is polled: once set, the task is stopped or the session ended.
    pub fn run(
        &self,
        stop: &AtomicBool,
        hashing: impl FnMut(u64, u64),
        mut events: impl FnMut(CaptureEvent<'_>),
    ) -> Result<Captured, CaptureError> {
        let p = &self.0;
        let image_id = identify_image(&p.image, p.image_sha256.as_deref(), hashing)?;
        let (label, kind, first_task) = match &p.kind {
            CaptureKind::Task { task, .. } => (task, TraceKind::Task, task),
            CaptureKind::Session { name, first_task } => (name, TraceKind::Session, first_task),
        };
        let recording = Recording::start(RecordingParams {
            kind,
            first_task: first_task.clone(),
            mountpoint: p.mountpoint.clone(),
            threads: p.threads,
            access: p.access,
            ..RecordingParams::task(p.image.clone(), image_id, p.out_dir.clone(), label)
        })?;
        events(CaptureEvent::Started {
            trace: recording.trace_path(),
            served: recording.served_path(),
            mountpoint: recording.mountpoint(),
        });
        let path = recording.trace_path().to_owned();
        let end = match &p.kind {
            CaptureKind::Task { cmd, .. } => {
                let spawned = Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .env("VMT_IMAGE", recording.served_path())
                    .env("VMT_MOUNTPOINT", recording.mountpoint())
                    .spawn();
                let mut child = match spawned {
                    Ok(child) => child,
                    Err(error) => {
                        // Nothing ran: no trace, not even a failed one.
                        drop(recording);
                        let _ = std::fs::remove_file(&path);
                        return Err(CaptureError::Spawn {
                            program: cmd[0].clone(),
                            error,
                        });
                    }
                };
                Some(wait_task(&mut child, stop, &mut events)?)
            }
            CaptureKind::Session { .. } => {
                while !stop.load(Ordering::SeqCst) && !recording.stop_requested() {
                    std::thread::sleep(POLL);
                }
                None
            }
        };
        let trace = recording.finish()?;
        let path = match end {
            Some(TaskEnd::Failed { .. }) => set_aside(&path)?,
            _ => path,
        };
        Ok(Captured {
            trace,
            path,
            task: end,
        })
    }
}

/// Starts task `task` in the session mounted at `mountpoint`.
pub fn mark_task(mountpoint: &Path, task: &str) -> Result<(), CaptureError> {
    validate_task_name(task)?;
    control(mountpoint, &format!("mark {task}\n"))
}

/// Ends the session mounted at `mountpoint`: it unmounts and writes its trace.
pub fn stop_session(mountpoint: &Path) -> Result<(), CaptureError> {
    control(mountpoint, "stop\n")
}

/// Writes one command line to the session's control file.
fn control(mountpoint: &Path, line: &str) -> Result<(), CaptureError> {
    let path = mountpoint.join(CONTROL_FILE);
    if !path.exists() {
        return Err(CaptureError::NoSession(mountpoint.to_owned()));
    }
    std::fs::write(&path, line).map_err(|error| CaptureError::Control { path, error })
}

/// Moves a failed task's trace to its [`failed_trace_path`]. The run number stays taken, so the
/// name is free; a hard link refuses to replace anything if it is not.
fn set_aside(path: &Path) -> Result<PathBuf, CaptureError> {
    let aside = failed_trace_path(path);
    let err = |error| CaptureError::SetAside {
        path: path.to_owned(),
        error,
    };
    std::fs::hard_link(path, &aside).map_err(err)?;
    std::fs::remove_file(path).map_err(err)?;
    Ok(aside)
}

/// Waits for the task; once `stop` is set, asks it to stop (SIGTERM), then kills it after
/// [`STOP_GRACE`].
fn wait_task(
    child: &mut Child,
    stop: &AtomicBool,
    events: &mut impl FnMut(CaptureEvent<'_>),
) -> Result<TaskEnd, CaptureError> {
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(CaptureError::Wait)? {
            let code = match (status.code(), status.signal()) {
                (Some(c), _) => c,
                (None, Some(sig)) => 128 + sig,
                _ => 1,
            }
            .clamp(0, 255) as u8;
            return Ok(match (code, deadline) {
                (_, Some(_)) => TaskEnd::Stopped { code },
                (0, None) => TaskEnd::Succeeded,
                (_, None) => TaskEnd::Failed { code },
            });
        }
        if stop.load(Ordering::SeqCst) {
            match deadline {
                None => {
                    events(CaptureEvent::Stopping);
                    // SAFETY: kill(2) of our own child's pid; no memory is involved.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    deadline = Some(Instant::now() + STOP_GRACE);
                }
                Some(d) if Instant::now() > d => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, cmd: &[&str]) -> CaptureParams {
        CaptureParams {
            image: "/nonexistent.img".into(),
            image_sha256: None,
            out_dir: "/nonexistent".into(),
            mountpoint: None,
            threads: 1,
            access: Access::Owner,
            kind: CaptureKind::Task {
                task: name.into(),
                cmd: cmd.iter().map(OsString::from).collect(),
            },
        }
    }

    #[test]
    fn check_refuses_bad_names_and_a_missing_command() {
        assert!(task("ok", &["true"]).check().is_ok());
        let e = task("a/b", &["true"]).check().unwrap_err();
        assert!(e.to_string().contains("invalid task name"), "{e}");
        let e = task("ok", &[]).check().unwrap_err();
        assert!(matches!(e, CaptureError::NoCommand), "{e}");
        let mut session = task("ok", &[]);
        session.kind = CaptureKind::Session {
            name: "s".into(),
            first_task: ".hidden".into(),
        };
        assert!(session.check().is_err());
    }

    fn end_of(script: &str, stop_after: Option<Duration>) -> TaskEnd {
        let mut child = Command::new("sh").args(["-c", script]).spawn().unwrap();
        let stop = &AtomicBool::new(false);
        std::thread::scope(|s| {
            if let Some(after) = stop_after {
                s.spawn(move || {
                    std::thread::sleep(after);
                    stop.store(true, Ordering::SeqCst);
                });
            }
            wait_task(&mut child, stop, &mut |_| {}).unwrap()
        })
    }

    #[test]
    fn a_task_ends_succeeded_failed_or_stopped() {
        assert_eq!(end_of("exit 0", None), TaskEnd::Succeeded);
        assert_eq!(end_of("exit 3", None), TaskEnd::Failed { code: 3 });
        assert_eq!(end_of("kill -9 $$", None), TaskEnd::Failed { code: 137 });
        let stopped = end_of("exec sleep 30", Some(Duration::from_millis(100)));
        assert_eq!(stopped, TaskEnd::Stopped { code: 143 });
        assert_eq!(stopped.code(), 143);
    }

    #[test]
    fn a_failed_trace_is_set_aside_without_replacing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-1.vmtrace");
        std::fs::write(&path, b"x").unwrap();
        let aside = set_aside(&path).unwrap();
        assert_eq!(aside, failed_trace_path(&path));
        assert!(!path.exists() && aside.exists());
        std::fs::write(&path, b"y").unwrap();
        assert!(set_aside(&path).is_err(), "an existing one is not replaced");
        assert_eq!(std::fs::read(&aside).unwrap(), b"x");
    }
}
