//! Event builders for the risk tests: short names (`alice`, `acct-1`) become keys; every actor
//! is a KYC'd 90-day-old wallet on its own phone at 203.0.113.7 unless a test says otherwise.

#![allow(dead_code)]

use kinko_risk::{Actor, Engine, Event, EventKind, Key, LinkMethod, RuleSet, SLOTS_MAX_DEFAULT};

/// "Now" in every test: 2027-01-15 08:00 UTC.
pub const T0: u64 = 1_800_000_000;
pub const HOUR: u64 = 3_600;
pub const DAY: u64 = 86_400;

pub fn key(name: &str) -> Key {
    Key::from_text(name)
}

pub fn actor(user: &str) -> Actor {
    Actor {
        user: key(user),
        user_created_s: T0 - 90 * DAY,
        kyc_level: 1,
        device: Some(key(&format!("{user}-phone"))),
        ip: Some([203, 0, 113, 7].into()),
    }
}

pub fn event(user: &str, at_s: u64, kind: EventKind) -> Event {
    Event {
        at_s,
        actor: actor(user),
        kind,
    }
}

pub fn charge(user: &str, account: &str, link_age_s: u64, amount: i64, at_s: u64) -> Event {
    event(
        user,
        at_s,
        EventKind::Charge {
            bank: key("bank-a"),
            bank_account: key(account),
            link: key(&format!("{user}-{account}-link")),
            link_created_s: at_s - link_age_s,
            method: LinkMethod::Oauth,
            amount_minor: amount,
            balance_minor: 0,
        },
    )
}

pub fn p2p(from: &str, to: &str, amount: i64, balance: i64, at_s: u64) -> Event {
    event(
        from,
        at_s,
        EventKind::P2p {
            receiver: key(to),
            receiver_kyc_level: 1,
            amount_minor: amount,
            balance_minor: balance,
        },
    )
}

pub fn payment(user: &str, category: &str, amount: i64, balance: i64, at_s: u64) -> Event {
    event(
        user,
        at_s,
        EventKind::Payment {
            merchant: key(&format!("shop-{category}")),
            category: category.to_owned(),
            amount_minor: amount,
            balance_minor: balance,
        },
    )
}

pub fn withdrawal(user: &str, amount: i64, balance: i64, at_s: u64) -> Event {
    event(
        user,
        at_s,
        EventKind::Withdrawal {
            bank: key("bank-a"),
            bank_account: key(&format!("{user}-account")),
            link: key(&format!("{user}-link")),
            link_created_s: T0 - 60 * DAY,
            method: LinkMethod::Oauth,
            amount_minor: amount,
            balance_minor: balance,
        },
    )
}

/// A failed link attempt by the legacy method on `account` with PIN fingerprint `pin`.
pub fn legacy_fail(user: &str, account: &str, pin: &str, at_s: u64) -> Event {
    event(
        user,
        at_s,
        EventKind::LinkAttempt {
            bank: key("bank-a"),
            bank_account: key(account),
            method: LinkMethod::Legacy,
            success: false,
            pin: Some(key(pin)),
        },
    )
}

/// Moves the actor to its own network and device, so only the features a case means are shared.
pub fn elsewhere(mut event: Event, index: u8) -> Event {
    event.actor.ip = Some([198, 51, index, 9].into());
    event.actor.device = Some(key(&format!("device-{index}")));
    event
}

pub fn shipped_engine() -> Engine {
    match RuleSet::shipped() {
        Ok(rules) => Engine::new(rules, SLOTS_MAX_DEFAULT),
        Err(errors) => panic!("the shipped rules do not parse: {errors}"),
    }
}
