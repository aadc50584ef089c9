//! Query-string values into typed fields: numbers arrive as text (and JSON bodies carry
//! numbers), blanks mean "not given", surrounding spaces are ignored.

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

/// An integer given as a number or as text.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<IntOrText>::deserialize(d)? {
        None => Ok(None),
        Some(IntOrText::Int(n)) => Ok(Some(n)),
        Some(IntOrText::Text(s)) if s.trim().is_empty() => Ok(None),
        Some(IntOrText::Text(s)) => s
            .trim()
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
        Some(FloatOrText::Text(s)) if s.trim().is_empty() => return Ok(None),
        Some(FloatOrText::Text(s)) => s
            .trim()
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
