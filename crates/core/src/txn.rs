//! Transactions: a critical section under the segment lock whose writes go
//! through the journal, committed when it succeeds and rolled back when it
//! fails or its process dies.

use std::sync::atomic::Ordering::Acquire;

use crate::allocator::Heap;
use crate::error::Result;
use crate::lock::{self, Acquired, Wait};
use crate::pool::Pool;
use crate::view::SegmentView;

/// Releases the lock when a critical section ends, and rolls back a
/// transaction a panic left half done.
struct LockGuard<'a> {
    view: &'a SegmentView,
    word: u64,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if self.view.header().journal_len.load(Acquire) != 0 {
            self.view.rollback();
        }
        lock::release(self.view, self.word);
    }
}

impl Pool {
    /// Runs `f` under the segment lock as one transaction: committed when
    /// it returns `Ok`, rolled back when it returns `Err`. Before `f`, an
    /// unfinished transaction of a dead owner is rolled back, dead
    /// processes are reaped after a takeover, and this process's queued
    /// releases are done (each its own transaction).
    ///
    /// Inlined, with the steps of the cached allocate+release path, so
    /// that their results stay in registers: returned through memory, they
    /// were written in pieces and read back whole (store-forwarding
    /// stalls, ~10 ns of a ~60 ns pair).
    #[inline(always)]
    pub(crate) fn critical_section<T>(
        &self,
        wait: Wait,
        f: impl FnOnce(&Heap) -> Result<T>,
    ) -> Result<T> {
        let acquired = lock::acquire(&self.view, self.lock_word, wait, |s| {
            self.segment.slot_alive(s as usize)
        })?;
        let _guard = LockGuard {
            view: &self.view,
            word: self.lock_word,
        };
        if self.view.header().journal_len.load(Acquire) != 0 {
            self.view.rollback();
        }
        let heap = Heap::new(&self.view, &self.geometry);
        if let Acquired::TakenOver { .. } = acquired {
            // A dead process held the lock: drop what it (and any other
            // dead process) held while we are here. Best effort: a corrupt
            // segment fails here and again, with its error, in `f`.
            let _ = self.committed(self.reap_locked(&heap));
        }
        self.drain_queued_releases(&heap);
        let result = f(&heap);
        self.committed(result)
    }

    /// Ends the current transaction the way its result says.
    #[inline(always)]
    pub(crate) fn committed<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Ok(_) => self.view.commit(),
            Err(_) => {
                self.view.rollback();
            }
        }
        result
    }
}
