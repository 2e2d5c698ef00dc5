//! Typed events: what a flow tells the engine before it acts. An event carries the facts the
//! caller already holds (KYC level, the user's and the link's creation time, the balance), so
//! the engine needs no store; windowed history is the engine's own (`state.rs`).

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

/// An opaque subject key: a typed id's `u128` (users, devices, links, banks, bank accounts,
/// merchants), or a keyed fingerprint the caller computed (a PIN value never reaches here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(u128);

impl Key {
    pub fn from_u128(raw: u128) -> Self {
        Self(raw)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// A key from text: a UUID (with or without hyphens) is taken as is; any other text (a
    /// hand-written event log's `alice`) is hashed. Only for logs and tests: flows pass ids.
    pub fn from_text(text: &str) -> Self {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() == 32
            && let Ok(raw) = u128::from_str_radix(&hex, 16)
        {
            return Self(raw);
        }
        // FNV-1a over 128 bits: stable across runs, so a log replays the same way.
        let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        for byte in text.bytes() {
            hash ^= u128::from(byte);
            hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
        Self(hash)
    }

    /// The key of an ordered pair (sender → receiver), distinct from either key.
    pub fn pair(first: Key, second: Key) -> Self {
        let mixed = first
            .0
            .rotate_left(64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            ^ second.0;
        Self(mixed.wrapping_mul(0xd6e8_feb8_6659_fd93_2b39_4c5b_1a3b_ad31))
    }

    /// The source network: IPv4 by /24, IPv6 by /64, so one host's neighbours count together.
    pub fn network(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self((0xffff_u128 << 32) | u128::from(u32::from(v4) & 0xffff_ff00)),
            IpAddr::V6(v6) => Self(u128::from(v6) & !0xffff_ffff_ffff_ffff_u128),
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Err(serde::de::Error::custom("an empty key"));
        }
        Ok(Key::from_text(&text))
    }
}

/// How a bank link was (or is being) made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMethod {
    /// OAuth at the bank, two factors on the bank's side.
    Oauth,
    /// The fenced legacy method (account number and cash-card PIN).
    Legacy,
}

/// Who acts, from where. `device` and `ip` may be unknown (an operator's batch job); a rule
/// that needs them then cannot decide and the flow's fail mode applies.
#[derive(Clone, Debug, Deserialize)]
pub struct Actor {
    pub user: Key,
    /// When the wallet was opened, Unix seconds.
    pub user_created_s: u64,
    /// 0 none, 1 identity proven (eKYC), 2 and up stronger.
    pub kyc_level: u8,
    #[serde(default)]
    pub device: Option<Key>,
    #[serde(default)]
    pub ip: Option<IpAddr>,
}

/// One sensitive action, before it acts.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at_s: u64,
    #[serde(flatten)]
    pub actor: Actor,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    SignIn {
        success: bool,
        new_device: bool,
    },
    Recovery,
    FactorChange,
    ContactChange,
    LinkAttempt {
        bank: Key,
        bank_account: Key,
        method: LinkMethod,
        success: bool,
        /// A keyed fingerprint of the PIN value tried (legacy method), never the PIN.
        #[serde(default)]
        pin: Option<Key>,
    },
    Link {
        bank: Key,
        bank_account: Key,
        link: Key,
        method: LinkMethod,
    },
    Charge {
        bank: Key,
        bank_account: Key,
        link: Key,
        link_created_s: u64,
        method: LinkMethod,
        amount_minor: i64,
        balance_minor: i64,
    },
    Payment {
        merchant: Key,
        /// The merchant's category as registered (`electronics`, `grocery`…).
        category: String,
        amount_minor: i64,
        balance_minor: i64,
    },
    P2p {
        receiver: Key,
        receiver_kyc_level: u8,
        amount_minor: i64,
        balance_minor: i64,
    },
    PayCode {
        amount_minor: i64,
        balance_minor: i64,
    },
    Withdrawal {
        bank: Key,
        bank_account: Key,
        link: Key,
        link_created_s: u64,
        method: LinkMethod,
        amount_minor: i64,
        balance_minor: i64,
    },
    Refund {
        merchant: Key,
        amount_minor: i64,
    },
}

/// The flows a rule applies to; also the unit of the fail-open / fail-closed choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flow {
    SignIn,
    Recovery,
    FactorChange,
    ContactChange,
    LinkAttempt,
    Link,
    Charge,
    Payment,
    P2p,
    PayCode,
    Withdrawal,
    Refund,
}

impl Flow {
    pub const ALL: [Flow; 12] = [
        Flow::SignIn,
        Flow::Recovery,
        Flow::FactorChange,
        Flow::ContactChange,
        Flow::LinkAttempt,
        Flow::Link,
        Flow::Charge,
        Flow::Payment,
        Flow::P2p,
        Flow::PayCode,
        Flow::Withdrawal,
        Flow::Refund,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flow::SignIn => "sign_in",
            Flow::Recovery => "recovery",
            Flow::FactorChange => "factor_change",
            Flow::ContactChange => "contact_change",
            Flow::LinkAttempt => "link_attempt",
            Flow::Link => "link",
            Flow::Charge => "charge",
            Flow::Payment => "payment",
            Flow::P2p => "p2p",
            Flow::PayCode => "pay_code",
            Flow::Withdrawal => "withdrawal",
            Flow::Refund => "refund",
        }
    }

    pub fn parse(name: &str) -> Option<Flow> {
        Flow::ALL.into_iter().find(|flow| flow.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl EventKind {
    pub fn flow(&self) -> Flow {
        match self {
            EventKind::SignIn { .. } => Flow::SignIn,
            EventKind::Recovery => Flow::Recovery,
            EventKind::FactorChange => Flow::FactorChange,
            EventKind::ContactChange => Flow::ContactChange,
            EventKind::LinkAttempt { .. } => Flow::LinkAttempt,
            EventKind::Link { .. } => Flow::Link,
            EventKind::Charge { .. } => Flow::Charge,
            EventKind::Payment { .. } => Flow::Payment,
            EventKind::P2p { .. } => Flow::P2p,
            EventKind::PayCode { .. } => Flow::PayCode,
            EventKind::Withdrawal { .. } => Flow::Withdrawal,
            EventKind::Refund { .. } => Flow::Refund,
        }
    }

    /// The amount moved, for the flows that move money.
    pub fn amount_minor(&self) -> Option<i64> {
        match self {
            EventKind::Charge { amount_minor, .. }
            | EventKind::Payment { amount_minor, .. }
            | EventKind::P2p { amount_minor, .. }
            | EventKind::PayCode { amount_minor, .. }
            | EventKind::Withdrawal { amount_minor, .. }
            | EventKind::Refund { amount_minor, .. } => Some(*amount_minor),
            _ => None,
        }
    }

    /// The wallet's balance before the event, for the flows that spend or receive.
    pub fn balance_minor(&self) -> Option<i64> {
        match self {
            EventKind::Charge { balance_minor, .. }
            | EventKind::Payment { balance_minor, .. }
            | EventKind::P2p { balance_minor, .. }
            | EventKind::PayCode { balance_minor, .. }
            | EventKind::Withdrawal { balance_minor, .. } => Some(*balance_minor),
            _ => None,
        }
    }
}
