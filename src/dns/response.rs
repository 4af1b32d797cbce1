//! Reading a response another server gave (a secondary's answer, as its dnstap stream
//! carries it) without allocating: header, the one question, the answer records, and the
//! client subnet it echoed. The same bounds checks as [`super::request`], on the same
//! record reader; nothing is followed but a CNAME's target, with pointers only backwards.

use std::net::IpAddr;

use super::request::{opt, question_name_end, record};
use crate::wire::subnet::ClientSubnet;
use crate::wire::{HEADER_LEN, MAX_NAME_LEN, OPCODE_QUERY, TYPE_A, TYPE_AAAA, TYPE_OPT};

/// The CNAME record type (RFC 1035 section 3.2.2).
pub const TYPE_CNAME: u16 = 5;

/// A response, read.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    packet: &'a [u8],
    pub rcode: u8,
    /// The question name in wire format, as sent (its case may differ from ours).
    pub qname: &'a [u8],
    pub qtype: u16,
    /// Where the answer section starts, and how many records it holds.
    answers_at: usize,
    answers: u16,
    /// The client subnet the response echoed (RFC 7871 section 7.2.2), if any.
    pub client_subnet: Option<ClientSubnet>,
}

/// One answer record of a response.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
    /// Where its RDATA starts in the message (for a name in it).
    rdata_at: usize,
}

/// Reads `packet` as a response to a query; `None` when it is not one or is malformed.
pub fn parse(packet: &[u8]) -> Option<Response<'_>> {
    let header = packet.get(..HEADER_LEN)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let opcode = ((flags >> 11) & 0xF) as u8;
    if flags & 0x8000 == 0 || opcode != OPCODE_QUERY {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    if count(4) != 1 {
        return None;
    }
    let name_end = question_name_end(packet)?;
    let fixed = packet.get(name_end..name_end + 4)?;
    let answers_at = name_end + 4;
    let (answers, authority, additional) = (count(6), count(8), count(10));
    let mut at = answers_at;
    for _ in 0..u32::from(answers) + u32::from(authority) {
        at = record(packet, at)?.end;
    }
    let mut client_subnet = None;
    for _ in 0..additional {
        let r = record(packet, at)?;
        if r.rtype == TYPE_OPT {
            client_subnet = opt(r.class, r.ttl, &packet[r.end - r.rdata_len..r.end])?.client_subnet;
        }
        at = r.end;
    }
    Some(Response {
        packet,
        rcode: (flags & 0xF) as u8,
        qname: &packet[HEADER_LEN..name_end],
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        answers_at,
        answers,
        client_subnet,
    })
}

impl<'a> Response<'a> {
    /// The answer records, in order.
    pub fn answers(&self) -> impl Iterator<Item = Answer<'a>> + 'a {
        let packet = self.packet;
        let mut at = self.answers_at;
        (0..self.answers).map_while(move |_| {
            let r = record(packet, at)?;
            at = r.end;
            Some(Answer {
                rtype: r.rtype,
                ttl: r.ttl,
                rdata: &packet[r.end - r.rdata_len..r.end],
                rdata_at: r.end - r.rdata_len,
            })
        })
    }

    /// Writes the first label of the name in a CNAME's RDATA into `out`, lowercase (`blue`
    /// of `blue.app.svc.example.com`); returns its length, 0 when it cannot be read.
    pub fn target_label(&self, answer: &Answer<'_>, out: &mut [u8; 63]) -> usize {
        let mut at = answer.rdata_at;
        // Follow pointers, each strictly backwards, to the first label.
        for _ in 0..MAX_NAME_LEN {
            let Some(&byte) = self.packet.get(at) else {
                return 0;
            };
            match byte & 0xC0 {
                0xC0 => {
                    let Some(&low) = self.packet.get(at + 1) else {
                        return 0;
                    };
                    let target = ((usize::from(byte & 0x3F)) << 8) | usize::from(low);
                    if target >= at {
                        return 0;
                    }
                    at = target;
                }
                0x00 => {
                    let len = usize::from(byte);
                    let Some(label) = self.packet.get(at + 1..at + 1 + len) else {
                        return 0;
                    };
                    for (o, b) in out.iter_mut().zip(label) {
                        *o = b.to_ascii_lowercase();
                    }
                    return len;
                }
                _ => return 0,
            }
        }
        0
    }
}

impl Answer<'_> {
    /// The address of an A or AAAA record.
    pub fn address(&self) -> Option<IpAddr> {
        match (self.rtype, self.rdata.len()) {
            (TYPE_A, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(self.rdata).ok()?)),
            (TYPE_AAAA, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(self.rdata).ok()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData, Record};

    fn response(answers: Vec<Record>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.message_type = MessageType::Response;
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("App.svc.example.com.").unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        for answer in answers {
            message.add_answer(answer);
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn reads_the_question_and_the_addresses_of_a_response() {
        let name = Name::from_ascii("App.svc.example.com.").unwrap();
        let bytes = response(vec![Record::from_rdata(
            name,
            300,
            RData::A(A::new(192, 0, 2, 10)),
        )]);
        let r = parse(&bytes).unwrap();
        assert_eq!(r.qname, b"\x03App\x03svc\x07example\x03com\x00");
        assert_eq!((r.qtype, r.rcode), (TYPE_A, 0));
        let answers: Vec<Answer> = r.answers().collect();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].ttl, 300);
        assert_eq!(answers[0].address(), Some("192.0.2.10".parse().unwrap()));
    }

    #[test]
    fn reads_a_cname_target_through_compression() {
        let name = Name::from_ascii("app.svc.example.com.").unwrap();
        let blue = Name::from_ascii("Blue.app.svc.example.com.").unwrap();
        let bytes = response(vec![
            Record::from_rdata(name, 5, RData::CNAME(CNAME(blue.clone()))),
            Record::from_rdata(blue, 5, RData::A(A::new(192, 0, 2, 10))),
        ]);
        let r = parse(&bytes).unwrap();
        let cname = r.answers().next().unwrap();
        assert_eq!(cname.rtype, TYPE_CNAME);
        let mut label = [0u8; 63];
        let len = r.target_label(&cname, &mut label);
        assert_eq!(&label[..len], b"blue");
    }

    #[test]
    fn queries_and_malformed_messages_are_not_responses() {
        let name = Name::from_ascii("app.svc.example.com.").unwrap();
        let mut bytes = response(vec![Record::from_rdata(
            name,
            300,
            RData::A(A::new(192, 0, 2, 10)),
        )]);
        assert!(parse(&bytes[..bytes.len() - 1]).is_none(), "cut short");
        bytes[2] &= 0x7F;
        assert!(parse(&bytes).is_none(), "a query");
        assert!(parse(b"short").is_none());
    }
}
