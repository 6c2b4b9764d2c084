//! Requests-per-minute and tokens-per-minute limits: GCRA (the generic cell rate
//! algorithm) on one atomic per limiter.
//!
//! A limiter of `limit` units per `period_ns` emits one unit every `interval = period /
//! limit` (rounded up, so it never admits more than the limit) and tolerates a burst of the
//! whole limit. Its only state is the *theoretical arrival time* `tat`: consuming `cost`
//! units moves it to `max(tat, now) + cost × interval`, which is allowed while it stays
//! within `now + period`; otherwise the caller may retry after `new_tat − now − period`.
//!
//! Data flow: `check(&[(limiter, cost)], now)` consumes on each limiter in order with a CAS
//! loop and, if one refuses, gives back what the earlier ones took. The give-back is exact
//! when nobody touched that limiter meanwhile (a CAS back to the old value); under a race it
//! subtracts the cost, which can admit at most that cost early. An atomic multi-limiter
//! check would need a lock; the Redis backend's Lua script is exact.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CoreError, CoreResult};

/// Index of a limiter in its [`RateLimiter`].
pub type LimiterId = u32;

/// Why a rate check refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateRefusal {
    /// Position (in the checked list) of the limiter that refused.
    pub position: usize,
    /// Nanoseconds until the same check could pass; `None` when it never can (the cost is
    /// above the limiter's whole allowance).
    pub retry_after_ns: Option<u64>,
}

struct Cell {
    tat: AtomicU64,
    interval_ns: u64,
    period_ns: u64,
}

/// A set of GCRA limiters.
#[derive(Default)]
pub struct RateLimiter {
    cells: boxcar::Vec<Cell>,
}

/// What one limiter did during a check, kept so a later refusal can undo it.
#[derive(Clone, Copy)]
struct Taken<'a> {
    cell: &'a Cell,
    before: u64,
    after: u64,
    added: u64,
}

impl RateLimiter {
    /// No limiters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a limiter of `limit` units per `period_ns` nanoseconds (burst: the whole limit).
    pub fn add(&self, limit: u64, period_ns: u64) -> CoreResult<LimiterId> {
        if limit == 0 || period_ns == 0 {
            return Err(CoreError::InvalidInput(format!(
                "a rate limit needs a positive limit and period, got {limit} per {period_ns} ns"
            )));
        }
        let cell = Cell {
            tat: AtomicU64::new(0),
            interval_ns: period_ns.div_ceil(limit),
            period_ns,
        };
        LimiterId::try_from(self.cells.push(cell))
            .map_err(|_| CoreError::InvalidInput("too many rate limiters".into()))
    }

    /// How many limiters there are.
    pub fn len(&self) -> usize {
        self.cells.count()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cell(&self, id: LimiterId) -> CoreResult<&Cell> {
        self.cells
            .get(id as usize)
            .ok_or_else(|| CoreError::NotFound(format!("rate limiter {id}")))
    }

    /// Consume `cost` on every listed limiter, or on none (see the module doc for the
    /// give-back under races). The outer `Err` is an unknown limiter.
    pub fn check(
        &self,
        costs: &[(LimiterId, u64)],
        now_ns: u64,
    ) -> CoreResult<Result<(), RateRefusal>> {
        let cells = costs
            .iter()
            .map(|&(id, _)| self.cell(id))
            .collect::<CoreResult<Vec<_>>>()?;
        let mut taken: Vec<Taken<'_>> = Vec::with_capacity(costs.len());
        for (position, (&cell, &(_, cost))) in cells.iter().zip(costs).enumerate() {
            match consume(cell, cost, now_ns) {
                Ok(Some(t)) => taken.push(t),
                Ok(None) => {}
                Err(retry_after_ns) => {
                    for t in taken.iter().rev() {
                        give_back(t, now_ns);
                    }
                    return Ok(Err(RateRefusal {
                        position,
                        retry_after_ns,
                    }));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Nanoseconds until `cost` would pass on `limiter`, without consuming (0: now).
    /// `None` when it never can.
    pub fn wait_time(&self, limiter: LimiterId, cost: u64, now_ns: u64) -> CoreResult<Option<u64>> {
        let cell = self.cell(limiter)?;
        let tat = cell.tat.load(Ordering::Acquire);
        Ok(next_tat(cell, tat, cost, now_ns).map(|next| excess(cell, next, now_ns)))
    }

    /// Whether `limiter` has its whole allowance at `now_ns` (nothing consumed counts any
    /// more): it then behaves exactly as a new limiter of the same limit would.
    pub fn is_full(&self, limiter: LimiterId, now_ns: u64) -> CoreResult<bool> {
        Ok(self.cell(limiter)?.tat.load(Ordering::Acquire) <= now_ns)
    }
}

/// The new theoretical arrival time, `None` when `cost` exceeds the whole allowance.
fn next_tat(cell: &Cell, tat: u64, cost: u64, now_ns: u64) -> Option<u64> {
    let added = cost.checked_mul(cell.interval_ns)?;
    if added > cell.period_ns {
        return None;
    }
    tat.max(now_ns).checked_add(added)
}

/// How far `next` lies past the allowed horizon `now + period`.
fn excess(cell: &Cell, next: u64, now_ns: u64) -> u64 {
    next.saturating_sub(now_ns.saturating_add(cell.period_ns))
}

/// `Ok(Some)` consumed, `Ok(None)` nothing to consume, `Err(retry_after)` refused.
fn consume(cell: &Cell, cost: u64, now_ns: u64) -> Result<Option<Taken<'_>>, Option<u64>> {
    if cost == 0 {
        return Ok(None);
    }
    let mut tat = cell.tat.load(Ordering::Acquire);
    loop {
        let next = next_tat(cell, tat, cost, now_ns).ok_or(None)?;
        let wait = excess(cell, next, now_ns);
        if wait > 0 {
            return Err(Some(wait));
        }
        match cell
            .tat
            .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                return Ok(Some(Taken {
                    cell,
                    before: tat,
                    after: next,
                    added: next - tat.max(now_ns),
                }))
            }
            Err(seen) => tat = seen,
        }
    }
}

fn give_back(t: &Taken<'_>, now_ns: u64) {
    if t.cell
        .tat
        .compare_exchange(t.after, t.before, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        return;
    }
    let mut tat = t.cell.tat.load(Ordering::Acquire);
    loop {
        let next = tat.saturating_sub(t.added).max(now_ns.min(tat));
        match t
            .cell
            .tat
            .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return,
            Err(seen) => tat = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn admits_a_burst_of_the_limit_then_one_per_interval() {
        let rl = RateLimiter::new();
        let rpm = rl.add(60, 60 * SECOND).expect("limiter");
        let now = 1_000 * SECOND;
        for _ in 0..60 {
            assert_eq!(rl.check(&[(rpm, 1)], now), Ok(Ok(())));
        }
        let refused = rl
            .check(&[(rpm, 1)], now)
            .expect("ok")
            .expect_err("burst used");
        assert_eq!(refused.retry_after_ns, Some(SECOND));
        assert_eq!(rl.wait_time(rpm, 1, now), Ok(Some(SECOND)));
        assert_eq!(rl.check(&[(rpm, 1)], now + SECOND), Ok(Ok(())));
    }

    #[test]
    fn a_cost_above_the_limit_can_never_pass() {
        let rl = RateLimiter::new();
        let tpm = rl.add(1_000, 60 * SECOND).expect("limiter");
        let refused = rl
            .check(&[(tpm, 1_001)], 0)
            .expect("ok")
            .expect_err("too big");
        assert_eq!(refused.retry_after_ns, None);
        assert_eq!(rl.wait_time(tpm, 1_001, 0), Ok(None));
        assert_eq!(rl.check(&[(tpm, 1_000)], 0), Ok(Ok(())));
    }

    #[test]
    fn a_refusal_gives_back_what_earlier_limiters_took() {
        let rl = RateLimiter::new();
        let rpm = rl.add(10, 60 * SECOND).expect("limiter");
        let tpm = rl.add(100, 60 * SECOND).expect("limiter");
        let now = 5 * SECOND;
        assert_eq!(rl.check(&[(rpm, 1), (tpm, 100)], now), Ok(Ok(())));
        let refused = rl.check(&[(rpm, 1), (tpm, 1)], now).expect("ok");
        assert_eq!(refused.map_err(|r| r.position), Err(1));
        for _ in 0..9 {
            assert_eq!(rl.check(&[(rpm, 1)], now), Ok(Ok(())), "rpm was given back");
        }
        assert!(rl.check(&[(rpm, 1)], now).expect("ok").is_err());
    }

    #[test]
    fn full_once_what_was_consumed_has_drained() {
        let rl = RateLimiter::new();
        let rpm = rl.add(10, 60 * SECOND).expect("limiter");
        assert_eq!(rl.is_full(rpm, 0), Ok(true));
        assert_eq!(rl.check(&[(rpm, 2)], 100 * SECOND), Ok(Ok(())));
        assert_eq!(rl.is_full(rpm, 100 * SECOND), Ok(false));
        assert_eq!(rl.is_full(rpm, 112 * SECOND - 1), Ok(false));
        assert_eq!(rl.is_full(rpm, 112 * SECOND), Ok(true));
        assert!(rl.is_full(7, 0).is_err());
    }

    #[test]
    fn rejects_bad_limits_and_ids() {
        let rl = RateLimiter::new();
        assert!(rl.add(0, SECOND).is_err());
        assert!(rl.add(1, 0).is_err());
        assert!(rl.check(&[(3, 1)], 0).is_err());
        assert!(rl.is_empty());
        assert_eq!(rl.check(&[], 0), Ok(Ok(())));
    }
}
