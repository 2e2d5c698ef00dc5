//! Merchants: onboarded by an admin with a stated reason (audited), paid through QR codes and
//! the merchant API. A merchant authenticates with an API key of which Kinko keeps only the
//! SHA-256; it sees its own payments and refunds and nothing else.

use kinko_audit::{Actor, AuditEntry};
use kinko_identity::operator::{Operator, Permission, require_reason};
use kinko_qr::{MerchantDetails, MerchantQr, Payment};
use kinko_store::sql::{Row, Tx, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::MoneyError;

/// Every merchant API key starts with this, so a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "kmk_";
/// 32 random bytes in lowercase hex after the prefix.
const KEY_HEX_CHARS: usize = 64;
/// A key's label (where it is used: "レジ 1", "online shop").
pub const KEY_LABEL_CHARS_MAX: usize = 60;

/// What an operator types to onboard a merchant.
#[derive(Debug, Clone)]
pub struct NewMerchant {
    /// As printed in QR codes: ASCII, at most 25 characters.
    pub name: String,
    /// What a Japanese payer reads: at most 25 characters.
    pub name_ja: String,
    /// ISO 18245 merchant category code.
    pub category_code: u16,
    /// ASCII, at most 15 characters.
    pub city: String,
    pub city_ja: Option<String>,
    /// 7 digits, with or without the hyphen (`100-0005`).
    pub postal_code: String,
}

/// A merchant as Kinko records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merchant {
    pub id: uuid::Uuid,
    pub name: String,
    pub name_ja: String,
    pub category_code: u16,
    pub city: String,
    pub city_ja: Option<String>,
    pub postal_code: String,
    /// `active` or `suspended`.
    pub status: String,
    pub created_at_ms: i64,
}

impl Merchant {
    /// What the merchant's QR codes say about it.
    pub fn details(&self) -> MerchantDetails {
        MerchantDetails {
            merchant_id: self.id.as_u128(),
            category_code: self.category_code,
            name: self.name.clone(),
            city: self.city.clone(),
            postal_code: self.postal_code.clone(),
            name_ja: self.name_ja.clone(),
            city_ja: self.city_ja.clone(),
            store_label: None,
            terminal_label: None,
            foreign_accounts: Vec::new(),
        }
    }

    /// The merchant's static code (a sticker at the till: the payer types the amount).
    pub fn static_code(&self) -> Result<String, MoneyError> {
        Ok(kinko_qr::encode(&MerchantQr::new(
            self.details(),
            Payment::Static,
        )?))
    }
}

/// A merchant API key as listed (the key itself is shown once, at issue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MerchantKey {
    pub id: uuid::Uuid,
    pub merchant_id: uuid::Uuid,
    pub label: String,
    pub created_at_ms: i64,
}

const MERCHANT_COLUMNS: &str = "m.id, m.name, m.name_ja, m.category_code, m.city, m.city_ja, m.postal_code, m.status, m.created_at";

fn merchant_from(row: &Row) -> Result<Merchant, MoneyError> {
    Ok(Merchant {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        name: row.text(1)?,
        name_ja: row.text(2)?,
        category_code: u16::try_from(row.int(3)?)
            .map_err(|_| MoneyError::Internal("category code out of range".to_owned()))?,
        city: row.text(4)?,
        city_ja: row.opt_text(5)?,
        postal_code: row.text(6)?,
        status: row.text(7)?,
        created_at_ms: row.int(8)?,
    })
}

/// A fresh key: the prefix and 256 random bits in hex.
fn new_key() -> SecretString {
    let secret: [u8; 32] = rand::random();
    SecretString::from(format!(
        "{KEY_PREFIX}{}",
        secret
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    ))
}

fn key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Onboards a merchant (admins only, with a reason). The details must make a valid JPQR code,
/// so every merchant Kinko knows can print one.
pub fn create(
    tx: &mut dyn Tx,
    now_ms: i64,
    operator: &Operator,
    new: &NewMerchant,
    reason: &str,
) -> Result<Merchant, MoneyError> {
    let merchant = validated(new, now_ms)?;
    insert(tx, now_ms, operator, &merchant, reason)?;
    Ok(merchant)
}

/// The merchant `new` describes, with a fresh id, if its details make a valid JPQR code.
pub fn validated(new: &NewMerchant, now_ms: i64) -> Result<Merchant, MoneyError> {
    let trimmed = |text: &str| text.trim().to_owned();
    let merchant = Merchant {
        id: uuid::Uuid::now_v7(),
        name: trimmed(&new.name),
        name_ja: trimmed(&new.name_ja),
        category_code: new.category_code,
        city: trimmed(&new.city),
        city_ja: new
            .city_ja
            .as_deref()
            .map(str::trim)
            .filter(|city| !city.is_empty())
            .map(str::to_owned),
        postal_code: new.postal_code.trim().replace('-', ""),
        status: "active".to_owned(),
        created_at_ms: now_ms,
    };
    if merchant.name.is_empty() || merchant.name_ja.is_empty() || merchant.city.is_empty() {
        return Err(MoneyError::MerchantInvalid(
            "name, Japanese name and city are required".to_owned(),
        ));
    }
    let texts = [&merchant.name, &merchant.name_ja, &merchant.city];
    if texts
        .into_iter()
        .chain(merchant.city_ja.as_ref())
        .any(|text| !is_printable(text))
    {
        return Err(MoneyError::MerchantInvalid(
            "names and cities must not hold control, zero-width or bidirectional characters"
                .to_owned(),
        ));
    }
    // The QR profile's rules are the merchant's rules: lengths, ASCII, postal code, category.
    MerchantQr::new(merchant.details(), Payment::Static)
        .map_err(|error| MoneyError::MerchantInvalid(error.to_string()))?;
    Ok(merchant)
}

/// Whether `text` holds only characters a reader sees: no control characters, no zero-width
/// characters (U+200B–U+200D, U+2060, U+FEFF) and no bidirectional controls or marks
/// (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), which would let a name look like
/// another one on the payer's screen.
pub fn is_printable(text: &str) -> bool {
    !text.chars().any(|c| {
        c.is_control()
            || matches!(
                c,
                '\u{061C}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{FEFF}'
            )
    })
}

/// Writes a validated merchant and its audit entry (admins only, with a reason).
fn insert(
    tx: &mut dyn Tx,
    now_ms: i64,
    operator: &Operator,
    merchant: &Merchant,
    reason: &str,
) -> Result<(), MoneyError> {
    operator.require(Permission::ManageMerchants)?;
    require_reason(reason)?;
    tx.execute(
        "INSERT INTO money_merchants (id, name, name_ja, category_code, city, city_ja,
         postal_code, status, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9)",
        &[
            Value::Uuid(merchant.id.as_u128()),
            merchant.name.as_str().into(),
            merchant.name_ja.as_str().into(),
            i64::from(merchant.category_code).into(),
            merchant.city.as_str().into(),
            merchant.city_ja.as_deref().into(),
            merchant.postal_code.as_str().into(),
            Value::Uuid(operator.id.as_u128()),
            now_ms.into(),
        ],
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::Operator(operator.id.as_u128()),
            action: "merchant.created",
            subject_kind: "merchant",
            subject_id: &merchant.id.to_string(),
            reason: reason.trim(),
            detail: serde_json::json!({ "merchant": merchant }),
        },
    )?;
    Ok(())
}

/// Issues an API key for a merchant (admins only, with a reason). The key is returned once;
/// only its SHA-256 is stored.
pub fn issue_key(
    tx: &mut dyn Tx,
    now_ms: i64,
    operator: &Operator,
    merchant_id: uuid::Uuid,
    label: &str,
    reason: &str,
) -> Result<(MerchantKey, SecretString), MoneyError> {
    operator.require(Permission::ManageMerchants)?;
    require_reason(reason)?;
    let label = label.trim();
    if label.is_empty() || label.chars().count() > KEY_LABEL_CHARS_MAX || !is_printable(label) {
        return Err(MoneyError::MerchantInvalid(format!(
            "a key's label is 1–{KEY_LABEL_CHARS_MAX} characters without control characters"
        )));
    }
    by_id(tx, merchant_id)?.ok_or(MoneyError::MerchantNotFound)?;
    let key = new_key();
    let issued = MerchantKey {
        id: uuid::Uuid::now_v7(),
        merchant_id,
        label: label.to_owned(),
        created_at_ms: now_ms,
    };
    tx.execute(
        "INSERT INTO money_merchant_keys (id, merchant_id, key_hash, label, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            Value::Uuid(issued.id.as_u128()),
            Value::Uuid(merchant_id.as_u128()),
            key_hash(key.expose_secret()).into(),
            label.into(),
            now_ms.into(),
        ],
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::Operator(operator.id.as_u128()),
            action: "merchant.key_issued",
            subject_kind: "merchant",
            subject_id: &merchant_id.to_string(),
            reason: reason.trim(),
            detail: serde_json::json!({ "key_id": issued.id, "label": label }),
        },
    )?;
    Ok((issued, key))
}

/// The merchant a key belongs to; an unknown, malformed or revoked key is
/// `MERCHANT_UNAUTHENTICATED`. The lookup is by the key's SHA-256, so nothing compares the
/// key itself.
pub fn authenticate(tx: &mut dyn Tx, key: &SecretString) -> Result<Merchant, MoneyError> {
    let key = key.expose_secret();
    let well_formed = key.len() == KEY_PREFIX.len() + KEY_HEX_CHARS
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !well_formed {
        return Err(MoneyError::MerchantUnauthenticated);
    }
    let row = tx
        .query_opt(
            &format!(
                "SELECT {MERCHANT_COLUMNS} FROM money_merchant_keys k
                 JOIN money_merchants m ON m.id = k.merchant_id
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
            ),
            &[key_hash(key).into()],
        )?
        .ok_or(MoneyError::MerchantUnauthenticated)?;
    merchant_from(&row)
}

/// A merchant by id.
pub fn by_id(tx: &mut dyn Tx, id: uuid::Uuid) -> Result<Option<Merchant>, MoneyError> {
    tx.query_opt(
        &format!("SELECT {MERCHANT_COLUMNS} FROM money_merchants m WHERE m.id = $1"),
        &[Value::Uuid(id.as_u128())],
    )?
    .as_ref()
    .map(merchant_from)
    .transpose()
}

impl crate::charge::MoneyService {
    /// Onboards a merchant for the operator holding `token` and opens its payable account.
    pub fn onboard_merchant(
        &self,
        token: &SecretString,
        new: &NewMerchant,
        reason: &str,
    ) -> Result<Merchant, MoneyError> {
        let now_ms = self.clock_ms();
        let merchant = validated(new, now_ms)?;
        // Authorised before anything is written, the ledger account included.
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ManageMerchants)?;
            require_reason(reason)?;
            Ok::<_, MoneyError>(())
        })?;
        // The payable account first, the merchant second: a crash in between leaves an empty
        // account no one can reach, never a merchant whose payments cannot land.
        crate::accounts::ensure(
            self.ledger(),
            &[(
                crate::accounts::payable(merchant.id.as_u128())?,
                crate::accounts::code::PAYABLE,
            )],
        )?;
        crate::charge::failpoint("merchant_onboarding_midway");
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            // The token is checked again in the same transaction as the change it authorises.
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            insert(tx, now_ms, &by, &merchant, reason)
        })?;
        Ok(merchant)
    }

    /// Issues an API key to a merchant for the operator holding `token`.
    pub fn issue_merchant_key(
        &self,
        token: &SecretString,
        merchant_id: uuid::Uuid,
        label: &str,
        reason: &str,
    ) -> Result<(MerchantKey, SecretString), MoneyError> {
        let now_ms = self.clock_ms();
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            issue_key(tx, now_ms, &by, merchant_id, label, reason)
        })
    }

    /// The merchant whose API key this is.
    pub fn merchant_by_key(&self, key: &SecretString) -> Result<Merchant, MoneyError> {
        self.identity_database()
            .read(|tx: &mut dyn Tx| authenticate(tx, key))
    }
}

/// The demo's merchant (`kinko demo`): a fixed id, created once; every start issues it a fresh
/// API key (audited as the system) and answers the merchant with the key, shown once.
pub fn seed_demo(tx: &mut dyn Tx, now_ms: i64) -> Result<(Merchant, SecretString), MoneyError> {
    const DEMO_MERCHANT_ID: u128 = 0x0192_0000_0000_7000_8000_0000_0000_0d30;
    let id = uuid::Uuid::from_u128(DEMO_MERCHANT_ID);
    tx.execute(
        "INSERT INTO money_merchants (id, name, name_ja, category_code, city, city_ja,
         postal_code, status, created_by, created_at)
         VALUES ($1, 'Kinko Mart', 'きんこマート', 5411, 'Chiyoda-ku', '千代田区', '1000005',
                 'active', $1, $2)
         ON CONFLICT (id) DO NOTHING",
        &[Value::Uuid(DEMO_MERCHANT_ID), now_ms.into()],
    )?;
    let merchant = by_id(tx, id)?.ok_or(MoneyError::MerchantNotFound)?;
    let key = new_key();
    let key_id = uuid::Uuid::now_v7();
    tx.execute(
        "INSERT INTO money_merchant_keys (id, merchant_id, key_hash, label, created_at)
         VALUES ($1, $2, $3, 'demo', $4)",
        &[
            Value::Uuid(key_id.as_u128()),
            Value::Uuid(DEMO_MERCHANT_ID),
            key_hash(key.expose_secret()).into(),
            now_ms.into(),
        ],
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::System,
            action: "merchant.key_issued",
            subject_kind: "merchant",
            subject_id: &id.to_string(),
            reason: "kinko demo start",
            detail: serde_json::json!({ "key_id": key_id, "label": "demo" }),
        },
    )?;
    Ok((merchant, key))
}
