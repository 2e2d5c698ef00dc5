//! The drill's HTTP side: one actor per source address (`X-Forwarded-For`, honoured only when
//! the target trusts the drill as its proxy), throwaway wallets made through the public API
//! with the sandbox outbox's codes, and the sandbox bank's balance sheet.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use crate::walkthrough::{Site, code_sent, totp_code};

/// A client with its own cookies and, when set, its own source address.
pub struct Actor {
    site: Site,
    address: String,
    source: Option<String>,
}

/// An API answer: status and JSON body (`Null` when empty or not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    pub fn text(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_owned()
    }
}

impl Actor {
    pub fn new(address: &str, source: Option<String>) -> Self {
        Self {
            site: Site::new(address),
            address: address.to_owned(),
            source,
        }
    }

    /// A fresh actor on the same site from the same source, without cookies.
    pub fn fresh(&self) -> Self {
        Self::new(&self.address, self.source.clone())
    }

    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers = Vec::new();
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer.as_str()));
        }
        if let Some(key) = idempotency_key {
            headers.push(("Idempotency-Key", key));
        }
        if let Some(source) = &self.source {
            headers.push(("X-Forwarded-For", source.as_str()));
        }
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let reply = self
            .site
            .send(method, path, "application/json", &body, &headers)?;
        let body = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        Ok(Answer {
            status: reply.status,
            body,
        })
    }

    pub fn site(&mut self) -> &mut Site {
        &mut self.site
    }
}

/// A wallet the drill made (an attacker's throwaway or mule wallet).
pub struct Wallet {
    pub user_id: String,
    pub token: String,
    pub handle: String,
}

static WALLETS_MADE: AtomicU32 = AtomicU32::new(0);

/// A password no breach list holds.
pub fn password_for(run: &str) -> String {
    format!("Drill-{run}-correct-horse-battery")
}

/// Signs a wallet up through the API: both contacts verified from the sandbox outbox, an
/// authenticator enrolled, eKYC with `kyc_reference` when given, a handle. `Ok(Err(why))`
/// when Kinko refused a step (the drill counts it); `Err` when the drill itself failed.
pub fn sign_up(
    actor: &mut Actor,
    run: &str,
    tag: &str,
    kyc_reference: Option<&str>,
) -> anyhow::Result<Result<Wallet, String>> {
    let ordinal = WALLETS_MADE.fetch_add(1, Ordering::Relaxed);
    let email = format!("{tag}-{run}-{ordinal}@drill.kinko.example");
    let run_digits: u32 = run.bytes().fold(0u32, |sum, byte| {
        sum.wrapping_mul(31).wrapping_add(u32::from(byte))
    });
    // A different prefix per wallet (an attacker with SIMs from many ranges): the per-prefix
    // SMS limit is not what the attacks measure.
    let phone = format!("+8170{:04}{:04}", ordinal % 10_000, run_digits % 10_000);
    let password = password_for(run);
    let signed_up = actor.call(
        "POST",
        "/api/v1/signup",
        Some(json!({ "email": email, "password": password, "phone": phone })),
        None,
        None,
    )?;
    if signed_up.status != 202 {
        return Ok(Err(format!(
            "sign-up {} {}",
            signed_up.status,
            signed_up.code()
        )));
    }
    let user_id = signed_up.text("user_id");
    for (channel, destination, purpose) in [
        ("email", email.as_str(), "verify_email"),
        ("sms", phone.as_str(), "verify_phone"),
    ] {
        let code = code_sent(actor.site(), destination, purpose)?;
        let verified = actor.call(
            "POST",
            &format!("/api/v1/signup/{user_id}/verify"),
            Some(json!({ "channel": channel, "code": code })),
            None,
            None,
        )?;
        if verified.status != 200 {
            return Ok(Err(format!(
                "verify {} {}",
                verified.status,
                verified.code()
            )));
        }
    }
    let signed_in = actor.call(
        "POST",
        "/api/v1/sessions",
        Some(json!({ "email": email, "password": password })),
        None,
        None,
    )?;
    if signed_in.status != 201 {
        return Ok(Err(format!(
            "sign-in {} {}",
            signed_in.status,
            signed_in.code()
        )));
    }
    let token = signed_in.text("token");
    let enrolment = actor.call("POST", "/api/v1/me/totp", None, Some(&token), None)?;
    let totp_seed = enrolment.text("secret_base32");
    let confirmed = actor.call(
        "POST",
        "/api/v1/me/totp/confirm",
        Some(json!({ "code": totp_code(&totp_seed, 0)? })),
        Some(&token),
        None,
    )?;
    if confirmed.status != 200 {
        return Ok(Err(format!(
            "totp {} {}",
            confirmed.status,
            confirmed.code()
        )));
    }
    let token = confirmed.body["session"]["token"]
        .as_str()
        .context("no session after the second factor")?
        .to_owned();
    if let Some(reference) = kyc_reference {
        let kyc = actor.call(
            "POST",
            "/api/v1/me/kyc",
            Some(json!({ "document_reference": reference })),
            Some(&token),
            None,
        )?;
        if kyc.status != 200 || kyc.body["outcome"] != "verified" {
            return Ok(Err(format!("kyc {} {}", kyc.status, kyc.code())));
        }
    }
    let handle = format!("d{run}{ordinal}")
        .chars()
        .take(20)
        .collect::<String>();
    let handled = actor.call(
        "PUT",
        "/api/v1/me/handle",
        Some(json!({ "handle": handle })),
        Some(&token),
        None,
    )?;
    if handled.status != 200 {
        return Ok(Err(format!("handle {} {}", handled.status, handled.code())));
    }
    Ok(Ok(Wallet {
        user_id,
        token,
        handle,
    }))
}

/// A wallet's balance as its owner sees it (`GET /api/v1/wallet`).
pub fn wallet_balance(actor: &mut Actor, token: &str) -> anyhow::Result<i64> {
    let wallet = actor.call("GET", "/api/v1/wallet", None, Some(token), None)?;
    anyhow::ensure!(
        wallet.status == 200,
        "GET /api/v1/wallet answered {}",
        wallet.status
    );
    wallet.body["balance_yen"]
        .as_i64()
        .ok_or_else(|| anyhow!("no balance_yen in {}", wallet.body))
}

/// Every account's balance at the sandbox bank, keyed `bank-branch-number`.
pub fn bank_balances(bank_address: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut bank = Site::new(bank_address);
    let reply = bank.send("GET", "/sandbox/balances", "application/json", "", &[])?;
    anyhow::ensure!(
        reply.status == 200,
        "the sandbox bank's balances answered {} (is it a sandbox with GET /sandbox/balances?)",
        reply.status
    );
    let list: Vec<Value> = serde_json::from_str(&reply.body).context("the bank's balances")?;
    list.iter()
        .map(|account| {
            let key = format!(
                "{}-{}-{}",
                account["bank_code"].as_str().unwrap_or_default(),
                account["branch"].as_str().unwrap_or_default(),
                account["number"].as_str().unwrap_or_default()
            );
            let balance = account["balance_yen"]
                .as_i64()
                .ok_or_else(|| anyhow!("no balance in {account}"))?;
            Ok((key, balance))
        })
        .collect()
}

/// How much the listed accounts lost between two balance sheets (decreases only).
pub fn debited_yen(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    accounts: &[String],
) -> i64 {
    accounts
        .iter()
        .map(|key| {
            let was = before.get(key).copied().unwrap_or_default();
            let is = after.get(key).copied().unwrap_or(was);
            was.saturating_sub(is).max(0)
        })
        .fold(0i64, i64::saturating_add)
}
