//! A JSON reader over a request body's text for the one pass the gateway makes of every call
//! (see `lite` and `stages::read`): values skipped or their strings counted in place, eight
//! bytes at a time, without a tree and without copying a string to unescape it.
//!
//! serde_json spent ~20 instructions a byte of a coding agent's request here: code in a
//! prompt has an escape every ten bytes or so (`\n`, `\"`), and each one restarted its scan,
//! copied the run before it into a scratch buffer and counted it again. This reader finds
//! the next quote, backslash or control character and counts the characters before it in
//! the same pass over each word, and counts an escape as the one character it stands for.
//!
//! It accepts and refuses what serde_json does where the gateway used serde_json before (the
//! tests keep that reader as the oracle): a string read for its value (a key, a text) must
//! not hold a lone surrogate escape and a number read for its value must be finite as an
//! `f64`, while a value only skipped is checked for its grammar alone — as serde_json's
//! `IgnoredAny` does.

mod block;
mod spans;

use super::tokens::Chars;
use block::{Block, Lanes, below};
pub use spans::Spans;

/// The body is not the JSON the reader expects at this place (the caller answers that it is
/// not a JSON object, whatever went wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

pub type Read<T> = Result<T, Malformed>;

/// What an escape stands for, to the count: nothing (not decoded), an ASCII character or
/// another one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Unread,
    Ascii,
    Other,
}

/// The escape at `at` (a backslash): its length, and the kind of character it stands for
/// (a surrogate pair as one character; a lone surrogate refused when `decode`).
#[inline(always)]
fn escape(b: &[u8], at: usize, decode: bool) -> Read<(usize, Class)> {
    match *b.get(at + 1).ok_or(Malformed)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok((2, Class::Ascii)),
        b'u' => {
            let cp = hex4(b, at + 2)?;
            if !decode {
                return Ok((6, Class::Unread));
            }
            match cp {
                0xD800..=0xDBFF => {
                    if b.get(at + 6..at + 8) != Some(b"\\u")
                        || !(0xDC00..=0xDFFF).contains(&hex4(b, at + 8)?)
                    {
                        return Err(Malformed);
                    }
                    Ok((12, Class::Other))
                }
                0xDC00..=0xDFFF => Err(Malformed),
                0..=0x7F => Ok((6, Class::Ascii)),
                _ => Ok((6, Class::Other)),
            }
        }
        _ => Err(Malformed),
    }
}

fn hex4(b: &[u8], at: usize) -> Read<u32> {
    let digits = b.get(at..at + 4).ok_or(Malformed)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + char::from(d).to_digit(16).ok_or(Malformed)?;
    }
    Ok(v)
}

/// A string's characters as `Chars` counts them — ASCII ones and the rest — from its plain
/// bytes (the ones past ASCII and the ones continuing a character among them) and its
/// escapes (each one character).
#[derive(Default)]
struct Tally {
    /// Bytes of escapes: the plain bytes are the string's length less these.
    escape_bytes: usize,
    /// Characters escapes stand for.
    ascii: u64,
    other: u64,
    /// Bytes past ASCII and continuing bytes of blocks with a stop, counted from their marks.
    high: u64,
    continuation: u64,
    /// The same, summed for whole blocks without a stop.
    lanes: Lanes,
}

impl Tally {
    // Wrapping adds: no count can pass the body's length (and an overflow check costs as much
    // as the count).
    #[inline(always)]
    fn escaped(&mut self, class: Class, len: usize) {
        self.escape_bytes = self.escape_bytes.wrapping_add(len);
        self.ascii = self.ascii.wrapping_add(u64::from(class == Class::Ascii));
        self.other = self.other.wrapping_add(u64::from(class == Class::Other));
    }

    /// The bytes of `block` marked in `taken` (escapes' bytes are ASCII: they add nothing).
    #[inline(always)]
    fn part(&mut self, block: Block, taken: u32) {
        let high = block.high() & taken;
        if high != 0 {
            self.high = self.high.wrapping_add(u64::from(high.count_ones()));
            let continuation = block.continuation() & taken;
            self.continuation = self
                .continuation
                .wrapping_add(u64::from(continuation.count_ones()));
        }
    }

    /// The counts of a string `len` bytes long (between its quotes) into `c`.
    fn into(self, len: usize, c: &mut Chars) {
        let (high, continuation) = self.lanes.sums();
        let high = high.wrapping_add(self.high);
        let lead = high.wrapping_sub(continuation.wrapping_add(self.continuation));
        let plain = len.wrapping_sub(self.escape_bytes) as u64;
        c.add_counts(
            plain.wrapping_sub(high).wrapping_add(self.ascii),
            lead.wrapping_add(self.other),
        );
    }
}

/// What a reader does with the long strings it meets ([`Spans`]).
enum Memo<'a> {
    Off,
    /// Notes them, for a second reading of the same text.
    Record(Spans),
    /// Steps over the ones a first reading noted; the text starts this far into theirs.
    Use(&'a Spans, usize),
}

/// Where a reader stands in a body's text.
pub struct Skim<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    memo: Memo<'a>,
}

impl<'a> Skim<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            b: text.as_bytes(),
            i: 0,
            memo: Memo::Off,
        }
    }

    /// A reader that notes the long strings it reads ([`Skim::take_spans`]).
    pub fn recording(text: &'a str) -> Self {
        Self {
            memo: Memo::Record(Spans::of(text)),
            ..Self::new(text)
        }
    }

    /// A reader of `text` (the text `spans` were noted from, or a part of it) that steps
    /// over the strings they hold; a plain reader when they are another text's.
    pub fn with_spans(text: &'a str, spans: Option<&'a Spans>) -> Self {
        let memo = spans
            .and_then(|sp| Some(Memo::Use(sp, sp.offset_of(text)?)))
            .unwrap_or(Memo::Off);
        Self {
            memo,
            ..Self::new(text)
        }
    }

    /// The long strings read so far, when recording.
    pub fn take_spans(&mut self) -> Option<Spans> {
        match std::mem::replace(&mut self.memo, Memo::Off) {
            Memo::Record(sp) => Some(sp),
            other => {
                self.memo = other;
                None
            }
        }
    }

    pub fn pos(&self) -> usize {
        self.i
    }

    /// The text between two positions this reader stood at.
    pub fn slice(&self, from: usize, to: usize) -> &'a str {
        self.text.get(from..to).unwrap_or("")
    }

    /// The next byte past whitespace, not taken.
    pub fn peek(&mut self) -> Read<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                return Ok(c);
            }
            self.i += 1;
        }
        Err(Malformed)
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Read<()> {
        match self.peek() {
            Err(Malformed) => Ok(()),
            Ok(_) => Err(Malformed),
        }
    }

    /// `c`, past whitespace.
    pub fn expect(&mut self, c: u8) -> Read<()> {
        if self.peek()? != c {
            return Err(Malformed);
        }
        self.i += 1;
        Ok(())
    }

    /// Just past an array's or object's opening: whether an element (or member) follows
    /// rather than `close`.
    pub fn first(&mut self, close: u8) -> Read<bool> {
        if self.peek()? == close {
            self.i += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// Just past an element: whether another follows (after a comma) or `close` ended them.
    pub fn next(&mut self, close: u8) -> Read<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                Ok(true)
            }
            c if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(Malformed),
        }
    }

    /// A member's name and the colon after it; `escaped` names are unescaped (rare), the
    /// rest borrowed.
    #[inline]
    pub fn key(&mut self) -> Read<Key<'a>> {
        let key = self.name()?;
        self.expect(b':')?;
        Ok(key)
    }

    /// A member's name, without the colon after it (serde_json reads a name before it looks
    /// for the colon; a reader that acts on the name alone does too).
    #[inline]
    pub fn name(&mut self) -> Read<Key<'a>> {
        if self.peek()? != b'"' {
            return Err(Malformed);
        }
        let start = self.i;
        let escaped = !self.short() && self.string(true, None)?;
        let raw = self.slice(start + 1, self.i - 1);
        let key = if escaped {
            Key::Owned(serde_json::from_str(self.slice(start, self.i)).map_err(|_| Malformed)?)
        } else {
            Key::Borrowed(raw)
        };
        Ok(key)
    }

    /// A string at the reader (at its opening quote) stepped over when its closing quote is
    /// among the sixteen bytes after it, with nothing to check before it: most names and
    /// short values, read in line without the general scan's set-up.
    #[inline(always)]
    fn short(&mut self) -> bool {
        let Some(w) = self.b.get(self.i + 1..).and_then(<[u8]>::first_chunk::<16>) else {
            return false;
        };
        let stops = Block::load(w).stops();
        let p = stops.trailing_zeros() as usize;
        // No stop at all gives p = 32, past the block: not a quote.
        if w.get(p) != Some(&b'"') {
            return false;
        }
        self.i += p + 2;
        true
    }

    /// A string at the reader (past whitespace): checked (`checked`: no lone surrogate
    /// escape) and its characters added to `count` when given. Whether it held an escape.
    pub fn string(&mut self, checked: bool, count: Option<&mut Chars>) -> Read<bool> {
        if self.peek()? != b'"' {
            return Err(Malformed);
        }
        let quote = self.i;
        if let Memo::Use(spans, base) = &self.memo
            && count.is_none()
            && let Some((past, escaped)) = spans.find(quote + base, checked)
            && past - base <= self.b.len()
        {
            self.i = past - base;
            return Ok(escaped);
        }
        self.i += 1;
        // A counted string is read for its value: checked.
        let checked = checked || count.is_some();
        let escaped = match count {
            Some(c) => {
                let mut t = Tally::default();
                let escaped = self.scan::<true>(true, &mut t)?;
                // Between the quotes.
                t.into(self.i - 2 - quote, c);
                escaped
            }
            None => self.scan::<false>(checked, &mut Tally::default())?,
        };
        if let Memo::Record(spans) = &mut self.memo {
            spans.note(quote, self.i, escaped, checked);
        }
        Ok(escaped)
    }

    /// The rest of a string from the reader, through its closing quote, sixteen bytes at a
    /// time: each block's stops (quotes, backslashes, control characters) taken in turn, an
    /// escape read and counted (`COUNT`) as the character it stands for, the block's bytes
    /// counted once, when the scan leaves it. Whether the string held an escape.
    #[inline(always)]
    fn scan<const COUNT: bool>(&mut self, decode: bool, t: &mut Tally) -> Read<bool> {
        let b = self.b;
        let mut i = self.i;
        let mut escaped = false;
        // The tally's fields kept in registers while the string is read.
        let mut c = Tally::default();
        let close = 'blocks: loop {
            let block = match b.get(i..).and_then(<[u8]>::first_chunk::<16>) {
                Some(w) => Block::load(w),
                None => {
                    // The body's last bytes, padded with zeros: a zero is a stop, and one
                    // past the body's end refuses it.
                    let rest = b.get(i..).unwrap_or_default();
                    let mut tail = [0u8; 16];
                    tail[..rest.len()].copy_from_slice(rest);
                    Block::load(&tail)
                }
            };
            let mut stops = block.stops();
            if stops == 0 {
                if COUNT {
                    c.lanes.add(block);
                }
                i += 16;
                continue;
            }
            loop {
                let p = stops.trailing_zeros() as usize;
                let at = i + p;
                match b.get(at) {
                    Some(b'"') => {
                        if COUNT {
                            c.part(block, below(p));
                        }
                        break 'blocks at;
                    }
                    Some(b'\\') => {
                        escaped = true;
                        let (len, class) = escape(b, at, decode)?;
                        c.escaped(class, len);
                        // The block's stops inside the escape are its own bytes.
                        let past = p + len;
                        stops &= !below(past);
                        if stops == 0 {
                            if COUNT {
                                c.part(block, u32::MAX);
                            }
                            i += past.max(16);
                            continue 'blocks;
                        }
                    }
                    // A control character, or the end of the body.
                    _ => return Err(Malformed),
                }
            }
        };
        self.i = close + 1;
        if COUNT {
            *t = c;
        }
        Ok(escaped)
    }

    /// A number's grammar (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`), and when
    /// `checked` that it is a finite `f64` (serde_json refuses one out of range when it
    /// reads its value).
    pub fn number(&mut self, checked: bool) -> Read<()> {
        let start = self.i;
        let b = self.b;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => {
                i += 1;
                if b.get(i).is_some_and(u8::is_ascii_digit) {
                    return Err(Malformed);
                }
            }
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return Err(Malformed),
        }
        let mut whole = true;
        if b.get(i) == Some(&b'.') {
            i += 1;
            whole = false;
            if !digits(&mut i) {
                return Err(Malformed);
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            whole = false;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return Err(Malformed);
            }
        }
        self.i = i;
        // An integer of up to 19 digits fits an `i64` or `u64`; longer ones are read as
        // floats, as serde_json does.
        if checked && (!whole || i - start > 19) {
            let f: f64 = self.slice(start, i).parse().map_err(|_| Malformed)?;
            if !f.is_finite() {
                return Err(Malformed);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Read<()> {
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err(Malformed);
        }
        self.i += word.len();
        Ok(())
    }

    /// `true`, `false`, `null` or a number at the reader (past whitespace); anything else is
    /// refused.
    pub fn scalar(&mut self, checked: bool) -> Read<()> {
        match self.peek()? {
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(checked),
            _ => Err(Malformed),
        }
    }

    /// Any value, skipped: its grammar checked, strings without their surrogates and numbers
    /// without their range (serde_json's `IgnoredAny`); nesting kept on a stack, not the
    /// call stack, as deep as it goes.
    pub fn skip(&mut self) -> Read<()> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            // A value.
            match self.peek()? {
                b'"' => {
                    if !self.short() {
                        self.string(false, None)?;
                    }
                }
                c @ (b'[' | b'{') => {
                    self.i += 1;
                    let close = if c == b'[' { b']' } else { b'}' };
                    if self.first(close)? {
                        open.push(close);
                        if close == b'}' {
                            self.skip_name()?;
                        }
                        continue;
                    }
                }
                _ => self.scalar(false)?,
            }
            // What follows it: the next element or member, or the end of enclosing ones.
            loop {
                let Some(&close) = open.last() else {
                    return Ok(());
                };
                if self.next(close)? {
                    if close == b'}' {
                        self.skip_name()?;
                    }
                    break;
                }
                open.pop();
            }
        }
    }

    /// A member's name skipped (its grammar checked), and the colon after it.
    fn skip_name(&mut self) -> Read<()> {
        if self.peek()? != b'"' || !self.short() {
            self.string(false, None)?;
        }
        self.expect(b':')
    }

    /// An object at the reader skipped as serde_json skips one whose entries it visits: its
    /// member names read (checked), their values skipped.
    pub fn skip_members(&mut self) -> Read<()> {
        self.expect(b'{')?;
        let mut more = self.first(b'}')?;
        while more {
            self.key()?;
            self.skip()?;
            more = self.next(b'}')?;
        }
        Ok(())
    }

    /// An array at the reader skipped element by element.
    pub fn skip_elements(&mut self) -> Read<()> {
        self.expect(b'[')?;
        let mut more = self.first(b']')?;
        while more {
            self.skip()?;
            more = self.next(b']')?;
        }
        Ok(())
    }
}

/// A member's name.
pub enum Key<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Key<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    pub fn into_string(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}
