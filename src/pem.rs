//! PEM files an operator names in the config: the certificates of a private CA.
//!
//! Read where they are used (each health check reads its `ca_file` again, so a renewed CA
//! needs no reload) and once when the config is checked, so a bad file is found before a
//! flip needs it.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The CAs in a PEM file: at least one certificate, each one parsable as a trust anchor
/// (whether it may sign others is for the handshake to find out).
pub fn read_ca_file(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = file.display();
    let text = std::fs::read(file).map_err(|e| format!("cannot read ca_file {shown}: {e}"))?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file {shown} is not PEM: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "ca_file {shown} holds no \"BEGIN CERTIFICATE\" block"
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in &certificates {
        roots
            .add(certificate.clone())
            .map_err(|e| format!("ca_file {shown}: a certificate cannot be parsed: {e}"))?;
    }
    Ok(certificates)
}
