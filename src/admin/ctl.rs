//! `flipdns ctl`: one request to a running server, its progress on stderr, its reply on
//! stdout (for a person, or JSON with `--json`), and an exit code per kind of error
//! (README, "Exit codes"). The arguments are the binary's; this is what it does with them.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use super::client::{Client, ClientError, Endpoint};
use super::format::{self, ProgressView};
use crate::process::output::{complain, json_line, say};
use crate::protocol::{Error, Reply, Request, Response};

/// Runs one `ctl` command: the reply on stdout (for a person, or JSON with `--json`),
/// progress on stderr, and an exit code per kind of error (README, "Exit codes").
pub fn run(endpoint: &Endpoint, json: bool, request: Request) -> ExitCode {
    let following = match &request {
        Request::Flip {
            service,
            wait: true,
            ..
        }
        | Request::Rollback {
            service,
            wait: true,
            ..
        } => Some(service.clone()),
        _ => None,
    };
    if let Some(service) = &following {
        detach_on_interrupt(service);
        if std::io::stderr().is_terminal() {
            let _ = writeln!(
                std::io::stderr(),
                "(Ctrl-C detaches: the cutover goes on in the server)"
            );
        }
    }
    let mut view = ProgressView::default();
    let result = Client::connect(endpoint)
        .and_then(|mut client| client.call_with_progress(&request, |p| view.show(p)));
    match result {
        Ok(response) => match print_reply(json, &response, &mut view) {
            // Done here, but not everywhere: scripts must not take it for a full success.
            Ok(()) if secondaries_behind(&response) => ExitCode::from(SECONDARIES_BEHIND),
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE, // stdout went away; the request was carried out
        },
        Err(error) => {
            let code = error.exit_code();
            match (json, &error) {
                (true, ClientError::Refused(e)) => {
                    let _ = say(&json_line(&Reply::Error(e.clone())));
                }
                (true, other) => {
                    let e = Error::new(other.kind(), other.to_string());
                    let _ = say(&json_line(&Reply::Error(e)));
                }
                (false, ClientError::NoReply | ClientError::Io(_)) if following.is_some() => {
                    let service = following.as_deref().unwrap_or_default();
                    complain(&format!(
                        "{error}; the cutover is persisted in the server and goes on (or resumes when it starts again): `flipdns ctl status {service}` shows it"
                    ))
                }
                (false, _) => complain(&error.to_string()),
            }
            ExitCode::from(code)
        }
    }
}

/// `ctl status --watch`: the status (and, for one service, its straggler report) again
/// every `every`, until Ctrl-C. On a terminal the screen is redrawn; elsewhere each round is
/// a block (a JSON line with `--json`). A server that stops answering is said so and
/// asked again next round, so a restart can be watched through.
pub fn watch(
    endpoint: &Endpoint,
    json: bool,
    service: Option<String>,
    every: std::time::Duration,
) -> ExitCode {
    let terminal = std::io::stdout().is_terminal();
    let mut client: Option<Client> = None;
    loop {
        let round = watch_round(endpoint, &mut client, service.as_deref());
        let text = match (&round, json) {
            (Ok((status, _)), true) => json_line(status),
            (Ok((status, report)), false) => {
                let mut text = format::response(status);
                if let Some(report) = report {
                    text.push('\n');
                    text.push_str(&format::response(report));
                }
                text
            }
            (Err(e), true) => json_line(&Reply::Error(Error::new(e.kind(), e.to_string()))),
            (Err(e), false) => format!("{e}; asking again in {} s\n", every.as_secs_f64()),
        };
        if round.is_err() {
            client = None; // connect afresh next round
        }
        let header = if terminal && !json {
            format!(
                "\x1b[H\x1b[2J{}  every {} s, Ctrl-C stops\n\n",
                crate::clock::format_utc(crate::clock::now_ms()),
                every.as_secs_f64()
            )
        } else if json {
            String::new()
        } else {
            format!("--- {}\n", crate::clock::format_utc(crate::clock::now_ms()))
        };
        if say(&format!("{header}{text}")).is_err() {
            return ExitCode::FAILURE; // stdout went away
        }
        std::thread::sleep(every);
    }
}

/// One round of a watch: the status, and the straggler report of `service`.
fn watch_round(
    endpoint: &Endpoint,
    client: &mut Option<Client>,
    service: Option<&str>,
) -> Result<(Response, Option<Response>), ClientError> {
    let client = match client {
        Some(client) => client,
        None => client.insert(Client::connect(endpoint)?),
    };
    let status = client.call(&Request::Status {
        service: service.map(String::from),
    })?;
    let report = match service {
        Some(service) => Some(client.call(&Request::Stragglers {
            service: service.into(),
            limit: Some(10),
            classes: Vec::new(),
            all: false,
        })?),
        None => None,
    };
    Ok((status, report))
}

/// The message Ctrl-C prints while a cutover is followed, ready before the signal.
static DETACHED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

extern "C" fn on_interrupt(_: libc::c_int) {
    if let Some(message) = DETACHED.get() {
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is never freed.
        unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    }
    // SAFETY: as above.
    unsafe { libc::_exit(130) };
}

/// Makes Ctrl-C say that the cutover goes on in the server, and how to follow or stop it.
fn detach_on_interrupt(service: &str) {
    let _ = DETACHED.set(
        format!(
            "\n{service}: detached; the cutover goes on in the server: `flipdns ctl status {service}` follows it, `flipdns ctl cancel {service}` abandons it\n"
        )
        .into_bytes(),
    );
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        )
    };
}

/// Whether stdout and stderr are one terminal, or one file or pipe (`2>&1`): then the
/// reply and the progress make one story, and the reply repeats no line of it.
fn one_sink() -> bool {
    let same = |a: &libc::stat, b: &libc::stat| a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    // SAFETY: fstat(2) fills the zeroed buffers it is given for two descriptors we hold.
    unsafe {
        let (mut out, mut err): (libc::stat, libc::stat) = (std::mem::zeroed(), std::mem::zeroed());
        libc::fstat(1, &mut out) == 0 && libc::fstat(2, &mut err) == 0 && same(&out, &err)
    }
}

/// The exit code of a flip that is done here while secondaries do not serve it.
const SECONDARIES_BEHIND: u8 = 5;

/// Whether the reply says some secondaries do not serve our serial: a flip done here only,
/// or a `notify` after which one is not current.
fn secondaries_behind(response: &Response) -> bool {
    match response {
        Response::Cutover(c) => c
            .fleet
            .as_ref()
            .is_some_and(|f| f.waited && !f.behind.is_empty()),
        Response::Notified(all) => all
            .iter()
            .flat_map(|s| &s.zones)
            .any(|z| z.serves != Some(z.serial)),
        Response::Addresses(a) => a
            .fleet
            .as_ref()
            .is_some_and(|f| f.waited && !f.behind.is_empty()),
        _ => false,
    }
}

/// The reply on stdout: for a person, or with `--json` the reply's value (the `status`,
/// `cutover`, ... object itself). When stdout and the progress share a terminal, the reply
/// goes on with the story where the progress left it, repeating no line of it.
fn print_reply(json: bool, response: &Response, view: &mut ProgressView) -> std::io::Result<()> {
    if !json {
        let text = format::response(response);
        return say(&if one_sink() { view.unseen(&text) } else { text });
    }
    say(&match response {
        Response::Version(v) => json_line(v),
        Response::Status(s) => json_line(s),
        Response::Cutover(c) => json_line(c),
        Response::Reloaded(r) => json_line(r),
        Response::Stragglers(r) => json_line(r),
        Response::History(h) => json_line(h),
        Response::LogLevel(f) => json_line(f),
        Response::Notified(n) => json_line(n),
        Response::Addresses(a) => json_line(a),
    })
}
