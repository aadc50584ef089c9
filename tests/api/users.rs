//! Users and teams (issue #25): records with budgets that every key of the user (and every
//! user of the team) draws from as well as the key's own; exact under concurrency on SQLite
//! and across two instances on PostgreSQL; today's owners migrated to users.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};

use crate::helpers::*;

async fn patch(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .patch(app.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    status_json(r).await
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .delete(app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    status_json(r).await
}

/// Runs `n` requests at most `width` at a time; the answers in order of completion.
async fn burst(
    n: usize,
    width: usize,
    req: impl Fn(usize) -> reqwest::RequestBuilder,
) -> Vec<(u16, Value)> {
    let mut out = Vec::with_capacity(n);
    let mut running = FuturesUnordered::new();
    for i in 0..n {
        let r = req(i);
        running.push(async move { status_json(r.send().await.unwrap()).await });
        if running.len() >= width
            && let Some(x) = running.next().await
        {
            out.push(x);
        }
    }
    while let Some(x) = running.next().await {
        out.push(x);
    }
    out
}

fn ok_count(res: &[(u16, Value)]) -> usize {
    res.iter().filter(|(s, _)| *s == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_teams_are_records_with_budgets_keys_and_a_clear_error_for_every_mistake() {
    let app = spawn_app().await;
    let (s, team) = app
        .admin_post("/admin/teams", json!({"name": "Team A", "quota": 100}))
        .await;
    assert_eq!(s, 201, "{team}");
    let tid = team["id"].as_i64().unwrap();
    let (s, user) = app
        .admin_post(
            "/admin/users",
            json!({"name": "alice", "contact": "alice@example.com", "quota": 40,
                   "teamId": tid, "metadata": {"dept": "R&D"}, "limits": {"rpm": 100}}),
        )
        .await;
    assert_eq!(s, 201, "{user}");
    let uid = user["id"].as_i64().unwrap();
    assert_eq!(user["kind"], "user");
    assert_eq!(
        (user["quota"].as_i64(), user["remaining"].as_i64()),
        (Some(40), Some(40))
    );
    assert_eq!(user["teamName"], "Team A");

    // Keys take `userId`; their consumes show on the user.
    let (k1, _) = app.create_key(json!({"quota": 30, "userId": uid})).await;
    let (k2, _) = app.create_key(json!({"userId": uid})).await;
    assert_eq!(app.use_amount(&k1, 10).await.0, 200);
    assert_eq!(app.use_amount(&k2, 5).await.0, 200);
    let (_, u) = app.admin_get(&format!("/admin/users/{uid}")).await;
    assert_eq!(
        (u["used"].as_i64(), u["remaining"].as_i64()),
        (Some(15), Some(25)),
        "{u}"
    );
    assert_eq!(u["keys"].as_array().unwrap().len(), 2);
    assert_eq!(u["members"], 2);
    assert_eq!(u["usage"][0]["amount"], 15, "{u}");
    let (_, t) = app.admin_get(&format!("/admin/teams/{tid}")).await;
    assert_eq!(
        (t["used"].as_i64(), t["remaining"].as_i64()),
        (Some(15), Some(85))
    );
    assert_eq!(t["users"][0]["name"], "alice");
    let (_, key) = app.admin_get("/admin/keys?q=alice").await;
    assert_eq!(key["total"], 2, "a key is found by its user's name");
    assert_eq!(key["keys"][0]["userId"], uid);

    // A rename reaches the keys' owner (the monitor's user dimension reads it).
    let (s, _) = patch(
        &app,
        &format!("/admin/users/{uid}"),
        json!({"name": "alice2"}),
    )
    .await;
    assert_eq!(s, 200);
    let (_, key) = app.admin_get("/admin/keys?q=alice2").await;
    assert_eq!(key["keys"][0]["owner"]["username"], "alice2");

    // The seed API answers as before; when the user's budget refuses, it says so.
    let (s, v) = app.use_amount(&k1, 20).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app.use_amount(&k2, 6).await;
    assert_eq!((s, error_code(&v)), (429, "QUOTA_EXCEEDED"));
    assert!(v.to_string().contains("用户预算剩余：5"), "{v}");
    // The key's own balance is unchanged by the refusal (it is unlimited).
    assert_eq!(app.quota(&k2).await["used"], 5);

    // Mistakes in the documented shape.
    let cases = [
        (
            "/admin/users",
            json!({"name": "x", "teamId": 999_999}),
            400,
            "INVALID_REQUEST",
        ),
        (
            "/admin/users",
            json!({"name": "alice2"}),
            409,
            "USER_EXISTS",
        ),
        ("/admin/users", json!({"name": ""}), 400, "INVALID_REQUEST"),
        (
            "/admin/users",
            json!({"name": "y", "quotaa": 1}),
            400,
            "INVALID_REQUEST",
        ),
        (
            "/admin/teams",
            json!({"name": "Team A"}),
            409,
            "TEAM_EXISTS",
        ),
        (
            "/admin/teams",
            json!({"name": "t", "teamId": 1}),
            400,
            "INVALID_REQUEST",
        ),
        (
            "/admin/users",
            json!({"name": "m", "limits": {"models": ["x"]}}),
            400,
            "INVALID_REQUEST",
        ),
        (
            "/admin/keys",
            json!({"userId": 999_999}),
            400,
            "INVALID_REQUEST",
        ),
        (
            "/admin/keys",
            json!({"userId": uid, "owner": {"username": "z"}}),
            400,
            "INVALID_REQUEST",
        ),
    ];
    for (path, body, status, code) in cases {
        let (s, v) = app.admin_post(path, body.clone()).await;
        assert_eq!((s, error_code(&v)), (status, code), "{path} {body}: {v}");
    }
    let (s, v) = app.admin_get("/admin/users/999999").await;
    assert_eq!((s, error_code(&v)), (404, "USER_NOT_FOUND"));
    let (s, v) = app.admin_get(&format!("/admin/teams/{uid}")).await;
    assert_eq!(
        (s, error_code(&v)),
        (404, "TEAM_NOT_FOUND"),
        "a user is not a team"
    );
    let (s, v) = delete(&app, &format!("/admin/users/{uid}")).await;
    assert_eq!((s, error_code(&v)), (409, "USER_IN_USE"));
    let (s, v) = delete(&app, &format!("/admin/teams/{tid}")).await;
    assert_eq!((s, error_code(&v)), (409, "TEAM_IN_USE"));

    // Disabling the user stops all its keys, in the seed's code, naming why.
    let (s, _) = patch(
        &app,
        &format!("/admin/users/{uid}"),
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = app.use_amount(&k2, 1).await;
    assert_eq!((s, error_code(&v)), (403, "KEY_DISABLED"), "{v}");
    assert!(v.to_string().contains("所属用户已被停用"), "{v}");
    let r = app.mock_chat(&k2).await;
    assert_eq!(r.status().as_u16(), 403);

    // Moving the keys away frees the user for deletion; the audit has every step.
    let (_, keys) = app.admin_get("/admin/keys?q=alice2").await;
    for k in keys["keys"].as_array().unwrap() {
        let (s, v) = patch(
            &app,
            &format!("/admin/keys/{}", k["id"]),
            json!({"userId": null}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["userId"], Value::Null);
    }
    assert_eq!(
        app.use_amount(&k2, 1).await.0,
        200,
        "no user, no user budget"
    );
    let (s, _) = delete(&app, &format!("/admin/users/{uid}")).await;
    assert_eq!(s, 200);
    let (s, _) = delete(&app, &format!("/admin/teams/{tid}")).await;
    assert_eq!(s, 200);
    let (_, a) = app.admin_get("/admin/audit?action=user.").await;
    let actions: Vec<&str> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in ["user.create", "user.update", "user.delete"] {
        assert!(actions.contains(&want), "{actions:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_of_one_user_never_overdraw_it_under_concurrent_consumes_and_gateway_calls() {
    let app = spawn_app().await;
    let (_, user) = app
        .admin_post("/admin/users", json!({"name": "shared", "quota": 50}))
        .await;
    let uid = user["id"].as_i64().unwrap();
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(app.create_key(json!({"quota": 100, "userId": uid})).await.0);
    }
    let res = burst(200, 64, |i| {
        app.client
            .post(app.url("/api/v1/use"))
            .header("X-API-Key", &keys[i % 4])
            .json(&json!({"amount": 1}))
    })
    .await;
    assert_eq!(ok_count(&res), 50, "{:?}", &res[..2]);
    for (s, v) in res.iter().filter(|(s, _)| *s != 200) {
        assert_eq!((*s, error_code(v)), (429, "QUOTA_EXCEEDED"), "{v}");
    }
    let mut key_used = 0;
    for k in &keys {
        key_used += app.quota(k).await["used"].as_i64().unwrap();
    }
    assert_eq!(key_used, 50);
    let (_, u) = app.admin_get(&format!("/admin/users/{uid}")).await;
    assert_eq!(
        (u["used"].as_i64(), u["remaining"].as_i64()),
        (Some(50), Some(0))
    );

    // Gateway calls: a user worth 30 calls across 3 keys serves exactly 30, refused before
    // any upstream is asked, and every served call is charged to the key and the user.
    let (_, user) = app
        .admin_post("/admin/users", json!({"name": "gw", "quota": 30}))
        .await;
    let uid = user["id"].as_i64().unwrap();
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(app.create_key(json!({"userId": uid})).await.0);
    }
    let body = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    let res = burst(90, 32, |i| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&keys[i % 3])
            .json(&body)
    })
    .await;
    assert_eq!(ok_count(&res), 30, "{:?}", &res[..2]);
    let refused = res.iter().find(|(s, _)| *s == 429).unwrap();
    assert_eq!(
        refused.1["error"]["code"], "insufficient_quota",
        "{}",
        refused.1
    );
    let mut used = 0;
    for _ in 0..100 {
        let (_, u) = app.admin_get(&format!("/admin/users/{uid}")).await;
        used = u["used"].as_i64().unwrap();
        if used == 30 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(used, 30);
    let mut key_used = 0;
    for k in &keys {
        key_used += app.quota(k).await["used"].as_i64().unwrap();
    }
    assert_eq!(key_used, 30);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_budget_is_shared_by_its_users_each_capped_by_their_own() {
    let app = spawn_app().await;
    let (_, team) = app
        .admin_post("/admin/teams", json!({"name": "squad", "quota": 10}))
        .await;
    let tid = team["id"].as_i64().unwrap();
    let (_, a) = app
        .admin_post("/admin/users", json!({"name": "a", "teamId": tid}))
        .await;
    let (_, b) = app
        .admin_post(
            "/admin/users",
            json!({"name": "b", "quota": 3, "teamId": tid}),
        )
        .await;
    let (ka, _) = app.create_key(json!({"userId": a["id"]})).await;
    let (kb, _) = app.create_key(json!({"userId": b["id"]})).await;
    // b stops at its own 3; a takes the rest of the team's 10.
    let use_on = |key: &str| {
        app.client
            .post(app.url("/api/v1/use"))
            .header("X-API-Key", key)
            .json(&json!({"amount": 1}))
    };
    assert_eq!(ok_count(&burst(10, 8, |_| use_on(&kb)).await), 3);
    assert_eq!(ok_count(&burst(20, 8, |_| use_on(&ka)).await), 7);
    assert_eq!(app.quota(&kb).await["used"], 3);
    assert_eq!(app.quota(&ka).await["used"], 7);
    let (s, v) = app.use_amount(&ka, 1).await;
    assert_eq!(s, 429);
    assert!(v.to_string().contains("团队预算剩余：0"), "{v}");
    // More budget for the team: a serves again, b is still at its cap.
    let (s, _) = patch(&app, &format!("/admin/teams/{tid}"), json!({"quota": 20})).await;
    assert_eq!(s, 200);
    assert_eq!(app.use_amount(&ka, 1).await.0, 200);
    let (s, v) = app.use_amount(&kb, 1).await;
    assert!(s == 429 && v.to_string().contains("用户预算"), "{v}");
    // A user limit over all of the user's keys (rpm 2 per user, two keys each rpm-free).
    let (s, _) = patch(
        &app,
        &format!("/admin/users/{}", a["id"]),
        json!({"limits": {"rpm": 2}}),
    )
    .await;
    assert_eq!(s, 200);
    let (ka2, _) = app.create_key(json!({"userId": a["id"]})).await;
    let statuses = [
        app.mock_chat(&ka).await.status().as_u16(),
        app.mock_chat(&ka2).await.status().as_u16(),
        app.mock_chat(&ka).await.status().as_u16(),
    ];
    assert_eq!(statuses, [200, 200, 429]);

    // An invite for the team: each redemption is a new user in it, drawing on its budget.
    let (s, inv) = app
        .admin_post(
            "/admin/invites",
            json!({"teamId": tid, "uses": 2, "quota": 5}),
        )
        .await;
    assert_eq!((s, inv["teamId"].as_i64()), (201, Some(tid)), "{inv}");
    let (s, v) = app
        .admin_post("/admin/invites", json!({"teamId": 999_999}))
        .await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));
    for _ in 0..2 {
        let r = app
            .client
            .post(app.url("/me/redeem"))
            .json(&json!({"code": inv["code"]}))
            .send()
            .await
            .unwrap();
        let (s, v) = status_json(r).await;
        assert_eq!(s, 200, "{v}");
        let (_, k) = app.admin_get(&format!("/admin/keys/{}", v["id"])).await;
        let (_, u) = app
            .admin_get(&format!("/admin/users/{}", k["userId"]))
            .await;
        assert_eq!(u["teamId"], tid, "{u}");
    }
    let (_, t) = app.admin_get(&format!("/admin/teams/{tid}")).await;
    assert_eq!(t["members"], 4, "{t}");
    app.stop().await;
}

/// Puts the database back to the schema before users existed, with owners written the old
/// way on keys `idb` (a name only) and `idc` (an id and a name).
async fn before_users<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, version: i64, idb: i64, idc: i64)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for q in [
        "DROP TABLE accounts",
        "DROP INDEX keys_owner",
        "DELETE FROM generations WHERE name = 'accounts'",
    ] {
        sqlx::query(q).execute(pool).await.unwrap();
    }
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(version)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE keys SET owner_user_id = 7, owner_username = 'dave' WHERE id = $1")
        .bind(idc)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE keys SET owner_user_id = NULL, owner_username = 'carol' WHERE id = $1")
        .bind(idb)
        .execute(pool)
        .await
        .unwrap();
}

/// Keys with owners made the old way, then the migration: users with the owners' ids and
/// names, every key pointing at its user, the monitor's history unchanged.
async fn owners_migrate(pg: Option<String>) {
    let db_url = pg.clone();
    let app = spawn_app_with(move |c| c.database_url = db_url).await;
    let (ka, ida) = app
        .create_key(json!({"owner": {"userId": 42, "username": "bob"}}))
        .await;
    let (_, idb) = app
        .create_key(json!({"owner": {"username": "carol"}}))
        .await;
    let (_, idc) = app.create_key(json!({})).await;
    assert_eq!(app.mock_chat(&ka).await.status().as_u16(), 200);
    let dir = app.stop().await;
    match &pg {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            before_users(&pool, 6, idb, idc).await;
            pool.close().await;
        }
        None => {
            let db = dir.path().join("qp.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            before_users(&pool, 10, idb, idc).await;
            pool.close().await;
        }
    }
    let db_url = pg.clone();
    let app = spawn_in(dir, move |c| c.database_url = db_url).await;
    let (_, users) = app.admin_get("/admin/users").await;
    let by_name = |n: &str| {
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no user {n} in {users}"))
    };
    assert_eq!(by_name("bob")["id"], 42, "the owner's id is kept");
    assert_eq!(by_name("dave")["id"], 7);
    let carol = by_name("carol");
    assert_eq!(users["total"], 3);
    for (id, uid) in [(ida, 42), (idc, 7), (idb, carol["id"].as_i64().unwrap())] {
        let (_, k) = app.admin_get(&format!("/admin/keys/{id}")).await;
        assert_eq!(k["userId"], uid, "{k}");
    }
    // The monitor's history still names the user by the same id.
    let (_, rows) = app.admin_get("/admin/requests?user=bob").await;
    assert!(rows.to_string().contains("\"bob\""), "{rows}");
    // A new user gets an id past the carried-over ones.
    let (_, u) = app.admin_post("/admin/users", json!({"name": "eve"})).await;
    assert!(u["id"].as_i64().unwrap() > 42, "{u}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_of_existing_keys_become_users_with_their_ids_and_names() {
    owners_migrate(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_become_users_on_postgres_too() {
    let Some(url) = crate::instances::fresh_pg().await else {
        return;
    };
    owners_migrate(Some(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_budget_holds_exactly_across_two_postgres_instances() {
    let Some(url) = crate::instances::fresh_pg().await else {
        return;
    };
    let a = spawn_app_with(|c| c.database_url = Some(url.clone())).await;
    let b = spawn_app_with(|c| c.database_url = Some(url.clone())).await;
    let (s, team) = a
        .admin_post("/admin/teams", json!({"name": "pg-team", "quota": 120}))
        .await;
    assert_eq!(s, 201, "{team}");
    let (_, user) = a
        .admin_post(
            "/admin/users",
            json!({"name": "pg-user", "quota": 100, "teamId": team["id"]}),
        )
        .await;
    let uid = user["id"].as_i64().unwrap();
    let (_, other) = b
        .admin_post(
            "/admin/users",
            json!({"name": "pg-other", "teamId": team["id"]}),
        )
        .await;
    let mut keys = Vec::new();
    for i in 0..4 {
        let app = if i % 2 == 0 { &a } else { &b };
        keys.push(
            app.create_key(json!({"quota": 1000, "userId": uid}))
                .await
                .0,
        );
    }
    let (ko, _) = b.create_key(json!({"userId": other["id"]})).await;
    let apps = [&a, &b];
    let res = burst(400, 64, |i| {
        let app = apps[i % 2];
        let key = if i % 5 == 4 { &ko } else { &keys[i % 4] };
        app.client
            .post(app.url("/api/v1/use"))
            .header("X-API-Key", key)
            .json(&json!({"amount": 1}))
    })
    .await;
    assert_eq!(ok_count(&res), 120, "the team's 120, never more");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (user_used, team_used): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT used FROM accounts WHERE id = $1), (SELECT used FROM accounts WHERE id = $2)",
    )
    .bind(uid)
    .bind(team["id"].as_i64().unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    let keys_used: i64 = sqlx::query_scalar("SELECT CAST(SUM(used) AS BIGINT) FROM keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(team_used, 120);
    assert_eq!(keys_used, 120);
    assert!(user_used <= 100, "the user's own cap: {user_used}");
    // Gateway calls across both instances on a user with room for 20 more.
    let (s, _) = patch(&a, &format!("/admin/users/{uid}"), json!({"quota": 200})).await;
    assert_eq!(s, 200);
    let (s, _) = patch(
        &b,
        &format!("/admin/teams/{}", team["id"]),
        json!({"quota": 140}),
    )
    .await;
    assert_eq!(s, 200);
    // Another instance learns of the edit within its follower's period.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let body = json!({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]});
    let res = burst(60, 32, |i| {
        let app = apps[i % 2];
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&keys[i % 4])
            .json(&body)
    })
    .await;
    assert_eq!(ok_count(&res), 20, "{:?}", &res[..2]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_page_creates_edits_and_shows_budgets_and_me_shows_them_to_the_holder() {
    let Some(b) = crate::browser::Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let (_, team) = app
        .admin_post("/admin/teams", json!({"name": "研发组", "quota": 1000}))
        .await;
    let hostile = "<img src=x onerror=alert(1)>";
    let (s, _) = app
        .admin_post("/admin/users", json!({"name": hostile}))
        .await;
    assert_eq!(s, 201);
    b.resize(1440, 900).await;
    b.goto(&app.url("/#/users")).await;
    b.login(ADMIN).await;
    b.ready().await;
    // Create a user from the form, in the team, with a budget.
    b.click("#create-user").await;
    b.type_into("#acct-name", "张三").await;
    b.type_into("#acct-quota", "20").await;
    b.js(&format!(
        "const s = document.getElementById('acct-team'); s.value = '{}'; s.dispatchEvent(new Event('change'));",
        team["id"]
    ))
    .await;
    b.click("#acct-showKeys").await;
    b.screenshot("user-form").await;
    b.click("[data-action=save]").await;
    b.ready().await;
    let (_, users) = app.admin_get("/admin/users?q=张三").await;
    let user = users["items"][0].clone();
    assert_eq!(user["quota"], 20, "{users}");
    assert_eq!(user["teamId"], team["id"]);
    assert_eq!(user["showKeys"], true);
    let uid = user["id"].as_i64().unwrap();
    // Its keys draw from it: the page shows the budget used.
    let (k1, _) = app
        .create_key(json!({"userId": uid, "name": "laptop"}))
        .await;
    app.create_key(json!({"userId": uid, "name": "ci"})).await;
    assert_eq!(app.use_amount(&k1, 5).await.0, 200);
    b.goto(&app.url("/#/users?q=")).await;
    b.ready().await;
    let table = b.text("#users-table").await;
    assert!(
        table.contains("张三") && table.contains("5 / 20"),
        "{table}"
    );
    assert!(table.contains("研发组"), "{table}");
    assert!(
        table.contains(hostile),
        "a hostile name is shown as text: {table}"
    );
    assert!(!b.exists("#users-table img").await, "and never as markup");
    assert!(
        b.text("#teams-table").await.contains("5 / 1,000")
            || b.text("#teams-table").await.contains("5 / 1000")
    );
    b.screenshot("users").await;
    // The user's page: keys, budget, usage chart.
    b.click(&format!("a.userlink[href*='user={uid}']")).await;
    b.ready().await;
    assert_eq!(b.text("#acct-remaining").await, "15");
    let keys = b.text(".user-keys").await;
    assert!(keys.contains("laptop") && keys.contains("ci"), "{keys}");
    b.find("#acct-chart canvas").await;
    b.screenshot("user-detail").await;
    // Disable from the page: its keys stop.
    b.click("[data-act=disable]").await;
    b.ready().await;
    let (s, _) = app.use_amount(&k1, 1).await;
    assert_eq!(s, 403);
    b.click("[data-act=enable]").await;
    b.ready().await;
    assert_eq!(app.use_amount(&k1, 1).await.0, 200);
    b.click("#lang").await;
    b.ready().await;
    assert!(b.text("#acct-detail").await.contains("Budget"));
    b.screenshot("user-detail-en").await;
    b.resize(390, 844).await;
    b.goto(&app.url("/#/users")).await;
    b.ready().await;
    b.assert_fits_width("the users page").await;
    b.screenshot("users-phone").await;
    b.click("#lang").await;

    // The holder sees the user's and team's budgets and (allowed here) the other key.
    b.resize(1440, 900).await;
    b.goto(&app.url("/me")).await;
    b.find("#me-login").await;
    b.type_into("#me-key", &k1).await;
    b.click("#me-login-btn").await;
    b.ready().await;
    let budgets = b.text("#me-budgets").await;
    assert!(
        budgets.contains("张三") && budgets.contains("研发组"),
        "{budgets}"
    );
    let others = b.text("#me-other-keys").await;
    assert!(
        others.contains("ci") && !others.contains("laptop"),
        "{others}"
    );
    b.screenshot("me-budgets").await;
    // Asking for more from /me; the operator approves it on the Users page.
    b.type_into("#me-ask-amount", "30").await;
    b.type_into("#me-ask-reason", "a long eval run").await;
    b.click("#me-ask-btn").await;
    b.find("#me-ask-list [data-status=pending]").await;
    b.screenshot("me-ask").await;
    b.goto(&app.url("/#/users")).await;
    b.ready().await;
    assert!(b.text("#quota-requests").await.contains("a long eval run"));
    b.screenshot("users-requests").await;
    b.click("#quota-requests [data-act=approve]").await;
    b.click("[data-action=approve]").await;
    b.find("#quota-requests [data-status=approved]").await;
    let (_, u) = app.admin_get(&format!("/admin/users/{uid}")).await;
    assert_eq!(
        u["quota"], 50,
        "granted to the user's budget (the key has none): {u}"
    );
    assert!(b.console_errors().await.is_empty());
    b.close().await;
    app.stop().await;
}

/// Signs in to `/me` with `key`; the session cookie as `name=value`.
async fn holder(app: &TestApp, key: &str) -> String {
    let r = app
        .client
        .post(app.url("/me/login"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    c.split(';').next().unwrap().to_owned()
}

async fn me_post(app: &TestApp, cookie: &str, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(path))
        .header("cookie", cookie)
        .header("X-QP-CSRF", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    status_json(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_asks_for_more_an_operator_is_alerted_and_decides_once() {
    use quota_proxy::alerts::settings::RuleKind;
    let rx = crate::alert_receiver::Receiver::start().await;
    let hook = vec![crate::alerts::hook_channel(&rx)];
    let app = spawn_app_with(|c| {
        crate::alerts::alerting(c, hook, &[(RuleKind::QuotaRequest, &[])]);
    })
    .await;
    let (_, user) = app
        .admin_post("/admin/users", json!({"name": "asker", "quota": 5}))
        .await;
    let (limited, limited_id) = app
        .create_key(json!({"quota": 10, "userId": user["id"], "name": "limited"}))
        .await;
    let (open, _) = app.create_key(json!({"userId": user["id"]})).await;

    // The holder asks; a second request waits for the first.
    let c = holder(&app, &limited).await;
    let (s, r) = me_post(
        &app,
        &c,
        "/me/api/quota-requests",
        json!({"amount": 40, "reason": "running an eval"}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "pending");
    let id = r["id"].as_i64().unwrap();
    let (s, v) = me_post(&app, &c, "/me/api/quota-requests", json!({"amount": 1})).await;
    assert_eq!((s, error_code(&v)), (409, "QUOTA_REQUEST_PENDING"));
    let (s, v) = me_post(&app, &c, "/me/api/quota-requests", json!({"amount": 0})).await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));
    // Without the page's header, nothing is filed.
    let r = app
        .client
        .post(app.url("/me/api/quota-requests"))
        .header("cookie", &c)
        .json(&json!({"amount": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The operator's channel hears of it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let alert = loop {
        if let Some(r) = rx
            .got()
            .into_iter()
            .find(|r| r.body["rule"] == "quota_request")
        {
            break r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no quota_request alert"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(alert["subject"], format!("quota_request:{id}"), "{alert}");
    assert!(alert.to_string().contains("running an eval"), "{alert}");

    // The queue shows it; two approvals at once grant it once.
    let (_, q) = app.admin_get("/admin/quota-requests?status=pending").await;
    assert_eq!(q["requests"][0]["keyName"], "limited", "{q}");
    assert_eq!(q["requests"][0]["userName"], "asker");
    let approve = || {
        app.client
            .post(app.url(&format!("/admin/quota-requests/{id}/approve")))
            .bearer_auth(ADMIN)
            .json(&json!({"note": "ok for this week"}))
            .send()
    };
    let (a, b) = tokio::join!(approve(), approve());
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let (_, k) = app.admin_get(&format!("/admin/keys/{limited_id}")).await;
    assert_eq!(k["quota"], 50, "added once to the key's quota: {k}");
    let r = app
        .client
        .get(app.url("/me/api/quota-requests"))
        .header("cookie", &c)
        .send()
        .await
        .unwrap();
    let (_, mine) = status_json(r).await;
    assert_eq!(mine["requests"][0]["status"], "approved");
    assert_eq!(mine["requests"][0]["granted"], 40);
    assert_eq!(mine["requests"][0]["note"], "ok for this week");

    // A key without a quota of its own: the grant goes to its user's budget; a denial
    // grants nothing. Viewers cannot decide.
    let c2 = holder(&app, &open).await;
    let (_, r2) = me_post(&app, &c2, "/me/api/quota-requests", json!({"amount": 7})).await;
    let id2 = r2["id"].as_i64().unwrap();
    let r = app
        .client
        .post(app.url(&format!("/admin/quota-requests/{id2}/approve")))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (s, v) = app
        .admin_post(
            &format!("/admin/quota-requests/{id2}/approve"),
            json!({"amount": 3}),
        )
        .await;
    assert_eq!((s, v["granted"].as_i64()), (200, Some(3)), "{v}");
    let (_, u) = app.admin_get(&format!("/admin/users/{}", user["id"])).await;
    assert_eq!(u["quota"], 8, "the user's budget grew: {u}");
    let (_, r3) = me_post(&app, &c2, "/me/api/quota-requests", json!({"amount": 100})).await;
    let id3 = r3["id"].as_i64().unwrap();
    let (s, v) = app
        .admin_post(
            &format!("/admin/quota-requests/{id3}/deny"),
            json!({"note": "no"}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("denied")));
    let (_, u) = app.admin_get(&format!("/admin/users/{}", user["id"])).await;
    assert_eq!(u["quota"], 8);
    let (s, v) = app
        .admin_post("/admin/quota-requests/999999/deny", json!({}))
        .await;
    assert_eq!((s, error_code(&v)), (404, "QUOTA_REQUEST_NOT_FOUND"));
    let (_, a) = app.admin_get("/admin/audit?action=quota_request.").await;
    assert_eq!(a["entries"].as_array().unwrap().len(), 6, "{a}");
    app.stop().await;
}
