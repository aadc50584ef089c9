//! Invite codes (issue #25): made by an operator, redeemed for a new key at most `uses`
//! times (exactly, under concurrency), until `validUntil`, limited per client address,
//! every step audited and visible on the code.

use serde_json::{Value, json};

use crate::helpers::*;

async fn redeem(app: &TestApp, code: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/me/redeem"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    status_json(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_makes_at_most_its_uses_in_keys_and_says_who_got_them() {
    let app = spawn_app().await;
    let (s, inv) = app
        .admin_post(
            "/admin/invites",
            json!({"quota": 30, "uses": 3, "models": ["mock-*"], "prefix": "trial", "name": "trial key"}),
        )
        .await;
    assert_eq!(s, 201, "{inv}");
    let code = inv["code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("inv_"));
    let (_, list) = app.admin_get("/admin/invites").await;
    assert!(
        !list.to_string().contains(&code),
        "the code is shown once only"
    );
    assert_eq!(list["invites"][0]["remaining"], 3);

    // Five at once for three uses: exactly three keys.
    let tries = (0..5).map(|_| redeem(&app, &code));
    let results = futures_util::future::join_all(tries).await;
    let made: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(made.len(), 3, "{results:?}");
    for (s, v) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!((*s, error_code(v)), (409, "INVITE_USED_UP"));
    }
    // Each key works, with the template's quota and models.
    let key = made[0]["key"].as_str().unwrap();
    assert!(key.starts_with("trial_"));
    assert_eq!(made[0]["quota"], 30);
    let q = app.quota(key).await;
    assert_eq!(q["remaining"], 30);
    let r = app.mock_chat(key).await;
    assert_eq!(r.status().as_u16(), 200);

    // The code shows who got what; the audit has every step.
    let (_, v) = app.admin_get(&format!("/admin/invites/{code}")).await;
    assert_eq!(v["used"], 3);
    let reds = v["redemptions"].as_array().unwrap();
    assert_eq!(reds.len(), 3, "{v}");
    assert!(
        reds.iter()
            .all(|r| r["clientIp"] == "127.0.0.1" && r["keyId"].is_i64())
    );
    let (_, a) = app.admin_get("/admin/audit?action=invite.").await;
    let actions: Vec<&str> = a["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "invite.redeem").count(), 3);
    assert!(actions.contains(&"invite.create"));
    assert!(!a.to_string().contains(&code), "no code in the audit");

    // Unknown codes are wrong credentials; one address redeems at most 5 an hour.
    let (s, v) = redeem(&app, "inv_nope").await;
    assert_eq!(
        (s, error_code(&v)),
        (429, "RATE_LIMITED"),
        "the 7th try this hour: {v}"
    );
    app.clock.advance_ms(3_600_001);
    let (s, v) = redeem(&app, "inv_nope").await;
    assert_eq!((s, error_code(&v)), (401, "INVITE_INVALID"));

    // Expired, and revoked.
    // The app's clock is an hour ahead already.
    let until = chrono::Utc::now() + chrono::Duration::hours(5);
    let (_, inv2) = app
        .admin_post(
            "/admin/invites",
            json!({"uses": 5, "validUntil": until.to_rfc3339()}),
        )
        .await;
    let code2 = inv2["code"].as_str().unwrap().to_owned();
    app.clock.advance_ms(2 * 3_600_000);
    let (s, _) = redeem(&app, &code2).await;
    assert_eq!(s, 200);
    app.clock.advance_ms(3 * 3_600_000);
    let (s, v) = redeem(&app, &code2).await;
    assert_eq!((s, error_code(&v)), (409, "INVITE_EXPIRED"));
    let id2 = inv2["id"].as_i64().unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/admin/invites/{id2}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, v) = redeem(&app, &code2).await;
    assert_eq!((s, error_code(&v)), (401, "INVITE_INVALID"));
    let (s, v) = app.admin_post("/admin/invites", json!({"uses": 0})).await;
    assert_eq!((s, error_code(&v)), (400, "INVALID_REQUEST"));
    app.stop().await;
}
