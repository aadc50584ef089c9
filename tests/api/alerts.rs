//! Alerts against the real server and a local receiver that plays each platform and checks
//! its signatures independently.

use std::time::{Duration, Instant};

use quota_proxy::alerts::settings::{ChannelKind, ChannelSettings, RuleKind};
use quota_proxy::config::Config;
use quota_proxy::gateway::settings::{UpstreamKind, mock_upstream};
use serde_json::{Value, json};

use crate::alert_receiver::*;
use crate::helpers::*;

fn channel(name: &str, kind: ChannelKind, url: String, secret: Option<&str>) -> ChannelSettings {
    ChannelSettings {
        name: name.to_owned(),
        kind,
        url,
        secret: secret.map(str::to_owned),
        rules: Vec::new(),
    }
}

pub fn hook_channel(r: &Receiver) -> ChannelSettings {
    channel(
        "hook",
        ChannelKind::Webhook,
        r.webhook_url(),
        Some(HOOK_SECRET),
    )
}

fn all_channels(r: &Receiver) -> Vec<ChannelSettings> {
    vec![
        channel(
            "ding",
            ChannelKind::DingTalk,
            r.dingtalk_url(),
            Some(DING_SECRET),
        ),
        channel(
            "feishu",
            ChannelKind::Feishu,
            r.feishu_url(),
            Some(FEISHU_SECRET),
        ),
        channel("wecom", ChannelKind::WeChatWork, r.wecom_url(), None),
        channel("slack", ChannelKind::Slack, r.slack_url(), None),
        channel(
            "hook",
            ChannelKind::Webhook,
            r.webhook_url(),
            Some(HOOK_SECRET),
        ),
    ]
}

/// Alerts on fast schedules: only `rules` run, every 200 ms, with quick retries.
pub fn alerting(
    c: &mut Config,
    channels: Vec<ChannelSettings>,
    rules: &[(RuleKind, &[(&str, &str)])],
) {
    let a = &mut c.alerts;
    a.channels = channels;
    a.retry_base_ms = 50;
    a.max_attempts = 3;
    a.timeout_ms = 3000;
    for (kind, rs) in a.rules.iter_mut() {
        rs.enabled = rules.iter().any(|(k, _)| k == kind);
        rs.every_ms = 200;
    }
    for (kind, params) in rules {
        let rs = a.rules.get_mut(kind).unwrap();
        for (k, v) in *params {
            match *k {
                "threshold_pct" => rs.threshold_pct = v.parse().unwrap(),
                "days" => rs.days = v.parse().unwrap(),
                "error_rate" => rs.error_rate = v.parse().unwrap(),
                "min_requests" => rs.min_requests = v.parse().unwrap(),
                _ => {
                    rs.params.insert((*k).to_owned(), (*v).to_owned());
                }
            }
        }
    }
}

async fn calls(app: &TestApp, key: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(app.mock_chat(key).await.status().as_u16(), 200);
    }
}

async fn alerts_api(app: &TestApp, q: &str) -> Value {
    let (s, v) = app.admin_get(&format!("/admin/alerts{q}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits until the history holds `n` alerts whose deliveries are all finished.
async fn settled(app: &TestApp, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let v = alerts_api(app, "?limit=1000").await;
        let list = v["alerts"].as_array().unwrap().clone();
        if list.len() >= n && list.iter().all(|a| a["status"] != "sending") {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("alerts did not settle: {}", alerts_api(app, "").await);
}

fn text_of(r: &Received) -> String {
    r.body.to_string()
}

const BURST: &[(&str, &str)] = &[("window_sec", "60"), ("limit_per_token", "5")];

#[tokio::test]
async fn a_burst_alerts_every_channel_once_signed_and_not_again_after_a_restart() {
    let rx = Receiver::start().await;
    let chans = all_channels(&rx);
    let tweak = |c: &mut Config| alerting(c, chans.clone(), &[(RuleKind::Burst, BURST)]);
    let app = spawn_app_with(tweak).await;
    let (ka, ida) = app
        .create_key(json!({"name": "burst-key", "quota": 100}))
        .await;
    let (kb, _) = app
        .create_key(json!({"name": "calm-key", "quota": 100}))
        .await;
    calls(&app, &ka, 8).await;
    calls(&app, &kb, 2).await;

    let got = rx.wait_for(5, 20).await;
    for p in ["dingtalk", "feishu", "wechat_work", "slack", "webhook"] {
        let mine = rx.of(p);
        assert_eq!(mine.len(), 1, "{p}: {mine:?}");
        assert!(mine[0].signature_ok, "{p}: signature or format refused");
        let t = text_of(&mine[0]);
        assert!(
            t.contains("burst-key") && t.contains(&format!("#{ida}")),
            "{p}: {t}"
        );
        assert!(!t.contains("calm-key"), "{p}");
    }
    // The message says what, to whom, how much and links to the key's view.
    let hook = &rx.of("webhook")[0].body;
    assert_eq!(hook["rule"], "burst");
    assert_eq!(hook["subject"], format!("token:{ida}"));
    assert_eq!(hook["details"]["request_count"], 8);
    assert!(
        hook["link"]
            .as_str()
            .unwrap()
            .contains(&format!("#/subject?token_id={ida}"))
    );
    assert!(hook["title"].as_str().unwrap().starts_with("突发请求"));
    let _ = got;

    // Each delivery is counted per channel in the metrics.
    settled(&app, 1).await;
    let metrics = metrics_text(&app).await;
    for c in ["ding", "feishu", "wecom"] {
        assert!(
            metrics.contains(&format!("qp_alerts_sent_total{{channel=\"{c}\"}}")),
            "{c} not counted"
        );
    }

    // Several more runs inside the cooldown: nothing new.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(rx.got().len(), 5);
    let list = settled(&app, 1).await;
    assert_eq!(list.len(), 1);
    let a = &list[0];
    assert_eq!(
        (a["rule"].as_str(), a["status"].as_str()),
        (Some("burst"), Some("sent"))
    );
    assert_eq!(a["subject"], format!("token:{ida}"));
    let d = a["deliveries"].as_array().unwrap();
    assert_eq!(d.len(), 5);
    assert!(
        d.iter().all(|x| x["ok"] == true && x["attempt"] == 1),
        "{d:?}"
    );

    // After a restart the cooldown still holds.
    let dir = app.stop().await;
    let app = spawn_in(dir, tweak).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 5, "no repeat after the restart");
    assert_eq!(alerts_api(&app, "").await["total"], 1);
    app.stop().await;
}

#[tokio::test]
async fn ten_subjects_in_one_run_make_one_summary() {
    let rx = Receiver::start().await;
    let hook = vec![hook_channel(&rx)];
    let app = spawn_app_with(|c| {
        alerting(
            c,
            hook.clone(),
            &[(
                RuleKind::Burst,
                &[("window_sec", "60"), ("limit_per_token", "3")],
            )],
        );
        // The first run happens only once every call below is in the log.
        c.alerts.rules.get_mut(&RuleKind::Burst).unwrap().every_ms = 4000;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..11 {
        let (k, id) = app
            .create_key(json!({"name": format!("k{i}"), "quota": 100}))
            .await;
        calls(&app, &k, 3).await;
        ids.push(id);
    }
    let got = rx.wait_for(1, 20).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got_all = rx.got();
    assert_eq!(got_all.len(), 1, "one message, not eleven: {got:?}");
    let m = &got_all[0].body;
    assert!(got_all[0].signature_ok);
    assert_eq!(m["subject"], "summary");
    assert_eq!(m["details"]["count"], 11);
    assert_eq!(m["details"]["samples"].as_array().unwrap().len(), 5);
    assert!(m["title"].as_str().unwrap().contains("11"), "{m}");
    let subjects = m["details"]["subjects"].as_array().unwrap();
    for id in ids {
        assert!(subjects.contains(&json!(format!("token:{id}"))));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_failing_channel_is_retried_and_recorded_and_others_still_deliver_on_time() {
    let rx = Receiver::start().await;
    rx.set_mode("dingtalk", Mode::PlatformError);
    rx.set_mode("wechat_work", Mode::Fail500);
    let chans = all_channels(&rx);
    let app = spawn_app_with(|c| {
        alerting(c, chans, &[(RuleKind::Burst, BURST)]);
        c.alerts.retry_base_ms = 400;
    })
    .await;
    let (k, _) = app.create_key(json!({"name": "noisy", "quota": 100})).await;
    calls(&app, &k, 6).await;
    // 3 working channels once, 2 failing ones three times each.
    rx.wait_for(3 + 2 * 3, 20).await;
    let first_slack = rx.of("slack")[0].at;
    let first_ding = rx.of("dingtalk")[0].at;
    let last_ding = rx.of("dingtalk")[2].at;
    // The working channels did not wait for the failing ones' retries (400 + 800 ms).
    assert!(
        first_slack < first_ding + Duration::from_millis(300),
        "slack waited for dingtalk"
    );
    assert!(
        last_ding - first_ding >= Duration::from_millis(1100),
        "backoff"
    );
    let list = settled(&app, 1).await;
    let a = &list[0];
    assert_eq!(a["status"], "partial");
    let d = a["deliveries"].as_array().unwrap();
    let of = |c: &str| {
        d.iter()
            .filter(|x| x["channel"] == c)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of("ding").len(), 3);
    assert!(of("ding").iter().all(|x| x["ok"] == false));
    assert!(
        of("ding")[0]["error"].as_str().unwrap().contains("310000"),
        "{d:?}"
    );
    assert_eq!(of("wecom").len(), 3);
    assert_eq!(of("wecom")[2]["httpStatus"], 500);
    assert_eq!(of("slack").len(), 1);
    assert_eq!(of("slack")[0]["ok"], true);
    // Filtered history.
    assert_eq!(alerts_api(&app, "?status=partial").await["total"], 1);
    assert_eq!(alerts_api(&app, "?status=failed").await["total"], 0);
    assert_eq!(alerts_api(&app, "?rule=quota_low").await["total"], 0);
    app.stop().await;
}

#[tokio::test]
async fn quota_low_key_expiring_and_upstream_down() {
    let rx = Receiver::start().await;
    let hook = vec![hook_channel(&rx)];
    // An upstream nobody listens on: one failure ejects it.
    let dead = quota_proxy::gateway::settings::UpstreamSettings {
        name: "dead".into(),
        kind: UpstreamKind::Openai,
        base_url: format!("http://127.0.0.1:{}", free_port()),
        api_keys: vec!["sk-upstream".into()],
        models: vec!["dead-*".into()],
        timeout_ms: 1000,
        connect_timeout_ms: 500,
        ..mock_upstream()
    };
    let app = spawn_app_with(|c| {
        alerting(
            c,
            hook,
            &[
                (RuleKind::QuotaLow, &[]),
                (RuleKind::KeyExpiring, &[("days", "3")]),
                (RuleKind::UpstreamDown, &[]),
            ],
        );
        let mock = quota_proxy::gateway::settings::UpstreamSettings {
            models: vec!["mock-*".into()],
            ..mock_upstream()
        };
        c.gateway.upstreams = vec![mock, dead];
        c.gateway.eject_after_failures = 1;
    })
    .await;
    let (low, low_id) = app
        .create_key(json!({"name": "nearly-empty", "quota": 100}))
        .await;
    let (fine, _) = app
        .create_key(json!({"name": "plenty", "quota": 100}))
        .await;
    let soon = (chrono::Utc::now() + chrono::Duration::hours(30)).to_rfc3339();
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let (_, soon_id) = app
        .create_key(json!({"name": "expiring", "quota": 100, "expiresAt": soon}))
        .await;
    app.create_key(json!({"name": "not-yet", "quota": 100, "expiresAt": later}))
        .await;
    app.use_amount(&fine, 50).await;
    // 79 % used: not yet; 81 %: crosses the 20 % line.
    app.use_amount(&low, 79).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !rx.got().iter().any(|r| r.body["rule"] == "quota_low"),
        "fired before crossing"
    );
    app.use_amount(&low, 2).await;
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&fine)
        .json(&json!({"model": "dead-1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);

    let deadline = Instant::now() + Duration::from_secs(15);
    let by_rule = loop {
        let got = rx.got();
        let rules: Vec<String> = got
            .iter()
            .map(|r| r.body["rule"].as_str().unwrap().to_owned())
            .collect();
        if ["quota_low", "key_expiring", "upstream_down"]
            .iter()
            .all(|x| rules.iter().any(|r| r == x))
        {
            break got;
        }
        assert!(Instant::now() < deadline, "{rules:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = rx.got();
    assert_eq!(got.len(), 3, "one each, no repeats: {got:?}");
    assert!(got.iter().all(|r| r.signature_ok));
    let one = |rule: &str| {
        by_rule
            .iter()
            .find(|r| r.body["rule"] == rule)
            .unwrap()
            .body
            .clone()
    };
    let q = one("quota_low");
    assert_eq!(q["subject"], format!("key:{low_id}"));
    assert_eq!(q["details"]["remaining"], 19);
    assert!(
        q["link"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#/key?id={low_id}"))
    );
    let e = one("key_expiring");
    assert_eq!(e["subject"], format!("key:{soon_id}"));
    let u = one("upstream_down");
    assert_eq!(u["subject"], "upstream:dead");
    assert_eq!(u["details"]["ejected"], true);
    let metrics = metrics_text(&app).await;
    assert!(metrics.contains("qp_upstream_ejections_total{upstream=\"dead\"}"));
    assert!(metrics.contains("qp_upstream_errors_total{upstream=\"dead\",kind=\"connect\"}"));
    // The upstream's key is in no message.
    assert!(
        !got.iter()
            .any(|r| r.body.to_string().contains("sk-upstream"))
    );
    app.stop().await;
}

#[tokio::test]
async fn alert_endpoints_for_admin_and_viewer_and_no_secret_anywhere() {
    let rx = Receiver::start().await;
    rx.set_mode("dingtalk", Mode::PlatformError);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The real binary, configured through the environment, logging at debug.
    let dingtalk_url = rx.dingtalk_url();
    let feishu_url = rx.feishu_url();
    let slack_url = rx.slack_url();
    let srv = BinaryServer::start(
        dir.path(),
        port,
        &[
            ("VIEWER_TOKEN", VIEWER),
            ("ALERT_DINGTALK_URL", &dingtalk_url),
            ("ALERT_DINGTALK_SECRET", DING_SECRET),
            ("ALERT_FEISHU_URL", &feishu_url),
            ("ALERT_FEISHU_SECRET", FEISHU_SECRET),
            ("ALERT_SLACK_URL", &slack_url),
            ("ALERT_LANG", "en"),
        ],
    )
    .await;
    let c = http_client();
    let get = |token: &'static str, path: &str| {
        c.get(format!("{}{path}", srv.base))
            .bearer_auth(token)
            .send()
    };
    let post = |token: &'static str, body: Value| {
        c.post(format!("{}/admin/alerts/test", srv.base))
            .bearer_auth(token)
            .json(&body)
            .send()
    };

    // Channels: both tokens may read; URLs masked, secrets absent.
    for token in [ADMIN, VIEWER] {
        let (s, v) = status_json(get(token, "/admin/alerts/channels").await.unwrap()).await;
        assert_eq!(s, 200, "{v}");
        let text = v.to_string();
        for secret in [
            DING_TOKEN,
            DING_SECRET,
            FEISHU_TOKEN,
            FEISHU_SECRET,
            SLACK_PATH,
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(v["language"], "en");
        let ding = v["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "dingtalk")
            .cloned()
            .unwrap();
        assert_eq!(ding["signed"], true);
        assert!(
            ding["url"]
                .as_str()
                .unwrap()
                .ends_with("/robot/send?access_token=****")
        );
        let (s, _) = status_json(get(token, "/admin/alerts?limit=5").await.unwrap()).await;
        assert_eq!(s, 200);
    }
    let (s, _) = status_json(get("nope", "/admin/alerts").await.unwrap()).await;
    assert_eq!(s, 401);
    let (s, v) = status_json(get(ADMIN, "/admin/alerts?rule=nope").await.unwrap()).await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));

    // Test messages: the viewer may not send; the admin gets the platform's answer.
    let (s, v) = status_json(post(VIEWER, json!({"channel": "feishu"})).await.unwrap()).await;
    assert_eq!((s, error_code(&v)), (403, "FORBIDDEN"));
    let (s, v) = status_json(post(ADMIN, json!({"channel": "feishu"})).await.unwrap()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(rx.of("feishu")[0].signature_ok);
    assert_eq!(
        rx.of("feishu")[0].body["content"]["post"]["zh_cn"]["title"],
        "quota-proxy test message"
    );
    let (_, v) = status_json(post(ADMIN, json!({"channel": "dingtalk"})).await.unwrap()).await;
    assert_eq!(v["ok"], false);
    assert!(v["answer"].as_str().unwrap().contains("310000"), "{v}");
    let (s, v) = status_json(post(ADMIN, json!({"channel": "nope"})).await.unwrap()).await;
    assert_eq!((s, error_code(&v)), (404, "NOT_FOUND"), "{v}");
    let (_, v) = status_json(post(ADMIN, json!({"channel": "slack"})).await.unwrap()).await;
    assert_eq!(v["ok"], true);
    // A channel that cannot be reached: the error names no URL.
    rx.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, v) = status_json(post(ADMIN, json!({"channel": "slack"})).await.unwrap()).await;
    let text = v.to_string();
    assert!(
        !text.contains(SLACK_PATH) && !text.contains("services"),
        "{text}"
    );

    let logs = srv.stderr();
    for secret in [
        DING_TOKEN,
        DING_SECRET,
        FEISHU_TOKEN,
        FEISHU_SECRET,
        SLACK_PATH,
    ] {
        assert!(!logs.contains(secret), "{secret} in the log");
    }
}

/// `quota-proxy monitor` over a New API database alerts on its planted cases; the rules that
/// need the gateway's keys or upstreams are skipped there.
#[tokio::test]
async fn monitor_only_mode_alerts_on_a_new_api_database() {
    use crate::monitor::{Db, load};
    use crate::monitor_data::{T0, generate};
    let rx = Receiver::start().await;
    let d = generate();
    let dir = tempfile::tempdir().unwrap();
    let dsn = load(Db::Sqlite, &d, dir.path()).await.unwrap();
    // The planted data is months old: look back far enough to see it.
    let now = chrono::Utc::now().timestamp();
    let lookback = now - T0 + 86_400;
    let mut toml = format!(
        "[alerts]\nretry_base_ms = 50\n[[alerts.channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\n",
        rx.webhook_url()
    );
    for rule in ["burst", "multi_user_token", "ip_many_users"] {
        toml.push_str(&format!(
            "[alerts.rules.{rule}]\nevery_sec = 1\nlookback_sec = {lookback}\n"
        ));
    }
    toml.push_str("[alerts.rules.big_request]\nenabled = false\n");
    let cfg = dir.path().join("quota-proxy.toml");
    std::fs::write(&cfg, toml).unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let (_child, base) = spawn_monitor(&dsn, dir.path(), &[("QUOTA_PROXY_CONFIG", &cfg)]).await;

    let bursts = d.bursts(60, 120);
    let shared = d.shared_keys(2, 5);
    let crowded = d.crowded_ips(5);
    let expected: Vec<(String, String)> = bursts
        .iter()
        .map(|(k, _)| ("burst".to_owned(), format!("token:{k}")))
        .chain(
            shared
                .iter()
                .map(|(k, _, _)| ("multi_user_token".to_owned(), format!("token:{k}"))),
        )
        .chain(
            crowded
                .iter()
                .map(|(ip, _)| ("ip_many_users".to_owned(), format!("ip:{ip}"))),
        )
        .collect();
    assert!(expected.len() >= 3 && expected.len() < 10, "{expected:?}");
    let got = rx.wait_for(expected.len(), 30).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_all = rx.got();
    assert_eq!(got_all.len(), expected.len(), "{got:?}");
    let mut seen: Vec<(String, String)> = got_all
        .iter()
        .map(|r| {
            assert!(r.signature_ok);
            (
                r.body["rule"].as_str().unwrap().to_owned(),
                r.body["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(seen, want);
    // The history is in the monitor's own file; the key rules are not applicable here.
    let c = http_client();
    let r = c
        .get(format!("{base}/admin/alerts/channels"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (_, v) = status_json(r).await;
    let rules = v["rules"].as_array().unwrap();
    let applicable =
        |name: &str| rules.iter().find(|r| r["rule"] == name).unwrap()["applicable"].clone();
    assert_eq!(applicable("quota_low"), false);
    assert_eq!(applicable("upstream_down"), false);
    assert_eq!(applicable("burst"), true);
    let r = c
        .get(format!("{base}/admin/alerts"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let (_, v) = status_json(r).await;
    assert_eq!(v["total"], expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_seen_by_two_instances_on_one_database_is_announced_once() {
    let Some(url) = crate::instances::fresh_pg().await else {
        return;
    };
    let rx = Receiver::start().await;
    let chans = vec![hook_channel(&rx)];
    let tweak = |c: &mut Config| {
        alerting(c, chans.clone(), &[(RuleKind::Burst, BURST)]);
        c.database_url = Some(url.clone());
    };
    let a = spawn_app_with(tweak).await;
    let b = spawn_app_with(tweak).await;
    let (key, id) = a
        .create_key(json!({"name": "shared-burst", "quota": 100}))
        .await;
    calls(&a, &key, 4).await;
    calls(&b, &key, 4).await;
    rx.wait_for(1, 20).await;
    // Both instances keep evaluating every 200 ms over the shared log.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = rx.of("webhook");
    assert_eq!(got.len(), 1, "one announcement across both: {got:?}");
    assert_eq!(got[0].body["subject"], format!("token:{id}"));
    assert_eq!(
        got[0].body["details"]["request_count"], 8,
        "both instances' calls"
    );
    for app in [&a, &b] {
        assert_eq!(alerts_api(app, "").await["total"], 1, "one shared history");
    }
    a.stop().await;
    b.stop().await;
}
