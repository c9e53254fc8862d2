//! Whether a pool is of no more use to a process that only receives from
//! it: a process that opened another process's pool to revive its handles
//! keeps the pool mapped (and its touched pages allocated) for as long as
//! it has it open, long after the producers are gone. The binding closes
//! such a pool once `idle_and_alone` says nothing can come from it any
//! more. It asks about once a second from a timer on the event loop, so
//! the question never waits for the segment lock.

use std::sync::atomic::Ordering::Relaxed;

use crate::error::{PoolError, Result};
use crate::lock::Wait;
use crate::pool::Pool;

impl Pool {
    /// Whether no handle of this pool can still reach this process: it
    /// holds no reference here, no other live process is attached (dead
    /// ones are reaped first), and no block is in use or in flight (a
    /// message carrying an in-flight block's handle may still be on its
    /// way, even from a process that has exited).
    ///
    /// The usual answer while a producer lives (another live process
    /// attached, or a block in flight) is read without the lock. Otherwise
    /// one critical section reaps and reads everything again, taken only if
    /// the lock is free at once: a busy lock answers false (ask later).
    pub fn idle_and_alone(&self) -> Result<bool> {
        let state = self.lock_state();
        state.ensure_open(self.name())?;
        if state.refs.values().any(|r| r.count > 0)
            || self.other_process_alive()
            || self.view.header().in_flight_blocks.load(Relaxed) != 0
        {
            return Ok(false);
        }
        let checked = self.critical_section(Wait::Try, |heap| {
            self.reap_locked(heap)?;
            Ok(!self.other_process_alive() && self.no_block_used_or_in_flight())
        });
        drop(state);
        match checked {
            Err(PoolError::LockTimeout { .. }) => Ok(false),
            other => other,
        }
    }

    /// Whether another live process is in the table.
    fn other_process_alive(&self) -> bool {
        (0..self.view.header().processes.len()).any(|k| k as u32 != self.slot && self.slot_live(k))
    }

    /// No block in use (the small blocks processes cache aside) or in
    /// flight. Counters another process writes: only compared with zero,
    /// never used to index or size anything.
    fn no_block_used_or_in_flight(&self) -> bool {
        let h = self.view.header();
        let (_, cached_blocks) = self.cached_totals();
        h.in_flight_blocks.load(Relaxed) == 0
            && h.live_blocks.load(Relaxed).saturating_sub(cached_blocks) == 0
    }
}
