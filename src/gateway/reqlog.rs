//! Request-log rows are not quota-critical: they are queued here and inserted in batches off
//! the response path, and flushed on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::ledger::RequestLogSink;
use crate::store::{RequestLogRow, Store};
use crate::telemetry;

const MAX_BATCH: usize = 2000;

#[derive(Clone)]
pub struct RequestLogger {
    tx: mpsc::UnboundedSender<RequestLogRow>,
}

pub struct LoggerHandle {
    stop: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

impl LoggerHandle {
    /// Stops accepting rows and waits until every queued row is written.
    pub async fn flushed(self) {
        let _ = self.stop.send(());
        let _ = self.join.await;
    }
}

/// Where rows are written: the ledger writer's next commit (SQLite) or the store itself.
struct Target {
    store: Arc<dyn Store>,
    ledger: Option<RequestLogSink>,
}

async fn write(to: &Target, buf: &mut Vec<RequestLogRow>) {
    let rows = buf.len();
    if rows == 0 {
        return;
    }
    let outcome = match &to.ledger {
        Some(sink) => match sink.write(std::mem::take(buf)).await {
            Ok(r) => r,
            // The writer has stopped: the store writes them in a transaction of their own.
            Err(back) => {
                *buf = back;
                to.store.insert_request_logs(buf).await
            }
        },
        None => to.store.insert_request_logs(buf).await,
    };
    match outcome {
        Ok(()) => metrics::counter!(telemetry::REQUEST_LOG_WRITTEN).increment(rows as u64),
        Err(e) => {
            crate::telemetry::log_limited("request_log_insert", |suppressed| {
                tracing::error!(error = %e, rows, suppressed, "request log insert failed");
            });
            metrics::counter!(telemetry::REQUEST_LOG_DROPPED).increment(rows as u64);
        }
    }
    buf.clear();
}

impl RequestLogger {
    /// `ledger`: the ledger writer's sink when its store carries request-log rows.
    pub fn start(
        store: Arc<dyn Store>,
        ledger: Option<RequestLogSink>,
        flush_every: Duration,
    ) -> (Self, LoggerHandle) {
        let to = Target { store, ledger };
        let (tx, mut rx) = mpsc::unbounded_channel::<RequestLogRow>();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let join = tokio::spawn(async move {
            let mut buf = Vec::with_capacity(256);
            let mut stopping = false;
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut buf, MAX_BATCH) => {
                        if n == 0 {
                            break;
                        }
                        // Let a few more arrive so inserts stay batched under load.
                        tokio::select! {
                            _ = tokio::time::sleep(flush_every) => {}
                            _ = &mut stop_rx, if !stopping => {
                                stopping = true;
                                rx.close();
                            }
                        }
                        while buf.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(r) => buf.push(r),
                                Err(_) => break,
                            }
                        }
                        metrics::gauge!(telemetry::REQUEST_LOG_QUEUE).set(rx.len() as f64);
                        write(&to, &mut buf).await;
                    }
                    _ = &mut stop_rx, if !stopping => {
                        rx.close();
                        while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
                            write(&to, &mut buf).await;
                        }
                        break;
                    }
                }
            }
        });
        (
            Self { tx },
            LoggerHandle {
                stop: stop_tx,
                join,
            },
        )
    }

    pub fn log(&self, row: RequestLogRow) {
        observe(&row);
        if self.tx.send(row).is_err() {
            tracing::warn!("request log closed; row dropped");
            metrics::counter!(telemetry::REQUEST_LOG_DROPPED).increment(1);
        }
    }
}

/// A finished gateway call's counters: outcome, tokens and the points charged, per model.
fn observe(row: &RequestLogRow) {
    let outcome = match row.status {
        200..=299 if row.error.is_none() => "ok",
        200..=299 => "cancelled",
        s if s >= 500 => "upstream_error",
        _ => "refused",
    };
    let h = &telemetry::handles::TOKENS;
    telemetry::handles::GATEWAY_REQUESTS
        .get([&row.endpoint, outcome])
        .increment(1);
    if row.prompt_tokens > 0 || row.completion_tokens > 0 || row.cost > 0 {
        let model = telemetry::model_label(row.model.as_deref().unwrap_or(""));
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        h.get([model, "prompt"]).increment(n(row.prompt_tokens));
        h.get([model, "completion"])
            .increment(n(row.completion_tokens));
        // The cache and reasoning classes only when there are some (most calls have none).
        for (kind, v) in [
            ("cached", row.cached_tokens),
            ("cache_write", row.cache_write_tokens),
            ("reasoning", row.reasoning_tokens),
        ] {
            if v > 0 {
                h.get([model, kind]).increment(n(v));
            }
        }
        telemetry::handles::COST.get([model]).increment(n(row.cost));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RequestLogFilter;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    /// Rows handed to a ledger writer that has stopped are written by the store itself.
    #[tokio::test]
    async fn rows_for_a_stopped_writer_go_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("s.db"), SqliteOptions::default())
                .await
                .unwrap(),
        );
        let (logger, handle) = RequestLogger::start(
            store.clone(),
            Some(RequestLogSink::stopped()),
            Duration::from_millis(10),
        );
        logger.log(RequestLogRow {
            ts: 1,
            request_id: "r1".into(),
            endpoint: "chat.completions".into(),
            status: 200,
            ..Default::default()
        });
        handle.flushed().await;
        let (rows, total) = store
            .request_logs(&RequestLogFilter::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!(rows[0].request_id, "r1");
    }
}
