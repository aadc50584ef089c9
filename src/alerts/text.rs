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
