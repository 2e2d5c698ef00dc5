//! The engine's behaviour around the rules: the mule chain is stopped, decisions carry their
//! reasons and feature values, shadow mode records but never acts, the decline circuit breaker
//! caps a runaway rule, fail-open/closed per flow, bad rule files are refused with line and
//! reason, and a backtest over a hand-made log counts what it should.

mod common;

use common::*;
use kinko_risk::{
    Action, Breakers, Effect, Engine, EventKind, FailMode, Flow, Label, Language, LogLine, Outcome,
    RuleSet, backtest,
};

fn rules(text: &str) -> RuleSet {
    RuleSet::parse(text).unwrap_or_else(|errors| panic!("{errors}"))
}

const ONE_RULE: &str = r#"
version = "test-1"
[[rule]]
id = "big-p2p"
events = ["p2p"]
when = ["amount >= 50_000"]
outcome = "deny"
actions = ["open_case"]
MODE
breaker = { max = 2, per = "1h" }
reason_en = "Too big."
reason_ja = "大きすぎます。"
"#;

fn one_rule(mode: &str) -> RuleSet {
    rules(&ONE_RULE.replace("MODE", mode))
}

#[test]
fn the_mule_chain_is_stopped_before_any_money_leaves() {
    // Victim's account linked to the attacker's wallet 2 days ago, charged, passed by P2P to a
    // mule wallet, which tries to withdraw and to buy electronics.
    let mut engine = shipped_engine();
    let charge = charge("attacker", "victim-account", 2 * DAY, 29_000, T0 - 600);
    assert!(engine.decide(&charge).outcome < Outcome::Review);
    engine.observe(&charge);

    let pass_on = p2p("attacker", "mule", 29_000, 29_000, T0 - 300);
    let decision = engine.decide(&pass_on);
    assert_eq!(decision.outcome, Outcome::Deny);
    assert!(decision.fired("held-money-cannot-leave").is_some());

    // Even had the P2P gone through (say, a mule with its own balance), the mule's money out
    // is held.
    engine.observe(&pass_on);
    let cash_out = withdrawal("mule", 29_000, 29_000, T0);
    assert_eq!(engine.decide(&cash_out).outcome, Outcome::Deny);
    let spend = payment("mule", "electronics", 29_000, 29_000, T0);
    assert!(engine.decide(&spend).outcome >= Outcome::Review);
}

#[test]
fn a_decision_names_its_rules_feature_values_and_reasons() {
    let mut engine = shipped_engine();
    engine.observe(&p2p("alice", "bob", 60_000, 500_000, T0 - 2 * HOUR));
    engine.observe(&p2p("alice", "carol", 30_000, 440_000, T0 - HOUR));
    let decision = engine.decide(&p2p("alice", "dave", 20_000, 410_000, T0));
    assert_eq!(decision.outcome, Outcome::Deny);
    assert_eq!(decision.rules_version, "2026-12-06.1");
    let firing = decision
        .fired("p2p-day-limit-sender")
        .unwrap_or_else(|| panic!("{:?}", decision.firings));
    assert_eq!(
        firing.features,
        vec![
            ("user.p2p_out.sum_24h".to_owned(), Some(90_000)),
            ("amount".to_owned(), Some(20_000)),
        ]
    );
    let english = decision.user_reason(Language::English).unwrap_or_default();
    let japanese = decision.user_reason(Language::Japanese).unwrap_or_default();
    assert!(english.contains("¥100,000 a day"), "{english}");
    assert!(japanese.contains("1日10万円"), "{japanese}");
    // An allowed action says nothing to the user.
    let allowed = engine.decide(&payment("alice", "grocery", 500, 300_000, T0));
    assert_eq!(allowed.outcome, Outcome::Allow);
    assert_eq!(allowed.user_reason(Language::English), None);
}

#[test]
fn shadow_mode_records_but_never_acts() {
    let mut engine = Engine::new(one_rule("mode = \"shadow\""), 1_000);
    for minute in 0..5 {
        let decision = engine.decide(&p2p("alice", "bob", 60_000, 90_000, T0 + minute * 60));
        assert_eq!(decision.outcome, Outcome::Allow);
        assert!(decision.actions.is_empty());
        let firing = decision
            .fired("big-p2p")
            .unwrap_or_else(|| panic!("not recorded"));
        assert_eq!(firing.effect, Effect::Shadow);
        assert_eq!(decision.user_reason(Language::English), None);
    }
    // The same rule active acts.
    let mut engine = Engine::new(one_rule("mode = \"active\""), 1_000);
    let decision = engine.decide(&p2p("alice", "bob", 60_000, 90_000, T0));
    assert_eq!(decision.outcome, Outcome::Deny);
    assert_eq!(decision.actions, vec![Action::OpenCase]);
}

#[test]
fn the_circuit_breaker_caps_declines_per_interval_and_closes_again() {
    let mut engine = Engine::new(one_rule(""), 1_000);
    let start = T0 - T0 % HOUR;
    let effects: Vec<Effect> = (0..4)
        .map(|index| {
            let decision = engine.decide(&p2p("alice", "bob", 60_000, 90_000, start + index));
            decision
                .fired("big-p2p")
                .map_or(Effect::Shadow, |f| f.effect)
        })
        .collect();
    assert_eq!(
        effects,
        [
            Effect::Acted,
            Effect::Acted,
            Effect::BreakerOpen,
            Effect::BreakerOpen
        ]
    );
    let tripped = engine.decide(&p2p("alice", "bob", 60_000, 90_000, start + 10));
    assert_eq!(
        tripped.outcome,
        Outcome::Allow,
        "an open breaker does not act"
    );
    // The next interval acts again.
    let next = engine.decide(&p2p("alice", "bob", 60_000, 90_000, start + HOUR));
    assert_eq!(next.outcome, Outcome::Deny);
}

#[test]
fn breakers_kept_outside_count_across_engines_built_per_decision() {
    // A server builds an engine per decision from stored history; the breakers live on.
    let rule_set = one_rule("");
    let mut breakers = Breakers::new(&rule_set);
    let start = T0 - T0 % HOUR;
    let outcomes: Vec<Outcome> = (0..3)
        .map(|index| {
            let engine = Engine::new(rule_set.clone(), 1_000);
            let event = p2p("alice", "bob", 60_000, 90_000, start + index);
            engine.decide_with(&event, &mut breakers).outcome
        })
        .collect();
    assert_eq!(outcomes, [Outcome::Deny, Outcome::Deny, Outcome::Allow]);
    // A new rule set starts its breakers afresh.
    let renamed = rules(&ONE_RULE.replace("MODE", "").replace("test-1", "test-2"));
    let engine = Engine::new(renamed, 1_000);
    let event = p2p("alice", "bob", 60_000, 90_000, start + 5);
    assert_eq!(
        engine.decide_with(&event, &mut breakers).outcome,
        Outcome::Deny
    );
}

#[test]
fn an_undecidable_rule_follows_its_flows_fail_mode() {
    let text = r#"
version = "test-fail"
[fail]
withdrawal = "open"
[[rule]]
id = "busy-device"
events = ["p2p", "withdrawal"]
when = ["device.p2p_out.count_1h >= 100"]
outcome = "review"
breaker = { max = 100, per = "1h" }
reason_en = "Held."
reason_ja = "保留。"
"#;
    let rule_set = rules(text);
    assert_eq!(rule_set.fail_mode(Flow::P2p), FailMode::Closed);
    assert_eq!(rule_set.fail_mode(Flow::Withdrawal), FailMode::Open);
    let mut engine = Engine::new(rule_set, 1_000);
    // No device known: the engine cannot count it.
    let mut transfer = p2p("alice", "bob", 1_000, 9_000, T0);
    transfer.actor.device = None;
    let closed = engine.decide(&transfer);
    assert_eq!(closed.outcome, Outcome::Review);
    assert_eq!(
        closed.fired("busy-device").map(|f| f.effect),
        Some(Effect::UndecidedClosed)
    );
    let mut cash_out = withdrawal("alice", 1_000, 9_000, T0);
    cash_out.actor.device = None;
    let open = engine.decide(&cash_out);
    assert_eq!(open.outcome, Outcome::Allow);
    assert_eq!(
        open.fired("busy-device").map(|f| f.effect),
        Some(Effect::UndecidedOpen)
    );
}

#[test]
fn a_full_state_stops_recording_and_reads_unknown_not_zero() {
    let text = r#"
version = "test-full"
[[rule]]
id = "many-p2p"
events = ["p2p"]
when = ["user.p2p_out.count_24h >= 3"]
outcome = "deny"
breaker = { max = 100, per = "1h" }
reason_en = "Many."
reason_ja = "多い。"
"#;
    let mut engine = Engine::new(rules(text), 40);
    for index in 0..41 {
        engine.observe(&p2p(&format!("user-{index}"), "bob", 100, 1_000, T0 - 60));
    }
    assert!(engine.state().is_saturated());
    assert!(engine.state().slot_count() <= 40);
    // A user the full state never saw: unknown, and p2p fails closed.
    let decision = engine.decide(&p2p("stranger", "bob", 100, 1_000, T0));
    assert_eq!(decision.outcome, Outcome::Deny);
    assert_eq!(
        decision.fired("many-p2p").map(|f| f.effect),
        Some(Effect::UndecidedClosed)
    );
}

#[test]
fn bad_rule_files_are_refused_with_the_line_and_the_reason() {
    let good = include_str!("../../../rules/default.toml");
    let cases: Vec<(String, usize, &str)> = vec![
        (
            "version = \"x\"\n[[rule]]\nid = \"a\"\nevents = [\"p2p\"]\nwhen = [\"amount >> 5\"]\noutcome = \"deny\"\nbreaker = { max = 1, per = \"1h\" }\nreason_en = \"e\"\nreason_ja = \"j\"\n".into(),
            5,
            "has no comparison",
        ),
        (
            "version = \"x\"\n[[rule]]\nid = \"a\"\nevents = [\"p2p\"]\nwhen = [\"usr.p2p_out.sum_24h > 5\"]\noutcome = \"deny\"\nbreaker = { max = 1, per = \"1h\" }\nreason_en = \"e\"\nreason_ja = \"j\"\n".into(),
            5,
            "unknown subject `usr`",
        ),
        (
            "version = \"x\"\n[[rule]]\nid = \"a\"\nevents = [\"charge\"]\nwhen = [\"receiver.kyc_level < 1\"]\noutcome = \"deny\"\nbreaker = { max = 1, per = \"1h\" }\nreason_en = \"e\"\nreason_ja = \"j\"\n".into(),
            5,
            "`receiver.kyc_level` does not exist for charge",
        ),
        (
            "version = \"x\"\n[[rule]]\nid = \"a\"\nevents = [\"p2p\"]\nwhen = [\"amount > 5\"]\noutcome = \"block\"\nbreaker = { max = 1, per = \"1h\" }\nreason_en = \"e\"\nreason_ja = \"j\"\n".into(),
            6,
            "outcome `block` is not allow, challenge, review or deny",
        ),
        (
            "version = \"x\"\n[[rule]]\nid = \"a\"\nevents = [\"p2p\"]\nwhen = [\"amount > 5\"]\noutcome = \"deny\"\nbreaker = { max = 0, per = \"1h\" }\nreason_en = \"e\"\nreason_ja = \"j\"\n".into(),
            7,
            "breaker `max` must be a whole number ≥ 1",
        ),
        (
            "version = \"x\"\n[[rule]]\nid = \"a\"\nevents = [\"p2p\"]\nwhen = [\"amount > 5\"]\noutcome = \"deny\"\nbreaker = { max = 1, per = \"1h\" }\nreason_en = \"e\"\nreason_ja = \"j\"\nthreshold = 5\n".into(),
            10,
            "unknown key `threshold`",
        ),
        (
            "version = \"x\"\n[[rule]]\nid = \"a\"\nevents = [\"p2p\"]\nwhen = [\"amount > 5\"]\noutcome = \"deny\"\nbreaker = { max = 1, per = \"1h\" }\nreason_en = \"e\"\n".into(),
            2,
            "`reason_ja` is missing",
        ),
        (
            "version = \"x\"\n[[rule]]\nid = \"a\"\nevents = [\"p2p\"\n".into(),
            4,
            "",
        ),
        (
            good.replacen("outcome = \"deny\"", "outcome = \"dney\"", 1),
            good.lines()
                .position(|line| line == "outcome = \"deny\"")
                .map_or(0, |index| index + 1),
            "outcome `dney`",
        ),
        (
            good.replacen("id = \"p2p-fan-in\"", "id = \"held-money-cannot-leave\"", 1),
            good.lines()
                .position(|line| line == "id = \"p2p-fan-in\"")
                .map_or(0, |index| index),
            "used twice",
        ),
    ];
    for (text, line, says) in cases {
        match RuleSet::parse(&text) {
            Ok(_) => panic!("accepted a bad file (expected line {line}: {says})"),
            Err(errors) => {
                let first = errors
                    .0
                    .first()
                    .cloned()
                    .unwrap_or_else(|| panic!("no error"));
                assert_eq!(first.line, line, "{errors}");
                assert!(first.message.contains(says), "{errors}");
            }
        }
    }
}

#[test]
fn a_refused_file_leaves_the_running_rules_in_place() {
    let mut engine = Engine::new(one_rule(""), 1_000);
    let replacement = RuleSet::parse("version = \"broken\"\n[[rule]]\nid = \"x\"\n");
    assert!(replacement.is_err());
    if let Ok(rules) = replacement {
        engine.replace_rules(rules);
    }
    assert_eq!(engine.rules().version, "test-1");
    let decision = engine.decide(&p2p("alice", "bob", 60_000, 90_000, T0));
    assert_eq!(decision.outcome, Outcome::Deny);
}

#[test]
fn backtest_counts_hits_changes_and_precision_on_a_hand_made_log() {
    // Four P2P events: two big ones labelled fraud, one big honest one (recorded as already
    // denied at the time), one small honest one. Before `since`, a big one only warms up.
    let log = r#"
{"at_s": 1799990000, "user": "x", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "y", "receiver_kyc_level": 1, "amount_minor": 70000, "balance_minor": 90000, "label": "fraud"}
{"at_s": 1800000000, "user": "a", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "m", "receiver_kyc_level": 1, "amount_minor": 60000, "balance_minor": 90000, "label": "fraud"}
{"at_s": 1800000060, "user": "b", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "m", "receiver_kyc_level": 1, "amount_minor": 55000, "balance_minor": 90000, "label": "fraud"}
{"at_s": 1800000120, "user": "c", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "d", "receiver_kyc_level": 1, "amount_minor": 80000, "balance_minor": 90000, "label": "honest", "outcome": "deny"}
{"at_s": 1800000180, "user": "e", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "d", "receiver_kyc_level": 1, "amount_minor": 100, "balance_minor": 90000, "label": "honest"}
"#;
    let lines: Vec<LogLine> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect();
    assert_eq!(lines[0].label, Some(Label::Fraud));
    assert!(matches!(lines[1].event.kind, EventKind::P2p { .. }));
    let big_breaker = rules(
        &ONE_RULE
            .replace("MODE", "")
            .replace("max = 2,", "max = 100,"),
    );
    let report = backtest(big_breaker, lines, 1_800_000_000, 1_000);
    assert_eq!(report.events, 4);
    assert_eq!((report.events_fraud, report.events_honest), (2, 2));
    let rule = &report.rules[0];
    assert_eq!(rule.rule_id, "big-p2p");
    assert_eq!(rule.hits, 3);
    assert_eq!((rule.hits_fraud, rule.hits_honest), (2, 1));
    assert_eq!(rule.precision, Some(2.0 / 3.0));
    // The honest big one was denied already: only the two fraud ones change.
    assert_eq!(rule.changed, 2);
    assert_eq!(report.changed, 2);
    assert_eq!(rule.missed_fraud, 0);
    assert_eq!(report.outcomes, [1, 0, 0, 3]);
}
