//! Banking: the partner banks Kinko links to, and each bank's own switches.
//!
//! - [`registry`] — the partner banks (seeded from `data/banks.csv`) and their policies:
//!   linking on/off, charging on/off, the legacy PIN method on/off (off by default), limits per
//!   charge/day/month, and the reduced limits and wait of a new link. A change is made by an
//!   admin or by that bank's own bank-partner operator, takes effect on the next request, and
//!   is audited with who and why — the one-click switch the banks lacked in 2020.
//!
//! Bank links, the bank protocol client and the sandbox bank arrive with issue 4.

pub mod client;
pub mod links;
pub mod protocol;
pub mod registry;
