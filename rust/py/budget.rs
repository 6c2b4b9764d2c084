//! pyo3 wrapper of [`crate::budget`]: `Ledger`, `Hold`, `RateLimiter`, `Lane`, `KeyDigest`
//! and the `BudgetRefused` and `RateRefused` exceptions.
//!
//! Data flow: Python passes account ids (ints from `routeguard.budget.memory`, which maps
//! names), amounts in integer micro-dollars and `now_ns` from its clock; the kernel answers
//! with a `Hold` object or raises `BudgetRefused(account, position, spent, reserved, limit,
//! requested)`, which the Python layer turns into `routeguard.BudgetExceeded`. A `Lane` is
//! one chain made ready for admission (its account ids and rate limiters, converted once):
//! its `admit` is the rate check and the hold in one call, raising `RateRefused(position,
//! retry_after_ns)` or `BudgetRefused`.
//!
//! A `Hold` owns the kernel's move-only hold behind a mutex: `settle`/`release` take it out
//! once (a second settle raises), and a `Hold` garbage-collected while still open releases
//! itself, so a lost reference cannot leak budget. No call here releases the GIL: each is a
//! few atomic operations (~100 ns), cheaper than giving the GIL up and taking it back; the
//! module is `gil_used = false` and the ledger is lock-free, so free-threaded Python runs
//! them in parallel anyway.

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use crate::budget::{
    AccountSpec, CalendarId, Hold, KeyDigest, Ledger, LimiterId, RateLimiter, Window,
};

create_exception!(
    routeguard._core,
    BudgetRefused,
    PyException,
    "A reservation did not fit: args are (account, position, spent, reserved, limit, requested)."
);

create_exception!(
    routeguard._core,
    RateRefused,
    PyException,
    "A rate check refused: args are (position, retry_after_ns); retry_after_ns is None when it never passes."
);

/// Register this module's classes and exception on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLedger>()?;
    m.add_class::<PyHold>()?;
    m.add_class::<PyRateLimiter>()?;
    m.add_class::<PyLane>()?;
    m.add_class::<PyKeyDigest>()?;
    m.add("BudgetRefused", m.py().get_type::<BudgetRefused>())?;
    m.add("RateRefused", m.py().get_type::<RateRefused>())?;
    Ok(())
}

/// Budget accounts with hard/soft limits per window; reserve, settle, release.
#[pyclass(name = "Ledger", module = "routeguard._core", frozen)]
pub struct PyLedger {
    inner: Arc<Ledger>,
}

/// A reservation on a chain of accounts; settle or release it through its ledger.
#[pyclass(name = "Hold", module = "routeguard._core", frozen)]
pub struct PyHold {
    ledger: Arc<Ledger>,
    hold: Mutex<Option<Hold>>,
    chain: Vec<u32>,
    amount: u64,
    soft_mask: u8,
}

impl PyHold {
    fn slot(&self) -> MutexGuard<'_, Option<Hold>> {
        // A poisoned lock only means a panic elsewhere; the Option inside is still sound.
        self.hold
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for PyHold {
    fn drop(&mut self) {
        let hold = match self.hold.get_mut() {
            Ok(slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(hold) = hold {
            self.ledger.release(hold);
        }
    }
}

#[pymethods]
impl PyHold {
    /// The account ids held, in chain order.
    #[getter]
    fn chain(&self) -> Vec<u32> {
        self.chain.clone()
    }

    /// Micro-dollars held on each account.
    #[getter]
    fn amount(&self) -> u64 {
        self.amount
    }

    /// Bit i set: the chain's account i reached its soft limit with this reservation.
    #[getter]
    fn soft_mask(&self) -> u8 {
        self.soft_mask
    }

    /// Whether the hold is still open (neither settled nor released).
    #[getter]
    fn is_open(&self) -> bool {
        self.slot().is_some()
    }

    fn __repr__(&self) -> String {
        let state = if self.is_open() { "open" } else { "closed" };
        format!(
            "Hold(chain={:?}, amount={}, {state})",
            self.chain, self.amount
        )
    }
}

impl PyLedger {
    fn take(&self, hold: &PyHold) -> PyResult<Option<Hold>> {
        if !Arc::ptr_eq(&self.inner, &hold.ledger) {
            return Err(PyValueError::new_err(
                "this hold belongs to another Ledger; settle it with the ledger that made it",
            ));
        }
        Ok(hold.slot().take())
    }
}

#[pymethods]
impl PyLedger {
    #[new]
    fn new() -> Self {
        PyLedger {
            inner: Arc::new(Ledger::new()),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Register a calendar at `window_id`; returns its id for `add_account(calendar=...)`.
    fn add_calendar(&self, window_id: u64) -> PyResult<CalendarId> {
        self.inner.add_calendar(window_id).map_err(PyErr::from)
    }

    /// Move a calendar forward to `window_id` (never backwards).
    fn set_calendar(&self, calendar: CalendarId, window_id: u64) -> PyResult<()> {
        self.inner
            .set_calendar(calendar, window_id)
            .map_err(PyErr::from)
    }

    /// The current window id of a calendar.
    fn calendar(&self, calendar: CalendarId) -> PyResult<u64> {
        self.inner.calendar(calendar).map_err(PyErr::from)
    }

    /// Add an account; returns its id. Window: `calendar=` a calendar id, or
    /// `window_ns=` a rolling window of that many nanoseconds in `buckets` buckets, or
    /// neither for a lifetime allowance. Limits are micro-dollars; None means unlimited.
    #[pyo3(signature = (limit=None, soft_limit=None, *, calendar=None, window_ns=None, buckets=60))]
    fn add_account(
        &self,
        limit: Option<u64>,
        soft_limit: Option<u64>,
        calendar: Option<CalendarId>,
        window_ns: Option<u64>,
        buckets: u32,
    ) -> PyResult<u32> {
        let window = match (calendar, window_ns) {
            (Some(c), None) => Window::Calendar(c),
            (None, Some(width_ns)) => Window::Rolling { width_ns, buckets },
            (None, None) => Window::Lifetime,
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "pass calendar= or window_ns=, not both: an account has one window",
                ))
            }
        };
        let spec = AccountSpec {
            limit,
            soft_limit,
            window,
        };
        self.inner.add_account(spec).map_err(PyErr::from)
    }

    /// Change an account's limits (micro-dollars; None: unlimited).
    #[pyo3(signature = (account, limit, soft_limit=None))]
    fn set_limits(
        &self,
        account: u32,
        limit: Option<u64>,
        soft_limit: Option<u64>,
    ) -> PyResult<()> {
        self.inner
            .set_limits(account, limit, soft_limit)
            .map_err(PyErr::from)
    }

    /// Hold `amount` micro-dollars on every account of `chain`, all or nothing; raises
    /// `BudgetRefused` naming the first account it does not fit.
    fn reserve(&self, chain: Vec<u32>, amount: u64, now_ns: u64) -> PyResult<PyHold> {
        reserve(&self.inner, chain, amount, now_ns)
    }

    /// Charge `actual` micro-dollars for `hold` to the window current at `now_ns`; returns
    /// the overage (how far `actual` exceeded the reservation). Raises ValueError if the
    /// hold was already settled or released.
    fn settle(&self, hold: &PyHold, actual: u64, now_ns: u64) -> PyResult<u64> {
        let hold = self
            .take(hold)?
            .ok_or_else(|| PyValueError::new_err("this hold was already settled or released"))?;
        Ok(self.inner.settle(hold, actual, now_ns).overage)
    }

    /// Give a hold back; False if it was already settled or released.
    fn release(&self, hold: &PyHold) -> PyResult<bool> {
        Ok(match self.take(hold)? {
            Some(hold) => {
                self.inner.release(hold);
                true
            }
            None => false,
        })
    }

    /// Charge `amount` to every account of `chain` with no reservation (a settlement
    /// after its hold expired, or a replay); never refused.
    fn charge(&self, chain: Vec<u32>, amount: u64, now_ns: u64) -> PyResult<()> {
        self.inner
            .charge(&chain, amount, now_ns)
            .map_err(PyErr::from)
    }

    /// Committed micro-dollars of `account` in its window current at `now_ns`.
    fn spent(&self, account: u32, now_ns: u64) -> PyResult<u64> {
        self.inner.spent(account, now_ns).map_err(PyErr::from)
    }

    /// Micro-dollars held on `account` by reservations in flight.
    fn reserved(&self, account: u32) -> PyResult<u64> {
        self.inner.reserved(account).map_err(PyErr::from)
    }

    /// The spend of `account`'s live buckets: `(bucket start ns, amount)` for a rolling
    /// window, one `(0, amount)` for the other kinds.
    fn live_spend(&self, account: u32, now_ns: u64) -> PyResult<Vec<(u64, u64)>> {
        self.inner.live_spend(account, now_ns).map_err(PyErr::from)
    }

    /// Forget `account`'s spend (it serves as a new account of its kind); ValueError while
    /// it holds anything. Call it only where nothing reserves on or charges it meanwhile.
    fn reset(&self, account: u32) -> PyResult<()> {
        self.inner.reset(account).map_err(PyErr::from)
    }

    /// Committed plus held, as the reservation check sees it.
    fn used(&self, account: u32, now_ns: u64) -> PyResult<i64> {
        self.inner.used(account, now_ns).map_err(PyErr::from)
    }
}

/// A hold of `amount` on `chain` of `ledger` as a `Hold`, or `BudgetRefused`.
fn reserve(ledger: &Arc<Ledger>, chain: Vec<u32>, amount: u64, now_ns: u64) -> PyResult<PyHold> {
    match ledger
        .reserve(&chain, amount, now_ns)
        .map_err(PyErr::from)?
    {
        Ok(hold) => Ok(PyHold {
            ledger: Arc::clone(ledger),
            soft_mask: hold.soft_mask(),
            amount: hold.amount(),
            chain,
            hold: Mutex::new(Some(hold)),
        }),
        Err(r) => Err(BudgetRefused::new_err((
            r.account,
            r.position,
            r.spent,
            r.reserved,
            r.limit,
            r.requested,
        ))),
    }
}

/// GCRA rate limiters (requests or tokens per period), one atomic each.
#[pyclass(name = "RateLimiter", module = "routeguard._core", frozen)]
pub struct PyRateLimiter {
    inner: Arc<RateLimiter>,
}

/// `RateLimiter.check_units` on `limiter`: None when allowed, else `(index into
/// limiters, retry_after_ns)`.
fn check_units(
    limiter: &RateLimiter,
    limiters: &[(LimiterId, bool)],
    requests: u64,
    tokens: u64,
    now_ns: u64,
) -> PyResult<Option<(usize, Option<u64>)>> {
    let mut costs = Vec::with_capacity(limiters.len());
    let mut index = Vec::with_capacity(limiters.len());
    for (i, &(limiter, per_token)) in limiters.iter().enumerate() {
        let cost = if per_token { tokens } else { requests };
        if cost > 0 {
            costs.push((limiter, cost));
            index.push(i);
        }
    }
    if costs.is_empty() {
        return Ok(None);
    }
    let outcome = limiter.check(&costs, now_ns).map_err(PyErr::from)?;
    Ok(outcome.err().map(|r| (index[r.position], r.retry_after_ns)))
}

#[pymethods]
impl PyRateLimiter {
    #[new]
    fn new() -> Self {
        PyRateLimiter {
            inner: Arc::new(RateLimiter::new()),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Add a limiter of `limit` units per `period_ns` (burst: the whole limit); returns its id.
    fn add(&self, limit: u64, period_ns: u64) -> PyResult<LimiterId> {
        self.inner.add(limit, period_ns).map_err(PyErr::from)
    }

    /// Consume each `(limiter, cost)` or none. None when allowed; otherwise
    /// `(position, retry_after_ns)` with `retry_after_ns` None if it can never pass.
    fn check(
        &self,
        costs: Vec<(LimiterId, u64)>,
        now_ns: u64,
    ) -> PyResult<Option<(usize, Option<u64>)>> {
        let outcome = self.inner.check(&costs, now_ns).map_err(PyErr::from)?;
        Ok(outcome.err().map(|r| (r.position, r.retry_after_ns)))
    }

    /// `check` of a chain's limiters as `(limiter, per_token)`: each costs `tokens` when
    /// `per_token`, else `requests`; one that costs 0 is skipped. None when allowed;
    /// otherwise `(index into limiters, retry_after_ns)`.
    fn check_units(
        &self,
        limiters: Vec<(LimiterId, bool)>,
        requests: u64,
        tokens: u64,
        now_ns: u64,
    ) -> PyResult<Option<(usize, Option<u64>)>> {
        check_units(&self.inner, &limiters, requests, tokens, now_ns)
    }

    /// Nanoseconds until `cost` would pass on `limiter` (0: now; None: never), without
    /// consuming.
    fn wait_time(&self, limiter: LimiterId, cost: u64, now_ns: u64) -> PyResult<Option<u64>> {
        self.inner
            .wait_time(limiter, cost, now_ns)
            .map_err(PyErr::from)
    }

    /// Whether `limiter` has its whole allowance at `now_ns` (it then behaves as a new one).
    fn is_full(&self, limiter: LimiterId, now_ns: u64) -> PyResult<bool> {
        self.inner.is_full(limiter, now_ns).map_err(PyErr::from)
    }
}

/// One chain made ready for admission: its accounts' ids on a ledger (leaf first, with
/// their ancestors) and its rate limiters as `(limiter, per_token)`, converted once.
#[pyclass(name = "Lane", module = "routeguard._core", frozen)]
pub struct PyLane {
    ledger: Arc<Ledger>,
    limiter: Arc<RateLimiter>,
    ids: Vec<u32>,
    limiters: Vec<(LimiterId, bool)>,
}

#[pymethods]
impl PyLane {
    #[new]
    fn new(
        ledger: &PyLedger,
        limiter: &PyRateLimiter,
        ids: Vec<u32>,
        limiters: Vec<(LimiterId, bool)>,
    ) -> Self {
        PyLane {
            ledger: Arc::clone(&ledger.inner),
            limiter: Arc::clone(&limiter.inner),
            ids,
            limiters,
        }
    }

    /// `RateLimiter.check_units(limiters, requests, tokens, now_ns)` then
    /// `Ledger.reserve(ids, amount, now_ns)` in one call: raises `RateRefused(position,
    /// retry_after_ns)` with nothing consumed, or `BudgetRefused` with the rate limits
    /// consumed (as the two calls leave them).
    fn admit(&self, amount: u64, requests: u64, tokens: u64, now_ns: u64) -> PyResult<PyHold> {
        if let Some(refused) = check_units(&self.limiter, &self.limiters, requests, tokens, now_ns)?
        {
            return Err(RateRefused::new_err(refused));
        }
        reserve(&self.ledger, self.ids.clone(), amount, now_ns)
    }
}

/// HMAC-SHA256 under one secret, as lowercase hex: the digest a virtual key is stored by.
#[pyclass(name = "KeyDigest", module = "routeguard._core", frozen)]
pub struct PyKeyDigest {
    inner: KeyDigest,
}

#[pymethods]
impl PyKeyDigest {
    #[new]
    fn new(secret: &[u8]) -> Self {
        PyKeyDigest {
            inner: KeyDigest::new(secret),
        }
    }

    /// The hex digest of `key` (its UTF-8 bytes), as `hmac.digest(secret, key, "sha256")`.
    fn hex(&self, key: &str) -> String {
        self.inner.hex(key.as_bytes())
    }
}
