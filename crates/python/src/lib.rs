//! Python binding of arraypool-core (pyo3): converts between Python values
//! and the core, nothing more. The public API is the `arraypool` package
//! (`python/arraypool/`), which builds numpy arrays over `Block`s.
//!
//! Every core call that may wait for the pool lock (create, open, allocate,
//! attach, stats, check, reap, close) or for the pool's process-local mutex
//! (which `allocate` holds while it waits for a stopped lock holder:
//! `Block.mark_escaped`/`escaped`, `held_references`) runs with the GIL
//! released, so other Python threads go on meanwhile. Releases never wait
//! (the core queues them), so a `Block`'s drop keeps the GIL, except to
//! leave a closed pool after its last `Block` (see `registry`).
//!
//! No panic reaches Python as pyo3's `PanicException` (a `BaseException`):
//! core calls (`core`) and `Block.mark_escaped` turn one into an
//! `ArrayPoolError` with code `ERR_INTERNAL`, and a `Block`'s drop swallows
//! it (nobody to raise to).

mod block;
mod errors;
mod registry;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arraypool_core::{Backing, Handle, Pool, PoolOptions};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use block::{ArrayLayout, Block};
use errors::{coded, IntoPy};
use registry::{add_pool, registry};

/// Calls inside the core with the GIL released right now.
static CALLS_WITHOUT_GIL: AtomicUsize = AtomicUsize::new(0);

/// Runs a core call with the GIL released (it may wait for the pool lock),
/// counted in `CALLS_WITHOUT_GIL` while it runs; its error becomes an
/// `ArrayPoolError`, and a panic an `ERR_INTERNAL` one.
pub(crate) fn core<T: Send>(
    py: Python<'_>,
    call: impl FnOnce() -> arraypool_core::Result<T> + Send,
) -> PyResult<T> {
    struct Counted;
    impl Drop for Counted {
        fn drop(&mut self) {
            CALLS_WITHOUT_GIL.fetch_sub(1, Relaxed);
        }
    }
    let outcome = py.detach(|| {
        CALLS_WITHOUT_GIL.fetch_add(1, Relaxed);
        let _counted = Counted;
        // AssertUnwindSafe: what a panic could leave half-updated is the
        // shared segment, which the core's journal rolls back.
        catch_unwind(AssertUnwindSafe(call))
    });
    match outcome {
        Ok(result) => result.py_err(py),
        Err(payload) => Err(errors::internal(py, payload)),
    }
}

/// How many threads are inside a core call with the GIL released. Tests:
/// that another thread reads it non-zero while one waits for a held pool
/// lock proves the waiting thread let Python run.
#[pyfunction]
fn calls_without_gil() -> usize {
    CALLS_WITHOUT_GIL.load(Relaxed)
}

fn options(
    py: Python<'_>,
    capacity: Option<u64>,
    backing: Option<&str>,
    name: Option<String>,
    lock_timeout_ms: Option<u64>,
) -> PyResult<PoolOptions> {
    let mut o = PoolOptions {
        capacity,
        name,
        ..Default::default()
    };
    o.backing = match backing {
        None | Some("memfd") => Backing::Memfd,
        Some("shm") => Backing::Shm,
        Some(other) => {
            return Err(coded(
                py,
                "ERR_INVALID_ARG",
                format!(
                    "backing must be 'memfd' or 'shm', got {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            ))
        }
    };
    if let Some(ms) = lock_timeout_ms {
        o.lock_timeout = Duration::from_millis(ms);
    }
    Ok(o)
}

/// Shared-memory layout version compiled into this extension.
#[pyfunction]
fn layout_version() -> u32 {
    arraypool_core::LAYOUT_VERSION
}

/// Creates a new pool; returns its id in this process.
#[pyfunction]
#[pyo3(signature = (capacity=None, backing=None, name=None, lock_timeout_ms=None))]
fn create_pool(
    py: Python<'_>,
    capacity: Option<u64>,
    backing: Option<&str>,
    name: Option<String>,
    lock_timeout_ms: Option<u64>,
) -> PyResult<u32> {
    let o = options(py, capacity, backing, name, lock_timeout_ms)?;
    let pool = core(py, || Pool::create(o))?;
    Ok(add_pool(pool))
}

/// Opens (or finds already open in this process) the pool a locator names:
/// a name, or `name@pid:fd,...` for an anonymous pool.
#[pyfunction]
#[pyo3(signature = (locator, lock_timeout_ms=None))]
fn open_pool(py: Python<'_>, locator: &str, lock_timeout_ms: Option<u64>) -> PyResult<u32> {
    let bare = arraypool_core::validate_name(locator.split('@').next().unwrap_or_default())
        .py_err(py)?
        .to_string();
    let open = registry().pools.iter().position(|p| {
        !p.closing
            && p.pool
                .as_ref()
                .is_some_and(|pool| pool.name() == bare && !pool.is_closed())
    });
    if let Some(id) = open {
        return Ok(id as u32);
    }
    let o = options(py, None, None, None, lock_timeout_ms)?;
    let pool = core(py, || Pool::open(locator, o))?;
    Ok(add_pool(pool))
}

/// The pool with this id, open or closed (ERR_POOL_CLOSED once left and unmapped).
fn any_pool(py: Python<'_>, id: u32) -> PyResult<Arc<Pool>> {
    // The registry's lock is let go before an error is made (that runs Python).
    let found = registry()
        .pools
        .get(id as usize)
        .map(|p| (p.pool.clone(), p.name.clone()));
    match found {
        Some((Some(pool), _)) => Ok(pool),
        Some((None, name)) => Err(closed_error(py, &name)),
        None => Err(coded(
            py,
            "ERR_INVALID_ARG",
            format!("no pool with id {id}"),
        )),
    }
}

/// A closed pool this process has left and no longer maps.
fn closed_error(py: Python<'_>, name: &str) -> PyErr {
    coded(
        py,
        "ERR_POOL_CLOSED",
        format!("pool {name:?} was closed in this process"),
    )
}

/// The open pool with this id: not closed, nor closing (waiting for its
/// last `Block` to leave).
fn open(py: Python<'_>, id: u32) -> PyResult<Arc<Pool>> {
    // The registry's lock is let go before an error is made (that runs Python).
    let found = registry()
        .pools
        .get(id as usize)
        .map(|p| (p.pool.clone(), p.closing, p.name.clone()));
    match found {
        Some((Some(pool), false, _)) if !pool.is_closed() => Ok(pool),
        Some((_, _, name)) => Err(closed_error(py, &name)),
        None => Err(coded(
            py,
            "ERR_INVALID_ARG",
            format!("no pool with id {id}"),
        )),
    }
}

#[pyfunction]
fn pool_name(py: Python<'_>, id: u32) -> PyResult<String> {
    Ok(any_pool(py, id)?.name().to_string())
}

/// `'memfd'` or `'shm'`.
#[pyfunction]
fn pool_backing(py: Python<'_>, id: u32) -> PyResult<&'static str> {
    Ok(match any_pool(py, id)?.backing() {
        Backing::Memfd => "memfd",
        Backing::Shm => "shm",
    })
}

/// What children pass to `open_pool` (see the core's `Pool::locator`).
#[pyfunction]
#[pyo3(signature = (id, inherited=None))]
fn pool_locator(py: Python<'_>, id: u32, inherited: Option<&str>) -> PyResult<String> {
    Ok(any_pool(py, id)?.locator(inherited))
}

#[pyfunction]
fn is_creator(py: Python<'_>, id: u32) -> PyResult<bool> {
    Ok(any_pool(py, id)?.is_creator())
}

/// Closed for new operations (`close()` was called, or the core's pool
/// is closed), though possibly not left yet (see `registry`).
#[pyfunction]
fn is_closed(py: Python<'_>, id: u32) -> PyResult<bool> {
    let closed = registry()
        .pools
        .get(id as usize)
        .map(|p| p.closing || p.pool.as_ref().is_none_or(|pool| pool.is_closed()));
    closed.ok_or_else(|| coded(py, "ERR_INVALID_ARG", format!("no pool with id {id}")))
}

/// Allocates `byte_length` bytes (one reference) and returns its Block.
/// The block's handle is taken not to have left this process until
/// `Block.mark_escaped()` says so.
#[pyfunction]
fn allocate(
    py: Python<'_>,
    pool_id: u32,
    byte_length: u64,
    transfer_required: bool,
    dtype: String,
    shape: Vec<u64>,
) -> PyResult<Block> {
    let layout = ArrayLayout::new(py, dtype, shape, byte_length)?;
    let pool = open(py, pool_id)?;
    let block = core(py, || pool.allocate_local(byte_length, transfer_required))?;
    Block::new(py, (pool_id, pool), block, (0, byte_length), layout)
}

/// Attaches the block a handle names (marking it transferred) and returns
/// a Block over the handle's byte range. The fields were checked by the
/// caller (`arraypool._handle`); the core checks them again against the pool.
#[pyfunction]
// The handle's fields, one argument each (what Python passes).
#[allow(clippy::too_many_arguments)]
fn attach(
    py: Python<'_>,
    pool_id: u32,
    offset: u64,
    generation: u64,
    byte_offset: u64,
    byte_length: u64,
    dtype: String,
    shape: Vec<u64>,
) -> PyResult<Block> {
    let layout = ArrayLayout::new(py, dtype, shape, byte_length)?;
    let pool = open(py, pool_id)?;
    let handle = Handle {
        segment: pool.name().to_string(),
        offset,
        generation,
        byte_offset,
        byte_length,
    };
    let block = core(py, || pool.attach(&handle))?;
    Block::new(
        py,
        (pool_id, pool),
        block,
        (byte_offset, byte_length),
        layout,
    )
}

#[pyfunction]
fn stats<'py>(py: Python<'py>, pool_id: u32) -> PyResult<Bound<'py, PyDict>> {
    let pool = any_pool(py, pool_id)?;
    let (s, held_references) = core(py, || Ok((pool.stats()?, pool.held_references())))?;
    let d = PyDict::new(py);
    d.set_item("capacity_bytes", s.capacity_bytes)?;
    d.set_item("heap_bytes", s.heap_bytes)?;
    d.set_item("used_bytes", s.used_bytes)?;
    d.set_item("free_bytes", s.free_bytes)?;
    d.set_item("largest_free_bytes", s.largest_free_bytes)?;
    d.set_item("live_blocks", s.live_blocks)?;
    d.set_item("cached_bytes", s.cached_bytes)?;
    d.set_item("cached_blocks", s.cached_blocks)?;
    d.set_item("in_flight_blocks", s.in_flight_blocks)?;
    d.set_item("processes", s.processes)?;
    d.set_item("lock_takeovers", s.lock_takeovers)?;
    d.set_item("backed_bytes", s.backed_bytes)?;
    d.set_item("held_references", held_references)?;
    Ok(d)
}

#[pyfunction]
fn check<'py>(py: Python<'py>, pool_id: u32) -> PyResult<Bound<'py, PyDict>> {
    let pool = any_pool(py, pool_id)?;
    let r = core(py, || pool.check())?;
    let d = PyDict::new(py);
    d.set_item("blocks", r.blocks)?;
    d.set_item("free_blocks", r.free_blocks)?;
    d.set_item("violation", r.violation)?;
    Ok(d)
}

#[pyfunction]
fn reap<'py>(py: Python<'py>, pool_id: u32) -> PyResult<Bound<'py, PyDict>> {
    let pool = any_pool(py, pool_id)?;
    let r = core(py, || pool.reap())?;
    let d = PyDict::new(py);
    d.set_item("processes", r.processes)?;
    d.set_item("references", r.references)?;
    d.set_item("blocks_freed", r.blocks_freed)?;
    d.set_item("bytes_freed", r.bytes_freed)?;
    Ok(d)
}

/// Closes the pool in this process: later operations on it fail with
/// ERR_POOL_CLOSED, the creator unlinks the name now, and the process
/// leaves the pool (its references are dropped) when the last `Block` of
/// it is gone: numpy arrays cannot be detached, so the blocks they view stay
/// held until then (see `registry`). Idempotent.
#[pyfunction]
fn close_pool(py: Python<'_>, pool_id: u32) -> PyResult<()> {
    let found = registry()
        .pools
        .get(pool_id as usize)
        .map(|p| (p.closing || p.left, p.pool.clone()));
    let pool = match found {
        None => {
            return Err(coded(
                py,
                "ERR_INVALID_ARG",
                format!("no pool with id {pool_id}"),
            ))
        }
        Some((false, Some(pool))) => pool,
        // Closed already (the name it unlinked may be another pool's by
        // now), or left and unmapped.
        Some(_) => return Ok(()),
    };
    if pool.is_creator() {
        core(py, || pool.unlink_name())?;
    }
    match registry::start_closing(pool_id) {
        Some(pool) => core(py, || pool.close()),
        None => Ok(()),
    }
}

/// Process exit: every pool drops this process's references and leaves.
/// Nothing is raised: there is nobody left to handle it.
#[pyfunction]
fn shutdown(py: Python<'_>) {
    let pools: Vec<Arc<Pool>> = registry()
        .pools
        .iter_mut()
        .filter_map(|p| {
            p.left = true;
            p.pool.clone()
        })
        .collect();
    let _ = core(py, || {
        for p in pools {
            let _ = p.close();
        }
        Ok(())
    });
}

/// For `os.register_at_fork(after_in_child=...)`: see `registry`.
#[pyfunction]
fn after_fork_in_child() {
    registry::after_fork_in_child();
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Block>()?;
    m.add_function(wrap_pyfunction!(layout_version, m)?)?;
    m.add_function(wrap_pyfunction!(create_pool, m)?)?;
    m.add_function(wrap_pyfunction!(open_pool, m)?)?;
    m.add_function(wrap_pyfunction!(pool_name, m)?)?;
    m.add_function(wrap_pyfunction!(pool_backing, m)?)?;
    m.add_function(wrap_pyfunction!(pool_locator, m)?)?;
    m.add_function(wrap_pyfunction!(is_creator, m)?)?;
    m.add_function(wrap_pyfunction!(is_closed, m)?)?;
    m.add_function(wrap_pyfunction!(allocate, m)?)?;
    m.add_function(wrap_pyfunction!(attach, m)?)?;
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(reap, m)?)?;
    m.add_function(wrap_pyfunction!(close_pool, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(calls_without_gil, m)?)?;
    Ok(())
}
