//! The last line of defence at an API boundary: a panic turned into an error message.
//!
//! The core returns an [`Error`](crate::Error) for every bad input it knows of; a panic would
//! be a bug. The bindings run each exported call under [`catch_panic`] so that such a bug
//! reaches Python as an ordinary exception, which `except Exception` catches, rather than
//! PyO3's `PanicException` (derived from `BaseException`), and never unwinds into Python.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic in it (or in a rayon task it waits for) becomes `Err(message)`.
///
/// `f` is asserted unwind-safe: callers drop everything `f` touched when it panics (the bindings
/// only read borrowed arrays and own per-call buffers), so no broken invariant is observed.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(payload.as_ref()))
}

/// The message of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a payload that is not a string".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_their_messages() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        assert_eq!(
            catch_panic(|| -> u8 { panic!("literal") }),
            Err("literal".to_owned())
        );
        let k = 3;
        assert_eq!(
            catch_panic(|| -> u8 { panic!("formatted {k}") }),
            Err("formatted 3".to_owned())
        );
        assert_eq!(
            catch_panic(|| -> u8 { std::panic::panic_any(5u8) }),
            Err("a panic with a payload that is not a string".to_owned())
        );
        // an out-of-bounds index, as a bug would do
        let v: Vec<u8> = Vec::new();
        let i = v.len() + 1;
        assert!(catch_panic(|| v[i]).unwrap_err().contains("out of bounds"));
    }

    #[test]
    fn a_panic_in_a_rayon_task_is_caught_by_the_caller() {
        use rayon::prelude::*;
        let out = catch_panic(|| {
            (0..64u32)
                .into_par_iter()
                .map(|i| if i == 40 { panic!("task {i}") } else { i })
                .sum::<u32>()
        });
        assert_eq!(out, Err("task 40".to_owned()));
        // the pool still works afterwards
        assert_eq!((0..64u32).into_par_iter().sum::<u32>(), 2016);
    }
}
