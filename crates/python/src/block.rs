//! `Block`: one reference to (a byte range of) a pool block, owned by a
//! Python object. numpy arrays view it through `__array_interface__`, which
//! makes the Block their `base`: the reference is released when the last
//! array over it (and the Block) is gone, never while an array still views
//! the memory.
//!
//! Each live `Block` is counted in the registry: a closed pool is left (its
//! references dropped) only once its last `Block` is gone.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arraypool_core::{BlockRef, Pool};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::{self, coded};
use crate::{core, registry};

#[pyclass(module = "arraypool._native", frozen, weakref)]
pub struct Block {
    pool: Arc<Pool>,
    /// The fork epoch it was made in (see `registry`): a block inherited
    /// through a fork is the parent's reference, not released by the child.
    epoch: u64,
    #[pyo3(get)]
    pool_id: u32,
    #[pyo3(get)]
    offset: u64,
    #[pyo3(get)]
    generation: u64,
    /// Where this range starts in the block's data.
    #[pyo3(get)]
    byte_offset: u64,
    #[pyo3(get)]
    byte_length: u64,
    /// The address of the range's first byte in this process.
    #[pyo3(get)]
    address: usize,
    /// The dtype name of the handle (`'float64'`, `'uint8clamped'`, ...).
    #[pyo3(get)]
    dtype: String,
    /// numpy's type string for it (`'<f8'`).
    typestr: &'static str,
    shape: Vec<u64>,
}

/// What numpy makes of a block's range: the handle's dtype name, numpy's
/// type string for it and the shape.
pub struct ArrayLayout {
    dtype: String,
    typestr: &'static str,
    shape: Vec<u64>,
}

/// numpy's type string and the element size of a handle dtype name (Node's
/// names, `src/dtypes.ts`; little-endian, the pool's platforms' order).
fn numpy_type(dtype: &str) -> Option<(&'static str, u64)> {
    Some(match dtype {
        "int8" => ("|i1", 1),
        "uint8" | "uint8clamped" | "buffer" => ("|u1", 1),
        "int16" => ("<i2", 2),
        "uint16" => ("<u2", 2),
        "int32" => ("<i4", 4),
        "uint32" => ("<u4", 4),
        "float32" => ("<f4", 4),
        "float64" => ("<f8", 8),
        "bigint64" => ("<i8", 8),
        "biguint64" => ("<u8", 8),
        _ => return None,
    })
}

impl ArrayLayout {
    /// The layout of an array of `dtype` and `shape` over exactly
    /// `byte_length` bytes; ERR_INVALID_SHAPE / ERR_UNSUPPORTED_DTYPE
    /// otherwise. Checked here, whatever the Python side checked, so that no
    /// array can ever reach past its range.
    pub fn new(py: Python<'_>, dtype: String, shape: Vec<u64>, byte_length: u64) -> PyResult<Self> {
        let Some((typestr, itemsize)) = numpy_type(&dtype) else {
            return Err(coded(
                py,
                "ERR_UNSUPPORTED_DTYPE",
                format!(
                    "unknown dtype {:?}",
                    dtype.chars().take(40).collect::<String>()
                ),
            ));
        };
        let bytes = shape
            .iter()
            .try_fold(itemsize, |n, &d| n.checked_mul(d))
            .filter(|&n| n == byte_length);
        if shape.is_empty() || shape.len() > 32 || bytes.is_none() {
            return Err(coded(
                py,
                "ERR_INVALID_SHAPE",
                format!("shape {shape:?} of {dtype} is not {byte_length} bytes"),
            ));
        }
        Ok(ArrayLayout {
            dtype,
            typestr,
            shape,
        })
    }
}

impl Block {
    /// Wraps `[byte_offset, +byte_length)` of a block this process just took
    /// a reference to. On failure the reference is released again (or, if
    /// the pool is being left, dropped by its `close()`).
    pub fn new(
        py: Python<'_>,
        (pool_id, pool): (u32, Arc<Pool>),
        block: BlockRef,
        (byte_offset, byte_length): (u64, u64),
        layout: ArrayLayout,
    ) -> PyResult<Block> {
        let data = pool.data_ptr(&block);
        let in_block = byte_offset
            .checked_add(byte_length)
            .is_some_and(|end| end <= block.data_len);
        if data.is_null() || !in_block || byte_length > isize::MAX as u64 {
            // The core never hands out such a block; refuse rather than view
            // memory outside the mapping.
            let _ = pool.release(block.offset, block.generation);
            return Err(coded(
                py,
                "ERR_INTERNAL",
                format!(
                    "block at {} (data {} bytes) cannot hold [{byte_offset}, +{byte_length})",
                    block.offset, block.data_len
                ),
            ));
        }
        if !registry::add_block(pool_id) {
            // `close()` was called meanwhile (another thread) and the pool is
            // being left: the core's `close()` drops that reference.
            return Err(coded(
                py,
                "ERR_POOL_CLOSED",
                format!("pool {:?} was closed in this process", pool.name()),
            ));
        }
        Ok(Block {
            epoch: registry::epoch(),
            pool_id,
            offset: block.offset,
            generation: block.generation,
            byte_offset,
            byte_length,
            // `byte_offset` lies inside the block's data (checked above):
            // plain address arithmetic, nothing is dereferenced here.
            address: data as usize + byte_offset as usize,
            dtype: layout.dtype,
            typestr: layout.typestr,
            shape: layout.shape,
            pool,
        })
    }

    fn current(&self) -> bool {
        self.epoch == registry::epoch()
    }
}

#[pymethods]
impl Block {
    /// numpy's array interface (version 3): a writable array of the
    /// handle's dtype and shape over exactly this range.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("typestr", self.typestr)?;
        d.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        d.set_item("data", (self.address, false))?;
        Ok(d)
    }

    /// The pool's name (a handle's `segment`).
    #[getter]
    fn segment(&self) -> &str {
        self.pool.name()
    }

    /// Records that the block's handle may leave this process: it keeps the
    /// transferred rule from now on. False if this process no longer holds
    /// it (a block inherited through a fork: its holder is the parent).
    /// With the GIL released: the pool's process-local mutex may be held
    /// by an `allocate` waiting for a stopped lock holder.
    fn mark_escaped(&self, py: Python<'_>) -> PyResult<bool> {
        if !self.current() {
            return Ok(false);
        }
        core(py, || {
            Ok(self.pool.mark_escaped(self.offset, self.generation))
        })
    }

    /// Whether this process takes the block's handle to have left it (None:
    /// not held here). Tests and diagnostics.
    /// With the GIL released, as `mark_escaped`.
    fn escaped(&self, py: Python<'_>) -> PyResult<Option<bool>> {
        if !self.current() {
            return Ok(None);
        }
        core(py, || Ok(self.pool.escaped(self.offset, self.generation)))
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // Never waits (see `Pool::release`); a closed pool has dropped its
        // references already.
        if !self.current() {
            return;
        }
        // A panic must not unwind out of a deallocation (pyo3 would abort the
        // process), and nobody awaits it: swallowed, the reference stays held
        // until the pool closes or the process exits (as in Node's finalizers).
        let released = catch_unwind(AssertUnwindSafe(|| {
            let _ = self.pool.release(self.offset, self.generation);
            if let Some(pool) = registry::remove_block(self.pool_id) {
                // The last `Block` of a closed pool: leave it now. `close()`
                // never waits for the segment lock, but may for the pool's
                // process-local mutex (see `mark_escaped`): the GIL is let go
                // meanwhile (if Python cannot be attached, the interpreter
                // is exiting and nobody else runs Python).
                let leave = || {
                    let _ = pool.close();
                };
                if Python::try_attach(|py| py.detach(leave)).is_none() {
                    leave();
                }
            }
        }));
        if let Err(payload) = released {
            let _ = writeln!(
                std::io::stderr(),
                "arraypool: internal error (a Rust panic) releasing a block, swallowed: {}",
                errors::panic_text(payload)
            );
        }
    }
}
