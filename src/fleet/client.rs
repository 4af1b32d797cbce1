//! The two questions the primary asks a secondary, over UDP: NOTIFY (RFC 1996) and "which
//! serial do you serve?" (an SOA query). Both are signed with the secondary's key when it
//! has one, and their answers verified with it.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::records::ZoneRecord;
use crate::wire::tsig::Key;

/// Largest answer read; an SOA answer is far smaller.
const MAX_ANSWER: usize = 4096;

/// Why a question got no usable answer; the text is what status and logs show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Network(String),
    #[error("answered {0}")]
    Rcode(String),
    #[error("answer not verified with key {key}: {reason}")]
    Unverified { key: String, reason: String },
    #[error("answer without the zone's SOA")]
    NoSoa,
}

/// Sends a NOTIFY for `soa`'s zone (with the SOA, so the secondary knows the serial) and
/// waits up to `timeout` for its acknowledgement.
pub async fn notify(
    to: SocketAddr,
    soa: &ZoneRecord,
    key: Option<&Key>,
    now: u64,
    timeout: Duration,
) -> Result<(), AskError> {
    let mut message = Message::new(random_id(), MessageType::Query, OpCode::Notify);
    message.metadata.authoritative = true;
    message.add_query(Query::query(soa.name.clone(), RecordType::SOA));
    message.add_answer(Record::from_rdata(
        soa.name.clone(),
        soa.ttl,
        soa.rdata.clone(),
    ));
    ask(to, message, key, now, timeout).await.map(|_| ())
}

/// Asks `to` for the SOA of `zone` (recursion not desired) and returns its serial.
pub async fn serial(
    to: SocketAddr,
    zone: &Name,
    key: Option<&Key>,
    now: u64,
    timeout: Duration,
) -> Result<u32, AskError> {
    let mut message = Message::new(random_id(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(zone.clone(), RecordType::SOA));
    let answer = ask(to, message, key, now, timeout).await?;
    answer
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) if r.name == *zone => Some(soa.serial),
            _ => None,
        })
        .ok_or(AskError::NoSoa)
}

/// Sends `message` (signed with `key`) and returns the verified answer with its ID.
async fn ask(
    to: SocketAddr,
    mut message: Message,
    key: Option<&Key>,
    now: u64,
    timeout: Duration,
) -> Result<Message, AskError> {
    let network = |e: std::io::Error| AskError::Network(e.to_string());
    let mut verifier = match key {
        Some(key) => message
            .finalize(&key.signer(), now)
            .map_err(|e| AskError::Network(format!("cannot sign: {e}")))?,
        None => None,
    };
    let bytes = message
        .to_vec()
        .map_err(|e| AskError::Network(format!("cannot encode: {e}")))?;
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    // A fresh socket (and port) per question: an answer can only come from `to`.
    let socket = UdpSocket::bind(local).await.map_err(network)?;
    socket.connect(to).await.map_err(network)?;
    socket.send(&bytes).await.map_err(network)?;
    let id = message.metadata.id;
    let mut buffer = vec![0u8; MAX_ANSWER];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let len = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
            .await
            .map_err(|_| AskError::Timeout(timeout))?
            .map_err(network)?;
        let bytes = &buffer[..len];
        if bytes.len() < 12
            || u16::from_be_bytes([bytes[0], bytes[1]]) != id
            || bytes[2] & 0x80 == 0
        {
            continue; // not the answer to this question
        }
        let answer = match &mut verifier {
            Some(verifier) => match verifier.verify(bytes) {
                Ok(response) => response.into_message(),
                Err(e) => {
                    // An unsigned error answer says why: BADKEY, BADSIG, BADTIME.
                    let told = Message::from_vec(bytes).ok().and_then(|m| {
                        let error = m.signature().and_then(|s| s.data.error);
                        error.map(|e| format!("{} ({e:?})", m.metadata.response_code))
                    });
                    return Err(AskError::Unverified {
                        key: key.map(|k| k.name.to_string()).unwrap_or_default(),
                        reason: told.unwrap_or_else(|| e.to_string()),
                    });
                }
            },
            None => Message::from_vec(bytes).map_err(|e| AskError::Network(e.to_string()))?,
        };
        if answer.metadata.response_code != ResponseCode::NoError {
            return Err(AskError::Rcode(answer.metadata.response_code.to_string()));
        }
        return Ok(answer);
    }
}

/// A message ID nobody can guess in advance (std's hasher keys are random per process and
/// per hasher); TSIG protects the answers that matter.
fn random_id() -> u16 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish() as u16
}
