//! Shapes rows for the Logs Ingestion limits: no field value over 32,766 bytes, and
//! request bodies (JSON arrays) no larger than the per-call limit uncompressed — the
//! service applies its 1 MiB limit to both forms, and the uncompressed one is always the
//! larger — filled as close to it as the rows allow.

use crate::queue::envelope::json_array;
use serde_json::Value;

/// The Logs Ingestion API's per-call limit.
pub const MAX_CALL_BYTES: usize = 1024 * 1024;
/// The longest field value the service keeps whole.
pub const MAX_FIELD_BYTES: usize = 32_766;
/// The column that names the fields [`fit_fields`] cut.
pub const TRUNCATED_COLUMN: &str = "TruncatedFields";

/// A row too large for any call even after its fields were cut.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("row {index} is {size} bytes, over the service's {MAX_CALL_BYTES}-byte call limit")]
pub struct RowTooLarge {
    /// Its position in the batch.
    pub index: usize,
    /// Its serialized size.
    pub size: usize,
}

/// Cuts every field value longer than [`MAX_FIELD_BYTES`] (a dynamic value is measured
/// as JSON text and, when too long, becomes that text cut short), and lists the cut
/// columns in `TruncatedFields`. The service would truncate such values anyway, and a
/// dynamic one into invalid JSON; doing it here keeps each row under the call limit, so
/// one huge record can never cause a 413 loop. `SourceRecord` is cut last of all in
/// effect: the other columns keep the mapped parts of it whole.
pub fn fit_fields(row: &mut Value) -> bool {
    let Value::Object(map) = row else {
        return false;
    };
    let mut cut = Vec::new();
    for (name, value) in map.iter_mut() {
        let replacement = match value {
            Value::String(s) if s.len() > MAX_FIELD_BYTES => {
                Some(truncate(s, MAX_FIELD_BYTES).to_string())
            }
            Value::Object(_) | Value::Array(_) => {
                let text = value.to_string();
                (text.len() > MAX_FIELD_BYTES).then(|| truncate(&text, MAX_FIELD_BYTES).to_string())
            }
            _ => None,
        };
        if let Some(r) = replacement {
            *value = Value::String(r);
            cut.push(name.clone());
        }
    }
    if cut.is_empty() {
        return false;
    }
    map.insert(TRUNCATED_COLUMN.into(), Value::String(cut.join(",")));
    true
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Groups serialized rows into bodies of at most `limit` bytes, preserving order; a row
/// larger than `limit` (but within the service's hard limit) travels alone. Returns the
/// index ranges, so callers can retry or mark parts individually.
pub fn split(rows: &[Vec<u8>], limit: usize) -> Result<Vec<std::ops::Range<usize>>, RowTooLarge> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut size = 2; // the brackets
    for (i, r) in rows.iter().enumerate() {
        if r.len() + 2 > MAX_CALL_BYTES {
            return Err(RowTooLarge {
                index: i,
                size: r.len(),
            });
        }
        let add = r.len() + usize::from(i > start);
        if i > start && size + add > limit {
            parts.push(start..i);
            start = i;
            size = 2 + r.len();
        } else {
            size += add;
        }
    }
    if start < rows.len() {
        parts.push(start..rows.len());
    }
    Ok(parts)
}

/// The body for one part.
pub fn body(rows: &[Vec<u8>]) -> Vec<u8> {
    json_array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_cover_every_row_once_and_respect_the_limit() {
        let rows: Vec<Vec<u8>> = (0..1000).map(|i| vec![b'1'; 50 + (i * 37) % 400]).collect();
        let parts = split(&rows, 10_000).unwrap();
        let mut next = 0;
        for p in &parts {
            assert_eq!(p.start, next);
            next = p.end;
            let len = body(&rows[p.clone()]).len();
            assert!(len <= 10_000, "{len}");
        }
        assert_eq!(next, rows.len());
        // Filled: every part but the last could not take its successor's first row.
        for w in parts.windows(2) {
            let with_next = body(&rows[w[0].start..w[1].start + 1]).len();
            assert!(with_next > 10_000);
        }
    }

    #[test]
    fn an_exact_fit_is_one_part_and_a_row_over_the_limit_travels_alone() {
        let rows = vec![vec![b'1'; 4], vec![b'2'; 3]];
        assert_eq!(split(&rows, 10).unwrap(), vec![0..2]); // [1111,222] is 10 bytes
        assert_eq!(split(&rows, 9).unwrap(), vec![0..1, 1..2]);
        let rows = vec![vec![b'1'; 4], vec![b'x'; 20], vec![b'2'; 3]];
        assert_eq!(split(&rows, 10).unwrap(), vec![0..1, 1..2, 2..3]);
        assert_eq!(
            split(&[vec![b'x'; MAX_CALL_BYTES]], 10),
            Err(RowTooLarge {
                index: 0,
                size: MAX_CALL_BYTES
            })
        );
    }

    #[test]
    fn long_fields_are_cut_at_the_service_limit_and_named() {
        let long = "é".repeat(20_000); // 40,000 bytes, two per character
        let mut row = json!({"TimeGenerated": "2026-01-01T00:00:00Z", "Description": long, "SourceRecord": {"blob": "x".repeat(40_000)}, "Small": {"a": 1}});
        assert!(fit_fields(&mut row));
        let d = row["Description"].as_str().unwrap();
        assert!(
            d.len() <= MAX_FIELD_BYTES
                && d.len() >= MAX_FIELD_BYTES - 1
                && d.chars().all(|c| c == 'é')
        );
        let s = row["SourceRecord"].as_str().unwrap();
        assert!(s.starts_with("{\"blob\":\"xxx") && s.len() == MAX_FIELD_BYTES);
        assert_eq!(row["Small"], json!({"a": 1}));
        assert_eq!(row[TRUNCATED_COLUMN], "Description,SourceRecord");
        let mut fine = json!({"A": "short"});
        assert!(!fit_fields(&mut fine));
        assert!(fine.get(TRUNCATED_COLUMN).is_none());
    }
}
