//! Typed access to a mapped segment, and the undo journal through which
//! every write made under the pool lock goes.
//!
//! **Crash consistency.** A transaction (one allocation, one free, one
//! reaped reference) may touch a few dozen words. Before a word is
//! overwritten its offset and old value are appended to the journal in the
//! header; `commit` empties the journal. If a process dies inside a
//! transaction, the process that takes the lock over finds a non-empty
//! journal and restores the old values in reverse order: the transaction
//! never happened. The journal is bounded by `JOURNAL_CAPACITY`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::layout::{BlockHeader, SegmentHeader, BLOCK_HEADER_SIZE, JOURNAL_CAPACITY};

/// A mapped segment seen as its structs. Cheap to copy: a base and a length.
#[derive(Clone, Copy)]
pub struct SegmentView {
    base: *mut u8,
    len: u64,
}

// SAFETY: the view only hands out references to atomics inside a mapping
// that outlives it (the owning `Pool` keeps the mapping); atomics may be
// shared between threads.
unsafe impl Send for SegmentView {}
// SAFETY: as above.
unsafe impl Sync for SegmentView {}

impl SegmentView {
    /// # Safety
    /// - `base` points to a live shared mapping of `len` bytes, page aligned,
    ///   that stays mapped for as long as the view (or anything it returns) is used;
    /// - `len` is at least the size of `SegmentHeader`.
    pub unsafe fn new(base: *mut u8, len: u64) -> SegmentView {
        SegmentView { base, len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: `new` guarantees a live mapping at least as large as the
        // header, page aligned; the header consists of atomics only.
        unsafe { &*(self.base as *const SegmentHeader) }
    }

    /// The header of the block at `offset`. Panics (a bug, never input) if
    /// the offset is not 64-aligned or the header would leave the mapping:
    /// callers validate offsets that come from outside first.
    pub fn block(&self, offset: u64) -> &BlockHeader {
        assert!(
            offset.is_multiple_of(64)
                && offset
                    .checked_add(BLOCK_HEADER_SIZE)
                    .is_some_and(|end| end <= self.len),
            "block offset {offset} outside the mapping"
        );
        // SAFETY: checked just above that the 64 bytes are inside the
        // mapping and aligned; BlockHeader consists of atomics only.
        unsafe { &*(self.base.add(offset as usize) as *const BlockHeader) }
    }

    /// The 64-bit word at `offset`, if it lies inside the mapping and is aligned.
    pub fn word(&self, offset: u64) -> Option<&AtomicU64> {
        if !offset.is_multiple_of(8) || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: aligned and inside the live mapping (checked above).
        Some(unsafe { &*(self.base.add(offset as usize) as *const AtomicU64) })
    }

    /// Pointer to byte `offset` of the mapping (for array data).
    pub fn ptr(&self, offset: u64) -> *mut u8 {
        assert!(
            offset <= self.len,
            "data offset {offset} outside the mapping"
        );
        // SAFETY: offset is within the mapping (checked above).
        unsafe { self.base.add(offset as usize) }
    }

    fn offset_of(&self, field: &AtomicU64) -> u64 {
        let addr = field as *const AtomicU64 as usize;
        let base = self.base as usize;
        debug_assert!(addr >= base && ((addr - base) as u64) < self.len);
        (addr - base) as u64
    }

    /// Journaled write; only while holding the pool lock.
    pub fn set(&self, field: &AtomicU64, value: u64) {
        if field.load(Ordering::Relaxed) == value {
            return;
        }
        let header = self.header();
        let n = header.journal_len.load(Ordering::Relaxed) as usize;
        assert!(
            n < JOURNAL_CAPACITY,
            "journal overflow: a transaction is larger than designed"
        );
        let entry = &header.journal[n];
        entry.offset.store(self.offset_of(field), Ordering::Relaxed);
        entry
            .old_value
            .store(field.load(Ordering::Relaxed), Ordering::Relaxed);
        header.journal_len.store(n as u64 + 1, Ordering::Release);
        // Release keeps the journal entry ahead of this write even if the
        // process is killed between the two.
        field.store(value, Ordering::Release);
        #[cfg(feature = "testing")]
        crate::testing::journaled_write_point();
    }

    pub fn add(&self, field: &AtomicU64, delta: u64) {
        self.set(field, field.load(Ordering::Relaxed).wrapping_add(delta));
    }

    pub fn sub(&self, field: &AtomicU64, delta: u64) {
        self.set(field, field.load(Ordering::Relaxed).wrapping_sub(delta));
    }

    /// Ends the current transaction: its writes stay.
    pub fn commit(&self) {
        self.header().journal_len.store(0, Ordering::Release);
    }

    /// Undoes an unfinished transaction left by a dead lock owner. Returns the
    /// number of words restored. Entries pointing outside the mapping (a
    /// corrupt journal) are skipped rather than trusted.
    pub fn rollback(&self) -> usize {
        let header = self.header();
        let n = (header.journal_len.load(Ordering::Acquire) as usize).min(JOURNAL_CAPACITY);
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

    #[test]
    fn rollback_restores_in_reverse_order() {
        let mut memory = vec![0u64; 65536];
        // SAFETY: a local buffer larger than the header, alive for the test.
        let view = unsafe { SegmentView::new(memory.as_mut_ptr() as *mut u8, 65536 * 8) };
        let h = view.header();
        h.used_bytes.store(10, Ordering::Relaxed);
        view.set(&h.used_bytes, 20);
        view.set(&h.used_bytes, 30);
        view.set(&h.live_blocks, 5);
        assert_eq!(h.used_bytes.load(Ordering::Relaxed), 30);
        assert_eq!(view.rollback(), 3);
        assert_eq!(h.used_bytes.load(Ordering::Relaxed), 10);
        assert_eq!(h.live_blocks.load(Ordering::Relaxed), 0);
        view.set(&h.used_bytes, 40);
        view.commit();
        assert_eq!(view.rollback(), 0);
        assert_eq!(h.used_bytes.load(Ordering::Relaxed), 40);
    }
}
