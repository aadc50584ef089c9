//! A real headless Chromium driven through WebDriver (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/test.sh). Under `CI=true` a missing browser
//! fails the test; elsewhere the test is skipped with a note. Self-contained, so the
//! dashboard benchmark includes it too.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub struct Browser {
    pub c: Client,
    driver_url: String,
    session: String,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

fn find_binary(env: &str, names: &[&str]) -> Option<String> {
    if let Ok(p) = std::env::var(env)
        && !p.is_empty()
    {
        return Some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in path.split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let p = std::path::Path::new(dir).join(name);
            if p.is_file() {
                return Some(p.to_string_lossy().into_owned());
            }
        }
    }
    None
}

impl Browser {
    /// `None` (outside CI) when no browser is installed.
    pub async fn start() -> Option<Self> {
        let driver = find_binary("CHROMEDRIVER", &["chromedriver"]);
        let chrome = find_binary(
            "CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let (Some(driver), Some(chrome)) = (driver, chrome) else {
            assert!(
                std::env::var("CI").is_err(),
                "chromium / chromedriver missing under CI: scripts/test.sh installs them"
            );
            eprintln!("skipping a browser test: install chromium and chromium-driver");
            return None;
        };
        let port = free_port();
        let child = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = http_client();
        for _ in 0..100 {
            if http
                .get(format!("{driver_url}/status"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chrome,
                "prefs": {"intl": {"accept_languages": "zh-CN,zh"}},
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1440,1000",
                    "--lang=zh-CN", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .expect("WebDriver session");
        let session = c.session_id().await.unwrap().unwrap();
        Some(Self {
            c,
            driver_url,
            session,
            _driver: child,
            _profile: profile,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.c.goto(url).await.unwrap();
    }

    /// Waits until the current view finished loading (`main[data-ready]`) or the login
    /// form shows.
    pub async fn ready(&self) {
        for _ in 0..200 {
            let v = self
                .js("return !window.__qpBusy && !!(document.querySelector('main[data-ready]') || document.getElementById('login-form'))")
                .await;
            if v == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("page never became ready: {}", self.text("body").await);
    }

    pub async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Runs `body` as an async function and returns its result.
    pub async fn js_async(&self, body: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1]; (async () => {{ {body} }})().then(done, e => done('ERR ' + e));"
        );
        self.c.execute_async(&script, vec![]).await.unwrap()
    }

    pub async fn find(&self, css: &str) -> Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self.c.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn attr(&self, css: &str, name: &str) -> String {
        self.find(css)
            .await
            .attr(name)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn login(&self, token: &str) {
        self.ready().await;
        self.type_into("#token", token).await;
        self.click("#login-btn").await;
    }

    /// Console messages of level SEVERE since the last call (reading clears them).
    pub async fn console_errors(&self) -> Vec<String> {
        let r = http_client()
            .post(format!(
                "{}/session/{}/se/log",
                self.driver_url, self.session
            ))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Saves a PNG of the page when `QP_SCREENSHOTS` names a directory.
    pub async fn screenshot(&self, name: &str) {
        if let Ok(dir) = std::env::var("QP_SCREENSHOTS")
            && !dir.is_empty()
        {
            // Charts draw on the next frames.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let png = self.c.screenshot().await.unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
        }
    }

    /// Asserts the page is no wider than the window (nothing scrolls sideways).
    pub async fn assert_fits_width(&self, what: &str) {
        let (scroll, width) = (
            self.js("return document.body.scrollWidth").await,
            self.js("return window.innerWidth").await,
        );
        assert!(
            scroll.as_i64().unwrap() <= width.as_i64().unwrap(),
            "{what} overflows: {scroll} > {width}"
        );
    }

    /// The window's outer size (390 × 844: a phone).
    pub async fn resize(&self, width: u32, height: u32) {
        self.c.set_window_size(width, height).await.unwrap();
    }

    pub async fn close(self) {
        let _ = self.c.close().await;
    }
}
