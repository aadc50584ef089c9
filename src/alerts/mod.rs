//! Alerts: each rule runs on its own schedule, what it finds is filtered by a cooldown per
//! (rule, subject) kept in the database, stored, and delivered to every channel that wants
//! the rule, each channel on its own task with bounded retries. Nothing here sits on a
//! request path: a slow channel delays only its own deliveries.

pub mod channels;
pub mod findings;
pub mod rules;
pub mod settings;
mod text;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::store::{DeliveryRecord, NewAlert};
use channels::{Attempt, Message};
use findings::Finding;
use rules::Sources;
use settings::{AlertSettings, ChannelSettings, RuleKind};

pub struct Alerts {
    pub settings: AlertSettings,
    pub sources: Sources,
    clock: SharedClock,
    http: reqwest::Client,
    /// Base URL of the dashboard for links.
    base_url: String,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Alerts {
    pub fn new(
        settings: AlertSettings,
        sources: Sources,
        clock: SharedClock,
        listen: std::net::SocketAddr,
    ) -> Result<Arc<Self>, reqwest::Error> {
        // reqwest is built without a default TLS provider (monitor-only mode has no gateway
        // to install it).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms.min(5000)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        Ok(Arc::new(Self {
            settings,
            sources,
            clock,
            http,
            base_url,
            tasks: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// One task per enabled rule that can run here; each runs at once, then every period.
    pub fn start(self: &Arc<Self>) {
        if !self.settings.enabled {
            return;
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (&rule, rs) in &self.settings.rules {
            if !rs.enabled || !rules::applicable(rule, &self.sources) {
                continue;
            }
            let me = Arc::clone(self);
            let every = Duration::from_millis(rs.every_ms.max(1));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    me.run(rule).await;
                }
            }));
        }
    }

    pub fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    /// One run of `rule`: evaluate, drop subjects in cooldown, raise what is left.
    pub async fn run(self: &Arc<Self>, rule: RuleKind) {
        let Some(rs) = self.settings.rules.get(&rule) else {
            return;
        };
        let now = self.clock.now_ms();
        let voice = text::Voice {
            lang: self.settings.lang,
            tz: self.settings.zone(),
        };
        let found = match rules::evaluate(rule, rs, &self.sources, now, voice).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(rule = rule.as_str(), error = %e, "alert rule failed");
                return;
            }
        };
        if found.is_empty() {
            return;
        }
        let subjects: Vec<String> = found.iter().map(|f| f.subject.clone()).collect();
        // The cooldown is claimed before anything is sent: a crash while sending loses a
        // message rather than repeating one on every restart, and of several instances
        // sharing the database exactly one announces each problem.
        let claimed = match self
            .sources
            .store
            .claim_cooldowns(
                rule.as_str(),
                &subjects,
                now,
                now + self.settings.cooldown_ms,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(rule = rule.as_str(), error = %e, "alert cooldown not stored");
                return;
            }
        };
        let mut fresh: Vec<Finding> = found
            .into_iter()
            .filter(|f| claimed.contains(&f.subject))
            .collect();
        if fresh.is_empty() {
            return;
        }
        fresh.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        let messages: Vec<Message> = if fresh.len() >= self.settings.summary_at {
            vec![self.summary(rule, &fresh, now)]
        } else {
            fresh.into_iter().map(|f| self.message(rule, f)).collect()
        };
        for m in messages {
            self.raise(rule, m, now).await;
        }
    }

    fn link(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url)
    }

    fn message(&self, rule: RuleKind, f: Finding) -> Message {
        Message {
            title: f.title,
            lines: f.lines,
            link: Some(self.link(&f.link)),
            rule: rule.as_str().to_owned(),
            subject: f.subject,
            details: f.details,
        }
    }

    fn summary(&self, rule: RuleKind, all: &[Finding], now: i64) -> Message {
        let n = self.settings.summary_samples.min(all.len());
        let mut lines: Vec<String> = all[..n]
            .iter()
            .map(|f| {
                format!(
                    "{} — {}",
                    f.title,
                    f.lines.first().cloned().unwrap_or_default()
                )
            })
            .collect();
        if all.len() > n {
            lines.push(match self.settings.lang {
                settings::Lang::Zh => format!("……以及另外 {} 个", all.len() - n),
                settings::Lang::En => format!("… and {} more", all.len() - n),
            });
        }
        let rs = self.settings.rules.get(&rule).cloned().unwrap_or_else(|| {
            // Every rule has settings (they are built for all of them).
            settings::AlertSettings::default().rules[&rule].clone()
        });
        Message {
            title: rules::summary_title(rule, all.len(), self.settings.lang),
            lines,
            link: Some(self.link(&rules::summary_link(rule, &rs, now))),
            rule: rule.as_str().to_owned(),
            subject: "summary".to_owned(),
            details: json!({
                "count": all.len(),
                "subjects": all.iter().map(|f| f.subject.clone()).collect::<Vec<_>>(),
                "samples": all[..n].iter().map(|f| f.details.clone()).collect::<Vec<_>>(),
            }),
        }
    }

    /// Stores the alert and hands it to each channel that wants the rule.
    async fn raise(self: &Arc<Self>, rule: RuleKind, m: Message, now: i64) {
        let targets: Vec<ChannelSettings> = self
            .settings
            .channels
            .iter()
            .filter(|c| c.wants(rule))
            .cloned()
            .collect();
        let alert = NewAlert {
            ts: now,
            rule: rule.as_str().to_owned(),
            subject: m.subject.clone(),
            title: m.title.clone(),
            message: m.lines.join("\n"),
            details: m.details.clone(),
            link: m.link.clone(),
            channels: targets.iter().map(|c| c.name.clone()).collect(),
            status: if targets.is_empty() {
                "recorded"
            } else {
                "sending"
            }
            .to_owned(),
        };
        let id = match self.sources.store.insert_alert(&alert).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(rule = rule.as_str(), error = %e, "alert not stored");
                return;
            }
        };
        tracing::info!(
            rule = rule.as_str(),
            alert = id,
            channels = targets.len(),
            "alert raised"
        );
        if targets.is_empty() {
            return;
        }
        let me = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for c in targets {
                let me = Arc::clone(&me);
                let m = m.clone();
                set.spawn(async move { me.deliver(id, &c, &m).await });
            }
            let mut ok = 0usize;
            let mut failed = 0usize;
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(true) => ok += 1,
                    _ => failed += 1,
                }
            }
            let status = match (ok, failed) {
                (_, 0) => "sent",
                (0, _) => "failed",
                _ => "partial",
            };
            if let Err(e) = me.sources.store.set_alert_status(id, status).await {
                tracing::warn!(alert = id, error = %e, "alert status not stored");
            }
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Delivers to one channel with retries and backoff; every attempt is stored.
    async fn deliver(&self, alert_id: i64, c: &ChannelSettings, m: &Message) -> bool {
        for attempt in 1..=self.settings.max_attempts {
            let a = self.attempt(c, m).await;
            let rec = DeliveryRecord {
                alert_id,
                channel: c.name.clone(),
                attempt: i64::from(attempt),
                ts: self.clock.now_ms(),
                ok: a.ok,
                http_status: a.http_status.map(i64::from),
                error: a.error.clone(),
            };
            if let Err(e) = self.sources.store.insert_delivery(&rec).await {
                tracing::warn!(alert = alert_id, error = %e, "delivery not stored");
            }
            if a.ok {
                metrics::counter!(crate::telemetry::ALERTS_SENT, "channel" => c.name.clone())
                    .increment(1);
                return true;
            }
            tracing::warn!(
                alert = alert_id,
                channel = %c.name,
                attempt,
                error = a.error.as_deref().unwrap_or(""),
                "alert delivery failed"
            );
            if attempt < self.settings.max_attempts {
                let wait = self
                    .settings
                    .retry_base_ms
                    .saturating_mul(1 << (attempt - 1).min(10));
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
        metrics::counter!(crate::telemetry::ALERTS_FAILED, "channel" => c.name.clone())
            .increment(1);
        false
    }

    /// One signed request to one channel.
    pub async fn attempt(&self, c: &ChannelSettings, m: &Message) -> Attempt {
        let out = channels::build(c, m, self.settings.lang, self.clock.now_ms());
        channels::send(&self.http, c, out).await
    }

    /// A test message for `/admin/alerts/test`.
    pub fn test_message(&self) -> Message {
        let zh = self.settings.lang == settings::Lang::Zh;
        Message {
            title: if zh {
                "quota-proxy 测试消息"
            } else {
                "quota-proxy test message"
            }
            .to_owned(),
            lines: vec![if zh {
                "告警通道配置正确。".to_owned()
            } else {
                "This alert channel works.".to_owned()
            }],
            link: Some(self.link("#/alerts")),
            rule: "test".to_owned(),
            subject: "test".to_owned(),
            details: json!({}),
        }
    }
}

impl Drop for Alerts {
    fn drop(&mut self) {
        self.stop();
    }
}
