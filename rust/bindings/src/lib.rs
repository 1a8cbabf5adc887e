//! Python bindings of rndpo-core (module `rndpo._core`).
use pyo3::prelude::*;

/// The compiled extension module.
#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    const CORE_VERSION: &str = rndpo_core::VERSION;
}
