//! Request-log rows are not quota-critical: they are queued here and inserted in batches off
//! the response path, and flushed on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{RequestLogRow, Store};

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

async fn write(store: &dyn Store, buf: &mut Vec<RequestLogRow>) {
    if buf.is_empty() {
        return;
    }
    if let Err(e) = store.insert_request_logs(buf).await {
        tracing::error!(error = %e, rows = buf.len(), "request log insert failed");
    }
    buf.clear();
}

impl RequestLogger {
    pub fn start(store: Arc<dyn Store>, flush_every: Duration) -> (Self, LoggerHandle) {
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
                        write(store.as_ref(), &mut buf).await;
                    }
                    _ = &mut stop_rx, if !stopping => {
                        rx.close();
                        while rx.recv_many(&mut buf, MAX_BATCH).await > 0 {
                            write(store.as_ref(), &mut buf).await;
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
        if self.tx.send(row).is_err() {
            tracing::warn!("request log closed; row dropped");
        }
    }
}
