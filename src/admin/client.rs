//! The `flipdns ctl` client: one request on the admin socket (or, with `--server`, over the
//! HTTPS API: [`super::remote`]), its progress and its reply. [`super::format`] prints
//! replies for people.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::remote::{Remote, Server};
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
    #[error("cannot reach the API at {url}: {cause} ({hint})")]
    Unreachable {
        url: String,
        cause: String,
        /// What to do about it: the CA, or the server's `[api] listen`.
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
    /// The client could not be set up (a token file, a CA file, a URL).
    #[error("{0}")]
    Setup(String),
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
            ClientError::Connect { .. } | ClientError::Unreachable { .. } => {
                protocol::ErrorKind::NoServer
            }
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

/// Where `ctl` sends its requests.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The admin socket at this path.
    Socket(std::path::PathBuf),
    /// The HTTPS API (`--server`).
    Api(Server),
}

/// A connection to the admin socket, or a client of the HTTPS API.
pub enum Client {
    Socket {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
    },
    Api(Box<Remote>),
}

impl Client {
    pub fn connect(endpoint: &Endpoint) -> Result<Client, ClientError> {
        let path = match endpoint {
            Endpoint::Socket(path) => path,
            Endpoint::Api(server) => return Ok(Client::Api(Box::new(Remote::connect(server)?))),
        };
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            hint: connect_hint(path, &source),
            source,
        })?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(Client::Socket {
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
        let (reader, writer) = match self {
            Client::Socket { reader, writer } => (reader, writer),
            Client::Api(remote) => return remote.call_with_progress(request, progress),
        };
        let mut line = serde_json::to_string(request).expect("requests serialize");
        line.push('\n');
        // A server that turns the connection away replies and closes without reading, so a
        // failed write may still have a reply waiting: read before giving up.
        let written = writer.write_all(line.as_bytes());
        loop {
            let mut reply = String::new();
            let read = reader.read_line(&mut reply);
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
            if let Some(done) = read_reply(&reply, &mut progress)? {
                return Ok(done);
            }
        }
    }
}

/// One reply line: `Some` with the reply when it is the last (`ok`), the refusal as an
/// `Err`, `None` after a progress line (handed to `progress`) or a newer server's progress
/// step this client does not know (skipped, so a new kind of step never breaks an older
/// client).
pub fn read_reply(
    line: &str,
    progress: &mut impl FnMut(&Progress),
) -> Result<Option<Response>, ClientError> {
    let parsed = match serde_json::from_str(line) {
        Ok(parsed) => parsed,
        Err(_) if line.starts_with("{\"progress\":") => return Ok(None),
        Err(e) => return Err(ClientError::BadReply(e)),
    };
    match parsed {
        Reply::Ok(value) => Ok(Some(value)),
        Reply::Error(error) => Err(ClientError::Refused(error)),
        Reply::Progress(p) => {
            progress(&p);
            Ok(None)
        }
    }
}
