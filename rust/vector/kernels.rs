//! Dot-product kernels over `f32` and `i8` slices, with run-time CPU dispatch.
//!
//! Data flow: callers hand in plain slices; [`SimdLevel::detect`] picks, once per process, the
//! widest instruction set the CPU has (AVX-512, AVX2+FMA, NEON, else the portable scalar
//! loop), and every `*_at(level, ..)` entry point re-checks that the level is really supported
//! before it calls a `#[target_feature]` function, so no safe call can reach an instruction the
//! CPU lacks. The flat index ([`super::flat`]) calls the block kernels ([`scores_f32`],
//! [`scores_i8`]) so the dispatch happens once per block of rows, not once per row. The
//! portable loops live here (they are also the reference the tests hold every SIMD path to);
//! the `#[target_feature]` bodies live in `x86.rs` (AVX2, AVX-512) and `neon.rs`.
//!
//! The int8 path is symmetric per-vector quantization: `x ≈ scale · q` with `q ∈ [-127, 127]`
//! and `scale = max|x| / 127`; an int8·int8 dot accumulates exactly in `i32` (wrapping, as the
//! SIMD adds do, which only matters past 131,072 dimensions) and the caller multiplies by both
//! scales. The SIMD int8 kernels widen to `i16` and use `madd` (x86) or `vmull`+`vpadal`
//! (NEON), which is exact over the whole `i8` range; the `maddubs` trick would be faster per
//! instruction but saturates for `-128`, and these scans are bound by memory bandwidth anyway.
//!
//! Setting `ROUTEGUARD_SIMD=scalar|avx2|avx512|neon` before the first call forces a level (if
//! the CPU supports it), so every path can be tested and benchmarked on one machine.

use std::sync::OnceLock;

use crate::error::{CoreError, CoreResult};

/// The instruction set a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Portable Rust; the compiler may still auto-vectorise it for the baseline target.
    Scalar,
    /// x86-64 AVX2 + FMA (256-bit).
    Avx2,
    /// x86-64 AVX-512 F + BW (512-bit; BW is needed for the int8 widening).
    Avx512,
    /// aarch64 Advanced SIMD (128-bit).
    Neon,
}

impl SimdLevel {
    /// Every level, widest last within each architecture.
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
    ];

    /// The name `simd_level()` reports and `ROUTEGUARD_SIMD` accepts.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Neon => "neon",
        }
    }

    /// The level named `name` (as [`SimdLevel::name`] spells it), if any.
    pub fn parse(name: &str) -> Option<SimdLevel> {
        SimdLevel::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run the level's kernels.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every level this CPU supports (always includes [`SimdLevel::Scalar`]).
    pub fn supported() -> Vec<SimdLevel> {
        SimdLevel::ALL
            .into_iter()
            .filter(|level| level.is_supported())
            .collect()
    }

    /// The level used by default: `ROUTEGUARD_SIMD` if set and supported, else the widest
    /// supported one. Decided once per process.
    pub fn detect() -> SimdLevel {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let forced = std::env::var("ROUTEGUARD_SIMD")
                .ok()
                .and_then(|name| SimdLevel::parse(&name))
                .filter(|level| level.is_supported());
            forced.unwrap_or_else(|| {
                SimdLevel::supported()
                    .last()
                    .copied()
                    .unwrap_or(SimdLevel::Scalar)
            })
        })
    }
}

/// `Σ aᵢ·bᵢ` with the detected level. Both slices should have the same length; in release
/// builds only the common prefix is read.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_at(SimdLevel::detect(), a, b)
}

/// `Σ aᵢ·bᵢ` with the given level, or the scalar loop if this CPU does not support it.
pub fn dot_f32_at(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match level {
        // SAFETY: the guard checked the features the kernel is compiled for.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.is_supported() => unsafe { super::x86::avx512::dot_f32(a, b) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 if level.is_supported() => unsafe { super::x86::avx2::dot_f32(a, b) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon if level.is_supported() => unsafe { super::neon::dot_f32(a, b) },
        _ => scalar::dot_f32(a, b),
    }
}

/// `Σ aᵢ·bᵢ` over int8 with an exact `i32` accumulator, with the detected level.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    dot_i8_at(SimdLevel::detect(), a, b)
}

/// `Σ aᵢ·bᵢ` over int8 with the given level, or the scalar loop if this CPU lacks it.
pub fn dot_i8_at(level: SimdLevel, a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    match level {
        // SAFETY: the guard checked the features the kernel is compiled for.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.is_supported() => unsafe { super::x86::avx512::dot_i8(a, b) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 if level.is_supported() => unsafe { super::x86::avx2::dot_i8(a, b) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon if level.is_supported() => unsafe { super::neon::dot_i8(a, b) },
        _ => scalar::dot_i8(a, b),
    }
}

/// Scores of one query against a block of rows laid out contiguously:
/// `out[r] = query · rows[r·dim .. (r+1)·dim]` with `dim = query.len()`.
pub fn scores_f32(level: SimdLevel, query: &[f32], rows: &[f32], out: &mut [f32]) {
    debug_assert_eq!(rows.len(), out.len() * query.len());
    match level {
        // SAFETY: the guard checked the features the kernel is compiled for.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.is_supported() => unsafe {
            super::x86::avx512::scores_f32(query, rows, out)
        },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 if level.is_supported() => unsafe {
            super::x86::avx2::scores_f32(query, rows, out)
        },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon if level.is_supported() => unsafe {
            super::neon::scores_f32(query, rows, out)
        },
        _ => each_row(query, rows, out, scalar::dot_f32),
    }
}

/// Scores of one quantized query against a block of quantized rows:
/// `out[r] = (query · row_r) · (query_scale · row_scales[r])`.
pub fn scores_i8(
    level: SimdLevel,
    query: &[i8],
    query_scale: f32,
    rows: &[i8],
    row_scales: &[f32],
    out: &mut [f32],
) {
    debug_assert_eq!(rows.len(), out.len() * query.len());
    debug_assert_eq!(row_scales.len(), out.len());
    // One dispatch per block; the raw dots land in `out` and are scaled in a second pass.
    match level {
        // SAFETY: the guard checked the features the kernel is compiled for.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.is_supported() => unsafe {
            super::x86::avx512::dots_i8(query, rows, out)
        },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 if level.is_supported() => unsafe {
            super::x86::avx2::dots_i8(query, rows, out)
        },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon if level.is_supported() => unsafe {
            super::neon::dots_i8(query, rows, out)
        },
        _ => each_row(query, rows, out, |q, row| scalar::dot_i8(q, row) as f32),
    }
    for (score, &scale) in out.iter_mut().zip(row_scales) {
        *score *= query_scale * scale;
    }
}

/// Apply `f(query, row)` to each `query.len()`-wide row of `rows`, writing into `out`.
#[inline(always)]
fn each_row<T: Copy>(query: &[T], rows: &[T], out: &mut [f32], f: impl Fn(&[T], &[T]) -> f32) {
    if query.is_empty() {
        out.fill(0.0);
        return;
    }
    for (row, score) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
        *score = f(query, row);
    }
}

/// Cosine similarity of two vectors of the same dimension, in `[-1, 1]`.
pub fn cosine(a: &[f32], b: &[f32]) -> CoreResult<f32> {
    if a.len() != b.len() {
        return Err(CoreError::InvalidInput(format!(
            "cosine needs vectors of the same dimension, got {} and {}",
            a.len(),
            b.len()
        )));
    }
    let norm_a = checked_norm(a, || "the first vector".to_owned())?;
    let norm_b = checked_norm(b, || "the second vector".to_owned())?;
    let dot = f64::from(dot_f32(a, b));
    Ok((dot / (norm_a * norm_b)).clamp(-1.0, 1.0) as f32)
}

/// The L2 norm of `v`, in `f64` so that no finite `f32` input overflows, after checking that
/// `v` is non-empty, finite and not all zeros. `what` names the vector in the error; it is a
/// closure so that the happy path formats nothing.
pub fn checked_norm(v: &[f32], what: impl FnOnce() -> String) -> CoreResult<f64> {
    if v.is_empty() {
        return Err(CoreError::InvalidInput(format!("{} is empty", what())));
    }
    let mut sum = 0.0f64;
    for (position, &x) in v.iter().enumerate() {
        if !x.is_finite() {
            return Err(CoreError::InvalidInput(format!(
                "{} has a non-finite value ({x}) at position {position}",
                what()
            )));
        }
        sum += f64::from(x) * f64::from(x);
    }
    if sum == 0.0 {
        return Err(CoreError::InvalidInput(format!(
            "{} is all zeros and has no direction to compare by cosine",
            what()
        )));
    }
    Ok(sum.sqrt())
}

/// Write `src / norm` into `dst` (same length), the division done in `f64`.
pub fn scale_into(src: &[f32], norm: f64, dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (f64::from(s) / norm) as f32;
    }
}

/// Quantize `src` into `dst` (same length) symmetrically, returning the scale so that
/// `src[i] ≈ scale · dst[i]`. Codes stay in `[-127, 127]`; an all-zero input gets scale 0.
pub fn quantize_into(src: &[f32], dst: &mut [i8]) -> f32 {
    let max = src.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        dst.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inverse = 127.0 / max;
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (s * inverse).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// The portable fallback, also the reference every SIMD path is tested against.
mod scalar {
    /// Eight independent partial sums, so the baseline target can still vectorise the loop.
    pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 8];
        let mut chunks_a = a.chunks_exact(8);
        let mut chunks_b = b.chunks_exact(8);
        for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
            for lane in 0..8 {
                acc[lane] += ca[lane] * cb[lane];
            }
        }
        let mut sum =
            ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
            sum += x * y;
        }
        sum
    }

    pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        a.iter().zip(b).fold(0i32, |acc, (&x, &y)| {
            acc.wrapping_add(i32::from(x) * i32::from(y))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `Σ|aᵢbᵢ|`, the scale the f32 tolerance is relative to (a dot product with cancellation
    /// has no meaningful relative error of its own).
    fn magnitude(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) * f64::from(y)).abs())
            .sum()
    }

    fn exact_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    }

    fn pair_f32(max_len: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (0..max_len).prop_flat_map(|n| {
            (
                proptest::collection::vec(-100.0f32..100.0, n),
                proptest::collection::vec(-100.0f32..100.0, n),
            )
        })
    }

    fn pair_i8(max_len: usize) -> impl Strategy<Value = (Vec<i8>, Vec<i8>)> {
        (0..max_len).prop_flat_map(|n| {
            (
                proptest::collection::vec(any::<i8>(), n),
                proptest::collection::vec(any::<i8>(), n),
            )
        })
    }

    #[test]
    fn scalar_is_always_supported_and_detect_is_supported() {
        assert!(SimdLevel::Scalar.is_supported());
        assert!(SimdLevel::detect().is_supported());
        assert_eq!(SimdLevel::supported()[0], SimdLevel::Scalar);
        for level in SimdLevel::ALL {
            assert_eq!(SimdLevel::parse(level.name()), Some(level));
        }
        assert_eq!(SimdLevel::parse("AVX2 "), Some(SimdLevel::Avx2));
        assert_eq!(SimdLevel::parse("sse9"), None);
    }

    #[test]
    fn every_tail_length_matches_scalar() {
        // Lengths around every vector width, including the masked AVX-512 tail.
        for n in 0usize..200 {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.37).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.91).collect();
            let qa: Vec<i8> = (0..n).map(|i| (i as i32 * 37 % 256 - 128) as i8).collect();
            let qb: Vec<i8> = (0..n).map(|i| (i as i32 * 91 % 256 - 128) as i8).collect();
            let want = scalar::dot_f32(&a, &b);
            let want_i8 = scalar::dot_i8(&qa, &qb);
            for level in SimdLevel::supported() {
                let got = dot_f32_at(level, &a, &b);
                let tol = 1e-4 * magnitude(&a, &b) + 1e-6;
                assert!(
                    (f64::from(got) - f64::from(want)).abs() <= tol,
                    "{level:?} n={n}: {got} vs {want}"
                );
                assert_eq!(dot_i8_at(level, &qa, &qb), want_i8, "{level:?} n={n}");
            }
        }
    }

    #[test]
    fn int8_extremes_are_exact() {
        let a = vec![-128i8; 1000];
        let b = vec![-128i8; 1000];
        for level in SimdLevel::supported() {
            assert_eq!(dot_i8_at(level, &a, &b), 1000 * 128 * 128, "{level:?}");
        }
    }

    #[test]
    fn cosine_validates_and_clamps() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]).unwrap_or(0.0) - 1.0).abs() < 1e-7);
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0]).unwrap_or(1.0)).abs() < 1e-7);
        assert!((cosine(&[3.0, 4.0], &[-3.0, -4.0]).unwrap_or(0.0) + 1.0).abs() < 1e-7);
        let err = cosine(&[1.0, 2.0], &[1.0]).unwrap_err();
        assert!(err.to_string().contains("got 2 and 1"), "{err}");
        assert!(cosine(&[0.0, 0.0], &[1.0, 0.0])
            .unwrap_err()
            .to_string()
            .contains("all zeros"));
        assert!(cosine(&[f32::NAN, 0.0], &[1.0, 0.0])
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
        assert!(cosine(&[], &[]).is_err());
        // Huge but finite values do not overflow the norm.
        let big = cosine(&[3e38, 3e38], &[3e38, 3e38]).unwrap_or(0.0);
        assert!(big.is_finite());
    }

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        let v: Vec<f32> = (0..384).map(|i| ((i as f32) * 0.173).sin()).collect();
        let mut q = vec![0i8; v.len()];
        let scale = quantize_into(&v, &mut q);
        assert!(q.iter().all(|&c| c != i8::MIN));
        for (&x, &c) in v.iter().zip(&q) {
            assert!((x - scale * f32::from(c)).abs() <= scale * 0.5 + 1e-7);
        }
        let mut zeros = vec![1i8; 3];
        assert_eq!(quantize_into(&[0.0; 3], &mut zeros), 0.0);
        assert_eq!(zeros, vec![0; 3]);
    }

    #[test]
    fn block_scores_match_row_dots() {
        let dim = 37;
        let rows: Vec<f32> = (0..dim * 9)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1)
            .collect();
        let query: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.3).cos()).collect();
        let codes: Vec<i8> = rows.iter().map(|&x| (x * 10.0) as i8).collect();
        let qcodes: Vec<i8> = query.iter().map(|&x| (x * 100.0) as i8).collect();
        let scales: Vec<f32> = (0..9).map(|r| 0.01 * (r + 1) as f32).collect();
        for level in SimdLevel::supported() {
            let mut out = vec![0.0f32; 9];
            scores_f32(level, &query, &rows, &mut out);
            for (r, &s) in out.iter().enumerate() {
                let row = &rows[r * dim..(r + 1) * dim];
                let want = scalar::dot_f32(&query, row);
                assert!((s - want).abs() <= 1e-4 * magnitude(&query, row) as f32);
                assert_eq!(s.to_bits(), dot_f32_at(level, &query, row).to_bits());
            }
            scores_i8(level, &qcodes, 0.5, &codes, &scales, &mut out);
            for (r, &s) in out.iter().enumerate() {
                let raw = scalar::dot_i8(&qcodes, &codes[r * dim..(r + 1) * dim]) as f32;
                assert_eq!(s, raw * (0.5 * scales[r]), "{level:?} row {r}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The multi-row f32 kernels give each row exactly what the one-row kernel gives, so
        /// a score never depends on how a scan grouped or split its rows.
        #[test]
        fn block_scores_equal_row_dots_bit_for_bit(
            (dim, rows, query) in (1usize..200, 0usize..11).prop_flat_map(|(dim, n)| (
                Just(dim),
                proptest::collection::vec(-1.0f32..1.0, n * dim),
                proptest::collection::vec(-1.0f32..1.0, dim),
            ))
        ) {
            let n = rows.len() / dim;
            for level in SimdLevel::supported() {
                let mut out = vec![f32::NAN; n];
                scores_f32(level, &query, &rows, &mut out);
                for (r, &score) in out.iter().enumerate() {
                    let want = dot_f32_at(level, &query, &rows[r * dim..(r + 1) * dim]);
                    prop_assert_eq!(score.to_bits(), want.to_bits(), "{:?} row {}", level, r);
                }
            }
        }

        #[test]
        fn simd_f32_equals_scalar((a, b) in pair_f32(1100)) {
            let want = scalar::dot_f32(&a, &b);
            let tol = 1e-4 * magnitude(&a, &b) + 1e-6;
            prop_assert!((f64::from(want) - exact_dot(&a, &b)).abs() <= tol);
            for level in SimdLevel::supported() {
                let got = dot_f32_at(level, &a, &b);
                prop_assert!(
                    (f64::from(got) - f64::from(want)).abs() <= tol,
                    "{:?}: {} vs scalar {} (n = {})", level, got, want, a.len()
                );
            }
        }

        #[test]
        fn simd_i8_equals_scalar_exactly((a, b) in pair_i8(1100)) {
            let want = scalar::dot_i8(&a, &b);
            let exact: i64 = a.iter().zip(&b).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
            prop_assert_eq!(i64::from(want), exact);
            for level in SimdLevel::supported() {
                prop_assert_eq!(dot_i8_at(level, &a, &b), want, "{:?}", level);
            }
        }

        #[test]
        fn quantized_dot_tracks_f32_dot(
            (a, b) in (1usize..600).prop_flat_map(|n| (
                proptest::collection::vec(-1.0f32..1.0, n),
                proptest::collection::vec(-1.0f32..1.0, n),
            ))
        ) {
            let (mut qa, mut qb) = (vec![0i8; a.len()], vec![0i8; b.len()]);
            let sa = quantize_into(&a, &mut qa);
            let sb = quantize_into(&b, &mut qb);
            let approx = f64::from(dot_i8(&qa, &qb) as f32 * (sa * sb));
            // Each code is off by at most half a step, so the dot is off by at most
            // Σ (|aᵢ|·sb/2 + |bᵢ|·sa/2 + sa·sb/4).
            let bound: f64 = a.iter().zip(&b).map(|(&x, &y)| {
                f64::from(x.abs() * sb / 2.0 + y.abs() * sa / 2.0 + sa * sb / 4.0)
            }).sum::<f64>() + 1e-5;
            prop_assert!((approx - exact_dot(&a, &b)).abs() <= bound);
        }
    }
}
