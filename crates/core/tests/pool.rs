//! Single-process behaviour of the pool. Two `Pool` objects opened on one
//! segment hold different process slots, so they stand in for two processes
//! where no real process is needed (the real ones are in multiprocess.rs).

mod common;

use arraypool_core::{Backing, Handle, Pool, PoolError, PoolOptions};
use common::*;

const MIB: u64 = 1 << 20;

#[test]
fn allocate_write_release_returns_to_baseline() {
    let pool = new_pool(16 * MIB);
    let baseline = pool.stats().unwrap();
    assert_eq!(baseline.used_bytes, 0);
    let block = pool.allocate(1000, false).unwrap();
    fill(&pool, &block, 0xab);
    assert!(data(&pool, &block).iter().all(|&b| b == 0xab));
    let s = pool.stats().unwrap();
    assert_eq!(s.live_blocks, 1);
    assert_eq!(s.used_bytes, 1088, "1000 bytes + 64 header, rounded to 64");
    pool.release(block.offset, block.generation).unwrap();
    assert_eq!(pool.stats().unwrap().used_bytes, 0);
    assert_eq!(pool.stats().unwrap().live_blocks, 0);
    assert_consistent(&pool);
}

#[test]
fn every_block_is_64_byte_aligned_and_blocks_do_not_overlap() {
    let pool = new_pool(16 * MIB);
    let mut blocks = Vec::new();
    for len in [0u64, 1, 7, 63, 64, 65, 100, 1000, 4095, 4096, 12345] {
        let b = pool.allocate(len, false).unwrap();
        assert_eq!(b.data_offset % 64, 0, "len {len}");
        assert_eq!(pool.data_ptr(&b) as usize % 64, 0, "len {len}");
        blocks.push(b);
    }
    let mut ranges: Vec<(u64, u64)> = blocks
        .iter()
        .map(|b| (b.data_offset, b.data_offset + b.data_len))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap {:?}", w);
    }
    assert_consistent(&pool);
    for b in blocks {
        pool.release(b.offset, b.generation).unwrap();
    }
    assert_consistent(&pool);
    assert_eq!(pool.stats().unwrap().used_bytes, 0);
}

#[test]
fn zero_size_allocations_work_and_are_distinct() {
    let pool = new_pool(4 * MIB);
    let a = pool.allocate(0, false).unwrap();
    let b = pool.allocate(0, false).unwrap();
    assert_ne!(a.offset, b.offset);
    assert_eq!(a.data_len, 0);
    let h = handle(&pool, &a);
    let again = pool.attach(&h).unwrap();
    assert_eq!(again.offset, a.offset);
    for r in [a, again, b] {
        pool.release(r.offset, r.generation).unwrap();
    }
    assert_eq!(pool.stats().unwrap().live_blocks, 0);
}

#[test]
fn full_pool_reports_requested_free_and_largest() {
    let pool = new_pool(2 * MIB);
    let big = pool.allocate(MIB, false).unwrap();
    match pool.allocate(MIB + 1, false) {
        Err(PoolError::PoolFull {
            requested,
            free,
            largest_free,
            named,
        }) => {
            assert!(!named, "an anonymous pool");
            assert_eq!(requested, MIB + 1);
            assert!(
                free < MIB && largest_free <= free,
                "free {free} largest {largest_free}"
            );
        }
        other => panic!("expected PoolFull, got {other:?}"),
    }
    assert!(matches!(
        pool.allocate(u64::MAX, false),
        Err(PoolError::PoolFull { .. })
    ));
    // The pool keeps serving requests that fit.
    let small = pool.allocate(1000, false).unwrap();
    pool.release(small.offset, small.generation).unwrap();
    pool.release(big.offset, big.generation).unwrap();
    assert_consistent(&pool);
    // After freeing, the whole heap is free again, in at most a warm and a cold block.
    assert_eq!(pool.stats().unwrap().used_bytes, 0);
    assert!(pool.check().unwrap().free_blocks <= 2);
}

#[test]
fn freed_neighbours_coalesce_in_any_order() {
    let pool = new_pool(8 * MIB);
    let blocks: Vec<_> = (0..8)
        .map(|i| pool.allocate(1000 * (i + 1), false).unwrap())
        .collect();
    for i in [1usize, 3, 5, 7, 0, 2, 6, 4] {
        pool.release(blocks[i].offset, blocks[i].generation)
            .unwrap();
        assert_consistent(&pool);
    }
    // What remains: the warm region the blocks came from and the untouched
    // (unreserved) rest, which are kept apart on purpose.
    assert_eq!(pool.stats().unwrap().used_bytes, 0);
    assert!(pool.check().unwrap().free_blocks <= 2);
}

#[test]
fn transfer_required_keeps_block_in_flight_until_attached() {
    let creator = new_pool(4 * MIB);
    let receiver = open(&creator);
    let block = creator.allocate(256, true).unwrap();
    fill(&creator, &block, 42);
    let h = handle(&creator, &block);
    creator.release(block.offset, block.generation).unwrap();
    let s = creator.stats().unwrap();
    assert_eq!(
        (s.live_blocks, s.in_flight_blocks),
        (1, 1),
        "survives its creator's release"
    );
    let got = receiver.attach(&h).unwrap();
    assert!(data(&receiver, &got).iter().all(|&b| b == 42));
    assert_eq!(creator.stats().unwrap().in_flight_blocks, 0);
    receiver.release(got.offset, got.generation).unwrap();
    assert_eq!(
        creator.stats().unwrap().live_blocks,
        0,
        "freed: refcount 0 and transferred"
    );
    assert_consistent(&creator);
}

#[test]
fn transfer_not_required_frees_at_last_reference() {
    let pool = new_pool(4 * MIB);
    let block = pool.allocate(256, false).unwrap();
    pool.retain(block.offset, block.generation).unwrap();
    pool.release(block.offset, block.generation).unwrap();
    assert_eq!(pool.stats().unwrap().live_blocks, 1, "one reference left");
    pool.release(block.offset, block.generation).unwrap();
    assert_eq!(pool.stats().unwrap().live_blocks, 0);
    assert!(matches!(
        pool.release(block.offset, block.generation),
        Err(PoolError::NotHeld { .. })
    ));
}

#[test]
fn handle_of_freed_or_reused_block_is_stale() {
    let pool = new_pool(16 * MIB);
    let other = open(&pool);
    let first = pool.allocate(500, false).unwrap();
    let old = handle(&pool, &first);
    pool.release(first.offset, first.generation).unwrap();
    assert!(
        matches!(other.attach(&old), Err(PoolError::StaleHandle { .. })),
        "freed"
    );
    let second = pool.allocate(500, false).unwrap();
    assert_eq!(second.offset, first.offset, "the same place is reused");
    assert!(
        matches!(other.attach(&old), Err(PoolError::StaleHandle { .. })),
        "reused"
    );
    // A block merged away by coalescing is stale too.
    let a = pool.allocate(100, false).unwrap();
    let b = pool.allocate(100, false).unwrap();
    let hb = handle(&pool, &b);
    pool.release(b.offset, b.generation).unwrap();
    pool.release(a.offset, a.generation).unwrap();
    assert!(matches!(
        other.attach(&hb),
        Err(PoolError::StaleHandle { .. })
    ));
    pool.release(second.offset, second.generation).unwrap();
    assert_consistent(&pool);
}

#[test]
fn forged_handles_are_invalid_and_touch_nothing() {
    let pool = new_pool(4 * MIB);
    let block = pool.allocate(1000, false).unwrap();
    // Data crafted to look like a block header inside the block's data.
    // SAFETY: we hold `block`, whose data is 1000 bytes (>= 128 written).
    unsafe {
        let p = pool.data_ptr(&block) as *mut u64;
        let fake = [
            128u64,
            block.offset,
            0x5553_4544 << 32,
            block.generation,
            0,
            500,
            0,
            0,
        ];
        std::ptr::copy_nonoverlapping(fake.as_ptr(), p, fake.len());
    }
    let good = handle(&pool, &block);
    let capacity = pool.capacity();
    let forged = [
        Handle {
            offset: good.offset + 64,
            ..good.clone()
        },
        Handle {
            offset: good.offset + 1,
            ..good.clone()
        },
        Handle {
            offset: 0,
            ..good.clone()
        },
        Handle {
            offset: capacity,
            ..good.clone()
        },
        Handle {
            offset: u64::MAX - 63,
            ..good.clone()
        },
        Handle {
            generation: 0,
            ..good.clone()
        },
        Handle {
            generation: u64::MAX,
            ..good.clone()
        },
        Handle {
            byte_length: 1001,
            ..good.clone()
        },
        Handle {
            byte_offset: 999,
            byte_length: 2,
            ..good.clone()
        },
        Handle {
            byte_offset: u64::MAX,
            byte_length: 2,
            ..good.clone()
        },
        Handle {
            segment: "arraypool-someoneelse".into(),
            ..good.clone()
        },
        Handle {
            segment: "../../etc/passwd".into(),
            ..good.clone()
        },
    ];
    for h in &forged {
        match pool.attach(h) {
            Err(PoolError::InvalidHandle { .. }) | Err(PoolError::StaleHandle { .. }) => {}
            other => panic!("{h:?} gave {other:?}"),
        }
    }
    // The header-looking data 64 bytes in is not a block start.
    assert!(matches!(
        pool.attach(&forged[0]),
        Err(PoolError::StaleHandle { .. })
    ));
    assert!(matches!(
        pool.attach(&forged[1]),
        Err(PoolError::InvalidHandle { .. })
    ));
    assert_eq!(pool.held_references(), 1);
    assert_consistent(&pool);
    pool.release(block.offset, block.generation).unwrap();
}

#[test]
fn a_range_inside_the_block_attaches() {
    let pool = new_pool(4 * MIB);
    let block = pool.allocate(1000, false).unwrap();
    let slice = Handle {
        byte_offset: 200,
        byte_length: 800,
        ..handle(&pool, &block)
    };
    let r = pool.attach(&slice).unwrap();
    assert_eq!(r.offset, block.offset);
    assert_eq!(pool.held_references(), 2);
    pool.release(r.offset, r.generation).unwrap();
    pool.release(block.offset, block.generation).unwrap();
}

#[test]
fn abandoned_process_is_reaped_exactly() {
    let pool = new_pool(8 * MIB);
    let shared = pool.allocate(4000, false).unwrap();
    fill(&pool, &shared, 9);
    let baseline = pool.stats().unwrap().used_bytes;
    let worker = open(&pool);
    let attached = worker.attach(&handle(&pool, &shared)).unwrap();
    assert_eq!(attached.offset, shared.offset);
    for i in 0..100 {
        worker.allocate(100 + i * 10, i % 2 == 0).unwrap();
    }
    assert_eq!(pool.stats().unwrap().processes, 2);
    worker.abandon(); // as if SIGKILLed: no release ran
    assert_eq!(pool.stats().unwrap().processes, 1);
    let report = pool.reap().unwrap();
    assert_eq!(report.processes, 1);
    assert_eq!(report.references, 101);
    assert_eq!(report.blocks_freed, 100);
    let after = pool.stats().unwrap();
    assert_eq!(after.used_bytes, baseline, "back to the parent's own block");
    assert!(
        data(&pool, &shared).iter().all(|&b| b == 9),
        "the parent's block is intact"
    );
    assert_consistent(&pool);
    assert_eq!(
        pool.reap().unwrap().processes,
        0,
        "reaping twice is harmless"
    );
    pool.release(shared.offset, shared.generation).unwrap();
}

#[test]
fn blocks_dropped_before_death_stay_in_flight_for_the_receiver() {
    let parent = new_pool(4 * MIB);
    let worker = open(&parent);
    let result = worker.allocate(64, true).unwrap();
    fill(&worker, &result, 5);
    let h = handle(&worker, &result);
    worker.release(result.offset, result.generation).unwrap(); // worker GC
    worker.abandon(); // worker exits/dies
    parent.reap().unwrap();
    let got = parent.attach(&h).unwrap();
    assert!(data(&parent, &got).iter().all(|&b| b == 5));
    parent.release(got.offset, got.generation).unwrap();
    assert_eq!(parent.stats().unwrap().live_blocks, 0);
}

#[test]
fn a_dead_slot_is_reaped_when_reused() {
    let pool = new_pool(4 * MIB);
    let worker = open(&pool);
    let slot = worker.slot();
    worker.allocate(1000, false).unwrap();
    worker.abandon();
    let next = open(&pool);
    assert_eq!(next.slot(), slot, "the free slot is reused");
    assert_eq!(
        pool.stats().unwrap().live_blocks,
        0,
        "its previous owner's block was reaped"
    );
    assert_consistent(&pool);
}

#[test]
fn full_pool_reaps_dead_processes_before_failing() {
    let pool = new_pool(2 * MIB);
    let worker = open(&pool);
    worker.allocate(1500 * 1024, false).unwrap();
    worker.abandon();
    let b = pool
        .allocate(1500 * 1024, false)
        .expect("reaping the dead worker makes room");
    pool.release(b.offset, b.generation).unwrap();
}

#[test]
fn closing_releases_references_and_creator_unlinks() {
    let pool = new_shm_pool(4 * MIB);
    let name = pool.name().to_string();
    let user = open(&pool);
    let kept = user.allocate(100, false).unwrap();
    let _ = kept;
    user.close().unwrap();
    assert_eq!(pool.stats().unwrap().live_blocks, 0);
    assert!(segment_exists(&name));
    pool.close().unwrap();
    assert!(!segment_exists(&name));
    assert!(matches!(
        Pool::open(&name, PoolOptions::default()),
        Err(PoolError::SegmentNotFound { .. })
    ));
}

#[test]
fn large_freed_blocks_return_their_pages_and_are_reserved_again() {
    let pool = Pool::create(PoolOptions {
        capacity: Some(64 * MIB),
        punch_threshold: 4 * MIB,
        ..Default::default()
    })
    .unwrap();
    let big = pool.allocate(16 * MIB, false).unwrap();
    fill(&pool, &big, 1);
    let resident = || resident_bytes(&pool);
    assert!(resident() >= 16 * MIB);
    pool.release(big.offset, big.generation).unwrap();
    assert!(
        resident() < 4 * MIB,
        "pages returned: {} bytes resident",
        resident()
    );
    assert_consistent(&pool);
    let again = pool.allocate(16 * MIB, false).unwrap();
    fill(&pool, &again, 2);
    assert!(resident() >= 16 * MIB);
    pool.release(again.offset, again.generation).unwrap();
    // Small blocks keep their pages warm.
    let small = pool.allocate(MIB, false).unwrap();
    fill(&pool, &small, 3);
    let warm = resident();
    pool.release(small.offset, small.generation).unwrap();
    assert_eq!(resident(), warm);
}

#[test]
fn bad_capacities_and_names_are_refused() {
    let too_small = Pool::create(PoolOptions {
        capacity: Some(4096),
        ..Default::default()
    });
    assert!(matches!(too_small, Err(PoolError::InvalidCapacity { .. })));
    let (total, _) = arraypool_core::shm_filesystem_bytes().unwrap();
    let too_big = Pool::create(PoolOptions {
        capacity: Some(total + 4096),
        backing: Backing::Shm,
        ..Default::default()
    });
    assert!(matches!(too_big, Err(PoolError::InvalidCapacity { .. })));
    let beyond_layout = Pool::create(PoolOptions {
        capacity: Some((1 << 50) + 4096),
        ..Default::default()
    });
    assert!(matches!(
        beyond_layout,
        Err(PoolError::InvalidCapacity { .. })
    ));
    let bad_name = Pool::create(PoolOptions {
        name: Some("/etc/x".into()),
        capacity: Some(MIB),
        backing: Backing::Shm,
        ..Default::default()
    });
    assert!(matches!(bad_name, Err(PoolError::InvalidName { .. })));
    assert!(matches!(
        Pool::open("../../etc/passwd", PoolOptions::default()),
        Err(PoolError::InvalidName { .. })
    ));
}

#[test]
fn a_segment_that_is_not_a_pool_is_refused() {
    let name = arraypool_core::random_name().unwrap();
    let path = format!("/dev/shm/{name}");
    std::fs::write(&path, vec![0x5au8; 1 << 20]).unwrap();
    let got = Pool::open(&name, PoolOptions::default());
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(got, Err(PoolError::InvalidSegment { .. })),
        "{:?}",
        got.err()
    );
    // A real pool whose size was changed behind its back is refused too.
    let pool = new_shm_pool(2 * MIB);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{}", pool.name()))
        .unwrap();
    f.set_len(3 * MIB).unwrap();
    assert!(matches!(open_err(&pool), PoolError::InvalidSegment { .. }));
}

fn open_err(pool: &Pool) -> PoolError {
    Pool::open(pool.name(), PoolOptions::default())
        .err()
        .expect("open must fail")
}

#[test]
fn many_processes_fill_the_table_then_get_a_clear_error() {
    let pool = new_pool(4 * MIB);
    let mut others = Vec::new();
    loop {
        match Pool::open(pool.name(), PoolOptions::default()) {
            Ok(p) => others.push(p),
            Err(e) => {
                assert!(
                    matches!(e, PoolError::TooManyProcesses { max: 64 }),
                    "{e:?}"
                );
                break;
            }
        }
        assert!(others.len() < 64);
    }
    assert_eq!(others.len(), 63);
    assert_eq!(pool.stats().unwrap().processes, 64);
}

#[test]
fn threads_of_one_process_share_its_slot() {
    let pool = std::sync::Arc::new(new_pool(32 * MIB));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let b = pool.allocate(64 + (i * 37 + t) % 5000, i % 3 == 0).unwrap();
                    let h = handle(&pool, &b);
                    let again = pool.attach(&h).unwrap();
                    pool.release(b.offset, b.generation).unwrap();
                    pool.release(again.offset, again.generation).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_consistent(&pool);
    assert_eq!(pool.stats().unwrap().live_blocks, 0);
}

#[test]
fn share_makes_a_slice_without_marking_the_block_transferred() {
    let worker = new_pool(4 * MIB);
    let parent = open(&worker);
    let block = worker.allocate(1000, true).unwrap();
    let slice = Handle {
        byte_offset: 500,
        byte_length: 500,
        ..handle(&worker, &block)
    };
    worker.share(&slice).unwrap();
    assert_eq!(worker.held_references(), 2);
    let too_long = Handle {
        byte_offset: 600,
        byte_length: 500,
        ..slice.clone()
    };
    assert!(matches!(
        worker.share(&too_long),
        Err(PoolError::InvalidHandle { .. })
    ));
    assert!(
        matches!(parent.share(&slice), Err(PoolError::NotHeld { .. })),
        "share needs a held block"
    );
    worker.release(block.offset, block.generation).unwrap();
    worker.release(block.offset, block.generation).unwrap();
    assert_eq!(
        worker.stats().unwrap().in_flight_blocks,
        1,
        "still waits for its receiver"
    );
    let got = parent.attach(&slice).unwrap();
    parent.release(got.offset, got.generation).unwrap();
    assert_eq!(parent.stats().unwrap().live_blocks, 0);
}

#[test]
fn a_closed_attachment_refuses_work_but_stays_mapped() {
    let pool = new_pool(4 * MIB);
    let user = open(&pool);
    let b = user.allocate(100, false).unwrap();
    fill(&user, &b, 3);
    user.close().unwrap();
    user.close().unwrap(); // idempotent
    assert!(matches!(
        user.allocate(1, false),
        Err(PoolError::Closed { .. })
    ));
    assert_eq!(
        pool.stats().unwrap().live_blocks,
        0,
        "its references were released"
    );
    assert_eq!(pool.stats().unwrap().processes, 1);
    // Reading the old memory does not fault: the mapping is still there.
    assert_eq!(data(&user, &b).len(), 100);
}

#[test]
fn a_cold_block_reserved_whole_merges_with_a_warm_neighbour() {
    // Found in review: splitting a fully reserved cold block left two warm
    // free blocks side by side.
    let pool = Pool::create(PoolOptions {
        capacity: Some(16 * MIB),
        punch_threshold: 64 * 1024,
        ..Default::default()
    })
    .unwrap();
    let a = pool.allocate(256 * 1024, false).unwrap();
    let b = pool.allocate(256 * 1024, false).unwrap();
    pool.release(a.offset, a.generation).unwrap();
    pool.release(b.offset, b.generation).unwrap();
    assert_consistent(&pool);
    let c = pool.allocate(100 * 1024, false).unwrap();
    assert_consistent(&pool);
    pool.release(c.offset, c.generation).unwrap();
    assert_consistent(&pool);
}

#[test]
fn reaping_a_block_held_by_many_dead_processes_stays_within_the_journal() {
    // Found in review: one transaction per block overflowed the journal
    // once ~48 dead processes held the same block.
    let pool = new_pool(8 * MIB);
    let block = pool.allocate(1000, false).unwrap();
    let h = handle(&pool, &block);
    let others: Vec<Pool> = (0..60)
        .map(|_| {
            let other = open(&pool);
            other.attach(&h).unwrap();
            other
        })
        .collect();
    for other in others {
        other.abandon();
    }
    let report = pool.reap().unwrap();
    assert_eq!((report.processes, report.references), (60, 60));
    assert_consistent(&pool);
    pool.release(block.offset, block.generation).unwrap();
    assert_eq!(pool.stats().unwrap().live_blocks, 0);
}

#[test]
fn a_freed_block_of_the_same_size_is_reused_not_fresh_space() {
    // Found by the memory benchmark: TLSF's round-up skipped an exact fit
    // one class lower, so round after round took fresh (cold) space.
    let pool = Pool::create(PoolOptions {
        capacity: Some(64 * MIB),
        reserve_chunk: 4096,
        ..Default::default()
    })
    .unwrap();
    // Header included, a whole number of pages and not a size-class
    // boundary: no warm remainder forms, `a` stays an exact-size free block.
    let size = 5 * MIB + 3 * 4096 - 64;
    let a = pool.allocate(size, false).unwrap();
    let b = pool.allocate(size, false).unwrap();
    pool.release(a.offset, a.generation).unwrap();
    let c = pool.allocate(size, false).unwrap();
    assert_eq!(c.offset, a.offset, "the freed block was reused");
    for r in [b, c] {
        pool.release(r.offset, r.generation).unwrap();
    }
    assert_consistent(&pool);
}

#[test]
fn closing_gives_the_process_slot_back() {
    // Found in review: a closed attachment kept its liveness lock, so each
    // close + reopen used up one of the 64 slots for good.
    let pool = new_pool(4 * MIB);
    for _ in 0..200 {
        let user = open(&pool);
        user.allocate(100, false).unwrap();
        user.close().unwrap();
    }
    assert_eq!(pool.stats().unwrap().processes, 1);
    assert_eq!(pool.stats().unwrap().live_blocks, 0);
    let closed = open(&pool);
    closed.close().unwrap();
    assert!(
        matches!(closed.stats(), Err(PoolError::Closed { .. })),
        "a closed attachment takes no lock"
    );
}

#[test]
fn a_release_never_waits_for_a_busy_lock_it_is_queued_and_done_later() {
    let pool = new_pool(4 * MIB);
    let impatient = Pool::open(
        pool.name(),
        PoolOptions {
            lock_timeout: std::time::Duration::from_millis(50),
            ..Default::default()
        },
    )
    .unwrap();
    let block = impatient.allocate(100, false).unwrap();
    // Another thread holds the lock (paused inside an allocation) longer
    // than `impatient` is willing to wait.
    arraypool_core::testing::pause_inside_allocation(2000);
    let holder = std::sync::Arc::new(pool);
    let busy = {
        let holder = holder.clone();
        std::thread::spawn(move || {
            let b = holder.allocate(64, false).unwrap();
            holder.release(b.offset, b.generation).unwrap();
        })
    };
    while holder.lock_owner().is_none() {
        std::thread::yield_now();
    }
    // The pause stays on until the impatient release has failed: turned off
    // earlier, the holder could pass the pause point before reading it and
    // let go of the lock at once (a race this test had).
    impatient.release(block.offset, block.generation).unwrap();
    assert_eq!(impatient.queued_releases(), 1, "queued, not done");
    assert_eq!(impatient.held_references(), 0);
    assert_eq!(impatient.flush_releases(), 1, "the lock is still busy");
    arraypool_core::testing::pause_inside_allocation(0);
    busy.join().unwrap();
    assert_eq!(impatient.flush_releases(), 0, "done once the lock is free");
    assert_eq!(holder.stats().unwrap().live_blocks, 0);
    assert_consistent(&holder);
}

#[test]
fn handles_into_never_used_memory_are_invalid_and_check_does_not_touch_it() {
    let pool = new_pool(1 << 30);
    let block = pool.allocate(1000, false).unwrap();
    let far = Handle {
        offset: 512 * MIB,
        ..handle(&pool, &block)
    };
    assert!(matches!(
        pool.attach(&far),
        Err(PoolError::InvalidHandle { .. })
    ));
    assert_consistent(&pool);
    let resident = resident_bytes(&pool);
    assert!(
        resident < 8 * MIB,
        "a 1 GiB pool after check() holds {resident} bytes"
    );
    pool.release(block.offset, block.generation).unwrap();
}

#[test]
fn a_named_segment_that_others_may_read_or_that_is_not_ours_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let pool = new_shm_pool(2 * MIB);
    let path = format!("/dev/shm/{}", pool.name());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = open_err(&pool);
    assert!(
        matches!(&refused, PoolError::InvalidSegment { reason } if reason.contains("mode 644")),
        "{refused:?}"
    );
    assert!(
        arraypool_core::inspect(pool.name()).is_err(),
        "the CLI refuses it too"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ok = Pool::open(pool.name(), PoolOptions::default()).expect("ours again");
    ok.close().unwrap();
}
