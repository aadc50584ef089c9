//! Upstreams and routing: highest priority first, weighted random within a priority, and a
//! failing upstream ejected for a cooldown.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use super::endpoint::{Endpoint, Protocol};
use super::settings::{UpstreamSettings, glob_match};

#[derive(Debug)]
pub struct Upstream {
    pub s: UpstreamSettings,
    failures: AtomicU32,
    ejected_until: AtomicI64,
    /// Endpoint URLs, parsed once, by `Endpoint::index`.
    urls: [Option<reqwest::Url>; Endpoint::ALL.len()],
}

impl Upstream {
    pub fn new(s: UpstreamSettings) -> Self {
        let url = |e: Endpoint| reqwest::Url::parse(&format!("{}/{}", s.base_url, e.path())).ok();
        let urls = Endpoint::ALL.map(url);
        Self {
            s,
            failures: AtomicU32::new(0),
            ejected_until: AtomicI64::new(0),
            urls,
        }
    }

    pub fn url(&self, e: Endpoint) -> Option<&reqwest::Url> {
        self.urls[e.index()].as_ref()
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

    pub fn ejected(&self, now_ms: i64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Until when (epoch ms) it is ejected; in the past when it is not.
    pub fn ejected_until(&self) -> i64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; after `threshold` in a row, ejects for `cooldown_ms`.
    pub fn record_failure(&self, now_ms: i64, threshold: u32, cooldown_ms: u64) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= threshold {
            let until = now_ms.saturating_add(i64::try_from(cooldown_ms).unwrap_or(i64::MAX));
            self.ejected_until.store(until, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %self.s.name, cooldown_ms, "upstream ejected");
            metrics::counter!(crate::telemetry::UPSTREAM_EJECTIONS, "upstream" => self.s.name.clone())
                .increment(1);
        }
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

/// Upstreams that serve `model`, in the order to try them. Ejected ones go last (they are
/// tried only when nothing healthy is left).
pub fn candidates(ups: &[Arc<Upstream>], model: &str, now_ms: i64) -> Vec<Arc<Upstream>> {
    let serving: Vec<&Arc<Upstream>> = ups.iter().filter(|u| u.serves(model)).collect();
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
            if u.ejected(now_ms) {
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

    fn up(name: &str, models: &[&str], priority: i32, weight: u32) -> Arc<Upstream> {
        let mut s = mock_upstream();
        s.name = name.to_owned();
        s.models = models.iter().map(|m| m.to_string()).collect();
        s.priority = priority;
        s.weight = weight;
        Arc::new(Upstream::new(s))
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

        ups[1].record_failure(0, 2, 1000);
        ups[1].record_failure(0, 2, 1000);
        let c = candidates(&ups, "gpt-4o", 10);
        assert_eq!(c.last().unwrap().s.name, "high-a", "ejected goes last");
        let c = candidates(&ups, "gpt-4o", 2000);
        assert_eq!(
            c.iter().position(|u| u.s.name == "low"),
            Some(2),
            "cooldown over"
        );
    }
}
