//! The bank's OAuth 2.0 authorization server in the FAPI 2.0 shape, as plain functions over
//! its store (HTTP handlers call these): pushed authorization requests (RFC 9126), the
//! customer's login and consent, single-use codes bound to client, redirect URI, PKCE
//! challenge and account, the token endpoint with `private_key_jwt` and DPoP, and the check
//! every protected resource runs on a DPoP-bound access token.

use kinko_ledger::StoreError;
use kinko_store::StoreLocation;
use kinko_store::sql::{Database, Tx, Value};
use secrecy::SecretString;
use subtle::ConstantTimeEq as _;

use crate::client_auth::{self, Client, ClientAuthError};
use crate::dpop::{self, DpopError};
use crate::pkce::{self, PkceError};
use crate::random::{self, RandomError, stored_hash};
use crate::store::{self, Notice};

/// A pushed request lives 90 s (RFC 9126 suggests a short life; FAPI 2.0 < 600 s).
pub const PUSHED_REQUEST_LIFETIME_MS: i64 = 90_000;
/// A code lives 60 s at most (FAPI 2.0; THREATS requirement 7).
pub const CODE_LIFETIME_MS: i64 = 60_000;
/// An access token lives 10 min; the client refreshes it with the link's refresh token.
pub const ACCESS_TOKEN_LIFETIME_MS: i64 = 10 * 60_000;
/// A customer's login counts for consent for 10 minutes.
pub const LOGIN_FRESHNESS_MS: i64 = 10 * 60_000;
/// Consecutive failed bank logins before the login locks, and for how long.
pub const LOGIN_FAILURES_MAX: i64 = 5;
pub const LOGIN_LOCK_MS: i64 = 15 * 60_000;
/// Scopes a client may ask for.
pub const SCOPES: &[&str] = &["holder_match", "debits", "credits"];
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// Bounds on client-chosen strings.
pub const STATE_LENGTH_MAX: usize = 512;
pub const SCOPE_LENGTH_MAX: usize = 256;

/// Every refusal, each with a stable code and the RFC 6749 / 9126 / 9449 error name.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("client authentication failed: {0}")]
    InvalidClient(ClientAuthError),
    #[error("the request names another client than the one authenticated")]
    ClientMismatch,
    #[error("only response_type=code is supported")]
    UnsupportedResponseType,
    #[error("only grant_type=authorization_code and refresh_token are supported")]
    UnsupportedGrantType,
    #[error("the redirect URI is not registered for this client")]
    RedirectUriInvalid,
    #[error("the scope is empty, too long or names an unknown scope")]
    ScopeInvalid,
    #[error("the request is malformed: {0}")]
    RequestInvalid(&'static str),
    #[error("no such bank code here")]
    UnknownBank,
    #[error("PKCE: {0}")]
    Pkce(PkceError),
    #[error("an authorization request must come as a pushed request_uri")]
    ParRequired,
    #[error("the request_uri is unknown, expired, used or another client's")]
    RequestUriInvalid,
    #[error("the bank login failed")]
    LoginFailed,
    #[error("the bank login is too old to consent with")]
    LoginStale,
    #[error("the chosen account is not the customer's at the requested bank")]
    AccountNotEligible,
    #[error("the code is unknown, another client's or for another redirect URI")]
    CodeInvalid,
    #[error("the code has expired")]
    CodeExpired,
    #[error("the code was already used; tokens issued from it are revoked")]
    CodeReplayed,
    #[error("DPoP: {0}")]
    Dpop(DpopError),
    #[error("the access token is unknown, expired or revoked")]
    TokenInvalid,
    #[error(
        "the refresh token is unknown, rotated, of an ended link, another client's, or presented with another key"
    )]
    RefreshTokenInvalid,
    #[error("no such link of this customer")]
    LinkNotFound,
    #[error("no such debit of this customer")]
    DebitNotFound,
    #[error("no such account of this customer")]
    AccountNotFound,
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ClientAuthError> for OAuthError {
    fn from(error: ClientAuthError) -> Self {
        match error {
            ClientAuthError::Store(store) => OAuthError::Store(store),
            other => OAuthError::InvalidClient(other),
        }
    }
}

impl From<DpopError> for OAuthError {
    fn from(error: DpopError) -> Self {
        match error {
            DpopError::Store(store) => OAuthError::Store(store),
            other => OAuthError::Dpop(other),
        }
    }
}

impl From<PkceError> for OAuthError {
    fn from(error: PkceError) -> Self {
        OAuthError::Pkce(error)
    }
}

impl OAuthError {
    /// The stable code for logs, tests and problem+json.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidClient(ClientAuthError::Replayed) => {
                "BANK_OAUTH_CLIENT_ASSERTION_REPLAYED"
            }
            OAuthError::InvalidClient(ClientAuthError::SignatureInvalid) => {
                "BANK_OAUTH_CLIENT_ASSERTION_SIGNATURE_INVALID"
            }
            OAuthError::InvalidClient(ClientAuthError::Expired) => {
                "BANK_OAUTH_CLIENT_ASSERTION_EXPIRED"
            }
            OAuthError::InvalidClient(_) => "BANK_OAUTH_INVALID_CLIENT",
            OAuthError::ClientMismatch => "BANK_OAUTH_CLIENT_MISMATCH",
            OAuthError::UnsupportedResponseType => "BANK_OAUTH_UNSUPPORTED_RESPONSE_TYPE",
            OAuthError::UnsupportedGrantType => "BANK_OAUTH_UNSUPPORTED_GRANT_TYPE",
            OAuthError::RedirectUriInvalid => "BANK_OAUTH_REDIRECT_URI_INVALID",
            OAuthError::ScopeInvalid => "BANK_OAUTH_SCOPE_INVALID",
            OAuthError::RequestInvalid(_) => "BANK_OAUTH_INVALID_REQUEST",
            OAuthError::UnknownBank => "BANK_OAUTH_UNKNOWN_BANK",
            OAuthError::Pkce(PkceError::MethodUnsupported) => "BANK_OAUTH_PKCE_METHOD_UNSUPPORTED",
            OAuthError::Pkce(PkceError::ChallengeMalformed) => {
                "BANK_OAUTH_PKCE_CHALLENGE_MALFORMED"
            }
            OAuthError::Pkce(PkceError::VerifierMissing) => "BANK_OAUTH_PKCE_VERIFIER_MISSING",
            OAuthError::Pkce(PkceError::VerifierMalformed) => "BANK_OAUTH_PKCE_VERIFIER_MALFORMED",
            OAuthError::Pkce(PkceError::Mismatch) => "BANK_OAUTH_PKCE_MISMATCH",
            OAuthError::ParRequired => "BANK_OAUTH_PAR_REQUIRED",
            OAuthError::RequestUriInvalid => "BANK_OAUTH_REQUEST_URI_INVALID",
            OAuthError::LoginFailed => "BANK_LOGIN_FAILED",
            OAuthError::LoginStale => "BANK_LOGIN_STALE",
            OAuthError::AccountNotEligible => "BANK_OAUTH_ACCOUNT_NOT_ELIGIBLE",
            OAuthError::CodeInvalid => "BANK_OAUTH_CODE_INVALID",
            OAuthError::CodeExpired => "BANK_OAUTH_CODE_EXPIRED",
            OAuthError::CodeReplayed => "BANK_OAUTH_CODE_REPLAYED",
            OAuthError::Dpop(DpopError::Missing) => "BANK_OAUTH_DPOP_MISSING",
            OAuthError::Dpop(DpopError::Replayed) => "BANK_OAUTH_DPOP_REPLAYED",
            OAuthError::Dpop(DpopError::KeyMismatch) => "BANK_OAUTH_DPOP_KEY_MISMATCH",
            OAuthError::Dpop(_) => "BANK_OAUTH_DPOP_INVALID",
            OAuthError::TokenInvalid => "BANK_OAUTH_TOKEN_INVALID",
            OAuthError::RefreshTokenInvalid => "BANK_OAUTH_REFRESH_TOKEN_INVALID",
            OAuthError::LinkNotFound => "BANK_LINK_NOT_FOUND",
            OAuthError::DebitNotFound => "BANK_DEBIT_NOT_FOUND",
            OAuthError::AccountNotFound => "BANK_ACCOUNT_NOT_FOUND",
            OAuthError::Random(_) => "BANK_RANDOM_FAILED",
            OAuthError::Store(_) => "BANK_STORE_FAILED",
        }
    }

    /// The standard OAuth error name a client sees.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::UnsupportedResponseType => "unsupported_response_type",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::ScopeInvalid => "invalid_scope",
            OAuthError::ClientMismatch
            | OAuthError::RedirectUriInvalid
            | OAuthError::RequestInvalid(_)
            | OAuthError::UnknownBank
            | OAuthError::ParRequired
            | OAuthError::Pkce(PkceError::MethodUnsupported | PkceError::ChallengeMalformed) => {
                "invalid_request"
            }
            OAuthError::RequestUriInvalid => "invalid_request_uri",
            OAuthError::LoginFailed | OAuthError::AccountNotEligible => "access_denied",
            OAuthError::LoginStale => "login_required",
            OAuthError::Pkce(_)
            | OAuthError::CodeInvalid
            | OAuthError::CodeExpired
            | OAuthError::CodeReplayed
            | OAuthError::RefreshTokenInvalid => "invalid_grant",
            OAuthError::LinkNotFound | OAuthError::DebitNotFound | OAuthError::AccountNotFound => {
                "not_found"
            }
            // At a resource, a missing proof or one for another key makes the token unusable.
            OAuthError::Dpop(DpopError::KeyMismatch) | OAuthError::TokenInvalid => "invalid_token",
            OAuthError::Dpop(_) => "invalid_dpop_proof",
            OAuthError::Random(_) | OAuthError::Store(_) => "server_error",
        }
    }
}

/// What the client pushes (RFC 9126): the authorization request, kept server-side.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AuthorizationRequest {
    pub response_type: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub code_challenge: String,
    pub code_challenge_method: String,
    pub state: String,
    /// Which of the sandbox's banks the customer picked in the wallet.
    pub bank_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PushedRequest {
    pub request_uri: String,
    pub expires_in: i64,
}

/// What the bank's consent page shows: who asks, for what, at which bank.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    pub client_name: String,
    pub bank_code: String,
    pub scope: String,
    pub redirect_uri: String,
}

/// A customer who passed the bank's own two factors (password and TOTP). Only
/// [`Bank::authenticate_customer`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedCustomer {
    customer_id: uuid::Uuid,
    authenticated_at_ms: i64,
}

impl AuthenticatedCustomer {
    pub fn customer_id(&self) -> uuid::Uuid {
        self.customer_id
    }

    pub fn authenticated_at_ms(&self) -> i64 {
        self.authenticated_at_ms
    }

    /// A sign-in restored from the bank's own session store.
    pub(crate) fn restored(customer_id: uuid::Uuid, authenticated_at_ms: i64) -> Self {
        Self {
            customer_id,
            authenticated_at_ms,
        }
    }
}

/// The redirect back to the client when the customer says no (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialResponse {
    pub redirect_uri: String,
    pub state: String,
    pub iss: String,
}

/// The redirect back to the client after consent (with `iss`, RFC 9207).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationResponse {
    pub redirect_uri: String,
    pub code: String,
    pub state: String,
    pub iss: String,
}

/// The token request (RFC 6749 §4.1.3 with RFC 7523 client authentication and RFC 9449).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct TokenRequest {
    pub grant_type: String,
    pub code: String,
    pub redirect_uri: String,
    pub code_verifier: Option<String>,
    pub client_assertion_type: String,
    pub client_assertion: String,
}

/// The refresh grant (RFC 6749 §6) with client authentication and a proof by the link's key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RefreshRequest {
    pub grant_type: String,
    pub refresh_token: String,
    pub client_assertion_type: String,
    pub client_assertion: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `DPoP`: the token is useless without the key.
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    /// Lives as long as the link, bound to the same key; each use rotates it.
    pub refresh_token: String,
    pub link_id: uuid::Uuid,
    /// Pairwise and stable: the same account gives the same value to the same client only.
    pub account_ref: String,
    /// What the wallet may show: `普通 123 ****567`.
    pub account_label: String,
}

/// What a valid token presented with its proof allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGrant {
    pub link_id: uuid::Uuid,
    pub client_id: String,
    pub customer_id: uuid::Uuid,
    pub account_id: uuid::Uuid,
    pub scope: String,
}

/// The sandbox bank's authorization server over its own store.
pub struct Bank {
    database: Database,
    issuer: String,
    /// The key of the pairwise `account_ref` HMAC, kept in the bank's store.
    pub(crate) account_ref_key: Vec<u8>,
    /// The key that signs webhook events, kept in the bank's store, and its `kid`.
    pub(crate) signing_key: p256::ecdsa::SigningKey,
    pub(crate) signing_kid: String,
}

impl Bank {
    /// Opens the bank's own store (not Kinko's) and creates its tables.
    pub fn open(location: &StoreLocation, issuer: &str) -> Result<Self, StoreError> {
        Self::new(Database::open(location)?, issuer)
    }

    pub fn new(database: Database, issuer: &str) -> Result<Self, StoreError> {
        store::ensure_schema(&database)?;
        let account_ref_key = crate::links::load_account_ref_key(&database)?;
        let signing_key = crate::webhooks::load_signing_key(&database)?;
        let signing_kid = crate::jws::Jwk::from_verifying_key(signing_key.verifying_key())
            .map_err(|error| StoreError::new(format!("the bank's signing key: {error}")))?
            .thumbprint();
        Ok(Self {
            database,
            issuer: issuer.trim_end_matches('/').to_owned(),
            account_ref_key,
            signing_key,
            signing_kid,
        })
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The issuer identifier: what a client assertion's `aud` names.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn par_endpoint(&self) -> String {
        format!("{}/oauth/par", self.issuer)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.issuer)
    }

    pub fn revocation_endpoint(&self) -> String {
        format!("{}/oauth/revoke", self.issuer)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.issuer)
    }

    pub fn register_client(&self, client: &Client) -> Result<(), StoreError> {
        client_auth::register(&self.database, client)
    }

    /// The legacy verify endpoint (`POST /v1/legacy/verify`), where a client assertion may
    /// also be addressed.
    pub fn legacy_verify_endpoint(&self) -> String {
        format!("{}/v1/legacy/verify", self.issuer)
    }

    pub(crate) fn authenticate_client(
        &self,
        assertion: &str,
        now_ms: i64,
    ) -> Result<Client, OAuthError> {
        let par = self.par_endpoint();
        let token = self.token_endpoint();
        let legacy = self.legacy_verify_endpoint();
        let revoke = self.revocation_endpoint();
        let audiences = [
            self.issuer.as_str(),
            par.as_str(),
            token.as_str(),
            legacy.as_str(),
            revoke.as_str(),
        ];
        Ok(client_auth::authenticate(
            &self.database,
            assertion,
            &audiences,
            now_ms,
        )?)
    }

    /// The PAR endpoint: checks the client and the request, keeps it, and answers a
    /// single-use `request_uri`.
    pub fn push_authorization_request(
        &self,
        client_assertion: &str,
        request: &AuthorizationRequest,
        now_ms: i64,
    ) -> Result<PushedRequest, OAuthError> {
        let client = self.authenticate_client(client_assertion, now_ms)?;
        if request.client_id != client.client_id {
            return Err(OAuthError::ClientMismatch);
        }
        if request.response_type != "code" {
            return Err(OAuthError::UnsupportedResponseType);
        }
        if !client.redirect_uris.contains(&request.redirect_uri) {
            return Err(OAuthError::RedirectUriInvalid);
        }
        let scope_valid = !request.scope.is_empty()
            && request.scope.len() <= SCOPE_LENGTH_MAX
            && request
                .scope
                .split(' ')
                .all(|scope| SCOPES.contains(&scope));
        if !scope_valid {
            return Err(OAuthError::ScopeInvalid);
        }
        if request.state.is_empty() || request.state.len() > STATE_LENGTH_MAX {
            return Err(OAuthError::RequestInvalid("state"));
        }
        pkce::check_challenge(&request.code_challenge, &request.code_challenge_method)?;
        let request_uri = format!("{REQUEST_URI_PREFIX}{}", random::token()?);
        self.database.transaction(|tx: &mut dyn Tx| {
            let known = tx
                .query_opt(
                    "SELECT code FROM bank_banks WHERE code = $1",
                    &[request.bank_code.as_str().into()],
                )?
                .is_some();
            if !known {
                return Err(OAuthError::UnknownBank);
            }
            tx.execute(
                "INSERT INTO bank_oauth_pushed_requests (request_uri_hash, client_id, bank_code,
                 redirect_uri, scope, code_challenge, state, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    stored_hash(&request_uri).into(),
                    client.client_id.as_str().into(),
                    request.bank_code.as_str().into(),
                    request.redirect_uri.as_str().into(),
                    request.scope.as_str().into(),
                    request.code_challenge.as_str().into(),
                    request.state.as_str().into(),
                    (now_ms + PUSHED_REQUEST_LIFETIME_MS).into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(PushedRequest {
            request_uri,
            expires_in: PUSHED_REQUEST_LIFETIME_MS / 1_000,
        })
    }

    /// The authorization endpoint's first look: only a pushed request is accepted, and only
    /// by the client that pushed it. Does not spend the request_uri.
    pub fn authorization_request(
        &self,
        client_id: &str,
        request_uri: Option<&str>,
        now_ms: i64,
    ) -> Result<PendingAuthorization, OAuthError> {
        let request_uri = request_uri.ok_or(OAuthError::ParRequired)?;
        self.database.transaction(|tx: &mut dyn Tx| {
            let row = pushed_request(tx, client_id, request_uri, now_ms)?;
            let client = client_auth::find(tx, client_id)?.ok_or(OAuthError::RequestUriInvalid)?;
            Ok(PendingAuthorization {
                client_id: client.client_id,
                client_name: client.name,
                bank_code: row.bank_code,
                scope: row.scope,
                redirect_uri: row.redirect_uri,
            })
        })
    }

    /// The bank's own login: password and TOTP, one answer for every failure. An unknown
    /// online id costs the same password check as a known one; a TOTP code is good once;
    /// five failures in a row lock the login for 15 minutes and tell the customer.
    pub fn authenticate_customer(
        &self,
        online_id: &str,
        password: &SecretString,
        totp_code: &str,
        now_ms: i64,
    ) -> Result<AuthenticatedCustomer, OAuthError> {
        type Outcome = Result<AuthenticatedCustomer, OAuthError>;
        self.database
            .transaction(|tx: &mut dyn Tx| -> Result<Outcome, StoreError> {
                let Some(login) = store::customer_login(tx, online_id)? else {
                    kinko_identity::password::verify_unknown_user(password);
                    return Ok(Err(OAuthError::LoginFailed));
                };
                // The password is checked even when locked, so a locked account answers in the
                // same time as an open one.
                let password_ok =
                    kinko_identity::password::verify_password(&login.password_hash, password);
                let step = totp_step(&login.totp_secret, totp_code, now_ms)
                    .filter(|step| *step > login.totp_last_step);
                let locked = now_ms < login.locked_until_ms;
                match step {
                    Some(step) if password_ok && !locked => {
                        store::record_login_success(tx, login.id, step)?;
                        Ok(Ok(AuthenticatedCustomer {
                            customer_id: login.id,
                            authenticated_at_ms: now_ms,
                        }))
                    }
                    _ => {
                        if !locked {
                            store::record_login_failure(
                                tx,
                                login.id,
                                LOGIN_FAILURES_MAX,
                                LOGIN_LOCK_MS,
                                now_ms,
                            )?;
                        }
                        // Committed although the login fails: the count must stick.
                        Ok(Err(OAuthError::LoginFailed))
                    }
                }
            })?
    }

    /// The customer approved the pushed request for `account_id`: spends the request_uri,
    /// issues a code bound to everything it was asked with, and tells the customer on the
    /// bank's own channel.
    pub fn authorize(
        &self,
        client_id: &str,
        request_uri: Option<&str>,
        customer: &AuthenticatedCustomer,
        account_id: uuid::Uuid,
        now_ms: i64,
    ) -> Result<AuthorizationResponse, OAuthError> {
        let request_uri = request_uri.ok_or(OAuthError::ParRequired)?;
        if now_ms - customer.authenticated_at_ms > LOGIN_FRESHNESS_MS {
            return Err(OAuthError::LoginStale);
        }
        let code = random::token()?;
        self.database.transaction(|tx: &mut dyn Tx| {
            let pushed = pushed_request(tx, client_id, request_uri, now_ms)?;
            let spent = tx.execute(
                "UPDATE bank_oauth_pushed_requests SET used_at_ms = $2
                 WHERE request_uri_hash = $1 AND used_at_ms IS NULL",
                &[stored_hash(request_uri).into(), now_ms.into()],
            )?;
            if spent != 1 {
                return Err(OAuthError::RequestUriInvalid);
            }
            let account = store::account(tx, account_id)?
                .filter(|account| {
                    account.customer_id == customer.customer_id
                        && account.bank_code == pushed.bank_code
                })
                .ok_or(OAuthError::AccountNotEligible)?;
            tx.execute(
                "INSERT INTO bank_oauth_codes (code_hash, client_id, redirect_uri, scope,
                 code_challenge, customer_id, account_id, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    stored_hash(&code).into(),
                    client_id.into(),
                    pushed.redirect_uri.as_str().into(),
                    pushed.scope.as_str().into(),
                    pushed.code_challenge.as_str().into(),
                    Value::Uuid(customer.customer_id.as_u128()),
                    Value::Uuid(account.id.as_u128()),
                    (now_ms + CODE_LIFETIME_MS).into(),
                ],
            )?;
            let client_name = client_auth::find(tx, client_id)?
                .map_or_else(|| client_id.to_owned(), |client| client.name);
            store::record_notice(
                tx,
                customer.customer_id,
                "link_requested",
                &format!(
                    "{client_name} から、{} 支店 {} {} の口座への連携（{}）が要求され、承認されました。\
                     心当たりがない場合はすぐに連携を解除し、当行にご連絡ください。",
                    account.branch,
                    account.kind.label_ja(),
                    masked(&account.number),
                    pushed.scope
                ),
                now_ms,
            )?;
            Ok(AuthorizationResponse {
                redirect_uri: pushed.redirect_uri,
                code: code.clone(),
                state: pushed.state,
                iss: self.issuer.clone(),
            })
        })
    }

    /// The customer said no: spends the request_uri and answers where to send the browser
    /// with `error=access_denied`.
    pub fn deny(
        &self,
        client_id: &str,
        request_uri: Option<&str>,
        now_ms: i64,
    ) -> Result<DenialResponse, OAuthError> {
        let request_uri = request_uri.ok_or(OAuthError::ParRequired)?;
        self.database.transaction(|tx: &mut dyn Tx| {
            let pushed = pushed_request(tx, client_id, request_uri, now_ms)?;
            let spent = tx.execute(
                "UPDATE bank_oauth_pushed_requests SET used_at_ms = $2
                 WHERE request_uri_hash = $1 AND used_at_ms IS NULL",
                &[stored_hash(request_uri).into(), now_ms.into()],
            )?;
            if spent != 1 {
                return Err(OAuthError::RequestUriInvalid);
            }
            Ok(DenialResponse {
                redirect_uri: pushed.redirect_uri,
                state: pushed.state,
                iss: self.issuer.clone(),
            })
        })
    }

    /// The token endpoint: client assertion, DPoP proof, code and PKCE verifier → a
    /// DPoP-bound access token. A code presented twice revokes what the first use issued.
    pub fn exchange_code(
        &self,
        request: &TokenRequest,
        dpop_proof: Option<&str>,
        now_ms: i64,
    ) -> Result<TokenResponse, OAuthError> {
        if request.grant_type != "authorization_code" {
            return Err(OAuthError::UnsupportedGrantType);
        }
        if request.client_assertion_type != client_auth::ASSERTION_TYPE {
            return Err(OAuthError::InvalidClient(ClientAuthError::Malformed));
        }
        let client = self.authenticate_client(&request.client_assertion, now_ms)?;
        let proof = dpop::verify(
            &self.database,
            dpop_proof,
            "POST",
            &self.token_endpoint(),
            None,
            now_ms,
        )?;
        let code_hash = stored_hash(&request.code);
        let tokens = crate::links::FreshTokens::new()?;
        let outcome = self.database.transaction(|tx: &mut dyn Tx| {
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT client_id, redirect_uri, scope, code_challenge, customer_id,
                         account_id, expires_at_ms, used_at_ms
                         FROM bank_oauth_codes WHERE code_hash = $1{}",
                        tx.for_update()
                    ),
                    &[code_hash.as_str().into()],
                )?
                .ok_or(OAuthError::CodeInvalid)?;
            if row.opt_int(7)?.is_some() {
                return Err(OAuthError::CodeReplayed);
            }
            if row.text(0)? != client.client_id || row.text(1)? != request.redirect_uri {
                return Err(OAuthError::CodeInvalid);
            }
            if now_ms >= row.int(6)? {
                return Err(OAuthError::CodeExpired);
            }
            pkce::verify(request.code_verifier.as_deref(), &row.text(3)?)?;
            let spent = tx.execute(
                "UPDATE bank_oauth_codes SET used_at_ms = $2
                 WHERE code_hash = $1 AND used_at_ms IS NULL",
                &[code_hash.as_str().into(), now_ms.into()],
            )?;
            if spent != 1 {
                return Err(OAuthError::CodeReplayed);
            }
            let link = crate::links::create_link(
                tx,
                &client,
                uuid::Uuid::from_u128(row.uuid(4)?),
                uuid::Uuid::from_u128(row.uuid(5)?),
                &row.text(2)?,
                &proof.jkt,
                &code_hash,
                now_ms,
            )?;
            Ok(self.issue_tokens(tx, &link, &tokens, now_ms)?)
        });
        if let Err(OAuthError::CodeReplayed) = outcome {
            // RFC 6749 §4.1.2: a code used twice may be stolen; end the link it made, with
            // every token of it. Its own transaction: the revocation stays although the
            // request fails.
            self.database.transaction(|tx: &mut dyn Tx| {
                let link = tx.query_opt(
                    "SELECT id FROM bank_links WHERE code_hash = $1",
                    &[code_hash.as_str().into()],
                )?;
                if let Some(link) = link {
                    self.end_link_with_event(
                        tx,
                        uuid::Uuid::from_u128(link.uuid(0)?),
                        crate::links::EndReason::CodeReplayed,
                        now_ms,
                    )?;
                }
                tx.execute(
                    "UPDATE bank_oauth_tokens SET revoked_at_ms = $2
                     WHERE code_hash = $1 AND revoked_at_ms IS NULL",
                    &[code_hash.as_str().into(), now_ms.into()],
                )?;
                Ok::<_, OAuthError>(())
            })?;
        }
        outcome
    }

    /// The check every protected resource runs: a live token, presented with a proof signed
    /// by the key it is bound to, for this method and URL, carrying the token's hash.
    pub fn authorize_resource(
        &self,
        access_token: &str,
        dpop_proof: Option<&str>,
        method: &str,
        url: &str,
        now_ms: i64,
    ) -> Result<ResourceGrant, OAuthError> {
        // A token lives only while its link does: ending the link ends every token of it.
        let row = self
            .database
            .transaction(|tx: &mut dyn Tx| {
                tx.query_opt(
                    "SELECT t.client_id, t.customer_id, t.account_id, t.scope, t.jkt,
                     t.expires_at_ms, t.revoked_at_ms, l.id, l.ended_at_ms
                     FROM bank_oauth_tokens t JOIN bank_links l ON l.id = t.link_id
                     WHERE t.token_hash = $1",
                    &[stored_hash(access_token).into()],
                )
            })?
            .ok_or(OAuthError::TokenInvalid)?;
        if row.opt_int(6)?.is_some() || row.opt_int(8)?.is_some() || now_ms >= row.int(5)? {
            return Err(OAuthError::TokenInvalid);
        }
        let proof = dpop::verify(
            &self.database,
            dpop_proof,
            method,
            url,
            Some(access_token),
            now_ms,
        )?;
        let bound_jkt = row.text(4)?;
        if !bool::from(proof.jkt.as_bytes().ct_eq(bound_jkt.as_bytes())) {
            return Err(OAuthError::Dpop(DpopError::KeyMismatch));
        }
        Ok(ResourceGrant {
            link_id: uuid::Uuid::from_u128(row.uuid(7)?),
            client_id: row.text(0)?,
            customer_id: uuid::Uuid::from_u128(row.uuid(1)?),
            account_id: uuid::Uuid::from_u128(row.uuid(2)?),
            scope: row.text(3)?,
        })
    }

    /// The notices the bank sent a customer, oldest first.
    pub fn notices(&self, customer_id: uuid::Uuid) -> Result<Vec<Notice>, StoreError> {
        self.database
            .transaction(|tx: &mut dyn Tx| store::notices_of(tx, customer_id))
    }
}

struct PushedRow {
    bank_code: String,
    redirect_uri: String,
    scope: String,
    code_challenge: String,
    state: String,
}

/// A live, unspent pushed request of this client.
fn pushed_request(
    tx: &mut dyn Tx,
    client_id: &str,
    request_uri: &str,
    now_ms: i64,
) -> Result<PushedRow, OAuthError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT bank_code, redirect_uri, scope, code_challenge, state FROM
                 bank_oauth_pushed_requests WHERE request_uri_hash = $1 AND client_id = $2
                 AND used_at_ms IS NULL AND expires_at_ms > $3{}",
                tx.for_update()
            ),
            &[
                stored_hash(request_uri).into(),
                client_id.into(),
                now_ms.into(),
            ],
        )?
        .ok_or(OAuthError::RequestUriInvalid)?;
    Ok(PushedRow {
        bank_code: row.text(0)?,
        redirect_uri: row.text(1)?,
        scope: row.text(2)?,
        code_challenge: row.text(3)?,
        state: row.text(4)?,
    })
}

/// An account number with all but its last three digits hidden, for notices.
pub(crate) fn masked(number: &str) -> String {
    let keep = number.chars().count().saturating_sub(3);
    number
        .chars()
        .enumerate()
        .map(|(index, digit)| if index < keep { '*' } else { digit })
        .collect()
}

/// The time step of the TOTP code, if it is the one the customer's authenticator shows now
/// (SHA-1, 6 digits, 30 s, one step of skew: RFC 6238 defaults every app supports).
/// totp-rs compares in constant time.
fn totp_step(secret: &[u8], code: &str, now_ms: i64) -> Option<i64> {
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(secret.to_vec())
        .build()
        .ok()?;
    let now_s = u64::try_from(now_ms).ok()? / 1_000;
    totp.check(code.trim(), now_s)
        .and_then(|step| i64::try_from(step).ok())
}

/// The code an authenticator app shows at `now_ms` (for the demo and tests).
pub fn totp_code(secret: &[u8], now_ms: i64) -> Option<String> {
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(secret.to_vec())
        .build()
        .ok()?;
    Some(
        totp.generate(u64::try_from(now_ms).ok()? / 1_000)
            .to_string(),
    )
}
