//! Flips under load on the batched UDP path (two workers, each with its own socket): no
//! response mixes colors, and after a flip is acknowledged no query sent later gets the old
//! color.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Server, Setup, a_records, query};

const FLIPS: usize = 300;
const CLIENTS: usize = 4;
/// Sockets that flood the server without waiting for replies, so that batches fill.
const FLOODERS: usize = 2;
/// Queries a flooder keeps in flight.
const IN_FLIGHT: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seen {
    Blue,
    Green,
}

fn color_of(addresses: &[Ipv4Addr]) -> Seen {
    let blue = addresses
        .iter()
        .filter(|a| a.octets()[..3] == [192, 0, 2])
        .count();
    let green = addresses
        .iter()
        .filter(|a| a.octets()[..3] == [198, 51, 100])
        .count();
    assert!(
        blue == 0 || green == 0,
        "a response mixed colors: {addresses:?}"
    );
    assert!(
        blue + green == addresses.len() && !addresses.is_empty(),
        "unexpected answer {addresses:?}"
    );
    if blue > 0 { Seen::Blue } else { Seen::Green }
}

#[test]
fn flips_under_load_never_mix_colors_or_go_back() {
    let server = Server::start_with(&Setup {
        server: "workers = 2\nudp_batch = 16".into(),
        ..Setup::default()
    });
    assert!(server.log().contains("udp: 2 workers per address"));
    let addr = server.udp();
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|f| {
            let stop = stop.clone();
            std::thread::spawn(move || flood(f, addr, &stop))
        })
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut seen = Vec::new();
                let mut buf = [0u8; 1500];
                let mut id = (c as u16) << 12;
                while !stop.load(Ordering::Relaxed) {
                    id = id.wrapping_add(1);
                    let sent = Instant::now();
                    socket
                        .send_to(&query(id, "app.svc.example.com", 1), addr)
                        .unwrap();
                    let Ok(len) = socket.recv(&mut buf) else {
                        continue;
                    };
                    if buf[..2] != id.to_be_bytes() {
                        continue; // a late reply to an earlier, timed-out query
                    }
                    seen.push((sent, Instant::now(), color_of(&a_records(&buf[..len]))));
                }
                seen
            })
        })
        .collect();

    // (request sent, acknowledgement received, color) for every flip, driven by flipdns ctl.
    let mut flips = Vec::with_capacity(FLIPS);
    for i in 0..FLIPS {
        let (to, color) = if i % 2 == 0 {
            ("green", Seen::Green)
        } else {
            ("blue", Seen::Blue)
        };
        let requested = Instant::now();
        server.ctl_ok(&["flip", "app", "--to", to, "--now"]);
        flips.push((requested, Instant::now(), color));
        // A gap between flips, so that queries land between an acknowledgement and the
        // next request, where exactly one color is right.
        std::thread::sleep(Duration::from_millis(3));
    }
    stop.store(true, Ordering::Relaxed);
    let flooded: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    assert!(flooded > FLIPS, "the flooders got only {flooded} answers");
    let seen: Vec<(Instant, Instant, Seen)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();

    let mut checked = 0;
    for (sent, received, color) in &seen {
        // The last flip acknowledged before this query was sent decides its color, unless
        // the next flip was requested before its answer came back (then either color is
        // right: under load a query waits in the socket's queue, and may be answered after
        // the next flip).
        let Some(i) = flips.iter().rposition(|(_, acked, _)| acked <= sent) else {
            continue;
        };
        if flips
            .get(i + 1)
            .is_some_and(|(requested, _, _)| requested <= received)
        {
            continue;
        }
        assert_eq!(
            *color, flips[i].2,
            "a query sent after flip {i} was acknowledged got the old color"
        );
        checked += 1;
    }
    assert!(
        seen.len() > FLIPS,
        "the clients got only {} answers",
        seen.len()
    );
    assert!(
        checked > FLIPS,
        "only {checked} of {} answers fell between flips",
        seen.len()
    );
    let status: serde_json::Value =
        serde_json::from_str(&server.ctl_ok(&["status", "--json"])).unwrap();
    assert_eq!(status["services"][0]["flips"], FLIPS);
    assert_eq!(status["zones"][0]["serial"], 2026112601 + FLIPS as u64);
}

/// Keeps [`IN_FLIGHT`] queries outstanding until `stop`, checks that no answer mixes
/// colors, and returns how many answers came.
fn flood(index: usize, addr: std::net::SocketAddr, stop: &AtomicBool) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut answers = 0;
    let mut id = 0x8000u16 | ((index as u16) << 13);
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..IN_FLIGHT {
            id = id.wrapping_add(1);
            socket
                .send_to(&query(id, "app.svc.example.com", 1), addr)
                .unwrap();
        }
        for _ in 0..IN_FLIGHT {
            let Ok(len) = socket.recv(&mut buf) else {
                break;
            };
            color_of(&a_records(&buf[..len]));
            answers += 1;
        }
    }
    answers
}
