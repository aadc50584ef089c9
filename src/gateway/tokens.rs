//! Token estimates, used only when an upstream reports no usage (the log row is then marked
//! `estimated`) and for holds. For OpenAI's models the real tokenizer (`tiktoken-rs`, its
//! encodings embedded in the crate: o200k_base, cl100k_base); for every other model, and
//! for holds (on every call, where tokenizing a 40 KB agent prompt would cost milliseconds),
//! the fallback: 4 ASCII characters a token, one token per other character (CJK text is about
//! a token a character).

use std::sync::OnceLock;

use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;

pub fn estimate_text(s: &str) -> i64 {
    let mut c = Chars::default();
    c.add(s);
    c.estimate()
}

/// Characters counted for the fallback, over one or more pieces of text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Chars {
    ascii: i64,
    other: i64,
}

impl Chars {
    /// Counted on bytes, eight at a time (the text is UTF-8: every character past ASCII
    /// has exactly one leading byte, `0b11xx_xxxx`, and ASCII bytes have the top bit clear);
    /// a 64 KiB prompt took ~0.5 M instructions a character at a time. Each byte's bit is
    /// summed in its own lane for up to 255 words and the lanes folded after: the build
    /// targets x86-64 without `popcnt`, where `count_ones` a word cost ~4 instructions a byte.
    pub fn add(&mut self, s: &str) {
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let bytes = s.as_bytes();
        let (mut high, mut lead) = (0u64, 0u64);
        let mut words = bytes.chunks_exact(8);
        loop {
            let (mut h, mut l, mut n) = (0u64, 0u64, 0);
            for w in words.by_ref().take(255) {
                let mut a = [0u8; 8];
                a.copy_from_slice(w);
                let x = u64::from_le_bytes(a);
                h += (x & HIGH) >> 7;
                l += (x & (x << 1) & HIGH) >> 7;
                n += 1;
            }
            high += lanes(h);
            lead += lanes(l);
            if n < 255 {
                break;
            }
        }
        for &b in words.remainder() {
            high += u64::from(b >= 0x80);
            lead += u64::from(b >= 0xC0);
        }
        let len = bytes.len() as u64;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.ascii = self.ascii.saturating_add(n(len - high));
        self.other = self.other.saturating_add(n(lead));
    }

    /// Characters counted elsewhere (`skim` counts a string as it scans it).
    pub fn add_counts(&mut self, ascii: u64, other: u64) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.ascii = self.ascii.saturating_add(n(ascii));
        self.other = self.other.saturating_add(n(other));
    }

    /// Another count's characters added to this one.
    pub fn absorb(&mut self, other: Chars) {
        self.ascii = self.ascii.saturating_add(other.ascii);
        self.other = self.other.saturating_add(other.other);
    }

    fn estimate(&self) -> i64 {
        (self.ascii.saturating_add(3) / 4).saturating_add(self.other)
    }
}

/// The sum of a word's eight byte lanes (each ≤ 255): pairs of lanes into four 16-bit ones,
/// then the four summed into the top 16 bits by one multiplication.
fn lanes(v: u64) -> u64 {
    const EVEN: u64 = 0x00FF_00FF_00FF_00FF;
    let pairs = (v & EVEN) + ((v >> 8) & EVEN);
    pairs.wrapping_mul(0x0001_0001_0001_0001) >> 48
}

/// Estimates for one call, resolved lazily: nothing is tokenized unless an estimate is
/// asked for (the upstream reported no usage).
#[derive(Debug, Clone, Copy)]
pub struct Estimator<'a> {
    model: &'a str,
    body: Option<LazyBody<'a>>,
    /// The fallback's prompt estimate, made when the call was read.
    prompt_est: i64,
}

impl<'a> Estimator<'a> {
    pub fn new(model: &'a str, body: LazyBody<'a>, prompt_est: i64) -> Self {
        Self {
            model,
            body: Some(body),
            prompt_est,
        }
    }

    /// The fallback only, with this prompt estimate.
    pub fn plain(prompt_est: i64) -> Estimator<'static> {
        Estimator {
            model: "",
            body: None,
            prompt_est,
        }
    }

    /// The model's tokenizer, when a crate has it.
    fn bpe(&self) -> Option<&'static CoreBPE> {
        tiktoken_rs::bpe_for_model(self.model).ok()
    }

    /// Tokens of generated text.
    pub fn text(&self, s: &str) -> i64 {
        match self.bpe() {
            Some(b) => i64::try_from(b.encode_ordinary(s).len()).unwrap_or(i64::MAX),
            None => estimate_text(s),
        }
    }

    /// Tokens of the prompt.
    pub fn prompt(&self) -> i64 {
        match (self.bpe(), self.body) {
            (Some(b), Some(body)) => {
                let (text, overhead) = prompt_text(body.get());
                let n = i64::try_from(b.encode_ordinary(&text).len()).unwrap_or(i64::MAX);
                n.saturating_add(overhead).max(1)
            }
            _ => self.prompt_est,
        }
    }
}

/// A request's JSON tree, parsed from its bytes only when first asked for: most calls never
/// need it whole (a coding agent's 64 KiB request took ~1 M instructions to build).
#[derive(Debug, Clone, Copy)]
pub struct LazyBody<'a> {
    pub tree: &'a OnceLock<Value>,
    pub raw: &'a [u8],
}

impl<'a> LazyBody<'a> {
    pub fn get(&self) -> &'a Value {
        self.tree
            .get_or_init(|| serde_json::from_slice(self.raw).unwrap_or(Value::Null))
    }
}

/// Each piece of text of a message `content` (or a Messages `system`): a string, or parts —
/// a part's `text`, and the text of its own `content` (a `tool_result`'s output: a string or
/// parts again).
fn content_text<'v>(v: &'v Value, out: &mut impl FnMut(&'v str)) {
    match v {
        Value::String(s) => out(s),
        Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    out(t);
                }
                if let Some(c) = p.get("content") {
                    content_text(c, out);
                }
            }
        }
        _ => {}
    }
}

/// The text of a Responses `input` item (or a string of an embeddings `input`): a string;
/// a message's `content`; a function call's `arguments`, its output's `output`.
fn item_text<'v>(i: &'v Value, out: &mut impl FnMut(&'v str)) {
    if let Some(s) = i.as_str() {
        out(s);
        return;
    }
    for k in ["content", "output"] {
        if let Some(c) = i.get(k) {
            content_text(c, out);
        }
    }
    if let Some(a) = i.get("arguments").and_then(Value::as_str) {
        out(a);
    }
}

/// [`estimate_prompt`] of a body read in two parts: `rest`, its members but the big ones
/// (`lite` says which are), and the big ones read in one pass (see `lite`) for `text` (the
/// messages' contents, a Responses `input`) and how many `messages` frame it: the same
/// count, without their trees.
pub fn estimate_prompt_parts(
    rest: &Map<String, Value>,
    lite: &dyn Fn(&str) -> bool,
    text: Chars,
    messages: Option<usize>,
) -> i64 {
    let mut chars = text;
    let mut overhead = messages.map_or(0, |n| {
        i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(4)
    });
    let others = |k: &str| if lite(k) { None } else { rest.get(k) };
    overhead = overhead.saturating_add(prompt_pieces(&others, &mut |s| chars.add(s)));
    chars.estimate().saturating_add(overhead).max(1)
}

/// Prompt tokens of a chat, completion or embedding request.
pub fn estimate_prompt(body: &Value) -> i64 {
    let mut chars = Chars::default();
    let overhead = prompt_pieces(&|k| body.get(k), &mut |s| chars.add(s));
    chars.estimate().saturating_add(overhead).max(1)
}

/// The prompt's text, and the tokens its message framing adds (4 a message).
fn prompt_text(body: &Value) -> (String, i64) {
    let mut text = String::new();
    let overhead = prompt_pieces(&|k| body.get(k), &mut |s| text.push_str(s));
    (text, overhead)
}

/// Hands each piece of the prompt's text to `out`, in order; returns the tokens the
/// message framing adds (4 a message).
fn prompt_pieces<'v>(
    body: &dyn Fn(&str) -> Option<&'v Value>,
    out: &mut impl FnMut(&'v str),
) -> i64 {
    let mut overhead = 0i64;
    if let Some(msgs) = body("messages").and_then(Value::as_array) {
        for m in msgs {
            overhead += 4;
            if let Some(c) = m.get("content") {
                content_text(c, out);
            }
        }
    }
    match body("prompt") {
        Some(Value::String(s)) => out(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut *out),
        _ => {}
    }
    match body("input") {
        Some(Value::String(s)) => out(s),
        Some(Value::Array(items)) => items.iter().for_each(|i| item_text(i, out)),
        _ => {}
    }
    // An agent's standing instructions are prompt too: Messages `system`, Responses
    // `instructions`.
    if let Some(s) = body("system") {
        content_text(s, out);
    }
    if let Some(Value::String(s)) = body("instructions") {
        out(s);
    }
    overhead
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

    /// Counting bytes gives what counting characters gave: ASCII four to a token, every
    /// other character one, over the pieces as over their concatenation.
    #[test]
    fn byte_counts_match_character_counts() {
        fn by_chars(s: &str) -> i64 {
            let ascii = s.chars().filter(char::is_ascii).count() as i64;
            let other = s.chars().count() as i64 - ascii;
            (ascii + 3) / 4 + other
        }
        for s in [
            "",
            "a",
            "héllo wörld",
            "日本語のテキスト and some ASCII",
            "emoji 🦀🦀 and \u{0} nul",
            "\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}",
        ] {
            assert_eq!(estimate_text(s), by_chars(s), "{s:?}");
        }
        // Past 255 words, where the lanes are folded, with every byte's top bit set (a lane
        // at its limit) and at every offset against the words.
        for (piece, times) in [("€", 700), ("日本語x", 1000), ("ab", 1021), ("é🦀a", 2000)]
        {
            let long = piece.repeat(times);
            for cut in 0..8 {
                let s = &long[long.char_indices().nth(cut).map_or(0, |(i, _)| i)..];
                assert_eq!(
                    estimate_text(s),
                    by_chars(s),
                    "{piece} × {times} from {cut}"
                );
            }
        }
        let body = json!({"messages": [
            {"role": "user", "content": "abc"},
            {"role": "user", "content": [{"type": "text", "text": "d你"}, {"type": "image"}]},
        ]});
        assert_eq!(estimate_prompt(&body), by_chars("abcd你") + 8);
        assert_eq!(prompt_text(&body), ("abcd你".to_owned(), 8));
    }

    #[test]
    fn openai_models_are_counted_by_their_tokenizer() {
        let raw = br#"{"messages": [{"role": "user", "content": "hello world"}]}"#;
        let tree = OnceLock::new();
        let body = LazyBody { tree: &tree, raw };
        // o200k_base: "hello world" is two tokens; the message framing adds 4.
        let gpt = Estimator::new("gpt-4o-mini", body, 999);
        assert_eq!(gpt.text("hello world"), 2);
        assert_eq!(gpt.prompt(), 2 + 4);
        // A long word the heuristic would call 7 tokens.
        assert_ne!(
            gpt.text("internationalization"),
            estimate_text("internationalization")
        );
        // Models without a tokenizer crate: the fallback, and the estimate made at read.
        let ds = Estimator::new("deepseek-v4-flash", body, 999);
        assert_eq!(ds.text("hello world"), estimate_text("hello world"));
        assert_eq!(ds.prompt(), 999);
        assert_eq!(Estimator::plain(5).prompt(), 5);
    }
}
