//! Preference-pair mining: ranking, pairing strategies, margin and region filters, per-image cap.
//!
//! Per image, proposals are ranked by score, descending, ties broken by the lower proposal index
//! (a stable sort). A strategy lists pairs of ranks `(a, b)` with `a < b`; the pair's chosen
//! proposal is the one at rank `a`, the rejected one the one at rank `b`:
//!
//! - `top_vs_bottom`: `(0, K-1)`.
//! - `top_vs_rest`: `(0, 1), (0, 2), ..., (0, K-1)`.
//! - `adjacent`: `(0, 1), (1, 2), ..., (K-2, K-1)`.
//! - `all_pairs`: every `a < b`, ordered by `a` then `b`.
//! - `top_vs_random`: `(0, r)` with `r = 1 + g.below(K - 1)`.
//! - `random`: `x = g.below(K)`, `y = g.below(K - 1)`, `y += 1` if `y >= x`; the pair is
//!   `(min(x, y), max(x, y))`.
//!
//! Here `g` is [`SplitMix64::for_image`]`(seed, image)`; images with K < 2 draw nothing.
//! A pair is kept when `margin = score(chosen) - score(rejected) > min_margin` (so equal scores
//! never pair) and `max(1, min_region) <= |chosen xor rejected| <= max_region` (so identical
//! masks never pair) and, with `max_region_fraction = f`, `|chosen xor rejected| <= f * |chosen|`
//! (pairs are boundary corrections, not whole-shape disagreements). `max_pairs_per_image` keeps the first kept pairs in strategy order.
//! The output is ordered by image, then strategy order.
//!
//! For label maps ([`mine_label_pairs`]), `|chosen xor rejected|` is the number of pixels whose
//! labels differ and `|chosen|` the chosen map's foreground (pixels of a class other than 0).

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::bank::MaskBank;
use crate::error::{Error, Result};
use crate::label_regions::{label_image_stats, LabelScratch};
use crate::labels::LabelBank;
use crate::regions::{image_stats, xor_count, Scratch};
use crate::rng::SplitMix64;

/// How pairs of ranks are formed within an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Rank 0 against the last rank.
    TopVsBottom,
    /// Rank 0 against each of ranks 1..K-1, in rank order.
    TopVsRest,
    /// Rank r against rank r+1.
    Adjacent,
    /// Every rank pair a < b, ordered by a then b.
    AllPairs,
    /// Rank 0 against one uniformly drawn other rank.
    TopVsRandom,
    /// One uniformly drawn pair of distinct ranks, oriented by rank.
    Random,
}

impl Strategy {
    /// Valid names, in the order of the variants.
    pub const NAMES: [&'static str; 6] = [
        "top_vs_bottom",
        "top_vs_rest",
        "adjacent",
        "all_pairs",
        "top_vs_random",
        "random",
    ];
    const ALL: [Strategy; 6] = [
        Strategy::TopVsBottom,
        Strategy::TopVsRest,
        Strategy::Adjacent,
        Strategy::AllPairs,
        Strategy::TopVsRandom,
        Strategy::Random,
    ];

    /// The strategy's name, as accepted by [`FromStr`].
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Strategy::TopVsBottom => Self::NAMES[0],
            Strategy::TopVsRest => Self::NAMES[1],
            Strategy::Adjacent => Self::NAMES[2],
            Strategy::AllPairs => Self::NAMES[3],
            Strategy::TopVsRandom => Self::NAMES[4],
            Strategy::Random => Self::NAMES[5],
        }
    }

    /// Rank pairs `(a, b)`, `a < b`, of an image with `k` proposals, in strategy order.
    fn rank_pairs(self, k: usize, rng: &mut SplitMix64) -> Vec<(usize, usize)> {
        if k < 2 {
            return Vec::new();
        }
        match self {
            Strategy::TopVsBottom => vec![(0, k - 1)],
            Strategy::TopVsRest => (1..k).map(|r| (0, r)).collect(),
            Strategy::Adjacent => (0..k - 1).map(|r| (r, r + 1)).collect(),
            Strategy::AllPairs => (0..k)
                .flat_map(|a| (a + 1..k).map(move |b| (a, b)))
                .collect(),
            Strategy::TopVsRandom => vec![(0, 1 + rng.below(k as u64 - 1) as usize)],
            Strategy::Random => {
                let x = rng.below(k as u64) as usize;
                let mut y = rng.below(k as u64 - 1) as usize;
                if y >= x {
                    y += 1;
                }
                vec![(x.min(y), x.max(y))]
            }
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| Error::UnknownStrategy {
                expected: Self::NAMES
                    .iter()
                    .map(|name| format!("'{name}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                got: s.to_owned(),
            })
    }
}

/// Mining parameters; see the module docs for their meaning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MiningParams {
    /// Pairing strategy.
    pub strategy: Strategy,
    /// Pairs need `margin > min_margin`; must be `>= 0` and not NaN.
    pub min_margin: f64,
    /// Pairs need `|xor| >= max(1, min_region)`.
    pub min_region: u64,
    /// Pairs need `|xor| <= max_region` (`None`: no upper bound); must be `>= min_region`.
    pub max_region: Option<u64>,
    /// Pairs need `|xor| <= max_region_fraction * |chosen|` (`None`: no bound relative to the
    /// object); must be finite and `> 0`.
    pub max_region_fraction: Option<f64>,
    /// Keep at most this many pairs per image (`None`: no cap).
    pub max_pairs_per_image: Option<usize>,
    /// Seed of the random strategies.
    pub seed: u64,
}

impl Default for MiningParams {
    fn default() -> Self {
        Self {
            strategy: Strategy::TopVsRest,
            min_margin: 0.0,
            min_region: 1,
            max_region: None,
            max_region_fraction: None,
            max_pairs_per_image: None,
            seed: 0,
        }
    }
}

impl MiningParams {
    /// Checks the ranges of the parameters.
    pub fn validate(&self) -> Result<()> {
        if self.min_margin.is_nan() || self.min_margin < 0.0 {
            return Err(Error::InvalidParameter {
                argument: "min_margin",
                expected: "a number >= 0".to_owned(),
                got: format!("{:?}", self.min_margin),
            });
        }
        if let Some(hi) = self.max_region {
            if hi < self.min_region {
                return Err(Error::InvalidParameter {
                    argument: "max_region",
                    expected: format!("None or >= min_region = {}", self.min_region),
                    got: hi.to_string(),
                });
            }
        }
        if let Some(f) = self.max_region_fraction {
            if !(f.is_finite() && f > 0.0) {
                return Err(Error::InvalidParameter {
                    argument: "max_region_fraction",
                    expected: "None or a finite number > 0".to_owned(),
                    got: format!("{f:?}"),
                });
            }
        }
        Ok(())
    }
}

/// Mined preference pairs, as a struct of arrays (all of the same length).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairSet {
    /// Image index of each pair.
    pub image: Vec<i64>,
    /// Proposal index of the chosen (higher-scored) mask.
    pub chosen: Vec<i64>,
    /// Proposal index of the rejected mask.
    pub rejected: Vec<i64>,
    /// `|chosen xor rejected|`, the size of the disagreement region.
    pub region_size: Vec<i64>,
    /// `score(chosen) - score(rejected)`, always `> min_margin`.
    pub margin: Vec<f64>,
}

impl PairSet {
    /// Number of pairs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.image.len()
    }

    /// Whether there are no pairs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.image.is_empty()
    }

    fn push(&mut self, row: PairRow) {
        self.image.push(row.image as i64);
        self.chosen.push(row.chosen as i64);
        self.rejected.push(row.rejected as i64);
        self.region_size.push(row.region as i64);
        self.margin.push(row.margin);
    }
}

#[derive(Clone, Copy, Debug)]
struct PairRow {
    image: usize,
    chosen: usize,
    rejected: usize,
    region: u64,
    margin: f64,
}

/// Checks that `scores` is a finite `(n, k)` buffer.
fn validate_scores(scores: &[f64], n: usize, k: usize) -> Result<()> {
    if scores.len() != n * k {
        return Err(Error::Shape {
            argument: "scores",
            expected: format!("(N, K) = ({n}, {k}), i.e. {} values", n * k),
            got: format!("{} values", scores.len()),
        });
    }
    if let Some(pos) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::NonFiniteScore {
            value: scores[pos],
            image: pos / k,
            proposal: pos % k,
        });
    }
    Ok(())
}

/// Proposal indices of one image sorted by score, descending, ties by lower index.
fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Scores are finite, so partial_cmp never fails; -0.0 and 0.0 compare equal (as in NumPy).
    order.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order
}

/// Mines the pairs of one image from its scores (K values); `region(a, b)` is `|A xor B|` and
/// `size(a)` is `|A|`.
fn mine_image(
    image: usize,
    scores: &[f64],
    params: &MiningParams,
    region: impl Fn(usize, usize) -> u64,
    size: impl Fn(usize) -> u64,
) -> Vec<PairRow> {
    let k = scores.len();
    let order = ranking(scores);
    let mut rng = SplitMix64::for_image(params.seed, image as u64);
    let lo = params.min_region.max(1);
    let hi = params.max_region.unwrap_or(u64::MAX);
    let cap = params.max_pairs_per_image.unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    for (a, b) in params.strategy.rank_pairs(k, &mut rng) {
        if rows.len() >= cap {
            break;
        }
        let (chosen, rejected) = (order[a], order[b]);
        let margin = scores[chosen] - scores[rejected];
        if margin.is_nan() || margin <= params.min_margin {
            continue;
        }
        let region = region(chosen, rejected);
        if region < lo || region > hi {
            continue;
        }
        if let Some(f) = params.max_region_fraction {
            // |D| <= f * |chosen|, compared in f64 (exact for sizes below 2**53)
            #[allow(clippy::cast_precision_loss)]
            if region as f64 > f * size(chosen) as f64 {
                continue;
            }
        }
        rows.push(PairRow {
            image,
            chosen,
            rejected,
            region,
            margin,
        });
    }
    rows
}

/// Mines every image in parallel and collects the pairs in image order.
///
/// `mine(state, image, scores)` mines one image from its K scores with a per-thread `state`
/// made by `init`; on an error, `first_invalid` gives the first invalid element in C order (so
/// that the reported position does not depend on the thread count).
fn mine_images<T: Send>(
    scores: &[f64],
    k: usize,
    init: impl Fn() -> T + Sync + Send,
    mine: impl Fn(&mut T, usize, &[f64]) -> Result<Vec<PairRow>> + Sync + Send,
    first_invalid: impl FnOnce() -> Option<Error>,
) -> Result<PairSet> {
    let per_image: Result<Vec<Vec<PairRow>>> = scores
        .par_chunks(k)
        .enumerate()
        .map_init(init, |state, (image, image_scores)| {
            mine(state, image, image_scores)
        })
        .collect();
    let per_image = per_image.map_err(|err| first_invalid().unwrap_or(err))?;
    let mut pairs = PairSet::default();
    for row in per_image.into_iter().flatten() {
        pairs.push(row);
    }
    Ok(pairs)
}

/// Validates everything and mines preference pairs from a bank and its `(N, K)` scores.
///
/// Runs in the current rayon thread pool; the output does not depend on the thread count.
pub fn mine_pairs(bank: &MaskBank<'_>, scores: &[f64], params: &MiningParams) -> Result<PairSet> {
    params.validate()?;
    let (n, k) = (bank.n(), bank.k());
    validate_scores(scores, n, k)?;
    let w = bank.words_per_mask();
    if n == 0 || k == 0 {
        return Ok(PairSet::default());
    }
    // `all_pairs` needs every pair's region: the pairwise statistics of `regions`, which count
    // only where the proposals disagree, are then cheaper than one XOR count per pair.
    let dense = params.strategy == Strategy::AllPairs;
    let init = || {
        (
            vec![0u64; k * w],
            Scratch::default(),
            vec![0i64; k],
            vec![0i64; 2 * k * k],
        )
    };
    let mine = |(packed, scratch, sizes, counts): &mut (Vec<u64>, Scratch, Vec<i64>, Vec<i64>),
                image: usize,
                image_scores: &[f64]| {
        if dense {
            let (inter, dis) = counts.split_at_mut(k * k);
            image_stats(bank, image, scratch, sizes, inter, dis)?;
            let region = |a: usize, b: usize| dis[a * k + b].unsigned_abs();
            let size = |a: usize| sizes[a].unsigned_abs();
            Ok(mine_image(image, image_scores, params, region, size))
        } else {
            bank.pack_image(image, packed)?;
            let mask = |j: usize| &packed[j * w..(j + 1) * w];
            let region = |a: usize, b: usize| xor_count(mask(a), mask(b));
            let size = |a: usize| mask(a).iter().map(|x| u64::from(x.count_ones())).sum();
            Ok(mine_image(image, image_scores, params, region, size))
        }
    };
    mine_images(scores, k, init, mine, || bank.first_invalid())
}

/// [`mine_pairs`] for a bank of label maps: a pair's region is the set of pixels whose labels
/// differ, and `max_region_fraction` is relative to the chosen map's foreground (its pixels of
/// a class other than 0).
///
/// Every image's full pairwise statistics are computed (see `label_regions`), whatever the
/// strategy. Runs in the current rayon thread pool; the output does not depend on the thread
/// count.
pub fn mine_label_pairs(
    bank: &LabelBank<'_>,
    scores: &[f64],
    params: &MiningParams,
) -> Result<PairSet> {
    params.validate()?;
    let (n, k, cc) = (bank.n(), bank.k(), bank.classes());
    validate_scores(scores, n, k)?;
    if n == 0 || k == 0 {
        return Ok(PairSet::default());
    }
    let pixels = bank.p() as i64;
    let init = || {
        (
            LabelScratch::default(),
            vec![0i64; k * cc],
            vec![0i64; k * k * cc],
            vec![0i64; k * k],
        )
    };
    let mine = |(scratch, sizes, inter, dis): &mut (LabelScratch, Vec<i64>, Vec<i64>, Vec<i64>),
                image: usize,
                image_scores: &[f64]| {
        label_image_stats(bank, image, scratch, sizes, inter, dis)?;
        let region = |a: usize, b: usize| dis[a * k + b].unsigned_abs();
        let foreground = |a: usize| (pixels - sizes[a * cc]).unsigned_abs();
        Ok(mine_image(image, image_scores, params, region, foreground))
    };
    mine_images(scores, k, init, mine, || bank.first_invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_round_trips_and_lists_choices() {
        for name in Strategy::NAMES {
            assert_eq!(name.parse::<Strategy>().unwrap().name(), name);
        }
        let err = "best".parse::<Strategy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "strategy must be one of 'top_vs_bottom', 'top_vs_rest', 'adjacent', 'all_pairs', \
             'top_vs_random', 'random', got 'best'"
        );
    }

    #[test]
    fn ranking_is_stable_descending() {
        assert_eq!(
            ranking(&[0.5, 0.9, 0.5, -0.0, 0.0, 0.9]),
            vec![1, 5, 0, 2, 3, 4]
        );
    }

    #[test]
    fn rank_pairs_of_each_strategy() {
        let mut g = SplitMix64::new(0);
        assert_eq!(Strategy::TopVsBottom.rank_pairs(4, &mut g), vec![(0, 3)]);
        assert_eq!(
            Strategy::TopVsRest.rank_pairs(4, &mut g),
            vec![(0, 1), (0, 2), (0, 3)]
        );
        assert_eq!(
            Strategy::Adjacent.rank_pairs(4, &mut g),
            vec![(0, 1), (1, 2), (2, 3)]
        );
        assert_eq!(
            Strategy::AllPairs.rank_pairs(4, &mut g),
            vec![(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
        );
        for s in Strategy::ALL {
            assert!(s.rank_pairs(1, &mut g).is_empty());
            assert!(s.rank_pairs(0, &mut g).is_empty());
        }
        for _ in 0..200 {
            let [(a, b)] = Strategy::Random.rank_pairs(3, &mut g)[..] else {
                unreachable!()
            };
            assert!(a < b && b < 3);
            let [(a, b)] = Strategy::TopVsRandom.rank_pairs(3, &mut g)[..] else {
                unreachable!()
            };
            assert!(a == 0 && (1..3).contains(&b));
        }
    }

    #[test]
    fn hand_computed_top_vs_rest() {
        // One image, 3 proposals of 4 pixels.
        let masks = [1u8, 1, 0, 0, /* */ 1, 1, 0, 0, /* */ 0, 1, 1, 1];
        let bank = MaskBank::new(&masks, 1, 3, 4).unwrap();
        let scores = [0.2, 0.9, 0.5];
        let pairs = mine_pairs(&bank, &scores, &MiningParams::default()).unwrap();
        // Ranking: 1, 2, 0. (1, 2): xor = 3, margin 0.4. (1, 0): identical masks, dropped.
        assert_eq!(pairs.chosen, vec![1]);
        assert_eq!(pairs.rejected, vec![2]);
        assert_eq!(pairs.region_size, vec![3]);
        assert!((pairs.margin[0] - 0.4).abs() < 1e-12);
    }

    /// One image, proposal 0 empty and proposal j (1..=3) with its first j pixels set, so the
    /// (0, j) pair has |xor| = j; scores rank 0 first, then 1, 2, 3.
    fn nested_bank() -> (Vec<u8>, Vec<f64>) {
        let mut masks = vec![0u8; 4 * 4];
        for j in 1..4 {
            masks[j * 4..j * 4 + j].fill(1);
        }
        (masks, vec![1.0, 0.75, 0.5, 0.25])
    }

    #[test]
    fn margin_filter_is_strict() {
        let (masks, scores) = nested_bank();
        let bank = MaskBank::new(&masks, 1, 4, 4).unwrap();
        let with_margin = |min_margin: f64| {
            let params = MiningParams {
                strategy: Strategy::TopVsRest,
                min_margin,
                ..MiningParams::default()
            };
            mine_pairs(&bank, &scores, &params).unwrap().rejected
        };
        // margins 0.25, 0.5, 0.75 (exact in binary): a margin equal to min_margin is dropped
        assert_eq!(with_margin(0.0), vec![1, 2, 3]);
        assert_eq!(with_margin(0.25), vec![2, 3]);
        assert_eq!(with_margin(0.249_999), vec![1, 2, 3]);
        assert_eq!(with_margin(0.75), Vec::<i64>::new());
        // equal scores never pair, even with min_margin = 0
        let flat = [0.5; 4];
        assert!(mine_pairs(&bank, &flat, &MiningParams::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn region_bounds_are_inclusive() {
        let (masks, scores) = nested_bank();
        let bank = MaskBank::new(&masks, 1, 4, 4).unwrap();
        let sizes = |min_region: u64, max_region: Option<u64>| {
            let params = MiningParams {
                strategy: Strategy::TopVsRest,
                min_region,
                max_region,
                ..MiningParams::default()
            };
            mine_pairs(&bank, &scores, &params).unwrap().region_size
        };
        assert_eq!(sizes(2, Some(2)), vec![2]);
        assert_eq!(sizes(3, Some(3)), vec![3]);
        assert_eq!(sizes(1, Some(2)), vec![1, 2]);
        assert_eq!(sizes(2, None), vec![2, 3]);
        assert_eq!(sizes(4, None), Vec::<i64>::new());
        // min_region 0 still never pairs identical masks (|xor| >= max(1, min_region))
        let same = [1u8, 0, 1, 0];
        let bank = MaskBank::new(&same, 1, 2, 2).unwrap();
        let params = MiningParams {
            min_region: 0,
            ..MiningParams::default()
        };
        assert!(mine_pairs(&bank, &[1.0, 0.0], &params).unwrap().is_empty());
    }

    #[test]
    fn region_fraction_bounds_the_region_by_the_chosen_mask_area() {
        // chosen: 4 pixels; rejected masks differ from it by 1, 2 and 3 pixels
        let masks = [
            1u8, 1, 1, 1, 0, 0, //
            1, 1, 1, 0, 0, 0, //
            1, 1, 0, 0, 0, 0, //
            1, 0, 0, 0, 0, 0,
        ];
        let scores = [1.0, 0.5, 0.25, 0.0];
        let bank = MaskBank::new(&masks, 1, 4, 6).unwrap();
        for strategy in [Strategy::TopVsRest, Strategy::AllPairs] {
            let sizes = |fraction: Option<f64>| {
                let params = MiningParams {
                    strategy,
                    max_region_fraction: fraction,
                    ..MiningParams::default()
                };
                let pairs = mine_pairs(&bank, &scores, &params).unwrap();
                pairs
                    .chosen
                    .iter()
                    .zip(&pairs.region_size)
                    .map(|(&c, &r)| (c, r))
                    .collect::<Vec<_>>()
            };
            // the bound is inclusive: 2 <= 0.5 * 4 keeps the 2-pixel region, 3 > 2 drops it
            let top = |v: Vec<(i64, i64)>| v.into_iter().filter(|p| p.0 == 0).collect::<Vec<_>>();
            assert_eq!(top(sizes(Some(0.5))), vec![(0, 1), (0, 2)]);
            assert_eq!(top(sizes(Some(0.25))), vec![(0, 1)]);
            assert_eq!(top(sizes(Some(0.2))), vec![]);
            assert_eq!(top(sizes(None)), vec![(0, 1), (0, 2), (0, 3)]);
            if strategy == Strategy::AllPairs {
                // chosen 1 (3 pixels) vs 3: |D| = 2 > 0.5 * 3; vs 2: |D| = 1 <= 1.5
                assert!(sizes(Some(0.5)).contains(&(1, 1)));
                assert!(!sizes(Some(0.5)).contains(&(1, 2)));
            }
        }
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let params = MiningParams {
                max_region_fraction: Some(bad),
                ..MiningParams::default()
            };
            assert!(mine_pairs(&bank, &scores, &params)
                .unwrap_err()
                .to_string()
                .starts_with("max_region_fraction must be"));
        }
    }

    #[test]
    fn per_image_cap_keeps_the_first_kept_pairs_of_each_image() {
        let (one, scores) = nested_bank();
        let masks = [one.clone(), one].concat();
        let scores = [scores.clone(), scores].concat();
        let bank = MaskBank::new(&masks, 2, 4, 4).unwrap();
        let params = MiningParams {
            strategy: Strategy::AllPairs,
            max_pairs_per_image: Some(2),
            ..MiningParams::default()
        };
        let pairs = mine_pairs(&bank, &scores, &params).unwrap();
        assert_eq!(pairs.image, vec![0, 0, 1, 1]);
        assert_eq!(pairs.chosen, vec![0, 0, 0, 0]);
        assert_eq!(pairs.rejected, vec![1, 2, 1, 2]);
        // the cap counts pairs that pass the filters, not candidates
        let params = MiningParams {
            strategy: Strategy::TopVsRest,
            min_region: 2,
            max_pairs_per_image: Some(1),
            ..MiningParams::default()
        };
        let pairs = mine_pairs(&bank, &scores, &params).unwrap();
        assert_eq!((pairs.image, pairs.rejected), (vec![0, 1], vec![2, 2]));
        let params = MiningParams {
            max_pairs_per_image: Some(0),
            ..MiningParams::default()
        };
        assert!(mine_pairs(&bank, &scores, &params).unwrap().is_empty());
    }

    #[test]
    fn label_maps_pair_on_differing_labels_and_bound_by_the_foreground() {
        // One image, 3 label maps of 6 pixels, 3 classes.
        let maps = [
            1u8, 1, 2, 2, 0, 0, // 4 foreground pixels
            1, 1, 2, 1, 0, 0, // differs from map 0 at 1 pixel
            1, 2, 0, 0, 0, 0, // differs from map 0 at 3 pixels
        ];
        let bank = LabelBank::new(&maps, 1, 3, 6, 3).unwrap();
        let scores = [0.9, 0.5, 0.1];
        let mine = |strategy, max_region_fraction| {
            let params = MiningParams {
                strategy,
                max_region_fraction,
                ..MiningParams::default()
            };
            let pairs = mine_label_pairs(&bank, &scores, &params).unwrap();
            let rows = pairs
                .chosen
                .iter()
                .zip(&pairs.rejected)
                .zip(&pairs.region_size);
            rows.map(|((&c, &r), &d)| (c, r, d)).collect::<Vec<_>>()
        };
        assert_eq!(mine(Strategy::TopVsRest, None), vec![(0, 1, 1), (0, 2, 3)]);
        // 3 > 0.5 * 4 foreground pixels of map 0: dropped; 1 <= 2 kept
        assert_eq!(mine(Strategy::TopVsRest, Some(0.5)), vec![(0, 1, 1)]);
        // map 1 (4 foreground pixels) vs map 2: labels differ at pixels 1, 2, 3
        assert_eq!(
            mine(Strategy::AllPairs, None),
            vec![(0, 1, 1), (0, 2, 3), (1, 2, 3)]
        );
        let bad = [0u8, 3, 0, 0, 0, 0];
        let bank = LabelBank::new(&bad, 1, 2, 3, 3).unwrap();
        let err = mine_label_pairs(&bank, &[1.0, 0.0], &MiningParams::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "masks must contain only labels 0 to 2 (num_classes = 3), got 3 at image 0, \
             proposal 0, flat pixel 1"
        );
    }

    #[test]
    fn rejects_bad_parameters() {
        let masks = [0u8; 4];
        let bank = MaskBank::new(&masks, 1, 2, 2).unwrap();
        let bad = MiningParams {
            min_margin: f64::NAN,
            ..MiningParams::default()
        };
        assert!(mine_pairs(&bank, &[0.0, 1.0], &bad)
            .unwrap_err()
            .to_string()
            .starts_with("min_margin must be"));
        let bad = MiningParams {
            min_region: 5,
            max_region: Some(2),
            ..MiningParams::default()
        };
        assert!(mine_pairs(&bank, &[0.0, 1.0], &bad)
            .unwrap_err()
            .to_string()
            .starts_with("max_region must be"));
        let err = mine_pairs(&bank, &[0.0, f64::INFINITY], &MiningParams::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "scores must be finite, got inf at image 0, proposal 1"
        );
        let err = mine_pairs(&bank, &[0.0], &MiningParams::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("scores must have shape"),
            "{err}"
        );
    }
}
