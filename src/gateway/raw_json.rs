//! JSON read borrowed and written as bytes, for translating a caller's request into another
//! protocol without trees: members are read by name (the last of a repeated name wins, as in
//! a tree), leaves kept as the caller wrote them ([`Raw`]), a member of another type than
//! expected read as absent, and strings copied as they were escaped.
//!
//! The reading runs on the gateway's own JSON reader (`skim`), as the one-pass reading of
//! every call does, and accepts and refuses what serde_json's reading did here (kept in the
//! tests as the oracle, `oracle`): a name or a string read for its value may not hold a lone
//! surrogate escape, a number read (as a member of another type) must be a finite `f64`, and
//! a value kept as it was written ([`Raw`]) or skipped is checked for its grammar alone.

use std::borrow::Cow;

use serde_json::Value;

use super::skim::{Malformed, Read, Skim, Spans};

#[cfg(test)]
pub mod oracle;
mod values;

pub use values::{Raw, StrOrSeq, Text};

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

/// An object of `T`'s members read from a request's bytes (checked as UTF-8 once here, not
/// string by string); any other value reads as an empty `T`. `spans`: the long strings the
/// gateway's first reading of these bytes noted, stepped over without a second scan.
pub fn parse<'a, T: Members<'a>>(raw: &'a [u8], spans: Option<&'a Spans>) -> Read<T> {
    let text = simdutf8::basic::from_utf8(raw).map_err(|_| Malformed)?;
    let mut s = Skim::with_spans(text, spans);
    let t = obj(&mut s)?;
    s.end()?;
    Ok(t)
}

/// An array of `T`s read from a member kept as written (none when it is no array); `spans`
/// as for [`parse`].
pub fn parse_seq<'a, T: Members<'a>>(raw: Raw<'a>, spans: Option<&'a Spans>) -> Read<Vec<T>> {
    let mut s = Skim::with_spans(raw.get(), spans);
    let v = seq(&mut s)?;
    s.end()?;
    Ok(v)
}

pub fn is_null(v: &Raw<'_>) -> bool {
    v.get() == "null"
}

/// `,"name":value` when there is a value.
pub fn member(out: &mut Vec<u8>, name: &str, v: Option<Raw<'_>>) {
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
pub fn write_raw_or_null(out: &mut Vec<u8>, v: Option<Raw<'_>>) {
    out.extend_from_slice(v.map_or("null", Raw::get).as_bytes());
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
    fn member(&mut self, name: &str, s: &mut Skim<'de>) -> Read<()>;
}

/// The value at the reader as written.
pub fn raw<'de>(s: &mut Skim<'de>) -> Read<Option<Raw<'de>>> {
    s.peek()?;
    let from = s.pos();
    s.skip()?;
    Ok(Some(Raw(s.slice(from, s.pos()))))
}

pub fn skip(s: &mut Skim<'_>) -> Read<()> {
    s.skip()
}

/// A member of a type that reads any value (`StrOrSeq`).
pub fn value<'de, T: Members<'de>>(s: &mut Skim<'de>) -> Read<StrOrSeq<'de, T>> {
    Ok(match s.peek()? {
        b'"' => {
            let from = s.pos();
            s.string(true, None)?;
            // The text as the caller escaped it (checked): written back as it came.
            StrOrSeq::Text(Text::Escaped(s.slice(from + 1, s.pos() - 1)))
        }
        b'[' => StrOrSeq::Items(elements(s)?),
        b'{' => {
            s.skip_members()?;
            StrOrSeq::Other
        }
        _ => {
            s.scalar(true)?;
            StrOrSeq::Other
        }
    })
}

/// An array member of `T`s (none when it is no array).
pub fn seq<'de, T: Members<'de>>(s: &mut Skim<'de>) -> Read<Vec<T>> {
    match s.peek()? {
        b'[' => elements(s),
        b'{' => s.skip_members().map(|()| Vec::new()),
        _ => other(s).map(|()| Vec::new()),
    }
}

/// An object member of `T`'s members (empty when it is no object).
pub fn object<'de, T: Members<'de>>(s: &mut Skim<'de>) -> Read<Option<T>> {
    obj(s).map(Some)
}

/// A string member, leniently (another type is absent).
pub fn lenient<'de>(s: &mut Skim<'de>) -> Read<Option<Cow<'de, str>>> {
    match s.peek()? {
        b'"' => {
            let from = s.pos();
            let escaped = s.string(true, None)?;
            let quoted = s.slice(from, s.pos());
            Ok(Some(if escaped {
                Cow::Owned(serde_json::from_str(quoted).map_err(|_| Malformed)?)
            } else {
                Cow::Borrowed(&quoted[1..quoted.len() - 1])
            }))
        }
        b'{' => s.skip_members().map(|()| None),
        b'[' => s.skip_elements().map(|()| None),
        _ => s.scalar(true).map(|()| None),
    }
}

/// An object of `T`'s members; any other value reads as an empty object (a string or number
/// read for its value, an array's elements skipped, as a tree's reader visits them).
fn obj<'de, T: Members<'de>>(s: &mut Skim<'de>) -> Read<T> {
    let mut t = T::default();
    match s.peek()? {
        b'{' => {
            s.expect(b'{')?;
            let mut more = s.first(b'}')?;
            while more {
                let k = s.key()?;
                t.member(k.as_str(), s)?;
                more = s.next(b'}')?;
            }
        }
        b'[' => s.skip_elements()?,
        _ => other(s)?,
    }
    Ok(t)
}

/// An array's elements, each an object of `T`'s members.
fn elements<'de, T: Members<'de>>(s: &mut Skim<'de>) -> Read<Vec<T>> {
    s.expect(b'[')?;
    let mut v = Vec::new();
    let mut more = s.first(b']')?;
    while more {
        v.push(obj(s)?);
        more = s.next(b']')?;
    }
    Ok(v)
}

/// A string or scalar read for its value and dropped.
fn other(s: &mut Skim<'_>) -> Read<()> {
    if s.peek()? == b'"' {
        s.string(true, None).map(|_| ())
    } else {
        s.scalar(true)
    }
}

/// [`Members`] for a struct of borrowed fields: each JSON name, the field it sets and how its
/// value is read (`raw`, `lenient`, `value`, `seq`, `object`); other names are skipped. (In
/// the tests, the same for the oracle's serde reading.)
macro_rules! members {
    ($t:ident { $($name:literal => $field:ident: $read:ident),* $(,)? }) => {
        impl<'de> $crate::gateway::raw_json::Members<'de> for $t<'de> {
            fn member(
                &mut self,
                name: &str,
                s: &mut $crate::gateway::skim::Skim<'de>,
            ) -> $crate::gateway::skim::Read<()> {
                match name {
                    $($name => self.$field = $crate::gateway::raw_json::$read(s)?,)*
                    _ => $crate::gateway::raw_json::skip(s)?,
                }
                Ok(())
            }
        }
        #[cfg(test)]
        impl<'de> $crate::gateway::raw_json::oracle::Members<'de> for $t<'de> {
            fn member<A: serde::de::MapAccess<'de>>(
                &mut self,
                name: &str,
                a: &mut A,
            ) -> Result<(), A::Error> {
                match name {
                    $($name => self.$field = $crate::gateway::raw_json::oracle::$read(a)?,)*
                    _ => $crate::gateway::raw_json::oracle::skip(a)?,
                }
                Ok(())
            }
        }
    };
}
pub(crate) use members;
