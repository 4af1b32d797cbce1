//! The dnstap collector against hostile and heavy input (issue 23), with raw streams the
//! tests write and a real sender over TCP (`fstrm_replay`): a bad stream closes alone and
//! is counted, DNS and the admin socket answer throughout, a flood is bounded and its drops
//! counted, and TCP senders are taken only from listed addresses.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::dnstap::{answer, data, file, ready, start, stop};
use crate::common::secondaries::free_port;
use crate::common::{Server, Setup, unix_ms};

const BLUE: [u8; 4] = [192, 0, 2, 10];

/// A server collecting dnstap on `run/dnstap.sock` and TCP `tcp_port` (from `allow`), with
/// bounds small enough to push on.
fn collector(tcp_port: u16, allow: &str) -> Server {
    Server::start_with(&Setup {
        server: "metrics_listen = \"127.0.0.1:0\"\n".into(),
        extra: format!(
            "[ledger]\ncapacity = 100\n[dnstap]\nlisten = [\"run/dnstap.sock\", \"127.0.0.1:{tcp_port}\"]\nallow = [\"{allow}\"]\nhandshake_timeout = \"1s\"\nframe_timeout = \"1s\"\nmax_frame = 4096\nsenders = 4\nframes_per_second = 2000\n"
        ),
        ..Setup::default()
    })
}

/// A stream on the collector's Unix socket that has done the handshake.
fn stream(server: &Server) -> UnixStream {
    let mut stream = UnixStream::connect(server.dir.path().join("run/dnstap.sock")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&ready()).unwrap();
    let mut accept = [0u8; 42];
    stream.read_exact(&mut accept).unwrap();
    assert_eq!(&accept[8..12], &[0, 0, 0, 1], "ACCEPT");
    assert_eq!(&accept[20..], b"protobuf:dnstap.Dnstap");
    stream.write_all(&start()).unwrap();
    stream
}

/// Whether the collector closes `stream` within a few seconds (end of stream, or a reset;
/// not a read that times out).
fn closed(mut stream: UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(4)))
        .unwrap();
    let mut buffer = [0u8; 64];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue, // an ACCEPT it was sent before
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn counter(metrics: &str, line: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn still_serving(server: &Server) {
    assert_eq!(server.dig(&["app.svc.example.com", "A"]).status, "NOERROR");
    assert!(server.ctl(&["status"]).status.success());
}

#[test]
fn a_bad_stream_closes_alone_and_is_counted() {
    let server = collector(free_port(), "127.0.0.1");
    let socket = server.dir.path().join("run/dnstap.sock");
    // A good stream stays open meanwhile and still delivers afterwards.
    let mut good = stream(&server);
    let raw = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.write_all(bytes).unwrap();
        s
    };
    // Garbage: an unknown control frame; a data frame before any handshake.
    assert!(closed(raw(&[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 9])));
    assert!(closed(raw(&[0, 0, 0, 5, 1, 2, 3, 4, 5])));
    // Another content type.
    let mut json = 4u32.to_be_bytes().to_vec();
    json.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 4]);
    json.extend_from_slice(b"json");
    let mut wrong = vec![0, 0, 0, 0];
    wrong.extend_from_slice(&(json.len() as u32).to_be_bytes());
    wrong.extend_from_slice(&json);
    assert!(closed(raw(&wrong)));
    // A frame over max_frame.
    let mut long = stream(&server);
    long.write_all(&100_000u32.to_be_bytes()).unwrap();
    assert!(closed(long));
    // A half handshake, and a stall mid-frame: closed after the timeouts.
    assert!(closed(raw(&ready()[..20])));
    let mut stalled = stream(&server);
    stalled.write_all(&[0, 0, 1, 0, 7, 7]).unwrap();
    assert!(closed(stalled));
    still_serving(&server);

    let payload = answer(
        "ns2",
        [127, 0, 0, 31],
        "app.svc.example.com.",
        BLUE,
        300,
        unix_ms(),
    );
    good.write_all(&data(&[payload])).unwrap();
    good.write_all(&stop()).unwrap();
    let mut finish = [0u8; 12];
    good.read_exact(&mut finish).unwrap();
    assert_eq!(finish, [0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 5], "FINISH");
    let metrics = common::scrape(&server, "/metrics");
    for (why, at_least) in [
        ("garbage", 2),
        ("content_type", 1),
        ("too_long", 1),
        ("stalled", 2),
    ] {
        let n = counter(
            &metrics,
            &format!("flipdns_dnstap_streams_closed_total{{why=\"{why}\"}}"),
        );
        assert!(n >= at_least, "{why}: {n}\n{metrics}");
    }
    assert_eq!(
        counter(&metrics, "flipdns_dnstap_answers_total{sender=\"ns2\"}"),
        1,
        "{metrics}"
    );
    still_serving(&server);
}

#[test]
fn a_flood_of_frames_and_senders_stays_bounded_and_says_what_it_dropped() {
    let server = collector(free_port(), "127.0.0.1");
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap()
    };
    let flood = |round: u8| {
        let mut s = stream(&server);
        let now = unix_ms();
        let frames: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| {
                let identity = format!("sender{}", i % 20);
                let resolver = [10, round, (i >> 8) as u8, i as u8];
                answer(&identity, resolver, "app.svc.example.com.", BLUE, 300, now)
            })
            .collect();
        s.write_all(&data(&frames)).unwrap();
        s.write_all(&stop()).unwrap();
        let mut finish = [0u8; 12];
        s.read_exact(&mut finish).unwrap();
    };
    flood(1);
    let after_one = rss();
    flood(2);
    let after_two = rss();
    still_serving(&server);
    let report: serde_json::Value =
        serde_json::from_str(&server.ctl_ok(&["stragglers", "app", "--json"])).unwrap();
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(
        streams.len(),
        5,
        "4 senders and the rest as one: {report:#}"
    );
    assert!(streams.iter().any(|s| s["name"] == "(other senders)"));
    let frames: u64 = streams.iter().map(|s| s["frames"].as_u64().unwrap()).sum();
    let observed: u64 = streams
        .iter()
        .map(|s| s["observed"].as_u64().unwrap())
        .sum();
    let dropped: u64 = streams.iter().map(|s| s["dropped"].as_u64().unwrap()).sum();
    assert_eq!(frames, 20_000);
    assert_eq!(
        observed + dropped,
        20_000,
        "every frame answered for: {report:#}"
    );
    assert!(
        dropped > 10_000,
        "over 2000 frames a second: {dropped} dropped"
    );
    assert_eq!(
        report["ledger"]["entries"], 100,
        "the ledger's capacity holds"
    );
    assert!(
        after_two < after_one + 8 * 1024,
        "memory flat: {after_one} kB then {after_two} kB"
    );
}

#[test]
fn tcp_senders_are_taken_from_listed_addresses_only() {
    let capture = tempfile::tempdir().unwrap();
    let path = capture.path().join("capture.fstrm");
    let frames: Vec<Vec<u8>> = (0..5u8)
        .map(|i| {
            answer(
                "ns3",
                [127, 0, 0, 40 + i],
                "app.svc.example.com.",
                BLUE,
                300,
                unix_ms(),
            )
        })
        .collect();
    std::fs::write(&path, file(&frames)).unwrap();
    let replay = |port: u16| {
        Command::new("fstrm_replay")
            .args(["-t", "protobuf:dnstap.Dnstap", "-r"])
            .arg(&path)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .output()
            .expect("fstrm_replay (package fstrm-bin)")
    };
    // Listed: its frames arrive.
    let port = free_port();
    let server = collector(port, "127.0.0.1");
    let out = replay(port);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arrived = common::until(Duration::from_secs(5), || {
        let metrics = common::scrape(&server, "/metrics");
        counter(&metrics, "flipdns_dnstap_answers_total{sender=\"ns3\"}") == 5
    });
    assert!(arrived.is_some(), "{}", common::scrape(&server, "/metrics"));
    // Not listed: refused and counted, nothing taken.
    let port = free_port();
    let other = collector(port, "127.0.0.2");
    let started = Instant::now();
    let _ = replay(port);
    assert!(started.elapsed() < Duration::from_secs(10));
    let metrics = common::scrape(&other, "/metrics");
    assert!(
        counter(
            &metrics,
            "flipdns_dnstap_streams_closed_total{why=\"not_allowed\"}"
        ) >= 1,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "flipdns_dnstap_answers_total{sender=\"ns3\"}"),
        0
    );
}
