//! Wire rendering of the sections after a question, done once per snapshot, not per query.
//!
//! Offsets in the rendered bytes are message offsets: the question name sits at offset 12
//! and the rendered records follow the question, so every name can be compressed against
//! the question name and against names written before it (RFC 1035 section 4.1.4).

use hickory_proto::rr::{Name, RData};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::{Hit, Rendered, RequiredGlue, SoaAt};

/// Message offsets above this cannot be the target of a compression pointer.
const MAX_POINTER: usize = 0x3FFF;

/// Builds the records of one response to a question about one name.
pub struct Tail {
    /// Message offset of the first rendered byte: 12 + question name + type and class.
    base: usize,
    out: Vec<u8>,
    /// Lowercase wire suffixes already in the message, with their offsets.
    names: Vec<(Vec<u8>, usize)>,
    counts: [u16; 3],
    additional_at: Option<usize>,
    soa: Option<SoaAt>,
    authoritative: bool,
    required_glue: RequiredGlue,
    /// Where each compression pointer written sits in `out`, for a rendering that is
    /// moved behind a longer question ([`Tail::relocatable`]).
    pointers: Vec<u16>,
    /// The highest offset a name may be pointed at.
    max_pointer: usize,
}

/// The record sections a rendering writes, in message order (a negative answer's SOA, the
/// last of the authority section, is written at query time).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Answer = 0,
    /// A referral's NS RRset.
    Authority = 1,
    Additional = 2,
}

/// A referral rendered for the delegation's own name, movable behind any question name
/// below it: every compression pointer in it shifts by the same amount.
pub struct Relocatable {
    pub rendered: Rendered,
    /// Positions in `rendered.records` of the compression pointers.
    pub pointers: Box<[u16]>,
}

/// How far a relocatable rendering may move: a question name is at most 255 octets.
const MAX_SHIFT: usize = 255;

impl Tail {
    /// A tail for a question about `qname` (lowercase wire format).
    pub fn new(qname: &[u8]) -> Tail {
        let mut tail = Tail {
            base: 12 + qname.len() + 4,
            out: Vec::new(),
            names: Vec::new(),
            counts: [0; 3],
            additional_at: None,
            soa: None,
            authoritative: true,
            required_glue: RequiredGlue::default(),
            pointers: Vec::new(),
            max_pointer: MAX_POINTER,
        };
        let mut at = 0;
        while qname[at] != 0 {
            tail.names.push((qname[at..].to_vec(), 12 + at));
            at += 1 + qname[at] as usize;
        }
        tail
    }

    /// Appends one record; sections must be appended in order.
    pub fn record(&mut self, section: Section, owner: &Name, ttl: u32, rdata: &RData) {
        if section == Section::Additional && self.additional_at.is_none() {
            self.additional_at = Some(self.out.len());
        }
        self.counts[section as usize] += 1;
        self.name(owner);
        self.out
            .extend_from_slice(&u16::from(rdata.record_type()).to_be_bytes());
        self.out.extend_from_slice(&1u16.to_be_bytes()); // class IN
        self.out.extend_from_slice(&ttl.to_be_bytes());
        let length_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        self.rdata(rdata);
        let length = (self.out.len() - length_at - 2) as u16;
        self.out[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
    }

    /// Ends the authority section with a negative answer's SOA, written at query time.
    pub fn soa(&mut self, soa: SoaAt) {
        self.soa = Some(soa);
    }

    /// A tail whose names are pointed at only where they stay reachable after moving
    /// behind a question up to 255 octets longer: see [`Tail::finish_relocatable`].
    pub fn relocatable(qname: &[u8]) -> Tail {
        let mut tail = Tail::new(qname);
        tail.max_pointer = MAX_POINTER - MAX_SHIFT;
        tail
    }

    /// Clears AA: a referral speaks for the child's servers, not for itself (RFC 1034
    /// section 4.3.2, step 3b).
    pub fn not_authoritative(&mut self) {
        self.authoritative = false;
    }

    /// The additional records written so far must all be sent, or none (TC set).
    pub fn require_glue_so_far(&mut self) {
        if let Some(at) = self.additional_at {
            self.required_glue = RequiredGlue {
                len: (self.out.len() - at) as u16,
                count: self.counts[Section::Additional as usize],
            };
        }
    }

    pub fn finish_relocatable(mut self, rcode: u8) -> Relocatable {
        let pointers = std::mem::take(&mut self.pointers).into_boxed_slice();
        Relocatable {
            rendered: self.finish(rcode, None),
            pointers,
        }
    }

    pub fn finish(self, rcode: u8, hit: Option<Hit>) -> Rendered {
        Rendered {
            rcode,
            authoritative: self.authoritative,
            additional_at: self.additional_at.unwrap_or(self.out.len()) as u32,
            required_glue: self.required_glue,
            records: self.out.into_boxed_slice(),
            counts: self.counts,
            soa: self.soa,
            hit,
        }
    }

    /// Writes `name`, compressed against every name already in the message.
    fn name(&mut self, name: &Name) {
        let labels: Vec<&[u8]> = name.iter().collect();
        for i in 0..labels.len() {
            let suffix = crate::wire::name::lower_labels(labels[i..].iter().copied());
            if let Some(&(_, target)) = self.names.iter().find(|(n, _)| *n == suffix) {
                self.labels(&labels[..i], &labels);
                self.pointers.push(self.out.len() as u16);
                self.out
                    .extend_from_slice(&(0xC000 | target as u16).to_be_bytes());
                return;
            }
        }
        self.labels(&labels, &labels);
        self.out.push(0);
    }

    /// Writes `written` (a prefix of `all`), remembering each new suffix for later pointers.
    fn labels(&mut self, written: &[&[u8]], all: &[&[u8]]) {
        for (i, label) in written.iter().enumerate() {
            let offset = self.base + self.out.len();
            if offset <= self.max_pointer {
                self.names.push((
                    crate::wire::name::lower_labels(all[i..].iter().copied()),
                    offset,
                ));
            }
            self.out.push(label.len() as u8);
            self.out.extend_from_slice(label);
        }
    }

    /// RDATA: names of RFC 1035 types compressed, everything else as hickory-proto encodes it
    /// uncompressed (RFC 3597 section 4 forbids compressing names of later types).
    fn rdata(&mut self, rdata: &RData) {
        match rdata {
            RData::CNAME(n) => self.name(&n.0),
            RData::NS(n) => self.name(&n.0),
            RData::PTR(n) => self.name(&n.0),
            RData::MX(mx) => {
                self.out.extend_from_slice(&mx.preference.to_be_bytes());
                self.name(&mx.exchange);
            }
            RData::SOA(soa) => {
                self.name(&soa.mname);
                self.name(&soa.rname);
                for value in [
                    soa.serial,
                    soa.refresh as u32,
                    soa.retry as u32,
                    soa.expire as u32,
                    soa.minimum,
                ] {
                    self.out.extend_from_slice(&value.to_be_bytes());
                }
            }
            other => self.out.extend_from_slice(&uncompressed(other)),
        }
    }
}

/// RDATA as hickory-proto encodes it, without compression.
pub fn uncompressed(rdata: &RData) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    rdata
        .emit(&mut encoder)
        .expect("zone data was validated when it was parsed");
    bytes
}
