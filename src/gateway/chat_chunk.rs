//! A chat stream's chunk as the gateway reads it, borrowed from the event's text and read
//! once for everything that looks at it: the meter (usage and text) and the translators into
//! Messages or Responses events. A tree of each chunk cost a Claude Code stream translated
//! from chat about a third of its instructions.
//!
//! Its leaves are read leniently, as a tree's `as_str` / `as_i64` would be: a member of
//! another type than expected counts as absent instead of making the chunk unreadable.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
pub struct ChatChunk<'a> {
    #[serde(default, borrow, deserialize_with = "text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "integer")]
    pub created: Option<i64>,
    #[serde(default, borrow)]
    pub choices: Option<Vec<Choice<'a>>>,
    /// Sent once, in the last chunk: kept whole for the translators' usage objects.
    #[serde(default)]
    pub usage: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Choice<'a> {
    #[serde(default, borrow)]
    pub delta: Option<Delta<'a>>,
    /// Completions' text.
    #[serde(default, borrow, deserialize_with = "text")]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta<'a> {
    #[serde(default, borrow, deserialize_with = "text")]
    pub content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCall<'a> {
    #[serde(default, deserialize_with = "integer")]
    pub index: Option<i64>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub function: Option<Function<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Function<'a> {
    #[serde(default, borrow, deserialize_with = "text")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub arguments: Option<Cow<'a, str>>,
}

impl<'a> ChatChunk<'a> {
    /// The chunk read from an event's `data`; `None` when it is no JSON object of this
    /// shape.
    pub fn parse(data: &'a str) -> Option<Self> {
        // A derived struct also reads a JSON array, by position.
        if !data.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(data).ok()
    }

    /// The first choice, the one the translators follow.
    pub fn first(&self) -> Option<&Choice<'a>> {
        self.choices.as_deref().and_then(<[_]>::first)
    }

    /// The usage object, when it is one.
    pub fn usage_object(&self) -> Option<&Value> {
        self.usage.as_ref().filter(|u| u.is_object())
    }
}

/// A string member; anything else is absent.
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    d.deserialize_any(Leaf::<Cow<'de, str>>::default())
}

/// An integer member (as `Value::as_i64` reads one); anything else is absent.
fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(Leaf::<i64>::default())
}

/// Reads one leaf of type `T`, skipping a value of any other type.
struct Leaf<T>(std::marker::PhantomData<T>);

impl<T> Default for Leaf<T> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

/// What a leaf visitor does with a value not of its type: it is absent, its contents
/// skipped.
macro_rules! absent_unless {
    ($($f:ident($t:ty)),*) => {
        $(fn $f<E: de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Ok(None)
        })*
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    };
}

impl<'de> Visitor<'de> for Leaf<Cow<'de, str>> {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(s)))
    }
    absent_unless!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64)
    );
}

impl<'de> Visitor<'de> for Leaf<i64> {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).ok())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    absent_unless!(visit_bool(bool), visit_f64(f64));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_chunk_is_read_borrowed_and_leniently() {
        let data = r#"{"id":"c1","created":7,"choices":[{"index":0,"delta":{"content":"a\"b","reasoning_content":null,"tool_calls":[{"index":1,"id":"t","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":null}"#;
        let c = ChatChunk::parse(data).unwrap();
        assert_eq!((c.id.as_deref(), c.created), (Some("c1"), Some(7)));
        let first = c.first().unwrap();
        let d = first.delta.as_ref().unwrap();
        assert_eq!(d.content.as_deref(), Some("a\"b"));
        assert_eq!(d.reasoning_content, None);
        let call = &d.tool_calls.as_ref().unwrap()[0];
        assert_eq!((call.index, call.id.as_deref()), (Some(1), Some("t")));
        let f = call.function.as_ref().unwrap();
        assert_eq!(
            (f.name.as_deref(), f.arguments.as_deref()),
            (Some("f"), Some("{}"))
        );
        assert_eq!(first.finish_reason.as_deref(), Some("stop"));
        assert!(c.usage_object().is_none());
        // Leaves of another type are absent, as a tree's `as_str` / `as_i64` reads them.
        let odd = r#"{"id":5,"created":1.5,"choices":[{"delta":{"content":["x"],"reasoning_content":{"a":1}},"finish_reason":false}],"usage":{"prompt_tokens":1}}"#;
        let c = ChatChunk::parse(odd).unwrap();
        assert_eq!((&c.id, c.created), (&None, None));
        let d = c.first().unwrap().delta.as_ref().unwrap();
        assert_eq!((&d.content, &d.reasoning_content), (&None, &None));
        assert_eq!(c.usage_object(), Some(&json!({"prompt_tokens": 1})));
        // Read from a tree, the same.
        let tree: Value = serde_json::from_str(data).unwrap();
        let c = ChatChunk::deserialize(&tree).unwrap();
        assert_eq!(
            c.first()
                .unwrap()
                .delta
                .as_ref()
                .unwrap()
                .content
                .as_deref(),
            Some("a\"b")
        );
        assert!(ChatChunk::parse("[1]").is_none());
    }
}
