//! The admin socket server: binds the Unix socket, checks each peer (SO_PEERCRED), reads
//! bounded request lines and hands each to [`super::commands::dispatch`], which writes its
//! reply (and any progress) lines.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{Admission, Doing, Ticket};
use super::commands::{Context, Peer, dispatch, reply_line};
use crate::accept;
use crate::observed::counters::Counters;
use crate::process::logging::Throttle;
use crate::protocol::{Error, ErrorKind, MAX_REQUEST_BYTES, Reply, Request};

/// Why the admin socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("admin socket {0}: a flipdns server is already answering on it")]
    InUse(PathBuf),
    #[error("admin socket {0}: exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("admin socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The bound admin socket; the file is removed when this is dropped.
pub struct AdminSocket {
    pub listener: UnixListener,
    path: PathBuf,
}

impl AdminSocket {
    /// Binds `path` with file mode `mode`. A leftover socket file is removed only after a
    /// connect shows that no server answers on it. The socket is bound under a temporary
    /// name, given its mode, then renamed into place, so it is never reachable with looser
    /// permissions.
    pub fn bind(path: &Path, mode: u32) -> Result<AdminSocket, BindError> {
        let io_err = |source| BindError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket(path.to_path_buf()));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!("removing stale admin socket {}", path.display());
                    std::fs::remove_file(path).map_err(io_err)?;
                }
                Err(e) => return Err(io_err(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(temporary);
        let _ = std::fs::remove_file(&temporary);
        let listener = UnixListener::bind(&temporary).map_err(io_err)?;
        let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
            .and_then(|_| std::fs::rename(&temporary, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&temporary);
            return Err(io_err(e));
        }
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bounds of the admin socket.
#[derive(Debug, Clone)]
pub struct AdminLimits {
    pub clients: usize,
    pub request_timeout: Duration,
    /// When either list is not empty, a peer must have one of these uids or gids
    /// (SO_PEERCRED), on top of the socket's file mode.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
}

impl AdminLimits {
    /// Why the peer on `stream` may not use the socket, if it may not.
    fn refuse(&self, stream: &UnixStream) -> Option<Error> {
        if self.allowed_uids.is_empty() && self.allowed_gids.is_empty() {
            return None;
        }
        match stream.peer_cred() {
            Ok(cred)
                if self.allowed_uids.contains(&cred.uid())
                    || self.allowed_gids.contains(&cred.gid())
                    || supplementary_groups(cred.pid())
                        .iter()
                        .any(|g| self.allowed_gids.contains(g)) =>
            {
                None
            }
            Ok(cred) => Some(Error::new(
                ErrorKind::Forbidden,
                format!(
                    "uid {} gid {} may not use this admin socket (admin_allowed_uids, admin_allowed_gids)",
                    cred.uid(),
                    cred.gid()
                ),
            )),
            Err(e) => Some(Error::new(
                ErrorKind::Forbidden,
                format!("cannot tell who is asking (SO_PEERCRED): {e}"),
            )),
        }
    }
}

/// The supplementary groups of process `pid` (SO_PEERCRED carries only the primary gid, so
/// `usermod -aG flipops alice` would otherwise grant nothing), from `/proc/PID/status`; none
/// when it cannot be read.
fn supplementary_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else { return Vec::new() };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Refused admin clients are logged at most once a second, with how many were held back.
static REFUSALS: Throttle = Throttle::new(Duration::from_secs(1));

/// Serves admin clients until `shutdown`, then waits for requests in progress. When every
/// seat is taken, a connection that is not carrying out a change gives up its seat for the
/// newcomer ([`super::admission`]): no number of clients that have not asked for a change
/// can lock out a flip or a rollback.
pub async fn serve(
    socket: Arc<AdminSocket>,
    context: Arc<Context>,
    counters: Arc<Counters>,
    limits: AdminLimits,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let admission = Admission::new(limits.clients);
    let tracker = TaskTracker::new();
    loop {
        let Some((stream, _)) =
            accept::next("admin socket", &shutdown, || socket.listener.accept()).await
        else {
            break;
        };
        let (process, user) = stream.peer_cred().map_or((0, u32::MAX), |c| {
            (c.pid().map_or(0, |p| p as u32), c.uid())
        });
        let ticket = match limits.refuse(&stream) {
            Some(reason) => Err(reason),
            None => admission.admit(process, user, stream.as_raw_fd()).map_err(|full| {
                Error::new(
                    ErrorKind::TooManyClients,
                    format!(
                        "too many admin clients: all {} carry out a change (admin_clients); try again",
                        full.limit
                    ),
                )
            }),
        };
        match ticket {
            Err(reason) => {
                counters.admin_refused.fetch_add(1, Relaxed);
                if let Some(held_back) = REFUSALS.admit() {
                    tracing::warn!(
                        "admin client refused: {reason} ({held_back} more since the last such line)"
                    );
                }
                tracker.spawn(say_and_close(stream, reason));
            }
            Ok(ticket) => {
                let (context, shutdown, admission) =
                    (context.clone(), shutdown.clone(), admission.clone());
                let timeout = limits.request_timeout;
                tracker.spawn(async move {
                    let mut stream = stream;
                    client(
                        &mut stream,
                        &context,
                        timeout,
                        &ticket,
                        &admission,
                        &shutdown,
                    )
                    .await;
                    // The seat goes before the socket closes: its descriptor is not reused
                    // while the registry may still look at it.
                    drop(ticket);
                    drop(stream);
                });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Writes `reason` as the connection's one reply line (within a second) and closes it.
async fn say_and_close(mut stream: UnixStream, reason: Error) {
    let line = reply_line(&Reply::Error(reason));
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
}

/// One client connection: requests in, replies out, until EOF, an error, shutdown, or its
/// seat is given up for a newcomer (never while it carries out a change).
async fn client(
    stream: &mut UnixStream,
    context: &Context,
    timeout: Duration,
    ticket: &Ticket,
    admission: &Admission,
    shutdown: &CancellationToken,
) {
    let peer = peer(stream);
    let (read, mut write) = stream.split();
    let seat = &ticket.seat;
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let made_room = || {
        Error::new(
            ErrorKind::TooManyClients,
            "closed to make room for another admin client (admin_clients); try again",
        )
    };
    loop {
        line.clear();
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = seat.evicted.cancelled() => Err(made_room()),
            read = tokio::time::timeout(timeout, read_line(&mut reader, &mut line)) => match read {
                Ok(Ok(Line::Complete)) => Ok(()),
                Ok(Ok(Line::Eof)) | Ok(Err(_)) => return,
                Ok(Ok(Line::TooLong)) => Err(Error::new(ErrorKind::RequestTimeout, format!(
                    "request longer than {MAX_REQUEST_BYTES} bytes; closing"
                ))),
                Err(_) => Err(Error::new(ErrorKind::RequestTimeout, format!(
                    "request not completed within {} s; closing",
                    timeout.as_secs_f32()
                ))),
            },
        };
        if let Err(error) = read {
            let line = reply_line(&Reply::Error(error));
            let _ = tokio::time::timeout(timeout, write.write_all(line.as_bytes())).await;
            return;
        }
        let changes = serde_json::from_slice::<Request>(&line).is_ok_and(|r| r.changes_state());
        seat.set(
            if changes {
                Doing::Changing
            } else {
                Doing::Reading
            },
            admission,
        );
        // Not cut off at shutdown: a request finishes, and one that follows a cutover tells
        // its client the server is stopping (the shutdown grace bounds the wait). A reader
        // whose seat is given up stops at once; a change is never given up.
        let done = tokio::select! {
            done = dispatch(context, &peer, &line, &mut write) => done,
            _ = seat.evicted.cancelled() => {
                let line = reply_line(&Reply::Error(made_room()));
                let _ = tokio::time::timeout(timeout, write.write_all(line.as_bytes())).await;
                return;
            }
        };
        if done.is_err() {
            return; // the client went away; a cutover it started goes on
        }
        seat.set(Doing::Idle, admission);
    }
}

/// Who is connected on `stream`, for the audit trail; zeros when the kernel does not say.
fn peer(stream: &UnixStream) -> Peer {
    let Ok(cred) = stream.peer_cred() else {
        return Peer::default();
    };
    Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid().map_or(0, |p| p as u32),
        user: user_name(cred.uid()),
        token: None,
        source: None,
    }
}

/// The name of user `uid` in the password database, if it has one.
fn user_name(uid: u32) -> Option<String> {
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `entry` and `buf`, which we own and size; the name it
    // points to lives in `buf` and is copied out before `buf` goes.
    let done =
        unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    if done != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

enum Line {
    Complete,
    Eof,
    TooLong,
}

/// Reads one newline-terminated line into `line`, never buffering more than the cap.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> io::Result<Line> {
    let mut limited = reader.take(MAX_REQUEST_BYTES as u64);
    let n = limited.read_until(b'\n', line).await?;
    if line.last() == Some(&b'\n') {
        Ok(Line::Complete)
    } else if n == 0 {
        Ok(Line::Eof)
    } else if line.len() >= MAX_REQUEST_BYTES {
        Ok(Line::TooLong)
    } else {
        Ok(Line::Eof) // the client closed mid-line: nothing to answer
    }
}
