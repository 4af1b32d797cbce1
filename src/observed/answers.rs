//! Service answers on their way from the query path to the straggler ledger.
//!
//! Each receive loop hands its answers to a [`Recorder`], which packs them into a batch
//! (16 bytes each, see [`super::batch`]): no lock, and no allocation once warm. A full
//! batch, or the batch of a loop whose socket has gone idle, goes into the [`Intake`], a
//! bounded queue, without waking anyone; when the queue is full the batch is dropped and
//! counted. The ledger takes the batches out on its own schedule and hands the emptied
//! ones back, so the receive loops need not allocate.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};

use super::batch::Batch;
use crate::color::Color;
use crate::wire::subnet::ClientSubnet;

/// Observations a receive loop gathers before handing them over.
pub const BATCH: usize = 256;
/// A batch is handed over when full, or once its first observation is this old (a loop
/// that idles hands over what it has after this long): by size or time, never by each brief
/// idle moment, which at ordinary rates made batches of one and filled the queue.
pub const HANDOVER_AFTER_MS: u64 = 20;
/// Batches queued for the ledger before new ones are dropped.
pub const QUEUE_BATCHES: usize = 256;

/// Through which of its names a service was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `SERVICE.ZONE` (or a static CNAME leading to it): follows the live color.
    Service,
    /// `blue.SERVICE.ZONE` or `green.SERVICE.ZONE`: always that color.
    Color,
}

/// One service answer, as the query path saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Milliseconds on the coarse monotonic clock (one clock read per answer, the same the
    /// drain input takes); the ledger turns it into wall-clock time.
    pub at_ms: u64,
    /// The source address of the query: the resolver.
    pub resolver: IpAddr,
    pub subnet: Option<ClientSubnet>,
    /// The service's stable id ([`crate::records::ServingService::id`]): the same for the
    /// life of the process across reloads, unlike its index in the catalog.
    pub service: u32,
    /// The color answered.
    pub color: Color,
    /// Asked by the service name or by a color name.
    pub name: NameKind,
    pub ttl: u32,
    /// The service's flip count when the answer was given, modulo 256: the answer is judged
    /// against the flip that was live then, never against one that came later or a stale
    /// copy. The ledger knows the full counts; 256 flips between an answer and its arrival
    /// at the ledger (tens of milliseconds) do not happen.
    pub flip_tag: u8,
    /// Which server gave the answer: [`LOCAL`] for this one, else the ledger's id of a
    /// secondary whose dnstap stream carried it (and then `flip_tag` is not used: which
    /// flip a secondary's answer belongs to is read from the color it gave).
    pub via: u8,
}

/// [`Observation::via`] of this server's own answers.
pub const LOCAL: u8 = 0;

/// The tag of flip count `flips` ([`Observation::flip_tag`]).
pub fn flip_tag(flips: u64) -> u8 {
    flips as u8
}

/// The bounded queue between the receive loops and the ledger.
#[derive(Debug)]
pub struct Intake {
    /// Full batches on their way to the ledger. The receive loops never wake anyone: the
    /// ledger drains the queue on its own schedule.
    queue: mpsc::SyncSender<Batch>,
    arrivals: Mutex<mpsc::Receiver<Batch>>,
    /// Emptied batches, handed back to the receive loops so they need not allocate.
    free: Mutex<Vec<Batch>>,
    /// Observations dropped because the queue was full.
    dropped: AtomicU64,
}

impl Intake {
    pub fn new() -> Arc<Intake> {
        let (queue, arrivals) = mpsc::sync_channel(QUEUE_BATCHES);
        Arc::new(Intake {
            queue,
            arrivals: Mutex::new(arrivals),
            free: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        })
    }

    /// A recorder for one receive loop or connection.
    pub fn recorder(self: &Arc<Intake>) -> Recorder {
        Recorder {
            batch: Batch::new(),
            intake: Some(self.clone()),
        }
    }

    /// Hands every batch that has arrived to `apply`, then back to the receive loops.
    pub fn drain(&self, mut apply: impl FnMut(&Batch)) {
        let arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(mut batch) = arrivals.try_recv() {
            apply(&batch);
            batch.clear();
            self.free().push(batch);
        }
    }

    /// Observations dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Batch>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Gathers the observations of one receive loop; hands them over when the batch is full and
/// when [`Recorder::flush`] is called (the loop's socket is idle).
pub struct Recorder {
    batch: Batch,
    intake: Option<Arc<Intake>>,
}

impl Recorder {
    /// A recorder into `intake`, or one that records nothing when the ledger is off.
    pub fn new(intake: Option<&Arc<Intake>>) -> Recorder {
        intake.map_or_else(Recorder::off, Intake::recorder)
    }

    /// A recorder that records nothing: the ledger is off.
    pub fn off() -> Recorder {
        Recorder {
            batch: Batch::default(),
            intake: None,
        }
    }

    pub fn is_on(&self) -> bool {
        self.intake.is_some()
    }

    #[inline]
    pub fn record(&mut self, observation: Observation) {
        if self.intake.is_some() && !self.batch.push(&observation) {
            self.flush();
            self.batch.push(&observation);
        }
    }

    /// When the batch is due to be handed over (monotonic milliseconds), if it holds any.
    pub fn due_ms(&self) -> Option<u64> {
        (self.intake.is_some() && !self.batch.is_empty())
            .then(|| self.batch.since_ms() + HANDOVER_AFTER_MS)
    }

    /// Hands the batch over if it is due at `now_ms` (monotonic).
    pub fn flush_if_due(&mut self, now_ms: u64) {
        if self.due_ms().is_some_and(|due| now_ms >= due) {
            self.flush();
        }
    }

    /// Hands the batch to the ledger now.
    pub fn flush(&mut self) {
        let Some(intake) = &self.intake else { return };
        if self.batch.is_empty() {
            return;
        }
        let fresh = intake.free().pop().unwrap_or_default();
        let full = std::mem::replace(&mut self.batch, fresh);
        if let Err(e) = intake.queue.try_send(full) {
            let mut lost = match e {
                mpsc::TrySendError::Full(batch) | mpsc::TrySendError::Disconnected(batch) => batch,
            };
            intake
                .dropped
                .fetch_add(lost.iter().count() as u64, Relaxed);
            lost.clear();
            intake.free().push(lost);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}
