//! Parsers of command-line numbers: every flag that is a time in seconds or a rate per second
//! goes through one of these, so `inf`, `NaN`, negative values and values too large for a
//! `Duration` are refused with a clear message when the command line is read, instead of
//! panicking later.

use std::time::Duration;

/// A number of seconds (`15`, `0.5`, `0`): finite, not negative, and representable as a
/// duration.
pub(crate) fn seconds(text: &str) -> Result<Duration, FlagError> {
    let value = number(text)?;
    Duration::try_from_secs_f64(value).map_err(|_| FlagError::TooLarge(text.to_owned()))
}

/// A rate per second (`50`, `0.5`, `0`): finite and not negative.
pub(crate) fn rate(text: &str) -> Result<f64, FlagError> {
    number(text)
}

/// Why a number flag was refused (the text as given).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FlagError {
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{0:?} is not a finite number")]
    NotFinite(String),
    #[error("{0:?} is negative")]
    Negative(String),
    #[error("{0:?} is too many seconds to represent")]
    TooLarge(String),
}

fn number(text: &str) -> Result<f64, FlagError> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| FlagError::NotANumber(text.to_owned()))?;
    if !value.is_finite() {
        return Err(FlagError::NotFinite(text.to_owned()));
    }
    if value < 0.0 {
        return Err(FlagError::Negative(text.to_owned()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_finite_non_negative_durations() {
        assert_eq!(seconds("15"), Ok(Duration::from_secs(15)));
        assert_eq!(seconds("0.02"), Ok(Duration::from_millis(20)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        for bad in ["inf", "-inf", "NaN", "-1", "1e30", "abc", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        let s = |t: &str| t.to_owned();
        assert_eq!(seconds("inf"), Err(FlagError::NotFinite(s("inf"))));
        assert_eq!(seconds("-1"), Err(FlagError::Negative(s("-1"))));
        assert_eq!(seconds("1e30"), Err(FlagError::TooLarge(s("1e30"))));
        assert_eq!(seconds("abc"), Err(FlagError::NotANumber(s("abc"))));
        assert_eq!(
            FlagError::NotFinite(s("inf")).to_string(),
            "\"inf\" is not a finite number"
        );
    }

    #[test]
    fn rates_are_finite_and_non_negative() {
        assert_eq!(rate("50"), Ok(50.0));
        assert_eq!(rate("1e-30"), Ok(1e-30));
        for bad in ["inf", "NaN", "-0.5", "x"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
