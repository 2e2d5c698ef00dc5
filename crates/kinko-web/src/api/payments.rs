//! Payments on the API: the wallet's side (resolve a scanned code, pay it, show a one-time
//! pay code), the merchant's side under `/merchant` (its static and dynamic codes, redeeming
//! pay codes, its payments, refunds), and onboarding merchants under `/operator/merchants`.
//!
//! Merchant routes authenticate with `Authorization: Bearer kmk_…` (a merchant API key); a
//! wallet's or an operator's token there is `MERCHANT_UNAUTHENTICATED`. A merchant reaches
//! only its own payments: another merchant's payment is `PAYMENT_NOT_FOUND`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use kinko_money::MoneyError;
use kinko_money::merchants::{Merchant, NewMerchant};
use kinko_money::payments::{PayCode, PayRequest, Payment, QrQuote, Refund};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiJson;
use crate::api::identity::{Authenticated, SessionCredentials};
use crate::api::money::{blocking, idempotency_key, money};
use crate::api::operator::OperatorToken;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/payments/resolve", post(resolve))
        .route("/payments", post(pay))
        .route("/payments/{payment_id}", get(payment))
        .route("/pay-codes", post(issue_pay_code))
        .route("/merchant/me", get(merchant_me))
        .route("/merchant/qr", get(static_code))
        .route("/merchant/payment-requests", post(payment_request))
        .route("/merchant/pay-codes/redeem", post(redeem))
        .route("/merchant/payments", get(merchant_payments))
        .route("/merchant/payments/{payment_id}/refunds", post(refund))
        .route("/operator/merchants", post(onboard))
        .route(
            "/operator/merchants/{merchant_id}/api-keys",
            post(issue_key),
        )
}

/// The merchant API key of a request. Only its presence is checked here; the handler's flow
/// looks it up.
pub struct MerchantKey(pub SecretString);

impl FromRequestParts<AppState> for MerchantKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Problem> {
        crate::api::bearer_token(&parts.headers)
            .map(|key| MerchantKey(SecretString::from(key.to_owned())))
            .ok_or_else(|| MoneyError::MerchantUnauthenticated.into())
    }
}

/// The merchant behind a key, looked up off the async workers.
async fn merchant_of(state: &AppState, key: SecretString) -> Result<Merchant, Problem> {
    let service = money(state);
    blocking(move || service.merchant_by_key(&key)).await
}

fn svg(text: &str) -> Result<String, Problem> {
    kinko_qr::render::svg(text).map_err(|error| Problem::from_error(&error, "qr"))
}

fn bad_id(_: uuid::Error) -> Problem {
    MoneyError::PaymentNotFound.into()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScannedCode {
    /// The payload read from a merchant's QR code.
    qr: String,
}

/// What a scanned code leads to: the merchant as Kinko records it (never as the code says)
/// and, for a dynamic code, the amount from Kinko's record; `printed_name_differs` when the
/// name printed in the code is not Kinko's record (warn the payer). Nothing is written.
#[utoipa::path(post, path = "/api/v1/payments/resolve", request_body = ScannedCode,
    responses((status = 200, description = "The merchant and amount to confirm"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn resolve(
    State(state): State<AppState>,
    Authenticated(_session): Authenticated,
    ApiJson(body): ApiJson<ScannedCode>,
) -> Result<Json<QrQuote>, Problem> {
    let service = money(&state);
    Ok(Json(blocking(move || service.resolve_qr(&body.qr)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayBody {
    /// The payload read from a merchant's QR code.
    qr: String,
    /// The amount the payer typed: required for a static code; for a dynamic code it may be
    /// left out, and if given must equal the amount Kinko recorded for the sale.
    amount_yen: Option<i64>,
}

/// Pays a merchant's scanned code from the wallet (`Idempotency-Key` required).
/// `rejected` with `insufficient_funds` when the wallet does not cover it.
#[utoipa::path(post, path = "/api/v1/payments", request_body = PayBody,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, description = "The payment: posted or rejected"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
pub async fn pay(
    State(state): State<AppState>,
    credentials: SessionCredentials,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PayBody>,
) -> Result<(StatusCode, Json<Payment>), Problem> {
    let key = idempotency_key(&headers)?;
    let service = money(&state);
    let identity = std::sync::Arc::clone(&state.identity);
    // The hot path: the session is checked on the same blocking thread as the payment.
    let paid = tokio::task::spawn_blocking(move || {
        let session = credentials.authenticate(&identity)?;
        service
            .pay(
                &session,
                &PayRequest {
                    qr: body.qr,
                    amount_yen: body.amount_yen,
                    idempotency_key: key,
                },
            )
            .map_err(Problem::from)
    })
    .await
    .map_err(|error| {
        tracing::error!(error = %error, "payment task failed");
        Problem::internal()
    })??;
    Ok((StatusCode::CREATED, Json(paid)))
}

/// One of the wallet's payments, with its refunds.
#[utoipa::path(get, path = "/api/v1/payments/{payment_id}", params(("payment_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The payment"), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn payment(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    Path(payment_id): Path<String>,
) -> Result<Json<Payment>, Problem> {
    let id = uuid::Uuid::parse_str(&payment_id).map_err(bad_id)?;
    let service = money(&state);
    blocking(move || service.payment_of(&session, id))
        .await?
        .map(Json)
        .ok_or_else(|| MoneyError::PaymentNotFound.into())
}

#[derive(Serialize, ToSchema)]
pub struct PayCodeView {
    /// Show this (as the QR code below, or as text) at the till; it works once, for 60 s.
    code: String,
    expires_at_ms: i64,
    svg: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayCodeBody {
    /// The most the till may take with this code (the payer's ceiling), in yen.
    #[schema(minimum = 1, maximum = 1_000_000)]
    max_amount_yen: i64,
}

/// A one-time code for the merchant's till to redeem (consumer-presented), up to the payer's
/// `max_amount_yen`.
#[utoipa::path(post, path = "/api/v1/pay-codes", request_body = PayCodeBody,
    responses((status = 201, body = PayCodeView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn issue_pay_code(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<PayCodeBody>,
) -> Result<(StatusCode, Json<PayCodeView>), Problem> {
    let service = money(&state);
    let PayCode {
        code,
        expires_at_ms,
    } = blocking(move || service.issue_pay_code(&session, body.max_amount_yen)).await?;
    let svg = svg(&code)?;
    Ok((
        StatusCode::CREATED,
        Json(PayCodeView {
            code,
            expires_at_ms,
            svg,
        }),
    ))
}

/// The merchant the key belongs to.
#[utoipa::path(get, path = "/api/v1/merchant/me",
    responses((status = 200, description = "The merchant"), (status = 401, body = Problem)))]
pub async fn merchant_me(
    State(state): State<AppState>,
    MerchantKey(key): MerchantKey,
) -> Result<Json<Merchant>, Problem> {
    Ok(Json(merchant_of(&state, key).await?))
}

#[derive(Serialize, ToSchema)]
pub struct CodeView {
    /// The EMV/JPQR payload.
    payload: String,
    svg: String,
}

/// The merchant's static code, for a sticker at the till (the payer types the amount).
#[utoipa::path(get, path = "/api/v1/merchant/qr",
    responses((status = 200, body = CodeView), (status = 401, body = Problem)))]
pub async fn static_code(
    State(state): State<AppState>,
    MerchantKey(key): MerchantKey,
) -> Result<Json<CodeView>, Problem> {
    let merchant = merchant_of(&state, key).await?;
    let payload = merchant.static_code()?;
    let svg = svg(&payload)?;
    Ok(Json(CodeView { payload, svg }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequestBody {
    amount_yen: i64,
    /// The till's own reference (1–25 of A–Z a–z 0–9 - _); made up when left out.
    reference: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PaymentRequestView {
    reference: String,
    amount_yen: i64,
    expires_at_ms: i64,
    payload: String,
    svg: String,
}

/// A dynamic code for one sale: the amount is Kinko's record, payable once within 10 minutes.
#[utoipa::path(post, path = "/api/v1/merchant/payment-requests", request_body = PaymentRequestBody,
    responses((status = 201, body = PaymentRequestView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn payment_request(
    State(state): State<AppState>,
    MerchantKey(key): MerchantKey,
    ApiJson(body): ApiJson<PaymentRequestBody>,
) -> Result<(StatusCode, Json<PaymentRequestView>), Problem> {
    let service = money(&state);
    let request = blocking(move || {
        let merchant = service.merchant_by_key(&key)?;
        service.create_payment_request(&merchant, body.amount_yen, body.reference.as_deref())
    })
    .await?;
    let svg = svg(&request.payload)?;
    Ok((
        StatusCode::CREATED,
        Json(PaymentRequestView {
            reference: request.reference,
            amount_yen: request.amount_yen,
            expires_at_ms: request.expires_at_ms,
            payload: request.payload,
            svg,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    /// The code the payer's app shows.
    code: String,
    amount_yen: i64,
}

/// Redeems a payer's one-time code for an amount (`Idempotency-Key` required; the code works
/// once). `rejected` with `insufficient_funds` when the wallet does not cover it; 403
/// `PAY_CODE_ABOVE_CEILING` above the payer's `max_amount_yen` (nothing moves, the code stays
/// usable for an amount within it).
#[utoipa::path(post, path = "/api/v1/merchant/pay-codes/redeem", request_body = RedeemBody,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, description = "The payment: posted or rejected"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn redeem(
    State(state): State<AppState>,
    MerchantKey(key): MerchantKey,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RedeemBody>,
) -> Result<(StatusCode, Json<Payment>), Problem> {
    let idempotency = idempotency_key(&headers)?;
    let service = money(&state);
    let paid = blocking(move || {
        let merchant = service.merchant_by_key(&key)?;
        service.redeem_pay_code(&merchant, &body.code, body.amount_yen, &idempotency)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(paid)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Payments made before this time (ms since the epoch): the next page back.
    before_ms: Option<i64>,
    /// At most 200; 50 when left out.
    limit: Option<u32>,
}

/// The merchant's payments with their refunds, newest first.
#[utoipa::path(get, path = "/api/v1/merchant/payments",
    params(("before_ms" = Option<i64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "The merchant's payments"), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn merchant_payments(
    State(state): State<AppState>,
    MerchantKey(key): MerchantKey,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Vec<Payment>>, Problem> {
    let Query(query) = query.map_err(|rejection| {
        let mut problem = Problem::new(
            StatusCode::BAD_REQUEST,
            "REQUEST_INVALID",
            "The query string is not valid for this endpoint.",
        );
        problem.detail = Some(rejection.body_text());
        problem
    })?;
    let service = money(&state);
    let payments = blocking(move || {
        let merchant = service.merchant_by_key(&key)?;
        service.merchant_payments(&merchant, query.before_ms, query.limit)
    })
    .await?;
    Ok(Json(payments))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    amount_yen: i64,
}

/// Refunds part or all of one of the merchant's payments (`Idempotency-Key` required); all
/// refunds of a payment together never exceed it.
#[utoipa::path(post, path = "/api/v1/merchant/payments/{payment_id}/refunds", request_body = RefundBody,
    params(("payment_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, description = "The refund: posted or rejected"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn refund(
    State(state): State<AppState>,
    MerchantKey(key): MerchantKey,
    Path(payment_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefundBody>,
) -> Result<(StatusCode, Json<Refund>), Problem> {
    let idempotency = idempotency_key(&headers)?;
    let payment_id = uuid::Uuid::parse_str(&payment_id).map_err(bad_id)?;
    let service = money(&state);
    let refund = blocking(move || {
        let merchant = service.merchant_by_key(&key)?;
        service.refund(&merchant, payment_id, body.amount_yen, &idempotency)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(refund)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnboardBody {
    /// As printed in QR codes: ASCII, at most 25 characters.
    name: String,
    /// What payers read: at most 25 characters.
    name_ja: String,
    /// ISO 18245 merchant category code, 0–9999.
    category_code: u16,
    /// ASCII, at most 15 characters.
    city: String,
    city_ja: Option<String>,
    /// 7 digits (a hyphen is allowed).
    postal_code: String,
    /// Why (kept in the audit entry).
    reason: String,
}

/// Onboards a merchant (admins).
#[utoipa::path(post, path = "/api/v1/operator/merchants", request_body = OnboardBody,
    responses((status = 201, description = "The merchant"), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn onboard(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    ApiJson(body): ApiJson<OnboardBody>,
) -> Result<(StatusCode, Json<Merchant>), Problem> {
    let service = money(&state);
    let merchant = blocking(move || {
        service.onboard_merchant(
            &token,
            &NewMerchant {
                name: body.name,
                name_ja: body.name_ja,
                category_code: body.category_code,
                city: body.city,
                city_ja: body.city_ja,
                postal_code: body.postal_code,
            },
            &body.reason,
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(merchant)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueKeyBody {
    /// Where the key is used ("レジ 1").
    label: String,
    /// Why (kept in the audit entry).
    reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct IssuedKeyView {
    id: uuid::Uuid,
    merchant_id: uuid::Uuid,
    label: String,
    /// Shown once: Kinko keeps only its hash.
    key: String,
}

/// Issues an API key to a merchant (admins).
#[utoipa::path(post, path = "/api/v1/operator/merchants/{merchant_id}/api-keys", request_body = IssueKeyBody,
    params(("merchant_id" = uuid::Uuid, Path)),
    responses((status = 201, body = IssuedKeyView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn issue_key(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(merchant_id): Path<String>,
    ApiJson(body): ApiJson<IssueKeyBody>,
) -> Result<(StatusCode, Json<IssuedKeyView>), Problem> {
    let merchant_id = uuid::Uuid::parse_str(&merchant_id)
        .map_err(|_| Problem::from(MoneyError::MerchantNotFound))?;
    let service = money(&state);
    let (issued, key) = blocking(move || {
        service.issue_merchant_key(&token, merchant_id, &body.label, &body.reason)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKeyView {
            id: issued.id,
            merchant_id: issued.merchant_id,
            label: issued.label,
            key: key.expose_secret().to_owned(),
        }),
    ))
}
