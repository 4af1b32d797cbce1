//! The HTTPS API against the admin socket, on the real binary (the release build `cargo
//! bench` makes), with real TLS (certificates made by the openssl CLI):
//!
//! - flip latency: a `flip --now --force` asked, to the first DNS answer with the new
//!   color (a UDP poller asks in a loop), and to the reply; over a kept-alive HTTPS
//!   connection and over the socket, alternating, `API_FLIPS` each (default 100);
//! - `GET /v1/services` requests a second against the socket's `status`, `API_CLIENTS`
//!   clients (default 4) on kept-alive connections for `API_SECONDS` (default 5).
//!
//! `cargo bench --bench api` prints medians and ratios; compare them side by side in one
//! run on a quiet machine (README, "Benchmarks").

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flipdns");

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect(program);
    assert!(status.success(), "{program} {args:?}");
}

/// A CA and a certificate for 127.0.0.1, and a token; the server started on them.
fn start(dir: &Path) -> (Child, String, u16, String) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=bench",
    ]);
    run(dir, "openssl", &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=server",
    ]);
    run(dir, "openssl", &csr);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
    );
    let out = Command::new(BIN)
        .args([
            "token", "new", "bench", "--scope", "flip:*", "--scope", "read",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (token, block) = text.split_once('\n').unwrap();
    std::fs::write(
        dir.join("svc.zone"),
        "$TTL 3600\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flipdns.toml"),
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"s\"\nstate_file = \"state.json\"\n\
             [limits]\nadmin_clients = 64\n[[zone]]\norigin = \"svc.example.com.\"\nfile = \"svc.zone\"\n\
             [[service]]\nname = \"app\"\nblue = [\"192.0.2.10\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\n\
             ttl = 60\ncutover_ttl = 5\nsettle = \"1s\"\n\
             [api]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n{block}"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("flipdns.toml"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut dns, mut api) = (0u16, String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(port) = line.split("listening on udp 127.0.0.1:").nth(1) {
            dns = port.trim().parse().unwrap();
        }
        if let Some(url) = line.split("api on ").nth(1) {
            api = url.trim_end_matches("/v1/").to_string();
        }
        if line.ends_with(" ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, api, dns, token.to_string())
}

fn client(dir: &Path) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

/// Which color `app` answers now, by a UDP query.
fn answer(socket: &UdpSocket, id: u16) -> Option<u8> {
    let mut query = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["app", "svc", "example", "com"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send(&query).ok()?;
    let mut buffer = [0u8; 512];
    let n = socket.recv(&mut buffer).ok()?;
    // The last answer's first address octet: 192 (blue) or 198 (green).
    (n > 4).then(|| buffer[n - 4])
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, dns, token) = start(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = client(dir.path());
    let flips = setting("API_FLIPS", 100);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(("127.0.0.1", dns)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut socket = UnixStream::connect(dir.path().join("s")).unwrap();
    let mut replies = BufReader::new(socket.try_clone().unwrap());

    let (mut api_answer, mut api_reply, mut sock_answer, mut sock_reply) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut color = "green";
    for i in 0..flips * 2 {
        let over_api = i % 2 == 0;
        let target = if color == "green" { 198 } else { 192 };
        let started = Instant::now();
        // The poller sees the swap while the request is still on its way back.
        let seen = std::thread::scope(|scope| {
            let poller = scope.spawn(|| {
                let mut id = 0u16;
                loop {
                    id = id.wrapping_add(1);
                    if answer(&udp, id) == Some(target) {
                        return started.elapsed();
                    }
                }
            });
            if over_api {
                runtime.block_on(async {
                    let response = http
                        .post(format!("{url}/v1/services/app/flip"))
                        .bearer_auth(&token)
                        .header("Content-Type", "application/json")
                        .body(format!(r#"{{"to":"{color}","now":true,"force":true}}"#))
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.unwrap();
                });
            } else {
                let line = format!(
                    "{{\"cmd\":\"flip\",\"service\":\"app\",\"to\":\"{color}\",\"now\":true,\"force\":true}}\n"
                );
                socket.write_all(line.as_bytes()).unwrap();
                let mut reply = String::new();
                replies.read_line(&mut reply).unwrap();
                assert!(reply.starts_with("{\"ok\""), "{reply}");
            }
            let replied = started.elapsed();
            (poller.join().unwrap(), replied)
        });
        let (answered, replied) = (seen.0.as_secs_f64() * 1e3, seen.1.as_secs_f64() * 1e3);
        if over_api {
            api_answer.push(answered);
            api_reply.push(replied);
        } else {
            sock_answer.push(answered);
            sock_reply.push(replied);
        }
        color = if color == "green" { "blue" } else { "green" };
    }
    let (aa, ar, sa, sr) = (
        median(api_answer),
        median(api_reply),
        median(sock_answer),
        median(sock_reply),
    );
    println!(
        "flip --now --force, {flips} each, medians (request to the first DNS answer with the new color / to the reply):"
    );
    println!("  HTTPS API    {aa:.2} ms / {ar:.2} ms");
    println!("  admin socket {sa:.2} ms / {sr:.2} ms");
    println!("  API/socket   {:.2}x / {:.2}x", aa / sa, ar / sr);

    let clients = setting("API_CLIENTS", 4);
    let seconds = setting("API_SECONDS", 5);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let api_rate = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            let (stop, count) = (stop.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    let response = http
                        .get(format!("{url}/v1/services"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success());
                    response.bytes().await.unwrap();
                    count.fetch_add(1, Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        count.load(Relaxed) as f64 / seconds as f64
    });
    stop.store(false, Relaxed);
    count.store(0, Relaxed);
    let socket_rate = std::thread::scope(|scope| {
        for _ in 0..clients {
            let (stop, count) = (stop.clone(), count.clone());
            let path = dir.path().join("s");
            scope.spawn(move || {
                let mut socket = UnixStream::connect(path).unwrap();
                let mut replies = BufReader::new(socket.try_clone().unwrap());
                let mut reply = String::new();
                while !stop.load(Relaxed) {
                    socket.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
                    reply.clear();
                    replies.read_line(&mut reply).unwrap();
                    count.fetch_add(1, Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Relaxed);
        count.load(Relaxed) as f64 / seconds as f64
    });
    println!(
        "status of every service, {clients} clients on kept-alive connections, {seconds} s each:"
    );
    println!("  GET /v1/services  {api_rate:.0} requests/s");
    println!("  socket status     {socket_rate:.0} requests/s");
    println!("  API/socket        {:.2}x", api_rate / socket_rate);
    let _ = child.kill();
    let _ = child.wait();
}
