//! Which rayon pool a call runs in: the global pool, or a fresh one-thread pool after a fork.
//!
//! `fork()` copies only the calling thread. A child of a process whose global rayon pool already
//! exists inherits the pool's bookkeeping but none of its worker threads, so work handed to it
//! waits forever (a `multiprocessing` pool with the fork start method, `DataLoader` workers). As
//! tokenizers does, a forked child therefore runs serially: each call builds a one-thread pool of
//! its own and drops it when done. Results never depend on the thread count.
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;

/// The process that first called into the core (and may own the global pool).
static OWNER: OnceLock<u32> = OnceLock::new();

/// True in a process forked from the one that first called into the core.
pub fn forked() -> bool {
    let pid = std::process::id();
    *OWNER.get_or_init(|| pid) != pid
}

/// Runs `work` in the global pool, or serially in a fresh pool after a fork.
///
/// Fails only when the fresh pool cannot start its thread.
pub fn run<T: Send>(work: impl FnOnce() -> T + Send) -> PyResult<T> {
    if !forked() {
        return Ok(work());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|err| {
            PyRuntimeError::new_err(format!("rndpo: cannot start a thread after fork: {err}"))
        })?;
    Ok(pool.install(work))
}
