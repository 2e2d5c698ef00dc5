//! The ledger's rules: a batch of requests in, one named result per event and one
//! [`WriteSet`] out. Pure: all lookups were loaded beforehand into a [`BatchInput`], so the
//! same code judges events whichever store is underneath.
//!
//! Order of checks per transfer, after TigerBeetle: the event's own fields, then idempotency
//! (an existing id answers `exists…` before any balance is consulted), then accounts, then
//! balances and flags. Linked events form a chain that commits or fails whole.

use std::collections::{HashMap, HashSet};

use crate::store::WriteSet;
use crate::types::{
    AMOUNT_MAX, Account, AccountFlags, AccountId, CreateAccountResult, CreateTransferResult,
    NewAccount, PendingState, Transfer, TransferFlags, TransferId, TransferLinks, TransferRequest,
};

/// One caller's request: a list of events that are judged in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    CreateAccounts(Vec<NewAccount>),
    CreateTransfers(Vec<TransferRequest>),
}

impl Request {
    pub fn len(&self) -> usize {
        match self {
            Request::CreateAccounts(events) => events.len(),
            Request::CreateTransfers(events) => events.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer to one request: a result per event, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Accounts(Vec<CreateAccountResult>),
    Transfers(Vec<CreateTransferResult>),
}

/// What the writer loaded from storage before judging a batch.
#[derive(Debug, Default)]
pub struct BatchInput {
    /// Existing transfers with the ids the batch creates, and the pending transfers it resolves.
    pub transfers: Vec<Transfer>,
    pub pending_states: Vec<(TransferId, PendingState)>,
    /// Open pending transfers whose timeout has passed: expired before the batch runs.
    pub expired: Vec<Transfer>,
    /// Ids among the batch's that failed before for a transient reason.
    pub failed: Vec<TransferId>,
}

/// Every id a batch needs loaded before it can be judged.
#[derive(Debug, Default)]
pub struct BatchKeys {
    pub account_ids: Vec<AccountId>,
    pub transfer_ids: Vec<TransferId>,
    pub pending_ids: Vec<TransferId>,
}

/// Collects the ids a batch refers to, without duplicates.
pub fn batch_keys(requests: &[&Request]) -> BatchKeys {
    // Sorting and deduplicating is cheaper than hashing tens of thousands of ids.
    let mut account_ids = Vec::new();
    let mut transfer_ids = Vec::new();
    let mut pending_ids = Vec::new();
    for request in requests {
        match request {
            Request::CreateAccounts(events) => {
                account_ids.extend(events.iter().map(|event| event.id));
            }
            Request::CreateTransfers(events) => {
                for event in events {
                    transfer_ids.push(event.id);
                    account_ids.extend(event.debit_account_id);
                    account_ids.extend(event.credit_account_id);
                    pending_ids.extend(event.pending_id);
                }
            }
        }
    }
    account_ids.sort_unstable();
    account_ids.dedup();
    pending_ids.sort_unstable();
    pending_ids.dedup();
    BatchKeys {
        account_ids,
        transfer_ids,
        pending_ids,
    }
}

enum Undo {
    Account(Account),
    AccountCreated(AccountId),
    TransferCreated(TransferId),
    PendingState(TransferId, Option<PendingState>),
}

#[derive(Clone, Copy)]
struct WriteMarks {
    accounts_created: usize,
    transfers_created: usize,
    pending_inserted: usize,
    pending_resolved: usize,
    undo: usize,
}

/// The working state of one batch over the writer's account cache.
pub struct BatchRun<'cache> {
    accounts: &'cache mut HashMap<AccountId, Account>,
    transfers: HashMap<TransferId, Transfer>,
    pending_states: HashMap<TransferId, PendingState>,
    /// Ids that failed for a transient reason, before or in this batch: never to post.
    failed: HashSet<TransferId>,
    /// Accounts changed by the batch, with repeats; deduplicated at the end.
    touched: Vec<AccountId>,
    undo: Vec<Undo>,
    /// Undo is only needed inside a linked chain: a lone event changes nothing until all of
    /// its checks have passed.
    recording_undo: bool,
    writes: WriteSet,
    timestamp_next: u64,
}

impl<'cache> BatchRun<'cache> {
    /// `timestamp_start` must exceed every timestamp already committed.
    pub fn new(
        accounts: &'cache mut HashMap<AccountId, Account>,
        input: BatchInput,
        timestamp_start: u64,
    ) -> Self {
        let mut run = Self {
            accounts,
            transfers: input
                .transfers
                .into_iter()
                .map(|transfer| (transfer.id, transfer))
                .collect(),
            pending_states: input.pending_states.into_iter().collect(),
            failed: input.failed.into_iter().collect(),
            touched: Vec::new(),
            undo: Vec::new(),
            recording_undo: false,
            writes: WriteSet::default(),
            timestamp_next: timestamp_start,
        };
        for transfer in input.expired {
            run.expire(&transfer);
        }
        // Expiries are not part of any chain.
        run.undo.clear();
        run
    }

    /// Judges every request in order and returns the replies and what to write.
    pub fn execute(mut self, requests: &[&Request]) -> (Vec<Reply>, WriteSet) {
        let events: usize = requests.iter().map(|request| request.len()).sum();
        self.transfers.reserve(events);
        self.touched.reserve(events.saturating_mul(2));
        self.writes.transfers_created.reserve(events);
        self.writes.transfer_links.reserve(events);
        let replies = requests
            .iter()
            .map(|request| match request {
                Request::CreateAccounts(events) => Reply::Accounts(self.create_accounts(events)),
                Request::CreateTransfers(events) => Reply::Transfers(self.create_transfers(events)),
            })
            .collect();
        (replies, self.finish())
    }

    fn finish(mut self) -> WriteSet {
        let created: HashSet<AccountId> = self
            .writes
            .accounts_created
            .iter()
            .map(|account| account.id)
            .collect();
        for account in &mut self.writes.accounts_created {
            if let Some(current) = self.accounts.get(&account.id) {
                *account = *current;
            }
        }
        // A stable order keeps lock acquisition deterministic in the store.
        self.touched.sort_unstable();
        self.touched.dedup();
        let updated: Vec<Account> = self
            .touched
            .iter()
            .filter(|id| !created.contains(id))
            .filter_map(|id| self.accounts.get(id).copied())
            .collect();
        self.writes.accounts_updated = updated;
        self.writes.timestamp_last = self.timestamp_next.saturating_sub(1);
        self.writes
    }

    fn next_timestamp(&mut self) -> u64 {
        let timestamp = self.timestamp_next;
        self.timestamp_next = self.timestamp_next.saturating_add(1);
        timestamp
    }

    fn marks(&self) -> WriteMarks {
        WriteMarks {
            accounts_created: self.writes.accounts_created.len(),
            transfers_created: self.writes.transfers_created.len(),
            pending_inserted: self.writes.pending_inserted.len(),
            pending_resolved: self.writes.pending_resolved.len(),
            undo: self.undo.len(),
        }
    }

    /// Undoes everything a failed chain did since `marks`.
    fn roll_back(&mut self, marks: WriteMarks) {
        while self.undo.len() > marks.undo {
            match self.undo.pop() {
                Some(Undo::Account(before)) => {
                    self.accounts.insert(before.id, before);
                }
                Some(Undo::AccountCreated(id)) => {
                    self.accounts.remove(&id);
                }
                Some(Undo::TransferCreated(id)) => {
                    self.transfers.remove(&id);
                }
                Some(Undo::PendingState(id, Some(state))) => {
                    self.pending_states.insert(id, state);
                }
                Some(Undo::PendingState(id, None)) => {
                    self.pending_states.remove(&id);
                }
                None => break,
            }
        }
        self.writes
            .accounts_created
            .truncate(marks.accounts_created);
        self.writes
            .transfers_created
            .truncate(marks.transfers_created);
        self.writes.transfer_links.truncate(marks.transfers_created);
        self.writes
            .pending_inserted
            .truncate(marks.pending_inserted);
        self.writes
            .pending_resolved
            .truncate(marks.pending_resolved);
    }

    fn expire(&mut self, pending: &Transfer) {
        if self.pending_states.get(&pending.id) != Some(&PendingState::Pending) {
            return;
        }
        self.release_pending(pending);
        self.set_pending_state(pending.id, PendingState::Expired);
    }

    fn release_pending(&mut self, pending: &Transfer) {
        self.update_account(pending.debit_account_id, |account| {
            account.debits_pending = account.debits_pending.saturating_sub(pending.amount);
        });
        self.update_account(pending.credit_account_id, |account| {
            account.credits_pending = account.credits_pending.saturating_sub(pending.amount);
        });
    }

    fn set_pending_state(&mut self, id: TransferId, state: PendingState) {
        let before = self.pending_states.insert(id, state);
        self.remember(Undo::PendingState(id, before));
        self.writes.pending_resolved.push((id, state));
    }

    fn remember(&mut self, undo: Undo) {
        if self.recording_undo {
            self.undo.push(undo);
        }
    }

    fn update_account(&mut self, id: AccountId, change: impl FnOnce(&mut Account)) {
        if let Some(account) = self.accounts.get_mut(&id) {
            if self.recording_undo {
                self.undo.push(Undo::Account(*account));
            }
            change(account);
            self.touched.push(id);
        }
    }

    /// Runs `events` in order, chaining linked ones. `judge` applies one event and returns
    /// its result; a failure inside a chain rolls the whole chain back.
    fn run_chains<E, R: Copy + PartialEq>(
        &mut self,
        events: &[E],
        is_linked: impl Fn(&E) -> bool,
        results: ChainResults<R>,
        mut judge: impl FnMut(&mut Self, &E) -> R,
    ) -> Vec<R> {
        let mut replies = vec![results.linked_event_failed; events.len()];
        let mut index = 0;
        while index < events.len() {
            let chain_end = (index..events.len())
                .find(|&position| !is_linked(&events[position]))
                .unwrap_or(events.len());
            if chain_end == events.len() {
                // The last event still says "linked": the chain never closes.
                replies[events.len() - 1] = results.linked_event_chain_open;
                break;
            }
            self.recording_undo = chain_end > index;
            let marks = self.marks();
            let mut failed = false;
            for position in index..=chain_end {
                let result = judge(self, &events[position]);
                replies[position] = result;
                if result != results.ok {
                    failed = true;
                    if position > index {
                        self.roll_back(marks);
                        for earlier in &mut replies[index..position] {
                            *earlier = results.linked_event_failed;
                        }
                    }
                    break;
                }
            }
            if failed {
                // Later events of a failed chain keep `linked_event_failed`.
                debug_assert!(self.undo.len() >= marks.undo);
            }
            index = chain_end + 1;
        }
        // Chains are judged; nothing left needs undoing.
        self.undo.clear();
        replies
    }

    fn create_accounts(&mut self, events: &[NewAccount]) -> Vec<CreateAccountResult> {
        self.run_chains(
            events,
            |event| event.flags.contains(AccountFlags::LINKED),
            ChainResults {
                ok: CreateAccountResult::Ok,
                linked_event_failed: CreateAccountResult::LinkedEventFailed,
                linked_event_chain_open: CreateAccountResult::LinkedEventChainOpen,
            },
            Self::create_account,
        )
    }

    fn create_account(&mut self, event: &NewAccount) -> CreateAccountResult {
        use CreateAccountResult as R;
        if event.flags.has_unknown_bits() {
            return R::ReservedFlag;
        }
        if event
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && event
                .flags
                .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            return R::FlagsAreMutuallyExclusive;
        }
        if event.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if event.code == 0 {
            return R::CodeMustNotBeZero;
        }
        if let Some(existing) = self.accounts.get(&event.id) {
            // The linked flag only shapes the request; it is not part of the account.
            let flags = AccountFlags::from_bits(event.flags.bits() & !AccountFlags::LINKED.bits());
            return if existing.flags != flags {
                R::ExistsWithDifferentFlags
            } else if existing.ledger != event.ledger {
                R::ExistsWithDifferentLedger
            } else if existing.code != event.code {
                R::ExistsWithDifferentCode
            } else {
                R::Exists
            };
        }
        let account = Account {
            id: event.id,
            ledger: event.ledger,
            code: event.code,
            flags: AccountFlags::from_bits(event.flags.bits() & !AccountFlags::LINKED.bits()),
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            timestamp: self.next_timestamp(),
            transfer_last: None,
        };
        self.accounts.insert(account.id, account);
        self.remember(Undo::AccountCreated(account.id));
        self.writes.accounts_created.push(account);
        R::Ok
    }

    fn create_transfers(&mut self, events: &[TransferRequest]) -> Vec<CreateTransferResult> {
        self.run_chains(
            events,
            |event| event.flags.contains(TransferFlags::LINKED),
            ChainResults {
                ok: CreateTransferResult::Ok,
                linked_event_failed: CreateTransferResult::LinkedEventFailed,
                linked_event_chain_open: CreateTransferResult::LinkedEventChainOpen,
            },
            Self::create_transfer_once,
        )
    }

    /// Judges one transfer and remembers its id if it failed for a transient reason, so the
    /// id never posts later (not even in this batch). The record survives a failed chain's
    /// roll-back: the event did fail.
    fn create_transfer_once(&mut self, event: &TransferRequest) -> CreateTransferResult {
        let result = self.create_transfer(event);
        if result.is_transient() && self.failed.insert(event.id) {
            self.writes.transfers_failed.push((event.id, result));
        }
        result
    }

    fn create_transfer(&mut self, event: &TransferRequest) -> CreateTransferResult {
        use CreateTransferResult as R;
        let flags = event.flags;
        if flags.has_unknown_bits() {
            return R::ReservedFlag;
        }
        let phase_flags = [
            TransferFlags::PENDING,
            TransferFlags::POST_PENDING,
            TransferFlags::VOID_PENDING,
        ];
        if phase_flags
            .iter()
            .filter(|flag| flags.contains(**flag))
            .count()
            > 1
        {
            return R::FlagsAreMutuallyExclusive;
        }
        if flags.contains(TransferFlags::POST_PENDING)
            || flags.contains(TransferFlags::VOID_PENDING)
        {
            return self.resolve_pending(event);
        }
        let Some(debit_account_id) = event.debit_account_id else {
            return R::DebitAccountIdMustNotBeZero;
        };
        let Some(credit_account_id) = event.credit_account_id else {
            return R::CreditAccountIdMustNotBeZero;
        };
        if debit_account_id == credit_account_id {
            return R::AccountsMustBeDifferent;
        }
        if event.pending_id.is_some() {
            return R::PendingIdMustBeZero;
        }
        let is_pending = flags.contains(TransferFlags::PENDING);
        if event.timeout_s != 0 && !is_pending {
            return R::TimeoutReservedForPendingTransfer;
        }
        if event.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if event.code == 0 {
            return R::CodeMustNotBeZero;
        }
        if event.amount == 0 {
            return R::AmountMustNotBeZero;
        }
        if event.amount > AMOUNT_MAX {
            return R::AmountExceedsMax;
        }
        if let Some(existing) = self.transfers.get(&event.id) {
            return exists_result(event, existing);
        }
        if self.failed.contains(&event.id) {
            return R::IdAlreadyFailed;
        }
        let Some(debit_account) = self.accounts.get(&debit_account_id).copied() else {
            return R::DebitAccountNotFound;
        };
        let Some(credit_account) = self.accounts.get(&credit_account_id).copied() else {
            return R::CreditAccountNotFound;
        };
        if debit_account.ledger != credit_account.ledger {
            return R::AccountsMustHaveTheSameLedger;
        }
        if event.ledger != debit_account.ledger {
            return R::TransferMustHaveTheSameLedgerAsAccounts;
        }
        let amount = event.amount;
        let debit_after = match apply_debit(debit_account, amount, is_pending) {
            Ok(account) => account,
            Err(result) => return result,
        };
        let credit_after = match apply_credit(credit_account, amount, is_pending) {
            Ok(account) => account,
            Err(result) => return result,
        };
        let timestamp = self.timestamp_next;
        let transfer = Transfer {
            id: event.id,
            debit_account_id,
            credit_account_id,
            amount,
            pending_id: None,
            ledger: event.ledger,
            code: event.code,
            flags,
            timeout_s: event.timeout_s,
            timestamp,
        };
        let expires_at_ns = if is_pending && event.timeout_s > 0 {
            match transfer.expires_at_ns() {
                Some(expires_at_ns) if expires_at_ns <= i64::MAX as u64 => Some(expires_at_ns),
                _ => return R::OverflowsTimeout,
            }
        } else {
            None
        };
        self.next_timestamp();
        self.record_transfer(transfer, debit_after, credit_after);
        if is_pending {
            let before = self
                .pending_states
                .insert(transfer.id, PendingState::Pending);
            self.remember(Undo::PendingState(transfer.id, before));
            self.writes
                .pending_inserted
                .push((transfer.id, expires_at_ns));
        }
        R::Ok
    }

    /// Stores the transfer with both accounts' new balances, and makes it the head of both
    /// accounts' histories.
    fn record_transfer(
        &mut self,
        transfer: Transfer,
        mut debit_after: Account,
        mut credit_after: Account,
    ) {
        let links = TransferLinks {
            debit_previous: debit_after.transfer_last.replace(transfer.id),
            credit_previous: credit_after.transfer_last.replace(transfer.id),
        };
        self.update_account(transfer.debit_account_id, |account| *account = debit_after);
        self.update_account(transfer.credit_account_id, |account| {
            *account = credit_after
        });
        self.transfers.insert(transfer.id, transfer);
        self.remember(Undo::TransferCreated(transfer.id));
        self.writes.transfers_created.push(transfer);
        self.writes.transfer_links.push(links);
    }

    /// Posts or voids a pending transfer.
    fn resolve_pending(&mut self, event: &TransferRequest) -> CreateTransferResult {
        use CreateTransferResult as R;
        let is_post = event.flags.contains(TransferFlags::POST_PENDING);
        let Some(pending_id) = event.pending_id else {
            return R::PendingIdMustNotBeZero;
        };
        if pending_id == event.id {
            return R::PendingIdMustBeDifferent;
        }
        if event.timeout_s != 0 {
            return R::TimeoutReservedForPendingTransfer;
        }
        if is_post && event.amount == 0 {
            return R::AmountMustNotBeZero;
        }
        if event.amount > AMOUNT_MAX {
            return R::AmountExceedsMax;
        }
        if let Some(existing) = self.transfers.get(&event.id) {
            return exists_result(event, existing);
        }
        if self.failed.contains(&event.id) {
            return R::IdAlreadyFailed;
        }
        let Some(pending) = self.transfers.get(&pending_id).copied() else {
            return R::PendingTransferNotFound;
        };
        if !pending.flags.contains(TransferFlags::PENDING) {
            return R::PendingTransferNotPending;
        }
        if event
            .debit_account_id
            .is_some_and(|id| id != pending.debit_account_id)
        {
            return R::PendingTransferHasDifferentDebitAccountId;
        }
        if event
            .credit_account_id
            .is_some_and(|id| id != pending.credit_account_id)
        {
            return R::PendingTransferHasDifferentCreditAccountId;
        }
        if event.ledger != 0 && event.ledger != pending.ledger {
            return R::PendingTransferHasDifferentLedger;
        }
        if event.code != 0 && event.code != pending.code {
            return R::PendingTransferHasDifferentCode;
        }
        if is_post && event.amount > pending.amount {
            return R::ExceedsPendingTransferAmount;
        }
        if !is_post && event.amount != 0 && event.amount != pending.amount {
            return R::PendingTransferHasDifferentAmount;
        }
        match self.pending_states.get(&pending_id) {
            Some(PendingState::Pending) => {}
            Some(PendingState::Posted) => return R::PendingTransferAlreadyPosted,
            Some(PendingState::Voided) => return R::PendingTransferAlreadyVoided,
            Some(PendingState::Expired) => return R::PendingTransferExpired,
            // A pending transfer without its state row would be a broken store.
            None => return R::PendingTransferNotFound,
        }
        let timestamp = self.timestamp_next;
        if pending
            .expires_at_ns()
            .is_some_and(|expires_at_ns| expires_at_ns <= timestamp)
        {
            return R::PendingTransferExpired;
        }
        let (Some(debit_account), Some(credit_account)) = (
            self.accounts.get(&pending.debit_account_id).copied(),
            self.accounts.get(&pending.credit_account_id).copied(),
        ) else {
            return R::PendingTransferNotFound;
        };
        let amount = if is_post {
            event.amount
        } else {
            pending.amount
        };
        let mut debit_after = debit_account;
        let mut credit_after = credit_account;
        debit_after.debits_pending = debit_after.debits_pending.saturating_sub(pending.amount);
        credit_after.credits_pending = credit_after.credits_pending.saturating_sub(pending.amount);
        if is_post {
            debit_after = match apply_debit(debit_after, amount, false) {
                Ok(account) => account,
                Err(result) => return result,
            };
            credit_after = match apply_credit(credit_after, amount, false) {
                Ok(account) => account,
                Err(result) => return result,
            };
        }
        self.next_timestamp();
        self.record_transfer(
            Transfer {
                id: event.id,
                debit_account_id: pending.debit_account_id,
                credit_account_id: pending.credit_account_id,
                amount,
                pending_id: Some(pending_id),
                ledger: pending.ledger,
                code: pending.code,
                flags: event.flags,
                timeout_s: 0,
                timestamp,
            },
            debit_after,
            credit_after,
        );
        let state = if is_post {
            PendingState::Posted
        } else {
            PendingState::Voided
        };
        self.set_pending_state(pending_id, state);
        R::Ok
    }
}

#[derive(Clone, Copy)]
struct ChainResults<R> {
    ok: R,
    linked_event_failed: R,
    linked_event_chain_open: R,
}

/// Compares a repeated request with the transfer stored under its id, field by field.
fn exists_result(event: &TransferRequest, existing: &Transfer) -> CreateTransferResult {
    use CreateTransferResult as R;
    let resolves = event.flags.contains(TransferFlags::POST_PENDING)
        || event.flags.contains(TransferFlags::VOID_PENDING);
    let is_void = event.flags.contains(TransferFlags::VOID_PENDING);
    if event.flags != existing.flags {
        R::ExistsWithDifferentFlags
    } else if event
        .debit_account_id
        .is_some_and(|id| id != existing.debit_account_id)
        || (!resolves && event.debit_account_id.is_none())
    {
        R::ExistsWithDifferentDebitAccountId
    } else if event
        .credit_account_id
        .is_some_and(|id| id != existing.credit_account_id)
        || (!resolves && event.credit_account_id.is_none())
    {
        R::ExistsWithDifferentCreditAccountId
    } else if event.amount != existing.amount && !(is_void && event.amount == 0) {
        R::ExistsWithDifferentAmount
    } else if event.pending_id != existing.pending_id {
        R::ExistsWithDifferentPendingId
    } else if event.timeout_s != existing.timeout_s {
        R::ExistsWithDifferentTimeout
    } else if event.ledger != existing.ledger && !(resolves && event.ledger == 0) {
        R::ExistsWithDifferentLedger
    } else if event.code != existing.code && !(resolves && event.code == 0) {
        R::ExistsWithDifferentCode
    } else {
        R::Exists
    }
}

fn apply_debit(
    mut account: Account,
    amount: u64,
    is_pending: bool,
) -> Result<Account, CreateTransferResult> {
    use CreateTransferResult as R;
    if is_pending {
        account.debits_pending =
            checked_balance(account.debits_pending, amount).ok_or(R::OverflowsDebitsPending)?;
    } else {
        account.debits_posted =
            checked_balance(account.debits_posted, amount).ok_or(R::OverflowsDebitsPosted)?;
    }
    checked_balance(account.debits_pending, account.debits_posted).ok_or(R::OverflowsDebits)?;
    if account
        .flags
        .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && u128::from(account.debits_pending) + u128::from(account.debits_posted)
            > u128::from(account.credits_posted)
    {
        return Err(R::ExceedsCredits);
    }
    Ok(account)
}

fn apply_credit(
    mut account: Account,
    amount: u64,
    is_pending: bool,
) -> Result<Account, CreateTransferResult> {
    use CreateTransferResult as R;
    if is_pending {
        account.credits_pending =
            checked_balance(account.credits_pending, amount).ok_or(R::OverflowsCreditsPending)?;
    } else {
        account.credits_posted =
            checked_balance(account.credits_posted, amount).ok_or(R::OverflowsCreditsPosted)?;
    }
    checked_balance(account.credits_pending, account.credits_posted).ok_or(R::OverflowsCredits)?;
    if account
        .flags
        .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        && u128::from(account.credits_pending) + u128::from(account.credits_posted)
            > u128::from(account.debits_posted)
    {
        return Err(R::ExceedsDebits);
    }
    Ok(account)
}

/// Adds within the ledger's bound (`AMOUNT_MAX`), so every balance fits both stores.
fn checked_balance(balance: u64, amount: u64) -> Option<u64> {
    balance.checked_add(amount).filter(|sum| *sum <= AMOUNT_MAX)
}
