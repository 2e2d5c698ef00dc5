//! Honest users during the drill: a newcomer signs up, verifies, enrols an authenticator,
//! passes eKYC, links their own account at the bank's pages and charges it (the demo's own
//! walkthrough, from the drill's own address), then pays the demo merchant and sends money to
//! the demo's ready wallet. Every refusal is one honest action blocked.

use serde_json::json;

use super::Target;
use super::client::Actor;
use super::target::HONEST;

pub struct Outcome {
    pub actions: u32,
    pub blocked: u32,
    pub held: u32,
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn failed(why: &str) -> Self {
        Self {
            actions: 1,
            blocked: 1,
            held: 0,
            notes: vec![why.to_owned()],
        }
    }

    /// A refusal by the documented hold on young money (THREATS 24): not a wrong block, but
    /// reported, since an honest newcomer meets it.
    fn held(&mut self, what: &str, detail: String) {
        self.actions = self.actions.saturating_add(1);
        self.held = self.held.saturating_add(1);
        self.notes.push(format!(
            "{what} (held by policy, not counted as blocked): {detail}"
        ));
    }

    fn record(&mut self, what: &str, allowed: bool, detail: String) {
        self.actions = self.actions.saturating_add(1);
        if !allowed {
            self.blocked = self.blocked.saturating_add(1);
            self.notes.push(format!("{what}: {detail}"));
        }
    }
}

pub fn act(target: &Target, run: &str) -> Outcome {
    let mut outcome = Outcome {
        actions: 0,
        blocked: 0,
        held: 0,
        notes: Vec::new(),
    };
    if let Err(error) = act_inner(target, run, &mut outcome) {
        outcome.record("the drill", false, format!("{error:#}"));
    }
    outcome
}

fn act_inner(target: &Target, run: &str, outcome: &mut Outcome) -> anyhow::Result<()> {
    let customer = target.customer(HONEST)?;
    let account = customer
        .accounts
        .first()
        .ok_or_else(|| anyhow::anyhow!("the honest user has no account"))?;
    let mut site = crate::walkthrough::Site::new(&target.kinko);
    let honest_run = format!("h{run}");
    let ready = match crate::walkthrough::ready_wallet(
        &mut site,
        &target.bank,
        customer,
        &account.bank_code,
        &honest_run,
    ) {
        Ok(ready) => ready,
        Err(error) => {
            outcome.record(
                "sign-up, eKYC, link and first charge",
                false,
                format!("{error:#}"),
            );
            return Ok(());
        }
    };
    outcome.record("sign-up, eKYC, link and first charge", true, String::new());
    // The honest user's own client, from the drill's own address (no forwarded header).
    let mut actor = Actor::new(&target.kinko, None);
    let signed_in = actor.call(
        "POST",
        "/api/v1/sessions",
        Some(json!({ "email": ready.email, "password": crate::walkthrough::DEMO_PASSWORD })),
        None,
        None,
    )?;
    outcome.record(
        "sign-in",
        signed_in.status == 201,
        format!("{} {}", signed_in.status, signed_in.code()),
    );
    let mut token = signed_in.text("token");
    if signed_in.body["second_factor_required"] == true {
        for step in [0u64, 1] {
            let passed = actor.call(
                "POST",
                "/api/v1/sessions/current/second-factor",
                Some(json!({ "totp_code": crate::walkthrough::totp_code(&ready.secret_base32, step)? })),
                Some(&token),
                None,
            )?;
            if passed.status == 200 {
                token = passed.text("token");
                break;
            }
        }
    }
    let paid = actor.call(
        "POST",
        "/api/v1/payments",
        Some(json!({ "qr": target.merchant_qr, "amount_yen": 480 })),
        Some(&token),
        Some(&format!("drill-{run}-honest-pay")),
    )?;
    outcome.record(
        "pay the café",
        paid.status == 201 && paid.body["status"] == "posted",
        format!("{} {} {}", paid.status, paid.code(), paid.body["reason"]),
    );
    let sent = actor.call(
        "POST",
        "/api/v1/transfers",
        Some(json!({ "to_handle": target.ready_handle, "amount_yen": 300, "note": "lunch" })),
        Some(&token),
        Some(&format!("drill-{run}-honest-send")),
    )?;
    let title = sent.body["title"].as_str().unwrap_or_default();
    if sent.code() == "MONEY_RISK_DECLINED" && title.contains("72 hours") {
        outcome.held("send to a friend", title.to_owned());
    } else {
        outcome.record(
            "send to a friend",
            sent.status == 201 && sent.body["status"] == "posted",
            format!("{} {}", sent.status, sent.body),
        );
    }
    Ok(())
}
