//! The segment's binary layout: `#[repr(C)]` structs that live in shared
//! memory and are located by byte offsets from the segment start, never by
//! pointers, so each process may map the segment at a different address.
//! `LAYOUT.md` describes the same layout for readers in other languages.
//!
//! Every shared field is an `AtomicU64`: the same bytes as a `u64`, usable
//! from several processes at once, and uniform for the undo journal.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::error::{PoolError, Result};
use crate::view::SegmentView;

/// `b"ARRPOOL\0"` as a little-endian integer.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ARRPOOL\0");
/// Bumped whenever any struct below changes shape or meaning.
pub const LAYOUT_VERSION: u32 = 3;

/// Block starts, block sizes and data starts are multiples of this.
pub const BLOCK_ALIGN: u64 = 64;
/// Every block starts with one 64-byte [`BlockHeader`]; its data follows.
pub const BLOCK_HEADER_SIZE: u64 = 64;
/// Size of the process table.
pub const MAX_PROCESSES: usize = 64;
/// Entries of the undo journal: enough for the largest single transaction
/// (allocation with a three-way split, or a free that coalesces both sides).
pub const JOURNAL_CAPACITY: usize = 96;
/// TLSF second-level subdivisions per power of two (log2).
pub const SL_LOG: u32 = 4;
pub const SL_COUNT: usize = 1 << SL_LOG;
/// TLSF first-level classes: block sizes below 64 * 2^(FL_COUNT + 3) bytes.
pub const FL_COUNT: usize = 44;
/// Largest segment: 1 PiB (well inside the size classes above).
pub const MAX_CAPACITY: u64 = 1 << 50;
/// Header and bitmap are padded to a page so the heap starts page aligned.
pub const PAGE: u64 = 4096;

/// Offset 0 is the segment header, so 0 never names a block: it is "none".
pub const NONE: u64 = 0;

/// Block tags: the upper 32 bits of `BlockHeader::tag` say used or free (two
/// unlikely constants, so zeroed or random memory does not read as a block),
/// the lower 32 bits hold flags.
pub const TAG_USED: u64 = 0x5553_4544 << 32; // "USED"
pub const TAG_FREE: u64 = 0x4652_4545 << 32; // "FREE"
pub const TAG_MASK: u64 = 0xffff_ffff << 32;
/// Used block: freed only once `TRANSFERRED` is set too.
pub const FLAG_TRANSFER_REQUIRED: u64 = 1;
/// Used block: some process attached it from a handle.
pub const FLAG_TRANSFERRED: u64 = 2;
/// Used block: being freed (pages are being returned); attaching fails.
pub const FLAG_RELEASING: u64 = 4;
/// Free block: some of its pages may not be backed by tmpfs yet; they must
/// be reserved (`fallocate`) before the block is handed out.
pub const FLAG_UNRESERVED: u64 = 8;
/// Used block: freed by its process into its own small-block cache (see
/// `block_cache.rs`); held by that process alone, attaching it fails.
pub const FLAG_CACHED: u64 = 16;

/// `ProcessSlot::cached` for `blocks` cached blocks of `bytes` bytes in all
/// (one word, so caching a block is one journaled write; a process caches
/// at most 1 MiB in 256 blocks).
pub const fn cached_word(blocks: u64, bytes: u64) -> u64 {
    (blocks << 32) | (bytes & 0xffff_ffff)
}

/// `(blocks, bytes)` of a `ProcessSlot::cached` word.
pub const fn cached_parts(word: u64) -> (u64, u64) {
    (word >> 32, word & 0xffff_ffff)
}

/// Process slot states.
pub const SLOT_FREE: u64 = 0;
pub const SLOT_ACTIVE: u64 = 1;

#[repr(C)]
pub struct JournalEntry {
    /// Byte offset of the word that was overwritten.
    pub offset: AtomicU64,
    /// Its value before the write.
    pub old_value: AtomicU64,
}

#[repr(C)]
pub struct ProcessSlot {
    /// `SLOT_FREE` or `SLOT_ACTIVE`.
    pub state: AtomicU64,
    /// For display only: liveness is the slot's kernel lock, not the pid.
    pub pid: AtomicU64,
    /// How many blocks carry this slot's holder bit.
    pub held_blocks: AtomicU64,
    /// Times this slot was claimed (diagnostics).
    pub claims: AtomicU64,
    /// What this slot keeps in its small-block cache: blocks in the upper
    /// 32 bits, their bytes in the lower 32 (see `cached_word`); counted in
    /// `used_bytes`/`live_blocks` too, reported apart by `stats`.
    pub cached: AtomicU64,
    pub reserved: [AtomicU64; 3],
}

#[repr(C)]
pub struct SegmentHeader {
    pub magic: AtomicU64,
    pub layout_version: AtomicU64,
    pub header_size: AtomicU64,
    pub capacity: AtomicU64,
    pub bitmap_offset: AtomicU64,
    pub heap_start: AtomicU64,
    pub heap_end: AtomicU64,
    /// Pid of the creating process (display only).
    pub creator_pid: AtomicU64,
    /// 0 when free, else the owner's slot index + 1.
    pub lock_word: AtomicU64,
    /// How often a dead owner's lock was taken over.
    pub lock_takeovers: AtomicU64,
    /// Source of block generations; never reused.
    pub next_generation: AtomicU64,
    pub live_blocks: AtomicU64,
    pub in_flight_blocks: AtomicU64,
    /// Bytes of used blocks, headers included.
    pub used_bytes: AtomicU64,
    pub journal_len: AtomicU64,
    pub fl_bitmap: AtomicU64,
    pub journal: [JournalEntry; JOURNAL_CAPACITY],
    pub sl_bitmap: [AtomicU64; FL_COUNT],
    pub free_heads: [[AtomicU64; SL_COUNT]; FL_COUNT],
    pub processes: [ProcessSlot; MAX_PROCESSES],
    /// Heap bytes below this offset have been reserved at some point (and so
    /// have their block-start bitmap words). The heap is first used from its
    /// start upwards, so everything above is virgin: handles pointing there
    /// are invalid without reading the (unbacked) bitmap.
    pub reserved_until: AtomicU64,
    /// The pool's random 128-bit id (low word first); an anonymous pool's
    /// name carries it, and opening checks it (layout version 2).
    pub pool_id: [AtomicU64; 2],
    /// Offset of the physically last block: a block whose size reaches the
    /// heap's end has no neighbour to confirm it, so this does (a size
    /// scribbled to reach the end would otherwise swallow the blocks after).
    pub last_block: AtomicU64,
}

#[repr(C)]
pub struct BlockHeader {
    /// Whole block size in bytes, header included; a multiple of 64, >= 64.
    pub size: AtomicU64,
    /// Offset of the physically preceding block, `NONE` for the first.
    pub prev_phys: AtomicU64,
    /// `TAG_USED`/`TAG_FREE` | flags.
    pub tag: AtomicU64,
    /// Unique per allocation (from `next_generation`).
    pub generation: AtomicU64,
    /// Bit i set: process slot i holds at least one reference.
    pub holders: AtomicU64,
    /// Bytes requested by the allocation (<= size - 64).
    pub data_len: AtomicU64,
    /// Free-list links (free blocks only).
    pub next_free: AtomicU64,
    pub prev_free: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<BlockHeader>() as u64 == BLOCK_HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<ProcessSlot>() == 64);

pub const fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// Where everything is, derived from the capacity alone; an attaching
/// process recomputes it and compares with the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub capacity: u64,
    pub header_size: u64,
    pub bitmap_offset: u64,
    pub heap_start: u64,
    pub heap_end: u64,
}

impl Geometry {
    /// The block-start bitmap has one bit per 64-byte unit of the whole
    /// segment (bit i: a block starts at i * 64).
    pub fn for_capacity(capacity: u64) -> Option<Geometry> {
        let header_size = round_up(std::mem::size_of::<SegmentHeader>() as u64, BLOCK_ALIGN);
        let bitmap_offset = header_size;
        let bitmap_bytes = round_up(capacity.div_ceil(BLOCK_ALIGN), 64) / 8;
        let heap_start = round_up(bitmap_offset + bitmap_bytes, PAGE);
        let heap_end = capacity / BLOCK_ALIGN * BLOCK_ALIGN;
        if heap_end < heap_start + BLOCK_HEADER_SIZE {
            return None;
        }
        Some(Geometry {
            capacity,
            header_size,
            bitmap_offset,
            heap_start,
            heap_end,
        })
    }

    /// The smallest capacity with room for one block.
    pub fn min_capacity() -> u64 {
        let mut c = PAGE;
        while Geometry::for_capacity(c).is_none() {
            c += PAGE;
        }
        c
    }
}

/// Validates a mapped segment's header against the mapping's length and
/// returns its geometry: the process keeps this copy and never re-reads the
/// geometry fields from shared memory (another process could change them).
pub fn validate_header(view: &SegmentView, len: u64) -> Result<Geometry> {
    let h = view.header();
    let bad = |reason: String| Err(PoolError::InvalidSegment { reason });
    if h.magic.load(Acquire) != MAGIC {
        return bad("bad magic: not an arraypool segment, or not initialised yet".into());
    }
    let version = h.layout_version.load(Relaxed);
    if version != LAYOUT_VERSION as u64 {
        return bad(format!(
            "layout version {version}, this build reads {LAYOUT_VERSION}"
        ));
    }
    let capacity = h.capacity.load(Relaxed);
    if capacity != len {
        return bad(format!(
            "header says {capacity} bytes, the segment has {len}"
        ));
    }
    if capacity > MAX_CAPACITY {
        return bad(format!(
            "capacity {capacity} exceeds the maximum {MAX_CAPACITY}"
        ));
    }
    let expected = Geometry::for_capacity(capacity);
    let found = Geometry {
        capacity,
        header_size: h.header_size.load(Relaxed),
        bitmap_offset: h.bitmap_offset.load(Relaxed),
        heap_start: h.heap_start.load(Relaxed),
        heap_end: h.heap_end.load(Relaxed),
    };
    match expected {
        Some(geometry) if geometry == found => Ok(geometry),
        _ => bad(format!("geometry {found:?} does not match {expected:?}")),
    }
}

/// TLSF size classes over 64-byte units. Units below 16 map one-to-one into
/// first level 0; above, first level = floor(log2) - 3 with 16 linear
/// second-level classes per power of two.
pub fn size_class(size: u64) -> (usize, usize) {
    let units = size / BLOCK_ALIGN;
    if units < SL_COUNT as u64 {
        return (0, units as usize);
    }
    let log2 = 63 - units.leading_zeros();
    let fl = (log2 - SL_LOG + 1) as usize;
    let sl = ((units >> (log2 - SL_LOG)) as usize) - SL_COUNT;
    (fl, sl)
}

/// The class to start searching from so that every block found fits `size`
/// (the request rounded up to its class's upper bound).
pub fn search_class(size: u64) -> (usize, usize) {
    let units = size / BLOCK_ALIGN;
    if units < SL_COUNT as u64 {
        return (0, units as usize);
    }
    let log2 = 63 - units.leading_zeros();
    let rounded = units.saturating_add((1u64 << (log2 - SL_LOG)) - 1);
    size_class(rounded.saturating_mul(BLOCK_ALIGN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fits_its_declared_constants() {
        let g = Geometry::for_capacity(1 << 20).expect("1 MiB is enough");
        assert_eq!(g.heap_start % PAGE, 0);
        assert!(g.header_size >= std::mem::size_of::<SegmentHeader>() as u64);
        assert_eq!(std::mem::size_of::<JournalEntry>(), 16);
    }

    #[test]
    fn header_size_is_unchanged_since_version_1() {
        use std::mem::offset_of;
        assert_eq!(offset_of!(SegmentHeader, processes), 7648);
        assert_eq!(offset_of!(SegmentHeader, reserved_until), 11744);
        assert_eq!(offset_of!(SegmentHeader, pool_id), 11752);
        let g = Geometry::for_capacity(1 << 20).expect("1 MiB is enough");
        assert_eq!(g.header_size, 11776, "version 2 kept the header size");
    }

    /// Every offset LAYOUT.md gives: the header table (`| offset | size |
    /// \`field\` |`) and the `+Off` tables of ProcessSlot, BlockHeader and
    /// JournalEntry, read from the document itself so the two cannot drift.
    #[test]
    fn every_offset_in_layout_md_is_the_real_one() {
        use std::mem::{offset_of, size_of};
        let doc = include_str!("../LAYOUT.md");
        let header: &[(&str, usize, usize)] = &[
            ("magic", offset_of!(SegmentHeader, magic), 8),
            (
                "layout_version",
                offset_of!(SegmentHeader, layout_version),
                8,
            ),
            ("header_size", offset_of!(SegmentHeader, header_size), 8),
            ("capacity", offset_of!(SegmentHeader, capacity), 8),
            ("bitmap_offset", offset_of!(SegmentHeader, bitmap_offset), 8),
            ("heap_start", offset_of!(SegmentHeader, heap_start), 8),
            ("heap_end", offset_of!(SegmentHeader, heap_end), 8),
            ("creator_pid", offset_of!(SegmentHeader, creator_pid), 8),
            ("lock_word", offset_of!(SegmentHeader, lock_word), 8),
            (
                "lock_takeovers",
                offset_of!(SegmentHeader, lock_takeovers),
                8,
            ),
            (
                "next_generation",
                offset_of!(SegmentHeader, next_generation),
                8,
            ),
            ("live_blocks", offset_of!(SegmentHeader, live_blocks), 8),
            (
                "in_flight_blocks",
                offset_of!(SegmentHeader, in_flight_blocks),
                8,
            ),
            ("used_bytes", offset_of!(SegmentHeader, used_bytes), 8),
            ("journal_len", offset_of!(SegmentHeader, journal_len), 8),
            ("fl_bitmap", offset_of!(SegmentHeader, fl_bitmap), 8),
            (
                "journal[96]",
                offset_of!(SegmentHeader, journal),
                16 * JOURNAL_CAPACITY,
            ),
            (
                "sl_bitmap[44]",
                offset_of!(SegmentHeader, sl_bitmap),
                8 * FL_COUNT,
            ),
            (
                "free_heads[44][16]",
                offset_of!(SegmentHeader, free_heads),
                8 * FL_COUNT * SL_COUNT,
            ),
            (
                "processes[64]",
                offset_of!(SegmentHeader, processes),
                64 * MAX_PROCESSES,
            ),
            (
                "reserved_until",
                offset_of!(SegmentHeader, reserved_until),
                8,
            ),
            ("pool_id[2]", offset_of!(SegmentHeader, pool_id), 16),
            ("last_block", offset_of!(SegmentHeader, last_block), 8),
        ];
        let slot: &[(&str, usize)] = &[
            ("state", offset_of!(ProcessSlot, state)),
            ("pid", offset_of!(ProcessSlot, pid)),
            ("held_blocks", offset_of!(ProcessSlot, held_blocks)),
            ("claims", offset_of!(ProcessSlot, claims)),
            ("cached", offset_of!(ProcessSlot, cached)),
            ("reserved[3]", offset_of!(ProcessSlot, reserved)),
        ];
        let block: &[(&str, usize)] = &[
            ("size", offset_of!(BlockHeader, size)),
            ("prev_phys", offset_of!(BlockHeader, prev_phys)),
            ("tag", offset_of!(BlockHeader, tag)),
            ("generation", offset_of!(BlockHeader, generation)),
            ("holders", offset_of!(BlockHeader, holders)),
            ("data_len", offset_of!(BlockHeader, data_len)),
            ("next_free", offset_of!(BlockHeader, next_free)),
            ("prev_free", offset_of!(BlockHeader, prev_free)),
        ];
        let cells = |line: &str| -> Vec<String> {
            line.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        };
        let section = |title: &str| -> &str {
            let start = doc.find(title).expect("section present");
            let rest = &doc[start + title.len()..];
            &rest[..rest.find("\n## ").unwrap_or(rest.len())]
        };
        // Header: | offset | size | `field` | meaning |
        let mut seen = 0;
        for line in section("## 3. Segment header").lines() {
            let c = cells(line);
            if c.len() < 3 || !c[2].starts_with('`') {
                continue;
            }
            let Ok(offset) = c[0].parse::<usize>() else {
                continue;
            };
            let name = c[2].trim_matches('`');
            let Some(&(_, real, size)) = header.iter().find(|(n, _, _)| *n == name) else {
                // ProcessSlot's and JournalEntry's own rows share the section.
                continue;
            };
            assert_eq!(offset, real, "LAYOUT.md offset of {name}");
            assert_eq!(
                c[1].parse::<usize>().ok(),
                Some(size),
                "LAYOUT.md size of {name}"
            );
            seen += 1;
        }
        assert_eq!(
            seen,
            header.len(),
            "every header field is in LAYOUT.md's table"
        );
        // +Off tables: | +off | `field` | meaning |
        for (title, fields) in [("## 3. Segment header", slot), ("## 5. Blocks", block)] {
            let mut seen = 0;
            for line in section(title).lines() {
                let c = cells(line);
                if c.len() < 2 || !c[1].starts_with('`') {
                    continue;
                }
                let Ok(offset) = c[0].parse::<usize>() else {
                    continue;
                };
                let name = c[1].trim_matches('`');
                if let Some(&(_, real)) = fields.iter().find(|(n, _)| *n == name) {
                    assert_eq!(offset, real, "LAYOUT.md offset of {name}");
                    seen += 1;
                }
            }
            assert_eq!(seen, fields.len(), "every field of {title} is in LAYOUT.md");
        }
        assert!(doc.contains(&format!(
            "`sizeof(SegmentHeader) = {}`",
            size_of::<SegmentHeader>()
        )));
        assert!(doc.contains("`+0 offset`") && offset_of!(JournalEntry, offset) == 0);
        assert!(doc.contains("`+8 old_value`") && offset_of!(JournalEntry, old_value) == 8);
        // struct flock as LAYOUT.md §7 gives it.
        assert_eq!(size_of::<libc::flock>(), 32);
        assert_eq!(offset_of!(libc::flock, l_type), 0);
        assert_eq!(offset_of!(libc::flock, l_whence), 2);
        assert_eq!(offset_of!(libc::flock, l_start), 8);
        assert_eq!(offset_of!(libc::flock, l_len), 16);
        assert_eq!(offset_of!(libc::flock, l_pid), 24);
        assert_eq!((libc::F_RDLCK, libc::F_WRLCK, libc::F_UNLCK), (0, 1, 2));
        assert_eq!(
            (libc::F_OFD_GETLK, libc::F_OFD_SETLK, libc::F_OFD_SETLKW),
            (36, 37, 38)
        );
    }

    #[test]
    fn tiny_capacity_has_no_geometry() {
        assert!(Geometry::for_capacity(4096).is_none());
        let min = Geometry::min_capacity();
        assert!(Geometry::for_capacity(min).is_some());
    }

    #[test]
    fn size_classes_are_monotonic_and_search_class_fits() {
        let mut last = (0, 0);
        for units in 1..5000u64 {
            let c = size_class(units * 64);
            assert!(c >= last, "class order broke at {units}");
            last = c;
            // Every block in search_class or above is at least this large.
            let s = search_class(units * 64);
            assert!(s >= c);
        }
        assert_eq!(size_class(64), (0, 1));
        assert_eq!(size_class(16 * 64), (1, 0));
        assert_eq!(size_class(31 * 64), (1, 15));
        assert_eq!(size_class(32 * 64), (2, 0));
        let (fl, _) = size_class(u64::MAX / 64 * 64);
        assert!(fl < 64);
    }
}
