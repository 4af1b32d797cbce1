//! The TLS set-up of an HTTPS listener: its certificate chain and key, and, for mutual TLS,
//! the CAs whose client certificates it accepts. Built when the config is loaded (so a bad
//! file is a config problem, and a reload's new certificate serves the next connection).
//!
//! A client certificate is checked against `client_ca` after the handshake, not during it:
//! the handshake proves the client holds the certificate's key, and a certificate from
//! another CA then gets an HTTP answer that says so (as nginx's `ssl_verify_client` does),
//! instead of a TLS alert that a pipeline's log shows as "handshake failure".

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

/// A listener's TLS: the rustls set-up, and the client CA check run after each handshake.
#[derive(Debug)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
    /// The `client_ca` verifier; `None` when client certificates are not asked for.
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

/// What a connection's client certificate proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertificate {
    /// None was presented (or none was asked for).
    None,
    /// One `client_ca` issued, whose key the client holds.
    Verified,
    /// One `client_ca` did not issue (or that is expired, or not for client use): why.
    Refused(String),
}

impl Tls {
    /// What the client certificates of a finished handshake prove.
    pub fn check(&self, certificates: Option<&[CertificateDer<'_>]>) -> ClientCertificate {
        let (Some(verifier), Some([leaf, intermediates @ ..])) = (&self.client_ca, certificates)
        else {
            return ClientCertificate::None;
        };
        match verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            Ok(_) => ClientCertificate::Verified,
            Err(e) => ClientCertificate::Refused(format!("the client certificate: {e}")),
        }
    }
}

/// The server side of TLS: `cert_file` (the chain, leaf first) and `key_file` (PEM); with
/// `client_ca`, client certificates are asked for and checked against it.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<Tls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let shown = cert_file.display();
    let chain = crate::pem::read_certificates(cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "key_file {}: no private key could be read ({e}); expected PEM (PKCS#8, PKCS#1 or SEC1)",
            key_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let (builder, client_ca) = match client_ca {
        None => (builder.with_no_client_auth(), None),
        Some(file) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in
                crate::pem::read_ca_file(file).map_err(|e| e.replace("ca_file", "client_ca"))?
            {
                roots
                    .add(certificate)
                    .map_err(|e| format!("client_ca {}: {e}", file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client_ca {}: {e}", file.display()))?;
            let during = Arc::new(ProofOfKey(verifier.clone()));
            (builder.with_client_cert_verifier(during), Some(verifier))
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("cert_file {shown} and key_file {}: {e}", key_file.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        client_ca,
    })
}

/// The handshake's side of the client CA check: it asks for a certificate (hinting the
/// CAs), takes any, and checks the client's signature with it, so the client is proven to
/// hold the key; whether `client_ca` issued it is [`Tls::check`]'s, after the handshake.
#[derive(Debug)]
struct ProofOfKey(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ProofOfKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
