//! The admin protocol: request and reply types shared by the server and `flipdns ctl`.
//!
//! Newline-delimited JSON over a Unix socket: the client writes one request per line and
//! reads one reply per line, in order, on one connection for as long as it likes.
//!
//! ```text
//! -> {"cmd": "status"}
//! <- {"ok": {"generation": 3, "services": [...], "zones": [...]}}
//! -> {"cmd": "flip", "service": "app", "to": "green"}
//! <- {"ok": {"service": "app", "from": "blue", "to": "green", "changed": true, ...}}
//! -> {"cmd": "flip", "service": "app", "to": "purple"}
//! <- {"error": "unknown variant `purple`, expected `blue` or `green` at line 1 column 43"}
//! ```
//!
//! A request line longer than [`MAX_REQUEST_BYTES`], or one not completed within the
//! server's `admin_request_timeout`, is answered with an error and the connection closed. A
//! request that fails changes nothing. This module depends on nothing of the daemon, so the
//! client and scripts can rely on it alone.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::color::Color;

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every service and zone as served now, or only `service`.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    /// Make `to` the live color of `service`, at once.
    Flip {
        service: String,
        to: Color,
        /// Skip the cutover and flip at once (today every flip is immediate).
        #[serde(default)]
        now: bool,
    },
}

/// One reply line: `{"ok": T}` or `{"error": "why"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply<T> {
    #[serde(rename = "ok")]
    Ok(T),
    #[serde(rename = "error")]
    Error(String),
}

/// Reply to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Generation of the record set being served.
    pub generation: u64,
    pub services: Vec<ServiceStatus>,
    pub zones: Vec<ZoneStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// The name that follows the live color, e.g. `app.svc.example.com.`.
    pub fqdn: String,
    pub zone: String,
    pub live: Color,
    /// Flips of this service so far.
    pub generation: u64,
    /// Unix time of the last flip in milliseconds.
    pub flipped_at_ms: Option<u64>,
    /// TTL the service's answers carry now.
    pub ttl: u32,
    pub blue: Vec<IpAddr>,
    pub green: Vec<IpAddr>,
    /// Answers given since start, by color.
    pub answers: Answers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers {
    pub blue: u64,
    pub green: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneStatus {
    pub origin: String,
    pub serial: u32,
}

/// Reply to `flip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flipped {
    pub service: String,
    pub from: Color,
    pub to: Color,
    /// False when `to` was already live: nothing was written and no generation was used.
    pub changed: bool,
    pub generation: u64,
    /// SOA serial of the service's zone after the flip.
    pub serial: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let flip: Request =
            serde_json::from_str(r#"{"cmd":"flip","service":"app","to":"green"}"#).unwrap();
        assert_eq!(
            flip,
            Request::Flip {
                service: "app".into(),
                to: Color::Green,
                now: false
            }
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status { service: None }
        );
        for bad in [
            r#"{"cmd":"explode"}"#,
            r#"{"cmd":"flip","service":"app","to":"purple"}"#,
            r#"{"cmd":"status","x":1}"#,
            "garbage",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_are_ok_or_error() {
        assert_eq!(
            serde_json::to_string(&Reply::<u8>::Ok(1)).unwrap(),
            r#"{"ok":1}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::<u8>::Error("no".into())).unwrap(),
            r#"{"error":"no"}"#
        );
    }
}
