//! `Pool`: one process's attachment to a segment, composing the segment
//! (OS), the layout, the allocator, the lock, the holder records and handle
//! validation. All public operations are safe to call from several threads.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::allocator::Heap;
use crate::error::{PoolError, Result};
use crate::handle::Handle;
use crate::layout::*;
use crate::lock::{self, Acquired};
use crate::memfd;
use crate::refs::{self, Dropped};
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
    /// Bytes in used blocks, block headers and padding included.
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub largest_free_bytes: u64,
    pub live_blocks: u64,
    pub in_flight_blocks: u64,
    /// Registered processes that are alive.
    pub processes: u64,
    pub lock_takeovers: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub blocks: u64,
    pub free_blocks: u64,
    /// The first broken invariant, if any.
    pub violation: Option<String>,
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

/// Hashes block offsets (64-byte multiples) with one multiply: the local
/// map sits on the allocate/release path, where SipHash costs more than the
/// allocation itself.
#[derive(Default, Clone, Copy)]
struct OffsetHasher(u64);

impl std::hash::Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, offset: u64) {
        self.0 = (offset >> 6).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type LocalRefs = HashMap<u64, LocalRef, std::hash::BuildHasherDefault<OffsetHasher>>;

#[derive(Debug, Clone, Copy)]
struct LocalRef {
    generation: u64,
    count: u64,
}

pub struct Pool {
    segment: Segment,
    view: SegmentView,
    slot: u32,
    creator: bool,
    options: PoolOptions,
    /// References this process holds, by block offset. Also serialises this
    /// process's threads around the holder bits (lock order: this, then the
    /// segment lock).
    local: Mutex<LocalRefs>,
    shut_down: AtomicBool,
    /// When the allocation path last looked for dead processes (ms since
    /// `epoch`): a dead peer is noticed within `DEAD_PEER_SWEEP` even if
    /// nothing else (lock takeover, full pool) reveals it.
    last_sweep_ms: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
    /// Allocations since start; the clock is read only every
    /// `SWEEP_CLOCK_EVERY` of them (reading it each time cost ~20%).
    allocations: std::sync::atomic::AtomicU64,
}

const SWEEP_CLOCK_EVERY: u64 = 256;

/// How often allocation checks the liveness of the other registered
/// processes (one `fcntl` per registered process).
const DEAD_PEER_SWEEP: Duration = Duration::from_secs(1);

/// Releases the lock when a critical section ends, and rolls back a
/// transaction a panic left half done.
struct LockGuard<'a> {
    view: &'a SegmentView,
    slot: u32,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if self.view.header().journal_len.load(Acquire) != 0 {
            self.view.rollback();
        }
        lock::release(self.view, self.slot);
    }
}

fn default_capacity(backing: Backing) -> Result<u64> {
    let total = match backing {
        Backing::Shm => segment::shm_filesystem_bytes()?.0,
        Backing::Memfd => memory_bytes(),
    };
    Ok((total / 2).max(Geometry::min_capacity()))
}

/// Physical memory, or the cgroup's limit when it is lower (containers).
fn memory_bytes() -> u64 {
    use nix::unistd::{sysconf, SysconfVar};
    let pages = sysconf(SysconfVar::_PHYS_PAGES)
        .ok()
        .flatten()
        .unwrap_or(0)
        .max(0) as u64;
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096)
        .max(1) as u64;
    let physical = pages.saturating_mul(page);
    match cgroup_memory_limit() {
        Some(limit) if limit < physical || physical == 0 => limit,
        _ => physical,
    }
}

/// This process's cgroup memory limit: v2 `memory.max` of its own cgroup
/// (from /proc/self/cgroup) or of the namespace root, else v1's
/// `memory.limit_in_bytes`. None when unlimited or unknown.
fn cgroup_memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        // "0::/path" (v2) or "N:memory:/path" (v1).
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let Some(path) = path
            .filter(|p| !p.contains(".."))
            .map(|p| p.trim_end_matches('/'))
        else {
            continue;
        };
        match controllers {
            Some("") => candidates.push(format!("/sys/fs/cgroup{path}/memory.max")),
            Some(c) if c.split(',').any(|c| c == "memory") => {
                candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
            }
            _ => {}
        }
    }
    candidates.push("/sys/fs/cgroup/memory.max".into());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    candidates
        .iter()
        .filter_map(|path| {
            std::fs::read_to_string(path)
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .min()
}

impl Pool {
    /// Creates a new segment and registers this process as its creator
    /// (the creator unlinks the name on close).
    pub fn create(options: PoolOptions) -> Result<Pool> {
        let backing = options.backing;
        let capacity = match options.capacity {
            Some(c) => c,
            None => default_capacity(backing)?,
        };
        if backing == Backing::Shm {
            let (shm_total, _) = segment::shm_filesystem_bytes()?;
            if capacity > shm_total {
                return Err(PoolError::InvalidCapacity {
                    requested: capacity,
                    reason: format!(
                        "/dev/shm holds only {shm_total} bytes; use the default anonymous (memfd) backing, \
                         which /dev/shm does not bound, or give /dev/shm more room (docker run --shm-size=...)"
                    ),
                });
            }
        }
        if capacity > MAX_CAPACITY {
            return Err(PoolError::InvalidCapacity {
                requested: capacity,
                reason: format!("larger than the maximum {MAX_CAPACITY}"),
            });
        }
        let geometry =
            Geometry::for_capacity(capacity).ok_or_else(|| PoolError::InvalidCapacity {
                requested: capacity,
                reason: format!("at least {} bytes are needed", Geometry::min_capacity()),
            })?;
        let id = segment::random_id()?;
        let name = match (&options.name, backing) {
            (Some(n), Backing::Shm) => n.clone(),
            (None, Backing::Shm) => format!("{}{id:032x}", segment::NAME_PREFIX),
            (None, Backing::Memfd) => memfd::name_of(id),
            (Some(n), Backing::Memfd) => {
                return Err(PoolError::InvalidName {
                    name: format!(
                    "{n} (only named /dev/shm pools take a name; anonymous pools are found by id)"
                ),
                })
            }
        };
        // Holds slot 0's liveness lock from its first moment (see `Segment::create`).
        let segment = Segment::create(&name, capacity, backing)?;
        // The header must never SIGBUS; bitmap pages are reserved together
        // with the heap range they describe (`reserve_heap`).
        let first_bitmap_page = round_up(geometry.bitmap_offset + 8, PAGE);
        if let Err(e) = segment
            .reserve(0, first_bitmap_page)
            .and_then(|()| segment.reserve(geometry.heap_start, PAGE))
            .and_then(|()| reserve_bitmap(&segment, &geometry, geometry.heap_start, PAGE))
        {
            let _ = Segment::unlink(segment.name());
            return Err(e);
        }
        // SAFETY: the mapping is `capacity` bytes, owned by `segment`, which
        // the Pool keeps alive as long as the view.
        let view = unsafe { SegmentView::new(segment.base(), segment.len()) };
        let h = view.header();
        h.layout_version.store(LAYOUT_VERSION as u64, Relaxed);
        h.header_size.store(geometry.header_size, Relaxed);
        h.capacity.store(capacity, Relaxed);
        h.bitmap_offset.store(geometry.bitmap_offset, Relaxed);
        h.heap_start.store(geometry.heap_start, Relaxed);
        h.heap_end.store(geometry.heap_end, Relaxed);
        h.creator_pid.store(std::process::id() as u64, Relaxed);
        h.next_generation.store(1, Relaxed);
        h.reserved_until.store(geometry.heap_start + PAGE, Relaxed);
        h.pool_id[0].store(id as u64, Relaxed);
        h.pool_id[1].store((id >> 64) as u64, Relaxed);
        Heap::new(&view).init();
        view.commit();
        // Written last: a segment is valid once its magic is there.
        h.magic.store(MAGIC, Release);
        Self::register(segment, view, options, true).inspect_err(|_| {
            let _ = Segment::unlink(&name);
        })
    }

    /// Attaches to an existing segment by name, validating its header first.
    pub fn open(name: &str, options: PoolOptions) -> Result<Pool> {
        // gc join protocol (segment.rs): holds the gc lock shared until `claim_slot`.
        let segment = Segment::open(name, options.lock_timeout)?;
        let len = segment.len();
        if len < std::mem::size_of::<SegmentHeader>() as u64 {
            return Err(PoolError::InvalidSegment {
                reason: format!("{len} bytes is smaller than the header"),
            });
        }
        // SAFETY: the mapping is `len` bytes (at least a header), kept alive
        // by `segment`, which moves into the Pool with the view.
        let view = unsafe { SegmentView::new(segment.base(), len) };
        validate_header(&view, len)?;
        // An anonymous pool's id was checked by `memfd::open_pool` before
        // the file was taken, for every candidate it tried.
        Self::register(segment, view, options, false)
    }

    fn register(
        segment: Segment,
        view: SegmentView,
        options: PoolOptions,
        creator: bool,
    ) -> Result<Pool> {
        // The creator already holds slot 0's liveness lock (`Segment::create`);
        // a joiner claims one under the gc join protocol (segment.rs).
        let slot = if creator { 0 } else { segment.claim_slot()? };
        let pool = Pool {
            segment,
            view,
            slot,
            creator,
            options,
            local: Mutex::new(LocalRefs::default()),
            shut_down: AtomicBool::new(false),
            last_sweep_ms: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            allocations: std::sync::atomic::AtomicU64::new(0),
        };
        pool.critical_section(true, |heap| {
            let entry = &pool.view.header().processes[slot as usize];
            if entry.state.load(Relaxed) == SLOT_ACTIVE {
                // The slot's previous owner died and nobody reaped it yet.
                pool.reap_slots(heap, refs::slot_bit(slot))?;
            }
            pool.view.set(&entry.state, SLOT_ACTIVE);
            pool.view.set(&entry.pid, std::process::id() as u64);
            pool.view.add(&entry.claims, 1);
            Ok(())
        })?;
        Ok(pool)
    }

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

    /// Runs `f` under the segment lock as one transaction: committed when it
    /// returns `Ok`, rolled back when it returns `Err`.
    fn critical_section<T>(
        &self,
        registering: bool,
        f: impl FnOnce(&Heap) -> Result<T>,
    ) -> Result<T> {
        let acquired = lock::acquire(
            &self.view,
            self.slot,
            self.options.lock_timeout,
            registering,
            |s| self.segment.slot_alive(s as usize),
        )?;
        let _guard = LockGuard {
            view: &self.view,
            slot: self.slot,
        };
        if self.view.header().journal_len.load(Acquire) != 0 {
            self.view.rollback();
        }
        let heap = Heap::new(&self.view);
        if let Acquired::TakenOver { .. } = acquired {
            // A dead process held the lock: drop what it (and any other
            // dead process) held while we are here.
            let _ = self.reap_locked(&heap);
        }
        let result = f(&heap);
        match result {
            Ok(_) => self.view.commit(),
            Err(_) => {
                self.view.rollback();
            }
        }
        result
    }

    fn lock_local(&self) -> MutexGuard<'_, LocalRefs> {
        // A panic while holding this mutex cannot leave the map half
        // updated (single inserts/removes), so poisoning is ignored.
        self.local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Allocates a block with room for `len` bytes and takes one reference
    /// to it. The data is not cleared.
    pub fn allocate(&self, len: u64, transfer_required: bool) -> Result<BlockRef> {
        self.ensure_open()?;
        let heap_bytes = {
            let h = self.view.header();
            h.heap_end.load(Relaxed) - h.heap_start.load(Relaxed)
        };
        let size = match len.checked_add(BLOCK_HEADER_SIZE + BLOCK_ALIGN - 1) {
            Some(s) if s / BLOCK_ALIGN * BLOCK_ALIGN <= heap_bytes => s / BLOCK_ALIGN * BLOCK_ALIGN,
            _ => {
                let stats = self.stats()?;
                return Err(PoolError::PoolFull {
                    requested: len,
                    free: stats.free_bytes,
                    largest_free: stats.largest_free_bytes,
                    named: self.backing() == Backing::Shm,
                });
            }
        };
        let mut local = self.lock_local();
        let sweep_due = self.sweep_due();
        let block = self.critical_section(false, |heap| {
            if sweep_due {
                self.reap_locked(heap)?;
            }
            let offset = match heap.find_free(size) {
                Some(o) => o,
                None => {
                    let reaped = self.reap_locked(heap)?;
                    match heap.find_free(size).filter(|_| reaped.blocks_freed > 0) {
                        Some(o) => o,
                        None => {
                            let h = self.view.header();
                            return Err(PoolError::PoolFull {
                                requested: len,
                                free: heap_bytes - h.used_bytes.load(Relaxed),
                                largest_free: heap.largest_free().saturating_sub(BLOCK_HEADER_SIZE),
                                named: self.backing() == Backing::Shm,
                            });
                        }
                    }
                }
            };
            let b = heap.block(offset);
            let mut reserved_len = 0;
            if b.tag.load(Relaxed) & FLAG_UNRESERVED != 0 {
                // Back the pages before anything is written: a failure here
                // leaves the heap untouched.
                // Reserve a chunk plus the header of the cold rest, or at
                // least the block and that header when tmpfs is short.
                let block_size = b.size.load(Relaxed);
                let chunk = (round_up(size, self.options.reserve_chunk.max(PAGE))
                    + BLOCK_HEADER_SIZE)
                    .min(block_size);
                let minimum = (size + BLOCK_HEADER_SIZE).min(block_size);
                reserved_len = match self.reserve_heap(offset, chunk) {
                    Ok(()) => chunk,
                    Err(PoolError::NoSpace { .. }) if chunk > minimum => {
                        self.reserve_heap(offset, minimum)
                            .map_err(|_| PoolError::NoSpace { requested: len })?;
                        minimum
                    }
                    Err(PoolError::NoSpace { .. }) => {
                        return Err(PoolError::NoSpace { requested: len })
                    }
                    Err(e) => return Err(e),
                };
            }
            let used = heap.take(offset, size, reserved_len);
            #[cfg(feature = "testing")]
            crate::testing::pause_inside_allocation_point();
            let v = &self.view;
            let h = v.header();
            let generation = h.next_generation.load(Relaxed);
            v.set(&h.next_generation, generation + 1);
            let flags = if transfer_required {
                FLAG_TRANSFER_REQUIRED
            } else {
                0
            };
            v.set(&b.tag, TAG_USED | flags);
            v.set(&b.generation, generation);
            v.set(&b.holders, refs::slot_bit(self.slot));
            v.set(&b.data_len, len);
            v.add(&h.used_bytes, used);
            v.add(&h.live_blocks, 1);
            v.add(&h.processes[self.slot as usize].held_blocks, 1);
            Ok(BlockRef {
                offset,
                generation,
                data_offset: offset + BLOCK_HEADER_SIZE,
                data_len: len,
            })
        })?;
        local.insert(
            block.offset,
            LocalRef {
                generation: block.generation,
                count: 1,
            },
        );
        Ok(block)
    }

    /// Takes a reference to the block a handle names (from any process) and
    /// marks the block transferred.
    pub fn attach(&self, handle: &Handle) -> Result<BlockRef> {
        self.ensure_open()?;
        if segment::validate_name(&handle.segment).ok() != Some(self.name()) {
            return Err(PoolError::invalid_handle(format!(
                "the handle belongs to segment {:?}, not {:?}",
                handle.segment.chars().take(80).collect::<String>(),
                self.name()
            )));
        }
        let next_generation = self.view.header().next_generation.load(Acquire);
        let reserved_until = self.view.header().reserved_until.load(Acquire);
        handle.check_shape(&Heap::new(&self.view), next_generation, reserved_until)?;
        let mut local = self.lock_local();
        if let Some(held) = local
            .get_mut(&handle.offset)
            .filter(|r| r.generation == handle.generation)
        {
            // We hold the block already, so it cannot change under us.
            let b = self.view.block(handle.offset);
            handle.check_range(b.data_len.load(Relaxed))?;
            if b.tag.load(Relaxed) & FLAG_TRANSFERRED == 0 {
                self.critical_section(false, |_| {
                    let tag = b.tag.load(Relaxed);
                    self.view.set(&b.tag, tag | FLAG_TRANSFERRED);
                    Ok(())
                })?;
            }
            held.count += 1;
            return Ok(self.block_ref(handle.offset));
        }
        self.critical_section(false, |heap| {
            handle.check_live(heap)?;
            refs::add_holder(heap, handle.offset, self.slot, true);
            Ok(())
        })?;
        local.insert(
            handle.offset,
            LocalRef {
                generation: handle.generation,
                count: 1,
            },
        );
        Ok(self.block_ref(handle.offset))
    }

    /// Another reference to (a range of) a block this process already holds:
    /// a second view or a slice. Unlike `attach`, it does not mark the block
    /// transferred (a slice is not a hand-over) and touches no shared state.
    pub fn share(&self, handle: &Handle) -> Result<BlockRef> {
        self.ensure_open()?;
        let mut local = self.lock_local();
        let held = local
            .get_mut(&handle.offset)
            .filter(|r| r.generation == handle.generation)
            .ok_or(PoolError::NotHeld {
                offset: handle.offset,
            })?;
        let b = self.view.block(handle.offset);
        handle.check_range(b.data_len.load(Relaxed))?;
        held.count += 1;
        Ok(self.block_ref(handle.offset))
    }

    fn ensure_open(&self) -> Result<()> {
        if self.shut_down.load(Relaxed) {
            return Err(PoolError::Closed {
                name: self.name().to_string(),
            });
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.shut_down.load(Relaxed)
    }

    fn block_ref(&self, offset: u64) -> BlockRef {
        let b = self.view.block(offset);
        BlockRef {
            offset,
            generation: b.generation.load(Relaxed),
            data_offset: offset + BLOCK_HEADER_SIZE,
            data_len: b.data_len.load(Relaxed),
        }
    }

    /// One more reference to a block this process already holds (a second
    /// view, a slice). Touches no shared state.
    pub fn retain(&self, offset: u64, generation: u64) -> Result<()> {
        let mut local = self.lock_local();
        match local
            .get_mut(&offset)
            .filter(|r| r.generation == generation)
        {
            Some(held) => {
                held.count += 1;
                Ok(())
            }
            None => Err(PoolError::NotHeld { offset }),
        }
    }

    /// Drops one reference; the last one of this process drops its holder
    /// record, and the block is freed when the lifetime rule allows.
    pub fn release(&self, offset: u64, generation: u64) -> Result<()> {
        let mut local = self.lock_local();
        match local
            .get_mut(&offset)
            .filter(|r| r.generation == generation)
        {
            Some(held) if held.count > 1 => {
                held.count -= 1;
                return Ok(());
            }
            Some(_) => {
                local.remove(&offset);
            }
            None => return Err(PoolError::NotHeld { offset }),
        }
        let dropped = self.drop_reference(offset);
        if dropped.is_err() {
            // The holder record is still in the segment: keep ours so a
            // later release (or close, or death) can drop it.
            local.insert(
                offset,
                LocalRef {
                    generation,
                    count: 1,
                },
            );
        }
        dropped
    }

    /// Drops this process's holder record of `offset` (local map already
    /// updated, its mutex held by the caller).
    fn drop_reference(&self, offset: u64) -> Result<()> {
        let threshold = self.options.punch_threshold;
        let punch = self.critical_section(false, |heap| {
            let b = heap.block(offset);
            let size = b.size.load(Relaxed);
            let others = b.holders.load(Relaxed) & !refs::slot_bit(self.slot);
            let tag = b.tag.load(Relaxed);
            let will_free =
                others == 0 && (tag & FLAG_TRANSFER_REQUIRED == 0 || tag & FLAG_TRANSFERRED != 0);
            if will_free && size >= threshold {
                // Return the pages outside the lock; meanwhile the block is
                // ours alone and no handle can attach it.
                self.view.set(&b.tag, tag | FLAG_RELEASING);
                return Ok(true);
            }
            if refs::drop_holder(heap, offset, self.slot, false) == Dropped::Free {
                refs::free_block(heap, offset, false);
            }
            Ok(false)
        })?;
        if punch {
            let b = self.view.block(offset);
            let _ = self.segment.punch_hole(
                offset + BLOCK_HEADER_SIZE,
                b.size.load(Relaxed) - BLOCK_HEADER_SIZE,
            );
            self.critical_section(false, |heap| {
                if refs::drop_holder(heap, offset, self.slot, false) == Dropped::Free {
                    refs::free_block(heap, offset, true);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Whether the periodic dead-peer sweep is due (and claims it).
    fn sweep_due(&self) -> bool {
        if !self
            .allocations
            .fetch_add(1, Relaxed)
            .is_multiple_of(SWEEP_CLOCK_EVERY)
        {
            return false;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_sweep_ms.load(Relaxed);
        now.saturating_sub(last) >= DEAD_PEER_SWEEP.as_millis() as u64
            && self
                .last_sweep_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }

    /// Backs heap bytes `[offset, offset + len)` and the block-start bitmap
    /// words that describe them, so no write there can raise SIGBUS.
    fn reserve_heap(&self, offset: u64, len: u64) -> Result<()> {
        self.segment.reserve(offset, len)?;
        let reserved_until = &self.view.header().reserved_until;
        if offset + len > reserved_until.load(Relaxed) {
            self.view.set(reserved_until, offset + len);
        }
        let h = self.view.header();
        let geometry = Geometry::for_capacity(h.capacity.load(Relaxed)).ok_or_else(|| {
            PoolError::InvalidSegment {
                reason: "capacity changed".into(),
            }
        })?;
        reserve_bitmap(&self.segment, &geometry, offset, len)
    }

    /// References this process holds (views counted one by one).
    pub fn held_references(&self) -> u64 {
        self.lock_local().values().map(|r| r.count).sum()
    }

    /// Pointer to the data of a block this process holds.
    pub fn data_ptr(&self, block: &BlockRef) -> *mut u8 {
        self.view.ptr(block.data_offset)
    }

    /// Drops the holder records of every dead process (found by their
    /// liveness locks): blocks others hold are untouched, blocks nobody holds
    /// any more are freed (in-flight ones wait for their transfer).
    pub fn reap(&self) -> Result<ReapReport> {
        self.ensure_open()?;
        self.critical_section(false, |heap| self.reap_locked(heap))
    }

    fn reap_locked(&self, heap: &Heap) -> Result<ReapReport> {
        let h = self.view.header();
        let mut dead = 0u64;
        for (k, entry) in h.processes.iter().enumerate() {
            if k as u32 != self.slot
                && entry.state.load(Relaxed) == SLOT_ACTIVE
                && !self.segment.slot_alive(k)
            {
                dead |= refs::slot_bit(k as u32);
            }
        }
        self.reap_slots(heap, dead)
    }

    fn reap_slots(&self, heap: &Heap, dead: u64) -> Result<ReapReport> {
        let mut report = ReapReport::default();
        if dead == 0 {
            return Ok(report);
        }
        for offset in refs::blocks_held_by(heap, dead) {
            let mut held = heap.block(offset).holders.load(Relaxed) & dead;
            while held != 0 {
                let slot = held.trailing_zeros();
                held &= held - 1;
                report.references += 1;
                let b = heap.block(offset);
                // A releaser that died may have punched the pages already.
                let was_releasing = b.tag.load(Relaxed) & FLAG_RELEASING != 0;
                if refs::drop_holder(heap, offset, slot, true) == Dropped::Free {
                    let size = b.size.load(Relaxed);
                    let punched = size >= self.options.punch_threshold
                        && self
                            .segment
                            .punch_hole(offset + BLOCK_HEADER_SIZE, size - BLOCK_HEADER_SIZE)
                            .is_ok();
                    refs::free_block(heap, offset, punched || was_releasing);
                    report.blocks_freed += 1;
                    report.bytes_freed += size;
                }
                // One transaction per dropped holder keeps the journal bounded
                // however many dead processes held the block.
                self.view.commit();
            }
        }
        let h = self.view.header();
        let mut remaining = dead;
        while remaining != 0 {
            let slot = remaining.trailing_zeros() as usize;
            remaining &= remaining - 1;
            self.view.set(&h.processes[slot].state, SLOT_FREE);
            self.view.set(&h.processes[slot].held_blocks, 0);
            report.processes += 1;
        }
        self.view.commit();
        Ok(report)
    }

    pub fn stats(&self) -> Result<Stats> {
        self.ensure_open()?;
        self.critical_section(false, |heap| {
            let h = self.view.header();
            let heap_bytes = heap.end - heap.start;
            let used = h.used_bytes.load(Relaxed);
            let processes = h
                .processes
                .iter()
                .enumerate()
                .filter(|(k, p)| {
                    p.state.load(Relaxed) == SLOT_ACTIVE
                        && (*k as u32 == self.slot || self.segment.slot_alive(*k))
                })
                .count() as u64;
            Ok(Stats {
                capacity_bytes: h.capacity.load(Relaxed),
                heap_bytes,
                used_bytes: used,
                free_bytes: heap_bytes - used,
                largest_free_bytes: heap.largest_free().saturating_sub(BLOCK_HEADER_SIZE),
                live_blocks: h.live_blocks.load(Relaxed),
                in_flight_blocks: h.in_flight_blocks.load(Relaxed),
                processes,
                lock_takeovers: h.lock_takeovers.load(Relaxed),
            })
        })
    }

    /// Walks the whole heap and the free lists and verifies every invariant.
    pub fn check(&self) -> Result<CheckReport> {
        self.ensure_open()?;
        self.critical_section(false, |heap| Ok(crate::check::check(heap)))
    }

    /// Releases every reference this process holds, leaves the process
    /// table, and (creator only) unlinks the segment name. The mapping stays
    /// until the `Pool` is dropped, so memory still viewed by this process
    /// is never unmapped under it; later operations fail with `Closed`.
    /// Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.shut_down.swap(true, Relaxed) {
            return Ok(());
        }
        let held: Vec<u64> = self
            .lock_local()
            .drain()
            .map(|(offset, _)| offset)
            .collect();
        let mut first_error = None;
        for offset in held {
            if let Err(e) = self.drop_reference(offset) {
                first_error.get_or_insert(e);
            }
        }
        let slot = self.slot as usize;
        if first_error.is_none() {
            let left = self.critical_section(false, |_| {
                let entry = &self.view.header().processes[slot];
                self.view.set(&entry.state, SLOT_FREE);
                self.view.set(&entry.held_blocks, 0);
                Ok(())
            });
            if let Err(e) = left {
                first_error.get_or_insert(e);
            }
        }
        // Leave the slot to others. If some holder records could not be
        // dropped, the slot stays active and is reaped like a dead process's.
        self.segment.unlock_slot(slot);
        if self.creator {
            match Segment::unlink(self.name()) {
                Ok(()) | Err(PoolError::SegmentNotFound { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Takes and releases the segment lock with no work inside (benchmarks).
    #[doc(hidden)]
    pub fn empty_critical_section(&self) -> Result<()> {
        self.critical_section(false, |_| Ok(()))
    }

    /// The process slot holding the lock right now, if any (diagnostics).
    #[doc(hidden)]
    pub fn lock_owner(&self) -> Option<u32> {
        match self.view.header().lock_word.load(Relaxed) {
            0 => None,
            w => Some((w - 1) as u32),
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

    /// Drops the attachment as if the process had been killed: no
    /// reference is released and nothing is unlinked. For tests.
    #[cfg(feature = "testing")]
    pub fn abandon(self) {
        self.shut_down.store(true, Relaxed);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Backs the bitmap words for heap bytes `[offset, offset + len)`.
fn reserve_bitmap(segment: &Segment, geometry: &Geometry, offset: u64, len: u64) -> Result<()> {
    let first_word = offset / BLOCK_ALIGN / 64;
    let last_word = (offset + len).div_ceil(BLOCK_ALIGN).div_ceil(64);
    let start = geometry.bitmap_offset + first_word * 8;
    segment.reserve(start, (last_word - first_word + 1) * 8)
}

pub(crate) fn validate_header(view: &SegmentView, len: u64) -> Result<()> {
    let h = view.header();
    let bad = |reason: String| Err(PoolError::InvalidSegment { reason });
    if h.magic.load(Acquire) != MAGIC {
        return bad("bad magic: not an arraypool segment, or not initialised yet".into());
    }
    let version = h.layout_version.load(Relaxed);
    if version != LAYOUT_VERSION as u64 {
        return bad(format!(
            "layout version {version}, this build reads {LAYOUT_VERSION}"
        ));
    }
    let capacity = h.capacity.load(Relaxed);
    if capacity != len {
        return bad(format!(
            "header says {capacity} bytes, the segment has {len}"
        ));
    }
    if capacity > MAX_CAPACITY {
        return bad(format!(
            "capacity {capacity} exceeds the maximum {MAX_CAPACITY}"
        ));
    }
    let expected = Geometry::for_capacity(capacity);
    let found = Geometry {
        capacity,
        header_size: h.header_size.load(Relaxed),
        bitmap_offset: h.bitmap_offset.load(Relaxed),
        heap_start: h.heap_start.load(Relaxed),
        heap_end: h.heap_end.load(Relaxed),
    };
    if expected != Some(found) {
        return bad(format!("geometry {found:?} does not match {expected:?}"));
    }
    Ok(())
}
