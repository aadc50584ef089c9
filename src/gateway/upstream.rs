//! Upstreams and routing: highest priority first, weighted random within a priority, an
//! ejected upstream last (see `health.rs`), a disabled one never; each upstream's keys used
//! in turn, a refused key set aside alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::channels::{KeyState, hint};
use super::endpoint::{Endpoint, Protocol};
use super::health::{Health, HealthPolicy};
use super::http_client::{Target, UpstreamClient};
use super::settings::{UpstreamSettings, glob_match};

/// One upstream API key and, once the upstream refused it, why and when.
#[derive(Debug)]
pub struct UpstreamKey {
    pub secret: String,
    pub state: Mutex<KeyState>,
}

impl UpstreamKey {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyState> {
        // Plain data behind the lock: usable even after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> KeyState {
        self.lock().clone()
    }

    /// Checked on every call: no copy of the state.
    fn usable(&self) -> bool {
        self.lock().disabled_reason.is_none()
    }
}

/// Which key an attempt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPick<'a> {
    /// The upstream takes no key.
    NoKey,
    Key(usize, &'a str),
    /// Every key was refused by the upstream.
    AllDisabled,
}

#[derive(Debug)]
pub struct Upstream {
    pub s: UpstreamSettings,
    pub health: Arc<Health>,
    pub policy: HealthPolicy,
    pub keys: Vec<UpstreamKey>,
    cursor: AtomicUsize,
    /// Why it cannot be used at all (its stored secrets cannot be opened).
    pub broken: Option<String>,
    /// An API channel's stored secrets text: a key state written back must find it
    /// unchanged (no state lands on keys an operator has just replaced).
    pub stored_secrets: Option<String>,
    pub http: UpstreamClient,
    /// Endpoint URLs, parsed once, by `Endpoint::index`.
    targets: [Option<Target>; Endpoint::ALL.len()],
    models_url: Option<reqwest::Url>,
}

impl Upstream {
    pub fn new(
        s: UpstreamSettings,
        policy: HealthPolicy,
        health: Arc<Health>,
        http: UpstreamClient,
        key_state: &[KeyState],
    ) -> Self {
        let targets = Endpoint::ALL.map(|e| Target::parse(&format!("{}/{}", s.base_url, e.path())));
        let models_url = reqwest::Url::parse(&format!("{}/models", s.base_url)).ok();
        let keys = s
            .api_keys
            .iter()
            .enumerate()
            .map(|(i, k)| UpstreamKey {
                secret: k.clone(),
                state: Mutex::new(key_state.get(i).cloned().unwrap_or_else(|| KeyState {
                    fp: String::new(),
                    hint: hint(k),
                    disabled_reason: None,
                    disabled_at_ms: None,
                })),
            })
            .collect();
        Self {
            s,
            health,
            policy,
            keys,
            cursor: AtomicUsize::new(fastrand::usize(..1024)),
            broken: None,
            stored_secrets: None,
            http,
            targets,
            models_url,
        }
    }

    /// With the default policy, its own health and a fresh client (tests).
    #[cfg(test)]
    pub(crate) fn for_tests(s: UpstreamSettings) -> Self {
        let p = HealthPolicy {
            after: 3,
            window_ms: 60_000,
            cooldown_ms: 30_000,
        };
        Self::new(s, p, Arc::default(), test_client(), &[])
    }

    pub fn target(&self, e: Endpoint) -> Option<&Target> {
        self.targets[e.index()].as_ref()
    }

    pub fn models_url(&self) -> Option<&reqwest::Url> {
        self.models_url.as_ref()
    }

    /// Whether routing may use it at all (enabled, readable).
    pub fn usable(&self) -> bool {
        self.s.enabled && self.broken.is_none()
    }

    /// Whether this upstream speaks `p` natively (else it is reached translated to chat).
    pub fn speaks(&self, p: Protocol) -> bool {
        self.s.protocols.contains(&p)
    }

    pub fn serves(&self, model: &str) -> bool {
        self.s.model_map.contains_key(model) || self.s.models.iter().any(|g| glob_match(g, model))
    }

    /// The model name to send upstream.
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.s
            .model_map
            .get(model)
            .map(String::as_str)
            .unwrap_or(model)
    }

    /// The next key in turn that the upstream has not refused.
    pub fn next_key(&self) -> KeyPick<'_> {
        if self.keys.is_empty() {
            return KeyPick::NoKey;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.keys.len() {
            let idx = (start + i) % self.keys.len();
            let k = &self.keys[idx];
            if k.usable() {
                return KeyPick::Key(idx, &k.secret);
            }
        }
        KeyPick::AllDisabled
    }

    /// Sets key `idx` aside; true when it was in use until now.
    pub fn disable_key(&self, idx: usize, reason: &str, now_ms: i64) -> bool {
        let Some(k) = self.keys.get(idx) else {
            return false;
        };
        let mut st = k.lock();
        if st.disabled_reason.is_some() {
            return false;
        }
        st.disabled_reason = Some(reason.to_owned());
        st.disabled_at_ms = Some(now_ms);
        tracing::warn!(upstream = %self.s.name, key = %st.hint, reason, "upstream key set aside");
        true
    }

    pub fn key_states(&self) -> Vec<KeyState> {
        self.keys.iter().map(UpstreamKey::state).collect()
    }

    /// Names the models a `/v1/models` listing shows for this upstream: its exact model
    /// names and mapped names (globs cannot be listed), or a few known names when it serves
    /// anything.
    pub fn listed_models(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .s
            .models
            .iter()
            .filter(|m| !m.contains('*') && !m.contains('?'))
            .cloned()
            .collect();
        out.extend(self.s.model_map.keys().cloned());
        if out.is_empty() && self.s.models.iter().any(|m| m == "*") {
            let known: &[&str] = match self.s.kind {
                super::settings::UpstreamKind::Mock => &["mock-chat", "mock-embedding"],
                super::settings::UpstreamKind::Openai => &["deepseek-chat", "deepseek-reasoner"],
            };
            out.extend(known.iter().map(|m| m.to_string()));
        }
        out
    }
}

/// A client for tests (the TLS provider installed first, as `Gateway::start` does).
#[cfg(test)]
pub(crate) fn test_client() -> UpstreamClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    UpstreamClient::new(10_000).expect("a client with the platform's TLS roots")
}

/// Upstreams that serve `model`, in the order to try them. Ejected ones go last (they are
/// tried only when nothing healthy is left); disabled ones not at all.
pub fn candidates(ups: &[Arc<Upstream>], model: &str, now_ms: i64) -> Vec<Arc<Upstream>> {
    let serving: Vec<&Arc<Upstream>> = ups
        .iter()
        .filter(|u| u.usable() && u.serves(model))
        .collect();
    let mut healthy: Vec<Arc<Upstream>> = Vec::new();
    let mut ejected: Vec<Arc<Upstream>> = Vec::new();
    let mut priorities: Vec<i32> = serving.iter().map(|u| u.s.priority).collect();
    priorities.sort_unstable_by(|a, b| b.cmp(a));
    priorities.dedup();
    for p in priorities {
        let mut group: Vec<Arc<Upstream>> = serving
            .iter()
            .filter(|u| u.s.priority == p)
            .map(|u| Arc::clone(u))
            .collect();
        // Weighted order without replacement.
        while !group.is_empty() {
            let total: u64 = group.iter().map(|u| u64::from(u.s.weight)).sum();
            let mut pick = fastrand::u64(0..total.max(1));
            let mut idx = 0;
            for (i, u) in group.iter().enumerate() {
                let w = u64::from(u.s.weight);
                if pick < w {
                    idx = i;
                    break;
                }
                pick -= w;
            }
            let u = group.remove(idx);
            if u.health.ejected(now_ms) {
                ejected.push(u);
            } else {
                healthy.push(u);
            }
        }
    }
    healthy.extend(ejected);
    healthy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::settings::mock_upstream;

    const P: HealthPolicy = HealthPolicy {
        after: 2,
        window_ms: 10_000,
        cooldown_ms: 1_000,
    };

    fn up(name: &str, models: &[&str], priority: i32, weight: u32) -> Arc<Upstream> {
        let mut s = mock_upstream();
        s.name = name.to_owned();
        s.models = models.iter().map(|m| m.to_string()).collect();
        s.priority = priority;
        s.weight = weight;
        Arc::new(Upstream::new(s, P, Arc::default(), test_client(), &[]))
    }

    #[test]
    fn priority_then_weight_then_ejection() {
        let ups = vec![
            up("low", &["*"], 0, 1),
            up("high-a", &["gpt-*"], 10, 3),
            up("high-b", &["gpt-*"], 10, 1),
        ];
        let mut first_a = 0;
        for _ in 0..2000 {
            let c = candidates(&ups, "gpt-4o", 0);
            assert_eq!(c.len(), 3);
            assert_eq!(c[2].s.name, "low");
            if c[0].s.name == "high-a" {
                first_a += 1;
            }
        }
        assert!(
            (1300..1700).contains(&first_a),
            "weight 3:1 → about 75 %: {first_a}"
        );
        assert_eq!(candidates(&ups, "deepseek-chat", 0).len(), 1);

        ups[1].health.failure(0, "HTTP 500", P);
        ups[1].health.failure(0, "HTTP 500", P);
        let c = candidates(&ups, "gpt-4o", 10);
        assert_eq!(c.last().unwrap().s.name, "high-a", "ejected goes last");
        let c = candidates(&ups, "gpt-4o", 2000);
        assert_eq!(
            c.iter().position(|u| u.s.name == "low"),
            Some(2),
            "cooldown over"
        );
    }

    #[test]
    fn keys_in_turn_a_refused_one_alone_set_aside() {
        let mut s = mock_upstream();
        s.api_keys = vec!["k-one-000000000".into(), "k-two-000000000".into()];
        s.enabled = true;
        let u = Upstream::new(s, P, Arc::default(), test_client(), &[]);
        let picks: Vec<usize> = (0..4)
            .map(|_| match u.next_key() {
                KeyPick::Key(i, _) => i,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_ne!(picks[0], picks[1], "in turn: {picks:?}");
        assert!(u.disable_key(0, "HTTP 401", 5));
        assert!(!u.disable_key(0, "HTTP 401", 6), "once");
        for _ in 0..4 {
            assert_eq!(u.next_key(), KeyPick::Key(1, "k-two-000000000"));
        }
        u.disable_key(1, "HTTP 402", 7);
        assert_eq!(u.next_key(), KeyPick::AllDisabled);
        assert_eq!(
            u.key_states()[0].disabled_reason.as_deref(),
            Some("HTTP 401")
        );
        let mut off = mock_upstream();
        off.enabled = false;
        let off = Arc::new(Upstream::new(off, P, Arc::default(), test_client(), &[]));
        assert!(candidates(&[off], "m", 0).is_empty(), "disabled: never");
    }
}
