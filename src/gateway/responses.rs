//! The OpenAI Responses protocol at the gateway's edges (what Codex CLI and newer OpenAI SDK
//! code speak): a Responses request translated into a chat completion for an upstream that
//! speaks only chat, the chat answer (whole or streamed) translated back into a response and
//! its semantic events, and the usage of a native answer read for metering. Pure functions
//! and one stream state machine; no I/O.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use super::chat_chunk::{ChatChunk, ToolCall};
use super::responses_request::Echo;
use super::usage::{UsageOnly, WireUsage};
use crate::billing::Usage;

/// A Responses request as a chat-completions request, tree to tree (the built-in mock and
/// tests; the gateway translates the bytes: [`super::responses_request`]).
pub fn request_to_chat(body: &Value) -> Value {
    super::responses_request::to_chat_tree(body)
}

/// Chat usage as Responses usage: `input_tokens` counts cache hits too (they are detailed).
pub fn usage_from_chat(u: &Value) -> Value {
    let n = |p: &str| u.pointer(p).and_then(Value::as_i64);
    let prompt = n("/prompt_tokens").unwrap_or(0);
    let output = n("/completion_tokens").unwrap_or(0);
    json!({
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": n("/prompt_tokens_details/cached_tokens")
            .or_else(|| n("/prompt_cache_hit_tokens")).unwrap_or(0)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens":
            n("/completion_tokens_details/reasoning_tokens").unwrap_or(0)},
        "total_tokens": prompt + output,
    })
}

/// What a whole native response used; `None` without usage.
pub fn metered(body: &[u8]) -> Option<Usage> {
    super::usage::of_answer(body)
}

/// The text a native answer generated (for estimating when it reports no usage).
pub fn output_text(response: &Value) -> String {
    let mut out = String::new();
    for item in response
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(a) = item.get("arguments").and_then(Value::as_str) {
            out.push_str(a);
        }
        for part in item
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                out.push_str(t);
            }
        }
    }
    out
}

/// A response object: `status` and `output` as given, usage when known.
fn response(
    id: &str,
    created: i64,
    model: &str,
    echo: &Echo,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let mut m = echo.to_map();
    m.insert("id".into(), json!(id));
    m.insert("object".into(), json!("response"));
    m.insert("created_at".into(), json!(created));
    m.insert("model".into(), json!(model));
    m.insert("status".into(), json!(status));
    m.insert("error".into(), Value::Null);
    m.insert(
        "incomplete_details".into(),
        if status == "incomplete" {
            json!({"reason": "max_output_tokens"})
        } else {
            Value::Null
        },
    );
    m.insert("output".into(), Value::Array(output));
    m.insert("usage".into(), usage.unwrap_or(Value::Null));
    Value::Object(m)
}

/// Chat's `finish_reason` as a response `status`.
fn status_of(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "incomplete",
        _ => "completed",
    }
}

fn response_id(chat_id: Option<&str>) -> String {
    format!("resp_{}", chat_id.unwrap_or("gateway"))
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [],
        "content": [{"type": "reasoning_text", "text": text}]})
}

fn message_item(id: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(t) => json!([{"type": "output_text", "text": t, "annotations": []}]),
        None => json!([]),
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id,
        "name": name, "arguments": arguments, "status": status})
}

/// A whole chat completion as a response to the request `echo` was read from.
pub fn response_from_chat(chat: &Value, model: &str, echo: &Echo) -> Value {
    let msg = chat.pointer("/choices/0/message").unwrap_or(&Value::Null);
    let base = chat.get("id").and_then(Value::as_str).unwrap_or("gateway");
    let mut output = Vec::new();
    if let Some(r) = msg.get("reasoning_content").and_then(Value::as_str)
        && !r.is_empty()
    {
        output.push(reasoning_item(&format!("rs_{base}"), r));
    }
    if let Some(t) = msg.get("content").and_then(Value::as_str)
        && !t.is_empty()
    {
        output.push(message_item(&format!("msg_{base}"), "completed", Some(t)));
    }
    for c in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |p: &str| c.pointer(p).and_then(Value::as_str).unwrap_or("");
        output.push(call_item(
            s("/id"),
            s("/function/name"),
            s("/function/arguments"),
            "completed",
        ));
    }
    let finish = chat
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str);
    response(
        &response_id(chat.get("id").and_then(Value::as_str)),
        chat.get("created").and_then(Value::as_i64).unwrap_or(0),
        model,
        echo,
        status_of(finish),
        output,
        chat.get("usage").map(usage_from_chat),
    )
}

/// An output item being streamed.
#[derive(Debug)]
enum Open {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    /// A function call: the chat tool call's index it comes from.
    Call {
        index: u64,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Chat stream chunks in, Responses events out: `response.created`, `response.in_progress`,
/// then for each output item `response.output_item.added`, its deltas
/// (`response.reasoning_text.delta`, `response.output_text.delta`,
/// `response.function_call_arguments.delta`) and closing events, then `response.completed`
/// (or `response.incomplete`) with the whole response and its usage.
#[derive(Debug)]
/// A text, reasoning or arguments delta event, its members in the order [`StreamTranslator`]
/// writes a tree's (`type` and `sequence_number` last).
#[derive(serde::Serialize)]
struct DeltaEvent<'a> {
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<u32>,
    delta: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<&'static [u8]>,
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
}

impl<'a> DeltaEvent<'a> {
    /// A delta of an item's first content part (its sequence number set when written).
    fn of_part(kind: &'static str, item_id: &'a str, output_index: usize, delta: &'a str) -> Self {
        Self {
            item_id,
            output_index,
            content_index: Some(0),
            delta,
            logprobs: None,
            kind,
            sequence_number: 0,
        }
    }
}

/// A response-carrying event (`response.created`, `.in_progress`, `.completed`,
/// `.incomplete`), serialised from borrowed fields: a Codex request's `instructions` and
/// `tools` are repeated in each, and were copied for each. Members in the order
/// [`response`] gives a tree's.
#[derive(serde::Serialize)]
struct SnapshotEvent<'a> {
    response: Snapshot<'a>,
    #[serde(rename = "type")]
    kind: &'a str,
    sequence_number: u64,
}

#[derive(serde::Serialize)]
struct Snapshot<'a> {
    #[serde(flatten)]
    echo: &'a Echo,
    id: &'a str,
    object: &'static str,
    created_at: i64,
    model: &'a str,
    status: &'a str,
    error: Option<()>,
    incomplete_details: Option<Incomplete>,
    output: &'a [Value],
    usage: Option<&'a Value>,
}

#[derive(serde::Serialize)]
struct Incomplete {
    reason: &'static str,
}

pub struct StreamTranslator {
    model: String,
    /// What every response object repeats of the caller's request.
    echo: Echo,
    id: String,
    created: i64,
    seq: u64,
    started: bool,
    open: Option<Open>,
    output: Vec<Value>,
    finish: Option<String>,
    usage: Option<Value>,
    pub finished: bool,
}

impl StreamTranslator {
    /// `echo`: the settings of the caller's request that every response object repeats.
    pub fn new(model: &str, echo: Echo) -> Self {
        Self {
            model: model.to_owned(),
            echo,
            id: String::new(),
            created: 0,
            seq: 0,
            started: false,
            open: None,
            output: Vec::new(),
            finish: None,
            usage: None,
            finished: false,
        }
    }

    fn event(&mut self, kind: &str, mut data: Value, out: &mut String) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push_str("event: ");
        out.push_str(kind);
        out.push_str("\ndata: ");
        // Written to a buffer, not through `Display` (a formatter call per piece).
        out.push_str(&serde_json::to_string(&data).unwrap_or_default());
        out.push_str("\n\n");
    }

    /// A delta event, serialised from borrowed fields (nearly every event of a stream is
    /// one; the same bytes as [`Self::event`] writes from a tree).
    fn delta_event(&mut self, mut ev: DeltaEvent<'_>, out: &mut String) {
        ev.sequence_number = self.seq;
        self.seq += 1;
        out.push_str("event: ");
        out.push_str(ev.kind);
        out.push_str("\ndata: ");
        out.push_str(&serde_json::to_string(&ev).unwrap_or_default());
        out.push_str("\n\n");
    }

    /// An event carrying the response as it stands (`usage`: with the usage seen, as the
    /// last one does).
    fn snapshot_event(&mut self, kind: &str, status: &str, usage: bool, out: &mut String) {
        let ev = SnapshotEvent {
            response: Snapshot {
                echo: &self.echo,
                id: &self.id,
                object: "response",
                created_at: self.created,
                model: &self.model,
                status,
                error: None,
                incomplete_details: (status == "incomplete").then_some(Incomplete {
                    reason: "max_output_tokens",
                }),
                output: &self.output,
                usage: self.usage.as_ref().filter(|_| usage),
            },
            kind,
            sequence_number: self.seq,
        };
        let data = serde_json::to_string(&ev).unwrap_or_default();
        self.seq += 1;
        out.push_str("event: ");
        out.push_str(kind);
        out.push_str("\ndata: ");
        out.push_str(&data);
        out.push_str("\n\n");
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
            self.id = response_id(chunk.id.as_deref());
            self.created = chunk.created.unwrap_or(0);
            self.snapshot_event("response.created", "in_progress", false, &mut out);
            self.snapshot_event("response.in_progress", "in_progress", false, &mut out);
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
            self.reasoning(r, &mut out);
        }
        if let Some(t) = delta.and_then(|d| d.content.as_deref())
            && !t.is_empty()
        {
            self.text(t, &mut out);
        }
        for call in delta
            .and_then(|d| d.tool_calls.as_deref())
            .into_iter()
            .flatten()
        {
            self.call(call, &mut out);
        }
        if let Some(f) = choice.finish_reason.as_deref() {
            self.finish = Some(f.to_owned());
        }
        out
    }

    fn reasoning(&mut self, delta: &str, out: &mut String) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let id = format!("rs_{}_{}", self.id, self.output.len());
            self.event(
                "response.output_item.added",
                json!({"output_index": self.output.len(), "item":
                    {"type": "reasoning", "id": id, "summary": [], "content": []}}),
                out,
            );
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": self.output.len(), "content_index": 0,
                    "part": {"type": "reasoning_text", "text": ""}}),
                out,
            );
            self.open = Some(Open::Reasoning {
                id,
                text: String::new(),
            });
        }
        let index = self.output.len();
        if let Some(Open::Reasoning { id, text }) = &mut self.open {
            text.push_str(delta);
            let id = id.clone();
            let ev = DeltaEvent::of_part("response.reasoning_text.delta", &id, index, delta);
            self.delta_event(ev, out);
        }
    }

    fn text(&mut self, delta: &str, out: &mut String) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let id = format!("msg_{}_{}", self.id, self.output.len());
            self.event(
                "response.output_item.added",
                json!({"output_index": self.output.len(),
                    "item": message_item(&id, "in_progress", None)}),
                out,
            );
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": self.output.len(), "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
                out,
            );
            self.open = Some(Open::Message {
                id,
                text: String::new(),
            });
        }
        let index = self.output.len();
        if let Some(Open::Message { id, text }) = &mut self.open {
            text.push_str(delta);
            let id = id.clone();
            let ev = DeltaEvent {
                logprobs: Some(&[]),
                ..DeltaEvent::of_part("response.output_text.delta", &id, index, delta)
            };
            self.delta_event(ev, out);
        }
    }

    fn call(&mut self, call: &ToolCall<'_>, out: &mut String) {
        let index = call.index.and_then(|i| u64::try_from(i).ok()).unwrap_or(0);
        let function = call.function.as_ref();
        let same = matches!(&self.open, Some(Open::Call { index: i, .. }) if *i == index);
        if !same {
            self.close(out);
            let call_id = call.id.as_deref().unwrap_or("").to_owned();
            let name = function
                .and_then(|f| f.name.as_deref())
                .unwrap_or("")
                .to_owned();
            self.event(
                "response.output_item.added",
                json!({"output_index": self.output.len(),
                    "item": call_item(&call_id, &name, "", "in_progress")}),
                out,
            );
            self.open = Some(Open::Call {
                index,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        let Some(delta) = function
            .and_then(|f| f.arguments.as_deref())
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        let output_index = self.output.len();
        if let Some(Open::Call {
            call_id, arguments, ..
        }) = &mut self.open
        {
            arguments.push_str(delta);
            let item_id = format!("fc_{call_id}");
            let ev = DeltaEvent {
                content_index: None,
                ..DeltaEvent::of_part(
                    "response.function_call_arguments.delta",
                    &item_id,
                    output_index,
                    delta,
                )
            };
            self.delta_event(ev, out);
        }
    }

    /// Closes the open item: its `done` events, and it joins the response's output.
    fn close(&mut self, out: &mut String) {
        let index = self.output.len();
        let item = match self.open.take() {
            None => return,
            Some(Open::Reasoning { id, text }) => {
                let part = json!({"type": "reasoning_text", "text": text});
                self.event(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                    out,
                );
                self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    out,
                );
                reasoning_item(&id, &text)
            }
            Some(Open::Message { id, text }) => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "text": text, "logprobs": []}),
                    out,
                );
                self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    out,
                );
                message_item(&id, "completed", Some(&text))
            }
            Some(Open::Call {
                call_id,
                name,
                arguments,
                ..
            }) => {
                self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": format!("fc_{call_id}"), "output_index": index,
                        "name": name, "arguments": arguments}),
                    out,
                );
                call_item(&call_id, &name, &arguments, "completed")
            }
        };
        self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
        self.output.push(item);
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
        self.close(&mut out);
        let status = status_of(self.finish.as_deref());
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.snapshot_event(kind, status, true, &mut out);
        out
    }
}

/// Usage read from a native Responses stream: the terminal event (`response.completed`,
/// `response.incomplete` or `response.failed`) carries the whole response with its usage.
#[derive(Debug, Default)]
pub struct NativeUsage {
    pub usage: Option<Usage>,
    pub text: String,
    pub done: bool,
}

/// The parts of a Responses event metering reads, borrowed from its text.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default)]
    response: Option<UsageOnly>,
}

impl NativeUsage {
    /// One event's `data`.
    pub fn observe(&mut self, data: &str) {
        let Ok(e) = serde_json::from_str::<Event>(data) else {
            // An event of a kind whose `delta` is not text: only its end matters.
            if let Ok(v) = serde_json::from_str::<Value>(data) {
                self.ended(v["type"].as_str().unwrap_or(""), None);
            }
            return;
        };
        if e.kind.ends_with(".delta")
            && let Some(t) = &e.delta
        {
            self.text.push_str(t);
        }
        self.ended(&e.kind, e.response.and_then(|r| r.usage));
    }

    fn ended(&mut self, kind: &str, usage: Option<WireUsage>) {
        if matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed"
        ) {
            self.done = true;
            if let Some(u) = usage.and_then(|u| u.usage()) {
                self.usage = Some(u);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Codex CLI sends, in brief: developer instructions, a user turn, an earlier
    /// function call and its output, function tools beside hosted ones.
    fn codex_like() -> Value {
        json!({
            "model": "gpt-5-codex",
            "instructions": "You are Codex.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox: workspace-write"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
                {"type": "function_call", "call_id": "call_a", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call", "call_id": "call_b", "name": "exec_command", "arguments": "{\"cmd\":\"pwd\"}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "a.txt"},
                {"type": "function_call_output", "call_id": "call_b", "output": "/w"}
            ],
            "tools": [
                {"type": "function", "name": "exec_command", "description": "run", "parameters": {"type": "object"}, "strict": false},
                {"type": "web_search"},
                {"type": "namespace", "name": "mcp", "tools": [{"type": "function", "name": "mcp__x", "parameters": {"type": "object"}}]}
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": true,
            "reasoning": {"effort": "medium"},
            "store": false,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "abc",
            "stream": true,
            "max_output_tokens": 900
        })
    }

    #[test]
    fn a_codex_request_becomes_a_chat_request() {
        let chat = request_to_chat(&codex_like());
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "You are Codex."}));
        assert_eq!(
            m[1],
            json!({"role": "system", "content": "sandbox: workspace-write"})
        );
        assert_eq!(m[2], json!({"role": "user", "content": "list files"}));
        // Both calls in one assistant turn, then one tool message each.
        assert_eq!(m[3]["role"], "assistant");
        assert_eq!(m[3]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(m[3]["tool_calls"][1]["id"], "call_b");
        assert_eq!(
            m[3]["tool_calls"][0]["function"]["arguments"],
            "{\"cmd\":\"ls\"}"
        );
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "call_a", "content": "a.txt"})
        );
        assert_eq!(m[5]["tool_call_id"], "call_b");
        assert_eq!(m.len(), 6);
        let tools = chat["tools"].as_array().unwrap();
        assert_eq!(
            tools.len(),
            2,
            "web_search dropped, the namespace flattened"
        );
        assert_eq!(tools[1]["function"]["name"], "mcp__x");
        assert_eq!(chat["tool_choice"], "auto");
        assert_eq!(chat["max_tokens"], 900);
        assert_eq!(chat["stream_options"]["include_usage"], true);
        for dropped in ["reasoning", "store", "include", "prompt_cache_key", "input"] {
            assert!(chat.get(dropped).is_none(), "{dropped}");
        }
    }

    #[test]
    fn a_plain_string_input_is_one_user_turn() {
        let chat = request_to_chat(
            &json!({"model": "m", "input": "hi", "parallel_tool_calls": true,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}}),
        );
        assert_eq!(chat["messages"], json!([{"role": "user", "content": "hi"}]));
        assert!(chat.get("parallel_tool_calls").is_none());
        assert_eq!(chat["response_format"]["json_schema"]["name"], "x");
    }

    #[test]
    fn a_chat_answer_becomes_a_response() {
        let chat = json!({"id": "c1", "created": 5, "choices": [{"message": {
            "role": "assistant", "content": "ok", "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": 6},
                "completion_tokens_details": {"reasoning_tokens": 2}}});
        let r = response_from_chat(
            &chat,
            "m",
            &Echo::of_tree(&json!({"tools": [{"type": "function"}]})),
        );
        assert_eq!(r["id"], "resp_c1");
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        let out = r["output"].as_array().unwrap();
        assert_eq!(out[0]["type"], "reasoning");
        assert_eq!(out[1]["content"][0]["text"], "ok");
        assert_eq!(out[2]["call_id"], "call_1");
        assert_eq!(out[2]["arguments"], "{\"a\":1}");
        assert_eq!(r["usage"]["input_tokens"], 10);
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 6);
        assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 2);
        assert_eq!(r["usage"]["total_tokens"], 14);
        assert_eq!(r["tools"].as_array().unwrap().len(), 1);
        assert_eq!(
            metered(r.to_string().as_bytes()),
            Some(Usage {
                input: 4,
                cached: 6,
                cache_write: 0,
                output: 4,
                reasoning: 2
            })
        );
        let cut = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]});
        let r = response_from_chat(&cut, "m", &Echo::of_tree(&json!({})));
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(metered(r.to_string().as_bytes()), None);
        assert_eq!(output_text(&r), "x");
    }

    fn events(s: &str) -> Vec<Value> {
        s.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (head, data) = e.split_once("\ndata: ").unwrap();
                let v: Value = serde_json::from_str(data).unwrap();
                assert_eq!(head.strip_prefix("event: "), v["type"].as_str());
                v
            })
            .collect()
    }

    #[test]
    fn a_chat_stream_becomes_response_events_in_order() {
        let mut t =
            StreamTranslator::new("m", Echo::of_tree(&json!({"input": "big", "tools": []})));
        let mut out = String::new();
        for c in [
            json!({"id": "c", "created": 9, "choices": [{"delta": {"reasoning_content": "hm"}}]}),
            json!({"id": "c", "choices": [{"delta": {"content": "He"}}]}),
            json!({"id": "c", "choices": [{"delta": {"content": "llo"}}]}),
            json!({"id": "c", "choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_x", "function": {"name": "f", "arguments": ""}}]}}]}),
            json!({"id": "c", "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}}]}),
            json!({"id": "c", "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]}),
            json!({"id": "c", "choices": [{"delta": {"tool_calls": [{"index": 1, "id": "call_y", "function": {"name": "g", "arguments": "{}"}}]}}]}),
            json!({"id": "c", "choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}}),
        ] {
            out.push_str(&t.push(&c));
        }
        out.push_str(&t.finish());
        assert_eq!(t.finish(), "", "closing events are sent once");
        let ev = events(&out);
        let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds[..3],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added"
            ]
        );
        assert!(kinds.contains(&"response.reasoning_text.delta"));
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "response.output_text.delta")
                .count(),
            2
        );
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "response.function_call_arguments.delta")
                .count(),
            3
        );
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "response.output_item.done")
                .count(),
            4
        );
        assert_eq!(*kinds.last().unwrap(), "response.completed");
        for (i, e) in ev.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let done = ev.last().unwrap();
        let output = done["response"]["output"].as_array().unwrap();
        assert_eq!(output[1]["content"][0]["text"], "Hello");
        assert_eq!(output[2]["arguments"], "{\"a\":1}");
        assert_eq!(output[3]["name"], "g");
        assert_eq!(done["response"]["usage"]["output_tokens"], 7);
        assert!(done["response"].get("input").is_none());
        // What a native stream watcher reads off the same events.
        let mut u = NativeUsage::default();
        ev.iter().for_each(|e| u.observe(&e.to_string()));
        assert!(u.done);
        assert_eq!(u.usage, Some(Usage::plain(3, 7)));
        assert!(u.text.contains("Hello"));
    }

    /// The delta events written from borrowed fields are the bytes a tree gave.
    #[test]
    fn delta_events_are_written_as_their_trees_were() {
        let mut t = StreamTranslator::new("m", Echo::of_tree(&json!({})));
        let mut out = String::new();
        for c in [
            json!({"id": "c", "choices": [{"delta": {"reasoning_content": "why \"so\"\n"}}]}),
            json!({"id": "c", "choices": [{"delta": {"content": "héllo 🦀"}}]}),
            json!({"id": "c", "choices": [{"delta": {"tool_calls": [{"index": 0, "id": "k", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]}),
        ] {
            out.push_str(&t.push(&c));
        }
        let mut seen = 0;
        for block in out.split_terminator("\n\n") {
            let (head, data) = block.split_once("\ndata: ").unwrap();
            let kind = head.strip_prefix("event: ").unwrap();
            if !kind.ends_with(".delta") {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            let mut tree = match kind {
                "response.output_text.delta" => json!({"item_id": v["item_id"],
                    "output_index": v["output_index"], "content_index": 0,
                    "delta": v["delta"], "logprobs": []}),
                "response.function_call_arguments.delta" => json!({"item_id": v["item_id"],
                    "output_index": v["output_index"], "delta": v["delta"]}),
                _ => json!({"item_id": v["item_id"], "output_index": v["output_index"],
                    "content_index": 0, "delta": v["delta"]}),
            };
            tree["type"] = json!(kind);
            tree["sequence_number"] = v["sequence_number"].clone();
            assert_eq!(data, serde_json::to_string(&tree).unwrap());
            seen += 1;
        }
        assert_eq!(seen, 3, "{out}");
    }

    /// The events carrying the response, written from borrowed fields, are the bytes the
    /// tree of [`response`] gave (settings echoed from the request, `input` left out).
    #[test]
    fn response_events_are_written_as_their_trees_were() {
        let request = json!({"model": "m", "input": [{"role": "user", "content": "big"}],
            "instructions": "Be \"brief\".", "tools": [{"type": "function", "name": "f",
            "parameters": {"type": "object"}}], "temperature": 0.5, "metadata": {"k": "v"}});
        for finish in ["stop", "length"] {
            let mut t = StreamTranslator::new("m", Echo::of_tree(&request));
            let mut out = t.push(&json!({"id": "c", "created": 9,
                "choices": [{"delta": {"content": "hi"}, "finish_reason": finish}]}));
            out.push_str(&t.push(&json!({"id": "c", "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2}})));
            out.push_str(&t.finish());
            let mut seen = 0;
            for block in out.split_terminator("\n\n") {
                let (head, data) = block.split_once("\ndata: ").unwrap();
                let kind = head.strip_prefix("event: ").unwrap();
                let v: Value = serde_json::from_str(data).unwrap();
                let Some(r) = v.get("response") else { continue };
                let usage = r["usage"].clone();
                let status = r["status"].as_str().unwrap();
                let output = r["output"].as_array().unwrap().clone();
                let response = response(
                    "resp_c",
                    9,
                    "m",
                    &Echo::of_tree(&request),
                    status,
                    output,
                    (!usage.is_null()).then_some(usage),
                );
                let mut tree = json!({"response": response});
                tree["type"] = json!(kind);
                tree["sequence_number"] = v["sequence_number"].clone();
                assert_eq!(data, serde_json::to_string(&tree).unwrap());
                seen += 1;
            }
            assert_eq!(seen, 3, "{out}");
            assert!(!out.contains("big"), "the input is not repeated");
        }
    }

    #[test]
    fn a_cut_stream_ends_incomplete() {
        let mut t = StreamTranslator::new("m", Echo::of_tree(&json!({})));
        let mut out = t.push(&json!({"id": "c", "choices": [{"delta": {"content": "x"}, "finish_reason": "length"}]}));
        out.push_str(&t.finish());
        let ev = events(&out);
        let last = ev.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
    }
}
