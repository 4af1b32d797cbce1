//! RFC 8906 behaviours and malformed input, with raw packets where dig cannot express them:
//! each odd or broken request gets its documented answer (or none), and the server goes on
//! answering normal queries.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::common;
use crate::common::{BLUE_V4, Server, a_records, exchange, query};
use flipdns::fixture::with_opt;
use hickory_proto::op::Message;

const APP: &str = "app.svc.example.com";

fn udp(server: &Server, packet: &[u8]) -> Option<Vec<u8>> {
    exchange(server.udp(), packet, Duration::from_millis(500))
}

fn tcp(server: &Server, packet: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(server.udp()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(&common::framed(packet)).unwrap();
    common::read_reply(&mut stream).ok()
}

fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0F
}

/// The server still answers a normal query, over UDP and TCP.
fn still_answers(server: &Server) {
    assert_eq!(
        a_records(&udp(server, &query(99, APP, 1)).expect("UDP answer")).len(),
        2
    );
    assert_eq!(
        a_records(&tcp(server, &query(98, APP, 1)).expect("TCP answer")).len(),
        2
    );
}

/// The OPT record of a reply: (TTL field, options).
fn opt(reply: &[u8]) -> Option<(u32, Vec<u8>)> {
    let message = Message::from_vec(reply).unwrap();
    let edns = message.edns?;
    let mut ttl = u32::from(edns.rcode_high()) << 24 | u32::from(edns.version()) << 16;
    if edns.flags().dnssec_ok {
        ttl |= 0x8000;
    }
    let options = edns
        .options()
        .as_ref()
        .iter()
        .map(|(code, _)| u16::from(*code) as u8)
        .collect();
    Some((ttl, options))
}

#[test]
fn edns_versions_options_and_flags() {
    let server = Server::start();
    let badvers = udp(&server, &with_opt(query(1, APP, 1), 0x0001_0000, &[])).unwrap();
    let message = Message::from_vec(&badvers).unwrap();
    assert_eq!(
        u16::from(message.metadata.response_code),
        16,
        "BADVERS (16, which hickory names BADSIG)"
    );
    assert_eq!(
        message.edns.as_ref().unwrap().version(),
        0,
        "BADVERS comes with the version we speak"
    );
    // Unknown options are ignored and not echoed; unknown OPT flags are not echoed; DO is.
    let reply = udp(
        &server,
        &with_opt(
            query(2, APP, 1),
            0x0000_FFFF,
            &[0xFD, 0xE9, 0, 2, 0xAB, 0xCD],
        ),
    )
    .unwrap();
    assert_eq!(a_records(&reply).len(), 2);
    let (ttl, options) = opt(&reply).expect("an OPT in the reply");
    assert_eq!(ttl, 0x0000_8000, "only DO is copied");
    assert!(options.is_empty(), "no options echoed");
    // EDNS over TCP.
    let reply = tcp(&server, &with_opt(query(3, APP, 1), 0, &[])).unwrap();
    assert!(opt(&reply).is_some());
    still_answers(&server);
}

#[test]
fn header_flags_and_opcodes() {
    let server = Server::start();
    // Z and AD set in the query are not echoed; RD is.
    let mut odd = query(4, APP, 1);
    odd[2] |= 0x01;
    odd[3] |= 0x40 | 0x20;
    let reply = udp(&server, &odd).unwrap();
    assert_eq!(reply[2] & 0x01, 0x01, "RD copied");
    assert_eq!(reply[3] & 0x70, 0, "Z and AD clear");
    assert_eq!(reply[2] & 0x04, 0x04, "AA");
    // Unknown opcode: NOTIMP, only QR and the opcode, nothing echoed.
    let mut unknown = query(5, APP, 1);
    unknown[2] = 15 << 3 | 0x01;
    let reply = udp(&server, &unknown).unwrap();
    assert_eq!(reply, [0, 5, 0x80 | 15 << 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    // NOTIFY and UPDATE from anyone: REFUSED, and nothing changes.
    for opcode in [4u8, 5] {
        let mut packet = query(6, "svc.example.com", 6);
        packet[2] = opcode << 3;
        let reply = udp(&server, &packet).unwrap();
        assert_eq!(rcode(&reply), 5, "opcode {opcode} is refused");
    }
    assert_eq!(
        server.dig(&["svc.example.com", "SOA"]).soa_serial(),
        Some(2026112601)
    );
    still_answers(&server);
}

#[test]
fn transfers_other_classes_and_meta_types_are_refused() {
    let server = Server::start();
    assert_eq!(
        rcode(&tcp(&server, &query(7, "svc.example.com", 252)).unwrap()),
        5,
        "AXFR over TCP"
    );
    assert_eq!(
        rcode(&udp(&server, &query(8, "svc.example.com", 252)).unwrap()),
        5,
        "AXFR over UDP"
    );
    assert_eq!(
        rcode(&udp(&server, &query(9, "svc.example.com", 251)).unwrap()),
        5,
        "IXFR"
    );
    for class in [3u16, 255, 254] {
        let mut packet = query(10, "version.bind", 16);
        let at = packet.len() - 2;
        packet[at..].copy_from_slice(&class.to_be_bytes());
        assert_eq!(rcode(&udp(&server, &packet).unwrap()), 5, "class {class}");
    }
    assert_eq!(
        rcode(&udp(&server, &query(11, APP, 41)).unwrap()),
        1,
        "OPT is not a question type"
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "MX"]).authority[0].rtype,
        "SOA",
        "NODATA with SOA"
    );
    still_answers(&server);
}

/// Malformed requests: each gets FORMERR, or nothing when there is no ID to answer to or
/// it is a response.
#[test]
fn malformed_packets_get_formerr_or_silence_and_the_server_goes_on() {
    let server = Server::start();
    let good = query(12, APP, 1);
    let mut cases: Vec<(&str, Vec<u8>, Option<u8>)> = Vec::new();
    cases.push(("11 bytes", good[..11].to_vec(), None));
    cases.push(("empty", Vec::new(), None));
    let mut response = good.clone();
    response[2] |= 0x80;
    cases.push(("a response (QR=1)", response, None));
    let mut none = good.clone();
    none[5] = 0;
    cases.push(("QDCOUNT 0", none, Some(1)));
    let mut two = good.clone();
    two[5] = 2;
    cases.push(("QDCOUNT 2", two, Some(1)));
    let mut overrun = good.clone();
    overrun[7] = 5;
    cases.push(("ANCOUNT past the end", overrun, Some(1)));
    let mut looped = good.clone();
    looped[11] = 1;
    let at = looped.len() as u8;
    looped.extend_from_slice(&[0xC0, at, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    cases.push(("compression loop", looped, Some(1)));
    let mut forward = good.clone();
    forward[11] = 1;
    let ahead = forward.len() as u8 + 2;
    forward.extend_from_slice(&[0xC0, ahead, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    cases.push(("forward pointer", forward, Some(1)));
    let mut pointer = good.clone();
    pointer[12] = 0xC0;
    cases.push(("pointer in the question", pointer, Some(1)));
    let mut long_label = good.clone();
    long_label[12] = 64;
    cases.push(("label over 63 octets", long_label, Some(1)));
    let mut reserved = good.clone();
    reserved[12] = 0x80 | 3;
    cases.push(("reserved label type", reserved, Some(1)));
    let long_name: String = (0..43).map(|_| "abcde").collect::<Vec<_>>().join(".");
    cases.push(("name over 255 octets", query(13, &long_name, 1), Some(1)));
    cases.push((
        "two OPT records",
        with_opt(with_opt(good.clone(), 0, &[]), 0, &[]),
        Some(1),
    ));
    let mut owner = with_opt(good.clone(), 0, &[]);
    let at = good.len();
    owner.splice(at..at + 1, [1, b'x', 0]);
    cases.push(("OPT owner not root", owner, Some(1)));
    cases.push((
        "option overruns OPT",
        with_opt(good.clone(), 0, &[0, 9, 0, 9, 1]),
        Some(1),
    ));
    cases.push(("trailing garbage", [&good[..], b"junk"].concat(), Some(1)));
    let mut truncated_rr = good.clone();
    truncated_rr[11] = 1;
    truncated_rr.extend_from_slice(&[0, 0, 1]);
    cases.push(("truncated additional record", truncated_rr, Some(1)));
    for (what, packet, expected) in &cases {
        let reply = udp(&server, packet);
        match expected {
            None => assert_eq!(reply, None, "{what}: no reply"),
            Some(code) => {
                let reply = reply.unwrap_or_else(|| panic!("{what}: no reply"));
                assert_eq!(rcode(&reply), *code, "{what}");
                assert_eq!(reply[..2], packet[..2], "{what}: the ID is kept");
                assert!(
                    Message::from_vec(&reply).is_ok(),
                    "{what}: a well-formed reply"
                );
            }
        }
        if packet.len() >= 12 && expected.is_some() {
            assert_eq!(
                tcp(&server, packet).map(|r| rcode(&r)),
                Some(expected.unwrap()),
                "{what} over TCP"
            );
        }
        still_answers(&server);
    }
    assert_eq!(server.dig(&["app.svc.example.com", "A"]).data("A"), BLUE_V4);
}

#[test]
fn rate_limiting_limits_slips_and_counts_only_when_on() {
    let burst = |server: &Server| -> (usize, usize, usize) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let reader = socket.try_clone().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let collector = std::thread::spawn(move || {
            let (mut full, mut truncated) = (0, 0);
            let mut buf = [0u8; 1500];
            while let Ok(len) = reader.recv(&mut buf) {
                if buf[2] & 0x02 != 0 {
                    truncated += 1;
                } else if a_records(&buf[..len]).len() == 2 {
                    full += 1;
                }
            }
            (full, truncated)
        });
        for id in 0..1000u16 {
            socket.send_to(&query(id, APP, 1), server.udp()).unwrap();
            if id % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let (full, truncated) = collector.join().unwrap();
        (full, truncated, 1000 - full - truncated)
    };
    let off = Server::start();
    assert_eq!(
        burst(&off),
        (1000, 0, 0),
        "without RRL every query is answered"
    );

    let on = Server::start_with(&common::Setup {
        server: "metrics_listen = \"127.0.0.1:0\"".into(),
        extra: "[rrl]\nenabled = true\nresponses_per_second = 100\nslip = 2\n".into(),
        ..Default::default()
    });
    let (full, truncated, dropped) = burst(&on);
    assert!(
        (100..=200).contains(&full),
        "the rate, in one or two seconds: {full}"
    );
    let limited = 1000 - full;
    assert!(
        truncated.abs_diff(limited / 2) <= 2,
        "every second limited response slips: {truncated} of {limited}"
    );
    assert!(
        dropped.abs_diff(limited / 2) <= 2,
        "the others are dropped: {dropped} of {limited}"
    );
    // TCP is not limited, and the counters say what happened.
    assert_eq!(a_records(&tcp(&on, &query(1, APP, 1)).unwrap()).len(), 2);
    let metrics = common::scrape(&on, "/metrics");
    assert!(
        metrics.contains(&format!("flipdns_rrl_limited_total {limited}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "flipdns_rrl_total{{action=\"slipped\"}} {truncated}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "flipdns_rrl_total{{action=\"dropped\"}} {dropped}"
        )),
        "{metrics}"
    );
}
