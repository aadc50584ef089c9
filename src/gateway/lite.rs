//! The big members of a request (`messages`, `tools`, Messages `system`, Responses `input`
//! and `instructions`) read in one pass for what the gateway needs of them — their shape,
//! and their text for the prompt estimate — without
//! building their JSON tree: for a coding agent's 64 KiB request the tree and its
//! allocations cost about as much as everything else the call does. The tree itself is
//! built later from the caller's bytes, and only if something needs it.

use super::skim::{Read, Skim};
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

/// How a big member is read: which of its text the prompt estimate counts (the same text
/// `tokens::estimate_prompt` takes from the member's tree).
#[derive(Clone, Copy)]
pub struct Reading {
    /// A string's own text (Messages `system`, Responses `input` and `instructions`).
    string: bool,
    /// How an array's elements are read.
    elements: Element,
}

/// Chat and Messages `messages`: each element's `content`.
pub const MESSAGES: Reading = Reading {
    string: false,
    elements: MESSAGE,
};

/// Messages `system`: a string, or text blocks.
pub const SYSTEM: Reading = Reading {
    string: true,
    elements: PART,
};

/// Responses `input`: a string, or items (messages, function calls and their outputs).
pub const INPUT: Reading = Reading {
    string: true,
    elements: ITEM,
};

/// Responses `instructions`: a string.
pub const INSTRUCTIONS: Reading = Reading {
    string: true,
    elements: OBJECT,
};

/// Shape only: `tools`.
pub const SHAPE: Reading = Reading {
    string: false,
    elements: OBJECT,
};

impl Reading {
    /// The member's value at the reader.
    pub fn read(self, s: &mut Skim<'_>) -> Read<Facts> {
        match s.peek()? {
            b'n' => {
                s.scalar(true)?;
                Ok(Facts {
                    null: true,
                    ..Facts::default()
                })
            }
            b'"' => {
                let mut f = Facts {
                    string: true,
                    ..Facts::default()
                };
                s.string(true, self.string.then_some(&mut f.text))?;
                Ok(f)
            }
            b'[' => {
                s.expect(b'[')?;
                let mut f = Facts {
                    array: true,
                    all_objects: true,
                    ..Facts::default()
                };
                let mut more = s.first(b']')?;
                while more {
                    let (object, text) = self.elements.read(s)?;
                    f.len += 1;
                    f.all_objects &= object;
                    f.text.absorb(text);
                    more = s.next(b']')?;
                }
                Ok(f)
            }
            b'{' => {
                s.skip_members()?;
                Ok(Facts::default())
            }
            _ => {
                s.scalar(true)?;
                Ok(Facts::default())
            }
        }
    }

    /// The facts of one JSON value (tests).
    #[cfg(test)]
    pub fn read_str(self, text: &str) -> Option<Facts> {
        let mut s = Skim::new(text);
        let f = self.read(&mut s).ok()?;
        s.end().ok()?;
        Some(f)
    }
}

/// How a text member's value is counted.
#[derive(Clone, Copy)]
enum Text {
    /// A string only.
    Plain,
    /// A string, or parts (see [`PART`]).
    Content,
}

impl Text {
    fn read(self, s: &mut Skim<'_>) -> Read<Chars> {
        let mut c = Chars::default();
        match (s.peek()?, self) {
            (b'"', _) => {
                s.string(true, Some(&mut c))?;
            }
            (b'{', _) => s.skip_members()?,
            (b'[', Text::Plain) => s.skip_elements()?,
            (b'[', Text::Content) => {
                s.expect(b'[')?;
                let mut more = s.first(b']')?;
                while more {
                    c.absorb(PART.read(s)?.1);
                    more = s.next(b']')?;
                }
            }
            _ => s.scalar(true)?,
        }
        Ok(c)
    }
}

/// An element of a list: whether it is an object, and the text of its members named in
/// `fields` (each counted as its last value, as a tree keeps a member named twice), or
/// (`strings`) its own text when it is a string.
#[derive(Clone, Copy)]
struct Element {
    fields: &'static [(&'static str, Text)],
    strings: bool,
}

impl Element {
    fn read(self, s: &mut Skim<'_>) -> Read<(bool, Chars)> {
        let mut c = Chars::default();
        match s.peek()? {
            b'"' => {
                s.string(true, self.strings.then_some(&mut c))?;
                Ok((false, c))
            }
            b'[' => {
                s.skip_elements()?;
                Ok((false, c))
            }
            b'{' => {
                s.expect(b'{')?;
                let mut last = [Chars::default(); MAX_FIELDS];
                let mut more = s.first(b'}')?;
                while more {
                    let k = s.key()?;
                    match self.fields.iter().position(|(n, _)| *n == k.as_str()) {
                        Some(i) => last[i] = self.fields[i].1.read(s)?,
                        None => s.skip()?,
                    }
                    more = s.next(b'}')?;
                }
                last.iter().for_each(|t| c.absorb(*t));
                Ok((true, c))
            }
            _ => {
                s.scalar(true)?;
                Ok((false, c))
            }
        }
    }
}

/// The most text members an element reads (its counts are kept on the stack).
const MAX_FIELDS: usize = 3;
const _: () = assert!(
    MESSAGE.fields.len() <= MAX_FIELDS
        && PART.fields.len() <= MAX_FIELDS
        && ITEM.fields.len() <= MAX_FIELDS
);

/// A message: its `content`.
const MESSAGE: Element = Element {
    fields: &[("content", Text::Content)],
    strings: false,
};

/// A part of a `content` (or a Messages `system` block): its `text`, and its own `content`
/// (a `tool_result`'s output: a string or parts again).
const PART: Element = Element {
    fields: &[("text", Text::Plain), ("content", Text::Content)],
    strings: false,
};

/// A Responses `input` item: a string; a message's `content`; a function call's `arguments`
/// and its output's `output`.
const ITEM: Element = Element {
    fields: &[
        ("content", Text::Content),
        ("output", Text::Content),
        ("arguments", Text::Plain),
    ],
    strings: true,
};

/// An element read for its shape only.
const OBJECT: Element = Element {
    fields: &[],
    strings: false,
};

/// The reading as serde_json made it before [`Skim`]: the oracle the tests hold the reader
/// to (what each accepts, refuses and counts).
#[cfg(test)]
pub mod oracle {
    use std::fmt;

    use serde::de::{
        self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };

    use super::{Chars, Element, Facts, MAX_FIELDS, PART, Reading, Text};

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
            while let Some((object, text)) = a.next_element_seed(self.elements)? {
                f.len += 1;
                f.all_objects &= object;
                f.text.absorb(text);
            }
            Ok(f)
        }
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
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut last = [Chars::default(); MAX_FIELDS];
            while let Some(found) = a.next_key_seed(KeyIn(self.fields))? {
                match found {
                    Some(i) => last[i] = a.next_value_seed(self.fields[i].1)?,
                    None => {
                        a.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let mut c = Chars::default();
            last.iter().for_each(|t| c.absorb(*t));
            Ok((true, c))
        }
    }

    /// Which of `fields` a key names, read without allocating.
    struct KeyIn(&'static [(&'static str, Text)]);

    impl<'de> DeserializeSeed<'de> for KeyIn {
        type Value = Option<usize>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl Visitor<'_> for KeyIn {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(self.0.iter().position(|(n, _)| *n == s))
        }
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
            if let Text::Plain = self {
                skip_seq(a)?;
                return Ok(c);
            }
            while let Some((_, text)) = a.next_element_seed(PART)? {
                c.absorb(text);
            }
            Ok(c)
        }
    }
}
