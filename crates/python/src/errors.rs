//! Core errors as Python `arraypool.ArrayPoolError`s carrying the core's
//! stable code (`ERR_*`), the same codes the Node binding throws.

use std::any::Any;

pub use arraypool_core::error::panic_text;

use arraypool_core::PoolError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The Python class (defined in `arraypool/_errors.py`, so that Python code
/// raises and catches one class), looked up once.
static ERROR_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// An `ArrayPoolError(code, message)`. If the class cannot be imported
/// (a broken install), the import's own error is returned instead.
pub fn coded(py: Python<'_>, code: &str, message: impl Into<String>) -> PyErr {
    let class = ERROR_CLASS.get_or_try_init(py, || {
        py.import("arraypool._errors")?
            .getattr("ArrayPoolError")?
            .cast_into::<PyType>()
            .map(Bound::unbind)
            .map_err(PyErr::from)
    });
    match class.and_then(|c| c.bind(py).call1((code, message.into()))) {
        Ok(instance) => PyErr::from_value(instance),
        Err(import_error) => import_error,
    }
}

pub fn from_pool(py: Python<'_>, e: PoolError) -> PyErr {
    coded(py, e.code(), e.to_string())
}

/// A panic caught at the Python boundary, as an `ERR_INTERNAL` error
/// carrying its text (pyo3 would raise a `PanicException`, which is a
/// `BaseException`: `except Exception` would not see it). The pool stays
/// consistent: unwinding ran the core's lock guard, which rolls back a
/// half-done journaled update and releases the lock.
pub fn internal(py: Python<'_>, payload: Box<dyn Any + Send>) -> PyErr {
    coded(
        py,
        "ERR_INTERNAL",
        format!(
            "arraypool internal error (a Rust panic, caught at the Python boundary): {}",
            panic_text(payload)
        ),
    )
}

/// `map_err` helper: a core result as a Python result.
pub trait IntoPy<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for arraypool_core::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| from_pool(py, e))
    }
}
