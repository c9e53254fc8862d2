//! External ArrayBuffers over pool memory. Each one owns one core reference,
//! released exactly once: by `release()` (which also detaches it) or by its
//! finalizer after GC, whichever comes first.
//!
//! V8 counts each view's length as external memory, exactly as for an
//! ArrayBuffer it allocated, and it stays counted that way: arraypool makes
//! no `napi_adjust_external_memory` call. 0.1 took the length back at
//! creation and returned it from the finalizer. V8 takes the length off
//! itself when it detaches or sweeps the buffer, before napi runs the
//! finalizer, so the counter went below zero in between; V8 13.6+ (Node 24,
//! 26) checks that and aborts. A correct variant (a reserve that keeps the
//! counter >= 0) was measured on Node 20 and 24 and caused as many or up to 2.5x more
//! major GCs than plain counting: every refund after a sweep counts as new
//! external memory and starts the next GC. Plain counting also lets V8
//! collect dropped views, and so free their blocks, sooner.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arraypool_core::{BlockRef, Pool};
use napi::bindgen_prelude::*;
use napi::sys;

use crate::errors::{coded, from_napi, guard_callback, Code, JsError};
use crate::registry::{registry, View};

/// The largest view the running Node can make: its `buffer.constants.MAX_LENGTH`
/// (napi builds external ArrayBuffers as Buffers), set by the TypeScript side
/// at load. 4 GiB on Node 20, 2^53 - 1 from Node 22 on; Node 20's until set.
static MAX_VIEW_BYTES: AtomicU64 = AtomicU64::new(1 << 32);

pub fn set_max_view_bytes(bytes: u64) {
    MAX_VIEW_BYTES.store(bytes, Ordering::Relaxed);
}

pub fn check_view_size(len: u64) -> std::result::Result<(), JsError> {
    let max = MAX_VIEW_BYTES.load(Ordering::Relaxed);
    if len > max {
        return Err(coded(
            "ERR_TOO_LARGE",
            format!("{len} bytes: one view is limited to {max} bytes on this Node (buffer.constants.MAX_LENGTH)"),
        ));
    }
    Ok(())
}

/// Drops the reference a view holds, once. Returns whether it was live.
/// A panic before the view leaves the registry keeps it there with its
/// reference: `release()` can be called again, and a view whose finalizer
/// panicked is released when the pool closes or the process exits.
pub fn release_view(id: u64) -> bool {
    #[cfg(feature = "testing")]
    testing::panic_point();
    // Whether the pool is closing is read under the same lock (one lock,
    // not two, per release): a `close()` that comes later finishes itself
    // once it finds no view left (`close_pool_inner`).
    let (view, closing) = {
        let mut r = registry();
        let view = r.remove_view(id);
        let closing = view
            .as_ref()
            .and_then(|v| r.pools.get(v.pool_id as usize))
            .is_some_and(|p| p.closing);
        (view, closing)
    };
    match view {
        Some(v) => {
            let _ = v.pool.release(v.offset, v.generation);
            if closing {
                close_if_unused(v.pool_id);
            }
            true
        }
        None => false,
    }
}

/// Finishes a `close()` that waited for the pool's last view: the process
/// leaves the pool, and the registry drops its attachment (see the
/// registry's module doc), which unmaps the segment once no call on
/// another thread still holds it.
pub fn close_if_unused(pool_id: u32) {
    let pool = {
        let mut r = registry();
        if r.views.values().any(|v| v.pool_id == pool_id) {
            return;
        }
        match r.pools.get_mut(pool_id as usize) {
            Some(p) if p.closing => p.pool.take(),
            _ => None,
        }
    };
    if let Some(pool) = pool {
        let _ = pool.close();
    }
}

/// Runs after V8 freed a view's backing store, or when the view's JS
/// environment is torn down (a worker thread ends), whether or not the
/// backing store is still alive: Node then detaches the ArrayBuffer it
/// made and calls this at once, but a backing store moved out with
/// `transfer()` may live on in another thread. A panic cannot unwind out
/// of this `extern "C"` function (the process would abort) and has no JS
/// caller to throw to: it is swallowed, and the view keeps its reference
/// (see `release_view`).
unsafe extern "C" fn finalize_view(env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    guard_callback(
        "a view's finalizer (the view's block reference stays held until the pool is closed or the process exits)",
        || {
            let id = hint as usize as u64;
            release_view(id);
            // The registry's guard goes at the end of this `let`; the pool
            // after it: the last `Arc` of a closed pool unmaps it, which
            // must not run under the registry's lock.
            let kept = registry().buffers.remove(&id);
            if env_tearing_down(env) {
                // The memory may still be viewed elsewhere: it stays mapped
                // until the process exits.
                std::mem::forget(kept);
            } else {
                drop(kept);
            }
        },
    );
}

/// Whether `env` can no longer run JS: Node sets this before it runs an
/// environment's cleanup hooks (where a view's finalizer is called without
/// its backing store being freed). Asked through a call that Node-API
/// refuses then (`napi_has_named_property` checks it first); a pending
/// exception, refused too, only makes this answer true (the mapping is then
/// kept, which is safe).
fn env_tearing_down(env: sys::napi_env) -> bool {
    let mut global = std::ptr::null_mut();
    let mut found = false;
    // SAFETY: `env` is the finalizer's environment, on its own thread;
    // both calls only read, into locals.
    unsafe {
        sys::napi_get_global(env, &mut global) != sys::Status::napi_ok
            || sys::napi_has_named_property(env, global, c"Object".as_ptr(), &mut found)
                != sys::Status::napi_ok
    }
}

/// Registers the reference to `[data + byte_offset, +byte_length)` of a
/// block this process just took, as a view id (its ArrayBuffer is made by
/// `wrap_view`, now or later), and writes `[viewId, offset, generation]`
/// into `out` (checked by the caller before it took the block). On failure
/// the reference is released again.
pub fn register_view(
    pool_id: u32,
    pool: Arc<Pool>,
    block: BlockRef,
    byte_offset: u64,
    byte_length: u64,
    out: &OutSlots,
) -> std::result::Result<u64, JsError> {
    let data = pool.data_ptr(&block);
    let in_block = byte_offset
        .checked_add(byte_length)
        .is_some_and(|end| end <= block.data_len);
    if data.is_null() || !in_block {
        // The core never hands out such a block; refuse rather than wrap
        // memory outside the mapping.
        let _ = pool.release(block.offset, block.generation);
        return Err(coded(
            "ERR_INTERNAL",
            format!(
                "block at {} (data {} bytes) cannot hold [{byte_offset}, +{byte_length})",
                block.offset, block.data_len
            ),
        ));
    }
    // SAFETY: byte_offset + byte_length lies inside the block's data
    // (checked just above; `data_ptr` checked the block against the
    // mapping), which stays mapped for the process's life.
    let ptr = unsafe { data.add(byte_offset as usize) };
    let id = registry().add_view(
        View {
            pool,
            pool_id,
            offset: block.offset,
            generation: block.generation,
            address: ptr as usize,
            len: byte_length as usize,
            wrapped: false,
        },
        byte_offset,
    );
    out.write(&[id as f64, block.offset as f64, block.generation as f64]);
    Ok(id)
}

/// Makes the external ArrayBuffer of the registered view `id`, once; from
/// then on its finalizer owns the view's reference. On failure the
/// reference stays registered (its owner releases it).
pub fn wrap_view<'env>(env: &'env Env, id: u64) -> Result<ArrayBuffer<'env>, Code> {
    let value = wrap_view_raw(env.raw(), id)?;
    // SAFETY: `value` is the ArrayBuffer napi just created in this env.
    unsafe { ArrayBuffer::from_napi_value(env.raw(), value) }.map_err(from_napi)
}

/// `wrap_view`, as the raw napi value.
pub fn wrap_view_raw(env: sys::napi_env, id: u64) -> std::result::Result<sys::napi_value, JsError> {
    let (ptr, len) = {
        let mut r = registry();
        let Some(view) = r.views.get_mut(&id).filter(|v| !v.wrapped) else {
            return Err(coded(
                "ERR_NOT_HELD",
                format!("view {id} is released or has its buffer already"),
            ));
        };
        view.wrapped = true;
        let mapping = (view.address, view.len);
        let pool = view.pool.clone();
        r.buffers.insert(id, pool);
        mapping
    };
    let unwrap = |e: JsError| {
        let kept = {
            let mut r = registry();
            if let Some(v) = r.views.get_mut(&id) {
                v.wrapped = false;
            }
            r.buffers.remove(&id)
        };
        drop(kept);
        Err(e)
    };
    let mut value = std::ptr::null_mut();
    // SAFETY: ptr/len describe mapped memory that outlives the buffer: its
    // entry in `buffers` keeps the pool mapped until its finalizer runs,
    // which Node does once V8 has freed the backing store (whichever
    // ArrayBuffer holds it by then: `transfer()` moves it to a new one);
    // `register_view` checked the range. The finalizer only receives the
    // view id.
    let status = unsafe {
        sys::napi_create_external_arraybuffer(
            env,
            ptr as *mut c_void,
            len,
            Some(finalize_view),
            id as usize as *mut c_void,
            &mut value,
        )
    };
    if status != sys::Status::napi_ok {
        let error = if status == sys::Status::napi_no_external_buffers_allowed {
            coded(
                "ERR_EXTERNAL_BUFFERS_UNSUPPORTED",
                "this runtime forbids external ArrayBuffers (e.g. Electron's V8 sandbox): shared memory cannot be viewed without copying",
            )
        } else {
            coded(
                "ERR_NAPI",
                format!(
                    "napi_create_external_arraybuffer failed: {}",
                    Status::from(status)
                ),
            )
        };
        return unwrap(error);
    }
    Ok(value)
}

/// `register_view` and `wrap_view` at once: on failure the reference is
/// released again.
pub fn external_view(
    env: sys::napi_env,
    pool_id: u32,
    pool: Arc<Pool>,
    block: BlockRef,
    byte_offset: u64,
    byte_length: u64,
    out: &OutSlots,
) -> std::result::Result<sys::napi_value, JsError> {
    let id = register_view(pool_id, pool, block, byte_offset, byte_length, out)?;
    wrap_view_raw(env, id).inspect_err(|_| {
        release_view(id);
    })
}

/// What napi knows of a typed array: its element kind, length, data pointer
/// (already advanced by its byte offset) and byte offset in its buffer.
/// None for anything that is not a typed array, or a detached one.
fn typed_array_info(
    env: sys::napi_env,
    value: sys::napi_value,
) -> Option<(i32, usize, *mut c_void, usize)> {
    let (mut kind, mut length, mut data, mut byte_offset) =
        (0, 0usize, std::ptr::null_mut(), 0usize);
    // One napi call, no `napi_is_typedarray` before it: this one checks
    // that the value is a typed array itself (`napi_invalid_arg` if not).
    // SAFETY: env and value come from napi for the current call; the out
    // pointers are valid locals, and napi accepts null for the buffer we
    // do not need.
    let status = unsafe {
        sys::napi_get_typedarray_info(
            env,
            value,
            &mut kind,
            &mut length,
            &mut data,
            std::ptr::null_mut(),
            &mut byte_offset,
        )
    };
    (status == sys::Status::napi_ok && !data.is_null()).then_some((kind, length, data, byte_offset))
}

/// The bytes of a typed array argument (any element kind): its data
/// pointer and byte length. None for anything else, a detached one, or an
/// empty one (napi may give it no data pointer).
pub fn typed_array_bytes(env: sys::napi_env, value: sys::napi_value) -> Option<(*const u8, u64)> {
    use sys::TypedarrayType as K;
    let (kind, length, data, _) = typed_array_info(env, value)?;
    let element = match kind {
        K::int8_array | K::uint8_array | K::uint8_clamped_array => 1,
        K::int16_array | K::uint16_array => 2,
        K::int32_array | K::uint32_array | K::float32_array => 4,
        K::float64_array | K::bigint64_array | K::biguint64_array => 8,
        _ => return None,
    };
    let bytes = length.checked_mul(element)?;
    Some((data.cast_const().cast::<u8>(), bytes as u64))
}

/// Why `typed_array_bytes` found no bytes in `value`, for the error: not a
/// typed array, a detached one (its buffer transferred or released), an
/// empty one, or one of a kind it does not read. Only on that failure
/// path: the calls it makes cost nothing on a good one.
pub fn no_bytes_reason(env: sys::napi_env, value: sys::napi_value) -> NoBytes {
    let (mut kind, mut length, mut buffer) = (0, 0usize, std::ptr::null_mut());
    // SAFETY: env and value come from napi for the current call; the out
    // pointers are valid locals, and napi accepts null for the data
    // pointer and the byte offset.
    let status = unsafe {
        sys::napi_get_typedarray_info(
            env,
            value,
            &mut kind,
            &mut length,
            std::ptr::null_mut(),
            &mut buffer,
            std::ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok || buffer.is_null() {
        return NoBytes::NotTypedArray;
    }
    let mut detached = false;
    // SAFETY: `buffer` is the typed array's ArrayBuffer, just given by napi
    // in this call's scope; `detached` is a valid local.
    let status = unsafe { sys::napi_is_detached_arraybuffer(env, buffer, &mut detached) };
    if status == sys::Status::napi_ok && detached {
        NoBytes::Detached
    } else if length == 0 {
        NoBytes::Empty
    } else {
        // A kind `typed_array_bytes` does not read (Float16Array).
        NoBytes::UnsupportedKind
    }
}

/// See `no_bytes_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBytes {
    NotTypedArray,
    Detached,
    Empty,
    UnsupportedKind,
}

/// A caller's `out` Float64Array, where a call writes its small results
/// (saves an object per call; napi-rs's own `Float64Array` parameter type
/// costs a reference per call). Checked before the call does anything, so
/// that a bad `out` never leaves a block taken (an attach would mark an
/// in-flight block transferred, and its release then free it).
pub struct OutSlots {
    data: *mut f64,
    len: usize,
}

impl OutSlots {
    /// Writes `values` to the first slots (as many as fit).
    pub fn write(&self, values: &[f64]) {
        self.write_from(0, values);
    }

    /// Writes `values` to the slots from `start` on (as many as fit).
    pub fn write_from(&self, start: usize, values: &[f64]) {
        let room = self.len.saturating_sub(start);
        for (i, v) in values.iter().take(room).enumerate() {
            // SAFETY: `start + i < len`, the array's element count that napi
            // reported, alive for the current call (`out_slots`). Unaligned:
            // a Float64Array may sit at an odd address (one over a pool
            // view made at an odd byteOffset).
            unsafe { self.data.add(start + i).write_unaligned(*v) };
        }
    }
}

/// The `out` argument as OutSlots; ERR_INVALID_ARG unless it is a
/// Float64Array of at least `min` elements.
pub fn out_slots(
    env: sys::napi_env,
    value: sys::napi_value,
    min: usize,
) -> std::result::Result<OutSlots, JsError> {
    match typed_array_info(env, value) {
        Some((kind, len, data, _)) if kind == sys::TypedarrayType::float64_array && len >= min => {
            Ok(OutSlots {
                data: data.cast::<f64>(),
                len,
            })
        }
        _ => Err(coded(
            "ERR_INVALID_ARG",
            format!("out must be a Float64Array of length >= {min}"),
        )),
    }
}

/// The block behind a typed array over pool memory (made from any view this
/// process created): `[poolId, offset, generation, byteOffset]`, where
/// byteOffset is where the typed array starts in the block's data.
pub fn locate(env: sys::napi_env, value: sys::napi_value) -> Option<[f64; 4]> {
    let (_, _, data, byte_offset) = typed_array_info(env, value)?;
    let address = (data as usize).checked_sub(byte_offset)?;
    let r = registry();
    let located = r.by_address.get(&address)?;
    Some([
        located.pool_id as f64,
        located.offset as f64,
        located.generation as f64,
        (located.byte_offset + byte_offset as u64) as f64,
    ])
}

/// Panics injected into the release path, for the napi-boundary tests.
#[cfg(feature = "testing")]
pub mod testing {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    static PANICS_IN_RELEASE: AtomicU32 = AtomicU32::new(0);

    /// The next `times` view releases (`release()` or a finalizer) panic
    /// before they change anything.
    pub fn panic_in_release(times: u32) {
        PANICS_IN_RELEASE.store(times, Relaxed);
    }

    pub(super) fn panic_point() {
        // Finalizers and calls run on JS threads; a lost race between two
        // threads only changes which release panics.
        let left = PANICS_IN_RELEASE.load(Relaxed);
        if left > 0 {
            PANICS_IN_RELEASE.store(left - 1, Relaxed);
            panic!(
                "test: a panic injected into a view release ({} more armed)",
                left - 1
            );
        }
    }
}
