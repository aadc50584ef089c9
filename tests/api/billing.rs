//! Billing that reproduces the upstream's invoice: every usage shape read into its classes
//! and charged exactly in money mode, peak and off-peak prices by the injected clock, holds
//! that no token limit or `n` can beat, and no overdraft under concurrency.

use std::sync::Arc;
use std::time::Duration;

use quota_proxy::billing::config::{BillingFile, billing};
use quota_proxy::gateway::endpoint::Protocol;
use quota_proxy::gateway::settings::UpstreamSettings;
use serde_json::{Value, json};

use crate::gateway::http_upstream;
use crate::helpers::*;
use crate::upstream_mock::MockUpstream;

/// The money configuration of these tests: CNY, no shipped defaults, `m-*` at ¥2 input,
/// ¥0.5 cached, ¥2.5 cache write, ¥8 output per 1 M tokens, doubled 09:00–12:00 Beijing time
/// on weekdays.
const MONEY: &str = r#"
    mode = "money"
    currency = "CNY"
    defaults = false
    [prices."m-*"]
    input = "2"
    cached_input = 0.5
    cache_write = "2.5"
    output = 8
    [[windows]]
    name = "peak"
    tz = "Asia/Shanghai"
    days = ["mon-fri"]
    hours = ["09:00-12:00"]
    factor = 2
"#;

/// Micros per 1 M tokens of each class, as configured above (off-peak).
const PRICES: [i128; 4] = [2_000_000, 500_000, 2_500_000, 8_000_000];

/// 2026-12-02 (a Wednesday) 20:00 and 10:00 Beijing time.
const OFF_PEAK_MS: i64 = 1_796_212_800_000;
const PEAK_MS: i64 = OFF_PEAK_MS - 10 * 3_600_000;

/// The hand computation: Σ class tokens × price, divided by 1 M once, rounded down.
fn expected(classes: [i128; 4], factor: i128) -> i64 {
    let sum: i128 = classes
        .iter()
        .zip(PRICES)
        .map(|(n, p)| n * p * factor)
        .sum();
    (sum / 1_000_000) as i64
}

fn micros(v: &Value) -> i64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}"));
    quota_proxy::billing::money::parse_decimal(s).unwrap()
}

fn upstreams(up: &MockUpstream) -> Vec<UpstreamSettings> {
    let root = up.url.trim_end_matches("/v1").to_owned();
    let mut chat = http_upstream("chatup", &up.url, "sk-chat");
    chat.models = vec!["m-chat".into(), "gpt-x".into()];
    let mut anth = http_upstream("anth", &root, "sk-anth");
    anth.protocols = vec![Protocol::Messages];
    anth.models = vec!["m-anth".into()];
    let mut resp = http_upstream("resp", &up.url, "sk-resp");
    resp.protocols = vec![Protocol::Chat, Protocol::Responses];
    resp.models = vec!["m-resp".into()];
    vec![chat, anth, resp]
}

async fn money_app(up: &MockUpstream) -> TestApp {
    money_app_in(up, "CNY").await
}

async fn money_app_in(up: &MockUpstream, currency: &str) -> TestApp {
    let file: BillingFile =
        toml::from_str(&MONEY.replace("\"CNY\"", &format!("{currency:?}"))).unwrap();
    let ups = upstreams(up);
    let app = spawn_app_with(move |c| {
        c.gateway.upstreams = ups;
        c.gateway.billing = billing(Some(file)).unwrap();
    })
    .await;
    app.clock.set_ms(OFF_PEAK_MS);
    app
}

/// Tokens mode at one point a token, prompt and completion.
async fn tokens_app(up: &MockUpstream) -> TestApp {
    let file: BillingFile = toml::from_str(
        "mode = \"tokens\"\ndefault_price = { prompt = 1000.0, completion = 1000.0 }",
    )
    .unwrap();
    let ups = upstreams(up);
    spawn_app_with(move |c| {
        c.gateway.upstreams = ups;
        c.gateway.billing = billing(Some(file)).unwrap();
    })
    .await
}

async fn call(app: &TestApp, key: &str, path: &str, body: Value) -> (u16, String) {
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Sends the bodies at once on `key`; how many were served (the others must be 429).
async fn concurrently(app: &Arc<TestApp>, key: &str, bodies: Vec<Value>) -> i64 {
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (app, key) = (app.clone(), key.to_owned());
            tokio::spawn(async move { call(&app, &key, "/v1/chat/completions", body).await.0 })
        })
        .collect();
    let mut served = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => served += 1,
            429 => {}
            s => panic!("unexpected {s}"),
        }
    }
    served
}

/// The newest request-log row once there are `n`.
async fn newest(app: &TestApp, n: usize) -> Value {
    for _ in 0..200 {
        let (_, v) = app.admin_get("/admin/requests?limit=1000").await;
        let rows = v["requests"].as_array().unwrap();
        if rows.len() >= n {
            return rows[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the request log did not reach {n} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_usage_shape_is_charged_to_the_sub_unit() {
    let up = MockUpstream::start().await;
    let app = money_app(&up).await;
    let (s, v) = app
        .admin_post("/admin/keys", json!({"quota": "10.00"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["quota"], "10.00", "money mode answers decimal strings");
    let key = v["key"].as_str().unwrap().to_owned();

    let chat = |stream: bool| {
        json!({"model": "m-chat", "stream": stream, "max_tokens": 400,
        "messages": [{"role": "user", "content": "price me"}]})
    };
    let msgs = |stream: bool| {
        json!({"model": "m-anth", "stream": stream, "max_tokens": 400,
        "messages": [{"role": "user", "content": "price me"}]})
    };
    let resp = |stream: bool| {
        json!({"model": "m-resp", "stream": stream,
        "max_output_tokens": 400, "input": "price me"})
    };
    // (endpoint, body, usage as the upstream reports it, [input, cached, write, output], reasoning)
    let deepseek = json!({"prompt_tokens": 1001, "completion_tokens": 333,
        "prompt_cache_hit_tokens": 700, "prompt_cache_miss_tokens": 301,
        "completion_tokens_details": {"reasoning_tokens": 100}});
    let openai = json!({"prompt_tokens": 500, "completion_tokens": 77,
        "prompt_tokens_details": {"cached_tokens": 123},
        "completion_tokens_details": {"reasoning_tokens": 7}});
    let anthropic = json!({"input_tokens": 11, "cache_read_input_tokens": 901,
        "cache_creation_input_tokens": 333, "output_tokens": 45});
    let responses = json!({"input_tokens": 641, "input_tokens_details": {"cached_tokens": 601},
        "output_tokens": 99, "output_tokens_details": {"reasoning_tokens": 50}, "total_tokens": 740});
    let cases = [
        (
            "/v1/chat/completions",
            chat(false),
            deepseek.clone(),
            [301, 700, 0, 333],
            100,
        ),
        (
            "/v1/chat/completions",
            chat(true),
            deepseek,
            [301, 700, 0, 333],
            100,
        ),
        (
            "/v1/chat/completions",
            chat(true),
            openai.clone(),
            [377, 123, 0, 77],
            7,
        ),
        (
            "/v1/chat/completions",
            chat(false),
            openai,
            [377, 123, 0, 77],
            7,
        ),
        (
            "/v1/messages",
            msgs(false),
            anthropic.clone(),
            [11, 901, 333, 45],
            0,
        ),
        ("/v1/messages", msgs(true), anthropic, [11, 901, 333, 45], 0),
        (
            "/v1/responses",
            resp(false),
            responses.clone(),
            [40, 601, 0, 99],
            50,
        ),
        ("/v1/responses", resp(true), responses, [40, 601, 0, 99], 50),
    ];
    let mut total = 0;
    for (i, (path, body, usage, classes, reasoning)) in cases.into_iter().enumerate() {
        *up.state.usage.lock().unwrap() = Some(usage.clone());
        let (s, text) = call(&app, &key, path, body).await;
        assert_eq!(s, 200, "{path}: {text}");
        let row = newest(&app, i + 1).await;
        let [input, cached, write, output] = classes;
        let what = format!("{path} {usage}: {row}");
        assert_eq!(row["promptTokens"], input + cached + write, "{what}");
        assert_eq!(row["cachedTokens"], cached, "{what}");
        assert_eq!(row["cacheWriteTokens"], write, "{what}");
        assert_eq!(row["completionTokens"], output, "{what}");
        assert_eq!(row["reasoningTokens"], reasoning, "{what}");
        assert_eq!(row["estimated"], false, "{what}");
        let cost = expected(classes.map(i128::from), 1);
        assert_eq!(micros(&row["cost"]), cost, "{what}");
        total += cost;
    }
    // The key was charged exactly the sum, shown as money.
    let q = app.quota(&key).await;
    assert_eq!(micros(&q["used"]), total, "{q}");
    assert_eq!(micros(&q["remaining"]), 10_000_000 - total, "{q}");
    // Over the native log the monitor's quota_sum is this cost, in micros; no dollar figure
    // for a CNY deployment.
    let sum = summary(&app, 8).await;
    assert_eq!(sum["quota_sum"], total, "{sum}");
    assert!(sum.get("quota_usd").is_none(), "{sum}");
    app.stop().await;
}

/// The monitor's summary over the test window once it counts `n` calls.
async fn summary(app: &TestApp, n: i64) -> Value {
    let q = format!(
        "/api/stats/summary?nocache=1&start_ms={}&end_ms={}",
        OFF_PEAK_MS - 3_600_000,
        OFF_PEAK_MS + 3_600_000
    );
    let mut sum = Value::Null;
    for _ in 0..200 {
        sum = app.admin_get(&q).await.1;
        if sum["reqs"] == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sum["reqs"], n, "{sum}");
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usd_deployment_reports_its_cost_in_dollars_to_the_monitor() {
    let up = MockUpstream::start().await;
    let app = money_app_in(&up, "USD").await;
    let (s, v) = app.admin_post("/admin/keys", json!({"quota": "5"})).await;
    assert_eq!((s, &v["quota"]), (200, &json!("5.00")), "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    *up.state.usage.lock().unwrap() =
        Some(json!({"prompt_tokens": 1234, "completion_tokens": 567}));
    let body = json!({"model": "m-chat", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(call(&app, &key, "/v1/chat/completions", body).await.0, 200);
    let cost = expected([1234, 0, 0, 567], 1);
    let sum = summary(&app, 1).await;
    assert_eq!(sum["quota_sum"], cost, "{sum}");
    assert_eq!(sum["quota_usd"], json!(cost as f64 / 1e6), "{sum}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_hours_cost_double_and_an_unpriced_model_is_refused() {
    let up = MockUpstream::start().await;
    let app = money_app(&up).await;
    let (key, _) = app.create_key(json!({"quota": "1"})).await;
    *up.state.usage.lock().unwrap() =
        Some(json!({"prompt_tokens": 1000, "completion_tokens": 1000}));
    let body = json!({"model": "m-chat", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}]});
    let (s, _) = call(&app, &key, "/v1/chat/completions", body.clone()).await;
    assert_eq!(s, 200);
    let off = micros(&newest(&app, 1).await["cost"]);
    assert_eq!(off, expected([1000, 0, 0, 1000], 1));
    let (_, prices) = app.admin_get("/admin/prices").await;
    assert_eq!(prices["windows"][0]["active"], false, "{prices}");

    app.clock.set_ms(PEAK_MS);
    let (s, _) = call(&app, &key, "/v1/chat/completions", body).await;
    assert_eq!(s, 200);
    let peak = micros(&newest(&app, 2).await["cost"]);
    assert_eq!(peak, 2 * off, "the peak window doubles every price");

    let (s, prices) = app.admin_get("/admin/prices").await;
    assert_eq!(s, 200);
    assert_eq!(prices["mode"], "money");
    assert_eq!(prices["currency"], "CNY");
    assert_eq!(prices["prices"][0]["model"], "m-*");
    assert_eq!(prices["prices"][0]["input"], "2.00");
    assert_eq!(prices["prices"][0]["cachedInput"], "0.50");
    assert_eq!(prices["prices"][0]["source"], "config");
    assert_eq!(prices["windows"][0]["name"], "peak");
    assert_eq!(
        prices["defaultsSource"],
        Value::Null,
        "defaults = false: {prices}"
    );
    assert_eq!(prices["windows"][0]["active"], true, "{prices}");

    // A model the table does not price is refused before any upstream: never free.
    let hits = up.hits();
    let (s, text) = call(
        &app,
        &key,
        "/v1/chat/completions",
        json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 403, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error_code(&v), "model_not_priced", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));
    assert_eq!(up.hits(), hits, "nothing reached an upstream");
    let q = app.quota(&key).await;
    assert_eq!(micros(&q["used"]), off + peak, "the refusal cost nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limits_and_n_cannot_beat_the_hold() {
    let up = MockUpstream::start().await;
    // Tokens mode at one point a token, the issue's reproduction.
    let app = tokens_app(&up).await;
    let (key, _) = app.create_key(json!({"quota": 2000})).await;
    let msg = json!([{"role": "user", "content": "hi"}]);
    for (field, bad) in [
        ("max_tokens", json!(50_000_000.0)),
        ("max_tokens", json!("500")),
        ("max_tokens", json!(20.5)),
        ("max_completion_tokens", json!(-1)),
        ("n", json!(10.5)),
        ("n", json!("10")),
    ] {
        let mut body = json!({"model": "m-chat", "messages": msg});
        body[field] = bad.clone();
        let (s, text) = call(&app, &key, "/v1/chat/completions", body).await;
        assert_eq!(s, 400, "{field}={bad}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["param"], field, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(field));
    }
    let (s, text) = call(
        &app,
        &key,
        "/v1/responses",
        json!({"model": "m-resp", "input": "x", "max_output_tokens": 1e9}),
    )
    .await;
    assert_eq!(s, 400, "{text}");
    assert_eq!(up.hits(), 0, "no refused call reached an upstream");

    // 32 concurrent n = 10 calls; the upstream serves 20 tokens per choice, as asked, and
    // counts the prompt as the gateway estimates it (5), so each call costs its hold.
    *up.state.usage.lock().unwrap() = Some(json!({"prompt_tokens": 5, "completion_tokens": 200}));
    let app = Arc::new(app);
    let body = json!({"model": "m-chat", "n": 10, "max_tokens": 20, "messages": msg});
    let served = concurrently(&app, &key, vec![body; 32]).await;
    let q = app.quota(&key).await;
    let used = q["used"].as_i64().unwrap();
    assert!(used <= 2000, "used {used} of 2000");
    assert_eq!(
        used,
        served * 205,
        "every served call charged what it served"
    );
    assert!(served < 32, "the hold counted n: {served} served");

    // An upstream that answers past max_tokens: charged what it served, within what is
    // left, and counted.
    let before = metrics_text(&app).await;
    *up.state.usage.lock().unwrap() = Some(json!({"prompt_tokens": 8, "completion_tokens": 5000}));
    let (key2, _) = app.create_key(json!({"quota": 3000})).await;
    let (s, _) = call(
        &app,
        &key2,
        "/v1/chat/completions",
        json!({"model": "m-chat", "max_tokens": 5, "messages": msg}),
    )
    .await;
    assert_eq!(s, 200);
    let q = app.quota(&key2).await;
    assert_eq!(q["used"], 3000, "clamped to the key's quota: {q}");
    assert_eq!(q["remaining"], 0);
    // Its request-log row says what was charged, not what the tokens would have cost.
    let rows = loop {
        let (_, v) = app.admin_get("/admin/requests?limit=1000").await;
        let mine: Vec<Value> = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["completionTokens"] == 5000)
            .cloned()
            .collect();
        if !mine.is_empty() {
            break mine;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["cost"], 3000, "{rows:?}");
    let count = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("qp_gateway_overruns_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count(&metrics_text(&app).await) > count(&before),
        "overrun counted"
    );
    Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_overdraw_a_money_key() {
    let up = MockUpstream::start().await;
    let app = Arc::new(money_app(&up).await);
    // Each call: 5 prompt + 1 000 output tokens = ¥0.00801 (its hold); the key holds ¥0.05.
    *up.state.usage.lock().unwrap() = Some(json!({"prompt_tokens": 5, "completion_tokens": 1000}));
    let (key, _) = app.create_key(json!({"quota": "0.05"})).await;
    let bodies = (0..24)
        .map(|i| {
            json!({"model": "m-chat", "max_tokens": 1000, "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": "go"}]})
        })
        .collect();
    let served = concurrently(&app, &key, bodies).await;
    let cost = expected([5, 0, 0, 1000], 1);
    let q = app.quota(&key).await;
    let used = micros(&q["used"]);
    assert!(used <= 50_000, "never past the balance: {q}");
    assert_eq!(used, served * cost, "{served} served: {q}");
    assert!(served >= 1 && served <= 50_000 / cost, "{served}");
    assert!(micros(&q["remaining"]) >= 0);
    Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_money_classes_and_the_price_table() {
    let Some(b) = crate::browser::Browser::start().await else {
        return;
    };
    let up = MockUpstream::start().await;
    let app = money_app(&up).await;
    let (key, _) = app
        .create_key(json!({"quota": "10.00", "name": "trial"}))
        .await;
    *up.state.usage.lock().unwrap() = Some(json!({"prompt_tokens": 1001, "completion_tokens": 333,
        "prompt_cache_hit_tokens": 700, "prompt_cache_miss_tokens": 301,
        "completion_tokens_details": {"reasoning_tokens": 100}}));
    let body = json!({"model": "m-chat", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(call(&app, &key, "/v1/chat/completions", body).await.0, 200);
    let cost = newest(&app, 1).await["cost"].as_str().unwrap().to_owned();

    b.goto(&app.url("/")).await;
    b.ready().await;
    b.login(ADMIN).await;
    b.goto(&app.url("/#/prices")).await;
    b.ready().await;
    let table = b.text("#prices-table").await;
    assert!(
        table.contains("m-*") && table.contains("2.00") && table.contains("0.50"),
        "{table}"
    );
    assert!(b.text("#price-windows").await.contains("peak"));
    assert_eq!(b.text("[data-nav=prices]").await, "价格");
    b.screenshot("prices-zh").await;

    // The monitor over our log: the cost as money, on the overview and ranked by cost.
    let (from, to) = (OFF_PEAK_MS - 3_600_000, OFF_PEAK_MS + 3_600_000);
    let sum = summary(&app, 1).await;
    let (s, top) = app
        .admin_get(&format!(
            "/api/stats/top?by=token&metric=cost&start_ms={from}&end_ms={to}"
        ))
        .await;
    assert_eq!(s, 200, "{top}");
    assert_eq!(top["data"][0]["quota_sum"], sum["quota_sum"], "{top}");
    assert_eq!(micros(&json!(cost)), sum["quota_sum"].as_i64().unwrap());
    b.goto(&app.url(&format!("/#/overview?from={from}&to={to}")))
        .await;
    b.ready().await;
    let kpi = b.text("[data-kpi=quota_sum]").await;
    assert!(
        kpi.contains("费用") && kpi.contains(&format!("¥{cost}")),
        "{kpi}"
    );
    b.goto(&app.url(&format!(
        "/#/rankings?by=token&metric=quota_sum&from={from}&to={to}"
    )))
    .await;
    b.ready().await;
    let ranked = b.text("#rank-table").await;
    assert!(ranked.contains(&format!("¥{cost}")), "{ranked}");
    b.screenshot("rankings-money-zh").await;

    b.goto(&app.url("/#/requests")).await;
    b.ready().await;
    let rows = b.text("#requests-table").await;
    assert!(
        rows.contains(&format!("¥{cost}")),
        "cost with its symbol: {rows}"
    );
    assert!(
        rows.contains("缓存命中 700") && rows.contains("推理 100"),
        "{rows}"
    );
    b.screenshot("requests-money-zh").await;

    b.goto(&app.url("/#/keys")).await;
    b.ready().await;
    let keys = b.text("#keys-table").await;
    assert!(keys.contains("¥10.00"), "{keys}");

    // On a phone the price table scrolls inside its card; the page's content does not
    // overflow (the header's own phone layout is the console issue's).
    b.resize(390, 844).await;
    b.goto(&app.url("/#/prices")).await;
    b.ready().await;
    let main_width = b
        .js("return document.getElementById('main').scrollWidth")
        .await;
    let view_width = b.js("return document.documentElement.clientWidth").await;
    b.screenshot("prices-zh-390").await;
    assert!(
        main_width.as_i64() <= view_width.as_i64(),
        "{main_width} > {view_width}"
    );
    b.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_and_alerts_speak_money() {
    use quota_proxy::alerts::settings::RuleKind;
    let rx = crate::alert_receiver::Receiver::start().await;
    let hook = vec![crate::alerts::hook_channel(&rx)];
    let up = MockUpstream::start().await;
    let file: BillingFile = toml::from_str(MONEY).unwrap();
    let ups = upstreams(&up);
    let app = spawn_app_with(move |c| {
        c.gateway.upstreams = ups;
        c.gateway.billing = billing(Some(file)).unwrap();
        crate::alerts::alerting(c, hook, &[(RuleKind::QuotaLow, &[])]);
    })
    .await;
    let (key, _) = app.create_key(json!({"quota": "1.00"})).await;
    // The quota API takes and answers amounts of the currency.
    let (s, v) = app
        .key_post(
            &key,
            "/api/v1/use",
            json!({"amount": "0.85", "reason": "manual"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["amountUsed"], "0.85");
    assert_eq!(v["remaining"], "0.15");
    let (s, v) = app
        .key_post(&key, "/api/v1/use", json!({"amount": "0.0000001"}))
        .await;
    assert_eq!(s, 400, "more than six places: {v}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let alert = loop {
        if let Some(r) = rx.got().into_iter().find(|r| r.body["rule"] == "quota_low") {
            break r.body;
        }
        assert!(std::time::Instant::now() < deadline, "no quota_low alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines = alert["lines"].to_string();
    assert!(
        lines.contains("¥0.15") && lines.contains("¥1.00"),
        "{lines}"
    );
    app.stop().await;
}

/// An agent's hold covers its whole prompt: Claude Code's `system` and tool results, Codex's
/// `instructions` and input items. A key without room for them is refused before any
/// upstream; before, only the messages' text was counted and such a call was served past
/// the key's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_whole_prompt_is_held() {
    let up = MockUpstream::start().await;
    let app = tokens_app(&up).await;
    let (key, _) = app.create_key(json!({"quota": 500})).await;
    // 4 000 ASCII characters: ~1 000 tokens by the estimate, twice the key's quota.
    let big = "x".repeat(4000);
    let user = json!([{"role": "user", "content": "hi"}]);
    let refused = [
        (
            "/v1/messages",
            json!({"model": "m-anth", "max_tokens": 16, "system": big, "messages": user}),
        ),
        (
            "/v1/messages",
            json!({"model": "m-anth", "max_tokens": 16, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": big}]}]}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "m-resp", "max_output_tokens": 16, "input": "hi", "instructions": big}),
        ),
        (
            "/v1/responses",
            json!({"model": "m-resp", "max_output_tokens": 16, "input": [
                {"type": "function_call_output", "call_id": "c", "output": big}]}),
        ),
    ];
    for (i, (path, body)) in refused.into_iter().enumerate() {
        let (s, text) = call(&app, &key, path, body).await;
        assert_eq!(s, 429, "{path}, body {i}: {text}");
    }
    assert_eq!(up.hits(), 0, "no refused call reached an upstream");
    assert_eq!(app.quota(&key).await["used"], 0);
    // The same calls with a short prompt fit, and are served.
    for (path, body) in [
        (
            "/v1/messages",
            json!({"model": "m-anth", "max_tokens": 16, "system": "be brief", "messages": user}),
        ),
        (
            "/v1/responses",
            json!({"model": "m-resp", "max_output_tokens": 16, "input": "hi", "instructions": "be brief"}),
        ),
    ] {
        let (s, text) = call(&app, &key, path, body).await;
        assert_eq!(s, 200, "{path}: {text}");
    }
    app.stop().await;
}
