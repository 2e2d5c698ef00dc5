//! Case work for operators: the inbox (filtered, newest first, one bounded page at a time), a
//! case with its history, and every step an analyst takes on it — assign, note, link, move
//! through the states, close with a label, snooze a rule for the case's customer — plus the
//! SLA sweep that escalates overdue cases.
//!
//! Who sees what: analysts and admins (`ReviewCases`) see and work every case; a bank partner
//! (`ViewBankActivity` for its own bank) only *sees* the cases whose `bank_code` is its bank's,
//! and another bank's case answers exactly as a missing one (`CASE_NOT_FOUND`). Writing steps
//! check `ReviewCases` before the case is even looked up, so a refusal says nothing about
//! whether a case exists.
//!
//! Each step authenticates the operator, locks the case row, checks, writes, and appends the
//! step to `case_events` and the audit log ([`crate::record_event`]) in one transaction.

use std::sync::Arc;

use kinko_core::Clock;
use kinko_identity::operator::{self, Operator, OperatorId, Permission, Role};
use kinko_store::sql::{Database, Row, Tx, Value};
use secrecy::SecretString;
use serde::Serialize;

use crate::error::CaseError;
pub use crate::filter::{Assigned, CaseFilter, FilterText};
use crate::types::{CaseLabel, CaseState, LinkReason};
use crate::{CaseKind, record_event};

/// Open cases one analyst may hold by default (`KINKO_CASES_PER_ANALYST_MAX`).
pub const OPEN_PER_ANALYST_DEFAULT: i64 = 20;
/// The configurable bound on it.
pub const OPEN_PER_ANALYST_MAX: i64 = 500;
/// A page of the inbox holds at most this many cases.
pub const PAGE_MAX: i64 = 100;
pub const PAGE_DEFAULT: i64 = 50;
/// A case shows at most this many events (its newest).
pub const EVENTS_MAX: i64 = 500;
/// A note, in characters.
pub const NOTE_MAX_CHARS: usize = 1_000;
/// The longest snooze, in hours (30 days): a longer one is a rule change, not a case step.
pub const SNOOZE_HOURS_MAX: i64 = 720;
/// Cases escalated per sweep at most; the next sweep takes the rest.
pub const ESCALATE_PER_SWEEP_MAX: i64 = 500;
const HOUR_MS: i64 = 3_600_000;

/// What case work is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseConfig {
    /// Open (open or investigating) cases one operator may be assigned at once.
    pub open_per_analyst_max: i64,
}

impl CaseConfig {
    pub const DEFAULT: CaseConfig = CaseConfig {
        open_per_analyst_max: OPEN_PER_ANALYST_DEFAULT,
    };

    /// Refuses a cap outside 1..=[`OPEN_PER_ANALYST_MAX`].
    pub fn new(open_per_analyst_max: i64) -> Option<Self> {
        (1..=OPEN_PER_ANALYST_MAX)
            .contains(&open_per_analyst_max)
            .then_some(CaseConfig {
                open_per_analyst_max,
            })
    }
}

/// A case as the inbox shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Case {
    pub id: uuid::Uuid,
    pub kind: CaseKind,
    pub state: CaseState,
    pub bank_code: Option<String>,
    pub user_id: Option<uuid::Uuid>,
    pub subject: String,
    pub summary: String,
    pub amount_yen: Option<i64>,
    pub assigned_to: Option<uuid::Uuid>,
    pub label: Option<CaseLabel>,
    pub opened_at_ms: i64,
    pub due_at_ms: i64,
    pub escalated_at_ms: Option<i64>,
    pub closed_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

/// One step in a case's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseEvent {
    pub id: uuid::Uuid,
    pub at_ms: i64,
    /// The operator, or none for the platform itself.
    pub actor: Option<uuid::Uuid>,
    pub kind: String,
    pub detail: String,
}

/// A related case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseLink {
    pub other_case_id: uuid::Uuid,
    pub reason: LinkReason,
    pub linked_by: uuid::Uuid,
    pub linked_at_ms: i64,
}

/// A rule snoozed for the case's customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snooze {
    pub rule_id: String,
    pub until_ms: i64,
    pub created_by: uuid::Uuid,
}

/// A case with its history (oldest first), links and snoozes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseDetail {
    #[serde(flatten)]
    pub case: Case,
    pub events: Vec<CaseEvent>,
    pub links: Vec<CaseLink>,
    pub snoozes: Vec<Snooze>,
}

/// A page of the inbox, newest first; `next_before` continues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CasePage {
    pub cases: Vec<Case>,
    pub next_before: Option<uuid::Uuid>,
}

/// A state change an analyst asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition<'a> {
    pub to: CaseState,
    /// Required when closing, refused otherwise.
    pub label: Option<CaseLabel>,
    /// Why (10–500 characters), kept in the case's history and the audit log.
    pub reason: &'a str,
}

/// Which cases an operator may see.
enum Scope {
    All,
    Bank(String),
}

fn scope_of(by: &Operator) -> Result<Scope, CaseError> {
    if by.can(Permission::ReviewCases) {
        return Ok(Scope::All);
    }
    if let Role::BankPartner { bank_code } = &by.role
        && by.can(Permission::ViewBankActivity {
            bank_code: bank_code.clone(),
        })
    {
        return Ok(Scope::Bank(bank_code.clone()));
    }
    Err(operator::OperatorError::Forbidden.into())
}

const CASE_COLUMNS: &str = "id, kind, state, bank_code, user_id, subject, summary, amount_yen,
     assigned_to, label, opened_at, due_at, escalated_at, closed_at, updated_at";

fn case_from(row: &Row) -> Result<Case, CaseError> {
    let corrupt = |what: &str| {
        CaseError::Store(kinko_ledger::StoreError::new(format!(
            "cases holds an invalid {what}"
        )))
    };
    Ok(Case {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        kind: CaseKind::parse(&row.text(1)?).ok_or_else(|| corrupt("kind"))?,
        state: CaseState::parse(&row.text(2)?).ok_or_else(|| corrupt("state"))?,
        bank_code: row.opt_text(3)?,
        user_id: row.opt_uuid(4)?.map(uuid::Uuid::from_u128),
        subject: row.text(5)?,
        summary: row.text(6)?,
        amount_yen: row.opt_int(7)?,
        assigned_to: row.opt_uuid(8)?.map(uuid::Uuid::from_u128),
        label: row
            .opt_text(9)?
            .map(|label| CaseLabel::parse(&label).ok_or_else(|| corrupt("label")))
            .transpose()?,
        opened_at_ms: row.int(10)?,
        due_at_ms: row.int(11)?,
        escalated_at_ms: row.opt_int(12)?,
        closed_at_ms: row.opt_int(13)?,
        updated_at_ms: row.int(14)?,
    })
}

fn operator_uuid(by: &Operator) -> uuid::Uuid {
    uuid::Uuid::from_u128(by.id.as_u128())
}

/// The case `case_id`, row-locked, if this scope may see it.
fn locked_case(tx: &mut dyn Tx, case_id: uuid::Uuid) -> Result<Case, CaseError> {
    let sql = format!(
        "SELECT {CASE_COLUMNS} FROM cases WHERE id = $1{}",
        tx.for_update()
    );
    let row = tx
        .query_opt(&sql, &[Value::Uuid(case_id.as_u128())])?
        .ok_or(CaseError::NotFound)?;
    case_from(&row)
}

/// The case with its history, or `NotFound` when the scope may not see it — the same answer
/// after the same query whether it is missing or another bank's.
fn detail_of(tx: &mut dyn Tx, case_id: uuid::Uuid, scope: &Scope) -> Result<CaseDetail, CaseError> {
    let row = tx
        .query_opt(
            &format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = $1"),
            &[Value::Uuid(case_id.as_u128())],
        )?
        .ok_or(CaseError::NotFound)?;
    let case = case_from(&row)?;
    if let Scope::Bank(own) = scope
        && case.bank_code.as_deref() != Some(own.as_str())
    {
        return Err(CaseError::NotFound);
    }
    let mut events = tx
        .query(
            "SELECT id, at, actor, kind, detail FROM case_events WHERE case_id = $1
             ORDER BY at DESC, id DESC LIMIT $2",
            &[Value::Uuid(case_id.as_u128()), EVENTS_MAX.into()],
        )?
        .iter()
        .map(|row| {
            Ok(CaseEvent {
                id: uuid::Uuid::from_u128(row.uuid(0)?),
                at_ms: row.int(1)?,
                actor: row.opt_uuid(2)?.map(uuid::Uuid::from_u128),
                kind: row.text(3)?,
                detail: row.text(4)?,
            })
        })
        .collect::<Result<Vec<_>, CaseError>>()?;
    events.reverse();
    let links = tx
        .query(
            "SELECT other_case_id, reason, linked_by, linked_at FROM case_links
             WHERE case_id = $1 ORDER BY linked_at, other_case_id",
            &[Value::Uuid(case_id.as_u128())],
        )?
        .iter()
        .map(|row| {
            Ok(CaseLink {
                other_case_id: uuid::Uuid::from_u128(row.uuid(0)?),
                reason: LinkReason::parse(&row.text(1)?).ok_or_else(|| {
                    CaseError::Store(kinko_ledger::StoreError::new(
                        "case_links holds an invalid reason",
                    ))
                })?,
                linked_by: uuid::Uuid::from_u128(row.uuid(2)?),
                linked_at_ms: row.int(3)?,
            })
        })
        .collect::<Result<Vec<_>, CaseError>>()?;
    let snoozes = tx
        .query(
            "SELECT rule_id, until_at, created_by FROM risk_snoozes WHERE case_id = $1
             ORDER BY created_at, id",
            &[Value::Uuid(case_id.as_u128())],
        )?
        .iter()
        .map(|row| {
            Ok(Snooze {
                rule_id: row.text(0)?,
                until_ms: row.int(1)?,
                created_by: uuid::Uuid::from_u128(row.uuid(2)?),
            })
        })
        .collect::<Result<Vec<_>, CaseError>>()?;
    Ok(CaseDetail {
        case,
        events,
        links,
        snoozes,
    })
}

fn valid_rule_id(rule_id: &str) -> bool {
    (1..=64).contains(&rule_id.len())
        && rule_id.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-_.".contains(&byte)
        })
}

/// The operators' case work.
pub struct CaseService {
    database: Arc<Database>,
    clock: Arc<dyn Clock>,
    config: CaseConfig,
}

impl CaseService {
    pub fn new(database: Arc<Database>, clock: Arc<dyn Clock>, config: CaseConfig) -> Self {
        Self {
            database,
            clock,
            config,
        }
    }

    pub fn config(&self) -> CaseConfig {
        self.config
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Runs one writing step: authenticates an operator who may work cases, then `work`.
    fn step<T>(
        &self,
        token: &SecretString,
        work: impl FnOnce(&mut dyn Tx, &Operator, i64) -> Result<T, CaseError>,
    ) -> Result<T, CaseError> {
        let now_ms = self.now_ms();
        self.database.transaction(|tx: &mut dyn Tx| {
            let by = operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ReviewCases)?;
            work(tx, &by, now_ms)
        })
    }

    /// The inbox: the cases this operator may see that match `filter`, newest first.
    pub fn list(&self, token: &SecretString, filter: &CaseFilter) -> Result<CasePage, CaseError> {
        let now_ms = self.now_ms();
        self.database.transaction(|tx: &mut dyn Tx| {
            let by = operator::authenticate(tx, now_ms, token)?;
            let scope = scope_of(&by)?;
            let mut query = Where::default();
            if let Scope::Bank(own) = &scope {
                query.bind("bank_code = ?", own.as_str().into());
            }
            if let Some(state) = filter.state {
                query.bind("state = ?", state.as_str().into());
            }
            if let Some(kind) = filter.kind {
                query.bind("kind = ?", kind.as_str().into());
            }
            match filter.assigned {
                Some(Assigned::Me) => query.bind("assigned_to = ?", Value::Uuid(by.id.as_u128())),
                Some(Assigned::To(id)) => query.bind("assigned_to = ?", Value::Uuid(id.as_u128())),
                Some(Assigned::Nobody) => query.conditions.push("assigned_to IS NULL".to_owned()),
                None => {}
            }
            if filter.overdue {
                query
                    .conditions
                    .push("state IN ('open', 'investigating')".to_owned());
                query.bind("due_at <= ?", now_ms.into());
            }
            if let Some(before) = filter.before {
                query.bind("id < ?", Value::Uuid(before.as_u128()));
            }
            let Where {
                conditions,
                mut params,
            } = query;
            params.push(filter.limit.saturating_add(1).into());
            let limit_param = params.len();
            let where_clause = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            // Case ids are UUIDv7: ordering by id is ordering by opening time.
            let rows = tx.query(
                &format!(
                    "SELECT {CASE_COLUMNS} FROM cases {where_clause}
                     ORDER BY id DESC LIMIT ${limit_param}"
                ),
                &params,
            )?;
            let mut cases = rows.iter().map(case_from).collect::<Result<Vec<_>, _>>()?;
            let more = i64::try_from(cases.len()).unwrap_or(i64::MAX) > filter.limit;
            cases.truncate(usize::try_from(filter.limit).unwrap_or(0));
            let next_before = if more {
                cases.last().map(|case| case.id)
            } else {
                None
            };
            Ok(CasePage { cases, next_before })
        })
    }

    /// One case with its history, links and snoozes.
    pub fn get(&self, token: &SecretString, case_id: uuid::Uuid) -> Result<CaseDetail, CaseError> {
        let now_ms = self.now_ms();
        self.database.transaction(|tx: &mut dyn Tx| {
            let by = operator::authenticate(tx, now_ms, token)?;
            let scope = scope_of(&by)?;
            detail_of(tx, case_id, &scope)
        })
    }

    /// Assigns a case to `assignee` (the operator themselves when none), within the cap on
    /// open cases per analyst. Assigning to the current assignee again changes nothing.
    pub fn assign(
        &self,
        token: &SecretString,
        case_id: uuid::Uuid,
        assignee: Option<uuid::Uuid>,
    ) -> Result<CaseDetail, CaseError> {
        let max = self.config.open_per_analyst_max;
        self.step(token, |tx, by, now_ms| {
            let assignee = assignee.unwrap_or_else(|| operator_uuid(by));
            let case = locked_case(tx, case_id)?;
            if case.state.is_closed() {
                return Err(CaseError::Closed);
            }
            if case.assigned_to == Some(assignee) {
                return detail_of(tx, case_id, &Scope::All);
            }
            // The assignee's row lock serialises assignments to them, so two at once cannot
            // both pass the cap.
            let locked = tx.query_opt(
                &format!(
                    "SELECT id FROM identity_operators WHERE id = $1{}",
                    tx.for_update()
                ),
                &[Value::Uuid(assignee.as_u128())],
            )?;
            let target = match (locked, OperatorId::from_u128(assignee.as_u128())) {
                (Some(_), Ok(id)) => operator::find_operator(tx, id)?,
                _ => return Err(CaseError::AssigneeInvalid),
            };
            if !target.can(Permission::ReviewCases) {
                return Err(CaseError::AssigneeInvalid);
            }
            let open = tx
                .query_one(
                    "SELECT COUNT(*) FROM cases
                     WHERE assigned_to = $1 AND state IN ('open', 'investigating')",
                    &[Value::Uuid(assignee.as_u128())],
                )?
                .int(0)?;
            if open >= max {
                return Err(CaseError::AssigneeAtCapacity { max });
            }
            tx.execute(
                "UPDATE cases SET assigned_to = $2, updated_at = $3 WHERE id = $1",
                &[
                    Value::Uuid(case_id.as_u128()),
                    Value::Uuid(assignee.as_u128()),
                    now_ms.into(),
                ],
            )?;
            let detail = match case.assigned_to {
                Some(previous) => format!("assigned to {assignee} (was {previous})"),
                None => format!("assigned to {assignee}"),
            };
            record_event(
                tx,
                case_id,
                Some(operator_uuid(by)),
                "assigned",
                &detail,
                now_ms,
            )?;
            detail_of(tx, case_id, &Scope::All)
        })
    }

    /// Adds a note to a case's history (closed cases too: what was learnt later).
    pub fn note(
        &self,
        token: &SecretString,
        case_id: uuid::Uuid,
        text: &str,
    ) -> Result<CaseDetail, CaseError> {
        let text = text.trim();
        if !(1..=NOTE_MAX_CHARS).contains(&text.chars().count()) {
            return Err(CaseError::NoteInvalid {
                max: NOTE_MAX_CHARS,
            });
        }
        self.step(token, |tx, by, now_ms| {
            locked_case(tx, case_id)?;
            touch(tx, case_id, now_ms)?;
            record_event(tx, case_id, Some(operator_uuid(by)), "note", text, now_ms)?;
            detail_of(tx, case_id, &Scope::All)
        })
    }

    /// Links two related cases (both list the link). Linking them again changes nothing.
    pub fn link(
        &self,
        token: &SecretString,
        case_id: uuid::Uuid,
        other_case_id: uuid::Uuid,
        reason: LinkReason,
    ) -> Result<CaseDetail, CaseError> {
        if case_id == other_case_id {
            return Err(CaseError::LinkToItself);
        }
        self.step(token, |tx, by, now_ms| {
            // Locked in id order, so two analysts linking the same pair cannot deadlock.
            let (first, second) = if case_id < other_case_id {
                (case_id, other_case_id)
            } else {
                (other_case_id, case_id)
            };
            locked_case(tx, first)?;
            locked_case(tx, second)?;
            let exists = tx.query_opt(
                "SELECT 1 FROM case_links WHERE case_id = $1 AND other_case_id = $2",
                &[
                    Value::Uuid(case_id.as_u128()),
                    Value::Uuid(other_case_id.as_u128()),
                ],
            )?;
            if exists.is_none() {
                for (from, to) in [(case_id, other_case_id), (other_case_id, case_id)] {
                    tx.execute(
                        "INSERT INTO case_links (case_id, other_case_id, reason, linked_by, linked_at)
                         VALUES ($1, $2, $3, $4, $5)",
                        &[
                            Value::Uuid(from.as_u128()),
                            Value::Uuid(to.as_u128()),
                            reason.as_str().into(),
                            Value::Uuid(by.id.as_u128()),
                            now_ms.into(),
                        ],
                    )?;
                    touch(tx, from, now_ms)?;
                    record_event(
                        tx,
                        from,
                        Some(operator_uuid(by)),
                        "linked",
                        &format!("linked to {to} ({})", reason.as_str()),
                        now_ms,
                    )?;
                }
            }
            detail_of(tx, case_id, &Scope::All)
        })
    }

    /// Moves a case along `open → investigating → resolved | refunded | rejected`; closing
    /// needs a label (fraud / not fraud) and every move a reason.
    pub fn transition(
        &self,
        token: &SecretString,
        case_id: uuid::Uuid,
        transition: Transition<'_>,
    ) -> Result<CaseDetail, CaseError> {
        self.step(token, |tx, by, now_ms| {
            operator::require_reason(transition.reason)?;
            let case = locked_case(tx, case_id)?;
            let to = transition.to;
            if !case.state.can_become(to) {
                return Err(CaseError::transition(case.state, to));
            }
            let label = match (to.is_closed(), transition.label) {
                (true, None) => return Err(CaseError::LabelRequired),
                (false, Some(_)) => return Err(CaseError::LabelNotAllowed),
                (_, label) => label,
            };
            let closed_at = to.is_closed().then_some(now_ms);
            let changed = tx.execute(
                "UPDATE cases SET state = $2, label = $3, closed_at = $4, updated_at = $5
                 WHERE id = $1 AND state = $6",
                &[
                    Value::Uuid(case_id.as_u128()),
                    to.as_str().into(),
                    label.map(CaseLabel::as_str).into(),
                    closed_at.into(),
                    now_ms.into(),
                    case.state.as_str().into(),
                ],
            )?;
            if changed != 1 {
                return Err(CaseError::transition(case.state, to));
            }
            let labelled = label.map_or(String::new(), |label| format!(" ({})", label.as_str()));
            record_event(
                tx,
                case_id,
                Some(operator_uuid(by)),
                "state",
                &format!(
                    "{} → {}{labelled}: {}",
                    case.state.as_str(),
                    to.as_str(),
                    transition.reason.trim()
                ),
                now_ms,
            )?;
            detail_of(tx, case_id, &Scope::All)
        })
    }

    /// Snoozes `rule_id` for the case's customer for `hours`: the risk path records the rule
    /// for them and does not act on it until then.
    pub fn snooze_rule(
        &self,
        token: &SecretString,
        case_id: uuid::Uuid,
        rule_id: &str,
        hours: i64,
        reason: &str,
    ) -> Result<CaseDetail, CaseError> {
        if !valid_rule_id(rule_id) {
            return Err(CaseError::RuleInvalid);
        }
        if !(1..=SNOOZE_HOURS_MAX).contains(&hours) {
            return Err(CaseError::SnoozeInvalid {
                max: SNOOZE_HOURS_MAX,
            });
        }
        self.step(token, |tx, by, now_ms| {
            operator::require_reason(reason)?;
            let case = locked_case(tx, case_id)?;
            let user_id = case.user_id.ok_or(CaseError::NoUser)?;
            let until_ms = now_ms.saturating_add(hours.saturating_mul(HOUR_MS));
            tx.execute(
                "INSERT INTO risk_snoozes (id, rule_id, user_id, until_at, case_id, created_by,
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    Value::Uuid(uuid::Uuid::now_v7().as_u128()),
                    rule_id.into(),
                    Value::Uuid(user_id.as_u128()),
                    until_ms.into(),
                    Value::Uuid(case_id.as_u128()),
                    Value::Uuid(by.id.as_u128()),
                    now_ms.into(),
                ],
            )?;
            touch(tx, case_id, now_ms)?;
            record_event(
                tx,
                case_id,
                Some(operator_uuid(by)),
                "rule_snoozed",
                &format!(
                    "rule {rule_id} snoozed for user {user_id} until {until_ms}: {}",
                    reason.trim()
                ),
                now_ms,
            )?;
            detail_of(tx, case_id, &Scope::All)
        })
    }

    /// The SLA sweep: marks open and investigating cases past their due time escalated (once
    /// each, at most [`ESCALATE_PER_SWEEP_MAX`] per call); answers how many it marked.
    pub fn escalate_overdue(&self, now_ms: i64) -> Result<usize, CaseError> {
        self.database.transaction(|tx: &mut dyn Tx| {
            let due = tx.query(
                "SELECT id, due_at FROM cases
                 WHERE state IN ('open', 'investigating') AND escalated_at IS NULL AND due_at <= $1
                 ORDER BY due_at, id LIMIT $2",
                &[now_ms.into(), ESCALATE_PER_SWEEP_MAX.into()],
            )?;
            let mut escalated = 0;
            for row in &due {
                let case_id = uuid::Uuid::from_u128(row.uuid(0)?);
                // Conditional: of two processes sweeping at once, one marks each case.
                let changed = tx.execute(
                    "UPDATE cases SET escalated_at = $2, updated_at = $2
                     WHERE id = $1 AND escalated_at IS NULL AND state IN ('open', 'investigating')",
                    &[Value::Uuid(case_id.as_u128()), now_ms.into()],
                )?;
                if changed == 1 {
                    record_event(
                        tx,
                        case_id,
                        None,
                        "escalated",
                        &format!("past its due time ({})", row.int(1)?),
                        now_ms,
                    )?;
                    escalated += 1;
                }
            }
            Ok(escalated)
        })
    }
}

/// A WHERE clause built from the filters present, each value bound as the next `$n`.
#[derive(Default)]
struct Where {
    conditions: Vec<String>,
    params: Vec<Value>,
}

impl Where {
    fn bind(&mut self, condition: &str, value: Value) {
        self.params.push(value);
        self.conditions
            .push(condition.replace('?', &format!("${}", self.params.len())));
    }
}

fn touch(tx: &mut dyn Tx, case_id: uuid::Uuid, now_ms: i64) -> Result<(), CaseError> {
    tx.execute(
        "UPDATE cases SET updated_at = $2 WHERE id = $1",
        &[Value::Uuid(case_id.as_u128()), now_ms.into()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_plain() {
        assert!(valid_rule_id("held-money-cannot-leave"));
        assert!(!valid_rule_id(""));
        assert!(!valid_rule_id("Rule'; DROP"));
        assert!(!valid_rule_id(&"a".repeat(65)));
    }

    #[test]
    fn the_cap_is_bounded() {
        assert_eq!(CaseConfig::new(0), None);
        assert_eq!(CaseConfig::new(OPEN_PER_ANALYST_MAX + 1), None);
        assert_eq!(
            CaseConfig::new(3).map(|config| config.open_per_analyst_max),
            Some(3)
        );
    }
}
