//! The one mapping from core errors to Python exceptions.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::{PyErr, PyResult};
use rndpo_core::Error;

/// A core error on its way to Python (a newtype, since both `Error` and `PyErr` are foreign).
pub struct CoreError(pub Error);

impl From<Error> for CoreError {
    fn from(err: Error) -> Self {
        Self(err)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(err): CoreError) -> Self {
        // Every core error is about a value: Rust's types already rule out wrong types.
        PyValueError::new_err(err.to_string())
    }
}

/// The error for a borrowed array that is not C-contiguous (the bindings never copy).
pub fn not_contiguous(argument: &str) -> PyErr {
    PyValueError::new_err(format!(
        "{argument} must be a C-contiguous array (rndpo never copies it silently), got a non-contiguous one"
    ))
}

/// Runs the body of the exported function `name`; a panic in it (a bug: the core returns an
/// error for every bad input it knows of) becomes a `RuntimeError`, which `except Exception`
/// catches, rather than PyO3's `PanicException`, a `BaseException`.
pub fn guard<T>(name: &str, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    rndpo_core::catch_panic(body).unwrap_or_else(|message| {
        Err(PyRuntimeError::new_err(format!(
            "rndpo._core.{name} failed: internal error in the Rust core (please report it): {message}"
        )))
    })
}
