//! Money out, scored by the risk engine (issue 11): before a P2P transfer or a withdrawal
//! moves anything, the wallet's money of the last 31 days — charges with their link's age,
//! withdrawals, P2P in and out, and the recipient's P2P in — is read from the shared database
//! (so every `kinko serve` process on it decides alike), replayed into a `kinko_risk::Engine`
//! with the configured rules, and the action is scored. A review or a denial refuses it with
//! the rule's plain-words reason (`MONEY_RISK_DECLINED`) and moves nothing. A decision on which
//! any rule fired (shadow mode and open breakers included) is stored in `risk_decisions` with
//! the rules and feature values. Off unless the service is built `with_risk_rules`
//! (`KINKO_RISK_RULES`). A review opens a `risk_review` case in the decision's transaction; a
//! rule an analyst snoozed for this user (`kinko_cases::snooze`) is recorded and does not act.

use std::sync::{Arc, Mutex};

use kinko_identity::session::SessionInfo;
use kinko_risk::{
    Actor, Breakers, Engine, Event, EventKind, Key, Language, LinkMethod, Outcome, RuleSet,
};
use kinko_store::sql::{Tx, Value};

use crate::charge::{MoneyError, MoneyService};

/// Rows read per decision, at most (a wallet's month); beyond it the oldest are left out.
const HISTORY_ROWS_MAX: i64 = 2_000;
/// Subjects a per-decision engine may hold: far more than one wallet's month needs.
const SLOTS_MAX: usize = 100_000;
const WINDOW_MS: i64 = 31 * 86_400_000;

/// The rules, and this process's decline circuit breakers (a rule that reviews or denies
/// more than its cap per interval stops acting: a bad rule cannot block every honest user).
pub(crate) struct RiskGate {
    rules: RuleSet,
    breakers: Mutex<Breakers>,
}

/// What leaves the wallet, with the request's `Idempotency-Key`: a replay of a request that
/// already exists is not scored again (the flow answers it as before).
pub(crate) enum MoneyOut<'a> {
    P2p {
        to_handle: &'a str,
        amount_yen: i64,
        idempotency_key: &'a str,
    },
    Withdrawal {
        link_id: u128,
        amount_yen: i64,
        idempotency_key: &'a str,
    },
}

fn seconds(ms: i64) -> u64 {
    u64::try_from(ms / 1_000).unwrap_or(0)
}

fn method(text: &str) -> LinkMethod {
    if text == "legacy" {
        LinkMethod::Legacy
    } else {
        LinkMethod::Oauth
    }
}

fn account_key(bank_code: &str, account_ref: &str) -> Key {
    Key::from_text(&format!("{bank_code}/{account_ref}"))
}

/// A user's opening time and KYC level.
fn actor_of(tx: &mut dyn Tx, user: u128) -> Result<Actor, MoneyError> {
    let row = tx
        .query_opt(
            "SELECT created_at, kyc_level FROM identity_users WHERE id = $1",
            &[Value::Uuid(user)],
        )?
        .ok_or_else(|| MoneyError::Internal("risk: the user has no row".into()))?;
    Ok(Actor {
        user: Key::from_u128(user),
        user_created_s: seconds(row.int(0)?),
        kyc_level: u8::try_from(row.int(1)?).unwrap_or(0),
        device: None,
        ip: None,
    })
}

/// The user's bank transfers since `since_ms`, as events.
fn bank_history(tx: &mut dyn Tx, actor: &Actor, since_ms: i64) -> Result<Vec<Event>, MoneyError> {
    let rows = tx.query(
        "SELECT b.direction, b.amount_yen, b.created_at, l.created_at, b.bank_code,
                l.account_ref, l.method, b.link_id
         FROM money_bank_transfers b JOIN banking_links l ON l.id = b.link_id
         WHERE b.user_id = $1 AND b.created_at >= $2 AND b.status IN ('pending', 'posted')
         ORDER BY b.created_at DESC LIMIT $3",
        &[
            Value::Uuid(actor.user.as_u128()),
            since_ms.into(),
            HISTORY_ROWS_MAX.into(),
        ],
    )?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let bank_code = row.text(4)?;
        let bank = Key::from_text(&bank_code);
        let bank_account = account_key(&bank_code, &row.text(5)?);
        let link = Key::from_u128(row.uuid(7)?);
        let amount_minor = row.int(1)?;
        let link_created_s = seconds(row.int(3)?);
        let method = method(&row.text(6)?);
        let kind = if row.text(0)? == "charge" {
            EventKind::Charge {
                bank,
                bank_account,
                link,
                link_created_s,
                method,
                amount_minor,
                balance_minor: 0,
            }
        } else {
            EventKind::Withdrawal {
                bank,
                bank_account,
                link,
                link_created_s,
                method,
                amount_minor,
                balance_minor: 0,
            }
        };
        events.push(Event {
            at_s: seconds(row.int(2)?),
            actor: actor.clone(),
            kind,
        });
    }
    Ok(events)
}

/// Posted P2P transfers from or to `user`, or to `also_to`, since `since_ms`, as events.
fn p2p_history(
    tx: &mut dyn Tx,
    user: u128,
    also_to: u128,
    since_ms: i64,
) -> Result<Vec<Event>, MoneyError> {
    let rows = tx.query(
        "SELECT from_user, to_user, amount_yen, created_at FROM money_transfers
         WHERE (from_user = $1 OR to_user = $1 OR to_user = $2)
           AND created_at >= $3 AND status = 'posted'
         ORDER BY created_at DESC LIMIT $4",
        &[
            Value::Uuid(user),
            Value::Uuid(also_to),
            since_ms.into(),
            HISTORY_ROWS_MAX.into(),
        ],
    )?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        events.push(Event {
            at_s: seconds(row.int(3)?),
            // Only the sender's id matters for a past transfer's features.
            actor: Actor {
                user: Key::from_u128(row.uuid(0)?),
                user_created_s: 0,
                kyc_level: 0,
                device: None,
                ip: None,
            },
            kind: EventKind::P2p {
                receiver: Key::from_u128(row.uuid(1)?),
                receiver_kyc_level: 0,
                amount_minor: row.int(2)?,
                balance_minor: 0,
            },
        });
    }
    Ok(events)
}

/// The `risk_review` case for a decision that held money out (nothing moved).
fn open_review_case(
    tx: &mut dyn Tx,
    user: u128,
    event: &Event,
    decision: &kinko_risk::Decision,
    decision_id: uuid::Uuid,
    now_ms: i64,
) -> Result<(), MoneyError> {
    let (what, amount_yen, bank_code) = match &event.kind {
        EventKind::P2p { amount_minor, .. } => ("P2P transfer", *amount_minor, None),
        EventKind::Withdrawal {
            amount_minor, link, ..
        } => {
            let bank_code = tx
                .query_opt(
                    "SELECT bank_code FROM banking_links WHERE id = $1",
                    &[Value::Uuid(link.as_u128())],
                )?
                .map(|row| row.text(0))
                .transpose()?;
            ("withdrawal", *amount_minor, bank_code)
        }
        _ => ("action", 0, None),
    };
    let rules: Vec<&str> = decision
        .acting_rules()
        .map(|firing| firing.rule_id.as_str())
        .collect();
    let subject = format!("risk_decision:{decision_id}");
    kinko_cases::open_case(
        tx,
        &kinko_cases::NewCase {
            kind: kinko_cases::CaseKind::RiskReview,
            bank_code,
            user_id: Some(uuid::Uuid::from_u128(user)),
            summary: format!(
                "{what} of ¥{amount_yen} held for review (rules: {})",
                rules.join(", ")
            ),
            amount_yen: Some(amount_yen),
            dedupe_key: subject.clone(),
            subject,
        },
        now_ms,
    )?;
    Ok(())
}

impl MoneyService {
    /// Stores a decision with the rules that fired and their feature values; a review opens
    /// a case about it in the same transaction.
    fn record_decision(
        &self,
        user: u128,
        event: &Event,
        decision: &kinko_risk::Decision,
        now_ms: i64,
    ) -> Result<(), MoneyError> {
        let json = serde_json::to_string(decision)
            .map_err(|error| MoneyError::Internal(format!("risk: encoding a decision: {error}")))?;
        let decision_id = uuid::Uuid::now_v7();
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "INSERT INTO risk_decisions (id, user_id, flow, outcome, rules_version,
                 decision, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    Value::Uuid(decision_id.as_u128()),
                    Value::Uuid(user),
                    event.kind.flow().name().into(),
                    decision.outcome.name().into(),
                    decision.rules_version.as_str().into(),
                    json.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            if decision.outcome == Outcome::Review {
                open_review_case(tx, user, event, decision, decision_id, now_ms)?;
            }
            Ok::<_, MoneyError>(())
        })
    }

    /// Scores P2P transfers and withdrawals with `rules` before they move money.
    pub fn with_risk_rules(mut self, rules: RuleSet) -> Self {
        let breakers = Mutex::new(Breakers::new(&rules));
        self.risk = Some(Arc::new(RiskGate { rules, breakers }));
        self
    }

    /// Refuses `out` when the rules review or deny it. A no-op without rules.
    pub(crate) fn score_money_out(
        &self,
        session: &SessionInfo,
        out: MoneyOut<'_>,
    ) -> Result<(), MoneyError> {
        let Some(gate) = self.risk.clone() else {
            return Ok(());
        };
        let balance_minor = self.balance(session)?.balance_yen;
        let now_ms = self.clock_ms();
        let since_ms = now_ms.saturating_sub(WINDOW_MS);
        let user = session.user_id;
        let scored = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let actor = actor_of(tx, user)?;
            let (kind, also_to) = match out {
                MoneyOut::P2p {
                    to_handle,
                    amount_yen,
                    idempotency_key,
                } => {
                    let replay = tx.query_opt(
                        "SELECT 1 FROM money_transfers WHERE from_user = $1 AND idempotency_key = $2",
                        &[Value::Uuid(user), idempotency_key.into()],
                    )?;
                    let recipient = tx.query_opt(
                        "SELECT h.user_id FROM money_handles h
                         JOIN identity_users u ON u.id = h.user_id
                         WHERE h.handle = $1 AND u.status = 'active'",
                        &[to_handle.into()],
                    )?;
                    // A replay, or a recipient the flow will refuse: the flow answers.
                    let (None, Some(recipient)) = (replay, recipient) else {
                        return Ok(None);
                    };
                    let recipient = recipient.uuid(0)?;
                    let receiver = actor_of(tx, recipient)?;
                    let kind = EventKind::P2p {
                        receiver: receiver.user,
                        receiver_kyc_level: receiver.kyc_level,
                        amount_minor: amount_yen,
                        balance_minor,
                    };
                    (kind, recipient)
                }
                MoneyOut::Withdrawal {
                    link_id,
                    amount_yen,
                    idempotency_key,
                } => {
                    let replay = tx.query_opt(
                        "SELECT 1 FROM money_bank_transfers
                         WHERE user_id = $1 AND idempotency_key = $2",
                        &[Value::Uuid(user), idempotency_key.into()],
                    )?;
                    let link = tx.query_opt(
                        "SELECT bank_code, account_ref, method, created_at FROM banking_links
                         WHERE id = $1 AND user_id = $2",
                        &[Value::Uuid(link_id), Value::Uuid(user)],
                    )?;
                    let (None, Some(link)) = (replay, link) else {
                        return Ok(None);
                    };
                    let bank_code = link.text(0)?;
                    let kind = EventKind::Withdrawal {
                        bank: Key::from_text(&bank_code),
                        bank_account: account_key(&bank_code, &link.text(1)?),
                        link: Key::from_u128(link_id),
                        link_created_s: seconds(link.int(3)?),
                        method: method(&link.text(2)?),
                        amount_minor: amount_yen,
                        balance_minor,
                    };
                    (kind, user)
                }
            };
            let mut history = bank_history(tx, &actor, since_ms)?;
            history.extend(p2p_history(tx, user, also_to, since_ms)?);
            let event = Event {
                at_s: seconds(now_ms),
                actor,
                kind,
            };
            let snoozed = kinko_cases::snooze::active_rules(tx, user, now_ms)?;
            Ok::<_, MoneyError>(Some((history, event, snoozed)))
        })?;
        let Some((mut history, event, snoozed)) = scored else {
            return Ok(());
        };
        history.sort_by_key(|event| event.at_s);
        // A rule snoozed for this user runs in shadow: recorded, never acting. (Same rules in
        // the same order, so the process's breaker counts stay aligned.)
        let mut rules = gate.rules.clone();
        for rule in &mut rules.rules {
            if snoozed.contains(&rule.id) {
                rule.shadow = true;
            }
        }
        let mut engine = Engine::new(rules, SLOTS_MAX);
        for past in &history {
            engine.observe(past);
        }
        let decision = {
            let mut breakers = gate
                .breakers
                .lock()
                .map_err(|_| MoneyError::Internal("risk: the breakers' lock is poisoned".into()))?;
            engine.decide_with(&event, &mut breakers)
        };
        let acting: Vec<&str> = decision
            .acting_rules()
            .map(|firing| firing.rule_id.as_str())
            .collect();
        if !decision.firings.is_empty() {
            self.record_decision(user, &event, &decision, now_ms)?;
        }
        tracing::info!(
            user = %uuid::Uuid::from_u128(user),
            outcome = %decision.outcome,
            rules = ?acting,
            rules_version = %decision.rules_version,
            "risk: money out scored"
        );
        match decision.outcome {
            Outcome::Review | Outcome::Deny => Err(MoneyError::RiskDeclined(
                decision
                    .user_reason(Language::English)
                    .unwrap_or_else(|| "this action is on hold for a check".to_owned()),
            )),
            // Step-up for P2P and withdrawals is not built yet: a challenge is logged only.
            Outcome::Allow | Outcome::Challenge => Ok(()),
        }
    }
}
