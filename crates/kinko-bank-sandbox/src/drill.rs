//! Sandbox-only balance read for `kinko drill`: `GET /sandbox/balances` lists every account's
//! bank code, branch, number and balance, so the drill measures yen lost from the bank's own
//! books rather than from Kinko's verdicts. The sandbox holds only made-up people; a real
//! bank has no such endpoint.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kinko_store::sql::Tx;

use crate::http::{HttpState, blocking};

pub(crate) fn routes() -> Router<HttpState> {
    Router::new().route("/sandbox/balances", get(balances))
}

#[derive(serde::Serialize)]
struct Balance {
    bank_code: String,
    branch: String,
    number: String,
    balance_yen: i64,
}

/// At most this many accounts are listed (the sandbox seeds a handful).
const ACCOUNTS_MAX: i64 = 1_000;

async fn balances(State(state): State<HttpState>) -> Response {
    let bank = Arc::clone(&state.bank);
    let read = blocking(move || {
        bank.database().read(|tx: &mut dyn Tx| {
            tx.query(
                "SELECT bank_code, branch, number, balance_yen FROM bank_accounts
                 ORDER BY bank_code, branch, number LIMIT $1",
                &[ACCOUNTS_MAX.into()],
            )?
            .iter()
            .map(|row| {
                Ok(Balance {
                    bank_code: row.text(0)?,
                    branch: row.text(1)?,
                    number: row.text(2)?,
                    balance_yen: row.int(3)?,
                })
            })
            .collect::<Result<Vec<_>, kinko_ledger::StoreError>>()
        })
    })
    .await;
    match read {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(error)) => {
            tracing::error!(error = %error, "reading the sandbox balances failed");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(error) => error.into_response(),
    }
}
