//! DNS over TCP (RFC 7766): bounded connections, idle and per-message timeouts, pipelining.
//!
//! Each connection reads length-prefixed messages and answers them in order. Replies are
//! buffered and flushed when no further query is already waiting, so pipelined queries get
//! their replies in one write; the buffer is bounded, and a write that cannot finish within
//! the message timeout (a client that does not read) drops the connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::QueryPath;
use super::transfers::{self, NoSlot};
use crate::accept;
use crate::dns::Handled;
use crate::dns::transfer::{Sent, Transfer};
use crate::observed::answers::Recorder;
use crate::observed::counters::TransferResult;
use crate::process::logging::Throttle;
use crate::wire::Transport;

/// Replies buffered per connection before a write is forced.
const WRITE_BUFFER: usize = 16 * 1024;
/// Message and answer buffer kept between messages; larger ones are given back.
const KEPT_BUFFER: usize = 4 * 1024;
/// Kernel send buffer of a connection streaming a zone transfer (Linux doubles it): a
/// secondary that stops reading pins this much, not the megabytes autotuning would grant,
/// and `transfer_timeout` soon cuts it off. Enough for 40 Mbit/s at 100 ms round trip.
pub const TRANSFER_SEND_BUFFER: usize = 256 * 1024;

/// The TCP bounds from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub connections: usize,
    pub idle_timeout: Duration,
    pub message_timeout: Duration,
}

/// Accepts connections until `shutdown`; connections run on `tracker` so shutdown can wait
/// for the queries in flight.
pub async fn serve(
    listener: TcpListener,
    path: Arc<QueryPath>,
    limits: TcpLimits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<(), String> {
    let permits = Arc::new(Semaphore::new(limits.connections));
    loop {
        let Some((stream, peer)) = accept::next("tcp", &shutdown, || listener.accept()).await
        else {
            return Ok(());
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            path.counters.tcp_refused.fetch_add(1, Relaxed);
            drop(stream); // closed at once: the client tries another server or retries later
            continue;
        };
        let (path, shutdown) = (path.clone(), shutdown.clone());
        tracker.spawn(async move {
            let counters = &path.counters;
            counters.tcp_open.fetch_add(1, Relaxed);
            let mut recorder = Recorder::new(path.ledger.as_ref().map(|l| l.intake()));
            if let Err(Closed::Timeout) =
                connection(stream, peer, &path, &mut recorder, limits, &shutdown).await
            {
                counters.tcp_timeouts.fetch_add(1, Relaxed);
            }
            counters.tcp_open.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }
}

/// Caps the kernel's send buffer of `stream` at [`TRANSFER_SEND_BUFFER`].
fn bound_send_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size = TRANSFER_SEND_BUFFER as libc::c_int;
    // SAFETY: setsockopt with a c_int value on a socket we own.
    let done = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done != 0 {
        tracing::debug!("transfer send buffer: {}", io::Error::last_os_error());
    }
}

/// Streams `transfer` to `peer`, within `[limits] transfers` and `transfer_timeout`; the
/// fleet hears what the secondary took.
async fn stream_transfer<W: AsyncWriteExt + Unpin>(
    transfer: &Transfer,
    peer: SocketAddr,
    path: &QueryPath,
    writer: &mut W,
    fd: std::os::fd::RawFd,
    limits: TcpLimits,
) -> Result<(), Closed> {
    let clock = path.handler.clock();
    let slot = path.transfers.take(peer.ip());
    if let Err(no_slot) = &slot {
        return refuse_busy(transfer, peer, *no_slot, path, writer, limits).await;
    };
    let sent = transfer.sent();
    let started = std::time::Instant::now();
    let (mut count, mut bytes) = (0usize, 0usize);
    let rate = transfers::Rate::new(path.transfer_min_rate, fd);
    let stream = async {
        let mut messages = transfer.messages();
        while let Some(message) = messages.next_message(clock.now_ms() / 1000) {
            let write = async {
                writer.write_u16(message.len() as u16).await?;
                writer.write_all(&message).await
            };
            rate.keeping_up(write, bytes).await?;
            count += 1;
            bytes += message.len();
            // Encoding a large zone is CPU work: let the queries on this thread through.
            tokio::task::yield_now().await;
        }
        rate.keeping_up(writer.flush(), bytes).await
    };
    let result = timeout(path.transfer_timeout, stream).await;
    let (zone, serial) = (transfer.origin(), transfer.serial());
    let ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(Ok(())) => {
            tracing::info!(%peer, %zone, serial, kind = sent.as_str(), messages = count, bytes, ms, "zone transfer out")
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, %zone, serial, kind = sent.as_str(), messages = count, ms, "zone transfer out failed: {e}")
        }
        Err(_) => {
            tracing::warn!(%peer, %zone, serial, kind = sent.as_str(), messages = count, ms, "zone transfer out cut off after transfer_timeout")
        }
    }
    match result {
        Ok(Ok(())) => {
            path.counters.transfer(match sent {
                Sent::Axfr => TransferResult::Axfr,
                Sent::Ixfr => TransferResult::Ixfr,
                Sent::IxfrFull => TransferResult::IxfrFull,
                Sent::UpToDate => TransferResult::UpToDate,
            });
            path.fleet
                .transferred(peer.ip(), zone, serial, sent.as_str());
            Ok(())
        }
        Ok(Err(e)) => {
            path.counters.transfer(TransferResult::Failed);
            Err(Closed::from(e))
        }
        Err(_) => {
            path.counters.transfer(TransferResult::Failed);
            Err(Closed::Timeout)
        }
    }
}

/// Answers a transfer no slot is free for (all taken, or this source's share): SERVFAIL,
/// counted, and said in the log at most once a second.
async fn refuse_busy<W: AsyncWriteExt + Unpin>(
    transfer: &Transfer,
    peer: SocketAddr,
    no_slot: NoSlot,
    path: &QueryPath,
    writer: &mut W,
    limits: TcpLimits,
) -> Result<(), Closed> {
    path.counters.transfer(TransferResult::Busy);
    if no_slot == NoSlot::SourceBusy
        && let Some(held_back) = SOURCE_BUSY.admit()
    {
        tracing::warn!(%peer, "zone transfer refused: this source already holds transfers_per_source transfers ({held_back} more since the last such line)");
    }
    let busy = transfer.busy(path.handler.clock().now_ms() / 1000);
    let write = async {
        writer.write_u16(busy.len() as u16).await?;
        writer.write_all(&busy).await
    };
    timeout(limits.message_timeout, write)
        .await
        .map_err(|_| Closed::Timeout)?
        .map_err(Closed::from)
}

/// Transfers refused for a source's share are logged at most once a second.
static SOURCE_BUSY: Throttle = Throttle::new(std::time::Duration::from_secs(1));

enum Closed {
    Timeout,
    Io,
}

impl From<io::Error> for Closed {
    fn from(_: io::Error) -> Closed {
        Closed::Io
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    path: &QueryPath,
    recorder: &mut Recorder,
    limits: TcpLimits,
    shutdown: &CancellationToken,
) -> Result<(), Closed> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, write);
    // Sized by what arrives, not by the largest message possible: a flood of connections
    // costs what its messages need.
    let mut message = Vec::new();
    let mut response = Vec::new();
    loop {
        if reader.buffer().is_empty() {
            // TCP is the slow path: hand what there is over while the client is quiet.
            recorder.flush();
            timeout(limits.message_timeout, writer.flush())
                .await
                .map_err(|_| Closed::Timeout)??;
        }
        // Between messages: idle timeout, and the place where shutdown closes the connection.
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            first = timeout(limits.idle_timeout, reader.fill_buf()) => first,
        };
        if first.map_err(|_| Closed::Timeout)??.is_empty() {
            return Ok(()); // the client closed
        }
        let read = async {
            let len = reader.read_u16().await? as usize;
            message.resize(len, 0);
            reader.read_exact(&mut message).await?;
            Ok::<usize, io::Error>(len)
        };
        let len = timeout(limits.message_timeout, read)
            .await
            .map_err(|_| Closed::Timeout)??;
        if len == 0 {
            // Not a DNS message; a client sending these would hold its slot forever by
            // resetting the idle timer. Close at once, as NSD does.
            return Ok(());
        }
        let started = std::time::Instant::now();
        let handled = path.handler.serve(
            &message[..len],
            peer,
            Transport::Tcp,
            &mut response,
            recorder,
        );
        match handled {
            Handled::Nothing => {}
            Handled::Reply => {
                let write = async {
                    writer.write_u16(response.len() as u16).await?;
                    writer.write_all(&response).await
                };
                timeout(limits.message_timeout, write)
                    .await
                    .map_err(|_| Closed::Timeout)??;
                path.handler.took(started.elapsed(), 1);
            }
            Handled::Transfer(transfer) => {
                let socket = writer.get_ref().as_ref();
                bound_send_buffer(socket);
                let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
                stream_transfer(&transfer, peer, path, &mut writer, fd, limits).await?;
            }
        }
        // A large message or answer does not keep its buffer for the life of the connection.
        message.shrink_to(KEPT_BUFFER);
        response.shrink_to(KEPT_BUFFER);
    }
}
