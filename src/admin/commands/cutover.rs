//! `prepare`, `flip`, `rollback` and `cancel`: sent to the service's cutover task; a flip
//! that waits streams progress lines until it is done.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::broadcast;

use super::{Context, Peer, awaiting, health, phase, send};
use crate::cutover::{self, Action, Done, Refusal, RefusalKind};
use crate::fleet::follow;
use crate::protocol::{
    Converged, Cutover, Error, ErrorKind, FleetConvergence, Outcome, Progress, Reply, Request,
    Response, Step,
};

/// How often a waiting client hears from the server, at least.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub async fn run<W: AsyncWrite + Unpin>(
    context: &Context,
    peer: &Peer,
    request: Request,
    out: &mut W,
) -> io::Result<()> {
    let asked = request.clone();
    let (service, action, wait, wait_secondaries) = match request {
        Request::Prepare { service } => (service, Action::Prepare, false, false),
        Request::Flip {
            service,
            to,
            now,
            force,
            wait,
            wait_secondaries,
        } => (
            service,
            Action::Flip { to, now, force },
            wait,
            wait_secondaries,
        ),
        Request::Rollback {
            service,
            force,
            wait,
            wait_secondaries,
        } => (service, Action::Rollback { force }, wait, wait_secondaries),
        Request::Cancel { service } => (service, Action::Cancel, false, false),
        Request::Approve { service, wait } => (service, Action::Approve, wait, true),
        Request::Follow { service } => (service, Action::Follow, true, true),
        _ => unreachable!("dispatch sends only cutover commands here"),
    };
    // Following changes nothing: not audited.
    let audited = !matches!(asked, Request::Follow { .. });
    // Subscribe before the command runs, so no progress of its cutover is missed.
    let events = context.cutovers.subscribe(&service);
    // The change in progress, if any: what a cancel or a refusal is about.
    let before = context.switch.service(&service).await;
    let before = before.and_then(|(_, current)| current.service.change);
    let origin = peer.origin(context);
    let asked_change = origin.change;
    let result = context.cutovers.command(&service, action, origin).await;
    match &result {
        _ if !audited => {}
        Ok(done) if done.outcome == cutover::Outcome::AwaitingApproval => {
            let waiting = done.state.awaiting.as_ref();
            let change = waiting.map_or(asked_change, |w| w.change);
            context.audit(peer, &asked, Some(change), "awaiting_approval".into(), true)
        }
        Ok(done) => {
            let change = done.state.change.as_ref().or(before.as_ref());
            let outcome = outcome_name(&reply(done).outcome);
            context.audit(peer, &asked, change.map(|c| c.id), outcome, true)
        }
        Err(refusal) => {
            let change = before.as_ref().map(|c| c.id);
            context.audit(peer, &asked, change, refusal.message.clone(), false)
        }
    }
    match (result, events) {
        (Ok(done), Ok(events))
            if wait
                && matches!(
                    done.outcome,
                    cutover::Outcome::Scheduled | cutover::Outcome::Joined
                ) =>
        {
            follow(context, reply(&done), events, out, wait_secondaries).await
        }
        (Ok(done), _) if done.outcome == cutover::Outcome::Flipped => {
            flipped(context, &done, wait_secondaries, false, out).await
        }
        (Ok(done), _) => send(context, out, &Reply::Ok(Response::Cutover(reply(&done)))).await,
        (Err(refusal), _) => send(context, out, &Reply::Error(error(&refusal))).await,
    }
}

/// Streams the progress of the scheduled cutover in `scheduled` until it ends: every
/// step as it happens, and every second what it waits for (the drain, or the secondaries)
/// with the time left.
async fn follow<W: AsyncWrite + Unpin>(
    context: &Context,
    scheduled: Cutover,
    mut events: broadcast::Receiver<cutover::Progress>,
    out: &mut W,
    wait_secondaries: bool,
) -> io::Result<()> {
    let (Some(id), Some(target), Some(drained_at_ms)) = (
        scheduled.cutover,
        scheduled.phase.target,
        scheduled.phase.drained_at_ms,
    ) else {
        return send(context, out, &Reply::Ok(Response::Cutover(scheduled))).await;
    };
    let joined = scheduled.outcome == Outcome::Joined;
    // What the flip waits for now, repeated with the time left.
    let mut waiting = cutover::Step::Draining {
        target,
        drained_at_ms,
        ttl: scheduled.ttl,
    };
    let shutting_down = || {
        let service = &scheduled.service;
        Error::new(
            ErrorKind::ShuttingDown,
            format!(
                "the server is shutting down; the flip of {service} to {target} is persisted and resumes when it starts again (`flipdns ctl status {service}` shows it)"
            ),
        )
    };
    let progress = |step: &cutover::Step| Progress {
        service: scheduled.service.clone(),
        cutover: id,
        step: self::step(context, step, joined),
    };
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            _ = context.shutdown.cancelled() => {
                return send(context, out, &Reply::Error(shutting_down())).await;
            }
            _ = ticker.tick() => send(context, out, &Reply::Progress(progress(&waiting))).await?,
            event = events.recv() => match event {
                Ok(event) if event.cutover == id => {
                    send(context, out, &Reply::Progress(progress(&event.step))).await?;
                    match event.step {
                        cutover::Step::Draining { .. } | cutover::Step::Secondaries { .. } => {
                            waiting = event.step;
                        }
                        cutover::Step::Health(_) => {}
                        cutover::Step::Flipped(done) => {
                            return flipped(context, &done, wait_secondaries, true, out).await;
                        }
                        cutover::Step::Refused(refusal) => {
                            return send(context, out, &Reply::Error(error(&refusal))).await;
                        }
                        cutover::Step::Cancelled => {
                            let message = format!(
                                "the cutover of {} to {target} was cancelled",
                                scheduled.service
                            );
                            let error = Error::new(ErrorKind::Cancelled, message);
                            return send(context, out, &Reply::Error(error)).await;
                        }
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return send(context, out, &Reply::Error(shutting_down())).await;
                }
            },
        }
    }
}

/// The reply to a flip: with secondaries, once every one serves it (or `[fleet] wait` has
/// passed: then the flip is done here and the reply says which are behind), each one's
/// arrival a progress line; without waiting, what they serve now. Unless `announced` (a
/// scheduled flip's progress said so), a client that waits hears of the flip first.
async fn flipped<W: AsyncWrite + Unpin>(
    context: &Context,
    done: &Done,
    wait: bool,
    announced: bool,
    out: &mut W,
) -> io::Result<()> {
    let mut cutover = reply(done);
    let progress = |step| {
        Reply::Progress(Progress {
            service: done.service.clone(),
            cutover: done.cutover.unwrap_or(0),
            step,
        })
    };
    if wait && !announced && !context.fleet.is_empty() {
        let result = Box::new(cutover.clone());
        send(context, out, &progress(Step::Flipped { result })).await?;
    }
    let since = done
        .state
        .flipped_at_ms
        .unwrap_or_else(|| context.clock.now_ms());
    let fleet = follow_fleet(context, done, since, wait, progress, out).await?;
    if let Some(fleet) = &fleet
        && fleet.waited
        && !fleet.behind.is_empty()
    {
        let (name, serial) = (&done.service, done.serial);
        let are = if fleet.behind.len() == 1 {
            "y is"
        } else {
            "ies are"
        };
        let said = format!(
            "flipped here only: {} secondar{are} behind serial {serial} after the wait: {}",
            fleet.behind.len(),
            fleet.behind.join("; ")
        );
        tracing::warn!(service = %name, serial, "{said}");
        if let Some(change) = &done.state.change {
            context.audit_event(
                name,
                Some(change.id),
                change.by.clone(),
                "fleet",
                said,
                false,
            );
        }
    }
    cutover.fleet = fleet;
    send(context, out, &Reply::Ok(Response::Cutover(cutover))).await
}

/// Follows the secondaries until every one serves `done`'s serial (timed from `since_ms`):
/// each one's arrival a progress line, and a reminder of who is behind every second with
/// the time left, for up to `[fleet] wait`; without `wait`, what they serve now. `None`
/// without secondaries.
pub(super) async fn follow_fleet<W: AsyncWrite + Unpin>(
    context: &Context,
    done: &Done,
    since_ms: u64,
    wait: bool,
    progress: impl Fn(Step) -> Reply,
    out: &mut W,
) -> io::Result<Option<FleetConvergence>> {
    let catalog = context.switch.catalog();
    let zone = catalog
        .config
        .service(&done.service)
        .map(|s| s.zone.clone());
    let (Some(zone), false) = (zone, context.fleet.is_empty()) else {
        return Ok(None);
    };
    let serial = done.serial;
    let waiting = wait.then_some(catalog.config.fleet.wait);
    let until_ms = context.clock.now_ms() + catalog.config.fleet.wait.as_millis() as u64;
    let mut follow =
        context
            .fleet
            .follow(zone, serial, since_ms, waiting, context.shutdown.clone());
    while let Some(event) = follow.next().await {
        match event {
            follow::Event::Arrived(a) if wait => {
                let step = Step::Secondary {
                    serial,
                    name: a.name,
                    after_ms: a.after_ms,
                };
                send(context, out, &progress(step)).await?;
            }
            follow::Event::Arrived(_) => {}
            follow::Event::Waiting(behind) => {
                let behind = behind.iter().map(ToString::to_string).collect();
                let step = Step::Secondaries {
                    serial,
                    behind,
                    until_ms: Some(until_ms),
                    seconds_left: Some(seconds_left(context, until_ms)),
                    flipped: true,
                };
                send(context, out, &progress(step)).await?;
            }
            follow::Event::Done(outcome) => {
                return Ok(Some(FleetConvergence {
                    serial,
                    converged: outcome
                        .converged
                        .into_iter()
                        .map(|a| Converged {
                            name: a.name,
                            after_ms: a.after_ms,
                        })
                        .collect(),
                    behind: outcome.behind.iter().map(ToString::to_string).collect(),
                    waited: outcome.waited,
                }));
            }
        }
    }
    Ok(None)
}

/// An outcome as the wire spells it (`scheduled`, `flipped`, ...), for the audit trail.
pub(super) fn outcome_name(outcome: &Outcome) -> String {
    serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// A carried-out command as the reply shows it.
pub(super) fn reply(done: &Done) -> Cutover {
    Cutover {
        service: done.service.clone(),
        outcome: match done.outcome {
            cutover::Outcome::Prepared => Outcome::Prepared,
            cutover::Outcome::Scheduled => Outcome::Scheduled,
            cutover::Outcome::Joined => Outcome::Joined,
            cutover::Outcome::Flipped => Outcome::Flipped,
            cutover::Outcome::AlreadyLive => Outcome::AlreadyLive,
            cutover::Outcome::Cancelled => Outcome::Cancelled,
            cutover::Outcome::NothingToCancel => Outcome::NothingToCancel,
            cutover::Outcome::AwaitingApproval => Outcome::AwaitingApproval,
            cutover::Outcome::NothingPending => Outcome::NothingPending,
            cutover::Outcome::AddressesSet => Outcome::AddressesSet,
            cutover::Outcome::AddressesUnchanged => Outcome::AddressesUnchanged,
        },
        live: done.state.live,
        from: done.from,
        phase: phase(&done.state.phase),
        awaiting: done.state.awaiting.as_deref().map(awaiting),
        ttl: done.ttl,
        flips: done.state.flips.0,
        serial: done.serial,
        cutover: done.cutover,
        health: done.health.as_ref().map(health),
        fleet: None,
    }
}

/// A refusal as the reply shows it.
pub(super) fn error(refusal: &Refusal) -> Error {
    let kind = match refusal.kind {
        RefusalKind::UnknownService => ErrorKind::UnknownService,
        RefusalKind::Unhealthy => ErrorKind::RefusedUnhealthy,
        RefusalKind::Interval => ErrorKind::RefusedInterval,
        RefusalKind::Busy => ErrorKind::Busy,
        RefusalKind::NotWritten => ErrorKind::Io,
        RefusalKind::Uncertain => ErrorKind::Uncertain,
        RefusalKind::SecondariesBehind => ErrorKind::SecondariesBehind,
        RefusalKind::Cancelled => ErrorKind::Cancelled,
        RefusalKind::ShuttingDown => ErrorKind::ShuttingDown,
        RefusalKind::LiveColor => ErrorKind::RefusedLive,
        RefusalKind::BadAddresses => ErrorKind::Invalid,
        RefusalKind::Approval => ErrorKind::ApprovalRefused,
    };
    Error::new(kind, refusal.message.clone())
}

/// A cutover step as progress lines report it; `joined`: the client joined a flip
/// scheduled before.
fn step(context: &Context, step: &cutover::Step, joined: bool) -> Step {
    match step {
        cutover::Step::Draining {
            target,
            drained_at_ms,
            ttl,
        } => Step::Draining {
            target: *target,
            drained_at_ms: *drained_at_ms,
            seconds_left: seconds_left(context, *drained_at_ms),
            ttl: *ttl,
            joined,
        },
        cutover::Step::Secondaries {
            serial,
            behind,
            until_ms,
        } => Step::Secondaries {
            serial: *serial,
            behind: behind.clone(),
            until_ms: Some(*until_ms),
            seconds_left: Some(seconds_left(context, *until_ms)),
            flipped: false,
        },
        cutover::Step::Health(h) => Step::Health { health: health(h) },
        cutover::Step::Flipped(done) => Step::Flipped {
            result: Box::new(reply(done)),
        },
        cutover::Step::Refused(refusal) => Step::Refused {
            reason: refusal.message.clone(),
        },
        cutover::Step::Cancelled => Step::Cancelled,
    }
}

/// Whole seconds until `at_ms` (Unix ms), rounded up as the deadline's `(in N s)` is: a
/// countdown reaches 0 at the deadline, not a second before it.
fn seconds_left(context: &Context, at_ms: u64) -> u64 {
    (context.clock.until(at_ms).as_millis() as u64).div_ceil(1000)
}
