//! The dnstap collector: the secondaries stream what they answer, and their answers reach
//! the straggler ledger beside this server's own, so the report covers the whole fleet.
//!
//! NSD, Knot and BIND write dnstap (protobuf messages in Frame Streams) to a Unix socket
//! (NSD 4.7+ and Knot 3.4+ also over TCP; a relay such as `dnstap -u SOCK -T HOST:PORT`
//! for the rest). The sender connects, like syslog; there are no acknowledgements, and a
//! sender whose queue is full drops frames silently, so the collector must be fast and say
//! what it could not see.
//!
//! - [`frames`]: the Frame Streams framing and handshake (READY, ACCEPT, START, STOP,
//!   FINISH), bounded;
//! - [`message`]: the dnstap protobuf messages, declared with prost;
//! - [`answer`]: a frame's response, read with the server's own parser, as an observation;
//! - [`streams`](mod@streams): who streams, since when, frames and drops per sender.
//!
//! One task per stream; frames are decoded a read at a time and handed to the ledger in
//! one go. Bad input (garbage, a wrong content type, an over-long frame, a half handshake,
//! a stall mid-frame) closes that stream alone and is counted. Nothing here runs on the
//! query path's threads or takes its locks.

pub mod answer;
pub mod frames;
pub mod message;
pub mod streams;

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept;
use crate::clock::Clock;
use crate::config::{DnstapConfig, DnstapListen};
use crate::cutover::Cutovers;
use crate::observed::answers::Observation;
use crate::records::Records;
use crate::stragglers::Ledger;
use frames::{Control, Frame, FrameError};
use streams::{Sender, Senders};

/// Time allowed to write ACCEPT or FINISH to a sender.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Why a stream was closed or refused; counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// More streams than `[dnstap] connections`.
    TooMany = 0,
    /// A TCP sender whose address `[dnstap] allow` does not list.
    NotAllowed = 1,
    /// Frames that are not Frame Streams, or out of order.
    Garbage = 2,
    /// A content type other than dnstap's.
    ContentType = 3,
    /// A data frame over `[dnstap] max_frame`.
    TooLong = 4,
    /// No handshake within `[dnstap] handshake_timeout`, or a frame stalled past
    /// `frame_timeout`.
    Stalled = 5,
    /// Closed by the sender mid-frame.
    CutShort = 6,
}

impl Closed {
    pub const ALL: [Closed; 7] = [
        Closed::TooMany,
        Closed::NotAllowed,
        Closed::Garbage,
        Closed::ContentType,
        Closed::TooLong,
        Closed::Stalled,
        Closed::CutShort,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Closed::TooMany => "too_many",
            Closed::NotAllowed => "not_allowed",
            Closed::Garbage => "garbage",
            Closed::ContentType => "content_type",
            Closed::TooLong => "too_long",
            Closed::Stalled => "stalled",
            Closed::CutShort => "cut_short",
        }
    }
}

/// The collector of one server.
pub struct Collector {
    config: DnstapConfig,
    records: Arc<Records>,
    ledger: Option<Arc<Ledger>>,
    /// Told when a secondary's answer moves a drain deadline, to write it again.
    cutovers: Arc<Cutovers>,
    clock: Clock,
    pub senders: Senders,
    /// Streams open now, bounded by `[dnstap] connections`.
    permits: Arc<Semaphore>,
    /// Streams refused or closed, by [`Closed`].
    closed: [AtomicU64; 7],
    /// Frames a second across all streams.
    rate: Mutex<Bucket>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Collector({:?})", self.config.listen)
    }
}

/// How large a burst above `[dnstap] frames_per_second` is taken: this long at that rate.
pub const BURST: Duration = Duration::from_millis(100);

/// A token bucket of frames, refilled at `[dnstap] frames_per_second`, [`BURST`] deep.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One socket the collector listens on.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// The collector's Unix socket files, removed when this is dropped (at shutdown).
pub struct SocketFiles(Vec<PathBuf>);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A future the supervisor runs, named.
pub type Loop = (
    String,
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>,
);

/// Binds every `[dnstap] listen` address: Unix sockets with their mode and group (a stale
/// socket file is replaced, a live one is an error), TCP addresses as given.
pub async fn bind(config: &DnstapConfig) -> io::Result<(Vec<Listener>, SocketFiles)> {
    let mut listeners = Vec::new();
    let mut files = SocketFiles(Vec::new());
    for listen in &config.listen {
        match listen {
            DnstapListen::Unix(path) => {
                let listener =
                    bind_unix(path, config.socket_mode, config.socket_group).map_err(|e| {
                        io::Error::new(e.kind(), format!("dnstap socket {}: {e}", path.display()))
                    })?;
                tracing::info!("dnstap collector on {}", path.display());
                files.0.push(path.clone());
                listeners.push(Listener::Unix(listener));
            }
            DnstapListen::Tcp(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("dnstap {addr}: {e}")))?;
                let local = listener.local_addr().unwrap_or(*addr);
                tracing::info!("dnstap collector on tcp {local}");
                listeners.push(Listener::Tcp(listener));
            }
        }
    }
    Ok((listeners, files))
}

fn bind_unix(path: &Path, mode: u32, group: Option<u32>) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to remove it",
            ));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another collector answers on it",
                ));
            }
            Err(_) => std::fs::remove_file(path)?,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

impl Collector {
    pub fn new(
        config: DnstapConfig,
        records: Arc<Records>,
        ledger: Option<Arc<Ledger>>,
        cutovers: Arc<Cutovers>,
        clock: Clock,
    ) -> Arc<Collector> {
        Arc::new(Collector {
            senders: Senders::new(config.senders),
            permits: Arc::new(Semaphore::new(config.connections)),
            rate: Mutex::new(Bucket {
                tokens: config.frames_per_second as f64 * BURST.as_secs_f64(),
                at: Instant::now(),
            }),
            closed: Default::default(),
            config,
            records,
            ledger,
            cutovers,
            clock,
        })
    }

    /// Streams refused or closed for `why`, since start.
    pub fn closed(&self, why: Closed) -> u64 {
        self.closed[why as usize].load(Relaxed)
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.config.connections - self.permits.available_permits()
    }

    fn count(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Relaxed);
    }

    /// Serves `listeners` until `shutdown`: one accept loop each, for the supervisor.
    pub fn serve(
        self: &Arc<Collector>,
        listeners: Vec<Listener>,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Vec<Loop> {
        listeners
            .into_iter()
            .map(|listener| {
                let (collector, shutdown, tracker) =
                    (self.clone(), shutdown.clone(), tracker.clone());
                let what = match &listener {
                    Listener::Unix(l) => format!(
                        "the dnstap socket {}",
                        l.local_addr()
                            .ok()
                            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                            .unwrap_or_default()
                    ),
                    Listener::Tcp(l) => format!(
                        "the dnstap listener tcp {}",
                        l.local_addr().map_or("?".into(), |a| a.to_string())
                    ),
                };
                let run: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> =
                    match listener {
                        Listener::Unix(listener) => Box::pin(async move {
                            while let Some((stream, _)) =
                                accept::next("dnstap socket", &shutdown, || listener.accept()).await
                            {
                                collector.admit(stream, None, &shutdown, &tracker);
                            }
                            Ok(())
                        }),
                        Listener::Tcp(listener) => Box::pin(async move {
                            while let Some((stream, peer)) =
                                accept::next("dnstap listener", &shutdown, || listener.accept()).await
                            {
                                if !collector.config.allow.contains(&peer.ip()) {
                                    collector.count(Closed::NotAllowed);
                                    tracing::warn!(%peer, "dnstap sender refused: its address is not in [dnstap] allow");
                                    continue;
                                }
                                collector.admit(stream, Some(peer), &shutdown, &tracker);
                            }
                            Ok(())
                        }),
                    };
                (what, run)
            })
            .collect()
    }

    /// Starts a stream's task, within `[dnstap] connections`.
    fn admit<S>(
        self: &Arc<Collector>,
        io: S,
        peer: Option<SocketAddr>,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.count(Closed::TooMany);
            return;
        };
        let (collector, shutdown) = (self.clone(), shutdown.clone());
        tracker.spawn(async move {
            let mut stream = Stream::new(&collector, peer);
            let result = stream.run(io, &shutdown).await;
            if let Err(why) = result {
                collector.count(why);
                if let Some(sender) = &stream.sender {
                    sender.errors.fetch_add(1, Relaxed);
                }
                tracing::warn!(
                    sender = stream.who(),
                    "dnstap stream closed: {}",
                    why.as_str()
                );
            }
            drop(stream);
            drop(permit);
        });
    }

    /// Takes `n` frames from the rate; how many may be decoded.
    fn allow(&self, n: usize) -> usize {
        let mut bucket = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.config.frames_per_second as f64;
        let now = Instant::now();
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        let allowed = (bucket.tokens.floor() as usize).min(n);
        bucket.tokens -= allowed as f64;
        allowed
    }

    /// The sender whose frames carry `identity` (or, without one, that a TCP peer's address
    /// names).
    fn sender(&self, identity: &[u8], peer: Option<SocketAddr>) -> Arc<Sender> {
        let register = |name: &str| self.ledger.as_ref().map_or(0, |l| l.source(name));
        if identity.is_empty()
            && let Some(peer) = peer
        {
            let catalog = self.records.load();
            let named = catalog
                .catalog
                .config
                .secondaries
                .iter()
                .find(|s| s.address.ip() == peer.ip())
                .map(|s| s.dnstap_identity.clone());
            if let Some(name) = named {
                return self.senders.get(name.as_bytes(), register);
            }
        }
        self.senders.get(identity, register)
    }
}

/// One stream being read.
struct Stream<'c> {
    collector: &'c Collector,
    peer: Option<SocketAddr>,
    /// When it connected (Unix ms, monotonic): its sender streams since then.
    opened: (u64, u64),
    /// Its sender, known from its first frame, and the identity that named it.
    sender: Option<Arc<Sender>>,
    identity: Vec<u8>,
    /// The observations of the read being decoded, handed to the ledger together.
    batch: Vec<Observation>,
}

/// Where a stream is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for READY (a socket sender) or START (a file or relay).
    Opening,
    /// ACCEPT sent, waiting for START.
    Accepted,
    /// Data frames flow; `bidirectional` senders expect FINISH after their STOP.
    Started { bidirectional: bool },
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if let Some(sender) = &self.sender
            && sender.left()
        {
            tracing::warn!(sender = %sender.identity, "dnstap stream out: the straggler report is incomplete until it is back");
        }
    }
}

impl<'c> Stream<'c> {
    fn new(collector: &'c Collector, peer: Option<SocketAddr>) -> Stream<'c> {
        let clock = &collector.clock;
        Stream {
            collector,
            peer,
            opened: (clock.now_ms(), clock.mono_ms()),
            sender: None,
            identity: Vec::new(),
            batch: Vec::with_capacity(256),
        }
    }

    fn who(&self) -> String {
        match (&self.sender, self.peer) {
            (Some(s), _) => s.identity.clone(),
            (None, Some(peer)) => peer.to_string(),
            (None, None) => "a Unix socket sender".into(),
        }
    }

    /// Reads the stream to its end: `Ok` when it ended well (STOP, or the sender closed
    /// between frames), else why it was closed.
    ///
    /// One function on purpose: the Frame Streams handshake is one table (state × frame →
    /// next state, with the reply each step writes), which reads best whole, beside the
    /// read deadlines it depends on.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut io: S,
        shutdown: &CancellationToken,
    ) -> Result<(), Closed> {
        let config = &self.collector.config;
        let max_frame = config.max_frame;
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        let mut state = State::Opening;
        let handshake_until = tokio::time::Instant::now() + config.handshake_timeout;
        loop {
            if buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
                buffer.reserve(READ_CHUNK);
            }
            let limit = match state {
                State::Started { .. } if buffer.is_empty() => None,
                State::Started { .. } => Some(tokio::time::Instant::now() + config.frame_timeout),
                _ => Some(handshake_until),
            };
            let read = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                read = read_until(&mut io, &mut buffer, limit) => read,
            };
            match read {
                Err(_) => return Err(Closed::Stalled),
                Ok(Err(_)) => return Ok(()),
                Ok(Ok(0)) if buffer.is_empty() => return Ok(()),
                Ok(Ok(0)) => return Err(Closed::CutShort),
                Ok(Ok(_)) => {}
            }
            loop {
                let frame = match frames::next(&mut buffer, max_frame) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(FrameError::TooLong(_)) => return Err(Closed::TooLong),
                    Err(_) => return Err(Closed::Garbage),
                };
                state = match (state, frame) {
                    (State::Started { .. }, Frame::Data(payload)) => {
                        self.data(payload);
                        state
                    }
                    (_, Frame::Control { dnstap: false, .. }) => return Err(Closed::ContentType),
                    (
                        State::Opening,
                        Frame::Control {
                            kind: Control::Ready,
                            ..
                        },
                    ) => {
                        write(&mut io, &frames::control(Control::Accept, true)).await?;
                        State::Accepted
                    }
                    (
                        State::Opening,
                        Frame::Control {
                            kind: Control::Start,
                            ..
                        },
                    ) => State::Started {
                        bidirectional: false,
                    },
                    (
                        State::Accepted,
                        Frame::Control {
                            kind: Control::Start,
                            ..
                        },
                    ) => State::Started {
                        bidirectional: true,
                    },
                    (
                        State::Started { bidirectional },
                        Frame::Control {
                            kind: Control::Stop,
                            ..
                        },
                    ) => {
                        self.hand_over();
                        if bidirectional {
                            write(&mut io, &frames::control(Control::Finish, false)).await?;
                        }
                        return Ok(());
                    }
                    _ => return Err(Closed::Garbage),
                };
            }
            self.hand_over();
            // Decoding is CPU work: let the other tasks of this thread through.
            tokio::task::yield_now().await;
        }
    }

    /// One data frame: decoded into an observation, or counted as why not.
    fn data(&mut self, payload: bytes::Bytes) {
        let Ok(frame) = message::Dnstap::decode(payload) else {
            self.collector.count_malformed(self.sender.as_deref());
            return;
        };
        let identity = frame.identity.as_deref().unwrap_or_default();
        if self.sender.is_none() || identity != self.identity.as_slice() {
            let sender = self.collector.sender(identity, self.peer);
            if sender.joined(self.opened) {
                tracing::info!(sender = %sender.identity, "dnstap stream in: its answers reach the straggler report");
            }
            if let Some(old) = self.sender.replace(sender) {
                let _ = old.left();
            }
            self.identity = identity.to_vec();
        }
        let sender = self.sender.as_ref().expect("set above");
        sender.frames.fetch_add(1, Relaxed);
        sender
            .last_frame_ms
            .store(self.collector.clock.now_ms(), Relaxed);
        let snapshot = self.collector.records.load();
        match answer::observation(&frame, &snapshot, &self.collector.clock, sender.via) {
            Ok(told) => {
                if let Some(service) = told.moves_drain {
                    self.collector.cutovers.answered_long(&service);
                }
                self.batch.push(told.observation);
            }
            Err(why) => sender.skipped(why),
        }
    }

    /// Hands the observations of this read to the ledger, within the rate.
    fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let allowed = self.collector.allow(self.batch.len());
        if let Some(sender) = &self.sender {
            sender.observed.fetch_add(allowed as u64, Relaxed);
            sender
                .dropped
                .fetch_add((self.batch.len() - allowed) as u64, Relaxed);
        }
        if let Some(ledger) = &self.collector.ledger {
            ledger.observe(&self.batch[..allowed]);
        }
        self.batch.clear();
    }
}

/// One stream as reports and metrics show it: a configured secondary's (streaming or not),
/// or another sender's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The secondary's name, or the sender's identity.
    pub name: String,
    pub identity: String,
    /// A configured `[[secondary]]`.
    pub secondary: bool,
    /// Since when (Unix ms, monotonic) it has streamed without a gap; `None` while it does
    /// not.
    pub since: Option<(u64, u64)>,
    pub frames: u64,
    pub observed: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub errors: u64,
    pub last_frame_ms: u64,
}

impl StreamState {
    fn of(name: String, identity: String, secondary: bool, sender: Option<&Sender>) -> StreamState {
        let load = |a: &AtomicU64| a.load(Relaxed);
        StreamState {
            name,
            identity,
            secondary,
            since: sender.and_then(Sender::streaming_since),
            frames: sender.map_or(0, |s| load(&s.frames)),
            observed: sender.map_or(0, |s| load(&s.observed)),
            dropped: sender.map_or(0, |s| load(&s.dropped)),
            skipped: sender.map_or(0, |s| s.skipped.iter().map(load).sum()),
            errors: sender.map_or(0, |s| load(&s.errors)),
            last_frame_ms: sender.map_or(0, |s| load(&s.last_frame_ms)),
        }
    }
}

/// The streams of `secondaries` (configured; each by its dnstap identity) and of every other
/// sender seen, from `collector` (`None`: dnstap is off, nobody streams).
pub fn streams(
    collector: Option<&Collector>,
    secondaries: &[crate::config::SecondaryConfig],
) -> Vec<StreamState> {
    let mut all: Vec<StreamState> = secondaries
        .iter()
        .map(|s| {
            let sender = collector.and_then(|c| c.senders.find(&s.dnstap_identity));
            StreamState::of(
                s.name.clone(),
                s.dnstap_identity.clone(),
                true,
                sender.as_deref(),
            )
        })
        .collect();
    for sender in collector.map(|c| c.senders.all()).unwrap_or_default() {
        if !secondaries
            .iter()
            .any(|s| s.dnstap_identity == sender.identity)
        {
            all.push(StreamState::of(
                sender.identity.clone(),
                sender.identity.clone(),
                false,
                Some(&sender),
            ));
        }
    }
    all
}

impl Collector {
    fn count_malformed(&self, sender: Option<&Sender>) {
        if let Some(sender) = sender {
            sender.skipped(answer::Skipped::Malformed);
        }
    }
}

/// Reads into `buffer`, until `limit` when there is one; `Err` when it passed.
async fn read_until<S: AsyncRead + Unpin>(
    io: &mut S,
    buffer: &mut BytesMut,
    limit: Option<tokio::time::Instant>,
) -> Result<io::Result<usize>, tokio::time::error::Elapsed> {
    match limit {
        Some(limit) => tokio::time::timeout_at(limit, io.read_buf(buffer)).await,
        None => Ok(io.read_buf(buffer).await),
    }
}

/// Writes a control frame to a sender, within [`WRITE_TIMEOUT`].
async fn write<S: AsyncWrite + Unpin>(io: &mut S, frame: &[u8]) -> Result<(), Closed> {
    match tokio::time::timeout(WRITE_TIMEOUT, io.write_all(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Closed::Stalled),
    }
}
