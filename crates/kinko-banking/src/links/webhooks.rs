//! The bank's signed webhooks: revocations and fraud reports end the link at once.

use super::*;

impl LinkService {
    /// A signed event from a bank (`docs/BANK-PROTOCOL.md` §9): checked against the bank's
    /// published key, applied once.
    pub fn handle_webhook(&self, body: &str) -> Result<WebhookOutcome, LinkError> {
        let now_ms = self.now_ms();
        let header = jws::unverified_header(body).map_err(|_| LinkError::WebhookInvalid)?;
        let claims = jws::unverified_claims(body).map_err(|_| LinkError::WebhookInvalid)?;
        let text = |map: &serde_json::Map<String, serde_json::Value>, name: &str| {
            map.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        if text(&header, "typ").as_deref() != Some("bank-event+jwt") {
            return Err(LinkError::WebhookInvalid);
        }
        let kid = text(&header, "kid").ok_or(LinkError::WebhookInvalid)?;
        let issuer = text(&claims, "iss").ok_or(LinkError::WebhookInvalid)?;
        let (client, codes) = self
            .banks
            .for_issuer(&issuer)
            .ok_or(LinkError::WebhookInvalid)?;
        let jwk = client
            .published_key(&kid)
            .map_err(|_| LinkError::BankUnavailable)?
            .ok_or(LinkError::WebhookInvalid)?;
        // Only now, with the bank's own published key, is anything of the event believed.
        let verified = jws::verify_with_jwk(body, &jwk).map_err(|_| LinkError::WebhookInvalid)?;
        let claims = verified.claims;
        if text(&claims, "aud").as_deref() != Some(client.client_id()) {
            return Err(LinkError::WebhookInvalid);
        }
        let issued_at_ms = claims
            .get("iat")
            .and_then(serde_json::Value::as_i64)
            .ok_or(LinkError::WebhookInvalid)?
            .saturating_mul(1_000);
        if (now_ms - issued_at_ms).abs() > 5 * 60_000 {
            return Err(LinkError::WebhookInvalid);
        }
        let jti = text(&claims, "jti").ok_or(LinkError::WebhookInvalid)?;
        let event = text(&claims, "event").ok_or(LinkError::WebhookInvalid)?;
        if event != "link.revoked" && event != "fraud.reported" {
            return Err(LinkError::WebhookInvalid);
        }
        let bank_link_id = text(&claims, "link_id").ok_or(LinkError::WebhookInvalid)?;
        let reason = text(&claims, "reason").unwrap_or_default();
        let payment_key = text(&claims, "payment_key");
        if jti.len() > 200 || bank_link_id.len() > 200 || reason.len() > 100 {
            return Err(LinkError::WebhookInvalid);
        }
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            let seen = tx.query_opt(
                "SELECT jti FROM banking_webhook_events WHERE jti = $1",
                &[jti.as_str().into()],
            )?;
            if seen.is_some() {
                return Ok(WebhookOutcome::AlreadyHandled);
            }
            tx.execute(
                "INSERT INTO banking_webhook_events (jti, issuer, event, received_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    jti.as_str().into(),
                    issuer.as_str().into(),
                    event.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            let sql = format!(
                "SELECT id, user_id, bank_code, status, account_label FROM banking_links
                 WHERE bank_link_id = $1{}",
                tx.for_update()
            );
            let rows = tx.query(&sql, &[bank_link_id.as_str().into()])?;
            // A link id of another bank than the sender's is not the sender's to cut.
            let Some(row) = rows
                .iter()
                .find(|row| row.text(2).is_ok_and(|code| codes.contains(&code)))
            else {
                tracing::warn!(event, "a bank event names no link of ours");
                return Ok(WebhookOutcome::Applied);
            };
            let link_id = uuid::Uuid::from_u128(row.uuid(0)?);
            let user_id = row.uuid(1)?;
            let bank_code = row.text(2)?;
            let active = row.text(3)? == "active";
            let label = row.text(4)?;
            let fraud = event == "fraud.reported";
            if active {
                tx.execute(
                    "UPDATE banking_links SET status = $2, ended_at = $3, end_reason = $4,
                     sealed_refresh_token = NULL WHERE id = $1",
                    &[
                        Value::Uuid(link_id.as_u128()),
                        (if fraud { "cut_for_fraud" } else { "revoked_by_bank" }).into(),
                        now_ms.into(),
                        reason.as_str().into(),
                    ],
                )?;
            }
            if fraud {
                tx.execute(
                    "UPDATE identity_users SET outgoing_frozen_until = $2 WHERE id = $1",
                    &[Value::Uuid(user_id), FROZEN_UNTIL_REVIEWED.into()],
                )?;
                insert_alert(
                    tx,
                    now_ms,
                    &bank_code,
                    "fraud_reported",
                    Some(user_id),
                    Some(link_id),
                    serde_json::json!({
                        "reason": reason,
                        "payment_key": payment_key,
                        "bank_event": jti,
                    }),
                )?;
                // One case per reported link: a report delivered again, or again under a
                // new event id, finds the first.
                kinko_cases::open_case(
                    tx,
                    &kinko_cases::NewCase {
                        kind: kinko_cases::CaseKind::BankFraudReport,
                        bank_code: Some(bank_code.clone()),
                        user_id: Some(uuid::Uuid::from_u128(user_id)),
                        subject: format!("bank_link:{link_id}"),
                        summary: format!(
                            "Bank {bank_code} reports the holder of {label} did not authorise this link or debit"
                        ),
                        amount_yen: None,
                        dedupe_key: format!("bank_fraud_report:{link_id}"),
                    },
                    now_ms,
                )?;
                tell_user(
                    tx,
                    now_ms,
                    user_id,
                    "bank_fraud_reported",
                    "銀行口座の連携を停止し、出金を止めました / We cut a bank link and paused outgoing money",
                    &format!(
                        "銀行から、口座（{bank_code} {label}）の名義人がこの連携または引き落としを承認していないとの報告がありました。連携を解除し、ウォレットからの出金を停止しました。担当者が確認します。\n\nThe bank reports that the holder of the account ({bank_code} {label}) did not authorise this link or debit. We cut the link and paused outgoing money from your wallet while our staff review it."
                    ),
                )?;
            } else if active {
                tell_user(
                    tx,
                    now_ms,
                    user_id,
                    "bank_link_ended",
                    "銀行口座の連携が銀行側で解除されました / Your bank ended a link",
                    &format!(
                        "銀行口座（{bank_code} {label}）の連携が銀行側で解除されました。\n\nThe link to your bank account ({bank_code} {label}) was ended at your bank."
                    ),
                )?;
            }
            audit(
                tx,
                now_ms,
                Actor::Bank(bank_code.clone()),
                if fraud {
                    "bank_link.fraud_reported"
                } else {
                    "bank_link.revoked_by_bank"
                },
                &link_id.to_string(),
                &reason,
                serde_json::json!({ "bank_event": jti, "payment_key": payment_key, "was_active": active }),
            )?;
            Ok::<_, LinkError>(WebhookOutcome::Applied)
        })
    }
}
