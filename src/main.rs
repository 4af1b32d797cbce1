//! The `flipdns` command: arguments, logging, exit codes; the work is in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flipdns::admin::client::Endpoint;
use flipdns::catalog::Catalog;
use flipdns::color::Color;
use flipdns::config::{Config, default_config};
use flipdns::process::output::{complain, json_line, say};
use flipdns::protocol::{Request, ResolverClass};
use tokio_util::sync::CancellationToken;

/// Authoritative DNS server that flips services between blue and green.
#[derive(Parser)]
#[command(version = flipdns::process::build_info::LONG, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The config file every command reads.
#[derive(clap::Args)]
struct ConfigArg {
    /// Config file; relative paths inside it are relative to its directory.
    #[arg(long = "config", env = "FLIPDNS_CONFIG", default_value_os_t = default_config())]
    path: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground until SIGTERM or Ctrl-C.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the config and its zone files; print every problem with file and line.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Read the durable state (snapshot and journal, merged) without a running server.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Write the manual pages or a shell's completions, from these very definitions.
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
    /// Make and inspect HTTPS API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Talk to a running server through its admin socket, or its HTTPS API (--server).
    Ctl {
        /// Admin socket path [default: admin_socket of --config].
        #[arg(long, env = "FLIPDNS_SOCKET")]
        socket: Option<PathBuf>,
        /// The HTTPS API instead of the socket: https://HOST:PORT.
        #[arg(long, env = "FLIPDNS_SERVER", conflicts_with = "socket")]
        server: Option<String>,
        /// With --server: the file whose first line is the API token.
        #[arg(long, env = "FLIPDNS_TOKEN_FILE", requires = "server")]
        token_file: Option<PathBuf>,
        /// With --server: a private CA (PEM) to verify the server against.
        #[arg(long, env = "FLIPDNS_CA_FILE", requires = "server")]
        ca_file: Option<PathBuf>,
        /// With --server: a client certificate (PEM), for a server that requires one.
        #[arg(long, env = "FLIPDNS_CLIENT_CERT", requires_all = ["server", "client_key"])]
        client_cert: Option<PathBuf>,
        /// With --server: the client certificate's private key (PEM).
        #[arg(long, env = "FLIPDNS_CLIENT_KEY", requires = "client_cert")]
        client_key: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print the server's reply as JSON on stdout, errors included.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random token once, alone on the first line, then the `[[api.token]]`
    /// block to append to the config (it holds the token's SHA-256, never the token).
    New {
        /// The principal's name, as the audit trail and the two-person rule know it.
        name: String,
        /// What it may do: read, admin, flip:SERVICE, approve:SERVICE, deploy:SERVICE
        /// (SERVICE may be *); repeat for several.
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<flipdns::config::Scope>,
    },
}

fn parse_scope(s: &str) -> Result<flipdns::config::Scope, String> {
    s.parse()
}

#[derive(Subcommand)]
enum Generate {
    /// One page per command (flipdns.1, flipdns-ctl-flip.1, ...) into DIR.
    Man {
        /// Directory to write the pages into; created if missing.
        dir: PathBuf,
    },
    /// Completions for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Print the state as JSON: live colors, flips, phases, deadlines, serials.
    Show {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the state as a state file of its own, for a backup (works while serving).
    Export {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Replace the state with a backup made by `state export`; the server must be stopped.
    ///
    /// Zone serials only move forward: a zone whose backup serial is not after the current
    /// one is given the current serial plus one, so secondaries transfer the restored zone.
    Import {
        /// The backup to restore.
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// The server's version and admin protocol version.
    Version,
    /// Show services: live color, phase, TTL, deadlines, flips, serial, health.
    Status {
        /// Only this service.
        service: Option<String>,
        /// Show it again every --every until Ctrl-C (with SERVICE, its straggler report
        /// too): the settle and the stragglers as they go. Rides out a server restart.
        #[arg(long)]
        watch: bool,
        /// How often --watch asks.
        #[arg(long, default_value = "1s", value_parser = parse_every, requires = "watch")]
        every: std::time::Duration,
    },
    /// Lower the TTL to cutover_ttl now and print when caches will have drained.
    Prepare {
        /// Service name, as in the config.
        service: String,
    },
    /// Make a color live: lower the TTL, wait for the drain, check health, flip, settle.
    ///
    /// The wait happens in the server: Ctrl-C or --no-wait detaches without cancelling it.
    Flip {
        /// Service name, as in the config.
        service: String,
        /// The color to make live.
        #[arg(long, value_parser = parse_color)]
        to: Color,
        /// Flip at once instead of waiting for the drain (still settles afterwards).
        #[arg(long)]
        now: bool,
        /// Skip the health gate and min_flip_interval.
        #[arg(long)]
        force: bool,
        /// Return once the flip is scheduled instead of following it.
        #[arg(long)]
        no_wait: bool,
        /// Return once the flip is done here, without waiting for the secondaries.
        #[arg(long)]
        no_wait_secondaries: bool,
    },
    /// Flip back to the other color: at once while settling, otherwise the whole sequence.
    Rollback {
        /// Service name, as in the config.
        service: String,
        /// Skip the health gate.
        #[arg(long)]
        force: bool,
        /// Return once the rollback is scheduled instead of following it.
        #[arg(long)]
        no_wait: bool,
        /// Return once the rollback is done here, without waiting for the secondaries.
        #[arg(long)]
        no_wait_secondaries: bool,
    },
    /// Re-read the config and zone files; apply them only if all of them are valid.
    Reload {
        /// Remove services even if they have a cutover in progress (it is dropped).
        #[arg(long)]
        force: bool,
    },
    /// Which resolvers converged on the new color, which may still hold the old one, and
    /// which keep asking for it, since the service's latest flip.
    Stragglers {
        /// Service name, as in the config.
        service: String,
        /// Most resolvers listed, most interesting first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// List resolvers of this class (repeat for several): straggler, overdue, draining,
        /// silent, converged [default: straggler, overdue, draining].
        #[arg(long = "class", value_parser = parse_class)]
        classes: Vec<ResolverClass>,
        /// List resolvers of every class.
        #[arg(long)]
        all: bool,
    },
    /// Abandon a pending cutover, or end a settle early: back to the normal TTL.
    Cancel {
        /// Service name, as in the config.
        service: String,
    },
    /// Approve the flip or prepare another principal asked for (approval = "two-person").
    ///
    /// The request is carried out as asked; this command then follows it like `flip`.
    Approve {
        /// Service name, as in the config.
        service: String,
        /// Reply once approved, without following the cutover.
        #[arg(long)]
        no_wait: bool,
    },
    /// Replace a color's addresses: a release's new instances, registered from the pipeline.
    ///
    /// The idle color only (the live one with --force, an emergency); never the color a
    /// cutover is heading to or settling on. Persisted before the reply; `COLOR.SERVICE`
    /// answers the new set at once, the service name after a flip to COLOR. The set stands
    /// until the config's list for that color changes (then the config's wins, and says so).
    SetAddresses {
        /// Service name, as in the config.
        service: String,
        /// blue or green.
        #[arg(value_parser = parse_color)]
        color: Color,
        /// The new set: 1 to 64 IPv4 or IPv6 addresses.
        #[arg(required = true)]
        addresses: Vec<std::net::IpAddr>,
        /// Replace the live color's addresses (its answers change at once).
        #[arg(long)]
        force: bool,
        /// Run the service's health check against the new addresses first; refuse if any fails.
        #[arg(long)]
        check: bool,
        /// Reply at once instead of waiting for the secondaries to serve the new set.
        #[arg(long)]
        no_wait_secondaries: bool,
    },
    /// Change the server's log filter until it restarts (info, debug, flipdns::fleet=debug).
    LogLevel {
        /// A filter as FLIPDNS_LOG takes it.
        filter: String,
    },
    /// Send every zone's NOTIFY now, to SECONDARY or to all, and show what each serves.
    ///
    /// The server NOTIFYs on every change by itself (retried until acknowledged); this is
    /// for the moment you want it again, and to see the answer. A secondary up to date does
    /// nothing; to make one transfer the whole zone anyway, use its own command
    /// (`knotc zone-retransfer`, `nsd-control force_transfer`, `rndc retransfer`).
    Notify {
        /// A secondary's name or address, as in the config.
        secondary: Option<String>,
    },
    /// The audit trail: who asked for which change, when, and what came of it.
    History {
        /// Only changes of this service.
        service: Option<String>,
        /// Most entries shown, the latest ones.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Include the HTTPS API's successful reads (status, reports), left out by default.
        #[arg(long)]
        reads: bool,
    },
}

fn parse_class(s: &str) -> Result<ResolverClass, String> {
    serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| {
        format!("unknown class {s:?}: expected straggler, overdue, draining, silent or converged")
    })
}

fn parse_color(s: &str) -> Result<Color, String> {
    s.parse()
        .map_err(|e: flipdns::color::UnknownColor| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => exit(serve(&config.path)),
        Command::Check { config } => exit(check(&config.path)),
        Command::State { command } => exit(match command {
            StateCommand::Show { config } => show_state(&config.path),
            StateCommand::Export { config } => export_state(&config.path),
            StateCommand::Import { file, config } => import_state(&file, &config.path),
        }),
        Command::Generate { what } => exit(generate(what)),
        Command::Token {
            command: TokenCommand::New { name, scopes },
        } => exit(new_token(&name, &scopes)),
        Command::Ctl {
            socket,
            server,
            token_file,
            ca_file,
            client_cert,
            client_key,
            config,
            json,
            command,
        } => {
            let endpoint = match server {
                Some(url) => {
                    let Some(token_file) = token_file else {
                        complain(
                            "--server needs --token-file (or FLIPDNS_TOKEN_FILE): the file holding the API token",
                        );
                        return ExitCode::from(2);
                    };
                    Endpoint::Api(flipdns::admin::remote::Server {
                        url,
                        token_file,
                        ca_file,
                        client_cert: client_cert.zip(client_key),
                    })
                }
                None => match socket {
                    Some(socket) => Endpoint::Socket(socket),
                    None => match flipdns::config::admin_socket_of(&config.path) {
                        Ok(socket) => Endpoint::Socket(socket),
                        Err(e) => {
                            complain(&format!("no --socket given and {e}"));
                            return ExitCode::from(3);
                        }
                    },
                },
            };
            ctl(&endpoint, json, command)
        }
    }
}

/// Runs one `ctl` command against `endpoint`.
fn ctl(endpoint: &Endpoint, json: bool, command: CtlCommand) -> ExitCode {
    match command {
        CtlCommand::Status {
            service,
            watch: true,
            every,
        } => flipdns::admin::ctl::watch(endpoint, json, service, every),
        command => flipdns::admin::ctl::run(endpoint, json, request(command)),
    }
}

/// `flipdns token new`: the token alone on the first line (a script takes it with `head -1`),
/// then the config block.
fn new_token(name: &str, scopes: &[flipdns::config::Scope]) -> Result<(), String> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!(
            "token name {name:?}: use letters, digits, '-' or '_'"
        ));
    }
    let (token, hash) = flipdns::api::auth::new_token()?;
    let scopes: Vec<String> = scopes
        .iter()
        .map(|s| format!("{:?}", s.to_string()))
        .collect();
    let block = format!(
        "{token}\n\n# Append to the config ([api] section); the line above is the token, shown once.\n[[api.token]]\nname = {name:?}\nsha256 = \"{}\"\nscopes = [{}]\n",
        data_encoding::HEXLOWER.encode(&hash),
        scopes.join(", ")
    );
    say(&block).map_err(|e| format!("cannot write the token: {e}"))
}

/// `--every`: a duration as the config spells them (`500ms`, `2s`), 100 ms to 1 h.
fn parse_every(text: &str) -> Result<std::time::Duration, String> {
    let every = flipdns::config::parse_duration(text)?;
    if !(std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(3600))
        .contains(&every)
    {
        return Err(format!("{text} is outside 100ms to 1h"));
    }
    Ok(every)
}

/// A page per command (as clap_mangen's `generate_to`), each with the sections clap does
/// not write (EXIT STATUS, ENVIRONMENT, FILES).
fn man_pages(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub.clone(), dir)?;
    }
    let man = clap_mangen::Man::new(command);
    let mut page = Vec::new();
    man.render(&mut page)?;
    let name = man.get_filename();
    page.extend_from_slice(
        flipdns::admin::manual::sections(name.trim_end_matches(".1")).as_bytes(),
    );
    std::fs::write(dir.join(name), page)
}

fn generate(what: Generate) -> Result<(), String> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    match what {
        Generate::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut command = command.disable_help_subcommand(true);
            command.build();
            man_pages(command, &dir)
                .map_err(|e| format!("cannot write the pages into {}: {e}", dir.display()))
        }
        Generate::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "flipdns", &mut out);
            say(&String::from_utf8_lossy(&out)).map_err(|e| format!("cannot write: {e}"))
        }
    }
}

fn exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            complain(&message);
            ExitCode::FAILURE
        }
    }
}

fn load(config: &Path) -> Result<Catalog, String> {
    Config::load(config)
        .and_then(Catalog::load)
        .map_err(|problems| format!("invalid configuration:\n{problems}"))
}

/// The log format: `FLIPDNS_LOG_FORMAT=json` for one JSON object per line, text otherwise;
/// under journald (`JOURNAL_STREAM` set) text without a timestamp, which the journal adds.
/// `FLIPDNS_LOG` sets the level (`info` by default; `debug`, `flipdns::fleet=debug`, ...).
fn init_logs() -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let filter = EnvFilter::try_from_env("FLIPDNS_LOG").unwrap_or_else(|_| "info".into());
    // The filter can be swapped at run time (`flipdns ctl log-level`).
    let (filter, handle) = reload::Layer::new(filter);
    flipdns::process::logging::control_filter(Box::new(move |text| {
        let filter = EnvFilter::try_new(text).map_err(|e| {
            format!("bad log filter {text:?}: {e}; e.g. info, debug, flipdns::fleet=debug")
        })?;
        handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))
    }));
    let logs = fmt::layer()
        .with_writer(flipdns::process::logging::Sink)
        .log_internal_errors(false);
    let registry = tracing_subscriber::registry().with(filter);
    let format = std::env::var("FLIPDNS_LOG_FORMAT").unwrap_or_default();
    match format.as_str() {
        "json" => registry.with(logs.json()).init(),
        "" | "text" if std::env::var_os("JOURNAL_STREAM").is_some() => {
            registry.with(logs.without_time().with_ansi(false)).init()
        }
        "" | "text" => registry
            .with(logs.with_ansi(std::io::stderr().is_terminal()))
            .init(),
        other => {
            return Err(format!(
                "FLIPDNS_LOG_FORMAT={other:?}: expected \"text\" or \"json\""
            ));
        }
    }
    Ok(())
}

fn serve(config: &Path) -> Result<(), String> {
    // Log lines go through a bounded queue to a thread of their own: a stderr that fails or
    // stops being read drops lines (counted), never a signal, a reply or an answer.
    flipdns::process::logging::start(std::io::stderr());
    init_logs()?;
    let catalog = load(config)?;
    for warning in catalog.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let served = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        flipdns::server::run(catalog, shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    // A blocking read that shutdown abandoned (a reload's zone file on a FIFO or a dead
    // mount) must not hold the exit: the runtime does not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    flipdns::process::logging::finish(std::time::Duration::from_millis(500));
    served
}

/// Cancels `shutdown` on SIGTERM or SIGINT, then says so: a signal is acted on before
/// anything is logged about it.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    shutdown.cancel();
    tracing::info!("{name} received");
}

fn export_state(config: &Path) -> Result<(), String> {
    let config = Config::load(config).map_err(|p| format!("invalid configuration:\n{p}"))?;
    let path = &config.server.state_file;
    let state = flipdns::state::store::read_state(path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("state file {}: none yet, nothing to export", path.display()))?;
    say(&String::from_utf8_lossy(&flipdns::state::store::export(
        &state,
    )))
    .map_err(|e| format!("cannot write: {e}"))
}

fn import_state(file: &Path, config: &Path) -> Result<(), String> {
    let config = Config::load(config).map_err(|p| format!("invalid configuration:\n{p}"))?;
    let backup = flipdns::state::store::read_state(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .ok_or_else(|| format!("{}: not a state file", file.display()))?;
    let path = &config.server.state_file;
    let written = flipdns::state::store::import(path, backup).map_err(|e| e.to_string())?;
    say(&format!(
        "imported {} services and {} zones into {}\n",
        written.services.len(),
        written.zones.len(),
        path.display()
    ))
    .map_err(|e| format!("cannot write: {e}"))
}

fn show_state(config: &Path) -> Result<(), String> {
    let config = Config::load(config).map_err(|p| format!("invalid configuration:\n{p}"))?;
    let path = &config.server.state_file;
    let state = flipdns::state::store::read_state(path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "state file {}: none yet (the server has not started)",
                path.display()
            )
        })?;
    let json = serde_json::json!({
        "services": state.services,
        "zones": state.zones,
    });
    say(&json_line(&json)).map_err(|e| format!("cannot write to stdout: {e}"))
}

fn check(config: &Path) -> Result<(), String> {
    let catalog = load(config)?;
    let services = catalog.config.services.len();
    let zones = catalog.zones.len();
    let mut text = String::new();
    for warning in catalog.warnings() {
        text.push_str(&format!("warning: {warning}\n"));
    }
    text.push_str(&format!(
        "{}: ok ({zones} zone(s), {services} service(s))\n",
        config.display(),
    ));
    say(&text).map_err(|e| format!("cannot write to stdout: {e}"))
}

fn request(command: CtlCommand) -> Request {
    match command {
        CtlCommand::Version => Request::Version,
        CtlCommand::Status { service, .. } => Request::Status { service },
        CtlCommand::Notify { secondary } => Request::Notify { secondary },
        CtlCommand::Reload { force } => Request::Reload { force },
        CtlCommand::Stragglers {
            service,
            limit,
            classes,
            all,
        } => Request::Stragglers {
            service,
            limit: Some(limit),
            classes,
            all,
        },
        CtlCommand::Prepare { service } => Request::Prepare { service },
        CtlCommand::Flip {
            service,
            to,
            now,
            force,
            no_wait,
            no_wait_secondaries,
        } => Request::Flip {
            service,
            to,
            now,
            force,
            wait: !no_wait,
            wait_secondaries: !no_wait_secondaries,
        },
        CtlCommand::Rollback {
            service,
            force,
            no_wait,
            no_wait_secondaries,
        } => Request::Rollback {
            service,
            force,
            wait: !no_wait,
            wait_secondaries: !no_wait_secondaries,
        },
        CtlCommand::Cancel { service } => Request::Cancel { service },
        CtlCommand::Approve { service, no_wait } => Request::Approve {
            service,
            wait: !no_wait,
        },
        CtlCommand::SetAddresses {
            service,
            color,
            addresses,
            force,
            check,
            no_wait_secondaries,
        } => Request::SetAddresses {
            service,
            color,
            addresses,
            force,
            check,
            wait_secondaries: !no_wait_secondaries,
        },
        CtlCommand::LogLevel { filter } => Request::LogLevel { filter },
        CtlCommand::History {
            service,
            limit,
            reads,
        } => Request::History {
            service,
            limit: Some(limit),
            reads,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command, argument and flag says what it is for: `--help`, the man pages and
    /// the completions are made from these lines.
    #[test]
    fn every_command_and_argument_has_a_help_line() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() && path != "flipdns help" {
                missing.push(path.clone());
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if arg.get_help().is_none() && !builtin {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &path, missing);
                }
            }
        }
        let command = Cli::command();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&command, "", &mut missing);
        assert!(missing.is_empty(), "without a help line: {missing:?}");
    }
}
