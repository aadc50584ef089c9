//! The accept loop, in place of `axum::serve`, so that connections have limits: a cap on
//! how many are open (past it a new one gets a 503 and is closed at once), and a time limit
//! for a request's headers that also closes keep-alive connections left idle (hyper starts
//! that clock whenever it waits for the next request). Graceful shutdown: stop accepting,
//! let open connections finish their requests. HTTP/1.1 only (see `serve`).
//!
//! One client address cannot take the whole budget with connections that never prove a
//! credential (a slow-body flood of `/auth/login`): each connection counts against its
//! address until a request on it is authenticated (`ConnTrust::authenticated`, called by
//! every credential check); once half the budget is in use, an address already holding
//! `max_unauthenticated_per_ip` such connections gets the 503 at once. Below half, bursts of
//! new connections are never refused (their first requests authenticate within
//! milliseconds, but a burst is accepted faster than that).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

use crate::conn_trust::{ConnTrust, UnauthCounts};
use crate::middleware::Shell;
use crate::wire::JsonRefusals;

pub use crate::config::ConnLimits;

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 80\r\n\r\n\
{\"error\":{\"code\":\"UNAVAILABLE\",\"message\":\"too many connections\",\"details\":null}}";

pub async fn serve(
    listener: TcpListener,
    shell: Shell,
    limits: ConnLimits,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let unauth = Arc::new(UnauthCounts::default());
    let cap = limits.max_unauthenticated_per_ip;
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: the protocol sniffing of an HTTP/1 + HTTP/2 server waits for a first
    // byte with no time limit, which is exactly what an idle connection never sends.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // One flat buffer a write: an answer's head and its small body copied together cost
        // less than a vectored write of their pieces (3–10 % of a call's CPU, BENCHMARKS.md).
        // The upstream client keeps vectored writes: a coding agent's request body is large
        // (flattening it cost 67 k instructions a 64 KiB call, with no gain to measure).
        .writev(false);
    let builder = Arc::new(builder);
    tokio::pin!(signal);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut signal => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most likely: give others a moment to close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Streams are many small writes: without NODELAY each waits for the peer's ACK.
        let _ = tcp.set_nodelay(true);
        let ip = peer.ip().to_canonical();
        let counted = cap > 0 && !limits.cap_exempt.iter().any(|n| n.contains(&ip));
        let crowded = slots.available_permits() < limits.max_connections / 2;
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) if !(counted && crowded && unauth.get(ip) >= cap) => slot,
            _ => {
                metrics::counter!(crate::telemetry::CONNECTIONS_REFUSED).increment(1);
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), tcp.write_all(REFUSAL)).await;
                    let _ = tcp.shutdown().await;
                });
                continue;
            }
        };
        if counted {
            unauth.add(ip);
        }
        let trust = Arc::new(ConnTrust::new(ip, counted.then(|| unauth.clone())));
        let shell = shell.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(trust.clone());
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            // `Shell` is always ready: no `poll_ready` needed before `call`.
            shell.clone().call(req.map(Body::new))
        });
        let conn = builder.serve_connection(TokioIo::new(JsonRefusals::new(tcp)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
