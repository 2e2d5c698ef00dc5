//! eKYC: proving who a user is. A provider (a trait: real providers check an ID document
//! and a face) returns a verified identity, a rejection, or "needs manual review". Every
//! outcome is kept as an immutable record (the database refuses updates and deletes);
//! re-proofing adds a record. Level L1 — identity proven — is what pulling money from a bank
//! requires (THREATS.md 2); a bank link is never taken as identity proof.

use kinko_store::sql::{Tx, Value};

use crate::service::IdentityError;

/// What the user proves: L0 contacts verified, L1 identity proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum KycLevel {
    L0,
    L1,
}

impl KycLevel {
    pub fn from_i64(raw: i64) -> Self {
        if raw >= 1 { KycLevel::L1 } else { KycLevel::L0 }
    }

    pub fn as_i64(self) -> i64 {
        match self {
            KycLevel::L0 => 0,
            KycLevel::L1 => 1,
        }
    }
}

/// The identity a provider vouches for. The kana name and birth date are what a bank later
/// matches against its account holder (issue 4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifiedIdentity {
    pub legal_name: String,
    pub kana_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KycOutcome {
    Verified(VerifiedIdentity),
    Rejected,
    /// A person at the provider must look; the user stays at their current level.
    Review,
}

impl KycOutcome {
    fn as_str(&self) -> &'static str {
        match self {
            KycOutcome::Verified(_) => "verified",
            KycOutcome::Rejected => "rejected",
            KycOutcome::Review => "review",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KycProviderError {
    #[error("the identity provider is unavailable")]
    Unavailable,
}

/// An eKYC provider. `document_reference` is the provider's handle on what the user
/// submitted (a session or document id), never the document itself.
pub trait KycProvider: Send + Sync {
    fn name(&self) -> &'static str;
    fn verify(&self, document_reference: &str) -> Result<KycOutcome, KycProviderError>;
}

/// The sandbox provider: deterministic test identities for development, tests, the demo and
/// the drill. `SANDBOX-REJECT…` is rejected, `SANDBOX-REVIEW…` goes to manual review, each
/// `SANDBOX-ID-NNNN` below proves one fixed identity (a demo bank customer's), and
/// `SANDBOX-PERSON-N` (N: 1 to 6 digits) proves a made-up person numbered N who holds no
/// account at the sandbox bank — one identity backs one wallet, so tests and the drill that
/// need many wallets use these; anything else is rejected.
#[derive(Debug, Clone, Copy)]
pub struct SandboxKycProvider;

/// (document reference, legal name, kana name, birth date, address)
pub const SANDBOX_IDENTITIES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "SANDBOX-ID-0001",
        "山田 花子",
        "ヤマダ ハナコ",
        "1990-04-01",
        "東京都千代田区丸の内1-1-1",
    ),
    (
        "SANDBOX-ID-0002",
        "佐藤 太郎",
        "サトウ タロウ",
        "1985-11-23",
        "大阪府大阪市北区梅田2-2-2",
    ),
    (
        "SANDBOX-ID-0003",
        "鈴木 一郎",
        "スズキ イチロウ",
        "1972-07-15",
        "愛知県名古屋市中区栄3-3-3",
    ),
    (
        "SANDBOX-ID-0004",
        "高橋 美咲",
        "タカハシ ミサキ",
        "2000-02-29",
        "福岡県福岡市博多区博多駅前4-4-4",
    ),
    (
        "SANDBOX-ID-0005",
        "田中 健",
        "タナカ ケン",
        "1968-09-09",
        "北海道札幌市中央区北一条西5-5-5",
    ),
];

impl KycProvider for SandboxKycProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn verify(&self, document_reference: &str) -> Result<KycOutcome, KycProviderError> {
        if document_reference.starts_with("SANDBOX-REVIEW") {
            return Ok(KycOutcome::Review);
        }
        if let Some(number) = document_reference.strip_prefix("SANDBOX-PERSON-")
            && (1..=6).contains(&number.len())
            && number.bytes().all(|byte| byte.is_ascii_digit())
        {
            return Ok(KycOutcome::Verified(VerifiedIdentity {
                legal_name: format!("試験 利用者{number}"),
                kana_name: format!("シケン リヨウシヤ{number}"),
                birth_date: "1980-01-01".to_owned(),
                address: format!("東京都港区芝公園{number}"),
            }));
        }
        Ok(SANDBOX_IDENTITIES
            .iter()
            .find(|(reference, ..)| *reference == document_reference)
            .map_or(KycOutcome::Rejected, |(_, legal, kana, birth, address)| {
                KycOutcome::Verified(VerifiedIdentity {
                    legal_name: (*legal).to_owned(),
                    kana_name: (*kana).to_owned(),
                    birth_date: (*birth).to_owned(),
                    address: (*address).to_owned(),
                })
            }))
    }
}

/// A stored KYC record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KycRecord {
    pub id: uuid::Uuid,
    pub provider: String,
    pub outcome: &'static str,
    pub identity: Option<VerifiedIdentity>,
    pub created_at_ms: i64,
}

/// Keeps the provider's outcome as a new immutable record and, when verified, raises the
/// user to L1. Runs in the caller's transaction, with the audit entry.
///
/// `held_for`: a verified identity that may not back this wallet yet (see [`bind_identity`]) is
/// kept with its reason for an operator's review: stored as `review`, the level unchanged.
pub fn record_outcome(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    provider: &str,
    document_reference: &str,
    outcome: &KycOutcome,
    held_for: Option<&str>,
) -> Result<KycRecord, IdentityError> {
    let id = uuid::Uuid::now_v7();
    let identity = match outcome {
        KycOutcome::Verified(identity) => Some(identity.clone()),
        _ => None,
    };
    let stored = match (outcome, held_for) {
        (KycOutcome::Verified(_), Some(_)) => "review",
        _ => outcome.as_str(),
    };
    tx.execute(
        "INSERT INTO identity_kyc_records (id, user_id, provider, reference, outcome, legal_name,
            kana_name, birth_date, address, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            Value::Uuid(id.as_u128()),
            Value::Uuid(user_id),
            provider.into(),
            document_reference.into(),
            stored.into(),
            identity.as_ref().map(|i| i.legal_name.clone()).into(),
            identity.as_ref().map(|i| i.kana_name.clone()).into(),
            identity.as_ref().map(|i| i.birth_date.clone()).into(),
            identity.as_ref().map(|i| i.address.clone()).into(),
            Value::Int(now_ms),
        ],
    )?;
    if identity.is_some() && held_for.is_none() {
        tx.execute(
            "UPDATE identity_users SET kyc_level = 1 WHERE id = $1",
            &[Value::Uuid(user_id)],
        )?;
    }
    kinko_audit::append(
        tx,
        now_ms,
        &kinko_audit::AuditEntry {
            actor: kinko_audit::Actor::User(user_id),
            action: match stored {
                "verified" => "kyc.verified",
                "rejected" => "kyc.rejected",
                _ => "kyc.review",
            },
            subject_kind: "user",
            subject_id: &uuid::Uuid::from_u128(user_id).to_string(),
            reason: held_for.unwrap_or(""),
            detail: serde_json::json!({ "provider": provider, "record": id.to_string() }),
        },
    )?;
    Ok(KycRecord {
        id,
        provider: provider.to_owned(),
        outcome: stored,
        identity: identity.filter(|_| held_for.is_none()),
        created_at_ms: now_ms,
    })
}

/// Whether a verified identity may back a wallet (see [`bind_identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The first wallet to prove this identity: now bound to it.
    Bound,
    /// The wallet proved the identity it is bound to again.
    Same,
    /// The wallet is bound to another identity: a change of who stands behind it is reviewed.
    ChangedIdentity,
    /// Another wallet is bound to this identity.
    HeldByAnother(u128),
}

/// The identity's key: a keyed hash (never the data itself) of the legal name, the kana name
/// (spaces of either width dropped) and the birth date.
pub fn identity_key(secret_box: &crate::secrets::SecretBox, identity: &VerifiedIdentity) -> String {
    let squeeze = |text: &str| -> String {
        text.chars()
            .filter(|character| !character.is_whitespace())
            .collect()
    };
    let data = format!(
        "{}\n{}\n{}",
        squeeze(&identity.legal_name),
        squeeze(&identity.kana_name),
        identity.birth_date.trim()
    );
    secret_box.keyed_hash("kyc.identity.v1", data.as_bytes())
}

/// Binds `identity_key` to the wallet unless the wallet or the identity is bound already.
/// Two wallets racing for one identity: the unique key lets one insert; the other finds it.
pub fn bind_identity(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    identity_key: &str,
) -> Result<Binding, IdentityError> {
    let existing = |tx: &mut dyn Tx| -> Result<Option<Binding>, IdentityError> {
        if let Some(row) = tx.query_opt(
            "SELECT identity_key FROM identity_kyc_bindings WHERE user_id = $1",
            &[Value::Uuid(user_id)],
        )? {
            return Ok(Some(if row.text(0)? == identity_key {
                Binding::Same
            } else {
                Binding::ChangedIdentity
            }));
        }
        Ok(tx
            .query_opt(
                "SELECT user_id FROM identity_kyc_bindings WHERE identity_key = $1",
                &[identity_key.into()],
            )?
            .map(|row| row.uuid(0))
            .transpose()?
            .map(Binding::HeldByAnother))
    };
    if let Some(binding) = existing(tx)? {
        return Ok(binding);
    }
    let inserted = tx.execute(
        "INSERT INTO identity_kyc_bindings (identity_key, user_id, bound_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[identity_key.into(), Value::Uuid(user_id), now_ms.into()],
    )?;
    if inserted == 1 {
        return Ok(Binding::Bound);
    }
    existing(tx)?.ok_or_else(|| IdentityError::Internal("a KYC binding vanished".to_owned()))
}

/// Binds every wallet proven before bindings existed to the identity of its newest verified
/// record (at start, idempotent). Where two such wallets share one identity the older proof
/// keeps it and the other is left unbound: its next proof goes to review. Answers how many
/// were bound.
pub fn bind_proven_identities(
    database: &kinko_store::sql::Database,
    secret_box: &crate::secrets::SecretBox,
    now_ms: i64,
) -> Result<usize, IdentityError> {
    database.transaction(|tx: &mut dyn Tx| {
        let rows = tx.query(
            "SELECT r.user_id, r.legal_name, r.kana_name, r.birth_date, r.address
             FROM identity_kyc_records r
             WHERE r.outcome = 'verified'
               AND NOT EXISTS (SELECT 1 FROM identity_kyc_bindings b WHERE b.user_id = r.user_id)
             ORDER BY r.created_at, r.id",
            &[],
        )?;
        let mut bound = 0;
        for row in rows {
            let identity = VerifiedIdentity {
                legal_name: row.text(1)?,
                kana_name: row.text(2)?,
                birth_date: row.text(3)?,
                address: row.text(4)?,
            };
            let key = identity_key(secret_box, &identity);
            if bind_identity(tx, now_ms, row.uuid(0)?, &key)? == Binding::Bound {
                bound += 1;
            }
        }
        Ok(bound)
    })
}

/// The identity of the user's newest verified record, if any.
pub fn current_identity(
    tx: &mut dyn Tx,
    user_id: u128,
) -> Result<Option<VerifiedIdentity>, IdentityError> {
    let row = tx.query_opt(
        "SELECT legal_name, kana_name, birth_date, address FROM identity_kyc_records
         WHERE user_id = $1 AND outcome = 'verified' ORDER BY created_at DESC, id DESC LIMIT 1",
        &[Value::Uuid(user_id)],
    )?;
    Ok(match row {
        Some(row) => Some(VerifiedIdentity {
            legal_name: row.text(0)?,
            kana_name: row.text(1)?,
            birth_date: row.text(2)?,
            address: row.text(3)?,
        }),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_is_deterministic() {
        let provider = SandboxKycProvider;
        match provider.verify("SANDBOX-ID-0001") {
            Ok(KycOutcome::Verified(identity)) => {
                assert_eq!(identity.kana_name, "ヤマダ ハナコ");
                assert_eq!(identity.birth_date, "1990-04-01");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            provider.verify("SANDBOX-REJECT-1"),
            Ok(KycOutcome::Rejected)
        );
        assert_eq!(provider.verify("SANDBOX-REVIEW-1"), Ok(KycOutcome::Review));
        assert_eq!(
            provider.verify("a forged document"),
            Ok(KycOutcome::Rejected)
        );
    }

    #[test]
    fn levels_order_and_convert() {
        assert!(KycLevel::L1 > KycLevel::L0);
        assert_eq!(KycLevel::from_i64(KycLevel::L1.as_i64()), KycLevel::L1);
        assert_eq!(KycLevel::from_i64(0), KycLevel::L0);
    }
}
