//! What a streamed answer's bytes become on their way to the caller, and what they used: a
//! chat stream passed on (its unasked usage chunk hidden), a native Messages stream passed
//! on, or a chat stream translated into Messages events. One interface for the pump.

use bytes::Bytes;
use serde_json::Value;

use super::anthropic::{NativeUsage, StreamTranslator};
use super::sse::SseSplitter;
use super::stages::{EventTooLong, StreamMeter};
use super::tokens::estimate_text;

pub enum Relay {
    Chat(StreamMeter),
    Messages(NativeMessages),
    Translated(Box<Translated>),
}

impl Relay {
    /// The bytes to forward for this chunk (empty: nothing yet).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, EventTooLong> {
        match self {
            Relay::Chat(m) => m.push(chunk),
            Relay::Messages(m) => m.push(chunk),
            Relay::Translated(t) => t.push(chunk),
        }
    }

    /// Whether the upstream said its answer is complete.
    pub fn done(&self) -> bool {
        match self {
            Relay::Chat(m) => m.done,
            Relay::Messages(m) => m.done,
            Relay::Translated(t) => t.done,
        }
    }

    /// What is still to be sent once the upstream's stream ended normally.
    pub fn rest(&mut self) -> Option<Bytes> {
        match self {
            Relay::Chat(m) => m.rest(),
            Relay::Messages(m) => m.splitter.rest(),
            Relay::Translated(t) => Some(Bytes::from(t.translator.finish())),
        }
    }

    /// `(prompt, completion, estimated)` at the end of the stream.
    pub fn metered(&self, prompt_est: i64) -> (i64, i64, bool) {
        match self {
            Relay::Chat(m) => m.metered(prompt_est),
            Relay::Messages(m) => match (m.usage.prompt, m.usage.completion) {
                (Some(p), Some(c)) => (p, c, false),
                (p, _) => (p.unwrap_or(prompt_est), estimate_text(&m.usage.text), true),
            },
            Relay::Translated(t) => t.meter.metered(prompt_est),
        }
    }
}

/// A native Messages stream: passed on event by event, its usage read as it passes.
#[derive(Default)]
pub struct NativeMessages {
    splitter: SseSplitter,
    usage: NativeUsage,
    done: bool,
}

impl NativeMessages {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, EventTooLong> {
        let mut out = Vec::with_capacity(chunk.len() + 16);
        for ev in self.splitter.push(chunk).map_err(|_| EventTooLong)? {
            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                if v.get("type").and_then(Value::as_str) == Some("message_stop") {
                    self.done = true;
                }
                self.usage.observe(&v);
            }
            out.extend_from_slice(&ev.raw);
            out.extend_from_slice(b"\n\n");
        }
        Ok(out)
    }
}

/// A chat stream translated into Messages events.
pub struct Translated {
    splitter: SseSplitter,
    /// Reads usage and text of the chat chunks (what the call is charged).
    meter: StreamMeter,
    translator: StreamTranslator,
    done: bool,
}

impl Translated {
    pub fn new(model: &str) -> Self {
        Self {
            splitter: SseSplitter::default(),
            meter: StreamMeter::new(true),
            translator: StreamTranslator::new(model),
            done: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, EventTooLong> {
        let mut out = String::new();
        for ev in self.splitter.push(chunk).map_err(|_| EventTooLong)? {
            // The meter reads the event as the chat relay would.
            let mut raw = ev.raw.to_vec();
            raw.extend_from_slice(b"\n\n");
            self.meter.push(&raw)?;
            if ev.data == "[DONE]" {
                self.done = true;
                out.push_str(&self.translator.finish());
            } else if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                out.push_str(&self.translator.push(&v));
            }
        }
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_translated_stream_is_charged_what_the_chat_stream_said() {
        let mut r = Relay::Translated(Box::new(Translated::new("claude-x")));
        let mut out = Vec::new();
        for c in [
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        ] {
            out.extend(r.push(c.as_bytes()).unwrap());
        }
        assert!(r.done());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message_start\n"), "{text}");
        assert!(text.contains("\"text_delta\""), "{text}");
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert_eq!(r.metered(99), (5, 2, false));
        // After [DONE] the closing events are not sent twice.
        assert_eq!(r.rest().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_native_stream_passes_unchanged_and_is_metered() {
        let mut r = Relay::Messages(NativeMessages::default());
        let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let out = r.push(body.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), body);
        assert!(r.done());
        assert_eq!(r.metered(99), (7, 4, false));
    }
}
