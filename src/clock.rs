//! Time: the wall clock in Unix milliseconds (precise for decisions, coarse for the query
//! path), the monotonic clock, and the seam that lets tests drive both.
//!
//! Deadlines (drain, settle) are wall-clock times because they are persisted and must mean
//! the same thing after a restart. Within one process the cutover also holds each deadline
//! on the monotonic clock, so a wall-clock step forward cannot make a flip early. The query
//! path reads `CLOCK_REALTIME_COARSE`, a few nanoseconds instead of a full clock read, and
//! whoever compares a coarse timestamp with a deadline adds [`Clock::coarse_resolution_ms`],
//! so a coarse reading never makes a deadline early.
//!
//! [`Clock::fake`] is a clock that follows tokio's time: under `tokio::time::pause` a test
//! moves both clocks by advancing tokio, and steps the wall clock alone with
//! [`FakeTime::step`].

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the time comes from: the system, or a test.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Fake(Arc<FakeTime>),
}

/// A test's time: tokio's (pausable) clock, less the spans it was frozen, plus a wall-clock
/// offset that [`FakeTime::step`] changes.
#[derive(Debug)]
pub struct FakeTime {
    /// Wall-clock milliseconds at `start`.
    base_wall_ms: u64,
    start: tokio::time::Instant,
    /// Wall-clock steps so far, in milliseconds (negative: stepped back).
    step_ms: AtomicI64,
    /// Milliseconds of tokio time spent frozen so far, and since when it is frozen now.
    frozen: std::sync::Mutex<(u64, Option<tokio::time::Instant>)>,
}

/// Where a fake monotonic clock starts: a machine up for a day, as real ones are, so that
/// no moment a test makes is 0 (which records take to mean "never").
const FAKE_UPTIME_MS: u64 = 86_400_000;

impl FakeTime {
    /// Steps the wall clock by `ms` (back when negative); the monotonic clock does not move.
    pub fn step(&self, ms: i64) {
        self.step_ms.fetch_add(ms, Relaxed);
    }

    /// Stops both clocks until [`FakeTime::thaw`], whatever tokio's time does meanwhile (it
    /// moves on its own under `tokio::time::pause` while a test waits for a thread).
    pub fn freeze(&self) {
        let mut frozen = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        frozen.1.get_or_insert_with(tokio::time::Instant::now);
    }

    /// Lets both clocks move with tokio's time again.
    pub fn thaw(&self) {
        let mut frozen = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = frozen.1.take() {
            frozen.0 += since.elapsed().as_millis() as u64;
        }
    }

    fn mono_ms(&self) -> u64 {
        let frozen = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        let now = frozen.1.unwrap_or_else(tokio::time::Instant::now);
        FAKE_UPTIME_MS
            + (now.duration_since(self.start).as_millis() as u64).saturating_sub(frozen.0)
    }

    fn wall_ms(&self) -> u64 {
        let elapsed = (self.mono_ms() - FAKE_UPTIME_MS) as i64;
        let wall = self.base_wall_ms as i64 + elapsed + self.step_ms.load(Relaxed);
        wall.max(0) as u64
    }
}

impl Clock {
    /// A clock that starts at wall time `wall_ms` and moves with tokio's time.
    pub fn fake(wall_ms: u64) -> (Clock, Arc<FakeTime>) {
        let time = Arc::new(FakeTime {
            base_wall_ms: wall_ms,
            start: tokio::time::Instant::now(),
            step_ms: AtomicI64::new(0),
            frozen: std::sync::Mutex::new((0, None)),
        });
        (Clock::Fake(time.clone()), time)
    }

    /// Now, in Unix milliseconds, from the precise wall clock.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            Clock::Fake(time) => time.wall_ms(),
        }
    }

    /// Now, in Unix milliseconds, from the coarse wall clock: for the query path.
    #[inline]
    pub fn coarse_now_ms(&self) -> u64 {
        match self {
            Clock::System => read_ms(libc::CLOCK_REALTIME_COARSE),
            Clock::Fake(time) => time.wall_ms(),
        }
    }

    /// Milliseconds on the coarse monotonic clock: for the query path.
    #[inline]
    pub fn coarse_mono_ms(&self) -> u64 {
        match self {
            Clock::System => read_ms(libc::CLOCK_MONOTONIC_COARSE),
            Clock::Fake(time) => time.mono_ms(),
        }
    }

    /// The wall-clock time of the monotonic moment `mono_ms`, as the clocks stand now.
    pub fn wall_of(&self, mono_ms: u64) -> u64 {
        let (wall, mono) = (self.now_ms(), self.mono_ms());
        (wall + mono_ms).saturating_sub(mono)
    }

    /// The monotonic moment of the wall-clock time `wall_ms`, as the clocks stand now.
    pub fn mono_of(&self, wall_ms: u64) -> u64 {
        let (wall, mono) = (self.now_ms(), self.mono_ms());
        (mono + wall_ms).saturating_sub(wall)
    }

    /// Milliseconds on the monotonic clock, which no wall-clock step moves. Only
    /// differences within one process mean anything.
    pub fn mono_ms(&self) -> u64 {
        match self {
            Clock::System => read_ms(libc::CLOCK_MONOTONIC),
            Clock::Fake(time) => time.mono_ms(),
        }
    }

    /// Which boot of the machine the monotonic clock counts from: its milliseconds mean the
    /// same to every process of one boot (from `/proc/sys/kernel/random/boot_id`; 0 where
    /// that cannot be read, which never matches a held deadline).
    pub fn boot(&self) -> u64 {
        match self {
            Clock::System => {
                static BOOT: OnceLock<u64> = OnceLock::new();
                *BOOT.get_or_init(|| {
                    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                        .map_or(0, |id| fnv(id.trim().as_bytes()))
                })
            }
            Clock::Fake(_) => 1,
        }
    }

    /// How far a coarse reading (wall or monotonic) can lag the precise clock, in whole
    /// milliseconds (at least 1).
    pub fn coarse_resolution_ms(&self) -> u64 {
        match self {
            Clock::System => system_coarse_resolution_ms(),
            Clock::Fake(_) => 1,
        }
    }

    /// Time from now until the Unix millisecond `deadline_ms` (zero if it has passed).
    pub fn until(&self, deadline_ms: u64) -> Duration {
        Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()))
    }
}

/// FNV-1a, for turning a boot id into a number.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn read_ms(clock: libc::clockid_t) -> u64 {
    read_us(clock) / 1000
}

fn read_us(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; the coarse and monotonic clocks
    // exist on every Linux since 2.6.32.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads it (`MONOTONIC_USEC` of a reload).
pub fn monotonic_us() -> u64 {
    read_us(libc::CLOCK_MONOTONIC)
}

fn system_coarse_resolution_ms() -> u64 {
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

/// Now, in Unix milliseconds, from the system's wall clock: for what no test drives (the
/// command-line client, log lines).
pub fn now_ms() -> u64 {
    Clock::System.now_ms()
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
        let clock = Clock::System;
        let coarse = clock.coarse_now_ms();
        let precise = clock.now_ms();
        assert!(
            precise + 1 >= coarse && precise <= coarse + clock.coarse_resolution_ms() + 50,
            "{coarse} vs {precise}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fake_clock_follows_tokio_and_steps_the_wall_clock_alone() {
        let (clock, time) = Clock::fake(1_000_000);
        let booted = clock.mono_ms();
        assert!(booted > 0, "a fake machine has been up a while");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            (clock.now_ms(), clock.mono_ms()),
            (1_005_000, booted + 5_000)
        );
        time.step(-60_000);
        assert_eq!((clock.now_ms(), clock.mono_ms()), (945_000, booted + 5_000));
        assert_eq!(clock.until(950_000), Duration::from_secs(5));
    }
}
