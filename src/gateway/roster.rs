//! The upstreams in use right now: the config file's and the stored channels, built into one
//! snapshot that calls take (`Arc<Roster>`) and a reload replaces whole. A rebuilt upstream
//! keeps its health (and, for the config file's, its refused keys) when its identity and
//! address are unchanged.

use std::sync::Arc;

use super::channels::{Channel, KeyState};
use super::health::{Health, HealthPolicy};
use super::http_client::UpstreamClient;
use super::secrets::Scanner;
use super::settings::{UpstreamKind, UpstreamSettings, mock_upstream};
use super::upstream::Upstream;
use crate::sealed::Sealer;
use crate::store::UpstreamRecord;

/// An upstream about to be built.
struct Planned {
    s: UpstreamSettings,
    policy: HealthPolicy,
    key_state: Vec<KeyState>,
    broken: Option<String>,
    stored_secrets: Option<String>,
}

#[derive(Debug)]
pub struct Roster {
    pub upstreams: Vec<Arc<Upstream>>,
    /// Our upstream keys and header values, masked in every answer.
    pub secrets: Arc<Scanner>,
    /// The upstream keys alone, for the texts of refusals passed on.
    pub keys: Vec<String>,
    /// The store's channel generation this snapshot was built from.
    pub generation: i64,
}

/// What a snapshot is built from.
pub struct Sources<'a> {
    /// The config file's upstreams (the mock alone when nothing was configured).
    pub config: &'a [UpstreamSettings],
    /// `config` is only the stand-in mock: it gives way once a channel exists.
    pub mock_fallback: bool,
    pub records: &'a [UpstreamRecord],
    pub generation: i64,
    pub sealer: &'a Sealer,
    pub policy: HealthPolicy,
    /// The client for upstreams with the default connect timeout.
    pub http: &'a UpstreamClient,
    pub default_connect_ms: u64,
}

impl Roster {
    pub fn build(src: &Sources<'_>, previous: Option<&Roster>) -> Self {
        let mut planned: Vec<Planned> = Vec::new();
        if !src.mock_fallback || src.records.is_empty() {
            for s in src.config {
                let key_state = previous
                    .and_then(|p| p.same(s))
                    .map(|u| u.key_states())
                    .unwrap_or_default();
                planned.push(Planned {
                    s: s.clone(),
                    policy: src.policy,
                    key_state,
                    broken: None,
                    stored_secrets: None,
                });
            }
        }
        for r in src.records {
            planned.push(match Channel::from_record(r, src.sealer) {
                Ok(c) => Planned {
                    s: c.settings(r.id),
                    policy: c.policy(src.policy),
                    key_state: c.key_state.clone(),
                    broken: None,
                    stored_secrets: Some(r.secrets.clone()),
                },
                Err(e) => {
                    tracing::error!(upstream = %r.name, error = %e, "stored channel cannot be used");
                    let mut s = mock_upstream();
                    s.name = r.name.clone();
                    s.id = Some(r.id);
                    s.kind = UpstreamKind::Openai;
                    s.enabled = r.enabled;
                    s.models = Vec::new();
                    Planned {
                        s,
                        policy: src.policy,
                        key_state: Vec::new(),
                        broken: Some(e.to_string()),
                        stored_secrets: None,
                    }
                }
            });
        }
        let upstreams: Vec<Arc<Upstream>> = planned
            .into_iter()
            .map(|p| {
                let before = previous.and_then(|r| r.same(&p.s));
                let health = before.map_or_else(Arc::<Health>::default, |u| u.health.clone());
                let http = match before {
                    Some(u) if u.s.connect_timeout_ms == p.s.connect_timeout_ms => u.http.clone(),
                    _ => client_for(src, p.s.connect_timeout_ms),
                };
                let mut u = Upstream::new(p.s, p.policy, health, http, &p.key_state);
                u.broken = p.broken;
                u.stored_secrets = p.stored_secrets;
                Arc::new(u)
            })
            .collect();
        let mut keys: Vec<String> = Vec::new();
        for u in &upstreams {
            keys.extend(u.s.api_keys.iter().cloned());
        }
        let secrets = Scanner::new(upstreams.iter().flat_map(|u| {
            u.s.api_keys
                .iter()
                .chain(u.s.headers.values())
                .map(String::as_str)
        }));
        Self {
            upstreams,
            secrets: Arc::new(secrets),
            keys,
            generation: src.generation,
        }
    }

    /// The upstream of this snapshot that `s` continues: same source, name and address.
    fn same(&self, s: &UpstreamSettings) -> Option<&Arc<Upstream>> {
        self.upstreams
            .iter()
            .find(|u| u.s.id == s.id && u.s.name == s.name && u.s.base_url == s.base_url)
    }

    pub fn by_id(&self, id: i64) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.s.id == Some(id))
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.s.name == name)
    }

    pub fn key_texts(&self) -> Vec<&str> {
        self.keys.iter().map(String::as_str).collect()
    }
}

fn client_for(src: &Sources<'_>, connect_ms: u64) -> UpstreamClient {
    if connect_ms == src.default_connect_ms {
        return src.http.clone();
    }
    UpstreamClient::new(connect_ms).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "upstream client: using the default connect timeout");
        src.http.clone()
    })
}
