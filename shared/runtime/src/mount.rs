//! `vmt-run mount`: a [`Runtime`] from start to report.
//!
//! [`run`] checks that the report can be written, starts the runtime on the listeners it is
//! handed, serves the live [`Status`] as JSON if asked, reports [`MountEvent`]s for the caller
//! to draw until the cancellation token fires, then shuts down (bounded) and writes the
//! report, also when a step of the shutdown failed. The defaults of the flags the user
//! may leave out are here too ([`default_strategy`], [`default_data_dir`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vmt_model::scheduler::Strategy;

use crate::{paths, serve_status, Runtime, RuntimeError, RuntimeParams, Status};

/// How often a [`MountEvent::Status`] is reported: often enough for a live display.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(200);

/// The strategy when none is given: `markov` with a bundle, else `stream`.
pub fn default_strategy(has_bundle: bool) -> Strategy {
    if has_bundle {
        Strategy::Markov
    } else {
        Strategy::Stream
    }
}

/// The data directory when none is given: `T.vmt-data` beside the torrent `T`.
pub fn default_data_dir(torrent: &Path) -> PathBuf {
    paths::data_dir_for(torrent)
}

/// The sockets and files of a mount besides its [`RuntimeParams`].
#[derive(Debug, Default)]
pub struct MountIo {
    /// Accept peers here (other clients can then fetch from us).
    pub listener: Option<TcpListener>,
    /// Serve the live status as JSON over HTTP here.
    pub status: Option<TcpListener>,
    /// Write the final status here as JSON.
    pub report: Option<PathBuf>,
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// No peer to dial, none can dial us, and the torrent has no tracker.
    #[error(
        "no peers: give --peer HOST:PORT or --web-seed URL (or --listen for peers to dial us; \
         the torrent has no trackers and no web seeds)"
    )]
    NoPeers,
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The report's directory is missing or not writable: found at start, not after the
    /// whole session.
    #[error("the report {} cannot be written: its directory is missing or refuses a new file", path.display())]
    ReportPath {
        /// The report file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be written.
    #[error("writing the report {}", path.display())]
    Report {
        /// The report file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a mount reports as it goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum MountEvent<'a> {
    /// The image is mounted and served.
    Serving {
        /// The image file as the mount shows it.
        path: &'a Path,
        /// The strategy.
        strategy: Strategy,
    },
    /// The live status, every [`STATUS_INTERVAL`].
    Status(&'a Status),
}

/// Mounts, serves until `cancel` fires, unmounts, and returns the final status (also written
/// to `io.report`). See the module doc.
pub async fn run(
    params: RuntimeParams,
    io: MountIo,
    cancel: CancellationToken,
    on: impl FnMut(MountEvent<'_>),
) -> Result<Status, MountError> {
    serve(params, io, on, |_| cancel.cancelled_owned())
        .await
        .map(|(status, ())| status)
}

/// Mounts, runs `session` on the served image file while reporting status, and unmounts once
/// the session ends; returns the final status (also written to `io.report`) and what the
/// session returned. `vmt-run mount`'s session waits for a signal; `vmt-run boot`'s runs a VM
/// (which must be gone before the unmount, so the session owns the stopping).
pub async fn serve<F, Fut>(
    params: RuntimeParams,
    io: MountIo,
    mut on: impl FnMut(MountEvent<'_>),
    session: F,
) -> Result<(Status, Fut::Output), MountError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future,
{
    // Data comes from --peer, from peers dialling us, from the torrent's trackers, or from
    // web seeds (the torrent's or --web-seed).
    if params.peers.is_empty()
        && io.listener.is_none()
        && params.web_seeds.is_empty()
        && vmt_swarm::Torrent::load(&params.torrent)
            .is_ok_and(|t| t.trackers().is_empty() && t.web_seeds().is_empty())
    {
        return Err(MountError::NoPeers);
    }
    if let Some(path) = &io.report {
        check_report_path(path).map_err(|source| MountError::ReportPath {
            path: path.clone(),
            source,
        })?;
    }
    let strategy = params.strategy;
    let runtime = Arc::new(Runtime::start(params, io.listener).await?);
    on(MountEvent::Serving {
        path: runtime.served_path(),
        strategy,
    });
    // Stops the status server when the session ends.
    let done = CancellationToken::new();
    if let Some(l) = io.status {
        // Weak: shutting down needs the runtime back from every holder.
        let rt = Arc::downgrade(&runtime);
        tokio::spawn(serve_status(l, rt, done.clone()));
    }
    let session = session(runtime.served_path().to_owned());
    tokio::pin!(session);
    let out = loop {
        tokio::select! {
            out = &mut session => break out,
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
        }
        on(MountEvent::Status(&runtime.status()));
    };
    done.cancel();
    // A status request in progress may hold the runtime for a moment.
    let mut runtime = runtime;
    let runtime = loop {
        match Arc::try_unwrap(runtime) {
            Ok(r) => break r,
            Err(shared) => {
                runtime = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let (report, stopped) = runtime.stop().await;
    if let Some(path) = io.report {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(std::io::Error::from)
            .and_then(|json| vmt_formats::envelope::write_atomically(&path, &json));
        if let Err(source) = written {
            if let Err(e) = stopped {
                tracing::error!("{e}");
            }
            return Err(MountError::Report { path, source });
        }
    }
    stopped?;
    Ok((report, out))
}

/// Checks that the report `path` can be written: its directory exists and takes a file.
fn check_report_path(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".vmt-report-check")
        .tempfile_in(dir)
        .map(drop)
}
