//! Classifies a 64-byte block of JSON text into bit masks (one bit per byte) of quotes,
//! structural characters and the bytes that send the scanner to its exact path: the one place in
//! the crate allowed `unsafe`, for the SSE2 intrinsics that do it 16 bytes per instruction.
//!
//! Audit notes: `unsafe` here only calls `core::arch::x86_64` SSE2 intrinsics. SSE2 is part of
//! the x86_64 baseline (every x86_64 CPU has it; the module only compiles the SSE2 version when
//! `target_feature = "sse2"` is on, which it is for every x86_64 target), so the target-feature
//! precondition always holds. No pointer is read: each 16-byte vector is built from two `u64`s
//! read with safe slice code (`_mm_set_epi64x`), which the compiler turns into one load. Other
//! targets use [`classify_portable`], which the tests also compare with the SSE2 version on
//! random and adversarial blocks.

/// The masks of one block; bit `i` stands for byte `i` of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Masks {
    /// `"`.
    pub quote: u64,
    /// `{ } [ ] : ,`.
    pub structural: u64,
    /// ` ` (allowed inside strings only on the fast path).
    pub space: u64,
    /// `\` or a byte below 0x20: escapes, JSON whitespace other than space, control characters.
    /// The fast path leaves any frame that has one to the exact scanner.
    pub bail: u64,
    /// Bytes >= 0x80 (the frame needs a UTF-8 check).
    pub high: u64,
}

/// The masks of `block`.
#[inline(always)]
pub(super) fn classify(block: &[u8; 64]) -> Masks {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        sse2::classify(block)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        classify_portable(block)
    }
}

/// Byte by byte: the reference, and the version for targets without SSE2.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
pub(super) fn classify_portable(block: &[u8; 64]) -> Masks {
    let mut m = Masks {
        quote: 0,
        structural: 0,
        space: 0,
        bail: 0,
        high: 0,
    };
    for (i, &c) in block.iter().enumerate() {
        let bit = 1u64 << i;
        if c == b'"' {
            m.quote |= bit;
        }
        if matches!(c, b'{' | b'}' | b'[' | b']' | b':' | b',') {
            m.structural |= bit;
        }
        if c == b' ' {
            m.space |= bit;
        }
        if c == b'\\' || c < 0x20 {
            m.bail |= bit;
        }
        if c >= 0x80 {
            m.high |= bit;
        }
    }
    m
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[allow(unsafe_code)]
mod sse2 {
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };

    use super::Masks;

    /// Per 16-byte chunk: quote, structural, space and bail lanes as 16-bit masks.
    #[inline(always)]
    fn chunk(c: &[u8; 16]) -> (u64, u64, u64, u64, u64) {
        let (lo, hi) = c.split_at(8);
        let lo = u64::from_le_bytes(lo.try_into().unwrap_or_default()) as i64;
        let hi = u64::from_le_bytes(hi.try_into().unwrap_or_default()) as i64;
        // SAFETY: SSE2 intrinsics without memory access; SSE2 is enabled for this target (the
        // module's cfg), which is the only precondition of these target-feature functions.
        unsafe {
            let v: __m128i = _mm_set_epi64x(hi, lo);
            let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
            let quote = eq(b'"');
            // `[` | 0x20 = `{` and `]` | 0x20 = `}`; no other byte maps to either.
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let brackets = _mm_or_si128(
                _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8)),
                _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8)),
            );
            let structural = _mm_or_si128(brackets, _mm_or_si128(eq(b':'), eq(b',')));
            let space = eq(b' ');
            // Unsigned v <= 0x1f: min(v, 0x1f) == v.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            let bail = _mm_or_si128(control, eq(b'\\'));
            let mask = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16);
            (
                mask(quote),
                mask(structural),
                mask(space),
                mask(bail),
                mask(v),
            )
        }
    }

    #[inline(always)]
    pub(super) fn classify(block: &[u8; 64]) -> Masks {
        let (chunks, _) = block.as_chunks::<16>();
        let mut m = Masks {
            quote: 0,
            structural: 0,
            space: 0,
            bail: 0,
            high: 0,
        };
        for (k, c) in chunks.iter().enumerate() {
            let (q, s, sp, b, h) = chunk(c);
            let shift = 16 * k as u32;
            m.quote |= q << shift;
            m.structural |= s << shift;
            m.space |= sp << shift;
            m.bail |= b << shift;
            m.high |= h << shift;
        }
        m
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_byte_value_in_every_lane() {
        for b in 0..=255u8 {
            for lane in [0, 1, 15, 16, 31, 47, 48, 63] {
                let mut block = [b'a'; 64];
                block[lane] = b;
                assert_eq!(classify(&block), classify_portable(&block), "byte {b:#x} lane {lane}");
            }
        }
    }

    proptest! {
        #[test]
        fn simd_matches_portable(
            block in prop::array::uniform32(prop::sample::select(
                b"\"\\{}[]:, \t\n\r\x00\x1f\x20\x7f\x80\xffa0-.eE".to_vec()))
                .prop_flat_map(|a| (Just(a), prop::array::uniform32(any::<u8>())))
        ) {
            let (a, b) = block;
            let mut full = [0u8; 64];
            full[..32].copy_from_slice(&a);
            full[32..].copy_from_slice(&b);
            prop_assert_eq!(classify(&full), classify_portable(&full));
            full.reverse();
            prop_assert_eq!(classify(&full), classify_portable(&full));
        }
    }
}
