//! The chart of accounts (DESIGN §4): which ledger account holds what. Ids are derived, not
//! stored: a wallet's account id is its user id; a bank's settlement account id is a hash of
//! its bank code in a namespace of its own; platform accounts have fixed ids. Creating an
//! account is idempotent in the ledger, so each is made when first needed.

use kinko_ledger::{
    AccountFlags, AccountId, CreateAccountResult, CreateTransferResult, LEDGER_JPY, Ledger,
    LedgerError, NewAccount, TransferId, TransferRequest,
};
use sha2::{Digest, Sha256};

/// Ledger account codes: what an account is for.
pub mod code {
    /// What a partner bank's customers moved in and out through Kinko: debited by charges,
    /// credited by withdrawals.
    pub const SETTLEMENT: u16 = 10;
    /// A user's wallet: never negative.
    pub const WALLET: u16 = 20;
    /// What Kinko owes a merchant.
    pub const PAYABLE: u16 = 30;
    /// Kinko's own money paid out to make users whole: debited by credits, may go negative
    /// (it is an expense).
    pub const COMPENSATION: u16 = 40;
    /// What a case recovered: credited by the holds returned from the wallets that received
    /// disputed money, debited by the refund to the victim. One per case; never negative.
    pub const HOLDS: u16 = 50;
}

/// Transfer codes: why money moved.
pub mod transfer {
    pub const CHARGE: u16 = 1;
    pub const PAYMENT: u16 = 2;
    pub const WITHDRAWAL: u16 = 3;
    pub const TRANSFER: u16 = 4;
    pub const REFUND: u16 = 5;
    pub const CREDIT: u16 = 6;
    /// A wallet's disputed money held for a case (pending), returned (posted) or released.
    pub const HOLD: u16 = 7;
    /// A refund to a victim's bank account, from a case's recovered funds or compensation.
    pub const VICTIM_REFUND: u16 = 8;
}

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("the id is not a valid account id")]
    Id,
    #[error("the ledger refused to open an account: {0}")]
    Refused(CreateAccountResult),
    #[error("the ledger refused a transfer: {0}")]
    TransferRefused(CreateTransferResult),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A user's wallet account.
pub fn wallet(user_id: u128) -> Result<AccountId, AccountsError> {
    AccountId::from_u128(user_id).map_err(|_| AccountsError::Id)
}

/// A partner bank's settlement account.
pub fn settlement(bank_code: &str) -> Result<AccountId, AccountsError> {
    derived(&format!("kinko.ledger.settlement:{bank_code}"))
}

/// An account id derived from a name in a namespace of Kinko's own.
fn derived(name: &str) -> Result<AccountId, AccountsError> {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    AccountId::from_u128(u128::from_be_bytes(bytes)).map_err(|_| AccountsError::Id)
}

/// Kinko's compensation account (one per ledger).
pub fn compensation() -> Result<AccountId, AccountsError> {
    derived("kinko.ledger.compensation")
}

/// A case's holds account: what the case recovered from the wallets that received its money.
pub fn case_holds(case_id: u128) -> Result<AccountId, AccountsError> {
    derived(&format!("kinko.ledger.holds:{case_id:032x}"))
}

/// A merchant's payable: what Kinko owes it.
pub fn payable(merchant_id: u128) -> Result<AccountId, AccountsError> {
    derived(&format!("kinko.ledger.payable:{merchant_id:032x}"))
}

/// How a single-phase movement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    Posted,
    /// The debited account does not hold the amount (or was never opened: nothing in it).
    InsufficientFunds,
}

/// Moves `amount_yen` from `debit` to `credit` in one single-phase transfer whose id is
/// `id`: the same id again is the same transfer, so a retry after a crash moves money once.
pub fn move_once(
    ledger: &Ledger,
    id: u128,
    debit: AccountId,
    credit: AccountId,
    amount_yen: i64,
    code: u16,
) -> Result<Moved, AccountsError> {
    let amount = u64::try_from(amount_yen).map_err(|_| AccountsError::Id)?;
    let request = TransferRequest::single_phase(
        TransferId::from_u128(id).map_err(|_| AccountsError::Id)?,
        debit,
        credit,
        amount,
        LEDGER_JPY,
        code,
    );
    match ledger.create_transfers_blocking(vec![request])?.first() {
        Some(CreateTransferResult::Ok | CreateTransferResult::Exists) => Ok(Moved::Posted),
        // `id_already_failed`: this id was refused before for one of these (the only transient
        // refusals a move between open accounts meets), and it never posts afterwards.
        Some(
            CreateTransferResult::ExceedsCredits
            | CreateTransferResult::DebitAccountNotFound
            | CreateTransferResult::IdAlreadyFailed,
        ) => Ok(Moved::InsufficientFunds),
        Some(other) => Err(AccountsError::TransferRefused(*other)),
        None => Err(AccountsError::Id),
    }
}

/// Opens the accounts if they are not open yet (the ledger answers `exists` otherwise).
pub fn ensure(ledger: &Ledger, accounts: &[(AccountId, u16)]) -> Result<(), AccountsError> {
    let requests = accounts
        .iter()
        .map(|(id, code)| NewAccount {
            id: *id,
            ledger: LEDGER_JPY,
            code: *code,
            // Neither a wallet, nor what Kinko owes a merchant, nor what a case recovered can go
            // below zero.
            flags: if *code == code::WALLET || *code == code::PAYABLE || *code == code::HOLDS {
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
            } else {
                AccountFlags::NONE
            },
        })
        .collect();
    for result in ledger.create_accounts_blocking(requests)? {
        if !matches!(
            result,
            CreateAccountResult::Ok | CreateAccountResult::Exists
        ) {
            return Err(AccountsError::Refused(result));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settlement_accounts_differ_by_bank_and_are_stable() {
        let mizuho = settlement("0001").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            mizuho,
            settlement("0001").unwrap_or_else(|error| panic!("{error}"))
        );
        assert_ne!(
            mizuho,
            settlement("0009").unwrap_or_else(|error| panic!("{error}"))
        );
    }
}
