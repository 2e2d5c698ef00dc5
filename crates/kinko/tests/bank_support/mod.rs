//! What the end-to-end tests with the sandbox bank share: the bank as a child process, a
//! browser's cookie jar walking the bank's pages, and wallets set up to link.

#![allow(dead_code)]

use std::process::Child;
use std::time::{Duration, Instant};

use kinko_bank_sandbox::store::{DemoCustomer, demo_customers};
use serde_json::{Value, json};

use crate::support::{
    Enrolled, HttpResponse, Server, encode, fresh_store, http_request, http_with, json_of,
    spawn_server_with, text_of,
};

/// `kinko bank-sandbox` on a fresh store of its own, killed when dropped.
pub struct BankSandbox {
    child: Child,
    pub address: String,
    pub store: Vec<String>,
    _dir: kinko_store::testing::Scratch,
}

impl Drop for BankSandbox {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

impl BankSandbox {
    pub fn start(backend: &str) -> Self {
        Self::start_with(backend, &[])
    }

    /// The same, with extra environment for `kinko bank-sandbox` (its test hooks).
    pub fn start_with(backend: &str, environment: &[(&str, &str)]) -> Self {
        let (store, dir) = fresh_store(backend);
        let (child, address) = spawn_server_with("bank-sandbox", &store, environment);
        Self {
            child,
            address,
            store,
            _dir: dir,
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The bank's own store, read directly (the bank's notices to its customers).
    pub fn open(&self) -> kinko_bank_sandbox::Bank {
        let location = match self.store.first().map(String::as_str) {
            Some("--data-dir") => kinko_store::StoreLocation::Sqlite {
                data_dir: self.store[1].clone().into(),
            },
            _ => kinko_store::StoreLocation::Postgres {
                url: self.store[1].clone(),
            },
        };
        kinko_bank_sandbox::Bank::open(&location, &self.issuer())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn customer_id(&self, bank: &kinko_bank_sandbox::Bank, customer: &DemoCustomer) -> uuid::Uuid {
        bank.database()
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                kinko_bank_sandbox::store::customer_id(tx, &customer.online_id)
            })
            .unwrap_or_else(|error| panic!("{error}"))
            .unwrap_or_else(|| panic!("no customer {}", customer.online_id))
    }

    /// The balance of `customer`'s account at `bank_code`, read from the bank's own store.
    pub fn balance(&self, customer: &DemoCustomer, bank_code: &str) -> i64 {
        let bank = self.open();
        let id = self.customer_id(&bank, customer);
        bank.database()
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                kinko_bank_sandbox::store::accounts_of(tx, id)
            })
            .unwrap_or_else(|error| panic!("{error}"))
            .into_iter()
            .find(|account| account.bank_code == bank_code)
            .map(|account| account.balance_yen)
            .unwrap_or_else(|| panic!("no account at {bank_code}"))
    }

    /// Sets that balance (a customer who spent their money elsewhere).
    pub fn set_balance(&self, customer: &DemoCustomer, bank_code: &str, balance_yen: i64) {
        let bank = self.open();
        let id = self.customer_id(&bank, customer);
        let changed = bank
            .database()
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                tx.execute(
                    "UPDATE bank_accounts SET balance_yen = $1 WHERE customer_id = $2 AND bank_code = $3",
                    &[
                        balance_yen.into(),
                        kinko_store::sql::Value::Uuid(id.as_u128()),
                        bank_code.into(),
                    ],
                )
            })
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(changed, 1);
    }

    /// The notices the bank sent `customer`, as (kind, text).
    pub fn notices(&self, customer: &DemoCustomer) -> Vec<(String, String)> {
        let bank = self.open();
        let id = bank
            .database()
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                kinko_bank_sandbox::store::customer_id(tx, &customer.online_id)
            })
            .unwrap_or_else(|error| panic!("{error}"))
            .unwrap_or_else(|| panic!("no customer {}", customer.online_id));
        bank.notices(id)
            .unwrap_or_else(|error| panic!("{error}"))
            .into_iter()
            .map(|notice| (notice.kind, notice.body))
            .collect()
    }
}

/// Kinko and its sandbox bank.
pub struct Pair {
    pub bank: BankSandbox,
    pub kinko: Server,
    pub admin: Enrolled,
}

pub fn start(backend: &str) -> Pair {
    start_with(backend, &[])
}

/// The same, with extra environment for `kinko serve`.
pub fn start_with(backend: &str, environment: &[(&str, &str)]) -> Pair {
    start_with_bank(backend, environment, &[])
}

/// The same, with extra environment for the bank too.
pub fn start_with_bank(
    backend: &str,
    environment: &[(&str, &str)],
    bank_environment: &[(&str, &str)],
) -> Pair {
    let bank = BankSandbox::start_with(backend, bank_environment);
    let issuer = bank.issuer();
    let mut env = vec![
        ("KINKO_BANK_SANDBOX_URL", issuer.as_str()),
        // No post-enrolment freeze: these tests link right after setting up TOTP.
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        // Nor a wait before a new link receives withdrawals (tested on its own).
        ("KINKO_PAYOUT_WAIT_H", "0"),
    ];
    env.extend_from_slice(environment);
    let (kinko, admin) = Server::start_with_admin(backend, &env);
    Pair { bank, kinko, admin }
}

/// A browser's cookie jar for one site.
#[derive(Default)]
pub struct Browser {
    pub cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn send(
        &mut self,
        address: &str,
        method: &str,
        path: &str,
        form: Option<&[(String, String)]>,
    ) -> HttpResponse {
        let cookie = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let body = form.map(|fields| {
            fields
                .iter()
                .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
                .collect::<Vec<_>>()
                .join("&")
        });
        let mut headers = Vec::new();
        if !cookie.is_empty() {
            headers.push(("Cookie", cookie.as_str()));
        }
        let response = http_request(
            address,
            method,
            path,
            "application/x-www-form-urlencoded",
            body.as_deref(),
            &headers,
        );
        for (name, value) in &response.headers {
            if name.eq_ignore_ascii_case("set-cookie")
                && let Some((pair, _)) = value.split_once(';').or(Some((value.as_str(), "")))
                && let Some((key, val)) = pair.split_once('=')
            {
                self.cookies.retain(|(existing, _)| existing != key.trim());
                if !val.is_empty() {
                    self.cookies.push((key.trim().to_owned(), val.to_owned()));
                }
            }
        }
        response
    }
}

/// The value of `name="…" value="…"` inputs of the first form whose action contains `action`,
/// and that action.
pub fn form(html: &str, action: &str) -> (String, Vec<(String, String)>) {
    let start = html
        .match_indices("<form")
        .map(|(index, _)| index)
        .find(|index| {
            html[*index..]
                .split_once('>')
                .is_some_and(|(tag, _)| tag.contains(action))
        })
        .unwrap_or_else(|| panic!("no form for {action} in {html}"));
    let body = &html[start..];
    let end = body.find("</form>").unwrap_or(body.len());
    let body = &body[..end];
    let target = attribute(body, "action").unwrap_or_default();
    let hidden = body
        .split("<input")
        .skip(1)
        .filter(|input| input.contains(r#"type="hidden""#))
        .filter_map(|input| Some((attribute(input, "name")?, attribute(input, "value")?)))
        .collect();
    (target.replace("&amp;", "&"), hidden)
}

pub fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!(r#"{name}=""#);
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].to_owned())
}

/// The path and query of an absolute URL on `address`.
pub fn path_of(url: &str, address: &str) -> String {
    url.strip_prefix(&format!("http://{address}"))
        .unwrap_or_else(|| panic!("{url} is not on {address}"))
        .to_owned()
}

/// A query parameter of a URL, decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| decode(value))
    })
}

pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("00");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            index += 3;
        } else {
            out.push(if bytes[index] == b'+' {
                b' '
            } else {
                bytes[index]
            });
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A bank customer's one-time code, `steps_ahead` 30-second steps from now (the bank takes
/// each step once).
pub fn bank_code(customer: &DemoCustomer, steps_ahead: i64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    kinko_bank_sandbox::oauth::totp_code(&customer.totp_secret, now_ms + steps_ahead * 30_000)
        .unwrap_or_else(|| panic!("no code"))
}

/// What the bank sent the browser back with.
pub struct Callback {
    pub location: String,
}

impl Callback {
    pub fn body(&self) -> Value {
        json!({
            "state": query_param(&self.location, "state").unwrap_or_default(),
            "code": query_param(&self.location, "code").unwrap_or_default(),
            "iss": query_param(&self.location, "iss").unwrap_or_default(),
        })
    }
}

/// Walks the bank's pages as `customer` in `browser`: the login with both factors unless the
/// browser still has a bank session (the bank takes each one-time code once, so a customer
/// stays signed in rather than signing in twice in one 30-second step), then approves the
/// account at `account_at`. Answers the redirect back to Kinko.
pub fn approve_at_bank(
    bank: &BankSandbox,
    browser: &mut Browser,
    authorization_url: &str,
    customer: &DemoCustomer,
    account_at: &str,
) -> Callback {
    let path = path_of(authorization_url, &bank.address);
    let mut page = browser.send(&bank.address, "GET", &path, None);
    assert_eq!(page.status, 200, "{}", page.body);
    if page.body.contains(r#"action="/oauth/authorize/login""#) {
        let (action, mut fields) = form(&page.body, "/oauth/authorize/login");
        fields.push(("online_id".into(), customer.online_id.clone()));
        fields.push(("password".into(), customer.password.clone()));
        fields.push(("totp_code".into(), bank_code(customer, 0)));
        let logged_in = browser.send(&bank.address, "POST", &action, Some(&fields));
        assert_eq!(logged_in.status, 303, "{}", logged_in.body);
        let back = logged_in.header("location").unwrap_or_default().to_owned();
        page = browser.send(&bank.address, "GET", &back, None);
        assert_eq!(page.status, 200, "{}", page.body);
    }
    let account_id = account_choice(&page.body, customer, account_at);
    let (action, mut fields) = form(&page.body, "/oauth/authorize/consent");
    fields.push(("account_id".into(), account_id));
    fields.push(("decision".into(), "approve".into()));
    let approved = browser.send(&bank.address, "POST", &action, Some(&fields));
    assert_eq!(approved.status, 303, "{}", approved.body);
    Callback {
        location: approved.header("location").unwrap_or_default().to_owned(),
    }
}

/// The radio button of the customer's account at `bank_code` on the consent page.
pub fn account_choice(html: &str, customer: &DemoCustomer, bank_code: &str) -> String {
    let account = customer
        .accounts
        .iter()
        .find(|account| account.bank_code == bank_code)
        .unwrap_or_else(|| panic!("{} has no account at {bank_code}", customer.online_id));
    let last_digits = &account.number[account.number.len() - 3..];
    html.split("<label>")
        .filter(|label| label.contains(r#"name="account_id""#))
        .find(|label| label.contains(last_digits))
        .and_then(|label| attribute(label, "value"))
        .unwrap_or_else(|| panic!("no account ending {last_digits} in {html}"))
}

/// Signs up a wallet with TOTP and KYC as `kyc_reference`; answers a fresh session token.
pub fn wallet(kinko: &Server, email: &str, phone: &str, kyc_reference: &str) -> String {
    wallet_with_secret(kinko, email, phone, kyc_reference).0
}

/// The same, with the wallet's TOTP secret: (session token, secret).
pub fn wallet_with_secret(
    kinko: &Server,
    email: &str,
    phone: &str,
    kyc_reference: &str,
) -> (String, String) {
    kinko.active_user(email, phone);
    let token = kinko.token(email);
    let (secret, fresh) = kinko.enrol_totp(&token);
    let kyc = kinko.call(
        "POST",
        "/api/v1/me/kyc",
        Some(json!({ "document_reference": kyc_reference })),
        Some(&fresh),
    );
    assert_eq!(json_of(&kyc)["outcome"], "verified", "{}", kyc.body);
    (fresh, secret)
}

/// Makes `email`'s wallet look proven before identity bindings existed (issue 11 item 5), so a
/// test can prove the same person a second wallet and reach the defences behind that one.
pub fn forget_identity_binding(kinko: &Server, email: &str) {
    let forgotten = kinko
        .database()
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.execute(
                "DELETE FROM identity_kyc_bindings
                 WHERE user_id = (SELECT id FROM identity_users WHERE email = $1)",
                &[email.into()],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(forgotten, 1, "{email} had no identity binding");
}

pub fn start_link(kinko: &Server, token: &str, bank_code: &str) -> String {
    let started = kinko.call(
        "POST",
        "/api/v1/bank-links",
        Some(json!({ "bank_code": bank_code })),
        Some(token),
    );
    assert_eq!(started.status, 201, "{}", started.body);
    text_of(&json_of(&started)["authorization_url"])
}

pub fn complete(kinko: &Server, token: &str, callback: &Callback) -> HttpResponse {
    kinko.call(
        "POST",
        "/api/v1/bank-links/complete",
        Some(callback.body()),
        Some(token),
    )
}

pub fn links(kinko: &Server, token: &str) -> Vec<Value> {
    let listed = kinko.call("GET", "/api/v1/bank-links", None, Some(token));
    assert_eq!(listed.status, 200, "{}", listed.body);
    json_of(&listed).as_array().cloned().unwrap_or_default()
}

pub fn purposes(kinko: &Server, email: &str) -> Vec<String> {
    kinko
        .messages_to(email)
        .iter()
        .map(|message| text_of(&message["purpose"]))
        .collect()
}

/// Sets a bank's policy as the admin.
pub fn set_policy(pair: &Pair, admin_token: &str, bank_code: &str, change: Value) {
    let mut body = change;
    body["reason"] = json!("drill: exercising the bank's switches");
    let response = pair.kinko.call(
        "POST",
        &format!("/api/v1/operator/banks/{bank_code}/policy"),
        Some(body),
        Some(admin_token),
    );
    assert_eq!(response.status, 200, "{}", response.body);
}

pub fn customer(index: usize) -> DemoCustomer {
    demo_customers()
        .into_iter()
        .nth(index)
        .unwrap_or_else(|| panic!("no demo customer {index}"))
}

/// The bank's customer page in `browser`, signing `customer` in first unless the browser has
/// a live bank session.
pub fn customer_page(bank: &BankSandbox, browser: &mut Browser, customer: &DemoCustomer) -> String {
    let page = browser.send(&bank.address, "GET", "/customer", None);
    if page.status == 200 {
        return page.body;
    }
    let login = browser.send(&bank.address, "GET", "/customer/login", None);
    assert_eq!(login.status, 200, "{}", login.body);
    let (action, mut fields) = form(&login.body, "/customer/login");
    fields.push(("online_id".into(), customer.online_id.clone()));
    fields.push(("password".into(), customer.password.clone()));
    fields.push(("totp_code".into(), bank_code(customer, 0)));
    let signed_in = browser.send(&bank.address, "POST", &action, Some(&fields));
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let page = browser.send(&bank.address, "GET", "/customer", None);
    assert_eq!(page.status, 200, "{}", page.body);
    page.body
}

/// Polls the wallet's links until `link_id` has `status` (webhooks are asynchronous).
pub fn wait_for_status(kinko: &Server, token: &str, link_id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = links(kinko, token)
            .into_iter()
            .find(|link| link["id"] == link_id)
            .map(|link| text_of(&link["status"]))
            .unwrap_or_default();
        if current == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "link {link_id} is {current}, not {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A wallet linked to hanako's account at 0001, with the bank's new-link wait lifted (the
/// limits stay); answers the wallet's token and the link id.
pub fn linked(pair: &Pair, admin_token: &str, wait_hours: i64) -> (String, String) {
    let (token, link_id, _) = linked_with_secret(pair, admin_token, wait_hours);
    (token, link_id)
}

/// The same, with the wallet's TOTP secret: (session token, link id, secret).
pub fn linked_with_secret(
    pair: &Pair,
    admin_token: &str,
    wait_hours: i64,
) -> (String, String, String) {
    set_policy(
        pair,
        admin_token,
        "0001",
        json!({ "new_link_wait_hours": wait_hours }),
    );
    let kinko = &pair.kinko;
    let hanako = customer(0);
    let (token, secret) = wallet_with_secret(
        kinko,
        "hanako@example.jp",
        "090-1234-5678",
        "SANDBOX-ID-0001",
    );
    let url = start_link(kinko, &token, "0001");
    let mut at_bank = Browser::default();
    let callback = approve_at_bank(&pair.bank, &mut at_bank, &url, &hanako, "0001");
    let linked = complete(kinko, &token, &callback);
    assert_eq!(linked.status, 201, "{}", linked.body);
    (token, text_of(&json_of(&linked)["id"]), secret)
}

pub fn charge(kinko: &Server, token: &str, key: &str, link_id: &str, amount: i64) -> HttpResponse {
    charge_confirmed(kinko, token, key, link_id, amount, None)
}

/// A charge naming a confirmation (dynamic linking), or none.
pub fn charge_confirmed(
    kinko: &Server,
    token: &str,
    key: &str,
    link_id: &str,
    amount: i64,
    confirmation: Option<&str>,
) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_with(
        &kinko.address,
        "POST",
        "/api/v1/charges",
        Some(
            &json!({ "link_id": link_id, "amount_yen": amount, "confirmation_id": confirmation })
                .to_string(),
        ),
        &[("Authorization", bearer.as_str()), ("Idempotency-Key", key)],
    )
}

pub fn balance(kinko: &Server, token: &str) -> Value {
    let response = kinko.call("GET", "/api/v1/wallet", None, Some(token));
    assert_eq!(response.status, 200, "{}", response.body);
    json_of(&response)
}
