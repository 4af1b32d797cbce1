//! The cutover tasks of all services: the registry that starts one task per service when
//! it has something to do (a command, a deadline, a pending flip, a fleet wait), replaces
//! one that panicked, and lets an idle one retire; and each service's background health
//! checks. What a task does is [`super::driver`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::Driver;
use super::{Action, Done, HealthGate, Origin, Progress, Refusal, RefusalKind};
use crate::clock::Clock;
use crate::color::Color;
use crate::config::{HealthConfig, ServiceConfig};
use crate::fleet::Fleet;
use crate::observed::Observed;
use crate::records::Records;
use crate::state::{Phase, ServiceState};
use crate::switch::Switch;

/// Commands queued per service before new ones are turned away.
pub const COMMAND_QUEUE: usize = 16;
/// Progress events buffered per service for slow followers (they skip, never block).
const EVENT_BUFFER: usize = 64;
/// Lifecycle events queued for the audit trail before new ones are dropped (and counted).
pub const EVENT_QUEUE: usize = 1024;
/// Pause before a service whose cutover task panicked gets a new one: a bug that panics at
/// once must not spin.
pub const RESTART_AFTER_PANIC: Duration = Duration::from_secs(1);

pub(super) type Reply = oneshot::Sender<Result<Done, Refusal>>;

/// The cutover tasks of all services, by service name. A clone shares the tasks.
#[derive(Clone)]
pub struct Cutovers {
    pub(super) switch: Arc<Switch>,
    pub(super) fleet: Arc<Fleet>,
    pub(super) clock: Clock,
    pub(super) gate: Arc<dyn HealthGate>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    pub(super) running: Registry,
    /// Where the tasks' lifecycle events go (the audit trail takes them).
    pub(super) audit: mpsc::Sender<super::Event>,
    audit_out: Arc<std::sync::Mutex<Option<mpsc::Receiver<super::Event>>>>,
    /// Events dropped because the queue was full.
    pub(super) audit_lost: Arc<std::sync::atomic::AtomicU64>,
}

/// The running tasks, shared with the tasks themselves so that an idle one can retire.
pub(super) type Registry = Arc<std::sync::Mutex<Running>>;

#[derive(Default)]
pub(super) struct Running {
    /// Services with a task: those with a deadline, a pending flip or a fleet wait, and
    /// those with a command in progress. An idle service has none (a task and its queue
    /// cost about 3 KB, which at 100,000 services was a third of the server's memory);
    /// a command starts one, and it retires when nothing is left to wait for.
    pub(super) drivers: HashMap<String, Handle>,
    tasks_started: u64,
    /// Background health checks, by service; cancelled and restarted on every sync.
    watchers: HashMap<String, CancellationToken>,
}

pub(super) struct Handle {
    /// Tells this task from a later one of the same service.
    pub(super) task: u64,
    commands: mpsc::Sender<(Action, Origin, Reply)>,
    shared: Arc<Shared>,
}

/// What a service's task shares with the admin side.
#[derive(Default)]
pub(super) struct Shared {
    /// Progress events, for followers. The channel is made by the first follower: its
    /// buffer ([`EVENT_BUFFER`] events, about 6 KB) is the largest part of a service's
    /// cost, and most services are never followed.
    pub(super) events: std::sync::OnceLock<broadcast::Sender<Progress>>,
    /// Wakes the task to hold a drain deadline the fleet's answers moved (see
    /// [`Cutovers::answered_long`]).
    pub(super) nudge: tokio::sync::Notify,
    /// While a pending flip waits for the secondaries after its drain: when the wait runs
    /// out and the flip is refused (Unix ms); 0 otherwise.
    pub(super) fleet_wait_until_ms: std::sync::atomic::AtomicU64,
}

impl Cutovers {
    /// Starts one task per service (and its background health checks) on `tracker`.
    pub fn start(
        switch: Arc<Switch>,
        fleet: Arc<Fleet>,
        clock: Clock,
        gate: Arc<dyn HealthGate>,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Cutovers {
        let (audit, audit_out) = mpsc::channel(EVENT_QUEUE);
        let cutovers = Cutovers {
            switch,
            fleet,
            clock,
            gate,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            running: Default::default(),
            audit,
            audit_out: Arc::new(std::sync::Mutex::new(Some(audit_out))),
            audit_lost: Default::default(),
        };
        cutovers.sync();
        cutovers
    }

    /// Matches the tasks to the services served now: starts one for each service with
    /// something to wait for (a restart or a reload in the middle of a cutover), lets the
    /// tasks of removed services end, and restarts health checks with their new settings.
    pub fn sync(&self) {
        let catalog = self.switch.catalog();
        let snapshot = self.switch.records().load();
        let mut running = self.running();
        running
            .drivers
            .retain(|name, _| catalog.config.service(name).is_some());
        for token in running.watchers.drain().map(|(_, token)| token) {
            token.cancel();
        }
        for (config, view) in catalog.config.services.iter().zip(&snapshot.services) {
            if needs_task(&view.state) && !running.drivers.contains_key(&config.name) {
                self.start_task(&mut running, config);
            }
            let Some(check) = &config.health else {
                continue;
            };
            let Some(observed) = self.switch.observed(&config.name) else {
                continue;
            };
            let token = self.shutdown.child_token();
            running.watchers.insert(config.name.clone(), token.clone());
            let (config, check) = (config.clone(), check.clone());
            let (gate, records) = (self.gate.clone(), self.switch.records().clone());
            // Supervised like the cutover tasks: checks that panic start again.
            self.tracker.spawn(async move {
                loop {
                    let round = tokio::spawn({
                        let (gate, config, check) = (gate.clone(), config.clone(), check.clone());
                        let (observed, token) = (observed.clone(), token.clone());
                        let records = records.clone();
                        async move {
                            let service = Watched {
                                config: &config,
                                check: &check,
                                observed: &observed,
                                records: &records,
                            };
                            watch(&*gate, service, token).await
                        }
                    });
                    let Err(failure) = round.await else {
                        return;
                    };
                    tracing::error!(
                        service = %config.name,
                        "the background health checks panicked ({}); a bug: they start again in {RESTART_AFTER_PANIC:?}",
                        panic_message(failure)
                    );
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(RESTART_AFTER_PANIC) => {}
                    }
                }
            });
        }
    }

    /// Starts `config`'s task; `false` when the service is not served.
    fn start_task(&self, running: &mut Running, config: &ServiceConfig) -> bool {
        let Some(observed) = self.switch.observed(&config.name) else {
            return false;
        };
        running.tasks_started += 1;
        let task = running.tasks_started;
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let shared = Arc::new(Shared::default());
        let driver = Driver::new(self, config, observed, task, shared.clone());
        // Supervised: a task that panics is replaced by one that starts again from the
        // state file, as after a restart, so a deadline or a pending flip is not lost.
        let driver = tokio::spawn(driver.run(receiver, self.shutdown.clone()));
        let (cutovers, service) = (self.clone(), config.name.clone());
        self.tracker.spawn(async move {
            // Tasks are never aborted: an error is a panic.
            let Err(failure) = driver.await else {
                return;
            };
            cutovers.restart_after_panic(&service, task, failure).await;
        });
        running.drivers.insert(
            config.name.clone(),
            Handle {
                task,
                commands,
                shared,
            },
        );
        true
    }

    async fn restart_after_panic(&self, service: &str, task: u64, failure: tokio::task::JoinError) {
        tracing::error!(
            service,
            "the cutover task panicked ({}); a bug: it starts again from the state file in {RESTART_AFTER_PANIC:?}",
            panic_message(failure)
        );
        {
            let mut running = self.running();
            if running.drivers.get(service).is_some_and(|h| h.task == task) {
                running.drivers.remove(service);
            }
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESTART_AFTER_PANIC) => {}
        }
        let catalog = self.switch.catalog();
        let Some(config) = catalog.config.service(service) else {
            return; // removed meanwhile
        };
        let Some((_, current)) = self.switch.service(service).await else {
            return;
        };
        let mut running = self.running();
        if needs_task(&current.service) && !running.drivers.contains_key(service) {
            self.start_task(&mut running, config);
        }
    }

    /// The lifecycle events of every cutover (taken once, by the audit trail).
    pub fn events(&self) -> Option<mpsc::Receiver<super::Event>> {
        self.audit_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The count of lifecycle events dropped because the audit trail fell behind.
    pub fn events_lost(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.audit_lost.clone()
    }

    /// Runs `action` on `service`, asked by `origin`, and returns what happened.
    pub async fn command(
        &self,
        service: &str,
        action: Action,
        origin: Origin,
    ) -> Result<Done, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.with_handle(service, |handle| {
            handle.commands.try_send((action, origin, reply)).map_err(|_| {
                Refusal::new(
                    RefusalKind::Busy,
                    format!(
                        "too many commands queued for {service} (limit {COMMAND_QUEUE}); try again"
                    ),
                )
            })
        })??;
        answer.await.map_err(|_| {
            if self.shutdown.is_cancelled() || self.switch.catalog().config.service(service).is_none() {
                Refusal::new(
                    RefusalKind::ShuttingDown,
                    "the server is shutting down, or the service was removed; a scheduled cutover resumes when it starts again",
                )
            } else {
                Refusal::new(
                    RefusalKind::Busy,
                    format!(
                        "the cutover task of {service} failed before it replied (a bug, in the log); whether the change was made is in `flipdns ctl status {service}`; try again"
                    ),
                )
            }
        })?
    }

    /// A secondary gave a normal-TTL answer of `service` (its dnstap stream says) that
    /// expires after the drain deadline it is preparing for: the service's task (started if
    /// it has none) writes the later deadline at once, so that a restart keeps it (I1).
    pub fn answered_long(&self, service: &str) {
        let _ = self.with_handle(service, |handle| handle.shared.nudge.notify_one());
    }

    /// While `service`'s pending flip waits for the secondaries after its drain: when the
    /// wait runs out and the flip is refused (Unix ms). No task is started to answer.
    pub fn fleet_wait_until_ms(&self, service: &str) -> Option<u64> {
        let running = self.running();
        let handle = running.drivers.get(service)?;
        let until = handle
            .shared
            .fleet_wait_until_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        (until > 0).then_some(until)
    }

    /// Progress events of `service`'s cutovers from now on. Subscribe before sending the
    /// command whose progress you want, so that none is missed.
    pub fn subscribe(&self, service: &str) -> Result<broadcast::Receiver<Progress>, Refusal> {
        self.with_handle(service, |handle| {
            handle
                .shared
                .events
                .get_or_init(|| broadcast::channel(EVENT_BUFFER).0)
                .subscribe()
        })
    }

    /// Runs `f` on `service`'s task, started if it has none.
    fn with_handle<T>(&self, service: &str, f: impl FnOnce(&Handle) -> T) -> Result<T, Refusal> {
        let mut running = self.running();
        // A task that panicked is gone until its supervisor replaces it; a command need
        // not wait for that.
        if running
            .drivers
            .get(service)
            .is_some_and(|h| h.commands.is_closed())
        {
            running.drivers.remove(service);
        }
        if !running.drivers.contains_key(service) {
            let catalog = self.switch.catalog();
            let started = match catalog.config.service(service) {
                Some(config) => self.start_task(&mut running, config),
                None => false,
            };
            if !started {
                let mut known: Vec<&str> = catalog
                    .config
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                known.sort_unstable();
                return Err(Refusal::new(
                    RefusalKind::UnknownService,
                    format!(
                        "unknown service {service:?} (configured: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(f(&running.drivers[service]))
    }

    /// The registry, even if a holder panicked: it only holds channel ends.
    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a task that panicked said (tasks here are never aborted).
fn panic_message(failure: tokio::task::JoinError) -> String {
    let Ok(panic) = failure.try_into_panic() else {
        return "cancelled".into();
    };
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "no message".into(),
    }
}

/// Whether a service in `state` has something to wait for: a deadline, a pending flip, or
/// secondaries to confirm.
pub(super) fn needs_task(state: &ServiceState) -> bool {
    matches!(
        state.phase,
        Phase::Preparing {
            target: Some(_),
            ..
        } | Phase::Settling { .. }
    ) || state.pending().is_some()
        || state.fleet.is_some()
        || state.awaiting.is_some()
}

/// A service whose colors are checked in the background.
struct Watched<'a> {
    config: &'a ServiceConfig,
    check: &'a HealthConfig,
    /// Where the results go.
    observed: &'a Observed,
    /// Where each color's addresses now are read (a runtime set may replace the config's).
    records: &'a Records,
}

/// Checks both colors of `service` every `interval` into what it has `observed`, until
/// `shutdown`.
async fn watch(gate: &dyn HealthGate, service: Watched<'_>, shutdown: CancellationToken) {
    let Watched {
        config,
        check,
        observed,
        records,
    } = service;
    loop {
        for color in Color::ALL {
            let addresses = match records.load().service(&config.name) {
                Some(view) => view.state.addresses(config, color).to_vec(),
                None => config.addresses(color).to_vec(),
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = gate.check(config, check, color, &addresses) => result,
            };
            observed.health.set(color, result);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(check.interval) => {}
        }
    }
}
