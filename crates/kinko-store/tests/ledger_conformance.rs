//! One storage conformance suite for the ledger, run against both stores: every test below
//! exists twice, as `sqlite::name` and `postgres::name`. PostgreSQL tests need
//! `KINKO_TEST_DATABASE_URL` (an admin URL; `scripts/test` starts a throwaway server and sets
//! it) and fail loudly without it: a suite that silently skips a store proves nothing.

use std::sync::Arc;

use kinko_core::{Clock, ManualClock};
use kinko_ledger::state_machine::Request;
use kinko_ledger::store::HistoryQuery;
use kinko_ledger::{
    Account, AccountFlags, AccountId, CreateAccountResult, CreateTransferResult, LEDGER_JPY,
    Ledger, LedgerError, NewAccount, TransferFlags, TransferId, TransferRequest, WriterConfig,
};
use kinko_store::StoreLocation;

const USD: u32 = 840;
const CODE: u16 = 1;

struct Harness {
    ledger: Ledger,
    clock: ManualClock,
    location: StoreLocation,
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
            location,
            _data_dir: data_dir,
        }
    }

    fn account_with(&self, ledger: u32, flags: AccountFlags) -> AccountId {
        let id = AccountId::generate(&self.clock);
        let results = self
            .ledger
            .create_accounts_blocking(vec![NewAccount {
                id,
                ledger,
                code: CODE,
                flags,
            }])
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(results, vec![CreateAccountResult::Ok]);
        id
    }

    fn wallet(&self) -> AccountId {
        self.account_with(LEDGER_JPY, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
    }

    fn plain(&self) -> AccountId {
        self.account_with(LEDGER_JPY, AccountFlags::NONE)
    }

    fn transfer_id(&self) -> TransferId {
        TransferId::generate(&self.clock)
    }

    fn move_money(&self, debit: AccountId, credit: AccountId, amount: u64) -> TransferId {
        let id = self.transfer_id();
        let result = self.one(TransferRequest::single_phase(
            id, debit, credit, amount, LEDGER_JPY, CODE,
        ));
        assert_eq!(result, CreateTransferResult::Ok);
        id
    }

    fn one(&self, transfer: TransferRequest) -> CreateTransferResult {
        let results = self
            .ledger
            .create_transfers_blocking(vec![transfer])
            .unwrap_or_else(|error| panic!("{error}"));
        results[0]
    }

    fn many(&self, transfers: Vec<TransferRequest>) -> Vec<CreateTransferResult> {
        self.ledger
            .create_transfers_blocking(transfers)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn account(&self, id: AccountId) -> Account {
        let accounts = self
            .ledger
            .reader()
            .lookup_accounts(&[id])
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(accounts.len(), 1, "account {id} not found");
        accounts[0]
    }

    fn transfer_exists(&self, id: TransferId) -> bool {
        !self
            .ledger
            .reader()
            .lookup_transfers(&[id])
            .unwrap_or_else(|error| panic!("{error}"))
            .is_empty()
    }

    fn assert_clean(&self) {
        let report = self
            .ledger
            .reader()
            .check_invariants()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            report.is_clean(),
            "invariants broken: {:?}",
            report.violations
        );
    }

    /// A wallet holding `amount` yen, funded from a plain source account.
    fn funded_wallet(&self, amount: u64) -> (AccountId, AccountId) {
        let source = self.plain();
        let wallet = self.wallet();
        self.move_money(source, wallet, amount);
        (source, wallet)
    }
}

fn pending(
    harness: &Harness,
    debit: AccountId,
    credit: AccountId,
    amount: u64,
    timeout_s: u32,
) -> TransferRequest {
    TransferRequest {
        flags: TransferFlags::PENDING,
        timeout_s,
        ..TransferRequest::single_phase(
            harness.transfer_id(),
            debit,
            credit,
            amount,
            LEDGER_JPY,
            CODE,
        )
    }
}

fn resolve(
    harness: &Harness,
    pending_id: TransferId,
    flags: TransferFlags,
    amount: u64,
) -> TransferRequest {
    TransferRequest {
        id: harness.transfer_id(),
        debit_account_id: None,
        credit_account_id: None,
        amount,
        pending_id: Some(pending_id),
        ledger: 0,
        code: 0,
        flags,
        timeout_s: 0,
    }
}

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
    single_phase_transfer_moves_money_and_shows_in_history,
    every_rejection_is_named_and_writes_nothing,
    replays_are_idempotent_and_conflicts_are_named,
    two_phase_post_in_part_void_and_expire,
    linked_chain_commits_or_fails_whole,
    history_pages_by_cursor_and_time_range,
    ten_thousand_concurrent_debits_never_overdraw,
    a_failed_commit_fails_the_whole_batch_and_writes_nothing,
    two_writers_on_one_database_never_double_spend,
    accounts_are_idempotent_and_validated,
    a_transiently_failed_id_never_posts_later,
    the_check_reads_one_snapshot_while_transfers_run,
);

fn single_phase_transfer_moves_money_and_shows_in_history(backend: &str) {
    let harness = Harness::new(backend);
    let (source, wallet) = harness.funded_wallet(1_000);
    let merchant = harness.plain();
    let paid = harness.move_money(wallet, merchant, 300);
    assert_eq!(harness.account(wallet).credit_balance_posted(), 700);
    assert_eq!(harness.account(merchant).credits_posted, 300);
    assert_eq!(harness.account(source).debits_posted, 1_000);
    let page = harness
        .ledger
        .reader()
        .account_history(&HistoryQuery {
            account_id: wallet,
            from_ns: 0,
            to_ns: u64::MAX,
            before: None,
            limit: 10,
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(page.transfers.len(), 2);
    assert_eq!(page.transfers[0].id, paid, "newest first");
    assert!(page.transfers[0].timestamp > page.transfers[1].timestamp);
    assert_eq!(page.next, None);
    harness.assert_clean();
}

fn every_rejection_is_named_and_writes_nothing(backend: &str) {
    use CreateTransferResult as R;
    let harness = Harness::new(backend);
    let (_, wallet) = harness.funded_wallet(100);
    let merchant = harness.plain();
    let dollars = harness.account_with(USD, AccountFlags::NONE);
    let limited = harness.account_with(LEDGER_JPY, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS);
    let unknown = AccountId::generate(&harness.clock);
    let base = |harness: &Harness| {
        TransferRequest::single_phase(
            harness.transfer_id(),
            wallet,
            merchant,
            10,
            LEDGER_JPY,
            CODE,
        )
    };
    let cases: Vec<(TransferRequest, CreateTransferResult)> = vec![
        (
            TransferRequest {
                flags: TransferFlags::from_bits(64),
                ..base(&harness)
            },
            R::ReservedFlag,
        ),
        (
            TransferRequest {
                flags: TransferFlags::PENDING | TransferFlags::POST_PENDING,
                ..base(&harness)
            },
            R::FlagsAreMutuallyExclusive,
        ),
        (
            TransferRequest {
                debit_account_id: None,
                ..base(&harness)
            },
            R::DebitAccountIdMustNotBeZero,
        ),
        (
            TransferRequest {
                credit_account_id: None,
                ..base(&harness)
            },
            R::CreditAccountIdMustNotBeZero,
        ),
        (
            TransferRequest {
                credit_account_id: Some(wallet),
                ..base(&harness)
            },
            R::AccountsMustBeDifferent,
        ),
        (
            TransferRequest {
                pending_id: Some(harness.transfer_id()),
                ..base(&harness)
            },
            R::PendingIdMustBeZero,
        ),
        (
            TransferRequest {
                timeout_s: 5,
                ..base(&harness)
            },
            R::TimeoutReservedForPendingTransfer,
        ),
        (
            TransferRequest {
                ledger: 0,
                ..base(&harness)
            },
            R::LedgerMustNotBeZero,
        ),
        (
            TransferRequest {
                code: 0,
                ..base(&harness)
            },
            R::CodeMustNotBeZero,
        ),
        (
            TransferRequest {
                amount: 0,
                ..base(&harness)
            },
            R::AmountMustNotBeZero,
        ),
        (
            TransferRequest {
                amount: u64::MAX,
                ..base(&harness)
            },
            R::AmountExceedsMax,
        ),
        (
            TransferRequest {
                debit_account_id: Some(unknown),
                ..base(&harness)
            },
            R::DebitAccountNotFound,
        ),
        (
            TransferRequest {
                credit_account_id: Some(unknown),
                ..base(&harness)
            },
            R::CreditAccountNotFound,
        ),
        (
            TransferRequest {
                credit_account_id: Some(dollars),
                ..base(&harness)
            },
            R::AccountsMustHaveTheSameLedger,
        ),
        (
            TransferRequest {
                ledger: USD,
                ..base(&harness)
            },
            R::TransferMustHaveTheSameLedgerAsAccounts,
        ),
        (
            TransferRequest {
                amount: 101,
                ..base(&harness)
            },
            R::ExceedsCredits,
        ),
        (
            TransferRequest {
                debit_account_id: Some(merchant),
                credit_account_id: Some(limited),
                ..base(&harness)
            },
            R::ExceedsDebits,
        ),
        (
            resolve(
                &harness,
                harness.transfer_id(),
                TransferFlags::VOID_PENDING,
                0,
            ),
            R::PendingTransferNotFound,
        ),
        (
            TransferRequest {
                pending_id: None,
                ..resolve(
                    &harness,
                    harness.transfer_id(),
                    TransferFlags::POST_PENDING,
                    1,
                )
            },
            R::PendingIdMustNotBeZero,
        ),
    ];
    let before = harness.account(wallet);
    for (transfer, expected) in cases {
        assert_eq!(harness.one(transfer), expected, "{transfer:?}");
        assert!(
            !harness.transfer_exists(transfer.id),
            "{expected} wrote a transfer"
        );
    }
    assert_eq!(
        harness.account(wallet),
        before,
        "a rejection changed the wallet"
    );

    // Overflow: a source that has already sent the maximum cannot send more.
    let sink = harness.plain();
    let source = harness.plain();
    harness.move_money(source, sink, kinko_ledger::AMOUNT_MAX);
    let other = harness.plain();
    assert_eq!(
        harness.one(TransferRequest::single_phase(
            harness.transfer_id(),
            source,
            other,
            1,
            LEDGER_JPY,
            CODE
        )),
        R::OverflowsDebitsPosted
    );
    assert_eq!(
        harness.one(TransferRequest::single_phase(
            harness.transfer_id(),
            other,
            sink,
            1,
            LEDGER_JPY,
            CODE
        )),
        R::OverflowsCreditsPosted
    );

    // Rejections about pending transfers.
    let reservation = pending(&harness, wallet, merchant, 40, 0);
    assert_eq!(harness.one(reservation), R::Ok);
    let plain_transfer = harness.move_money(wallet, merchant, 1);
    let post = |amount| {
        resolve(
            &harness,
            reservation.id,
            TransferFlags::POST_PENDING,
            amount,
        )
    };
    assert_eq!(
        harness.one(resolve(
            &harness,
            plain_transfer,
            TransferFlags::POST_PENDING,
            1
        )),
        R::PendingTransferNotPending
    );
    assert_eq!(harness.one(post(41)), R::ExceedsPendingTransferAmount);
    assert_eq!(
        harness.one(TransferRequest {
            amount: 0,
            ..post(0)
        }),
        R::AmountMustNotBeZero
    );
    assert_eq!(
        harness.one(TransferRequest {
            debit_account_id: Some(merchant),
            ..post(1)
        }),
        R::PendingTransferHasDifferentDebitAccountId
    );
    assert_eq!(
        harness.one(TransferRequest {
            credit_account_id: Some(wallet),
            ..post(1)
        }),
        R::PendingTransferHasDifferentCreditAccountId
    );
    assert_eq!(
        harness.one(TransferRequest {
            ledger: USD,
            ..post(1)
        }),
        R::PendingTransferHasDifferentLedger
    );
    assert_eq!(
        harness.one(TransferRequest { code: 9, ..post(1) }),
        R::PendingTransferHasDifferentCode
    );
    assert_eq!(
        harness.one(TransferRequest {
            timeout_s: 1,
            ..post(1)
        }),
        R::TimeoutReservedForPendingTransfer
    );
    let same_id = post(1);
    assert_eq!(
        harness.one(TransferRequest {
            pending_id: Some(same_id.id),
            ..same_id
        }),
        R::PendingIdMustBeDifferent
    );
    assert_eq!(
        harness.one(resolve(
            &harness,
            reservation.id,
            TransferFlags::VOID_PENDING,
            39
        )),
        R::PendingTransferHasDifferentAmount
    );
    assert_eq!(harness.one(post(40)), R::Ok);
    assert_eq!(harness.one(post(1)), R::PendingTransferAlreadyPosted);
    let second = pending(&harness, wallet, merchant, 5, 0);
    assert_eq!(harness.one(second), R::Ok);
    assert_eq!(
        harness.one(resolve(&harness, second.id, TransferFlags::VOID_PENDING, 0)),
        R::Ok
    );
    assert_eq!(
        harness.one(resolve(&harness, second.id, TransferFlags::POST_PENDING, 5)),
        R::PendingTransferAlreadyVoided
    );
    harness.assert_clean();
}

fn replays_are_idempotent_and_conflicts_are_named(backend: &str) {
    use CreateTransferResult as R;
    let harness = Harness::new(backend);
    let (_, wallet) = harness.funded_wallet(1_000);
    let merchant = harness.plain();
    let other = harness.plain();
    let original = TransferRequest::single_phase(
        harness.transfer_id(),
        wallet,
        merchant,
        100,
        LEDGER_JPY,
        CODE,
    );
    assert_eq!(harness.one(original), R::Ok);
    let after_first = harness.account(wallet);
    assert_eq!(harness.one(original), R::Exists);
    assert_eq!(
        harness.many(vec![original, original]),
        vec![R::Exists, R::Exists]
    );
    let conflicts = [
        (
            TransferRequest {
                amount: 101,
                ..original
            },
            R::ExistsWithDifferentAmount,
        ),
        (
            TransferRequest {
                credit_account_id: Some(other),
                ..original
            },
            R::ExistsWithDifferentCreditAccountId,
        ),
        (
            TransferRequest {
                debit_account_id: Some(other),
                ..original
            },
            R::ExistsWithDifferentDebitAccountId,
        ),
        (
            TransferRequest {
                code: 2,
                ..original
            },
            R::ExistsWithDifferentCode,
        ),
        (
            TransferRequest {
                flags: TransferFlags::PENDING,
                ..original
            },
            R::ExistsWithDifferentFlags,
        ),
    ];
    for (transfer, expected) in conflicts {
        assert_eq!(harness.one(transfer), expected);
    }
    assert_eq!(harness.account(wallet), after_first, "a replay moved money");

    // The same id twice in one request: the second is a replay of the first.
    let fresh =
        TransferRequest::single_phase(harness.transfer_id(), wallet, merchant, 7, LEDGER_JPY, CODE);
    assert_eq!(harness.many(vec![fresh, fresh]), vec![R::Ok, R::Exists]);
    assert_eq!(harness.account(wallet).credit_balance_posted(), 893);

    // A replayed post and void answer `exists`, with or without the inherited fields.
    let reservation = pending(&harness, wallet, merchant, 50, 0);
    assert_eq!(harness.one(reservation), R::Ok);
    let post = resolve(&harness, reservation.id, TransferFlags::POST_PENDING, 20);
    assert_eq!(harness.one(post), R::Ok);
    assert_eq!(harness.one(post), R::Exists);
    assert_eq!(
        harness.one(TransferRequest { amount: 21, ..post }),
        R::ExistsWithDifferentAmount
    );
    harness.assert_clean();
}

fn two_phase_post_in_part_void_and_expire(backend: &str) {
    use CreateTransferResult as R;
    let harness = Harness::new(backend);
    let (_, wallet) = harness.funded_wallet(1_000);
    let merchant = harness.plain();

    let reservation = pending(&harness, wallet, merchant, 600, 0);
    assert_eq!(harness.one(reservation), R::Ok);
    let held = harness.account(wallet);
    assert_eq!(held.debits_pending, 600);
    assert_eq!(held.credit_balance_available(), 400);
    // The reservation counts: only 400 is left to spend.
    assert_eq!(
        harness.one(TransferRequest::single_phase(
            harness.transfer_id(),
            wallet,
            merchant,
            401,
            LEDGER_JPY,
            CODE
        )),
        R::ExceedsCredits
    );
    assert_eq!(
        harness.one(resolve(
            &harness,
            reservation.id,
            TransferFlags::POST_PENDING,
            250
        )),
        R::Ok
    );
    let posted = harness.account(wallet);
    assert_eq!((posted.debits_pending, posted.debits_posted), (0, 250));
    assert_eq!(harness.account(merchant).credits_posted, 250);

    let voided = pending(&harness, wallet, merchant, 100, 0);
    assert_eq!(harness.one(voided), R::Ok);
    assert_eq!(
        harness.one(resolve(&harness, voided.id, TransferFlags::VOID_PENDING, 0)),
        R::Ok
    );
    assert_eq!(harness.account(wallet).debits_pending, 0);

    // A pending transfer with a timeout expires by itself and can no longer be posted.
    let expiring = pending(&harness, wallet, merchant, 300, 30);
    assert_eq!(harness.one(expiring), R::Ok);
    assert_eq!(harness.account(wallet).debits_pending, 300);
    harness.clock.advance_ms(31_000);
    assert_eq!(
        harness.one(resolve(
            &harness,
            expiring.id,
            TransferFlags::POST_PENDING,
            300
        )),
        R::PendingTransferExpired
    );
    let after = harness.account(wallet);
    assert_eq!(
        after.debits_pending, 0,
        "the expired reservation was released"
    );
    assert_eq!(after.credit_balance_available(), 750);
    harness.assert_clean();
}

fn linked_chain_commits_or_fails_whole(backend: &str) {
    use CreateTransferResult as R;
    let harness = Harness::new(backend);
    let (_, wallet) = harness.funded_wallet(100);
    let merchant = harness.plain();
    let fee = harness.plain();
    let linked = |amount| TransferRequest {
        flags: TransferFlags::LINKED,
        ..TransferRequest::single_phase(
            harness.transfer_id(),
            wallet,
            merchant,
            amount,
            LEDGER_JPY,
            CODE,
        )
    };
    let last = |amount| {
        TransferRequest::single_phase(harness.transfer_id(), wallet, fee, amount, LEDGER_JPY, CODE)
    };

    // The second leg overdraws: the first leg is undone too.
    let first = linked(60);
    let results = harness.many(vec![first, last(50), last(10)]);
    assert_eq!(
        results,
        vec![R::LinkedEventFailed, R::ExceedsCredits, R::Ok]
    );
    assert!(!harness.transfer_exists(first.id));
    assert_eq!(harness.account(wallet).credit_balance_posted(), 90);

    // A failure in the middle fails the events after it in the chain as well.
    let results = harness.many(vec![linked(1), linked(1_000), last(1)]);
    assert_eq!(
        results,
        vec![
            R::LinkedEventFailed,
            R::ExceedsCredits,
            R::LinkedEventFailed
        ]
    );

    // Both legs fit: both commit.
    assert_eq!(harness.many(vec![linked(60), last(30)]), vec![R::Ok, R::Ok]);
    assert_eq!(harness.account(wallet).credit_balance_posted(), 0);

    // A chain left open at the end of the request is refused whole.
    let (_, rich) = harness.funded_wallet(100);
    let open = TransferRequest {
        flags: TransferFlags::LINKED,
        ..TransferRequest::single_phase(harness.transfer_id(), rich, merchant, 1, LEDGER_JPY, CODE)
    };
    let open_two = TransferRequest {
        id: harness.transfer_id(),
        ..open
    };
    assert_eq!(
        harness.many(vec![open, open_two]),
        vec![R::LinkedEventFailed, R::LinkedEventChainOpen]
    );
    assert_eq!(harness.account(rich).credit_balance_posted(), 100);
    harness.assert_clean();
}

fn history_pages_by_cursor_and_time_range(backend: &str) {
    let harness = Harness::new(backend);
    let (_, wallet) = harness.funded_wallet(1_000);
    let merchant = harness.plain();
    let start_ns = harness.clock.now_ns();
    let mut paid = Vec::new();
    for _ in 0..25 {
        harness.clock.advance_ms(1);
        paid.push(harness.move_money(wallet, merchant, 1));
    }
    let end_ns = harness.clock.now_ns();
    harness.clock.advance_ms(1);
    harness.move_money(wallet, merchant, 1);
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = harness
            .ledger
            .reader()
            .account_history(&HistoryQuery {
                account_id: merchant,
                from_ns: start_ns,
                to_ns: end_ns + 1,
                before: cursor,
                limit: 10,
            })
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(page.transfers.len() <= 10);
        seen.extend(page.transfers.iter().map(|transfer| transfer.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    paid.reverse();
    assert_eq!(seen, paid, "pages must cover the range once, newest first");
}

fn ten_thousand_concurrent_debits_never_overdraw(backend: &str) {
    let harness = Arc::new(Harness::new(backend));
    let (_, wallet) = harness.funded_wallet(5_000);
    let merchant = harness.plain();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let results = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let harness = Arc::clone(&harness);
            tasks.push(tokio::spawn(async move {
                let transfer = TransferRequest::single_phase(
                    harness.transfer_id(),
                    wallet,
                    merchant,
                    1,
                    LEDGER_JPY,
                    CODE,
                );
                harness.ledger.create_transfers(vec![transfer]).await
            }));
        }
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.unwrap_or_else(|error| panic!("{error}")));
        }
        results
    });
    let ok = results
        .iter()
        .filter(|result| matches!(result.as_deref(), Ok([CreateTransferResult::Ok])))
        .count();
    let refused = results
        .iter()
        .filter(|result| {
            matches!(
                result.as_deref(),
                Ok([CreateTransferResult::ExceedsCredits])
            )
        })
        .count();
    assert_eq!((ok, refused), (5_000, 5_000));
    let account = harness.account(wallet);
    assert_eq!(account.credit_balance_posted(), 0);
    assert_eq!(harness.account(merchant).credits_posted, 5_000);
    harness.assert_clean();
}

/// A trigger makes any transfer of a poisoned amount fail inside the storage transaction, so
/// the failure happens after other rows of the batch were already written.
fn a_failed_commit_fails_the_whole_batch_and_writes_nothing(backend: &str) {
    const POISON: u64 = 666_666;
    let harness = Harness::new(backend);
    match &harness.location {
        StoreLocation::Sqlite { data_dir } => {
            let connection =
                kinko_store::sqlite::connect(data_dir).unwrap_or_else(|error| panic!("{error}"));
            connection
                .execute_batch(&format!(
                    "CREATE TRIGGER poison BEFORE INSERT ON ledger_transfers WHEN NEW.amount = {POISON}
                     BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
                ))
                .unwrap_or_else(|error| panic!("{error}"));
        }
        StoreLocation::Postgres { url } => {
            let mut client =
                kinko_store::postgres::connect(url).unwrap_or_else(|error| panic!("{error}"));
            client
                .batch_execute(&format!(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN IF NEW.amount = {POISON} THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$;
                     CREATE TRIGGER poison BEFORE INSERT ON ledger_transfers FOR EACH ROW EXECUTE FUNCTION poison();"
                ))
                .unwrap_or_else(|error| panic!("{error}"));
        }
    }
    let (source, wallet) = harness.funded_wallet(10_000_000);
    let merchant = harness.plain();
    let before = harness.account(wallet);
    // Many callers at once so that the writer groups them with the poisoned one.
    let results: Vec<(
        TransferRequest,
        Result<Vec<CreateTransferResult>, LedgerError>,
    )> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|index| {
                let harness = &harness;
                scope.spawn(move || {
                    let amount = if index == 32 { POISON } else { 1 };
                    let transfer = TransferRequest::single_phase(
                        harness.transfer_id(),
                        wallet,
                        merchant,
                        amount,
                        LEDGER_JPY,
                        CODE,
                    );
                    (
                        transfer,
                        harness.ledger.create_transfers_blocking(vec![transfer]),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("thread")))
            .collect()
    });
    let mut moved = 0;
    for (transfer, result) in &results {
        match result {
            Ok(outcome) => {
                assert_eq!(outcome, &vec![CreateTransferResult::Ok]);
                assert!(harness.transfer_exists(transfer.id));
                moved += transfer.amount;
            }
            Err(error) => {
                assert_eq!(error, &LedgerError::Storage);
                assert!(
                    !harness.transfer_exists(transfer.id),
                    "a failed batch wrote {transfer:?}"
                );
            }
        }
    }
    let poisoned = results
        .iter()
        .find(|(transfer, _)| transfer.amount == POISON);
    assert!(matches!(poisoned, Some((_, Err(LedgerError::Storage)))));
    assert_eq!(
        harness.account(wallet).credit_balance_posted(),
        before.credit_balance_posted() - i128::from(moved)
    );
    // The writer recovers: the next batch works from storage.
    harness.move_money(source, merchant, 5);
    harness.assert_clean();
}

fn two_writers_on_one_database_never_double_spend(backend: &str) {
    let harness = Harness::new(backend);
    let (_, wallet) = harness.funded_wallet(2_000);
    let merchant = harness.plain();
    // A second, independent writer on the same database: another `kinko serve` process.
    let second = kinko_store::testing::start_ledger(
        &harness.location,
        &harness.clock,
        WriterConfig::DEFAULT,
    );
    let ok: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = [&harness.ledger, &second]
            .into_iter()
            .flat_map(|ledger| (0..4).map(move |_| (ledger, ())))
            .map(|(ledger, ())| {
                let harness = &harness;
                scope.spawn(move || {
                    let mut ok = 0;
                    for _ in 0..20 {
                        let batch: Vec<TransferRequest> = (0..25)
                            .map(|_| {
                                TransferRequest::single_phase(
                                    harness.transfer_id(),
                                    wallet,
                                    merchant,
                                    1,
                                    LEDGER_JPY,
                                    CODE,
                                )
                            })
                            .collect();
                        let results = ledger
                            .create_transfers_blocking(batch)
                            .unwrap_or_else(|error| panic!("{error}"));
                        ok += results.iter().filter(|result| result.is_ok()).count();
                    }
                    ok
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("thread")))
            .sum()
    });
    // 2 writers × 4 threads × 20 × 25 = 4,000 attempts on 2,000 yen.
    assert_eq!(ok, 2_000);
    assert_eq!(harness.account(wallet).credit_balance_posted(), 0);
    assert_eq!(harness.account(merchant).credits_posted, 2_000);
    second.shutdown();
    harness.assert_clean();
}

fn accounts_are_idempotent_and_validated(backend: &str) {
    use CreateAccountResult as R;
    let harness = Harness::new(backend);
    let id = AccountId::generate(&harness.clock);
    let account = NewAccount {
        id,
        ledger: LEDGER_JPY,
        code: CODE,
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
    };
    let create = |accounts: Vec<NewAccount>| {
        harness
            .ledger
            .create_accounts_blocking(accounts)
            .unwrap_or_else(|error| panic!("{error}"))
    };
    assert_eq!(create(vec![account]), vec![R::Ok]);
    assert_eq!(create(vec![account]), vec![R::Exists]);
    assert_eq!(
        create(vec![NewAccount {
            flags: AccountFlags::NONE,
            ..account
        }]),
        vec![R::ExistsWithDifferentFlags]
    );
    assert_eq!(
        create(vec![NewAccount {
            ledger: USD,
            ..account
        }]),
        vec![R::ExistsWithDifferentLedger]
    );
    assert_eq!(
        create(vec![NewAccount { code: 2, ..account }]),
        vec![R::ExistsWithDifferentCode]
    );
    let fresh = || AccountId::generate(&harness.clock);
    assert_eq!(
        create(vec![NewAccount {
            id: fresh(),
            ledger: 0,
            ..account
        }]),
        vec![R::LedgerMustNotBeZero]
    );
    assert_eq!(
        create(vec![NewAccount {
            id: fresh(),
            code: 0,
            ..account
        }]),
        vec![R::CodeMustNotBeZero]
    );
    assert_eq!(
        create(vec![NewAccount {
            id: fresh(),
            flags: AccountFlags::from_bits(128),
            ..account
        }]),
        vec![R::ReservedFlag]
    );
    assert_eq!(
        create(vec![NewAccount {
            id: fresh(),
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            ..account
        }]),
        vec![R::FlagsAreMutuallyExclusive]
    );
    // A linked pair fails whole when its second account is invalid.
    let first = NewAccount {
        id: fresh(),
        flags: AccountFlags::LINKED,
        ..account
    };
    assert_eq!(
        create(vec![
            first,
            NewAccount {
                id: fresh(),
                code: 0,
                ..account
            }
        ]),
        vec![R::LinkedEventFailed, R::CodeMustNotBeZero]
    );
    assert!(
        harness
            .ledger
            .reader()
            .lookup_accounts(&[first.id])
            .unwrap_or_else(|error| panic!("{error}"))
            .is_empty()
    );
    // A request larger than the bound is refused before it reaches the writer.
    let too_many =
        vec![
            TransferRequest::single_phase(harness.transfer_id(), id, id, 1, LEDGER_JPY, CODE);
            8_191
        ];
    assert_eq!(
        harness.ledger.create_transfers_blocking(too_many),
        Err(LedgerError::RequestTooLarge { max: 8_190 })
    );
    let _ = Request::CreateAccounts(Vec::new());
}

/// A dropped connection (server restart, failover) fails at most the batch in flight; the
/// writer and the reader reconnect instead of failing forever.
#[test]
fn postgres_writer_and_reader_reconnect_after_the_connection_drops() {
    let harness = Harness::new("postgres");
    let (source, wallet) = harness.funded_wallet(100);
    let StoreLocation::Postgres { url } = &harness.location else {
        panic!("postgres harness without a URL");
    };
    let mut admin = kinko_store::postgres::connect(url).unwrap_or_else(|error| panic!("{error}"));
    let terminated: i64 = admin
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap_or_else(|error| panic!("{error}"))
        .get(0);
    assert!(
        terminated >= 2,
        "expected the writer's and the reader's connections"
    );
    let mut outcome = Err(LedgerError::Storage);
    for _ in 0..3 {
        let transfer = TransferRequest::single_phase(
            harness.transfer_id(),
            source,
            wallet,
            5,
            LEDGER_JPY,
            CODE,
        );
        outcome = harness.ledger.create_transfers_blocking(vec![transfer]);
        if outcome.is_ok() {
            break;
        }
    }
    assert_eq!(outcome, Ok(vec![CreateTransferResult::Ok]));
    let mut balance = None;
    for _ in 0..3 {
        if let Ok(accounts) = harness.ledger.reader().lookup_accounts(&[wallet]) {
            balance = accounts.first().map(Account::credit_balance_posted);
            break;
        }
    }
    assert_eq!(balance, Some(105));
    harness.assert_clean();
}

/// TigerBeetle's `id_already_failed`: an id refused for a reason that could pass later
/// (`exceeds_credits`, an account not open yet) is refused for ever after — after a top-up,
/// in the same request, and by another writer on the same database (it is stored, not
/// remembered). Only the failing event of a chain is burned.
fn a_transiently_failed_id_never_posts_later(backend: &str) {
    let harness = Harness::new(backend);
    let (source, wallet) = harness.funded_wallet(100);
    let merchant = harness.plain();
    let refused = harness.transfer_id();
    let paying = |id: TransferId, amount: u64| {
        TransferRequest::single_phase(id, wallet, merchant, amount, LEDGER_JPY, CODE)
    };
    assert_eq!(
        harness.one(paying(refused, 300)),
        CreateTransferResult::ExceedsCredits
    );
    harness.move_money(source, wallet, 1_000);
    assert_eq!(
        harness.one(paying(refused, 300)),
        CreateTransferResult::IdAlreadyFailed
    );
    assert!(!harness.transfer_exists(refused));
    assert_eq!(harness.account(wallet).credit_balance_posted(), 1_100);

    // Within one request: the second event with the failed id is refused too.
    let twice = harness.transfer_id();
    assert_eq!(
        harness.many(vec![paying(twice, 5_000), paying(twice, 10)]),
        vec![
            CreateTransferResult::ExceedsCredits,
            CreateTransferResult::IdAlreadyFailed
        ]
    );

    // A debit account not open yet: once it is, the id still never posts.
    let later = AccountId::generate(&harness.clock);
    let early = harness.transfer_id();
    let from_later = TransferRequest::single_phase(early, later, merchant, 1, LEDGER_JPY, CODE);
    assert_eq!(
        harness.one(from_later),
        CreateTransferResult::DebitAccountNotFound
    );
    let opened = harness
        .ledger
        .create_accounts_blocking(vec![NewAccount {
            id: later,
            ledger: LEDGER_JPY,
            code: CODE,
            flags: AccountFlags::NONE,
        }])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(opened, vec![CreateAccountResult::Ok]);
    assert_eq!(
        harness.one(from_later),
        CreateTransferResult::IdAlreadyFailed
    );

    // A chain: the event that failed is burned, the ones rolled back with it are not.
    let (first, second) = (harness.transfer_id(), harness.transfer_id());
    let linked = TransferRequest {
        flags: TransferFlags::LINKED,
        ..paying(first, 10)
    };
    assert_eq!(
        harness.many(vec![linked, paying(second, 1_000_000)]),
        vec![
            CreateTransferResult::LinkedEventFailed,
            CreateTransferResult::ExceedsCredits
        ]
    );
    assert_eq!(harness.one(paying(first, 10)), CreateTransferResult::Ok);
    assert_eq!(
        harness.one(paying(second, 10)),
        CreateTransferResult::IdAlreadyFailed
    );

    // Another writer on the same database reads it from storage.
    let other = kinko_store::testing::start_ledger(
        &harness.location,
        &harness.clock,
        WriterConfig::DEFAULT,
    );
    let results = other
        .create_transfers_blocking(vec![paying(refused, 300)])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(results, vec![CreateTransferResult::IdAlreadyFailed]);
    let after = harness.account(wallet);
    assert_eq!((after.credits_posted, after.debits_posted), (1_100, 10));
    harness.assert_clean();
}

/// `kinko check` while money moves: every query of one check sees one snapshot, so batches
/// committed during the check never show as a breach (it did on SQLite, whose check read each
/// table at a different moment).
fn the_check_reads_one_snapshot_while_transfers_run(backend: &str) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let harness = Harness::new(backend);
    let (_, wallet) = harness.funded_wallet(1_000_000);
    let merchant = harness.plain();
    let moving = AtomicBool::new(true);
    let batches = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while moving.load(Ordering::SeqCst) {
                let batch: Vec<TransferRequest> = (0..20)
                    .map(|_| {
                        TransferRequest::single_phase(
                            harness.transfer_id(),
                            wallet,
                            merchant,
                            1,
                            LEDGER_JPY,
                            CODE,
                        )
                    })
                    .collect();
                assert!(harness.many(batch).iter().all(|result| result.is_ok()));
                batches.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Check over and over while at least 200 batches commit (bounded in time).
        let started = std::time::Instant::now();
        let mut checks = 0;
        while batches.load(Ordering::SeqCst) < 200
            && started.elapsed() < std::time::Duration::from_secs(30)
        {
            harness.assert_clean();
            checks += 1;
        }
        moving.store(false, Ordering::SeqCst);
        assert!(checks > 0);
    });
    assert!(batches.load(Ordering::SeqCst) >= 200);
    harness.assert_clean();
}
