//! Looking at a segment from outside: what `arraypool ls`, `stats` and `gc`
//! show. Inspecting does not register the caller as a process of the pool
//! and takes no lock: the counters are a snapshot that may be a moment old.

use std::sync::atomic::Ordering::Relaxed;

use crate::error::{PoolError, Result};
use crate::layout::validate_header;
use crate::layout::*;
use crate::segment::{self, fd_size, map, open_any_fd, probe_slot, Segment};
use crate::view::SegmentView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub slot: u32,
    pub pid: u64,
    /// Its liveness lock is held (the process lives).
    pub alive: bool,
    pub held_blocks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub name: String,
    pub size_bytes: u64,
    /// Why the segment is not a usable pool, if it is not.
    pub problem: Option<String>,
    pub creator_pid: u64,
    pub used_bytes: u64,
    pub live_blocks: u64,
    pub in_flight_blocks: u64,
    /// Registered processes, alive or not yet reaped.
    pub processes: Vec<ProcessInfo>,
    /// Some process holds a liveness lock on the segment (registered or
    /// still registering). Such a segment is never garbage.
    pub any_alive: bool,
}

pub fn inspect(name: &str) -> Result<SegmentInfo> {
    let (bare, fd) = open_any_fd(name)?;
    let size = fd_size(&fd)?;
    let live: Vec<bool> = (0..MAX_PROCESSES).map(|k| probe_slot(&fd, k)).collect();
    let mut info = SegmentInfo {
        name: bare,
        size_bytes: size,
        problem: None,
        creator_pid: 0,
        used_bytes: 0,
        live_blocks: 0,
        in_flight_blocks: 0,
        processes: Vec::new(),
        any_alive: live.iter().any(|&a| a),
    };
    if size < std::mem::size_of::<SegmentHeader>() as u64 {
        info.problem = Some(format!(
            "{size} bytes: too small to be a pool (not initialised?)"
        ));
        return Ok(info);
    }
    let mapping = map(&fd, size)?;
    // SAFETY: `mapping` is `size` bytes (at least a header) and outlives the view.
    let view = unsafe { SegmentView::new(mapping.as_mut_ptr(), size) };
    if let Err(PoolError::InvalidSegment { reason }) = validate_header(&view, size) {
        info.problem = Some(reason);
        return Ok(info);
    }
    let h = view.header();
    info.creator_pid = h.creator_pid.load(Relaxed);
    info.used_bytes = h.used_bytes.load(Relaxed);
    info.live_blocks = h.live_blocks.load(Relaxed);
    info.in_flight_blocks = h.in_flight_blocks.load(Relaxed);
    info.processes = h
        .processes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.state.load(Relaxed) == SLOT_ACTIVE)
        .map(|(k, p)| ProcessInfo {
            slot: k as u32,
            pid: p.pid.load(Relaxed),
            alive: live[k],
            held_blocks: p.held_blocks.load(Relaxed),
        })
        .collect();
    Ok(info)
}

/// Unlinks `name` if no process holds any liveness lock on it (all its
/// processes are dead, or it never became a pool). Returns whether it did.
/// A segment with a live process is never removed.
pub fn remove_if_abandoned(name: &str) -> Result<bool> {
    if crate::memfd::is_memfd_name(name) {
        // Nothing to remove: the kernel frees an anonymous pool with its last holder.
        return Ok(false);
    }
    let info = inspect(name)?;
    if info.any_alive || being_created(&info) {
        return Ok(false);
    }
    match Segment::unlink(&info.name) {
        Ok(()) => Ok(true),
        Err(PoolError::SegmentNotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A segment not sized yet and younger than a minute may be one whose
/// creator is between `shm_open` and taking its liveness lock.
fn being_created(info: &SegmentInfo) -> bool {
    const GRACE: std::time::Duration = std::time::Duration::from_secs(60);
    info.size_bytes == 0
        && std::fs::metadata(format!("{}/{}", segment::SHM_DIR, info.name))
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() < GRACE)
            .unwrap_or(true)
}

/// `remove_if_abandoned` for every arraypool segment; returns the names removed.
pub fn collect_abandoned() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in segment::list_segments()? {
        if remove_if_abandoned(&name).unwrap_or(false) {
            removed.push(name);
        }
    }
    Ok(removed)
}
