//! What is in a pool, block by block: `pool.blocks()` (from a process of the
//! pool, under its lock) and `arraypool blocks <name>` (from outside, by
//! pread, see arraypool-core's `blocks`).

use arraypool_core::{BlockList, DEFAULT_BLOCKS_LIMIT};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::{from_pool, guard, to_u64, Code, JsError};

#[napi(object)]
pub struct BlockHolder {
    pub slot: u32,
    /// The pid its slot recorded (display only).
    pub pid: f64,
    /// Its process lives (a dead holder goes at the next reap).
    pub alive: bool,
}

#[napi(object)]
pub struct BlockEntry {
    pub offset: f64,
    /// Whole block in bytes, its 64-byte header and padding included.
    pub size: f64,
    /// Bytes requested by the allocation.
    pub data_len: f64,
    pub generation: f64,
    /// Allocations the pool made after this one (0: the newest block).
    pub age: f64,
    pub holders: Vec<BlockHolder>,
    pub transfer_required: bool,
    pub transferred: bool,
    /// Nobody holds it: it waits for a receiver.
    pub in_flight: bool,
    pub releasing: bool,
    /// Kept in its holder's small-block cache.
    pub cached: bool,
}

#[napi(object)]
pub struct BlockListing {
    pub name: String,
    /// The first `limit` used blocks, by offset.
    pub blocks: Vec<BlockEntry>,
    /// Used blocks found, listed or not.
    pub total_blocks: f64,
    pub total_bytes: f64,
    /// How many of them are in flight.
    pub in_flight_blocks: f64,
    /// How many of them are cached.
    pub cached_blocks: f64,
    /// Found but not listed (over the limit).
    pub omitted: f64,
    pub next_generation: f64,
    /// From outside only: why the walk stopped early, or null.
    pub problem: Option<String>,
}

fn limit_of(limit: Option<f64>) -> std::result::Result<usize, JsError> {
    match limit {
        None => Ok(DEFAULT_BLOCKS_LIMIT),
        Some(l) => {
            Ok(usize::try_from(to_u64(l, "limit", "ERR_INVALID_ARG")?).unwrap_or(usize::MAX))
        }
    }
}

fn listing(l: BlockList) -> BlockListing {
    BlockListing {
        name: l.name,
        blocks: l
            .blocks
            .into_iter()
            .map(|b| BlockEntry {
                offset: b.offset as f64,
                size: b.size as f64,
                data_len: b.data_len as f64,
                generation: b.generation as f64,
                age: b.age as f64,
                holders: b
                    .holders
                    .into_iter()
                    .map(|h| BlockHolder {
                        slot: h.slot,
                        pid: h.pid as f64,
                        alive: h.alive,
                    })
                    .collect(),
                transfer_required: b.transfer_required,
                transferred: b.transferred,
                in_flight: b.in_flight,
                releasing: b.releasing,
                cached: b.cached,
            })
            .collect(),
        total_blocks: l.total as f64,
        total_bytes: l.total_bytes as f64,
        in_flight_blocks: l.in_flight as f64,
        cached_blocks: l.cached as f64,
        omitted: l.omitted as f64,
        next_generation: l.next_generation as f64,
        problem: l.problem,
    }
}

/// The used blocks of an open pool, read under its lock.
#[napi(catch_unwind)]
pub fn pool_blocks(pool_id: f64, limit: Option<f64>) -> Result<BlockListing, Code> {
    guard(|| {
        let limit = limit_of(limit)?;
        let pool = crate::any_pool(crate::errors::pool_id_arg(pool_id)?)?;
        Ok(listing(pool.blocks(limit).map_err(from_pool)?))
    })
}

/// The used blocks of the pool `name` (or an anonymous pool's locator),
/// read from outside: no join, no lock, no mapping.
#[napi(catch_unwind)]
pub fn inspect_blocks(name: String, limit: Option<f64>) -> Result<BlockListing, Code> {
    guard(|| {
        let limit = limit_of(limit)?;
        Ok(listing(
            arraypool_core::blocks_of(&name, limit).map_err(from_pool)?,
        ))
    })
}
