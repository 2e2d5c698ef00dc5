//! Accounts, transfers and their flags; the named results of creating them.

use kinko_core::typed_id;

typed_id!(
    /// A ledger account: a wallet, a merchant payable, a bank settlement account…
    AccountId
);
typed_id!(
    /// A transfer, chosen by the client so that a retry is recognised (idempotency).
    TransferId
);

/// Every amount and balance stays within `i64` so both stores hold it natively.
pub const AMOUNT_MAX: u64 = i64::MAX as u64;

/// The ledger number of yen: ISO 4217 numeric 392.
pub const LEDGER_JPY: u32 = 392;

macro_rules! flags {
    ($(#[$meta:meta])* $name:ident { $($(#[$flag_meta:meta])* $flag:ident = $bit:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(u16);

        impl $name {
            pub const NONE: Self = Self(0);
            $($(#[$flag_meta])* pub const $flag: Self = Self($bit);)+
            const KNOWN: u16 = 0 $(| $bit)+;

            /// Flags from storage or the wire; unknown bits are kept so they can be refused.
            pub fn from_bits(bits: u16) -> Self {
                Self(bits)
            }

            pub fn bits(self) -> u16 {
                self.0
            }

            pub fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0 && other.0 != 0
            }

            pub fn has_unknown_bits(self) -> bool {
                self.0 & !Self::KNOWN != 0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
        }
    };
}

flags!(
    /// How an account constrains its balances.
    AccountFlags {
        /// This account and the next event form a chain that succeeds or fails whole.
        LINKED = 1,
        /// Debits may not exceed credits: the account can never go negative (wallets).
        DEBITS_MUST_NOT_EXCEED_CREDITS = 2,
        /// Credits may not exceed debits (accounts that hold what others owe).
        CREDITS_MUST_NOT_EXCEED_DEBITS = 4,
    }
);

flags!(
    /// What kind of transfer an event is.
    TransferFlags {
        /// This transfer and the next event form a chain that succeeds or fails whole.
        LINKED = 1,
        /// Reserve the amount (phase one); a later transfer posts or voids it.
        PENDING = 2,
        /// Post a pending transfer, in full or in part.
        POST_PENDING = 4,
        /// Void a pending transfer, releasing the reservation.
        VOID_PENDING = 8,
    }
);

/// A request to open an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAccount {
    pub id: AccountId,
    /// The books the account belongs to: the ISO 4217 numeric code of its currency.
    pub ledger: u32,
    /// What the account is for (wallet, payable, settlement…), chosen by the domain.
    pub code: u16,
    pub flags: AccountFlags,
}

/// An account as stored, with its balances split into pending and posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
    pub debits_pending: u64,
    pub debits_posted: u64,
    pub credits_pending: u64,
    pub credits_posted: u64,
    /// When the ledger created it, in ns since the epoch; unique across all events.
    pub timestamp: u64,
    /// The newest transfer that debited or credited this account: the head of its history.
    pub transfer_last: Option<TransferId>,
}

impl Account {
    /// Credits minus debits, posted only: what a wallet holds.
    pub fn credit_balance_posted(&self) -> i128 {
        i128::from(self.credits_posted) - i128::from(self.debits_posted)
    }

    /// What a wallet can still spend: posted credits less posted and pending debits.
    pub fn credit_balance_available(&self) -> i128 {
        i128::from(self.credits_posted)
            - i128::from(self.debits_posted)
            - i128::from(self.debits_pending)
    }
}

/// A request to move money, or to post or void a pending transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferRequest {
    pub id: TransferId,
    /// `None` only on a post or void, which then takes the pending transfer's.
    pub debit_account_id: Option<AccountId>,
    pub credit_account_id: Option<AccountId>,
    /// Minor units. A void may give 0 (the whole pending amount).
    pub amount: u64,
    /// The pending transfer that a post or void resolves.
    pub pending_id: Option<TransferId>,
    /// 0 only on a post or void, which then takes the pending transfer's.
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    /// For a pending transfer: seconds until it expires by itself; 0 = never.
    pub timeout_s: u32,
}

impl TransferRequest {
    /// A single-phase transfer: the common case.
    pub fn single_phase(
        id: TransferId,
        debit_account_id: AccountId,
        credit_account_id: AccountId,
        amount: u64,
        ledger: u32,
        code: u16,
    ) -> Self {
        Self {
            id,
            debit_account_id: Some(debit_account_id),
            credit_account_id: Some(credit_account_id),
            amount,
            pending_id: None,
            ledger,
            code,
            flags: TransferFlags::NONE,
            timeout_s: 0,
        }
    }
}

/// A transfer as stored: immutable once written. Posts and voids record the resolved
/// accounts, ledger and code of their pending transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: u64,
    pub pending_id: Option<TransferId>,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    pub timeout_s: u32,
    pub timestamp: u64,
}

impl Transfer {
    /// When a pending transfer expires by itself, if it has a timeout.
    pub fn expires_at_ns(&self) -> Option<u64> {
        if self.flags.contains(TransferFlags::PENDING) && self.timeout_s > 0 {
            self.timestamp
                .checked_add(u64::from(self.timeout_s).saturating_mul(1_000_000_000))
        } else {
            None
        }
    }
}

/// For each side of a transfer, the account's previous transfer: a per-account linked list,
/// newest first, that lets the SQLite store serve history without a secondary index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLinks {
    pub debit_previous: Option<TransferId>,
    pub credit_previous: Option<TransferId>,
}

/// Where a pending transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingState {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl PendingState {
    pub fn as_i16(self) -> i16 {
        match self {
            PendingState::Pending => 1,
            PendingState::Posted => 2,
            PendingState::Voided => 3,
            PendingState::Expired => 4,
        }
    }

    pub fn from_i16(raw: i16) -> Option<Self> {
        match raw {
            1 => Some(PendingState::Pending),
            2 => Some(PendingState::Posted),
            3 => Some(PendingState::Voided),
            4 => Some(PendingState::Expired),
            _ => None,
        }
    }
}

macro_rules! results {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The stable snake_case name, as TigerBeetle spells its results.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            pub fn is_ok(self) -> bool {
                self == Self::Ok
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|result| result.name() == name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.name())
            }
        }
    };
}

results!(
    /// The outcome of one account event.
    CreateAccountResult {
        Ok => "ok",
        LinkedEventFailed => "linked_event_failed",
        LinkedEventChainOpen => "linked_event_chain_open",
        ReservedFlag => "reserved_flag",
        FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
        LedgerMustNotBeZero => "ledger_must_not_be_zero",
        CodeMustNotBeZero => "code_must_not_be_zero",
        ExistsWithDifferentFlags => "exists_with_different_flags",
        ExistsWithDifferentLedger => "exists_with_different_ledger",
        ExistsWithDifferentCode => "exists_with_different_code",
        Exists => "exists",
    }
);

results!(
    /// The outcome of one transfer event. Every rejection has its own name.
    CreateTransferResult {
        Ok => "ok",
        LinkedEventFailed => "linked_event_failed",
        LinkedEventChainOpen => "linked_event_chain_open",
        ReservedFlag => "reserved_flag",
        FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
        DebitAccountIdMustNotBeZero => "debit_account_id_must_not_be_zero",
        CreditAccountIdMustNotBeZero => "credit_account_id_must_not_be_zero",
        AccountsMustBeDifferent => "accounts_must_be_different",
        PendingIdMustBeZero => "pending_id_must_be_zero",
        PendingIdMustNotBeZero => "pending_id_must_not_be_zero",
        PendingIdMustBeDifferent => "pending_id_must_be_different",
        TimeoutReservedForPendingTransfer => "timeout_reserved_for_pending_transfer",
        LedgerMustNotBeZero => "ledger_must_not_be_zero",
        CodeMustNotBeZero => "code_must_not_be_zero",
        AmountMustNotBeZero => "amount_must_not_be_zero",
        AmountExceedsMax => "amount_exceeds_max",
        ExistsWithDifferentFlags => "exists_with_different_flags",
        ExistsWithDifferentDebitAccountId => "exists_with_different_debit_account_id",
        ExistsWithDifferentCreditAccountId => "exists_with_different_credit_account_id",
        ExistsWithDifferentAmount => "exists_with_different_amount",
        ExistsWithDifferentPendingId => "exists_with_different_pending_id",
        ExistsWithDifferentTimeout => "exists_with_different_timeout",
        ExistsWithDifferentLedger => "exists_with_different_ledger",
        ExistsWithDifferentCode => "exists_with_different_code",
        Exists => "exists",
        DebitAccountNotFound => "debit_account_not_found",
        CreditAccountNotFound => "credit_account_not_found",
        AccountsMustHaveTheSameLedger => "accounts_must_have_the_same_ledger",
        TransferMustHaveTheSameLedgerAsAccounts => "transfer_must_have_the_same_ledger_as_accounts",
        PendingTransferNotFound => "pending_transfer_not_found",
        PendingTransferNotPending => "pending_transfer_not_pending",
        PendingTransferHasDifferentDebitAccountId => "pending_transfer_has_different_debit_account_id",
        PendingTransferHasDifferentCreditAccountId => "pending_transfer_has_different_credit_account_id",
        PendingTransferHasDifferentLedger => "pending_transfer_has_different_ledger",
        PendingTransferHasDifferentCode => "pending_transfer_has_different_code",
        ExceedsPendingTransferAmount => "exceeds_pending_transfer_amount",
        PendingTransferHasDifferentAmount => "pending_transfer_has_different_amount",
        PendingTransferAlreadyPosted => "pending_transfer_already_posted",
        PendingTransferAlreadyVoided => "pending_transfer_already_voided",
        PendingTransferExpired => "pending_transfer_expired",
        OverflowsDebitsPending => "overflows_debits_pending",
        OverflowsCreditsPending => "overflows_credits_pending",
        OverflowsDebitsPosted => "overflows_debits_posted",
        OverflowsCreditsPosted => "overflows_credits_posted",
        OverflowsDebits => "overflows_debits",
        OverflowsCredits => "overflows_credits",
        OverflowsTimeout => "overflows_timeout",
        ExceedsCredits => "exceeds_credits",
        ExceedsDebits => "exceeds_debits",
        /// A transfer with this id failed before for a reason that could pass later
        /// (see [`CreateTransferResult::is_transient`]): the id can never post.
        IdAlreadyFailed => "id_already_failed",
    }
);

impl CreateTransferResult {
    /// A failure that depends on the ledger's state at the moment, not on the event alone: the
    /// same event could pass later (after a top-up, once an account exists…). The ledger
    /// records the id of such a failure, and the id answers `id_already_failed` for ever after
    /// (TigerBeetle's semantics), so a replay can never post what its first attempt was refused.
    pub fn is_transient(self) -> bool {
        use CreateTransferResult as R;
        matches!(
            self,
            R::DebitAccountNotFound
                | R::CreditAccountNotFound
                | R::PendingTransferNotFound
                | R::ExceedsCredits
                | R::ExceedsDebits
                | R::OverflowsDebitsPending
                | R::OverflowsCreditsPending
                | R::OverflowsDebitsPosted
                | R::OverflowsCreditsPosted
                | R::OverflowsDebits
                | R::OverflowsCredits
                | R::OverflowsTimeout
        )
    }
}

impl kinko_core::ErrorCode for CreateTransferResult {
    fn code(&self) -> &'static str {
        use CreateTransferResult as R;
        match self {
            R::Ok => "LEDGER_OK",
            R::ExceedsCredits => "LEDGER_INSUFFICIENT_FUNDS",
            R::ExceedsDebits => "LEDGER_EXCEEDS_DEBITS",
            R::IdAlreadyFailed => "LEDGER_ID_ALREADY_FAILED",
            R::DebitAccountNotFound | R::CreditAccountNotFound => "LEDGER_ACCOUNT_NOT_FOUND",
            R::AccountsMustHaveTheSameLedger | R::TransferMustHaveTheSameLedgerAsAccounts => {
                "LEDGER_CURRENCY_MISMATCH"
            }
            R::Exists => "LEDGER_TRANSFER_EXISTS",
            R::ExistsWithDifferentFlags
            | R::ExistsWithDifferentDebitAccountId
            | R::ExistsWithDifferentCreditAccountId
            | R::ExistsWithDifferentAmount
            | R::ExistsWithDifferentPendingId
            | R::ExistsWithDifferentTimeout
            | R::ExistsWithDifferentLedger
            | R::ExistsWithDifferentCode => "LEDGER_IDEMPOTENCY_CONFLICT",
            R::OverflowsDebitsPending
            | R::OverflowsCreditsPending
            | R::OverflowsDebitsPosted
            | R::OverflowsCreditsPosted
            | R::OverflowsDebits
            | R::OverflowsCredits
            | R::OverflowsTimeout
            | R::AmountExceedsMax => "LEDGER_OVERFLOW",
            _ => "LEDGER_INVALID_TRANSFER",
        }
    }

    fn kind(&self) -> kinko_core::ErrorKind {
        use CreateTransferResult as R;
        match self {
            R::Ok | R::Exists => kinko_core::ErrorKind::InvalidInput,
            R::DebitAccountNotFound | R::CreditAccountNotFound | R::PendingTransferNotFound => {
                kinko_core::ErrorKind::NotFound
            }
            R::ExceedsCredits
            | R::ExceedsDebits
            | R::IdAlreadyFailed
            | R::PendingTransferAlreadyPosted
            | R::PendingTransferAlreadyVoided
            | R::PendingTransferExpired
            | R::ExistsWithDifferentFlags
            | R::ExistsWithDifferentDebitAccountId
            | R::ExistsWithDifferentCreditAccountId
            | R::ExistsWithDifferentAmount
            | R::ExistsWithDifferentPendingId
            | R::ExistsWithDifferentTimeout
            | R::ExistsWithDifferentLedger
            | R::ExistsWithDifferentCode => kinko_core::ErrorKind::Conflict,
            _ => kinko_core::ErrorKind::InvalidInput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for result in CreateTransferResult::ALL {
            assert!(seen.insert(result.name()), "duplicate {}", result.name());
            assert_eq!(
                CreateTransferResult::from_name(result.name()),
                Some(*result)
            );
        }
        assert_eq!(CreateTransferResult::from_name("nope"), None);
    }

    #[test]
    fn flags_detect_unknown_bits() {
        assert!(!TransferFlags::from_bits(1 | 2).has_unknown_bits());
        assert!(TransferFlags::from_bits(16).has_unknown_bits());
        assert!(AccountFlags::from_bits(8).has_unknown_bits());
        assert!(TransferFlags::from_bits(3).contains(TransferFlags::PENDING));
        assert!(!TransferFlags::NONE.contains(TransferFlags::NONE));
    }
}
