//! Amounts of quota as the API shows and reads them: integers of points, or — in money mode —
//! decimal strings of the currency (`"10.00"`), while the ledger holds integers (micros of
//! the currency). The deployment's unit is set around every request (`billing::unit`).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

use crate::billing::Currency;
use crate::billing::money::{MICROS, format_decimal, parse_decimal};

pub use crate::billing::unit::{unit, with_unit};

/// Ledger units (points, or micros of the currency) as the API writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Amount(pub i64);

impl From<i64> for Amount {
    fn from(v: i64) -> Self {
        Amount(v)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match unit() {
            Currency::Points => s.serialize_i64(self.0),
            _ => s.serialize_str(&format_decimal(self.0)),
        }
    }
}

struct AmountVisitor(Currency);

impl AmountVisitor {
    fn whole(&self, n: i64) -> Result<i64, String> {
        match self.0 {
            Currency::Points => Ok(n),
            _ => n
                .checked_mul(MICROS)
                .ok_or_else(|| format!("{n} is out of range")),
        }
    }
}

impl Visitor<'_> for AmountVisitor {
    type Value = Amount;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            Currency::Points => f.write_str("an integer"),
            c => write!(
                f,
                "an amount of {} (a decimal string such as \"10.00\", or a number)",
                c.code()
            ),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Amount, E> {
        self.whole(n).map(Amount).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Amount, E> {
        let n = i64::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))?;
        self.visit_i64(n)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
        match self.0 {
            // `193.0` is a whole number (JSON Schema counts it as an integer); `193.5` is not.
            Currency::Points if v.fract() == 0.0 && v.abs() < 9.0e15 => self.visit_i64(v as i64),
            Currency::Points => Err(E::invalid_type(de::Unexpected::Float(v), &self)),
            // A JSON number is read through its shortest decimal form, which is exact for
            // every amount with at most six places.
            _ => parse_decimal(&v.to_string())
                .map(Amount)
                .map_err(|e| E::custom(e.to_string())),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
        match self.0 {
            Currency::Points => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
            _ => parse_decimal(v.trim())
                .map(Amount)
                .map_err(|e| E::custom(e.to_string())),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AmountVisitor(unit()))
    }
}

impl utoipa::PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Integer))
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .description(Some("Points (billing modes requests and tokens)")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .pattern(Some(r"^-?[0-9]+(\.[0-9]{1,6})?$"))
                    .description(Some(
                        "Money mode: a decimal of the deployment's currency, such as \"10.00\"",
                    )),
            )
            .into()
    }
}

impl utoipa::ToSchema for Amount {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn points_are_integers_and_money_is_decimal_strings() {
        let read = |s: &str| serde_json::from_str::<Amount>(s).map(|a| a.0);
        assert_eq!(serde_json::to_string(&Amount(7)).unwrap(), "7");
        assert_eq!(read("7").unwrap(), 7);
        assert!(read("7.5").is_err() && read("\"7\"").is_err());
        with_unit(Currency::Cny, async {
            assert_eq!(
                serde_json::to_string(&Amount(10_500_000)).unwrap(),
                "\"10.50\""
            );
            assert_eq!(read("\"10.00\"").unwrap(), 10_000_000);
            assert_eq!(read("10").unwrap(), 10_000_000);
            assert_eq!(read("0.1").unwrap(), 100_000);
            assert_eq!(read("\"0.000001\"").unwrap(), 1);
            assert!(read("\"0.0000001\"").is_err());
            assert!(read("\"ten\"").is_err());
            assert!(read("9223372036855").is_err());
        })
        .await;
    }
}
