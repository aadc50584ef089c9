//! Sixteen bytes of a body's text looked at together: where the next quote, backslash or
//! control character is, which bytes lie past ASCII and which continue a character — each as
//! one bit a byte. On x86-64 through SSE2, part of the architecture itself (a handful of
//! instructions for all sixteen, through `safe_arch`'s safe wrappers); elsewhere byte by byte.

#[cfg(target_arch = "x86_64")]
pub use sse2::{Block, Lanes};

#[cfg(not(target_arch = "x86_64"))]
pub use portable::{Block, Lanes};

/// The bits of a block's bytes below byte `k` (≤ 31).
pub fn below(k: usize) -> u32 {
    (1u32 << (k & 31)) - 1
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use safe_arch::{
        add_i64_m128i, bitor_m128i, cmp_eq_mask_i8_m128i, cmp_lt_mask_i8_m128i, m128i,
        min_u8_m128i, move_mask_i8_m128i, set_splat_i8_m128i, sum_of_u8_abs_diff_m128i,
    };

    #[derive(Clone, Copy)]
    pub struct Block(m128i);

    impl Block {
        #[inline(always)]
        pub fn load(b: &[u8; 16]) -> Self {
            Self(m128i::from(*b))
        }

        /// A quote, a backslash or a control character (< 0x20).
        #[inline(always)]
        pub fn stops(self) -> u32 {
            let v = self.0;
            let quote = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'"' as i8));
            let backslash = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'\\' as i8));
            let control = cmp_eq_mask_i8_m128i(min_u8_m128i(v, set_splat_i8_m128i(0x1F)), v);
            mask(bitor_m128i(bitor_m128i(quote, backslash), control))
        }

        /// A byte past ASCII (its top bit set).
        #[inline(always)]
        pub fn high(self) -> u32 {
            mask(self.0)
        }

        /// A byte that continues a character (`0b10xx_xxxx`: below -64 as a signed byte).
        #[inline(always)]
        pub fn continuation(self) -> u32 {
            mask(cmp_lt_mask_i8_m128i(self.0, set_splat_i8_m128i(-64)))
        }
    }

    #[inline(always)]
    fn mask(v: m128i) -> u32 {
        // The sign bits of sixteen bytes: 0 ..= 0xFFFF.
        move_mask_i8_m128i(v).cast_unsigned()
    }

    /// The bytes past ASCII and the continuing bytes of whole blocks, summed in two 64-bit
    /// lanes each (`psadbw` of the 0 / 0xFF marks: 255 a byte, divided out at the end).
    #[derive(Clone, Copy, Default)]
    pub struct Lanes {
        high: m128i,
        continuation: m128i,
    }

    impl Lanes {
        #[inline(always)]
        pub fn add(&mut self, b: Block) {
            let zero = m128i::default();
            let sum = |marks| sum_of_u8_abs_diff_m128i(marks, zero);
            self.high = add_i64_m128i(self.high, sum(cmp_lt_mask_i8_m128i(b.0, zero)));
            self.continuation = add_i64_m128i(
                self.continuation,
                sum(cmp_lt_mask_i8_m128i(b.0, set_splat_i8_m128i(-64))),
            );
        }

        /// (bytes past ASCII, continuing bytes).
        pub fn sums(self) -> (u64, u64) {
            let total = |v: m128i| {
                let [a, b]: [u64; 2] = v.into();
                a.wrapping_add(b) / 255
            };
            (total(self.high), total(self.continuation))
        }
    }
}

/// The same marks a byte at a time: the build for other architectures, and in the tests the
/// oracle the SSE2 one is held to.
#[cfg(any(test, not(target_arch = "x86_64")))]
pub mod portable {
    #[derive(Clone, Copy)]
    pub struct Block([u8; 16]);

    impl Block {
        pub fn load(b: &[u8; 16]) -> Self {
            Self(*b)
        }

        fn marks(self, f: impl Fn(u8) -> bool) -> u32 {
            (0..16).fold(0, |m, k| m | (u32::from(f(self.0[k])) << k))
        }

        pub fn stops(self) -> u32 {
            self.marks(|c| c == b'"' || c == b'\\' || c < 0x20)
        }

        pub fn high(self) -> u32 {
            self.marks(|c| c >= 0x80)
        }

        pub fn continuation(self) -> u32 {
            self.marks(|c| (0x80..0xC0).contains(&c))
        }
    }

    #[derive(Clone, Copy, Default)]
    pub struct Lanes {
        high: u64,
        continuation: u64,
    }

    impl Lanes {
        pub fn add(&mut self, b: Block) {
            self.high += u64::from(b.high().count_ones());
            self.continuation += u64::from(b.continuation().count_ones());
        }

        pub fn sums(self) -> (u64, u64) {
            (self.high, self.continuation)
        }
    }
}

#[cfg(test)]
mod tests {
    /// The SSE2 block held to the portable one, where it is built.
    #[cfg(target_arch = "x86_64")]
    mod sse2_against_portable {
        use super::super::{portable, sse2};
        use proptest::prelude::*;

        /// Bytes around every boundary the marks draw.
        fn byte() -> impl Strategy<Value = u8> {
            prop_oneof![
                any::<u8>(),
                prop::sample::select(vec![
                    0x00, 0x1F, 0x20, b'"', b'\\', 0x7F, 0x80, 0xBF, 0xC0, 0xFF
                ]),
            ]
        }

        proptest! {
            #[test]
            fn sse2_marks_what_the_portable_block_marks(
                blocks in prop::collection::vec(prop::array::uniform16(byte()), 1..40)
            ) {
                let mut fast = sse2::Lanes::default();
                let mut slow = portable::Lanes::default();
                for b in &blocks {
                    let (f, s) = (sse2::Block::load(b), portable::Block::load(b));
                    prop_assert_eq!(f.stops(), s.stops());
                    prop_assert_eq!(f.high(), s.high());
                    prop_assert_eq!(f.continuation(), s.continuation());
                    fast.add(f);
                    slow.add(s);
                }
                prop_assert_eq!(fast.sums(), slow.sums());
            }
        }

        #[test]
        fn lanes_sum_past_what_a_byte_lane_holds() {
            // 300 blocks of continuing bytes: each lane passes 255 marks many times over.
            let mut fast = sse2::Lanes::default();
            for _ in 0..300 {
                fast.add(sse2::Block::load(&[0x80; 16]));
            }
            assert_eq!(fast.sums(), (4800, 4800));
        }
    }
}
