//! Prometheus metrics: every name the process publishes, its help text, the one recorder,
//! and bounded label values. Labels never carry a key, a token, an IP or free text: routes
//! are templates, upstreams and channels come from the config, and model names (chosen by
//! callers) are capped at [`MAX_MODELS`] distinct values, the rest counted as `other`.

pub mod handles;

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, RwLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "qp_http_requests_total";
pub const HTTP_DURATION: &str = "qp_http_request_duration_seconds";
pub const GATEWAY_REQUESTS: &str = "qp_gateway_requests_total";
pub const GATEWAY_OVERHEAD: &str = "qp_gateway_overhead_seconds";
pub const GATEWAY_OVERRUNS: &str = "qp_gateway_overruns_total";
pub const AUTH_FAILURES: &str = "qp_auth_failures_total";
pub const AUTH_BLOCKED: &str = "qp_auth_blocked_total";
pub const CONNECTIONS_REFUSED: &str = "qp_connections_refused_total";
pub const LOG_SUPPRESSED: &str = "qp_log_lines_suppressed_total";
pub const UPSTREAM_DURATION: &str = "qp_upstream_duration_seconds";
pub const UPSTREAM_TTFT: &str = "qp_upstream_ttft_seconds";
pub const UPSTREAM_ERRORS: &str = "qp_upstream_errors_total";
pub const UPSTREAM_EJECTIONS: &str = "qp_upstream_ejections_total";
pub const TOKENS: &str = "qp_tokens_total";
pub const COST: &str = "qp_cost_points_total";
pub const LEDGER_BATCH: &str = "qp_ledger_commit_batch_size";
pub const LEDGER_COMMIT: &str = "qp_ledger_commit_duration_seconds";
pub const LEDGER_QUEUE: &str = "qp_ledger_queue_depth";
pub const LEDGER_FAILURES: &str = "qp_ledger_commit_failures_total";
pub const REQUEST_LOG_QUEUE: &str = "qp_request_log_queue_depth";
pub const REQUEST_LOG_DROPPED: &str = "qp_request_log_dropped_total";
pub const REQUEST_LOG_WRITTEN: &str = "qp_request_log_rows_total";
pub const ROLLUP_ROWS: &str = "qp_monitor_rollup_rows";
pub const ROLLUP_ARCHIVED: &str = "qp_monitor_rollup_archived_rows";
pub const ROLLUP_LAG: &str = "qp_monitor_rollup_lag_seconds";
pub const ROLLUP_LOAD: &str = "qp_monitor_rollup_load_seconds";
pub const ALERTS_SENT: &str = "qp_alerts_sent_total";
pub const ALERTS_FAILED: &str = "qp_alerts_failed_total";

/// Distinct model names kept as label values.
pub const MAX_MODELS: usize = 64;

/// (name, help) of every metric, for `# HELP` lines.
const HELP: &[(&str, &str)] = &[
    (
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status",
    ),
    (
        HTTP_DURATION,
        "Time to the response head, by route template and method",
    ),
    (
        GATEWAY_REQUESTS,
        "Gateway calls by endpoint and outcome (ok, refused, upstream_error, cancelled)",
    ),
    (
        GATEWAY_OVERHEAD,
        "Time a gateway call spent in quota-proxy itself: total minus the wait on upstreams",
    ),
    (
        GATEWAY_OVERRUNS,
        "Served calls that cost more than their hold (an upstream answered past max_tokens); charged what was served, within what the key had left",
    ),
    (
        AUTH_FAILURES,
        "Requests answered 401 (wrong or missing credentials), counted per client address for blocking",
    ),
    (
        AUTH_BLOCKED,
        "Requests refused 429 because their client address sent too many wrong credentials",
    ),
    (
        CONNECTIONS_REFUSED,
        "Connections closed at once with 503: the connection budget was spent, or the client address held too many unauthenticated connections",
    ),
    (
        LOG_SUPPRESSED,
        "Log lines not written because the same cause was logged within the interval",
    ),
    (
        UPSTREAM_DURATION,
        "Upstream call duration, to the last byte, by upstream and model",
    ),
    (
        UPSTREAM_TTFT,
        "Upstream time to the first streamed token, by upstream and model",
    ),
    (
        UPSTREAM_ERRORS,
        "Failed upstream attempts by upstream and kind (connect, timeout, status_429, status_5xx, status_4xx, stream)",
    ),
    (
        UPSTREAM_EJECTIONS,
        "Times an upstream was ejected for its cooldown",
    ),
    (
        TOKENS,
        "Tokens metered by model and kind (prompt, completion, cached, cache_write, reasoning)",
    ),
    (
        COST,
        "Charged for gateway calls, by model, in the ledger's unit (points; micros of the currency in money mode)",
    ),
    (LEDGER_BATCH, "Consumes per ledger commit (group commit)"),
    (LEDGER_COMMIT, "Ledger commit duration"),
    (LEDGER_QUEUE, "Consumes waiting for the ledger writer"),
    (
        LEDGER_FAILURES,
        "Ledger commits that failed (storage faults); their consumes were refused or kept for retry",
    ),
    (REQUEST_LOG_QUEUE, "Request-log rows waiting to be written"),
    (
        REQUEST_LOG_DROPPED,
        "Request-log rows dropped because the queue was full",
    ),
    (REQUEST_LOG_WRITTEN, "Request-log rows written"),
    (ROLLUP_ROWS, "Rows held by the monitor's in-memory rollup"),
    (
        ROLLUP_ARCHIVED,
        "Rows of the rollup's oldest hours kept on disk under the memory budget",
    ),
    (
        ROLLUP_LAG,
        "Seconds between now and the newest row the rollup holds",
    ),
    (
        ROLLUP_LOAD,
        "Seconds the rollup's first load took (0 while loading)",
    ),
    (ALERTS_SENT, "Alert messages delivered, by channel"),
    (
        ALERTS_FAILED,
        "Alert deliveries that failed after every retry, by channel",
    ),
];

/// One log line per cause per this interval; the others are counted and reported with the
/// next line of the cause.
pub const LOG_INTERVAL_MS: i64 = 10_000;

/// Runs `log` (given how many lines of the same cause were suppressed since the last one)
/// unless the cause was logged within [`LOG_INTERVAL_MS`]: an outage logs a line every ten
/// seconds with a count, not thousands.
pub fn log_limited(cause: &'static str, log: impl FnOnce(u64)) {
    static LAST: OnceLock<Mutex<std::collections::HashMap<&'static str, (i64, u64)>>> =
        OnceLock::new();
    let now = chrono::Utc::now().timestamp_millis();
    let suppressed = {
        let mut map = LAST
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let e = map.entry(cause).or_insert((i64::MIN / 2, 0));
        if now - e.0 < LOG_INTERVAL_MS {
            e.1 += 1;
            metrics::counter!(LOG_SUPPRESSED).increment(1);
            return;
        }
        let n = e.1;
        *e = (now, 0);
        n
    };
    log(suppressed);
}

/// The process's recorder, installed on first use (one per process: tests that start many
/// servers share it, and read deltas).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 120.0,
        ];
        let sizes = [
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(LEDGER_BATCH.into()), &sizes))
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours renders nothing,
        // which the metrics test would show.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        for (name, help) in HELP {
            metrics::describe_counter!(*name, *help);
        }
        handle.clone()
    })
}

/// A model name as a label value: itself while fewer than [`MAX_MODELS`] distinct names
/// were seen, else `other`; over 64 characters, `other` too. The names kept are leaked once
/// each (at most 64 × 64 bytes) so that a label costs no allocation a call.
pub fn model_label(model: &str) -> &'static str {
    static SEEN: RwLock<Option<HashSet<&'static str, foldhash::fast::RandomState>>> =
        RwLock::new(None);
    if model.is_empty() {
        return "none";
    }
    if model.len() > 64 || model.chars().any(|c| c.is_control()) {
        return "other";
    }
    if let Some(&m) = SEEN
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|set| set.get(model))
    {
        return m;
    }
    let mut guard = SEEN.write().unwrap_or_else(|p| p.into_inner());
    let set = guard.get_or_insert_with(HashSet::default);
    if let Some(&m) = set.get(model) {
        return m;
    }
    if set.len() < MAX_MODELS {
        let m: &'static str = Box::leak(model.into());
        set.insert(m);
        return m;
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_logs_once_per_interval_with_the_count() {
        let mut lines = Vec::new();
        for _ in 0..1000 {
            log_limited("test_cause", |n| lines.push(n));
        }
        assert_eq!(lines, vec![0], "one line for a thousand");
        let mut other = 0;
        log_limited("other_cause", |_| other += 1);
        assert_eq!(other, 1, "causes are counted apart");
    }

    #[test]
    fn model_labels_are_bounded() {
        for i in 0..MAX_MODELS * 2 {
            let l = model_label(&format!("m-{i}"));
            assert!(l == format!("m-{i}") || l == "other");
        }
        assert_eq!(model_label(&"x".repeat(65)), "other");
        assert_eq!(model_label("a\nb"), "other");
        assert_eq!(model_label(""), "none");
        let distinct: HashSet<&str> = (0..MAX_MODELS * 2)
            .map(|i| model_label(&format!("m-{i}")))
            .collect();
        assert!(distinct.len() <= MAX_MODELS + 1);
    }

    /// The sample Grafana dashboard only asks for names this process publishes.
    #[test]
    fn the_grafana_dashboard_uses_published_names() {
        let dash = include_str!("../../docs/grafana-dashboard.json");
        let names: HashSet<&str> = HELP.iter().map(|(n, _)| *n).collect();
        let mut used = 0;
        for part in dash.split("qp_").skip(1) {
            let raw: String = part
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| raw.strip_suffix(s))
                .unwrap_or(&raw);
            let name = format!("qp_{base}");
            assert!(names.contains(name.as_str()), "{name} is not published");
            used += 1;
        }
        assert!(used > 20);
        // And every published name is shown somewhere.
        for n in names {
            assert!(dash.contains(n), "{n} is not on the dashboard");
        }
    }
}
