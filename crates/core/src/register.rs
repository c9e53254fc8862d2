//! Creating a segment, opening one, and registering this process in it
//! (claiming a process slot and the epoch of its lock word).

use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Mutex;
use std::time::Instant;

use crate::allocator::Heap;
use crate::error::{PoolError, Result};
use crate::layout::*;
use crate::local::LocalState;
use crate::lock;
use crate::memfd;
use crate::pool::{Pool, PoolOptions};
use crate::refs;
use crate::reserve::reserve_bitmap;
use crate::segment::{self, Backing, Segment};
use crate::view::SegmentView;

impl Pool {
    /// Creates a new segment and registers this process as its creator
    /// (the creator unlinks the name on close).
    pub fn create(options: PoolOptions) -> Result<Pool> {
        let backing = options.backing;
        let capacity = match options.capacity {
            Some(c) => c,
            None => crate::capacity::default_capacity(backing)?,
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
        Heap::new(&view, &geometry).init()?;
        view.commit();
        // Written last: a segment is valid once its magic is there.
        h.magic.store(MAGIC, Release);
        Self::register(segment, view, geometry, options, true).inspect_err(|_| {
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
        let geometry = validate_header(&view, len)?;
        // An anonymous pool's id was checked by `memfd::open_pool` before
        // the file was taken, for every candidate it tried.
        Self::register(segment, view, geometry, options, false)
    }

    pub(crate) fn register(
        segment: Segment,
        view: SegmentView,
        geometry: Geometry,
        options: PoolOptions,
        creator: bool,
    ) -> Result<Pool> {
        // The creator already holds slot 0's liveness lock (`Segment::create`);
        // a joiner claims one under the gc join protocol (segment.rs).
        let slot = if creator { 0 } else { segment.claim_slot()? };
        // A fresh epoch for this claim of the slot, before taking the lock:
        // from now on no waiter can mistake us for the slot's dead previous
        // owner (see `lock.rs`). Not journaled: an epoch must never repeat.
        let epoch = view.header().processes[slot as usize % MAX_PROCESSES]
            .claims
            .fetch_add(1, Relaxed)
            .wrapping_add(1);
        let pool = Pool {
            segment,
            view,
            geometry,
            slot,
            lock_word: lock::lock_word(slot, epoch),
            creator,
            options,
            state: Mutex::new(LocalState::default()),
            closed: AtomicBool::new(false),
            queued: Mutex::new(Vec::new()),
            queued_count: AtomicUsize::new(0),
            deferred: Mutex::new(Vec::new()),
            deferred_count: AtomicUsize::new(0),
            release_failures: AtomicUsize::new(0),
            last_sweep_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            allocations: AtomicU64::new(0),
        };
        let registered = pool.critical_section(pool.wait(), |heap| {
            let entry = &pool.view.header().processes[slot as usize];
            if entry.state.load(Relaxed) == SLOT_ACTIVE {
                // The slot's previous owner died and nobody reaped it yet.
                pool.reap_slots(heap, refs::slot_bit(slot))?;
            }
            pool.view.set(&entry.state, SLOT_ACTIVE)?;
            pool.view.set(&entry.pid, std::process::id() as u64)
        });
        if let Err(e) = registered {
            // Leave without `close`: marking the slot free would orphan the
            // holder bits its unreaped previous owner left; our liveness lock
            // goes with the fd, so the next reaper finishes the job.
            pool.lock_state().closed = true;
            pool.closed.store(true, Release);
            return Err(e);
        }
        Ok(pool)
    }
}
