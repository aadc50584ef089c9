//! The connection's bytes around hyper: a request hyper cannot parse (a malformed request
//! line or header, a URI or a header section over its limits) never reaches our router, and
//! hyper answers it itself with an empty 400 / 414 / 431. [`JsonRefusals`] sits between
//! hyper and the socket and turns exactly those answers into JSON in the API's error shape,
//! so every refusal a client can get is documented JSON.
//!
//! How one is told apart: every answer of the router carries `x-request-id` (the outermost
//! middleware sets it); hyper's own refusal is a 4xx head with `content-length: 0` and
//! nothing of ours. Only such a head, written on its own, is rewritten; everything else
//! passes through untouched (one prefix comparison per write).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket whose parser-level refusals are rewritten as JSON (see the module).
pub struct JsonRefusals<T> {
    inner: T,
    /// A rewritten refusal being written, and how much of it is out.
    rewrite: Option<(Vec<u8>, usize)>,
}

impl<T> JsonRefusals<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            rewrite: None,
        }
    }
}

/// What the client gets instead of hyper's empty refusal `head`, if `head` is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() > 512
        || !(head.starts_with(b"HTTP/1.1 4") || head.starts_with(b"HTTP/1.0 4"))
        || !head.ends_with(b"\r\n\r\n")
    {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    if text.contains("\r\nx-request-id:") || !text.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let status: u16 = text.get(9..12)?.parse().ok()?;
    let (reason, code, message) = match status {
        414 => (
            "URI Too Long",
            "URI_TOO_LONG",
            "请求地址过长 (request URI too long)",
        ),
        431 => (
            "Request Header Fields Too Large",
            "HEADERS_TOO_LARGE",
            "请求头过大 (request header fields too large)",
        ),
        408 => (
            "Request Timeout",
            "REQUEST_TIMEOUT",
            "请求超时 (request timeout)",
        ),
        _ => (
            "Bad Request",
            "INVALID_REQUEST",
            "请求格式无效 (malformed HTTP request)",
        ),
    };
    let status = if matches!(status, 408 | 414 | 431) {
        status
    } else {
        400
    };
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "details": null}
    })
    .to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncWrite + Unpin> JsonRefusals<T> {
    /// Writes the pending rewrite; `Ready(Ok(()))` once all of it is out.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, off)) = self.rewrite.as_mut() {
            if *off >= bytes.len() {
                self.rewrite = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*off..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *off += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRefusals<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rewrite.is_none()
            && let Some(r) = replacement(buf)
        {
            self.rewrite = Some((r, 0));
        }
        if self.rewrite.is_some() {
            return self.drain(cx).map_ok(|()| buf.len());
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.rewrite.is_none() {
            let mut parts = bufs.iter().filter(|b| !b.is_empty());
            if let (Some(head), None) = (parts.next(), parts.next())
                && let Some(r) = replacement(head)
            {
                self.rewrite = Some((r, 0));
            }
        }
        if self.rewrite.is_some() {
            let total = bufs.iter().map(|b| b.len()).sum();
            return self.drain(cx).map_ok(|()| total);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_empty_refusals_are_rewritten() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 09:00:00 GMT\r\n\r\n";
        let r = String::from_utf8(replacement(hyper_431).unwrap()).unwrap();
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "HEADERS_TOO_LARGE");
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some());
        // Ours: carries a request id, or a body.
        assert!(
            replacement(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: req_1\r\n\r\n"
            )
            .is_none()
        );
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"data: HTTP/1.1 400\r\n\r\n").is_none());
    }
}
