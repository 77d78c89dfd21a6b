//! The one way the runtime starts tasks: named, inside a tracing span (a child of the span
//! current where it was spawned, so a crowd's 128 runtimes in one process log under their
//! client's span), tracked, and stopped by one cancellation token, so shutdown can wait for
//! every one of them (up to a deadline) instead of leaving them running behind a returned
//! `shutdown`. A task is dropped at its next await once the token fires: final work (the last
//! overlay sync, the report) belongs to the shutdown sequence, not to a task.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The runtime's background tasks.
#[derive(Clone, Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// Cancelled when the tasks are told to stop.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Runs `fut` as task `name` until it ends or the tasks are stopped.
    pub fn spawn(&self, name: &'static str, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(
            async move {
                tokio::select! {
                    () = fut => tracing::trace!("task {name} finished"),
                    () = cancel.cancelled() => tracing::trace!("task {name} stopped"),
                }
            }
            .instrument(tracing::debug_span!("task", name))
            // The debug span is off at the default level: without this, so would the caller's.
            .in_current_span(),
        );
    }

    /// Tells every task to stop and waits for them, at most `deadline`; returns how many were
    /// still running then.
    pub async fn stop(&self, deadline: Duration) -> usize {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} runtime task(s) did not stop within {deadline:?}",
                self.tracker.len()
            );
        }
        self.tracker.len()
    }

    /// Tasks still running.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends on drop: tells the test the task's future is gone.
    struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.take().map(|tx| tx.send(()));
        }
    }

    #[tokio::test]
    async fn stop_ends_every_task_and_waits_for_it() {
        let tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn("forever", async move {
            let _guard = Dropped(Some(tx));
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        tasks.spawn("short", async {});
        tokio::task::yield_now().await;
        assert_eq!(tasks.running(), 1, "the short task ended on its own");
        assert_eq!(tasks.stop(Duration::from_secs(5)).await, 0);
        assert!(
            rx.await.is_ok(),
            "the endless task was dropped before stop returned"
        );
    }

    /// A task logs under the span current where it was spawned (in a crowd, its client's), at
    /// the default level too, where the task's own span is off.
    #[test]
    fn a_task_logs_under_the_span_it_was_spawned_in() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let tasks = Tasks::default();
                let span = tracing::warn_span!("client", id = 17);
                let _in = span.enter();
                let (tx, rx) = tokio::sync::oneshot::channel();
                tasks.spawn("watch", async move {
                    tracing::warn!("waited");
                    let _ = tx.send(());
                });
                drop(_in);
                rx.await.unwrap();
                tasks.stop(Duration::from_secs(5)).await;
            });
        });
        let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            log.contains("client{id=17}") && log.contains("waited"),
            "{log}"
        );
    }
}
