//! Attacks that follow the money (THREATS D4/D16, D12): the mule, at its new link's daily
//! limit after D5, unlinks and relinks the same account to start afresh; then the charged
//! money is passed by P2P to a fresh mule wallet and withdrawn. The mule's own link stands in
//! for a victim's (D1 never gets one). Yen lost is read from balances: the mule's bank account
//! beyond the limit, what the second mule's wallet received, what came back to a bank.

use serde_json::json;

use super::client::{self, Actor};
use super::target::MULE;
use super::{AttackReport, Tally, Target};
use crate::walkthrough::{approve_at_bank_ahead, query_param};

/// The next 30-second step: the mule's bank login in D5 spent the current one.
const NEXT_STEP_MS: i64 = 30_000;

/// D4/D16: relink the mule's account (same wallet, same account) after D5 reached the limit,
/// and charge again. Limits count per bank account: nothing may post.
pub fn relink(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D4/D16 relink to reset limits");
    let Some((token, link_id, account_key)) = target
        .mule
        .lock()
        .map_err(|_| anyhow::anyhow!("the mule's state is poisoned"))?
        .as_ref()
        .map(|mule| {
            (
                mule.wallet.token.clone(),
                mule.link_id.clone(),
                mule.account_key.clone(),
            )
        })
    else {
        tally.note("no mule at its limit (D5)");
        return Ok(tally.finish("error", 0));
    };
    let customer = target.customer(MULE)?;
    let account = customer
        .accounts
        .first()
        .ok_or_else(|| anyhow::anyhow!("the mule has no account"))?;
    let mut actor = target.actor("192.0.2.40");
    let before = client::bank_balances(&target.bank)?;
    let unlinked = actor.call(
        "DELETE",
        &format!("/api/v1/bank-links/{link_id}"),
        None,
        Some(&token),
        None,
    )?;
    tally.note(format!("unlink: {} {}", unlinked.status, unlinked.code()));
    let started = actor.call(
        "POST",
        "/api/v1/bank-links",
        Some(json!({ "bank_code": account.bank_code })),
        Some(&token),
        None,
    )?;
    if started.status != 201 {
        tally.attempt(false);
        tally.note(format!(
            "relink refused: {} {}",
            started.status,
            started.code()
        ));
        return Ok(tally.finish("done", 0));
    }
    let callback = approve_at_bank_ahead(
        &target.bank,
        &started.text("authorization_url"),
        customer,
        &account.bank_code,
        NEXT_STEP_MS,
    )?;
    let linked = actor.call(
        "POST",
        "/api/v1/bank-links/complete",
        Some(json!({
            "state": query_param(&callback, "state").unwrap_or_default(),
            "code": query_param(&callback, "code").unwrap_or_default(),
            "iss": query_param(&callback, "iss").unwrap_or_default(),
        })),
        Some(&token),
        None,
    )?;
    if linked.status != 201 {
        tally.attempt(false);
        tally.note(format!(
            "relink refused: {} {}",
            linked.status,
            linked.code()
        ));
        return Ok(tally.finish("done", 0));
    }
    let new_link = linked.text("id");
    if let Some(mule) = target
        .mule
        .lock()
        .map_err(|_| anyhow::anyhow!("the mule's state is poisoned"))?
        .as_mut()
    {
        mule.link_id = new_link.clone();
    }
    for index in 0..3 {
        let charged = actor.call(
            "POST",
            "/api/v1/charges",
            Some(json!({ "link_id": new_link, "amount_yen": 9_999 })),
            Some(&token),
            Some(&format!("drill-{run}-d16-{index}")),
        )?;
        tally.attempt(charged.status == 201 && charged.body["status"] == "posted");
        tally.note(format!(
            "charge on the new link: {} {}",
            charged.status,
            charged.code()
        ));
    }
    let after = client::bank_balances(&target.bank)?;
    // D5 left the account at the limit: anything debited now is beyond it.
    let lost = client::debited_yen(&before, &after, std::slice::from_ref(&account_key));
    Ok(tally.finish("done", lost))
}

/// D12: the charged money passed on by P2P to a fresh mule wallet, and withdrawn back to a
/// bank by the mule.
pub fn cash_out_chain(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D12 cash-out chain via P2P mules");
    let Some((token, link_id, account_key)) = target
        .mule
        .lock()
        .map_err(|_| anyhow::anyhow!("the mule's state is poisoned"))?
        .as_ref()
        .map(|mule| {
            (
                mule.wallet.token.clone(),
                mule.link_id.clone(),
                mule.account_key.clone(),
            )
        })
    else {
        tally.note("no mule with charged money (D5)");
        return Ok(tally.finish("error", 0));
    };
    let mut second = target.actor("100.64.12.12");
    let next = match client::sign_up(&mut second, run, "mule2", None)? {
        Ok(wallet) => wallet,
        Err(why) => {
            tally.note(format!("the second mule could not sign up: {why}"));
            return Ok(tally.finish("error", 0));
        }
    };
    let mut mule = target.actor("192.0.2.40");
    let bank_before = client::bank_balances(&target.bank)?;
    let received_before = client::wallet_balance(&mut second, &next.token)?;
    let sent = mule.call(
        "POST",
        "/api/v1/transfers",
        Some(json!({ "to_handle": next.handle, "amount_yen": 9_000 })),
        Some(&token),
        Some(&format!("drill-{run}-d12-p2p")),
    )?;
    tally.attempt(sent.status == 201 && sent.body["status"] == "posted");
    tally.note(format!(
        "P2P to a fresh mule: {} {}",
        sent.status,
        sent.code()
    ));
    let withdrawn = withdraw(&mut mule, &token, &link_id, run)?;
    tally.attempt(withdrawn.0);
    tally.note(withdrawn.1);
    let received = client::wallet_balance(&mut second, &next.token)?
        .saturating_sub(received_before)
        .max(0);
    let bank_after = client::bank_balances(&target.bank)?;
    let credited = bank_after
        .get(&account_key)
        .copied()
        .unwrap_or_default()
        .saturating_sub(bank_before.get(&account_key).copied().unwrap_or_default())
        .max(0);
    Ok(tally.finish("done", received.saturating_add(credited)))
}

fn withdraw(
    mule: &mut Actor,
    token: &str,
    link_id: &str,
    run: &str,
) -> anyhow::Result<(bool, String)> {
    let answer = mule.call(
        "POST",
        "/api/v1/withdrawals",
        Some(json!({ "link_id": link_id, "amount_yen": 9_000 })),
        Some(token),
        Some(&format!("drill-{run}-d12-out")),
    )?;
    let out = matches!(answer.status, 201 | 202)
        && matches!(answer.body["status"].as_str(), Some("posted" | "pending"));
    Ok((
        out,
        format!("withdrawal: {} {}", answer.status, answer.code()),
    ))
}

/// The bank customer whose kana name matches no eKYC identity: an account in another name.
const OTHER_NAME: usize = 5;

/// D8: payout to an account in another name. The mule links an account held by someone else
/// (a complicit holder who approves at their bank) to withdraw to it; the link must be refused
/// because the holder is not the wallet's KYC'd person.
pub fn payout_other_name(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D8 payout to another name");
    let Some(token) = target
        .mule
        .lock()
        .map_err(|_| anyhow::anyhow!("the mule's state is poisoned"))?
        .as_ref()
        .map(|mule| mule.wallet.token.clone())
    else {
        tally.note("no mule (D5)");
        return Ok(tally.finish("error", 0));
    };
    let holder = target.customer(OTHER_NAME)?;
    let account = holder
        .accounts
        .first()
        .ok_or_else(|| anyhow::anyhow!("the other holder has no account"))?;
    let account_key = format!(
        "{}-{}-{}",
        account.bank_code, account.branch, account.number
    );
    let before = client::bank_balances(&target.bank)?;
    let mut actor = target.actor("192.0.2.40");
    let started = actor.call(
        "POST",
        "/api/v1/bank-links",
        Some(json!({ "bank_code": account.bank_code })),
        Some(&token),
        None,
    )?;
    if started.status != 201 {
        tally.attempt(false);
        tally.note(format!("link start: {} {}", started.status, started.code()));
        return Ok(tally.finish("done", 0));
    }
    let callback = approve_at_bank_ahead(
        &target.bank,
        &started.text("authorization_url"),
        holder,
        &account.bank_code,
        0,
    )?;
    let linked = actor.call(
        "POST",
        "/api/v1/bank-links/complete",
        Some(json!({
            "state": query_param(&callback, "state").unwrap_or_default(),
            "code": query_param(&callback, "code").unwrap_or_default(),
            "iss": query_param(&callback, "iss").unwrap_or_default(),
        })),
        Some(&token),
        None,
    )?;
    let got_link = linked.status == 201;
    tally.attempt(got_link);
    tally.note(format!(
        "link to an account in another name: {} {}",
        linked.status,
        linked.code()
    ));
    if got_link {
        let (out, note) = withdraw(&mut actor, &token, &linked.text("id"), run)?;
        tally.attempt(out);
        tally.note(note);
    }
    let after = client::bank_balances(&target.bank)?;
    let paid_out = after
        .get(&account_key)
        .copied()
        .unwrap_or_default()
        .saturating_sub(before.get(&account_key).copied().unwrap_or_default())
        .max(0);
    Ok(tally.finish("done", paid_out))
}
