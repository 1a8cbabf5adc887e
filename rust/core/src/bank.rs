//! Borrowed mask banks: shape checks, value checks and bit-packing into `u64` words.
//!
//! A bank is a C-contiguous `(N, K, P)` `u8` buffer (N images, K proposals per image, P pixels
//! per mask) whose elements must be 0 or 1. It is never copied: masks are packed one image at a
//! time into a small caller-owned buffer of `K * ceil(P / 64)` words, so memory stays bounded
//! even for memory-mapped banks larger than RAM.
//!
//! Packed layout: only counts of AND/XOR are ever taken, so the bit order inside the words is
//! chosen for speed, not readability; it only has to be the same for all masks of equal length.
//! Word `t` packs the 64 bytes `64 t .. 64 t + 64` (one cache line; the last line of a mask is
//! zero-padded): its eight little-endian `u64` loads `x_0..x_7` combine as
//! `x_0 | x_1 << 1 | ... | x_7 << 7`, so byte `b` of `x_j` lands on bit `8 b + j`. That is eight
//! loads, seven shifts and seven ORs per 64 bytes with no cross-lane work, and the bank is read
//! strictly in order. The value check is fused into the same pass: the OR of all loads is tested
//! once per mask against `0xFEFE...FE`.
//!
//! Why whole lines: on the reference machine a pass that packs in address order runs at about
//! 0.9 of the bare read speed, while packing small 2D tiles (8 x 8 pixels, eight rows read side
//! by side) runs at about 0.7, because the interleaved rows defeat the hardware prefetcher. Tiles
//! would make fewer words "mixed" (proposals disagreeing somewhere inside the word, see
//! [`crate::regions`]): about 0.16 of the words of a realistic 128 x 128 bank instead of 0.40, but
//! the counting saved is less than the reading lost (`benches/bench_mining.py`).
//!
//! A mask uses `ceil(P / 64)` words; padding bits are zero.

use crate::error::{Error, Result};

/// Every bit but the lowest of each byte: a word of 0/1 bytes has none of them set.
const HIGH_BITS: u64 = 0xFEFE_FEFE_FEFE_FEFE;

/// Bytes per packed word: one cache line.
const LINE: usize = 64;

/// Packs one line of 64 bytes into one word (layout in the module docs); also returns the OR
/// of its eight loads.
#[inline]
fn pack_line(line: &[u8; LINE]) -> (u64, u64) {
    let (loads, _) = line.as_chunks::<8>();
    let mut w = [0u64; 8];
    for (x, load) in w.iter_mut().zip(loads) {
        *x = u64::from_le_bytes(*load);
    }
    let bits =
        w[0] | w[1] << 1 | w[2] << 2 | w[3] << 3 | w[4] << 4 | w[5] << 5 | w[6] << 6 | w[7] << 7;
    let seen = w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
    (bits, seen)
}

/// Packs one line into `out`, ORs the word into `any` and ANDs it into `all`; returns the OR of
/// the line's loads.
#[inline]
fn fold_line(line: &[u8; LINE], out: &mut u64, any: &mut u64, all: &mut u64) -> u64 {
    let (bits, seen) = pack_line(line);
    *out = bits;
    *any |= bits;
    *all &= bits;
    seen
}

/// Packs `src` line by line into `out`, folding the words into `any` (by OR) and `all` (by AND);
/// each of the three holds exactly `ceil(src.len() / 64)` words. Returns the OR of all loads.
fn pack_lines(src: &[u8], out: &mut [u64], any: &mut [u64], all: &mut [u64]) -> u64 {
    let (lines, tail) = src.as_chunks::<LINE>();
    let mut seen = 0u64;
    let mut slots = out.iter_mut().zip(any.iter_mut().zip(all.iter_mut()));
    for (line, (o, (an, al))) in lines.iter().zip(&mut slots) {
        seen |= fold_line(line, o, an, al);
    }
    if let (false, Some((o, (an, al)))) = (tail.is_empty(), slots.next()) {
        let mut padded = [0u8; LINE];
        padded[..tail.len()].copy_from_slice(tail);
        seen |= fold_line(&padded, o, an, al);
    }
    seen
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
    pack_mask_into(src, out, None)
}

/// [`pack_mask`], also folding the packed words into `any` (OR) and `all` (AND) when given.
///
/// `any` and `all` must then hold at least [`words_for`]`(src.len())` words each.
fn pack_mask_into(
    src: &[u8],
    out: &mut [u64],
    agreement: Option<(&mut [u64], &mut [u64])>,
) -> bool {
    let words = words_for(src.len());
    if out.len() < words {
        return false;
    }
    let seen = if let Some((any, all)) = agreement {
        if any.len() < words || all.len() < words {
            return false;
        }
        pack_lines(src, &mut out[..words], &mut any[..words], &mut all[..words])
    } else {
        // The same kernel with scratch agreement words on the stack, 64 lines at a time.
        let (mut any, mut all) = ([0u64; 64], [0u64; 64]);
        let chunks = src.chunks(64 * LINE).zip(out[..words].chunks_mut(64));
        chunks.fold(0, |seen, (s, o)| {
            let n = o.len();
            seen | pack_lines(s, o, &mut any[..n], &mut all[..n])
        })
    };
    seen & HIGH_BITS == 0
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

    /// The `(K, P)` bytes of image `image` (empty when out of range).
    #[must_use]
    pub fn image(&self, image: usize) -> &'a [u8] {
        let len = self.k * self.p;
        self.data.get(image * len..(image + 1) * len).unwrap_or(&[])
    }

    /// Validates and packs the K masks of image `image` into `out`, `K * words_per_mask()` words.
    pub fn pack_image(&self, image: usize, out: &mut [u64]) -> Result<()> {
        self.pack_image_into(image, out, None)
    }

    /// [`pack_image`](Self::pack_image), also computing the per-word agreement of the K masks.
    ///
    /// `any` and `all` (`words_per_mask()` words each) receive the OR and the AND over the K
    /// packed masks, computed in the same pass as the packing: words where `any == all` are
    /// words on which all K masks agree.
    pub fn pack_image_agreement(
        &self,
        image: usize,
        out: &mut [u64],
        any: &mut [u64],
        all: &mut [u64],
    ) -> Result<()> {
        let w = self.words_per_mask();
        for (argument, buf) in [("any", &any), ("all", &all)] {
            if buf.len() != w {
                return Err(Error::InvalidParameter {
                    argument,
                    expected: format!("a buffer of ceil(P / 64) = {w} words"),
                    got: format!("{} words", buf.len()),
                });
            }
        }
        any.fill(0);
        all.fill(u64::MAX);
        self.pack_image_into(image, out, Some((any, all)))
    }

    fn pack_image_into(
        &self,
        image: usize,
        out: &mut [u64],
        mut agreement: Option<(&mut [u64], &mut [u64])>,
    ) -> Result<()> {
        let w = self.words_per_mask();
        if out.len() != self.k * w {
            return Err(Error::InvalidParameter {
                argument: "out",
                expected: format!("a buffer of K * ceil(P / 64) = {} words", self.k * w),
                got: format!("{} words", out.len()),
            });
        }
        if w == 0 {
            return self.check_index(image, 0);
        }
        for (proposal, dst) in out.chunks_exact_mut(w).enumerate() {
            let fold = agreement
                .as_mut()
                .map(|(any, all)| (&mut **any, &mut **all));
            self.pack_proposal_into(image, proposal, dst, fold)?;
        }
        Ok(())
    }

    /// Validates and packs mask `(image, proposal)` into `out`, exactly `words_per_mask()` words.
    pub fn pack_proposal(&self, image: usize, proposal: usize, out: &mut [u64]) -> Result<()> {
        self.pack_proposal_into(image, proposal, out, None)
    }

    fn pack_proposal_into(
        &self,
        image: usize,
        proposal: usize,
        out: &mut [u64],
        agreement: Option<(&mut [u64], &mut [u64])>,
    ) -> Result<()> {
        self.check_index(image, proposal)?;
        let w = self.words_per_mask();
        if out.len() != w {
            return Err(Error::InvalidParameter {
                argument: "out",
                expected: format!("a buffer of ceil(P / 64) = {w} words"),
                got: format!("{} words", out.len()),
            });
        }
        let start = (image * self.k + proposal) * self.p;
        let src = self.data.get(start..start + self.p).unwrap_or(&[]);
        if pack_mask_into(src, out, agreement) {
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

    fn check_index(&self, image: usize, proposal: usize) -> Result<()> {
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
            let (word, offset) = (q / 64, q % 64);
            let (load, byte) = (offset / 8, offset % 8);
            if v == 1 {
                out[word] |= 1 << (8 * byte + load);
            }
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
}
