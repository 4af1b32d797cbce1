//! DNS over TCP under pressure: the connection cap, timeouts, pipelining, non-readers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{BLUE_V4, Server, Setup, a_records, framed, query, read_reply};

fn limits(text: &str) -> Setup {
    Setup {
        extra: format!("[limits]\n{text}\n"),
        ..Setup::default()
    }
}

/// Blocks until the server closes `stream`; returns how long that took.
fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => continue,
        }
    }
}

#[test]
fn connections_beyond_the_cap_are_closed_and_udp_keeps_answering() {
    let server = Server::start_with(&limits("tcp_connections = 3"));
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(server.udp()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(server.udp()).unwrap();
    extra
        .write_all(&framed(&query(1, "app.svc.example.com", 1)))
        .unwrap();
    assert!(
        closed_after(&mut extra) < Duration::from_secs(2),
        "the fourth connection is closed at once"
    );
    assert_eq!(
        server.dig(&["app.svc.example.com", "A"]).data("A"),
        BLUE_V4,
        "UDP is unaffected"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server.dig(&["+tcp", "app.svc.example.com", "A"]).data("A"),
        BLUE_V4,
        "TCP is back once connections close"
    );
}

#[test]
fn idle_connections_are_closed() {
    let server = Server::start_with(&limits("tcp_idle_timeout = \"300ms\""));
    let mut stream = TcpStream::connect(server.udp()).unwrap();
    let took = closed_after(&mut stream);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[test]
fn a_client_that_stalls_mid_message_is_dropped() {
    let server = Server::start_with(&limits(
        "tcp_idle_timeout = \"10s\"\ntcp_message_timeout = \"300ms\"",
    ));
    let mut stream = TcpStream::connect(server.udp()).unwrap();
    let message = framed(&query(1, "app.svc.example.com", 1));
    stream.write_all(&message[..5]).unwrap();
    let took = closed_after(&mut stream);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}, long before the idle timeout"
    );
}

#[test]
fn pipelined_queries_are_answered_in_order() {
    let server = Server::start();
    let mut stream = TcpStream::connect(server.udp()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut batch = Vec::new();
    for id in 0..50u16 {
        batch.extend(framed(&query(id, "app.svc.example.com", 1)));
    }
    stream.write_all(&batch).unwrap();
    for id in 0..50u16 {
        let reply = read_reply(&mut stream).unwrap();
        assert_eq!(reply[..2], id.to_be_bytes());
        assert_eq!(a_records(&reply).len(), 2);
    }
}

#[test]
fn a_client_that_never_reads_is_dropped() {
    let server = Server::start_with(&limits(
        "tcp_idle_timeout = \"10s\"\ntcp_message_timeout = \"500ms\"",
    ));
    let mut stream = TcpStream::connect(server.udp()).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let message = framed(&query(1, "app.svc.example.com", 1));
    let started = Instant::now();
    // Keep sending and never read: the replies fill both socket buffers, the server's write
    // stalls, and the message timeout drops the connection; then our writes fail.
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(20) {
        match stream.write(&message) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "still connected after sending {sent} bytes"
    );
    assert_eq!(
        server.dig(&["+tcp", "app.svc.example.com", "A"]).data("A"),
        BLUE_V4
    );
}
