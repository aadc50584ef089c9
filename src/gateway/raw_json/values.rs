//! The values a translation reads from a request's bytes, borrowed from them.

/// A value as the caller wrote it (its grammar checked), from its first byte to its last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(pub(super) &'a str);

impl<'a> Raw<'a> {
    pub fn get(self) -> &'a str {
        self.0
    }
}

/// A JSON string's text, ready to write between quotes.
#[derive(Debug, Clone)]
pub enum Text<'a> {
    /// As escaped in the caller's JSON (quotes excluded).
    Escaped(&'a str),
    /// Unescaped: only serde_json's reading, the tests' oracle, gives one (`skim`'s keeps a
    /// string as the caller escaped it).
    #[cfg(test)]
    Owned(String),
}

impl<'a> Text<'a> {
    /// A member that is a string, as sent.
    pub fn of_raw(v: Raw<'a>) -> Option<Self> {
        let s = v.get();
        (s.len() >= 2 && s.starts_with('"')).then(|| Text::Escaped(&s[1..s.len() - 1]))
    }

    /// Whether it is the empty string.
    pub fn is_empty(&self) -> bool {
        match self {
            Text::Escaped(s) => s.is_empty(),
            #[cfg(test)]
            Text::Owned(s) => s.is_empty(),
        }
    }

    pub fn write_inner(&self, out: &mut Vec<u8>) {
        match self {
            Text::Escaped(s) => out.extend_from_slice(s.as_bytes()),
            #[cfg(test)]
            Text::Owned(s) => {
                let quoted = serde_json::to_string(s).unwrap_or_default();
                let inner = quoted
                    .strip_prefix('"')
                    .and_then(|q| q.strip_suffix('"'))
                    .unwrap_or("");
                out.extend_from_slice(inner.as_bytes());
            }
        }
    }
}

/// A string, or an array of `T`s; anything else is `Other`.
#[derive(Default)]
pub enum StrOrSeq<'a, T> {
    Text(Text<'a>),
    Items(Vec<T>),
    #[default]
    Other,
}
