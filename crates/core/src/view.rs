//! Typed access to a mapped segment: the header, block headers and words,
//! located by byte offset. Nothing here trusts an offset: every accessor
//! checks that what it returns lies inside the mapping (the journal that
//! writes through it is in `journal.rs`).

use std::sync::atomic::AtomicU64;

use crate::layout::{BlockHeader, SegmentHeader, BLOCK_HEADER_SIZE};

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

    /// The header of the block at `offset`, if the offset is 64-aligned and
    /// the 64 bytes lie inside the mapping. Whether a block really starts
    /// there is the heap's business (`Heap::block`).
    pub fn block(&self, offset: u64) -> Option<&BlockHeader> {
        let end = offset.checked_add(BLOCK_HEADER_SIZE)?;
        if !offset.is_multiple_of(64) || end > self.len {
            return None;
        }
        // SAFETY: checked just above that the 64 bytes are inside the
        // mapping and aligned; BlockHeader consists of atomics only.
        Some(unsafe { &*(self.base.add(offset as usize) as *const BlockHeader) })
    }

    /// The 64-bit word at `offset`, if it lies inside the mapping and is aligned.
    pub fn word(&self, offset: u64) -> Option<&AtomicU64> {
        if !offset.is_multiple_of(8) || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: aligned and inside the live mapping (checked above).
        Some(unsafe { &*(self.base.add(offset as usize) as *const AtomicU64) })
    }

    /// Pointer to `len` bytes at `offset` (array data), if they lie inside
    /// the mapping.
    pub fn range_ptr(&self, offset: u64, len: u64) -> Option<*mut u8> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: offset..offset+len is inside the mapping (checked above).
        Some(unsafe { self.base.add(offset as usize) })
    }

    /// Byte offset of a field that lives in this mapping.
    pub(crate) fn offset_of(&self, field: &AtomicU64) -> u64 {
        let addr = field as *const AtomicU64 as usize;
        let base = self.base as usize;
        debug_assert!(addr >= base && ((addr - base) as u64) < self.len);
        addr.wrapping_sub(base) as u64
    }
}

/// A view over ordinary memory, larger than the header, for unit tests.
#[cfg(test)]
pub(crate) fn with_test_view(f: impl FnOnce(SegmentView)) {
    let mut memory = vec![0u64; 65536];
    // SAFETY: a local buffer larger than the header, alive during `f`.
    let view = unsafe { SegmentView::new(memory.as_mut_ptr() as *mut u8, 65536 * 8) };
    f(view);
}
