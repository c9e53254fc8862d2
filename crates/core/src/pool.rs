//! `Pool`: one process's attachment to a segment, composing the segment
//! (OS), the layout, the allocator, the lock, the holder records and handle
//! validation. All public operations are safe to call from several threads.
//!
//! The rest of `Pool` lives next to the job it does: creating, opening
//! and registering (`register.rs`), transactions
//! (`txn.rs`), releases and their queue (`release.rs`), reaping
//! (`reap.rs`), reservation and punching (`reserve.rs`), the local
//! references (`local.rs`).

use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::allocator::{BlockAllocator, Heap};
use crate::check::CheckReport;
use crate::error::{PoolError, Result};
use crate::handle::{BlockRange, Handle};
use crate::layout::*;
use crate::local::{LocalRef, LocalState};
use crate::lock::{self, Wait};
use crate::memfd;
use crate::refs;
use crate::release::{DropOutcome, LastRef, QueuedRelease};
use crate::segment::{self, Backing, Segment};
use crate::view::SegmentView;

/// Tunables of a pool (the creator's choice of capacity and name; the rest
/// is per process).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Segment size in bytes; default: half of memory (anonymous pools) or
    /// half of the `/dev/shm` filesystem (named ones).
    pub capacity: Option<u64>,
    /// Segment name (`arraypool-...`, named pools only); default: random,
    /// 128 bits. Anonymous pools are named after their random id.
    pub name: Option<String>,
    /// What backs the segment (creation only); default: anonymous memory.
    pub backing: Backing,
    /// Freed blocks at least this large give their pages back to the system.
    pub punch_threshold: u64,
    /// Free bytes the segment keeps backed for fast reuse: beyond them, a
    /// freed block of at least 1 MiB gives its pages back too (see
    /// `should_punch`).
    pub warm_free_budget: u64,
    /// Cold pages are reserved in chunks of this many bytes, so small
    /// allocations do not each cost a syscall.
    pub reserve_chunk: u64,
    /// Longest wait for the lock while its owner stays alive.
    pub lock_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            capacity: None,
            name: None,
            backing: Backing::default(),
            punch_threshold: 256 << 20,
            warm_free_budget: 256 << 20,
            reserve_chunk: 2 << 20,
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// One reference to an allocation, as this process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub offset: u64,
    pub generation: u64,
    /// Where the data starts (64-byte aligned), from the segment start.
    pub data_offset: u64,
    /// Bytes requested at allocation.
    pub data_len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub capacity_bytes: u64,
    /// Bytes available to blocks (capacity less header and bitmap).
    pub heap_bytes: u64,
    /// Bytes in used blocks, block headers and padding included; blocks
    /// kept in processes' small-block caches are not counted here but in
    /// `cached_bytes`.
    pub used_bytes: u64,
    /// Heap bytes neither used nor cached.
    pub free_bytes: u64,
    pub largest_free_bytes: u64,
    pub live_blocks: u64,
    /// Freed small blocks that processes keep for their next allocations
    /// (LAYOUT.md §9.1): allocated in the segment, free for their owner,
    /// given back when the pool is full or the process leaves.
    pub cached_bytes: u64,
    pub cached_blocks: u64,
    pub in_flight_blocks: u64,
    /// Registered processes that are alive.
    pub processes: u64,
    pub lock_takeovers: u64,
    /// Bytes of the segment backed by memory now (tmpfs pages reserved or
    /// touched and not given back): what the pool costs the machine.
    pub backed_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Dead processes whose slots were cleared.
    pub processes: u64,
    /// Holder records dropped (one per block per dead process).
    pub references: u64,
    /// Blocks freed because nobody else held them.
    pub blocks_freed: u64,
    pub bytes_freed: u64,
}

pub struct Pool {
    pub(crate) segment: Segment,
    pub(crate) view: SegmentView,
    /// Validated once at create/open; never re-read from the segment.
    pub(crate) geometry: Geometry,
    pub(crate) slot: u32,
    /// This process's lock word: its slot and the epoch of its claim.
    pub(crate) lock_word: u64,
    pub(crate) creator: bool,
    pub(crate) options: PoolOptions,
    /// References this process holds and whether it closed the pool. Lock
    /// order: this, then the segment lock, then `queued`.
    pub(crate) state: Mutex<LocalState>,
    /// `state.closed`, readable without the mutex.
    pub(crate) closed: AtomicBool,
    /// Releases waiting for the segment lock (see `release.rs`).
    pub(crate) queued: Mutex<Vec<QueuedRelease>>,
    pub(crate) queued_count: AtomicUsize,
    /// Releases that found `state` busy (another thread of this process
    /// inside an operation, possibly waiting for the segment lock): their
    /// local decrement is applied by whoever takes `state` next.
    pub(crate) deferred: Mutex<Vec<(u64, u64)>>,
    pub(crate) deferred_count: AtomicUsize,
    /// Queued releases the segment refused (corrupt): their records stay
    /// until this process leaves, and then its slot is left to be reaped.
    pub(crate) release_failures: AtomicUsize,
    /// When the allocation path last looked for dead processes (ms since
    /// `epoch`): a dead peer is noticed within `DEAD_PEER_SWEEP` even if
    /// nothing else (lock takeover, full pool) reveals it.
    pub(crate) last_sweep_ms: AtomicU64,
    pub(crate) epoch: Instant,
    /// Allocations since start (the sweep reads the clock every N of them).
    pub(crate) allocations: AtomicU64,
}

impl Pool {
    pub fn name(&self) -> &str {
        self.segment.name()
    }

    pub fn backing(&self) -> Backing {
        self.segment.backing()
    }

    /// What another process passes to `Pool::open` to attach: the name of a
    /// named pool; for an anonymous one, the name and this process's fd,
    /// ahead of the hints of `inherited` (the locator this process was
    /// given), so a grandchild can attach through its parent, or through
    /// an ancestor still alive when its parent has gone.
    pub fn locator(&self, inherited: Option<&str>) -> String {
        if self.backing() == Backing::Shm {
            return self.name().to_string();
        }
        let others = inherited
            .and_then(|text| memfd::Locator::parse(text).ok())
            .filter(|l| l.name == self.name())
            .map(|l| l.hints)
            .unwrap_or_default();
        memfd::Locator::format(
            self.name(),
            (std::process::id(), self.segment.raw_fd()),
            &others,
        )
    }

    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn is_creator(&self) -> bool {
        self.creator
    }

    pub fn capacity(&self) -> u64 {
        self.segment.len()
    }

    pub(crate) fn wait(&self) -> Wait {
        Wait::Up(self.options.lock_timeout)
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, LocalState> {
        // A panic while holding this mutex cannot leave the map half
        // updated (single inserts/removes), so poisoning is ignored.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.apply_deferred(&mut state);
        state
    }

    pub(crate) fn pending_local(&self) -> usize {
        self.deferred_count.load(Relaxed)
    }

    /// `lock_state` without waiting: None if another thread holds it.
    pub(crate) fn try_lock_state(&self) -> Option<MutexGuard<'_, LocalState>> {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        self.apply_deferred(&mut state);
        Some(state)
    }

    /// Applies the releases deferred while `state` was busy: each drops one
    /// local reference; a block's last one queues its holder record's drop
    /// for the next critical section.
    #[inline]
    fn apply_deferred(&self, state: &mut LocalState) {
        // The check inline, the work out of line: every operation passes here.
        if self.deferred_count.load(Relaxed) != 0 {
            self.apply_deferred_now(state);
        }
    }

    #[cold]
    #[inline(never)]
    fn apply_deferred_now(&self, state: &mut LocalState) {
        let deferred = std::mem::take(
            &mut *self
                .deferred
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        self.deferred_count.store(0, Relaxed);
        for (offset, generation) in deferred {
            match state.held(offset, generation) {
                Some(held) if held.count > 1 => held.count -= 1,
                Some(held) => {
                    let unsent = !held.escaped;
                    state.refs.remove(&offset);
                    self.queue(offset, generation, false, unsent);
                }
                None => {} // already released: as `release` would say NotHeld
            }
        }
    }

    /// Test hook point: after entering an operation, before its mutex.
    fn entered(&self) {
        #[cfg(feature = "testing")]
        crate::testing::before_local_lock_point();
    }

    fn pool_full(&self, heap: &Heap, len: u64) -> PoolError {
        let used = self.view.header().used_bytes.load(Relaxed);
        PoolError::PoolFull {
            requested: len,
            free: self.heap_bytes().saturating_sub(used),
            largest_free: heap
                .largest_free()
                .unwrap_or(0)
                .saturating_sub(BLOCK_HEADER_SIZE),
            named: self.backing() == Backing::Shm,
        }
    }

    fn heap_bytes(&self) -> u64 {
        self.geometry.heap_end - self.geometry.heap_start
    }

    /// Takes the next generation from the header's counter (under the lock,
    /// journaled): every allocation and every caching of a block gets a new
    /// one, so a handle to its previous life is stale.
    #[inline(always)]
    pub(crate) fn issue_generation(&self) -> Result<u64> {
        let h = self.view.header();
        let generation = h.next_generation.load(Relaxed);
        if generation == 0 || generation == u64::MAX {
            return Err(PoolError::corrupt(
                "next_generation",
                format!("{generation} cannot be issued"),
            ));
        }
        self.view.set(&h.next_generation, generation + 1)?;
        Ok(generation)
    }

    /// Allocates a block with room for `len` bytes and takes one reference
    /// to it. The data is not cleared. Its handle is taken to have left this
    /// process (a `BlockRef` is enough to build one): with
    /// `transfer_required`, the last release leaves it in flight.
    pub fn allocate(&self, len: u64, transfer_required: bool) -> Result<BlockRef> {
        self.allocate_with(len, transfer_required, true)
    }

    /// `allocate` for a caller that tracks whether the block's handle leaves
    /// this process and says so with `mark_escaped` before it does: until
    /// then, this process's last release frees the block even if it was
    /// allocated `transfer_required` (nobody else can have its handle).
    pub fn allocate_local(&self, len: u64, transfer_required: bool) -> Result<BlockRef> {
        self.allocate_with(len, transfer_required, false)
    }

    fn allocate_with(&self, len: u64, transfer_required: bool, escaped: bool) -> Result<BlockRef> {
        self.entered();
        let mut state = self.lock_state();
        state.ensure_open(self.name())?;
        let size = match len.checked_add(BLOCK_HEADER_SIZE + BLOCK_ALIGN - 1) {
            Some(s) if s / BLOCK_ALIGN * BLOCK_ALIGN <= self.heap_bytes() => {
                s / BLOCK_ALIGN * BLOCK_ALIGN
            }
            _ => return self.critical_section(self.wait(), |heap| Err(self.pool_full(heap, len))),
        };
        let sweep_due = self.sweep_due();
        if let Some(cached) = state.cache.take(size) {
            // A flag beside the result, not in it: a `Result<bool>` was
            // copied through the stack, its bool's byte read back as part
            // of a word (a store-forwarding stall).
            let mut reused = false;
            let done = self.critical_section(self.wait(), |heap| {
                if sweep_due {
                    self.reap_locked(heap)?;
                }
                reused = self.reuse_cached(heap, &cached, len, transfer_required)?;
                Ok(())
            });
            match done {
                // Another process reclaimed it (a full pool): allocate as usual.
                Ok(()) if !reused => state.forget_cached(cached.offset),
                Ok(()) => {
                    state.took(
                        cached.offset,
                        LocalRef::new(cached.generation, len, escaped, cached.size),
                    );
                    return Ok(cached.taken(len));
                }
                Err(e) => {
                    if let PoolError::LockTimeout { .. } = e {
                        state.cache.put(cached);
                    } else {
                        // Not as this process left it (corrupt): its record
                        // stays, so the slot is left to be reaped when this
                        // process leaves.
                        state.forget_cached(cached.offset);
                        self.release_failures.fetch_add(1, Relaxed);
                    }
                    return Err(e);
                }
            }
        }
        let cache = &mut state.cache;
        let mut drained = false;
        let block = self.critical_section(self.wait(), |heap| {
            if sweep_due {
                self.reap_locked(heap)?;
            }
            let offset = match heap.find_free(size)? {
                Some(o) => o,
                None => {
                    let reaped = self.reap_locked(heap)?;
                    drained = true;
                    let drained = self.drain_cache_locked(heap, cache);
                    match heap
                        .find_free(size)?
                        .filter(|_| reaped.blocks_freed > 0 || drained > 0)
                    {
                        Some(o) => o,
                        None if self.reclaim_cached_of_others(heap)? > 0 => {
                            match heap.find_free(size)? {
                                Some(o) => o,
                                None => return Err(self.pool_full(heap, len)),
                            }
                        }
                        None => return Err(self.pool_full(heap, len)),
                    }
                }
            };
            let b = heap.block(offset)?;
            let mut reserved_len = 0;
            if b.tag.load(Relaxed) & FLAG_UNRESERVED != 0 {
                // Back the pages before anything is written: a failure here
                // leaves the heap untouched.
                reserved_len = self.reserve_for(offset, size, heap.size_of(offset)?, len)?;
            }
            let used = heap.take(offset, size, reserved_len)?;
            #[cfg(feature = "testing")]
            crate::testing::pause_inside_allocation_point();
            let v = &self.view;
            let h = v.header();
            let generation = self.issue_generation()?;
            let flags = if transfer_required {
                FLAG_TRANSFER_REQUIRED
            } else {
                0
            };
            v.set(&b.tag, TAG_USED | flags)?;
            v.set(&b.generation, generation)?;
            v.set(&b.holders, refs::slot_bit(self.slot))?;
            v.set(&b.data_len, len)?;
            v.add(&h.used_bytes, used)?;
            v.add(&h.live_blocks, 1)?;
            v.add(&h.processes[self.slot as usize].held_blocks, 1)?;
            let block = BlockRef {
                offset,
                generation,
                data_offset: offset + BLOCK_HEADER_SIZE,
                data_len: len,
            };
            Ok((block, used))
        });
        if drained {
            state.forget_all_cached();
        }
        let (block, block_size) = block?;
        state.took(
            block.offset,
            LocalRef::new(block.generation, len, escaped, block_size),
        );
        Ok(block)
    }

    /// Takes a reference to the block a handle names (from any process) and
    /// marks the block transferred.
    pub fn attach(&self, handle: &Handle) -> Result<BlockRef> {
        self.entered();
        let mut state = self.lock_state();
        state.ensure_open(self.name())?;
        self.check_segment(handle)?;
        self.attach_with(&mut state, &handle.range())
    }

    /// `attach` of a handle whose segment the caller already matched to
    /// this pool.
    pub fn attach_range(&self, range: &BlockRange) -> Result<BlockRef> {
        self.entered();
        let mut state = self.lock_state();
        state.ensure_open(self.name())?;
        self.attach_with(&mut state, range)
    }

    fn check_segment(&self, handle: &Handle) -> Result<()> {
        if segment::validate_name(&handle.segment).ok() != Some(self.name()) {
            return Err(PoolError::invalid_handle(format!(
                "the handle belongs to segment {:?}, not {:?}",
                handle.segment.chars().take(80).collect::<String>(),
                self.name()
            )));
        }
        Ok(())
    }

    fn attach_with(&self, state: &mut LocalState, handle: &BlockRange) -> Result<BlockRef> {
        let next_generation = self.view.header().next_generation.load(Relaxed);
        handle.check_shape(&Heap::new(&self.view, &self.geometry), next_generation)?;
        if let Some(held) = state.held(handle.offset, handle.generation) {
            // We hold the block already: its data length is our copy.
            handle.check_range(held.data_len)?;
            let b = self.view.block(handle.offset);
            if b.is_none_or(|b| b.tag.load(Relaxed) & FLAG_TRANSFERRED == 0) {
                self.critical_section(self.wait(), |heap| {
                    let b = refs::held_block(heap, handle.offset, handle.generation)?;
                    self.view
                        .set(&b.tag, b.tag.load(Relaxed) | FLAG_TRANSFERRED)
                })?;
            }
            held.count += 1;
            return Ok(block_ref(handle.offset, handle.generation, held.data_len));
        }
        let (data_len, block_size) = self.critical_section(self.wait(), |heap| {
            let (b, data_len) = handle.check_live(heap)?;
            // Confirmed by its neighbour in `check_live`.
            let block_size = heap.size_of(handle.offset)?;
            refs::add_holder(heap, b, self.slot, true)?;
            Ok((data_len, block_size))
        })?;
        // Attached from a handle: transferred, so the rule frees it at the
        // last reference anyway (escaped).
        state.refs.insert(
            handle.offset,
            LocalRef::new(handle.generation, data_len, true, block_size),
        );
        Ok(block_ref(handle.offset, handle.generation, data_len))
    }

    /// Another reference to (a range of) a block this process already holds:
    /// a second view or a slice. Unlike `attach`, it does not mark the block
    /// transferred (a slice is not a hand-over) and touches no shared state.
    /// The handle's segment is not looked at (a block this process holds
    /// names its pool).
    pub fn share(&self, handle: &Handle) -> Result<BlockRef> {
        self.share_range(&handle.range())
    }

    /// `share` without the segment name.
    pub fn share_range(&self, handle: &BlockRange) -> Result<BlockRef> {
        self.entered();
        let mut state = self.lock_state();
        state.ensure_open(self.name())?;
        let held = state
            .held(handle.offset, handle.generation)
            .ok_or(PoolError::NotHeld {
                offset: handle.offset,
            })?;
        handle.check_range(held.data_len)?;
        held.count += 1;
        Ok(block_ref(handle.offset, handle.generation, held.data_len))
    }

    /// Records that the handle of a block this process holds may leave the
    /// process (it was serialized, or handed out as a plain handle): the
    /// block keeps the transferred rule from now on. Per block, whichever
    /// view's handle it was. Returns false (and does nothing) if this
    /// process does not hold the block: nothing to protect then. Touches no
    /// shared state; waits only for another thread of this process inside
    /// an operation, like `share`.
    pub fn mark_escaped(&self, offset: u64, generation: u64) -> bool {
        match self.lock_state().held(offset, generation) {
            Some(held) => {
                held.escaped = true;
                true
            }
            None => false,
        }
    }

    /// Whether this process's copy says the block's handle may have left it
    /// (None if not held). For tests and diagnostics.
    pub fn escaped(&self, offset: u64, generation: u64) -> Option<bool> {
        self.lock_state()
            .held(offset, generation)
            .map(|held| held.escaped)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// One more reference to a block this process already holds (a second
    /// view, a slice). Touches no shared state.
    pub fn retain(&self, offset: u64, generation: u64) -> Result<()> {
        let mut state = self.lock_state();
        match state.held(offset, generation) {
            Some(held) => {
                held.count += 1;
                Ok(())
            }
            None => Err(PoolError::NotHeld { offset }),
        }
    }

    /// Drops one reference; the last one of this process drops its holder
    /// record, and the block is freed when the lifetime rule allows.
    /// A block from `allocate_local` never `mark_escaped` is freed by it
    /// even if `transfer_required` (see `release.rs`). Never
    /// waits: if the segment lock is busy, the drop is queued (see
    /// `release.rs`); if another thread of this process is inside an
    /// operation, the release itself is deferred to whoever comes next.
    /// Either way this returns `Ok` (a deferred release of a reference not
    /// held is then ignored instead of `NotHeld`).
    pub fn release(&self, offset: u64, generation: u64) -> Result<()> {
        self.entered();
        // Never wait for another thread of this process either: it may hold
        // `state` while it waits for a stopped lock holder.
        let Some(mut state) = self.try_lock_state() else {
            let mut deferred = self
                .deferred
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            deferred.push((offset, generation));
            self.deferred_count.store(deferred.len(), Relaxed);
            return Ok(());
        };
        let Some(held) = state.held(offset, generation) else {
            return Err(PoolError::NotHeld { offset });
        };
        held.count -= 1;
        if held.count > 0 {
            return Ok(());
        }
        // The entry stays, as the cache's marker, if the block is cached
        // (see `LocalState::refs`); otherwise it goes.
        let last = LastRef {
            offset,
            generation,
            unsent: !held.escaped,
            block_size: Some(held.block_size),
        };
        let dropped = self.drop_reference(last, &mut state.cache);
        if !matches!(dropped, Ok(DropOutcome::Cached)) {
            state.refs.remove(&offset);
        }
        dropped.map(|_| ())
    }

    /// References this process holds (views counted one by one).
    pub fn held_references(&self) -> u64 {
        self.lock_state().refs.values().map(|r| r.count).sum()
    }

    /// Pointer to the data of a block this process holds; null if the
    /// block's range does not lie inside the mapping (a `BlockRef` not made
    /// by this pool).
    pub fn data_ptr(&self, block: &BlockRef) -> *mut u8 {
        self.view
            .range_ptr(block.data_offset, block.data_len)
            .unwrap_or(std::ptr::null_mut())
    }

    /// Drops the holder records of every dead process (found by their
    /// liveness locks): blocks others hold are untouched, blocks nobody holds
    /// any more are freed (in-flight ones wait for their transfer).
    pub fn reap(&self) -> Result<ReapReport> {
        let state = self.lock_state();
        state.ensure_open(self.name())?;
        self.critical_section(self.wait(), |heap| self.reap_locked(heap))
    }

    pub fn stats(&self) -> Result<Stats> {
        let state = self.lock_state();
        state.ensure_open(self.name())?;
        self.critical_section(self.wait(), |heap| {
            let h = self.view.header();
            let heap_bytes = self.heap_bytes();
            let used = h.used_bytes.load(Relaxed);
            let processes = (0..h.processes.len())
                .filter(|&k| self.slot_live(k))
                .count() as u64;
            let (cached_bytes, cached_blocks) = self.cached_totals();
            let used = used.saturating_sub(cached_bytes);
            Ok(Stats {
                capacity_bytes: self.geometry.capacity,
                heap_bytes,
                used_bytes: used,
                free_bytes: heap_bytes.saturating_sub(used).saturating_sub(cached_bytes),
                largest_free_bytes: heap.largest_free()?.saturating_sub(BLOCK_HEADER_SIZE),
                live_blocks: h.live_blocks.load(Relaxed).saturating_sub(cached_blocks),
                cached_bytes,
                cached_blocks,
                in_flight_blocks: h.in_flight_blocks.load(Relaxed),
                processes,
                lock_takeovers: h.lock_takeovers.load(Relaxed),
                backed_bytes: self.segment.backed_bytes()?,
            })
        })
    }

    /// Whether process slot `k` is taken by a live process (this one, or
    /// one whose liveness lock is held: a dead one stays `SLOT_ACTIVE`
    /// until reaped).
    pub(crate) fn slot_live(&self, k: usize) -> bool {
        self.view.header().processes[k].state.load(Relaxed) == SLOT_ACTIVE
            && (k as u32 == self.slot || self.segment.slot_alive(k))
    }

    /// Bytes and blocks the active processes keep in their small-block
    /// caches (counters others write: summed wrapping, only reported or
    /// subtracted with saturation).
    pub(crate) fn cached_totals(&self) -> (u64, u64) {
        self.view
            .header()
            .processes
            .iter()
            .filter(|p| p.state.load(Relaxed) == SLOT_ACTIVE)
            .fold((0u64, 0u64), |(bytes, blocks), p| {
                let (b, n) = cached_parts(p.cached.load(Relaxed));
                (bytes.wrapping_add(n), blocks.wrapping_add(b))
            })
    }

    /// Walks the whole heap and the free lists and verifies every invariant.
    pub fn check(&self) -> Result<CheckReport> {
        let state = self.lock_state();
        state.ensure_open(self.name())?;
        self.critical_section(self.wait(), |heap| Ok(crate::check::check(heap)))
    }

    /// Releases every reference this process holds, leaves the process
    /// table, and (creator only) unlinks the segment name. The mapping stays
    /// until the `Pool` is dropped, so memory still viewed by this process
    /// is never unmapped under it; later operations fail with `Closed`.
    /// Never waits for a busy segment lock: if it cannot be taken at once,
    /// this process just gives up its slot, and the others reap its
    /// references as a dead process's. Idempotent.
    pub fn close(&self) -> Result<()> {
        let mut state = self.lock_state();
        if state.closed {
            return Ok(());
        }
        state.closed = true;
        self.closed.store(true, Release);
        let held: Vec<(u64, u64, bool)> = state
            .refs
            .drain()
            .filter(|(_, r)| r.count > 0)
            .map(|(offset, r)| (offset, r.generation, !r.escaped))
            .collect();
        let slot = self.slot as usize;
        // Queued releases run first in the critical section; then each held
        // block is dropped as its own transaction.
        let cache = &mut state.cache;
        let left = self.critical_section(Wait::Try, |heap| {
            self.drain_cache_locked(heap, cache);
            let mut failed = self.release_failures.load(Relaxed);
            for &(offset, generation, unsent) in &held {
                let last = LastRef {
                    offset,
                    generation,
                    unsent,
                    block_size: None,
                };
                let dropped = self.drop_step(heap, &last, false, None).map(|_| ());
                if self.committed(dropped).is_err() {
                    failed += 1;
                }
            }
            if failed != 0 {
                return Err(PoolError::corrupt(
                    "block header",
                    format!(
                        "{failed} references could not be dropped; the slot is left to be reaped"
                    ),
                ));
            }
            let entry = &self.view.header().processes[slot];
            self.view.set(&entry.state, SLOT_FREE)?;
            self.view.set(&entry.cached, 0)?;
            self.view.set(&entry.held_blocks, 0)
        });
        // Whatever is still queued or cached stays in the segment for the
        // reapers.
        state.cache.take_all();
        self.lock_queue().clear();
        self.queued_count.store(0, Relaxed);
        // Leave the slot to others. If the lock was busy or some holder
        // records could not be dropped, the slot stays active and is reaped
        // like a dead process's.
        self.segment.unlock_slot(slot);
        let mut first_error = match left {
            Ok(()) | Err(PoolError::LockTimeout { .. }) => None,
            Err(e) => Some(e),
        };
        if self.creator {
            match Segment::unlink(self.name()) {
                Ok(()) | Err(PoolError::SegmentNotFound { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(state);
        first_error.map_or(Ok(()), Err)
    }

    /// Takes and releases the segment lock with no work inside (benchmarks).
    #[doc(hidden)]
    pub fn empty_critical_section(&self) -> Result<()> {
        self.critical_section(self.wait(), |_| Ok(()))
    }

    /// The process slot holding the lock right now, if any (diagnostics).
    #[doc(hidden)]
    pub fn lock_owner(&self) -> Option<u32> {
        match self.view.header().lock_word.load(Relaxed) {
            0 => None,
            w => Some(lock::owner_slot(w).unwrap_or(u32::MAX)),
        }
    }

    /// Removes the segment's name now (creator or not): processes already
    /// attached keep working, no new process can attach. Idempotent.
    pub fn unlink_name(&self) -> Result<()> {
        match Segment::unlink(self.name()) {
            Ok(()) | Err(PoolError::SegmentNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether some thread is inside an operation of this pool right now
    /// (holds its process-local mutex). For tests.
    #[cfg(feature = "testing")]
    pub fn busy_in_this_process(&self) -> bool {
        matches!(
            self.state.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        )
    }

    /// Drops the attachment as if the process had been killed: no
    /// reference is released and nothing is unlinked. For tests.
    #[cfg(feature = "testing")]
    pub fn abandon(self) {
        let mut state = self.lock_state();
        state.closed = true;
        state.refs.clear();
        state.cache.take_all();
        drop(state);
        self.closed.store(true, Release);
    }
}

fn block_ref(offset: u64, generation: u64, data_len: u64) -> BlockRef {
    BlockRef {
        offset,
        generation,
        data_offset: offset + BLOCK_HEADER_SIZE,
        data_len,
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
