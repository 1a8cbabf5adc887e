//! Per-image pairwise statistics of a label bank: class sizes, per-class intersections and
//! disagreement regions.
//!
//! For the K label maps of one image with C classes, `sizes[a][c] = |A_c|` (pixels of class `c`
//! in map `a`), `intersection[a][b][c] = |A_c ∩ B_c|` and `disagreement[a][b]` = the pixels whose
//! labels differ, `P - sum_c |A_c ∩ B_c|` (the class planes of one map are disjoint and cover it).
//!
//! The counting is that of `regions.rs`, once per class plane: the spans are the words where the
//! labels of the K maps do not all agree (some foreground plane mixed), and pixels outside them
//! add the same count to every intersection of their class. Only the foreground planes are
//! packed (`labels.rs`); the background plane is rebuilt on the compacted words alone, as the
//! real pixels that no foreground plane holds. A class that no map of the image holds is skipped. Images are processed in parallel with rayon, each into its own
//! slot of the output, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::bank::GROUP;
use crate::error::Result;
use crate::labels::LabelBank;
use crate::memory;
use crate::regions::{common_count, compact_spans, pair_counts, plan_spans, Span};

/// Pairwise statistics of a label bank, as flat row-major arrays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelStats {
    /// Number of images N.
    pub n: usize,
    /// Number of proposals per image K.
    pub k: usize,
    /// Number of classes C.
    pub classes: usize,
    /// `(N, K, C)` class sizes `|A_c|`.
    pub sizes: Vec<i64>,
    /// `(N, K, K, C)` per-class intersections `|A_c ∩ B_c|` (symmetric in the two proposals; the
    /// diagonal holds the sizes).
    pub intersection: Vec<i64>,
    /// `(N, K, K)` sizes of the disagreement regions, the pixels whose labels differ (symmetric;
    /// zero diagonal).
    pub disagreement: Vec<i64>,
}

impl LabelStats {
    /// All-zero statistics of `n` images with `k` proposals each and `classes` classes.
    ///
    /// For sizes that fit in memory (tests, small banks); [`Self::try_zeros`] refuses the others.
    #[must_use]
    pub fn zeros(n: usize, k: usize, classes: usize) -> Self {
        Self {
            n,
            k,
            classes,
            sizes: vec![0; n * k * classes],
            intersection: vec![0; n * k * k * classes],
            disagreement: vec![0; n * k * k],
        }
    }

    /// All-zero statistics, or an [`Error::TooLarge`](crate::Error::TooLarge) naming the sizes
    /// when the `n * k * k * (classes + 1)` counts overflow `usize` or cannot be allocated.
    pub fn try_zeros(n: usize, k: usize, classes: usize) -> Result<Self> {
        let too_large = || {
            memory::cannot_allocate(
                format!(
                    "(N, K, C) = ({n}, {k}, {classes}) need N x K x K x (C + 1) int64 pairwise \
                     counts ({})",
                    memory::fmt_bytes(memory::bytes_f64(&[n, k, k, classes + 1], 8))
                ),
                "compute the statistics of fewer images at a time, or use fewer proposals",
            )
        };
        let len = memory::product(&[n, k, k, classes.saturating_add(1)]).ok_or_else(too_large)?;
        let zeros = |len: usize| -> Result<Vec<i64>> {
            let mut out = Vec::new();
            out.try_reserve_exact(len).map_err(|_| too_large())?;
            out.par_extend(rayon::iter::repeat_n(0, len));
            Ok(out)
        };
        // Every part is at most len (k * classes <= k * k * (classes + 1) when k > 0).
        Ok(Self {
            n,
            k,
            classes,
            sizes: zeros(n * k * classes)?,
            intersection: zeros(len / (classes + 1) * classes)?,
            disagreement: zeros(len / (classes + 1))?,
        })
    }
}

/// Per-thread scratch buffers, reused across images of one bank (layouts of
/// [`LabelBank::pack_image_planes`]).
#[derive(Default)]
pub(crate) struct LabelScratch {
    /// The foreground planes of the current image, and their compaction.
    planes: Vec<[u64; GROUP]>,
    compacted: Vec<[u64; GROUP]>,
    /// The background plane over the counted words (`ceil(K / 4) * w` entries).
    background: Vec<[u64; GROUP]>,
    /// Per-plane OR and AND over the K maps; per word, the pixels where the maps' labels differ
    /// and those where all K maps are background.
    any: Vec<u64>,
    all: Vec<u64>,
    mixed: Vec<u64>,
    all_background: Vec<u64>,
    /// The real (not padding) pixels of each word, and of each counted word.
    real: Vec<[u64; GROUP]>,
    real_counted: Vec<[u64; GROUP]>,
    spans: Vec<Span>,
}

/// The real pixels of word `t` of a mask of `p` pixels: all ones but in a partial last word.
fn real_word(t: usize, p: usize) -> u64 {
    let tail = p % 64;
    if tail != 0 && t == p / 64 {
        u64::MAX >> (64 - tail)
    } else {
        u64::MAX
    }
}

impl LabelScratch {
    /// Packs the label maps of `image`, plans and compacts their spans and builds the background
    /// plane; returns the number of counted words per group row and whether they are the
    /// packed planes themselves (no compaction).
    fn prepare(&mut self, bank: &LabelBank<'_>, image: usize) -> Result<(usize, bool)> {
        let (k, classes, w, p) = (bank.k(), bank.classes(), bank.words_per_mask(), bank.p());
        let plane_len = k.div_ceil(GROUP) * w;
        // (C - 1) planes of K / 4 groups of w words, packed and compacted, and the background:
        // up to 2 C / 8 times the image's bytes, which may be memory-mapped.
        let entries = (classes - 1) * plane_len;
        let scratch_error =
            || memory::scratch_error(k, p, plane_len, (2 * classes - 1) * 8 * GROUP);
        // Sized once per bank: lanes past K stay zero, since packing never writes them.
        if !memory::try_resize(&mut self.planes, entries, [0; GROUP]) {
            return Err(scratch_error());
        }
        self.any.resize((classes - 1) * w, 0);
        self.all.resize((classes - 1) * w, 0);
        let (planes, any, all) = (&mut self.planes, &mut self.any, &mut self.all);
        bank.pack_image_planes(image, planes, any, all)?;
        // Per word: the pixels whose label is not the same in all K maps (some foreground
        // plane is mixed), and those that are background in all K maps.
        self.mixed.clear();
        self.mixed.resize(w, 0);
        self.all_background.clear();
        self.all_background.extend((0..w).map(|t| real_word(t, p)));
        for (any, all) in self
            .any
            .chunks_exact(w.max(1))
            .zip(self.all.chunks_exact(w.max(1)))
        {
            let words = self.mixed.iter_mut().zip(&mut self.all_background);
            for ((mixed, background), (&any, &all)) in words.zip(any.iter().zip(all)) {
                *mixed |= any & !all;
                *background &= !any;
            }
        }
        let plan = plan_spans(self.mixed.iter().copied(), &mut self.spans);
        self.real.clear();
        self.real.extend((0..w).map(|t| [real_word(t, p); GROUP]));
        if !plan.identity {
            if !memory::try_resize(&mut self.compacted, self.planes.len(), [0; GROUP]) {
                return Err(scratch_error());
            }
            let rows = self.planes.chunks(plane_len.max(1));
            for (plane, out) in rows.zip(self.compacted.chunks_mut(plane_len.max(1))) {
                compact_spans(plane, w, &self.spans, out);
            }
            self.real_counted.resize(w, [0; GROUP]);
            compact_spans(&self.real, w, &self.spans, &mut self.real_counted);
        }
        self.fill_background(plan.identity, w, plane_len, plan.words);
        Ok((plan.words, plan.identity))
    }

    /// The background plane over the `m` counted words of each group row: the real pixels that
    /// no foreground plane holds.
    fn fill_background(&mut self, identity: bool, w: usize, plane_len: usize, m: usize) {
        let (stored, real) = if identity {
            (&self.planes, &self.real)
        } else {
            (&self.compacted, &self.real_counted)
        };
        self.background.resize(plane_len, [0; GROUP]);
        for (g, out) in self.background.chunks_exact_mut(w.max(1)).enumerate() {
            for (t, (o, r)) in out.iter_mut().zip(real).take(m).enumerate() {
                *o = [r[0]; GROUP];
                for plane in stored.chunks_exact(plane_len.max(1)) {
                    if let Some(x) = plane.get(g * w + t) {
                        for (o, &bits) in o.iter_mut().zip(x) {
                            *o &= !bits;
                        }
                    }
                }
            }
        }
    }

    /// Fills the `(K, C)` class sizes of the prepared image and returns each class's common
    /// pixels (outside the spans, in all K maps).
    ///
    /// Outside the spans all K maps agree, so a size is the class's common pixels plus the map's
    /// pixels of that class in the `m` counted words; class 0 has the pixels of no other class.
    fn class_sizes(
        &self,
        bank: &LabelBank<'_>,
        identity: bool,
        m: usize,
        sizes: &mut [i64],
    ) -> Vec<i64> {
        let (k, classes, w) = (bank.k(), bank.classes(), bank.words_per_mask());
        let plane_len = k.div_ceil(GROUP) * w;
        let (stored, _) = self.counted(identity);
        let all = |c: usize| match c {
            0 => &self.all_background[..],
            c => self.all.get((c - 1) * w..c * w).unwrap_or(&[]),
        };
        let common: Vec<i64> = (0..classes)
            .map(|c| common_count(all(c), &self.spans) as i64)
            .collect();
        for (c, &shared) in common.iter().enumerate().skip(1) {
            let rows = stored
                .get((c - 1) * plane_len..c * plane_len)
                .unwrap_or(&[]);
            for (g, row) in rows.chunks(w.max(1)).enumerate() {
                let mut ones = [0i64; GROUP];
                for x in row.iter().take(m) {
                    for (count, bits) in ones.iter_mut().zip(x) {
                        *count += i64::from(bits.count_ones());
                    }
                }
                for (lane, count) in ones.into_iter().enumerate() {
                    if let Some(size) = sizes.get_mut((g * GROUP + lane) * classes + c) {
                        *size = shared + count;
                    }
                }
            }
        }
        let pixels = bank.p() as i64;
        for row in sizes.chunks_exact_mut(classes) {
            row[0] = pixels - row[1..].iter().sum::<i64>();
        }
        common
    }

    /// The foreground planes as counted, and the real pixels of the counted words.
    fn counted(&self, identity: bool) -> (&[[u64; GROUP]], &[[u64; GROUP]]) {
        if identity {
            (&self.planes, &self.real)
        } else {
            (&self.compacted, &self.real_counted)
        }
    }
}

/// Packs the label maps of one image and fills its statistics: `sizes` holds `K * C` entries,
/// `inter` `K * K * C` and `dis` `K * K`, row-major.
pub(crate) fn label_image_stats(
    bank: &LabelBank<'_>,
    image: usize,
    scratch: &mut LabelScratch,
    sizes: &mut [i64],
    inter: &mut [i64],
    dis: &mut [i64],
) -> Result<()> {
    let (k, classes, w) = (bank.k(), bank.classes(), bank.words_per_mask());
    let plane_len = k.div_ceil(GROUP) * w;
    let (m, identity) = scratch.prepare(bank, image)?;
    let (stored, _) = scratch.counted(identity);
    let common = scratch.class_sizes(bank, identity, m, sizes);
    for c in 0..classes {
        for a in 0..k {
            let size = sizes[a * classes + c];
            for b in 0..k {
                inter[(a * k + b) * classes + c] = if a == b { size } else { 0 };
            }
        }
        if (0..k).all(|a| sizes[a * classes + c] == 0) {
            continue;
        }
        let plane = if c == 0 {
            &scratch.background[..]
        } else {
            stored
                .get((c - 1) * plane_len..c * plane_len)
                .unwrap_or(&[])
        };
        let shared = common[c];
        pair_counts(plane, w, m, k, |a, b, both| {
            let both = shared + both as i64;
            inter[(a * k + b) * classes + c] = both;
            inter[(b * k + a) * classes + c] = both;
        });
    }
    for (pair, d) in dis.iter_mut().enumerate() {
        let same: i64 = inter
            .get(pair * classes..(pair + 1) * classes)
            .unwrap_or(&[])
            .iter()
            .sum();
        *d = if pair / k == pair % k {
            0
        } else {
            bank.p() as i64 - same
        };
    }
    Ok(())
}

/// Validates the label bank and computes its pairwise statistics, in parallel over images.
///
/// Runs in the current rayon thread pool. On a label `>= C`, the reported position is the first
/// one in C order, whatever the thread count.
pub fn label_pairwise_stats(bank: &LabelBank<'_>) -> Result<LabelStats> {
    let (n, k, cc) = (bank.n(), bank.k(), bank.classes());
    let mut stats = LabelStats::try_zeros(n, k, cc)?;
    if n == 0 || k == 0 {
        return Ok(stats);
    }
    let outcome = (stats.sizes.par_chunks_mut(k * cc))
        .zip(stats.intersection.par_chunks_mut(k * k * cc))
        .zip(stats.disagreement.par_chunks_mut(k * k))
        .enumerate()
        .try_for_each_init(
            LabelScratch::default,
            |scratch, (image, ((sizes, inter), dis))| {
                label_image_stats(bank, image, scratch, sizes, inter, dis)
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
    use crate::{pairwise_stats, MaskBank};

    /// Counts by definition, pixel by pixel.
    fn naive(data: &[u8], n: usize, k: usize, p: usize, cc: usize) -> LabelStats {
        let mut out = LabelStats::zeros(n, k, cc);
        let label = |i: usize, a: usize, q: usize| usize::from(data[(i * k + a) * p + q]);
        for i in 0..n {
            for a in 0..k {
                for q in 0..p {
                    out.sizes[(i * k + a) * cc + label(i, a, q)] += 1;
                }
                for b in 0..k {
                    for q in 0..p {
                        let (la, lb) = (label(i, a, q), label(i, b, q));
                        if la == lb {
                            out.intersection[((i * k + a) * k + b) * cc + la] += 1;
                        } else {
                            out.disagreement[(i * k + a) * k + b] += 1;
                        }
                    }
                }
            }
        }
        out
    }

    /// Label maps of `k` proposals that share a layout of nested boxes and each move its
    /// boundaries by a few pixels, plus maps of noise and identical or constant maps.
    fn banks(n: usize, k: usize, p: usize, cc: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mut jittered = Vec::with_capacity(n * k * p);
        for _ in 0..n * k {
            let shift = rng.below(9) as usize;
            jittered.extend((0..p).map(|q| ((q + shift) % 97 * cc / 97) as u8));
        }
        let noise = (0..n * k * p).map(|_| rng.below(cc as u64) as u8).collect();
        let same: Vec<u8> = jittered[..p].repeat(n * k);
        let top = vec![(cc - 1) as u8; n * k * p];
        vec![jittered, noise, same, top]
    }

    #[test]
    fn matches_pixel_counts_for_jittered_noisy_and_identical_maps() {
        for (n, k, p, cc) in [
            (1usize, 1usize, 1usize, 2usize),
            (2, 3, 64, 3),
            (3, 5, 1000, 4),
            (2, 9, 3000, 6),
            (1, 4, 777, 255),
        ] {
            for data in banks(n, k, p, cc, (n * k * p) as u64) {
                let bank = LabelBank::new(&data, n, k, p, cc).unwrap();
                assert_eq!(
                    label_pairwise_stats(&bank).unwrap(),
                    naive(&data, n, k, p, cc),
                    "{n} {k} {p} {cc}"
                );
            }
        }
    }

    #[test]
    fn two_classes_agree_with_the_binary_statistics() {
        for data in banks(3, 6, 500, 2, 3) {
            let labels =
                label_pairwise_stats(&LabelBank::new(&data, 3, 6, 500, 2).unwrap()).unwrap();
            let binary = pairwise_stats(&MaskBank::new(&data, 3, 6, 500).unwrap()).unwrap();
            let class1 = |v: &[i64]| v.iter().skip(1).step_by(2).copied().collect::<Vec<_>>();
            assert_eq!(class1(&labels.sizes), binary.sizes);
            assert_eq!(class1(&labels.intersection), binary.intersection());
            assert_eq!(labels.disagreement, binary.disagreement());
        }
    }

    #[test]
    fn empty_banks_and_bad_labels() {
        for (n, k) in [(0usize, 3usize), (2, 0)] {
            let stats = label_pairwise_stats(&LabelBank::new(&[], n, k, 5, 3).unwrap()).unwrap();
            assert_eq!(stats, LabelStats::zeros(n, k, 3));
        }
        let mut data = vec![1u8; 4 * 3 * 100];
        data[2 * 300 + 150] = 7;
        data[3 * 300 + 10] = 3;
        let err = label_pairwise_stats(&LabelBank::new(&data, 4, 3, 100, 3).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "masks must contain only labels 0 to 2 (num_classes = 3), got 7 at image 2, \
             proposal 1, flat pixel 50"
        );
    }
}
