//! What each admin request does: status is a report; prepare, flip, rollback and cancel go to
//! the service's cutover task. A flip that waits streams progress lines until it is done.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

use super::protocol::{Cutover, Outcome, Progress, Reply, Request, Step, StragglersReport};
use super::server::reply_line;
use crate::clock;
use crate::cutover::{Action, Cutovers};
use crate::reload::Reloader;
use crate::status;
use crate::stragglers::Ledger;
use crate::switch::Switch;

/// How often a waiting client hears from the server, at least.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What request handlers need.
pub struct Context {
    pub switch: Arc<Switch>,
    pub cutovers: Arc<Cutovers>,
    /// `None` when the ledger is off.
    pub ledger: Option<Arc<Ledger>>,
    pub reloader: Arc<Reloader>,
}

/// Resolvers listed per class by `stragglers` unless the request says otherwise.
const DEFAULT_LIMIT: usize = 10;

/// Runs one request line, writing its reply (and any progress) to `out`. An error is a
/// write error: the client is gone.
pub async fn dispatch<W: AsyncWrite + Unpin>(
    context: &Context,
    line: &[u8],
    out: &mut W,
) -> io::Result<()> {
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => return send(out, &Reply::<()>::Error(format!("bad request: {e}"))).await,
    };
    let (service, action, wait) = match request {
        Request::Status { service } => {
            let reply = status::report(
                &context.switch,
                context.ledger.as_deref(),
                service.as_deref(),
            )
            .await;
            return send(out, &reply.map_or_else(Reply::Error, Reply::Ok)).await;
        }
        Request::Stragglers { service, limit } => {
            let reply = stragglers(context, &service, limit.unwrap_or(DEFAULT_LIMIT)).await;
            return send(out, &reply.map_or_else(Reply::Error, Reply::Ok)).await;
        }
        Request::Reload => {
            let reply = context.reloader.reload().await;
            return send(out, &reply.map_or_else(Reply::Error, Reply::Ok)).await;
        }
        Request::Prepare { service } => (service, Action::Prepare, false),
        Request::Flip {
            service,
            to,
            now,
            force,
            wait,
        } => (service, Action::Flip { to, now, force }, wait),
        Request::Rollback {
            service,
            force,
            wait,
        } => (service, Action::Rollback { force }, wait),
        Request::Cancel { service } => (service, Action::Cancel, false),
    };
    // Subscribe before the command runs, so no progress of its cutover is missed.
    let events = context.cutovers.subscribe(&service);
    let result = context.cutovers.command(&service, action).await;
    match (result, events) {
        (Ok(reply), Ok(events))
            if wait && matches!(reply.outcome, Outcome::Scheduled | Outcome::Joined) =>
        {
            follow(reply, events, out).await
        }
        (Ok(reply), _) => send(out, &Reply::Ok(reply)).await,
        (Err(e), _) => send(out, &Reply::<()>::Error(e)).await,
    }
}

/// Streams the progress of the scheduled cutover in `scheduled` until it ends.
async fn follow<W: AsyncWrite + Unpin>(
    scheduled: Cutover,
    mut events: broadcast::Receiver<Progress>,
    out: &mut W,
) -> io::Result<()> {
    let (Some(cutover), Some(target), Some(mut drained_at_ms)) = (
        scheduled.cutover,
        scheduled.phase.target,
        scheduled.phase.drained_at_ms,
    ) else {
        return send(out, &Reply::Ok(scheduled)).await;
    };
    let draining = |drained_at_ms: u64| Progress {
        service: scheduled.service.clone(),
        cutover,
        step: Step::Draining {
            target,
            drained_at_ms,
            seconds_left: clock::until(drained_at_ms).as_secs(),
            ttl: scheduled.ttl,
        },
    };
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => send(out, &Reply::<()>::Progress(draining(drained_at_ms))).await?,
            event = events.recv() => match event {
                Ok(progress) if progress.cutover == cutover => {
                    send(out, &Reply::<()>::Progress(progress.clone())).await?;
                    match progress.step {
                        Step::Draining { drained_at_ms: later, .. } => drained_at_ms = later,
                        Step::Health { .. } => {}
                        Step::Flipped { result } => return send(out, &Reply::Ok(*result)).await,
                        Step::Refused { reason } => return send(out, &Reply::<()>::Error(reason)).await,
                        Step::Cancelled => {
                            let reason = format!("the cutover of {} to {target} was cancelled", scheduled.service);
                            return send(out, &Reply::<()>::Error(reason)).await;
                        }
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    let reason = "the server is shutting down; the cutover stays scheduled and resumes when it starts again";
                    return send(out, &Reply::<()>::Error(reason.into())).await;
                }
            },
        }
    }
}

async fn stragglers(
    context: &Context,
    service: &str,
    limit: usize,
) -> Result<StragglersReport, String> {
    if context.switch.catalog().config.service(service).is_none() {
        return Err(format!("unknown service {service:?}"));
    }
    let ledger = context
        .ledger
        .as_ref()
        .ok_or("the straggler ledger is off ([ledger] enabled = false)")?;
    ledger
        .report(service, limit)
        .await
        .ok_or_else(|| format!("unknown service {service:?}"))
}

async fn send<W: AsyncWrite + Unpin, T: serde::Serialize>(
    out: &mut W,
    reply: &Reply<T>,
) -> io::Result<()> {
    out.write_all(reply_line(reply).as_bytes()).await
}
