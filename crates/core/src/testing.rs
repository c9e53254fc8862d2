//! Fault-injection hooks for this crate's tests and the Node binding's
//! fault tests. Compiled only with the `testing` cargo feature, which the
//! shipped addon does not enable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

static PAUSE_IN_ALLOCATION_MS: AtomicU64 = AtomicU64::new(0);
static HOLD_BEFORE_LOCAL_LOCK: AtomicBool = AtomicBool::new(false);
static HELD_BEFORE_LOCAL_LOCK: AtomicBool = AtomicBool::new(false);
static CRASH_AFTER_WRITES: AtomicU64 = AtomicU64::new(0);

/// Makes every following allocation in this process sleep `ms`
/// milliseconds inside its critical section, halfway through its writes.
pub fn pause_inside_allocation(ms: u64) {
    PAUSE_IN_ALLOCATION_MS.store(ms, Relaxed);
}

static PAUSE_WHILE_EXISTS: std::sync::Mutex<Option<std::path::PathBuf>> =
    std::sync::Mutex::new(None);
/// Whether `PAUSE_WHILE_EXISTS` is set: checked first, so the hook costs
/// one load when off (benchmarks run with the testing feature too).
static PAUSE_WHILE_SET: AtomicBool = AtomicBool::new(false);
static PAUSED_INSIDE_ALLOCATION: AtomicBool = AtomicBool::new(false);

/// Whether an allocation has stopped at the `while_exists` pause since it
/// was last turned on.
pub fn paused_inside_allocation() -> bool {
    PAUSED_INSIDE_ALLOCATION.load(Relaxed)
}

/// Makes the next allocations in this process wait inside their critical
/// section for as long as `path` exists (so another process decides when
/// the lock is let go, with no timing involved); None turns it off.
pub fn pause_inside_allocation_while_exists(path: Option<std::path::PathBuf>) {
    if path.is_some() {
        PAUSED_INSIDE_ALLOCATION.store(false, Relaxed);
    }
    PAUSE_WHILE_SET.store(path.is_some(), Relaxed);
    *PAUSE_WHILE_EXISTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = path;
}

pub(crate) fn pause_inside_allocation_point() {
    let pause = PAUSE_IN_ALLOCATION_MS.load(Relaxed);
    if pause > 0 {
        std::thread::sleep(Duration::from_millis(pause));
    }
    if !PAUSE_WHILE_SET.load(Relaxed) {
        return;
    }
    let path = PAUSE_WHILE_EXISTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    if let Some(path) = path {
        PAUSED_INSIDE_ALLOCATION.store(true, Relaxed);
        while path.exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Kills this process (SIGKILL, so nothing runs after) right after its
/// `n`-th following journaled write; 0 turns the hook off.
pub fn crash_after_journaled_writes(n: u64) {
    CRASH_AFTER_WRITES.store(n, Relaxed);
}

/// Called by the journal after each write it logged.
pub(crate) fn journaled_write_point() {
    let left = CRASH_AFTER_WRITES.load(Relaxed);
    if left == 0 {
        return;
    }
    if left == 1 {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    CRASH_AFTER_WRITES.store(left - 1, Relaxed);
}

/// While on, an operation (allocate, attach, share, release) entered on a
/// thread named `HELD_THREAD` stops before taking the pool's local mutex,
/// until turned off (other threads, e.g. other tests, pass).
/// `held_before_local_lock` says whether one is stopped there.
pub fn hold_before_local_lock(on: bool) {
    if on {
        HELD_BEFORE_LOCAL_LOCK.store(false, Relaxed);
    }
    HOLD_BEFORE_LOCAL_LOCK.store(on, Relaxed);
}

pub fn held_before_local_lock() -> bool {
    HELD_BEFORE_LOCAL_LOCK.load(Relaxed)
}

pub const HELD_THREAD: &str = "arraypool-held";

pub(crate) fn before_local_lock_point() {
    if !HOLD_BEFORE_LOCAL_LOCK.load(Relaxed) || std::thread::current().name() != Some(HELD_THREAD) {
        return;
    }
    HELD_BEFORE_LOCAL_LOCK.store(true, Relaxed);
    while HOLD_BEFORE_LOCAL_LOCK.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(1));
    }
}
