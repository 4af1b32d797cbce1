//! What the server answers, checked with dig against the real binary.

use std::time::Duration;

use crate::common::{BLUE_V4, Server, Setup, exchange, query};

#[test]
fn the_service_name_answers_the_live_color() {
    let server = Server::start();
    let a = server.dig(&["app.svc.example.com", "A"]);
    assert_eq!(a.status, "NOERROR");
    assert!(a.has_flag("aa"), "{}", a.raw);
    assert!(!a.has_flag("ra"), "{}", a.raw);
    assert_eq!(a.data("A"), BLUE_V4);
    assert!(a.answer.iter().all(|r| r.ttl == 300));
    let aaaa = server.dig(&["app.svc.example.com", "AAAA"]);
    assert_eq!(aaaa.data("AAAA"), ["2001:db8::10"]);
}

#[test]
fn color_names_always_answer_their_color() {
    let server = Server::start();
    assert_eq!(
        server.dig(&["blue.app.svc.example.com", "A"]).data("A"),
        BLUE_V4
    );
    assert_eq!(
        server.dig(&["green.app.svc.example.com", "A"]).data("A"),
        ["198.51.100.10"]
    );
    assert_eq!(
        server
            .dig(&["green.app.svc.example.com", "AAAA"])
            .data("AAAA"),
        ["2001:db8::20"]
    );
}

#[test]
fn static_records_are_served_as_written() {
    let server = Server::start();
    let txt = server.dig(&["static.svc.example.com", "TXT"]);
    assert_eq!(txt.data("TXT"), ["\"as written\""]);
    assert_eq!(txt.answer[0].ttl, 3600);
    let ns = server.dig(&["svc.example.com", "NS"]);
    assert_eq!(ns.data("NS"), ["ns1.svc.example.com."]);
    assert_eq!(
        ns.additional.iter().filter(|r| r.rtype == "A").count(),
        1,
        "glue for the in-zone name server: {}",
        ns.raw
    );
    // A static CNAME to the service is followed inside the zone, in one answer.
    let www = server.dig(&["www.svc.example.com", "A"]);
    assert_eq!(www.data("CNAME"), ["app.svc.example.com."]);
    assert_eq!(www.data("A"), BLUE_V4);
}

#[test]
fn negative_answers_carry_the_soa_with_the_negative_ttl() {
    let server = Server::start();
    let nx = server.dig(&["nothing.svc.example.com", "A"]);
    assert_eq!(nx.status, "NXDOMAIN");
    assert!(nx.has_flag("aa"));
    assert!(nx.answer.is_empty());
    assert_eq!(nx.authority.len(), 1);
    assert_eq!(nx.authority[0].rtype, "SOA");
    assert_eq!(nx.authority[0].name, "svc.example.com.");
    assert_eq!(
        nx.authority[0].ttl, 60,
        "RFC 2308: min(SOA TTL, SOA MINIMUM)"
    );
    // NODATA: the name exists, the type does not.
    let nodata = server.dig(&["static.svc.example.com", "MX"]);
    assert_eq!(nodata.status, "NOERROR");
    assert!(nodata.answer.is_empty());
    assert_eq!(nodata.authority[0].rtype, "SOA");
    // An empty non-terminal exists: NODATA, not NXDOMAIN (RFC 8020).
    assert_eq!(
        server.dig(&["empty.svc.example.com", "A"]).status,
        "NOERROR"
    );
    // Below a service name nothing exists.
    assert_eq!(
        server.dig(&["x.app.svc.example.com", "A"]).status,
        "NXDOMAIN"
    );
    // A type the service does not have: NODATA, SOA TTL capped by the service TTL.
    let mx = server.dig(&["app.svc.example.com", "MX"]);
    assert_eq!(mx.status, "NOERROR");
    assert_eq!(mx.authority[0].ttl, 60);
}

#[test]
fn names_outside_the_zones_are_refused_without_a_referral() {
    let server = Server::start();
    let out = server.dig(&["example.org", "A"]);
    assert_eq!(out.status, "REFUSED");
    assert!(!out.has_flag("aa"));
    assert!(
        out.answer.is_empty() && out.authority.is_empty(),
        "{}",
        out.raw
    );
    assert_eq!(
        server.dig(&["example.com", "SOA"]).status,
        "REFUSED",
        "the parent of the zone is not ours"
    );
}

/// A delegation in the zone file: referrals with AA clear and the glue we hold, for the
/// delegated name, names below it in the data and names that are not; DS stays ours; the
/// glue inside the child goes whole or the referral is truncated (RFC 9471).
#[test]
fn a_delegation_is_answered_with_a_referral() {
    let mut zone = crate::common::ZONE.to_string();
    zone.push_str("child IN NS ns1.child\nchild IN NS ns.example.net.\nns1.child IN A 192.0.2.77\ninto IN CNAME host.child\n");
    for i in 0..8 {
        zone.push_str(&format!(
            "big IN NS name-server-{i}.big\nname-server-{i}.big IN A 192.0.2.{}\nname-server-{i}.big IN AAAA 2001:db8::{}\n",
            100 + i,
            100 + i
        ));
    }
    let server = Server::start_with(&Setup {
        zone,
        ..Setup::default()
    });
    let ns = ["ns.example.net.", "ns1.child.svc.example.com."];
    // The delegation itself, glue below it, and (with pointers moved behind a question
    // longer than the one the referral was rendered for) names that do not exist there.
    for name in [
        "child.svc.example.com",
        "ns1.child.svc.example.com",
        "a.very.long.name.below.the.child.svc.example.com",
    ] {
        for rtype in ["A", "NS", "TXT"] {
            let out = server.dig(&["+norec", name, rtype]);
            assert_eq!(out.status, "NOERROR", "{}", out.raw);
            assert!(!out.has_flag("aa"), "a referral: {}", out.raw);
            assert!(out.answer.is_empty(), "{}", out.raw);
            assert_eq!(out.authority_data("NS"), ns, "{}", out.raw);
            assert!(
                out.authority
                    .iter()
                    .all(|r| r.name == "child.svc.example.com."),
                "{}",
                out.raw
            );
            assert_eq!(
                out.additional_data("A"),
                ["192.0.2.77"],
                "the glue: {}",
                out.raw
            );
        }
    }
    let ds = server.dig(&["child.svc.example.com", "DS"]);
    assert!(ds.has_flag("aa") && ds.status == "NOERROR", "{}", ds.raw);
    assert_eq!(ds.authority[0].rtype, "SOA", "{}", ds.raw);
    // A CNAME into the child: the CNAME is ours (AA), the rest is the child's.
    let www = server.dig(&["into.svc.example.com", "A"]);
    assert!(www.has_flag("aa"), "{}", www.raw);
    assert_eq!(www.data("CNAME"), ["host.child.svc.example.com."]);
    assert_eq!(www.authority_data("NS"), ns, "{}", www.raw);
    // Sixteen glue records do not fit 512 octets: TC, not a referral without them.
    let small = server.dig(&["+bufsize=512", "+ignore", "x.big.svc.example.com", "A"]);
    assert!(small.has_flag("tc"), "{}", small.raw);
    let large = server.dig(&["+bufsize=1232", "x.big.svc.example.com", "A"]);
    assert!(!large.has_flag("tc"), "{}", large.raw);
    let glue = large.additional_data("A").len() + large.additional_data("AAAA").len();
    assert_eq!(glue, 16, "{}", large.raw);
    // Over TCP, the same referral whole.
    let tcp = server.dig(&["+tcp", "x.big.svc.example.com", "A"]);
    assert_eq!(tcp.authority_data("NS").len(), 8, "{}", tcp.raw);
}

#[test]
fn the_same_answers_over_tcp() {
    let server = Server::start();
    let a = server.dig(&["+tcp", "app.svc.example.com", "A"]);
    assert!(a.raw.contains("(TCP)"), "{}", a.raw);
    assert_eq!(a.data("A"), BLUE_V4);
    assert!(a.has_flag("aa"));
    assert_eq!(
        server.dig(&["+tcp", "nothing.svc.example.com", "A"]).status,
        "NXDOMAIN"
    );
    assert_eq!(server.dig(&["+tcp", "example.org", "A"]).status, "REFUSED");
}

#[test]
fn an_answer_too_big_for_udp_is_truncated_and_complete_over_tcp() {
    let many: Vec<String> = (1..=40).map(|i| format!("\"2001:db8::{i:x}\"")).collect();
    let setup = Setup {
        services: format!(
            "[[service]]\nname = \"big\"\nblue = [{}]\ngreen = [\"192.0.2.1\"]\nlive = \"blue\"\nttl = 60\ncutover_ttl = 5\nsettle = \"1m\"\n",
            many.join(", ")
        ),
        ..Setup::default()
    };
    let server = Server::start_with(&setup);
    let small = server.dig(&["+bufsize=512", "+ignore", "big.svc.example.com", "AAAA"]);
    assert!(small.has_flag("tc"), "{}", small.raw);
    assert!(small.answer.is_empty());
    // dig's default: retry the truncated answer over TCP.
    let retried = server.dig(&["+bufsize=512", "big.svc.example.com", "AAAA"]);
    assert!(
        retried.raw.contains("Truncated, retrying in TCP mode"),
        "{}",
        retried.raw
    );
    assert_eq!(retried.data("AAAA").len(), 40);
    let large = server.dig(&["+bufsize=1232", "+ignore", "big.svc.example.com", "AAAA"]);
    assert!(
        !large.has_flag("tc"),
        "40 AAAA records fit in 1232 bytes: {}",
        large.raw
    );
}

#[test]
fn edns_is_answered_with_our_payload_size_and_without_it_when_absent() {
    let server = Server::start();
    let edns = server.dig(&["+bufsize=4096", "app.svc.example.com", "A"]);
    assert!(edns.raw.contains("udp: 1232"), "{}", edns.raw);
    let plain = server.dig(&["+noedns", "app.svc.example.com", "A"]);
    assert!(!plain.raw.contains("OPT PSEUDOSECTION"), "{}", plain.raw);
    assert_eq!(plain.data("A"), BLUE_V4);
    let badvers = server.dig(&["+edns=1", "+noednsnegotiation", "app.svc.example.com", "A"]);
    assert_eq!(badvers.status, "BADVERS", "{}", badvers.raw);
    assert!(badvers.raw.contains("EDNS: version: 0"), "{}", badvers.raw);
}

#[test]
fn the_question_keeps_its_case_and_any_is_minimal() {
    let server = Server::start();
    let mixed = server.dig(&["ApP.sVc.ExAmPlE.cOm", "A"]);
    assert_eq!(mixed.question, ["ApP.sVc.ExAmPlE.cOm.\t\tIN\tA"]);
    assert_eq!(mixed.answer[0].name, "ApP.sVc.ExAmPlE.cOm.");
    assert_eq!(mixed.data("A"), BLUE_V4);
    let any = server.dig(&["app.svc.example.com", "ANY"]);
    assert_eq!(
        any.answer
            .iter()
            .map(|r| r.rtype.as_str())
            .collect::<Vec<_>>(),
        ["A", "A"],
        "RFC 8482: one RRset"
    );
}

#[test]
fn unknown_opcodes_get_notimp_and_responses_get_nothing() {
    let server = Server::start();
    let notimp = server.dig(&["+opcode=15", "+header-only", "app.svc.example.com"]);
    assert_eq!(notimp.status, "NOTIMP", "{}", notimp.raw);
    let mut response = query(7, "app.svc.example.com", 1);
    response[2] |= 0x80;
    assert_eq!(
        exchange(server.udp(), &response, Duration::from_millis(300)),
        None
    );
    // The server is still answering.
    assert_eq!(server.dig(&["app.svc.example.com", "A"]).data("A"), BLUE_V4);
}
