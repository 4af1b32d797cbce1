//! One task per service that runs its cutover: takes commands one at a time (so concurrent
//! commands on a service are serialized), wakes at its deadlines, and reports progress.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Done, Outcome, Progress, Refusal, RefusalKind, Step, drain_deadline, wake_at};
use crate::clock::{Clock, format_utc};
use crate::color::Color;
use crate::config::ServiceConfig;
use crate::health;
use crate::observed::{ColorHealth, FlipResult, Observed};
use crate::state::{FlipCount, Phase};
use crate::switch::{Current, Switch};

/// Commands queued per service before new ones are turned away.
const COMMAND_QUEUE: usize = 16;
/// Progress events buffered per service for slow followers (they skip, never block).
const EVENT_BUFFER: usize = 64;
/// Added to a new drain deadline: covers normal-TTL answers given between reading the clock
/// and publishing the short TTL (a state write and its fsync). Answers later than that
/// extend the deadline anyway; this covers a crash before the extension is written.
const PUBLISH_MARGIN_MS: u64 = 500;
/// Pause before retrying a deadline whose state write failed.
const RETRY_AFTER_WRITE_ERROR: Duration = Duration::from_secs(1);

/// What an operator asks of a service's cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Prepare,
    Flip { to: Color, now: bool, force: bool },
    Rollback { force: bool },
    Cancel,
}

type Reply = oneshot::Sender<Result<Done, Refusal>>;

/// The cutover tasks of all services, by service name.
pub struct Cutovers {
    switch: Arc<Switch>,
    clock: Clock,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    running: std::sync::Mutex<Running>,
}

#[derive(Default)]
struct Running {
    drivers: HashMap<String, Handle>,
    /// Background health checks, by service; cancelled and restarted on every sync.
    watchers: HashMap<String, CancellationToken>,
}

struct Handle {
    commands: mpsc::Sender<(Action, Reply)>,
    events: broadcast::Sender<Progress>,
}

impl Cutovers {
    /// Starts one task per service (and its background health checks) on `tracker`.
    pub fn start(
        switch: Arc<Switch>,
        clock: Clock,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Cutovers {
        let cutovers = Cutovers {
            switch,
            clock,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            running: Default::default(),
        };
        cutovers.sync();
        cutovers
    }

    /// Matches the tasks to the services served now: starts what a reload added, lets the
    /// tasks of removed services end, and restarts health checks with their new settings.
    pub fn sync(&self) {
        let catalog = self.switch.catalog();
        let mut running = self.running();
        running
            .drivers
            .retain(|name, _| catalog.config.service(name).is_some());
        for token in running.watchers.drain().map(|(_, token)| token) {
            token.cancel();
        }
        for config in &catalog.config.services {
            if !running.drivers.contains_key(&config.name) {
                let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
                let (events, _) = broadcast::channel(EVENT_BUFFER);
                let Some(observed) = self.switch.observed(&config.name) else {
                    continue;
                };
                let driver = Driver {
                    config: config.clone(),
                    observed,
                    clock: self.clock.clone(),
                    switch: self.switch.clone(),
                    events: events.clone(),
                    pending: None,
                    next_id: 1,
                };
                self.tracker
                    .spawn(driver.run(receiver, self.shutdown.clone()));
                running
                    .drivers
                    .insert(config.name.clone(), Handle { commands, events });
            }
            if let (Some(check), Some(observed)) =
                (&config.health, self.switch.observed(&config.name))
            {
                let token = self.shutdown.child_token();
                running.watchers.insert(config.name.clone(), token.clone());
                let (config, check, clock) = (config.clone(), check.clone(), self.clock.clone());
                self.tracker.spawn(async move {
                    health::watch(config, check, observed, clock, token).await
                });
            }
        }
    }

    /// Runs `action` on `service` and returns what happened.
    pub async fn command(&self, service: &str, action: Action) -> Result<Done, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.with_handle(service, |handle| {
            handle.commands.try_send((action, reply)).map_err(|_| {
                Refusal::new(
                    RefusalKind::Busy,
                    format!(
                        "too many commands queued for {service} (limit {COMMAND_QUEUE}); try again"
                    ),
                )
            })
        })??;
        answer.await.map_err(|_| {
            Refusal::new(
                RefusalKind::ShuttingDown,
                "the server is shutting down, or the service was removed",
            )
        })?
    }

    /// Progress events of `service`'s cutovers from now on. Subscribe before sending the
    /// command whose progress you want, so that none is missed.
    pub fn subscribe(&self, service: &str) -> Result<broadcast::Receiver<Progress>, Refusal> {
        self.with_handle(service, |handle| handle.events.subscribe())
    }

    fn with_handle<T>(&self, service: &str, f: impl FnOnce(&Handle) -> T) -> Result<T, Refusal> {
        let running = self.running();
        match running.drivers.get(service) {
            Some(handle) => Ok(f(handle)),
            None => {
                let mut known: Vec<&str> = running.drivers.keys().map(String::as_str).collect();
                known.sort_unstable();
                Err(Refusal::new(
                    RefusalKind::UnknownService,
                    format!(
                        "unknown service {service:?} (configured: {})",
                        known.join(", ")
                    ),
                ))
            }
        }
    }

    /// The registry, even if a holder panicked: it only holds channel ends.
    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The task of one service.
struct Driver {
    /// The service's config, refreshed from the switch at every step (a reload may change it).
    config: ServiceConfig,
    observed: Arc<Observed>,
    clock: Clock,
    switch: Arc<Switch>,
    events: broadcast::Sender<Progress>,
    /// Id of the pending flip, for progress events.
    pending: Option<u64>,
    next_id: u64,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<(Action, Reply)>,
        shutdown: CancellationToken,
    ) {
        loop {
            let Some((config, current)) = self.switch.service(&self.config.name).await else {
                tracing::info!(service = %self.config.name, "removed from the config: its cutover task ends");
                return;
            };
            self.config = config;
            if matches!(
                current.service.phase,
                Phase::Preparing {
                    target: Some(_),
                    ..
                }
            ) && self.pending.is_none()
            {
                self.pending = Some(self.new_id()); // resumed after a restart
            }
            let wake = wake_at(&current.service.phase);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                command = commands.recv() => {
                    let Some((action, reply)) = command else { return };
                    let _ = reply.send(self.act(action, &current).await);
                }
                _ = sleep_until(&self.clock, wake) => {
                    if let Err(e) = self.wake(&current).await {
                        tracing::error!(service = %self.config.name, "{e}; retrying");
                        tokio::time::sleep(RETRY_AFTER_WRITE_ERROR).await;
                    }
                }
            }
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    async fn act(&mut self, action: Action, current: &Current) -> Result<Done, Refusal> {
        let live = current.service.live;
        let pending = match current.service.phase {
            Phase::Preparing {
                target: Some(target),
                drained_at_ms,
                ..
            } => Some((target, drained_at_ms)),
            _ => None,
        };
        match action {
            Action::Prepare => match current.service.phase {
                Phase::Preparing { .. } => Ok(self.reply(Outcome::Prepared, current, None)),
                _ => {
                    let now = self.prepare(None, false, current).await?;
                    Ok(self.reply(Outcome::Prepared, &now, None))
                }
            },
            Action::Flip { to, now, force } => match pending {
                Some((target, drained_at_ms)) if target != to => {
                    Err(self.busy(target, drained_at_ms))
                }
                Some(_) if now => self.flip(to, force, current).await,
                Some(_) => Ok(self.reply(Outcome::Joined, current, None)),
                None if to == live => Ok(self.reply(Outcome::AlreadyLive, current, None)),
                None if now => self.flip(to, force, current).await,
                None => self.schedule(to, force, current).await,
            },
            Action::Rollback { force } => match (pending, current.service.phase) {
                (Some((target, drained_at_ms)), _) => Err(self.busy(target, drained_at_ms)),
                // Settling: caches hold only short-TTL answers, so going back needs no wait.
                (None, Phase::Settling { .. }) => self.flip(live.other(), force, current).await,
                (None, _) => self.schedule(live.other(), force, current).await,
            },
            Action::Cancel => {
                if current.service.phase == Phase::Steady {
                    return Ok(self.reply(Outcome::NothingToCancel, current, None));
                }
                let now = self.apply(|s| s.phase = Phase::Steady).await?;
                if let Some((target, _)) = pending {
                    self.observed.flipped(FlipResult::Cancelled);
                    self.emit(Step::Cancelled);
                    self.pending = None;
                    tracing::info!(service = %self.config.name, %target, "pending flip cancelled: back to the normal TTL");
                } else {
                    tracing::info!(service = %self.config.name, "cutover ended early: back to the normal TTL");
                }
                Ok(self.reply(Outcome::Cancelled, &now, None))
            }
        }
    }

    /// Schedules a flip to `to` at the drain deadline.
    async fn schedule(
        &mut self,
        to: Color,
        force: bool,
        current: &Current,
    ) -> Result<Done, Refusal> {
        self.pending = Some(self.new_id());
        let now = self
            .prepare(Some(to), force, current)
            .await
            .inspect_err(|_| self.pending = None)?;
        tracing::info!(service = %self.config.name, %to, drained_at = %self.drained_at(&now), "flip scheduled");
        Ok(self.reply(Outcome::Scheduled, &now, None))
    }

    fn busy(&self, target: Color, drained_at_ms: u64) -> Refusal {
        let name = &self.config.name;
        Refusal::new(
            RefusalKind::Busy,
            format!(
                "a cutover of {name} to {target} is pending (drains at {}); cancel it first with `flipdns ctl cancel {name}`",
                format_utc(drained_at_ms)
            ),
        )
    }

    /// Enters `preparing`: persists the drain deadline, then publishes the short TTL, then
    /// extends the deadline if a normal-TTL answer went out after the estimate.
    async fn prepare(
        &mut self,
        target: Option<Color>,
        force: bool,
        current: &Current,
    ) -> Result<Current, Refusal> {
        let since_ms = self.clock.now_ms();
        let mut drained_at_ms = drain_deadline(&self.config, &self.observed, &self.clock);
        if current.service.phase.is_long() {
            // Normal-TTL answers go out until the short TTL is published, after this write.
            drained_at_ms = drained_at_ms.max(
                since_ms
                    + u64::from(self.config.ttl) * 1000
                    + self.clock.coarse_resolution_ms()
                    + PUBLISH_MARGIN_MS,
            );
        }
        let mut now = self
            .apply(|s| {
                s.phase = Phase::Preparing {
                    since_ms,
                    drained_at_ms,
                    target,
                    force,
                }
            })
            .await?;
        let late = drain_deadline(&self.config, &self.observed, &self.clock);
        if late > drained_at_ms {
            now = self.extend(late).await?;
        }
        tracing::info!(service = %self.config.name, ttl = self.config.cutover_ttl, drained_at = %self.drained_at(&now), "preparing");
        Ok(now)
    }

    async fn extend(&mut self, drained_at: u64) -> Result<Current, Refusal> {
        self.apply(|s| {
            if let Phase::Preparing { drained_at_ms, .. } = &mut s.phase {
                *drained_at_ms = drained_at;
            }
        })
        .await
    }

    /// A deadline arrived: flip a pending cutover whose caches have drained, or end a settle.
    async fn wake(&mut self, current: &Current) -> Result<(), Refusal> {
        match current.service.phase {
            Phase::Preparing {
                target: Some(to),
                drained_at_ms,
                force,
                ..
            } => {
                let late = drain_deadline(&self.config, &self.observed, &self.clock);
                if late > drained_at_ms {
                    // A normal-TTL answer left after the deadline was set (a query in flight
                    // during the switch to the short TTL): wait for it too.
                    let now = self.extend(late).await?;
                    self.emit(Step::Draining {
                        target: to,
                        drained_at_ms: late,
                        ttl: self.ttl(&now.service.phase),
                    });
                    return Ok(());
                }
                if let Err(e) = self.flip(to, force, current).await {
                    let still = self.switch.service(&self.config.name).await;
                    if let Some((_, still)) = still
                        && matches!(
                            still.service.phase,
                            Phase::Preparing {
                                target: Some(_),
                                ..
                            }
                        )
                    {
                        return Err(e); // not refused but failed (the state write): retry later
                    }
                }
                Ok(())
            }
            Phase::Settling { .. } => {
                self.apply(|s| s.phase = Phase::Steady).await?;
                tracing::info!(service = %self.config.name, ttl = self.config.ttl, "settled: back to the normal TTL");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Flips to `to` now, behind the health gate and the flip interval unless `force`.
    async fn flip(&mut self, to: Color, force: bool, current: &Current) -> Result<Done, Refusal> {
        let name = self.config.name.clone();
        let from = current.service.live;
        let mut gate = None;
        if let (false, Some(check)) = (force, &self.config.health) {
            let result = health::check_color(&self.config, check, to, &self.clock).await;
            self.emit(Step::Health(result.clone()));
            if !result.all_healthy() {
                let reason = format!(
                    "flip of {name} to {to} refused: unhealthy {}; still {from}",
                    result.failing()
                );
                return self.refuse(reason, FlipResult::RefusedUnhealthy).await;
            }
            gate = Some(result);
        }
        let now_ms = self.clock.now_ms();
        if let (false, Some(last)) = (force, current.service.flipped_at_ms) {
            let allowed = last + self.config.min_flip_interval.as_millis() as u64;
            if now_ms < allowed {
                let reason = format!(
                    "flip of {name} to {to} refused: the last flip was {} s ago and min_flip_interval is {} s (allowed from {}); still {from}",
                    (now_ms - last) / 1000,
                    self.config.min_flip_interval.as_secs(),
                    format_utc(allowed)
                );
                return self.refuse(reason, FlipResult::RefusedInterval).await;
            }
        }
        let until_ms = now_ms + self.config.settle.as_millis() as u64;
        let after = self
            .apply(|s| {
                s.live = to;
                s.flips = FlipCount(s.flips.0 + 1);
                s.flipped_at_ms = Some(now_ms);
                s.phase = Phase::Settling { until_ms };
            })
            .await
            .map_err(|e| {
                Refusal::new(
                    RefusalKind::NotWritten,
                    format!("flip of {name} to {to} not done, still {from}: {e}"),
                )
            })
            .inspect_err(|e| self.emit(Step::Refused(e.clone())))?;
        self.observed.flipped(FlipResult::Done);
        tracing::info!(service = %name, %from, %to, flips = %after.service.flips, serial = after.serial, settle_until = %format_utc(until_ms), "flipped");
        let mut reply = self.reply(Outcome::Flipped, &after, gate);
        reply.from = Some(from);
        self.emit(Step::Flipped(Box::new(reply.clone())));
        self.pending = None;
        Ok(reply)
    }

    /// Refuses a flip: the color stays, a pending target is dropped, the phase stays.
    async fn refuse(&mut self, reason: String, result: FlipResult) -> Result<Done, Refusal> {
        self.observed.flipped(result);
        tracing::warn!(service = %self.config.name, "{reason}");
        let dropped = self
            .apply(|s| {
                if let Phase::Preparing { target, .. } = &mut s.phase {
                    *target = None;
                }
            })
            .await;
        let reason = match dropped {
            Ok(_) => reason,
            Err(e) => format!("{reason}; and {e}"),
        };
        let kind = match result {
            FlipResult::RefusedInterval => RefusalKind::Interval,
            _ => RefusalKind::Unhealthy,
        };
        let refusal = Refusal::new(kind, reason);
        self.emit(Step::Refused(refusal.clone()));
        self.pending = None;
        Err(refusal)
    }

    async fn apply(
        &self,
        change: impl FnOnce(&mut crate::state::ServiceState),
    ) -> Result<Current, Refusal> {
        self.switch
            .apply(&self.config.name, change)
            .await
            .map_err(|e| Refusal::new(RefusalKind::NotWritten, format!("not done: {e}")))
    }

    fn emit(&self, step: Step) {
        if let Some(cutover) = self.pending {
            let _ = self.events.send(Progress {
                service: self.config.name.clone(),
                cutover,
                step,
            });
        }
    }

    fn drained_at(&self, current: &Current) -> String {
        match current.service.phase {
            Phase::Preparing { drained_at_ms, .. } => format_utc(drained_at_ms),
            _ => "-".into(),
        }
    }

    fn ttl(&self, phase: &Phase) -> u32 {
        phase.ttl(self.config.ttl, self.config.cutover_ttl)
    }

    fn reply(&self, outcome: Outcome, current: &Current, health: Option<ColorHealth>) -> Done {
        Done {
            service: self.config.name.clone(),
            outcome,
            state: current.service.clone(),
            ttl: self.ttl(&current.service.phase),
            serial: current.serial,
            from: None,
            cutover: self
                .pending
                .filter(|_| current.service.phase.target().is_some()),
            health,
        }
    }
}

/// Sleeps until the Unix millisecond `deadline`, or forever without one.
async fn sleep_until(clock: &Clock, deadline: Option<u64>) {
    match deadline {
        Some(deadline) => tokio::time::sleep(clock.until(deadline)).await,
        None => std::future::pending().await,
    }
}
