//! Real secondaries of the server under test: NSD, Knot and BIND, each in the foreground in
//! a temporary directory on a loopback port, following the primary by NOTIFY and zone
//! transfer with a TSIG key, stopped by PID (NSD's three processes by process group).

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::dig::{Dig, dig};

/// A throw-away TSIG secret (32 bytes, base64) for the tests.
pub const SECRET: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
pub const KEY: &str = "xfr-key";

/// Which stock server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nsd,
    Knot,
    Bind,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nsd => "nsd",
            Kind::Knot => "knot",
            Kind::Bind => "bind",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Kind::Nsd => "nsd",
            Kind::Knot => "knotd",
            Kind::Bind => "named",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Kind::Nsd => "nsd",
            Kind::Knot => "knot",
            Kind::Bind => "bind9",
        }
    }
}

/// A loopback port free for both UDP and TCP, for a server that must bind both and may be
/// restarted on it. Taken below the kernel's ephemeral range (32768 and up by default), so
/// that an outgoing connection of another test cannot take it between here and the bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20000;
    const SPAN: u32 = 12000;
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let port =
            (FIRST + seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 7) % SPAN) as u16;
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN);
}

/// The `[[tsig_key]]` and `[[secondary]]` tables for secondaries on `ports`, with the key
/// file written into `dir` (mode 0600).
pub fn primary_config(dir: &std::path::Path, secondaries: &[(&str, u16)]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("xfr-key.b64");
    std::fs::write(&key, SECRET).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut out = format!(
        "[[tsig_key]]\nname = \"{KEY}\"\nalgorithm = \"hmac-sha256\"\nsecret_file = \"xfr-key.b64\"\n"
    );
    for (name, port) in secondaries {
        out.push_str(&format!(
            "[[secondary]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nkey = \"{KEY}\"\n"
        ));
    }
    out
}

/// A running secondary, stopped on drop.
pub struct Secondary {
    pub kind: Kind,
    pub port: u16,
    pub primary: u16,
    /// Where it streams what it answers (dnstap), and the identity it streams as.
    dnstap: Option<(std::path::PathBuf, String)>,
    child: Option<Child>,
    dir: TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Secondary {
    /// Starts `kind` on `port`, secondary of the primary on `primary`, with the test key.
    pub fn start(kind: Kind, port: u16, primary: u16) -> Secondary {
        Secondary::start_streaming(kind, port, primary, None)
    }

    /// Like [`Secondary::start`], streaming its answers as dnstap to the Unix socket of
    /// `dnstap` with the identity given there (its answers to any query, RD set or not:
    /// BIND calls those with RD set client responses).
    pub fn start_streaming(
        kind: Kind,
        port: u16,
        primary: u16,
        dnstap: Option<(&std::path::Path, &str)>,
    ) -> Secondary {
        if Command::new(kind.program()).arg("-V").output().is_err()
            && Command::new(kind.program()).arg("-v").output().is_err()
        {
            panic!(
                "`{}` is not installed: this test runs a real {} secondary. Install it with `apt-get install -y {}` (or run .ci/run).",
                kind.program(),
                kind.name(),
                kind.package()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(kind.name())
            .tempdir()
            .unwrap();
        let mut secondary = Secondary {
            kind,
            port,
            primary,
            dnstap: dnstap.map(|(path, identity)| (path.to_path_buf(), identity.to_string())),
            child: None,
            dir,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        secondary.write_config();
        secondary.spawn();
        secondary
    }

    fn write_config(&self) {
        let dir = self.dir.path().display().to_string();
        let (port, primary) = (self.port, self.primary);
        let (file, text) = match self.kind {
            Kind::Nsd => (
                "nsd.conf",
                format!(
                    "server:\n  ip-address: 127.0.0.1@{port}\n  do-ip6: no\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{dir}\"\n  database: \"\"\n  zonelistfile: \"{dir}/zone.list\"\n  xfrdfile: \"{dir}/xfrd.state\"\n  xfrdir: \"{dir}\"\n  pidfile: \"{dir}/nsd.pid\"\n  cookie-secret-file: \"{dir}/cookies.txt\"\n  verbosity: 2\n  zonefiles-write: 0\n  xfrd-reload-timeout: 0\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\nkey:\n  name: \"{KEY}\"\n  algorithm: hmac-sha256\n  secret: \"{SECRET}\"\nzone:\n  name: \"svc.example.com\"\n  zonefile: \"svc.example.com.zone\"\n  allow-notify: 127.0.0.1 {KEY}\n  request-xfr: 127.0.0.1@{primary} {KEY}\n"
                ),
            ),
            Kind::Knot => (
                "knot.conf",
                format!(
                    "server:\n  rundir: \"{dir}\"\n  listen: 127.0.0.1@{port}\nlog:\n  - target: stderr\n    any: info\ndatabase:\n  storage: \"{dir}\"\n  journal-db-mode: asynchronous\nkey:\n  - id: {KEY}\n    algorithm: hmac-sha256\n    secret: {SECRET}\nremote:\n  - id: primary\n    address: 127.0.0.1@{primary}\n    key: {KEY}\n    block-notify-after-transfer: on\nacl:\n  - id: notify-from-primary\n    address: 127.0.0.1\n    key: {KEY}\n    action: notify\ntemplate:\n  - id: default\n    storage: \"{dir}\"\nzone:\n  - domain: svc.example.com\n    master: primary\n    acl: notify-from-primary\n    zonefile-sync: -1\n    zonefile-load: none\n    journal-content: all\n"
                ),
            ),
            Kind::Bind => (
                "named.conf",
                format!(
                    "options {{\n  directory \"{dir}\";\n  pid-file \"{dir}/named.pid\";\n  lock-file \"{dir}/named.lock\";\n  session-keyfile \"{dir}/session.key\";\n  managed-keys-directory \"{dir}\";\n  bindkeys-file \"/dev/null\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  recursion no;\n  dnssec-validation no;\n  notify no;\n  serial-query-rate 1000;\n}};\ncontrols {{ }};\nlogging {{\n  channel xfr {{ stderr; severity debug 3; print-time yes; print-category yes; }};\n  channel std {{ stderr; severity info; print-time yes; print-category yes; }};\n  category default {{ std; }};\n  category xfer-in {{ xfr; }};\n  category notify {{ std; }};\n}};\nkey \"{KEY}\" {{\n  algorithm hmac-sha256;\n  secret \"{SECRET}\";\n}};\nzone \"svc.example.com\" {{\n  type secondary;\n  file \"svc.example.com.db\";\n  masterfile-format text;\n  primaries {{ 127.0.0.1 port {primary} key {KEY}; }};\n  allow-notify {{ key {KEY}; }};\n}};\n"
                ),
            ),
        };
        let text = match (&self.dnstap, self.kind) {
            (Some((socket, identity)), Kind::Knot) => text
                .replacen(
                    "template:\n",
                    &format!("{}template:\n", dnstap_config(Kind::Knot, socket, identity)),
                    1,
                )
                .replacen(
                    "    storage: \"",
                    "    global-module: mod-dnstap/tap\n    storage: \"",
                    1,
                ),
            (Some((socket, identity)), _) => text + &dnstap_config(self.kind, socket, identity),
            (None, _) => text,
        };
        let text = if let (Kind::Bind, Some((socket, identity))) = (self.kind, &self.dnstap) {
            text.replacen(
                "  serial-query-rate 1000;\n",
                &format!(
                    "  serial-query-rate 1000;\n  dnstap {{ auth response; client response; }};\n  dnstap-output unix \"{}\";\n  dnstap-identity \"{identity}\";\n  fstrm-set-flush-timeout 1;\n  fstrm-set-reopen-interval 1;\n",
                    socket.display()
                ),
                1,
            )
        } else {
            text
        };
        std::fs::write(self.dir.path().join(file), text).unwrap();
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut command = match self.kind {
            Kind::Nsd => {
                let mut c = Command::new("nsd");
                c.arg("-d").arg("-c").arg(dir.join("nsd.conf"));
                c
            }
            Kind::Knot => {
                let mut c = Command::new("knotd");
                c.arg("-c").arg(dir.join("knot.conf"));
                c
            }
            Kind::Bind => {
                let mut c = Command::new("named");
                c.arg("-f")
                    .arg("-L")
                    .arg(dir.join("named.early.log"))
                    .arg("-c")
                    .arg(dir.join("named.conf"));
                c
            }
        };
        // Its own process group: NSD forks, and the whole group is stopped at once.
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the secondary");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
    }

    /// Stops it (SIGTERM to its process group, then SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = child.id() as i32;
            // SAFETY: kill(2) on the process group this test started.
            unsafe { libc::kill(-group, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            // NSD's children notice their parent is gone within a second.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes it (SIGSTOP to its process group): it takes datagrams and answers none, as
    /// a hung host would.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused secondary run again.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        let group = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on the process group this test started.
        unsafe { libc::kill(-group, signal) };
    }

    /// Starts it again in the same directory, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn dig(&self, args: &[&str]) -> Dig {
        dig(self.port, args)
    }

    /// The serial it serves, if it serves the zone.
    pub fn serial(&self) -> Option<u32> {
        let answer = self.dig(&["svc.example.com", "SOA"]);
        (answer.status == "NOERROR")
            .then(|| answer.soa_serial())
            .flatten()
    }

    /// Waits up to `limit` until it serves `serial` or later; how long it took.
    pub fn wait_serial(&self, serial: u32, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self
                .serial()
                .is_some_and(|s| s.wrapping_sub(serial) < 1 << 31)
            {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Its log so far (NSD writes it to stderr with -d, Knot and BIND to stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// What NSD and Knot need added to their config to stream answers to `socket`; BIND's goes
/// inside its options, above.
fn dnstap_config(kind: Kind, socket: &std::path::Path, identity: &str) -> String {
    let socket = socket.display();
    match kind {
        Kind::Nsd => format!(
            "dnstap:\n  dnstap-enable: yes\n  dnstap-socket-path: \"{socket}\"\n  dnstap-send-identity: yes\n  dnstap-identity: \"{identity}\"\n  dnstap-log-auth-query-messages: no\n  dnstap-log-auth-response-messages: yes\n"
        ),
        Kind::Knot => format!(
            "mod-dnstap:\n  - id: tap\n    sink: \"unix:{socket}\"\n    identity: \"{identity}\"\n    log-queries: off\n    log-responses: on\n"
        ),
        Kind::Bind => String::new(),
    }
}

impl Drop for Secondary {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} secondary on port {} ---\n{}",
                self.kind.name(),
                self.port,
                self.log()
            );
        }
        self.stop();
    }
}

/// The primary of `secondaries`, serving `services`, with the metrics listener and
/// `[dnstap]` on `run/dnstap.sock` (mode 0666, so the secondaries' users can write to it).
pub fn streaming_primary(services: &str, secondaries: &[(&str, u16)]) -> crate::common::Server {
    let setup = crate::common::Setup {
        zone: crate::common::ZONE.into(),
        services: services.into(),
        server: "metrics_listen = \"127.0.0.1:0\"\n".into(),
        extra: "[dnstap]\nlisten = [\"run/dnstap.sock\"]\nsocket_mode = \"0666\"\n".into(),
    };
    crate::common::Server::start_in(primary_dir(setup, secondaries, ""))
}

/// The primary's directory: `setup`, the key and `secondaries`, and a fixed port (the
/// secondaries must find it again after a restart).
pub fn primary_dir(
    setup: crate::common::Setup,
    secondaries: &[(&str, u16)],
    extra: &str,
) -> TempDir {
    let dir = setup.write();
    let tables = primary_config(dir.path(), secondaries);
    let config = dir.path().join("flipdns.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:{}\"]", free_port()),
    );
    std::fs::write(&config, format!("{text}\n{tables}\n{extra}\n")).unwrap();
    dir
}
