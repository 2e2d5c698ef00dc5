//! The sandbox bank's own store: its schema, its banks, customers, accounts and notices,
//! the demo seed, and the replay memory for one-time JWT ids.
//!
//! The bank is a separate party from Kinko, so it keeps its data in a database of its own
//! (another SQLite data directory or another PostgreSQL database) reached through the same
//! portable SQL layer. `Database::open` also applies Kinko's migrations there: harmless and
//! unused. The bank's tables are created here with `CREATE TABLE IF NOT EXISTS` at start
//! rather than as numbered migrations in `kinko-store`, because `kinko-store`'s migration set
//! belongs to the platform and a bank's schema must not ride on it; when the sandbox needs
//! a second schema version it gets its own versioned set.

use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Dialect, Tx, Value};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

/// Creates the bank's tables if they are missing. Safe to run at every start.
pub fn ensure_schema(database: &Database) -> Result<(), StoreError> {
    database.transaction(|tx: &mut dyn Tx| {
        let (id, blob) = match tx.dialect() {
            Dialect::Sqlite => ("BLOB", "BLOB"),
            Dialect::Postgres => ("UUID", "BYTEA"),
        };
        let statements = [
            "CREATE TABLE IF NOT EXISTS bank_banks (
                code TEXT PRIMARY KEY,
                name TEXT NOT NULL
            )"
            .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS bank_customers (
                id {id} PRIMARY KEY,
                online_id TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                totp_secret {blob} NOT NULL,
                email TEXT NOT NULL,
                phone TEXT NOT NULL,
                failed_logins BIGINT NOT NULL DEFAULT 0,
                locked_until_ms BIGINT NOT NULL DEFAULT 0,
                totp_last_step BIGINT NOT NULL DEFAULT 0,
                created_at_ms BIGINT NOT NULL
            )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS bank_accounts (
                id {id} PRIMARY KEY,
                customer_id {id} NOT NULL REFERENCES bank_customers (id),
                bank_code TEXT NOT NULL REFERENCES bank_banks (code),
                branch TEXT NOT NULL CHECK (length(branch) = 3),
                kind TEXT NOT NULL CHECK (kind IN ('futsu', 'toza')),
                number TEXT NOT NULL CHECK (length(number) = 7),
                holder_kana TEXT NOT NULL,
                birth_date TEXT NOT NULL,
                balance_yen BIGINT NOT NULL CHECK (balance_yen >= 0),
                pin_hash TEXT NOT NULL,
                UNIQUE (bank_code, branch, kind, number)
            )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS bank_notices (
                id {id} PRIMARY KEY,
                customer_id {id} NOT NULL REFERENCES bank_customers (id),
                channel TEXT NOT NULL,
                kind TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL
            )"
            ),
            "CREATE TABLE IF NOT EXISTS bank_oauth_clients (
                client_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                jwk TEXT NOT NULL,
                redirect_uris TEXT NOT NULL
            )"
            .to_owned(),
            "CREATE TABLE IF NOT EXISTS bank_oauth_pushed_requests (
                request_uri_hash TEXT PRIMARY KEY,
                client_id TEXT NOT NULL REFERENCES bank_oauth_clients (client_id),
                bank_code TEXT NOT NULL,
                redirect_uri TEXT NOT NULL,
                scope TEXT NOT NULL,
                code_challenge TEXT NOT NULL,
                state TEXT NOT NULL,
                expires_at_ms BIGINT NOT NULL,
                used_at_ms BIGINT
            )"
            .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS bank_oauth_codes (
                code_hash TEXT PRIMARY KEY,
                client_id TEXT NOT NULL REFERENCES bank_oauth_clients (client_id),
                redirect_uri TEXT NOT NULL,
                scope TEXT NOT NULL,
                code_challenge TEXT NOT NULL,
                customer_id {id} NOT NULL REFERENCES bank_customers (id),
                account_id {id} NOT NULL REFERENCES bank_accounts (id),
                expires_at_ms BIGINT NOT NULL,
                used_at_ms BIGINT
            )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS bank_oauth_tokens (
                token_hash TEXT PRIMARY KEY,
                code_hash TEXT NOT NULL,
                client_id TEXT NOT NULL,
                customer_id {id} NOT NULL REFERENCES bank_customers (id),
                account_id {id} NOT NULL REFERENCES bank_accounts (id),
                scope TEXT NOT NULL,
                jkt TEXT NOT NULL,
                issued_at_ms BIGINT NOT NULL,
                expires_at_ms BIGINT NOT NULL,
                revoked_at_ms BIGINT
            )"
            ),
            "CREATE INDEX IF NOT EXISTS bank_oauth_tokens_by_code
                ON bank_oauth_tokens (code_hash)"
                .to_owned(),
            // Debits and credits, one row per (client, kind, Idempotency-Key): a retry finds
            // the saved answer, a rejection is kept like a success.
            format!(
                "CREATE TABLE IF NOT EXISTS bank_payments (
                client_id TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('debit', 'credit')),
                idempotency_key TEXT NOT NULL,
                id {id} NOT NULL UNIQUE,
                account_id {id} NOT NULL REFERENCES bank_accounts (id),
                request_hash TEXT NOT NULL,
                amount_yen BIGINT NOT NULL CHECK (amount_yen > 0),
                description TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('settled', 'rejected')),
                reason TEXT,
                balance_after_yen BIGINT,
                created_at_ms BIGINT NOT NULL,
                PRIMARY KEY (client_id, kind, idempotency_key)
            )"
            ),
            // The legacy verify method's own lock, per account: consecutive failures, and
            // when the lock fell. Only the bank lifts it.
            format!(
                "CREATE TABLE IF NOT EXISTS bank_legacy_locks (
                account_id {id} PRIMARY KEY REFERENCES bank_accounts (id),
                failures BIGINT NOT NULL DEFAULT 0,
                locked_at_ms BIGINT
            )"
            ),
            "CREATE TABLE IF NOT EXISTS bank_oauth_seen_jtis (
                purpose TEXT NOT NULL,
                jti TEXT NOT NULL,
                expires_at_ms BIGINT NOT NULL,
                PRIMARY KEY (purpose, jti)
            )"
            .to_owned(),
            // The bank's own secrets, each generated once at first start: the account_ref
            // HMAC key and the webhook signing key.
            "CREATE TABLE IF NOT EXISTS bank_settings (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )"
            .to_owned(),
            // A link: one customer's consent for one account to one client, until ended.
            format!(
                "CREATE TABLE IF NOT EXISTS bank_links (
                id {id} PRIMARY KEY,
                client_id TEXT NOT NULL REFERENCES bank_oauth_clients (client_id),
                customer_id {id} NOT NULL REFERENCES bank_customers (id),
                account_id {id} NOT NULL REFERENCES bank_accounts (id),
                scope TEXT NOT NULL,
                jkt TEXT NOT NULL,
                code_hash TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                ended_at_ms BIGINT,
                end_reason TEXT
            )"
            ),
            "CREATE INDEX IF NOT EXISTS bank_links_by_customer ON bank_links (customer_id)"
                .to_owned(),
            // Refresh tokens, by hash. A rotated one stays, so a second use is recognised.
            format!(
                "CREATE TABLE IF NOT EXISTS bank_refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                link_id {id} NOT NULL REFERENCES bank_links (id),
                issued_at_ms BIGINT NOT NULL,
                rotated_at_ms BIGINT
            )"
            ),
            // Events to clients, signed when made; a retry sends the same JWS.
            format!(
                "CREATE TABLE IF NOT EXISTS bank_webhook_outbox (
                jti TEXT PRIMARY KEY,
                client_id TEXT NOT NULL REFERENCES bank_oauth_clients (client_id),
                event TEXT NOT NULL,
                link_id {id} NOT NULL,
                jws TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                attempts BIGINT NOT NULL DEFAULT 0,
                next_attempt_at_ms BIGINT,
                last_status TEXT,
                delivered_at_ms BIGINT
            )"
            ),
            "CREATE INDEX IF NOT EXISTS bank_webhook_outbox_due
                ON bank_webhook_outbox (next_attempt_at_ms)"
                .to_owned(),
            // Signed-in customers of the bank's own pages; the cookie's value is stored hashed.
            format!(
                "CREATE TABLE IF NOT EXISTS bank_customer_sessions (
                token_hash TEXT PRIMARY KEY,
                customer_id {id} NOT NULL REFERENCES bank_customers (id),
                authenticated_at_ms BIGINT NOT NULL,
                expires_at_ms BIGINT NOT NULL
            )"
            ),
        ];
        for statement in &statements {
            tx.execute(statement, &[])?;
        }
        // Columns added after the first schema: stores made by an older sandbox gain them.
        add_column_if_missing(tx, "bank_oauth_tokens", "link_id", id)?;
        add_column_if_missing(tx, "bank_oauth_clients", "webhook_url", "TEXT")?;
        add_column_if_missing(tx, "bank_payments", "link_id", id)?;
        add_column_if_missing(tx, "bank_payments", "reported_at_ms", "BIGINT")?;
        // The per-day statement reads a client's payments in decision order (`statement.rs`).
        tx.execute(
            "CREATE INDEX IF NOT EXISTS bank_payments_by_client_time
                ON bank_payments (client_id, created_at_ms, id)",
            &[],
        )?;
        Ok(())
    })
}

/// Adds a nullable column to a table unless it is there already.
fn add_column_if_missing(
    tx: &mut dyn Tx,
    table: &str,
    column: &str,
    declaration: &str,
) -> Result<(), StoreError> {
    let present = match tx.dialect() {
        Dialect::Sqlite => tx
            .query_one(
                "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2",
                &[table.into(), column.into()],
            )?
            .int(0)?,
        Dialect::Postgres => tx
            .query_one(
                "SELECT COUNT(*) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                &[table.into(), column.into()],
            )?
            .int(0)?,
    };
    if present == 0 {
        // Names are this module's constants, never input.
        tx.execute(
            &format!("ALTER TABLE {table} ADD COLUMN {column} {declaration}"),
            &[],
        )?;
    }
    Ok(())
}

/// The bank's setting `name`, made by `generate` and stored the first time it is asked for.
/// Two processes starting at once agree: the first insert wins and both read it back.
pub fn setting_or_generate(
    database: &Database,
    name: &str,
    generate: impl FnOnce() -> Result<String, StoreError>,
) -> Result<String, StoreError> {
    let fresh = generate()?;
    database.transaction(|tx: &mut dyn Tx| {
        tx.execute(
            "INSERT INTO bank_settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
            &[name.into(), fresh.as_str().into()],
        )?;
        tx.query_one(
            "SELECT value FROM bank_settings WHERE name = $1",
            &[name.into()],
        )?
        .text(0)
    })
}

/// Remembers a JWT id for `purpose` until `expires_at_ms`. `Ok(false)` means it was already
/// seen and unexpired: a replay. Runs in its own committed transaction so a spent id stays
/// spent even when the request that carried it fails later.
pub fn remember_jti(
    database: &Database,
    purpose: &str,
    jti: &str,
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    database.transaction(|tx: &mut dyn Tx| {
        // Forget ids whose token could no longer be accepted anyway: the table stays small.
        tx.execute(
            "DELETE FROM bank_oauth_seen_jtis WHERE purpose = $1 AND expires_at_ms < $2",
            &[purpose.into(), now_ms.into()],
        )?;
        let inserted = tx.execute(
            "INSERT INTO bank_oauth_seen_jtis (purpose, jti, expires_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (purpose, jti) DO NOTHING",
            &[purpose.into(), jti.into(), expires_at_ms.into()],
        )?;
        Ok(inserted == 1)
    })
}

/// 普通 (ordinary) or 当座 (current).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Futsu,
    Toza,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Futsu => "futsu",
            AccountKind::Toza => "toza",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "futsu" => Some(AccountKind::Futsu),
            "toza" => Some(AccountKind::Toza),
            _ => None,
        }
    }

    pub fn label_ja(self) -> &'static str {
        match self {
            AccountKind::Futsu => "普通",
            AccountKind::Toza => "当座",
        }
    }
}

/// A bank account as the bank holds it. The PIN hash never leaves the store module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub id: uuid::Uuid,
    pub customer_id: uuid::Uuid,
    pub bank_code: String,
    pub branch: String,
    pub kind: AccountKind,
    pub number: String,
    pub holder_kana: String,
    pub birth_date: String,
    pub balance_yen: i64,
}

const ACCOUNT_COLUMNS: &str =
    "id, customer_id, bank_code, branch, kind, number, holder_kana, birth_date, balance_yen";

fn account_from_row(row: &kinko_store::sql::Row) -> Result<Account, StoreError> {
    Ok(Account {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        customer_id: uuid::Uuid::from_u128(row.uuid(1)?),
        bank_code: row.text(2)?,
        branch: row.text(3)?,
        kind: AccountKind::parse(&row.text(4)?)
            .ok_or_else(|| StoreError::new("bank_accounts.kind holds an unknown kind"))?,
        number: row.text(5)?,
        holder_kana: row.text(6)?,
        birth_date: row.text(7)?,
        balance_yen: row.int(8)?,
    })
}

pub fn account(tx: &mut dyn Tx, id: uuid::Uuid) -> Result<Option<Account>, StoreError> {
    tx.query_opt(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM bank_accounts WHERE id = $1"),
        &[Value::Uuid(id.as_u128())],
    )?
    .as_ref()
    .map(account_from_row)
    .transpose()
}

pub fn accounts_of(tx: &mut dyn Tx, customer_id: uuid::Uuid) -> Result<Vec<Account>, StoreError> {
    tx.query(
        &format!(
            "SELECT {ACCOUNT_COLUMNS} FROM bank_accounts WHERE customer_id = $1
             ORDER BY bank_code, branch, number"
        ),
        &[Value::Uuid(customer_id.as_u128())],
    )?
    .iter()
    .map(account_from_row)
    .collect()
}

/// A customer's login material, for the login check only.
pub struct CustomerLogin {
    pub id: uuid::Uuid,
    pub password_hash: String,
    pub totp_secret: Vec<u8>,
    /// Consecutive failed logins since the last success.
    pub failed_logins: i64,
    pub locked_until_ms: i64,
    /// The last TOTP time step accepted: a code is good once.
    pub totp_last_step: i64,
}

pub fn customer_login(
    tx: &mut dyn Tx,
    online_id: &str,
) -> Result<Option<CustomerLogin>, StoreError> {
    tx.query_opt(
        &format!(
            "SELECT id, password_hash, totp_secret, failed_logins, locked_until_ms,
             totp_last_step FROM bank_customers WHERE online_id = $1{}",
            tx.for_update()
        ),
        &[online_id.into()],
    )?
    .map(|row| {
        Ok(CustomerLogin {
            id: uuid::Uuid::from_u128(row.uuid(0)?),
            password_hash: row.text(1)?,
            totp_secret: row.bytes(2)?,
            failed_logins: row.int(3)?,
            locked_until_ms: row.int(4)?,
            totp_last_step: row.int(5)?,
        })
    })
    .transpose()
}

/// Records a successful login: failures reset, the TOTP step spent.
pub fn record_login_success(
    tx: &mut dyn Tx,
    customer_id: uuid::Uuid,
    totp_step: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE bank_customers SET failed_logins = 0, locked_until_ms = 0, totp_last_step = $2
         WHERE id = $1",
        &[Value::Uuid(customer_id.as_u128()), totp_step.into()],
    )?;
    Ok(())
}

/// Records a failed login; at `failures_max` consecutive failures the login locks until
/// `now_ms + lock_ms` and the customer is told. Returns whether this failure locked it.
pub fn record_login_failure(
    tx: &mut dyn Tx,
    customer_id: uuid::Uuid,
    failures_max: i64,
    lock_ms: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let failures = tx
        .query_one(
            "UPDATE bank_customers SET failed_logins = failed_logins + 1 WHERE id = $1
             RETURNING failed_logins",
            &[Value::Uuid(customer_id.as_u128())],
        )?
        .int(0)?;
    if failures < failures_max {
        return Ok(false);
    }
    tx.execute(
        "UPDATE bank_customers SET failed_logins = 0, locked_until_ms = $2 WHERE id = $1",
        &[
            Value::Uuid(customer_id.as_u128()),
            (now_ms + lock_ms).into(),
        ],
    )?;
    record_notice(
        tx,
        customer_id,
        "login_locked",
        "オンラインバンキングへのログインに続けて失敗したため、しばらくログインを停止しました。\
         心当たりがない場合は当行にご連絡ください。",
        now_ms,
    )?;
    Ok(true)
}

/// A message the bank sent its customer on the customer's registered channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    pub id: uuid::Uuid,
    pub customer_id: uuid::Uuid,
    /// The registered address it went to (`email:` / `phone:` prefix), never one a client gave.
    pub channel: String,
    pub kind: String,
    pub body: String,
    pub created_at_ms: i64,
}

/// Records a notice to the customer on the e-mail address the bank has on file.
pub fn record_notice(
    tx: &mut dyn Tx,
    customer_id: uuid::Uuid,
    kind: &str,
    body: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let email = tx
        .query_one(
            "SELECT email FROM bank_customers WHERE id = $1",
            &[Value::Uuid(customer_id.as_u128())],
        )?
        .text(0)?;
    tx.execute(
        "INSERT INTO bank_notices (id, customer_id, channel, kind, body, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            Value::Uuid(uuid::Uuid::now_v7().as_u128()),
            Value::Uuid(customer_id.as_u128()),
            format!("email:{email}").into(),
            kind.into(),
            body.into(),
            now_ms.into(),
        ],
    )?;
    Ok(())
}

pub fn notices_of(tx: &mut dyn Tx, customer_id: uuid::Uuid) -> Result<Vec<Notice>, StoreError> {
    tx.query(
        "SELECT id, customer_id, channel, kind, body, created_at_ms FROM bank_notices
         WHERE customer_id = $1 ORDER BY created_at_ms, id",
        &[Value::Uuid(customer_id.as_u128())],
    )?
    .iter()
    .map(|row| {
        Ok(Notice {
            id: uuid::Uuid::from_u128(row.uuid(0)?),
            customer_id: uuid::Uuid::from_u128(row.uuid(1)?),
            channel: row.text(2)?,
            kind: row.text(3)?,
            body: row.text(4)?,
            created_at_ms: row.int(5)?,
        })
    })
    .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("hashing a demo secret failed: {0}")]
    Hashing(String),
    #[error("the partner-bank list is malformed: {0}")]
    Registry(String),
}

/// The bank codes the sandbox seeds, with their names.
pub const SEED_BANKS: &[(&str, &str)] = &[
    ("0001", "みずほ銀行"),
    ("0009", "三井住友銀行"),
    ("9900", "ゆうちょ銀行"),
];

/// Every demo customer's bank password. Demo data only: the sandbox never holds real people.
pub const DEMO_PASSWORD: &str = "sandbox-bank-password";

/// A seeded demo customer with the clear secrets a demo or test needs to act as them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCustomer {
    pub online_id: String,
    pub password: String,
    /// The TOTP seed, so a test or the demo can compute the one-time code.
    pub totp_secret: Vec<u8>,
    pub email: String,
    pub phone: String,
    pub holder_kana: String,
    pub birth_date: String,
    pub accounts: Vec<DemoAccount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoAccount {
    pub bank_code: String,
    pub branch: String,
    pub kind: AccountKind,
    pub number: String,
    pub pin: String,
    pub balance_yen: i64,
}

impl DemoCustomer {
    /// The TOTP seed in base32, to type into an authenticator app for the demo.
    pub fn totp_secret_base32(&self) -> String {
        totp_rs::Secret::from(self.totp_secret.clone()).to_base32()
    }

    /// The sandbox eKYC reference whose identity is this customer's, if any.
    pub fn kyc_reference(&self) -> Option<&'static str> {
        kinko_identity::kyc::SANDBOX_IDENTITIES
            .iter()
            .find(|(_, _, kana, birth, _)| *kana == self.holder_kana && *birth == self.birth_date)
            .map(|(reference, ..)| *reference)
    }
}

/// The deterministic demo customers: one per sandbox eKYC identity (same kana name and birth
/// date, so a link after KYC matches), each with accounts at two bank codes, plus one whose
/// kana name differs from every identity, for the holder-mismatch path.
pub fn demo_customers() -> Vec<DemoCustomer> {
    let identities = kinko_identity::kyc::SANDBOX_IDENTITIES
        .iter()
        .map(|(_, _, kana, birth, _)| ((*kana).to_owned(), (*birth).to_owned()))
        .chain(std::iter::once((
            "ベツジン ジロウ".to_owned(),
            "1990-04-01".to_owned(),
        )));
    identities
        .enumerate()
        .map(|(index, (holder_kana, birth_date))| {
            let ordinal = index + 1;
            let online_id = format!("sandbox{ordinal:02}");
            let home_bank = SEED_BANKS[index % SEED_BANKS.len()].0;
            let second_bank = SEED_BANKS[(index + 1) % SEED_BANKS.len()].0;
            let account = |bank_code: &str, kind: AccountKind, offset: usize| DemoAccount {
                bank_code: bank_code.to_owned(),
                branch: format!("{:03}", 100 + ordinal),
                kind,
                number: format!("{:07}", 1_000_000 + ordinal * 10 + offset),
                pin: format!("{:04}", (ordinal * 1_379 + offset * 7) % 10_000),
                balance_yen: 500_000 + i64::try_from(ordinal).unwrap_or(0) * 100_000,
            };
            DemoCustomer {
                totp_secret: Sha256::digest(format!("kinko-sandbox-totp:{online_id}"))[..20]
                    .to_vec(),
                email: format!("{online_id}@bank.example"),
                phone: format!("+8190000{ordinal:05}"),
                password: DEMO_PASSWORD.to_owned(),
                holder_kana,
                birth_date,
                accounts: vec![
                    account(home_bank, AccountKind::Futsu, 1),
                    account(second_bank, AccountKind::Toza, 2),
                ],
                online_id,
            }
        })
        .collect()
}

/// Seeds the banks and demo customers; a customer already present is left as it is, so the
/// seed can run at every start.
pub fn seed(database: &Database, now_ms: i64) -> Result<Vec<DemoCustomer>, SeedError> {
    let customers = demo_customers();
    database.transaction(|tx: &mut dyn Tx| {
        for (code, name) in SEED_BANKS {
            tx.execute(
                "INSERT INTO bank_banks (code, name) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING",
                &[(*code).into(), (*name).into()],
            )?;
        }
        // The sandbox hosts every partner bank of Kinko's registry, so each can be linked in
        // the demo; the demo customers hold their accounts at the banks above.
        let partners = kinko_banking::registry::parse_registry(kinko_banking::registry::SEED_CSV)
            .map_err(|error| SeedError::Registry(error.to_string()))?;
        for bank in partners {
            tx.execute(
                "INSERT INTO bank_banks (code, name) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING",
                &[bank.code.as_str().into(), bank.name_ja.as_str().into()],
            )?;
        }
        for customer in &customers {
            if customer_login(tx, &customer.online_id)?.is_some() {
                continue;
            }
            let customer_id = uuid::Uuid::now_v7();
            let password_hash = kinko_identity::password::hash_password(&SecretString::from(
                customer.password.clone(),
            ))
            .map_err(|error| SeedError::Hashing(error.to_string()))?;
            tx.execute(
                "INSERT INTO bank_customers
                 (id, online_id, password_hash, totp_secret, email, phone, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    Value::Uuid(customer_id.as_u128()),
                    customer.online_id.as_str().into(),
                    password_hash.into(),
                    customer.totp_secret.clone().into(),
                    customer.email.as_str().into(),
                    customer.phone.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            for account in &customer.accounts {
                // The cash-card PIN is hashed like a password: argon2id with a fresh salt.
                let pin_hash = kinko_identity::password::hash_password(&SecretString::from(
                    account.pin.clone(),
                ))
                .map_err(|error| SeedError::Hashing(error.to_string()))?;
                tx.execute(
                    "INSERT INTO bank_accounts (id, customer_id, bank_code, branch, kind, number,
                     holder_kana, birth_date, balance_yen, pin_hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[
                        Value::Uuid(uuid::Uuid::now_v7().as_u128()),
                        Value::Uuid(customer_id.as_u128()),
                        account.bank_code.as_str().into(),
                        account.branch.as_str().into(),
                        account.kind.as_str().into(),
                        account.number.as_str().into(),
                        customer.holder_kana.as_str().into(),
                        customer.birth_date.as_str().into(),
                        account.balance_yen.into(),
                        pin_hash.into(),
                    ],
                )?;
            }
        }
        Ok::<_, SeedError>(())
    })?;
    Ok(customers)
}

/// The id of a customer by online-banking id (for pages and tests).
pub fn customer_id(tx: &mut dyn Tx, online_id: &str) -> Result<Option<uuid::Uuid>, StoreError> {
    Ok(customer_login(tx, online_id)?.map(|login| login.id))
}
