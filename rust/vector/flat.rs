//! The flat (exact, brute-force) cosine index the semantic cache searches.
//!
//! Data flow: `add` validates a whole batch first (dimension, finite values, no zero vector),
//! so a rejected batch changes nothing, then L2-normalises each vector into one contiguous
//! `Vec<f32>` (row `slot` at `slot·dim`), and, for a quantized index, also stores its int8
//! codes and scale. `ids[slot]` and `slots[id]` map both ways; `remove` swap-removes the last
//! row into the hole and fixes the moved id's slot, so storage stays dense.
//!
//! `search` normalises (and quantizes) the query, then scans rows in cache-sized blocks: one
//! kernel call scores a block ([`kernels::scores_f32`] / [`kernels::scores_i8`]) and a bounded
//! heap keeps the best `k` (no full sort). Cosine is a plain dot product because everything is
//! normalised. A quantized index scans the int8 codes (a quarter of the memory traffic), keeps
//! the best [`rescore_width`]`(k)` candidates and rescores those against the stored `f32` rows,
//! so the scores it returns are exact and only the choice of candidates is approximate.
//!
//! When `rows × queries` reaches [`FlatIndex::parallel_threshold`], the rows are split over
//! `threads` scoped threads, each with its own heaps, merged at the end. Results are ordered
//! by score, best first; equal scores by smaller id first.

use std::collections::HashMap;
use std::ops::Range;

use super::kernels::{self, SimdLevel};
use super::topk::{Hit, TopK};
use crate::error::{CoreError, CoreResult};

/// The default [`FlatIndex::parallel_threshold`] is the number of row-scores that reads this
/// many bytes of vectors: 8,192 `f32` rows or 32,768 int8 rows at dimension 384. Measured on
/// 2 cores, a smaller scan loses more to spawning a thread than it gains, for either width.
pub const DEFAULT_PARALLEL_BYTES: usize = 12 << 20;

/// How many int8 candidates a quantized search rescores with `f32` to return its top `k`.
/// Int8 scores of unit vectors are off by about 5e-4 (at most a few 1e-3 in practice), so
/// the true top `k` is lost only if more than `k + 32` other rows score within that margin.
pub fn rescore_width(k: usize) -> usize {
    k.saturating_mul(2).max(k.saturating_add(32))
}

/// Rows scored per kernel call, sized so a block of row data stays in L1/L2 while every
/// query of a batch is scored against it.
const BLOCK_BYTES: usize = 64 * 1024;

/// An exact top-k cosine index over vectors of one fixed dimension.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    quantized: bool,
    /// Normalised vectors, row-major, `len() × dim`.
    vectors: Vec<f32>,
    /// Int8 codes of `vectors` (quantized indexes only), row-major.
    codes: Vec<i8>,
    /// Per-row quantization scales (quantized indexes only).
    scales: Vec<f32>,
    /// Slot → id.
    ids: Vec<u64>,
    /// Id → slot.
    slots: HashMap<u64, usize>,
    parallel_threshold: usize,
    threads: usize,
    level: SimdLevel,
}

/// Queries after validation: normalised, and quantized too if the index is.
struct Prepared {
    normalised: Vec<f32>,
    /// Int8 codes and per-query scales (quantized indexes only).
    quantized: Option<(Vec<i8>, Vec<f32>)>,
}

impl FlatIndex {
    /// An empty index for vectors of dimension `dim`. A `quantize`d index also keeps int8
    /// codes and scans those (4× less memory traffic), rescoring its candidates exactly.
    pub fn new(dim: usize, quantize: bool) -> CoreResult<Self> {
        if dim == 0 {
            return Err(CoreError::InvalidInput(
                "an index needs a dimension of at least 1".to_owned(),
            ));
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(FlatIndex {
            dim,
            quantized: quantize,
            vectors: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            ids: Vec::new(),
            slots: HashMap::new(),
            parallel_threshold: (DEFAULT_PARALLEL_BYTES / (dim * if quantize { 1 } else { 4 }))
                .max(1),
            threads,
            level: SimdLevel::detect(),
        })
    }

    /// The dimension every vector must have.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many vectors the index holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether searches scan int8 codes instead of `f32`.
    pub fn is_quantized(&self) -> bool {
        self.quantized
    }

    /// Whether a vector is stored under `id`.
    pub fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    /// The stored (normalised) vector of `id`.
    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        let slot = *self.slots.get(&id)?;
        self.vectors.get(slot * self.dim..(slot + 1) * self.dim)
    }

    /// Row-scores (`rows × queries`) in one call from which the scan is split over threads
    /// (default: see [`DEFAULT_PARALLEL_BYTES`]).
    pub fn parallel_threshold(&self) -> usize {
        self.parallel_threshold
    }

    /// Set [`FlatIndex::parallel_threshold`]; `usize::MAX` keeps every scan on one thread.
    pub fn set_parallel_threshold(&mut self, rows: usize) {
        self.parallel_threshold = rows;
    }

    /// The most threads one scan uses (default: the machine's available parallelism).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Set [`FlatIndex::threads`] (at least 1).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// The kernels this index scans with.
    pub fn simd_level(&self) -> SimdLevel {
        self.level
    }

    /// Scan with `level` instead of the detected one (for tests and benchmarks); a level the
    /// CPU lacks falls back to scalar.
    pub fn set_simd_level(&mut self, level: SimdLevel) {
        self.level = if level.is_supported() {
            level
        } else {
            SimdLevel::Scalar
        };
    }

    /// Add `ids.len()` vectors laid out row-major in `vectors`, replacing the vector of an id
    /// already present (within one batch, the last occurrence of an id wins). The whole batch
    /// is checked before anything is stored, so an error leaves the index unchanged.
    pub fn add(&mut self, ids: &[u64], vectors: &[f32]) -> CoreResult<()> {
        let dim = self.dim;
        if ids.len().checked_mul(dim) != Some(vectors.len()) {
            return Err(CoreError::InvalidInput(format!(
                "got {} floats for {} ids, but each id needs one vector of dimension {dim}",
                vectors.len(),
                ids.len()
            )));
        }
        let norms = vectors
            .chunks_exact(dim)
            .zip(ids)
            .map(|(row, id)| kernels::checked_norm(row, || format!("the vector for id {id}")))
            .collect::<CoreResult<Vec<f64>>>()?;

        self.ids.reserve(ids.len());
        self.vectors.reserve(vectors.len());
        if self.quantized {
            self.codes.reserve(vectors.len());
            self.scales.reserve(ids.len());
        }
        for ((row, &id), norm) in vectors.chunks_exact(dim).zip(ids).zip(norms) {
            let slot = self.slot_for(id);
            let range = slot * dim..(slot + 1) * dim;
            kernels::scale_into(row, norm, &mut self.vectors[range.clone()]);
            if self.quantized {
                self.scales[slot] =
                    kernels::quantize_into(&self.vectors[range.clone()], &mut self.codes[range]);
            }
        }
        Ok(())
    }

    /// The slot of `id`, appending a fresh (zeroed) row if it is new.
    fn slot_for(&mut self, id: u64) -> usize {
        if let Some(&slot) = self.slots.get(&id) {
            return slot;
        }
        let slot = self.ids.len();
        self.ids.push(id);
        self.slots.insert(id, slot);
        self.vectors.resize(self.vectors.len() + self.dim, 0.0);
        if self.quantized {
            self.codes.resize(self.codes.len() + self.dim, 0);
            self.scales.push(0.0);
        }
        slot
    }

    /// Remove the vector of `id`; `false` if there was none. The last row moves into the
    /// freed slot, so removal is O(dim) and storage stays dense.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let dim = self.dim;
        let last = self.ids.len() - 1;
        if slot != last {
            let moved = self.ids[last];
            self.ids[slot] = moved;
            self.slots.insert(moved, slot);
            self.vectors
                .copy_within(last * dim..(last + 1) * dim, slot * dim);
            if self.quantized {
                self.codes
                    .copy_within(last * dim..(last + 1) * dim, slot * dim);
                self.scales[slot] = self.scales[last];
            }
        }
        self.ids.truncate(last);
        self.vectors.truncate(last * dim);
        if self.quantized {
            self.codes.truncate(last * dim);
            self.scales.truncate(last);
        }
        true
    }

    /// The `min(k, len())` stored ids most similar to `query` by cosine, best first, with
    /// their exact scores (a quantized index picks its candidates by int8 score).
    pub fn search(&self, query: &[f32], k: usize) -> CoreResult<Vec<(u64, f32)>> {
        if query.len() != self.dim {
            return Err(CoreError::InvalidInput(format!(
                "the query has dimension {} but the index has dimension {}",
                query.len(),
                self.dim
            )));
        }
        let prepared = self.prepare(query, |_| "the query".to_owned())?;
        Ok(self.run(&prepared, 1, k).pop().unwrap_or_default())
    }

    /// [`FlatIndex::search`] for each `dim`-wide row of `queries`, in one pass over the index.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> CoreResult<Vec<Vec<(u64, f32)>>> {
        if !queries.len().is_multiple_of(self.dim) {
            return Err(CoreError::InvalidInput(format!(
                "got {} floats of queries, not a whole number of vectors of dimension {}",
                queries.len(),
                self.dim
            )));
        }
        let count = queries.len() / self.dim;
        let prepared = self.prepare(queries, |j| format!("query {j}"))?;
        Ok(self.run(&prepared, count, k))
    }

    /// Validate, normalise and (for a quantized index) quantize each query row.
    fn prepare(&self, queries: &[f32], name: impl Fn(usize) -> String) -> CoreResult<Prepared> {
        let mut normalised = vec![0.0f32; queries.len()];
        for (j, (src, dst)) in queries
            .chunks_exact(self.dim)
            .zip(normalised.chunks_exact_mut(self.dim))
            .enumerate()
        {
            let norm = kernels::checked_norm(src, || name(j))?;
            kernels::scale_into(src, norm, dst);
        }
        let quantized = self.quantized.then(|| {
            let mut codes = vec![0i8; normalised.len()];
            let scales = normalised
                .chunks_exact(self.dim)
                .zip(codes.chunks_exact_mut(self.dim))
                .map(|(src, dst)| kernels::quantize_into(src, dst))
                .collect();
            (codes, scales)
        });
        Ok(Prepared {
            normalised,
            quantized,
        })
    }

    /// Score `count` prepared queries against every row and keep each one's top `k`; for a
    /// quantized index, keep the int8 top [`rescore_width`] and rescore those exactly.
    fn run(&self, prepared: &Prepared, count: usize, k: usize) -> Vec<Vec<(u64, f32)>> {
        let n = self.len();
        let k = k.min(n);
        if k == 0 || count == 0 {
            return vec![Vec::new(); count];
        }
        let width = if self.quantized {
            rescore_width(k).min(n)
        } else {
            k
        };
        let tops = self.scan_all(prepared, count, width);
        if !self.quantized {
            return tops.into_iter().map(TopK::into_sorted).collect();
        }
        tops.into_iter()
            .enumerate()
            .map(|(j, candidates)| {
                self.rescore(
                    &prepared.normalised[j * self.dim..(j + 1) * self.dim],
                    candidates,
                    k,
                )
            })
            .collect()
    }

    /// The best `k` of `candidates` by their exact `f32` cosine with `query`.
    fn rescore(&self, query: &[f32], candidates: TopK, k: usize) -> Vec<(u64, f32)> {
        let dim = self.dim;
        let mut top = TopK::new(k);
        for hit in candidates.heap {
            let row = &self.vectors[hit.slot * dim..(hit.slot + 1) * dim];
            top.offer(Hit {
                score: kernels::dot_f32_at(self.level, query, row),
                ..hit
            });
        }
        top.into_sorted()
    }

    /// Every query's top `k` over all rows, split over threads when the work is large.
    fn scan_all(&self, prepared: &Prepared, count: usize, k: usize) -> Vec<TopK> {
        let n = self.len();
        let parallel = self.threads > 1 && n.saturating_mul(count) >= self.parallel_threshold;
        let chunks = if parallel { self.threads.min(n) } else { 1 };
        if chunks == 1 {
            self.scan(prepared, count, k, 0..n)
        } else {
            let per = n.div_ceil(chunks);
            std::thread::scope(|scope| {
                let handles: Vec<_> = (1..chunks)
                    .map(|c| c * per..((c + 1) * per).min(n))
                    .filter(|rows| !rows.is_empty())
                    .map(|rows| scope.spawn(move || self.scan(prepared, count, k, rows)))
                    .collect();
                // The calling thread scans the first chunk instead of idling.
                let mut tops = self.scan(prepared, count, k, 0..per.min(n));
                for handle in handles {
                    match handle.join() {
                        Ok(part) => {
                            for (top, other) in tops.iter_mut().zip(part) {
                                top.merge(other);
                            }
                        }
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                tops
            })
        }
    }

    /// Score every query against the rows in `rows`, block by block.
    fn scan(&self, prepared: &Prepared, count: usize, k: usize, rows: Range<usize>) -> Vec<TopK> {
        let dim = self.dim;
        let mut tops: Vec<TopK> = (0..count).map(|_| TopK::new(k)).collect();
        let row_bytes = dim
            * match prepared.quantized {
                None => std::mem::size_of::<f32>(),
                Some(_) => std::mem::size_of::<i8>(),
            };
        let block = (BLOCK_BYTES / row_bytes).clamp(16, 4096);
        let mut buffer = vec![0.0f32; block.min(rows.len())];
        let mut start = rows.start;
        while start < rows.end {
            let end = (start + block).min(rows.end);
            let out = &mut buffer[..end - start];
            let ids = &self.ids[start..end];
            for (j, top) in tops.iter_mut().enumerate() {
                let query = j * dim..(j + 1) * dim;
                match &prepared.quantized {
                    None => kernels::scores_f32(
                        self.level,
                        &prepared.normalised[query],
                        &self.vectors[start * dim..end * dim],
                        out,
                    ),
                    Some((codes, scales)) => kernels::scores_i8(
                        self.level,
                        &codes[query],
                        scales[j],
                        &self.codes[start * dim..end * dim],
                        &self.scales[start..end],
                        out,
                    ),
                }
                top.offer_block(out, ids, start);
            }
            start = end;
        }
        tops
    }

    /// Panic unless the slot/id maps and storage agree (tests only).
    #[cfg(test)]
    fn check_invariants(&self) {
        let n = self.ids.len();
        assert_eq!(self.slots.len(), n);
        assert_eq!(self.vectors.len(), n * self.dim);
        if self.quantized {
            assert_eq!(self.codes.len(), n * self.dim);
            assert_eq!(self.scales.len(), n);
        } else {
            assert!(self.codes.is_empty() && self.scales.is_empty());
        }
        for (slot, id) in self.ids.iter().enumerate() {
            assert_eq!(self.slots.get(id), Some(&slot), "id {id}");
        }
    }
}

#[cfg(test)]
mod tests;
