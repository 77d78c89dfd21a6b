//! [`Runtime`]: an appliance image served through FUSE while it streams from the swarm.
//!
//! The streaming core ([`Streaming`]: engine, planner, filesystem core, reply pool) is shared
//! with the headless client; this file adds only the FUSE mount on top.

use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use vmt_fs::{FuseReply, MountParams, Mounted, Unmounted, UNMOUNT_WAIT};
use vmt_swarm::Engine;

use crate::live::LiveInputs;
use crate::params::{RuntimeError, RuntimeParams};
use crate::report::Status;
use crate::streaming::Streaming;

/// A mounted, streaming appliance. See the crate doc.
pub struct Runtime {
    core: Streaming<FuseReply>,
    mounted: Option<Mounted>,
    served: PathBuf,
}

impl Runtime {
    /// Loads everything, starts the engine (accepting peers on `listener`), and mounts.
    pub async fn start(
        params: RuntimeParams,
        listener: Option<TcpListener>,
    ) -> Result<Runtime, RuntimeError> {
        // Refuse a bad mountpoint before any network or disk work.
        vmt_fs::check_mountpoint(&params.mountpoint)?;
        let mut core = Streaming::start(&params, listener).await?;
        let mount = MountParams {
            fs_name: "vmt-run".into(),
            threads: params.threads,
            access: params.access,
        };
        let mounted = match vmt_fs::mount(core.fs().clone(), &params.mountpoint, &mount) {
            Ok(m) => m,
            Err(e) => {
                core.abort();
                let _ = core.engine().shutdown().await;
                return Err(e.into());
            }
        };
        let file_name = core.engine().torrent().name().to_string();
        Ok(Runtime {
            served: params.mountpoint.join(file_name),
            core,
            mounted: Some(mounted),
        })
    }

    /// The image file as the mount shows it.
    pub fn served_path(&self) -> &Path {
        &self.served
    }

    /// The engine (for its listen address and stats).
    pub fn engine(&self) -> &Engine {
        self.core.engine()
    }

    /// A snapshot of progress, stalls, beliefs and traffic.
    pub fn status(&self) -> Status {
        self.core.status()
    }

    /// The profiles' names, in the belief's order.
    pub(crate) fn profile_names(&self) -> &[String] {
        self.core.profile_names()
    }

    /// The image's piece and block lengths.
    pub(crate) fn geometry(&self) -> (u32, u32) {
        self.core.geometry()
    }

    /// Fills the live page's inputs (piece map, belief, longest waits), each under its own
    /// short lock and never two at once, and returns the status.
    pub(crate) fn sample(&self, into: &mut LiveInputs) -> Status {
        self.core.sample(into)
    }

    /// Stops in the order that loses nothing: stop planning, answer every parked read (`EIO`:
    /// the mount is going away), unmount (lazily if something holds the image), make the
    /// overlay durable, stop the engine (which persists the piece bitmap), wait for the
    /// runtime's tasks; returns the final status. Every step is bounded: a mount held in
    /// another mount namespace does not hold up the shutdown.
    pub async fn shutdown(self) -> Result<Status, RuntimeError> {
        let (status, result) = self.stop().await;
        result.map(|()| status)
    }

    /// [`Runtime::shutdown`], with the final status even when a step failed.
    pub(crate) async fn stop(mut self) -> (Status, Result<(), RuntimeError>) {
        self.core.stop_serving().await;
        let mut unmounted: Option<Result<Unmounted, String>> = None;
        if let Some(m) = self.mounted.take() {
            let done = tokio::task::spawn_blocking(move || m.unmount(UNMOUNT_WAIT)).await;
            unmounted = Some(match done {
                Ok(Ok(u)) => Ok(u),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            });
        }
        self.core
            .finish(|status| match unmounted {
                Some(Ok(u)) => {
                    status.unmount = Some(u.how.as_str().to_string());
                    status.fuse_left_behind = u.left_behind;
                }
                Some(Err(e)) => status.unmount = Some(format!("failed: {e}")),
                None => {}
            })
            .await
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // An error path must not leave a mount behind.
        self.core.abort();
        if let Some(m) = self.mounted.take() {
            let _ = m.unmount(UNMOUNT_WAIT);
        }
    }
}
