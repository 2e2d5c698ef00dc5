//! The audit chain on both stores: appends link up, a rolled-back transaction leaves no entry,
//! the database refuses edits while its triggers stand, and with the triggers dropped (an
//! attacker with database access) every kind of tampering is reported, naming the entry.

use kinko_audit::{Actor, AuditEntry, ChainBreak, StoredEntry, VerifyReport};
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Dialect, Tx, Value};

const T0_MS: i64 = 1_767_225_600_000;

fn database(backend: &str) -> (Database, kinko_store::testing::Scratch) {
    kinko_store::testing::database(backend)
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    appends_form_a_chain,
    a_rolled_back_append_leaves_no_entry_and_no_head_change,
    triggers_refuse_update_and_delete,
    a_modified_field_is_reported,
    a_re_hashed_modification_breaks_the_next_link,
    a_deleted_middle_entry_is_reported_as_a_gap,
    an_inserted_forged_entry_is_reported,
    a_deleted_tail_is_reported,
    concurrent_appends_make_one_contiguous_chain,
);

fn entry(number: u64) -> AuditEntry<'static> {
    AuditEntry {
        actor: Actor::Operator(0x0192_0000_0000_7000_8000_0000_0000_0001),
        action: "operator.created",
        subject_kind: "operator",
        subject_id: "0192f000-0000-7000-8000-000000000002",
        reason: "bootstrap",
        detail: serde_json::json!({ "number": number, "role": "admin" }),
    }
}

fn append_n(database: &Database, count: u64) {
    for number in 1..=count {
        let seq = database
            .transaction(|tx: &mut dyn Tx| {
                kinko_audit::append(tx, T0_MS + number as i64, &entry(number))
            })
            .unwrap_or_else(|error: StoreError| panic!("{error}"));
        assert_eq!(seq, number);
    }
}

fn all_entries(database: &Database) -> Vec<StoredEntry> {
    database
        .transaction(|tx: &mut dyn Tx| kinko_audit::entries_after(tx, 0, 1_000))
        .unwrap_or_else(|error: StoreError| panic!("{error}"))
}

fn head(database: &Database) -> (i64, Vec<u8>) {
    let row = database
        .transaction(|tx: &mut dyn Tx| {
            tx.query_one("SELECT seq, hash FROM audit_head WHERE singleton = 1", &[])
        })
        .unwrap_or_else(|error: StoreError| panic!("{error}"));
    (
        row.int(0).unwrap_or_else(|error| panic!("{error}")),
        row.bytes(1).unwrap_or_else(|error| panic!("{error}")),
    )
}

fn verify(database: &Database) -> VerifyReport {
    kinko_audit::verify(database).unwrap_or_else(|error| panic!("{error}"))
}

fn run(database: &Database, sql: &str, params: &[Value]) {
    database
        .transaction(|tx: &mut dyn Tx| tx.execute(sql, params))
        .unwrap_or_else(|error: StoreError| panic!("{sql}: {error}"));
}

/// What an attacker with database access does first: remove the append-only triggers.
fn drop_triggers(database: &Database) {
    match database.dialect() {
        Dialect::Sqlite => {
            run(database, "DROP TRIGGER audit_log_no_update", &[]);
            run(database, "DROP TRIGGER audit_log_no_delete", &[]);
        }
        // One PostgreSQL trigger covers both UPDATE and DELETE.
        Dialect::Postgres => run(
            database,
            "DROP TRIGGER audit_log_no_update ON audit_log",
            &[],
        ),
    }
}

fn insert_raw(database: &Database, entry: &StoredEntry) {
    run(
        database,
        "INSERT INTO audit_log (seq, at_ms, actor_kind, actor_id, action, subject_kind,
             subject_id, reason, detail, previous_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            Value::Int(entry.seq as i64),
            Value::Int(entry.at_ms),
            entry.actor_kind.clone().into(),
            entry.actor_id.clone().into(),
            entry.action.clone().into(),
            entry.subject_kind.clone().into(),
            entry.subject_id.clone().into(),
            entry.reason.clone().into(),
            entry.detail.clone().into(),
            entry.previous_hash.clone().into(),
            entry.hash.clone().into(),
        ],
    );
}

fn appends_form_a_chain(backend: &str) {
    let (database, _dir) = database(backend);
    let empty = verify(&database);
    assert!(empty.is_intact(), "{:?}", empty.breaks);
    assert_eq!((empty.entries_checked, empty.head_seq), (0, 0));
    assert_eq!(empty.head_hash_hex, "0".repeat(64));

    append_n(&database, 3);
    // Several appends in one transaction chain too.
    let seqs = database
        .transaction(|tx: &mut dyn Tx| {
            let mut seqs = Vec::new();
            for number in 4..=6 {
                seqs.push(kinko_audit::append(tx, T0_MS + 10, &entry(number))?);
            }
            Ok::<_, StoreError>(seqs)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(seqs, vec![4, 5, 6]);

    let entries = all_entries(&database);
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[0].previous_hash, vec![0; 32]);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].previous_hash, pair[0].hash, "entry {}", pair[1].seq);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    for stored in &entries {
        assert_eq!(stored.compute_hash().to_vec(), stored.hash);
    }
    assert_eq!(entries[0].actor_kind, "operator");
    assert_eq!(entries[0].actor_id, "01920000-0000-7000-8000-000000000001");
    assert_eq!(entries[0].at_ms, T0_MS + 1);
    let detail: serde_json::Value =
        serde_json::from_str(&entries[2].detail).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(detail["number"], 3);

    let report = verify(&database);
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!((report.entries_checked, report.head_seq), (6, 6));
    assert_eq!(report.head_hash_hex, kinko_audit::hex(&entries[5].hash));
    // Small pages walk the same chain.
    let paged =
        kinko_audit::verify_in_pages(&database, 4).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(paged, report);
}

fn a_rolled_back_append_leaves_no_entry_and_no_head_change(backend: &str) {
    let (database, _dir) = database(backend);
    append_n(&database, 1);
    let before = head(&database);
    let outcome: Result<(), StoreError> = database.transaction(|tx: &mut dyn Tx| {
        kinko_audit::append(tx, T0_MS + 5, &entry(2))?;
        Err(StoreError::new("the change this entry records was refused"))
    });
    assert!(outcome.is_err());
    assert_eq!(head(&database), before);
    assert_eq!(all_entries(&database).len(), 1);
    // The next append takes the sequence number the rolled-back one would have had.
    let seq = database
        .transaction(|tx: &mut dyn Tx| kinko_audit::append(tx, T0_MS + 6, &entry(2)))
        .unwrap_or_else(|error: StoreError| panic!("{error}"));
    assert_eq!(seq, 2);
    assert!(verify(&database).is_intact());
}

fn triggers_refuse_update_and_delete(backend: &str) {
    let (database, _dir) = database(backend);
    append_n(&database, 2);
    let update: Result<u64, StoreError> = database.transaction(|tx: &mut dyn Tx| {
        tx.execute(
            "UPDATE audit_log SET reason = 'nothing happened' WHERE seq = 1",
            &[],
        )
    });
    // (PostgreSQL's error text is not checked: the store reports it as a bare "db error".)
    assert!(update.is_err(), "an UPDATE was allowed");
    let delete: Result<u64, StoreError> = database
        .transaction(|tx: &mut dyn Tx| tx.execute("DELETE FROM audit_log WHERE seq = 2", &[]));
    assert!(delete.is_err(), "a DELETE was allowed");
    let entries = all_entries(&database);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].reason, "bootstrap");
    let report = verify(&database);
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.entries_checked, 2);
}

fn a_modified_field_is_reported(backend: &str) {
    let (database, _dir) = database(backend);
    // One entry per column; entry n gets column n edited.
    let edits = [
        ("at_ms", Value::Int(T0_MS - 1)),
        ("actor_kind", "system".into()),
        ("actor_id", "01920000-0000-7000-8000-000000000009".into()),
        ("action", "operator.viewed".into()),
        ("subject_kind", "user".into()),
        ("subject_id", "someone-else".into()),
        ("reason", "nothing to see".into()),
        ("detail", r#"{"number":8,"role":"support"}"#.into()),
        ("previous_hash", vec![7u8; 32].into()),
    ];
    append_n(&database, edits.len() as u64 + 1);
    drop_triggers(&database);
    for (index, (column, value)) in edits.iter().enumerate() {
        run(
            &database,
            &format!("UPDATE audit_log SET {column} = $1 WHERE seq = $2"),
            &[value.clone(), Value::Int(index as i64 + 1)],
        );
    }
    let report = verify(&database);
    let mut expected: Vec<ChainBreak> = (1..=edits.len() as u64)
        .map(|seq| ChainBreak::Modified { seq })
        .collect();
    // An edited previous_hash also no longer links to the entry before it.
    expected.push(ChainBreak::Unlinked {
        seq: edits.len() as u64,
    });
    expected.sort_by_key(|chain_break| match chain_break {
        ChainBreak::Modified { seq } | ChainBreak::Unlinked { seq } => *seq,
        _ => 0,
    });
    assert_eq!(report.breaks, expected);
    assert!(!report.is_intact());
    assert!(
        report.breaks[1]
            .to_string()
            .contains("entry 2 was modified")
    );
}

fn a_re_hashed_modification_breaks_the_next_link(backend: &str) {
    let (database, _dir) = database(backend);
    append_n(&database, 4);
    drop_triggers(&database);
    // A careful attacker edits entry 2 and recomputes its hash: entry 2 looks fine alone,
    // but entry 3 still links to the original.
    let mut forged = all_entries(&database)[1].clone();
    forged.reason = "routine check".into();
    forged.hash = forged.compute_hash().to_vec();
    run(
        &database,
        "UPDATE audit_log SET reason = $1, hash = $2 WHERE seq = 2",
        &[forged.reason.clone().into(), forged.hash.clone().into()],
    );
    let report = verify(&database);
    assert_eq!(report.breaks, vec![ChainBreak::Unlinked { seq: 3 }]);
}

fn a_deleted_middle_entry_is_reported_as_a_gap(backend: &str) {
    let (database, _dir) = database(backend);
    append_n(&database, 5);
    drop_triggers(&database);
    run(&database, "DELETE FROM audit_log WHERE seq = 3", &[]);
    let report = verify(&database);
    assert_eq!(
        report.breaks,
        vec![ChainBreak::Gap {
            after_seq: 2,
            next_seq: 4
        }]
    );
    assert_eq!(report.entries_checked, 4);
    // Deleting the first entry shows as a log that no longer starts at 1.
    run(&database, "DELETE FROM audit_log WHERE seq = 1", &[]);
    let report = verify(&database);
    assert_eq!(
        report.breaks,
        vec![
            ChainBreak::Gap {
                after_seq: 0,
                next_seq: 2
            },
            ChainBreak::Gap {
                after_seq: 2,
                next_seq: 4
            }
        ]
    );
}

fn an_inserted_forged_entry_is_reported(backend: &str) {
    let (database, _dir) = database(backend);
    append_n(&database, 4);
    drop_triggers(&database);
    let entries = all_entries(&database);

    // A well-forged entry after the last one (right link, right hash) without moving the head.
    let mut tail = entries[3].clone();
    tail.seq = 5;
    tail.action = "operator.role_changed".into();
    tail.previous_hash = entries[3].hash.clone();
    tail.hash = tail.compute_hash().to_vec();
    insert_raw(&database, &tail);
    let report = verify(&database);
    assert_eq!(report.breaks.len(), 1, "{:?}", report.breaks);
    assert!(
        matches!(
            report.breaks[0],
            ChainBreak::HeadMismatch {
                head_seq: 4,
                last_seq: 5,
                ..
            }
        ),
        "{:?}",
        report.breaks
    );

    // An entry swapped in for a deleted one: hashed correctly over its predecessor, but the
    // entry after it still links to the original.
    run(&database, "DELETE FROM audit_log WHERE seq = 5", &[]);
    run(&database, "DELETE FROM audit_log WHERE seq = 2", &[]);
    let mut swapped = entries[1].clone();
    swapped.subject_id = "someone-else".into();
    swapped.hash = swapped.compute_hash().to_vec();
    insert_raw(&database, &swapped);
    let report = verify(&database);
    assert_eq!(report.breaks, vec![ChainBreak::Unlinked { seq: 3 }]);
}

fn a_deleted_tail_is_reported(backend: &str) {
    let (database, _dir) = database(backend);
    append_n(&database, 3);
    drop_triggers(&database);
    run(&database, "DELETE FROM audit_log WHERE seq = 3", &[]);
    let report = verify(&database);
    assert_eq!(report.breaks.len(), 1, "{:?}", report.breaks);
    match &report.breaks[0] {
        ChainBreak::HeadMismatch {
            head_seq, last_seq, ..
        } => assert_eq!((*head_seq, *last_seq), (3, 2)),
        other => panic!("expected a head mismatch, got {other:?}"),
    }
    assert!(report.breaks[0].to_string().contains("names entry 3"));
}

fn concurrent_appends_make_one_contiguous_chain(backend: &str) {
    let (database, _dir) = database(backend);
    let threads: u64 = 8;
    let per_thread: u64 = 25;
    let mut seqs: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let database = &database;
                scope.spawn(move || {
                    (0..per_thread)
                        .map(|round| {
                            database
                                .transaction(|tx: &mut dyn Tx| {
                                    kinko_audit::append(
                                        tx,
                                        T0_MS,
                                        &entry(thread * per_thread + round),
                                    )
                                })
                                .unwrap_or_else(|error: StoreError| panic!("{error}"))
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_else(|_| panic!("thread panicked")))
            .collect()
    });
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=threads * per_thread).collect::<Vec<u64>>());
    let report =
        kinko_audit::verify_in_pages(&database, 7).unwrap_or_else(|error| panic!("{error}"));
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.entries_checked, threads * per_thread);
    assert_eq!(report.head_seq, threads * per_thread);
}
