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

#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: BytesMut,
}

fn find_boundary(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
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

impl SseSplitter {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buf) {
            let raw = self.buf.split_to(end).freeze();
            let _ = self.buf.split_to(sep);
            let text = String::from_utf8_lossy(&raw);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            out.push(Event {
                data: data.join("\n"),
                raw,
            });
        }
        out
    }

    /// What is left when the stream ends without a final blank line.
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunks() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"data: {\"a\"").is_empty());
        let ev = s.push(b":1}\n\ndata: [DONE]\n\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "[DONE]");
        let ev = s.push(b": keep-alive\r\n\r\ndata: x\n");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "");
        assert_eq!(s.rest().unwrap(), Bytes::from_static(b"data: x\n"));
    }
}
