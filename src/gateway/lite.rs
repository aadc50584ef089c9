//! The big members of a request (`messages`, `tools`) read in one pass for what the gateway
//! needs of them — their shape, and the messages' text for the prompt estimate — without
//! building their JSON tree: for a coding agent's 64 KiB request the tree and its
//! allocations cost about as much as everything else the call does. The tree itself is
//! built later from the caller's bytes, and only if something needs it.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::tokens::Chars;

/// What one big member holds, as far as the gateway reads it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `null`.
    pub null: bool,
    /// A string.
    pub string: bool,
    /// An array (of `len` elements, all objects or not).
    pub array: bool,
    pub len: usize,
    pub all_objects: bool,
    /// The text the prompt estimate counts, as its [`Reading`] says; a member named twice
    /// counts its last value only.
    pub text: Chars,
}

/// The facts of the member `name` among `lite`.
pub fn member<'a>(lite: &'a [(&'static str, Facts)], name: &str) -> Option<&'a Facts> {
    lite.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// What the big members give the prompt estimate: their text, and how many `messages`
/// frame it (when it is an array).
pub fn prompt_text(lite: &[(&'static str, Facts)]) -> (Chars, Option<usize>) {
    let mut text = Chars::default();
    for (_, f) in lite {
        text.absorb(f.text);
    }
    let messages = member(lite, "messages").and_then(|f| f.array.then_some(f.len));
    (text, messages)
}

impl<'de> de::Deserialize<'de> for Facts {
    /// Read as `messages` is.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MESSAGES.deserialize(d)
    }
}

/// How a big member is read: which of its text the prompt estimate counts (the same text
/// `tokens::estimate_prompt` takes from the member's tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// A string's own text (Responses `input`).
    string: bool,
    /// An array's elements: their `content` (messages), the strings among them (`input`),
    /// or nothing (`tools`, `system`, `instructions`: their shape only).
    elements: Elements,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elements {
    Messages,
    Strings,
    Shape,
}

/// Chat and Messages `messages`: each element's `content`.
pub const MESSAGES: Reading = Reading {
    string: false,
    elements: Elements::Messages,
};

/// Responses `input`: a string, or the strings of an array (what the tree-based count
/// reads of a `prompt` or an `input`).
pub const INPUT: Reading = Reading {
    string: true,
    elements: Elements::Strings,
};

/// Shape only: `tools`, Messages `system`, Responses `instructions`.
pub const SHAPE: Reading = Reading {
    string: false,
    elements: Elements::Shape,
};

impl<'de> DeserializeSeed<'de> for Reading {
    type Value = Facts;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Facts, D::Error> {
        d.deserialize_any(self)
    }
}

/// Everything but the one kind a visitor reads gives `Default`, its contents skipped.
macro_rules! skip_the_rest {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The member itself: `null`, a string, an array of elements, or anything else.
impl<'de> Visitor<'de> for Reading {
    type Value = Facts;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Facts, E> {
        Ok(Facts::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Facts, E> {
        Ok(Facts::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Facts, E> {
        Ok(Facts::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Facts, E> {
        Ok(Facts::default())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Facts, E> {
        let mut f = Facts {
            string: true,
            ..Facts::default()
        };
        if self.string {
            f.text.add(s);
        }
        Ok(f)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Facts, E> {
        Ok(Facts {
            null: true,
            ..Facts::default()
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Facts, A::Error> {
        skip_map(a)?;
        Ok(Facts::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Facts, A::Error> {
        let mut f = Facts {
            array: true,
            all_objects: true,
            ..Facts::default()
        };
        loop {
            let element = match self.elements {
                Elements::Messages => a.next_element_seed(MESSAGE)?,
                Elements::Strings => a.next_element_seed(STRING)?,
                Elements::Shape => a.next_element_seed(OBJECT)?,
            };
            let Some((object, text)) = element else { break };
            f.len += 1;
            f.all_objects &= object;
            f.text.absorb(text);
        }
        Ok(f)
    }
}

/// An object's member `name`, read with `seed`: whether the value was an object, and what the
/// seed made of the member (its default when absent or not an object). A member named twice
/// counts as its last value, as a tree keeps it.
#[derive(Clone, Copy)]
struct Field<S> {
    name: &'static str,
    seed: S,
}

impl<'de, S> DeserializeSeed<'de> for Field<S>
where
    S: DeserializeSeed<'de> + Copy,
    S::Value: Default,
{
    type Value = (bool, S::Value);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S> Visitor<'de> for Field<S>
where
    S: DeserializeSeed<'de> + Copy,
    S::Value: Default,
{
    type Value = (bool, S::Value);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    skip_the_rest!();
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Default::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        skip_seq(a)?;
        Ok(Default::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut value = S::Value::default();
        while let Some(found) = a.next_key_seed(Named(self.name))? {
            if found {
                value = a.next_value_seed(self.seed)?;
            } else {
                a.next_value::<IgnoredAny>()?;
            }
        }
        Ok((true, value))
    }
}

/// A message: an object, and the text of its `content`.
const MESSAGE: Field<Text> = Field {
    name: "content",
    seed: Text { parts: true },
};

/// One part of a `content` array: an object's `text`, when it is a string.
const PART: Field<Text> = Field {
    name: "text",
    seed: Text { parts: false },
};

/// An element of a list read for whether it is an object, and (`strings`) its text when it
/// is a string (an `input` array's).
#[derive(Clone, Copy)]
struct Element {
    strings: bool,
}

impl<'de> DeserializeSeed<'de> for Element {
    type Value = (bool, Chars);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element {
    type Value = (bool, Chars);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    skip_the_rest!();
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        let mut c = Chars::default();
        if self.strings {
            c.add(s);
        }
        Ok((false, c))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        skip_seq(a)?;
        Ok(Default::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        skip_map(a)?;
        Ok((true, Chars::default()))
    }
}

const STRING: Element = Element { strings: true };
const OBJECT: Element = Element { strings: false };

/// Whether a key is the one looked for (`content` in a message, `text` in a part), read
/// without allocating.
struct Named(&'static str);

impl<'de> DeserializeSeed<'de> for Named {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Named {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        Ok(s == self.0)
    }
}

/// Text counted: a string; with `parts` (a message's `content`), also an array of parts with
/// `text` (a part's `text` is a string or nothing).
#[derive(Clone, Copy)]
struct Text {
    parts: bool,
}

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Chars;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Chars, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Chars;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    skip_the_rest!();
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Chars, E> {
        let mut c = Chars::default();
        c.add(s);
        Ok(c)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Chars, A::Error> {
        skip_map(a)?;
        Ok(Chars::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Chars, A::Error> {
        let mut c = Chars::default();
        if !self.parts {
            skip_seq(a)?;
            return Ok(c);
        }
        while let Some((_, text)) = a.next_element_seed(PART)? {
            c.absorb(text);
        }
        Ok(c)
    }
}
