//! Criterion benchmarks of the Rust kernels without Python in the way: cosine of two 384-d
//! vectors, top-10 flat search over 10k vectors (f32 and int8) and a ledger reserve+settle
//! pair on a three-account chain, on one thread and several (this replaces the
//! `#[ignore]` timing test the ledger had). `cargo bench --bench kernels` (or `make bench-rust`);
//! the Python-side figures, with their peers, come from `routeguard bench`.

use std::hint::black_box;
use std::thread;
use std::time::Instant;

use _core::budget::{AccountSpec, Ledger, Window};
use _core::vector::{cosine, FlatIndex};
use criterion::{criterion_group, criterion_main, Criterion};

const DIM: usize = 384;
const ROWS: usize = 10_000;

/// Deterministic pseudo-random floats in [-1, 1) (xorshift), so runs compare.
fn floats(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn vector(c: &mut Criterion) {
    let (a, b) = (floats(DIM, 1), floats(DIM, 2));
    c.bench_function("cosine 384-d", |bench| {
        bench.iter(|| cosine(black_box(&a), black_box(&b)))
    });
    let data = floats(ROWS * DIM, 3);
    let ids: Vec<u64> = (0..ROWS as u64).collect();
    let query = floats(DIM, 4);
    for quantize in [false, true] {
        let Ok(mut index) = FlatIndex::new(DIM, quantize) else {
            panic!("index of dim {DIM}");
        };
        if let Err(e) = index.add(&ids, &data) {
            panic!("add: {e}");
        }
        index.set_threads(1);
        let name = if quantize { "int8" } else { "f32" };
        c.bench_function(
            &format!("flat search top-10, 10k x 384, {name}, 1 thread"),
            |bench| bench.iter(|| index.search(black_box(&query), 10)),
        );
    }
}

fn ledger(c: &mut Criterion) {
    let ledger = Ledger::new();
    let spec = AccountSpec {
        limit: Some(1 << 50),
        soft_limit: None,
        window: Window::Lifetime,
    };
    let chain: Vec<_> = (0..3)
        .map(|_| match ledger.add_account(spec) {
            Ok(id) => id,
            Err(e) => panic!("account: {e}"),
        })
        .collect();
    let pair = || match ledger.reserve(black_box(&chain), 100, 0) {
        Ok(Ok(hold)) => ledger.settle(hold, 50, 0),
        other => panic!("reserve refused: {other:?}"),
    };
    c.bench_function("ledger reserve+settle, 3-account chain", |bench| {
        bench.iter(pair)
    });
    // Threads sharing one chain: the time per pair is wall time over all threads' pairs.
    for threads in [2u32, 4] {
        c.bench_function(
            &format!("ledger reserve+settle, 3-account chain, {threads} threads"),
            |bench| {
                bench.iter_custom(|iters| {
                    let start = Instant::now();
                    thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(|| {
                                (0..iters).for_each(|_| {
                                    black_box(pair());
                                })
                            });
                        }
                    });
                    start.elapsed() / threads
                })
            },
        );
    }
}

criterion_group!(kernels, vector, ledger);
criterion_main!(kernels);
