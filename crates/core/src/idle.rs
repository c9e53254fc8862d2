//! Whether a pool is of no more use to a process that only receives from
//! it: a process that opened another process's pool to revive its handles
//! keeps the pool mapped (and its touched pages allocated) for as long as
//! it has it open, long after the producers are gone. The binding closes
//! such a pool once `idle_and_alone` says nothing can come from it any
//! more.

use crate::error::Result;
use crate::pool::Pool;

impl Pool {
    /// Whether no handle of this pool can still reach this process: it
    /// holds no reference here, no other live process is attached (dead
    /// ones are reaped first), and no block is in use or in flight (a
    /// message carrying an in-flight block's handle may still be on its
    /// way, even from a process that has exited). Takes the segment lock
    /// only when this process holds nothing.
    pub fn idle_and_alone(&self) -> Result<bool> {
        if self.held_references() != 0 {
            return Ok(false);
        }
        self.reap()?;
        let s = self.stats()?;
        Ok(s.processes == 1 && s.live_blocks == 0 && s.in_flight_blocks == 0)
    }
}
