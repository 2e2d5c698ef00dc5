//! `kinko-risk`: the risk engine. Every sensitive action is described as a typed [`Event`]
//! and scored before it acts; the answer is a [`Decision`] — allow, challenge (step-up bound to
//! the action), review (hold and open a case) or deny, plus actions — carrying the rules that
//! fired, the feature values that made them fire, and plain words for the user.
//!
//! - `event.rs` — the events and their subjects (`Key`s).
//! - `window.rs` — windowed counts, sums and distinct sets in bounded memory.
//! - `features.rs` — feature names as rule files write them.
//! - `state.rs` — the bounded feature state the events feed.
//! - `rules.rs` — the rule file (TOML, line-numbered errors), `RuleSet`.
//! - `decision.rs` — outcomes, actions, effects, reasons.
//! - `engine.rs` — `Engine::decide` / `observe`: shadow mode, breakers, fail modes.
//! - `backtest.rs` — replaying a labelled event log through a rule set.
//!
//! Pure: no I/O, no clock (events carry their time), no SQL, no HTTP.

mod backtest;
mod decision;
mod engine;
mod event;
mod features;
mod rules;
mod state;
mod window;

pub use backtest::{Label, LogLine, Report, RuleReport, backtest};
pub use decision::{Action, Decision, Effect, Firing, Language, Outcome};
pub use engine::{Breakers, Engine, SLOTS_MAX_DEFAULT};
pub use event::{Actor, Event, EventKind, Flow, Key, LinkMethod};
pub use features::{FeatureRef, NEVER_HOURS};
pub use rules::{
    Breaker, Condition, DEFAULT_RULES, FailMode, Rule, RuleFileError, RuleFileErrors, RuleSet,
};
pub use state::{Settings, State, Tracked};
pub use window::{DISTINCT_MAX, HORIZON_S};
