//! Shared helpers for the binary's tests: where the data lives, running `kinko`, and plain
//! HTTP/1.1 over a TCP socket (real HTTP without pulling in a client crate).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

/// `kinko` store arguments for a fresh store of `backend`, and what to keep alive meanwhile.
pub fn fresh_store(backend: &str) -> (Vec<String>, kinko_store::testing::Scratch) {
    let (location, scratch) = kinko_store::testing::location(backend);
    let arguments = match location {
        kinko_store::StoreLocation::Sqlite { data_dir } => {
            vec!["--data-dir".into(), data_dir.display().to_string()]
        }
        kinko_store::StoreLocation::Postgres { url } => vec!["--database-url".into(), url],
    };
    (arguments, scratch)
}

pub fn kinko() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinko"));
    command
        .env_remove("KINKO_DATABASE_URL")
        .env("KINKO_LOG", "warn");
    command
}

/// A fixed key for the servers the tests start (PostgreSQL needs one from the environment).
pub const TEST_SECRET_KEY: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Starts `kinko serve --port 0 …` and returns the child with the address it printed.
pub fn spawn_server(subcommand: &str, store: &[String]) -> (Child, String) {
    spawn_server_with(subcommand, store, &[])
}

/// The same with extra environment variables.
/// An environment value that removes the variable from the server's environment.
pub const UNSET: &str = "\u{0}unset";

pub fn spawn_server_with(
    subcommand: &str,
    store: &[String],
    environment: &[(&str, &str)],
) -> (Child, String) {
    let mut command = kinko();
    command
        // Tests run a sandbox, and say so: without KINKO_ENV the server refuses to start.
        .env("KINKO_ENV", "sandbox")
        .env("KINKO_SECRET_KEY", TEST_SECRET_KEY)
        .env_remove("KINKO_NOTIFY")
        .env_remove("KINKO_METRICS_TOKEN");
    // The risk engine scores money out by default; tests of other mechanics switch it off by
    // name, and the risk tests choose their rules (or `UNSET`: the server's default).
    if !environment
        .iter()
        .any(|(name, _)| *name == "KINKO_RISK_RULES")
    {
        command.env("KINKO_RISK_RULES", "off");
    }
    for (name, value) in environment {
        if *value == UNSET {
            command.env_remove(name);
        } else {
            command.env(name, value);
        }
    }
    let mut child = command
        .arg(subcommand)
        .args(["--port", "0"])
        .args(store)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn: {error}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("server exited before listening"))
            .unwrap_or_else(|error| panic!("{error}"));
        if let Some(rest) = line.split("http://").nth(1) {
            break rest
                .split(|c: char| c == '/' || c.is_whitespace())
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, address)
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One request on a fresh connection, `Connection: close`, body read to the end.
pub fn http(address: &str, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    http_with(address, method, path, body, &[])
}

/// The same with extra headers (`Authorization`, `X-Kinko-Device`…).
pub fn http_with(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> HttpResponse {
    http_request(address, method, path, "application/json", body, headers)
}

/// One request with any content type (forms for the bank's pages, `application/jwt`…).
pub fn http_request(
    address: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("{error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|error| panic!("{error}"));
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|error| panic!("{error}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|error| panic!("{error}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut head_lines = head.lines();
    let status = head_lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = head_lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
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

/// A `kinko serve` child process on a fresh store, killed when dropped.
pub struct Server {
    pub child: Child,
    pub address: String,
    pub store: Vec<String>,
    _dir: kinko_store::testing::Scratch,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

impl Server {
    /// `kinko serve` on a fresh store of `backend`, with extra environment variables.
    pub fn start(backend: &str, environment: &[(&str, &str)]) -> Self {
        let (store, dir) = fresh_store(backend);
        let (child, address) = spawn_server_with("serve", &store, environment);
        Self {
            child,
            address,
            store,
            _dir: dir,
        }
    }

    /// Stops the server (as a crash would: SIGKILL) and starts it again on the same store.
    pub fn restart(&mut self, environment: &[(&str, &str)]) {
        drop(self.child.kill());
        drop(self.child.wait());
        let (child, address) = spawn_server_with("serve", &self.store, environment);
        self.child = child;
        self.address = address;
    }

    /// This server's own database, opened beside it (to read or plant rows no request
    /// would show or write).
    pub fn database(&self) -> kinko_store::sql::Database {
        let location = match self.store.first().map(String::as_str) {
            Some("--data-dir") => kinko_store::StoreLocation::Sqlite {
                data_dir: self.store[1].clone().into(),
            },
            _ => kinko_store::StoreLocation::Postgres {
                url: self.store[1].clone(),
            },
        };
        kinko_store::sql::Database::open(&location).unwrap_or_else(|error| panic!("{error}"))
    }

    /// `kinko check` on this server's store: the books balance.
    pub fn assert_books_balance(&self) {
        let output = kinko()
            .arg("check")
            .args(&self.store)
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            output.status.success(),
            "kinko check: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Posts `body` to `path` on a server set to die there (a failpoint): asserts that no
    /// answer came, or only a 5xx.
    pub fn assert_post_crashes(&self, path: &str, body: &str, token: &str, key: &str) {
        let bearer = format!("Bearer {token}");
        let crashed = std::panic::catch_unwind(|| {
            http_with(
                &self.address,
                "POST",
                path,
                Some(body),
                &[("Authorization", bearer.as_str()), ("Idempotency-Key", key)],
            )
        });
        assert!(
            crashed.is_err()
                || crashed
                    .as_ref()
                    .is_ok_and(|response| response.status >= 500),
            "the failpoint did not stop the server"
        );
    }

    /// `kinko audit verify` on this server's store: the audit log's hash chain holds.
    pub fn assert_audit_chain_intact(&self) {
        let output = kinko()
            .args(["audit", "verify"])
            .args(&self.store)
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            output.status.success(),
            "kinko audit verify: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// One request, with the JSON body and bearer token if given.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> HttpResponse {
        let body = body.map(|value| value.to_string());
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers = Vec::new();
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer.as_str()));
        }
        http_with(&self.address, method, path, body.as_deref(), &headers)
    }

    /// Asserts an RFC 9457 answer with this status and stable code.
    pub fn assert_problem(&self, response: &HttpResponse, status: u16, code: &str) {
        assert_eq!(response.status, status, "{}", response.body);
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json"),
            "{}",
            response.body
        );
        assert_eq!(json_of(response)["code"], code, "{}", response.body);
    }

    /// The messages "sent" to `destination`, newest first, from the sandbox outbox.
    pub fn messages_to(&self, destination: &str) -> Vec<serde_json::Value> {
        let response = self.call(
            "GET",
            &format!("/api/v1/sandbox/outbox?destination={}", encode(destination)),
            None,
            None,
        );
        assert_eq!(response.status, 200, "{}", response.body);
        json_of(&response).as_array().cloned().unwrap_or_default()
    }

    /// The newest 8-digit code sent to `destination` for `purpose`.
    pub fn code_sent(&self, destination: &str, purpose: &str) -> String {
        let messages = self.messages_to(destination);
        let body = messages
            .iter()
            .find(|message| message["purpose"] == purpose)
            .and_then(|message| message["body"].as_str())
            .unwrap_or_else(|| panic!("no {purpose} message to {destination}: {messages:?}"))
            .to_owned();
        body.split(|c: char| !c.is_ascii_digit())
            .find(|digits| digits.len() == 8)
            .unwrap_or_else(|| panic!("no 8-digit code in {body}"))
            .to_owned()
    }
}

/// The password every test wallet uses.
pub const PASSWORD: &str = "correct horse battery staple 金庫";

/// Wallet set-up steps the API tests share.
impl Server {
    /// Signs up and verifies both contacts; returns the user id.
    pub fn active_user(&self, email: &str, phone: &str) -> String {
        let response = self.call(
            "POST",
            "/api/v1/signup",
            Some(json!({ "email": email, "password": PASSWORD, "phone": phone })),
            None,
        );
        assert_eq!(response.status, 202, "{}", response.body);
        let user_id = json_of(&response)["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let email_code = self.code_sent(email, "verify_email");
        // Codes go to the normalised number (E.164), whatever form was typed.
        let digits: String = phone
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect();
        let e164 = match digits.strip_prefix('0') {
            Some(rest) => format!("+81{rest}"),
            None => digits,
        };
        let phone_code = self.code_sent(&e164, "verify_phone");
        let verified = self.call(
            "POST",
            &format!("/api/v1/signup/{user_id}/verify"),
            Some(json!({ "channel": "email", "code": email_code })),
            None,
        );
        assert_eq!(verified.status, 200, "{}", verified.body);
        let verified = self.call(
            "POST",
            &format!("/api/v1/signup/{user_id}/verify"),
            Some(json!({ "channel": "sms", "code": phone_code })),
            None,
        );
        assert_eq!(verified.status, 200, "{}", verified.body);
        assert_eq!(json_of(&verified)["status"], "active");
        user_id
    }

    pub fn log_in(&self, email: &str, password: &str) -> HttpResponse {
        self.call(
            "POST",
            "/api/v1/sessions",
            Some(json!({ "email": email, "password": password })),
            None,
        )
    }

    pub fn token(&self, email: &str) -> String {
        let response = self.log_in(email, PASSWORD);
        assert_eq!(response.status, 201, "{}", response.body);
        json_of(&response)["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Sets up TOTP; returns the secret and the rotated session token.
    pub fn enrol_totp(&self, token: &str) -> (String, String) {
        let enrolment = self.call("POST", "/api/v1/me/totp", None, Some(token));
        assert_eq!(enrolment.status, 200, "{}", enrolment.body);
        let secret = json_of(&enrolment)["secret_base32"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let confirmed = self.call(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(json!({ "code": totp_code(&secret, 0) })),
            Some(token),
        );
        assert_eq!(confirmed.status, 200, "{}", confirmed.body);
        let body = json_of(&confirmed);
        assert_eq!(body["recovery_codes"].as_array().map(Vec::len), Some(10));
        (
            secret,
            body["session"]["token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

pub fn json_of(response: &HttpResponse) -> serde_json::Value {
    serde_json::from_str(&response.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {} {}", response.status, response.body))
}

/// Percent-encodes a query value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The code an authenticator app shows `steps_ahead` 30-second steps from now.
pub fn totp_code(secret_base32: &str, steps_ahead: u64) -> String {
    let secret =
        totp_rs::Secret::try_from_base32(secret_base32).unwrap_or_else(|error| panic!("{error:?}"));
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    totp.generate(now_s + steps_ahead * 30).to_string()
}

/// Fixed one-hour rate-limit windows start on the hour: a test that counts hits to a limit
/// waits out the last `margin_s` seconds of an hour so its hits fall in one window.
pub fn away_from_hour_boundary(margin_s: u64) {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let left_s = 3_600 - now_s % 3_600;
    if left_s <= margin_s {
        std::thread::sleep(std::time::Duration::from_secs(left_s + 1));
    }
}

/// The password every test operator uses.
pub const OPERATOR_PASSWORD: &str = "tsuki-no-usagi mochi 2026";

/// An operator's id, sign-in name and the secret their authenticator app holds.
pub struct Enrolled {
    pub operator_id: String,
    pub email: String,
    pub secret_base32: String,
}

/// `kinko admin create-operator`, with the password on standard input and the same key the
/// test servers use (`KINKO_SECRET_KEY`), so the server can open the sealed TOTP secret.
pub fn create_operator_with_cli(store: &[String], email: &str, role: &str) -> Enrolled {
    let mut child = kinko()
        .env("KINKO_SECRET_KEY", TEST_SECRET_KEY)
        .args(["admin", "create-operator", "--email", email, "--role", role])
        .args(store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn: {error}"));
    child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("no stdin"))
        .write_all(format!("{OPERATOR_PASSWORD}\n").as_bytes())
        .unwrap_or_else(|error| panic!("{error}"));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secret_base32 = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("secret (base32): "))
        .unwrap_or_else(|| panic!("no base32 secret in {stdout}"))
        .to_owned();
    let operator_id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("operator ")?.split_once(" created"))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no operator id in {stdout}"));
    Enrolled {
        operator_id,
        email: email.to_owned(),
        secret_base32,
    }
}

/// A 6-digit code that is none of the codes the server would accept around now.
pub fn wrong_code(secret_base32: &str) -> String {
    let secret =
        totp_rs::Secret::try_from_base32(secret_base32).unwrap_or_else(|error| panic!("{error:?}"));
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let near: Vec<String> = (0..5)
        .map(|step| {
            totp.generate((now_s + step * 30).saturating_sub(60))
                .to_string()
        })
        .collect();
    (0..10u32)
        .map(|digit| digit.to_string().repeat(6))
        .find(|candidate| !near.contains(candidate))
        .unwrap_or_else(|| panic!("ten codes cannot all be near"))
}

pub fn text_of(value: &serde_json::Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

/// Operator steps the API tests share.
impl Server {
    /// A fresh store with one admin made by the CLI, and a server on it.
    pub fn start_with_admin(backend: &str, environment: &[(&str, &str)]) -> (Self, Enrolled) {
        let (store, dir) = fresh_store(backend);
        let admin = create_operator_with_cli(&store, "root@kinko.example", "admin");
        let (child, address) = spawn_server_with("serve", &store, environment);
        (
            Self {
                child,
                address,
                store,
                _dir: dir,
            },
            admin,
        )
    }

    pub fn sign_in_with(&self, email: &str, password: &str, totp_code: &str) -> HttpResponse {
        self.call(
            "POST",
            "/api/v1/operator/sessions",
            Some(json!({ "email": email, "password": password, "totp_code": totp_code })),
            None,
        )
    }

    /// Signs `operator` in with the code `steps_ahead` steps from now; returns the token.
    pub fn operator_token(&self, operator: &Enrolled, steps_ahead: u64) -> String {
        let response = self.sign_in_with(
            &operator.email,
            OPERATOR_PASSWORD,
            &totp_code(&operator.secret_base32, steps_ahead),
        );
        assert_eq!(response.status, 201, "{}", response.body);
        let token = text_of(&json_of(&response)["token"]);
        assert!(token.starts_with("kinko_o_"), "{token}");
        token
    }

    /// An admin creates an operator through the API; returns its enrolment.
    pub fn create_operator(
        &self,
        admin_token: &str,
        email: &str,
        role: &str,
        bank_code: Option<&str>,
    ) -> Enrolled {
        let response = self.call(
            "POST",
            "/api/v1/operator/operators",
            Some(json!({
                "email": email,
                "role": role,
                "bank_code": bank_code,
                "password": OPERATOR_PASSWORD,
                "reason": "new hire, onboarding ticket 12",
            })),
            Some(admin_token),
        );
        assert_eq!(response.status, 201, "{}", response.body);
        let body = json_of(&response);
        assert_eq!(body["operator"]["role"], role, "{body}");
        assert!(
            text_of(&body["otpauth_url"]).starts_with("otpauth://totp/Kinko:"),
            "{body}"
        );
        Enrolled {
            operator_id: text_of(&body["operator"]["operator_id"]),
            // As stored: trimmed and lower-cased.
            email: text_of(&body["operator"]["email"]),
            secret_base32: text_of(&body["secret_base32"]),
        }
    }

    /// Signs a wallet user up with both contacts verified and signs them in once; returns the
    /// user id and the wallet session token.
    pub fn wallet_user(&self, email: &str, phone_e164: &str) -> (String, String) {
        let response = self.call(
            "POST",
            "/api/v1/signup",
            Some(json!({ "email": email, "password": PASSWORD, "phone": phone_e164 })),
            None,
        );
        assert_eq!(response.status, 202, "{}", response.body);
        let user_id = text_of(&json_of(&response)["user_id"]);
        for (channel, destination, purpose) in [
            ("email", email, "verify_email"),
            ("sms", phone_e164, "verify_phone"),
        ] {
            let code = self.code_sent(destination, purpose);
            let verified = self.call(
                "POST",
                &format!("/api/v1/signup/{user_id}/verify"),
                Some(json!({ "channel": channel, "code": code })),
                None,
            );
            assert_eq!(verified.status, 200, "{}", verified.body);
        }
        let signed_in = self.call(
            "POST",
            "/api/v1/sessions",
            Some(json!({ "email": email, "password": PASSWORD })),
            None,
        );
        assert_eq!(signed_in.status, 201, "{}", signed_in.body);
        (user_id, text_of(&json_of(&signed_in)["token"]))
    }
}
