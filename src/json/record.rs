//! A CAS record as the mapping reads it: its top-level fields located but not parsed.
//!
//! Parsing every record into a `serde_json::Value` tree and serializing the whole of it
//! again into `SourceRecord` (and its bulk again into `RawEventData`) was most of an
//! ingest's CPU time. A `Record` borrows the record's text instead: large fields pass
//! through to the row as raw JSON, and only the small values a column needs are parsed.
//!
//! A batch is read in one pass: each record's members are located as the array is
//! parsed, and the record's own text is the span from its `{` to its `}`. (Reading the
//! array as raw values and then each record again scanned every byte twice.)

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// One record, borrowed from the batch's JSON text.
///
/// Fields sit in a small vector with borrowed names: a record has a few dozen fields, so
/// a linear search beats hashing, and the allocator stays idle.
pub struct Record<'a> {
    text: &'a str,
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// Set when the record is not a JSON object (it is still forwarded, whole).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // read by the tests alone
    pub not_an_object: bool,
}

impl<'a> Record<'a> {
    /// Locates the top-level fields of one record.
    pub fn new(raw: &'a RawValue) -> Self {
        let text = raw.get();
        let (fields, not_an_object) = match serde_json::from_str::<Fields<'a>>(text) {
            Ok(f) => (f.0, false),
            Err(_) => (Vec::new(), true),
        };
        Record {
            text,
            fields,
            not_an_object,
        }
    }

    /// Reads a batch (a JSON array of records) in one pass. A batch with anything but
    /// non-empty objects in it is read the slow way, record by record, so odd records
    /// are still forwarded whole; invalid JSON is an error.
    pub fn batch(text: &'a str) -> Result<Vec<Record<'a>>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fast = BatchSeed { text }
            .deserialize(&mut de)
            .and_then(|records| de.end().map(|()| records));
        match fast {
            Ok(records) => Ok(records),
            Err(_) => {
                let raws: Vec<&'a RawValue> = serde_json::from_str(text)?;
                Ok(raws.into_iter().map(Record::new).collect())
            }
        }
    }

    /// Reads an array of records in place within a larger document whose whole text is
    /// `text` (a CAS page's `data`): the same one-pass reading as [`Record::batch`], for a
    /// caller deserializing the document around it. Fails on anything but non-empty objects.
    pub fn array_seed(text: &'a str) -> impl DeserializeSeed<'a, Value = Vec<Record<'a>>> {
        BatchSeed { text }
    }

    /// The whole record, as sent by CAS.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The record without the top-level field `key`, for a `SourceRecord` whose table
    /// carries that field whole in a column of its own: Sentinel bills every ingested
    /// byte, and the 2 GB a minute a DCR accepts counts them too, so sending the bulk of
    /// a record twice would halve what a customer gets for both. The whole record when
    /// the field is absent.
    pub fn without(&self, key: &str) -> SourceText<'a> {
        let whole = SourceText::whole(self.text);
        let Some(value) = self.get(key) else {
            return whole;
        };
        let Some((start, end)) = member_span(self.text, value.get()) else {
            return whole;
        };
        SourceText {
            head: &self.text[..start],
            tail: &self.text[end..],
            whole: self.text,
        }
    }

    /// A top-level field, unparsed.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        member(&self.fields, key)
    }

    /// The value at a JSON pointer (`/device/clientIP`). Objects and arrays on the way
    /// are only scanned for the member asked for; just the value found is parsed. (Parsing
    /// each top-level field into a `Value` tree on the way was a sixth of an ingest's CPU.)
    pub fn pointer(&self, pointer: &str) -> Option<Value> {
        let mut tokens = pointer.strip_prefix('/')?.split('/').map(unescape_token);
        let mut raw = self.get(&tokens.next()?)?;
        for token in tokens {
            raw = child(raw, &token)?;
        }
        Some(serde_json::from_str(raw.get()).unwrap_or(Value::Null))
    }
}

/// A JSON pointer token with `~1` and `~0` read as `/` and `~`.
fn unescape_token(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// The member `key` of an object's members; the last one wins when a name repeats, as
/// it does when JSON is read into a map.
fn member<'a>(members: &[(Cow<'a, str>, &'a RawValue)], key: &str) -> Option<&'a RawValue> {
    members
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
}

/// The member `key` of an object, or the element at index `key` of an array.
fn child<'a>(raw: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    match raw.get().as_bytes().first()? {
        b'{' => {
            let Fields(members) = serde_json::from_str(raw.get()).ok()?;
            member(&members, key)
        }
        b'[' => {
            let index: usize = key.parse().ok()?;
            let items: Vec<&'a RawValue> = serde_json::from_str(raw.get()).ok()?;
            items.get(index).copied()
        }
        _ => None,
    }
}

/// The text of a `SourceRecord`: a record, possibly with one member cut out, as two
/// borrowed pieces, so the cut costs no copy before the row is written.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceText<'a> {
    head: &'a str,
    tail: &'a str,
    whole: &'a str,
}

impl<'a> SourceText<'a> {
    /// A record's whole text.
    pub fn whole(text: &'a str) -> Self {
        SourceText {
            head: text,
            tail: "",
            whole: text,
        }
    }

    /// Appends the text as a JSON value. A cut text is checked (it is the small part of
    /// the record) and, were it somehow not valid JSON, the whole record is written
    /// instead: a row must never be refused for its `SourceRecord`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(self.head.as_bytes());
        if self.tail.is_empty() {
            return;
        }
        out.extend_from_slice(self.tail.as_bytes());
        if serde_json::from_slice::<de::IgnoredAny>(&out[at..]).is_err() {
            out.truncate(at);
            out.extend_from_slice(self.whole.as_bytes());
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
            fn visit_map<M: MapAccess<'a>>(self, map: M) -> Result<Fields<'a>, M::Error> {
                members(map).map(Fields)
            }
        }
        d.deserialize_map(V)
    }
}

fn members<'a, M: MapAccess<'a>>(
    mut map: M,
) -> Result<Vec<(Cow<'a, str>, &'a RawValue)>, M::Error> {
    let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(32));
    while let Some(Name(k)) = map.next_key()? {
        fields.push((k, map.next_value()?));
    }
    Ok(fields)
}

/// Reads the batch array, one [`RecordSeed`] per element.
struct BatchSeed<'a> {
    text: &'a str,
}

impl<'a> DeserializeSeed<'a> for BatchSeed<'a> {
    type Value = Vec<Record<'a>>;
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for BatchSeed<'a> {
    type Value = Vec<Record<'a>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of records")
    }
    fn visit_seq<S: SeqAccess<'a>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(64));
        while let Some(r) = seq.next_element_seed(RecordSeed { text: self.text })? {
            records.push(r);
        }
        Ok(records)
    }
}

/// Reads one record's members and finds its text around them.
struct RecordSeed<'a> {
    text: &'a str,
}

impl<'a> DeserializeSeed<'a> for RecordSeed<'a> {
    type Value = Record<'a>;
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for RecordSeed<'a> {
    type Value = Record<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-empty JSON object")
    }
    fn visit_map<M: MapAccess<'a>>(self, map: M) -> Result<Record<'a>, M::Error> {
        let fields = members(map)?;
        let (start, end) = object_span(self.text, &fields)
            .ok_or_else(|| de::Error::custom("the record's braces were not where expected"))?;
        Ok(Record {
            text: &self.text[start..end],
            fields,
            not_an_object: false,
        })
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

/// Where `slice` (borrowed from `text`) starts in `text`.
fn offset_in(text: &str, slice: &str) -> Option<usize> {
    let at = (slice.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (at + slice.len() <= text.len()).then_some(at)
}

fn skip_back(bytes: &[u8], mut i: usize) -> usize {
    while i > 0 && bytes[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    i
}

fn skip_fwd(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The opening quote of the name of the member whose value starts at `value_start`:
/// back over `"name" :`, to the first quote not escaped, that is, not preceded by an odd
/// run of backslashes.
fn name_start(text: &str, value_start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let colon = skip_back(bytes, value_start);
    if colon == 0 || bytes[colon - 1] != b':' {
        return None;
    }
    let name_end = skip_back(bytes, colon - 1);
    if name_end == 0 || bytes[name_end - 1] != b'"' {
        return None;
    }
    let mut i = name_end - 1;
    loop {
        i = text[..i].rfind('"')?;
        let slashes = bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count();
        if slashes % 2 == 0 {
            return Some(i);
        }
    }
}

/// The span of the object whose members are `fields` (borrowed from `text`), braces
/// included.
fn object_span(text: &str, fields: &[(Cow<str>, &RawValue)]) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let first = offset_in(text, fields.first()?.1.get())?;
    let open = skip_back(bytes, name_start(text, first)?);
    let last = fields.last()?.1.get();
    let close = skip_fwd(bytes, offset_in(text, last)? + last.len());
    (open > 0 && bytes[open - 1] == b'{' && bytes.get(close) == Some(&b'}'))
        .then_some((open - 1, close + 1))
}

/// The byte range of the object member whose value is `value` (a slice of `object`),
/// from its name to its value, with one separating comma, so that removing the range
/// leaves a valid object.
fn member_span(object: &str, value: &str) -> Option<(usize, usize)> {
    let bytes = object.as_bytes();
    let value_start = offset_in(object, value)?;
    let value_end = value_start + value.len();
    let key_start = name_start(object, value_start)?;
    let after = skip_fwd(bytes, value_end);
    if bytes.get(after) == Some(&b',') {
        return Some((key_start, after + 1));
    }
    let before = skip_back(bytes, key_start);
    if before > 0 && bytes[before - 1] == b',' {
        return Some((before - 1, value_end));
    }
    Some((key_start, value_end))
}

#[cfg(feature = "sim")]
/// A record's text as a raw JSON value, for callers that hold a parsed `Value`.
pub(crate) fn raw_of(value: &Value) -> Box<RawValue> {
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
            let mut cut = Vec::new();
            rec.without("big").write_to(&mut cut);
            let cut = String::from_utf8(cut).unwrap();
            assert_eq!(cut, want, "{input}");
            let before: Value = serde_json::from_str(input).unwrap();
            let mut expected = before.as_object().unwrap().clone();
            expected.remove("big");
            let after: Value = serde_json::from_str(&cut).unwrap();
            assert_eq!(after, Value::Object(expected));
        }
    }

    #[test]
    fn a_batch_is_read_in_one_pass_and_odd_records_the_slow_way() {
        let text = r#" [ {"a":1, "b":{"c":[2]}} ,{ "xy" : "z" },{"n":null}
            ] "#;
        let records = Record::batch(text).unwrap();
        let texts: Vec<&str> = records.iter().map(|r| r.text()).collect();
        assert_eq!(
            texts,
            [
                r#"{"a":1, "b":{"c":[2]}}"#,
                r#"{ "xy" : "z" }"#,
                r#"{"n":null}"#
            ]
        );
        assert_eq!(records[1].pointer("/xy"), Some(Value::from("z")));
        // Not objects, or empty: each still a record, whole.
        let records = Record::batch(r#"[{"a":1}, 5, "s", {}, [1]]"#).unwrap();
        let texts: Vec<&str> = records.iter().map(|r| r.text()).collect();
        assert_eq!(texts, [r#"{"a":1}"#, "5", r#""s""#, "{}", "[1]"]);
        let odd: Vec<bool> = records.iter().map(|r| r.not_an_object).collect();
        assert_eq!(odd, [false, true, true, false, true]);
        assert!(Record::batch(r#"[{"a":1}"#).is_err());
        assert!(Record::batch(r#"[{"a":1}] x"#).is_err());
    }
}
