//! The legacy method (account number + cash-card PIN), fenced in: see the module doc of
//! [`super`].

use super::*;

impl LinkService {
    /// The legacy method (account number + cash-card PIN), fenced in. See the module doc.
    pub fn legacy_link(
        &self,
        session: &SessionInfo,
        source: &Source,
        request: &LegacyLinkRequest,
    ) -> Result<LinkView, LinkError> {
        let started = Instant::now();
        self.gate(session)?;
        let code = BankCode::parse(&request.bank_code).map_err(|_| LinkError::BankUnknown)?;
        check_legacy_fields(request)?;
        let user_id = session.user_id;
        let now_ms = self.now_ms();
        let secret_box = self.identity.secret_box();
        let account_key = secret_box.keyed_hash(
            "kinko.legacy.account",
            format!(
                "{}|{}|{}|{}",
                code.as_str(),
                request.branch,
                request.account_type,
                request.account_number
            )
            .as_bytes(),
        );
        let pin_key = secret_box.keyed_hash(
            "kinko.legacy.pin",
            format!("{}|{}", code.as_str(), request.pin.expose_secret()).as_bytes(),
        );
        let device = source
            .device_token
            .as_deref()
            .map_or_else(String::new, |token| {
                secret_box.keyed_hash("kinko.legacy.device", token.as_bytes())
            });
        let attempt_id = uuid::Uuid::now_v7();
        let identity = self.identity.database().transaction(|tx: &mut dyn Tx| {
            let policy = registry::policy(tx, &code)?;
            if !policy.legacy_enabled || !policy.linking_enabled {
                return Err(LinkError::LegacyDisabled);
            }
            let blocked = tx.query_opt(
                "SELECT user_id FROM banking_legacy_blocks WHERE user_id = $1",
                &[Value::Uuid(user_id)],
            )?;
            if blocked.is_some() {
                return Err(LinkError::LegacyBlocked);
            }
            // The cap per source: distinct accounts tried in the window, by IP, device, wallet.
            let since = now_ms - LEGACY_SOURCE_WINDOW_MS;
            let mut sources: Vec<(&str, Value)> = vec![
                ("user_id", Value::Uuid(user_id)),
                ("ip", source.ip.as_str().into()),
            ];
            if !device.is_empty() {
                sources.push(("device", device.as_str().into()));
            }
            for (column, value) in sources {
                let tried = tx.query_one(
                    &format!(
                        "SELECT COUNT(DISTINCT account_key),
                             SUM(CASE WHEN account_key = $3 THEN 1 ELSE 0 END)
                             FROM banking_legacy_attempts WHERE {column} = $1 AND at > $2"
                    ),
                    &[value, since.into(), account_key.as_str().into()],
                )?;
                let distinct = tried.int(0)?;
                let this_one = tried.opt_int(1)?.unwrap_or(0);
                if this_one == 0 && distinct >= LEGACY_SOURCE_ACCOUNTS_MAX {
                    return Err(LinkError::RateLimited {
                        retry_after_ms: LEGACY_SOURCE_WINDOW_MS,
                    });
                }
            }
            // The attempt counts before the bank is asked, whatever happens next.
            tx.execute(
                "INSERT INTO banking_legacy_attempts (id, bank_code, account_key, pin_key, user_id,
                 ip, device, matched, at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
                &[
                    Value::Uuid(attempt_id.as_u128()),
                    code.as_str().into(),
                    account_key.as_str().into(),
                    pin_key.as_str().into(),
                    Value::Uuid(user_id),
                    source.ip.as_str().into(),
                    device.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            Ok(kinko_identity::kyc::current_identity(tx, user_id)?)
        })?;
        let outcome = self.legacy_ask_bank(
            user_id, &code, request, identity, &pin_key, attempt_id, now_ms,
        );
        // Every answer past this point leaves at the same time after the request began.
        if let Some(rest) = self.legacy_answer_time.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn legacy_ask_bank(
        &self,
        user_id: u128,
        code: &BankCode,
        request: &LegacyLinkRequest,
        identity: Option<kinko_identity::kyc::VerifiedIdentity>,
        pin_key: &str,
        attempt_id: uuid::Uuid,
        now_ms: i64,
    ) -> Result<LinkView, LinkError> {
        let client = self
            .banks
            .for_bank(code.as_str())
            .ok_or(LinkError::BankUnavailable)?;
        // The KYC'd name and birth date go to the bank, never typed ones: a stranger's leaked
        // data cannot be offered for a wallet proven to be someone else's (D1).
        let account_ref = match &identity {
            None => None,
            Some(identity) => client
                .legacy_verify(
                    &LegacyVerify {
                        bank_code: code.as_str(),
                        branch: &request.branch,
                        account_type: &request.account_type,
                        account_number: &request.account_number,
                        pin: &request.pin,
                        kana_name: &identity.kana_name,
                        birth_date: &identity.birth_date,
                    },
                    now_ms,
                )
                .map_err(bank_failure)?,
        };
        let label = format!(
            "{} {} ****{}",
            if request.account_type == "toza" {
                "当座"
            } else {
                "普通"
            },
            request.branch,
            &request.account_number[request.account_number.len().saturating_sub(3)..]
        );
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            // The bank names a matched account by the same pairwise reference an OAuth consent
            // gives: one account is one key, whichever method tied it to a wallet.
            let Some(account_ref) = account_ref.as_deref() else {
                self.legacy_failed(tx, user_id, code, pin_key, now_ms)?;
                return Ok(Err(LinkError::LinkFailed));
            };
            tx.execute(
                "UPDATE banking_legacy_attempts SET matched = 1 WHERE id = $1",
                &[Value::Uuid(attempt_id.as_u128())],
            )?;
            if let Some(owner) = active_link_on(tx, code.as_str(), account_ref)? {
                if owner != user_id {
                    tell_user(
                        tx,
                        now_ms,
                        owner,
                        "bank_link_attempt_elsewhere",
                        "連携済みの銀行口座に別のウォレットから連携の試みがありました / Someone tried to link your bank account to another wallet",
                        &format!(
                            "あなたのウォレットに連携済みの口座（{} {label}）を、別のウォレットに連携しようとする試みがあり、拒否しました。\n\nSomeone tried to link your bank account ({} {label}) to another wallet. We refused.",
                            code.as_str(),
                            code.as_str()
                        ),
                    )?;
                }
                audit(
                    tx,
                    now_ms,
                    Actor::User(user_id),
                    "bank_link.refused",
                    code.as_str(),
                    "account_already_linked",
                    serde_json::json!({ "bank_code": code.as_str(), "method": "legacy" }),
                )?;
                return Ok(Err(LinkError::LinkFailed));
            }
            let link_id = uuid::Uuid::now_v7();
            tx.execute(
                "INSERT INTO banking_links (id, user_id, bank_code, account_ref, account_label,
                 method, status, created_at) VALUES ($1, $2, $3, $4, $5, 'legacy', 'active', $6)",
                &[
                    Value::Uuid(link_id.as_u128()),
                    Value::Uuid(user_id),
                    code.as_str().into(),
                    account_ref.into(),
                    label.as_str().into(),
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
                    "銀行口座（{} {label}）を暗証番号方式でウォレットに連携しました。心当たりがない場合はすぐに連携を解除してください。\n\nYour bank account ({} {label}) is now linked to your wallet with the PIN method. If this was not you, unlink it at once.",
                    code.as_str(),
                    code.as_str()
                ),
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user_id),
                "bank_link.created",
                &link_id.to_string(),
                "",
                serde_json::json!({ "bank_code": code.as_str(), "method": "legacy" }),
            )?;
            Ok::<_, LinkError>(Ok(LinkView {
                id: link_id,
                bank_code: code.as_str().to_owned(),
                account_label: label.clone(),
                method: "legacy".to_owned(),
                status: STATUS_VERIFIED.to_owned(),
                created_at_ms: now_ms,
                ended_at_ms: None,
            }))
        })?
    }

    /// After a legacy failure: the wallet rule and the bank-wide detector.
    pub(super) fn legacy_failed(
        &self,
        tx: &mut dyn Tx,
        user_id: u128,
        code: &BankCode,
        pin_key: &str,
        now_ms: i64,
    ) -> Result<(), LinkError> {
        audit(
            tx,
            now_ms,
            Actor::User(user_id),
            "bank_link.refused",
            code.as_str(),
            "legacy_no_match",
            serde_json::json!({ "bank_code": code.as_str(), "method": "legacy" }),
        )?;
        let failed_accounts = tx
            .query_one(
                "SELECT COUNT(DISTINCT account_key) FROM banking_legacy_attempts
                 WHERE user_id = $1 AND matched = 0",
                &[Value::Uuid(user_id)],
            )?
            .int(0)?;
        if failed_accounts >= LEGACY_WALLET_FAILED_ACCOUNTS_MAX {
            let already = tx.query_opt(
                "SELECT user_id FROM banking_legacy_blocks WHERE user_id = $1",
                &[Value::Uuid(user_id)],
            )?;
            if already.is_none() {
                tx.execute(
                    "INSERT INTO banking_legacy_blocks (user_id, blocked_at, reason)
                     VALUES ($1, $2, 'failed_on_distinct_accounts')",
                    &[Value::Uuid(user_id), now_ms.into()],
                )?;
                insert_alert(
                    tx,
                    now_ms,
                    code.as_str(),
                    "legacy_wallet_blocked",
                    Some(user_id),
                    None,
                    serde_json::json!({ "failed_accounts": failed_accounts }),
                )?;
                audit(
                    tx,
                    now_ms,
                    Actor::System,
                    "bank_link.legacy_wallet_blocked",
                    &uuid::Uuid::from_u128(user_id).to_string(),
                    "failed_on_distinct_accounts",
                    serde_json::json!({ "failed_accounts": failed_accounts }),
                )?;
            }
        }
        // One PIN value on many accounts: the reverse brute force of 2020.
        let sprayed = tx
            .query_one(
                "SELECT COUNT(DISTINCT account_key) FROM banking_legacy_attempts
                 WHERE bank_code = $1 AND pin_key = $2 AND matched = 0 AND at > $3",
                &[
                    code.as_str().into(),
                    pin_key.into(),
                    (now_ms - SPRAY_WINDOW_MS).into(),
                ],
            )?
            .int(0)?;
        let recent_failures = tx
            .query_one(
                "SELECT COUNT(*) FROM banking_legacy_attempts
                 WHERE bank_code = $1 AND matched = 0 AND at > $2",
                &[code.as_str().into(), (now_ms - BURST_WINDOW_MS).into()],
            )?
            .int(0)?;
        // The bank's usual rate: failures per window over the previous day.
        let day_failures = tx
            .query_one(
                "SELECT COUNT(*) FROM banking_legacy_attempts
                 WHERE bank_code = $1 AND matched = 0 AND at > $2 AND at <= $3",
                &[
                    code.as_str().into(),
                    (now_ms - 24 * 3_600_000).into(),
                    (now_ms - BURST_WINDOW_MS).into(),
                ],
            )?
            .int(0)?;
        let usual = day_failures / (24 * 3_600_000 / BURST_WINDOW_MS);
        let rule = if sprayed >= SPRAY_ACCOUNTS_PER_PIN_MAX {
            Some((
                "one_pin_many_accounts",
                serde_json::json!({ "accounts": sprayed }),
            ))
        } else if recent_failures >= BURST_FAILURES_MIN
            && recent_failures > usual.saturating_mul(BURST_FACTOR)
        {
            Some((
                "failure_rate_jump",
                serde_json::json!({ "failures": recent_failures, "usual": usual }),
            ))
        } else {
            None
        };
        if let Some((rule, evidence)) = rule
            && registry::switch_off_legacy(tx, now_ms, code, rule, evidence.clone())?
        {
            tracing::warn!(
                bank = code.as_str(),
                rule,
                "legacy method switched off at a bank"
            );
            insert_alert(
                tx,
                now_ms,
                code.as_str(),
                "legacy_switched_off",
                None,
                None,
                serde_json::json!({ "rule": rule, "evidence": evidence }),
            )?;
        }
        Ok(())
    }
}

/// An analyst (or admin) lifts a wallet's legacy-method block after reviewing it, with a
/// reason; audited. Answers whether there was a block to lift.
pub fn lift_legacy_block(
    tx: &mut dyn Tx,
    now_ms: i64,
    by: &kinko_identity::operator::Operator,
    user_id: uuid::Uuid,
    reason: &str,
) -> Result<bool, kinko_identity::operator::OperatorError> {
    by.require(kinko_identity::operator::Permission::ReviewCases)?;
    kinko_identity::operator::require_reason(reason)?;
    let lifted = tx.execute(
        "DELETE FROM banking_legacy_blocks WHERE user_id = $1",
        &[Value::Uuid(user_id.as_u128())],
    )?;
    if lifted == 0 {
        return Ok(false);
    }
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::Operator(by.id.as_u128()),
            action: "bank_link.legacy_block_lifted",
            subject_kind: "user",
            subject_id: &user_id.to_string(),
            reason: reason.trim(),
            detail: serde_json::json!({}),
        },
    )?;
    Ok(true)
}

/// The legacy form's shape: checked before anything is counted or asked, and saying nothing
/// about any account.
fn check_legacy_fields(request: &LegacyLinkRequest) -> Result<(), LinkError> {
    let digits = |text: &str, length: usize| {
        text.len() == length && text.bytes().all(|byte| byte.is_ascii_digit())
    };
    if !digits(&request.branch, 3) {
        return Err(LinkError::Input("branch must be 3 digits"));
    }
    if request.account_type != "futsu" && request.account_type != "toza" {
        return Err(LinkError::Input("account_type must be futsu or toza"));
    }
    if !digits(&request.account_number, 7) {
        return Err(LinkError::Input("account_number must be 7 digits"));
    }
    if !digits(request.pin.expose_secret(), 4) {
        return Err(LinkError::Input("pin must be 4 digits"));
    }
    Ok(())
}
