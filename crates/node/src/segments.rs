//! Segments seen from outside the pool (the `arraypool` CLI: ls, stats, gc).

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::{from_pool, Code};

#[napi(object)]
pub struct ProcessEntry {
    pub slot: u32,
    pub pid: f64,
    pub alive: bool,
    pub held_blocks: f64,
}

#[napi(object)]
pub struct SegmentEntry {
    pub name: String,
    pub size_bytes: f64,
    /// Why it is not a usable pool, or null.
    pub problem: Option<String>,
    pub creator_pid: f64,
    pub used_bytes: f64,
    pub live_blocks: f64,
    pub in_flight_blocks: f64,
    pub processes: Vec<ProcessEntry>,
    /// Some process holds a liveness lock on it: never garbage.
    pub any_alive: bool,
}

/// Names of the arraypool segments in /dev/shm.
#[napi]
pub fn list_segments() -> Result<Vec<String>, Code> {
    arraypool_core::list_segments().map_err(from_pool)
}

#[napi(object)]
pub struct AnonymousPoolEntry {
    pub name: String,
    /// Processes of this user holding it (the kernel frees it with the last).
    pub holder_pids: Vec<u32>,
}

/// This user's anonymous (memfd) pools, found through /proc.
#[napi]
pub fn list_anonymous_pools() -> Vec<AnonymousPoolEntry> {
    arraypool_core::memfd::list_pools()
        .into_iter()
        .map(|(name, holders)| {
            let mut holder_pids: Vec<u32> = holders.into_iter().map(|(pid, _)| pid).collect();
            holder_pids.dedup();
            AnonymousPoolEntry { name, holder_pids }
        })
        .collect()
}

/// A snapshot of a segment, without joining its pool.
#[napi]
pub fn inspect_segment(name: String) -> Result<SegmentEntry, Code> {
    let i = arraypool_core::inspect(&name).map_err(from_pool)?;
    Ok(SegmentEntry {
        name: i.name,
        size_bytes: i.size_bytes as f64,
        problem: i.problem,
        creator_pid: i.creator_pid as f64,
        used_bytes: i.used_bytes as f64,
        live_blocks: i.live_blocks as f64,
        in_flight_blocks: i.in_flight_blocks as f64,
        processes: i
            .processes
            .into_iter()
            .map(|p| ProcessEntry {
                slot: p.slot,
                pid: p.pid as f64,
                alive: p.alive,
                held_blocks: p.held_blocks as f64,
            })
            .collect(),
        any_alive: i.any_alive,
    })
}

/// Unlinks the segment if it is an abandoned pool of ours (no live or
/// joining process); returns whether it did.
#[napi]
pub fn remove_if_abandoned(name: String) -> Result<bool, Code> {
    arraypool_core::remove_if_abandoned(&name).map_err(from_pool)
}

#[napi(object)]
pub struct GcEntry {
    pub name: String,
    /// gc removes it (or, in a dry run, would).
    pub removable: bool,
    /// It was removed (never in a dry run).
    pub removed: bool,
    /// 'abandoned' | 'dead' | 'never-sized' (removable), 'in-use' |
    /// 'joining' | 'being-created' | 'not-a-pool' | 'foreign' | 'gone' |
    /// 'anonymous' (kept).
    pub kind: String,
    /// Why, in words.
    pub detail: String,
    pub size_bytes: f64,
}

/// Garbage-collects one segment (`arraypool gc`): removes it if it is an
/// abandoned pool of ours; with `dry_run`, only says what it would do.
#[napi]
pub fn gc_segment(name: String, dry_run: bool) -> Result<GcEntry, Code> {
    let o = arraypool_core::inspect::gc_segment(&name, dry_run).map_err(from_pool)?;
    Ok(GcEntry {
        name: o.name,
        removable: o.verdict.removable(),
        removed: o.removed,
        kind: o.verdict.kind().to_string(),
        detail: o.verdict.to_string(),
        size_bytes: o.size_bytes as f64,
    })
}
