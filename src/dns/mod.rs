//! The request handler: bytes in, bytes out, one snapshot load per query.
//!
//! [`Handler::handle`] is the whole query path after the socket: parse the request, load the
//! snapshot once, find the answer, write the response into a caller-owned buffer, count it.
//! It allocates nothing, takes no lock and logs nothing, so any transport (tokio sockets
//! today, batched system calls tomorrow, a fuzzer) can drive it.

pub mod request;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::clock::Clock;
use crate::counters::Counters;
use crate::records::{Lookup, Records, Rendered};
use crate::rrl::{Limiter, Verdict};
use crate::stragglers::{Observation, Recorder};
use crate::subnet::ClientSubnet;
use crate::wire::{
    CLASS_IN, CLASSIC_UDP_PAYLOAD, MAX_TCP_MESSAGE, MAX_UDP_PAYLOAD, OPCODE_QUERY,
    OPTION_CLIENT_SUBNET, RCODE_BADVERS, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_REFUSED, TYPE_AXFR,
    TYPE_IXFR, TYPE_OPT, Transport,
};
use request::{Edns, Parsed, Request};

/// Answers requests from the current snapshot.
pub struct Handler {
    records: Arc<Records>,
    counters: Arc<Counters>,
    clock: Clock,
    /// Response rate limiting of UDP answers, when on.
    rrl: Option<Arc<Limiter>>,
}

impl Handler {
    pub fn new(records: Arc<Records>, counters: Arc<Counters>, clock: Clock) -> Handler {
        Handler {
            records,
            counters,
            clock,
            rrl: None,
        }
    }

    /// The clock the handler reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
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
    /// `true`, or returns `false` when the packet gets no reply at all. Service answers are
    /// handed to `recorder` for the straggler ledger.
    pub fn handle(
        &self,
        packet: &[u8],
        client: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
        recorder: &mut Recorder,
    ) -> bool {
        out.clear();
        match request::parse(packet) {
            Parsed::Dropped(reason) => {
                self.counters.dropped(reason);
                false
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
                    return false;
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
                self.counters.answered(transport, rcode.into());
                true
            }
            Parsed::Request(request) => {
                let rcode = match self.rate_limit(transport, client) {
                    Verdict::Drop => return false,
                    // Truncated: the client retries over TCP, which a spoofer cannot.
                    Verdict::Slip => Reply {
                        request: &request,
                        limit: 0,
                        out,
                    }
                    .start_flags(0, false, true, [1, 0, 0, 0])
                    .finish(0),
                    Verdict::Send => self.answer(&request, client, transport, out, recorder),
                };
                self.counters.answered(transport, rcode);
                true
            }
        }
    }

    /// Answers a well-formed request; returns the (extended) RCODE sent.
    fn answer(
        &self,
        request: &Request<'_>,
        client: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
        recorder: &mut Recorder,
    ) -> u16 {
        let limit = match (transport, request.edns) {
            (Transport::Tcp, _) => MAX_TCP_MESSAGE,
            (Transport::Udp, Some(edns)) => edns.udp_size.min(MAX_UDP_PAYLOAD) as usize,
            (Transport::Udp, None) => CLASSIC_UDP_PAYLOAD as usize,
        };
        let reply = Reply {
            request,
            limit,
            out,
        };
        if request.edns.is_some_and(|e| e.version != 0) {
            // RFC 6891 section 6.1.3: BADVERS, with an OPT of the version we do speak.
            return reply.bare(RCODE_BADVERS, false);
        }
        // NOTIFY and UPDATE are not accepted from anyone: nothing changes flipdns but its
        // admin socket. Zone transfers would publish the service list, other classes are not
        // ours, and OPT is not a question type (RFC 6891 section 6.1.1).
        if request.opcode != OPCODE_QUERY
            || request.qclass != CLASS_IN
            || matches!(request.qtype, TYPE_AXFR | TYPE_IXFR)
        {
            return reply.bare(RCODE_REFUSED.into(), false);
        }
        if request.qtype == TYPE_OPT {
            return reply.bare(RCODE_FORMERR.into(), false);
        }
        let mut name = [0u8; 255];
        let qname = request.qname();
        let name = &mut name[..qname.len()];
        for (lower, byte) in name.iter_mut().zip(qname) {
            *lower = byte.to_ascii_lowercase(); // length octets are < 64, below 'A'
        }
        let snapshot = self.records.load();
        match snapshot.lookup(name) {
            Lookup::Node(node) => {
                let rendered = node.answer(request.qtype);
                if let Some(hit) = rendered.hit {
                    let service = &snapshot.services[hit.service as usize];
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
                            resolver: client.ip(),
                            subnet: request.edns.and_then(|e| e.client_subnet),
                            service: service.id,
                            color: hit.color,
                            name: hit.name,
                            ttl: hit.ttl,
                        });
                    }
                }
                reply.rendered(rendered)
            }
            Lookup::NxDomain(zone) => {
                let reply = reply.start(RCODE_NXDOMAIN.into(), true, [1, 0, 1, 0]);
                zone.write_negative_soa(qname.len(), reply.out);
                reply.finish(RCODE_NXDOMAIN.into())
            }
            Lookup::NotOurs => reply.bare(RCODE_REFUSED.into(), false),
        }
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
}

/// Size of our OPT record: root owner, type, class, TTL, empty data.
const OPT_LEN: usize = 11;

impl<'r> Reply<'r, '_> {
    /// Bytes of header, question and OPT: what every response carries.
    fn head_len(&self) -> usize {
        let opt = self
            .request
            .edns
            .map_or(0, |e| OPT_LEN + subnet_option_len(e.client_subnet));
        crate::wire::HEADER_LEN + self.request.question.len() + opt
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
        }
    }

    /// Header, question and OPT only.
    fn bare(self, rcode: u16, aa: bool) -> u16 {
        self.start(rcode, aa, [1, 0, 0, 0]).finish(rcode)
    }

    /// A pre-rendered answer, trimmed to fit: first the additional section goes (no TC,
    /// RFC 2181 section 9), then everything (TC set, the client retries over TCP).
    fn rendered(self, rendered: &Rendered) -> u16 {
        let rcode = rendered.rcode.into();
        let head = self.head_len();
        let [an, ns, ar] = rendered.counts;
        if head + rendered.records.len() <= self.limit {
            let started = self.start(rcode, true, [1, an, ns, ar]);
            started.out.extend_from_slice(&rendered.records);
            started.finish(rcode)
        } else if head + rendered.additional_at <= self.limit {
            let started = self.start(rcode, true, [1, an, ns, 0]);
            started
                .out
                .extend_from_slice(&rendered.records[..rendered.additional_at]);
            started.finish(rcode)
        } else {
            self.start_flags(rcode, true, true, [1, 0, 0, 0])
                .finish(rcode)
        }
    }
}

/// A response with header and question written, waiting for its records and OPT.
struct Started<'r> {
    out: &'r mut Vec<u8>,
    edns: Option<Edns>,
}

impl Started<'_> {
    /// Appends our OPT when the request had one: version 0, our payload size, DO copied,
    /// the high bits of an extended RCODE; unknown options not echoed (RFC 6891 section
    /// 6.1.2), the client subnet echoed (RFC 7871).
    fn finish(self, rcode: u16) -> u16 {
        if let Some(edns) = self.edns {
            self.out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
            self.out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
            let do_bit = if edns.dnssec_ok { 0x80 } else { 0 };
            self.out
                .extend_from_slice(&[(rcode >> 4) as u8, 0, do_bit, 0]);
            let options = subnet_option_len(edns.client_subnet) as u16;
            self.out.extend_from_slice(&options.to_be_bytes());
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
