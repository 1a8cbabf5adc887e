//! Borrowed mask banks: shape checks, value checks and bit-packing into `u64` words.
//!
//! A bank is a C-contiguous `(N, K, P)` `u8` buffer (N images, K proposals per image, P pixels
//! per mask) whose elements must be 0 or 1. It is never copied: masks are packed one image at a
//! time into a small caller-owned buffer of `K * 2 * ceil(P / 128)` words, so memory stays bounded
//! even for memory-mapped banks larger than RAM.
//!
//! Packed layout: only counts of AND/XOR are ever taken, so the bit order inside the words is
//! chosen for packing speed, not readability. Pixel `q = 128 s + 16 j + 8 l + i` (superblock `s`,
//! `j < 8`, `l < 2`, `i < 8`) goes to bit `8 i + j` of word `2 s + l`: word pair `(2 s, 2 s + 1)`
//! is the OR over `j` of the 16-byte load `j` of superblock `s`, shifted left by `j`, which is
//! eight SIMD shifts and ORs per 128 bytes and vectorizes on any SSE2/NEON target. Padding bits
//! are zero, so every mask uses `2 * ceil(P / 128)` words.

use crate::error::{Error, Result};

/// Every bit but the lowest of each byte: a word of 0/1 bytes has none of them set.
const HIGH_BITS: u64 = 0xFEFE_FEFE_FEFE_FEFE;

/// Packs one 128-byte superblock into two words; also returns the OR of its 16 input words.
#[inline]
fn pack_superblock(block: &[u8; 128]) -> ([u64; 2], [u64; 2]) {
    let (words, _) = block.as_chunks::<8>();
    let mut bits = [0u64; 2];
    let mut seen = [0u64; 2];
    for j in 0..8 {
        for l in 0..2 {
            let w = u64::from_le_bytes(words[2 * j + l]);
            bits[l] |= w << j;
            seen[l] |= w;
        }
    }
    (bits, seen)
}

/// Number of `u64` words that hold one packed mask of `pixels` pixels, `2 * ceil(pixels / 128)`.
#[must_use]
pub fn words_for(pixels: usize) -> usize {
    2 * pixels.div_ceil(128)
}

/// Bit-packs one mask of 0/1 bytes into `out` (layout in the module docs).
///
/// `out` must hold at least [`words_for`]`(src.len())` words; the words past that are left
/// alone. Returns `false` when some byte of `src` is greater than 1 (the packed words are then
/// meaningless).
#[must_use]
pub fn pack_mask(src: &[u8], out: &mut [u64]) -> bool {
    let (blocks, tail) = src.as_chunks::<128>();
    let (pairs, _) = out.as_chunks_mut::<2>();
    let mut pairs = pairs.iter_mut();
    let mut seen = [0u64; 2];
    for (block, pair) in blocks.iter().zip(&mut pairs) {
        let (bits, s) = pack_superblock(block);
        *pair = bits;
        seen[0] |= s[0];
        seen[1] |= s[1];
    }
    if !tail.is_empty() {
        let mut last = [0u8; 128];
        last[..tail.len()].copy_from_slice(tail);
        let (bits, s) = pack_superblock(&last);
        if let Some(pair) = pairs.next() {
            *pair = bits;
        }
        seen[0] |= s[0];
        seen[1] |= s[1];
    }
    (seen[0] | seen[1]) & HIGH_BITS == 0
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

    /// Number of `u64` words per packed mask, `2 * ceil(P / 128)`.
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
        let w = self.words_per_mask();
        if out.len() != self.k * w {
            return Err(Error::InvalidParameter {
                argument: "out",
                expected: format!("a buffer of K * 2 * ceil(P / 128) = {} words", self.k * w),
                got: format!("{} words", out.len()),
            });
        }
        if w == 0 {
            return self.check_index(image, 0);
        }
        for (proposal, dst) in out.chunks_exact_mut(w).enumerate() {
            self.pack_proposal(image, proposal, dst)?;
        }
        Ok(())
    }

    /// Validates and packs mask `(image, proposal)` into `out`, exactly `words_per_mask()` words.
    pub fn pack_proposal(&self, image: usize, proposal: usize, out: &mut [u64]) -> Result<()> {
        self.check_index(image, proposal)?;
        let w = self.words_per_mask();
        if out.len() != w {
            return Err(Error::InvalidParameter {
                argument: "out",
                expected: format!("a buffer of 2 * ceil(P / 128) = {w} words"),
                got: format!("{} words", out.len()),
            });
        }
        let start = (image * self.k + proposal) * self.p;
        let src = self.data.get(start..start + self.p).unwrap_or(&[]);
        if pack_mask(src, out) {
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
            let (block, offset) = (q / 128, q % 128);
            let (shift, lane, byte) = (offset / 16, (offset % 16) / 8, offset % 8);
            if v == 1 {
                out[2 * block + lane] |= 1 << (8 * byte + shift);
            }
        }
        out
    }

    #[test]
    fn pack_matches_naive_for_all_lengths() {
        for len in 0..400 {
            let src: Vec<u8> = (0..len).map(|i| u8::from((i * 7 + len) % 3 == 0)).collect();
            let mut out = vec![u64::MAX; words_for(len)];
            assert!(pack_mask(&src, &mut out));
            assert_eq!(out, naive_pack(&src), "len {len}");
        }
    }

    #[test]
    fn pack_rejects_every_non_binary_value_at_every_position() {
        for len in [1usize, 7, 8, 63, 64, 65, 127, 128, 130, 300] {
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
