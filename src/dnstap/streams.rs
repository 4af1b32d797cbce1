//! Who streams: per sender (the identity its frames carry), what came in, what was lost,
//! and since when it has streamed without a gap, for the report's completeness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::answer::Skipped;

/// How the registry names frames from an identity beyond `[dnstap] senders`.
pub const OTHER: &str = "(other senders)";
/// How the registry names frames that carry no identity (NSD sends none by default).
pub const UNIDENTIFIED: &str = "(no identity)";

/// One sender's stream, as seen so far.
#[derive(Debug, Default)]
pub struct Sender {
    /// The identity its frames carry.
    pub identity: String,
    /// The ledger's id for it, which observations carry as `via`.
    pub via: u8,
    /// Data frames received.
    pub frames: AtomicU64,
    /// Frames that became observations.
    pub observed: AtomicU64,
    /// Frames dropped over `[dnstap] frames_per_second`.
    pub dropped: AtomicU64,
    /// Frames that were no service answer, by [`Skipped`].
    pub skipped: [AtomicU64; 4],
    /// Its streams closed for bad input.
    pub errors: AtomicU64,
    /// Its streams open now.
    connections: AtomicU64,
    /// Since when (Unix ms, and monotonic) it has streamed without a gap; 0 while it does
    /// not.
    since_ms: AtomicU64,
    since_mono: AtomicU64,
    /// When its latest frame came (Unix ms).
    pub last_frame_ms: AtomicU64,
}

impl Sender {
    /// A stream that opened at `opened` (Unix ms, monotonic) carries this sender's frames;
    /// `true` when it is the sender's only one (its stream is in from then).
    pub fn joined(&self, opened: (u64, u64)) -> bool {
        let first = self.connections.fetch_add(1, Relaxed) == 0;
        if first {
            self.since_ms.store(opened.0, Relaxed);
            self.since_mono.store(opened.1, Relaxed);
        }
        first
    }

    /// One of its streams closed; `true` when it was the last (its stream is out).
    pub fn left(&self) -> bool {
        let last = self.connections.fetch_sub(1, Relaxed) == 1;
        if last {
            self.since_ms.store(0, Relaxed);
            self.since_mono.store(0, Relaxed);
        }
        last
    }

    pub fn skipped(&self, why: Skipped) {
        self.skipped[why as usize].fetch_add(1, Relaxed);
    }

    /// Since when (Unix ms, monotonic) it has streamed without a gap, while it does.
    pub fn streaming_since(&self) -> Option<(u64, u64)> {
        let since = (self.since_ms.load(Relaxed), self.since_mono.load(Relaxed));
        (self.connections.load(Relaxed) > 0 && since.1 > 0).then_some(since)
    }
}

/// Every sender seen, bounded.
#[derive(Debug)]
pub struct Senders {
    limit: usize,
    by_identity: Mutex<HashMap<Vec<u8>, Arc<Sender>>>,
}

impl Senders {
    pub fn new(limit: usize) -> Senders {
        Senders {
            limit,
            by_identity: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Sender>>> {
        self.by_identity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sender of `identity` (registered on first sight, with `via` its ledger id; past
    /// the limit, the one standing for all others).
    pub fn get(&self, identity: &[u8], via: impl FnOnce(&str) -> u8) -> Arc<Sender> {
        let mut map = self.map();
        if let Some(sender) = map.get(identity) {
            return sender.clone();
        }
        let (key, name) = if map.len() < self.limit {
            let name = match identity {
                [] => UNIDENTIFIED.to_string(),
                _ => String::from_utf8_lossy(identity).into_owned(),
            };
            (identity.to_vec(), name)
        } else {
            (OTHER.as_bytes().to_vec(), OTHER.to_string())
        };
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(Sender {
                    via: via(&name),
                    identity: name,
                    ..Sender::default()
                })
            })
            .clone()
    }

    /// Every sender, by identity.
    pub fn all(&self) -> Vec<Arc<Sender>> {
        let mut all: Vec<Arc<Sender>> = self.map().values().cloned().collect();
        all.sort_by(|a, b| a.identity.cmp(&b.identity));
        all
    }

    /// The sender of `identity`, if it was seen.
    pub fn find(&self, identity: &str) -> Option<Arc<Sender>> {
        self.map().get(identity.as_bytes()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counts_from_its_first_connection_until_its_last_closes() {
        let senders = Senders::new(2);
        let ns2 = senders.get(b"ns2", |_| 1);
        assert_eq!(ns2.streaming_since(), None);
        ns2.joined((1_000, 10));
        ns2.joined((2_000, 20));
        ns2.left();
        assert_eq!(ns2.streaming_since(), Some((1_000, 10)), "one still open");
        ns2.left();
        assert_eq!(ns2.streaming_since(), None, "a gap");
        ns2.joined((5_000, 50));
        assert_eq!(ns2.streaming_since(), Some((5_000, 50)));
    }

    #[test]
    fn senders_beyond_the_limit_share_one_entry() {
        let senders = Senders::new(2);
        senders.get(b"a", |_| 1);
        senders.get(b"", |_| 2);
        let third = senders.get(b"c", |_| 3);
        let fourth = senders.get(b"d", |_| 3);
        assert!(Arc::ptr_eq(&third, &fourth));
        assert_eq!(third.identity, OTHER);
        assert!(
            senders.find(UNIDENTIFIED).is_none(),
            "keyed by the bytes sent"
        );
        assert_eq!(senders.all().len(), 3);
    }
}
