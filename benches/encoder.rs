//! Criterion benchmarks of the text encoder without Python in the way (these replace the two
//! `#[ignore]` timing tests `embed::tests` had): a MiniLM-shaped model with random weights
//! encoding one prompt of 10, 13, 18 and 60 tokens at each precision, and the dense layers
//! alone (the 24 GEMMs of six layers) at 10..800 rows. Both run on the instruction set
//! `Isa::detect` picks, so `ROUTEGUARD_SIMD=avx2` holds them to AVX2.
//!
//! `cargo bench --bench encoder` (or `make bench-rust`); `cargo bench --bench encoder -- f16`
//! runs the f16 cases only. The figures with the real model and tokenizer come from
//! `routeguard bench --suite embed`.

use std::hint::black_box;

use _core::embed::linear::gemm;
use _core::embed::{BertConfig, BertEncoder, Isa, LayerWeights, Linear, Precision};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const HIDDEN: usize = 384;
const INTERMEDIATE: usize = 1536;
const LAYERS: usize = 6;
const VOCAB: usize = 30522;
const POSITIONS: usize = 512;
const PRECISIONS: [Precision; 4] = [
    Precision::F32,
    Precision::F16,
    Precision::Bf16,
    Precision::Int8,
];

/// Deterministic pseudo-random floats in [-scale, scale) (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

/// One layer's parts in the order `LayerWeights::from_parts` reads them.
fn layer_parts(rng: &mut Rng) -> Vec<Vec<f32>> {
    let (h, i) = (HIDDEN, INTERMEDIATE);
    vec![
        rng.vec(h * 3 * h, 0.05),
        rng.vec(3 * h, 0.1),
        rng.vec(h * h, 0.05),
        rng.vec(h, 0.1),
        vec![1.0; h],
        vec![0.0; h],
        rng.vec(h * i, 0.05),
        rng.vec(i, 0.1),
        rng.vec(i * h, 0.05),
        rng.vec(h, 0.1),
        vec![1.0; h],
        vec![0.0; h],
    ]
}

fn encode(c: &mut Criterion) {
    let mut rng = Rng(42);
    let owned: Vec<Vec<Vec<f32>>> = (0..LAYERS).map(|_| layer_parts(&mut rng)).collect();
    let weights: Vec<LayerWeights<'_>> =
        owned.iter().map(|l| LayerWeights::from_parts(l)).collect();
    let (words, positions) = (
        rng.vec(VOCAB * HIDDEN, 1.0),
        rng.vec(POSITIONS * HIDDEN, 0.5),
    );
    let mut group = c.benchmark_group("encode one prompt");
    for precision in PRECISIONS {
        let config = BertConfig {
            hidden: HIDDEN,
            heads: 12,
            intermediate: INTERMEDIATE,
            eps: 1e-12,
            precision,
        };
        let model = match BertEncoder::new(
            config,
            words.clone(),
            positions.clone(),
            vec![1.0; HIDDEN],
            vec![0.0; HIDDEN],
            &weights,
        ) {
            Ok(m) => m,
            Err(e) => panic!("model: {e}"),
        };
        for len in [10u32, 13, 18, 60] {
            let ids = vec![(0..len).collect::<Vec<u32>>()];
            let id = format!("{} {}", precision.name(), model.isa().name());
            group.bench_with_input(
                BenchmarkId::new(id, format!("{len} tokens")),
                &ids,
                |b, ids| {
                    b.iter(|| match model.encode(black_box(ids)) {
                        Ok(v) => v,
                        Err(e) => panic!("encode: {e}"),
                    })
                },
            );
        }
    }
    group.finish();
}

fn dense_layers(c: &mut Criterion) {
    let mut rng = Rng(3);
    let shapes = [
        (HIDDEN, 3 * HIDDEN),
        (HIDDEN, HIDDEN),
        (HIDDEN, INTERMEDIATE),
        (INTERMEDIATE, HIDDEN),
    ];
    let isa = Isa::detect();
    let mut group = c.benchmark_group("dense layers of six blocks");
    for precision in PRECISIONS {
        let layers: Vec<Linear> = (0..LAYERS)
            .flat_map(|_| shapes)
            .map(|(k, n)| {
                match Linear::new(&rng.vec(k * n, 0.1), &rng.vec(n, 0.1), k, n, precision) {
                    Ok(l) => l,
                    Err(e) => panic!("layer {k}x{n}: {e}"),
                }
            })
            .collect();
        for m in [10usize, 13, 18, 63, 800] {
            let x = rng.vec(m * INTERMEDIATE, 1.0);
            let mut out = vec![0f32; m * INTERMEDIATE];
            let flops: usize = layers
                .iter()
                .map(|l| 2 * m * l.inputs() * l.outputs())
                .sum();
            // Throughput in "elements" = floating-point operations: criterion prints FLOP/s.
            group.throughput(Throughput::Elements(flops as u64));
            let id = format!("{} {}", precision.name(), isa.name());
            group.bench_function(BenchmarkId::new(id, format!("m={m}")), |b| {
                b.iter(|| {
                    for layer in &layers {
                        gemm(isa, black_box(&x), m, layer, &mut out);
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(encoder, encode, dense_layers);
criterion_main!(encoder);
