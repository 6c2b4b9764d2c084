//! x86-64 micro kernels for [`super::linear::gemm`]: AVX-512F, AVX-512 BF16 and
//! AVX2+FMA(+F16C).
//!
//! Only `linear` calls these, and only after checking the CPU has the features (`gemm`
//! checks its [`super::isa::Isa`], the bf16 path `avx512bf16` as well), which is what makes
//! the `unsafe` calls sound. The AVX-512 tile reads x repacked k-major (`a[k·R + r]`, see
//! `linear::gemm_packed_a`), the AVX2 one reads rows as they are. A tile keeps
//! `R × 32` f32 accumulators in registers (AVX-512: R ≤ 14, two zmm per row, 28 in all;
//! AVX2: R ≤ 3, four ymm per row), initialised to the bias. Each step over `k` widens one
//! panel row (32 weights) once and multiplies it by a broadcast of each row's `x[r][k]`
//! (the broadcast folds into the FMA as a memory operand). Stores are masked (AVX-512) or go
//! through a small buffer (AVX2) when the panel is the partial last one. The bf16 tile is
//! the same shape over pairs of k: `vdpbf16ps` multiplies a broadcast pair of activations by
//! 16 columns' pairs of weights and adds both products into each f32 lane.

use std::arch::x86_64::*;

use super::linear::{Weight, NR};

/// Call `$kernel::<R>` for the runtime row count `$rows` (1..=$max).
macro_rules! by_rows {
    ($rows:expr, $kernel:ident, $args:tt, [$($r:literal)*]) => {
        match $rows {
            $($r => $kernel::<W, $r> $args,)*
            _ => unreachable!("tile rows out of range"),
        }
    };
}

/// # Safety
/// The CPU must support AVX-512F; `a` holds `rows × k` *k-major* (`a[kk·rows + r]`, as
/// `linear::gemm_packed_a` repacks it), `panel` `k × NR`, `bias` `NR`
/// values, `c` at least `(rows-1)·ldc + cols`; `1 <= rows <= 14`, `cols <= NR`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn avx512_tile<W: Weight>(
    a: &[f32],
    rows: usize,
    k: usize,
    panel: &[W],
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
) {
    let (a, w, b, c) = (a.as_ptr(), panel.as_ptr(), bias.as_ptr(), c.as_mut_ptr());
    // SAFETY: forwarded from this function's contract.
    unsafe {
        by_rows!(rows, avx512_kernel, (a, k, w, b, c, ldc, cols), [1 2 3 4 5 6 7 8 9 10 11 12 13 14])
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn avx512_kernel<W: Weight, const R: usize>(
    a: *const f32,
    k: usize,
    w: *const W,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    // SAFETY (whole body): every offset stays inside the extents `avx512_tile` documents.
    unsafe {
        let b0 = _mm512_loadu_ps(bias);
        let b1 = _mm512_loadu_ps(bias.add(16));
        let mut lo = [b0; R];
        let mut hi = [b1; R];
        for kk in 0..k {
            let wp = w.add(kk * NR);
            let w0 = W::load16(wp);
            let w1 = W::load16(wp.add(16));
            for r in 0..R {
                let x = _mm512_set1_ps(*a.add(kk * R + r));
                lo[r] = _mm512_fmadd_ps(x, w0, lo[r]);
                hi[r] = _mm512_fmadd_ps(x, w1, hi[r]);
            }
        }
        let m0: __mmask16 = if cols >= 16 {
            0xffff
        } else {
            (1u16 << cols) - 1
        };
        let m1: __mmask16 = if cols >= 32 {
            0xffff
        } else if cols > 16 {
            (1u16 << (cols - 16)) - 1
        } else {
            0
        };
        for r in 0..R {
            let out = c.add(r * ldc);
            _mm512_mask_storeu_ps(out, m0, lo[r]);
            _mm512_mask_storeu_ps(out.add(16), m1, hi[r]);
        }
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C; extents as for [`avx512_tile`], `1 <= rows <= 3`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_tile<W: Weight>(
    a: &[f32],
    rows: usize,
    k: usize,
    panel: &[W],
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
) {
    let (a, w, b, c) = (a.as_ptr(), panel.as_ptr(), bias.as_ptr(), c.as_mut_ptr());
    // SAFETY: forwarded from this function's contract.
    unsafe { by_rows!(rows, avx2_kernel, (a, k, w, b, c, ldc, cols), [1 2 3]) }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn avx2_kernel<W: Weight, const R: usize>(
    a: *const f32,
    k: usize,
    w: *const W,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    // SAFETY (whole body): every offset stays inside the extents `avx2_tile` documents.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        for row in acc.iter_mut() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(bias.add(8 * j));
            }
        }
        for kk in 0..k {
            let wp = w.add(kk * NR);
            for j in 0..4 {
                let wj = W::load8(wp.add(8 * j));
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(*a.add(r * k + kk));
                    row[j] = _mm256_fmadd_ps(x, wj, row[j]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let out = c.add(r * ldc);
            if cols == NR {
                for (j, v) in row.iter().enumerate() {
                    _mm256_storeu_ps(out.add(8 * j), *v);
                }
            } else {
                let mut buf = [0f32; NR];
                for (j, v) in row.iter().enumerate() {
                    _mm256_storeu_ps(buf.as_mut_ptr().add(8 * j), *v);
                }
                std::ptr::copy_nonoverlapping(buf.as_ptr(), out, cols);
            }
        }
    }
}

/// Round `src` to bf16 into `dst` as pairs (`src[2j]` in the low half of `dst[j]`).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 BF16; `dst.len() * 2 >= src.len()`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn to_bf16_pairs(src: &[f32], dst: &mut [u32]) {
    debug_assert!(dst.len() * 2 >= src.len());
    let chunks = src.len() / 32;
    // SAFETY: chunk `i` reads src[32i..32i+32] and writes dst[16i..16i+16], both in bounds.
    unsafe {
        for i in 0..chunks {
            let lo = _mm512_loadu_ps(src.as_ptr().add(32 * i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(32 * i + 16));
            // cvtne2ps puts its *second* operand in the low half of the result.
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(16 * i).cast(), packed);
        }
    }
    for i in chunks * 32..src.len() {
        let b = u32::from(super::half::f32_to_bf16(src[i]));
        dst[i / 2] = (dst[i / 2] & !(0xffff << (16 * (i % 2)))) | (b << (16 * (i % 2)));
    }
}

/// One bf16 tile: `rows × pairs` activation pairs times a `pairs × NR` panel of weight pairs.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 BF16; `a` holds `rows × pairs`, `panel`
/// `pairs × NR`, `bias` `NR` values, `c` at least `(rows-1)·ldc + cols`; `1 <= rows <= 14`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn bf16_tile(
    a: &[u32],
    rows: usize,
    pairs: usize,
    panel: &[u32],
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
) {
    let (a, w, b, c) = (a.as_ptr(), panel.as_ptr(), bias.as_ptr(), c.as_mut_ptr());
    macro_rules! go {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: forwarded from this function's contract.
                $($r => unsafe { bf16_kernel::<$r>(a, pairs, w, b, c, ldc, cols) },)*
                _ => unreachable!("tile rows out of range"),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8 9 10 11 12 13 14)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn bf16_kernel<const R: usize>(
    a: *const u32,
    pairs: usize,
    w: *const u32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    // SAFETY (whole body): every offset stays inside the extents `bf16_tile` documents.
    unsafe {
        let mut lo = [_mm512_loadu_ps(bias); R];
        let mut hi = [_mm512_loadu_ps(bias.add(16)); R];
        for j in 0..pairs {
            let wp = w.add(j * NR);
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp.cast()));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp.add(16).cast()));
            for r in 0..R {
                let x: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + j) as i32));
                lo[r] = _mm512_dpbf16_ps(lo[r], x, w0);
                hi[r] = _mm512_dpbf16_ps(hi[r], x, w1);
            }
        }
        let m0: __mmask16 = if cols >= 16 {
            0xffff
        } else {
            (1u16 << cols) - 1
        };
        let m1: __mmask16 = if cols >= 32 {
            0xffff
        } else if cols > 16 {
            (1u16 << (cols - 16)) - 1
        } else {
            0
        };
        for r in 0..R {
            let out = c.add(r * ldc);
            _mm512_mask_storeu_ps(out, m0, lo[r]);
            _mm512_mask_storeu_ps(out.add(16), m1, hi[r]);
        }
    }
}
