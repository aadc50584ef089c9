//! CSV of the same rows the JSON answers carry: header = the JSON field names, UTF-8 with a
//! BOM (so spreadsheet programs read Chinese names right), streamed in chunks, and cells
//! that a spreadsheet would run as formulas neutralised.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

const ROWS_PER_CHUNK: usize = 500;

/// A text cell starting with `= + - @` (or a tab or CR) is prefixed with `'`.
pub fn neutralise(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => neutralise(s),
        Value::Array(_) | Value::Object(_) => neutralise(&v.to_string()),
        other => other.to_string(),
    }
}

fn encode(rows: &[Vec<String>]) -> Bytes {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        let _ = w.write_record(r);
    }
    Bytes::from(w.into_inner().unwrap_or_default())
}

pub fn response(name: &str, rows: Vec<Value>) -> Response {
    let header: Vec<String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let mut first = b"\xEF\xBB\xBF".to_vec();
    first.extend_from_slice(&encode(std::slice::from_ref(&header)));
    let body_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            header
                .iter()
                .map(|h| cell(r.get(h).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let chunks: Vec<Result<Bytes, std::io::Error>> = std::iter::once(Ok(Bytes::from(first)))
        .chain(body_rows.chunks(ROWS_PER_CHUNK).map(|c| Ok(encode(c))))
        .collect();
    let disposition = format!("attachment; filename=\"{name}.csv\"");
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralise("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(neutralise("@cmd"), "'@cmd");
        assert_eq!(neutralise("张三"), "张三");
        assert_eq!(cell(&serde_json::json!(-5)), "-5");
    }
}
