//! Attacks on linking (THREATS D1, D2, D3, D10): leaked account records and PINs tried through
//! the legacy PIN method and the OAuth link from throwaway wallets, and the OAuth flow itself
//! bent (no PAR, no PKCE, a replayed code, a token without its DPoP key). Yen lost is what
//! left the victims' bank accounts during the attack, read from the bank's books.

use kinko_bank_sandbox::store::DemoAccount;
use serde_json::json;

use super::client::{self, Actor, Wallet};
use super::{AttackReport, Tally, Target};

/// The commonest 4-digit PINs (DataGenetics' analysis of leaked PIN lists), most common first.
pub const COMMON_PINS: [&str; 20] = [
    "1234", "1111", "0000", "1212", "7777", "1004", "2000", "4444", "2222", "6969", "9999", "3333",
    "5555", "6666", "1122", "1313", "8888", "4321", "2001", "1010",
];

/// One legacy-method link try on `account` (with `number` in place of its own, for made-up
/// numbers next to it); true when a link came back.
fn legacy_try(
    actor: &mut Actor,
    wallet: &Wallet,
    account: &DemoAccount,
    number: &str,
    pin: &str,
    tally: &mut Tally,
) -> anyhow::Result<bool> {
    let answer = actor.call(
        "POST",
        "/api/v1/bank-links/legacy",
        Some(json!({
            "bank_code": account.bank_code, "branch": account.branch,
            "account_type": account.kind.as_str(), "account_number": number, "pin": pin,
        })),
        Some(&wallet.token),
        None,
    )?;
    let linked = answer.status == 201;
    tally.attempt(linked);
    if !linked {
        tally.note(format!("legacy {} {}", answer.status, answer.code()));
    }
    Ok(linked)
}

/// Signs up a throwaway wallet, counting a refused sign-up as a detected attempt.
fn throwaway(
    target: &Target,
    source: &str,
    run: &str,
    tag: &str,
    kyc: Option<&str>,
    tally: &mut Tally,
) -> anyhow::Result<Option<(Actor, Wallet)>> {
    let mut actor = target.actor(source);
    match client::sign_up(&mut actor, run, tag, kyc)? {
        Ok(wallet) => Ok(Some((actor, wallet))),
        Err(why) => {
            tally.attempt(false);
            tally.note(why);
            Ok(None)
        }
    }
}

/// Yen that left the victims' accounts since `before`, and what the attackers' wallets hold.
fn measured_loss(
    target: &Target,
    before: &std::collections::BTreeMap<String, i64>,
    wallets: &mut [(Actor, Wallet)],
) -> anyhow::Result<i64> {
    let after = client::bank_balances(&target.bank)?;
    let debited = client::debited_yen(before, &after, &target.victim_accounts());
    let mut held = 0i64;
    for (actor, wallet) in wallets.iter_mut() {
        held = held.saturating_add(client::wallet_balance(actor, &wallet.token)?);
    }
    Ok(debited.max(held))
}

/// D1: a leaked (name, kana, birth date, bank, account, PIN) list; a throwaway wallet per
/// record, which tries eKYC with a made-up document, the legacy PIN link with the leaked PIN,
/// and the OAuth link signing in at the bank with the PIN as the password and no second
/// factor; any link it got is charged the new-link maximum.
pub fn leaked_records(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D1 leaked records");
    let before = client::bank_balances(&target.bank)?;
    let mut wallets = Vec::new();
    for (index, victim) in target.victims().enumerate() {
        let source = format!("198.51.100.{}", 10 + index);
        let Some((mut actor, wallet)) = throwaway(target, &source, run, "d1", None, &mut tally)?
        else {
            continue;
        };
        let kyc = actor.call(
            "POST",
            "/api/v1/me/kyc",
            Some(json!({ "document_reference": format!("LEAKED-{}", victim.birth_date) })),
            Some(&wallet.token),
            None,
        )?;
        let verified = kyc.status == 200 && kyc.body["outcome"] == "verified";
        tally.attempt(verified);
        for account in &victim.accounts {
            let linked = legacy_try(
                &mut actor,
                &wallet,
                account,
                &account.number,
                &account.pin,
                &mut tally,
            )?;
            let oauth = oauth_with_pin(
                &mut actor,
                target,
                &wallet,
                victim,
                &account.bank_code,
                &account.pin,
            )?;
            tally.attempt(oauth);
            if linked || oauth {
                charge_everything(&mut actor, &wallet, &mut tally)?;
            }
        }
        wallets.push((actor, wallet));
    }
    let lost = measured_loss(target, &before, &mut wallets)?;
    Ok(tally.finish("done", lost))
}

/// Starts an OAuth link and signs in at the bank as the victim with the leaked PIN as the
/// password and a guessed one-time code; true only if a link came back.
fn oauth_with_pin(
    actor: &mut Actor,
    target: &Target,
    wallet: &Wallet,
    victim: &kinko_bank_sandbox::store::DemoCustomer,
    bank_code: &str,
    pin: &str,
) -> anyhow::Result<bool> {
    let started = actor.call(
        "POST",
        "/api/v1/bank-links",
        Some(json!({ "bank_code": bank_code })),
        Some(&wallet.token),
        None,
    )?;
    if started.status != 201 {
        return Ok(false);
    }
    let url = started.text("authorization_url");
    let mut bank = crate::walkthrough::Site::new(&target.bank);
    let page = bank.send(
        "GET",
        &crate::walkthrough::path_of(&url),
        "text/html",
        "",
        &[],
    )?;
    let Ok((action, mut fields)) = crate::walkthrough::form(&page.body, "/oauth/authorize/login")
    else {
        return Ok(false);
    };
    fields.push(("online_id".into(), victim.online_id.clone()));
    fields.push(("password".into(), pin.to_owned()));
    fields.push(("totp_code".into(), "000000".into()));
    let answer = bank.send(
        "POST",
        &action,
        "application/x-www-form-urlencoded",
        &crate::walkthrough::form_body(&fields),
        &[],
    )?;
    // A 303 would mean the bank let the attacker in; the consent step would follow.
    Ok(answer.status == 303)
}

/// Charges every active link of the wallet the new-link daily maximum.
fn charge_everything(actor: &mut Actor, wallet: &Wallet, tally: &mut Tally) -> anyhow::Result<()> {
    let links = actor.call("GET", "/api/v1/bank-links", None, Some(&wallet.token), None)?;
    let ids: Vec<String> = links
        .body
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|link| link["status"] == "active")
                .filter_map(|link| link["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for id in ids {
        let key = format!("drill-d1-{id}");
        let charged = actor.call(
            "POST",
            "/api/v1/charges",
            Some(json!({ "link_id": id, "amount_yen": 30_000 })),
            Some(&wallet.token),
            Some(&key),
        )?;
        tally.attempt(charged.status == 201 && charged.body["status"] == "posted");
    }
    Ok(())
}

/// D2: one source, one wallet, one PIN ("1234") on every account of the list and on made-up
/// account numbers around them.
pub fn one_pin_many_accounts(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D2 one PIN, many accounts");
    let before = client::bank_balances(&target.bank)?;
    let mut wallets = Vec::new();
    if let Some((mut actor, wallet)) =
        throwaway(target, "198.51.100.50", run, "d2", None, &mut tally)?
    {
        for victim in target.victims() {
            for account in &victim.accounts {
                for offset in 0..4u32 {
                    let number = account
                        .number
                        .parse::<u32>()
                        .map(|number| format!("{:07}", number.saturating_add(offset * 100)))
                        .unwrap_or_else(|_| account.number.clone());
                    legacy_try(
                        &mut actor,
                        &wallet,
                        account,
                        &number,
                        COMMON_PINS[0],
                        &mut tally,
                    )?;
                }
            }
        }
        wallets.push((actor, wallet));
    }
    let lost = measured_loss(target, &before, &mut wallets)?;
    Ok(tally.finish("done", lost))
}

/// D3: the 20 commonest PINs spread over five wallets on five source addresses (the
/// simulated day is compressed into the drill's run; no sandbox clock is moved).
pub fn spread_pins(target: &Target, run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D3 PINs spread over sources");
    if !target.proxy_trusted {
        tally.note(
            "the target does not trust the drill as a proxy: the spread is over wallets only",
        );
    }
    let before = client::bank_balances(&target.bank)?;
    let accounts: Vec<_> = target
        .victims()
        .flat_map(|victim| victim.accounts.iter())
        .collect();
    let mut wallets = Vec::new();
    for (index, pins) in COMMON_PINS.chunks(4).enumerate() {
        let source = format!("203.0.113.{}", 20 + index);
        let Some((mut actor, wallet)) = throwaway(target, &source, run, "d3", None, &mut tally)?
        else {
            continue;
        };
        for (offset, pin) in pins.iter().enumerate() {
            let Some(account) = accounts.get((index + offset) % accounts.len().max(1)) else {
                continue;
            };
            legacy_try(
                &mut actor,
                &wallet,
                account,
                &account.number,
                pin,
                &mut tally,
            )?;
        }
        wallets.push((actor, wallet));
    }
    let lost = measured_loss(target, &before, &mut wallets)?;
    Ok(tally.finish("done", lost))
}

/// D10: the OAuth link bent. At the bank: an authorization request without PAR, a PAR
/// without client authentication or PKCE, a made-up access token without a DPoP proof; at
/// Kinko: the mule's completed link's code and state replayed.
pub fn oauth_attacks(target: &Target, _run: &str) -> anyhow::Result<AttackReport> {
    let mut tally = Tally::start("D10 OAuth link attacks");
    let mut bank = crate::walkthrough::Site::new(&target.bank);
    let no_par = bank.send(
        "GET",
        "/oauth/authorize?response_type=code&client_id=kinko&redirect_uri=http%3A%2F%2Fevil.example%2Fcb&state=x",
        "text/html",
        "",
        &[],
    )?;
    let let_in = no_par.status == 200 && no_par.body.contains("action=\"/oauth/authorize/login");
    tally.attempt(let_in);
    if !let_in {
        tally.note(format!("no PAR: {}", no_par.status));
    }
    let par = bank.send(
        "POST",
        "/oauth/par",
        "application/x-www-form-urlencoded",
        "response_type=code&client_id=kinko&redirect_uri=http%3A%2F%2Fevil.example%2Fcb&scope=openid",
        &[],
    )?;
    tally.attempt(par.status == 201);
    if par.status != 201 {
        tally.note(format!("PAR without PKCE or client auth: {}", par.status));
    }
    let grant = bank.send(
        "GET",
        "/v1/grant",
        "application/json",
        "",
        &[("Authorization", "DPoP drill-made-up-token")],
    )?;
    tally.attempt(grant.status == 200);
    if grant.status != 200 {
        tally.note(format!("token without its key: {}", grant.status));
    }
    let replay = target
        .mule
        .lock()
        .map_err(|_| anyhow::anyhow!("the mule's state is poisoned"))?
        .as_ref()
        .map(|mule| (mule.callback.clone(), mule.wallet.token.clone()));
    match replay {
        Some(((state, code, iss), token)) => {
            let mut actor = target.actor("198.51.100.60");
            let answer = actor.call(
                "POST",
                "/api/v1/bank-links/complete",
                Some(json!({ "state": state, "code": code, "iss": iss })),
                Some(&token),
                None,
            )?;
            tally.attempt(answer.status == 201);
            if answer.status != 201 {
                tally.note(format!(
                    "replayed code: {} {}",
                    answer.status,
                    answer.code()
                ));
            }
            Ok(tally.finish("done", 0))
        }
        None => {
            tally.note("the replayed code was not tried: the mule never linked (see D5)");
            Ok(tally.finish("partial", 0))
        }
    }
}
