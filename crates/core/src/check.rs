//! `check()`: a full walk of the heap and the free lists that verifies every
//! invariant the allocator and the holder records promise, and names the
//! first violation. O(heap), for tests and diagnostics only.

use std::sync::atomic::Ordering::Relaxed;

use crate::allocator::Heap;
use crate::error::PoolError;
use crate::layout::*;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub blocks: u64,
    pub free_blocks: u64,
    /// The first broken invariant, if any.
    pub violation: Option<String>,
}

fn text(e: PoolError) -> String {
    match e {
        PoolError::CorruptSegment { field, detail } => format!("{field}: {detail}"),
        other => other.to_string(),
    }
}

pub(crate) fn check(heap: &Heap) -> CheckReport {
    let mut report = CheckReport::default();
    if let Err(violation) = check_inner(heap, &mut report) {
        report.violation = Some(violation);
    }
    report
}

fn check_inner(heap: &Heap, report: &mut CheckReport) -> Result<(), String> {
    let h = heap.view.header();
    if h.journal_len.load(Relaxed) != 0 {
        return Err("the journal holds an unfinished transaction".into());
    }
    let active: u64 = h
        .processes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.state.load(Relaxed) == SLOT_ACTIVE)
        .fold(0, |mask, (k, _)| mask | 1 << k);
    let next_generation = h.next_generation.load(Relaxed);
    let mut per_slot = [0u64; MAX_PROCESSES];
    // (blocks, bytes) each slot keeps cached.
    let mut cached_per_slot = [(0u64, 0u64); MAX_PROCESSES];
    let (mut used, mut live, mut in_flight, mut free_blocks) = (0u64, 0u64, 0u64, 0u64);
    let mut prev_free_flags: Option<u64> = None;
    let mut violation: Option<String> = None;
    let mut last_offset = NONE;
    let walked = heap.walk(|offset, b, size| {
        last_offset = offset;
        if violation.is_some() {
            return Ok(());
        }
        report.blocks += 1;
        let tag = b.tag.load(Relaxed);
        if !heap.is_block_start(offset)? {
            violation = Some(format!(
                "block at {offset} is not marked in the block-start bitmap"
            ));
            return Ok(());
        }
        // Above the reserved watermark the bitmap is all zero and may be
        // unbacked: do not fault it in.
        let scanned_end = (offset + size).min(heap.reserved_until().max(offset + BLOCK_ALIGN));
        for inner in (offset + BLOCK_ALIGN..scanned_end).step_by(BLOCK_ALIGN as usize) {
            if heap.is_block_start(inner)? {
                violation = Some(format!(
                    "offset {inner} inside the block at {offset} is marked as a block start"
                ));
                return Ok(());
            }
        }
        match tag & TAG_MASK {
            TAG_FREE => {
                let flags = tag & FLAG_UNRESERVED;
                if prev_free_flags == Some(flags) {
                    violation = Some(format!(
                        "free block at {offset} is not coalesced with its free predecessor"
                    ));
                }
                if b.holders.load(Relaxed) != 0 {
                    violation = Some(format!("free block at {offset} has holders"));
                }
                prev_free_flags = Some(flags);
                free_blocks += 1;
            }
            TAG_USED => {
                prev_free_flags = None;
                used += size;
                live += 1;
                let holders = b.holders.load(Relaxed);
                if holders & !active != 0 {
                    violation = Some(format!(
                        "block at {offset} is held by inactive process slots {:#x}",
                        holders & !active
                    ));
                }
                for (k, count) in per_slot.iter_mut().enumerate() {
                    *count += (holders >> k) & 1;
                }
                if tag & FLAG_CACHED != 0 {
                    if tag != TAG_USED | FLAG_CACHED || holders.count_ones() != 1 {
                        violation = Some(format!(
                            "cached block at {offset} has tag {tag:#x} and holders {holders:#x}"
                        ));
                    }
                    let k = holders.trailing_zeros() as usize % MAX_PROCESSES;
                    cached_per_slot[k].0 += 1;
                    cached_per_slot[k].1 += size;
                }
                if holders == 0 {
                    if tag & FLAG_TRANSFER_REQUIRED == 0 || tag & FLAG_TRANSFERRED != 0 {
                        violation =
                            Some(format!("block at {offset} has no holder but was not freed"));
                    }
                    in_flight += 1;
                }
                let generation = b.generation.load(Relaxed);
                if generation == 0 || generation >= next_generation {
                    violation = Some(format!(
                        "block at {offset} has generation {generation} never issued"
                    ));
                }
                if b.data_len.load(Relaxed) > size - BLOCK_HEADER_SIZE {
                    violation = Some(format!(
                        "block at {offset} claims more data than it has room for"
                    ));
                }
            }
            _ => violation = Some(format!("block at {offset} has an unknown tag {tag:#x}")),
        }
        Ok(())
    });
    walked.map_err(text)?;
    if let Some(v) = violation {
        return Err(v);
    }
    let last_block = h.last_block.load(Relaxed);
    if last_block != last_offset {
        return Err(format!(
            "last_block is {last_block}, the heap's last block is at {last_offset}"
        ));
    }
    report.free_blocks = free_blocks;
    let counters = [
        ("used_bytes", h.used_bytes.load(Relaxed), used),
        ("live_blocks", h.live_blocks.load(Relaxed), live),
        (
            "in_flight_blocks",
            h.in_flight_blocks.load(Relaxed),
            in_flight,
        ),
    ];
    for (name, stored, counted) in counters {
        if stored != counted {
            return Err(format!(
                "header counter {name} is {stored}, the heap has {counted}"
            ));
        }
    }
    for (k, p) in h.processes.iter().enumerate() {
        let stored = p.held_blocks.load(Relaxed);
        if stored != per_slot[k] {
            return Err(format!(
                "process slot {k} records {stored} held blocks, the heap has {}",
                per_slot[k]
            ));
        }
        let stored = cached_parts(p.cached.load(Relaxed));
        if stored != cached_per_slot[k] {
            return Err(format!(
                "process slot {k} records {stored:?} cached (blocks, bytes), the heap has {:?}",
                cached_per_slot[k]
            ));
        }
    }
    check_free_lists(heap, free_blocks)
}

fn check_free_lists(heap: &Heap, free_blocks: u64) -> Result<(), String> {
    let h = heap.view.header();
    let mut listed = 0u64;
    let fl_map = h.fl_bitmap.load(Relaxed);
    for fl in 0..FL_COUNT {
        let sl_map = h.sl_bitmap[fl].load(Relaxed);
        if (sl_map != 0) != (fl_map >> fl & 1 == 1) {
            return Err(format!("first-level bitmap disagrees with class {fl}"));
        }
        for sl in 0..SL_COUNT {
            let mut cursor = h.free_heads[fl][sl].load(Relaxed);
            if (cursor != NONE) != (sl_map >> sl & 1 == 1) {
                return Err(format!(
                    "second-level bitmap disagrees with list ({fl}, {sl})"
                ));
            }
            let mut prev = NONE;
            while cursor != NONE {
                let is_free_start = heap.is_block_start(cursor).map_err(text)?
                    && heap.is_free(cursor).map_err(text)?;
                if !is_free_start {
                    return Err(format!(
                        "list ({fl}, {sl}) links {cursor}, which is not a free block"
                    ));
                }
                let b = heap.block(cursor).map_err(text)?;
                if size_class(heap.size_of(cursor).map_err(text)?) != (fl, sl) {
                    return Err(format!("free block at {cursor} is in the wrong size class"));
                }
                if b.prev_free.load(Relaxed) != prev {
                    return Err(format!("free block at {cursor} has a broken back link"));
                }
                listed += 1;
                if listed > free_blocks {
                    return Err("the free lists hold more blocks than the heap (a cycle?)".into());
                }
                prev = cursor;
                cursor = b.next_free.load(Relaxed);
            }
        }
    }
    if listed != free_blocks {
        return Err(format!(
            "{free_blocks} free blocks in the heap, {listed} in the free lists"
        ));
    }
    Ok(())
}
