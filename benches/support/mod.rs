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

/// The binary (`serve` runs `BENCH_GATEWAY_BIN` when set: an earlier build to compare
/// with, in front of this build's mock upstream).
pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Child {
    let bin = match std::env::var("BENCH_GATEWAY_BIN") {
        Ok(b) if args.first() == Some(&"serve") => b,
        _ => env!("CARGO_BIN_EXE_quota-proxy").to_owned(),
    };
    let mut c = std::process::Command::new(bin);
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

/// nginx as a bare reverse proxy on `port` to the upstream on `up`, its files in `dir`.
pub fn spawn_nginx(dir: &std::path::Path, port: u16, up: u16) -> Option<Child> {
    let bin = std::env::var("NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    if !std::path::Path::new(&bin).exists() {
        eprintln!("no nginx at {bin}: the nginx baseline is skipped (apt install nginx)");
        return None;
    }
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
               fastcgi_temp_path {d}/nginx-fcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
               upstream up {{ server 127.0.0.1:{up}; keepalive 256; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                 proxy_pass http://up;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                 proxy_buffering off;\n    }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    std::process::Command::new(bin)
        .args(["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// SIGTERM: the master stops its workers (a SIGKILL would leave them listening).
pub fn stop_nginx(n: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &n.id().to_string()])
        .status();
    let _ = n.wait();
}
