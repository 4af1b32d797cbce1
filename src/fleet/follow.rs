//! Following the secondaries until each serves a serial: what a flip's reply waits for.
//!
//! [`Follow::next`] yields each secondary's arrival once, a reminder of who is behind
//! every [`REMIND_EVERY`], and the outcome when every one serves the serial, when the wait
//! runs out, or at shutdown. It reads the fleet's status and wakes on its changes; the
//! admin layer only turns the events into lines.

use std::collections::VecDeque;
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Behind, Fleet};

/// How often a follower hears who is still behind, at least.
pub const REMIND_EVERY: Duration = Duration::from_secs(1);

/// A secondary seen serving the serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub name: String,
    /// Milliseconds from `since` (the flip) to its SOA answer with the serial.
    pub after_ms: u64,
}

/// How a follow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Every secondary seen serving the serial, in the order they were seen.
    pub converged: Vec<Arrival>,
    /// The secondaries that did not, and why.
    pub behind: Vec<Behind>,
    /// Whether it waited for them: `false` when asked not to, and at shutdown.
    pub waited: bool,
}

/// What a follower hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A secondary serves the serial now.
    Arrived(Arrival),
    /// These are still behind (every [`REMIND_EVERY`]).
    Waiting(Vec<Behind>),
    /// The end; nothing follows.
    Done(Outcome),
}

/// Follows the fleet on one zone's serial; see the module docs.
pub struct Follow<'f> {
    fleet: &'f Fleet,
    zone: Name,
    serial: u32,
    since_ms: u64,
    /// Whether to wait at all: without, the first call reports what is known and ends.
    wait: bool,
    deadline: Instant,
    changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
    converged: Vec<Arrival>,
    queued: VecDeque<Event>,
    done: bool,
}

impl Fleet {
    /// Follows the secondaries until every one serves `serial` of `zone` (or a later one),
    /// for up to `wait` (`None`: report what is known now and end). Arrivals are timed
    /// from `since_ms` (Unix ms).
    pub fn follow(
        &self,
        zone: Name,
        serial: u32,
        since_ms: u64,
        wait: Option<Duration>,
        shutdown: CancellationToken,
    ) -> Follow<'_> {
        Follow {
            fleet: self,
            zone,
            serial,
            since_ms,
            wait: wait.is_some(),
            deadline: Instant::now() + wait.unwrap_or_default(),
            changes: self.changes(),
            shutdown,
            converged: Vec::new(),
            queued: VecDeque::new(),
            done: false,
        }
    }
}

impl Follow<'_> {
    /// The next event; `None` after [`Event::Done`].
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let behind = self.look();
            if !self.queued.is_empty() {
                continue;
            }
            if behind.is_empty() || !self.wait || Instant::now() >= self.deadline {
                return Some(self.finish(behind, self.wait));
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Some(self.finish(behind, false)),
                _ = self.changes.changed() => {}
                _ = tokio::time::sleep_until(self.deadline) => {}
                _ = tokio::time::sleep(REMIND_EVERY) => return Some(Event::Waiting(behind)),
            }
        }
    }

    /// Queues an arrival for each secondary newly seen serving the serial; returns those
    /// still behind.
    fn look(&mut self) -> Vec<Behind> {
        let behind = self.fleet.behind(&self.zone, self.serial);
        for status in self.fleet.status() {
            let caught_up = !behind.iter().any(|b| b.name == status.name);
            if !caught_up || self.converged.iter().any(|c| c.name == status.name) {
                continue;
            }
            let serves = status
                .zones
                .iter()
                .find(|z| z.origin == self.zone)
                .and_then(|z| z.link.serves);
            let arrival = Arrival {
                name: status.name.clone(),
                after_ms: serves.map_or(0, |s| s.at_ms.saturating_sub(self.since_ms)),
            };
            self.converged.push(arrival.clone());
            self.queued.push_back(Event::Arrived(arrival));
        }
        behind
    }

    fn finish(&mut self, behind: Vec<Behind>, waited: bool) -> Event {
        self.done = true;
        Event::Done(Outcome {
            converged: self.converged.clone(),
            behind,
            waited,
        })
    }
}
