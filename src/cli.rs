//! The command line: `serve`, `keys …`, `usage`, `migrate`. Key commands work directly on
//! the database; a server running on the same file picks their changes up within a second.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::shapes::{DeletedKey, IssuedKey, IssuedOne, KeyView, UsageDetail};
use crate::app::{self, App, StartError};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Overrides};
use crate::keyadmin::{Actor, CreateSpec, KeyAdmin};
use crate::keys::{KeyRecord, KeyStatus, is_valid_prefix, status_of};
use crate::timefmt::parse_instant;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "quota-proxy",
    version,
    about = "OpenAI-compatible gateway with per-key quotas"
)]
pub struct Cli {
    /// Config file (default: ./quota-proxy.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (database, generated admin token).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// SQLite database file (default: <data-dir>/quota-proxy.db).
    #[arg(long = "db", global = true)]
    pub sqlite_path: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the usage summary (as GET /admin/usage).
    Usage {
        /// YYYY-MM-DD or RFC 3339.
        #[arg(long)]
        start: Option<String>,
        /// YYYY-MM-DD (inclusive) or RFC 3339.
        #[arg(long)]
        end: Option<String>,
    },
    /// Create or upgrade the database schema, then exit. With `--to postgres://…`, copy
    /// this SQLite deployment (keys, counters, history, request log, audit, alerts) into an
    /// empty PostgreSQL database and compare counts and sums on both sides.
    Migrate {
        #[arg(long)]
        to: Option<String>,
    },
    /// Validate the configuration (file, environment, flags) and print the effective
    /// settings as JSON, every secret masked. Exits non-zero on an invalid configuration.
    CheckConfig,
    /// Serve only the monitor API, over a New API / One API database (read-only).
    Monitor {
        #[arg(long, default_value = "newapi")]
        source: String,
        /// SQLite path, mysql://… or postgres://…
        #[arg(long)]
        dsn: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Serve the built-in mock provider as an OpenAI-compatible upstream over HTTP.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 9100)]
        port: u16,
        /// Pause between streamed chunks, in milliseconds.
        #[arg(long, default_value_t = 0)]
        chunk_delay_ms: u64,
        /// Stamp each streamed JSON event with the time it was sent
        /// (`"system_fingerprint":"sent-<µs since the epoch>"`), to measure a proxy per chunk.
        #[arg(long)]
        stamp: bool,
        /// Pause before the first chunk too, as a model takes time to its first token.
        #[arg(long)]
        pace_first: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create keys; prints (or writes to --output) the full keys, shown only this once.
    Create {
        #[arg(long)]
        prefix: Option<String>,
        /// Points; omit for unlimited.
        #[arg(long)]
        quota: Option<i64>,
        /// Expiry: YYYY-MM-DD (end of that day, UTC) or RFC 3339.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long)]
        name: Option<String>,
        /// Write the created keys to this JSON file (mode 0600).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// List keys.
    List {
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one key (full key or id).
    Show {
        key: String,
    },
    Disable {
        key: String,
    },
    Enable {
        key: String,
    },
    /// Set used to 0 (and the quota, with --quota).
    Reset {
        key: String,
        #[arg(long)]
        quota: Option<i64>,
    },
    /// Issue a new secret for the same key id; the old one stops working.
    Rotate {
        key: String,
    },
    Delete {
        key: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error("key not found: {0}")]
    NotFound(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> Self {
        CliError::Start(StartError::Store(e))
    }
}

/// `mock-upstream`: the mock provider on `host:port` until stopped.
async fn serve_mock(
    host: &str,
    port: u16,
    pace: crate::gateway::mock_server::Pace,
) -> Result<(), CliError> {
    let addr: std::net::SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| CliError::Usage("--host/--port".into()))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("mock upstream on http://{}/v1", listener.local_addr()?);
    let app = crate::gateway::mock_server::router(pace);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(app::shutdown_signal())
        .await?;
    Ok(())
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let mut over = Overrides {
        config: cli.config,
        data_dir: cli.data_dir,
        sqlite_path: cli.sqlite_path,
        ..Default::default()
    };
    match &cli.command {
        Command::Serve(a) => {
            over.host = a.host.clone();
            over.port = a.port;
        }
        Command::Monitor { host, port, .. } => {
            over.host = host.clone();
            over.port = *port;
        }
        _ => {}
    }
    if let Command::MockUpstream {
        host,
        port,
        chunk_delay_ms,
        stamp,
        pace_first,
    } = &cli.command
    {
        let pace = crate::gateway::mock_server::Pace {
            chunk_delay: std::time::Duration::from_millis(*chunk_delay_ms),
            stamp: *stamp,
            pace_first: *pace_first,
        };
        return serve_mock(host, *port, pace).await;
    }
    let mut config = Config::load(&over)?;
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command {
        Command::MockUpstream { .. } => Ok(()),
        Command::Monitor { source, dsn, .. } => {
            if let Some(d) = dsn {
                config.monitor.dsn = Some(d);
            }
            config.monitor.source = match source.as_str() {
                "newapi" => crate::monitor::source::SourceKind::NewApi,
                "native" => crate::monitor::source::SourceKind::Native,
                _ => return Err(CliError::Usage("--source: newapi|native".into())),
            };
            monitor_only(config).await
        }
        Command::Serve(_) => serve(config, clock).await,
        Command::CheckConfig => {
            print_json(&crate::config_view::effective(&config));
            eprintln!("configuration valid");
            Ok(())
        }
        Command::Migrate { to: None } => {
            app::open_store(&config).await?;
            let at = match &config.database_url {
                Some(url) => crate::config_view::mask_dsn(url),
                None => config.sqlite_path.display().to_string(),
            };
            eprintln!("database ready: {at}");
            Ok(())
        }
        Command::Migrate { to: Some(url) } => migrate_to(&config, &url).await,
        Command::Usage { start, end } => usage(&config, clock, start, end).await,
        Command::Keys(cmd) => {
            config.admin_token.get_or_insert_with(String::new);
            keys(&config, clock, cmd).await
        }
    }
}

async fn serve(mut config: Config, clock: SharedClock) -> Result<(), CliError> {
    let token = admin_token(&config)?;
    config.admin_token = Some(token);
    let listen = config.listen;
    let app = App::build(config, clock).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "quota-proxy listening");
    if app.config.gateway.mock_fallback {
        let w = crate::api::health::MOCK_WARNING;
        tracing::warn!("{w}");
        // Not `println!`: a closed stdout must not stop the server.
        let _ = writeln!(std::io::stdout(), "WARNING: {w}");
    }
    println!("quota-proxy listening on http://{}", listener.local_addr()?);
    app.serve(listener, app::shutdown_signal()).await?;
    Ok(())
}

/// The monitor API alone (no gateway, no ledger): for pointing at an existing relay's
/// database.
async fn monitor_only(mut config: Config) -> Result<(), CliError> {
    use crate::monitor::source::SourceKind;
    if config.monitor.source == SourceKind::NewApi && config.monitor.dsn.is_none() {
        return Err(CliError::Usage(
            "--dsn is required for --source newapi".into(),
        ));
    }
    let token = admin_token(&config)?;
    config.admin_token = Some(token);
    let app = App::monitor_only(config, Arc::new(crate::clock::SystemClock))
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(app.config.listen).await?;
    println!(
        "quota-proxy monitor listening on http://{}",
        listener.local_addr()?
    );
    app.serve(listener, app::shutdown_signal()).await?;
    Ok(())
}

/// The admin token; a newly generated one is printed here, once, on the terminal only
/// (never through the log).
fn admin_token(config: &Config) -> Result<String, CliError> {
    let (token, generated) = app::resolve_admin_token(config)?;
    if generated {
        println!(
            "Admin token (shown once, saved to {}):",
            config.data_dir.join("admin_token").display()
        );
        println!("  {token}");
    }
    Ok(token)
}

async fn migrate_to(config: &Config, url: &str) -> Result<(), CliError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(CliError::Usage("--to: postgres://…".into()));
    }
    if !config.sqlite_path.exists() {
        return Err(CliError::Usage(format!(
            "no SQLite database at {}",
            config.sqlite_path.display()
        )));
    }
    let from = crate::store::sqlite::SqliteStore::open(
        &config.sqlite_path,
        crate::store::sqlite::SqliteOptions::default(),
    )
    .await?;
    let to = crate::store::postgres::PgStore::open(url, Default::default()).await?;
    let report = crate::store::copy::sqlite_to_postgres(&from, &to).await?;
    println!("{:<18} {:>12} {:>12}", "table", "sqlite", "postgres");
    for t in &report.tables {
        println!("{:<18} {:>12} {:>12}", t.table, t.rows.0, t.rows.1);
        for (col, a, b) in &t.sums {
            println!("  sum({col:<13}) {a:>12} {b:>12}");
        }
    }
    from.close().await;
    to.close().await;
    if !report.matches() {
        return Err(CliError::Usage(
            "the copy does not match the source (see the table above)".into(),
        ));
    }
    eprintln!(
        "copied into {}: every count and sum matches",
        crate::config_view::mask_dsn(url)
    );
    Ok(())
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn key_admin(config: &Config, clock: SharedClock) -> Result<KeyAdmin, CliError> {
    let store = app::open_store(config).await?;
    Ok(KeyAdmin::new(store, None, clock))
}

async fn must_find(admin: &KeyAdmin, key: &str) -> Result<KeyRecord, CliError> {
    admin
        .find(key)
        .await?
        .ok_or_else(|| CliError::NotFound(key.to_owned()))
}

async fn keys(config: &Config, clock: SharedClock, cmd: KeysCommand) -> Result<(), CliError> {
    let admin = key_admin(config, clock).await?;
    let actor = Actor::cli();
    let now = admin.now_ms();
    match cmd {
        KeysCommand::Create {
            prefix,
            quota,
            expires,
            count,
            name,
            output,
        } => {
            let spec = create_spec(config, prefix, quota, expires, count, name)?;
            let issued = admin.create(&spec, &actor).await?;
            let rows: Vec<IssuedKey> = issued.iter().map(|k| IssuedKey::new(k, now)).collect();
            match output {
                Some(path) => {
                    let text = serde_json::to_string_pretty(&rows).unwrap_or_default();
                    write_secret_file(&path, &text)?;
                    eprintln!("{} key(s) written to {}", rows.len(), path.display());
                }
                None => print_json(&rows),
            }
        }
        KeysCommand::List { status } => list_keys(&admin, status.as_deref(), now).await?,
        KeysCommand::Show { key } => {
            let rec = must_find(&admin, &key).await?;
            print_json(&KeyView::new(&rec, now));
        }
        KeysCommand::Disable { key } => {
            let rec = must_find(&admin, &key).await?;
            let rec = admin
                .set_enabled(rec.id, false, &actor)
                .await?
                .ok_or(CliError::NotFound(key))?;
            print_json(&KeyView::new(&rec, now));
        }
        KeysCommand::Enable { key } => {
            let rec = must_find(&admin, &key).await?;
            let rec = admin
                .set_enabled(rec.id, true, &actor)
                .await?
                .ok_or(CliError::NotFound(key))?;
            print_json(&KeyView::new(&rec, now));
        }
        KeysCommand::Reset { key, quota } => {
            if quota.is_some_and(|q| q < 0) {
                return Err(CliError::Usage("--quota: not negative".into()));
            }
            let rec = must_find(&admin, &key).await?;
            let rec = admin
                .reset(&rec, quota.map(Some), &actor)
                .await?
                .ok_or(CliError::NotFound(key))?;
            print_json(&KeyView::new(&rec, now));
        }
        KeysCommand::Rotate { key } => {
            let rec = must_find(&admin, &key).await?;
            let issued = admin
                .rotate(&rec, &actor)
                .await?
                .ok_or(CliError::NotFound(key))?;
            print_json(&IssuedOne {
                success: true,
                key: IssuedKey::new(&issued, now),
            });
        }
        KeysCommand::Delete { key } => {
            let rec = must_find(&admin, &key).await?;
            admin.delete(rec.id, &actor).await?;
            print_json(&DeletedKey {
                success: true,
                id: rec.id,
                key: rec.hint,
            });
        }
    }
    Ok(())
}

/// What `keys create` was asked for, checked.
fn create_spec(
    config: &Config,
    prefix: Option<String>,
    quota: Option<i64>,
    expires: Option<String>,
    count: u32,
    name: Option<String>,
) -> Result<CreateSpec, CliError> {
    let prefix = prefix.unwrap_or_else(|| config.key_prefix.clone());
    if !is_valid_prefix(&prefix) {
        return Err(CliError::Usage("--prefix: 1-16 letters or digits".into()));
    }
    if !(1..=1000).contains(&count) {
        return Err(CliError::Usage("--count: 1 to 1000".into()));
    }
    if quota.is_some_and(|q| q < 0) {
        return Err(CliError::Usage("--quota: not negative".into()));
    }
    let expires_at = match expires {
        None => None,
        Some(s) => Some(
            parse_instant(&s, true)
                .ok_or_else(|| CliError::Usage("--expires: YYYY-MM-DD or RFC 3339".into()))?,
        ),
    };
    Ok(CreateSpec {
        prefix,
        quota,
        expires_at,
        name,
        count,
        metadata: Default::default(),
        owner: None,
        limits: Default::default(),
        refill: None,
    })
}

/// `keys list`: every key (of one status), by id.
async fn list_keys(admin: &KeyAdmin, status: Option<&str>, now: i64) -> Result<(), CliError> {
    let status = match status {
        None => None,
        Some(s) => Some(KeyStatus::parse(s).ok_or_else(|| {
            CliError::Usage("--status: active|disabled|expired|exhausted".into())
        })?),
    };
    let mut all = admin.all().await?;
    all.sort_by_key(|k| k.id);
    let rows: Vec<KeyView> = all
        .iter()
        .filter(|k| status.is_none_or(|s| status_of(k, now) == s))
        .map(|k| KeyView::new(k, now))
        .collect();
    print_json(&rows);
    Ok(())
}

async fn usage(
    config: &Config,
    clock: SharedClock,
    start: Option<String>,
    end: Option<String>,
) -> Result<(), CliError> {
    let store = app::open_store(config).await?;
    let from = match start {
        None => i64::MIN / 2,
        Some(s) => parse_instant(&s, false).ok_or_else(|| CliError::Usage("--start".into()))?,
    };
    let to = match end {
        None => i64::MAX / 2,
        Some(s) => {
            let ms = parse_instant(&s, false).ok_or_else(|| CliError::Usage("--end".into()))?;
            if s.trim().len() == 10 {
                ms + 86_400_000
            } else {
                ms + 1
            }
        }
    };
    let now = clock.now_ms();
    let period: std::collections::HashMap<i64, i64> =
        store.period_used(from, to).await?.into_iter().collect();
    let mut keys = store.load_keys().await?;
    keys.sort_by_key(|k| k.id);
    let rows: Vec<UsageDetail> = keys
        .iter()
        .map(|k| UsageDetail::new(k, now, period.get(&k.id).copied().unwrap_or(0)))
        .collect();
    print_json(&rows);
    Ok(())
}

fn write_secret_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}
