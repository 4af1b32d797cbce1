//! What a command prints: replies on stdout, complaints on stderr, neither allowed to panic.

use std::io::Write;

/// Writes `text` to stdout. A reader that went away (`| head`) or a full disk is not a
/// reason to panic: the error comes back for the exit code.
pub fn say(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// `flipdns: MESSAGE` on stderr, if stderr can take it.
pub fn complain(message: &str) {
    let _ = writeln!(std::io::stderr(), "flipdns: {message}");
}

/// `value` as pretty JSON and a newline, as `--json` prints it.
pub fn json_line<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("replies serialize") + "\n"
}
