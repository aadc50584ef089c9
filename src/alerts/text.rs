//! Alert wording helpers: both languages side by side, names with their ids.

use super::settings::Lang;

/// `zh` or `en` with each `{}` filled by the next argument, in order.
pub fn say(lang: Lang, zh: &str, en: &str, args: &[&dyn std::fmt::Display]) -> String {
    let template = if lang == Lang::Zh { zh } else { en };
    let mut out = String::with_capacity(template.len() + 16);
    let mut args = args.iter();
    let mut parts = template.split("{}");
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for part in parts {
        if let Some(a) = args.next() {
            out.push_str(&a.to_string());
        }
        out.push_str(part);
    }
    out
}

/// `name (#id)`, or `#id` when the name is empty.
/// A user as alert texts name it: user 0 is a key without an owner, "no user" (`—`).
pub fn user_named(name: &str, id: i64) -> String {
    if id == 0 && name.is_empty() {
        "—".to_owned()
    } else {
        named(name, id)
    }
}

pub fn named(name: &str, id: i64) -> String {
    if name.is_empty() {
        format!("#{id}")
    } else {
        format!("{name} (#{id})")
    }
}

/// How alert texts speak: their language and the zone their times are written in.
#[derive(Debug, Clone, Copy)]
pub struct Voice {
    pub lang: super::settings::Lang,
    pub tz: chrono_tz::Tz,
}

impl Voice {
    /// `ms` as ISO 8601 with the zone's offset (`2026-12-03T18:00:00+08:00`).
    pub fn time(&self, ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| {
                t.with_timezone(&self.tz)
                    .format("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            },
        )
    }

    /// An RFC 3339 time (as the monitor answers) in the zone, or as given if it is not one.
    pub fn time_text(&self, rfc: &str) -> String {
        chrono::DateTime::parse_from_rfc3339(rfc)
            .map(|t| self.time(t.timestamp_millis()))
            .unwrap_or_else(|_| rfc.to_owned())
    }
}
