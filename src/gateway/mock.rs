//! The built-in `mock` provider: deterministic OpenAI-format answers with token counts and
//! streaming, so `serve` works offline and demos cost nothing. Also served over HTTP by
//! `quota-proxy mock-upstream` (for benchmarks and manual tests).

use serde_json::{Value, json};

use super::tokens::{estimate_prompt, estimate_text};

fn last_user_text(body: &Value) -> String {
    if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
        for m in msgs.iter().rev() {
            if m.get("role").and_then(Value::as_str) == Some("user") {
                return match m.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => String::new(),
                };
            }
        }
    }
    match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// The reply text: echoes (the start of) the last user message, so tests can tell calls apart.
pub fn reply_text(body: &Value) -> String {
    let said: String = last_user_text(body).chars().take(64).collect();
    let words = body
        .get("max_tokens")
        .and_then(Value::as_i64)
        .unwrap_or(16)
        .clamp(1, 64);
    let mut text = format!("Mock reply to: {said}.");
    let mut n = 0;
    while n < words / 4 {
        text.push_str(" Lorem ipsum dolor sit.");
        n += 1;
    }
    text
}

fn model_of(body: &Value) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_owned()
}

fn usage(prompt: i64, completion: i64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The tool call the mock makes when tools are offered and the conversation does not end
/// with a tool's result: the first function tool, with a string for each required string
/// argument — so an agent's tool round trip can be tried offline.
fn tool_call(body: &Value) -> Option<Value> {
    let last_role = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str);
    if last_role == Some("tool") {
        return None;
    }
    let f = body
        .get("tools")?
        .as_array()?
        .iter()
        .find_map(|t| t.get("function"))?;
    let mut args = serde_json::Map::new();
    let params = f.get("parameters").cloned().unwrap_or(Value::Null);
    for r in params
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let kind = params.pointer(&format!("/properties/{r}/type"));
        let v = match kind.and_then(Value::as_str) {
            Some("integer") | Some("number") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!("mock"),
        };
        args.insert(r.to_owned(), v);
    }
    Some(json!({"id": "call_mock_1", "type": "function",
                "function": {"name": f.get("name").cloned().unwrap_or(json!("tool")),
                             "arguments": Value::Object(args).to_string()}}))
}

/// What the last tool said, when the conversation ends with a tool's result.
fn tool_result_text(body: &Value) -> Option<String> {
    let last = body.get("messages")?.as_array()?.last()?;
    (last.get("role").and_then(Value::as_str) == Some("tool")).then(|| {
        let said = last.get("content").and_then(Value::as_str).unwrap_or("");
        format!(
            "Mock saw the tool result: {}",
            said.chars().take(64).collect::<String>()
        )
    })
}

pub fn chat_completion(body: &Value, id: &str, created: i64) -> Value {
    if let Some(call) = tool_call(body) {
        let (p, c) = (estimate_prompt(body), estimate_text(&call.to_string()));
        return json!({
            "id": id, "object": "chat.completion", "created": created, "model": model_of(body),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [call]},
                         "finish_reason": "tool_calls", "logprobs": null}],
            "usage": usage(p, c),
        });
    }
    let text = tool_result_text(body).unwrap_or_else(|| reply_text(body));
    let (p, c) = (estimate_prompt(body), estimate_text(&text));
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model_of(body),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": null}],
        "usage": usage(p, c),
    })
}

/// A Messages answer in the mock's own words: the chat answer it would give, in Messages'
/// shape.
pub fn messages_full(body: &Value, id: &str, created: i64) -> Value {
    let chat = super::anthropic::request_to_chat(body);
    super::anthropic::response_from_chat(&chat_completion(&chat, id, created), &model_of(body))
}

/// The same answer as Messages stream events (each a whole `event:`/`data:` block).
pub fn messages_events(body: &Value, id: &str, created: i64) -> Vec<String> {
    let mut chat = super::anthropic::request_to_chat(body);
    chat["stream_options"] = json!({"include_usage": true});
    let mut t = super::anthropic::StreamTranslator::new(&model_of(body));
    let mut events: Vec<String> = stream_chunks(&chat, id, created, true)
        .iter()
        .map(|c| t.push(c))
        .collect();
    events.push(t.finish());
    events
}

/// A response (OpenAI Responses) in the mock's own words: the chat answer it would give, in
/// Responses' shape.
pub fn responses_full(body: &Value, id: &str, created: i64) -> Value {
    let chat = super::responses::request_to_chat(body);
    super::responses::response_from_chat(
        &chat_completion(&chat, id, created),
        &model_of(body),
        &super::responses_request::Echo::of_tree(body),
    )
}

/// The same answer as Responses stream events (each a whole `event:`/`data:` block).
pub fn responses_events(body: &Value, id: &str, created: i64) -> Vec<String> {
    let mut chat = super::responses::request_to_chat(body);
    chat["stream_options"] = json!({"include_usage": true});
    let mut t = super::responses::StreamTranslator::new(
        &model_of(body),
        super::responses_request::Echo::of_tree(body),
    );
    let mut events: Vec<String> = stream_chunks(&chat, id, created, true)
        .iter()
        .map(|c| t.push(c))
        .collect();
    events.push(t.finish());
    events
}

pub fn text_completion(body: &Value, id: &str, created: i64) -> Value {
    let text = reply_text(body);
    let (p, c) = (estimate_prompt(body), estimate_text(&text));
    json!({
        "id": id, "object": "text_completion", "created": created, "model": model_of(body),
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
        "usage": usage(p, c),
    })
}

fn embedding_of(text: &str) -> Vec<f64> {
    // FNV-1a over the text, spread into 8 dimensions in [-1, 1].
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (0..8)
        .map(|i| {
            let x = h.rotate_left(i * 8) & 0xffff;
            (x as f64 / 32767.5) - 1.0
        })
        .collect()
}

pub fn embeddings(body: &Value) -> Value {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => vec![String::new()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embedding_of(t)}))
        .collect();
    let p = estimate_prompt(body);
    json!({"object": "list", "data": data, "model": model_of(body),
           "usage": {"prompt_tokens": p, "total_tokens": p}})
}

fn include_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The SSE `data:` payloads of a streamed chat (or legacy completion), `[DONE]` excluded.
/// The usage chunk comes last, only when `stream_options.include_usage` is true.
pub fn stream_chunks(body: &Value, id: &str, created: i64, chat: bool) -> Vec<Value> {
    let text = reply_text(body);
    let model = model_of(body);
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let piece = |delta: Value, finish: Value| {
        if chat {
            json!({"id": id, "object": object, "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]})
        } else {
            json!({"id": id, "object": object, "created": created, "model": model,
                   "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")),
                                "finish_reason": finish, "logprobs": null}]})
        }
    };
    let mut out = Vec::new();
    if chat {
        out.push(piece(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        if let Some(call) = tool_call(body) {
            let mut first = call.clone();
            first["index"] = json!(0);
            first["function"]["arguments"] = json!("");
            out.push(piece(json!({"tool_calls": [first]}), Value::Null));
            let args = call["function"]["arguments"].clone();
            out.push(piece(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
                Value::Null,
            ));
            out.push(piece(json!({}), json!("tool_calls")));
            if include_usage(body) {
                out.push(json!({"id": id, "object": object, "created": created, "model": model,
                                "choices": [], "usage": usage(estimate_prompt(body), estimate_text(&call.to_string()))}));
            }
            return out;
        }
    }
    let text = if chat {
        tool_result_text(body).unwrap_or(text)
    } else {
        text
    };
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for w in words {
        out.push(piece(json!({"content": w}), Value::Null));
    }
    out.push(piece(json!({}), json!("stop")));
    if include_usage(body) {
        out.push(json!({"id": id, "object": object, "created": created, "model": model,
                        "choices": [], "usage": usage(estimate_prompt(body), estimate_text(&text))}));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_and_non_stream_agree_on_usage() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi there"}],
                          "stream": true, "stream_options": {"include_usage": true}});
        let full = chat_completion(&body, "x", 0);
        let chunks = stream_chunks(&body, "x", 0, true);
        let last = chunks.last().unwrap();
        assert_eq!(last["usage"], full["usage"]);
        let text: String = chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(text, full["choices"][0]["message"]["content"]);
        let no_usage = stream_chunks(&json!({"messages": []}), "x", 0, true);
        assert!(no_usage.iter().all(|c| c.get("usage").is_none()));
    }
}
