//! A request body held to an idle limit and a deadline.

use std::time::Duration;

/// A request body that fails when it pauses longer than `idle`, or once `deadline` has passed
/// since the request arrived, however steadily it trickles in (the idle limit alone lets a
/// byte every few seconds hold a connection for as long as the body is long). The timer is
/// armed only when the body has to wait: a body already in the buffer (nearly every call)
/// costs no timer at all.
pub struct TimedBody {
    inner: axum::body::Body,
    idle: Duration,
    deadline: tokio::time::Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Data arrived since the timer was last set: the idle time starts again.
    progressed: bool,
}

impl TimedBody {
    pub fn new(inner: axum::body::Body, idle: Duration, deadline: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: tokio::time::Instant::now() + deadline,
            timer: None,
            progressed: true,
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            self.progressed = true;
            return Poll::Ready(frame);
        }
        if self.progressed {
            self.progressed = false;
            let at = (tokio::time::Instant::now() + self.idle).min(self.deadline);
            match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
        if expired {
            let what = if tokio::time::Instant::now() >= self.deadline {
                "the request body took longer than its deadline"
            } else {
                "the request body stopped arriving"
            };
            return Poll::Ready(Some(Err(axum::Error::new(what))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
