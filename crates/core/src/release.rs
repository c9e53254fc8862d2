//! Dropping references. A release never waits for the segment lock: it is
//! made from finalizers and on event loops, and a stopped lock holder must
//! not stall them. When the lock is not free at once, the release is queued
//! in this process and done by its next critical section (any operation),
//! or by `flush_releases` (a timer in the Node binding). The holder record
//! stays in the segment meanwhile, so nothing leaks: if this process dies
//! first, reaping drops it like any other record of a dead process.
//!
//! Unsent blocks: a block allocated with `allocate_local` whose handle
//! never left this process (no `mark_escaped` before its last local
//! reference went) is freed by that last release even if it was allocated
//! `transfer_required`: nobody can be waiting for it. Under the lock, and
//! only if this process is its sole holder and nobody ever attached it,
//! `FLAG_TRANSFER_REQUIRED` is cleared (journaled, like every write) before
//! the holder record is dropped; otherwise the normal rule applies. A
//! queued release keeps that decision.

use std::sync::atomic::Ordering::Relaxed;

use crate::allocator::Heap;
use crate::block_cache::BlockCache;
use crate::error::{PoolError, Result};
use crate::layout::*;
use crate::lock::Wait;
use crate::pool::Pool;
use crate::refs::{self, Dropped};

/// A holder record to drop later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueuedRelease {
    pub offset: u64,
    pub generation: u64,
    /// The block was marked releasing and its pages punched: only the
    /// record drop and the free remain.
    pub punched: bool,
    /// The block's handle never left this process (see the module doc).
    pub unsent: bool,
}

/// This process's last reference to a block, being dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastRef {
    pub offset: u64,
    pub generation: u64,
    /// The block's handle never left this process (see the module doc).
    pub unsent: bool,
    /// The block's size as this process took it (`LocalRef::block_size`),
    /// if it has it at hand.
    pub block_size: Option<u64>,
}

/// The block `last` names, if its header still says what this process
/// took: used, of its generation, of `size` bytes (`LocalRef::block_size`,
/// confirmed by the neighbour when taken). Then the block is as it was
/// when checked in full, and its size need not be confirmed again through
/// the neighbour and the bitmap. None means: check in full (which also
/// says what is wrong). A free of the block still confirms the size
/// through the neighbours before it writes (`Heap::free`).
#[inline(always)]
fn held_as_taken<'a>(heap: &Heap<'a>, last: &LastRef, size: u64) -> Option<(&'a BlockHeader, u64)> {
    let b = heap.block(last.offset).ok()?;
    let as_taken = b.tag.load(Relaxed) & TAG_MASK == TAG_USED
        && b.generation.load(Relaxed) == last.generation
        && b.size.load(Relaxed) == size;
    as_taken.then_some((b, size))
}

/// What a release did with the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropOutcome {
    /// Put it in this process's cache.
    Cached,
    /// Dropped its holder record (freeing it if the rule says so), or
    /// queued that drop.
    Dropped,
}

/// What the first step of a drop decided.
pub(crate) enum Step {
    Done,
    /// The block went to the cache.
    Cached,
    /// The block is ours alone and large: punch outside the lock, then finish.
    PunchThenFree {
        size: u64,
    },
}

impl Pool {
    /// Drops this process's holder record of the block (its last local
    /// reference is gone) without waiting for the lock: done now if the
    /// lock is free, else queued.
    /// A small block this process alone holds goes to `cache` instead of
    /// the allocator when it has room (see `block_cache.rs`).
    pub(crate) fn drop_reference(
        &self,
        last: LastRef,
        cache: &mut BlockCache,
    ) -> Result<DropOutcome> {
        let LastRef {
            offset,
            generation,
            unsent,
            ..
        } = last;
        let step = self.critical_section(Wait::Try, |heap| {
            self.drop_step(heap, &last, true, Some(cache))
        });
        match step {
            Ok(Step::Done) => Ok(DropOutcome::Dropped),
            Ok(Step::Cached) => Ok(DropOutcome::Cached),
            Ok(Step::PunchThenFree { size }) => {
                let punched = self.punch_block(offset, size);
                let finish = self.critical_section(Wait::Try, |heap| {
                    self.finish_punched(heap, offset, generation, punched)
                });
                match finish {
                    Err(PoolError::LockTimeout { .. }) => {
                        // The transfer flag was cleared with the mark.
                        self.queue(offset, generation, punched, false);
                        Ok(DropOutcome::Dropped)
                    }
                    other => other.map(|_| DropOutcome::Dropped),
                }
            }
            Err(PoolError::LockTimeout { .. }) => {
                self.queue(offset, generation, false, unsent);
                Ok(DropOutcome::Dropped)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn queue(&self, offset: u64, generation: u64, punched: bool, unsent: bool) {
        let mut queued = self.lock_queue();
        queued.push(QueuedRelease {
            offset,
            generation,
            punched,
            unsent,
        });
        self.queued_count.store(queued.len(), Relaxed);
    }

    /// First step of a drop, under the lock. A large block that will be
    /// freed is, with `punch_outside`, marked releasing instead (the caller
    /// punches it outside the lock); otherwise it is punched and freed now.
    /// `last.unsent`: the block's handle never left this process, so if this
    /// process is its only holder and nobody ever attached it, it is freed
    /// even if allocated `transfer_required` (the flag is cleared first).
    /// With `cache`, a small block about to be freed that this process alone
    /// holds is cached instead, if the cache has room.
    #[inline(always)]
    pub(crate) fn drop_step(
        &self,
        heap: &Heap,
        last: &LastRef,
        punch_outside: bool,
        cache: Option<&mut BlockCache>,
    ) -> Result<Step> {
        let LastRef {
            offset,
            generation,
            unsent,
            block_size,
        } = *last;
        let (b, size) = match block_size.and_then(|size| held_as_taken(heap, last, size)) {
            Some(held) => held,
            None => {
                let b = refs::held_block(heap, offset, generation)?;
                // Confirmed by its neighbour in `used_block`.
                (b, heap.size_of(offset)?)
            }
        };
        let others = b.holders.load(Relaxed) & !refs::slot_bit(self.slot);
        let mut tag = b.tag.load(Relaxed);
        if unsent
            && others == 0
            && tag & FLAG_TRANSFER_REQUIRED != 0
            && tag & (FLAG_TRANSFERRED | FLAG_RELEASING) == 0
        {
            tag &= !FLAG_TRANSFER_REQUIRED;
            self.view.set(&b.tag, tag)?;
        }
        let will_free =
            others == 0 && (tag & FLAG_TRANSFER_REQUIRED == 0 || tag & FLAG_TRANSFERRED != 0);
        let large = will_free && self.should_punch(size);
        if let Some(cache) = cache.filter(|c| {
            will_free
                && !large
                && b.holders.load(Relaxed) == refs::slot_bit(self.slot)
                && c.has_room(size, self.geometry.heap_end - self.geometry.heap_start)
        }) {
            cache.put(self.cache_locked(b, offset, size)?);
            return Ok(Step::Cached);
        }
        if large && punch_outside {
            // Return the pages outside the lock; meanwhile the block is
            // ours alone and no handle can attach it.
            self.view.set(&b.tag, tag | FLAG_RELEASING)?;
            return Ok(Step::PunchThenFree { size });
        }
        // Already under the lock for other work (queued releases, close):
        // a large block's pages are returned here, as reaping does.
        let punched = large && self.punch_block(offset, size);
        if refs::drop_holder(heap, b, self.slot, false)? == Dropped::Free {
            refs::free_block(heap, offset, punched)?;
        }
        Ok(Step::Done)
    }

    fn finish_punched(
        &self,
        heap: &Heap,
        offset: u64,
        generation: u64,
        punched: bool,
    ) -> Result<()> {
        let b = refs::held_block(heap, offset, generation)?;
        if refs::drop_holder(heap, b, self.slot, false)? == Dropped::Free {
            refs::free_block(heap, offset, punched)?;
        }
        Ok(())
    }

    /// Does the queued releases, each its own transaction (under the lock,
    /// from `critical_section`). A release the segment refuses (corrupt) is
    /// dropped from the queue: its record stays until this process leaves.
    #[inline]
    pub(crate) fn drain_queued_releases(&self, heap: &Heap) {
        // The check inline, the work out of line: every critical section
        // passes here.
        if self.queued_count.load(Relaxed) != 0 {
            self.drain_queued_releases_now(heap);
        }
    }

    #[cold]
    #[inline(never)]
    fn drain_queued_releases_now(&self, heap: &Heap) {
        let queued: Vec<QueuedRelease> = std::mem::take(&mut *self.lock_queue());
        self.queued_count.store(0, Relaxed);
        for q in queued {
            let done = if q.punched {
                self.finish_punched(heap, q.offset, q.generation, true)
            } else {
                let last = LastRef {
                    offset: q.offset,
                    generation: q.generation,
                    unsent: q.unsent,
                    block_size: None,
                };
                self.drop_step(heap, &last, false, None).map(|_| ())
            };
            if self.committed(done).is_err() {
                self.release_failures.fetch_add(1, Relaxed);
            }
        }
    }

    /// Does the queued releases now if the lock is free at once; never
    /// waits. Returns how many are still queued.
    pub fn flush_releases(&self) -> usize {
        if self.queued_releases() == 0 {
            return 0;
        }
        if let Some(state) = self.try_lock_state() {
            if !state.closed && self.queued_count.load(Relaxed) != 0 {
                let _ = self.critical_section(Wait::Try, |_| Ok(()));
            }
        }
        self.queued_releases()
    }

    /// Releases not done yet because the lock (or, for a moment, another
    /// thread of this process) was busy (diagnostics, tests).
    pub fn queued_releases(&self) -> usize {
        self.queued_count.load(Relaxed) + self.pending_local()
    }

    pub(crate) fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<QueuedRelease>> {
        // A panic while holding this mutex cannot leave the list half
        // updated (single pushes and takes), so poisoning is ignored.
        self.queued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
