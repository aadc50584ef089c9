use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_many_list_filter_get_patch_delete() {
    let app = spawn_app().await;
    let (s, v) = app
        .admin_post(
            "/admin/keys",
            json!({"prefix": "roc", "quota": 1000, "count": 5, "name": "trial",
                   "owner": {"userId": 7, "username": "张三"},
                   "limits": {"rpm": 60, "models": ["deepseek-*"]},
                   "metadata": {"team": "a"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 5);
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        assert!(k["key"].as_str().unwrap().starts_with("roc_"));
        assert_eq!(k["quota"], 1000);
        assert!(seen.insert(k["key"].as_str().unwrap().to_owned()));
    }
    let first = keys[0]["key"].as_str().unwrap().to_owned();
    let first_id = keys[0]["id"].as_i64().unwrap();

    let (s, v) = app.admin_get("/admin/keys?limit=2&offset=1").await;
    assert_eq!(s, 200);
    assert_eq!(v["total"], 5);
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);
    let listed = &v["keys"][0];
    assert!(
        listed.get("key").unwrap().as_str().unwrap().contains('…'),
        "list shows hints only"
    );
    assert_eq!(listed["owner"]["username"], "张三");
    assert_eq!(listed["limits"]["rpm"], 60);

    // Get by id and by full key; both the same record.
    let (s, by_id) = app.admin_get(&format!("/admin/keys/{first_id}")).await;
    assert_eq!(s, 200);
    let (_, by_key) = app.admin_get(&format!("/admin/keys/{first}")).await;
    assert_eq!(by_id, by_key);
    assert_eq!(by_id["status"], "active");
    assert_eq!(by_id["metadata"]["team"], "a");

    // Status filters.
    app.use_amount(&first, 1000).await;
    let (_, second) = (0, keys[1]["key"].as_str().unwrap().to_owned());
    app.admin_post("/admin/keys/disable", json!({"key": second}))
        .await;
    let (_, v) = app.admin_get("/admin/keys?status=exhausted").await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["keys"][0]["id"], first_id);
    let (_, v) = app.admin_get("/admin/keys?status=disabled").await;
    assert_eq!(v["total"], 1);
    let (_, v) = app.admin_get("/admin/keys?status=active").await;
    assert_eq!(v["total"], 3);
    let (_, v) = app.admin_get("/admin/keys?q=trial").await;
    assert_eq!(v["total"], 5);
    let (_, v) = app.admin_get("/admin/keys?q=nobody").await;
    assert_eq!(v["total"], 0);

    // Patch: quota raised, name and expiry changed, limits replaced.
    let r = app
        .client
        .patch(app.url(&format!("/admin/keys/{first_id}")))
        .bearer_auth(ADMIN)
        .json(
            &json!({"quota": 1500, "name": "renamed", "expiresAt": "2030-01-01",
                      "limits": {"dailyRequests": 10}}),
        )
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["quota"], 1500);
    assert_eq!(v["remaining"], 500);
    assert_eq!(v["name"], "renamed");
    assert_eq!(v["expiresAt"], "2030-01-01T23:59:59Z");
    assert_eq!(v["limits"], json!({"dailyRequests": 10}));
    let (s, v) = app.use_amount(&first, 500).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(0)));

    // Delete: the key stops working and is gone from the list.
    let r = app
        .client
        .delete(app.url(&format!("/admin/keys/{first_id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, _) = app.key_get(&first, "/api/v1/quota").await;
    assert_eq!(s, 401);
    let (s, _) = app.admin_get(&format!("/admin/keys/{first_id}")).await;
    assert_eq!(s, 404);
    let (_, v) = app.admin_get("/admin/keys").await;
    assert_eq!(v["total"], 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_disable_enable_rotate() {
    let app = spawn_app().await;
    let (key, id) = app.create_key(json!({"prefix": "roc", "quota": 10})).await;
    assert_eq!(app.use_amount(&key, 10).await.0, 200);
    assert_eq!(app.use_amount(&key, 1).await.0, 429);

    // The seed's reset: quota = newQuota, used = 0.
    let (s, v) = app
        .admin_post("/admin/keys/reset", json!({"key": key, "newQuota": 2000}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["quota"].clone(),
            v["used"].clone(),
            v["remaining"].clone()
        ),
        (json!(2000), json!(0), json!(2000))
    );
    let (s, v) = app.use_amount(&key, 1).await;
    assert_eq!((s, v["remaining"].clone()), (200, json!(1999)));

    // Disable by full key: 403 KEY_DISABLED; enable by id: works again.
    let (s, v) = app
        .admin_post("/admin/keys/disable", json!({"key": key}))
        .await;
    assert_eq!((s, v["enabled"].clone()), (200, json!(false)));
    let (s, v) = app.use_amount(&key, 1).await;
    assert_eq!((s, error_code(&v)), (403, "KEY_DISABLED"));
    let (s, v) = app.key_get(&key, "/api/v1/validate").await;
    assert_eq!(
        (s, v["valid"].clone(), v["reason"].clone()),
        (200, json!(false), json!("disabled"))
    );
    let (s, _) = app
        .admin_post("/admin/keys/enable", json!({"key": id.to_string()}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(app.use_amount(&key, 1).await.0, 200);

    // Rotate: same id, quota and history; old secret refused.
    let (_, before) = app
        .admin_get(&format!("/admin/usage/history?key={id}"))
        .await;
    let (s, v) = app
        .admin_post(&format!("/admin/keys/{id}/rotate"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let new_key = v["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(v["id"], id);
    let (s, v) = app.use_amount(&key, 1).await;
    assert_eq!((s, error_code(&v)), (401, "UNAUTHORIZED"));
    let q = app.quota(&new_key).await;
    assert_eq!(q["quota"], 2000);
    assert_eq!(q["used"], 2);
    let (_, after) = app
        .key_get(&new_key, "/api/v1/usage/history?limit=100")
        .await;
    assert_eq!(after["total"], before["total"]);
    // Two consumes and the reset, which an operator's change of used or quota leaves in
    // the key's history (amount 0) so the holder sees why the balance moved.
    assert_eq!(after["total"], 4);
    let resets: Vec<&Value> = after["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["metadata"]["admin"] == true)
        .collect();
    assert_eq!(resets.len(), 1, "{after}");
    assert_eq!(resets[0]["amount"], 0);
    assert_eq!(resets[0]["reason"], "key.reset");

    // Every write above is in the audit log with a token hint and the client IP.
    let (s, v) = app.admin_get("/admin/audit").await;
    assert_eq!(s, 200);
    let actions: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "key.rotate",
            "key.enable",
            "key.disable",
            "key.reset",
            "key.create"
        ]
    );
    let e = &v["entries"][0];
    assert_eq!(e["target"], id.to_string());
    assert_eq!(e["clientIp"], "127.0.0.1");
    let hint = e["tokenHint"].as_str().unwrap();
    assert!(hint.starts_with("admin#") && !hint.contains(ADMIN));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_summary_and_period_used() {
    let app = spawn_app().await;
    let day = 86_400_000i64;
    let day1 = quota_proxy::timefmt::parse_instant("2026-03-01T12:00:00Z", false).unwrap();
    app.clock.set_ms(day1);
    let (a, a_id) = app.create_key(json!({"quota": 100})).await;
    let (b, _) = app
        .create_key(json!({"quota": 50, "expiresAt": "2026-03-02T06:00:00Z"}))
        .await;
    let (_c, _) = app.create_key(json!({})).await;
    app.use_amount(&a, 10).await;
    app.use_amount(&b, 5).await;
    app.clock.set_ms(day1 + day); // 2026-03-02 12:00: b has expired
    app.use_amount(&a, 20).await;

    let (s, v) = app.admin_get("/admin/usage").await;
    assert_eq!(s, 200, "{v}");
    let sum = &v["summary"];
    assert_eq!(sum["totalKeys"], 3);
    assert_eq!(sum["totalQuota"], 150);
    assert_eq!(sum["totalUsed"], 35);
    assert_eq!(sum["totalRemaining"], 115);
    assert_eq!(sum["activeKeys"], 2);
    assert_eq!(sum["expiredKeys"], 1);

    // The seed's GET with a JSON body; endDate is inclusive of that day.
    let r = app
        .client
        .get(app.url("/admin/usage"))
        .bearer_auth(ADMIN)
        .header("Content-Type", "application/json")
        .body(r#"{"startDate": "2026-03-02", "endDate": "2026-03-02"}"#)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 200, "{v}");
    let da = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == a_id)
        .unwrap()
        .clone();
    assert_eq!(da["used"], 30);
    assert_eq!(da["remaining"], 70);
    assert_eq!(da["periodUsed"], 20);
    let (_, v) = app
        .admin_get("/admin/usage?startDate=2026-03-01&endDate=2026-03-01")
        .await;
    let periods: Vec<i64> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["periodUsed"].as_i64().unwrap())
        .collect();
    assert_eq!(periods, [10, 5, 0]);
    app.stop().await;
}

/// Behind a trusted reverse proxy the audit log records the client the proxy names, as the
/// gateway's request log does; an untrusted peer cannot pretend. Every answer carries a
/// request id.
#[tokio::test]
async fn audit_ip_honours_trusted_proxies_and_every_answer_has_a_request_id() {
    let write = |app: &TestApp| {
        app.client
            .post(app.url("/admin/keys"))
            .bearer_auth(ADMIN)
            .header("x-forwarded-for", "203.0.113.9")
            .json(&serde_json::json!({"quota": 1}))
            .send()
    };
    let app =
        spawn_app_with(|c| c.gateway.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    assert_eq!(write(&app).await.unwrap().status().as_u16(), 200);
    let (_, v) = app.admin_get("/admin/audit").await;
    assert_eq!(v["entries"][0]["clientIp"], "203.0.113.9");
    for path in [
        "/healthz",
        "/api/stats/summary",
        "/admin/keys",
        "/nope",
        "/",
    ] {
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let id = r
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            id.is_some_and(|i| i.starts_with("req_") && i.len() == 28),
            "{path}"
        );
    }
    app.stop().await;

    let app = spawn_app().await;
    assert_eq!(write(&app).await.unwrap().status().as_u16(), 200);
    let (_, v) = app.admin_get("/admin/audit").await;
    assert_eq!(
        v["entries"][0]["clientIp"], "127.0.0.1",
        "an untrusted peer cannot name another client"
    );
    app.stop().await;
}
