//! Per-image pairwise statistics of a mask bank: sizes, intersections and disagreement regions.
//!
//! For the K masks of one image, `sizes[a] = |A|`, `intersection[a][b] = |A ∩ B|` and
//! `disagreement[a][b] = |A xor B| = |A| + |B| - 2 |A ∩ B|`. Images are processed in parallel
//! with rayon, each into its own slot of the output, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::bank::MaskBank;
use crate::error::Result;

/// Pairwise statistics of a bank, as flat row-major arrays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairwiseStats {
    /// Number of images N.
    pub n: usize,
    /// Number of proposals per image K.
    pub k: usize,
    /// `(N, K)` mask sizes `|A|`.
    pub sizes: Vec<i64>,
    /// `(N, K, K)` intersection sizes `|A ∩ B|` (symmetric; the diagonal holds the sizes).
    pub intersection: Vec<i64>,
    /// `(N, K, K)` disagreement-region sizes `|A xor B|` (symmetric; zero diagonal).
    pub disagreement: Vec<i64>,
}

/// Number of set bits of `a & b`.
#[must_use]
pub fn and_count(a: &[u64], b: &[u64]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| u64::from((x & y).count_ones()))
        .sum()
}

/// Number of set bits of `a ^ b`.
#[must_use]
pub fn xor_count(a: &[u64], b: &[u64]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| u64::from((x ^ y).count_ones()))
        .sum()
}

/// Number of set bits of `a`.
#[must_use]
pub fn count(a: &[u64]) -> u64 {
    a.iter().map(|x| u64::from(x.count_ones())).sum()
}

/// Per-thread scratch buffers, reused across images.
#[derive(Default)]
struct Scratch {
    /// The K packed masks of the current image, `K * w` words.
    packed: Vec<u64>,
    /// The K masks restricted to the words where they do not all agree, `K * m` words.
    compact: Vec<u64>,
    /// OR and AND over the K masks, per word.
    any: Vec<u64>,
    all: Vec<u64>,
    /// Indices of the words where the K masks do not all agree.
    mixed: Vec<usize>,
}

/// Packs the masks of one image and fills its statistics.
///
/// Words where all K masks agree add the same count to every intersection and nothing to any
/// disagreement, so they are counted once; the pairwise AND counts then run only over the
/// remaining "mixed" words, gathered into a compact buffer when that saves enough work.
/// Proposals of one image mostly agree, so this is typically several times less work.
/// `sizes` holds K entries, `inter` and `dis` K * K entries each.
fn image_stats(
    bank: &MaskBank<'_>,
    image: usize,
    scratch: &mut Scratch,
    sizes: &mut [i64],
    inter: &mut [i64],
    dis: &mut [i64],
) -> Result<()> {
    let k = bank.k();
    let w = bank.words_per_mask();
    scratch.packed.resize(k * w, 0);
    bank.pack_image(image, &mut scratch.packed)?;
    if w == 0 {
        sizes.fill(0);
        inter.fill(0);
        dis.fill(0);
        return Ok(());
    }
    let packed = &scratch.packed;
    scratch.any.clear();
    scratch.any.resize(w, 0);
    scratch.all.clear();
    scratch.all.resize(w, u64::MAX);
    for (size, mask) in sizes.iter_mut().zip(packed.chunks_exact(w)) {
        *size = count(mask) as i64;
        for ((any, all), x) in scratch.any.iter_mut().zip(scratch.all.iter_mut()).zip(mask) {
            *any |= x;
            *all &= x;
        }
    }
    scratch.mixed.clear();
    let mut common = 0u64;
    for (t, (any, all)) in scratch.any.iter().zip(&scratch.all).enumerate() {
        if any == all {
            common += u64::from(all.count_ones());
        } else {
            scratch.mixed.push(t);
        }
    }
    let m = scratch.mixed.len();
    // Gathering costs about one pass over the masks; it pays off unless most words are mixed.
    let (masks, words, common) = if 4 * m <= 3 * w {
        scratch.compact.clear();
        for mask in packed.chunks_exact(w) {
            scratch
                .compact
                .extend(scratch.mixed.iter().map(|&t| mask[t]));
        }
        (&scratch.compact, m, common as i64)
    } else {
        (&scratch.packed, w, 0)
    };
    for a in 0..k {
        inter[a * k + a] = sizes[a];
        dis[a * k + a] = 0;
        if words == 0 {
            for b in a + 1..k {
                inter[a * k + b] = common;
                inter[b * k + a] = common;
                dis[a * k + b] = 0;
                dis[b * k + a] = 0;
            }
            continue;
        }
        let ma = &masks[a * words..(a + 1) * words];
        for (b, mb) in masks.chunks_exact(words).enumerate().skip(a + 1) {
            let both = common + and_count(ma, mb) as i64;
            let either = sizes[a] + sizes[b] - 2 * both;
            inter[a * k + b] = both;
            inter[b * k + a] = both;
            dis[a * k + b] = either;
            dis[b * k + a] = either;
        }
    }
    Ok(())
}

/// Validates the bank and computes its pairwise statistics, in parallel over images.
///
/// Runs in the current rayon thread pool. On non-binary values, the reported position is the
/// first one in C order, whatever the thread count.
pub fn pairwise_stats(bank: &MaskBank<'_>) -> Result<PairwiseStats> {
    let (n, k) = (bank.n(), bank.k());
    let mut stats = PairwiseStats {
        n,
        k,
        sizes: vec![0; n * k],
        intersection: vec![0; n * k * k],
        disagreement: vec![0; n * k * k],
    };
    if n == 0 || k == 0 {
        return Ok(stats);
    }
    let outcome = stats
        .sizes
        .par_chunks_mut(k)
        .zip(stats.intersection.par_chunks_mut(k * k))
        .zip(stats.disagreement.par_chunks_mut(k * k))
        .enumerate()
        .try_for_each_init(
            Scratch::default,
            |scratch, (image, ((sizes, inter), dis))| {
                image_stats(bank, image, scratch, sizes, inter, dis)
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

    /// Banks whose masks agree on most words (the compacted path), on all words, or on none.
    #[test]
    fn agreement_compaction_matches_naive_counts() {
        let (k, p) = (5usize, 1000usize);
        let base: Vec<u8> = (0..p).map(|q| u8::from((300..700).contains(&q))).collect();
        let mut cases = Vec::new();
        // Mostly agreeing: each mask moves the blob boundary a little.
        cases.push(
            (0..k)
                .flat_map(|j| (0..p).map(move |q| u8::from((300 + 3 * j..700 - j).contains(&q))))
                .collect::<Vec<_>>(),
        );
        // All identical, all empty, all full.
        cases.push(base.repeat(k));
        cases.push(vec![0u8; k * p]);
        cases.push(vec![1u8; k * p]);
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
            assert_eq!(stats.intersection, inter);
            assert_eq!(stats.disagreement, dis);
        }
    }
}
