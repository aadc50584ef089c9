//! A secret spelled across several streamed events: each event alone is clean, but the text
//! the caller assembles (the `content` deltas one after the other) holds our key. The guard
//! reads the strings of each event's JSON as one running text; an event whose text ends with
//! the beginning of a secret is held back (not sent) until the next one shows whether the
//! secret completes — then every part of it is masked, in each event it touches — or not —
//! then the held events go out unchanged. Events without such an ending (nearly all) pass at
//! once. Covers the raw form in any letter case; an encoded secret split across events is not
//! looked for (it would need the encoding's alignment across JSON strings).

use serde_json::Value;

use super::secrets::Scanner;

/// The shortest secret beginning that holds an event back (shorter ones are ordinary text).
const MIN_PREFIX: usize = 4;
/// Events held at most while a secret might be completing (then they go out as they are).
const MAX_HELD: usize = 256;

/// One stream's running check.
pub struct StreamGuard<'s> {
    scanner: &'s Scanner,
    held: Vec<Vec<u8>>,
    /// The end of the text already sent (as long as the longest secret, less one): a secret
    /// that began there, too short a beginning to hold its event back, is masked from where
    /// the held events take it up (so at most `MIN_PREFIX - 1` of its characters were sent).
    sent: String,
}

/// Where one string value of a held event sits in the running text.
struct Segment {
    event: usize,
    index: usize,
    start: usize,
    end: usize,
}

impl<'s> StreamGuard<'s> {
    pub fn new(scanner: &'s Scanner) -> Self {
        Self {
            scanner,
            held: Vec::new(),
            sent: String::new(),
        }
    }

    /// Whole SSE events in, the bytes that may go to the caller now out (maybe none).
    pub fn push(&mut self, events: &[u8]) -> Vec<u8> {
        let masked = self.scanner.mask(events);
        if !self.scanner.has_raw() {
            return masked.into_owned();
        }
        let mut out = Vec::with_capacity(masked.len());
        for event in split_events(&masked) {
            self.held.push(event.to_vec());
            let (text, segments) = self.running_text();
            let spans = self.scanner.raw_matches(&text);
            if !spans.is_empty() {
                self.mask_spans(&segments, &spans);
            }
            let open = self.scanner.ends_with_prefix(&text, MIN_PREFIX);
            if !open || self.held.len() >= MAX_HELD {
                out.extend(self.release(&text));
            }
        }
        out
    }

    /// What is still held, at the stream's end.
    pub fn finish(&mut self) -> Vec<u8> {
        let (text, _) = self.running_text();
        self.release(&text)
    }

    /// The held events, sent: their text becomes the end of what was sent.
    fn release(&mut self, text: &str) -> Vec<u8> {
        let keep = self.scanner.longest_raw().saturating_sub(1);
        let mut cut = text.len().saturating_sub(keep);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        self.sent = text[cut..].to_owned();
        self.held.drain(..).flatten().collect()
    }

    /// The held events' text strings (see [`TEXT_KEYS`]) as one text, and where each sits in it.
    fn running_text(&self) -> (String, Vec<Segment>) {
        let mut text = self.sent.clone();
        let mut segments = Vec::new();
        for (e, event) in self.held.iter().enumerate() {
            let Some(v) = data_json(event) else { continue };
            let mut index = 0;
            walk_strings(&v, &mut |s| {
                let start = text.len();
                text.push_str(s);
                segments.push(Segment {
                    event: e,
                    index,
                    start,
                    end: text.len(),
                });
                index += 1;
            });
        }
        (text, segments)
    }

    /// Replaces every character of `spans` (ranges of the running text) by `*` in the
    /// strings they fall in, rewriting those events.
    fn mask_spans(&mut self, segments: &[Segment], spans: &[(usize, usize)]) {
        let mut touched: Vec<usize> = segments
            .iter()
            .filter(|g| spans.iter().any(|&(a, b)| a < g.end && g.start < b))
            .map(|g| g.event)
            .collect();
        touched.dedup();
        for e in touched {
            let Some(mut v) = data_json(&self.held[e]) else {
                continue;
            };
            let mut index = 0;
            walk_strings_mut(&mut v, &mut |s| {
                let Some(g) = segments.iter().find(|g| g.event == e && g.index == index) else {
                    index += 1;
                    return;
                };
                index += 1;
                let mut bytes = std::mem::take(s).into_bytes();
                for &(a, b) in spans {
                    let (from, to) = (
                        a.max(g.start) - g.start,
                        b.min(g.end).saturating_sub(g.start),
                    );
                    // A secret is ASCII: its span starts and ends on character boundaries.
                    for byte in bytes.iter_mut().take(to).skip(from) {
                        *byte = b'*';
                    }
                }
                *s = String::from_utf8(bytes).unwrap_or_default();
            });
            self.held[e] = with_data(&self.held[e], &v);
        }
    }
}

/// `bytes` cut after each blank line (`\n\n`), the separator kept with its event.
fn split_events(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' && bytes[i + 1] == b'\n' {
            out.push(&bytes[start..i + 2]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

/// The JSON of an event's single `data:` line, if it has one.
fn data_json(event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data = text.lines().filter_map(|l| l.strip_prefix("data:"));
    let first = data.next()?;
    if data.next().is_some() {
        return None;
    }
    serde_json::from_str(first.trim_start()).ok()
}

/// The event with its `data:` line replaced by `v`.
fn with_data(event: &[u8], v: &Value) -> Vec<u8> {
    let text = String::from_utf8_lossy(event);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with("data:") {
            out.push_str("data: ");
            out.push_str(&v.to_string());
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// The keys whose string values are the text a caller assembles from a stream, in each
/// protocol: chat `content`, `reasoning_content` and tool-call `arguments`; Messages `text`,
/// `thinking` and `partial_json`; Responses `delta`. (Ids, models and other strings between
/// them are not part of that text.)
const TEXT_KEYS: &[&str] = &[
    "content",
    "reasoning_content",
    "arguments",
    "text",
    "thinking",
    "partial_json",
    "delta",
];

fn walk_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if TEXT_KEYS.contains(&k.as_str()) => f(s),
                    _ => walk_strings(x, f),
                }
            }
        }
        _ => {}
    }
}

fn walk_strings_mut(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| walk_strings_mut(x, f)),
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match x {
                    Value::String(s) if TEXT_KEYS.contains(&k.as_str()) => f(s),
                    _ => walk_strings_mut(x, f),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "sk-Upstream-0123456789abcdef";

    fn chunk(content: &str) -> Vec<u8> {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": content}}]})
        )
        .into_bytes()
    }

    /// What a caller assembles from the deltas it received.
    fn assembled(out: &[u8]) -> String {
        split_events(out)
            .into_iter()
            .filter_map(data_json)
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    #[test]
    fn a_key_split_across_two_events_is_masked_in_both() {
        let s = Scanner::new([KEY]);
        let mut g = StreamGuard::new(&s);
        let mut out = g.push(&chunk("your key is sk-Upstr"));
        assert!(out.is_empty(), "held: it ends with the key's beginning");
        out.extend(g.push(&chunk("eam-0123456789abcdef, bye")));
        out.extend(g.finish());
        let text = assembled(&out);
        assert!(
            !text
                .to_ascii_lowercase()
                .contains(&KEY.to_ascii_lowercase()),
            "{text}"
        );
        assert!(text.contains("*****"), "{text}");
        assert!(
            text.starts_with("your key is ") && text.ends_with(", bye"),
            "{text}"
        );
        // Ordinary text passes at once, untouched.
        let plain = chunk("hello world");
        assert_eq!(g.push(&plain), plain);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn a_key_cut_into_any_events_never_reaches_the_caller(
            before in "[a-z ]{0,12}",
            after in "[a-z ]{0,12}",
            cuts in proptest::collection::vec(1usize..27, 0..4),
            upper in any::<bool>(),
        ) {
            let key = if upper { KEY.to_ascii_uppercase() } else { KEY.to_owned() };
            let full = format!("{before}{key}{after}");
            let mut points: Vec<usize> = cuts.into_iter().map(|c| before.len() + c).collect();
            points.sort_unstable();
            points.dedup();
            let s = Scanner::new([KEY]);
            let mut g = StreamGuard::new(&s);
            let mut out = Vec::new();
            let mut last = 0;
            for p in points.into_iter().chain([full.len()]) {
                out.extend(g.push(&chunk(&full[last..p])));
                last = p;
            }
            out.extend(g.finish());
            let text = assembled(&out).to_ascii_lowercase();
            // At most the key's first MIN_PREFIX - 1 characters ("sk-") were sent before it
            // could be recognised; none of the rest.
            let secret_part = KEY[MIN_PREFIX - 1..].to_ascii_lowercase();
            prop_assert!(!text.contains(&secret_part), "{}", text);
            prop_assert!(text.starts_with(&before) && text.ends_with(&after), "{}", text);
        }
    }
}
