//! `set_addresses`: a color's new addresses (a release's new instances), through the
//! service's cutover task like a flip, so the rules see the cutover as it stands; then, with
//! secondaries, which of them serve the new set.

use std::io;
use std::net::IpAddr;

use tokio::io::AsyncWrite;

use super::cutover::{error, follow_fleet, outcome_name, reply};
use super::{Context, Peer, health, send};
use crate::catalog::service_names;
use crate::color::Color;
use crate::cutover::{Action, Done};
use crate::protocol::{AddressesReply, FleetConvergence, Progress, Reply, Request, Response};

pub async fn run<W: AsyncWrite + Unpin>(
    context: &Context,
    peer: &Peer,
    request: Request,
    out: &mut W,
) -> io::Result<()> {
    let Request::SetAddresses {
        ref service,
        color,
        ref addresses,
        force,
        check,
        wait_secondaries,
    } = request
    else {
        unreachable!("dispatch sends only set_addresses here");
    };
    let origin = peer.origin(context);
    let change = origin.change;
    let action = Action::SetAddresses {
        color,
        addresses: addresses.clone(),
        force,
        check,
    };
    let done = match context.cutovers.command(service, action, origin).await {
        Ok(done) => done,
        Err(refusal) => {
            context.audit(peer, &request, Some(change), refusal.message.clone(), false);
            return send(context, out, &Reply::Error(error(&refusal))).await;
        }
    };
    let previous = done.replaced.clone().unwrap_or_else(|| addresses.clone());
    context.audit(
        peer,
        &request,
        Some(change),
        audited(&done, color, &previous, addresses),
        true,
    );
    let progress = |step| {
        Reply::Progress(Progress {
            service: service.clone(),
            cutover: 0,
            step,
        })
    };
    let set = done.outcome == crate::cutover::Outcome::AddressesSet;
    let fleet = if set {
        let since = context.clock.now_ms();
        follow_fleet(context, &done, since, wait_secondaries, progress, out).await?
    } else {
        None
    };
    if let Some(fleet) = fleet.as_ref().filter(|f| f.waited && !f.behind.is_empty()) {
        set_here_only(context, peer, service, change, fleet);
    }
    let catalog = context.switch.catalog();
    let config = catalog.config.service(service);
    let other = config
        .map(|config| done.state.addresses(config, color.other()).to_vec())
        .unwrap_or_default();
    let color_name = config
        .map(|config| service_names(config)[color.index()].to_string())
        .unwrap_or_default();
    let reply = AddressesReply {
        service: service.clone(),
        outcome: reply(&done).outcome,
        color,
        color_name,
        addresses: addresses.clone(),
        previous,
        live: done.state.live,
        serial: done.serial,
        health: done.health.as_ref().map(health),
        fleet,
        warnings: warnings(&done, color, addresses, &other),
    };
    send(context, out, &Reply::Ok(Response::Addresses(reply))).await
}

/// Says (log and audit) that the set stands here while some secondaries are still behind
/// after the wait.
fn set_here_only(
    context: &Context,
    peer: &Peer,
    service: &str,
    change: u64,
    fleet: &FleetConvergence,
) {
    let said = format!(
        "set here only: {} secondar{} behind serial {} after the wait: {}",
        fleet.behind.len(),
        if fleet.behind.len() == 1 {
            "y is"
        } else {
            "ies are"
        },
        fleet.serial,
        fleet.behind.join("; ")
    );
    tracing::warn!(service, serial = fleet.serial, "{said}");
    context.audit_event(
        service,
        Some(change),
        peer.principal(),
        "fleet",
        said,
        false,
    );
}

/// The audit's outcome: what was set, over what, and whether it was the live color.
fn audited(done: &Done, color: Color, previous: &[IpAddr], addresses: &[IpAddr]) -> String {
    let name = outcome_name(&reply(done).outcome);
    let live = if color == done.state.live {
        " (the LIVE color, forced)"
    } else {
        ""
    };
    format!(
        "{name}: {color}{live} {} -> {}, serial {}",
        list(previous),
        list(addresses),
        done.serial
    )
}

fn list(addresses: &[IpAddr]) -> String {
    let all: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    all.join(" ")
}

/// What the operator should know of a set that was made.
fn warnings(done: &Done, color: Color, addresses: &[IpAddr], other: &[IpAddr]) -> Vec<String> {
    let mut out = Vec::new();
    let both: Vec<String> = addresses
        .iter()
        .filter(|a| other.contains(a))
        .map(ToString::to_string)
        .collect();
    if !both.is_empty() {
        out.push(format!(
            "{} in both colors: a flip does not move its traffic",
            both.join(", ")
        ));
    }
    if color == done.state.live {
        out.push(format!(
            "{color} is live: resolvers get the new addresses as their caches expire"
        ));
    }
    out
}
