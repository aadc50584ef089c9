//! The effective configuration as `check-config` prints it: every setting after flags,
//! environment, file and defaults, with each secret masked (tokens and keys to a hint,
//! passwords in DSNs and webhook addresses to `***`).

use serde_json::{Value, json};

use crate::config::Config;

/// `abcd…wxyz (40 chars)` for a long secret, `***` for a short one.
fn hint(secret: &str) -> String {
    let n = secret.chars().count();
    if n >= 16 {
        let head: String = secret.chars().take(4).collect();
        let tail: String = secret.chars().skip(n - 4).collect();
        format!("{head}…{tail} ({n} chars)")
    } else {
        "***".to_owned()
    }
}

fn secret(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |s| Value::String(hint(s)))
}

/// `scheme://user:***@host/db`: the password of a DSN masked; a path left as it is.
pub fn mask_dsn(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else {
        return dsn.to_owned();
    };
    let (auth_host, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let masked_tail = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?***"),
        None => tail.to_owned(),
    };
    match auth_host.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{masked_tail}")
        }
        None => format!("{scheme}://{auth_host}{masked_tail}"),
    }
}

pub fn effective(c: &Config) -> Value {
    let g = &c.gateway;
    let upstreams: Vec<Value> = g
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "kind": format!("{:?}", u.kind).to_lowercase(),
                "base_url": mask_dsn(&u.base_url),
                "api_keys": u.api_keys.iter().map(|k| secret(Some(k))).collect::<Vec<_>>(),
                "models": u.models,
                "weight": u.weight,
                "priority": u.priority,
                "timeout_ms": u.timeout_ms,
                "connect_timeout_ms": u.connect_timeout_ms,
                "model_map": u.model_map,
                "protocols": u.protocols.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                // Extra headers often carry credentials: names only.
                "headers": u.headers.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "listen": c.listen.to_string(),
        "data_dir": c.data_dir.display().to_string(),
        "database_url": c.database_url.as_deref().map(mask_dsn),
        "db_pool_max": c.db_pool_max,
        "db_acquire_timeout_ms": c.db_acquire_timeout_ms,
        "sqlite_path": c.sqlite_path.display().to_string(),
        "sqlite_synchronous": if c.sqlite_synchronous_full { "full" } else { "normal" },
        "sqlite_busy_timeout_ms": c.sqlite_busy_timeout_ms,
        "admin_token": secret(c.admin_token.as_deref()),
        "viewer_token": secret(c.viewer_token.as_deref()),
        "metrics_token": secret(c.metrics_token.as_deref()),
        "key_prefix": c.key_prefix,
        "daily_req_limit": c.daily_req_limit,
        "max_body_bytes": c.max_body_bytes,
        "request_timeout_ms": c.request_timeout_ms,
        "max_connections": c.connections.max_connections,
        "header_read_timeout_ms": c.connections.header_read_timeout.as_millis() as u64,
        "body_idle_timeout_ms": c.connections.body_idle_timeout.as_millis() as u64,
        "body_deadline_ms": c.connections.body_deadline.as_millis() as u64,
        "max_unauthenticated_per_ip": c.connections.max_unauthenticated_per_ip,
        "auth_failure_allowance": c.auth_failure_allowance,
        "retention": {
            "request_log_days": c.retention.request_log_days,
            "usage_history_days": c.retention.usage_history_days,
            "audit_days": c.retention.audit_days,
            "alerts_days": c.retention.alerts_days,
            "idempotency_hours": c.retention.idempotency_hours,
            "every_secs": c.retention.every.as_secs(),
        },
        "gateway": gateway_view(g),
        "billing": billing_view(&g.billing),
        "upstreams": upstreams,
        "monitor": monitor_view(&c.monitor),
        "alerts": alerts_view(&c.alerts),
    })
}

fn gateway_view(g: &crate::gateway::settings::GatewaySettings) -> Value {
    json!({
        "mock_fallback": g.mock_fallback,
        "max_attempts": g.max_attempts,
        "eject_after_failures": g.eject_after_failures,
        "eject_cooldown_ms": g.eject_cooldown_ms,
        "trusted_proxies": g.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "client_ip": format!("{:?}", g.client_ip).to_lowercase(),
        "max_body_bytes": g.max_body_bytes,
        "max_response_bytes": g.max_response_bytes,
        "log_flush_ms": g.log_flush_ms,
    })
}

fn billing_view(b: &crate::gateway::settings::Billing) -> Value {
    json!({
        "mode": b.mode.name(),
        "currency": b.currency.code(),
        "money_prices": b.table.entries.len(),
        "money_windows": b.table.windows.iter().map(|w| w.name.clone()).collect::<Vec<_>>(),
        "request_cost": b.request_cost,
        "default_max_tokens": b.default_max_tokens,
        "default_price": {"prompt": b.default_price.prompt, "completion": b.default_price.completion},
        "prices": b.prices.iter().map(|(k, p)| (k.clone(), json!({"prompt": p.prompt, "completion": p.completion}))).collect::<serde_json::Map<_, _>>(),
    })
}

fn monitor_view(m: &crate::monitor::MonitorSettings) -> Value {
    json!({
        "source": m.source.as_str(),
        "dsn": m.dsn.as_deref().map(mask_dsn),
        "cache_ttl_sec": m.cache_ttl_sec,
        "tz": m.tz.name(),
        "rollup_days": m.rollup.days,
        "rollup_poll_ms": m.rollup.poll.as_millis() as u64,
        "rollup_max_rows": m.rollup.max_rows,
        "allow": {
            "keys": m.allow.keys,
            "users": m.allow.users,
            "ips": m.allow.ips.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        },
    })
}

fn alerts_view(a: &crate::alerts::settings::AlertSettings) -> Value {
    json!({
        "enabled": a.enabled,
        "language": format!("{:?}", a.lang).to_lowercase(),
        "public_url": a.public_url,
        "cooldown_ms": a.cooldown_ms,
        "summary_at": a.summary_at,
        "max_attempts": a.max_attempts,
        "retry_base_ms": a.retry_base_ms,
        "timeout_ms": a.timeout_ms,
        "channels": a.channels.iter().map(|ch| json!({
            "name": ch.name,
            "kind": ch.kind.as_str(),
            "url": crate::alerts::channels::mask_url(&ch.url),
            "secret": secret(ch.secret.as_deref()),
            "rules": ch.rules.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "rules": a.rules.iter().map(|(r, s)| (r.as_str().to_owned(), json!({
            "enabled": s.enabled,
            "every_ms": s.every_ms,
            "lookback_ms": s.lookback_ms,
            "params": s.params,
        }))).collect::<serde_json::Map<_, _>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_passwords_and_secrets_are_masked() {
        assert_eq!(
            mask_dsn("mysql://newapi:s3cret@127.0.0.1:3306/newapi"),
            "mysql://newapi:***@127.0.0.1:3306/newapi"
        );
        assert_eq!(
            mask_dsn("postgres://u:p@h/db?password=x"),
            "postgres://u:***@h/db?***"
        );
        assert_eq!(mask_dsn("/var/lib/one-api.db"), "/var/lib/one-api.db");
        assert_eq!(
            mask_dsn("https://api.deepseek.com/v1"),
            "https://api.deepseek.com/v1"
        );
        assert_eq!(hint("short"), "***");
        let h = hint("qpa_abcdefghijklmnopqrstuvwxyz0123456789");
        assert!(h.starts_with("qpa_") && h.contains("chars") && !h.contains("ghij"));
    }
}
