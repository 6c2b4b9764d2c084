//! Tests of the ledger as a whole: many threads hammering shared chains (never over a hard
//! limit, totals equal the sum of settled amounts, no hold leaks), and a proptest that runs
//! random single-threaded operation sequences against a plain model of the semantics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use proptest::prelude::*;

use super::*;

/// A tiny deterministic generator per thread (xorshift), so the stress needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn calendar_account(ledger: &Ledger, cal: CalendarId, limit: Option<u64>) -> AccountId {
    ledger
        .add_account(AccountSpec {
            limit,
            soft_limit: None,
            window: Window::Calendar(cal),
        })
        .expect("account")
}

#[test]
fn threads_hammering_one_chain_never_overspend_and_leak_nothing() {
    const THREADS: usize = 16;
    const OPS: usize = 4_000;
    let ledger = Arc::new(Ledger::new());
    let cal = ledger.add_calendar(1).expect("calendar");
    let org = calendar_account(&ledger, cal, Some(3_000_000));
    let team = calendar_account(&ledger, cal, Some(1_000_000));
    let total = ledger
        .add_account(AccountSpec {
            limit: None,
            soft_limit: None,
            window: Window::Lifetime,
        })
        .expect("account");
    let keys: Vec<AccountId> = (0..4)
        .map(|_| calendar_account(&ledger, cal, Some(400_000)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // The workers start only once the watcher is sampling, so it watches them on any scheduler.
    let start = Arc::new(Barrier::new(THREADS + 1));
    let watcher = {
        let (ledger, stop, start) = (Arc::clone(&ledger), Arc::clone(&stop), Arc::clone(&start));
        thread::spawn(move || {
            let mut samples = 0u64;
            loop {
                for (id, limit) in [(team, 1_000_000), (org, 3_000_000)] {
                    let used = ledger.used(id, 0).expect("account");
                    assert!(used <= limit, "account {id} used {used} > {limit}");
                }
                samples += 1;
                if samples == 1 {
                    start.wait();
                }
                if stop.load(Ordering::Acquire) {
                    return samples;
                }
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ledger, start) = (Arc::clone(&ledger), Arc::clone(&start));
            let chain = [keys[t % keys.len()], team, org, total];
            thread::spawn(move || {
                start.wait();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let (mut settled, mut refused) = (0u64, 0u64);
                for _ in 0..OPS {
                    let worst = 1 + rng.below(1_000);
                    match ledger.reserve(&chain, worst, 0).expect("valid") {
                        Ok(hold) if rng.below(4) == 0 => ledger.release(hold),
                        Ok(hold) => {
                            let actual = rng.below(worst + 1);
                            assert_eq!(ledger.settle(hold, actual, 0).overage, 0);
                            settled += actual;
                        }
                        Err(refusal) => {
                            assert!(refusal.position < 3, "the lifetime account has no limit");
                            refused += 1;
                        }
                    }
                }
                (settled, refused)
            })
        })
        .collect();
    let mut settled_by_key = HashMap::<AccountId, u64>::new();
    let (mut settled, mut refused) = (0, 0);
    for (t, w) in workers.into_iter().enumerate() {
        let (s, r) = w.join().expect("worker");
        *settled_by_key.entry(keys[t % keys.len()]).or_default() += s;
        settled += s;
        refused += r;
    }
    stop.store(true, Ordering::Release);
    watcher
        .join()
        .expect("watcher saw an account over its limit");
    assert!(refused > 0, "the limits were reached");
    assert_eq!(ledger.spent(total, 0), Ok(settled));
    assert_eq!(ledger.spent(team, 0), Ok(settled));
    assert!(settled <= 1_000_000);
    for (&key, &sum) in &settled_by_key {
        assert_eq!(ledger.spent(key, 0), Ok(sum));
        assert!(sum <= 400_000);
    }
    for id in keys.iter().copied().chain([team, org, total]) {
        assert_eq!(ledger.reserved(id), Ok(0), "hold leaked on {id}");
        let spent = ledger.spent(id, 0).expect("account");
        assert_eq!(ledger.used(id, 0), Ok(spent as i64));
    }
}

#[test]
fn windows_rolling_over_under_load_reset_exactly_once() {
    const THREADS: usize = 8;
    let ledger = Arc::new(Ledger::new());
    let cal = ledger.add_calendar(0).expect("calendar");
    let daily = calendar_account(&ledger, cal, Some(50_000));
    let total = ledger
        .add_account(AccountSpec {
            limit: None,
            soft_limit: None,
            window: Window::Lifetime,
        })
        .expect("account");
    let rolling = ledger
        .add_account(AccountSpec {
            limit: Some(80_000),
            soft_limit: None,
            window: Window::Rolling {
                width_ns: 1_000,
                buckets: 10,
            },
        })
        .expect("account");
    let clock = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (ledger, clock, stop) = (Arc::clone(&ledger), Arc::clone(&clock), Arc::clone(&stop));
        thread::spawn(move || {
            let mut day = 0;
            while !stop.load(Ordering::Acquire) {
                let now = clock.fetch_add(7, Ordering::AcqRel);
                if now / 2_000 > day {
                    day = now / 2_000;
                    ledger.set_calendar(cal, day).expect("calendar");
                }
                for (id, limit) in [(daily, 50_000), (rolling, 80_000)] {
                    let used = ledger.used(id, now).expect("account");
                    assert!(used <= limit, "account {id} used {used} > {limit}");
                }
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ledger, clock) = (Arc::clone(&ledger), Arc::clone(&clock));
            thread::spawn(move || {
                let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (t as u64 + 7));
                let mut settled = 0u64;
                for _ in 0..5_000 {
                    let worst = 1 + rng.below(2_000);
                    let now = clock.load(Ordering::Acquire);
                    if let Ok(hold) = ledger
                        .reserve(&[daily, rolling, total], worst, now)
                        .expect("ok")
                    {
                        let actual = rng.below(worst + 1);
                        let _ = ledger.settle(hold, actual, clock.load(Ordering::Acquire));
                        settled += actual;
                    }
                }
                settled
            })
        })
        .collect();
    let settled: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    stop.store(true, Ordering::Release);
    ticker.join().expect("ticker");
    assert_eq!(ledger.spent(total, 0), Ok(settled));
    let later = clock.load(Ordering::Acquire) + 10_000;
    ledger.set_calendar(cal, later / 2_000).expect("calendar");
    for id in [daily, rolling] {
        assert_eq!(ledger.reserved(id), Ok(0));
        assert_eq!(
            ledger.used(id, later),
            Ok(0),
            "account {id} retired everything"
        );
        assert_eq!(ledger.spent(id, later), Ok(0));
    }
}

// ------------------------------------------------------------------------------- proptest

#[derive(Clone, Debug)]
enum Op {
    /// Reserve on the accounts picked by the mask (bit i: account i), in index order.
    Reserve {
        mask: u8,
        amount: u64,
    },
    /// Settle the n-th open hold (modulo) for a fraction (per mille, may exceed 1000).
    Settle {
        pick: usize,
        permille: u64,
    },
    Release {
        pick: usize,
    },
    NextDay,
    Tick {
        ns: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..16, 0u64..400).prop_map(|(mask, amount)| Op::Reserve { mask, amount }),
        3 => (any::<usize>(), 0u64..1_200).prop_map(|(pick, permille)| Op::Settle { pick, permille }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => Just(Op::NextDay),
        2 => (0u64..40).prop_map(|ns| Op::Tick { ns }),
    ]
}

/// The model: the obvious, slow meaning of each account kind.
struct Model {
    limits: [u64; 4],
    /// Per account: (bucket, amount) of every settlement ever made.
    spends: [Vec<(u64, u64)>; 4],
    held: [u64; 4],
}

impl Model {
    /// Account 0 daily, 1 rolling (width 30 ns, 3 buckets of 10), 2 lifetime, 3 daily.
    fn bucket(account: usize, day: u64, now: u64) -> u64 {
        match account {
            1 => now / 10,
            2 => 0,
            _ => day,
        }
    }

    fn spent(&self, account: usize, day: u64, now: u64) -> u64 {
        let cur = Self::bucket(account, day, now);
        let span = if account == 1 { 3 } else { 0 };
        self.spends[account]
            .iter()
            .filter(|&&(b, _)| b >= cur || cur - b <= span)
            .map(|&(_, a)| a)
            .sum()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_match_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let ledger = Ledger::new();
        let cal = ledger.add_calendar(0).expect("calendar");
        let limits = [1_000, 700, 2_500, 900];
        let windows = [
            Window::Calendar(cal),
            Window::Rolling { width_ns: 30, buckets: 3 },
            Window::Lifetime,
            Window::Calendar(cal),
        ];
        for (limit, window) in limits.iter().zip(windows) {
            ledger.add_account(AccountSpec { limit: Some(*limit), soft_limit: None, window })
                .expect("account");
        }
        let mut model = Model { limits, spends: Default::default(), held: [0; 4] };
        let (mut day, mut now) = (0u64, 0u64);
        let mut open: Vec<Hold> = Vec::new();
        for op in ops {
            match op {
                Op::Reserve { mask, amount } => {
                    let chain: Vec<AccountId> =
                        (0..4u32).filter(|i| mask & (1 << i) != 0).collect();
                    let expect_refusal = chain.iter().position(|&a| {
                        let a = a as usize;
                        model.spent(a, day, now) + model.held[a] + amount > model.limits[a]
                    });
                    match ledger.reserve(&chain, amount, now).expect("valid") {
                        Ok(hold) => {
                            prop_assert_eq!(expect_refusal, None);
                            for &a in &chain { model.held[a as usize] += amount; }
                            open.push(hold);
                        }
                        Err(refusal) => {
                            prop_assert_eq!(Some(refusal.position), expect_refusal);
                            let a = refusal.account as usize;
                            prop_assert_eq!(refusal.spent, model.spent(a, day, now));
                            prop_assert_eq!(refusal.reserved, model.held[a]);
                        }
                    }
                }
                Op::Settle { pick, permille } if !open.is_empty() => {
                    let hold = open.swap_remove(pick % open.len());
                    let reserved = hold.amount();
                    let actual = reserved * permille / 1_000;
                    for &a in hold.chain() {
                        let a = a as usize;
                        model.held[a] -= hold.amount();
                        model.spends[a].push((Model::bucket(a, day, now), actual));
                    }
                    let overage = ledger.settle(hold, actual, now).overage;
                    prop_assert_eq!(overage, actual.saturating_sub(reserved));
                }
                Op::Release { pick } if !open.is_empty() => {
                    let hold = open.swap_remove(pick % open.len());
                    for &a in hold.chain() { model.held[a as usize] -= hold.amount(); }
                    ledger.release(hold);
                }
                Op::NextDay => {
                    day += 1;
                    ledger.set_calendar(cal, day).expect("calendar");
                }
                Op::Tick { ns } => now += ns,
                Op::Settle { .. } | Op::Release { .. } => {}
            }
            for a in 0..4 {
                let spent = model.spent(a, day, now);
                prop_assert_eq!(ledger.spent(a as AccountId, now), Ok(spent), "spent of {}", a);
                prop_assert_eq!(ledger.reserved(a as AccountId), Ok(model.held[a]));
                prop_assert_eq!(
                    ledger.used(a as AccountId, now),
                    Ok((spent + model.held[a]) as i64),
                    "used of {}", a
                );
            }
        }
        for hold in open { ledger.release(hold); }
    }
}
