//! The HTTPS control API against the real binary, with real TLS (a CA, server and client
//! certificates made by the openssl CLI), driven by `curl` as a pipeline would and by
//! `flipdns ctl --server`; tokens made by `flipdns token new`. Every refusal leaves the state
//! file byte-identical; hostile HTTP never stops DNS or the admin socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::pki;
use crate::common::*;

/// A private CA with a server certificate for 127.0.0.1, a client certificate it issued,
/// and a client certificate from another CA.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn make(dir: &Path) -> Pki {
        for ca in ["ca", "other-ca"] {
            pki::ca(dir, ca);
        }
        let server = "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
        let client = "extendedKeyUsage=clientAuth\n";
        pki::issue(dir, "ca", "server", server);
        pki::issue(dir, "ca", "client", client);
        pki::issue(dir, "other-ca", "stranger", client);
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A token made by `flipdns token new`: the secret (in a file) and the config block.
struct Token {
    file: PathBuf,
    secret: String,
    block: String,
}

fn token(dir: &Path, name: &str, scopes: &[&str]) -> Token {
    let mut command = Command::new(BIN);
    command.args(["token", "new", name]);
    for scope in scopes {
        command.args(["--scope", scope]);
    }
    let out = run_ok(&mut command);
    let text = String::from_utf8(out.stdout).unwrap();
    let (secret, block) = text.split_once('\n').unwrap();
    assert!(secret.starts_with("flipdns_") && !block.contains(secret));
    assert!(block.contains("[[api.token]]") && block.contains(&format!("name = {name:?}")));
    let file = dir.join(format!("{name}.token"));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    Token {
        file,
        secret: secret.into(),
        block: block.into(),
    }
}

/// The API's tokens: who may do what.
struct Tokens {
    deploy: Token,
    approver: Token,
    reader: Token,
    web: Token,
    ops: Token,
    lead: Token,
}

impl Tokens {
    fn make(dir: &Path) -> Tokens {
        Tokens {
            deploy: token(dir, "deploy", &["flip:app", "read"]),
            approver: token(dir, "approver", &["approve:*", "read"]),
            reader: token(dir, "reader", &["read"]),
            web: token(dir, "web-deploy", &["flip:web", "read"]),
            ops: token(
                dir,
                "ops",
                &["flip:*", "approve:*", "deploy:*", "admin", "read"],
            ),
            lead: token(dir, "lead", &["flip:app", "approve:app", "read"]),
        }
    }

    fn config(&self) -> String {
        [
            &self.deploy,
            &self.approver,
            &self.reader,
            &self.web,
            &self.ops,
            &self.lead,
        ]
        .iter()
        .map(|t| t.block.as_str())
        .collect()
    }
}

/// A server with the API on, its PKI and tokens.
struct Api {
    server: Server,
    pki: Pki,
    tokens: Tokens,
    url: String,
}

/// A server with the API on TLS: `api_extra` adds `[api]` lines (given the PKI), `services`
/// are the `[[service]]` tables besides `web` (ttl 4). Certificates and tokens live in the
/// server's directory.
fn start(api_extra: impl Fn(&Pki) -> String, services: &str) -> Api {
    let web = short_service("").replace("\"app\"", "\"web\"");
    let setup = Setup {
        services: format!("{services}\n{web}"),
        server: "metrics_listen = \"127.0.0.1:0\"\n".into(),
        ..Setup::default()
    };
    let dir = setup.write();
    let files = dir.path().join("pki");
    std::fs::create_dir(&files).unwrap();
    let pki = Pki::make(&files);
    let tokens = Tokens::make(&files);
    let config = dir.path().join("flipdns.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[api]\nlisten = [\"127.0.0.1:0\"]\ncert_file = \"pki/server.pem\"\nkey_file = \"pki/server.key\"\n{}\n{}",
        api_extra(&pki),
        tokens.config()
    ));
    std::fs::write(&config, text).unwrap();
    let server = Server::start_in(dir);
    let url = server
        .log()
        .split("api on ")
        .nth(1)
        .and_then(|r| r.split("/v1/").next())
        .expect("the API's address in the log")
        .to_string();
    Api {
        server,
        pki,
        tokens,
        url,
    }
}

/// What curl got: status, headers (lowercase names), body.
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// A problem's kind and exit code, checking its shape.
    fn problem(&self) -> (String, u64) {
        assert!(
            self.headers
                .contains("content-type: application/problem+json"),
            "{}\n{}",
            self.headers,
            self.body
        );
        let p = self.json();
        assert_eq!(p["status"], self.status, "{}", self.body);
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:flipdns:problem:")
        );
        assert!(!p["detail"].as_str().unwrap().is_empty());
        (
            p["kind"].as_str().unwrap().into(),
            p["exit_code"].as_u64().unwrap(),
        )
    }
}

impl Api {
    /// `curl` with our CA: `method path`, a bearer token when given, and `extra` arguments.
    fn curl(&self, method: &str, path: &str, token: Option<&Token>, extra: &[&str]) -> Reply {
        let mut command = Command::new("curl");
        command
            .args(["-s", "-S", "-D", "-", "--max-time", "60", "--cacert"])
            .arg(self.pki.path("ca.pem"))
            .args(["-X", method])
            .arg(format!("{}{path}", self.url));
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {}", token.secret)]);
        }
        command.args(extra);
        let out = run_ok(&mut command);
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        let (headers, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let status = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"));
        Reply {
            status,
            headers: headers.to_ascii_lowercase(),
            body: body.into(),
        }
    }

    fn post(&self, path: &str, token: &Token, body: &str) -> Reply {
        self.curl(
            "POST",
            path,
            Some(token),
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ],
        )
    }

    /// `flipdns ctl --server` with `token`.
    fn ctl(&self, token: &Token, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["ctl", "--server", &self.url, "--token-file"])
            .arg(&token.file)
            .args(["--ca-file", &self.pki.path("ca.pem")])
            .args(args)
            .output()
            .expect("run flipdns ctl --server")
    }

    fn address(&self) -> String {
        self.url.trim_start_matches("https://").to_string()
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The same command over the socket and over the API: the same stdout and exit code.
fn same_both_ways(api: &Api, token: &Token, args: &[&str]) -> String {
    let local = api.server.ctl(args);
    let remote = api.ctl(token, args);
    assert_eq!(
        (text(&remote.stdout), remote.status.code()),
        (text(&local.stdout), local.status.code()),
        "ctl {args:?} over the API and the socket; stderr: {} / {}",
        text(&remote.stderr),
        text(&local.stderr)
    );
    text(&local.stdout)
}

#[test]
fn every_resource_answers_over_https_as_over_the_socket() {
    let api = start(|_| String::new(), SERVICES);
    let ops = &api.tokens.ops;
    // Reads, as JSON and as text, and refusals with their exit codes.
    for args in [
        &["--json", "status"][..],
        &["status"],
        &["--json", "status", "app"],
        &["status", "web"],
        &["--json", "version"],
        &["--json", "stragglers", "app", "--all"],
        &["stragglers", "app", "--class", "straggler", "--limit", "3"],
        &["status", "nope"],
        &["--json", "flip", "nope", "--to", "green"],
        &["--json", "notify"],
        &["--json", "approve", "app"],
        &["--json", "cancel", "app"],
    ] {
        same_both_ways(&api, ops, args);
    }
    // The resources themselves, as curl sees them: the admin protocol's replies.
    let services = api.curl("GET", "/v1/services", Some(ops), &[]);
    assert_eq!(services.status, 200);
    assert!(services.headers.contains("content-type: application/json"));
    let socket: Value = serde_json::from_str(&api.server.ctl_ok(&["--json", "status"])).unwrap();
    assert_eq!(services.json()["status"], socket);
    let one = api.curl("GET", "/v1/services/app", Some(ops), &[]);
    assert_eq!(one.json()["status"]["services"][0]["name"], "app");
    let missing = api.curl("GET", "/v1/services/nope", Some(ops), &[]);
    assert_eq!(
        (missing.status, missing.problem()),
        (404, ("unknown_service".into(), 11))
    );

    // Changes: prepare and cancel over curl, flip --now and set-addresses over ctl.
    let prepared = api.post("/v1/services/app/prepare", ops, "");
    assert_eq!(prepared.status, 200, "{}", prepared.body);
    assert_eq!(prepared.json()["cutover"]["outcome"], "prepared");
    assert_eq!(service_status(&api.server, "app")["ttl"], 5);
    let cancelled = api.post("/v1/services/app/cancel", ops, "{}");
    assert_eq!(cancelled.json()["cutover"]["outcome"], "cancelled");
    let flipped = api.ctl(ops, &["flip", "app", "--to", "green", "--now", "--force"]);
    assert!(flipped.status.success(), "{}", text(&flipped.stderr));
    assert!(
        text(&flipped.stdout).contains("app: blue -> green"),
        "{}",
        text(&flipped.stdout)
    );
    assert!(
        api.server
            .dig(&["app.svc.example.com", "A"])
            .data("A")
            .contains(&"198.51.100.10".to_string())
    );
    let set = api.ctl(ops, &["set-addresses", "app", "blue", "192.0.2.77"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert!(
        api.server
            .dig(&["blue.app.svc.example.com", "A"])
            .data("A")
            .contains(&"192.0.2.77".to_string())
    );
    // A scheduled flip without a stream: 202 and where to follow it.
    let scheduled = api.post("/v1/services/web/flip", ops, r#"{"to": "green"}"#);
    assert_eq!(scheduled.status, 202, "{}", scheduled.body);
    assert!(
        scheduled
            .headers
            .contains("location: /v1/services/web/events")
    );
    assert_eq!(scheduled.json()["cutover"]["outcome"], "scheduled");
    // Reload, log level, history; the history names the token and the client's address.
    let reloaded = api.post("/v1/reload", ops, "");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    let level = api.post("/v1/log-level", ops, r#"{"filter": "info"}"#);
    assert_eq!(level.json()["log_level"], "info");
    let history = api.curl("GET", "/v1/history?service=app&limit=100", Some(ops), &[]);
    let entries = history.json()["history"].as_array().unwrap().clone();
    assert!(
        entries.iter().any(|e| e["principal"] == "token ops"
            && e["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1:"))
            && e["request"]["cmd"] == "prepare"),
        "{entries:#?}"
    );
    assert!(
        entries.iter().all(|e| e["event"] != "read"),
        "reads only when asked for"
    );
    let with_reads = api.curl("GET", "/v1/history?reads=true&limit=500", Some(ops), &[]);
    assert!(
        with_reads.json()["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "read" && e["request"]["cmd"] == "status"),
        "every request is audited, reads too"
    );
    let history_text = same_both_ways(&api, ops, &["history", "app"]);
    assert!(
        history_text.contains("token ops from 127.0.0.1:"),
        "{history_text}"
    );

    // The document, served and shipped, the same.
    let document = api.curl("GET", "/v1/openapi.json", None, &[]);
    assert_eq!(document.status, 200);
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert_eq!(document.body, shipped);

    // The API's metrics.
    let metrics = scrape(&api.server, "/metrics");
    for needle in [
        "flipdns_api_requests_total{method=\"GET\",route=\"/v1/services\",status=\"200\"}",
        "flipdns_api_requests_total{method=\"POST\",route=\"/v1/services/{name}/flip\",status=\"202\"}",
        "flipdns_api_requests_total{method=\"GET\",route=\"/v1/services/{name}\",status=\"404\"}",
        "flipdns_api_auth_failures_total 0",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
}

#[test]
fn a_ttl_aware_cutover_is_followed_over_server_sent_events_to_the_end() {
    let api = start(|_| String::new(), &short_service(""));
    // A follower on the events resource, started before the flip: it sees the whole story.
    let follower = Command::new("curl")
        .args([
            "-s",
            "-N",
            "--max-time",
            "60",
            "--cacert",
            &api.pki.path("ca.pem"),
        ])
        .args([
            "-H",
            &format!("Authorization: Bearer {}", api.tokens.reader.secret),
        ])
        .arg(format!("{}/v1/services/app/events", api.url))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Before the flip, nothing is pending: the follower is told at once and the stream ends.
    let idle = follower.wait_with_output().unwrap();
    let idle = text(&idle.stdout);
    assert!(
        idle.contains("event: ok") && idle.contains("\"nothing_pending\""),
        "{idle}"
    );

    let started = Instant::now();
    let flip = api.ctl(&api.tokens.deploy, &["flip", "app", "--to", "green"]);
    let (out, err) = (text(&flip.stdout), text(&flip.stderr));
    assert!(flip.status.success(), "{err}");
    // ttl 4: the drain takes 4 s, and the progress says so as it goes.
    assert!(started.elapsed() >= Duration::from_secs(3), "{err}");
    assert!(err.contains("flip to green scheduled"), "{err}");
    assert!(err.contains("waiting for caches to drain"), "{err}");
    assert!(out.contains("app: blue -> green"), "{out}");
    assert!(
        api.server
            .dig(&["app.svc.example.com", "A"])
            .data("A")
            .contains(&"198.51.100.10".to_string())
    );

    // The same over curl: a rollback followed as events, while a second client follows it.
    // Let the settle end, so the rollback is a whole TTL-aware cutover.
    let steady = until(Duration::from_secs(10), || {
        service_status(&api.server, "app")["phase"]["name"] == "steady"
    });
    assert!(steady.is_some(), "the settle ends");
    let stream = api.curl(
        "POST",
        "/v1/services/app/flip",
        Some(&api.tokens.deploy),
        &[
            "-N",
            "-H",
            "Accept: text/event-stream",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"to": "blue", "force": true}"#,
        ],
    );
    assert_eq!(stream.status, 200);
    assert!(stream.headers.contains("content-type: text/event-stream"));
    let events: Vec<&str> = stream
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"progress"), "{}", stream.body);
    assert_eq!(events.last(), Some(&"ok"), "{}", stream.body);
    assert!(
        events.len() >= 4,
        "a progress event a second: {}",
        stream.body
    );
    assert!(
        stream.body.contains("\"step\":\"flipped\"") || stream.body.contains("\"flipped\""),
        "{}",
        stream.body
    );
    let last = stream
        .body
        .lines()
        .rfind(|l| l.starts_with("data: "))
        .unwrap();
    let reply: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert_eq!(reply["ok"]["cutover"]["outcome"], "flipped");
    assert_eq!(reply["ok"]["cutover"]["live"], "blue");
}

#[test]
fn authentication_and_scope_failures_change_nothing() {
    let api = start(
        |pki| format!("client_ca = \"{}\"\n", pki.path("ca.pem")),
        &short_service(""),
    );
    let t = &api.tokens;
    // Leaked: the arguments are put together in several shapes below.
    let path = |name: &str| -> &'static str { Box::leak(api.pki.path(name).into_boxed_str()) };
    let client = ["--cert", path("client.pem"), "--key", path("client.key")];
    let stranger = [
        "--cert",
        path("stranger.pem"),
        "--key",
        path("stranger.key"),
    ];
    let json = ["-H", "Content-Type: application/json"];
    let flip = r#"{"to": "green", "now": true, "force": true}"#;
    let before = std::fs::read(api.server.state_file()).unwrap();
    let wrong = Token {
        file: api.server.dir.path().join("wrong.token"),
        secret: "flipdns_notthetokenatall".into(),
        block: String::new(),
    };
    std::fs::write(&wrong.file, &wrong.secret).unwrap();
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        [&json[..], &["--data-binary", flip], extra].concat()
    };
    // What, with which token, curl's arguments, the status and kind expected.
    type Case<'a> = (&'a str, Option<&'a Token>, Vec<&'a str>, u16, &'a str);
    let cases: [Case; 6] = [
        ("no token", None, with(&client), 401, "unauthenticated"),
        (
            "a wrong token",
            Some(&wrong),
            with(&client),
            401,
            "unauthenticated",
        ),
        (
            "a read-only token",
            Some(&t.reader),
            with(&client),
            403,
            "forbidden",
        ),
        (
            "a token for another service",
            Some(&t.web),
            with(&client),
            403,
            "forbidden",
        ),
        (
            "a certificate from another CA",
            Some(&t.deploy),
            with(&stranger),
            401,
            "unauthenticated",
        ),
        (
            "approving what nobody asked",
            Some(&t.approver),
            client.to_vec(),
            409,
            "approval_refused",
        ),
    ];
    for (what, token, extra, status, kind) in cases {
        let path = if kind == "approval_refused" {
            "/v1/services/app/approve"
        } else {
            "/v1/services/app/flip"
        };
        let reply = api.curl("POST", path, token, &extra);
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert_eq!(reply.problem().0, kind, "{what}");
        if status == 401 {
            assert!(reply.headers.contains("www-authenticate: bearer"), "{what}");
        }
        assert_eq!(
            std::fs::read(api.server.state_file()).unwrap(),
            before,
            "{what} changed the state"
        );
    }
    let scoped = api.curl(
        "POST",
        "/v1/services/app/flip",
        Some(&t.reader),
        &with(&client),
    );
    let detail = scoped.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("flip:app") && detail.contains("\"reader\""),
        "{detail}"
    );
    let foreign = api.curl("GET", "/v1/services", Some(&t.deploy), &stranger);
    assert!(
        foreign.json()["detail"]
            .as_str()
            .unwrap()
            .contains("client_ca"),
        "{}",
        foreign.body
    );

    // Bad input, each one problem and no change.
    let bad: [(&str, &str, Vec<&str>, u16); 6] = [
        (
            "POST",
            "/v1/services/app/flip",
            [&json[..], &["--data-binary", "{\"to\": "]].concat(),
            400,
        ),
        (
            "POST",
            "/v1/services/app/flip",
            [
                &json[..],
                &["--data-binary", "{\"to\":\"green\",\"quick\":true}"],
            ]
            .concat(),
            400,
        ),
        (
            "POST",
            "/v1/services/app/flip",
            vec!["-H", "Content-Type: text/plain", "--data-binary", flip],
            415,
        ),
        ("GET", "/v1/services/app/flipper", vec![], 404),
        ("DELETE", "/v1/services/app", vec![], 405),
        ("GET", "/v1/services/app/stragglers?class=late", vec![], 400),
    ];
    for (method, path, extra, status) in bad {
        let reply = api.curl(
            method,
            path,
            Some(&t.deploy),
            &[&client[..], &extra].concat(),
        );
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert_eq!(reply.problem().0, "invalid", "{method} {path}");
        assert_eq!(std::fs::read(api.server.state_file()).unwrap(), before);
    }

    // ctl --server says the same with the same exit codes (here without a client
    // certificate, which this server asks for but does not require).
    let out = api.ctl(&wrong, &["flip", "app", "--to", "green", "--now"]);
    assert_eq!(out.status.code(), Some(28), "{}", text(&out.stderr));
    let out = api.ctl(
        &t.reader,
        &["--json", "flip", "app", "--to", "green", "--now"],
    );
    assert_eq!(out.status.code(), Some(20));
    let refused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["error"]["kind"], "forbidden");
    assert_eq!(std::fs::read(api.server.state_file()).unwrap(), before);
    assert!(
        api.server
            .dig(&["app.svc.example.com", "A"])
            .data("A")
            .contains(&"192.0.2.10".to_string())
    );

    // The trail has each refusal, with the principal (or "anonymous") and the source.
    let history = api.server.ctl_ok(&["--json", "history", "--limit", "100"]);
    let entries: Value = serde_json::from_str(&history).unwrap();
    let refused: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "refused")
        .collect();
    assert!(
        refused.iter().any(|e| e["principal"] == "anonymous"),
        "{history}"
    );
    assert!(
        refused.iter().any(|e| e["principal"] == "token reader"),
        "{history}"
    );
    assert!(refused.iter().all(|e| {
        e["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:"))
    }));

    // And the right token with a certificate the client CA issued is carried out.
    let done = api.curl(
        "POST",
        "/v1/services/app/flip",
        Some(&t.deploy),
        &with(&client),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["cutover"]["outcome"], "flipped");
}

#[test]
fn a_required_client_certificate_is_required() {
    let api = start(
        |pki| {
            format!(
                "client_ca = \"{}\"\nrequire_client_certificate = true\n",
                pki.path("ca.pem")
            )
        },
        SERVICES,
    );
    let t = &api.tokens;
    let none = api.curl("GET", "/v1/services", Some(&t.reader), &[]);
    assert_eq!(
        (none.status, none.problem().0.as_str()),
        (401, "unauthenticated")
    );
    let client = [
        "--cert",
        &api.pki.path("client.pem"),
        "--key",
        &api.pki.path("client.key"),
    ];
    assert_eq!(
        api.curl("GET", "/v1/services", Some(&t.reader), &client)
            .status,
        200
    );
    // ctl --server with the certificate.
    let out = Command::new(BIN)
        .args(["ctl", "--server", &api.url, "--token-file"])
        .arg(&t.reader.file)
        .args(["--ca-file", &api.pki.path("ca.pem")])
        .args(["--client-cert", &api.pki.path("client.pem")])
        .args(["--client-key", &api.pki.path("client.key")])
        .args(["status", "app"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let without = api.ctl(&t.reader, &["status", "app"]);
    assert_eq!(without.status.code(), Some(28), "{}", text(&without.stderr));
}

#[test]
fn brute_force_from_one_source_is_throttled_and_counted() {
    let api = start(|_| "auth_failures_per_minute = 5\n".into(), SERVICES);
    let wrong = ["-H", "Authorization: Bearer flipdns_guess"];
    for attempt in 1..=5 {
        let reply = api.curl("GET", "/v1/services", None, &wrong);
        assert_eq!(reply.status, 401, "attempt {attempt}");
    }
    let throttled = api.curl("GET", "/v1/services", None, &wrong);
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.problem(), ("throttled".into(), 29));
    let wait: u64 = throttled
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&wait));
    // Refused unread: even the right token waits out the window.
    let right = api.curl("GET", "/v1/services", Some(&api.tokens.reader), &[]);
    assert_eq!(right.status, 429);
    let out = api.ctl(&api.tokens.reader, &["status"]);
    assert_eq!(out.status.code(), Some(29), "{}", text(&out.stderr));
    // Counted; DNS and the socket never noticed.
    let metrics = scrape(&api.server, "/metrics");
    assert!(
        metrics.contains("flipdns_api_auth_failures_total 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flipdns_api_throttled_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("status=\"429\"} 3"), "{metrics}");
    assert!(
        api.server
            .dig(&["app.svc.example.com", "A"])
            .data("A")
            .contains(&"192.0.2.10".to_string())
    );
    api.server.ctl_ok(&["status"]);
}

#[test]
fn the_two_person_rule_holds_over_the_api_and_the_socket_across_kill_9() {
    let services = short_service("approval = \"two-person\"\n");
    let api = start(|_| String::new(), &services);
    let t = &api.tokens;
    let now = r#"{"to": "green", "now": true, "force": true}"#;

    // Over the socket, the principal is the Unix user: its own approval is refused.
    let asked = api
        .server
        .ctl(&["flip", "app", "--to", "green", "--now", "--force"]);
    assert!(asked.status.success(), "{}", text(&asked.stderr));
    assert!(
        text(&asked.stdout).contains("awaits approval"),
        "{}",
        text(&asked.stdout)
    );
    let own = api.server.ctl(&["approve", "app"]);
    assert_eq!(own.status.code(), Some(27), "{}", text(&own.stderr));
    api.server.ctl_ok(&["cancel", "app"]);
    assert!(service_status(&api.server, "app")["awaiting"].is_null());

    // Over the API: the request waits (202), shown in status and /metrics.
    let asked = api.post("/v1/services/app/flip", &t.lead, now);
    assert_eq!(asked.status, 202, "{}", asked.body);
    assert_eq!(asked.json()["cutover"]["outcome"], "awaiting_approval");
    assert!(asked.headers.contains("location: /v1/services/app/events"));
    assert!(
        api.server
            .ctl_ok(&["status", "app"])
            .contains("AWAITING APPROVAL: flip to green now asked by token lead")
    );
    assert!(
        scrape(&api.server, "/metrics").contains("flipdns_awaiting_approval{service=\"app\"} 1")
    );
    assert!(
        api.server
            .dig(&["app.svc.example.com", "A"])
            .data("A")
            .contains(&"192.0.2.10".to_string())
    );
    let own = api.post("/v1/services/app/approve", &t.lead, "");
    assert_eq!(
        (own.status, own.problem().0.as_str()),
        (409, "approval_refused")
    );
    assert!(
        own.json()["detail"].as_str().unwrap().contains("lead"),
        "{}",
        own.body
    );

    // kill -9: the pending approval is on disk, and comes back with the server.
    let dir = api.server.kill9();
    let server = Server::start_in(dir);
    let api = Api {
        url: server
            .log()
            .split("api on ")
            .nth(1)
            .and_then(|r| r.split("/v1/").next())
            .unwrap()
            .to_string(),
        server,
        pki: Pki { dir: api.pki.dir },
        tokens: api.tokens,
    };
    let t = &api.tokens;
    let status = service_status(&api.server, "app");
    assert_eq!(status["awaiting"]["by"], "token lead", "{status:#}");
    let approved = api.ctl(&t.approver, &["approve", "app"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    assert!(
        text(&approved.stdout).contains("app: blue -> green"),
        "{}",
        text(&approved.stdout)
    );
    assert!(
        api.server
            .dig(&["app.svc.example.com", "A"])
            .data("A")
            .contains(&"198.51.100.10".to_string())
    );

    // Settling: a rollback is the escape hatch, and asks nobody.
    let back = api.post("/v1/services/app/rollback", &t.lead, "");
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.json()["cutover"]["outcome"], "flipped");
    assert!(
        api.server
            .dig(&["app.svc.example.com", "A"])
            .data("A")
            .contains(&"192.0.2.10".to_string())
    );

    // The trail links the request, its approval and the flip by one change id.
    let history = api
        .server
        .ctl_ok(&["--json", "history", "app", "--limit", "100"]);
    let entries: Value = serde_json::from_str(&history).unwrap();
    let entries = entries.as_array().unwrap();
    let waited = entries
        .iter()
        .rfind(|e| e["outcome"] == "awaiting_approval" && e["principal"] == "token lead")
        .expect("the request");
    let approval = entries
        .iter()
        .rfind(|e| e["request"]["cmd"] == "approve" && e["ok"] == true)
        .expect("the approval");
    assert_eq!(approval["principal"], "token approver");
    assert_eq!(approval["change"], waited["change"], "{history}");
}

/// A TLS connection to the API made by hand, for what curl will not send.
fn raw_tls(api: &Api) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_file_iter(api.pki.path("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(api.address()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rustls::StreamOwned::new(connection, socket)
}

/// Sends `bytes` on a new TLS connection and reads until the server closes it.
fn exchange(api: &Api, bytes: &[u8]) -> String {
    let mut stream = raw_tls(api);
    // A server that refuses part way may close before all of it is written.
    let _ = stream.write_all(bytes).and_then(|()| stream.flush());
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn hostile_http_is_bounded_and_dns_answers_throughout() {
    let api = start(
        |_| {
            "connections = 64\nconnections_per_source = 16\nhead_timeout = \"1s\"\nbody_size = 2048\nrequest_timeout = \"2s\"\n"
                .into()
        },
        SERVICES,
    );
    let bearer = format!("Authorization: Bearer {}", api.tokens.ops.secret);
    let dns_answers_green = || {
        api.server
            .dig(&["app.svc.example.com", "A", "+tries=1", "+time=2"])
            .data("A")
            .contains(&"198.51.100.10".to_string())
    };

    // An oversize body, an oversize head: refused, bounded.
    let big = format!("{{\"filter\": \"{}\"}}", "x".repeat(10_000));
    let reply = api.post("/v1/log-level", &api.tokens.ops, &big);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.problem().0, "invalid");
    // A head over head_size (16 KiB): 431, or, when the rest of it is still unread as the
    // server closes, a reset; never a wait.
    let started = Instant::now();
    let huge = format!(
        "GET /v1/version HTTP/1.1\r\nHost: a\r\nX-Padding: {}\r\n\r\n",
        "y".repeat(17_000)
    );
    let reply = exchange(&api, huge.as_bytes());
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // HTTP/1.0, and two requests pipelined in one write: answered in order.
    let old = exchange(
        &api,
        format!("GET /v1/version HTTP/1.0\r\n{bearer}\r\n\r\n").as_bytes(),
    );
    assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    let two = format!(
        "GET /v1/version HTTP/1.1\r\nHost: a\r\n{bearer}\r\n\r\nGET /v1/services/nope HTTP/1.1\r\nHost: a\r\n{bearer}\r\nConnection: close\r\n\r\n"
    );
    let both = exchange(&api, two.as_bytes());
    let first = both.find("HTTP/1.1 200").expect("the first answer");
    let second = both.find("HTTP/1.1 404").expect("the second answer");
    assert!(first < second, "{both}");

    // Invalid UTF-8 in the path and in the body.
    let path = exchange(
        &api,
        format!(
            "GET /v1/services/%FF%FE HTTP/1.1\r\nHost: a\r\n{bearer}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(path.starts_with("HTTP/1.1 400"), "{path}");
    let mut body = format!("POST /v1/log-level HTTP/1.1\r\nHost: a\r\n{bearer}\r\nContent-Type: application/json\r\nContent-Length: 14\r\nConnection: close\r\n\r\n").into_bytes();
    body.extend_from_slice(b"{\"filter\":\"\xff\xfe\"}");
    let reply = exchange(&api, &body);
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.contains("problem+json"),
        "{reply}"
    );

    // Slowloris: a head that never ends is cut off at head_timeout, on TLS and before it.
    let started = Instant::now();
    let mut slow = raw_tls(&api);
    slow.write_all(b"GET /v1/version HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let mut silent = TcpStream::connect(api.address()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = silent.read_to_end(&mut sink);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no handshake: closed after {:?}",
        started.elapsed()
    );

    // A thousand connections from one address: its 16 held (connections_per_source), the
    // rest closed at once. Meanwhile a flip from another address is served, DNS answers and
    // the admin socket too; and the API serves the first address again once they are gone.
    let many: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(api.address()).ok())
        .collect();
    assert!(many.len() >= 900, "{} connections", many.len());
    let elsewhere = api.curl(
        "POST",
        "/v1/services/app/flip",
        Some(&api.tokens.ops),
        &[
            "--interface",
            "127.0.0.2",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"to": "green", "now": true, "force": true}"#,
        ],
    );
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    assert!(
        dns_answers_green(),
        "DNS answers while 1,000 connections are open"
    );
    api.server.ctl_ok(&["status"]);
    drop(many);
    let back = until(Duration::from_secs(10), || {
        api.curl("GET", "/v1/version", Some(&api.tokens.reader), &[])
            .status
            == 200
    });
    assert!(back.is_some(), "the API serves again");
}

#[test]
fn the_openapi_document_validates_and_lists_every_route() {
    let document = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tools/bin");
    let path = format!("{}:{tools}", std::env::var("PATH").unwrap_or_default());
    let out = Command::new("openapi-spec-validator")
        .env("PATH", path)
        .arg(document)
        .output()
        .expect("openapi-spec-validator (./tests/run installs it from PyPI)");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(document).unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let mut routed: Vec<(String, String)> = flipdns::protocol::routes::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed, "docs/openapi.json and the router");
    // Every error kind the API can answer is in the document's enum.
    let kinds = doc["components"]["schemas"]["Problem"]["properties"]["kind"]["enum"].to_string();
    for kind in flipdns::protocol::ErrorKind::ALL {
        let name = serde_json::to_string(&kind).unwrap();
        assert!(kinds.contains(&name), "{name} in the document");
    }
}

/// The watch page on the API listener: its files without a token (they hold no data), its
/// data behind `read`; in a real browser, without a token it asks for one.
#[test]
fn the_watch_page_on_the_api_listener_asks_for_a_token() {
    let api = start(|_| String::new(), SERVICES);
    let page = api.curl("GET", "/", None, &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.headers
            .contains("content-security-policy: default-src 'self'"),
        "{}",
        page.headers
    );
    assert!(page.body.contains("id=\"token-form\""));
    let data = api.curl("GET", "/v1/services", None, &[]);
    assert_eq!(data.status, 401);
    let dom = chromium(&["--dump-dom", &format!("{}/", api.url)]);
    assert!(
        dom.contains("<form id=\"token-form\">"),
        "the form is shown:\n{dom}"
    );
    assert!(dom.contains("a token is needed"), "{dom}");
}

/// The certificate and key are read again on reload: the next connection gets the new one.
#[test]
fn a_reload_serves_a_new_certificate_to_the_next_connection() {
    let api = start(|_| String::new(), SERVICES);
    assert_eq!(
        api.curl("GET", "/v1/version", Some(&api.tokens.reader), &[])
            .status,
        200
    );
    // A new CA, and a certificate from it, in place of the old files.
    let fresh = tempfile::tempdir().unwrap();
    let renewed = Pki::make(fresh.path());
    for file in ["server.pem", "server.key"] {
        std::fs::copy(fresh.path().join(file), api.pki.dir.join(file)).unwrap();
    }
    api.server.ctl_ok(&["reload"]);
    let old = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--cacert", &api.pki.path("ca.pem")])
        .arg(format!("{}/v1/openapi.json", api.url))
        .status()
        .unwrap();
    assert_eq!(
        old.code(),
        Some(60),
        "the old CA no longer verifies the server"
    );
    let new = Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "--cacert",
            &renewed.path("ca.pem"),
        ])
        .arg(format!("{}/v1/openapi.json", api.url))
        .status()
        .unwrap();
    assert!(new.success(), "the new certificate is served");
}
