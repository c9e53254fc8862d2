//! Crash consistency, swept over every write. A child process runs one pool
//! operation with `testing::crash_after_journaled_writes(n)` armed, so it is
//! SIGKILLed right after its n-th journaled write, for n = 1, 2, 3, ...
//! until the operation completes without dying. After each death the
//! parent takes the lock over (rolling the half-done transaction back),
//! reaps the dead child, and requires a pool that passes `check()`, whose
//! `used_bytes` is exactly the parent's own blocks, whose data is intact,
//! and which still allocates.
//!
//! Each crash point starts from a freshly prepared pool, so one point's
//! recovery cannot hide another's damage.

mod common;
#[path = "common/harness.rs"]
mod harness;

use std::time::Duration;

use arraypool_core::layout::SegmentHeader;
use arraypool_core::{testing, Backing, BlockRef, Handle, Pool, PoolOptions};
use common::*;
use harness::{read_segment_word, Exit, Running};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const ENTRY: &str = "crash_child_entry";
/// Far more journaled writes than any operation here makes (one
/// transaction holds at most 96); reaching it means a sweep never ends.
const MAX_CRASH_POINTS: u64 = 2000;
/// Only to turn a hung child into a failure; a child takes milliseconds.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// Bytes a block of `len` data bytes occupies: its header plus the data,
/// rounded up to 64 (a split never leaves a smaller tail).
fn block_size(len: u64) -> u64 {
    (len + 64).div_ceil(64) * 64
}

fn shm_options() -> PoolOptions {
    PoolOptions {
        capacity: Some(16 * MIB),
        backing: Backing::Shm,
        ..Default::default()
    }
}

fn encode(h: &Handle) -> String {
    format!("{}:{}:{}", h.offset, h.generation, h.byte_length)
}

fn decode(pool: &str, s: &str) -> Handle {
    let f: Vec<u64> = s.split(':').map(|x| x.parse().expect("number")).collect();
    Handle {
        segment: pool.into(),
        offset: f[0],
        generation: f[1],
        byte_offset: 0,
        byte_length: f[2],
    }
}

/// A pool set up for one crash point: the parent's own blocks (which must
/// come through every crash untouched) and what the child needs to know.
struct Prepared {
    parent: Pool,
    own: Vec<(BlockRef, u8)>,
    env: Vec<(&'static str, String)>,
    /// A number the scenario checks once the operation completed.
    expect: u64,
}

impl Prepared {
    fn new(options: PoolOptions) -> Prepared {
        Prepared {
            parent: Pool::create(options).expect("create the parent's pool"),
            own: Vec::new(),
            env: Vec::new(),
            expect: 0,
        }
    }

    /// A block the parent allocates, fills with `byte` and keeps.
    fn keep(&mut self, len: u64, byte: u8) -> BlockRef {
        let b = self.parent.allocate(len, false).expect("parent allocates");
        fill(&self.parent, &b, byte);
        self.own.push((b, byte));
        b
    }
}

/// Runs `op` in a child dying after its 1st, 2nd, ... journaled write
/// until it completes; checks the parent's recovery after each death and
/// `on_done` after completion. Returns the number of crash points swept.
fn sweep(op: &str, prepare: impl Fn() -> Prepared, on_done: impl Fn(&Prepared, &str)) -> u64 {
    for n in 1..=MAX_CRASH_POINTS {
        let prepared = prepare();
        let mut env = prepared.env.clone();
        env.push(("ARRAYPOOL_CRASH_ROLE", op.to_string()));
        env.push(("ARRAYPOOL_CRASH_POOL", prepared.parent.name().to_string()));
        env.push(("ARRAYPOOL_CRASH_AFTER", n.to_string()));
        let done = Running::spawn(ENTRY, &env, CHILD_DEADLINE).wait();
        let completed = match (done.exit, done.line("DONE")) {
            (Exit::Signal(s), _) if s == nix::sys::signal::Signal::SIGKILL as i32 => false,
            (Exit::Code(0), Some(_)) => true,
            (other, _) => panic!(
                "{op}, crash point {n}: the child ended with {other:?}, expected SIGKILL or DONE\n\
                 stdout:\n{}\nstderr:\n{}",
                done.stdout,
                done.stderr_tail(30)
            ),
        };
        if completed {
            // Before the recovery checks, whose allocation could undo
            // what the operation did (e.g. reserve punched pages again).
            on_done(&prepared, &done.line("DONE").unwrap_or_default());
        }
        verify_recovery(op, n, &prepared, !completed);
        if completed {
            let swept = n - 1;
            println!(
                "crash points: {op}: {swept} swept (the operation makes {swept} journaled writes)"
            );
            return swept;
        }
    }
    panic!("{op}: still crashing after {MAX_CRASH_POINTS} journaled writes");
}

/// What the parent must find after the child died at crash point `n` (or,
/// `crashed == false`, completed and closed).
fn verify_recovery(op: &str, n: u64, p: &Prepared, crashed: bool) {
    let ctx = format!("{op}, crash point {n}");
    let pool = &p.parent;
    // The child was killed inside a critical section (journaled writes
    // happen only under the lock), so this first operation takes it over.
    let first = pool
        .stats()
        .unwrap_or_else(|e| panic!("{ctx}: stats after the child's death: {e}"));
    assert_eq!(
        first.lock_takeovers,
        u64::from(crashed),
        "{ctx}: a crash inside the lock is taken over exactly once"
    );
    pool.reap().unwrap_or_else(|e| panic!("{ctx}: reap: {e}"));
    let report = pool.check().unwrap_or_else(|e| panic!("{ctx}: check: {e}"));
    assert_eq!(report.violation, None, "{ctx}: heap invariant broken");
    let s = pool.stats().expect("stats");
    let own_bytes: u64 = p.own.iter().map(|(b, _)| block_size(b.data_len)).sum();
    assert_eq!(
        s.used_bytes, own_bytes,
        "{ctx}: only the parent's own blocks are left"
    );
    assert_eq!(s.live_blocks, p.own.len() as u64, "{ctx}: live blocks");
    assert_eq!(s.in_flight_blocks, 0, "{ctx}: in-flight blocks");
    assert_eq!(s.processes, 1, "{ctx}: the dead child was reaped");
    for (i, (b, byte)) in p.own.iter().enumerate() {
        assert!(
            data(pool, b).iter().all(|x| x == byte),
            "{ctx}: the parent's block {i} at {} was overwritten",
            b.offset
        );
    }
    // Still a working pool, not just a consistent one.
    let b = pool
        .allocate(5000, false)
        .unwrap_or_else(|e| panic!("{ctx}: allocate after recovery: {e}"));
    fill(pool, &b, 0xee);
    pool.release(b.offset, b.generation).expect("release");
    assert_eq!(pool.check().expect("check").violation, None, "{ctx}");
}

/// Waits until every holder of a block other than `pool`'s process is seen
/// dead: a process that another test thread forks at the moment a pool's
/// fd is closed holds a copy of it (and so its liveness lock) until it
/// execs, and a child registering then would take another slot.
fn wait_until_holders_dead(pool: &Pool) {
    let deadline = std::time::Instant::now() + CHILD_DEADLINE;
    loop {
        let list = pool.blocks(100).expect("blocks");
        let alive = list
            .blocks
            .iter()
            .flat_map(|b| &b.holders)
            .any(|h| h.alive && h.slot != pool.slot());
        if !alive {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a dead holder's liveness lock stays held"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn reserved_until(pool: &Pool) -> u64 {
    read_segment_word(
        pool.name(),
        std::mem::offset_of!(SegmentHeader, reserved_until) as u64,
    )
}

/// The child side. Ignored when run directly; only `sweep` selects it.
#[test]
#[ignore]
fn crash_child_entry() {
    let Ok(role) = std::env::var("ARRAYPOOL_CRASH_ROLE") else {
        return;
    };
    let name = std::env::var("ARRAYPOOL_CRASH_POOL").expect("pool name");
    let n: u64 = std::env::var("ARRAYPOOL_CRASH_AFTER")
        .expect("crash point")
        .parse()
        .expect("a number");
    let mut options = PoolOptions::default();
    match role.as_str() {
        // Reserve more than the request, so the cold block splits three ways.
        "allocate-cold" => options.reserve_chunk = 64 * KIB,
        "release-punch" => options.punch_threshold = 256 * KIB,
        _ => {}
    }
    let pool = Pool::open(&name, options).expect("child opens the pool");
    let arm = || testing::crash_after_journaled_writes(n);
    // Once the operation is done nothing more may count as a crash point.
    let disarm = || testing::crash_after_journaled_writes(0);
    match role.as_str() {
        "allocate-cold" | "allocate-warm" => {
            let len = if role == "allocate-cold" {
                100 * KIB
            } else {
                1000
            };
            arm();
            let b = pool.allocate(len, false).expect("allocate");
            disarm();
            fill(&pool, &b, 0x77);
            println!("DONE {}", b.offset);
        }
        "release-coalesce" => {
            let handle = std::env::var("ARRAYPOOL_CRASH_HANDLE").expect("handle");
            let b = pool.attach(&decode(&name, &handle)).expect("attach");
            assert!(data(&pool, &b).iter().all(|&x| x == 0x5b), "B's data");
            let before = pool.check().expect("check");
            arm();
            pool.release(b.offset, b.generation).expect("release");
            disarm();
            let after = pool.check().expect("check");
            assert_eq!(after.violation, None);
            assert_eq!(
                (after.blocks, after.free_blocks),
                (before.blocks - 2, before.free_blocks - 1),
                "the block merged with both free neighbours into one"
            );
            println!("DONE");
        }
        "reap" => {
            arm();
            let r = pool.reap().expect("reap");
            disarm();
            println!("DONE {} {} {}", r.processes, r.references, r.blocks_freed);
        }
        "release-cache" => {
            let b = pool.allocate(1000, false).expect("allocate");
            fill(&pool, &b, 0x61);
            arm();
            pool.release(b.offset, b.generation).expect("release");
            disarm();
            println!("DONE {}", pool.cached().1);
        }
        "allocate-cached" => {
            let b = pool.allocate(1000, false).expect("allocate");
            pool.release(b.offset, b.generation).expect("release");
            arm();
            let again = pool.allocate(1000, false).expect("allocate");
            disarm();
            fill(&pool, &again, 0x62);
            println!("DONE {} {}", again.offset == b.offset, pool.cached().1);
        }
        "release-punch" => {
            let b = pool.allocate(512 * KIB, false).expect("allocate");
            fill(&pool, &b, 0x66);
            arm();
            pool.release(b.offset, b.generation).expect("release");
            disarm();
            println!("DONE");
        }
        other => panic!("unknown role {other}"),
    }
    pool.close().expect("close");
}

#[test]
fn allocating_a_fresh_cold_block_survives_a_crash_after_any_write() {
    let swept = sweep(
        "allocate-cold",
        || {
            // Reserving page by page leaves the parent only a sliver of
            // warm space: the child's 100 KiB must come from the cold rest.
            let mut p = Prepared::new(PoolOptions {
                reserve_chunk: 4096,
                ..shm_options()
            });
            p.keep(1000, 0x11);
            p.expect = reserved_until(&p.parent);
            p
        },
        |p, done| {
            let offset: u64 = done["DONE ".len()..].parse().expect("offset");
            assert!(
                offset + block_size(100 * KIB) > p.expect,
                "the block reaches into space that was cold"
            );
            assert!(
                reserved_until(&p.parent) > p.expect,
                "the allocation reserved fresh pages"
            );
        },
    );
    assert!(swept > 0);
}

#[test]
fn allocating_from_a_warm_free_block_with_a_split_survives_a_crash_after_any_write() {
    let swept = sweep(
        "allocate-warm",
        || {
            let mut p = Prepared::new(shm_options());
            p.keep(1000, 0x21);
            let a = p.parent.allocate(64 * KIB, false).expect("allocate");
            p.keep(1000, 0x22);
            p.parent.release(a.offset, a.generation).expect("release");
            // The smallest free block that fits: it is reused, and split.
            p.expect = a.offset;
            p
        },
        |p, done| {
            assert_eq!(
                done,
                format!("DONE {}", p.expect),
                "the freed warm block was reused"
            );
        },
    );
    assert!(swept > 0);
}

#[test]
fn a_free_coalescing_with_both_neighbours_survives_a_crash_after_any_write() {
    let swept = sweep(
        "release-coalesce",
        || {
            // [kept | A free | B in flight | C free | kept]: the child
            // receives B and frees it, merging A, B and C.
            let mut p = Prepared::new(shm_options());
            p.keep(1000, 0x31);
            let a = p.parent.allocate(20 * KIB, false).expect("allocate A");
            // Larger than a cached block, so the child's release frees it.
            let b = p.parent.allocate(70 * KIB, true).expect("allocate B");
            fill(&p.parent, &b, 0x5b);
            let c = p.parent.allocate(20 * KIB, false).expect("allocate C");
            p.keep(1000, 0x32);
            for x in [a, c, b] {
                p.parent.release(x.offset, x.generation).expect("release");
            }
            // A and C went to the parent's small-block cache: free them.
            assert_eq!(
                p.parent.drain_cache().expect("drain"),
                2 * block_size(20 * KIB)
            );
            assert_eq!(p.parent.stats().expect("stats").in_flight_blocks, 1);
            p.env
                .push(("ARRAYPOOL_CRASH_HANDLE", encode(&handle(&p.parent, &b))));
            p
        },
        |_, _| {},
    );
    assert!(swept > 0);
}

#[test]
fn reaping_a_dead_process_survives_a_crash_after_any_write() {
    let swept = sweep(
        "reap",
        || {
            let mut p = Prepared::new(shm_options());
            let shared = p.keep(2000, 0x41);
            // Slot 1 is taken and given back so that the child registers
            // there, below the victim's slot 2: registering into a dead
            // slot would reap it before the crash point is armed.
            let placeholder = open(&p.parent);
            let victim = open(&p.parent);
            assert_eq!((placeholder.slot(), victim.slot()), (1, 2));
            victim
                .attach(&handle(&p.parent, &shared))
                .expect("victim attaches the parent's block");
            let mut blocks = Vec::new();
            for (len, transfer_required) in [
                (5000, false),
                (300, true),
                (70 * KIB, false),
                (1000, false),
                (100, true),
            ] {
                blocks.push(victim.allocate(len, transfer_required).expect("allocate"));
            }
            // A free gap among the victim's blocks: reaping coalesces into it.
            victim
                .release(blocks[3].offset, blocks[3].generation)
                .expect("release");
            victim.drain_cache().expect("drain the victim's cache");
            p.keep(1000, 0x42);
            placeholder.close().expect("close");
            drop(placeholder);
            victim.abandon(); // dies holding 5 references
            p
        },
        |_, done| {
            assert_eq!(
                done, "DONE 1 5 4",
                "one dead process, 5 references dropped, its 4 own blocks freed"
            );
        },
    );
    assert!(swept > 0);
}

#[test]
fn caching_a_released_block_survives_a_crash_after_any_write() {
    let swept = sweep(
        "release-cache",
        || {
            let mut p = Prepared::new(shm_options());
            p.keep(1000, 0x61);
            p
        },
        |_, done| assert_eq!(done, "DONE 1", "the released block was cached"),
    );
    assert!(swept > 0);
}

#[test]
fn reusing_a_cached_block_survives_a_crash_after_any_write() {
    let swept = sweep(
        "allocate-cached",
        || {
            let mut p = Prepared::new(shm_options());
            p.keep(1000, 0x62);
            p
        },
        |_, done| {
            assert_eq!(
                done, "DONE true 0",
                "the allocation took the cached block back"
            );
        },
    );
    assert!(swept > 0);
}

#[test]
fn reaping_a_dead_process_with_cached_blocks_survives_a_crash_after_any_write() {
    let swept = sweep(
        "reap",
        || {
            let p = Prepared::new(shm_options());
            // The child registers in slot 1 (see the test above).
            let placeholder = open(&p.parent);
            let victim = open(&p.parent);
            let held = victim.allocate(3000, false).expect("allocate");
            for len in [100, 5000, 20 * KIB] {
                let b = victim.allocate(len, false).expect("allocate");
                victim.release(b.offset, b.generation).expect("release");
            }
            assert_eq!(victim.cached().1, 3, "the victim caches its 3 blocks");
            let _ = held;
            placeholder.close().expect("close");
            drop(placeholder);
            victim.abandon(); // dies holding 1 block and 3 cached ones
            wait_until_holders_dead(&p.parent);
            p
        },
        |_, done| {
            assert_eq!(
                done, "DONE 1 4 4",
                "one dead process, its 4 records dropped, its block and its 3 cached ones freed"
            );
        },
    );
    assert!(swept > 0);
}

#[test]
fn a_punching_free_survives_a_crash_after_any_write() {
    let swept = sweep(
        "release-punch",
        || {
            let mut p = Prepared::new(shm_options());
            p.keep(1000, 0x51);
            p.expect = resident_bytes(&p.parent);
            p
        },
        |p, _| {
            // The child's 512 KiB came from reserved (resident) pages.
            let now = resident_bytes(&p.parent);
            assert!(
                now + 256 * KIB <= p.expect,
                "the freed block's pages were returned: {} -> {now} bytes resident",
                p.expect
            );
        },
    );
    // Mark releasing (one transaction), punch, then free (another).
    assert!(swept >= 2, "{swept}");
}
