//! The loops the server cannot live without (DNS receive and accept loops, the admin and
//! metrics endpoints), watched: one that ends before shutdown, with an error or a panic,
//! stops the server with the reason instead of leaving it half alive.

use std::future::Future;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why a supervised loop ended.
#[derive(Debug, thiserror::Error)]
#[error("{what} stopped: {reason}")]
pub struct LoopFailed {
    /// Which loop, e.g. `udp 127.0.0.1:53`.
    pub what: String,
    pub reason: String,
}

/// The loops of one server.
pub struct Supervisor {
    loops: JoinSet<(String, Result<(), String>)>,
    shutdown: CancellationToken,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken) -> Supervisor {
        Supervisor {
            loops: JoinSet::new(),
            shutdown,
        }
    }

    /// Runs `task`, named `what`, until shutdown. It returns `Ok` only when shutdown asked
    /// it to; an `Err` says why it could not go on.
    pub fn spawn(
        &mut self,
        what: impl Into<String>,
        task: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let what = what.into();
        self.loops.spawn(async move { (what, task.await) });
    }

    /// Waits until shutdown, or until a loop fails (then cancels shutdown and says which).
    pub async fn watch(&mut self) -> Result<(), LoopFailed> {
        loop {
            let ended = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                ended = self.loops.join_next() => ended,
            };
            let failed = match ended {
                None => {
                    self.shutdown.cancelled().await;
                    return Ok(());
                }
                Some(Ok((_, Ok(())))) if self.shutdown.is_cancelled() => continue,
                Some(Ok((what, Ok(())))) => LoopFailed {
                    what,
                    reason: "ended unexpectedly".into(),
                },
                Some(Ok((what, Err(reason)))) => LoopFailed { what, reason },
                Some(Err(e)) => LoopFailed {
                    what: "a server loop".into(),
                    reason: if e.is_panic() {
                        "panicked".into()
                    } else {
                        e.to_string()
                    },
                },
            };
            self.shutdown.cancel();
            return Err(failed);
        }
    }

    /// Waits for the loops to notice shutdown, until `deadline`; those still busy then (an
    /// admin request waiting on a reload's hung read, say) are abandoned, and say so.
    pub async fn stop(mut self, deadline: tokio::time::Instant) {
        let all = async { while self.loops.join_next().await.is_some() {} };
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::warn!(
                "{} server loop(s) still busy at the shutdown deadline; abandoning them",
                self.loops.len()
            );
            self.loops.abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_loop_stops_the_server_with_its_reason() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let token = shutdown.clone();
        supervisor.spawn("healthy", async move {
            token.cancelled().await;
            Ok(())
        });
        supervisor.spawn("udp 127.0.0.1:53", async { Err("socket closed".into()) });
        let failed = supervisor.watch().await.unwrap_err();
        assert_eq!(
            failed.to_string(),
            "udp 127.0.0.1:53 stopped: socket closed"
        );
        assert!(shutdown.is_cancelled());
        supervisor
            .stop(tokio::time::Instant::now() + std::time::Duration::from_secs(5))
            .await;
    }

    #[tokio::test]
    async fn shutdown_is_not_a_failure() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let token = shutdown.clone();
        supervisor.spawn("loop", async move {
            token.cancelled().await;
            Ok(())
        });
        shutdown.cancel();
        assert!(supervisor.watch().await.is_ok());
        supervisor
            .stop(tokio::time::Instant::now() + std::time::Duration::from_secs(5))
            .await;
    }
}
