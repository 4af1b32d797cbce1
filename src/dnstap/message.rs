//! The dnstap messages (`dnstap.proto`, github.com/dnstap/dnstap.pb), declared here with
//! prost's derive so that no protoc runs at build time. Only the fields the collector reads
//! are declared: protobuf skips the others (and any field a newer schema adds).
//!
//! The schema is dedicated to the public domain (CC0 1.0) by the dnstap contributors:
//! "Written in 2013-2025 by the dnstap contributors. To the extent possible under law, the
//! author(s) have dedicated all copyright and related and neighboring rights to this file
//! to the public domain worldwide."

use bytes::Bytes;

/// `Dnstap.Type.MESSAGE`: the only kind of frame there is.
pub const TYPE_MESSAGE: i32 = 1;
/// `Message.Type.AUTH_RESPONSE`: an authoritative server's answer.
pub const AUTH_RESPONSE: i32 = 2;
/// `Message.Type.CLIENT_RESPONSE`: BIND labels an authoritative answer to a query with RD
/// set this way.
pub const CLIENT_RESPONSE: i32 = 6;

/// One dnstap frame's payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dnstap {
    /// Which server sent it (`dnstap-identity`).
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub identity: Option<Bytes>,
    /// `Dnstap.Type`; required by the schema.
    #[prost(int32, optional, tag = "15")]
    pub r#type: Option<i32>,
    #[prost(message, optional, tag = "14")]
    pub message: Option<Message>,
}

/// One DNS message a server sent or received.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// `Message.Type`; required by the schema.
    #[prost(int32, optional, tag = "1")]
    pub r#type: Option<i32>,
    /// The client (the resolver): 4 bytes for IPv4, 16 for IPv6.
    #[prost(bytes = "bytes", optional, tag = "4")]
    pub query_address: Option<Bytes>,
    #[prost(uint64, optional, tag = "8")]
    pub query_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "9")]
    pub query_time_nsec: Option<u32>,
    #[prost(uint64, optional, tag = "12")]
    pub response_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "13")]
    pub response_time_nsec: Option<u32>,
    /// The response in wire format.
    #[prost(bytes = "bytes", optional, tag = "14")]
    pub response_message: Option<Bytes>,
}

impl Message {
    /// When the server answered (Unix milliseconds): the response time, else the query
    /// time (BIND writes the query's arrival as both; NSD and Knot only the response time).
    pub fn answered_ms(&self) -> Option<u64> {
        let (sec, nsec) = match (self.response_time_sec, self.query_time_sec) {
            (Some(sec), _) => (sec, self.response_time_nsec.unwrap_or(0)),
            (None, Some(sec)) => (sec, self.query_time_nsec.unwrap_or(0)),
            (None, None) => return None,
        };
        Some(sec.checked_mul(1000)? + u64::from(nsec / 1_000_000))
    }
}
