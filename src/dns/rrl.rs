//! Response rate limiting (RRL) for UDP: responses per second per source prefix, with slip.
//!
//! Spoofed queries turn an authoritative server into an amplifier aimed at the spoofed
//! address. Each source prefix (/24 for IPv4, /56 for IPv6 by default) may get
//! `responses_per_second` responses in each second; beyond that, every `slip`th response is
//! sent truncated (TC set, no records: a real client retries over TCP, where spoofing does
//! not work) and the rest are dropped. The table is a fixed array of buckets indexed by a
//! keyed hash of the prefix, so its memory never grows; prefixes that hash alike share a
//! bucket. Off by default, as in Knot and BIND.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::RrlConfig;

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send it truncated: header and question, TC set.
    Slip,
    Drop,
}

/// The limiter shared by every UDP receive loop.
#[derive(Debug)]
pub struct Limiter {
    /// Per bucket: the second it counts (high 32 bits) and responses in it (low 32 bits).
    buckets: Box<[AtomicU64]>,
    rate: u32,
    slip: u32,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    /// Random key of the bucket hash, so a flood cannot aim at one bucket.
    seed: u64,
    pub limited: AtomicU64,
    pub slipped: AtomicU64,
    pub dropped: AtomicU64,
}

impl Limiter {
    pub fn new(config: &RrlConfig) -> Limiter {
        let seed = std::collections::hash_map::RandomState::new();
        let seed = std::hash::BuildHasher::hash_one(&seed, 0x5EED_u64) | 1;
        Limiter {
            buckets: (0..config.table_size).map(|_| AtomicU64::new(0)).collect(),
            rate: config.responses_per_second,
            slip: config.slip,
            ipv4_prefix: config.ipv4_prefix,
            ipv6_prefix: config.ipv6_prefix,
            seed,
            limited: AtomicU64::new(0),
            slipped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Counts one response to `source` at `now_ms` and says whether it may go.
    pub fn check(&self, source: IpAddr, now_ms: u64) -> Verdict {
        let bucket = &self.buckets[self.bucket(source)];
        let second = (now_ms / 1000) as u32;
        let mut current = bucket.load(Relaxed);
        let count = loop {
            let (at, count) = ((current >> 32) as u32, current as u32);
            let count = if at == second {
                count.saturating_add(1)
            } else {
                1
            };
            let next = (u64::from(second) << 32) | u64::from(count);
            match bucket.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => break count,
                Err(actual) => current = actual,
            }
        };
        if count <= self.rate {
            return Verdict::Send;
        }
        self.limited.fetch_add(1, Relaxed);
        if self.slip > 0 && (count - self.rate).is_multiple_of(self.slip) {
            self.slipped.fetch_add(1, Relaxed);
            Verdict::Slip
        } else {
            self.dropped.fetch_add(1, Relaxed);
            Verdict::Drop
        }
    }

    fn bucket(&self, source: IpAddr) -> usize {
        let prefix: u128 = match source {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.ipv4_prefix))
                    .unwrap_or(0);
                u128::from(u32::from(v4) & mask) | (4 << 120)
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                u128::from(v6) & mask
            }
        };
        let folded = (prefix as u64) ^ ((prefix >> 64) as u64).rotate_left(29);
        let mixed = (folded ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((mixed ^ (mixed >> 29)) % self.buckets.len() as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, slip: u32) -> Limiter {
        Limiter::new(&RrlConfig {
            enabled: true,
            responses_per_second: rate,
            slip,
            ..RrlConfig::default()
        })
    }

    #[test]
    fn a_prefix_gets_its_rate_then_slips_and_drops() {
        let rrl = limiter(10, 2);
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..30).map(|_| rrl.check(source, 5_000)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Send));
        assert_eq!(
            verdicts[10..]
                .iter()
                .filter(|v| **v == Verdict::Slip)
                .count(),
            10
        );
        assert_eq!(
            verdicts[10..]
                .iter()
                .filter(|v| **v == Verdict::Drop)
                .count(),
            10
        );
        // The same /24 shares the budget; the next second starts afresh.
        assert_eq!(
            rrl.check("192.0.2.200".parse().unwrap(), 5_999),
            Verdict::Drop
        );
        assert_eq!(rrl.check(source, 6_000), Verdict::Send);
        assert_eq!(rrl.limited.load(Relaxed), 21);
    }

    #[test]
    fn prefixes_are_counted_apart() {
        let rrl = limiter(1, 0);
        assert_eq!(rrl.check("192.0.2.1".parse().unwrap(), 0), Verdict::Send);
        assert_eq!(
            rrl.check("192.0.2.2".parse().unwrap(), 0),
            Verdict::Drop,
            "slip 0 drops everything"
        );
        assert_eq!(
            rrl.check("192.0.3.1".parse().unwrap(), 0),
            Verdict::Send,
            "another /24"
        );
        assert_eq!(
            rrl.check("2001:db8:0:100::1".parse().unwrap(), 0),
            Verdict::Send
        );
        assert_eq!(
            rrl.check("2001:db8:0:1ff::2".parse().unwrap(), 0),
            Verdict::Drop,
            "same /56"
        );
    }
}
