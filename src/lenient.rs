//! Query-string values into typed fields: numbers arrive as text (and JSON bodies carry
//! numbers), blanks mean "not given", surrounding ASCII spaces are ignored.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrText {
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FloatOrText {
    Float(f64),
    Text(String),
}

/// Only ASCII spaces around a number are ignored: other Unicode spaces (U+0085, U+3000…)
/// are not the blank the API document allows, nor part of a number.
fn ascii_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// An integer given as a number or as text.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<IntOrText>::deserialize(d)? {
        None => Ok(None),
        Some(IntOrText::Int(n)) => Ok(Some(n)),
        Some(IntOrText::Text(s)) if ascii_trim(&s).is_empty() => Ok(None),
        Some(IntOrText::Text(s)) => ascii_trim(&s)
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("不是整数")),
    }
}

/// A finite number given as a number or as text.
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = match Option::<FloatOrText>::deserialize(d)? {
        None => return Ok(None),
        Some(FloatOrText::Float(x)) => x,
        Some(FloatOrText::Text(s)) if ascii_trim(&s).is_empty() => return Ok(None),
        Some(FloatOrText::Text(s)) => ascii_trim(&s)
            .parse::<f64>()
            .map_err(|_| serde::de::Error::custom("不是数字"))?,
    };
    if v.is_finite() {
        Ok(Some(v))
    } else {
        Err(serde::de::Error::custom("不是有限数字"))
    }
}

/// Text, trimmed; blank is "not given".
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Q {
        #[serde(default, deserialize_with = "super::int")]
        n: Option<i64>,
    }

    fn n(v: &str) -> Result<Option<i64>, String> {
        serde_json::from_value::<Q>(serde_json::json!({ "n": v }))
            .map(|q| q.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn blanks_are_ascii_spaces_only() {
        assert_eq!(n(""), Ok(None));
        assert_eq!(n("  "), Ok(None));
        assert_eq!(n(" 5 "), Ok(Some(5)));
        // What Schemathesis sent: a Unicode space is neither blank nor a number.
        assert!(n("\u{85}").is_err());
        assert!(n("\u{3000}5").is_err());
    }
}
