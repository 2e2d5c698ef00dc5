//! The portable SQL layer behaves the same on both stores: values round-trip by type,
//! a failed transaction leaves nothing, `$n` parameters bind by name in any order, and the
//! pool serves more concurrent callers than it has connections, covered (group-committed)
//! transactions from many threads keep exactly the ones that succeeded, a read
//! transaction cannot write, and connections that cache prepared statements answer right for
//! more texts than the cache holds and after a statement that fails to prepare.

use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Dialect, Tx, Value};

fn database(backend: &str) -> (Database, kinko_store::testing::Scratch) {
    let (database, dir) = kinko_store::testing::database(backend);
    database
        .transaction(|tx: &mut dyn Tx| {
            let (id, blob) = match tx.dialect() {
                Dialect::Sqlite => ("BLOB", "BLOB"),
                Dialect::Postgres => ("UUID", "BYTEA"),
            };
            tx.execute(
                &format!(
                    "CREATE TABLE sample (id {id} PRIMARY KEY, count BIGINT NOT NULL,
                     label TEXT, data {blob}, flag BIGINT NOT NULL)"
                ),
                &[],
            )
            .map(|_| ())
        })
        .unwrap_or_else(|error: StoreError| panic!("{error}"));
    (database, dir)
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    values_round_trip,
    a_failed_transaction_leaves_nothing,
    the_pool_serves_many_callers,
    covered_transactions_keep_only_what_succeeded,
    reads_cannot_write,
    many_statement_texts_and_a_bad_one_on_one_connection
);

fn values_round_trip(backend: &str) {
    let (database, _dir) = database(backend);
    let id: u128 = 0x0192_0000_0000_7000_8000_0000_0000_00ff;
    let row = database
        .transaction(|tx: &mut dyn Tx| {
            // Parameters used out of order and twice.
            tx.execute(
                "INSERT INTO sample (label, id, count, data, flag) VALUES ($3, $1, $2, $4, $5)",
                &[Value::Uuid(id), Value::Int(-7), "名前".into(), vec![0u8, 255].into(), true.into()],
            )?;
            tx.query_one(
                &format!("SELECT id, count, label, data, flag FROM sample WHERE id = $1 AND count = $2{}", tx.for_update()),
                &[Value::Uuid(id), Value::Int(-7)],
            )
        })
        .unwrap_or_else(|error: StoreError| panic!("{error}"));
    assert_eq!(row.uuid(0).ok(), Some(id));
    assert_eq!(row.int(1).ok(), Some(-7));
    assert_eq!(row.text(2).ok().as_deref(), Some("名前"));
    assert_eq!(row.bytes(3).ok(), Some(vec![0, 255]));
    assert_eq!(row.bool(4).ok(), Some(true));
    assert!(
        row.text(1).is_err(),
        "a type mismatch is an error, not a panic"
    );
    let missing = database
        .transaction(|tx: &mut dyn Tx| {
            tx.query_opt("SELECT id FROM sample WHERE count = $1", &[Value::Int(1)])
        })
        .unwrap_or_else(|error: StoreError| panic!("{error}"));
    assert_eq!(missing, None);
}

fn a_failed_transaction_leaves_nothing(backend: &str) {
    let (database, _dir) = database(backend);
    let outcome: Result<(), StoreError> = database.transaction(|tx: &mut dyn Tx| {
        tx.execute(
            "INSERT INTO sample (id, count, flag) VALUES ($1, 1, 0)",
            &[Value::Uuid(1)],
        )?;
        // The same primary key again: the statement fails, the transaction rolls back.
        tx.execute(
            "INSERT INTO sample (id, count, flag) VALUES ($1, 2, 0)",
            &[Value::Uuid(1)],
        )?;
        Ok(())
    });
    assert!(outcome.is_err());
    let count = database
        .transaction(|tx: &mut dyn Tx| tx.query_one("SELECT COUNT(*) FROM sample", &[]))
        .and_then(|row| row.int(0))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(count, 0);
    // A closure that returns an error after successful statements rolls back too.
    let outcome: Result<(), StoreError> = database.transaction(|tx: &mut dyn Tx| {
        tx.execute(
            "INSERT INTO sample (id, count, flag) VALUES ($1, 1, 0)",
            &[Value::Uuid(2)],
        )?;
        Err(StoreError::new("business rule said no"))
    });
    assert!(outcome.is_err());
    let count = database
        .transaction(|tx: &mut dyn Tx| tx.query_one("SELECT COUNT(*) FROM sample", &[]))
        .and_then(|row| row.int(0))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(count, 0);
}

fn the_pool_serves_many_callers(backend: &str) {
    let (database, _dir) = database(backend);
    std::thread::scope(|scope| {
        for thread in 0..24u128 {
            let database = &database;
            scope.spawn(move || {
                for round in 0..10u128 {
                    database
                        .transaction(|tx: &mut dyn Tx| {
                            tx.execute(
                                "INSERT INTO sample (id, count, flag) VALUES ($1, $2, 0)",
                                &[Value::Uuid(thread * 1_000 + round + 1), Value::Int(1)],
                            )
                        })
                        .unwrap_or_else(|error: StoreError| panic!("{error}"));
                }
            });
        }
    });
    let total = database
        .transaction(|tx: &mut dyn Tx| {
            tx.query_one("SELECT CAST(SUM(count) AS BIGINT) FROM sample", &[])
        })
        .and_then(|row| {
            row.int(0)
                .or_else(|_| row.text(0).map(|text| text.parse().unwrap_or(-1)))
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(total, 240);
}

/// 400 callers on 16 threads share the group committer: every third one fails after
/// writing, and only its own rows are rolled back; each caller gets its own answer.
fn covered_transactions_keep_only_what_succeeded(backend: &str) {
    let (database, _dir) = database(backend);
    let database = std::sync::Arc::new(database);
    let answers: Vec<(u128, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16u128)
            .map(|thread| {
                let database = std::sync::Arc::clone(&database);
                scope.spawn(move || {
                    (0..25u128)
                        .map(|index| {
                            let id =
                                0x0192_0000_0000_7000_8000_0000_0000_0000 + thread * 100 + index;
                            let fails = (thread * 25 + index) % 3 == 0;
                            let answer = database.transaction_covered(move |tx: &mut dyn Tx| {
                                tx.execute(
                                    "INSERT INTO sample (id, count, flag) VALUES ($1, $2, 0)",
                                    &[Value::Uuid(id), Value::Int(1)],
                                )?;
                                if fails {
                                    return Err(StoreError::new("refused on purpose"));
                                }
                                Ok(id)
                            });
                            match answer {
                                Ok(kept) => {
                                    assert_eq!(kept, id);
                                    (id, true)
                                }
                                Err(error) => {
                                    assert!(error.message.contains("on purpose"), "{error}");
                                    (id, false)
                                }
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| panic!("a caller panicked"))
            })
            .collect()
    });
    let kept: Vec<u128> = answers
        .iter()
        .filter(|(_, kept)| *kept)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(kept.len(), 400 - 134, "{answers:?}");
    let stored = database
        .read(|tx: &mut dyn Tx| tx.query("SELECT id FROM sample ORDER BY id", &[]))
        .unwrap_or_else(|error: StoreError| panic!("{error}"));
    let mut stored: Vec<u128> = stored
        .iter()
        .map(|row| row.uuid(0).unwrap_or_else(|error| panic!("{error}")))
        .collect();
    stored.sort_unstable();
    let mut expected = kept.clone();
    expected.sort_unstable();
    assert_eq!(stored, expected);
}

fn reads_cannot_write(backend: &str) {
    let (database, _dir) = database(backend);
    let written = database.read(|tx: &mut dyn Tx| {
        tx.execute(
            "INSERT INTO sample (id, count, flag) VALUES ($1, 1, 0)",
            &[Value::Uuid(7)],
        )
    });
    if backend == "postgres" {
        assert!(written.is_err(), "a READ ONLY transaction wrote");
    }
    // On SQLite a deferred transaction may write when nobody else does; what matters is that
    // the hot paths never ask it to. Either way the database is consistent afterwards.
    let count = database
        .read(|tx: &mut dyn Tx| tx.query_one("SELECT COUNT(*) FROM sample", &[]))
        .unwrap_or_else(|error: StoreError| panic!("{error}"))
        .int(0)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(count, i64::from(written.is_ok()));
}

/// More distinct statement texts than a connection caches (PostgreSQL keeps 512 per
/// connection), each answering its own value, and a text that fails to prepare: it fails alone,
/// its transaction rolls back, and the connection serves the next one.
fn many_statement_texts_and_a_bad_one_on_one_connection(backend: &str) {
    let (database, _dir) = database(backend);
    database
        .transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "INSERT INTO sample (id, count, flag) VALUES ($1, 5, 0)",
                &[Value::Uuid(7)],
            )
        })
        .unwrap_or_else(|error: StoreError| panic!("{error}"));
    for round in 0..2 {
        let sums = database
            .read(|tx: &mut dyn Tx| {
                (0..700i64)
                    .map(|n| {
                        tx.query_one(
                            &format!("SELECT count + {n} FROM sample WHERE id = $1"),
                            &[Value::Uuid(7)],
                        )?
                        .int(0)
                    })
                    .collect::<Result<Vec<i64>, StoreError>>()
            })
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        assert_eq!(sums, (5..705).collect::<Vec<i64>>(), "round {round}");
    }
    let bad: Result<u64, StoreError> = database.transaction(|tx: &mut dyn Tx| {
        tx.execute(
            "UPDATE sample SET count = count + 1 WHERE id = $1",
            &[Value::Uuid(7)],
        )?;
        tx.execute(
            "UPDATE sample SET no_such_column = 1 WHERE id = $1",
            &[Value::Uuid(7)],
        )
    });
    assert!(bad.is_err());
    for _ in 0..3 {
        let count = database
            .transaction(|tx: &mut dyn Tx| {
                tx.query_one("SELECT count FROM sample WHERE id = $1", &[Value::Uuid(7)])
            })
            .and_then(|row| row.int(0))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(count, 5, "the failed transaction's update was rolled back");
    }
}

/// A test's PostgreSQL database goes with its `Scratch`, sessions and all, so a developer's
/// long-lived cluster does not keep one database per test run.
#[test]
fn a_test_database_is_dropped_with_its_scratch() {
    let admin = std::env::var("KINKO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| panic!("KINKO_TEST_DATABASE_URL is not set: run scripts/test"));
    let exists = |url: &str| {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let mut client = ::postgres::Client::connect(&admin, ::postgres::NoTls)
            .unwrap_or_else(|error| panic!("{error}"));
        client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .unwrap_or_else(|error| panic!("{error}"))
            .is_some()
    };
    let (location, scratch) = kinko_store::testing::location("postgres");
    let kinko_store::StoreLocation::Postgres { url } = &location else {
        panic!("not a PostgreSQL location: {}", location.describe());
    };
    let database = Database::open(&location).unwrap_or_else(|error| panic!("{error}"));
    database
        .read(|tx: &mut dyn Tx| tx.query_one("SELECT 1", &[]))
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(exists(url), "{url} was not created");
    // Its pool still holds a connection: the drop ends that session too.
    drop(scratch);
    assert!(!exists(url), "{url} is still there");
    drop(database);
}
