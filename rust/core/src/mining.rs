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
//!
//! Memory per thread follows what the strategy compares (every mask is still read and checked):
//! the strategies whose pairs share their chosen proposal (`top_vs_*`, `random`) stream the masks
//! of an image two at a time and keep O(K) numbers; `adjacent` keeps the image's packed masks (an
//! eighth of its bytes; label maps are compared in place, two at a time); only `all_pairs` keeps
//! a K x K table of disagreements per image, refused above [`MAX_TABLE_BYTES`] (see `memory`).

use std::fmt;
use std::iter::Peekable;
use std::str::FromStr;

use rayon::prelude::*;

use crate::bank::MaskBank;
use crate::error::{Error, Result};
use crate::label_regions::{label_image_stats, LabelScratch};
use crate::labels::LabelBank;
use crate::memory::{self, MAX_TABLE_BYTES, TABLE_BUDGET_BYTES};
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

/// Rank pairs `(a, b)` of one image, in strategy order.
type RankPairs = Box<dyn Iterator<Item = (usize, usize)>>;

/// What the pairs of a strategy share, which decides the memory that mining needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Every pair has the same chosen proposal: it is compared with the others, one at a time.
    /// `single`: the strategy draws one pair, so only one comparison is needed.
    Anchored { single: bool },
    /// Pairs of adjacent ranks: each mask is compared with the next ranked one.
    Chain,
    /// Every pair: a K x K table of disagreements.
    Dense,
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

    fn shape(self) -> Shape {
        match self {
            Strategy::TopVsBottom | Strategy::TopVsRandom | Strategy::Random => {
                Shape::Anchored { single: true }
            }
            Strategy::TopVsRest => Shape::Anchored { single: false },
            Strategy::Adjacent => Shape::Chain,
            Strategy::AllPairs => Shape::Dense,
        }
    }

    /// Rank pairs `(a, b)`, `a < b`, of an image with `k` proposals, in strategy order (drawn
    /// from `rng` now, listed lazily: `all_pairs` lists K (K - 1) / 2 of them).
    fn rank_pairs(self, k: usize, rng: &mut SplitMix64) -> RankPairs {
        if k < 2 {
            return Box::new(std::iter::empty());
        }
        match self {
            Strategy::TopVsBottom => Box::new(std::iter::once((0, k - 1))),
            Strategy::TopVsRest => Box::new((1..k).map(|r| (0, r))),
            Strategy::Adjacent => Box::new((0..k - 1).map(|r| (r, r + 1))),
            Strategy::AllPairs => {
                Box::new((0..k).flat_map(move |a| (a + 1..k).map(move |b| (a, b))))
            }
            Strategy::TopVsRandom => {
                Box::new(std::iter::once((0, 1 + rng.below(k as u64 - 1) as usize)))
            }
            Strategy::Random => {
                let x = rng.below(k as u64) as usize;
                let mut y = rng.below(k as u64 - 1) as usize;
                if y >= x {
                    y += 1;
                }
                Box::new(std::iter::once((x.min(y), x.max(y))))
            }
        }
    }

    /// The strategies that need no pair table, quoted and comma-separated (for messages).
    fn without_table() -> String {
        Self::ALL
            .into_iter()
            .filter(|s| s.shape() != Shape::Dense)
            .map(Strategy::name)
            .collect::<Vec<_>>()
            .join(", ")
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

    /// The pairs of every image, in image order; an error when they cannot be allocated.
    fn from_images(per_image: Vec<Vec<PairRow>>) -> Result<Self> {
        let total: usize = per_image.iter().map(Vec::len).sum();
        let mut pairs = Self::default();
        let reserved = pairs.image.try_reserve_exact(total).is_ok()
            && pairs.chosen.try_reserve_exact(total).is_ok()
            && pairs.rejected.try_reserve_exact(total).is_ok()
            && pairs.region_size.try_reserve_exact(total).is_ok()
            && pairs.margin.try_reserve_exact(total).is_ok();
        if !reserved {
            return Err(memory::cannot_allocate(
                format!(
                    "the {total} mined pairs need {} of output arrays",
                    memory::fmt_bytes(memory::bytes_f64(&[total], PAIR_BYTES))
                ),
                "set max_pairs_per_image, or mine fewer images at a time",
            ));
        }
        for row in per_image.into_iter().flatten() {
            pairs.push(row);
        }
        Ok(pairs)
    }

    fn push(&mut self, row: PairRow) {
        self.image.push(row.image as i64);
        self.chosen.push(row.chosen as i64);
        self.rejected.push(row.rejected as i64);
        self.region_size.push(row.region as i64);
        self.margin.push(row.margin);
    }
}

/// Bytes of one mined pair, in a [`PairRow`] or in the five arrays of a [`PairSet`].
const PAIR_BYTES: usize = 40;

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
    let expected = n.checked_mul(k);
    if expected != Some(scores.len()) {
        let values = expected.map_or_else(|| "more than usize::MAX".to_owned(), |v| v.to_string());
        return Err(Error::Shape {
            argument: "scores",
            expected: format!("(N, K) = ({n}, {k}), i.e. {values} values"),
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

/// The ranking of one image (K scores) and its rank pairs, in strategy order.
fn plan_image(
    image: usize,
    scores: &[f64],
    params: &MiningParams,
) -> (Vec<usize>, Peekable<RankPairs>) {
    let order = ranking(scores);
    let mut rng = SplitMix64::for_image(params.seed, image as u64);
    let pairs = params.strategy.rank_pairs(scores.len(), &mut rng);
    (order, pairs.peekable())
}

/// Keeps the pairs of one image that pass the filters, from its scores (K values), its ranking
/// `order` and its rank `pairs` in strategy order; `region(a, b)` is `|A xor B|` and `size(a)`
/// is `|A|` of proposals `a` (chosen) and `b` (rejected).
fn mine_image(
    image: usize,
    scores: &[f64],
    order: &[usize],
    pairs: impl Iterator<Item = (usize, usize)>,
    params: &MiningParams,
    region: impl Fn(usize, usize) -> u64,
    size: impl Fn(usize) -> u64,
) -> Result<Vec<PairRow>> {
    let lo = params.min_region.max(1);
    let hi = params.max_region.unwrap_or(u64::MAX);
    let cap = params.max_pairs_per_image.unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    for (a, b) in pairs {
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
        // all_pairs keeps up to K (K - 1) / 2 pairs per image
        if rows.len() == rows.capacity() && rows.try_reserve(1).is_err() {
            return Err(memory::cannot_allocate(
                format!(
                    "the mined pairs of image {image} need more than {} ({} pairs)",
                    memory::fmt_bytes(memory::bytes_f64(&[rows.len()], PAIR_BYTES)),
                    rows.len()
                ),
                "set max_pairs_per_image or use fewer proposals per image",
            ));
        }
        rows.push(PairRow {
            image,
            chosen,
            rejected,
            region,
            margin,
        });
    }
    Ok(rows)
}

/// Mines every image in parallel, `batch` images at a time, and collects the pairs in image
/// order.
///
/// `mine(state, image, scores)` mines one image from its K scores with a per-thread `state`
/// made by `init`; on an error, `first_invalid` gives the first invalid element in C order (so
/// that the reported position does not depend on the thread count).
fn mine_images<T: Send>(
    scores: &[f64],
    k: usize,
    batch: usize,
    init: impl Fn() -> T + Sync + Send,
    mine: impl Fn(&mut T, usize, &[f64]) -> Result<Vec<PairRow>> + Sync + Send,
    first_invalid: impl FnOnce() -> Option<Error>,
) -> Result<PairSet> {
    let batch = batch.max(1);
    let mut per_image: Vec<Vec<PairRow>> = Vec::new();
    for (b, chunk) in scores.chunks(k.saturating_mul(batch)).enumerate() {
        let first = b * batch;
        let part: Result<Vec<Vec<PairRow>>> = chunk
            .par_chunks(k)
            .enumerate()
            .map_init(&init, |state, (i, image_scores)| {
                mine(state, first + i, image_scores)
            })
            .collect();
        match part {
            Ok(rows) => per_image.extend(rows),
            Err(err) => return Err(first_invalid().unwrap_or(err)),
        }
    }
    PairSet::from_images(per_image)
}

/// Checks the pair table that `all_pairs` keeps per image, `tables` K x K int64 tables plus
/// `per_proposal` int64 per proposal, against [`MAX_TABLE_BYTES`]; returns its bytes.
///
/// `what` names the proposals (`K = 50000 proposals`).
fn check_table(k: usize, tables: usize, per_proposal: usize, what: &str) -> Result<u64> {
    let entries = memory::product(&[tables, k, k])
        .and_then(|t| t.checked_add(k.checked_mul(per_proposal)?))
        .and_then(|e| e.checked_mul(8));
    match entries.map(|bytes| bytes as u64) {
        Some(bytes) if bytes <= MAX_TABLE_BYTES => Ok(bytes),
        _ => Err(Error::TooLarge {
            argument: "masks",
            need: table_need(k, tables, what),
            reason: format!(
                "more than the {} that one image's table may take (rndpo_core::MAX_TABLE_BYTES); \
                 use fewer proposals per image or a strategy without a pair table ({})",
                memory::fmt_bytes(MAX_TABLE_BYTES as f64),
                Strategy::without_table()
            ),
        }),
    }
}

/// `K = 50000 proposals need a 50000 x 50000 int64 pair table (20.0 GB) for strategy all_pairs`.
fn table_need(k: usize, tables: usize, what: &str) -> String {
    let planes = if tables == 1 {
        String::new()
    } else {
        format!("{tables} x ")
    };
    format!(
        "{what} need a {planes}{k} x {k} int64 pair table ({}) for strategy all_pairs",
        memory::fmt_bytes(memory::bytes_f64(&[tables, k, k], 8))
    )
}

/// The error for a pair table that passed [`check_table`] but cannot be allocated now.
fn table_error(k: usize, tables: usize, what: &str) -> Error {
    memory::cannot_allocate(
        table_need(k, tables, what),
        &format!(
            "use fewer proposals per image or a strategy without a pair table ({})",
            Strategy::without_table()
        ),
    )
}

/// How many images to mine at a time so that the threads hold at most
/// `TABLE_BUDGET_BYTES` of pair tables of `table_bytes` each (all `n` when that is no limit).
fn images_in_flight(table_bytes: u64, n: usize) -> usize {
    let fit = usize::try_from(TABLE_BUDGET_BYTES / table_bytes.max(1)).unwrap_or(usize::MAX);
    if fit >= rayon::current_num_threads() {
        n
    } else {
        fit.max(1)
    }
}

/// Per-thread buffers of [`mine_pairs`]; which ones are used depends on the strategy's shape.
#[derive(Default)]
struct MaskScratch {
    /// Anchored strategies: two packed masks (`ceil(P / 64)` words each), and a region and a
    /// size per proposal (see [`stream_masks`]).
    a: Vec<u64>,
    b: Vec<u64>,
    region: Vec<u64>,
    size: Vec<u64>,
    /// `adjacent`: the K packed masks of the image, `K * ceil(P / 64)` words (an eighth of its
    /// bytes), packed in address order (reading them in rank order is slower).
    packed: Vec<u64>,
    /// `all_pairs`: packing scratch, K sizes and the K x K disagreement table.
    dense: Scratch,
    sizes: Vec<i64>,
    dis: Vec<i64>,
}

/// Validates and packs the K masks of one image for a streamed strategy, two buffers of
/// `ceil(P / 64)` words at a time, and fills `st.region` and `st.size` by proposal.
///
/// `first` is the image's first pair `(chosen, rejected)` of proposals (none when K < 2: the
/// masks are only checked). Anchored strategies (every chosen proposal is `first.0`): the anchor
/// is packed first, then the others in index order; `region[j] = |anchor xor j|` (only for
/// `first.1` when `single`) and `size[anchor]`. Chained (`adjacent`): all K masks are packed
/// into `st.packed`, and compared by the caller. Every mask is packed once.
fn stream_masks(
    bank: &MaskBank<'_>,
    image: usize,
    shape: Shape,
    first: Option<(usize, usize)>,
    st: &mut MaskScratch,
) -> Result<()> {
    let (k, w) = (bank.k(), bank.words_per_mask());
    st.b.resize(w, 0);
    match (shape, first) {
        (_, None) | (Shape::Dense, _) => {
            for j in 0..k {
                bank.pack_proposal(image, j, &mut st.b)?;
            }
        }
        (Shape::Chain, Some(_)) => {
            // K * w <= K * P, the image's bytes
            if !memory::try_resize(&mut st.packed, k * w, 0) {
                return Err(memory::scratch_error(k, bank.p(), k * w, 8));
            }
            bank.pack_image(image, &mut st.packed)?;
        }
        (Shape::Anchored { single }, Some((anchor, target))) => {
            st.a.resize(w, 0);
            st.region.resize(k, 0);
            st.size.resize(k, 0);
            bank.pack_proposal(image, anchor, &mut st.a)?;
            st.size[anchor] = st.a.iter().map(|x| u64::from(x.count_ones())).sum();
            for j in (0..k).filter(|&j| j != anchor) {
                bank.pack_proposal(image, j, &mut st.b)?;
                if !single || j == target {
                    st.region[j] = xor_count(&st.a, &st.b);
                }
            }
        }
    }
    Ok(())
}

/// Validates everything and mines preference pairs from a bank and its `(N, K)` scores.
///
/// Runs in the current rayon thread pool; the output does not depend on the thread count.
pub fn mine_pairs(bank: &MaskBank<'_>, scores: &[f64], params: &MiningParams) -> Result<PairSet> {
    params.validate()?;
    let (n, k) = (bank.n(), bank.k());
    validate_scores(scores, n, k)?;
    if n == 0 || k == 0 {
        return Ok(PairSet::default());
    }
    let shape = params.strategy.shape();
    let w = bank.words_per_mask();
    let what = format!("K = {k} proposals");
    // `all_pairs` needs every pair's region: the pairwise statistics of `regions`, which count
    // only where the proposals disagree, are then cheaper than one XOR count per pair.
    let batch = if shape == Shape::Dense {
        images_in_flight(check_table(k, 1, 1, &what)?, n)
    } else {
        n
    };
    let mine = |st: &mut MaskScratch, image: usize, image_scores: &[f64]| {
        let (order, mut pairs) = plan_image(image, image_scores, params);
        if shape == Shape::Dense {
            if st.dis.is_empty() {
                // checked by check_table: k * k fits
                st.dis = memory::try_vec(k * k, 0).ok_or_else(|| table_error(k, 1, &what))?;
                st.sizes.resize(k, 0);
            }
            image_stats(bank, image, &mut st.dense, &mut st.sizes, None, &mut st.dis)?;
            let (sizes, dis) = (&st.sizes, &st.dis);
            let region = |a: usize, b: usize| dis[a * k + b].unsigned_abs();
            let size = |a: usize| sizes[a].unsigned_abs();
            return mine_image(image, image_scores, &order, pairs, params, region, size);
        }
        let first = pairs.peek().map(|&(a, b)| (order[a], order[b]));
        stream_masks(bank, image, shape, first, st)?;
        if shape == Shape::Chain {
            let mask = |j: usize| &st.packed[j * w..(j + 1) * w];
            let region = |c: usize, r: usize| xor_count(mask(c), mask(r));
            let size = |c: usize| mask(c).iter().map(|x| u64::from(x.count_ones())).sum();
            return mine_image(image, image_scores, &order, pairs, params, region, size);
        }
        let (region, size) = (&st.region, &st.size);
        let region = |_: usize, r: usize| region[r];
        let size = |c: usize| size[c];
        mine_image(image, image_scores, &order, pairs, params, region, size)
    };
    mine_images(scores, k, batch, MaskScratch::default, mine, || {
        bank.first_invalid()
    })
}

/// Number of positions `t` where `hit(a[t], b[t])`, counted in `u8` lanes of 64-byte lines
/// (at most 255 lines per count), which vectorise to a compare and a subtract per 16 bytes.
#[inline]
fn count_where(a: &[u8], b: &[u8], hit: impl Fn(u8, u8) -> bool + Copy) -> u64 {
    const LINES: usize = 255;
    let mut total = 0u64;
    for (x, y) in a.chunks(LINES * 64).zip(b.chunks(LINES * 64)) {
        let ((x_lines, x_tail), (y_lines, y_tail)) = (x.as_chunks::<64>(), y.as_chunks::<64>());
        let mut lanes = [0u8; 64];
        for (p, q) in x_lines.iter().zip(y_lines) {
            for ((lane, &u), &v) in lanes.iter_mut().zip(p).zip(q) {
                *lane += u8::from(hit(u, v));
            }
        }
        total += lanes.iter().map(|&c| u64::from(c)).sum::<u64>();
        total += x_tail
            .iter()
            .zip(y_tail)
            .map(|(&u, &v)| u64::from(hit(u, v)))
            .sum::<u64>();
    }
    total
}

/// Number of pixels where `a` and `b` differ.
fn differing(a: &[u8], b: &[u8]) -> u64 {
    count_where(a, b, |u, v| u != v)
}

/// Number of pixels of `a` that are not background (label 0).
fn foreground(a: &[u8]) -> u64 {
    count_where(a, a, |u, _| u != 0)
}

/// [`stream_masks`] for label maps, which are compared byte by byte in place (nothing is
/// packed): `region` counts the pixels whose labels differ and `size` the foreground.
///
/// Anchored strategies fill `region[j]` and `size[anchor]` as [`stream_masks`] does. Chained:
/// maps are read in rank order `order`; `region[c]` is the disagreement of `c` with the next
/// ranked map and `size[c]` its foreground, for each proposal `c`.
fn stream_labels(
    bank: &LabelBank<'_>,
    image: usize,
    shape: Shape,
    order: &[usize],
    first: Option<(usize, usize)>,
    region: &mut Vec<u64>,
    size: &mut Vec<u64>,
) -> Result<()> {
    let k = bank.k();
    region.resize(k, 0);
    size.resize(k, 0);
    match (shape, first) {
        (_, None) | (Shape::Dense, _) => {
            for j in 0..k {
                bank.checked_map(image, j)?;
            }
        }
        (Shape::Chain, Some((top, _))) => {
            let mut a = bank.checked_map(image, top)?;
            size[top] = foreground(a);
            for pair in order.windows(2) {
                let b = bank.checked_map(image, pair[1])?;
                region[pair[0]] = differing(a, b);
                size[pair[1]] = foreground(b);
                a = b;
            }
        }
        (Shape::Anchored { single }, Some((anchor, target))) => {
            let a = bank.checked_map(image, anchor)?;
            size[anchor] = foreground(a);
            for j in (0..k).filter(|&j| j != anchor) {
                let b = bank.checked_map(image, j)?;
                if !single || j == target {
                    region[j] = differing(a, b);
                }
            }
        }
    }
    Ok(())
}

/// Per-thread buffers of [`mine_label_pairs`]: a region and a size per proposal (streamed
/// strategies); for `all_pairs`, packing scratch and the image's statistics.
#[derive(Default)]
struct LabelMining {
    region: Vec<u64>,
    size: Vec<u64>,
    scratch: LabelScratch,
    sizes: Vec<i64>,
    inter: Vec<i64>,
    dis: Vec<i64>,
}

/// [`mine_pairs`] for a bank of label maps: a pair's region is the set of pixels whose labels
/// differ, and `max_region_fraction` is relative to the chosen map's foreground (its pixels of
/// a class other than 0).
///
/// `all_pairs` computes every image's full pairwise statistics (see `label_regions`): C + 1
/// tables of K x K; the other strategies compare the maps they pair byte by byte. Runs in the
/// current rayon thread pool; the output does not depend on the thread count.
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
    let shape = params.strategy.shape();
    let what = format!("K = {k} label maps of C = {cc} classes");
    let batch = if shape == Shape::Dense {
        images_in_flight(check_table(k, cc + 1, cc, &what)?, n)
    } else {
        n
    };
    let mine = |st: &mut LabelMining, image: usize, image_scores: &[f64]| {
        let (order, mut pairs) = plan_image(image, image_scores, params);
        if shape == Shape::Dense {
            if st.dis.is_empty() {
                // checked by check_table: (C + 1) k * k fits
                let table = |len: usize| {
                    memory::try_vec(len, 0).ok_or_else(|| table_error(k, cc + 1, &what))
                };
                (st.sizes, st.inter, st.dis) = (table(k * cc)?, table(k * k * cc)?, table(k * k)?);
            }
            let (sizes, inter, dis) = (&mut st.sizes, &mut st.inter, &mut st.dis);
            label_image_stats(bank, image, &mut st.scratch, sizes, inter, dis)?;
            let (sizes, dis) = (&st.sizes, &st.dis);
            let region = |a: usize, b: usize| dis[a * k + b].unsigned_abs();
            let foreground = |a: usize| (pixels - sizes[a * cc]).unsigned_abs();
            return mine_image(
                image,
                image_scores,
                &order,
                pairs,
                params,
                region,
                foreground,
            );
        }
        let first = pairs.peek().map(|&(a, b)| (order[a], order[b]));
        stream_labels(
            bank,
            image,
            shape,
            &order,
            first,
            &mut st.region,
            &mut st.size,
        )?;
        let (region, size) = (&st.region, &st.size);
        let chained = shape == Shape::Chain;
        let region = |c: usize, r: usize| region[if chained { c } else { r }];
        let size = |c: usize| size[c];
        mine_image(image, image_scores, &order, pairs, params, region, size)
    };
    mine_images(scores, k, batch, LabelMining::default, mine, || {
        bank.first_invalid()
    })
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
        let mut rank_pairs = |s: Strategy, k: usize| s.rank_pairs(k, &mut g).collect::<Vec<_>>();
        assert_eq!(rank_pairs(Strategy::TopVsBottom, 4), vec![(0, 3)]);
        assert_eq!(
            rank_pairs(Strategy::TopVsRest, 4),
            vec![(0, 1), (0, 2), (0, 3)]
        );
        assert_eq!(
            rank_pairs(Strategy::Adjacent, 4),
            vec![(0, 1), (1, 2), (2, 3)]
        );
        assert_eq!(
            rank_pairs(Strategy::AllPairs, 4),
            vec![(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
        );
        for s in Strategy::ALL {
            assert!(rank_pairs(s, 1).is_empty());
            assert!(rank_pairs(s, 0).is_empty());
        }
        for _ in 0..200 {
            let [(a, b)] = rank_pairs(Strategy::Random, 3)[..] else {
                unreachable!()
            };
            assert!(a < b && b < 3);
            let [(a, b)] = rank_pairs(Strategy::TopVsRandom, 3)[..] else {
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

    /// Pairs mined straight from the module docs, byte by byte: `(image, chosen, rejected,
    /// region)` (margins follow from the first three).
    #[allow(clippy::many_single_char_names)] // the names of the module docs
    fn naive_mine(
        data: &[u8],
        (n, k, p): (usize, usize, usize),
        scores: &[f64],
        params: &MiningParams,
    ) -> Vec<(i64, i64, i64, i64)> {
        let map = |i: usize, j: usize| &data[(i * k + j) * p..(i * k + j + 1) * p];
        let mut rows = Vec::new();
        for i in 0..n {
            let s = &scores[i * k..(i + 1) * k];
            let order = ranking(s);
            let mut g = SplitMix64::for_image(params.seed, i as u64);
            let mut kept = 0;
            for (a, b) in params.strategy.rank_pairs(k, &mut g) {
                let (c, r) = (order[a], order[b]);
                let region = map(i, c)
                    .iter()
                    .zip(map(i, r))
                    .filter(|(x, y)| x != y)
                    .count();
                let size = map(i, c).iter().filter(|&&v| v != 0).count();
                let fits = params
                    .max_region_fraction
                    .is_none_or(|f| region as f64 <= f * size as f64);
                let ok = s[c] - s[r] > params.min_margin
                    && region as u64 >= params.min_region.max(1)
                    && params.max_region.is_none_or(|hi| region as u64 <= hi)
                    && fits;
                if ok && params.max_pairs_per_image.is_none_or(|cap| kept < cap) {
                    kept += 1;
                    rows.push((i as i64, c as i64, r as i64, region as i64));
                }
            }
        }
        rows
    }

    fn rows(pairs: &PairSet) -> Vec<(i64, i64, i64, i64)> {
        (0..pairs.len())
            .map(|t| {
                let (i, c, r) = (pairs.image[t], pairs.chosen[t], pairs.rejected[t]);
                (i, c, r, pairs.region_size[t])
            })
            .collect()
    }

    /// Tiny masks (P = 3 pixels, so many proposals are identical) or label maps, with scores
    /// of few distinct values (ties).
    fn tiny_bank(n: usize, k: usize, classes: u64, seed: u64) -> (Vec<u8>, Vec<f64>) {
        let mut g = SplitMix64::new(seed);
        let data = (0..n * k * 3).map(|_| g.below(classes) as u8).collect();
        let scores = (0..n * k).map(|_| g.below(50) as f64 / 50.0).collect();
        (data, scores)
    }

    #[test]
    fn every_strategy_matches_the_naive_miner_up_to_thousands_of_proposals() {
        for (n, k) in [
            (3usize, 1usize),
            (3, 2),
            (3, 3),
            (2, 100),
            (1, 1000),
            (1, 3000),
        ] {
            for classes in [2u64, 4] {
                let (data, scores) = tiny_bank(n, k, classes, (n * k) as u64 + classes);
                for strategy in Strategy::ALL {
                    if strategy == Strategy::AllPairs && k > 1000 {
                        continue; // the naive miner would take seconds
                    }
                    for (fraction, cap) in [(None, None), (Some(0.5), Some(7))] {
                        let params = MiningParams {
                            strategy,
                            max_region_fraction: fraction,
                            max_pairs_per_image: cap,
                            seed: k as u64,
                            ..MiningParams::default()
                        };
                        let want = naive_mine(&data, (n, k, 3), &scores, &params);
                        let got = if classes == 2 {
                            let bank = MaskBank::new(&data, n, k, 3).unwrap();
                            mine_pairs(&bank, &scores, &params).unwrap()
                        } else {
                            let bank = LabelBank::new(&data, n, k, 3, 4).unwrap();
                            mine_label_pairs(&bank, &scores, &params).unwrap()
                        };
                        assert_eq!(rows(&got), want, "{strategy} K = {k} C = {classes}");
                    }
                }
            }
        }
    }

    #[test]
    fn streamed_strategies_still_check_every_mask() {
        // A bad value in a mask that no pair of top_vs_bottom or random compares.
        let (mut data, scores) = tiny_bank(2, 6, 2, 1);
        data[(6 + 3) * 3 + 1] = 7;
        let bank = MaskBank::new(&data, 2, 6, 3).unwrap();
        let labels = LabelBank::new(&data, 2, 6, 3, 3).unwrap();
        for strategy in Strategy::ALL {
            let params = MiningParams {
                strategy,
                max_pairs_per_image: Some(0),
                ..MiningParams::default()
            };
            let err = mine_pairs(&bank, &scores, &params).unwrap_err();
            assert!(err
                .to_string()
                .contains("got 7 at image 1, proposal 3, flat pixel 1"));
            let err = mine_label_pairs(&labels, &scores, &params).unwrap_err();
            assert!(err
                .to_string()
                .contains("got 7 at image 1, proposal 3, flat pixel 1"));
        }
        // K = 1: no pairs, the mask is still checked
        let bank = MaskBank::new(&[0, 2], 1, 1, 2).unwrap();
        assert!(mine_pairs(&bank, &[0.0], &MiningParams::default()).is_err());
    }

    #[test]
    fn fifty_thousand_proposals_mine_without_a_pair_table_or_refuse_all_pairs() {
        let k = 50_000;
        let (data, scores) = tiny_bank(1, k, 2, 5);
        let bank = MaskBank::new(&data, 1, k, 3).unwrap();
        let labels = LabelBank::new(&data, 1, k, 3, 4).unwrap();
        for strategy in Strategy::ALL {
            let params = MiningParams {
                strategy,
                ..MiningParams::default()
            };
            let binary = mine_pairs(&bank, &scores, &params);
            let label = mine_label_pairs(&labels, &scores, &params);
            if strategy != Strategy::AllPairs {
                let want = naive_mine(&data, (1, k, 3), &scores, &params);
                assert_eq!(rows(&binary.unwrap()), want, "{strategy}");
                assert_eq!(rows(&label.unwrap()), want, "{strategy}");
                continue;
            }
            assert_eq!(
                binary.unwrap_err().to_string(),
                "masks: K = 50000 proposals need a 50000 x 50000 int64 pair table (20.0 GB) \
                 for strategy all_pairs, more than the 8.0 GB that one image's table may take \
                 (rndpo_core::MAX_TABLE_BYTES); use fewer proposals per image or a strategy \
                 without a pair table (top_vs_bottom, top_vs_rest, adjacent, top_vs_random, random)"
            );
            let err = label.unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "masks: K = 50000 label maps of C = 4 classes need a 5 x 50000 x 50000 int64 \
                     pair table (100.0 GB) for strategy all_pairs, more than the 8.0 GB"
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn pair_tables_are_checked_against_the_cap_with_checked_arithmetic() {
        // K = 31,622 is the largest binary table under 8 GB, as documented
        assert_eq!(check_table(31_622, 1, 1, "K").unwrap(), 7_999_860_048);
        assert!(check_table(31_623, 1, 1, "K").is_err());
        assert_eq!(check_table(16, 5, 4, "K").unwrap(), (5 * 256 + 64) * 8);
        for k in [1usize << 32, usize::MAX] {
            let err = check_table(k, 256, 255, "K = huge").unwrap_err();
            assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        }
        assert!(table_error(3, 1, "K = 3 proposals").to_string().ends_with(
            "more than can be allocated; use fewer proposals per image or a strategy \
                        without a pair table (top_vs_bottom, top_vs_rest, adjacent, \
                        top_vs_random, random)"
        ));
    }

    #[test]
    fn large_tables_are_mined_fewer_images_at_a_time() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        pool.install(|| {
            assert_eq!(images_in_flight(1000, 100), 100);
            assert_eq!(images_in_flight(TABLE_BUDGET_BYTES / 2, 100), 2);
            assert_eq!(images_in_flight(MAX_TABLE_BYTES, 100), 1);
        });
        // Results do not depend on the batch size.
        let (data, scores) = tiny_bank(7, 9, 2, 3);
        let bank = MaskBank::new(&data, 7, 9, 3).unwrap();
        let params = MiningParams {
            strategy: Strategy::AllPairs,
            ..MiningParams::default()
        };
        let mine = |st: &mut MaskScratch, image: usize, s: &[f64]| {
            let (order, pairs) = plan_image(image, s, &params);
            stream_masks(&bank, image, Shape::Dense, None, st)?;
            let map = |j: usize| &data[(image * 9 + j) * 3..(image * 9 + j + 1) * 3];
            let region = |c: usize, r: usize| {
                map(c).iter().zip(map(r)).filter(|(x, y)| x != y).count() as u64
            };
            let size = |c: usize| map(c).iter().map(|&v| u64::from(v)).sum();
            mine_image(image, s, &order, pairs, &params, region, size)
        };
        let all = mine_pairs(&bank, &scores, &params).unwrap();
        for batch in [1, 2, 3, 7, 100] {
            let got = mine_images(&scores, 9, batch, MaskScratch::default, mine, || None);
            assert_eq!(got.unwrap(), all, "batch {batch}");
        }
    }

    #[test]
    fn statistics_of_impossible_sizes_are_errors_not_panics() {
        // a zero-byte bank of (2**20, 2**20, 0): 2**61 counts, 2**64 bytes
        let bank = MaskBank::new(&[], 1 << 20, 1 << 20, 0).unwrap();
        assert_eq!(
            crate::pairwise_stats(&bank).unwrap_err().to_string(),
            "masks: (N, K) = (1048576, 1048576) need 2 x N x K x K int64 pairwise counts \
             (18.4 EB), more than can be allocated; compute the statistics of fewer images at a \
             time, or use fewer proposals"
        );
        let labels = LabelBank::new(&[], 1 << 20, 1 << 20, 0, 3).unwrap();
        let err = crate::label_pairwise_stats(&labels)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("masks: (N, K, C) = (1048576, 1048576, 3) need N x K x K x (C + 1)"),
            "{err}"
        );
        // products past usize::MAX
        let err = crate::PairwiseStats::try_zeros(1 << 32, 1 << 32).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }));
        assert!(crate::LabelStats::try_zeros(1 << 40, 1 << 20, 255).is_err());
        assert_eq!(
            crate::PairwiseStats::try_zeros(2, 3).unwrap(),
            crate::PairwiseStats::zeros(2, 3)
        );
        assert_eq!(
            crate::LabelStats::try_zeros(2, 3, 4).unwrap(),
            crate::LabelStats::zeros(2, 3, 4)
        );
        // an (N, K) whose product overflows: the bank refuses it, and so do the scores
        assert!(MaskBank::new(&[], 1 << 40, 1 << 40, 0).is_err());
        assert_eq!(
            validate_scores(&[], 1 << 40, 1 << 40)
                .unwrap_err()
                .to_string(),
            "scores must have shape (N, K) = (1099511627776, 1099511627776), i.e. more than \
             usize::MAX values, got 0 values"
        );
    }
}
