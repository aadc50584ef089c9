//! A Responses request (Codex CLI's) written as a chat request straight from its bytes, for an
//! upstream that speaks only chat, and the settings its response repeats. The caller's text
//! is copied as the caller escaped it: a Codex request is tens of KiB of conversation, and
//! building its tree, cloning its strings into a chat tree, escaping them again and freeing
//! both trees cost most of such a call (issue #26).
//!
//! The rules are those the translation always had: `instructions` and `developer` /
//! `system` items become system messages where they stand; `function_call` items join the
//! assistant turn they belong to (parallel calls in one message, as chat wants);
//! `function_call_output` items become `tool` messages. What chat has no place for is
//! dropped: hosted tools (web search…), reasoning items and settings, `store`, `include`,
//! `prompt_cache_key`, `metadata`.
//!
//! Members are read as a tree reads them: the last of a repeated name wins, and a member of
//! another type than expected counts as absent.

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::raw_json::{
    self, Raw, StrOrSeq, Text, is_null, member, members, write_escaped, write_joined,
    write_raw_or_null, write_value,
};
use super::skim::{Malformed, Spans};

/// A Responses request as chat: the body to send, and what the response repeats of it.
pub struct ChatRequest {
    pub body: Vec<u8>,
    pub echo: Echo,
}

/// The request's bytes (valid JSON: the gateway read them already) as chat for `model`.
pub fn to_chat(raw: &[u8], spans: Option<&Spans>, model: &str) -> Result<ChatRequest, Malformed> {
    let mut r: Req<'_> = raw_json::parse(raw, spans)?;
    r.spans = spans;
    write_chat(&r, raw.len(), model)
}

/// A request read from `len` bytes, written as chat.
fn write_chat(r: &Req<'_>, len: usize, model: &str) -> Result<ChatRequest, Malformed> {
    let mut out = Vec::with_capacity(len + 256);
    out.extend_from_slice(b"{\"model\":");
    write_escaped(&mut out, model);
    out.extend_from_slice(b",\"messages\":[");
    let instructions = r.instructions.and_then(Text::of_raw);
    let messages = conversation(r, &instructions);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        m.write(&mut out);
    }
    out.push(b']');
    for (name, v) in [
        ("max_tokens", r.max_output_tokens),
        ("temperature", r.temperature),
        ("top_p", r.top_p),
    ] {
        member(&mut out, name, v.filter(|v| !is_null(v)));
    }
    let tools = match r.tools {
        Some(t) => tools(t, r.spans)?,
        None => Vec::new(),
    };
    if tools.is_empty() {
        // Without tools a chat upstream refuses `parallel_tool_calls`.
    } else {
        member(
            &mut out,
            "parallel_tool_calls",
            r.parallel_tool_calls.filter(|v| !is_null(v)),
        );
        out.extend_from_slice(b",\"tools\":[");
        for (i, t) in tools.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            t.write(&mut out);
        }
        out.push(b']');
        if let Some(choice) = r.tool_choice.and_then(tool_choice) {
            out.extend_from_slice(b",\"tool_choice\":");
            write_value(&mut out, &choice);
        }
    }
    if let Some(format) = r.text.and_then(response_format) {
        out.extend_from_slice(b",\"response_format\":");
        write_value(&mut out, &format);
    }
    if r.stream.is_some_and(|s| s.get() == "true") {
        out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    }
    out.push(b'}');
    Ok(ChatRequest {
        body: out,
        echo: Echo::of(r),
    })
}

/// The request as a chat tree (the built-in mock and tests read trees); the model is the
/// request's own.
pub fn to_chat_tree(body: &Value) -> Value {
    raw_json::tree_through(body, |raw| to_chat(raw, None, "").ok().map(|c| c.body))
}

/// The fields of a response that repeat what was asked (the SDKs read them back), each as
/// the caller wrote it: a Codex request's `instructions` and `tools` are repeated in every
/// response object of a stream.
#[derive(Debug, Clone)]
pub struct Echo(Vec<(&'static str, Cow<'static, RawValue>)>);

/// The echoed settings in the order a response lists them, with their defaults.
const ECHOED: [(&str, &str); 11] = [
    ("instructions", "null"),
    ("max_output_tokens", "null"),
    ("metadata", "{}"),
    ("parallel_tool_calls", "true"),
    ("previous_response_id", "null"),
    ("reasoning", "null"),
    ("temperature", "null"),
    ("text", r#"{"format":{"type":"text"}}"#),
    ("tool_choice", "\"auto\""),
    ("tools", "[]"),
    ("top_p", "null"),
];

impl Echo {
    fn of(r: &Req<'_>) -> Self {
        let given = [
            r.instructions,
            r.max_output_tokens,
            r.metadata,
            r.parallel_tool_calls,
            r.previous_response_id,
            r.reasoning,
            r.temperature,
            r.text,
            r.tool_choice,
            r.tools,
            r.top_p,
        ];
        let mut fields = Vec::with_capacity(ECHOED.len() + 2);
        for ((name, default), v) in ECHOED.iter().zip(given) {
            let raw = match v.filter(|v| !is_null(v)) {
                // Checked again as serde_json reads it (a `RawValue` is only made by reading
                // one); the settings are small beside the `input`.
                Some(v) => Cow::Owned(
                    RawValue::from_string(v.get().to_owned())
                        .unwrap_or_else(|_| RawValue::NULL.to_owned()),
                ),
                None => raw_static(default),
            };
            fields.push((*name, raw));
        }
        fields.push(("truncation", raw_static("\"disabled\"")));
        fields.push(("store", raw_static("false")));
        Self(fields)
    }

    /// The echo of a request given as a tree (the built-in mock, tests).
    pub fn of_tree(request: &Value) -> Self {
        let raw = serde_json::to_vec(request).unwrap_or_default();
        match raw_json::parse::<Req<'_>>(&raw, None) {
            Ok(r) => Self::of(&r),
            Err(_) => Self::of(&Req::default()),
        }
    }

    /// The echoed settings as tree members.
    pub fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| {
                let v = serde_json::from_str(v.get()).unwrap_or(Value::Null);
                ((*k).to_owned(), v)
            })
            .collect()
    }
}

impl Serialize for Echo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v.as_ref())?;
        }
        m.end()
    }
}

/// One of [`ECHOED`]'s defaults (valid JSON by construction; `null` if ever not).
fn raw_static(json: &'static str) -> Cow<'static, RawValue> {
    match serde_json::from_str::<&'static RawValue>(json) {
        Ok(r) => Cow::Borrowed(r),
        Err(_) => Cow::Owned(RawValue::NULL.to_owned()),
    }
}

// ---- What is read ----

#[derive(Default)]
struct Req<'a> {
    instructions: Option<Raw<'a>>,
    input: StrOrSeq<'a, Item<'a>>,
    max_output_tokens: Option<Raw<'a>>,
    metadata: Option<Raw<'a>>,
    parallel_tool_calls: Option<Raw<'a>>,
    previous_response_id: Option<Raw<'a>>,
    reasoning: Option<Raw<'a>>,
    temperature: Option<Raw<'a>>,
    text: Option<Raw<'a>>,
    tool_choice: Option<Raw<'a>>,
    tools: Option<Raw<'a>>,
    top_p: Option<Raw<'a>>,
    stream: Option<Raw<'a>>,
    /// The long strings the first reading noted, for members read again.
    spans: Option<&'a Spans>,
}

#[derive(Default)]
struct Item<'a> {
    kind: Option<Cow<'a, str>>,
    role: Option<Cow<'a, str>>,
    content: Content<'a>,
    call_id: Option<Raw<'a>>,
    name: Option<Raw<'a>>,
    arguments: Option<Raw<'a>>,
    output: Option<Raw<'a>>,
}

/// A message's content: a string, or parts.
type Content<'a> = StrOrSeq<'a, Part<'a>>;

#[derive(Default)]
struct Part<'a> {
    kind: Option<Cow<'a, str>>,
    text: Option<Raw<'a>>,
    image_url: Option<Raw<'a>>,
}

#[derive(Default)]
struct Tool<'a> {
    kind: Option<Cow<'a, str>>,
    name: Option<Raw<'a>>,
    description: Option<Raw<'a>>,
    parameters: Option<Raw<'a>>,
    tools: Option<Raw<'a>>,
}

members!(Req {
    "instructions" => instructions: raw,
    "input" => input: value,
    "max_output_tokens" => max_output_tokens: raw,
    "metadata" => metadata: raw,
    "parallel_tool_calls" => parallel_tool_calls: raw,
    "previous_response_id" => previous_response_id: raw,
    "reasoning" => reasoning: raw,
    "temperature" => temperature: raw,
    "text" => text: raw,
    "tool_choice" => tool_choice: raw,
    "tools" => tools: raw,
    "top_p" => top_p: raw,
    "stream" => stream: raw,
});

members!(Item {
    "type" => kind: lenient,
    "role" => role: lenient,
    "content" => content: value,
    "call_id" => call_id: raw,
    "name" => name: raw,
    "arguments" => arguments: raw,
    "output" => output: raw,
});

members!(Part {
    "type" => kind: lenient,
    "text" => text: raw,
    "image_url" => image_url: raw,
});

members!(Tool {
    "type" => kind: lenient,
    "name" => name: raw,
    "description" => description: raw,
    "parameters" => parameters: raw,
    "tools" => tools: raw,
});

/// A member read again from its raw text (a rare shape: an `output` given as parts).
fn parts_of(v: Raw<'_>) -> Vec<Part<'_>> {
    // (Rare: read again without the first reading's spans.)
    raw_json::parse_seq::<Part<'_>>(v, None).unwrap_or_default()
}

// ---- What is written ----

/// A chat message, borrowing the request's text.
struct Message<'r, 'a> {
    role: &'static str,
    body: Body<'r, 'a>,
    /// Calls made in this (assistant) turn.
    calls: Vec<&'r Item<'a>>,
}

enum Body<'r, 'a> {
    /// The `instructions`.
    Text(&'r Text<'a>),
    /// A message's text (its parts' texts joined).
    Content(&'r Content<'a>),
    /// A user's message: its text, or parts when it carries images.
    User(&'r Content<'a>),
    Null,
    /// A tool's answer to a call.
    Tool {
        id: Option<Raw<'a>>,
        output: Option<Raw<'a>>,
    },
}

impl Message<'_, '_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"role\":\"");
        out.extend_from_slice(self.role.as_bytes());
        out.extend_from_slice(b"\",");
        match &self.body {
            Body::Text(t) => {
                out.extend_from_slice(b"\"content\":");
                write_joined(out, [*t]);
            }
            Body::Content(c) => {
                out.extend_from_slice(b"\"content\":");
                write_content(out, c);
            }
            Body::User(c) => {
                out.extend_from_slice(b"\"content\":");
                match c {
                    StrOrSeq::Items(p)
                        if p.iter().any(|p| p.kind.as_deref() == Some("input_image")) =>
                    {
                        write_parts(out, p);
                    }
                    _ => write_content(out, c),
                }
            }
            Body::Null => out.extend_from_slice(b"\"content\":null"),
            Body::Tool { id, output } => {
                out.extend_from_slice(b"\"tool_call_id\":");
                write_raw_or_null(out, *id);
                out.extend_from_slice(b",\"content\":");
                match output {
                    Some(o) if Text::of_raw(*o).is_some() => {
                        out.extend_from_slice(o.get().as_bytes())
                    }
                    Some(o) => {
                        let parts = parts_of(*o);
                        let texts: Vec<Text<'_>> = part_texts(&parts).collect();
                        write_joined(out, &texts);
                    }
                    None => out.extend_from_slice(b"\"\""),
                }
            }
        }
        if !self.calls.is_empty() {
            out.extend_from_slice(b",\"tool_calls\":[");
            for (i, c) in self.calls.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"id\":");
                write_raw_or_null(out, c.call_id);
                out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                write_raw_or_null(out, c.name);
                out.extend_from_slice(b",\"arguments\":");
                match c.arguments.filter(|a| Text::of_raw(*a).is_some()) {
                    Some(a) => out.extend_from_slice(a.get().as_bytes()),
                    None => out.extend_from_slice(b"\"{}\""),
                }
                out.extend_from_slice(b"}}");
            }
            out.push(b']');
        }
        out.push(b'}');
    }
}

/// A string's text, or its parts' texts joined (`""` for anything else).
fn write_content(out: &mut Vec<u8>, c: &Content<'_>) {
    match c {
        StrOrSeq::Text(t) => write_joined(out, [t]),
        StrOrSeq::Items(parts) => {
            let texts: Vec<Text<'_>> = part_texts(parts).collect();
            write_joined(out, &texts);
        }
        StrOrSeq::Other => out.extend_from_slice(b"\"\""),
    }
}

/// A user's parts with images, as chat parts.
fn write_parts(out: &mut Vec<u8>, parts: &[Part<'_>]) {
    out.push(b'[');
    let mut first = true;
    for p in parts {
        let start = out.len();
        if !first {
            out.push(b',');
        }
        match p.kind.as_deref() {
            Some("input_text" | "text") => {
                out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                out.extend_from_slice(p.text.map_or("\"\"", Raw::get).as_bytes());
                out.push(b'}');
            }
            Some("input_image") if p.image_url.and_then(Text::of_raw).is_some() => {
                out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
                out.extend_from_slice(p.image_url.map_or("\"\"", Raw::get).as_bytes());
                out.extend_from_slice(b"}}");
            }
            _ => {
                out.truncate(start);
                continue;
            }
        }
        first = false;
    }
    out.push(b']');
}

/// The strings among parts' `text`s.
fn part_texts<'r, 'a>(parts: &'r [Part<'a>]) -> impl Iterator<Item = Text<'a>> + 'r {
    parts.iter().filter_map(|p| p.text.and_then(Text::of_raw))
}

/// The chat conversation: the instructions, then the items in order.
fn conversation<'r, 'a>(
    r: &'r Req<'a>,
    instructions: &'r Option<Text<'a>>,
) -> Vec<Message<'r, 'a>> {
    let mut messages: Vec<Message<'r, 'a>> = Vec::new();
    if let Some(i) = instructions
        && !matches!(i, Text::Escaped(""))
    {
        messages.push(Message {
            role: "system",
            body: Body::Text(i),
            calls: Vec::new(),
        });
    }
    match &r.input {
        StrOrSeq::Text(t) => messages.push(Message {
            role: "user",
            body: Body::Text(t),
            calls: Vec::new(),
        }),
        StrOrSeq::Items(items) => {
            for item in items {
                push_item(&mut messages, item);
            }
        }
        StrOrSeq::Other => {}
    }
    messages
}

/// One `input` item onto the chat conversation.
fn push_item<'r, 'a>(messages: &mut Vec<Message<'r, 'a>>, item: &'r Item<'a>) {
    match item.kind.as_deref().unwrap_or("message") {
        "message" => {
            let (role, body) = match item.role.as_deref().unwrap_or("user") {
                "assistant" => ("assistant", Body::Content(&item.content)),
                "system" | "developer" => ("system", Body::Content(&item.content)),
                _ => ("user", Body::User(&item.content)),
            };
            messages.push(Message {
                role,
                body,
                calls: Vec::new(),
            });
        }
        // Calls made in one turn share one assistant message.
        "function_call" => match messages.last_mut() {
            Some(last) if last.role == "assistant" => last.calls.push(item),
            _ => messages.push(Message {
                role: "assistant",
                body: Body::Null,
                calls: vec![item],
            }),
        },
        "function_call_output" => messages.push(Message {
            role: "tool",
            body: Body::Tool {
                id: item.call_id,
                output: item.output,
            },
            calls: Vec::new(),
        }),
        // Reasoning items, hosted tool calls and the like have no chat equivalent.
        _ => {}
    }
}

/// Function tools as chat tools; a `namespace` tool's functions are listed as themselves.
/// Hosted tools (`web_search`, `file_search`…) have no chat equivalent and are dropped.
fn tools<'a>(raw: Raw<'a>, spans: Option<&'a Spans>) -> Result<Vec<Tool<'a>>, Malformed> {
    let mut out = Vec::new();
    for t in raw_json::parse_seq::<Tool<'_>>(raw, spans)? {
        match t.kind.as_deref() {
            Some("function") => out.push(t),
            Some("namespace") => {
                if let Some(inner) = t.tools {
                    out.extend(tools(inner, spans)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Tool<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
        write_raw_or_null(out, self.name);
        out.extend_from_slice(b",\"description\":");
        out.extend_from_slice(self.description.map_or("\"\"", Raw::get).as_bytes());
        out.extend_from_slice(b",\"parameters\":");
        out.extend_from_slice(
            self.parameters
                .map_or(r#"{"type":"object"}"#, Raw::get)
                .as_bytes(),
        );
        out.extend_from_slice(b"}}");
    }
}

fn tool_choice(raw: Raw<'_>) -> Option<Value> {
    let c: Value = serde_json::from_str(raw.get()).ok()?;
    match &c {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => Some(c),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Some(serde_json::json!({"type": "function", "function": {"name": o.get("name")?}}))
        }
        _ => None,
    }
}

/// `text.format` as chat's `response_format`.
fn response_format(raw: Raw<'_>) -> Option<Value> {
    let text: Value = serde_json::from_str(raw.get()).ok()?;
    let f = text.get("format")?;
    match f.get("type").and_then(Value::as_str)? {
        "json_object" => Some(serde_json::json!({"type": "json_object"})),
        "json_schema" => Some(serde_json::json!({"type": "json_schema", "json_schema": {
            "name": f.get("name").cloned().unwrap_or(serde_json::json!("output")),
            "schema": f.get("schema").cloned().unwrap_or(serde_json::json!({})),
            "strict": f.get("strict").cloned().unwrap_or(Value::Bool(false)),
        }})),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The translation as it was done on trees, before this module (the oracle).
    mod tree {
        use serde_json::{Map, Value, json};

        /// A Responses request as a chat-completions request. `instructions` and `developer` /
        /// `system` items become system messages where they stand; `function_call` items join the
        /// assistant turn they belong to (parallel calls in one message, as chat wants);
        /// `function_call_output` items become `tool` messages. What chat has no place for is
        /// dropped: hosted tools (web search…), reasoning items and settings, `store`, `include`,
        /// `prompt_cache_key`, `metadata`.
        pub fn tree_to_chat(body: &Value) -> Value {
            let mut messages: Vec<Value> = Vec::new();
            if let Some(i) = body.get("instructions").and_then(Value::as_str)
                && !i.is_empty()
            {
                messages.push(json!({"role": "system", "content": i}));
            }
            match body.get("input") {
                Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
                Some(Value::Array(items)) => {
                    for item in items {
                        push_item(&mut messages, item);
                    }
                }
                _ => {}
            }
            let mut out = Map::new();
            out.insert(
                "model".into(),
                body.get("model").cloned().unwrap_or(Value::Null),
            );
            out.insert("messages".into(), Value::Array(messages));
            for (from, to) in [
                ("max_output_tokens", "max_tokens"),
                ("temperature", "temperature"),
                ("top_p", "top_p"),
                ("parallel_tool_calls", "parallel_tool_calls"),
            ] {
                if let Some(v) = body.get(from).filter(|v| !v.is_null()) {
                    out.insert(to.into(), v.clone());
                }
            }
            let tools = tools_to_chat(body.get("tools"));
            if !tools.is_empty() {
                out.insert("tools".into(), Value::Array(tools));
                if let Some(choice) = body.get("tool_choice").and_then(tool_choice_to_chat) {
                    out.insert("tool_choice".into(), choice);
                }
            } else {
                // Without tools a chat upstream refuses `parallel_tool_calls`.
                out.remove("parallel_tool_calls");
            }
            if let Some(format) = body.pointer("/text/format").and_then(format_to_chat) {
                out.insert("response_format".into(), format);
            }
            if body.get("stream").and_then(Value::as_bool) == Some(true) {
                out.insert("stream".into(), Value::Bool(true));
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
            Value::Object(out)
        }

        /// One `input` item onto the chat conversation.
        fn push_item(messages: &mut Vec<Value>, item: &Value) {
            let kind = item
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("message");
            match kind {
                "message" => {
                    let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                    let content = item.get("content").unwrap_or(&Value::Null);
                    match role {
                        "assistant" => {
                            messages.push(json!({"role": "assistant", "content": text_of(content)}))
                        }
                        "system" | "developer" => {
                            messages.push(json!({"role": "system", "content": text_of(content)}));
                        }
                        _ => {
                            messages.push(json!({"role": "user", "content": user_content(content)}))
                        }
                    }
                }
                "function_call" => {
                    let call = json!({
                        "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": item.get("name").cloned().unwrap_or(Value::Null),
                            "arguments": item.get("arguments").and_then(Value::as_str).unwrap_or("{}"),
                        },
                    });
                    // Calls made in one turn share one assistant message.
                    match messages.last_mut() {
                        Some(last) if last["role"] == "assistant" => {
                            if !last["tool_calls"].is_array() {
                                last["tool_calls"] = json!([]);
                            }
                            if let Some(calls) = last["tool_calls"].as_array_mut() {
                                calls.push(call);
                            }
                        }
                        _ => messages.push(
                            json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                        ),
                    }
                }
                "function_call_output" => messages.push(json!({
                    "role": "tool",
                    "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "content": match item.get("output") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => text_of(v),
                        None => String::new(),
                    },
                })),
                // Reasoning items, hosted tool calls and the like have no chat equivalent.
                _ => {}
            }
        }

        /// A user message's content: its text, or parts when it carries images.
        fn user_content(content: &Value) -> Value {
            let Value::Array(parts) = content else {
                return Value::String(text_of(content));
            };
            let has_image = parts.iter().any(|p| p["type"] == "input_image");
            if !has_image {
                return Value::String(text_of(content));
            }
            let chat: Vec<Value> = parts
                .iter()
                .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("input_text") | Some("text") => {
                        Some(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))}))
                    }
                    Some("input_image") => p
                        .get("image_url")
                        .and_then(Value::as_str)
                        .map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
                    _ => None,
                })
                .collect();
            Value::Array(chat)
        }

        /// The text of a string or of an array of content parts (their `text`, joined).
        fn text_of(v: &Value) -> String {
            match v {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            }
        }

        /// Function tools as chat tools; a `namespace` tool's functions are listed as themselves.
        /// Hosted tools (`web_search`, `file_search`…) have no chat equivalent and are dropped.
        fn tools_to_chat(tools: Option<&Value>) -> Vec<Value> {
            let mut out = Vec::new();
            for t in tools.and_then(Value::as_array).into_iter().flatten() {
                match t.get("type").and_then(Value::as_str) {
                    Some("function") => out.push(json!({"type": "function", "function": {
                        "name": t.get("name").cloned().unwrap_or(Value::Null),
                        "description": t.get("description").cloned().unwrap_or(json!("")),
                        "parameters": t.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
                    }})),
                    Some("namespace") => out.extend(tools_to_chat(t.get("tools"))),
                    _ => {}
                }
            }
            out
        }

        fn tool_choice_to_chat(c: &Value) -> Option<Value> {
            match c {
                Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
                    Some(c.clone())
                }
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                    Some(json!({"type": "function", "function": {"name": o.get("name")?}}))
                }
                _ => None,
            }
        }

        /// `text.format` as chat's `response_format`.
        fn format_to_chat(f: &Value) -> Option<Value> {
            match f.get("type").and_then(Value::as_str)? {
                "json_object" => Some(json!({"type": "json_object"})),
                "json_schema" => Some(json!({"type": "json_schema", "json_schema": {
                    "name": f.get("name").cloned().unwrap_or(json!("output")),
                    "schema": f.get("schema").cloned().unwrap_or(json!({})),
                    "strict": f.get("strict").cloned().unwrap_or(Value::Bool(false)),
                }})),
                _ => None,
            }
        }

        /// The echoed settings as they were read from the tree.
        pub fn echo(request: &Value) -> Map<String, Value> {
            let mut m = Map::new();
            for (k, default) in [
                ("instructions", Value::Null),
                ("max_output_tokens", Value::Null),
                ("metadata", json!({})),
                ("parallel_tool_calls", Value::Bool(true)),
                ("previous_response_id", Value::Null),
                ("reasoning", Value::Null),
                ("temperature", Value::Null),
                ("text", json!({"format": {"type": "text"}})),
                ("tool_choice", json!("auto")),
                ("tools", json!([])),
                ("top_p", Value::Null),
            ] {
                m.insert(
                    k.into(),
                    request
                        .get(k)
                        .cloned()
                        .filter(|v| !v.is_null())
                        .unwrap_or(default),
                );
            }
            m.insert("truncation".into(), json!("disabled"));
            m.insert("store".into(), Value::Bool(false));
            m
        }
    }

    /// Both translations of `raw`, each written by serde_json from a tree (same escapes).
    fn both(raw: &str) -> (String, String) {
        let tree: Value = serde_json::from_str(raw).unwrap();
        let mut want = tree::tree_to_chat(&tree);
        want["model"] = json!("up-model");
        let got = to_chat(raw.as_bytes(), None, "up-model").unwrap();
        let got: Value = serde_json::from_slice(&got.body).unwrap();
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
            // Escapes, quotes, newlines, non-ASCII and a control character.
            "[a-z\\\\\"\\n\\t/é😀\\u{1}]{0,12}".prop_map(Value::from),
        ]
    }

    fn text() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => "[a-z \\\\\"\\né]{0,16}".prop_map(Value::from),
            1 => leaf(),
        ]
    }

    fn part() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec![
                "input_text",
                "output_text",
                "text",
                "input_image",
                "refusal",
                "",
            ]),
            prop::option::of(text()),
            prop::option::of(text()),
            any::<bool>(),
        )
            .prop_map(|(kind, text, url, typed)| {
                let mut p = json!({});
                if typed {
                    p["type"] = json!(kind);
                }
                if let Some(t) = text {
                    p["text"] = t;
                }
                if let Some(u) = url {
                    p["image_url"] = u;
                }
                p
            })
    }

    fn content() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => text(),
            3 => prop::collection::vec(part(), 0..4).prop_map(Value::from),
            1 => prop::collection::vec(leaf(), 0..2).prop_map(Value::from),
            1 => Just(json!({"text": "x"})),
        ]
    }

    fn item() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec![
                "message",
                "function_call",
                "function_call_output",
                "reasoning",
                "web_search_call",
                "",
            ]),
            prop::sample::select(vec!["user", "assistant", "system", "developer", "tool", ""]),
            any::<[bool; 7]>(),
            (content(), text(), text(), text(), content()),
            leaf(),
        )
            .prop_map(
                |(kind, role, has, (content, call_id, name, arguments, output), odd)| {
                    if !has[6] && has[0] && has[1] {
                        return odd; // an item that is no object
                    }
                    let mut i = json!({});
                    if has[0] {
                        i["type"] = json!(kind);
                    }
                    if has[1] {
                        i["role"] = json!(role);
                    }
                    if has[2] {
                        i["content"] = content;
                    }
                    if has[3] {
                        i["call_id"] = call_id;
                    }
                    if has[4] {
                        i["name"] = name;
                    }
                    if has[5] {
                        i["arguments"] = arguments;
                    }
                    if has[6] {
                        i["output"] = output;
                    }
                    i
                },
            )
    }

    fn function() -> impl Strategy<Value = Value> {
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(prop_oneof![
                Just(json!({"type": "object", "properties": {"a": {"type": "string"}}})),
                leaf()
            ]),
        )
            .prop_map(|(name, description, parameters)| {
                let mut t = json!({"type": "function", "strict": true});
                if let Some(n) = name {
                    t["name"] = n;
                }
                if let Some(d) = description {
                    t["description"] = d;
                }
                if let Some(p) = parameters {
                    t["parameters"] = p;
                }
                t
            })
    }

    fn tool() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => function(),
            1 => Just(json!({"type": "web_search"})),
            1 => prop::collection::vec(function(), 0..3)
                .prop_map(|tools| json!({"type": "namespace", "name": "mcp", "tools": tools})),
            1 => leaf(),
        ]
    }

    fn request() -> impl Strategy<Value = Value> {
        (
            prop::option::of(text()),
            prop::option::of(prop_oneof![
                1 => text(),
                4 => prop::collection::vec(item(), 0..8).prop_map(Value::from),
                1 => Just(json!({"a": 1})),
            ]),
            prop::option::of(prop_oneof![4 => prop::collection::vec(tool(), 0..4).prop_map(Value::from), 1 => leaf()]),
            prop::option::of(prop_oneof![
                Just(json!("auto")),
                Just(json!("required")),
                Just(json!("sometimes")),
                Just(json!({"type": "function", "name": "f"})),
                Just(json!({"type": "function"})),
                Just(json!({"type": "custom", "name": "f"})),
            ]),
            prop::option::of(prop_oneof![
                Just(json!({"format": {"type": "json_object"}})),
                Just(json!({"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": true}})),
                Just(json!({"format": {"type": "json_schema"}})),
                Just(json!({"format": {"type": "text"}})),
                Just(json!({"verbosity": "low"})),
                leaf(),
            ]),
            [prop::option::of(leaf()), prop::option::of(leaf()), prop::option::of(leaf()), prop::option::of(leaf()), prop::option::of(leaf()), prop::option::of(leaf())],
        )
            .prop_map(|(instructions, input, tools, choice, text, [max, temp, top_p, parallel, stream, reasoning])| {
                let mut r = json!({"model": "gpt-5-codex"});
                for (k, v) in [
                    ("instructions", instructions),
                    ("input", input),
                    ("tools", tools),
                    ("tool_choice", choice),
                    ("text", text),
                    ("max_output_tokens", max),
                    ("temperature", temp),
                    ("top_p", top_p),
                    ("parallel_tool_calls", parallel),
                    ("stream", stream),
                    ("reasoning", reasoning),
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

        /// Bytes to bytes gives what the tree-to-tree translation gave, member order included,
        /// and the echoed settings are the tree's.
        #[test]
        fn the_bytes_translate_as_the_tree_did(r in request()) {
            let raw = serde_json::to_string(&r).unwrap();
            let (got, want) = both(&raw);
            prop_assert_eq!(got, want);
            let echo = to_chat(raw.as_bytes(), None, "m").unwrap().echo;
            prop_assert_eq!(echo.to_map(), tree::echo(&r));
            prop_assert_eq!(serde_json::to_value(&echo).unwrap(), Value::Object(tree::echo(&r)));
        }
    }

    #[test]
    fn text_is_copied_as_the_caller_escaped_it() {
        // Escapes serde_json would write otherwise (`\/`, `\u00e9`) pass through as sent;
        // joined parts are joined inside one literal.
        let raw = r#"{"model":"m","instructions":"a\/b","input":[
            {"type":"message","role":"user","content":[{"type":"input_text","text":"caf\u00e9"},{"type":"input_text","text":"x\"y"}]},
            {"type":"function_call_output","call_id":"c","output":"line\nnext"}]}"#;
        let got = to_chat(raw.as_bytes(), None, "up").unwrap();
        let body = String::from_utf8(got.body).unwrap();
        assert!(body.contains(r#""content":"a\/b""#), "{body}");
        assert!(body.contains(r#""content":"caf\u00e9\nx\"y""#), "{body}");
        assert!(body.contains(r#""content":"line\nnext""#), "{body}");
        let (got, want) = both(raw);
        assert_eq!(got, want);
        // Repeated names: the last wins, as in a tree.
        let raw = r#"{"model":"m","input":[{"role":"user","content":"a","content":"b","type":"message"}],"instructions":"x","instructions":""}"#;
        let (got, want) = both(raw);
        assert_eq!(got, want);
        assert!(got.contains(r#"[{"role":"user","content":"b"}]"#), "{got}");
        // A string input with escapes (read unescaped) is escaped again.
        let (got, want) = both(r#"{"model":"m","input":"tab\there \"q\""}"#);
        assert_eq!(got, want);
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
    /// The chat and the echoed settings a translation gives.
    type Translated = (Option<serde_json::Value>, Map<String, serde_json::Value>);

    fn translate(body: &[u8], skim: bool) -> Option<Option<Translated>> {
        let read = if skim {
            raw_json::parse::<Req<'_>>(body, None).ok()
        } else {
            oracle::parse::<Req<'_>>(body).ok()
        };
        read.map(|r| {
            write_chat(&r, body.len(), "m")
                .ok()
                .map(|c| (bodies::tree(&c.body), c.echo.to_map()))
        })
    }

    /// Each kind occurs: bodies refused, and accepted ones translated into messages, tools
    /// and echoed settings.
    #[test]
    fn the_generator_makes_every_kind() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut refused, mut messages, mut tools, mut echoed) = (0, 0, 0, 0);
        for _ in 0..2000 {
            let b = bodies::body(true).new_tree(&mut runner).unwrap().current();
            let Some(Some((Some(chat), echo))) = translate(&b, true) else {
                refused += 1;
                continue;
            };
            let n = |k: &str| chat[k].as_array().map_or(0, Vec::len);
            messages += usize::from(n("messages") > 1);
            tools += usize::from(n("tools") > 0);
            echoed += usize::from(echo["instructions"].is_string());
        }
        assert!(
            refused > 300 && messages > 150 && tools > 60 && echoed > 250,
            "{refused} {messages} {tools} {echoed}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn translations_read_as_serde_read_them(body in bodies::body(true)) {
            prop_assert_eq!(
                translate(&body, true),
                translate(&body, false),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
