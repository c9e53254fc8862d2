//! What is in the pool, block by block (`pool.blocks()`, `arraypool
//! blocks <name>`): each used block's place, size, holders, transfer state
//! and age. For hunting leaks.
//!
//! Two readers give the same list:
//!
//! - [`Pool::blocks`], from a process of the pool: one walk of the heap
//!   under the pool lock (a read-only critical section), with `Heap::walk`'s
//!   checks (sizes, boundary tags, `last_block`). A block that breaks the
//!   layout's rules is `CorruptSegment`, as in any other operation.
//! - [`blocks_of`], from outside (the CLI): it does not join the pool, takes
//!   no lock and never maps the file (a named pool's file may be truncated
//!   under the reader at any time, and a mapped page past the new end is a
//!   SIGBUS). It reads the header as `inspect` does, then the block headers
//!   with `pread`, checking each one as `Heap::walk` does. The list is a
//!   snapshot that may be a moment old, or torn by a transaction in
//!   progress; whatever breaks the rules (or a short read) ends the walk,
//!   and the list comes back with what was read before and `problem` set.
//!
//! **Age.** The layout has no timestamp (the 64-byte block header is full:
//! `next_free`/`prev_free` are unused while a block is used, but LAYOUT.md
//! says they are `NONE` then, and giving them a meaning would change the
//! layout's version). A block's age is logical instead: the number of
//! allocations the pool made after it (`next_generation − 1 − generation`;
//! 0 for the newest block). Generations are issued by one counter under the
//! lock, so ages compare across processes and need no clock; a leak shows as
//! blocks whose age keeps growing while the program runs in a steady loop.
//!
//! **Bounded.** At most `limit` blocks are listed, in offset order; the
//! rest are only counted (`total`, `total_bytes`, `in_flight`), so a pool
//! with millions of blocks does not build a huge list.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::Relaxed;

use crate::error::{PoolError, Result};
use crate::inspect::{self, HeaderState};
use crate::layout::*;
use crate::pool::Pool;
use crate::segment;

/// Blocks listed when the caller gives no limit.
pub const DEFAULT_BLOCKS_LIMIT: usize = 10_000;

/// A process slot that holds a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderInfo {
    pub slot: u32,
    /// The pid the slot recorded (display only: pids are reused).
    pub pid: u64,
    /// The slot's liveness lock is held: its process lives. A dead holder's
    /// bit goes at the next reap.
    pub alive: bool,
}

/// One used block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// Where the block (its header) starts, from the segment start.
    pub offset: u64,
    /// Whole block in bytes, header and padding included.
    pub size: u64,
    /// Bytes requested by the allocation.
    pub data_len: u64,
    pub generation: u64,
    /// Allocations the pool made after this one (see the module's doc).
    pub age: u64,
    pub holders: Vec<HolderInfo>,
    /// Freed only once some process attached it from a handle.
    pub transfer_required: bool,
    /// Some process attached it from a handle.
    pub transferred: bool,
    /// Nobody holds it: it waits for a receiver to attach it.
    pub in_flight: bool,
    /// Being freed right now.
    pub releasing: bool,
    /// Freed into its holder's small-block cache (LAYOUT.md §9.1): kept
    /// for that process's next allocation of its size; nobody can attach it.
    pub cached: bool,
}

/// The used blocks of a pool, the first `limit` of them listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockList {
    pub name: String,
    pub blocks: Vec<BlockInfo>,
    /// Used blocks found (listed or not).
    pub total: u64,
    /// Their bytes, headers included.
    pub total_bytes: u64,
    /// How many of them are in flight.
    pub in_flight: u64,
    /// How many of them are cached (see `BlockInfo::cached`).
    pub cached: u64,
    /// Used blocks found but not listed (over the limit).
    pub omitted: u64,
    /// The generation the next allocation gets (ages count from it).
    pub next_generation: u64,
    /// Outside reads only: why the walk stopped early (or could not start).
    pub problem: Option<String>,
}

/// Who a holder slot is: its recorded pid, and whether it lives.
struct Slots {
    pids: Vec<u64>,
    alive: Vec<bool>,
}

impl BlockList {
    fn new(name: &str, next_generation: u64) -> BlockList {
        BlockList {
            name: name.to_string(),
            next_generation,
            ..BlockList::default()
        }
    }

    /// Adds the block whose header words are these, if it is used; checks
    /// what the list reports (`data_len` against the size). The size is
    /// the caller's, already checked.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        limit: usize,
        slots: &Slots,
        offset: u64,
        size: u64,
        tag: u64,
        generation: u64,
        holders: u64,
        data_len: u64,
    ) -> Result<()> {
        match tag & TAG_MASK {
            TAG_FREE => return Ok(()),
            TAG_USED => {}
            _ => {
                return Err(PoolError::corrupt(
                    "tag",
                    format!("block at {offset} has the tag {tag:#x}, neither used nor free"),
                ))
            }
        }
        if data_len > size - BLOCK_HEADER_SIZE {
            return Err(PoolError::corrupt(
                "data_len",
                format!("block at {offset} of {size} bytes claims {data_len} bytes of data"),
            ));
        }
        self.total += 1;
        self.total_bytes = self.total_bytes.wrapping_add(size);
        if holders == 0 {
            self.in_flight += 1;
        }
        if tag & FLAG_CACHED != 0 {
            self.cached += 1;
        }
        if self.blocks.len() >= limit {
            self.omitted += 1;
            return Ok(());
        }
        let holders = (0..MAX_PROCESSES)
            .filter(|k| holders & (1u64 << k) != 0)
            .map(|k| HolderInfo {
                slot: k as u32,
                pid: slots.pids.get(k).copied().unwrap_or(0),
                alive: slots.alive.get(k).copied().unwrap_or(false),
            })
            .collect::<Vec<_>>();
        self.blocks.push(BlockInfo {
            offset,
            size,
            data_len,
            generation,
            age: self
                .next_generation
                .saturating_sub(1)
                .saturating_sub(generation),
            in_flight: holders.is_empty(),
            holders,
            transfer_required: tag & FLAG_TRANSFER_REQUIRED != 0,
            transferred: tag & FLAG_TRANSFERRED != 0,
            releasing: tag & FLAG_RELEASING != 0,
            cached: tag & FLAG_CACHED != 0,
        });
        Ok(())
    }
}

impl Pool {
    /// The pool's used blocks (the first `limit` listed, all counted), read
    /// under the pool lock in one walk of the heap. A block that breaks the
    /// layout's rules is `CorruptSegment` naming the field.
    pub fn blocks(&self, limit: usize) -> Result<BlockList> {
        let state = self.lock_state();
        state.ensure_open(self.name())?;
        self.critical_section(self.wait(), |heap| {
            let h = self.view.header();
            let slots = Slots {
                pids: h.processes.iter().map(|p| p.pid.load(Relaxed)).collect(),
                alive: (0..MAX_PROCESSES)
                    .map(|k| k as u32 == self.slot || self.segment.slot_alive(k))
                    .collect(),
            };
            let mut list = BlockList::new(self.name(), h.next_generation.load(Relaxed));
            heap.walk(|offset, b, size| {
                list.add(
                    limit,
                    &slots,
                    offset,
                    size,
                    b.tag.load(Relaxed),
                    b.generation.load(Relaxed),
                    b.holders.load(Relaxed),
                    b.data_len.load(Relaxed),
                )
            })?;
            Ok(list)
        })
    }
}

/// Bytes read at once when blocks are small (many headers per read).
const READ_CHUNK: usize = 64 << 10;

/// Block headers read with `pread`, a chunk at a time while blocks are
/// small, one header at a time past a large block.
struct HeaderReader<'a> {
    fd: &'a OwnedFd,
    buf: Vec<u8>,
    /// File offset of `buf[0]`, and how many bytes of `buf` were read.
    start: u64,
    len: usize,
}

impl HeaderReader<'_> {
    /// The eight words of the header at `offset`; `None` if the file ends
    /// before it does (a short read).
    fn header_at(&mut self, offset: u64, small_blocks: bool) -> Result<Option<[u64; 8]>> {
        let header = BLOCK_HEADER_SIZE as usize;
        let inside = offset >= self.start
            && offset
                .checked_add(BLOCK_HEADER_SIZE)
                .is_some_and(|end| end <= self.start + self.len as u64);
        if !inside {
            let want = if small_blocks { READ_CHUNK } else { header };
            self.buf.resize(want, 0);
            self.start = offset;
            self.len = segment::read_at(self.fd, &mut self.buf[..want], offset)?;
            if self.len < header {
                return Ok(None);
            }
        }
        let at = (offset - self.start) as usize;
        let mut words = [0u64; 8];
        for (k, w) in words.iter_mut().enumerate() {
            *w = self
                .buf
                .get(at + 8 * k..at + 8 * k + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_le_bytes);
        }
        Ok(Some(words))
    }
}

/// The used blocks of the pool `name` (a /dev/shm name, or an anonymous
/// pool's name or locator), read from outside: no join, no lock, no
/// mapping (see the module's doc). A pool that cannot be read, or a block
/// that breaks the rules, comes back with `problem` set and the blocks read
/// before it; an error only when the pool cannot be opened (not found, not
/// ours, not a name).
pub fn blocks_of(name: &str, limit: usize) -> Result<BlockList> {
    let (bare, fd) = segment::open_any_fd(name)?;
    let size = segment::fd_size(&fd)?;
    let header = match inspect::read_header(&fd, size)? {
        HeaderState::Valid(h) => h,
        HeaderState::Dead => {
            let mut list = BlockList::new(&bare, 0);
            list.problem =
                Some("marked dead by arraypool gc (being removed): nobody can join it".into());
            return Ok(list);
        }
        HeaderState::Invalid(reason) => {
            let mut list = BlockList::new(&bare, 0);
            list.problem = Some(reason);
            return Ok(list);
        }
    };
    let slots = Slots {
        pids: header.slots.iter().map(|&(_, pid, _)| pid).collect(),
        alive: inspect::live_slots(&fd),
    };
    let mut list = BlockList::new(&bare, header.next_generation);
    if let Err(problem) = walk_file(&fd, &header, limit, &slots, &mut list) {
        list.problem = Some(format!(
            "{problem} (read without the lock: if the pool was busy, run again)"
        ));
    }
    Ok(list)
}

/// Walks the heap of the file behind `fd` by its block headers, checking
/// each as `Heap::walk` does; the first violation ends it, in words.
fn walk_file(
    fd: &OwnedFd,
    header: &inspect::Header,
    limit: usize,
    slots: &Slots,
    list: &mut BlockList,
) -> std::result::Result<(), String> {
    let g = header.geometry;
    // Headers at or above it were never written (the pages may not even be backed).
    let reserved = header.reserved_until.clamp(g.heap_start, g.heap_end);
    let mut reader = HeaderReader {
        fd,
        buf: Vec::new(),
        start: 0,
        len: 0,
    };
    let mut offset = g.heap_start;
    let mut prev = NONE;
    let mut prev_size = 0;
    let mut pending = None;
    let add = |list: &mut BlockList, (offset, size, tag, generation, holders, data_len)| {
        list.add(
            limit, slots, offset, size, tag, generation, holders, data_len,
        )
        .map_err(|e| e.to_string())
    };
    // Each step advances by a checked size of at least 64 bytes: bounded.
    while offset < g.heap_end {
        if offset + BLOCK_HEADER_SIZE > reserved {
            return Err(format!(
                "the walk reached offset {offset}, at or above reserved_until ({reserved}), where no block was ever written"
            ));
        }
        let small = prev_size < READ_CHUNK as u64 / 4;
        let words = match reader.header_at(offset, small) {
            Ok(Some(w)) => w,
            Ok(None) => {
                return Err(format!(
                    "the file ends before the block header at {offset} (truncated while read?)"
                ))
            }
            Err(e) => return Err(format!("reading the block header at {offset}: {e}")),
        };
        let [size, prev_phys, tag, generation, holders, data_len, _, _] = words;
        let fits = offset
            .checked_add(size)
            .is_some_and(|end| end <= g.heap_end);
        if size < BLOCK_HEADER_SIZE || !size.is_multiple_of(BLOCK_ALIGN) || !fits {
            return Err(format!("block at {offset} has an impossible size {size}"));
        }
        if prev_phys != prev {
            return Err(format!(
                "block at {offset}: prev_phys {prev_phys} but the previous block is at {prev}"
            ));
        }
        if offset + size == g.heap_end && header.last_block != offset {
            return Err(format!(
                "block at {offset} claims {size} bytes, to the heap's end, but the last block is at {}",
                header.last_block
            ));
        }
        // A block is listed once the next one confirmed its size (its
        // prev_phys just did), or `last_block` did for the last one: a
        // scribbled size is never reported as a block's.
        if let Some(p) = pending.take() {
            add(list, p)?;
        }
        pending = Some((offset, size, tag, generation, holders, data_len));
        prev = offset;
        prev_size = size;
        offset += size;
    }
    if let Some(p) = pending {
        add(list, p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Handle, PoolOptions};

    fn pool() -> Pool {
        Pool::create(PoolOptions {
            capacity: Some(1 << 22),
            ..Default::default()
        })
        .expect("pool")
    }

    #[test]
    fn lists_used_blocks_with_their_state_and_age() {
        let pool = pool();
        let a = pool.allocate(100, true).unwrap();
        let b = pool.allocate(5000, false).unwrap();
        let c = pool.allocate(10, true).unwrap();
        // c goes in flight: transfer required, never attached, released.
        pool.release(c.offset, c.generation).unwrap();
        // a is attached from a handle: transferred.
        let handle = Handle {
            segment: pool.name().into(),
            offset: a.offset,
            generation: a.generation,
            byte_offset: 0,
            byte_length: 100,
        };
        pool.attach(&handle).unwrap();
        let list = pool.blocks(DEFAULT_BLOCKS_LIMIT).unwrap();
        assert_eq!((list.total, list.in_flight, list.omitted), (3, 1, 0));
        assert_eq!(list.problem, None);
        let by = |o: u64| list.blocks.iter().find(|x| x.offset == o).unwrap();
        let (ia, ib, ic) = (by(a.offset), by(b.offset), by(c.offset));
        assert_eq!(ia.data_len, 100);
        assert!(ia.transfer_required && ia.transferred && !ia.in_flight);
        assert_eq!(ia.holders.len(), 1);
        assert_eq!(ia.holders[0].slot, pool.slot());
        assert_eq!(ia.holders[0].pid, std::process::id() as u64);
        assert!(ia.holders[0].alive);
        assert!(!ib.transfer_required && !ib.transferred);
        assert!(ib.size >= 5064 && ib.size % 64 == 0 && ib.data_len == 5000);
        assert!(ic.in_flight && ic.holders.is_empty() && !ic.transferred);
        assert_eq!((ia.age, ib.age, ic.age), (2, 1, 0));
        assert_eq!(
            list.total_bytes,
            list.blocks.iter().map(|x| x.size).sum::<u64>()
        );

        let limited = pool.blocks(1).unwrap();
        assert_eq!(
            (limited.blocks.len(), limited.omitted, limited.total),
            (1, 2, 3)
        );

        // From outside, by pread: the same list (needs a named pool, or the
        // memfd locator; this test's pool is anonymous).
        let outside = blocks_of(&pool.locator(None), DEFAULT_BLOCKS_LIMIT).unwrap();
        assert_eq!(outside.problem, None);
        assert_eq!(outside.blocks, list.blocks);
        assert_eq!(outside.total, 3);
    }

    #[test]
    fn a_corrupt_block_is_an_error_inside_and_a_problem_outside() {
        let pool = pool();
        let a = pool.allocate(100, false).unwrap();
        let _b = pool.allocate(100, false).unwrap();
        let size = pool.view.block(a.offset).unwrap().size.load(Relaxed);
        for bad in [0, 65, u64::MAX - 63, size + 64] {
            pool.view.block(a.offset).unwrap().size.store(bad, Relaxed);
            assert!(matches!(
                pool.blocks(10),
                Err(PoolError::CorruptSegment { .. })
            ));
            let outside = blocks_of(&pool.locator(None), 10).unwrap();
            assert!(outside.problem.is_some(), "size {bad}");
            assert!(outside.blocks.is_empty());
        }
        pool.view.block(a.offset).unwrap().size.store(size, Relaxed);
        let tag = &pool.view.block(a.offset).unwrap().tag;
        let good = tag.load(Relaxed);
        tag.store(0x1234, Relaxed);
        assert!(pool.blocks(10).is_err());
        assert!(blocks_of(&pool.locator(None), 10)
            .unwrap()
            .problem
            .is_some());
        tag.store(good, Relaxed);
        assert_eq!(pool.blocks(10).unwrap().total, 2);
    }
}
