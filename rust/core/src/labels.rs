//! Borrowed banks of label maps: the class count, the value check and one bit plane per class.
//!
//! A label bank is a [`MaskBank`] (a C-contiguous `(N, K, P)` `u8` buffer, never copied) whose
//! elements are labels `0..C` for a class count C from 2 to [`MAX_CLASSES`]. Each mask is split,
//! one 64-byte line at a time, into C - 1 foreground bit planes: plane `c` (`1..C`) has bit `i` of
//! word `t` set where pixel `64 t + i` has label `c` (the layout of `bank.rs`, one packed mask per
//! class); class 0, the background, is the pixels of no plane. The value check is fused into the
//! same pass, and lines of background cost one compare. Planes are packed one image at a time
//! into a small caller-owned buffer, so memory stays bounded for memory-mapped banks too.

use crate::bank::{check_len, MaskBank, GROUP, PREFETCH_LINES};
use crate::error::{Error, Result};
use crate::line::{label_planes, prefetch, LINE};

/// The largest class count: labels are bytes, and 255 classes keep label 255 free to be refused.
pub const MAX_CLASSES: usize = 255;

/// Splits the lines of `src` into foreground planes in order, handing word `t` of plane `c`
/// (`1..classes`) to `put(t, c, word)`; returns whether every byte was below `classes`.
///
/// `stream` is the bank from `src` onwards, prefetched as in `bank.rs`. The last partial
/// line is padded with zeros: background, which no foreground plane holds.
#[inline]
fn plane_lines(
    src: &[u8],
    stream: &[[u8; LINE]],
    classes: usize,
    mut put: impl FnMut(usize, usize, u64),
) -> bool {
    let (lines, tail) = src.as_chunks::<LINE>();
    let mut valid = true;
    for (t, line) in lines.iter().enumerate() {
        if let Some(ahead) = stream.get(t + PREFETCH_LINES) {
            prefetch(ahead);
        }
        valid &= label_planes(line, classes, |c, bits| put(t, c, bits));
    }
    if !tail.is_empty() {
        let mut padded = [0u8; LINE];
        padded[..tail.len()].copy_from_slice(tail);
        valid &= label_planes(&padded, classes, |c, bits| put(lines.len(), c, bits));
    }
    valid
}

/// A borrowed, shape-checked `(N, K, P)` bank of `u8` label maps with C classes.
#[derive(Clone, Copy, Debug)]
pub struct LabelBank<'a> {
    masks: MaskBank<'a>,
    classes: usize,
}

impl<'a> LabelBank<'a> {
    /// Wraps `data`, a C-contiguous `(n, k, p)` `u8` buffer of labels `0..classes`.
    ///
    /// The length and the class count (2 to [`MAX_CLASSES`]) are checked here; element values
    /// while packing.
    pub fn new(data: &'a [u8], n: usize, k: usize, p: usize, classes: usize) -> Result<Self> {
        if !(2..=MAX_CLASSES).contains(&classes) {
            return Err(Error::InvalidParameter {
                argument: "num_classes",
                expected: format!("an integer from 2 to {MAX_CLASSES}"),
                got: classes.to_string(),
            });
        }
        Ok(Self {
            masks: MaskBank::new(data, n, k, p)?,
            classes,
        })
    }

    /// Number of images N.
    #[must_use]
    pub fn n(&self) -> usize {
        self.masks.n()
    }

    /// Number of proposals per image K.
    #[must_use]
    pub fn k(&self) -> usize {
        self.masks.k()
    }

    /// Number of pixels per mask P.
    #[must_use]
    pub fn p(&self) -> usize {
        self.masks.p()
    }

    /// Number of classes C.
    #[must_use]
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of `u64` words per packed plane, `ceil(P / 64)`.
    #[must_use]
    pub fn words_per_mask(&self) -> usize {
        self.masks.words_per_mask()
    }

    /// Validates the K label maps of image `image` and packs their foreground planes (classes
    /// `1..C`; class 0 is what no plane holds) in groups of [`GROUP`] masks, interleaved word by
    /// word, then computes the per-plane agreement.
    ///
    /// With `G = ceil(K / 4)` and `w = words_per_mask()`:
    /// - `planes`: `(C - 1) * G * w` entries; entry `((c - 1) * G + g) * w + t` holds word `t`
    ///   of plane `c` of masks `GROUP * g .. GROUP * g + GROUP`. Lanes of masks past K are left
    ///   alone.
    /// - `any`, `all`: `(C - 1) * w` words each; entry `(c - 1) * w + t` is the OR and the AND
    ///   of word `t` of plane `c` over the K masks.
    pub fn pack_image_planes(
        &self,
        image: usize,
        planes: &mut [[u64; GROUP]],
        any: &mut [u64],
        all: &mut [u64],
    ) -> Result<()> {
        let (k, c_count, w) = (self.k(), self.classes, self.words_per_mask());
        let groups = k.div_ceil(GROUP);
        let formula = "(C - 1) * ceil(K / 4) * ceil(P / 64)";
        check_len("planes", planes.len(), (c_count - 1) * groups * w, formula)?;
        check_len(
            "any",
            any.len(),
            (c_count - 1) * w,
            "(C - 1) * ceil(P / 64)",
        )?;
        check_len(
            "all",
            all.len(),
            (c_count - 1) * w,
            "(C - 1) * ceil(P / 64)",
        )?;
        self.masks.check_index(image, 0)?;
        for proposal in 0..k {
            let (group, lane) = (proposal / GROUP, proposal % GROUP);
            let put = |t: usize, c: usize, bits: u64| {
                if let Some(slot) = planes.get_mut(((c - 1) * groups + group) * w + t) {
                    slot[lane] = bits;
                }
            };
            let (src, stream) = self.masks.proposal_stream(image, proposal);
            if !plane_lines(src, stream, c_count, put) {
                return Err(self.first_invalid_in(image, proposal));
            }
        }
        self.fold_planes(planes, any, all);
        Ok(())
    }

    /// The agreement words of packed planes (see [`Self::pack_image_planes`]).
    fn fold_planes(&self, planes: &[[u64; GROUP]], any: &mut [u64], all: &mut [u64]) {
        let (k, w) = (self.k(), self.words_per_mask());
        any.fill(0);
        all.fill(u64::MAX);
        if w == 0 {
            return;
        }
        let rows = planes.chunks_exact(k.div_ceil(GROUP) * w);
        let folds = any.chunks_exact_mut(w).zip(all.chunks_exact_mut(w));
        for (rows, (any, all)) in rows.zip(folds) {
            for (g, row) in rows.chunks_exact(w).enumerate() {
                // Lanes past K hold zeros: all ones keep them out of the AND.
                let pad: [u64; GROUP] =
                    std::array::from_fn(|lane| if g * GROUP + lane < k { 0 } else { u64::MAX });
                for ((x, a), b) in row.iter().zip(any.iter_mut()).zip(all.iter_mut()) {
                    *a |= (x[0] | x[1]) | (x[2] | x[3]);
                    *b &= ((x[0] | pad[0]) & (x[1] | pad[1])) & ((x[2] | pad[2]) & (x[3] | pad[3]));
                }
            }
        }
    }

    /// The P labels of map `(image, proposal)`, checked to be below C (a
    /// [`Error::LabelOutOfRange`] at the first one that is not).
    pub fn checked_map(&self, image: usize, proposal: usize) -> Result<&'a [u8]> {
        self.masks.check_index(image, proposal)?;
        let (map, _) = self.masks.proposal_stream(image, proposal);
        // The maximum vectorises; the position is looked for only on the error path.
        let top = map.iter().fold(0u8, |acc, &v| acc.max(v));
        if usize::from(top) < self.classes {
            Ok(map)
        } else {
            Err(self.first_invalid_in(image, proposal))
        }
    }

    /// The first element (in C order) that is not a label below C, as an error, if any.
    ///
    /// A slow sequential scan for error paths, so that the reported position does not depend on
    /// thread scheduling.
    #[must_use]
    pub fn first_invalid(&self) -> Option<Error> {
        let data = self.masks.data();
        let pos = data.iter().position(|&v| usize::from(v) >= self.classes)?;
        Some(self.error_at(pos, data[pos]))
    }

    fn first_invalid_in(&self, image: usize, proposal: usize) -> Error {
        let (src, _) = self.masks.proposal_stream(image, proposal);
        let start = (image * self.k() + proposal) * self.p();
        let offset = src
            .iter()
            .position(|&v| usize::from(v) >= self.classes)
            .unwrap_or(0);
        self.error_at(start + offset, src.get(offset).copied().unwrap_or(0))
    }

    fn error_at(&self, pos: usize, value: u8) -> Error {
        let per_image = self.k() * self.p();
        Error::LabelOutOfRange {
            value,
            classes: self.classes,
            image: pos / per_image,
            proposal: (pos % per_image) / self.p(),
            pixel: pos % self.p(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_count_must_lie_from_2_to_255() {
        let data = [0u8; 4];
        for classes in [0usize, 1, 256, 1000] {
            let err = LabelBank::new(&data, 1, 2, 2, classes).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("num_classes must be an integer from 2 to 255, got {classes}")
            );
        }
        for classes in [2usize, 3, 255] {
            assert_eq!(
                LabelBank::new(&data, 1, 2, 2, classes).unwrap().classes(),
                classes
            );
        }
        let err = LabelBank::new(&data, 1, 2, 3, 3).unwrap_err();
        assert!(
            err.to_string().starts_with("masks must have shape"),
            "{err}"
        );
    }

    /// Packs every plane of an image and compares it, word by word, with a pixel loop.
    #[test]
    fn planes_and_agreement_match_a_pixel_loop() {
        for (k, p, classes) in [
            (1usize, 1usize, 2usize),
            (3, 64, 3),
            (6, 200, 4),
            (5, 1000, 255),
        ] {
            let mut g = crate::rng::SplitMix64::new((k * p) as u64);
            let data: Vec<u8> = (0..2 * k * p)
                .map(|_| {
                    if g.below(3) == 0 {
                        0
                    } else {
                        g.below(classes as u64) as u8
                    }
                })
                .collect();
            let bank = LabelBank::new(&data, 2, k, p, classes).unwrap();
            let (w, groups, fg) = (bank.words_per_mask(), k.div_ceil(GROUP), classes - 1);
            let mut planes = vec![[0u64; GROUP]; fg * groups * w];
            let (mut any, mut all) = (vec![0; fg * w], vec![0; fg * w]);
            bank.pack_image_planes(1, &mut planes, &mut any, &mut all)
                .unwrap();
            let mask = |j: usize| &data[(k + j) * p..(k + j + 1) * p];
            for c in 1..classes {
                let plane = |j: usize, t: usize| -> u64 {
                    (0..64)
                        .filter(|i| mask(j).get(64 * t + i) == Some(&(c as u8)))
                        .map(|i| 1u64 << i)
                        .sum()
                };
                for t in 0..w {
                    for j in 0..k {
                        let got = planes[((c - 1) * groups + j / GROUP) * w + t][j % GROUP];
                        assert_eq!(got, plane(j, t), "class {c} mask {j} word {t}");
                    }
                    let or = (0..k).fold(0, |acc, j| acc | plane(j, t));
                    let and = (0..k).fold(u64::MAX, |acc, j| acc & plane(j, t));
                    assert_eq!((any[(c - 1) * w + t], all[(c - 1) * w + t]), (or, and));
                }
            }
        }
    }

    #[test]
    fn labels_at_or_above_the_class_count_are_reported_at_their_first_position() {
        let (k, p) = (3usize, 130usize);
        for pos in [0usize, 63, 64, 129, 2 * 130 + 5, 3 * 130 + 128] {
            for value in [3u8, 4, 255] {
                let mut data = vec![2u8; 2 * k * p];
                data[pos] = value;
                data[2 * k * p - 1] = 200; // a later bad value is not the one reported
                let bank = LabelBank::new(&data, 2, k, p, 3).unwrap();
                let expected = Error::LabelOutOfRange {
                    value,
                    classes: 3,
                    image: pos / (k * p),
                    proposal: pos % (k * p) / p,
                    pixel: pos % p,
                };
                assert_eq!(bank.first_invalid(), Some(expected.clone()));
                let w = bank.words_per_mask();
                let mut planes = vec![[0u64; GROUP]; 2 * w];
                let (mut any, mut all) = (vec![0; 2 * w], vec![0; 2 * w]);
                let err = bank
                    .pack_image_planes(pos / (k * p), &mut planes, &mut any, &mut all)
                    .unwrap_err();
                assert_eq!(err, expected);
            }
        }
        let bank = LabelBank::new(&[0, 1, 5, 0], 1, 2, 2, 5).unwrap();
        assert_eq!(
            bank.first_invalid().unwrap().to_string(),
            "masks must contain only labels 0 to 4 (num_classes = 5), got 5 at image 0, \
             proposal 1, flat pixel 0"
        );
    }
}
