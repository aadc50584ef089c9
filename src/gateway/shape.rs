//! The shape of the request fields the gateway reads or translates, per caller protocol:
//! one table that both checks a request (a wrong type is a 400 naming the field, before any
//! upstream is asked) and writes the JSON Schema the OpenAPI document shows for the field, so
//! the two cannot disagree. Fields not listed are forwarded as sent.

use serde_json::{Map, Value, json};

use super::call::CallError;
use super::endpoint::Endpoint;
use super::lite::Facts;

/// What one field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A string.
    Text,
    /// A non-empty list of objects (chat and Messages `messages`).
    Objects,
    /// A list of objects, possibly empty (`tools`).
    ObjectList,
    /// A string, or a non-empty list of strings, of token ids, or of token-id lists
    /// (completions `prompt`, embeddings `input`).
    TextOrTokens,
    /// A string or a list of objects (Messages `system`, Responses `input`).
    TextOrObjects,
}

impl Kind {
    pub fn accepts(self, v: &Value) -> bool {
        let objects = |a: &Vec<Value>| a.iter().all(Value::is_object);
        match self {
            Kind::Bool => v.is_boolean(),
            Kind::Text => v.is_string(),
            Kind::Objects => v.as_array().is_some_and(|a| !a.is_empty() && objects(a)),
            Kind::ObjectList => v.as_array().is_some_and(objects),
            Kind::TextOrTokens => match v {
                Value::String(_) => true,
                Value::Array(a) if !a.is_empty() => {
                    a.iter().all(Value::is_string)
                        || a.iter().all(Value::is_i64)
                        || a.iter().all(|t| {
                            t.as_array()
                                .is_some_and(|t| !t.is_empty() && t.iter().all(Value::is_i64))
                        })
                }
                _ => false,
            },
            Kind::TextOrObjects => v.is_string() || v.as_array().is_some_and(objects),
        }
    }

    /// [`Kind::accepts`] on a big member read for its facts (`stages::read`); `None` for
    /// `null`. Lists of objects, strings, or either are read so (`messages`, `tools`,
    /// Messages `system`, Responses `input` and `instructions`); no other kind is.
    pub fn accepts_facts(self, f: &Facts) -> Option<bool> {
        if f.null {
            return None;
        }
        Some(match self {
            Kind::Objects => f.array && f.len > 0 && f.all_objects,
            Kind::ObjectList => f.array && f.all_objects,
            Kind::Text => f.string,
            Kind::TextOrObjects => f.string || (f.array && f.all_objects),
            Kind::Bool | Kind::TextOrTokens => false,
        })
    }

    /// What the refusal says the field must be.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean",
            Kind::Text => "a string",
            Kind::Objects => "a non-empty array of objects",
            Kind::ObjectList => "an array of objects",
            Kind::TextOrTokens => {
                "a string, or a non-empty array of strings, of integers or of integer arrays"
            }
            Kind::TextOrObjects => "a string or an array of objects",
        }
    }

    /// The field's JSON Schema (`nullable`: an optional field may also be `null`).
    pub fn schema(self, nullable: bool) -> Value {
        let object = json!({"type": "object"});
        let mut s = match self {
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Text => json!({"type": "string"}),
            Kind::Objects => json!({"type": "array", "items": object, "minItems": 1}),
            Kind::ObjectList => json!({"type": "array", "items": object}),
            Kind::TextOrTokens => json!({"oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                {"type": "array", "minItems": 1, "items":
                    {"type": "array", "items": {"type": "integer"}, "minItems": 1}},
            ]}),
            Kind::TextOrObjects => json!({"oneOf": [
                {"type": "string"},
                {"type": "array", "items": object},
            ]}),
        };
        if nullable {
            s = match s {
                Value::Object(mut m) if m.contains_key("oneOf") => {
                    if let Some(Value::Array(a)) = m.get_mut("oneOf") {
                        a.push(json!({"type": "null"}));
                    }
                    Value::Object(m)
                }
                Value::Object(mut m) => {
                    let t = m.remove("type").unwrap_or(Value::Null);
                    m.insert("type".into(), json!([t, "null"]));
                    Value::Object(m)
                }
                other => other,
            };
        }
        s
    }
}

/// One checked field of a protocol's request.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const CHAT: &[Field] = &[req("messages", Kind::Objects), opt("stream", Kind::Bool)];
const COMPLETIONS: &[Field] = &[req("prompt", Kind::TextOrTokens), opt("stream", Kind::Bool)];
const EMBEDDINGS: &[Field] = &[req("input", Kind::TextOrTokens)];
const MESSAGES: &[Field] = &[
    req("messages", Kind::Objects),
    opt("system", Kind::TextOrObjects),
    opt("stream", Kind::Bool),
    opt("tools", Kind::ObjectList),
];
const RESPONSES: &[Field] = &[
    req("input", Kind::TextOrObjects),
    opt("instructions", Kind::Text),
    opt("stream", Kind::Bool),
    opt("tools", Kind::ObjectList),
];

/// The checked fields of each caller endpoint (besides `model` and the token counts, which
/// `stages::read` reads itself).
pub fn fields(endpoint: Endpoint) -> &'static [Field] {
    match endpoint {
        Endpoint::Chat => CHAT,
        Endpoint::Completions => COMPLETIONS,
        Endpoint::Embeddings => EMBEDDINGS,
        Endpoint::Messages => MESSAGES,
        Endpoint::Responses => RESPONSES,
    }
}

/// The field's schema as the document shows it.
pub fn field_schema(endpoint: Endpoint, name: &str) -> Value {
    fields(endpoint)
        .iter()
        .find(|f| f.name == name)
        .map_or(Value::Null, |f| f.kind.schema(!f.required))
}

/// Refuses a request whose checked fields have the wrong shape (an optional one may be
/// absent or `null`).
/// Checks the fields the gateway reads; `lite` holds the big members read for their facts
/// only (see `stages::read`).
pub fn check(
    endpoint: Endpoint,
    map: &Map<String, Value>,
    lite: &[(&'static str, Facts)],
) -> Result<(), CallError> {
    for f in fields(endpoint) {
        let ok = match (map.get(f.name), super::lite::member(lite, f.name)) {
            (_, Some(facts)) => f.kind.accepts_facts(facts).unwrap_or(!f.required),
            (None | Some(Value::Null), None) => !f.required,
            (Some(v), None) => f.kind.accepts(v),
        };
        if !ok {
            return Err(CallError::BadField {
                field: f.name,
                expected: f.kind.expected(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_accept_what_the_protocols_send_and_nothing_else() {
        let t = Kind::TextOrTokens;
        for ok in [
            json!("hi"),
            json!(["a", "b"]),
            json!([1, 2]),
            json!([[1], [2, 3]]),
        ] {
            assert!(t.accepts(&ok), "{ok}");
        }
        for bad in [
            json!({}),
            json!([]),
            json!([null, null]),
            json!(["a", 1]),
            json!([[]]),
            json!(1),
        ] {
            assert!(!t.accepts(&bad), "{bad}");
        }
        assert!(Kind::Objects.accepts(&json!([{"role": "user"}])));
        assert!(!Kind::Objects.accepts(&json!([])));
        assert!(!Kind::ObjectList.accepts(&json!([[null, null]])));
        assert!(Kind::TextOrObjects.accepts(&json!([{"type": "text"}])));
        assert!(!Kind::TextOrObjects.accepts(&json!({})));
        assert!(!Kind::Bool.accepts(&json!({})));
    }

    #[test]
    fn optional_fields_may_be_null_required_ones_may_not() {
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(
            check(
                Endpoint::Chat,
                &map(json!({"messages": [{}], "stream": null})),
                &[]
            )
            .is_ok()
        );
        assert!(check(Endpoint::Chat, &map(json!({"messages": null})), &[]).is_err());
        assert!(
            check(
                Endpoint::Chat,
                &map(json!({"messages": [{}], "stream": {}})),
                &[]
            )
            .is_err()
        );
        assert_eq!(
            field_schema(Endpoint::Chat, "stream"),
            json!({"type": ["boolean", "null"]})
        );
    }

    /// A big member read for its facts is held to the same shape as its tree.
    #[test]
    fn facts_are_checked_like_trees() {
        use super::super::lite;
        for (kind, text) in [
            (Kind::Objects, r#"[{"role":"user"}, {}]"#),
            (Kind::Objects, "[]"),
            (Kind::Objects, r#"[{"a":1}, 2]"#),
            (Kind::Objects, r#"{"a":1}"#),
            (Kind::Objects, r#""text""#),
            (Kind::Objects, "[[{}]]"),
            (Kind::ObjectList, "[]"),
            (Kind::ObjectList, r#"[ {"type":"function"} ]"#),
            (Kind::ObjectList, r#"[[null]]"#),
            (Kind::ObjectList, r#""tools""#),
            (Kind::ObjectList, "5"),
            (Kind::ObjectList, "true"),
            (Kind::Text, r#""you are \"careful\"""#),
            (Kind::Text, r#"["a"]"#),
            (Kind::Text, "{}"),
            (Kind::Text, "1"),
            (Kind::TextOrObjects, r#""hello""#),
            (Kind::TextOrObjects, "[]"),
            (Kind::TextOrObjects, r#"[{"type":"text","text":"x"}]"#),
            (Kind::TextOrObjects, r#"[{"type":"text"}, "x"]"#),
            (Kind::TextOrObjects, r#"["a","b"]"#),
            (Kind::TextOrObjects, r#"{"type":"text"}"#),
            (Kind::TextOrObjects, "false"),
        ] {
            let tree: Value = serde_json::from_str(text).unwrap();
            for reading in [lite::MESSAGES, lite::INPUT, lite::SHAPE] {
                let facts = reading.read_str(text).unwrap();
                assert_eq!(
                    kind.accepts_facts(&facts),
                    Some(kind.accepts(&tree)),
                    "{text}"
                );
            }
        }
        let read = |t: &str| lite::MESSAGES.read_str(t).unwrap();
        let null = read("null");
        assert_eq!(Kind::Objects.accepts_facts(&null), None);
        let empty = Map::new();
        assert!(check(Endpoint::Chat, &empty, &[("messages", null)]).is_err());
        let msgs = read(r#"[{"role":"user"}]"#);
        assert!(check(Endpoint::Chat, &empty, &[("messages", msgs)]).is_ok());
    }
}
