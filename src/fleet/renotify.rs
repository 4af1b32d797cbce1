//! NOTIFY now, on an operator's request (`ctl notify`): every zone to one secondary or to
//! all, then what each serves, waiting a moment for one that is behind to catch up. What
//! the workers do on their own already (NOTIFY on every change, retried); this is for the
//! moment an operator wants it again, and to see the answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::task::JoinSet;

use super::worker::ASK_TIMEOUT;
use super::{Fleet, LinkError, NotifyState, Secondary, client};
use crate::records::ZoneRecord;
use crate::state::serial_after;

/// How long a secondary behind is given to serve our serial after the NOTIFY.
pub const CATCH_UP: Duration = Duration::from_secs(3);
/// Pause between SOA questions while waiting for it.
const POLL: Duration = Duration::from_millis(100);

/// What one secondary said.
#[derive(Debug, Clone)]
pub struct Notified {
    pub name: String,
    pub address: SocketAddr,
    pub zones: Vec<NotifiedZone>,
}

/// What one secondary said about one zone.
#[derive(Debug, Clone)]
pub struct NotifiedZone {
    pub origin: Name,
    /// The serial announced (ours).
    pub serial: u32,
    /// The NOTIFY's acknowledgement, or why there was none.
    pub acknowledged: Result<(), String>,
    /// The serial it serves after the NOTIFY (and up to [`CATCH_UP`] of waiting), or why
    /// it did not say.
    pub serves: Result<u32, String>,
}

/// `only` names no configured secondary.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no secondary {only:?} (configured: {known})")]
pub struct UnknownSecondary {
    pub only: String,
    pub known: String,
}

impl Fleet {
    /// Sends every zone's NOTIFY now to the secondary named (or addressed) `only`, or to
    /// every secondary, and returns what each said; the secondaries are asked at once.
    pub async fn notify_now(&self, only: Option<&str>) -> Result<Vec<Notified>, UnknownSecondary> {
        let all = self.secondaries().clone();
        let chosen: Vec<Arc<Secondary>> = all
            .iter()
            .filter(|s| {
                only.is_none_or(|o| s.config.name == o || s.config.address.to_string() == o)
            })
            .cloned()
            .collect();
        if let (Some(only), true) = (only, chosen.is_empty()) {
            let known: Vec<String> = all.iter().map(|s| s.config.name.clone()).collect();
            return Err(UnknownSecondary {
                only: only.into(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
        let snapshot = self.records.load_full();
        let soas: Arc<Vec<ZoneRecord>> =
            Arc::new((0..snapshot.zones.len()).map(|i| snapshot.soa(i)).collect());
        let mut asked = JoinSet::new();
        for (index, secondary) in chosen.iter().enumerate() {
            let (secondary, soas, clock) = (secondary.clone(), soas.clone(), self.clock.clone());
            asked.spawn(async move { (index, ask(&secondary, &soas, &clock).await) });
        }
        let mut answers: Vec<(usize, Notified)> = Vec::new();
        while let Some(done) = asked.join_next().await {
            if let Ok(answer) = done {
                answers.push(answer);
            }
        }
        answers.sort_by_key(|(index, _)| *index);
        self.changed();
        Ok(answers.into_iter().map(|(_, notified)| notified).collect())
    }
}

/// NOTIFYs `secondary` of each zone in `soas`, then asks its serial until it is ours or
/// [`CATCH_UP`] has passed; notes the NOTIFY in its status and wakes its worker, which asks
/// the serial itself and so settles behind, current and reachable (one writer of those).
async fn ask(secondary: &Secondary, soas: &[ZoneRecord], clock: &crate::clock::Clock) -> Notified {
    let (to, key) = (secondary.config.address, secondary.key.as_deref());
    let mut zones = Vec::new();
    for soa in soas {
        let serial = match &soa.rdata {
            hickory_proto::rr::RData::SOA(s) => s.serial,
            _ => 0,
        };
        let acknowledged = client::notify(to, soa, key, clock.now_ms() / 1000, ASK_TIMEOUT)
            .await
            .map_err(|e| e.to_string());
        let at_ms = clock.now_ms();
        secondary.update(&soa.name, |link| {
            link.notifies += 1;
            link.notify = Some(NotifyState {
                serial,
                at_ms,
                tries: 1,
                acked: acknowledged.is_ok(),
            });
            if let Err(e) = &acknowledged {
                link.errors += 1;
                link.error = Some(LinkError {
                    message: format!("NOTIFY of serial {serial} (asked by ctl notify): {e}"),
                    at_ms,
                });
            }
        });
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        let serves = loop {
            let answer = client::serial(to, &soa.name, key, clock.now_ms() / 1000, ASK_TIMEOUT)
                .await
                .map_err(|e| e.to_string());
            let current = answer
                .as_ref()
                .is_ok_and(|&s| s == serial || serial_after(s, serial));
            if current || answer.is_err() || tokio::time::Instant::now() + POLL >= deadline {
                break answer;
            }
            tokio::time::sleep(POLL).await;
        };
        zones.push(NotifiedZone {
            origin: soa.name.clone(),
            serial,
            acknowledged,
            serves,
        });
    }
    // Its worker asks again at once, and so settles behind/current and reachability.
    secondary.poke.notify_one();
    Notified {
        name: secondary.config.name.clone(),
        address: to,
        zones,
    }
}
