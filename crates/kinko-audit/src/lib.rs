//! The audit log: who did what to which object, when and why — append-only and hash-chained.
//!
//! Every domain records its security-relevant changes here (operator actions, logins, links,
//! limits…) by calling [`append`] **inside its own transaction**, so an entry commits exactly
//! when the change it describes commits, and a rolled-back change leaves no entry.
//!
//! Each entry's hash is SHA-256 over the previous entry's hash and an unambiguous encoding of
//! all of its own fields (sequence number and time included). `audit_head` holds the newest
//! sequence number and hash. [`verify`] recomputes the whole chain and reports every break: a
//! modified entry, a deleted or inserted one, a deleted tail. The database additionally refuses
//! UPDATE and DELETE on `audit_log` with triggers (migration `0002_audit.sql`), so tampering
//! takes deliberate DDL, not a stray statement.
//!
//! What the chain does not do on its own: an attacker who can rewrite the whole table *and*
//! the head consistently produces a valid-looking chain. [`VerifyReport::head_hash_hex`] is
//! printed by `kinko audit verify` so the head can be anchored outside the database (a ticket,
//! a log shipped elsewhere); a later head whose chain does not contain the anchored one proves
//! a rewrite.
//!
//! **Never put secrets in an entry** (passwords, codes, tokens, keys, TOTP seeds) and keep
//! personal data out of it too: entries are immutable by design, so anything written here stays
//! forever. Refer to objects by id.

use std::fmt;

use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Row, Tx, Value};
use sha2::{Digest, Sha256};

/// Bytes in a hash and in `audit_head.hash`.
pub const HASH_BYTES: usize = 32;
/// The bound on each short text field (actor id, action, subject, reason), in bytes.
pub const FIELD_BYTES_MAX: usize = 2_048;
/// The bound on the serialised `detail` JSON, in bytes.
pub const DETAIL_BYTES_MAX: usize = 16 * 1_024;
/// Entries read per transaction while verifying: memory stays bounded whatever the log's size.
pub const VERIFY_PAGE_ENTRIES: u32 = 1_000;
/// Breaks kept in a report; beyond this only their number is counted (a wholesale rewrite
/// would otherwise make the report as large as the log).
pub const BREAKS_MAX: usize = 1_000;

/// Separates this hash's inputs from any other SHA-256 use; bump the version on a format change.
const HASH_DOMAIN: &[u8] = b"kinko.audit.v1\0";
const ZERO_HASH: [u8; HASH_BYTES] = [0; HASH_BYTES];

/// Who acted. Stored as `actor_kind` / `actor_id` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A wallet user (their user id).
    User(u128),
    /// A staff or bank-partner operator (their operator id).
    Operator(u128),
    /// Kinko itself: a scheduled job, the CLI bootstrap, an automatic rule.
    System,
    /// A partner bank acting through its own interface (its 4-digit bank code).
    Bank(String),
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::Operator(_) => "operator",
            Actor::System => "system",
            Actor::Bank(_) => "bank",
        }
    }

    pub fn id(&self) -> String {
        match self {
            Actor::User(id) | Actor::Operator(id) => uuid::Uuid::from_u128(*id).to_string(),
            Actor::System => String::new(),
            Actor::Bank(code) => code.clone(),
        }
    }
}

/// One entry to append. `detail` is free-form JSON for the specifics (old and new values,
/// amounts, outcome codes) — never secrets, never personal data beyond ids.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry<'a> {
    pub actor: Actor,
    /// Dotted, lower-case: `operator.created`, `operator.login_failed`, `bank_link.refused`…
    pub action: &'a str,
    /// What was acted on: `operator`, `user`, `bank_link`…, and its id.
    pub subject_kind: &'a str,
    pub subject_id: &'a str,
    /// Why: the operator's stated reason, or the rule that fired. Empty only for routine
    /// system events.
    pub reason: &'a str,
    pub detail: serde_json::Value,
}

/// An entry as stored, with its chain fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub seq: u64,
    pub at_ms: i64,
    pub actor_kind: String,
    pub actor_id: String,
    pub action: String,
    pub subject_kind: String,
    pub subject_id: String,
    pub reason: String,
    /// The JSON text exactly as stored (the hash covers these bytes).
    pub detail: String,
    pub previous_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl StoredEntry {
    /// The hash this entry should carry, recomputed from its fields and `previous_hash`.
    pub fn compute_hash(&self) -> [u8; HASH_BYTES] {
        entry_hash(&self.previous_hash, &self.fields())
    }

    fn fields(&self) -> Fields<'_> {
        Fields {
            seq: self.seq,
            at_ms: self.at_ms,
            actor_kind: &self.actor_kind,
            actor_id: &self.actor_id,
            action: &self.action,
            subject_kind: &self.subject_kind,
            subject_id: &self.subject_id,
            reason: &self.reason,
            detail: &self.detail,
        }
    }
}

/// The hashed fields of an entry, borrowed.
struct Fields<'a> {
    seq: u64,
    at_ms: i64,
    actor_kind: &'a str,
    actor_id: &'a str,
    action: &'a str,
    subject_kind: &'a str,
    subject_id: &'a str,
    reason: &'a str,
    detail: &'a str,
}

/// SHA-256 over the domain tag, the previous hash (length-prefixed, since a tampered row may
/// hold any length) and every field: integers as fixed-width big-endian, text as a u64
/// big-endian byte length followed by the UTF-8 bytes. Length prefixes make the encoding
/// unambiguous: no two different entries encode to the same bytes.
fn entry_hash(previous_hash: &[u8], fields: &Fields<'_>) -> [u8; HASH_BYTES] {
    fn put(hasher: &mut Sha256, bytes: &[u8]) {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    put(&mut hasher, previous_hash);
    hasher.update(fields.seq.to_be_bytes());
    hasher.update(fields.at_ms.to_be_bytes());
    for text in [
        fields.actor_kind,
        fields.actor_id,
        fields.action,
        fields.subject_kind,
        fields.subject_id,
        fields.reason,
        fields.detail,
    ] {
        put(&mut hasher, text.as_bytes());
    }
    hasher.finalize().into()
}

fn check_field(name: &str, value: &str, bytes_max: usize) -> Result<(), StoreError> {
    if value.len() > bytes_max {
        return Err(StoreError::new(format!(
            "audit {name} is {} bytes, more than {bytes_max}",
            value.len()
        )));
    }
    // PostgreSQL TEXT cannot hold NUL; refuse it on both stores so they behave alike.
    if value.contains('\0') {
        return Err(StoreError::new(format!(
            "audit {name} contains a NUL character"
        )));
    }
    Ok(())
}

/// Appends `entry` at `now_ms` inside the caller's transaction and returns its sequence number.
///
/// The head row is locked (`FOR UPDATE` on PostgreSQL; SQLite's write transaction is already
/// exclusive), so concurrent appenders queue and the sequence stays contiguous. The entry
/// commits or rolls back with the caller's transaction.
pub fn append(tx: &mut dyn Tx, now_ms: i64, entry: &AuditEntry<'_>) -> Result<u64, StoreError> {
    let actor_id = entry.actor.id();
    let detail = serde_json::to_string(&entry.detail)
        .map_err(|error| StoreError::new(format!("audit detail: {error}")))?;
    check_field("actor id", &actor_id, FIELD_BYTES_MAX)?;
    check_field("action", entry.action, FIELD_BYTES_MAX)?;
    check_field("subject kind", entry.subject_kind, FIELD_BYTES_MAX)?;
    check_field("subject id", entry.subject_id, FIELD_BYTES_MAX)?;
    check_field("reason", entry.reason, FIELD_BYTES_MAX)?;
    check_field("detail", &detail, DETAIL_BYTES_MAX)?;
    if entry.action.is_empty() {
        return Err(StoreError::new("audit action is empty"));
    }

    let head = tx.query_one(
        &format!(
            "SELECT seq, hash FROM audit_head WHERE singleton = 1{}",
            tx.for_update()
        ),
        &[],
    )?;
    let head_seq = u64::try_from(head.int(0)?)
        .map_err(|_| StoreError::new("audit head sequence is negative"))?;
    let previous_hash = head.bytes(1)?;
    if previous_hash.len() != HASH_BYTES {
        return Err(StoreError::new("audit head hash is not 32 bytes"));
    }
    let seq = head_seq
        .checked_add(1)
        .filter(|seq| i64::try_from(*seq).is_ok())
        .ok_or_else(|| StoreError::new("audit sequence exhausted"))?;
    let fields = Fields {
        seq,
        at_ms: now_ms,
        actor_kind: entry.actor.kind(),
        actor_id: &actor_id,
        action: entry.action,
        subject_kind: entry.subject_kind,
        subject_id: entry.subject_id,
        reason: entry.reason,
        detail: &detail,
    };
    let hash = entry_hash(&previous_hash, &fields);
    let seq_value = Value::Int(seq as i64);
    tx.execute(
        "INSERT INTO audit_log (seq, at_ms, actor_kind, actor_id, action, subject_kind,
             subject_id, reason, detail, previous_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            seq_value.clone(),
            Value::Int(now_ms),
            fields.actor_kind.into(),
            fields.actor_id.into(),
            fields.action.into(),
            fields.subject_kind.into(),
            fields.subject_id.into(),
            fields.reason.into(),
            fields.detail.into(),
            Value::Bytes(previous_hash),
            Value::Bytes(hash.to_vec()),
        ],
    )?;
    let changed = tx.execute(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE singleton = 1 AND seq = $3",
        &[
            seq_value,
            Value::Bytes(hash.to_vec()),
            Value::Int(head_seq as i64),
        ],
    )?;
    if changed != 1 {
        return Err(StoreError::new("audit head moved while it was locked"));
    }
    Ok(seq)
}

const ENTRY_COLUMNS: &str = "seq, at_ms, actor_kind, actor_id, action, subject_kind, subject_id, \
                             reason, detail, previous_hash, hash";

fn stored_entry(row: &Row) -> Result<StoredEntry, StoreError> {
    Ok(StoredEntry {
        seq: u64::try_from(row.int(0)?).map_err(|_| StoreError::new("negative audit seq"))?,
        at_ms: row.int(1)?,
        actor_kind: row.text(2)?,
        actor_id: row.text(3)?,
        action: row.text(4)?,
        subject_kind: row.text(5)?,
        subject_id: row.text(6)?,
        reason: row.text(7)?,
        detail: row.text(8)?,
        previous_hash: row.bytes(9)?,
        hash: row.bytes(10)?,
    })
}

/// Up to `limit` (≤ [`VERIFY_PAGE_ENTRIES`]) entries with `seq > after_seq`, oldest first:
/// for operator consoles and tests. Reading does not verify; use [`verify`] for that.
pub fn entries_after(
    tx: &mut dyn Tx,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<StoredEntry>, StoreError> {
    let limit = limit.min(VERIFY_PAGE_ENTRIES);
    let rows = tx.query(
        &format!("SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"),
        &[
            Value::Int(i64::try_from(after_seq).unwrap_or(i64::MAX)),
            Value::Int(i64::from(limit)),
        ],
    )?;
    rows.iter().map(stored_entry).collect()
}

/// One way the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// The entry's fields no longer produce its stored hash: it was edited in place.
    Modified { seq: u64 },
    /// The entry's `previous_hash` is not the stored hash of the entry before it: an entry
    /// was replaced or forged (or the one before was edited and re-hashed).
    Unlinked { seq: u64 },
    /// Sequence numbers jump: entries after `after_seq` and before `next_seq` were deleted
    /// (`after_seq` 0 means the log no longer starts at 1).
    Gap { after_seq: u64, next_seq: u64 },
    /// `audit_head` does not name the last entry: the tail was deleted, or entries were
    /// inserted after it without moving the head, or the head itself was changed.
    HeadMismatch {
        head_seq: u64,
        head_hash_hex: String,
        last_seq: u64,
        last_hash_hex: String,
    },
    /// A row whose columns could not even be read as an entry (wrong types after tampering).
    Unreadable { seq: u64, cause: String },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Modified { seq } => {
                write!(
                    formatter,
                    "entry {seq} was modified: its hash does not match its fields"
                )
            }
            ChainBreak::Unlinked { seq } => write!(
                formatter,
                "entry {seq} does not link to the entry before it: an entry was replaced or forged"
            ),
            ChainBreak::Gap {
                after_seq,
                next_seq,
            } => write!(
                formatter,
                "entries {}..={} are missing: deleted between entry {after_seq} and entry {next_seq}",
                after_seq + 1,
                next_seq.saturating_sub(1)
            ),
            ChainBreak::HeadMismatch {
                head_seq,
                head_hash_hex,
                last_seq,
                last_hash_hex,
            } => write!(
                formatter,
                "the audit head names entry {head_seq} ({head_hash_hex}) but the last entry is \
                 {last_seq} ({last_hash_hex}): the tail was deleted or entries were appended \
                 behind the head"
            ),
            ChainBreak::Unreadable { seq, cause } => {
                write!(formatter, "entry {seq} cannot be read: {cause}")
            }
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries_checked: u64,
    /// The head as read at the end of the walk: anchor `head_hash_hex` outside the database.
    pub head_seq: u64,
    pub head_hash_hex: String,
    /// Every break, in log order, up to [`BREAKS_MAX`].
    pub breaks: Vec<ChainBreak>,
    /// Breaks found beyond [`BREAKS_MAX`], counted but not listed.
    pub breaks_omitted: u64,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty() && self.breaks_omitted == 0
    }

    fn record(&mut self, chain_break: ChainBreak) {
        if self.breaks.len() < BREAKS_MAX {
            self.breaks.push(chain_break);
        } else {
            self.breaks_omitted += 1;
        }
    }
}

/// Hex of a byte string, lower case.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Walks the whole chain in sequence order and reports every break. See [`verify_in_pages`].
pub fn verify(db: &Database) -> Result<VerifyReport, StoreError> {
    verify_in_pages(db, VERIFY_PAGE_ENTRIES)
}

/// [`verify`] reading `page_entries` entries per transaction (tests use small pages).
///
/// Each page is its own short transaction, so verifying a large log never holds SQLite's
/// write lock or a PostgreSQL snapshot for long, and appends continue meanwhile. The walk ends
/// in the transaction that reads the head and then finds no entry after the last one checked:
/// head and tail are compared at one consistent point (an append writes both in one
/// transaction, and the head is read first, so a concurrent append shows up as one more page).
pub fn verify_in_pages(db: &Database, page_entries: u32) -> Result<VerifyReport, StoreError> {
    let page_entries = page_entries.clamp(1, VERIFY_PAGE_ENTRIES);
    let mut report = VerifyReport {
        entries_checked: 0,
        head_seq: 0,
        head_hash_hex: hex(&ZERO_HASH),
        breaks: Vec::new(),
        breaks_omitted: 0,
    };
    let mut last_seq: u64 = 0;
    let mut last_hash: Vec<u8> = ZERO_HASH.to_vec();
    loop {
        let (head, rows) = db.transaction(|tx: &mut dyn Tx| {
            let head = tx.query_one("SELECT seq, hash FROM audit_head WHERE singleton = 1", &[])?;
            let rows = tx.query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[
                    Value::Int(i64::try_from(last_seq).unwrap_or(i64::MAX)),
                    Value::Int(i64::from(page_entries)),
                ],
            )?;
            Ok::<_, StoreError>((head, rows))
        })?;
        if rows.is_empty() {
            let head_seq = u64::try_from(head.int(0)?)
                .map_err(|_| StoreError::new("audit head sequence is negative"))?;
            let head_hash = head.bytes(1)?;
            report.head_seq = head_seq;
            report.head_hash_hex = hex(&head_hash);
            if head_seq != last_seq || head_hash != last_hash {
                report.record(ChainBreak::HeadMismatch {
                    head_seq,
                    head_hash_hex: hex(&head_hash),
                    last_seq,
                    last_hash_hex: hex(&last_hash),
                });
            }
            return Ok(report);
        }
        for row in &rows {
            // The primary key is always readable; the other columns may not be after tampering.
            let seq =
                u64::try_from(row.int(0)?).map_err(|_| StoreError::new("negative audit seq"))?;
            if seq <= last_seq {
                return Err(StoreError::new("audit entries came back out of order"));
            }
            let contiguous = seq == last_seq + 1;
            if !contiguous {
                report.record(ChainBreak::Gap {
                    after_seq: last_seq,
                    next_seq: seq,
                });
            }
            report.entries_checked += 1;
            match stored_entry(row) {
                Ok(entry) => {
                    if entry.compute_hash().as_slice() != entry.hash.as_slice() {
                        report.record(ChainBreak::Modified { seq });
                    }
                    // Across a gap the predecessor is gone, so its link cannot be checked;
                    // the gap is already reported.
                    if contiguous && entry.previous_hash != last_hash {
                        report.record(ChainBreak::Unlinked { seq });
                    }
                    last_hash = entry.hash;
                }
                Err(error) => {
                    report.record(ChainBreak::Unreadable {
                        seq,
                        cause: error.message,
                    });
                    // Link the next entry to the stored hash if it is readable; if not, the
                    // next entry is reported as unlinked, which is true enough.
                    last_hash = row.bytes(10).unwrap_or_default();
                }
            }
            last_seq = seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(reason: &str) -> Fields<'_> {
        Fields {
            seq: 1,
            at_ms: 1_700_000_000_000,
            actor_kind: "system",
            actor_id: "",
            action: "operator.created",
            subject_kind: "operator",
            subject_id: "x",
            reason,
            detail: "{}",
        }
    }

    #[test]
    fn every_field_changes_the_hash_and_shifting_bytes_between_fields_does_too() {
        let base = entry_hash(&ZERO_HASH, &fields("why"));
        assert_ne!(base, entry_hash(&[1; HASH_BYTES], &fields("why")));
        assert_ne!(base, entry_hash(&ZERO_HASH, &fields("why?")));
        let mut shifted = fields("why");
        shifted.subject_id = "xw";
        shifted.reason = "hy";
        // Same concatenated bytes, different split: the length prefixes tell them apart.
        assert_ne!(base, entry_hash(&ZERO_HASH, &shifted));
        let mut later = fields("why");
        later.seq = 2;
        assert_ne!(base, entry_hash(&ZERO_HASH, &later));
        let mut other_time = fields("why");
        other_time.at_ms += 1;
        assert_ne!(base, entry_hash(&ZERO_HASH, &other_time));
    }

    #[test]
    fn actors_encode_as_kind_and_id() {
        assert_eq!(Actor::System.kind(), "system");
        assert_eq!(Actor::System.id(), "");
        assert_eq!(Actor::Bank("0001".into()).id(), "0001");
        assert_eq!(
            Actor::Operator(1).id(),
            "00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(Actor::User(1).kind(), "user");
    }

    #[test]
    fn breaks_display_name_the_entry() {
        assert!(
            ChainBreak::Modified { seq: 7 }
                .to_string()
                .contains("entry 7")
        );
        let gap = ChainBreak::Gap {
            after_seq: 2,
            next_seq: 5,
        }
        .to_string();
        assert!(gap.contains("3..=4"), "{gap}");
        assert_eq!(hex(&[0, 171]), "00ab");
    }
}
