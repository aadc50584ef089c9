use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: quota_proxy::memory::SplitAlloc = quota_proxy::memory::SplitAlloc;

fn main() -> std::process::ExitCode {
    let cli = quota_proxy::cli::Cli::parse();
    // Before any thread allocates: the standalone monitor holds millions of rows and serves
    // light traffic, so one malloc arena keeps its memory compact (see `memory`).
    if matches!(cli.command, quota_proxy::cli::Command::Monitor { .. }) {
        quota_proxy::memory::single_arena();
    }
    // Still one thread, SQLite not yet used: the only moment its process options can be set.
    let sqlite_statistics = !quota_proxy::store::skip_allocation_statistics();
    let sqlite_on_mimalloc =
        quota_proxy::memory::uses_mimalloc() && quota_proxy::store::allocate_with_mimalloc();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, sqlite_statistics, sqlite_on_mimalloc))
}

async fn run(
    cli: quota_proxy::cli::Cli,
    sqlite_statistics: bool,
    sqlite_on_mimalloc: bool,
) -> std::process::ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `LOG_FORMAT=json`: one JSON object a line, for log shippers. Otherwise text, with
    // colours only when a person is watching (a redirected log stays plain).
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.trim().eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    tracing::info!(
        allocator = quota_proxy::memory::allocator(),
        sqlite_statistics,
        sqlite_on_mimalloc,
        "memory"
    );
    match quota_proxy::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if json {
                tracing::error!(error = %e, "stopped");
            } else {
                eprintln!("error: {e}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
