//! x86-64 kernels: AVX2+FMA and AVX-512, each a `#[target_feature]` copy of the scalar loops.
//!
//! Only `kernels` calls these, and only after `SimdLevel::is_supported` confirmed the CPU has
//! the features, which is what makes the `unsafe` calls sound. Loads are unaligned
//! (`loadu`), bounded by `min(a.len(), b.len())`; tails are a masked load (AVX-512 f32) or a
//! scalar loop. Rows are scored one at a time, front to back: a scan is one sequential stream
//! the prefetchers follow (interleaving several rows per pass to share query loads measured
//! 2.5x slower on a 100k x 384 scan, and no faster in cache).

/// AVX2 + FMA: 4 × 8-lane f32 accumulators; int8 widened to i16 and multiplied with `madd`.
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::vector) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): `i + width <= n`, so every lane read is inside both slices.
        while i + 32 <= n {
            for (j, lane) in acc.iter_mut().enumerate() {
                let off = i + 8 * j;
                let (x, y) =
                    unsafe { (_mm256_loadu_ps(pa.add(off)), _mm256_loadu_ps(pb.add(off))) };
                *lane = _mm256_fmadd_ps(x, y, *lane);
            }
            i += 32;
        }
        while i + 8 <= n {
            let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let total = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = hsum_ps(total);
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum_ps(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let single = _mm_add_ss(pair, _mm_movehdup_ps(pair));
        _mm_cvtss_f32(single)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::vector) unsafe fn scores_f32(query: &[f32], rows: &[f32], out: &mut [f32]) {
        if query.is_empty() {
            out.fill(0.0);
            return;
        }
        for (row, score) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
            *score = unsafe { dot_f32(query, row) };
        }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::vector) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        let mut i = 0;
        // Widen 16 int8 to 16 int16, then `madd` multiplies and adds adjacent pairs into int32:
        // exact for every int8 value (|−128·−128·2| fits easily).
        // SAFETY (all loads): `i + width <= n`, so every byte read is inside both slices.
        while i + 32 <= n {
            let (x0, y0, x1, y1) = unsafe {
                (
                    _mm_loadu_si128(pa.add(i).cast()),
                    _mm_loadu_si128(pb.add(i).cast()),
                    _mm_loadu_si128(pa.add(i + 16).cast()),
                    _mm_loadu_si128(pb.add(i + 16).cast()),
                )
            };
            let p0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(x0), _mm256_cvtepi8_epi16(y0));
            let p1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(x1), _mm256_cvtepi8_epi16(y1));
            acc0 = _mm256_add_epi32(acc0, p0);
            acc1 = _mm256_add_epi32(acc1, p1);
            i += 32;
        }
        if i + 16 <= n {
            let (x, y) = unsafe {
                (
                    _mm_loadu_si128(pa.add(i).cast()),
                    _mm_loadu_si128(pb.add(i).cast()),
                )
            };
            acc0 = _mm256_add_epi32(
                acc0,
                _mm256_madd_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y)),
            );
            i += 16;
        }
        let mut sum = hsum_epi32(_mm256_add_epi32(acc0, acc1));
        for j in i..n {
            sum = sum.wrapping_add(i32::from(a[j]) * i32::from(b[j]));
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum_epi32(v: __m256i) -> i32 {
        let quad = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let pair = _mm_add_epi32(quad, _mm_unpackhi_epi64(quad, quad));
        let single = _mm_add_epi32(pair, _mm_shuffle_epi32::<0b01>(pair));
        _mm_cvtsi128_si32(single)
    }

    /// Raw int8 dots of `query` against each row, as `f32`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::vector) unsafe fn dots_i8(query: &[i8], rows: &[i8], out: &mut [f32]) {
        if query.is_empty() {
            out.fill(0.0);
            return;
        }
        for (row, score) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
            *score = unsafe { dot_i8(query, row) } as f32;
        }
    }
}

/// AVX-512 F (f32) and BW (int8): 4 × 16-lane f32 accumulators, masked tail.
// AVX-512 intrinsics are stable since Rust 1.89; the crate's declared `rust-version` is older,
// so Clippy is told this module needs 1.89 (the toolchain that builds the crate is newer).
#[clippy::msrv = "1.89"]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::vector) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): `i + width <= n`, or the masked load reads only lanes below `n`.
        while i + 64 <= n {
            for (j, lane) in acc.iter_mut().enumerate() {
                let off = i + 16 * j;
                let (x, y) =
                    unsafe { (_mm512_loadu_ps(pa.add(off)), _mm512_loadu_ps(pb.add(off))) };
                *lane = _mm512_fmadd_ps(x, y, *lane);
            }
            i += 64;
        }
        while i + 16 <= n {
            let (x, y) = unsafe { (_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
            acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
            i += 16;
        }
        if i < n {
            // Masked-off lanes are neither read nor faulted on.
            let mask: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
            let (x, y) = unsafe {
                (
                    _mm512_maskz_loadu_ps(mask, pa.add(i)),
                    _mm512_maskz_loadu_ps(mask, pb.add(i)),
                )
            };
            acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
        }
        let total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(total)
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::vector) unsafe fn scores_f32(query: &[f32], rows: &[f32], out: &mut [f32]) {
        if query.is_empty() {
            out.fill(0.0);
            return;
        }
        for (row, score) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
            *score = unsafe { dot_f32(query, row) };
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::vector) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_si512();
        let mut acc1 = _mm512_setzero_si512();
        let mut i = 0;
        // 32 int8 → 32 int16 per load, then pairwise multiply-add into 16 int32 lanes.
        // SAFETY (all loads): `i + width <= n`, so every byte read is inside both slices.
        while i + 64 <= n {
            let (x0, y0, x1, y1) = unsafe {
                (
                    _mm256_loadu_si256(pa.add(i).cast()),
                    _mm256_loadu_si256(pb.add(i).cast()),
                    _mm256_loadu_si256(pa.add(i + 32).cast()),
                    _mm256_loadu_si256(pb.add(i + 32).cast()),
                )
            };
            let p0 = _mm512_madd_epi16(_mm512_cvtepi8_epi16(x0), _mm512_cvtepi8_epi16(y0));
            let p1 = _mm512_madd_epi16(_mm512_cvtepi8_epi16(x1), _mm512_cvtepi8_epi16(y1));
            acc0 = _mm512_add_epi32(acc0, p0);
            acc1 = _mm512_add_epi32(acc1, p1);
            i += 64;
        }
        if i + 32 <= n {
            let (x, y) = unsafe {
                (
                    _mm256_loadu_si256(pa.add(i).cast()),
                    _mm256_loadu_si256(pb.add(i).cast()),
                )
            };
            acc0 = _mm512_add_epi32(
                acc0,
                _mm512_madd_epi16(_mm512_cvtepi8_epi16(x), _mm512_cvtepi8_epi16(y)),
            );
            i += 32;
        }
        let mut sum = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
        for j in i..n {
            sum = sum.wrapping_add(i32::from(a[j]) * i32::from(b[j]));
        }
        sum
    }

    /// Raw int8 dots of `query` against each row, as `f32`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::vector) unsafe fn dots_i8(query: &[i8], rows: &[i8], out: &mut [f32]) {
        if query.is_empty() {
            out.fill(0.0);
            return;
        }
        for (row, score) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
            *score = unsafe { dot_i8(query, row) } as f32;
        }
    }
}
