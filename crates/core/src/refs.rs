//! Who holds what: the process table and the per-block holder bits.
//!
//! A block's `holders` word has bit `k` set while process slot `k` holds at
//! least one reference to it; the block's refcount is the number of holder
//! processes. How many references a process holds (several views of one
//! block) is counted inside that process only, so that when a process dies
//! its share is exactly one bit per block: `reap` clears the dead slot's bit
//! everywhere and frees what nobody else holds. Slot `k` belongs to whoever
//! holds the kernel liveness lock `k` (see `segment`).
//!
//! Lifetime rule (pyarraypool's, made safe): a block allocated with
//! `transfer_required` is freed only once its refcount is 0 *and* some
//! process attached it from a handle (`FLAG_TRANSFERRED`); until then it is
//! "in flight". Without `transfer_required` it is freed at refcount 0.

use std::sync::atomic::Ordering::Relaxed;

use crate::allocator::{BlockAllocator, Heap};
use crate::error::{PoolError, Result};
use crate::layout::*;

/// What dropping a holder did to the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Other processes still hold it.
    StillHeld,
    /// Nobody holds it, but it waits to be transferred.
    InFlight,
    /// Nobody holds it and it must be freed now.
    Free,
}

pub fn slot_bit(slot: u32) -> u64 {
    1u64 << (slot % 64)
}

/// The used block at `offset` (a block start tagged used), checked.
pub fn used_block<'a>(heap: &Heap<'a>, offset: u64) -> Result<&'a BlockHeader> {
    let b = heap.block(offset)?;
    if !heap.is_block_start(offset)? || b.tag.load(Relaxed) & TAG_MASK != TAG_USED {
        return Err(PoolError::corrupt(
            "tag",
            format!("the block at {offset} this process holds is no longer a used block"),
        ));
    }
    heap.data_len_of(offset)?;
    Ok(b)
}

/// The used block at `offset` that this process holds as `generation`:
/// another generation there means the segment changed under a holder.
pub fn held_block<'a>(heap: &Heap<'a>, offset: u64, generation: u64) -> Result<&'a BlockHeader> {
    let b = used_block(heap, offset)?;
    if b.generation.load(Relaxed) != generation {
        return Err(PoolError::corrupt(
            "generation",
            format!("the block at {offset} this process holds changed generation"),
        ));
    }
    Ok(b)
}

fn process_slot<'a>(heap: &Heap<'a>, slot: u32) -> &'a ProcessSlot {
    &heap.view.header().processes[slot as usize % MAX_PROCESSES]
}

/// Adds `slot` as a holder of the used block `b` (checked by the caller,
/// with `used_block` or as `Handle::check_live` does).
pub fn add_holder(heap: &Heap, b: &BlockHeader, slot: u32, transferred: bool) -> Result<()> {
    let v = heap.view;
    let h = v.header();
    let holders = b.holders.load(Relaxed);
    if holders == 0 {
        v.sub(&h.in_flight_blocks, 1)?;
    }
    v.set(&b.holders, holders | slot_bit(slot))?;
    if transferred {
        let tag = b.tag.load(Relaxed);
        v.set(&b.tag, tag | FLAG_TRANSFERRED)?;
    }
    v.add(&process_slot(heap, slot).held_blocks, 1)
}

/// Removes `slot` as a holder of the used block `b` (checked by the caller
/// with `used_block`) and says what the block's fate is; does not
/// free it (the caller frees, possibly after returning its pages).
/// `holder_died`: the slot's process died still holding the block, so it
/// never handed the block over; nobody else holding it means it is freed
/// even if it was never transferred (a handle still in transit then gets a
/// clean `StaleHandle`). Blocks a process had already dropped before dying
/// carry no bit of it and stay in flight for their receiver.
pub fn drop_holder(heap: &Heap, b: &BlockHeader, slot: u32, holder_died: bool) -> Result<Dropped> {
    let v = heap.view;
    let h = v.header();
    let holders = b.holders.load(Relaxed) & !slot_bit(slot);
    v.set(&b.holders, holders)?;
    v.sub(&process_slot(heap, slot).held_blocks, 1)?;
    if holders != 0 {
        return Ok(Dropped::StillHeld);
    }
    let tag = b.tag.load(Relaxed);
    if !holder_died && tag & FLAG_TRANSFER_REQUIRED != 0 && tag & FLAG_TRANSFERRED == 0 {
        v.add(&h.in_flight_blocks, 1)?;
        Ok(Dropped::InFlight)
    } else {
        Ok(Dropped::Free)
    }
}

/// Frees a used block nobody holds and updates the counters.
pub fn free_block(heap: &Heap, offset: u64, unreserved: bool) -> Result<()> {
    let v = heap.view;
    let h = v.header();
    // `free` confirms the size through the neighbours before it writes.
    let size = heap.size_of(offset)?;
    v.sub(&h.used_bytes, size)?;
    v.sub(&h.live_blocks, 1)?;
    heap.free(offset, unreserved)?;
    Ok(())
}

/// Used blocks that carry any bit of `slots_mask` as a holder (one heap walk).
pub fn blocks_held_by(heap: &Heap, slots_mask: u64) -> Result<Vec<u64>> {
    let mut found = Vec::new();
    heap.walk(|offset, b, _| {
        if b.tag.load(Relaxed) & TAG_MASK == TAG_USED && b.holders.load(Relaxed) & slots_mask != 0 {
            found.push(offset);
        }
        Ok(())
    })?;
    Ok(found)
}
