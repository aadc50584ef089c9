//! Guessing credentials costs time: per client address (as resolved through the trusted
//! proxies), wrong or missing credentials — any answer 401 — beyond a free allowance in a
//! window block that address for a time that doubles with each further failure, up to a cap.
//! While blocked, every request of the address that could carry credentials gets 429 with
//! `Retry-After`, a right token included; other addresses are unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures allowed in a window before blocking starts (the default of
/// `auth_failure_allowance`).
pub const ALLOWANCE: u32 = 10;
/// The window failures are counted in.
pub const WINDOW_MS: i64 = 60_000;
/// The first block; each further failure doubles it.
pub const FIRST_BLOCK_MS: i64 = 1_000;
/// The longest block.
pub const MAX_BLOCK_MS: i64 = 15 * 60_000;
/// Addresses tracked at most (older ones are forgotten first).
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: i64,
    failures: u32,
    /// Failures past the allowance: the block is `FIRST_BLOCK_MS × 2^(strikes - 1)`.
    strikes: u32,
    blocked_until: i64,
    last: i64,
}

#[derive(Debug)]
pub struct FailureLimiter {
    by_ip: Mutex<HashMap<IpAddr, Entry>>,
    /// Failures allowed per window; `0` turns blocking off.
    allowance: u32,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self::new(ALLOWANCE)
    }
}

fn secs_until(until: i64, now: i64) -> u64 {
    u64::try_from((until - now + 999) / 1000)
        .unwrap_or(1)
        .max(1)
}

impl FailureLimiter {
    /// `allowance` failures per window before an address is blocked; `0`: never blocked.
    pub fn new(allowance: u32) -> Self {
        Self {
            by_ip: Mutex::default(),
            allowance,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // A poisoned map only holds counters: keep using it.
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds `ip` must still wait, if it is blocked.
    pub fn blocked(&self, ip: IpAddr, now_ms: i64) -> Option<u64> {
        let map = self.lock();
        let e = map.get(&ip)?;
        (e.blocked_until > now_ms).then(|| secs_until(e.blocked_until, now_ms))
    }

    /// Records a failure of `ip`; the seconds it is now blocked for, if it is.
    pub fn failed(&self, ip: IpAddr, now_ms: i64) -> Option<u64> {
        if self.allowance == 0 {
            return None;
        }
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let horizon = now_ms - WINDOW_MS - MAX_BLOCK_MS;
            map.retain(|_, e| e.last > horizon && e.blocked_until > now_ms - WINDOW_MS);
            if map.len() >= MAX_TRACKED {
                // Still full of live entries: forget the quietest half.
                let mut lasts: Vec<i64> = map.values().map(|e| e.last).collect();
                lasts.sort_unstable();
                let cut = lasts[lasts.len() / 2];
                map.retain(|_, e| e.last > cut);
            }
        }
        let e = map.entry(ip).or_insert(Entry {
            window_start: now_ms,
            failures: 0,
            strikes: 0,
            blocked_until: 0,
            last: now_ms,
        });
        // A quiet window (no failure, no block) starts the count over.
        if now_ms - e.last > WINDOW_MS && e.blocked_until <= now_ms {
            *e = Entry {
                window_start: now_ms,
                failures: 0,
                strikes: 0,
                blocked_until: 0,
                last: now_ms,
            };
        } else if now_ms - e.window_start > WINDOW_MS && e.strikes == 0 {
            e.window_start = now_ms;
            e.failures = 0;
        }
        e.last = now_ms;
        e.failures = e.failures.saturating_add(1);
        if e.failures <= self.allowance {
            return None;
        }
        e.strikes = e.strikes.saturating_add(1);
        let block = FIRST_BLOCK_MS
            .saturating_mul(1_i64 << (e.strikes - 1).min(20))
            .min(MAX_BLOCK_MS);
        e.blocked_until = now_ms + block;
        Some(secs_until(e.blocked_until, now_ms))
    }
}

/// An address blocked now: how many failures it sent in its window, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub ip: IpAddr,
    pub failures: u32,
    pub until_ms: i64,
}

impl FailureLimiter {
    /// Every address blocked at `now_ms`, most failures first.
    pub fn blocked_now(&self, now_ms: i64) -> Vec<Blocked> {
        let mut out: Vec<Blocked> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.blocked_until > now_ms)
            .map(|(ip, e)| Blocked {
                ip: *ip,
                failures: e.failures,
                until_ms: e.blocked_until,
            })
            .collect();
        out.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.ip.cmp(&b.ip)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_double_after_the_allowance_per_address() {
        let l = FailureLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t = 1_000_000;
        for i in 0..ALLOWANCE {
            assert_eq!(l.failed(a, t + i64::from(i)), None);
        }
        assert_eq!(l.blocked(a, t + 20), None);
        assert_eq!(l.failed(a, t + 20), Some(1));
        assert_eq!(l.blocked(a, t + 21), Some(1));
        assert_eq!(l.blocked(b, t + 21), None, "another address is unaffected");
        assert_eq!(l.failed(a, t + 30), Some(2));
        assert_eq!(l.failed(a, t + 40), Some(4));
        assert_eq!(l.blocked(a, t + 40 + 4_000), None, "the block ends");
        // Strikes keep doubling up to the cap.
        let mut last = 0;
        for i in 0..30 {
            last = l.failed(a, t + 5_000 + i).unwrap();
        }
        assert_eq!(last, (MAX_BLOCK_MS / 1000) as u64);
        // A quiet window after the block forgets the address.
        let later = t + 5_030 + MAX_BLOCK_MS + WINDOW_MS + 1;
        assert_eq!(l.failed(a, later), None);
    }
}
