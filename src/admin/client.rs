//! The `flipdns ctl` client: one request on the admin socket, its progress and its reply.
//! It depends only on [`crate::protocol`]; [`super::format`] prints replies for people.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::{self, Progress, Reply, Request, Response};

/// How long the client waits for the next line from the server. A waiting flip sends a
/// progress line every second, so only a stuck server runs into this.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a ctl command failed; each message is the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to admin socket {path}: {source} ({hint})")]
    Connect {
        path: String,
        source: std::io::Error,
        /// What to do about it: start the server, or get access to the socket.
        hint: String,
    },
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection without a reply")]
    NoReply,
    #[error("unreadable reply from the server: {0}")]
    BadReply(serde_json::Error),
    #[error("{0}")]
    Refused(protocol::Error),
}

impl ClientError {
    /// The exit code of `flipdns ctl` for this error: the kind's code for a refusal, 3 when
    /// there is no server to talk to, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }

    /// The error's kind, as `--json` reports it: the server's for a refusal, else the
    /// client's own (`no_server`, `client`).
    pub fn kind(&self) -> protocol::ErrorKind {
        match self {
            ClientError::Refused(error) => error.kind,
            ClientError::Connect { .. } => protocol::ErrorKind::NoServer,
            _ => protocol::ErrorKind::Client,
        }
    }
}

/// Why a connection may have failed, and what to do: for a permission error, who owns the
/// socket and how access is granted; otherwise whether the server runs.
fn connect_hint(path: &Path, error: &std::io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    if error.kind() != std::io::ErrorKind::PermissionDenied {
        return "is `flipdns serve` running?".into();
    }
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "the socket is owned by uid {} gid {} with mode {:04o}; the server's admin_socket_mode, and \
             admin_allowed_uids / admin_allowed_gids (supplementary groups count), decide who may use it, \
             and its directory must be searchable",
            m.uid(),
            m.gid(),
            m.mode() & 0o7777
        ),
        Err(_) => "a directory on the way to the socket is not searchable for you".into(),
    }
}

/// A connection to the admin socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            hint: connect_hint(path, &source),
            source,
        })?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends `request` and reads its reply; a `{"error": ...}` reply is an `Err`.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.call_with_progress(request, |_| {})
    }

    /// Like [`Client::call`], handing each progress line to `progress` as it arrives.
    pub fn call_with_progress(
        &mut self,
        request: &Request,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Response, ClientError> {
        let mut line = serde_json::to_string(request).expect("requests serialize");
        line.push('\n');
        // A server that turns the connection away replies and closes without reading, so a
        // failed write may still have a reply waiting: read before giving up.
        let written = self.writer.write_all(line.as_bytes());
        loop {
            let mut reply = String::new();
            let read = self.reader.read_line(&mut reply);
            match (read, &written) {
                (Ok(n), _) if n > 0 => {}
                (_, Err(e)) => {
                    return Err(ClientError::Io(std::io::Error::new(
                        e.kind(),
                        e.to_string(),
                    )));
                }
                (Ok(_), Ok(())) => return Err(ClientError::NoReply),
                (Err(e), Ok(())) => return Err(e.into()),
            }
            let parsed = match serde_json::from_str(&reply) {
                Ok(parsed) => parsed,
                // A newer server's progress step this client does not know: skipped, so a
                // new kind of step never breaks an older client.
                Err(_) if reply.starts_with("{\"progress\":") => continue,
                Err(e) => return Err(ClientError::BadReply(e)),
            };
            match parsed {
                Reply::Ok(value) => return Ok(value),
                Reply::Error(error) => return Err(ClientError::Refused(error)),
                Reply::Progress(p) => progress(&p),
            }
        }
    }
}
