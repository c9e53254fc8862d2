//! Corruption fuzzer: a pool must survive any garbage in its segment.
//!
//! A real named pool is brought into a realistic state (four processes'
//! blocks of many sizes, free blocks warm and punched, shared blocks,
//! blocks in flight) and its segment is captured. Each trial copies it to
//! a fresh `/dev/shm/arraypool-fuzz-<random>`, overwrites 1-8 of its 64-bit
//! words (header fields, journal, process table, TLSF bitmaps and list
//! heads, block-start bitmap, block headers), and lets a child process open
//! the copy and use it: attach every known block, read and write every
//! byte of each view, allocate, release, stats, check, reap, close. Every
//! operation must succeed or return a typed `PoolError`: a child that dies
//! of a signal, panics, hangs, or gets a view outside its block fails the
//! test. The child is a separate process so that a crash is observed, not
//! fatal.
//!
//! Environment:
//! - `ARRAYPOOL_FUZZ_TRIALS`: trials (default 1000, ~10 s on 2 cores);
//! - `ARRAYPOOL_FUZZ_SEED`: the seed (printed; decimal or 0x-hex);
//! - `ARRAYPOOL_FUZZ_TRIAL`: run only this trial of that seed (reproduce);
//! - `ARRAYPOOL_FUZZ_WORDS`: most words overwritten per trial (default 8;
//!   1 attributes each failure to a single field);
//! - `ARRAYPOOL_FUZZ_JOBS`: children run at once (default 2);
//! - `ARRAYPOOL_FUZZ_SHOW`: failures printed in full (default 5), with
//!   the last `ARRAYPOOL_FUZZ_TAIL` lines of the child's stderr (default 6);
//! - `ARRAYPOOL_FUZZ_STRICT=0`: aliasing (two live views over the same
//!   bytes, or the pool writing into a held view) is only counted; by
//!   default it fails the test like a crash.

mod common;
#[path = "common/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::mem::offset_of;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use arraypool_core::layout::*;
use arraypool_core::{Backing, BlockRef, Handle, Pool, PoolError, PoolOptions};
use common::fill;
use harness::{signal_name, Exit, Finished, Rng, Running};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const CAPACITY: u64 = 4 * MIB;
const ENTRY: &str = "fuzz_child_entry";
const DEFAULT_TRIALS: usize = 1000;
/// A child needs milliseconds; only a loop that never ends reaches this.
const TRIAL_DEADLINE: Duration = Duration::from_secs(10);
/// The child's lock timeout: a lock word naming a live owner must not
/// stall it for the default 10 s.
const CHILD_LOCK_TIMEOUT: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------
// The template: a realistic segment, captured.

/// One block of the captured heap, as its header said.
#[derive(Debug, Clone, Copy)]
struct TBlock {
    offset: u64,
    size: u64,
    tag: u64,
    generation: u64,
    holders: u64,
    data_len: u64,
}

impl TBlock {
    fn used(&self) -> bool {
        self.tag & TAG_MASK == TAG_USED
    }
}

struct Template {
    bytes: Vec<u8>,
    geometry: Geometry,
    /// Every block, in physical order.
    blocks: Vec<TBlock>,
    /// Non-empty free lists: (fl, sl).
    lists: Vec<(usize, usize)>,
    reserved_until: u64,
    next_generation: u64,
}

fn word(bytes: &[u8], offset: u64) -> u64 {
    let at = offset as usize;
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn head_offset(fl: usize, sl: usize) -> u64 {
    (offset_of!(SegmentHeader, free_heads) + 8 * (SL_COUNT * fl + sl)) as u64
}

fn slot_offset(slot: usize, field: usize) -> u64 {
    (offset_of!(SegmentHeader, processes) + 64 * slot + field) as u64
}

/// Builds the pool state the trials corrupt and captures its segment.
/// Deterministic (offsets and generations do not depend on the seed), so a
/// seed reproduces a trial on any run.
fn build_template() -> Template {
    let options = |punch_threshold| PoolOptions {
        capacity: Some(CAPACITY),
        backing: Backing::Shm,
        // Above every size below, so each reserves a chunk and leaves a warm rest.
        reserve_chunk: MIB,
        punch_threshold,
        ..Default::default()
    };
    let creator = Pool::create(options(256 * MIB)).expect("create the template pool");
    let name = creator.name().to_string();
    // Keeps the file readable after the creator's close unlinks its name.
    let mut file = File::open(format!("/dev/shm/{name}")).expect("open the segment file");
    let open = |punch| Pool::open(&name, options(punch)).expect("open the template pool");
    // p1 punches what it frees from 128 KiB: cold free blocks mid-heap.
    let others = [open(128 * KIB), open(256 * MIB), open(256 * MIB)];
    let procs: Vec<&Pool> = std::iter::once(&creator).chain(others.iter()).collect();
    let handle = |b: &BlockRef| Handle {
        segment: name.clone(),
        offset: b.offset,
        generation: b.generation,
        byte_offset: 0,
        byte_length: b.data_len,
    };
    const SIZES: [u64; 12] = [
        0, 1, 63, 64, 100, 1000, 4096, 5000, 20_000, 70_000, 150_000, 300_000,
    ];
    let mut blocks: Vec<(usize, BlockRef)> = Vec::new();
    for round in 0..6 {
        for (k, p) in procs.iter().enumerate() {
            let len = SIZES[(round * 5 + k * 3) % SIZES.len()];
            // Transfer required on 2 of 5; with the attach and release
            // patterns below some of these end up in flight.
            let transfer_required = matches!(blocks.len() % 5, 1 | 2);
            let b = p.allocate(len, transfer_required).expect("allocate");
            fill(p, &b, blocks.len() as u8 + 1);
            blocks.push((k, b));
        }
    }
    // Shared blocks: another process attaches every third one.
    for (owner, b) in blocks.iter().step_by(3) {
        procs[(owner + 1) % procs.len()]
            .attach(&handle(b))
            .expect("attach");
    }
    // Every fourth block is dropped by its allocator: freed, still held by
    // its attacher, or in flight (transfer required, never attached).
    for (owner, b) in blocks.iter().skip(1).step_by(4) {
        procs[*owner]
            .release(b.offset, b.generation)
            .expect("release");
    }
    // A punched (cold) free block between used ones.
    let big = procs[1].allocate(300_000, false).expect("allocate");
    procs[1].allocate(1000, false).expect("allocate");
    procs[1]
        .release(big.offset, big.generation)
        .expect("release");
    // The creator leaves properly (slot 0 free, its blocks released); the
    // others are captured still registered, as if they had died: in the
    // copies nobody holds their liveness locks.
    creator.close().expect("close the creator");
    let mut bytes = Vec::with_capacity(CAPACITY as usize);
    file.read_to_end(&mut bytes).expect("read the segment");
    drop(others);
    drop(creator);
    let template = parse_template(bytes);
    check_template(&template);
    template
}

fn parse_template(bytes: Vec<u8>) -> Template {
    let geometry = Geometry::for_capacity(CAPACITY).expect("geometry");
    let mut blocks = Vec::new();
    let mut offset = geometry.heap_start;
    while offset < geometry.heap_end {
        let f = |field: usize| word(&bytes, offset + field as u64);
        let b = TBlock {
            offset,
            size: f(offset_of!(BlockHeader, size)),
            tag: f(offset_of!(BlockHeader, tag)),
            generation: f(offset_of!(BlockHeader, generation)),
            holders: f(offset_of!(BlockHeader, holders)),
            data_len: f(offset_of!(BlockHeader, data_len)),
        };
        assert!(
            b.size >= 64 && b.size.is_multiple_of(64),
            "template block {b:?}"
        );
        blocks.push(b);
        offset += b.size;
    }
    assert_eq!(
        offset, geometry.heap_end,
        "the template's blocks tile the heap"
    );
    let mut lists = Vec::new();
    for fl in 0..FL_COUNT {
        for sl in 0..SL_COUNT {
            if word(&bytes, head_offset(fl, sl)) != NONE {
                lists.push((fl, sl));
            }
        }
    }
    let h = |field: usize| word(&bytes, field as u64);
    Template {
        reserved_until: h(offset_of!(SegmentHeader, reserved_until)),
        next_generation: h(offset_of!(SegmentHeader, next_generation)),
        bytes,
        geometry,
        blocks,
        lists,
    }
}

/// The state is as varied as claimed (a guard against a setup change that
/// silently makes the fuzzer tame).
fn check_template(t: &Template) {
    let used: Vec<&TBlock> = t.blocks.iter().filter(|b| b.used()).collect();
    let count = |f: &dyn Fn(&TBlock) -> bool| t.blocks.iter().filter(|b| f(b)).count();
    assert!(used.len() >= 12, "used blocks: {}", used.len());
    assert!(count(&|b| !b.used()) >= 4, "free blocks");
    assert!(count(&|b| b.used() && b.holders == 0) >= 1, "in flight");
    assert!(count(&|b| b.holders.count_ones() >= 2) >= 1, "shared");
    // Freed small blocks kept in the (dead) processes' caches: reaping
    // must free them.
    assert!(
        count(&|b| b.used() && b.tag & FLAG_CACHED != 0) >= 1,
        "cached"
    );
    assert!(
        count(&|b| !b.used()
            && b.tag & FLAG_UNRESERVED != 0
            && b.offset + b.size < t.geometry.heap_end)
            >= 1,
        "a cold free block mid-heap"
    );
    assert!(
        t.lists.len() >= 3,
        "non-empty free lists: {}",
        t.lists.len()
    );
    let state = |k| word(&t.bytes, slot_offset(k, offset_of!(ProcessSlot, state)));
    assert_eq!(
        (state(0), state(1), state(2), state(3)),
        (SLOT_FREE, SLOT_ACTIVE, SLOT_ACTIVE, SLOT_ACTIVE)
    );
}

// ---------------------------------------------------------------------------
// Mutations.

#[derive(Debug, Clone)]
struct Mutation {
    offset: u64,
    /// What was overwritten, e.g. "block#7(used@16384).size".
    field: String,
    /// The field's kind, for grouping: "block.size", "free_heads", ...
    kind: &'static str,
    old: u64,
    new: u64,
}

impl std::fmt::Display for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:#x} -> {:#x}", self.field, self.old, self.new)
    }
}

/// One of the listed values. They are all evaluated first (they may use
/// `rng` too), then one is picked.
macro_rules! one_of {
    ($rng:expr, [$($value:expr),* $(,)?]) => {{
        let choices = [$($value),*];
        *$rng.pick(&choices)
    }};
}

/// Plausible offsets: block starts, their interiors, the heap's ends, the
/// header, unaligned ones.
fn some_offset(t: &Template, rng: &mut Rng) -> u64 {
    let b = *rng.pick(&t.blocks);
    let g = &t.geometry;
    match rng.below(12) {
        0..=3 => b.offset,
        4 => b.offset + 64,
        5 => b.offset + (b.size / 2) / 64 * 64,
        6 => g.heap_start,
        7 => g.heap_end,
        8 => g.heap_end - 64,
        9 => one_of!(rng, [0, 64, g.bitmap_offset, g.capacity, g.capacity + 64]),
        10 => t.reserved_until,
        _ => b.offset + 8,
    }
}

fn generic_value(t: &Template, rng: &mut Rng, old: u64) -> u64 {
    match rng.below(12) {
        0 => rng.next_u64(),
        1 => old.wrapping_add(1),
        2 => old.wrapping_sub(1),
        3 => 0,
        4 => u64::MAX,
        5 => (1u64 << (32 + rng.below(31))) + rng.below(4096),
        6 | 7 => some_offset(t, rng),
        8 => old ^ (1u64 << rng.below(64)),
        9 => old.wrapping_add(64),
        10 => old.wrapping_sub(64),
        _ => rng.below(256),
    }
}

const BLOCK_FIELDS: [(&str, usize, u64); 8] = [
    ("block.size", offset_of!(BlockHeader, size), 20),
    ("block.prev_phys", offset_of!(BlockHeader, prev_phys), 12),
    ("block.tag", offset_of!(BlockHeader, tag), 15),
    ("block.generation", offset_of!(BlockHeader, generation), 10),
    ("block.holders", offset_of!(BlockHeader, holders), 12),
    ("block.data_len", offset_of!(BlockHeader, data_len), 12),
    ("block.next_free", offset_of!(BlockHeader, next_free), 10),
    ("block.prev_free", offset_of!(BlockHeader, prev_free), 9),
];

fn mutate_block(t: &Template, rng: &mut Rng) -> Vec<Mutation> {
    let index = rng.below(t.blocks.len() as u64) as usize;
    let b = t.blocks[index];
    let weights: Vec<u64> = BLOCK_FIELDS.iter().map(|f| f.2).collect();
    let (kind, field, _) = BLOCK_FIELDS[rng.weighted(&weights)];
    let offset = b.offset + field as u64;
    let old = word(&t.bytes, offset);
    let other = *rng.pick(&t.blocks);
    let new = if rng.chance(45) {
        generic_value(t, rng, old)
    } else {
        match kind {
            "block.size" => one_of!(
                rng,
                [
                    other.size,
                    t.geometry.heap_end - b.offset,
                    t.geometry.heap_end - b.offset + 64,
                    b.size * 2,
                    // Grown over its physical successor exactly (the
                    // review's aliasing route: same class, exact fit).
                    t.blocks
                        .iter()
                        .find(|n| n.offset == b.offset + b.size)
                        .map_or(b.size * 2, |n| b.size + n.size),
                    b.size + 64,
                    b.size.saturating_sub(64),
                    64,
                    32
                ]
            ),
            "block.prev_phys" => one_of!(rng, [other.offset, b.offset, b.offset.wrapping_sub(64)]),
            "block.tag" => {
                let flags = rng.below(16);
                one_of!(
                    rng,
                    [
                        TAG_USED | flags,
                        TAG_FREE | flags,
                        TAG_FREE,
                        TAG_USED,
                        old | FLAG_RELEASING,
                        old ^ FLAG_TRANSFERRED,
                        old ^ FLAG_TRANSFER_REQUIRED,
                        old ^ FLAG_UNRESERVED
                    ]
                )
            }
            "block.generation" => one_of!(
                rng,
                [
                    other.generation,
                    t.next_generation,
                    t.next_generation - 1,
                    0
                ]
            ),
            "block.holders" => one_of!(
                rng,
                [
                    rng.next_u64(),
                    u64::MAX,
                    1u64 << rng.below(64),
                    old | 1,
                    old | 1 << 5,
                    0
                ]
            ),
            "block.data_len" => one_of!(
                rng,
                [b.size - 64 + 1, b.size, u64::MAX, 1 << 40, old + 1, 0]
            ),
            _ => {
                let free: Vec<&TBlock> = t.blocks.iter().filter(|x| !x.used()).collect();
                let used: Vec<&TBlock> = t.blocks.iter().filter(|x| x.used()).collect();
                one_of!(
                    rng,
                    [
                        rng.pick(&free).offset,
                        rng.pick(&used).offset,
                        other.offset + 64,
                        b.offset,
                        NONE
                    ]
                )
            }
        }
    };
    let state = if b.used() { "used" } else { "free" };
    vec![Mutation {
        offset,
        field: format!("block#{index}({state}@{}).{}", b.offset, &kind[6..]),
        kind,
        old,
        new,
    }]
}

fn mutate_tlsf(t: &Template, rng: &mut Rng) -> Vec<Mutation> {
    let used: Vec<&TBlock> = t.blocks.iter().filter(|x| x.used()).collect();
    let free: Vec<&TBlock> = t.blocks.iter().filter(|x| !x.used()).collect();
    let (kind, field, offset) = match rng.weighted(&[50, 15, 20, 15]) {
        0 | 1 => {
            let (fl, sl) = if rng.chance(77) {
                *rng.pick(&t.lists)
            } else {
                (
                    rng.below(FL_COUNT as u64) as usize,
                    rng.below(SL_COUNT as u64) as usize,
                )
            };
            (
                "free_heads",
                format!("free_heads[{fl}][{sl}]"),
                head_offset(fl, sl),
            )
        }
        2 => {
            let fl = if rng.chance(70) {
                rng.pick(&t.lists).0
            } else {
                rng.below(FL_COUNT as u64) as usize
            };
            (
                "sl_bitmap",
                format!("sl_bitmap[{fl}]"),
                (offset_of!(SegmentHeader, sl_bitmap) + 8 * fl) as u64,
            )
        }
        _ => (
            "fl_bitmap",
            "fl_bitmap".to_string(),
            offset_of!(SegmentHeader, fl_bitmap) as u64,
        ),
    };
    let old = word(&t.bytes, offset);
    let new = if rng.chance(35) {
        generic_value(t, rng, old)
    } else if kind == "free_heads" {
        let other = *rng.pick(&t.blocks);
        one_of!(
            rng,
            [
                NONE,
                rng.pick(&free).offset,
                rng.pick(&used).offset,
                other.offset + 64,
                old + 64,
                t.geometry.heap_end
            ]
        )
    } else {
        one_of!(
            rng,
            [
                old ^ (1 << rng.below(SL_COUNT as u64)),
                old ^ (1 << rng.below(FL_COUNT as u64)),
                old | (1 << (FL_COUNT as u64 + rng.below(64 - FL_COUNT as u64))),
                0,
                u64::MAX
            ]
        )
    };
    vec![Mutation {
        offset,
        field,
        kind,
        old,
        new,
    }]
}

fn mutate_block_bitmap(t: &Template, rng: &mut Rng) -> Vec<Mutation> {
    let g = &t.geometry;
    // A unit of the used heap: a block start or one just inside a block.
    let b = *rng.pick(&t.blocks);
    let unit = if rng.chance(60) {
        b.offset / 64
    } else {
        (g.heap_start + rng.below(t.reserved_until - g.heap_start)) / 64
    };
    let offset = g.bitmap_offset + unit / 64 * 8;
    let old = word(&t.bytes, offset);
    let new = match rng.below(6) {
        0 | 1 => old ^ (1 << (unit % 64)),
        2 => old ^ (1 << rng.below(64)),
        3 => old | (1 << ((unit + 1) % 64)),
        _ => generic_value(t, rng, old),
    };
    vec![Mutation {
        offset,
        field: format!("block_bitmap[unit {unit}..]"),
        kind: "block_bitmap",
        old,
        new,
    }]
}

fn mutate_journal(t: &Template, rng: &mut Rng) -> Vec<Mutation> {
    let i = if rng.chance(70) {
        rng.below(8)
    } else {
        rng.below(JOURNAL_CAPACITY as u64)
    } as usize;
    let entry = offset_of!(SegmentHeader, journal) + 16 * i;
    let old_value_field = rng.chance(50);
    let offset = (entry + if old_value_field { 8 } else { 0 }) as u64;
    let old = word(&t.bytes, offset);
    let new = if old_value_field {
        generic_value(t, rng, old)
    } else {
        // Where a rollback would write: a block header field, a header
        // counter, or nonsense.
        let b = *rng.pick(&t.blocks);
        match rng.below(4) {
            0 | 1 => b.offset + 8 * rng.below(8),
            2 => 8 * (offset_of!(SegmentHeader, next_generation) as u64 / 8 + rng.below(6)),
            _ => generic_value(t, rng, old),
        }
    };
    let mut out = vec![Mutation {
        offset,
        field: format!(
            "journal[{i}].{}",
            if old_value_field {
                "old_value"
            } else {
                "offset"
            }
        ),
        kind: if old_value_field {
            "journal.old_value"
        } else {
            "journal.offset"
        },
        old,
        new,
    }];
    // Mostly make the entry live, so the next lock owner rolls it back.
    if rng.chance(80) {
        let len_offset = offset_of!(SegmentHeader, journal_len) as u64;
        out.push(Mutation {
            offset: len_offset,
            field: "journal_len".into(),
            kind: "journal_len",
            old: word(&t.bytes, len_offset),
            new: (i as u64 + 1 + rng.below(3)).min(JOURNAL_CAPACITY as u64),
        });
    }
    out
}

fn mutate_process(t: &Template, rng: &mut Rng) -> Vec<Mutation> {
    let slot = if rng.chance(70) {
        rng.below(5)
    } else {
        rng.below(MAX_PROCESSES as u64)
    } as usize;
    let fields = [
        ("process.state", offset_of!(ProcessSlot, state)),
        ("process.pid", offset_of!(ProcessSlot, pid)),
        ("process.held_blocks", offset_of!(ProcessSlot, held_blocks)),
        ("process.claims", offset_of!(ProcessSlot, claims)),
        ("process.reserved", offset_of!(ProcessSlot, reserved)),
    ];
    let (kind, field) = fields[rng.weighted(&[30, 15, 30, 15, 10])];
    let offset = slot_offset(slot, field);
    let old = word(&t.bytes, offset);
    let new = if kind == "process.state" && rng.chance(60) {
        one_of!(rng, [SLOT_ACTIVE, SLOT_FREE, 2, u64::MAX])
    } else {
        generic_value(t, rng, old)
    };
    vec![Mutation {
        offset,
        field: format!("processes[{slot}].{}", &kind[8..]),
        kind,
        old,
        new,
    }]
}

fn mutate_header(t: &Template, rng: &mut Rng) -> Vec<Mutation> {
    macro_rules! fields {
        ($($f:ident),*) => { [$((concat!("header.", stringify!($f)), offset_of!(SegmentHeader, $f))),*] };
    }
    let live = fields!(
        lock_word,
        lock_takeovers,
        next_generation,
        live_blocks,
        in_flight_blocks,
        used_bytes,
        journal_len,
        reserved_until
    );
    let identity = fields!(
        magic,
        layout_version,
        header_size,
        capacity,
        bitmap_offset,
        heap_start,
        heap_end,
        creator_pid,
        pool_id
    );
    let (kind, field) = if rng.chance(80) {
        *rng.pick(&live)
    } else {
        *rng.pick(&identity)
    };
    let offset = field as u64;
    let old = word(&t.bytes, offset);
    let g = &t.geometry;
    let new = if rng.chance(40) {
        generic_value(t, rng, old)
    } else {
        match kind {
            // Slot 0 is where the child registers; 2-4 are dead owners.
            "header.lock_word" => one_of!(rng, [1, 2, 4, 65, u64::MAX]),
            "header.next_generation" => one_of!(rng, [0, 1, old / 2, u64::MAX]),
            "header.journal_len" => one_of!(
                rng,
                [
                    1 + rng.below(JOURNAL_CAPACITY as u64),
                    JOURNAL_CAPACITY as u64 + 1,
                    u64::MAX
                ]
            ),
            "header.reserved_until" => one_of!(
                rng,
                [
                    0,
                    g.heap_start,
                    g.heap_end,
                    g.heap_end + 64,
                    u64::MAX,
                    some_offset(t, rng)
                ]
            ),
            _ => one_of!(rng, [0, old.wrapping_sub(1), old + 64, u64::MAX]),
        }
    };
    vec![Mutation {
        offset,
        field: kind.to_string(),
        kind,
        old,
        new,
    }]
}

/// 1..=`max_words` overwritten words, weighted toward block headers and
/// free lists, where the allocator trusts the segment most.
fn plan_mutations(t: &Template, rng: &mut Rng, max_words: u64) -> Vec<Mutation> {
    let words = 1 + rng.below(max_words);
    let mut out = Vec::new();
    while (out.len() as u64) < words {
        let m = match rng.weighted(&[35, 20, 10, 10, 10, 15]) {
            0 => mutate_block(t, rng),
            1 => mutate_tlsf(t, rng),
            2 => mutate_block_bitmap(t, rng),
            3 => mutate_journal(t, rng),
            4 => mutate_process(t, rng),
            _ => mutate_header(t, rng),
        };
        out.extend(m.into_iter().filter(|m| m.old != m.new));
    }
    out
}

// ---------------------------------------------------------------------------
// Copies in /dev/shm.

/// A mutated copy of the template; removed when dropped, whatever happened.
struct Copy {
    name: String,
}

impl Copy {
    fn write(t: &Template, mutations: &[Mutation]) -> Copy {
        let id = arraypool_core::segment::random_id().expect("random id");
        let name = format!("arraypool-fuzz-{:016x}", id as u64);
        let path = format!("/dev/shm/{name}");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("create the copy");
        let copy = Copy { name };
        file.set_len(CAPACITY).expect("size the copy");
        let mut bytes = t.bytes.clone();
        for m in mutations {
            bytes[m.offset as usize..m.offset as usize + 8].copy_from_slice(&m.new.to_le_bytes());
        }
        // Pages never touched stay holes, as in the original.
        for (i, page) in bytes.chunks(PAGE as usize).enumerate() {
            if page.iter().any(|&b| b != 0) {
                file.write_all_at(page, i as u64 * PAGE)
                    .expect("write the copy");
            }
        }
        copy
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.name));
    }
}

// ---------------------------------------------------------------------------
// The child: uses a copy the way a program would.

/// A known block as the child receives it: where it is and what was
/// allocated in the original pool.
#[derive(Debug, Clone, Copy)]
struct Known {
    offset: u64,
    generation: u64,
    data_len: u64,
    size: u64,
}

fn encode_known(blocks: &[TBlock]) -> String {
    blocks
        .iter()
        // A cached block was freed by its process: no handle names it.
        .filter(|b| b.used() && b.tag & FLAG_CACHED == 0)
        .map(|b| format!("{}:{}:{}:{}", b.offset, b.generation, b.data_len, b.size))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_known(s: &str) -> Vec<Known> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            let f: Vec<u64> = x.split(':').map(|n| n.parse().expect("number")).collect();
            Known {
                offset: f[0],
                generation: f[1],
                data_len: f[2],
                size: f[3],
            }
        })
        .collect()
}

/// A reference the child holds and the bytes it wrote there.
struct View {
    block: BlockRef,
    /// Bytes the view may cover: the known block, or the allocation.
    extent: (u64, u64),
    pattern: u8,
    /// Another view or the pool wrote here; its pattern is not checked.
    tainted: bool,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: BTreeMap<&'static str, u64>,
    escapes: u64,
    aliasing: u64,
}

impl Tally {
    /// Runs one pool operation; a typed error is an acceptable outcome.
    /// "OP" lines on stderr tell the parent where a crash happened.
    fn run<T>(&mut self, op: &str, f: impl FnOnce() -> Result<T, PoolError>) -> Option<T> {
        eprintln!("OP {op}");
        match f() {
            Ok(v) => {
                self.ok += 1;
                Some(v)
            }
            Err(e) => {
                eprintln!("ERR {op}: {}: {e}", e.code());
                *self.errors.entry(e.code()).or_default() += 1;
                None
            }
        }
    }
}

/// Reads every byte of `view`'s data, then fills it with its pattern.
fn touch(pool: &Pool, view: &View) {
    let len = view.block.data_len as usize;
    let ptr = pool.data_ptr(&view.block);
    // SAFETY: the caller checked that [data_offset, +data_len) lies inside
    // the block's known extent, which lies inside the mapping the pool
    // keeps; this process is the copy's only user, so nobody writes
    // concurrently.
    let sum = unsafe { std::slice::from_raw_parts(ptr, len) }
        .iter()
        .fold(0u8, |a, &b| a ^ b);
    std::hint::black_box(sum);
    // SAFETY: as above.
    unsafe { std::ptr::write_bytes(ptr, view.pattern, len) };
}

/// Whether the view still holds what `touch` wrote.
fn intact(pool: &Pool, view: &View) -> bool {
    // SAFETY: as in `touch`: checked bounds, a mapping the pool keeps.
    unsafe { std::slice::from_raw_parts(pool.data_ptr(&view.block), view.block.data_len as usize) }
        .iter()
        .all(|&b| b == view.pattern)
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

struct Child<'a> {
    pool: &'a Pool,
    name: &'a str,
    heap: Geometry,
    t: Tally,
    views: Vec<View>,
    next_pattern: u8,
}

impl Child<'_> {
    fn pattern(&mut self) -> u8 {
        self.next_pattern = self.next_pattern.wrapping_add(1).max(1);
        self.next_pattern
    }

    /// Keeps a view whose range was checked, after touching all its bytes;
    /// another live view over the same bytes is aliasing.
    fn keep(&mut self, block: BlockRef, extent: (u64, u64)) {
        for other in self.views.iter_mut() {
            if overlaps(other.extent, extent) {
                eprintln!(
                    "ALIAS block {} [{}, {}) overlaps the held block {} [{}, {})",
                    block.offset,
                    extent.0,
                    extent.1,
                    other.block.offset,
                    other.extent.0,
                    other.extent.1
                );
                self.t.aliasing += 1;
                other.tainted = true;
            }
        }
        let view = View {
            block,
            extent,
            pattern: self.pattern(),
            tainted: false,
        };
        touch(self.pool, &view);
        self.views.push(view);
    }

    fn attach(&mut self, k: &Known, byte_offset: u64, byte_length: u64) -> Option<BlockRef> {
        let h = Handle {
            segment: self.name.to_string(),
            offset: k.offset,
            generation: k.generation,
            byte_offset,
            byte_length,
        };
        let r = self.t.run("attach", || self.pool.attach(&h))?;
        // The view must lie in the block as the original pool made it.
        let inside = r.offset == k.offset
            && r.data_offset == k.offset + BLOCK_HEADER_SIZE
            && r.data_offset
                .checked_add(r.data_len)
                .is_some_and(|end| end <= k.offset + k.size);
        if !inside {
            eprintln!(
                "ESCAPE attach of block {} (size {}) returned offset {} data [{}, +{})",
                k.offset, k.size, r.offset, r.data_offset, r.data_len
            );
            self.t.escapes += 1;
            // Held, but never touched: outside its block it could be anything.
            self.t
                .run("release", || self.pool.release(r.offset, r.generation));
            return None;
        }
        Some(r)
    }

    fn allocate(&mut self, len: u64, transfer_required: bool) {
        let Some(r) = self
            .t
            .run("allocate", || self.pool.allocate(len, transfer_required))
        else {
            return;
        };
        let inside = r.offset.is_multiple_of(BLOCK_ALIGN)
            && r.offset >= self.heap.heap_start
            && r.data_offset == r.offset + BLOCK_HEADER_SIZE
            && r.data_len == len
            && r.data_offset
                .checked_add(len)
                .is_some_and(|end| end <= self.heap.heap_end);
        if !inside {
            eprintln!(
                "ESCAPE allocate({len}) returned offset {} data [{}, +{})",
                r.offset, r.data_offset, r.data_len
            );
            self.t.escapes += 1;
            return;
        }
        self.keep(r, (r.offset, r.data_offset + len));
    }

    /// Drops the view at `index`, checking first that nothing else wrote there.
    fn release(&mut self, index: usize) {
        let view = self.views.remove(index);
        if !view.tainted && !intact(self.pool, &view) {
            eprintln!(
                "ALIAS the data of block {} changed while held",
                view.block.offset
            );
            self.t.aliasing += 1;
        }
        let b = view.block;
        self.t
            .run("release", || self.pool.release(b.offset, b.generation));
    }

    fn stats_and_check(&mut self) {
        self.t.run("stats", || self.pool.stats());
        if let Some(report) = self.t.run("check", || self.pool.check()) {
            if let Some(v) = report.violation {
                eprintln!("CHECK {v}");
            }
        }
    }
}

const CHILD_SIZES: [u64; 10] = [0, 1, 64, 100, 1000, 4096, 10_000, 65_536, 200_000, 700_000];

fn exercise(name: &str, known: &[Known], rng: &mut Rng, t: &mut Tally) {
    let options = PoolOptions {
        lock_timeout: CHILD_LOCK_TIMEOUT,
        punch_threshold: 128 * KIB,
        reserve_chunk: 64 * KIB,
        ..Default::default()
    };
    let Some(pool) = t.run("open", || Pool::open(name, options)) else {
        return;
    };
    let mut c = Child {
        pool: &pool,
        name,
        heap: Geometry::for_capacity(CAPACITY).expect("geometry"),
        t: std::mem::take(t),
        views: Vec::new(),
        next_pattern: 0,
    };
    // Every known block, whole: what receivers of handles do.
    for k in known {
        if let Some(r) = c.attach(k, 0, k.data_len) {
            c.keep(r, (k.offset, k.offset + k.size));
        }
    }
    // A second, partial reference to some (the already-held path).
    for k in known {
        if rng.chance(30) && c.views.iter().any(|v| v.block.offset == k.offset) {
            if let Some(r) = c.attach(k, k.data_len / 4, k.data_len / 2) {
                let b = r;
                c.t.run("release", || pool.release(b.offset, b.generation));
            }
        }
    }
    let attached = c.views.len();
    for _ in 0..6 {
        let len = *rng.pick(&CHILD_SIZES);
        c.allocate(len, rng.chance(30));
    }
    // Free about half of the new blocks.
    for i in (attached..c.views.len()).rev() {
        if rng.chance(50) {
            c.release(i);
        }
    }
    c.stats_and_check();
    // Drop every attached block (the first `attached` views; releases
    // keep the order): frees what the dead processes had dropped.
    for i in (0..attached).rev() {
        c.release(i);
    }
    c.t.run("reap", || pool.reap());
    for _ in 0..4 {
        let len = *rng.pick(&CHILD_SIZES);
        c.allocate(len, rng.chance(30));
        if rng.chance(50) && !c.views.is_empty() {
            let last = c.views.len() - 1;
            c.release(last);
        }
    }
    c.stats_and_check();
    for view in &c.views {
        if !view.tainted && !intact(&pool, view) {
            eprintln!(
                "ALIAS the data of block {} changed while held",
                view.block.offset
            );
            c.t.aliasing += 1;
        }
    }
    // Close releases what is still held.
    c.t.run("close", || pool.close());
    *t = c.t;
}

/// The child side. Ignored when run directly; only the fuzzer selects it.
#[test]
#[ignore]
fn fuzz_child_entry() {
    let Ok(name) = std::env::var("ARRAYPOOL_FUZZ_COPY") else {
        return;
    };
    let known = decode_known(&std::env::var("ARRAYPOOL_FUZZ_KNOWN").expect("known blocks"));
    let seed: u64 = std::env::var("ARRAYPOOL_FUZZ_CHILD_SEED")
        .expect("seed")
        .parse()
        .expect("a number");
    let mut tally = Tally::default();
    exercise(&name, &known, &mut Rng::new(seed), &mut tally);
    let errors: Vec<String> = tally
        .errors
        .iter()
        .map(|(code, n)| format!("{code}:{n}"))
        .collect();
    println!(
        "FUZZ-RESULT ok={} escapes={} aliasing={} errors={}",
        tally.ok,
        tally.escapes,
        tally.aliasing,
        errors.join(",")
    );
    if tally.escapes > 0 {
        std::process::exit(3);
    }
}

// ---------------------------------------------------------------------------
// The parent: trials and their tally.

struct Config {
    seed: u64,
    trials: usize,
    only: Option<usize>,
    max_words: u64,
    jobs: usize,
    show: usize,
    tail: usize,
    strict: bool,
}

fn env_number(key: &str) -> Option<u64> {
    let text = std::env::var(key).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{key}={text:?} is not a number")))
}

impl Config {
    fn from_env() -> Config {
        Config {
            seed: env_number("ARRAYPOOL_FUZZ_SEED").unwrap_or_else(|| {
                arraypool_core::segment::random_id().expect("random seed") as u64
            }),
            trials: env_number("ARRAYPOOL_FUZZ_TRIALS").map_or(DEFAULT_TRIALS, |n| n as usize),
            only: env_number("ARRAYPOOL_FUZZ_TRIAL").map(|n| n as usize),
            max_words: env_number("ARRAYPOOL_FUZZ_WORDS").unwrap_or(8).max(1),
            jobs: env_number("ARRAYPOOL_FUZZ_JOBS").map_or(2, |n| n.max(1) as usize),
            show: env_number("ARRAYPOOL_FUZZ_SHOW").map_or(5, |n| n as usize),
            tail: env_number("ARRAYPOOL_FUZZ_TAIL").map_or(6, |n| n as usize),
            strict: env_number("ARRAYPOOL_FUZZ_STRICT").unwrap_or(1) != 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Every operation succeeded.
    Ok,
    /// Some operations returned typed errors; nothing worse.
    Typed,
    Crash(String),
    Panic,
    Hang,
    /// A view reached outside its block or the heap.
    Escape,
    /// Any other exit (no result line, an unexpected code).
    Other(String),
}

impl Outcome {
    fn failed(&self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Typed)
    }
}

struct TrialResult {
    index: usize,
    mutations: Vec<Mutation>,
    outcome: Outcome,
    errors: Vec<(String, u64)>,
    aliasing: u64,
    ok_ops: u64,
    done: Finished,
}

fn trial_rng(seed: u64, index: usize) -> Rng {
    let mut mix = Rng::new(seed ^ (index as u64).wrapping_mul(0xa076_1d64_78bd_642f));
    Rng::new(mix.next_u64())
}

struct Started {
    index: usize,
    mutations: Vec<Mutation>,
    // Declared before the copy: the child dies before its file goes.
    child: Running,
    _copy: Copy,
}

fn start_trial(t: &Template, known: &str, config: &Config, index: usize) -> Started {
    let mut rng = trial_rng(config.seed, index);
    // Trial 0 is the control: the copy unaltered.
    let mutations = if index == 0 {
        Vec::new()
    } else {
        plan_mutations(t, &mut rng, config.max_words)
    };
    let copy = Copy::write(t, &mutations);
    let child = Running::spawn(
        ENTRY,
        &[
            ("ARRAYPOOL_FUZZ_COPY", copy.name.clone()),
            ("ARRAYPOOL_FUZZ_KNOWN", known.to_string()),
            ("ARRAYPOOL_FUZZ_CHILD_SEED", rng.next_u64().to_string()),
        ],
        TRIAL_DEADLINE,
    );
    Started {
        index,
        mutations,
        child,
        _copy: copy,
    }
}

/// The outcome, typed errors by code, aliasing events, and operations
/// that succeeded.
fn classify(done: &Finished) -> (Outcome, Vec<(String, u64)>, u64, u64) {
    let result = done.line("FUZZ-RESULT");
    let field = |key: &str| -> Option<String> {
        let line = result.as_ref()?;
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).map(str::to_string))
    };
    let errors: Vec<(String, u64)> = field("errors=")
        .unwrap_or_default()
        .split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (code, n) = x.split_once(':').unwrap_or((x, "1"));
            (code.to_string(), n.parse().unwrap_or(1))
        })
        .collect();
    let aliasing = field("aliasing=").and_then(|n| n.parse().ok()).unwrap_or(0);
    let ok_ops = field("ok=").and_then(|n| n.parse().ok()).unwrap_or(0);
    let outcome = match done.exit {
        Exit::Code(0) if result.is_some() && errors.is_empty() => Outcome::Ok,
        Exit::Code(0) if result.is_some() => Outcome::Typed,
        Exit::Code(3) if result.is_some() => Outcome::Escape,
        Exit::Code(101) => Outcome::Panic,
        Exit::Signal(s) => Outcome::Crash(signal_name(s)),
        Exit::Hung => Outcome::Hang,
        Exit::Code(c) => Outcome::Other(format!("exit code {c}")),
    };
    (outcome, errors, aliasing, ok_ops)
}

/// Digits out, so that one cause with different offsets groups as one.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(ch);
        }
    }
    out.chars().take(100).collect()
}

/// The first panic's location and message, if the child panicked (an
/// abort is often a second panic while unwinding from the first).
fn first_panic(stderr: &str) -> Option<(String, String)> {
    let mut lines = stderr.lines();
    let at = lines.by_ref().find_map(|l| {
        l.split_once("panicked at ")
            .map(|(_, at)| at.trim_end_matches(':').to_string())
    })?;
    Some((at, lines.next().unwrap_or("").to_string()))
}

/// What went wrong and where, from the child's stderr.
fn cause(r: &TrialResult) -> String {
    let stderr = &r.done.stderr;
    let op = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("OP "))
        .unwrap_or("(before any operation)");
    let panic = first_panic(stderr)
        .map(|(at, message)| format!(" at {at}: {}", normalize(&message)))
        .unwrap_or_default();
    match &r.outcome {
        Outcome::Panic => format!("panic in {op}{panic}"),
        Outcome::Crash(signal) => format!("{signal} in {op}{panic}"),
        Outcome::Escape => {
            let line = stderr
                .lines()
                .find(|l| l.starts_with("ESCAPE"))
                .unwrap_or("ESCAPE");
            normalize(line)
        }
        other => format!("{other:?} in {op}{panic}"),
    }
}

#[derive(Default)]
struct Summary {
    counts: BTreeMap<String, u64>,
    codes: BTreeMap<String, u64>,
    aliasing_trials: u64,
    /// The first few trials with aliasing: index, mutations, ALIAS lines.
    aliasing_examples: Vec<String>,
    /// Per mutated field kind: (trials that mutated it, of which failed).
    kinds: BTreeMap<&'static str, (u64, u64)>,
    causes: BTreeMap<String, u64>,
    /// Causes of failures whose mutations all hit one kind of field.
    field_causes: BTreeMap<(&'static str, String), u64>,
    failures: Vec<TrialResult>,
    /// The unaltered copy's outcome and successful operations.
    control: Option<(Outcome, u64)>,
    trials: u64,
}

impl Summary {
    fn add(&mut self, r: TrialResult) {
        self.trials += 1;
        let label = match &r.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Typed => "typed-errors".to_string(),
            Outcome::Crash(signal) => format!("crash({signal})"),
            Outcome::Panic => "panic".to_string(),
            Outcome::Hang => "hang".to_string(),
            Outcome::Escape => "escape".to_string(),
            Outcome::Other(what) => format!("other({what})"),
        };
        *self.counts.entry(label).or_default() += 1;
        for (code, n) in &r.errors {
            *self.codes.entry(code.clone()).or_default() += n;
        }
        if r.aliasing > 0 {
            self.aliasing_trials += 1;
            if self.aliasing_examples.len() < 5 {
                let mutations: Vec<String> = r.mutations.iter().map(|m| m.to_string()).collect();
                let alias: Vec<&str> = r
                    .done
                    .stderr
                    .lines()
                    .filter(|l| l.starts_with("ALIAS"))
                    .take(3)
                    .collect();
                self.aliasing_examples.push(format!(
                    "trial {}: {}\n      {}",
                    r.index,
                    mutations.join("; "),
                    alias.join("\n      ")
                ));
            }
        }
        if r.index == 0 {
            self.control = Some((r.outcome.clone(), r.ok_ops));
        }
        let mut kinds: Vec<&'static str> = r.mutations.iter().map(|m| m.kind).collect();
        kinds.sort();
        kinds.dedup();
        for &kind in &kinds {
            let entry = self.kinds.entry(kind).or_default();
            entry.0 += 1;
            entry.1 += u64::from(r.outcome.failed());
        }
        if r.outcome.failed() {
            let why = cause(&r);
            if let [kind] = kinds[..] {
                *self.field_causes.entry((kind, why.clone())).or_default() += 1;
            }
            *self.causes.entry(why).or_default() += 1;
            self.failures.push(r);
        }
    }

    fn failed(&self, strict: bool) -> bool {
        !self.failures.is_empty() || (strict && self.aliasing_trials > 0)
    }

    fn render(&self, config: &Config, elapsed: Duration) -> String {
        let mut s = String::new();
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let codes: Vec<String> = self.codes.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let _ = writeln!(
            s,
            "corruption fuzz: seed={:#x} trials={} words=1..{} in {:.1}s: {}; typed errors by code: {}; trials with aliasing: {}",
            config.seed,
            self.trials,
            config.max_words,
            elapsed.as_secs_f64(),
            counts.join(" "),
            if codes.is_empty() { "none".into() } else { codes.join(" ") },
            self.aliasing_trials,
        );
        if !self.aliasing_examples.is_empty() && config.show > 0 {
            let _ = writeln!(
                s,
                "aliasing (fails the test unless ARRAYPOOL_FUZZ_STRICT=0):"
            );
            for example in self.aliasing_examples.iter().take(config.show) {
                let _ = writeln!(s, "  {example}");
            }
        }
        if self.failures.is_empty() {
            return s;
        }
        let mut kinds: Vec<_> = self.kinds.iter().filter(|(_, (_, f))| *f > 0).collect();
        kinds.sort_by_key(|(_, (n, f))| std::cmp::Reverse((*f, *n)));
        let _ = writeln!(s, "failures by mutated field (failed/mutated):");
        for (kind, (n, f)) in kinds {
            let _ = writeln!(s, "  {kind}: {f}/{n}");
        }
        let mut causes: Vec<_> = self.causes.iter().collect();
        causes.sort_by_key(|(c, n)| (std::cmp::Reverse(**n), (*c).clone()));
        let _ = writeln!(s, "top causes:");
        for (c, n) in causes.iter().take(15) {
            let _ = writeln!(s, "  {n:4}  {c}");
        }
        if !self.field_causes.is_empty() {
            let mut by_field: Vec<_> = self.field_causes.iter().collect();
            by_field.sort_by_key(|(k, n)| (std::cmp::Reverse(**n), (*k).clone()));
            let _ = writeln!(
                s,
                "top causes by field (trials that hit one kind of field):"
            );
            for ((kind, c), n) in by_field.iter().take(25) {
                let _ = writeln!(s, "  {n:4}  {kind} -> {c}");
            }
        }
        for r in self.failures.iter().take(config.show) {
            let mutations: Vec<String> = r.mutations.iter().map(|m| m.to_string()).collect();
            let _ = writeln!(
                s,
                "--- trial {} (ARRAYPOOL_FUZZ_SEED={:#x} ARRAYPOOL_FUZZ_TRIAL={} ARRAYPOOL_FUZZ_WORDS={}): {}\n    mutations: {}\n    stderr tail:\n{}",
                r.index,
                config.seed,
                r.index,
                config.max_words,
                cause(r),
                mutations.join("; "),
                r.done
                    .stderr_tail(config.tail)
                    .lines()
                    .map(|l| format!("      {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        s
    }
}

#[test]
fn corrupted_segments_give_typed_errors_never_crashes() {
    let config = Config::from_env();
    println!(
        "corruption fuzz: seed {:#x} (ARRAYPOOL_FUZZ_SEED to repeat it)",
        config.seed
    );
    let template = build_template();
    let known = encode_known(&template.blocks);
    let indices: Vec<usize> = match config.only {
        Some(i) => vec![i],
        None => (0..config.trials.max(1)).collect(),
    };
    let started_at = Instant::now();
    let mut summary = Summary::default();
    let mut pending = indices.into_iter();
    let mut running: Vec<Started> = Vec::new();
    loop {
        while running.len() < config.jobs {
            match pending.next() {
                Some(i) => running.push(start_trial(&template, &known, &config, i)),
                None => break,
            }
        }
        if running.is_empty() {
            break;
        }
        let mut i = 0;
        while i < running.len() {
            match running[i].child.poll() {
                Some(done) => {
                    let started = running.swap_remove(i);
                    let (outcome, errors, aliasing, ok_ops) = classify(&done);
                    summary.add(TrialResult {
                        index: started.index,
                        mutations: started.mutations,
                        outcome,
                        errors,
                        aliasing,
                        ok_ops,
                        done,
                    });
                    // `started` drops here: its copy is removed.
                }
                None => i += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = summary.render(&config, started_at.elapsed());
    println!("{report}");
    if let Some((outcome, ok_ops)) = &summary.control {
        assert_eq!(
            *outcome,
            Outcome::Ok,
            "the unaltered copy must work without a single error\n{report}"
        );
        // Open, an attach per known block, allocations, releases, stats,
        // check, reap, close: the child really exercised the pool.
        let known_blocks = template.blocks.iter().filter(|b| b.used()).count() as u64;
        assert!(
            *ok_ops >= 2 * known_blocks + 10,
            "the control child ran only {ok_ops} operations\n{report}"
        );
    }
    assert!(!summary.failed(config.strict), "{report}");
}
