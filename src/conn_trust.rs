//! Whether a connection has proven a credential yet. The listener counts each client
//! address's connections that have not (see `listener`); every credential check marks the
//! connection of the request it accepted.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Unauthenticated connections per client address.
#[derive(Debug, Default)]
pub struct UnauthCounts(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

impl UnauthCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<IpAddr, usize>> {
        // Plain counters: a poisoned map is still consistent enough to use.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).copied().unwrap_or(0)
    }

    pub fn add(&self, ip: IpAddr) {
        *self.lock().entry(ip).or_default() += 1;
    }

    fn remove(&self, ip: IpAddr) {
        let mut map = self.lock();
        if let Some(n) = map.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// A connection's standing: counted against its address until a request on it proves a
/// credential. Every request on the connection carries it (an extension, copied into
/// the request's `Origin`).
#[derive(Debug)]
pub struct ConnTrust {
    ip: IpAddr,
    counts: Option<Arc<UnauthCounts>>,
    proven: AtomicBool,
}

impl ConnTrust {
    /// A new connection from `ip`, counted in `counts` (when its address is capped).
    pub fn new(ip: IpAddr, counts: Option<Arc<UnauthCounts>>) -> Self {
        Self {
            ip,
            counts,
            proven: AtomicBool::new(false),
        }
    }

    /// A request on this connection presented a valid credential: it no longer counts.
    pub fn authenticated(&self) {
        if !self.proven.swap(true, Ordering::Relaxed)
            && let Some(c) = &self.counts
        {
            c.remove(self.ip);
        }
    }
}

impl Drop for ConnTrust {
    fn drop(&mut self) {
        if !self.proven.load(Ordering::Relaxed)
            && let Some(c) = &self.counts
        {
            c.remove(self.ip);
        }
    }
}
