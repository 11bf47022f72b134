//! Kubernetes resource quantities (`2500m`, `1.5`, `10Ki`, `2e3`): parsing to a number, and
//! formatting a metric value the way KEDA hands it to the HPA (milli precision, canonical form).

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid quantity")]
pub struct QuantityError(pub String);

/// Parses a quantity to its numeric value.
pub fn parse(text: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError(text.to_owned());
    let t = text.trim();
    if t.is_empty() {
        return Err(err());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let base: f64 = number.parse().map_err(|_| err())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().map_err(|_| err())?;
            10f64.powi(exp)
        }
        _ => return Err(err()),
    };
    let value = base * factor;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(err())
    }
}

/// Formats a value as KEDA does for the external metrics API: truncated to milli units
/// (`int64(value*1000)`) and written in canonical decimal-SI form: `"2500m"`, `"3"`, `"2k"`,
/// `"1500k"`.
pub fn format_milli(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_owned();
    }
    let milli = (value * 1000.0).trunc();
    // Beyond i64 milli units the value is clamped (about 9.2e15), as Go's conversion saturates.
    let milli = if milli >= i64::MAX as f64 {
        i64::MAX
    } else if milli <= i64::MIN as f64 {
        i64::MIN
    } else {
        milli as i64
    };
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut mantissa = milli / 1000;
    let mut exponent = 0usize;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while mantissa != 0 && mantissa % 1000 == 0 && exponent + 1 < SUFFIXES.len() {
        mantissa /= 1000;
        exponent += 1;
    }
    format!("{mantissa}{}", SUFFIXES[exponent])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_with_every_suffix() {
        assert_eq!(parse("2500m").unwrap(), 2.5);
        assert_eq!(parse("3").unwrap(), 3.0);
        assert_eq!(parse("1.5k").unwrap(), 1500.0);
        assert_eq!(parse("1Ki").unwrap(), 1024.0);
        assert_eq!(parse("2e3").unwrap(), 2000.0);
        assert_eq!(parse("-1").unwrap(), -1.0);
        assert!(parse("").is_err());
        assert!(parse("12 apples").is_err());
        assert!(parse("1Q").is_err());
    }

    #[test]
    fn values_format_in_milli_units_like_keda() {
        assert_eq!(format_milli(2.5), "2500m");
        assert_eq!(format_milli(3.0), "3");
        assert_eq!(format_milli(0.0), "0");
        assert_eq!(format_milli(0.0004), "0");
        assert_eq!(format_milli(1.0 / 3.0), "333m");
        assert_eq!(
            format_milli(2.0009),
            "2",
            "truncated like int64(value*1000)"
        );
        assert_eq!(format_milli(2000.0), "2k");
        assert_eq!(format_milli(1_500_000.0), "1500k");
        assert_eq!(format_milli(1500.0), "1500");
        assert_eq!(format_milli(-2000.0), "-2k");
        assert_eq!(format_milli(f64::NAN), "0");
    }
}
