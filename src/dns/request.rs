//! Parsing a request datagram without allocating: header, the one question, and EDNS.
//!
//! Everything a peer sends is checked against the packet's length before it is read. What
//! cannot be answered safely is dropped (shorter than a header, or a response: answering
//! responses invites loops between servers); what is malformed gets FORMERR; unknown opcodes
//! get NOTIMP. The question name must be uncompressed: in the first question a pointer could
//! only point back into the header.

use crate::wire::subnet::ClientSubnet;
use crate::wire::{
    Dropped, HEADER_LEN, MAX_NAME_LEN, OPCODE_NOTIFY, OPCODE_QUERY, OPCODE_UPDATE,
    OPTION_CLIENT_SUBNET, OPTION_NSID, RCODE_FORMERR, RCODE_NOTIMP, TYPE_IXFR, TYPE_OPT, TYPE_TSIG,
};

/// A request that can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The whole message as received.
    pub packet: &'a [u8],
    pub id: u16,
    pub opcode: u8,
    /// Recursion desired: copied into the reply (RFC 1035 section 4.1.1).
    pub rd: bool,
    /// Checking disabled: copied into the reply (RFC 4035 section 3.1.6).
    pub cd: bool,
    /// The question as received (name, type, class), echoed verbatim so its case is kept.
    pub question: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// Where the TSIG record starts, when the request is signed (it is the last record).
    pub tsig_at: Option<usize>,
}

impl Request<'_> {
    /// The question name in wire format, as received.
    pub fn qname(&self) -> &[u8] {
        &self.question[..self.question.len() - 4]
    }
}

/// The OPT record of a request (RFC 6891).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The requester's UDP payload size, at least 512 (RFC 6891 section 6.2.5).
    pub udp_size: u16,
    pub version: u8,
    /// DNSSEC OK: copied into the reply's OPT (RFC 3225).
    pub dnssec_ok: bool,
    pub client_subnet: Option<ClientSubnet>,
    /// The requester asks for our name server identifier (RFC 5001).
    pub nsid: bool,
}

/// What a packet turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Request(Request<'a>),
    Dropped(Dropped),
    /// Answer with this RCODE; the question is echoed when it was readable.
    Error {
        id: u16,
        opcode: u8,
        rd: bool,
        rcode: u8,
        question: Option<&'a [u8]>,
    },
}

/// Parses one DNS message received from a client.
pub fn parse(packet: &[u8]) -> Parsed<'_> {
    if packet.len() < HEADER_LEN {
        return Parsed::Dropped(Dropped::Short);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Parsed::Dropped(Dropped::Response);
    }
    let opcode = ((flags >> 11) & 0xF) as u8;
    let rd = flags & 0x0100 != 0;
    let error = |rcode, question| Parsed::Error {
        id,
        opcode,
        rd,
        rcode,
        question,
    };
    if !matches!(opcode, OPCODE_QUERY | OPCODE_NOTIFY | OPCODE_UPDATE) {
        // RFC 8906 section 3.1.4: NOTIMP, nothing of the request read or echoed.
        return Parsed::Error {
            id,
            opcode,
            rd: false,
            rcode: RCODE_NOTIMP,
            question: None,
        };
    }
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    if count(4) != 1 {
        return error(RCODE_FORMERR, None);
    }
    let Some(name_end) = question_name_end(packet) else {
        return error(RCODE_FORMERR, None);
    };
    let question_end = name_end + 4;
    let Some(question) = packet.get(HEADER_LEN..question_end) else {
        return error(RCODE_FORMERR, None);
    };
    let qtype = u16::from_be_bytes([packet[name_end], packet[name_end + 1]]);
    let qclass = u16::from_be_bytes([packet[name_end + 2], packet[name_end + 3]]);

    let formerr = error(RCODE_FORMERR, Some(question));
    let counts = [count(6), count(8), count(10)];
    if !sections_fit(opcode, qtype, counts) {
        return formerr;
    }
    let Some((edns, tsig_at)) = records(packet, question_end, counts) else {
        return formerr;
    };
    Parsed::Request(Request {
        packet,
        id,
        opcode,
        rd,
        cd: flags & 0x0010 != 0,
        question,
        qtype,
        qclass,
        edns,
        tsig_at,
    })
}

/// Whether the answer and authority sections hold what a request of `opcode` may carry:
/// nothing in a query but the client's SOA in an IXFR's authority section (RFC 1995), at
/// most the SOA in a NOTIFY's answer (RFC 1996); an UPDATE's sections are its own (it is
/// refused anyway). A query with records there is malformed, as NSD and Knot say.
fn sections_fit(opcode: u8, qtype: u16, [answers, authority, _]: [u16; 3]) -> bool {
    match opcode {
        OPCODE_QUERY if qtype == TYPE_IXFR => answers == 0 && authority <= 1,
        OPCODE_QUERY => answers == 0 && authority == 0,
        OPCODE_NOTIFY => answers <= 1 && authority == 0,
        _ => true,
    }
}

/// Bounds-checks every record after the question, reads the OPT record (one at most,
/// owned by the root, in the additional section only: RFC 6891 section 6.1.1) and finds the
/// TSIG record (the last record, in the additional section: RFC 8945 section 5.1). `None`
/// when anything is malformed.
fn records(
    packet: &[u8],
    mut at: usize,
    [answers, authority, additional]: [u16; 3],
) -> Option<(Option<Edns>, Option<usize>)> {
    for _ in 0..u32::from(answers) + u32::from(authority) {
        let r = record(packet, at)?;
        if r.rtype == TYPE_OPT || r.rtype == TYPE_TSIG {
            return None;
        }
        at = r.end;
    }
    let mut edns = None;
    let mut tsig_at = None;
    for index in 0..additional {
        let r = record(packet, at)?;
        if r.rtype == TYPE_TSIG {
            if index + 1 != additional {
                return None;
            }
            tsig_at = Some(at);
        }
        if r.rtype == TYPE_OPT {
            if edns.is_some() || r.name_end != at + 1 || packet[at] != 0 {
                return None;
            }
            edns = Some(opt(r.class, r.ttl, &packet[r.end - r.rdata_len..r.end])?);
        }
        at = r.end;
    }
    // Trailing bytes the counts do not account for are malformed too.
    (at == packet.len()).then_some((edns, tsig_at))
}

/// End of the uncompressed question name at offset 12, or `None` if it is malformed.
pub(super) fn question_name_end(packet: &[u8]) -> Option<usize> {
    let mut at = HEADER_LEN;
    loop {
        let len = *packet.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None; // a pointer, or a reserved label type (RFC 6891 section 5)
        }
        at += 1 + len;
        if at - HEADER_LEN >= MAX_NAME_LEN {
            return None;
        }
    }
}

pub(super) struct Record {
    pub(super) name_end: usize,
    pub(super) rtype: u16,
    pub(super) class: u16,
    pub(super) ttl: u32,
    pub(super) rdata_len: usize,
    pub(super) end: usize,
}

/// Bounds-checks one resource record at `at`. Names may end in a pointer, which must point
/// backwards (a forward pointer, or one into itself, is how compression loops are built);
/// the names are never followed, since nothing here needs them.
pub(super) fn record(packet: &[u8], start: usize) -> Option<Record> {
    let mut at = start;
    let mut len = 0;
    let name_end = loop {
        let byte = *packet.get(at)?;
        match byte & 0xC0 {
            0x00 if byte == 0 => break at + 1,
            0x00 => {
                len += 1 + byte as usize;
                if len >= MAX_NAME_LEN {
                    return None;
                }
                at += 1 + byte as usize;
            }
            0xC0 => {
                let target = (((byte & 0x3F) as usize) << 8) | *packet.get(at + 1)? as usize;
                if target >= start {
                    return None;
                }
                break at + 2;
            }
            _ => return None,
        }
    };
    let fixed = packet.get(name_end..name_end + 10)?;
    let rdata_len = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
    let end = name_end + 10 + rdata_len;
    if end > packet.len() {
        return None;
    }
    Some(Record {
        name_end,
        rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        class: u16::from_be_bytes([fixed[2], fixed[3]]),
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        rdata_len,
        end,
    })
}

/// The OPT pseudo-record: payload size in the class, version and DO in the TTL, options in
/// the data. Unknown options and flags are ignored (RFC 6891 section 6.1.2).
pub(super) fn opt(class: u16, ttl: u32, mut options: &[u8]) -> Option<Edns> {
    let mut client_subnet = None;
    let mut nsid = false;
    while !options.is_empty() {
        let header = options.get(..4)?;
        let code = u16::from_be_bytes([header[0], header[1]]);
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let data = options.get(4..4 + len)?;
        if code == OPTION_CLIENT_SUBNET && client_subnet.is_none() {
            client_subnet = Some(subnet(data)?);
        }
        nsid |= code == OPTION_NSID;
        options = &options[4 + len..];
    }
    Some(Edns {
        udp_size: class.max(512),
        version: (ttl >> 16) as u8,
        dnssec_ok: ttl & 0x8000 != 0,
        client_subnet,
        nsid,
    })
}

/// RFC 7871 section 6: the address holds exactly the source prefix's octets, with the bits
/// past the prefix zero; anything else is FORMERR (section 7.1.1).
fn subnet(data: &[u8]) -> Option<ClientSubnet> {
    let header = data.get(..4)?;
    let family = u16::from_be_bytes([header[0], header[1]]);
    let source_prefix = header[2];
    let max_prefix = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    let bytes = &data[4..];
    if source_prefix > max_prefix || bytes.len() != (source_prefix as usize).div_ceil(8) {
        return None;
    }
    let mut address = [0u8; 16];
    address[..bytes.len()].copy_from_slice(bytes);
    let spare_bits = (8 - source_prefix % 8) % 8;
    if let Some(&last) = bytes.last()
        && last & ((1u8 << spare_bits) - 1) != 0
    {
        return None;
    }
    Some(ClientSubnet {
        family,
        source_prefix,
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixture::{query, with_opt};

    fn formerr(packet: &[u8]) -> bool {
        matches!(
            parse(packet),
            Parsed::Error {
                rcode: RCODE_FORMERR,
                ..
            }
        )
    }

    #[test]
    fn parses_a_plain_query() {
        let packet = query("App.Svc.Example.Com", 1);
        let Parsed::Request(request) = parse(&packet) else {
            panic!()
        };
        assert_eq!(request.id, 0x1234);
        assert!(request.rd);
        assert_eq!(request.qtype, 1);
        assert_eq!(request.qclass, 1);
        assert_eq!(request.qname(), b"\x03App\x03Svc\x07Example\x03Com\x00");
        assert_eq!(request.edns, None);
        assert_eq!(request.tsig_at, None);
    }

    #[test]
    fn a_tsig_record_is_found_last_and_refused_anywhere_else() {
        let tsig = [0, 0, 250, 0, 255, 0, 0, 0, 0, 0, 0];
        let mut signed = query("a.b", 1);
        let at = signed.len();
        signed[11] = 1;
        signed.extend_from_slice(&tsig);
        let Parsed::Request(request) = parse(&signed) else {
            panic!()
        };
        assert_eq!(request.tsig_at, Some(at));
        let mut not_last = signed.clone();
        not_last[11] = 2;
        not_last.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(formerr(&not_last), "TSIG before another record");
        let mut ixfr = query("a.b", 251);
        ixfr[9] = 1;
        ixfr.extend_from_slice(&tsig);
        assert!(formerr(&ixfr), "TSIG in the authority section");
    }

    #[test]
    fn parses_edns_and_client_subnet() {
        let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2];
        let packet = with_opt(
            query("a.b", 1),
            0x0000_8000,
            &[&[0, 99, 0, 1, 7][..], &ecs].concat(),
        );
        let Parsed::Request(request) = parse(&packet) else {
            panic!("{:?}", parse(&packet))
        };
        let edns = request.edns.unwrap();
        assert_eq!(edns.udp_size, 1232);
        assert!(edns.dnssec_ok);
        let subnet = edns.client_subnet.unwrap();
        assert_eq!((subnet.family, subnet.source_prefix), (1, 24));
        assert_eq!(subnet.address[..4], [192, 0, 2, 0]);
    }

    #[test]
    fn drops_what_cannot_be_answered() {
        assert_eq!(parse(&[0; 11]), Parsed::Dropped(Dropped::Short));
        let mut response = query("a", 1);
        response[2] |= 0x80;
        assert_eq!(parse(&response), Parsed::Dropped(Dropped::Response));
    }

    #[test]
    fn unknown_opcodes_get_notimp_with_nothing_echoed() {
        let mut packet = query("a", 1);
        packet[2] = 15 << 3 | 1;
        assert_eq!(
            parse(&packet),
            Parsed::Error {
                id: 0x1234,
                opcode: 15,
                rd: false,
                rcode: RCODE_NOTIMP,
                question: None
            }
        );
    }

    #[test]
    fn malformed_packets_get_formerr() {
        let good = query("a.b", 1);
        let mut two_questions = good.clone();
        two_questions[5] = 2;
        assert!(formerr(&two_questions));
        let mut no_question = good.clone();
        no_question[5] = 0;
        assert!(formerr(&no_question));
        assert!(formerr(&good[..good.len() - 1]), "truncated question");
        assert!(formerr(&[&good[..], &[0]].concat()), "trailing garbage");
        let mut overrun = good.clone();
        overrun[11] = 1; // one additional record that is not there
        assert!(formerr(&overrun));
        let mut answer = good.clone();
        answer[7] = 1;
        answer.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert!(formerr(&answer), "a query with an answer record");
        let mut authority = answer.clone();
        authority[7] = 0;
        authority[9] = 1;
        assert!(formerr(&authority), "a query with an authority record");
        let mut pointer = good.clone();
        pointer[12] = 0xC0;
        assert!(formerr(&pointer), "pointer in the question");
        let mut reserved = good.clone();
        reserved[12] = 0x41;
        assert!(formerr(&reserved), "reserved label type");
        let long: String = (0..130).map(|_| "a").collect::<Vec<_>>().join(".");
        assert!(formerr(&query(&long, 1)), "name over 255 octets");
        let twice = with_opt(with_opt(good.clone(), 0, &[]), 0, &[]);
        assert!(formerr(&twice), "two OPT records");
        let mut owner = with_opt(good.clone(), 0, &[]);
        let at = good.len();
        owner.splice(at..at + 1, [1, b'x', 0]);
        assert!(formerr(&owner), "OPT owner not root");
        assert!(
            formerr(&with_opt(good.clone(), 0, &[0, 9, 0, 5, 1])),
            "option overruns OPT"
        );
        assert!(
            formerr(&with_opt(
                good.clone(),
                0,
                &[0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2, 9]
            )),
            "ECS address longer than its prefix"
        );
        assert!(
            formerr(&with_opt(
                good.clone(),
                0,
                &[0, 8, 0, 7, 0, 1, 23, 0, 192, 0, 3]
            )),
            "ECS bits beyond the prefix"
        );
    }

    #[test]
    fn record_names_must_point_backwards() {
        let mut packet = query("a.b", 1);
        packet[11] = 1;
        let at = packet.len() as u8;
        // An additional record whose name points at itself: a loop.
        packet.extend_from_slice(&[0xC0, at, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(formerr(&packet));
        let mut backwards = query("a.b", 1);
        backwards[11] = 1;
        backwards.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&backwards), Parsed::Request(_)));
    }
}
