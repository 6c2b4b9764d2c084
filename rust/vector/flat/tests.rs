//! Tests of the flat index against brute force, on every SIMD level, and of its
//! add/remove bookkeeping under random operation sequences.

#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = kernels::checked_norm(v, String::new).unwrap();
    let mut out = vec![0.0; v.len()];
    kernels::scale_into(v, norm, &mut out);
    out
}

/// Brute force: every stored vector scored in f64 against the normalised query, sorted
/// by score (best first) then id.
fn reference(index: &FlatIndex, query: &[f32]) -> Vec<(u64, f64)> {
    let q = normalised(query);
    let mut all: Vec<(u64, f64)> = index
        .ids
        .iter()
        .map(|&id| {
            let v = index.vector(id).unwrap();
            let s = v
                .iter()
                .zip(&q)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            (id, s)
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all
}

/// What a quantized search must return: the int8 top `rescore_width(k)` computed by brute
/// force with the scalar kernel, rescored with `level`'s f32 dot, best `k` of those.
fn reference_quantized(
    index: &FlatIndex,
    query: &[f32],
    k: usize,
    level: SimdLevel,
) -> Vec<(u64, f32)> {
    let q = normalised(query);
    let width = rescore_width(k.min(index.len())).min(index.len());
    let mut rescored: Vec<(u64, f32)> = reference_i8(index, query)
        .into_iter()
        .take(width)
        .map(|(id, _)| {
            (
                id,
                kernels::dot_f32_at(level, &q, index.vector(id).unwrap()),
            )
        })
        .collect();
    rescored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    rescored.truncate(k);
    rescored
}

/// The int8 scores exactly as the index computes them, scalar, sorted like the index.
fn reference_i8(index: &FlatIndex, query: &[f32]) -> Vec<(u64, f32)> {
    let q = normalised(query);
    let mut codes = vec![0i8; q.len()];
    let q_scale = kernels::quantize_into(&q, &mut codes);
    let dim = index.dim;
    let mut all: Vec<(u64, f32)> = (0..index.len())
        .map(|slot| {
            let raw = kernels::dot_i8_at(
                SimdLevel::Scalar,
                &codes,
                &index.codes[slot * dim..(slot + 1) * dim],
            );
            (index.ids[slot], raw as f32 * (q_scale * index.scales[slot]))
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all
}

/// `got` is a correct top-k: scores match the reference position by position, each id's
/// own score matches, and no id repeats.
fn assert_top_k(index: &FlatIndex, query: &[f32], k: usize, got: &[(u64, f32)]) {
    let want = reference(index, query);
    assert_eq!(got.len(), k.min(want.len()));
    let by_id: HashMap<u64, f64> = want.iter().copied().collect();
    let mut seen = std::collections::HashSet::new();
    for (i, &(id, score)) in got.iter().enumerate() {
        assert!(seen.insert(id), "id {id} twice");
        assert!(
            (f64::from(score) - want[i].1).abs() <= 1e-5,
            "rank {i}: {score} vs {}",
            want[i].1
        );
        assert!((f64::from(score) - by_id[&id]).abs() <= 1e-5, "id {id}");
    }
}

fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    // A small deterministic generator keeps these tests independent of proptest.
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn finds_the_nearest_and_orders_by_score() {
    let mut index = FlatIndex::new(3, false).unwrap();
    index
        .add(
            &[10, 11, 12],
            &[1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 1.0, 0.0],
        )
        .unwrap();
    let hits = index.search(&[3.0, 0.1, 0.0], 2).unwrap();
    assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![10, 12]);
    assert!(hits[0].1 > hits[1].1);
    // Stored vectors are unit length.
    let v = index.vector(11).unwrap();
    assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    assert_eq!(index.search(&[1.0, 0.0, 0.0], 10).unwrap().len(), 3);
    assert!(index.search(&[1.0, 0.0, 0.0], 0).unwrap().is_empty());
}

#[test]
fn equal_scores_rank_smaller_id_first() {
    let mut index = FlatIndex::new(2, false).unwrap();
    index
        .add(&[9, 3, 5], &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
        .unwrap();
    let ids: Vec<u64> = index
        .search(&[1.0, 0.0], 3)
        .unwrap()
        .iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(ids, vec![3, 5, 9]);
}

#[test]
fn errors_name_what_was_wrong() {
    assert!(FlatIndex::new(0, false).is_err());
    let mut index = FlatIndex::new(4, false).unwrap();
    let err = index.search(&[1.0, 2.0, 3.0], 1).unwrap_err().to_string();
    assert!(
        err.contains("dimension 3") && err.contains("dimension 4"),
        "{err}"
    );
    let err = index.add(&[1, 2], &[1.0; 4]).unwrap_err().to_string();
    assert!(err.contains("4 floats for 2 ids"), "{err}");
    let err = index
        .add(&[1, 2], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
        .unwrap_err();
    assert!(err.to_string().contains("id 2 is all zeros"), "{err}");
    let err = index
        .add(&[7], &[1.0, f32::INFINITY, 0.0, 0.0])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("id 7 has a non-finite value (inf) at position 1"),
        "{err}"
    );
    // A rejected batch stores nothing, not even its valid rows.
    assert!(index.is_empty());
    let err = index.search(&[0.0; 4], 1).unwrap_err().to_string();
    assert!(err.contains("query is all zeros"), "{err}");
    let err = index.search_batch(&[1.0; 6], 1).unwrap_err().to_string();
    assert!(err.contains("6 floats"), "{err}");
    let err = index
        .search_batch(&[1.0, 1.0, 1.0, 1.0, f32::NAN, 1.0, 1.0, 1.0], 1)
        .unwrap_err();
    assert!(
        err.to_string().contains("query 1 has a non-finite value"),
        "{err}"
    );
}

#[test]
fn replace_and_remove_keep_maps_right() {
    let mut index = FlatIndex::new(2, true).unwrap();
    index
        .add(&[1, 2, 3], &[1.0, 0.0, 0.0, 1.0, -1.0, 0.0])
        .unwrap();
    index.add(&[1], &[0.0, -1.0]).unwrap();
    assert_eq!(index.len(), 3);
    assert_eq!(index.search(&[0.0, -1.0], 1).unwrap()[0].0, 1);
    assert!(index.remove(1));
    assert!(!index.remove(1));
    index.check_invariants();
    assert_eq!(index.len(), 2);
    assert!(!index.contains(1) && index.contains(3));
    assert_eq!(index.search(&[-1.0, 0.0], 1).unwrap()[0].0, 3);
    assert!(index.remove(3) && index.remove(2));
    assert!(index.is_empty());
    index.check_invariants();
    assert!(index.search(&[1.0, 1.0], 3).unwrap().is_empty());
}

#[test]
fn default_parallel_threshold_is_a_scan_of_12_mib() {
    assert_eq!(
        FlatIndex::new(384, false).unwrap().parallel_threshold(),
        8_192
    );
    assert_eq!(
        FlatIndex::new(384, true).unwrap().parallel_threshold(),
        32_768
    );
    assert_eq!(
        FlatIndex::new(1 << 24, false).unwrap().parallel_threshold(),
        1
    );
}

#[test]
fn parallel_scan_equals_serial_scan() {
    let (n, dim) = (1000, 24);
    let data = rows(n, dim, 7);
    let ids: Vec<u64> = (0..n as u64).map(|i| i * 3 + 1).collect();
    let queries = rows(5, dim, 8);
    for quantize in [false, true] {
        let mut serial = FlatIndex::new(dim, quantize).unwrap();
        serial.add(&ids, &data).unwrap();
        serial.set_parallel_threshold(usize::MAX);
        let mut parallel = serial.clone();
        parallel.set_parallel_threshold(0);
        for threads in [2, 3, 7] {
            parallel.set_threads(threads);
            for k in [1, 10, 999, 1000, 5000] {
                let a = serial.search_batch(&queries, k).unwrap();
                let b = parallel.search_batch(&queries, k).unwrap();
                assert_eq!(a, b, "threads {threads} k {k}");
            }
        }
    }
}

#[test]
fn batch_equals_one_by_one() {
    let (n, dim) = (300, 40);
    let data = rows(n, dim, 1);
    let ids: Vec<u64> = (0..n as u64).collect();
    let queries = rows(7, dim, 2);
    for quantize in [false, true] {
        let mut index = FlatIndex::new(dim, quantize).unwrap();
        index.add(&ids, &data).unwrap();
        let batch = index.search_batch(&queries, 5).unwrap();
        assert_eq!(batch.len(), 7);
        for (j, hits) in batch.iter().enumerate() {
            assert_eq!(
                hits,
                &index.search(&queries[j * dim..(j + 1) * dim], 5).unwrap()
            );
        }
        assert!(index.search_batch(&[], 5).unwrap().is_empty());
    }
}

#[test]
fn every_level_finds_the_true_top_k() {
    let (n, dim) = (500, 384);
    let data = rows(n, dim, 3);
    let ids: Vec<u64> = (0..n as u64).map(|i| 1000 - i).collect();
    let query = rows(1, dim, 4);
    for level in SimdLevel::supported() {
        let mut index = FlatIndex::new(dim, false).unwrap();
        index.set_simd_level(level);
        index.add(&ids, &data).unwrap();
        let got = index.search(&query, 10).unwrap();
        assert_top_k(&index, &query, 10, &got);
        let mut quantized = FlatIndex::new(dim, true).unwrap();
        quantized.set_simd_level(level);
        quantized.add(&ids, &data).unwrap();
        let got = quantized.search(&query, 10).unwrap();
        assert_eq!(
            got,
            reference_quantized(&quantized, &query, 10, level),
            "{level:?}"
        );
        // On random data the int8 candidates contain the true top 10.
        assert_top_k(&quantized, &query, 10, &got);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(Vec<(u64, Vec<f32>)>),
    Remove(u64),
}

fn op(dim: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec(
            (0u64..24, proptest::collection::vec(-1.0f32..1.0, dim)),
            1..6,
        )
        .prop_map(Op::Add),
        2 => (0u64..24).prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn top_k_equals_brute_force(
        (dim, data, query) in (1usize..48, 1usize..120).prop_flat_map(|(dim, n)| (
            Just(dim),
            proptest::collection::vec(-1.0f32..1.0, n * dim),
            proptest::collection::vec(-1.0f32..1.0, dim),
        )),
        k in 0usize..20,
        parallel in any::<bool>(),
    ) {
        let n = data.len() / dim;
        let ids: Vec<u64> = (0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let mut index = FlatIndex::new(dim, false).unwrap();
        if parallel {
            index.set_parallel_threshold(0);
            index.set_threads(3);
        }
        // Zero rows or queries are rejected; skip the (rare) draws that produce them.
        prop_assume!(index.add(&ids, &data).is_ok());
        prop_assume!(kernels::checked_norm(&query, String::new).is_ok());
        for level in SimdLevel::supported() {
            index.set_simd_level(level);
            let got = index.search(&query, k).unwrap();
            assert_top_k(&index, &query, k, &got);
        }
    }

    #[test]
    fn quantized_top_k_equals_int8_brute_force(
        (dim, data, query) in (1usize..48, 1usize..120).prop_flat_map(|(dim, n)| (
            Just(dim),
            proptest::collection::vec(-1.0f32..1.0, n * dim),
            proptest::collection::vec(-1.0f32..1.0, dim),
        )),
        k in 0usize..20,
    ) {
        let n = data.len() / dim;
        let ids: Vec<u64> = (0..n as u64).rev().collect();
        let mut index = FlatIndex::new(dim, true).unwrap();
        prop_assume!(index.add(&ids, &data).is_ok());
        prop_assume!(kernels::checked_norm(&query, String::new).is_ok());
        for level in SimdLevel::supported() {
            index.set_simd_level(level);
            let want = reference_quantized(&index, &query, k, level);
            prop_assert_eq!(&index.search(&query, k).unwrap(), &want, "{:?}", level);
        }
    }

    #[test]
    fn random_add_remove_sequences_keep_invariants(
        (dim, ops) in (1usize..9).prop_flat_map(|dim| (
            Just(dim),
            proptest::collection::vec(op(dim), 1..40),
        )),
        quantize in any::<bool>(),
    ) {
        let mut index = FlatIndex::new(dim, quantize).unwrap();
        let mut model: BTreeMap<u64, Vec<f32>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Add(batch) => {
                    let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
                    let flat: Vec<f32> = batch.iter().flat_map(|(_, v)| v.clone()).collect();
                    let valid = batch.iter().all(|(_, v)| v.iter().any(|&x| x != 0.0));
                    let before = index.clone();
                    match index.add(&ids, &flat) {
                        Ok(()) => {
                            prop_assert!(valid);
                            for (id, v) in batch {
                                model.insert(id, normalised(&v));
                            }
                        }
                        Err(_) => {
                            prop_assert!(!valid);
                            prop_assert_eq!(&index.ids, &before.ids);
                            prop_assert_eq!(&index.vectors, &before.vectors);
                        }
                    }
                }
                Op::Remove(id) => {
                    prop_assert_eq!(index.remove(id), model.remove(&id).is_some());
                }
            }
            index.check_invariants();
            prop_assert_eq!(index.len(), model.len());
            for (id, v) in &model {
                prop_assert_eq!(index.vector(*id), Some(v.as_slice()));
            }
            if let Some((_, probe)) = model.iter().next() {
                let mut found: Vec<u64> =
                    index.search(probe, usize::MAX).unwrap().iter().map(|h| h.0).collect();
                found.sort_unstable();
                prop_assert_eq!(found, model.keys().copied().collect::<Vec<_>>());
            }
        }
    }
}
