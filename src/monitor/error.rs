//! Why a monitor question could not be answered: bad parameters, no credentials, or the
//! source out of reach.

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{0}")]
    Bad(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("source unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Config(String),
}

impl MonitorError {
    pub fn bad(msg: &str) -> Self {
        MonitorError::Bad(msg.to_owned())
    }

    /// `参数无效: <name>`.
    pub fn invalid(name: &str) -> Self {
        MonitorError::Bad(format!("参数无效: {name}"))
    }

    pub fn from_sqlx(e: sqlx::Error) -> Self {
        MonitorError::Unavailable(e.to_string())
    }
}
