//! The `flipdns` command: arguments, logging, exit codes; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flipdns::admin::client::{
    Client, ProgressView, format_cutover, format_reloaded, format_status, format_stragglers,
};
use flipdns::admin::protocol::{Cutover, Reloaded, Request, Status, StragglersReport};
use flipdns::catalog::Catalog;
use flipdns::color::Color;
use flipdns::config::{Config, DEFAULT_CONFIG};
use tokio_util::sync::CancellationToken;

/// Authoritative DNS server that flips services between blue and green.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server in the foreground until SIGTERM or Ctrl-C.
    Serve {
        /// Config file; relative paths inside it are relative to its directory.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the config and its zone files; print every problem with file and line.
    Check {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Talk to a running server through its admin socket.
    Ctl {
        /// Admin socket path [default: admin_socket of --config].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Config whose admin_socket to use when --socket is not given.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Show services: live color, phase, TTL, deadlines, generation, serial, health.
    Status {
        /// Only this service.
        service: Option<String>,
        /// Print the server's JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Lower the TTL to cutover_ttl now and print when caches will have drained.
    Prepare {
        service: String,
        #[arg(long)]
        json: bool,
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
        /// Print the final reply as JSON (progress still goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Flip back to the other color: at once while settling, otherwise the whole sequence.
    Rollback {
        service: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Re-read the config and zone files; apply them only if all of them are valid.
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Which resolvers converged on the new color, which may still hold the old one, and
    /// which keep asking for it, since the service's latest flip.
    Stragglers {
        service: String,
        /// Resolvers listed per class (stragglers, overdue, draining).
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Abandon a pending cutover, or end a settle early: back to the normal TTL.
    Cancel {
        service: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_color(s: &str) -> Result<Color, String> {
    s.parse()
        .map_err(|e: flipdns::color::UnknownColor| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Check { config } => check(&config),
        Command::Ctl {
            socket,
            config,
            command,
        } => ctl(socket, &config, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("flipdns: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: &Path) -> Result<Catalog, String> {
    Config::load(config)
        .and_then(Catalog::load)
        .map_err(|problems| format!("invalid configuration:\n{problems}"))
}

fn serve(config: &Path) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLIPDNS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let catalog = load(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        flipdns::server::run(catalog, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

fn check(config: &Path) -> Result<(), String> {
    let catalog = load(config)?;
    let services = catalog.config.services.len();
    let zones = catalog.zones.len();
    println!(
        "{}: ok ({zones} zone(s), {services} service(s))",
        config.display()
    );
    Ok(())
}

fn ctl(socket: Option<PathBuf>, config: &Path, command: CtlCommand) -> Result<(), String> {
    let socket = match socket {
        Some(socket) => socket,
        None => flipdns::config::admin_socket_of(config)
            .map_err(|e| format!("no --socket given and {e}"))?,
    };
    let mut client = Client::connect(&socket).map_err(|e| e.to_string())?;
    let (request, json) = match command {
        CtlCommand::Status { service, json } => {
            let status: Status = client
                .call(&Request::Status { service })
                .map_err(|e| e.to_string())?;
            print(json, &status, format_status);
            return Ok(());
        }
        CtlCommand::Reload { json } => {
            let reloaded: Reloaded = client.call(&Request::Reload).map_err(|e| e.to_string())?;
            print(json, &reloaded, format_reloaded);
            return Ok(());
        }
        CtlCommand::Stragglers {
            service,
            limit,
            json,
        } => {
            let report: StragglersReport = client
                .call(&Request::Stragglers {
                    service,
                    limit: Some(limit),
                })
                .map_err(|e| e.to_string())?;
            print(json, &report, format_stragglers);
            return Ok(());
        }
        CtlCommand::Prepare { service, json } => (Request::Prepare { service }, json),
        CtlCommand::Flip {
            service,
            to,
            now,
            force,
            no_wait,
            json,
        } => (
            Request::Flip {
                service,
                to,
                now,
                force,
                wait: !no_wait,
            },
            json,
        ),
        CtlCommand::Rollback {
            service,
            force,
            no_wait,
            json,
        } => (
            Request::Rollback {
                service,
                force,
                wait: !no_wait,
            },
            json,
        ),
        CtlCommand::Cancel { service, json } => (Request::Cancel { service }, json),
    };
    let waits = matches!(
        request,
        Request::Flip {
            wait: true,
            now: false,
            ..
        } | Request::Rollback { wait: true, .. }
    );
    if waits && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("(Ctrl-C detaches: the cutover goes on in the server)");
    }
    let mut view = ProgressView::default();
    let cutover: Cutover = client
        .call_with_progress(&request, |p| view.show(p))
        .map_err(|e| e.to_string())?;
    print(json, &cutover, format_cutover);
    Ok(())
}

fn print<T: serde::Serialize>(json: bool, value: &T, human: fn(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("replies serialize")
        );
    } else {
        print!("{}", human(value));
    }
}
