//! The per-process small-block cache (LAYOUT.md §9.1). A small block this
//! process frees, held by it alone, stays allocated in the segment (still
//! held by this process's slot, so reaping after its death frees it) and
//! tagged `FLAG_CACHED` under a fresh generation; the process's next
//! allocation of the same size takes it back without the allocator's split
//! and merges (and so without their neighbour checks). Both steps are
//! journaled writes under the pool lock; only the list of cached blocks is
//! private.
//!
//! What keeps it honest:
//! - a stale handle to a cached block's previous life fails (`FLAG_CACHED`,
//!   and the generation changed when it was cached); nobody can attach a
//!   cached block;
//! - an allocation that finds no free block drains its own cache and
//!   retries, then frees the blocks other processes keep cached (their
//!   owners find them gone and allocate normally), and `close` drains the
//!   cache, so no cache ever makes the pool full;
//! - the slot's `cached_blocks`/`cached_bytes` count it: `stats` reports it
//!   apart from used memory, `check` verifies the counts.

use std::sync::atomic::Ordering::Relaxed;

use crate::allocator::Heap;
use crate::error::{PoolError, Result};
use crate::layout::*;
use crate::pool::{BlockRef, Pool};
use crate::refs::{self, Dropped};

/// Largest block (header included) the cache keeps.
pub(crate) const CACHE_MAX_BLOCK: u64 = 64 << 10;
/// Most bytes one process keeps cached (less in a small pool, see `limit`).
const CACHE_MAX_BYTES: u64 = 1 << 20;
/// Most blocks one process keeps cached.
const CACHE_MAX_BLOCKS: usize = 256;
/// One bucket per block size (a multiple of 64) up to `CACHE_MAX_BLOCK`.
const BUCKETS: usize = (CACHE_MAX_BLOCK / BLOCK_ALIGN) as usize + 1;

/// A cached block, as this process cached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachedBlock {
    pub offset: u64,
    /// The fresh generation written when caching (its next life's).
    pub generation: u64,
    /// Whole block size, header included.
    pub size: u64,
}

/// The blocks this process keeps, by size. Guarded by the pool's
/// process-local mutex (it lives in `LocalState`).
pub(crate) struct BlockCache {
    buckets: Vec<Vec<CachedBlock>>,
    bytes: u64,
    blocks: usize,
}

impl CachedBlock {
    /// The block as handed out by a reuse for `len` bytes.
    pub fn taken(&self, len: u64) -> BlockRef {
        BlockRef {
            offset: self.offset,
            generation: self.generation,
            data_offset: self.offset + BLOCK_HEADER_SIZE,
            data_len: len,
        }
    }
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            buckets: vec![Vec::new(); BUCKETS],
            bytes: 0,
            blocks: 0,
        }
    }
}

impl BlockCache {
    fn bucket(size: u64) -> Option<usize> {
        (size <= CACHE_MAX_BLOCK && size.is_multiple_of(BLOCK_ALIGN))
            .then_some((size / BLOCK_ALIGN) as usize)
    }

    /// Whether a block of `size` bytes may be cached in a pool whose heap
    /// has `heap_bytes` (a small pool keeps at most 1/16 of it cached).
    pub fn has_room(&self, size: u64, heap_bytes: u64) -> bool {
        let limit = CACHE_MAX_BYTES.min(heap_bytes / 16);
        Self::bucket(size).is_some()
            && self.blocks < CACHE_MAX_BLOCKS
            && self.bytes.saturating_add(size) <= limit
    }

    pub fn put(&mut self, block: CachedBlock) {
        if let Some(k) = Self::bucket(block.size) {
            self.buckets[k].push(block);
            self.bytes += block.size;
            self.blocks += 1;
        }
    }

    /// A cached block of exactly `size` bytes, taken out of the cache.
    pub fn take(&mut self, size: u64) -> Option<CachedBlock> {
        let block = self.buckets.get_mut(Self::bucket(size)?)?.pop()?;
        self.bytes -= block.size;
        self.blocks -= 1;
        Some(block)
    }

    pub fn is_empty(&self) -> bool {
        self.blocks == 0
    }

    /// Every cached block, taken out of the cache.
    pub fn take_all(&mut self) -> Vec<CachedBlock> {
        self.bytes = 0;
        self.blocks = 0;
        self.buckets.iter_mut().flat_map(std::mem::take).collect()
    }
}

#[cold]
#[inline(never)]
fn not_as_cached(offset: u64) -> PoolError {
    PoolError::corrupt(
        "tag",
        format!("the block at {offset} this process cached is no longer as it left it"),
    )
}

impl Pool {
    /// Caches the used block `b` at `offset` of `size` bytes, which this
    /// process alone holds and would free now (under the lock, in the
    /// release's transaction). Returns the cache entry.
    #[inline(always)]
    pub(crate) fn cache_locked(
        &self,
        b: &BlockHeader,
        offset: u64,
        size: u64,
    ) -> Result<CachedBlock> {
        let v = &self.view;
        let h = v.header();
        let generation = self.issue_generation()?;
        v.set(&b.generation, generation)?;
        v.set(&b.tag, TAG_USED | FLAG_CACHED)?;
        let slot = &h.processes[self.slot as usize % MAX_PROCESSES];
        v.add(&slot.cached, cached_word(1, size))?;
        Ok(CachedBlock {
            offset,
            generation,
            size,
        })
    }

    /// The cached block `c`, checked to be as this process left it: a block
    /// start, of `c.generation`, tagged cached, held by this process alone,
    /// and of `c.size` bytes. The size was confirmed by the block's
    /// neighbour when it was cached (`held_block` in the release), and the
    /// block has been this process's alone since; what a reuse derives a
    /// range from is `c.size`, this process's copy, equal to the word.
    /// None if no used block of that generation starts there any more:
    /// another process, finding the pool full, freed it (see
    /// `reclaim_cached_of_others`), and the place may since hold a block of
    /// another life (generations are never reused, so it never passes for
    /// this one).
    #[inline(always)]
    fn cached_block<'a>(
        &self,
        heap: &Heap<'a>,
        c: &CachedBlock,
    ) -> Result<Option<&'a BlockHeader>> {
        if !heap.is_block_start(c.offset)? {
            return Ok(None);
        }
        let b = heap.block(c.offset)?;
        if b.tag.load(Relaxed) & TAG_MASK != TAG_USED || b.generation.load(Relaxed) != c.generation
        {
            return Ok(None);
        }
        if b.tag.load(Relaxed) != TAG_USED | FLAG_CACHED
            || b.holders.load(Relaxed) != refs::slot_bit(self.slot)
            || b.size.load(Relaxed) != c.size
        {
            return Err(not_as_cached(c.offset));
        }
        Ok(Some(b))
    }

    #[inline(always)]
    fn uncount_cached(&self, size: u64) -> Result<()> {
        let slot = &self.view.header().processes[self.slot as usize % MAX_PROCESSES];
        self.view.sub(&slot.cached, cached_word(1, size))
    }

    /// Hands the cached block `c` out as a new allocation of `len` bytes
    /// (under the lock); its generation is the one written when caching
    /// (see `CachedBlock::taken`). False if another process reclaimed it.
    /// Returns a bool, not the `BlockRef` (the caller has all of it): a
    /// larger result went through the stack in pieces and was read back
    /// whole, a store-forwarding stall of ~5 ns per allocation.
    #[inline(always)]
    pub(crate) fn reuse_cached(
        &self,
        heap: &Heap,
        c: &CachedBlock,
        len: u64,
        transfer_required: bool,
    ) -> Result<bool> {
        let Some(b) = self.cached_block(heap, c)? else {
            return Ok(false);
        };
        if len > c.size - BLOCK_HEADER_SIZE {
            return Err(not_as_cached(c.offset));
        }
        let flags = if transfer_required {
            FLAG_TRANSFER_REQUIRED
        } else {
            0
        };
        self.view.set(&b.tag, TAG_USED | flags)?;
        self.view.set(&b.data_len, len)?;
        self.uncount_cached(c.size)?;
        Ok(true)
    }

    /// Frees every block of `cache` (under the lock), each its own
    /// transaction, committed here. A block not as this process left it
    /// (corrupt) keeps its holder record: it counts as a failed release, so
    /// `close` leaves the slot to be reaped; one another process reclaimed
    /// is just forgotten. Returns the bytes freed.
    pub(crate) fn drain_cache_locked(&self, heap: &Heap, cache: &mut BlockCache) -> u64 {
        let mut freed = 0;
        for c in cache.take_all() {
            let done = self.cached_block(heap, &c).and_then(|b| {
                let Some(b) = b else { return Ok(0) };
                self.uncount_cached(c.size)?;
                if refs::drop_holder(heap, b, self.slot, false)? == Dropped::Free {
                    refs::free_block(heap, c.offset, false)?;
                }
                Ok(c.size)
            });
            match self.committed(done) {
                Ok(bytes) => freed += bytes,
                Err(_) => {
                    self.release_failures.fetch_add(1, Relaxed);
                }
            }
        }
        freed
    }

    /// Frees the blocks other (live) processes keep cached, each its own
    /// transaction (under the lock, for a full pool): their owners find
    /// them gone and forget them. Returns the bytes freed.
    pub(crate) fn reclaim_cached_of_others(&self, heap: &Heap) -> Result<u64> {
        let mine = refs::slot_bit(self.slot);
        let mut found = Vec::new();
        heap.walk(|offset, b, _| {
            let holders = b.holders.load(Relaxed);
            if b.tag.load(Relaxed) == TAG_USED | FLAG_CACHED
                && holders.count_ones() == 1
                && holders != mine
            {
                found.push(offset);
            }
            Ok(())
        })?;
        let mut freed = 0;
        for offset in found {
            let done = refs::used_block(heap, offset).and_then(|b| {
                let holders = b.holders.load(Relaxed);
                let slot = holders.trailing_zeros();
                let size = heap.size_of(offset)?;
                let entry = &self.view.header().processes[slot as usize % MAX_PROCESSES];
                self.view.sub(&entry.cached, cached_word(1, size))?;
                if refs::drop_holder(heap, b, slot, false)? == Dropped::Free {
                    refs::free_block(heap, offset, false)?;
                }
                Ok(size)
            });
            // A block that breaks the rules is left as it is.
            if let Ok(size) = self.committed(done) {
                freed += size;
            }
        }
        Ok(freed)
    }

    /// Frees this process's cached blocks now (waits for the lock).
    /// Returns the bytes freed.
    pub fn drain_cache(&self) -> Result<u64> {
        let mut state = self.lock_state();
        state.ensure_open(self.name())?;
        if state.cache.is_empty() {
            return Ok(0);
        }
        let cache = &mut state.cache;
        let freed =
            self.critical_section(self.wait(), |heap| Ok(self.drain_cache_locked(heap, cache)));
        state.forget_all_cached();
        freed
    }

    /// Bytes and blocks this process keeps in its cache (tests, diagnostics).
    pub fn cached(&self) -> (u64, u64) {
        let state = self.lock_state();
        (state.cache.bytes, state.cache.blocks as u64)
    }
}
