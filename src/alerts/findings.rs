//! What each monitor rule's flagged subject says in an alert: one function per kind of row
//! the monitor answers (`AnomalyRow`), reading its typed fields.

use serde_json::Value;

use super::settings::Lang;
use super::text::{Voice, named, say, user_named};
use crate::monitor::rows::{AnomalyRow, BigRequestRow, BurstRow, CrowdedIpRow, SharedKeyRow};

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

/// The finding of one row; `range` is the look-back as a dashboard query (`from=…&to=…`).
pub fn of_row(row: &AnomalyRow, v: Voice, range: &str) -> Finding {
    let details = serde_json::to_value(row).unwrap_or_default();
    let (subject, title, lines, link, weight) = match row {
        AnomalyRow::Burst(r) => burst(r, v, range),
        AnomalyRow::SharedKey(r) => shared_key(r, v.lang, range),
        AnomalyRow::CrowdedIp(r) => crowded_ip(r, v.lang, range),
        AnomalyRow::BigRequest(r) => big_request(r, v, range),
    };
    Finding {
        subject,
        title,
        lines,
        details,
        link,
        weight,
    }
}

type Parts = (String, String, Vec<String>, String, f64);

fn token_subject(id: i64) -> String {
    format!("token:{id}")
}

fn token_link(id: i64, range: &str) -> String {
    format!("#/subject?token_id={id}&{range}")
}

fn burst(r: &BurstRow, v: Voice, range: &str) -> Parts {
    let lang = v.lang;
    let key = named(&r.token_name, r.token_id);
    let user = user_named(&r.username, r.user_id);
    (
        token_subject(r.token_id),
        say(lang, "突发请求：密钥 {}", "Burst: key {}", &[&key]),
        vec![
            say(lang, "用户：{}", "User: {}", &[&user]),
            say(
                lang,
                "{} 秒内 {} 次请求（阈值 {}）",
                "within {} s: {} requests (threshold {})",
                &[&r.window_sec, &r.request_count, &r.threshold],
            ),
            say(
                lang,
                "时间：{} 至 {}",
                "From {} to {}",
                &[
                    &v.time_text(&r.first_request),
                    &v.time_text(&r.last_request),
                ],
            ),
        ],
        token_link(r.token_id, range),
        r.request_count as f64,
    )
}

fn shared_key(r: &SharedKeyRow, lang: Lang, range: &str) -> Parts {
    let key = named(&r.token_name, r.token_id);
    (
        token_subject(r.token_id),
        say(lang, "密钥共享：{}", "Shared key: {}", &[&key]),
        vec![
            say(
                lang,
                "{} 个用户、{} 个 IP 在使用（用户阈值 {}）",
                "Used by {} users from {} IPs (users threshold {})",
                &[&r.user_count, &r.ip_count, &r.threshold],
            ),
            say(lang, "用户：{}", "Users: {}", &[&r.users]),
            say(lang, "总请求：{}", "Requests: {}", &[&r.total_requests]),
        ],
        token_link(r.token_id, range),
        r.user_count as f64,
    )
}

fn crowded_ip(r: &CrowdedIpRow, lang: Lang, range: &str) -> Parts {
    let ip_q: String = form_urlencoded::byte_serialize(r.ip.as_bytes()).collect();
    (
        format!("ip:{}", r.ip),
        say(lang, "同 IP 多账户：{}", "Crowded IP: {}", &[&r.ip]),
        vec![
            say(
                lang,
                "{} 个用户（阈值 {}）：{}",
                "{} users (threshold {}): {}",
                &[&r.user_count, &r.threshold, &r.users],
            ),
            say(lang, "总请求：{}", "Requests: {}", &[&r.total_requests]),
        ],
        format!("#/subject?ip={ip_q}&{range}"),
        r.user_count as f64,
    )
}

fn big_request(r: &BigRequestRow, v: Voice, range: &str) -> Parts {
    let lang = v.lang;
    let key = named(&r.token_name, r.token_id);
    let user = user_named(&r.username, r.user_id);
    let model = r.model_name.clone().unwrap_or_default();
    (
        token_subject(r.token_id),
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
                    &model,
                    &r.token_count,
                    &(r.mean_tokens.round() as i64),
                    &(r.threshold.round() as i64),
                ],
            ),
            say(lang, "时间：{}", "At {}", &[&v.time_text(&r.created_at)]),
        ],
        token_link(r.token_id, range),
        r.token_count as f64,
    )
}
