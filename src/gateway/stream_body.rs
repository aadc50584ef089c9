//! A streamed answer as the response body itself: each poll reads the upstream, meters and
//! masks what came, and hands the caller what may go now. No task and no channel sit between
//! the upstream's bytes and the caller's socket, so a chunk costs no extra wake-up (issue
//! #26). When the stream ends, or the caller leaves (the body is dropped), the call is
//! settled.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use super::Gateway;
use super::call::Call;
use super::relay::Relay;
use super::secret_stream::StreamGuard;
use super::stages::Request;
use super::upstream_call::ByteStream;
use crate::ledger::KeyEntry;
use crate::telemetry;

/// The request-log error of a stream whose caller went away.
pub(super) const CLIENT_LEFT: &str = "client disconnected";

/// Idle time allowed between two chunks of a stream.
const STREAM_IDLE: Duration = Duration::from_secs(300);

/// What a stream needs until it is settled.
pub(super) struct Flow {
    pub gw: Arc<Gateway>,
    pub call: Call,
    pub entry: Arc<KeyEntry>,
    pub req: Request,
    pub meter: Relay,
    pub upstream: ByteStream,
    pub guard: StreamGuard,
    /// Why the stream stopped early (none: it ended as the upstream ended it).
    pub error: Option<String>,
    pub labels: (String, String),
}

pub(super) struct RelayedStream {
    /// `None` once settled.
    flow: Option<Flow>,
    /// Fires `STREAM_IDLE` after the last chunk; moved forward only when it fires (a chunk
    /// notes its time instead of resetting a timer).
    idle: Pin<Box<Sleep>>,
    last_chunk: Instant,
    /// The upstream is done: the tail goes out, then the call is settled.
    ended: bool,
}

impl RelayedStream {
    pub fn new(flow: Flow) -> Self {
        let now = Instant::now();
        Self {
            flow: Some(flow),
            idle: Box::pin(tokio::time::sleep_until(now + STREAM_IDLE)),
            last_chunk: now,
            ended: false,
        }
    }

    /// Whether the upstream was silent for longer than allowed (re-arms the timer when a
    /// chunk came since it was set).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last_chunk + STREAM_IDLE;
            if deadline <= Instant::now() {
                return true;
            }
            self.idle.as_mut().reset(deadline);
        }
    }

    /// The stream's last bytes once the upstream ended it normally: what the relay and the
    /// secret guard still hold.
    fn tail(f: &mut Flow) -> Vec<u8> {
        let mut rest = f.guard.finish();
        if let Some(tail) = f.meter.rest() {
            rest.extend(f.guard.push(&tail));
            rest.extend(f.guard.finish());
        }
        rest
    }

    fn settle(&mut self) {
        if let Some(f) = self.flow.take() {
            let gw = f.gw.clone();
            gw.settle_stream(f);
        }
    }
}

impl Stream for RelayedStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                this.settle();
                return Poll::Ready(None);
            }
            let Some(f) = this.flow.as_mut() else {
                return Poll::Ready(None);
            };
            if f.meter.done() {
                this.ended = true;
                let rest = Self::tail(f);
                if !rest.is_empty() {
                    return Poll::Ready(Some(Ok(Bytes::from(rest))));
                }
                continue;
            }
            let chunk = match f.upstream.poll_next_unpin(cx) {
                Poll::Pending => {
                    if this.idle_expired(cx) {
                        if let Some(f) = this.flow.as_mut() {
                            f.error = Some("upstream idle timeout".into());
                        }
                        this.ended = true;
                        continue;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    let rest = Self::tail(f);
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(rest))));
                    }
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    f.error = Some(format!("upstream stream error: {e}"));
                    this.ended = true;
                    continue;
                }
                Poll::Ready(Some(Ok(c))) => c,
            };
            this.last_chunk = Instant::now();
            let Ok(out) = f.meter.push(&chunk) else {
                f.error = Some("upstream event too long".into());
                this.ended = true;
                continue;
            };
            if out.is_empty() {
                continue;
            }
            if f.call.row.ttft_ms.is_none() {
                f.call.row.ttft_ms = Some(f.call.elapsed_ms());
                if let Some(a) = f.call.attempt_started {
                    let (model, up) = &f.labels;
                    metrics::histogram!(telemetry::UPSTREAM_TTFT, "upstream" => up.clone(), "model" => model.clone())
                        .record(a.elapsed().as_secs_f64());
                }
            }
            // Masked, and held back while a secret may be completing in the next event.
            let out = f.guard.push(&out);
            if out.is_empty() {
                continue;
            }
            return Poll::Ready(Some(Ok(Bytes::from(out))));
        }
    }
}

impl Drop for RelayedStream {
    /// The caller left before the end (the server dropped the body): settled as such.
    fn drop(&mut self) {
        if let Some(f) = self.flow.as_mut()
            && !self.ended
            && f.error.is_none()
        {
            f.error = Some(CLIENT_LEFT.into());
        }
        self.settle();
    }
}
