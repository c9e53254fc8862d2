//! Looking at a segment from outside: what `arraypool ls`, `stats` and `gc`
//! show and do. Inspecting does not register the caller as a process of the
//! pool and takes no lock: the counters are a snapshot that may be a moment
//! old.
//!
//! Nothing here maps the segment. Another process may truncate a named
//! segment's file at any moment, and touching a mapped page past the new
//! end is a SIGBUS that kills the reader; so the header is read with
//! `pread` into a buffer (a truncated file is a short read, reported as a
//! problem) and decoded from there by the layout's offsets, trusting
//! nothing in it.

use std::mem::{offset_of, size_of};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::{fstat, FileStat};
use std::os::fd::OwnedFd;

use crate::error::{PoolError, Result};
use crate::layout::{
    Geometry, ProcessSlot, SegmentHeader, LAYOUT_VERSION, MAGIC, MAX_CAPACITY, MAX_PROCESSES,
    SLOT_ACTIVE,
};
use crate::segment::{self, Ownership, DEAD_MAGIC};

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
    /// still registering) or its gc lock (joining it). Such a segment is
    /// never garbage.
    pub any_alive: bool,
}

/// The header fields `ls`, `stats`, `gc` and `blocks` use, decoded from a copy.
pub(crate) struct Header {
    /// Validated: recomputed from the capacity, which is the file's size.
    pub geometry: Geometry,
    /// Unchecked copies (anything may be in them): `blocks` checks each use.
    pub next_generation: u64,
    pub last_block: u64,
    pub reserved_until: u64,
    creator_pid: u64,
    used_bytes: u64,
    live_blocks: u64,
    in_flight_blocks: u64,
    /// (state, pid, held_blocks) of every process slot.
    pub slots: Vec<(u64, u64, u64)>,
}

/// What a copy of the header says.
pub(crate) enum HeaderState {
    /// A valid pool header (magic, version, capacity = file size, geometry).
    Valid(Header),
    /// [`DEAD_MAGIC`]: a gc marked it and was to unlink it.
    Dead,
    /// Not a pool, or a broken one: why.
    Invalid(String),
}

/// The little-endian u64 at `offset` of `buf` (0 past its end: callers
/// check the length first, this only keeps a slicing mistake from panicking).
fn word(buf: &[u8], offset: usize) -> u64 {
    buf.get(offset..offset + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Reads the header of the file behind `fd` (`size` bytes long when
/// `fstat` looked) and validates it the way a joining process does: magic,
/// layout version, capacity equal to the file size, and the geometry
/// recomputed from the capacity.
pub(crate) fn read_header(fd: &OwnedFd, size: u64) -> Result<HeaderState> {
    let mut buf = vec![0u8; size_of::<SegmentHeader>()];
    let read = segment::read_at(fd, &mut buf, 0)?;
    let at = |field: usize| word(&buf, field);
    if read >= 8 && at(offset_of!(SegmentHeader, magic)) == DEAD_MAGIC {
        return Ok(HeaderState::Dead);
    }
    if read < buf.len() {
        return Ok(HeaderState::Invalid(format!(
            "the file ends after {read} bytes, shorter than a pool header ({} bytes): truncated, or not initialised",
            buf.len()
        )));
    }
    if at(offset_of!(SegmentHeader, magic)) != MAGIC {
        return Ok(HeaderState::Invalid(
            "bad magic: not an arraypool segment, or not initialised yet".into(),
        ));
    }
    let version = at(offset_of!(SegmentHeader, layout_version));
    if version != LAYOUT_VERSION as u64 {
        return Ok(HeaderState::Invalid(format!(
            "layout version {version}, this build reads {LAYOUT_VERSION}"
        )));
    }
    let capacity = at(offset_of!(SegmentHeader, capacity));
    if capacity != size {
        return Ok(HeaderState::Invalid(format!(
            "header says {capacity} bytes, the segment has {size}"
        )));
    }
    if capacity > MAX_CAPACITY {
        return Ok(HeaderState::Invalid(format!(
            "capacity {capacity} exceeds the maximum {MAX_CAPACITY}"
        )));
    }
    let expected = Geometry::for_capacity(capacity);
    let found = Geometry {
        capacity,
        header_size: at(offset_of!(SegmentHeader, header_size)),
        bitmap_offset: at(offset_of!(SegmentHeader, bitmap_offset)),
        heap_start: at(offset_of!(SegmentHeader, heap_start)),
        heap_end: at(offset_of!(SegmentHeader, heap_end)),
    };
    let Some(geometry) = expected.filter(|g| *g == found) else {
        return Ok(HeaderState::Invalid(format!(
            "geometry {found:?} does not match {expected:?}"
        )));
    };
    let slot_field = |k: usize, field: usize| {
        at(offset_of!(SegmentHeader, processes) + k * size_of::<ProcessSlot>() + field)
    };
    Ok(HeaderState::Valid(Header {
        geometry,
        next_generation: at(offset_of!(SegmentHeader, next_generation)),
        last_block: at(offset_of!(SegmentHeader, last_block)),
        reserved_until: at(offset_of!(SegmentHeader, reserved_until)),
        creator_pid: at(offset_of!(SegmentHeader, creator_pid)),
        used_bytes: at(offset_of!(SegmentHeader, used_bytes)),
        live_blocks: at(offset_of!(SegmentHeader, live_blocks)),
        in_flight_blocks: at(offset_of!(SegmentHeader, in_flight_blocks)),
        slots: (0..MAX_PROCESSES)
            .map(|k| {
                (
                    slot_field(k, offset_of!(ProcessSlot, state)),
                    slot_field(k, offset_of!(ProcessSlot, pid)),
                    slot_field(k, offset_of!(ProcessSlot, held_blocks)),
                )
            })
            .collect(),
    }))
}

fn stat(fd: &OwnedFd) -> Result<FileStat> {
    fstat(fd).map_err(|e| PoolError::os("fstat", e))
}

/// Which slots' liveness locks some process holds.
pub(crate) fn live_slots(fd: &OwnedFd) -> Vec<bool> {
    (0..MAX_PROCESSES)
        .map(|k| segment::probe_slot(fd, k))
        .collect()
}

/// A snapshot of the segment `name` (a /dev/shm name, or an anonymous
/// pool's name or locator), without joining its pool. A named segment that
/// is not ours (owner, mode, not a regular file) is refused unread
/// (`InvalidSegment`); one that is not a valid pool, or is truncated while
/// we read it, comes back with `problem` set.
pub fn inspect(name: &str) -> Result<SegmentInfo> {
    let (bare, fd) = segment::open_any_fd(name)?;
    let size = stat(&fd)?.st_size as u64;
    let live = live_slots(&fd);
    let mut info = SegmentInfo {
        name: bare,
        size_bytes: size,
        problem: None,
        creator_pid: 0,
        used_bytes: 0,
        live_blocks: 0,
        in_flight_blocks: 0,
        processes: Vec::new(),
        any_alive: live.iter().any(|&a| a) || segment::gc_lock_held(&fd),
    };
    let header = match read_header(&fd, size)? {
        HeaderState::Valid(h) => h,
        HeaderState::Dead => {
            info.problem =
                Some("marked dead by arraypool gc (being removed): nobody can join it".into());
            return Ok(info);
        }
        HeaderState::Invalid(reason) => {
            info.problem = Some(reason);
            return Ok(info);
        }
    };
    info.creator_pid = header.creator_pid;
    info.used_bytes = header.used_bytes;
    info.live_blocks = header.live_blocks;
    info.in_flight_blocks = header.in_flight_blocks;
    info.processes = header
        .slots
        .iter()
        .zip(&live)
        .enumerate()
        .filter(|(_, ((state, _, _), _))| *state == SLOT_ACTIVE)
        .map(|(k, (&(_, pid, held_blocks), &alive))| ProcessInfo {
            slot: k as u32,
            pid,
            alive,
            held_blocks,
        })
        .collect();
    Ok(info)
}

/// How long an empty (never sized) segment is taken to be one whose creator
/// is between `shm_open` and taking its liveness lock.
pub const CREATION_GRACE: Duration = Duration::from_secs(60);

/// What gc does with one segment, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcVerdict {
    /// Removable: a valid pool whose `processes` registered processes are
    /// all dead (no liveness lock held).
    Abandoned { processes: usize },
    /// Removable: marked dead by a gc that did not get to unlink it.
    MarkedDead,
    /// Removable: empty for longer than [`CREATION_GRACE`], no lock held:
    /// its creator died before sizing it.
    NeverSized { age_secs: u64 },
    /// Kept: `live` processes hold liveness locks (or are creating it).
    InUse { live: usize },
    /// Kept: a process holds the gc lock (joining the pool right now, or
    /// another gc is at it).
    Joining,
    /// Kept: empty and younger than [`CREATION_GRACE`].
    BeingCreated { age_secs: u64 },
    /// Kept: not an arraypool pool (or a broken one): gc removes only
    /// files it can tell are pools.
    NotAPool { reason: String },
    /// Kept: owned by another uid, or open to group or others.
    Foreign { reason: String },
    /// The name was gone by the time gc got to it.
    Gone,
    /// Kept: an anonymous pool; the kernel frees it with its last holder.
    Anonymous,
}

impl GcVerdict {
    /// Whether gc removes (or, in a dry run, would remove) the segment.
    pub fn removable(&self) -> bool {
        matches!(
            self,
            GcVerdict::Abandoned { .. } | GcVerdict::MarkedDead | GcVerdict::NeverSized { .. }
        )
    }

    /// A stable word for the verdict (the CLI and the tests key on it).
    pub fn kind(&self) -> &'static str {
        match self {
            GcVerdict::Abandoned { .. } => "abandoned",
            GcVerdict::MarkedDead => "dead",
            GcVerdict::NeverSized { .. } => "never-sized",
            GcVerdict::InUse { .. } => "in-use",
            GcVerdict::Joining => "joining",
            GcVerdict::BeingCreated { .. } => "being-created",
            GcVerdict::NotAPool { .. } => "not-a-pool",
            GcVerdict::Foreign { .. } => "foreign",
            GcVerdict::Gone => "gone",
            GcVerdict::Anonymous => "anonymous",
        }
    }
}

impl std::fmt::Display for GcVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GcVerdict::Abandoned { processes: 0 } => {
                write!(f, "abandoned: no registered process")
            }
            GcVerdict::Abandoned { processes } => {
                write!(f, "abandoned: {processes} registered process(es), all dead")
            }
            GcVerdict::MarkedDead => write!(f, "marked dead by a gc that did not finish"),
            GcVerdict::NeverSized { age_secs } => write!(
                f,
                "empty for {age_secs} s with no process: its creator died before sizing it"
            ),
            GcVerdict::InUse { live } => write!(f, "{live} live process(es)"),
            GcVerdict::Joining => write!(
                f,
                "a process is joining it, or another gc holds its gc lock"
            ),
            GcVerdict::BeingCreated { age_secs } => write!(
                f,
                "empty, {age_secs} s old: spared for {} s",
                CREATION_GRACE.as_secs()
            ),
            GcVerdict::NotAPool { reason } => write!(f, "{reason}"),
            GcVerdict::Foreign { reason } => write!(f, "{reason}"),
            GcVerdict::Gone => write!(f, "no such segment"),
            GcVerdict::Anonymous => {
                write!(f, "anonymous: the kernel frees it with its last process")
            }
        }
    }
}

/// What [`gc_segment`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOutcome {
    pub name: String,
    pub size_bytes: u64,
    pub verdict: GcVerdict,
    /// The segment was removed (never in a dry run).
    pub removed: bool,
}

/// Garbage-collects one named segment: removes it if it is an arraypool
/// pool of ours that no process uses, and says why not otherwise. With
/// `dry_run`, decides exactly as it would but changes nothing and takes no
/// lock (it probes the gc lock instead of taking it).
///
/// The removal protocol (see `segment.rs` and LAYOUT.md): take the gc lock
/// exclusively without waiting (held: a process is joining, keep it); read
/// the header (it must be a valid pool or marked dead); *then* probe the 64
/// liveness locks (a creator writes the magic only once it holds slot 0,
/// so reading the header first cannot miss it); if none is held, write the
/// dead magic, unlink the name if it is still this file, and let the gc
/// lock go with the fd. A joiner waiting for the gc lock then finds the
/// dead magic and fails with `SegmentNotFound`.
pub fn gc_segment(name: &str, dry_run: bool) -> Result<GcOutcome> {
    let mut outcome = GcOutcome {
        name: name.strip_prefix('/').unwrap_or(name).to_string(),
        size_bytes: 0,
        verdict: GcVerdict::Anonymous,
        removed: false,
    };
    if crate::memfd::is_memfd_name(name) {
        return Ok(outcome);
    }
    let bare = segment::validate_name(name)?;
    let fd = match segment::open_fd_unchecked(bare) {
        Ok(fd) => fd,
        Err(PoolError::SegmentNotFound { .. }) => {
            outcome.verdict = GcVerdict::Gone;
            return Ok(outcome);
        }
        // ELOOP: O_NOFOLLOW met a symbolic link; EISDIR, ENXIO: a directory, a socket.
        Err(PoolError::Os { errno, .. })
            if [libc::ELOOP, libc::EISDIR, libc::ENXIO].contains(&errno) =>
        {
            outcome.verdict = GcVerdict::NotAPool {
                reason: format!(
                    "not a regular file ({})",
                    nix::errno::Errno::from_raw(errno).desc()
                ),
            };
            return Ok(outcome);
        }
        Err(PoolError::Os { errno, .. }) if errno == libc::EACCES || errno == libc::EPERM => {
            outcome.verdict = GcVerdict::Foreign {
                reason: "we may not open it: another user's file".into(),
            };
            return Ok(outcome);
        }
        Err(e) => return Err(e),
    };
    let st = stat(&fd)?;
    outcome.size_bytes = st.st_size as u64;
    match segment::ownership(&st) {
        Ownership::Ours => {}
        Ownership::Foreign(reason) => {
            outcome.verdict = GcVerdict::Foreign { reason };
            return Ok(outcome);
        }
        Ownership::NotRegular(reason) => {
            outcome.verdict = GcVerdict::NotAPool { reason };
            return Ok(outcome);
        }
    }
    let age = age(&st);
    let age_secs = age.as_secs();
    if st.st_size == 0 && age < CREATION_GRACE {
        outcome.verdict = GcVerdict::BeingCreated { age_secs };
        return Ok(outcome);
    }
    let locked = if dry_run {
        !segment::gc_lock_held(&fd)
    } else {
        segment::try_lock_gc(&fd)?
    };
    if !locked {
        outcome.verdict = GcVerdict::Joining;
        return Ok(outcome);
    }
    // The header before the liveness locks (see above).
    let header = if st.st_size == 0 {
        None
    } else {
        Some(read_header(&fd, st.st_size as u64)?)
    };
    let live = live_slots(&fd).iter().filter(|&&alive| alive).count();
    let verdict = match header {
        _ if live > 0 => GcVerdict::InUse { live },
        None => GcVerdict::NeverSized { age_secs },
        Some(HeaderState::Dead) => GcVerdict::MarkedDead,
        Some(HeaderState::Invalid(reason)) => GcVerdict::NotAPool { reason },
        Some(HeaderState::Valid(h)) => GcVerdict::Abandoned {
            processes: h.slots.iter().filter(|s| s.0 == SLOT_ACTIVE).count(),
        },
    };
    if !verdict.removable() || dry_run {
        outcome.verdict = verdict;
        return Ok(outcome);
    }
    #[cfg(feature = "testing")]
    segment::hooks::pause(&segment::hooks::GC_PAUSE_US);
    if matches!(verdict, GcVerdict::Abandoned { .. }) {
        // A joiner that opened the file before we took the gc lock sees
        // this once it gets the lock, and leaves.
        segment::mark_dead(&fd)?;
    }
    outcome.removed = segment::unlink_if_same(bare, &fd)?;
    outcome.verdict = if outcome.removed {
        verdict
    } else {
        GcVerdict::Gone
    };
    // Dropping `fd` lets the gc lock go.
    Ok(outcome)
}

/// How long ago the file was last modified (its creation, for a file never
/// sized); zero for a time in the future or one `SystemTime` cannot hold
/// (anyone who may write the file may set its time to anything).
fn age(st: &FileStat) -> Duration {
    let since_epoch = Duration::new(
        st.st_mtime.max(0) as u64,
        st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
    );
    UNIX_EPOCH
        .checked_add(since_epoch)
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .unwrap_or_default()
}

/// Removes `name` if it is an abandoned pool of ours ([`gc_segment`]);
/// returns whether it did. A segment with a live or joining process is
/// never removed, nor a file that is not a pool.
pub fn remove_if_abandoned(name: &str) -> Result<bool> {
    Ok(gc_segment(name, false)?.removed)
}

/// [`gc_segment`] for every arraypool segment in /dev/shm; returns the
/// names removed.
pub fn collect_abandoned() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in segment::list_segments()? {
        if gc_segment(&name, false).is_ok_and(|o| o.removed) {
            removed.push(name);
        }
    }
    Ok(removed)
}
