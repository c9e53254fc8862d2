//! `Pool::idle_and_alone`: when a process that only receives from a pool
//! may close it (nothing of the pool can reach it any more).

mod common;

use arraypool_core::Pool;
use common::*;

const MIB: u64 = 1 << 20;

fn idle(pool: &Pool) -> bool {
    pool.idle_and_alone().unwrap()
}

#[test]
fn a_receiver_is_idle_and_alone_only_once_the_sender_is_gone_and_nothing_is_in_flight() {
    let sender = new_pool(4 * MIB);
    let receiver = open(&sender);
    assert!(!idle(&receiver), "the sender is attached");

    // A result sent and dropped by its sender: in flight until revived.
    let b = sender.allocate(1000, true).unwrap();
    sender.release(b.offset, b.generation).unwrap();
    sender.close().unwrap();
    assert!(
        !idle(&receiver),
        "a message with the in-flight block may still arrive"
    );

    let got = receiver.attach(&handle(&sender, &b)).unwrap();
    assert!(!idle(&receiver), "the receiver holds a reference");
    receiver.release(got.offset, got.generation).unwrap();
    assert!(idle(&receiver));
    assert_consistent(&receiver);
}

#[test]
fn a_dead_sender_is_reaped_first_and_its_blocks_count_only_while_in_flight() {
    let receiver = new_pool(4 * MIB);
    let sender = open(&receiver);
    // Held by the sender when it dies: freed by the reap.
    sender.allocate(1000, false).unwrap();
    // Sent and dropped: in flight, stays after the reap.
    let sent = sender.allocate(1000, true).unwrap();
    sender.release(sent.offset, sent.generation).unwrap();
    sender.abandon(); // as if SIGKILLed
    assert!(!idle(&receiver), "the in-flight block may still arrive");
    let got = receiver.attach(&handle(&receiver, &sent)).unwrap();
    receiver.release(got.offset, got.generation).unwrap();
    assert!(
        idle(&receiver),
        "the dead sender was reaped and nothing is left"
    );
}

#[test]
fn a_closed_pool_answers_closed() {
    let pool = new_pool(4 * MIB);
    pool.close().unwrap();
    assert!(pool.idle_and_alone().is_err());
}
