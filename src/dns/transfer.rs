//! Outgoing zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995) as a stream of messages.
//!
//! The request handler accepts a transfer (an allowed secondary, a zone apex, over TCP) and
//! hands it over as a [`Transfer`], holding the snapshot it was accepted in: every message
//! comes from that one snapshot, so a transfer never mixes colors, however long it takes.
//! Records are encoded as the stream is read, a message at a time, so a zone of any size
//! costs one message of memory. Owner names are compressed against the zone apex in the
//! question; RDATA is written uncompressed (always legal).

use std::sync::Arc;

use hickory_proto::rr::{Name, RData};

use crate::records::{Snapshot, ZoneRecord, render_rdata};
use crate::state::serial_after;
use crate::wire::tsig;
use crate::wire::{HEADER_LEN, MAX_TCP_MESSAGE, RCODE_SERVFAIL};

/// A message is closed once it holds this much; fewer, larger messages cost fewer MACs,
/// smaller ones let a slow reader be cut off sooner. BIND and Knot use up to 64 KiB.
const MESSAGE_TARGET: usize = 16 * 1024;

/// A transfer the handler accepted, to be streamed on its connection.
pub struct Transfer {
    pub snapshot: Arc<Snapshot>,
    /// Index of the zone in the snapshot.
    pub zone: usize,
    pub asked: Asked,
    /// The request's ID and question, copied into every message.
    pub id: u16,
    pub question: Vec<u8>,
    /// Set when the request was signed: every message is signed with its key.
    pub signed: Option<tsig::Signed>,
    /// Which `[[secondary]]` asked.
    pub secondary: usize,
}

/// What the secondary asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Axfr,
    /// IXFR from the serial the secondary has.
    Ixfr {
        serial: u32,
    },
}

/// What a transfer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The whole zone, asked by AXFR.
    Axfr,
    /// The changes since the secondary's serial.
    Ixfr,
    /// The whole zone for an IXFR: the history does not reach back to its serial.
    IxfrFull,
    /// Only the SOA: the secondary is up to date.
    UpToDate,
}

impl Sent {
    pub const ALL: [Sent; 4] = [Sent::Axfr, Sent::Ixfr, Sent::IxfrFull, Sent::UpToDate];

    pub fn as_str(self) -> &'static str {
        match self {
            Sent::Axfr => "axfr",
            Sent::Ixfr => "ixfr",
            Sent::IxfrFull => "ixfr_full",
            Sent::UpToDate => "up_to_date",
        }
    }
}

impl Transfer {
    /// The serial the transfer brings the secondary to.
    pub fn serial(&self) -> u32 {
        self.snapshot.zones[self.zone].serial
    }

    /// The zone's origin.
    pub fn origin(&self) -> &Name {
        &self.snapshot.zones[self.zone].origin
    }

    /// What the answer is made of.
    pub fn sent(&self) -> Sent {
        match self.asked {
            Asked::Axfr => Sent::Axfr,
            Asked::Ixfr { serial } if !serial_after(self.serial(), serial) => Sent::UpToDate,
            Asked::Ixfr { serial }
                if self.snapshot.zones[self.zone]
                    .history
                    .since(serial)
                    .is_some() =>
            {
                Sent::Ixfr
            }
            Asked::Ixfr { .. } => Sent::IxfrFull,
        }
    }

    /// The records of the answer in order, SOA first and last.
    fn records(&self) -> Box<dyn Iterator<Item = ZoneRecord> + Send + '_> {
        let soa = self.snapshot.soa(self.zone);
        let last = std::iter::once(soa.clone());
        match (self.sent(), self.asked) {
            (Sent::UpToDate, _) => Box::new(std::iter::once(soa)),
            (Sent::Ixfr, Asked::Ixfr { serial }) => {
                let history = &self.snapshot.zones[self.zone].history;
                let origin = soa.name.clone();
                let soa_ttl = soa.ttl;
                let changes = history
                    .since(serial)
                    .into_iter()
                    .flatten()
                    .flat_map(move |diff| {
                        let soa = |rdata: &RData| ZoneRecord {
                            name: origin.clone(),
                            ttl: soa_ttl,
                            rdata: rdata.clone(),
                        };
                        std::iter::once(soa(&diff.from))
                            .chain(diff.deleted.iter().cloned())
                            .chain(std::iter::once(soa(&diff.to)))
                            .chain(diff.added.iter().cloned())
                    });
                Box::new(std::iter::once(soa).chain(changes).chain(last))
            }
            _ => Box::new(
                std::iter::once(soa)
                    .chain(self.snapshot.zone_records(self.zone))
                    .chain(last),
            ),
        }
    }

    /// The messages of the answer, produced as they are read.
    pub fn messages(&self) -> Messages<'_> {
        Messages {
            transfer: self,
            records: self.records(),
            carried: None,
            signer: self.signed.as_ref().map(tsig::Signed::stream),
            apex_labels: self.origin().num_labels(),
            done: false,
        }
    }

    /// The answer when the transfer cannot be served now (too many at once): SERVFAIL,
    /// and the secondary retries later.
    pub fn busy(&self, now: u64) -> Vec<u8> {
        let mut message = self.header(RCODE_SERVFAIL);
        if let Some(signed) = &self.signed {
            signed.sign(&mut message, now);
        }
        message
    }

    fn header(&self, rcode: u8) -> Vec<u8> {
        let mut message = Vec::with_capacity(MESSAGE_TARGET + 512);
        message.extend_from_slice(&self.id.to_be_bytes());
        message.extend_from_slice(&[0x84, rcode]); // QR, AA
        message.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        message.extend_from_slice(&self.question);
        message
    }
}

/// The messages of one transfer, in order.
pub struct Messages<'t> {
    transfer: &'t Transfer,
    records: Box<dyn Iterator<Item = ZoneRecord> + Send + 't>,
    /// A record encoded for a message it did not fit in: it opens the next.
    carried: Option<Vec<u8>>,
    signer: Option<tsig::Stream>,
    apex_labels: u8,
    done: bool,
}

impl Messages<'_> {
    /// The next message, signed at Unix time `now` when the request was; `None` at the end.
    pub fn next_message(&mut self, now: u64) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let reserve = self
            .transfer
            .signed
            .as_ref()
            .map_or(0, |s| s.key.record_len(0));
        let mut message = self.transfer.header(0);
        let mut count: u16 = 0;
        loop {
            let record = match self.carried.take() {
                Some(record) => record,
                None => match self.records.next() {
                    Some(record) => self.encode(&record),
                    None => {
                        self.done = true;
                        break;
                    }
                },
            };
            let full = message.len() + record.len() + reserve;
            if count > 0 && (full > MESSAGE_TARGET || full > MAX_TCP_MESSAGE) {
                self.carried = Some(record);
                break;
            }
            message.extend_from_slice(&record);
            count += 1;
        }
        message[6..8].copy_from_slice(&count.to_be_bytes());
        if let Some(signer) = &mut self.signer {
            signer.sign(&mut message, now);
        }
        Some(message)
    }

    /// One record: the owner as its labels below the apex and a pointer to the apex in the
    /// question (offset 12), type, class IN, TTL, and the RDATA uncompressed.
    fn encode(&self, record: &ZoneRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let below = record.name.num_labels().saturating_sub(self.apex_labels) as usize;
        for label in record.name.iter().take(below) {
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.extend_from_slice(&(0xC000u16 | HEADER_LEN as u16).to_be_bytes());
        out.extend_from_slice(&u16::from(record.rdata.record_type()).to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&record.ttl.to_be_bytes());
        let data = render_rdata(&record.rdata);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;

    fn transfer(asked: Asked) -> Transfer {
        let records = crate::fixture::records();
        let question = crate::fixture::query("svc.example.com", 252)[HEADER_LEN..].to_vec();
        Transfer {
            snapshot: records.load_full(),
            zone: 0,
            asked,
            id: 7,
            question,
            signed: None,
            secondary: 0,
        }
    }

    fn all(transfer: &Transfer) -> Vec<Message> {
        let mut messages = transfer.messages();
        std::iter::from_fn(|| messages.next_message(0))
            .map(|m| Message::from_vec(&m).expect("parses"))
            .collect()
    }

    #[test]
    fn an_axfr_is_the_zone_between_two_soas_with_every_service_name() {
        let transfer = transfer(Asked::Axfr);
        let records: Vec<_> = all(&transfer).into_iter().flat_map(|m| m.answers).collect();
        let soa = records.first().unwrap();
        assert_eq!(soa.record_type(), hickory_proto::rr::RecordType::SOA);
        assert_eq!(records.last().unwrap(), soa);
        let names: Vec<String> = records.iter().map(|r| r.name.to_string()).collect();
        for name in [
            "app.svc.example.com.",
            "blue.app.svc.example.com.",
            "green.app.svc.example.com.",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        assert_eq!(transfer.sent(), Sent::Axfr);
    }

    #[test]
    fn an_ixfr_from_the_current_serial_is_one_soa_and_from_an_unknown_one_the_zone() {
        let current = transfer(Asked::Axfr).serial();
        let up = transfer(Asked::Ixfr { serial: current });
        assert_eq!(up.sent(), Sent::UpToDate);
        assert_eq!(all(&up)[0].answers.len(), 1);
        let old = transfer(Asked::Ixfr {
            serial: current - 5,
        });
        assert_eq!(old.sent(), Sent::IxfrFull);
        assert!(all(&old)[0].answers.len() > 2);
    }
}
