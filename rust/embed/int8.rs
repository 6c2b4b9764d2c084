//! Dense layers in integers: symmetric int8 weights per output column, activations
//! quantised per row on the fly to i16, exact i32 sums, dequantised with both scales.
//!
//! Data flow: [`pack`] (once, at load) gives each column `c` a scale `sw[c] = max|w[·][c]| /
//! 127` and stores `round(w / sw)` as i8 in panels of [`NR`] columns, two k at a time
//! (`[w[2j][c], w[2j+1][c]]` for each column of pair `j`: the operand layout of `vpmaddwd`).
//! Each product [`gemm_int8`] then rounds every row of x to ±`A` ([`quantize_rows`]:
//! `sx[r] = max|x[r]| / A`, packed as i16 pairs), sums `qx·qw` over k in i32 and writes
//! `acc · (sx[r] · sw[c]) + b[c]` (a multiply, then an add: no FMA, so every path rounds the
//! same way and they agree bit for bit, integer part and all).
//!
//! `A` = [`activation_max`]`(K)`, the largest magnitude for which `K · A · 127` still fits
//! an i32 (32767 for K = 384, 11008 for K = 1536): the sums are exact by construction, and
//! activations keep 14-16 bits. Rounding them to ±127 as well (int8 both sides) measured
//! 1.4e-2 cosine distance from f32 on MiniLM and moved QQP recall by 0.010-0.012 at the
//! cache thresholds, past the 0.005 bound; the weights' rounding alone stays within it.
//!
//! Why i16 pairs and `vpmaddwd` rather than u8 × i8 `vpmaddubsw`: the latter *saturates* the
//! pair sum in i16 (2·255·127 > 32767), so its sums are exact only with 7-bit operands or a
//! sign-transfer step, and it caps activations at 8 bits; `vpmaddwd` issues the same number
//! of multiplies per product (one instruction per 16 products, plus one add), takes the wider
//! activations for free, and the i8 weights are widened once per step for up to 6 rows.
//! Exact i32 sums do not depend on the order of summation: every path agrees with
//! [`scalar_tile`] exactly. With AVX-512 VNNI (at the AVX-512 level) [`Int8Kernel::Vnni`]
//! reads the same panels with `vpdpwssd`, which does the multiply and the add of 32
//! products in one instruction (no saturation: the `s`-suffixed form is the saturating one). Attention, softmax, LayerNorm, GELU and pooling stay in f32.

use super::isa::Isa;
use super::linear::NR;
use crate::error::{CoreError, CoreResult};

/// Largest quantised magnitude of a weight.
pub const QMAX: i32 = 127;

/// Largest K for which `K · QMAX²` fits an i32 (the sums' exactness bound).
pub const MAX_K: usize = (i32::MAX / (QMAX * QMAX)) as usize;

/// Adding then subtracting 1.5·2²³ rounds an f32 of magnitude below 2²² to the nearest
/// integer, ties to even, using only IEEE add (no `roundps`, which baseline x86-64 lacks).
pub(super) const ROUND: f32 = 12_582_912.0;

/// Weight panels of one int8 layer.
#[derive(Clone, Debug)]
pub(crate) struct Int8Panels {
    /// Per panel, per pair of k, per column: `[q[2j][c], q[2j+1][c]]` (`ceil(K/2)·NR·2`
    /// bytes per panel; an odd K's last pair and the columns past N are zero).
    pub(crate) q: Vec<i8>,
    /// Per column (padded to whole panels with zeros): the dequantisation scale.
    pub(crate) scale: Vec<f32>,
}

/// Largest quantised magnitude of an activation for `k` inputs: `k · A · 127` fits an i32,
/// and `A` fits an i16 (`k` at most [`MAX_K`]).
pub fn activation_max(k: usize) -> i32 {
    let bound = i32::MAX as usize / (k.max(1) * QMAX as usize);
    bound.min(i16::MAX as usize) as i32
}

/// `(scale, round(v / scale))` for one column or row: `scale = max|v| / qmax` (0 when all
/// of `v` is 0 or not finite), each value rounded to nearest, ties to even, into ±qmax.
pub fn quantize(v: &[f32], qmax: i32) -> (f32, Vec<i32>) {
    let amax = v
        .iter()
        .fold(0f32, |m, &x| if x.abs() > m { x.abs() } else { m });
    if amax == 0.0 || !amax.is_finite() {
        return (0.0, vec![0; v.len()]);
    }
    let top = qmax as f32;
    let inv = top / amax;
    let q = v
        .iter()
        .map(|&x| (((x * inv) + ROUND) - ROUND).clamp(-top, top) as i32)
        .collect();
    (amax / top, q)
}

/// Quantise `w` (`k × n`, row-major) per column and pack it for [`gemm_int8`].
pub(crate) fn pack(w: &[f32], k: usize, n: usize) -> CoreResult<Int8Panels> {
    if k > MAX_K {
        return Err(CoreError::InvalidInput(format!(
            "an int8 dense layer takes at most {MAX_K} inputs (its i32 sums must be exact), \
             got {k}: use precision \"f32\" or \"f16\""
        )));
    }
    let count = n.div_ceil(NR);
    let pairs = k.div_ceil(2);
    let mut q = vec![0i8; count * pairs * NR * 2];
    let mut scale = vec![0f32; count * NR];
    let mut column = vec![0f32; k];
    for c in 0..n {
        for (row, v) in column.iter_mut().enumerate() {
            *v = w[row * n + c];
        }
        let (s, qc) = quantize(&column, QMAX);
        scale[c] = s;
        let (p, lane) = (c / NR, c % NR);
        for (row, &v) in qc.iter().enumerate() {
            q[((p * pairs + row / 2) * NR + lane) * 2 + row % 2] = v as i8;
        }
    }
    Ok(Int8Panels { q, scale })
}

/// One activation quantised as [`quantize`] does it, given `inv = top / amax`: the bits of
/// an i16 in ±`top` (a NaN gives 0, as Rust's saturating cast does).
#[inline(always)]
pub(super) fn quantize_one(v: f32, inv: f32, top: f32) -> u16 {
    ((((v * inv) + ROUND) - ROUND).clamp(-top, top) as i32) as u16
}

/// Quantise the `m = sx.len()` rows of `x` (`k` values each) as [`quantize`] does, into
/// i16 pairs (`out[r·pairs + j] = q[2j] | q[2j+1] << 16`, `pairs = ceil(k/2)`) and
/// their scales `sx`. Exactly [`quantize`]'s arithmetic (IEEE multiply and add, a
/// saturating cast), so the AVX2 copy in `x86` gives the same bits.
pub fn quantize_rows(
    isa: Isa,
    x: &[f32],
    k: usize,
    pairs: usize,
    qmax: i32,
    out: &mut [u32],
    sx: &mut [f32],
) {
    let m = sx.len();
    assert!(
        x.len() >= m * k && out.len() >= m * pairs && pairs >= k.div_ceil(2) && qmax <= 32767,
        "quantize_rows: buffers too small for {m} rows of {k}"
    );
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && isa.is_supported() {
        // SAFETY: AVX2 is part of both SIMD levels and was just checked; the extents were
        // asserted above.
        unsafe { super::x86::quantize_rows(&x[..m * k], k, pairs, qmax, out, sx) };
        return;
    }
    let _ = isa;
    for ((row, dst), s) in x
        .chunks_exact(k)
        .zip(out.chunks_exact_mut(pairs))
        .zip(sx.iter_mut())
    {
        let amax = row
            .iter()
            .fold(0f32, |m, &x| if x.abs() > m { x.abs() } else { m });
        if amax == 0.0 || !amax.is_finite() {
            *s = 0.0;
            dst.fill(0);
            continue;
        }
        let top = qmax as f32;
        let inv = top / amax;
        *s = amax / top;
        for (d, p) in dst.iter_mut().zip(row.chunks(2)) {
            let second = p
                .get(1)
                .map_or(0, |&v| u32::from(quantize_one(v, inv, top)));
            *d = u32::from(quantize_one(p[0], inv, top)) | (second << 16);
        }
    }
}

/// Which tile an int8 product runs: chosen from the [`Isa`] in force and the CPU, so
/// `ROUTEGUARD_SIMD=avx2` keeps the AVX2 tile and `scalar` the portable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// [`scalar_tile`]: portable Rust, the reference.
    Scalar,
    /// `vpmaddwd` + `vpaddd` on 256-bit registers, 6 rows × 16 columns at a time.
    Avx2,
    /// `vpdpwssd` on 512-bit registers (AVX-512 VNNI + BW), 14 rows × 32 columns.
    Vnni,
}

impl Int8Kernel {
    /// Every kernel, narrowest first.
    pub const ALL: [Int8Kernel; 3] = [Int8Kernel::Scalar, Int8Kernel::Avx2, Int8Kernel::Vnni];

    /// The widest kernel `isa` allows on this CPU: VNNI at the AVX-512 level when the CPU
    /// has AVX-512 VNNI and BW, AVX2 at either SIMD level when the CPU has AVX2 (even if it
    /// lacks the rest of `isa`: the AVX2 tile needs nothing else), else scalar.
    pub fn for_isa(isa: Isa) -> Int8Kernel {
        let wanted = match isa {
            Isa::Avx512 => Int8Kernel::Vnni,
            Isa::Avx2 => Int8Kernel::Avx2,
            Isa::Scalar => Int8Kernel::Scalar,
        };
        Int8Kernel::ALL
            .into_iter()
            .rfind(|k| *k as u8 <= wanted as u8 && k.is_supported())
            .unwrap_or(Int8Kernel::Scalar)
    }

    /// `"scalar"`, `"avx2"` or `"vnni"`.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Scalar => "scalar",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Vnni => "vnni",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            Int8Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The most rows one tile call takes: the accumulators fill 12 of AVX2's 16 registers
    /// (6 rows × two ymm) and 28 of AVX-512's 32 (14 rows × two zmm), leaving room for the
    /// widened weights and a broadcast.
    pub fn max_rows(self) -> usize {
        match self {
            Int8Kernel::Scalar | Int8Kernel::Avx2 => 6,
            Int8Kernel::Vnni => 14,
        }
    }

    /// One tile with this kernel (the contract of [`scalar_tile`]; `rows <=`
    /// [`Int8Kernel::max_rows`]). An unsupported kernel runs the scalar tile.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tile(
        self,
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
        assert!(
            (1..=self.max_rows()).contains(&rows)
                && (1..=NR).contains(&cols)
                && a.len() >= rows * pairs
                && panel.len() >= pairs * NR * 2
                && sx.len() >= rows
                && sw.len() >= NR
                && bias.len() >= NR
                && c.len() >= (rows - 1) * ldc + cols,
            "int8 tile: {rows} rows, {cols} columns out of range or buffers too small"
        );
        #[cfg(target_arch = "x86_64")]
        match self {
            // SAFETY: the features were checked; the extents were asserted above.
            Int8Kernel::Vnni if self.is_supported() => {
                return unsafe {
                    super::x86::int8_vnni_tile(a, rows, pairs, panel, sx, sw, bias, c, ldc, cols)
                };
            }
            // SAFETY: as above.
            Int8Kernel::Avx2 if self.is_supported() => {
                return unsafe {
                    super::x86::int8_tile(a, rows, pairs, panel, sx, sw, bias, c, ldc, cols)
                };
            }
            _ => {}
        }
        scalar_tile(a, rows, pairs, panel, sx, sw, bias, c, ldc, cols);
    }
}

/// `out = x·W + b` for `m` rows with int8 panels (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_int8(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    panels: &Int8Panels,
    bias: &[f32],
    out: &mut [f32],
) {
    let pairs = k.div_ceil(2);
    SCRATCH.with_borrow_mut(|(keep_q, keep_s)| {
        if keep_q.len() < m * pairs || keep_s.len() < m {
            // Kept between calls, so a short prompt's 24 products allocate (and fault in)
            // nothing; a big batch's buffers are dropped after it (below).
            *keep_q = vec![0u32; m * pairs];
            *keep_s = vec![0f32; m];
        }
        let (xq, sx) = (&mut keep_q[..m * pairs], &mut keep_s[..m]);
        quantize_rows(isa, &x[..m * k], k, pairs, activation_max(k), xq, sx);
        tiles(isa, xq, sx, m, pairs, n, panels, bias, out);
        if keep_q.len() * 4 > SCRATCH_KEEP_BYTES {
            *keep_q = Vec::new();
            *keep_s = Vec::new();
        }
    });
}

/// Quantised activations a thread keeps between products (a few hundred MiniLM tokens).
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<(Vec<u32>, Vec<f32>)> = std::cell::RefCell::default();
}

/// The tiles of one product over already quantised rows `xq` (`m × pairs`) and scales `sx`.
#[allow(clippy::too_many_arguments)]
fn tiles(
    isa: Isa,
    xq: &[u32],
    sx: &[f32],
    m: usize,
    pairs: usize,
    n: usize,
    panels: &Int8Panels,
    bias: &[f32],
    out: &mut [f32],
) {
    let kernel = Int8Kernel::for_isa(isa);
    super::linear::for_each_tile(m, pairs * 2, n, kernel.max_rows(), |row, rows, p, cols| {
        let panel = &panels.q[p * pairs * NR * 2..][..pairs * NR * 2];
        let a = &xq[row * pairs..(row + rows) * pairs];
        let sx = &sx[row..row + rows];
        let sw = &panels.scale[p * NR..][..NR];
        let b = &bias[p * NR..][..NR];
        let c = &mut out[row * n + p * NR..];
        kernel.tile(a, rows, pairs, panel, sx, sw, b, c, n, cols);
    });
}

/// The portable tile and the reference for the SIMD one: `rows` rows of i16 pairs `a`
/// (`rows × pairs`) times one panel, i32 sums, dequantised into `cols` columns of `c`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scalar_tile(
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
    for r in 0..rows {
        let mut acc = [0i32; NR];
        for (&xv, w) in a[r * pairs..(r + 1) * pairs]
            .iter()
            .zip(panel.chunks_exact(2 * NR))
        {
            let x0 = i32::from(xv as u16 as i16);
            let x1 = i32::from((xv >> 16) as u16 as i16);
            for (acc, w) in acc.iter_mut().zip(w.chunks_exact(2)) {
                *acc += x0 * i32::from(w[0]) + x1 * i32::from(w[1]);
            }
        }
        for col in 0..cols {
            c[r * ldc + col] = acc[col] as f32 * (sx[r] * sw[col]) + bias[col];
        }
    }
}
