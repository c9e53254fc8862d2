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
//! Every function here runs under the pool lock and writes through the
//! journal.

use std::sync::atomic::Ordering::Relaxed;

use crate::layout::*;
use crate::view::SegmentView;

pub(crate) struct Heap<'a> {
    pub view: &'a SegmentView,
    pub start: u64,
    pub end: u64,
    pub bitmap_offset: u64,
}

impl<'a> Heap<'a> {
    pub fn new(view: &'a SegmentView) -> Heap<'a> {
        let h = view.header();
        Heap {
            view,
            start: h.heap_start.load(Relaxed),
            end: h.heap_end.load(Relaxed),
            bitmap_offset: h.bitmap_offset.load(Relaxed),
        }
    }

    fn bitmap_word(&self, offset: u64) -> (&std::sync::atomic::AtomicU64, u64) {
        let unit = offset / BLOCK_ALIGN;
        let word_offset = self.bitmap_offset + (unit / 64) * 8;
        let word = self
            .view
            .word(word_offset)
            .expect("bitmap word inside the mapping (geometry validated at open)");
        (word, 1u64 << (unit % 64))
    }

    /// Whether `offset` is where a block starts. Offsets outside the heap or
    /// not 64-aligned are never block starts.
    pub fn is_block_start(&self, offset: u64) -> bool {
        if !offset.is_multiple_of(BLOCK_ALIGN) || offset < self.start || offset >= self.end {
            return false;
        }
        let (word, bit) = self.bitmap_word(offset);
        word.load(Relaxed) & bit != 0
    }

    fn mark_block_start(&self, offset: u64, is_start: bool) {
        let (word, bit) = self.bitmap_word(offset);
        let old = word.load(Relaxed);
        let new = if is_start { old | bit } else { old & !bit };
        if new != old {
            self.view.set(word, new);
        }
    }

    pub fn block(&self, offset: u64) -> &'a BlockHeader {
        self.view.block(offset)
    }

    pub fn is_free(&self, offset: u64) -> bool {
        self.block(offset).tag.load(Relaxed) & TAG_MASK == TAG_FREE
    }

    fn next_phys(&self, offset: u64) -> Option<u64> {
        let next = offset + self.block(offset).size.load(Relaxed);
        (next < self.end).then_some(next)
    }

    /// Lays down a fresh heap: one free, unreserved block over all of it.
    pub fn init(&self) {
        let b = self.block(self.start);
        let v = self.view;
        v.set(&b.size, self.end - self.start);
        v.set(&b.prev_phys, NONE);
        v.set(&b.tag, TAG_FREE | FLAG_UNRESERVED);
        v.set(&b.generation, 0);
        v.set(&b.holders, 0);
        v.set(&b.data_len, 0);
        self.mark_block_start(self.start, true);
        self.insert_free(self.start);
    }

    fn insert_free(&self, offset: u64) {
        let v = self.view;
        let h = v.header();
        let b = self.block(offset);
        let (fl, sl) = size_class(b.size.load(Relaxed));
        let head_field = &h.free_heads[fl][sl];
        let head = head_field.load(Relaxed);
        v.set(&b.next_free, head);
        v.set(&b.prev_free, NONE);
        if head != NONE {
            v.set(&self.block(head).prev_free, offset);
        }
        v.set(head_field, offset);
        let sl_map = h.sl_bitmap[fl].load(Relaxed);
        if sl_map & (1 << sl) == 0 {
            v.set(&h.sl_bitmap[fl], sl_map | (1 << sl));
        }
        let fl_map = h.fl_bitmap.load(Relaxed);
        if fl_map & (1 << fl) == 0 {
            v.set(&h.fl_bitmap, fl_map | (1 << fl));
        }
    }

    fn remove_free(&self, offset: u64) {
        let v = self.view;
        let h = v.header();
        let b = self.block(offset);
        let (fl, sl) = size_class(b.size.load(Relaxed));
        let next = b.next_free.load(Relaxed);
        let prev = b.prev_free.load(Relaxed);
        if next != NONE {
            v.set(&self.block(next).prev_free, prev);
        }
        if prev != NONE {
            v.set(&self.block(prev).next_free, next);
        } else {
            v.set(&h.free_heads[fl][sl], next);
            if next == NONE {
                let sl_map = h.sl_bitmap[fl].load(Relaxed) & !(1 << sl);
                v.set(&h.sl_bitmap[fl], sl_map);
                if sl_map == 0 {
                    v.set(&h.fl_bitmap, h.fl_bitmap.load(Relaxed) & !(1 << fl));
                }
            }
        }
        v.set(&b.next_free, NONE);
        v.set(&b.prev_free, NONE);
    }

    /// A free block of at least `size` bytes (a multiple of 64), O(1).
    ///
    /// TLSF proper starts at the class above the request's own (every block
    /// there fits), which skips a freed block of exactly the requested size:
    /// the common case here (the same array shape, round after round), and
    /// the one whose pages are warm. So the request's own class is looked at
    /// first, a bounded number of entries.
    pub fn find_free(&self, size: u64) -> Option<u64> {
        const OWN_CLASS_PROBES: usize = 8;
        let h = self.view.header();
        let (own_fl, own_sl) = size_class(size);
        if own_fl < FL_COUNT {
            let mut cursor = h.free_heads[own_fl][own_sl].load(Relaxed);
            for _ in 0..OWN_CLASS_PROBES {
                if cursor == NONE {
                    break;
                }
                let b = self.block(cursor);
                if b.size.load(Relaxed) >= size {
                    return Some(cursor);
                }
                cursor = b.next_free.load(Relaxed);
            }
        }
        let (fl, sl) = search_class(size);
        if fl >= FL_COUNT {
            return None;
        }
        let mut sl_map = h.sl_bitmap[fl].load(Relaxed) & (!0u64 << sl);
        let mut fl = fl;
        if sl_map == 0 {
            let fl_map = if fl + 1 >= 64 {
                0
            } else {
                h.fl_bitmap.load(Relaxed) & (!0u64 << (fl + 1))
            };
            if fl_map == 0 {
                return None;
            }
            fl = fl_map.trailing_zeros() as usize;
            if fl >= FL_COUNT {
                return None;
            }
            sl_map = h.sl_bitmap[fl].load(Relaxed);
        }
        let sl = sl_map.trailing_zeros() as usize;
        if sl >= SL_COUNT {
            return None;
        }
        let head = h.free_heads[fl][sl].load(Relaxed);
        (head != NONE).then_some(head)
    }

    /// Splits `[offset, offset + size)` off the free block at `offset` (just
    /// removed from its list) and puts the rest back as a free block with
    /// flags `rest_flags`, merged with its next neighbour if that is free in
    /// the same reservation state. The caller sets the header of the first part.
    fn split(&self, offset: u64, size: u64, rest_flags: u64) {
        let v = self.view;
        let b = self.block(offset);
        let total = b.size.load(Relaxed);
        if total - size < BLOCK_HEADER_SIZE {
            return;
        }
        let rest = offset + size;
        let mut rest_size = total - size;
        if let Some(after) = self.next_phys(offset) {
            if self.block(after).tag.load(Relaxed) == TAG_FREE | rest_flags {
                self.remove_free(after);
                rest_size += self.block(after).size.load(Relaxed);
                self.mark_block_start(after, false);
            }
        }
        let r = self.block(rest);
        v.set(&r.size, rest_size);
        v.set(&r.prev_phys, offset);
        v.set(&r.tag, TAG_FREE | rest_flags);
        v.set(&r.generation, 0);
        v.set(&r.holders, 0);
        v.set(&r.data_len, 0);
        self.mark_block_start(rest, true);
        if let Some(after) = self.next_phys(rest) {
            v.set(&self.block(after).prev_phys, rest);
        }
        v.set(&b.size, size);
        self.insert_free(rest);
    }

    /// Takes `size` bytes from the free block at `offset`. When the block was
    /// unreserved, `reserved_len` bytes from its start have just been backed
    /// (at least `size` + one header, or the whole block): the part of them
    /// beyond `size` goes back as a warm free block, the remainder stays
    /// unreserved. Every header written lies inside the backed range. Returns the size actually used (a tail too
    /// small to be a block stays with the allocation).
    pub fn take(&self, offset: u64, size: u64, reserved_len: u64) -> u64 {
        let b = self.block(offset);
        let unreserved = b.tag.load(Relaxed) & FLAG_UNRESERVED != 0;
        self.remove_free(offset);
        if unreserved {
            let total = b.size.load(Relaxed);
            // The cold rest's header needs backed pages too: keep one header
            // of the backed range for it.
            let warm_end = if reserved_len >= total {
                total
            } else {
                reserved_len.saturating_sub(BLOCK_HEADER_SIZE) / BLOCK_ALIGN * BLOCK_ALIGN
            };
            if warm_end >= size + BLOCK_HEADER_SIZE && total - warm_end >= BLOCK_HEADER_SIZE {
                // [offset, +size) used | [+size, +warm_end) warm | rest cold
                self.split(offset, warm_end, FLAG_UNRESERVED);
                self.split(offset, size, 0);
            } else if warm_end >= total {
                self.split(offset, size, 0);
            } else {
                self.split(offset, size, FLAG_UNRESERVED);
            }
        } else {
            self.split(offset, size, 0);
        }
        b.size.load(Relaxed)
    }

    /// Returns a used block to the free lists, coalescing with free
    /// neighbours of the same reservation state. Returns the offset of the
    /// resulting free block.
    pub fn free(&self, offset: u64, unreserved: bool) -> u64 {
        let v = self.view;
        let flags = if unreserved { FLAG_UNRESERVED } else { 0 };
        let b = self.block(offset);
        v.set(&b.tag, TAG_FREE | flags);
        v.set(&b.holders, 0);
        v.set(&b.data_len, 0);
        let same_state = |other: u64| {
            let tag = self.block(other).tag.load(Relaxed);
            tag & TAG_MASK == TAG_FREE && (tag & FLAG_UNRESERVED) == flags
        };
        let mut start = offset;
        let mut size = b.size.load(Relaxed);
        if let Some(next) = self.next_phys(offset) {
            if same_state(next) {
                self.remove_free(next);
                size += self.block(next).size.load(Relaxed);
                self.mark_block_start(next, false);
            }
        }
        let prev = b.prev_phys.load(Relaxed);
        if prev != NONE && same_state(prev) {
            self.remove_free(prev);
            size += self.block(prev).size.load(Relaxed);
            self.mark_block_start(offset, false);
            start = prev;
        }
        v.set(&self.block(start).size, size);
        if start + size < self.end {
            v.set(&self.block(start + size).prev_phys, start);
        }
        self.insert_free(start);
        start
    }

    /// The largest free block's size: the highest non-empty class holds it.
    pub fn largest_free(&self) -> u64 {
        let h = self.view.header();
        let fl_map = h.fl_bitmap.load(Relaxed);
        if fl_map == 0 {
            return 0;
        }
        let fl = 63 - fl_map.leading_zeros() as usize;
        let sl_map = h.sl_bitmap.get(fl).map_or(0, |m| m.load(Relaxed));
        if sl_map == 0 {
            return 0;
        }
        let sl = 63 - sl_map.leading_zeros() as usize;
        let mut best = 0;
        let mut cursor = h.free_heads[fl].get(sl).map_or(NONE, |c| c.load(Relaxed));
        let mut guard = 0u64;
        while cursor != NONE && self.is_block_start(cursor) && guard < 1 << 20 {
            let blk = self.block(cursor);
            best = best.max(blk.size.load(Relaxed));
            cursor = blk.next_free.load(Relaxed);
            guard += 1;
        }
        best
    }

    /// Visits every block in physical order. Stops (returning the reason) at
    /// a header that does not describe a plausible block.
    pub fn walk(&self, mut visit: impl FnMut(u64, &BlockHeader)) -> Result<(), String> {
        let mut offset = self.start;
        let mut prev = NONE;
        while offset < self.end {
            let b = self.block(offset);
            let size = b.size.load(Relaxed);
            if size < BLOCK_HEADER_SIZE
                || !size.is_multiple_of(BLOCK_ALIGN)
                || offset + size > self.end
            {
                return Err(format!("block at {offset} has an impossible size {size}"));
            }
            if b.prev_phys.load(Relaxed) != prev {
                return Err(format!(
                    "block at {offset}: prev_phys {} but the previous block is at {prev}",
                    b.prev_phys.load(Relaxed)
                ));
            }
            visit(offset, b);
            prev = offset;
            offset += size;
        }
        Ok(())
    }
}
