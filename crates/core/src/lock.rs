//! The cross-process pool lock.
//!
//! **Guarantee.** Mutual exclusion between all processes (and threads) that
//! use a segment, with a recorded owner: `lock_word` is 0 when free, else
//! the owner's **lock word**: its process slot + 1 in the low 8 bits and,
//! above them, the epoch of its claim of that slot (the slot's claim
//! counter, bumped each time a process claims the slot). **Cost.** One CAS
//! to take and a load and a store to release when uncontended. **Waiting.** Bounded
//! backoff: spin with `pause`, then `sched_yield`, then sleeps doubling from
//! 20 µs to 1 ms. **Owner death.** A waiter checks the owner's liveness lock
//! (see `segment`) at least every millisecond of waiting once it sleeps, so
//! a dead owner is detected well within 50 ms; the waiter then takes the
//! lock over by CAS of the *whole word* (one winner) and the caller rolls
//! the journal back. The epoch is what makes the takeover safe: if the dead
//! owner's slot is claimed again between the probe and the CAS, the new
//! claimant's word differs, so the CAS fails instead of stealing the lock
//! from a live process (ABA). **Timeout.** A live owner that never releases
//! (stopped, hung) makes a waiting `acquire` fail with `LockTimeout` instead
//! of hanging; a `Try` acquire gives up after the short spin, for callers
//! that must not block (releases made on an event loop).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{PoolError, Result};
use crate::layout::MAX_PROCESSES;
use crate::view::SegmentView;

/// How an acquisition went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Taken normally.
    Clean,
    /// Taken over from a dead owner: the journal may need a rollback.
    TakenOver { dead_slot: u32 },
}

/// How long `acquire` may wait for a live owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Up to this long, then `LockTimeout`.
    Up(Duration),
    /// Spin briefly and probe the owner once; never sleep.
    Try,
}

const SPINS: u32 = 256;
/// A `Try` spins this much only: a release that finds the lock busy costs
/// ~1 µs before it is queued, so thousands of finalizers in one GC tick
/// stay cheap (256 spins were ~0.2 ms each).
const TRY_SPINS: u32 = 16;
const YIELDS: u32 = 64;
const FIRST_SLEEP: Duration = Duration::from_micros(20);
const MAX_SLEEP: Duration = Duration::from_millis(1);
const SLOT_BITS: u32 = 8;

/// The lock word of the process that claimed slot `slot` with claim number
/// `epoch` (only the epoch's low 56 bits are kept).
pub fn lock_word(slot: u32, epoch: u64) -> u64 {
    (epoch << SLOT_BITS) | (slot as u64 + 1)
}

/// The slot a lock word names, or None if it names none (a corrupt word).
pub fn owner_slot(word: u64) -> Option<u32> {
    let slot_plus_one = word & ((1 << SLOT_BITS) - 1);
    (slot_plus_one >= 1 && slot_plus_one <= MAX_PROCESSES as u64).then(|| slot_plus_one as u32 - 1)
}

/// Takes the lock with word `mine` (see `lock_word`). `owner_alive(slot)`
/// says whether another slot's process lives. A word naming our own slot
/// with another epoch was left by the slot's dead previous owner (we hold
/// the slot's liveness lock, so that owner is gone); one equal to `mine`
/// belongs to another thread of this process, which is alive.
pub fn acquire(
    view: &SegmentView,
    mine: u64,
    wait: Wait,
    owner_alive: impl Fn(u32) -> bool,
) -> Result<Acquired> {
    let word = &view.header().lock_word;
    if word
        .compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return Ok(Acquired::Clean);
    }
    let my_slot = owner_slot(mine);
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
        let spins = if wait == Wait::Try { TRY_SPINS } else { SPINS };
        if attempt <= spins {
            // Critical sections last ~100 ns: spinning (reads only, no CAS
            // storm on the line) almost always wins here.
            for _ in 0..attempt.min(32) {
                std::hint::spin_loop();
            }
            continue;
        }
        if attempt <= spins + YIELDS && wait != Wait::Try {
            let _ = nix::sched::sched_yield();
            continue;
        }
        // Sleeping phase: the owner may be dead. One liveness probe (a
        // syscall) per sleep, so at least one per millisecond of waiting.
        let owner = owner_slot(current);
        let owner_dead = match owner {
            None => true, // names no slot: nobody can release it
            Some(slot) if Some(slot) == my_slot => current != mine,
            Some(slot) => !owner_alive(slot),
        };
        if owner_dead
            && word
                .compare_exchange(current, mine, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            view.header().lock_takeovers.fetch_add(1, Ordering::Relaxed);
            return Ok(Acquired::TakenOver {
                dead_slot: owner.unwrap_or(u32::MAX),
            });
        }
        let waited = started.elapsed();
        let give_up = match wait {
            Wait::Try => !owner_dead,
            Wait::Up(timeout) => waited >= timeout,
        };
        if give_up {
            return Err(PoolError::LockTimeout {
                owner_slot: owner.unwrap_or(u32::MAX),
                waited_ms: waited.as_millis() as u64,
            });
        }
        if !owner_dead {
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(MAX_SLEEP);
        }
    }
}

/// Releases the lock if `mine` still holds it (a corrupt writer may have
/// changed the word; then it is not ours to clear).
///
/// A load and a store, not a compare-exchange (a locked instruction, a
/// measurable part of a cached allocation, which takes the lock twice per
/// allocate+release pair): while the word is `mine`, no other process may
/// change it (a takeover needs this process dead, and our slot's liveness
/// lock is held), so nothing legitimate can come between the two. The
/// Release store orders every write of the critical section before the
/// lock is seen free, as the exchange's Release did.
pub fn release(view: &SegmentView, mine: u64) {
    let word = &view.header().lock_word;
    if word.load(Ordering::Relaxed) == mine {
        word.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::view::with_test_view as with_view;

    const SECOND: Wait = Wait::Up(Duration::from_secs(1));

    fn word_of(v: &SegmentView) -> u64 {
        v.header().lock_word.load(Ordering::Relaxed)
    }

    #[test]
    fn uncontended_acquire_release() {
        with_view(|v| {
            let mine = lock_word(3, 7);
            assert_eq!(acquire(&v, mine, SECOND, |_| true), Ok(Acquired::Clean));
            assert_eq!(word_of(&v), mine);
            assert_eq!(owner_slot(word_of(&v)), Some(3));
            release(&v, mine);
            assert_eq!(word_of(&v), 0);
        });
    }

    #[test]
    fn dead_owner_is_taken_over() {
        with_view(|v| {
            v.header()
                .lock_word
                .store(lock_word(5, 1), Ordering::Relaxed);
            let mine = lock_word(1, 1);
            let got = acquire(&v, mine, SECOND, |slot| slot != 5);
            assert_eq!(got, Ok(Acquired::TakenOver { dead_slot: 5 }));
            assert_eq!(word_of(&v), mine);
            assert_eq!(v.header().lock_takeovers.load(Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn live_owner_times_out() {
        with_view(|v| {
            v.header()
                .lock_word
                .store(lock_word(5, 1), Ordering::Relaxed);
            let got = acquire(
                &v,
                lock_word(1, 1),
                Wait::Up(Duration::from_millis(30)),
                |_| true,
            );
            assert!(matches!(
                got,
                Err(PoolError::LockTimeout { owner_slot: 5, .. })
            ));
        });
    }

    #[test]
    fn try_gives_up_on_a_live_owner_and_takes_over_a_dead_one() {
        with_view(|v| {
            v.header()
                .lock_word
                .store(lock_word(5, 1), Ordering::Relaxed);
            let started = Instant::now();
            let got = acquire(&v, lock_word(1, 1), Wait::Try, |_| true);
            assert!(matches!(
                got,
                Err(PoolError::LockTimeout { owner_slot: 5, .. })
            ));
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "Try never sleeps"
            );
            let got = acquire(&v, lock_word(1, 1), Wait::Try, |_| false);
            assert_eq!(got, Ok(Acquired::TakenOver { dead_slot: 5 }));
        });
    }

    #[test]
    fn own_slot_with_an_older_epoch_is_a_dead_predecessor() {
        with_view(|v| {
            // Slot 1's previous owner (claim 4) died holding the lock; we
            // are claim 5 of the same slot.
            v.header()
                .lock_word
                .store(lock_word(1, 4), Ordering::Relaxed);
            let got = acquire(&v, lock_word(1, 5), SECOND, |_| true);
            assert_eq!(got, Ok(Acquired::TakenOver { dead_slot: 1 }));
            // Our own word held by another of our threads is alive: wait.
            let got = acquire(
                &v,
                lock_word(1, 5),
                Wait::Up(Duration::from_millis(20)),
                |_| false,
            );
            assert!(got.is_err());
        });
    }

    #[test]
    fn a_word_naming_no_slot_is_taken_over() {
        with_view(|v| {
            v.header().lock_word.store(0xdead_0000, Ordering::Relaxed);
            let got = acquire(&v, lock_word(2, 1), SECOND, |_| true);
            assert_eq!(
                got,
                Ok(Acquired::TakenOver {
                    dead_slot: u32::MAX
                })
            );
        });
    }

    /// The ABA of issue 11: a waiter probes the owner's slot and finds it
    /// dead; before its CAS, a new process claims that slot and takes the
    /// lock (over its dead predecessor's word). The waiter must not take
    /// the lock from that live process. With a bare "slot + 1" word the
    /// new owner's word equals the old one and the waiter's CAS succeeded.
    #[test]
    fn takeover_never_steals_from_a_process_that_reclaimed_the_slot() {
        with_view(|v| {
            let dead_owner = lock_word(5, 1);
            let new_claimant = lock_word(5, 2);
            v.header().lock_word.store(dead_owner, Ordering::Relaxed);
            let claimed = std::cell::Cell::new(false);
            let waiter = lock_word(1, 1);
            let got = acquire(&v, waiter, Wait::Up(Duration::from_millis(50)), |slot| {
                assert_eq!(slot, 5);
                if !claimed.get() {
                    // Between this probe ("dead") and the waiter's CAS, the
                    // new claimant of slot 5 takes the lock over from its
                    // dead predecessor and is now inside the section.
                    claimed.set(true);
                    let takeover = acquire(&v, new_claimant, SECOND, |_| false);
                    assert_eq!(takeover, Ok(Acquired::TakenOver { dead_slot: 5 }));
                    return false;
                }
                true // from now on slot 5 is the live claimant
            });
            assert!(
                matches!(got, Err(PoolError::LockTimeout { owner_slot: 5, .. })),
                "the waiter must wait for the live claimant, got {got:?}"
            );
            assert_eq!(word_of(&v), new_claimant);
        });
    }

    #[test]
    fn release_leaves_a_word_that_is_not_ours() {
        with_view(|v| {
            v.header()
                .lock_word
                .store(lock_word(2, 9), Ordering::Relaxed);
            release(&v, lock_word(1, 1));
            assert_eq!(word_of(&v), lock_word(2, 9));
        });
    }
}
