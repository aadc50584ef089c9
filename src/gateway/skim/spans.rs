//! The long strings a first reading of a body stepped over, kept so that a second reading of
//! the same text steps over each at once. A coding agent's request in front of a chat-only
//! upstream is read twice: once for what every call needs (model, limits, the prompt
//! estimate), then again to translate it; its strings — code, tool results — are most of its
//! bytes, and the second scan of them was a quarter of such a call's instructions.

/// Strings shorter than this are scanned again: finding one costs about as much.
const LONG: usize = 48;

/// One string: its opening quote, one past its closing quote, whether it held an escape,
/// and whether it was checked for lone surrogate escapes (read for its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    open: usize,
    past: usize,
    escaped: bool,
    checked: bool,
}

/// The long strings of one text, in the order they open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Spans {
    /// Where the text they were read from starts in memory: a reading of another text (or
    /// of a copy) finds none of them.
    origin: usize,
    len: usize,
    at: Vec<Span>,
}

impl Spans {
    pub(super) fn of(text: &str) -> Self {
        Self {
            origin: text.as_ptr() as usize,
            len: text.len(),
            at: Vec::new(),
        }
    }

    /// A string from `open` to `past` read by the first reading.
    #[inline(always)]
    pub(super) fn note(&mut self, open: usize, past: usize, escaped: bool, checked: bool) {
        // In order already unless the first reading went back (none does): kept sorted for
        // the search regardless.
        if past - open >= LONG && self.at.last().is_none_or(|l| l.open < open) {
            self.at.push(Span {
                open,
                past,
                escaped,
                checked,
            });
        }
    }

    /// Where `text`, a part of the text these were read from, starts in it.
    pub(super) fn offset_of(&self, text: &str) -> Option<usize> {
        let at = (text.as_ptr() as usize).checked_sub(self.origin)?;
        (at.checked_add(text.len())? <= self.len).then_some(at)
    }

    /// The string opening at `open`: one past its closing quote and whether it held an
    /// escape, when it was read and checked as much as `checked` asks.
    #[inline(always)]
    pub(super) fn find(&self, open: usize, checked: bool) -> Option<(usize, bool)> {
        let i = self.at.partition_point(|s| s.open < open);
        let s = self.at.get(i)?;
        (s.open == open && (s.checked || !checked)).then_some((s.past, s.escaped))
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use crate::gateway::skim::{Malformed, Skim};

    fn noted(text: &str) -> super::Spans {
        let mut first = Skim::recording(text);
        first.skip().unwrap();
        first.take_spans().unwrap()
    }

    /// A second reading of the same text steps over a long string the first one noted
    /// without looking at it again (a byte changed inside it since goes unseen); a reading
    /// of a copy, or a scan, sees it.
    #[test]
    fn a_second_reading_steps_over_noted_strings() {
        let long = "x".repeat(60);
        let mut text = format!(r#"{{"a":"{long}","b":"short"}}"#);
        let spans = noted(&text);
        assert_eq!(
            spans.len(),
            1,
            "the short string is scanned again, not noted"
        );
        let origin = text.as_ptr();
        let at = text.find('x').unwrap() + 10;
        text.replace_range(at..at + 1, "\u{1}");
        assert_eq!(origin, text.as_ptr(), "the same text, in place");
        assert_eq!(Skim::with_spans(&text, Some(&spans)).skip(), Ok(()));
        assert_eq!(Skim::new(&text).skip(), Err(Malformed));
        let copy = text.clone();
        assert_eq!(Skim::with_spans(&copy, Some(&spans)).skip(), Err(Malformed));
        // A part of the text (a member read again) finds them at its own positions.
        let quote = text.find("\"x").unwrap();
        let mut part = Skim::with_spans(&text[quote..], Some(&spans));
        assert_eq!(part.string(false, None), Ok(false));
        assert_eq!(part.pos(), long.len() + 2);
    }

    /// A string the first reading only skipped is scanned again when it is read for its
    /// value (a lone surrogate escape refused then), and an escape is reported either way.
    #[test]
    fn a_skipped_string_is_checked_when_read() {
        let text = format!(r#"["{}\ud800","{}\n"]"#, "y".repeat(50), "z".repeat(50));
        let spans = noted(&text);
        assert_eq!(spans.len(), 2);
        let mut s = Skim::with_spans(&text, Some(&spans));
        s.expect(b'[').unwrap();
        assert_eq!(s.string(true, None), Err(Malformed));
        let mut s = Skim::with_spans(&text, Some(&spans));
        s.expect(b'[').unwrap();
        assert_eq!(s.string(false, None), Ok(true));
        s.expect(b',').unwrap();
        assert_eq!(s.string(true, None), Ok(true));
    }
}
