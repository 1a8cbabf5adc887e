//! Memory that the sizes of the inputs call for: checked sizes, fallible allocation, the cap on
//! pair tables, and the messages that name the sizes.
//!
//! Buffers that grow faster than the inputs they are computed from (the K x K pair table of
//! `all_pairs`, the N x K x K statistics, the mined pairs) are sized with checked arithmetic and
//! allocated with `try_reserve_exact`, so that a size that cannot be allocated is an
//! [`Error::TooLarge`] rather than an abort (`memory allocation of ... bytes failed`) or a panic
//! (`capacity overflow`). Buffers of O(K) or O(P / 64) entries per image are smaller than the
//! masks and scores they are read from, and are allocated plainly.

use crate::error::Error;

/// The largest pair table, in bytes (8 GB), that mining allocates for one image: the K x K int64
/// disagreement table of `all_pairs` (C + 1 tables of K x K for label maps of C classes).
///
/// Larger tables are refused with an [`Error::TooLarge`] before anything is allocated, whatever
/// the allocator would allow: a system that overcommits memory grants such a request and then
/// kills the process when the table is written. K = 31,622 proposals fit for binary masks.
pub const MAX_TABLE_BYTES: u64 = 8_000_000_000;

/// How many bytes of pair tables may be held at once by the threads that mine in parallel
/// (2 GB): with larger tables, fewer images are mined at a time (results do not change).
pub(crate) const TABLE_BUDGET_BYTES: u64 = 2_000_000_000;

/// The product of `dims`, or `None` when it does not fit in `usize`.
pub(crate) fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The bytes of `elements` values of `bytes_each` bytes, as a float (for messages only: it
/// never overflows).
pub(crate) fn bytes_f64(elements: &[usize], bytes_each: usize) -> f64 {
    elements.iter().map(|&d| d as f64).product::<f64>() * bytes_each as f64
}

/// A byte count in decimal units, as `20.0 GB`.
pub(crate) fn fmt_bytes(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes;
    for unit in UNITS {
        if value < 1000.0 {
            return if unit == "bytes" {
                format!("{value} bytes")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1000.0;
    }
    format!("{bytes:.3e} bytes")
}

/// A vector of `len` copies of `value`, or `None` when it cannot be allocated.
pub(crate) fn try_vec<T: Clone>(len: usize, value: T) -> Option<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).ok()?;
    out.resize(len, value);
    Some(out)
}

/// Resizes `v` to `len` entries (new ones are `value`); `false` when it cannot be allocated (`v`
/// is then unchanged).
pub(crate) fn try_resize<T: Clone>(v: &mut Vec<T>, len: usize, value: T) -> bool {
    if len > v.len() && v.try_reserve_exact(len - v.len()).is_err() {
        return false;
    }
    v.resize(len, value);
    true
}

/// The error for a buffer that cannot be allocated: `need` says what needs how much memory.
pub(crate) fn cannot_allocate(need: String, advice: &str) -> Error {
    Error::TooLarge {
        argument: "masks",
        need,
        reason: format!("more than can be allocated; {advice}"),
    }
}

/// The error for per-image scratch (packed masks or label planes) that cannot be allocated.
pub(crate) fn scratch_error(k: usize, p: usize, entries: usize, bytes_each: usize) -> Error {
    cannot_allocate(
        format!(
            "K = {k} proposals of P = {p} pixels need {} of scratch per image",
            fmt_bytes(bytes_f64(&[entries], bytes_each))
        ),
        "use smaller images or fewer proposals per image",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_overflow_to_none() {
        assert_eq!(product(&[]), Some(1));
        assert_eq!(product(&[3, 4, 5]), Some(60));
        assert_eq!(product(&[1 << 20, 1 << 20, 0]), Some(0));
        assert_eq!(product(&[2, 1 << 20, 1 << 20, 1 << 20]), Some(1 << 61));
        assert_eq!(product(&[1 << 32, 1 << 32]), None);
        assert_eq!(product(&[usize::MAX, 2]), None);
    }

    #[test]
    fn byte_counts_read_in_decimal_units() {
        assert_eq!(fmt_bytes(0.0), "0 bytes");
        assert_eq!(fmt_bytes(999.0), "999 bytes");
        assert_eq!(fmt_bytes(1500.0), "1.5 kB");
        assert_eq!(fmt_bytes(bytes_f64(&[50_000, 50_000], 8)), "20.0 GB");
        assert_eq!(
            fmt_bytes(bytes_f64(&[2, 1 << 20, 1 << 20, 1 << 20], 8)),
            "18.4 EB"
        );
        assert_eq!(fmt_bytes(1e30), "1.000e30 bytes");
    }

    #[test]
    fn impossible_allocations_fail_without_aborting() {
        assert_eq!(try_vec(3, 7u8), Some(vec![7, 7, 7]));
        // more than isize::MAX bytes: refused by the allocator API, not an abort
        assert!(try_vec(usize::MAX / 2, 0u64).is_none());
        let mut v = vec![1u64, 2];
        assert!(!try_resize(&mut v, usize::MAX / 4, 0));
        assert_eq!(v, [1, 2]);
        assert!(try_resize(&mut v, 4, 9));
        assert_eq!(v, [1, 2, 9, 9]);
        assert!(try_resize(&mut v, 1, 0));
        assert_eq!(v, [1]);
    }
}
