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
use super::skim::{self, Malformed, Skim};

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
    /// The running text: `sent`, then the held events' text strings; each event's strings
    /// are read once, when it is held (a stream's events are read once each, not once per
    /// event held after them).
    text: String,
    /// Where each held event's strings sit in `text`.
    segments: Vec<Segment>,
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
            text: String::new(),
            segments: Vec::new(),
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
            self.read_held(self.held.len() - 1);
            let spans = self.scanner.raw_matches(&self.text);
            if !spans.is_empty() {
                let segments = std::mem::take(&mut self.segments);
                self.mask_spans(&segments, &spans);
                self.reread();
            }
            let open = self.scanner.ends_with_prefix(&self.text, MIN_PREFIX);
            if !open || self.held.len() >= MAX_HELD {
                out.extend(self.release());
            }
        }
        out
    }

    /// What is still held, at the stream's end.
    pub fn finish(&mut self) -> Vec<u8> {
        self.release()
    }

    /// The held events, sent: their text becomes the end of what was sent.
    fn release(&mut self) -> Vec<u8> {
        let keep = self.scanner.longest_raw().saturating_sub(1);
        let mut cut = self.text.len().saturating_sub(keep);
        while !self.text.is_char_boundary(cut) {
            cut += 1;
        }
        self.text.drain(..cut);
        self.sent.clone_from(&self.text);
        self.segments.clear();
        let out = self.held.concat();
        self.held.clear();
        out
    }

    /// The running text again from `sent` and every held event (after some were rewritten).
    fn reread(&mut self) {
        self.text.clone_from(&self.sent);
        self.segments.clear();
        for e in 0..self.held.len() {
            self.read_held(e);
        }
    }

    /// The text strings (see [`TEXT_KEYS`]) of held event `e`, added to the running text.
    fn read_held(&mut self, e: usize) {
        let Some(data) = data_line(&self.held[e]) else {
            return;
        };
        let (text, segments) = (&mut self.text, &mut self.segments);
        let (text_len, first) = (text.len(), segments.len());
        let read = read_strings(data, &mut |s| add_segment(text, segments, (e, first), s));
        if read.is_err() {
            text.truncate(text_len);
            segments.truncate(first);
        }
        // A member named twice in one object: a tree keeps its last value where its first
        // stood, and so does the caller's parser; the event is read as the tree reads it.
        // (Not JSON: no text, as no tree.)
        if read == Err(Unusual::Repeated)
            && let Ok(v) = serde_json::from_str::<Value>(data)
        {
            walk_strings(&v, &mut |s| add_segment(text, segments, (e, first), s));
        }
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

/// `s`, the next text string of event `e` (whose first segment is `first`), added to the
/// running text.
fn add_segment(
    text: &mut String,
    segments: &mut Vec<Segment>,
    (e, first): (usize, usize),
    s: &str,
) {
    segments.push(Segment {
        event: e,
        index: segments.len() - first,
        start: text.len(),
        end: text.len() + s.len(),
    });
    text.push_str(s);
}

/// `bytes` cut after each blank line (`\n\n`), the separator kept with its event. Found
/// with `memmem` (a response event repeating a Codex request's settings is KiBs long; a
/// byte-by-byte walk cost ~10 instructions a byte).
fn split_events(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = memchr::memmem::find(&bytes[start..], b"\n\n") {
        out.push(&bytes[start..start + i + 2]);
        start += i + 2;
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

/// The JSON text of an event's single `data:` line, if it has one.
fn data_line(event: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data = text.lines().filter_map(|l| l.strip_prefix("data:"));
    let first = data.next()?;
    if data.next().is_some() {
        return None;
    }
    Some(first.trim_start())
}

/// The JSON of an event's single `data:` line, if it has one.
fn data_json(event: &[u8]) -> Option<Value> {
    serde_json::from_str(data_line(event)?).ok()
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

/// Why an event's strings were not read in one pass.
#[derive(Debug, PartialEq, Eq)]
enum Unusual {
    NotJson,
    /// An object names a member twice.
    Repeated,
}

/// Hands each text string of a `data:` JSON to `f`, in the order [`walk_strings`] gives
/// them on its tree, without building the tree (a stream's events were each parsed into one:
/// ~15 k instructions an event), on the gateway's own reader (`skim`). It accepts and refuses
/// what serde_json's walk did (kept in the tests as the oracle): every name and string read
/// for its value (no lone surrogate), every number too (a finite `f64`), 127 levels deep at
/// most.
fn read_strings(data: &str, f: &mut dyn FnMut(&str)) -> Result<(), Unusual> {
    let mut s = Skim::new(data);
    let mut keys = Vec::new();
    walk(&mut s, &mut keys, f, false, 0)?;
    s.end()?;
    Ok(())
}

/// How deep containers may nest (serde_json's limit: its 128th level is refused).
const MAX_DEPTH: usize = 127;

impl From<Malformed> for Unusual {
    fn from(_: Malformed) -> Self {
        Unusual::NotJson
    }
}

/// A value walked for its text strings: those under a [`TEXT_KEYS`] member (`text`: this
/// value is one's), at any depth; `keys` holds the member names of the objects being read.
fn walk<'a>(
    s: &mut Skim<'a>,
    keys: &mut Vec<skim::Key<'a>>,
    f: &mut dyn FnMut(&str),
    text: bool,
    depth: usize,
) -> Result<(), Unusual> {
    match s.peek()? {
        b'"' if text => {
            let from = s.pos();
            let escaped = s.string(true, None)?;
            let quoted = s.slice(from, s.pos());
            if escaped {
                let v: String = serde_json::from_str(quoted).map_err(|_| Unusual::NotJson)?;
                f(&v);
            } else {
                f(quoted.get(1..quoted.len() - 1).unwrap_or(""));
            }
        }
        b'"' => {
            s.string(true, None)?;
        }
        b'[' => {
            if depth == MAX_DEPTH {
                return Err(Unusual::NotJson);
            }
            s.expect(b'[')?;
            let mut more = s.first(b']')?;
            while more {
                walk(s, keys, f, false, depth + 1)?;
                more = s.next(b']')?;
            }
        }
        b'{' => {
            if depth == MAX_DEPTH {
                return Err(Unusual::NotJson);
            }
            s.expect(b'{')?;
            let base = keys.len();
            let mut more = s.first(b'}')?;
            while more {
                // The name alone first: serde_json's walk, the oracle, told a repeated name
                // before it read the colon.
                let k = s.name()?;
                if keys[base..].iter().any(|x| x.as_str() == k.as_str()) {
                    // Read from its tree instead (which also tells whether the rest is JSON).
                    return Err(Unusual::Repeated);
                }
                s.expect(b':')?;
                let text = TEXT_KEYS.contains(&k.as_str());
                keys.push(k);
                walk(s, keys, f, text, depth + 1)?;
                more = s.next(b'}')?;
            }
            keys.truncate(base);
        }
        _ => s.scalar(true)?,
    }
    Ok(())
}

/// The walk as it was on serde_json, before it ran on `skim`: the oracle `read_strings` is
/// held to.
#[cfg(test)]
mod oracle {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{
        self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };

    use super::{TEXT_KEYS, Unusual};

    /// Hands each text string of a `data:` JSON to `f`, in the order [`walk_strings`] gives
    /// them on its tree, without building the tree (a stream's events were each parsed into one:
    /// ~15 k instructions an event).
    pub fn read_strings(data: &str, f: &mut dyn FnMut(&str)) -> Result<(), Unusual> {
        let mut keys = Vec::new();
        let mut repeated = false;
        let mut de = serde_json::Deserializer::from_str(data);
        let walk = Walk {
            f,
            keys: &mut keys,
            repeated: &mut repeated,
            text: false,
        };
        let read = walk.deserialize(&mut de).and_then(|()| de.end());
        match (read, repeated) {
            (_, true) => Err(Unusual::Repeated),
            (Ok(()), false) => Ok(()),
            (Err(_), false) => Err(Unusual::NotJson),
        }
    }

    /// A value walked for its text strings: those under a [`TEXT_KEYS`] member, at any depth.
    struct Walk<'a, 'de> {
        f: &'a mut dyn FnMut(&str),
        /// The member names of the objects being read, outermost first.
        keys: &'a mut Vec<Cow<'de, str>>,
        repeated: &'a mut bool,
        /// The value of a text member: a string here is text.
        text: bool,
    }

    impl<'de> Walk<'_, 'de> {
        /// The walk of a member's value (`text`: a text member's).
        fn again(&mut self, text: bool) -> Walk<'_, 'de> {
            Walk {
                f: &mut *self.f,
                keys: &mut *self.keys,
                repeated: &mut *self.repeated,
                text,
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
            if self.text {
                (self.f)(s);
            }
            Ok(())
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut a: A) -> Result<(), A::Error> {
            while a.next_element_seed(self.again(false))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut a: A) -> Result<(), A::Error> {
            let base = self.keys.len();
            while let Some(k) = a.next_key_seed(Key)? {
                if self.keys[base..].contains(&k) {
                    *self.repeated = true;
                    // The rest is not read: the event is read from its tree instead.
                    while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    break;
                }
                let text = TEXT_KEYS.contains(&k.as_ref());
                self.keys.push(k);
                a.next_value_seed(self.again(text))?;
            }
            self.keys.truncate(base);
            Ok(())
        }
    }

    /// A member's name, borrowed from the event when it has no escapes.
    struct Key;

    impl<'de> DeserializeSeed<'de> for Key {
        type Value = Cow<'de, str>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Key {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a member name")
        }
        fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(s))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(s.to_owned()))
        }
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

    /// The strings of a tree, in [`walk_strings`]' order.
    fn tree_strings(json: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(json).unwrap();
        let mut out = Vec::new();
        walk_strings(&v, &mut |s| out.push(s.to_owned()));
        out
    }

    fn streamed_strings(json: &str) -> Result<Vec<String>, Unusual> {
        let mut out = Vec::new();
        read_strings(json, &mut |s| out.push(s.to_owned()))?;
        Ok(out)
    }

    /// A JSON value whose member names are mostly text keys and a few others, nested.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z\\\"\n\u{e9}\u{1f980}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("content"),
                            Just("text"),
                            Just("delta"),
                            Just("arguments"),
                            Just("id"),
                            Just("choices"),
                            Just("t\u{e9}xt"),
                        ],
                        inner
                    ),
                    0..4
                )
                .prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// Events of each protocol, escapes, text keys holding objects, and the unusual: a name
    /// given twice (read as the tree reads it), not JSON (no text).
    #[test]
    fn strings_read_in_one_pass_are_the_trees() {
        for json in [
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"he\"llo\n\u00e9"}}]}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
            r#"{"type":"response.output_text.delta","delta":"x","item_id":"i"}"#,
            r#"{"content":[{"text":"a"},{"text":{"text":"b"}}],"arguments":5,"delta":null}"#,
            r#"{"c\u006fntent":"escaped name"}"#,
            "[]",
        ] {
            assert_eq!(
                streamed_strings(json).unwrap(),
                tree_strings(json),
                "{json}"
            );
        }
        let twice = r#"{"content":"first","x":{"text":"t"},"content":"last"}"#;
        assert_eq!(streamed_strings(twice), Err(Unusual::Repeated));
        assert_eq!(tree_strings(twice), ["last", "t"]);
        assert_eq!(streamed_strings(r#"{"a":1}{"#), Err(Unusual::NotJson));
        assert_eq!(streamed_strings("[DONE]"), Err(Unusual::NotJson));
    }

    /// A secret spelled across events whose JSON names a member twice is still masked.
    #[test]
    fn a_key_in_an_event_naming_a_member_twice_is_masked() {
        let s = Scanner::new([KEY]);
        let mut g = StreamGuard::new(&s);
        let mut out = g.push(&chunk("your key is sk-Upstr"));
        let odd = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\",\"content\":\"eam-0123456789abcdef!\"}}]}\n\n";
        out.extend(g.push(odd));
        out.extend(g.finish());
        let text = String::from_utf8(out).unwrap().to_ascii_lowercase();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(text.contains("****"), "{text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn any_events_strings_are_read_as_its_tree_reads_them(v in json_value()) {
            let json = v.to_string();
            prop_assert_eq!(streamed_strings(&json).unwrap(), tree_strings(&json));
        }

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

/// `read_strings` against serde_json's walk it replaced, on `stages`' generated bodies (every
/// kind of escape, number and name, cut short or with a byte changed) and on deep nesting.
#[cfg(test)]
mod read_as_serde_did {
    use proptest::prelude::*;

    use super::*;
    use crate::gateway::stages::read_as_serde_did::body;

    fn both(data: &str) -> (Result<Vec<String>, Unusual>, Result<Vec<String>, Unusual>) {
        let read = |oracle: bool| {
            let mut out = Vec::new();
            let r = if oracle {
                oracle::read_strings(data, &mut |s| out.push(s.to_owned()))
            } else {
                read_strings(data, &mut |s| out.push(s.to_owned()))
            };
            r.map(|()| out)
        };
        (read(false), read(true))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn strings_read_as_serde_read_them(b in body()) {
            let data = String::from_utf8_lossy(&b);
            let (ours, theirs) = both(&data);
            prop_assert_eq!(ours, theirs, "{}", data);
        }
    }

    #[test]
    fn as_deep_as_serde_goes() {
        for depth in 120..135 {
            for (open, close) in [("[", "]"), ("{\"text\":", "}")] {
                let data = format!("{}\"x\"{}", open.repeat(depth), close.repeat(depth));
                let (ours, theirs) = both(&data);
                assert_eq!(ours, theirs, "{depth} {open}");
            }
        }
    }

    /// The bodies hold text under text names, and are refused or read twice-named too.
    #[test]
    fn the_bodies_make_every_kind() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut text, mut refused, mut repeated) = (0, 0, 0);
        for _ in 0..2000 {
            let b = body().new_tree(&mut runner).unwrap().current();
            match both(&String::from_utf8_lossy(&b)).0 {
                Ok(v) => text += usize::from(!v.is_empty()),
                Err(Unusual::NotJson) => refused += 1,
                Err(Unusual::Repeated) => repeated += 1,
            }
        }
        assert!(
            text > 150 && refused > 300 && repeated > 100,
            "{text} {refused} {repeated}"
        );
    }
}
