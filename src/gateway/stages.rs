//! The decisions of a call's stages, free of I/O so each is tested alone: read the request,
//! apply the key's policy, pick the upstreams, size the hold, meter the answer (whole or
//! streamed). `proxy.rs` runs them in order around the ledger, the limiter and the upstreams.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::call::CallError;
use super::chat_chunk::ChatChunk;
use super::endpoint::{Endpoint, Protocol};
use super::lite::{self, Facts, Reading};
use super::settings::{glob_match, parse_net};
use super::skim::{Malformed, Read, Skim, Spans};
use super::sse::SseSplitter;
use super::tokens::{Estimator, LazyBody, estimate_prompt_parts};
use super::upstream::{Upstream, candidates};
use super::usage::{Metered, WireUsage};
use crate::billing::Usage;
use crate::keys::{KeyRecord, policy::is_expired};

pub use crate::billing::config::MAX_TOKENS;

/// The most choices (`n`, `best_of`) one call may ask for (OpenAI's own limit).
pub const MAX_CHOICES: i64 = 128;

/// What is asked, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The body to forward as bytes (with `stream_options.include_usage` added to chat
    /// streams), exactly as they are sent when nothing else changes (the upstream knows the
    /// model by the caller's name and the protocol is its own): a coding agent's request is
    /// tens of KiB, and serialising it again cost more than everything else a call does.
    pub raw: Bytes,
    /// The long strings of `raw` as this reading found them, for a translation to read
    /// them again at once (a Messages or Responses request sent as it came).
    pub spans: Option<Spans>,
    /// Where the top-level `model` value's JSON text sits in `raw` (when `raw` has each
    /// member once): a rename replaces it there ([`Request::renamed`]).
    model_at: Option<(usize, usize)>,
    /// Its JSON tree, built from `raw` only when something needs it whole (a translation,
    /// the built-in mock, a tokenizer's count): see [`Request::body`].
    tree: OnceLock<Value>,
    pub model: String,
    pub stream: bool,
    /// Whether the caller itself asked for the usage chunk (if not, it is hidden).
    pub caller_wants_usage: bool,
    pub prompt_est: i64,
    /// Tokens one choice may take: the largest of the token limits given, else the
    /// configured default (0 for embeddings).
    pub completion_budget: i64,
    /// Choices generated (`n`, or `best_of` for completions, whichever is more).
    pub choices: i64,
}

impl Request {
    fn lazy(&self) -> LazyBody<'_> {
        LazyBody {
            tree: &self.tree,
            raw: &self.raw,
        }
    }

    /// The body as a JSON tree (parsed on first use).
    pub fn body(&self) -> &Value {
        self.lazy().get()
    }

    /// The body's tree to edit; `raw` no longer describes it.
    pub fn body_mut(&mut self) -> &mut Value {
        self.body();
        match self.tree.get_mut() {
            Some(v) => v,
            // `body()` has just set it.
            None => unreachable!("the tree was built above"),
        }
    }

    /// The bytes for an upstream that knows the model as `model`: `raw` with the `model`
    /// value replaced, nothing else touched (a coding agent's tens of KiB are not parsed
    /// and written again for a `model_map` rename). `None` when its place is not known.
    pub fn renamed(&self, model: &str) -> Option<Bytes> {
        let (start, end) = self.model_at?;
        let (head, tail) = (self.raw.get(..start)?, self.raw.get(end..)?);
        let name = serde_json::to_string(model).ok()?;
        let mut out = Vec::with_capacity(head.len() + name.len() + tail.len());
        out.extend_from_slice(head);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(tail);
        Some(Bytes::from(out))
    }

    /// Token estimates for this call (only used when the upstream reports no usage).
    pub fn estimator(&self) -> Estimator<'_> {
        Estimator::new(&self.model, self.lazy(), self.prompt_est)
    }
}

/// A whole number in `1..=max`, or absent (`null` counts as absent). Anything else — a
/// float such as `50000000.0`, a string, a boolean — is refused: it would escape the hold.
fn count(
    map: &Map<String, Value>,
    field: &'static str,
    max: i64,
) -> Result<Option<i64>, CallError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            // A whole number written `5.0` is still whole (JSON Schema agrees); `5.5` is not.
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .filter(|n| (1..=max).contains(n))
            .map(Some)
            .ok_or(CallError::BadCount { field, max }),
    }
}

/// Stage "read": the body as a request to forward.
pub fn read(
    body: Result<Bytes, bool>,
    endpoint: Endpoint,
    body_limit: usize,
    default_max_tokens: i64,
) -> Result<Request, CallError> {
    let body = match body {
        Ok(b) => b,
        Err(true) => return Err(CallError::BodyTooLarge { limit: body_limit }),
        Err(false) => return Err(CallError::BodyUnreadable),
    };
    let Some((
        Members {
            map,
            lite,
            repeated,
            model_at,
        },
        spans,
    )) = members_noted(&body, endpoint)
    else {
        return Err(CallError::NotAnObject);
    };
    let model = map
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(CallError::NoModel)?;
    super::shape::check(endpoint, &map, &lite)?;
    // Messages requires its token limit (Anthropic's API does too).
    if endpoint == Endpoint::Messages && map.get("max_tokens").is_none_or(Value::is_null) {
        return Err(CallError::BadCount {
            field: "max_tokens",
            max: MAX_TOKENS,
        });
    }
    let stream = endpoint != Endpoint::Embeddings
        && map.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut max_tokens = None;
    for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
        max_tokens = max_tokens.max(count(&map, field, MAX_TOKENS)?);
    }
    let choices = count(&map, "n", MAX_CHOICES)?
        .max(count(&map, "best_of", MAX_CHOICES)?)
        .unwrap_or(1);
    let completion_budget = match endpoint {
        Endpoint::Embeddings => 0,
        _ => max_tokens.unwrap_or(default_max_tokens),
    };
    let caller_wants_usage = map
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (text, messages) = lite::prompt_text(&lite);
    let prompt_est =
        estimate_prompt_parts(&map, &|k| lite::member(&lite, k).is_some(), text, messages);
    // Chat streams are asked for their usage chunk; other protocols carry their usage in
    // their own events (and a translated call asks for it when translated). A member named
    // twice is read here as its last value; an upstream that took the first could run
    // another model than the one held and billed: such a body goes upstream as parsed (each
    // name once), never as sent.
    let ask_usage = stream && endpoint.protocol() == Protocol::Chat && !caller_wants_usage;
    let (raw, model_at, spans) = match (ask_usage, repeated) {
        (false, false) => (body, model_at, spans),
        (true, false) => match with_usage_asked(&body, map.contains_key("stream_options")) {
            // (The member is put before every other: `model` moved by its length.)
            Some(edited) => {
                let by = edited.len() - body.len();
                (edited, model_at.map(|(s, e)| (s + by, e + by)), None)
            }
            None => (rebuilt(&body, true)?, None, None),
        },
        (_, true) => (rebuilt(&body, ask_usage)?, None, None),
    };
    Ok(Request {
        raw,
        spans,
        model_at,
        tree: OnceLock::new(),
        model,
        stream,
        caller_wants_usage,
        prompt_est,
        completion_budget,
        choices,
    })
}

/// Stage "policy": may this key make this call, from this address, now?
pub fn policy(
    rec: &KeyRecord,
    model: &str,
    ip: Option<IpAddr>,
    now_ms: i64,
) -> Result<(), CallError> {
    if !rec.enabled {
        return Err(CallError::KeyDisabled);
    }
    if is_expired(rec, now_ms) {
        return Err(CallError::KeyExpired);
    }
    if let Some(allowed) = &rec.limits.models
        && !allowed.iter().any(|g| glob_match(g, model))
    {
        return Err(CallError::ModelNotAllowed(model.to_owned()));
    }
    if let Some(nets) = &rec.limits.ips {
        let ok = ip.is_some_and(|ip| {
            nets.iter()
                .filter_map(|n| parse_net(n))
                .any(|n| n.contains(&ip))
        });
        if !ok {
            return Err(CallError::IpNotAllowed);
        }
    }
    Ok(())
}

/// Top-level members not parsed into a tree: the big ones, read in one pass for their shape
/// and the text the prompt estimate counts (`lite`). A coding agent's request is mostly
/// these: Claude Code's `system`, Codex's `input` and `instructions`.
fn lite_members(endpoint: Endpoint) -> &'static [(&'static str, Reading)] {
    const CHAT: &[(&str, Reading)] = &[("messages", lite::MESSAGES), ("tools", lite::SHAPE)];
    const MESSAGES: &[(&str, Reading)] = &[
        ("messages", lite::MESSAGES),
        ("tools", lite::SHAPE),
        ("system", lite::SYSTEM),
    ];
    const RESPONSES: &[(&str, Reading)] = &[
        ("messages", lite::MESSAGES),
        ("tools", lite::SHAPE),
        ("input", lite::INPUT),
        ("instructions", lite::INSTRUCTIONS),
    ];
    match endpoint {
        Endpoint::Messages => MESSAGES,
        Endpoint::Responses => RESPONSES,
        // Completions' `prompt` and embeddings' `input` may be token lists, checked on
        // their trees.
        Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings => CHAT,
    }
}

/// A request body's top-level members, in order: the big ones ([`lite_members`]) as their
/// facts, the others parsed; and whether a name came twice (the later value kept, as a
/// `Value` parse keeps it).
#[derive(Debug, PartialEq)]
struct Members {
    map: Map<String, Value>,
    lite: Vec<(&'static str, Facts)>,
    repeated: bool,
    /// Where the top-level `model` value's JSON text sits in the body.
    model_at: Option<(usize, usize)>,
}

/// The body's members; `None` when it is not one JSON object.
#[cfg(test)]
fn members(body: &[u8], endpoint: Endpoint) -> Option<Members> {
    members_noted(body, endpoint).map(|(m, _)| m)
}

/// The body's members (`None` when it is not one JSON object), and the long strings read,
/// kept for a translation of a Messages or Responses request to read them again at once
/// (chat requests are never translated).
fn members_noted(body: &[u8], endpoint: Endpoint) -> Option<(Members, Option<Spans>)> {
    // Checked as UTF-8 once, not string by string (JSON that is not UTF-8 is refused
    // either way).
    let text = simdutf8::basic::from_utf8(body).ok()?;
    let mut s = match endpoint.protocol() {
        Protocol::Messages | Protocol::Responses => Skim::recording(text),
        Protocol::Chat => Skim::new(text),
    };
    let m = read_members(&mut s, lite_members(endpoint)).ok()?;
    Some((m, s.take_spans()))
}

fn read_members(s: &mut Skim<'_>, lite: &'static [(&'static str, Reading)]) -> Read<Members> {
    let mut m = Members {
        map: Map::new(),
        lite: Vec::new(),
        repeated: false,
        model_at: None,
    };
    s.expect(b'{')?;
    let mut more = s.first(b'}')?;
    while more {
        let k = s.key()?;
        if let Some((name, reading)) = lite.iter().find(|(n, _)| *n == k.as_str()) {
            let v = reading.read(s)?;
            m.repeated |= lite::member(&m.lite, name).is_some();
            m.lite.retain(|(n, _)| n != name);
            m.lite.push((name, v));
        } else {
            s.peek()?;
            let start = s.pos();
            s.skip()?;
            let end = s.pos();
            if k.as_str() == "model" {
                // Where it is written, so that a rename can replace it in the bytes.
                m.model_at = Some((start, end));
            }
            let v: Value = serde_json::from_str(s.slice(start, end)).map_err(|_| Malformed)?;
            m.repeated |= m.map.insert(k.into_string(), v).is_some();
        }
        more = s.next(b'}')?;
    }
    // Trailing characters after the object make it no JSON document.
    s.end()?;
    Ok(m)
}

/// The body serialised from its tree (each member once, its last value), asking for the
/// usage chunk when `ask_usage`.
fn rebuilt(body: &Bytes, ask_usage: bool) -> Result<Bytes, CallError> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return Err(CallError::NotAnObject);
    };
    if ask_usage {
        let opts = map.entry("stream_options").or_insert_with(|| json!({}));
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    serde_json::to_vec(&map)
        .map(Bytes::from)
        .map_err(|_| CallError::NotAnObject)
}

/// A chat stream's body asking for the usage chunk, edited as bytes: the member
/// `"stream_options":{"include_usage":true}` put first when the caller sent no
/// `stream_options` (the body is an object, so it opens with `{` after any white space, and
/// has at least `model` after it). `None` when the caller's own `stream_options` must be
/// changed instead: the body is then serialised from its tree.
fn with_usage_asked(raw: &Bytes, has_options: bool) -> Option<Bytes> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let open = raw.iter().position(|b| !b.is_ascii_whitespace())?;
    if has_options || raw[open] != b'{' {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + MEMBER.len());
    out.extend_from_slice(&raw[..=open]);
    out.extend_from_slice(MEMBER);
    out.extend_from_slice(&raw[open + 1..]);
    Some(Bytes::from(out))
}

/// Stage "route": the upstreams to try, in order: those that speak the call's protocol, or
/// chat (they get it translated).
pub fn route(
    upstreams: &[Arc<Upstream>],
    endpoint: Endpoint,
    model: &str,
    now_ms: i64,
) -> Result<Vec<Arc<Upstream>>, CallError> {
    let mut c = candidates(upstreams, model, now_ms);
    c.retain(|u| u.speaks(endpoint.protocol()) || u.speaks(Protocol::Chat));
    if c.is_empty() {
        Err(CallError::ModelNotFound(model.to_owned()))
    } else {
        Ok(c)
    }
}

/// What a whole answer used. Only `usage` is parsed (no tree is built) unless it is missing
/// and the text must be estimated.
pub fn metered_full(bytes: &[u8], est: &Estimator, endpoint: Endpoint) -> Metered {
    let (usage, delivered) = super::usage::answer(bytes);
    let mut m = match usage {
        Some(u) => Metered::reported(u),
        None => {
            let parsed: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
            Metered::estimated(est.prompt(), est.text(&answer_text(&parsed)))
        }
    };
    if endpoint == Endpoint::Embeddings {
        m.usage.output = 0;
        m.usage.reasoning = 0;
    }
    m.delivered(delivered)
}

/// Text generated in a (non-streamed) answer, for estimating when usage is missing.
fn answer_text(v: &Value) -> String {
    let mut out = String::new();
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for c in choices {
            for p in ["/message/content", "/text", "/delta/content"] {
                if let Some(t) = c.pointer(p).and_then(Value::as_str) {
                    out.push_str(t);
                }
            }
        }
    }
    out
}

/// Stage "meter" for streams: splits the upstream's bytes into events, reads usage and text
/// as they pass, and says what to forward (the usage-only chunk is hidden from a caller who
/// did not ask for it).
#[derive(Default)]
pub struct StreamMeter {
    splitter: SseSplitter,
    caller_wants_usage: bool,
    pub usage: Option<Usage>,
    pub text: String,
    /// A tool call was streamed (content without text).
    pub tool_calls: bool,
    pub done: bool,
}

/// A line longer than the splitter allows.
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLong;

impl StreamMeter {
    pub fn new(caller_wants_usage: bool) -> Self {
        Self {
            caller_wants_usage,
            ..Self::default()
        }
    }

    /// The bytes to forward for this chunk (empty: nothing yet).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, EventTooLong> {
        let mut out = Vec::with_capacity(chunk.len() + 16);
        let events = self.splitter.push(chunk).map_err(|_| EventTooLong)?;
        for ev in events {
            if ev.data == "[DONE]" {
                self.done = true;
            } else if let Some(c) = ChatChunk::parse(&ev.data) {
                self.observe(&c);
                let usage_only =
                    c.usage.is_some() && c.choices.as_ref().is_some_and(|v| v.is_empty());
                if usage_only && !self.caller_wants_usage {
                    continue;
                }
            }
            out.extend_from_slice(&ev.raw);
            out.extend_from_slice(b"\n\n");
        }
        Ok(out)
    }

    /// A chunk's usage and text (a translated stream's chunk is read once, by its relay, and
    /// handed here).
    pub fn observe(&mut self, c: &ChatChunk<'_>) {
        // Chat sends its usage whole, in one chunk.
        let usage = c
            .usage
            .as_ref()
            .map(<WireUsage as serde::Deserialize>::deserialize);
        if let Some(u) = usage
            .and_then(Result::ok)
            .as_ref()
            .and_then(WireUsage::usage)
        {
            self.usage = Some(u);
        }
        for choice in c.choices.iter().flatten() {
            let d = choice.delta.as_ref();
            let texts = [
                d.and_then(|d| d.content.as_deref()),
                d.and_then(|d| d.reasoning_content.as_deref()),
                choice.text.as_deref(),
            ];
            for t in texts.into_iter().flatten() {
                self.text.push_str(t);
            }
            // A tool call is content too.
            self.tool_calls |= d.is_some_and(|d| d.tool_calls.is_some());
        }
    }

    /// What is left in the splitter at the end (an event without its blank line).
    pub fn rest(&mut self) -> Option<Bytes> {
        self.splitter.rest()
    }

    /// Whether anything was generated: text, reasoning or a tool call.
    pub fn delivered(&self) -> bool {
        !self.text.is_empty() || self.tool_calls
    }

    /// What the stream used, at its end.
    pub fn metered(&self, est: &Estimator) -> Metered {
        match self.usage {
            Some(u) => Metered::reported(u),
            None => Metered::estimated(est.prompt(), est.text(&self.text)),
        }
        .delivered(self.delivered())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// The members as serde_json read them before `Skim`: the oracle of `members`.
    pub(super) fn members_oracle(body: &[u8], endpoint: Endpoint) -> Option<Members> {
        // Checked as UTF-8 once, not string by string (JSON that is not UTF-8 is refused
        // either way).
        let text = std::str::from_utf8(body).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let read = ReadMembers {
            lite: lite_members(endpoint),
            base: text.as_ptr() as usize,
        };
        let m = serde::de::DeserializeSeed::deserialize(read, &mut de);
        // Trailing characters after the object make it no JSON document, as `from_slice` says.
        de.end().ok()?;
        m.ok()
    }

    struct ReadMembers {
        lite: &'static [(&'static str, Reading)],
        /// Where the body's text starts in memory (`model`'s place is measured from it).
        base: usize,
    }

    impl<'de> serde::de::DeserializeSeed<'de> for ReadMembers {
        type Value = Members;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Members, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> serde::de::Visitor<'de> for ReadMembers {
        type Value = Members;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Members, A::Error> {
            let mut m = Members {
                map: Map::new(),
                lite: Vec::new(),
                repeated: false,
                model_at: None,
            };
            while let Some(k) = a.next_key::<String>()? {
                if k == "model" {
                    // Read as written, so that a rename can replace it in the bytes.
                    let raw = a.next_value::<&'de serde_json::value::RawValue>()?;
                    let start = (raw.get().as_ptr() as usize).wrapping_sub(self.base);
                    m.model_at = Some((start, start + raw.get().len()));
                    let v = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
                    m.repeated |= m.map.insert(k, v).is_some();
                } else if let Some((name, reading)) = self.lite.iter().find(|(n, _)| *n == k) {
                    let v = a.next_value_seed(*reading)?;
                    m.repeated |= lite::member(&m.lite, name).is_some();
                    m.lite.retain(|(n, _)| n != name);
                    m.lite.push((name, v));
                } else {
                    let v: Value = a.next_value()?;
                    m.repeated |= m.map.insert(k, v).is_some();
                }
            }
            Ok(m)
        }
    }

    use crate::gateway::settings::mock_upstream;
    use crate::keys::KeyLimits;

    /// `body` with the fields `ep` requires added when absent (these tests are about others).
    fn complete(mut body: Value, ep: Endpoint) -> Value {
        if let Value::Object(m) = &mut body {
            for f in crate::gateway::shape::fields(ep)
                .iter()
                .filter(|f| f.required)
            {
                m.entry(f.name).or_insert_with(|| match f.kind {
                    crate::gateway::shape::Kind::Objects => {
                        json!([{"role": "user", "content": "x"}])
                    }
                    _ => json!("x"),
                });
            }
        }
        body
    }

    fn read_ok(body: Value, ep: Endpoint) -> Request {
        read(
            Ok(Bytes::from(complete(body, ep).to_string())),
            ep,
            100,
            256,
        )
        .unwrap()
    }

    #[test]
    fn read_refuses_what_cannot_be_forwarded() {
        let r = |b: &str| {
            let body = serde_json::from_str::<Value>(b)
                .map(|v| complete(v, Endpoint::Chat).to_string())
                .unwrap_or_else(|_| b.to_owned());
            read(Ok(Bytes::from(body)), Endpoint::Chat, 100, 256)
        };
        assert_eq!(
            read(Err(true), Endpoint::Chat, 100, 256),
            Err(CallError::BodyTooLarge { limit: 100 })
        );
        assert_eq!(
            read(Err(false), Endpoint::Chat, 100, 256),
            Err(CallError::BodyUnreadable)
        );
        assert_eq!(r("[1]"), Err(CallError::NotAnObject));
        assert_eq!(r("{nope"), Err(CallError::NotAnObject));
        assert_eq!(r(r#"{"messages":[]}"#), Err(CallError::NoModel));
        let too_many = CallError::BadCount {
            field: "max_tokens",
            max: MAX_TOKENS,
        };
        assert_eq!(
            r(r#"{"model":"m","max_tokens":10000001}"#),
            Err(too_many.clone())
        );
        // Numbers that are not whole, and strings, would escape the hold.
        assert_eq!(
            r(r#"{"model":"m","max_tokens":50000000.0}"#),
            Err(too_many.clone())
        );
        assert_eq!(
            r(r#"{"model":"m","max_tokens":"500"}"#),
            Err(too_many.clone())
        );
        assert_eq!(r(r#"{"model":"m","max_tokens":0}"#), Err(too_many));
        assert_eq!(
            r(r#"{"model":"m","max_output_tokens":1.5}"#),
            Err(CallError::BadCount {
                field: "max_output_tokens",
                max: MAX_TOKENS
            })
        );
        for n in ["10.5", "\"10\"", "0", "129", "true"] {
            assert_eq!(
                r(&format!(r#"{{"model":"m","n":{n}}}"#)),
                Err(CallError::BadCount {
                    field: "n",
                    max: MAX_CHOICES
                }),
                "n = {n}"
            );
        }
        // null is absent; the largest limit given counts; n and best_of multiply the budget.
        let q =
            r(r#"{"model":"m","max_tokens":null,"max_completion_tokens":7,"max_tokens":3,"n":4}"#)
                .unwrap();
        assert_eq!((q.completion_budget, q.choices), (7, 4));
        let q = r(r#"{"model":"m","max_tokens":5,"max_completion_tokens":9,"best_of":6,"n":2}"#)
            .unwrap();
        assert_eq!((q.completion_budget, q.choices), (9, 6));
    }

    /// The estimate from the big members' JSON text is the estimate from the whole tree,
    /// on every endpoint, for the usual shapes and the unusual ones (a repeated `content`,
    /// parts that are no objects, escapes, `null`s, an `input` string or list, a `system`
    /// that is not counted).
    #[test]
    fn estimates_from_text_match_estimates_from_trees() {
        for text in [
            r#"{"messages":[{"role":"user","content":"hello \"there\"\n\u00e9"}],"input":"abc"}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"ab"},"x",{"text":5},{"text":"cd"}]}]}"#,
            r#"{"messages":[{"content":null},{"content":"a","content":"bbbb"},{}]}"#,
            r#"{"messages":[{"role":"user","content":{"odd":1}}],"prompt":["ab","cd"]}"#,
            r#"{"prompt":"only a prompt"}"#,
            r#"{"input":"a Responses prompt \u65e5\u672c","instructions":"be brief"}"#,
            r#"{"input":["ab","cd",{"role":"user","content":"not counted"},3],"tools":[{"name":"t"}]}"#,
            r#"{"input":[{"type":"message","content":[{"type":"input_text","text":"x"}]}]}"#,
            r#"{"system":[{"type":"text","text":"sys"}],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"system":"sys","input":null,"messages":null}"#,
            r#"{"system":[{"type":"text","text":"ab"},{"content":"cd"},"ef"],"instructions":"gh"}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"file text"},{"type":"tool_result","content":[{"type":"text","text":"x"},{"type":"image"}]},{"type":"tool_use","input":{"path":"p"}}]}]}"#,
            r#"{"input":[{"type":"message","role":"user","content":"hi"},{"type":"function_call","arguments":"{\"cmd\":1}"},{"type":"function_call_output","output":"out"},{"type":"function_call_output","output":[{"type":"input_text","text":"o2"}]},"s",7,[1]]}"#,
            r#"{"input":[{"content":"a","content":"bb","output":"c","output":5,"arguments":"d"}],"system":{"text":"not counted"}}"#,
            r#"{"instructions":["x"],"system":[{"text":"a","text":"b","content":[{"content":[{"text":"deep"}]}]}]}"#,
            // Counted as written: escapes of every kind in plain texts and tool outputs.
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","content":"a\n\"b\"\u00e9\ud83e\udd80 \/"},{"type":"text","text":"\t\u0041\u65e5"}]}],"system":[{"text":"s\\y"}]}"#,
            r#"{"input":[{"type":"function_call_output","output":"o\nut\u00e9"},{"type":"function_call","arguments":"{\"a\":\"\u00e9\"}"},{"type":"function_call_output","output":[{"text":"p\"q"}]},{"output":null},{"output":{"text":"no"}}]}"#,
        ] {
            let tree: Value = serde_json::from_str(text).unwrap();
            for ep in Endpoint::ALL {
                let m = members(text.as_bytes(), ep).unwrap();
                let (chars, messages) = lite::prompt_text(&m.lite);
                let is_lite = |k: &str| lite::member(&m.lite, k).is_some();
                assert_eq!(
                    estimate_prompt_parts(&m.map, &is_lite, chars, messages),
                    crate::gateway::tokens::estimate_prompt(&tree),
                    "{ep:?} {text}"
                );
            }
        }
    }

    /// A rename replaces the `model` value in the caller's bytes and nothing else, after the
    /// usage member was put in too; a body with a member named twice has no known place.
    #[test]
    fn a_rename_replaces_the_model_in_the_bytes() {
        let read_as = |ep: Endpoint, body: &str| {
            read(Ok(Bytes::from(body.to_owned())), ep, 1 << 20, 256).unwrap()
        };
        let body = r#"{ "messages" : [{"role":"user","content":"a\u00e9\n"}], "model" : "gpt\u002d4o" ,"max_tokens":5}"#;
        let q = read_as(Endpoint::Chat, body);
        assert_eq!(q.model, "gpt-4o");
        let renamed = q.renamed("deep\"seek").unwrap();
        assert_eq!(
            std::str::from_utf8(&renamed).unwrap(),
            body.replace(r#""gpt\u002d4o""#, r#""deep\"seek""#)
        );
        let mut want: Value = serde_json::from_str(body).unwrap();
        want["model"] = json!("deep\"seek");
        assert_eq!(serde_json::from_slice::<Value>(&renamed).unwrap(), want);
        // A chat stream: the usage member was put first, the model moved by its length.
        let q = read_as(
            Endpoint::Chat,
            r#"{"model":"m","stream":true,"messages":[{}]}"#,
        );
        assert_eq!(
            &q.renamed("other").unwrap()[..],
            br#"{"stream_options":{"include_usage":true},"model":"other","stream":true,"messages":[{}]}"#
        );
        // Messages and Responses bodies alike.
        let q = read_as(
            Endpoint::Messages,
            r#"{"max_tokens":5,"messages":[{}],"model":"claude-x"}"#,
        );
        assert_eq!(
            &q.renamed("deepseek-chat").unwrap()[..],
            br#"{"max_tokens":5,"messages":[{}],"model":"deepseek-chat"}"#
        );
        // A member named twice: the body is rebuilt, and renamed through its tree.
        let q = read_as(
            Endpoint::Chat,
            r#"{"model":"a","model":"b","messages":[{}]}"#,
        );
        assert_eq!(q.model, "b");
        assert!(q.renamed("c").is_none());
    }

    /// A string JSON refuses (a lone surrogate) makes the body unreadable wherever it is,
    /// counted as written or unescaped, as it makes its tree.
    #[test]
    fn a_lone_surrogate_is_refused_wherever_it_stands() {
        for text in [
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a\ud800"}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","content":"\udc00"}]}]}"#,
            r#"{"input":[{"type":"function_call","arguments":"\ud800\u0041"}]}"#,
            r#"{"messages":[{"role":"user","content":"\ud800"}]}"#,
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
            for ep in Endpoint::ALL {
                assert!(members(text.as_bytes(), ep).is_none(), "{ep:?} {text}");
            }
        }
    }

    /// An agent's prompt is counted whole: Claude Code's `system` and tool results, Codex's
    /// `instructions`, input items and function outputs (before, only `messages` text and an
    /// `input` string were, so an agent's hold covered little of its prompt).
    #[test]
    fn an_agents_whole_prompt_is_counted() {
        let text = "x".repeat(4000); // 1 000 tokens by the fallback
        let est = |ep: Endpoint, v: Value| read_agent(ep, &v.to_string()).prompt_est;
        let m = Endpoint::Messages;
        let user = json!([{"role": "user", "content": "hi"}]);
        for body in [
            json!({"model": "c", "max_tokens": 5, "system": text, "messages": user}),
            json!({"model": "c", "max_tokens": 5, "system": [{"type": "text", "text": text}], "messages": user}),
            json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": text}]}]}),
            json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": text}]}]}]}),
        ] {
            assert!(est(m, body.clone()) >= 1000, "{body}");
        }
        let r = Endpoint::Responses;
        for body in [
            json!({"model": "g", "input": "hi", "instructions": text}),
            json!({"model": "g", "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}),
            json!({"model": "g", "input": [{"type": "function_call_output", "call_id": "c", "output": text}]}),
            json!({"model": "g", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": text}]}),
        ] {
            assert!(est(r, body.clone()) >= 1000, "{body}");
        }
    }

    /// A body read in one pass: counted as its tree is, forwarded as sent.
    fn read_agent(ep: Endpoint, body: &str) -> Request {
        let q = read(Ok(Bytes::from(body.to_owned())), ep, 1 << 20, 256).unwrap();
        let tree: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            q.prompt_est,
            crate::gateway::tokens::estimate_prompt(&tree),
            "{body}"
        );
        assert_eq!(q.raw, body.as_bytes(), "forwarded as sent: {body}");
        q
    }

    /// A body refused for the shape of `field`.
    fn refused_for(ep: Endpoint, body: &str, field: &str) {
        match read(Ok(Bytes::from(body.to_owned())), ep, 1 << 20, 256) {
            Err(CallError::BadField { field: f, .. }) => assert_eq!(f, field, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }

    /// Messages' `system` is read without a tree (Claude Code's is several KiB), held to
    /// the same shape.
    #[test]
    fn messages_system_is_read_in_one_pass() {
        let (ok, bad) = (read_agent, refused_for);
        let m = Endpoint::Messages;
        for system in [
            r#""you are \"careful\"""#,
            r#"[{"type":"text","text":"s"}]"#,
            "null",
            "[]",
        ] {
            ok(
                m,
                &format!(
                    r#"{{"model":"c","max_tokens":5,"system":{system},"messages":[{{"role":"user","content":"hi"}}]}}"#
                ),
            );
        }
        for system in ["5", r#"{"type":"text"}"#, r#"["s"]"#, "true"] {
            bad(
                m,
                &format!(
                    r#"{{"model":"c","max_tokens":5,"system":{system},"messages":[{{"role":"user","content":"hi"}}]}}"#
                ),
                "system",
            );
        }
    }

    /// Responses' `input` and `instructions` are read without a tree (Codex's requests are
    /// mostly these), held to the same shapes.
    #[test]
    fn responses_input_is_read_in_one_pass() {
        let (ok, bad) = (read_agent, refused_for);
        let r = Endpoint::Responses;
        let q = ok(
            r,
            r#"{"model":"g","input":"a prompt of some length \u65e5","instructions":"brief"}"#,
        );
        assert!(q.prompt_est > 5);
        ok(
            r,
            r#"{"model":"g","input":[{"type":"function_call_output","call_id":"c","output":"x"}],"instructions":null}"#,
        );
        // A member named twice: its last value counts, and the body goes up as parsed.
        let twice = r#"{"model":"g","input":[],"input":"the last one counts"}"#;
        let q = read(Ok(Bytes::from_static(twice.as_bytes())), r, 1 << 20, 256).unwrap();
        assert_eq!(
            q.raw,
            br#"{"model":"g","input":"the last one counts"}"#.as_slice()
        );
        assert_eq!(
            q.prompt_est,
            crate::gateway::tokens::estimate_prompt(&serde_json::from_str(twice).unwrap())
        );
        for (input, instructions, field) in [
            ("5", r#""i""#, "input"),
            (r#"["a","b"]"#, r#""i""#, "input"),
            ("null", r#""i""#, "input"),
            (r#""p""#, "[]", "instructions"),
            (r#""p""#, "{}", "instructions"),
        ] {
            bad(
                r,
                &format!(r#"{{"model":"g","input":{input},"instructions":{instructions}}}"#),
                field,
            );
        }
        // Not one JSON document: trailing characters after the object.
        assert_eq!(
            read(
                Ok(Bytes::from_static(br#"{"model":"g","input":"p"} x"#)),
                r,
                1 << 20,
                256
            ),
            Err(CallError::NotAnObject)
        );
    }

    #[test]
    fn read_asks_streams_for_usage_and_remembers_who_asked() {
        let q = read_ok(
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hello"}]}),
            Endpoint::Chat,
        );
        assert!(q.stream && !q.caller_wants_usage);
        assert_eq!(q.body()["stream_options"]["include_usage"], true);
        assert_eq!(q.completion_budget, 256, "the configured default");
        assert!(q.prompt_est > 0);
        let q = read_ok(
            json!({"model": "m", "stream": true, "max_tokens": 9,
                "stream_options": {"include_usage": true}}),
            Endpoint::Completions,
        );
        assert!(q.caller_wants_usage);
        assert_eq!(q.completion_budget, 9);
        // Embeddings never stream and never complete.
        let q = read_ok(
            json!({"model": "e", "stream": true, "input": "x"}),
            Endpoint::Embeddings,
        );
        assert!(!q.stream && q.body().get("stream_options").is_none());
        assert_eq!(q.completion_budget, 0);
    }

    fn key() -> KeyRecord {
        KeyRecord {
            id: 1,
            hash: crate::keys::format::hash_key("qp_test"),
            hint: "qp_t…test".into(),
            name: None,
            prefix: "qp".into(),
            quota: None,
            used: 0,
            expires_at: None,
            created_at: 0,
            last_used: None,
            enabled: true,
            metadata: Map::new(),
            owner: None,
            limits: KeyLimits::default(),
            refill: None,
            refill_period: None,
        }
    }

    #[test]
    fn policy_checks_state_model_and_address() {
        let now = 1_000_000;
        let mut k = key();
        assert_eq!(policy(&k, "any", None, now), Ok(()));
        k.limits = KeyLimits {
            models: Some(vec!["deepseek-*".into()]),
            ips: Some(vec!["10.0.0.0/8".into()]),
            ..KeyLimits::default()
        };
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(policy(&k, "deepseek-chat", Some(inside), now), Ok(()));
        assert_eq!(
            policy(&k, "gpt-4o", Some(inside), now),
            Err(CallError::ModelNotAllowed("gpt-4o".into()))
        );
        assert_eq!(
            policy(
                &k,
                "deepseek-chat",
                Some("192.168.0.1".parse().unwrap()),
                now
            ),
            Err(CallError::IpNotAllowed)
        );
        assert_eq!(
            policy(&k, "deepseek-chat", None, now),
            Err(CallError::IpNotAllowed)
        );
        k.expires_at = Some(now - 1);
        assert_eq!(
            policy(&k, "deepseek-chat", Some(inside), now),
            Err(CallError::KeyExpired)
        );
        k.enabled = false;
        assert_eq!(
            policy(&k, "deepseek-chat", Some(inside), now),
            Err(CallError::KeyDisabled)
        );
    }

    #[test]
    fn route_names_a_model_nobody_serves() {
        let only = Arc::new(Upstream::for_tests(
            crate::gateway::settings::UpstreamSettings {
                models: vec!["mock-*".into()],
                ..mock_upstream()
            },
        ));
        assert_eq!(
            route(std::slice::from_ref(&only), Endpoint::Chat, "mock-1", 0)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            route(&[only], Endpoint::Chat, "gpt-4o", 0).map(|v| v.len()),
            Err(CallError::ModelNotFound("gpt-4o".into()))
        );
    }

    #[test]
    fn whole_answers_are_metered_from_usage_or_estimated() {
        let with = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#;
        assert_eq!(
            metered_full(with, &Estimator::plain(99), Endpoint::Chat),
            Metered::reported(Usage::plain(7, 3))
        );
        let without = br#"{"choices":[{"message":{"content":"some words here"}}]}"#;
        let m = metered_full(without, &Estimator::plain(11), Endpoint::Chat);
        assert_eq!((m.usage.prompt(), m.estimated), (11, true));
        assert!(m.usage.output > 0);
        assert_eq!(
            metered_full(with, &Estimator::plain(99), Endpoint::Embeddings),
            Metered::reported(Usage::plain(7, 0))
        );
    }

    #[test]
    fn streams_are_metered_and_the_unasked_usage_chunk_hidden() {
        let events = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut hidden = StreamMeter::new(false);
        // Split anywhere: the meter sees whole events.
        let (a, b) = events.as_bytes().split_at(23);
        let mut out = hidden.push(a).unwrap();
        out.extend(hidden.push(b).unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(hidden.done);
        assert_eq!(hidden.text, "Hello");
        assert_eq!(
            hidden.metered(&Estimator::plain(1)),
            Metered::reported(Usage::plain(5, 2))
        );
        assert!(!out.contains("usage") && out.contains("[DONE]"));
        let mut shown = StreamMeter::new(true);
        let out = String::from_utf8(shown.push(events.as_bytes()).unwrap()).unwrap();
        assert!(out.contains("\"usage\""));
        // No usage at all: estimated from the text.
        let mut est = StreamMeter::new(false);
        est.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"a b c d\"}}]}\n\n")
            .unwrap();
        let m = est.metered(&Estimator::plain(4));
        assert!(m.estimated && m.usage.prompt() == 4 && m.usage.output > 0);
    }
}

/// `members` against the serde_json reading it replaced, on generated bodies: valid ones,
/// escapes of every kind (lone surrogates, `\u` too short, bad letters, control bytes),
/// numbers out of range or badly written, names repeated or escaped, and the same bodies
/// cut short or with one byte changed.
#[cfg(test)]
pub(crate) mod read_as_serde_did {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::tests::members_oracle;
    use super::*;

    pub(crate) fn string() -> impl Strategy<Value = String> {
        let good = prop_oneof![
            "[a-z ]{0,12}",
            Just("é".to_owned()),
            Just("日本".to_owned()),
            Just("🦀".to_owned()),
            Just(r"\n".to_owned()),
            Just(r#"\""#.to_owned()),
            Just(r"\\".to_owned()),
            Just(r"\/".to_owned()),
            Just(r"\t\b\f\r".to_owned()),
            Just(r"\u00e9".to_owned()),
            Just(r"\u0041".to_owned()),
            Just(r"\uD83E\udd80".to_owned()),
            Just("fn main() {\\n    println!(\\\"hi\\\");\\n}\\n".to_owned()),
        ];
        let bad = prop_oneof![
            Just(r"\ud800".to_owned()),
            Just(r"\ud800\u0041".to_owned()),
            Just(r"\udc00".to_owned()),
            Just(r"\u12".to_owned()),
            Just(r"\x".to_owned()),
            Just("\u{1}".to_owned()),
            Just("\t".to_owned()),
        ];
        let part = prop_oneof![60 => good, 1 => bad];
        prop::collection::vec(part, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn key() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("model"),
            Just("messages"),
            Just("tools"),
            Just("system"),
            Just("input"),
            Just("instructions"),
            Just("content"),
            Just("text"),
            Just("output"),
            Just("arguments"),
            Just("type"),
            Just("stream"),
            Just("max_tokens"),
            Just(r"\u006dodel"),
            Just(r"con\u0074ent"),
        ];
        prop_oneof![
            40 => name.prop_map(|n| format!("\"{n}\"")),
            5 => string(),
            1 => Just(r#""t\ud800""#.to_owned()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            Just("0"),
            Just("-1"),
            Just("1.5"),
            Just("5.0"),
            Just("2E-5"),
            Just("1e400"),
            Just("-1e999"),
            Just("-0"),
            Just("01"),
            Just("1."),
            Just("-"),
            Just(".5"),
            Just("1e"),
            Just("123456789012345678901234567890"),
            Just("100"),
        ];
        let leaf = prop_oneof![
            40 => string(),
            10 => Just("100".to_owned()),
            4 => number.prop_map(str::to_owned),
            10 => prop_oneof![Just("true"), Just("false"), Just("null")].prop_map(str::to_owned),
            1 => prop_oneof![Just("nul"), Just("tru")].prop_map(str::to_owned),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            let ws = prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r")];
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..6), ws.clone())
                    .prop_map(|(v, w)| format!("[{w}{}]", v.join(&format!(",{w}")))),
                (prop::collection::vec((key(), inner), 0..6), ws).prop_map(|(kv, w)| {
                    let members: Vec<String> =
                        kv.iter().map(|(k, v)| format!("{k}{w}:{w}{v}")).collect();
                    format!("{{{w}{}{w}}}", members.join(","))
                }),
            ]
        })
    }

    /// What agents send in the big members: messages, parts, items, some of them odd.
    fn agent_value() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            Just("\"content\""),
            Just("\"text\""),
            Just("\"output\""),
            Just("\"arguments\""),
            Just("\"type\""),
            Just("\"role\""),
        ];
        let leaf = prop_oneof![4 => string(), 1 => value()];
        let element = leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec((field.clone(), inner.clone()), 0..4).prop_map(|kv| {
                    let m: Vec<String> = kv.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", m.join(","))
                }),
                prop::collection::vec(inner, 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            ]
        });
        let part = (string(), string())
            .prop_map(|(t, c)| format!(r#"{{"type":"text","text":{t},"content":{c}}}"#));
        let content = prop_oneof![
            string(),
            prop::collection::vec(part, 0..3).prop_map(|v| format!("[{}]", v.join(","))),
        ];
        let message = content.prop_map(|c| format!(r#"{{"role":"user","content":{c}}}"#));
        let item = prop_oneof![3 => message, 1 => element];
        prop_oneof![
            4 => prop::collection::vec(item, 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            1 => string(),
        ]
    }

    pub(crate) fn body() -> impl Strategy<Value = Vec<u8>> {
        let big = prop_oneof![
            Just("\"messages\""),
            Just("\"system\""),
            Just("\"input\""),
            Just("\"instructions\""),
            Just("\"tools\""),
        ]
        .prop_map(str::to_owned);
        let member = prop_oneof![(key(), value()), (big, agent_value())];
        let object = prop::collection::vec(member, 0..7).prop_map(|kv| {
            let members: Vec<String> = kv.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!(" {{{}}} ", members.join(","))
        });
        spoiled(object, 8)
    }

    /// `text`'s bytes, and some of them (three in `kinds`) cut short or with one byte changed
    /// or added: a quote, a backslash, a bracket, a comma, a letter or digit of a number or an
    /// escape, a space, a control byte, the start of a two-byte character.
    pub(crate) fn spoiled(
        text: impl Strategy<Value = String>,
        kinds: u8,
    ) -> impl Strategy<Value = Vec<u8>> {
        let odd = prop::sample::select(vec![
            b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'u', b'0', b'e', b'-', b' ', 1u8,
            0xC3,
        ]);
        (text, 0..kinds, any::<prop::sample::Index>(), odd).prop_map(|(text, how, at, b)| {
            let mut bytes = text.into_bytes();
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match how {
                0 => bytes.truncate(i),
                1 if i < bytes.len() => bytes[i] = b,
                2 => bytes.insert(i, b),
                _ => {}
            }
            bytes
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn members_read_as_serde_read_them(body in body()) {
            for ep in Endpoint::ALL {
                prop_assert_eq!(members(&body, ep), members_oracle(&body, ep), "{:?} {}", ep, String::from_utf8_lossy(&body));
            }
        }
    }

    /// Each generated kind of body occurs: accepted ones with counted text, refused ones.
    #[test]
    fn the_generator_makes_both_kinds() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut read, mut refused, mut counted) = (0, 0, 0);
        for _ in 0..2000 {
            let b = body().new_tree(&mut runner).unwrap().current();
            match members(&b, Endpoint::Responses) {
                Some(m) => {
                    read += 1;
                    counted += usize::from(lite::prompt_text(&m.lite).0 != Default::default());
                }
                None => refused += 1,
            }
        }
        assert!(
            read > 500 && refused > 300 && counted > 200,
            "{read} {refused} {counted}"
        );
    }
}

/// A translation that steps over the strings the first reading noted writes, byte for
/// byte, what one scanning each string again writes.
#[cfg(test)]
mod spans_read_again {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::*;
    use crate::gateway::raw_json::oracle::bodies;
    use crate::gateway::{messages_request, responses_request};

    type Written = Option<(Vec<u8>, Option<Map<String, Value>>)>;

    /// The chat (and a Responses request's echo) written from `body` read with `spans`.
    fn translated(ep: Endpoint, body: &[u8], spans: Option<&Spans>) -> Written {
        match ep {
            Endpoint::Responses => responses_request::to_chat(body, spans, "m")
                .ok()
                .map(|c| (c.body, Some(c.echo.to_map()))),
            _ => messages_request::to_chat(body, spans, "m")
                .ok()
                .map(|c| (c, None)),
        }
    }

    /// Both ways, for a body the first reading took: with its spans, and without.
    fn both(ep: Endpoint, body: &[u8]) -> Option<(usize, Written, Written)> {
        let (_, spans) = members_noted(body, ep)?;
        let spans = spans?;
        Some((
            spans.len(),
            translated(ep, body, Some(&spans)),
            translated(ep, body, None),
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn translations_write_the_same_with_spans(
            messages in bodies::body(false),
            responses in bodies::body(true),
        ) {
            for (ep, body) in [(Endpoint::Messages, messages), (Endpoint::Responses, responses)] {
                if let Some((_, with, without)) = both(ep, &body) {
                    prop_assert_eq!(with, without, "{:?} {}", ep, String::from_utf8_lossy(&body));
                }
            }
        }
    }

    /// The generated bodies have long strings for the spans to hold, and get translated.
    #[test]
    fn the_bodies_have_long_strings() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut noted = [0usize; 2];
        for _ in 0..2000 {
            for (i, (ep, responses)) in [(Endpoint::Messages, false), (Endpoint::Responses, true)]
                .into_iter()
                .enumerate()
            {
                let b = bodies::body(responses)
                    .new_tree(&mut runner)
                    .unwrap()
                    .current();
                if let Some((n, Some(_), _)) = both(ep, &b) {
                    noted[i] += usize::from(n > 0);
                }
            }
        }
        assert!(noted.iter().all(|&n| n > 200), "{noted:?}");
    }
}
