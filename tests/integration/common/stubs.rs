//! Stand-ins for the world around the server: an HTTP service for health checks, and
//! simulated resolvers that query on a schedule from their own loopback addresses.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wire::query_with_subnet;

/// A tiny HTTP server on `addr` that answers every request with its current status, for
/// health checks; status 0 holds connections open without ever answering.
pub struct HttpStub {
    pub addr: SocketAddr,
    /// The Host header of the latest request.
    pub host: Arc<std::sync::Mutex<String>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpStub {
    pub fn start(addr: &str, status: u16) -> HttpStub {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::Relaxed;
        let listener = std::net::TcpListener::bind(addr).expect("bind the HTTP stub");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let current = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let (stopped, answer) = (stop.clone(), current.clone());
        let host = Arc::new(std::sync::Mutex::new(String::new()));
        let seen = host.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if stopped.load(Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let len = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..len]).to_string();
                if let Some(line) = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("host:"))
                {
                    *seen.lock().unwrap() = line[5..].trim().to_string();
                }
                let status = answer.load(Relaxed);
                if status == 0 {
                    held.push(stream);
                    continue;
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Stub\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        HttpStub {
            addr,
            host,
            status: current,
            stop,
            thread: Some(thread),
        }
    }

    /// Answers `status` from now on.
    pub fn set(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A simulated resolver: a UDP socket on its own loopback address that sends each query of
/// its schedule at its offset from `start`, and waits for the answer.
pub struct Resolver {
    thread: std::thread::JoinHandle<usize>,
}

/// One scheduled query: offset from the start, name, client subnet.
pub type Ask = (Duration, &'static str, Option<([u8; 4], u8)>);

impl Resolver {
    pub fn spawn(source: &str, server: SocketAddr, start: Instant, schedule: Vec<Ask>) -> Resolver {
        let socket =
            UdpSocket::bind(format!("{source}:0")).expect("bind a loopback source address");
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let thread = std::thread::spawn(move || {
            let mut answered = 0;
            let mut buf = [0u8; 1500];
            for (i, (offset, name, subnet)) in schedule.into_iter().enumerate() {
                if let Some(wait) = (start + offset).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                socket
                    .send_to(&query_with_subnet(i as u16, name, 1, subnet), server)
                    .unwrap();
                if socket.recv(&mut buf).is_ok() {
                    answered += 1;
                }
            }
            answered
        });
        Resolver { thread }
    }

    /// Waits for the schedule to finish; returns how many queries were answered.
    pub fn join(self) -> usize {
        self.thread.join().unwrap()
    }
}

/// Queries every `every` from `from` (inclusive) to `to` (exclusive), in milliseconds.
pub fn every(
    from_ms: u64,
    to_ms: u64,
    every_ms: u64,
    name: &'static str,
    subnet: Option<([u8; 4], u8)>,
) -> Vec<Ask> {
    (from_ms..to_ms)
        .step_by(every_ms as usize)
        .map(|ms| (Duration::from_millis(ms), name, subnet))
        .collect()
}
