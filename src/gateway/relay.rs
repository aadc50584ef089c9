//! What a streamed answer's bytes become on their way to the caller, and what they used: a
//! chat stream passed on (its unasked usage chunk hidden), a native stream of another
//! protocol passed on event by event while its usage is read, or a chat stream translated
//! into the caller's protocol. One interface for the pump; a protocol plugs in with a
//! [`NativeWatch`] and an [`EventTranslate`].

use bytes::Bytes;

use super::chat_chunk::ChatChunk;
use super::sse::SseSplitter;
use super::stages::{EventTooLong, StreamMeter};
use super::tokens::Estimator;
use super::usage::Metered;
use super::{anthropic, responses};

/// Reads a native stream's events for its usage and its end.
pub trait NativeWatch: Send {
    /// One event's `data`.
    fn observe(&mut self, data: &str);
    /// Whether the upstream said its answer is complete.
    fn done(&self) -> bool;
    /// What the stream used: the usage seen, or estimated from the text.
    fn metered(&self, est: &Estimator) -> Metered;
    /// Whether anything was generated (text, thinking, tool input).
    fn delivered(&self) -> bool;
}

/// Turns chat stream chunks into the caller's protocol's events.
pub trait EventTranslate: Send {
    /// The events for one chat chunk.
    fn push(&mut self, chunk: &ChatChunk<'_>) -> String;
    /// The closing events; empty once sent.
    fn finish(&mut self) -> String;
}

pub enum Relay {
    Chat(StreamMeter),
    Native(Native),
    Translated(Box<Translated>),
}

impl Relay {
    /// The bytes to forward for this chunk (empty: nothing yet).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, EventTooLong> {
        match self {
            Relay::Chat(m) => m.push(chunk),
            Relay::Native(m) => m.push(chunk),
            Relay::Translated(t) => t.push(chunk),
        }
    }

    /// Whether the upstream said its answer is complete.
    pub fn done(&self) -> bool {
        match self {
            Relay::Chat(m) => m.done,
            Relay::Native(m) => m.watch.done(),
            Relay::Translated(t) => t.done,
        }
    }

    /// What is still to be sent once the upstream's stream ended normally.
    pub fn rest(&mut self) -> Option<Bytes> {
        match self {
            Relay::Chat(m) => m.rest(),
            Relay::Native(m) => m.splitter.rest(),
            Relay::Translated(t) => Some(Bytes::from(t.translator.finish())),
        }
    }

    /// Whether the upstream generated anything: a stream without content (no event, only an
    /// error event) is not charged.
    pub fn delivered(&self) -> bool {
        match self {
            Relay::Chat(m) => m.delivered(),
            Relay::Native(m) => m.watch.delivered(),
            Relay::Translated(t) => t.meter.delivered(),
        }
    }

    /// What the stream used, at its end.
    pub fn metered(&self, est: &Estimator) -> Metered {
        match self {
            Relay::Chat(m) => m.metered(est),
            Relay::Native(m) => m.watch.metered(est),
            Relay::Translated(t) => t.meter.metered(est),
        }
        .delivered(self.delivered())
    }
}

/// A native stream of another protocol: passed on event by event, its usage read as it
/// passes.
pub struct Native {
    splitter: SseSplitter,
    watch: Box<dyn NativeWatch>,
}

impl Native {
    pub fn new(watch: Box<dyn NativeWatch>) -> Self {
        Self {
            splitter: SseSplitter::default(),
            watch,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, EventTooLong> {
        let mut out = Vec::with_capacity(chunk.len() + 16);
        for ev in self.splitter.push(chunk).map_err(|_| EventTooLong)? {
            self.watch.observe(&ev.data);
            out.extend_from_slice(&ev.raw);
            out.extend_from_slice(b"\n\n");
        }
        Ok(out)
    }
}

/// A chat stream translated into the caller's protocol.
pub struct Translated {
    splitter: SseSplitter,
    /// Reads usage and text of the chat chunks (what the call is charged).
    meter: StreamMeter,
    translator: Box<dyn EventTranslate>,
    done: bool,
}

impl Translated {
    pub fn new(translator: Box<dyn EventTranslate>) -> Self {
        Self {
            splitter: SseSplitter::default(),
            meter: StreamMeter::new(true),
            translator,
            done: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, EventTooLong> {
        let mut out = String::new();
        for ev in self.splitter.push(chunk).map_err(|_| EventTooLong)? {
            if ev.data == "[DONE]" {
                self.done = true;
                out.push_str(&self.translator.finish());
            } else if let Some(c) = ChatChunk::parse(&ev.data) {
                // Read once: the meter counts it as the chat relay would, the translator
                // writes its events.
                self.meter.observe(&c);
                out.push_str(&self.translator.push(&c));
            }
        }
        Ok(out.into_bytes())
    }
}

impl NativeWatch for anthropic::NativeUsage {
    fn observe(&mut self, data: &str) {
        anthropic::NativeUsage::observe(self, data);
    }
    fn done(&self) -> bool {
        self.done
    }
    fn delivered(&self) -> bool {
        !self.text.is_empty()
    }
    fn metered(&self, est: &Estimator) -> Metered {
        // Without the output count (a stream cut short) the output is estimated from the
        // text seen, the prompt kept as reported.
        match self.usage {
            Some(w) if w.has_output() => w.usage().map(Metered::reported),
            Some(w) => w.usage().map(|u| Metered {
                usage: crate::billing::Usage {
                    output: est.text(&self.text),
                    reasoning: 0,
                    ..u
                },
                estimated: true,
                delivered: true,
            }),
            None => None,
        }
        .unwrap_or_else(|| Metered::estimated(est.prompt(), est.text(&self.text)))
    }
}

impl EventTranslate for anthropic::StreamTranslator {
    fn push(&mut self, chunk: &ChatChunk<'_>) -> String {
        self.push_chunk(chunk)
    }
    fn finish(&mut self) -> String {
        anthropic::StreamTranslator::finish(self)
    }
}

impl NativeWatch for responses::NativeUsage {
    fn observe(&mut self, data: &str) {
        responses::NativeUsage::observe(self, data);
    }
    fn done(&self) -> bool {
        self.done
    }
    fn delivered(&self) -> bool {
        !self.text.is_empty()
    }
    fn metered(&self, est: &Estimator) -> Metered {
        match self.usage {
            Some(u) => Metered::reported(u),
            None => Metered::estimated(est.prompt(), est.text(&self.text)),
        }
    }
}

impl EventTranslate for responses::StreamTranslator {
    fn push(&mut self, chunk: &ChatChunk<'_>) -> String {
        self.push_chunk(chunk)
    }
    fn finish(&mut self) -> String {
        responses::StreamTranslator::finish(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::Usage;

    #[test]
    fn a_translated_stream_is_charged_what_the_chat_stream_said() {
        let t = anthropic::StreamTranslator::new("claude-x");
        let mut r = Relay::Translated(Box::new(Translated::new(Box::new(t))));
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
        assert_eq!(
            r.metered(&Estimator::plain(99)),
            Metered::reported(Usage::plain(5, 2))
        );
        // After [DONE] the closing events are not sent twice.
        assert_eq!(r.rest().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_native_stream_passes_unchanged_and_is_metered() {
        let mut r = Relay::Native(Native::new(Box::<anthropic::NativeUsage>::default()));
        let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let out = r.push(body.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), body);
        assert!(r.done());
        assert_eq!(
            r.metered(&Estimator::plain(99)),
            Metered::reported(Usage::plain(7, 4))
        );
    }

    #[test]
    fn a_native_responses_stream_ends_at_its_terminal_event() {
        let mut r = Relay::Native(Native::new(Box::<responses::NativeUsage>::default()));
        let body = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"abcd efgh\"}\n\n";
        r.push(body.as_bytes()).unwrap();
        assert!(!r.done());
        // Cut before the end: estimated from the text seen.
        let m = r.metered(&Estimator::plain(11));
        assert!(m.estimated && m.usage.prompt() == 11 && m.usage.output > 0);
        let end = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":8,\"output_tokens\":3}}}\n\n";
        r.push(end.as_bytes()).unwrap();
        assert!(r.done());
        assert_eq!(
            r.metered(&Estimator::plain(11)),
            Metered::reported(Usage::plain(8, 3))
        );
    }
}
