//! An upstream's health, on this instance: ejected after `after` failures within `window_ms`,
//! let through again after `cooldown_ms` for one probe at a time (half-open), healthy again
//! on the first success, ejected for another cooldown on a failed probe. An operator's
//! disable is not health: it lives on the channel and takes it out of routing altogether.

use std::collections::VecDeque;
use std::sync::Mutex;

/// When ejection happens and how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    pub after: u32,
    pub window_ms: u64,
    pub cooldown_ms: u64,
}

/// What routing may do with the upstream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Cooled down, nobody probing: this call may be the probe.
    Probe,
    /// Ejected (or a probe is out): tried only when nothing else is left.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy,
    Ejected,
    Probing,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Ejected => "ejected",
            HealthState::Probing => "probing",
        }
    }
}

/// What the console shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthView {
    pub state: HealthState,
    pub reason: Option<String>,
    /// Since when (epoch ms) it has been in this state; `None` when healthy since start.
    pub since_ms: Option<i64>,
    /// While ejected: when the next probe may go.
    pub until_ms: Option<i64>,
    pub recent_failures: u32,
}

#[derive(Debug, Default)]
struct Inner {
    failures: VecDeque<i64>,
    ejected_until: Option<i64>,
    /// A probe went out at this time and has not come back.
    probe_since: Option<i64>,
    since_ms: Option<i64>,
    reason: Option<String>,
}

#[derive(Debug, Default)]
pub struct Health {
    inner: Mutex<Inner>,
}

/// A probe that never reported (its call was cancelled) frees the slot after this long.
const PROBE_STALE_MS: i64 = 60_000;

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain numbers behind, still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether ejected right now (cooldown not over), for ordering the candidates.
    pub fn ejected(&self, now_ms: i64) -> bool {
        self.lock().ejected_until.is_some_and(|u| u > now_ms)
    }

    /// Called right before an attempt: a cooled-down upstream lets one probe through.
    pub fn gate(&self, now_ms: i64) -> Gate {
        let mut g = self.lock();
        let Some(until) = g.ejected_until else {
            return Gate::Open;
        };
        if until > now_ms {
            return Gate::Closed;
        }
        match g.probe_since {
            Some(t) if now_ms - t < PROBE_STALE_MS => Gate::Closed,
            _ => {
                g.probe_since = Some(now_ms);
                Gate::Probe
            }
        }
    }

    pub fn success(&self, now_ms: i64) {
        let mut g = self.lock();
        if g.ejected_until.is_some() {
            tracing::info!("upstream healthy again");
            *g = Inner {
                since_ms: Some(now_ms),
                ..Inner::default()
            };
        }
    }

    /// Counts a failure; returns true when it ejected the upstream.
    pub fn failure(&self, now_ms: i64, why: &str, p: HealthPolicy) -> bool {
        let mut g = self.lock();
        let cooldown = i64::try_from(p.cooldown_ms).unwrap_or(i64::MAX);
        if g.ejected_until.is_some() {
            // A failed probe (or a last-resort attempt): another full cooldown.
            g.ejected_until = Some(now_ms.saturating_add(cooldown));
            g.probe_since = None;
            g.reason = Some(why.to_owned());
            return false;
        }
        let window = i64::try_from(p.window_ms).unwrap_or(i64::MAX);
        g.failures.push_back(now_ms);
        while g
            .failures
            .front()
            .is_some_and(|&t| t <= now_ms.saturating_sub(window))
        {
            g.failures.pop_front();
        }
        if g.failures.len() >= p.after.max(1) as usize {
            g.failures.clear();
            g.ejected_until = Some(now_ms.saturating_add(cooldown));
            g.since_ms = Some(now_ms);
            g.reason = Some(why.to_owned());
            return true;
        }
        false
    }

    pub fn view(&self, now_ms: i64) -> HealthView {
        let g = self.lock();
        let state = match g.ejected_until {
            None => HealthState::Healthy,
            Some(u) if u > now_ms => HealthState::Ejected,
            Some(_) => HealthState::Probing,
        };
        HealthView {
            state,
            reason: g.reason.clone(),
            since_ms: g.since_ms,
            until_ms: g.ejected_until,
            recent_failures: u32::try_from(g.failures.len()).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: HealthPolicy = HealthPolicy {
        after: 3,
        window_ms: 1_000,
        cooldown_ms: 500,
    };

    #[test]
    fn failures_within_the_window_eject_then_one_probe_heals() {
        let h = Health::default();
        assert!(!h.failure(0, "HTTP 503", P));
        assert!(!h.failure(100, "HTTP 503", P));
        // The first failure left the window: still two.
        assert!(!h.failure(1_050, "HTTP 503", P));
        assert_eq!(h.view(1_050).state, HealthState::Healthy);
        assert!(h.failure(1_060, "timeout", P));
        let v = h.view(1_100);
        assert_eq!(v.state, HealthState::Ejected);
        assert_eq!(v.reason.as_deref(), Some("timeout"));
        assert_eq!(v.since_ms, Some(1_060));
        assert_eq!(h.gate(1_100), Gate::Closed);
        assert!(h.ejected(1_100));
        // Cooled down: one probe, the others wait.
        assert_eq!(h.view(1_600).state, HealthState::Probing);
        assert_eq!(h.gate(1_600), Gate::Probe);
        assert_eq!(h.gate(1_601), Gate::Closed);
        // The probe fails: another cooldown.
        h.failure(1_700, "HTTP 502", P);
        assert_eq!(h.gate(1_800), Gate::Closed);
        assert_eq!(h.gate(2_200), Gate::Probe);
        h.success(2_210);
        let v = h.view(2_220);
        assert_eq!(v.state, HealthState::Healthy);
        assert_eq!(v.since_ms, Some(2_210));
        assert_eq!(h.gate(2_220), Gate::Open);
    }

    #[test]
    fn a_lost_probe_frees_its_slot() {
        let h = Health::default();
        let one = HealthPolicy { after: 1, ..P };
        assert!(h.failure(0, "x", one));
        assert_eq!(h.gate(600), Gate::Probe);
        assert_eq!(h.gate(600 + PROBE_STALE_MS - 1), Gate::Closed);
        assert_eq!(h.gate(600 + PROBE_STALE_MS), Gate::Probe);
    }
}
