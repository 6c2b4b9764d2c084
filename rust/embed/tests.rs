//! Unit and property tests of the encoder: every SIMD path against the scalar one, the
//! dense layer against an f64 reference, batching and input checks.

use proptest::prelude::*;

use super::int8::{activation_max, quantize, quantize_rows, scalar_tile, Int8Kernel, MAX_K, QMAX};
use super::linear::NR;
use super::linear::{gemm, reference, Linear, Precision};
use super::model::{BertConfig, BertEncoder, LayerWeights};
use super::Isa;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gemm_paths_match_the_reference(
        m in 1usize..40, k in 1usize..70, n in 1usize..100, seed in 1u64..u64::MAX,
        kind in 0usize..3,
    ) {
        let mut rng = Rng(seed);
        let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0), rng.vec(n, 1.0));
        let precision = [Precision::F32, Precision::F16, Precision::Bf16][kind];
        let layer = Linear::new(&w, &b, k, n, precision).unwrap();
        let mut scalar = vec![f32::NAN; m * n];
        gemm(Isa::Scalar, &x, m, &layer, &mut scalar);
        if precision == Precision::F32 {
            let want = reference(&x, m, &w, &b, k, n);
            prop_assert!(max_diff(&scalar, &want) <= 1e-5 * k as f32);
        }
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let mut got = vec![f32::NAN; m * n];
            gemm(isa, &x, m, &layer, &mut got);
            prop_assert!(max_diff(&got, &scalar) <= 1e-5 * k as f32, "{:?}", isa);
        }
    }
}

/// The int8 product written out plainly: quantise each column of `w` and each row of `x`
/// with [`quantize`], sum in i64, check the sum fits i32, dequantise as the kernels do.
fn int8_reference(x: &[f32], m: usize, w: &[f32], b: &[f32], k: usize, n: usize) -> Vec<f32> {
    let columns: Vec<(f32, Vec<i32>)> = (0..n)
        .map(|c| quantize(&(0..k).map(|r| w[r * n + c]).collect::<Vec<f32>>(), QMAX))
        .collect();
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        let (sx, qx) = quantize(&x[i * k..(i + 1) * k], activation_max(k));
        for (c, (sw, qw)) in columns.iter().enumerate() {
            let sum: i64 = qx
                .iter()
                .zip(qw)
                .map(|(&a, &b)| i64::from(a) * i64::from(b))
                .sum();
            let sum = i32::try_from(sum).unwrap();
            out[i * n + c] = sum as f32 * (sx * sw) + b[c];
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn int8_paths_equal_the_plain_quantised_product(
        m in 1usize..40, k in 1usize..70, n in 1usize..100, seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0), rng.vec(n, 1.0));
        let layer = Linear::new(&w, &b, k, n, Precision::Int8).unwrap();
        let want = int8_reference(&x, m, &w, &b, k, n);
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let mut got = vec![f32::NAN; m * n];
            gemm(isa, &x, m, &layer, &mut got);
            // Exact: the sums are integers and the dequantisation rounds the same way.
            prop_assert_eq!(&got, &want, "{:?}", isa);
        }
        // And it approximates the f32 product to ~8 bits per operand.
        let f32_want = reference(&x, m, &w, &b, k, n);
        prop_assert!(max_diff(&want, &f32_want) <= 0.02 * (k as f32).sqrt() + 1e-6);
    }

    #[test]
    fn row_quantisation_is_the_same_on_every_path(
        m in 1usize..6, k in 1usize..90, seed in 1u64..u64::MAX, zero_row in 0usize..8,
    ) {
        let mut rng = Rng(seed);
        let mut x = rng.vec(m * k, 3.0);
        if zero_row < m {
            x[zero_row * k..(zero_row + 1) * k].fill(0.0);
        }
        let pairs = k.div_ceil(2);
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let (mut q, mut sx) = (vec![u32::MAX; m * pairs], vec![f32::NAN; m]);
            let qmax = activation_max(k);
            quantize_rows(isa, &x, k, pairs, qmax, &mut q, &mut sx);
            for r in 0..m {
                let (s, want) = quantize(&x[r * k..(r + 1) * k], qmax);
                prop_assert_eq!(sx[r].to_bits(), s.to_bits());
                for (j, &v) in want.iter().enumerate() {
                    let got = (q[r * pairs + j / 2] >> (16 * (j % 2))) as u16 as i16;
                    prop_assert_eq!(i32::from(got), v, "{:?} row {} k {}", isa, r, j);
                }
                if k % 2 == 1 {
                    prop_assert_eq!(q[r * pairs + pairs - 1] >> 16, 0);
                }
            }
        }
    }
}

#[test]
fn row_quantisation_treats_nan_and_infinity_alike_on_every_path() {
    // A NaN is skipped by the row's maximum and quantised to 0; an infinite value makes
    // the whole row 0 (scale 0). 37 values: two 16-value steps and a tail with a lone last.
    let k = 37;
    let mut x: Vec<f32> = (0..3 * k).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
    x[5] = f32::NAN; // row 0, inside a vector step
    x[k + 35] = f32::NAN; // row 1, in the tail
    x[2 * k + 20] = f32::INFINITY; // row 2
    let (pairs, qmax) = (k.div_ceil(2), activation_max(k));
    for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
        let (mut q, mut sx) = (vec![u32::MAX; 3 * pairs], vec![f32::NAN; 3]);
        quantize_rows(isa, &x, k, pairs, qmax, &mut q, &mut sx);
        for r in 0..3 {
            let (s, want) = quantize(&x[r * k..(r + 1) * k], qmax);
            assert_eq!(sx[r].to_bits(), s.to_bits(), "{isa:?} row {r}");
            for (j, &v) in want.iter().enumerate() {
                let got = (q[r * pairs + j / 2] >> (16 * (j % 2))) as u16 as i16;
                assert_eq!(i32::from(got), v, "{isa:?} row {r} value {j}");
            }
        }
        assert_eq!(sx[2], 0.0);
        assert!(sx[0] > 0.0 && sx[1] > 0.0);
    }
}

#[test]
fn int8_sums_stay_exact_at_the_extremes() {
    // 4001 inputs (odd: a half-empty last pair), 37 outputs (a partial panel). Row 0 and
    // column 0 are constant, so their product sums k · 127 · activation_max(k) products at
    // the top of both ranges, within 2e6 of i32::MAX: a wrapped sum would flip its sign.
    let (m, k, n) = (9, 4001, 37);
    let top = k as i64 * 127 * i64::from(activation_max(k));
    assert!(top <= i64::from(i32::MAX) && top > i64::from(i32::MAX) - 2_000_000);
    let x: Vec<f32> = (0..m * k)
        .map(|i| if i >= k && i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let w: Vec<f32> = (0..k * n)
        .map(|i| if i % n != 0 && i % 7 < 3 { -2.0 } else { 2.0 })
        .collect();
    let b = vec![0.0; n];
    let layer = Linear::new(&w, &b, k, n, Precision::Int8).unwrap();
    let want = int8_reference(&x, m, &w, &b, k, n);
    // +-1 and +-2 quantise without error, so only the dequantisation rounds.
    let exact = reference(&x, m, &w, &b, k, n);
    assert!(
        (want[0] - 2.0 * k as f32).abs() <= 1e-6 * 2.0 * k as f32,
        "{}",
        want[0]
    );
    for (got, exact) in want.iter().zip(&exact) {
        assert!((got - exact).abs() <= 1e-6 * k as f32, "{got} {exact}");
    }
    for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
        let mut got = vec![f32::NAN; m * n];
        gemm(isa, &x, m, &layer, &mut got);
        assert_eq!(got, want, "{isa:?}");
    }
    assert!(MAX_K as i64 * i64::from(QMAX * activation_max(MAX_K)) <= i64::from(i32::MAX));
    assert_eq!(activation_max(384), 32767);
    assert_eq!(activation_max(1536), 11008);
    let too_wide = Linear::new(&vec![0.0; MAX_K + 1], &[0.0], MAX_K + 1, 1, Precision::Int8);
    assert!(too_wide.unwrap_err().to_string().contains("at most"));
}

/// Random i16 activation pairs within ±`top` (or all at ±`top` when `extreme`), as
/// `quantize_rows` packs them.
fn activation_pairs(rng: &mut Rng, count: usize, top: i32, extreme: bool) -> Vec<u32> {
    let mut one = || {
        let v = if extreme {
            if rng.next() < 0.0 {
                -top
            } else {
                top
            }
        } else {
            (rng.next() * top as f32) as i32
        };
        u32::from(v as i16 as u16)
    };
    (0..count).map(|_| one() | (one() << 16)).collect()
}

#[test]
fn every_int8_tile_equals_the_scalar_tile_bit_for_bit() {
    // Every row count each kernel takes, full and ragged panels, one pair up to MiniLM's
    // 768 (K = 1536), random and extreme operands (|sum| up to k · 127 · activation_max(k),
    // the top of the i32 range). Columns past `cols` must be left alone.
    let kernels: Vec<Int8Kernel> = Int8Kernel::ALL
        .into_iter()
        .filter(|k| k.is_supported())
        .collect();
    if !Int8Kernel::Vnni.is_supported() {
        eprintln!("this CPU lacks AVX-512 VNNI/BW: the VNNI int8 tile is not exercised");
    }
    let mut rng = Rng(29);
    let ldc = NR + 3;
    for &kernel in &kernels {
        for pairs in [1usize, 2, 5, 17, 192, 768] {
            let top = activation_max(2 * pairs);
            for extreme in [false, true] {
                let panel: Vec<i8> = (0..pairs * NR * 2)
                    .map(|_| {
                        let v = if extreme { 127.0 } else { rng.next() * 127.0 };
                        (if rng.next() < 0.0 { -v } else { v }) as i8
                    })
                    .collect();
                let sw = rng.vec(NR, 0.01);
                let bias = rng.vec(NR, 1.0);
                for rows in 1..=kernel.max_rows() {
                    let a = activation_pairs(&mut rng, rows * pairs, top, extreme);
                    let sx = rng.vec(rows, 1e-4);
                    for cols in [1usize, 5, 15, 16, 17, 31, 32] {
                        let mut want = vec![f32::NAN; rows * ldc];
                        scalar_tile(
                            &a, rows, pairs, &panel, &sx, &sw, &bias, &mut want, ldc, cols,
                        );
                        let mut got = vec![f32::NAN; rows * ldc];
                        kernel.tile(
                            &a, rows, pairs, &panel, &sx, &sw, &bias, &mut got, ldc, cols,
                        );
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "{kernel:?} rows {rows} cols {cols} pairs {pairs} \
                                 extreme {extreme}: value {i}"
                            );
                        }
                        assert!(got[cols..ldc].iter().all(|v| v.is_nan()), "{kernel:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn int8_kernel_follows_the_simd_level() {
    assert_eq!(Int8Kernel::for_isa(Isa::Scalar), Int8Kernel::Scalar);
    if Isa::Avx2.is_supported() {
        // A process held to AVX2 keeps the AVX2 tile even on a VNNI CPU.
        assert_eq!(Int8Kernel::for_isa(Isa::Avx2), Int8Kernel::Avx2);
    }
    let want = match (Isa::Avx512.is_supported(), Int8Kernel::Vnni.is_supported()) {
        (true, true) => Int8Kernel::Vnni,
        (true, false) => Int8Kernel::Avx2,
        _ => Int8Kernel::for_isa(Isa::Avx2),
    };
    assert_eq!(Int8Kernel::for_isa(Isa::Avx512), want);
    assert_eq!(want.name(), ["scalar", "avx2", "vnni"][want as usize]);
}

#[test]
fn int8_products_of_minilm_shapes_agree_on_every_path() {
    // The encoder's own shapes (K = 384 and 1536, N = 1152 and 384) at the row counts of
    // short prompts and past one 14-row tile: every path equals the scalar one exactly.
    let mut rng = Rng(41);
    for (k, n) in [(384usize, 1152usize), (1536, 384)] {
        let (w, b) = (rng.vec(k * n, 0.1), rng.vec(n, 0.1));
        let layer = Linear::new(&w, &b, k, n, Precision::Int8).unwrap();
        for m in [1usize, 4, 10, 13, 14, 15, 29] {
            let x = rng.vec(m * k, 2.0);
            let mut scalar = vec![f32::NAN; m * n];
            gemm(Isa::Scalar, &x, m, &layer, &mut scalar);
            for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
                let mut got = vec![f32::NAN; m * n];
                gemm(isa, &x, m, &layer, &mut got);
                assert_eq!(got, scalar, "{isa:?} k {k} m {m}");
            }
        }
    }
}

#[test]
fn gemm_over_several_row_blocks_matches_the_reference() {
    // K = 2000 makes a block 49 rows, so 120 rows run as three blocks of uneven tiles.
    let (m, k, n) = (120, 2000, 40);
    let mut rng = Rng(17);
    let (x, w, b) = (rng.vec(m * k, 1.0), rng.vec(k * n, 1.0), rng.vec(n, 1.0));
    let want = reference(&x, m, &w, &b, k, n);
    for precision in [Precision::F32, Precision::F16, Precision::Bf16] {
        let layer = Linear::new(&w, &b, k, n, precision).unwrap();
        let mut scalar = vec![f32::NAN; m * n];
        gemm(Isa::Scalar, &x, m, &layer, &mut scalar);
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let mut got = vec![f32::NAN; m * n];
            gemm(isa, &x, m, &layer, &mut got);
            assert!(max_diff(&got, &scalar) <= 2e-2, "{isa:?} {precision:?}");
        }
        if precision == Precision::F32 {
            assert!(max_diff(&scalar, &want) <= 2e-2);
        }
    }
}

/// A small random BERT with the MiniLM shape ratios.
fn tiny(precision: Precision, seed: u64) -> BertEncoder {
    tiny_with_heads(precision, seed, 4)
}

/// [`tiny`] with `heads` heads over its 64 hidden values.
fn tiny_with_heads(precision: Precision, seed: u64, heads: usize) -> BertEncoder {
    let (h, i, vocab, positions, layers) = (64, 128, 97, 40, 2);
    let mut rng = Rng(seed);
    let owned: Vec<Vec<Vec<f32>>> = (0..layers)
        .map(|_| {
            vec![
                rng.vec(h * 3 * h, 0.15),
                rng.vec(3 * h, 0.1),
                rng.vec(h * h, 0.15),
                rng.vec(h, 0.1),
                rng.vec(h, 0.2).iter().map(|v| 1.0 + v).collect(),
                rng.vec(h, 0.1),
                rng.vec(h * i, 0.15),
                rng.vec(i, 0.1),
                rng.vec(i * h, 0.1),
                rng.vec(h, 0.1),
                rng.vec(h, 0.2).iter().map(|v| 1.0 + v).collect(),
                rng.vec(h, 0.1),
            ]
        })
        .collect();
    let weights: Vec<LayerWeights<'_>> =
        owned.iter().map(|l| LayerWeights::from_parts(l)).collect();
    let config = BertConfig {
        hidden: h,
        heads,
        intermediate: i,
        eps: 1e-12,
        precision,
    };
    BertEncoder::new(
        config,
        rng.vec(vocab * h, 1.0),
        rng.vec(positions * h, 0.5),
        vec![1.0; h],
        vec![0.0; h],
        &weights,
    )
    .unwrap()
}

fn texts(seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng(seed);
    [1usize, 2, 7, 13, 16, 17, 33, 40]
        .iter()
        .map(|&len| {
            (0..len)
                .map(|_| ((rng.next() + 1.0) * 48.0) as u32 % 97)
                .collect()
        })
        .collect()
}

#[test]
fn every_path_matches_scalar_and_rows_are_unit() {
    for precision in [
        Precision::F16,
        Precision::F32,
        Precision::Bf16,
        Precision::Int8,
    ] {
        let model = tiny(precision, 7);
        let ids = texts(3);
        let scalar = model.encode_with(Isa::Scalar, &ids).unwrap();
        for row in scalar.chunks_exact(64) {
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let got = model.encode_with(isa, &ids).unwrap();
            // bf16 rounds every product's inputs, so a last-bit difference in one layer's
            // f32 sums can flip a rounding in the next: a looser (still tight) bound.
            // int8 likewise: a last-bit difference in a LayerNorm can move an activation
            // across a rounding boundary of the next layer's quantisation of its row.
            let bound = match precision {
                Precision::Bf16 => 2e-3,
                Precision::Int8 => 2e-2,
                _ => 2e-5,
            };
            let diff = max_diff(&got, &scalar);
            assert!(diff < bound, "{isa:?} {precision:?}: {diff}");
        }
    }
}

#[test]
fn heads_narrower_than_a_vector_match_scalar() {
    // 64 / 8 = 8 values per head: the attention's general (not 16-wide) branch.
    let model = tiny_with_heads(Precision::F32, 13, 8);
    let ids = texts(5);
    let scalar = model.encode_with(Isa::Scalar, &ids).unwrap();
    for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
        let got = model.encode_with(isa, &ids).unwrap();
        assert!(max_diff(&got, &scalar) < 2e-5, "{isa:?}");
    }
    assert!(max_diff(&scalar, &tiny(Precision::F32, 13).encode(&ids).unwrap()) > 1e-3);
}

#[test]
fn narrow_weights_stay_close_to_f32() {
    let ids = texts(11);
    let a = tiny(Precision::F32, 5).encode(&ids).unwrap();
    for (precision, bound) in [
        (Precision::F16, 1e-5),
        (Precision::Bf16, 1e-3),
        (Precision::Int8, 1e-2),
    ] {
        let b = tiny(precision, 5).encode(&ids).unwrap();
        for (x, y) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
            let cos: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            assert!(
                1.0 - cos < bound,
                "{precision:?}: cosine distance {}",
                1.0 - cos
            );
        }
    }
}

#[test]
fn a_batch_equals_its_texts_one_by_one() {
    let model = tiny(Precision::F16, 9);
    let ids = texts(4);
    let batch = model.encode(&ids).unwrap();
    for (n, text) in ids.iter().enumerate() {
        let alone = model.encode(std::slice::from_ref(text)).unwrap();
        assert!(max_diff(&alone, &batch[n * 64..(n + 1) * 64]) < 1e-6);
    }
    assert!(model.encode::<Vec<u32>>(&[]).unwrap().is_empty());
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let model = tiny(Precision::F32, 1);
    let err = model.encode(&[vec![1u32, 2], vec![]]).unwrap_err();
    assert!(err.to_string().contains("text 1 has 0 tokens"), "{err}");
    let err = model.encode(&[vec![5u32; 41]]).unwrap_err();
    assert!(err.to_string().contains("1 to 40"), "{err}");
    let err = model.encode(&[vec![1u32, 97]]).unwrap_err();
    assert!(err.to_string().contains("token id 97"), "{err}");
    assert!(Precision::parse("f8").is_err());
}
