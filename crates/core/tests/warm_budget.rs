//! The punch policy by budget: freed blocks of at least 1 MiB give their
//! pages back once the free bytes the segment keeps backed would exceed
//! `warm_free_budget`; a working set under the budget stays warm.

mod common;
use arraypool_core::{Pool, PoolOptions};
use common::*;

const MIB: u64 = 1 << 20;

fn pool_with_budget(capacity: u64, warm_free_budget: u64) -> Pool {
    Pool::create(PoolOptions {
        capacity: Some(capacity),
        // The size rule alone would never punch here.
        punch_threshold: u64::MAX,
        warm_free_budget,
        ..Default::default()
    })
    .expect("create pool")
}

/// Allocates `count` blocks of `len` bytes, touches every page, releases them all.
fn spike(pool: &Pool, count: usize, len: u64) {
    let blocks: Vec<_> = (0..count)
        .map(|i| {
            let b = pool.allocate(len, false).expect("allocate");
            fill(pool, &b, i as u8 + 1);
            b
        })
        .collect();
    for b in blocks {
        pool.release(b.offset, b.generation).expect("release");
    }
}

#[test]
fn a_spike_beyond_the_budget_gives_its_pages_back() {
    let pool = pool_with_budget(256 * MIB, 16 * MIB);
    spike(&pool, 64, MIB);
    let stats = pool.stats().unwrap();
    assert_eq!(stats.used_bytes, 0);
    assert_eq!(stats.backed_bytes, resident_bytes(&pool));
    // The budget, plus what a 1 MiB block's edge pages and the metadata keep.
    assert!(
        stats.backed_bytes <= 16 * MIB + 4 * MIB,
        "{} MiB still backed after a 64 MiB spike with a 16 MiB budget",
        stats.backed_bytes / MIB
    );
    assert_consistent(&pool);
    // Punched blocks are reserved again before use: a second spike works
    // (a write to an unreserved page of a full tmpfs would be SIGBUS).
    spike(&pool, 64, MIB);
    assert!(pool.stats().unwrap().backed_bytes <= 20 * MIB);
    assert_consistent(&pool);
}

#[test]
fn a_working_set_under_the_budget_stays_warm() {
    let pool = pool_with_budget(256 * MIB, 64 * MIB);
    spike(&pool, 16, MIB);
    let warm = resident_bytes(&pool);
    assert!(warm >= 16 * MIB, "the 16 MiB freed stay backed, got {warm}");
    spike(&pool, 16, MIB);
    assert_eq!(resident_bytes(&pool), warm, "reuse needed no new pages");
    assert_consistent(&pool);
}

#[test]
fn blocks_under_a_mebibyte_keep_their_pages_whatever_the_budget() {
    let pool = pool_with_budget(256 * MIB, 0);
    spike(&pool, 32, 512 * 1024);
    assert!(resident_bytes(&pool) >= 16 * MIB);
    assert_consistent(&pool);
}
