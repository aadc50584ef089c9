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

use super::tokens::Chars;

/// The body is not the JSON the reader expects at this place (the caller answers that it is
/// not a JSON object, whatever went wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

pub type Read<T> = Result<T, Malformed>;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes that end a run of plain string text — a quote, a backslash, a control
/// character — each marked by its top bit; the lowest mark is exact (a borrow can only mark
/// a byte above a true one), which is all a scan needs.
fn stops(x: u64) -> u64 {
    let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
    let q = x ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = x ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (ctrl | quote | backslash) & HIGH
}

/// The bytes of a word below byte `k` (< 8).
fn low(k: u32) -> u64 {
    (1u64 << (8 * (k & 7))) - 1
}

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

/// Bytes of text counted as `Chars` counts them: all bytes, bytes with the top bit set, and
/// leading bytes of characters past ASCII (`0b11xx_xxxx`), the last two summed in byte lanes
/// folded before they can overflow.
#[derive(Default)]
struct Tally {
    bytes: u64,
    high: u64,
    lead: u64,
    /// Lane sums not yet folded, and how many words they hold (≤ 255).
    lanes_high: u64,
    lanes_lead: u64,
    words: u32,
    /// Characters an escape stands for.
    ascii: u64,
    other: u64,
}

impl Tally {
    // Wrapping adds: no count can pass the body's length (and an overflow check a word
    // costs as much as the count).
    #[inline(always)]
    fn word(&mut self, x: u64, len: u32) {
        self.lanes_high = self.lanes_high.wrapping_add((x & HIGH) >> 7);
        self.lanes_lead = self.lanes_lead.wrapping_add((x & (x << 1) & HIGH) >> 7);
        self.bytes = self.bytes.wrapping_add(u64::from(len));
        self.words = self.words.wrapping_add(1);
        if self.words == 255 {
            self.fold();
        }
    }

    #[inline(always)]
    fn escaped(&mut self, class: Class) {
        self.ascii = self.ascii.wrapping_add(u64::from(class == Class::Ascii));
        self.other = self.other.wrapping_add(u64::from(class == Class::Other));
    }

    fn byte(&mut self, b: u8) {
        self.bytes = self.bytes.wrapping_add(1);
        self.high = self.high.wrapping_add(u64::from(b >= 0x80));
        self.lead = self.lead.wrapping_add(u64::from(b >= 0xC0));
    }

    fn fold(&mut self) {
        self.high += lanes(self.lanes_high);
        self.lead += lanes(self.lanes_lead);
        self.lanes_high = 0;
        self.lanes_lead = 0;
        self.words = 0;
    }

    fn into(mut self, c: &mut Chars) {
        self.fold();
        c.add_counts(self.bytes - self.high + self.ascii, self.lead + self.other);
    }
}

/// The sum of a word's eight byte lanes (each ≤ 255).
fn lanes(v: u64) -> u64 {
    const EVEN: u64 = 0x00FF_00FF_00FF_00FF;
    let pairs = (v & EVEN) + ((v >> 8) & EVEN);
    pairs.wrapping_mul(0x0001_0001_0001_0001) >> 48
}

/// Where a reader stands in a body's text.
pub struct Skim<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Skim<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            b: text.as_bytes(),
            i: 0,
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
    pub fn key(&mut self) -> Read<Key<'a>> {
        if self.peek()? != b'"' {
            return Err(Malformed);
        }
        let start = self.i;
        let escaped = self.string(true, None)?;
        let raw = self.slice(start + 1, self.i - 1);
        let key = if escaped {
            Key::Owned(serde_json::from_str(self.slice(start, self.i)).map_err(|_| Malformed)?)
        } else {
            Key::Borrowed(raw)
        };
        self.expect(b':')?;
        Ok(key)
    }

    /// A string at the reader (past whitespace): checked (`checked`: no lone surrogate
    /// escape) and its characters added to `count` when given. Whether it held an escape.
    pub fn string(&mut self, checked: bool, count: Option<&mut Chars>) -> Read<bool> {
        if self.peek()? != b'"' {
            return Err(Malformed);
        }
        self.i += 1;
        match count {
            Some(c) => {
                let mut t = Tally::default();
                let escaped = self.scan::<true>(true, &mut t)?;
                t.into(c);
                Ok(escaped)
            }
            None => self.scan::<false>(checked, &mut Tally::default()),
        }
    }

    /// The rest of a string from the reader, through its closing quote, a word at a time up
    /// to the next stop byte: the text before it counted (`COUNT`) from the same words, an
    /// escape counted as the character it stands for (its bytes not). Whether the string
    /// held an escape.
    #[inline(always)]
    fn scan<const COUNT: bool>(&mut self, decode: bool, t: &mut Tally) -> Read<bool> {
        let b = self.b;
        let mut i = self.i;
        let mut escaped = false;
        // The tally's fields kept in registers while the string is read.
        let mut c = Tally::default();
        let count = |c: &mut Tally, x: u64, len: u32| {
            if COUNT {
                c.word(x, len);
            }
        };
        let result = 'words: loop {
            let Some(w) = b.get(i..i + 8) else {
                // The last few bytes of the body, one at a time.
                match *b.get(i).ok_or(Malformed)? {
                    b'"' => break 'words Ok(i + 1),
                    b'\\' => {
                        escaped = true;
                        let (len, class) = escape(b, i, decode)?;
                        c.escaped(class);
                        i += len;
                    }
                    x if x < 0x20 => break 'words Err(Malformed),
                    x => {
                        if COUNT {
                            c.byte(x);
                        }
                        i += 1;
                    }
                }
                continue;
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            let x = u64::from_le_bytes(a);
            let m = stops(x);
            if m == 0 {
                count(&mut c, x, 8);
                i += 8;
                continue;
            }
            // The first stop; the scan starts again past it (an exact mark for every byte
            // of the word, to handle them all at once, cost more than it saved).
            let p = m.trailing_zeros() / 8;
            count(&mut c, x & low(p), p);
            let at = i + p as usize;
            match b.get(at) {
                Some(b'"') => break 'words Ok(at + 1),
                Some(b'\\') => {
                    escaped = true;
                    let (len, class) = escape(b, at, decode)?;
                    c.escaped(class);
                    i = at + len;
                }
                _ => break 'words Err(Malformed),
            }
        };
        self.i = result?;
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
                    self.string(false, None)?;
                }
                c @ (b'[' | b'{') => {
                    self.i += 1;
                    let close = if c == b'[' { b']' } else { b'}' };
                    if self.first(close)? {
                        open.push(close);
                        if close == b'}' {
                            self.string(false, None)?;
                            self.expect(b':')?;
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
                        self.string(false, None)?;
                        self.expect(b':')?;
                    }
                    break;
                }
                open.pop();
            }
        }
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
