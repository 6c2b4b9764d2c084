//! Budgets and rate limits, exact under concurrency and lock-free.
//!
//! - [`Ledger`]: accounts (u32 ids) with a hard and a soft limit in integer micro-dollars per
//!   window (calendar-aligned, rolling, or lifetime). `reserve` holds a worst-case cost on a
//!   whole chain of accounts at once (all or nothing), `settle` turns the hold into the
//!   actual cost, `release` gives it back. See `ledger.rs` for the overage policy and
//!   `account.rs` for how windows roll over exactly once.
//! - [`RateLimiter`]: GCRA limiters (requests or tokens per period) on one atomic each.
//! - [`KeyDigest`]: the HMAC-SHA256 a virtual key is looked up by.
//!
//! The caller supplies the clock (`now_ns`) and moves calendars forward (window ids come
//! from Python's `zoneinfo`, which knows time zones and DST); nothing here reads the time,
//! so every behaviour is testable with a fake clock. Nothing here knows about pyo3
//! (`rust/py/budget.rs` wraps it) or about account names (the Python layer maps them).

mod account;
mod keydigest;
mod ledger;
mod rate;

#[cfg(test)]
mod stress;

pub use account::{AccountSpec, CalendarId, Window, MAX_AMOUNT, MAX_BUCKETS};
pub use keydigest::KeyDigest;
pub use ledger::{AccountId, Hold, Ledger, Refusal, Settlement, MAX_CHAIN};
pub use rate::{LimiterId, RateLimiter, RateRefusal};
