//! The money domain's service: what every flow (charges, withdrawals, payments, P2P, credits,
//! reconcilers) shares — the ledger, identity and links it works through, and its policy.

use std::sync::Arc;

use kinko_banking::links::LinkService;
use kinko_identity::service::IdentityService;
use kinko_identity::session::SessionInfo;
use kinko_ledger::Ledger;
use kinko_qr::PayCodeKey;

use crate::error::MoneyError;

const HOUR_MS: i64 = 3_600_000;

/// How long a charge's or withdrawal's order to the bank stays good by default
/// (`KINKO_BANK_ORDER_TTL_S`): its deadline (`bank_not_after` on the row, `not_after_ms` at the
/// bank) is the row's creation plus this. Long enough for a ledger queue, a token refresh and
/// the call itself (10 s each at worst).
pub const BANK_ORDER_TTL_S_DEFAULT: i64 = 60;
/// The bank enforces the deadline by its own clock; Kinko allows it to run this far behind.
pub const BANK_CLOCK_SKEW_MAX_MS: i64 = 30_000;
/// The reconciler concludes "the bank never saw it" from a 404 only once the deadline has
/// passed by more than a call's timeout plus the clock skew allowed: no order of this key can
/// still be on its way or being decided by then.
pub const BANK_ANSWER_MARGIN_MS: i64 = 10_000 + BANK_CLOCK_SKEW_MAX_MS;

pub struct MoneyService {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) identity: Arc<IdentityService>,
    pub(crate) links: Arc<LinkService>,
    /// Signs consumer-presented pay codes; derived from the server key, so every instance
    /// sharing the key verifies every other's codes.
    pub(crate) pay_code_key: PayCodeKey,
    /// Charges above this need a confirmation bound to amount and link.
    pub(crate) confirm_above_yen: i64,
    /// How long a new link waits before money may be withdrawn to it (THREATS 21).
    pub(crate) payout_wait_ms: i64,
    /// What one operator may credit alone within a day; beyond it a second approves.
    pub(crate) credit_solo_yen: i64,
    /// Rules that score P2P transfers and withdrawals (`risk.rs`); none: not scored.
    pub(crate) risk: Option<Arc<crate::risk::RiskGate>>,
    /// How long an order to the bank stays good (see [`BANK_ORDER_TTL_S_DEFAULT`]).
    pub(crate) bank_order_ttl_ms: i64,
    /// Where each reconciler's sweep over pending rows stopped.
    pub(crate) sweeps: crate::reconcile::Sweeps,
}

/// A new link receives no withdrawal for this long (THREATS 21, ⟨72 h⟩): whoever took over a
/// wallet and linked an account cannot empty it before the holder hears of the link.
pub const PAYOUT_WAIT_HOURS_DEFAULT: i64 = 72;

pub(crate) fn internal(error: impl std::fmt::Display) -> MoneyError {
    MoneyError::Internal(error.to_string())
}

impl MoneyService {
    pub fn new(
        ledger: Arc<Ledger>,
        identity: Arc<IdentityService>,
        links: Arc<LinkService>,
    ) -> Self {
        let key = *identity.secret_box().derived_key("pay_code.v1");
        Self {
            ledger,
            identity,
            links,
            pay_code_key: PayCodeKey::from_bytes(key),
            confirm_above_yen: crate::confirmations::CHARGE_CONFIRM_ABOVE_YEN_DEFAULT,
            payout_wait_ms: PAYOUT_WAIT_HOURS_DEFAULT * HOUR_MS,
            credit_solo_yen: crate::credits::CREDIT_SOLO_YEN_DEFAULT,
            risk: None,
            bank_order_ttl_ms: BANK_ORDER_TTL_S_DEFAULT * 1_000,
            sweeps: crate::reconcile::Sweeps::default(),
        }
    }

    /// An operator's credits summing above `yen` within a day need a second operator's
    /// approval (0: every credit does).
    pub fn with_credit_approval_threshold(mut self, yen: i64) -> Self {
        self.credit_solo_yen = yen.max(0);
        self
    }

    pub(crate) fn credit_solo_yen(&self) -> i64 {
        self.credit_solo_yen
    }

    /// An order to the bank is sent only within `seconds` of its row's creation and refused
    /// by the bank after that (at least 1 s, at most a day).
    pub fn with_bank_order_ttl_secs(mut self, seconds: i64) -> Self {
        self.bank_order_ttl_ms = seconds.clamp(1, 86_400) * 1_000;
        self
    }

    /// A new link receives withdrawals only `hours` after it was made (0: at once).
    pub fn with_payout_wait_hours(mut self, hours: i64) -> Self {
        self.payout_wait_ms = hours.clamp(0, i64::MAX / HOUR_MS) * HOUR_MS;
        self
    }

    /// Charges above `yen` need a confirmation (dynamic linking); at least ¥1.
    pub fn with_confirmation_threshold(mut self, yen: i64) -> Self {
        self.confirm_above_yen = yen.max(1);
        self
    }

    pub(crate) fn identity(&self) -> &Arc<IdentityService> {
        &self.identity
    }

    pub(crate) fn pay_code_key(&self) -> &PayCodeKey {
        &self.pay_code_key
    }

    pub(crate) fn links(&self) -> &Arc<LinkService> {
        &self.links
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub(crate) fn identity_database(&self) -> &Arc<kinko_store::sql::Database> {
        self.identity.database()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        i64::try_from(self.identity.clock().now_ms()).unwrap_or(i64::MAX)
    }

    pub(crate) fn clock_ms(&self) -> i64 {
        self.now_ms()
    }

    /// The wallet's gate; `pulls_from_bank` also asks for KYC L1.
    pub(crate) fn gate(
        &self,
        session: &SessionInfo,
        pulls_from_bank: bool,
    ) -> Result<(), MoneyError> {
        let gate = self.identity.money_gate(session, pulls_from_bank)?;
        match gate.reasons.first() {
            Some(reason) => Err(MoneyError::Gate(reason)),
            None => Ok(()),
        }
    }
}
