//! x86-64 micro kernels for [`super::linear::gemm`]: AVX-512F, AVX-512 BF16 and
//! AVX2+FMA(+F16C).
//!
//! Only `linear` calls these, and only after checking the CPU has the features (`gemm`
//! checks its [`super::isa::Isa`], the bf16 path `avx512bf16` as well), which is what makes
//! the `unsafe` calls sound. The AVX-512 tile reads x repacked k-major (`a[k·R + r]`, see
//! `linear::gemm_packed_a`), the AVX2 one reads rows as they are. A tile keeps
//! its accumulators in registers, initialised to the bias: AVX-512, R ≤ 14 rows × 32
//! columns (two zmm per row, 28 in all); AVX2, R ≤ 3 rows × 32 columns (four ymm per row)
//! for f32 weights and R ≤ 6 rows × 16 columns, one half of the panel after the other, for
//! f16 ones. Each step over `k` widens the weights of the panel row once and multiplies
//! them by a broadcast of each row's `x[r][k]` (on AVX-512 the broadcast folds into the
//! FMA as a memory operand). Stores are masked (AVX-512) or go
//! through a small buffer (AVX2) when the panel is the partial last one. The bf16 tile is
//! the same shape over pairs of k: `vdpbf16ps` multiplies a broadcast pair of activations by
//! 16 columns' pairs of weights and adds both products into each f32 lane. The int8 tiles
//! (AVX2 `vpmaddwd`, AVX-512 VNNI `vpdpwssd`) are that shape in integers, see `int8`.

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

/// Define the tile `$name(a, rows, k, panel, bias, c, ldc, cols)`, compiled with
/// `$features`, that runs `$kernel::<W, rows>` for the row counts listed.
macro_rules! tile {
    ($(#[$doc:meta])* $name:ident => $kernel:ident, $features:literal, [$($r:literal)*]) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<W: Weight>(
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
            unsafe { by_rows!(rows, $kernel, (a, k, w, b, c, ldc, cols), [$($r)*]) }
        }
    };
}

tile! {
    /// # Safety
    /// The CPU must support AVX-512F; `a` holds `rows × k` *k-major* (`a[kk·rows + r]`, as
    /// `linear::gemm_packed_a` repacks it), `panel` `k × NR`, `bias` `NR`
    /// values, `c` at least `(rows-1)·ldc + cols`; `1 <= rows <= 14`, `cols <= NR`.
    avx512_tile => avx512_kernel, "avx512f,avx2,fma,f16c", [1 2 3 4 5 6 7 8 9 10 11 12 13 14]
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

tile! {
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; extents as for [`avx512_tile`] except that `a`
    /// holds its rows as they are (`a[r·k + kk]`); `1 <= rows <= 3`.
    avx2_tile => avx2_kernel, "avx2,fma,f16c", [1 2 3]
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

tile! {
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; extents as for [`avx512_tile`] except that `a`
    /// holds its rows as they are (`a[r·k + kk]`); `1 <= rows <= 6`.
    avx2_half_tile => avx2_half_kernel, "avx2,fma,f16c", [1 2 3 4 5 6]
}

/// The panel in two halves of 16 columns, each a full pass over `k` with `R × 2` ymm
/// accumulators (12 at R = 6, leaving registers for two weight vectors and a broadcast):
/// each weight vector is widened once and used by up to 6 rows, twice the rows of the
/// 32-column tile, which is what pays for f16 weights (one `vcvtph2ps` per 6 FMAs instead
/// of per 3; MiniLM end to end on Zen 4 held to AVX2: 10 tokens 4.0-4.2 -> 3.2-3.3 ms, 63
/// tokens 31.4-31.9 -> 15.2-15.3 ms). With f32 weights there is nothing to widen and the
/// 32-column tile is faster (GEMMs at 10 rows: 2.6 ms against 3.3).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn avx2_half_kernel<W: Weight, const R: usize>(
    a: *const f32,
    k: usize,
    w: *const W,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    const HALF: usize = NR / 2;
    // SAFETY (whole body): every offset stays inside the extents `avx2_half_tile` documents.
    unsafe {
        for half in 0..2 {
            let first = half * HALF;
            if first >= cols {
                break;
            }
            let b0 = _mm256_loadu_ps(bias.add(first));
            let b1 = _mm256_loadu_ps(bias.add(first + 8));
            let mut lo = [b0; R];
            let mut hi = [b1; R];
            for kk in 0..k {
                let wp = w.add(kk * NR + first);
                let w0 = W::load8(wp);
                let w1 = W::load8(wp.add(8));
                for r in 0..R {
                    let x = _mm256_set1_ps(*a.add(r * k + kk));
                    lo[r] = _mm256_fmadd_ps(x, w0, lo[r]);
                    hi[r] = _mm256_fmadd_ps(x, w1, hi[r]);
                }
            }
            let n = (cols - first).min(HALF);
            for r in 0..R {
                let out = c.add(r * ldc + first);
                if n == HALF {
                    _mm256_storeu_ps(out, lo[r]);
                    _mm256_storeu_ps(out.add(8), hi[r]);
                } else {
                    let mut buf = [0f32; HALF];
                    _mm256_storeu_ps(buf.as_mut_ptr(), lo[r]);
                    _mm256_storeu_ps(buf.as_mut_ptr().add(8), hi[r]);
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), out, n);
                }
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

/// One int8 tile: `rows` rows of i16 activation pairs (`a`, `rows × pairs`) times one panel
/// of i8 weight pairs (`pairs × NR × 2`, see `int8::pack`), each 16-column half in turn:
/// `vpmovsxbw` widens 8 columns' pairs to i16 once per step and `vpmaddwd` multiplies them
/// by each row's broadcast pair into i32 lanes (exact: see `int8`). The epilogue computes
/// `acc · (sx[r] · sw[c]) + b[c]` with a separate multiply and add, as `int8::scalar_tile`.
///
/// # Safety
/// The CPU must support AVX2; `a` holds `rows × pairs`, `panel` `pairs × NR × 2`, `sx`
/// `rows`, `sw` and `bias` `NR` values, `c` at least `(rows-1)·ldc + cols`;
/// `1 <= rows <= 6`, `cols <= NR`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn int8_tile(
    a: &[u32],
    rows: usize,
    pairs: usize,
    panel: &[i8],
    sx: &[f32],
    sw: &[f32],
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
) {
    let (a, w, c) = (a.as_ptr(), panel.as_ptr(), c.as_mut_ptr());
    let (sx, sw, b) = (sx.as_ptr(), sw.as_ptr(), bias.as_ptr());
    macro_rules! go {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: forwarded from this function's contract.
                $($r => unsafe { int8_kernel::<$r>(a, pairs, w, sx, sw, b, c, ldc, cols) },)*
                _ => unreachable!("tile rows out of range"),
            }
        };
    }
    go!(1 2 3 4 5 6)
}

/// Pairs of k (64-byte lines of an int8 panel) the AVX-512 VNNI tile prefetches ahead.
const PREFETCH: usize = 8;

/// Pairs of k the AVX2 int8 tile prefetches ahead: 4 KB, a third of a K = 384 panel. At 8
/// lines the products ran measurably slower over the whole model's weights than over one
/// layer's (~11 MB against a 512 KB L2: each panel's first pass reads L3 or memory); the
/// gain is flat from 48 to 128 lines (docs/performance.md, "The AVX2 path and int8").
/// Measured on Zen 3 only, so the VNNI tile keeps `PREFETCH`.
const AVX2_PREFETCH: usize = 64;

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn int8_kernel<const R: usize>(
    a: *const u32,
    pairs: usize,
    w: *const i8,
    sx: *const f32,
    sw: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    const HALF: usize = NR / 2;
    // SAFETY (whole body): every offset stays inside the extents `int8_tile` documents.
    unsafe {
        for half in 0..2 {
            let first = half * HALF;
            if first >= cols {
                break;
            }
            let mut lo = [_mm256_setzero_si256(); R];
            let mut hi = [_mm256_setzero_si256(); R];
            for j in 0..pairs {
                let wp = w.add((j * NR + first) * 2);
                if half == 0 {
                    // The first pass over a panel meets its weights cold (a short prompt's
                    // forward pass streams all ~11 MB of them, and a cache search in between
                    // evicts them): fetch the line AVX2_PREFETCH pairs ahead. A hint, so
                    // reading past the panel's end (into the next one, or beyond) is harmless.
                    _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(AVX2_PREFETCH * NR * 2).cast());
                }
                let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.cast()));
                let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(16).cast()));
                for r in 0..R {
                    let x = _mm256_set1_epi32(*a.add(r * pairs + j) as i32);
                    lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(x, w0));
                    hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(x, w1));
                }
            }
            let (sw0, sw1) = (
                _mm256_loadu_ps(sw.add(first)),
                _mm256_loadu_ps(sw.add(first + 8)),
            );
            let (b0, b1) = (
                _mm256_loadu_ps(bias.add(first)),
                _mm256_loadu_ps(bias.add(first + 8)),
            );
            let n = (cols - first).min(HALF);
            for r in 0..R {
                let s = _mm256_set1_ps(*sx.add(r));
                let v0 = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(lo[r]), _mm256_mul_ps(s, sw0)),
                    b0,
                );
                let v1 = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(hi[r]), _mm256_mul_ps(s, sw1)),
                    b1,
                );
                let out = c.add(r * ldc + first);
                if n == HALF {
                    _mm256_storeu_ps(out, v0);
                    _mm256_storeu_ps(out.add(8), v1);
                } else {
                    let mut buf = [0f32; HALF];
                    _mm256_storeu_ps(buf.as_mut_ptr(), v0);
                    _mm256_storeu_ps(buf.as_mut_ptr().add(8), v1);
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), out, n);
                }
            }
        }
    }
}

/// [`int8_tile`] on AVX-512 VNNI, over the same panel layout: the whole 32-column panel at
/// once, each pair of k widened by two `vpmovsxbw` (32 bytes → 16 columns' i16 pairs in a
/// zmm) and multiplied into each row's two accumulators by `vpdpwssd` (`acc += x0·w0 +
/// x1·w1` per i32 lane, 32 products per instruction, wrapping like `vpmaddwd` + `vpaddd`
/// and never saturating, so the sums are the scalar tile's exactly; the saturating form is
/// `vpdpwssds`). Up to 14 rows: 28 accumulators, two weight vectors, the broadcast folded
/// into the instruction. The epilogue is [`int8_tile`]'s in 16 lanes, stores masked.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and AVX-512 VNNI; extents as for
/// [`int8_tile`] except `1 <= rows <= 14`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn int8_vnni_tile(
    a: &[u32],
    rows: usize,
    pairs: usize,
    panel: &[i8],
    sx: &[f32],
    sw: &[f32],
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
) {
    let (a, w, c) = (a.as_ptr(), panel.as_ptr(), c.as_mut_ptr());
    let (sx, sw, b) = (sx.as_ptr(), sw.as_ptr(), bias.as_ptr());
    macro_rules! go {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: forwarded from this function's contract.
                $($r => unsafe { int8_vnni_kernel::<$r>(a, pairs, w, sx, sw, b, c, ldc, cols) },)*
                _ => unreachable!("tile rows out of range"),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8 9 10 11 12 13 14)
}

/// `acc += x0·w0 + x1·w1` in each i32 lane (`vpdpwssd`), written as inline assembly:
/// LLVM rewrites `_mm512_dpwssd_epi32` into `vpmaddwd` + `vpaddd` unless the target CPU is
/// tuned as having a fast `vpdpwssd` (found in the disassembly of this crate built for
/// generic x86-64), which would give back the two instructions this tile exists to save.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd(acc: &mut __m512i, x: __m512i, w: __m512i) {
    // SAFETY: the features are this function's contract; registers only.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {x}, {w}",
            acc = inout(zmm_reg) *acc,
            x = in(zmm_reg) x,
            w = in(zmm_reg) w,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn int8_vnni_kernel<const R: usize>(
    a: *const u32,
    pairs: usize,
    w: *const i8,
    sx: *const f32,
    sw: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    // SAFETY (whole body): every offset stays inside the extents `int8_vnni_tile` documents.
    unsafe {
        let mut lo = [_mm512_setzero_si512(); R];
        let mut hi = [_mm512_setzero_si512(); R];
        for j in 0..pairs {
            let wp = w.add(j * NR * 2);
            // As in `int8_kernel`: the panel's weights arrive cold; a hint, so reading
            // past the panel's end is harmless.
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PREFETCH * NR * 2).cast());
            let w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(wp.cast()));
            let w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(wp.add(NR).cast()));
            for r in 0..R {
                let x = _mm512_set1_epi32(*a.add(r * pairs + j) as i32);
                dpwssd(&mut lo[r], x, w0);
                dpwssd(&mut hi[r], x, w1);
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
        let (sw0, sw1) = (_mm512_loadu_ps(sw), _mm512_loadu_ps(sw.add(16)));
        let (b0, b1) = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)));
        for r in 0..R {
            let s = _mm512_set1_ps(*sx.add(r));
            // A multiply, then an add (no FMA), as `int8::scalar_tile` rounds.
            let v0 = _mm512_add_ps(
                _mm512_mul_ps(_mm512_cvtepi32_ps(lo[r]), _mm512_mul_ps(s, sw0)),
                b0,
            );
            let v1 = _mm512_add_ps(
                _mm512_mul_ps(_mm512_cvtepi32_ps(hi[r]), _mm512_mul_ps(s, sw1)),
                b1,
            );
            let out = c.add(r * ldc);
            _mm512_mask_storeu_ps(out, m0, v0);
            _mm512_mask_storeu_ps(out.add(16), m1, v1);
        }
    }
}

/// `int8::quantize_rows` with AVX2: each row's largest magnitude over 8 lanes, then 16
/// values per step multiplied, rounded (the same add-and-subtract of `int8::ROUND`), clamped,
/// converted and packed to i16 pairs; a row's last `k % 16` values go through
/// `int8::quantize_one`, the scalar formula. Same bits as the scalar path: the same IEEE
/// operations in the same order, a NaN value quantised to 0 as Rust's saturating cast does.
///
/// # Safety
/// The CPU must support AVX2; `x` holds `sx.len() × k` values, `out` `sx.len() × pairs`,
/// `pairs = ceil(k / 2)`, `qmax` at most `i16::MAX`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_rows(
    x: &[f32],
    k: usize,
    pairs: usize,
    qmax: i32,
    out: &mut [u32],
    sx: &mut [f32],
) {
    use super::int8::{quantize_one, ROUND};
    let top = qmax as f32;
    let whole = k / 16 * 16;
    for ((row, dst), s) in x
        .chunks_exact(k)
        .zip(out.chunks_exact_mut(pairs))
        .zip(sx.iter_mut())
    {
        let p = row.as_ptr();
        // SAFETY (whole block): reads stay below `k` values of the row, writes below
        // `whole / 2` pairs of `dst` (`pairs >= k / 2`).
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            let mut m = _mm256_setzero_ps();
            let mut i = 0;
            while i + 8 <= k {
                // max(|v|, m) keeps m when |v| is NaN, as the scalar fold does.
                m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(i))), m);
                i += 8;
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), m);
            let mut amax = row[i..]
                .iter()
                .fold(0f32, |m, &x| if x.abs() > m { x.abs() } else { m });
            for &l in &lanes {
                amax = if l > amax { l } else { amax };
            }
            if amax == 0.0 || !amax.is_finite() {
                *s = 0.0;
                dst.fill(0);
                continue;
            }
            let inv = top / amax;
            *s = amax / top;
            let (vinv, round) = (_mm256_set1_ps(inv), _mm256_set1_ps(ROUND));
            let (hi, lo) = (_mm256_set1_ps(top), _mm256_set1_ps(-top));
            let q8 = |v: __m256| {
                let t = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v, vinv), round), round);
                let t = _mm256_max_ps(_mm256_min_ps(t, hi), lo);
                let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                _mm256_andnot_si256(nan, _mm256_cvttps_epi32(t))
            };
            let d = dst.as_mut_ptr().cast::<__m256i>();
            let mut c = 0;
            while c < whole {
                let a = q8(_mm256_loadu_ps(p.add(c)));
                let b = q8(_mm256_loadu_ps(p.add(c + 8)));
                // packs interleaves 128-bit lanes: [a0-3 b0-3 a4-7 b4-7] → a0-7 b0-7.
                let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
                _mm256_storeu_si256(d.add(c / 16), packed);
                c += 16;
            }
            let tail = &row[whole..];
            for (j, pair) in tail.chunks(2).enumerate() {
                let first = u32::from(quantize_one(pair[0], inv, top));
                let second = pair
                    .get(1)
                    .map_or(0, |&v| u32::from(quantize_one(v, inv, top)));
                dst[whole / 2 + j] = first | (second << 16);
            }
        }
    }
}
