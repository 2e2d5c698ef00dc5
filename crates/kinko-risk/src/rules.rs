//! The rule file: TOML a fraud analyst reads and edits (`rules/default.toml` at the repository
//! root is the shipped set), parsed with spans so every error names its line. A file is taken
//! whole or not at all: any error refuses it, and whoever holds the previous rule set keeps it.
//!
//! ```toml
//! version = "2026-12-06.1"          # required; decisions record it
//! [settings]
//! young_link_days = 7
//! high_risk_categories = ["electronics", "tobacco", "gift_cards"]
//! [fail]                            # per flow: "closed" (default) or "open"
//! sign_in = "open"
//! [[rule]]
//! id = "p2p-day-limit-sender"
//! threat = 14
//! events = ["p2p"]
//! when = ["user.p2p_out.sum_24h + amount > 100_000"]   # all must hold
//! outcome = "deny"                  # allow | challenge | review | deny
//! actions = []                      # freeze_outgoing, hold_incoming, suspend_legacy_at_bank…
//! mode = "active"                   # or "shadow": decides and records, never acts
//! breaker = { max = 1000, per = "1h" }   # at most this many reviews/denials per interval
//! reason_en = "…"
//! reason_ja = "…"
//! ```
//!
//! A condition is `<sum> <op> <sum>`, a sum being features and whole numbers joined by `+` and
//! `-` (`_` may group digits), `<op>` one of `>`, `>=`, `<`, `<=`, `==`, `!=`.

use std::fmt;
use std::ops::Range;

use toml_edit::{Document, Item, Table, Value};

use crate::decision::{Action, Outcome};
use crate::event::Flow;
use crate::features::{FeatureRef, parse_duration_s};
use crate::state::Settings;

/// One problem in a rule file, with its 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleFileError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RuleFileError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "line {}: {}", self.line, self.message)
    }
}

/// Every problem found in a refused file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RuleFileErrors(pub Vec<RuleFileError>);

impl fmt::Display for RuleFileErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(formatter, "rule file refused: {}", lines.join("; "))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Cmp {
    fn holds(self, left: i64, right: i64) -> bool {
        match self {
            Cmp::Gt => left > right,
            Cmp::Ge => left >= right,
            Cmp::Lt => left < right,
            Cmp::Le => left <= right,
            Cmp::Eq => left == right,
            Cmp::Ne => left != right,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    Feature(FeatureRef, String),
    Number(i64),
}

/// `+`/`-` terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sum(Vec<(bool, Term)>);

impl Sum {
    /// The value, `None` when a feature is unknown or the arithmetic overflows.
    pub fn value(&self, read: &mut impl FnMut(FeatureRef) -> Option<i64>) -> Option<i64> {
        let mut total: i64 = 0;
        for (negative, term) in &self.0 {
            let value = match term {
                Term::Feature(feature, _) => read(*feature)?,
                Term::Number(number) => *number,
            };
            total = if *negative {
                total.checked_sub(value)?
            } else {
                total.checked_add(value)?
            };
        }
        Some(total)
    }

    pub fn features(&self) -> impl Iterator<Item = (FeatureRef, &str)> {
        self.0.iter().filter_map(|(_, term)| match term {
            Term::Feature(feature, name) => Some((*feature, name.as_str())),
            Term::Number(_) => None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub text: String,
    pub left: Sum,
    pub cmp: Cmp,
    pub right: Sum,
}

impl Condition {
    /// `Some(true/false)`, or `None` when it cannot be decided.
    pub fn holds(&self, read: &mut impl FnMut(FeatureRef) -> Option<i64>) -> Option<bool> {
        let left = self.left.value(read)?;
        let right = self.right.value(read)?;
        Some(self.cmp.holds(left, right))
    }

    pub fn parse(text: &str) -> Result<Condition, String> {
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let operators = [
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
        ];
        let mut found = None;
        for (index, token) in tokens.iter().enumerate() {
            if let Some((_, cmp)) = operators.iter().find(|(symbol, _)| symbol == token) {
                if found.is_some() {
                    return Err(format!("`{text}` compares more than once"));
                }
                found = Some((index, *cmp));
            }
        }
        let (index, cmp) = found.ok_or_else(|| {
            format!("`{text}` has no comparison (>, >=, <, <=, ==, != between spaces)")
        })?;
        let left = parse_sum(&tokens[..index], text)?;
        let right = parse_sum(&tokens[index + 1..], text)?;
        Ok(Condition {
            text: text.to_owned(),
            left,
            cmp,
            right,
        })
    }

    pub fn features(&self) -> impl Iterator<Item = (FeatureRef, &str)> {
        self.left.features().chain(self.right.features())
    }
}

fn parse_sum(tokens: &[&str], text: &str) -> Result<Sum, String> {
    if tokens.is_empty() || tokens.len().is_multiple_of(2) {
        return Err(format!(
            "`{text}`: each side is terms joined by + or - with spaces around them"
        ));
    }
    let mut terms = Vec::with_capacity(tokens.len() / 2 + 1);
    let mut negative = false;
    for (index, token) in tokens.iter().enumerate() {
        if index % 2 == 1 {
            negative = match *token {
                "+" => false,
                "-" => true,
                other => return Err(format!("`{text}`: expected + or - and found `{other}`")),
            };
            continue;
        }
        let term = if token.starts_with(|c: char| c.is_ascii_digit()) {
            let digits: String = token.chars().filter(|c| *c != '_').collect();
            let number = digits
                .parse::<i64>()
                .map_err(|_| format!("`{text}`: `{token}` is not a whole number"))?;
            Term::Number(number)
        } else {
            Term::Feature(FeatureRef::parse(token)?, (*token).to_owned())
        };
        terms.push((negative, term));
    }
    Ok(Sum(terms))
}

/// The decline circuit breaker: at most `max` reviews and denials per `interval_s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub max: u32,
    pub interval_s: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub line: usize,
    pub threat: Option<i64>,
    pub flows: Vec<Flow>,
    pub conditions: Vec<Condition>,
    pub outcome: Outcome,
    pub actions: Vec<Action>,
    pub shadow: bool,
    pub breaker: Breaker,
    pub reason_en: String,
    pub reason_ja: String,
}

impl Rule {
    pub fn applies_to(&self, flow: Flow) -> bool {
        self.flows.contains(&flow)
    }
}

/// What a flow does when the engine cannot decide a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// The undecidable rule acts as if it fired.
    Closed,
    /// It is recorded and does not act.
    Open,
}

/// A validated, versioned rule set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub version: String,
    pub settings: Settings,
    fail: [FailMode; 12],
    pub rules: Vec<Rule>,
}

/// The shipped rules (`rules/default.toml` at the repository root).
pub const DEFAULT_RULES: &str = include_str!("../../../rules/default.toml");

const RULE_KEYS: [&str; 11] = [
    "id",
    "threat",
    "events",
    "when",
    "outcome",
    "actions",
    "mode",
    "breaker",
    "reason_en",
    "reason_ja",
    "description",
];

impl RuleSet {
    /// The shipped rules. They are tested to parse; an error here is a build defect.
    pub fn shipped() -> Result<RuleSet, RuleFileErrors> {
        RuleSet::parse(DEFAULT_RULES)
    }

    pub fn fail_mode(&self, flow: Flow) -> FailMode {
        self.fail[flow.index()]
    }

    pub fn parse(text: &str) -> Result<RuleSet, RuleFileErrors> {
        let document = Document::parse(text).map_err(|error| {
            let line = line_of(text, error.span());
            RuleFileErrors(vec![RuleFileError {
                line,
                message: error.message().trim().to_owned(),
            }])
        })?;
        let mut parser = Parser {
            text,
            errors: Vec::new(),
        };
        let root = document.as_table();
        parser.unknown_keys(root, &["version", "settings", "fail", "rule"], "the file");
        let version = parser
            .string(root, "version", root.span())
            .unwrap_or_default();
        let settings = parser.settings(root);
        let fail = parser.fail_modes(root);
        let mut rules: Vec<Rule> = Vec::new();
        match root.get("rule") {
            Some(Item::ArrayOfTables(tables)) => {
                for table in tables.iter() {
                    if let Some(rule) = parser.rule(table)
                        && !rules.iter().any(|other| other.id == rule.id)
                    {
                        rules.push(rule);
                    } else if let Some(id) = table.get("id").and_then(Item::as_str)
                        && rules.iter().any(|other| other.id == id)
                    {
                        parser.error(table.span(), format!("rule id `{id}` is used twice"));
                    }
                }
            }
            Some(item) => parser.error(item.span(), "`rule` must be written [[rule]]".into()),
            None => parser.error(Some(0..0), "the file has no [[rule]]".into()),
        }
        if parser.errors.is_empty() {
            Ok(RuleSet {
                version,
                settings,
                fail,
                rules,
            })
        } else {
            parser.errors.sort_by_key(|error| error.line);
            Err(RuleFileErrors(parser.errors))
        }
    }
}

fn line_of(text: &str, span: Option<Range<usize>>) -> usize {
    let start = span.map_or(0, |span| span.start).min(text.len());
    text.as_bytes()[..start]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

struct Parser<'a> {
    text: &'a str,
    errors: Vec<RuleFileError>,
}

impl Parser<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: String) {
        let line = line_of(self.text, span);
        self.errors.push(RuleFileError { line, message });
    }

    fn unknown_keys(&mut self, table: &Table, known: &[&str], what: &str) {
        for (key, item) in table.iter() {
            if !known.contains(&key) {
                let span = table.key(key).and_then(|key| key.span()).or(item.span());
                self.error(span, format!("unknown key `{key}` in {what}"));
            }
        }
    }

    fn string(&mut self, table: &Table, key: &str, at: Option<Range<usize>>) -> Option<String> {
        match table.get(key) {
            Some(item) => match item.as_str() {
                Some(text) if !text.trim().is_empty() => Some(text.to_owned()),
                _ => {
                    self.error(item.span(), format!("`{key}` must be a non-empty string"));
                    None
                }
            },
            None => {
                self.error(at, format!("`{key}` is missing"));
                None
            }
        }
    }

    fn settings(&mut self, root: &Table) -> Settings {
        let mut settings = Settings {
            young_link_s: 7 * 86_400,
            high_risk_categories: Vec::new(),
        };
        let Some(item) = root.get("settings") else {
            return settings;
        };
        let Some(table) = item.as_table() else {
            self.error(item.span(), "`settings` must be a table".into());
            return settings;
        };
        self.unknown_keys(
            table,
            &["young_link_days", "high_risk_categories"],
            "[settings]",
        );
        if let Some(item) = table.get("young_link_days") {
            match item.as_integer().filter(|days| (0..=31).contains(days)) {
                Some(days) => settings.young_link_s = days.unsigned_abs() * 86_400,
                None => self.error(
                    item.span(),
                    "`young_link_days` must be a whole number from 0 to 31".into(),
                ),
            }
        }
        if let Some(item) = table.get("high_risk_categories") {
            settings.high_risk_categories = self.strings(item, "high_risk_categories");
        }
        settings
    }

    fn strings(&mut self, item: &Item, key: &str) -> Vec<String> {
        let Some(array) = item.as_array() else {
            self.error(item.span(), format!("`{key}` must be a list of strings"));
            return Vec::new();
        };
        let mut strings = Vec::with_capacity(array.len());
        for value in array.iter() {
            match value.as_str() {
                Some(text) => strings.push(text.to_owned()),
                None => self.error(value.span(), format!("`{key}` holds a non-string")),
            }
        }
        strings
    }

    fn fail_modes(&mut self, root: &Table) -> [FailMode; 12] {
        let mut fail = [FailMode::Closed; 12];
        let Some(item) = root.get("fail") else {
            return fail;
        };
        let Some(table) = item.as_table() else {
            self.error(item.span(), "`fail` must be a table".into());
            return fail;
        };
        for (key, item) in table.iter() {
            let Some(flow) = Flow::parse(key) else {
                self.error(item.span(), format!("unknown flow `{key}` in [fail]"));
                continue;
            };
            fail[flow.index()] = match item.as_str() {
                Some("closed") => FailMode::Closed,
                Some("open") => FailMode::Open,
                _ => {
                    self.error(
                        item.span(),
                        format!("`{key}` must be \"closed\" or \"open\""),
                    );
                    FailMode::Closed
                }
            };
        }
        fail
    }

    fn rule(&mut self, table: &Table) -> Option<Rule> {
        let errors_before = self.errors.len();
        let at = table.span();
        self.unknown_keys(table, &RULE_KEYS, "[[rule]]");
        let id = self.string(table, "id", at.clone())?;
        if !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            let span = table.get("id").and_then(Item::span);
            self.error(span, format!("rule id `{id}`: use a-z, 0-9 and -"));
        }
        let threat = table.get("threat").and_then(|item| {
            let threat = item.as_integer();
            if threat.is_none() {
                self.error(
                    item.span(),
                    format!("rule `{id}`: `threat` must be a number"),
                );
            }
            threat
        });
        let flows = self.flows(table, &id, at.clone());
        let conditions = self.conditions(table, &id, &flows, at.clone());
        let outcome = self.outcome(table, &id, at.clone());
        let actions = match table.get("actions") {
            Some(item) => self.actions(item, &id),
            None => Vec::new(),
        };
        let shadow = match table.get("mode") {
            None => false,
            Some(item) => match item.as_str() {
                Some("active") => false,
                Some("shadow") => true,
                _ => {
                    let message = format!("rule `{id}`: `mode` must be \"active\" or \"shadow\"");
                    self.error(item.span(), message);
                    false
                }
            },
        };
        let breaker = self.breaker(table, &id, at.clone());
        let reason_en = self.string(table, "reason_en", at.clone());
        let reason_ja = self.string(table, "reason_ja", at.clone());
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Rule {
            line: line_of(self.text, at),
            id,
            threat,
            flows,
            conditions,
            outcome: outcome?,
            actions,
            shadow,
            breaker: breaker?,
            reason_en: reason_en?,
            reason_ja: reason_ja?,
        })
    }

    fn flows(&mut self, table: &Table, id: &str, at: Option<Range<usize>>) -> Vec<Flow> {
        let Some(item) = table.get("events") else {
            self.error(at, format!("rule `{id}`: `events` is missing"));
            return Vec::new();
        };
        let mut flows = Vec::new();
        for name in self.strings(item, "events") {
            match Flow::parse(&name) {
                Some(flow) => flows.push(flow),
                None => {
                    let names: Vec<&str> = Flow::ALL.iter().map(|flow| flow.name()).collect();
                    let message = format!(
                        "rule `{id}`: unknown event `{name}` (one of {})",
                        names.join(", ")
                    );
                    self.error(item.span(), message);
                }
            }
        }
        if flows.is_empty() && item.as_array().is_some_and(|array| array.is_empty()) {
            self.error(item.span(), format!("rule `{id}`: `events` is empty"));
        }
        flows
    }

    fn conditions(
        &mut self,
        table: &Table,
        id: &str,
        flows: &[Flow],
        at: Option<Range<usize>>,
    ) -> Vec<Condition> {
        let Some(item) = table.get("when") else {
            self.error(at, format!("rule `{id}`: `when` is missing"));
            return Vec::new();
        };
        let Some(array) = item.as_array() else {
            self.error(item.span(), format!("rule `{id}`: `when` must be a list"));
            return Vec::new();
        };
        if array.is_empty() {
            self.error(item.span(), format!("rule `{id}`: `when` is empty"));
        }
        let mut conditions = Vec::with_capacity(array.len());
        for value in array.iter() {
            let Some(text) = value.as_str() else {
                self.error(
                    value.span(),
                    format!("rule `{id}`: a condition is a string"),
                );
                continue;
            };
            match Condition::parse(text) {
                Ok(condition) => {
                    for (feature, name) in condition.features() {
                        for flow in flows {
                            if !feature.defined_for(*flow) {
                                let message =
                                    format!("rule `{id}`: `{name}` does not exist for {flow}");
                                self.error(value.span(), message);
                            }
                        }
                    }
                    conditions.push(condition);
                }
                Err(message) => self.error(value.span(), format!("rule `{id}`: {message}")),
            }
        }
        conditions
    }

    fn outcome(&mut self, table: &Table, id: &str, at: Option<Range<usize>>) -> Option<Outcome> {
        let text = self.string(table, "outcome", at)?;
        let outcome = Outcome::parse(&text);
        if outcome.is_none() {
            let span = table.get("outcome").and_then(Item::span);
            let message =
                format!("rule `{id}`: outcome `{text}` is not allow, challenge, review or deny");
            self.error(span, message);
        }
        outcome
    }

    fn actions(&mut self, item: &Item, id: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        for name in self.strings(item, "actions") {
            match Action::parse(&name) {
                Some(action) => actions.push(action),
                None => {
                    let names: Vec<&str> = Action::ALL.iter().map(|action| action.name()).collect();
                    let message = format!(
                        "rule `{id}`: unknown action `{name}` (one of {})",
                        names.join(", ")
                    );
                    self.error(item.span(), message);
                }
            }
        }
        actions
    }

    fn breaker(&mut self, table: &Table, id: &str, at: Option<Range<usize>>) -> Option<Breaker> {
        let Some(item) = table.get("breaker") else {
            self.error(
                at,
                format!("rule `{id}`: `breaker` is missing (max and per)"),
            );
            return None;
        };
        let Some(breaker) = item.as_table_like() else {
            self.error(
                item.span(),
                format!("rule `{id}`: `breaker` is {{ max, per }}"),
            );
            return None;
        };
        let max = breaker
            .get("max")
            .and_then(Item::as_integer)
            .and_then(|max| u32::try_from(max).ok())
            .filter(|max| *max >= 1);
        let per = breaker
            .get("per")
            .and_then(Item::as_value)
            .and_then(Value::as_str)
            .map(parse_duration_s);
        match (max, per) {
            (Some(max), Some(Ok(interval_s))) => Some(Breaker { max, interval_s }),
            (None, _) => {
                let message = format!("rule `{id}`: breaker `max` must be a whole number ≥ 1");
                self.error(item.span(), message);
                None
            }
            (_, Some(Err(message))) => {
                self.error(
                    item.span(),
                    format!("rule `{id}`: breaker `per`: {message}"),
                );
                None
            }
            (_, None) => {
                let message = format!("rule `{id}`: breaker `per` is missing (e.g. \"1h\")");
                self.error(item.span(), message);
                None
            }
        }
    }
}
