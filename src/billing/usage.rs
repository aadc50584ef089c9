//! What a call used, by the classes upstreams bill separately. Every protocol's usage fields
//! are read into this one shape (`gateway::usage`), and the cost is computed from it.

use serde::Serialize;

/// Tokens of a call by billing class. `input` is the prompt without cache hits and cache
/// writes, so that the prompt is `input + cached + cache_write`; `output` counts reasoning,
/// of which `reasoning` says how much.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input: i64,
    pub cached: i64,
    pub cache_write: i64,
    pub output: i64,
    pub reasoning: i64,
}

impl Usage {
    /// A usage known only as prompt and completion (an estimate, or an upstream that does
    /// not detail its classes).
    pub fn plain(prompt: i64, completion: i64) -> Self {
        Self {
            input: prompt.max(0),
            output: completion.max(0),
            ..Self::default()
        }
    }

    /// The whole prompt, every input class together.
    pub fn prompt(&self) -> i64 {
        self.input + self.cached + self.cache_write
    }

    /// No class below zero, cache classes within the prompt they were read from.
    pub fn clamped(self) -> Self {
        Self {
            input: self.input.max(0),
            cached: self.cached.max(0),
            cache_write: self.cache_write.max(0),
            output: self.output.max(0),
            reasoning: self.reasoning.clamp(0, self.output.max(0)),
        }
    }

    /// From OpenAI-style counts, where the prompt includes its cached part.
    pub fn from_prompt_total(
        prompt: i64,
        cached: i64,
        cache_write: i64,
        completion: i64,
        reasoning: i64,
    ) -> Self {
        let cached = cached.clamp(0, prompt.max(0));
        let cache_write = cache_write.clamp(0, (prompt - cached).max(0));
        Self {
            input: (prompt - cached - cache_write).max(0),
            cached,
            cache_write,
            output: completion.max(0),
            reasoning: reasoning.clamp(0, completion.max(0)),
        }
    }
}
