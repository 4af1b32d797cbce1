//! Who gets a connection when the admin socket is full: a change always does.
//!
//! The socket holds at most `admin_clients` connections. When a new one arrives and every
//! seat is taken, the seat of a connection that is not carrying out a change is given up
//! for it, in this order: one that has said nothing (no request read, nothing waiting in
//! its socket) before one that has; within that, one of the peer process holding the most
//! seats, then of the peer user holding the most; then the one idle longest. So a flood
//! from one process (a leaking agent) gives up its own seats first, even to a newcomer of
//! the same user. Its client is told in one line and the connection is
//! closed. So no number of connections that have not asked for a change (silent ones, a
//! leaking monitoring agent, readers that never read) can stand between an operator and a
//! flip or a rollback: only `admin_clients` changes in progress at once refuse another.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// What a connection is doing, as eviction weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Doing {
    /// Connected, no request read yet.
    Nothing = 0,
    /// Between requests.
    Idle = 1,
    /// Carrying out a request that changes nothing (status, stragglers, history...).
    Reading = 2,
    /// Carrying out a change (prepare, flip, rollback, cancel, reload): never evicted.
    Changing = 3,
}

/// One connection's seat, shared by the registry and the connection's task.
#[derive(Debug)]
pub struct Seat {
    id: u64,
    /// The peer's process and user (SO_PEERCRED): seats are given up by the process, then
    /// the user, holding most.
    process: u32,
    user: u32,
    /// The connection's socket, to see whether a request is waiting in it.
    fd: RawFd,
    doing: AtomicU8,
    /// Milliseconds since the registry began, at the last request's end (or the connect).
    active_ms: AtomicU64,
    /// Fires when the seat is given up for another connection.
    pub evicted: CancellationToken,
}

impl Seat {
    /// The connection now does `doing`.
    pub fn set(&self, doing: Doing, registry: &Admission) {
        self.doing.store(doing as u8, Relaxed);
        self.active_ms.store(registry.elapsed_ms(), Relaxed);
    }

    fn doing(&self) -> Doing {
        match self.doing.load(Relaxed) {
            0 => Doing::Nothing,
            1 => Doing::Idle,
            2 => Doing::Reading,
            _ => Doing::Changing,
        }
    }
}

/// The seats of the admin socket.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    seats: Mutex<Vec<Arc<Seat>>>,
    next_id: AtomicU64,
    started: Instant,
}

/// Why a connection got no seat: every seat carries out a change.
#[derive(Debug, Clone, Copy)]
pub struct Full {
    pub limit: usize,
}

/// A seat held by one connection; dropping it frees the seat.
pub struct Ticket {
    registry: Arc<Admission>,
    pub seat: Arc<Seat>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.leave(self.seat.id);
    }
}

impl Admission {
    pub fn new(limit: usize) -> Arc<Admission> {
        Arc::new(Admission {
            limit: limit.max(1),
            seats: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn seats(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Seat>>> {
        self.seats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seats the connection of `process` of `user` on socket `fd`, giving up another's seat
    /// when all are taken; `Full` when every seat carries out a change.
    pub fn admit(
        self: &Arc<Admission>,
        process: u32,
        user: u32,
        fd: RawFd,
    ) -> Result<Ticket, Full> {
        let mut seats = self.seats();
        if seats.len() >= self.limit {
            let Some(victim) = victim(&seats) else {
                return Err(Full { limit: self.limit });
            };
            let gone = seats.swap_remove(victim);
            gone.evicted.cancel();
        }
        let seat = Arc::new(Seat {
            id: self.next_id.fetch_add(1, Relaxed),
            process,
            user,
            fd,
            doing: AtomicU8::new(Doing::Nothing as u8),
            active_ms: AtomicU64::new(self.elapsed_ms()),
            evicted: CancellationToken::new(),
        });
        seats.push(seat.clone());
        Ok(Ticket {
            registry: self.clone(),
            seat,
        })
    }

    fn leave(&self, id: u64) {
        self.seats().retain(|s| s.id != id);
    }

    /// Connections seated now.
    pub fn len(&self) -> usize {
        self.seats().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The seat to give up, if any may be: see the module docs for the order.
fn victim(seats: &[Arc<Seat>]) -> Option<usize> {
    let by_process = |process: u32| seats.iter().filter(|s| s.process == process).count();
    let by_user = |user: u32| seats.iter().filter(|s| s.user == user).count();
    seats
        .iter()
        .enumerate()
        .filter(|(_, s)| s.doing() != Doing::Changing)
        .min_by_key(|(_, s)| {
            let said_something = match s.doing() {
                Doing::Nothing | Doing::Idle => waiting_bytes(s.fd) > 0,
                _ => true,
            } || s.doing() == Doing::Reading;
            (
                said_something,
                std::cmp::Reverse(by_process(s.process)),
                std::cmp::Reverse(by_user(s.user)),
                s.active_ms.load(Relaxed),
            )
        })
        .map(|(i, _)| i)
}

/// Bytes waiting to be read on socket `fd` (a request the connection's task has not read
/// yet); 0 when the kernel does not say.
fn waiting_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int; `fd` belongs to a seated connection, which keeps it
    // open while its seat is in the registry.
    let done = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if done == 0 { n.max(0) as usize } else { 0 }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_full_house_gives_up_the_seat_of_who_has_said_least() {
        let admission = Admission::new(3);
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..5).map(|_| UnixStream::pair().unwrap()).collect();
        let fd = |i: usize| pairs[i].1.as_raw_fd();
        // A reader at work, a change at work, and a silent one of another user.
        let reader = admission.admit(1, 1000, fd(0)).unwrap();
        reader.seat.set(Doing::Reading, &admission);
        let changer = admission.admit(2, 1000, fd(1)).unwrap();
        changer.seat.set(Doing::Changing, &admission);
        let silent = admission.admit(3, 2000, fd(2)).unwrap();
        // A newcomer takes the silent one's seat.
        let newcomer = admission.admit(4, 1000, fd(3)).unwrap();
        assert!(silent.seat.evicted.is_cancelled());
        assert!(!reader.seat.evicted.is_cancelled());
        // The newcomer has written its request, not read yet: the reader goes before it.
        use std::io::Write;
        (&pairs[3].0).write_all(b"{\"cmd\":\"flip\"}\n").unwrap();
        let _fifth = admission.admit(5, 2000, fd(4)).unwrap();
        assert!(reader.seat.evicted.is_cancelled());
        assert!(!newcomer.seat.evicted.is_cancelled());
        assert!(
            !changer.seat.evicted.is_cancelled(),
            "a change is never evicted"
        );
        drop((silent, reader));
        assert_eq!(admission.len(), 3);
    }

    #[test]
    fn a_flooding_process_gives_up_its_own_seats_first() {
        let admission = Admission::new(3);
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..6).map(|_| UnixStream::pair().unwrap()).collect();
        let fd = |i: usize| pairs[i].1.as_raw_fd();
        let flood: Vec<Ticket> = (0..2)
            .map(|i| admission.admit(7, 0, fd(i)).unwrap())
            .collect();
        // The operator's ctl, same user, not yet written its request.
        let operator = admission.admit(8, 0, fd(2)).unwrap();
        // The flood keeps reconnecting: its own seats go, the operator's stays.
        let again: Vec<Ticket> = (3..6)
            .map(|i| admission.admit(7, 0, fd(i)).unwrap())
            .collect();
        assert!(!operator.seat.evicted.is_cancelled());
        assert!(flood.iter().all(|t| t.seat.evicted.is_cancelled()));
        drop(again);
    }

    #[test]
    fn only_changes_in_progress_fill_the_house() {
        let admission = Admission::new(2);
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        let tickets: Vec<Ticket> = (0..2)
            .map(|i| {
                let t = admission.admit(1, 0, pairs[i].1.as_raw_fd()).unwrap();
                t.seat.set(Doing::Changing, &admission);
                t
            })
            .collect();
        assert!(admission.admit(1, 0, pairs[2].1.as_raw_fd()).is_err());
        drop(tickets);
        assert!(admission.is_empty());
    }
}
