//! Reaping: dropping the holder records of processes that died (their
//! liveness locks are free), so their blocks are freed or left to others.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::allocator::Heap;
use crate::error::Result;
use crate::layout::*;
use crate::pool::{Pool, ReapReport};
use crate::refs::{self, Dropped};

/// How often allocation checks the liveness of the other registered
/// processes (one `fcntl` per registered process).
pub(crate) const DEAD_PEER_SWEEP: Duration = Duration::from_secs(1);
/// The clock is read only every this many allocations (reading it each
/// time cost ~20% of an allocation).
const SWEEP_CLOCK_EVERY: u64 = 256;

impl Pool {
    /// Whether the periodic dead-peer sweep is due (and claims it).
    pub(crate) fn sweep_due(&self) -> bool {
        // A load and a store, not an atomic add (a locked instruction is a
        // measurable part of a cached allocation): threads racing here may
        // lose a count, which only moves the next clock read a little.
        let n = self.allocations.load(Relaxed);
        self.allocations.store(n.wrapping_add(1), Relaxed);
        if !n.is_multiple_of(SWEEP_CLOCK_EVERY) {
            return false;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_sweep_ms.load(Relaxed);
        now.saturating_sub(last) >= DEAD_PEER_SWEEP.as_millis() as u64
            && self
                .last_sweep_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }

    /// Reaps every registered slot other than ours whose process is dead.
    pub(crate) fn reap_locked(&self, heap: &Heap) -> Result<ReapReport> {
        let h = self.view.header();
        let mut dead = 0u64;
        for (k, entry) in h.processes.iter().enumerate() {
            if k as u32 != self.slot
                && entry.state.load(Relaxed) == SLOT_ACTIVE
                && !self.segment.slot_alive(k)
            {
                dead |= refs::slot_bit(k as u32);
            }
        }
        self.reap_slots(heap, dead)
    }

    /// Drops every holder record of the slots in `dead` and frees what
    /// nobody else holds. Each dropped record is its own transaction, so
    /// the journal bound holds however many dead processes held a block.
    pub(crate) fn reap_slots(&self, heap: &Heap, dead: u64) -> Result<ReapReport> {
        let mut report = ReapReport::default();
        if dead == 0 {
            return Ok(report);
        }
        for offset in refs::blocks_held_by(heap, dead)? {
            let mut held = heap.block(offset)?.holders.load(Relaxed) & dead;
            while held != 0 {
                let slot = held.trailing_zeros();
                held &= held - 1;
                report.references += 1;
                let b = refs::used_block(heap, offset)?;
                // A releaser that died may have punched the pages already.
                let was_releasing = b.tag.load(Relaxed) & FLAG_RELEASING != 0;
                if refs::drop_holder(heap, b, slot, true)? == Dropped::Free {
                    let size = heap.verified_size(offset)?;
                    let punched = self.should_punch(size) && self.punch_block(offset, size);
                    refs::free_block(heap, offset, punched || was_releasing)?;
                    report.blocks_freed += 1;
                    report.bytes_freed += size;
                }
                self.view.commit();
            }
        }
        let h = self.view.header();
        let mut remaining = dead;
        while remaining != 0 {
            let slot = remaining.trailing_zeros() as usize;
            remaining &= remaining - 1;
            self.view.set(&h.processes[slot].state, SLOT_FREE)?;
            self.view.set(&h.processes[slot].held_blocks, 0)?;
            self.view.set(&h.processes[slot].cached, 0)?;
            report.processes += 1;
        }
        self.view.commit();
        Ok(report)
    }
}
