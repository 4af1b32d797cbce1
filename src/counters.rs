//! Server-wide counters: responses by transport and RCODE, packets dropped, TCP and admin
//! connections turned away, TSIG results, zone transfers. Relaxed atomics bumped where things happen; read when
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
    /// Signed requests, by what their TSIG check said ([`TSIG_RESULTS`]).
    tsig: [AtomicU64; TSIG_RESULTS.len()],
    /// Outgoing zone transfers, by [`TransferResult`].
    transfers: [AtomicU64; TransferResult::ALL.len()],
}

/// What a signed request's TSIG check can say.
pub const TSIG_RESULTS: [&str; 6] = [
    "none",
    "malformed",
    "badkey",
    "badsig",
    "badtime",
    "badtrunc",
];

/// How an outgoing zone transfer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferResult {
    /// The whole zone, asked by AXFR.
    Axfr = 0,
    /// The changes since the secondary's serial.
    Ixfr = 1,
    /// The whole zone for an IXFR whose serial the history does not reach.
    IxfrFull = 2,
    /// The SOA alone: the secondary was up to date.
    UpToDate = 3,
    /// Not a configured secondary, or not signed with its key.
    Refused = 4,
    /// Over `[limits] transfers`: answered SERVFAIL.
    Busy = 5,
    /// Cut off: the connection failed or `transfer_timeout` passed.
    Failed = 6,
}

impl TransferResult {
    pub const ALL: [TransferResult; 7] = [
        TransferResult::Axfr,
        TransferResult::Ixfr,
        TransferResult::IxfrFull,
        TransferResult::UpToDate,
        TransferResult::Refused,
        TransferResult::Busy,
        TransferResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferResult::Axfr => "axfr",
            TransferResult::Ixfr => "ixfr",
            TransferResult::IxfrFull => "ixfr_full",
            TransferResult::UpToDate => "up_to_date",
            TransferResult::Refused => "refused",
            TransferResult::Busy => "busy",
            TransferResult::Failed => "failed",
        }
    }
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

    /// Counts a signed request's TSIG result (one of [`TSIG_RESULTS`]).
    pub fn tsig(&self, result: &str) {
        if let Some(i) = TSIG_RESULTS.iter().position(|&r| r == result) {
            self.tsig[i].fetch_add(1, Relaxed);
        }
    }

    pub fn tsig_results(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        TSIG_RESULTS
            .iter()
            .zip(&self.tsig)
            .map(|(&name, count)| (name, count.load(Relaxed)))
    }

    pub fn transfer(&self, result: TransferResult) {
        self.transfers[result as usize].fetch_add(1, Relaxed);
    }

    pub fn transfers(&self) -> impl Iterator<Item = (TransferResult, u64)> + '_ {
        TransferResult::ALL
            .into_iter()
            .map(|r| (r, self.transfers[r as usize].load(Relaxed)))
    }
}
