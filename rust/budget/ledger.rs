//! The ledger: reserve a worst-case cost on every account of a chain at once, then settle
//! it to the actual cost or release it.
//!
//! Data flow of one request: `reserve(chain, worst_case, now)` walks the chain (key →
//! user → team → org), advancing each account's window and CASing its `used` total against
//! its hard limit; if any account refuses, the holds already taken are undone and the
//! caller gets a [`Refusal`] naming that account. Otherwise it gets a [`Hold`], a
//! move-only value: `settle(hold, actual, now)` charges the actual cost to the current
//! window of every account, `release(hold)` gives the hold back. A hold cannot be settled
//! twice (it is consumed) nor forged (its fields are private).
//!
//! Overage policy: the actual cost is always charged in full, even past the reservation,
//! because the money was spent upstream and a ledger that caps it would lie. So committed
//! spend can exceed a hard limit only by the overage of settlements whose actual cost
//! exceeded their reservation (reported in [`Settlement::overage`]); callers reserve the
//! worst case (prompt tokens plus `max_tokens` at the output price), so in practice it does
//! not happen. Holds outstanding when a window rolls over stay held in the new window and
//! are charged to the window they settle in: admission in the new window already counted
//! them, so the rollover cannot be used to overspend.
//!
//! Everything is lock-free: accounts and calendars live in append-only `boxcar` vectors
//! (adding an account never blocks a reservation), and each account is a few atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::budget::account::{Account, AccountSpec, CalendarId, Window, MAX_AMOUNT};
use crate::error::{CoreError, CoreResult};

/// Index of an account in its ledger.
pub type AccountId = u32;

/// The longest chain one reservation may cover.
pub const MAX_CHAIN: usize = 8;

/// A reservation held on every account of a chain. Settle or release it; dropping it
/// keeps the hold until the process ends (the Python wrapper releases on drop).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a hold keeps budget reserved until it is settled or released"]
pub struct Hold {
    chain: [AccountId; MAX_CHAIN],
    len: u8,
    soft: u8,
    amount: u64,
}

impl Hold {
    /// The accounts held, in chain order.
    pub fn chain(&self) -> &[AccountId] {
        &self.chain[..usize::from(self.len)]
    }

    /// The amount held on each account, in micro-dollars.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Bit `i` set: the chain's account `i` reached its soft limit with this reservation.
    pub fn soft_mask(&self) -> u8 {
        self.soft
    }
}

/// Why a reservation was refused: the first account (in chain order) it did not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The refusing account.
    pub account: AccountId,
    /// Its position in the chain.
    pub position: usize,
    /// Committed spend in its current window.
    pub spent: u64,
    /// Held by reservations in flight.
    pub reserved: u64,
    /// Its hard limit.
    pub limit: u64,
    /// The amount asked for.
    pub requested: u64,
}

/// What a settlement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// How far the actual cost exceeded the reservation (0 when it did not).
    pub overage: u64,
}

/// Budget accounts, their windows and the calendars those windows follow.
#[derive(Default)]
pub struct Ledger {
    accounts: boxcar::Vec<Account>,
    calendars: boxcar::Vec<AtomicU64>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a calendar starting at `window_id`; accounts with
    /// [`Window::Calendar`] read their current window from it.
    pub fn add_calendar(&self, window_id: u64) -> CoreResult<CalendarId> {
        let index = self.calendars.push(AtomicU64::new(window_id));
        CalendarId::try_from(index)
            .map_err(|_| CoreError::InvalidInput("too many calendars".into()))
    }

    /// Move a calendar to `window_id`. Never moves backwards (a late caller with an older
    /// clock is ignored), so every account resets exactly once per window.
    pub fn set_calendar(&self, calendar: CalendarId, window_id: u64) -> CoreResult<()> {
        self.calendar_cell(calendar)?
            .fetch_max(window_id, Ordering::AcqRel);
        Ok(())
    }

    /// The current window id of a calendar.
    pub fn calendar(&self, calendar: CalendarId) -> CoreResult<u64> {
        Ok(self.calendar_cell(calendar)?.load(Ordering::Acquire))
    }

    fn calendar_cell(&self, calendar: CalendarId) -> CoreResult<&AtomicU64> {
        self.calendars
            .get(calendar as usize)
            .ok_or_else(|| CoreError::NotFound(format!("calendar {calendar}")))
    }

    /// Add an account; returns its id.
    pub fn add_account(&self, spec: AccountSpec) -> CoreResult<AccountId> {
        if let Window::Calendar(calendar) = spec.window {
            self.calendar_cell(calendar)?;
        }
        let account = Account::new(spec)?;
        let index = self.accounts.push(account);
        AccountId::try_from(index).map_err(|_| CoreError::InvalidInput("too many accounts".into()))
    }

    /// How many accounts the ledger has.
    pub fn len(&self) -> usize {
        self.accounts.count()
    }

    /// Whether the ledger has no account.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Change an account's limits; reservations from now on are checked against them.
    pub fn set_limits(
        &self,
        account: AccountId,
        limit: Option<u64>,
        soft_limit: Option<u64>,
    ) -> CoreResult<()> {
        self.account(account)?.set_limits(limit, soft_limit)
    }

    /// The spend of an account's live buckets at `now_ns`: `(bucket start ns, amount)` for
    /// a rolling window (charged back at those times, each lands in its own bucket again),
    /// one `(0, amount)` for the other kinds; empty when nothing counts.
    pub fn live_spend(&self, account: AccountId, now_ns: u64) -> CoreResult<Vec<(u64, u64)>> {
        let account = self.account(account)?;
        let cur = self.current(account, now_ns);
        Ok(account.live(cur))
    }

    /// Forget an account's spend so that it can serve as a new account of its kind (its
    /// limits then set with [`Ledger::set_limits`]). Refused while it holds anything; the
    /// caller makes sure nothing reserves on or charges it meanwhile.
    pub fn reset(&self, account: AccountId) -> CoreResult<()> {
        self.account(account)?.reset()
    }

    fn account(&self, id: AccountId) -> CoreResult<&Account> {
        self.accounts
            .get(id as usize)
            .ok_or_else(|| CoreError::NotFound(format!("budget account {id}")))
    }

    /// The bucket `now_ns` falls in for this account, after retiring expired ones.
    fn current(&self, account: &Account, now_ns: u64) -> u64 {
        let cur = match account.window() {
            Window::Calendar(c) => self
                .calendars
                .get(c as usize)
                .map_or(0, |cell| cell.load(Ordering::Acquire)),
            Window::Rolling { .. } => account.rolling_bucket(now_ns),
            Window::Lifetime => 0,
        };
        account.advance(cur);
        cur
    }

    fn check_chain(&self, chain: &[AccountId]) -> CoreResult<()> {
        if chain.is_empty() || chain.len() > MAX_CHAIN {
            return Err(CoreError::InvalidInput(format!(
                "a chain has 1..={MAX_CHAIN} accounts, got {}",
                chain.len()
            )));
        }
        for (i, &id) in chain.iter().enumerate() {
            self.account(id)?;
            if chain[..i].contains(&id) {
                return Err(CoreError::InvalidInput(format!(
                    "budget account {id} appears twice in the chain"
                )));
            }
        }
        Ok(())
    }

    fn check_amount(amount: u64) -> CoreResult<i64> {
        if amount > MAX_AMOUNT {
            return Err(CoreError::InvalidInput(format!(
                "amount {amount} is above the largest supported {MAX_AMOUNT} micro-dollars"
            )));
        }
        Ok(amount as i64)
    }

    /// Hold `amount` micro-dollars on every account of `chain`, all or nothing. The outer
    /// `Err` is a bad call (unknown account, chain too long, amount too large); the inner
    /// one a refusal.
    pub fn reserve(
        &self,
        chain: &[AccountId],
        amount: u64,
        now_ns: u64,
    ) -> CoreResult<Result<Hold, Refusal>> {
        self.check_chain(chain)?;
        let signed = Self::check_amount(amount)?;
        let mut accounts: [Option<&Account>; MAX_CHAIN] = [None; MAX_CHAIN];
        let mut soft = 0u8;
        for (position, &id) in chain.iter().enumerate() {
            let account = self.account(id)?;
            let cur = self.current(account, now_ns);
            match account.try_hold(signed) {
                Ok(flag) => {
                    soft |= u8::from(flag) << position;
                    accounts[position] = Some(account);
                }
                Err(_) => {
                    for taken in accounts[..position].iter().flatten() {
                        taken.undo_hold(signed);
                    }
                    return Ok(Err(Refusal {
                        account: id,
                        position,
                        spent: account.spent(cur),
                        reserved: account.held(),
                        limit: account.limit().unwrap_or(u64::MAX),
                        requested: amount,
                    }));
                }
            }
        }
        for account in accounts.iter().flatten() {
            account.add_held(signed);
        }
        let mut ids = [0; MAX_CHAIN];
        ids[..chain.len()].copy_from_slice(chain);
        Ok(Ok(Hold {
            chain: ids,
            len: chain.len() as u8,
            soft,
            amount,
        }))
    }

    /// Charge `actual` micro-dollars for a hold, to the window current at `now_ns`.
    /// An actual above [`MAX_AMOUNT`] is charged as `MAX_AMOUNT`.
    pub fn settle(&self, hold: Hold, actual: u64, now_ns: u64) -> Settlement {
        let held = hold.amount as i64;
        let actual = actual.min(MAX_AMOUNT);
        for account in hold.chain().iter().filter_map(|&id| self.account(id).ok()) {
            let cur = self.current(account, now_ns);
            account.settle(held, actual as i64, cur);
        }
        Settlement {
            overage: actual.saturating_sub(hold.amount),
        }
    }

    /// Give a hold back without spending anything.
    pub fn release(&self, hold: Hold) {
        for account in hold.chain().iter().filter_map(|&id| self.account(id).ok()) {
            account.release(hold.amount as i64);
        }
    }

    /// Charge `amount` to every account of `chain` with no reservation: a settlement that
    /// arrives after its hold expired, or spend replayed from a log. Never refused (the
    /// money is already spent), so it may take an account past its limit.
    pub fn charge(&self, chain: &[AccountId], amount: u64, now_ns: u64) -> CoreResult<()> {
        self.check_chain(chain)?;
        let amount = Self::check_amount(amount)?;
        for &id in chain {
            let account = self.account(id)?;
            let cur = self.current(account, now_ns);
            account.settle(0, amount, cur);
        }
        Ok(())
    }

    /// Committed spend of `account` in its window current at `now_ns`.
    pub fn spent(&self, account: AccountId, now_ns: u64) -> CoreResult<u64> {
        let account = self.account(account)?;
        let cur = self.current(account, now_ns);
        Ok(account.spent(cur))
    }

    /// Micro-dollars held on `account` by reservations in flight.
    pub fn reserved(&self, account: AccountId) -> CoreResult<u64> {
        Ok(self.account(account)?.held())
    }

    /// Committed-plus-held as the reservation check sees it at `now_ns` (equals
    /// `spent + reserved` at quiescence; tests check exactly that).
    pub fn used(&self, account: AccountId, now_ns: u64) -> CoreResult<i64> {
        let account = self.account(account)?;
        self.current(account, now_ns);
        Ok(account.used())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONTH: u64 = 24_000; // any increasing window id

    fn ledger_with(limits: &[Option<u64>]) -> (Ledger, CalendarId, Vec<AccountId>) {
        let ledger = Ledger::new();
        let cal = ledger.add_calendar(MONTH).expect("calendar");
        let ids = limits
            .iter()
            .map(|&limit| {
                ledger
                    .add_account(AccountSpec {
                        limit,
                        soft_limit: limit.map(|l| l * 8 / 10),
                        window: Window::Calendar(cal),
                    })
                    .expect("account")
            })
            .collect();
        (ledger, cal, ids)
    }

    /// An account of limit 100 over a rolling 60 ns in six buckets of 10 ns.
    fn rolling_60ns(ledger: &Ledger) -> AccountId {
        ledger
            .add_account(AccountSpec {
                limit: Some(100),
                soft_limit: None,
                window: Window::Rolling {
                    width_ns: 60,
                    buckets: 6,
                },
            })
            .expect("rolling account")
    }

    fn reserve(ledger: &Ledger, chain: &[AccountId], amount: u64) -> Result<Hold, Refusal> {
        ledger.reserve(chain, amount, 0).expect("valid call")
    }

    #[test]
    fn reserve_settle_release_move_the_totals() {
        let (ledger, _, ids) = ledger_with(&[Some(1_000), Some(500)]);
        let hold = reserve(&ledger, &ids, 300).expect("fits");
        assert_eq!(hold.chain(), &ids[..]);
        assert_eq!(ledger.reserved(ids[1]), Ok(300));
        assert_eq!(ledger.settle(hold, 120, 0), Settlement { overage: 0 });
        assert_eq!(ledger.spent(ids[0], 0), Ok(120));
        assert_eq!(ledger.spent(ids[1], 0), Ok(120));
        assert_eq!(ledger.reserved(ids[1]), Ok(0));
        let hold = reserve(&ledger, &ids, 380).expect("fits exactly");
        ledger.release(hold);
        assert_eq!(ledger.used(ids[1], 0), Ok(120));
    }

    #[test]
    fn refusal_names_the_account_and_rolls_back_the_chain() {
        let (ledger, _, ids) = ledger_with(&[Some(1_000), Some(500), Some(2_000)]);
        let first = reserve(&ledger, &ids, 400).expect("fits");
        let refusal = reserve(&ledger, &ids, 200).expect_err("team is full");
        assert_eq!(
            refusal,
            Refusal {
                account: ids[1],
                position: 1,
                spent: 0,
                reserved: 400,
                limit: 500,
                requested: 200,
            }
        );
        assert_eq!(ledger.used(ids[0], 0), Ok(400), "rolled back");
        assert_eq!(ledger.used(ids[2], 0), Ok(400), "never touched");
        ledger.release(first);
    }

    #[test]
    fn soft_limit_is_flagged_per_position() {
        let (ledger, _, ids) = ledger_with(&[Some(1_000), Some(100)]);
        let hold = reserve(&ledger, &ids, 90).expect("fits");
        assert_eq!(hold.soft_mask(), 0b10);
        ledger.release(hold);
    }

    #[test]
    fn overage_is_charged_in_full_and_reported() {
        let (ledger, _, ids) = ledger_with(&[Some(100)]);
        let hold = reserve(&ledger, &ids, 90).expect("fits");
        assert_eq!(ledger.settle(hold, 130, 0).overage, 40);
        assert_eq!(ledger.spent(ids[0], 0), Ok(130));
        assert!(
            reserve(&ledger, &ids, 0).is_err(),
            "over the limit: even 0 refused"
        );
    }

    #[test]
    fn calendar_rollover_resets_once_and_carries_holds() {
        let (ledger, cal, ids) = ledger_with(&[Some(100)]);
        let settled = reserve(&ledger, &ids, 60).expect("fits");
        let _ = ledger.settle(settled, 60, 0);
        let in_flight = reserve(&ledger, &ids, 30).expect("fits");
        assert!(reserve(&ledger, &ids, 20).is_err());
        ledger.set_calendar(cal, MONTH + 1).expect("calendar");
        ledger.set_calendar(cal, MONTH).expect("never backwards");
        assert_eq!(ledger.calendar(cal), Ok(MONTH + 1));
        assert_eq!(ledger.spent(ids[0], 0), Ok(0));
        assert_eq!(ledger.used(ids[0], 0), Ok(30), "the hold carried over");
        let refused = reserve(&ledger, &ids, 71).expect_err("hold still counts");
        assert_eq!((refused.spent, refused.reserved), (0, 30));
        let _ = ledger.settle(in_flight, 25, 0);
        assert_eq!(ledger.spent(ids[0], 0), Ok(25), "charged to the new window");
        assert_eq!(ledger.used(ids[0], 0), Ok(25));
    }

    #[test]
    fn rolling_window_frees_budget_as_spend_ages() {
        let ledger = Ledger::new();
        let id = rolling_60ns(&ledger);
        let hold = ledger.reserve(&[id], 100, 5).expect("ok").expect("fits");
        let _ = ledger.settle(hold, 100, 5);
        assert!(
            ledger.reserve(&[id], 1, 64).expect("ok").is_err(),
            "within 60 ns"
        );
        let hold = ledger
            .reserve(&[id], 100, 70)
            .expect("ok")
            .expect("aged out");
        ledger.release(hold);
    }

    #[test]
    fn lifetime_never_resets_and_charge_bypasses_the_limit() {
        let ledger = Ledger::new();
        let spec = AccountSpec {
            limit: Some(10),
            soft_limit: None,
            window: Window::Lifetime,
        };
        let id = ledger.add_account(spec).expect("account");
        ledger.charge(&[id], 15, u64::MAX).expect("charged");
        assert_eq!(ledger.spent(id, 0), Ok(15));
        assert!(ledger.reserve(&[id], 0, 0).expect("ok").is_err());
    }

    #[test]
    fn a_reset_account_starts_over_and_one_with_holds_refuses() {
        let (ledger, _, ids) = ledger_with(&[Some(100)]);
        let roll = rolling_60ns(&ledger);
        for id in [ids[0], roll] {
            let hold = reserve(&ledger, &[id], 70).expect("hold");
            assert!(ledger.reset(id).is_err(), "a hold is outstanding");
            ledger.settle(hold, 60, 5);
            ledger.charge(&[id], 30, 25).expect("charge");
            assert_eq!(ledger.spent(id, 30), Ok(90));
            let live = ledger.live_spend(id, 30).expect("live");
            if id == roll {
                // buckets of 10 ns: 60 at 5 ns in bucket 0, 30 at 25 ns in bucket 2
                let mut sorted = live.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, vec![(0, 60), (20, 30)]);
                assert_eq!(
                    ledger.live_spend(id, 75),
                    Ok(vec![(20, 30)]),
                    "bucket 0 aged out"
                );
            } else {
                assert_eq!(live, vec![(0, 90)]);
            }
            ledger.reset(id).expect("reset");
            assert_eq!((ledger.spent(id, 30), ledger.used(id, 30)), (Ok(0), Ok(0)));
            let again = reserve(&ledger, &[id], 100).expect("the whole limit again");
            ledger.settle(again, 100, 31);
            assert_eq!(ledger.used(id, 31), Ok(100));
        }
    }

    #[test]
    fn bad_calls_are_errors_not_refusals() {
        let (ledger, _, ids) = ledger_with(&[Some(100)]);
        assert!(ledger.reserve(&[], 1, 0).is_err());
        assert!(ledger.reserve(&[ids[0], ids[0]], 1, 0).is_err());
        assert!(ledger.reserve(&[ids[0]; MAX_CHAIN + 1], 1, 0).is_err());
        assert!(ledger.reserve(&[99], 1, 0).is_err());
        assert!(ledger.reserve(&ids, MAX_AMOUNT + 1, 0).is_err());
        assert!(ledger
            .add_account(AccountSpec {
                limit: None,
                soft_limit: None,
                window: Window::Calendar(7),
            })
            .is_err());
        assert!(ledger.set_calendar(7, 1).is_err());
        assert_eq!(ledger.len(), 1);
        assert!(!ledger.is_empty());
    }

    #[test]
    fn unlimited_accounts_track_without_refusing() {
        let (ledger, _, ids) = ledger_with(&[None]);
        let hold = reserve(&ledger, &ids, MAX_AMOUNT).expect("no limit");
        let _ = ledger.settle(hold, 5, 0);
        assert_eq!(ledger.spent(ids[0], 0), Ok(5));
        ledger.set_limits(ids[0], Some(4), None).expect("limits");
        assert!(reserve(&ledger, &ids, 0).is_err());
    }
}
