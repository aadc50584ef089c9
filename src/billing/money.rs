//! Amounts of money as integers of a millionth of the currency (micros), never floats: how
//! they are written in configuration and answers (decimal strings) and read back exactly.

use std::fmt;

/// Micros in one unit of the currency.
pub const MICROS: i64 = 1_000_000;

/// The unit a deployment counts in: abstract points (the seed's, the default) or money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Currency {
    Points,
    Cny,
    Usd,
}

impl Currency {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "POINTS" => Some(Currency::Points),
            "CNY" | "RMB" => Some(Currency::Cny),
            "USD" => Some(Currency::Usd),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::Points => "points",
            Currency::Cny => "CNY",
            Currency::Usd => "USD",
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Currency::Points => "",
            Currency::Cny => "¥",
            Currency::Usd => "$",
        }
    }
}

/// A decimal that is not an amount: too many decimals, not a number, out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAmount(pub String);

impl fmt::Display for BadAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an amount (a decimal with at most 6 places, such as \"10.00\")",
            self.0
        )
    }
}

/// `"10.5"` → 10 500 000 micros, exactly; at most six decimals, an optional leading `-`.
pub fn parse_decimal(s: &str) -> Result<i64, BadAmount> {
    let bad = || BadAmount(s.to_owned());
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 6 {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    let v = whole
        .checked_mul(MICROS)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)?;
    Ok(if neg { -v } else { v })
}

/// 10 500 000 micros → `"10.50"`: at least two decimals, more only when they are not zero.
pub fn format_decimal(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let whole = m / MICROS as u64;
    let frac = format!("{:06}", m % MICROS as u64);
    let frac = frac.trim_end_matches('0');
    let frac = format!("{frac:0<2}");
    format!("{sign}{whole}.{frac}")
}

/// A configured price written as a TOML number (`2.5`) or string (`"2.5"`), as micros.
pub fn from_config_number(v: f64) -> Result<i64, BadAmount> {
    // Six decimals at most: printed with 6 places, a price round-trips exactly.
    let text = format!("{v:.6}");
    let back: f64 = text.parse().unwrap_or(f64::NAN);
    if !v.is_finite() || (back - v).abs() > 1e-9 * v.abs().max(1.0) {
        return Err(BadAmount(v.to_string()));
    }
    parse_decimal(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimals_are_read_exactly() {
        assert_eq!(parse_decimal("10"), Ok(10_000_000));
        assert_eq!(parse_decimal("10.00"), Ok(10_000_000));
        assert_eq!(parse_decimal("0.000001"), Ok(1));
        assert_eq!(parse_decimal("-1.5"), Ok(-1_500_000));
        for bad in [
            "",
            ".5",
            "1.0000001",
            "1e3",
            "abc",
            "1.2.3",
            "--1",
            "99999999999999",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad}");
        }
        assert_eq!(from_config_number(0.07), Ok(70_000));
        assert_eq!(from_config_number(2.0), Ok(2_000_000));
        assert!(from_config_number(0.0000001).is_err());
    }

    #[test]
    fn amounts_are_written_with_two_places_or_more() {
        assert_eq!(format_decimal(10_000_000), "10.00");
        assert_eq!(format_decimal(10_500_000), "10.50");
        assert_eq!(format_decimal(1_234), "0.001234");
        assert_eq!(format_decimal(-70_000), "-0.07");
        assert_eq!(format_decimal(0), "0.00");
    }

    proptest! {
        #[test]
        fn written_amounts_read_back(m in -1_000_000_000_000_000i64..1_000_000_000_000_000) {
            prop_assert_eq!(parse_decimal(&format_decimal(m)), Ok(m));
        }
    }
}
