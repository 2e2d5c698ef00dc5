//! Charges: bank account → wallet, two-phase, limited, idempotent, reconciled (see the crate
//! doc for the order of steps).

use kinko_banking::client::{PaymentKind, PaymentOrder};
use kinko_banking::links::LinkError;
use kinko_banking::registry::{self, BankCode};
use kinko_identity::session::SessionInfo;
use kinko_ledger::{CreateTransferResult, LEDGER_JPY, TransferFlags, TransferId, TransferRequest};
use kinko_store::sql::{Row, Tx, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::accounts::{self, code, transfer};
pub use crate::error::MoneyError;
pub(crate) use crate::service::internal;
pub use crate::service::{
    BANK_ANSWER_MARGIN_MS, BANK_CLOCK_SKEW_MAX_MS, BANK_ORDER_TTL_S_DEFAULT, MoneyService,
    PAYOUT_WAIT_HOURS_DEFAULT,
};

/// Kinko's own limits per wallet, whatever the banks allow (THREATS requirement 12).
pub const WALLET_DAILY_MAX_YEN: i64 = 500_000;
pub const WALLET_MONTHLY_MAX_YEN: i64 = 2_000_000;
/// An `Idempotency-Key` is 1–255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// What a charge asks for.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub link_id: uuid::Uuid,
    pub amount_yen: i64,
    pub idempotency_key: String,
    /// A passed confirmation of this link and amount; required above the threshold.
    pub confirmation_id: Option<uuid::Uuid>,
}

/// Which way money crosses to the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bank account → wallet (a debit at the bank).
    Charge,
    /// Wallet → bank account (a credit at the bank).
    Withdrawal,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Charge => "charge",
            Direction::Withdrawal => "withdrawal",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "charge" => Some(Direction::Charge),
            "withdrawal" => Some(Direction::Withdrawal),
            _ => None,
        }
    }

    pub(crate) fn bank_kind(self) -> PaymentKind {
        match self {
            Direction::Charge => PaymentKind::Debit,
            Direction::Withdrawal => PaymentKind::Credit,
        }
    }

    /// What the bank's customer reads on their statement.
    fn description(self) -> &'static str {
        match self {
            Direction::Charge => "Kinko チャージ",
            Direction::Withdrawal => "Kinko 出金",
        }
    }
}

/// Whether the pending transfer could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    Yes,
    /// A withdrawal the wallet's balance does not cover.
    InsufficientFunds,
}

/// A charge or a withdrawal as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Charge {
    pub id: uuid::Uuid,
    /// `charge` or `withdrawal`.
    pub direction: String,
    pub link_id: uuid::Uuid,
    pub bank_code: String,
    pub amount_yen: i64,
    /// `pending` (the bank has not answered yet), `posted`, `rejected` or `voided`.
    pub status: String,
    pub reason: Option<String>,
    pub created_at_ms: i64,
}

/// How a charge ended at the bank.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    Settled,
    /// The bank said no (`insufficient_funds`…).
    Rejected(&'a str),
    /// The debit never happened (the bank never saw it, or the link ended first).
    Voided(&'a str),
}

pub use crate::reconcile::ReconcileReport;

/// Midnight in Japan (UTC+9, no summer time) at the start of the day and of the month of
/// `now_ms`, in ms since the epoch.
pub fn japan_day_and_month_start(now_ms: i64) -> (i64, i64) {
    let offset = time::UtcOffset::from_hms(9, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let Ok(now) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
    else {
        return (now_ms, now_ms);
    };
    let local = now.to_offset(offset);
    let day = local.replace_time(time::Time::MIDNIGHT);
    let month = day.replace_day(1).unwrap_or(day);
    let ms = |moment: time::OffsetDateTime| {
        i64::try_from(moment.unix_timestamp_nanos() / 1_000_000).unwrap_or(now_ms)
    };
    (ms(day), ms(month))
}

pub(crate) fn charge_from(row: &Row) -> Result<Charge, kinko_ledger::StoreError> {
    Ok(Charge {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        direction: row.text(9)?,
        link_id: uuid::Uuid::from_u128(row.uuid(1)?),
        bank_code: row.text(2)?,
        amount_yen: row.int(3)?,
        status: row.text(4)?,
        reason: row.opt_text(5)?,
        created_at_ms: row.int(6)?,
    })
}

pub(crate) const CHARGE_COLUMNS: &str = "id, link_id, bank_code, amount_yen, status, reason, created_at, \
     user_id, request_hash, direction, bank_not_after";

fn sum(tx: &mut dyn Tx, sql: &str, params: &[Value]) -> Result<i64, kinko_ledger::StoreError> {
    Ok(tx.query_one(sql, params)?.opt_int(0)?.unwrap_or(0))
}

impl MoneyService {
    /// Charges the wallet from a linked bank account. See the crate doc for the steps.
    pub fn charge(
        &self,
        session: &SessionInfo,
        request: &ChargeRequest,
    ) -> Result<Charge, MoneyError> {
        self.cross_to_bank(session, Direction::Charge, request)
    }

    /// Withdraws to a linked bank account: only an account whose holder matched the wallet's
    /// KYC'd identity can be linked at all, so money leaves only to its owner. The same steps
    /// as a charge the other way round: the wallet's funds are reserved first (a pending
    /// transfer cannot overdraw), then the bank credits, then the reservation posts or is
    /// released.
    pub fn withdraw(
        &self,
        session: &SessionInfo,
        request: &ChargeRequest,
    ) -> Result<Charge, MoneyError> {
        self.gate(session, false)?;
        crate::transfers::check_key(&request.idempotency_key)?;
        if request.amount_yen > 0 {
            self.score_money_out(
                session,
                crate::risk::MoneyOut::Withdrawal {
                    link_id: request.link_id.as_u128(),
                    amount_yen: request.amount_yen,
                    idempotency_key: &request.idempotency_key,
                },
            )?;
        }
        self.cross_to_bank(session, Direction::Withdrawal, request)
    }

    fn cross_to_bank(
        &self,
        session: &SessionInfo,
        direction: Direction,
        request: &ChargeRequest,
    ) -> Result<Charge, MoneyError> {
        self.gate(session, direction == Direction::Charge)?;
        if request.amount_yen <= 0 {
            return Err(MoneyError::AmountInvalid);
        }
        let key = &request.idempotency_key;
        crate::transfers::check_key(key)?;
        let user_id = session.user_id;
        let request_hash = format!(
            "{:x}",
            Sha256::digest(format!(
                "{}|{}|{}",
                direction.as_str(),
                request.link_id,
                request.amount_yen
            ))
        );
        let now_ms = self.now_ms();
        let not_after_ms = now_ms.saturating_add(self.bank_order_ttl_ms);
        let charge_id = uuid::Uuid::now_v7();
        let outcome = self.identity.database().transaction(|tx: &mut dyn Tx| {
            // The user's row lock orders every charge of this wallet, and every request under
            // one key: the second of two concurrent requests with a key finds the first's row
            // below (the saved answer), never a unique-index violation.
            tx.query_opt(
                &format!(
                    "SELECT id FROM identity_users WHERE id = $1{}",
                    tx.for_update()
                ),
                &[Value::Uuid(user_id)],
            )?;
            if let Some(existing) = tx.query_opt(
                &format!(
                    "SELECT {CHARGE_COLUMNS} FROM money_bank_transfers
                     WHERE user_id = $1 AND idempotency_key = $2"
                ),
                &[Value::Uuid(user_id), key.as_str().into()],
            )? {
                if existing.text(8)? != request_hash {
                    return Err(MoneyError::IdempotencyKeyReused);
                }
                return Ok(Err(charge_from(&existing)?));
            }
            // The link's row lock orders every charge of this link.
            let link = tx
                .query_opt(
                    &format!(
                        "SELECT bank_code, status, created_at, method, account_ref FROM banking_links
                         WHERE id = $1 AND user_id = $2{}",
                        tx.for_update()
                    ),
                    &[Value::Uuid(request.link_id.as_u128()), Value::Uuid(user_id)],
                )?
                .ok_or(MoneyError::LinkNotFound)?;
            let bank_code = link.text(0)?;
            // Only a link with the bank's consent moves money; a PIN-method link verified the
            // holder and nothing more (it is shown as `verified`): refused before any row.
            if link.text(1)? != "active" || link.text(3)? != "oauth" {
                return Err(MoneyError::LinkInactive);
            }
            let linked_at_ms = link.int(2)?;
            let code = BankCode::parse(&bank_code).map_err(internal)?;
            let policy = registry::policy(tx, &code)?;
            if direction == Direction::Withdrawal {
                let wait_until_ms = linked_at_ms.saturating_add(self.payout_wait_ms);
                if now_ms < wait_until_ms {
                    return Err(MoneyError::PayoutAccountWait {
                        retry_after_ms: wait_until_ms - now_ms,
                    });
                }
            }
            if direction == Direction::Charge {
                if !policy.charging_enabled {
                    return Err(MoneyError::ChargingDisabled);
                }
                let wait_until_ms = linked_at_ms + policy.new_link_wait_hours * HOUR_MS;
                if now_ms < wait_until_ms {
                    return Err(MoneyError::NewLinkWait {
                        retry_after_ms: wait_until_ms - now_ms,
                    });
                }
                if request.amount_yen > policy.charge_max_yen {
                    return Err(MoneyError::LimitExceeded("per-charge"));
                }
                if request.amount_yen > self.confirm_above_yen {
                    crate::confirmations::spend(
                        tx,
                        now_ms,
                        user_id,
                        request.confirmation_id,
                        request.link_id,
                        request.amount_yen,
                    )?;
                }
                let (day_start, month_start) = japan_day_and_month_start(now_ms);
                let counted = "direction = 'charge' AND status IN ('pending', 'posted')";
                // The bank's limits hold per bank account, whichever link or wallet charged it:
                // unlinking and relinking (to this wallet or another) starts nothing afresh.
                let account_ref = link.text(4)?;
                let account_sum = |tx: &mut dyn Tx, since: i64| {
                    sum(
                        tx,
                        &format!(
                            "SELECT CAST(SUM(amount_yen) AS BIGINT) FROM money_bank_transfers
                             WHERE link_id IN (SELECT id FROM banking_links
                                               WHERE bank_code = $1 AND account_ref = $2)
                               AND {counted} AND created_at >= $3"
                        ),
                        &[
                            bank_code.as_str().into(),
                            account_ref.as_str().into(),
                            since.into(),
                        ],
                    )
                };
                let wallet_sum = |tx: &mut dyn Tx, since: i64| {
                    sum(
                        tx,
                        &format!(
                            "SELECT CAST(SUM(amount_yen) AS BIGINT) FROM money_bank_transfers
                         WHERE user_id = $1 AND {counted} AND created_at >= $2"
                        ),
                        &[Value::Uuid(user_id), since.into()],
                    )
                };
                let after = |spent: i64| spent.checked_add(request.amount_yen).unwrap_or(i64::MAX);
                let new_link = now_ms < linked_at_ms + policy.new_link_period_days * DAY_MS;
                let account_day = after(account_sum(tx, day_start)?);
                if account_day > policy.daily_max_yen {
                    return Err(MoneyError::LimitExceeded("bank daily"));
                }
                if new_link && account_day > policy.new_link_daily_max_yen {
                    return Err(MoneyError::LimitExceeded("new link daily"));
                }
                if after(account_sum(tx, month_start)?) > policy.monthly_max_yen {
                    return Err(MoneyError::LimitExceeded("bank monthly"));
                }
                if after(wallet_sum(tx, day_start)?) > WALLET_DAILY_MAX_YEN {
                    return Err(MoneyError::LimitExceeded("wallet daily"));
                }
                if after(wallet_sum(tx, month_start)?) > WALLET_MONTHLY_MAX_YEN {
                    return Err(MoneyError::LimitExceeded("wallet monthly"));
                }
            }
            tx.execute(
                "INSERT INTO money_bank_transfers (id, user_id, link_id, bank_code, amount_yen,
                 idempotency_key, request_hash, status, created_at, direction, bank_not_after)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10)",
                &[
                    Value::Uuid(charge_id.as_u128()),
                    Value::Uuid(user_id),
                    Value::Uuid(request.link_id.as_u128()),
                    bank_code.as_str().into(),
                    request.amount_yen.into(),
                    key.as_str().into(),
                    request_hash.as_str().into(),
                    now_ms.into(),
                    direction.as_str().into(),
                    not_after_ms.into(),
                ],
            )?;
            let counterparty = counterparty_label(tx, request.link_id)?;
            tx.execute(
                "INSERT INTO money_movements (id, user_id, kind, amount_yen, status, counterparty,
                 created_at, updated_at) VALUES ($1, $2, $6, $3, 'pending', $4, $5, $5)",
                &[
                    Value::Uuid(charge_id.as_u128()),
                    Value::Uuid(user_id),
                    request.amount_yen.into(),
                    counterparty.as_str().into(),
                    now_ms.into(),
                    direction.as_str().into(),
                ],
            )?;
            Ok(Ok(Charge {
                id: charge_id,
                direction: direction.as_str().to_owned(),
                link_id: request.link_id,
                bank_code,
                amount_yen: request.amount_yen,
                status: "pending".to_owned(),
                reason: None,
                created_at_ms: now_ms,
            }))
        })?;
        let charge = match outcome {
            Ok(fresh) => fresh,
            // The same request again: its charge, as it stands (the saved answer).
            Err(existing) => return Ok(existing),
        };
        self.drive(user_id, charge, not_after_ms)
    }

    /// Steps 3–5 for a charge whose row exists: pending transfer, bank debit, post or void.
    /// Only the request that wrote the row drives it, once: nothing else ever sends its order,
    /// and never after `not_after_ms`.
    fn drive(
        &self,
        user_id: u128,
        mut charge: Charge,
        not_after_ms: i64,
    ) -> Result<Charge, MoneyError> {
        let direction = Direction::parse(&charge.direction).ok_or_else(|| internal("direction"))?;
        if self.reserve(user_id, &charge, direction)? == Reserved::InsufficientFunds {
            self.record(&mut charge, "rejected", Some("insufficient_funds"))?;
            return Ok(charge);
        }
        if self.now_ms() >= not_after_ms {
            // Too late to send: the bank never saw this order and never will.
            self.resolve(&mut charge, Outcome::Voided("bank_deadline_passed"))?;
            return Ok(charge);
        }
        let key = charge.id.to_string();
        let answer = self.links.bank_payment(
            user_id,
            charge.link_id,
            &PaymentOrder {
                kind: direction.bank_kind(),
                key: &key,
                amount_yen: charge.amount_yen,
                description: direction.description(),
                not_after_ms,
            },
        );
        crate::charge::failpoint("charge_after_bank_debit");
        match answer {
            Ok(payment) if payment.settled => {
                self.resolve(&mut charge, Outcome::Settled)?;
            }
            Ok(payment) => {
                let reason = payment.reason.as_deref().unwrap_or("rejected_by_bank");
                self.resolve(&mut charge, Outcome::Rejected(reason))?;
            }
            Err(LinkError::BankUnavailable) => {
                // Unknown whether the bank debited: the reconciler asks it by key later.
                tracing::warn!(charge = %charge.id, "bank unreachable; the charge stays pending");
            }
            Err(LinkError::LinkInactive | LinkError::NotFound) => {
                self.resolve(&mut charge, Outcome::Voided("link_inactive"))?;
            }
            Err(LinkError::DeadlinePassed) => {
                self.resolve(&mut charge, Outcome::Voided("bank_deadline_passed"))?;
            }
            Err(error) => return Err(internal(error)),
        }
        Ok(charge)
    }

    /// The pending ledger transfer (id = the row's): settlement → wallet for a charge, wallet
    /// → settlement for a withdrawal (which the wallet's balance must cover). Idempotent.
    pub(crate) fn reserve(
        &self,
        user_id: u128,
        charge: &Charge,
        direction: Direction,
    ) -> Result<Reserved, MoneyError> {
        let wallet = accounts::wallet(user_id)?;
        let settlement = accounts::settlement(&charge.bank_code)?;
        accounts::ensure(
            &self.ledger,
            &[(wallet, code::WALLET), (settlement, code::SETTLEMENT)],
        )?;
        let (debit, credit, code) = match direction {
            Direction::Charge => (settlement, wallet, transfer::CHARGE),
            Direction::Withdrawal => (wallet, settlement, transfer::WITHDRAWAL),
        };
        let pending = TransferRequest {
            flags: TransferFlags::PENDING,
            ..TransferRequest::single_phase(
                TransferId::from_u128(charge.id.as_u128()).map_err(internal)?,
                debit,
                credit,
                u64::try_from(charge.amount_yen).map_err(internal)?,
                LEDGER_JPY,
                code,
            )
        };
        let results = self.ledger.create_transfers_blocking(vec![pending])?;
        match results.first() {
            Some(CreateTransferResult::Ok | CreateTransferResult::Exists) => Ok(Reserved::Yes),
            // A reservation refused once stays refused (`id_already_failed`), whatever the
            // balance is by the time the same charge is driven again.
            Some(CreateTransferResult::ExceedsCredits | CreateTransferResult::IdAlreadyFailed) => {
                Ok(Reserved::InsufficientFunds)
            }
            other => Err(internal(format!("pending transfer refused: {other:?}"))),
        }
    }

    /// Records a final status on the row and its movement, only while the row is pending:
    /// whoever finished it first (the request or the reconciler) decides, and `charge` then
    /// carries what the row says, so the answer, the row and the history always agree.
    pub(crate) fn record(
        &self,
        charge: &mut Charge,
        status: &str,
        reason: Option<&str>,
    ) -> Result<(), MoneyError> {
        let now_ms = self.now_ms();
        let stored = self.identity.database().transaction(|tx: &mut dyn Tx| {
            let changed = tx.execute(
                "UPDATE money_bank_transfers SET status = $2, reason = $3, resolved_at = $4
                 WHERE id = $1 AND status = 'pending'",
                &[
                    Value::Uuid(charge.id.as_u128()),
                    status.into(),
                    reason.map_or(Value::Null, Into::into),
                    now_ms.into(),
                ],
            )?;
            if changed == 1 {
                tx.execute(
                    "UPDATE money_movements SET status = $2, updated_at = $3 WHERE id = $1",
                    &[
                        Value::Uuid(charge.id.as_u128()),
                        status.into(),
                        now_ms.into(),
                    ],
                )?;
                return Ok(None);
            }
            let row = tx.query_one(
                "SELECT status, reason FROM money_bank_transfers WHERE id = $1",
                &[Value::Uuid(charge.id.as_u128())],
            )?;
            Ok::<_, MoneyError>(Some((row.text(0)?, row.opt_text(1)?)))
        })?;
        match stored {
            None => {
                charge.status = status.to_owned();
                charge.reason = reason.map(str::to_owned);
            }
            Some((stored_status, stored_reason)) => {
                charge.status = stored_status;
                charge.reason = stored_reason;
            }
        }
        Ok(())
    }

    /// Posts or voids the pending transfer and records the outcome on the charge and its
    /// movement. Idempotent: a resolved charge stays as it is.
    pub(crate) fn resolve(
        &self,
        charge: &mut Charge,
        outcome: Outcome<'_>,
    ) -> Result<(), MoneyError> {
        let (settled, reason) = match outcome {
            Outcome::Settled => (true, None),
            Outcome::Rejected(reason) | Outcome::Voided(reason) => (false, Some(reason)),
        };
        let pending_id = TransferId::from_u128(charge.id.as_u128()).map_err(internal)?;
        // The post or void has its own id, derived from the charge's so a retry is idempotent.
        let resolution_id = TransferId::from_u128(charge.id.as_u128() ^ 0x1).map_err(internal)?;
        let request = TransferRequest {
            id: resolution_id,
            debit_account_id: None,
            credit_account_id: None,
            amount: 0,
            pending_id: Some(pending_id),
            ledger: 0,
            code: 0,
            flags: if settled {
                TransferFlags::POST_PENDING
            } else {
                TransferFlags::VOID_PENDING
            },
            timeout_s: 0,
        };
        let request = if settled {
            TransferRequest {
                amount: u64::try_from(charge.amount_yen).map_err(internal)?,
                ..request
            }
        } else {
            request
        };
        let results = self.ledger.create_transfers_blocking(vec![request])?;
        let status = match results.first() {
            Some(CreateTransferResult::Ok | CreateTransferResult::Exists) => {
                if settled {
                    "posted"
                } else {
                    "voided"
                }
            }
            Some(CreateTransferResult::PendingTransferAlreadyPosted) => "posted",
            Some(CreateTransferResult::PendingTransferAlreadyVoided) => "voided",
            other => return Err(internal(format!("resolving a charge failed: {other:?}"))),
        };
        let status = match outcome {
            Outcome::Rejected(_) if status == "voided" => "rejected",
            _ => status,
        };
        self.record(charge, status, reason)
    }

    /// The wallet's charge or withdrawal `id` (another wallet's answers like none at all).
    pub fn bank_transfer_of(
        &self,
        session: &SessionInfo,
        direction: Direction,
        id: uuid::Uuid,
    ) -> Result<Option<Charge>, MoneyError> {
        let row = self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.query_opt(
                &format!(
                    "SELECT {CHARGE_COLUMNS} FROM money_bank_transfers
                     WHERE id = $1 AND user_id = $2 AND direction = $3"
                ),
                &[
                    Value::Uuid(id.as_u128()),
                    Value::Uuid(session.user_id),
                    direction.as_str().into(),
                ],
            )
        })?;
        Ok(row.as_ref().map(charge_from).transpose()?)
    }
}

/// What the owner reads for a charge's other side: the bank and the account's tail.
pub(crate) fn counterparty_label(
    tx: &mut dyn Tx,
    link_id: uuid::Uuid,
) -> Result<String, kinko_ledger::StoreError> {
    let row = tx.query_opt(
        "SELECT l.bank_code, l.account_label, b.name_ja FROM banking_links l
         JOIN banking_partner_banks b ON b.code = l.bank_code WHERE l.id = $1",
        &[Value::Uuid(link_id.as_u128())],
    )?;
    Ok(match row {
        Some(row) => format!("{} {}", row.text(2)?, row.text(1)?),
        None => String::new(),
    })
}

/// Test hook: with `KINKO_FAILPOINT=<name>` the process dies right here, as a crash would
/// (the crash tests use it to stop between the bank's debit and the ledger's post). Compiled
/// only with the `failpoints` feature, which only the tests turn on (`kinko`'s
/// dev-dependencies): a release binary has no way to be made to abort from outside.
#[cfg(feature = "failpoints")]
pub fn failpoint(name: &str) {
    if std::env::var("KINKO_FAILPOINT").is_ok_and(|value| value == name) {
        tracing::error!(failpoint = name, "failpoint hit: aborting");
        std::process::abort();
    }
}

/// Without the `failpoints` feature a failpoint is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn failpoint(_name: &str) {}
