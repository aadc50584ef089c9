//! Per-key request limits, enforced before forwarding: requests per minute (sliding),
//! tokens per minute (sliding), requests per UTC day, and concurrent calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::store::{WindowCap, WindowKind};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub daily: Option<u64>,
    pub max_concurrent: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Rpm { retry_after_s: u64 },
    Tpm { retry_after_s: u64 },
    Daily { retry_after_s: u64 },
    Concurrency,
}

impl Refusal {
    pub fn retry_after_s(&self) -> u64 {
        match *self {
            Refusal::Rpm { retry_after_s }
            | Refusal::Tpm { retry_after_s }
            | Refusal::Daily { retry_after_s } => retry_after_s.max(1),
            Refusal::Concurrency => 1,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Rpm { .. } => "请求过于频繁：超过每分钟请求数限制",
            Refusal::Tpm { .. } => "请求过于频繁：超过每分钟 token 数限制",
            Refusal::Daily { .. } => "请求过于频繁：超过每日请求数限制",
            Refusal::Concurrency => "请求过于频繁：超过并发请求数限制",
        }
    }
}

impl Refusal {
    /// A shared counter's refusal, with the wait until its window ends.
    pub fn shared(w: WindowCap, now: i64) -> Self {
        let len = match w.kind {
            WindowKind::Minute => MINUTE_MS,
            WindowKind::Day => DAY_MS,
        };
        let retry_after_s = secs_until(w.start + len - now);
        match w.kind {
            WindowKind::Minute => Refusal::Rpm { retry_after_s },
            WindowKind::Day => Refusal::Daily { retry_after_s },
        }
    }
}

/// The counters every instance shares when they share a database: `rpm` per clock minute,
/// `dailyRequests` per UTC day. Each instance also keeps its own sliding minute, so within
/// any clock minute the instances together admit at most `rpm`, and within any 60 s at most
/// `2 × rpm` (the end of one clock minute and the start of the next); per day exactly
/// `dailyRequests`.
pub fn shared_windows(limits: Limits, now: i64) -> Vec<WindowCap> {
    let cap = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    if let Some(rpm) = limits.rpm {
        out.push(WindowCap {
            kind: WindowKind::Minute,
            start: now.div_euclid(MINUTE_MS) * MINUTE_MS,
            cap: cap(rpm),
        });
    }
    if let Some(daily) = limits.daily {
        out.push(WindowCap {
            kind: WindowKind::Day,
            start: now.div_euclid(DAY_MS) * DAY_MS,
            cap: cap(daily),
        });
    }
    out
}

/// What the OpenAI-style `x-ratelimit-*-requests` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBudget {
    pub limit: u64,
    pub remaining: u64,
    pub reset_s: u64,
}

#[derive(Debug, Default)]
struct Window {
    minute: VecDeque<i64>,
    tokens: VecDeque<(i64, u64)>,
    day_start: i64,
    day_count: u64,
    concurrent: u64,
}

impl Window {
    fn prune(&mut self, now: i64) {
        while self.minute.front().is_some_and(|&t| t <= now - MINUTE_MS) {
            self.minute.pop_front();
        }
        while self
            .tokens
            .front()
            .is_some_and(|&(t, _)| t <= now - MINUTE_MS)
        {
            self.tokens.pop_front();
        }
        let day = now.div_euclid(DAY_MS) * DAY_MS;
        if day != self.day_start {
            self.day_start = day;
            self.day_count = 0;
        }
    }
}

#[derive(Debug, Default)]
pub struct Limiter {
    windows: Mutex<HashMap<i64, Arc<Mutex<Window>>>>,
}

/// Holds one concurrency slot until dropped.
pub struct Slot {
    window: Arc<Mutex<Window>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.concurrent = w.concurrent.saturating_sub(1);
    }
}

fn secs_until(ms: i64) -> u64 {
    u64::try_from((ms + 999) / 1000).unwrap_or(0)
}

impl Limiter {
    fn window(&self, key_id: i64) -> Arc<Mutex<Window>> {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key_id).or_default().clone()
    }

    /// Restores today's request counts (from the request log) after a restart.
    pub fn seed_daily(&self, now: i64, counts: &[(i64, i64)]) {
        for &(key_id, n) in counts {
            let w = self.window(key_id);
            let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
            w.day_start = now.div_euclid(DAY_MS) * DAY_MS;
            w.day_count = u64::try_from(n).unwrap_or(0);
        }
    }

    /// Admits one call (counting it) or says which limit refuses it.
    pub fn admit(
        &self,
        key_id: i64,
        limits: Limits,
        now: i64,
        est_tokens: u64,
    ) -> Result<(Slot, Option<RequestBudget>), Refusal> {
        let window = self.window(key_id);
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        w.prune(now);
        if let Some(max) = limits.max_concurrent
            && w.concurrent >= max
        {
            return Err(Refusal::Concurrency);
        }
        if let Some(rpm) = limits.rpm
            && w.minute.len() as u64 >= rpm
        {
            let oldest = w.minute.front().copied().unwrap_or(now);
            return Err(Refusal::Rpm {
                retry_after_s: secs_until(oldest + MINUTE_MS - now),
            });
        }
        if let Some(tpm) = limits.tpm {
            let used: u64 = w.tokens.iter().map(|&(_, n)| n).sum();
            if used.saturating_add(est_tokens) > tpm {
                let oldest = w.tokens.front().map(|&(t, _)| t).unwrap_or(now);
                return Err(Refusal::Tpm {
                    retry_after_s: secs_until(oldest + MINUTE_MS - now),
                });
            }
        }
        if let Some(daily) = limits.daily
            && w.day_count >= daily
        {
            return Err(Refusal::Daily {
                retry_after_s: secs_until(w.day_start + DAY_MS - now),
            });
        }
        w.minute.push_back(now);
        w.day_count += 1;
        w.concurrent += 1;
        let budget = match (limits.rpm, limits.daily) {
            (Some(rpm), _) => Some(RequestBudget {
                limit: rpm,
                remaining: rpm.saturating_sub(w.minute.len() as u64),
                reset_s: secs_until(w.minute.front().copied().unwrap_or(now) + MINUTE_MS - now),
            }),
            (None, Some(daily)) => Some(RequestBudget {
                limit: daily,
                remaining: daily.saturating_sub(w.day_count),
                reset_s: secs_until(w.day_start + DAY_MS - now),
            }),
            (None, None) => None,
        };
        drop(w);
        Ok((Slot { window }, budget))
    }

    /// Records the tokens a call used, for `tpm`.
    pub fn record_tokens(&self, key_id: i64, now: i64, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let w = self.window(key_id);
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        w.tokens.push_back((now, tokens));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_slides_and_concurrency_releases() {
        let l = Limiter::default();
        let lim = Limits {
            rpm: Some(2),
            max_concurrent: Some(1),
            ..Default::default()
        };
        let (slot, b) = l.admit(1, lim, 0, 0).unwrap();
        assert_eq!(b.unwrap().remaining, 1);
        assert_eq!(l.admit(1, lim, 10, 0).err(), Some(Refusal::Concurrency));
        drop(slot);
        let _s = l.admit(1, lim, 20, 0).unwrap();
        drop(_s);
        assert!(matches!(
            l.admit(1, lim, 30, 0),
            Err(Refusal::Rpm { retry_after_s: 60 })
        ));
        assert!(l.admit(1, lim, 60_001, 0).is_ok());
    }

    #[test]
    fn tpm_and_daily() {
        let l = Limiter::default();
        let lim = Limits {
            tpm: Some(100),
            daily: Some(3),
            ..Default::default()
        };
        drop(l.admit(7, lim, 0, 10).unwrap());
        l.record_tokens(7, 0, 95);
        assert!(matches!(l.admit(7, lim, 1, 10), Err(Refusal::Tpm { .. })));
        drop(l.admit(7, lim, 61_000, 10).unwrap());
        drop(l.admit(7, lim, 61_001, 10).unwrap());
        assert!(matches!(
            l.admit(7, lim, 61_002, 10),
            Err(Refusal::Daily { .. })
        ));
        assert!(l.admit(7, lim, DAY_MS + 1, 10).is_ok(), "a new UTC day");
    }
}
