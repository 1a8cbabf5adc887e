//! Python bindings of rndpo-core (module `rndpo._core`).
//!
//! Thin glue only: borrow read-only NumPy arrays without copying, release the GIL, call the
//! core, hand back owned arrays. Argument normalisation lives in `rndpo.mining`. Every exported
//! call runs under `errors::guard`, so that even a panic (a bug) reaches Python as an exception
//! derived from `Exception`.
use pyo3::prelude::*;

mod errors;
mod pool;

/// The compiled extension module.
#[pymodule(gil_used = false)]
mod _core {
    use numpy::{
        PyArray1, PyArray2, PyArray3, PyArray4, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray3,
        PyUntypedArrayMethods,
    };
    use pyo3::prelude::*;
    use rndpo_core::{LabelBank, MaskBank, MiningParams};

    use crate::errors::{guard, not_contiguous, CoreError};
    use crate::pool;

    #[pymodule_export]
    const CORE_VERSION: &str = rndpo_core::VERSION;

    type StatsArrays<'py> = (
        Bound<'py, PyArray2<i64>>,
        Bound<'py, PyArray3<i64>>,
        Bound<'py, PyArray3<i64>>,
    );

    type LabelStatsArrays<'py> = (
        Bound<'py, PyArray3<i64>>,
        Bound<'py, PyArray4<i64>>,
        Bound<'py, PyArray3<i64>>,
    );

    type PairArrays<'py> = (
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<f64>>,
    );

    fn shape3(masks: &PyReadonlyArray3<'_, u8>) -> [usize; 3] {
        let shape = masks.shape();
        [shape[0], shape[1], shape[2]]
    }

    /// (N, K, P) uint8 masks -> sizes (N, K), intersection (N, K, K), disagreement (N, K, K) int64.
    ///
    /// intersection and disagreement are the two halves of one (2, N, K, K) buffer.
    #[pyfunction]
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts readonly borrows by value
    fn pairwise_stats<'py>(
        py: Python<'py>,
        masks: PyReadonlyArray3<'py, u8>,
    ) -> PyResult<StatsArrays<'py>> {
        guard("pairwise_stats", || pairwise_stats_body(py, &masks))
    }

    fn pairwise_stats_body<'py>(
        py: Python<'py>,
        masks: &PyReadonlyArray3<'py, u8>,
    ) -> PyResult<StatsArrays<'py>> {
        let [n, k, p] = shape3(masks);
        let data = masks.as_slice().map_err(|_| not_contiguous("masks"))?;
        let stats = py
            .detach(|| {
                pool::run(|| {
                    MaskBank::new(data, n, k, p).and_then(|bank| rndpo_core::pairwise_stats(&bank))
                })
            })?
            .map_err(CoreError)?;
        // Both count arrays are views of the one (2, N, K, K) buffer of the core.
        let counts = PyArray1::from_vec(py, stats.counts).reshape([2, n, k, k])?;
        let half = |i: usize| -> PyResult<Bound<'py, PyArray3<i64>>> {
            Ok(counts.get_item(i)?.cast_into::<PyArray3<i64>>()?)
        };
        Ok((
            PyArray1::from_vec(py, stats.sizes).reshape([n, k])?,
            half(0)?,
            half(1)?,
        ))
    }

    /// (N, K, P) uint8 label maps with labels 0..C-1 -> sizes (N, K, C), intersection (N, K, K, C),
    /// disagreement (N, K, K) int64.
    #[pyfunction]
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts readonly borrows by value
    fn label_pairwise_stats<'py>(
        py: Python<'py>,
        masks: PyReadonlyArray3<'py, u8>,
        num_classes: usize,
    ) -> PyResult<LabelStatsArrays<'py>> {
        guard("label_pairwise_stats", || {
            label_pairwise_stats_body(py, &masks, num_classes)
        })
    }

    fn label_pairwise_stats_body<'py>(
        py: Python<'py>,
        masks: &PyReadonlyArray3<'py, u8>,
        num_classes: usize,
    ) -> PyResult<LabelStatsArrays<'py>> {
        let [n, k, p] = shape3(masks);
        let data = masks.as_slice().map_err(|_| not_contiguous("masks"))?;
        let stats = py
            .detach(|| {
                pool::run(|| {
                    LabelBank::new(data, n, k, p, num_classes)
                        .and_then(|bank| rndpo_core::label_pairwise_stats(&bank))
                })
            })?
            .map_err(CoreError)?;
        let c = stats.classes;
        Ok((
            PyArray1::from_vec(py, stats.sizes).reshape([n, k, c])?,
            PyArray1::from_vec(py, stats.intersection).reshape([n, k, k, c])?,
            PyArray1::from_vec(py, stats.disagreement).reshape([n, k, k])?,
        ))
    }

    /// (N, K, P) uint8 masks, (N * K,) float64 scores (row-major (N, K); the core checks the length)
    /// -> (image, chosen, rejected, `region_size`, margin). With `num_classes`, the masks are label
    /// maps with labels 0..C-1.
    #[pyfunction]
    #[pyo3(signature = (masks, scores, strategy, min_margin, min_region, max_region, max_pairs_per_image, seed, max_region_fraction=None, num_classes=None))]
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
    fn mine_pairs<'py>(
        py: Python<'py>,
        masks: PyReadonlyArray3<'py, u8>,
        scores: PyReadonlyArray1<'py, f64>,
        strategy: &str,
        min_margin: f64,
        min_region: u64,
        max_region: Option<u64>,
        max_pairs_per_image: Option<usize>,
        seed: u64,
        max_region_fraction: Option<f64>,
        num_classes: Option<usize>,
    ) -> PyResult<PairArrays<'py>> {
        guard("mine_pairs", || {
            let [n, k, p] = shape3(&masks);
            let data = masks.as_slice().map_err(|_| not_contiguous("masks"))?;
            let score_values = scores.as_slice().map_err(|_| not_contiguous("scores"))?;
            let params = MiningParams {
                strategy: strategy.parse().map_err(CoreError)?,
                min_margin,
                min_region,
                max_region,
                max_region_fraction,
                max_pairs_per_image,
                seed,
            };
            let pairs = py
                .detach(|| {
                    pool::run(|| match num_classes {
                        None => MaskBank::new(data, n, k, p)
                            .and_then(|bank| rndpo_core::mine_pairs(&bank, score_values, &params)),
                        Some(c) => LabelBank::new(data, n, k, p, c).and_then(|bank| {
                            rndpo_core::mine_label_pairs(&bank, score_values, &params)
                        }),
                    })
                })?
                .map_err(CoreError)?;
            Ok((
                PyArray1::from_vec(py, pairs.image),
                PyArray1::from_vec(py, pairs.chosen),
                PyArray1::from_vec(py, pairs.rejected),
                PyArray1::from_vec(py, pairs.region_size),
                PyArray1::from_vec(py, pairs.margin),
            ))
        })
    }
}
