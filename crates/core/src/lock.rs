//! The cross-process pool lock.
//!
//! **Guarantee.** Mutual exclusion between all processes (and threads) that
//! use a segment, with a recorded owner: `lock_word` is 0 when free, else the
//! owner's process slot + 1. **Cost.** One CAS to take and one store to
//! release when uncontended. **Waiting.** Bounded backoff: spin with `pause`,
//! then `sched_yield`, then sleeps doubling from 20 µs to 1 ms. **Owner
//! death.** A waiter checks the owner's liveness lock (see `segment`) at
//! least every millisecond of waiting once it sleeps, so a dead owner is
//! detected well within 50 ms; the waiter then takes the lock over by CAS
//! (one winner) and the caller rolls the journal back. **Timeout.** A live
//! owner that never releases (stopped, hung) makes `acquire` fail with
//! `LockTimeout` instead of hanging forever.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{PoolError, Result};
use crate::view::SegmentView;

/// How an acquisition went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Taken normally.
    Clean,
    /// Taken over from a dead owner: the journal may need a rollback.
    TakenOver { dead_slot: u32 },
}

const SPINS: u32 = 256;
const YIELDS: u32 = 64;
const FIRST_SLEEP: Duration = Duration::from_micros(20);
const MAX_SLEEP: Duration = Duration::from_millis(1);

/// Takes the lock for `my_slot`. `owner_alive(slot)` says whether another
/// slot's process lives. With `reclaim_own_slot`, a lock word naming our own
/// slot is treated as left behind by the slot's dead previous owner (used
/// while registering, before this process can hold the lock itself).
pub fn acquire(
    view: &SegmentView,
    my_slot: u32,
    timeout: Duration,
    reclaim_own_slot: bool,
    owner_alive: impl Fn(u32) -> bool,
) -> Result<Acquired> {
    let word = &view.header().lock_word;
    let mine = my_slot as u64 + 1;
    if word
        .compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return Ok(Acquired::Clean);
    }
    let started = Instant::now();
    let mut attempt: u32 = 0;
    let mut sleep = FIRST_SLEEP;
    loop {
        let current = word.load(Ordering::Relaxed);
        if current == 0 {
            if word
                .compare_exchange_weak(0, mine, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Acquired::Clean);
            }
            continue;
        }
        attempt += 1;
        if attempt <= SPINS {
            // Critical sections last ~100 ns: spinning (reads only, no CAS
            // storm on the line) almost always wins here.
            for _ in 0..attempt.min(32) {
                std::hint::spin_loop();
            }
            continue;
        }
        if attempt <= SPINS + YIELDS {
            let _ = nix::sched::sched_yield();
            continue;
        }
        // Sleeping phase: the owner may be dead. One liveness probe (a
        // syscall) per sleep, so at least one per millisecond of waiting.
        let owner_slot = (current - 1) as u32;
        let owner_dead = if owner_slot == my_slot {
            reclaim_own_slot
        } else {
            !owner_alive(owner_slot)
        };
        if owner_dead
            && word
                .compare_exchange(current, mine, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            view.header().lock_takeovers.fetch_add(1, Ordering::Relaxed);
            return Ok(Acquired::TakenOver {
                dead_slot: owner_slot,
            });
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(PoolError::LockTimeout {
                owner_slot,
                waited_ms: waited.as_millis() as u64,
            });
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(MAX_SLEEP);
    }
}

pub fn release(view: &SegmentView, my_slot: u32) {
    let word = &view.header().lock_word;
    debug_assert_eq!(word.load(Ordering::Relaxed), my_slot as u64 + 1);
    word.store(0, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_view(f: impl FnOnce(SegmentView)) {
        let mut memory = vec![0u64; 65536];
        // SAFETY: a local buffer larger than the header, alive during `f`.
        let view = unsafe { SegmentView::new(memory.as_mut_ptr() as *mut u8, 65536 * 8) };
        f(view);
    }

    #[test]
    fn uncontended_acquire_release() {
        with_view(|v| {
            assert_eq!(
                acquire(&v, 3, Duration::from_secs(1), false, |_| true),
                Ok(Acquired::Clean)
            );
            assert_eq!(v.header().lock_word.load(Ordering::Relaxed), 4);
            release(&v, 3);
            assert_eq!(v.header().lock_word.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn dead_owner_is_taken_over() {
        with_view(|v| {
            v.header().lock_word.store(6, Ordering::Relaxed); // slot 5 holds it
            let got = acquire(&v, 1, Duration::from_secs(1), false, |slot| slot != 5);
            assert_eq!(got, Ok(Acquired::TakenOver { dead_slot: 5 }));
            assert_eq!(v.header().lock_word.load(Ordering::Relaxed), 2);
            assert_eq!(v.header().lock_takeovers.load(Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn live_owner_times_out() {
        with_view(|v| {
            v.header().lock_word.store(6, Ordering::Relaxed);
            let got = acquire(&v, 1, Duration::from_millis(30), false, |_| true);
            assert!(matches!(
                got,
                Err(PoolError::LockTimeout { owner_slot: 5, .. })
            ));
        });
    }

    #[test]
    fn own_slot_reclaimed_only_when_registering() {
        with_view(|v| {
            v.header().lock_word.store(2, Ordering::Relaxed);
            assert!(acquire(&v, 1, Duration::from_millis(20), false, |_| false).is_err());
            assert_eq!(
                acquire(&v, 1, Duration::from_millis(20), true, |_| false),
                Ok(Acquired::TakenOver { dead_slot: 1 })
            );
        });
    }
}
