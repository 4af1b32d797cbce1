//! The `flipdns ctl` client: one request, one reply, printed for a person or as JSON.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::protocol::{Flipped, Reply, Request, Status};

/// How long the client waits for the server to answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a ctl command failed; each message is the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to admin socket {path}: {source} (is `flipdns serve` running?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("admin socket closed without a reply")]
    NoReply,
    #[error("unreadable reply from the server: {0}")]
    BadReply(serde_json::Error),
    #[error("{0}")]
    Refused(String),
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
    pub fn call<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        let mut line = serde_json::to_string(request).expect("requests serialize");
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply)? == 0 {
            return Err(ClientError::NoReply);
        }
        match serde_json::from_str(&reply).map_err(ClientError::BadReply)? {
            Reply::Ok(value) => Ok(value),
            Reply::Error(message) => Err(ClientError::Refused(message)),
        }
    }
}

/// Human-readable `status`.
pub fn format_status(status: &Status) -> String {
    let mut out = String::new();
    let width = status
        .services
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(7)
        .max(7);
    out.push_str(&format!(
        "{:width$}  {:5}  {:>6}  {:>10}  {}\n",
        "SERVICE", "LIVE", "TTL", "GENERATION", "ADDRESSES"
    ));
    for s in &status.services {
        let live = match s.live {
            crate::color::Color::Blue => &s.blue,
            crate::color::Color::Green => &s.green,
        };
        let addresses: Vec<String> = live.iter().map(|a| a.to_string()).collect();
        out.push_str(&format!(
            "{:width$}  {:5}  {:>6}  {:>10}  {}\n",
            s.name,
            s.live.as_str(),
            s.ttl,
            s.generation,
            addresses.join(" ")
        ));
    }
    for z in &status.zones {
        out.push_str(&format!("zone {} serial {}\n", z.origin, z.serial));
    }
    out.push_str(&format!("snapshot generation {}\n", status.generation));
    out
}

/// Human-readable `flip`.
pub fn format_flipped(flipped: &Flipped) -> String {
    if flipped.changed {
        format!(
            "{}: {} -> {} (generation {}, serial {})\n",
            flipped.service, flipped.from, flipped.to, flipped.generation, flipped.serial
        )
    } else {
        format!(
            "{}: already {}, nothing changed (generation {})\n",
            flipped.service, flipped.to, flipped.generation
        )
    }
}
