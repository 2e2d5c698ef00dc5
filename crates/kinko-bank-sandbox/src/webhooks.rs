//! Webhooks (BANK-PROTOCOL §9): the bank tells a client that a link ended or was reported,
//! with a compact JWS signed by the bank's own ES256 key (published at `jwks_uri`). Events go
//! into an outbox in the same transaction as the change they report, so none is lost; a
//! delivery loop POSTs each to the client's `webhook_url` until it answers 2xx, with the same
//! JWS every time and an exponential backoff (1 s, 2 s, 4 s … capped at 5 min) for three days.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kinko_core::Clock;
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Tx, Value};
use p256::ecdsa::SigningKey;
use serde_json::Map;

use crate::jws::{self, Jwk};
use crate::links::Link;
use crate::oauth::Bank;
use crate::store;

const SIGNING_KEY_SETTING: &str = "webhook_signing_key";
/// The JWS `typ` of an event.
pub const EVENT_TYP: &str = "bank-event+jwt";
/// A client that does not answer within this is tried again later.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry waits this long; each next one twice as long, up to the cap.
pub const BACKOFF_FIRST_MS: i64 = 1_000;
pub const BACKOFF_CAP_MS: i64 = 5 * 60_000;
/// After this long the bank stops trying (the protocol promises at least 24 hours).
pub const GIVE_UP_AFTER_MS: i64 = 3 * 24 * 60 * 60_000;
/// While one attempt runs, no other delivery loop takes the same event.
pub const CLAIM_MS: i64 = 30_000;
/// Events taken per round.
pub const BATCH_SIZE: i64 = 20;
/// How often the delivery loop looks for due events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The webhook signing key: a P-256 scalar made at the bank's first start and kept.
pub(crate) fn load_signing_key(database: &Database) -> Result<SigningKey, StoreError> {
    let encoded = store::setting_or_generate(database, SIGNING_KEY_SETTING, || {
        let key = jws::generate_key().map_err(|error| StoreError::new(error.to_string()))?;
        Ok(URL_SAFE_NO_PAD.encode(key.to_bytes()))
    })?;
    URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|bytes| SigningKey::from_slice(&bytes).ok())
        .ok_or_else(|| StoreError::new("bank_settings.webhook_signing_key is unusable"))
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    BACKOFF_FIRST_MS
        .saturating_mul(1_i64 << exponent)
        .min(BACKOFF_CAP_MS)
}

/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryRound {
    pub attempted: usize,
    pub delivered: usize,
}

/// An event of the outbox, for tests and the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub jti: String,
    pub client_id: String,
    pub event: String,
    pub link_id: uuid::Uuid,
    pub jws: String,
    pub attempts: i64,
    pub next_attempt_at_ms: Option<i64>,
    pub last_status: Option<String>,
    pub delivered_at_ms: Option<i64>,
}

/// The HTTP agent of the delivery loop: the 10 s limit, no redirects, statuses as answers.
pub fn delivery_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(DELIVERY_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into()
}

impl Bank {
    /// The bank's published keys (`GET /.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        let mut key = Jwk::from_verifying_key(self.signing_key.verifying_key())
            .map(|jwk| jwk.to_json())
            .unwrap_or_default();
        if let serde_json::Value::Object(members) = &mut key {
            members.insert("kid".to_owned(), self.signing_kid.clone().into());
            members.insert("use".to_owned(), "sig".into());
            members.insert("alg".to_owned(), "ES256".into());
        }
        serde_json::json!({ "keys": [key] })
    }

    /// Signs an event about `link` and puts it in the outbox, in the caller's transaction.
    pub(crate) fn enqueue_event(
        &self,
        tx: &mut dyn Tx,
        link: &Link,
        event: &str,
        reason: &str,
        payment_key: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let jti = uuid::Uuid::now_v7().to_string();
        let mut claims = Map::new();
        claims.insert("iss".to_owned(), self.issuer().into());
        claims.insert("aud".to_owned(), link.client_id.as_str().into());
        claims.insert("iat".to_owned(), (now_ms / 1_000).into());
        claims.insert("jti".to_owned(), jti.as_str().into());
        claims.insert("event".to_owned(), event.into());
        claims.insert("link_id".to_owned(), link.id.to_string().into());
        claims.insert(
            "account_ref".to_owned(),
            self.account_ref(&link.client_id, link.account_id)?.into(),
        );
        if let Some(key) = payment_key {
            claims.insert("payment_key".to_owned(), key.into());
        }
        claims.insert("reason".to_owned(), reason.into());
        let mut header = Map::new();
        header.insert("typ".to_owned(), EVENT_TYP.into());
        header.insert("kid".to_owned(), self.signing_kid.as_str().into());
        let signed = jws::sign(header, &claims, &self.signing_key)
            .map_err(|error| StoreError::new(format!("signing a webhook event: {error}")))?;
        tx.execute(
            "INSERT INTO bank_webhook_outbox (jti, client_id, event, link_id, jws,
             created_at_ms, next_attempt_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            &[
                jti.as_str().into(),
                link.client_id.as_str().into(),
                event.into(),
                Value::Uuid(link.id.as_u128()),
                signed.into(),
                now_ms.into(),
            ],
        )?;
        Ok(())
    }

    /// Every event of the outbox, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxEvent>, StoreError> {
        self.database().transaction(|tx: &mut dyn Tx| {
            tx.query(
                "SELECT jti, client_id, event, link_id, jws, attempts, next_attempt_at_ms,
                 last_status, delivered_at_ms FROM bank_webhook_outbox
                 ORDER BY created_at_ms, jti",
                &[],
            )?
            .iter()
            .map(|row| {
                Ok(OutboxEvent {
                    jti: row.text(0)?,
                    client_id: row.text(1)?,
                    event: row.text(2)?,
                    link_id: uuid::Uuid::from_u128(row.uuid(3)?),
                    jws: row.text(4)?,
                    attempts: row.int(5)?,
                    next_attempt_at_ms: row.opt_int(6)?,
                    last_status: row.opt_text(7)?,
                    delivered_at_ms: row.opt_int(8)?,
                })
            })
            .collect()
        })
    }

    /// One delivery round: takes the due events, POSTs each to its client's webhook URL
    /// (blocking, up to 10 s each) and records the outcome.
    pub fn deliver_due_webhooks(
        &self,
        agent: &ureq::Agent,
        now_ms: i64,
    ) -> Result<DeliveryRound, StoreError> {
        // Claim first, in one transaction: a second loop on the same store skips them.
        let due = self.database().transaction(|tx: &mut dyn Tx| {
            let rows = tx.query(
                &format!(
                    "SELECT o.jti, o.jws, o.attempts, o.created_at_ms, c.webhook_url
                     FROM bank_webhook_outbox o
                     JOIN bank_oauth_clients c ON c.client_id = o.client_id
                     WHERE o.delivered_at_ms IS NULL AND o.next_attempt_at_ms <= $1
                     ORDER BY o.next_attempt_at_ms, o.jti LIMIT {BATCH_SIZE}{}",
                    tx.for_update()
                ),
                &[now_ms.into()],
            )?;
            let mut due = Vec::with_capacity(rows.len());
            for row in rows {
                let jti = row.text(0)?;
                tx.execute(
                    "UPDATE bank_webhook_outbox SET next_attempt_at_ms = $2 WHERE jti = $1",
                    &[jti.as_str().into(), (now_ms + CLAIM_MS).into()],
                )?;
                due.push((
                    jti,
                    row.text(1)?,
                    row.int(2)?,
                    row.int(3)?,
                    row.opt_text(4)?,
                ));
            }
            Ok::<_, StoreError>(due)
        })?;
        let mut round = DeliveryRound::default();
        for (jti, signed, attempts, created_at_ms, url) in due {
            round.attempted += 1;
            let status = match url {
                None => "no webhook_url registered".to_owned(),
                Some(url) => match agent
                    .post(&url)
                    .header("Content-Type", "application/jwt")
                    .send(signed.as_bytes())
                {
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(error) => format!("transport: {error}"),
                },
            };
            let delivered = status.len() == 3 && status.starts_with('2');
            let attempts = attempts.saturating_add(1);
            let next_attempt_at_ms = if delivered || now_ms - created_at_ms > GIVE_UP_AFTER_MS {
                None
            } else {
                Some(now_ms + backoff_ms(attempts))
            };
            if delivered {
                round.delivered += 1;
            } else {
                tracing::warn!(jti = %jti, attempts, status = %status, "webhook not delivered");
            }
            self.database().transaction(|tx: &mut dyn Tx| {
                tx.execute(
                    "UPDATE bank_webhook_outbox SET attempts = $2, next_attempt_at_ms = $3,
                     last_status = $4, delivered_at_ms = $5 WHERE jti = $1",
                    &[
                        jti.as_str().into(),
                        attempts.into(),
                        next_attempt_at_ms.into(),
                        status.as_str().into(),
                        delivered.then_some(now_ms).into(),
                    ],
                )
            })?;
        }
        Ok(round)
    }
}

/// The delivery loop of `kinko bank-sandbox`: a thread of its own (delivery blocks on HTTP),
/// polling the outbox. Stopped and joined on `stop` or drop.
pub struct DeliveryLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DeliveryLoop {
    pub fn spawn(bank: Arc<Bank>, clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bank-webhooks".to_owned())
            .spawn(move || {
                let agent = delivery_agent();
                while !stopping.load(Ordering::Relaxed) {
                    let now_ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
                    if let Err(error) = bank.deliver_due_webhooks(&agent, now_ms) {
                        tracing::error!(error = %error, "webhook delivery round failed");
                    }
                    std::thread::sleep(POLL_INTERVAL);
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the webhook delivery thread panicked");
        }
    }
}

impl Drop for DeliveryLoop {
    fn drop(&mut self) {
        self.halt();
    }
}
