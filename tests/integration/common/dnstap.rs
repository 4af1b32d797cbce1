//! dnstap as the secondaries send it, made by the tests: AUTH_RESPONSE frames for a name,
//! and Frame Streams around them.

use flipdns::dnstap::frames::{self, Control};
use flipdns::dnstap::message::{AUTH_RESPONSE, Dnstap, Message, TYPE_MESSAGE};
use hickory_proto::op::{Message as DnsMessage, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use prost::Message as _;

/// One AUTH_RESPONSE from `identity`: `resolver` asked for `name` and got `address` with
/// `ttl`, answered at `at_ms` (Unix ms).
pub fn answer(
    identity: &str,
    resolver: [u8; 4],
    name: &str,
    address: [u8; 4],
    ttl: u32,
    at_ms: u64,
) -> Vec<u8> {
    let owner = Name::from_ascii(name).unwrap();
    let mut response = DnsMessage::query();
    response.metadata.message_type = MessageType::Response;
    response.metadata.authoritative = true;
    response.add_query(Query::query(owner.clone(), RecordType::A));
    response.add_answer(Record::from_rdata(
        owner,
        ttl,
        RData::A(A::from(std::net::Ipv4Addr::from(address))),
    ));
    let frame = Dnstap {
        identity: (!identity.is_empty()).then(|| identity.as_bytes().to_vec().into()),
        r#type: Some(TYPE_MESSAGE),
        message: Some(Message {
            r#type: Some(AUTH_RESPONSE),
            query_address: Some(resolver.to_vec().into()),
            query_time_sec: None,
            query_time_nsec: None,
            response_time_sec: Some(at_ms / 1000),
            response_time_nsec: Some((at_ms % 1000) as u32 * 1_000_000),
            response_message: Some(response.to_vec().unwrap().into()),
        }),
    };
    frame.encode_to_vec()
}

/// A sender's opening on a socket: READY, then START once ACCEPT came (the caller reads it).
pub fn ready() -> Vec<u8> {
    frames::control(Control::Ready, true)
}

pub fn start() -> Vec<u8> {
    frames::control(Control::Start, true)
}

pub fn stop() -> Vec<u8> {
    frames::control(Control::Stop, false)
}

/// `payloads` as data frames.
pub fn data(payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads.iter().flat_map(|p| frames::data(p)).collect()
}

/// A Frame Streams file (as `fstrm_capture` writes and `fstrm_replay` reads): START,
/// the frames, STOP.
pub fn file(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = start();
    out.extend(data(payloads));
    out.extend(stop());
    out
}
