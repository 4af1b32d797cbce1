//! DNS over UDP: one socket and one OS thread per worker, moving datagrams in batches.
//!
//! Every worker owns a socket bound with `SO_REUSEPORT` to the same address, so the kernel
//! spreads peers over the workers and no two threads share a socket. A worker loops on a
//! blocking `recvmmsg` that takes up to `batch` datagrams (waiting only for the first,
//! `MSG_WAITFORONE`), answers each with the [`Handler`](crate::dns::Handler) into a buffer of
//! its own, and sends the answers with one `sendmmsg`: two system calls per batch instead of
//! two per query, and no task, allocation or lock per query. Load is shed in the right place
//! by construction: when the workers are busy, datagrams wait in the socket's receive buffer
//! and the kernel drops what does not fit.
//!
//! A worker blocks only when its socket is empty, and then at most until its straggler
//! observations fall due for handover (see [`crate::stragglers`]) or [`POLL`] passes (the
//! socket's receive timeout), so that it notices shutdown.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio_util::sync::CancellationToken;

use super::QueryPath;
use crate::observed::answers::Recorder;
use crate::wire::{MAX_TCP_MESSAGE, Transport};

pub use crate::config::MAX_UDP_BATCH;
/// Largest datagram read whole; a longer one is cut by the kernel and dropped.
const MAX_UDP_REQUEST: usize = 65535;
/// How long a worker waits for a datagram before it checks for shutdown and hands over
/// due straggler observations: the bound on how long shutdown waits for it.
pub const POLL: Duration = Duration::from_millis(50);

/// A worker's socket: bound to the DNS address with `SO_REUSEPORT`, blocking, with a
/// receive timeout of [`POLL`].
pub fn worker_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // As std and tokio bind: an IPv6 address serves IPv6 only, so "0.0.0.0:53" and
        // "[::]:53" can both be listed.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    // Bigger buffers let a burst wait in the kernel instead of being dropped; the kernel
    // caps them at net.core.rmem_max / wmem_max, which is not an error.
    if let Err(e) = socket
        .set_recv_buffer_size(buffer)
        .and_then(|()| socket.set_send_buffer_size(buffer))
    {
        tracing::warn!("cannot size a UDP socket buffer: {e}");
    }
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket.into())
}

/// One worker: serves `socket` until `shutdown`, moving up to `batch` datagrams per system
/// call. Ends with `Ok` at shutdown, or with why the socket cannot be read any more.
///
/// One function on purpose: it is the hot loop, and its buffers (allocated here, once)
/// stay locals of one frame rather than being handed between helpers per batch.
pub fn serve(
    socket: UdpSocket,
    path: Arc<QueryPath>,
    worker: usize,
    batch: usize,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let batch = batch.clamp(1, MAX_UDP_BATCH);
    let handler = path.handler.for_worker(worker);
    let fd = socket.as_raw_fd();
    let mut recorder = Recorder::new(path.ledger.as_ref().map(|l| l.intake()));
    let mut requests = vec![0u8; batch * MAX_UDP_REQUEST];
    let mut lengths = [0usize; MAX_UDP_BATCH];
    let mut peers: [Option<SockaddrStorage>; MAX_UDP_BATCH] = [None; MAX_UDP_BATCH];
    let mut responses: Vec<Vec<u8>> = (0..batch)
        .map(|_| Vec::with_capacity(MAX_TCP_MESSAGE))
        .collect();
    let mut receiving = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    let mut sending = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    // The socket's receive timeout as last set: changed only when idle.
    let mut waiting = POLL;
    while !shutdown.is_cancelled() {
        let mut slots = Slots {
            requests: &mut requests,
            lengths: &mut lengths,
            peers: &mut peers,
        };
        // Under load the queue is never empty: take what is there without waiting. Only
        // when it is empty, hand over observations that are due and block until the next
        // datagram, the next handover, or POLL.
        let received = match slots.receive(fd, &mut receiving, MsgFlags::MSG_DONTWAIT) {
            Err(Errno::EAGAIN) => {
                let now = handler.clock().coarse_mono_ms();
                recorder.flush_if_due(now);
                let wait = recorder.due_ms().map_or(POLL, |due| {
                    Duration::from_millis(due.saturating_sub(now).max(1)).min(POLL)
                });
                if wait != waiting {
                    socket
                        .set_read_timeout(Some(wait))
                        .map_err(|e| format!("cannot set the receive timeout: {e}"))?;
                    waiting = wait;
                }
                slots.receive(fd, &mut receiving, MsgFlags::MSG_WAITFORONE)
            }
            other => other,
        };
        let received = match received {
            Ok(received) => received,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            // ICMP errors from earlier sends and ENOBUFS concern one peer or one moment,
            // not the socket: keep serving.
            Err(e @ (Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH))
            | Err(e @ (Errno::ENOBUFS | Errno::ENOMEM)) => {
                tracing::debug!("udp receive: {e}");
                continue;
            }
            Err(e) => return Err(format!("the socket failed: {e}")),
        };
        // One clock read per batch for the duration histogram: every answer of a batch
        // leaves with it.
        let started = Instant::now();
        // Answer in place; `to_send` compacts the datagrams that get a reply.
        let mut to_send = [0usize; MAX_UDP_BATCH];
        let mut sends = 0;
        for i in 0..received {
            let Some(peer) = peers[i].as_ref().and_then(socket_addr) else {
                continue;
            };
            let request = &requests[i * MAX_UDP_REQUEST..][..lengths[i]];
            if handler.handle(
                request,
                peer,
                Transport::Udp,
                &mut responses[i],
                &mut recorder,
            ) {
                to_send[sends] = i;
                sends += 1;
            }
        }
        send(fd, &mut sending, &responses, &peers, &to_send[..sends]);
        handler.took(started.elapsed(), sends);
        recorder.flush_if_due(handler.clock().coarse_mono_ms());
    }
    Ok(())
}

/// Where one batch is received: slots of [`MAX_UDP_REQUEST`] bytes, and each datagram's
/// length and sender.
struct Slots<'a> {
    requests: &'a mut [u8],
    lengths: &'a mut [usize; MAX_UDP_BATCH],
    peers: &'a mut [Option<SockaddrStorage>; MAX_UDP_BATCH],
}

impl Slots<'_> {
    /// Receives up to one batch (`MSG_WAITFORONE`: waiting for the first datagram only;
    /// `MSG_DONTWAIT`: not at all) and returns how many came. A datagram cut by the kernel
    /// is given length 0, and so dropped as malformed.
    fn receive(
        &mut self,
        fd: i32,
        headers: &mut MultiHeaders<SockaddrStorage>,
        flags: MsgFlags,
    ) -> Result<usize, Errno> {
        let batch = self.requests.len() / MAX_UDP_REQUEST;
        let mut slots = self.requests.chunks_exact_mut(MAX_UDP_REQUEST);
        let mut slices: [[IoSliceMut<'_>; 1]; MAX_UDP_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let results = recvmmsg(fd, headers, slices[..batch].iter_mut(), flags, None)?;
        let mut received = 0;
        for message in results {
            self.lengths[received] = if message.flags.contains(MsgFlags::MSG_TRUNC) {
                0
            } else {
                message.bytes
            };
            self.peers[received] = message.address;
            received += 1;
        }
        Ok(received)
    }
}

/// Sends `responses[i]` to `peers[i]` for each `i` in `which`, as few system calls as the
/// kernel allows. A datagram the kernel refuses is skipped (and logged at debug): it
/// concerns one peer.
fn send(
    fd: i32,
    headers: &mut MultiHeaders<SockaddrStorage>,
    responses: &[Vec<u8>],
    peers: &[Option<SockaddrStorage>; MAX_UDP_BATCH],
    which: &[usize],
) {
    let empty: &[u8] = &[];
    let mut slices: [[IoSlice<'_>; 1]; MAX_UDP_BATCH] = [[IoSlice::new(empty)]; MAX_UDP_BATCH];
    let mut addresses: [Option<SockaddrStorage>; MAX_UDP_BATCH] = [None; MAX_UDP_BATCH];
    for (slot, &i) in which.iter().enumerate() {
        slices[slot] = [IoSlice::new(&responses[i])];
        addresses[slot] = peers[i];
    }
    let mut sent = 0;
    while sent < which.len() {
        let no_control: [ControlMessage<'_>; 0] = [];
        match sendmmsg(
            fd,
            headers,
            slices[sent..which.len()].iter(),
            &addresses[sent..which.len()],
            no_control,
            MsgFlags::empty(),
        ) {
            Ok(results) => sent += results.count().max(1),
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::debug!(
                    "udp send to {:?}: {e}",
                    addresses[sent].as_ref().and_then(socket_addr)
                );
                sent += 1;
            }
        }
    }
}

/// The std address of a peer, if it is IPv4 or IPv6 (a UDP socket gets nothing else).
fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::SockaddrLike;

    #[test]
    fn a_peer_address_survives_the_round_trip() {
        for text in ["127.0.0.1:5300", "[::1]:5300"] {
            let addr: SocketAddr = text.parse().unwrap();
            let storage = SockaddrStorage::from(addr);
            assert_eq!(socket_addr(&storage), Some(addr));
            assert!(storage.len() > 0);
        }
    }
}
