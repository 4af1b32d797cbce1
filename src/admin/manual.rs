//! The manual pages' sections clap does not write: EXIT STATUS, ENVIRONMENT and FILES, in
//! roff, for the page of each command (`flipdns`, `flipdns-serve`, `flipdns-ctl-flip`, ...).

use crate::config::{DEFAULT_CONFIG, SYSTEM_CONFIG};
use crate::protocol::ErrorKind;

/// The sections for the page named `page` (without its `.1`).
pub fn sections(page: &str) -> String {
    let mut out = String::new();
    out.push_str(".SH \"EXIT STATUS\"\n");
    out.push_str(&exit_status(page));
    out.push_str(".SH ENVIRONMENT\n");
    out.push_str(&environment(page));
    out.push_str(".SH FILES\n");
    out.push_str(&files());
    out.push_str(".SH \"SEE ALSO\"\nThe README of the flipdns repository: a cutover walked through, the production topology, every setting and limit.\n");
    out
}

/// One `.TP` item: `tag`, then `text`.
fn item(tag: &str, text: &str) -> String {
    format!(".TP\n{}\n{}\n", escape(tag), escape(text))
}

/// `text` safe as roff: a leading dot or quote would be a request, a backslash an escape.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    match text.chars().next() {
        Some('.' | '\'') => format!("\\&{text}"),
        _ => text,
    }
}

fn exit_status(page: &str) -> String {
    if page.starts_with("flipdns-ctl") {
        let mut out = item("0", "Done.");
        out.push_str(&item(
            "1 (client)",
            "The client itself failed: the connection was lost, or a reply could not be read.",
        ));
        out.push_str(&item("2", "Bad command-line arguments."));
        out.push_str(&item(
            "3 (no_server)",
            "No server to talk to: the admin socket is missing, refuses connections, or may not be opened; with --server, the API cannot be reached or its certificate is not trusted.",
        ));
        out.push_str(&item(
            "5",
            "Some secondaries do not serve our serial: flipped here, but they did not serve the flip within [fleet] wait, or after notify; the reply names them.",
        ));
        for kind in ErrorKind::ALL {
            out.push_str(&item(
                &format!("{} ({})", kind.exit_code(), kind.as_str()),
                kind.meaning(),
            ));
        }
        out.push_str(&item(
            "130",
            "Ctrl-C while following a cutover: detached; the cutover goes on in the server.",
        ));
        out.push_str(".PP\nWith \\-\\-json the error's kind (in parentheses above) is printed on stdout as {\"error\": {\"kind\": ..., \"message\": ...}}.\n");
        return out;
    }
    let mut out = item("0", "Done (for serve: stopped by SIGTERM or SIGINT).");
    out.push_str(&item(
        "1",
        match page {
            "flipdns-serve" => "The server could not start (a bad config or zone file, a socket that cannot be bound, an unreadable state file), or one of its loops failed; the message says which and what to do.",
            "flipdns-check" => "The config or a zone file has problems; each is printed as file:line: problem.",
            _ => "The command failed; the message says why and what to do.",
        },
    ));
    out.push_str(&item("2", "Bad command-line arguments."));
    out
}

fn environment(page: &str) -> String {
    let mut out = item(
        "FLIPDNS_CONFIG",
        &format!(
            "The config file, when --config is not given (default: {DEFAULT_CONFIG} if it exists, else {SYSTEM_CONFIG})."
        ),
    );
    if page.starts_with("flipdns-ctl") || page == "flipdns" {
        out.push_str(&item(
            "FLIPDNS_SOCKET",
            "The admin socket, when --socket is not given (default: admin_socket of the config).",
        ));
    }
    if page.starts_with("flipdns-ctl") {
        for (name, text) in [
            (
                "FLIPDNS_SERVER",
                "The HTTPS API to talk to instead of the socket: https://HOST:PORT (--server).",
            ),
            (
                "FLIPDNS_TOKEN_FILE",
                "With --server: the file whose first line is the API token (--token-file).",
            ),
            (
                "FLIPDNS_CA_FILE",
                "With --server: a private CA (PEM) to verify the server against, besides the system's (--ca-file).",
            ),
            (
                "FLIPDNS_CLIENT_CERT, FLIPDNS_CLIENT_KEY",
                "With --server: a client certificate and its key (PEM) for a server that requires one (--client-cert, --client-key).",
            ),
        ] {
            out.push_str(&item(name, text));
        }
    }
    if !page.starts_with("flipdns-ctl") {
        out.push_str(&item(
            "FLIPDNS_LOG",
            "The log filter: info (default), debug, or per module such as flipdns::fleet=debug,info. `flipdns ctl log-level` changes it while the server runs.",
        ));
        out.push_str(&item(
            "FLIPDNS_LOG_FORMAT",
            "text (default) or json: one JSON object per line for a log shipper.",
        ));
        out.push_str(&item(
            "NOTIFY_SOCKET",
            "Set by systemd for a Type=notify unit: the server says READY=1, STOPPING=1 and RELOADING=1 there.",
        ));
        out.push_str(&item(
            "JOURNAL_STREAM",
            "Set by systemd when stderr goes to the journal: text log lines then carry no timestamp.",
        ));
    }
    out
}

fn files() -> String {
    let mut out = item(
        SYSTEM_CONFIG,
        "The config, as contrib/install.sh installs it; relative paths in it are relative to its directory.",
    );
    out.push_str(&item(
        DEFAULT_CONFIG,
        "The shipped example, used when run from a checkout of the repository.",
    ));
    out.push_str(&item(
        "admin_socket (run/flipdns.sock)",
        "The admin Unix socket `flipdns ctl` talks to; mode admin_socket_mode, peers checked against admin_allowed_uids and admin_allowed_gids.",
    ));
    out.push_str(&item(
        "state_file (run/state.json), STATE.journal",
        "The durable state: live colors, flips, phases and deadlines, serials. Every change is in the journal and fsynced before it is acknowledged.",
    ));
    out.push_str(&item(
        "audit_file (audit.jsonl beside the state file), FILE.1",
        "The audit trail, one JSON line per event of each change; rotated past audit_file_size.",
    ));
    out
}
