//! A Messages request (Claude Code's) written as a chat request straight from its bytes, for
//! an upstream that speaks only chat. The caller's text is copied as the caller escaped it,
//! without the trees a translation used to build, clone, write and free (issue #26).
//!
//! The rules are those the translation always had: what chat has no place for is dropped
//! (`cache_control`, `thinking` settings, `metadata`, earlier thinking blocks); `role:
//! "system"` messages in the middle of the conversation (Claude Code sends them) stay where
//! they are, as chat system messages; a user turn's tool results become `tool` messages
//! first (as chat wants them right after the assistant's calls), its text and images one
//! user message; an assistant turn's tool uses become tool calls.

use std::borrow::Cow;

use serde_json::Value;

use super::raw_json::{
    self, Raw, StrOrSeq, Text, member, members, write_escaped, write_joined, write_joined_by,
    write_raw_or_null, write_value,
};
use super::skim::{Malformed, Spans};

/// The request's bytes (valid JSON: the gateway read them already, noting its long strings
/// in `spans`) as chat for `model`.
pub fn to_chat(raw: &[u8], spans: Option<&Spans>, model: &str) -> Result<Vec<u8>, Malformed> {
    let mut r: Req<'_> = raw_json::parse(raw, spans)?;
    r.spans = spans;
    Ok(write_chat(&r, raw.len(), model))
}

/// A request read from `len` bytes, written as chat.
fn write_chat(r: &Req<'_>, len: usize, model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 256);
    out.extend_from_slice(b"{\"model\":");
    write_escaped(&mut out, model);
    out.extend_from_slice(b",\"messages\":[");
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let system = texts_of(&r.system);
    if !(system.is_empty() || system.len() == 1 && system[0].is_empty()) {
        sep(&mut out);
        out.extend_from_slice(b"{\"role\":\"system\",\"content\":");
        write_joined(&mut out, &system);
        out.push(b'}');
    }
    for m in &r.messages {
        match m.role.as_deref().unwrap_or("user") {
            "assistant" => {
                sep(&mut out);
                assistant(&mut out, &m.content);
            }
            "system" => {
                sep(&mut out);
                out.extend_from_slice(b"{\"role\":\"system\",\"content\":");
                write_joined(&mut out, &texts_of(&m.content));
                out.push(b'}');
            }
            _ => user(&mut out, &m.content, r.spans, &mut sep),
        }
    }
    out.push(b']');
    for (name, v) in [
        ("max_tokens", r.max_tokens),
        ("temperature", r.temperature),
        ("top_p", r.top_p),
        ("stop", r.stop_sequences),
    ] {
        member(&mut out, name, v);
    }
    // Hosted tools (web search, code execution…) have no chat equivalent.
    let tools: Vec<&Tool<'_>> = r
        .tools
        .iter()
        .filter(|t| t.input_schema.is_some())
        .collect();
    if !tools.is_empty() {
        out.extend_from_slice(b",\"tools\":[");
        for (i, t) in tools.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
            write_raw_or_null(&mut out, t.name);
            out.extend_from_slice(b",\"description\":");
            out.extend_from_slice(t.description.map_or("\"\"", Raw::get).as_bytes());
            out.extend_from_slice(b",\"parameters\":");
            write_raw_or_null(&mut out, t.input_schema);
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    if let Some(choice) = r.tool_choice.and_then(tool_choice) {
        out.extend_from_slice(b",\"tool_choice\":");
        write_value(&mut out, &choice);
    }
    if r.stream.is_some_and(|s| s.get() == "true") {
        out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    }
    out.push(b'}');
    out
}

/// The request as a chat tree (the built-in mock and tests read trees); the model is the
/// request's own.
pub fn to_chat_tree(body: &Value) -> Value {
    raw_json::tree_through(body, |raw| to_chat(raw, None, "").ok())
}

/// An assistant turn: its text, and its tool uses as tool calls.
fn assistant(out: &mut Vec<u8>, content: &StrOrSeq<'_, Block<'_>>) {
    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
    let StrOrSeq::Items(blocks) = content else {
        write_joined(out, &texts_of(content));
        out.push(b'}');
        return;
    };
    let texts: Vec<Text<'_>> = blocks
        .iter()
        .filter(|b| b.kind.as_deref() == Some("text"))
        .filter_map(|b| b.text.and_then(Text::of_raw))
        .collect();
    if texts.iter().all(Text::is_empty) {
        out.extend_from_slice(b"null");
    } else {
        write_joined_by(out, &texts, b"");
    }
    let mut calls = blocks
        .iter()
        .filter(|b| b.kind.as_deref() == Some("tool_use"))
        .peekable();
    if calls.peek().is_some() {
        out.extend_from_slice(b",\"tool_calls\":[");
        for (i, b) in calls.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            write_raw_or_null(out, b.id);
            out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            write_raw_or_null(out, b.name);
            out.extend_from_slice(b",\"arguments\":");
            // The input as JSON text (as sent: compact from the SDKs).
            write_escaped(out, b.input.map_or("{}", Raw::get));
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// A user turn: its tool results as `tool` messages first, then its text and images as one
/// user message.
fn user<'a>(
    out: &mut Vec<u8>,
    content: &StrOrSeq<'a, Block<'a>>,
    spans: Option<&'a Spans>,
    sep: &mut impl FnMut(&mut Vec<u8>),
) {
    let StrOrSeq::Items(blocks) = content else {
        sep(out);
        out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
        write_joined(out, &texts_of(content));
        out.push(b'}');
        return;
    };
    for b in blocks
        .iter()
        .filter(|b| b.kind.as_deref() == Some("tool_result"))
    {
        sep(out);
        out.extend_from_slice(b"{\"role\":\"tool\",\"tool_call_id\":");
        write_raw_or_null(out, b.tool_use_id);
        out.extend_from_slice(b",\"content\":");
        match b.content {
            Some(c) if Text::of_raw(c).is_some() => out.extend_from_slice(c.get().as_bytes()),
            Some(c) => {
                let inner = raw_json::parse_seq::<Block<'_>>(c, spans).unwrap_or_default();
                let texts: Vec<Text<'_>> = inner
                    .iter()
                    .filter_map(|b| b.text.and_then(Text::of_raw))
                    .collect();
                write_joined(out, &texts);
            }
            None => out.extend_from_slice(b"\"\""),
        }
        out.push(b'}');
    }
    let parts: Vec<(&Block<'_>, Option<Image<'_>>)> = blocks
        .iter()
        .filter_map(|b| match b.kind.as_deref() {
            Some("text") => Some((b, None)),
            Some("image") => b
                .source
                .as_ref()
                .and_then(Source::image)
                .map(|i| (b, Some(i))),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        return;
    }
    sep(out);
    out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
    if parts.iter().all(|(_, image)| image.is_none()) {
        // A text block without text counts as an empty one.
        let texts: Vec<Text<'_>> = parts
            .iter()
            .filter_map(|(b, _)| b.text.map_or(Some(Text::Escaped("")), Text::of_raw))
            .collect();
        write_joined(out, &texts);
    } else {
        out.push(b'[');
        for (i, (b, image)) in parts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match image {
                None => {
                    out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                    out.extend_from_slice(b.text.map_or("\"\"", Raw::get).as_bytes());
                    out.push(b'}');
                }
                Some(image) => {
                    out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":\"");
                    image.write_inner(out);
                    out.extend_from_slice(b"\"}}");
                }
            }
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// The text of a string, or of blocks (their string `text`s); nothing for anything else.
fn texts_of<'a>(v: &StrOrSeq<'a, Block<'a>>) -> Vec<Text<'a>> {
    match v {
        StrOrSeq::Text(t) => vec![t.clone()],
        StrOrSeq::Items(blocks) => blocks
            .iter()
            .filter_map(|b| b.text.and_then(Text::of_raw))
            .collect(),
        StrOrSeq::Other => Vec::new(),
    }
}

fn tool_choice(raw: Raw<'_>) -> Option<Value> {
    let c: Value = serde_json::from_str(raw.get()).ok()?;
    match c.get("type").and_then(Value::as_str)? {
        "auto" => Some(Value::from("auto")),
        "any" => Some(Value::from("required")),
        "none" => Some(Value::from("none")),
        "tool" => {
            Some(serde_json::json!({"type": "function", "function": {"name": c.get("name")?}}))
        }
        _ => None,
    }
}

// ---- What is read ----

#[derive(Default)]
struct Req<'a> {
    system: StrOrSeq<'a, Block<'a>>,
    messages: Vec<Message<'a>>,
    max_tokens: Option<Raw<'a>>,
    temperature: Option<Raw<'a>>,
    top_p: Option<Raw<'a>>,
    stop_sequences: Option<Raw<'a>>,
    tools: Vec<Tool<'a>>,
    tool_choice: Option<Raw<'a>>,
    stream: Option<Raw<'a>>,
    /// The long strings the first reading noted, for members read again.
    spans: Option<&'a Spans>,
}

#[derive(Default)]
struct Message<'a> {
    role: Option<Cow<'a, str>>,
    content: StrOrSeq<'a, Block<'a>>,
}

/// A content block: text, image, tool use or tool result (others are read and dropped).
#[derive(Default)]
struct Block<'a> {
    kind: Option<Cow<'a, str>>,
    text: Option<Raw<'a>>,
    /// An image's.
    source: Option<Source<'a>>,
    /// A tool use's.
    id: Option<Raw<'a>>,
    name: Option<Raw<'a>>,
    input: Option<Raw<'a>>,
    /// A tool result's: a string or blocks (read again when blocks).
    tool_use_id: Option<Raw<'a>>,
    content: Option<Raw<'a>>,
}

#[derive(Default)]
struct Source<'a> {
    kind: Option<Cow<'a, str>>,
    media_type: Option<Raw<'a>>,
    data: Option<Raw<'a>>,
    url: Option<Raw<'a>>,
}

/// An image as chat wants it: a URL, or its data as a `data:` URL.
enum Image<'a> {
    Url(Text<'a>),
    Data {
        media_type: Text<'a>,
        data: Text<'a>,
    },
}

impl<'a> Source<'a> {
    fn image(&self) -> Option<Image<'a>> {
        let text = |v: Option<Raw<'a>>| v.and_then(Text::of_raw);
        match self.kind.as_deref()? {
            "base64" => Some(Image::Data {
                media_type: text(self.media_type)?,
                data: text(self.data)?,
            }),
            "url" => Some(Image::Url(text(self.url)?)),
            _ => None,
        }
    }
}

impl Image<'_> {
    fn write_inner(&self, out: &mut Vec<u8>) {
        match self {
            Image::Url(u) => u.write_inner(out),
            Image::Data { media_type, data } => {
                out.extend_from_slice(b"data:");
                media_type.write_inner(out);
                out.extend_from_slice(b";base64,");
                data.write_inner(out);
            }
        }
    }
}

#[derive(Default)]
struct Tool<'a> {
    name: Option<Raw<'a>>,
    description: Option<Raw<'a>>,
    input_schema: Option<Raw<'a>>,
}

members!(Req {
    "system" => system: value,
    "messages" => messages: seq,
    "max_tokens" => max_tokens: raw,
    "temperature" => temperature: raw,
    "top_p" => top_p: raw,
    "stop_sequences" => stop_sequences: raw,
    "tools" => tools: seq,
    "tool_choice" => tool_choice: raw,
    "stream" => stream: raw,
});

members!(Message {
    "role" => role: lenient,
    "content" => content: value,
});

members!(Block {
    "type" => kind: lenient,
    "text" => text: raw,
    "source" => source: object,
    "id" => id: raw,
    "name" => name: raw,
    "input" => input: raw,
    "tool_use_id" => tool_use_id: raw,
    "content" => content: raw,
});

members!(Source {
    "type" => kind: lenient,
    "media_type" => media_type: raw,
    "data" => data: raw,
    "url" => url: raw,
});

members!(Tool {
    "name" => name: raw,
    "description" => description: raw,
    "input_schema" => input_schema: raw,
});

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The translation as it was done on trees, before this module (the oracle).
    mod tree {
        use serde_json::{Map, Value, json};

        /// A Messages request as a chat-completions request. What chat has no place for is dropped
        /// (`cache_control`, `thinking` settings, `metadata`, earlier thinking blocks); `role:
        /// "system"` messages in the middle of the conversation (Claude Code sends them) stay where
        /// they are, as chat system messages.
        pub fn tree_to_chat(body: &Value) -> Value {
            let mut messages: Vec<Value> = Vec::new();
            if let Some(system) = body.get("system") {
                let text = text_of(system);
                if !text.is_empty() {
                    messages.push(json!({"role": "system", "content": text}));
                }
            }
            for m in body
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                let content = m.get("content").cloned().unwrap_or(Value::Null);
                match role {
                    "assistant" => messages.push(assistant_to_chat(&content)),
                    "system" => {
                        messages.push(json!({"role": "system", "content": text_of(&content)}))
                    }
                    _ => messages.extend(user_to_chat(&content)),
                }
            }
            let mut out = Map::new();
            out.insert(
                "model".into(),
                body.get("model").cloned().unwrap_or(Value::Null),
            );
            out.insert("messages".into(), Value::Array(messages));
            for (from, to) in [
                ("max_tokens", "max_tokens"),
                ("temperature", "temperature"),
                ("top_p", "top_p"),
                ("stop_sequences", "stop"),
            ] {
                if let Some(v) = body.get(from) {
                    out.insert(to.into(), v.clone());
                }
            }
            if let Some(tools) = body.get("tools").and_then(Value::as_array) {
                let fns: Vec<Value> = tools
                    .iter()
                    // Hosted tools (web search, code execution…) have no chat equivalent.
                    .filter(|t| t.get("input_schema").is_some())
                    .map(|t| {
                        json!({"type": "function", "function": {
                            "name": t.get("name").cloned().unwrap_or(Value::Null),
                            "description": t.get("description").cloned().unwrap_or(json!("")),
                            "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
                        }})
                    })
                    .collect();
                if !fns.is_empty() {
                    out.insert("tools".into(), Value::Array(fns));
                }
            }
            if let Some(choice) = body.get("tool_choice").and_then(tool_choice_to_chat) {
                out.insert("tool_choice".into(), choice);
            }
            if body.get("stream").and_then(Value::as_bool) == Some(true) {
                out.insert("stream".into(), Value::Bool(true));
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
            Value::Object(out)
        }

        fn tool_choice_to_chat(c: &Value) -> Option<Value> {
            match c.get("type").and_then(Value::as_str)? {
                "auto" => Some(json!("auto")),
                "any" => Some(json!("required")),
                "none" => Some(json!("none")),
                "tool" => Some(json!({"type": "function", "function": {"name": c.get("name")?}})),
                _ => None,
            }
        }

        /// The text of a string or of an array of blocks (their `text`, joined).
        fn text_of(v: &Value) -> String {
            match v {
                Value::String(s) => s.clone(),
                Value::Array(blocks) => blocks
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            }
        }

        /// A user turn: its tool results become `tool` messages (first, as chat wants them right
        /// after the assistant's calls), its text and images one user message.
        fn user_to_chat(content: &Value) -> Vec<Value> {
            let Value::Array(blocks) = content else {
                return vec![json!({"role": "user", "content": text_of(content)})];
            };
            let mut out = Vec::new();
            let mut parts = Vec::new();
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_result") => out.push(json!({
                        "role": "tool",
                        "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null),
                        "content": b.get("content").map(text_of).unwrap_or_default(),
                    })),
                    Some("text") => parts
                        .push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or(json!(""))})),
                    Some("image") => {
                        if let Some(url) = image_url(b) {
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                    }
                    _ => {}
                }
            }
            if !parts.is_empty() {
                let only_text = parts.iter().all(|p| p["type"] == "text");
                let content = if only_text {
                    json!(
                        parts
                            .iter()
                            .filter_map(|p| p["text"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                } else {
                    Value::Array(parts)
                };
                out.push(json!({"role": "user", "content": content}));
            }
            out
        }

        fn image_url(b: &Value) -> Option<String> {
            let src = b.get("source")?;
            match src.get("type").and_then(Value::as_str)? {
                "base64" => Some(format!(
                    "data:{};base64,{}",
                    src.get("media_type")?.as_str()?,
                    src.get("data")?.as_str()?
                )),
                "url" => Some(src.get("url")?.as_str()?.to_owned()),
                _ => None,
            }
        }

        /// An assistant turn: its text, and its tool uses as tool calls.
        fn assistant_to_chat(content: &Value) -> Value {
            let Value::Array(blocks) = content else {
                return json!({"role": "assistant", "content": text_of(content)});
            };
            let mut text = String::new();
            let mut calls = Vec::new();
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("tool_use") => calls.push(json!({
                        "id": b.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": b.get("name").cloned().unwrap_or(Value::Null),
                            "arguments": b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                        },
                    })),
                    _ => {}
                }
            }
            let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
            if !calls.is_empty() {
                m["tool_calls"] = Value::Array(calls);
            }
            m
        }
    }

    /// Both translations of `raw`, each written by serde_json from a tree (same escapes).
    fn both(raw: &str) -> (String, String) {
        let tree: Value = serde_json::from_str(raw).unwrap();
        let mut want = tree::tree_to_chat(&tree);
        want["model"] = json!("up-model");
        let got = to_chat(raw.as_bytes(), None, "up-model").unwrap();
        let got: Value = serde_json::from_slice(&got).unwrap();
        (
            serde_json::to_string(&got).unwrap(),
            serde_json::to_string(&want).unwrap(),
        )
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5000).prop_map(Value::from),
            Just(json!(0.5)),
            "[a-z]{0,6}".prop_map(Value::from),
            Just(json!({"k": [1, "v"]})),
        ]
    }

    fn text() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => "[a-z \\\\\"\\n\\t/é😀\\u{1}]{0,16}".prop_map(Value::from),
            1 => Just(json!("")),
            1 => leaf(),
        ]
    }

    fn source() -> impl Strategy<Value = Value> {
        prop_oneof![
            (text(), text())
                .prop_map(|(m, d)| json!({"type": "base64", "media_type": m, "data": d})),
            text().prop_map(|u| json!({"type": "url", "url": u})),
            Just(json!({"type": "file", "file_id": "f"})),
            leaf(),
        ]
    }

    fn block() -> impl Strategy<Value = Value> {
        let kind = prop_oneof![
            4 => Just("text"),
            2 => Just("tool_use"),
            2 => Just("tool_result"),
            2 => Just("image"),
            1 => prop::sample::select(vec!["thinking", "document", ""]),
        ];
        (
            kind,
            any::<[bool; 6]>(),
            (text(), source(), text(), text()),
            prop_oneof![Just(json!({"path": "a.rs", "n": 2})), leaf()],
            prop_oneof![
                2 => text(),
                2 => prop::collection::vec(
                    (text(), any::<bool>()).prop_map(|(t, typed)| if typed { json!({"type": "text", "text": t}) } else { json!({"text": t}) }),
                    0..3,
                ).prop_map(Value::from),
                1 => leaf(),
            ],
        )
            .prop_map(|(kind, has, (text, source, id, name), input, content)| {
                let mut b = json!({"type": kind, "cache_control": {"type": "ephemeral"}});
                if has[0] || kind == "text" && has[1] {
                    b["text"] = text;
                }
                if has[1] {
                    b["source"] = source;
                }
                if has[2] {
                    b["id"] = id.clone();
                    b["tool_use_id"] = id;
                }
                if has[3] {
                    b["name"] = name;
                }
                if has[4] {
                    b["input"] = input;
                }
                if has[5] {
                    b["content"] = content;
                }
                b
            })
    }

    fn content() -> impl Strategy<Value = Value> {
        prop_oneof![
            2 => text(),
            4 => prop::collection::vec(block(), 0..5).prop_map(Value::from),
            1 => leaf(),
        ]
    }

    fn message() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["user", "assistant", "system", "tool", ""]),
            any::<[bool; 2]>(),
            content(),
            leaf(),
        )
            .prop_map(|(role, has, content, odd)| {
                if !has[0] && !has[1] {
                    return odd; // a message that is no object
                }
                let mut m = json!({});
                if has[0] {
                    m["role"] = json!(role);
                }
                if has[1] {
                    m["content"] = content;
                }
                m
            })
    }

    fn tool() -> impl Strategy<Value = Value> {
        (
            any::<[bool; 3]>(),
            text(),
            text(),
            prop_oneof![Just(json!({"type": "object"})), leaf()],
        )
            .prop_map(|(has, name, description, schema)| {
                let mut t = json!({"type": "custom"});
                if has[0] {
                    t["name"] = name;
                }
                if has[1] {
                    t["description"] = description;
                }
                if has[2] {
                    t["input_schema"] = schema;
                }
                t
            })
    }

    fn request() -> impl Strategy<Value = Value> {
        (
            prop::option::of(content()),
            prop::option::of(prop_oneof![4 => prop::collection::vec(message(), 0..6).prop_map(Value::from), 1 => leaf()]),
            prop::option::of(prop_oneof![4 => prop::collection::vec(tool(), 0..3).prop_map(Value::from), 1 => leaf()]),
            prop::option::of(prop_oneof![
                Just(json!({"type": "auto"})),
                Just(json!({"type": "any"})),
                Just(json!({"type": "none"})),
                Just(json!({"type": "tool", "name": "f"})),
                Just(json!({"type": "tool"})),
                Just(json!({"type": "other"})),
                leaf(),
            ]),
            [prop::option::of(leaf()), prop::option::of(leaf()), prop::option::of(leaf()), prop::option::of(leaf()), prop::option::of(leaf())],
        )
            .prop_map(|(system, messages, tools, choice, [max, temp, top_p, stop, stream])| {
                let mut r = json!({"model": "claude-sonnet-4"});
                for (k, v) in [
                    ("system", system),
                    ("messages", messages),
                    ("tools", tools),
                    ("tool_choice", choice),
                    ("max_tokens", max),
                    ("temperature", temp),
                    ("top_p", top_p),
                    ("stop_sequences", stop),
                    ("stream", stream),
                ] {
                    if let Some(v) = v {
                        r[k] = v;
                    }
                }
                r
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        /// Bytes to bytes gives what the tree-to-tree translation gave, member order included.
        #[test]
        fn the_bytes_translate_as_the_tree_did(r in request()) {
            let raw = serde_json::to_string(&r).unwrap();
            let (got, want) = both(&raw);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn text_is_copied_as_the_caller_escaped_it() {
        let raw = r#"{"model":"m","system":[{"type":"text","text":"a\/b"},{"type":"text","text":"c"}],
            "messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"caf\u00e9"},
            {"type":"text","text":"x\"y"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA\/="}}]},
            {"role":"assistant","content":[{"type":"text","text":"p"},{"type":"text","text":"q"},{"type":"tool_use","id":"u","name":"f","input":{"a":"b"}}]}]}"#;
        let body = String::from_utf8(to_chat(raw.as_bytes(), None, "up").unwrap()).unwrap();
        assert!(
            body.contains(r#"{"role":"system","content":"a\/b\nc"}"#),
            "{body}"
        );
        assert!(body.contains(r#""content":"caf\u00e9""#), "{body}");
        assert!(
            body.contains(r#""url":"data:image/png;base64,AA\/=""#),
            "{body}"
        );
        assert!(body.contains(r#""content":"pq""#), "{body}");
        assert!(body.contains(r#""arguments":"{\"a\":\"b\"}""#), "{body}");
        let (got, want) = both(raw);
        assert_eq!(got, want);
        // Repeated names: the last wins, as in a tree.
        let (got, want) = both(
            r#"{"model":"m","messages":[{"role":"user","content":"a","content":"b"}],"system":"s","system":""}"#,
        );
        assert_eq!(got, want);
        assert!(
            got.contains(r#""messages":[{"role":"user","content":"b"}]"#),
            "{got}"
        );
        // A tool use's input is its JSON text as sent (the same JSON as a tree's, escapes
        // aside).
        let raw = r#"{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","id":"u","name":"f","input":{"a":"\u00e9"}}]}]}"#;
        let body = String::from_utf8(to_chat(raw.as_bytes(), None, "up").unwrap()).unwrap();
        assert!(
            body.contains(r#""arguments":"{\"a\":\"\\u00e9\"}""#),
            "{body}"
        );
        let chat: Value = serde_json::from_str(&body).unwrap();
        let args = chat["messages"][0]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"a": "é"})
        );
    }
}

/// The translation's reading on `skim` against serde_json's reading it replaced
/// (`raw_json::oracle`): the same bodies accepted and refused, the same chat written.
#[cfg(test)]
mod read_as_serde_did {
    use proptest::prelude::*;

    use super::*;
    use crate::gateway::raw_json::oracle::{self, bodies};

    /// The chat written from what each reading read (as a tree: the two may escape a text
    /// differently), or none when the reading refused the body.
    fn translate(body: &[u8], skim: bool) -> Option<Option<serde_json::Value>> {
        let read = if skim {
            raw_json::parse::<Req<'_>>(body, None).ok()
        } else {
            oracle::parse::<Req<'_>>(body).ok()
        };
        read.map(|r| bodies::tree(&write_chat(&r, body.len(), "m")))
    }

    /// Each kind occurs: bodies refused, and accepted ones translated into messages, tools
    /// and texts with escapes.
    #[test]
    fn the_generator_makes_every_kind() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut refused, mut messages, mut tools, mut escaped) = (0, 0, 0, 0);
        for _ in 0..2000 {
            let b = bodies::body(false).new_tree(&mut runner).unwrap().current();
            let Some(Some(chat)) = translate(&b, true) else {
                refused += 1;
                continue;
            };
            let n = |k: &str| chat[k].as_array().map_or(0, Vec::len);
            messages += usize::from(n("messages") > 1);
            tools += usize::from(n("tools") > 0);
            escaped += usize::from(chat.to_string().contains("\\n"));
        }
        assert!(
            refused > 300 && messages > 150 && tools > 80 && escaped > 150,
            "{refused} {messages} {tools} {escaped}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn translations_read_as_serde_read_them(body in bodies::body(false)) {
            prop_assert_eq!(
                translate(&body, true),
                translate(&body, false),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
