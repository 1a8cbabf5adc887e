//! The one mapping from core errors to Python exceptions.

use pyo3::exceptions::PyValueError;
use pyo3::PyErr;
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
