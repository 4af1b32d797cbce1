//! `flipdns ctl`'s replies for people: status, cutovers, reports, progress.

use std::io::{IsTerminal, Write};

use crate::clock::{self, format_utc};
use crate::color::Color;
use crate::protocol::{
    AddressesReply, AuditEntry, ColorHealth, Cutover, FleetConvergence, FlipRecord,
    NotifiedSecondary, Outcome, PhaseName, Progress, Reloaded, ResolverClass, ResolverView,
    Response, SecondaryStatus, ServiceStatus, Status, Step, StragglersReport, StreamView,
    TimelinePoint, Version,
};

/// Any reply, for a person.
pub fn response(response: &Response) -> String {
    match response {
        Response::Version(v) => version(v),
        Response::Status(s) => status(s),
        Response::Cutover(c) => cutover(c),
        Response::Reloaded(r) => reloaded(r),
        Response::Stragglers(r) => stragglers(r),
        Response::History(entries) => history(entries),
        Response::LogLevel(filter) => format!("log filter now {filter}\n"),
        Response::Notified(secondaries) => notified(secondaries),
        Response::Addresses(reply) => addresses(reply),
    }
}

/// `app: green addresses set: 198.51.100.10 -> 198.51.100.77 (serial 7); ...`, then the
/// health check, the secondaries as for a flip, and any warning.
fn addresses(r: &AddressesReply) -> String {
    let (name, color) = (&r.service, r.color);
    let list = |all: &[std::net::IpAddr]| {
        all.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    if let Some(health) = &r.health {
        out.push_str(&format!("{name}: {}\n", format_health(health)));
    }
    out.push_str(&match (r.outcome, color == r.live) {
        (Outcome::AddressesUnchanged, _) => {
            format!("{name}: {color} already answers {}; nothing changed\n", list(&r.addresses))
        }
        (_, false) => format!(
            "{name}: {color} addresses set: {} -> {} (serial {}); {color} is idle: {} answers them now, the service name still {}; `flipdns ctl flip {name} --to {color}` makes them live\n",
            list(&r.previous),
            list(&r.addresses),
            r.serial,
            r.color_name,
            r.live
        ),
        (_, true) => format!(
            "{name}: {color} (LIVE) addresses set: {} -> {} (serial {}); the service name answers them now\n",
            list(&r.previous),
            list(&r.addresses),
            r.serial
        ),
    });
    if let Some(fleet) = &r.fleet {
        out.push_str(&fleet_lines(name, fleet, "SET HERE ONLY"));
    }
    for warning in &r.warnings {
        out.push_str(&format!("{name}: warning: {warning}\n"));
    }
    out
}

/// Each secondary serving the change, and those behind.
fn fleet_lines(name: &str, fleet: &FleetConvergence, here_only: &str) -> String {
    let mut out = String::new();
    for converged in &fleet.converged {
        out.push_str(&format!(
            "{name}: secondary {} serves serial {} ({} ms after the change)\n",
            converged.name, fleet.serial, converged.after_ms
        ));
    }
    let count = fleet.behind.len();
    let secondaries = if count == 1 {
        "secondary"
    } else {
        "secondaries"
    };
    if count > 0 && fleet.waited {
        out.push_str(&format!(
            "{name}: {here_only}: {count} {secondaries} did not serve serial {} in time: {}\n",
            fleet.serial,
            fleet.behind.join("; ")
        ));
    } else if count > 0 {
        out.push_str(&format!(
            "{name}: not waiting for the secondaries; {count} {secondaries} do not serve serial {} yet (`flipdns ctl status` follows them)\n",
            fleet.serial
        ));
    }
    out
}

/// `ns2 (192.0.2.53:53) svc.example.com. serial 7: acknowledged, serves 7 (current)`.
fn notified(secondaries: &[NotifiedSecondary]) -> String {
    let mut out = String::new();
    for s in secondaries {
        for z in &s.zones {
            let ack = if z.acknowledged {
                "acknowledged"
            } else {
                "NOT acknowledged"
            };
            let serves = match z.serves {
                Some(serial) if serial == z.serial => format!("serves {serial} (current)"),
                Some(serial) => format!(
                    "serves {serial}, not ours yet after {} s (a transfer may still follow: `flipdns ctl status` shows it)",
                    crate::fleet::renotify::CATCH_UP.as_secs()
                ),
                None => "did not say what it serves".into(),
            };
            let error = z.error.as_ref().map_or(String::new(), |e| format!("; {e}"));
            out.push_str(&format!(
                "{} ({}) {} serial {}: {ack}, {serves}{error}\n",
                s.name, s.address, z.origin, z.serial
            ));
        }
    }
    out
}

/// The audit trail, a line per event: when, which change of which service, who asked and
/// what (with what the reply said), or what the change did later on its own.
fn history(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no changes recorded\n".into();
    }
    let mut out = String::new();
    for e in entries {
        let change = e.change.map_or("-".into(), |id| format!("#{id}"));
        let service = e.service().unwrap_or("-");
        let verdict = if e.ok { "done" } else { "refused" };
        let what = match (&e.request, e.event.as_str()) {
            (Some(request), event) => {
                // Over the API: the token and the client's address; over the socket: the
                // Unix user and process.
                let who = match (&e.source, &e.user) {
                    (Some(source), _) => format!("{} from {source}", e.principal),
                    (None, Some(user)) => format!("{user} (uid {}), pid {}", e.uid, e.pid),
                    (None, None) => format!("uid {}, pid {}", e.uid, e.pid),
                };
                let request = serde_json::to_string(request).unwrap_or_default();
                let verb = if event == crate::admin::audit::READ {
                    "read"
                } else {
                    "asked"
                };
                format!("{who}: {verb} {request} -> {verdict}: {}", e.outcome)
            }
            (None, event) => match &e.source {
                Some(source) => format!("{event} ({} from {source}): {}", e.principal, e.outcome),
                None => format!("{event} (asked by {}): {}", e.principal, e.outcome),
            },
        };
        out.push_str(&format!(
            "{}  {change}  {service}  {what}\n",
            format_utc(e.at_ms)
        ));
    }
    out
}

fn version(v: &Version) -> String {
    if v.revision.is_empty() {
        return format!("flipdns {} (admin protocol {})\n", v.server, v.protocol);
    }
    format!(
        "flipdns {} (commit {}, rustc {}, admin protocol {})\n",
        v.server, v.revision, v.rustc, v.protocol
    )
}

/// Shows a cutover's progress on stderr as one ordered story: each step once, as it
/// happens (scheduled or joined, the drain, the secondaries waited for, health, the flip,
/// each secondary serving it). On a terminal, what the flip waits for is one line redrawn
/// in place with the time left; elsewhere a plain line now and then.
pub struct ProgressView {
    terminal: bool,
    /// Seconds to the drain when the wait began: the bar's full width.
    total: Option<u64>,
    /// A line redrawn in place is on the screen: it is ended before the next line.
    open: bool,
    /// Seconds left at the last plain drain line, to print one every few seconds only.
    last_plain: Option<u64>,
    /// The secondaries behind at the last line about them (and whether after the flip),
    /// to say it again only when it changes.
    behind: Option<(bool, Vec<String>)>,
    /// Every line printed, so that neither this story nor the reply after it repeats one.
    printed: Vec<String>,
    /// Whether the flip's schedule was told.
    announced: bool,
}

impl Default for ProgressView {
    fn default() -> ProgressView {
        ProgressView {
            terminal: std::io::stderr().is_terminal(),
            total: None,
            open: false,
            last_plain: None,
            behind: None,
            printed: Vec::new(),
            announced: false,
        }
    }
}

impl ProgressView {
    /// Seconds between plain progress lines while draining.
    const PLAIN_EVERY: u64 = 10;
    const BAR: usize = 30;

    pub fn show(&mut self, progress: &Progress) {
        let name = &progress.service;
        match &progress.step {
            Step::Draining {
                target,
                drained_at_ms,
                seconds_left,
                ttl,
                joined,
            } => self.draining(name, *target, *drained_at_ms, *seconds_left, *ttl, *joined),
            Step::Secondaries {
                serial,
                behind,
                until_ms,
                seconds_left,
                flipped,
            } => {
                let seen = (*flipped, behind.clone());
                if self.behind.as_ref() != Some(&seen) {
                    self.behind = Some(seen);
                    self.line(waiting_for_secondaries(
                        name, *serial, behind, *until_ms, *flipped,
                    ));
                }
                if let (true, Some(left)) = (self.terminal, seconds_left) {
                    let them = if behind.len() == 1 { "it" } else { "them" };
                    self.redraw(if *flipped {
                        format!("{name}: {left} s left for the secondaries (Ctrl-C stops waiting; the change stands)")
                    } else {
                        format!("{name}: {left} s left for the secondaries, then the flip is refused (`--force` flips without {them})")
                    });
                }
            }
            Step::Secondary {
                serial,
                name: secondary,
                after_ms,
            } => self.line(format!(
                "{name}: secondary {secondary} serves serial {serial} ({after_ms} ms after the change)"
            )),
            Step::Health { health } => self.line(format!("{name}: {}", format_health(health))),
            Step::Flipped { result } => {
                for line in flipped(result).lines() {
                    self.line(line.to_string());
                }
            }
            Step::Refused { .. } | Step::Cancelled => self.close(),
        }
    }

    /// The countdown to the drain: said once, then a bar on a terminal or a line every
    /// [`Self::PLAIN_EVERY`] seconds elsewhere.
    fn draining(
        &mut self,
        name: &str,
        target: Color,
        drained_at_ms: u64,
        seconds_left: u64,
        ttl: u32,
        joined: bool,
    ) {
        if !self.announced {
            self.announced = true;
            let at = seconds_from_now(drained_at_ms);
            self.line(match (joined, seconds_left) {
                (_, 0) => format!("{name}: flip to {target}: drained at {at}"),
                (true, _) => {
                    format!("{name}: joining the flip to {target} scheduled before, for {at}")
                }
                (false, _) => {
                    format!("{name}: flip to {target} scheduled for {at}; TTL {ttl} s now")
                }
            });
        }
        if seconds_left == 0 && self.total.is_none() {
            return; // drained already: nothing to count down
        }
        let total = *self.total.get_or_insert((seconds_left).max(1));
        if self.terminal {
            let done = Self::BAR - (Self::BAR as u64 * seconds_left.min(total) / total) as usize;
            self.redraw(format!(
                "{name} -> {target} [{}{}] draining, {seconds_left} s left (TTL now {ttl} s)",
                "#".repeat(done),
                ".".repeat(Self::BAR - done)
            ));
        } else if self
            .last_plain
            .is_none_or(|last| last >= seconds_left + Self::PLAIN_EVERY)
        {
            self.last_plain = Some(seconds_left);
            self.line(format!(
                "{name}: waiting for caches to drain before the flip to {target}: {seconds_left} s left (drained at {})",
                format_utc(drained_at_ms)
            ));
        }
    }

    /// The lines of `reply` not printed as progress: on one terminal, the story goes on
    /// where the progress left it instead of telling it again.
    pub fn unseen(&mut self, reply: &str) -> String {
        self.close();
        reply
            .lines()
            .filter(|line| !self.printed.iter().any(|p| p == line))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// Prints `text` as a line of its own, once.
    fn line(&mut self, text: String) {
        if self.printed.contains(&text) {
            return;
        }
        self.close();
        let _ = writeln!(std::io::stderr(), "{text}");
        self.printed.push(text);
    }

    /// Draws `text` over the line redrawn in place (a terminal only).
    fn redraw(&mut self, text: String) {
        let _ = write!(std::io::stderr(), "\r{text}\x1b[K");
        self.open = true;
    }

    fn close(&mut self) {
        if self.open {
            let _ = writeln!(std::io::stderr());
            self.open = false;
        }
    }
}

/// `app: waiting for 1 secondary to serve serial 7 (the short TTL): ns2 (...) has not
/// answered; the flip is refused at ... unless it does: `--force` flips without it`.
fn waiting_for_secondaries(
    name: &str,
    serial: u32,
    behind: &[String],
    until_ms: Option<u64>,
    flipped: bool,
) -> String {
    let (count, one) = (behind.len(), behind.len() == 1);
    let (secondaries, it, does) = if one {
        ("secondary", "it", "does")
    } else {
        ("secondaries", "them", "do")
    };
    let what = if flipped {
        "the change"
    } else {
        "the short TTL"
    };
    let then = match (until_ms, flipped) {
        (None, _) => String::new(),
        (Some(at), false) => format!(
            "; the flip is refused at {} unless {} {does}: `--force` flips without {it}",
            seconds_from_now(at),
            if one { "it" } else { "they" }
        ),
        (Some(at), true) => format!(
            "; at {} the change stands here only (exit 5) unless {} {does}",
            seconds_from_now(at),
            if one { "it" } else { "they" }
        ),
    };
    format!(
        "{name}: waiting for {count} {secondaries} to serve serial {serial} ({what}): {}{then}",
        behind.join("; ")
    )
}

fn seconds_from_now(ms: u64) -> String {
    let now = clock::now_ms();
    if ms >= now {
        format!("{} (in {} s)", format_utc(ms), (ms - now).div_ceil(1000))
    } else {
        format!("{} ({} s ago)", format_utc(ms), (now - ms) / 1000)
    }
}

/// `health of green: 1/2 healthy; 198.51.100.11 connection refused`.
pub fn format_health(health: &ColorHealth) -> String {
    let failing: Vec<String> = health
        .addresses
        .iter()
        .filter(|a| !a.healthy)
        .map(|a| format!("{} {}", a.address, a.detail))
        .collect();
    let mut text = format!(
        "health of {}: {}/{} healthy",
        health.color, health.healthy, health.total
    );
    if !failing.is_empty() {
        text.push_str(&format!("; {}", failing.join(", ")));
    }
    text
}

/// Human-readable `status`.
pub fn status(status: &Status) -> String {
    let mut out = String::new();
    if let Some(u) = &status.state_uncertain {
        out.push_str(&format!(
            "STATE UNCERTAIN since {}: the state file may hold a change the answers do not carry; retried every second\n  {}\n",
            format_utc(u.since_ms),
            u.reason
        ));
    }
    for s in &status.services {
        out.push_str(&service(s));
    }
    for z in &status.zones {
        out.push_str(&format!("zone {} serial {}\n", z.origin, z.serial));
    }
    for s in &status.secondaries {
        out.push_str(&secondary(s));
    }
    out.push_str(&format!(
        "snapshot generation {}\n",
        status.snapshot_generation
    ));
    out
}

fn service(s: &ServiceStatus) -> String {
    let live = match s.live {
        Color::Blue => &s.blue,
        Color::Green => &s.green,
    };
    let addresses: Vec<String> = live.iter().map(|a| a.to_string()).collect();
    let mut out = format!("{}: {} live ({})\n", s.name, s.live, addresses.join(" "));
    let phase = phase_line(s);
    for (color, list) in [(Color::Blue, &s.blue), (Color::Green, &s.green)] {
        let list: Vec<String> = list.iter().map(ToString::to_string).collect();
        let source = match s.sources.iter().find(|x| x.color == color) {
            Some(x) if x.source == "runtime" => format!(
                "set at runtime by {} at {}",
                x.by.as_deref().unwrap_or("-"),
                x.at_ms.map_or("-".into(), format_utc)
            ),
            _ => "from config".into(),
        };
        out.push_str(&format!("  {color} {} ({source})\n", list.join(" ")));
    }
    out.push_str(&format!("  phase {phase}\n"));
    if let Some(w) = &s.awaiting {
        out.push_str(&format!(
            "  AWAITING APPROVAL: {} asked by {} at {}, until {} (`flipdns ctl approve {}` by another principal, or `flipdns ctl cancel {}`)\n",
            w.action,
            w.by,
            format_utc(w.at_ms),
            seconds_from_now(w.expires_ms),
            s.name,
            s.name
        ));
    }
    out.push_str(&format!(
        "  ttl {} s now (normal {}, cutover {})\n",
        s.ttl, s.normal_ttl, s.cutover_ttl
    ));
    let flipped = s.flipped_at_ms.map_or("never".to_string(), format_utc);
    out.push_str(&format!(
        "  flips {}, serial {}, last flip {flipped}\n",
        s.flips, s.serial
    ));
    out.push_str(&format!(
        "  answers blue {}, green {}\n",
        s.answers.blue, s.answers.green
    ));
    for health in &s.health {
        out.push_str(&format!("  {}\n", format_health(health)));
    }
    if let Some(c) = &s.resolvers {
        out.push_str(&format!(
            "  resolvers: {} converged, {} draining, {} silent, {} overdue, {} stragglers\n",
            c.converged, c.draining, c.silent, c.overdue, c.straggler
        ));
    }
    if let Some(wait) = &s.fleet {
        let what = match wait.change.as_str() {
            "prepare" => "the short TTL (the drain is not proven until they do)",
            "flip" => "the flip (the old color is not drained until they do)",
            _ => "the short TTL and the last flip",
        };
        out.push_str(&format!(
            "  secondaries behind serial {} with {what}: {}\n",
            wait.serial,
            if wait.behind.is_empty() {
                "none now".into()
            } else {
                wait.behind.join("; ")
            }
        ));
    }
    out
}

/// What a service's phase means now: what it waits for, until when, and what overrides it.
fn phase_line(s: &ServiceStatus) -> String {
    match (
        s.phase.name,
        s.phase.target,
        s.phase.drained_at_ms,
        s.phase.settle_until_ms,
    ) {
        (PhaseName::Preparing, Some(target), Some(at), _) if at > clock::now_ms() => {
            format!("preparing, flip to {target} at {}", seconds_from_now(at))
        }
        (PhaseName::Preparing, Some(target), Some(at), _) => match s.fleet_wait_until_ms {
            Some(until) => format!(
                "preparing, drained at {}; the flip to {target} waits for the secondaries below until {}, then is refused (`flipdns ctl flip {} --to {target} --force` goes without them)",
                seconds_from_now(at),
                seconds_from_now(until),
                s.name
            ),
            None => format!(
                "preparing, drained at {}; the flip to {target} is due and being carried out",
                seconds_from_now(at)
            ),
        },
        (PhaseName::Preparing, None, Some(at), _) => format!(
            "preparing since {}, no flip pending (drained at {}); the TTL stays {} s until a flip or `flipdns ctl cancel {}`",
            s.phase.since_ms.map_or("-".into(), format_utc),
            seconds_from_now(at),
            s.cutover_ttl,
            s.name
        ),
        (PhaseName::Settling, _, _, Some(until)) => format!(
            "settling until {}, then TTL {} s; until then `flipdns ctl rollback {}` is instant (no drain)",
            seconds_from_now(until),
            s.normal_ttl,
            s.name
        ),
        (name, ..) => phase_name(name).to_string(),
    }
}

/// `secondary ns2 (192.0.2.53:53, key xfr-key): svc.example.com. serves 7 (current) ...`
fn secondary(s: &SecondaryStatus) -> String {
    let key = s
        .key
        .as_ref()
        .map_or(String::new(), |k| format!(", key {k}"));
    let mut out = format!("secondary {} ({}{key})\n", s.name, s.address);
    for z in &s.zones {
        let serves = match (z.serves, z.lag) {
            _ if !z.reachable => format!(
                "UNREACHABLE since {}; {}",
                z.unreachable_since_ms.map_or("-".into(), format_utc),
                match (z.serves, z.checked_at_ms) {
                    (Some(serial), Some(at)) => format!(
                        "last answered serial {serial} at {} (ours {})",
                        format_utc(at),
                        z.serial
                    ),
                    _ => format!("never answered (ours {})", z.serial),
                }
            ),
            (Some(serial), Some(0)) => format!("serves {serial} (current)"),
            (Some(serial), Some(lag)) => format!(
                "serves {serial}, {lag} behind {}{}",
                z.serial,
                z.behind_since_ms
                    .map_or(String::new(), |t| format!(" since {}", format_utc(t)))
            ),
            _ => format!("serial not known yet (ours {})", z.serial),
        };
        out.push_str(&format!("  {} {serves}\n", z.origin));
        if let Some(n) = &z.notify {
            out.push_str(&format!(
                "    last NOTIFY serial {} at {} ({} tr{}, {})\n",
                n.serial,
                format_utc(n.at_ms),
                n.tries,
                if n.tries == 1 { "y" } else { "ies" },
                if n.acked {
                    "acknowledged"
                } else {
                    "not acknowledged"
                }
            ));
        }
        if let Some(t) = &z.transferred {
            out.push_str(&format!(
                "    last transfer serial {} at {} ({})\n",
                t.serial,
                format_utc(t.at_ms),
                t.kind
            ));
        }
        if let (Some(e), Some(at)) = (&z.error, z.error_at_ms) {
            out.push_str(&format!(
                "    last error at {}: {e} ({} errors)\n",
                format_utc(at),
                z.errors
            ));
        }
    }
    out
}

/// Human-readable reply to prepare, flip, rollback and cancel: what happened, in the
/// order it happened (the health gate, the flip, each secondary serving it).
pub fn cutover(c: &Cutover) -> String {
    let name = &c.service;
    let mut out = match c.outcome {
        Outcome::Flipped => flipped(c),
        Outcome::AwaitingApproval => match &c.awaiting {
            Some(w) => format!(
                "{name}: {} asked by {} awaits approval by another principal until {}: `flipdns ctl approve {name}` carries it out, `flipdns ctl cancel {name}` withdraws it\n",
                w.action,
                w.by,
                seconds_from_now(w.expires_ms)
            ),
            None => format!("{name}: awaits approval\n"),
        },
        Outcome::NothingPending => format!(
            "{name}: nothing in progress ({}, {} live)\n",
            phase_name(c.phase.name),
            c.live
        ),
        Outcome::Prepared => format!(
            "{name}: preparing: TTL {} s now; drained at {}\n",
            c.ttl,
            c.phase.drained_at_ms.map_or("-".into(), seconds_from_now)
        ),
        Outcome::Scheduled | Outcome::Joined => format!(
            "{name}: flip to {} {} for {}; TTL {} s now. `flipdns ctl status {name}` shows it; `flipdns ctl cancel {name}` abandons it\n",
            c.phase.target.map_or("-".into(), |t| t.to_string()),
            if c.outcome == Outcome::Joined {
                "was already scheduled"
            } else {
                "scheduled"
            },
            c.phase.drained_at_ms.map_or("-".into(), seconds_from_now),
            c.ttl
        ),
        Outcome::AlreadyLive => format!(
            "{name}: already {}, nothing changed ({} so far)\n",
            c.live,
            plural(c.flips, "flip", "flips")
        ),
        Outcome::Cancelled => format!(
            "{name}: cancelled; steady, TTL {} s, {} live\n",
            c.ttl, c.live
        ),
        Outcome::NothingToCancel => format!(
            "{name}: nothing to cancel ({}, {} live)\n",
            phase_name(c.phase.name),
            c.live
        ),
        Outcome::AddressesSet | Outcome::AddressesUnchanged => {
            format!("{name}: addresses set; {} live\n", c.live)
        }
    };
    if let (Some(health), false) = (&c.health, c.outcome == Outcome::Flipped) {
        out.push_str(&format!("{name}: {}\n", format_health(health)));
    }
    if let Some(fleet) = &c.fleet {
        out.push_str(&fleet_lines(name, fleet, "FLIPPED HERE ONLY"));
    }
    out
}

/// A flip: the health gate's result that let it through, then the flip, and until when
/// a rollback is instant.
fn flipped(c: &Cutover) -> String {
    let name = &c.service;
    let mut out = String::new();
    if let Some(health) = &c.health {
        out.push_str(&format!("{name}: {}\n", format_health(health)));
    }
    out.push_str(&format!(
        "{name}: {} -> {} (flip {}, serial {}); TTL {} s until {}",
        c.from.map_or("-".into(), |f| f.to_string()),
        c.live,
        c.flips,
        c.serial,
        c.ttl,
        c.phase.settle_until_ms.map_or("-".into(), format_utc)
    ));
    if c.phase.settle_until_ms.is_some() {
        out.push_str(&format!(
            "; until then `flipdns ctl rollback {name}` is instant (no drain)"
        ));
    }
    out.push('\n');
    out
}

/// Human-readable `stragglers`.
pub fn stragglers(r: &StragglersReport) -> String {
    let mut out = String::new();
    let name = &r.service;
    match &r.flip {
        Some(f) => out.push_str(&format!(
            "{name}: flipped {} -> {} at {} (flip {})\n",
            f.from,
            f.to,
            format_utc(f.at_ms),
            f.flips
        )),
        None => out.push_str(&format!(
            "{name}: never flipped; classes are relative to the start\n"
        )),
    }
    for reason in &r.incomplete {
        out.push_str(&format!("  INCOMPLETE: {reason}\n"));
    }
    if let (Some(f), Some(at)) = (&r.flip, r.drained_at_ms) {
        let when = if r.drained { "drained" } else { "drains" };
        out.push_str(&format!(
            "  {} {when} for caches that obey TTLs at {}\n",
            f.from,
            seconds_from_now(at)
        ));
    }
    out.push_str(&summary(r));
    for stream in &r.streams {
        out.push_str(&format!("  {}\n", format_stream(stream)));
    }
    for v in &r.resolvers {
        let flip = r.flip.as_ref().map_or(0, |f| f.flips);
        out.push_str(&format!("  {}\n", format_resolver(v, flip)));
    }
    if r.left_out > 0 {
        out.push_str(&format!(
            "({} not listed: --all lists every class, --limit raises the cap)\n",
            plural(r.left_out, "resolver", "resolvers")
        ));
    }
    let l = &r.ledger;
    out.push_str(&format!(
        "ledger: {} of {} entries, {} evicted, {} observations dropped\n",
        l.entries, l.capacity, l.evicted, l.dropped
    ));
    out
}

/// The counts per class and what they add up to: straggling queries, the last straggler,
/// the old color's decay.
fn summary(r: &StragglersReport) -> String {
    let mut out = String::new();
    let c = &r.counts;
    for (class, n) in [
        ("converged", c.converged),
        ("draining", c.draining),
        ("silent", c.silent),
        ("overdue", c.overdue),
        ("straggler", c.straggler),
    ] {
        out.push_str(&format!("  {class:<10} {n:>8}\n"));
    }
    if r.straggler_queries > 0 {
        out.push_str(&format!(
            "  {} for the old color's name after every reason to ask had expired\n",
            plural(r.straggler_queries, "query", "queries")
        ));
    }
    if let (Some(f), Some(at)) = (&r.flip, r.last_straggler_converged_ms) {
        out.push_str(&format!(
            "  the last straggler converged at {} ({} s after the flip)\n",
            format_utc(at),
            at.saturating_sub(f.at_ms) / 1000
        ));
    }
    if let Some(f) = &r.flip {
        let later = decay(r).map_or(String::new(), |line| {
            format!("; still held (draining + silent + overdue) {line}")
        });
        out.push_str(&format!(
            "  {} held by {} at the flip{later}\n",
            f.from,
            plural(r.held_at_flip, "resolver", "resolvers")
        ));
    }
    out
}

/// `3 at the flip, 3 after 10 s, 0 after 60 s`: how many resolvers held the old color over
/// time, from the timeline, at a few moments.
/// How many still held the old color 10 s, 30 s, ... after the flip, from the timeline.
fn decay(r: &StragglersReport) -> Option<String> {
    let flip = r.flip.as_ref()?;
    let held = |p: &TimelinePoint| p.counts.draining + p.counts.silent + p.counts.overdue;
    let mut parts = Vec::new();
    for after in [10u64, 30, 60, 120, 300, 600, 3600] {
        if let Some(p) = r
            .timeline
            .iter()
            .find(|p| p.at_ms >= flip.at_ms + after * 1000)
        {
            parts.push(format!("{} after {after} s", held(p)));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `1 query`, `2 queries`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One resolver on one line that says its class and what makes it one; `flip` is the count
/// of the flip the report is about.
fn format_resolver(v: &ResolverView, flip: u64) -> String {
    let who = match &v.subnet {
        Some(subnet) => format!("{} for {subnet}", v.resolver),
        None => v.resolver.to_string(),
    };
    let clamps = if v.clamps { " (clamps TTLs)" } else { "" };
    let rhythm = match (v.interval_ms, v.interval_ratio) {
        (Some(ms), Some(ratio)) => format!(
            "; re-queries every {:.1} s = {ratio:.1} x its TTL{clamps}",
            f64::from(ms) / 1000.0
        ),
        _ => String::new(),
    };
    let class = class_name(v.class);
    let line = what_makes_it(v, flip);
    // Named when a secondary is among the servers it asked: alone, this server goes without
    // saying.
    let via = if v.via.iter().any(|s| s != crate::protocol::VIA_PRIMARY) {
        format!(" (asked {})", v.via.join(", "))
    } else {
        String::new()
    };
    format!("{who:<22} {class}: {line}{rhythm}{via}")
}

/// What puts resolver `v` in its class, in words.
fn what_makes_it(v: &ResolverView, flip: u64) -> String {
    match (v.class, &v.straggler, &v.record) {
        (ResolverClass::Straggler, Some(s), _) => format!(
            "asked for the old color's name {} after every reason to ask for it had expired (first {}, last {}, {:.1} s past expiry)",
            plural(s.count.into(), "time", "times"),
            format_utc(s.first_ms),
            format_utc(s.last_ms),
            f64::from(s.late_ms) / 1000.0
        ),
        (ResolverClass::Straggler, None, Some(record)) => format!(
            "kept the old color {:.1} s past {} and did not get {} until {}",
            record.late_by_ms as f64 / 1000.0,
            late_from(record),
            v.color,
            record.converged_at_ms.map_or("-".into(), format_utc)
        ),
        (ResolverClass::Converged, _, Some(record)) if record.held_old => format!(
            "got {} at {}, {:.1} s after {} (on time)",
            v.color,
            record.converged_at_ms.map_or("-".into(), format_utc),
            record.late_by_ms as f64 / 1000.0,
            late_from(record)
        ),
        (ResolverClass::Converged, _, _)
            if v.flips < flip && v.expires_at_ms <= clock::now_ms() =>
        {
            format!(
                "got {} at {} (TTL {} s), before the flip, and has not asked since: it never held the old color",
                v.color,
                format_utc(v.answered_at_ms),
                v.ttl
            )
        }
        (ResolverClass::Converged, _, _) => format!(
            "holds {} (TTL {} s), answered {}",
            v.color,
            v.ttl,
            format_utc(v.answered_at_ms)
        ),
        (ResolverClass::Draining, _, _) => format!(
            "holds {} (TTL {} s) until {}",
            v.color,
            v.ttl,
            format_utc(v.expires_at_ms)
        ),
        (ResolverClass::Overdue, _, _) => format!(
            "got {} at {} (TTL {} s, expired {}); its rhythm says it is long overdue",
            v.color,
            format_utc(v.answered_at_ms),
            v.ttl,
            format_utc(v.expires_at_ms)
        ),
        _ => format!(
            "got {} at {} (TTL {} s, expired {}); not seen since",
            v.color,
            format_utc(v.answered_at_ms),
            v.ttl,
            format_utc(v.expires_at_ms)
        ),
    }
}

/// One secondary's dnstap stream on one line.
fn format_stream(s: &StreamView) -> String {
    let who = if s.secondary {
        format!("secondary {}", s.name)
    } else {
        format!(
            "sender {:?} (no [[secondary]] with this dnstap_identity)",
            s.identity
        )
    };
    let state = match s.since_ms {
        Some(since) => format!("streams since {}", format_utc(since)),
        None => "does NOT stream".to_string(),
    };
    format!(
        "{who} {state}: {}, {}, {} dropped, {} skipped, {} closed for bad input",
        plural(s.frames, "frame", "frames"),
        plural(s.observed, "answer", "answers"),
        s.dropped,
        s.skipped,
        plural(s.errors, "stream", "streams")
    )
}

/// What lateness was counted from: the flip, or the old answer's expiry when later.
fn late_from(record: &FlipRecord) -> String {
    match (record.late_from_ms, record.old_expired_at_ms) {
        (Some(from), Some(expired)) if from == expired => {
            format!("the expiry of its old answer ({})", format_utc(expired))
        }
        (Some(from), _) => format!("the flip ({})", format_utc(from)),
        _ => "the flip".into(),
    }
}

/// Human-readable `reload`.
pub fn reloaded(r: &Reloaded) -> String {
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let mut out = format!(
        "reloaded: added {}; removed {}; changed {}\n",
        list(&r.added),
        list(&r.removed),
        list(&r.changed)
    );
    for zone in &r.serials {
        out.push_str(&format!("zone {} serial {}\n", zone.origin, zone.serial));
    }
    for setting in &r.restart_needed {
        out.push_str(&format!(
            "{setting} changed: it takes effect at the next restart\n"
        ));
    }
    for color in &r.addresses_from_config {
        out.push_str(&format!("addresses: {color}\n"));
    }
    out
}

fn phase_name(name: PhaseName) -> &'static str {
    match name {
        PhaseName::Steady => "steady",
        PhaseName::Preparing => "preparing",
        PhaseName::Settling => "settling",
    }
}

fn class_name(class: ResolverClass) -> &'static str {
    match class {
        ResolverClass::Straggler => "straggler",
        ResolverClass::Overdue => "overdue",
        ResolverClass::Draining => "draining",
        ResolverClass::Silent => "silent",
        ResolverClass::Converged => "converged",
    }
}
