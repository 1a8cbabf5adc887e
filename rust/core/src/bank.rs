//! Borrowed mask banks: shape checks, value checks and bit-packing into `u64` words.
//!
//! A bank is a C-contiguous `(N, K, P)` `u8` buffer (N images, K proposals per image, P pixels
//! per mask) whose elements must be 0 or 1. It is never copied: masks are packed one image at a
//! time into a small caller-owned buffer of `K * ceil(P / 64)` words, so memory stays bounded
//! even for memory-mapped banks larger than RAM.
//!
//! Packed layout: word `t` of a mask holds pixels `64 t .. 64 t + 64`, pixel `64 t + i` on bit
//! `i`, the last word zero-padded. One word is one 64-byte line of the bank, so the bank is read
//! strictly in address order, a few lines behind a software prefetch (kernel in `line.rs`);
//! the value check is fused into the same pass (why lines rather than 2D tiles:
//! `docs/mining_performance.md`).

use crate::error::{Error, Result};
use crate::line::{pack_line, prefetch, Seen, LINE};

/// Masks per group of the interleaved layout filled by [`MaskBank::pack_image_grouped`].
pub const GROUP: usize = 4;

/// How many lines ahead of the one being packed the stream is prefetched (4 KiB): lines of
/// background pack in a few instructions, and a shorter distance (16 lines before label maps
/// came) left the loads waiting on memory (`docs/mining_performance.md`).
pub(crate) const PREFETCH_LINES: usize = 64;

/// Packs the lines of `src` in order, handing word `t` to `put(t, word)`; returns the OR of the
/// bytes read.
///
/// `stream` is the bank from `src` onwards: the line `PREFETCH_LINES` ahead of the current one
/// is prefetched from it, across mask and image boundaries. The last partial line is packed
/// zero-padded.
#[inline]
fn pack_lines(src: &[u8], stream: &[[u8; LINE]], mut put: impl FnMut(usize, u64)) -> Seen {
    let (lines, tail) = src.as_chunks::<LINE>();
    let mut seen = Seen::default();
    for (t, line) in lines.iter().enumerate() {
        if let Some(ahead) = stream.get(t + PREFETCH_LINES) {
            prefetch(ahead);
        }
        let (bits, s) = pack_line(line);
        put(t, bits);
        seen = seen.or(s);
    }
    if !tail.is_empty() {
        let mut padded = [0u8; LINE];
        padded[..tail.len()].copy_from_slice(tail);
        let (bits, s) = pack_line(&padded);
        put(lines.len(), bits);
        seen = seen.or(s);
    }
    seen
}

/// A `put` for [`pack_lines`] that writes word `t` to `out[t]`.
fn store(out: &mut [u64]) -> impl FnMut(usize, u64) + '_ {
    |t, bits| {
        if let Some(slot) = out.get_mut(t) {
            *slot = bits;
        }
    }
}

/// Number of `u64` words that hold one packed mask of `pixels` pixels, `ceil(pixels / 64)`.
#[must_use]
pub fn words_for(pixels: usize) -> usize {
    pixels.div_ceil(64)
}

/// Bit-packs one mask of 0/1 bytes into `out` (layout in the module docs).
///
/// `out` must hold at least [`words_for`]`(src.len())` words; the words past that are left
/// alone. Returns `false` when some byte of `src` is greater than 1 (the packed words are then
/// meaningless) or when `out` is too short (nothing is checked or packed then).
#[must_use]
pub fn pack_mask(src: &[u8], out: &mut [u64]) -> bool {
    if out.len() < words_for(src.len()) {
        return false;
    }
    pack_lines(src, src.as_chunks().0, store(out)).is_binary()
}

/// A borrowed, shape-checked `(N, K, P)` bank of `u8` masks.
#[derive(Clone, Copy, Debug)]
pub struct MaskBank<'a> {
    data: &'a [u8],
    n: usize,
    k: usize,
    p: usize,
}

impl<'a> MaskBank<'a> {
    /// Wraps `data`, a C-contiguous `(n, k, p)` `u8` buffer.
    ///
    /// Only the length is checked here; element values are checked while packing.
    pub fn new(data: &'a [u8], n: usize, k: usize, p: usize) -> Result<Self> {
        let expected = n.checked_mul(k).and_then(|nk| nk.checked_mul(p));
        if expected != Some(data.len()) {
            return Err(Error::Shape {
                argument: "masks",
                expected: format!(
                    "(N, K, P) = ({n}, {k}, {p}), i.e. {} bytes",
                    fmt_opt(expected)
                ),
                got: format!("a buffer of {} bytes", data.len()),
            });
        }
        Ok(Self { data, n, k, p })
    }

    /// Number of images N.
    #[must_use]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of proposals per image K.
    #[must_use]
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of pixels per mask P.
    #[must_use]
    pub fn p(&self) -> usize {
        self.p
    }

    /// Number of `u64` words per packed mask, `ceil(P / 64)`.
    #[must_use]
    pub fn words_per_mask(&self) -> usize {
        words_for(self.p)
    }

    /// Validates and packs the K masks of image `image` into `out`, `K * words_per_mask()` words.
    pub fn pack_image(&self, image: usize, out: &mut [u64]) -> Result<()> {
        let w = self.words_per_mask();
        check_len("out", out.len(), self.k * w, "K * ceil(P / 64)")?;
        if w == 0 {
            return self.check_index(image, 0);
        }
        for (proposal, dst) in out.chunks_exact_mut(w).enumerate() {
            self.pack_proposal(image, proposal, dst)?;
        }
        Ok(())
    }

    /// Validates and packs the K masks of image `image` in groups of [`GROUP`] masks, interleaved
    /// word by word, and computes per-word agreement and mask sizes in the same pass.
    ///
    /// - `out`: `ceil(K / GROUP) * words_per_mask()` entries; entry `g * w + t` holds word `t` of
    ///   masks `GROUP * g .. GROUP * g + GROUP`. Lanes of masks past K are left alone (callers
    ///   keep them zero).
    /// - `any`, `all`: `words_per_mask()` words each, the OR and the AND over the K masks: words
    ///   where `any == all` are words on which all K masks agree.
    /// - `sizes`: K entries, the number of set pixels of each mask.
    pub fn pack_image_grouped(
        &self,
        image: usize,
        out: &mut [[u64; GROUP]],
        any: &mut [u64],
        all: &mut [u64],
        sizes: &mut [u64],
    ) -> Result<()> {
        let w = self.words_per_mask();
        check_len(
            "out",
            out.len(),
            self.k.div_ceil(GROUP) * w,
            "ceil(K / 4) * ceil(P / 64)",
        )?;
        check_len("any", any.len(), w, "ceil(P / 64)")?;
        check_len("all", all.len(), w, "ceil(P / 64)")?;
        check_len("sizes", sizes.len(), self.k, "K")?;
        self.check_index(image, 0)?;
        any.fill(0);
        all.fill(u64::MAX);
        for (proposal, size) in sizes.iter_mut().enumerate() {
            let (group, lane) = (proposal / GROUP, proposal % GROUP);
            let dst = out.get_mut(group * w..(group + 1) * w).unwrap_or_default();
            let mut ones = 0u64;
            let put = |t: usize, bits: u64| {
                if let (Some(slot), Some(a), Some(b)) =
                    (dst.get_mut(t), any.get_mut(t), all.get_mut(t))
                {
                    slot[lane] = bits;
                    *a |= bits;
                    *b &= bits;
                }
                ones += u64::from(bits.count_ones());
            };
            self.pack_proposal_with(image, proposal, put)?;
            *size = ones;
        }
        Ok(())
    }

    /// Validates and packs mask `(image, proposal)` into `out`, exactly `words_per_mask()` words.
    pub fn pack_proposal(&self, image: usize, proposal: usize, out: &mut [u64]) -> Result<()> {
        check_len("out", out.len(), self.words_per_mask(), "ceil(P / 64)")?;
        self.pack_proposal_with(image, proposal, store(out))
    }

    /// Validates and packs mask `(image, proposal)`, handing word `t` to `put(t, word)`.
    fn pack_proposal_with(
        &self,
        image: usize,
        proposal: usize,
        put: impl FnMut(usize, u64),
    ) -> Result<()> {
        self.check_index(image, proposal)?;
        let (src, stream) = self.proposal_stream(image, proposal);
        if pack_lines(src, stream, put).is_binary() {
            Ok(())
        } else {
            Err(self
                .locate_invalid(image, proposal)
                .unwrap_or(Error::NonBinaryMask {
                    value: 0,
                    image,
                    proposal,
                    pixel: 0,
                }))
        }
    }

    /// Mask `(image, proposal)` (`p` bytes) and the bank from its start onwards, as whole lines
    /// (the stream that packing prefetches from). Indices must have passed `check_index`.
    pub(crate) fn proposal_stream(
        &self,
        image: usize,
        proposal: usize,
    ) -> (&'a [u8], &'a [[u8; LINE]]) {
        let start = (image * self.k + proposal) * self.p;
        let src = self.data.get(start..start + self.p).unwrap_or(&[]);
        (src, self.data.get(start..).unwrap_or(&[]).as_chunks().0)
    }

    /// The bytes of the bank, `(N, K, P)` in C order.
    pub(crate) fn data(&self) -> &'a [u8] {
        self.data
    }

    pub(crate) fn check_index(&self, image: usize, proposal: usize) -> Result<()> {
        if image < self.n && (proposal < self.k || (self.k == 0 && proposal == 0)) {
            Ok(())
        } else {
            Err(Error::InvalidParameter {
                argument: "image, proposal",
                expected: format!("indices below (N, K) = ({}, {})", self.n, self.k),
                got: format!("({image}, {proposal})"),
            })
        }
    }

    /// The first element (in C order) that is neither 0 nor 1, as an error, if any.
    ///
    /// This is a slow sequential scan meant for error paths: parallel code that met an invalid
    /// image calls it so that the reported position does not depend on thread scheduling.
    #[must_use]
    pub fn first_invalid(&self) -> Option<Error> {
        let pos = self.data.iter().position(|&v| v > 1)?;
        self.error_at(pos)
    }

    fn locate_invalid(&self, image: usize, proposal: usize) -> Option<Error> {
        let start = (image * self.k + proposal) * self.p;
        let mask = self.data.get(start..start + self.p)?;
        let offset = mask.iter().position(|&v| v > 1)?;
        self.error_at(start + offset)
    }

    fn error_at(&self, pos: usize) -> Option<Error> {
        let value = *self.data.get(pos)?;
        let per_image = self.k * self.p;
        Some(Error::NonBinaryMask {
            value,
            image: pos / per_image,
            proposal: (pos % per_image) / self.p,
            pixel: pos % self.p,
        })
    }
}

/// An `InvalidParameter` error unless a buffer has exactly the expected length.
pub(crate) fn check_len(
    argument: &'static str,
    len: usize,
    expected: usize,
    formula: &str,
) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            argument,
            expected: format!("a buffer of {formula} = {expected} words"),
            got: format!("{len} words"),
        })
    }
}

fn fmt_opt(v: Option<usize>) -> String {
    v.map_or_else(|| "more than usize::MAX".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs by the documented layout, one pixel at a time.
    fn naive_pack(src: &[u8]) -> Vec<u64> {
        let mut out = vec![0u64; words_for(src.len())];
        for (q, &v) in src.iter().enumerate() {
            out[q / 64] |= u64::from(v) << (q % 64);
        }
        out
    }

    #[test]
    fn pack_matches_naive_for_all_lengths() {
        for len in (0..2100).chain([4096, 4097, 16384, 16383, 16385, 16384 + 1000]) {
            let mut g = crate::rng::SplitMix64::new(len as u64);
            let src: Vec<u8> = (0..len).map(|_| g.below(2) as u8).collect();
            let mut out = vec![u64::MAX; words_for(len)];
            assert!(pack_mask(&src, &mut out));
            assert_eq!(out, naive_pack(&src), "len {len}");
        }
    }

    #[test]
    fn pack_rejects_every_non_binary_value_at_every_position() {
        for len in [
            1usize, 7, 8, 63, 64, 65, 127, 128, 130, 300, 511, 512, 513, 1100,
        ] {
            for pos in 0..len {
                for value in [2u8, 3, 0x80, 0xFF] {
                    let mut src = vec![1u8; len];
                    src[pos] = value;
                    let mut out = vec![0u64; words_for(len)];
                    assert!(
                        !pack_mask(&src, &mut out),
                        "len {len} pos {pos} value {value}"
                    );
                }
            }
        }
    }

    #[test]
    fn pack_refuses_a_short_output_and_leaves_extra_words_alone() {
        let src = vec![1u8; 130];
        let mut short = vec![7u64; 2];
        assert!(!pack_mask(&src, &mut short));
        assert_eq!(short, [7, 7]);
        let mut long = vec![7u64; 4];
        assert!(pack_mask(&src, &mut long));
        assert_eq!(&long[..3], &naive_pack(&src)[..]);
        assert_eq!(long[3], 7);
    }

    #[test]
    fn bank_rejects_wrong_length() {
        let data = [0u8; 10];
        let err = MaskBank::new(&data, 2, 3, 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "masks must have shape (N, K, P) = (2, 3, 2), i.e. 12 bytes, got a buffer of 10 bytes"
        );
    }

    #[test]
    fn first_invalid_reports_lowest_position() {
        let mut data = vec![0u8; 2 * 3 * 5];
        data[29] = 9;
        data[17] = 4;
        let bank = MaskBank::new(&data, 2, 3, 5).unwrap();
        let err = bank.first_invalid().unwrap();
        assert_eq!(
            err,
            Error::NonBinaryMask {
                value: 4,
                image: 1,
                proposal: 0,
                pixel: 2
            }
        );
        let mut buf = vec![0u64; 3 * words_for(5)];
        assert_eq!(bank.pack_image(1, &mut buf).unwrap_err(), err);
        assert!(bank.pack_image(0, &mut buf).is_ok());
    }

    #[test]
    fn grouped_packing_interleaves_masks_and_counts_agreement_and_sizes() {
        let (k, p) = (6usize, 200usize);
        let mut rng = crate::rng::SplitMix64::new(11);
        let data: Vec<u8> = (0..2 * k * p)
            .map(|_| u8::from(rng.below(3) == 0))
            .collect();
        let bank = MaskBank::new(&data, 2, k, p).unwrap();
        let w = words_for(p);
        let mut out = vec![[0u64; GROUP]; 2 * w];
        let (mut any, mut all, mut sizes) = (vec![0; w], vec![0; w], vec![0; k]);
        bank.pack_image_grouped(1, &mut out, &mut any, &mut all, &mut sizes)
            .unwrap();
        let masks: Vec<Vec<u64>> = (0..k)
            .map(|j| naive_pack(&data[(k + j) * p..(k + j + 1) * p]))
            .collect();
        for t in 0..w {
            for (j, mask) in masks.iter().enumerate() {
                assert_eq!(out[(j / GROUP) * w + t][j % GROUP], mask[t]);
            }
            assert_eq!(out[w + t][2..], [0, 0], "lanes past K stay zero");
            assert_eq!(any[t], masks.iter().fold(0, |acc, m| acc | m[t]));
            assert_eq!(all[t], masks.iter().fold(u64::MAX, |acc, m| acc & m[t]));
        }
        for (j, &size) in sizes.iter().enumerate() {
            let ones = data[(k + j) * p..(k + j + 1) * p]
                .iter()
                .map(|&v| u64::from(v));
            assert_eq!(size, ones.sum::<u64>());
        }
        let err = bank
            .pack_image_grouped(0, &mut out[1..], &mut any, &mut all, &mut sizes)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "out must be a buffer of ceil(K / 4) * ceil(P / 64) = 8 words, got 7 words"
        );
    }
}
