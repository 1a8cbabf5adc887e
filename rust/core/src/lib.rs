//! rndpo-core: the pure Rust core of rndpo.
//!
//! It turns a bank of candidate segmentation masks, a C-contiguous `(N, K, P)` `u8` buffer of
//! 0/1 values (N images, K proposals each, P pixels), into:
//!
//! - [`pairwise_stats`]: per image, mask sizes `|A|`, intersections `|A ∩ B|` and
//!   disagreement-region sizes `|A xor B|` (the `|D|` that RN-DPO divides margins by);
//! - [`mine_pairs`]: (chosen, rejected) preference pairs from `(N, K)` judge scores, with a
//!   pairing [`Strategy`], margin and region filters and a per-image cap.
//!
//! A bank of label maps, values `0..C` for C from 2 to 255 ([`LabelBank`]), gets the same two
//! operations per class: [`label_pairwise_stats`] (class sizes, per-class intersections, the
//! pixels whose labels differ) and [`mine_label_pairs`] (a pair's region is where the labels
//! differ).
//!
//! Masks are read in place, validated and bit-packed one image at a time into a small
//! per-thread buffer, and images are processed in parallel with rayon; results are collected in
//! image order, so they do not depend on the thread count. Nothing here panics or aborts on user
//! input: every failure is an [`Error`] whose message names the argument, the expectation and the
//! value, and buffers that grow faster than the inputs (pair tables, statistics, mined pairs) are
//! sized with checked arithmetic and allocated fallibly (see [`memory`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bank;
pub mod error;
pub mod guard;
pub mod label_regions;
pub mod labels;
mod line;
pub mod memory;
pub mod mining;
pub mod regions;
pub mod rng;

pub use bank::MaskBank;
pub use error::{Error, Result};
pub use guard::catch_panic;
pub use label_regions::{label_pairwise_stats, LabelStats};
pub use labels::LabelBank;
pub use memory::MAX_TABLE_BYTES;
pub use mining::{mine_label_pairs, mine_pairs, MiningParams, PairSet, Strategy};
pub use regions::{pairwise_stats, PairwiseStats};
pub use rng::SplitMix64;

/// Crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
