//! What a store can fail with, and which failures mean "try again later".

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                if is_pg_unavailable(db.code().as_deref().unwrap_or("")) {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Other(e.to_string())
                }
            }
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_storage_fault) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

/// SQLite result codes (primary or extended) that mean the storage, not the statement, is
/// at fault: busy or locked by another process, I/O error, disk full, read-only file or
/// directory, cannot open, no memory. They are worth a retry later (503), not a 500.
pub fn is_storage_fault(code: &str) -> bool {
    let Ok(n) = code.parse::<i64>() else {
        return false;
    };
    matches!(n & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14)
}

/// PostgreSQL SQLSTATEs that mean "try again later": connection exceptions (08), too many
/// connections or out of resources (53), the server shutting down or starting (57P),
/// a read-only standby (25006), serialization failures and deadlocks (40001, 40P01).
pub fn is_pg_unavailable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "25006" | "40001" | "40P01")
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Other(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
