//! What the running server has seen of each service: answers by color and when the last
//! answer with the normal TTL expires (written by the query path), flips by outcome (by the
//! cutover), and the latest health checks of both colors (by the background checks).
//!
//! One [`Observed`] per service is shared by every snapshot of it, so a flip or a reload
//! does not reset it. The cutover reads the normal-TTL expiry as its drain input;
//! `status` and `/metrics` read the rest. Nothing here is persisted: a restart starts
//! afresh, and the cutover assumes the worst about what it cannot remember.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::color::Color;

/// Outcomes of flips, counted per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipResult {
    Done = 0,
    RefusedUnhealthy = 1,
    RefusedInterval = 2,
    Cancelled = 3,
    /// A secondary did not confirm the short TTL in time.
    RefusedSecondaries = 4,
}

impl FlipResult {
    pub const ALL: [FlipResult; 5] = [
        FlipResult::Done,
        FlipResult::RefusedUnhealthy,
        FlipResult::RefusedInterval,
        FlipResult::Cancelled,
        FlipResult::RefusedSecondaries,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlipResult::Done => "done",
            FlipResult::RefusedUnhealthy => "refused_unhealthy",
            FlipResult::RefusedInterval => "refused_interval",
            FlipResult::Cancelled => "cancelled",
            FlipResult::RefusedSecondaries => "refused_secondaries",
        }
    }
}

/// What the server has seen of one service since it started.
#[derive(Debug)]
pub struct Observed {
    /// Answers given, by color.
    answers: [AtomicU64; 2],
    /// Flips, by [`FlipResult`].
    flips: [AtomicU64; FlipResult::ALL.len()],
    /// When the last answer given with the normal TTL expires, on the coarse monotonic
    /// clock (milliseconds): no cache that obeys TTLs holds one after it. An expiry rather
    /// than a time, so a TTL changed by a reload is counted right. Starts at the process
    /// start plus the TTL for a service that starts steady, because the previous process
    /// may have answered just before it stopped.
    long_expiry_ms: AtomicU64,
    /// Latest background health checks.
    pub health: HealthBoard,
}

impl Observed {
    /// Observations of a service whose normal-TTL answers (as far as is known) expire at
    /// `long_expiry_ms` on the monotonic clock.
    pub fn new(long_expiry_ms: u64) -> Observed {
        Observed {
            answers: Default::default(),
            flips: Default::default(),
            long_expiry_ms: AtomicU64::new(long_expiry_ms),
            health: HealthBoard::default(),
        }
    }

    #[inline]
    pub fn answered(&self, color: Color) {
        self.answers[color.index()].fetch_add(1, Relaxed);
    }

    pub fn answers(&self, color: Color) -> u64 {
        self.answers[color.index()].load(Relaxed)
    }

    /// Notes a normal-TTL answer that expires at `expiry_ms` (monotonic). On the query
    /// path: the shared cache line is written at most once per clock tick, not once per
    /// query.
    #[inline]
    pub fn long_answer(&self, expiry_ms: u64) {
        if expiry_ms > self.long_expiry_ms.load(Relaxed) {
            self.long_expiry_ms.fetch_max(expiry_ms, Relaxed);
        }
    }

    /// When the last normal-TTL answer expires (monotonic milliseconds).
    pub fn long_expiry_ms(&self) -> u64 {
        self.long_expiry_ms.load(Relaxed)
    }

    pub fn flipped(&self, result: FlipResult) {
        self.flips[result as usize].fetch_add(1, Relaxed);
    }

    pub fn flips(&self, result: FlipResult) -> u64 {
        self.flips[result as usize].load(Relaxed)
    }
}

/// Health of every address of one color, as one check found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColorHealth {
    pub color: Color,
    pub checked_at_ms: u64,
    pub addresses: Vec<AddressHealth>,
}

impl ColorHealth {
    pub fn healthy(&self) -> usize {
        self.addresses.iter().filter(|a| a.healthy).count()
    }

    pub fn all_healthy(&self) -> bool {
        self.addresses.iter().all(|a| a.healthy)
    }

    /// `198.51.100.11 (connection refused), ...`: the failing addresses and why.
    pub fn failing(&self) -> String {
        let failing: Vec<String> = self
            .addresses
            .iter()
            .filter(|a| !a.healthy)
            .map(|a| format!("{} ({})", a.address, a.detail))
            .collect();
        failing.join(", ")
    }
}

/// One address's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressHealth {
    pub address: IpAddr,
    pub port: u16,
    pub healthy: bool,
    /// `HTTP 200`, `HTTP 503`, `connection refused`, `timeout after 2000 ms`, ...
    pub detail: String,
}

/// The latest background results of both colors of one service.
#[derive(Debug, Default)]
pub struct HealthBoard {
    colors: Mutex<[Option<ColorHealth>; 2]>,
}

impl HealthBoard {
    pub fn get(&self, color: Color) -> Option<ColorHealth> {
        self.lock()[color.index()].clone()
    }

    pub fn set(&self, color: Color, health: ColorHealth) {
        self.lock()[color.index()] = Some(health);
    }

    /// The board, even if a holder panicked: the values are replaced whole, never half.
    fn lock(&self) -> std::sync::MutexGuard<'_, [Option<ColorHealth>; 2]> {
        self.colors.lock().unwrap_or_else(|e| e.into_inner())
    }
}
