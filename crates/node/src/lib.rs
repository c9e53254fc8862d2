//! Node-API binding for arraypool-core (napi-rs 3): converts between JS
//! values and the core, nothing more. The public API is `index.ts`.
//!
//! No panic crosses into Node-API. Every export's body runs in
//! `errors::guard` (a panic becomes an `ERR_INTERNAL` error), and every
//! callback the binding hands to napi or libc (view finalizers, the exit
//! hook) in `errors::guard_callback` (a panic is swallowed). The exports
//! also carry napi-rs's `catch_unwind`: it covers napi-rs's own argument and
//! result conversions around the body, where a panic would surface as a
//! plain `GenericFailure` error rather than an abort.
//!
//! Exports that can disturb a pool (fault injection, panics) exist only with
//! the `testing` cargo feature, which only the test suite's addon enables.
#![deny(clippy::all)]

// The guards need panics to unwind; with `panic = "abort"` in a profile,
// every panic would abort the process again.
#[cfg(panic = "abort")]
compile_error!(
    "arraypool-node catches panics at the napi boundary: build it with panic = \"unwind\""
);

pub mod blocks;
pub mod compact;
mod errors;
mod exit;
mod fast;
pub mod flight;
pub mod idle;
mod registry;
pub mod segments;
pub mod teardown;
pub mod unsent;
mod views;

use std::sync::Arc;
use std::time::Duration;

use arraypool_core::{Backing, BlockRange, Pool, PoolOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use errors::{coded, from_pool, guard, pool_id_arg, to_u64, Code, JsError};
use registry::{registry, OpenPool};

type JsResult<T> = std::result::Result<T, JsError>;

/// Module init, after napi-rs set the `#[napi]` exports: the hot ones are
/// replaced with plain callbacks (see `fast.rs`).
#[napi(module_exports)]
pub fn install_fast_exports(exports: Object, env: Env) -> Result<()> {
    fast::install(env.raw(), exports.raw())
}

/// Shared-memory layout version compiled into this addon.
#[napi(catch_unwind)]
pub fn layout_version() -> Result<u32, Code> {
    guard(|| Ok(arraypool_core::LAYOUT_VERSION))
}

#[napi(object)]
pub struct PoolConfig {
    /// Segment size in bytes (creation only).
    pub capacity: Option<f64>,
    /// Segment name (creation only, named /dev/shm pools); random when absent.
    pub name: Option<String>,
    /// `'memfd'` (default: anonymous, freed with its last process) or
    /// `'shm'` (a named file in /dev/shm). Creation only.
    pub backing: Option<String>,
    /// Freed blocks at least this large return their pages to the system.
    pub punch_threshold: Option<f64>,
    /// Free bytes kept backed for reuse before freed blocks of 1 MiB or
    /// more return their pages too.
    pub warm_free_bytes: Option<f64>,
    /// Longest wait for the pool lock held by a live process, in ms.
    pub lock_timeout_ms: Option<f64>,
}

fn options(config: Option<PoolConfig>) -> JsResult<PoolOptions> {
    let mut o = PoolOptions::default();
    if let Some(c) = config {
        if let Some(cap) = c.capacity {
            o.capacity = Some(to_u64(cap, "capacity", "ERR_INVALID_ARG")?);
        }
        o.backing = match c.backing.as_deref() {
            None | Some("memfd") => Backing::Memfd,
            Some("shm") => Backing::Shm,
            Some(other) => {
                return Err(coded(
                    "ERR_INVALID_ARG",
                    format!(
                        "backing must be 'memfd' or 'shm', got {:?}",
                        other.chars().take(40).collect::<String>()
                    ),
                ))
            }
        };
        o.name = c.name;
        if let Some(t) = c.punch_threshold {
            o.punch_threshold = to_u64(t, "punchThreshold", "ERR_INVALID_ARG")?;
        }
        if let Some(b) = c.warm_free_bytes {
            o.warm_free_budget = to_u64(b, "warmFreeBytes", "ERR_INVALID_ARG")?;
        }
        if let Some(ms) = c.lock_timeout_ms {
            o.lock_timeout = Duration::from_millis(to_u64(ms, "lockTimeoutMs", "ERR_INVALID_ARG")?);
        }
    }
    Ok(o)
}

fn add_pool(pool: Pool) -> u32 {
    exit::unlink_created_segments_at_exit();
    let mut r = registry();
    r.pools.push(OpenPool {
        name: pool.name().to_string(),
        pool: Some(Arc::new(pool)),
        opens: 1,
        closing: false,
    });
    (r.pools.len() - 1) as u32
}

/// The running Node's largest Buffer (`buffer.constants.MAX_LENGTH`): the
/// limit of one view.
#[napi(catch_unwind)]
pub fn set_max_view_bytes(bytes: f64) -> Result<(), Code> {
    guard(|| {
        views::set_max_view_bytes(to_u64(bytes, "bytes", "ERR_INVALID_ARG")?);
        Ok(())
    })
}

/// Creates a new pool; returns its id in this process.
#[napi(catch_unwind)]
pub fn create_pool(config: Option<PoolConfig>) -> Result<u32, Code> {
    guard(|| {
        let pool = Pool::create(options(config)?).map_err(from_pool)?;
        Ok(add_pool(pool))
    })
}

/// Opens (or finds already open in this process) the pool a locator names:
/// a name, or `name@pid:fd,...` for an anonymous pool (see core `memfd`).
#[napi(catch_unwind)]
pub fn open_pool(name: String, config: Option<PoolConfig>) -> Result<u32, Code> {
    guard(|| open_pool_inner(name, config))
}

fn open_pool_inner(name: String, config: Option<PoolConfig>) -> JsResult<u32> {
    let bare = arraypool_core::validate_name(name.split('@').next().unwrap_or_default())
        .map_err(from_pool)?
        .to_string();
    {
        // Another JS environment of this process (a worker thread, the main
        // thread) has it open: share the attachment, count the opener.
        let mut r = registry();
        if let Some(id) = r.open_pool_named(bare.as_bytes()) {
            if let Some(entry) = r.pools.get_mut(id) {
                entry.opens += 1;
                return Ok(id as u32);
            }
        }
    }
    let pool = Pool::open(&name, options(config)?).map_err(from_pool)?;
    Ok(add_pool(pool))
}

/// What children pass to `open_pool` to attach: for an anonymous pool, its
/// name with this process's pid and fd ahead of `inherited`'s hints.
#[napi(catch_unwind)]
pub fn pool_locator(id: f64, inherited: Option<String>) -> Result<String, Code> {
    guard(|| Ok(any_pool(pool_id_arg(id)?)?.locator(inherited.as_deref())))
}

/// `'memfd'` or `'shm'`.
#[napi(catch_unwind)]
pub fn pool_backing(id: f64) -> Result<String, Code> {
    guard(|| {
        Ok(match any_pool(pool_id_arg(id)?)?.backing() {
            Backing::Memfd => "memfd",
            Backing::Shm => "shm",
        }
        .to_string())
    })
}

/// The pool open in this process whose name is `name`, with its id:
/// `attachCompact` finds a handle's pool by the name it spells.
fn open_pool_named(name: &[u8]) -> Option<(u32, Arc<Pool>)> {
    let r = registry();
    let id = r.open_pool_named(name)?;
    Some((u32::try_from(id).ok()?, r.pools.get(id)?.pool.clone()?))
}

fn pool(id: u32) -> JsResult<Arc<Pool>> {
    let r = registry();
    match r.pools.get(id as usize) {
        Some(p) if p.closing => Err(closed(p)),
        Some(p) => match &p.pool {
            Some(pool) if !pool.is_closed() => Ok(pool.clone()),
            _ => Err(closed(p)),
        },
        None => Err(unknown_pool(id)),
    }
}

fn closed(p: &OpenPool) -> JsError {
    coded(
        "ERR_POOL_CLOSED",
        format!("pool {:?} was closed in this process", p.name),
    )
}

#[napi(catch_unwind)]
pub fn pool_name(id: f64) -> Result<String, Code> {
    guard(|| {
        let id = pool_id_arg(id)?;
        let r = registry();
        r.pools
            .get(id as usize)
            .map(|p| p.name.clone())
            .ok_or_else(|| unknown_pool(id))
    })
}

#[napi(catch_unwind)]
pub fn is_creator(id: f64) -> Result<bool, Code> {
    guard(|| Ok(pool(pool_id_arg(id)?)?.is_creator()))
}

/// Allocates `byteLength` bytes and returns an external ArrayBuffer over
/// them (holding one reference). Writes `[viewId, offset, generation]` to `out`.
/// The block's handle is taken not to have left this process until
/// `markEscaped` (unsent.rs) says so.
#[napi(catch_unwind)]
pub fn allocate<'env>(
    env: &'env Env,
    pool_id: f64,
    byte_length: f64,
    transfer_required: bool,
    out: Unknown,
) -> Result<ArrayBuffer<'env>, Code> {
    guard(|| {
        let value = allocate_inner(
            env.raw(),
            pool_id_arg(pool_id)?,
            byte_length,
            transfer_required,
            out.raw(),
        )?;
        array_buffer(env, value)
    })
}

fn allocate_inner(
    env: napi::sys::napi_env,
    pool_id: u32,
    byte_length: f64,
    transfer_required: bool,
    out: napi::sys::napi_value,
) -> JsResult<napi::sys::napi_value> {
    let len = to_u64(byte_length, "byteLength", "ERR_INVALID_ARG")?;
    views::check_view_size(len)?;
    let out = views::out_slots(env, out, 3)?;
    let pool = pool(pool_id)?;
    let block = pool
        .allocate_local(len, transfer_required)
        .map_err(from_pool)?;
    views::external_view(env, pool_id, pool, block, 0, len, &out)
}

/// The ArrayBuffer `value` (one the binding just made) as napi-rs's type.
fn array_buffer(env: &Env, value: napi::sys::napi_value) -> JsResult<ArrayBuffer<'_>> {
    // SAFETY: `value` is an ArrayBuffer made in this env during this call.
    unsafe { ArrayBuffer::from_napi_value(env.raw(), value) }.map_err(errors::from_napi)
}

/// `allocate` with a copy of `source` (a typed array or Buffer) in the new
/// block, in one call, and no view yet (`viewOf` makes it when JS first
/// wants the array; until then JS owns the reference, see transferable.ts):
/// the block holds `byteLength` bytes, which must be the source's. Nothing
/// can fail between the allocation and the copy. Writes `[viewId, offset,
/// generation]` to `out`.
#[napi(catch_unwind)]
pub fn allocate_copy(
    env: &Env,
    pool_id: f64,
    source: Unknown,
    byte_length: f64,
    transfer_required: bool,
    out: Unknown,
) -> Result<(), Code> {
    guard(|| {
        allocate_copy_inner(
            env.raw(),
            pool_id_arg(pool_id)?,
            source.raw(),
            byte_length,
            transfer_required,
            out.raw(),
        )
    })
}

fn allocate_copy_inner(
    env: napi::sys::napi_env,
    pool_id: u32,
    source: napi::sys::napi_value,
    byte_length: f64,
    transfer_required: bool,
    out: napi::sys::napi_value,
) -> JsResult<()> {
    let len = to_u64(byte_length, "byteLength", "ERR_INVALID_ARG")?;
    let Some((from, source_len)) = views::typed_array_bytes(env, source) else {
        return Err(coded(
            "ERR_INVALID_ARG",
            match views::no_bytes_reason(env, source) {
                views::NoBytes::NotTypedArray => "source must be a typed array",
                views::NoBytes::Detached => {
                    "source's ArrayBuffer is detached (transferred or released): there is nothing to copy"
                }
                views::NoBytes::Empty => "source is empty: there is nothing to copy",
                views::NoBytes::UnsupportedKind => {
                    "source is a typed array of a kind no pool dtype holds (e.g. Float16Array)"
                }
            },
        ));
    };
    if source_len != len {
        return Err(coded(
            "ERR_INVALID_ARG",
            format!("source holds {source_len} bytes, not {len}"),
        ));
    }
    views::check_view_size(len)?;
    let out = views::out_slots(env, out, 3)?;
    let pool = pool(pool_id)?;
    let block = pool
        .allocate_local(len, transfer_required)
        .map_err(from_pool)?;
    let to = pool.data_ptr(&block);
    if !to.is_null() && len > 0 {
        // SAFETY: `from` is the source's `len` bytes, alive for this call
        // (napi's typed array info); `to` is the new block's data, `len`
        // bytes inside the mapping (`data_ptr` checked it), held by this
        // process. `copy` allows overlap (the source may view the pool,
        // though never this fresh block).
        unsafe { std::ptr::copy(from, to, len as usize) };
    }
    // A null `to` is refused by `register_view`, which releases the block.
    views::register_view(pool_id, pool, block, 0, len, &out).map(|_| ())
}

/// `attach` without the view: the reference is registered (`viewOf` makes
/// the view when JS first wants the array). Writes `[viewId, offset,
/// generation]` to `out`.
#[napi(catch_unwind)]
pub fn attach_unviewed(
    env: &Env,
    pool_id: f64,
    offset: f64,
    generation: f64,
    byte_offset: f64,
    byte_length: f64,
    out: Unknown,
) -> Result<(), Code> {
    guard(|| {
        attach_unviewed_inner(
            env.raw(),
            pool_id_arg(pool_id)?,
            [offset, generation, byte_offset, byte_length],
            out.raw(),
        )
    })
}

fn attach_unviewed_inner(
    env: napi::sys::napi_env,
    pool_id: u32,
    handle_fields: [f64; 4],
    out: napi::sys::napi_value,
) -> JsResult<()> {
    let pool = pool(pool_id)?;
    let h = handle(handle_fields)?;
    views::check_view_size(h.byte_length)?;
    let out = views::out_slots(env, out, 3)?;
    attach_range_unviewed(pool_id, pool, &h, &out)
}

/// Attaches `h` and registers the reference without its view, writing
/// `[viewId, offset, generation]` to `out` (checked by the caller, as the
/// view's size: nothing may fail after the block is taken but the
/// registration, which gives the block back if it fails).
fn attach_range_unviewed(
    pool_id: u32,
    pool: Arc<Pool>,
    h: &BlockRange,
    out: &views::OutSlots,
) -> JsResult<()> {
    let block = pool.attach_range(h).map_err(from_pool)?;
    views::register_view(pool_id, pool, block, h.byte_offset, h.byte_length, out).map(|_| ())
}

/// The external ArrayBuffer of a view registered without one
/// (`allocateCopy`, `attachUnviewed`); its finalizer owns the reference
/// from now on. `ERR_NOT_HELD` if the view was released or has its buffer.
#[napi(catch_unwind)]
pub fn view_of(env: &Env, view_id: f64) -> Result<ArrayBuffer<'_>, Code> {
    guard(|| {
        let id = to_u64(view_id, "view id", "ERR_INVALID_ARG")?;
        views::wrap_view(env, id)
    })
}

fn view_of_inner(env: napi::sys::napi_env, view_id: f64) -> JsResult<napi::sys::napi_value> {
    views::wrap_view_raw(env, to_u64(view_id, "view id", "ERR_INVALID_ARG")?)
}

/// The handle's fields (its segment is the pool's: JS found the pool by it).
fn handle([offset, generation, byte_offset, byte_length]: [f64; 4]) -> JsResult<BlockRange> {
    const CODE: &str = "ERR_INVALID_HANDLE";
    Ok(BlockRange {
        offset: to_u64(offset, "handle offset", CODE)?,
        generation: to_u64(generation, "handle generation", CODE)?,
        byte_offset: to_u64(byte_offset, "handle byteOffset", CODE)?,
        byte_length: to_u64(byte_length, "handle byteLength", CODE)?,
    })
}

/// How a view takes its reference to the range a handle names: attach (marks the block transferred) or share.
pub(crate) type TakeRange =
    fn(&Pool, &BlockRange) -> arraypool_core::Result<arraypool_core::BlockRef>;

/// Takes a reference through `take` (attach or share) to the block a handle
/// names and returns a view of the handle's byte range.
fn view_of_handle(
    env: napi::sys::napi_env,
    pool_id: u32,
    handle_fields: [f64; 4],
    out: napi::sys::napi_value,
    take: TakeRange,
) -> JsResult<napi::sys::napi_value> {
    let pool = pool(pool_id)?;
    let h = handle(handle_fields)?;
    views::check_view_size(h.byte_length)?;
    let out = views::out_slots(env, out, 3)?;
    let block = take(&pool, &h).map_err(from_pool)?;
    views::external_view(
        env,
        pool_id,
        pool,
        block,
        h.byte_offset,
        h.byte_length,
        &out,
    )
}

/// Attaches the block a handle names (marking it transferred) and returns a
/// view of the handle's byte range.
#[napi(catch_unwind)]
pub fn attach<'env>(
    env: &'env Env,
    pool_id: f64,
    offset: f64,
    generation: f64,
    byte_offset: f64,
    byte_length: f64,
    out: Unknown,
) -> Result<ArrayBuffer<'env>, Code> {
    guard(|| {
        let value = view_of_handle(
            env.raw(),
            pool_id_arg(pool_id)?,
            [offset, generation, byte_offset, byte_length],
            out.raw(),
            Pool::attach_range,
        )?;
        array_buffer(env, value)
    })
}

/// Another view of (a range of) a block this process holds; does not mark
/// it transferred.
#[napi(catch_unwind)]
pub fn share<'env>(
    env: &'env Env,
    pool_id: f64,
    offset: f64,
    generation: f64,
    byte_offset: f64,
    byte_length: f64,
    out: Unknown,
) -> Result<ArrayBuffer<'env>, Code> {
    guard(|| {
        let value = view_of_handle(
            env.raw(),
            pool_id_arg(pool_id)?,
            [offset, generation, byte_offset, byte_length],
            out.raw(),
            Pool::share_range,
        )?;
        array_buffer(env, value)
    })
}

/// If `view` is a typed array over pool memory that this process viewed,
/// writes `[poolId, offset, generation, byteOffset]` to `out` and returns
/// true; false for anything else.
#[napi(catch_unwind)]
pub fn locate_view(env: &Env, view: Unknown, out: Unknown) -> Result<bool, Code> {
    guard(|| locate_view_inner(env.raw(), view.raw(), out.raw()))
}

fn locate_view_inner(
    env: napi::sys::napi_env,
    view: napi::sys::napi_value,
    out: napi::sys::napi_value,
) -> JsResult<bool> {
    let out = views::out_slots(env, out, 4)?;
    match views::locate(env, view) {
        Some(found) => {
            out.write(&found);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Drops a view's reference now and detaches its ArrayBuffer (every typed
/// array over it becomes length 0). Returns false if it was already released.
#[napi(catch_unwind)]
pub fn release(env: &Env, view_id: f64, buffer: Unknown) -> Result<bool, Code> {
    guard(|| release_inner(env.raw(), view_id, buffer.raw()))
}

fn release_inner(
    env: napi::sys::napi_env,
    view_id: f64,
    buffer: napi::sys::napi_value,
) -> JsResult<bool> {
    let id = to_u64(view_id, "view id", "ERR_INVALID_ARG")?;
    let released = views::release_view(id);
    // One napi call, which refuses anything that is not a detachable
    // ArrayBuffer (undefined, a plain buffer): nothing to do then.
    // SAFETY: env and buffer come from napi for the current call.
    let _ = unsafe { napi::sys::napi_detach_arraybuffer(env, buffer) };
    Ok(released)
}

#[napi(object)]
pub struct PoolStats {
    pub capacity_bytes: f64,
    pub heap_bytes: f64,
    pub used_bytes: f64,
    pub free_bytes: f64,
    pub largest_free_bytes: f64,
    pub live_blocks: f64,
    /// Freed small blocks processes keep for their next allocations (not
    /// in `used_bytes`/`live_blocks`).
    pub cached_bytes: f64,
    pub cached_blocks: f64,
    pub in_flight_blocks: f64,
    pub processes: f64,
    pub lock_takeovers: f64,
    /// Bytes of the segment backed by memory now.
    pub backed_bytes: f64,
    /// References (views) this process holds in this pool.
    pub held_references: f64,
}

/// The pool with this id while this process maps it (open or closed);
/// None once it was left and unmapped.
fn mapped_pool(id: u32) -> JsResult<Option<Arc<Pool>>> {
    let r = registry();
    Ok(r.pools
        .get(id as usize)
        .ok_or_else(|| unknown_pool(id))?
        .pool
        .clone())
}

/// The pool with this id while this process maps it; ERR_POOL_CLOSED once
/// it was left and unmapped.
fn any_pool(id: u32) -> JsResult<Arc<Pool>> {
    let r = registry();
    let p = r.pools.get(id as usize).ok_or_else(|| unknown_pool(id))?;
    p.pool.clone().ok_or_else(|| closed(p))
}

fn unknown_pool(id: u32) -> JsError {
    coded("ERR_INVALID_ARG", format!("no pool with id {id}"))
}

#[napi(catch_unwind)]
pub fn stats(pool_id: f64) -> Result<PoolStats, Code> {
    guard(|| stats_inner(pool_id_arg(pool_id)?))
}

fn stats_inner(pool_id: u32) -> JsResult<PoolStats> {
    let pool = any_pool(pool_id)?;
    let s = pool.stats().map_err(from_pool)?;
    Ok(PoolStats {
        capacity_bytes: s.capacity_bytes as f64,
        heap_bytes: s.heap_bytes as f64,
        used_bytes: s.used_bytes as f64,
        free_bytes: s.free_bytes as f64,
        largest_free_bytes: s.largest_free_bytes as f64,
        live_blocks: s.live_blocks as f64,
        cached_bytes: s.cached_bytes as f64,
        cached_blocks: s.cached_blocks as f64,
        in_flight_blocks: s.in_flight_blocks as f64,
        processes: s.processes as f64,
        lock_takeovers: s.lock_takeovers as f64,
        backed_bytes: s.backed_bytes as f64,
        held_references: pool.held_references() as f64,
    })
}

#[napi(object)]
pub struct CheckResult {
    pub blocks: f64,
    pub free_blocks: f64,
    /// The first broken invariant, or null.
    pub violation: Option<String>,
}

#[napi(catch_unwind)]
pub fn check(pool_id: f64) -> Result<CheckResult, Code> {
    guard(|| {
        let r = any_pool(pool_id_arg(pool_id)?)?
            .check()
            .map_err(from_pool)?;
        Ok(CheckResult {
            blocks: r.blocks as f64,
            free_blocks: r.free_blocks as f64,
            violation: r.violation,
        })
    })
}

#[napi(object)]
pub struct ReapResult {
    pub processes: f64,
    pub references: f64,
    pub blocks_freed: f64,
    pub bytes_freed: f64,
}

#[napi(catch_unwind)]
pub fn reap(pool_id: f64) -> Result<ReapResult, Code> {
    guard(|| {
        let r = any_pool(pool_id_arg(pool_id)?)?.reap().map_err(from_pool)?;
        Ok(ReapResult {
            processes: r.processes as f64,
            references: r.references as f64,
            blocks_freed: r.blocks_freed as f64,
            bytes_freed: r.bytes_freed as f64,
        })
    })
}

/// Does this process's queued releases (releases that found the pool lock
/// busy, see core `release.rs`) if the lock is free at once; never waits.
/// Returns how many are still queued. The TS side calls it from a timer.
#[napi(catch_unwind)]
pub fn flush_releases(pool_id: f64) -> Result<u32, Code> {
    guard(|| Ok(any_pool(pool_id_arg(pool_id)?)?.flush_releases() as u32))
}

/// Releases of this process waiting for a busy pool lock.
#[napi(catch_unwind)]
pub fn queued_releases(pool_id: f64) -> Result<u32, Code> {
    guard(|| Ok(any_pool(pool_id_arg(pool_id)?)?.queued_releases() as u32))
}

/// One JS environment stops using the pool. When the last environment that
/// opened it has closed it, the process's attachment closes: the name is
/// unlinked now if this process created the pool, new work is refused, and
/// the process leaves the pool once its last live view is released or
/// collected (views never dangle).
#[napi(catch_unwind)]
pub fn close_pool(env: &Env, pool_id: f64) -> Result<(), Code> {
    guard(|| {
        let pool_id = pool_id_arg(pool_id)?;
        teardown::forget(env.raw(), pool_id)?;
        close_pool_inner(pool_id)
    })
}

pub(crate) fn close_pool_inner(pool_id: u32) -> JsResult<()> {
    let pool = {
        let mut r = registry();
        let Some(entry) = r.pools.get_mut(pool_id as usize) else {
            return Err(unknown_pool(pool_id));
        };
        entry.opens = entry.opens.saturating_sub(1);
        if entry.opens > 0 {
            return Ok(());
        }
        entry.closing = true;
        let Some(pool) = entry.pool.clone() else {
            return Ok(());
        };
        pool
    };
    if pool.is_creator() {
        pool.unlink_name().map_err(from_pool)?;
    }
    views::close_if_unused(pool_id);
    Ok(())
}

/// Process exit: every pool releases this process's references and leaves;
/// the creator unlinks the name. Views left in JS stay mapped (`Registry::buffers`).
#[napi(catch_unwind)]
pub fn shutdown() -> Result<(), Code> {
    guard(|| {
        let (pools, views) = {
            let mut r = registry();
            r.by_address.clear();
            let pools: Vec<Arc<Pool>> = r.pools.iter().filter_map(|p| p.pool.clone()).collect();
            (pools, std::mem::take(&mut r.views))
        };
        // Dropped outside the registry's lock: a view may hold the last
        // `Arc` of a pool closed meanwhile, whose drop unmaps it.
        drop(views);
        for p in pools {
            let _ = p.close();
        }
        Ok(())
    })
}

/// Test-only: every following allocation in this process sleeps `ms`
/// inside the pool lock (fault-injection tests).
#[cfg(feature = "testing")]
#[napi(catch_unwind)]
pub fn test_pause_inside_allocation(ms: f64) -> Result<(), Code> {
    guard(|| {
        arraypool_core::testing::pause_inside_allocation(to_u64(ms, "ms", "ERR_INVALID_ARG")?);
        Ok(())
    })
}

/// Test-only: the next allocations of this process wait inside the pool
/// lock for as long as the file `path` exists (null turns it off), so a
/// test decides when the lock is let go without any timing.
#[cfg(feature = "testing")]
#[napi(catch_unwind)]
pub fn test_pause_inside_allocation_while(path: Option<String>) -> Result<(), Code> {
    guard(|| {
        arraypool_core::testing::pause_inside_allocation_while_exists(path.map(Into::into));
        Ok(())
    })
}

/// Test-only: panics inside an export, with `message` (napi-boundary tests).
#[cfg(feature = "testing")]
#[napi(catch_unwind)]
pub fn test_panic(message: String) -> Result<(), Code> {
    guard(|| panic!("{message}"))
}

/// Test-only: the next `times` view releases in this process (`release()`
/// or a view's finalizer) panic before they change anything.
#[cfg(feature = "testing")]
#[napi(catch_unwind)]
pub fn test_panic_in_release(times: u32) -> Result<(), Code> {
    guard(|| {
        views::testing::panic_in_release(times);
        Ok(())
    })
}

/// Test-only: how many panics this process's finalizers and exit hook
/// swallowed.
#[cfg(feature = "testing")]
#[napi(catch_unwind)]
pub fn test_swallowed_panics() -> Result<f64, Code> {
    guard(|| Ok(errors::swallowed_panics() as f64))
}

/// Test-only: how many compact handles `attachCompact` (revive's fast
/// path) has read and attached in this process.
#[cfg(feature = "testing")]
#[napi(catch_unwind)]
pub fn test_compact_attaches() -> Result<f64, Code> {
    guard(|| Ok(compact::testing::taken() as f64))
}

/// Test-only: the process slot holding the pool lock right now (read
/// without taking the lock), or null.
// Not gated: it only reads the lock word and changes nothing, so it cannot
// disturb a pool, and binding.js (generated from the shipped build) lists it
// for the fault tests.
#[napi(catch_unwind)]
pub fn test_lock_owner(pool_id: f64) -> Result<Option<u32>, Code> {
    guard(|| Ok(any_pool(pool_id_arg(pool_id)?)?.lock_owner()))
}

/// Test-only: V8's external-memory counter for this thread, read through
/// a zero adjustment (views must leave it exactly as V8 counts them).
// Not gated: a zero adjustment changes nothing, neither in V8 nor in a pool,
// and binding.js (generated from the shipped build) lists it for the stress
// tests.
#[napi(catch_unwind)]
pub fn test_external_memory(env: &Env) -> Result<f64, Code> {
    guard(|| {
        let mut total = 0i64;
        // SAFETY: `env` is the live environment of this call; a zero delta
        // changes nothing and only writes `total`.
        unsafe { napi::sys::napi_adjust_external_memory(env.raw(), 0, &mut total) };
        Ok(total as f64)
    })
}
