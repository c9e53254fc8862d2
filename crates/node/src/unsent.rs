//! Blocks whose handle never left this process (issue 12, item 3).
//! `allocate` (lib.rs) takes a new block's handle not to have left; the
//! TransferableArray calls `markEscaped` before a handle can leave (a read
//! of the handle's `generation`, `toHandle()`): until then the block's last
//! release in this process frees it even if it was allocated
//! `transferRequired`.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::{guard, to_u64, Code, JsError};
use crate::mapped_pool;

type JsResult<T> = std::result::Result<T, JsError>;

/// Records that the handle of a block this process holds may leave the
/// process: it keeps the transferred rule from now on. Returns false if this
/// process does not hold the block (nothing to protect). Works on a pool
/// being closed too (its views are still live); false for one left and
/// unmapped (this process holds nothing there: a released array's handle
/// can still be read).
#[napi(catch_unwind)]
pub fn mark_escaped(pool_id: f64, offset: f64, generation: f64) -> Result<bool, Code> {
    guard(|| mark_escaped_inner(crate::errors::pool_id_arg(pool_id)?, offset, generation))
}

pub(crate) fn mark_escaped_inner(pool_id: u32, offset: f64, generation: f64) -> JsResult<bool> {
    let pool = mapped_pool(pool_id)?;
    let offset = to_u64(offset, "offset", "ERR_INVALID_ARG")?;
    let generation = to_u64(generation, "generation", "ERR_INVALID_ARG")?;
    Ok(pool.is_some_and(|pool| pool.mark_escaped(offset, generation)))
}

/// Whether this process takes the block's handle to have left it; null if
/// it does not hold the block (tests, diagnostics).
#[napi(catch_unwind)]
pub fn block_escaped(pool_id: f64, offset: f64, generation: f64) -> Result<Option<bool>, Code> {
    guard(|| {
        let pool = mapped_pool(crate::errors::pool_id_arg(pool_id)?)?;
        let offset = to_u64(offset, "offset", "ERR_INVALID_ARG")?;
        let generation = to_u64(generation, "generation", "ERR_INVALID_ARG")?;
        Ok(pool.and_then(|pool| pool.escaped(offset, generation)))
    })
}
