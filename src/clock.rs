//! Wall-clock time in Unix milliseconds: precise for decisions, coarse for the query path.
//!
//! Deadlines (drain, settle) are wall-clock times because they are persisted and must mean
//! the same thing after a restart. The query path reads `CLOCK_REALTIME_COARSE`, a few
//! nanoseconds instead of a full clock read, and whoever compares a coarse timestamp with a
//! deadline adds [`coarse_resolution_ms`], so a coarse reading never makes a deadline early.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds, from the precise clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, in Unix milliseconds, from the coarse clock: for the query path.
pub fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_REALTIME_COARSE exists on
    // every Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// How far a coarse reading can lag the precise clock, in whole milliseconds (at least 1).
pub fn coarse_resolution_ms() -> u64 {
    static RESOLUTION: OnceLock<u64> = OnceLock::new();
    *RESOLUTION.get_or_init(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_getres writes one timespec we own.
        unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        (ts.tv_sec as u64 * 1000 + (ts.tv_nsec as u64).div_ceil(1_000_000)).max(1)
    })
}

/// Time from now until the Unix millisecond `deadline_ms` (zero if it has passed).
pub fn until(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_ms()))
}

/// `2026-11-26T05:24:05Z`: Unix milliseconds as UTC, to the second.
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_795_670_004_730), "2026-11-26T05:13:24Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn the_coarse_clock_is_close_to_the_precise_one() {
        let coarse = coarse_now_ms();
        let precise = now_ms();
        assert!(
            precise + 1 >= coarse && precise <= coarse + coarse_resolution_ms() + 50,
            "{coarse} vs {precise}"
        );
    }
}
