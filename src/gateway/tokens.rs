//! Token estimates, used only when an upstream reports no usage (the log row is then marked
//! `estimated`) and for reservations. Roughly: 4 ASCII characters a token, one token per
//! other character (CJK text is about a token a character).

use serde_json::Value;

pub fn estimate_text(s: &str) -> i64 {
    let (mut ascii, mut other) = (0i64, 0i64);
    for c in s.chars() {
        if c.is_ascii() {
            ascii += 1;
        } else {
            other += 1;
        }
    }
    (ascii + 3) / 4 + other
}

/// Text of a message `content`: a string, or an array of parts with `text`.
fn content_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                }
            }
        }
        _ => {}
    }
}

/// Prompt tokens of a chat, completion or embedding request.
pub fn estimate_prompt(body: &Value) -> i64 {
    let mut text = String::new();
    let mut overhead = 0i64;
    if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
        for m in msgs {
            overhead += 4;
            if let Some(c) = m.get("content") {
                content_text(c, &mut text);
            }
        }
    }
    for field in ["prompt", "input"] {
        match body.get(field) {
            Some(Value::String(s)) => text.push_str(s),
            Some(Value::Array(items)) => {
                for i in items {
                    if let Some(s) = i.as_str() {
                        text.push_str(s);
                    }
                }
            }
            _ => {}
        }
    }
    (estimate_text(&text) + overhead).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates() {
        assert_eq!(estimate_text("abcdefgh"), 2);
        assert_eq!(estimate_text("你好"), 2);
        let chat = json!({"messages": [{"role": "user", "content": "hello world!"}]});
        assert_eq!(estimate_prompt(&chat), 3 + 4);
        let parts =
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]});
        assert_eq!(estimate_prompt(&parts), 1 + 4);
        assert_eq!(estimate_prompt(&json!({"input": ["abcd", "efgh"]})), 2);
    }
}
