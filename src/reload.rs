//! Reload: re-read the config and zone files, check all of it, then serve the new zones and
//! services in one step (SIGHUP, or `flipdns ctl reload`).
//!
//! Nothing changes unless everything is valid: a problem anywhere leaves the server serving
//! exactly what it had, and the reply and the log name each problem with file and line.
//! Zones, services, secondaries, keys and `server.identity` take effect; the rest of
//! `[server]`, `[limits]` and `[ledger]` are bound to
//! sockets and tables at start, so changes there are reported as needing a restart and the
//! running values stay.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::cutover::Cutovers;
use crate::fleet::Fleet;
use crate::problem::Problems;
use crate::switch::{ReloadRefused, Reloaded, Switch};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub changes: Reloaded,
    /// Settings that changed but only take effect at the next restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused, still serving the previous configuration:\n{0}")]
    Invalid(Problems),
    #[error("reload not applied, still serving the previous configuration: {0}")]
    Refused(ReloadRefused),
    #[error(
        "reload abandoned, still serving the previous configuration: reading the config and zone files took longer than {:?} (limits.reload_timeout; is one of them a FIFO, or on a hung mount?)",
        .0
    )]
    TimedOut(Duration),
}

/// Reloads one server's configuration; one reload at a time.
pub struct Reloader {
    switch: Arc<Switch>,
    cutovers: Arc<Cutovers>,
    fleet: Arc<Fleet>,
    busy: Mutex<()>,
    clock: crate::clock::Clock,
    /// How the reloads went, for `/metrics`.
    pub outcomes: Arc<Outcomes>,
}

/// The latest reload's outcome and the time of the latest config applied.
#[derive(Debug, Default)]
pub struct Outcomes {
    failed: std::sync::atomic::AtomicBool,
    /// Unix ms the config now served was applied: at start, then at each reload applied
    /// (as Prometheus sets its own `config_last_reload_success_timestamp_seconds`).
    success_ms: std::sync::atomic::AtomicU64,
}

impl Outcomes {
    /// Outcomes of a server whose config was loaded at `started_ms`.
    pub fn started(started_ms: u64) -> Outcomes {
        Outcomes {
            failed: Default::default(),
            success_ms: started_ms.into(),
        }
    }

    /// Whether the latest reload was applied (true before any).
    pub fn last_ok(&self) -> bool {
        !self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn last_success_ms(&self) -> Option<u64> {
        let ms = self.success_ms.load(std::sync::atomic::Ordering::Relaxed);
        (ms > 0).then_some(ms)
    }

    fn note(&self, ok: bool, now_ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.failed.store(!ok, Relaxed);
        if ok {
            self.success_ms.store(now_ms, Relaxed);
        }
    }
}

impl Reloader {
    pub fn new(
        switch: Arc<Switch>,
        cutovers: Arc<Cutovers>,
        fleet: Arc<Fleet>,
        clock: crate::clock::Clock,
    ) -> Reloader {
        Reloader {
            outcomes: Arc::new(Outcomes::started(clock.now_ms())),
            switch,
            cutovers,
            fleet,
            clock,
            busy: Mutex::new(()),
        }
    }

    /// Reloads, logging the outcome; the error lists every problem, one per line.
    /// With `force`, services with a cutover in progress may be removed.
    pub async fn reload(&self, force: bool) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.busy.lock().await;
        crate::process::systemd::reloading();
        let outcome = self.reload_now(force).await;
        self.outcomes.note(outcome.is_ok(), self.clock.now_ms());
        let catalog = self.switch.catalog();
        let serving =
            crate::process::systemd::serving(catalog.config.services.len(), catalog.zones.len());
        crate::process::systemd::ready(&match &outcome {
            Ok(_) => format!("{serving}; reloaded"),
            Err(_) => format!("{serving}; the last reload failed (see the log)"),
        });
        outcome
    }

    async fn reload_now(&self, force: bool) -> Result<ReloadReport, ReloadError> {
        let running = self.switch.catalog();
        let path = running.config.path.clone();
        // Files are read on a blocking thread, never on the threads that answer queries, and
        // only for so long.
        let read = tokio::task::spawn_blocking(move || Config::load(&path).and_then(Catalog::load));
        let path = running.config.path.clone();
        let limit = running.config.limits.reload_timeout;
        let loaded = match tokio::time::timeout(limit, read).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(_)) | Err(_) => {
                tracing::error!(
                    "reload abandoned: reading {} and its zone files took longer than {limit:?}",
                    path.display()
                );
                return Err(ReloadError::TimedOut(limit));
            }
        };
        let catalog = match loaded {
            Ok(catalog) => catalog,
            Err(problems) => {
                for problem in &problems.0 {
                    tracing::error!("reload refused: {problem}");
                }
                return Err(ReloadError::Invalid(problems));
            }
        };
        for warning in catalog.warnings() {
            tracing::warn!("reload: {warning}");
        }
        let (catalog, restart_needed) = keep_running_settings(&running.config, catalog);
        // The old catalog must go before its memory can be handed back.
        drop(running);
        let changes = self.switch.reload(catalog, force).await.map_err(|e| {
            tracing::error!("reload not applied: {e}");
            ReloadError::Refused(e)
        })?;
        self.cutovers.sync();
        self.fleet.sync(&self.switch.catalog());
        crate::process::memory::release_freed_memory();
        for setting in &restart_needed {
            tracing::warn!("reload: {setting} changed; it takes effect at the next restart");
        }
        for said in &changes.addresses_from_config {
            tracing::warn!("reload: {said}");
        }
        // Counts, then a line per service: a log field is a number or a string, never a
        // list (tracing has no list values), and a line per service is what a search for
        // the service finds.
        tracing::info!(
            added = changes.added.len(),
            removed = changes.removed.len(),
            changed = changes.changed.len(),
            "reloaded {}",
            path.display()
        );
        for (how, services) in [
            ("added", &changes.added),
            ("removed", &changes.removed),
            ("changed", &changes.changed),
        ] {
            for service in services {
                // `extra (blue live, from the config)`: the name is the field.
                match service.split_once(' ') {
                    Some((name, detail)) => {
                        tracing::info!(service = %name, "reload: {how} {detail}")
                    }
                    None => tracing::info!(service = %service, "reload: {how}"),
                }
            }
        }
        Ok(ReloadReport {
            changes,
            restart_needed,
        })
    }
}

/// `catalog` with the running `[server]`, `[limits]` and `[ledger]`, and the names of those
/// settings the new file changes.
fn keep_running_settings(running: &Config, mut catalog: Catalog) -> (Catalog, Vec<String>) {
    let new = &catalog.config;
    let mut changed = Vec::new();
    let server = [
        ("server.listen", running.server.listen != new.server.listen),
        (
            "server.admin_socket",
            running.server.admin_socket != new.server.admin_socket,
        ),
        (
            "server.admin_socket_mode",
            running.server.admin_socket_mode != new.server.admin_socket_mode,
        ),
        (
            "server.admin_allowed_uids",
            running.server.admin_allowed_uids != new.server.admin_allowed_uids,
        ),
        (
            "server.admin_allowed_gids",
            running.server.admin_allowed_gids != new.server.admin_allowed_gids,
        ),
        (
            "server.state_file",
            running.server.state_file != new.server.state_file,
        ),
        (
            "server.metrics_listen",
            running.server.metrics_listen != new.server.metrics_listen,
        ),
        (
            "server.workers",
            running.server.workers != new.server.workers,
        ),
        (
            "server.udp_batch",
            running.server.udp_batch != new.server.udp_batch,
        ),
        ("[limits]", running.limits != new.limits),
        ("[ledger]", running.ledger != new.ledger),
        ("[rrl]", running.rrl != new.rrl),
        ("[dnstap]", running.dnstap != new.dnstap),
        ("api.listen", running.api.listen != new.api.listen),
        ("[api] limits", running.api.bounds != new.api.bounds),
    ];
    for (setting, differs) in server {
        if differs {
            changed.push(setting.to_string());
        }
    }
    // The identity is not bound to anything: it may change.
    let identity = catalog.config.server.identity.take();
    catalog.config.server = running.server.clone();
    catalog.config.server.identity = identity;
    catalog.config.limits = running.limits.clone();
    catalog.config.ledger = running.ledger.clone();
    catalog.config.rrl = running.rrl.clone();
    catalog.config.dnstap = running.dnstap.clone();
    // The API's tokens and TLS files take effect at once; its sockets and bounds at start.
    let api = &mut catalog.config.api;
    api.listen = running.api.listen.clone();
    api.bounds = running.api.bounds;
    (catalog, changed)
}
