//! What each rule finds at one run, and what it says about it (Chinese or English). The four
//! monitor rules ask the monitor exactly what `/api/stats/anomalies` answers; the key and
//! upstream rules read the keys and the gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use super::settings::{Lang, RuleKind, RuleSettings};
use crate::gateway::Gateway;
use crate::keys::effective_counters;
use crate::keys::policy::is_expired;
use crate::monitor::Monitor;
use crate::store::Store;
use crate::timefmt::rfc3339;

/// Where the rules look.
#[derive(Clone)]
pub struct Sources {
    pub monitor: Arc<Monitor>,
    pub store: Arc<dyn Store>,
    /// `serve` mode: keys live in `store` and the gateway is here.
    pub gateway: Option<Arc<Gateway>>,
}

/// One flagged subject.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `token:31`, `ip:1.2.3.4`, `key:5`, `upstream:deepseek`.
    pub subject: String,
    pub title: String,
    pub lines: Vec<String>,
    pub details: Value,
    /// A dashboard address (the part after the base URL).
    pub link: String,
    /// How bad: orders the samples of a summary.
    pub weight: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("monitor: {0}")]
    Monitor(#[from] crate::monitor::MonitorError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => String::new(),
        Some(x) => x.to_string(),
    }
}

fn i(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// `name (#id)`, or `#id` when the name is empty.
fn named(name: &str, id: i64) -> String {
    if name.is_empty() {
        format!("#{id}")
    } else {
        format!("{name} (#{id})")
    }
}

fn range_q(from: i64, to: i64) -> String {
    format!("from={from}&to={to}")
}

/// Whether `rule` can run here (key and upstream rules need the gateway's own database).
pub fn applicable(rule: RuleKind, src: &Sources) -> bool {
    rule.is_monitor_rule() || src.gateway.is_some()
}

pub async fn evaluate(
    rule: RuleKind,
    rs: &RuleSettings,
    src: &Sources,
    now_ms: i64,
    lang: Lang,
) -> Result<Vec<Finding>, RuleError> {
    match rule {
        RuleKind::QuotaLow | RuleKind::KeyExpiring => keys(rule, rs, src, now_ms, lang).await,
        RuleKind::UpstreamDown => upstreams(rs, src, now_ms, lang).await,
        _ => monitor_rule(rule, rs, src, now_ms, lang).await,
    }
}

async fn monitor_rule(
    rule: RuleKind,
    rs: &RuleSettings,
    src: &Sources,
    now_ms: i64,
    lang: Lang,
) -> Result<Vec<Finding>, RuleError> {
    let from = now_ms - rs.lookback_ms;
    let mut q: HashMap<String, String> = rs.params.clone().into_iter().collect();
    q.insert("rule".into(), rule.as_str().into());
    q.insert("start_ms".into(), from.to_string());
    q.insert("end_ms".into(), now_ms.to_string());
    q.insert("limit".into(), "10000".into());
    let v = crate::monitor::handlers::anomalies_answer(&src.monitor, &q).await?;
    let rows = v["data"].as_array().cloned().unwrap_or_default();
    let zh = lang == Lang::Zh;
    let rq = range_q(from, now_ms);
    let mut out = Vec::new();
    // big_request flags requests; one finding per key (its largest).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        let key = named(&s(&r, "token_name"), i(&r, "token_id"));
        let user = named(&s(&r, "username"), i(&r, "user_id"));
        let token_link = format!("#/subject?token_id={}&{rq}", i(&r, "token_id"));
        let finding = match rule {
            RuleKind::Burst => Finding {
                subject: format!("token:{}", i(&r, "token_id")),
                title: if zh {
                    format!("突发请求：密钥 {key}")
                } else {
                    format!("Burst: key {key}")
                },
                lines: if zh {
                    vec![
                        format!("用户：{user}"),
                        format!(
                            "{} 秒内 {} 次请求（阈值 {}）",
                            i(&r, "window_sec"),
                            i(&r, "request_count"),
                            i(&r, "threshold")
                        ),
                        format!(
                            "时间：{} 至 {}",
                            s(&r, "first_request"),
                            s(&r, "last_request")
                        ),
                    ]
                } else {
                    vec![
                        format!("User: {user}"),
                        format!(
                            "{} requests within {} s (threshold {})",
                            i(&r, "request_count"),
                            i(&r, "window_sec"),
                            i(&r, "threshold")
                        ),
                        format!(
                            "From {} to {}",
                            s(&r, "first_request"),
                            s(&r, "last_request")
                        ),
                    ]
                },
                link: token_link,
                weight: i(&r, "request_count") as f64,
                details: r,
            },
            RuleKind::MultiUserToken => Finding {
                subject: format!("token:{}", i(&r, "token_id")),
                title: if zh {
                    format!("密钥共享：{key}")
                } else {
                    format!("Shared key: {key}")
                },
                lines: if zh {
                    vec![
                        format!(
                            "{} 个用户、{} 个 IP 在使用（用户阈值 {}）",
                            i(&r, "user_count"),
                            i(&r, "ip_count"),
                            i(&r, "threshold")
                        ),
                        format!("用户：{}", s(&r, "users")),
                        format!("总请求：{}", i(&r, "total_requests")),
                    ]
                } else {
                    vec![
                        format!(
                            "Used by {} users from {} IPs (users threshold {})",
                            i(&r, "user_count"),
                            i(&r, "ip_count"),
                            i(&r, "threshold")
                        ),
                        format!("Users: {}", s(&r, "users")),
                        format!("Requests: {}", i(&r, "total_requests")),
                    ]
                },
                link: token_link,
                weight: i(&r, "user_count") as f64,
                details: r,
            },
            RuleKind::IpManyUsers => {
                let ip = s(&r, "ip");
                let ip_q: String = form_urlencoded::byte_serialize(ip.as_bytes()).collect();
                Finding {
                    subject: format!("ip:{ip}"),
                    title: if zh {
                        format!("同 IP 多账户：{ip}")
                    } else {
                        format!("Crowded IP: {ip}")
                    },
                    lines: if zh {
                        vec![
                            format!(
                                "{} 个用户（阈值 {}）：{}",
                                i(&r, "user_count"),
                                i(&r, "threshold"),
                                s(&r, "users")
                            ),
                            format!("总请求：{}", i(&r, "total_requests")),
                        ]
                    } else {
                        vec![
                            format!(
                                "{} users (threshold {}): {}",
                                i(&r, "user_count"),
                                i(&r, "threshold"),
                                s(&r, "users")
                            ),
                            format!("Requests: {}", i(&r, "total_requests")),
                        ]
                    },
                    link: format!("#/subject?ip={ip_q}&{rq}"),
                    weight: i(&r, "user_count") as f64,
                    details: r,
                }
            }
            _ => Finding {
                subject: format!("token:{}", i(&r, "token_id")),
                title: if zh {
                    format!("超大请求：密钥 {key}")
                } else {
                    format!("Outsized request: key {key}")
                },
                lines: if zh {
                    vec![
                        format!("用户：{user}"),
                        format!(
                            "{}：{} tokens（均值 {:.0}，阈值 {:.0}）",
                            s(&r, "model_name"),
                            i(&r, "token_count"),
                            f(&r, "mean_tokens"),
                            f(&r, "threshold")
                        ),
                        format!("时间：{}", s(&r, "created_at")),
                    ]
                } else {
                    vec![
                        format!("User: {user}"),
                        format!(
                            "{}: {} tokens (mean {:.0}, threshold {:.0})",
                            s(&r, "model_name"),
                            i(&r, "token_count"),
                            f(&r, "mean_tokens"),
                            f(&r, "threshold")
                        ),
                        format!("At {}", s(&r, "created_at")),
                    ]
                },
                link: token_link,
                weight: i(&r, "token_count") as f64,
                details: r,
            },
        };
        match seen.get(&finding.subject) {
            Some(&at)
                if out
                    .get(at)
                    .is_some_and(|o: &Finding| o.weight >= finding.weight) => {}
            Some(&at) => out[at] = finding,
            None => {
                seen.insert(finding.subject.clone(), out.len());
                out.push(finding);
            }
        }
    }
    Ok(out)
}

async fn keys(
    rule: RuleKind,
    rs: &RuleSettings,
    src: &Sources,
    now_ms: i64,
    lang: Lang,
) -> Result<Vec<Finding>, RuleError> {
    if src.gateway.is_none() {
        return Ok(Vec::new());
    }
    let zh = lang == Lang::Zh;
    let mut out = Vec::new();
    for k in src.store.load_keys().await? {
        if !k.enabled || is_expired(&k, now_ms) {
            continue;
        }
        let name = named(k.name.as_deref().unwrap_or(""), k.id);
        let owner = k
            .owner
            .as_ref()
            .and_then(|o| o.username.clone())
            .unwrap_or_default();
        let link = format!("#/key?id={}", k.id);
        match rule {
            RuleKind::QuotaLow => {
                let c = effective_counters(&k, now_ms);
                let (Some(quota), Some(remaining)) = (c.quota, c.remaining()) else {
                    continue;
                };
                if quota <= 0 {
                    continue;
                }
                let pct = remaining as f64 * 100.0 / quota as f64;
                if pct >= rs.threshold_pct {
                    continue;
                }
                out.push(Finding {
                    subject: format!("key:{}", k.id),
                    title: if zh { format!("配额即将用完：密钥 {name}") } else { format!("Quota running low: key {name}") },
                    lines: if zh {
                        vec![
                            format!("剩余 {remaining} / {quota}（{pct:.1}%，阈值 {}%）", rs.threshold_pct),
                            format!("所属用户：{}", if owner.is_empty() { "—" } else { &owner }),
                        ]
                    } else {
                        vec![
                            format!("{remaining} of {quota} left ({pct:.1} %, threshold {} %)", rs.threshold_pct),
                            format!("Owner: {}", if owner.is_empty() { "—" } else { &owner }),
                        ]
                    },
                    details: json!({"key_id": k.id, "name": k.name, "key": k.hint, "quota": quota,
                        "remaining": remaining, "remaining_pct": pct, "threshold_pct": rs.threshold_pct}),
                    link,
                    weight: 100.0 - pct,
                });
            }
            _ => {
                let Some(exp) = k.expires_at else { continue };
                if exp > now_ms + rs.days * 86_400_000 {
                    continue;
                }
                let hours = (exp - now_ms) as f64 / 3_600_000.0;
                out.push(Finding {
                    subject: format!("key:{}", k.id),
                    title: if zh {
                        format!("密钥即将过期：{name}")
                    } else {
                        format!("Key expiring: {name}")
                    },
                    lines: if zh {
                        vec![
                            format!(
                                "过期时间：{}（还有 {:.0} 小时，提醒窗口 {} 天）",
                                rfc3339(exp),
                                hours,
                                rs.days
                            ),
                            format!("所属用户：{}", if owner.is_empty() { "—" } else { &owner }),
                        ]
                    } else {
                        vec![
                            format!(
                                "Expires at {} (in {:.0} h; window {} days)",
                                rfc3339(exp),
                                hours,
                                rs.days
                            ),
                            format!("Owner: {}", if owner.is_empty() { "—" } else { &owner }),
                        ]
                    },
                    details: json!({"key_id": k.id, "name": k.name, "key": k.hint,
                        "expiresAt": rfc3339(exp), "days": rs.days}),
                    link,
                    weight: -hours,
                });
            }
        }
    }
    Ok(out)
}

async fn upstreams(
    rs: &RuleSettings,
    src: &Sources,
    now_ms: i64,
    lang: Lang,
) -> Result<Vec<Finding>, RuleError> {
    let Some(gw) = &src.gateway else {
        return Ok(Vec::new());
    };
    let zh = lang == Lang::Zh;
    let from = now_ms - rs.lookback_ms;
    let stats = src.store.upstream_stats(from, now_ms).await?;
    let mut out = Vec::new();
    for u in &gw.upstreams {
        let st = stats
            .iter()
            .find(|s| s.upstream == u.s.name)
            .cloned()
            .unwrap_or_default();
        let rate = if st.requests > 0 {
            st.errors as f64 / st.requests as f64
        } else {
            0.0
        };
        let until = u.ejected_until();
        let ejected = until > now_ms;
        let failing = st.requests >= rs.min_requests && rate >= rs.error_rate;
        if !ejected && !failing {
            continue;
        }
        let mut lines = Vec::new();
        if ejected {
            lines.push(if zh {
                format!("已摘除，至 {} 恢复尝试", rfc3339(until))
            } else {
                format!("Ejected until {}", rfc3339(until))
            });
        }
        lines.push(if zh {
            format!(
                "最近 {} 分钟错误率 {:.1}%（{}/{}，阈值 {:.0}%）",
                rs.lookback_ms / 60_000,
                rate * 100.0,
                st.errors,
                st.requests,
                rs.error_rate * 100.0
            )
        } else {
            format!(
                "Error rate {:.1} % over the last {} min ({}/{}, threshold {:.0} %)",
                rate * 100.0,
                rs.lookback_ms / 60_000,
                st.errors,
                st.requests,
                rs.error_rate * 100.0
            )
        });
        out.push(Finding {
            subject: format!("upstream:{}", u.s.name),
            title: if zh {
                format!("上游异常：{}", u.s.name)
            } else {
                format!("Upstream down: {}", u.s.name)
            },
            lines,
            details: json!({"upstream": u.s.name, "ejected": ejected,
                "ejectedUntil": ejected.then(|| rfc3339(until)), "requests": st.requests,
                "errors": st.errors, "errorRate": rate}),
            link: format!("#/overview?{}", range_q(from, now_ms)),
            weight: rate + if ejected { 1.0 } else { 0.0 },
        });
    }
    Ok(out)
}

/// The title of a summary of `n` findings of `rule`.
pub fn summary_title(rule: RuleKind, n: usize, lang: Lang) -> String {
    let zh = lang == Lang::Zh;
    let name = match (rule, zh) {
        (RuleKind::Burst, true) => "突发请求",
        (RuleKind::MultiUserToken, true) => "密钥共享",
        (RuleKind::IpManyUsers, true) => "同 IP 多账户",
        (RuleKind::BigRequest, true) => "超大请求",
        (RuleKind::QuotaLow, true) => "配额即将用完",
        (RuleKind::KeyExpiring, true) => "密钥即将过期",
        (RuleKind::UpstreamDown, true) => "上游异常",
        (RuleKind::Burst, false) => "Bursts",
        (RuleKind::MultiUserToken, false) => "Shared keys",
        (RuleKind::IpManyUsers, false) => "Crowded IPs",
        (RuleKind::BigRequest, false) => "Outsized requests",
        (RuleKind::QuotaLow, false) => "Quotas running low",
        (RuleKind::KeyExpiring, false) => "Keys expiring",
        (RuleKind::UpstreamDown, false) => "Upstreams down",
    };
    if zh {
        format!("{name}：本次发现 {n} 个对象")
    } else {
        format!("{name}: {n} subjects in this run")
    }
}

/// Where a summary points.
pub fn summary_link(rule: RuleKind, rs: &RuleSettings, now_ms: i64) -> String {
    match rule {
        RuleKind::QuotaLow | RuleKind::KeyExpiring => "#/keys".to_owned(),
        RuleKind::UpstreamDown => "#/overview?range=1h".to_owned(),
        _ => format!(
            "#/anomalies?rule={}&{}",
            rule.as_str(),
            range_q(now_ms - rs.lookback_ms, now_ms)
        ),
    }
}
