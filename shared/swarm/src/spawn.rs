//! The one way the engine starts tasks: named, inside a tracing span, errors logged, tracked so
//! shutdown can wait for them (after the shared cancellation token fires).

use std::fmt::Display;
use std::future::Future;

use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Spawns `fut` on `tasks` as `name`; an error is logged once at debug level, since peers
/// failing is normal operation, and anything the user must see is reported through stats.
pub(crate) fn spawn<F, E>(tasks: &TaskTracker, name: &'static str, span: tracing::Span, fut: F)
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    tasks.spawn(
        async move {
            match fut.await {
                Ok(()) => tracing::trace!("task {name} finished"),
                Err(e) => tracing::debug!("task {name} ended: {e:#}"),
            }
        }
        .instrument(span),
    );
}
