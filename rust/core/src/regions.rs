//! Per-image pairwise statistics of a mask bank: sizes, intersections and disagreement regions.
//!
//! For the K masks of one image, `sizes[a] = |A|`, `intersection[a][b] = |A ∩ B|` and
//! `disagreement[a][b] = |A xor B| = |A| + |B| - 2 |A ∩ B|`. Images are processed in parallel
//! with rayon, each into its own slot of the output, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::bank::{MaskBank, GROUP};
use crate::error::Result;
use crate::memory;

/// Pairwise statistics of a bank, as flat row-major arrays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairwiseStats {
    /// Number of images N.
    pub n: usize,
    /// Number of proposals per image K.
    pub k: usize,
    /// `(N, K)` mask sizes `|A|`.
    pub sizes: Vec<i64>,
    /// `(2, N, K, K)`: the intersection sizes `|A ∩ B|` (symmetric; the diagonal holds the
    /// sizes), then the disagreement-region sizes `|A xor B|` (symmetric; zero diagonal); see
    /// [`Self::intersection`] and [`Self::disagreement`].
    ///
    /// One buffer rather than two, so that the allocator reuses it from call to call (see
    /// `docs/mining_performance.md`).
    pub counts: Vec<i64>,
}

impl PairwiseStats {
    /// All-zero statistics of `n` images with `k` proposals each.
    ///
    /// For sizes that fit in memory (tests, small banks); [`Self::try_zeros`] refuses the others.
    #[must_use]
    pub fn zeros(n: usize, k: usize) -> Self {
        Self {
            n,
            k,
            sizes: vec![0; n * k],
            counts: vec![0; 2 * n * k * k],
        }
    }

    /// All-zero statistics of `n` images with `k` proposals each, or an
    /// [`Error::TooLarge`](crate::Error::TooLarge) naming the sizes when the `2 * n * k * k`
    /// counts overflow `usize` or cannot be allocated.
    pub fn try_zeros(n: usize, k: usize) -> Result<Self> {
        let too_large = || {
            memory::cannot_allocate(
                format!(
                    "(N, K) = ({n}, {k}) need 2 x N x K x K int64 pairwise counts ({})",
                    memory::fmt_bytes(memory::bytes_f64(&[2, n, k, k], 8))
                ),
                "compute the statistics of fewer images at a time, or use fewer proposals",
            )
        };
        let len = memory::product(&[2, n, k, k]).ok_or_else(too_large)?;
        let mut counts = Vec::new();
        counts.try_reserve_exact(len).map_err(|_| too_large())?;
        // Zeroed in parallel: a reused 4 MiB buffer would otherwise be cleared by one thread.
        counts.par_extend(rayon::iter::repeat_n(0, len));
        // n * k fits: it is at most len when k > 0, and 0 when k = 0
        let sizes = memory::try_vec(n * k, 0).ok_or_else(too_large)?;
        Ok(Self {
            n,
            k,
            sizes,
            counts,
        })
    }

    /// `(N, K, K)` intersection sizes `|A ∩ B|`.
    #[must_use]
    pub fn intersection(&self) -> &[i64] {
        self.counts.split_at(self.counts.len() / 2).0
    }

    /// `(N, K, K)` disagreement-region sizes `|A xor B|`.
    #[must_use]
    pub fn disagreement(&self) -> &[i64] {
        self.counts.split_at(self.counts.len() / 2).1
    }
}

/// Pairwise AND counts between the masks of two groups: `out[r][c] = |A_r ∩ B_c|`.
///
/// Groups are interleaved, one `[u64; 4]` per word: `a[t][r]` is word `t` of mask `r` of the
/// group. Each pass holds two `a` words and eight independent accumulators in registers and reads
/// the four `b` words as memory operands, so the loop is bound by popcount throughput (3 ALU
/// operations per word pair) rather than by loads or by one chain of additions.
#[must_use]
#[inline(never)] // its own register allocation: no spills in the loop
pub fn cross_counts(a: &[[u64; GROUP]], b: &[[u64; GROUP]]) -> [[u64; GROUP]; GROUP] {
    let words = a.len().min(b.len());
    let (a, b) = (&a[..words], &b[..words]);
    let mut out = [[0u64; GROUP]; GROUP];
    for rows in [0, 2] {
        let mut c = [[0u64; GROUP]; 2];
        for (x, y) in a.iter().zip(b) {
            let (x0, x1) = (x[rows], x[rows + 1]);
            for j in 0..GROUP {
                c[0][j] += u64::from((x0 & y[j]).count_ones());
                c[1][j] += u64::from((x1 & y[j]).count_ones());
            }
        }
        out[rows] = c[0];
        out[rows + 1] = c[1];
    }
    out
}

/// Pairwise AND counts within one interleaved group: `|M_r ∩ M_c|` for the six pairs `r < c`,
/// in the order (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3).
#[must_use]
#[inline(never)]
pub fn within_counts(g: &[[u64; GROUP]]) -> [u64; 6] {
    let mut c = [0u64; 6];
    for x in g {
        c[0] += u64::from((x[0] & x[1]).count_ones());
        c[1] += u64::from((x[0] & x[2]).count_ones());
        c[2] += u64::from((x[0] & x[3]).count_ones());
        c[3] += u64::from((x[1] & x[2]).count_ones());
        c[4] += u64::from((x[1] & x[3]).count_ones());
        c[5] += u64::from((x[2] & x[3]).count_ones());
    }
    c
}

/// Number of set bits of `a ^ b`.
#[must_use]
pub fn xor_count(a: &[u64], b: &[u64]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| u64::from((x ^ y).count_ones()))
        .sum()
}

/// Per-thread scratch buffers, reused across images of one bank.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The K packed masks of the current image in groups of [`GROUP`], interleaved word by word
    /// (`ceil(K / 4) * w` entries; lanes of masks past K stay zero).
    packed: Vec<[u64; GROUP]>,
    /// The disagreement spans of the current image, and the groups packed from them.
    spans: Vec<Span>,
    compacted: Vec<[u64; GROUP]>,
    /// OR and AND over the K masks, per word.
    any: Vec<u64>,
    all: Vec<u64>,
    /// Mask sizes of the current image.
    sizes: Vec<u64>,
}

/// One disagreement span of [`compact_spans`]: where it comes from and where it goes.
#[derive(Clone, Copy, Default)]
pub(crate) struct Span {
    /// Source word index within a mask.
    word: usize,
    /// Output word index within a group row.
    slot: usize,
    /// Lowest bit of the span in the source word, and its place in the output word.
    lo: u32,
    at: u32,
    /// `len` low bits set.
    keep: u64,
    /// All ones when the span extends the output word, zero when it starts a new one.
    carry: u64,
}

/// Spans longer than this take a whole output word, unshifted: little room is left beside them,
/// and banks of unstructured masks (every span nearly full) then skip compaction altogether.
const WHOLE_WORD: u32 = 32;

/// The totals of [`plan_spans`] for one image.
pub(crate) struct Plan {
    /// Number of output words per group row.
    pub(crate) words: usize,
    /// Every word is mixed and taken whole: the packed groups are their own compaction.
    pub(crate) identity: bool,
}

/// Where the disagreement spans of one image go, for [`compact_spans`].
///
/// `mixed` gives, word by word, the pixels where the K masks do not all agree (`any & !all` for
/// binary masks). In each word with such pixels, the span from the lowest to the highest of them
/// is appended to the current output word; a span that does not fit starts a new output word.
/// Fills `spans` (cleared first) and returns the plan's totals.
pub(crate) fn plan_spans(mixed: impl Iterator<Item = u64>, spans: &mut Vec<Span>) -> Plan {
    spans.clear();
    let (mut words, mut fill, mut whole, mut total) = (0usize, 64u32, true, 0usize);
    for (word, mixed) in mixed.enumerate() {
        total += 1;
        if mixed == 0 {
            continue;
        }
        let mut lo = mixed.trailing_zeros();
        let mut len = 64 - mixed.leading_zeros() - lo;
        if len > WHOLE_WORD {
            (lo, len) = (0, 64);
        }
        whole &= len == 64;
        let keep = u64::MAX >> (64 - len);
        let carry = if fill + len > 64 {
            (words, fill) = (words + 1, 0);
            0
        } else {
            u64::MAX
        };
        let slot = words - 1;
        spans.push(Span {
            word,
            slot,
            lo,
            at: fill,
            keep,
            carry,
        });
        fill += len;
    }
    Plan {
        words,
        identity: whole && words == total,
    }
}

/// Pixels outside every span that are set in `all` (where all K masks are 1): they add the same
/// count to every intersection.
pub(crate) fn common_count(all: &[u64], spans: &[Span]) -> u64 {
    let everywhere: u64 = all.iter().map(|x| u64::from(x.count_ones())).sum();
    let inside: u64 = spans
        .iter()
        .filter_map(|s| {
            all.get(s.word)
                .map(|x| u64::from((x & (s.keep << s.lo)).count_ones()))
        })
        .sum();
    everywhere - inside
}

/// Packs the disagreement spans of an image's masks end to end (planned by [`plan_spans`]), so
/// that pairwise counts read only pixels that can tell two masks apart.
///
/// `packed` holds `ceil(K / 4)` group rows of `w` interleaved words, as written by
/// [`MaskBank::pack_image_grouped`]; `out` has the same length, and row `g` receives
/// its packed spans at `g * w .. g * w + words`. Pixels outside the spans agree across the K
/// masks, so they add nothing to any disagreement and, where all masks are 1, the same count to
/// every intersection.
///
/// Proposals of one image mostly differ along a thin boundary band: on a realistic bank of
/// 128 x 128 masks, 0.39 of the words are mixed but their spans average 14 pixels, so about
/// 28 packed words per mask remain of 256.
pub(crate) fn compact_spans(
    packed: &[[u64; GROUP]],
    w: usize,
    spans: &[Span],
    out: &mut [[u64; GROUP]],
) {
    let w = w.max(1);
    for (src, dst) in packed.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
        // One group row at a time, the output word being filled kept in registers.
        let mut acc = [0u64; GROUP];
        for span in spans {
            if let (Some(word), Some(slot)) = (src.get(span.word), dst.get_mut(span.slot)) {
                for (lane, &bits) in acc.iter_mut().zip(word) {
                    *lane = (*lane & span.carry) | ((bits >> span.lo) & span.keep) << span.at;
                }
                *slot = acc;
            }
        }
    }
}

/// Packs the masks of one image and fills its statistics.
///
/// Pixels where all K masks agree add the same count to every intersection and nothing to any
/// disagreement, so they are counted once; pairwise AND counts then run only over the
/// disagreement spans, packed end to end by [`compact_spans`] in groups of four masks
/// interleaved word by word for the register-tiled kernels [`cross_counts`] and
/// [`within_counts`]. Proposals of one image mostly agree, so this is typically several times
/// less work than counting every word.
/// `sizes` holds K entries, `inter` (when given: mining needs only the disagreements) and `dis`
/// K * K entries each.
pub(crate) fn image_stats(
    bank: &MaskBank<'_>,
    image: usize,
    scratch: &mut Scratch,
    sizes: &mut [i64],
    mut inter: Option<&mut [i64]>,
    dis: &mut [i64],
) -> Result<()> {
    let k = bank.k();
    let w = bank.words_per_mask();
    let n_groups = k.div_ceil(GROUP);
    // K / 4 groups of w words: about an eighth of the image's bytes, which may be memory-mapped.
    let scratch_error = || memory::scratch_error(k, bank.p(), n_groups * w, 2 * 8 * GROUP);
    // Sized once per bank: lanes past K are zero from here on, since packing never writes them.
    if !memory::try_resize(&mut scratch.packed, n_groups * w, [0; GROUP]) {
        return Err(scratch_error());
    }
    scratch.any.resize(w, 0);
    scratch.all.resize(w, 0);
    scratch.sizes.resize(k, 0);
    bank.pack_image_grouped(
        image,
        &mut scratch.packed,
        &mut scratch.any,
        &mut scratch.all,
        &mut scratch.sizes,
    )?;
    for (size, &ones) in sizes.iter_mut().zip(&scratch.sizes) {
        *size = ones as i64;
    }
    let mixed = scratch.any.iter().zip(&scratch.all).map(|(a, b)| a & !b);
    let plan = plan_spans(mixed, &mut scratch.spans);
    let common = common_count(&scratch.all, &scratch.spans) as i64;
    // Unstructured masks: every word is mixed with a long span, and packing would copy them all.
    let groups = if plan.identity {
        &scratch.packed
    } else {
        if !memory::try_resize(&mut scratch.compacted, scratch.packed.len(), [0; GROUP]) {
            return Err(scratch_error());
        }
        compact_spans(&scratch.packed, w, &scratch.spans, &mut scratch.compacted);
        &scratch.compacted
    };
    for (a, &size) in sizes.iter().enumerate() {
        if let Some(inter) = inter.as_deref_mut() {
            inter[a * k + a] = size;
        }
        dis[a * k + a] = 0;
    }
    pair_counts(groups, w, plan.words, k, |a, b, both| {
        let both = common + both as i64;
        let either = sizes[a] + sizes[b] - 2 * both;
        if let Some(inter) = inter.as_deref_mut() {
            inter[a * k + b] = both;
            inter[b * k + a] = both;
        }
        dis[a * k + b] = either;
        dis[b * k + a] = either;
    });
    Ok(())
}

/// Calls `set(a, b, |A ∩ B|)` for every pair `a < b < k` of masks, counting over the first `m`
/// words of each group row of `groups` (`ceil(k / 4)` rows of `w` interleaved words).
pub(crate) fn pair_counts(
    groups: &[[u64; GROUP]],
    w: usize,
    m: usize,
    k: usize,
    mut set: impl FnMut(usize, usize, u64),
) {
    let group = |g: usize| groups.get(g * w..g * w + m).unwrap_or(&[]);
    let n_groups = k.div_ceil(GROUP);
    let mut put = |a: usize, b: usize, both: u64| {
        if a < k && b < k {
            set(a, b, both);
        }
    };
    for ga in 0..n_groups {
        let pairs = within_counts(group(ga));
        let (base, mut next) = (ga * GROUP, 0);
        for r in 0..GROUP {
            for c in r + 1..GROUP {
                put(base + r, base + c, pairs[next]);
                next += 1;
            }
        }
        for gb in ga + 1..n_groups {
            let block = cross_counts(group(ga), group(gb));
            for (r, row) in block.iter().enumerate() {
                for (c, &both) in row.iter().enumerate() {
                    put(base + r, gb * GROUP + c, both);
                }
            }
        }
    }
}

/// Validates the bank and computes its pairwise statistics, in parallel over images.
///
/// Runs in the current rayon thread pool. On non-binary values, the reported position is the
/// first one in C order, whatever the thread count.
pub fn pairwise_stats(bank: &MaskBank<'_>) -> Result<PairwiseStats> {
    let (n, k) = (bank.n(), bank.k());
    let mut stats = PairwiseStats::try_zeros(n, k)?;
    if n == 0 || k == 0 {
        return Ok(stats);
    }
    let (intersection, disagreement) = stats.counts.split_at_mut(n * k * k);
    let outcome = (stats.sizes.par_chunks_mut(k))
        .zip(intersection.par_chunks_mut(k * k))
        .zip(disagreement.par_chunks_mut(k * k))
        .enumerate()
        .try_for_each_init(
            Scratch::default,
            |scratch, (image, ((sizes, inter), dis))| {
                image_stats(bank, image, scratch, sizes, Some(inter), dis)
            },
        );
    match outcome {
        Ok(()) => Ok(stats),
        Err(err) => Err(bank.first_invalid().unwrap_or(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8], k: usize, p: usize) -> (Vec<i64>, Vec<i64>) {
        let mut inter = vec![0i64; k * k];
        let mut dis = vec![0i64; k * k];
        for a in 0..k {
            for b in 0..k {
                for q in 0..p {
                    let (x, y) = (data[a * p + q], data[b * p + q]);
                    inter[a * k + b] += i64::from(x & y);
                    dis[a * k + b] += i64::from(x ^ y);
                }
            }
        }
        (inter, dis)
    }

    fn naive_and(x: &[u64], y: &[u64]) -> u64 {
        x.iter()
            .zip(y)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }

    #[test]
    fn group_kernels_match_naive_counts() {
        let mut g = crate::rng::SplitMix64::new(7);
        for words in [0usize, 1, 2, 3, 17] {
            let a: Vec<[u64; GROUP]> = (0..words)
                .map(|_| std::array::from_fn(|_| g.next_u64()))
                .collect();
            let b: Vec<[u64; GROUP]> = (0..words)
                .map(|_| std::array::from_fn(|_| g.next_u64()))
                .collect();
            let col = |m: &[[u64; GROUP]], r: usize| m.iter().map(|x| x[r]).collect::<Vec<_>>();
            let block = cross_counts(&a, &b);
            for (r, row) in block.iter().enumerate() {
                for (c, &count) in row.iter().enumerate() {
                    assert_eq!(count, naive_and(&col(&a, r), &col(&b, c)));
                }
            }
            let pairs = within_counts(&a);
            let expected: Vec<u64> = (0..GROUP)
                .flat_map(|r| (r + 1..GROUP).map(move |c| (r, c)))
                .map(|(r, c)| naive_and(&col(&a, r), &col(&a, c)))
                .collect();
            assert_eq!(pairs.to_vec(), expected);
        }
    }

    /// Banks whose masks agree on most words (the compacted path), on all words, or on none.
    #[test]
    fn agreement_compaction_matches_naive_counts() {
        for (k, p) in [(5usize, 1000usize), (9, 3000), (2, 2048)] {
            check_compaction(k, p);
        }
    }

    fn check_compaction(k: usize, p: usize) {
        let base: Vec<u8> = (0..p).map(|q| u8::from((300..700).contains(&q))).collect();
        let mut cases = vec![
            // Mostly agreeing: each mask moves the blob boundary a little.
            (0..k)
                .flat_map(|j| (0..p).map(move |q| u8::from((300 + 3 * j..700 - j).contains(&q))))
                .collect::<Vec<_>>(),
            // All identical, all empty, all full.
            base.repeat(k),
            vec![0u8; k * p],
            vec![1u8; k * p],
        ];
        // Disagreement in runs of 1 to 60 pixels at scattered places, each run flipping some
        // of the masks: short spans share output words, long ones take a word of their own.
        let mut g = crate::rng::SplitMix64::new(p as u64);
        let mut runs = base.repeat(k);
        for _ in 0..p / 40 {
            let (start, len) = (g.next_u64() as usize % p, 1 + g.next_u64() as usize % 60);
            let flips = g.next_u64();
            for j in (0..k).filter(|j| flips >> j & 1 == 1) {
                for q in start..(start + len).min(p) {
                    runs[j * p + q] ^= 1;
                }
            }
        }
        cases.push(runs);
        // Nothing agrees: checkerboards of different periods.
        cases.push(
            (0..k)
                .flat_map(|j| (0..p).map(move |q| u8::from((q / (j + 1)) % 2 == 0)))
                .collect(),
        );
        for data in cases {
            let bank = MaskBank::new(&data, 1, k, p).unwrap();
            let stats = pairwise_stats(&bank).unwrap();
            let (inter, dis) = naive(&data, k, p);
            assert_eq!(stats.intersection(), inter);
            assert_eq!(stats.disagreement(), dis);
        }
    }
}
