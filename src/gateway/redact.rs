//! An upstream's error answer goes back to the caller, but never a credential in it:
//! upstreams echo the key they were sent ("Incorrect API key provided: sk-…"), and that key
//! is ours. The caller gets an OpenAI-shaped error whose texts have every configured upstream
//! key and anything shaped like a bearer token or an `sk-` key replaced.

use serde_json::{Value, json};

const MASK: &str = "[redacted]";

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// `text` with each of `secrets`, each `sk-…` key and each `Bearer …` token masked.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut s = text.to_owned();
    for secret in secrets.iter().filter(|x| x.len() >= 4) {
        s = s.replace(secret, MASK);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    loop {
        let sk = rest.find("sk-");
        let bearer = rest.to_ascii_lowercase().find("bearer ");
        let next = match (sk, bearer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(at) = next else {
            out.push_str(rest);
            break;
        };
        let (head, tail) = rest.split_at(at);
        out.push_str(head);
        let skip = if tail.starts_with("sk-") {
            3
        } else {
            out.push_str(&tail[..7]);
            7
        };
        let token_len = tail[skip..]
            .chars()
            .take_while(|c| token_char(*c))
            .map(char::len_utf8)
            .sum::<usize>();
        if token_len >= 6 {
            out.push_str(MASK);
        } else {
            out.push_str(&tail[if skip == 3 { 0 } else { 7 }..skip + token_len]);
        }
        rest = &tail[skip + token_len..];
    }
    out
}

/// The caller's body for an upstream's error answer `body` with `status`: the upstream's
/// `error.message` / `type` / `code` when it sent OpenAI's shape, redacted; else a message of
/// our own.
pub fn error_body(status: u16, body: &[u8], secrets: &[&str]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| redact(s, secrets));
    let message = match err {
        Some(Value::String(m)) => Some(redact(m, secrets)),
        Some(e) => text(e.get("message")),
        None => None,
    }
    .unwrap_or_else(|| format!("上游返回 HTTP {status}"));
    let kind = err
        .and_then(|e| text(e.get("type")))
        .unwrap_or_else(|| "upstream_error".to_owned());
    let code = err.and_then(|e| e.get("code")).map(|c| match c {
        Value::String(s) => Value::String(redact(s, secrets)),
        Value::Number(_) | Value::Null => c.clone(),
        _ => Value::Null,
    });
    let param = err.and_then(|e| text(e.get("param")));
    serde_json::to_vec(&json!({
        "error": {"message": message, "type": kind, "param": param, "code": code.unwrap_or(Value::Null)}
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_bearer_tokens_are_masked() {
        let t = "Incorrect API key provided: Bearer sk-proj-ABCdef123456. You sent sk-abcdefgh and my-own-key-42.";
        let r = redact(t, &["my-own-key-42"]);
        assert!(
            !r.contains("ABCdef123456") && !r.contains("abcdefgh") && !r.contains("my-own-key-42"),
            "{r}"
        );
        assert!(
            r.starts_with("Incorrect API key provided: Bearer [redacted]"),
            "{r}"
        );
        assert_eq!(redact("ask-me a task-list", &[]), "ask-me a task-list");
        assert_eq!(redact("bearer x", &[]), "bearer x");
        assert_eq!(redact("ünïcode sk-ü", &[]), "ünïcode sk-ü");
    }

    #[test]
    fn error_bodies_become_openai_shaped_and_redacted() {
        let b = br#"{"error":{"message":"Incorrect API key provided: sk-live-0123456789","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let v: Value = serde_json::from_slice(&error_body(401, b, &[])).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(!v.to_string().contains("0123456789"));
        let v: Value = serde_json::from_slice(&error_body(404, b"<html>nope</html>", &[])).unwrap();
        assert_eq!(v["error"]["message"], "上游返回 HTTP 404");
        assert_eq!(v["error"]["type"], "upstream_error");
    }
}
