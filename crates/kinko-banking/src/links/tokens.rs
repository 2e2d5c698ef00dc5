//! A link's tokens: one access token cached per link, refreshes serialised across processes
//! by a lease on the row, and the bank payment calls that use them.

use super::*;

impl LinkService {
    pub(super) fn access_slot(&self, link_id: uuid::Uuid) -> Arc<Mutex<Option<CachedAccess>>> {
        match self.access.lock() {
            Ok(mut slots) => Arc::clone(slots.entry(link_id).or_default()),
            // A poisoned map only means another thread panicked; a fresh slot is safe.
            Err(_) => Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `call` with a live access token of an active link of `user_id`, refreshing it
    /// (one refresh at a time per link) when needed, and once more if the bank no longer
    /// takes the cached one.
    pub(super) fn with_access<T>(
        &self,
        user_id: u128,
        link_id: uuid::Uuid,
        call: impl Fn(&BankClient, &SecretString, &SigningKey, i64) -> Result<T, BankClientError>,
    ) -> Result<T, LinkError> {
        let slot = self.access_slot(link_id);
        let mut cached = slot.lock().map_err(|_| internal("access token lock"))?;
        for attempt in 0..2 {
            let now_ms = self.now_ms();
            let row = self.identity.database().transaction(|tx: &mut dyn Tx| {
                tx.query_opt(
                    "SELECT bank_code, status, method, sealed_refresh_token, sealed_dpop_key
                     FROM banking_links WHERE id = $1 AND user_id = $2",
                    &[Value::Uuid(link_id.as_u128()), Value::Uuid(user_id)],
                )
            })?;
            let row = row.ok_or(LinkError::NotFound)?;
            let bank_code = row.text(0)?;
            if row.text(1)? != "active" || row.text(2)? != "oauth" {
                return Err(LinkError::LinkInactive);
            }
            let (Some(sealed_refresh), Some(sealed_key)) = (row.opt_bytes(3)?, row.opt_bytes(4)?)
            else {
                return Err(LinkError::LinkInactive);
            };
            let associated = format!("bank_link:{link_id}");
            let dpop_key = self.open_key(&sealed_key, &associated)?;
            let client = self
                .banks
                .for_bank(&bank_code)
                .ok_or(LinkError::BankUnavailable)?;
            let usable = cached
                .as_ref()
                .filter(|access| access.usable_until_ms > now_ms)
                .map(|access| access.token.clone());
            let token = match usable {
                Some(token) => token,
                None => {
                    drop(sealed_refresh);
                    // One refresh at a time across processes: the lease first, then the
                    // refresh token as it stands now (another process may have rotated it).
                    let sealed_refresh = self.take_refresh_lease(link_id)?;
                    let refreshed = self.refresh_leased(
                        &client,
                        link_id,
                        &sealed_refresh,
                        &dpop_key,
                        &associated,
                    );
                    if refreshed.is_err() {
                        self.release_refresh_lease(link_id)?;
                    }
                    let tokens = refreshed?;
                    *cached = Some(CachedAccess {
                        token: tokens.access_token.clone(),
                        usable_until_ms: now_ms + ACCESS_USE_MS,
                    });
                    tokens.access_token
                }
            };
            match call(&client, &token, &dpop_key, now_ms) {
                Err(BankClientError::Refused { status: 401, .. }) if attempt == 0 => {
                    *cached = None;
                }
                Err(error) => return Err(bank_failure_kept(error)),
                Ok(answer) => return Ok(answer),
            }
        }
        Err(LinkError::BankUnavailable)
    }

    /// Takes the link's refresh lease (`refresh_lease_until`, a conditional update, so one
    /// process at a time across every instance) and answers the sealed refresh token as it
    /// stands once the lease is held. Waits for another holder at most
    /// [`REFRESH_LEASE_WAIT_MS`]; a lease whose holder died expires after
    /// [`REFRESH_LEASE_MS`].
    pub(super) fn take_refresh_lease(&self, link_id: uuid::Uuid) -> Result<Vec<u8>, LinkError> {
        let started = std::time::Instant::now();
        loop {
            let now_ms = self.now_ms();
            let held = self.identity.database().transaction(|tx: &mut dyn Tx| {
                let taken = tx.execute(
                    "UPDATE banking_links SET refresh_lease_until = $2
                     WHERE id = $1 AND status = 'active'
                       AND (refresh_lease_until IS NULL OR refresh_lease_until <= $3)",
                    &[
                        Value::Uuid(link_id.as_u128()),
                        now_ms.saturating_add(REFRESH_LEASE_MS).into(),
                        now_ms.into(),
                    ],
                )?;
                if taken != 1 {
                    return Ok(None);
                }
                let row = tx.query_one(
                    "SELECT sealed_refresh_token FROM banking_links WHERE id = $1",
                    &[Value::Uuid(link_id.as_u128())],
                )?;
                Ok::<_, LinkError>(Some(row.opt_bytes(0)?))
            })?;
            match held {
                Some(Some(sealed)) => return Ok(sealed),
                Some(None) => {
                    self.release_refresh_lease(link_id)?;
                    return Err(LinkError::LinkInactive);
                }
                None if started.elapsed()
                    >= std::time::Duration::from_millis(REFRESH_LEASE_WAIT_MS) =>
                {
                    return Err(LinkError::BankUnavailable);
                }
                None => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    pub(super) fn release_refresh_lease(&self, link_id: uuid::Uuid) -> Result<(), LinkError> {
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE banking_links SET refresh_lease_until = NULL WHERE id = $1",
                &[Value::Uuid(link_id.as_u128())],
            )
        })?;
        Ok(())
    }

    /// Spends the refresh token under the lease; the rotated one is stored and the lease
    /// given back in one update.
    pub(super) fn refresh_leased(
        &self,
        client: &BankClient,
        link_id: uuid::Uuid,
        sealed_refresh: &[u8],
        dpop_key: &SigningKey,
        associated: &str,
    ) -> Result<crate::client::Tokens, LinkError> {
        let refresh = SecretString::from(
            String::from_utf8(self.open(sealed_refresh, associated)?).map_err(internal)?,
        );
        let tokens = match client.refresh(&refresh, dpop_key, self.now_ms()) {
            Ok(tokens) => tokens,
            Err(BankClientError::Refused { status: 400, .. }) => {
                // The bank ended the consent: so does Kinko.
                self.end_link(link_id, "revoked_by_bank", "refresh_refused")?;
                return Err(LinkError::LinkInactive);
            }
            Err(error) => return Err(bank_failure(error)),
        };
        let sealed = self.seal(tokens.refresh_token.expose_secret().as_bytes(), associated)?;
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE banking_links SET sealed_refresh_token = $2, refresh_lease_until = NULL
                 WHERE id = $1",
                &[Value::Uuid(link_id.as_u128()), Value::Bytes(sealed.clone())],
            )
        })?;
        Ok(tokens)
    }

    pub(super) fn end_link(
        &self,
        link_id: uuid::Uuid,
        status: &str,
        reason: &str,
    ) -> Result<(), LinkError> {
        let now_ms = self.now_ms();
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE banking_links SET status = $2, ended_at = $3, end_reason = $4,
                 sealed_refresh_token = NULL WHERE id = $1 AND status = 'active'",
                &[
                    Value::Uuid(link_id.as_u128()),
                    status.into(),
                    now_ms.into(),
                    reason.into(),
                ],
            )?;
            audit(
                tx,
                now_ms,
                Actor::System,
                "bank_link.ended",
                &link_id.to_string(),
                reason,
                serde_json::json!({ "status": status }),
            )
        })?;
        Ok(())
    }

    /// Debits or credits the bank account of an active link of `user_id`, under `key` (the
    /// bank keeps the answer, so the same key never moves money twice).
    pub fn bank_payment(
        &self,
        user_id: u128,
        link_id: uuid::Uuid,
        order: &PaymentOrder<'_>,
    ) -> Result<BankPayment, LinkError> {
        self.with_access(user_id, link_id, |client, token, dpop_key, _| {
            // Read the clock again: a token refresh may have taken a call's time already.
            let now_ms = self.now_ms();
            if now_ms >= order.not_after_ms {
                return Err(BankClientError::DeadlinePassed);
            }
            client.payment(order, token, dpop_key, now_ms)
        })
    }

    /// The bank's saved answer for `key` on that link, `None` if the bank never saw it.
    pub fn bank_payment_status(
        &self,
        user_id: u128,
        link_id: uuid::Uuid,
        kind: PaymentKind,
        key: &str,
    ) -> Result<Option<BankPayment>, LinkError> {
        self.with_access(user_id, link_id, |client, token, dpop_key, now_ms| {
            client.payment_by_key(kind, token, dpop_key, key, now_ms)
        })
    }

    /// The bank's saved answer for `key` at `bank_code`, asked with Kinko's client
    /// authentication: needs no live link, so it settles orders on ended links too. `None` if
    /// the bank never saw the key.
    pub fn bank_payment_lookup(
        &self,
        bank_code: &str,
        kind: PaymentKind,
        key: &str,
    ) -> Result<Option<BankPayment>, LinkError> {
        let client = self
            .banks
            .for_bank(bank_code)
            .ok_or(LinkError::BankUnavailable)?;
        client
            .payment_by_client(kind, key, self.now_ms())
            .map_err(bank_failure_kept)
    }
}
