//! Property tests of the core against naive byte-level counting.
#![allow(clippy::unwrap_used, clippy::naive_bytecount, clippy::float_cmp)] // test code; exact float equality is intended

use proptest::prelude::*;
use rndpo_core::{
    label_pairwise_stats, mine_label_pairs, mine_pairs, pairwise_stats, Error, LabelBank,
    LabelStats, MaskBank, MiningParams, PairwiseStats, Strategy as Pairing,
};

/// A random bank: (data, n, k, p), with duplicated masks now and then.
fn bank_strategy() -> impl Strategy<Value = (Vec<u8>, usize, usize, usize)> {
    // Short masks (a partial last line only) and masks of 16 to 34 full 64-byte lines.
    let pixels = prop_oneof![3 => 0usize..200, 1 => 1000usize..2200];
    (0usize..5, 0usize..6, pixels, 0.0f64..1.0).prop_flat_map(|(n, k, p, density)| {
        let len = n * k * p;
        (
            proptest::collection::vec(proptest::bool::weighted(density.clamp(0.01, 0.99)), len),
            proptest::collection::vec(0usize..8, n * k),
        )
            .prop_map(move |(bits, dup)| {
                let mut data: Vec<u8> = bits.into_iter().map(u8::from).collect();
                // Copy mask j-1 onto mask j when dup says so, to get identical masks.
                for i in 0..n {
                    for j in 1..k {
                        if dup[i * k + j] == 0 {
                            let src = (i * k + j - 1) * p;
                            let dst = (i * k + j) * p;
                            data.copy_within(src..src + p, dst);
                        }
                    }
                }
                (data, n, k, p)
            })
    })
}

fn naive_stats(data: &[u8], n: usize, k: usize, p: usize) -> PairwiseStats {
    let mut stats = PairwiseStats::zeros(n, k);
    for i in 0..n {
        for a in 0..k {
            let ma = &data[(i * k + a) * p..(i * k + a + 1) * p];
            stats.sizes[i * k + a] = ma.iter().filter(|&&v| v == 1).count() as i64;
            for b in 0..k {
                let mb = &data[(i * k + b) * p..(i * k + b + 1) * p];
                let both = ma
                    .iter()
                    .zip(mb)
                    .filter(|(x, y)| **x == 1 && **y == 1)
                    .count();
                let differ = ma.iter().zip(mb).filter(|(x, y)| x != y).count();
                let at = (i * k + a) * k + b;
                stats.counts[at] = both as i64;
                stats.counts[n * k * k + at] = differ as i64;
            }
        }
    }
    stats
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn packed_counts_equal_naive_counts((data, n, k, p) in bank_strategy()) {
        let bank = MaskBank::new(&data, n, k, p).unwrap();
        let stats = pairwise_stats(&bank).unwrap();
        prop_assert_eq!(&stats, &naive_stats(&data, n, k, p));
    }

    #[test]
    fn stats_are_symmetric_and_consistent((data, n, k, p) in bank_strategy()) {
        let bank = MaskBank::new(&data, n, k, p).unwrap();
        let s = pairwise_stats(&bank).unwrap();
        for i in 0..n {
            for a in 0..k {
                let size_a = s.sizes[i * k + a];
                prop_assert_eq!(s.intersection()[(i * k + a) * k + a], size_a);
                prop_assert_eq!(s.disagreement()[(i * k + a) * k + a], 0);
                for b in 0..k {
                    let ab = (i * k + a) * k + b;
                    let ba = (i * k + b) * k + a;
                    prop_assert_eq!(s.intersection()[ab], s.intersection()[ba]);
                    prop_assert_eq!(s.disagreement()[ab], s.disagreement()[ba]);
                    prop_assert_eq!(
                        s.disagreement()[ab],
                        size_a + s.sizes[i * k + b] - 2 * s.intersection()[ab]
                    );
                    prop_assert!(s.intersection()[ab] <= size_a.min(s.sizes[i * k + b]));
                }
            }
        }
    }

    #[test]
    fn same_results_with_one_and_many_threads(
        (data, n, k, p) in bank_strategy(),
        strategy_index in 0usize..6,
        seed in any::<u64>(),
        scores_seed in any::<u64>(),
    ) {
        let bank = MaskBank::new(&data, n, k, p).unwrap();
        let mut g = rndpo_core::SplitMix64::new(scores_seed);
        // Few distinct values so that ties happen.
        let scores: Vec<f64> = (0..n * k).map(|_| g.below(4) as f64 / 4.0).collect();
        let params = MiningParams {
            strategy: Pairing::NAMES[strategy_index].parse().unwrap(),
            seed,
            ..MiningParams::default()
        };
        let one = in_pool(1, || (pairwise_stats(&bank).unwrap(), mine_pairs(&bank, &scores, &params).unwrap()));
        let many = in_pool(4, || (pairwise_stats(&bank).unwrap(), mine_pairs(&bank, &scores, &params).unwrap()));
        prop_assert_eq!(one, many);
    }

    #[test]
    fn mined_pairs_satisfy_the_filters(
        (data, n, k, p) in bank_strategy(),
        strategy_index in 0usize..6,
        min_margin in 0.0f64..0.5,
        min_region in 0u64..20,
        extra in proptest::option::of(0u64..100),
        cap in proptest::option::of(0usize..4),
        fraction in proptest::option::of(0.05f64..2.0),
    ) {
        let bank = MaskBank::new(&data, n, k, p).unwrap();
        let mut g = rndpo_core::SplitMix64::new(n as u64 * 31 + p as u64);
        let scores: Vec<f64> = (0..n * k).map(|_| g.below(5) as f64 / 5.0).collect();
        let params = MiningParams {
            strategy: Pairing::NAMES[strategy_index].parse().unwrap(),
            min_margin,
            min_region,
            max_region: extra.map(|e| min_region + e),
            max_region_fraction: fraction,
            max_pairs_per_image: cap,
            seed: 3,
        };
        let pairs = mine_pairs(&bank, &scores, &params).unwrap();
        let stats = naive_stats(&data, n, k, p);
        let mut per_image = vec![0usize; n];
        for t in 0..pairs.len() {
            let (i, c, r) = (pairs.image[t] as usize, pairs.chosen[t] as usize, pairs.rejected[t] as usize);
            per_image[i] += 1;
            prop_assert!(t == 0 || pairs.image[t - 1] <= pairs.image[t]);
            let margin = scores[i * k + c] - scores[i * k + r];
            prop_assert_eq!(pairs.margin[t], margin);
            prop_assert!(margin > min_margin);
            let region = stats.disagreement()[(i * k + c) * k + r];
            prop_assert_eq!(pairs.region_size[t], region);
            prop_assert!(region >= min_region.max(1) as i64);
            if let Some(hi) = params.max_region {
                prop_assert!(region <= hi as i64);
            }
            if let Some(f) = fraction {
                let chosen_size = stats.sizes[i * k + c];
                prop_assert!(region as f64 <= f * chosen_size as f64);
            }
        }
        if let Some(cap) = cap {
            prop_assert!(per_image.iter().all(|&c| c <= cap));
        }
    }

    #[test]
    fn non_binary_value_is_reported_at_its_first_position(
        (mut data, n, k, p) in bank_strategy(),
        picks in proptest::collection::vec((any::<prop::sample::Index>(), 2u8..=255), 1..4),
    ) {
        if data.is_empty() {
            return Ok(()); // nothing to corrupt
        }
        for (pos, value) in &picks {
            let i = pos.index(data.len());
            data[i] = *value;
        }
        let first = data.iter().position(|&v| v > 1).unwrap();
        let bank = MaskBank::new(&data, n, k, p).unwrap();
        let expected = rndpo_core::Error::NonBinaryMask {
            value: data[first],
            image: first / (k * p),
            proposal: (first % (k * p)) / p,
            pixel: first % p,
        };
        for threads in [1, 3] {
            let err = in_pool(threads, || pairwise_stats(&bank)).unwrap_err();
            prop_assert_eq!(&err, &expected);
            let scores = vec![0.0; n * k];
            let err = in_pool(threads, || mine_pairs(&bank, &scores, &MiningParams::default())).unwrap_err();
            prop_assert_eq!(&err, &expected);
        }
    }
}

/// A random label bank: (data, n, k, p, classes), mostly background, with runs of one label
/// (as organs give) and duplicated maps now and then.
fn label_bank_strategy() -> impl Strategy<Value = (Vec<u8>, usize, usize, usize, usize)> {
    let pixels = prop_oneof![3 => 0usize..200, 1 => 1000usize..2200];
    (0usize..4, 0usize..7, pixels, 2usize..7).prop_flat_map(|(n, k, p, classes)| {
        let len = n * k * p;
        (
            proptest::collection::vec((0..classes as u8, 0usize..4, 0usize..24), len / 8 + 1),
            proptest::collection::vec(0usize..6, n * k),
        )
            .prop_map(move |(runs, dup)| {
                // Runs of one label, background half of the time.
                let mut data = Vec::with_capacity(len);
                for (label, background, length) in runs.into_iter().cycle() {
                    if data.len() >= len {
                        break;
                    }
                    let value = if background < 2 { 0 } else { label };
                    data.extend(std::iter::repeat_n(value, length.min(len - data.len())));
                }
                for i in 0..n {
                    for j in 1..k {
                        if dup[i * k + j] == 0 {
                            let src = (i * k + j - 1) * p;
                            data.copy_within(src..src + p, (i * k + j) * p);
                        }
                    }
                }
                (data, n, k, p, classes)
            })
    })
}

fn naive_label_stats(data: &[u8], n: usize, k: usize, p: usize, classes: usize) -> LabelStats {
    let mut stats = LabelStats::zeros(n, k, classes);
    let map = |i: usize, a: usize| &data[(i * k + a) * p..(i * k + a + 1) * p];
    for i in 0..n {
        for a in 0..k {
            for &v in map(i, a) {
                stats.sizes[(i * k + a) * classes + usize::from(v)] += 1;
            }
            for b in 0..k {
                for (&x, &y) in map(i, a).iter().zip(map(i, b)) {
                    if x == y {
                        stats.intersection[((i * k + a) * k + b) * classes + usize::from(x)] += 1;
                    } else {
                        stats.disagreement[(i * k + a) * k + b] += 1;
                    }
                }
            }
        }
    }
    stats
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn label_counts_equal_naive_counts_at_any_thread_count(
        (data, n, k, p, classes) in label_bank_strategy(),
        threads in 1usize..4,
    ) {
        let bank = LabelBank::new(&data, n, k, p, classes).unwrap();
        let stats = in_pool(threads, || label_pairwise_stats(&bank)).unwrap();
        prop_assert_eq!(&stats, &naive_label_stats(&data, n, k, p, classes));
    }

    #[test]
    fn a_label_out_of_range_is_reported_at_its_first_position(
        (mut data, n, k, p, classes) in label_bank_strategy(),
        picks in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..=255), 1..3),
        threads in 1usize..4,
    ) {
        if data.is_empty() {
            return Ok(()); // nothing to corrupt
        }
        for (at, value) in picks {
            let value = value.max(classes as u8);
            let at = at.index(data.len());
            data[at] = value;
        }
        let first = data.iter().position(|&v| usize::from(v) >= classes).unwrap();
        let bank = LabelBank::new(&data, n, k, p, classes).unwrap();
        let expected = Error::LabelOutOfRange {
            value: data[first],
            classes,
            image: first / (k * p),
            proposal: first % (k * p) / p,
            pixel: first % p,
        };
        let err = in_pool(threads, || label_pairwise_stats(&bank)).unwrap_err();
        prop_assert_eq!(&err, &expected);
        let scores = vec![0.0; n * k];
        let params = MiningParams::default();
        let err = in_pool(threads, || mine_label_pairs(&bank, &scores, &params)).unwrap_err();
        prop_assert_eq!(&err, &expected);
    }
}
