//! The segment file's byte-range locks (Linux open-file-description locks,
//! `F_OFD_*`), which the kernel drops when the holder dies however it dies:
//! byte `k` < 64 is process slot `k`'s liveness lock, byte 64 the gc lock
//! (shared by joiners, exclusive for gc; see LAYOUT.md §7 and §14).

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::error::{PoolError, Result};
use crate::segment::GC_LOCK_BYTE;

pub(crate) fn lock_slot(fd: &OwnedFd, slot: usize) -> Result<()> {
    let lock = slot_flock(slot, libc::F_WRLCK);
    fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock))
        .map(drop)
        .map_err(|e| PoolError::os("fcntl(F_OFD_SETLK)", e))
}

/// Takes the gc lock shared for a joiner, retrying while a gc holds it
/// exclusively (for well under a millisecond normally), at most `wait`.
pub(crate) fn share_gc_lock(fd: &OwnedFd, wait: Duration) -> Result<()> {
    let lock = slot_flock(GC_LOCK_BYTE, libc::F_RDLCK);
    let started = Instant::now();
    let mut sleep = Duration::from_micros(50);
    loop {
        match fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => return Ok(()),
            Err(Errno::EAGAIN) | Err(Errno::EACCES) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PoolError::os("fcntl(F_OFD_SETLK) on the gc lock", e)),
        }
        let waited = started.elapsed();
        if waited >= wait {
            // The "owner" is the gc lock's byte, past the process table.
            return Err(PoolError::LockTimeout {
                owner_slot: GC_LOCK_BYTE as u32,
                waited_ms: waited.as_millis() as u64,
            });
        }
        std::thread::sleep(sleep.min(wait.saturating_sub(waited)));
        sleep = (sleep * 2).min(Duration::from_millis(1));
    }
}

/// Takes the gc lock exclusively without waiting; `false` if anyone holds
/// it (a process joining, or another gc).
pub(crate) fn try_lock_gc(fd: &OwnedFd) -> Result<bool> {
    let lock = slot_flock(GC_LOCK_BYTE, libc::F_WRLCK);
    match fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
        Err(e) => Err(PoolError::os("fcntl(F_OFD_SETLK) on the gc lock", e)),
    }
}

/// Whether another open file description holds the gc lock (shared or
/// exclusive), without taking it (`gc --dry-run`, `ls`).
pub(crate) fn gc_lock_held(fd: &OwnedFd) -> bool {
    probe_slot(fd, GC_LOCK_BYTE)
}

/// Whether another open file description (a live process) holds `slot`'s
/// liveness lock on this segment.
pub(crate) fn probe_slot(fd: &OwnedFd, slot: usize) -> bool {
    let mut probe = slot_flock(slot, libc::F_WRLCK);
    match fcntl(fd.as_fd(), FcntlArg::F_OFD_GETLK(&mut probe)) {
        Ok(_) => probe.l_type != libc::F_UNLCK as libc::c_short,
        // If the kernel cannot tell, assume alive: never reap a live process.
        Err(_) => true,
    }
}

fn slot_flock(slot: usize, kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = slot as libc::off_t;
    lock.l_len = 1;
    lock
}

/// Gives up this description's lock on `byte`. Unlocking a range we hold
/// cannot fail on a valid fd; if it did, the fd's close drops it anyway.
pub(crate) fn unlock_byte(fd: &OwnedFd, byte: usize) {
    let lock = slot_flock(byte, libc::F_UNLCK);
    let _ = fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock));
}

/// Tries to take the write lock on `byte`; `false` if another open file
/// description (a live process) holds it.
pub(crate) fn try_lock_byte(fd: &OwnedFd, byte: usize) -> Result<bool> {
    let lock = slot_flock(byte, libc::F_WRLCK);
    match fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
        Err(e) => Err(PoolError::os("fcntl(F_OFD_SETLK)", e)),
    }
}
