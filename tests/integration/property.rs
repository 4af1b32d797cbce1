//! Random and mutated packets through the request path (bytes -> handler -> bytes), in
//! process: no panic, and every reply is a well-formed response to the packet it answers.
//! Bounded and seeded, so it always runs the same cases; `tests/fuzz` explores further.

use std::net::SocketAddr;

use flipdns::dns::Handler;
use flipdns::observed::answers::Recorder;
use flipdns::wire::Transport;
use hickory_proto::op::Message;

/// xorshift64*: small, seeded, enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Zone lines added to the example: a delegation, with glue below it and a name server of
/// the parent zone.
const DELEGATION: &str = "child IN NS ns1.child\nchild IN NS ns2.elsewhere.example.\nchild IN NS ns1\nns1.child IN A 192.0.2.77\nns1.child IN AAAA 2001:db8::77\n";

/// A query, with EDNS and a client subnet option when `edns`.
fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let packet = flipdns::fixture::query(name, qtype);
    if edns {
        flipdns::fixture::with_opt(packet, 0x8000, &[0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2])
    } else {
        packet
    }
}

/// Feeds `packet` through both transports and checks each reply.
fn check(handler: &Handler, packet: &[u8], out: &mut Vec<u8>) {
    let client: SocketAddr = "192.0.2.1:5300".parse().unwrap();
    let mut recorder = Recorder::off();
    for transport in [Transport::Udp, Transport::Tcp] {
        if !handler.handle(packet, client, transport, out, &mut recorder) {
            assert!(
                packet.len() < 12 || packet[2] & 0x80 != 0,
                "only short packets and responses go unanswered: {packet:02x?}"
            );
            continue;
        }
        assert!(out.len() >= 12, "a reply has a header");
        assert_eq!(out[..2], packet[..2], "the reply answers the packet's ID");
        assert_ne!(out[2] & 0x80, 0, "QR is set");
        if transport == Transport::Udp {
            assert!(
                out.len() <= 1232,
                "a UDP reply fits our payload size: {} bytes",
                out.len()
            );
        }
        if let Err(e) = Message::from_vec(out) {
            panic!("malformed reply to {packet:02x?}: {e}\n{out:02x?}");
        }
    }
}

#[test]
fn random_and_mutated_packets_get_well_formed_replies_or_none() {
    let handler = flipdns::fixture::handler_with_zone_lines(DELEGATION);
    let mut out = Vec::with_capacity(65535);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds = [
        query("app.svc.example.com", 1, false),
        query("app.svc.example.com", 28, true),
        query("www.svc.example.com", 1, true),
        query("blue.app.svc.example.com", 255, false),
        query("nothing.svc.example.com", 15, true),
        query("svc.example.com", 2, false),
        query("example.org", 1, false),
        query("child.svc.example.com", 43, true),
        query("deep.below.child.svc.example.com", 1, false),
    ];
    for seed in &seeds {
        check(&handler, seed, &mut out);
    }
    // Random bytes, every length up to a bit over a large query.
    for _ in 0..20_000 {
        let len = rng.below(600);
        let packet: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(&handler, &packet, &mut out);
    }
    // Valid queries with a few bytes changed, inserted or removed; headers kept plausible.
    for _ in 0..30_000 {
        let mut packet = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 | 1 => {
                    let at = rng.below(packet.len());
                    packet[at] = rng.next() as u8;
                }
                2 => {
                    let at = rng.below(packet.len() + 1);
                    packet.insert(at, rng.next() as u8);
                }
                _ if packet.len() > 1 => {
                    let at = rng.below(packet.len());
                    packet.remove(at);
                }
                _ => {}
            }
        }
        packet[2] &= 0x7F; // mostly queries, so the deep paths are reached
        check(&handler, &packet, &mut out);
    }
}

/// A delegation's referral is rendered once, for the delegated name, and moved behind every
/// longer question below it: for question names of every length up to 255 octets, in
/// random labels, the referral parses and names the delegation and its glue exactly.
#[test]
fn a_referral_moved_behind_any_question_below_its_delegation_stays_exact() {
    let handler = flipdns::fixture::handler_with_zone_lines(DELEGATION);
    let client: SocketAddr = "192.0.2.1:5300".parse().unwrap();
    let mut recorder = Recorder::off();
    let mut out = Vec::with_capacity(65535);
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let suffix = "child.svc.example.com";
    let mut lengths = std::collections::BTreeSet::new();
    for _ in 0..3_000 {
        // Labels of 1 to 63 letters and digits until the name is about to pass 255 octets.
        let mut labels: Vec<String> = Vec::new();
        let room = suffix.len() + 2;
        let wanted = 1 + rng.below(255 - room);
        while labels.iter().map(|l| l.len() + 1).sum::<usize>() < wanted {
            let left = 255 - room - labels.iter().map(|l| l.len() + 1).sum::<usize>();
            if left < 2 {
                break;
            }
            let len = 1 + rng.below(63.min(left - 1));
            let label: String = (0..len)
                .map(|_| b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.below(36)] as char)
                .collect();
            labels.push(label);
        }
        labels.push(suffix.into());
        let name = labels.join(".");
        lengths.insert(name.len());
        let packet = query(&name, [1, 28, 2, 16, 43][rng.below(5)], rng.below(2) == 0);
        for transport in [Transport::Udp, Transport::Tcp] {
            assert!(handler.handle(&packet, client, transport, &mut out, &mut recorder));
            let reply = Message::from_vec(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
            let said = |records: &[hickory_proto::rr::Record]| -> Vec<String> {
                let mut all: Vec<String> = records
                    .iter()
                    .filter(|r| r.record_type() != hickory_proto::rr::RecordType::OPT)
                    .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
                    .collect();
                all.sort();
                all
            };
            assert_eq!(reply.queries[0].name().to_ascii(), format!("{name}."));
            assert!(!reply.metadata.authoritative, "{name}");
            assert!(reply.answers.is_empty(), "{name}");
            assert_eq!(
                said(&reply.authorities),
                [
                    "child.svc.example.com. NS ns1.child.svc.example.com.",
                    "child.svc.example.com. NS ns1.svc.example.com.",
                    "child.svc.example.com. NS ns2.elsewhere.example.",
                ],
                "{name}"
            );
            assert_eq!(
                said(&reply.additionals),
                [
                    "ns1.child.svc.example.com. A 192.0.2.77",
                    "ns1.child.svc.example.com. AAAA 2001:db8::77",
                    "ns1.svc.example.com. A 192.0.2.53",
                ],
                "{name}"
            );
        }
    }
    assert!(
        lengths.len() > 150,
        "question names of {} lengths",
        lengths.len()
    );
}
