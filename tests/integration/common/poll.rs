//! Waiting for something a test cannot be told about: poll, with a bound.

use std::time::{Duration, Instant};

/// How often [`until`] looks again.
const EVERY: Duration = Duration::from_millis(20);

/// Polls `check` until it holds, for at most `limit`; how long that took, or `None`.
pub fn until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(EVERY);
    }
}
