//! One budget account: its limits, its window of spend and the atomics that keep them.
//!
//! Data flow: every operation first computes the account's current *bucket* (a window id
//! for calendar windows, `now / bucket_width` for rolling ones) and calls [`Account::advance`],
//! which retires the spend of buckets that have left the window. A reservation then CASes
//! `used` (live committed spend + outstanding holds) against the hard limit; a settlement
//! moves its hold out of `used`/`held` and deposits the actual cost into the current
//! bucket's slot.
//!
//! Each slot is one `AtomicU128` packing `(bucket tag, amount)`, so replacing an expired
//! bucket's content and retiring its amount from `used` happens exactly once, decided by a
//! single compare-and-swap: whoever swaps the old content out subtracts it. Tags are full
//! 64-bit bucket indexes, so they never wrap. Calendar windows are the case of one slot:
//! rolling over to the next window *is* retiring the previous window's slot.
//!
//! Invariant (at quiescence): `used == held + Σ amounts not yet retired`, and
//! `spent(now) == Σ amounts of live buckets`. Retirement only ever lags, so `used` may
//! briefly over-count (a reservation is refused that a moment later would pass) but never
//! under-counts: the ledger errs on the side of refusing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use portable_atomic::AtomicU128;

use crate::error::{CoreError, CoreResult};

/// Index of a calendar registered with [`crate::budget::Ledger::add_calendar`].
pub type CalendarId = u32;

/// The largest amount (micro-dollars) one call may move: 2^53, about nine billion dollars.
/// Every sum the ledger keeps then fits an `i64` with room for overage, and every amount is
/// exactly representable as a Python float too.
pub const MAX_AMOUNT: u64 = 1 << 53;

/// The most buckets a rolling window may use (advancing scans every slot once per bucket).
pub const MAX_BUCKETS: u32 = 4096;

/// How an account's spend is grouped into windows that reset or age out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Calendar-aligned (daily, weekly, monthly in some time zone): the window id is read
    /// from a ledger calendar that the caller moves forward. Time zones and DST are the
    /// caller's business (Python's `zoneinfo`); the ledger only needs ids that increase.
    Calendar(CalendarId),
    /// The last `width_ns` nanoseconds, tracked in `buckets` buckets. Spend is never
    /// forgotten early: it counts for at least `width_ns` and at most one bucket longer.
    Rolling { width_ns: u64, buckets: u32 },
    /// Never resets: a lifetime allowance (prepaid credit).
    Lifetime,
}

/// What an account is created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountSpec {
    /// Hard limit in micro-dollars per window: a reservation past it is refused. `None`
    /// tracks spend without refusing.
    pub limit: Option<u64>,
    /// Soft limit: reservations reaching it pass but are flagged for an alert.
    pub soft_limit: Option<u64>,
    /// How spend is windowed.
    pub window: Window,
}

/// A limit as stored: `None` is "no limit".
fn stored_limit(limit: Option<u64>, what: &str) -> CoreResult<i64> {
    match limit {
        None => Ok(i64::MAX),
        Some(v) if v <= MAX_AMOUNT => Ok(v as i64),
        Some(v) => Err(CoreError::InvalidInput(format!(
            "{what} {v} is above the largest supported amount {MAX_AMOUNT} micro-dollars"
        ))),
    }
}

fn pack(tag: u64, amount: u64) -> u128 {
    (u128::from(tag) << 64) | u128::from(amount)
}

fn unpack(word: u128) -> (u64, u64) {
    ((word >> 64) as u64, word as u64)
}

/// One account's atomics. Aligned to two cache lines so that two accounts hammered by
/// different threads never share one (x86 prefetches lines in pairs).
#[repr(align(128))]
pub(crate) struct Account {
    /// Committed spend not yet retired + outstanding holds: what a reservation is checked on.
    used: AtomicI64,
    /// Outstanding holds only (reported as `reserved`).
    held: AtomicI64,
    /// The highest bucket for which expired slots have been retired.
    swept: AtomicU64,
    limit: AtomicI64,
    soft_limit: AtomicI64,
    window: Window,
    /// Rolling: nanoseconds per bucket (0 for the other kinds).
    bucket_ns: u64,
    /// How many buckets before the current one still count (0 for calendar and lifetime).
    span: u64,
    slots: Box<[AtomicU128]>,
}

impl Account {
    pub(crate) fn new(spec: AccountSpec) -> CoreResult<Self> {
        let limit = stored_limit(spec.limit, "limit")?;
        let soft_limit = stored_limit(spec.soft_limit, "soft limit")?;
        let (bucket_ns, span) = match spec.window {
            Window::Rolling { width_ns, buckets } => {
                if buckets == 0 || buckets > MAX_BUCKETS {
                    return Err(CoreError::InvalidInput(format!(
                        "a rolling window needs 1..={MAX_BUCKETS} buckets, got {buckets}"
                    )));
                }
                if width_ns < u64::from(buckets) {
                    return Err(CoreError::InvalidInput(format!(
                        "a rolling window of {width_ns} ns cannot hold {buckets} buckets"
                    )));
                }
                // Round the bucket up so that `buckets` buckets always cover the width.
                (width_ns.div_ceil(u64::from(buckets)), u64::from(buckets))
            }
            Window::Calendar(_) | Window::Lifetime => (0, 0),
        };
        let slots = (0..=span).map(|_| AtomicU128::new(0)).collect();
        Ok(Account {
            used: AtomicI64::new(0),
            held: AtomicI64::new(0),
            swept: AtomicU64::new(0),
            limit: AtomicI64::new(limit),
            soft_limit: AtomicI64::new(soft_limit),
            window: spec.window,
            bucket_ns,
            span,
            slots,
        })
    }

    pub(crate) fn window(&self) -> Window {
        self.window
    }

    /// The rolling bucket that `now_ns` falls in (callers handle the other kinds).
    pub(crate) fn rolling_bucket(&self, now_ns: u64) -> u64 {
        now_ns.checked_div(self.bucket_ns).unwrap_or(0)
    }

    pub(crate) fn set_limits(&self, limit: Option<u64>, soft_limit: Option<u64>) -> CoreResult<()> {
        let limit = stored_limit(limit, "limit")?;
        let soft_limit = stored_limit(soft_limit, "soft limit")?;
        self.limit.store(limit, Ordering::Release);
        self.soft_limit.store(soft_limit, Ordering::Release);
        Ok(())
    }

    /// The hard limit, `None` if unlimited.
    pub(crate) fn limit(&self) -> Option<u64> {
        let v = self.limit.load(Ordering::Acquire);
        (v != i64::MAX).then_some(v as u64)
    }

    fn is_live(&self, tag: u64, cur: u64) -> bool {
        // A tag ahead of `cur` was written by a thread with a later clock: still live.
        tag >= cur || cur - tag <= self.span
    }

    /// Retire every slot whose bucket left the window as of `cur`; runs at most once per
    /// bucket per account (the CAS on `swept` elects one thread).
    pub(crate) fn advance(&self, cur: u64) {
        let mut seen = self.swept.load(Ordering::Acquire);
        loop {
            if cur <= seen {
                return;
            }
            match self
                .swept
                .compare_exchange_weak(seen, cur, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        for slot in self.slots.iter() {
            let mut word = slot.load(Ordering::Acquire);
            loop {
                let (tag, amount) = unpack(word);
                if amount == 0 || self.is_live(tag, cur) {
                    break;
                }
                match slot.compare_exchange_weak(
                    word,
                    pack(tag, 0),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.used.fetch_sub(amount as i64, Ordering::AcqRel);
                        break;
                    }
                    Err(now) => word = now,
                }
            }
        }
    }

    /// Add `amount` to `used` if it stays within the hard limit: `Ok(true)` when the new
    /// total reaches the soft limit, `Err(used)` (the total it was refused on) otherwise.
    pub(crate) fn try_hold(&self, amount: i64) -> Result<bool, i64> {
        let limit = self.limit.load(Ordering::Acquire);
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let next = match used.checked_add(amount) {
                Some(next) if next <= limit => next,
                _ => return Err(used),
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(next >= self.soft_limit.load(Ordering::Acquire)),
                Err(now) => used = now,
            }
        }
    }

    /// Forget every amount spent: the account starts over as a new one of its kind would.
    /// Refused while anything is held. Not atomic with reservations: the caller makes sure
    /// none runs on this account meanwhile (the Python ledger calls it under its lock).
    pub(crate) fn reset(&self) -> CoreResult<()> {
        if self.held.load(Ordering::Acquire) != 0 {
            return Err(CoreError::InvalidInput(
                "a budget account with holds cannot be reset".into(),
            ));
        }
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Release);
        }
        self.used.store(0, Ordering::Release);
        Ok(())
    }

    /// Undo a successful [`Account::try_hold`] of a chain that failed further on.
    pub(crate) fn undo_hold(&self, amount: i64) {
        self.used.fetch_sub(amount, Ordering::AcqRel);
    }

    /// Record a hold that the whole chain accepted (for `reserved`).
    pub(crate) fn add_held(&self, amount: i64) {
        self.held.fetch_add(amount, Ordering::AcqRel);
    }

    /// Drop a hold without spending it.
    pub(crate) fn release(&self, held: i64) {
        self.held.fetch_sub(held, Ordering::AcqRel);
        self.used.fetch_sub(held, Ordering::AcqRel);
    }

    /// Turn a hold of `held` into a spend of `actual` in bucket `cur` (`held` 0: a charge
    /// with no hold). `used` moves first, then the slot: a retirer can only subtract what
    /// a slot holds, so `used` never dips below the truth in between.
    pub(crate) fn settle(&self, held: i64, actual: i64, cur: u64) {
        if held != 0 {
            self.held.fetch_sub(held, Ordering::AcqRel);
        }
        let delta = actual - held;
        if delta != 0 {
            self.used.fetch_add(delta, Ordering::AcqRel);
        }
        if actual > 0 {
            self.deposit(cur, actual as u64);
        }
    }

    fn deposit(&self, cur: u64, amount: u64) {
        let len = self.slots.len() as u64;
        let slot = &self.slots[(cur % len) as usize];
        let mut word = slot.load(Ordering::Acquire);
        loop {
            let (tag, have) = unpack(word);
            // Same residue, older tag: that content is at least `span + 1` buckets old, so
            // expired: replace it and retire it. A newer tag (a later clock wrote it) keeps
            // its tag, which only makes this spend count a little longer.
            let (next, retired) = if tag >= cur {
                (pack(tag, have.saturating_add(amount)), 0)
            } else {
                (pack(cur, amount), have)
            };
            match slot.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if retired != 0 {
                        self.used.fetch_sub(retired as i64, Ordering::AcqRel);
                    }
                    return;
                }
                Err(now) => word = now,
            }
        }
    }

    /// Committed spend in the window as of bucket `cur`.
    pub(crate) fn spent(&self, cur: u64) -> u64 {
        self.slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|&(tag, amount)| amount != 0 && self.is_live(tag, cur))
            .fold(0u64, |sum, (_, amount)| sum.saturating_add(amount))
    }

    /// The live buckets' spend as of bucket `cur`: `(bucket start in ns, amount)` for a
    /// rolling window (charging an amount at its start puts it back in the same bucket);
    /// the start is 0 for the other kinds.
    pub(crate) fn live(&self, cur: u64) -> Vec<(u64, u64)> {
        self.slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|&(tag, amount)| amount != 0 && self.is_live(tag, cur))
            .map(|(tag, amount)| (tag.saturating_mul(self.bucket_ns), amount))
            .collect()
    }

    /// Outstanding holds.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire).max(0) as u64
    }

    /// Committed-and-held as the reservation check sees it.
    pub(crate) fn used(&self) -> i64 {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolling(buckets: u32) -> Account {
        let spec = AccountSpec {
            limit: Some(100),
            soft_limit: Some(80),
            window: Window::Rolling {
                width_ns: 10 * u64::from(buckets),
                buckets,
            },
        };
        Account::new(spec).expect("valid spec")
    }

    #[test]
    fn pack_round_trips() {
        assert_eq!(unpack(pack(u64::MAX, 7)), (u64::MAX, 7));
        assert_eq!(unpack(pack(3, u64::MAX)), (3, u64::MAX));
    }

    #[test]
    fn rejects_bad_specs() {
        let bad = |window| {
            Account::new(AccountSpec {
                limit: None,
                soft_limit: None,
                window,
            })
            .is_err()
        };
        assert!(bad(Window::Rolling {
            width_ns: 10,
            buckets: 0
        }));
        assert!(bad(Window::Rolling {
            width_ns: 10,
            buckets: MAX_BUCKETS + 1
        }));
        assert!(bad(Window::Rolling {
            width_ns: 3,
            buckets: 4
        }));
        assert!(Account::new(AccountSpec {
            limit: Some(MAX_AMOUNT + 1),
            soft_limit: None,
            window: Window::Lifetime
        })
        .is_err());
    }

    #[test]
    fn spend_ages_out_of_a_rolling_window_never_early() {
        let a = rolling(3); // buckets of 10 ns, window 30 ns, 4 slots
        a.advance(5);
        assert_eq!(a.try_hold(40), Ok(false));
        a.settle(40, 40, 5);
        for cur in 5..=8 {
            a.advance(cur);
            assert_eq!(a.spent(cur), 40, "bucket {cur}");
            assert_eq!(a.used(), 40);
        }
        a.advance(9);
        assert_eq!(a.spent(9), 0);
        assert_eq!(a.used(), 0);
    }

    #[test]
    fn a_deposit_over_an_expired_slot_retires_it_once() {
        let a = rolling(1); // 2 slots
        a.settle(0, 30, 2);
        a.settle(0, 20, 4); // same slot as bucket 2, which is expired at 4
        assert_eq!(a.used(), 20);
        a.advance(4);
        assert_eq!(a.used(), 20);
        assert_eq!(a.spent(4), 20);
    }

    #[test]
    fn holds_refuse_past_the_limit_and_flag_the_soft_limit() {
        let a = rolling(2);
        assert_eq!(a.try_hold(70), Ok(false));
        assert_eq!(a.try_hold(10), Ok(true));
        assert_eq!(a.try_hold(21), Err(80));
        a.undo_hold(10);
        assert_eq!(a.used(), 70);
    }
}
