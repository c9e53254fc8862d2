//! `attachCompact`: reads a compact handle naming a known pool and attaches
//! it in one call, the fast path of `revive` (src/transferable.ts). Reviving
//! runs cold, once per array a message carries: the JS reader, the pool
//! lookup and the attach call were ~7.5 µs of a ~15 µs revive in the message
//! loop (Node 24, bench scenario 4), each piece several times its warm cost.
//!
//! The pool is the one open in this process under the name the handle's
//! segment field spells (so handles of several pools all take this path).
//! The string is read by `arraypool_core::compact::parse_compact`, which
//! accepts only the one spelling of a handle naming that pool; for anything
//! else this takes nothing and answers `false`, and JS reads the string the
//! slow way (which gives a malformed handle its error).

use std::mem::MaybeUninit;
use std::sync::Arc;

use arraypool_core::Pool;
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use arraypool_core::compact::{
    compact_segment, parse_compact, CompactHandle, MAX_COMPACT_LEN, MAX_DIMS,
};

use crate::errors::{guard, Code, JsError};
use crate::views::{self, OutSlots};

/// What `attachCompact` writes to `out`: `[viewId, offset, generation,
/// byteOffset, byteLength, dtype index, pool id, ndims, d0, d1, ...]`.
pub const COMPACT_OUT_SLOTS: usize = 8 + MAX_DIMS;

/// `attachCompact(text, out)`: `true` once the handle `text` names a pool
/// open in this process and was attached (a lazy view, as `attachUnviewed`
/// makes; see `COMPACT_OUT_SLOTS` for `out`); `false`, having taken
/// nothing, for any string that is not such a handle. A handle of the pool
/// that cannot be attached (stale, out of range) throws what
/// `attachUnviewed` throws.
#[napi(catch_unwind)]
pub fn attach_compact(env: &Env, text: Unknown, out: Unknown) -> Result<bool, Code> {
    guard(|| attach_compact_inner(env.raw(), text.raw(), out.raw()))
}

pub(crate) fn attach_compact_inner(
    env: sys::napi_env,
    text: sys::napi_value,
    out: sys::napi_value,
) -> std::result::Result<bool, JsError> {
    let out = views::out_slots(env, out, COMPACT_OUT_SLOTS)?;
    let Some(len) = utf16_length(env, text).filter(|&n| n <= MAX_COMPACT_LEN) else {
        // Not a string, or longer than any handle (JS measures `text.length`
        // in UTF-16 units): the slow reader's to refuse.
        return Ok(false);
    };
    // Room for MAX_COMPACT_LEN bytes and napi's NUL, left uninitialised
    // (zeroing it cost more than the parse). A handle is ASCII, one byte
    // per UTF-16 unit: `copied == len` means the whole string was copied.
    // A string with other characters either differs there, or was cut and
    // holds a non-ASCII byte the reader refuses (had the copied bytes all
    // been ASCII, they would have been all `len` units of the string).
    let mut bytes = [MaybeUninit::<u8>::uninit(); MAX_COMPACT_LEN + 1];
    let mut copied = 0usize;
    // SAFETY: `bytes` has room for `bytes.len()` bytes, NUL included; napi
    // writes at most that and the count written (NUL excluded) to
    // `copied`. UTF-8, not Latin-1: napi's Latin-1 keeps only the low byte
    // of a wider character, which could turn a foreign character into a
    // digit; in UTF-8 every non-ASCII character is bytes the reader refuses.
    let status = unsafe {
        sys::napi_get_value_string_utf8(
            env,
            text,
            bytes.as_mut_ptr().cast(),
            bytes.len(),
            &mut copied,
        )
    };
    if status != sys::Status::napi_ok || copied != len {
        return Ok(false);
    }
    // SAFETY: napi wrote the first `copied` bytes (`copied == len <=
    // MAX_COMPACT_LEN < bytes.len()`), which stay alive and unchanged here.
    let text = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<u8>(), copied) };
    // A pool this process has not opened (or closed) is the slow path's to
    // report.
    let Some((pool_id, pool)) = compact_segment(text).and_then(crate::open_pool_named) else {
        return Ok(false);
    };
    let Some(h) = parse_compact(text, pool.name()) else {
        return Ok(false);
    };
    attach_parsed(pool_id, pool, &h, &out)?;
    #[cfg(feature = "testing")]
    testing::TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(true)
}

/// Test-only: counts the handles this path took, so that a test can tell
/// that `revive` went this way (both ways give the same result).
#[cfg(feature = "testing")]
pub mod testing {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) static TAKEN: AtomicU64 = AtomicU64::new(0);

    pub fn taken() -> u64 {
        TAKEN.load(Ordering::Relaxed)
    }
}

/// The length of the JS string `value` in UTF-16 units (JS `length`), or
/// None if it is not a string.
fn utf16_length(env: sys::napi_env, value: sys::napi_value) -> Option<usize> {
    let mut len = 0usize;
    // SAFETY: a null buffer asks napi for the length only (written to `len`).
    let status =
        unsafe { sys::napi_get_value_string_utf16(env, value, std::ptr::null_mut(), 0, &mut len) };
    (status == sys::Status::napi_ok).then_some(len)
}

/// Attaches a parsed handle as `attachUnviewed` does and writes the rest of
/// its fields after the three the registration writes.
fn attach_parsed(
    pool_id: u32,
    pool: Arc<Pool>,
    h: &CompactHandle,
    out: &OutSlots,
) -> std::result::Result<(), JsError> {
    views::check_view_size(h.range.byte_length)?;
    crate::attach_range_unviewed(pool_id, pool, &h.range, out)?;
    let mut rest = [0f64; COMPACT_OUT_SLOTS - 3];
    rest[0] = h.range.byte_offset as f64;
    rest[1] = h.range.byte_length as f64;
    rest[2] = h.dtype as f64;
    rest[3] = f64::from(pool_id);
    rest[4] = h.ndims as f64;
    for (slot, dim) in rest[5..].iter_mut().zip(h.shape()) {
        *slot = *dim as f64;
    }
    out.write_from(3, &rest[..5 + h.ndims]);
    Ok(())
}
