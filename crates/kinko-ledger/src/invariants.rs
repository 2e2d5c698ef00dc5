//! The ledger's invariants, as `kinko check` verifies them over a whole store.
//!
//! The store gathers the facts (each account with the sums the transfer log implies, and any
//! structural anomaly its queries found); [`evaluate`] decides what is broken. Keeping the
//! judgement here means both stores are held to exactly the same rules.

use std::collections::BTreeMap;
use std::fmt;

use crate::types::{Account, AccountFlags, AccountId, TransferId};

/// One account with what the transfer log says its balances must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountAudit {
    pub account: Account,
    /// Sum of single-phase and post transfers debiting / crediting the account.
    pub debits_posted_in_log: u64,
    pub credits_posted_in_log: u64,
    /// Sum of pending transfers still open (not posted, voided or expired).
    pub debits_pending_open: u64,
    pub credits_pending_open: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvariantViolation {
    /// Per ledger (currency), debits and credits must sum to the same total: money is never
    /// created or destroyed.
    LedgerUnbalanced {
        ledger: u32,
        debits: i128,
        credits: i128,
        kind: &'static str,
    },
    FlagBroken {
        account_id: AccountId,
        flag: &'static str,
    },
    PostedBalanceDiffersFromLog {
        account_id: AccountId,
        side: &'static str,
        balance: u64,
        log: u64,
    },
    PendingBalanceDiffersFromOpenTransfers {
        account_id: AccountId,
        side: &'static str,
        balance: u64,
        open: u64,
    },
    /// A structural fault found by the store's queries: a post without its pending transfer,
    /// a pending transfer resolved twice, a resolution state without its transfer…
    Structure {
        transfer_id: TransferId,
        detail: String,
    },
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvariantViolation::LedgerUnbalanced {
                ledger,
                debits,
                credits,
                kind,
            } => write!(
                formatter,
                "ledger {ledger}: {kind} debits {debits} != {kind} credits {credits}"
            ),
            InvariantViolation::FlagBroken { account_id, flag } => {
                write!(formatter, "account {account_id}: breaks {flag}")
            }
            InvariantViolation::PostedBalanceDiffersFromLog {
                account_id,
                side,
                balance,
                log,
            } => write!(
                formatter,
                "account {account_id}: {side}_posted is {balance} but the transfers sum to {log}"
            ),
            InvariantViolation::PendingBalanceDiffersFromOpenTransfers {
                account_id,
                side,
                balance,
                open,
            } => write!(
                formatter,
                "account {account_id}: {side}_pending is {balance} but open pending transfers sum to {open}"
            ),
            InvariantViolation::Structure {
                transfer_id,
                detail,
            } => write!(formatter, "transfer {transfer_id}: {detail}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantReport {
    pub accounts_checked: u64,
    pub transfers_checked: u64,
    pub violations: Vec<InvariantViolation>,
}

impl InvariantReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Judges the facts a store gathered.
pub fn evaluate(
    audits: &[AccountAudit],
    structure: Vec<InvariantViolation>,
    transfers_checked: u64,
) -> InvariantReport {
    let mut violations = structure;
    // Per ledger: (debits_posted, credits_posted, debits_pending, credits_pending).
    let mut totals: BTreeMap<u32, [i128; 4]> = BTreeMap::new();
    for audit in audits {
        let account = &audit.account;
        let total = totals.entry(account.ledger).or_insert([0; 4]);
        total[0] += i128::from(account.debits_posted);
        total[1] += i128::from(account.credits_posted);
        total[2] += i128::from(account.debits_pending);
        total[3] += i128::from(account.credits_pending);

        let debits = i128::from(account.debits_posted) + i128::from(account.debits_pending);
        let credits = i128::from(account.credits_posted) + i128::from(account.credits_pending);
        if account
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && debits > i128::from(account.credits_posted)
        {
            violations.push(InvariantViolation::FlagBroken {
                account_id: account.id,
                flag: "debits_must_not_exceed_credits",
            });
        }
        if account
            .flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && credits > i128::from(account.debits_posted)
        {
            violations.push(InvariantViolation::FlagBroken {
                account_id: account.id,
                flag: "credits_must_not_exceed_debits",
            });
        }
        for (side, balance, log) in [
            ("debits", account.debits_posted, audit.debits_posted_in_log),
            (
                "credits",
                account.credits_posted,
                audit.credits_posted_in_log,
            ),
        ] {
            if balance != log {
                violations.push(InvariantViolation::PostedBalanceDiffersFromLog {
                    account_id: account.id,
                    side,
                    balance,
                    log,
                });
            }
        }
        for (side, balance, open) in [
            ("debits", account.debits_pending, audit.debits_pending_open),
            (
                "credits",
                account.credits_pending,
                audit.credits_pending_open,
            ),
        ] {
            if balance != open {
                violations.push(InvariantViolation::PendingBalanceDiffersFromOpenTransfers {
                    account_id: account.id,
                    side,
                    balance,
                    open,
                });
            }
        }
    }
    for (
        ledger,
        [
            debits_posted,
            credits_posted,
            debits_pending,
            credits_pending,
        ],
    ) in totals
    {
        if debits_posted != credits_posted {
            violations.push(InvariantViolation::LedgerUnbalanced {
                ledger,
                debits: debits_posted,
                credits: credits_posted,
                kind: "posted",
            });
        }
        if debits_pending != credits_pending {
            violations.push(InvariantViolation::LedgerUnbalanced {
                ledger,
                debits: debits_pending,
                credits: credits_pending,
                kind: "pending",
            });
        }
    }
    InvariantReport {
        accounts_checked: u64::try_from(audits.len()).unwrap_or(u64::MAX),
        transfers_checked,
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(raw_id: u128, flags: AccountFlags) -> Account {
        Account {
            id: AccountId::from_u128(raw_id).unwrap_or_else(|_| unreachable!()),
            ledger: 392,
            code: 1,
            flags,
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            timestamp: 1,
            transfer_last: None,
        }
    }

    fn audit_of(account: Account) -> AccountAudit {
        AccountAudit {
            account,
            debits_posted_in_log: account.debits_posted,
            credits_posted_in_log: account.credits_posted,
            debits_pending_open: account.debits_pending,
            credits_pending_open: account.credits_pending,
        }
    }

    #[test]
    fn a_balanced_ledger_is_clean() {
        let mut source = account(1, AccountFlags::NONE);
        let mut wallet = account(2, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
        source.debits_posted = 500;
        wallet.credits_posted = 500;
        let report = evaluate(&[audit_of(source), audit_of(wallet)], Vec::new(), 1);
        assert!(report.is_clean(), "{:?}", report.violations);
        assert_eq!(report.accounts_checked, 2);
    }

    #[test]
    fn each_breach_is_reported() {
        let mut source = account(1, AccountFlags::NONE);
        let mut wallet = account(2, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
        source.debits_posted = 500;
        wallet.credits_posted = 400; // money vanished
        wallet.debits_pending = 401; // overdrawn by a reservation
        let mut wallet_audit = audit_of(wallet);
        wallet_audit.credits_posted_in_log = 500;
        wallet_audit.debits_pending_open = 0;
        let report = evaluate(&[audit_of(source), wallet_audit], Vec::new(), 1);
        let text: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|line| line.contains("breaks debits_must_not_exceed_credits"))
        );
        assert!(
            text.iter()
                .any(|line| line.contains("credits_posted is 400 but the transfers sum to 500"))
        );
        assert!(
            text.iter()
                .any(|line| line.contains("debits_pending is 401"))
        );
        assert!(
            text.iter()
                .any(|line| line.contains("posted debits 500 != posted credits 400"))
        );
        assert!(
            text.iter()
                .any(|line| line.contains("pending debits 401 != pending credits 0"))
        );
    }
}
