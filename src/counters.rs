//! Server-wide counters: responses by transport and RCODE, packets dropped, TCP and admin
//! connections turned away. Relaxed atomics bumped where things happen; read when
//! `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::wire::{Dropped, Transport, rcode_name};

/// RCODEs counted apart; anything else is counted as `OTHER`.
pub const COUNTED_RCODES: [u16; 9] = [0, 1, 2, 3, 4, 5, 9, 16, u16::MAX];

/// Counters of the whole server.
#[derive(Debug, Default)]
pub struct Counters {
    /// Responses sent, by transport and RCODE (index into [`COUNTED_RCODES`]).
    responses: [[AtomicU64; COUNTED_RCODES.len()]; 2],
    /// Packets not answered, by [`Dropped`] reason.
    dropped: [AtomicU64; 2],
    /// Open DNS-over-TCP connections.
    pub tcp_open: AtomicU64,
    /// TCP connections closed at once because `tcp_connections` were open.
    pub tcp_refused: AtomicU64,
    /// TCP connections closed for idling or stalling past their timeouts.
    pub tcp_timeouts: AtomicU64,
    /// Admin clients turned away (limit reached, or a peer not allowed).
    pub admin_refused: AtomicU64,
}

impl Counters {
    pub fn answered(&self, transport: Transport, rcode: u16) {
        let index = COUNTED_RCODES
            .iter()
            .position(|&r| r == rcode)
            .unwrap_or(COUNTED_RCODES.len() - 1);
        self.responses[transport as usize][index].fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, reason: Dropped) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
    }

    /// Responses sent, by transport and RCODE name.
    pub fn responses(&self) -> impl Iterator<Item = (Transport, &'static str, u64)> + '_ {
        Transport::ALL.into_iter().flat_map(move |t| {
            COUNTED_RCODES.iter().enumerate().map(move |(i, &rcode)| {
                (
                    t,
                    rcode_name(rcode),
                    self.responses[t as usize][i].load(Relaxed),
                )
            })
        })
    }

    pub fn dropped_by(&self, reason: Dropped) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }
}
