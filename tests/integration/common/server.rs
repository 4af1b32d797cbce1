//! The server under test: a temporary directory with config and zone, the real binary
//! started on a free loopback port, `flipdns ctl`, and the kill in `Drop` (which prints the
//! server's log when the test panicked, so a failure shows what the server saw).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::dig::{Dig, dig};

pub const BIN: &str = env!("CARGO_BIN_EXE_flipdns");

/// The zone every test serves unless it brings its own.
pub const ZONE: &str = "\
$ORIGIN svc.example.com.
$TTL 3600
@       IN SOA  ns1 hostmaster.example.com. 2026112601 7200 900 1209600 60
        IN NS   ns1
ns1     IN A    192.0.2.53
www 300 IN CNAME app
static  IN TXT  \"as written\"
deep.empty IN A 192.0.2.99
";

/// `[[service]]` tables every test serves unless it brings its own: `app` with two IPv4 and
/// one IPv6 address in blue, one of each in green.
pub const SERVICES: &str = r#"
[[service]]
name = "app"
blue = ["192.0.2.10", "192.0.2.11", "2001:db8::10"]
green = ["198.51.100.10", "2001:db8::20"]
live = "blue"
ttl = 300
cutover_ttl = 5
settle = "10m"
"#;

pub const BLUE_V4: [&str; 2] = ["192.0.2.10", "192.0.2.11"];
pub const GREEN_V4: [&str; 1] = ["198.51.100.10"];

/// How long a start may take before the test gives up.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// What to write into the temporary directory before starting.
pub struct Setup {
    pub zone: String,
    pub services: String,
    /// Extra lines for the `[server]` table.
    pub server: String,
    /// Extra tables (e.g. `[limits]`).
    pub extra: String,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            zone: ZONE.into(),
            services: SERVICES.into(),
            server: String::new(),
            extra: String::new(),
        }
    }
}

impl Setup {
    pub fn config(&self) -> String {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_socket = \"run/flipdns.sock\"\nstate_file = \"run/state.json\"\n{}\n{}\n[[zone]]\norigin = \"svc.example.com.\"\nfile = \"svc.zone\"\n{}",
            self.server, self.extra, self.services
        )
    }

    /// Writes config and zone into a new temporary directory.
    pub fn write(&self) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix("flipdns")
            .tempdir()
            .expect("temporary directory");
        std::fs::write(dir.path().join("flipdns.toml"), self.config()).unwrap();
        std::fs::write(dir.path().join("svc.zone"), &self.zone).unwrap();
        dir
    }
}

/// A running `flipdns serve`.
pub struct Server {
    pub dir: TempDir,
    pub port: u16,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&Setup::default())
    }

    pub fn start_with(setup: &Setup) -> Server {
        Server::start_in(setup.write())
    }

    /// Starts the server on the config in `dir`, waiting for `ready`.
    pub fn start_in(dir: TempDir) -> Server {
        Server::start_within(dir, READY_WITHIN)
    }

    /// Like [`Server::start_in`], waiting up to `limit` (large zones take a while to load in
    /// a debug build).
    pub fn start_within(dir: TempDir, limit: Duration) -> Server {
        match Server::try_start_within(dir, limit) {
            Ok(server) => server,
            Err((_, log)) => panic!("flipdns did not become ready:\n{log}"),
        }
    }

    /// Starts the server; on failure returns the directory and everything it printed.
    pub fn try_start_in(dir: TempDir) -> Result<Server, (TempDir, String)> {
        Server::try_start_within(dir, READY_WITHIN)
    }

    /// Like [`Server::start_in`], with `envs` set in the server's environment.
    pub fn start_in_with_env(dir: TempDir, envs: &[(&str, &std::ffi::OsStr)]) -> Server {
        match Server::try_start(dir, READY_WITHIN, envs) {
            Ok(server) => server,
            Err((_, log)) => panic!("flipdns did not become ready:\n{log}"),
        }
    }

    fn try_start_within(dir: TempDir, limit: Duration) -> Result<Server, (TempDir, String)> {
        Server::try_start(dir, limit, &[])
    }

    fn try_start(
        dir: TempDir,
        limit: Duration,
        envs: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Server, (TempDir, String)> {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(dir.path().join("flipdns.toml"))
            .env("FLIPDNS_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flipdns");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut port = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if port.is_none() {
                    port = line
                        .split("listening on udp 127.0.0.1:")
                        .nth(1)
                        .and_then(|p| {
                            let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
                            p[..digits].parse::<u16>().ok()
                        });
                }
                // Text (`INFO flipdns::server: ready`) or JSON (`"message":"ready"`).
                if line.contains(" ready") || line.contains("\"message\":\"ready\"") {
                    let _ = ready_tx.send(port);
                }
                lines.lock().unwrap().push(line);
            }
            let _ = ready_tx.send(None);
        });
        match ready_rx.recv_timeout(limit) {
            Ok(Some(port)) => Ok(Server {
                dir,
                port,
                child,
                log,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                let text = log.lock().unwrap().join("\n");
                Err((dir, text))
            }
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("flipdns.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/flipdns.sock")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("run/state.json")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        super::until(limit, || self.log().contains(needle)).is_some()
    }

    /// SIGKILL: no cleanup, as after a crash or power loss.
    pub fn kill9(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::Builder::new().tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// SIGTERM, waiting for the exit; returns the directory to start again in.
    pub fn sigterm(mut self) -> TempDir {
        let status = self.signal_and_wait(libc::SIGTERM);
        assert!(status.success(), "SIGTERM exits 0: {status}");
        let dir = tempfile::Builder::new().tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Sends `signal` and waits for the exit status.
    pub fn stop_with(mut self, signal: i32) -> std::process::ExitStatus {
        self.signal_and_wait(signal)
    }

    fn signal_and_wait(&mut self, signal: i32) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "flipdns did not exit after signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `dig @127.0.0.1 -p PORT +norec ARGS`.
    pub fn dig(&self, args: &[&str]) -> Dig {
        dig(self.port, args)
    }

    /// `flipdns ctl --socket SOCKET ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.socket(), args)
    }

    /// `ctl ARGS`, which must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "flipdns ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn udp(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- flipdns log (port {}) ----\n{}\n---- end of flipdns log ----",
                self.port,
                self.log()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run flipdns ctl")
}

/// `[[service]]` `app` with the small TTLs cutover tests use: ttl 4, cutover_ttl 1, settle 3 s.
pub fn short_service(extra: &str) -> String {
    format!(
        "[[service]]\nname = \"app\"\nblue = [\"192.0.2.10\", \"192.0.2.11\"]\ngreen = [\"198.51.100.10\"]\nlive = \"blue\"\nttl = 4\ncutover_ttl = 1\nsettle = \"3s\"\n{extra}\n"
    )
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The JSON `status` of one service.
pub fn service_status(server: &Server, service: &str) -> serde_json::Value {
    let text = server.ctl_ok(&["status", service, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text).expect("status --json is JSON");
    status["services"][0].clone()
}

/// `GET path` from the server's metrics endpoint (found in its log); the whole response.
pub fn scrape(server: &Server, path: &str) -> String {
    request(server, "GET", path)
}

/// An HTTP/1.1 `method path` to the metrics endpoint; the whole response.
pub fn request(server: &Server, method: &str, path: &str) -> String {
    request_with(server, method, path, "")
}

/// Like [`request`], with `headers` (`Name: value\r\n` lines) added.
pub fn request_with(server: &Server, method: &str, path: &str, headers: &str) -> String {
    let log = server.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .expect("metrics address in the log");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
    text
}

/// Runs `command`, fails the test with its stderr unless it succeeds, and returns its output.
pub fn run_ok(command: &mut Command) -> Output {
    let out = command.output().expect("run the command");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Headless Chromium with `args` (its own profile; certificates of the tests' private CAs
/// accepted), given time for a page's script to fetch and draw; its stdout.
pub fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = run_ok(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--ignore-certificate-errors",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
