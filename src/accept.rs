//! Accepting connections on a listener, until shutdown, backing off on errors.
//!
//! Every listener of the server (DNS over TCP, the admin socket, the HTTP endpoint) takes
//! its next connection here. An accept error (out of file descriptors, a connection reset
//! before it was accepted) concerns one moment, so it is logged, the loop waits
//! [`BACKOFF`] instead of spinning, and goes on.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Pause after a failed accept.
pub const BACKOFF: Duration = Duration::from_millis(100);

/// The next connection `accept` gives, or `None` once `shutdown` fires; failures are
/// logged as `what` ("tcp", "admin socket") and retried after [`BACKOFF`].
pub async fn next<T, F, A>(what: &str, shutdown: &CancellationToken, mut accept: F) -> Option<T>
where
    F: FnMut() -> A,
    A: Future<Output = io::Result<T>>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(BACKOFF) => {}
                    }
                }
            },
        }
    }
}
