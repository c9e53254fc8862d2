//! The per-process small-block cache (LAYOUT.md §9.1): reuse, stale
//! handles, what is never cached, draining when full and at close, and the
//! accounting `stats`/`check`/`blocks` give. Death with cached blocks is in
//! `multiprocess.rs` (a real child) and `crash_points.rs` (every write).

mod common;

use arraypool_core::{Pool, PoolError};
use common::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn block_size(len: u64) -> u64 {
    (len + 64).div_ceil(64) * 64
}

fn stale(e: PoolError) -> bool {
    e.code() == "ERR_STALE_HANDLE"
}

/// (used bytes, live blocks, cached bytes, cached blocks) as `stats` says.
fn accounting(pool: &Pool) -> (u64, u64, u64, u64) {
    let s = pool.stats().expect("stats");
    (s.used_bytes, s.live_blocks, s.cached_bytes, s.cached_blocks)
}

#[test]
fn a_released_small_block_is_reused_by_the_next_allocation_of_its_size() {
    let pool = new_pool(16 * MIB);
    let first = pool.allocate(1000, false).unwrap();
    fill(&pool, &first, 1);
    pool.release(first.offset, first.generation).unwrap();
    assert_eq!(pool.cached(), (block_size(1000), 1));
    assert_eq!(accounting(&pool), (0, 0, block_size(1000), 1));
    assert_consistent(&pool);

    // Same size class (the rounded block size), another length; transfer
    // required but never sent (so its release frees, or caches, it).
    let again = pool.allocate_local(990, true).unwrap();
    assert_eq!(again.offset, first.offset, "the cached block came back");
    assert!(again.generation > first.generation, "with a new generation");
    assert_eq!(again.data_len, 990);
    assert_eq!(pool.cached(), (0, 0));
    assert_eq!(accounting(&pool), (block_size(1000), 1, 0, 0));
    let listed = pool.blocks(10).unwrap();
    assert_eq!(listed.blocks.len(), 1);
    assert!(listed.blocks[0].transfer_required && !listed.blocks[0].cached);
    assert_eq!(listed.blocks[0].data_len, 990);
    assert_consistent(&pool);

    // Another size does not take it.
    pool.release(again.offset, again.generation).unwrap();
    let other = pool.allocate(3000, false).unwrap();
    assert_ne!(other.offset, first.offset);
    assert_eq!(pool.cached().1, 1);
    pool.release(other.offset, other.generation).unwrap();
    assert_consistent(&pool);
}

#[test]
fn a_stale_handle_never_reaches_a_cached_or_reused_block() {
    let pool = new_pool(16 * MIB);
    let peer = open(&pool);
    let first = pool.allocate(1000, false).unwrap();
    fill(&pool, &first, 0x11);
    let old = handle(&pool, &first);
    pool.release(first.offset, first.generation).unwrap();

    // Cached: neither this process nor another attaches it.
    assert!(stale(pool.attach(&old).unwrap_err()));
    assert!(stale(peer.attach(&old).unwrap_err()));
    // Not even by the generation a listing shows for it.
    let listed = peer.blocks(10).unwrap();
    assert_eq!((listed.total, listed.cached), (1, 1));
    let cached = &listed.blocks[0];
    assert!(cached.cached && cached.holders.len() == 1);
    assert_ne!(cached.generation, first.generation);
    let forged = arraypool_core::Handle {
        generation: cached.generation,
        ..old.clone()
    };
    assert!(stale(peer.attach(&forged).unwrap_err()));

    // Reused: the old handle still fails, the new one works.
    let again = pool.allocate(1000, false).unwrap();
    assert_eq!(again.offset, first.offset);
    fill(&pool, &again, 0x22);
    assert!(stale(pool.attach(&old).unwrap_err()));
    assert!(stale(peer.attach(&old).unwrap_err()));
    let attached = peer.attach(&handle(&pool, &again)).unwrap();
    assert!(data(&peer, &attached).iter().all(|&x| x == 0x22));
    peer.release(attached.offset, attached.generation).unwrap();
    pool.release(again.offset, again.generation).unwrap();
    assert_consistent(&pool);
}

#[test]
fn shared_in_flight_and_large_blocks_are_never_cached() {
    let pool = new_pool(16 * MIB);
    let peer = open(&pool);
    // Still held by another process.
    let shared = pool.allocate(1000, false).unwrap();
    let theirs = peer.attach(&handle(&pool, &shared)).unwrap();
    pool.release(shared.offset, shared.generation).unwrap();
    // In flight: transfer required, never attached.
    let in_flight = pool.allocate(1000, true).unwrap();
    pool.release(in_flight.offset, in_flight.generation)
        .unwrap();
    // Larger than the cache's bound (64 KiB blocks).
    let large = pool.allocate(64 * KIB, false).unwrap();
    pool.release(large.offset, large.generation).unwrap();
    assert_eq!(pool.cached(), (0, 0));
    let s = pool.stats().unwrap();
    assert_eq!(
        (s.live_blocks, s.in_flight_blocks, s.cached_blocks),
        (2, 1, 0)
    );

    // The last holder of the shared block is the peer: it caches it in
    // its own cache, and this process cannot take it.
    peer.release(theirs.offset, theirs.generation).unwrap();
    assert_eq!(peer.cached(), (block_size(1000), 1));
    let mine = pool.allocate(1000, false).unwrap();
    assert_ne!(mine.offset, shared.offset);
    assert_eq!(
        pool.stats().unwrap().cached_blocks,
        1,
        "counted from anywhere"
    );
    pool.release(mine.offset, mine.generation).unwrap();
    assert_consistent(&pool);
}

#[test]
fn the_cache_is_bounded() {
    let pool = new_pool(64 * MIB);
    let blocks: Vec<_> = (0..400)
        .map(|_| pool.allocate(100, false).unwrap())
        .collect();
    for b in &blocks {
        pool.release(b.offset, b.generation).unwrap();
    }
    let (bytes, count) = pool.cached();
    assert!(count > 0 && count < 400, "{count} blocks cached of 400");
    assert_eq!(bytes, count * block_size(100));
    // In a small pool at most 1/16 of the heap is kept.
    let small = new_pool(MIB);
    let blocks: Vec<_> = (0..20)
        .map(|_| small.allocate(10 * KIB, false).unwrap())
        .collect();
    for b in &blocks {
        small.release(b.offset, b.generation).unwrap();
    }
    let heap = small.stats().unwrap().heap_bytes;
    assert!(small.cached().0 <= heap / 16);
    assert!(small.cached().1 >= 1);
    assert_consistent(&small);
}

#[test]
fn a_full_pool_takes_its_cached_blocks_back_before_failing() {
    let pool = new_pool(MIB);
    let heap = pool.stats().unwrap().heap_bytes;
    let blocks: Vec<_> = (0..8)
        .map(|_| pool.allocate(7 * KIB, false).unwrap())
        .collect();
    for b in &blocks {
        pool.release(b.offset, b.generation).unwrap();
    }
    assert!(pool.cached().1 >= 2, "some blocks are cached");
    // Only the whole heap, merged back into one block, holds this.
    let everything = pool.allocate(heap - 64, false).unwrap();
    assert_eq!(pool.cached(), (0, 0), "the cache was drained");
    assert_eq!(accounting(&pool), (heap, 1, 0, 0));
    pool.release(everything.offset, everything.generation)
        .unwrap();
    assert_eq!(accounting(&pool), (0, 0, 0, 0));
    // A request that cannot fit even then is still ERR_POOL_FULL.
    let small = pool.allocate(100, false).unwrap();
    pool.release(small.offset, small.generation).unwrap();
    let err = pool.allocate(heap, false).unwrap_err();
    assert_eq!(err.code(), "ERR_POOL_FULL");
    assert_consistent(&pool);
}

#[test]
fn close_and_drain_give_the_cached_blocks_back() {
    let pool = new_pool(16 * MIB);
    let peer = open(&pool);
    for len in [10, 1000, 30 * KIB] {
        let b = peer.allocate(len, false).unwrap();
        peer.release(b.offset, b.generation).unwrap();
    }
    let cached = block_size(10) + block_size(1000) + block_size(30 * KIB);
    assert_eq!(accounting(&pool), (0, 0, cached, 3));
    assert_eq!(pool.blocks(10).unwrap().cached, 3);
    peer.close().unwrap();
    assert_eq!(accounting(&pool), (0, 0, 0, 0));
    assert_eq!(pool.blocks(10).unwrap().total, 0, "nothing left allocated");
    assert_consistent(&pool);

    let b = pool.allocate(1000, false).unwrap();
    pool.release(b.offset, b.generation).unwrap();
    assert_eq!(pool.drain_cache().unwrap(), block_size(1000));
    assert_eq!(pool.cached(), (0, 0));
    assert_eq!(pool.blocks(10).unwrap().total, 0);
    assert_eq!(pool.drain_cache().unwrap(), 0, "nothing left to drain");
    assert_consistent(&pool);
}

#[test]
fn a_cached_block_scribbled_over_is_an_error_not_a_reuse() {
    let pool = new_shm_pool(16 * MIB);
    let first = pool.allocate(1000, false).unwrap();
    pool.release(first.offset, first.generation).unwrap();
    // Another process (buggy) clears the cached flag in the block's tag.
    let tag_at =
        first.offset + std::mem::offset_of!(arraypool_core::layout::BlockHeader, tag) as u64;
    let path = format!("/dev/shm/{}", pool.name());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut word = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut word, tag_at).unwrap();
    let tag = u64::from_le_bytes(word) & !arraypool_core::layout::FLAG_CACHED;
    std::os::unix::fs::FileExt::write_all_at(&file, &tag.to_le_bytes(), tag_at).unwrap();
    let err = pool.allocate(1000, false).unwrap_err();
    assert_eq!(err.code(), "ERR_CORRUPT_SEGMENT");
    // The entry is gone from the cache; a plain allocation still works.
    assert_eq!(pool.cached(), (0, 0));
    let b = pool.allocate(1000, false).unwrap();
    assert_ne!(b.offset, first.offset);
}

#[test]
fn a_full_pool_reclaims_the_blocks_other_processes_keep_cached() {
    let pool = new_pool(MIB);
    let peer = open(&pool);
    let heap = pool.stats().unwrap().heap_bytes;
    let blocks: Vec<_> = (0..8)
        .map(|_| peer.allocate(7 * KIB, false).unwrap())
        .collect();
    for b in &blocks {
        peer.release(b.offset, b.generation).unwrap();
    }
    let (cached_bytes, cached_blocks) = peer.cached();
    assert!(cached_blocks >= 2, "the peer keeps some blocks cached");
    assert_eq!(pool.stats().unwrap().cached_bytes, cached_bytes);
    // Only the whole heap holds this: the peer's cached blocks must go.
    let everything = pool.allocate(heap - 64, false).unwrap();
    assert_eq!(accounting(&pool), (heap, 1, 0, 0));
    assert_consistent(&pool);
    pool.release(everything.offset, everything.generation)
        .unwrap();
    // The peer finds its cached blocks gone: it allocates as usual, and
    // neither its drain nor its close counts them as failures.
    let again = peer.allocate(7 * KIB, false).unwrap();
    fill(&peer, &again, 3);
    assert!(data(&peer, &again).iter().all(|&x| x == 3));
    peer.release(again.offset, again.generation).unwrap();
    assert_consistent(&pool);
    peer.close().unwrap();
    assert_eq!(accounting(&pool), (0, 0, 0, 0));
    assert_eq!(pool.blocks(10).unwrap().total, 0);
    assert_consistent(&pool);
}

/// The process keeps a marker entry for each cached block (so that taking
/// it back costs no map insert): it never reads as a held reference.
#[test]
fn a_cached_block_is_not_held_by_its_process_until_taken_back() {
    let pool = new_pool(16 * MIB);
    let block = pool.allocate(1000, false).unwrap();
    pool.retain(block.offset, block.generation).unwrap();
    pool.release(block.offset, block.generation).unwrap();
    assert_eq!(pool.held_references(), 1);
    pool.release(block.offset, block.generation).unwrap();
    assert_eq!(pool.cached(), (block_size(1000), 1));
    assert_eq!(pool.held_references(), 0);
    // Its old life is neither held nor attachable nor shareable.
    let err = pool.release(block.offset, block.generation).unwrap_err();
    assert_eq!(err.code(), "ERR_NOT_HELD");
    assert!(pool.retain(block.offset, block.generation).is_err());
    assert!(!pool.mark_escaped(block.offset, block.generation));
    assert!(pool.share(&handle(&pool, &block)).is_err());
    assert!(stale(pool.attach(&handle(&pool, &block)).unwrap_err()));
    // Taken back: held once, under its new generation.
    let again = pool.allocate(1000, false).unwrap();
    assert_eq!(again.offset, block.offset);
    assert_ne!(again.generation, block.generation);
    assert_eq!(pool.held_references(), 1);
    pool.release(again.offset, again.generation).unwrap();
    // Drained: the marker goes with the block, and the next allocation of
    // that size is a fresh one, held once.
    assert_eq!(pool.drain_cache().unwrap(), block_size(1000));
    assert_eq!(pool.held_references(), 0);
    let fresh = pool.allocate(1000, false).unwrap();
    assert_eq!(pool.held_references(), 1);
    pool.release(fresh.offset, fresh.generation).unwrap();
    assert_consistent(&pool);
    pool.close().unwrap();
    assert_eq!(pool.held_references(), 0);
}
