//! RFC 9457 problem details: every error the HTTP surface returns has this shape, with a
//! stable `code` that clients match on. 5xx bodies stay generic; causes go to the log.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

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
        }
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
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}
