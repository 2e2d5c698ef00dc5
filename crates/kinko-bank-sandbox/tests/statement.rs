//! The per-day statement (`POST /v1/statements`): a client reads exactly its own debits and
//! credits decided on one Japan-time day, in decision order, page by page without losing or
//! repeating an entry; orders of the day before and after, and another client's, are not on
//! it; a bad day, cursor, limit or assertion is refused.

mod common;

use kinko_bank_sandbox::client_auth;
use kinko_bank_sandbox::resource::ResourceError;
use kinko_bank_sandbox::{Bank, store};
use kinko_banking::client::StatementDay;
use kinko_store::sql::{Tx, Value};

const ISSUER: &str = "https://bank.sandbox.test";

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(a_day_is_read_whole_page_by_page_and_only_the_clients_own);

fn insert(bank: &Bank, client_id: &str, key: &str, at_ms: i64, kind: &str, status: &str) {
    bank.database()
        .transaction(|tx: &mut dyn Tx| {
            let account_id = tx
                .query_one("SELECT id FROM bank_accounts ORDER BY id LIMIT 1", &[])?
                .uuid(0)?;
            tx.execute(
                "INSERT INTO bank_payments (client_id, kind, idempotency_key, id, account_id,
                 request_hash, amount_yen, description, status, reason, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, 'h', 1000, 'Kinko チャージ', $6, $7, $8)",
                &[
                    client_id.into(),
                    kind.into(),
                    key.into(),
                    Value::Uuid(uuid::Uuid::now_v7().as_u128()),
                    Value::Uuid(account_id),
                    status.into(),
                    if status == "rejected" {
                        "insufficient_funds".into()
                    } else {
                        Value::Null
                    },
                    at_ms.into(),
                ],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"));
}

fn a_day_is_read_whole_page_by_page_and_only_the_clients_own(backend: &str) {
    let (location, _dir) = kinko_store::testing::location(backend);
    let bank = Bank::open(&location, ISSUER).unwrap_or_else(|error| panic!("{error}"));
    let day = StatementDay::parse("2026-12-06").unwrap_or_else(|| panic!("a day"));
    store::seed(bank.database(), day.start_ms()).unwrap_or_else(|error| panic!("{error}"));
    let key = common::registered(&bank, "kinko", "Kinko");
    common::registered(&bank, "other", "Other Pay");
    // Seven of Kinko's orders on the day, two sharing a millisecond; one just before and one
    // just after it; another client's on the day.
    let start = day.start_ms();
    let times = [
        start,
        start + 5,
        start + 5,
        start + 60_000,
        start + 3_600_000,
    ];
    for (index, at_ms) in times.iter().enumerate() {
        insert(
            &bank,
            "kinko",
            &format!("k{index}"),
            *at_ms,
            "debit",
            "settled",
        );
    }
    insert(&bank, "kinko", "k5", day.end_ms() - 2, "credit", "settled");
    insert(&bank, "kinko", "k6", day.end_ms() - 1, "debit", "rejected");
    insert(&bank, "kinko", "before", start - 1, "debit", "settled");
    insert(&bank, "kinko", "after", day.end_ms(), "debit", "settled");
    insert(&bank, "other", "theirs", start + 10, "debit", "settled");

    let now_ms = day.start_ms() + 1_000;
    let assertion = || {
        client_auth::make_assertion("kinko", ISSUER, &key, now_ms, 60_000)
            .unwrap_or_else(|error| panic!("{error}"))
    };
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = bank
            .statement(
                &assertion(),
                "2026-12-06",
                cursor.as_deref(),
                Some("3"),
                now_ms,
            )
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(page.day, "2026-12-06");
        assert!(page.entries.len() <= 3);
        pages += 1;
        keys.extend(page.entries.iter().map(|entry| entry.key.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "the cursor does not advance");
    }
    let mut sorted_tail = keys[1..3].to_vec();
    sorted_tail.sort();
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert_eq!(keys[0], "k0");
    assert_eq!(sorted_tail, vec!["k1", "k2"], "{keys:?}");
    assert_eq!(&keys[3..], ["k3", "k4", "k5", "k6"], "{keys:?}");
    assert_eq!(pages, 3);
    // One page of everything carries the fields a client compares.
    let whole = bank
        .statement(&assertion(), "2026-12-06", None, None, now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(whole.entries.len(), 7);
    assert_eq!(whole.next_cursor, None);
    let rejected = &whole.entries[6];
    assert_eq!(
        (rejected.kind.as_str(), rejected.status.as_str()),
        ("debit", "rejected")
    );
    assert_eq!(rejected.reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(whole.entries[5].kind, "credit");
    assert_eq!(whole.entries[0].amount_yen, 1_000);
    assert_eq!(whole.entries[0].bank_code.len(), 4);
    // The day before holds only its own order.
    let before = bank
        .statement(&assertion(), "2026-12-05", None, None, now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    let before: Vec<String> = before.entries.into_iter().map(|entry| entry.key).collect();
    assert_eq!(before, vec!["before"]);

    // Bad input is refused.
    for (day_text, cursor, limit) in [
        ("2026-02-30", None, None),
        ("20261206", None, None),
        ("2026-12-06", Some("nonsense"), None),
        ("2026-12-06", None, Some("0")),
        ("2026-12-06", None, Some("501")),
    ] {
        let refused = bank.statement(&assertion(), day_text, cursor, limit, now_ms);
        assert!(
            matches!(refused, Err(ResourceError::RequestInvalid(_))),
            "{day_text} {cursor:?} {limit:?}: {refused:?}"
        );
    }
    // Another key signing as Kinko is refused before anything is read.
    let stranger = common::client_key();
    let forged = client_auth::make_assertion("kinko", ISSUER, &stranger, now_ms, 60_000)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(matches!(
        bank.statement(&forged, "2026-12-06", None, None, now_ms),
        Err(ResourceError::OAuth(_))
    ));
}
