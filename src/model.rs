//! The small vocabulary the whole pipeline shares: which kind of CAS data, which time
//! window, and which batch. Each is a type so that a stray string or a reversed window
//! cannot travel far before the compiler or a constructor stops it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The three kinds of Defender for Cloud Apps data this tool forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Alerts (`/api/v1/alerts/`), forwarded to `McasAlerts_CL`.
    Alerts,
    /// Activities (`/api/v1/activities/`, scan mode), forwarded to `McasActivity_CL`.
    Activities,
    /// Shadow IT discovery aggregates, forwarded to `McasShadowItReporting_CL`.
    Discovery,
}

impl DataType {
    /// Every data type, in the order a poll visits them.
    pub const ALL: [DataType; 3] = [DataType::Alerts, DataType::Activities, DataType::Discovery];

    /// The lowercase name used in settings, blob names and queue messages.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Alerts => "alerts",
            DataType::Activities => "activities",
            DataType::Discovery => "discovery",
        }
    }

    /// The Log Analytics custom table the rows end up in.
    pub fn table(self) -> &'static str {
        match self {
            DataType::Alerts => "McasAlerts_CL",
            DataType::Activities => "McasActivity_CL",
            DataType::Discovery => "McasShadowItReporting_CL",
        }
    }

    /// The DCR stream name used when the settings do not name one.
    pub fn default_stream(self) -> &'static str {
        match self {
            DataType::Alerts => "Custom-McasAlerts",
            DataType::Activities => "Custom-McasActivity",
            DataType::Discovery => "Custom-McasShadowItReporting",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A data type name that is not one of `alerts`, `activities`, `discovery`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown data type {0:?}: expected one of alerts, activities, discovery")]
pub struct UnknownDataType(pub String);

impl FromStr for DataType {
    type Err = UnknownDataType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "alerts" => Ok(DataType::Alerts),
            "activities" => Ok(DataType::Activities),
            "discovery" => Ok(DataType::Discovery),
            other => Err(UnknownDataType(other.to_string())),
        }
    }
}

/// A half-open interval of CAS time, in Unix milliseconds: `from <= t <= to`.
///
/// CAS filters are inclusive on both ends (`gte`/`lte`), so the window is too; the
/// boundary bookkeeping in the checkpoint is what keeps a record on the edge from being
/// sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "WindowRepr")]
pub struct Window {
    from: i64,
    to: i64,
}

/// A window whose end lies before its start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("window end {to} is before its start {from}")]
pub struct ReversedWindow {
    /// The requested start (Unix ms).
    pub from: i64,
    /// The requested end (Unix ms).
    pub to: i64,
}

/// The unchecked wire form of a [`Window`], so that deserializing goes through [`Window::new`].
#[derive(Deserialize)]
struct WindowRepr {
    from: i64,
    to: i64,
}

impl TryFrom<WindowRepr> for Window {
    type Error = ReversedWindow;
    fn try_from(r: WindowRepr) -> Result<Self, Self::Error> {
        Window::new(r.from, r.to)
    }
}

impl Window {
    /// A window from `from` to `to` (Unix ms, both inclusive).
    pub fn new(from: i64, to: i64) -> Result<Self, ReversedWindow> {
        if to < from {
            return Err(ReversedWindow { from, to });
        }
        Ok(Window { from, to })
    }

    /// The first millisecond in the window.
    pub fn start_ms(self) -> i64 {
        self.from
    }

    /// The last millisecond in the window.
    pub fn end_ms(self) -> i64 {
        self.to
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", format_ms(self.from), format_ms(self.to))
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC (`2026-11-29T10:00:00.123Z`); out-of-range
/// values print as the raw number rather than failing.
pub(crate) fn format_ms(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return ms.to_string();
    };
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    unix_ms(time::OffsetDateTime::now_utc())
}

/// A time in Unix milliseconds.
pub(crate) fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// An RFC 3339 time (Graph's and Kusto's, with any number of fractional digits) in Unix
/// milliseconds; `None` when it is not one.
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(unix_ms)
}

/// Identifies one queue message's worth of records, for the whole of its life.
///
/// The id is a hash of the message's content (data type and the exact record bytes), so
/// pulling the same records twice yields the same ids and the ingest side can
/// skip what it already sent, while a batch whose content differs in any record gets a
/// new id and is never wrongly skipped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BatchId(String);

/// Text that is not a batch id (32 lowercase hex digits).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid batch id {0:?}: expected 32 lowercase hex digits")]
pub struct InvalidBatchId(pub String);

impl BatchId {
    /// The id of a batch with this content, of this tenant. The window is left out on
    /// purpose: a re-run whose window ends a little later still packs the same records
    /// into the same ids. The tenant is in it because two tenants can hold the same bytes
    /// (a record copied between them, or two simulated tenants), and each batch must be
    /// sent for each; the unnamed tenant's (`None`) ids are those of earlier releases, so
    /// an upgrade sends nothing twice.
    pub fn for_tenant_content(
        tenant: Option<&TenantName>,
        data_type: DataType,
        records_json: &[u8],
    ) -> Self {
        let mut h = Sha256::new();
        if let Some(t) = tenant {
            h.update(b"tenant ");
            h.update(t.as_str().as_bytes());
            h.update(b"\n");
        }
        h.update(data_type.as_str().as_bytes());
        h.update(b"\n");
        h.update(records_json);
        let digest = h.finalize();
        let mut s = String::with_capacity(32);
        for b in &digest[..16] {
            s.push_str(&format!("{b:02x}"));
        }
        BatchId(s)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BatchId {
    type Error = InvalidBatchId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(BatchId(s))
        } else {
            Err(InvalidBatchId(s))
        }
    }
}

impl From<BatchId> for String {
    fn from(id: BatchId) -> String {
        id.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's name, as `CAS_TENANTS` lists it: it prefixes the tenant's app settings
/// (`contoso__CAS_API_URL`), names its checkpoint blobs and rides in each of its queue
/// messages and rows, so it is held to what all of those accept.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

/// Text that is not a tenant name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid tenant name {0:?}: expected 1 to 40 lowercase letters, digits and '-', starting with a letter and not ending with '-'")]
pub struct InvalidTenantName(pub String);

impl TenantName {
    /// The longest name: room for `<name>__SENTINEL_STREAM_ACTIVITIES` within the 64
    /// characters some tools allow an app setting's name, with a margin.
    pub const MAX_LEN: usize = 40;

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where a tenant's blobs live in the container: at its root for the unnamed tenant
    /// (as in every release before `CAS_TENANTS`, so an upgrade goes on where it was),
    /// under `tenants/<name>/` for a named one.
    pub fn blob_root(tenant: Option<&TenantName>) -> String {
        match tenant {
            None => String::new(),
            Some(t) => format!("tenants/{t}/"),
        }
    }
}

impl FromStr for TenantName {
    type Err = InvalidTenantName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantName::try_from(s.to_string())
    }
}

impl TryFrom<String> for TenantName {
    type Error = InvalidTenantName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let b = s.as_bytes();
        let ok = (1..=Self::MAX_LEN).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b[b.len() - 1] != b'-'
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(TenantName(s))
        } else {
            Err(InvalidTenantName(s))
        }
    }
}

impl From<TenantName> for String {
    fn from(t: TenantName) -> String {
        t.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_what_settings_blobs_and_rows_all_accept() {
        for good in ["contoso", "fabrikam-eu", "t1", "a"] {
            assert_eq!(good.parse::<TenantName>().unwrap().as_str(), good);
        }
        let long = "a".repeat(TenantName::MAX_LEN + 1);
        for bad in [
            "",
            "Contoso",
            "1st",
            "-x",
            "x-",
            "con_toso",
            "con toso",
            "contoso/eu",
            long.as_str(),
        ] {
            assert!(bad.parse::<TenantName>().is_err(), "{bad:?}");
        }
        let t: TenantName = serde_json::from_str("\"contoso\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"contoso\"");
        assert!(serde_json::from_str::<TenantName>("\"../x\"").is_err());
    }

    #[test]
    fn data_type_parses_case_insensitively_and_rejects_others() {
        assert_eq!(" Alerts ".parse::<DataType>(), Ok(DataType::Alerts));
        assert_eq!("discovery".parse::<DataType>(), Ok(DataType::Discovery));
        assert!("alert".parse::<DataType>().is_err());
    }

    #[test]
    fn window_rejects_reversed_bounds() {
        assert!(Window::new(10, 9).is_err());
        assert_eq!(Window::new(9, 9).unwrap().end_ms(), 9);
    }

    #[test]
    fn batch_id_is_deterministic_and_content_sensitive() {
        let a = BatchId::for_tenant_content(None, DataType::Alerts, b"[1]");
        assert_eq!(
            a,
            BatchId::for_tenant_content(None, DataType::Alerts, b"[1]")
        );
        assert_ne!(
            a,
            BatchId::for_tenant_content(None, DataType::Alerts, b"[2]")
        );
        assert_ne!(
            a,
            BatchId::for_tenant_content(None, DataType::Activities, b"[1]")
        );
        let t: TenantName = "contoso".parse().unwrap();
        let u: TenantName = "fabrikam".parse().unwrap();
        let ta = BatchId::for_tenant_content(Some(&t), DataType::Alerts, b"[1]");
        assert_ne!(a, ta, "a named tenant's batch is its own");
        assert_ne!(
            ta,
            BatchId::for_tenant_content(Some(&u), DataType::Alerts, b"[1]")
        );
        assert_eq!(
            a,
            BatchId::for_tenant_content(None, DataType::Alerts, b"[1]")
        );
        assert_eq!(BatchId::try_from(a.to_string()), Ok(a));
        assert!(BatchId::try_from("../etc".to_string()).is_err());
    }

    #[test]
    fn format_ms_is_rfc3339() {
        assert_eq!(format_ms(1_795_944_000_000), "2026-11-29T09:20:00Z");
        assert_eq!(format_ms(1_795_944_000_001), "2026-11-29T09:20:00.001Z");
    }
}
