//! The log sink: log lines go to stderr from a thread of their own, through a bounded queue,
//! so logging can never stop the server or change an outcome.
//!
//! A line that does not fit the queue (stderr is slow, or a reader stopped reading) is
//! dropped and counted; a write that fails (the reader went away, the disk of a redirected
//! log is full) drops the line and is counted; nothing panics, nothing blocks the thread
//! that logs. The counts are metrics (`flipdns_log_lines_dropped_total`). Repeated lines
//! that a peer can provoke (refused admin connections, say) go through [`Throttle`].

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Log lines queued for the writer thread before new ones are dropped.
pub const LOG_QUEUE: usize = 4096;

/// Lines dropped because the queue was full.
static QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
/// Lines dropped because writing them failed.
static WRITE_FAILED: AtomicU64 = AtomicU64::new(0);

static QUEUE: OnceLock<mpsc::SyncSender<Vec<u8>>> = OnceLock::new();
/// Told by the writer thread when it reaches an empty line: what [`finish`] waits for.
static FLUSHED: OnceLock<Mutex<mpsc::Receiver<()>>> = OnceLock::new();

/// Lines dropped so far: `(queue full, write failed)`.
/// Changes the log filter of the running process (`flipdns ctl log-level`); set by whoever
/// installs the subscriber.
type SetFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
static FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Lets [`set_filter`] change the filter with `set`.
pub fn control_filter(set: SetFilter) {
    let _ = FILTER.set(set);
}

/// Sets the log filter (`info`, `debug`, `flipdns::fleet=debug,info`, ...) from now on.
pub fn set_filter(filter: &str) -> Result<(), String> {
    match FILTER.get() {
        Some(set) => set(filter),
        None => Err("this process's log level cannot be changed".into()),
    }
}

pub fn dropped() -> (u64, u64) {
    (QUEUE_FULL.load(Relaxed), WRITE_FAILED.load(Relaxed))
}

/// Starts the writer thread on `out` (stderr in the server). Lines logged before it are
/// counted as dropped.
pub fn start(mut out: impl Write + Send + 'static) {
    let (queue, lines) = mpsc::sync_channel::<Vec<u8>>(LOG_QUEUE);
    let (flushed, flushes) = mpsc::channel();
    if QUEUE.set(queue).is_err() || FLUSHED.set(Mutex::new(flushes)).is_err() {
        return; // already started
    }
    let spawned = std::thread::Builder::new()
        .name("flipdns-log".into())
        .spawn(move || {
            for line in lines {
                if line.is_empty() {
                    let _ = flushed.send(());
                } else if out.write_all(&line).and_then(|()| out.flush()).is_err() {
                    WRITE_FAILED.fetch_add(1, Relaxed);
                }
            }
        });
    if spawned.is_err() {
        // No thread, no log: the queue fills and every line is counted as dropped.
        QUEUE_FULL.fetch_add(1, Relaxed);
    }
}

/// Waits up to `limit` for the lines queued so far to be written: at exit, so the last
/// lines are not lost, and never longer than that.
pub fn finish(limit: Duration) {
    let (Some(queue), Some(flushes)) = (QUEUE.get(), FLUSHED.get()) else {
        return;
    };
    if queue.try_send(Vec::new()).is_ok() {
        let flushes = flushes.lock().unwrap_or_else(|e| e.into_inner());
        let _ = flushes.recv_timeout(limit);
    }
}

/// One log line being formatted; handed to the writer thread when dropped.
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.0);
        match QUEUE.get() {
            Some(queue) if queue.try_send(line).is_ok() => {}
            _ => {
                QUEUE_FULL.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The writer `tracing_subscriber` formats each event into.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// Lets a repeated log line through at most once per period, and says how many were held
/// back: for lines a peer can provoke at will.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last one)` when this occurrence may be logged.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.period => {
                state.1 += 1;
                None
            }
            _ => {
                let held = state.1;
                *state = (Some(now), 0);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_admits_one_line_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        let throttle = Throttle::new(Duration::ZERO);
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), Some(0));
    }
}
