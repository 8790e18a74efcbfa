//! A CAS record as the mapping reads it: its top-level fields located but not parsed.
//!
//! Parsing every record into a `serde_json::Value` tree and serializing the whole of it
//! again into `SourceRecord` (and its bulk again into `RawEventData`) was most of an
//! ingest's CPU time. A `Record` borrows the record's text instead: large fields pass
//! through to the row as raw JSON, and only the small fields a column needs are parsed,
//! each at most once.

use serde_json::value::RawValue;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// One record, borrowed from the batch's JSON text.
pub struct Record<'a> {
    raw: &'a RawValue,
    fields: BTreeMap<String, &'a RawValue>,
    parsed: RefCell<HashMap<String, Value>>,
    /// Set when the record is not a JSON object (it is still forwarded, whole).
    pub not_an_object: bool,
}

impl<'a> Record<'a> {
    /// Locates the top-level fields of `raw`.
    pub fn new(raw: &'a RawValue) -> Self {
        let (fields, not_an_object) =
            match serde_json::from_str::<BTreeMap<String, &'a RawValue>>(raw.get()) {
                Ok(f) => (f, false),
                Err(_) => (BTreeMap::new(), true),
            };
        Record {
            raw,
            fields,
            parsed: RefCell::new(HashMap::new()),
            not_an_object,
        }
    }

    /// The whole record, as sent by CAS.
    pub fn raw(&self) -> &'a RawValue {
        self.raw
    }

    /// A top-level field, unparsed.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.get(key).copied()
    }

    /// The value at a JSON pointer (`/device/clientIP`), parsing only its top-level field,
    /// once per record however many columns read it.
    pub fn pointer(&self, pointer: &str) -> Option<Value> {
        let rest = pointer.strip_prefix('/')?;
        let (top, inner) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let mut cache = self.parsed.borrow_mut();
        if !cache.contains_key(top) {
            let raw = self.get(top)?;
            cache.insert(
                top.to_string(),
                serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            );
        }
        let value = &cache[top];
        match inner {
            None => Some(value.clone()),
            Some(i) => value.pointer(i).cloned(),
        }
    }
}

/// A record's text as a raw JSON value, for callers that hold a parsed `Value`.
pub fn raw_of(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).expect("a serialized Value is valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_without_parsing_and_pointers_reach_inside() {
        let raw = raw_of(&serde_json::json!({"a": {"b": [1, 2]}, "big": {"x": "y"}, "s": "t"}));
        let r = Record::new(&raw);
        assert_eq!(r.get("big").unwrap().get(), r#"{"x":"y"}"#);
        assert_eq!(r.pointer("/a/b/1"), Some(Value::from(2)));
        assert_eq!(r.pointer("/s"), Some(Value::from("t")));
        assert_eq!(r.pointer("/missing/x"), None);
        assert!(!r.not_an_object);
        let raw = raw_of(&serde_json::json!([1, 2]));
        assert!(Record::new(&raw).not_an_object);
    }
}
