//! Reading JSON that real services send, not just JSON that the RFC allows.
//!
//! A CAS record is whatever the source application wrote, passed through CAS: an emoji cut
//! in half leaves a lone UTF-16 surrogate (`"\udc00"`, which Python's and .NET's encoders
//! emit), Python's encoder writes `NaN` and `Infinity`, a number can be beyond what an
//! `f64` holds (`1e400`), and a nested audit payload can be deeper than `serde_json`'s
//! recursion limit. `serde_json` rightly refuses all of these, and one refused record
//! would fail the page it is on, and with it every run after, for good.
//!
//! [`repair`] rewrites such text into JSON that any reader accepts, changing only what it
//! must, and counts what it changed:
//! - a lone surrogate or an unknown escape becomes U+FFFD (`\ufffd`);
//! - a raw control character inside a string is escaped;
//! - invalid UTF-8 becomes U+FFFD (done by the caller's lossy decoding);
//! - a number that does not fit an `f64`, or is not JSON's grammar, and `NaN`,
//!   `Infinity`, `-Infinity`, become strings holding their text;
//! - a container nested deeper than [`MAX_DEPTH`] becomes a string holding its text.
//!
//! Text that is structurally broken (unbalanced, truncated, a bare word) is an error: no
//! repair can say where one record ends and the next begins.
//!
//! The repair is a pure function of its input, so a page read twice is repaired the same
//! way twice and packs into the same batches.

use std::borrow::Cow;

/// Containers nested deeper than this (counted from the outermost value) are kept as
/// text. `serde_json` stops at 128; a CAS page puts records two levels down, a queue
/// message one, and a row nests `RawEventData` once more, so this leaves ample room.
pub(crate) const MAX_DEPTH: usize = 64;

/// What [`repair`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Lone surrogates and unknown escapes replaced with U+FFFD.
    pub escapes: usize,
    /// Raw control characters escaped.
    pub controls: usize,
    /// Numbers (and `NaN`/`Infinity`) kept as strings.
    pub numbers: usize,
    /// Over-deep containers kept as strings.
    pub deep: usize,
}

impl Repairs {
    /// Whether anything was changed.
    pub fn any(&self) -> bool {
        self.total() > 0
    }

    /// How many changes in all.
    pub fn total(&self) -> usize {
        self.escapes + self.controls + self.numbers + self.deep
    }
}

impl std::ops::AddAssign for Repairs {
    fn add_assign(&mut self, other: Repairs) {
        self.escapes += other.escapes;
        self.controls += other.controls;
        self.numbers += other.numbers;
        self.deep += other.deep;
    }
}

/// Text that is not JSON in a way no repair can fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not JSON at byte {offset}: {what}")]
pub(crate) struct Broken {
    /// Where in the text.
    pub offset: usize,
    /// What was found there.
    pub what: &'static str,
}

/// Bytes from a service as strict JSON text: invalid UTF-8 becomes U+FFFD (counted with
/// the escapes), then [`repair`]. The bytes' own buffer becomes the text when nothing
/// needed changing (the rule), so a large answer is not copied.
pub(crate) fn repair_bytes(body: impl Into<Vec<u8>>) -> Result<(String, Repairs), Broken> {
    let (text, utf8) = match String::from_utf8(body.into()) {
        Ok(text) => (text, 0),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), 1),
    };
    let (fixed, mut repairs) = repair(&text)?;
    repairs.escapes += utf8;
    let rewritten = match fixed {
        Cow::Owned(s) => Some(s),
        Cow::Borrowed(_) => None,
    };
    Ok((rewritten.unwrap_or(text), repairs))
}

/// Bytes from a service as a JSON value ([`repair_bytes`], then parsed), and what was
/// repaired; the error says why it is not JSON.
pub(crate) fn value_of(body: impl Into<Vec<u8>>) -> Result<(serde_json::Value, Repairs), String> {
    let (text, repairs) = repair_bytes(body).map_err(|e| format!("not JSON: {e}"))?;
    let v = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    Ok((v, repairs))
}

/// Returns `text` as strict JSON (borrowed when it already was), and what was changed.
pub(crate) fn repair(text: &str) -> Result<(Cow<'_, str>, Repairs), Broken> {
    let mut r = Repairer {
        b: text.as_bytes(),
        text,
        i: 0,
        out: String::new(),
        copied_to: 0,
        repairs: Repairs::default(),
        rewriting: false,
    };
    r.ws();
    r.value(0)?;
    r.ws();
    if r.i != r.b.len() {
        return Err(r.broken("text after the JSON value"));
    }
    if !r.rewriting {
        return Ok((Cow::Borrowed(text), r.repairs));
    }
    r.flush_to(r.b.len());
    Ok((Cow::Owned(r.out), r.repairs))
}

/// A single-pass rewriter. Input is copied lazily: until the first repair nothing is
/// written, and after it, unchanged runs are copied in one piece (`copied_to` marks how
/// far the input has been copied to `out`).
struct Repairer<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    out: String,
    copied_to: usize,
    repairs: Repairs,
    rewriting: bool,
}

impl Repairer<'_> {
    fn broken(&self, what: &'static str) -> Broken {
        Broken {
            offset: self.i,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Copies the input up to `to` into the output, once rewriting has begun.
    fn flush_to(&mut self, to: usize) {
        if !self.rewriting {
            self.rewriting = true;
            self.out.reserve(self.b.len() + 64);
        }
        if to > self.copied_to {
            self.out.push_str(&self.text[self.copied_to..to]);
            self.copied_to = to;
        }
    }

    /// Replaces the input span `start..end` with `with`.
    fn replace(&mut self, start: usize, end: usize, with: &str) {
        self.flush_to(start);
        self.out.push_str(with);
        self.copied_to = end;
    }

    /// Replaces the input span `start..end` with a JSON string holding its text.
    fn stringify(&mut self, start: usize, end: usize) {
        let quoted =
            serde_json::to_string(&self.text[start..end]).expect("serializing a str cannot fail");
        self.replace(start, end, &quoted);
    }

    fn value(&mut self, depth: usize) -> Result<(), Broken> {
        match self.peek() {
            Some(b'{') | Some(b'[') if depth >= MAX_DEPTH => self.deep(),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'N') => self.non_finite("NaN"),
            Some(b'I') => self.non_finite("Infinity"),
            None => Err(self.broken("the text ends where a value should start")),
            Some(_) => Err(self.broken("a value cannot start with this character")),
        }
    }

    fn literal(&mut self, word: &'static str) -> Result<(), Broken> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.broken("an unknown bare word"))
        }
    }

    /// `NaN`, `Infinity` (and, from [`Repairer::number`], `-Infinity`): kept as strings.
    fn non_finite(&mut self, word: &'static str) -> Result<(), Broken> {
        let start = self.i;
        self.literal(word)?;
        self.stringify(start, self.i);
        self.repairs.numbers += 1;
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<(), Broken> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.broken("an object member must start with a quoted name"));
            }
            self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.broken("expected ':' after a member name"));
            }
            self.i += 1;
            self.ws();
            self.value(depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.broken("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Broken> {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.value(depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.broken("expected ',' or ']' in an array")),
            }
        }
    }

    /// A container too deep to nest further: found by counting brackets outside strings
    /// (no recursion, so no depth can exhaust the stack), then kept as a string.
    fn deep(&mut self) -> Result<(), Broken> {
        let start = self.i;
        let mut level = 0usize;
        let mut in_string = false;
        while let Some(c) = self.peek() {
            self.i += 1;
            if in_string {
                match c {
                    b'\\' => self.i += 1,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => level += 1,
                b'}' | b']' => {
                    level -= 1;
                    if level == 0 {
                        let end = self.i;
                        self.stringify(start, end);
                        self.repairs.deep += 1;
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(self.broken("the text ends inside a nested value"))
    }

    fn string(&mut self) -> Result<(), Broken> {
        self.i += 1;
        loop {
            // Most of a record's bytes are inside strings: step over the plain ones eight at
            // a time, then byte by byte in the word that holds the stop.
            self.i += plain_run(&self.b[self.i..]);
            let Some(c) = self.peek() else {
                return Err(self.broken("the text ends inside a string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => self.escape()?,
                _ => {
                    let with = format!("\\u{:04x}", c);
                    self.replace(self.i, self.i + 1, &with);
                    self.i += 1;
                    self.repairs.controls += 1;
                }
            }
        }
    }

    fn hex4(&self, at: usize) -> Option<u16> {
        let digits = self.b.get(at..at + 4)?;
        let s = std::str::from_utf8(digits).ok()?;
        if !s.bytes().all(|d| d.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(s, 16).ok()
    }

    fn escape(&mut self) -> Result<(), Broken> {
        let start = self.i;
        let Some(kind) = self.b.get(start + 1).copied() else {
            return Err(self.broken("the text ends inside an escape"));
        };
        match kind {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.i += 2;
                Ok(())
            }
            b'u' => {
                let Some(unit) = self.hex4(start + 2) else {
                    return self.bad_escape(start, 2);
                };
                match unit {
                    0xD800..=0xDBFF => {
                        let pair = self.b.get(start + 6..start + 8) == Some(b"\\u")
                            && self
                                .hex4(start + 8)
                                .is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
                        if pair {
                            self.i += 12;
                            Ok(())
                        } else {
                            self.bad_escape(start, 6)
                        }
                    }
                    0xDC00..=0xDFFF => self.bad_escape(start, 6),
                    _ => {
                        self.i += 6;
                        Ok(())
                    }
                }
            }
            // An unknown escape letter: replaced with its backslash. (A multi-byte
            // character after the backslash is left for the string loop to step over.)
            _ => self.bad_escape(start, 1),
        }
    }

    fn bad_escape(&mut self, start: usize, len: usize) -> Result<(), Broken> {
        self.replace(start, start + len, "\\ufffd");
        self.i = start + len;
        self.repairs.escapes += 1;
        Ok(())
    }

    fn number(&mut self) -> Result<(), Broken> {
        let start = self.i;
        if self.b[start..].starts_with(b"-Infinity") {
            self.i += "-Infinity".len();
            self.stringify(start, self.i);
            self.repairs.numbers += 1;
            return Ok(());
        }
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.i += 1;
        }
        let text = &self.text[start..self.i];
        if !json_number(text) || !fits(text) {
            self.stringify(start, self.i);
            self.repairs.numbers += 1;
        }
        Ok(())
    }
}

/// The bytes that end a run of plain string content: the closing quote, an escape, and
/// the control characters JSON does not allow raw.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t
};

/// How many bytes at the start of `rest` are plain string content (no quote, backslash or
/// control character). Words of eight bytes are tested at once: a byte is zero in
/// `w ^ pattern` exactly where `w` holds the pattern's byte, and `(x - 0x01..) & !x & 0x80..`
/// is nonzero exactly when some byte of `x` is zero (likewise below 0x20 for the controls).
fn plain_run(rest: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut i = 0;
    while let Some(chunk) = rest.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let stop = zero_byte(w ^ (ONES * b'"' as u64))
            | zero_byte(w ^ (ONES * b'\\' as u64))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
        if stop != 0 {
            break;
        }
        i += 8;
    }
    i + rest[i..]
        .iter()
        .position(|&c| STRING_STOP[c as usize])
        .unwrap_or(rest.len() - i)
}

/// Whether `s` is JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Whether a grammatical JSON number reads as a finite `f64` (integers of any size up to
/// that are accepted by `serde_json`, read as floats past 64 bits).
fn fits(s: &str) -> bool {
    s.parse::<f64>().is_ok_and(f64::is_finite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixed(text: &str) -> (String, Repairs) {
        let (out, r) = repair(text).unwrap();
        serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
        (out.into_owned(), r)
    }

    #[test]
    fn valid_json_is_borrowed_unchanged() {
        let text = r#" {"a":[1,-2.5e3,0,true,false,null,"x\"\u00e9\ud83d\ude00"],"b":{}} "#;
        let (out, r) = repair(text).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        assert!(!r.any());
    }

    #[test]
    fn lone_surrogates_and_bad_escapes_become_replacement_characters() {
        let (out, r) = fixed(r#"{"a":"x\udc00y","b":"\ud83d","c":"\ud83d\u0041","d":"\q"}"#);
        assert_eq!(
            out,
            r#"{"a":"x\ufffdy","b":"\ufffd","c":"\ufffd\u0041","d":"\ufffdq"}"#
        );
        assert_eq!(r.escapes, 4);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"], "x\u{fffd}y");
    }

    #[test]
    fn numbers_beyond_f64_and_python_specials_are_kept_as_text() {
        let (out, r) =
            fixed(r#"[1e400,-1e400,NaN,Infinity,-Infinity,01,1.,12345678901234567890123,1e308]"#);
        assert_eq!(
            out,
            r#"["1e400","-1e400","NaN","Infinity","-Infinity","01","1.",12345678901234567890123,1e308]"#
        );
        assert_eq!(r.numbers, 7);
    }

    #[test]
    fn control_characters_in_strings_are_escaped() {
        let (out, r) = fixed("{\"a\":\"tab\there\u{1}\"}");
        assert_eq!(out, r#"{"a":"tab\u0009here\u0001"}"#);
        assert_eq!(r.controls, 2);
    }

    #[test]
    fn nesting_past_the_limit_is_kept_as_a_string_without_recursing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let text = format!(r#"{{"ok":1,"deep":{deep},"after":"\udc00"}}"#);
        let (out, r) = fixed(&text);
        assert_eq!(r.deep, 1);
        assert_eq!(r.escapes, 1);
        let v: Value = serde_json::from_str(&out).unwrap();
        // Nested as it was down to the limit, then the rest as one string.
        let mut at = &v["deep"];
        for _ in 1..MAX_DEPTH {
            at = &at[0];
        }
        let kept = at.as_str().unwrap();
        assert_eq!(kept.len(), 200_000 - 2 * (MAX_DEPTH - 1));
        assert_eq!(v["after"], "\u{fffd}");
    }

    #[test]
    fn structural_damage_is_an_error_with_its_place() {
        for bad in [
            "",
            "{",
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            "[1,]",
            "[1 2]",
            "tru",
            "{a:1}",
            "[1]x",
            r#""abc"#,
            r#"["\"#,
        ] {
            assert!(repair(bad).is_err(), "{bad:?}");
        }
        assert_eq!(repair("[1]x").unwrap_err().offset, 3);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_a_repair_is_always_strict_json() {
        let seeds: Vec<Vec<u8>> = [
            r#"{"data":[{"_id":"a","s":"x\u00e9\ud83d\ude00","n":[1,-2.5e3,true,null]}],"hasNext":false}"#,
            r#"[{"a":{"b":[[[{"c":"\"q\\"}]]]}},"\udc00",1e400,NaN]"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let (mut ok, mut broken) = (0, 0);
        for input in crate::fuzz::mutations(&seeds, 30_000, 11) {
            let text = String::from_utf8_lossy(&input);
            match repair(&text) {
                Ok((out, _)) => {
                    serde_json::from_str::<serde::de::IgnoredAny>(&out)
                        .unwrap_or_else(|e| panic!("{text:?} repaired to {out:?}: {e}"));
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.offset <= text.len());
                    broken += 1;
                }
            }
        }
        assert!(
            ok > 1_000 && broken > 1_000,
            "{ok} repaired, {broken} refused"
        );
    }

    #[test]
    fn plain_runs_stop_at_the_first_quote_backslash_or_control_character() {
        for (text, want) in [
            ("", 0),
            ("abc", 3),
            ("abcdefghijklmnop\"", 16),
            ("abcdefgh\\ijk", 8),
            ("abcdefghij\u{1}k", 10),
            (
                "\u{7f}\u{80}\u{ff}é€😀abcdefgh\"",
                "\u{7f}\u{80}\u{ff}é€😀abcdefgh".len(),
            ),
            ("a\tb", 1),
            ("abcdefg\"", 7),
            ("                 \u{1f}", 17),
        ] {
            assert_eq!(plain_run(text.as_bytes()), want, "{text:?}");
            let slow = text
                .bytes()
                .position(|c| STRING_STOP[c as usize])
                .unwrap_or(text.len());
            assert_eq!(want, slow, "{text:?}");
        }
    }

    #[test]
    fn the_repair_is_deterministic() {
        let text = r#"{"a":"\udc00","n":1e999}"#;
        assert_eq!(repair(text).unwrap().0, repair(text).unwrap().0);
    }
}
