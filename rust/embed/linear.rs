//! Dense layers `y = x·W + b` for a handful of rows: weights pre-packed into column panels.
//!
//! A short prompt makes every product `M × K × N` with M ≈ 10-20 tokens, so the cost is
//! streaming W once and keeping the FMA units busy while doing so. [`Linear::new`] packs W
//! (given as `(K, N)`, row-major, what `x @ w` takes) into panels of [`NR`] = 32 columns:
//! panel `p` holds rows `k = 0..K` of columns `p·32 .. p·32+32` back to back, so a micro
//! kernel reads its panel as one linear stream. Weights are stored as f32, f16 (half the
//! bytes; widened on the fly, accumulation in f32) or bf16 pairs (k and k+1 side by side,
//! for `vdpbf16ps`, with activations rounded to bf16 too), chosen by [`Precision`].
//!
//! Measured on one Zen 4 core (one 512-bit FMA per cycle: ~117 GFLOP/s of bare FMAs), the
//! f32 path runs at ~95 GFLOP/s for 10-20 rows. Its 42 MB of weights do not fit a 32 MB
//! L3, so every pass streams them from memory: the same tiles over weights that stay in L3
//! reach ~117, and with very few rows the stream is the cost (4 tokens: 1.6 ms, twice the
//! arithmetic). f16 halves the stream but widening each weight vector costs ~10% of the
//! FMA throughput, so it is faster only below ~10 rows; bf16 doubles the products per
//! instruction and runs at ~200 GFLOP/s.
//!
//! [`gemm`] walks blocks of rows (sized so a block of `x` stays in L2), then panels, then
//! tiles of up to `Isa`-dependent rows (14 for AVX-512: 28 accumulator registers, each
//! weight vector widened once and used by 14 rows); tiles are balanced (17 rows run as
//! 9 + 8, not 14 + 3). The accumulators start at the bias, so `b` costs nothing.

use super::half::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use super::int8::{gemm_int8, Int8Panels};
use super::isa::Isa;
use crate::error::{CoreError, CoreResult};

/// Columns per packed panel.
pub const NR: usize = 32;

/// How weights are stored (arithmetic is f32 either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// IEEE half precision: half the memory traffic, ~3e-4 relative rounding per weight.
    F16,
    /// The checkpoint's own f32 values.
    F32,
    /// bfloat16 weights *and* activations, multiplied in pairs by `vdpbf16ps` (AVX-512
    /// BF16) into f32 accumulators: twice the products per instruction of f32 FMA, at
    /// ~3e-5 cosine distance on MiniLM (looser than the f32 and f16 paths; opt-in).
    Bf16,
    /// Symmetric int8 weights per output column and int8 activations per row, rounded on
    /// the fly, with exact i32 sums (`super::int8`): a quarter of f32's bytes and twice
    /// the products per instruction on AVX2, 32 per `vpdpwssd` with AVX-512 VNNI; the
    /// loosest of the four.
    Int8,
}

impl Precision {
    /// `"f16"`, `"f32"`, `"bf16"` or `"int8"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F16 => "f16",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The precision named `name`, or an error listing the choices.
    pub fn parse(name: &str) -> CoreResult<Precision> {
        match name {
            "f16" => Ok(Precision::F16),
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            other => Err(CoreError::InvalidInput(format!(
                "unknown weight precision {other:?}: use \"f32\", \"f16\", \"bf16\" or \"int8\""
            ))),
        }
    }
}

/// Packed panels, in the storage type of their [`Precision`].
#[derive(Clone, Debug)]
pub(crate) enum Panels {
    F16(Vec<u16>),
    F32(Vec<f32>),
    /// Pairs of k: `bf16(w[2j][c]) | bf16(w[2j+1][c]) << 16`, `ceil(K/2)` rows per panel.
    Bf16(Vec<u32>),
    /// int8 pairs of k per column plus per-column scales (`super::int8::pack`).
    Int8(Int8Panels),
}

/// One dense layer, packed for [`gemm`].
#[derive(Clone, Debug)]
pub struct Linear {
    k: usize,
    n: usize,
    panels: Panels,
    bias: Vec<f32>, // padded with zeros to a whole number of panels
}

impl Linear {
    /// Pack `w` (`k × n`, row-major) and `bias` (`n`) into panels of the given precision.
    pub fn new(
        w: &[f32],
        bias: &[f32],
        k: usize,
        n: usize,
        precision: Precision,
    ) -> CoreResult<Linear> {
        if k == 0 || n == 0 || w.len() != k * n || bias.len() != n {
            return Err(CoreError::InvalidInput(format!(
                "a dense layer of {k} inputs and {n} outputs needs {} weights and {n} biases, \
                 got {} and {}",
                k * n,
                w.len(),
                bias.len()
            )));
        }
        let count = n.div_ceil(NR);
        let mut padded = vec![0f32; count * NR];
        padded[..n].copy_from_slice(bias);
        if precision == Precision::Int8 {
            return Ok(Linear {
                k,
                n,
                panels: Panels::Int8(super::int8::pack(w, k, n)?),
                bias: padded,
            });
        }
        let mut packed = vec![0f32; count * k * NR];
        for (p, panel) in packed.chunks_exact_mut(k * NR).enumerate() {
            let cols = (n - p * NR).min(NR);
            for (row, dst) in panel.chunks_exact_mut(NR).enumerate() {
                dst[..cols].copy_from_slice(&w[row * n + p * NR..][..cols]);
            }
        }
        let panels = match precision {
            Precision::F32 => Panels::F32(packed),
            Precision::F16 => Panels::F16(packed.iter().map(|&x| f32_to_f16(x)).collect()),
            Precision::Bf16 => {
                let pairs = k.div_ceil(2);
                let mut out = vec![0u32; count * pairs * NR];
                for (p, panel) in packed.chunks_exact(k * NR).enumerate() {
                    for (row, src) in panel.chunks_exact(NR).enumerate() {
                        let dst = &mut out[(p * pairs + row / 2) * NR..][..NR];
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d |= u32::from(f32_to_bf16(v)) << (16 * (row % 2));
                        }
                    }
                }
                Panels::Bf16(out)
            }
            Precision::Int8 => unreachable!("int8 layers are packed above"),
        };
        Ok(Linear {
            k,
            n,
            panels,
            bias: padded,
        })
    }

    /// Inputs per row.
    pub fn inputs(&self) -> usize {
        self.k
    }

    /// Outputs per row.
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Bytes of packed weights.
    pub fn weight_bytes(&self) -> usize {
        match &self.panels {
            Panels::F16(v) => v.len() * 2,
            Panels::F32(v) => v.len() * 4,
            Panels::Bf16(v) => v.len() * 4,
            Panels::Int8(p) => p.q.len() + p.scale.len() * 4,
        }
    }
}

/// The most rows one micro-kernel call computes on each path, for weights of type `W`.
fn max_tile_rows<W: Weight>(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 14,
        // f16 weights take the half-panel AVX2 tile (see `x86::avx2_half_tile`).
        Isa::Avx2 if W::WIDENS => 6,
        Isa::Avx2 => 3,
        Isa::Scalar => 4,
    }
}

/// `out = x·W + b` for `m` rows: `x` is `m × K`, `out` is `m × N` (both row-major).
///
/// Panics if the slices are shorter than those shapes (a bug in the caller, not bad input).
pub fn gemm(isa: Isa, x: &[f32], m: usize, layer: &Linear, out: &mut [f32]) {
    let (k, n) = (layer.k, layer.n);
    assert!(
        x.len() >= m * k && out.len() >= m * n,
        "gemm: buffers too small"
    );
    if m == 0 {
        return;
    }
    let isa = if isa.is_supported() { isa } else { Isa::Scalar };
    match &layer.panels {
        #[cfg(target_arch = "x86_64")]
        Panels::F16(w) if isa == Isa::Avx512 => gemm_packed_a(x, m, layer, w, out),
        #[cfg(target_arch = "x86_64")]
        Panels::F32(w) if isa == Isa::Avx512 => gemm_packed_a(x, m, layer, w, out),
        Panels::F16(w) => gemm_rows(isa, x, m, layer, w, out),
        Panels::F32(w) => gemm_rows(isa, x, m, layer, w, out),
        Panels::Bf16(w) => gemm_bf16(isa, x, m, layer, w, out),
        Panels::Int8(p) => gemm_int8(isa, x, m, k, n, p, &layer.bias, out),
    }
}

/// [`gemm`] reading x's rows as they are (AVX2 and scalar tiles), for f16 or f32 panels.
fn gemm_rows<W: Weight>(isa: Isa, x: &[f32], m: usize, layer: &Linear, w: &[W], out: &mut [f32]) {
    let (k, n) = (layer.k, layer.n);
    for_each_tile(m, k, n, max_tile_rows::<W>(isa), |row, rows, p, cols| {
        let bias = &layer.bias[p * NR..][..NR];
        let a = &x[row * k..(row + rows) * k];
        let w = &w[p * k * NR..][..k * NR];
        tile_dispatch(
            isa,
            a,
            rows,
            k,
            w,
            bias,
            &mut out[row * n + p * NR..],
            n,
            cols,
        );
    });
}

/// [`gemm`] on AVX-512: each block's rows of x are first repacked tile by tile, k-major
/// (`ap[k·R + r]`), so a tile's broadcasts read one contiguous stream rather than R rows
/// K apart (which, for K = 1536, do not fit L1 together); the repacking is paid once per
/// block and used by every panel. Same blocks and tiles as [`for_each_tile`].
#[cfg(target_arch = "x86_64")]
fn gemm_packed_a<W: Weight>(x: &[f32], m: usize, layer: &Linear, w: &[W], out: &mut [f32]) {
    let max_rows = max_tile_rows::<W>(Isa::Avx512);
    let (k, n) = (layer.k, layer.n);
    let block = ((96 * 1024) / k).max(max_rows).min(m);
    let mut ap = vec![0f32; block * k];
    let mut tiles: Vec<(usize, usize, usize)> = Vec::new(); // (first row, rows, offset in ap)
    let mut m0 = 0;
    while m0 < m {
        let rows = block.min(m - m0);
        let count = rows.div_ceil(max_rows);
        tiles.clear();
        let (mut r0, mut off) = (m0, 0);
        for t in 0..count {
            let r = rows / count + usize::from(t < rows % count);
            let dst = &mut ap[off..off + r * k];
            for (rr, src) in x[r0 * k..(r0 + r) * k].chunks_exact(k).enumerate() {
                for (kk, &v) in src.iter().enumerate() {
                    dst[kk * r + rr] = v;
                }
            }
            tiles.push((r0, r, off));
            r0 += r;
            off += r * k;
        }
        for p in 0..n.div_ceil(NR) {
            let cols = (n - p * NR).min(NR);
            let bias = &layer.bias[p * NR..][..NR];
            let panel = &w[p * k * NR..][..k * NR];
            for &(r0, r, off) in &tiles {
                let c = &mut out[r0 * n + p * NR..];
                // SAFETY: `gemm` routes here only when AVX-512 is supported; every slice
                // has the extents `avx512_tile` documents (`ap` tile: r × k, k-major).
                unsafe {
                    super::x86::avx512_tile(&ap[off..off + r * k], r, k, panel, bias, c, n, cols)
                };
            }
        }
        m0 += rows;
    }
}

/// Call `tile(first_row, rows, panel, cols)` over every tile of an `m × n` product with
/// `k` inputs: blocks of rows (sized so a block of x stays in L2, ~384 KB, while every
/// panel streams past it), then panels, then balanced tiles of at most `max_rows` rows
/// (17 rows with 14 at most run as 9 + 8, not 14 + 3).
pub(super) fn for_each_tile(
    m: usize,
    k: usize,
    n: usize,
    max_rows: usize,
    mut tile: impl FnMut(usize, usize, usize, usize),
) {
    let block = ((96 * 1024) / k.max(1)).max(max_rows).min(m);
    let mut m0 = 0;
    while m0 < m {
        let rows = block.min(m - m0);
        let tiles = rows.div_ceil(max_rows);
        for p in 0..n.div_ceil(NR) {
            let cols = (n - p * NR).min(NR);
            let mut r0 = m0;
            for t in 0..tiles {
                let r = rows / tiles + usize::from(t < rows % tiles);
                tile(r0, r, p, cols);
                r0 += r;
            }
        }
        m0 += rows;
    }
}

/// The native part of `precision="auto"` at the process's [`Isa::detect`] level: bf16 where
/// `vdpbf16ps` runs natively (twice f32's speed, ~3.5e-5 cosine distance), else f32. On the
/// other SIMD paths the Python side (`routeguard.embed.precision`) times f32, f16 and int8
/// on the CPU at hand and may replace this f32 with the fastest of them; where bf16 is
/// native and int8 has its AVX-512 VNNI tile, it times bf16 against int8.
pub fn auto_precision() -> Precision {
    if bf16_native(Isa::detect()) {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

/// Whether the bf16 path can use `vdpbf16ps` with this isa on this CPU.
fn bf16_native(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.is_supported() {
        return std::arch::is_x86_feature_detected!("avx512bf16");
    }
    let _ = isa;
    false
}

/// [`gemm`] for bf16 panels: rows of x are rounded to bf16 pairs first (the layout
/// `vdpbf16ps` broadcasts), then each tile accumulates pairs of products in f32.
fn gemm_bf16(isa: Isa, x: &[f32], m: usize, layer: &Linear, w: &[u32], out: &mut [f32]) {
    let (k, n) = (layer.k, layer.n);
    let pairs = k.div_ceil(2);
    let native = bf16_native(isa);
    let mut xb = vec![0u32; m * pairs];
    for (src, dst) in x.chunks_exact(k).zip(xb.chunks_exact_mut(pairs)).take(m) {
        #[cfg(target_arch = "x86_64")]
        if native {
            // SAFETY: `bf16_native` confirmed AVX-512F and AVX-512 BF16.
            unsafe { super::x86::to_bf16_pairs(src, dst) };
            continue;
        }
        for (i, &v) in src.iter().enumerate() {
            dst[i / 2] |= u32::from(f32_to_bf16(v)) << (16 * (i % 2));
        }
    }
    let max_rows = if native { 14 } else { 4 };
    for_each_tile(m, pairs * 2, n, max_rows, |row, rows, p, cols| {
        let bias = &layer.bias[p * NR..][..NR];
        let a = &xb[row * pairs..(row + rows) * pairs];
        let panel = &w[p * pairs * NR..][..pairs * NR];
        let c = &mut out[row * n + p * NR..];
        #[cfg(target_arch = "x86_64")]
        if native {
            // SAFETY: `bf16_native` confirmed the features; extents as sliced above.
            unsafe { super::x86::bf16_tile(a, rows, pairs, panel, bias, c, n, cols) };
            return;
        }
        for r in 0..rows {
            let mut acc = [0f32; NR];
            acc.copy_from_slice(bias);
            for (&xv, wrow) in a[r * pairs..(r + 1) * pairs]
                .iter()
                .zip(panel.chunks_exact(NR))
            {
                let (x0, x1) = (bf16_to_f32(xv as u16), bf16_to_f32((xv >> 16) as u16));
                for (acc, &wv) in acc.iter_mut().zip(wrow) {
                    *acc += x0 * bf16_to_f32(wv as u16) + x1 * bf16_to_f32((wv >> 16) as u16);
                }
            }
            c[r * n..r * n + cols].copy_from_slice(&acc[..cols]);
        }
    });
}

/// A weight element the kernels can widen to f32.
pub(crate) trait Weight: Copy + Send + Sync {
    /// Whether loading takes a conversion instruction (f16), not a plain load (f32).
    const WIDENS: bool;
    fn to_f32(self) -> f32;
    /// Widen 16 consecutive weights at `p`.
    ///
    /// # Safety
    /// `p..p+16` must be readable and the CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
    /// Widen 8 consecutive weights at `p`.
    ///
    /// # Safety
    /// `p..p+8` must be readable and the CPU must support AVX and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Weight for u16 {
    const WIDENS: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const u16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: forwarded to the caller.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const u16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: forwarded to the caller.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

impl Weight for f32 {
    const WIDENS: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: forwarded to the caller.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: forwarded to the caller.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

/// One tile: `rows` rows of `a` (`rows × k`) times one panel (`k × NR`), plus `bias`,
/// into the first `cols` columns of `rows` rows of `c` (row stride `ldc`).
#[allow(clippy::too_many_arguments)]
fn tile_dispatch<W: Weight>(
    isa: Isa,
    a: &[f32],
    rows: usize,
    k: usize,
    panel: &[W],
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
) {
    debug_assert!(a.len() >= rows * k && panel.len() >= k * NR && bias.len() >= NR);
    debug_assert!(rows > 0 && c.len() >= (rows - 1) * ldc + cols);
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `gemm` only passes a supported isa; the shapes were asserted above.
        Isa::Avx2 if W::WIDENS => {
            return unsafe { super::x86::avx2_half_tile(a, rows, k, panel, bias, c, ldc, cols) };
        }
        // SAFETY: as above.
        Isa::Avx2 => {
            return unsafe { super::x86::avx2_tile(a, rows, k, panel, bias, c, ldc, cols) }
        }
        // AVX-512 goes through `gemm_packed_a`, never here.
        Isa::Scalar | Isa::Avx512 => {}
    }
    let _ = isa;
    scalar_tile(a, rows, k, panel, bias, c, ldc, cols);
}

/// The portable tile, one row at a time; the reference for the SIMD tiles.
#[allow(clippy::too_many_arguments)]
fn scalar_tile<W: Weight>(
    a: &[f32],
    rows: usize,
    k: usize,
    panel: &[W],
    bias: &[f32],
    c: &mut [f32],
    ldc: usize,
    cols: usize,
) {
    for r in 0..rows {
        let mut acc = [0f32; NR];
        acc.copy_from_slice(&bias[..NR]);
        for (&x, w) in a[r * k..(r + 1) * k].iter().zip(panel.chunks_exact(NR)) {
            for (acc, &w) in acc.iter_mut().zip(w) {
                *acc += x * w.to_f32();
            }
        }
        c[r * ldc..r * ldc + cols].copy_from_slice(&acc[..cols]);
    }
}

#[cfg(test)]
pub(crate) fn reference(x: &[f32], m: usize, w: &[f32], b: &[f32], k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = f64::from(b[j]);
            for l in 0..k {
                s += f64::from(x[i * k + l]) * f64::from(w[l * n + j]);
            }
            out[i * n + j] = s as f32;
        }
    }
    out
}
