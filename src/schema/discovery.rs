//! `McasShadowItReporting_CL`: discovery snapshots from Microsoft Graph.
//!
//! Graph gives each continuous report's discovered apps aggregated over a rolling period
//! (7, 30 or 90 days), not per day or per session. So every row belongs to a snapshot:
//! `TimeGenerated` is when the snapshot was taken and `PeriodStart`/`PeriodEnd` the span it
//! covers. Each snapshot holds one `App` row per report and app (the numbers), and, unless
//! turned off, one `User` row per user and one `IpAddress` row per IP address of the app
//! (names only, so "distinct users of an app" works in KQL). Read the latest snapshot per
//! report and app; never sum across snapshots, which overlap.
//!
//! The record this maps is the one [`crate::graph::discovery`] builds: `{"kind": "app" |
//! "user" | "ipAddress", "snapshotMs", "period", "streamId", "streamName", "app": <Graph's
//! discoveredCloudAppDetail (brief on user and IP rows)>, "user" | "ipAddress": <Graph's
//! item>}`.

use super::{time_generated, Issues};
#[cfg(feature = "sim")]
use super::{Column, ColumnType as T};
use crate::json::record::SourceText;
use crate::json::Record;
use crate::model::format_ms;
use serde::Serialize;
use serde_json::Value;

#[cfg(feature = "sim")]
/// How to read the table, and what of McasShadowItReporting it cannot hold (docs/tables.md).
pub(crate) const NOTES: &str = "Read from Microsoft Graph (beta), not the CAS API: each row belongs to a **snapshot** of Graph's \
rolling aggregate (`CAS_DISCOVERY_PERIOD`: the last 7, 30 or 90 days), taken once per `CAS_DISCOVERY_INTERVAL`. \
`TimeGenerated` is when the snapshot was taken, the same for all its rows; `PeriodStart`..`PeriodEnd` is the span it covers. \
`RowType` says what a row is: `App` (one per report and app, with the numbers), `User` and `IpAddress` (one per user \
or IP address of the app, names only, at most `CAS_DISCOVERY_MAX_PER_APP` each).\n\n\
How to read it: take the latest snapshot per report and app, \
`McasShadowItReporting_CL | where RowType == \"App\" | summarize arg_max(TimeGenerated, *) by StreamId, AppId`; \
distinct users of an app in the latest snapshot: `where RowType == \"User\"` then the same `arg_max` per \
`StreamId, AppId, UserName` (or `dcount(UserName)` over the latest `TimeGenerated`). **Never sum across snapshots**: \
consecutive snapshots overlap (a daily snapshot of 7 days counts each day seven times). A crash can repeat an app's \
rows within a snapshot (docs/reliability.md); `ReportId` is the dedupe key.\n\n\
McasShadowItReporting columns this table leaves out, and why: `Date` (the real table's per-day bucket: Graph gives \
no per-day data; use `PeriodStart`/`PeriodEnd`), `BlockedEvents` (Graph gives no blocked count), `EnrichedUserName`, \
`RawUserName` and `RichUserName` (Graph gives one `userIdentifier`, in `UserName`), `MachineId` and `MachineName` \
(per-device data is only in Defender for Endpoint discovery, not read), `AppInstance` (not in Graph's app detail), \
`TenantId`, `SourceSystem`, `Type` (set by Log Analytics itself), and `AadTenantId` (not stored: the \
function `McasShadowIt` fills it from `CasTenantId`). Graph's bytes are 64-bit; \
the real table's `int` would overflow past 2 GiB, so `UploadedBytes`, `DownloadedBytes`, `TotalBytes` and \
`TotalEvents` are `long`.";

#[cfg(feature = "sim")]
/// The table's columns.
pub(crate) const COLUMNS: &[Column] = &[
    Column::new("TimeGenerated", T::DateTime, "when the snapshot was taken (the same for all its rows)"),
    Column::new("PeriodStart", T::DateTime, "the start of the rolling period the snapshot covers (`TimeGenerated` minus `CAS_DISCOVERY_PERIOD`)"),
    Column::new("PeriodEnd", T::DateTime, "the end of that period (`TimeGenerated`)"),
    Column::new("Period", T::String, "`CAS_DISCOVERY_PERIOD`: P7D, P30D or P90D"),
    Column::new("RowType", T::String, "`App` (the app's numbers), `User` (one user of the app) or `IpAddress` (one IP address of the app)"),
    Column::new("StreamName", T::String, "the continuous report's `displayName`"),
    Column::new("StreamId", T::String, "the continuous report's `id`"),
    Column::new("AppId", T::String, "the app's `id` (its SaaSDB id; a string, as in McasShadowItReporting)"),
    Column::new("AppName", T::String, "`displayName`"),
    Column::new("AppCategory", T::String, "`category`"),
    Column::new("AppTags", T::Dynamic, "`tags` (`Sanctioned`, `Unsanctioned`, `Monitored` or custom); App rows"),
    Column::new("AppScore", T::Int, "`riskScore` (0–10); App rows"),
    Column::new("UploadedBytes", T::Long, "`uploadNetworkTrafficInBytes` over the period; App rows"),
    Column::new("DownloadedBytes", T::Long, "`downloadNetworkTrafficInBytes` over the period; App rows"),
    Column::new("TotalBytes", T::Long, "uploaded plus downloaded bytes; App rows"),
    Column::new("TotalEvents", T::Long, "`transactionCount` over the period; App rows"),
    Column::new("UsersCount", T::Long, "`userCount`; App rows"),
    Column::new("IpAddressesCount", T::Long, "`ipAddressCount`; App rows"),
    Column::new("Domains", T::Dynamic, "`domains`; App rows"),
    Column::new("LastSeen", T::DateTime, "`lastSeenDateTime`; App rows"),
    Column::new("UserName", T::String, "the user's `userIdentifier`; User rows"),
    Column::new("IpAddress", T::String, "the `ipAddress`; IpAddress rows"),
    Column::new("ReportId", T::String, "`<streamId>/<appId>/<snapshot ms>`, then `/user/<name>` or `/ip/<address>`: the dedupe key"),
    super::source_record_column("the snapshot record"),
    super::MAPPING_ISSUES,
    super::TRUNCATED_FIELDS,
    super::CAS_TENANT,
    super::CAS_TENANT_ID,
];

/// Which kind of row a snapshot record makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    App,
    User,
    IpAddress,
}

/// One `McasShadowItReporting_CL` row.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ShadowItRow<'a> {
    /// When the snapshot was taken.
    pub time_generated: String,
    /// The start of the period covered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_start: Option<String>,
    /// The end of the period covered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_end: Option<String>,
    /// `P7D`, `P30D` or `P90D`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// `App`, `User` or `IpAddress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_type: Option<&'static str>,
    /// The continuous report's display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// The continuous report's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// The app's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// `displayName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// `category`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_category: Option<String>,
    /// `tags`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_tags: Option<Value>,
    /// `riskScore`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_score: Option<i64>,
    /// `uploadNetworkTrafficInBytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<i64>,
    /// `downloadNetworkTrafficInBytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded_bytes: Option<i64>,
    /// Uploaded plus downloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// `transactionCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_events: Option<i64>,
    /// `userCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_count: Option<i64>,
    /// `ipAddressCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_addresses_count: Option<i64>,
    /// `domains`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domains: Option<Value>,
    /// `lastSeenDateTime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// A user of the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// An IP address of the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The dedupe key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// The whole record.
    /// Written last, by [`super::row_bytes`], straight from the record's text.
    #[serde(skip)]
    pub source_record: SourceText<'a>,
    /// What could not be mapped, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_issues: Option<String>,
}

/// Maps one snapshot record.
pub(crate) fn map<'a>(rec: &Record<'a>) -> ShadowItRow<'a> {
    let mut is = Issues::default();
    let kind = match rec.pointer("/kind").as_ref().and_then(Value::as_str) {
        Some("app") => Some(Kind::App),
        Some("user") => Some(Kind::User),
        Some("ipAddress") => Some(Kind::IpAddress),
        other => {
            is.note(format!("/kind is {other:?}, not app, user or ipAddress"));
            None
        }
    };
    let taken = rec.pointer("/snapshotMs").as_ref().and_then(Value::as_i64);
    let period = is.str(rec, "/period", true);
    let days = match period.as_deref() {
        Some("P7D") => Some(7),
        Some("P30D") => Some(30),
        Some("P90D") => Some(90),
        _ => None,
    };
    let stream_id = is.str(rec, "/streamId", true);
    let app_id = is.str(rec, "/app/id", true);
    let user_name = (kind == Some(Kind::User))
        .then(|| is.str(rec, "/user/userIdentifier", true))
        .flatten();
    let ip_address = (kind == Some(Kind::IpAddress))
        .then(|| is.str(rec, "/ipAddress/ipAddress", true))
        .flatten();
    let report_id = match (&stream_id, &app_id, taken) {
        (Some(s), Some(a), Some(t)) => Some(match (kind, &user_name, &ip_address) {
            (Some(Kind::User), Some(u), _) => format!("{s}/{a}/{t}/user/{u}"),
            (Some(Kind::IpAddress), _, Some(ip)) => format!("{s}/{a}/{t}/ip/{ip}"),
            _ => format!("{s}/{a}/{t}"),
        }),
        _ => None,
    };
    let mut row = ShadowItRow {
        time_generated: time_generated(is.time(rec, "/snapshotMs", true), &mut is),
        period_start: taken.zip(days).map(|(t, d)| format_ms(t - d * 86_400_000)),
        period_end: taken.map(format_ms),
        period,
        row_type: kind.map(|k| match k {
            Kind::App => "App",
            Kind::User => "User",
            Kind::IpAddress => "IpAddress",
        }),
        stream_name: is.str(rec, "/streamName", false),
        stream_id,
        app_name: is.str(rec, "/app/displayName", true),
        app_category: is.str(rec, "/app/category", false),
        app_id,
        user_name,
        ip_address,
        report_id,
        source_record: SourceText::whole(rec.text()),
        ..Default::default()
    };
    if kind == Some(Kind::App) {
        row.app_tags = rec.pointer("/app/tags");
        row.app_score = is.int(rec, "/app/riskScore");
        row.uploaded_bytes = is.int(rec, "/app/uploadNetworkTrafficInBytes");
        row.downloaded_bytes = is.int(rec, "/app/downloadNetworkTrafficInBytes");
        row.total_bytes = row
            .uploaded_bytes
            .zip(row.downloaded_bytes)
            .map(|(u, d)| u.saturating_add(d));
        row.total_events = is.int(rec, "/app/transactionCount");
        row.users_count = is.int(rec, "/app/userCount");
        row.ip_addresses_count = is.int(rec, "/app/ipAddressCount");
        row.domains = rec.pointer("/app/domains");
        row.last_seen = is.datetime(rec, "/app/lastSeenDateTime");
    }
    row.mapping_issues = is.into_column();
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataType;
    use serde_json::json;

    fn record(kind: &str, extra: Value) -> Value {
        let mut r = json!({"kind": kind, "snapshotMs": 1_795_996_800_000i64, "period": "P7D", "streamId": "1000", "streamName": "Global View"});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    }

    #[test]
    fn graphs_app_detail_maps_to_an_app_row() {
        let app: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/graph-aggregated-apps.json"
        ))
        .unwrap();
        let row = crate::schema::to_row(
            DataType::Discovery,
            &record("app", json!({"app": app["value"][0]})),
        );
        crate::schema::tests::assert_row_matches_columns(DataType::Discovery, &row);
        assert!(row.get("MappingIssues").is_none(), "{row}");
        assert_eq!(row["RowType"], "App");
        assert_eq!(
            row["AppId"], "11599",
            "a string, as in McasShadowItReporting"
        );
        assert_eq!(row["AppName"], "Microsoft Teams");
        assert_eq!(row["AppScore"], 10);
        assert_eq!(
            row["TotalBytes"],
            row["UploadedBytes"].as_i64().unwrap() + row["DownloadedBytes"].as_i64().unwrap()
        );
        assert_eq!(row["TotalEvents"], 10000);
        assert_eq!(row["TimeGenerated"], "2026-11-30T00:00:00Z");
        assert_eq!(row["PeriodStart"], "2026-11-23T00:00:00Z");
        assert_eq!(row["LastSeen"], "2026-11-29T00:00:00Z");
        assert_eq!(row["ReportId"], "1000/11599/1795996800000");
    }

    #[test]
    fn users_and_ip_addresses_get_rows_of_their_own() {
        let brief =
            json!({"id": "11599", "displayName": "Microsoft Teams", "category": "collaboration"});
        let user = crate::schema::to_row(
            DataType::Discovery,
            &record(
                "user",
                json!({"app": brief, "user": {"userIdentifier": "adele@contoso.com"}}),
            ),
        );
        crate::schema::tests::assert_row_matches_columns(DataType::Discovery, &user);
        assert_eq!(
            (user["RowType"].as_str(), user["UserName"].as_str()),
            (Some("User"), Some("adele@contoso.com"))
        );
        assert!(
            user.get("TotalBytes").is_none() && user.get("MappingIssues").is_none(),
            "{user}"
        );
        assert_eq!(
            user["ReportId"],
            "1000/11599/1795996800000/user/adele@contoso.com"
        );
        let ip = crate::schema::to_row(
            DataType::Discovery,
            &record(
                "ipAddress",
                json!({"app": brief, "ipAddress": {"ipAddress": "10.0.0.7"}}),
            ),
        );
        assert_eq!(ip["IpAddress"], "10.0.0.7");
        assert_eq!(ip["ReportId"], "1000/11599/1795996800000/ip/10.0.0.7");
    }

    #[test]
    fn a_record_that_does_not_map_still_becomes_a_row_that_says_why() {
        let row = crate::schema::to_row(
            DataType::Discovery,
            &json!({"kind": "device", "app": {"riskScore": "high"}}),
        );
        crate::schema::tests::assert_row_matches_columns(DataType::Discovery, &row);
        let issues = row["MappingIssues"].as_str().unwrap();
        for what in ["/kind", "/snapshotMs", "/app/id"] {
            assert!(issues.contains(what), "{what}: {issues}");
        }
    }
}
