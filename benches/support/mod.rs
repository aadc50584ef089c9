//! What the benchmarks that start the real binary share: ports, the child processes, the
//! environment's knobs. Included with `mod support;` (not a bench of its own).
#![allow(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

use std::process::{Child, Stdio};
use std::time::Duration;

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_quota-proxy"));
    c.args(args).stdout(Stdio::null()).env("RUST_LOG", "warn");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

pub async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never opened");
}
