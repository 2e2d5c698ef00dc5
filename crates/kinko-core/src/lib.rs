//! The pure core every Kinko domain builds on: money in integer minor units, typed time-ordered
//! ids, a clock that tests can move, and error codes that stay stable across releases.
//!
//! Nothing here does I/O.

pub mod clock;
pub mod error;
pub mod id;
pub mod money;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorCode, ErrorKind};
pub use id::IdParseError;
pub use money::{Currency, Money, MoneyError};
