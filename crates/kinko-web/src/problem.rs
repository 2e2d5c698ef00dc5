//! RFC 9457 problem details: every error the HTTP surface returns has this shape, with a
//! stable `code` that clients match on. 5xx bodies stay generic; causes go to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kinko_core::{ErrorCode, ErrorKind};

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id (also in the `x-request-id` header), to quote when reporting a 5xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For 429: when to try again; also sent as the `Retry-After` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<i64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, title: &str) -> Self {
        Self {
            // Relative URI (RFC 9457 §3.1.1): resolves against the API that answered.
            type_uri: format!("/problems/{}", code.to_ascii_lowercase()),
            title: title.to_owned(),
            status: status.as_u16(),
            code,
            detail: None,
            request_id: None,
            retry_after_s: None,
        }
    }

    /// The problem for a domain error: the status follows its kind, the code is its stable
    /// code, the title its message. An internal error is logged (with `area`) and answered
    /// with the generic 500 — its cause never reaches the client.
    pub fn from_error<E: ErrorCode + std::fmt::Display>(error: &E, area: &'static str) -> Self {
        let status = match error.kind() {
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => {
                tracing::error!(error = %error, code = error.code(), area, "request failed");
                return Self::internal();
            }
        };
        Self::new(status, error.code(), &error.to_string())
    }

    /// Marks a 429 with when to try again.
    pub fn retry_after_ms(mut self, retry_after_ms: i64) -> Self {
        let seconds = retry_after_ms.saturating_add(999) / 1_000;
        self.retry_after_s = Some(seconds.max(1));
        self.detail = Some(format!("Try again in {} s.", seconds.max(1)));
        self
    }

    /// The generic answer to a bug or an outage: the cause goes to the log, never here.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Something went wrong on our side. Quote the request id if you contact us.",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after_s
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
