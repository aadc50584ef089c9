//! JSON read borrowed and written as bytes, for translating a caller's request into another
//! protocol without trees: members are read by name (the last of a repeated name wins, as in
//! a tree), leaves kept as the caller wrote them ([`RawValue`]), a member of another type than
//! expected read as absent, and strings copied as they were escaped.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::chat_chunk::text;

/// A request tree through a bytes-to-bytes translation, as a tree (the built-in mock and
/// tests read trees); `model` stays the request's own.
pub fn tree_through(body: &Value, translate: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Value {
    let raw = serde_json::to_vec(body).unwrap_or_default();
    let mut chat = translate(&raw)
        .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
        .unwrap_or(Value::Null);
    chat["model"] = body.get("model").cloned().unwrap_or(Value::Null);
    chat
}

/// What a visitor does with a value of another type than it reads: the default, its
/// contents skipped.
macro_rules! default_unless {
    ($($f:ident($t:ty)),*) => {
        $(fn $f<E: de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Ok(Default::default())
        })*
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

/// An object of `T`'s members read from a request's bytes (checked as UTF-8 once here, not
/// string by string).
pub fn parse<'a, T: Members<'a>>(raw: &'a [u8]) -> Result<T, serde_json::Error> {
    let text = std::str::from_utf8(raw).map_err(<serde_json::Error as de::Error>::custom)?;
    serde_json::from_str::<Obj<T>>(text).map(|o| o.0)
}

pub fn is_null(v: &RawValue) -> bool {
    v.get() == "null"
}

/// `,"name":value` when there is a value.
pub fn member(out: &mut Vec<u8>, name: &str, v: Option<&RawValue>) {
    if let Some(v) = v {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(v.get().as_bytes());
    }
}

pub fn write_escaped(out: &mut Vec<u8>, s: &str) {
    // Writing into a `Vec` does not fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// A member written as sent, or `null`.
pub fn write_raw_or_null(out: &mut Vec<u8>, v: Option<&RawValue>) {
    out.extend_from_slice(v.map_or("null", RawValue::get).as_bytes());
}

/// A JSON string's text, ready to write between quotes.
#[derive(Debug, Clone)]
pub enum Text<'a> {
    /// As escaped in the caller's JSON (quotes excluded).
    Escaped(&'a str),
    /// Unescaped (read from a string the reader had to unescape).
    Owned(String),
}

impl<'a> Text<'a> {
    /// A member that is a string, as sent.
    pub fn of_raw(v: &'a RawValue) -> Option<Self> {
        let s = v.get();
        (s.len() >= 2 && s.starts_with('"')).then(|| Text::Escaped(&s[1..s.len() - 1]))
    }

    /// Whether it is the empty string.
    pub fn is_empty(&self) -> bool {
        match self {
            Text::Escaped(s) => s.is_empty(),
            Text::Owned(s) => s.is_empty(),
        }
    }

    pub fn write_inner(&self, out: &mut Vec<u8>) {
        match self {
            Text::Escaped(s) => out.extend_from_slice(s.as_bytes()),
            Text::Owned(s) => {
                let quoted = serde_json::to_string(s).unwrap_or_default();
                let inner = quoted
                    .strip_prefix('"')
                    .and_then(|q| q.strip_suffix('"'))
                    .unwrap_or("");
                out.extend_from_slice(inner.as_bytes());
            }
        }
    }
}

/// Texts joined by newlines as one JSON string (`""` for none).
pub fn write_joined<'t, 'a: 't>(out: &mut Vec<u8>, texts: impl IntoIterator<Item = &'t Text<'a>>) {
    write_joined_by(out, texts, b"\\n");
}

/// Texts joined by `sep` (escaped) as one JSON string.
pub fn write_joined_by<'t, 'a: 't>(
    out: &mut Vec<u8>,
    texts: impl IntoIterator<Item = &'t Text<'a>>,
    sep: &[u8],
) {
    out.push(b'"');
    for (i, t) in texts.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        t.write_inner(out);
    }
    out.push(b'"');
}

/// An object read member by member; `member` reads the value of a name it knows and
/// skips the rest.
pub trait Members<'de>: Default {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, a: &mut A) -> Result<(), A::Error>;
}

pub fn raw<'de, A: MapAccess<'de>>(a: &mut A) -> Result<Option<&'de RawValue>, A::Error> {
    a.next_value::<&'de RawValue>().map(Some)
}

pub fn skip<'de, A: MapAccess<'de>>(a: &mut A) -> Result<(), A::Error> {
    a.next_value::<IgnoredAny>().map(|_| ())
}

/// A member of a type that reads any value (`StrOrSeq`).
pub fn value<'de, A: MapAccess<'de>, T: Deserialize<'de>>(a: &mut A) -> Result<T, A::Error> {
    a.next_value::<T>()
}

/// An array member of `T`s (none when it is no array).
pub fn seq<'de, A: MapAccess<'de>, T: Members<'de>>(a: &mut A) -> Result<Vec<T>, A::Error> {
    a.next_value::<Seq<T>>().map(|s| s.0)
}

/// An object member of `T`'s members (empty when it is no object).
pub fn object<'de, A: MapAccess<'de>, T: Members<'de>>(a: &mut A) -> Result<Option<T>, A::Error> {
    a.next_value::<Obj<T>>().map(|o| Some(o.0))
}

/// [`Members`] for a struct of borrowed fields: each JSON name, the field it sets and how its
/// value is read (`raw`, `lenient`, `value`, `seq`, `object`); other names are skipped.
macro_rules! members {
    ($t:ident { $($name:literal => $field:ident: $read:ident),* $(,)? }) => {
        impl<'de> $crate::gateway::raw_json::Members<'de> for $t<'de> {
            fn member<A: serde::de::MapAccess<'de>>(
                &mut self,
                name: &str,
                a: &mut A,
            ) -> Result<(), A::Error> {
                match name {
                    $($name => self.$field = $crate::gateway::raw_json::$read(a)?,)*
                    _ => $crate::gateway::raw_json::skip(a)?,
                }
                Ok(())
            }
        }
    };
}
pub(crate) use members;

/// A string member, leniently (another type is absent).
pub struct Lenient<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Lenient<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d).map(Lenient)
    }
}

pub fn lenient<'de, A: MapAccess<'de>>(a: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    a.next_value::<Lenient<'de>>().map(|l| l.0)
}

/// A member's name, borrowed when it has no escape.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d).map(|t| Name(t.unwrap_or_default()))
    }
}

/// An object of `T`'s members; any other value reads as an empty object.
pub struct Obj<T>(pub T);

impl<'de, T: Members<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData)).map(Obj)
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Members<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<T, A::Error> {
        let mut t = T::default();
        while let Some(Name(k)) = a.next_key::<Name<'de>>()? {
            t.member(&k, &mut a)?;
        }
        Ok(t)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<T, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
    default_unless!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
}

/// An array of `T`s; any other value reads as none.
pub struct Seq<T>(pub Vec<T>);

impl<'de, T: Members<'de>> Deserialize<'de> for Seq<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SeqVisitor(PhantomData)).map(Seq)
    }
}

struct SeqVisitor<T>(PhantomData<T>);

impl<'de, T: Members<'de>> Visitor<'de> for SeqVisitor<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<T>, A::Error> {
        let mut v = Vec::with_capacity(a.size_hint().unwrap_or(0));
        while let Some(Obj(t)) = a.next_element::<Obj<T>>()? {
            v.push(t);
        }
        Ok(v)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Vec<T>, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }
    default_unless!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
}

/// A string, or an array of `T`s; anything else is `Other`.
#[derive(Default)]
pub enum StrOrSeq<'a, T> {
    Text(Text<'a>),
    Items(Vec<T>),
    #[default]
    Other,
}

impl<'de, T: Members<'de>> Deserialize<'de> for StrOrSeq<'de, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrSeqVisitor(PhantomData))
    }
}

struct StrOrSeqVisitor<T>(PhantomData<T>);

impl<'de, T: Members<'de>> Visitor<'de> for StrOrSeqVisitor<T> {
    type Value = StrOrSeq<'de, T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        // Borrowed from the input: it had no escape, so it needs none.
        Ok(StrOrSeq::Text(Text::Escaped(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(StrOrSeq::Text(Text::Owned(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        SeqVisitor(PhantomData).visit_seq(a).map(StrOrSeq::Items)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(StrOrSeq::Other)
    }
    default_unless!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64)
    );
}
