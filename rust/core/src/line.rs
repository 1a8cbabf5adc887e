//! The innermost packing kernels: one 64-byte line of 0/1 bytes to one `u64` word
//! ([`pack_line`]), or of labels to one word per foreground class ([`label_planes`]).
//!
//! Bit `i` of a word is byte `i` of the line. On x86-64 this is four 16-byte loads, a shift
//! and a `pmovmskb` each (SSE2, which every x86-64 CPU has), reached through the safe wrappers of
//! [`safe_arch`] so that this crate stays free of `unsafe`; the same crate gives the software
//! prefetch that keeps the bank streaming from memory while a thread packs or counts. Elsewhere a
//! portable multiply gathers eight bytes at a time and prefetching is left to the hardware.
//!
//! Each call also returns the OR of the line's bytes ([`Seen`]), folded by the caller over a
//! whole mask and tested once with [`Seen::is_binary`]: the value check costs one OR per load.
//! For labels the check is a byte maximum, skipped on lines of zeros.

/// Bytes per packed word: one cache line.
pub const LINE: usize = 64;

#[cfg(target_arch = "x86_64")]
mod imp {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, m128i, max_u8_m128i,
        move_mask_i8_m128i, prefetch_t0, set_splat_i8_m128i, shl_imm_u16_m128i,
    };

    use super::LINE;

    /// The OR of every byte seen so far, sixteen byte lanes wide (zero: nothing seen yet).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Seen(m128i);

    impl Seen {
        /// Folds in another OR of bytes.
        #[must_use]
        pub fn or(self, other: Self) -> Self {
            Self(bitor_m128i(self.0, other.0))
        }

        /// The folded lanes as one word (the two halves combined by OR).
        pub fn word(self) -> u64 {
            let [lo, hi]: [u64; 2] = self.0.into();
            lo | hi
        }

        /// Whether every byte folded in was 0 or 1.
        pub fn is_binary(self) -> bool {
            super::all_binary(self.word())
        }
    }

    /// Packs one line (byte `i` to bit `i`); also returns the OR of its bytes.
    ///
    /// A left shift by 7 within 16-bit lanes moves bit 0 of every byte to that byte's top bit
    /// (the bits shifted across bytes are zero for 0/1 bytes); `pmovmskb` gathers the top bits.
    /// A line of zeros (background) stops after the OR and one compare.
    #[inline]
    pub fn pack_line(line: &[u8; LINE]) -> (u64, Seen) {
        let (chunks, _) = line.as_chunks::<16>();
        let v: [m128i; 4] = std::array::from_fn(|i| load_unaligned_m128i(&chunks[i]));
        let seen = bitor_m128i(bitor_m128i(v[0], v[1]), bitor_m128i(v[2], v[3]));
        if move_mask_i8_m128i(cmp_eq_mask_i8_m128i(seen, m128i::default())) == 0xFFFF {
            return (0, Seen(seen));
        }
        let mask = |x: m128i| u64::from(move_mask_i8_m128i(shl_imm_u16_m128i::<7>(x)) as u16);
        let bits = mask(v[0]) | mask(v[1]) << 16 | mask(v[2]) << 32 | mask(v[3]) << 48;
        (bits, Seen(seen))
    }

    /// The foreground planes of a line of labels: calls `put(c, bits)` for `c` in
    /// `1..classes`, bit `i` set where byte `i` equals `c` (plane 0 is implied: the bits of no
    /// other plane); returns whether every byte is below `classes` (at most 256).
    ///
    /// A line of zeros (background, most of a label map) costs an OR of the four 16-byte loads
    /// and one compare. Otherwise the check is a byte maximum, and each plane a byte compare and
    /// a `pmovmskb` per load.
    #[inline]
    pub fn label_planes(
        line: &[u8; LINE],
        classes: usize,
        mut put: impl FnMut(usize, u64),
    ) -> bool {
        let (chunks, _) = line.as_chunks::<16>();
        let v: [m128i; 4] = std::array::from_fn(|i| load_unaligned_m128i(&chunks[i]));
        let or = bitor_m128i(bitor_m128i(v[0], v[1]), bitor_m128i(v[2], v[3]));
        let zero = m128i::default();
        if move_mask_i8_m128i(cmp_eq_mask_i8_m128i(or, zero)) == 0xFFFF {
            (1..classes).for_each(|c| put(c, 0));
            return true;
        }
        let top = set_splat_i8_m128i(classes.clamp(1, 256).wrapping_sub(1) as u8 as i8);
        let max = max_u8_m128i(max_u8_m128i(v[0], v[1]), max_u8_m128i(v[2], v[3]));
        let valid = move_mask_i8_m128i(cmp_eq_mask_i8_m128i(max_u8_m128i(max, top), top)) == 0xFFFF;
        for c in 1..classes.min(256) {
            let splat = set_splat_i8_m128i(c as u8 as i8);
            let mask =
                |x: m128i| u64::from(move_mask_i8_m128i(cmp_eq_mask_i8_m128i(x, splat)) as u16);
            put(
                c,
                mask(v[0]) | mask(v[1]) << 16 | mask(v[2]) << 32 | mask(v[3]) << 48,
            );
        }
        valid
    }

    /// Asks for `line` to be brought into the caches; never faults, never blocks.
    #[inline]
    pub fn prefetch(line: &[u8; LINE]) {
        prefetch_t0(line);
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub use super::portable::{label_planes, pack_line, Seen};
    use super::LINE;

    /// No software prefetch on this target: the hardware prefetcher follows the stream.
    #[inline]
    pub fn prefetch(_line: &[u8; LINE]) {}
}

/// The portable kernel: the x86-64 build uses it only in tests, as a second implementation.
#[cfg_attr(target_arch = "x86_64", cfg(test))]
mod portable {
    use super::LINE;

    /// The OR of every byte seen so far, eight byte lanes wide (zero: nothing seen yet).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Seen(u64);

    impl Seen {
        /// Folds in another OR of bytes.
        #[must_use]
        pub fn or(self, other: Self) -> Self {
            Self(self.0 | other.0)
        }

        /// The folded lanes as one word.
        pub fn word(self) -> u64 {
            self.0
        }

        /// Whether every byte folded in was 0 or 1.
        pub fn is_binary(self) -> bool {
            super::all_binary(self.word())
        }
    }

    /// Byte `i` of a word of 0/1 bytes lands on bit `56 + i` of the product (no two partial
    /// products meet, so there are no carries), and the shift brings it down to bit `i`.
    const GATHER: u64 = 0x0102_0408_1020_4080;

    /// Packs one line (byte `i` to bit `i`); also returns the OR of its bytes.
    #[inline]
    pub fn pack_line(line: &[u8; LINE]) -> (u64, Seen) {
        let (loads, _) = line.as_chunks::<8>();
        let (mut bits, mut seen) = (0u64, 0u64);
        for (j, load) in loads.iter().enumerate() {
            let x = u64::from_le_bytes(*load);
            bits |= (x.wrapping_mul(GATHER) >> 56) << (8 * j);
            seen |= x;
        }
        (bits, Seen(seen))
    }

    /// Every byte but its top bit.
    const LOW_SEVEN: u64 = 0x7F7F_7F7F_7F7F_7F7F;

    /// The foreground planes of a line of labels (see the x86-64 kernel).
    ///
    /// Per eight bytes `x` and class `c`, `y = x ^ splat(c)` is zero exactly in the bytes equal to
    /// `c`; `!(((y & 0x7F..) + 0x7F..) | y | 0x7F..)` has the top bit of exactly those bytes set
    /// (no carry crosses a byte), and the multiply of [`pack_line`] gathers them.
    #[inline]
    pub fn label_planes(
        line: &[u8; LINE],
        classes: usize,
        mut put: impl FnMut(usize, u64),
    ) -> bool {
        let (loads, _) = line.as_chunks::<8>();
        let words: [u64; 8] = std::array::from_fn(|j| u64::from_le_bytes(loads[j]));
        let valid = line.iter().all(|&v| usize::from(v) < classes);
        for c in 1..classes.min(256) {
            let splat = (c as u64).wrapping_mul(0x0101_0101_0101_0101);
            let mut bits = 0u64;
            for (j, &x) in words.iter().enumerate() {
                let y = x ^ splat;
                let zero = !(((y & LOW_SEVEN) + LOW_SEVEN) | y | LOW_SEVEN);
                bits |= ((zero >> 7).wrapping_mul(GATHER) >> 56) << (8 * j);
            }
            put(c, bits);
        }
        valid
    }
}

pub use imp::{label_planes, pack_line, prefetch, Seen};

/// Whether a folded OR of bytes ([`Seen::word`]) comes from bytes that were all 0 or 1.
fn all_binary(word: u64) -> bool {
    /// Every bit but the lowest of each byte.
    const HIGH_BITS: u64 = 0xFEFE_FEFE_FEFE_FEFE;
    word & HIGH_BITS == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(line: &[u8; LINE]) -> u64 {
        line.iter()
            .enumerate()
            .map(|(i, &v)| u64::from(v) << i)
            .sum()
    }

    fn lines() -> Vec<[u8; LINE]> {
        let mut g = crate::rng::SplitMix64::new(3);
        let mut out = vec![[0u8; LINE], [1u8; LINE]];
        for density in [1, 8, 32, 56, 63] {
            for _ in 0..50 {
                out.push(std::array::from_fn(|_| u8::from(g.below(64) < density)));
            }
        }
        out
    }

    #[test]
    fn both_kernels_pack_byte_i_to_bit_i() {
        for line in lines() {
            let (bits, seen) = pack_line(&line);
            assert_eq!(bits, naive(&line));
            assert!(seen.is_binary());
            let (bits, seen) = portable::pack_line(&line);
            assert_eq!(bits, naive(&line));
            assert!(seen.is_binary());
        }
    }

    #[test]
    fn both_kernels_split_labels_into_foreground_planes() {
        let mut g = crate::rng::SplitMix64::new(5);
        let mut lines: Vec<[u8; LINE]> = vec![[0; LINE], [1; LINE], [255; LINE]];
        for bound in [2u64, 3, 7, 256] {
            for sparse in [false, true] {
                lines.extend((0..30).map(|_| {
                    std::array::from_fn(|_| {
                        let keep = !sparse || g.below(16) == 0;
                        if keep {
                            g.below(bound) as u8
                        } else {
                            0
                        }
                    })
                }));
            }
        }
        for line in lines {
            for classes in [1usize, 2, 3, 6, 255, 256] {
                let expected: Vec<u64> = (0..classes)
                    .map(|c| {
                        let hits = line
                            .iter()
                            .enumerate()
                            .filter(|(_, &v)| usize::from(v) == c);
                        hits.map(|(i, _)| 1u64 << i).sum()
                    })
                    .collect();
                let valid = line.iter().all(|&v| usize::from(v) < classes);
                let mut got = vec![u64::MAX; classes];
                got[0] = expected[0];
                let ok = label_planes(&line, classes, |c, bits| got[c] = bits);
                assert_eq!((&got, ok), (&expected, valid), "{classes} {line:?}");
                let mut got = vec![u64::MAX; classes];
                got[0] = expected[0];
                let ok = portable::label_planes(&line, classes, |c, bits| got[c] = bits);
                assert_eq!((&got, ok), (&expected, valid), "portable, {classes}");
            }
        }
    }

    #[test]
    fn both_kernels_flag_every_non_binary_byte() {
        for pos in 0..LINE {
            for value in [2u8, 3, 0x7F, 0x80, 0xFE, 0xFF] {
                let mut line = [1u8; LINE];
                line[pos] = value;
                assert!(!pack_line(&line).1.is_binary(), "pos {pos} value {value}");
                let folded = Seen::default()
                    .or(pack_line(&[0; LINE]).1)
                    .or(pack_line(&line).1);
                assert!(!folded.is_binary());
                let seen = portable::pack_line(&line).1;
                assert!(!portable::Seen::default().or(seen).is_binary());
            }
        }
    }
}
