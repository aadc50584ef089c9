//! Our upstream credentials must never reach a caller, whatever an upstream echoes back and
//! however it encodes it. The scanner knows every upstream key and configured header value in
//! the forms an echo takes — as is in any letter case, percent-encoded, and base64 at each of
//! the three alignments it can have inside a longer encoded text (so `Basic …` credentials and
//! base64 blobs are caught too) — and masks every occurrence in one pass (Aho-Corasick).
//! The gateway runs it over every answer, any status, and over every streamed event (events
//! are whole by then, so a secret split across network chunks is still seen; one spelled
//! across several events is `secret_stream`'s).

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

pub const MASK: &str = "[redacted]";

/// Secrets shorter than this are not scanned for (they would mask ordinary words).
const MIN_SECRET: usize = 8;

/// The base64 characters of `secret` that do not depend on what surrounds it, for each of the
/// three offsets it can start at in a longer base64 text.
fn base64_cores(secret: &[u8], out: &mut Vec<String>) {
    for engine in [&STANDARD, &URL_SAFE] {
        for offset in 0..3usize {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(secret);
            let enc = engine.encode(&padded);
            // Characters wholly determined by the secret: skip those mixing the padding in
            // (the first ceil(offset·4/3)), drop the last group's partial ones.
            let start = (offset * 4).div_ceil(3);
            let full = (padded.len() / 3) * 4;
            if full > start + 4 {
                out.push(enc[start..full].to_owned());
            }
        }
    }
}

#[derive(Debug)]
pub struct Scanner {
    /// Raw and percent-encoded forms, any letter case.
    text: Option<AhoCorasick>,
    /// The raw forms, lower-cased (for secrets spelled across events: `secret_stream`).
    raw: Vec<Vec<u8>>,
    /// Base64 forms, exact case.
    encoded: Option<AhoCorasick>,
}

impl Scanner {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut text = Vec::new();
        let mut raw = Vec::new();
        let mut encoded = Vec::new();
        for s in secrets.into_iter().map(str::trim) {
            if s.len() < MIN_SECRET {
                continue;
            }
            text.push(s.to_owned());
            raw.push(s.to_ascii_lowercase().into_bytes());
            let pct = utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
            if pct != s {
                text.push(pct);
            }
            base64_cores(s.as_bytes(), &mut encoded);
        }
        let build = |pats: &[String], case_insensitive: bool| {
            (!pats.is_empty())
                .then(|| {
                    AhoCorasickBuilder::new()
                        .ascii_case_insensitive(case_insensitive)
                        .match_kind(MatchKind::LeftmostLongest)
                        .build(pats)
                        .ok()
                })
                .flatten()
        };
        Self {
            text: build(&text, true),
            raw,
            encoded: build(&encoded, false),
        }
    }

    /// Whether there is anything to look for.
    pub fn is_empty(&self) -> bool {
        self.text.is_none() && self.encoded.is_none()
    }

    /// The length of the longest raw secret.
    pub fn longest_raw(&self) -> usize {
        self.raw.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Whether any secret is looked for in its raw form.
    pub fn has_raw(&self) -> bool {
        !self.raw.is_empty()
    }

    /// Where secrets (raw or percent-encoded, any case) occur in `text`, as byte ranges.
    pub fn raw_matches(&self, text: &str) -> Vec<(usize, usize)> {
        self.text.as_ref().map_or_else(Vec::new, |ac| {
            ac.find_iter(text).map(|m| (m.start(), m.end())).collect()
        })
    }

    /// Whether `text` ends with the first `min` or more characters of a secret (any case):
    /// the secret may be completing in what follows.
    pub fn ends_with_prefix(&self, text: &str, min: usize) -> bool {
        let t = text.as_bytes();
        self.raw.iter().any(|s| {
            (min..s.len().min(t.len() + 1)).any(|k| t[t.len() - k..].eq_ignore_ascii_case(&s[..k]))
        })
    }

    /// `bytes` with every secret masked; borrowed when none was found (the common case).
    pub fn mask<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        let mut out: Cow<'b, [u8]> = Cow::Borrowed(bytes);
        for ac in [&self.text, &self.encoded].into_iter().flatten() {
            if ac.is_match(out.as_ref()) {
                let mut masked = Vec::with_capacity(out.len());
                ac.replace_all_with_bytes(out.as_ref(), &mut masked, |_, _, dst| {
                    dst.extend_from_slice(MASK.as_bytes());
                    true
                });
                out = Cow::Owned(masked);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "sk-Upstream-0123456789abcdef";

    fn leaks(out: &[u8], secret: &str) -> bool {
        let text = String::from_utf8_lossy(out);
        let mut cores = Vec::new();
        base64_cores(secret.as_bytes(), &mut cores);
        text.to_ascii_lowercase()
            .contains(&secret.to_ascii_lowercase())
            || cores.iter().any(|c| text.contains(c.as_str()))
    }

    #[test]
    fn every_form_is_masked() {
        let s = Scanner::new([KEY, "short", "x-header-value-42"]);
        let forms = [
            KEY.to_owned(),
            KEY.to_ascii_uppercase(),
            KEY.to_ascii_lowercase(),
            utf8_percent_encode(KEY, NON_ALPHANUMERIC).to_string(),
            format!("Basic {}", STANDARD.encode(format!("user:{KEY}"))),
            STANDARD.encode(KEY),
            URL_SAFE.encode(format!("ab{KEY}")),
            "X-HEADER-VALUE-42".to_owned(),
        ];
        for f in forms {
            let body = format!("{{\"error\":{{\"message\":\"echo: {f} !\"}}}}");
            let out = s.mask(body.as_bytes());
            assert!(
                !leaks(&out, KEY) && !leaks(&out, "x-header-value-42"),
                "{f}: {}",
                String::from_utf8_lossy(&out)
            );
            assert!(String::from_utf8_lossy(&out).contains(MASK), "{f}");
        }
        // Nothing to mask: the same bytes, not a copy; short secrets are not scanned.
        let clean = b"a short answer";
        assert!(matches!(s.mask(clean), Cow::Borrowed(_)));
        assert!(Scanner::new(["short"]).is_empty());
    }

    proptest! {
        /// A secret at a random place, in a random form, inside random text cut into random
        /// chunks and reassembled into events (as the relay does) never reaches the caller.
        #[test]
        fn no_placement_or_encoding_leaks(
            before in "[ -~]{0,40}",
            after in "[ -~]{0,40}",
            form in 0usize..6,
            pad in 0usize..3,
        ) {
            let s = Scanner::new([KEY]);
            let f = match form {
                0 => KEY.to_owned(),
                1 => KEY.to_ascii_uppercase(),
                2 => utf8_percent_encode(KEY, NON_ALPHANUMERIC).to_string(),
                3 => STANDARD.encode(format!("{}{KEY}", "x".repeat(pad))),
                4 => URL_SAFE.encode(format!("{}{KEY}", "y".repeat(pad))),
                _ => format!("Bearer {KEY}"),
            };
            let body = format!("{before}{f}{after}");
            let out = s.mask(body.as_bytes());
            prop_assert!(!leaks(&out, KEY), "{}", String::from_utf8_lossy(&out));
        }

        /// The same inside a stream cut into random network chunks: the relay reassembles
        /// whole events before the mask sees them, as the gateway's pump does.
        #[test]
        fn streams_cut_anywhere_do_not_leak(
            cuts in proptest::collection::vec(1usize..40, 1..30),
            form in 0usize..3,
        ) {
            let s = Scanner::new([KEY]);
            let f = match form {
                0 => KEY.to_owned(),
                1 => STANDARD.encode(format!("u:{KEY}")),
                _ => utf8_percent_encode(KEY, NON_ALPHANUMERIC).to_string(),
            };
            let events = format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"hi\"}}}}]}}\n\n\
                 data: {{\"error\":{{\"message\":\"bad key {f}\"}}}}\n\ndata: [DONE]\n\n"
            );
            let mut meter = crate::gateway::stages::StreamMeter::new(true);
            let mut caller = Vec::new();
            let mut rest = events.as_bytes();
            for c in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*c).min(rest.len()));
                rest = tail;
                let out = meter.push(chunk).unwrap();
                caller.extend_from_slice(&s.mask(&out));
            }
            if let Some(r) = meter.rest() {
                caller.extend_from_slice(&s.mask(&r));
            }
            prop_assert!(!leaks(&caller, KEY), "{}", String::from_utf8_lossy(&caller));
            prop_assert!(String::from_utf8_lossy(&caller).contains(MASK));
        }
    }
}
