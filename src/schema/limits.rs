//! The service's limit on one field, applied to rows before they are sent: no value over
//! 32,766 bytes, and the cut columns named, so no record can make a call too large.

use serde_json::Value;

/// The longest field value the service keeps whole.
pub(crate) const MAX_FIELD_BYTES: usize = 32_766;
/// The column that names the fields [`fit_fields`] cut.
pub(crate) const TRUNCATED_COLUMN: &str = "TruncatedFields";

/// Cuts every field value longer than [`MAX_FIELD_BYTES`] (a dynamic value is measured
/// as JSON text and, when too long, becomes that text cut short), and lists the cut
/// columns in `TruncatedFields`. The service would truncate such values anyway, and a
/// dynamic one into invalid JSON; doing it here keeps each row under the call limit, so
/// one huge record can never cause a 413 loop. `SourceRecord` is cut last of all in
/// effect: the other columns keep the mapped parts of it whole.
pub(crate) fn fit_fields(row: &mut Value) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
