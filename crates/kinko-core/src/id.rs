//! Typed, time-ordered 128-bit ids.
//!
//! Ids are UUIDv7 values: the first 48 bits are the creation time in ms, so ids sort by time and
//! append to the end of B-tree indexes. Each kind of object has its own id type so an
//! `AccountId` can never be passed where a `TransferId` is expected. Zero is never a valid id.

use std::fmt;

use crate::Clock;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("not a valid id: expected a UUID")]
    Malformed,
    #[error("the id must not be zero")]
    Zero,
}

/// Makes a fresh UUIDv7 as a `u128`, timestamped by `clock`.
pub fn new_v7(clock: &dyn Clock) -> u128 {
    let now_ns = clock.now_ns();
    let seconds = now_ns / 1_000_000_000;
    let subsec_nanos = u32::try_from(now_ns % 1_000_000_000).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(uuid::NoContext, seconds, subsec_nanos);
    uuid::Uuid::new_v7(timestamp).as_u128()
}

/// Declares a typed id over a non-zero `u128`.
#[macro_export]
macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            /// Wraps a raw value; zero is refused because it means "no id".
            pub fn from_u128(raw: u128) -> Result<Self, $crate::id::IdParseError> {
                if raw == 0 {
                    Err($crate::id::IdParseError::Zero)
                } else {
                    Ok(Self(raw))
                }
            }

            /// A fresh time-ordered id.
            pub fn generate(clock: &dyn $crate::Clock) -> Self {
                Self($crate::id::new_v7(clock))
            }

            pub fn as_u128(self) -> u128 {
                self.0
            }

        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $crate::id::fmt_uuid(self.0, formatter)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, formatter: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(formatter, "{}(", stringify!($name))?;
                $crate::id::fmt_uuid(self.0, formatter)?;
                write!(formatter, ")")
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::IdParseError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::from_u128($crate::id::parse_uuid(text)?)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub fn fmt_uuid(raw: u128, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
    fmt::Display::fmt(&uuid::Uuid::from_u128(raw).hyphenated(), formatter)
}

pub fn parse_uuid(text: &str) -> Result<u128, IdParseError> {
    uuid::Uuid::try_parse(text)
        .map(|parsed| parsed.as_u128())
        .map_err(|_| IdParseError::Malformed)
}

/// Ids ordered by creation time: `generate` uses `clock`, so tests get predictable ordering.
pub fn timestamp_ms_of(raw: u128) -> u64 {
    u64::try_from(raw >> 80).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use crate::ManualClock;

    crate::typed_id!(
        /// An id type for the tests.
        SampleId
    );

    #[test]
    fn ids_round_trip_through_text_and_refuse_zero_and_garbage() {
        let clock = ManualClock::new(1_700_000_000_000_000_000);
        let id = SampleId::generate(&clock);
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<SampleId>(), Ok(id));
        assert_eq!(
            "00000000-0000-0000-0000-000000000000".parse::<SampleId>(),
            Err(super::IdParseError::Zero)
        );
        assert_eq!(
            "not-an-id".parse::<SampleId>(),
            Err(super::IdParseError::Malformed)
        );
    }

    #[test]
    fn ids_sort_by_the_clock() {
        let clock = ManualClock::new(1_700_000_000_000_000_000);
        let first = SampleId::generate(&clock);
        clock.advance_ms(1);
        let second = SampleId::generate(&clock);
        assert!(first < second);
        assert_eq!(super::timestamp_ms_of(first.as_u128()), 1_700_000_000_000);
    }
}
