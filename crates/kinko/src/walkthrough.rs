//! The demo's walkthrough: once `kinko demo` listens, it makes a wallet ready to use the way a
//! client would — over Kinko's own API and the sandbox bank's own pages, no back door: sign-up
//! with the codes from the sandbox outbox, an authenticator, eKYC, a link approved at the bank,
//! a first charge — and prints who can sign in where, with their TOTP seeds. The demo's
//! operators are made like `kinko admin create-operator` makes them.
//!
//! The demo's own sandbox policy is what lets this happen at once: `kinko demo` runs without
//! the freeze after a new second factor, and its admin sets each sandbox bank's wait before a
//! new link's first charge to zero (audited, with a reason). `kinko serve` keeps the strict
//! defaults.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use kinko_bank_sandbox::store::DemoCustomer;
use serde_json::{Value, json};

/// Every demo account's password (demo data only).
pub const DEMO_PASSWORD: &str = "kinko-demo-password-2026";
/// The first charge of the ready wallet, below the confirmation threshold.
const FIRST_CHARGE_YEN: i64 = 20_000;
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// One site's HTTP/1.1 client: a request per connection, and that site's cookies.
pub struct Site {
    /// `host:port`.
    address: String,
    cookies: Vec<(String, String)>,
}

pub struct Reply {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

impl Site {
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            cookies: Vec::new(),
        }
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let mut stream = TcpStream::connect(&self.address)
            .with_context(|| format!("connecting to {}", self.address))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        if !self.cookies.is_empty() {
            let cookies: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            extra.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
        }
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            self.address,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.take(4 * 1024 * 1024).read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP answer from {}", self.address))?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow!("no status line from {}", self.address))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
        for (_, cookie) in headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case("set-cookie"))
        {
            if let Some((name, value)) = cookie
                .split(';')
                .next()
                .and_then(|pair| pair.split_once('='))
            {
                self.cookies.retain(|(known, _)| known != name);
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let chunked = headers.iter().any(|(key, value)| {
            key.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn api(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers = Vec::new();
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer.as_str()));
        }
        if let Some(key) = idempotency_key {
            headers.push(("Idempotency-Key", key));
        }
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        self.send(method, path, "application/json", &body, &headers)
    }

    /// An API call that must answer `status`; its JSON body.
    fn expect(
        &mut self,
        status: u16,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let reply = self.api(method, path, body, token, None)?;
        ensure!(
            reply.status == status,
            "{method} {path} answered {}: {}",
            reply.status,
            reply.body
        );
        if reply.body.is_empty() {
            Ok(Value::Null)
        } else {
            reply.json()
        }
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub(crate) fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// The form whose action starts with `action`: its action and hidden fields.
pub(crate) fn form(html: &str, action: &str) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let start = html
        .find(&format!("action=\"{action}"))
        .ok_or_else(|| anyhow!("no form to {action} on the bank's page"))?;
    let form_text = &html[start..];
    let form_text = &form_text[..form_text.find("</form>").unwrap_or(form_text.len())];
    let form_action = attribute(form_text, "action").unwrap_or_else(|| action.to_owned());
    let hidden = form_text
        .split("<input")
        .skip(1)
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
        .collect();
    Ok((form_action, hidden))
}

pub(crate) fn form_body(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The path (and query) of `url` on `site` (`http://host:port/...`).
pub(crate) fn path_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|slash| rest[slash..].to_owned()))
        .unwrap_or_else(|| "/".to_owned())
}

pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TOTP code for a base32 seed, `steps_ahead` 30-second steps from now.
pub fn totp_code(secret_base32: &str, steps_ahead: u64) -> anyhow::Result<String> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32)
        .map_err(|error| anyhow!("a TOTP seed that is not base32: {error:?}"))?;
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .map_err(|error| anyhow!("building the authenticator: {error}"))?;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    Ok(totp.generate(now_s + steps_ahead * 30).to_string())
}

/// The newest 8-digit code "sent" to `destination` for `purpose` (the sandbox outbox).
pub(crate) fn code_sent(
    kinko: &mut Site,
    destination: &str,
    purpose: &str,
) -> anyhow::Result<String> {
    let path = format!("/api/v1/sandbox/outbox?destination={}", encode(destination));
    let messages = kinko.expect(200, "GET", &path, None, None)?;
    let body = messages
        .as_array()
        .and_then(|list| list.iter().find(|message| message["purpose"] == purpose))
        .and_then(|message| message["body"].as_str())
        .ok_or_else(|| anyhow!("no {purpose} message to {destination} in the sandbox outbox"))?;
    body.split(|c: char| !c.is_ascii_digit())
        .find(|digits| digits.len() == 8)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no code in the {purpose} message"))
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Who the walkthrough signed in as, to print.
pub struct Operator {
    pub email: String,
    pub secret_base32: String,
}

/// The ready wallet.
pub struct ReadyWallet {
    pub email: String,
    pub phone: String,
    pub secret_base32: String,
    pub account_label: String,
    pub balance_yen: i64,
    pub handle: String,
}

/// The admin's own session, to set the demo banks' policy.
pub fn admin_token(kinko: &mut Site, admin: &Operator) -> anyhow::Result<String> {
    let signed_in = kinko.expect(
        201,
        "POST",
        "/api/v1/operator/sessions",
        Some(json!({
            "email": admin.email,
            "password": DEMO_PASSWORD,
            "totp_code": totp_code(&admin.secret_base32, 0)?,
        })),
        None,
    )?;
    Ok(text(&signed_in["token"]))
}

/// The demo's sandbox policy: a new link may be charged at once at these banks.
pub fn open_demo_banks(kinko: &mut Site, token: &str, bank_codes: &[&str]) -> anyhow::Result<()> {
    for code in bank_codes {
        kinko.expect(
            200,
            "POST",
            &format!("/api/v1/operator/banks/{code}/policy"),
            Some(json!({
                "reason": "demo walkthrough: a newcomer charges a new link at once",
                "new_link_wait_hours": 0,
            })),
            Some(token),
        )?;
    }
    Ok(())
}

/// Signs a wallet up and makes it ready: verified, authenticator, eKYC as `customer`, linked to
/// `customer`'s account at `bank_code` through the bank's pages, and charged once.
pub fn ready_wallet(
    kinko: &mut Site,
    bank_address: &str,
    customer: &DemoCustomer,
    bank_code: &str,
    run: &str,
) -> anyhow::Result<ReadyWallet> {
    let email = format!("hanako-{run}@demo.kinko.example");
    let digits: String = run
        .bytes()
        .map(|byte| char::from(b'0' + byte % 10))
        .chain(std::iter::repeat('0'))
        .take(8)
        .collect();
    let phone = format!("+8190{digits}");
    let signed_up = kinko.expect(
        202,
        "POST",
        "/api/v1/signup",
        Some(json!({ "email": email, "password": DEMO_PASSWORD, "phone": phone })),
        None,
    )?;
    let user_id = text(&signed_up["user_id"]);
    for (channel, destination, purpose) in [
        ("email", email.as_str(), "verify_email"),
        ("sms", phone.as_str(), "verify_phone"),
    ] {
        let code = code_sent(kinko, destination, purpose)?;
        kinko.expect(
            200,
            "POST",
            &format!("/api/v1/signup/{user_id}/verify"),
            Some(json!({ "channel": channel, "code": code })),
            None,
        )?;
    }
    let signed_in = kinko.expect(
        201,
        "POST",
        "/api/v1/sessions",
        Some(json!({ "email": email, "password": DEMO_PASSWORD })),
        None,
    )?;
    let token = text(&signed_in["token"]);
    let enrolment = kinko.expect(200, "POST", "/api/v1/me/totp", None, Some(&token))?;
    let secret_base32 = text(&enrolment["secret_base32"]);
    let confirmed = kinko.expect(
        200,
        "POST",
        "/api/v1/me/totp/confirm",
        Some(json!({ "code": totp_code(&secret_base32, 0)? })),
        Some(&token),
    )?;
    let token = text(&confirmed["session"]["token"]);
    let reference = customer
        .kyc_reference()
        .ok_or_else(|| anyhow!("the demo customer has no eKYC identity"))?;
    let kyc = kinko.expect(
        200,
        "POST",
        "/api/v1/me/kyc",
        Some(json!({ "document_reference": reference })),
        Some(&token),
    )?;
    ensure!(kyc["outcome"] == "verified", "eKYC answered {kyc}");
    let started = kinko.expect(
        201,
        "POST",
        "/api/v1/bank-links",
        Some(json!({ "bank_code": bank_code })),
        Some(&token),
    )?;
    let callback = approve_at_bank(
        bank_address,
        &text(&started["authorization_url"]),
        customer,
        bank_code,
    )?;
    let link = kinko.expect(
        201,
        "POST",
        "/api/v1/bank-links/complete",
        Some(json!({
            "state": query_param(&callback, "state").unwrap_or_default(),
            "code": query_param(&callback, "code").unwrap_or_default(),
            "iss": query_param(&callback, "iss").unwrap_or_default(),
        })),
        Some(&token),
    )?;
    let key = format!("demo-{run}-first-charge");
    let charged = kinko.api(
        "POST",
        "/api/v1/charges",
        Some(json!({ "link_id": link["id"], "amount_yen": FIRST_CHARGE_YEN })),
        Some(&token),
        Some(&key),
    )?;
    ensure!(
        charged.status == 201 && charged.json()?["status"] == "posted",
        "the first charge answered {}: {}",
        charged.status,
        charged.body
    );
    let handle = format!("hanako_{run}");
    kinko.expect(
        200,
        "PUT",
        "/api/v1/me/handle",
        Some(json!({ "handle": handle })),
        Some(&token),
    )?;
    let balance = kinko.expect(200, "GET", "/api/v1/wallet", None, Some(&token))?;
    Ok(ReadyWallet {
        email,
        phone,
        secret_base32,
        account_label: text(&link["account_label"]),
        balance_yen: balance["balance_yen"].as_i64().unwrap_or_default(),
        handle,
    })
}

/// Walks the bank's login and consent pages as `customer`, approving the account at
/// `bank_code`; answers where the bank sends the browser back.
pub(crate) fn approve_at_bank(
    bank_address: &str,
    authorization_url: &str,
    customer: &DemoCustomer,
    bank_code: &str,
) -> anyhow::Result<String> {
    approve_at_bank_ahead(bank_address, authorization_url, customer, bank_code, 0)
}

/// The same with the bank's one-time code `ahead_ms` in the future (within the bank's one
/// step of skew): a second login by one customer inside one 30-second step needs the next
/// step's code, as an authenticator app would show it a moment later.
pub(crate) fn approve_at_bank_ahead(
    bank_address: &str,
    authorization_url: &str,
    customer: &DemoCustomer,
    bank_code: &str,
    ahead_ms: i64,
) -> anyhow::Result<String> {
    let mut bank = Site::new(bank_address);
    let mut page = bank.send("GET", &path_of(authorization_url), "text/html", "", &[])?;
    ensure!(page.status == 200, "the bank answered {}", page.status);
    if page.body.contains("action=\"/oauth/authorize/login") {
        let (action, mut fields) = form(&page.body, "/oauth/authorize/login")?;
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis())
                .unwrap_or_default(),
        )
        .unwrap_or(i64::MAX);
        let code = kinko_bank_sandbox::oauth::totp_code(
            &customer.totp_secret,
            now_ms.saturating_add(ahead_ms),
        )
        .ok_or_else(|| anyhow!("no bank code"))?;
        fields.push(("online_id".into(), customer.online_id.clone()));
        fields.push(("password".into(), customer.password.clone()));
        fields.push(("totp_code".into(), code));
        let body = form_body(&fields);
        let logged_in = bank.send(
            "POST",
            &action,
            "application/x-www-form-urlencoded",
            &body,
            &[],
        )?;
        ensure!(
            logged_in.status == 303,
            "the bank's login answered {}",
            logged_in.status
        );
        let back = logged_in.header("location").unwrap_or("/").to_owned();
        let back = if back.contains("://") {
            path_of(&back)
        } else {
            back
        };
        page = bank.send("GET", &back, "text/html", "", &[])?;
    }
    let account = customer
        .accounts
        .iter()
        .find(|account| account.bank_code == bank_code)
        .ok_or_else(|| anyhow!("the demo customer has no account at {bank_code}"))?;
    let tail = &account.number[account.number.len().saturating_sub(3)..];
    let account_id = page
        .body
        .split("<label>")
        .filter(|label| label.contains("name=\"account_id\""))
        .find(|label| label.contains(tail))
        .and_then(|label| attribute(label, "value"))
        .ok_or_else(|| anyhow!("no account ending {tail} on the bank's consent page"))?;
    let (action, mut fields) = form(&page.body, "/oauth/authorize/consent")?;
    fields.push(("account_id".into(), account_id));
    fields.push(("decision".into(), "approve".into()));
    let approved = bank.send(
        "POST",
        &action,
        "application/x-www-form-urlencoded",
        &form_body(&fields),
        &[],
    )?;
    if approved.status != 303 {
        bail!("the bank's consent answered {}", approved.status);
    }
    Ok(approved.header("location").unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_forms_and_queries_as_a_browser_would() {
        let html = r#"<form method="post" action="/oauth/authorize/login?x=1&amp;y=2">
            <input type="hidden" name="csrf_token" value="a&amp;b"><input type="text" name="online_id">
            </form>"#;
        let (action, fields) = form(html, "/oauth/authorize/login").unwrap_or_default();
        assert_eq!(action, "/oauth/authorize/login?x=1&y=2");
        assert_eq!(fields, vec![("csrf_token".to_owned(), "a&b".to_owned())]);
        let url = "http://localhost:8080/api/v1/bank-links/callback?code=a%2Bb&state=s&iss=http%3A%2F%2F127.0.0.1%3A8090";
        assert_eq!(query_param(url, "code").as_deref(), Some("a+b"));
        assert_eq!(
            query_param(url, "iss").as_deref(),
            Some("http://127.0.0.1:8090")
        );
        assert_eq!(
            path_of(url),
            "/api/v1/bank-links/callback?code=a%2Bb&state=s&iss=http%3A%2F%2F127.0.0.1%3A8090"
        );
    }
}
