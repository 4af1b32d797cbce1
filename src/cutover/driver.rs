//! The task of one service: takes commands one at a time (so concurrent commands on a
//! service are serialized), wakes at its deadlines, and reports progress. What to do is
//! decided by [`super::rules`]; this file does it: health checks, state writes through the
//! switch, timers, events. The registry that starts and retires tasks is [`super::tasks`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rules::{self, Facts, Plan, Why};
use super::tasks::{Cutovers, Registry, Reply, Shared, needs_task};
use super::{
    Action, Done, Event, EventKind, HealthGate, Origin, Outcome, Progress, Refusal, RefusalKind,
    Step,
};
use crate::clock::{Clock, format_utc};
use crate::color::Color;
use crate::config::Approval;
use crate::config::ServiceConfig;
use crate::fleet::Fleet;
use crate::observed::{ColorHealth, FlipResult, Observed};
use crate::state::{
    AddressSet, AwaitedAction, Awaiting, ChangeRef, Phase, ServiceState, StateError,
};
use crate::switch::{ChangeError, Current, Switch};

/// What waits for approval when `action` needs it.
fn awaited(action: &Action) -> Option<AwaitedAction> {
    match *action {
        Action::Prepare => Some(AwaitedAction::Prepare),
        Action::Flip { to, now, force } => Some(AwaitedAction::Flip { to, now, force }),
        Action::Rollback { force } => Some(AwaitedAction::Rollback { force }),
        _ => None,
    }
}

impl From<AwaitedAction> for Action {
    fn from(action: AwaitedAction) -> Action {
        match action {
            AwaitedAction::Prepare => Action::Prepare,
            AwaitedAction::Flip { to, now, force } => Action::Flip { to, now, force },
            AwaitedAction::Rollback { force } => Action::Rollback { force },
        }
    }
}

/// `192.0.2.1 192.0.2.2`, for logs.
fn list(addresses: &[IpAddr]) -> String {
    let all: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    all.join(" ")
}

/// Pause before retrying a deadline whose state write failed.
const RETRY_AFTER_WRITE_ERROR: Duration = Duration::from_secs(1);

/// The task of one service.
pub(super) struct Driver {
    /// The service's config, refreshed from the switch at every step (a reload may change it).
    config: ServiceConfig,
    observed: Arc<Observed>,
    clock: Clock,
    gate: Arc<dyn HealthGate>,
    switch: Arc<Switch>,
    fleet: Arc<Fleet>,
    /// Where the task is registered, and its number there.
    registry: Registry,
    task: u64,
    /// Since when (monotonic) a drained flip waits for secondaries to confirm the short TTL.
    fleet_since: Option<u64>,
    /// Shared with the admin side: progress events, the nudge, the fleet wait's end.
    shared: Arc<Shared>,
    /// Id of the pending flip, for progress events.
    pending: Option<u64>,
    next_id: u64,
    /// Log lines of the step in progress, written once its reply has gone: nothing is
    /// logged between a change and its reply.
    notes: Vec<Box<dyn FnOnce() + Send + Sync>>,
    /// Who asked for the command being carried out (none on a deadline's own steps).
    origin: Option<Origin>,
    /// Where lifecycle events go, and how many were dropped.
    audit: mpsc::Sender<Event>,
    audit_lost: Arc<std::sync::atomic::AtomicU64>,
}

impl Driver {
    /// The task numbered `task` of the service `config`, wired to the registry's switch,
    /// fleet, clock and health gate.
    pub(super) fn new(
        tasks: &Cutovers,
        config: &ServiceConfig,
        observed: Arc<Observed>,
        task: u64,
        shared: Arc<Shared>,
    ) -> Driver {
        Driver {
            config: config.clone(),
            observed,
            clock: tasks.clock.clone(),
            gate: tasks.gate.clone(),
            switch: tasks.switch.clone(),
            fleet: tasks.fleet.clone(),
            registry: tasks.running.clone(),
            task,
            fleet_since: None,
            shared,
            pending: None,
            next_id: 1,
            notes: Vec::new(),
            origin: None,
            audit: tasks.audit.clone(),
            audit_lost: tasks.audit_lost.clone(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<(Action, Origin, Reply)>,
        shutdown: CancellationToken,
    ) {
        // The steps are boxed: inline, the largest of them (a flip with its health checks)
        // would size every idle task, one per service, at about 3 KB.
        let mut fleet_news = self.fleet.changes();
        loop {
            let Some((config, mut current)) =
                Box::pin(self.switch.service(&self.config.name)).await
            else {
                tracing::info!(service = %self.config.name, "removed from the config: its cutover task ends");
                return;
            };
            self.config = config;
            if current.service.pending().is_some() && self.pending.is_none() {
                self.pending = Some(self.new_id()); // resumed after a restart
            }
            match Box::pin(self.fleet_confirms(&current)).await {
                Ok(Some(now)) => current = now,
                Ok(None) => {}
                Err(e) => tracing::error!(service = %self.config.name, "{e}; retrying"),
            }
            match Box::pin(self.hold_later_drain(&current)).await {
                Ok(Some(now)) => current = now,
                Ok(None) => {}
                Err(e) => tracing::error!(service = %self.config.name, "{e}; retrying"),
            }
            match Box::pin(self.expire_awaiting(&current)).await {
                Ok(Some(now)) => current = now,
                Ok(None) => {}
                Err(e) => tracing::error!(service = %self.config.name, "{e}; retrying"),
            }
            self.log();
            if self.pending.is_none() && !needs_task(&current.service) && self.retire(&commands) {
                return;
            }
            let wake = self.wake_at(&current);
            let expiry = current
                .service
                .awaiting
                .as_ref()
                .map(|a| self.clock.mono_of(a.expires_ms));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.sleep_until(expiry) => {} // expired: dropped at the top of the loop
                changed = fleet_news.changed() => if changed.is_err() { return },
                _ = self.shared.nudge.notified() => {}
                command = commands.recv() => {
                    let Some((action, origin, reply)) = command else { return };
                    self.origin = Some(origin);
                    let _ = reply.send(Box::pin(self.act(action, &current)).await);
                    self.origin = None;
                    self.log();
                }
                _ = self.sleep_until(wake) => {
                    let woken = Box::pin(self.wake(&current)).await;
                    self.log();
                    if let Err(e) = woken {
                        tracing::error!(service = %self.config.name, "{e}; retrying");
                        tokio::time::sleep(RETRY_AFTER_WRITE_ERROR).await;
                    }
                }
            }
        }
    }

    /// Leaves the registry if no command is queued and nobody follows the progress; commands
    /// are queued under the registry's lock, so none can slip in between. The next command
    /// starts a new task.
    fn retire(&self, commands: &mpsc::Receiver<(Action, Origin, Reply)>) -> bool {
        let mut running = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let followed = self
            .shared
            .events
            .get()
            .is_some_and(|e| e.receiver_count() > 0);
        if !commands.is_empty() || followed {
            return false;
        }
        if running
            .drivers
            .get(&self.config.name)
            .is_some_and(|h| h.task == self.task)
        {
            running.drivers.remove(&self.config.name);
        }
        true
    }

    /// Logs `line` once the step in progress has replied.
    fn later(&mut self, line: impl FnOnce() + Send + Sync + 'static) {
        self.notes.push(Box::new(line));
    }

    fn log(&mut self) {
        for line in self.notes.drain(..) {
            line();
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// When the drain of a pending flip is complete, monotonic: the persisted deadline (as
    /// the switch holds it on the monotonic clock, so a wall-clock step cannot bring it
    /// closer) and every normal-TTL answer seen since, whichever is later.
    fn drained_mono(&self, current: &Current) -> u64 {
        let seen = self.observed.long_expiry_ms() + self.clock.coarse_resolution_ms();
        let held = current.deadline_mono.unwrap_or_else(|| {
            let wall = current.service.phase.drained_at_ms().unwrap_or(0);
            self.clock.mono_of(wall)
        });
        held.max(seen)
    }

    /// When every secondary serves the change the service waits for, writes what that
    /// proves (the drain counts from now, or the old color drains from now) and returns
    /// the state after it.
    async fn fleet_confirms(&mut self, current: &Current) -> Result<Option<Current>, Refusal> {
        let Some(wait) = current.service.fleet else {
            return Ok(None);
        };
        if !self.fleet.behind(&self.config.zone, wait.serial).is_empty() {
            return Ok(None);
        }
        let next = rules::fleet_confirmed(&self.facts(current), wait);
        let now = self.apply(|s| *s = next).await?;
        self.end_fleet_wait(); // the wait is over: the flip goes at the moved deadline
        let (name, serial) = (self.config.name.clone(), wait.serial);
        let until = match (wait.prepare_ttl, now.service.phase) {
            (Some(_), Phase::Preparing { drained_at_ms, .. }) => {
                format!("drained at {}", format_utc(drained_at_ms))
            }
            _ => {
                let old = now.service.live.other();
                let at = now.service.expires_ms[old.index()];
                format!("{old} drains at {}", format_utc(at))
            }
        };
        self.record(
            EventKind::FleetServes,
            now.service
                .change
                .clone()
                .or_else(|| current.service.change.clone()),
            format!("every secondary serves serial {serial}: {until}"),
        );
        self.later(move || tracing::info!(service = %name, serial, "every secondary serves the change: {until}"));
        Ok(Some(now))
    }

    /// While preparing, writes the drain deadline again when answers since have moved it
    /// (a secondary's normal-TTL answer, from its stream), so that a restart keeps it: the
    /// state after it, or `None` when nothing moved.
    async fn hold_later_drain(&mut self, current: &Current) -> Result<Option<Current>, Refusal> {
        let Phase::Preparing { target, .. } = current.service.phase else {
            return Ok(None);
        };
        let seen = self.observed.long_expiry_ms() + self.clock.coarse_resolution_ms();
        let held = current.deadline_mono.unwrap_or(0);
        if seen <= held {
            return Ok(None);
        }
        let phase = rules::extended(&self.facts(current), seen);
        let now = self.apply(|s| s.phase = phase).await?;
        let drained_at_ms = now.service.phase.drained_at_ms().unwrap_or_default();
        if let Some(target) = target {
            self.emit(Step::Draining {
                target,
                drained_at_ms,
                ttl: self.ttl(&now.service.phase),
            });
        }
        let name = self.config.name.clone();
        let at = format_utc(drained_at_ms);
        self.record(
            EventKind::DrainMoved,
            now.service.change.clone(),
            format!("a secondary's normal-TTL answer: drained at {at}"),
        );
        self.later(move || tracing::info!(service = %name, drained_at = %at, "a secondary's normal-TTL answer moves the drain"));
        Ok(Some(now))
    }

    /// The secondaries that keep a pending flip's drain from being proven (their short TTL
    /// is not confirmed), unless the flip is forced.
    fn unconfirmed(&self, current: &Current, force: bool) -> Option<(u32, Vec<String>)> {
        let wait = current
            .service
            .fleet
            .filter(|w| w.prepare_ttl.is_some() && !force)?;
        let behind = self.fleet.behind(&self.config.zone, wait.serial);
        (!behind.is_empty()).then(|| (wait.serial, behind.iter().map(|b| b.to_string()).collect()))
    }

    fn fleet_wait_ms(&self) -> u64 {
        self.switch.catalog().config.fleet.wait.as_millis() as u64
    }

    /// When the task must act next (monotonic): a pending flip at its drain (or when its
    /// wait for the secondaries runs out), or the end of a settle.
    fn wake_at(&self, current: &Current) -> Option<u64> {
        match current.service.phase {
            Phase::Preparing {
                target: Some(_), ..
            } => Some(match self.fleet_since {
                Some(since) => self.drained_mono(current).max(since + self.fleet_wait_ms()),
                None => self.drained_mono(current),
            }),
            Phase::Settling { until_ms, .. } => Some(
                current
                    .deadline_mono
                    .unwrap_or_else(|| self.clock.mono_of(until_ms)),
            ),
            _ => None,
        }
    }

    async fn sleep_until(&self, wake: Option<u64>) {
        match wake {
            Some(at) => {
                let left = at.saturating_sub(self.clock.mono_ms());
                tokio::time::sleep(Duration::from_millis(left)).await
            }
            None => std::future::pending().await,
        }
    }

    /// What the rules need. The normal-TTL expiry is everything known: what this process
    /// saw, what the state remembers of the live color (a `--now` flip's exposure, a TTL
    /// lowered by a reload), and, while preparing, the persisted drain deadline (it covers
    /// what a previous process gave), all on the monotonic clock.
    fn facts<'a>(&'a self, current: &'a Current) -> Facts<'a> {
        let clock = &self.clock;
        let mut seen = self.observed.long_expiry_ms() + clock.coarse_resolution_ms();
        let service = &current.service;
        if let Some(left) = service.expires_mono(service.live, clock.boot(), |w| clock.mono_of(w)) {
            seen = seen.max(left);
        }
        if let Phase::Preparing { .. } = service.phase {
            seen = seen.max(self.drained_mono(current));
        }
        Facts {
            config: &self.config,
            state: &current.service,
            now_ms: self.clock.now_ms(),
            now_mono: self.clock.mono_ms(),
            boot: self.clock.boot(),
            long_expiry_mono: seen,
        }
    }

    async fn act(&mut self, action: Action, current: &Current) -> Result<Done, Refusal> {
        match action {
            Action::Approve => return self.approve(current).await,
            Action::Cancel if current.service.awaiting.is_some() => {
                return self.withdraw().await;
            }
            _ => {}
        }
        let plan = rules::command(action.clone(), &self.facts(current));
        let asks_approval = self.config.approval == Approval::TwoPerson
            && matches!(
                plan,
                Plan::Prepare { .. } | Plan::Flip { why: Why::Now, .. }
            );
        if let (true, Some(awaited)) = (asks_approval, awaited(&action)) {
            return self.await_approval(awaited, current).await;
        }
        self.carry_out(plan, current).await
    }

    /// Carries out what the rules planned.
    async fn carry_out(&mut self, plan: Plan, current: &Current) -> Result<Done, Refusal> {
        match plan {
            Plan::Reply(outcome) => Ok(self.done(outcome, current, None)),
            Plan::Refuse(refusal) => Err(refusal),
            Plan::Prepare { target, force } => self.prepare(target, force, current).await,
            Plan::Flip { to, force, why } => self.flip(to, force, why, current).await,
            Plan::Cancel => self.cancel(current).await,
            Plan::SetAddresses {
                color,
                addresses,
                check,
            } => self.set_addresses(color, addresses, check, current).await,
        }
    }

    /// Keeps `action` waiting for a second principal's approval (the two-person rule): in the
    /// state file, so a restart keeps it, until approved, withdrawn or expired.
    async fn await_approval(
        &mut self,
        action: AwaitedAction,
        current: &Current,
    ) -> Result<Done, Refusal> {
        let Some(origin) = self.origin.clone() else {
            return Err(Refusal::new(
                RefusalKind::Approval,
                "a request needs a principal to wait for approval",
            ));
        };
        if let Some(waiting) = &current.service.awaiting {
            if waiting.who == origin.who && waiting.action == action {
                return Ok(self.done(Outcome::AwaitingApproval, current, None));
            }
            return Err(rules::awaiting_other(&self.facts(current), waiting));
        }
        let now = self.clock.now_ms();
        let waiting = Awaiting {
            action,
            by: origin.by.clone(),
            who: origin.who.clone(),
            change: origin.change,
            at_ms: now,
            expires_ms: now + self.config.approval_timeout.as_millis() as u64,
        };
        let after = self.apply(|s| s.awaiting = Some(Box::new(waiting))).await?;
        let (name, by) = (self.config.name.clone(), origin.by);
        self.later(move || tracing::info!(service = %name, %action, %by, "awaiting approval by another principal"));
        Ok(self.done(Outcome::AwaitingApproval, &after, None))
    }

    /// Carries out the request waiting for approval, as its requester's change, if the
    /// approver is someone else.
    async fn approve(&mut self, current: &Current) -> Result<Done, Refusal> {
        let Some(waiting) = current.service.awaiting.clone() else {
            return Err(Refusal::new(
                RefusalKind::Approval,
                format!(
                    "nothing of {} awaits approval; {}",
                    self.config.name,
                    rules::left_in(&self.config, &current.service)
                ),
            ));
        };
        let approver = self.origin.clone();
        if approver.as_ref().is_none_or(|a| a.who == waiting.who) {
            return Err(Refusal::new(
                RefusalKind::Approval,
                format!(
                    "{} of {} was asked by {}: another principal must approve it; it waits until {}",
                    waiting.action,
                    self.config.name,
                    waiting.by,
                    format_utc(waiting.expires_ms)
                ),
            ));
        }
        let after = self.apply(|s| s.awaiting = None).await?;
        // Carried out as the requester's change, so its events are audited under its id.
        self.origin = Some(Origin {
            change: waiting.change,
            by: waiting.by.clone(),
            who: waiting.who.clone(),
        });
        let plan = rules::command(waiting.action.into(), &self.facts(&after));
        let done = self.carry_out(plan, &after).await;
        self.origin = approver;
        done
    }

    /// Withdraws the request waiting for approval; a cutover in progress is cancelled too.
    async fn withdraw(&mut self) -> Result<Done, Refusal> {
        let after = self.apply(|s| s.awaiting = None).await?;
        match rules::command(Action::Cancel, &self.facts(&after)) {
            Plan::Cancel => self.cancel(&after).await,
            _ => Ok(self.done(Outcome::Cancelled, &after, None)),
        }
    }

    /// Drops a request whose approval did not come in time, and audits it.
    async fn expire_awaiting(&mut self, current: &Current) -> Result<Option<Current>, Refusal> {
        let Some(waiting) = current.service.awaiting.clone() else {
            return Ok(None);
        };
        if self.clock.now_ms() < waiting.expires_ms {
            return Ok(None);
        }
        let after = self.apply(|s| s.awaiting = None).await?;
        let change = Some(ChangeRef {
            id: waiting.change,
            by: waiting.by.clone(),
        });
        let detail = format!(
            "{} asked at {} was not approved by {}: dropped",
            waiting.action,
            format_utc(waiting.at_ms),
            format_utc(waiting.expires_ms)
        );
        self.record(EventKind::Expired, change, detail.clone());
        let name = self.config.name.clone();
        self.later(move || tracing::warn!(service = %name, "{detail}"));
        Ok(Some(after))
    }

    /// Replaces `color`'s addresses with `addresses` (the rules allowed it), after the
    /// health check of the new ones when `check`.
    async fn set_addresses(
        &mut self,
        color: Color,
        addresses: Vec<IpAddr>,
        check: bool,
        current: &Current,
    ) -> Result<Done, Refusal> {
        let mut health = None;
        if check {
            let Some(gate) = &self.config.health else {
                return Err(rules::no_health_check(&self.config));
            };
            let result = self.gate.check(&self.config, gate, color, &addresses).await;
            self.emit(Step::Health(result.clone()));
            if let Some(refusal) = rules::unhealthy_addresses(&self.facts(current), color, &result)
            {
                return Err(refusal);
            }
            health = Some(result);
        }
        let replaced = current.service.addresses(&self.config, color).to_vec();
        let set = AddressSet {
            addresses: addresses.clone(),
            by: self
                .origin
                .as_ref()
                .map_or_else(String::new, |o| o.by.clone()),
            at_ms: self.clock.now_ms(),
            config: self.config.addresses(color).to_vec(),
        };
        // The config's own list again: no runtime set, the config speaks.
        let set = (addresses != self.config.addresses(color)).then_some(set);
        // Not a cutover: a change in progress keeps its id (the set is audited on its own).
        let origin = self.origin.take();
        let after = self.apply(|s| s.set_runtime(color, set)).await;
        self.origin = origin;
        let after = after?;
        let (name, serial) = (self.config.name.clone(), after.serial);
        let (old, new) = (list(&replaced), list(&addresses));
        self.later(move || tracing::info!(service = %name, %color, serial, "addresses set: {old} -> {new}"));
        let mut done = self.done(Outcome::AddressesSet, &after, health);
        done.replaced = Some(replaced);
        Ok(done)
    }

    /// Enters (or stays in) `preparing`: writes the drain deadline, which publishes the
    /// short TTL, then confirms the deadline with every normal-TTL answer that went out
    /// before the publish.
    async fn prepare(
        &mut self,
        target: Option<Color>,
        force: bool,
        current: &Current,
    ) -> Result<Done, Refusal> {
        if target.is_some() {
            self.pending = Some(self.new_id());
        }
        let phase = rules::preparing(&self.facts(current), target, force);
        let mut now = self
            .apply(|s| s.phase = phase)
            .await
            .inspect_err(|_| self.pending = None)?;
        if let Phase::Preparing {
            confirmed: false, ..
        } = now.service.phase
        {
            let phase = rules::confirmed(&self.facts(&now));
            now = self.apply(|s| s.phase = phase).await?;
        }
        let drained_at = now
            .service
            .phase
            .drained_at_ms()
            .map_or("-".into(), format_utc);
        let outcome = match target {
            Some(to) => {
                let name = self.config.name.clone();
                self.later(
                    move || tracing::info!(service = %name, %to, %drained_at, "flip scheduled"),
                );
                Outcome::Scheduled
            }
            None => {
                let (name, ttl) = (self.config.name.clone(), self.config.cutover_ttl);
                self.later(move || tracing::info!(service = %name, ttl, %drained_at, "preparing"));
                Outcome::Prepared
            }
        };
        Ok(self.done(outcome, &now, None))
    }

    /// A deadline arrived: flip a pending cutover whose caches have drained, or end a settle.
    async fn wake(&mut self, current: &Current) -> Result<(), Refusal> {
        match current.service.phase {
            Phase::Preparing {
                target: Some(to),
                force,
                ..
            } => {
                let drained = self.drained_mono(current);
                if self.clock.mono_ms() < drained {
                    // A normal-TTL answer left after the deadline was set (a query in flight
                    // during the switch to the short TTL): wait for it too, and say so.
                    let phase = rules::extended(&self.facts(current), drained);
                    let now = self.apply(|s| s.phase = phase).await?;
                    self.emit(Step::Draining {
                        target: to,
                        drained_at_ms: now.service.phase.drained_at_ms().unwrap_or_default(),
                        ttl: self.ttl(&now.service.phase),
                    });
                    return Ok(());
                }
                if let Some((serial, behind)) = self.unconfirmed(current, force) {
                    let now = self.clock.mono_ms();
                    let since = *self.fleet_since.get_or_insert(now);
                    let waited = Duration::from_millis(self.fleet_wait_ms());
                    let until = since + waited.as_millis() as u64;
                    if now < until {
                        // Woken at the start of the wait, or by the fleet: who is behind now.
                        let until_ms = self.clock.now_ms() + (until - now);
                        self.shared.fleet_wait_until_ms.store(until_ms, Relaxed);
                        self.emit(Step::Secondaries {
                            serial,
                            behind,
                            until_ms,
                        });
                        return Ok(()); // woken again by the fleet, or when the wait runs out
                    }
                    self.end_fleet_wait();
                    let refusal =
                        rules::fleet_refusal(&self.facts(current), to, serial, &behind, waited);
                    let refused = self.refuse(refusal, current).await;
                    return self.recorded(refused, current);
                }
                self.end_fleet_wait();
                let flipped = self.flip(to, force, Why::Drained, current).await;
                self.recorded(flipped, current)
            }
            Phase::Settling { until_ms, .. } => {
                let until = current
                    .deadline_mono
                    .unwrap_or_else(|| self.clock.mono_of(until_ms));
                if self.clock.mono_ms() < until {
                    return Ok(()); // woken early: wait again
                }
                self.apply(|s| s.phase = Phase::Steady).await?;
                self.record(
                    EventKind::Settled,
                    current.service.change.clone(),
                    format!(
                        "{} live, back to the normal TTL {} s",
                        current.service.live, self.config.ttl
                    ),
                );
                let (name, ttl) = (self.config.name.clone(), self.config.ttl);
                self.later(
                    move || tracing::info!(service = %name, ttl, "settled: back to the normal TTL"),
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Records what a deadline's flip came to, and passes on a refusal to write (retried).
    fn recorded(&self, result: Result<Done, Refusal>, current: &Current) -> Result<(), Refusal> {
        match result {
            Ok(done) => {
                let from = done.from.unwrap_or(done.state.live.other());
                let detail = format!(
                    "{from} -> {} at the drain deadline, serial {}",
                    done.state.live, done.serial
                );
                self.record(EventKind::Flipped, done.state.change.clone(), detail);
                Ok(())
            }
            Err(refusal) => {
                let change = current.service.change.clone();
                self.record(EventKind::Refused, change, refusal.message.clone());
                if refusal.is_write_failure() {
                    Err(refusal)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Flips to `to` now, behind the health gate and the flip interval unless `force`.
    async fn flip(
        &mut self,
        to: Color,
        force: bool,
        why: Why,
        current: &Current,
    ) -> Result<Done, Refusal> {
        let from = current.service.live;
        let mut health = None;
        if let (false, Some(check)) = (force, &self.config.health) {
            let addresses = current.service.addresses(&self.config, to);
            let result = self.gate.check(&self.config, check, to, addresses).await;
            self.emit(Step::Health(result.clone()));
            health = Some(result);
        }
        if let Err(refusal) = rules::gate(&self.facts(current), to, force, why, health.as_ref()) {
            return self.refuse(refusal, current).await;
        }
        let next = rules::flipped(&self.facts(current), to);
        let name = self.config.name.clone();
        let after = match self.apply(|s| *s = next).await {
            Ok(after) => after,
            Err(e) => {
                let refusal = Refusal::new(
                    e.kind,
                    format!(
                        "flip of {name} to {to} {}; {}",
                        e.message,
                        rules::left_in(&self.config, &current.service)
                    ),
                );
                self.emit(Step::Refused(refusal.clone()));
                return Err(refusal);
            }
        };
        self.observed.flipped(FlipResult::Done);
        let settle_until = match after.service.phase {
            Phase::Settling { until_ms, .. } => format_utc(until_ms),
            _ => "-".into(),
        };
        let (flips, serial) = (after.service.flips.0, after.serial);
        let logged = name.clone();
        self.later(move || tracing::info!(service = %logged, %from, %to, flips, serial, %settle_until, "flipped"));
        let mut done = self.done(Outcome::Flipped, &after, health);
        done.from = Some(from);
        done.cutover = self.pending;
        self.emit(Step::Flipped(Box::new(done.clone())));
        self.pending = None;
        Ok(done)
    }

    /// Refuses a flip: the color stays, a pending target is dropped, the phase stays; the
    /// refusal says so and how to get the normal TTL back.
    async fn refuse(&mut self, refusal: Refusal, current: &Current) -> Result<Done, Refusal> {
        self.observed.flipped(match refusal.kind {
            RefusalKind::Interval => FlipResult::RefusedInterval,
            RefusalKind::SecondariesBehind => FlipResult::RefusedSecondaries,
            _ => FlipResult::RefusedUnhealthy,
        });
        let left = match self.apply(|s| s.phase = rules::refused(s.phase)).await {
            Ok(after) => rules::left_in(&self.config, &after.service),
            Err(e) => format!(
                "{}; and the pending flip could not be dropped: {}",
                rules::left_in(&self.config, &current.service),
                e.message
            ),
        };
        let refusal = Refusal::new(refusal.kind, format!("{}; {left}", refusal.message));
        let (name, message) = (self.config.name.clone(), refusal.message.clone());
        self.later(move || tracing::warn!(service = %name, "{message}"));
        self.emit(Step::Refused(refusal.clone()));
        self.pending = None;
        Err(refusal)
    }

    async fn cancel(&mut self, current: &Current) -> Result<Done, Refusal> {
        self.end_fleet_wait();
        let now = self.apply(|s| s.phase = Phase::Steady).await?;
        if let Some(target) = current.service.pending() {
            self.observed.flipped(FlipResult::Cancelled);
            self.emit(Step::Cancelled);
            self.pending = None;
            let name = self.config.name.clone();
            self.later(move || tracing::info!(service = %name, %target, "pending flip cancelled: back to the normal TTL"));
        } else {
            let name = self.config.name.clone();
            self.later(move || tracing::info!(service = %name, "cutover ended early: back to the normal TTL"));
        }
        Ok(self.done(Outcome::Cancelled, &now, None))
    }

    /// Makes `change` through the switch. A refusal says "not done", or, when the failed
    /// write could not be undone, that the disk may hold the change.
    async fn apply(&self, change: impl FnOnce(&mut ServiceState)) -> Result<Current, Refusal> {
        let origin = self.origin.clone();
        let change = move |s: &mut ServiceState| {
            let began = !matches!(s.phase, Phase::Preparing { .. });
            change(s);
            // A change lasts until the service is steady and the fleet serves it.
            let steady = matches!(s.phase, Phase::Steady) && s.fleet.is_none();
            s.change = match (steady, origin) {
                (true, _) => None,
                // A command that begins a cutover begins a change; one that joins a
                // cutover in progress (a flip while preparing) is part of its change.
                (false, Some(o)) if began || s.change.is_none() => Some(ChangeRef {
                    id: o.change,
                    by: o.by,
                }),
                (false, _) => s.change.take(),
            };
        };
        self.switch
            .apply(&self.config.name, change)
            .await
            .map_err(|e| match e {
                ChangeError::State(e @ StateError::Uncertain { .. }) => Refusal::new(
                    RefusalKind::Uncertain,
                    format!(
                        "may be on disk or not: {e}; the answers do not carry it, and a restart before the repair may serve it (`flipdns ctl status` says when the state is certain again)"
                    ),
                ),
                e => Refusal::new(RefusalKind::NotWritten, format!("not done: {e}")),
            })
    }

    /// The wait for the secondaries is over (or never began).
    fn end_fleet_wait(&mut self) {
        self.fleet_since = None;
        self.shared.fleet_wait_until_ms.store(0, Relaxed);
    }

    /// Sends a lifecycle event of the service's change to the audit trail; never waits.
    fn record(&self, kind: EventKind, change: Option<ChangeRef>, detail: String) {
        let event = Event {
            service: self.config.name.clone(),
            change,
            at_ms: self.clock.now_ms(),
            kind,
            detail,
        };
        if self.audit.try_send(event).is_err() {
            self.audit_lost.fetch_add(1, Relaxed);
        }
    }

    fn emit(&self, step: Step) {
        if let (Some(cutover), Some(events)) = (self.pending, self.shared.events.get()) {
            let _ = events.send(Progress {
                service: self.config.name.clone(),
                cutover,
                step,
            });
        }
    }

    fn ttl(&self, phase: &Phase) -> u32 {
        phase.ttl(self.config.ttl, self.config.cutover_ttl)
    }

    fn done(&self, outcome: Outcome, current: &Current, health: Option<ColorHealth>) -> Done {
        Done {
            service: self.config.name.clone(),
            outcome,
            state: current.service.clone(),
            ttl: self.ttl(&current.service.phase),
            serial: current.serial,
            from: None,
            cutover: self.pending.filter(|_| current.service.pending().is_some()),
            health,
            replaced: None,
        }
    }
}
