//! Trust for HTTPS health checks: which certificates an address may present.
//!
//! A check verifies the certificate as a browser would, against the system's CAs and any of
//! the operator's own (`ca_file`), for the configured `host` (sent as SNI) or, without one,
//! for the address itself. Building this reads files, so it runs off the runtime, once per
//! check of a color: `ca_file` is read each time (a renewed CA needs no reload), the
//! system's CAs once an hour.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::config::HealthTls;

/// The TLS set-up of an HTTPS check; `Err` says why no check can be made (it becomes every
/// address's detail).
pub fn client_config(tls: &HealthTls) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous();
    let verifier: Arc<dyn ServerCertVerifier> = match tls {
        HealthTls::Verify { ca_file } => {
            let extra = match ca_file {
                Some(file) => crate::pem::read_ca_file(file)?,
                None => Vec::new(),
            };
            let mut roots = system_cas();
            roots.add_parsable_certificates(extra);
            if roots.is_empty() {
                return Err(
                    "no CA to verify against: the system has none (install ca-certificates) and no `ca_file` is set"
                        .to_string(),
                );
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("TLS set-up: {e}"))?
        }
        HealthTls::Insecure => Arc::new(AnyCertificate(provider.signature_verification_algorithms)),
    };
    Ok(with_http1(
        builder
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// How long the system's CAs are kept before they are read again (a distribution update).
const SYSTEM_CAS_MAX_AGE: Duration = Duration::from_secs(3600);

/// The system's CAs as reqwest and curl find them (SSL_CERT_FILE, SSL_CERT_DIR, then the
/// distribution's bundle; unreadable ones are skipped, as they do). Reading and parsing them
/// is a few milliseconds of one core, so they are kept for an hour rather than read again for
/// every check of every color.
fn system_cas() -> rustls::RootCertStore {
    static CACHE: Mutex<Option<(Instant, rustls::RootCertStore)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    match &*cache {
        Some((read, roots)) if read.elapsed() < SYSTEM_CAS_MAX_AGE => roots.clone(),
        _ => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            *cache = Some((Instant::now(), roots.clone()));
            roots
        }
    }
}

/// The set-up of a plain HTTP client: it never makes a TLS connection, and building it reads
/// nothing (the HTTP client wants one all the same).
pub fn unused_client_config() -> ClientConfig {
    with_http1(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    )
}

/// ring: already in the tree for TSIG; aws-lc would add a large C build.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Health endpoints speak HTTP/1.1; offering only that keeps the handshake plain.
fn with_http1(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// `tls_verify = false`: any certificate for any name. The handshake's signatures are still
/// checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
