//! Slots for outgoing zone transfers: so many at once in all; a source address beyond its
//! share only while that leaves a share free for the others, so that one secondary (or one
//! address pretending to be it) reading slowly cannot starve them, while secondaries that
//! share a host (or transfer many zones at once) are not held back on an idle server; and
//! the rate a transfer must keep up.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a transfer runs before its rate is held to `transfer_min_rate`: a secondary
/// may take a moment to start reading.
pub const RATE_GRACE: Duration = Duration::from_secs(10);

/// The transfer slots of one server.
#[derive(Debug)]
pub struct TransferSlots {
    total: Arc<Semaphore>,
    per_source: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a transfer got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// Every slot is taken (`[limits] transfers`).
    Busy,
    /// This source holds its share (`[limits] transfers_per_source`).
    SourceBusy,
}

/// A slot held by one transfer; dropping it frees the slot.
pub struct Slot<'s> {
    slots: &'s TransferSlots,
    source: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.held();
        if let Some(n) = held.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.source);
            }
        }
    }
}

impl TransferSlots {
    pub fn new(total: usize, per_source: usize) -> TransferSlots {
        TransferSlots {
            total: Arc::new(Semaphore::new(total)),
            per_source: per_source.max(1),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a transfer to `source`: within its share whenever one is free; beyond
    /// it only when a share stays free for the others afterwards.
    pub fn take(&self, source: IpAddr) -> Result<Slot<'_>, NoSlot> {
        let mut held = self.held();
        let free = self.total.available_permits();
        let mine = held.entry(source).or_insert(0);
        if *mine >= self.per_source && free <= self.per_source {
            return Err(NoSlot::SourceBusy);
        }
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| NoSlot::Busy)?;
        *mine += 1;
        Ok(Slot {
            slots: self,
            source,
            _permit: permit,
        })
    }
}

/// How often a transfer blocked on its reader checks that the reader keeps up.
pub const RATE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The rate one transfer must keep: after [`RATE_GRACE`], its reader must have taken
/// `min_rate` bytes a second for every second past the grace. What the reader took is
/// what was written less what still waits in the kernel's send queue (`SIOCOUTQ`), so
/// buffers do not count as read.
pub struct Rate {
    min_rate: u64,
    fd: RawFd,
    started: Instant,
}

impl Rate {
    /// For a transfer starting now on socket `fd`.
    pub fn new(min_rate: u64, fd: RawFd) -> Rate {
        Rate {
            min_rate: min_rate.max(1),
            fd,
            started: Instant::now(),
        }
    }

    /// Runs `write` (after `written` bytes so far), checking every second that the reader
    /// keeps up; a reader that falls behind ends it with an error that says so.
    pub async fn keeping_up(
        &self,
        write: impl std::future::Future<Output = io::Result<()>>,
        written: usize,
    ) -> io::Result<()> {
        tokio::pin!(write);
        let mut check = tokio::time::interval(RATE_CHECK_EVERY);
        check.tick().await;
        loop {
            tokio::select! {
                done = &mut write => return done,
                _ = check.tick() => {
                    if !self.kept_up(written, self.started.elapsed()) {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the secondary reads slower than transfer_min_rate ({} bytes/s)", self.min_rate),
                        ));
                    }
                }
            }
        }
    }

    fn kept_up(&self, written: usize, elapsed: Duration) -> bool {
        let due = elapsed.saturating_sub(RATE_GRACE).as_secs_f64() * self.min_rate as f64;
        let taken = written.saturating_sub(unsent(self.fd));
        taken as f64 >= due
    }
}

/// Bytes written to socket `fd` that the peer has not acknowledged yet; 0 when the kernel
/// does not say.
fn unsent(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int; `fd` is the transfer's open socket.
    let done = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if done == 0 { n.max(0) as usize } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_share_and_the_rest_stays_for_others() {
        let slots = TransferSlots::new(4, 2);
        let slow: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = slots.take(slow).unwrap();
        let _b = slots.take(slow).unwrap();
        assert_eq!(slots.take(slow).err(), Some(NoSlot::SourceBusy));
        let _c = slots.take(other).unwrap();
        let _d = slots.take(other).unwrap();
        assert_eq!(
            slots.take("192.0.2.3".parse().unwrap()).err(),
            Some(NoSlot::Busy)
        );
        drop(a);
        assert!(
            slots.take(slow).is_ok(),
            "a freed slot is the source's again"
        );
    }

    #[test]
    fn a_reader_must_keep_up_after_the_grace() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let rate = Rate::new(1000, std::os::fd::AsRawFd::as_raw_fd(&a));
        assert!(rate.kept_up(0, RATE_GRACE), "nothing is due in the grace");
        assert!(rate.kept_up(5000, RATE_GRACE + Duration::from_secs(5)));
        assert!(!rate.kept_up(4999, RATE_GRACE + Duration::from_secs(5)));
    }
}
