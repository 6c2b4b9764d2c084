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

/// The first `LANES` values of `x`, as one vector's worth.
#[inline(always)]
fn lanes(x: &[f32]) -> &[f32; LANES] {
    x[..LANES].try_into().expect("LANES values")
}

/// `acc[l] += p · x[l]` on each of the `LANES` lanes (a multiply, then an add, as in the one
/// query reference). The blocks below call it once per query so that the compiler vectorises
/// across the lanes: given the queries' `p` as one array, it vectorised across the queries
/// instead, reaching the accumulators by gathers and scatters at the AVX-512 level (most of
/// a 63-token pass on an AMD Zen 5).
#[inline(always)]
fn mul_add_lanes(acc: &mut [f32; LANES], p: f32, x: &[f32; LANES]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += p * v;
    }
}

/// Queries whose scores and outputs one pass over K and V computes: 4 queries × 16 lanes
/// are 8 independent AVX2 accumulators, enough to hide the add latency that a single
/// query's one chain over the head's 32 channels waited on.
const QUERIES: usize = 4;

/// Scores of `Q` queries (`q(first)`, `q(first + 1)`, …, `d` values each) against the transposed keys `kt`
/// (`d × padded`), `LANES` keys at a time, into `scores` (`Q × padded`). Each score is
/// summed over the channels in order, as for one query alone.
#[inline(always)]
fn scores_block<'a, const Q: usize>(
    q: impl Fn(usize) -> &'a [f32],
    first: usize,
    kt: &[f32],
    padded: usize,
    scores: &mut [f32],
) {
    let d = q(first).len();
    let q: [&[f32]; Q] = std::array::from_fn(|n| &q(first + n)[..d]);
    for chunk in 0..padded / LANES {
        let mut acc = [[0f32; LANES]; Q];
        for c in 0..d {
            let k = lanes(&kt[c * padded + chunk * LANES..]);
            for (acc, q) in acc.iter_mut().zip(&q) {
                mul_add_lanes(acc, q[c], k);
            }
        }
        for (n, acc) in acc.iter().enumerate() {
            scores[n * padded + chunk * LANES..][..LANES].copy_from_slice(acc);
        }
    }
}

/// Outputs of `Q` queries given their probabilities (`probs`, `Q × padded`, the first
/// `len` used) and the values `v(j)` (`d` each, a multiple of `LANES`) of each key `j`,
/// summed over the keys in order, as for one query alone: into `d` values at `offset` of
/// each of the first `Q` rows (`width` each) of `rows`.
#[inline(always)]
fn context_block<'a, const Q: usize>(
    probs: &[f32],
    padded: usize,
    len: usize,
    v: impl Fn(usize) -> &'a [f32],
    rows: &mut [f32],
    width: usize,
    offset: usize,
) {
    let d = v(0).len();
    let probs: [&[f32]; Q] = std::array::from_fn(|n| &probs[n * padded..][..len]);
    for chunk in 0..d / LANES {
        let mut acc = [[0f32; LANES]; Q];
        // `j` picks a key in `Q` probability rows and in V at once.
        #[allow(clippy::needless_range_loop)]
        for j in 0..len {
            let vj = lanes(&v(j)[chunk * LANES..]);
            for (acc, probs) in acc.iter_mut().zip(&probs) {
                mul_add_lanes(acc, probs[j], vj);
            }
        }
        for (n, acc) in acc.iter().enumerate() {
            rows[n * width + offset + chunk * LANES..][..LANES].copy_from_slice(acc);
        }
    }
}

/// Multi-head self-attention over packed Q/K/V (`qkv`: tokens × 3·hidden, the query part
/// pre-scaled by 1/√head_dim) of texts of `lengths` tokens, into `ctx` (tokens × hidden).
/// `scratch` is resized as needed. Queries go [`QUERIES`] at a time through K and V.
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
        scratch.resize(d * padded + QUERIES * padded, 0.0);
        let (kt, scores) = scratch.split_at_mut(d * padded);
        for h in 0..heads {
            // K of this head, transposed: kt[c·padded + j] = K[j][c].
            for j in 0..len {
                let key = &qkv[(start + j) * stride + hidden + h * d..][..d];
                for (c, &v) in key.iter().enumerate() {
                    kt[c * padded + j] = v;
                }
            }
            let query = |i: usize| &qkv[(start + i) * stride + h * d..][..d];
            let value = |j: usize| &qkv[(start + j) * stride + 2 * hidden + h * d..][..d];
            let mut i = 0;
            while i < len {
                let n = (len - i).min(QUERIES);
                match n {
                    4 => scores_block::<4>(query, i, kt, padded, scores),
                    3 => scores_block::<3>(query, i, kt, padded, scores),
                    2 => scores_block::<2>(query, i, kt, padded, scores),
                    _ => scores_block::<1>(query, i, kt, padded, scores),
                }
                for row in scores.chunks_exact_mut(padded).take(n) {
                    softmax(row, len);
                }
                let rows = &mut ctx[(start + i) * hidden..(start + i + n) * hidden];
                if d.is_multiple_of(LANES) {
                    let at = h * d;
                    match n {
                        4 => context_block::<4>(scores, padded, len, value, rows, hidden, at),
                        3 => context_block::<3>(scores, padded, len, value, rows, hidden, at),
                        2 => context_block::<2>(scores, padded, len, value, rows, hidden, at),
                        _ => context_block::<1>(scores, padded, len, value, rows, hidden, at),
                    }
                } else {
                    for (row, probs) in rows
                        .chunks_exact_mut(hidden)
                        .zip(scores.chunks_exact(padded))
                    {
                        let out = &mut row[h * d..][..d];
                        out.fill(0.0);
                        for (j, &p) in probs[..len].iter().enumerate() {
                            axpy(out, p, value(j));
                        }
                    }
                }
                i += n;
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

    /// One query at a time, in the order the blocked loops keep: the reference the
    /// [`QUERIES`]-at-a-time attention must equal bit for bit.
    fn attention_one_query_at_a_time(
        qkv: &[f32],
        lengths: &[usize],
        hidden: usize,
        heads: usize,
    ) -> Vec<f32> {
        let (d, stride) = (hidden / heads, 3 * hidden);
        let mut ctx = vec![0f32; lengths.iter().sum::<usize>() * hidden];
        let mut start = 0;
        for &len in lengths {
            let padded = len.div_ceil(LANES) * LANES;
            for h in 0..heads {
                for i in 0..len {
                    let q = &qkv[(start + i) * stride + h * d..][..d];
                    let mut scores = vec![0f32; padded];
                    for (j, s) in scores.iter_mut().take(len).enumerate() {
                        let k = &qkv[(start + j) * stride + hidden + h * d..][..d];
                        for (&qc, &kc) in q.iter().zip(k) {
                            *s += qc * kc;
                        }
                    }
                    softmax(&mut scores, len);
                    let out = &mut ctx[(start + i) * hidden + h * d..][..d];
                    for (j, &p) in scores[..len].iter().enumerate() {
                        let v = &qkv[(start + j) * stride + 2 * hidden + h * d..][..d];
                        for (o, &vc) in out.iter_mut().zip(v) {
                            *o += p * vc;
                        }
                    }
                }
            }
            start += len;
        }
        ctx
    }

    #[test]
    fn attention_in_blocks_of_queries_equals_one_query_at_a_time() {
        // Lengths leaving every remainder of a block of 4 queries; 32 values per head
        // (the 16-wide branch) and 8 (the general one).
        let lengths = [1usize, 2, 3, 4, 5, 13, 17, 22];
        let tokens: usize = lengths.iter().sum();
        for (hidden, heads) in [(64usize, 2usize), (64, 8)] {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let qkv: Vec<f32> = (0..tokens * 3 * hidden)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
                })
                .collect();
            let want = attention_one_query_at_a_time(&qkv, &lengths, hidden, heads);
            let mut got = vec![f32::NAN; tokens * hidden];
            attention_body(&qkv, &lengths, hidden, heads, &mut got, &mut Vec::new());
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{heads} heads of {}: blocked attention differs",
                hidden / heads
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
