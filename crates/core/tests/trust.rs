//! Values read from the segment are input from another process: forged
//! block headers and header fields are refused with typed errors, never
//! followed (issue 11). And `close` is ordered with every other operation.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arraypool_core::layout::{BlockHeader, SegmentHeader};
use arraypool_core::{BlockRef, Handle, Pool, PoolError, PoolOptions};
use common::*;

const MIB: u64 = 1 << 20;

/// The shared word at byte `offset` of the segment `block` lives in, as
/// another process would write it.
fn word<'a>(pool: &'a Pool, block: &BlockRef, offset: u64) -> &'a AtomicU64 {
    let base = pool
        .data_ptr(block)
        .wrapping_sub(block.data_offset as usize);
    // SAFETY: `offset` is an 8-aligned offset inside the mapping (the
    // tests pass header and block-header fields), which the pool keeps mapped.
    unsafe { &*(base.add(offset as usize) as *const AtomicU64) }
}

fn block_field(block: &BlockRef, field: usize) -> u64 {
    block.offset + field as u64
}

#[test]
fn a_forged_data_len_never_yields_a_view_past_the_block() {
    let pool = new_pool(MIB);
    let block = pool.allocate(1000, false).unwrap();
    // The 2 GiB data_len of the issue, in a 1 MiB pool.
    let data_len = word(
        &pool,
        &block,
        block_field(&block, std::mem::offset_of!(BlockHeader, data_len)),
    );
    data_len.store(2 << 30, Relaxed);
    let other = open(&pool);
    let asking = Handle {
        byte_length: 2 << 30,
        ..handle(&pool, &block)
    };
    let err = other.attach(&asking).unwrap_err();
    assert_eq!(err.code(), "ERR_CORRUPT_SEGMENT", "{err}");
    assert!(
        err.to_string().contains("data_len"),
        "names the field: {err}"
    );
    // This process's own copy of the length is what its views use.
    assert_eq!(pool.share(&handle(&pool, &block)).unwrap().data_len, 1000);
    let err = pool.share(&asking).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_HANDLE");
    data_len.store(1000, Relaxed);
    let again = other.attach(&handle(&pool, &block)).unwrap();
    assert_eq!(again.data_len, 1000);
    other.release(again.offset, again.generation).unwrap();
    pool.release(block.offset, block.generation).unwrap();
    pool.release(block.offset, block.generation).unwrap();
    assert_consistent(&pool);
}

#[test]
fn geometry_is_read_once_a_scribbled_header_does_not_move_the_heap() {
    let pool = new_pool(MIB);
    let block = pool.allocate(1000, false).unwrap();
    let heap_end = word(
        &pool,
        &block,
        std::mem::offset_of!(SegmentHeader, heap_end) as u64,
    );
    let reserved = word(
        &pool,
        &block,
        std::mem::offset_of!(SegmentHeader, reserved_until) as u64,
    );
    let (old_end, old_reserved) = (heap_end.load(Relaxed), reserved.load(Relaxed));
    heap_end.store(u64::MAX - 63, Relaxed);
    reserved.store(u64::MAX, Relaxed);
    // This process keeps its validated geometry.
    let far = Handle {
        offset: 64 * MIB,
        ..handle(&pool, &block)
    };
    assert_eq!(pool.attach(&far).unwrap_err().code(), "ERR_INVALID_HANDLE");
    let second = pool.allocate(5000, false).unwrap();
    assert!(second.data_offset + second.data_len <= MIB);
    // A newcomer refuses the segment outright.
    let refused = Pool::open(pool.name(), PoolOptions::default());
    assert!(
        matches!(refused, Err(PoolError::InvalidSegment { .. })),
        "{:?}",
        refused.err()
    );
    heap_end.store(old_end, Relaxed);
    reserved.store(
        old_reserved.max(second.data_offset + second.data_len),
        Relaxed,
    );
    pool.release(second.offset, second.generation).unwrap();
    pool.release(block.offset, block.generation).unwrap();
    assert_consistent(&pool);
}

#[test]
fn a_corrupt_lock_word_or_journal_length_is_survived() {
    let pool = new_pool(MIB);
    let block = pool.allocate(1000, false).unwrap();
    let lock_word = word(
        &pool,
        &block,
        std::mem::offset_of!(SegmentHeader, lock_word) as u64,
    );
    // Names no process slot: nobody could release it, so it is taken over.
    lock_word.store(0xffff_ff00, Relaxed);
    pool.release(block.offset, block.generation).unwrap();
    assert_eq!(pool.queued_releases(), 0);
    let journal_len = word(
        &pool,
        &block,
        std::mem::offset_of!(SegmentHeader, journal_len) as u64,
    );
    // Outside a transaction a non-empty journal is rolled back (clamped to
    // its capacity; entries outside the mapping are skipped) before any use.
    journal_len.store(u64::MAX, Relaxed);
    let stats = pool.stats();
    assert!(stats.is_ok(), "{stats:?}");
    assert_eq!(journal_len.load(Relaxed), 0);
}

#[test]
fn close_is_ordered_with_allocate_nothing_is_handed_out_after_close() {
    let pool = Arc::new(new_pool(4 * MIB));
    let observer = open(&pool);
    arraypool_core::testing::hold_before_local_lock(true);
    let allocating = {
        let pool = pool.clone();
        std::thread::Builder::new()
            .name(arraypool_core::testing::HELD_THREAD.into())
            .spawn(move || pool.allocate(1000, false))
            .unwrap()
    };
    // The allocation has entered and stands just before the pool's mutex
    // (where the old code had already passed its "is it closed?" check).
    while !arraypool_core::testing::held_before_local_lock() {
        std::thread::yield_now();
    }
    pool.close().unwrap();
    arraypool_core::testing::hold_before_local_lock(false);
    let outcome = allocating.join().unwrap();
    assert!(
        matches!(outcome, Err(PoolError::Closed { .. })),
        "an allocation that finished after close: {outcome:?}"
    );
    let stats = observer.stats().unwrap();
    assert_eq!(stats.live_blocks, 0, "nothing allocated for a closed pool");
    assert_eq!(stats.processes, 1);
    assert_consistent(&observer);
}

#[test]
fn close_racing_allocations_from_threads_leaks_nothing() {
    for _ in 0..20 {
        let pool = Arc::new(new_pool(4 * MIB));
        let observer = open(&pool);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut handed_out = 0;
                    while pool.allocate(512, false).is_ok() {
                        handed_out += 1;
                    }
                    handed_out
                })
            })
            .collect();
        std::thread::yield_now();
        pool.close().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        // Every block handed out before close was released by close; none
        // was handed out after it.
        let stats = observer.stats().unwrap();
        assert_eq!(stats.live_blocks, 0);
        assert_eq!(stats.used_bytes, 0);
        assert_consistent(&observer);
    }
}

#[test]
fn close_returns_the_pages_of_the_large_blocks_it_frees() {
    let pool = Pool::create(PoolOptions {
        capacity: Some(64 * MIB),
        punch_threshold: MIB,
        ..Default::default()
    })
    .unwrap();
    let observer = open(&pool);
    let big = pool.allocate(16 * MIB, false).unwrap();
    fill(&pool, &big, 7);
    let before = resident_bytes(&observer);
    assert!(before >= 16 * MIB, "{before}");
    pool.close().unwrap();
    let after = resident_bytes(&observer);
    assert!(
        after + 15 * MIB <= before,
        "close kept the pages: {before} -> {after}"
    );
    assert_eq!(observer.stats().unwrap().live_blocks, 0);
    assert_consistent(&observer);
}

/// A release checks a held block against what this process took (its size
/// is kept locally) and, if the header says otherwise, in full: a scribbled
/// size is refused by name, never cached or freed as that size.
#[test]
fn a_scribbled_size_of_a_held_block_is_refused_by_its_release() {
    let pool = new_pool(MIB);
    let block = pool.allocate(1000, false).unwrap();
    let neighbour = pool.allocate(1000, false).unwrap();
    let size = word(
        &pool,
        &block,
        block_field(&block, std::mem::offset_of!(BlockHeader, size)),
    );
    let taken = size.load(Relaxed);
    size.store(taken * 2, Relaxed);
    let err = pool.release(block.offset, block.generation).unwrap_err();
    assert_eq!(err.code(), "ERR_CORRUPT_SEGMENT", "{err}");
    assert!(err.to_string().contains("size"), "names the field: {err}");
    assert_eq!(pool.cached(), (0, 0), "nothing cached from a forged size");
    // Rolled back: the neighbour is untouched and still releases normally.
    pool.release(neighbour.offset, neighbour.generation)
        .unwrap();
    size.store(taken, Relaxed);
    assert_consistent(&pool);
}
