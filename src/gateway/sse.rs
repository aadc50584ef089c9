//! Incremental server-sent-events splitting: bytes in as they arrive, whole events out, so
//! each event can be inspected (usage, the hidden usage chunk) and forwarded at once.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event as received, without its terminating blank line.
    pub raw: Bytes,
    /// The joined `data:` lines.
    pub data: String,
}

/// Splits a byte stream into events. Each byte is looked at once (the search for the next
/// blank line resumes where it stopped), and an event may not grow past `max_event` bytes.
#[derive(Debug)]
pub struct SseSplitter {
    buf: BytesMut,
    /// Bytes of `buf` already searched for a boundary.
    scanned: usize,
    max_event: usize,
}

/// The longest event the gateway holds while waiting for its end.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

impl Default for SseSplitter {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

/// An event longer than the limit, without a blank line to end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLong;

/// The first blank line (`\n\n` or `\r\n\r\n`) starting at `from` or later: where it starts
/// and how long it is. Jumps from one `\n` to the next (an event is mostly a long `data:`
/// line).
fn find_boundary(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(j) = memchr::memchr(b'\n', b.get(i..)?) {
        let n = i + j;
        if b.get(n + 1) == Some(&b'\n') {
            return Some((n, 2));
        }
        if n > from && b[n - 1] == b'\r' && b.get(n + 1..n + 3) == Some(b"\r\n".as_slice()) {
            return Some((n - 1, 4));
        }
        i = n + 1;
    }
    None
}

/// An event's `data:` lines, joined by `\n` (one allocation; the usual event is valid
/// UTF-8, read without the lossy path's character walk).
fn data_of(raw: &[u8]) -> String {
    let text = match std::str::from_utf8(raw) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(raw),
    };
    let mut data = String::new();
    let mut first = true;
    for d in text.lines().filter_map(|l| l.strip_prefix("data:")) {
        if !first {
            data.push('\n');
        }
        first = false;
        data.push_str(d.strip_prefix(' ').unwrap_or(d));
    }
    data
}

impl SseSplitter {
    pub fn with_limit(max_event: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            max_event,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLong> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        // A boundary may straddle the previous chunk's end: look 3 bytes back.
        while let Some((end, sep)) = find_boundary(&self.buf, self.scanned.saturating_sub(3)) {
            let raw = self.buf.split_to(end).freeze();
            let _ = self.buf.split_to(sep);
            self.scanned = 0;
            out.push(Event {
                data: data_of(&raw),
                raw,
            });
        }
        self.scanned = self.buf.len();
        if self.buf.len() > self.max_event {
            return Err(EventTooLong);
        }
        Ok(out)
    }

    /// What is left when the stream ends without a final blank line.
    pub fn rest(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunks() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"data: {\"a\"").unwrap().is_empty());
        let ev = s.push(b":1}\n\ndata: [DONE]\n\n").unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "[DONE]");
        let ev = s.push(b": keep-alive\r\n\r\ndata: x\n").unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "");
        assert_eq!(s.rest().unwrap(), Bytes::from_static(b"data: x\n"));
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut s = SseSplitter::with_limit(64);
        assert!(s.push(&[b'a'; 60]).unwrap().is_empty());
        assert_eq!(s.push(&[b'a'; 10]), Err(EventTooLong));
    }

    #[test]
    fn a_boundary_split_across_chunks_is_found() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"data: 1\r").unwrap().is_empty());
        assert!(s.push(b"\n\r").unwrap().is_empty());
        let ev = s.push(b"\n").unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "1");
    }

    /// The boundary search as it was, a byte at a time.
    fn find_boundary_bytewise(b: &[u8], from: usize) -> Option<(usize, usize)> {
        let mut i = from;
        while i + 1 < b.len() {
            if b[i] == b'\n' && b[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if i + 3 < b.len() && &b[i..i + 4] == b"\r\n\r\n" {
                return Some((i, 4));
            }
            i += 1;
        }
        None
    }

    #[test]
    fn data_lines_are_joined() {
        assert_eq!(data_of(b"event: x\ndata: a\ndata:b\r\n: c"), "a\nb");
        assert_eq!(data_of(b"data: \xff\xfe"), "\u{fffd}\u{fffd}");
        assert_eq!(data_of(b"id: 1"), "");
    }

    proptest::proptest! {
        /// However the bytes are cut into chunks, the same events come out, in order.
        #[test]
        fn chunking_never_changes_the_events(
            events in proptest::collection::vec("[a-z0-9 {}:\"]{0,40}", 0..12),
            cuts in proptest::collection::vec(1usize..50, 0..40),
            crlf in proptest::bool::ANY,
        ) {
            let sep = if crlf { "\r\n\r\n" } else { "\n\n" };
            let wire: String = events.iter().map(|e| format!("data: {e}{sep}")).collect();
            let bytes = wire.as_bytes();
            let mut s = SseSplitter::default();
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts {
                let end = (at + c).min(bytes.len());
                got.extend(s.push(&bytes[at..end]).unwrap().into_iter().map(|e| e.data));
                at = end;
            }
            got.extend(s.push(&bytes[at..]).unwrap().into_iter().map(|e| e.data));
            proptest::prop_assert_eq!(got, events);
            proptest::prop_assert!(s.rest().is_none());
        }

        /// The search that jumps between line ends finds what a byte-by-byte one finds.
        #[test]
        fn boundaries_are_found_where_a_byte_walk_finds_them(
            bytes in proptest::collection::vec(proptest::sample::select(b"\r\nda".to_vec()), 0..40),
            from in 0usize..44,
        ) {
            proptest::prop_assert_eq!(
                find_boundary(&bytes, from),
                find_boundary_bytewise(&bytes, from)
            );
        }
    }
}
