//! # arraypool-core
//!
//! One POSIX shared-memory segment managed as a pool of blocks that several
//! processes allocate from, reference and free, with no copy between them.
//!
//! - `segment`: OS calls (naming, opening, mapping, reserving pages) for
//!   both backings; `file_locks`: the liveness and gc locks on its file.
//! - `memfd`: anonymous pools (the default): creation, sealing, attaching
//!   through /proc, finding them.
//! - `layout`: the `#[repr(C)]` structs in the segment (see `LAYOUT.md`)
//!   and the header's validation.
//! - `view`: checked access to the mapping; `journal`: the undo journal.
//! - `lock`: the cross-process spinlock with owner, epoch and takeover.
//! - `allocator`: TLSF with boundary tags, O(1), behind `BlockAllocator`;
//!   every word it reads from the segment is checked (the trust boundary).
//! - `refs`: holder records per process, the transferred rule.
//! - `handle`: handle validation.
//! - `pool`: `Pool`, composing them (with `register`, `txn`, `release`,
//!   `reap`, `reserve`, `local`, `block_cache`: one job each).
//! - `inspect`: reading a segment from outside (`ls`, `stats`, `gc`).
//! - `check`: the full invariant walk; `capacity`: default sizes;
//!   `testing`: fault-injection hooks (cargo feature `testing` only).
//!
//! ```
//! use arraypool_core::{Pool, PoolOptions, Handle};
//! let pool = Pool::create(PoolOptions { capacity: Some(1 << 22), ..Default::default() })?;
//! let block = pool.allocate(1024, false)?;
//! // SAFETY: we hold the block; its data is 1024 bytes.
//! unsafe { std::ptr::write_bytes(pool.data_ptr(&block), 7, 1024) };
//! let handle = Handle { segment: pool.name().into(), offset: block.offset,
//!     generation: block.generation, byte_offset: 0, byte_length: 1024 };
//! let again = pool.attach(&handle)?; // another process would do this
//! pool.release(again.offset, again.generation)?;
//! pool.release(block.offset, block.generation)?;
//! assert_eq!(pool.stats()?.live_blocks, 0);
//! # Ok::<(), arraypool_core::PoolError>(())
//! ```

mod allocator;
mod block_cache;
pub mod blocks;
mod capacity;
mod check;
pub mod compact;
pub mod error;
mod file_locks;
pub mod handle;
mod idle;
pub mod inspect;
mod journal;
pub mod layout;
mod local;
pub mod lock;
pub mod memfd;
mod outstanding;
pub mod pool;
mod reap;
mod refs;
mod register;
mod release;
mod reserve;
pub mod segment;
#[cfg(feature = "testing")]
pub mod testing;
mod txn;
pub mod view;

pub use blocks::{blocks_of, BlockInfo, BlockList, HolderInfo, DEFAULT_BLOCKS_LIMIT};
pub use check::CheckReport;
pub use error::{PoolError, Result};
pub use handle::{BlockRange, Handle};
pub use inspect::{collect_abandoned, inspect, remove_if_abandoned, ProcessInfo, SegmentInfo};
pub use layout::LAYOUT_VERSION;
pub use pool::{BlockRef, Pool, PoolOptions, ReapReport, Stats};
pub use segment::{
    list_segments, random_name, shm_filesystem_bytes, validate_name, Backing, NAME_PREFIX,
};
