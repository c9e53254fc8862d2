//! The undo journal through which every write made under the pool lock goes.
//!
//! **Crash consistency.** A transaction (one allocation, one free, one
//! reaped reference) may touch a few dozen words. Before a word is
//! overwritten its offset and old value are appended to the journal in the
//! header; `commit` empties the journal. If a process dies inside a
//! transaction, the process that takes the lock over finds a non-empty
//! journal and restores the old values in reverse order: the transaction
//! never happened. The journal is bounded by `JOURNAL_CAPACITY`; a
//! transaction that would overflow it (only a corrupt segment can make one
//! that large) fails with `CorruptSegment` and is rolled back.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{PoolError, Result};
use crate::layout::JOURNAL_CAPACITY;
use crate::view::SegmentView;

#[cold]
#[inline(never)]
fn journal_overflow(n: u64) -> PoolError {
    PoolError::corrupt(
        "journal_len",
        format!("{n} entries: a transaction larger than the journal's {JOURNAL_CAPACITY}"),
    )
}

impl SegmentView {
    /// Journaled write; only while holding the pool lock.
    #[inline]
    pub fn set(&self, field: &AtomicU64, value: u64) -> Result<()> {
        let old = field.load(Ordering::Relaxed);
        if old == value {
            return Ok(());
        }
        let header = self.header();
        let n = header.journal_len.load(Ordering::Relaxed);
        let entry = usize::try_from(n)
            .ok()
            .and_then(|n| header.journal.get(n))
            .ok_or_else(|| journal_overflow(n))?;
        entry.offset.store(self.offset_of(field), Ordering::Relaxed);
        entry.old_value.store(old, Ordering::Relaxed);
        header.journal_len.store(n + 1, Ordering::Release);
        // Release keeps the journal entry ahead of this write even if the
        // process is killed between the two.
        field.store(value, Ordering::Release);
        #[cfg(feature = "testing")]
        crate::testing::journaled_write_point();
        Ok(())
    }

    /// Counters wrap rather than fail: a corrupt counter gives wrong
    /// statistics, never a panic.
    pub fn add(&self, field: &AtomicU64, delta: u64) -> Result<()> {
        self.set(field, field.load(Ordering::Relaxed).wrapping_add(delta))
    }

    pub fn sub(&self, field: &AtomicU64, delta: u64) -> Result<()> {
        self.set(field, field.load(Ordering::Relaxed).wrapping_sub(delta))
    }

    /// Ends the current transaction: its writes stay.
    pub fn commit(&self) {
        self.header().journal_len.store(0, Ordering::Release);
    }

    /// Undoes an unfinished transaction left by a dead lock owner (or one
    /// that failed). Returns the number of words restored. Entries pointing
    /// outside the mapping (a corrupt journal) are skipped rather than trusted.
    pub fn rollback(&self) -> usize {
        let header = self.header();
        let n = usize::try_from(header.journal_len.load(Ordering::Acquire))
            .unwrap_or(JOURNAL_CAPACITY)
            .min(JOURNAL_CAPACITY);
        for entry in header.journal[..n].iter().rev() {
            if let Some(word) = self.word(entry.offset.load(Ordering::Relaxed)) {
                word.store(entry.old_value.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        header.journal_len.store(0, Ordering::Release);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::view::with_test_view as with_view;

    #[test]
    fn rollback_restores_in_reverse_order() {
        with_view(|view| {
            let h = view.header();
            h.used_bytes.store(10, Ordering::Relaxed);
            view.set(&h.used_bytes, 20).unwrap();
            view.set(&h.used_bytes, 30).unwrap();
            view.set(&h.live_blocks, 5).unwrap();
            assert_eq!(h.used_bytes.load(Ordering::Relaxed), 30);
            assert_eq!(view.rollback(), 3);
            assert_eq!(h.used_bytes.load(Ordering::Relaxed), 10);
            assert_eq!(h.live_blocks.load(Ordering::Relaxed), 0);
            view.set(&h.used_bytes, 40).unwrap();
            view.commit();
            assert_eq!(view.rollback(), 0);
            assert_eq!(h.used_bytes.load(Ordering::Relaxed), 40);
        });
    }

    #[test]
    fn a_corrupt_journal_length_is_an_error_not_a_panic() {
        with_view(|view| {
            let h = view.header();
            h.journal_len.store(u64::MAX, Ordering::Relaxed);
            let err = view.set(&h.used_bytes, 1).unwrap_err();
            assert_eq!(err.code(), "ERR_CORRUPT_SEGMENT");
            assert_eq!(h.used_bytes.load(Ordering::Relaxed), 0, "nothing written");
            // Rollback clamps to the journal's capacity.
            assert_eq!(view.rollback(), JOURNAL_CAPACITY);
        });
    }

    #[test]
    fn a_journal_entry_outside_the_mapping_is_skipped() {
        with_view(|view| {
            let h = view.header();
            h.journal[0].offset.store(u64::MAX - 3, Ordering::Relaxed);
            h.journal[1].offset.store(1 << 40, Ordering::Relaxed);
            h.journal_len.store(2, Ordering::Relaxed);
            assert_eq!(view.rollback(), 2);
        });
    }
}
