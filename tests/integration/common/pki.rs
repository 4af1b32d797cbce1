//! Certificates for the tests, made by the openssl CLI: a CA, and certificates it issues
//! (EC P-256, two days), as files in a directory.

use std::path::Path;
use std::process::Command;

use super::run_ok;

const KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

/// A CA in `dir`: `{name}.key` and `{name}.pem`.
pub fn ca(dir: &Path, name: &str) {
    let (key, pem, subject) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &KEY,
            &[
                "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject,
            ],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign"],
        ]
        .concat(),
    );
}

/// A certificate `{name}.pem` (key `{name}.key`) in `dir`, issued by the CA `ca` there,
/// with `extensions` (openssl extfile lines: subjectAltName, extendedKeyUsage).
pub fn issue(dir: &Path, ca: &str, name: &str, extensions: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let (ext, subject) = (format!("{name}.ext"), format!("/CN={name}"));
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(
        dir,
        &[
            &["req"][..],
            &KEY,
            &["-keyout", &key, "-out", &csr, "-subj", &subject],
        ]
        .concat(),
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ],
    );
}
