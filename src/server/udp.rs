//! DNS over UDP: a fixed set of receive loops per socket, each answering in place.
//!
//! Work is bounded by construction: each loop handles one datagram at a time with buffers it
//! allocated once, and there is no task per datagram. When every loop is busy, datagrams wait
//! in the socket's receive buffer and the kernel drops what does not fit, which is the right
//! place to shed load.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::dns::{Handler, MAX_TCP_MESSAGE, Transport};

/// Largest datagram read whole; anything longer is cut by the kernel and then malformed.
const MAX_UDP_REQUEST: usize = 65535;

/// One receive loop; run several per socket to use several cores.
pub async fn serve(socket: Arc<UdpSocket>, handler: Arc<Handler>, shutdown: CancellationToken) {
    let mut request = vec![0u8; MAX_UDP_REQUEST];
    let mut response = Vec::with_capacity(MAX_TCP_MESSAGE);
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut request) => received,
        };
        let (len, peer) = match received {
            Ok(received) => received,
            // ICMP errors from earlier sends and ENOBUFS surface here; they concern one peer
            // or one moment, not the socket, so keep serving.
            Err(e) => {
                tracing::debug!("udp receive: {e}");
                continue;
            }
        };
        if handler.handle(&request[..len], peer, Transport::Udp, &mut response)
            && let Err(e) = socket.send_to(&response, peer).await
        {
            tracing::debug!("udp send to {peer}: {e}");
        }
    }
}
