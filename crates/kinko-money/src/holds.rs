//! Follow the money and hold it (issue 12 item 2, THREATS 27): from a disputed movement, find
//! which wallets the money reached by P2P — bounded in depth and fan-out — and hold in each
//! what it still has of it.
//!
//! A hold is a pending ledger transfer wallet → the case's holds account (`accounts::
//! case_holds`), its id the hold row's: the ledger counts pending debits against the wallet's
//! balance, so held money cannot be spent, paid or withdrawn. Released = voided; returned =
//! posted (the money is then the case's recovered funds, which pay the victim's refund first).
//!
//! Attribution is first-in, first-out per wallet: what a wallet passed on after receiving
//! disputed money is counted as the disputed money, up to what it received; what it kept of it
//! (received less passed on) is held, up to its available balance.

use std::collections::BTreeMap;

use kinko_audit::{Actor, AuditEntry};
use kinko_identity::operator::{Permission, require_reason};
use kinko_ledger::{CreateTransferResult, LEDGER_JPY, TransferFlags, TransferId, TransferRequest};
use kinko_store::sql::{Row, Tx, Value};
use secrecy::SecretString;
use serde::Serialize;

use crate::accounts::{self, code, transfer};
use crate::charge::{MoneyService, internal};
use crate::error::MoneyError;

/// P2P hops followed from the disputed wallet.
pub const FOLLOW_DEPTH_MAX: i64 = 3;
/// Outgoing transfers followed per wallet (the oldest after the money arrived).
pub const FOLLOW_FANOUT_MAX: i64 = 20;
/// Wallets reached by one follow, at most.
pub const FOLLOW_WALLETS_MAX: usize = 50;

const STATUS_PENDING: &str = "pending";

/// A hold as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub id: uuid::Uuid,
    pub case_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub amount_yen: i64,
    /// P2P hops from the disputed wallet (0: that wallet itself).
    pub depth: i64,
    /// `pending` (the ledger has not answered yet), `held`, `not_held` (the wallet no longer
    /// had it), `released` or `returned`.
    pub status: String,
    pub created_at_ms: i64,
}

pub(crate) const HOLD_COLUMNS: &str = "id, case_id, user_id, amount_yen, depth, status, created_at";

pub(crate) fn hold_from(row: &Row) -> Result<Hold, kinko_ledger::StoreError> {
    Ok(Hold {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        case_id: uuid::Uuid::from_u128(row.uuid(1)?),
        user_id: uuid::Uuid::from_u128(row.uuid(2)?),
        amount_yen: row.int(3)?,
        depth: row.int(4)?,
        status: row.text(5)?,
        created_at_ms: row.int(6)?,
    })
}

/// Where following starts: a wallet, since when, how much of its money is disputed, and how
/// many hops it already is from the disputed wallet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub user_id: u128,
    pub since_ms: i64,
    pub amount_yen: i64,
    pub depth: i64,
}

/// A wallet the money reached: the least hops to it and what it kept of the disputed money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reached {
    pub depth: i64,
    pub kept_yen: i64,
}

/// Follows the disputed money by posted P2P transfers from `origin`, breadth first. Answers
/// every wallet reached (the origin too) with what it kept of the money.
pub(crate) fn follow(
    tx: &mut dyn Tx,
    origin: Origin,
) -> Result<BTreeMap<u128, Reached>, MoneyError> {
    let mut reached: BTreeMap<u128, Reached> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([origin]);
    // Every step enqueues at most FOLLOW_FANOUT_MAX more, and only below the depth bound.
    while let Some(at) = queue.pop_front() {
        let mut remaining_yen = at.amount_yen;
        if at.depth < FOLLOW_DEPTH_MAX {
            let rows = tx.query(
                "SELECT to_user, amount_yen, created_at FROM money_transfers
                 WHERE from_user = $1 AND status = 'posted' AND created_at >= $2
                 ORDER BY created_at, id LIMIT $3",
                &[
                    Value::Uuid(at.user_id),
                    at.since_ms.into(),
                    FOLLOW_FANOUT_MAX.into(),
                ],
            )?;
            for row in &rows {
                if remaining_yen == 0 {
                    break;
                }
                let passed_yen = row.int(1)?.min(remaining_yen);
                remaining_yen -= passed_yen;
                let next = row.uuid(0)?;
                if reached.len() + queue.len() < FOLLOW_WALLETS_MAX || reached.contains_key(&next) {
                    queue.push_back(Origin {
                        user_id: next,
                        since_ms: row.int(2)?,
                        amount_yen: passed_yen,
                        depth: at.depth + 1,
                    });
                }
            }
        }
        let entry = reached.entry(at.user_id).or_insert(Reached {
            depth: at.depth,
            kept_yen: 0,
        });
        entry.depth = entry.depth.min(at.depth);
        entry.kept_yen = entry
            .kept_yen
            .checked_add(remaining_yen)
            .ok_or_else(|| internal("held amount overflows"))?;
    }
    Ok(reached)
}

impl MoneyService {
    /// What the wallet can still spend (posted less pending debits), from the ledger.
    pub(crate) fn available_yen(&self, user_id: u128) -> Result<i64, MoneyError> {
        let wallet = accounts::wallet(user_id)?;
        let found = self
            .ledger()
            .reader()
            .lookup_accounts(&[wallet])
            .map_err(MoneyError::Store)?;
        Ok(found.first().map_or(0, |account| {
            i64::try_from(account.credit_balance_available().max(0)).unwrap_or(i64::MAX)
        }))
    }

    /// Writes the hold rows (`pending`) for what each reached wallet kept, at most its
    /// available balance, inside the caller's transaction; a wallet already held for this case
    /// is left as it is. Answers the ids written.
    pub(crate) fn plan_holds(
        &self,
        tx: &mut dyn Tx,
        case_id: uuid::Uuid,
        reached: &BTreeMap<u128, Reached>,
        now_ms: i64,
    ) -> Result<Vec<uuid::Uuid>, MoneyError> {
        let mut planned = Vec::new();
        for (user_id, wallet) in reached {
            let amount_yen = wallet.kept_yen.min(self.available_yen(*user_id)?);
            if amount_yen <= 0 {
                continue;
            }
            let id = uuid::Uuid::now_v7();
            let inserted = tx.execute(
                "INSERT INTO money_holds (id, case_id, user_id, amount_yen, depth, status,
                 created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6)
                 ON CONFLICT (case_id, user_id) DO NOTHING",
                &[
                    Value::Uuid(id.as_u128()),
                    Value::Uuid(case_id.as_u128()),
                    Value::Uuid(*user_id),
                    amount_yen.into(),
                    wallet.depth.into(),
                    now_ms.into(),
                ],
            )?;
            if inserted == 1 {
                planned.push(id);
            }
        }
        Ok(planned)
    }

    /// Places every `pending` hold of the case in the ledger (the same id is the same
    /// transfer, so a retry after a crash holds once) and records the outcome.
    pub(crate) fn place_holds(&self, case_id: uuid::Uuid) -> Result<(), MoneyError> {
        let pending = self.holds_in(case_id, Some(STATUS_PENDING))?;
        for hold in pending {
            let wallet = accounts::wallet(hold.user_id.as_u128())?;
            let holds = accounts::case_holds(case_id.as_u128())?;
            accounts::ensure(
                self.ledger(),
                &[(wallet, code::WALLET), (holds, code::HOLDS)],
            )?;
            let request = TransferRequest {
                flags: TransferFlags::PENDING,
                ..TransferRequest::single_phase(
                    TransferId::from_u128(hold.id.as_u128()).map_err(internal)?,
                    wallet,
                    holds,
                    u64::try_from(hold.amount_yen).map_err(internal)?,
                    LEDGER_JPY,
                    transfer::HOLD,
                )
            };
            let status = match self
                .ledger()
                .create_transfers_blocking(vec![request])?
                .first()
            {
                Some(CreateTransferResult::Ok | CreateTransferResult::Exists) => "held",
                // The wallet spent it between the follow and the hold (a movement that passed
                // its gate before the freeze): nothing to hold, and the id never holds later.
                Some(
                    CreateTransferResult::ExceedsCredits | CreateTransferResult::IdAlreadyFailed,
                ) => "not_held",
                other => return Err(internal(format!("a hold was refused: {other:?}"))),
            };
            self.set_hold_status(hold.id, STATUS_PENDING, status)?;
        }
        Ok(())
    }

    fn set_hold_status(&self, id: uuid::Uuid, from: &str, to: &str) -> Result<(), MoneyError> {
        let now_ms = self.clock_ms();
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE money_holds SET status = $3, resolved_at = $4 WHERE id = $1 AND status = $2",
                &[Value::Uuid(id.as_u128()), from.into(), to.into(), now_ms.into()],
            )
        })?;
        Ok(())
    }

    /// The case's holds, oldest first, optionally in one state only.
    pub(crate) fn holds_in(
        &self,
        case_id: uuid::Uuid,
        status: Option<&str>,
    ) -> Result<Vec<Hold>, MoneyError> {
        let rows = self
            .identity_database()
            .read(|tx: &mut dyn Tx| match status {
                Some(status) => tx.query(
                    &format!(
                        "SELECT {HOLD_COLUMNS} FROM money_holds WHERE case_id = $1 AND status = $2
                     ORDER BY created_at, id"
                    ),
                    &[Value::Uuid(case_id.as_u128()), status.into()],
                ),
                None => tx.query(
                    &format!(
                        "SELECT {HOLD_COLUMNS} FROM money_holds WHERE case_id = $1
                     ORDER BY created_at, id"
                    ),
                    &[Value::Uuid(case_id.as_u128())],
                ),
            })?;
        Ok(rows.iter().map(hold_from).collect::<Result<Vec<_>, _>>()?)
    }

    /// Ends one held hold: `Return` posts it (the money goes to the case's holds account),
    /// `Release` voids it (the wallet has it back). Idempotent: the post or void has an id
    /// derived from the hold's.
    pub(crate) fn end_hold(&self, hold: &Hold, end: HoldEnd) -> Result<(), MoneyError> {
        let pending_id = TransferId::from_u128(hold.id.as_u128()).map_err(internal)?;
        let resolution_id = TransferId::from_u128(hold.id.as_u128() ^ 0x1).map_err(internal)?;
        let request = TransferRequest {
            id: resolution_id,
            debit_account_id: None,
            credit_account_id: None,
            amount: match end {
                HoldEnd::Return => u64::try_from(hold.amount_yen).map_err(internal)?,
                HoldEnd::Release => 0,
            },
            pending_id: Some(pending_id),
            ledger: 0,
            code: 0,
            flags: match end {
                HoldEnd::Return => TransferFlags::POST_PENDING,
                HoldEnd::Release => TransferFlags::VOID_PENDING,
            },
            timeout_s: 0,
        };
        let status = match self
            .ledger()
            .create_transfers_blocking(vec![request])?
            .first()
        {
            Some(CreateTransferResult::Ok | CreateTransferResult::Exists) => end.status(),
            Some(CreateTransferResult::PendingTransferAlreadyPosted) => "returned",
            Some(CreateTransferResult::PendingTransferAlreadyVoided) => "released",
            other => return Err(internal(format!("ending a hold failed: {other:?}"))),
        };
        self.set_hold_status(hold.id, "held", status)
    }
}

impl MoneyService {
    /// A case's holds, oldest first (analysts and admins).
    pub fn case_holds(
        &self,
        token: &SecretString,
        case_id: uuid::Uuid,
    ) -> Result<Vec<Hold>, MoneyError> {
        let now_ms = self.clock_ms();
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ReviewCases)?;
            Ok::<_, MoneyError>(())
        })?;
        self.holds_in(case_id, None)
    }

    /// Releases a held hold (the case found the wallet's owner innocent): the wallet has the
    /// money back. With a reason, audited; releasing a released hold answers it as it is.
    pub fn release_hold(
        &self,
        token: &SecretString,
        hold_id: uuid::Uuid,
        reason: &str,
    ) -> Result<Hold, MoneyError> {
        let now_ms = self.clock_ms();
        let hold = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ReviewCases)?;
            require_reason(reason)?;
            let hold = tx
                .query_opt(
                    &format!("SELECT {HOLD_COLUMNS} FROM money_holds WHERE id = $1"),
                    &[Value::Uuid(hold_id.as_u128())],
                )?
                .map(|row| hold_from(&row))
                .transpose()?
                .ok_or(MoneyError::HoldNotFound)?;
            if hold.status == "held" {
                kinko_cases::record_event(
                    tx,
                    hold.case_id,
                    Some(uuid::Uuid::from_u128(by.id.as_u128())),
                    "hold_released",
                    &format!(
                        "¥{} released to a wallet: {}",
                        hold.amount_yen,
                        reason.trim()
                    ),
                    now_ms,
                )?;
                kinko_audit::append(
                    tx,
                    now_ms,
                    &AuditEntry {
                        actor: Actor::Operator(by.id.as_u128()),
                        action: "money.hold_released",
                        subject_kind: "user",
                        subject_id: &hold.user_id.to_string(),
                        reason: reason.trim(),
                        detail: serde_json::json!({
                            "hold_id": hold.id,
                            "case_id": hold.case_id,
                            "amount_yen": hold.amount_yen,
                        }),
                    },
                )?;
            }
            Ok::<_, MoneyError>(hold)
        })?;
        if hold.status == "held" {
            self.end_hold(&hold, HoldEnd::Release)?;
        }
        let rows = self.identity_database().read(|tx: &mut dyn Tx| {
            tx.query_one(
                &format!("SELECT {HOLD_COLUMNS} FROM money_holds WHERE id = $1"),
                &[Value::Uuid(hold_id.as_u128())],
            )
        })?;
        Ok(hold_from(&rows)?)
    }
}

/// How a hold ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldEnd {
    /// Posted: the money becomes the case's recovered funds.
    Return,
    /// Voided: the wallet has the money back.
    Release,
}

impl HoldEnd {
    fn status(self) -> &'static str {
        match self {
            HoldEnd::Return => "returned",
            HoldEnd::Release => "released",
        }
    }
}
