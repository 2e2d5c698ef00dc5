//! Each shipped rule (`rules/default.toml`), as a table: a history and an event that make it
//! fire and act, and an honest history and event that leave it silent. A last test checks that
//! every shipped rule has both, so a new rule cannot ship untested.

mod common;

use common::*;
use kinko_risk::{Effect, Event, EventKind, LinkMethod, Outcome, RuleSet};

struct Case {
    rule: &'static str,
    fires: bool,
    history: Vec<Event>,
    event: Event,
}

fn fires(rule: &'static str, history: Vec<Event>, event: Event) -> Case {
    Case {
        rule,
        fires: true,
        history,
        event,
    }
}

fn honest(rule: &'static str, history: Vec<Event>, event: Event) -> Case {
    Case {
        rule,
        fires: false,
        history,
        event,
    }
}

fn with_kyc(mut event: Event, level: u8) -> Event {
    event.actor.kyc_level = level;
    event
}

fn receiver_kyc(mut event: Event, level: u8) -> Event {
    if let EventKind::P2p {
        receiver_kyc_level, ..
    } = &mut event.kind
    {
        *receiver_kyc_level = level;
    }
    event
}

fn young_wallet(mut event: Event) -> Event {
    event.actor.user_created_s = event.at_s - DAY;
    event
}

fn moment(user: &str, kind: EventKind, at_s: u64) -> Event {
    event(user, at_s, kind)
}

fn new_device_sign_in(user: &str, at_s: u64) -> Event {
    event(
        user,
        at_s,
        EventKind::SignIn {
            success: true,
            new_device: true,
        },
    )
}

fn failed_sign_in(user: &str, at_s: u64) -> Event {
    event(
        user,
        at_s,
        EventKind::SignIn {
            success: false,
            new_device: false,
        },
    )
}

fn oauth_attempt(user: &str, account: &str, at_s: u64) -> Event {
    event(
        user,
        at_s,
        EventKind::LinkAttempt {
            bank: key("bank-a"),
            bank_account: key(account),
            method: LinkMethod::Oauth,
            success: true,
            pin: None,
        },
    )
}

/// `count` failed legacy attempts on distinct accounts, each from a user made by `user_of`,
/// with the PIN made by `pin_of`, 29 s apart up to now (inside a 10-minute window for 20).
fn legacy_failures(
    count: u8,
    user_of: impl Fn(u8) -> String,
    pin_of: impl Fn(u8) -> String,
    spread: bool,
) -> Vec<Event> {
    (0..count)
        .map(|index| {
            let event = legacy_fail(
                &user_of(index),
                &format!("victim-account-{index}"),
                &pin_of(index),
                T0 - 29 * u64::from(count - index),
            );
            if spread {
                elsewhere(event, index)
            } else {
                event
            }
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let young_link = 2 * DAY;
    let old_link = 60 * DAY;
    vec![
        // Money out: the hold period.
        fires(
            "held-money-cannot-leave",
            vec![charge("alice", "acct-1", young_link, 20_000, T0 - HOUR)],
            p2p("alice", "bob", 15_000, 20_000, T0),
        ),
        honest(
            "held-money-cannot-leave",
            vec![charge("alice", "acct-1", old_link, 20_000, T0 - HOUR)],
            p2p("alice", "bob", 15_000, 20_000, T0),
        ),
        fires(
            "held-money-cannot-leave",
            vec![p2p("bob", "alice", 9_000, 50_000, T0 - HOUR)],
            withdrawal("alice", 9_000, 9_000, T0),
        ),
        honest(
            "held-money-cannot-leave",
            vec![p2p("bob", "alice", 9_000, 50_000, T0 - 4 * DAY)],
            withdrawal("alice", 9_000, 9_000, T0),
        ),
        fires(
            "held-money-high-risk-merchant",
            vec![p2p("bob", "alice", 10_000, 50_000, T0 - HOUR)],
            payment("alice", "electronics", 8_000, 10_000, T0),
        ),
        honest(
            "held-money-high-risk-merchant",
            vec![p2p("bob", "alice", 10_000, 50_000, T0 - HOUR)],
            payment("alice", "grocery", 8_000, 10_000, T0),
        ),
        fires(
            "high-risk-merchant-new-wallet",
            vec![],
            young_wallet(payment("alice", "tobacco", 20_000, 100_000, T0)),
        ),
        honest(
            "high-risk-merchant-new-wallet",
            vec![],
            payment("alice", "tobacco", 20_000, 100_000, T0),
        ),
        // Charges.
        fires(
            "new-link-first-charge-wait",
            vec![],
            charge("alice", "acct-1", 2 * HOUR, 5_000, T0),
        ),
        honest(
            "new-link-first-charge-wait",
            vec![],
            charge("alice", "acct-1", 2 * DAY, 5_000, T0),
        ),
        // Relinking the same bank account to another wallet does not reset the cap.
        fires(
            "new-link-daily-cap",
            vec![charge(
                "mallory",
                "acct-1",
                young_link,
                20_000,
                T0 - 2 * HOUR,
            )],
            charge("mule", "acct-1", young_link, 15_000, T0),
        ),
        honest(
            "new-link-daily-cap",
            vec![charge("alice", "acct-1", old_link, 20_000, T0 - 2 * HOUR)],
            charge("alice", "acct-1", old_link, 15_000, T0),
        ),
        // Split under the ¥30,000 confirmation threshold: the window sum triggers it.
        fires(
            "charge-dynamic-linking-window",
            vec![
                charge("alice", "acct-1", old_link, 20_000, T0 - 600),
                charge("alice", "acct-1", old_link, 9_000, T0 - 300),
            ],
            charge("alice", "acct-1", old_link, 9_000, T0),
        ),
        honest(
            "charge-dynamic-linking-window",
            vec![charge("alice", "acct-1", old_link, 9_000, T0 - 2 * DAY)],
            charge("alice", "acct-1", old_link, 9_000, T0),
        ),
        fires(
            "small-charges-new-link",
            vec![
                charge("alice", "acct-1", young_link, 1_000, T0 - 1_800),
                charge("alice", "acct-1", young_link, 1_000, T0 - 1_200),
                charge("alice", "acct-1", young_link, 1_000, T0 - 600),
            ],
            charge("alice", "acct-1", young_link, 1_000, T0),
        ),
        honest(
            "small-charges-new-link",
            vec![
                charge("alice", "acct-1", old_link, 1_000, T0 - 1_800),
                charge("alice", "acct-1", old_link, 1_000, T0 - 1_200),
                charge("alice", "acct-1", old_link, 1_000, T0 - 600),
            ],
            charge("alice", "acct-1", old_link, 1_000, T0),
        ),
        fires(
            "bank-account-many-wallets",
            vec![
                charge("victim", "acct-1", old_link, 1_000, T0 - 3 * DAY),
                charge("mallory", "acct-1", old_link, 1_000, T0 - DAY),
            ],
            charge("mallory", "acct-1", old_link, 1_000, T0),
        ),
        honest(
            "bank-account-many-wallets",
            vec![charge("alice", "acct-1", old_link, 1_000, T0 - DAY)],
            charge("alice", "acct-1", old_link, 1_000, T0),
        ),
        // P2P.
        fires(
            "p2p-dynamic-linking-window",
            vec![p2p("alice", "bob", 25_000, 90_000, T0 - 600)],
            p2p("alice", "bob", 10_000, 65_000, T0),
        ),
        honest(
            "p2p-dynamic-linking-window",
            vec![p2p("alice", "bob", 5_000, 90_000, T0 - 600)],
            p2p("alice", "bob", 10_000, 85_000, T0),
        ),
        fires(
            "p2p-day-limit-sender",
            vec![
                p2p("alice", "bob", 45_000, 500_000, T0 - 3 * HOUR),
                p2p("alice", "carol", 45_000, 455_000, T0 - 2 * HOUR),
            ],
            p2p("alice", "dave", 20_000, 410_000, T0),
        ),
        honest(
            "p2p-day-limit-sender",
            vec![p2p("alice", "bob", 45_000, 500_000, T0 - 2 * DAY)],
            p2p("alice", "dave", 20_000, 455_000, T0),
        ),
        fires(
            "p2p-month-limit-sender",
            vec![
                p2p("alice", "bob", 95_000, 900_000, T0 - 20 * DAY),
                p2p("alice", "bob", 95_000, 805_000, T0 - 10 * DAY),
                p2p("alice", "bob", 95_000, 710_000, T0 - 5 * DAY),
            ],
            p2p("alice", "bob", 20_000, 615_000, T0),
        ),
        honest(
            "p2p-month-limit-sender",
            vec![p2p("alice", "bob", 95_000, 900_000, T0 - 20 * DAY)],
            p2p("alice", "bob", 20_000, 805_000, T0),
        ),
        fires(
            "p2p-day-limit-receiver",
            vec![p2p("carol", "bob", 95_000, 500_000, T0 - HOUR)],
            p2p("alice", "bob", 10_000, 500_000, T0),
        ),
        honest(
            "p2p-day-limit-receiver",
            vec![p2p("carol", "bob", 50_000, 500_000, T0 - HOUR)],
            p2p("alice", "bob", 10_000, 500_000, T0),
        ),
        fires(
            "p2p-month-limit-receiver",
            vec![
                p2p("carol", "bob", 80_000, 500_000, T0 - 20 * DAY),
                p2p("dave", "bob", 80_000, 500_000, T0 - 15 * DAY),
                p2p("erin", "bob", 80_000, 500_000, T0 - 10 * DAY),
                p2p("frank", "bob", 80_000, 500_000, T0 - 5 * DAY),
            ],
            p2p("alice", "bob", 10_000, 500_000, T0),
        ),
        honest(
            "p2p-month-limit-receiver",
            vec![p2p("carol", "bob", 80_000, 500_000, T0 - 20 * DAY)],
            p2p("alice", "bob", 10_000, 500_000, T0),
        ),
        fires(
            "p2p-new-recipient-confirm",
            vec![],
            p2p("alice", "bob", 1_000, 50_000, T0),
        ),
        honest(
            "p2p-new-recipient-confirm",
            vec![p2p("alice", "bob", 1_000, 51_000, T0 - 10 * DAY)],
            p2p("alice", "bob", 1_000, 50_000, T0),
        ),
        fires(
            "p2p-new-recipient-limit",
            vec![],
            p2p("alice", "bob", 20_000, 50_000, T0),
        ),
        honest(
            "p2p-new-recipient-limit",
            vec![],
            p2p("alice", "bob", 5_000, 50_000, T0),
        ),
        fires(
            "p2p-receive-needs-kyc",
            vec![p2p("carol", "bob", 45_000, 500_000, T0 - 5 * DAY)],
            receiver_kyc(p2p("alice", "bob", 10_000, 500_000, T0), 0),
        ),
        honest(
            "p2p-receive-needs-kyc",
            vec![p2p("carol", "bob", 45_000, 500_000, T0 - 5 * DAY)],
            receiver_kyc(p2p("alice", "bob", 10_000, 500_000, T0), 1),
        ),
        fires(
            "p2p-pass-on-needs-kyc",
            vec![p2p("bob", "alice", 1_000, 50_000, T0 - 5 * DAY)],
            with_kyc(p2p("alice", "carol", 500, 1_000, T0), 0),
        ),
        honest(
            "p2p-pass-on-needs-kyc",
            vec![p2p("bob", "alice", 1_000, 50_000, T0 - 5 * DAY)],
            with_kyc(p2p("alice", "carol", 500, 1_000, T0), 1),
        ),
        fires(
            "p2p-fan-in",
            ["s1", "s2", "s3", "s4", "s5"]
                .iter()
                .map(|sender| p2p(sender, "mule", 3_000, 50_000, T0 - HOUR))
                .collect(),
            p2p("s6", "mule", 3_000, 50_000, T0),
        ),
        honest(
            "p2p-fan-in",
            ["s1", "s2"]
                .iter()
                .map(|sender| p2p(sender, "bob", 3_000, 50_000, T0 - HOUR))
                .collect(),
            p2p("s3", "bob", 3_000, 50_000, T0),
        ),
        fires(
            "pass-on-within-the-hour",
            ["s1", "s2", "s3"]
                .iter()
                .map(|sender| p2p(sender, "mule", 3_000, 50_000, T0 - 600))
                .collect(),
            withdrawal("mule", 9_000, 9_000, T0),
        ),
        honest(
            "pass-on-within-the-hour",
            ["s1", "s2", "s3"]
                .iter()
                .map(|sender| p2p(sender, "bob", 3_000, 50_000, T0 - 3 * DAY))
                .collect(),
            withdrawal("bob", 9_000, 9_000, T0),
        ),
        // After account changes.
        fires(
            "money-out-after-contact-change",
            vec![moment("alice", EventKind::ContactChange, T0 - 2 * HOUR)],
            withdrawal("alice", 1_000, 50_000, T0),
        ),
        honest(
            "money-out-after-contact-change",
            vec![moment("alice", EventKind::ContactChange, T0 - 3 * DAY)],
            withdrawal("alice", 1_000, 50_000, T0),
        ),
        fires(
            "money-out-after-recovery",
            vec![moment("alice", EventKind::Recovery, T0 - 2 * HOUR)],
            payment("alice", "grocery", 1_000, 50_000, T0),
        ),
        honest(
            "money-out-after-recovery",
            vec![moment("alice", EventKind::Recovery, T0 - 3 * DAY)],
            payment("alice", "grocery", 1_000, 50_000, T0),
        ),
        fires(
            "money-out-after-new-device",
            vec![new_device_sign_in("alice", T0 - HOUR)],
            withdrawal("alice", 1_000, 50_000, T0),
        ),
        honest(
            "money-out-after-new-device",
            vec![new_device_sign_in("alice", T0 - 2 * DAY)],
            withdrawal("alice", 1_000, 50_000, T0),
        ),
        fires(
            "money-out-after-factor-change",
            vec![moment("alice", EventKind::FactorChange, T0 - HOUR)],
            p2p("alice", "bob", 1_000, 50_000, T0),
        ),
        honest(
            "money-out-after-factor-change",
            vec![moment("alice", EventKind::FactorChange, T0 - 2 * DAY)],
            p2p("alice", "bob", 1_000, 50_000, T0),
        ),
        // The legacy PIN method.
        fires(
            "legacy-failures-from-network",
            legacy_failures(10, |i| format!("m{i}"), |i| format!("pin-{i}"), false),
            legacy_fail("m10", "victim-account-x", "pin-x", T0),
        ),
        honest(
            "legacy-failures-from-network",
            legacy_failures(3, |i| format!("m{i}"), |i| format!("pin-{i}"), false),
            legacy_fail("m10", "victim-account-x", "pin-x", T0),
        ),
        fires(
            "legacy-failures-from-device",
            legacy_failures(10, |i| format!("m{i}"), |i| format!("pin-{i}"), false)
                .into_iter()
                .enumerate()
                .map(|(index, mut event)| {
                    event.actor.ip = Some([192, 0, 2, u8::try_from(index).unwrap_or(0)].into());
                    event.actor.device = Some(key("burner"));
                    event
                })
                .collect(),
            {
                let mut event = legacy_fail("m10", "victim-account-x", "pin-x", T0);
                event.actor.device = Some(key("burner"));
                event
            },
        ),
        honest(
            "legacy-failures-from-device",
            legacy_failures(10, |i| format!("m{i}"), |i| format!("pin-{i}"), true),
            legacy_fail("m10", "victim-account-x", "pin-x", T0),
        ),
        fires(
            "legacy-failures-by-wallet",
            vec![
                legacy_fail("mallory", "acct-1", "pin-1", T0 - DAY),
                legacy_fail("mallory", "acct-2", "pin-1", T0 - HOUR),
            ],
            legacy_fail("mallory", "acct-3", "pin-1", T0),
        ),
        honest(
            "legacy-failures-by-wallet",
            vec![
                legacy_fail("alice", "acct-1", "pin-1", T0 - DAY),
                legacy_fail("alice", "acct-1", "pin-2", T0 - HOUR),
            ],
            legacy_fail("alice", "acct-1", "pin-3", T0),
        ),
        // Reverse brute force: one PIN value on many accounts, from many sources.
        fires(
            "legacy-pin-spray",
            legacy_failures(5, |i| format!("m{i}"), |_| "pin-1234".into(), true),
            elsewhere(legacy_fail("m9", "victim-account-x", "pin-1234", T0), 99),
        ),
        honest(
            "legacy-pin-spray",
            legacy_failures(5, |i| format!("m{i}"), |i| format!("pin-{i}"), true),
            elsewhere(legacy_fail("m9", "victim-account-x", "pin-1234", T0), 99),
        ),
        fires(
            "legacy-bank-failure-spike",
            legacy_failures(20, |i| format!("m{i}"), |i| format!("pin-{i}"), true),
            elsewhere(legacy_fail("m99", "victim-account-x", "pin-x", T0), 99),
        ),
        honest(
            "legacy-bank-failure-spike",
            legacy_failures(5, |i| format!("m{i}"), |i| format!("pin-{i}"), true),
            elsewhere(legacy_fail("m99", "victim-account-x", "pin-x", T0), 99),
        ),
        honest(
            "legacy-bank-failure-spike",
            vec![],
            oauth_attempt("alice", "acct-1", T0),
        ),
        // Sign-in.
        fires(
            "credential-stuffing-network",
            (0..20)
                .map(|index| failed_sign_in(&format!("victim-{index}"), T0 - 60 * (20 - index)))
                .collect(),
            failed_sign_in("victim-20", T0),
        ),
        honest(
            "credential-stuffing-network",
            (0..3)
                .map(|index| failed_sign_in(&format!("victim-{index}"), T0 - 60 * (3 - index)))
                .collect(),
            failed_sign_in("victim-3", T0),
        ),
    ]
}

#[test]
fn each_shipped_rule_fires_on_its_pattern_and_spares_the_honest_case() {
    let mut failures = Vec::new();
    for (index, case) in cases().into_iter().enumerate() {
        let mut engine = shipped_engine();
        for event in &case.history {
            engine.observe(event);
        }
        let decision = engine.decide(&case.event);
        let firing = decision.fired(case.rule);
        let ok = match (case.fires, firing) {
            (true, Some(firing)) => {
                firing.effect == Effect::Acted && decision.outcome >= firing.outcome
            }
            (true, None) => false,
            (false, firing) => firing.is_none(),
        };
        if !ok {
            failures.push(format!(
                "case {index} ({}, fires: {}): {:?}",
                case.rule, case.fires, decision.firings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_shipped_rule_has_a_firing_and_an_honest_case() {
    let rules = RuleSet::shipped().unwrap_or_else(|errors| panic!("{errors}"));
    let cases = cases();
    for rule in &rules.rules {
        assert!(
            cases.iter().any(|case| case.rule == rule.id && case.fires),
            "{} has no case that fires it",
            rule.id
        );
        assert!(
            cases.iter().any(|case| case.rule == rule.id && !case.fires),
            "{} has no honest case",
            rule.id
        );
        assert!(!rule.shadow, "{} ships in shadow mode", rule.id);
    }
    for case in &cases {
        assert!(
            rules.rules.iter().any(|rule| rule.id == case.rule),
            "case for unknown rule {}",
            case.rule
        );
    }
}

#[test]
fn an_honest_regular_user_goes_through_every_flow_untouched() {
    // A month of an ordinary wallet: weekly charges, a few payments, transfers to two friends.
    let mut engine = shipped_engine();
    let mut denied_or_held = Vec::new();
    let mut balance = 0_i64;
    for day in 0..30_u64 {
        let at = T0 - (30 - day) * DAY;
        let mut events = vec![payment("alice", "grocery", 1_200, balance, at + HOUR)];
        if day % 7 == 0 {
            events.insert(0, charge("alice", "acct-1", 200 * DAY, 20_000, at));
        }
        if day % 10 == 5 {
            events.push(p2p("alice", "bob", 2_000, balance, at + 2 * HOUR));
        }
        for event in events {
            if let Some(balance_minor) = match &event.kind {
                EventKind::Payment { .. } | EventKind::P2p { .. } => event.kind.amount_minor(),
                _ => None,
            } {
                balance -= balance_minor;
            } else if let Some(amount) = event.kind.amount_minor() {
                balance += amount;
            }
            let decision = engine.decide(&event);
            if decision.outcome >= Outcome::Review {
                denied_or_held.push(format!("day {day}: {:?}", decision.firings));
            }
            engine.observe(&event);
        }
    }
    assert!(denied_or_held.is_empty(), "{}", denied_or_held.join("\n"));
}
