//! A release never waits, not even for another thread of the process that
//! is inside an operation waiting for a stopped lock holder (issue 11).
//! Alone in its test binary: the pause hooks it uses are process-wide.

mod common;

use std::sync::Arc;

use arraypool_core::{Pool, PoolOptions};
use common::*;

const MIB: u64 = 1 << 20;

/// The review's case: a worker thread waits for a stopped lock holder while
/// inside an operation (holding the pool's process-local mutex); a release
/// on another thread must neither wait for that mutex nor for the lock.
#[test]
fn a_release_never_waits_for_another_thread_waiting_on_the_lock() {
    let hold_reached = arraypool_core::testing::paused_inside_allocation;
    let holder_pool = Arc::new(new_pool(4 * MIB));
    let other = Arc::new(
        Pool::open(
            holder_pool.name(),
            PoolOptions {
                lock_timeout: std::time::Duration::from_secs(600),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let block = other.allocate(100, false).unwrap();
    /// Removes the hold file however the test ends (a paused allocation of
    /// any test in this binary waits for it).
    struct Hold(std::path::PathBuf);
    impl Drop for Hold {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let hold = std::env::temp_dir().join(format!("arraypool-trust-hold-{}", std::process::id()));
    std::fs::write(&hold, b"").unwrap();
    let _hold = Hold(hold.clone());
    arraypool_core::testing::pause_inside_allocation_while_exists(Some(hold.clone()));
    let holding = {
        let pool = holder_pool.clone();
        std::thread::spawn(move || pool.allocate(64, false).map(|b| (b.offset, b.generation)))
    };
    while holder_pool.lock_owner().is_none() || !hold_reached() {
        assert!(!holding.is_finished(), "the holder never paused");
        std::thread::yield_now();
    }
    arraypool_core::testing::pause_inside_allocation_while_exists(None);
    let waiting = {
        let other = other.clone();
        std::thread::spawn(move || other.allocate(64, false).map(|b| (b.offset, b.generation)))
    };
    while !other.busy_in_this_process() {
        assert!(
            !waiting.is_finished(),
            "the waiter got through: {:?}",
            holder_pool.lock_owner()
        );
        std::thread::yield_now();
    }
    // `waiting` holds other's mutex and waits for the lock: with a blocking
    // release this would wait for it, and it for `holding`, which waits for
    // the file we remove only after the release returned.
    other.release(block.offset, block.generation).unwrap();
    assert_eq!(other.queued_releases(), 1, "deferred, not done");
    std::fs::remove_file(&hold).unwrap();
    let (h_offset, h_generation) = holding.join().unwrap().unwrap();
    let (w_offset, w_generation) = waiting
        .join()
        .unwrap()
        .expect("the waiter got the lock in time");
    assert_eq!(other.flush_releases(), 0, "done once both are free");
    holder_pool.release(h_offset, h_generation).unwrap();
    other.release(w_offset, w_generation).unwrap();
    assert_eq!(holder_pool.stats().unwrap().live_blocks, 0);
    assert_consistent(&holder_pool);
}
