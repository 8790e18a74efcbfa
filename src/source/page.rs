//! A page of records kept as text: the records travel to the queue as the bytes the
//! service sent (repaired), never as `Value` trees, so a page costs about twice its size.

use crate::json::lenient::Repairs;
use serde_json::{Map, Value};
use std::ops::Range;

/// One record of a page: where its text is, and the fields the poll keys on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordKey {
    /// Where the record's text is in its page's.
    pub(crate) span: Range<usize>,
    /// The record's `_id`, when it has a string one.
    pub id: Option<String>,
    /// The record's position (`timestamp` for alerts, `created` for activities), when it
    /// has an integer one.
    pub pos: Option<i64>,
    /// The raw text of the fields whose change makes the record worth forwarding again, joined with `/` (empty
    /// for a missing field).
    pub fingerprint: String,
}

/// A page of records as a service listed them, kept as its (repaired) text.
#[derive(Debug)]
pub struct Page {
    /// The page's text, which every record's span points into.
    pub(crate) text: String,
    /// The records, in the order CAS listed them.
    pub records: Vec<RecordKey>,
    /// Whether more records match.
    pub has_next: bool,
    /// Scan mode: the filters that fetch the next page.
    pub next_query_filters: Option<Map<String, Value>>,
    /// What had to be repaired for the page to be read.
    pub repairs: Repairs,
}

impl Page {
    /// A record's JSON text.
    pub fn text(&self, record: &RecordKey) -> &str {
        &self.text[record.span.clone()]
    }

    /// A page of records made here rather than listed as text (Graph's JSON values).
    pub fn from_values(records: &[Value]) -> Page {
        let mut text = String::from("[");
        let mut keys = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let start = text.len();
            text.push_str(&r.to_string());
            keys.push(RecordKey {
                span: start..text.len(),
                id: None,
                pos: None,
                fingerprint: String::new(),
            });
        }
        text.push(']');
        Page {
            text,
            records: keys,
            has_next: false,
            next_query_filters: None,
            repairs: Repairs::default(),
        }
    }
}
