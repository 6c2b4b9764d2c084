//! The encoder's element-wise steps: LayerNorm, residual add, GELU, attention, pooling.
//!
//! Each step is a plain-Rust `*_body` written so the compiler vectorises it (sums go into
//! 16 independent lanes, since a single f32 accumulator is a serial chain the compiler
//! must not reorder), compiled for AVX-512, AVX2 and the baseline by [`multiversion!`].
//! Attention runs per text and per head on the packed `(tokens, 3·hidden)` Q/K/V matrix,
//! so a batch of mixed lengths needs no padding and no mask: K is transposed per head
//! into a `(head_dim, L)` scratch so that both `scores = q·Kᵀ` and `ctx = p·V` are
//! sequences of contiguous multiply-adds.

use super::isa::multiversion;

const LANES: usize = 16;

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `x += y` then LayerNorm over each row of `width`, in place.
#[inline(always)]
fn add_layer_norm_body(x: &mut [f32], y: &[f32], width: usize, g: &[f32], b: &[f32], eps: f32) {
    for (row, add) in x.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
        for (v, a) in row.iter_mut().zip(add) {
            *v += a;
        }
        normalize_row(row, g, b, eps);
    }
}

#[inline(always)]
fn normalize_row(row: &mut [f32], g: &[f32], b: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    for v in row.iter_mut() {
        *v -= mean;
    }
    let std = (sum_squares(row) / n + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(g).zip(b) {
        *v = *v / std * g + b;
    }
}

// erf(x) ≈ x·P(x²)/Q(x²) on [-4, 4], |error| < 5e-7 in f32: the rational approximation
// XLA and Eigen use for f32 erf (the numpy path in embed/bert.py uses the same one).
#[allow(clippy::excessive_precision)]
const ERF_P: [f32; 7] = [
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
];
#[allow(clippy::excessive_precision)]
const ERF_Q: [f32; 5] = [
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
];

/// GELU, erf form: `x · (1 + erf(x/√2)) / 2`, in place.
#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    for v in x.iter_mut() {
        let t = *v * std::f32::consts::FRAC_1_SQRT_2;
        let t = t.clamp(-4.0, 4.0);
        let t2 = t * t;
        let mut p = ERF_P[0];
        for c in &ERF_P[1..] {
            p = p * t2 + c;
        }
        let mut q = ERF_Q[0];
        for c in &ERF_Q[1..] {
            q = q * t2 + c;
        }
        let erf = t * p / q;
        *v *= erf * 0.5 + 0.5;
    }
}

/// `e^x` for x ≤ 0 (softmax after subtracting the max), ~1 ulp: 2^n · P(r) with
/// `x = n·ln2 + r`, |r| ≤ ln2/2, P the degree-7 Taylor polynomial (error ~5e-9).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer (ties to even)
    let x = x.clamp(-87.0, 88.0);
    // t = ROUND + n holds the integer n in its low mantissa bits: 2^n is built from them
    // with integer ops (no float-to-int conversion, which would keep this loop scalar).
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    p * f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23)
}

/// Softmax of the first `len` values of `s`, in place; `s` is whole vectors long and the
/// padding past `len` comes out as zeros (every loop runs on full vectors, no scalar tail).
#[inline(always)]
fn softmax(s: &mut [f32], len: usize) {
    let top = max(&s[..len]);
    for v in s.iter_mut() {
        *v = exp(*v - top);
    }
    s[len..].fill(0.0);
    let inv = 1.0 / sum(s);
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// `y += a·x`. A function of its own so that, once inlined, the compiler still knows `y`
/// and `x` do not overlap (both come out of one scratch buffer) and vectorises the loop.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Multi-head self-attention over packed Q/K/V (`qkv`: tokens × 3·hidden, the query part
/// pre-scaled by 1/√head_dim) of texts of `lengths` tokens, into `ctx` (tokens × hidden).
/// `scratch` is resized as needed.
#[inline(always)]
fn attention_body(
    qkv: &[f32],
    lengths: &[usize],
    hidden: usize,
    heads: usize,
    ctx: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let d = hidden / heads;
    let stride = 3 * hidden;
    let mut start = 0;
    for &len in lengths {
        // Scores are computed LANES at a time: pad the key axis with zero columns so every
        // row of Kᵀ and of the scores is whole vectors; the softmax only reads `len`.
        let padded = len.div_ceil(LANES) * LANES;
        scratch.clear();
        scratch.resize(d * padded + padded, 0.0);
        let (kt, scores) = scratch.split_at_mut(d * padded);
        for h in 0..heads {
            // K of this head, transposed: kt[c·padded + j] = K[j][c].
            for j in 0..len {
                let key = &qkv[(start + j) * stride + hidden + h * d..][..d];
                for (c, &v) in key.iter().enumerate() {
                    kt[c * padded + j] = v;
                }
            }
            for i in 0..len {
                let q = &qkv[(start + i) * stride + h * d..][..d];
                scores.fill(0.0);
                // 16 scores at a time, summed over c in registers (not through memory).
                for (chunk, out) in scores.chunks_exact_mut(LANES).enumerate() {
                    let mut acc = [0f32; LANES];
                    for (c, &qc) in q.iter().enumerate() {
                        let k = &kt[c * padded + chunk * LANES..][..LANES];
                        for (a, &kv) in acc.iter_mut().zip(k) {
                            *a += qc * kv;
                        }
                    }
                    out.copy_from_slice(&acc);
                }
                softmax(scores, len);
                let probs = &scores[..len];
                let out = &mut ctx[(start + i) * hidden + h * d..][..d];
                let value = |j: usize| (start + j) * stride + 2 * hidden + h * d;
                if d.is_multiple_of(LANES) {
                    // As above: 16 outputs at a time, summed over j in registers.
                    for (chunk, out) in out.chunks_exact_mut(LANES).enumerate() {
                        let mut acc = [0f32; LANES];
                        for (j, &p) in probs.iter().enumerate() {
                            let v = &qkv[value(j) + chunk * LANES..][..LANES];
                            for (a, &vv) in acc.iter_mut().zip(v) {
                                *a += p * vv;
                            }
                        }
                        out.copy_from_slice(&acc);
                    }
                } else {
                    out.fill(0.0);
                    for (j, &p) in probs.iter().enumerate() {
                        axpy(out, p, &qkv[value(j)..][..d]);
                    }
                }
            }
        }
        start += len;
    }
}

/// Mean of each text's rows of `x` (tokens × width), L2-normalised, into `out` (texts × width).
#[inline(always)]
fn mean_pool_body(x: &[f32], lengths: &[usize], width: usize, out: &mut [f32]) {
    let mut start = 0;
    for (&len, dst) in lengths.iter().zip(out.chunks_exact_mut(width)) {
        dst.fill(0.0);
        for row in x[start * width..(start + len) * width].chunks_exact(width) {
            for (d, v) in dst.iter_mut().zip(row) {
                *d += v;
            }
        }
        let inv_len = 1.0 / len as f32;
        for d in dst.iter_mut() {
            *d *= inv_len;
        }
        let norm = sum_squares(dst).sqrt().max(1e-12); // as torch.nn.functional.normalize
        for d in dst.iter_mut() {
            *d /= norm;
        }
        start += len;
    }
}

/// `x[t] = word[ids[t]] + position[t within its text]`, then LayerNorm (the embeddings).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn embed_body(
    ids: &[u32],
    lengths: &[usize],
    word: &[f32],
    position: &[f32],
    g: &[f32],
    b: &[f32],
    eps: f32,
    x: &mut [f32],
) {
    let width = g.len();
    let mut rows = x.chunks_exact_mut(width);
    let mut t = 0;
    for &len in lengths {
        for p in 0..len {
            let Some(row) = rows.next() else { return };
            let w = &word[ids[t] as usize * width..][..width];
            let pos = &position[p * width..][..width];
            for ((o, a), c) in row.iter_mut().zip(w).zip(pos) {
                *o = a + c;
            }
            normalize_row(row, g, b, eps);
            t += 1;
        }
    }
}

multiversion! {
    /// `x += y`, then LayerNorm each row of `width` (gain `g`, bias `b`).
    pub fn add_layer_norm(x: &mut [f32], y: &[f32], width: usize, g: &[f32], b: &[f32], eps: f32)
        => add_layer_norm_body
}
multiversion! {
    /// GELU (erf form), in place.
    pub fn gelu(x: &mut [f32]) => gelu_body
}
multiversion! {
    /// Multi-head self-attention of each text (see `attention_body`).
    pub fn attention(
        qkv: &[f32],
        lengths: &[usize],
        hidden: usize,
        heads: usize,
        ctx: &mut [f32],
        scratch: &mut Vec<f32>,
    ) => attention_body
}
multiversion! {
    /// Mean over each text's tokens, then L2 normalisation.
    pub fn mean_pool(x: &[f32], lengths: &[usize], width: usize, out: &mut [f32]) => mean_pool_body
}
multiversion! {
    /// Token + position embeddings, then LayerNorm.
    #[allow(clippy::too_many_arguments)]
    pub fn embed(
        ids: &[u32],
        lengths: &[usize],
        word: &[f32],
        position: &[f32],
        g: &[f32],
        b: &[f32],
        eps: f32,
        x: &mut [f32],
    ) => embed_body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_gelu(x: f64) -> f64 {
        // Abramowitz-Stegun 7.1.26 is too coarse; use a series for the test reference.
        let t = x / std::f64::consts::SQRT_2;
        let mut term = t;
        let mut total = t;
        for n in 1..200 {
            term *= -t * t / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        0.5 * x * (1.0 + total * 2.0 / std::f64::consts::PI.sqrt())
    }

    #[test]
    fn gelu_matches_erf_form() {
        let xs: Vec<f32> = (-600..=600).map(|i| i as f32 / 100.0).collect();
        let mut got = xs.clone();
        gelu_body(&mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = erf_gelu(f64::from(*x));
            assert!(
                (f64::from(*g) - want).abs() < 2e-6,
                "gelu({x}) = {g}, want {want}"
            );
        }
    }

    #[test]
    fn exp_is_accurate() {
        // Clamped below -87 (e^-87 ≈ 1.6e-38, the smallest normal f32 range): fine for softmax.
        for i in 0..=8_700 {
            let x = -(i as f32) * 0.01;
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                (got - want).abs() <= want * 3e-7 + 1e-38,
                "exp({x}) = {got}, want {want}"
            );
        }
    }
}
