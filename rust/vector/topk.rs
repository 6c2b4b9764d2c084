//! A bounded top-k heap: the best `k` (score, id) pairs of a scan, without a full sort.
//!
//! Data flow: the flat index offers each block of scores; a candidate below the current worst
//! kept score (`floor`) is dropped with one comparison, which is nearly every row of a large
//! scan; the rest replace the heap's worst. Per-thread heaps merge by offering one into the
//! other. Order: higher score first, equal scores by smaller id, so results are deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One candidate. Its order ranks *worse* candidates higher, so a max-heap of them has the
/// worst kept candidate on top, ready to be evicted. The slot rides along for rescoring.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hit {
    pub(super) score: f32,
    pub(super) id: u64,
    pub(super) slot: usize,
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Hit {}

/// The best `k` candidates seen so far, in a heap of size `k`.
pub(super) struct TopK {
    k: usize,
    pub(super) heap: BinaryHeap<Hit>,
    /// The worst kept score once the heap is full: anything below it is skipped without
    /// touching the heap, which is nearly every row of a large scan.
    floor: f32,
}

impl TopK {
    pub(super) fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
            floor: f32::NEG_INFINITY,
        }
    }

    /// Offer a block of scores for the rows starting at slot `first` (whose ids are `ids`).
    #[inline]
    pub(super) fn offer_block(&mut self, scores: &[f32], ids: &[u64], first: usize) {
        for (i, (&score, &id)) in scores.iter().zip(ids).enumerate() {
            if score >= self.floor {
                self.offer(Hit {
                    score,
                    id,
                    slot: first + i,
                });
            }
        }
    }

    pub(super) fn offer(&mut self, hit: Hit) {
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if hit < *worst {
                *worst = hit;
            }
        }
        if self.heap.len() == self.k {
            if let Some(worst) = self.heap.peek() {
                self.floor = worst.score;
            }
        }
    }

    pub(super) fn merge(&mut self, other: TopK) {
        for hit in other.heap {
            self.offer(hit);
        }
    }

    pub(super) fn into_sorted(self) -> Vec<(u64, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|hit| (hit.id, hit.score))
            .collect()
    }
}
