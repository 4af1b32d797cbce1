//! DNS over UDP: a fixed set of receive loops per socket, each answering in place.
//!
//! Work is bounded by construction: each loop handles one datagram at a time with buffers it
//! allocated once, and there is no task per datagram. When every loop is busy, datagrams wait
//! in the socket's receive buffer and the kernel drops what does not fit, which is the right
//! place to shed load. A loop reads until the socket is empty, and only then waits; its
//! straggler observations are handed over by size or age (see [`crate::stragglers`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::QueryPath;
use crate::stragglers::Recorder;
use crate::wire::{MAX_TCP_MESSAGE, Transport};

/// Largest datagram read whole; anything longer is cut by the kernel and then malformed.
const MAX_UDP_REQUEST: usize = 65535;
/// Datagrams answered in a row before the loop yields to other tasks on its thread.
const BURST: usize = 64;

/// One receive loop; run several per socket to use several cores. Ends with `Ok` at
/// shutdown, or with why the socket cannot be read any more.
pub async fn serve(
    socket: Arc<UdpSocket>,
    path: Arc<QueryPath>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut recorder = Recorder::new(path.ledger.as_ref());
    let mut request = vec![0u8; MAX_UDP_REQUEST];
    let mut response = Vec::with_capacity(MAX_TCP_MESSAGE);
    let mut burst = 0;
    loop {
        let (len, peer) = match socket.try_recv_from(&mut request) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let clock = path.handler.clock();
                recorder.flush_if_due(clock.coarse_mono_ms());
                burst = 0;
                // While idle, a batch is handed over when it falls due.
                let due = recorder
                    .due_ms()
                    .map(|due| Duration::from_millis(due.saturating_sub(clock.coarse_mono_ms())));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    ready = socket.readable() => {
                        ready.map_err(|e| format!("the socket failed: {e}"))?;
                    }
                    _ = tokio::time::sleep(due.unwrap_or(Duration::MAX)), if due.is_some() => {
                        recorder.flush();
                    }
                }
                continue;
            }
            // ICMP errors from earlier sends and ENOBUFS surface here; they concern one peer
            // or one moment, not the socket, so keep serving.
            Err(e) => {
                tracing::debug!("udp receive: {e}");
                continue;
            }
        };
        if path.handler.handle(
            &request[..len],
            peer,
            Transport::Udp,
            &mut response,
            &mut recorder,
        ) && let Err(e) = socket.send_to(&response, peer).await
        {
            tracing::debug!("udp send to {peer}: {e}");
        }
        burst += 1;
        if burst == BURST {
            burst = 0;
            tokio::task::yield_now().await;
        }
    }
}
