//! A CAS record as the mapping reads it: its top-level fields located but not parsed.
//!
//! Parsing every record into a `serde_json::Value` tree and serializing the whole of it
//! again into `SourceRecord` (and its bulk again into `RawEventData`) was most of an
//! ingest's CPU time. A `Record` borrows the record's text instead: large fields pass
//! through to the row as raw JSON, and only the small fields a column needs are parsed,
//! each at most once.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

/// One record, borrowed from the batch's JSON text.
///
/// Fields sit in a small vector with borrowed names, and parsed values in another keyed
/// by position: a record has a few dozen fields, so a linear search beats hashing, and
/// the allocator (a fifth of an ingest's CPU when every key was a `String`) stays idle.
pub struct Record<'a> {
    raw: &'a RawValue,
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    parsed: RefCell<Vec<(usize, Value)>>,
    /// Set when the record is not a JSON object (it is still forwarded, whole).
    pub not_an_object: bool,
}

impl<'a> Record<'a> {
    /// Locates the top-level fields of `raw`.
    pub fn new(raw: &'a RawValue) -> Self {
        let (fields, not_an_object) = match serde_json::from_str::<Fields<'a>>(raw.get()) {
            Ok(f) => (f.0, false),
            Err(_) => (Vec::new(), true),
        };
        Record {
            raw,
            fields,
            parsed: RefCell::new(Vec::new()),
            not_an_object,
        }
    }

    /// The position of a top-level field; the last one wins when a name repeats, as it
    /// does when JSON is read into a map.
    fn index(&self, key: &str) -> Option<usize> {
        self.fields.iter().rposition(|(k, _)| k == key)
    }

    /// The whole record, as sent by CAS.
    pub fn raw(&self) -> &'a RawValue {
        self.raw
    }

    /// The record without the top-level field `key`, for a `SourceRecord` whose table
    /// carries that field whole in a column of its own: Sentinel bills every ingested
    /// byte, and the 2 GB a minute a DCR accepts counts them too, so sending the bulk of
    /// a record twice would halve what a customer gets for both. The record is unchanged
    /// (borrowed) when the field is absent, and also, so nothing is ever lost, if the
    /// cut-down text were somehow not valid JSON.
    pub fn without(&self, key: &str) -> Cow<'a, RawValue> {
        let whole = Cow::Borrowed(self.raw);
        let Some(value) = self.get(key) else {
            return whole;
        };
        let Some((start, end)) = member_span(self.raw.get(), value.get()) else {
            return whole;
        };
        let text = self.raw.get();
        let mut cut = String::with_capacity(text.len() - (end - start));
        cut.push_str(&text[..start]);
        cut.push_str(&text[end..]);
        match RawValue::from_string(cut) {
            Ok(raw) => Cow::Owned(raw),
            Err(_) => whole,
        }
    }

    /// A top-level field, unparsed.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.index(key).map(|i| self.fields[i].1)
    }

    /// The value at a JSON pointer (`/device/clientIP`), parsing only its top-level field,
    /// once per record however many columns read it.
    pub fn pointer(&self, pointer: &str) -> Option<Value> {
        let rest = pointer.strip_prefix('/')?;
        let (top, inner) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let field = self.index(top)?;
        let mut cache = self.parsed.borrow_mut();
        let at = match cache.iter().position(|(i, _)| *i == field) {
            Some(at) => at,
            None => {
                let value = serde_json::from_str(self.fields[field].1.get()).unwrap_or(Value::Null);
                cache.push((field, value));
                cache.len() - 1
            }
        };
        let value = &cache[at].1;
        match inner {
            None => Some(value.clone()),
            Some(i) => value.pointer(i).cloned(),
        }
    }
}

/// A JSON object's members in order, names borrowed unless they hold escapes.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Deserialize<'a> for Fields<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'a> Visitor<'a> for V {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(32));
                while let Some(Name(k)) = map.next_key()? {
                    fields.push((k, map.next_value()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// A member name, borrowed from the text when it can be.
struct Name<'a>(Cow<'a, str>);

impl<'a> Deserialize<'a> for Name<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'a> Visitor<'a> for V {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'a str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The byte range of the object member whose value is `value` (a slice of `object`),
/// from its key to its value, with one separating comma, so that removing the range
/// leaves a valid object.
fn member_span(object: &str, value: &str) -> Option<(usize, usize)> {
    let bytes = object.as_bytes();
    let value_start = (value.as_ptr() as usize).checked_sub(object.as_ptr() as usize)?;
    let value_end = value_start + value.len();
    if value_end > bytes.len() {
        return None;
    }
    let skip_back = |mut i: usize| {
        while i > 0 && bytes[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        i
    };
    let skip_fwd = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    // Back over `"key" :` to the key's opening quote: the first quote not escaped, that
    // is, not preceded by an odd run of backslashes.
    let colon = skip_back(value_start);
    if colon == 0 || bytes[colon - 1] != b':' {
        return None;
    }
    let key_end = skip_back(colon - 1);
    if key_end == 0 || bytes[key_end - 1] != b'"' {
        return None;
    }
    let mut i = key_end - 1;
    let key_start = loop {
        i = object[..i].rfind('"')?;
        let slashes = bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count();
        if slashes % 2 == 0 {
            break i;
        }
    };
    let after = skip_fwd(value_end);
    if bytes.get(after) == Some(&b',') {
        return Some((key_start, after + 1));
    }
    let before = skip_back(key_start);
    if before > 0 && bytes[before - 1] == b',' {
        return Some((before - 1, value_end));
    }
    Some((key_start, value_end))
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

    #[test]
    fn escaped_names_are_found_and_a_repeated_name_reads_as_its_last_value() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"a\u0062":1,"d":{"x":1},"d":{"x":2}}"#).unwrap();
        let r = Record::new(&raw);
        assert_eq!(r.pointer("/ab"), Some(Value::from(1)));
        assert_eq!(r.pointer("/d/x"), Some(Value::from(2)));
        assert_eq!(r.get("d").unwrap().get(), r#"{"x":2}"#);
    }

    #[test]
    fn a_field_is_cut_out_wherever_it_sits_and_the_rest_is_kept_verbatim() {
        let cases = [
            (
                r#"{"a":1,"big":{"x":[1,"}"]},"c":"d"}"#,
                r#"{"a":1,"c":"d"}"#,
            ),
            (r#"{"big":[1,2], "a":1}"#, r#"{ "a":1}"#),
            (r#"{ "a" : 1 , "big" : "z" }"#, r#"{ "a" : 1  }"#),
            (r#"{"big":null}"#, r#"{}"#),
            (r#"{"q\"\\":"\"","big":1}"#, r#"{"q\"\\":"\""}"#),
            (r#"{"a":"big","b\\":2,"big":3}"#, r#"{"a":"big","b\\":2}"#),
            (r#"{"a":1,"bi\u0067":2}"#, r#"{"a":1}"#),
            (r#"{"a":1}"#, r#"{"a":1}"#),
        ];
        for (input, want) in cases {
            let raw: Box<RawValue> = serde_json::from_str(input).unwrap();
            let rec = Record::new(&raw);
            let cut = rec.without("big");
            assert_eq!(cut.get(), want, "{input}");
            let before: Value = serde_json::from_str(input).unwrap();
            let mut expected = before.as_object().unwrap().clone();
            expected.remove("big");
            let after: Value = serde_json::from_str(cut.get()).unwrap();
            assert_eq!(after, Value::Object(expected));
        }
        let raw: Box<RawValue> = serde_json::from_str(r#"{"a":1}"#).unwrap();
        assert!(matches!(Record::new(&raw).without("big"), Cow::Borrowed(_)));
    }
}
