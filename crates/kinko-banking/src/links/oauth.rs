//! Linking by OAuth: the pushed authorization request, the code exchange and the holder match.

use super::*;

impl LinkService {
    /// Starts a link: checks the wallet and the bank's switches, pushes the authorization
    /// request, and answers where to send the browser.
    pub fn start_link(
        &self,
        session: &SessionInfo,
        bank_code: &str,
    ) -> Result<StartedLink, LinkError> {
        self.gate(session)?;
        let code = BankCode::parse(bank_code).map_err(|_| LinkError::BankUnknown)?;
        let database = self.identity.database();
        let now_ms = self.now_ms();
        let policy = database.transaction(|tx: &mut dyn Tx| {
            let started = tx
                .query_one(
                    "SELECT COUNT(*) FROM banking_link_attempts WHERE user_id = $1 AND created_at > $2",
                    &[Value::Uuid(session.user_id), (now_ms - 3_600_000).into()],
                )?
                .int(0)?;
            if started >= ATTEMPTS_PER_HOUR_MAX {
                return Err(LinkError::RateLimited {
                    retry_after_ms: 3_600_000,
                });
            }
            Ok(registry::policy(tx, &code)?)
        })?;
        if !policy.linking_enabled {
            return Err(LinkError::LinkingDisabled);
        }
        let client = self
            .banks
            .for_bank(code.as_str())
            .ok_or(LinkError::BankUnavailable)?;
        let state = SecretString::from(random::token().map_err(internal)?);
        let verifier = SecretString::from(random::token().map_err(internal)?);
        let dpop_key = jws::generate_key().map_err(internal)?;
        let authorization_url = client
            .push_authorization(
                &PushRequest {
                    redirect_uri: &self.redirect_uri,
                    scope: LINK_SCOPE,
                    state: &state,
                    code_verifier: &verifier,
                    bank_code: code.as_str(),
                },
                now_ms,
            )
            .map_err(|error| match bank_failure(error) {
                LinkError::LinkFailed => LinkError::BankUnavailable,
                other => other,
            })?;
        let state_hash = random::stored_hash(state.expose_secret());
        let associated = format!("bank_link_attempt:{state_hash}");
        let sealed_verifier = self.seal(verifier.expose_secret().as_bytes(), &associated)?;
        let sealed_key = self.seal(&dpop_key.to_bytes(), &associated)?;
        database.transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "INSERT INTO banking_link_attempts (state_hash, user_id, bank_code, sealed_verifier,
                 sealed_dpop_key, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    state_hash.as_str().into(),
                    Value::Uuid(session.user_id),
                    code.as_str().into(),
                    Value::Bytes(sealed_verifier.clone()),
                    Value::Bytes(sealed_key.clone()),
                    now_ms.into(),
                    (now_ms + ATTEMPT_LIFETIME_MS).into(),
                ],
            )
        })?;
        Ok(StartedLink {
            authorization_url,
            expires_in_s: ATTEMPT_LIFETIME_MS / 1_000,
        })
    }

    /// Records a refused link attempt in the audit log (the caller gets the generic answer).
    pub(super) fn refuse(&self, user_id: u128, bank_code: &str, reason: &str) -> LinkError {
        let now_ms = self.now_ms();
        let outcome = self.identity.database().transaction(|tx: &mut dyn Tx| {
            audit(
                tx,
                now_ms,
                Actor::User(user_id),
                "bank_link.refused",
                bank_code,
                reason,
                serde_json::json!({ "bank_code": bank_code }),
            )
        });
        if let Err(error) = outcome {
            tracing::error!(error = %error, "cannot audit a refused link");
        }
        LinkError::LinkFailed
    }

    /// Ends a consent at the bank that Kinko will not use (holder mismatch, duplicate).
    pub(super) fn revoke_quietly(client: &BankClient, refresh_token: &SecretString, now_ms: i64) {
        if let Err(error) = client.revoke(refresh_token, now_ms) {
            tracing::warn!(error = %error, "cannot revoke an unused consent at the bank");
        }
    }

    /// Completes a link when the browser comes back from the bank with `code`, `state` and
    /// `iss`. The attempt is spent first, so a state works once whatever follows. Every answer
    /// leaves `LINK_ANSWER_TIME` after the request began, so the time does not tell a spent
    /// state from a refused code or a holder mismatch.
    pub fn complete_link(
        &self,
        session: &SessionInfo,
        state: &str,
        code: &str,
        iss: &str,
    ) -> Result<LinkView, LinkError> {
        let started = Instant::now();
        let outcome = self.complete_link_now(session, state, code, iss);
        if let Some(rest) = self.link_answer_time.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        outcome
    }

    pub(super) fn complete_link_now(
        &self,
        session: &SessionInfo,
        state: &str,
        code: &str,
        iss: &str,
    ) -> Result<LinkView, LinkError> {
        if state.is_empty() || state.len() > 512 || code.is_empty() || code.len() > 512 {
            return Err(LinkError::Input("state and code are required"));
        }
        let now_ms = self.now_ms();
        let state_hash = random::stored_hash(state);
        let attempt = self.identity.database().transaction(|tx: &mut dyn Tx| {
            let sql = format!(
                "SELECT user_id, bank_code, sealed_verifier, sealed_dpop_key, expires_at, used_at
                 FROM banking_link_attempts WHERE state_hash = $1{}",
                tx.for_update()
            );
            let Some(row) = tx.query_opt(&sql, &[state_hash.as_str().into()])? else {
                return Ok(None);
            };
            if row.uuid(0)? != session.user_id || row.opt_int(5)?.is_some() || row.int(4)? <= now_ms
            {
                return Ok(None);
            }
            tx.execute(
                "UPDATE banking_link_attempts SET used_at = $2 WHERE state_hash = $1",
                &[state_hash.as_str().into(), now_ms.into()],
            )?;
            Ok::<_, StoreError>(Some((row.text(1)?, row.bytes(2)?, row.bytes(3)?)))
        })?;
        let Some((bank_code, sealed_verifier, sealed_key)) = attempt else {
            return Err(self.refuse(session.user_id, "", "attempt_invalid"));
        };
        let user_id = session.user_id;
        let client = self
            .banks
            .for_bank(&bank_code)
            .ok_or(LinkError::BankUnavailable)?;
        // RFC 9207: the answer must come from the bank the request went to (mix-up defence).
        if iss != client.issuer() {
            return Err(self.refuse(user_id, &bank_code, "issuer_mismatch"));
        }
        let code_parsed = BankCode::parse(&bank_code).map_err(|_| LinkError::BankUnknown)?;
        let policy = self
            .identity
            .database()
            .transaction(|tx: &mut dyn Tx| registry::policy(tx, &code_parsed))?;
        if !policy.linking_enabled {
            return Err(LinkError::LinkingDisabled);
        }
        let associated = format!("bank_link_attempt:{state_hash}");
        let verifier = SecretString::from(
            String::from_utf8(self.open(&sealed_verifier, &associated)?).map_err(internal)?,
        );
        let dpop_key = self.open_key(&sealed_key, &associated)?;
        let tokens =
            match client.exchange_code(code, &self.redirect_uri, &verifier, &dpop_key, now_ms) {
                Ok(tokens) => tokens,
                Err(BankClientError::Transport(_)) => return Err(LinkError::BankUnavailable),
                Err(error) => {
                    tracing::info!(error = %error, "the bank refused the code");
                    return Err(self.refuse(user_id, &bank_code, "code_refused"));
                }
            };
        let identity = self
            .identity
            .database()
            .transaction(|tx: &mut dyn Tx| kinko_identity::kyc::current_identity(tx, user_id))?;
        let Some(identity) = identity else {
            Self::revoke_quietly(&client, &tokens.refresh_token, now_ms);
            return Err(self.refuse(user_id, &bank_code, "kyc_missing"));
        };
        let matched = client.holder_match(
            &tokens.access_token,
            &dpop_key,
            &identity.kana_name,
            &identity.birth_date,
            now_ms,
        );
        match matched {
            Ok(true) => {}
            Ok(false) => {
                Self::revoke_quietly(&client, &tokens.refresh_token, now_ms);
                return Err(self.refuse(user_id, &bank_code, "holder_mismatch"));
            }
            Err(error) => {
                Self::revoke_quietly(&client, &tokens.refresh_token, now_ms);
                return Err(bank_failure(error));
            }
        }
        let link_id = uuid::Uuid::now_v7();
        let associated = format!("bank_link:{link_id}");
        let sealed_refresh =
            self.seal(tokens.refresh_token.expose_secret().as_bytes(), &associated)?;
        let sealed_key = self.seal(&dpop_key.to_bytes(), &associated)?;
        let outcome = self.identity.database().transaction(|tx: &mut dyn Tx| {
            let existing = active_link_on(tx, &bank_code, &tokens.account_ref)?;
            if let Some(owner) = existing {
                if owner == user_id {
                    return Ok(Err("already_linked_here"));
                }
                // One wallet per bank account (D4): refused; the linked wallet's owner is told.
                tell_user(
                    tx,
                    now_ms,
                    owner,
                    "bank_link_attempt_elsewhere",
                    "連携済みの銀行口座に別のウォレットから連携の試みがありました / Someone tried to link your bank account to another wallet",
                    &format!(
                        "あなたのウォレットに連携済みの口座（{} {}）を、別のウォレットに連携しようとする試みがあり、拒否しました。心当たりがない場合は銀行とサポートにご連絡ください。\n\nSomeone tried to link your bank account ({} {}), which is linked to your wallet, to another wallet. We refused. If this was not you, contact your bank and our support.",
                        bank_code, tokens.account_label, bank_code, tokens.account_label
                    ),
                )?;
                audit(
                    tx,
                    now_ms,
                    Actor::User(user_id),
                    "bank_link.refused",
                    &bank_code,
                    "account_linked_to_another_wallet",
                    serde_json::json!({ "bank_code": bank_code, "linked_wallet": uuid::Uuid::from_u128(owner) }),
                )?;
                return Ok(Err("account_linked_to_another_wallet"));
            }
            tx.execute(
                "INSERT INTO banking_links (id, user_id, bank_code, account_ref, account_label,
                 method, bank_link_id, status, sealed_refresh_token, sealed_dpop_key, created_at)
                 VALUES ($1, $2, $3, $4, $5, 'oauth', $6, 'active', $7, $8, $9)",
                &[
                    Value::Uuid(link_id.as_u128()),
                    Value::Uuid(user_id),
                    bank_code.as_str().into(),
                    tokens.account_ref.as_str().into(),
                    tokens.account_label.as_str().into(),
                    tokens.link_id.as_str().into(),
                    Value::Bytes(sealed_refresh.clone()),
                    Value::Bytes(sealed_key.clone()),
                    now_ms.into(),
                ],
            )?;
            tell_user(
                tx,
                now_ms,
                user_id,
                "bank_link_created",
                "銀行口座を連携しました / Bank account linked",
                &format!(
                    "銀行口座（{} {}）をウォレットに連携しました。心当たりがない場合はすぐに連携を解除し、サポートにご連絡ください。\n\nYour bank account ({} {}) is now linked to your wallet. If this was not you, unlink it at once and contact our support.",
                    bank_code, tokens.account_label, bank_code, tokens.account_label
                ),
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user_id),
                "bank_link.created",
                &link_id.to_string(),
                "",
                serde_json::json!({ "bank_code": bank_code, "method": "oauth" }),
            )?;
            Ok::<_, LinkError>(Ok(()))
        })?;
        if let Err(reason) = outcome {
            Self::revoke_quietly(&client, &tokens.refresh_token, now_ms);
            if reason == "already_linked_here" {
                return Err(self.refuse(user_id, &bank_code, reason));
            }
            return Err(LinkError::LinkFailed);
        }
        // The first access token is good for minutes: a charge right after linking needs no
        // refresh.
        if let Ok(mut slot) = self.access_slot(link_id).lock() {
            *slot = Some(CachedAccess {
                token: tokens.access_token.clone(),
                usable_until_ms: now_ms + ACCESS_USE_MS,
            });
        }
        Ok(LinkView {
            id: link_id,
            bank_code,
            account_label: tokens.account_label,
            method: "oauth".to_owned(),
            status: "active".to_owned(),
            created_at_ms: now_ms,
            ended_at_ms: None,
        })
    }
}
