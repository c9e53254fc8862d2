//! The channels' backpressure (issue 12, item 2): `send` keeps the
//! (offset, generation) of each copy it sent and polls whether it still
//! exists; a freed copy no longer counts against the channel's budget.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::{guard, to_u64, Code};
use crate::mapped_pool;

/// Whether the block allocated at `offset` as `generation` still exists in
/// the pool (not yet freed by whoever held it last). A hint read without
/// the lock; an offset that is not a block is not outstanding, nor is any
/// block of a pool this process has left and unmapped (it cannot tell).
#[napi(catch_unwind)]
pub fn block_outstanding(pool_id: f64, offset: f64, generation: f64) -> Result<bool, Code> {
    guard(|| {
        let pool = mapped_pool(crate::errors::pool_id_arg(pool_id)?)?;
        let offset = to_u64(offset, "offset", "ERR_INVALID_ARG")?;
        let generation = to_u64(generation, "generation", "ERR_INVALID_ARG")?;
        Ok(pool.is_some_and(|pool| pool.outstanding(offset, generation)))
    })
}
