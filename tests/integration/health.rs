//! HTTPS health checks against a real TLS server (`openssl s_server`) with certificates
//! from a CA the test makes: SNI, verification on by default, `ca_file`, `tls_verify`.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::pki;
use crate::common::secondaries::free_port;
use crate::common::{Server, Setup};

/// The name the site's right certificate is for.
const SITE: &str = "app.example.test";

/// `openssl s_server` on loopback: the certificate for [`SITE`] to a client that asks for
/// that name (SNI), and one for `other.example.test` to any other client; both from the test's
/// own CA. Killed on drop.
struct TlsSite {
    port: u16,
    child: Child,
}

impl TlsSite {
    fn start(dir: &Path) -> TlsSite {
        pki::ca(dir, "ca");
        for name in ["app", "other"] {
            let extensions =
                format!("subjectAltName=DNS:{name}.example.test\nextendedKeyUsage=serverAuth\n");
            pki::issue(dir, "ca", name, &extensions);
        }
        TlsSite::serve(
            dir,
            &[
                "-cert",
                "other.pem",
                "-key",
                "other.key",
                "-servername",
                SITE,
                "-cert2",
                "app.pem",
                "-key2",
                "app.key",
            ],
        )
    }

    /// `openssl s_server` in `dir` with the certificate options `certificates`.
    fn serve(dir: &Path, certificates: &[&str]) -> TlsSite {
        let port = free_port();
        let child = Command::new("openssl")
            .current_dir(dir)
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args(certificates)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts (package openssl)");
        let site = TlsSite { port, child };
        let listening = common::until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(listening.is_some(), "s_server did not listen");
        site
    }
}

impl Drop for TlsSite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service whose green is the site, checked over HTTPS with `health` lines added.
fn service(name: &str, port: u16, health: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nblue = [\"192.0.2.10\"]\ngreen = [\"127.0.0.1\"]\nlive = \"blue\"\nttl = 4\ncutover_ttl = 1\nsettle = \"3s\"\n[service.health]\nkind = \"https\"\nport = {port}\npath = \"/healthz\"\ntimeout = \"3s\"\ninterval = \"1h\"\n{health}\n"
    )
}

fn flip_refusal(server: &Server, service: &str) -> String {
    let out = server.ctl(&["flip", service, "--to", "green", "--now"]);
    assert!(!out.status.success(), "{service} flipped");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn https_checks_send_sni_and_verify_the_certificate() {
    let certificates = tempfile::tempdir().unwrap();
    let site = TlsSite::start(certificates.path());
    let ca = certificates.path().join("ca.pem");
    let ca = ca.display();
    let port = site.port;
    let services = [
        // The right name, sent as SNI, gets the right certificate; the CA is ours.
        service(
            "app",
            port,
            &format!("host = \"{SITE}\"\nca_file = \"{ca}\""),
        ),
        // Verification is on by default: the system's CAs do not know ours.
        service("untrusted", port, &format!("host = \"{SITE}\"")),
        // Another name gets the other certificate, not valid for it.
        service(
            "misnamed",
            port,
            &format!("host = \"misnamed.example.test\"\nca_file = \"{ca}\""),
        ),
        // Without a host the certificate must be valid for the address.
        service("bare", port, &format!("ca_file = \"{ca}\"")),
        // tls_verify = false takes any certificate.
        service(
            "insecure",
            port,
            "host = \"misnamed.example.test\"\ntls_verify = false",
        ),
    ]
    .concat();
    // A proxy in the environment is not used: it would check whatever the name points at.
    let nowhere = std::ffi::OsStr::new("http://127.0.0.1:9");
    let server = Server::start_in_with_env(
        Setup {
            services,
            ..Setup::default()
        }
        .write(),
        &[
            ("HTTPS_PROXY", nowhere),
            ("HTTP_PROXY", nowhere),
            ("ALL_PROXY", nowhere),
        ],
    );

    let out = server.ctl_ok(&["flip", "app", "--to", "green", "--now"]);
    assert!(out.contains("health of green: 1/1 healthy"), "{out}");

    let err = flip_refusal(&server, "untrusted");
    assert!(
        err.contains(
            "unhealthy 127.0.0.1 (certificate from an unknown CA: set `ca_file` to the CA that issued it, and check that the server sends its intermediate certificates)"
        ) || err.contains("unhealthy 127.0.0.1 (no CA to verify against"),
        "{err}"
    );
    for service in ["misnamed", "bare"] {
        let err = flip_refusal(&server, service);
        assert!(
            err.contains("unhealthy 127.0.0.1 (certificate not valid for the name checked: set `host` to a name it is for (it is for other.example.test))"),
            "{service}: {err}"
        );
    }

    let out = server.ctl_ok(&["flip", "insecure", "--to", "green", "--now"]);
    assert!(out.contains("health of green: 1/1 healthy"), "{out}");
}

/// Issue 22: a self-signed certificate with CA:TRUE, as the server's own, was refused with
/// `certificate not accepted: Other(OtherError(CaUsedAsEndEntity))`. Every certificate
/// failure says what to change, in words.
#[test]
fn a_ca_certificate_used_as_the_servers_own_is_named_in_words() {
    let certificates = tempfile::tempdir().unwrap();
    let _site = TlsSite::start(certificates.path());
    let own = TlsSite::serve(certificates.path(), &["-cert", "ca.pem", "-key", "ca.key"]);
    let ca = certificates.path().join("ca.pem");
    let server = Server::start_with(&Setup {
        services: service(
            "app",
            own.port,
            &format!("host = \"ca.example.test\"\nca_file = \"{}\"", ca.display()),
        ),
        ..Setup::default()
    });
    let err = flip_refusal(&server, "app");
    assert!(
        err.contains("the server presents a CA certificate (CA:TRUE) as its own: give it a certificate issued by that CA, and set `ca_file` to the CA"),
        "{err}"
    );
    assert!(!err.contains("OtherError"), "{err}");
}

#[test]
fn a_ca_file_without_certificates_is_named_at_check() {
    let setup = Setup {
        services: service(
            "app",
            443,
            &format!("host = \"{SITE}\"\nca_file = \"ca.pem\""),
        ),
        ..Setup::default()
    };
    let (ok, text, dir) = crate::check::check(&setup, |dir| {
        std::fs::write(dir.join("ca.pem"), "no certificate here\n").unwrap();
    });
    assert!(!ok, "{text}");
    let line = 1 + setup
        .config()
        .lines()
        .position(|l| l == "[[service]]")
        .expect("the service's table");
    let expected = format!(
        "{dir}/flipdns.toml:{line}: service `app`: health ca_file {dir}/ca.pem holds no \"BEGIN CERTIFICATE\" block"
    );
    assert!(text.contains(&expected), "{text}\nexpected: {expected}");
}
