//! What this process holds: its references per block (several views of one
//! block are counted here, never in the segment), its cached blocks, and
//! whether it closed the pool. One mutex guards both, so `close` is ordered with every
//! `allocate`, `attach`, `share` and `release`: after `close`, nothing is
//! handed out.

use std::collections::HashMap;

use crate::block_cache::BlockCache;
use crate::error::{PoolError, Result};

/// Hashes block offsets (64-byte multiples) with one multiply: the map sits
/// on the allocate/release path, where SipHash costs more than the
/// allocation itself.
#[derive(Default, Clone, Copy)]
pub(crate) struct OffsetHasher(u64);

impl std::hash::Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, offset: u64) {
        self.0 = (offset >> 6).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// One held block, as validated when this process took it: its data length
/// is this process's copy (the segment's may change under it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalRef {
    pub generation: u64,
    pub data_len: u64,
    pub count: u64,
    /// Whether the block's handle may have left this process (see
    /// `Pool::mark_escaped`). False only for blocks allocated with
    /// `allocate_local` and never marked since: their last release may then
    /// free them even if they were allocated `transfer_required`.
    pub escaped: bool,
    /// The block's whole size (header included) as this process got it:
    /// from the allocator, its cache, or a size confirmed by the block's
    /// neighbour when attaching. Nobody changes the size of a block held
    /// (only free blocks are split and merged), so while the segment's word
    /// still says this, the release need not confirm it again through the
    /// neighbour and the bitmap (two more cache lines, see `drop_step`).
    pub block_size: u64,
}

impl LocalRef {
    /// This process's first reference to a block of `block_size` bytes it
    /// just allocated or took from its cache.
    pub fn new(generation: u64, data_len: u64, escaped: bool, block_size: u64) -> LocalRef {
        LocalRef {
            generation,
            data_len,
            count: 1,
            escaped,
            block_size,
        }
    }
}

#[derive(Default)]
pub(crate) struct LocalState {
    /// The blocks this process holds, by offset; and, with `count` 0, a
    /// marker for each block its last release put in `cache` (kept so that
    /// taking the block back overwrites the entry: a map insert and remove
    /// per cached allocate+release pair cost ~20 ns, two lookups ~5 ns).
    /// Only `held` and `LocalState`'s methods read it as held or not.
    pub refs: HashMap<u64, LocalRef, std::hash::BuildHasherDefault<OffsetHasher>>,
    /// Small blocks this process freed into its cache (`block_cache.rs`).
    pub cache: BlockCache,
    pub closed: bool,
}

impl LocalState {
    pub fn ensure_open(&self, name: &str) -> Result<()> {
        if self.closed {
            return Err(PoolError::Closed {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// The reference to `offset` if it is of `generation` (and held: an
    /// entry with no reference marks a cached block, see `refs`).
    pub fn held(&mut self, offset: u64, generation: u64) -> Option<&mut LocalRef> {
        self.refs
            .get_mut(&offset)
            .filter(|r| r.generation == generation && r.count > 0)
    }

    /// Records the block just taken at `offset` (first reference): over
    /// the entry its cached life left, if any, else as a new entry.
    #[inline(always)]
    pub fn took(&mut self, offset: u64, taken: LocalRef) {
        match self.refs.get_mut(&offset) {
            // Field by field: a whole-struct copy went through the stack,
            // and the bool's byte was read back as part of a word (a
            // store-forwarding stall, ~4 ns per cached allocation).
            // (Destructured, so that a field added to LocalRef must be
            // added here too.)
            Some(entry) => {
                let LocalRef {
                    generation,
                    data_len,
                    count,
                    escaped,
                    block_size,
                } = taken;
                entry.generation = generation;
                entry.data_len = data_len;
                entry.count = count;
                entry.escaped = escaped;
                entry.block_size = block_size;
            }
            None => {
                self.refs.insert(offset, taken);
            }
        }
    }

    /// Drops the cache's marker entry at `offset` (the block left the
    /// cache without being taken back); a held entry there stays.
    pub fn forget_cached(&mut self, offset: u64) {
        if self.refs.get(&offset).is_some_and(|r| r.count == 0) {
            self.refs.remove(&offset);
        }
    }

    /// Drops every marker entry of the cache (after it was drained).
    pub fn forget_all_cached(&mut self) {
        self.refs.retain(|_, r| r.count > 0);
    }
}
