//! `Pool::outstanding`: the backpressure hint a sender polls to learn that
//! a block it sent was given back.

mod common;
use common::*;

#[test]
fn a_block_is_outstanding_until_it_is_freed_wherever_it_is_freed() {
    let sender = new_pool(16 << 20);
    let receiver = open(&sender);
    // Above the small-block cache (64 KiB), so the freed block goes back to the heap.
    let sent = sender.allocate(128 << 10, true).unwrap();
    assert!(sender.outstanding(sent.offset, sent.generation));
    // The sender's last reference goes: in flight, still outstanding.
    sender.release(sent.offset, sent.generation).unwrap();
    assert!(sender.outstanding(sent.offset, sent.generation));
    let held = receiver.attach(&handle(&sender, &sent)).unwrap();
    assert!(sender.outstanding(sent.offset, sent.generation));
    receiver.release(held.offset, held.generation).unwrap();
    assert!(!sender.outstanding(sent.offset, sent.generation));
    // The same offset reused by another allocation: the old generation is not.
    let reused = sender.allocate(128 << 10, false).unwrap();
    assert_eq!(reused.offset, sent.offset);
    assert!(!sender.outstanding(sent.offset, sent.generation));
    assert!(sender.outstanding(reused.offset, reused.generation));
    sender.release(reused.offset, reused.generation).unwrap();
    assert_consistent(&sender);
}

#[test]
fn forged_positions_are_never_outstanding() {
    let pool = new_pool(16 << 20);
    let a = pool.allocate(8192, false).unwrap();
    for (offset, generation) in [
        (0, a.generation),
        (a.offset + 1, a.generation),
        (a.offset + 64, a.generation),
        (a.offset, a.generation + 1),
        (u64::MAX - 63, a.generation),
        (1 << 40, a.generation),
    ] {
        assert!(
            !pool.outstanding(offset, generation),
            "({offset}, {generation})"
        );
    }
    pool.release(a.offset, a.generation).unwrap();
}

#[test]
fn a_closed_pool_has_nothing_outstanding() {
    let pool = new_pool(16 << 20);
    let a = pool.allocate(4096, true).unwrap();
    assert!(pool.outstanding(a.offset, a.generation));
    pool.close().unwrap();
    assert!(!pool.outstanding(a.offset, a.generation));
}

#[test]
fn a_block_in_its_holders_small_block_cache_is_not_outstanding() {
    let sender = new_pool(16 << 20);
    let receiver = open(&sender);
    let sent = sender.allocate(1000, true).unwrap();
    sender.release(sent.offset, sent.generation).unwrap();
    let held = receiver.attach(&handle(&sender, &sent)).unwrap();
    receiver.release(held.offset, held.generation).unwrap();
    // Cached by the receiver under a new generation: given back all the same.
    assert!(receiver.cached().0 >= 1);
    assert!(!sender.outstanding(sent.offset, sent.generation));
    receiver.drain_cache().unwrap();
    assert_consistent(&sender);
}
