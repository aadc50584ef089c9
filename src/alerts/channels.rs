//! Each platform's message format and signing, as its documentation states, and what counts
//! as a delivered message there:
//! - DingTalk robot: `markdown`; with a secret, `timestamp` (ms) and `sign` =
//!   URL-encoded Base64 of HMAC-SHA256(key = secret, message = "timestamp\nsecret") in the
//!   query; delivered when the answer's `errcode` is 0.
//! - Feishu (Lark) bot: `post`; with a secret, `timestamp` (s) and `sign` = Base64 of
//!   HMAC-SHA256(key = "timestamp\nsecret", message = empty) in the body; delivered when
//!   `code` (or the older `StatusCode`) is 0.
//! - WeCom (企业微信) group robot: `markdown`; delivered when `errcode` is 0.
//! - Slack incoming webhook: `text` + `blocks`; delivered on 2xx (Slack answers `ok`).
//! - Generic webhook: our JSON; with a secret, `X-QP-Signature: sha256=<hex HMAC-SHA256 of
//!   the body>`; delivered on 2xx.
//!
//! URLs and secrets are secrets: errors are reported without the URL, and listings mask them.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::settings::{ChannelKind, ChannelSettings, Lang};

/// What an alert says, before a platform's format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub title: String,
    pub lines: Vec<String>,
    pub link: Option<String>,
    /// For the generic webhook.
    pub rule: String,
    pub subject: String,
    pub details: Value,
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Values from callers may not become links or markup in a chat message.
fn defang(s: &str) -> String {
    s.replace('<', "＜")
        .replace('>', "＞")
        .replace('[', "［")
        .replace(']', "］")
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A request ready to send: URL, body, extra headers.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub url: String,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

fn view_label(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "在控制台查看",
        Lang::En => "Open in the dashboard",
    }
}

/// The platform's request for `m`, signed at `now_ms`.
pub fn build(c: &ChannelSettings, m: &Message, lang: Lang, now_ms: i64) -> Outgoing {
    let title = defang(&m.title);
    let lines: Vec<String> = m.lines.iter().map(|l| defang(l)).collect();
    let link = m.link.as_deref();
    let mut url = c.url.clone();
    let mut headers = Vec::new();
    let body = match c.kind {
        ChannelKind::DingTalk => {
            if let Some(secret) = &c.secret {
                url = dingtalk_signed(&url, secret, now_ms);
            }
            dingtalk(&title, &lines, link, lang)
        }
        ChannelKind::Feishu => feishu(&title, &lines, link, lang, c.secret.as_deref(), now_ms),
        ChannelKind::WeChatWork => wecom(&title, &lines, link, lang),
        ChannelKind::Slack => slack(m, lang),
        ChannelKind::Webhook => json!({
            "event": "alert",
            "rule": m.rule,
            "subject": m.subject,
            "title": m.title,
            "lines": m.lines,
            "details": m.details,
            "link": m.link,
            "timestamp": crate::timefmt::rfc3339(now_ms),
        }),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    if c.kind == ChannelKind::Webhook
        && let Some(secret) = &c.secret
    {
        headers.push((
            "x-qp-signature",
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(secret.as_bytes(), &body))
            ),
        ));
    }
    Outgoing { url, body, headers }
}

/// DingTalk's signed address: `timestamp` and `sign` (HMAC of the time and the secret).
fn dingtalk_signed(url: &str, secret: &str, now_ms: i64) -> String {
    let sign = b64(&hmac_sha256(
        secret.as_bytes(),
        format!("{now_ms}\n{secret}").as_bytes(),
    ));
    let sign: String = form_urlencoded::byte_serialize(sign.as_bytes()).collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}timestamp={now_ms}&sign={sign}")
}

fn dingtalk(title: &str, lines: &[String], link: Option<&str>, lang: Lang) -> Value {
    let mut text = format!("### {title}\n\n");
    for l in lines {
        text.push_str(&format!("- {l}\n"));
    }
    if let Some(link) = link {
        text.push_str(&format!("\n[{}]({link})\n", view_label(lang)));
    }
    json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
}

fn feishu(
    title: &str,
    lines: &[String],
    link: Option<&str>,
    lang: Lang,
    secret: Option<&str>,
    now_ms: i64,
) -> Value {
    let mut content: Vec<Value> = lines
        .iter()
        .map(|l| json!([{"tag": "text", "text": l}]))
        .collect();
    if let Some(link) = link {
        content.push(json!([{"tag": "a", "text": view_label(lang), "href": link}]));
    }
    let mut body = json!({
        "msg_type": "post",
        "content": {"post": {"zh_cn": {"title": title, "content": content}}},
    });
    if let Some(secret) = secret {
        let ts = now_ms.div_euclid(1000);
        let sign = b64(&hmac_sha256(format!("{ts}\n{secret}").as_bytes(), b""));
        body["timestamp"] = json!(ts.to_string());
        body["sign"] = json!(sign);
    }
    body
}

fn wecom(title: &str, lines: &[String], link: Option<&str>, lang: Lang) -> Value {
    let mut text = format!("**{title}**\n");
    for l in lines {
        text.push_str(&format!("> {l}\n"));
    }
    if let Some(link) = link {
        text.push_str(&format!("[{}]({link})", view_label(lang)));
    }
    json!({"msgtype": "markdown", "markdown": {"content": text}})
}

fn slack(m: &Message, lang: Lang) -> Value {
    let esc: Vec<String> = m.lines.iter().map(|l| slack_escape(l)).collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": m.title}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": esc.join("\n")}}),
    ];
    if let Some(link) = &m.link {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("<{link}|{}>", view_label(lang))}}));
    }
    json!({"text": format!("{}\n{}", m.title, m.lines.join("\n")), "blocks": blocks})
}

/// The platform's verdict on an answer: `Ok(())` when delivered, else why not.
pub fn verdict(kind: ChannelKind, status: u16, body: &[u8]) -> Result<(), String> {
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}"));
    }
    // (keys of the platform's result code, in order of preference; key of its message)
    let (codes, msg): (&[&str], &str) = match kind {
        ChannelKind::DingTalk | ChannelKind::WeChatWork => (&["errcode"], "errmsg"),
        ChannelKind::Feishu => (&["code", "StatusCode"], "msg"),
        ChannelKind::Slack | ChannelKind::Webhook => return Ok(()),
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| "answer is not JSON".to_owned())?;
    match codes.iter().find_map(|k| v.get(*k).and_then(Value::as_i64)) {
        Some(0) => Ok(()),
        Some(c) => Err(format!(
            "{} {c}: {}",
            codes[0],
            v.get(msg).and_then(Value::as_str).unwrap_or("")
        )),
        None => Err(format!("answer without {}", codes[0])),
    }
}

/// `scheme://host/…` with every path segment that could be a token and every query value
/// replaced by `****`.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut segs = path.split('/');
    let host = segs.next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    let mut out = format!("{scheme}://{host}");
    for s in segs {
        out.push('/');
        let word = s.len() <= 12 && s.chars().all(|c| c.is_ascii_alphabetic() || c == '-');
        out.push_str(if word { s } else { "****" });
    }
    if !query.is_empty() {
        let q: Vec<String> = query
            .split('&')
            .map(|kv| format!("{}=****", kv.split('=').next().unwrap_or("")))
            .collect();
        out.push('?');
        out.push_str(&q.join("&"));
    }
    out
}

/// One attempt's outcome.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub ok: bool,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// The platform's answer (trimmed), for the test endpoint.
    pub answer: String,
}

pub async fn send(http: &reqwest::Client, c: &ChannelSettings, out: Outgoing) -> Attempt {
    let mut rq = http
        .post(&out.url)
        .header("content-type", "application/json")
        .body(out.body);
    for (k, v) in out.headers {
        rq = rq.header(k, v);
    }
    match rq.send().await {
        Err(e) => Attempt {
            ok: false,
            http_status: None,
            // Without the URL: it carries the channel's token.
            error: Some(e.without_url().to_string()),
            answer: String::new(),
        },
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap_or_default();
            let answer: String = String::from_utf8_lossy(&body).chars().take(500).collect();
            match verdict(c.kind, status, &body) {
                Ok(()) => Attempt {
                    ok: true,
                    http_status: Some(status),
                    error: None,
                    answer,
                },
                Err(e) => Attempt {
                    ok: false,
                    http_status: Some(status),
                    error: Some(e),
                    answer,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(kind: ChannelKind, secret: Option<&str>) -> ChannelSettings {
        ChannelSettings {
            name: "c".into(),
            kind,
            url: "https://example.invalid/robot/send?access_token=tok".into(),
            secret: secret.map(str::to_owned),
            rules: vec![],
        }
    }

    #[test]
    fn dingtalk_sign_matches_the_documented_example_shape() {
        let o = build(
            &ch(ChannelKind::DingTalk, Some("SECxyz")),
            &Message {
                title: "t".into(),
                ..Message::default()
            },
            Lang::Zh,
            1_700_000_000_123,
        );
        let expected = b64(&hmac_sha256(b"SECxyz", b"1700000000123\nSECxyz"));
        let enc: String = form_urlencoded::byte_serialize(expected.as_bytes()).collect();
        assert!(
            o.url
                .ends_with(&format!("&timestamp=1700000000123&sign={enc}")),
            "{}",
            o.url
        );
    }

    #[test]
    fn verdicts_follow_each_platform() {
        assert!(
            verdict(
                ChannelKind::DingTalk,
                200,
                br#"{"errcode":0,"errmsg":"ok"}"#
            )
            .is_ok()
        );
        assert!(
            verdict(
                ChannelKind::DingTalk,
                200,
                br#"{"errcode":310000,"errmsg":"sign not match"}"#
            )
            .is_err()
        );
        assert!(
            verdict(
                ChannelKind::Feishu,
                200,
                br#"{"code":19021,"msg":"sign match fail"}"#
            )
            .is_err()
        );
        assert!(verdict(ChannelKind::Feishu, 200, br#"{"StatusCode":0}"#).is_ok());
        assert!(verdict(ChannelKind::Slack, 200, b"ok").is_ok());
        assert!(verdict(ChannelKind::Webhook, 500, b"").is_err());
    }

    #[test]
    fn masked_urls_keep_no_token() {
        let m = mask_url("https://oapi.dingtalk.com/robot/send?access_token=abcdef123456");
        assert_eq!(m, "https://oapi.dingtalk.com/robot/send?access_token=****");
        let m = mask_url("https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX");
        assert_eq!(m, "https://hooks.slack.com/services/****/****/****");
        let m = mask_url("https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d3c-aaaa-bbbb");
        assert!(!m.contains("0f1e2d3c"), "{m}");
        let m = mask_url("http://user:pw@127.0.0.1:9/x");
        assert!(!m.contains("pw"), "{m}");
    }

    #[test]
    fn caller_values_cannot_become_links() {
        let o = build(
            &ch(ChannelKind::WeChatWork, None),
            &Message {
                title: "t".into(),
                lines: vec!["[x](http://evil) <b>".into()],
                ..Message::default()
            },
            Lang::En,
            0,
        );
        let body = String::from_utf8(o.body).unwrap();
        assert!(!body.contains("[x](") && !body.contains("<b>"), "{body}");
    }
}
