//! One CAS list page, read leniently and kept as text.
//!
//! The page's body is repaired (see [`crate::json::lenient`]) so that no single odd record can
//! fail the page, then its records are located in one pass and kept as spans of that text:
//! they travel to the queue as the bytes CAS sent (repaired), never as `Value` trees, so a
//! page costs about twice its size in memory and nothing more.

use super::CasError;
use crate::json::lenient;
use crate::json::Record;
use crate::source::{Page, RecordKey};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Which fields of a list's records the poll keys on.
#[derive(Clone, Copy, Debug)]
pub struct Keys {
    /// The field the list is ordered and windowed by.
    pub pos: &'static str,
    /// The fields whose change makes a record worth forwarding again.
    pub fingerprint: &'static [&'static str],
}

/// Alerts: ordered by `date` (the record's `timestamp`); a change of resolution or
/// severity is a change of the alert. (`statusValue` is only read/unread/archived: an
/// analyst opening an alert is not a change.)
pub(crate) const ALERT_KEYS: Keys = Keys {
    pos: "timestamp",
    fingerprint: &["resolutionStatusValue", "severityValue"],
};

/// Activities: windowed by `created`, when CAS stored the record.
pub(crate) const ACTIVITY_KEYS: Keys = Keys {
    pos: "created",
    fingerprint: &[],
};

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(rename = "hasNext", default)]
    has_next: Option<Value>,
    #[serde(rename = "nextQueryFilters", default)]
    next_query_filters: Option<Value>,
}

/// A page's members, its records borrowed from its text.
type Members<'a> = (Vec<Record<'a>>, Option<Value>, Option<Value>);

/// Reads the page and its records in one pass; fails on a record that is not an object.
fn one_pass(text: &str) -> Result<Members<'_>, serde_json::Error> {
    struct PageVisitor<'a> {
        text: &'a str,
    }
    impl<'a> Visitor<'a> for PageVisitor<'a> {
        type Value = Members<'a>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a CAS list page")
        }
        fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
            let (mut data, mut has_next, mut next) = (None, None, None);
            while let Some(key) = map.next_key::<std::borrow::Cow<'a, str>>()? {
                match key.as_ref() {
                    "data" => data = Some(map.next_value_seed(Record::array_seed(self.text))?),
                    "hasNext" => has_next = Some(map.next_value()?),
                    "nextQueryFilters" => next = Some(map.next_value()?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let data = data.ok_or_else(|| de::Error::custom("no \"data\" field"))?;
            Ok((data, has_next, next))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = de.deserialize_map(PageVisitor { text })?;
    de.end()?;
    Ok(members)
}

/// Reads the page, then its records (any JSON values) on their own.
fn two_passes(text: &str) -> Result<Members<'_>, String> {
    let wire: Wire = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let data = wire.data.ok_or_else(|| "no \"data\" field".to_string())?;
    if !data.get().starts_with('[') {
        return Err("\"data\" is not an array".into());
    }
    let records = Record::batch(data.get()).map_err(|e| format!("\"data\": {e}"))?;
    Ok((records, wire.has_next, wire.next_query_filters))
}

/// Reads a list page's body, keying its records by `keys`; the body's buffer becomes the
/// page's text (see [`lenient::repair_bytes`]).
pub(crate) fn parse(path: &str, body: impl Into<Vec<u8>>, keys: Keys) -> Result<Page, CasError> {
    let shape = |detail: String| CasError::Shape {
        path: path.into(),
        detail,
    };
    let (text, repairs) =
        lenient::repair_bytes(body).map_err(|e| shape(format!("not JSON: {e}")))?;
    if !text.trim_start().starts_with('{') {
        return Err(shape("the body is not a JSON object".into()));
    }
    // One pass over the page when every record is an object (the rule); the page and
    // then its records separately otherwise, so that odd records are still kept.
    let (records, has_next, next_query_filters) = match one_pass(&text) {
        Ok(read) => read,
        Err(_) => two_passes(&text).map_err(shape)?,
    };
    let has_next = match has_next {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(shape("\"hasNext\" is not a boolean".into())),
    };
    let next_query_filters = match next_query_filters {
        None | Some(Value::Null) => None,
        Some(Value::Object(f)) => Some(f),
        Some(_) => return Err(shape("\"nextQueryFilters\" is not an object".into())),
    };
    let base = text.as_ptr() as usize;
    let records = records
        .iter()
        .map(|r| {
            let start = r.text().as_ptr() as usize - base;
            RecordKey {
                span: start..start + r.text().len(),
                id: r
                    .pointer("/_id")
                    .and_then(|v| v.as_str().map(str::to_owned)),
                pos: r.get(keys.pos).and_then(|v| v.get().parse::<i64>().ok()),
                fingerprint: keys
                    .fingerprint
                    .iter()
                    .map(|f| r.get(f).map_or("", |v| v.get()))
                    .collect::<Vec<_>>()
                    .join("/"),
            }
        })
        .collect();
    Ok(Page {
        text,
        records,
        has_next,
        next_query_filters,
        repairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_from_the_documented_fixtures() {
        let p = parse(
            "api/v1/alerts/",
            include_bytes!("../../tests/fixtures/cas-alerts-page.json"),
            ALERT_KEYS,
        )
        .unwrap();
        assert_eq!(p.records.len(), 1);
        assert!(p.has_next);
        assert!(p.records[0].id.is_some() && p.records[0].pos.is_some());
        assert_eq!(p.records[0].fingerprint, "0/1", "resolution/severity");
        let rec: Value = serde_json::from_str(p.text(&p.records[0])).unwrap();
        assert_eq!(rec["_id"].as_str(), p.records[0].id.as_deref());
        let p = parse(
            "api/v1/activities/",
            include_bytes!("../../tests/fixtures/cas-activities-scan-page.json"),
            ACTIVITY_KEYS,
        )
        .unwrap();
        assert!(p.next_query_filters.unwrap().contains_key("created"));
    }

    #[test]
    fn wrong_shapes_are_named() {
        let err = |body: &str| {
            parse("/x", body.as_bytes(), ACTIVITY_KEYS)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"data": {}}"#).contains("\"data\" is not an array"));
        assert!(err("[]").contains("not a JSON object"));
        assert!(err(r#"{"hasNext": true}"#).contains("no \"data\" field"));
        assert!(err(r#"{"data": [], "hasNext": 1}"#).contains("not a boolean"));
        assert!(err(r#"{"data": [{"a":1}"#).contains("not JSON"));
    }

    #[test]
    fn hostile_records_are_repaired_and_the_rest_of_the_page_is_intact() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let body = format!(
            r#"{{"data":[{{"_id":"a","created":1,"x":"\udc00"}},{{"_id":"b","created":2,"n":1e400}},
            {{"_id":"c","created":3,"d":{deep}}},{{"_id":"d","created":4,"bin":"@"}},7,{{"created":"5"}}],"hasNext":false}}"#
        );
        // Invalid UTF-8 inside a string.
        let bytes: Vec<u8> = body
            .into_bytes()
            .into_iter()
            .map(|b| if b == b'@' { 0xff } else { b })
            .collect();
        let p = parse("api/v1/activities/", bytes, ACTIVITY_KEYS).unwrap();
        let ids: Vec<_> = p.records.iter().map(|r| r.id.clone()).collect();
        assert_eq!(
            ids,
            [
                Some("a".into()),
                Some("b".into()),
                Some("c".into()),
                Some("d".into()),
                None,
                None
            ]
        );
        let pos: Vec<_> = p.records.iter().map(|r| r.pos).collect();
        assert_eq!(pos, [Some(1), Some(2), Some(3), Some(4), None, None]);
        assert_eq!(p.repairs.escapes, 2, "the surrogate and the invalid UTF-8");
        assert_eq!(p.repairs.numbers, 1);
        assert_eq!(p.repairs.deep, 1);
        for r in &p.records {
            serde_json::from_str::<Value>(p.text(r)).unwrap();
        }
        assert_eq!(p.text(&p.records[4]), "7");
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_every_record_read_is_strict_json() {
        let seeds = vec![
            include_bytes!("../../tests/fixtures/cas-alerts-page.json").to_vec(),
            include_bytes!("../../tests/fixtures/cas-activities-scan-page.json").to_vec(),
        ];
        let mut read = 0;
        for input in crate::fuzz::mutations(&seeds, 20_000, 7) {
            for keys in [ALERT_KEYS, ACTIVITY_KEYS] {
                if let Ok(p) = parse("/x", &input[..], keys) {
                    read += 1;
                    for r in &p.records {
                        serde_json::from_str::<serde::de::IgnoredAny>(p.text(r)).unwrap();
                    }
                }
            }
        }
        assert!(read > 1_000, "{read}");
    }
}
