//! What each rule finds at one run, and what it says about it (Chinese or English). The four
//! monitor rules ask the monitor exactly what `/api/stats/anomalies` answers; the key and
//! upstream rules read the keys and the gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::json;

use super::findings::{self, Finding};
use super::settings::{Lang, RuleKind, RuleSettings};
use super::text::{Voice, named, say};
use crate::gateway::Gateway;
use crate::keys::effective_counters;
use crate::keys::policy::is_expired;
use crate::monitor::Monitor;
use crate::monitor::params::MonitorQuery;
use crate::store::Store;
use crate::timefmt::rfc3339;

/// Where the rules look.
#[derive(Clone)]
pub struct Sources {
    pub monitor: Arc<Monitor>,
    pub store: Arc<dyn Store>,
    /// `serve` mode: keys live in `store` and the gateway is here.
    pub gateway: Option<Arc<Gateway>>,
    /// Wrong credentials per client address (the routes' guard counts them).
    pub failures: Arc<crate::bruteforce::FailureLimiter>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("monitor: {0}")]
    Monitor(#[from] crate::monitor::MonitorError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

fn range_q(from: i64, to: i64) -> String {
    format!("from={from}&to={to}")
}

/// Whether `rule` can run here (key and upstream rules need the gateway's own database).
pub fn applicable(rule: RuleKind, src: &Sources) -> bool {
    rule.is_monitor_rule() || rule == RuleKind::AuthFailures || src.gateway.is_some()
}

pub async fn evaluate(
    rule: RuleKind,
    rs: &RuleSettings,
    src: &Sources,
    now_ms: i64,
    v: Voice,
) -> Result<Vec<Finding>, RuleError> {
    match rule {
        RuleKind::QuotaLow | RuleKind::KeyExpiring => keys(rule, rs, src, now_ms, v).await,
        RuleKind::UpstreamDown => upstreams(rs, src, now_ms, v).await,
        RuleKind::AuthFailures => Ok(guessing(src, now_ms, v)),
        RuleKind::QuotaRequest => quota_requests(src, v).await,
        _ => monitor_rule(rule, rs, src, now_ms, v).await,
    }
}

async fn monitor_rule(
    rule: RuleKind,
    rs: &RuleSettings,
    src: &Sources,
    now_ms: i64,
    v: Voice,
) -> Result<Vec<Finding>, RuleError> {
    let from = now_ms - rs.lookback_ms;
    let params: HashMap<String, String> = rs.params.clone().into_iter().collect();
    let mut q = MonitorQuery::parse(&params)?;
    q.rule = Some(rule.as_str().into());
    q.start_ms = Some(from);
    q.end_ms = Some(now_ms);
    q.limit = Some(10_000);
    let answer = crate::monitor::answer::anomalies(&src.monitor, &q).await?;
    let range = range_q(from, now_ms);
    // big_request flags requests; one finding per key (its largest).
    let mut out: Vec<Finding> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for row in &answer.data {
        let finding = findings::of_row(row, v, &range);
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

/// An amount as the API shows it: points, or money with its symbol (`¥0.15`).
fn amount_text(currency: crate::billing::Currency, v: i64) -> String {
    match currency {
        crate::billing::Currency::Points => v.to_string(),
        c => format!("{}{}", c.symbol(), crate::billing::money::format_decimal(v)),
    }
}

async fn keys(
    rule: RuleKind,
    rs: &RuleSettings,
    src: &Sources,
    now_ms: i64,
    v @ Voice { lang, .. }: Voice,
) -> Result<Vec<Finding>, RuleError> {
    let Some(gateway) = &src.gateway else {
        return Ok(Vec::new());
    };
    let amount = |v: i64| amount_text(gateway.settings.billing.currency, v);
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
                            &[&amount(remaining), &amount(quota), &pct_s, &rs.threshold_pct],
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
                            &[&v.time(exp), &hours, &rs.days],
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

/// Requests for more quota waiting for an operator (each announced again after the
/// cooldown while it waits).
async fn quota_requests(src: &Sources, v: Voice) -> Result<Vec<Finding>, RuleError> {
    let Some(gateway) = &src.gateway else {
        return Ok(Vec::new());
    };
    let lang = v.lang;
    let amount = |x: i64| amount_text(gateway.settings.billing.currency, x);
    let keys = src.store.load_keys().await?;
    let accounts = src.store.accounts().await?;
    let rows = src.store.quota_requests(Some("pending"), None, 200).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = keys.iter().find(|k| k.id == r.key_id);
            let name = named(key.and_then(|k| k.name.as_deref()).unwrap_or(""), r.key_id);
            let user = r
                .user_id
                .and_then(|u| accounts.iter().find(|a| a.id == u))
                .map_or_else(|| "—".to_owned(), |a| a.name.clone());
            let reason = r.reason.clone().unwrap_or_else(|| "—".to_owned());
            Finding {
                subject: format!("quota_request:{}", r.id),
                title: say(
                    lang,
                    "额度申请：密钥 {} 申请增加 {}",
                    "Quota request: key {} asks for {} more",
                    &[&name, &amount(r.amount)],
                ),
                lines: vec![
                    say(lang, "所属用户：{}", "User: {}", &[&user]),
                    say(lang, "理由：{}", "Reason: {}", &[&reason]),
                    say(
                        lang,
                        "提交时间：{}",
                        "Filed at {}",
                        &[&v.time(r.created_ms)],
                    ),
                ],
                details: json!({"request_id": r.id, "key_id": r.key_id, "amount": r.amount,
                    "user_id": r.user_id, "reason": r.reason}),
                link: "#/users".to_owned(),
                weight: r.amount as f64,
            }
        })
        .collect())
}

/// Addresses blocked now for sending too many wrong credentials (`bruteforce`).
fn guessing(src: &Sources, now_ms: i64, v: Voice) -> Vec<Finding> {
    let lang = v.lang;
    src.failures
        .blocked_now(now_ms)
        .into_iter()
        .map(|b| {
            let ip = b.ip.to_string();
            Finding {
                subject: format!("ip:{ip}"),
                title: say(lang, "凭证猜测：{}", "Credential guessing: {}", &[&ip]),
                lines: vec![say(
                    lang,
                    "一分钟内 {} 次凭证错误，已封禁至 {}",
                    "{} wrong credentials within a minute; blocked until {}",
                    &[&b.failures, &v.time(b.until_ms)],
                )],
                details: json!({"ip": ip, "failures": b.failures,
                    "blockedUntil": rfc3339(b.until_ms)}),
                link: "#/overview?range=1h".to_owned(),
                weight: f64::from(b.failures),
            }
        })
        .collect()
}

async fn upstreams(
    rs: &RuleSettings,
    src: &Sources,
    now_ms: i64,
    v: Voice,
) -> Result<Vec<Finding>, RuleError> {
    let lang = v.lang;
    let Some(gw) = &src.gateway else {
        return Ok(Vec::new());
    };
    let from = now_ms - rs.lookback_ms;
    let stats = src.store.upstream_stats(from, now_ms).await?;
    let mut out = Vec::new();
    for u in &gw.roster().upstreams {
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
        let health = u.health.view(now_ms);
        let until = health.until_ms.unwrap_or(0);
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
                &[&v.time(until)],
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
        (RuleKind::AuthFailures, true) => "凭证猜测",
        (RuleKind::QuotaRequest, true) => "额度申请",
        (RuleKind::Burst, false) => "Bursts",
        (RuleKind::MultiUserToken, false) => "Shared keys",
        (RuleKind::IpManyUsers, false) => "Crowded IPs",
        (RuleKind::BigRequest, false) => "Outsized requests",
        (RuleKind::QuotaLow, false) => "Quotas running low",
        (RuleKind::KeyExpiring, false) => "Keys expiring",
        (RuleKind::UpstreamDown, false) => "Upstreams down",
        (RuleKind::AuthFailures, false) => "Credential guessing",
        (RuleKind::QuotaRequest, false) => "Quota requests",
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
        RuleKind::QuotaRequest => "#/users".to_owned(),
        RuleKind::UpstreamDown | RuleKind::AuthFailures => "#/overview?range=1h".to_owned(),
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
