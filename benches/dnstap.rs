//! dnstap ingest on one core: a captured stream of AUTH_RESPONSE frames (a secondary
//! answering `app.svc.example.com` to 50,000 resolvers) replayed into a real collector over
//! its Unix socket as fast as the collector reads it, decoded into the straggler ledger.
//!
//! `cargo bench --bench dnstap` prints frames a second and nanoseconds a frame (the
//! collector runs on one runtime thread; the replaying sender on another), then replays at
//! twice the target rate (1,000,000 frames a second, paced) against `frames_per_second =
//! 500000` and prints how many frames were dropped, and that every one was counted.
//! `DNSTAP_FRAMES=N` sets the frames per run (default 1,000,000).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flipdns::clock::Clock;
use flipdns::config::{DnstapConfig, DnstapListen};
use flipdns::cutover::{Cutovers, Probe};
use flipdns::dnstap::frames::{self, Control};
use flipdns::dnstap::message::{AUTH_RESPONSE, Dnstap, Message, TYPE_MESSAGE};
use flipdns::dnstap::{self, Collector};
use flipdns::fleet::Fleet;
use flipdns::state::Store;
use flipdns::stragglers::Ledger;
use flipdns::switch::Switch;
use hickory_proto::op::{Message as DnsMessage, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One frame's payload: resolver number `i` asked for the service and got blue.
fn payload(i: u32, now_ms: u64) -> Vec<u8> {
    let owner = Name::from_ascii("app.svc.example.com.").unwrap();
    let mut response = DnsMessage::query();
    response.metadata.message_type = MessageType::Response;
    response.metadata.authoritative = true;
    response.add_query(Query::query(owner.clone(), RecordType::A));
    response.add_answer(Record::from_rdata(
        owner,
        300,
        RData::A(A::new(192, 0, 2, 10)),
    ));
    let resolver = 0x0A00_0000 + i % 50_000;
    Dnstap {
        identity: Some(b"ns2".to_vec().into()),
        r#type: Some(TYPE_MESSAGE),
        message: Some(Message {
            r#type: Some(AUTH_RESPONSE),
            query_address: Some(resolver.to_be_bytes().to_vec().into()),
            query_time_sec: None,
            query_time_nsec: None,
            response_time_sec: Some(now_ms / 1000),
            response_time_nsec: Some((now_ms % 1000) as u32 * 1_000_000),
            response_message: Some(response.to_vec().unwrap().into()),
        }),
    }
    .encode_to_vec()
}

/// The capture: the data frames of `count` answers.
fn capture(count: u32) -> Vec<u8> {
    let now = Clock::System.now_ms();
    let one: Vec<Vec<u8>> = (0..1000).map(|i| payload(i, now)).collect();
    let mut out = Vec::new();
    for i in 0..count {
        // Distinct resolvers across the whole run: the address bytes differ per frame.
        let mut p = one[(i % 1000) as usize].clone();
        let at = p
            .windows(4)
            .position(|w| w == (0x0A00_0000 + i % 1000).to_be_bytes())
            .unwrap();
        p[at..at + 4].copy_from_slice(&(0x0A00_0000 + i % 50_000).to_be_bytes());
        out.extend(frames::data(&p));
    }
    out
}

struct Run {
    frames: u64,
    observed: u64,
    dropped: u64,
    elapsed: Duration,
}

/// Replays `stream` (of `count` frames) into a fresh collector allowing `rate` frames a
/// second, `chunk` bytes at a time, pacing each chunk to `pace` (none: as fast as it goes).
fn replay(stream: &[u8], count: u64, rate: u64, pace: Option<Duration>, chunk: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dnstap.sock");
    let catalog = flipdns::fixture::catalog();
    let store = Store::open(&dir.path().join("state.json")).unwrap();
    // The collector's runtime: one thread, as one core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
    let collector = runtime.block_on(async {
        let switch = Arc::new(Switch::start(catalog, store, Clock::System).unwrap());
        let fleet = Fleet::start(
            &switch.catalog(),
            switch.records().clone(),
            Clock::System,
            &shutdown,
            &tracker,
        );
        let cutovers = Arc::new(Cutovers::start(
            switch.clone(),
            fleet,
            Clock::System,
            Arc::new(Probe(Clock::System)),
            &shutdown,
            &tracker,
        ));
        let ledger = Ledger::start(
            1_000_000,
            switch.records().clone(),
            Clock::System,
            flipdns::stragglers::DRAIN_EVERY,
            &shutdown,
            &tracker,
        );
        let config = DnstapConfig {
            listen: vec![DnstapListen::Unix(socket.clone())],
            frames_per_second: rate,
            max_frame: 1 << 20,
            ..DnstapConfig::default()
        };
        let (listeners, files) = dnstap::bind(&config).await.unwrap();
        let collector = Collector::new(
            config,
            switch.records().clone(),
            Some(ledger),
            cutovers,
            Clock::System,
        );
        for (_, run) in collector.serve(listeners, &shutdown, &tracker) {
            tokio::spawn(run);
        }
        std::mem::forget(files);
        collector
    });
    let sender = {
        let (socket, stream) = (socket.clone(), stream.to_vec());
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(&socket).unwrap();
            s.write_all(&frames::control(Control::Ready, true)).unwrap();
            let mut accept = [0u8; 42];
            s.read_exact(&mut accept).unwrap();
            s.write_all(&frames::control(Control::Start, true)).unwrap();
            let started = Instant::now();
            for (i, part) in stream.chunks(chunk).enumerate() {
                if let Some(pace) = pace {
                    let due = started + pace * i as u32;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
                s.write_all(part).unwrap();
            }
            s.write_all(&frames::control(Control::Stop, false)).unwrap();
            let mut finish = [0u8; 12];
            s.read_exact(&mut finish).unwrap();
            started.elapsed()
        })
    };
    let elapsed = runtime.block_on(async {
        loop {
            if sender.is_finished() {
                return sender.join().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    shutdown.cancel();
    let streams = dnstap::streams(Some(&collector), &[]);
    let sum = |f: fn(&dnstap::StreamState) -> u64| streams.iter().map(f).sum::<u64>();
    let run = Run {
        frames: sum(|s| s.frames),
        observed: sum(|s| s.observed),
        dropped: sum(|s| s.dropped),
        elapsed,
    };
    assert_eq!(run.frames, count, "every frame read");
    run
}

fn main() {
    let count: u32 = std::env::var("DNSTAP_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let stream = capture(count);
    let per_frame = stream.len() / count as usize;
    println!("dnstap ingest: {count} AUTH_RESPONSE frames of {per_frame} bytes, 50,000 resolvers");
    let mut rates = Vec::new();
    for round in 0..3 {
        let run = replay(&stream, count.into(), u64::MAX / 2, None, 64 * 1024);
        let rate = run.frames as f64 / run.elapsed.as_secs_f64();
        println!(
            "  run {}: {:.0} frames/s, {:.0} ns/frame ({} into the ledger, {} dropped)",
            round + 1,
            rate,
            1e9 / rate,
            run.observed,
            run.dropped
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "  median: {:.0} frames/s, {:.0} ns/frame",
        rates[1],
        1e9 / rates[1]
    );
    // Twice the target rate, offered in 1 ms steps, against frames_per_second = 500,000.
    let frames_per_ms = 1000;
    let run = replay(
        &stream,
        count.into(),
        500_000,
        Some(Duration::from_millis(1)),
        per_frame * frames_per_ms,
    );
    println!(
        "  offered 1,000,000 frames/s against frames_per_second = 500000: {} taken, {} dropped ({:.0}%), every frame counted: {}",
        run.observed,
        run.dropped,
        100.0 * run.dropped as f64 / run.frames as f64,
        run.observed + run.dropped == run.frames
    );
}
