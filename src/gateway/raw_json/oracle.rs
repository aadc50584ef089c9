//! The translation's reading as it was on serde_json, before it ran on `skim`: the oracle
//! `raw_json`'s reading is held to (what it accepts and refuses, and what it reads).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::values::{Raw, StrOrSeq, Text};
use crate::gateway::chat_chunk::text;

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

/// An object of `T`'s members read from a request's bytes.
pub fn parse<'a, T: Members<'a>>(raw: &'a [u8]) -> Result<T, serde_json::Error> {
    let text = std::str::from_utf8(raw).map_err(<serde_json::Error as de::Error>::custom)?;
    serde_json::from_str::<Obj<T>>(text).map(|o| o.0)
}

/// An object read member by member; `member` reads the value of a name it knows and
/// skips the rest.
pub trait Members<'de>: Default {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, a: &mut A) -> Result<(), A::Error>;
}

pub fn raw<'de, A: MapAccess<'de>>(a: &mut A) -> Result<Option<Raw<'de>>, A::Error> {
    a.next_value::<&'de RawValue>().map(|v| Some(Raw(v.get())))
}

pub fn skip<'de, A: MapAccess<'de>>(a: &mut A) -> Result<(), A::Error> {
    a.next_value::<IgnoredAny>().map(|_| ())
}

/// A member of a type that reads any value (`StrOrSeq`).
pub fn value<'de, A: MapAccess<'de>, T: Members<'de>>(
    a: &mut A,
) -> Result<StrOrSeq<'de, T>, A::Error> {
    a.next_value::<Either<'de, T>>().map(|e| e.0)
}

/// An array member of `T`s (none when it is no array).
pub fn seq<'de, A: MapAccess<'de>, T: Members<'de>>(a: &mut A) -> Result<Vec<T>, A::Error> {
    a.next_value::<Seq<T>>().map(|s| s.0)
}

/// An object member of `T`'s members (empty when it is no object).
pub fn object<'de, A: MapAccess<'de>, T: Members<'de>>(a: &mut A) -> Result<Option<T>, A::Error> {
    a.next_value::<Obj<T>>().map(|o| Some(o.0))
}

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

/// [`StrOrSeq`] read through serde.
struct Either<'a, T>(StrOrSeq<'a, T>);

impl<'de, T: Members<'de>> Deserialize<'de> for Either<'de, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrSeqVisitor(PhantomData)).map(Either)
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

/// Requests shaped as Claude Code's and Codex's (every name the translations read, the
/// values they switch on), with the odd strings and numbers of `stages`' generator, each also
/// cut short or with one byte changed: what the translation tests hold both readings to.
pub mod bodies {
    use proptest::prelude::*;

    use crate::gateway::stages::read_as_serde_did::{spoiled, string as odd_string};

    /// A string mostly well formed (escapes of every kind, code, text past ASCII), sometimes
    /// one of `stages`' generator (a lone surrogate, a bad escape, a control byte…).
    fn string() -> BoxedStrategy<String> {
        let part = prop::sample::select(vec![
            "fn main() {\\n    println!(\\\"hi\\\");\\n}\\n",
            "hello ",
            "日本語",
            "é",
            "🦀",
            "\\u00e9",
            "\\uD83E\\uDD80",
            "\\t",
            "\\/",
            "",
        ]);
        let good = prop::collection::vec(part, 0..4).prop_map(|p| format!("\"{}\"", p.concat()));
        prop_oneof![40 => good, 1 => odd_string()].boxed()
    }

    const NAMES: &[&str] = &[
        "system",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "source",
        "media_type",
        "data",
        "url",
        "id",
        "name",
        "input",
        "tool_use_id",
        "tools",
        "description",
        "input_schema",
        "tool_choice",
        "stream",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "instructions",
        "call_id",
        "arguments",
        "output",
        "image_url",
        "parameters",
        "max_output_tokens",
        "metadata",
        "parallel_tool_calls",
        "previous_response_id",
        "reasoning",
        "format",
        "t\\u0065xt",
        "t\\ud800",
    ];

    const WORDS: &[&str] = &[
        "text",
        "image",
        "tool_use",
        "tool_result",
        "base64",
        "url",
        "message",
        "function_call",
        "function_call_output",
        "input_text",
        "output_text",
        "input_image",
        "function",
        "namespace",
        "user",
        "assistant",
        "system",
        "developer",
        "tool",
        "auto",
        "required",
        "json_object",
        "json_schema",
        "assist\\u0061nt",
        "t\\u0065xt",
        "\\udc00x",
    ];

    fn value() -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            30 => string(),
            30 => prop::sample::select(WORDS.to_vec()).prop_map(|w| format!("\"{w}\"")),
            10 => prop::sample::select(vec!["true", "false", "null", "0", "-1", "2.5", "100"])
                .prop_map(str::to_owned),
            1 => prop::sample::select(vec!["1e400", "-1e999", "01", "1.", "tru"])
                .prop_map(str::to_owned),
        ];
        leaf.prop_recursive(5, 80, 6, |inner| {
            let ws = prop_oneof![Just(""), Just(" "), Just("\n ")];
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..5), ws.clone())
                    .prop_map(|(v, w)| format!("[{w}{}]", v.join(&format!(",{w}")))),
                (
                    prop::collection::vec((prop::sample::select(NAMES.to_vec()), inner), 0..6),
                    ws
                )
                    .prop_map(|(kv, w)| {
                        let m: Vec<String> = kv
                            .iter()
                            .map(|(k, v)| format!("\"{k}\"{w}:{w}{v}"))
                            .collect();
                        format!("{{{w}{}{w}}}", m.join(","))
                    }),
            ]
        })
        .boxed()
    }

    fn word() -> BoxedStrategy<String> {
        prop::sample::select(WORDS.to_vec())
            .prop_map(|w| format!("\"{w}\""))
            .boxed()
    }

    /// A string mostly, anything else sometimes.
    fn text() -> BoxedStrategy<String> {
        prop_oneof![8 => string(), 1 => word(), 1 => value()].boxed()
    }

    /// A word mostly (the values the translations switch on), anything else sometimes.
    fn kind() -> BoxedStrategy<String> {
        prop_oneof![8 => word(), 1 => value(), 1 => odd_string()].boxed()
    }

    /// An array of `item`s, and sometimes of something else.
    fn list(item: BoxedStrategy<String>, most: usize) -> BoxedStrategy<String> {
        prop::collection::vec(prop_oneof![8 => item, 1 => value()], 0..most)
            .prop_map(|v| format!("[{}]", v.join(",")))
            .boxed()
    }

    /// An object of some of `fields` (each there or not, sometimes twice), and sometimes a
    /// member of another name.
    fn object(fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
        let members: Vec<BoxedStrategy<Vec<String>>> = fields
            .into_iter()
            .map(|(name, v)| {
                prop::collection::vec(v.prop_map(move |v| format!("\"{name}\":{v}")), 0..3)
                    .prop_map(|mut v| {
                        // Mostly once or not at all.
                        v.truncate(if v.len() == 2 { 1 } else { v.len() });
                        v
                    })
                    .boxed()
            })
            .collect();
        let other = prop::option::weighted(
            0.2,
            (prop::sample::select(NAMES.to_vec()), value())
                .prop_map(|(k, v)| format!("\"{k}\":{v}")),
        );
        (members, other)
            .prop_map(|(m, o)| {
                let mut all: Vec<String> = m.into_iter().flatten().collect();
                all.extend(o);
                format!("{{{}}}", all.join(","))
            })
            .boxed()
    }

    fn messages_body() -> BoxedStrategy<String> {
        let source = object(vec![
            ("type", kind()),
            ("media_type", text()),
            ("data", text()),
            ("url", text()),
        ]);
        let inner = object(vec![("type", kind()), ("text", text())]);
        let block = object(vec![
            ("type", kind()),
            ("text", text()),
            ("source", source),
            ("id", text()),
            ("name", text()),
            ("input", value()),
            ("tool_use_id", text()),
            ("content", prop_oneof![text(), list(inner, 3)].boxed()),
        ]);
        let content = prop_oneof![2 => text(), 3 => list(block.clone(), 4)].boxed();
        let message = object(vec![("role", kind()), ("content", content)]);
        let tool = object(vec![
            ("name", text()),
            ("description", text()),
            ("input_schema", value()),
        ]);
        object(vec![
            ("system", prop_oneof![text(), list(block, 3)].boxed()),
            ("messages", list(message, 6)),
            ("max_tokens", value()),
            ("temperature", value()),
            ("top_p", value()),
            ("stop_sequences", value()),
            ("tools", list(tool, 3)),
            (
                "tool_choice",
                object(vec![("type", kind()), ("name", text())]),
            ),
            ("stream", value()),
        ])
    }

    fn responses_body() -> BoxedStrategy<String> {
        let part = object(vec![
            ("type", kind()),
            ("text", text()),
            ("image_url", text()),
        ]);
        let content = prop_oneof![text(), list(part.clone(), 3)].boxed();
        let item = object(vec![
            ("type", kind()),
            ("role", kind()),
            ("content", content),
            ("call_id", text()),
            ("name", text()),
            ("arguments", text()),
            ("output", prop_oneof![text(), list(part, 2)].boxed()),
        ]);
        // Mostly the tools a chat upstream is given.
        let tool_kind = || {
            prop_oneof![
                3 => Just("\"function\"".to_owned()),
                1 => Just("\"namespace\"".to_owned()),
                1 => kind(),
            ]
            .boxed()
        };
        let function = || {
            vec![
                ("type", tool_kind()),
                ("name", text()),
                ("description", text()),
                ("parameters", value()),
            ]
        };
        let mut namespace = function();
        namespace.push(("tools", list(object(function()), 2)));
        let tool = object(namespace);
        let format = object(vec![
            ("type", kind()),
            ("name", text()),
            ("schema", value()),
        ]);
        object(vec![
            ("instructions", text()),
            ("input", prop_oneof![text(), list(item, 6)].boxed()),
            ("max_output_tokens", value()),
            ("metadata", value()),
            ("parallel_tool_calls", value()),
            ("previous_response_id", value()),
            ("reasoning", value()),
            ("temperature", value()),
            ("text", object(vec![("format", format)])),
            (
                "tool_choice",
                prop_oneof![kind(), object(vec![("type", kind()), ("name", text())])].boxed(),
            ),
            ("tools", list(tool, 3)),
            ("top_p", value()),
            ("stream", value()),
        ])
    }

    /// A Messages request (`responses`: a Responses one), or an object of any names, each
    /// also cut short or with one byte changed or added.
    pub fn body(responses: bool) -> impl Strategy<Value = Vec<u8>> {
        let shaped = if responses {
            responses_body()
        } else {
            messages_body()
        };
        let names = prop::collection::vec((prop::sample::select(NAMES.to_vec()), value()), 0..6)
            .prop_map(|kv| {
                let m: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", m.join(","))
            });
        let text = prop_oneof![6 => shaped, 1 => names].prop_map(|t| format!(" {t} "));
        spoiled(text, 10)
    }

    /// A translation's bytes as a tree (texts may be escaped differently by the two readings).
    pub fn tree(out: &[u8]) -> Option<serde_json::Value> {
        serde_json::from_slice(out).ok()
    }
}
