//! The dashboard's files, embedded in the binary, gzip-compressed once at first use and
//! served with a content hash: `?v=<hash>` URLs are cached for a year, the page itself is
//! revalidated every time, so a new binary is picked up at the next load.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

struct Source {
    name: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
    /// An ES module of the dashboard: named in the page's import map.
    module: bool,
}

const JS: &str = "text/javascript; charset=utf-8";

/// A dashboard module from `web/js/`.
macro_rules! module {
    ($name:literal) => {
        Source {
            name: $name,
            mime: JS,
            bytes: include_bytes!(concat!("../../web/js/", $name)),
            module: true,
        }
    };
}

const SOURCES: &[Source] = &[
    module!("main.js"),
    module!("state.js"),
    module!("i18n.js"),
    module!("dom.js"),
    module!("format.js"),
    module!("api.js"),
    module!("router.js"),
    module!("charts.js"),
    module!("widgets.js"),
    module!("shell.js"),
    module!("page-overview.js"),
    module!("page-rankings.js"),
    module!("page-heatmap.js"),
    module!("page-anomalies.js"),
    module!("page-subject.js"),
    module!("page-keys.js"),
    module!("page-requests.js"),
    module!("page-key.js"),
    module!("page-alerts.js"),
    module!("page-prices.js"),
    module!("page-audit.js"),
    module!("page-channels.js"),
    module!("page-invites.js"),
    module!("page-users.js"),
    module!("me.js"),
    Source {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/app.css"),
        module: false,
    },
    Source {
        name: "echarts.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/vendor/echarts/echarts.common.min.js"),
        module: false,
    },
    Source {
        name: "swagger-ui.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/vendor/swagger-ui/swagger-ui-bundle.js"),
        module: false,
    },
    Source {
        name: "swagger-ui.css",
        mime: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/vendor/swagger-ui/swagger-ui.css"),
        module: false,
    },
    Source {
        name: "docs.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/docs.js"),
        module: false,
    },
];

const INDEX: &str = include_str!("../../web/index.html");
const DOCS: &str = include_str!("../../web/docs.html");
const ME: &str = include_str!("../../web/me.html");

pub struct Asset {
    pub name: &'static str,
    mime: &'static str,
    raw: Vec<u8>,
    gzip: Vec<u8>,
    pub hash: String,
}

impl Asset {
    fn new(name: &'static str, mime: &'static str, raw: Vec<u8>) -> Self {
        let hash = hex::encode(&Sha256::digest(&raw)[..6]);
        let gzip = gzip(&raw);
        Self {
            name,
            mime,
            raw,
            gzip,
            hash,
        }
    }

    /// Bytes sent for a client that accepts gzip.
    pub fn compressed_len(&self) -> usize {
        self.gzip.len()
    }

    fn respond(&self, headers: &HeaderMap, immutable: bool) -> Response {
        let etag = format!("\"{}\"", self.hash);
        let cache = if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        let mut out = if headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
        {
            StatusCode::NOT_MODIFIED.into_response()
        } else if accepts_gzip(headers) {
            let mut r = self.gzip.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            self.raw.clone().into_response()
        };
        let h = out.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.mime));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        out
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    // Writing into a Vec cannot fail.
    enc.write_all(raw)
        .and_then(|()| enc.finish())
        .unwrap_or_default()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|e| {
                let mut parts = e.split(';');
                let name = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        == Some(0.0)
                });
                (name == "gzip" || name == "*") && !refused
            })
        })
}

pub struct Assets {
    files: Vec<Asset>,
    index: Asset,
    docs: Asset,
    me: Asset,
    /// `'sha256-…'` of the page's inline import map, for its Content-Security-Policy.
    import_map_hash: String,
}

impl Assets {
    fn build() -> Self {
        let files: Vec<Asset> = SOURCES
            .iter()
            .map(|s| Asset::new(s.name, s.mime, s.bytes.to_vec()))
            .collect();
        // A page names each file with its hash, so a cached copy is never stale.
        let page = |name: &'static str, template: &str| {
            let mut html = template.to_owned();
            for f in &files {
                html = html.replace(
                    &format!("{{{{{}}}}}", f.name),
                    &format!("/assets/{}?v={}", f.name, f.hash),
                );
            }
            Asset::new(name, "text/html; charset=utf-8", html.into_bytes())
        };
        // Each module is imported by its plain name (`./dom.js`); the map sends the browser
        // to the hashed URL, so a module changes its URL when it changes, and none is stale.
        let imports: serde_json::Map<String, serde_json::Value> = SOURCES
            .iter()
            .zip(&files)
            .filter(|(s, _)| s.module)
            .map(|(_, f)| {
                let plain = format!("/assets/{}", f.name);
                let hashed = format!("/assets/{}?v={}", f.name, f.hash);
                (plain, hashed.into())
            })
            .collect();
        let map = serde_json::json!({ "imports": imports }).to_string();
        let import_map_hash = format!(
            "'sha256-{}'",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                Sha256::digest(map.as_bytes())
            )
        );
        let with_map = |t: &str| {
            t.replace(
                "{{importmap}}",
                &format!("<script type=\"importmap\">{map}</script>"),
            )
        };
        let index = page("index.html", &with_map(INDEX));
        let docs = page("docs.html", DOCS);
        let me = page("me.html", &with_map(ME));
        Self {
            files,
            index,
            docs,
            me,
            import_map_hash,
        }
    }

    /// The CSP source that allows the page's import map (and nothing else inline).
    pub fn import_map_hash(&self) -> &str {
        &self.import_map_hash
    }

    /// Built on first use (compressing ECharts takes a few tens of milliseconds).
    pub fn get() -> &'static Assets {
        static ASSETS: OnceLock<Assets> = OnceLock::new();
        ASSETS.get_or_init(Self::build)
    }

    pub fn index(&self, headers: &HeaderMap) -> Response {
        self.index.respond(headers, false)
    }

    /// The key holders' page.
    pub fn me(&self, headers: &HeaderMap) -> Response {
        self.me.respond(headers, false)
    }

    /// The API docs page (Swagger UI over `/api/openapi.json`).
    pub fn docs(&self, headers: &HeaderMap) -> Response {
        self.docs.respond(headers, false)
    }

    pub fn file(&self, name: &str, version: Option<&str>, headers: &HeaderMap) -> Option<Response> {
        let f = self.files.iter().find(|f| f.name == name)?;
        Some(f.respond(headers, version == Some(f.hash.as_str())))
    }

    /// The dashboard page and every file it loads, compressed: what a first visit downloads.
    pub fn first_load_bytes(&self) -> usize {
        self.index.compressed_len()
            + self
                .files
                .iter()
                .zip(SOURCES)
                .filter(|(f, s)| s.module || INDEX.contains(&format!("{{{{{}}}}}", f.name)))
                .map(|(f, _)| f)
                .map(Asset::compressed_len)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_file_by_hash_and_the_first_load_is_small() {
        let a = Assets::get();
        let html = String::from_utf8(a.index.raw.clone()).unwrap()
            + &String::from_utf8(a.me.raw.clone()).unwrap();
        let docs = String::from_utf8(a.docs.raw.clone()).unwrap();
        for f in &a.files {
            let link = format!("/assets/{}?v={}", f.name, f.hash);
            assert!(
                html.contains(&link) || docs.contains(&link),
                "{} not linked",
                f.name
            );
        }
        assert!(
            !html.contains("{{") && !docs.contains("{{"),
            "unreplaced placeholder"
        );
        assert!(
            a.first_load_bytes() < 600 * 1024,
            "{}",
            a.first_load_bytes()
        );
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            "gzip, deflate, br".parse().unwrap(),
        );
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "gzip;q=0, br".parse().unwrap());
        assert!(!accepts_gzip(&h));
    }
}
