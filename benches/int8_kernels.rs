//! The int8 tiles side by side on one MiniLM-shaped model (random weights, the real shapes):
//! int8 on the AVX-512 VNNI tile, int8 on the AVX2 tile and bf16 (`vdpbf16ps`), one prompt
//! of 4, 10, 13 and 63 tokens, the variants interleaved in one thread so a busy neighbour
//! slows them alike. Each round runs a variant [`BLOCK`] times in a row: the first call of a
//! block meets weights another variant has evicted (bf16's 21 MB and int8's 11 MB do not
//! share a 32 MB L3 well), the rest run as a steady stream of prompts does. Prints, per
//! variant, the median wall time and thread CPU time (`CLOCK_THREAD_CPUTIME_ID`, which load
//! inflates less) of the warm calls, and the median wall time of the cold first calls.
//!
//! `cargo bench --bench int8_kernels` (pin it: `taskset -c 1 cargo bench ...`). A variant
//! the CPU cannot run is left out with a note. Not a criterion bench: criterion times one
//! case after another, and on a shared machine the order then decides the ratio.

use std::hint::black_box;
use std::time::Instant;

use _core::embed::{BertConfig, BertEncoder, Int8Kernel, Isa, LayerWeights, Precision};

const HIDDEN: usize = 384;
const INTERMEDIATE: usize = 1536;
const LAYERS: usize = 6;
const VOCAB: usize = 30522;
const POSITIONS: usize = 512;
const ROUNDS: usize = 60;
/// Calls of one variant in a row; the first is the cold one.
const BLOCK: usize = 8;

/// Deterministic pseudo-random floats in [-scale, scale) (xorshift).
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

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, out: *mut Timespec) -> i32;
}

/// Nanoseconds this thread has spent on a core (Linux x86-64; 0 if the clock fails).
fn thread_cpu_ns() -> u64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec (two i64 on x86-64 Linux).
    if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.sec as u64 * 1_000_000_000 + t.nsec as u64
}

/// Whether the CPU multiplies bf16 natively (AVX-512 BF16).
fn bf16_native() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn model(
    precision: Precision,
    words: &[f32],
    positions: &[f32],
    layers: &[Vec<Vec<f32>>],
) -> BertEncoder {
    let weights: Vec<LayerWeights<'_>> =
        layers.iter().map(|l| LayerWeights::from_parts(l)).collect();
    let config = BertConfig {
        hidden: HIDDEN,
        heads: 12,
        intermediate: INTERMEDIATE,
        eps: 1e-12,
        precision,
    };
    match BertEncoder::new(
        config,
        words.to_vec(),
        positions.to_vec(),
        vec![1.0; HIDDEN],
        vec![0.0; HIDDEN],
        &weights,
    ) {
        Ok(m) => m,
        Err(e) => panic!("model: {e}"),
    }
}

fn main() {
    let mut rng = Rng(42);
    let (h, i) = (HIDDEN, INTERMEDIATE);
    let layers: Vec<Vec<Vec<f32>>> = (0..LAYERS)
        .map(|_| {
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
        })
        .collect();
    let (words, positions) = (rng.vec(VOCAB * h, 1.0), rng.vec(POSITIONS * h, 0.5));
    let int8 = model(Precision::Int8, &words, &positions, &layers);
    let bf16 = model(Precision::Bf16, &words, &positions, &layers);
    let mut variants: Vec<(&str, &BertEncoder, Isa)> = Vec::new();
    if Isa::Avx512.is_supported() && Int8Kernel::for_isa(Isa::Avx512) == Int8Kernel::Vnni {
        variants.push(("int8 vnni", &int8, Isa::Avx512));
    } else {
        println!("no AVX-512 VNNI here: the VNNI tile is left out");
    }
    if Isa::Avx2.is_supported() {
        variants.push(("int8 avx2", &int8, Isa::Avx2));
    }
    if Isa::Avx512.is_supported() && bf16_native() {
        variants.push(("bf16", &bf16, Isa::Avx512));
    } else {
        println!("no AVX-512 BF16 here: bf16 is left out (its portable loop is not a peer)");
    }
    println!(
        "{ROUNDS} interleaved rounds of {BLOCK} calls per variant and prompt; \
         warm: median wall ms / thread-CPU ms, then cold: median wall ms"
    );
    for len in [4u32, 10, 13, 63] {
        let ids = vec![(100..100 + len).collect::<Vec<u32>>()];
        let mut wall = vec![Vec::with_capacity(ROUNDS); variants.len()];
        let mut cpu = vec![Vec::with_capacity(ROUNDS); variants.len()];
        let mut cold = vec![Vec::with_capacity(ROUNDS); variants.len()];
        for round in 0..ROUNDS + 2 {
            for n in 0..variants.len() {
                let v = if round % 2 == 0 {
                    n
                } else {
                    variants.len() - 1 - n
                };
                let (_, model, isa) = variants[v];
                for call in 0..BLOCK {
                    let (t0, c0) = (Instant::now(), thread_cpu_ns());
                    match model.encode_with(isa, black_box(&ids)) {
                        Ok(out) => {
                            black_box(out);
                        }
                        Err(e) => panic!("encode: {e}"),
                    }
                    let (c1, t1) = (thread_cpu_ns(), t0.elapsed());
                    if round < 2 {
                        continue;
                    }
                    if call == 0 {
                        cold[v].push(t1.as_secs_f64() * 1e3);
                    } else {
                        wall[v].push(t1.as_secs_f64() * 1e3);
                        cpu[v].push(c1.saturating_sub(c0) as f64 / 1e6);
                    }
                }
            }
        }
        let cells: Vec<String> = variants
            .iter()
            .enumerate()
            .map(|(v, (name, _, _))| {
                format!(
                    "{name} {:.3} / {:.3}, cold {:.3}",
                    median(&mut wall[v]),
                    median(&mut cpu[v]),
                    median(&mut cold[v])
                )
            })
            .collect();
        println!("{len:>3} tokens: {}", cells.join("  |  "));
    }
}
