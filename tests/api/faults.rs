//! Storage faults, for real: another connection holds SQLite's write lock (as a backup tool
//! or a second process would). Nothing served goes uncharged, writes answer 503 meanwhile,
//! and everything recovers by itself when the lock goes.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};

use crate::helpers::*;

async fn chat(app: &TestApp, key: &str) -> (u16, Value) {
    status_json(app.mock_chat(key).await).await
}

/// `used` of key `id` as the database file says, once it reaches `want` (or after 5 s).
async fn used_on_disk(db: &std::path::Path, id: i64, want: i64) -> i64 {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let mut used = -1;
    for _ in 0..100 {
        let mut c = SqliteConnection::connect(&url).await.unwrap();
        used = sqlx::query_scalar("SELECT used FROM keys WHERE id = ?")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap();
        if used == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    used
}

/// Waits (5 s at most) for `/readyz` to say 200 again.
async fn ready_again(app: &TestApp) -> bool {
    for _ in 0..100 {
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        if r.status().is_success() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_lock_serves_no_call_it_cannot_charge_answers_503_and_recovers() {
    let app = spawn_app_with(|c| c.sqlite_busy_timeout_ms = 300).await;
    let (key, id) = app.create_key(json!({"quota": 10})).await;

    // Another connection takes the write lock and keeps it.
    let url = format!("sqlite://{}", app.dir.path().join("qp.db").display());
    let mut locker = SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();

    // Calls during the fault: no answer leaves before its hold is durable, so each is
    // refused with 503; the quota API and admin writes answer 503.
    let served = 0;
    for _ in 0..4 {
        let (s, v) = chat(&app, &key).await;
        assert_eq!((s, error_code(&v)), (503, "unavailable"), "{v}");
    }
    let r = app
        .client
        .post(app.url("/api/v1/use"))
        .header("x-api-key", &key)
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    let (s, v) = status_json(r).await;
    assert_eq!((s, error_code(&v)), (503, "UNAVAILABLE"), "{v}");
    let (s, v) = app.admin_post("/admin/keys", json!({"quota": 1})).await;
    assert_eq!((s, error_code(&v)), (503, "UNAVAILABLE"), "{v}");
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "not ready while writes fail");
    // Nothing was served, nothing is counted.
    assert_eq!(app.quota(&key).await["used"], served);

    // The lock goes; the service recovers without a restart.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    drop(locker);
    assert!(ready_again(&app).await, "ready again");
    // The kept settlements reached the database: memory = disk = what was served.
    let on_disk = used_on_disk(&app.dir.path().join("qp.db"), id, served).await;
    assert_eq!(on_disk, served, "every served call charged on disk");
    assert_eq!(app.quota(&key).await["used"], served);
    // Writes of every kind work again (no connection left inside a transaction).
    let (s, v) = app.admin_post("/admin/keys", json!({"quota": 1})).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = app
        .admin_post("/admin/keys/disable", json!({"key": v["id"].to_string()}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(app.use_amount(&key, 1).await.0, 200);
    assert_eq!(chat(&app, &key).await.0, 200);
    let dir = app.stop().await;
    // And after a restart the database holds all of it.
    let app = spawn_in(dir, |_| {}).await;
    assert_eq!(app.quota(&key).await["used"], served + 2);
    app.stop().await;
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct TinyFs(std::path::PathBuf);

impl TinyFs {
    fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| TinyFs(at.to_path_buf()))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The disk fills up under the running server (a small tmpfs, where the machine lets the
/// test mount one; the held-lock test above is the fault that runs everywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_charges_every_served_call_answers_503_and_recovers() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("tiny");
    let Some(_fs) = TinyFs::mount(&mnt, "4m") else {
        eprintln!("skipping the full-disk test: cannot mount a tmpfs here");
        return;
    };
    let db = mnt.join("qp.db");
    let db2 = db.clone();
    let app = spawn_app_with(move |c| {
        c.sqlite_path = db2;
        c.sqlite_busy_timeout_ms = 300;
    })
    .await;
    let (key, id) = app.create_key(json!({"quota": 1000})).await;
    // Fill what is left.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..30 {
        let (s, v) = chat(&app, &key).await;
        match s {
            200 => served += 1,
            503 => refused += 1,
            other => panic!("{other}: {v}"),
        }
        if refused >= 3 {
            break;
        }
    }
    assert!(refused >= 3, "the full disk was noticed (served {served})");
    let (s, v) = app.admin_post("/admin/keys", json!({"quota": 1})).await;
    assert_eq!((s, error_code(&v)), (503, "UNAVAILABLE"), "{v}");
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);

    // Space comes back: everything recovers, and every served call is on disk.
    std::fs::remove_file(&filler).unwrap();
    assert!(ready_again(&app).await, "ready again");
    let on_disk = used_on_disk(&db, id, served).await;
    assert_eq!(on_disk, served, "served {served}, charged {on_disk}");
    assert_eq!(app.quota(&key).await["used"], served);
    let (s, v) = app.admin_post("/admin/keys", json!({"quota": 1})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(chat(&app, &key).await.0, 200);
    app.stop().await;
}
