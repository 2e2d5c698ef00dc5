//! Property tests for the ledger, run against both stores: every test below exists twice, as
//! `sqlite::name` and `postgres::name`. PostgreSQL tests need `KINKO_TEST_DATABASE_URL` (an
//! admin URL; `scripts/test` starts a throwaway server and sets it) and fail loudly without it.
//!
//! proptest generates sequences of requests (single-phase and pending transfers, posts and
//! voids, linked chains, batches, moves of the clock) over a small set of accounts. An
//! independent reference model in this file predicts the result of every event and every
//! balance; the store must agree with it, and `check_invariants` must stay clean.
//!
//! Each test function opens one store and runs every case in it, each case with fresh accounts
//! (a new PostgreSQL database per case would be slow); only after a failing case does the next
//! one get a fresh store, so that shrinking is not misled by what the failure left behind. A
//! case ends by moving the clock past every timeout, so nothing of it expires during the next.
//!
//! Expiry is modelled exactly without reading timestamps back: every event gets a timestamp
//! within [`EPOCH_WIDTH_NS`] of the clock (the clock only moves by whole seconds, far more than
//! one case's events), so a pending transfer created at clock `now` with timeout `t` expires in
//! `[now + t s, now + t s + EPOCH_WIDTH_NS)`. When the test moves the clock it steps past any
//! such window it would land in, so every pending transfer is surely expired or surely open
//! for the whole of the next epoch.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};

use kinko_core::{Clock, ManualClock};
use kinko_ledger::{
    Account, AccountFlags, AccountId, CreateAccountResult, CreateTransferResult, LEDGER_JPY,
    Ledger, NewAccount, PendingState, Transfer, TransferFlags, TransferId, TransferRequest,
    WriterConfig,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const USD: u32 = 840;
const CODE: u16 = 1;
const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: u64 = 1_000_000_000;
/// Every event between two moves of the clock is timestamped within this of the clock.
const EPOCH_WIDTH_NS: u64 = NS_PER_MS;
/// The longest timeout a generated pending transfer has.
const TIMEOUT_MAX_S: u32 = 90;

/// The accounts of every case, by slot: two plain sources, four wallets, one account whose
/// credits may not exceed its debits, and a plain and a wallet account in dollars.
const SLOTS: [(u32, AccountFlags); 9] = [
    (LEDGER_JPY, AccountFlags::NONE),
    (LEDGER_JPY, AccountFlags::NONE),
    (LEDGER_JPY, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    (LEDGER_JPY, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    (LEDGER_JPY, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    (LEDGER_JPY, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    (LEDGER_JPY, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
    (USD, AccountFlags::NONE),
    (USD, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
];
const SOURCES: std::ops::Range<usize> = 0..2;
const WALLETS: std::ops::Range<usize> = 2..6;

// ---------------------------------------------------------------------------------------------
// Harness (the ledger and its store from kinko_store::testing, as in ledger_conformance.rs)
// ---------------------------------------------------------------------------------------------

struct Harness {
    ledger: Ledger,
    clock: ManualClock,
    _data_dir: kinko_store::testing::Scratch,
}

impl Harness {
    fn new(backend: &str) -> Self {
        let (location, data_dir) = kinko_store::testing::location(backend);
        let clock = ManualClock::starting_now();
        let ledger = kinko_store::testing::start_ledger(&location, &clock, WriterConfig::DEFAULT);
        Self {
            ledger,
            clock,
            _data_dir: data_dir,
        }
    }

    fn transfer_id(&self) -> TransferId {
        TransferId::generate(&self.clock)
    }

    /// Starts a case: a new clock epoch and fresh accounts, one per slot.
    fn open_case(&self) -> Vec<AccountId> {
        self.clock.advance_ms(1_000);
        let accounts: Vec<NewAccount> = SLOTS
            .iter()
            .map(|&(ledger, flags)| NewAccount {
                id: AccountId::generate(&self.clock),
                ledger,
                code: CODE,
                flags,
            })
            .collect();
        let results = self
            .ledger
            .create_accounts_blocking(accounts.clone())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(results, vec![CreateAccountResult::Ok; SLOTS.len()]);
        accounts.iter().map(|account| account.id).collect()
    }

    fn many(&self, transfers: Vec<TransferRequest>) -> Vec<CreateTransferResult> {
        self.ledger
            .create_transfers_blocking(transfers)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn accounts(&self, ids: &[AccountId]) -> Vec<Account> {
        let accounts = self
            .ledger
            .reader()
            .lookup_accounts(ids)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(accounts.len(), ids.len(), "an account is missing");
        accounts
    }

    fn transfers(&self, ids: &[TransferId]) -> Vec<Transfer> {
        self.ledger
            .reader()
            .lookup_transfers(ids)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn check_clean(&self) -> Result<(), TestCaseError> {
        let report = self
            .ledger
            .reader()
            .check_invariants()
            .unwrap_or_else(|error| panic!("{error}"));
        prop_assert!(
            report.is_clean(),
            "invariants broken: {:?}",
            report.violations
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// What proptest generates: requests over account slots, resolved to ids when a case runs
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// One request; its events are judged in order, linked ones as chains.
    Submit(Vec<EventSpec>),
    /// Move the clock forward (by at least a second), so timed pending transfers expire.
    Advance { ms: u64 },
}

#[derive(Debug, Clone)]
struct EventSpec {
    kind: EventKind,
    linked: bool,
}

#[derive(Debug, Clone)]
enum EventKind {
    Transfer {
        debit: usize,
        credit: usize,
        amount: u64,
        /// `None`: single-phase; `Some(timeout_s)`: pending, 0 = no timeout.
        pending: Option<u32>,
        /// Give the transfer the ledger of the other currency.
        wrong_ledger: bool,
    },
    Resolve {
        post: bool,
        target: Target,
        amount: AmountChoice,
        /// Repeat the pending transfer's accounts, ledger and code instead of leaving them out.
        explicit: bool,
    },
}

/// Which earlier event of the case a post or void refers to.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// One of the pending transfers created so far (whatever became of them since), or
    /// requested earlier in the same request.
    Pending(Index),
    /// Any event requested so far, pending or not.
    Any(Index),
    /// An id no event ever had.
    Unknown,
}

/// A post's or void's amount, relative to the amount of the transfer it refers to.
#[derive(Debug, Clone, Copy)]
enum AmountChoice {
    Full,
    Percent(u64),
    Exceeding(u64),
    Zero,
}

fn transfer_kind() -> impl Strategy<Value = EventKind> {
    let funding = (SOURCES, WALLETS, 1..=300u64);
    // Two different yen accounts (the same one twice comes from `anywhere`, rarely).
    let yen = (0..7usize, 1..7usize, 1..=200u64)
        .prop_map(|(debit, offset, amount)| (debit, (debit + offset) % 7, amount));
    let dollars = (7..9usize, 7..9usize, 1..=200u64);
    let anywhere = (0..SLOTS.len(), 0..SLOTS.len(), 1..=200u64);
    let pending = prop_oneof![
        6 => Just(None),
        2 => Just(Some(0)),
        2 => (1..=TIMEOUT_MAX_S).prop_map(Some),
    ];
    (
        prop_oneof![6 => funding, 8 => yen, 2 => dollars, 1 => anywhere],
        pending,
        prop::bool::weighted(0.04),
    )
        .prop_map(
            |((debit, credit, amount), pending, wrong_ledger)| EventKind::Transfer {
                debit,
                credit,
                amount,
                pending,
                wrong_ledger,
            },
        )
}

fn resolve_kind() -> impl Strategy<Value = EventKind> {
    let target = prop_oneof![
        8 => any::<Index>().prop_map(Target::Pending),
        1 => any::<Index>().prop_map(Target::Any),
        1 => Just(Target::Unknown),
    ];
    let amount = prop_oneof![
        4 => Just(AmountChoice::Full),
        3 => (1..=99u64).prop_map(AmountChoice::Percent),
        1 => (1..=20u64).prop_map(AmountChoice::Exceeding),
        1 => Just(AmountChoice::Zero),
    ];
    (
        prop::bool::weighted(0.6),
        target,
        amount,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(post, target, amount, explicit)| EventKind::Resolve {
            post,
            target,
            amount,
            explicit,
        })
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![3 => transfer_kind(), 2 => resolve_kind()]
}

fn op() -> impl Strategy<Value = Op> {
    let single = event_kind().prop_map(|kind| {
        Op::Submit(vec![EventSpec {
            kind,
            linked: false,
        }])
    });
    // A linked chain of 2–3 events: all but the last say "linked".
    let chain = prop::collection::vec(event_kind(), 2..=3).prop_map(|kinds| {
        let last = kinds.len() - 1;
        Op::Submit(
            kinds
                .into_iter()
                .enumerate()
                .map(|(position, kind)| EventSpec {
                    kind,
                    linked: position < last,
                })
                .collect(),
        )
    });
    // A batch of several events, some linked to the next; rarely the last is linked too,
    // leaving its chain open.
    let batch = (
        prop::collection::vec((event_kind(), prop::bool::weighted(0.2)), 2..=5),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(events, leave_open)| {
            let last = events.len() - 1;
            Op::Submit(
                events
                    .into_iter()
                    .enumerate()
                    .map(|(position, (kind, linked))| EventSpec {
                        kind,
                        linked: if position == last { leave_open } else { linked },
                    })
                    .collect(),
            )
        });
    let advance = (1_000..=120_000u64).prop_map(|ms| Op::Advance { ms });
    prop_oneof![6 => single, 2 => chain, 2 => batch, 1 => advance]
}

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Balances {
    debits_pending: u64,
    debits_posted: u64,
    credits_pending: u64,
    credits_posted: u64,
}

/// A transfer as the model expects it stored; accounts by slot.
#[derive(Debug, Clone, Copy)]
struct Recorded {
    debit: usize,
    credit: usize,
    amount: u64,
    pending_id: Option<TransferId>,
    ledger: u32,
    code: u16,
    flags: TransferFlags,
    timeout_s: u32,
    /// For a pending transfer with a timeout: the window its expiry falls in, `[lo, hi)`.
    expiry: Option<(u64, u64)>,
}

/// What a failed linked chain rolls back.
#[derive(Debug, Clone, Default)]
struct Books {
    balances: Vec<Balances>,
    transfers: HashMap<TransferId, Recorded>,
    states: HashMap<TransferId, PendingState>,
}

struct Model {
    ids: Vec<AccountId>,
    slots: HashMap<AccountId, usize>,
    books: Books,
    now_ns: u64,
}

type Judged = Result<(), CreateTransferResult>;

impl Model {
    fn new(ids: Vec<AccountId>, now_ns: u64) -> Self {
        let slots = ids
            .iter()
            .enumerate()
            .map(|(slot, id)| (*id, slot))
            .collect();
        Self {
            books: Books {
                balances: vec![Balances::default(); ids.len()],
                ..Books::default()
            },
            ids,
            slots,
            now_ns,
        }
    }

    fn slot_of(&self, id: AccountId) -> usize {
        self.slots
            .get(&id)
            .copied()
            .unwrap_or_else(|| panic!("the model only knows its own accounts: {id}"))
    }

    /// Pending transfers still open, with their expiry window.
    fn open_windows(&self) -> impl Iterator<Item = (TransferId, (u64, u64))> + '_ {
        self.books.transfers.iter().filter_map(|(id, recorded)| {
            let window = recorded.expiry?;
            (self.books.states.get(id) == Some(&PendingState::Pending)).then_some((*id, window))
        })
    }

    /// Where the clock may move to: `wanted`, or the nearest later millisecond that is not
    /// inside any open pending transfer's expiry window (widened by one epoch).
    fn safe_clock_target(&self, wanted_ns: u64) -> u64 {
        let mut target = wanted_ns;
        while self
            .open_windows()
            .any(|(_, (lo, hi))| hi > target && lo < target + EPOCH_WIDTH_NS)
        {
            target += NS_PER_MS;
        }
        target
    }

    /// The first batch after the clock moved releases every pending transfer due by then.
    fn expire_due(&mut self) {
        let now = self.now_ns;
        let due: Vec<TransferId> = self
            .open_windows()
            .filter(|&(id, (lo, hi))| {
                assert!(
                    hi <= now || lo >= now + EPOCH_WIDTH_NS,
                    "model: the expiry of {id} is ambiguous at {now}"
                );
                hi <= now
            })
            .map(|(id, _)| id)
            .collect();
        for id in due {
            if let Some(pending) = self.books.transfers.get(&id).copied() {
                self.release(&pending);
                self.books.states.insert(id, PendingState::Expired);
            }
        }
    }

    fn release(&mut self, pending: &Recorded) {
        self.books.balances[pending.debit].debits_pending -= pending.amount;
        self.books.balances[pending.credit].credits_pending -= pending.amount;
    }

    /// One request: linked events as chains that commit or fail whole.
    fn execute(&mut self, events: &[TransferRequest]) -> Vec<CreateTransferResult> {
        use CreateTransferResult as R;
        let linked = |event: &TransferRequest| event.flags.contains(TransferFlags::LINKED);
        let mut results = vec![R::LinkedEventFailed; events.len()];
        let mut start = 0;
        while start < events.len() {
            let Some(end) = (start..events.len()).find(|&position| !linked(&events[position]))
            else {
                // The last event still says "linked": its chain never closes.
                results[events.len() - 1] = R::LinkedEventChainOpen;
                break;
            };
            let before = self.books.clone();
            for position in start..=end {
                match self.judge(&events[position]) {
                    Ok(()) => results[position] = R::Ok,
                    Err(result) => {
                        self.books = before;
                        results[start..position].fill(R::LinkedEventFailed);
                        results[position] = result;
                        break;
                    }
                }
            }
            start = end + 1;
        }
        results
    }

    fn judge(&mut self, event: &TransferRequest) -> Judged {
        if event.flags.contains(TransferFlags::POST_PENDING)
            || event.flags.contains(TransferFlags::VOID_PENDING)
        {
            self.resolve(event)
        } else {
            self.transfer(event)
        }
    }

    /// A single-phase or pending transfer. The generator never gives invalid fields other
    /// than those checked here, and amounts far too small to overflow.
    fn transfer(&mut self, event: &TransferRequest) -> Judged {
        use CreateTransferResult as R;
        let (Some(debit_id), Some(credit_id)) = (event.debit_account_id, event.credit_account_id)
        else {
            panic!("the generator always names both accounts of a transfer");
        };
        if debit_id == credit_id {
            return Err(R::AccountsMustBeDifferent);
        }
        self.exists(event)?;
        let (debit, credit) = (self.slot_of(debit_id), self.slot_of(credit_id));
        let ledger = SLOTS[debit].0;
        if ledger != SLOTS[credit].0 {
            return Err(R::AccountsMustHaveTheSameLedger);
        }
        if event.ledger != ledger {
            return Err(R::TransferMustHaveTheSameLedgerAsAccounts);
        }
        let is_pending = event.flags.contains(TransferFlags::PENDING);
        let debit_after = debited(self.books.balances[debit], debit, event.amount, is_pending)?;
        let credit_after = credited(
            self.books.balances[credit],
            credit,
            event.amount,
            is_pending,
        )?;
        self.books.balances[debit] = debit_after;
        self.books.balances[credit] = credit_after;
        let expiry = (is_pending && event.timeout_s > 0).then(|| {
            let lo = self.now_ns + u64::from(event.timeout_s) * NS_PER_S;
            (lo, lo + EPOCH_WIDTH_NS)
        });
        self.books.transfers.insert(
            event.id,
            Recorded {
                debit,
                credit,
                amount: event.amount,
                pending_id: None,
                ledger: event.ledger,
                code: event.code,
                flags: event.flags,
                timeout_s: event.timeout_s,
                expiry,
            },
        );
        if is_pending {
            self.books.states.insert(event.id, PendingState::Pending);
        }
        Ok(())
    }

    /// A post or void, with the ledger's order of checks.
    fn resolve(&mut self, event: &TransferRequest) -> Judged {
        use CreateTransferResult as R;
        let is_post = event.flags.contains(TransferFlags::POST_PENDING);
        let Some(pending_id) = event.pending_id else {
            panic!("the generator always names the pending transfer");
        };
        if is_post && event.amount == 0 {
            return Err(R::AmountMustNotBeZero);
        }
        self.exists(event)?;
        let pending = *self
            .books
            .transfers
            .get(&pending_id)
            .ok_or(R::PendingTransferNotFound)?;
        if !pending.flags.contains(TransferFlags::PENDING) {
            return Err(R::PendingTransferNotPending);
        }
        if event
            .debit_account_id
            .is_some_and(|id| id != self.ids[pending.debit])
        {
            return Err(R::PendingTransferHasDifferentDebitAccountId);
        }
        if event
            .credit_account_id
            .is_some_and(|id| id != self.ids[pending.credit])
        {
            return Err(R::PendingTransferHasDifferentCreditAccountId);
        }
        if event.ledger != 0 && event.ledger != pending.ledger {
            return Err(R::PendingTransferHasDifferentLedger);
        }
        if event.code != 0 && event.code != pending.code {
            return Err(R::PendingTransferHasDifferentCode);
        }
        if is_post && event.amount > pending.amount {
            return Err(R::ExceedsPendingTransferAmount);
        }
        if !is_post && event.amount != 0 && event.amount != pending.amount {
            return Err(R::PendingTransferHasDifferentAmount);
        }
        match self.books.states.get(&pending_id) {
            Some(PendingState::Pending) => {}
            Some(PendingState::Posted) => return Err(R::PendingTransferAlreadyPosted),
            Some(PendingState::Voided) => return Err(R::PendingTransferAlreadyVoided),
            Some(PendingState::Expired) => return Err(R::PendingTransferExpired),
            None => panic!("model: pending transfer {pending_id} has no state"),
        }
        // Open pending transfers are never due within the epoch (see `safe_clock_target`).
        let amount = if is_post {
            event.amount
        } else {
            pending.amount
        };
        let mut debit_after = self.books.balances[pending.debit];
        let mut credit_after = self.books.balances[pending.credit];
        debit_after.debits_pending -= pending.amount;
        credit_after.credits_pending -= pending.amount;
        if is_post {
            debit_after = debited(debit_after, pending.debit, amount, false)?;
            credit_after = credited(credit_after, pending.credit, amount, false)?;
        }
        self.books.balances[pending.debit] = debit_after;
        self.books.balances[pending.credit] = credit_after;
        self.books.transfers.insert(
            event.id,
            Recorded {
                debit: pending.debit,
                credit: pending.credit,
                amount,
                pending_id: Some(pending_id),
                ledger: pending.ledger,
                code: pending.code,
                flags: event.flags,
                timeout_s: 0,
                expiry: None,
            },
        );
        let state = if is_post {
            PendingState::Posted
        } else {
            PendingState::Voided
        };
        self.books.states.insert(pending_id, state);
        Ok(())
    }

    /// A repeated id answers `exists`, or names the first field that differs.
    fn exists(&self, event: &TransferRequest) -> Judged {
        use CreateTransferResult as R;
        let Some(existing) = self.books.transfers.get(&event.id) else {
            return Ok(());
        };
        let resolves = event.flags.contains(TransferFlags::POST_PENDING)
            || event.flags.contains(TransferFlags::VOID_PENDING);
        let differs = |given: Option<AccountId>, stored: usize| match given {
            Some(id) => id != self.ids[stored],
            None => !resolves,
        };
        Err(if event.flags != existing.flags {
            R::ExistsWithDifferentFlags
        } else if differs(event.debit_account_id, existing.debit) {
            R::ExistsWithDifferentDebitAccountId
        } else if differs(event.credit_account_id, existing.credit) {
            R::ExistsWithDifferentCreditAccountId
        } else if event.amount != existing.amount
            && !(event.flags.contains(TransferFlags::VOID_PENDING) && event.amount == 0)
        {
            R::ExistsWithDifferentAmount
        } else if event.pending_id != existing.pending_id {
            R::ExistsWithDifferentPendingId
        } else if event.timeout_s != existing.timeout_s {
            R::ExistsWithDifferentTimeout
        } else if event.ledger != existing.ledger && !(resolves && event.ledger == 0) {
            R::ExistsWithDifferentLedger
        } else if event.code != existing.code && !(resolves && event.code == 0) {
            R::ExistsWithDifferentCode
        } else {
            R::Exists
        })
    }
}

fn debited(
    mut balances: Balances,
    slot: usize,
    amount: u64,
    is_pending: bool,
) -> Result<Balances, CreateTransferResult> {
    if is_pending {
        balances.debits_pending += amount;
    } else {
        balances.debits_posted += amount;
    }
    if SLOTS[slot]
        .1
        .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && balances.debits_pending + balances.debits_posted > balances.credits_posted
    {
        return Err(CreateTransferResult::ExceedsCredits);
    }
    Ok(balances)
}

fn credited(
    mut balances: Balances,
    slot: usize,
    amount: u64,
    is_pending: bool,
) -> Result<Balances, CreateTransferResult> {
    if is_pending {
        balances.credits_pending += amount;
    } else {
        balances.credits_posted += amount;
    }
    if SLOTS[slot]
        .1
        .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        && balances.credits_pending + balances.credits_posted > balances.debits_posted
    {
        return Err(CreateTransferResult::ExceedsDebits);
    }
    Ok(balances)
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// One case in progress: the store, the model, and every request sent so far.
struct Case<'harness> {
    harness: &'harness Harness,
    model: Model,
    /// Every transfer event built so far, and the pending transfers created so far.
    issued: Vec<TransferId>,
    issued_pending: Vec<TransferId>,
    requests: HashMap<TransferId, TransferRequest>,
    /// Every request sent and what the store answered.
    log: Vec<(Vec<TransferRequest>, Vec<CreateTransferResult>)>,
}

impl<'harness> Case<'harness> {
    fn open(harness: &'harness Harness) -> Self {
        let ids = harness.open_case();
        Self {
            harness,
            model: Model::new(ids, harness.clock.now_ns()),
            issued: Vec::new(),
            issued_pending: Vec::new(),
            requests: HashMap::new(),
            log: Vec::new(),
        }
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), TestCaseError> {
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Advance { ms } => self.advance(*ms),
                Op::Submit(specs) => {
                    let events: Vec<TransferRequest> =
                        specs.iter().map(|spec| self.build(spec)).collect();
                    let expected = self.submit_to_model(&events);
                    let actual = self.harness.many(events.clone());
                    prop_assert_eq!(
                        &actual,
                        &expected,
                        "step {}: the store and the model disagree on {:?}",
                        step,
                        events
                    );
                    self.log.push((events, actual));
                    let created = &self.model.books.transfers;
                    self.issued_pending.retain(|id| created.contains_key(id));
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self, ms: u64) {
        let now = self.harness.clock.now_ns();
        let target = self.model.safe_clock_target(now + ms * NS_PER_MS);
        self.harness.clock.advance_ms((target - now) / NS_PER_MS);
        self.model.now_ns = self.harness.clock.now_ns();
    }

    /// Moves the clock past every timeout and sends an empty request, whose batch releases
    /// every pending transfer due (as any batch does); then checks the store again. The case
    /// leaves no pending transfer behind that could expire during a later case.
    fn close(&mut self) -> Result<(), TestCaseError> {
        self.advance((u64::from(TIMEOUT_MAX_S) + 1) * 1_000);
        prop_assert!(
            self.model
                .open_windows()
                .all(|(_, (_, hi))| hi <= self.model.now_ns)
        );
        prop_assert_eq!(self.submit_to_model(&[]), Vec::new());
        prop_assert_eq!(self.harness.many(Vec::new()), Vec::new());
        prop_assert_eq!(self.model.open_windows().count(), 0);
        self.check_store()
    }

    fn submit_to_model(&mut self, events: &[TransferRequest]) -> Vec<CreateTransferResult> {
        self.model.expire_due();
        self.model.execute(events)
    }

    fn build(&mut self, spec: &EventSpec) -> TransferRequest {
        let ids = &self.model.ids;
        let id = self.harness.transfer_id();
        let linked = if spec.linked {
            TransferFlags::LINKED
        } else {
            TransferFlags::NONE
        };
        let request = match spec.kind {
            EventKind::Transfer {
                debit,
                credit,
                amount,
                pending,
                wrong_ledger,
            } => {
                let ledger = match (SLOTS[debit].0, wrong_ledger) {
                    (ledger, false) => ledger,
                    (USD, true) => LEDGER_JPY,
                    (_, true) => USD,
                };
                let (phase, timeout_s) = match pending {
                    Some(timeout_s) => (TransferFlags::PENDING, timeout_s),
                    None => (TransferFlags::NONE, 0),
                };
                if pending.is_some() {
                    self.issued_pending.push(id);
                }
                TransferRequest {
                    flags: phase | linked,
                    timeout_s,
                    ..TransferRequest::single_phase(
                        id,
                        ids[debit],
                        ids[credit],
                        amount,
                        ledger,
                        CODE,
                    )
                }
            }
            EventKind::Resolve {
                post,
                target,
                amount,
                explicit,
            } => {
                let pick = |list: &[TransferId], index: Index| {
                    (!list.is_empty()).then(|| list[index.index(list.len())])
                };
                let target_id = match target {
                    Target::Pending(index) => pick(&self.issued_pending, index),
                    Target::Any(index) => pick(&self.issued, index),
                    Target::Unknown => None,
                }
                .unwrap_or_else(|| self.harness.transfer_id());
                let target = self.requests.get(&target_id).copied();
                let full = target.map_or(10, |target| target.amount);
                let amount = match amount {
                    AmountChoice::Full => full,
                    AmountChoice::Percent(percent) => (full * percent / 100).max(1),
                    AmountChoice::Exceeding(extra) => full + extra,
                    AmountChoice::Zero => 0,
                };
                let phase = if post {
                    TransferFlags::POST_PENDING
                } else {
                    TransferFlags::VOID_PENDING
                };
                let given = target.filter(|_| explicit);
                TransferRequest {
                    id,
                    debit_account_id: given.and_then(|target| target.debit_account_id),
                    credit_account_id: given.and_then(|target| target.credit_account_id),
                    amount,
                    pending_id: Some(target_id),
                    ledger: given.map_or(0, |target| target.ledger),
                    code: given.map_or(0, |target| target.code),
                    flags: phase | linked,
                    timeout_s: 0,
                }
            }
        };
        self.issued.push(id);
        self.requests.insert(id, request);
        request
    }

    /// (a) every balance equals the model's, every transfer the model expects is stored as
    /// expected and no other; (b) `check_invariants` is clean.
    fn check_store(&self) -> Result<(), TestCaseError> {
        let model = &self.model;
        for (slot, account) in self.harness.accounts(&model.ids).iter().enumerate() {
            let balances = Balances {
                debits_pending: account.debits_pending,
                debits_posted: account.debits_posted,
                credits_pending: account.credits_pending,
                credits_posted: account.credits_posted,
            };
            prop_assert_eq!(account.id, model.ids[slot]);
            prop_assert_eq!(
                balances,
                model.books.balances[slot],
                "balances of slot {}",
                slot
            );
        }
        let stored = self.harness.transfers(&self.issued);
        let stored_ids: HashSet<TransferId> = stored.iter().map(|transfer| transfer.id).collect();
        let expected_ids: HashSet<TransferId> = self
            .issued
            .iter()
            .copied()
            .filter(|id| model.books.transfers.contains_key(id))
            .collect();
        prop_assert_eq!(&stored_ids, &expected_ids, "the transfers stored");
        for transfer in &stored {
            let Some(recorded) = model.books.transfers.get(&transfer.id) else {
                continue;
            };
            prop_assert_eq!(
                (
                    transfer.debit_account_id,
                    transfer.credit_account_id,
                    transfer.amount,
                    transfer.pending_id,
                    transfer.ledger,
                    transfer.code,
                    transfer.flags,
                    transfer.timeout_s,
                ),
                (
                    model.ids[recorded.debit],
                    model.ids[recorded.credit],
                    recorded.amount,
                    recorded.pending_id,
                    recorded.ledger,
                    recorded.code,
                    recorded.flags,
                    recorded.timeout_s,
                ),
                "transfer {} as stored",
                transfer.id
            );
        }
        self.harness.check_clean()
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name("sqlite"); })+
        }
        mod postgres {
            $(#[test] fn $name() { super::$name("postgres"); })+
        }
    };
}

conformance!(
    random_sequences_keep_every_invariant,
    replaying_a_sequence_changes_nothing,
);

/// Runs proptest cases one after another against one store, each case with fresh accounts;
/// PostgreSQL runs fewer, as each of its commits costs more. `PROPTEST_CASES` overrides the
/// count for a longer soak.
///
/// A failing case may leave the store broken, which would make every later case fail too and
/// send shrinking to a meaningless "minimal" input; so after a failure the next case gets a
/// fresh store, and every case runs on a store that only passing cases have touched.
fn run_cases<S: Strategy>(
    backend: &str,
    strategy: S,
    test: impl Fn(&Harness, S::Value) -> Result<(), TestCaseError>,
) {
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => Config::default().cases,
        None if backend == "sqlite" => 64,
        None => 32,
    };
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 512,
        // No regression files in the source tree; a failure prints its minimal input instead.
        failure_persistence: None,
        ..Config::default()
    });
    let harness = RefCell::new(Harness::new(backend));
    let outcome = runner.run(&strategy, |value| {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| test(&harness.borrow(), value)));
        if !matches!(outcome, Ok(Ok(()))) {
            harness.replace(Harness::new(backend));
        }
        outcome.unwrap_or_else(|payload| panic::resume_unwind(payload))
    });
    if let Err(error) = outcome {
        panic!("{backend}: {error}");
    }
}

/// Proves that random sequences of single-phase and pending transfers, posts (in full, in
/// part, exceeding), voids, expiries, linked chains and batches (a) leave every balance as an
/// independent model computes it, (b) keep `check_invariants` clean, and (c) answer every
/// event exactly as the model predicts: which succeed, and the named result of each refusal.
fn random_sequences_keep_every_invariant(backend: &str) {
    run_cases(
        backend,
        prop::collection::vec(op(), 1..=60),
        |harness, ops: Vec<Op>| {
            let mut case = Case::open(harness);
            case.run(&ops)?;
            case.check_store()?;
            case.close()
        },
    );
}

/// Proves that idempotent replays change nothing: after a random sequence, sending again every
/// event that succeeded (same ids, same fields, same requests) answers `exists` for each (in a
/// replayed linked chain, `exists` for its first event and `linked_event_failed` for the rest,
/// as the chain stops at its first non-ok event) and leaves every account exactly as it was;
/// and that a replay with a different amount answers `exists_with_different_amount`, writes
/// nothing and moves no money.
fn replaying_a_sequence_changes_nothing(backend: &str) {
    use CreateTransferResult as R;
    run_cases(
        backend,
        (prop::collection::vec(op(), 1..=40), any::<Index>()),
        |harness, (ops, conflict): (Vec<Op>, Index)| {
            let mut case = Case::open(harness);
            case.run(&ops)?;
            case.check_store()?;
            // Every timed pending transfer expires first, so the replays have nothing to release.
            case.close()?;
            let before = harness.accounts(&case.model.ids);

            // Every request again, with only the events that succeeded.
            let log = std::mem::take(&mut case.log);
            let mut succeeded = Vec::new();
            for (events, results) in &log {
                let replay: Vec<TransferRequest> = events
                    .iter()
                    .zip(results)
                    .filter(|(_, result)| result.is_ok())
                    .map(|(event, _)| *event)
                    .collect();
                if replay.is_empty() {
                    continue;
                }
                succeeded.extend(replay.iter().copied());
                let mut expected = Vec::with_capacity(replay.len());
                let mut in_chain = false;
                for event in &replay {
                    expected.push(if in_chain {
                        R::LinkedEventFailed
                    } else {
                        R::Exists
                    });
                    in_chain = event.flags.contains(TransferFlags::LINKED);
                }
                prop_assert_eq!(&case.submit_to_model(&replay), &expected, "model replay");
                let actual = harness.many(replay.clone());
                prop_assert_eq!(&actual, &expected, "replay of {:?}", replay);
            }
            prop_assert_eq!(
                &harness.accounts(&case.model.ids),
                &before,
                "a replay moved money"
            );
            case.check_store()?;

            // One succeeded event again with a different amount.
            if !succeeded.is_empty() {
                let original = succeeded[conflict.index(succeeded.len())];
                let stored_amount = case
                    .model
                    .books
                    .transfers
                    .get(&original.id)
                    .map(|recorded| recorded.amount)
                    .unwrap_or_else(|| panic!("{} succeeded but the model lacks it", original.id));
                let mut request = vec![TransferRequest {
                    amount: stored_amount + 1,
                    ..original
                }];
                let mut expected = vec![R::ExistsWithDifferentAmount];
                if original.flags.contains(TransferFlags::LINKED) {
                    // Close the chain with a valid transfer that the conflict must fail.
                    let ids = &case.model.ids;
                    request.push(TransferRequest::single_phase(
                        harness.transfer_id(),
                        ids[0],
                        ids[1],
                        1,
                        LEDGER_JPY,
                        CODE,
                    ));
                    expected.push(R::LinkedEventFailed);
                }
                prop_assert_eq!(&case.submit_to_model(&request), &expected, "model conflict");
                let actual = harness.many(request.clone());
                prop_assert_eq!(&actual, &expected, "conflicting replay {:?}", request);
                let written: Vec<TransferId> = request[1..].iter().map(|event| event.id).collect();
                prop_assert!(
                    harness.transfers(&written).is_empty(),
                    "a failed chain wrote its closing transfer"
                );
                prop_assert_eq!(
                    &harness.accounts(&case.model.ids),
                    &before,
                    "a conflicting replay moved money"
                );
                harness.check_clean()?;
            }
            Ok(())
        },
    );
}
