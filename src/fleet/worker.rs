//! The task of one secondary: NOTIFY it of every new serial of every zone, and ask which
//! serial it serves, often while it is behind, now and then once it is current.
//!
//! NOTIFY goes out at once when a serial changes (and at start), again after
//! `notify_retry`, doubling, until acknowledged or `notify_retries` run out. While the
//! secondary is behind, its SOA is asked every [`FIRST_POLL`], doubling to [`MAX_POLL`]: a
//! transfer of a changed zone takes milliseconds, and the cutover is waiting for it. Once it
//! is current, every `check_interval`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::time::Instant;

use super::{Fleet, Link, LinkError, NotifyState, Secondary, Serves, client};
use crate::records::ZoneRecord;
use crate::state::serial_after;

/// First pause between SOA questions to a secondary that is behind.
const FIRST_POLL: Duration = Duration::from_millis(10);
/// Longest pause between SOA questions to a secondary that is behind.
const MAX_POLL: Duration = Duration::from_secs(1);
/// Time allowed for an answer to one SOA question (see [`super::UNREACHABLE_BOUND`]).
pub(super) const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the worker stands with one zone.
struct Work {
    /// The serial being brought to the secondary.
    serial: u32,
    notify_tries: u32,
    notify_done: bool,
    notify_acked: bool,
    next_notify: Instant,
    next_probe: Instant,
    gap: Duration,
}

impl Work {
    fn new(serial: u32, now: Instant) -> Work {
        Work {
            serial,
            notify_tries: 0,
            notify_done: false,
            notify_acked: false,
            next_notify: now,
            next_probe: now + FIRST_POLL,
            gap: FIRST_POLL,
        }
    }
}

pub async fn run(fleet: Arc<Fleet>, secondary: Arc<Secondary>) {
    let mut published = fleet.records.published();
    let mut work: HashMap<Name, Work> = HashMap::new();
    loop {
        let snapshot = fleet.records.load_full();
        let now = Instant::now();
        work.retain(|origin, _| snapshot.zones.iter().any(|z| z.origin == *origin));
        for (index, zone) in snapshot.zones.iter().enumerate() {
            let entry = work
                .entry(zone.origin.clone())
                .or_insert_with(|| Work::new(zone.serial, now));
            if entry.serial != zone.serial {
                *entry = Work::new(zone.serial, now);
                let at_ms = fleet.clock.now_ms();
                secondary.update(&zone.origin, |link| {
                    link.behind_since_ms.get_or_insert(at_ms);
                });
            }
            if !entry.notify_done && entry.next_notify <= now {
                notify(&fleet, &secondary, &snapshot.soa(index), entry).await;
            }
            if entry.next_probe <= Instant::now() {
                probe(&fleet, &secondary, &zone.origin, entry).await;
            }
        }
        let wake = work
            .values()
            .flat_map(|w| {
                [
                    Some(w.next_probe),
                    (!w.notify_done).then_some(w.next_notify),
                ]
            })
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + secondary.fleet.check_interval);
        tokio::select! {
            _ = secondary.stop.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
            changed = published.changed() => if changed.is_err() { return },
            _ = secondary.poke.notified() => {
                let now = Instant::now();
                for w in work.values_mut() {
                    w.next_probe = now;
                    w.gap = FIRST_POLL;
                }
            }
        }
    }
}

/// Sends one NOTIFY of `soa` and schedules the next try.
async fn notify(fleet: &Fleet, secondary: &Secondary, soa: &ZoneRecord, work: &mut Work) {
    let config = &secondary.fleet;
    let now_s = fleet.clock.now_ms() / 1000;
    let timeout = config.notify_retry.min(ASK_TIMEOUT);
    let result = client::notify(
        secondary.config.address,
        soa,
        secondary.key.as_deref(),
        now_s,
        timeout,
    )
    .await;
    work.notify_tries += 1;
    let backoff = config.notify_retry * 2u32.saturating_pow(work.notify_tries - 1);
    work.next_notify = Instant::now() + backoff;
    let acked = result.is_ok();
    work.notify_acked = acked;
    work.notify_done = acked || work.notify_tries > config.notify_retries;
    let at_ms = fleet.clock.now_ms();
    let state = NotifyState {
        serial: work.serial,
        at_ms,
        tries: work.notify_tries,
        acked,
    };
    let error = result.err().map(|e| {
        let last = if work.notify_done { ", giving up" } else { "" };
        format!(
            "NOTIFY of serial {} (try {}{last}): {e}",
            work.serial, work.notify_tries
        )
    });
    let logged = error.clone();
    secondary.update(&soa.name, |link| {
        link.notify = Some(state);
        link.notifies += 1;
        if let Some(error) = error {
            link.errors += 1;
            link.error = Some(LinkError {
                message: error,
                at_ms,
            });
        }
    });
    if let Some(error) = logged {
        tracing::warn!(secondary = %secondary.config.name, zone = %soa.name, "{error}");
    }
    fleet.changed();
}

impl Work {
    /// When to ask again after a probe: at the check interval once the secondary is
    /// current, sooner and backing off while it is not; and NOTIFY again when it answers,
    /// is still behind, and the NOTIFYs ran out unacknowledged.
    fn schedule_after_probe(&mut self, current: bool, answered: bool, check_interval: Duration) {
        if current {
            self.notify_done = true;
            self.next_probe = Instant::now() + check_interval;
            self.gap = FIRST_POLL;
        } else {
            self.next_probe = Instant::now() + self.gap;
            self.gap = (self.gap * 2).min(MAX_POLL);
            if answered && self.notify_done && !self.notify_acked {
                self.notify_tries = 0;
                self.notify_done = false;
                self.next_notify = Instant::now();
            }
        }
    }
}

/// What one SOA probe changed that is worth saying.
#[derive(Default)]
struct Heard {
    /// It serves the current serial now, this long after it fell behind.
    caught_up: Option<u64>,
    /// A new error.
    failed: Option<String>,
    /// It became unreachable, failing since then.
    lost: Option<u64>,
    /// It answers again, after failing since then.
    back: Option<u64>,
}

/// Writes the probe's `result` (at `at_ms`; `current`: it serves our serial or later) into
/// `link`.
fn hear(
    link: &mut Link,
    result: &Result<u32, client::AskError>,
    at_ms: u64,
    current: bool,
) -> Heard {
    let mut heard = Heard::default();
    match result {
        Ok(serial) => {
            if current && link.behind_since_ms.is_some() {
                heard.caught_up = link
                    .behind_since_ms
                    .map(|since| at_ms.saturating_sub(since));
            }
            link.serves = Some(Serves {
                serial: *serial,
                at_ms,
            });
            if !link.reachable() {
                heard.back = link.failing_since_ms;
            }
            link.failures = 0;
            link.failing_since_ms = None;
            if current {
                link.behind_since_ms = None;
                link.error = None;
            } else {
                link.behind_since_ms.get_or_insert(at_ms);
            }
        }
        Err(e) => {
            let message = format!("SOA query: {e}");
            if link.error.as_ref().is_none_or(|e| e.message != message) {
                heard.failed = Some(message.clone());
            }
            link.errors += 1;
            link.error = Some(LinkError { message, at_ms });
            // Being unreachable is not being behind: what it last served stands.
            link.failing_since_ms.get_or_insert(at_ms);
            link.failures = link.failures.saturating_add(1);
            if link.failures == super::UNREACHABLE_AFTER {
                heard.lost = link.failing_since_ms;
            }
        }
    }
    heard
}

/// Asks which serial the secondary serves, and schedules the next question.
async fn probe(fleet: &Fleet, secondary: &Secondary, zone: &Name, work: &mut Work) {
    let now_s = fleet.clock.now_ms() / 1000;
    let result = client::serial(
        secondary.config.address,
        zone,
        secondary.key.as_deref(),
        now_s,
        ASK_TIMEOUT,
    )
    .await;
    let at_ms = fleet.clock.now_ms();
    let current = result
        .as_ref()
        .is_ok_and(|&s| s == work.serial || serial_after(s, work.serial));
    work.schedule_after_probe(current, result.is_ok(), secondary.fleet.check_interval);
    let mut heard = Heard::default();
    let mut changed = false;
    secondary.update(zone, |link| {
        let before = (
            link.serves.map(|s| s.serial),
            link.error.clone().map(|e| e.message),
            link.reachable(),
        );
        heard = hear(link, &result, at_ms, current);
        changed = before
            != (
                link.serves.map(|s| s.serial),
                link.error.clone().map(|e| e.message),
                link.reachable(),
            );
    });
    let Heard {
        caught_up,
        failed,
        lost,
        back,
    } = heard;
    let name = &secondary.config.name;
    if let Some(after_ms) = caught_up {
        tracing::info!(secondary = %name, %zone, serial = work.serial, after_ms, "secondary serves the current serial");
    }
    if let Some(message) = failed {
        tracing::warn!(secondary = %name, %zone, "{message}");
    }
    if let Some(since) = lost {
        let since = crate::clock::format_utc(since);
        tracing::warn!(secondary = %name, %zone, "unreachable: {} SOA queries in a row failed since {since}", super::UNREACHABLE_AFTER);
    }
    if let Some(since) = back {
        let since = crate::clock::format_utc(since);
        tracing::info!(secondary = %name, %zone, "reachable again (unreachable since {since})");
    }
    // Only real changes wake the cutovers watching.
    if changed {
        fleet.changed();
    }
}
