//! Whether a block a sender copied into the pool is still there: the
//! channels' backpressure (`send` waits while the bytes it sent are not
//! given back) polls this instead of waiting for an answer message.

use std::sync::atomic::Ordering::Relaxed;

use crate::allocator::Heap;
use crate::layout::*;
use crate::pool::Pool;

impl Pool {
    /// Whether the block allocated at `offset` as `generation` still exists
    /// (a used block start with that generation): false once it is freed,
    /// whoever freed it, and for any offset that is not a block.
    ///
    /// Read without the lock: it is a hint for pacing, never a decision
    /// about memory. Every word read is bounds-checked through the heap; a
    /// racing or forged value can only make a sender wait a little longer
    /// or send a little sooner. A closed pool has nothing outstanding.
    pub fn outstanding(&self, offset: u64, generation: u64) -> bool {
        if self.is_closed() {
            return false;
        }
        let heap = Heap::new(&self.view, &self.geometry);
        let Ok(block) = heap.block(offset) else {
            return false;
        };
        matches!(heap.is_block_start(offset), Ok(true))
            && block.tag.load(Relaxed) & TAG_MASK == TAG_USED
            && block.generation.load(Relaxed) == generation
    }
}
