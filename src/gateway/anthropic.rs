//! The Anthropic Messages protocol at the gateway's edges: a Messages request translated
//! into a chat completion for an upstream that speaks only chat, the chat answer (whole or
//! streamed) translated back, and the usage of a native Messages answer read for metering.
//! Pure functions and one stream state machine; no I/O.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use super::chat_chunk::ChatChunk;
use super::usage::{UsageOnly, WireUsage};
use crate::billing::Usage;

/// A Messages request as a chat-completions request, tree to tree (the built-in mock and
/// tests; the gateway translates the bytes: [`super::messages_request`]).
pub fn request_to_chat(body: &Value) -> Value {
    super::messages_request::to_chat_tree(body)
}

/// Chat's `finish_reason` as a Messages `stop_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        _ => "end_turn",
    }
}

/// Chat usage as Messages usage: Anthropic's `input_tokens` leaves out cache reads.
pub fn usage_from_chat(u: &Value) -> Value {
    let prompt = u.get("prompt_tokens").and_then(Value::as_i64).unwrap_or(0);
    let cached = u
        .pointer("/prompt_tokens_details/cached_tokens")
        .or_else(|| u.get("prompt_cache_hit_tokens"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    json!({
        "input_tokens": (prompt - cached).max(0),
        "output_tokens": u.get("completion_tokens").and_then(Value::as_i64).unwrap_or(0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

/// A whole chat completion as a Messages answer.
pub fn response_from_chat(chat: &Value, model: &str) -> Value {
    let msg = chat
        .pointer("/choices/0/message")
        .cloned()
        .unwrap_or(json!({}));
    let mut content = Vec::new();
    if let Some(r) = msg.get("reasoning_content").and_then(Value::as_str)
        && !r.is_empty()
    {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = msg.get("content").and_then(Value::as_str)
        && !t.is_empty()
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        content.push(json!({
            "type": "tool_use",
            "id": c.get("id").cloned().unwrap_or(Value::Null),
            "name": c.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "input": parse_arguments(c.pointer("/function/arguments")),
        }));
    }
    let finish = chat
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str);
    json!({
        "id": message_id(chat.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage_from_chat(chat.get("usage").unwrap_or(&Value::Null)),
    })
}

fn parse_arguments(a: Option<&Value>) -> Value {
    match a {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

fn message_id(chat_id: Option<&str>) -> String {
    format!("msg_{}", chat_id.unwrap_or("gateway"))
}

/// What a whole native Messages answer used; `None` without usage.
pub fn metered(body: &[u8]) -> Option<Usage> {
    super::usage::of_answer(body)
}

/// The text a native answer generated (for estimating when it reports no usage).
pub fn content_text(body: &Value) -> String {
    body.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect()
}

/// One SSE event in Messages' grammar.
fn event(kind: &str, data: &Value) -> String {
    // `to_string` of a `Value` goes through `Display`, a formatter call per piece; this
    // writes to a buffer, the same text.
    let data = serde_json::to_string(data).unwrap_or_default();
    let mut out = String::with_capacity(kind.len() + data.len() + 16);
    out.push_str("event: ");
    out.push_str(kind);
    out.push_str("\ndata: ");
    out.push_str(&data);
    out.push_str("\n\n");
    out
}

/// The open content block of a translated stream.
#[derive(Debug, Clone, PartialEq)]
enum Block {
    Thinking,
    Text,
    /// A tool use: the chat tool call's index it comes from.
    Tool(u64),
}

/// Chat stream chunks in, Messages events out: `message_start`, then for each content block
/// `content_block_start`, its deltas (`thinking_delta`, `text_delta`, `input_json_delta`) and
/// `content_block_stop`, then `message_delta` (stop reason, usage) and `message_stop`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    started: bool,
    open: Option<Block>,
    index: i64,
    finish: Option<String>,
    usage: Option<Value>,
    pub finished: bool,
}

impl StreamTranslator {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            open: None,
            index: -1,
            finish: None,
            usage: None,
            finished: false,
        }
    }

    /// The events for one chat chunk given as a tree (the in-process mock's).
    pub fn push(&mut self, chunk: &Value) -> String {
        self.push_chunk(&ChatChunk::deserialize(chunk).unwrap_or_default())
    }

    /// The events for one chat chunk.
    pub fn push_chunk(&mut self, chunk: &ChatChunk<'_>) -> String {
        let mut out = String::new();
        if !self.started {
            self.started = true;
            let id = message_id(chunk.id.as_deref());
            out.push_str(&event(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            ));
        }
        if let Some(u) = chunk.usage_object() {
            self.usage = Some(usage_from_chat(u));
        }
        let Some(choice) = chunk.first() else {
            return out;
        };
        let delta = choice.delta.as_ref();
        if let Some(r) = delta.and_then(|d| d.reasoning_content.as_deref())
            && !r.is_empty()
        {
            self.open_block(
                Block::Thinking,
                &mut out,
                || json!({"type": "thinking", "thinking": "", "signature": ""}),
            );
            self.delta(&mut out, BlockDeltaBody::thinking(r));
        }
        if let Some(t) = delta.and_then(|d| d.content.as_deref())
            && !t.is_empty()
        {
            self.open_block(
                Block::Text,
                &mut out,
                || json!({"type": "text", "text": ""}),
            );
            self.delta(&mut out, BlockDeltaBody::text(t));
        }
        for call in delta
            .and_then(|d| d.tool_calls.as_deref())
            .into_iter()
            .flatten()
        {
            let i = call.index.and_then(|i| u64::try_from(i).ok()).unwrap_or(0);
            let function = call.function.as_ref();
            self.open_block(Block::Tool(i), &mut out, || {
                json!({"type": "tool_use", "id": call.id, "name": function.and_then(|f| f.name.as_deref()), "input": {}})
            });
            if let Some(a) = function.and_then(|f| f.arguments.as_deref())
                && !a.is_empty()
            {
                self.delta(&mut out, BlockDeltaBody::json(a));
            }
        }
        if let Some(f) = choice.finish_reason.as_deref() {
            self.finish = Some(f.to_owned());
        }
        out
    }

    /// The closing events, once the chat stream ended (`[DONE]` or the end of the body).
    pub fn finish(&mut self) -> String {
        if self.finished {
            return String::new();
        }
        self.finished = true;
        let mut out = String::new();
        if !self.started {
            out.push_str(&self.push_chunk(&ChatChunk::default()));
        }
        self.close_block(&mut out);
        let usage = self
            .usage
            .clone()
            .unwrap_or_else(|| json!({"input_tokens": 0, "output_tokens": 0}));
        out.push_str(&event(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
                "usage": usage}),
        ));
        out.push_str(&event("message_stop", &json!({"type": "message_stop"})));
        out
    }

    fn open_block(&mut self, b: Block, out: &mut String, start: impl FnOnce() -> Value) {
        if self.open.as_ref() == Some(&b) {
            return;
        }
        self.close_block(out);
        self.index += 1;
        out.push_str(&event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": start()}),
        ));
        self.open = Some(b);
    }

    fn close_block(&mut self, out: &mut String) {
        if self.open.take().is_some() {
            out.push_str(&event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            ));
        }
    }

    /// A `content_block_delta` event, serialised from borrowed fields (nearly every event
    /// of a stream is one; a tree for each cost more than reading the chunk).
    fn delta(&self, out: &mut String, delta: BlockDeltaBody<'_>) {
        #[derive(serde::Serialize)]
        struct BlockDelta<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            index: i64,
            delta: BlockDeltaBody<'a>,
        }
        let ev = BlockDelta {
            kind: "content_block_delta",
            index: self.index,
            delta,
        };
        out.push_str("event: content_block_delta\ndata: ");
        out.push_str(&serde_json::to_string(&ev).unwrap_or_default());
        out.push_str("\n\n");
    }
}

/// A content block's delta: one of its three kinds, with its one field.
#[derive(serde::Serialize)]
struct BlockDeltaBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_json: Option<&'a str>,
}

impl<'a> BlockDeltaBody<'a> {
    fn thinking(s: &'a str) -> Self {
        BlockDeltaBody {
            kind: "thinking_delta",
            thinking: Some(s),
            text: None,
            partial_json: None,
        }
    }
    fn text(s: &'a str) -> Self {
        BlockDeltaBody {
            kind: "text_delta",
            thinking: None,
            text: Some(s),
            partial_json: None,
        }
    }
    fn json(s: &'a str) -> Self {
        BlockDeltaBody {
            kind: "input_json_delta",
            thinking: None,
            text: None,
            partial_json: Some(s),
        }
    }
}

/// Usage read from native Messages stream events: input (with cache) from `message_start`,
/// output (and, in newer answers, input) from `message_delta`.
#[derive(Debug, Default)]
pub struct NativeUsage {
    /// Every usage part seen, merged (the later event's fields win).
    pub usage: Option<WireUsage>,
    pub text: String,
    /// `message_stop` was seen.
    pub done: bool,
}

/// The parts of a Messages event metering reads, borrowed from its text.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<UsageOnly>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
}

impl NativeUsage {
    /// One event's `data`.
    pub fn observe(&mut self, data: &str) {
        let Ok(e) = serde_json::from_str::<Event>(data) else {
            return;
        };
        match e.kind.as_ref() {
            "message_stop" => self.done = true,
            "message_start" | "message_delta" => {
                let part = match e.kind.as_ref() {
                    "message_start" => e.message.and_then(|m| m.usage),
                    _ => e.usage,
                };
                if let Some(u) = part {
                    self.usage.get_or_insert_default().merge(&u);
                }
            }
            "content_block_delta" => {
                for t in e
                    .delta
                    .iter()
                    .flat_map(|d| [&d.text, &d.thinking, &d.partial_json])
                    .flatten()
                {
                    self.text.push_str(t);
                }
            }
            _ => {}
        }
    }
}

/// An error in Messages' shape, `{"type":"error","error":{"type","message"}}`.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// Anthropic's error `type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claude_code_like() -> Value {
        json!({
            "model": "claude-opus-4-8", "max_tokens": 64000, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "metadata": {"user_id": "u"},
            "tools": [
                {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
                {"type": "web_search_20250305", "name": "web_search"}
            ],
            "tool_choice": {"type": "auto"},
            "stop_sequences": ["END"],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "list files", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Running ls."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.txt"}]}]},
                {"role": "system", "content": "Reminder: be brief."},
                {"role": "user", "content": "thanks"}
            ]
        })
    }

    #[test]
    fn a_claude_code_request_becomes_a_chat_request() {
        let chat = request_to_chat(&claude_code_like());
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "You are Claude Code."})
        );
        assert_eq!(m[1], json!({"role": "user", "content": "list files"}));
        assert_eq!(m[2]["role"], "assistant");
        assert_eq!(m[2]["content"], "Running ls.");
        assert_eq!(m[2]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "Bash");
        let args: Value = serde_json::from_str(
            m[2]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args, json!({"command": "ls"}));
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt"})
        );
        assert_eq!(
            m[4],
            json!({"role": "system", "content": "Reminder: be brief."})
        );
        assert_eq!(m[5], json!({"role": "user", "content": "thanks"}));
        assert_eq!(
            chat["tools"].as_array().unwrap().len(),
            1,
            "hosted tools are dropped"
        );
        assert_eq!(chat["tools"][0]["function"]["parameters"]["type"], "object");
        assert_eq!(chat["tool_choice"], "auto");
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["max_tokens"], 64000);
        assert_eq!(chat["stream_options"]["include_usage"], true);
        let text = chat.to_string();
        assert!(!text.contains("cache_control") && !text.contains("thinking"));
    }

    #[test]
    fn a_chat_answer_with_tool_calls_becomes_a_message() {
        let chat = json!({"id": "c1", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Let me look.", "reasoning_content": "think",
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "Read", "arguments": "{\"path\":\"a\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "Read", "arguments": "{\"path\":\"b\"}"}}
                ]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60}}});
        let m = response_from_chat(&chat, "claude-x");
        assert_eq!(m["type"], "message");
        assert_eq!(m["model"], "claude-x");
        assert_eq!(m["stop_reason"], "tool_use");
        let c = m["content"].as_array().unwrap();
        assert_eq!(c[0]["type"], "thinking");
        assert_eq!(c[1], json!({"type": "text", "text": "Let me look."}));
        assert_eq!(c[2]["input"], json!({"path": "a"}));
        assert_eq!(c[3]["id"], "call_b");
        assert_eq!(m["usage"]["input_tokens"], 40);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 60);
        assert_eq!(
            metered(m.to_string().as_bytes()),
            Some(Usage {
                input: 40,
                cached: 60,
                cache_write: 0,
                output: 20,
                reasoning: 0
            }),
            "cache reads are prompt tokens, of their own class"
        );
    }

    /// The deltas written from borrowed fields are the bytes the tree gave.
    #[test]
    fn deltas_are_written_as_their_trees_were() {
        let mut t = StreamTranslator::new("m");
        let start = t.push(&json!({"id": "x", "choices": []}));
        assert!(start.starts_with("event: message_start\n"));
        for (delta, kind, field, text) in [
            (
                json!({"reasoning_content": "why \"so\"\n"}),
                "thinking_delta",
                "thinking",
                "why \"so\"\n",
            ),
            (
                json!({"content": "héllo 🦀"}),
                "text_delta",
                "text",
                "héllo 🦀",
            ),
        ] {
            let out = t.push(&json!({"choices": [{"index": 0, "delta": delta}]}));
            let want = event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": t.index,
                    "delta": {"type": kind, field: text}}),
            );
            assert!(out.ends_with(&want), "{out}");
        }
        let out = t.push(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]}));
        let want = event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": t.index,
                "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
        );
        assert!(out.ends_with(&want), "{out}");
        assert_eq!(
            event("e", &json!({"b": 1, "a": "\u{1}"})),
            format!("event: e\ndata: {}\n\n", json!({"b": 1, "a": "\u{1}"}))
        );
    }

    fn events(s: &str) -> Vec<Value> {
        s.split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn a_chat_stream_becomes_messages_events_in_order() {
        let mut t = StreamTranslator::new("claude-x");
        let mut out = String::new();
        for c in [
            json!({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "th"}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "lo"}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": ""}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\":"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"ls\"}"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "Read", "arguments": "{}"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7}}),
        ] {
            out.push_str(&t.push(&c));
        }
        out.push_str(&t.finish());
        assert_eq!(t.finish(), "", "closing twice adds nothing");
        let ev = events(&out);
        let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(ev[1]["content_block"]["type"], "thinking");
        assert_eq!(ev[5]["delta"], json!({"type": "text_delta", "text": "Hel"}));
        assert_eq!(ev[8]["content_block"]["name"], "Bash");
        assert_eq!(ev[8]["index"], 2);
        let json: String = [&ev[9], &ev[10]]
            .iter()
            .map(|e| e["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            json!({"command": "ls"})
        );
        assert_eq!(ev[12]["content_block"]["id"], "call_2");
        assert_eq!(ev[15]["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[15]["usage"]["output_tokens"], 7);
        assert!(out.contains("event: message_stop\n"));
    }

    #[test]
    fn native_stream_usage_is_read_from_start_and_delta() {
        let mut u = NativeUsage::default();
        u.observe(&json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}}).to_string());
        u.observe(&json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}).to_string());
        u.observe(&json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}).to_string());
        let got = u.usage.and_then(|w| w.usage()).unwrap();
        assert_eq!((got.prompt(), got.cached, got.output), (15, 5, 9));
        assert_eq!(u.text, "hi");
    }

    #[test]
    fn error_types_follow_anthropic() {
        assert_eq!(
            error_body(401, "x")["error"]["type"],
            "authentication_error"
        );
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(503), "overloaded_error");
        assert_eq!(error_type(404), "not_found_error");
        assert_eq!(error_type(502), "api_error");
    }
}
