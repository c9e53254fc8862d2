//! Issue 12, item 3: a block allocated with `allocate_local` whose handle
//! never left the process is freed by its last release even if it was
//! allocated `transfer_required`; once `mark_escaped`, it keeps the
//! transferred rule.

mod common;

use arraypool_core::{Pool, PoolOptions};
use common::*;

const MIB: u64 = 1 << 20;

fn used(pool: &Pool) -> (u64, u64, u64) {
    let s = pool.stats().unwrap();
    (s.used_bytes, s.live_blocks, s.in_flight_blocks)
}

#[test]
fn an_unsent_transfer_required_block_is_freed_by_its_last_release() {
    let pool = new_pool(16 * MIB);
    let baseline = used(&pool);
    for _ in 0..50 {
        let b = pool.allocate_local(MIB, true).unwrap();
        assert_eq!(pool.escaped(b.offset, b.generation), Some(false));
        pool.release(b.offset, b.generation).unwrap();
    }
    assert_eq!(used(&pool), baseline);
    assert_consistent(&pool);
}

#[test]
fn every_view_of_the_block_counts_and_the_last_one_frees() {
    let pool = new_pool(4 * MIB);
    let b = pool.allocate_local(1000, true).unwrap();
    let h = handle(&pool, &b);
    pool.share(&h).unwrap();
    pool.retain(b.offset, b.generation).unwrap();
    for _ in 0..3 {
        pool.release(b.offset, b.generation).unwrap();
    }
    assert_eq!(used(&pool), (0, 0, 0));
    assert_consistent(&pool);
}

#[test]
fn a_block_marked_through_any_view_keeps_the_transferred_rule() {
    let pool = new_pool(4 * MIB);
    let b = pool.allocate_local(1000, true).unwrap();
    pool.share(&handle(&pool, &b)).unwrap();
    // The second view's handle leaves: the mark is per block.
    assert!(pool.mark_escaped(b.offset, b.generation));
    pool.release(b.offset, b.generation).unwrap();
    pool.release(b.offset, b.generation).unwrap();
    let (_, live, in_flight) = used(&pool);
    assert_eq!((live, in_flight), (1, 1));
    // The receiver revives it, then drops it: freed.
    let other = open(&pool);
    let got = other.attach(&handle(&pool, &b)).unwrap();
    other.release(got.offset, got.generation).unwrap();
    assert_eq!(used(&pool), (0, 0, 0));
    assert_consistent(&pool);
    // Marking a block not held does nothing.
    assert!(!pool.mark_escaped(b.offset, b.generation));
}

#[test]
fn plain_allocate_keeps_the_old_rule() {
    let pool = new_pool(4 * MIB);
    let b = pool.allocate(1000, true).unwrap();
    assert_eq!(pool.escaped(b.offset, b.generation), Some(true));
    pool.release(b.offset, b.generation).unwrap();
    assert_eq!(used(&pool).2, 1);
    assert_consistent(&pool);
}

#[test]
fn another_holder_or_an_attach_means_the_normal_rule() {
    let pool = new_pool(4 * MIB);
    let other = open(&pool);
    // A handle that left without a mark (a forged one): the other process
    // attached, so the block is transferred and lives while it holds it.
    let b = pool.allocate_local(1000, true).unwrap();
    let got = other.attach(&handle(&pool, &b)).unwrap();
    pool.release(b.offset, b.generation).unwrap();
    let (_, live, in_flight) = used(&pool);
    assert_eq!((live, in_flight), (1, 0));
    other.release(got.offset, got.generation).unwrap();
    assert_eq!(used(&pool), (0, 0, 0));
    // Attached by this process itself (a handle round trip to a thread):
    // transferred, freed at the last reference as before.
    let b = pool.allocate_local(1000, true).unwrap();
    pool.attach(&handle(&pool, &b)).unwrap();
    pool.release(b.offset, b.generation).unwrap();
    pool.release(b.offset, b.generation).unwrap();
    assert_eq!(used(&pool), (0, 0, 0));
    assert_consistent(&pool);
}

#[test]
fn a_large_unsent_block_is_punched_and_freed() {
    let pool = Pool::create(PoolOptions {
        capacity: Some(16 * MIB),
        punch_threshold: MIB,
        ..Default::default()
    })
    .unwrap();
    let b = pool.allocate_local(4 * MIB, true).unwrap();
    fill(&pool, &b, 7);
    pool.release(b.offset, b.generation).unwrap();
    assert_eq!(used(&pool), (0, 0, 0));
    assert_consistent(&pool);
}

#[test]
fn close_frees_unsent_blocks_and_leaves_marked_ones_in_flight() {
    let pool = new_pool(4 * MIB);
    let other = open(&pool);
    other.allocate_local(1000, true).unwrap();
    let marked = other.allocate_local(1000, true).unwrap();
    other.mark_escaped(marked.offset, marked.generation);
    other.close().unwrap();
    let (_, live, in_flight) = used(&pool);
    assert_eq!((live, in_flight), (1, 1));
    assert_consistent(&pool);
}
