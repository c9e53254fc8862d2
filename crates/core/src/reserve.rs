//! Backing pages before they are written (reservation) and returning them
//! after a large free (punching), so a write never meets SIGBUS and a spike
//! does not keep its memory.

use crate::error::{PoolError, Result};
use crate::layout::*;
use crate::pool::Pool;
use crate::segment::Segment;

/// Freed blocks smaller than this keep their pages whatever the budget:
/// punching a few pages costs more than it returns.
pub const PUNCH_MIN_BYTES: u64 = 1 << 20;

impl Pool {
    /// Backs heap bytes `[offset, offset + len)` and the block-start bitmap
    /// words that describe them, so no write there can raise SIGBUS.
    pub(crate) fn reserve_heap(&self, offset: u64, len: u64) -> Result<()> {
        self.segment.reserve(offset, len)?;
        let reserved_until = &self.view.header().reserved_until;
        let end = offset.saturating_add(len);
        if end > reserved_until.load(std::sync::atomic::Ordering::Relaxed) {
            self.view.set(reserved_until, end)?;
        }
        reserve_bitmap(&self.segment, &self.geometry, offset, len)
    }

    /// Reserves what an allocation of `size` bytes from the unreserved free
    /// block at `offset` (of `block_size` bytes) needs: a chunk plus the
    /// header of the cold rest, or at least the block and that header when
    /// memory is short. Returns the bytes reserved from `offset`.
    pub(crate) fn reserve_for(
        &self,
        offset: u64,
        size: u64,
        block_size: u64,
        requested: u64,
    ) -> Result<u64> {
        let minimum = (size + BLOCK_HEADER_SIZE).min(block_size);
        // Chunks spare small allocations a syscall each; a block of half a
        // chunk or more reserves just itself, else rounding up would back
        // up to twice its size (a 1 MiB + 64 block took 2 MiB, and the warm
        // rest was too small for the next one).
        let chunk = if size >= self.options.reserve_chunk / 2 {
            minimum
        } else {
            (round_up(size, self.options.reserve_chunk.max(PAGE)) + BLOCK_HEADER_SIZE)
                .min(block_size)
        };
        match self.reserve_heap(offset, chunk) {
            Ok(()) => Ok(chunk),
            Err(PoolError::NoSpace { .. }) if chunk > minimum => {
                self.reserve_heap(offset, minimum)
                    .map_err(|_| PoolError::NoSpace { requested })?;
                Ok(minimum)
            }
            Err(PoolError::NoSpace { .. }) => Err(PoolError::NoSpace { requested }),
            Err(e) => Err(e),
        }
    }

    /// Whether a block of `size` bytes that is about to be freed gives its
    /// pages back. From `punch_threshold` on, always; from
    /// [`PUNCH_MIN_BYTES`] on, when the free bytes the segment keeps backed
    /// (backed less used, this block included) would exceed
    /// `warm_free_budget`: a spike returns its memory, while a steady
    /// working set under the budget stays warm (no `fallocate` on reuse).
    /// `used_bytes` comes from the shared header: a wrong value only
    /// changes this heuristic, never what is freed.
    pub(crate) fn should_punch(&self, size: u64) -> bool {
        if size >= self.options.punch_threshold {
            return true;
        }
        if size < PUNCH_MIN_BYTES {
            return false;
        }
        let used = self
            .view
            .header()
            .used_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        match self.segment.backed_bytes() {
            Ok(backed) => {
                backed.saturating_sub(used).saturating_add(size) > self.options.warm_free_budget
            }
            Err(_) => false,
        }
    }

    /// Returns the data pages of the block at `offset` (of `size` bytes) to
    /// the system; the block must be this process's alone (releasing).
    pub(crate) fn punch_block(&self, offset: u64, size: u64) -> bool {
        self.segment
            .punch_hole(offset + BLOCK_HEADER_SIZE, size - BLOCK_HEADER_SIZE)
            .is_ok()
    }
}

/// Backs the bitmap words for heap bytes `[offset, offset + len)`.
pub(crate) fn reserve_bitmap(
    segment: &Segment,
    geometry: &Geometry,
    offset: u64,
    len: u64,
) -> Result<()> {
    let first_word = offset / BLOCK_ALIGN / 64;
    let last_word = offset
        .saturating_add(len)
        .div_ceil(BLOCK_ALIGN)
        .div_ceil(64);
    let start = geometry.bitmap_offset + first_word * 8;
    segment.reserve(start, (last_word - first_word + 1) * 8)
}
