//! Handles: the plain data that names a byte range of a block in a segment,
//! and their validation. A handle is whatever arrives in a message, so every
//! field is checked before a single offset derived from it is used.

use std::sync::atomic::Ordering::Relaxed;

use crate::allocator::Heap;
use crate::error::{PoolError, Result};
use crate::layout::*;

/// Names `byte_length` bytes at `byte_offset` inside the data of the block
/// at `offset` (generation `generation`) of segment `segment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    pub segment: String,
    pub offset: u64,
    pub generation: u64,
    pub byte_offset: u64,
    pub byte_length: u64,
}

impl Handle {
    /// The handle's fields other than the segment name.
    pub fn range(&self) -> BlockRange {
        BlockRange {
            offset: self.offset,
            generation: self.generation,
            byte_offset: self.byte_offset,
            byte_length: self.byte_length,
        }
    }
}

/// A handle whose segment is already known to be the pool's (a binding that
/// found the pool by the handle's segment name): `Pool::attach_range` and
/// `Pool::share_range` take it without a `String` per call. Every field is
/// still input and checked like a `Handle`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    pub offset: u64,
    pub generation: u64,
    pub byte_offset: u64,
    pub byte_length: u64,
}

impl BlockRange {
    /// Checks that need no lock: alignment, heap bounds, a generation that
    /// was ever issued, and a byte range that does not overflow.
    pub(crate) fn check_shape(&self, heap: &Heap, next_generation: u64) -> Result<()> {
        let reserved_until = heap.reserved_until();
        if !self.offset.is_multiple_of(BLOCK_ALIGN) {
            return Err(PoolError::invalid_handle(format!(
                "offset {} is not 64-byte aligned",
                self.offset
            )));
        }
        if self.offset < heap.start || self.offset.saturating_add(BLOCK_HEADER_SIZE) > heap.end {
            return Err(PoolError::invalid_handle(format!(
                "offset {} is outside the heap [{}, {})",
                self.offset, heap.start, heap.end
            )));
        }
        if self.offset.saturating_add(BLOCK_HEADER_SIZE) > reserved_until {
            // Never part of the used heap: no block ever started there, and
            // its bitmap page may not be backed (reading it could fault).
            return Err(PoolError::invalid_handle(format!(
                "offset {} lies in a part of the pool never used",
                self.offset
            )));
        }
        if self.generation == 0 || self.generation >= next_generation {
            return Err(PoolError::invalid_handle(format!(
                "generation {} was never issued by this pool",
                self.generation
            )));
        }
        if self.byte_offset.checked_add(self.byte_length).is_none() {
            return Err(PoolError::invalid_handle("byte range overflows"));
        }
        Ok(())
    }

    /// Checks, under the lock, that the handle names the live allocation it
    /// was made for and that its range lies inside that allocation. Returns
    /// the block (a used block start, as `refs::used_block` checks) and its
    /// data length, checked against the block's size (which is checked
    /// against the heap), so a view made from it stays in its block.
    pub(crate) fn check_live<'a>(&self, heap: &Heap<'a>) -> Result<(&'a BlockHeader, u64)> {
        let stale = || PoolError::StaleHandle {
            offset: self.offset,
            generation: self.generation,
        };
        if !heap.is_block_start(self.offset)? {
            return Err(stale());
        }
        let b = heap.block(self.offset)?;
        let tag = b.tag.load(Relaxed);
        if tag & TAG_MASK != TAG_USED
            || tag & (FLAG_RELEASING | FLAG_CACHED) != 0
            || b.generation.load(Relaxed) != self.generation
        {
            return Err(stale());
        }
        let data_len = heap.data_len_of(self.offset)?;
        self.check_range(data_len)?;
        Ok((b, data_len))
    }

    pub(crate) fn check_range(&self, data_len: u64) -> Result<()> {
        match self.byte_offset.checked_add(self.byte_length) {
            Some(end) if end <= data_len => Ok(()),
            _ => Err(PoolError::invalid_handle(format!(
                "byte range [{}, +{}) exceeds the block's {} bytes",
                self.byte_offset, self.byte_length, data_len
            ))),
        }
    }
}
