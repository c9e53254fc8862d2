//! The in-segment allocator: **TLSF** (two-level segregated fit) over
//! 64-byte units, with boundary tags for coalescing.
//!
//! **Why TLSF.** Allocation and free are O(1): two bitmap scans
//! (`trailing_zeros`) find a non-empty size class, lists are doubly linked,
//! and the physical neighbours of a block are found through its size (next)
//! and its `prev_phys` tag (previous) — never a scan of all blocks, never a
//! syscall on the warm path. Fragmentation is bounded by the class
//! granularity (1/16 of a power of two). A best-fit tree (O(log n)) would
//! fragment a little less; a first-fit scan (pyarraypool) is O(blocks).
//!
//! **Alignment.** Block starts and sizes are multiples of 64 and each block
//! starts with a 64-byte header, so every data area is 64-byte aligned.
//!
//! **Block starts.** A bitmap with one bit per 64-byte unit marks where
//! blocks start, so a handle's offset can be checked exactly: an offset
//! into the middle of a block (even over data crafted to look like a header)
//! is rejected.
//!
//! **Reservation.** A free block may carry `FLAG_UNRESERVED`: some of its
//! pages may not be backed by tmpfs (never touched, or handed back by a punch
//! hole). Such blocks are reserved with `fallocate` before they are handed
//! out; free blocks coalesce only with neighbours of the same reservation
//! state, so a warm region never silently turns cold.
//!
//! **Trust.** Every word read from the segment (sizes, links, tags, list
//! heads, bitmap words) is input from another process. The geometry comes
//! from the caller (validated once per process, never re-read); each offset
//! is checked against it before use, each size against the heap and against
//! its neighbour's boundary tag, each link against the bitmap, its tag and
//! its back link. A violation is `CorruptSegment` naming the field; the
//! caller's transaction is then rolled back, so a corrupt word never spreads.
//!
//! Every function here runs under the pool lock and writes through the
//! journal.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::error::{PoolError, Result};
use crate::layout::*;
use crate::view::SegmentView;

/// What the pool needs from an allocator (one implementation, `Heap`; the
/// trait keeps the pool's use of it small and testable on its own).
pub(crate) trait BlockAllocator {
    /// A free block of at least `size` bytes (a multiple of 64), if any.
    fn find_free(&self, size: u64) -> Result<Option<u64>>;
    /// Takes `size` bytes from the free block at `offset`; `reserved_len`
    /// bytes from its start are backed. Returns the size actually used.
    fn take(&self, offset: u64, size: u64, reserved_len: u64) -> Result<u64>;
    /// Returns a used block to the free lists (coalescing); returns the
    /// offset of the resulting free block.
    fn free(&self, offset: u64, unreserved: bool) -> Result<u64>;
    /// The largest free block's size.
    fn largest_free(&self) -> Result<u64>;
}

pub(crate) struct Heap<'a> {
    pub view: &'a SegmentView,
    pub start: u64,
    pub end: u64,
    bitmap_offset: u64,
    /// The last `reserved_until` read (it only grows): re-read only when
    /// an offset lies above it, so the common check is one compare.
    reserved: std::cell::Cell<u64>,
}

#[cold]
#[inline(never)]
fn corrupt(field: &'static str, detail: String) -> PoolError {
    PoolError::corrupt(field, detail)
}

#[cold]
#[inline(never)]
fn not_a_block_position(heap: &Heap, offset: u64) -> PoolError {
    corrupt(
        "block offset",
        format!(
            "{offset} is not a block position in the heap [{}, {})",
            heap.start, heap.end
        ),
    )
}

#[cold]
#[inline(never)]
fn impossible_size(offset: u64, size: u64) -> PoolError {
    corrupt(
        "block size",
        format!("block at {offset} has an impossible size {size}"),
    )
}

impl<'a> Heap<'a> {
    /// `geometry` must have been validated against this mapping (it is the
    /// process's own copy, never re-read from the segment).
    pub fn new(view: &'a SegmentView, geometry: &Geometry) -> Heap<'a> {
        Heap {
            view,
            start: geometry.heap_start,
            end: geometry.heap_end,
            bitmap_offset: geometry.bitmap_offset,
            reserved: std::cell::Cell::new(geometry.heap_start),
        }
    }

    /// Heap offsets below this had their pages reserved at some point; a
    /// header above it was never written (reading it could fault in pages).
    /// Shared, so clamped to the heap: it only ever narrows what is read.
    pub fn reserved_until(&self) -> u64 {
        let now = self
            .view
            .header()
            .reserved_until
            .load(Relaxed)
            .clamp(self.start, self.end);
        self.reserved.set(now);
        now
    }

    /// Whether heap bytes up to `end` were reserved (see `reserved_until`).
    #[inline]
    fn below_reserved(&self, end: u64) -> bool {
        end <= self.reserved.get() || end <= self.reserved_until()
    }

    #[inline]
    fn bitmap_word(&self, offset: u64) -> Result<(&'a AtomicU64, u64)> {
        let unit = offset / BLOCK_ALIGN;
        let word_offset = self.bitmap_offset + (unit / 64) * 8;
        let word = self.view.word(word_offset).ok_or_else(|| {
            corrupt(
                "bitmap",
                format!("bitmap word at {word_offset} outside the mapping"),
            )
        })?;
        Ok((word, 1u64 << (unit % 64)))
    }

    /// Whether `offset` is where a block starts. Offsets outside the used
    /// heap or not 64-aligned are never block starts.
    #[inline]
    pub fn is_block_start(&self, offset: u64) -> Result<bool> {
        if !offset.is_multiple_of(BLOCK_ALIGN)
            || offset < self.start
            || !self.below_reserved(offset.saturating_add(BLOCK_HEADER_SIZE))
        {
            return Ok(false);
        }
        let (word, bit) = self.bitmap_word(offset)?;
        Ok(word.load(Relaxed) & bit != 0)
    }

    fn mark_block_start(&self, offset: u64, is_start: bool) -> Result<()> {
        let (word, bit) = self.bitmap_word(offset)?;
        let old = word.load(Relaxed);
        let new = if is_start { old | bit } else { old & !bit };
        self.view.set(word, new)
    }

    /// The header at `offset`, which must lie inside the used heap (the
    /// caller knows a block starts there, or checks `is_block_start`).
    #[inline]
    pub fn block(&self, offset: u64) -> Result<&'a BlockHeader> {
        let in_heap = offset.is_multiple_of(BLOCK_ALIGN)
            && offset >= self.start
            && self.below_reserved(offset.saturating_add(BLOCK_HEADER_SIZE));
        match in_heap.then(|| self.view.block(offset)).flatten() {
            Some(b) => Ok(b),
            None => Err(not_a_block_position(self, offset)),
        }
    }

    /// The block's size, checked: a multiple of 64, at least a header, and
    /// inside the heap.
    #[inline]
    pub fn size_of(&self, offset: u64) -> Result<u64> {
        let size = self.block(offset)?.size.load(Relaxed);
        let fits = offset
            .checked_add(size)
            .is_some_and(|block_end| block_end <= self.end);
        if size < BLOCK_HEADER_SIZE || !size.is_multiple_of(BLOCK_ALIGN) || !fits {
            return Err(impossible_size(offset, size));
        }
        Ok(size)
    }

    /// The block's size, confirmed by the block after it (its `prev_phys`)
    /// or, for the last block, by the bitmap: what a size must pass before
    /// a range derived from it is written to or punched.
    pub fn verified_size(&self, offset: u64) -> Result<u64> {
        self.next_phys(offset)?;
        self.size_of(offset)
    }

    /// The data bytes of the used block at `offset`, checked against its size.
    pub fn data_len_of(&self, offset: u64) -> Result<u64> {
        let size = self.verified_size(offset)?;
        let data_len = self.block(offset)?.data_len.load(Relaxed);
        if data_len > size - BLOCK_HEADER_SIZE {
            return Err(corrupt(
                "data_len",
                format!("block at {offset} of {size} bytes claims {data_len} bytes of data"),
            ));
        }
        Ok(data_len)
    }

    pub fn is_free(&self, offset: u64) -> Result<bool> {
        Ok(self.block(offset)?.tag.load(Relaxed) & TAG_MASK == TAG_FREE)
    }

    /// A block that a free list or a neighbour says is free: it must start
    /// a block and be tagged free.
    fn free_block(&self, offset: u64, field: &'static str) -> Result<&'a BlockHeader> {
        if !self.is_block_start(offset)? || !self.is_free(offset)? {
            return Err(corrupt(
                field,
                format!("links {offset}, which is not a free block"),
            ));
        }
        self.block(offset)
    }

    /// The block physically after `offset`, if any, checked through its
    /// boundary tag (so a scribbled size is caught, not followed).
    fn next_phys(&self, offset: u64) -> Result<Option<u64>> {
        let size = self.size_of(offset)?;
        let next = offset + size;
        if next >= self.end {
            self.check_is_last(offset, size)?;
            return Ok(None);
        }
        if !self.is_block_start(next)? || self.block(next)?.prev_phys.load(Relaxed) != offset {
            return Err(corrupt(
                "block size",
                format!("block at {offset} ends at {next}, where no block points back to it"),
            ));
        }
        Ok(Some(next))
    }

    /// A block that claims to reach the heap's end has no neighbour to
    /// confirm its size: the header's `last_block` must name it.
    fn check_is_last(&self, offset: u64, size: u64) -> Result<()> {
        let last = self.view.header().last_block.load(Relaxed);
        if last != offset {
            return Err(corrupt(
                "block size",
                format!("block at {offset} claims {size} bytes, to the heap's end, but the last block is at {last}"),
            ));
        }
        Ok(())
    }

    /// Writes a block's size, keeping `last_block` right.
    fn set_size(&self, offset: u64, size: u64) -> Result<()> {
        self.view.set(&self.block(offset)?.size, size)?;
        if offset + size == self.end {
            self.view.set(&self.view.header().last_block, offset)?;
        }
        Ok(())
    }

    /// The block physically before `offset`, if any, checked the same way.
    fn prev_phys(&self, offset: u64) -> Result<Option<u64>> {
        let prev = self.block(offset)?.prev_phys.load(Relaxed);
        if prev == NONE {
            return Ok(None);
        }
        let adjacent = prev < offset
            && self.is_block_start(prev)?
            && prev.checked_add(self.size_of(prev)?) == Some(offset);
        if !adjacent {
            return Err(corrupt(
                "prev_phys",
                format!("block at {offset} names {prev} as its predecessor"),
            ));
        }
        Ok(Some(prev))
    }

    fn list_head(&self, (fl, sl): (usize, usize)) -> Result<&'a AtomicU64> {
        self.view
            .header()
            .free_heads
            .get(fl)
            .and_then(|row| row.get(sl))
            .ok_or_else(|| {
                corrupt(
                    "block size",
                    format!("size class ({fl}, {sl}) out of range"),
                )
            })
    }

    fn sl_bitmap(&self, fl: usize) -> Result<&'a AtomicU64> {
        self.view
            .header()
            .sl_bitmap
            .get(fl)
            .ok_or_else(|| corrupt("fl_bitmap", format!("first level {fl} out of range")))
    }

    /// Lays down a fresh heap: one free, unreserved block over all of it.
    pub fn init(&self) -> Result<()> {
        let b = self.block(self.start)?;
        let v = self.view;
        self.set_size(self.start, self.end - self.start)?;
        v.set(&b.prev_phys, NONE)?;
        v.set(&b.tag, TAG_FREE | FLAG_UNRESERVED)?;
        v.set(&b.generation, 0)?;
        v.set(&b.holders, 0)?;
        v.set(&b.data_len, 0)?;
        self.mark_block_start(self.start, true)?;
        self.insert_free(self.start)
    }

    fn insert_free(&self, offset: u64) -> Result<()> {
        let v = self.view;
        let h = v.header();
        let b = self.block(offset)?;
        let (fl, sl) = size_class(self.size_of(offset)?);
        let head_field = self.list_head((fl, sl))?;
        let head = head_field.load(Relaxed);
        if head != NONE {
            let old_head = self.free_block(head, "free_heads")?;
            v.set(&old_head.prev_free, offset)?;
        }
        v.set(&b.next_free, head)?;
        v.set(&b.prev_free, NONE)?;
        v.set(head_field, offset)?;
        let sl_field = self.sl_bitmap(fl)?;
        v.set(sl_field, sl_field.load(Relaxed) | (1 << sl))?;
        v.set(&h.fl_bitmap, h.fl_bitmap.load(Relaxed) | (1 << fl))
    }

    fn remove_free(&self, offset: u64) -> Result<()> {
        let v = self.view;
        let h = v.header();
        let b = self.free_block(offset, "free list")?;
        let (fl, sl) = size_class(self.size_of(offset)?);
        let next = b.next_free.load(Relaxed);
        let prev = b.prev_free.load(Relaxed);
        if next != NONE {
            let n = self.free_block(next, "next_free")?;
            if n.prev_free.load(Relaxed) != offset {
                return Err(corrupt(
                    "prev_free",
                    format!("free block at {next} does not link back to {offset}"),
                ));
            }
            v.set(&n.prev_free, prev)?;
        }
        if prev != NONE {
            let p = self.free_block(prev, "prev_free")?;
            if p.next_free.load(Relaxed) != offset {
                return Err(corrupt(
                    "next_free",
                    format!("free block at {prev} does not link to {offset}"),
                ));
            }
            v.set(&p.next_free, next)?;
        } else {
            let head = self.list_head((fl, sl))?;
            if head.load(Relaxed) != offset {
                return Err(corrupt(
                    "free_heads",
                    format!(
                        "free block at {offset} has no predecessor but list ({fl}, {sl}) starts at {}",
                        head.load(Relaxed)
                    ),
                ));
            }
            v.set(head, next)?;
            if next == NONE {
                let sl_field = self.sl_bitmap(fl)?;
                let sl_map = sl_field.load(Relaxed) & !(1 << sl);
                v.set(sl_field, sl_map)?;
                if sl_map == 0 {
                    v.set(&h.fl_bitmap, h.fl_bitmap.load(Relaxed) & !(1 << fl))?;
                }
            }
        }
        v.set(&b.next_free, NONE)?;
        v.set(&b.prev_free, NONE)
    }

    /// A listed free block: a free block start in class `class`.
    fn listed(&self, offset: u64, class: (usize, usize)) -> Result<&'a BlockHeader> {
        let b = self.free_block(offset, "free_heads")?;
        let size = self.size_of(offset)?;
        if size_class(size) != class {
            return Err(corrupt(
                "block size",
                format!("free block at {offset} of {size} bytes is listed in class {class:?}"),
            ));
        }
        Ok(b)
    }

    /// Splits `[offset, offset + size)` off the free block at `offset` (just
    /// removed from its list) and puts the rest back as a free block with
    /// flags `rest_flags`, merged with its next neighbour if that is free in
    /// the same reservation state. The caller sets the header of the first part.
    fn split(&self, offset: u64, size: u64, rest_flags: u64) -> Result<()> {
        let v = self.view;
        let total = self.verified_size(offset)?;
        if total < size || total - size < BLOCK_HEADER_SIZE {
            return Ok(());
        }
        let after = self.next_phys(offset)?;
        let rest = offset + size;
        let mut rest_size = total - size;
        if let Some(after) = after {
            if self.block(after)?.tag.load(Relaxed) == TAG_FREE | rest_flags {
                let after_size = self.verified_size(after)?;
                self.remove_free(after)?;
                rest_size += after_size;
                self.mark_block_start(after, false)?;
            }
        }
        let r = self.block(rest)?;
        self.set_size(rest, rest_size)?;
        v.set(&r.prev_phys, offset)?;
        v.set(&r.tag, TAG_FREE | rest_flags)?;
        v.set(&r.generation, 0)?;
        v.set(&r.holders, 0)?;
        v.set(&r.data_len, 0)?;
        v.set(&r.next_free, NONE)?;
        v.set(&r.prev_free, NONE)?;
        self.mark_block_start(rest, true)?;
        let rest_end = rest + rest_size;
        if rest_end < self.end {
            v.set(&self.block(rest_end)?.prev_phys, rest)?;
        }
        self.set_size(offset, size)?;
        self.insert_free(rest)
    }

    /// Visits every block in physical order, checking that the blocks tile
    /// the heap. Bounded: each step moves forward by at least one header.
    pub fn walk(&self, mut visit: impl FnMut(u64, &BlockHeader, u64) -> Result<()>) -> Result<()> {
        let mut offset = self.start;
        let mut prev = NONE;
        while offset < self.end {
            let b = self.block(offset)?;
            let size = self.size_of(offset)?;
            if offset + size == self.end {
                // Else a size scribbled to reach the end would hide the
                // blocks after it from reaping.
                self.check_is_last(offset, size)?;
            }
            if b.prev_phys.load(Relaxed) != prev {
                return Err(corrupt(
                    "prev_phys",
                    format!(
                        "block at {offset}: prev_phys {} but the previous block is at {prev}",
                        b.prev_phys.load(Relaxed)
                    ),
                ));
            }
            visit(offset, b, size)?;
            prev = offset;
            offset += size;
        }
        Ok(())
    }
}

impl BlockAllocator for Heap<'_> {
    /// TLSF proper starts at the class above the request's own (every block
    /// there fits), which skips a freed block of exactly the requested size:
    /// the common case here (the same array shape, round after round), and
    /// the one whose pages are warm. So the request's own class is looked at
    /// first, a bounded number of entries.
    fn find_free(&self, size: u64) -> Result<Option<u64>> {
        const OWN_CLASS_PROBES: usize = 8;
        let h = self.view.header();
        let own = size_class(size);
        if own.0 < FL_COUNT {
            let mut cursor = self.list_head(own)?.load(Relaxed);
            for _ in 0..OWN_CLASS_PROBES {
                if cursor == NONE {
                    break;
                }
                let b = self.listed(cursor, own)?;
                if self.size_of(cursor)? >= size {
                    return Ok(Some(cursor));
                }
                cursor = b.next_free.load(Relaxed);
            }
        }
        let (fl, sl) = search_class(size);
        if fl >= FL_COUNT {
            return Ok(None);
        }
        let mut sl_map = self.sl_bitmap(fl)?.load(Relaxed) & (!0u64 << sl);
        let mut fl = fl;
        if sl_map == 0 {
            let fl_map = if fl + 1 >= 64 {
                0
            } else {
                h.fl_bitmap.load(Relaxed) & (!0u64 << (fl + 1))
            };
            if fl_map == 0 {
                return Ok(None);
            }
            fl = fl_map.trailing_zeros() as usize;
            sl_map = self.sl_bitmap(fl)?.load(Relaxed);
        }
        let sl = sl_map.trailing_zeros() as usize;
        let head = self.list_head((fl, sl))?.load(Relaxed);
        if head == NONE {
            return Err(corrupt(
                "sl_bitmap",
                format!("class ({fl}, {sl}) is marked non-empty but its list is empty"),
            ));
        }
        self.listed(head, (fl, sl))?;
        if self.size_of(head)? < size {
            return Err(corrupt(
                "block size",
                format!("free block at {head} is too small for its class"),
            ));
        }
        Ok(Some(head))
    }

    /// When the block was unreserved, `reserved_len` bytes from its start
    /// have just been backed (at least `size` + one header, or the whole
    /// block): the part of them beyond `size` goes back as a warm free
    /// block, the remainder stays unreserved. Every header written lies
    /// inside the backed range. A tail too small to be a block stays with
    /// the allocation.
    fn take(&self, offset: u64, size: u64, reserved_len: u64) -> Result<u64> {
        let b = self.block(offset)?;
        let total = self.verified_size(offset)?;
        if total < size {
            return Err(corrupt(
                "block size",
                format!("free block at {offset} of {total} bytes cannot hold {size}"),
            ));
        }
        let unreserved = b.tag.load(Relaxed) & FLAG_UNRESERVED != 0;
        self.remove_free(offset)?;
        if unreserved {
            // The cold rest's header needs backed pages too: keep one header
            // of the backed range for it.
            let warm_end = if reserved_len >= total {
                total
            } else {
                reserved_len.saturating_sub(BLOCK_HEADER_SIZE) / BLOCK_ALIGN * BLOCK_ALIGN
            };
            if warm_end >= size + BLOCK_HEADER_SIZE && total - warm_end >= BLOCK_HEADER_SIZE {
                // [offset, +size) used | [+size, +warm_end) warm | rest cold
                self.split(offset, warm_end, FLAG_UNRESERVED)?;
                self.split(offset, size, 0)?;
            } else if warm_end >= total {
                self.split(offset, size, 0)?;
            } else {
                self.split(offset, size, FLAG_UNRESERVED)?;
            }
        } else {
            self.split(offset, size, 0)?;
        }
        self.size_of(offset)
    }

    fn free(&self, offset: u64, unreserved: bool) -> Result<u64> {
        let v = self.view;
        let flags = if unreserved { FLAG_UNRESERVED } else { 0 };
        let b = self.block(offset)?;
        let mut size = self.size_of(offset)?;
        // Both neighbours are checked before the first write.
        let next = self.next_phys(offset)?;
        let prev = self.prev_phys(offset)?;
        v.set(&b.tag, TAG_FREE | flags)?;
        v.set(&b.holders, 0)?;
        v.set(&b.data_len, 0)?;
        v.set(&b.next_free, NONE)?;
        v.set(&b.prev_free, NONE)?;
        let same_state = |other: u64| -> Result<bool> {
            let tag = self.block(other)?.tag.load(Relaxed);
            Ok(tag & TAG_MASK == TAG_FREE && (tag & FLAG_UNRESERVED) == flags)
        };
        let mut start = offset;
        if let Some(next) = next {
            if same_state(next)? {
                let next_size = self.verified_size(next)?;
                self.remove_free(next)?;
                size += next_size;
                self.mark_block_start(next, false)?;
            }
        }
        if let Some(prev) = prev {
            if same_state(prev)? {
                let prev_size = self.size_of(prev)?;
                self.remove_free(prev)?;
                size += prev_size;
                self.mark_block_start(offset, false)?;
                start = prev;
            }
        }
        self.set_size(start, size)?;
        if start + size < self.end {
            v.set(&self.block(start + size)?.prev_phys, start)?;
        }
        self.insert_free(start)?;
        Ok(start)
    }

    /// The highest non-empty class holds the largest free block; its list
    /// is walked a bounded number of steps.
    fn largest_free(&self) -> Result<u64> {
        const MAX_STEPS: usize = 1 << 16;
        let h = self.view.header();
        let fl_map = h.fl_bitmap.load(Relaxed);
        if fl_map == 0 {
            return Ok(0);
        }
        let fl = 63 - fl_map.leading_zeros() as usize;
        let sl_map = self.sl_bitmap(fl)?.load(Relaxed);
        if sl_map == 0 {
            return Ok(0);
        }
        let sl = 63 - sl_map.leading_zeros() as usize;
        let mut best = 0;
        let mut cursor = self.list_head((fl, sl))?.load(Relaxed);
        for _ in 0..MAX_STEPS {
            if cursor == NONE {
                break;
            }
            let b = self.listed(cursor, (fl, sl))?;
            best = best.max(self.size_of(cursor)?);
            cursor = b.next_free.load(Relaxed);
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;

    const CAPACITY: u64 = 1 << 20;

    /// A heap in ordinary memory, fully reserved, as `Pool::create` lays it out.
    fn with_heap(f: impl FnOnce(&Heap)) {
        let mut memory = vec![0u64; (CAPACITY / 8) as usize];
        // SAFETY: a local buffer of CAPACITY bytes, 8-aligned (page
        // alignment is not needed for plain reads and writes), alive during `f`.
        let view = unsafe { SegmentView::new(memory.as_mut_ptr() as *mut u8, CAPACITY) };
        let g = Geometry::for_capacity(CAPACITY).unwrap();
        view.header().next_generation.store(1, Relaxed);
        view.header().reserved_until.store(g.heap_end, Relaxed);
        let heap = Heap::new(&view, &g);
        heap.init().unwrap();
        view.commit();
        f(&heap);
    }

    /// What `Pool::allocate` does with the allocator, minus the bookkeeping
    /// the checker does not need to be told about.
    fn allocate(heap: &Heap, len: u64) -> Result<u64> {
        let size = round_up(len + BLOCK_HEADER_SIZE, BLOCK_ALIGN);
        let offset = heap.find_free(size)?.expect("room");
        let used = heap.take(offset, size, u64::MAX)?;
        let v = heap.view;
        let h = v.header();
        let b = heap.block(offset)?;
        let generation = h.next_generation.load(Relaxed);
        v.set(&h.next_generation, generation + 1)?;
        v.set(&b.tag, TAG_USED)?;
        v.set(&b.generation, generation)?;
        v.set(&b.holders, 1)?;
        v.set(&b.data_len, len)?;
        v.add(&h.used_bytes, used)?;
        v.add(&h.live_blocks, 1)?;
        v.add(&h.processes[0].held_blocks, 1)?;
        v.set(&h.processes[0].state, SLOT_ACTIVE)?;
        v.commit();
        Ok(offset)
    }

    fn free(heap: &Heap, offset: u64) -> Result<()> {
        let v = heap.view;
        let h = v.header();
        v.sub(&h.used_bytes, heap.size_of(offset)?)?;
        v.sub(&h.live_blocks, 1)?;
        v.sub(&h.processes[0].held_blocks, 1)?;
        heap.free(offset, false)?;
        v.commit();
        Ok(())
    }

    fn assert_consistent(heap: &Heap) {
        let report = check(heap);
        assert_eq!(report.violation, None);
    }

    #[test]
    fn allocate_split_free_and_coalesce_keep_every_invariant() {
        with_heap(|heap| {
            let a = allocate(heap, 1000).unwrap();
            let b = allocate(heap, 5000).unwrap();
            let c = allocate(heap, 64).unwrap();
            assert_consistent(heap);
            assert_eq!(heap.data_len_of(b).unwrap(), 5000);
            free(heap, b).unwrap();
            assert_consistent(heap);
            // Exact-size reuse takes b's warm block back.
            assert_eq!(allocate(heap, 5000).unwrap(), b);
            free(heap, a).unwrap();
            free(heap, b).unwrap();
            free(heap, c).unwrap();
            assert_consistent(heap);
            assert_eq!(
                check(heap).blocks,
                1,
                "everything merged back into one block"
            );
            assert_eq!(heap.largest_free().unwrap(), heap.end - heap.start);
        });
    }

    #[test]
    fn a_scribbled_free_block_size_is_refused_not_followed() {
        with_heap(|heap| {
            let a = allocate(heap, 1000).unwrap();
            let b = allocate(heap, 1000).unwrap();
            let _c = allocate(heap, 1000).unwrap();
            free(heap, b).unwrap();
            // Another process makes the free block claim the rest of the heap.
            heap.block(b).unwrap().size.store(heap.end - b, Relaxed);
            let err = allocate(heap, 1000).unwrap_err();
            assert_eq!(err.code(), "ERR_CORRUPT_SEGMENT", "{err}");
            heap.view.rollback();
            // Freeing the block in front of it must not merge with it either.
            let err = free(heap, a).unwrap_err();
            assert_eq!(err.code(), "ERR_CORRUPT_SEGMENT", "{err}");
            heap.view.rollback();
            assert_eq!(
                heap.block(a).unwrap().tag.load(Relaxed),
                TAG_USED,
                "rolled back"
            );
        });
    }

    /// The review's two aliasing routes: a free block's size grown over
    /// its live neighbour (still in the same size class) must be refused
    /// both by an exact-fit allocation (no split, so no split-time check)
    /// and by a free that would merge with it.
    #[test]
    fn a_free_size_grown_over_a_live_neighbour_is_refused_on_exact_fit_and_merge() {
        for route in ["exact fit", "merge"] {
            with_heap(|heap| {
                let a = allocate(heap, 4096 - 64).unwrap();
                let b = allocate(heap, 4096 - 64).unwrap();
                let c = allocate(heap, 128 - 64).unwrap();
                let _d = allocate(heap, 4096 - 64).unwrap();
                free(heap, b).unwrap();
                assert_eq!(heap.size_of(c).unwrap(), 128);
                heap.block(b).unwrap().size.store(4096 + 128, Relaxed);
                assert_eq!(size_class(4096), size_class(4096 + 128), "still its class");
                let outcome = match route {
                    "exact fit" => allocate(heap, 4096 + 128 - 64).map(|_| ()),
                    _ => free(heap, a),
                };
                let err = outcome.expect_err(route);
                assert_eq!(err.code(), "ERR_CORRUPT_SEGMENT", "{route}: {err}");
                heap.view.rollback();
                assert_eq!(
                    heap.block(c).unwrap().tag.load(Relaxed),
                    TAG_USED,
                    "{route}"
                );
            });
        }
    }

    #[test]
    fn corrupt_links_heads_and_bitmaps_are_errors() {
        type Scribble = fn(&Heap, u64);
        let scribbles: [(&str, Scribble); 6] = [
            ("next_free outside the heap", |h, b| {
                h.block(b).unwrap().next_free.store(u64::MAX - 63, Relaxed)
            }),
            ("prev_free into a used block", |h, b| {
                h.block(b).unwrap().prev_free.store(h.start, Relaxed)
            }),
            ("list head at a non-block", |h, b| {
                let (fl, sl) = size_class(h.size_of(b).unwrap());
                h.view.header().free_heads[fl][sl].store(b + 64, Relaxed)
            }),
            ("second-level bit without a list", |h, _| {
                h.view.header().sl_bitmap[2].store(u64::MAX, Relaxed);
                h.view.header().fl_bitmap.store(u64::MAX, Relaxed)
            }),
            ("prev_phys of the next block", |h, b| {
                let next = b + h.size_of(b).unwrap();
                h.block(next).unwrap().prev_phys.store(b + 128, Relaxed)
            }),
            ("journal_len", |h, _| {
                h.view.header().journal_len.store(1 << 40, Relaxed)
            }),
        ];
        for (what, scribble) in scribbles {
            with_heap(|heap| {
                let _a = allocate(heap, 1000).unwrap();
                let b = allocate(heap, 3000).unwrap();
                let _c = allocate(heap, 1000).unwrap();
                free(heap, b).unwrap();
                scribble(heap, b);
                let outcome = allocate(heap, 2000)
                    .and_then(|x| free(heap, x))
                    .and_then(|()| allocate(heap, 100_000).map(|_| ()));
                match outcome {
                    Err(e) => assert_eq!(e.code(), "ERR_CORRUPT_SEGMENT", "{what}: {e}"),
                    Ok(()) => assert!(
                        check(heap).violation.is_some(),
                        "{what}: neither refused nor reported by check()"
                    ),
                }
            });
        }
    }

    #[test]
    fn walks_are_bounded_and_report_an_impossible_size() {
        with_heap(|heap| {
            let a = allocate(heap, 1000).unwrap();
            heap.block(a).unwrap().size.store(0, Relaxed);
            assert!(heap.walk(|_, _, _| Ok(())).is_err());
            assert!(check(heap).violation.is_some());
            heap.block(a).unwrap().size.store(u64::MAX - 63, Relaxed);
            assert!(heap.walk(|_, _, _| Ok(())).is_err());
            assert!(heap.data_len_of(a).is_err());
        });
    }
}
