//! Attacks on money (THREATS D5, D11, D14): 50 parallel charges just under the limit on a
//! mule's own new link, tampered merchant codes, and an insider who credits a wallet alone.
//! Yen lost is read from balances: the mule's bank account (what it paid beyond the new
//! link's daily limit), the attacker's wallet (what an operator credited it), and the payments
//! a tampered code made.

use serde_json::json;

use super::client::{self, Actor};
use super::target::{MULE, Mule};
use super::{AttackReport, Tally, Target};
use crate::walkthrough::{approve_at_bank, query_param, totp_code};

/// THREATS requirement 12: a new link's daily limit (the registry's default).
pub const NEW_LINK_DAILY_MAX_YEN: i64 = 30_000;
const PARALLEL_CHARGES: usize = 50;
/// Just under the limit once it is reached: three fit, the fourth must not.
const CHARGE_YEN: i64 = 9_999;

/// Makes the mule: a wallet KYC'd with the mule's own (real) identity, linked through the
/// bank's pages to the mule's own account.
fn make_mule(target: &Target, run: &str, tally: &mut Tally) -> anyhow::Result<Option<Mule>> {
    let customer = target.customer(MULE)?;
    let reference = customer
        .kyc_reference()
        .ok_or_else(|| anyhow::anyhow!("the mule has no sandbox identity"))?;
    let mut actor = target.actor("192.0.2.40");
    let wallet = match client::sign_up(&mut actor, run, "mule", Some(reference))? {
        Ok(wallet) => wallet,
        Err(why) => {
            tally.note(format!("the mule could not sign up: {why}"));
            return Ok(None);
        }
    };
    let account = customer
        .accounts
        .first()
        .ok_or_else(|| anyhow::anyhow!("the mule has no account"))?;
    let started = actor.call(
        "POST",
        "/api/v1/bank-links",
        Some(json!({ "bank_code": account.bank_code })),
        Some(&wallet.token),
        None,
    )?;
    anyhow::ensure!(
        started.status == 201,
        "the mule's link did not start: {} {}",
        started.status,
        started.body
    );
    let callback = approve_at_bank(
        &target.bank,
        &started.text("authorization_url"),
        customer,
        &account.bank_code,
    )?;
    let callback = (
        query_param(&callback, "state").unwrap_or_default(),
        query_param(&callback, "code").unwrap_or_default(),
        query_param(&callback, "iss").unwrap_or_default(),
    );
    let link = actor.call(
        "POST",
        "/api/v1/bank-links/complete",
        Some(json!({ "state": callback.0, "code": callback.1, "iss": callback.2 })),
        Some(&wallet.token),
        None,
    )?;
    anyhow::ensure!(
        link.status == 201,
        "the mule's link did not complete: {} {}",
        link.status,
        link.body
    );
    Ok(Some(Mule {
        account_key: format!(
            "{}-{}-{}",
            account.bank_code, account.branch, account.number
        ),
        link_id: link.text("id"),
        wallet,
        callback,
    }))
}

/// D5: 50 charges at once, each just under what is left of the new link's daily limit.
pub fn parallel_charges(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D5 parallel charges");
    let Some(mule) = make_mule(target, run, &mut tally)? else {
        return Ok(tally.finish("error", 0));
    };
    let before = client::bank_balances(&target.bank)?;
    let outcomes: Vec<anyhow::Result<(u16, String, String)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PARALLEL_CHARGES)
            .map(|index| {
                let token = mule.wallet.token.clone();
                let link_id = mule.link_id.clone();
                let mut actor = target.actor("192.0.2.40");
                scope.spawn(move || {
                    let key = format!("drill-{run}-d5-{index}");
                    let answer = actor.call(
                        "POST",
                        "/api/v1/charges",
                        Some(json!({ "link_id": link_id, "amount_yen": CHARGE_YEN })),
                        Some(&token),
                        Some(&key),
                    )?;
                    let status = answer.body["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    Ok((answer.status, status, answer.code().to_owned()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a charging thread panicked")))
            })
            .collect()
    });
    let allowed = NEW_LINK_DAILY_MAX_YEN / CHARGE_YEN;
    let mut posted = 0i64;
    for outcome in outcomes {
        let (status, charge_status, code) = outcome?;
        let ok = status == 201 && charge_status == "posted";
        if ok {
            posted += 1;
        } else {
            tally.note(format!("{status} {code}{charge_status}"));
        }
        // Only a charge beyond the limit is the attacker's success; one within it is allowed.
        if ok && posted <= allowed {
            tally.allowed();
        } else {
            tally.attempt(ok);
        }
    }
    let after = client::bank_balances(&target.bank)?;
    let debited = client::debited_yen(&before, &after, std::slice::from_ref(&mule.account_key));
    tally.note(format!(
        "{posted} posted, the bank debited ¥{debited} (a new link's limit: ¥{NEW_LINK_DAILY_MAX_YEN} a day)"
    ));
    let lost = debited.saturating_sub(NEW_LINK_DAILY_MAX_YEN).max(0);
    *target
        .mule
        .lock()
        .map_err(|_| anyhow::anyhow!("the mule's state is poisoned"))? = Some(mule);
    Ok(tally.finish("done", lost))
}

/// The mule's wallet token and handle, if D5 made it.
pub fn mule_wallet(target: &Target) -> anyhow::Result<Option<(String, String, String)>> {
    Ok(target
        .mule
        .lock()
        .map_err(|_| anyhow::anyhow!("the mule's state is poisoned"))?
        .as_ref()
        .map(|mule| {
            (
                mule.wallet.token.clone(),
                mule.wallet.handle.clone(),
                mule.wallet.user_id.clone(),
            )
        }))
}

/// D11: merchant codes tampered with — malformed TLV, a wrong CRC, an amount written into
/// the demo merchant's code with the CRC recomputed, and a sticker printed with another name.
pub fn qr_tampering(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D11 QR tampering");
    let Some((token, _, _)) = mule_wallet(target)? else {
        tally.note("no attacker wallet with money (D5's mule)");
        return Ok(tally.finish("error", 0));
    };
    let mut actor = target.actor("192.0.2.41");
    let genuine = kinko_qr::decode(&target.merchant_qr)
        .map_err(|error| anyhow::anyhow!("the demo merchant's code: {error}"))?;
    let mut wrong_crc = target.merchant_qr.clone();
    let last = wrong_crc.pop().unwrap_or('0');
    wrong_crc.push(if last == '0' { '1' } else { '0' });
    let altered_amount = kinko_qr::encode(
        &kinko_qr::MerchantQr::new(
            genuine.details().clone(),
            kinko_qr::Payment::Dynamic {
                amount_yen: 1,
                reference: format!("DRILL{run}"),
            },
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?,
    );
    let mut swapped = genuine.details().clone();
    swapped.name = "KINKO CHARITY".to_owned();
    swapped.name_ja = "金庫募金".to_owned();
    let swapped = kinko_qr::encode(
        &kinko_qr::MerchantQr::new(swapped, kinko_qr::Payment::Static)
            .map_err(|error| anyhow::anyhow!("{error}"))?,
    );
    let before = client::wallet_balance(&mut actor, &token)?;
    let mut paid_with_tampered = 0i64;
    for (label, code, amount) in [
        (
            "malformed TLV",
            "000201010211".to_owned() + "26990011",
            Some(500),
        ),
        ("wrong CRC", wrong_crc, Some(500)),
        ("altered amount, CRC recomputed", altered_amount, None),
    ] {
        let resolved = actor.call(
            "POST",
            "/api/v1/payments/resolve",
            Some(json!({ "qr": code })),
            Some(&token),
            None,
        )?;
        let key = format!("drill-{run}-d11-{}", label.len());
        let paid = actor.call(
            "POST",
            "/api/v1/payments",
            Some(json!({ "qr": code, "amount_yen": amount })),
            Some(&token),
            Some(&key),
        )?;
        let success = paid.status == 201 && paid.body["status"] == "posted";
        tally.attempt(resolved.status == 200);
        tally.attempt(success);
        if success {
            paid_with_tampered = paid_with_tampered.saturating_add(amount.unwrap_or(1));
        }
        tally.note(format!(
            "{label}: resolve {} pay {} {}",
            resolved.status,
            paid.status,
            paid.code()
        ));
    }
    // The swapped sticker: the code points at a real merchant but prints another name. The
    // defence is to show Kinko's own name and flag the difference before the payer confirms.
    let resolved = actor.call(
        "POST",
        "/api/v1/payments/resolve",
        Some(json!({ "qr": swapped })),
        Some(&token),
        None,
    )?;
    let fooled = resolved.status == 200
        && resolved.body["printed_name_differs"] != true
        && resolved.body.to_string().contains("KINKO CHARITY");
    tally.attempt(fooled);
    tally.note(format!(
        "swapped sticker: resolve {} printed_name_differs={}",
        resolved.status, resolved.body["printed_name_differs"]
    ));
    let after = client::wallet_balance(&mut actor, &token)?;
    let spent = before.saturating_sub(after).max(0);
    Ok(tally.finish("done", paid_with_tampered.max(spent)))
}

/// Signs the demo's admin in; the one-time code of the current or the next step (the demo's
/// walkthrough may have spent the current one).
fn operator_token(actor: &mut Actor, target: &Target) -> anyhow::Result<String> {
    for step in 0..3u64 {
        if step == 2 {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        let signed_in = actor.call(
            "POST",
            "/api/v1/operator/sessions",
            Some(json!({
                "email": target.admin_email,
                "password": crate::walkthrough::DEMO_PASSWORD,
                "totp_code": totp_code(&target.admin_totp_seed, step.min(1))?,
            })),
            None,
            None,
        )?;
        if signed_in.status == 201 {
            return Ok(signed_in.text("token"));
        }
    }
    anyhow::bail!("the demo's admin could not sign in")
}

/// D14: the admin credits the mule's wallet ¥5,000,000 alone, then approves the credit itself.
pub fn insider_credit(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D14 insider credit");
    let Some((token, _, user_id)) = mule_wallet(target)? else {
        tally.note("no attacker wallet (D5's mule)");
        return Ok(tally.finish("error", 0));
    };
    let mut operator = target.actor("10.0.0.14");
    let operator_token = operator_token(&mut operator, target)?;
    let mut wallet_actor = target.actor("192.0.2.40");
    let before = client::wallet_balance(&mut wallet_actor, &token)?;
    let key = format!("drill-{run}-d14");
    let credited = operator.call(
        "POST",
        &format!("/api/v1/operator/users/{user_id}/credits"),
        Some(json!({ "amount_yen": 5_000_000, "reason": "drill: insider credits an accomplice" })),
        Some(&operator_token),
        Some(&key),
    )?;
    tally.attempt(credited.status == 201);
    tally.note(format!(
        "credit: {} {}{}",
        credited.status,
        credited.code(),
        credited.body["status"].as_str().unwrap_or_default()
    ));
    if credited.status == 202 {
        let credit_id = credited.text("id");
        let approved = operator.call(
            "POST",
            &format!("/api/v1/operator/credits/{credit_id}/approve"),
            Some(json!({ "reason": "drill: approving my own credit" })),
            Some(&operator_token),
            None,
        )?;
        tally.attempt(approved.status == 200 && approved.body["status"] == "posted");
        tally.note(format!(
            "self-approval: {} {}",
            approved.status,
            approved.code()
        ));
    }
    let after = client::wallet_balance(&mut wallet_actor, &token)?;
    Ok(tally.finish("done", after.saturating_sub(before).max(0)))
}
