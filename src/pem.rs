//! PEM files an operator names in the config: certificates, and those of a private CA.
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
    let certificates = read_certificates(file, "ca_file")?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in &certificates {
        roots
            .add(certificate.clone())
            .map_err(|e| format!("ca_file {shown}: a certificate cannot be parsed: {e}"))?;
    }
    Ok(certificates)
}

/// The certificates in the PEM file `file`, which the config names `key`: at least one.
pub fn read_certificates(file: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = file.display();
    let text = std::fs::read(file).map_err(|e| format!("cannot read {key} {shown}: {e}"))?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {shown} is not PEM: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "{key} {shown} holds no \"BEGIN CERTIFICATE\" block"
        ));
    }
    Ok(certificates)
}
