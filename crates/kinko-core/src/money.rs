//! Money: an integer number of minor units together with its currency.
//!
//! No floats anywhere, no `Default` (a missing amount is an error, not zero), and arithmetic
//! that can fail returns a `Result` instead of wrapping or panicking.

use std::fmt;

use crate::{ErrorCode, ErrorKind};

/// An ISO 4217 currency that Kinko can hold. The ledger keys its books by the numeric code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    Jpy,
    Usd,
    Eur,
}

impl Currency {
    pub const ALL: [Currency; 3] = [Currency::Jpy, Currency::Usd, Currency::Eur];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Jpy => "JPY",
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
        }
    }

    /// The ISO 4217 numeric code, which is also the ledger number of the currency's books.
    pub fn numeric(self) -> u32 {
        match self {
            Currency::Jpy => 392,
            Currency::Usd => 840,
            Currency::Eur => 978,
        }
    }

    /// Digits after the decimal point: yen has none.
    pub fn exponent(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            Currency::Usd | Currency::Eur => 2,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Currency::Jpy => "¥",
            Currency::Usd => "$",
            Currency::Eur => "€",
        }
    }

    pub fn from_code(code: &str) -> Result<Self, MoneyError> {
        Self::ALL
            .into_iter()
            .find(|currency| currency.code() == code)
            .ok_or(MoneyError::UnknownCurrency)
    }

    pub fn from_numeric(numeric: u32) -> Result<Self, MoneyError> {
        Self::ALL
            .into_iter()
            .find(|currency| currency.numeric() == numeric)
            .ok_or(MoneyError::UnknownCurrency)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("the amounts are in different currencies")]
    CurrencyMismatch,
    #[error("the amount is too large")]
    Overflow,
    #[error("the amount must be positive")]
    NotPositive,
    #[error("unknown or unsupported currency")]
    UnknownCurrency,
}

impl ErrorCode for MoneyError {
    fn code(&self) -> &'static str {
        match self {
            MoneyError::CurrencyMismatch => "MONEY_CURRENCY_MISMATCH",
            MoneyError::Overflow => "MONEY_OVERFLOW",
            MoneyError::NotPositive => "MONEY_NOT_POSITIVE",
            MoneyError::UnknownCurrency => "MONEY_UNKNOWN_CURRENCY",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// An amount of money in minor units (yen for JPY, cents for USD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }

    /// A strictly positive amount, as every transfer needs.
    pub fn positive(amount_minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if amount_minor > 0 {
            Ok(Self::new(amount_minor, currency))
        } else {
            Err(MoneyError::NotPositive)
        }
    }

    pub fn yen(amount: i64) -> Self {
        Self::new(amount, Currency::Jpy)
    }

    pub fn amount_minor(self) -> i64 {
        self.amount_minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.amount_minor
            .checked_add(other.amount_minor)
            .map(|amount_minor| Money::new(amount_minor, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.amount_minor
            .checked_sub(other.amount_minor)
            .map(|amount_minor| Money::new(amount_minor, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch)
        }
    }
}

impl fmt::Display for Money {
    /// `¥1,234`, `-¥50`, `$12.34`: how people read amounts.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let magnitude = self.amount_minor.unsigned_abs();
        let scale = 10u64.pow(self.currency.exponent());
        let whole = group_thousands(magnitude / scale);
        write!(formatter, "{sign}{}{whole}", self.currency.symbol())?;
        if self.currency.exponent() > 0 {
            let width = self.currency.exponent() as usize;
            write!(formatter, ".{:0width$}", magnitude % scale)?;
        }
        Ok(())
    }
}

fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn yen_shows_as_people_write_it() {
        assert_eq!(Money::yen(1234).to_string(), "¥1,234");
        assert_eq!(Money::yen(0).to_string(), "¥0");
        assert_eq!(Money::yen(-50).to_string(), "-¥50");
        assert_eq!(Money::yen(1_000_000).to_string(), "¥1,000,000");
        assert_eq!(
            Money::yen(i64::MIN).to_string(),
            "-¥9,223,372,036,854,775,808"
        );
        assert_eq!(Money::new(1234, Currency::Usd).to_string(), "$12.34");
        assert_eq!(Money::new(5, Currency::Eur).to_string(), "€0.05");
    }

    #[test]
    fn arithmetic_refuses_overflow_and_mixed_currencies() {
        assert_eq!(
            Money::yen(i64::MAX).checked_add(Money::yen(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::yen(i64::MIN).checked_sub(Money::yen(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::yen(1).checked_add(Money::new(1, Currency::Usd)),
            Err(MoneyError::CurrencyMismatch)
        );
        assert_eq!(Money::yen(2).checked_sub(Money::yen(5)), Ok(Money::yen(-3)));
    }

    #[test]
    fn positive_refuses_zero_and_negative() {
        assert_eq!(
            Money::positive(0, Currency::Jpy),
            Err(MoneyError::NotPositive)
        );
        assert_eq!(
            Money::positive(-1, Currency::Jpy),
            Err(MoneyError::NotPositive)
        );
        assert_eq!(Money::positive(1, Currency::Jpy), Ok(Money::yen(1)));
    }

    #[test]
    fn currencies_resolve_by_code_and_number() {
        for currency in Currency::ALL {
            assert_eq!(Currency::from_code(currency.code()), Ok(currency));
            assert_eq!(Currency::from_numeric(currency.numeric()), Ok(currency));
        }
        assert_eq!(Currency::from_code("XXX"), Err(MoneyError::UnknownCurrency));
    }

    proptest! {
        #[test]
        fn add_then_sub_is_identity_when_no_overflow(a in any::<i64>(), b in any::<i64>()) {
            let left = Money::yen(a);
            let right = Money::yen(b);
            match left.checked_add(right) {
                Ok(sum) => prop_assert_eq!(sum.checked_sub(right), Ok(left)),
                Err(error) => {
                    prop_assert_eq!(error, MoneyError::Overflow);
                    prop_assert!(a.checked_add(b).is_none());
                }
            }
        }

        #[test]
        fn grouping_only_adds_commas(value in any::<u64>()) {
            let grouped = group_thousands(value);
            prop_assert_eq!(grouped.replace(',', ""), value.to_string());
        }
    }
}
