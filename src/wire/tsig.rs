//! TSIG (RFC 8945) on raw DNS messages: the keys, checking a signed request, and signing
//! the responses to it, one message or a zone transfer's stream.
//!
//! hickory-proto supplies the TSIG record, the "TSIG variables" of section 4.3.3 and the
//! HMACs. Everything that touches message bytes is here, byte-exact, because the digest
//! covers the bytes as received or sent: hickory's own verifier re-encodes the header (and
//! so loses the Z bit), has no time check, and cannot sign message 2..N of a transfer.
//! Requests flipdns itself signs (NOTIFY, SOA checks of secondaries) use hickory's client
//! side, [`Key::signer`].

use std::sync::Arc;

use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record};
use hickory_proto::rr::{Name, RData, Record, TSigner};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use crate::wire::HEADER_LEN;

/// Seconds of clock difference a signature tolerates (RFC 8945 section 10 recommends 300).
pub const FUDGE: u16 = 300;

/// A configured key. The name is lowercase and fully qualified, as it arrives on the wire.
pub struct Key {
    pub name: Name,
    pub algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug print.
        write!(f, "Key({} {})", self.name, self.algorithm.to_name())
    }
}

/// The algorithms flipdns signs and verifies with, by their config names.
pub const ALGORITHMS: [(&str, TsigAlgorithm); 3] = [
    ("hmac-sha256", TsigAlgorithm::HmacSha256),
    ("hmac-sha384", TsigAlgorithm::HmacSha384),
    ("hmac-sha512", TsigAlgorithm::HmacSha512),
];

impl Key {
    pub fn new(name: Name, algorithm: TsigAlgorithm, secret: Vec<u8>) -> Key {
        Key {
            name: name.to_lowercase(),
            algorithm,
            secret,
        }
    }

    /// For requests flipdns signs itself, and to verify their answers.
    pub fn signer(&self) -> TSigner {
        TSigner::new(
            self.secret.clone(),
            self.algorithm.clone(),
            self.name.clone(),
            FUDGE,
        )
        .expect("configured keys use a supported algorithm")
    }

    /// Whether `other` is the same key: name, algorithm and secret.
    pub fn same(&self, other: &Key) -> bool {
        self.name == other.name && self.algorithm == other.algorithm && self.secret == other.secret
    }

    /// Length of this algorithm's MAC.
    fn mac_len(&self) -> usize {
        match self.algorithm {
            TsigAlgorithm::HmacSha384 => 48,
            TsigAlgorithm::HmacSha512 => 64,
            _ => 32,
        }
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        self.algorithm
            .mac_data(&self.secret, data)
            .expect("configured keys use a supported algorithm")
    }

    /// Bytes the TSIG record of a response signed with this key adds (with `other` bytes
    /// of other data): reserved before a response is fitted into a UDP payload.
    pub fn record_len(&self, other: usize) -> usize {
        let name = |n: &Name| n.to_bytes().map_or(255, |b| b.len());
        name(&self.name) + 10 + name(&self.algorithm.to_name()) + 16 + self.mac_len() + other
    }
}

/// The TSIG record of a received message.
#[derive(Debug, Clone)]
pub struct Found {
    /// Offset of the record (its owner name) in the message.
    pub start: usize,
    pub key_name: Name,
    pub rdata: TSIG,
}

/// A verified request: what signing its responses takes.
#[derive(Debug, Clone)]
pub struct Signed {
    pub key: Arc<Key>,
    mac: Vec<u8>,
    time: u64,
    fudge: u16,
    original_id: u16,
}

/// What checking a request's TSIG came to, in RFC 8945 section 5.2 order.
#[derive(Debug)]
pub enum Check {
    /// Answer, and sign the answer.
    Valid(Signed),
    /// The record cannot be read, or its MAC size is illegal: FORMERR, unsigned.
    Malformed,
    /// Unknown key or algorithm: NOTAUTH with an unsigned BADKEY.
    BadKey(Found),
    /// The MAC does not verify: NOTAUTH with an unsigned BADSIG.
    BadSig(Found),
    /// Good MAC, but the time is outside the fudge: NOTAUTH with a signed BADTIME.
    BadTime(Signed),
    /// Good but truncated MAC (not accepted here): NOTAUTH with a signed BADTRUNC.
    BadTrunc(Signed),
}

/// Reads the TSIG record at `start`, the last record of `message`.
fn found(message: &[u8], start: usize) -> Option<Found> {
    let mut decoder = BinDecoder::new(message);
    decoder.read_slice(start).ok()?;
    let record = Record::<RData>::read(&mut decoder).ok()?;
    let name = record.name.clone();
    let RData::TSIG(mut rdata) = record.data else {
        return None;
    };
    // hickory matches algorithm names case-sensitively; names on the wire are not.
    if let TsigAlgorithm::Unknown(n) = &rdata.algorithm {
        rdata.algorithm = TsigAlgorithm::from_name(n.to_lowercase());
    }
    Some(Found {
        start,
        key_name: name.to_lowercase(),
        rdata,
    })
}

/// Checks the TSIG record at `start` of the request `message` against `keys`, at Unix time
/// `now` (seconds).
pub fn check(message: &[u8], start: usize, keys: &[Arc<Key>], now: u64) -> Check {
    let Some(found) = found(message, start) else {
        return Check::Malformed;
    };
    let Some(key) = keys
        .iter()
        .find(|k| k.name == found.key_name && k.algorithm == found.rdata.algorithm)
    else {
        return Check::BadKey(found);
    };
    let (mac, full) = (&found.rdata.mac, key.mac_len());
    if mac.len() > full || mac.len() < 10.max(full / 2) {
        return Check::Malformed; // section 5.2.2.1
    }
    let mut digest = Vec::with_capacity(found.start + 128);
    digest.extend_from_slice(&found.rdata.oid.to_be_bytes());
    digest.extend_from_slice(&message[2..10]);
    let additional = u16::from_be_bytes([message[10], message[11]]);
    digest.extend_from_slice(&(additional - 1).to_be_bytes());
    digest.extend_from_slice(&message[HEADER_LEN..found.start]);
    digest.extend_from_slice(&variables(&found.key_name, &found.rdata));
    let computed = key.mac(&digest);
    if !constant_time_eq(&computed[..mac.len()], mac) {
        return Check::BadSig(found);
    }
    let signed = Signed {
        key: key.clone(),
        mac: mac.clone(),
        time: found.rdata.time,
        fudge: found.rdata.fudge,
        original_id: found.rdata.oid,
    };
    if now.abs_diff(signed.time) > u64::from(signed.fudge) {
        Check::BadTime(signed)
    } else if mac.len() < full {
        Check::BadTrunc(signed)
    } else {
        Check::Valid(signed)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 8945 section 4.3.3: key name and algorithm in canonical form, times, error, other.
fn variables(key_name: &Name, tsig: &TSIG) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // A fresh encoder: BinEncoder::new on a non-empty vector writes over it.
    tsig.emit_tsig_for_mac(&mut BinEncoder::new(&mut out), key_name)
        .expect("encoding into a vector does not fail");
    out
}

/// Appends `rdata` as the TSIG record owned by `key_name` and counts it in ARCOUNT.
fn append(message: &mut Vec<u8>, key_name: &Name, rdata: TSIG) {
    let mut record = Vec::with_capacity(128);
    // A fresh encoder: the key name is written uncompressed, as BIND expects.
    make_tsig_record(key_name.clone(), rdata)
        .emit(&mut BinEncoder::new(&mut record))
        .expect("encoding into a vector does not fail");
    message.extend_from_slice(&record);
    let additional = u16::from_be_bytes([message[10], message[11]]) + 1;
    message[10..12].copy_from_slice(&additional.to_be_bytes());
}

fn push_mac(digest: &mut Vec<u8>, mac: &[u8]) {
    digest.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    digest.extend_from_slice(mac);
}

impl Signed {
    /// Signs `response`, complete and unsigned, as the first (or only) message of the
    /// answer; returns its MAC, the prior MAC of the next message of a stream.
    fn sign_first(
        &self,
        response: &mut Vec<u8>,
        (time, fudge): (u64, u16),
        error: Option<TsigError>,
        other: Vec<u8>,
    ) -> Vec<u8> {
        let stub = TSIG::new(
            self.key.algorithm.clone(),
            time,
            fudge,
            Vec::new(),
            self.original_id,
            error,
            other,
        );
        let mut digest = Vec::with_capacity(response.len() + self.mac.len() + 128);
        push_mac(&mut digest, &self.mac);
        digest.extend_from_slice(response);
        digest.extend_from_slice(&variables(&self.key.name, &stub));
        let mac = self.key.mac(&digest);
        append(response, &self.key.name, stub.set_mac(mac.clone()));
        mac
    }

    /// Signs a response to this request at Unix time `now`.
    pub fn sign(&self, response: &mut Vec<u8>, now: u64) {
        self.sign_first(response, (now, FUDGE), None, Vec::new());
    }

    /// A stream signer for the messages of a zone transfer answering this request.
    pub fn stream(&self) -> Stream {
        Stream {
            request: self.clone(),
            prior: None,
        }
    }
}

/// Signs each message of a transfer in turn (RFC 8945 section 5.3.1): the first like any
/// response, each later one over the prior MAC, the message and the timers. Every message
/// is signed, which every implementation verifies (hickory cannot verify gaps).
pub struct Stream {
    request: Signed,
    prior: Option<Vec<u8>>,
}

impl Stream {
    /// Signs the next complete message at Unix time `now` (which must not go backwards).
    pub fn sign(&mut self, message: &mut Vec<u8>, now: u64) {
        let mac = match &self.prior {
            None => self
                .request
                .sign_first(message, (now, FUDGE), None, Vec::new()),
            Some(prior) => {
                let key = &self.request.key;
                let mut digest = Vec::with_capacity(message.len() + prior.len() + 16);
                push_mac(&mut digest, prior);
                digest.extend_from_slice(message);
                digest.extend_from_slice(&((now >> 32) as u16).to_be_bytes());
                digest.extend_from_slice(&(now as u32).to_be_bytes());
                digest.extend_from_slice(&FUDGE.to_be_bytes());
                let mac = key.mac(&digest);
                let rdata = TSIG::new(
                    key.algorithm.clone(),
                    now,
                    FUDGE,
                    mac.clone(),
                    self.request.original_id,
                    None,
                    Vec::new(),
                );
                append(message, &key.name, rdata);
                mac
            }
        };
        self.prior = Some(mac);
    }
}

/// Appends what a failed check says to the error response `response` (header, question
/// and OPT written, RCODE NOTAUTH), at Unix time `now`: BADKEY and BADSIG unsigned, with the
/// request's key name and algorithm (section 5.3.2); BADTIME signed, with the request's time
/// and our clock in other data (section 5.2.3); BADTRUNC signed.
pub fn append_error(response: &mut Vec<u8>, check: &Check, now: u64) {
    match check {
        Check::BadKey(found) | Check::BadSig(found) => {
            let error = match check {
                Check::BadKey(_) => TsigError::BadKey,
                _ => TsigError::BadSig,
            };
            let rdata = TSIG::new(
                found.rdata.algorithm.clone(),
                now,
                found.rdata.fudge,
                Vec::new(),
                found.rdata.oid,
                Some(error),
                Vec::new(),
            );
            append(response, &found.key_name, rdata);
        }
        Check::BadTime(signed) => {
            let other = now.to_be_bytes()[2..8].to_vec();
            let times = (signed.time, signed.fudge);
            signed.sign_first(response, times, Some(TsigError::BadTime), other);
        }
        Check::BadTrunc(signed) => {
            signed.sign_first(
                response,
                (now, FUDGE),
                Some(TsigError::BadTrunc),
                Vec::new(),
            );
        }
        Check::Valid(_) | Check::Malformed => {}
    }
}

impl Check {
    /// The TSIG error name, for counters and logs.
    pub fn error_name(&self) -> &'static str {
        match self {
            Check::Valid(_) => "none",
            Check::Malformed => "malformed",
            Check::BadKey(_) => "badkey",
            Check::BadSig(_) => "badsig",
            Check::BadTime(_) => "badtime",
            Check::BadTrunc(_) => "badtrunc",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::RecordType;

    fn key(secret: &[u8]) -> Arc<Key> {
        Arc::new(Key::new(
            Name::from_ascii("xfr-key.").unwrap(),
            TsigAlgorithm::HmacSha256,
            secret.to_vec(),
        ))
    }

    /// A SOA query signed by hickory's client side, and the verifier for its answers.
    fn signed_query(key: &Key, now: u64) -> (Vec<u8>, hickory_proto::rr::TSigVerifier, usize) {
        let mut query = Message::query();
        query.add_query(Query::query(
            Name::from_ascii("svc.example.com.").unwrap(),
            RecordType::SOA,
        ));
        let verifier = query.finalize(&key.signer(), now).unwrap().unwrap();
        let bytes = query.to_vec().unwrap();
        let start = tsig_start(&bytes);
        (bytes, verifier, start)
    }

    /// Where the last record starts: after the header and the one question.
    fn tsig_start(bytes: &[u8]) -> usize {
        let mut at = HEADER_LEN;
        while bytes[at] != 0 {
            at += 1 + bytes[at] as usize;
        }
        at + 5
    }

    fn answer(query: &[u8]) -> Vec<u8> {
        let mut response = query[..tsig_start(query)].to_vec();
        response[2] |= 0x84; // QR, AA
        response[10..12].copy_from_slice(&[0, 0]);
        response
    }

    #[test]
    fn a_signed_query_verifies_and_its_signed_answer_verifies_at_the_client() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let (query, mut verifier, start) = signed_query(&k, 1_000_000);
        let Check::Valid(signed) = check(&query, start, std::slice::from_ref(&k), 1_000_010) else {
            panic!("valid")
        };
        let mut response = answer(&query);
        signed.sign(&mut response, 1_000_010);
        verifier.verify(&response).expect("the client verifies");
    }

    #[test]
    fn unknown_keys_bad_macs_and_skewed_clocks_are_told_apart() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let other = key(b"another secret of thirty-two b..");
        let (query, _, start) = signed_query(&k, 1_000_000);
        assert!(matches!(
            check(&query, start, &[], 1_000_000),
            Check::BadKey(_)
        ));
        assert!(matches!(
            check(&query, start, &[other], 1_000_000),
            Check::BadSig(_)
        ));
        assert!(matches!(
            check(&query, start, std::slice::from_ref(&k), 1_000_000 + 301),
            Check::BadTime(_)
        ));
        let mut tampered = query.clone();
        tampered[3] ^= 0x40; // the Z bit: covered by the MAC
        assert!(matches!(
            check(&tampered, start, &[k], 1_000_000),
            Check::BadSig(_)
        ));
    }

    #[test]
    fn a_badtime_answer_is_signed_with_the_request_time_and_our_clock() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let (query, mut verifier, start) = signed_query(&k, 1_000_000);
        let found = check(&query, start, &[k], 1_000_500);
        let mut response = answer(&query);
        response[3] = 9;
        append_error(&mut response, &found, 1_000_500);
        verifier.verify(&response).expect("signed");
        let parsed = Message::from_vec(&response).unwrap();
        let tsig = &parsed.signature().unwrap().data;
        assert_eq!(tsig.error, Some(TsigError::BadTime));
        assert_eq!(tsig.time, 1_000_000);
        assert_eq!(tsig.other, 1_000_500u64.to_be_bytes()[2..8].to_vec());
    }

    #[test]
    fn a_stream_verifies_message_by_message() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let (query, mut verifier, start) = signed_query(&k, 1_000_000);
        let Check::Valid(signed) = check(&query, start, &[k], 1_000_000) else {
            panic!()
        };
        let mut stream = signed.stream();
        for i in 0..4 {
            let mut message = answer(&query);
            stream.sign(&mut message, 1_000_000 + i);
            verifier
                .verify(&message)
                .unwrap_or_else(|e| panic!("message {i}: {e}"));
        }
    }

    #[test]
    fn the_reserved_length_is_what_signing_adds() {
        let k = key(b"0123456789abcdef0123456789abcdef");
        let (query, _, start) = signed_query(&k, 1_000_000);
        let Check::Valid(signed) = check(&query, start, std::slice::from_ref(&k), 1_000_000) else {
            panic!()
        };
        let mut response = answer(&query);
        let before = response.len();
        signed.sign(&mut response, 1_000_000);
        assert_eq!(response.len() - before, k.record_len(0));
    }
}
