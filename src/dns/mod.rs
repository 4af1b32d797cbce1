//! The request handler: bytes in, bytes out, one snapshot load per query.
//!
//! [`Handler::handle`] is the whole query path after the socket: parse the request, load the
//! snapshot once, find the answer, write the response into a caller-owned buffer, count it.
//! It allocates nothing, takes no lock and logs nothing, so any transport (tokio sockets
//! today, batched system calls tomorrow, a fuzzer) can drive it.
//!
//! Off that path, and allowed to allocate: TSIG-signed requests (checked against the keys,
//! answered and signed, or answered NOTAUTH with the TSIG error), and zone transfers, which
//! only a configured secondary gets, and which [`Handler::serve`] hands back to the TCP
//! connection as a [`Transfer`] to stream.

pub mod request;
pub mod response;
pub mod rrl;
pub mod transfer;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::clock::Clock;
use crate::observed::answers::{LOCAL, Observation, Recorder, flip_tag};
use crate::observed::counters::{Counters, Shard, TransferResult};
use crate::records::{Hit, Lookup, Records, Rendered, Snapshot, ZoneView};
use crate::wire::subnet::ClientSubnet;
use crate::wire::tsig::{self, Check, Signed};
use crate::wire::{
    CLASS_CH, CLASS_IN, CLASSIC_UDP_PAYLOAD, MAX_TCP_MESSAGE, MAX_UDP_PAYLOAD, OPCODE_QUERY,
    OPTION_CLIENT_SUBNET, OPTION_NSID, RCODE_BADVERS, RCODE_FORMERR, RCODE_NOTAUTH, RCODE_NXDOMAIN,
    RCODE_REFUSED, TYPE_AXFR, TYPE_IXFR, TYPE_OPT, TYPE_SOA, TYPE_TXT, Transport,
};
use request::{Edns, Parsed, Request};
use rrl::{Limiter, Verdict};
use transfer::{Asked, Transfer};

/// What a request came to.
pub enum Handled {
    /// No reply at all.
    Nothing,
    /// The reply is in the output buffer.
    Reply,
    /// A zone transfer: stream its messages on this connection.
    Transfer(Box<Transfer>),
}

/// Who asked, and how: the requester's address, the transport, and the key that signed the
/// request (checked), when one did.
#[derive(Clone, Copy)]
struct Asker<'a> {
    client: SocketAddr,
    transport: Transport,
    signed: Option<&'a Signed>,
}

/// The answer to a well-formed request.
enum Answered {
    Rcode(u16),
    Transfer(Box<Transfer>),
}

/// Answers requests from the current snapshot.
#[derive(Clone)]
pub struct Handler {
    records: Arc<Records>,
    counters: Arc<Counters>,
    /// Which per-query counters this handler bumps.
    shard: Shard,
    clock: Clock,
    /// Response rate limiting of UDP answers, when on.
    rrl: Option<Arc<Limiter>>,
}

impl Handler {
    pub fn new(records: Arc<Records>, counters: Arc<Counters>, clock: Clock) -> Handler {
        Handler {
            records,
            counters,
            shard: Shard::Shared,
            clock,
            rrl: None,
        }
    }

    /// This handler for UDP worker `n`, counting into the worker's own shard. Only that
    /// worker's thread may use it.
    pub fn for_worker(&self, n: usize) -> Handler {
        Handler {
            shard: self.counters.worker(n),
            ..self.clone()
        }
    }

    /// The clock the handler reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Counts `answers` that took `elapsed` in the server, in this handler's shard.
    #[inline]
    pub fn took(&self, elapsed: std::time::Duration, answers: usize) {
        if answers > 0 {
            self.counters.took(self.shard, elapsed, answers as u64);
        }
    }

    /// Limits UDP responses with `rrl`.
    pub fn with_rrl(mut self, rrl: Arc<Limiter>) -> Handler {
        self.rrl = Some(rrl);
        self
    }

    fn rate_limit(&self, transport: Transport, client: SocketAddr) -> Verdict {
        match (&self.rrl, transport) {
            (Some(rrl), Transport::Udp) => rrl.check(client.ip(), self.clock.coarse_mono_ms()),
            _ => Verdict::Send,
        }
    }

    /// Writes the response to `packet` from `client` into `out` (cleared first) and returns
    /// `true`, or returns `false` when the packet gets no reply at all (a zone transfer too:
    /// only [`Handler::serve`] hands those out). Service answers are handed to `recorder`
    /// for the straggler ledger.
    pub fn handle(
        &self,
        packet: &[u8],
        client: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
        recorder: &mut Recorder,
    ) -> bool {
        matches!(
            self.serve(packet, client, transport, out, recorder),
            Handled::Reply
        )
    }

    /// [`Handler::handle`], with zone transfers handed back to stream.
    pub fn serve(
        &self,
        packet: &[u8],
        client: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
        recorder: &mut Recorder,
    ) -> Handled {
        out.clear();
        match request::parse(packet) {
            Parsed::Dropped(reason) => {
                self.counters.dropped(self.shard, reason);
                Handled::Nothing
            }
            Parsed::Error {
                id,
                opcode,
                rd,
                rcode,
                question,
            } => {
                let verdict = self.rate_limit(transport, client);
                if verdict == Verdict::Drop {
                    return Handled::Nothing;
                }
                let flags = Flags {
                    opcode,
                    rd,
                    cd: false,
                    aa: false,
                };
                write_header(out, id, flags, rcode, [question.is_some() as u16, 0, 0, 0]);
                if verdict == Verdict::Slip {
                    out[2] |= 0x02; // TC
                }
                out.extend_from_slice(question.unwrap_or_default());
                self.counters.answered(self.shard, transport, rcode.into());
                Handled::Reply
            }
            Parsed::Request(request) => {
                self.counters.asked(self.shard, request.qtype);
                let rcode = match self.rate_limit(transport, client) {
                    Verdict::Drop => return Handled::Nothing,
                    // Truncated: the client retries over TCP, which a spoofer cannot.
                    Verdict::Slip => Reply::new(&request, 0, out, None)
                        .start_flags(0, false, true, [1, 0, 0, 0])
                        .finish(0),
                    Verdict::Send => {
                        match self.checked(packet, &request, client, transport, out, recorder) {
                            Answered::Rcode(rcode) => rcode,
                            Answered::Transfer(transfer) => return Handled::Transfer(transfer),
                        }
                    }
                };
                self.counters.answered(self.shard, transport, rcode);
                Handled::Reply
            }
        }
    }

    /// Answers a request, checking its TSIG first when it is signed: a good signature gets
    /// a signed answer, a bad one NOTAUTH with the TSIG error (RFC 8945 section 5.2).
    fn checked(
        &self,
        packet: &[u8],
        request: &Request<'_>,
        client: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
        recorder: &mut Recorder,
    ) -> Answered {
        let snapshot = self.records.load();
        let Some(at) = request.tsig_at else {
            let asker = Asker {
                client,
                transport,
                signed: None,
            };
            return self.answer(request, &snapshot, asker, out, recorder);
        };
        let now = self.clock.now_ms() / 1000;
        let check = tsig::check(packet, at, &snapshot.catalog.keys, now);
        self.counters.tsig(check.error_name());
        let signed = match check {
            Check::Valid(signed) => signed,
            Check::Malformed => {
                let reply = Reply::new(request, usize::MAX, out, None);
                return Answered::Rcode(reply.bare(RCODE_FORMERR.into(), false));
            }
            failed => {
                let rcode =
                    Reply::new(request, usize::MAX, out, None).bare(RCODE_NOTAUTH.into(), false);
                tsig::append_error(out, &failed, now);
                return Answered::Rcode(rcode);
            }
        };
        let asker = Asker {
            client,
            transport,
            signed: Some(&signed),
        };
        let answered = self.answer(request, &snapshot, asker, out, recorder);
        if let Answered::Rcode(_) = answered {
            signed.sign(out, now);
        }
        answered
    }

    /// Answers a well-formed request from `snapshot` (signed, when `asker` says so);
    /// returns the (extended) RCODE sent, or the transfer to stream.
    fn answer(
        &self,
        request: &Request<'_>,
        snapshot: &Arc<Snapshot>,
        asker: Asker<'_>,
        out: &mut Vec<u8>,
        recorder: &mut Recorder,
    ) -> Answered {
        let limit = match (asker.transport, request.edns) {
            (Transport::Tcp, _) => MAX_TCP_MESSAGE,
            (Transport::Udp, Some(edns)) => edns.udp_size.min(MAX_UDP_PAYLOAD) as usize,
            (Transport::Udp, None) => CLASSIC_UDP_PAYLOAD as usize,
        };
        // A signed answer has room kept for its signature.
        let limit = limit - asker.signed.map_or(0, |s| s.key.record_len(0));
        let identity = snapshot.catalog.config.server.identity.as_deref();
        let nsid = identity.filter(|_| request.edns.is_some_and(|e| e.nsid));
        let reply = Reply::new(request, limit, out, nsid.map(str::as_bytes));
        if request.edns.is_some_and(|e| e.version != 0) {
            // RFC 6891 section 6.1.3: BADVERS, with an OPT of the version we do speak.
            return Answered::Rcode(reply.bare(RCODE_BADVERS, false));
        }
        let mut name = [0u8; 255];
        let qname = request.qname();
        let name = &mut name[..qname.len()];
        for (lower, byte) in name.iter_mut().zip(qname) {
            *lower = byte.to_ascii_lowercase(); // length octets are < 64, below 'A'
        }
        if request.opcode == OPCODE_QUERY && request.qclass == CLASS_CH {
            return Answered::Rcode(reply.identity(name, identity));
        }
        // NOTIFY and UPDATE are not accepted from anyone: nothing changes flipdns but its
        // admin socket. Other classes are not ours, and OPT is not a question type (RFC 6891
        // section 6.1.1).
        if request.opcode != OPCODE_QUERY || request.qclass != CLASS_IN {
            return Answered::Rcode(reply.bare(RCODE_REFUSED.into(), false));
        }
        if request.qtype == TYPE_OPT {
            return Answered::Rcode(reply.bare(RCODE_FORMERR.into(), false));
        }
        if matches!(request.qtype, TYPE_AXFR | TYPE_IXFR) {
            return self.transfer(request, name, snapshot, asker, reply);
        }
        Answered::Rcode(match snapshot.lookup(name) {
            Lookup::Node(node) => {
                let rendered = node.answer(request.qtype);
                if let Some(hit) = rendered.hit {
                    self.note_hit(hit, snapshot, request, asker, recorder);
                }
                reply.rendered(rendered, &snapshot.zones)
            }
            Lookup::NxDomain(zone) => {
                let reply = reply.start(RCODE_NXDOMAIN.into(), true, [1, 0, 1, 0]);
                zone.write_negative_soa(qname.len(), reply.out);
                reply.finish(RCODE_NXDOMAIN.into())
            }
            Lookup::Referral { referral, shift } => {
                let moved = Moved {
                    pointers: &referral.pointers,
                    shift,
                };
                reply.rendered_moved(&referral.rendered, &snapshot.zones, Some(moved))
            }
            Lookup::NotOurs => reply.bare(RCODE_REFUSED.into(), false),
        })
    }

    /// Counts a service's answer, notes a long one for the drain deadline, and records it
    /// for the straggler ledger.
    #[inline(always)]
    fn note_hit(
        &self,
        hit: Hit,
        snapshot: &Snapshot,
        request: &Request<'_>,
        asker: Asker<'_>,
        recorder: &mut Recorder,
    ) {
        let service = &snapshot.services[hit.index as usize];
        service.observed.answered(hit.color);
        if hit.long || recorder.is_on() {
            let at_ms = self.clock.coarse_mono_ms();
            if hit.long {
                service
                    .observed
                    .long_answer(at_ms + u64::from(hit.ttl) * 1000);
            }
            recorder.record(Observation {
                at_ms,
                resolver: asker.client.ip(),
                subnet: request.edns.and_then(|e| e.client_subnet),
                service: service.id,
                color: hit.color,
                name: hit.name,
                ttl: hit.ttl,
                flip_tag: flip_tag(service.state.flips.0),
                via: LOCAL,
            });
        }
    }

    /// A zone transfer request (`name` lowercase): only a configured secondary, with its
    /// key when it has one, gets one (the service list is not public); over UDP an IXFR
    /// gets the SOA, so that the secondary comes back over TCP (RFC 1995 section 2).
    fn transfer(
        &self,
        request: &Request<'_>,
        name: &[u8],
        snapshot: &Arc<Snapshot>,
        asker: Asker<'_>,
        reply: Reply<'_, '_>,
    ) -> Answered {
        let Asker {
            client,
            transport,
            signed,
        } = asker;
        let Some(zone) = snapshot.zone_at(name) else {
            let rcode = match snapshot.lookup(name) {
                Lookup::NotOurs => RCODE_REFUSED,
                _ => RCODE_NOTAUTH, // inside a zone, but not its apex
            };
            return Answered::Rcode(reply.bare(rcode.into(), false));
        };
        let secondaries = &snapshot.catalog.config.secondaries;
        let secondary = secondaries.iter().position(|s| {
            s.address.ip() == client.ip()
                && s.key
                    .as_ref()
                    .is_none_or(|key| signed.is_some_and(|signed| signed.key.name == *key))
        });
        let Some(secondary) = secondary else {
            self.counters.transfer(TransferResult::Refused);
            return Answered::Rcode(reply.bare(RCODE_REFUSED.into(), false));
        };
        let asked = match request.qtype {
            TYPE_IXFR => match client_serial(request) {
                Some(serial) => Asked::Ixfr { serial },
                None => return Answered::Rcode(reply.bare(RCODE_FORMERR.into(), false)),
            },
            _ => Asked::Axfr,
        };
        if transport == Transport::Udp {
            return Answered::Rcode(match asked {
                Asked::Ixfr { .. } => match snapshot.lookup(name) {
                    Lookup::Node(node) => reply.rendered(node.answer(TYPE_SOA), &snapshot.zones),
                    _ => reply.bare(RCODE_REFUSED.into(), false),
                },
                // RFC 5936 section 4.2: AXFR is for TCP only.
                Asked::Axfr => reply.bare(RCODE_FORMERR.into(), false),
            });
        }
        Answered::Transfer(Box::new(Transfer {
            snapshot: snapshot.clone(),
            zone,
            asked,
            id: request.id,
            question: request.question.to_vec(),
            signed: signed.cloned(),
            secondary,
        }))
    }
}

/// The serial in the SOA of an IXFR request's authority section (RFC 1995 section 3).
/// Transfers are rare and allowed to allocate: hickory-proto reads it.
fn client_serial(request: &Request<'_>) -> Option<u32> {
    let message = hickory_proto::op::Message::from_vec(request.packet).ok()?;
    match message.authorities.first().map(|r| &r.data) {
        Some(hickory_proto::rr::RData::SOA(soa)) => Some(soa.serial),
        _ => None,
    }
}

/// Header bits a response sets or copies.
#[derive(Clone, Copy)]
struct Flags {
    opcode: u8,
    rd: bool,
    cd: bool,
    aa: bool,
}

fn write_header(out: &mut Vec<u8>, id: u16, flags: Flags, rcode: u8, counts: [u16; 4]) {
    let mut bits = 0x8000 | (u16::from(flags.opcode) << 11) | u16::from(rcode & 0xF);
    if flags.aa {
        bits |= 0x0400;
    }
    if flags.rd {
        bits |= 0x0100;
    }
    if flags.cd {
        bits |= 0x0010;
    }
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&bits.to_be_bytes());
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
}

/// The response to one request being written.
struct Reply<'r, 'q> {
    request: &'r Request<'q>,
    limit: usize,
    out: &'r mut Vec<u8>,
    /// Our NSID, when the request asked for it and one is configured.
    nsid: Option<&'r [u8]>,
}

/// Size of our OPT record: root owner, type, class, TTL, empty data.
const OPT_LEN: usize = 11;

impl<'r, 'q> Reply<'r, 'q> {
    fn new(
        request: &'r Request<'q>,
        limit: usize,
        out: &'r mut Vec<u8>,
        nsid: Option<&'r [u8]>,
    ) -> Reply<'r, 'q> {
        Reply {
            request,
            limit,
            out,
            nsid,
        }
    }

    /// Bytes of header, question and OPT: what every response carries.
    fn head_len(&self) -> usize {
        let opt = self.request.edns.map_or(0, |e| {
            OPT_LEN + subnet_option_len(e.client_subnet) + self.nsid.map_or(0, |n| 4 + n.len())
        });
        crate::wire::HEADER_LEN + self.request.question.len() + opt
    }

    /// A CH-class question: `id.server.` and `hostname.bind.` TXT name this server when
    /// an identity is configured (RFC 4892); everything else in CH is REFUSED.
    fn identity(self, name: &[u8], identity: Option<&str>) -> u16 {
        const NAMES: [&[u8]; 2] = [b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"];
        let Some(identity) = identity
            .filter(|_| NAMES.contains(&name) && matches!(self.request.qtype, TYPE_TXT | 255))
        else {
            return self.bare(RCODE_REFUSED.into(), false);
        };
        let text = identity.as_bytes();
        let started = self.start(0, true, [1, 1, 0, 0]);
        started.out.extend_from_slice(&0xC00Cu16.to_be_bytes());
        started.out.extend_from_slice(&TYPE_TXT.to_be_bytes());
        started.out.extend_from_slice(&CLASS_CH.to_be_bytes());
        started.out.extend_from_slice(&0u32.to_be_bytes());
        started
            .out
            .extend_from_slice(&(text.len() as u16 + 1).to_be_bytes());
        started.out.push(text.len() as u8);
        started.out.extend_from_slice(text);
        started.finish(0)
    }

    /// Writes header and question; `counts` are answer, authority, additional (without OPT).
    fn start(self, rcode: u16, aa: bool, counts: [u16; 4]) -> Started<'r> {
        self.start_flags(rcode, aa, false, counts)
    }

    fn start_flags(self, rcode: u16, aa: bool, tc: bool, counts: [u16; 4]) -> Started<'r> {
        let request = self.request;
        let edns = request.edns;
        let flags = Flags {
            opcode: request.opcode,
            rd: request.rd,
            cd: request.cd,
            aa,
        };
        let [qd, an, ns, ar] = counts;
        write_header(
            self.out,
            request.id,
            flags,
            rcode as u8,
            [qd, an, ns, ar + edns.is_some() as u16],
        );
        if tc {
            self.out[2] |= 0x02;
        }
        self.out.extend_from_slice(request.question);
        Started {
            out: self.out,
            edns,
            nsid: self.nsid,
        }
    }

    /// Header, question and OPT only.
    fn bare(self, rcode: u16, aa: bool) -> u16 {
        self.start(rcode, aa, [1, 0, 0, 0]).finish(rcode)
    }

    /// A pre-rendered answer, trimmed to fit: first the additional section goes (no TC,
    /// RFC 2181 section 9) but for a referral's required glue (RFC 9471), then everything
    /// (TC set, the client retries over TCP).
    ///
    /// A negative answer's SOA comes from `zones` now, with the serial being served; it
    /// ends the authority section (a negative answer has no additional records).
    fn rendered(self, rendered: &Rendered, zones: &[ZoneView]) -> u16 {
        self.rendered_moved(rendered, zones, None)
    }

    /// [`Reply::rendered`], for records rendered behind a shorter question: `moved` says
    /// which compression pointers to shift.
    fn rendered_moved(self, rendered: &Rendered, zones: &[ZoneView], moved: Option<Moved>) -> u16 {
        let rcode = rendered.rcode.into();
        let aa = rendered.authoritative;
        let copy = |out: &mut Vec<u8>, records: &[u8]| {
            let at = out.len();
            out.extend_from_slice(records);
            if let Some(moved) = moved {
                moved.apply(&mut out[at..]);
            }
        };
        let head = self.head_len();
        let soa = rendered.soa.map(|at| (&zones[at.zone as usize], at));
        let soa_len = soa.map_or(0, |(zone, at)| zone.soa_len(at.pointer));
        let [an, ns, ar] = rendered.counts;
        let ns = ns + u16::from(soa.is_some());
        let glue_end = rendered.additional_at as usize + usize::from(rendered.required_glue.len);
        let write_soa = |out: &mut Vec<u8>| {
            if let Some((zone, at)) = soa {
                zone.write_soa(at.pointer, at.ttl, out);
            }
        };
        if head + rendered.records.len() + soa_len <= self.limit {
            let started = self.start(rcode, aa, [1, an, ns, ar]);
            copy(started.out, &rendered.records);
            write_soa(started.out);
            started.finish(rcode)
        } else if head + glue_end + soa_len <= self.limit {
            // Without the additional section, but for the glue a referral must carry.
            let started = self.start(rcode, aa, [1, an, ns, rendered.required_glue.count]);
            copy(started.out, &rendered.records[..glue_end]);
            write_soa(started.out);
            started.finish(rcode)
        } else {
            self.start_flags(rcode, aa, true, [1, 0, 0, 0])
                .finish(rcode)
        }
    }
}

/// Records rendered behind a question `shift` octets shorter than the one asked (a
/// delegation's referral, asked for a name below it): each compression pointer, at the
/// positions `pointers` lists, moves that far, as the names it points at have.
#[derive(Clone, Copy)]
struct Moved<'a> {
    pointers: &'a [u16],
    shift: u16,
}

impl Moved<'_> {
    /// Shifts the pointers inside `records` (a prefix of the rendering: those past its
    /// end are not there).
    fn apply(self, records: &mut [u8]) {
        for &at in self.pointers {
            let at = usize::from(at);
            let Some(word) = records.get_mut(at..at + 2) else {
                break;
            };
            let pointer = u16::from_be_bytes([word[0], word[1]]) + self.shift;
            word.copy_from_slice(&pointer.to_be_bytes());
        }
    }
}

/// A response with header and question written, waiting for its records and OPT.
struct Started<'r> {
    out: &'r mut Vec<u8>,
    edns: Option<Edns>,
    nsid: Option<&'r [u8]>,
}

impl Started<'_> {
    /// Appends our OPT when the request had one: version 0, our payload size, DO copied,
    /// the high bits of an extended RCODE; unknown options not echoed (RFC 6891 section
    /// 6.1.2), the client subnet echoed (RFC 7871), our NSID when asked (RFC 5001).
    fn finish(self, rcode: u16) -> u16 {
        if let Some(edns) = self.edns {
            self.out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
            self.out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
            let do_bit = if edns.dnssec_ok { 0x80 } else { 0 };
            self.out
                .extend_from_slice(&[(rcode >> 4) as u8, 0, do_bit, 0]);
            let nsid_len = self.nsid.map_or(0, |n| 4 + n.len());
            let options = (subnet_option_len(edns.client_subnet) + nsid_len) as u16;
            self.out.extend_from_slice(&options.to_be_bytes());
            if let Some(nsid) = self.nsid {
                self.out.extend_from_slice(&OPTION_NSID.to_be_bytes());
                self.out
                    .extend_from_slice(&(nsid.len() as u16).to_be_bytes());
                self.out.extend_from_slice(nsid);
            }
            if let Some(subnet) = edns.client_subnet {
                // RFC 7871 section 7.2.1: echo family, source prefix and address, with scope
                // prefix 0: our answers do not vary by client subnet.
                let address = &subnet.address[..(subnet.source_prefix as usize).div_ceil(8)];
                self.out
                    .extend_from_slice(&OPTION_CLIENT_SUBNET.to_be_bytes());
                self.out
                    .extend_from_slice(&(4 + address.len() as u16).to_be_bytes());
                self.out.extend_from_slice(&subnet.family.to_be_bytes());
                self.out.extend_from_slice(&[subnet.source_prefix, 0]);
                self.out.extend_from_slice(address);
            }
        }
        rcode
    }
}

/// Bytes of the EDNS Client Subnet option echoed for `subnet`.
fn subnet_option_len(subnet: Option<ClientSubnet>) -> usize {
    subnet.map_or(0, |s| 8 + (s.source_prefix as usize).div_ceil(8))
}
