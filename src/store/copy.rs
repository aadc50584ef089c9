//! `migrate --to postgres://…`: copies a SQLite deployment into an empty PostgreSQL database
//! table by table (ids kept, so keys, history and logs still refer to each other), then
//! compares counts and sums on both sides.

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Row, SqlitePool};

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{StoreError, StoreResult};

/// How a column is read from SQLite and written to PostgreSQL.
#[derive(Clone, Copy)]
enum Ty {
    Int,
    Text,
    /// 0/1 in SQLite, BOOLEAN in PostgreSQL.
    Bool,
    Blob,
}

struct Table {
    name: &'static str,
    /// The integer id the copy pages by (and whose sequence is moved past the copied ids).
    id: Option<&'static str>,
    columns: &'static [(&'static str, Ty)],
    /// Sums compared after the copy.
    sums: &'static [&'static str],
}

use Ty::{Blob, Bool, Int, Text};

const TABLES: &[Table] = &[
    Table {
        name: "keys",
        id: Some("id"),
        columns: &[
            ("id", Int),
            ("key_hash", Blob),
            ("hint", Text),
            ("name", Text),
            ("prefix", Text),
            ("quota", Int),
            ("used", Int),
            ("expires_at", Int),
            ("created_at", Int),
            ("last_used", Int),
            ("enabled", Bool),
            ("metadata", Text),
            ("owner_user_id", Int),
            ("owner_username", Text),
            ("limits", Text),
            ("refill_interval", Text),
            ("refill_amount", Int),
            ("refill_period", Int),
        ],
        sums: &["used", "quota"],
    },
    Table {
        name: "upstreams",
        id: Some("id"),
        columns: &[
            ("id", Int),
            ("name", Text),
            ("spec", Text),
            ("secrets", Text),
            ("key_state", Text),
            ("enabled", Bool),
            ("created_ms", Int),
            ("updated_ms", Int),
        ],
        sums: &[],
    },
    Table {
        name: "invites",
        id: Some("id"),
        columns: &[
            ("id", Int),
            ("code_hash", Blob),
            ("hint", Text),
            ("spec", Text),
            ("uses", Int),
            ("used", Int),
            ("valid_until", Int),
            ("created_ms", Int),
        ],
        sums: &["used"],
    },
    Table {
        name: "usage_events",
        id: Some("id"),
        columns: &[
            ("id", Int),
            ("key_id", Int),
            ("ts", Int),
            ("amount", Int),
            ("reason", Text),
            ("remaining", Int),
            ("metadata", Text),
        ],
        sums: &["amount"],
    },
    Table {
        name: "idempotency",
        id: None,
        columns: &[
            ("key_id", Int),
            ("idem_key", Text),
            ("created_at", Int),
            ("amount_used", Int),
            ("remaining", Int),
            ("total_quota", Int),
            ("item_count", Int),
        ],
        sums: &["amount_used"],
    },
    // Holds a stopped server left unsettled: the first server on the new database charges
    // them (their server is not among its live instances).
    Table {
        name: "holds",
        id: None,
        columns: &[
            ("id", Int),
            ("key_id", Int),
            ("amount", Int),
            ("instance", Int),
            ("created_at", Int),
            ("reason", Text),
            ("metadata", Text),
        ],
        sums: &["amount"],
    },
    Table {
        name: "audit",
        id: Some("id"),
        columns: &[
            ("id", Int),
            ("ts", Int),
            ("action", Text),
            ("target", Text),
            ("key_id", Int),
            ("token_hint", Text),
            ("client_ip", Text),
            ("details", Text),
        ],
        sums: &["ts"],
    },
    Table {
        name: "request_log",
        id: Some("id"),
        columns: &[
            ("id", Int),
            ("ts", Int),
            ("request_id", Text),
            ("key_id", Int),
            ("key_name", Text),
            ("owner_user_id", Int),
            ("owner_username", Text),
            ("endpoint", Text),
            ("model", Text),
            ("upstream", Text),
            ("prompt_tokens", Int),
            ("completion_tokens", Int),
            ("cost", Int),
            ("status", Int),
            ("error", Text),
            ("latency_ms", Int),
            ("ttft_ms", Int),
            ("is_stream", Bool),
            ("estimated", Bool),
            ("client_ip", Text),
            ("cached_tokens", Int),
            ("cache_write_tokens", Int),
            ("reasoning_tokens", Int),
        ],
        sums: &[
            "cost",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
        ],
    },
    Table {
        name: "alerts",
        id: Some("id"),
        columns: &[
            ("id", Int),
            ("ts", Int),
            ("rule", Text),
            ("subject", Text),
            ("title", Text),
            ("message", Text),
            ("details", Text),
            ("link", Text),
            ("channels", Text),
            ("status", Text),
        ],
        sums: &[],
    },
    Table {
        name: "alert_deliveries",
        id: Some("id"),
        columns: &[
            ("id", Int),
            ("alert_id", Int),
            ("channel", Text),
            ("attempt", Int),
            ("ts", Int),
            ("ok", Bool),
            ("http_status", Int),
            ("error", Text),
        ],
        sums: &["attempt"],
    },
    Table {
        name: "alert_cooldowns",
        id: None,
        columns: &[("rule", Text), ("subject", Text), ("until_ms", Int)],
        sums: &["until_ms"],
    },
];

/// Rows a page: 20 columns × 1 000 binds stay far below PostgreSQL's 65 535.
const PAGE: i64 = 1000;

/// One table's numbers on both sides.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableCheck {
    pub table: &'static str,
    pub rows: (i64, i64),
    /// `(column, sum in SQLite, sum in PostgreSQL)`.
    pub sums: Vec<(&'static str, i64, i64)>,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.rows.0 == self.rows.1 && self.sums.iter().all(|(_, a, b)| a == b)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub tables: Vec<TableCheck>,
}

impl CopyReport {
    pub fn matches(&self) -> bool {
        self.tables.iter().all(TableCheck::matches)
    }
}

/// Copies everything from `from` into `to`, which must hold no keys, history, logs or audit.
pub async fn sqlite_to_postgres(from: &SqliteStore, to: &PgStore) -> StoreResult<CopyReport> {
    let (src, dst) = (from.read_pool(), to.write_pool());
    for t in TABLES {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", t.name)))
            .fetch_one(dst)
            .await?;
        if n > 0 {
            return Err(StoreError::Other(format!(
                "the target database is not empty: {} holds {n} rows",
                t.name
            )));
        }
    }
    let mut tx = dst.begin().await?;
    for t in TABLES {
        copy_table(src, &mut tx, t).await?;
    }
    tx.commit().await?;
    let mut tables = Vec::new();
    for t in TABLES {
        tables.push(check(src, dst, t).await?);
    }
    Ok(CopyReport { tables })
}

async fn copy_table(
    src: &SqlitePool,
    tx: &mut sqlx::Transaction<'_, Postgres>,
    t: &Table,
) -> StoreResult<()> {
    let cols: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
    let list = cols.join(", ");
    let mut offset = 0i64;
    let mut after = i64::MIN;
    loop {
        let rows: Vec<SqliteRow> = match t.id {
            Some(id) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {list} FROM {} WHERE {id} > ? ORDER BY {id} LIMIT {PAGE}",
                    t.name
                )))
                .bind(after)
                .fetch_all(src)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {list} FROM {} ORDER BY rowid LIMIT {PAGE} OFFSET ?",
                    t.name
                )))
                .bind(offset)
                .fetch_all(src)
                .await?
            }
        };
        if rows.is_empty() {
            break;
        }
        offset += rows.len() as i64;
        if t.id.is_some()
            && let Some(last) = rows.last()
        {
            after = last.try_get(0)?;
        }
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("INSERT INTO {} ({list}) ", t.name));
        let mut bad = None;
        qb.push_values(&rows, |mut b, r| {
            for (i, (_, ty)) in t.columns.iter().enumerate() {
                let bound = match ty {
                    Int => r.try_get::<Option<i64>, _>(i).map(|v| {
                        b.push_bind(v);
                    }),
                    Text => r.try_get::<Option<String>, _>(i).map(|v| {
                        b.push_bind(v);
                    }),
                    Bool => r.try_get::<Option<i64>, _>(i).map(|v| {
                        b.push_bind(v.map(|v| v != 0));
                    }),
                    Blob => r.try_get::<Option<Vec<u8>>, _>(i).map(|v| {
                        b.push_bind(v);
                    }),
                };
                if let Err(e) = bound {
                    bad.get_or_insert(e);
                }
            }
        });
        if let Some(e) = bad {
            return Err(e.into());
        }
        qb.build().execute(&mut **tx).await?;
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    if let Some(id) = t.id {
        // New rows continue after the copied ids.
        sqlx::query(AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{0}', '{id}'), \
             GREATEST(COALESCE((SELECT MAX({id}) FROM {0}), 0), 1), \
             (SELECT MAX({id}) FROM {0}) IS NOT NULL)",
            t.name
        )))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn check(src: &SqlitePool, dst: &PgPool, t: &Table) -> StoreResult<TableCheck> {
    let mut select = String::from("SELECT COUNT(*)");
    for s in t.sums {
        select.push_str(&format!(", CAST(COALESCE(SUM({s}), 0) AS BIGINT)"));
    }
    let sql = format!("{select} FROM {}", t.name);
    let a = sqlx::query(AssertSqlSafe(sql.clone()))
        .fetch_one(src)
        .await?;
    let b = sqlx::query(AssertSqlSafe(sql)).fetch_one(dst).await?;
    let mut sums = Vec::new();
    for (i, s) in t.sums.iter().enumerate() {
        sums.push((*s, a.try_get(i + 1)?, b.try_get(i + 1)?));
    }
    Ok(TableCheck {
        table: t.name,
        rows: (a.try_get(0)?, b.try_get(0)?),
        sums,
    })
}
