//! Server-wide counters: responses by transport and RCODE, packets dropped, TCP and admin
//! connections turned away, TSIG results, zone transfers. Relaxed atomics bumped where things
//! happen; read when `/metrics` is scraped.
//!
//! The counters bumped on every query are sharded: each UDP worker owns a `Tally` on cache
//! lines of its own and bumps it without a locked instruction (it is the only writer); TCP
//! connections share one. A scrape sums them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::wire::{Dropped, Transport, rcode_name};

/// RCODEs counted apart; anything else is counted as `OTHER`.
pub const COUNTED_RCODES: [u16; 9] = [0, 1, 2, 3, 4, 5, 9, 16, u16::MAX];

/// What one writer counts per query, on cache lines no other writer touches.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Tally {
    /// Responses sent, by transport and RCODE (index into [`COUNTED_RCODES`]).
    responses: [[AtomicU64; COUNTED_RCODES.len()]; 2],
    /// Packets not answered, by [`Dropped`] reason.
    dropped: [AtomicU64; 2],
    /// Well-formed requests, by query type (index into [`COUNTED_QTYPES`]).
    qtypes: [AtomicU64; COUNTED_QTYPES.len()],
    /// Answers by how long they took in the server (index into [`DURATION_BUCKETS_US`];
    /// the last is beyond them), and the sum of those durations in nanoseconds.
    durations: [AtomicU64; DURATION_BUCKETS_US.len() + 1],
    duration_sum_ns: AtomicU64,
}

/// Upper bounds of the query-duration histogram's buckets, in microseconds. An answer's
/// duration is its time in the server: from the read of its datagram batch to the send of
/// the batch's answers (UDP), from its message read to its reply written (TCP).
pub const DURATION_BUCKETS_US: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
];

/// Query types counted apart, by name; anything else is counted as `OTHER`.
pub const COUNTED_QTYPES: [(u16, &str); 13] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (65, "HTTPS"),
    (255, "ANY"),
    (251, "IXFR"),
    (252, "AXFR"),
    (0, "OTHER"),
];

/// Which `Tally` a query path bumps, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shard {
    /// The shared one, with atomic additions: any number of writers (TCP connections).
    Shared,
    /// Worker `n`'s own: its only writer, so a plain load and store suffice.
    Owned(usize),
}

/// Counters of the whole server.
#[derive(Debug)]
pub struct Counters {
    /// `[0]` shared, `[1 + n]` UDP worker `n`'s.
    tallies: Box<[Tally]>,
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

impl Default for Counters {
    fn default() -> Counters {
        Counters::with_workers(0)
    }
}

/// Adds one to `counter` as `shard` may.
#[inline]
fn bump(counter: &AtomicU64, shard: Shard) {
    add(counter, 1, shard);
}

/// Adds `n` to `counter` as `shard` may.
#[inline]
fn add(counter: &AtomicU64, n: u64, shard: Shard) {
    match shard {
        Shard::Shared => {
            counter.fetch_add(n, Relaxed);
        }
        Shard::Owned(_) => counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed),
    }
}

impl Counters {
    /// Counters with a shard of its own for each of `workers` UDP workers.
    pub fn with_workers(workers: usize) -> Counters {
        Counters {
            tallies: (0..=workers).map(|_| Tally::default()).collect(),
            tcp_open: Default::default(),
            tcp_refused: Default::default(),
            tcp_timeouts: Default::default(),
            admin_refused: Default::default(),
            tsig: Default::default(),
            transfers: Default::default(),
        }
    }

    /// The shard of UDP worker `n` (of those asked for in [`Counters::with_workers`]);
    /// the shared one beyond them.
    pub fn worker(&self, n: usize) -> Shard {
        if n + 1 < self.tallies.len() {
            Shard::Owned(n + 1)
        } else {
            Shard::Shared
        }
    }

    fn tally(&self, shard: Shard) -> &Tally {
        match shard {
            Shard::Shared => &self.tallies[0],
            Shard::Owned(n) => &self.tallies[n],
        }
    }

    #[inline]
    pub fn answered(&self, shard: Shard, transport: Transport, rcode: u16) {
        let index = COUNTED_RCODES
            .iter()
            .position(|&r| r == rcode)
            .unwrap_or(COUNTED_RCODES.len() - 1);
        bump(
            &self.tally(shard).responses[transport as usize][index],
            shard,
        );
    }

    /// Counts a well-formed request of type `qtype`.
    #[inline]
    pub fn asked(&self, shard: Shard, qtype: u16) {
        let index = COUNTED_QTYPES
            .iter()
            .position(|&(t, _)| t == qtype)
            .unwrap_or(COUNTED_QTYPES.len() - 1);
        bump(&self.tally(shard).qtypes[index], shard);
    }

    /// Counts `answers` that took `elapsed` in the server (a batch's answers share its
    /// duration): one bucket and the sum, whatever the batch's size.
    #[inline]
    pub fn took(&self, shard: Shard, elapsed: std::time::Duration, answers: u64) {
        let micros = elapsed.as_micros() as u64;
        let index = DURATION_BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(DURATION_BUCKETS_US.len());
        let tally = self.tally(shard);
        add(&tally.durations[index], answers, shard);
        let nanos = elapsed.as_nanos() as u64;
        add(&tally.duration_sum_ns, nanos.saturating_mul(answers), shard);
    }

    /// The duration histogram summed over the shards: the answers in each bucket (not
    /// cumulative; the last is beyond [`DURATION_BUCKETS_US`]) and the sum in nanoseconds.
    pub fn durations(&self) -> ([u64; DURATION_BUCKETS_US.len() + 1], u64) {
        let buckets = std::array::from_fn(|i| self.sum(|tally| &tally.durations[i]));
        (buckets, self.sum(|tally| &tally.duration_sum_ns))
    }

    /// Well-formed requests by query type name, summed over the shards.
    pub fn requests(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        COUNTED_QTYPES
            .iter()
            .enumerate()
            .map(move |(i, &(_, name))| (name, self.sum(|tally| &tally.qtypes[i])))
    }

    #[inline]
    pub fn dropped(&self, shard: Shard, reason: Dropped) {
        bump(&self.tally(shard).dropped[reason as usize], shard);
    }

    /// Responses sent, by transport and RCODE name, summed over the shards.
    pub fn responses(&self) -> impl Iterator<Item = (Transport, &'static str, u64)> + '_ {
        Transport::ALL.into_iter().flat_map(move |t| {
            COUNTED_RCODES.iter().enumerate().map(move |(i, &rcode)| {
                let sum = self.sum(|tally| &tally.responses[t as usize][i]);
                (t, rcode_name(rcode), sum)
            })
        })
    }

    pub fn dropped_by(&self, reason: Dropped) -> u64 {
        self.sum(|tally| &tally.dropped[reason as usize])
    }

    /// One counter, summed over the shards (at scrape time).
    fn sum(&self, counter: impl Fn(&Tally) -> &AtomicU64) -> u64 {
        self.tallies
            .iter()
            .map(|tally| counter(tally).load(Relaxed))
            .sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_counts_on_lines_of_its_own_and_a_scrape_sums_them() {
        let counters = Counters::with_workers(2);
        let shards = [counters.worker(0), counters.worker(1), Shard::Shared];
        assert_eq!(shards[..2], [Shard::Owned(1), Shard::Owned(2)]);
        assert_eq!(
            counters.worker(2),
            Shard::Shared,
            "beyond the workers asked for"
        );
        for (n, shard) in shards.into_iter().enumerate() {
            for _ in 0..=n {
                counters.answered(shard, Transport::Udp, 0);
                counters.dropped(shard, Dropped::Short);
            }
        }
        let noerror = counters
            .responses()
            .find(|&(t, rcode, _)| t == Transport::Udp && rcode == "NOERROR")
            .unwrap();
        assert_eq!(noerror.2, 6);
        assert_eq!(counters.dropped_by(Dropped::Short), 6);
        counters.asked(Shard::Owned(1), 28);
        counters.asked(Shard::Shared, 28);
        counters.asked(Shard::Shared, 4242);
        let requests: Vec<_> = counters.requests().filter(|&(_, n)| n > 0).collect();
        assert_eq!(requests, [("AAAA", 2), ("OTHER", 1)]);
        assert!(
            std::mem::align_of::<Tally>() >= 128,
            "no two shards share a line"
        );
    }
}
