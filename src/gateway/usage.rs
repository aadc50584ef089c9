//! Usage as upstreams report it, in every shape, read into the billing classes of
//! [`Usage`]: OpenAI chat (`prompt_tokens`, `prompt_tokens_details.cached_tokens`,
//! `completion_tokens_details.reasoning_tokens`), DeepSeek (`prompt_cache_hit_tokens`,
//! `prompt_cache_miss_tokens`), Anthropic Messages (`input_tokens` without the cache,
//! `cache_read_input_tokens`, `cache_creation_input_tokens`) and OpenAI Responses
//! (`input_tokens` with the cache, `input_tokens_details.cached_tokens`,
//! `output_tokens_details.reasoning_tokens`). Parsed borrowed and typed: no tree is built.

use serde::Deserialize;

use crate::billing::Usage;

/// The `*_details` objects of OpenAI's shapes (and of relays that add cache writes there).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct Details {
    #[serde(default)]
    cached_tokens: Option<i64>,
    #[serde(default, alias = "cache_creation_tokens")]
    cache_write_tokens: Option<i64>,
    #[serde(default)]
    reasoning_tokens: Option<i64>,
}

/// One `usage` object, whichever protocol sent it. Every field is optional: a stream's
/// events each carry a part (Anthropic's `message_start` the input, `message_delta` the
/// output), merged with [`WireUsage::merge`].
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    prompt_cache_hit_tokens: Option<i64>,
    #[serde(default)]
    prompt_cache_miss_tokens: Option<i64>,
    #[serde(default)]
    input_tokens: Option<i64>,
    #[serde(default)]
    output_tokens: Option<i64>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
    #[serde(default)]
    cache_read_input_tokens: Option<i64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<i64>,
}

fn or<T: Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    b.or(a)
}

impl WireUsage {
    /// Fields of `later` replace those of `self` where `later` has them.
    pub fn merge(&mut self, later: &WireUsage) {
        macro_rules! take {
            ($($f:ident),*) => { $( self.$f = or(self.$f, later.$f); )* };
        }
        take!(
            prompt_tokens,
            completion_tokens,
            prompt_tokens_details,
            completion_tokens_details,
            prompt_cache_hit_tokens,
            prompt_cache_miss_tokens,
            input_tokens,
            output_tokens,
            input_tokens_details,
            output_tokens_details,
            cache_read_input_tokens,
            cache_creation_input_tokens
        );
    }

    /// Whether it says how much was generated (a stream's last word on usage).
    pub fn has_output(&self) -> bool {
        self.completion_tokens.is_some() || self.output_tokens.is_some()
    }

    /// Whether it says anything about the prompt.
    pub fn has_input(&self) -> bool {
        self.prompt_tokens.is_some()
            || self.input_tokens.is_some()
            || self.prompt_cache_hit_tokens.is_some()
            || self.prompt_cache_miss_tokens.is_some()
    }

    /// The classes. Chat's `prompt_tokens` and Responses' `input_tokens` include their
    /// cached part; Anthropic's `input_tokens` does not (its cache fields say so); DeepSeek's
    /// hit and miss add up to the prompt. `None` when nothing was reported.
    pub fn usage(&self) -> Option<Usage> {
        if !self.has_input() && !self.has_output() {
            return None;
        }
        let d = |x: Option<Details>| x.unwrap_or_default();
        let (pd, cd) = (
            d(self.prompt_tokens_details),
            d(self.completion_tokens_details),
        );
        let (id, od) = (d(self.input_tokens_details), d(self.output_tokens_details));
        let anthropic =
            self.cache_read_input_tokens.is_some() || self.cache_creation_input_tokens.is_some();
        if anthropic && self.prompt_tokens.is_none() {
            let output = self.output_tokens.unwrap_or(0);
            return Some(
                Usage {
                    input: self.input_tokens.unwrap_or(0),
                    cached: self.cache_read_input_tokens.unwrap_or(0),
                    cache_write: self.cache_creation_input_tokens.unwrap_or(0),
                    output,
                    reasoning: od.reasoning_tokens.unwrap_or(0),
                }
                .clamped(),
            );
        }
        let deepseek_prompt = match (self.prompt_cache_hit_tokens, self.prompt_cache_miss_tokens) {
            (None, None) => None,
            (h, m) => Some(h.unwrap_or(0) + m.unwrap_or(0)),
        };
        let prompt = self
            .prompt_tokens
            .or(self.input_tokens)
            .or(deepseek_prompt)
            .unwrap_or(0);
        let cached = pd
            .cached_tokens
            .or(self.prompt_cache_hit_tokens)
            .or(id.cached_tokens)
            .or(self.cache_read_input_tokens)
            .unwrap_or(0);
        let cache_write = pd
            .cache_write_tokens
            .or(id.cache_write_tokens)
            .or(self.cache_creation_input_tokens)
            .unwrap_or(0);
        let completion = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
        let reasoning = cd.reasoning_tokens.or(od.reasoning_tokens).unwrap_or(0);
        Some(Usage::from_prompt_total(
            prompt,
            cached,
            cache_write,
            completion,
            reasoning,
        ))
    }
}

/// An answer (or an event's embedded message / response) of which only `usage` is read.
#[derive(Deserialize)]
pub struct UsageOnly {
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// The parts of a whole answer metering reads: its usage, and whether it carries output.
#[derive(Deserialize)]
struct AnswerParts {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    data: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    content: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    output: Option<Vec<serde::de::IgnoredAny>>,
}

/// A whole answer's usage (`None` without one), and whether it carries any output — choices
/// (chat, completions), data (embeddings), content (Messages), output (Responses). One typed
/// pass; no tree is built.
pub fn answer(body: &[u8]) -> (Option<Usage>, bool) {
    match serde_json::from_slice::<AnswerParts>(body) {
        Ok(a) => {
            let some =
                |v: &Option<Vec<serde::de::IgnoredAny>>| v.as_ref().is_some_and(|v| !v.is_empty());
            let delivered =
                some(&a.choices) || some(&a.data) || some(&a.content) || some(&a.output);
            (a.usage.and_then(|u| u.usage()), delivered)
        }
        Err(_) => (None, false),
    }
}

/// The usage of a whole answer, in whichever protocol's shape; `None` without one.
pub fn of_answer(body: &[u8]) -> Option<Usage> {
    answer(body).0
}

/// What a call used, and whether it was estimated (the upstream reported no usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub usage: Usage,
    pub estimated: bool,
    /// Whether anything was generated; a call that delivered nothing is not charged.
    pub delivered: bool,
}

impl Metered {
    pub fn reported(usage: Usage) -> Self {
        Self {
            usage,
            estimated: false,
            delivered: true,
        }
    }

    pub fn estimated(prompt: i64, completion: i64) -> Self {
        Self {
            usage: Usage::plain(prompt, completion),
            estimated: true,
            delivered: true,
        }
    }

    /// As said, with whether the answer delivered anything.
    pub fn delivered(self, delivered: bool) -> Self {
        Self { delivered, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Usage {
        serde_json::from_str::<WireUsage>(json)
            .unwrap()
            .usage()
            .unwrap()
    }

    fn u(input: i64, cached: i64, cache_write: i64, output: i64, reasoning: i64) -> Usage {
        Usage {
            input,
            cached,
            cache_write,
            output,
            reasoning,
        }
    }

    #[test]
    fn every_shape_reads_into_the_same_classes() {
        // OpenAI chat.
        assert_eq!(
            read(
                r#"{"prompt_tokens":100,"completion_tokens":40,"total_tokens":140,
                "prompt_tokens_details":{"cached_tokens":60},
                "completion_tokens_details":{"reasoning_tokens":25}}"#
            ),
            u(40, 60, 0, 40, 25)
        );
        // DeepSeek chat: hit + miss = prompt.
        assert_eq!(
            read(
                r#"{"prompt_tokens":100,"completion_tokens":10,"prompt_cache_hit_tokens":64,
                "prompt_cache_miss_tokens":36,"completion_tokens_details":{"reasoning_tokens":4}}"#
            ),
            u(36, 64, 0, 10, 4)
        );
        // DeepSeek's classes alone.
        assert_eq!(
            read(
                r#"{"prompt_cache_hit_tokens":5,"prompt_cache_miss_tokens":7,"completion_tokens":1}"#
            ),
            u(7, 5, 0, 1, 0)
        );
        // Anthropic: input_tokens leaves the cache out.
        assert_eq!(
            read(
                r#"{"input_tokens":10,"cache_read_input_tokens":300,
                "cache_creation_input_tokens":50,"output_tokens":20}"#
            ),
            u(10, 300, 50, 20, 0)
        );
        // Responses: input_tokens includes the cache.
        assert_eq!(
            read(
                r#"{"input_tokens":100,"input_tokens_details":{"cached_tokens":80},
                "output_tokens":30,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":130}"#
            ),
            u(20, 80, 0, 30, 12)
        );
        // Plain.
        assert_eq!(
            read(r#"{"prompt_tokens":3,"completion_tokens":2}"#),
            u(3, 0, 0, 2, 0)
        );
        // Nonsense is clamped, never negative, never more cached than prompt.
        assert_eq!(
            read(
                r#"{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":9},"completion_tokens":-3}"#
            ),
            u(0, 5, 0, 0, 0)
        );
        assert_eq!(
            serde_json::from_str::<WireUsage>("{}").unwrap().usage(),
            None
        );
    }

    #[test]
    fn stream_parts_merge() {
        let mut w: WireUsage = serde_json::from_str(
            r#"{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}"#,
        )
        .unwrap();
        w.merge(&serde_json::from_str(r#"{"output_tokens":9}"#).unwrap());
        assert_eq!(w.usage(), Some(u(10, 5, 0, 9, 0)));
    }
}
