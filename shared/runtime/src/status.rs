//! The live status over HTTP: one JSON document per request.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::report::Status;

/// Serves [`Status`] as JSON to any HTTP request on `listener` until `cancel` fires, and waits
/// for the requests in progress; `status` returning `None` (the runtime is shutting down)
/// answers 503.
pub async fn serve_status(
    listener: TcpListener,
    status: impl Fn() -> Option<Status> + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let status = Arc::new(status);
    let requests = TaskTracker::new();
    loop {
        let (mut sock, _) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let status = status.clone();
        requests.spawn(async move {
            let mut buf = [0u8; 2048];
            // One request per connection; its content does not matter.
            let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
            let (code, body) = match status() {
                Some(st) => (
                    "200 OK",
                    serde_json::to_string_pretty(&st).unwrap_or_default(),
                ),
                None => ("503 Service Unavailable", "{}".to_string()),
            };
            let head = format!(
                "HTTP/1.0 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
    requests.close();
    // A request holds the runtime (through `status`) only while it writes; bounded by the
    // read timeout above and one small write.
    let _ = tokio::time::timeout(Duration::from_secs(5), requests.wait()).await;
}
