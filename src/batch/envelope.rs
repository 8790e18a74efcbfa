//! The queue message format: a small versioned JSON envelope around a gzip'd JSON array of
//! CAS records, sized so that each message fits the 64 KiB queue limit once the host's
//! base64 encoding is applied.
//!
//! ```json
//! {"v":1,"type":"alerts","batch":"<32 hex>","window":{"from":..,"to":..},"count":42,
//!  "payload":"inline","gz":"<base64 of gzip(JSON array)>"}
//! ```
//!
//! A named tenant's message (`CAS_TENANTS`) also carries `"tenant":"<name>"`, which routes
//! it to that tenant's streams; a message without one is the unnamed tenant's, as every
//! message of earlier releases is.
//!
//! A single record too large for any message goes to a blob instead
//! (`"payload":"blob","blob":"payloads/<batch>.json.gz"`): a blob name, never a URL.

use crate::codec::{gzip, json_array};
use crate::model::{BatchId, DataType, TenantName, Window};
use base64::Engine;
use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Read;

/// The envelope version this build writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Largest message text: 64 KiB once base64-encoded (4/3 expansion).
pub(crate) const MAX_MESSAGE_TEXT: usize = 65_536 / 4 * 3;
/// Cap on a spilled batch's decompressed size (one record too large for a message), so
/// a hostile blob cannot exhaust memory.
pub(crate) const MAX_RECORDS_BYTES: usize = 32 * 1024 * 1024;
/// The most record JSON one inline message holds: packing stops there however well the
/// records compress, so that decoding a message costs a bounded multiple of its size.
pub(crate) const MAX_INLINE_RAW: usize = 1024 * 1024;
/// Cap on an inline payload's decompressed size: [`MAX_INLINE_RAW`] with room for the
/// messages of earlier releases, which packed by compressed size alone.
pub(crate) const MAX_INLINE_BYTES: usize = 4 * MAX_INLINE_RAW;

/// One queue message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version.
    pub v: u32,
    /// What kind of records the batch holds.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// The named tenant the records came from; `None` for the one unnamed tenant of a
    /// deployment without `CAS_TENANTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantName>,
    /// Content-derived id; the ingest side skips ids it has already sent.
    pub batch: BatchId,
    /// The poll window the records came from.
    pub window: Window,
    /// How many records the payload holds.
    pub count: u32,
    /// For alerts forwarded again because they changed: when the change was seen, which
    /// becomes the rows' `TimeGenerated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<i64>,
    /// Where the records are.
    #[serde(flatten)]
    pub payload: Payload,
}

/// Where a batch's records are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "payload", rename_all = "lowercase")]
pub enum Payload {
    /// In the message: base64 of gzip of a JSON array.
    Inline {
        /// The encoded records.
        gz: String,
    },
    /// In a blob of the cas-sentinel container (gzip of a JSON array).
    Blob {
        /// The blob name, `payloads/<batch>.json.gz`.
        blob: String,
    },
}

/// An envelope as it travels, read in one pass. (Deriving `Deserialize` on [`Envelope`]
/// itself would, through `flatten`, buffer every field, the ~48 KB payload included,
/// before reading it again.)
#[derive(Deserialize)]
struct Wire {
    v: u64,
    #[serde(rename = "type")]
    data_type: DataType,
    #[serde(default)]
    tenant: Option<TenantName>,
    batch: BatchId,
    window: Window,
    count: u32,
    #[serde(default)]
    observed: Option<i64>,
    payload: String,
    #[serde(default)]
    gz: Option<String>,
    #[serde(default)]
    blob: Option<String>,
}

impl Wire {
    fn into_envelope(self) -> Result<Envelope, EnvelopeError> {
        if self.v != VERSION as u64 {
            return Err(EnvelopeError::Version(self.v));
        }
        let payload = match (self.payload.as_str(), self.gz, self.blob) {
            ("inline", Some(gz), _) => Payload::Inline { gz },
            ("blob", _, Some(blob)) => Payload::Blob { blob },
            (kind @ ("inline" | "blob"), ..) => {
                let field = if kind == "inline" { "gz" } else { "blob" };
                return Err(EnvelopeError::NotEnvelope(format!(
                    "payload {kind:?} without its {field:?} field"
                )));
            }
            (other, ..) => {
                return Err(EnvelopeError::NotEnvelope(format!(
                    "unknown payload kind {other:?}, expected \"inline\" or \"blob\""
                )))
            }
        };
        Ok(Envelope {
            v: self.v as u32,
            data_type: self.data_type,
            tenant: self.tenant,
            batch: self.batch,
            window: self.window,
            count: self.count,
            observed: self.observed,
            payload,
        })
    }
}

/// A message that is not a batch we can process.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not JSON, or JSON of another shape.
    #[error("queue message is not a cas-sentinel envelope: {0}")]
    NotEnvelope(String),
    /// Written by a newer (or unknown) version.
    #[error("queue message has envelope version {0}; this build reads version {VERSION}")]
    Version(u64),
    /// The payload is not valid base64/gzip/JSON.
    #[error("batch {batch}: payload is corrupt: {detail}")]
    Corrupt {
        /// The batch.
        batch: String,
        /// What failed.
        detail: String,
    },
    /// The payload expands beyond its cap ([`MAX_INLINE_BYTES`] in a message,
    /// [`MAX_RECORDS_BYTES`] in a blob).
    #[error("batch {batch}: payload expands beyond {cap} bytes; refusing it")]
    TooLarge {
        /// The batch.
        batch: String,
        /// The cap it passed.
        cap: usize,
    },
    /// The header and the payload disagree.
    #[error("batch {batch}: header says {expected} records, payload holds {found}")]
    CountMismatch {
        /// The batch.
        batch: String,
        /// The header's count.
        expected: u32,
        /// Records found.
        found: usize,
    },
    /// The batch id is not the one its records make: the message was edited or forged,
    /// and trusting the ledger under that id could skip records never sent.
    #[error("batch {batch}: the id does not match the records it carries (they make {computed}); the message was edited or forged and is not sent under that id")]
    IdMismatch {
        /// The id the message claims.
        batch: String,
        /// The id of its content.
        computed: String,
    },
    /// A blob payload name that is not ours.
    #[error("batch {batch}: blob payload name {name:?} is not payloads/<batch>.json.gz")]
    BadBlobName {
        /// The batch.
        batch: String,
        /// The name given.
        name: String,
    },
}

impl Envelope {
    /// Parses message text, checking the version before the shape so a message from a
    /// newer release says so instead of failing on a field.
    pub fn parse(text: &str) -> Result<Envelope, EnvelopeError> {
        let env = match serde_json::from_str::<Wire>(text) {
            Ok(wire) => wire.into_envelope()?,
            Err(shape) => {
                // Read only "v" (the rest is skipped, not built) to tell a message from a
                // newer release from one that is not an envelope at all.
                #[derive(Deserialize)]
                struct Probe {
                    v: Option<Value>,
                }
                let probe: Probe = serde_json::from_str(text)
                    .map_err(|e| EnvelopeError::NotEnvelope(format!("not a JSON object ({e})")))?;
                return Err(match probe.v.as_ref().and_then(Value::as_u64) {
                    Some(n) if n != VERSION as u64 => EnvelopeError::Version(n),
                    Some(_) => EnvelopeError::NotEnvelope(shape.to_string()),
                    None => EnvelopeError::NotEnvelope("no numeric \"v\" field".into()),
                });
            }
        };
        if let Payload::Blob { blob } = &env.payload {
            if *blob != spill_blob_name(&env.batch) {
                return Err(EnvelopeError::BadBlobName {
                    batch: env.batch.to_string(),
                    name: blob.clone(),
                });
            }
        }
        Ok(env)
    }

    /// The message text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    #[cfg(feature = "sim")]
    /// Decodes an inline payload's records (a blob payload's bytes go to [`decode_records`]).
    pub fn inline_records(&self) -> Result<Vec<Value>, EnvelopeError> {
        decode_records(self, &self.inline_gzip()?)
    }

    /// The gzip bytes of an inline payload.
    pub fn inline_gzip(&self) -> Result<Vec<u8>, EnvelopeError> {
        let Payload::Inline { gz } = &self.payload else {
            return Err(self.corrupt("payload is in a blob, not inline".into()));
        };
        base64::engine::general_purpose::STANDARD
            .decode(gz)
            .map_err(|e| self.corrupt(format!("base64: {e}")))
    }

    /// Reads payload text (from [`decode_text`]) into records with `parse` (the ingest
    /// path's reads each record's fields as it goes), and checks their number against the
    /// envelope's.
    pub fn read_records<'t, T>(
        &self,
        text: &'t str,
        parse: impl FnOnce(&'t str) -> Result<Vec<T>, serde_json::Error>,
    ) -> Result<Vec<T>, EnvelopeError> {
        let records = parse(text).map_err(|e| self.corrupt(format!("JSON: {e}")))?;
        self.check_count(records.len())?;
        Ok(records)
    }

    /// Checks that the batch id is the one its payload text (from [`decode_text`]) makes:
    /// the ledger is keyed by the id, so a message whose id names another batch's content
    /// must not be trusted with that batch's state.
    pub fn check_id(&self, text: &str) -> Result<(), EnvelopeError> {
        let computed = content_id(
            self.tenant.as_ref(),
            self.data_type,
            text.as_bytes(),
            self.observed,
        );
        if computed != self.batch {
            return Err(EnvelopeError::IdMismatch {
                batch: self.batch.to_string(),
                computed: computed.to_string(),
            });
        }
        Ok(())
    }

    fn check_count(&self, found: usize) -> Result<(), EnvelopeError> {
        if found != self.count as usize {
            return Err(EnvelopeError::CountMismatch {
                batch: self.batch.to_string(),
                expected: self.count,
                found,
            });
        }
        Ok(())
    }

    fn corrupt(&self, detail: String) -> EnvelopeError {
        EnvelopeError::Corrupt {
            batch: self.batch.to_string(),
            detail,
        }
    }
}

#[cfg(feature = "sim")]
/// Gunzips (with the size cap) and parses a payload, checking the record count.
pub(crate) fn decode_records(env: &Envelope, gz: &[u8]) -> Result<Vec<Value>, EnvelopeError> {
    env.read_records(&decode_text(env, gz)?, serde_json::from_str)
}

/// Gunzips a payload with the size cap, as UTF-8 text.
pub fn decode_text(env: &Envelope, gz: &[u8]) -> Result<String, EnvelopeError> {
    let cap = match env.payload {
        Payload::Inline { .. } => MAX_INLINE_BYTES,
        Payload::Blob { .. } => MAX_RECORDS_BYTES,
    };
    // Sized from the gzip trailer (the length mod 2^32), so the text is not copied again
    // each time a growing buffer doubles. The trailer is the sender's word: believed only
    // up to 16 times the compressed size (JSON records compress 5 to 10 times), so a
    // forged one cannot make a small message reserve the whole cap up front.
    let mut raw = Vec::with_capacity(reserve_for(gz, cap));
    let mut dec = GzDecoder::new(gz).take(cap as u64 + 1);
    dec.read_to_end(&mut raw)
        .map_err(|e| env.corrupt(format!("gzip: {e}")))?;
    if raw.len() > cap {
        return Err(EnvelopeError::TooLarge {
            batch: env.batch.to_string(),
            cap,
        });
    }
    String::from_utf8(raw).map_err(|e| env.corrupt(format!("UTF-8: {e}")))
}

/// How much to reserve for gunzipping `gz`: its trailer's length, believed up to `cap`
/// and 16 times the compressed size.
fn reserve_for(gz: &[u8], cap: usize) -> usize {
    let hint = gz
        .last_chunk::<4>()
        .map_or(0, |t| u32::from_le_bytes(*t) as usize);
    hint.min(cap).min(gz.len().saturating_mul(16)) + 1
}

/// The blob that holds a spilled batch's payload.
pub(crate) fn spill_blob_name(batch: &BatchId) -> String {
    format!("payloads/{batch}.json.gz")
}

/// A message ready to enqueue.
#[derive(Debug)]
pub struct Outgoing {
    /// The envelope.
    pub envelope: Envelope,
    /// For a spilled batch, the gzip payload to write to its blob before enqueueing.
    pub spill: Option<Vec<u8>>,
    /// The message text ([`Envelope::to_text`]), made once while packing.
    pub text: String,
}

/// Packs records into as few messages as fit, each as full as it can be.
///
/// Records keep their order; batch ids depend only on the data type, the window and the
/// record bytes, so packing the same records again yields the same messages.
#[cfg(any(test, feature = "sim"))]
pub fn pack<R: AsRef<str>>(data_type: DataType, window: Window, records: &[R]) -> Vec<Outgoing> {
    pack_observed(data_type, window, None, records)
}

/// [`pack`] for records that are changes observed at `observed` (Unix ms).
///
/// Records are JSON texts, packed as they are: the poll carries CAS's own bytes (see
/// [`crate::source::Page`]) and never builds a tree of them.
#[cfg(any(test, feature = "sim"))]
pub(crate) fn pack_observed<R: AsRef<str>>(
    data_type: DataType,
    window: Window,
    observed: Option<i64>,
    records: &[R],
) -> Vec<Outgoing> {
    pack_for(None, data_type, window, observed, records)
}

/// Packs a tenant's records (changes observed at `observed`, if set) into as few messages
/// as fit: its name rides in each message and in each batch id (see
/// [`BatchId::for_tenant_content`]).
pub(crate) fn pack_for<R: AsRef<str>>(
    tenant: Option<&TenantName>,
    data_type: DataType,
    window: Window,
    observed: Option<i64>,
    records: &[R],
) -> Vec<Outgoing> {
    let head = Head {
        tenant: tenant.cloned(),
        data_type,
        window,
        observed,
    };
    let encoded: Vec<&[u8]> = records.iter().map(|r| r.as_ref().as_bytes()).collect();
    let mut out = Vec::new();
    let mut start = 0;
    // Start by assuming 5:1 compression; each message's result refines the guess.
    let mut ratio = 5.0f64;
    while start < encoded.len() {
        let (end, outgoing) = fill_one(&head, &encoded, start, &mut ratio);
        out.push(outgoing);
        start = end;
    }
    out
}

/// The id of a batch of `body` (its records as a JSON array); it covers the observation
/// time too, so a change seen again later is a new batch.
fn content_id(
    tenant: Option<&TenantName>,
    data_type: DataType,
    body: &[u8],
    observed: Option<i64>,
) -> BatchId {
    match observed {
        None => BatchId::for_tenant_content(tenant, data_type, body),
        Some(o) => BatchId::for_tenant_content(
            tenant,
            data_type,
            &[body, format!("@{o}").as_bytes()].concat(),
        ),
    }
}

/// What every message of one packing shares.
struct Head {
    tenant: Option<TenantName>,
    data_type: DataType,
    window: Window,
    observed: Option<i64>,
}

impl Head {
    /// The envelope for `count` records serialized as `body`; the batch id covers the
    /// observation time too, so a change seen again later is a new batch.
    fn envelope(
        &self,
        body: &[u8],
        count: usize,
        payload: impl FnOnce(&BatchId) -> Payload,
    ) -> Envelope {
        let batch = content_id(self.tenant.as_ref(), self.data_type, body, self.observed);
        Envelope {
            v: VERSION,
            data_type: self.data_type,
            tenant: self.tenant.clone(),
            payload: payload(&batch),
            batch,
            window: self.window,
            count: count as u32,
            observed: self.observed,
        }
    }
}

/// Builds the fullest message starting at `start`; returns where the next one starts.
fn fill_one(head: &Head, encoded: &[&[u8]], start: usize, ratio: &mut f64) -> (usize, Outgoing) {
    let gz_budget = (MAX_MESSAGE_TEXT - 512) * 3 / 4;
    // Aim a little under the limit: with the ratio learned from the previous message, the
    // first try usually fits and is full enough, so a message is compressed once.
    let target_raw = ((gz_budget as f64 * *ratio * 0.93) as usize).min(MAX_INLINE_RAW);
    let mut end = start;
    let mut raw = 0;
    while end < encoded.len() && (end == start || raw + encoded[end].len() < target_raw) {
        raw += encoded[end].len() + 1;
        end += 1;
    }
    let mut best: Option<(usize, Envelope, String)> = None;
    let mut too_big_at = usize::MAX;
    for _ in 0..8 {
        let (env, gz_len, raw_len) = build(head, &encoded[start..end]);
        let text = env.to_text();
        let len = text.len();
        *ratio = (raw_len as f64 / gz_len.max(1) as f64).max(1.0);
        // How full the message is: of the queue's limit, or of the raw cap, whichever
        // binds first.
        let fill =
            (len as f64 / MAX_MESSAGE_TEXT as f64).max(raw_len as f64 / MAX_INLINE_RAW as f64);
        if len <= MAX_MESSAGE_TEXT && raw_len <= MAX_INLINE_RAW {
            best = Some((end, env, text));
            if end == encoded.len() || fill > 0.85 || end + 1 >= too_big_at {
                break;
            }
            let grow = ((end - start) as f64 * (0.95 / fill)).ceil() as usize;
            end = (start + grow.max(end - start + 1))
                .min(encoded.len())
                .min(too_big_at - 1);
        } else {
            too_big_at = end;
            if end - start == 1 {
                break;
            }
            if best.is_some() {
                // Growing overshot: settle for the last message that fitted.
                break;
            }
            let shrink = ((end - start) as f64 * (0.9 / fill)).floor() as usize;
            end = start + shrink.clamp(1, end - start - 1);
        }
    }
    match best {
        Some((end, envelope, text)) => (
            end,
            Outgoing {
                envelope,
                spill: None,
                text,
            },
        ),
        None => {
            // One record that no message can hold: its payload goes to a blob.
            let body = json_array(&encoded[start..start + 1]);
            let envelope = head.envelope(&body, 1, |b| Payload::Blob {
                blob: spill_blob_name(b),
            });
            (
                start + 1,
                Outgoing {
                    text: envelope.to_text(),
                    envelope,
                    spill: Some(gzip(&body)),
                },
            )
        }
    }
}

fn build(head: &Head, records: &[&[u8]]) -> (Envelope, usize, usize) {
    let body = json_array(records);
    let gz = gzip(&body);
    let env = head.envelope(&body, records.len(), |_| Payload::Inline {
        gz: base64::engine::general_purpose::STANDARD.encode(&gz),
    });
    (env, gz.len(), body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_id_must_be_the_one_its_records_make() {
        let window = Window::new(1, 2).unwrap();
        let records = [r#"{"_id":"a"}"#, r#"{"_id":"b"}"#];
        for observed in [None, Some(5)] {
            let m = &pack_observed(DataType::Alerts, window, observed, &records)[0];
            let text = decode_text(&m.envelope, &m.envelope.inline_gzip().unwrap()).unwrap();
            assert_eq!(m.envelope.check_id(&text), Ok(()));
            // The same id over other records: edited, forged, or another batch's id.
            let one = &pack_observed(DataType::Alerts, window, observed, &records[..1])[0].envelope;
            let other = decode_text(one, &one.inline_gzip().unwrap()).unwrap();
            assert!(matches!(
                m.envelope.check_id(&other),
                Err(EnvelopeError::IdMismatch { .. })
            ));
            // A change of the observation time is a change of content.
            let mut moved = m.envelope.clone();
            moved.observed = observed.map(|o| o + 1).or(Some(1));
            assert!(moved.check_id(&text).is_err());
        }
    }
    use serde_json::json;

    fn window() -> Window {
        Window::new(1_000, 2_000).unwrap()
    }

    /// Records (as text) that compress poorly, so packing has to split.
    fn noisy_records(n: usize, size: usize) -> Vec<String> {
        let mut x: u64 = 0x9E3779B97F4A7C15;
        (0..n)
            .map(|i| {
                let noise: String = (0..size)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        char::from(b'a' + (x % 26) as u8)
                    })
                    .collect();
                json!({"_id": format!("id{i}"), "timestamp": 1500, "noise": noise}).to_string()
            })
            .collect()
    }

    #[test]
    fn every_record_is_packed_once_in_order_and_messages_fit() {
        let records = noisy_records(400, 900);
        let msgs = pack(DataType::Alerts, window(), &records);
        assert!(msgs.len() > 1);
        let mut back = Vec::new();
        for m in &msgs {
            let text = m.envelope.to_text();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
            assert!(b64.len() <= 65_536, "stored size {}", b64.len());
            let parsed = Envelope::parse(&text).unwrap();
            back.extend(parsed.inline_records().unwrap());
        }
        let want: Vec<Value> = records
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect();
        assert_eq!(back, want);
        // Full messages: all but the last are more than 75% of the limit.
        for m in &msgs[..msgs.len() - 1] {
            assert!(m.envelope.to_text().len() > MAX_MESSAGE_TEXT * 3 / 4);
        }
    }

    #[test]
    fn packing_is_deterministic() {
        let records = noisy_records(100, 700);
        let a: Vec<_> = pack(DataType::Activities, window(), &records)
            .into_iter()
            .map(|m| m.envelope.batch)
            .collect();
        let b: Vec<_> = pack(DataType::Activities, window(), &records)
            .into_iter()
            .map(|m| m.envelope.batch)
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn a_record_too_big_for_any_message_is_spilled_not_dropped() {
        let mut records = noisy_records(3, 200);
        records.insert(1, noisy_records(1, 120_000).remove(0));
        let msgs = pack(DataType::Alerts, window(), &records);
        let spilled: Vec<_> = msgs.iter().filter(|m| m.spill.is_some()).collect();
        assert_eq!(spilled.len(), 1);
        let env = Envelope::parse(&spilled[0].envelope.to_text()).unwrap();
        let recs = decode_records(&env, spilled[0].spill.as_ref().unwrap()).unwrap();
        assert_eq!(recs[0], serde_json::from_str::<Value>(&records[1]).unwrap());
        assert_eq!(msgs.iter().map(|m| m.envelope.count).sum::<u32>(), 4);
    }

    #[test]
    fn bad_messages_get_named_errors() {
        assert!(matches!(
            Envelope::parse("hello"),
            Err(EnvelopeError::NotEnvelope(_))
        ));
        assert_eq!(
            Envelope::parse(r#"{"v":2}"#),
            Err(EnvelopeError::Version(2))
        );
        let mut env = pack(DataType::Alerts, window(), &noisy_records(2, 10))
            .remove(0)
            .envelope;
        env.count = 3;
        assert!(matches!(
            env.inline_records(),
            Err(EnvelopeError::CountMismatch { .. })
        ));
        let good = env.to_text();
        for (from, to, why) in [
            (
                "\"payload\":\"inline\"",
                "\"payload\":\"carrier-pigeon\"",
                "unknown payload kind",
            ),
            ("\"gz\":", "\"zz\":", "without its \"gz\" field"),
        ] {
            let err = Envelope::parse(&good.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err}");
        }
        assert_eq!(
            Envelope::parse(&good.replace("\"v\":1", "\"v\":2")),
            Err(EnvelopeError::Version(2))
        );
        let text = env.to_text().replace("\"from\":1000", "\"from\":3000");
        assert!(
            matches!(Envelope::parse(&text), Err(EnvelopeError::NotEnvelope(_))),
            "reversed window"
        );
    }

    #[test]
    fn records_that_compress_very_well_are_packed_up_to_the_raw_cap() {
        let records: Vec<String> = (0..3000)
            .map(|i| json!({"_id": format!("id{i}"), "pad": "a".repeat(1000)}).to_string())
            .collect();
        let msgs = pack(DataType::Alerts, window(), &records);
        let mut total = 0;
        for m in &msgs {
            let gz = m.envelope.inline_gzip().unwrap();
            let text = decode_text(&m.envelope, &gz).unwrap();
            assert!(
                text.len() <= MAX_INLINE_RAW,
                "{} bytes of records",
                text.len()
            );
            total += m.envelope.count;
        }
        assert_eq!(total, 3000);
        assert!(msgs.len() >= 3, "3 MB of records needs at least 3 messages");
    }

    #[test]
    fn a_forged_gzip_trailer_reserves_no_more_than_a_small_multiple() {
        // A tiny payload whose trailer claims 4 GiB: decoding must not reserve it, and the
        // corrupt stream is refused.
        let mut gz = gzip(b"[1]");
        let n = gz.len();
        gz[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(reserve_for(&gz, MAX_INLINE_BYTES) <= 16 * n + 1);
        let honest = gzip(&vec![b' '; 100_000]);
        assert_eq!(
            reserve_for(&honest, MAX_INLINE_BYTES),
            (16 * honest.len()).min(100_000) + 1
        );
        let mut env = pack(DataType::Alerts, window(), &["1"]).remove(0).envelope;
        env.payload = Payload::Inline {
            gz: base64::engine::general_purpose::STANDARD.encode(&gz),
        };
        assert!(matches!(
            env.inline_records(),
            Err(EnvelopeError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        let zeros = vec![b' '; MAX_RECORDS_BYTES + 10];
        let mut env = pack(DataType::Alerts, window(), &["1"]).remove(0).envelope;
        env.payload = Payload::Inline {
            gz: base64::engine::general_purpose::STANDARD.encode(gzip(&zeros)),
        };
        assert!(matches!(
            env.inline_records(),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn arbitrary_messages_never_panic_the_decoder_or_the_record_reader() {
        let good = pack(DataType::Alerts, window(), &noisy_records(20, 50));
        let seeds: Vec<Vec<u8>> = good
            .iter()
            .map(|m| m.envelope.to_text().into_bytes())
            .chain([br#"{"v":1,"type":"alerts","batch":"00000000000000000000000000000000","window":{"from":1,"to":2},"count":1,"payload":"blob","blob":"x"}"#.to_vec()])
            .collect();
        for input in crate::fuzz::mutations(&seeds, 5_000, 3) {
            let text = String::from_utf8_lossy(&input);
            if let Ok(env) = Envelope::parse(&text) {
                if let Ok(gz) = env.inline_gzip() {
                    if let Ok(t) = decode_text(&env, &gz) {
                        let _ = env.read_records(&t, crate::json::Record::batch);
                    }
                }
            }
        }
        // The record reader on its own, over mutated batches of records.
        let arrays: Vec<Vec<u8>> = vec![
            json_array(&noisy_records(5, 20)),
            br#"[{"a":{"b":[1,"\"x"]}},5,"s",{}]"#.to_vec(),
        ];
        for input in crate::fuzz::mutations(&arrays, 20_000, 5) {
            let text = String::from_utf8_lossy(&input);
            if let Ok(records) = crate::json::Record::batch(&text) {
                for r in &records {
                    let _ = r.pointer("/_id");
                    let mut out = Vec::new();
                    r.without("noise").write_to(&mut out);
                    for dt in DataType::ALL {
                        let row = crate::schema::row_bytes(dt, r, Some(1));
                        serde_json::from_slice::<serde::de::IgnoredAny>(&row).unwrap();
                    }
                }
            }
        }
    }
}
