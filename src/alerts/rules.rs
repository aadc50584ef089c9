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

/// `zh` or `en` with each `{}` filled by the next argument, in order.
fn say(lang: Lang, zh: &str, en: &str, args: &[&dyn std::fmt::Display]) -> String {
    let template = if lang == Lang::Zh { zh } else { en };
    let mut out = String::with_capacity(template.len() + 16);
    let mut args = args.iter();
    let mut parts = template.split("{}");
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for part in parts {
        if let Some(a) = args.next() {
            out.push_str(&a.to_string());
        }
        out.push_str(part);
    }
    out
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
    let v = crate::monitor::answer::anomalies_answer(&src.monitor, &q).await?;
    let rows = v["data"].as_array().cloned().unwrap_or_default();
    let rq = range_q(from, now_ms);
    let mut out: Vec<Finding> = Vec::new();
    // big_request flags requests; one finding per key (its largest).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        let key = named(&s(&r, "token_name"), i(&r, "token_id"));
        let user = named(&s(&r, "username"), i(&r, "user_id"));
        let token_subject = format!("token:{}", i(&r, "token_id"));
        let token_link = format!("#/subject?token_id={}&{rq}", i(&r, "token_id"));
        let (subject, title, lines, link, weight) = match rule {
            RuleKind::Burst => (
                token_subject,
                say(lang, "突发请求：密钥 {}", "Burst: key {}", &[&key]),
                vec![
                    say(lang, "用户：{}", "User: {}", &[&user]),
                    say(
                        lang,
                        "{} 秒内 {} 次请求（阈值 {}）",
                        "within {} s: {} requests (threshold {})",
                        &[
                            &i(&r, "window_sec"),
                            &i(&r, "request_count"),
                            &i(&r, "threshold"),
                        ],
                    ),
                    say(
                        lang,
                        "时间：{} 至 {}",
                        "From {} to {}",
                        &[&s(&r, "first_request"), &s(&r, "last_request")],
                    ),
                ],
                token_link,
                i(&r, "request_count") as f64,
            ),
            RuleKind::MultiUserToken => (
                token_subject,
                say(lang, "密钥共享：{}", "Shared key: {}", &[&key]),
                vec![
                    say(
                        lang,
                        "{} 个用户、{} 个 IP 在使用（用户阈值 {}）",
                        "Used by {} users from {} IPs (users threshold {})",
                        &[
                            &i(&r, "user_count"),
                            &i(&r, "ip_count"),
                            &i(&r, "threshold"),
                        ],
                    ),
                    say(lang, "用户：{}", "Users: {}", &[&s(&r, "users")]),
                    say(
                        lang,
                        "总请求：{}",
                        "Requests: {}",
                        &[&i(&r, "total_requests")],
                    ),
                ],
                token_link,
                i(&r, "user_count") as f64,
            ),
            RuleKind::IpManyUsers => {
                let ip = s(&r, "ip");
                let ip_q: String = form_urlencoded::byte_serialize(ip.as_bytes()).collect();
                (
                    format!("ip:{ip}"),
                    say(lang, "同 IP 多账户：{}", "Crowded IP: {}", &[&ip]),
                    vec![
                        say(
                            lang,
                            "{} 个用户（阈值 {}）：{}",
                            "{} users (threshold {}): {}",
                            &[&i(&r, "user_count"), &i(&r, "threshold"), &s(&r, "users")],
                        ),
                        say(
                            lang,
                            "总请求：{}",
                            "Requests: {}",
                            &[&i(&r, "total_requests")],
                        ),
                    ],
                    format!("#/subject?ip={ip_q}&{rq}"),
                    i(&r, "user_count") as f64,
                )
            }
            _ => (
                token_subject,
                say(
                    lang,
                    "超大请求：密钥 {}",
                    "Outsized request: key {}",
                    &[&key],
                ),
                vec![
                    say(lang, "用户：{}", "User: {}", &[&user]),
                    say(
                        lang,
                        "{}：{} tokens（均值 {}，阈值 {}）",
                        "{}: {} tokens (mean {}, threshold {})",
                        &[
                            &s(&r, "model_name"),
                            &i(&r, "token_count"),
                            &(f(&r, "mean_tokens").round() as i64),
                            &(f(&r, "threshold").round() as i64),
                        ],
                    ),
                    say(lang, "时间：{}", "At {}", &[&s(&r, "created_at")]),
                ],
                token_link,
                i(&r, "token_count") as f64,
            ),
        };
        let finding = Finding {
            subject,
            title,
            lines,
            details: r,
            link,
            weight,
        };
        match seen.get(&finding.subject) {
            Some(&at) if out[at].weight >= finding.weight => {}
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
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| "—".to_owned());
        let owner_line = say(lang, "所属用户：{}", "Owner: {}", &[&owner]);
        let link = format!("#/key?id={}", k.id);
        match rule {
            RuleKind::QuotaLow => {
                let c = effective_counters(&k, now_ms);
                let (Some(quota), Some(remaining)) = (c.quota, c.remaining()) else {
                    continue;
                };
                let pct = if quota > 0 {
                    remaining as f64 * 100.0 / quota as f64
                } else {
                    100.0
                };
                if pct >= rs.threshold_pct {
                    continue;
                }
                let pct_s = format!("{pct:.1}");
                out.push(Finding {
                    subject: format!("key:{}", k.id),
                    title: say(lang, "配额即将用完：密钥 {}", "Quota running low: key {}", &[&name]),
                    lines: vec![
                        say(
                            lang,
                            "剩余 {} / {}（{}%，阈值 {}%）",
                            "{} of {} left ({} %, threshold {} %)",
                            &[&remaining, &quota, &pct_s, &rs.threshold_pct],
                        ),
                        owner_line,
                    ],
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
                let hours = (exp - now_ms) / 3_600_000;
                out.push(Finding {
                    subject: format!("key:{}", k.id),
                    title: say(lang, "密钥即将过期：{}", "Key expiring: {}", &[&name]),
                    lines: vec![
                        say(
                            lang,
                            "过期时间：{}（还有 {} 小时，提醒窗口 {} 天）",
                            "Expires at {} (in {} h; window {} days)",
                            &[&rfc3339(exp), &hours, &rs.days],
                        ),
                        owner_line,
                    ],
                    details: json!({"key_id": k.id, "name": k.name, "key": k.hint,
                        "expiresAt": rfc3339(exp), "days": rs.days}),
                    link,
                    weight: -(hours as f64),
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
            lines.push(say(
                lang,
                "已摘除，至 {} 恢复尝试",
                "Ejected until {}",
                &[&rfc3339(until)],
            ));
        }
        lines.push(say(
            lang,
            "最近 {} 分钟错误率 {}%（{}/{}，阈值 {}%）",
            "Error rate over the last {} min: {} % ({}/{}, threshold {} %)",
            &[
                &(rs.lookback_ms / 60_000),
                &format!("{:.1}", rate * 100.0),
                &st.errors,
                &st.requests,
                &format!("{:.0}", rs.error_rate * 100.0),
            ],
        ));
        out.push(Finding {
            subject: format!("upstream:{}", u.s.name),
            title: say(lang, "上游异常：{}", "Upstream down: {}", &[&u.s.name]),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn say_fills_the_chosen_language_in_order() {
        assert_eq!(
            say(Lang::Zh, "{} 个，{} 次", "{} of {}", &[&3, &"x"]),
            "3 个，x 次"
        );
        assert_eq!(
            say(Lang::En, "{} 个，{} 次", "{} of {}", &[&3, &"x"]),
            "3 of x"
        );
        // Missing arguments leave the gap empty rather than failing.
        assert_eq!(say(Lang::En, "", "a {} b {}", &[&1]), "a 1 b ");
    }
}
